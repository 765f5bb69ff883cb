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
mod people;
mod posts;
mod records;
mod retention;
mod users;
mod votes;

pub use channels::{ChannelPoll, ChannelRecord, ChannelStatus, CHANNEL_STATES};
pub use collections::Collections;
pub use deliveries::{PersonHistory, RecentPost, VoteChange};
pub use keys::{vote_key, PostKey};
pub use leases::LeaseClaim;
pub use models::{
    as_i64, ChunkWriter, ModelFiles, ModelRecord, StoredFile, CHUNK_BYTES, TRAINING_LEASE,
};
pub use people::{Forgotten, PersonData};
pub use posts::content_of as post_content;
pub use records::{DeliveryRecord, PostRecord, UserRecord, VoteRecord};
pub use retention::{RetentionPolicy, RetentionReport};
pub use users::{UserSighting, UserWrites};
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
    #[error("MongoDB did not confirm writes to {collection} as asked: {detail}")]
    WriteErrors {
        collection: &'static str,
        detail: String,
    },
    #[error("MongoDB refused writes to {collection}: {detail}")]
    Refused {
        collection: &'static str,
        detail: String,
    },
    #[error("a stored document has an unexpected shape: {0}")]
    Shape(String),
    #[error("{holder} no longer holds the lease {name}")]
    LeaseLost { name: String, holder: String },
}

/// Server error codes that pass: elections, shutdowns, timeouts, write conflicts.
const TRANSIENT_CODES: [i32; 14] = [
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

impl StoreError {
    /// Whether the same request may succeed later (the store is unreachable, electing, shutting
    /// down, timing out): then the caller keeps the work and waits. Anything else is the store
    /// refusing this request, which another attempt will not change. The one place this is
    /// decided.
    pub fn is_transient(&self) -> bool {
        use mongodb::error::ErrorKind;
        match self {
            StoreError::Mongo(error) => {
                if error.contains_label("RetryableWriteError")
                    || error.contains_label("TransientTransactionError")
                {
                    return true;
                }
                match error.kind.as_ref() {
                    ErrorKind::Io(_)
                    | ErrorKind::ServerSelection { .. }
                    | ErrorKind::ConnectionPoolCleared { .. }
                    | ErrorKind::DnsResolve { .. } => true,
                    ErrorKind::Command(e) => TRANSIENT_CODES.contains(&e.code),
                    ErrorKind::Write(mongodb::error::WriteFailure::WriteConcernError(_)) => true,
                    ErrorKind::Write(mongodb::error::WriteFailure::WriteError(e)) => {
                        TRANSIENT_CODES.contains(&e.code)
                    }
                    _ => false,
                }
            }
            // A write concern that was not met: the writes may yet replicate; try again.
            StoreError::WriteErrors { .. } => true,
            StoreError::Refused { .. } | StoreError::Shape(_) | StoreError::LeaseLost { .. } => {
                false
            }
        }
    }
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

    /// Ends the client's server sessions and closes its connections, for this store and every
    /// clone of it, without waiting for cursors still open. Call it before the runtime stops: a
    /// client dropped last ends its sessions in a task of its own, and a runtime stopping under
    /// that task panics it inside the driver.
    pub async fn close(&self) {
        self.db.client().clone().shutdown().immediate(true).await;
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
    /// Statements the store refused for another reason (the document itself is at fault: a
    /// type mismatch, a failed validation), with its message; the others landed.
    pub refused: Vec<(usize, String)>,
}

impl UpdateOutcome {
    /// For callers that have no use for a partial write: any refusal fails the call.
    pub fn all_or_error(self, collection: &'static str) -> Result<Self, StoreError> {
        if self.refused.is_empty() {
            Ok(self)
        } else {
            let detail = self
                .refused
                .iter()
                .map(|(_, message)| message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            Err(StoreError::Refused { collection, detail })
        }
    }
}

/// Runs a raw `update` command with unordered statements. The raw command reports per-statement
/// upserts and write errors on both MongoDB and the stand-in: duplicate keys and other refusals
/// come back per statement; a write concern that was not met fails the call (the caller
/// retries; the statements that did land are idempotent).
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
        refused: Vec::new(),
    };
    if let Ok(upserted) = reply.get_array("upserted") {
        for entry in upserted {
            outcome.upserted.push(index_of(entry)?);
        }
    }
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
                let message = entry
                    .as_document()
                    .and_then(|e| e.get_str("errmsg").ok())
                    .unwrap_or_default();
                outcome
                    .refused
                    .push((index_of(entry)?, format!("code {code}: {message}")));
            }
        }
    }
    if let Ok(concern) = reply.get_document("writeConcernError") {
        return Err(StoreError::WriteErrors {
            collection,
            detail: concern.to_string(),
        });
    }
    Ok(outcome)
}
