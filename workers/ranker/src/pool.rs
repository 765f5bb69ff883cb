//! The candidate posts (published in the window) and the popularity figures of the cold-start
//! ranking: a like rate smoothed toward its channel's, which is smoothed toward the global one,
//! so a new post starts at its channel's rate instead of at zero. Notices update it in place (a
//! post scraped, a vote cast); a periodic reload from the store corrects what notices cannot
//! know (a re-vote by someone the replica does not hold, a notice lost).

use crate::calibration::{Calibration, Fitted, Refit, Vote as CalibrationVote};
use crate::subjects::{Subject, TeachingTexts, TopicModel, MIN_TEACHING_POSTS};
use oleg_features::{PostContent, PostFeatures};
use oleg_messages::UserId;
use oleg_scorer::{Candidate, NewPostPart, ScoringModel};
use oleg_store::{PostKey, RecentPost, VoteChange};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// The newest votes heard on a post that are kept to be read again against each new model
/// (24 bytes each): beyond a few hundred votes the model has learned the post for itself.
pub const HEARD_VOTES_PER_POST: usize = 256;

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
    /// Its views relative to its channel's (0 where unknown), weighed by the calibration
    /// ([`Pool::views_shift`]).
    relative_views: f64,
    /// When its notice came, if one brought it (a post read from the store has none): a reload
    /// that began reading earlier may have missed it ([`Pool::keep_newer_posts_of`]).
    announced_at: Option<Instant>,
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
            relative_views: content.relative_views().map_or(0.0, f64::from),
            announced_at: None,
        }
    }

    /// The post as its notice brought it, at `at`.
    pub fn announced(self, at: Instant) -> Self {
        Self {
            announced_at: Some(at),
            ..self
        }
    }
}

/// A candidate's channel and votes, kept beside it so that ranking reads them without a lookup
/// by name: a request goes over every candidate.
#[derive(Debug, Clone, Default)]
struct Tally {
    /// The channel's slot in `Pool::channel_counts`.
    channel: usize,
    likes: u32,
    votes: u32,
    surprise: Surprise,
    /// The newest first votes heard on it (at most [`HEARD_VOTES_PER_POST`]), oldest first.
    heard: VecDeque<HeardVote>,
}

/// A first vote heard on a post, kept to be read again against the next model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeardVote {
    pub user: UserId,
    /// The voter's (likes, votes) on the post's channel before it, where the replica held them.
    pub channel: Option<(u32, u32)>,
    pub liked: bool,
}

/// How a post's votes departed from what the ranker expected of each voter when they voted:
/// Σ (vote − expected like rate) and Σ expected · (1 − expected), the Fisher information of a
/// shift of the post's logit. Its voters were chosen because their expectation was high, so
/// their likes alone would read as quality; against their own expectations they do not.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Surprise {
    residual: f64,
    information: f64,
}

impl Surprise {
    /// One vote's, against the like rate `expected` of its voter.
    fn of(liked: bool, expected: f64) -> Self {
        Self {
            residual: f64::from(u8::from(liked)) - expected,
            information: expected * (1.0 - expected),
        }
    }

    fn add(&mut self, other: Surprise) {
        self.residual += other.residual;
        self.information += other.information;
    }
}

/// The posts' surprises read again against a new model ([`Pool::start_reread`]).
#[derive(Debug, Clone)]
pub struct Reread {
    /// Per post: its surprise read again, and its surprise when that was done (each post's pair
    /// read at one moment, so the votes heard since add up on it).
    posts: Vec<(PostKey, Surprise, Surprise)>,
    /// The pool's `surprise_epoch` when it was read.
    epoch: u64,
    /// How many votes were read.
    pub votes: usize,
}

/// What the ranker expected of a voter before their vote: the model's estimate, and the
/// posterior like rate it made of it and the voter's votes on the post's channel (calibrated)
/// before any post's effect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expectation {
    pub estimate: f64,
    pub posterior: f64,
}

