//! `oleg-scraper`: reads public channels' web preview pages into posts.

pub mod parse;
