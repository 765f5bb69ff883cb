//! `oleg-scraper`: reads public channels' web preview pages (`<base>/s/<channel>`) into posts,
//! incrementally and politely, stores them, and announces the new ones.

pub mod fetch;
pub mod parse;
mod settings;
pub mod worker;

pub use settings::{ScraperConfig, ScraperSettings};
