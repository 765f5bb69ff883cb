//! Events published on the topic exchange.

use crate::{
    ChannelName, DeadLetterReason, Message, MessageKind, ModelVersion, PostId, PostRef, Reaction,
    Rejection, UserId, SCHEMA_VERSION,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A person pressed 👍 or 👎 under a post. Later votes by the same person on the same post replace
/// earlier ones, ordered by `voted_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vote {
    pub schema_version: u32,
    pub user_id: UserId,
    pub channel: ChannelName,
    pub post_id: PostId,
    pub reaction: Reaction,
    pub voted_at: DateTime<Utc>,
}

impl Vote {
    pub fn new(
        user_id: UserId,
        post: PostRef,
        reaction: Reaction,
        voted_at: DateTime<Utc>,
    ) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            user_id,
            channel: post.channel,
            post_id: post.post_id,
            reaction,
            voted_at,
        }
    }

    pub fn post(&self) -> PostRef {
        PostRef {
            channel: self.channel.clone(),
            post_id: self.post_id,
        }
    }
}

impl Message for Vote {
    const KIND: MessageKind = MessageKind::Vote;

    fn precheck(document: &serde_json::Value) -> Result<(), Rejection> {
        match document.get("reaction") {
            Some(serde_json::Value::String(r)) if !Reaction::NAMES.contains(&r.as_str()) => {
                Err(Rejection::new(
                    DeadLetterReason::UnknownReaction,
                    format!("reaction {r:?} is not one of {:?}", Reaction::NAMES),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A person started the bot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserStarted {
    pub schema_version: u32,
    pub user_id: UserId,
    pub started_at: DateTime<Utc>,
    /// The IETF language tag Telegram reports for the person, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_code: Option<String>,
}

impl UserStarted {
    pub fn new(user_id: UserId, started_at: DateTime<Utc>) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            user_id,
            started_at,
            language_code: None,
        }
    }
}

impl Message for UserStarted {
    const KIND: MessageKind = MessageKind::UserStarted;
}

/// Kinds of media a post can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Photo,
    Video,
    RoundVideo,
    Document,
    Poll,
    LinkPreview,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaItem {
    pub kind: MediaKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A post read from a channel's web preview, announced after it was stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapedPost {
    pub schema_version: u32,
    pub channel: ChannelName,
    pub post_id: PostId,
    pub published_at: DateTime<Utc>,
    pub text: String,
    #[serde(default)]
    pub links: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub views: Option<u64>,
    /// The median view counter of the posts on the page it was read from: its channel's usual
    /// reach, which its own views are read against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_median_views: Option<u64>,
    #[serde(default)]
    pub media: Vec<MediaItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<PostId>,
    pub scraped_at: DateTime<Utc>,
}

impl Message for ScrapedPost {
    const KIND: MessageKind = MessageKind::ScrapedPost;
}

/// Sent by ingest after each committed batch; the trainer decides from these when to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VotesIngested {
    pub schema_version: u32,
    /// Votes stored for a (person, post) pair seen for the first time.
    pub new_votes: u64,
    /// Votes that replaced an older vote of the same person on the same post.
    pub changed_votes: u64,
    /// Votes that changed nothing (redeliveries, duplicates, stale re-votes).
    pub duplicate_votes: u64,
    /// Every vote in the batch was stored with an ingest time at or before this instant.
    pub ingested_through: DateTime<Utc>,
}

impl Message for VotesIngested {
    const KIND: MessageKind = MessageKind::VotesIngested;
}

/// Holdout figures of a trained model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldoutMetrics {
    pub auc: f64,
    pub mse: f64,
    pub log_loss: f64,
    pub votes: u64,
}

/// A new model version is live; rankers load it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPublished {
    pub schema_version: u32,
    pub version: ModelVersion,
    /// The network variant, e.g. `channel_mlp` or `dot`.
    pub variant: String,
    pub trained_on_votes: u64,
    pub holdout: HoldoutMetrics,
    pub published_at: DateTime<Utc>,
}

impl Message for ModelPublished {
    const KIND: MessageKind = MessageKind::ModelPublished;
}

/// Follow a public channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddChannel {
    pub schema_version: u32,
    pub channel: ChannelName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<UserId>,
    pub requested_at: DateTime<Utc>,
}

impl Message for AddChannel {
    const KIND: MessageKind = MessageKind::AddChannel;
}
