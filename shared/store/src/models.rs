//! Model versions: a metadata document per version (`models`, `_id` = version) and its files as
//! explicit chunk documents (`model_chunks`). Not GridFS: on the Mongo-wire stand-in GridFS
//! downloads fail, and explicit chunks work the same on MongoDB, past its 16 MB document limit.
//!
//! Which version is live is a pointer, `live_version`, kept in the training lease's document
//! ([`TRAINING_LEASE`] in `leases`): a trainer makes its model live with one write that matches
//! only while it holds the lease (by the store's clock, with its fencing token), so a trainer that
//! lost its lease publishes nothing. A version is allocated by a unique insert, written only by
//! the claim that allocated it, and never overwritten.

use crate::leases::{held, is_duplicate_key, LeaseClaim, LEASES};
use crate::{Store, StoreError};
use mongodb::bson::{doc, spec::BinarySubtype, Binary, Bson, Document};
use mongodb::options::FindOneOptions;
use oleg_messages::{ModelStatus, ModelVersion, VOCAB_FILE, WEIGHTS_FILE};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Chunk size: well under MongoDB's 16 MB document limit and the stand-in's 48 MB reply cap.
pub const CHUNK_BYTES: usize = 4 << 20;
pub(crate) const CHUNKS: &str = "model_chunks";

/// The lease one trainer at a time trains under, whose document also holds the live version.
pub const TRAINING_LEASE: &str = "trainer";

/// A version's record (`models`, `_id` = version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Versions are ordered by this field, not by `_id`: the stand-in sorts `_id`s as text (so 9
    /// came after 10 there), other integer fields by value, as MongoDB does.
    pub version: ModelVersion,
    pub status: ModelStatus,
    /// The training cycle that allocated it (none for a version recorded outright).
    #[serde(default)]
    pub holder: Option<String>,
    #[serde(default)]
    pub token: Option<i64>,
    pub created_at_ms: i64,
    #[serde(default)]
    pub files: Option<ModelFiles>,
    /// The network's configuration and the cycle's figures, as the trainer wrote them.
    #[serde(default)]
    pub config: Option<Document>,
    #[serde(default)]
    pub figures: Option<Document>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub trained_on_votes: Option<i64>,
    /// Why it was abandoned.
    #[serde(default)]
    pub error: Option<String>,
}

/// A version's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFiles {
    #[serde(rename = "weights.safetensors")]
    pub weights: StoredFile,
    #[serde(rename = "vocab.json")]
    pub vocab: StoredFile,
}

impl ModelFiles {
    /// `(name, record)` of each file.
    pub fn named(&self) -> [(&'static str, &StoredFile); 2] {
        [(WEIGHTS_FILE, &self.weights), (VOCAB_FILE, &self.vocab)]
    }
}

/// Collects a file's bytes into chunk documents as they are written.
pub struct ChunkWriter<'a> {
    store: &'a Store,
    version: ModelVersion,
    file: String,
    buffer: Vec<u8>,
    chunks: i64,
    hash: Sha256,
}

/// What a record's `files.<name>` holds of a stored file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFile {
    pub bytes: i64,
    pub chunks: i64,
    pub sha256: String,
}

impl<'a> ChunkWriter<'a> {
    pub fn new(store: &'a Store, version: ModelVersion, file: &str) -> Self {
        Self {
            store,
            version,
            file: file.to_owned(),
            buffer: Vec::with_capacity(CHUNK_BYTES),
            chunks: 0,
            hash: Sha256::new(),
        }
    }

    /// Adds bytes, storing every full chunk (idempotently, so a retried publish is harmless).
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        while !data.is_empty() {
            let room = CHUNK_BYTES - self.buffer.len();
            let take = room.min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == CHUNK_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.hash.update(&self.buffer);
        let id = chunk_id(self.version, &self.file, self.chunks);
        // The _id is in the document too: the stand-in does not take it from an `$eq` filter.
        let chunk = doc! {
            "_id": &id,
            "version": self.version.as_i64(),
            "file": &self.file,
            "n": self.chunks,
            "data": Binary { subtype: BinarySubtype::Generic, bytes: std::mem::take(&mut self.buffer) },
        };
        self.store
            .database()
            .collection::<Document>(CHUNKS)
            .replace_one(doc! {"_id": {"$eq": &id}}, chunk)
            .upsert(true)
            .await?;
        self.chunks += 1;
        self.buffer = Vec::with_capacity(CHUNK_BYTES);
        Ok(())
    }

    pub async fn finish(mut self) -> Result<StoredFile, StoreError> {
        // Every chunk flushed so far is full; the tail is what is left.
        let tail = self.buffer.len() as i64;
        let full = self.chunks * CHUNK_BYTES as i64;
        self.flush().await?;
        Ok(StoredFile {
            bytes: full + tail,
            chunks: self.chunks,
            sha256: format!("{:x}", self.hash.finalize()),
        })
    }
}

/// `17:weights.safetensors:0`
fn chunk_id(version: ModelVersion, file: &str, n: i64) -> String {
    format!("{version}:{file}:{n}")
}

