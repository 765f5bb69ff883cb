use crate::{DeliveryRecord, PostRecord, StoreError, UserRecord, VoteRecord};
use mongodb::bson::{doc, Document};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

/// Typed handles on every collection.
#[derive(Clone, Debug)]
pub struct Collections {
    pub channels: Collection<Document>,
    pub posts: Collection<PostRecord>,
    pub users: Collection<UserRecord>,
    pub votes: Collection<VoteRecord>,
    pub deliveries: Collection<DeliveryRecord>,
    pub models: Collection<Document>,
}

impl Collections {
    pub const CHANNELS: &'static str = "channels";
    pub const POSTS: &'static str = "posts";
    pub const USERS: &'static str = "users";
    pub const VOTES: &'static str = "votes";
    pub const DELIVERIES: &'static str = "deliveries";
    pub const MODELS: &'static str = "models";
    /// The bot's record of each person's chat (written by oleg-bot).
    pub const BOT_CHATS: &'static str = "bot_chats";
    /// Telegram updates the bot took: those not handled yet, and the ids of those handled within
    /// the last day (written by oleg-bot).
    pub const BOT_UPDATES: &'static str = "bot_updates";
    /// Where the bot's long polling stands: `_id` `polling`, `offset` (written by oleg-bot).
    pub const BOT_STATE: &'static str = "bot_state";

    pub fn new(db: &Database) -> Self {
        Self {
            channels: db.collection(Self::CHANNELS),
            posts: db.collection(Self::POSTS),
            users: db.collection(Self::USERS),
            votes: db.collection(Self::VOTES),
            deliveries: db.collection(Self::DELIVERIES),
            models: db.collection(Self::MODELS),
        }
    }

    /// Uniqueness lives in `_id` (channel + message id for posts, user + post for votes and
    /// deliveries, version for models); these are the secondary indexes the workers query by.
    /// Index names end in `_<field>` of their first key because the stand-in only uses an index
    /// for `{field: value}` filters under that naming; MongoDB does not care.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        fn index(keys: Document, name: &str, unique: bool) -> IndexModel {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_owned())
                        .unique(unique)
                        .build(),
                )
                .build()
        }
        self.posts
            .create_indexes([
                index(
                    doc! {"channel": 1, "post_id": 1},
                    "posts_unique_channel",
                    true,
                ),
                index(doc! {"published_at_ms": 1}, "posts_published_at_ms", false),
            ])
            .await?;
        self.votes
            .create_indexes([
                index(
                    doc! {"user_id": 1, "channel": 1, "post_id": 1},
                    "votes_unique_user_id",
                    true,
                ),
                index(doc! {"ingested_at_ms": 1}, "votes_ingested_at_ms", false),
            ])
            .await?;
        self.deliveries
            .create_indexes([
                index(
                    doc! {"user_id": 1, "channel": 1, "post_id": 1},
                    "deliveries_unique_user_id",
                    true,
                ),
                // Retention removes deliveries by age.
                index(
                    doc! {"delivered_at_ms": 1},
                    "deliveries_delivered_at_ms",
                    false,
                ),
            ])
            .await?;
        self.models
            .create_indexes([index(
                doc! {"status": 1, "version": -1},
                "models_status",
                false,
            )])
            .await?;
        Ok(())
    }
}
