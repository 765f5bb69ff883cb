//! OLEG's MongoDB store.
//!
//! Written for at-least-once delivery: every write is an idempotent upsert keyed by a unique
//! index, so a redelivered message changes nothing; no multi-document transactions. Times are
//! Int64 epoch milliseconds (the Mongo-wire stand-in used in development stores BSON dates
//! written by updates as strings). Hot-path filters use explicit `$eq` on `_id`, which is what
//! MongoDB does anyway and what the stand-in needs to use its index.

mod channels;
mod collections;
mod deliveries;
mod keys;
mod leases;
mod models;
mod posts;
mod records;
mod users;
mod votes;

pub use channels::{ChannelPoll, ChannelRecord};
pub use collections::Collections;
pub use deliveries::RecentPost;
pub use keys::{post_key, vote_key};
pub use models::{as_i64, ChunkWriter, StoredFile, CHUNK_BYTES};
pub use records::{DeliveryRecord, PostRecord, UserRecord, VoteRecord};
pub use users::UserSighting;
pub use votes::{VoteWrite, VoteWriteSummary};

use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};
use oleg_settings::MongoSettings;
use secrecy::ExposeSecret;
use std::time::Duration;

/// MongoDB's duplicate-key error code; the stand-in sends a different message, so only the code
/// is matched.
pub const DUPLICATE_KEY: i32 = 11000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("MongoDB: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("MongoDB refused writes to {collection}: {detail}")]
    WriteErrors {
        collection: &'static str,
        detail: String,
    },
    #[error("a stored document has an unexpected shape: {0}")]
    Shape(String),
}

/// A handle on OLEG's database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    /// Connects lazily (the driver connects on first use) with the configured timeouts.
    pub async fn connect(settings: &MongoSettings, app_name: &str) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(settings.uri.expose_secret()).await?;
        let timeout = Duration::from_millis(settings.timeout_ms);
        options.app_name = Some(app_name.to_owned());
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        let client = Client::with_options(options)?;
        let db = client.database(&settings.database);
        Ok(Self { db })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn collections(&self) -> Collections {
        Collections::new(&self.db)
    }

    /// Round trip to the server; readiness probes call it.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! {"ping": 1}).await?;
        Ok(())
    }

    /// Creates every collection's indexes; repeating it changes nothing.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.collections().ensure_indexes().await
    }

    /// Drops the whole database (tests and `oleg` resets only).
    pub async fn drop_database(&self) -> Result<(), StoreError> {
        self.db.drop().await?;
        Ok(())
    }
}

/// What an unordered `update` command did, per statement index.
pub(crate) struct UpdateOutcome {
    /// Statements that inserted a document.
    pub upserted: Vec<usize>,
    /// Statements refused with a duplicate key: for a conditional upsert, "nothing to do".
    pub duplicates: Vec<usize>,
}

/// Runs a raw `update` command with unordered statements. The raw command reports per-statement
/// upserts and duplicate-key errors on both MongoDB and the stand-in. Any other write error fails
/// the call (the caller retries; the statements that did land are idempotent).
pub(crate) async fn run_update(
    db: &Database,
    collection: &'static str,
    updates: Vec<Document>,
) -> Result<UpdateOutcome, StoreError> {
    let statements = updates.len();
    let reply = db
        .run_command(doc! {
            "update": collection,
            "updates": updates,
            "ordered": false,
        })
        .await?;
    let index_of = |entry: &Bson| -> Result<usize, StoreError> {
        let index = match entry.as_document().and_then(|e| e.get("index")) {
            Some(Bson::Int32(i)) => *i as usize,
            Some(Bson::Int64(i)) => *i as usize,
            other => return Err(StoreError::Shape(format!("update reply index {other:?}"))),
        };
        if index < statements {
            Ok(index)
        } else {
            Err(StoreError::Shape(format!(
                "update reply index {index} of {statements}"
            )))
        }
    };
    let mut outcome = UpdateOutcome {
        upserted: Vec::new(),
        duplicates: Vec::new(),
    };
    if let Ok(upserted) = reply.get_array("upserted") {
        for entry in upserted {
            outcome.upserted.push(index_of(entry)?);
        }
    }
    let mut failures = Vec::new();
    if let Ok(errors) = reply.get_array("writeErrors") {
        for entry in errors {
            let code = match entry.as_document().and_then(|e| e.get("code")) {
                Some(Bson::Int32(c)) => i64::from(*c),
                Some(Bson::Int64(c)) => *c,
                _ => 0,
            };
            if code == i64::from(DUPLICATE_KEY) {
                outcome.duplicates.push(index_of(entry)?);
            } else {
                failures.push(entry.to_string());
            }
        }
    }
    if let Ok(concern) = reply.get_document("writeConcernError") {
        failures.push(concern.to_string());
    }
    if failures.is_empty() {
        Ok(outcome)
    } else {
        Err(StoreError::WriteErrors {
            collection,
            detail: failures.join("; "),
        })
    }
}