impl Store {
    /// Allocates the next version for `claim`'s cycle: a unique insert of a `training` record
    /// (a version another trainer allocated first is skipped), fenced by the lease.
    pub async fn allocate_model_version(
        &self,
        claim: &LeaseClaim,
        now_ms: i64,
    ) -> Result<ModelVersion, StoreError> {
        loop {
            if !self.holds_lease(claim).await? {
                return Err(lost(claim));
            }
            let version = self.next_model_version().await?;
            let mut document = record_document(version, ModelStatus::Training, now_ms);
            document.insert("holder", &claim.holder);
            document.insert("token", claim.token);
            match self.collections().models.insert_one(document).await {
                Ok(_) => return Ok(version),
                Err(error) if is_duplicate_key(&error) => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Completes the record of a version `claim` allocated (`status`, and `details`: figures,
    /// files, …); refuses one it did not allocate.
    pub async fn finish_model(
        &self,
        claim: &LeaseClaim,
        version: ModelVersion,
        status: ModelStatus,
        details: Document,
    ) -> Result<(), StoreError> {
        let mut set = details;
        set.insert("status", status.as_str());
        let done = self
            .collections()
            .models
            .update_one(
                doc! {"_id": {"$eq": version.as_i64()}, "holder": {"$eq": &claim.holder}, "token": {"$eq": claim.token}},
                doc! {"$set": set},
            )
            .await?;
        if done.matched_count == 1 {
            Ok(())
        } else {
            Err(StoreError::Shape(format!(
                "model {version} was not allocated by {} (token {})",
                claim.holder, claim.token
            )))
        }
    }

    /// Makes `version` live, in one write that matches only while `claim` holds the training
    /// lease by the store's clock and the live pointer is still `base` (the one the cycle
    /// started from; `None`: no pointer yet); `false` otherwise (nothing changed then): a lost
    /// lease, or an operator's rollback during the cycle.
    pub async fn commit_live_model(
        &self,
        claim: &LeaseClaim,
        version: ModelVersion,
        base: Option<ModelVersion>,
    ) -> Result<bool, StoreError> {
        let now_ms = self.store_time_ms().await?;
        let mut filter = held(claim, now_ms);
        if let Some(base) = base {
            filter.insert("live_version", doc! {"$eq": base.as_i64()});
        }
        let committed = self
            .database()
            .collection::<Document>(LEASES)
            .update_one(filter, doc! {"$set": {"live_version": version.as_i64()}})
            .await?;
        Ok(committed.matched_count == 1)
    }

    /// The live pointer as stored (no fallback, unlike [`Store::live_version`]).
    pub async fn live_pointer(&self) -> Result<Option<ModelVersion>, StoreError> {
        self.database()
            .collection::<Document>(LEASES)
            .find_one(doc! {"_id": {"$eq": TRAINING_LEASE}})
            .await?
            .and_then(|lease| as_i64(lease.get("live_version")))
            .map(version_of)
            .transpose()
    }

    /// Takes a version out of service (`withdrawn`); `false` unless it was published.
    pub async fn withdraw_model(&self, version: ModelVersion) -> Result<bool, StoreError> {
        let done = self
            .collections()
            .models
            .update_one(
                doc! {"_id": {"$eq": version.as_i64()}, "status": {"$eq": ModelStatus::Published.as_str()}},
                doc! {"$set": {"status": ModelStatus::Withdrawn.as_str()}},
            )
            .await?;
        Ok(done.matched_count == 1)
    }

    /// Points the live version at `version` whoever holds the lease (an operator's rollback, and
    /// tests that publish without a trainer).
    pub async fn set_live_model(&self, version: ModelVersion) -> Result<(), StoreError> {
        self.database()
            .collection::<Document>(LEASES)
            .update_one(
                doc! {"_id": {"$eq": TRAINING_LEASE}},
                doc! {
                    "$set": {"live_version": version.as_i64()},
                    "$setOnInsert": {"_id": TRAINING_LEASE, "holder": "", "token": 0_i64, "expires_at_ms": 0_i64},
                },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    /// The live version: the pointer a trainer committed, or (a store from before the pointer)
    /// the newest published version.
    pub async fn live_version(&self) -> Result<Option<ModelVersion>, StoreError> {
        if let Some(version) = self.live_pointer().await? {
            return Ok(Some(version));
        }
        let newest = self
            .collections()
            .models
            .find_one(doc! {"status": {"$eq": ModelStatus::Published.as_str()}})
            .with_options(
                FindOneOptions::builder()
                    .sort(doc! {"version": -1})
                    .projection(doc! {"version": 1})
                    .build(),
            )
            .await?;
        newest
            .and_then(|d| as_i64(d.get("version")))
            .map(version_of)
            .transpose()
    }

    /// The next free model version.
    pub async fn next_model_version(&self) -> Result<ModelVersion, StoreError> {
        let latest = self
            .collections()
            .models
            .find_one(doc! {})
            .with_options(
                FindOneOptions::builder()
                    .sort(doc! {"version": -1})
                    .projection(doc! {"version": 1})
                    .build(),
            )
            .await?;
        version_of(latest.and_then(|d| as_i64(d.get("version"))).unwrap_or(0) + 1)
    }

    /// Records a version outright (`status` and `details`), outside any lease: for tests and
    /// tools that publish without a trainer.
    pub async fn record_model(
        &self,
        version: ModelVersion,
        status: ModelStatus,
        details: Document,
    ) -> Result<(), StoreError> {
        let mut document = details;
        document.extend(record_document(version, status, chrono_now_ms()));
        self.collections()
            .models
            .replace_one(doc! {"_id": {"$eq": version.as_i64()}}, document)
            .upsert(true)
            .await?;
        Ok(())
    }

    /// Records `version` as published outright, with the files given whole: for tests, benches
    /// and tools that publish without a trainer (a trainer streams its files through
    /// [`ChunkWriter`] under its lease).
    pub async fn publish_model_outright(
        &self,
        version: ModelVersion,
        weights: &[u8],
        vocab: &[u8],
    ) -> Result<ModelFiles, StoreError> {
        let mut stored = Vec::with_capacity(2);
        for (name, bytes) in [(WEIGHTS_FILE, weights), (VOCAB_FILE, vocab)] {
            let mut writer = ChunkWriter::new(self, version, name);
            writer.write(bytes).await?;
            stored.push(writer.finish().await?);
        }
        let vocab = stored.pop().expect("two files");
        let weights = stored.pop().expect("two files");
        let files = ModelFiles { weights, vocab };
        let details = doc! {"files": mongodb::bson::to_bson(&files).expect("files serialize")};
        self.record_model(version, ModelStatus::Published, details)
            .await?;
        Ok(files)
    }

    /// The live version's record.
    pub async fn live_model(&self) -> Result<Option<ModelRecord>, StoreError> {
        match self.live_version().await? {
            Some(version) => self.model(version).await,
            None => Ok(None),
        }
    }

    /// The newest `limit` versions, newest first.
    pub async fn models(&self, limit: i64) -> Result<Vec<ModelRecord>, StoreError> {
        use futures::TryStreamExt;
        Ok(self
            .collections()
            .models
            .clone_with_type::<ModelRecord>()
            .find(doc! {})
            .sort(doc! {"version": -1})
            .limit(limit)
            .await?
            .try_collect()
            .await?)
    }

    pub async fn model(&self, version: ModelVersion) -> Result<Option<ModelRecord>, StoreError> {
        Ok(self
            .collections()
            .models
            .clone_with_type::<ModelRecord>()
            .find_one(doc! {"_id": {"$eq": version.as_i64()}})
            .await?)
    }

    /// Reads a stored file chunk by chunk (one reply per chunk keeps under reply caps) and
    /// checks its length and hash.
    pub async fn read_model_file(
        &self,
        version: ModelVersion,
        file: &str,
        expected: &StoredFile,
    ) -> Result<Vec<u8>, StoreError> {
        let chunks = self.database().collection::<Document>(CHUNKS);
        let mut bytes = Vec::with_capacity(expected.bytes.max(0) as usize);
        for n in 0..expected.chunks {
            let id = chunk_id(version, file, n);
            let chunk = chunks
                .find_one(doc! {"_id": {"$eq": &id}})
                .await?
                .ok_or_else(|| StoreError::Shape(format!("model chunk {id} is missing")))?;
            match chunk.get("data") {
                Some(Bson::Binary(binary)) => bytes.extend_from_slice(&binary.bytes),
                other => {
                    return Err(StoreError::Shape(format!(
                        "model chunk {id} holds {other:?}"
                    )))
                }
            }
        }
        let sha256 = format!("{:x}", Sha256::digest(&bytes));
        if bytes.len() as i64 != expected.bytes || sha256 != expected.sha256 {
            return Err(StoreError::Shape(format!(
                "model {version} file {file}: {} bytes with sha256 {sha256}, expected {} bytes with {}",
                bytes.len(),
                expected.bytes,
                expected.sha256
            )));
        }
        Ok(bytes)
    }
}

/// The fields every record has: `_id` and `version` (the number), status, creation time.
fn record_document(version: ModelVersion, status: ModelStatus, now_ms: i64) -> Document {
    doc! {
        "_id": version.as_i64(),
        "version": version.as_i64(),
        "status": status.as_str(),
        "created_at_ms": now_ms,
    }
}

fn version_of(raw: i64) -> Result<ModelVersion, StoreError> {
    ModelVersion::new(raw).map_err(|e| StoreError::Shape(e.to_string()))
}

pub(crate) fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn lost(claim: &LeaseClaim) -> StoreError {
    StoreError::LeaseLost {
        name: claim.name.clone(),
        holder: claim.holder.clone(),
    }
}

impl StoredFile {
    pub fn to_document(&self) -> Document {
        mongodb::bson::to_document(self).expect("a stored file serializes")
    }
}

/// Int32 or Int64 (the stand-in returns small Int64 values as Int32).
pub fn as_i64(value: Option<&Bson>) -> Option<i64> {
    match value? {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        _ => None,
    }
}
