//! What a person has seen (voted on or been sent) and liked, and the record that a post was sent.

use crate::leases::is_duplicate_key;
use crate::{vote_key, Collections, DeliveryRecord, PostKey, Store, StoreError};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use oleg_messages::{PostRef, Reaction, UserId};
use std::collections::{HashMap, HashSet};

/// A person's past as the ranker uses it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersonHistory {
    /// Posts voted on or sent: never offered again.
    pub seen: HashSet<PostKey>,
    /// Likes and votes per channel.
    pub channel_votes: HashMap<String, (u32, u32)>,
    /// Each vote's reaction (liked or not) and when it was cast, per post: a later vote on the
    /// same post replaces it in the tallies, an older one changes nothing (as in the store).
    votes: HashMap<PostKey, (bool, i64)>,
}

/// What a vote changed in a person's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteChange {
    /// Their first vote on the post.
    New,
    /// It replaced their older vote on the post, a like or not.
    Replaced { was_liked: bool },
    /// Nothing: they had voted on the post since (or it is this very vote, again).
    Stale,
}

impl PersonHistory {
    /// Counts a vote, or replaces the person's older vote on the same post.
    pub fn record_vote(&mut self, post: PostKey, liked: bool, voted_at_ms: i64) -> VoteChange {
        let tally = self
            .channel_votes
            .entry(post.channel().to_owned())
            .or_default();
        let change = match self.votes.get(&post) {
            Some(&(_, at)) if at >= voted_at_ms => return VoteChange::Stale,
            Some(&(was_liked, _)) => {
                tally.0 -= u32::from(was_liked);
                VoteChange::Replaced { was_liked }
            }
            None => {
                tally.1 += 1;
                VoteChange::New
            }
        };
        tally.0 += u32::from(liked);
        self.votes.insert(post.clone(), (liked, voted_at_ms));
        self.seen.insert(post);
        change
    }

    /// Each post voted on, with whether the vote was a like and when it was cast.
    pub fn votes(&self) -> impl Iterator<Item = (&PostKey, bool, i64)> {
        self.votes
            .iter()
            .map(|(post, &(liked, at))| (post, liked, at))
    }

    /// Notes a post sent to the person.
    pub fn record_sent(&mut self, post: PostKey) {
        self.seen.insert(post);
    }

    /// Forgets a post sent but never shown (its reply reached nobody), unless they voted on it.
    pub fn release(&mut self, post: &PostKey) {
        if !self.votes.contains_key(post) {
            self.seen.remove(post);
        }
    }

    /// How many posts it holds: what it weighs in a cache.
    pub fn posts(&self) -> usize {
        self.seen.len()
    }
}

/// A post of the candidate window, with what a frontend shows of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentPost {
    pub channel: String,
    pub post_id: i64,
    pub published_at_ms: i64,
    pub content: oleg_features::PostContent,
}

impl Store {
    /// What the ranker needs of a person's past: the posts they voted on or were sent since
    /// `since_ms` (a post published in the candidate window was voted on and sent after its
    /// publication), and their likes and votes per channel among those. Both collections are
    /// keyed by [`vote_key`] (`user:channel/post`), so only `_id`s (and the votes' reactions and
    /// times) are read, both at once.
    pub async fn person_history(
        &self,
        user: UserId,
        since_ms: i64,
    ) -> Result<PersonHistory, StoreError> {
        let prefix = format!("{user}:");
        let read = |collection: &'static str, time: &'static str, projection: Document| async move {
            let documents: Vec<Document> = self
                .database()
                .collection::<Document>(collection)
                .find(doc! {"user_id": {"$eq": user.get()}, time: {"$gte": since_ms}})
                .projection(projection)
                .await?
                .try_collect()
                .await?;
            Ok::<_, StoreError>(documents)
        };
        let (votes, sent) = futures::try_join!(
            read(
                Collections::VOTES,
                "voted_at_ms",
                doc! {"_id": 1, "reaction": 1, "voted_at_ms": 1}
            ),
            read(Collections::DELIVERIES, "delivered_at_ms", doc! {"_id": 1}),
        )?;
        let key = |d: &Document| {
            d.get_str("_id")
                .ok()?
                .strip_prefix(prefix.as_str())
                .map(|key| PostKey::stored(key.to_owned()))
        };
        let mut history = PersonHistory::default();
        for vote in &votes {
            let Some(post) = key(vote) else { continue };
            let liked = vote.get_str("reaction") == Ok(Reaction::Like.as_str());
            let at = crate::as_i64(vote.get("voted_at_ms")).unwrap_or(0);
            history.record_vote(post, liked, at);
        }
        for post in sent.iter().filter_map(key) {
            history.record_sent(post);
        }
        Ok(history)
    }

