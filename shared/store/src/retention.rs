//! Retention: what may go once it can no longer matter. Deliveries only stop repeats while their
//! post is a candidate; posts nobody voted on only matter while they are candidates; old model
//! versions' files are only needed for a rollback. Times are Int64 milliseconds (the stand-in
//! keeps BSON dates as strings), so TTL indexes cannot do this; one run does, from a schedule.

use crate::{Collections, ModelRecord, PostKey, Store, StoreError};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use oleg_messages::{ModelStatus, ModelVersion};
use std::collections::HashSet;

/// What a run removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Deliveries made before this.
    pub deliveries_before_ms: i64,
    /// Posts published before this that nobody voted on.
    pub unvoted_posts_before_ms: i64,
    /// Published versions whose files are kept, newest first; the live one and the newest
    /// published before it (the rollback target) are kept whatever this says.
    pub keep_models: usize,
}

/// What a run removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub deliveries: u64,
    pub posts: u64,
    /// Versions whose files were removed.
    pub model_files: Vec<ModelVersion>,
}

impl Store {
    pub async fn apply_retention(
        &self,
        policy: &RetentionPolicy,
        dry_run: bool,
    ) -> Result<RetentionReport, StoreError> {
        Ok(RetentionReport {
            deliveries: self
                .expire_deliveries(policy.deliveries_before_ms, dry_run)
                .await?,
            posts: self
                .expire_unvoted_posts(policy.unvoted_posts_before_ms, dry_run)
                .await?,
            model_files: self.expire_model_files(policy.keep_models, dry_run).await?,
        })
    }

    async fn expire_deliveries(&self, before_ms: i64, dry_run: bool) -> Result<u64, StoreError> {
        let old = doc! {"delivered_at_ms": {"$lt": before_ms}};
        let deliveries = &self.collections().deliveries;
        Ok(if dry_run {
            deliveries.count_documents(old).await?
        } else {
            deliveries.delete_many(old).await?.deleted_count
        })
    }

    /// Old posts are found by the `published_at_ms` index; whether anyone voted on them by one
    /// pass over the votes' post fields.
    async fn expire_unvoted_posts(&self, before_ms: i64, dry_run: bool) -> Result<u64, StoreError> {
        let posts = self.database().collection::<Document>(Collections::POSTS);
        let mut old: HashSet<PostKey> = posts
            .find(doc! {"published_at_ms": {"$lt": before_ms}})
            .projection(doc! {"_id": 1})
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .iter()
            .filter_map(|d| d.get_str("_id").ok())
            .map(|key| PostKey::stored(key.to_owned()))
            .collect();
        if old.is_empty() {
            return Ok(0);
        }
        let mut votes = self
            .database()
            .collection::<Document>(Collections::VOTES)
            .find(doc! {})
            .projection(doc! {"channel": 1, "post_id": 1})
            .await?;
        while let Some(vote) = votes.try_next().await? {
            if let (Ok(channel), Some(id)) =
                (vote.get_str("channel"), crate::as_i64(vote.get("post_id")))
            {
                old.remove(&PostKey::new(channel, id));
            }
        }
        if dry_run {
            return Ok(old.len() as u64);
        }
        let keys: Vec<&str> = old.iter().map(PostKey::as_str).collect();
        let mut deleted = 0;
        for chunk in keys.chunks(1_000) {
            deleted += posts
                .delete_many(doc! {"_id": {"$in": chunk}})
                .await?
                .deleted_count;
        }
        Ok(deleted)
    }

    /// Removes the chunks of versions past the newest `keep` published ones, except the live
    /// version and the rollback target; their records stay, without `files`.
    async fn expire_model_files(
        &self,
        keep: usize,
        dry_run: bool,
    ) -> Result<Vec<ModelVersion>, StoreError> {
        let models: Vec<ModelRecord> = self.models(i64::MAX).await?;
        let live = self.live_version().await?;
        let published = |m: &&ModelRecord| m.status == ModelStatus::Published;
        let mut kept: HashSet<ModelVersion> = models
            .iter()
            .filter(published)
            .take(keep)
            .map(|m| m.version)
            .collect();
        if let Some(live) = live {
            kept.insert(live);
            if let Some(target) = models.iter().filter(published).find(|m| m.version < live) {
                kept.insert(target.version);
            }
        }
        let expired: Vec<ModelVersion> = models
            .iter()
            .filter(|m| m.files.is_some() && !kept.contains(&m.version))
            .map(|m| m.version)
            .collect();
        if dry_run {
            return Ok(expired);
        }
        let chunks = self
            .database()
            .collection::<Document>(crate::models::CHUNKS);
        for version in &expired {
            // The record first: a version without `files` is never loaded, so no reader meets
            // a half-deleted file.
            self.collections()
                .models
                .update_one(
                    doc! {"_id": {"$eq": version.as_i64()}},
                    doc! {"$unset": {"files": ""}, "$set": {"files_removed_at_ms": crate::models::chrono_now_ms()}},
                )
                .await?;
            chunks
                .delete_many(doc! {"version": {"$eq": version.as_i64()}})
                .await?;
        }
        Ok(expired)
    }
}
