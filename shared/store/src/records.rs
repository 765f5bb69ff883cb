//! Stored documents, as read back. Integers deserialize from Int32 or Int64 (the stand-in returns
//! small Int64 values as Int32).

use oleg_messages::Reaction;
use serde::{Deserialize, Serialize};

/// One person's current vote on one post (`votes`, `_id` = [`crate::vote_key`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteRecord {
    #[serde(rename = "_id")]
    pub key: String,
    pub user_id: i64,
    pub channel: String,
    pub post_id: i64,
    /// `like` or `dislike`. Not a bool: the stand-in returns booleans written by `$set` on an
    /// existing document as integers.
    pub reaction: Reaction,
    pub voted_at_ms: i64,
    pub ingested_at_ms: i64,
    /// How many votes of this person on this post were applied: 1 for the first, +1 for each
    /// newer one that replaced the stored value.
    pub revision: i64,
    /// The revision a published model was trained on, for votes near its watermark (see
    /// `Store::mark_votes_trained`); a vote changed since has a newer revision.
    #[serde(default)]
    pub trained_revision: Option<i64>,
}

impl VoteRecord {
    /// Whether a published model was trained on this vote as it stands.
    pub fn trained(&self) -> bool {
        self.trained_revision == Some(self.revision)
    }
}

/// A person (`users`, `_id` = Telegram user id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    #[serde(rename = "_id")]
    pub user_id: i64,
    pub first_seen_ms: i64,
    #[serde(default)]
    pub started_at_ms: Option<i64>,
    #[serde(default)]
    pub language_code: Option<String>,
}

/// A post (`posts`, `_id` = [`crate::PostKey`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostRecord {
    #[serde(rename = "_id")]
    pub key: String,
    pub channel: String,
    pub post_id: i64,
    pub published_at_ms: i64,
    pub text: String,
    #[serde(default)]
    pub views: Option<i64>,
    pub first_seen_ms: i64,
}

/// A post sent to a person (`deliveries`, `_id` = [`crate::vote_key`]); never sent again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    #[serde(rename = "_id")]
    pub key: String,
    pub user_id: i64,
    pub channel: String,
    pub post_id: i64,
    pub delivered_at_ms: i64,
    /// The request that sent it (the RPC correlation id), so that a request delivered again is
    /// answered with the same posts and a reply nobody received can be released.
    #[serde(default)]
    pub request_id: Option<String>,
}
