//! The updates taken from Telegram (`bot_updates`, `_id` = update id).
//!
//! An update is kept here before Telegram is told it arrived (the `getUpdates` offset, or the
//! webhook's 200). So the offset can move past updates still in flight — one slow chat never
//! holds up the intake of the others — while a bot that stops or dies with updates in flight
//! leaves them here, and the next one handles them first. Only one bot may run at a time
//! (Telegram allows one poller, and the next one takes every leftover).
//!
//! A handled update leaves its id behind (`done_at_ms`, its body dropped) for the day Telegram
//! may send it again — a webhook's 200 lost on the way, a poll's offset never confirmed — so
//! that it is taken once however often it comes; the ids are forgotten after that day.
//!
//! Long polling also records how far it has taken updates (`bot_state`, `_id` `polling`) before
//! it handles them: Telegram resends whatever its offset did not confirm (a crash, or a failed
//! confirmation at a stop), and the next bot starts past what was taken instead of handling it
//! again. Only within a day of the last taking: Telegram keeps an update for a day at most, and
//! after a week without any it numbers the next ones afresh, maybe below an old offset.

use mongodb::bson::{doc, Document};
use mongodb::error::{ErrorKind, InsertManyError};
use mongodb::Collection;
use oleg_store::DUPLICATE_KEY;
use std::collections::HashSet;
use std::time::Duration;
use teloxide_core::types::Update;

pub const COLLECTION: &str = oleg_store::Collections::BOT_UPDATES;

/// The `bot_state` document of long polling.
const POLLING: &str = "polling";

/// How long Telegram keeps an update nobody confirmed.
const TELEGRAM_KEEPS_MS: i64 = 24 * 3600 * 1000;

#[derive(Clone)]
pub struct Inbox {
    collection: Collection<Document>,
    state: Collection<Document>,
}

impl Inbox {
    pub fn new(database: &mongodb::Database) -> Self {
        Self {
            collection: database.collection(COLLECTION),
            state: database.collection(oleg_store::Collections::BOT_STATE),
        }
    }

