//! What the model's estimate is worth, learned from the votes heard against it: a logistic
//! regression of each vote on the logit of the model's estimate for the voter and post, and on
//! the post's views relative to its channel's (`oleg_features::PostContent::relative_views`).
//!
//! The network's estimates come out far more confident than the votes bear out (on the demo, a
//! logit of the estimate is worth about an eighth of one), and the posterior policies mix them
//! with a person's own votes and shift them by posts' effects as if they were like rates: so
//! they are first mapped to like rates the votes support (Platt scaling). The views term says
//! what a post's being passed on says of its appeal before anyone voted on it, in the same fit,
//! so that it is read against what the model already makes of the post; it is applied apart
//! (`views_weight`), as a shift every person shares, like a post's own effect.
//!
//! The fit also holds the voter's own votes on the post's channel (their smoothed like rate's
//! logit), which the ranker mixes in apart (the person's channel offset) and so does not apply
//! from here.
//! The ranker picks posts by those votes: a post read less than its channel's others reaches
//! mostly people who liked the channel, one read more also reaches the lukewarm. Left out of the
//! fit, the channel votes would show up as views being worth less (and the estimate more) than
//! they are.
//!
//! The views' weight comes from a second fit of the same regression over the same votes, a mixed
//! one: each post's own appeal and each person's leaning on each channel are random intercepts,
//! N(0, s_post²) and N(0, s_pair²), their spreads fitted too (`Mixed`). After its first votes a
//! post is picked by its own effect as well (what its voters' surprise said of it): a post read
//! little reaches later voters only if its first ones liked it, so a fit that does not hold each
//! post's appeal reads views, over those later votes, as worth a fraction of what they are. Held
//! as an intercept, the appeal those votes were picked by is in the fit.
//!
//! Every such fit over people with tastes it does not hold reads a shared effect flatter than
//! it is for each person (a logistic regression averaged over what it leaves out), posts' own
//! appeal as much as views: the mixed fit reads posts' spread at about half of what the ranker
//! shifts them by (`ranker.post_effect_sd`, each post's effect learned from its voters'
//! surprise against the person's own expectation). Applied beside those effects, views are
//! taken on their scale: the fitted weight times post_effect_sd / s_post.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

/// Votes kept for the fit, the newest: a few thousand pin four weights down, and they take
/// little memory (32 bytes each).
const VOTES_KEPT: usize = 10_000;
/// The fit is redone after this many votes (it goes over every vote kept, a few milliseconds).
const REFIT_EVERY: usize = 100;
/// Before this many votes the estimates are taken as they come: a fit on fewer would be noise.
const MIN_VOTES: usize = 100;
const NEWTON_STEPS: usize = 30;
/// An estimate beyond this logit (a like rate of 0.9975) is taken as this one: a network sure to
/// the last bit of a float says no more than that it is sure.
const MAX_ESTIMATE_LOGIT: f64 = 6.0;

/// The fitted weights' priors, (mean, precision): the intercept and the estimate's weight
/// weakly at "as it comes" (0 and 1), so that they stay finite when every vote went one way;
/// the views' weight at none, N(0, 1) logits per e-fold; the channel votes' weakly at none.
const PRIORS: [(f64, f64); WEIGHTS] = [(0.0, 0.01), (1.0, 0.01), (0.0, 1.0), (0.0, 0.01)];
pub(crate) const WEIGHTS: usize = 4;
/// The weights' names, in their order (and the metric's `weight` label): the intercept, the
/// estimate's logit's, the relative views', the voter's channel votes'.
pub(crate) const WEIGHT_NAMES: [&str; WEIGHTS] = ["intercept", "estimate", "views", "channel"];
/// The views' weight's place among the weights: the one the mixed fit gives.
const VIEWS: usize = 2;

