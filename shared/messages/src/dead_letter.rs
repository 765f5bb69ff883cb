//! What the dead-letter queue holds: the original message, untouched, and why it was refused.

use crate::{Message, MessageKind, SCHEMA_VERSION};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Machine-readable reasons, also sent as the `x-oleg-reason` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    TooLarge,
    Malformed,
    UnsupportedSchemaVersion,
    UnknownReaction,
    UnknownPost,
    /// The handler failed transiently on every one of the allowed attempts.
    RetriesExhausted,
    /// The store refused to write it on every one of the allowed attempts.
    StoreRefused,
    /// Dated further ahead of the worker's clock than the allowed skew.
    FromTheFuture,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 8] = [
        DeadLetterReason::TooLarge,
        DeadLetterReason::Malformed,
        DeadLetterReason::UnsupportedSchemaVersion,
        DeadLetterReason::UnknownReaction,
        DeadLetterReason::UnknownPost,
        DeadLetterReason::RetriesExhausted,
        DeadLetterReason::StoreRefused,
        DeadLetterReason::FromTheFuture,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::TooLarge => "too_large",
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::UnsupportedSchemaVersion => "unsupported_schema_version",
            DeadLetterReason::UnknownReaction => "unknown_reaction",
            DeadLetterReason::UnknownPost => "unknown_post",
            DeadLetterReason::RetriesExhausted => "retries_exhausted",
            DeadLetterReason::StoreRefused => "store_refused",
            DeadLetterReason::FromTheFuture => "from_the_future",
        }
    }
}

/// The original body: as text when it is UTF-8, else base64, so nothing is lost either way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "encoding", content = "data", rename_all = "snake_case")]
pub enum Payload {
    Utf8(String),
    Base64(String),
}

impl Payload {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Payload::Utf8(text.to_owned()),
            Err(_) => Payload::Base64(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match self {
            Payload::Utf8(text) => Ok(text.as_bytes().to_vec()),
            Payload::Base64(data) => base64::engine::general_purpose::STANDARD.decode(data),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    pub schema_version: u32,
    pub reason: DeadLetterReason,
    /// A human-readable explanation (which field, what was expected).
    pub detail: String,
    /// The queue the message was consumed from.
    pub queue: String,
    pub routing_key: String,
    /// How many times it was delivered before it was given up on.
    pub attempts: u32,
    pub failed_at: DateTime<Utc>,
    pub payload: Payload,
    /// How many times an operator replayed the message before it failed this time.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replays: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl DeadLetter {
    pub fn new(
        reason: DeadLetterReason,
        detail: impl Into<String>,
        queue: impl Into<String>,
        routing_key: impl Into<String>,
        attempts: u32,
        body: &[u8],
    ) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            reason,
            detail: detail.into(),
            queue: queue.into(),
            routing_key: routing_key.into(),
            attempts,
            failed_at: Utc::now(),
            payload: Payload::from_bytes(body),
            replays: 0,
        }
    }

    /// The same letter, for a message an operator had replayed `replays` times.
    pub fn replayed(self, replays: u32) -> Self {
        Self { replays, ..self }
    }
}

impl Message for DeadLetter {
    const KIND: MessageKind = MessageKind::DeadLetter;
}
