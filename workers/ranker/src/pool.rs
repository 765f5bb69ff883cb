//! The candidate posts (published in the window) and the popularity figures of the cold-start
//! ranking: a like rate smoothed toward its channel's, which is smoothed toward the global one,
//! so a new post starts at its channel's rate instead of at zero.

use oleg_features::{PostContent, PostFeatures};
use oleg_store::{PostKey, RecentPost};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct CandidatePost {
    pub channel: String,
    pub post_id: i64,
    pub published_at_ms: i64,
    pub key: PostKey,
    /// What the reply carries for the frontend to show; shared, since the pool is copied
    /// whenever a post is added.
    pub text: Arc<str>,
    /// Its content features, computed once: a content model scores a post it has not seen
    /// from them.
    pub features: Arc<PostFeatures>,
}

impl CandidatePost {
    pub fn new(channel: String, post_id: i64, published_at_ms: i64, content: &PostContent) -> Self {
        Self {
            key: PostKey::new(&channel, post_id),
            channel,
            post_id,
            published_at_ms,
            text: content.text.as_str().into(),
            features: Arc::new(PostFeatures::of(content)),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Pool {
    pub posts: Vec<CandidatePost>,
    /// Where each of `posts` is, so that adding or finding one is not a scan of them all.
    positions: HashMap<PostKey, usize>,
    /// Likes and votes per post.
    pub counts: HashMap<PostKey, (u32, u32)>,
    /// Smoothed like rate per channel.
    pub channel_rates: HashMap<String, f64>,
    pub global_rate: f64,
    pub prior_strength: f64,
}

impl Pool {
    pub fn new(
        posts: Vec<RecentPost>,
        counts: HashMap<PostKey, (u32, u32)>,
        prior_strength: f64,
    ) -> Self {
        let mut pool = Self {
            posts: Vec::new(),
            positions: HashMap::new(),
            counts,
            channel_rates: HashMap::new(),
            global_rate: 0.5,
            prior_strength,
        };
        for post in posts {
            pool.insert(CandidatePost::new(
                post.channel,
                post.post_id,
                post.published_at_ms,
                &post.content,
            ));
        }
        pool.rates();
        pool
    }

    /// Adds a post unless it is already a candidate.
    pub fn insert(&mut self, post: CandidatePost) -> bool {
        if self.positions.contains_key(&post.key) {
            return false;
        }
        self.positions.insert(post.key.clone(), self.posts.len());
        self.posts.push(post);
        true
    }

    /// The index of the candidate `key` in `posts`.
    pub fn position(&self, key: &PostKey) -> Option<usize> {
        self.positions.get(key).copied()
    }

    /// Drops posts published before `cutoff_ms`.
    pub fn expire(&mut self, cutoff_ms: i64) {
        self.posts.retain(|p| p.published_at_ms >= cutoff_ms);
        self.positions = self
            .posts
            .iter()
            .enumerate()
            .map(|(i, p)| (p.key.clone(), i))
            .collect();
    }

    fn rates(&mut self) {
        let (likes, votes) = self.counts.values().fold((0u64, 0u64), |(l, v), (a, b)| {
            (l + u64::from(*a), v + u64::from(*b))
        });
        // Half a vote each way keeps an empty store at 0.5.
        self.global_rate = (likes as f64 + 0.5) / (votes as f64 + 1.0);
        let mut per_channel: HashMap<&str, (u64, u64)> = HashMap::new();
        for (key, (l, v)) in &self.counts {
            let entry = per_channel.entry(key.channel()).or_default();
            entry.0 += u64::from(*l);
            entry.1 += u64::from(*v);
        }
        let k = self.prior_strength;
        self.channel_rates = per_channel
            .into_iter()
            .map(|(c, (l, v))| {
                (
                    c.to_owned(),
                    (l as f64 + k * self.global_rate) / (v as f64 + k),
                )
            })
            .collect();
    }

    /// A candidate's text.
    pub fn text(&self, channel: &str, post_id: i64) -> Option<Arc<str>> {
        self.position(&PostKey::new(channel, post_id))
            .map(|i| self.posts[i].text.clone())
    }

    /// The cold-start score of a post.
    pub fn popularity(&self, post: &CandidatePost) -> f64 {
        let k = self.prior_strength;
        let prior = self
            .channel_rates
            .get(&post.channel)
            .copied()
            .unwrap_or(self.global_rate);
        let (likes, votes) = self.counts.get(&post.key).copied().unwrap_or((0, 0));
        (f64::from(likes) + k * prior) / (f64::from(votes) + k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_post_starts_at_its_channels_rate_not_at_zero() {
        let counts = HashMap::from([
            (PostKey::new("good_channel", 1), (9, 10)),
            (PostKey::new("bad_channel", 1), (1, 10)),
        ]);
        let pool = Pool::new(
            [
                ("good_channel", 1),
                ("good_channel", 2),
                ("bad_channel", 1),
                ("bad_channel", 2),
            ]
            .into_iter()
            .map(|(channel, post_id)| RecentPost {
                channel: channel.into(),
                post_id,
                published_at_ms: 0,
                content: Default::default(),
            })
            .collect(),
            counts,
            5.0,
        );
        let score =
            |key: &str| pool.popularity(pool.posts.iter().find(|p| p.key.as_str() == key).unwrap());
        assert!(
            score("good_channel/2") > score("bad_channel/1"),
            "an unvoted post of a good channel beats a disliked one"
        );
        assert!(
            score("good_channel/1") > score("good_channel/2"),
            "a liked post beats its unvoted sibling"
        );
        assert!(score("bad_channel/2") > score("bad_channel/1"));
        assert!(score("bad_channel/2") < score("good_channel/2"));
    }
}
