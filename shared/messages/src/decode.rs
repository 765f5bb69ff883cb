//! Turning bytes from a queue into a typed message, or into a reason to dead-letter them.

use crate::{DeadLetterReason, Message, SCHEMA_VERSION};
use serde_json::Value;

/// Why a message was refused; becomes the dead-letter envelope's `reason` and `detail`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct Rejection {
    pub reason: DeadLetterReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: DeadLetterReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Decodes one message body, checking in order: size, JSON, `schema_version`, the type's own
/// prechecks, then every field.
pub fn decode<M: Message>(body: &[u8], max_bytes: usize) -> Result<M, Rejection> {
    if body.len() > max_bytes {
        return Err(Rejection::new(
            DeadLetterReason::TooLarge,
            format!("{} bytes is over the {max_bytes}-byte limit", body.len()),
        ));
    }
    let document: Value = serde_json::from_slice(body)
        .map_err(|e| Rejection::new(DeadLetterReason::Malformed, format!("not JSON: {e}")))?;
    let Value::Object(fields) = &document else {
        return Err(Rejection::new(
            DeadLetterReason::Malformed,
            "expected a JSON object",
        ));
    };
    match fields.get("schema_version") {
        None => {
            return Err(Rejection::new(
                DeadLetterReason::Malformed,
                "schema_version is missing",
            ))
        }
        Some(v) if v.as_u64() == Some(u64::from(SCHEMA_VERSION)) => {}
        Some(other) => {
            return Err(Rejection::new(
                DeadLetterReason::UnsupportedSchemaVersion,
                format!(
                    "schema_version {other} is not supported (this build reads {SCHEMA_VERSION})"
                ),
            ))
        }
    }
    M::precheck(&document)?;
    // The path names the offending field, which serde_json's own errors do not.
    serde_path_to_error::deserialize(document).map_err(|e| {
        Rejection::new(
            DeadLetterReason::Malformed,
            format!("{} at `{}`: {}", M::KIND.name(), e.path(), e.inner()),
        )
    })
}

/// Serialises a message; our own types always serialise.
pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    serde_json::to_vec(message).expect("message types serialise to JSON")
}