/// Who cast a vote heard, and what the ranker expected of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Voter {
    pub user: UserId,
    /// Their (likes, votes) on the post's channel before the vote, where the replica held them.
    pub channel: Option<(u32, u32)>,
    /// `None` where the serving model did not know them (or there was none).
    pub expected: Option<Expectation>,
}

/// The prior of posts' effects: the candidates' mean residual per unit of information (how far
/// the expectations are off for every post alike, mostly the winner's curse of picking the
/// highest of many estimates; left out of each post's effect) and the configured spread.
#[derive(Debug, Clone, Copy)]
pub struct PostEffectPrior {
    offset: f64,
    precision: f64,
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
    /// The candidates' surprises summed.
    surprise_sum: Surprise,
    /// How many times the surprises were forgotten (a new model served).
    surprise_epoch: u64,
    /// What the model's estimates are worth, from the votes heard against them.
    calibration: Calibration,
    /// The spread of posts' effects, whose scale views are applied on.
    post_effect_sd: f64,
    /// The candidates' subjects, learned from their texts, how many posts the pool had when they
    /// were, and each post's mix of them (one per post of `posts`; nought without subjects).
    topic_model: Option<Arc<TopicModel>>,
    topic_model_posts: usize,
    subjects: Vec<Subject>,
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
        pool.learn_subjects();
        pool
    }

    /// Learns the subjects from the candidates' texts here and now, as a pool is built (see
    /// [`Pool::subjects_outgrown`] for learning them again off the lock).
    fn learn_subjects(&mut self) {
        let texts = self.teaching_texts();
        self.take_topic_model(TopicModel::learn(&texts), texts.pool_posts);
    }

    /// Whether the pool has grown by a quarter since its subjects were learned (or has enough
    /// texts for its first): new subjects come with new posts. The caller learns them again, from
    /// [`Pool::teaching_texts`], and gives them back with [`Pool::take_topic_model`].
    pub fn subjects_outgrown(&self) -> bool {
        self.posts.len()
            >= MIN_TEACHING_POSTS.max(self.topic_model_posts + self.topic_model_posts / 4 + 1)
    }

    /// The texts to learn the subjects from.
    pub fn teaching_texts(&self) -> TeachingTexts {
        TeachingTexts::of(&self.posts)
    }

    /// Serves `model`, learned from the texts of `learned_from` posts, and places every post
    /// among its subjects; `false` (and nothing changed) if the subjects served were learned from
    /// more posts, as after a reload while these were learned.
    pub fn take_topic_model(&mut self, model: Option<TopicModel>, learned_from: usize) -> bool {
        if learned_from < self.topic_model_posts {
            return false;
        }
        self.topic_model = model.map(Arc::new);
        self.topic_model_posts = learned_from;
        self.subjects = match &self.topic_model {
            Some(model) => self.posts.iter().map(|p| model.place(p)).collect(),
            None => vec![Subject::default(); self.posts.len()],
        };
        true
    }

    /// How many posts the subjects served were learned from; `None` without subjects.
    pub fn subjects_learned_from(&self) -> Option<usize> {
        self.topic_model.as_ref().map(|_| self.topic_model_posts)
    }

    /// The mix of subjects of the post at `index` (see [`Subject`]).
    pub fn subject(&self, index: usize) -> &Subject {
        &self.subjects[index]
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
    /// the replica does not hold the person). A first vote is kept to be read again against the
    /// next model; where the ranker could tell what it expected of the voter (the model knew
    /// them), the model's estimate goes to the calibration and the posterior to the post's
    /// surprise. A changed vote is left out of all three: its voter's expectation is long gone.
    /// The calibration's refit it makes due is returned, to be run where requests do not wait
    /// and installed ([`Pool::install_calibration`]).
    #[must_use = "a calibration refit due is to be run and installed"]
    pub fn record_vote(
        &mut self,
        key: &PostKey,
        liked: bool,
        change: VoteChange,
        voter: Voter,
    ) -> Option<Refit> {
        let like = i32::from(liked);
        let (likes, votes) = match change {
            VoteChange::New => (like, 1),
            VoteChange::Replaced { was_liked } => (like - i32::from(was_liked), 0),
            VoteChange::Stale => return None,
        };
        let mut refit = None;
        let count = self.counts.entry(key.clone()).or_default();
        count.0 = count.0.saturating_add_signed(likes);
        count.1 = count.1.saturating_add_signed(votes);
        let count = *count;
        if let Some(i) = self.position(key) {
            let tally = &mut self.tallies[i];
            (tally.likes, tally.votes) = count;
            if change == VoteChange::New {
                if tally.heard.len() == HEARD_VOTES_PER_POST {
                    tally.heard.pop_front();
                }
                tally.heard.push_back(HeardVote {
                    user: voter.user,
                    channel: voter.channel,
                    liked,
                });
                if let Some(expectation) = voter.expected {
                    let vote = Surprise::of(liked, expectation.posterior);
                    tally.surprise.add(vote);
                    self.surprise_sum.add(vote);
                    refit = self.calibration.record(CalibrationVote {
                        estimate: expectation.estimate,
                        relative_views: self.posts[i].relative_views,
                        channel_votes: voter.channel,
                        liked,
                        post: key.as_str(),
                        voter: voter.user.get(),
                        channel: key.channel(),
                    });
                }
            }
        }
        self.add_counts(key, i64::from(likes), i64::from(votes));
        refit
    }

    /// Takes in the fits of a refit that [`Pool::record_vote`] made due.
    pub fn install_calibration(&mut self, fitted: Fitted) {
        self.calibration.install(fitted);
    }

    /// The like rate the votes heard so far support for a model's `estimate` (see
    /// [`Calibration`]).
    pub fn calibrated(&self, estimate: f64) -> f64 {
        self.calibration.apply(estimate)
    }

    /// [`Pool::calibrated`] as a logit.
    pub fn calibrated_logit(&self, estimate: f64) -> f64 {
        self.calibration.apply_logit(estimate)
    }

    /// The shift of the post at `index`'s logit that its views support, for everyone alike (as
    /// the calibration weighs relative views, on the scale of posts' effects).
    pub fn views_shift(&self, index: usize) -> f64 {
        self.calibration.views_weight(self.post_effect_sd) * self.posts[index].relative_views
    }

    /// Views are applied on the scale of posts' effects of this spread (`ranker.post_effect_sd`;
    /// 0, as [`Pool::new`] leaves it: on the calibration's own).
    pub fn with_post_effect_sd(mut self, sd: f64) -> Self {
        self.post_effect_sd = sd;
        self
    }

    /// What the votes heard say the model's estimates and posts' views are worth.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Forgets every post's surprise: a new model serves, against which the votes heard are to
    /// be read again ([`Self::reread_surprises`]).
    pub fn forget_surprises(&mut self) {
        for tally in &mut self.tallies {
            tally.surprise = Surprise::default();
        }
        self.surprise_sum = Surprise::default();
        self.surprise_epoch += 1;
    }

    /// A reading of the votes heard on the candidates against a new model, to be filled a few
    /// posts at a time ([`Self::reread_surprises`]) and applied ([`Self::take_reread`]).
    pub fn start_reread(&self) -> Reread {
        Reread {
            posts: Vec::new(),
            epoch: self.surprise_epoch,
            votes: 0,
        }
    }

    /// The candidates' keys, in the pool's order.
    pub fn candidate_keys(&self) -> Vec<PostKey> {
        self.posts.iter().map(|post| post.key.clone()).collect()
    }

    /// Reads the votes heard on the posts of `keys` that are still candidates again with
    /// `expected` (the like rate now expected of a vote's voter, `None` where that cannot be
    /// told) into `reread`: a new model serves, and a post's surprise is then what it does not
    /// make of the post's votes. That is little where it trained on them and learned the post,
    /// and all of it for votes it never saw (cast while it trained). The caller reads a few
    /// posts at a time, each under the pool's lock only for as long as theirs take, instead of
    /// from a copy of the pool (whose votes heard alone may be hundreds of megabytes: up to
    /// 256 a candidate). Whether it read: not if the surprises were forgotten since `reread`
    /// started (a newer model serves, whose own reading follows).
    pub fn reread_surprises(
        &self,
        reread: &mut Reread,
        keys: &[PostKey],
        mut expected: impl FnMut(&Pool, usize, &HeardVote) -> Option<f64>,
    ) -> bool {
        if reread.epoch != self.surprise_epoch {
            return false;
        }
        for key in keys {
            let Some(i) = self.position(key) else {
                continue;
            };
            let tally = &self.tallies[i];
            let mut surprise = Surprise::default();
            for vote in &tally.heard {
                if let Some(rate) = expected(self, i, vote) {
                    surprise.add(Surprise::of(vote.liked, rate));
                    reread.votes += 1;
                }
            }
            reread.posts.push((key.clone(), surprise, tally.surprise));
        }
        true
    }

    /// Sets the posts' surprises to what `reread` found, plus what the votes heard since it
    /// was read added (surprises add up). Posts that left meanwhile are skipped, and those that
    /// came keep theirs. Whether it was applied: not if the surprises were forgotten since (a
    /// newer model serves, whose own reading follows).
    pub fn take_reread(&mut self, reread: Reread) -> bool {
        if reread.epoch != self.surprise_epoch {
            return false;
        }
        for (key, surprise, when_read) in reread.posts {
            if let Some(i) = self.position(&key) {
                let now = &mut self.tallies[i].surprise;
                *now = Surprise {
                    residual: surprise.residual + now.residual - when_read.residual,
                    information: surprise.information + now.information - when_read.information,
                };
            }
        }
        self.sum_surprises();
        true
    }

    /// Sums the candidates' surprises anew (after candidates came or went).
    fn sum_surprises(&mut self) {
        self.surprise_sum = Surprise::default();
        for tally in &self.tallies {
            self.surprise_sum.add(tally.surprise);
        }
    }

    /// The prior of posts' effects on their logits, spread by `sd` (in logits) around the
    /// candidates' mean surprise; `None` (every effect nought) when `sd` is 0 or no vote was
    /// read against an expectation yet.
    pub fn post_effect_prior(&self, sd: f64) -> Option<PostEffectPrior> {
        let sum = &self.surprise_sum;
        (sd > 0.0 && sum.information > 0.0).then(|| PostEffectPrior {
            offset: sum.residual / sum.information,
            precision: 1.0 / (sd * sd),
        })
    }

    /// The shift of the post at `index`'s logit that its voters' surprise supports: its
    /// posterior mean under `prior`, after one Newton step from nought.
    pub fn post_effect(&self, index: usize, prior: &PostEffectPrior) -> f64 {
        let s = self.tallies[index].surprise;
        (s.residual - prior.offset * s.information) / (s.information + prior.precision)
    }

    /// Takes over from `older`, the pool this one replaces, what the store could not give it:
    /// the posts announced since this pool's read of the store began (`read_started`), with
    /// their rows in `scorer`. The posts' surprises, their votes heard and the calibration come
    /// along: the store does not keep what was expected of a voter. Any other post of `older`
    /// has left the store's candidates (found deleted from its channel, or past the window) and
    /// is not kept. `older` is taken, not copied: this pool replaces it, under the lock requests
    /// wait on, and its votes heard are up to 256 a post.
    pub fn keep_newer_posts_of(
        &mut self,
        older: Pool,
        read_started: Instant,
        scorer: Option<&ScoringModel>,
    ) {
        self.calibration = older.calibration;
        self.surprise_epoch = older.surprise_epoch;
        for (post, tally) in older.posts.into_iter().zip(older.tallies) {
            let key = post.key.clone();
            if post.announced_at.is_some_and(|at| at >= read_started) {
                self.insert(post, scorer);
            }
            if let Some(i) = self.position(&key) {
                self.tallies[i].surprise = tally.surprise;
                self.tallies[i].heard = tally.heard;
            }
        }
        self.sum_surprises();
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
            ..Tally::default()
        });
        self.subjects.push(
            self.topic_model
                .as_ref()
                .map_or_else(Subject::default, |model| model.place(&post)),
        );
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
        let mut subjects = std::mem::take(&mut self.subjects).into_iter();
        let (mut kept_rows, mut kept_tallies, mut kept_subjects) = (
            Vec::with_capacity(before),
            Vec::with_capacity(before),
            Vec::with_capacity(before),
        );
        self.posts.retain(|p| {
            let (row, tally) = (rows.next().flatten(), tallies.next().unwrap_or_default());
            let subject = subjects.next().unwrap_or_default();
            let keep = p.published_at_ms >= cutoff_ms;
            if keep {
                kept_rows.push(row);
                kept_tallies.push(tally);
                kept_subjects.push(subject);
            }
            keep
        });
        self.model_rows = kept_rows;
        self.tallies = kept_tallies;
        self.subjects = kept_subjects;
        if self.posts.len() == before {
            return false;
        }
        self.sum_surprises();
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
        let tally = &self.tallies[index];
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
impl Voter {
    /// Person 1, whom the model does not know.
    pub(crate) fn unknown() -> Self {
        Self {
            user: UserId::new(1).expect("positive"),
            channel: None,
            expected: None,
        }
    }

