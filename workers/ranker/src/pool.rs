//! The candidate posts (published in the window) and the popularity figures of the cold-start
//! ranking: a like rate smoothed toward its channel's, which is smoothed toward the global one,
//! so a new post starts at its channel's rate instead of at zero. Notices update it in place (a
//! post scraped, a vote cast); a periodic reload from the store corrects what notices cannot
//! know (a re-vote by someone the replica does not hold, a notice lost).

use oleg_features::{PostContent, PostFeatures};
use oleg_scorer::{Candidate, NewPostPart, ScoringModel};
use oleg_store::{PostKey, RecentPost, VoteChange};
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

/// A candidate's channel and votes, kept beside it so that ranking reads them without a lookup
/// by name: a request goes over every candidate.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    /// The channel's slot in `Pool::channel_counts`.
    channel: usize,
    likes: u32,
    votes: u32,
}

/// A post as a model sees it: its row if the model saw it, else what the model makes of its
/// channel and content (for a content network, most of what scoring a new post costs).
#[derive(Debug, Clone)]
enum ModelPost {
    Row(usize),
    New(NewPostPart),
}

impl ModelPost {
    fn of(post: &CandidatePost, scorer: &ScoringModel) -> Self {
        match scorer.post_row(&post.channel, post.post_id) {
            Some(row) => Self::Row(row),
            None => Self::New(scorer.new_post_part(&post.channel, &post.features)),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Pool {
    pub posts: Vec<CandidatePost>,
    /// Where each of `posts` is, so that adding or finding one is not a scan of them all.
    positions: foldhash::HashMap<PostKey, usize>,
    /// One per post of `posts`.
    tallies: Vec<Tally>,
    /// Each post as the model with id `rows_model` sees it (none where no model was given),
    /// worked out once per model and post instead of once per request and candidate.
    model_rows: Vec<Option<ModelPost>>,
    rows_model: Option<u64>,
    /// Likes and votes per post, candidates or not (a vote may be heard before its post).
    counts: HashMap<PostKey, (u32, u32)>,
    /// Each channel's slot in `channel_counts`; channels are never dropped (there are few).
    channel_slots: foldhash::HashMap<String, usize>,
    /// Likes and votes per channel slot, and in all.
    channel_counts: Vec<(u64, u64)>,
    total: (u64, u64),
    prior_strength: f64,
}

impl Pool {
    pub fn new(
        posts: Vec<RecentPost>,
        counts: HashMap<PostKey, (u32, u32)>,
        prior_strength: f64,
    ) -> Self {
        let mut pool = Self {
            prior_strength,
            ..Self::default()
        };
        for (key, (likes, votes)) in &counts {
            pool.add_counts(key, i64::from(*likes), i64::from(*votes));
        }
        // Before the posts: each takes its votes from `counts` as it is inserted.
        pool.counts = counts;
        for post in posts {
            pool.insert(
                CandidatePost::new(
                    post.channel,
                    post.post_id,
                    post.published_at_ms,
                    &post.content,
                ),
                None,
            );
        }
        pool
    }

    /// The slot of `channel` in `channel_counts`, added if new.
    fn channel_slot_or_add(&mut self, channel: &str) -> usize {
        if let Some(&slot) = self.channel_slots.get(channel) {
            return slot;
        }
        let slot = self.channel_counts.len();
        self.channel_counts.push((0, 0));
        self.channel_slots.insert(channel.to_owned(), slot);
        slot
    }

    fn add_counts(&mut self, key: &PostKey, likes: i64, votes: i64) {
        let add = |(l, v): &mut (u64, u64)| {
            *l = l.saturating_add_signed(likes);
            *v = v.saturating_add_signed(votes);
        };
        let slot = self.channel_slot_or_add(key.channel());
        add(&mut self.channel_counts[slot]);
        add(&mut self.total);
    }

    /// Counts a vote on `key` by what it changed in its person's history (a first vote when
    /// the replica does not hold the person).
    pub fn record_vote(&mut self, key: &PostKey, liked: bool, change: VoteChange) {
        let like = i32::from(liked);
        let (likes, votes) = match change {
            VoteChange::New => (like, 1),
            VoteChange::Replaced { was_liked } => (like - i32::from(was_liked), 0),
            VoteChange::Stale => return,
        };
        let count = self.counts.entry(key.clone()).or_default();
        count.0 = count.0.saturating_add_signed(likes);
        count.1 = count.1.saturating_add_signed(votes);
        let count = *count;
        if let Some(i) = self.position(key) {
            (self.tallies[i].likes, self.tallies[i].votes) = count;
        }
        self.add_counts(key, i64::from(likes), i64::from(votes));
    }

    /// Carries over the posts of `older` that this pool (read from the store) lacks: those
    /// announced while it was read, with their rows in `scorer`.
    pub fn keep_newer_posts_of(&mut self, older: &Pool, scorer: Option<&ScoringModel>) {
        for post in &older.posts {
            self.insert(post.clone(), scorer);
        }
    }

    /// Adds a post unless it is already a candidate, with its row in `scorer` (the serving
    /// model, if any).
    pub fn insert(&mut self, post: CandidatePost, scorer: Option<&ScoringModel>) -> bool {
        if self.positions.contains_key(&post.key) {
            return false;
        }
        if scorer.map(ScoringModel::id) != self.rows_model {
            // Rows of another model: looked up again by the next `resolve`.
            self.rows_model = None;
        }
        self.model_rows
            .push(scorer.map(|s| ModelPost::of(&post, s)));
        let (likes, votes) = self.counts(&post.key);
        let channel = self.channel_slot_or_add(&post.channel);
        self.tallies.push(Tally {
            channel,
            likes,
            votes,
        });
        self.positions.insert(post.key.clone(), self.posts.len());
        self.posts.push(post);
        true
    }

    /// Works out every post as `scorer` sees it (its row, or what it makes of a new post),
    /// unless done already; whether it did.
    pub fn resolve(&mut self, scorer: &ScoringModel) -> bool {
        if self.rows_model == Some(scorer.id()) {
            return false;
        }
        self.model_rows = self
            .posts
            .iter()
            .map(|p| Some(ModelPost::of(p, scorer)))
            .collect();
        self.rows_model = Some(scorer.id());
        true
    }

    /// The post at `index` as `scorer` sees it.
    pub fn candidate<'a>(&'a self, index: usize, scorer: &ScoringModel) -> Candidate<'a> {
        let post = &self.posts[index];
        let resolved = match &self.model_rows[index] {
            Some(resolved) if self.rows_model == Some(scorer.id()) => resolved,
            _ => return scorer.candidate(&post.channel, post.post_id, &post.features),
        };
        match resolved {
            ModelPost::Row(row) => Candidate::Known(*row),
            ModelPost::New(part) => part.candidate(),
        }
    }

    /// One flag per post of `posts`: whether `keys` names it (keys of other posts are ignored).
    /// A request looks up what the person saw, not every candidate in what they saw.
    pub fn excluded<'a>(&self, keys: impl IntoIterator<Item = &'a PostKey>) -> Vec<bool> {
        let mut excluded = vec![false; self.posts.len()];
        for i in keys.into_iter().filter_map(|key| self.position(key)) {
            excluded[i] = true;
        }
        excluded
    }

