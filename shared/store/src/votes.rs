//! Order-safe, idempotent vote writes.

use crate::{run_update, vote_key, Collections, Store, StoreError, VoteRecord};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Document};
use oleg_messages::Vote;

/// What happened to one vote of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteWrite {
    /// First vote of this person on this post.
    New,
    /// Replaced an older vote of this person on this post.
    Changed,
    /// Changed nothing: a redelivery, a duplicate, or older than the stored vote.
    Unchanged,
    /// The store refused it (the others of the batch landed), with its message.
    Refused(String),
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
        let done = run_update(self.database(), Collections::VOTES, updates).await?;
        // Upserted → new; duplicate key → an equal or newer vote is stored, nothing to do;
        // otherwise the statement matched an older vote and replaced it.
        let mut writes = vec![VoteWrite::Changed; votes.len()];
        for index in done.upserted {
            writes[index] = VoteWrite::New;
        }
        for index in done.duplicates {
            writes[index] = VoteWrite::Unchanged;
        }
        for (index, message) in done.refused {
            writes[index] = VoteWrite::Refused(message);
        }
        Ok(writes)
    }
}

/// Votes read back from the store, as they come.
pub type VoteStream = BoxStream<'static, Result<VoteRecord, StoreError>>;

impl Store {
    /// Every vote ingested after `since_ms`, read in batches of `batch` (the trainer's reads).
    pub async fn votes_ingested_after(
        &self,
        since_ms: i64,
        batch: u32,
    ) -> Result<VoteStream, StoreError> {
        let cursor = self
            .collections()
            .votes
            .find(doc! {"ingested_at_ms": {"$gt": since_ms}})
            .batch_size(batch)
            .await?;
        Ok(cursor.map_err(StoreError::from).boxed())
    }

    /// Up to `size` votes drawn at random from those ingested after `after_ms` and at or before
    /// `until_ms`.
    pub async fn sample_votes_between(
        &self,
        after_ms: i64,
        until_ms: i64,
        size: u64,
        batch: u32,
    ) -> Result<VoteStream, StoreError> {
        let cursor = self
            .collections()
            .votes
            .aggregate([
                doc! {"$match": {"ingested_at_ms": {"$gt": after_ms, "$lte": until_ms}}},
                doc! {"$sample": {"size": i64::try_from(size).unwrap_or(i64::MAX)}},
            ])
            .with_type::<VoteRecord>()
            .batch_size(batch)
            .await?;
        Ok(cursor.map_err(StoreError::from).boxed())
    }

    /// Whether any vote is stored at all.
    pub async fn has_votes(&self) -> Result<bool, StoreError> {
        Ok(self.collections().votes.find_one(doc! {}).await?.is_some())
    }

    /// When the most recently stored vote was written (by the `ingested_at_ms` index).
    pub async fn newest_vote_ingested_ms(&self) -> Result<Option<i64>, StoreError> {
        let newest = self
            .collections()
            .votes
            .find_one(doc! {})
            .sort(doc! {"ingested_at_ms": -1})
            .await?;
        Ok(newest.map(|v| v.ingested_at_ms))
    }

    /// Marks votes (key, revision) as trained on by a published model, unless they changed
    /// since. Only votes near a model's watermark need it: the next incremental cycle reads
    /// that window again and skips what is marked.
    pub async fn mark_votes_trained(&self, votes: &[(String, i64)]) -> Result<(), StoreError> {
        for chunk in votes.chunks(1_000) {
            let updates: Vec<Document> = chunk
                .iter()
                .map(|(key, revision)| {
                    doc! {
                        "q": {"_id": {"$eq": key}, "revision": {"$eq": revision}},
                        "u": {"$set": {"trained_revision": revision}},
                        "upsert": false,
                        "multi": false,
                    }
                })
                .collect();
            run_update(self.database(), Collections::VOTES, updates)
                .await?
                .all_or_error(Collections::VOTES)?;
        }
        Ok(())
    }
}

impl VoteWriteSummary {
    pub fn of(writes: &[VoteWrite]) -> Self {
        let mut summary = Self::default();
        for write in writes {
            match write {
                VoteWrite::New => summary.new += 1,
                VoteWrite::Changed => summary.changed += 1,
                VoteWrite::Unchanged => summary.unchanged += 1,
                VoteWrite::Refused(_) => {}
            }
        }
        summary
    }
}