/// The mixed fit's turns (weights, then each post's and each pair's intercept, then their
/// spreads), each starting from the last fit's: a few turns a refit follow 100 new votes.
const MIXED_TURNS: usize = 5;
/// Newton steps of the weights in each turn, the intercepts held.
const MIXED_WEIGHT_STEPS: usize = 3;
/// Spreads the mixed fit starts from (logits), and the range it keeps them in: at nought an
/// intercept could no longer move, and past 3 logits a group's votes all go one way.
const MIXED_START_SD: f64 = 0.5;
const MIXED_VARIANCES: (f64, f64) = (0.01, 9.0);
/// Posts' spread as applied is read with a prior at `post_effect_sd` worth this many posts: with
/// few posts voted on (the saved pages' 75) a spread fitted near nought would multiply the views'
/// weight's noise.
const SPREAD_PRIOR_POSTS: f64 = 10.0;

#[derive(Debug, Clone, Copy)]
struct HeardVote {
    estimate_logit: f32,
    relative_views: f32,
    channel_logit: f32,
    liked: bool,
    /// The post's and the (voter, channel) pair's hashes: the mixed fit's groups.
    post: u64,
    pair: u64,
}

/// The calibration in use: the estimate's worth fitted to every vote heard, the views' by the
/// mixed fit over the same votes.
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    votes: VecDeque<HeardVote>,
    since_fit: usize,
    /// The weights of [`WEIGHTS`] over every vote; none before the first fit (estimates are
    /// taken as they come).
    pooled: Option<[f64; WEIGHTS]>,
    /// None before the first fit (views are not weighed).
    mixed: Option<Mixed>,
}

/// The mixed fit: the weights with each post's appeal and each (person, channel) pair's leaning
/// as random intercepts, and those intercepts' spreads.
#[derive(Debug, Clone)]
struct Mixed {
    weights: [f64; WEIGHTS],
    posts: Intercepts,
    pairs: Intercepts,
}

/// One kind of random intercept: each group's (by its hash) at the last fit, and their variance
/// (fitted over those groups).
#[derive(Debug, Clone)]
struct Intercepts {
    by_group: HashMap<u64, f64>,
    variance: f64,
}

/// The weights that take an estimate as it comes, the fit's priors' means.
const AS_IT_COMES: [f64; WEIGHTS] = [PRIORS[0].0, PRIORS[1].0, PRIORS[2].0, PRIORS[3].0];

impl Calibration {
    /// The like rate the votes support for a model estimate of `estimate`, views aside.
    pub fn apply(&self, estimate: f64) -> f64 {
        if self.pooled.is_none() {
            return estimate;
        }
        sigmoid(self.apply_logit(estimate))
    }

    /// [`Self::apply`]'s like rate as a logit (the ranker's channel offsets add to it).
    pub fn apply_logit(&self, estimate: f64) -> f64 {
        match self.pooled {
            Some([intercept, scale, ..]) => intercept + scale * estimate_logit(estimate),
            None => logit(estimate),
        }
    }

    /// The weights in use, in the order of [`WEIGHT_NAMES`]: the views' as the mixed fit reads
    /// it (before [`Self::views_weight`] takes it to posts' effects' scale), the others from
    /// the fit over every vote.
    pub fn weights(&self) -> [f64; WEIGHTS] {
        let mut weights = self.pooled.unwrap_or(AS_IT_COMES);
        weights[VIEWS] = self.mixed.as_ref().map_or(0.0, |m| m.weights[VIEWS]);
        weights
    }

    /// Posts' spread on the mixed fit's scale, logits (None before its first fit).
    pub fn posts_sd(&self) -> Option<f64> {
        self.mixed.as_ref().map(|m| m.posts.variance.sqrt())
    }

    /// Logits per e-fold of a post's relative views, on the scale of posts' effects of spread
    /// `post_effect_sd` (0: as the mixed fit reads them).
    pub fn views_weight(&self, post_effect_sd: f64) -> f64 {
        let Some(mixed) = &self.mixed else {
            return 0.0;
        };
        let fitted = mixed.weights[VIEWS];
        if post_effect_sd <= 0.0 {
            return fitted;
        }
        let target = post_effect_sd * post_effect_sd;
        let posts = mixed.posts.by_group.len() as f64;
        let variance = (posts * mixed.posts.variance + SPREAD_PRIOR_POSTS * target)
            / (posts + SPREAD_PRIOR_POSTS);
        fitted * post_effect_sd / variance.sqrt()
    }