    /// The index of the candidate `key` in `posts`.
    pub fn position(&self, key: &PostKey) -> Option<usize> {
        self.positions.get(key).copied()
    }

    /// Drops posts published before `cutoff_ms`; `false` if there were none.
    pub fn expire(&mut self, cutoff_ms: i64) -> bool {
        let before = self.posts.len();
        let mut rows = std::mem::take(&mut self.model_rows).into_iter();
        let mut tallies = std::mem::take(&mut self.tallies).into_iter();
        let (mut kept_rows, mut kept_tallies) =
            (Vec::with_capacity(before), Vec::with_capacity(before));
        self.posts.retain(|p| {
            let (row, tally) = (rows.next().flatten(), tallies.next().unwrap_or_default());
            let keep = p.published_at_ms >= cutoff_ms;
            if keep {
                kept_rows.push(row);
                kept_tallies.push(tally);
            }
            keep
        });
        self.model_rows = kept_rows;
        self.tallies = kept_tallies;
        if self.posts.len() == before {
            return false;
        }
        self.positions = self
            .posts
            .iter()
            .enumerate()
            .map(|(i, p)| (p.key.clone(), i))
            .collect();
        true
    }

    /// A candidate's text.
    pub fn text(&self, channel: &str, post_id: i64) -> Option<Arc<str>> {
        self.position(&PostKey::new(channel, post_id))
            .map(|i| self.posts[i].text.clone())
    }

    /// The cold-start score of the post at `index`.
    pub fn popularity(&self, index: usize) -> f64 {
        let k = self.prior_strength;
        let rate = |(likes, votes): (f64, f64), prior: f64| (likes + k * prior) / (votes + k);
        // Half a vote each way keeps an empty store at 0.5.
        let global = (self.total.0 as f64 + 0.5) / (self.total.1 as f64 + 1.0);
        let tally = self.tallies[index];
        let (channel_likes, channel_votes) = self.channel_counts[tally.channel];
        let channel = if channel_votes == 0 {
            global
        } else {
            rate((channel_likes as f64, channel_votes as f64), global)
        };
        rate((f64::from(tally.likes), f64::from(tally.votes)), channel)
    }

