//! The bot's own record of the people it talks to (`bot_chats`, `_id` = user id): their chat and
//! their `status`: `active`, `paused` (`/stop`: no digests) or `blocked` (they blocked the bot or
//! deleted their account). Digest slots are claimed here per person, so a restart or a second
//! replica never sends one twice. (Strings and numbers only: on the stand-in an updated boolean
//! came back as an integer, and a claim keyed by an ISO date-time string never matched.)

use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Collection;
use serde::{Deserialize, Serialize};

pub const COLLECTION: &str = oleg_store::Collections::BOT_CHATS;

#[derive(Clone)]
pub struct Chats {
    collection: Collection<Document>,
}

/// Whether the bot may write to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatStatus {
    /// Gets posts and digests.
    Active,
    /// Asked for no digests (`/stop`); still answered.
    Paused,
    /// Blocked the bot or deleted their account: nothing is sent.
    Blocked,
}

impl ChatStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatStatus::Active => "active",
            ChatStatus::Paused => "paused",
            ChatStatus::Blocked => "blocked",
        }
    }
}

/// A person's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRecord {
    #[serde(rename = "_id")]
    pub user_id: i64,
    pub chat_id: i64,
    pub status: ChatStatus,
    pub started_at_ms: i64,
    /// The digest slot (Unix seconds) last claimed for the person (0: none, or one taken back).
    pub last_digest_s: i64,
}

/// A person a digest may go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient {
    pub user_id: i64,
    pub chat_id: i64,
}

impl Chats {
    pub fn new(database: &mongodb::Database) -> Self {
        Self {
            collection: database.collection(COLLECTION),
        }
    }

    /// `/start`: the person is active and receives digests (again).
    pub async fn started(
        &self,
        user_id: i64,
        chat_id: i64,
        at_ms: i64,
    ) -> mongodb::error::Result<()> {
        self.collection
            .update_one(
                doc! {"_id": {"$eq": user_id}},
                doc! {
                    "$set": {"chat_id": chat_id, "status": ChatStatus::Active.as_str()},
                    "$setOnInsert": {"_id": user_id, "started_at_ms": at_ms, "last_digest_s": 0_i64},
                },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    /// `/stop`: no more digests until `/start`.
    pub async fn pause(&self, user_id: i64) -> mongodb::error::Result<()> {
        self.set_status(user_id, ChatStatus::Paused).await
    }

    /// The person blocked the bot or deleted their account: stop sending.
    pub async fn block(&self, user_id: i64) -> mongodb::error::Result<()> {
        self.set_status(user_id, ChatStatus::Blocked).await
    }

    async fn set_status(&self, user_id: i64, status: ChatStatus) -> mongodb::error::Result<()> {
        self.collection
            .update_one(
                doc! {"_id": {"$eq": user_id}},
                doc! {"$set": {"status": status.as_str()}},
            )
            .await?;
        Ok(())
    }

    /// Everyone active with digests on who had started by `slot_s` and has not had the digest
    /// due then (one caught up on later is not sent to people who came after its time).
    pub async fn digest_recipients(&self, slot_s: i64) -> mongodb::error::Result<Vec<Recipient>> {
        let records: Vec<ChatRecord> = self
            .collection
            .clone_with_type::<ChatRecord>()
            .find(doc! {
                "status": {"$eq": ChatStatus::Active.as_str()},
                "started_at_ms": {"$lte": slot_s.saturating_mul(1000)},
                "last_digest_s": {"$ne": slot_s},
            })
            .await?
            .try_collect()
            .await?;
        Ok(records
            .iter()
            .map(|r| Recipient {
                user_id: r.user_id,
                chat_id: r.chat_id,
            })
            .collect())
    }

    /// Takes back the person's claim of the digest due at `slot_s`: it was not sent.
    pub async fn release_digest(&self, user_id: i64, slot_s: i64) -> mongodb::error::Result<()> {
        self.collection
            .update_one(
                doc! {"_id": {"$eq": user_id}, "last_digest_s": {"$eq": slot_s}},
                doc! {"$set": {"last_digest_s": 0_i64}},
            )
            .await?;
        Ok(())
    }

    /// Claims the digest due at `slot_s` (Unix seconds) for the person; `false` if it was
    /// claimed before.
    pub async fn claim_digest(&self, user_id: i64, slot_s: i64) -> mongodb::error::Result<bool> {
        let claimed = self
            .collection
            .update_one(
                doc! {"_id": {"$eq": user_id}, "last_digest_s": {"$ne": slot_s}},
                doc! {"$set": {"last_digest_s": slot_s}},
            )
            .await?;
        Ok(claimed.modified_count == 1)
    }
}
