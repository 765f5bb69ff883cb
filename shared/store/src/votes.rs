//! Order-safe, idempotent vote writes.

use crate::{run_update, vote_key, Collections, Store, StoreError, DUPLICATE_KEY};
use mongodb::bson::{doc, Bson, Document};
use oleg_messages::Vote;

/// What happened to one vote of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteWrite {
    /// First vote of this person on this post.
    New,
    /// Replaced an older vote of this person on this post.
    Changed,
    /// Changed nothing: a redelivery, a duplicate, or older than the stored vote.
    Unchanged,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VoteWriteSummary {
    pub new: u64,
    pub changed: u64,
    pub unchanged: u64,
}

impl Store {
    /// Writes a batch of votes with one unordered bulk upsert and says what each one did.
    ///
    /// Each statement matches the stored vote only if it is older than the incoming one
    /// (`voted_at_ms $lt`). A newer vote replaces it and bumps `revision`; a missing one is
    /// inserted; an equal or newer stored vote makes the upsert collide on `_id` (duplicate key),
    /// which is how "nothing to do" is reported. So redeliveries change nothing and out-of-order
    /// delivery cannot bring an old vote back, whatever order the statements run in.
    pub async fn upsert_votes(
        &self,
        votes: &[Vote],
        ingested_at_ms: i64,
    ) -> Result<Vec<VoteWrite>, StoreError> {
        if votes.is_empty() {
            return Ok(Vec::new());
        }
        let updates: Vec<Document> = votes
            .iter()
            .map(|vote| {
                let post = vote.post();
                let voted_at_ms = vote.voted_at.timestamp_millis();
                doc! {
                    "q": {"_id": {"$eq": vote_key(vote.user_id, &post)}, "voted_at_ms": {"$lt": voted_at_ms}},
                    "u": {
                        "$set": {
                            "user_id": vote.user_id.get(),
                            "channel": post.channel.as_str(),
                            "post_id": post.post_id.get(),
                            "reaction": vote.reaction.as_str(),
                            "voted_at_ms": voted_at_ms,
                            "ingested_at_ms": ingested_at_ms,
                        },
                        "$inc": {"revision": 1_i64},
                    },
                    "upsert": true,
                    "multi": false,
                }
            })
            .collect();
        let reply = run_update(self.database(), Collections::VOTES, updates).await?;
        classify(&reply, votes.len())
    }
}

/// Per-statement outcome from an `update` reply: listed in `upserted` → new; duplicate-key write
/// error → unchanged; otherwise it matched an older vote → changed. Any other write error fails
/// the whole batch (it is retried; the writes that did land are idempotent).
fn classify(reply: &Document, statements: usize) -> Result<Vec<VoteWrite>, StoreError> {
    let mut outcome = vec![VoteWrite::Changed; statements];
    let index_of = |entry: &Document| -> Result<usize, StoreError> {
        match entry.get("index") {
            Some(Bson::Int32(i)) => Ok(*i as usize),
            Some(Bson::Int64(i)) => Ok(*i as usize),
            other => Err(StoreError::Shape(format!(
                "update reply entry index {other:?}"
            ))),
        }
        .and_then(|i| {
            if i < statements {
                Ok(i)
            } else {
                Err(StoreError::Shape(format!(
                    "update reply index {i} of {statements}"
                )))
            }
        })
    };
    if let Ok(upserted) = reply.get_array("upserted") {
        for entry in upserted {
            let entry = entry
                .as_document()
                .ok_or_else(|| StoreError::Shape("upserted entry is not a document".into()))?;
            outcome[index_of(entry)?] = VoteWrite::New;
        }
    }
    if let Ok(errors) = reply.get_array("writeErrors") {
        let mut other = Vec::new();
        for entry in errors {
            let entry = entry
                .as_document()
                .ok_or_else(|| StoreError::Shape("write error is not a document".into()))?;
            let code = match entry.get("code") {
                Some(Bson::Int32(c)) => *c,
                Some(Bson::Int64(c)) => *c as i32,
                _ => 0,
            };
            if code == DUPLICATE_KEY {
                outcome[index_of(entry)?] = VoteWrite::Unchanged;
            } else {
                other.push(entry.to_string());
            }
        }
        if !other.is_empty() {
            return Err(StoreError::WriteErrors {
                command: "update votes",
                detail: other.join("; "),
            });
        }
    }
    if let Ok(concern) = reply.get_document("writeConcernError") {
        return Err(StoreError::WriteErrors {
            command: "update votes",
            detail: concern.to_string(),
        });
    }
    Ok(outcome)
}

impl VoteWriteSummary {
    pub fn of(writes: &[VoteWrite]) -> Self {
        let mut summary = Self::default();
        for write in writes {
            match write {
                VoteWrite::New => summary.new += 1,
                VoteWrite::Changed => summary.changed += 1,
                VoteWrite::Unchanged => summary.unchanged += 1,
            }
        }
        summary
    }
}