    /// A vote on `post` by `voter` (on `channel`, the post's) with `relative_views` (0 where its
    /// counters are unknown) whom the model gave `estimate`, and whose earlier votes on the
    /// channel were `channel_votes` (likes, votes). Every `REFIT_EVERY` votes, the fits to redo:
    /// [`Refit::run`] them where requests do not wait (a few milliseconds), then
    /// [`Self::install`] what they give.
    #[must_use = "a refit due is to be run and installed"]
    pub fn record(&mut self, vote: Vote<'_>) -> Option<Refit> {
        let vote = HeardVote {
            estimate_logit: estimate_logit(vote.estimate) as f32,
            relative_views: vote.relative_views as f32,
            channel_logit: channel_logit(vote.channel_votes) as f32,
            liked: vote.liked,
            post: hash_of(vote.post),
            pair: hash_of((vote.voter, vote.channel)),
        };
        if self.votes.len() == VOTES_KEPT {
            self.votes.pop_front();
        }
        self.votes.push_back(vote);
        self.since_fit += 1;
        (self.since_fit >= REFIT_EVERY && self.votes.len() >= MIN_VOTES).then(|| {
            self.since_fit = 0;
            Refit {
                votes: self.votes.iter().copied().collect(),
                pooled: self.pooled,
                mixed: self.mixed.clone(),
            }
        })
    }

    /// Takes the fits of a [`Refit`] in.
    pub fn install(&mut self, fitted: Fitted) {
        self.pooled = Some(fitted.pooled);
        self.mixed = Some(fitted.mixed);
    }
}

/// The fits to redo over a copy of the votes kept, each from where the last one ended.
#[derive(Debug)]
pub struct Refit {
    votes: Vec<HeardVote>,
    pooled: Option<[f64; WEIGHTS]>,
    mixed: Option<Mixed>,
}

/// What a [`Refit`] gives.
#[derive(Debug)]
pub struct Fitted {
    pooled: [f64; WEIGHTS],
    mixed: Mixed,
}

impl Refit {
    pub fn run(self) -> Fitted {
        let pooled = newton(
            &self.votes,
            &[],
            self.pooled.unwrap_or(AS_IT_COMES),
            NEWTON_STEPS,
        );
        Fitted {
            pooled,
            mixed: Mixed::fit(&self.votes, self.mixed, pooled),
        }
    }
}

/// A group's key in the mixed fit: 64 bits, so that two posts (or pairs) of 10,000 votes share
/// one with odds of about 10⁻¹¹.
fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// A vote as the calibration reads it (see [`Calibration::record`]).
#[derive(Debug, Clone, Copy)]
pub struct Vote<'a> {
    pub estimate: f64,
    pub relative_views: f64,
    pub channel_votes: Option<(u32, u32)>,
    pub liked: bool,
    pub post: &'a str,
    pub voter: i64,
    pub channel: &'a str,
}

impl Mixed {
    /// Laplace EM over `votes`, from `last` (or from `pooled` and no intercepts): in each turn
    /// the weights by Newton with the intercepts as offsets, each intercept by one Newton step
    /// under its spread, and each spread as its intercepts' mean square under their Laplace
    /// posteriors.
    fn fit(votes: &[HeardVote], last: Option<Self>, pooled: [f64; WEIGHTS]) -> Self {
        let (mut weights, mut posts, mut pairs) = match last {
            Some(last) => (last.weights, last.posts, last.pairs),
            None => (pooled, Intercepts::start(), Intercepts::start()),
        };
        let mut post = Groups::of(votes, |v| v.post, &posts);
        let mut pair = Groups::of(votes, |v| v.pair, &pairs);
        for _ in 0..MIXED_TURNS {
            let offsets: Vec<f64> = (0..votes.len())
                .map(|i| post.offset(i) + pair.offset(i))
                .collect();
            weights = newton(votes, &offsets, weights, MIXED_WEIGHT_STEPS);
            posts.variance = post.step(votes, weights, &pair, posts.variance);
            pairs.variance = pair.step(votes, weights, &post, pairs.variance);
        }
        posts.keep(post);
        pairs.keep(pair);
        Self {
            weights,
            posts,
            pairs,
        }
    }
}

