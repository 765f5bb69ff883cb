//! A model version in the store: its safetensors weights and its vocabularies (id → row), written
//! through temporary files in chunks so that neither sits in memory twice.

use crate::dataset::{Vocab, Vocabularies};
use mongodb::bson::{doc, Document};
use oleg_messages::{ModelVersion, VocabFile, VOCAB_FILE, WEIGHTS_FILE};
use oleg_model::{read_tensors, write_network, ModelConfig, Network};
use oleg_store::{ChunkWriter, ModelFiles, Store};
use std::io::{BufWriter, Read};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Store(#[from] oleg_store::StoreError),
    #[error(transparent)]
    Model(#[from] oleg_model::ModelError),
    #[error("model files: {0}")]
    Io(#[from] std::io::Error),
    #[error("model {version}: {problem}")]
    Invalid {
        version: ModelVersion,
        problem: String,
    },
}

/// Writes both files of `version`; returns their records for the model document.
pub async fn store_files(
    store: &Store,
    version: ModelVersion,
    network: &Network,
    vocab: &Vocabularies,
) -> Result<ModelFiles, ArtifactError> {
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
    let mut stored = Vec::with_capacity(2);
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
        stored.push(writer.finish().await?);
    }
    let vocab = stored.pop().expect("two files");
    let weights = stored.pop().expect("two files");
    Ok(ModelFiles { weights, vocab })
}

/// Loads a version's network and vocabularies.
pub async fn load(
    store: &Store,
    version: ModelVersion,
    config: &ModelConfig,
    device: tch::Device,
) -> Result<(Network, Vocabularies), ArtifactError> {
    let invalid = |problem: String| ArtifactError::Invalid { version, problem };
    let files = store
        .model(version)
        .await?
        .ok_or_else(|| invalid("not stored".into()))?
        .files
        .ok_or_else(|| invalid("it has no files".into()))?;
    let weights = store
        .read_model_file(version, WEIGHTS_FILE, &files.weights)
        .await?;
    let (tensors, _) = read_tensors(&weights)?;
    drop(weights);
    let network = Network::from_named(config, tensors, device)?;
    let vocab_bytes = store
        .read_model_file(version, VOCAB_FILE, &files.vocab)
        .await?;
    let stored: VocabFile =
        serde_json::from_slice(&vocab_bytes).map_err(|e| invalid(format!("vocabulary: {e}")))?;
    let vocab = Vocabularies {
        users: Vocab::from_keys(stored.users),
        channels: Vocab::from_keys(stored.channels),
        posts: Vocab::from_keys(stored.posts),
        // Read from the posts by the trainer: the files do not keep them.
        post_features: Vec::new(),
    };
    let sizes = network.sizes();
    if sizes.users != vocab.users.len() || sizes.posts != vocab.posts.len() {
        return Err(invalid(format!(
            "weights for {sizes:?} do not match the vocabularies"
        )));
    }
    Ok((network, vocab))
}

/// The details of a version's record, apart from its files.
pub fn model_document(config: &ModelConfig, figures: Document) -> Document {
    let config = mongodb::bson::to_document(config).unwrap_or_default();
    doc! {
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