    /// Records, at `now_ms`, that updates below `offset` were taken (kept here, or ignored); the
    /// offset never goes back.
    pub async fn taken_below(&self, offset: i32, now_ms: i64) -> mongodb::error::Result<()> {
        self.state
            .update_one(
                doc! {"_id": {"$eq": POLLING}},
                doc! {"$max": {"offset": i64::from(offset)}, "$set": {"taken_at_ms": now_ms}},
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    /// The offset long polling resumes from at `now_ms`: past every update taken before, those
    /// recorded and those still kept (`leftovers`), if updates were taken within the day
    /// Telegram keeps them; else from the start, as Telegram has nothing older to resend.
    pub async fn resume_offset(
        &self,
        leftovers: &[Update],
        now_ms: i64,
    ) -> mongodb::error::Result<i32> {
        let Some(state) = self.state.find_one(doc! {"_id": {"$eq": POLLING}}).await? else {
            return Ok(0);
        };
        let taken_at = oleg_store::as_i64(state.get("taken_at_ms")).unwrap_or(i64::MIN);
        if now_ms.saturating_sub(taken_at) > TELEGRAM_KEEPS_MS {
            return Ok(0);
        }
        let recorded = oleg_store::as_i64(state.get("offset")).unwrap_or(0);
        let kept = leftovers.iter().map(|u| i64::from(u.id.0) + 1).max();
        Ok(i32::try_from(recorded.max(kept.unwrap_or(0))).unwrap_or(i32::MAX))
    }

    /// Keeps `updates`; returns those not taken before (an update Telegram sends again, kept or
    /// handled by then, is taken only once).
    pub async fn keep(&self, updates: Vec<Update>) -> mongodb::error::Result<Vec<Update>> {
        if updates.is_empty() {
            return Ok(updates);
        }
        let documents = updates.iter().map(|update| {
            doc! {
                "_id": i64::from(update.id.0),
                "update": serde_json::to_string(update).expect("an update serializes"),
            }
        });
        let kept_before: HashSet<usize> =
            match self.collection.insert_many(documents).ordered(false).await {
                Ok(_) => HashSet::new(),
                Err(error) => match error.kind.as_ref() {
                    ErrorKind::InsertMany(InsertManyError {
                        write_errors: Some(errors),
                        write_concern_error: None,
                        ..
                    }) if errors.iter().all(|e| e.code == DUPLICATE_KEY) => {
                        errors.iter().map(|e| e.index).collect()
                    }
                    _ => return Err(error),
                },
            };
        Ok(updates
            .into_iter()
            .enumerate()
            .filter(|(index, _)| !kept_before.contains(index))
            .map(|(_, update)| update)
            .collect())
    }

    /// The update was handled (or refused) at `now_ms`: its body goes, its id stays.
    pub async fn done(&self, id: u32, now_ms: i64) -> mongodb::error::Result<()> {
        self.collection
            .update_one(
                doc! {"_id": {"$eq": i64::from(id)}},
                doc! {"$set": {"done_at_ms": now_ms}, "$unset": {"update": ""}},
            )
            .await?;
        Ok(())
    }

    /// Forgets the updates handled before `before_ms`; returns how many.
    pub async fn forget_handled(&self, before_ms: i64) -> mongodb::error::Result<u64> {
        Ok(self
            .collection
            .delete_many(doc! {"done_at_ms": {"$lt": before_ms}})
            .await?
            .deleted_count)
    }

    /// Every hour, forgets the updates handled longer ago than Telegram keeps them; runs until
    /// dropped. A failure is logged and tried at the next hour.
    pub async fn forget_handled_hourly(&self) -> std::convert::Infallible {
        let mut hourly = tokio::time::interval(Duration::from_secs(3600));
        loop {
            hourly.tick().await;
            let before_ms = chrono::Utc::now().timestamp_millis() - TELEGRAM_KEEPS_MS;
            match self.forget_handled(before_ms).await {
                Ok(forgotten) => tracing::debug!(forgotten, "forgot the updates handled a day ago"),
                Err(error) => {
                    tracing::warn!(%error, "could not forget the updates handled a day ago")
                }
            }
        }
    }

    /// Updates an earlier bot took and did not finish, oldest first. One that no longer parses
    /// (an older teloxide's shape) is logged and dropped.
    pub async fn leftovers(&self) -> mongodb::error::Result<Vec<Update>> {
        use futures::TryStreamExt;
        let documents: Vec<Document> = self
            .collection
            .find(doc! {"done_at_ms": {"$exists": false}})
            .await?
            .try_collect()
            .await?;
        let mut updates: Vec<Update> = Vec::with_capacity(documents.len());
        for document in documents {
            let parsed = document
                .get_str("update")
                .map_err(|e| e.to_string())
                .and_then(|json| serde_json::from_str(json).map_err(|e| e.to_string()));
            match parsed {
                Ok(update) => updates.push(update),
                Err(problem) => {
                    tracing::warn!(%problem, ?document, "dropping a kept update that does not parse");
                    if let Some(id) = oleg_store::as_i64(document.get("_id")) {
                        self.collection
                            .delete_one(doc! {"_id": {"$eq": id}})
                            .await?;
                    }
                }
            }
        }
        updates.sort_by_key(|u| u.id.0);
        Ok(updates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oleg_testkit::{mongo_settings, TestServices};

    fn update(id: u32) -> Update {
        serde_json::from_value(serde_json::json!({
            "update_id": id,
            "message": {
                "message_id": 1, "date": 0, "text": "/start",
                "chat": {"id": 7, "type": "private", "first_name": "A"},
                "from": {"id": 7, "is_bot": false, "first_name": "A"},
            },
        }))
        .expect("an update")
    }

    async fn inbox(test: &str) -> (TestServices, Inbox) {
        let services = TestServices::start(test, mongo_settings(test)).await;
        let inbox = Inbox::new(services.store.database());
        (services, inbox)
    }

    /// Polling resumes past what was taken within Telegram's day, and from the start after it:
    /// Telegram may number updates afresh, below an old offset, which would hide them all.
    #[tokio::test]
    async fn polling_resumes_past_what_was_taken_within_the_day_telegram_keeps_updates() {
        let (services, inbox) = inbox("bot-inbox-resume-offset").await;
        let now = 1_800_000_000_000;
        assert_eq!(inbox.resume_offset(&[], now).await.unwrap(), 0);

        inbox.taken_below(50, now).await.unwrap();
        inbox.taken_below(40, now).await.unwrap();
        assert_eq!(inbox.resume_offset(&[], now + 1).await.unwrap(), 50);
        // An update kept and never recorded as taken (the record's write failed).
        assert_eq!(inbox.resume_offset(&[update(60)], now).await.unwrap(), 61);

        let a_day_later = now + TELEGRAM_KEEPS_MS + 1;
        assert_eq!(
            inbox
                .resume_offset(&[update(60)], a_day_later)
                .await
                .unwrap(),
            0
        );
        services.finish().await;
    }

    /// A handled update's id stays: sent again, it is not taken again, and it is no leftover;
    /// forgotten after the day, it would be taken again.
    #[tokio::test]
    async fn a_handled_update_is_taken_once_however_often_it_comes_until_forgotten() {
        let (services, inbox) = inbox("bot-inbox-handled-once").await;
        let now = 1_800_000_000_000;
        assert_eq!(
            inbox.keep(vec![update(1), update(2)]).await.unwrap().len(),
            2
        );
        inbox.done(1, now).await.unwrap();
        let kept: Vec<u32> = inbox
            .leftovers()
            .await
            .unwrap()
            .iter()
            .map(|u| u.id.0)
            .collect();
        assert_eq!(kept, [2]);
        assert!(inbox
            .keep(vec![update(1), update(2)])
            .await
            .unwrap()
            .is_empty());

        assert_eq!(inbox.forget_handled(now).await.unwrap(), 0);
        assert_eq!(inbox.forget_handled(now + 1).await.unwrap(), 1);
        assert_eq!(inbox.keep(vec![update(1)]).await.unwrap().len(), 1);
        services.finish().await;
    }
}