    /// Records that `post` was sent to `user` by request `request_id`; `false` if it already was
    /// (by this or another replica), in which case it must not be sent.
    pub async fn record_delivery(
        &self,
        user: UserId,
        post: &PostRef,
        at_ms: i64,
        request_id: &str,
    ) -> Result<bool, StoreError> {
        let document = doc! {
            "_id": vote_key(user, post),
            "user_id": user.get(),
            "channel": post.channel.as_str(),
            "post_id": post.post_id.get(),
            "delivered_at_ms": at_ms,
            "request_id": request_id,
        };
        match self
            .database()
            .collection::<Document>(Collections::DELIVERIES)
            .insert_one(document)
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Undoes the deliveries `request_id` recorded for these posts (its reply never reached the
    /// person), so they can be sent again. A delivery recorded by another request stays.
    pub async fn release_deliveries(
        &self,
        user: UserId,
        posts: &[PostRef],
        request_id: &str,
    ) -> Result<u64, StoreError> {
        let deliveries = self
            .database()
            .collection::<Document>(Collections::DELIVERIES);
        let mut released = 0;
        for post in posts {
            released += deliveries
                .delete_one(
                    doc! {"_id": {"$eq": vote_key(user, post)}, "request_id": {"$eq": request_id}},
                )
                .await?
                .deleted_count;
        }
        Ok(released)
    }

    /// The posts request `request_id` recorded as sent to `user`, in the order of their
    /// delivery times (a request records its posts a millisecond apart, in the reply's order).
    pub async fn request_deliveries(
        &self,
        user: UserId,
        request_id: &str,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        Ok(self
            .collections()
            .deliveries
            .find(doc! {"user_id": {"$eq": user.get()}, "request_id": {"$eq": request_id}})
            .sort(doc! {"delivered_at_ms": 1})
            .await?
            .try_collect()
            .await?)
    }

    /// Posts published at or after `since_ms`, save those found deleted from their channel and
    /// those of channels no longer followed.
    pub async fn recent_posts(&self, since_ms: i64) -> Result<Vec<RecentPost>, StoreError> {
        let mut cursor = self
            .database()
            .collection::<Document>(Collections::POSTS)
            .find(doc! {
                "published_at_ms": {"$gte": since_ms},
                crate::posts::DELETED_AT: {"$exists": false},
                crate::posts::UNFOLLOWED_AT: {"$exists": false},
            })
            .projection({
                let mut fields = doc! {"channel": 1, "post_id": 1, "published_at_ms": 1};
                fields.extend(crate::posts::CONTENT_FIELDS.clone());
                fields
            })
            .await?;
        let mut posts = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            if let (Ok(channel), Some(post_id), Some(published_at_ms)) = (
                d.get_str("channel"),
                crate::as_i64(d.get("post_id")),
                crate::as_i64(d.get("published_at_ms")),
            ) {
                posts.push(RecentPost {
                    channel: channel.to_owned(),
                    post_id,
                    published_at_ms,
                    content: crate::posts::content_of(&d),
                });
            }
        }
        Ok(posts)
    }

    /// Like and vote counts per post key, over votes ingested at or after `since_ms`.
    pub async fn vote_counts(
        &self,
        since_ms: i64,
    ) -> Result<std::collections::HashMap<PostKey, (u32, u32)>, StoreError> {
        let mut cursor = self
            .database()
            .collection::<Document>(Collections::VOTES)
            .find(doc! {"ingested_at_ms": {"$gte": since_ms}})
            .projection(doc! {"channel": 1, "post_id": 1, "reaction": 1})
            .await?;
        let mut counts = std::collections::HashMap::new();
        while let Some(d) = cursor.try_next().await? {
            if let (Ok(channel), Some(id)) = (d.get_str("channel"), crate::as_i64(d.get("post_id")))
            {
                let entry: &mut (u32, u32) = counts.entry(PostKey::new(channel, id)).or_default();
                entry.1 += 1;
                if d.get_str("reaction") == Ok("like") {
                    entry.0 += 1;
                }
            }
        }
        Ok(counts)
    }
}