impl Intercepts {
    fn start() -> Self {
        Self {
            by_group: HashMap::new(),
            variance: MIXED_START_SD * MIXED_START_SD,
        }
    }

    /// Keeps the groups of this fit's votes (those of votes no longer kept are dropped).
    fn keep(&mut self, fitted: Groups) {
        self.by_group = fitted.keys.into_iter().zip(fitted.values).collect();
    }
}

/// The intercepts of one kind during a fit, by group index, and each vote's group.
struct Groups {
    keys: Vec<u64>,
    values: Vec<f64>,
    of_vote: Vec<usize>,
}

impl Groups {
    fn of(votes: &[HeardVote], key: fn(&HeardVote) -> u64, last: &Intercepts) -> Self {
        let mut index: HashMap<u64, usize> = HashMap::new();
        let mut keys = Vec::new();
        let of_vote = votes
            .iter()
            .map(|vote| {
                let k = key(vote);
                *index.entry(k).or_insert_with(|| {
                    keys.push(k);
                    keys.len() - 1
                })
            })
            .collect();
        let values = keys
            .iter()
            .map(|k| last.by_group.get(k).copied().unwrap_or(0.0))
            .collect();
        Self {
            keys,
            values,
            of_vote,
        }
    }

    fn offset(&self, vote: usize) -> f64 {
        self.values[self.of_vote[vote]]
    }

    /// One Newton step of each intercept under N(0, `variance`), `other`'s held; returns the
    /// variance's EM update, within `MIXED_VARIANCES`.
    fn step(
        &mut self,
        votes: &[HeardVote],
        weights: [f64; WEIGHTS],
        other: &Groups,
        variance: f64,
    ) -> f64 {
        let mut gradient: Vec<f64> = self.values.iter().map(|b| -b / variance).collect();
        let mut curvature = vec![1.0 / variance; self.values.len()];
        for (i, vote) in votes.iter().enumerate() {
            let group = self.of_vote[i];
            let rate =
                sigmoid(dense_dot(weights, vote.inputs()) + self.values[group] + other.offset(i));
            gradient[group] += vote.outcome() - rate;
            curvature[group] += rate * (1.0 - rate);
        }
        let mut square_sum = 0.0;
        for ((value, gradient), curvature) in self.values.iter_mut().zip(gradient).zip(curvature) {
            *value += gradient / curvature;
            square_sum += *value * *value + 1.0 / curvature;
        }
        (square_sum / self.values.len().max(1) as f64).clamp(MIXED_VARIANCES.0, MIXED_VARIANCES.1)
    }
}

/// The posterior mode of the weights over `votes`, each with its offset (none where `offsets`
/// is empty), by Newton's method from `start`, each step halved until the posterior gains (the
/// log likelihood is concave, but a model's estimates near 0 and 1 make its curvature vanish
/// and a full step overshoot).
fn newton(
    votes: &[HeardVote],
    offsets: &[f64],
    start: [f64; WEIGHTS],
    steps: usize,
) -> [f64; WEIGHTS] {
    let offset = |i: usize| offsets.get(i).copied().unwrap_or(0.0);
    let mut w = start;
    let mut current = log_posterior(votes, &offset, w);
    for _ in 0..steps {
        let mut gradient = [0.0; WEIGHTS];
        let mut hessian = [[0.0; WEIGHTS]; WEIGHTS];
        for (k, &(mean, precision)) in PRIORS.iter().enumerate() {
            gradient[k] = -precision * (w[k] - mean);
            hessian[k][k] = precision;
        }
        for (i, vote) in votes.iter().enumerate() {
            let x = vote.inputs();
            let rate = sigmoid(dense_dot(w, x) + offset(i));
            let residual = vote.outcome() - rate;
            let weight = rate * (1.0 - rate);
            for j in 0..WEIGHTS {
                gradient[j] += residual * x[j];
                for k in 0..WEIGHTS {
                    hessian[j][k] += weight * x[j] * x[k];
                }
            }
        }
        let Some(step) = solve(hessian.map(Vec::from).to_vec(), gradient.to_vec()) else {
            break;
        };
        let mut scale = 1.0;
        let improved = loop {
            let tried: [f64; WEIGHTS] = std::array::from_fn(|k| w[k] + scale * step[k]);
            let value = log_posterior(votes, &offset, tried);
            if value >= current {
                break Some((tried, value));
            }
            scale /= 2.0;
            if scale < 1e-6 {
                break None;
            }
        };
        let Some((tried, value)) = improved else {
            break;
        };
        let gain = value - current;
        (w, current) = (tried, value);
        if gain < 1e-9 {
            break;
        }
    }
    w
}

