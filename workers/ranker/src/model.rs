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
    #[error("loading model {0} was cut short by shutdown")]
    Interrupted(ModelVersion),
}

/// What a failed load says, and so how it is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailedLoad {
    /// The ranker was stopping: nothing about the model.
    Stopped,
    /// The store did not answer: the same version may load at the next check.
    Transient,
    /// The model itself: refused until another is published.
    Refused,
}

impl LoadError {
    /// What this failure says: a load cut short is no verdict on its model. (Every load ends
    /// before `run` returns and the runtime closes the store, so a stop fails none otherwise.)
    pub fn says(&self) -> FailedLoad {
        match self {
            LoadError::Interrupted(_) => FailedLoad::Stopped,
            LoadError::Store(error) if error.is_transient() => FailedLoad::Transient,
            _ => FailedLoad::Refused,
        }
    }
}

/// Why a load's blocking task ended without a scorer: stopping the runtime cancels it, which
/// says nothing about the model; a panic does.
fn unfinished_load(version: ModelVersion, error: tokio::task::JoinError) -> LoadError {
    if error.is_cancelled() {
        LoadError::Interrupted(version)
    } else {
        LoadError::Record {
            version,
            problem: format!("loading panicked: {error}"),
        }
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
        .map_err(|e| unfinished_load(version, e))??;
    Ok(LoadedModel {
        version,
        published_at_ms: record.created_at_ms,
        scorer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_load_cut_short_by_shutdown_is_not_a_refused_model() {
        let version = ModelVersion::new(14).expect("a positive version");
        let waiting = tokio::spawn(std::future::pending::<()>());
        waiting.abort();
        let cancelled = waiting.await.unwrap_err();
        assert!(matches!(
            unfinished_load(version, cancelled),
            LoadError::Interrupted(v) if v == version
        ));

        let panicking = tokio::spawn(async { panic!("a broken file") });
        let panicked = panicking.await.unwrap_err();
        match unfinished_load(version, panicked) {
            LoadError::Record {
                version: v,
                problem,
            } => {
                assert_eq!(v, version);
                assert!(problem.starts_with("loading panicked"), "{problem}");
            }
            other => panic!("a panic must refuse the model, got {other:?}"),
        }
    }

    #[test]
    fn only_a_load_cut_short_is_no_verdict_on_its_model() {
        let version = ModelVersion::new(14).expect("a positive version");
        let unreadable = LoadError::Record {
            version,
            problem: "the network's file is missing".into(),
        };
        assert_eq!(unreadable.says(), FailedLoad::Refused);
        assert_eq!(LoadError::Interrupted(version).says(), FailedLoad::Stopped);
        assert_eq!(LoadError::NotPublished(version).says(), FailedLoad::Refused);
    }
}
