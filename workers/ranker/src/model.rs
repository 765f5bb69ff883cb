//! The serving model: loaded from the store in the background, swapped in atomically. Requests
//! hold an `Arc` to the model they started with, so in-flight requests finish on it.

use oleg_messages::{ModelStatus, ModelVersion, VOCAB_FILE, WEIGHTS_FILE};
use oleg_scorer::ScoringModel;
use oleg_store::Store;
use std::sync::{Arc, RwLock};

pub struct LoadedModel {
    pub version: ModelVersion,
    pub published_at_ms: i64,
    pub scorer: ScoringModel,
}

#[derive(Default, Clone)]
pub struct ModelSlot {
    current: Arc<RwLock<Option<Arc<LoadedModel>>>>,
}

impl ModelSlot {
    pub fn current(&self) -> Option<Arc<LoadedModel>> {
        self.current.read().expect("not poisoned").clone()
    }

    /// Swaps in `model` unless that version serves already (an older one may replace a newer
    /// one: a rollback).
    pub fn offer(&self, model: LoadedModel) -> bool {
        let mut slot = self.current.write().expect("not poisoned");
        if slot.as_ref().is_some_and(|m| m.version == model.version) {
            return false;
        }
        *slot = Some(Arc::new(model));
        true
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Store(#[from] oleg_store::StoreError),
    #[error(transparent)]
    Scorer(#[from] oleg_scorer::ScorerError),
    #[error("model {0} is not published")]
    NotPublished(ModelVersion),
    #[error("model {version}: {problem}")]
    Record {
        version: ModelVersion,
        problem: String,
    },
}

impl LoadError {
    /// The store did not answer: the same version may load at the next try.
    pub fn is_transient(&self) -> bool {
        matches!(self, LoadError::Store(error) if error.is_transient())
    }
}

/// Reads a published version's files and builds its scorer (CPU-heavy: off the async threads).
pub async fn load(store: &Store, version: ModelVersion) -> Result<LoadedModel, LoadError> {
    let record = store
        .model(version)
        .await?
        .filter(|r| r.status == ModelStatus::Published)
        .ok_or(LoadError::NotPublished(version))?;
    let files = record.files.ok_or_else(|| LoadError::Record {
        version,
        problem: "it has no files".into(),
    })?;
    let weights = store
        .read_model_file(version, WEIGHTS_FILE, &files.weights)
        .await?;
    let vocab = store
        .read_model_file(version, VOCAB_FILE, &files.vocab)
        .await?;
    let scorer = tokio::task::spawn_blocking(move || ScoringModel::load(&weights, &vocab))
        .await
        .map_err(|e| LoadError::Record {
            version,
            problem: format!("loading panicked: {e}"),
        })??;
    Ok(LoadedModel {
        version,
        published_at_ms: record.created_at_ms,
        scorer,
    })
}
