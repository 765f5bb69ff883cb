//! Channels the scraper follows (`channels`, `_id` = channel username).
//!
//! An operator pauses a channel by moving its next poll to [`NEVER`] (the scraper only asks for
//! due channels, and a poll's outcome is recorded only while the channel is not paused, so a poll
//! in flight cannot undo a pause) and unfollows it by deleting its record; its posts stay
//! stored, marked `unfollowed_at_ms`, which keeps them from the candidates until it is followed
//! again.

use crate::posts::UNFOLLOWED_AT;
use crate::{run_update, Collections, Store, StoreError};
use futures::TryStreamExt;
use mongodb::bson::doc;
use serde::{Deserialize, Serialize};

/// The next poll of a paused channel.
pub const NEVER: i64 = i64::MAX;

/// Where a followed channel stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelStatus {
    Active,
    /// It does not exist, is private, or its page is another channel's: retried rarely.
    Missing,
}

impl ChannelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelStatus::Active => "active",
            ChannelStatus::Missing => "missing",
        }
    }
}

/// A followed channel and where its scraping stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelRecord {
    #[serde(rename = "_id")]
    pub name: String,
    pub status: ChannelStatus,
    /// The newest post stored; older ones are not fetched again.
    #[serde(default)]
    pub newest_post_id: Option<i64>,
    pub next_poll_ms: i64,
    /// Consecutive failed polls (server errors, timeouts), for the backoff.
    pub failures: i64,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub subscribers: Option<i64>,
    /// Another username of the channel, which its posts carry (stored under `name`).
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub added_at_ms: Option<i64>,
    /// When its page was last fetched.
    #[serde(default)]
    pub polled_at_ms: Option<i64>,
    /// When an operator paused it.
    #[serde(default)]
    pub paused_at_ms: Option<i64>,
}

impl ChannelRecord {
    pub fn paused(&self) -> bool {
        self.next_poll_ms == NEVER
    }

    /// `paused`, or its status: what an operator is shown and the scraper counts.
    pub fn state(&self) -> &'static str {
        if self.paused() {
            "paused"
        } else {
            self.status.as_str()
        }
    }
}

/// Every state [`ChannelRecord::state`] gives.
pub const CHANNEL_STATES: [&str; 3] = ["active", "missing", "paused"];

/// What one poll learned.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelPoll {
    pub status: ChannelStatus,
    pub newest_post_id: Option<i64>,
    pub title: Option<String>,
    pub alias: Option<String>,
    pub subscribers: Option<i64>,
    pub failures: i64,
    pub next_poll_ms: i64,
    /// When the page was fetched.
    pub polled_at_ms: i64,
}

impl Store {
    /// Follows a channel (due at once), its posts candidates again if it was unfollowed;
    /// `false` if it was followed already.
    pub async fn add_channel(&self, name: &str, now_ms: i64) -> Result<bool, StoreError> {
        let update = doc! {
            "q": {"_id": {"$eq": name}},
            "u": {"$setOnInsert": {"status": ChannelStatus::Active.as_str(), "next_poll_ms": now_ms, "failures": 0_i64, "added_at_ms": now_ms}},
            "upsert": true,
            "multi": false,
        };
        let added = !run_update(self.database(), Collections::CHANNELS, vec![update])
            .await?
            .all_or_error(Collections::CHANNELS)?
            .upserted
            .is_empty();
        if added {
            self.collections()
                .posts
                .update_many(
                    doc! {"channel": {"$eq": name}, UNFOLLOWED_AT: {"$exists": true}},
                    doc! {"$unset": {UNFOLLOWED_AT: ""}},
                )
                .await?;
        }
        Ok(added)
    }

    /// Keeps the posts of `name`, a channel no longer followed, from the candidates (marks
    /// them `unfollowed_at_ms`, `at_ms`); returns how many were newly marked.
    pub async fn withdraw_unfollowed_posts(
        &self,
        name: &str,
        at_ms: i64,
    ) -> Result<u64, StoreError> {
        let marked = self
            .collections()
            .posts
            .update_many(
                doc! {"channel": {"$eq": name}, UNFOLLOWED_AT: {"$exists": false}},
                doc! {"$set": {UNFOLLOWED_AT: at_ms}},
            )
            .await?;
        Ok(marked.modified_count)
    }