    /// Person 1, whom the model expects to like the post at `rate` (taken as it is: no
    /// calibration, no votes on the channel).
    pub(crate) fn expecting(rate: f64) -> Self {
        Self {
            expected: Some(Expectation {
                estimate: rate,
                posterior: rate,
            }),
            ..Self::unknown()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Records a vote, running at once the calibration's refit it makes due.
    pub(crate) fn hear(
        pool: &mut Pool,
        key: &PostKey,
        liked: bool,
        change: VoteChange,
        voter: Voter,
    ) {
        if let Some(refit) = pool.record_vote(key, liked, change, voter) {
            pool.install_calibration(refit.run());
        }
    }

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
    fn a_reload_keeps_the_posts_announced_since_it_began_reading_and_no_other_it_lacks() {
        let announced =
            |id, at| CandidatePost::new("a".into(), id, 0, &Default::default()).announced(at);
        let ids = |pool: &Pool| {
            let mut ids: Vec<i64> = pool.posts.iter().map(|p| p.post_id).collect();
            ids.sort();
            ids
        };
        let mut pool = Pool::new(recent(&[("a", 1), ("a", 2)]), HashMap::new(), 5.0);
        let read_started = Instant::now() + std::time::Duration::from_secs(1);
        let (before, since) = (
            read_started - std::time::Duration::from_millis(1),
            read_started + std::time::Duration::from_millis(1),
        );
        for (id, at) in [(3, before), (4, since), (5, before)] {
            assert!(pool.insert(announced(id, at), None));
        }
        // The store holds 1 and 3; 2 and 5 were found deleted; 4 was stored after the read.
        let mut reloaded = Pool::new(recent(&[("a", 1), ("a", 3)]), HashMap::new(), 5.0);
        reloaded.keep_newer_posts_of(pool, read_started, None);
        assert_eq!(ids(&reloaded), [1, 3, 4]);
        // The next reload, which began later, finds 4 in the store or drops it.
        let mut next = Pool::new(recent(&[("a", 1), ("a", 3)]), HashMap::new(), 5.0);
        next.keep_newer_posts_of(reloaded, since + std::time::Duration::from_secs(1), None);
        assert_eq!(ids(&next), [1, 3]);
    }

    #[test]
    fn votes_heard_move_popularity_as_a_reload_would() {
        let posts = || recent(&[("a", 1), ("a", 2), ("b", 1)]);
        let key = |c: &str, id| PostKey::new(c, id);
        let mut heard = Pool::new(posts(), HashMap::from([(key("a", 1), (1, 2))]), 5.0);
        hear(
            &mut heard,
            &key("a", 1),
            true,
            VoteChange::New,
            Voter::unknown(),
        );
        hear(
            &mut heard,
            &key("b", 1),
            false,
            VoteChange::New,
            Voter::unknown(),
        );
        hear(
            &mut heard,
            &key("b", 1),
            true,
            VoteChange::Replaced { was_liked: false },
            Voter::unknown(),
        );
        hear(
            &mut heard,
            &key("a", 1),
            true,
            VoteChange::Stale,
            Voter::unknown(),
        );
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
    fn a_posts_effect_follows_its_voters_surprise_not_their_likes() {
        let key = |id| PostKey::new("a", id);
        let mut pool = Pool::new(
            recent(&[("a", 1), ("a", 2), ("a", 3), ("a", 4)]),
            HashMap::new(),
            5.0,
        );
        let votes = |pool: &mut Pool, id, liked, expected| {
            for _ in 0..4 {
                hear(
                    pool,
                    &key(id),
                    liked,
                    VoteChange::New,
                    Voter::expecting(expected),
                );
            }
        };
        // Four likes from people expected to like it anyway, four from people expected not
        // to, and four dislikes where a like was as likely as not.
        votes(&mut pool, 1, true, 0.9);
        votes(&mut pool, 2, true, 0.3);
        votes(&mut pool, 3, false, 0.5);
        // Neither a vote from someone the model does not know nor a changed vote counts.
        hear(&mut pool, &key(4), false, VoteChange::New, Voter::unknown());
        hear(
            &mut pool,
            &key(4),
            true,
            VoteChange::Replaced { was_liked: false },
            Voter::expecting(0.5),
        );
        let prior = pool
            .post_effect_prior(0.5)
            .expect("votes were read against expectations");
        let effect = |pool: &Pool, id| pool.post_effect(pool.position(&key(id)).unwrap(), &prior);
        assert!(
            effect(&pool, 2) > effect(&pool, 1) + 0.3,
            "likes where a dislike was expected say more: {} vs {}",
            effect(&pool, 2),
            effect(&pool, 1)
        );
        assert!(effect(&pool, 3) < -0.3, "{}", effect(&pool, 3));
        assert_eq!(effect(&pool, 4), 0.0);
        // The mean surprise (here 1.2 / 2.2 per unit of information) is everyone's, not a
        // post's own: the expected likes of post 1 move it little.
        assert!(effect(&pool, 1).abs() < 0.1, "{}", effect(&pool, 1));
        // A wider prior lets the same votes say more.
        let wide = pool.post_effect_prior(2.0).unwrap();
        assert!(pool.post_effect(pool.position(&key(2)).unwrap(), &wide) > effect(&pool, 2));
        assert!(
            pool.post_effect_prior(0.0).is_none(),
            "0 turns post effects off"
        );

        // A reload from the store keeps them (the store does not know what was expected).
        let mut reloaded = Pool::new(
            recent(&[("a", 1), ("a", 2), ("a", 3), ("a", 4)]),
            HashMap::new(),
            5.0,
        );
        reloaded.keep_newer_posts_of(pool.clone(), Instant::now(), None);
        let again = reloaded.post_effect_prior(0.5).unwrap();
        for id in 1..=4 {
            let i = reloaded.position(&key(id)).unwrap();
            // Summed anew, in another order.
            assert!((reloaded.post_effect(i, &again) - effect(&pool, id)).abs() < 1e-12);
        }
        // A post leaving the window takes its surprise along.
        let mut expired = reloaded.clone();
        for (post, at) in expired.posts.iter_mut().zip([0, 10, 10, 10]) {
            post.published_at_ms = at;
        }
        assert!(expired.expire(5));
        let without_1 = expired.post_effect_prior(0.5).unwrap();
        assert!((prior.offset - 1.2 / 2.2).abs() < 1e-9, "{}", prior.offset);
        assert!(
            (without_1.offset - 0.8 / 1.84).abs() < 1e-9,
            "{}",
            without_1.offset
        );
        // A new model serves, which learned post 2 (it expects its voters to like it) and
        // expects the others' voters to like theirs as often as not. The first votes heard
        // (kept through the reload) are read again against it: post 2's likes are no surprise
        // any more, post 3's dislikes still are, and so is the dislike on post 4 by someone
        // the old model did not know. The changed vote stays out.
        // Read two posts at a time, as the ranker does, with a post gone between the parts.
        reloaded.forget_surprises();
        let keys = reloaded.candidate_keys();
        let mut reread = reloaded.start_reread();
        let mut expected = |pool: &Pool, i: usize, vote: &HeardVote| {
            assert_eq!(vote.user, Voter::unknown().user);
            Some(if pool.posts[i].key == key(2) {
                0.95
            } else {
                0.5
            })
        };
        assert!(reloaded.reread_surprises(&mut reread, &keys[..2], &mut expected));
        // A post that left between the parts is skipped.
        let mut gone = reloaded.clone();
        for (post, at) in gone.posts.iter_mut().zip([10, 10, 10, 0]) {
            post.published_at_ms = at;
        }
        assert!(gone.expire(5));
        let mut without_last = reread.clone();
        assert!(gone.reread_surprises(&mut without_last, &keys[2..], &mut expected));
        assert!(reloaded.reread_surprises(&mut reread, &keys[2..], &mut expected));
        assert_eq!(reread.votes, 13);
        assert!(without_last.votes < reread.votes);
        let read: Vec<_> = without_last.posts.iter().map(|(key, ..)| key).collect();
        assert_eq!(read, keys[..3].iter().collect::<Vec<_>>());
        // A vote heard while the votes were read, against the new model, counts as well: one
        // more dislike of post 1 where a like was as likely.
        hear(
            &mut reloaded,
            &key(1),
            false,
            VoteChange::New,
            Voter::expecting(0.5),
        );
        // A reading done before the surprises were last forgotten (for a model since replaced)
        // is refused.
        let mut replaced = reloaded.clone();
        replaced.forget_surprises();
        assert!(!replaced.reread_surprises(&mut reread.clone(), &keys, &mut expected));
        assert!(!replaced.take_reread(reread.clone()));
        assert!(replaced.post_effect_prior(0.5).is_none());
        assert!(reloaded.take_reread(reread));
        let prior = reloaded.post_effect_prior(0.5).unwrap();
        let effect = |id| reloaded.post_effect(reloaded.position(&key(id)).unwrap(), &prior);
        assert!(effect(2).abs() < 0.15, "{}", effect(2));
        assert!(effect(3) < -0.3, "{}", effect(3));
        assert!(effect(4) < -0.05, "{}", effect(4));
        assert!(effect(1) > 0.2, "{}", effect(1));
        // A model that knows none of the voters reads nothing from them.
        reloaded.forget_surprises();
        let reread = read_again(&reloaded, |_, _, _| None);
        assert_eq!(reread.votes, 0);
        assert!(reloaded.take_reread(reread));
        assert!(reloaded.post_effect_prior(0.5).is_none());
    }

    #[test]
    fn only_the_newest_votes_heard_on_a_post_are_kept_to_read_again() {
        let key = PostKey::new("a", 1);
        let mut pool = Pool::new(recent(&[("a", 1)]), HashMap::new(), 5.0);
        // The oldest ten are dislikes, the rest likes.
        for vote in 0..HEARD_VOTES_PER_POST + 10 {
            hear(
                &mut pool,
                &key,
                vote >= 10,
                VoteChange::New,
                Voter::unknown(),
            );
        }
        let mut disliked = 0;
        let reread = read_again(&pool, |_, _, vote| {
            disliked += usize::from(!vote.liked);
            Some(0.5)
        });
        assert_eq!((reread.votes, disliked), (HEARD_VOTES_PER_POST, 0));
        assert_eq!(
            pool.counts(&key),
            (
                HEARD_VOTES_PER_POST as u32,
                HEARD_VOTES_PER_POST as u32 + 10
            )
        );
    }

    #[test]
    fn votes_heard_against_the_models_estimates_calibrate_them() {
        // Posts a/1..=400: the odd ones read three times as much as their page's median.
        let ids: Vec<(&str, i64)> = (1..=400).map(|id| ("a", id)).collect();
        let mut posts = recent(&ids);
        for post in posts.iter_mut().step_by(2) {
            post.content.views = Some(2_999);
            post.content.page_median_views = Some(999);
        }
        let mut pool = Pool::new(posts, HashMap::new(), 5.0);
        assert_eq!(
            pool.calibrated(0.9),
            0.9,
            "taken as it comes before any vote"
        );
        assert_eq!(pool.views_shift(0), 0.0);
        // The model is sure of 0.9 for everyone. Eight votes a post, each by its own person:
        // of those at their page's median 7 in 8 liked, of those read more 31 in 32.
        let post = |id: i64| PostKey::new("a", id);
        for id in 1..=400 {
            for k in 0..8 {
                let n = (id - 1) / 2 * 8 + k;
                let liked = if id % 2 == 1 { n % 32 != 0 } else { n % 8 != 0 };
                let voter = Voter {
                    user: UserId::new(id * 8 + k).unwrap(),
                    ..Voter::expecting(0.9)
                };
                hear(&mut pool, &post(id), liked, VoteChange::New, voter);
            }
        }
        // Post a/2 is at its page's median: views say nothing of it.
        assert_eq!(pool.views_shift(1), 0.0);
        // Every vote calibrates the estimate, and the views shift the read more: ln 3 e-folds
        // worth logit(31/32) − logit(7/8) ≈ 1.5 logits.
        let plain = pool.calibrated(0.9);
        let read_more = crate::ranking::shifted(plain, pool.views_shift(0));
        assert!((plain - 0.875).abs() < 0.03, "{plain}");
        assert!((read_more - 0.969).abs() < 0.01, "{read_more}");
        // Posts' effects on the calibration's own scale, or on one twice as wide as its.
        let posts_sd = pool.calibration().posts_sd().unwrap();
        let wider = pool.clone().with_post_effect_sd(2.0 * posts_sd);
        let shift = pool.views_shift(0);
        assert!(
            wider.views_shift(0) > 1.5 * shift,
            "{}",
            wider.views_shift(0)
        );
        // A changed vote, or one by someone the model does not know, teaches nothing.
        let weights = pool.calibration().weights();
        for _ in 0..200 {
            hear(&mut pool, &post(2), true, VoteChange::New, Voter::unknown());
            let change = VoteChange::Replaced { was_liked: false };
            hear(&mut pool, &post(2), true, change, Voter::expecting(0.9));
        }
        assert_eq!(pool.calibration().weights(), weights);
        // It outlives a reload from the store.
        let mut reloaded = Pool::new(recent(&[("a", 1)]), HashMap::new(), 5.0);
        reloaded.keep_newer_posts_of(pool.clone(), Instant::now(), None);
        assert_eq!(reloaded.calibration().weights(), weights);
    }

    /// Every candidate's votes heard read again at once.
    fn read_again(
        pool: &Pool,
        expected: impl FnMut(&Pool, usize, &HeardVote) -> Option<f64>,
    ) -> Reread {
        let mut reread = pool.start_reread();
        assert!(pool.reread_surprises(&mut reread, &pool.candidate_keys(), expected));
        reread
    }

    /// An untrained model that knows person 1 and posts a/1 and a/2.
    pub(crate) fn small_scorer() -> ScoringModel {
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
        ScoringModel::load(&weights, vocab.as_bytes()).unwrap()
    }

    #[test]
    fn rows_looked_up_once_per_model_stay_with_their_posts() {
        let scorer = small_scorer();
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
