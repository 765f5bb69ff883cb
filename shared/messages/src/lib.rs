//! The contracts between OLEG's workers and its bot frontend: one Rust type per message that crosses
//! a queue, each with a JSON Schema in `schemas/` (embedded here) and a `schema_version` field.

mod dead_letter;
mod decode;
mod domain;
mod events;
mod model;
mod rpc;

pub use dead_letter::{DeadLetter, DeadLetterReason, Payload};
pub use decode::{decode, encode, Rejection};
pub use domain::{ChannelName, FieldError, PostId, PostRef, Reaction, UserId};
pub use events::{
    AddChannel, HoldoutMetrics, MediaItem, MediaKind, ModelPublished, ScrapedPost, UserStarted,
    Vote, VotesIngested,
};
pub use model::{ModelStatus, ModelVersion, VocabFile, VOCAB_FILE, WEIGHTS_FILE};
pub use rpc::{
    ExplorationPolicy, RecommendError, RecommendErrorCode, RecommendReply, RecommendRequest,
    RecommendedPost,
};

use serde::{de::DeserializeOwned, Serialize};

/// The only `schema_version` this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Every kind of message, with where its schema lives and how it is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    ScrapedPost,
    Vote,
    UserStarted,
    VotesIngested,
    ModelPublished,
    RecommendRequest,
    RecommendReply,
    DeadLetter,
    AddChannel,
}

impl MessageKind {
    pub const ALL: [MessageKind; 9] = [
        MessageKind::ScrapedPost,
        MessageKind::Vote,
        MessageKind::UserStarted,
        MessageKind::VotesIngested,
        MessageKind::ModelPublished,
        MessageKind::RecommendRequest,
        MessageKind::RecommendReply,
        MessageKind::DeadLetter,
        MessageKind::AddChannel,
    ];

    /// The schema's file name under `schemas/`, without `.schema.json`.
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::ScrapedPost => "scraped_post",
            MessageKind::Vote => "vote",
            MessageKind::UserStarted => "user_started",
            MessageKind::VotesIngested => "votes_ingested",
            MessageKind::ModelPublished => "model_published",
            MessageKind::RecommendRequest => "recommend_request",
            MessageKind::RecommendReply => "recommend_reply",
            MessageKind::DeadLetter => "dead_letter",
            MessageKind::AddChannel => "add_channel",
        }
    }

    /// Routing key on the events exchange; `None` for messages that travel point to point
    /// (RPC requests and replies) or to the dead-letter exchange.
    pub fn routing_key(self) -> Option<&'static str> {
        match self {
            MessageKind::ScrapedPost => Some("post.scraped"),
            MessageKind::Vote => Some("vote.cast"),
            MessageKind::UserStarted => Some("user.started"),
            MessageKind::VotesIngested => Some("votes.ingested"),
            MessageKind::ModelPublished => Some("model.published"),
            MessageKind::AddChannel => Some("channel.add"),
            MessageKind::RecommendRequest
            | MessageKind::RecommendReply
            | MessageKind::DeadLetter => None,
        }
    }

    /// The JSON Schema (draft 2020-12) text, as shipped in `schemas/`.
    pub fn schema(self) -> &'static str {
        match self {
            MessageKind::ScrapedPost => include_str!("../../../schemas/scraped_post.schema.json"),
            MessageKind::Vote => include_str!("../../../schemas/vote.schema.json"),
            MessageKind::UserStarted => include_str!("../../../schemas/user_started.schema.json"),
            MessageKind::VotesIngested => {
                include_str!("../../../schemas/votes_ingested.schema.json")
            }
            MessageKind::ModelPublished => {
                include_str!("../../../schemas/model_published.schema.json")
            }
            MessageKind::RecommendRequest => {
                include_str!("../../../schemas/recommend_request.schema.json")
            }
            MessageKind::RecommendReply => {
                include_str!("../../../schemas/recommend_reply.schema.json")
            }
            MessageKind::DeadLetter => include_str!("../../../schemas/dead_letter.schema.json"),
            MessageKind::AddChannel => include_str!("../../../schemas/add_channel.schema.json"),
        }
    }
}

/// A type that crosses a queue.
pub trait Message: Serialize + DeserializeOwned {
    const KIND: MessageKind;

    /// Checks that give a sharper dead-letter reason than "malformed", run on the raw document
    /// before typed decoding.
    fn precheck(_document: &serde_json::Value) -> Result<(), Rejection> {
        Ok(())
    }
}