    /// Channels whose next poll is due, soonest first.
    pub async fn due_channels(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<ChannelRecord>, StoreError> {
        Ok(self
            .database()
            .collection::<ChannelRecord>(Collections::CHANNELS)
            .find(doc! {"next_poll_ms": {"$lte": now_ms.min(NEVER - 1)}})
            .sort(doc! {"next_poll_ms": 1})
            .limit(limit)
            .await?
            .try_collect()
            .await?)
    }

    pub async fn channel(&self, name: &str) -> Result<Option<ChannelRecord>, StoreError> {
        Ok(self
            .database()
            .collection::<ChannelRecord>(Collections::CHANNELS)
            .find_one(doc! {"_id": {"$eq": name}})
            .await?)
    }

    /// Records a poll's outcome, unless the channel was paused or unfollowed meanwhile
    /// (`false`). The newest post id only ever grows.
    pub async fn record_poll(&self, name: &str, poll: &ChannelPoll) -> Result<bool, StoreError> {
        let mut set = doc! {"status": poll.status.as_str(), "failures": poll.failures, "next_poll_ms": poll.next_poll_ms, "polled_at_ms": poll.polled_at_ms};
        if let Some(title) = &poll.title {
            set.insert("title", title);
        }
        if let Some(alias) = &poll.alias {
            set.insert("alias", alias);
        }
        if let Some(subscribers) = poll.subscribers {
            set.insert("subscribers", subscribers);
        }
        let mut update = doc! {"$set": set};
        if let Some(newest) = poll.newest_post_id {
            update.insert("$max", doc! {"newest_post_id": newest});
        }
        let recorded = self
            .database()
            .collection::<mongodb::bson::Document>(Collections::CHANNELS)
            .update_one(
                doc! {"_id": {"$eq": name}, "next_poll_ms": {"$lt": NEVER}},
                update,
            )
            .await?;
        Ok(recorded.matched_count == 1)
    }

    /// Makes missing channels (`name`, or every one) due at `now_ms` instead of at their rare
    /// retry, paused ones excepted; returns how many. After a fix for pages the scraper could
    /// not read, which made channels look missing.
    pub async fn retry_missing_channels(
        &self,
        name: Option<&str>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut filter = doc! {
            "status": {"$eq": ChannelStatus::Missing.as_str()},
            "next_poll_ms": {"$lt": NEVER},
        };
        if let Some(name) = name {
            filter.insert("_id", doc! {"$eq": name});
        }
        let updated = self
            .collections()
            .channels
            .update_many(filter, doc! {"$set": {"next_poll_ms": now_ms}})
            .await?;
        Ok(updated.matched_count)
    }

    /// Every followed channel, by name.
    pub async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        Ok(self
            .database()
            .collection::<ChannelRecord>(Collections::CHANNELS)
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await?
            .try_collect()
            .await?)
    }

    /// Stops following a channel: its posts stay stored (their votes still train) but are no
    /// longer candidates; `false` if it was not followed.
    pub async fn remove_channel(&self, name: &str, now_ms: i64) -> Result<bool, StoreError> {
        let deleted = self
            .collections()
            .channels
            .delete_one(doc! {"_id": {"$eq": name}})
            .await?;
        if deleted.deleted_count == 0 {
            return Ok(false);
        }
        self.withdraw_unfollowed_posts(name, now_ms).await?;
        Ok(true)
    }

    /// Pauses polling (`paused`) or resumes it, due at `now_ms`; `false` if not followed.
    pub async fn set_channel_paused(
        &self,
        name: &str,
        paused: bool,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let update = if paused {
            doc! {"$set": {"next_poll_ms": NEVER, "paused_at_ms": now_ms}}
        } else {
            doc! {"$set": {"next_poll_ms": now_ms}, "$unset": {"paused_at_ms": ""}}
        };
        let updated = self
            .collections()
            .channels
            .update_one(doc! {"_id": {"$eq": name}}, update)
            .await?;
        Ok(updated.matched_count == 1)
    }
}
