//! The published model: the one contract between the trainer and the ranker that does not travel
//! on a queue. A version's files are stored beside its record (see `oleg-store`): the network's
//! weights as safetensors, and the vocabularies that map ids to rows.

use crate::FieldError;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// The weights, as safetensors with the network's metadata.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// The vocabularies, as JSON ([`VocabFile`]).
pub const VOCAB_FILE: &str = "vocab.json";

/// A model version: 1, 2, … in the order versions were allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ModelVersion(u64);

impl ModelVersion {
    pub fn new(raw: i64) -> Result<Self, FieldError> {
        match u64::try_from(raw) {
            Ok(version) if version > 0 => Ok(Self(version)),
            _ => Err(FieldError::new(
                "version",
                format!("must be a positive integer, got {raw}"),
            )),
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// As the store keeps it (BSON has no unsigned integers).
    pub fn as_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl<'de> Deserialize<'de> for ModelVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ModelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelStatus {
    /// Allocated by a cycle still training.
    Training,
    /// Complete and loadable; live if the live pointer names it.
    Published,
    /// Trained, but its holdout figures were worse than the live model's.
    Rejected,
    /// Its cycle stopped or lost the training lease.
    Abandoned,
    /// Its cycle found no vote to train on.
    NothingNew,
    /// An operator took it out of service.
    Withdrawn,
}

impl ModelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Training => "training",
            ModelStatus::Published => "published",
            ModelStatus::Rejected => "rejected",
            ModelStatus::Abandoned => "abandoned",
            ModelStatus::NothingNew => "nothing_new",
            ModelStatus::Withdrawn => "withdrawn",
        }
    }
}

/// `vocab.json`: a row of each embedding per id, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VocabFile {
    pub users: Vec<i64>,
    pub channels: Vec<String>,
    /// (channel row, post id) per post row.
    pub posts: Vec<(i64, i64)>,
}
