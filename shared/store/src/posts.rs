//! Posts: upserted by the scraper (edits update text and views, deletions are marked), looked
//! up by ingest.

use crate::{run_update, Collections, PostKey, Store, StoreError};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use oleg_features::PostContent;
use oleg_messages::{MediaKind, PostRef, ScrapedPost};
use std::collections::{HashMap, HashSet};

impl Store {
    /// Stores posts idempotently: new ones are inserted, known ones get the current text, views
    /// and media (a post may be edited) and lose any mark of deletion (a post shown is not
    /// deleted). Returns the posts that were new.
    pub async fn upsert_posts(
        &self,
        posts: &[ScrapedPost],
        seen_at_ms: i64,
    ) -> Result<Vec<PostRef>, StoreError> {
        if posts.is_empty() {
            return Ok(Vec::new());
        }
        let updates: Vec<Document> = posts
            .iter()
            .map(|post| {
                let reference = PostRef {
                    channel: post.channel.clone(),
                    post_id: post.post_id,
                };
                let media: Vec<Document> = post
                    .media
                    .iter()
                    .map(|m| {
                        let kind = mongodb::bson::to_bson(&m.kind).unwrap_or(Bson::Null);
                        doc! {"kind": kind, "url": m.url.clone()}
                    })
                    .collect();
                doc! {
                    "q": {"_id": {"$eq": PostKey::of(&reference).as_str()}},
                    "u": {
                        "$set": {
                            "channel": post.channel.as_str(),
                            "post_id": post.post_id.get(),
                            "published_at_ms": post.published_at.timestamp_millis(),
                            "text": &post.text,
                            "links": &post.links,
                            "views": post.views.map(|v| v as i64),
                            "page_median_views": post.page_median_views.map(|v| v as i64),
                            "media": media,
                            "forwarded_from": post.forwarded_from.clone(),
                            "reply_to": post.reply_to.map(|r| r.get()),
                            "scraped_at_ms": post.scraped_at.timestamp_millis(),
                        },
                        "$setOnInsert": {"first_seen_ms": seen_at_ms},
                        "$unset": {DELETED_AT: ""},
                    },
                    "upsert": true,
                    "multi": false,
                }
            })
            .collect();
        let done = run_update(self.database(), Collections::POSTS, updates)
            .await?
            .all_or_error(Collections::POSTS)?;
        let new = done
            .upserted
            .into_iter()
            .map(|index| PostRef {
                channel: posts[index].channel.clone(),
                post_id: posts[index].post_id,
            })
            .collect();
        Ok(new)
    }

    /// Marks as deleted, at `at_ms`, the stored posts of `channel` numbered from `shown.0` to
    /// `shown.1` that are not among `present`: a page that showed that stretch of the channel
    /// whole no longer shows them, and Telegram's preview leaves out only deleted posts. A
    /// marked post stays (its votes still train) but is no candidate ([`Store::recent_posts`]).
    /// Returns how many were newly marked.
    pub async fn mark_deleted_posts(
        &self,
        channel: &str,
        shown: (i64, i64),
        present: &[i64],
        at_ms: i64,
    ) -> Result<u64, StoreError> {
        let marked = self
            .collections()
            .posts
            .update_many(
                doc! {
                    "channel": {"$eq": channel},
                    "post_id": {"$gte": shown.0, "$lte": shown.1, "$nin": present},
                    DELETED_AT: {"$exists": false},
                },
                doc! {"$set": {DELETED_AT: at_ms}},
            )
            .await?;
        Ok(marked.modified_count)
    }

    /// Which of `keys` are stored.
    pub async fn known_post_keys(&self, keys: &[PostKey]) -> Result<HashSet<PostKey>, StoreError> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<&str> = keys.iter().map(PostKey::as_str).collect();
        let found: Vec<Document> = self
            .database()
            .collection::<Document>(Collections::POSTS)
            .find(doc! {"_id": {"$in": ids}})
            .projection(doc! {"_id": 1})
            .await?
            .try_collect()
            .await?;
        Ok(found
            .iter()
            .filter_map(|d| d.get_str("_id").ok())
            .map(|key| PostKey::stored(key.to_owned()))
            .collect())
    }

    /// The content of each of `keys` that is stored, read in chunks.
    pub async fn post_contents(
        &self,
        keys: &[PostKey],
    ) -> Result<HashMap<PostKey, PostContent>, StoreError> {
        const CHUNK: usize = 1000;
        let mut contents = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(CHUNK) {
            let ids: Vec<&str> = chunk.iter().map(PostKey::as_str).collect();
            let mut cursor = self
                .database()
                .collection::<Document>(Collections::POSTS)
                .find(doc! {"_id": {"$in": ids}})
                .projection(CONTENT_FIELDS.clone())
                .await?;
            while let Some(document) = cursor.try_next().await? {
                if let Ok(key) = document.get_str("_id") {
                    contents.insert(PostKey::stored(key.to_owned()), content_of(&document));
                }
            }
        }
        Ok(contents)
    }

    /// How many posts are stored per channel.
    pub async fn posts_per_channel(&self) -> Result<HashMap<String, u64>, StoreError> {
        let groups: Vec<Document> = self
            .database()
            .collection::<Document>(Collections::POSTS)
            .aggregate([doc! {"$group": {"_id": "$channel", "posts": {"$sum": 1}}}])
            .await?
            .try_collect()
            .await?;
        Ok(groups
            .iter()
            .filter_map(|g| {
                let channel = g.get_str("_id").ok()?.to_owned();
                Some((channel, crate::as_i64(g.get("posts"))?.max(0) as u64))
            })
            .collect())
    }
}

/// When a post was found deleted from its channel; absent while it is shown.
pub(crate) const DELETED_AT: &str = "deleted_at_ms";

/// When an operator unfollowed the post's channel; absent while it is followed.
pub(crate) const UNFOLLOWED_AT: &str = "unfollowed_at_ms";

/// The fields of a stored post that [`content_of`] reads.
pub(crate) static CONTENT_FIELDS: std::sync::LazyLock<Document> = std::sync::LazyLock::new(|| {
    doc! {
        "text": 1, "links": 1, "media.kind": 1, "forwarded_from": 1,
        "views": 1, "page_median_views": 1,
    }
});

/// A stored post's content (a document of the posts collection); a field missing or of another
/// type reads as absent.
pub fn content_of(document: &Document) -> PostContent {
    let strings = |key: &str| -> Vec<String> {
        document
            .get_array(key)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let counter = |key: &str| crate::as_i64(document.get(key)).and_then(|v| u64::try_from(v).ok());
    let media = document
        .get_array("media")
        .map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    let kind = item.as_document()?.get("kind")?.clone();
                    mongodb::bson::from_bson::<MediaKind>(kind).ok()
                })
                .collect()
        })
        .unwrap_or_default();
    PostContent {
        text: document.get_str("text").unwrap_or_default().to_owned(),
        links: strings("links"),
        media,
        forwarded_from: document.get_str("forwarded_from").ok().map(str::to_owned),
        views: counter("views"),
        page_median_views: counter("page_median_views"),
    }
}
