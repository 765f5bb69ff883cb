//! A model version in the store: its safetensors weights and its vocabularies (id → row), written
//! through temporary files in chunks so that neither sits in memory twice.

use crate::dataset::{Vocab, Vocabularies};
use mongodb::bson::{doc, Document};
use oleg_model::{read_tensors, write_network, ModelConfig, Network};
use oleg_store::{ChunkWriter, Store, StoredFile};
use serde::{Deserialize, Serialize};
use std::io::{BufWriter, Read};

pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const VOCAB_FILE: &str = "vocab.json";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Store(#[from] oleg_store::StoreError),
    #[error(transparent)]
    Model(#[from] oleg_model::ModelError),
    #[error("model files: {0}")]
    Io(#[from] std::io::Error),
    #[error("model {version}: {problem}")]
    Invalid { version: i64, problem: String },
}

/// The vocabularies as stored: rows are positions.
#[derive(Serialize, Deserialize)]
struct VocabFile {
    users: Vec<i64>,
    channels: Vec<String>,
    /// (channel row, post id) per post row.
    posts: Vec<(i64, i64)>,
}

/// Writes both files of `version`; returns their records for the model document.
pub async fn store_files(
    store: &Store,
    version: i64,
    network: &Network,
    vocab: &Vocabularies,
) -> Result<Document, ArtifactError> {
    let weights = TempFile::new()?;
    {
        let mut out = BufWriter::new(weights.reopen()?);
        write_network(network, &[("version", version.to_string())], &mut out)?;
        std::io::Write::flush(&mut out)?;
    }
    let vocab_file = TempFile::new()?;
    {
        let out = BufWriter::new(vocab_file.reopen()?);
        let stored = VocabFile {
            users: vocab.users.keys().to_vec(),
            channels: vocab.channels.keys().to_vec(),
            posts: vocab.posts.keys().to_vec(),
        };
        serde_json::to_writer(out, &stored).map_err(std::io::Error::other)?;
    }
    let mut files = Document::new();
    for (name, file) in [(WEIGHTS_FILE, &weights), (VOCAB_FILE, &vocab_file)] {
        let mut reader = file.reopen()?;
        let mut writer = ChunkWriter::new(store, version, name);
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = reader.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            writer.write(&buffer[..read]).await?;
        }
        files.insert(name, writer.finish().await?.to_document());
    }
    Ok(files)
}

/// Loads a version's network and vocabularies.
pub async fn load(
    store: &Store,
    version: i64,
    config: &ModelConfig,
    device: tch::Device,
) -> Result<(Network, Vocabularies), ArtifactError> {
    let invalid = |problem: String| ArtifactError::Invalid { version, problem };
    let document = store
        .model(version)
        .await?
        .ok_or_else(|| invalid("not stored".into()))?;
    let files = document
        .get_document("files")
        .map_err(|e| invalid(e.to_string()))?;
    let record = |name: &str| -> Result<StoredFile, ArtifactError> {
        let file = files
            .get_document(name)
            .map_err(|e| invalid(format!("{name}: {e}")))?;
        Ok(StoredFile::from_document(file)?)
    };
    let weights = store
        .read_model_file(version, WEIGHTS_FILE, &record(WEIGHTS_FILE)?)
        .await?;
    let (tensors, _) = read_tensors(&weights)?;
    drop(weights);
    let network = Network::from_named(config, tensors, device)?;
    let vocab_bytes = store
        .read_model_file(version, VOCAB_FILE, &record(VOCAB_FILE)?)
        .await?;
    let stored: VocabFile =
        serde_json::from_slice(&vocab_bytes).map_err(|e| invalid(format!("vocabulary: {e}")))?;
    let vocab = Vocabularies {
        users: Vocab::from_keys(stored.users),
        channels: Vocab::from_keys(stored.channels),
        posts: Vocab::from_keys(stored.posts),
    };
    let sizes = network.sizes();
    if sizes.users != vocab.users.len() || sizes.posts != vocab.posts.len() {
        return Err(invalid(format!(
            "weights for {sizes:?} do not match the vocabularies"
        )));
    }
    Ok((network, vocab))
}

/// The model document of a version, apart from its files.
pub fn model_document(status: &str, config: &ModelConfig, figures: Document) -> Document {
    let config = mongodb::bson::to_document(config).unwrap_or_default();
    doc! {
        "status": status,
        "variant": config.get_str("variant").unwrap_or("channel_mlp"),
        "config": config,
        "created_at_ms": chrono::Utc::now().timestamp_millis(),
        "figures": figures,
    }
}

/// A file in the temp folder, deleted when dropped.
pub struct TempFile {
    path: std::path::PathBuf,
}

impl TempFile {
    fn new() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("oleg-trainer-{}", uuid::Uuid::new_v4()));
        std::fs::File::create(&path)?;
        Ok(Self { path })
    }

    fn reopen(&self) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
