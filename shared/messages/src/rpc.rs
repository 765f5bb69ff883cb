//! The recommendation RPC: a request on the ranker's queue, a reply to the request's `reply_to`.

use crate::{
    ChannelName, Message, MessageKind, ModelVersion, PostId, PostRef, UserId, SCHEMA_VERSION,
};
use serde::{Deserialize, Serialize};

/// "What should this person see next?"
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendRequest {
    pub schema_version: u32,
    pub user_id: UserId,
    /// How many posts are wanted; the ranker caps it at its configured maximum.
    #[serde(default = "RecommendRequest::default_count")]
    pub count: u32,
    /// Posts that must not be returned, on top of what the person voted on or was sent.
    #[serde(default)]
    pub exclude: Vec<PostRef>,
}

impl RecommendRequest {
    fn default_count() -> u32 {
        1
    }

    pub fn new(user_id: UserId, count: u32) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            user_id,
            count,
            exclude: Vec::new(),
        }
    }
}

impl Message for RecommendRequest {
    const KIND: MessageKind = MessageKind::RecommendRequest;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendedPost {
    pub channel: ChannelName,
    pub post_id: PostId,
    pub score: f64,
    /// Chosen by exploration (a fresh channel) rather than by score alone.
    #[serde(default)]
    pub explored: bool,
    /// The post's text as scraped (empty for media without a caption), so that a frontend can
    /// show the post without reading the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl RecommendedPost {
    pub fn post(&self) -> PostRef {
        PostRef {
            channel: self.channel.clone(),
            post_id: self.post_id,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecommendErrorCode {
    Malformed,
    UnsupportedSchemaVersion,
    Unavailable,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendError {
    pub code: RecommendErrorCode,
    pub message: String,
}

/// How the ranker explores beyond the posts it expects a person to like most.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExplorationPolicy {
    /// Gaussian noise of a fixed size on every score (the original's).
    #[default]
    Noise,
    /// Thompson sampling: each post's score is a draw from a posterior of the person's like
    /// rate, centred on the model's estimate and moved by the person's own votes on its channel.
    Thompson,
    /// The mean of that posterior: no random exploration; the person's votes move it, so what
    /// they dislike sinks at once and the next best is tried.
    PosteriorMean,
}

/// The ranker's answer: posts in order, or an error (a request never goes unanswered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum RecommendReply {
    Ok {
        schema_version: u32,
        user_id: UserId,
        posts: Vec<RecommendedPost>,
        /// The model version that scored the posts; absent before the first model.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model_version: Option<ModelVersion>,
        cold_start: bool,
        /// Standard deviation of the Gaussian noise added to scores.
        exploration_noise: f64,
        /// The policy that ordered the posts not marked `explored` (those came from channels the
        /// person had not tried).
        #[serde(default)]
        exploration: ExplorationPolicy,
    },
    Error {
        schema_version: u32,
        error: RecommendError,
    },
}

impl RecommendReply {
    pub fn error(code: RecommendErrorCode, message: impl Into<String>) -> Self {
        RecommendReply::Error {
            schema_version: SCHEMA_VERSION,
            error: RecommendError {
                code,
                message: message.into(),
            },
        }
    }
}

impl Message for RecommendReply {
    const KIND: MessageKind = MessageKind::RecommendReply;
}