    /// How many channels have a slot (see [`Self::channel_slot`]).
    pub fn channel_slots(&self) -> usize {
        self.channel_counts.len()
    }

    /// The slot of a channel: a small number per channel the pool has heard of.
    pub fn channel_slot(&self, channel: &str) -> Option<usize> {
        self.channel_slots.get(channel).copied()
    }

    /// The channel slot of the post at `index`.
    pub fn channel_slot_of(&self, index: usize) -> usize {
        self.tallies[index].channel
    }

    /// Likes and votes on a post.
    pub fn counts(&self, key: &PostKey) -> (u32, u32) {
        self.counts.get(key).copied().unwrap_or((0, 0))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Posts of the window with no content, by (channel, id).
    pub(crate) fn recent(posts: &[(&str, i64)]) -> Vec<RecentPost> {
        posts
            .iter()
            .map(|&(channel, post_id)| RecentPost {
                channel: channel.into(),
                post_id,
                published_at_ms: 0,
                content: Default::default(),
            })
            .collect()
    }

    #[test]
    fn a_new_post_starts_at_its_channels_rate_not_at_zero() {
        let counts = HashMap::from([
            (PostKey::new("good_channel", 1), (9, 10)),
            (PostKey::new("bad_channel", 1), (1, 10)),
        ]);
        let pool = Pool::new(
            recent(&[
                ("good_channel", 1),
                ("good_channel", 2),
                ("bad_channel", 1),
                ("bad_channel", 2),
            ]),
            counts,
            5.0,
        );
        let score = |key: &str| {
            pool.popularity(
                pool.posts
                    .iter()
                    .position(|p| p.key.as_str() == key)
                    .unwrap(),
            )
        };
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

    #[test]
    fn votes_heard_move_popularity_as_a_reload_would() {
        let posts = || recent(&[("a", 1), ("a", 2), ("b", 1)]);
        let key = |c: &str, id| PostKey::new(c, id);
        let mut heard = Pool::new(posts(), HashMap::from([(key("a", 1), (1, 2))]), 5.0);
        heard.record_vote(&key("a", 1), true, VoteChange::New);
        heard.record_vote(&key("b", 1), false, VoteChange::New);
        heard.record_vote(
            &key("b", 1),
            true,
            VoteChange::Replaced { was_liked: false },
        );
        heard.record_vote(&key("a", 1), true, VoteChange::Stale);
        let reloaded = Pool::new(
            posts(),
            HashMap::from([(key("a", 1), (2, 3)), (key("b", 1), (1, 1))]),
            5.0,
        );
        for (i, post) in reloaded.posts.iter().enumerate() {
            let a = heard.popularity(heard.position(&post.key).unwrap());
            let b = reloaded.popularity(i);
            assert!((a - b).abs() < 1e-12, "{}: {a} vs {b}", post.key);
        }
        assert_eq!(heard.counts(&key("b", 1)), (1, 1));
    }

    #[test]
    fn rows_looked_up_once_per_model_stay_with_their_posts() {
        let network = oleg_model::Network::new(
            &oleg_model::ModelConfig::default(),
            oleg_model::Sizes {
                users: 1,
                posts: 2,
                channels: 1,
            },
            tch::Device::Cpu,
        );
        let mut weights = Vec::new();
        oleg_model::write_network(&network, &[], &mut weights).unwrap();
        let vocab = r#"{"users": [1], "channels": ["a"], "posts": [[0, 1], [0, 2]]}"#;
        let scorer = ScoringModel::load(&weights, vocab.as_bytes()).unwrap();
        let mut posts = recent(&[("a", 1), ("a", 3), ("a", 2)]);
        for (post, at) in posts.iter_mut().zip([0, 10, 20]) {
            post.published_at_ms = at;
        }
        let mut pool = Pool::new(posts, HashMap::new(), 5.0);
        pool.resolve(&scorer);
        assert!(pool.expire(5), "a/1 left the window");
        pool.insert(
            CandidatePost::new("a".into(), 9, 30, &Default::default()),
            Some(&scorer),
        );
        let (mut kept, mut fresh) = (Vec::new(), Vec::new());
        for (i, post) in pool.posts.iter().enumerate() {
            scorer.score(0, &[pool.candidate(i, &scorer)], &mut kept);
            let candidate = scorer.candidate(&post.channel, post.post_id, &post.features);
            scorer.score(0, &[candidate], &mut fresh);
            assert_eq!(kept, fresh, "{}", post.key);
        }
        assert!(matches!(pool.candidate(1, &scorer), Candidate::Known(1)));
    }
}