fn log_posterior(votes: &[HeardVote], offset: &dyn Fn(usize) -> f64, w: [f64; WEIGHTS]) -> f64 {
    let prior: f64 = PRIORS
        .iter()
        .zip(w)
        .map(|(&(mean, precision), w)| -0.5 * precision * (w - mean).powi(2))
        .sum();
    let likelihood: f64 = votes
        .iter()
        .enumerate()
        .map(|(i, vote)| {
            // log σ(±η), without overflow: −ln(1 + e^∓η).
            let eta = dense_dot(w, vote.inputs()) + offset(i);
            -softplus(-if vote.liked { eta } else { -eta })
        })
        .sum();
    prior + likelihood
}

impl HeardVote {
    fn inputs(&self) -> [f64; WEIGHTS] {
        [
            1.0,
            f64::from(self.estimate_logit),
            f64::from(self.relative_views),
            f64::from(self.channel_logit),
        ]
    }

    fn outcome(&self) -> f64 {
        f64::from(u8::from(self.liked))
    }
}

/// Two dense vectors' dot product.
pub(crate) fn dense_dot<const N: usize>(a: [f64; N], b: [f64; N]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// The logit of a person's like rate on a channel from their (likes, votes) there, each count
/// given half a vote (0 for none): what the ranker selects posts by, besides the model.
fn channel_logit(channel: Option<(u32, u32)>) -> f64 {
    let (likes, votes) = channel.unwrap_or((0, 0));
    let dislikes = votes.saturating_sub(likes);
    ((f64::from(likes) + 0.5) / (f64::from(dislikes) + 0.5)).ln()
}

/// ln(1 + e^x), exact for large x.
fn softplus(x: f64) -> f64 {
    if x > 30.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

pub(crate) fn sigmoid(logit: f64) -> f64 {
    1.0 / (1.0 + (-logit).exp())
}

/// The logit of `rate`, taken within [10⁻⁶, 1 − 10⁻⁶].
pub(crate) fn logit(rate: f64) -> f64 {
    let rate = rate.clamp(1e-6, 1.0 - 1e-6);
    (rate / (1.0 - rate)).ln()
}

/// The logit of a model's estimate, within ±`MAX_ESTIMATE_LOGIT`.
fn estimate_logit(estimate: f64) -> f64 {
    logit(estimate).clamp(-MAX_ESTIMATE_LOGIT, MAX_ESTIMATE_LOGIT)
}

/// x with a x = b; `None` if `a` is singular.
pub(crate) fn solve(a: Vec<Vec<f64>>, b: Vec<f64>) -> Option<Vec<f64>> {
    Some(Lu::of(a)?.solve(b))
}

/// A square matrix's LU factorisation with partial pivoting (P a = L U, L's unit diagonal left
/// implicit), kept to solve the one system for many right-hand sides.
#[derive(Debug)]
pub(crate) struct Lu {
    /// U on and above the diagonal, L's multipliers below it, rows in their pivoted order.
    rows: Vec<Vec<f64>>,
    /// The row swapped into place at each step of the elimination.
    pivots: Vec<usize>,
}

impl Lu {
    /// Gaussian elimination of `a`; `None` if it is singular.
    pub(crate) fn of(mut a: Vec<Vec<f64>>) -> Option<Self> {
        let n = a.len();
        let mut pivots = Vec::with_capacity(n);
        for i in 0..n {
            let pivot = (i..n).max_by(|&x, &y| a[x][i].abs().total_cmp(&a[y][i].abs()))?;
            a.swap(i, pivot);
            pivots.push(pivot);
            if a[i][i].abs() < 1e-12 {
                return None;
            }
            let (upper, lower) = a.split_at_mut(i + 1);
            let pivot_row = &upper[i];
            for row in lower {
                let factor = row[i] / pivot_row[i];
                row[i] = factor;
                for (cell, above) in row[i + 1..].iter_mut().zip(&pivot_row[i + 1..]) {
                    *cell -= factor * above;
                }
            }
        }
        Some(Self { rows: a, pivots })
    }

    /// x with a x = `b`.
    pub(crate) fn solve(&self, mut b: Vec<f64>) -> Vec<f64> {
        for (i, &pivot) in self.pivots.iter().enumerate() {
            b.swap(i, pivot);
        }
        let n = b.len();
        for i in 0..n {
            let below: f64 = (0..i).map(|c| self.rows[i][c] * b[c]).sum();
            b[i] -= below;
        }
        for i in (0..n).rev() {
            let rest: f64 = (i + 1..n).map(|c| self.rows[i][c] * b[c]).sum();
            b[i] = (b[i] - rest) / self.rows[i][i];
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Normal};

    #[test]
    fn solves_a_small_system_and_refuses_a_singular_one() {
        let x = solve(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![3.0, 5.0]).unwrap();
        assert!(
            (x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12,
            "{x:?}"
        );
        // Pivoting: a zero where the first pivot would be.
        let x = solve(vec![vec![0.0, 1.0], vec![2.0, 0.0]], vec![3.0, 4.0]).unwrap();
        assert!(
            (x[0] - 2.0).abs() < 1e-12 && (x[1] - 3.0).abs() < 1e-12,
            "{x:?}"
        );
        assert!(solve(vec![vec![1.0, 2.0], vec![2.0, 4.0]], vec![1.0, 2.0]).is_none());
    }

    #[test]
    fn one_factorisation_solves_the_system_for_each_right_hand_side() {
        let mut rng = StdRng::seed_from_u64(7);
        let n = 6;
        let a: Vec<Vec<f64>> = (0..n)
            .map(|_| (0..n).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let lu = Lu::of(a.clone()).unwrap();
        for _ in 0..3 {
            let b: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let x = lu.solve(b.clone());
            for (row, b) in a.iter().zip(&b) {
                let ax: f64 = row.iter().zip(&x).map(|(a, x)| a * x).sum();
                assert!((ax - b).abs() < 1e-9, "{ax} against {b}");
            }
        }
    }

    /// Records `vote`, running at once the refit it makes due.
    fn hear(calibration: &mut Calibration, vote: Vote<'_>) {
        if let Some(refit) = calibration.record(vote) {
            calibration.install(refit.run());
        }
    }

    /// A vote by `voter` on post `post` (channel "a").
    fn vote(
        estimate: f64,
        relative_views: f64,
        channel_votes: Option<(u32, u32)>,
        liked: bool,
        post: &str,
        voter: i64,
    ) -> Vote<'_> {
        Vote {
            estimate,
            relative_views,
            channel_votes,
            liked,
            post,
            voter,
            channel: "a",
        }
    }

    /// `votes` votes, each by its own person on its own post, whose like rate is σ(`intercept`
    /// + `scale` · the estimate's logit + `views` · relative views).
    fn heard(intercept: f64, scale: f64, views: f64, votes: usize, seed: u64) -> Calibration {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut calibration = Calibration::default();
        for i in 0..votes {
            let estimate: f64 = rng.random_range(0.02..0.98);
            let relative: f64 = rng.random_range(-1.5..1.5);
            let rate = sigmoid(intercept + scale * logit(estimate) + views * relative);
            let liked = rng.random::<f64>() < rate;
            let post = format!("a/{i}");
            hear(
                &mut calibration,
                vote(estimate, relative, None, liked, &post, i as i64),
            );
        }
        calibration
    }

    #[test]
    fn overconfident_estimates_are_mapped_to_the_like_rates_the_votes_bear_out() {
        let calibration = heard(-0.3, 0.2, 0.6, VOTES_KEPT, 1);
        let [intercept, scale, views, _] = calibration.weights();
        assert!((intercept + 0.3).abs() < 0.1, "{intercept}");
        assert!((scale - 0.2).abs() < 0.05, "{scale}");
        assert!((views - 0.6).abs() < 0.1, "{views}");
        // An estimate of 0.98 on a post read as much as its channel's others: liked about
        // σ(-0.3 + 0.2 · 3.9) = 0.62 of the time, not 0.98.
        let rate = calibration.apply(0.98);
        assert!((rate - 0.62).abs() < 0.05, "{rate}");
        // Read e times more than its channel's others, the same post is worth 0.6 logits more.
        assert_eq!(calibration.views_weight(0.0), views);
    }

    #[test]
    fn estimates_come_as_they_are_until_a_hundred_votes_then_follow_the_newest_votes() {
        let few = heard(-1.0, 0.2, 0.6, MIN_VOTES - 1, 2);
        assert_eq!(few.weights(), [0.0, 1.0, 0.0, 0.0]);
        assert_eq!((few.apply(0.9), few.views_weight(0.8)), (0.9, 0.0));
        assert_eq!(few.posts_sd(), None);
        // Well calibrated, views saying nothing: the fit says so.
        let mut calibration = heard(0.0, 1.0, 0.0, VOTES_KEPT, 3);
        let [_, scale, views, _] = calibration.weights();
        assert!(
            (scale - 1.0).abs() < 0.1 && views.abs() < 0.1,
            "{scale} {views}"
        );
        // Then the model grows overconfident: the old votes leave as the new ones come.
        let mut rng = StdRng::seed_from_u64(4);
        for i in 0..VOTES_KEPT {
            let estimate: f64 = rng.random_range(0.02..0.98);
            let rate = sigmoid(0.3 * logit(estimate));
            let liked = rng.random::<f64>() < rate;
            let post = format!("b/{i}");
            hear(
                &mut calibration,
                vote(estimate, 0.0, None, liked, &post, i as i64),
            );
        }
        assert_eq!(calibration.votes.len(), VOTES_KEPT);
        let [_, scale, ..] = calibration.weights();
        assert!((scale - 0.3).abs() < 0.05, "{scale}");
        // Only the kept votes' posts are held.
        let mixed = calibration.mixed.as_ref().unwrap();
        assert_eq!(mixed.posts.by_group.len(), VOTES_KEPT);
    }

    #[test]
    fn views_are_weighed_with_the_voters_channel_votes_held_fixed() {
        // People like a post at σ(0.8 · its relative views + 0.5 · their channel votes' logit);
        // the model says nothing (0.5 for everyone). The ranker sends a post read little only
        // to people who liked its channel, so among the votes heard, views and channel votes
        // go against each other: read alone, views would seem worth less than they are.
        let mut rng = StdRng::seed_from_u64(5);
        let mut calibration = Calibration::default();
        let mut i = 0;
        while calibration.votes.len() < VOTES_KEPT {
            let channel = Some((rng.random_range(0..=4), 4));
            let relative: f64 = rng.random_range(-1.5..1.5);
            if channel_logit(channel) + relative < 0.5 {
                continue;
            }
            let rate = sigmoid(0.8 * relative + 0.5 * channel_logit(channel));
            let liked = rng.random::<f64>() < rate;
            let post = format!("a/{i}");
            hear(
                &mut calibration,
                vote(0.5, relative, channel, liked, &post, i),
            );
            i += 1;
        }
        let [_, _, views, channel] = calibration.weights();
        assert!((views - 0.8).abs() < 0.1, "{views}");
        assert!((channel - 0.5).abs() < 0.1, "{channel}");
        // What the ranker applies: views; the channel votes enter through the person's offset.
        assert_eq!(calibration.views_weight(0.0), views);
        assert_eq!(calibration.apply(0.5), sigmoid(calibration.weights()[0]));
    }

    #[test]
    fn views_are_read_with_each_posts_appeal_held_not_against_the_votes_its_effect_sent() {
        // Posts liked at σ(0.8 · relative views + their unseen appeal, N(0, 1)); the model says
        // nothing. Every post gets a first vote; later voters see a post read more than its
        // channel's others, and one read less only if its first voter liked it, as a post's
        // effect would send them. Among those later votes a post read little is one that
        // pleased already: read over every vote without each post's appeal, views would seem
        // worth less than they are.
        let mut rng = StdRng::seed_from_u64(6);
        let appeal = Normal::new(0.0, 1.0).unwrap();
        let mut calibration = Calibration::default();
        let mut voter = 0;
        for p in 0..1_400 {
            let post = format!("a/{p}");
            let relative: f64 = rng.random_range(-1.5..1.5);
            let rate = sigmoid(0.8 * relative + appeal.sample(&mut rng));
            let first_liked = rng.random::<f64>() < rate;
            voter += 1;
            hear(
                &mut calibration,
                vote(0.5, relative, None, first_liked, &post, voter),
            );
            if first_liked || relative > 0.0 {
                for _ in 0..6 {
                    voter += 1;
                    let liked = rng.random::<f64>() < rate;
                    hear(
                        &mut calibration,
                        vote(0.5, relative, None, liked, &post, voter),
                    );
                }
            }
        }
        // The mixed fit reads views and posts' spread alike a little flat (its one-step
        // Laplace intercepts: about 0.62 and 0.78); on the posts' true scale views come out at
        // what they are, where the pooled fit reads about 0.47.
        let pooled = calibration.pooled.unwrap()[VIEWS];
        let applied = calibration.views_weight(1.0);
        assert!((applied - 0.8).abs() < 0.1, "{applied}");
        assert!(pooled < applied - 0.25, "{pooled} {applied}");
    }

    #[test]
    fn views_are_applied_on_the_scale_of_posts_effects() {
        // Posts' appeal: 0.8 · relative views + their own, N(0, 0.8²), the same for everyone;
        // each vote also carries the voter's taste for the post, N(0, 1.5²), which no fit
        // holds. Averaged over the tastes, both read flatter (0.8 / √(1 + π/8 · 1.5²) ≈ 0.6 of
        // what they are for each person), as the ranker's posts' effects, learned against
        // each person's expectation, do not: views are taken to their scale.
        let mut rng = StdRng::seed_from_u64(7);
        let own = Normal::new(0.0, 0.8).unwrap();
        let taste = Normal::new(0.0, 1.5).unwrap();
        let mut calibration = Calibration::default();
        let mut voter = 0;
        for p in 0..1_250 {
            let post = format!("a/{p}");
            let relative: f64 = rng.random_range(-1.5..1.5);
            let appeal = 0.8 * relative + own.sample(&mut rng);
            for _ in 0..8 {
                voter += 1;
                let liked = rng.random::<f64>() < sigmoid(appeal + taste.sample(&mut rng));
                hear(
                    &mut calibration,
                    vote(0.5, relative, None, liked, &post, voter),
                );
            }
        }
        let fitted = calibration.views_weight(0.0);
        let posts_sd = calibration.posts_sd().unwrap();
        assert!(fitted < 0.7, "{fitted}");
        assert!(posts_sd < 0.7, "{posts_sd}");
        let applied = calibration.views_weight(0.8);
        assert!((applied - 0.8).abs() < 0.12, "{applied}");
        // With few posts the spread leans on the ranker's: none voted on gives the weight as
        // fitted at posts' effects' own spread.
        let mut few = calibration.clone();
        few.mixed.as_mut().unwrap().posts.by_group.clear();
        assert!((few.views_weight(0.8) - fitted).abs() < 1e-12);
    }
}
