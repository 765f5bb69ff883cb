//! The serving model: loaded from the store in the background, swapped in atomically. Requests
//! hold an `Arc` to the model they started with, so in-flight requests finish on it.

use oleg_scorer::ScoringModel;
use oleg_store::{as_i64, Store, StoredFile};
use std::sync::{Arc, RwLock};

pub struct LoadedModel {
    pub version: i64,
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

    /// Swaps in `model` unless an equal or newer version serves already.
    pub fn offer(&self, model: LoadedModel) -> bool {
        let mut slot = self.current.write().expect("not poisoned");
        if slot.as_ref().is_some_and(|m| m.version >= model.version) {
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
    NotPublished(i64),
    #[error("model {version}: {problem}")]
    Document { version: i64, problem: String },
}

/// Reads a published version's files and builds its scorer (CPU-heavy: call off the async threads
/// for large models via `spawn_blocking` on the result).
pub async fn load(store: &Store, version: i64) -> Result<LoadedModel, LoadError> {
    let document = store
        .model(version)
        .await?
        .ok_or(LoadError::NotPublished(version))?;
    if document.get_str("status") != Ok("published") {
        return Err(LoadError::NotPublished(version));
    }
    let problem = |problem: String| LoadError::Document { version, problem };
    let files = document
        .get_document("files")
        .map_err(|e| problem(e.to_string()))?;
    let mut bytes = Vec::new();
    for name in ["weights.safetensors", "vocab.json"] {
        let record = StoredFile::from_document(
            files
                .get_document(name)
                .map_err(|e| problem(format!("{name}: {e}")))?,
        )?;
        bytes.push(store.read_model_file(version, name, &record).await?);
    }
    let vocab = bytes.pop().expect("two files");
    let weights = bytes.pop().expect("two files");
    let scorer = tokio::task::spawn_blocking(move || ScoringModel::load(&weights, &vocab))
        .await
        .map_err(|e| problem(format!("loading panicked: {e}")))??;
    Ok(LoadedModel {
        version,
        published_at_ms: as_i64(document.get("created_at_ms")).unwrap_or(0),
        scorer,
    })
}
