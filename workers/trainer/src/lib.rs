//! `oleg-trainer`: trains OLEG's network in batches on the stored votes and publishes model
//! versions; `oleg-trainer eval` compares configurations offline on a votes file.

mod artifact;
pub mod cycle;
pub mod dataset;
pub mod eval;
mod lease;
mod metrics;
pub mod serve;
mod settings;

pub use settings::{TrainerConfig, TrainerSettings};
