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
use sha2::{Digest, Sha256};

/// Chunk size: well under MongoDB's 16 MB document limit and the stand-in's 48 MB reply cap.
pub const CHUNK_BYTES: usize = 4 << 20;
const CHUNKS: &str = "model_chunks";

/// Collects a file's bytes into chunk documents as they are written.
pub struct ChunkWriter<'a> {
    store: &'a Store,
    version: i64,
    file: String,
    buffer: Vec<u8>,
    chunks: i64,
    hash: Sha256,
}

/// What `models.files.<name>` records of a stored file.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFile {
    pub bytes: i64,
    pub chunks: i64,
    pub sha256: String,
}

impl<'a> ChunkWriter<'a> {
    pub fn new(store: &'a Store, version: i64, file: &str) -> Self {
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
        let id = format!("{}:{}:{}", self.version, self.file, self.chunks);
        // The _id is in the document too: the stand-in does not take it from an `$eq` filter.
        let chunk = doc! {
            "_id": &id,
            "version": self.version,
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

/// The lease one trainer at a time trains under, whose document also holds the live version.
pub const TRAINING_LEASE: &str = "trainer";

impl Store {
    /// Allocates the next version for `claim`'s cycle: a unique insert of a `training` document
    /// (a version another trainer allocated first is skipped), fenced by the lease.
    pub async fn allocate_model_version(
        &self,
        claim: &LeaseClaim,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        loop {
            if !self.holds_lease(claim).await? {
                return Err(lost(claim));
            }
            let version = self.next_model_version().await?;
            let document = doc! {
                "_id": version, "version": version, "status": "training",
                "holder": &claim.holder, "token": claim.token, "created_at_ms": now_ms,
            };
            match self.collections().models.insert_one(document).await {
                Ok(_) => return Ok(version),
                Err(error) if is_duplicate_key(&error) => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Completes the document of a version `claim` allocated (figures, files, `status`); refuses
    /// one it did not allocate.
    pub async fn finish_model(
        &self,
        claim: &LeaseClaim,
        version: i64,
        metadata: Document,
    ) -> Result<(), StoreError> {
        let done = self
            .collections()
            .models
            .update_one(
                doc! {"_id": {"$eq": version}, "holder": {"$eq": &claim.holder}, "token": {"$eq": claim.token}},
                doc! {"$set": metadata},
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
    /// lease by the store's clock; `false` if it no longer does (nothing changed then).
    pub async fn commit_live_model(
        &self,
        claim: &LeaseClaim,
        version: i64,
    ) -> Result<bool, StoreError> {
        let now_ms = self.store_time_ms().await?;
        let committed = self
            .database()
            .collection::<Document>(LEASES)
            .update_one(
                held(claim, now_ms),
                doc! {"$set": {"live_version": version}},
            )
            .await?;
        Ok(committed.matched_count == 1)
    }

    /// Points the live version at `version` whoever holds the lease (an operator's rollback, and
    /// tests that publish without a trainer).
    pub async fn set_live_model(&self, version: i64) -> Result<(), StoreError> {
        self.database()
            .collection::<Document>(LEASES)
            .update_one(
                doc! {"_id": {"$eq": TRAINING_LEASE}},
                doc! {
                    "$set": {"live_version": version},
                    "$setOnInsert": {"_id": TRAINING_LEASE, "holder": "", "token": 0_i64, "expires_at_ms": 0_i64},
                },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    /// The live version: the pointer a trainer committed, or (a store from before the pointer)
    /// the newest published version.
    pub async fn live_version(&self) -> Result<Option<i64>, StoreError> {
        let pointer = self
            .database()
            .collection::<Document>(LEASES)
            .find_one(doc! {"_id": {"$eq": TRAINING_LEASE}})
            .await?
            .and_then(|lease| as_i64(lease.get("live_version")));
        if pointer.is_some() {
            return Ok(pointer);
        }
        let newest = self
            .collections()
            .models
            .find_one(doc! {"status": {"$eq": "published"}})
            .with_options(
                FindOneOptions::builder()
                    .sort(doc! {"version": -1})
                    .projection(doc! {"_id": 1})
                    .build(),
            )
            .await?;
        Ok(newest.and_then(|d| as_i64(d.get("_id"))))
    }

    /// The next free model version.
    pub async fn next_model_version(&self) -> Result<i64, StoreError> {
        let latest = self
            .collections()
            .models
            .find_one(doc! {})
            .with_options(
                FindOneOptions::builder()
                    .sort(doc! {"version": -1})
                    .projection(doc! {"_id": 1})
                    .build(),
            )
            .await?;
        Ok(latest.and_then(|d| as_i64(d.get("_id"))).unwrap_or(0) + 1)
    }

    /// Records a version's metadata outright (`status`: published or rejected), outside any
    /// lease: for tests and tools that publish without a trainer.
    pub async fn record_model(&self, version: i64, metadata: Document) -> Result<(), StoreError> {
        let mut document = metadata;
        document.insert("_id", version);
        // Versions are ordered by this field, not by `_id`: the stand-in sorts `_id`s as text
        // (so 9 came after 10 there), other integer fields by value, as MongoDB does.
        document.insert("version", version);
        self.collections()
            .models
            .replace_one(doc! {"_id": {"$eq": version}}, document)
            .upsert(true)
            .await?;
        Ok(())
    }

    /// The live version's metadata.
    pub async fn live_model(&self) -> Result<Option<Document>, StoreError> {
        match self.live_version().await? {
            Some(version) => self.model(version).await,
            None => Ok(None),
        }
    }

    pub async fn model(&self, version: i64) -> Result<Option<Document>, StoreError> {
        Ok(self
            .collections()
            .models
            .find_one(doc! {"_id": {"$eq": version}})
            .await?)
    }

    /// Reads a stored file chunk by chunk (one reply per chunk keeps under reply caps) and
    /// checks its length and hash.
    pub async fn read_model_file(
        &self,
        version: i64,
        file: &str,
        expected: &StoredFile,
    ) -> Result<Vec<u8>, StoreError> {
        let chunks = self.database().collection::<Document>(CHUNKS);
        let mut bytes = Vec::with_capacity(expected.bytes.max(0) as usize);
        for n in 0..expected.chunks {
            let id = format!("{version}:{file}:{n}");
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

fn lost(claim: &LeaseClaim) -> StoreError {
    StoreError::LeaseLost {
        name: claim.name.clone(),
        holder: claim.holder.clone(),
    }
}

impl StoredFile {
    pub fn to_document(&self) -> Document {
        doc! {"bytes": self.bytes, "chunks": self.chunks, "sha256": &self.sha256}
    }

    pub fn from_document(document: &Document) -> Result<Self, StoreError> {
        Ok(Self {
            bytes: as_i64(document.get("bytes"))
                .ok_or_else(|| StoreError::Shape("file bytes".into()))?,
            chunks: as_i64(document.get("chunks"))
                .ok_or_else(|| StoreError::Shape("file chunks".into()))?,
            sha256: document
                .get_str("sha256")
                .map_err(|e| StoreError::Shape(e.to_string()))?
                .to_owned(),
        })
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
