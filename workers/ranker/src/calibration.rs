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
//! logit), which the ranker mixes in apart (the person's Beta) and so does not apply from here.
//! The ranker picks posts by those votes: a post read less than its channel's others reaches
//! mostly people who liked the channel, one read more also reaches the lukewarm. Left out of the
//! fit, the channel votes would show up as views being worth less (and the estimate more) than
//! they are.
//!
//! The views' weight is fitted apart, on each post's first vote only. After its first votes a post
//! is picked by its own effect as well (what its voters' surprise said of it, which the fit does
//! not hold): a post read little reaches later voters only if its first ones liked it, so among
//! later votes views and a post's unseen appeal go against each other, and views read as worth a
//! fraction of what they are (0.1–0.25 logits per e-fold over every vote at the demo's 300
//! people, where the generated world's views are worth 0.78). A post's first vote was picked by
//! what the fit holds (the estimate, the views, the voter's channel votes), so the weight fitted
//! on first votes is not pulled down; it rests on one vote a post, and moves more.

use std::collections::VecDeque;

/// Votes kept for the fit, the newest: a few thousand pin four weights down, and they take
/// little memory (16 bytes each).
const VOTES_KEPT: usize = 10_000;
/// The fit is redone after this many votes (it goes over every vote kept, about a millisecond).
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
/// The views' weight's place among the weights: the one fitted on posts' first votes.
const VIEWS: usize = 2;

#[derive(Debug, Clone, Copy)]
struct HeardVote {
    estimate_logit: f32,
    relative_views: f32,
    channel_logit: f32,
    liked: bool,
}

/// The calibration in use: the estimate's worth fitted to every vote heard, the views' to the
/// posts' first votes.
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    every_vote: Fit,
    first_votes: Fit,
}

/// One fit of the weights and the votes it is fitted to.
#[derive(Debug, Clone, Default)]
struct Fit {
    votes: VecDeque<HeardVote>,
    since_fit: usize,
    /// The weights of [`WEIGHTS`]; none before the first fit (estimates are taken as they
    /// come).
    fitted: Option<[f64; WEIGHTS]>,
}

/// The weights that take an estimate as it comes, the fit's priors' means.
const AS_IT_COMES: [f64; WEIGHTS] = [PRIORS[0].0, PRIORS[1].0, PRIORS[2].0, PRIORS[3].0];

impl Calibration {
    /// The like rate the votes support for a model estimate of `estimate`, views aside.
    pub fn apply(&self, estimate: f64) -> f64 {
        let Some([intercept, scale, ..]) = self.every_vote.fitted else {
            return estimate;
        };
        sigmoid(intercept + scale * estimate_logit(estimate))
    }

    /// The weights in use, in the order of [`WEIGHT_NAMES`]: the views' from the posts' first
    /// votes, the others from every vote.
    pub fn weights(&self) -> [f64; WEIGHTS] {
        let mut weights = self.every_vote.weights();
        weights[VIEWS] = self.views_weight();
        weights
    }

    /// Logits per e-fold of a post's relative views.
    pub fn views_weight(&self) -> f64 {
        self.first_votes.weights()[VIEWS]
    }

    /// A vote on a post with `relative_views` (0 where its counters are unknown) by someone the
    /// model gave `estimate`, whose earlier votes on the post's channel were `channel` (likes,
    /// votes); `first_on_post` where no one had voted on the post before.
    pub fn record(
        &mut self,
        estimate: f64,
        relative_views: f64,
        channel: Option<(u32, u32)>,
        liked: bool,
        first_on_post: bool,
    ) {
        let vote = HeardVote {
            estimate_logit: estimate_logit(estimate) as f32,
            relative_views: relative_views as f32,
            channel_logit: channel_logit(channel) as f32,
            liked,
        };
        self.every_vote.record(vote);
        if first_on_post {
            self.first_votes.record(vote);
        }
    }
}

impl Fit {
    fn weights(&self) -> [f64; WEIGHTS] {
        self.fitted.unwrap_or(AS_IT_COMES)
    }

    /// Keeps `vote` (the oldest goes beyond `VOTES_KEPT`); refits every `REFIT_EVERY` votes.
    fn record(&mut self, vote: HeardVote) {
        if self.votes.len() == VOTES_KEPT {
            self.votes.pop_front();
        }
        self.votes.push_back(vote);
        self.since_fit += 1;
        if self.since_fit >= REFIT_EVERY && self.votes.len() >= MIN_VOTES {
            self.since_fit = 0;
            self.fit();
        }
    }

    /// The posterior mode of the weights by Newton's method from the last fit, each step
    /// halved until the posterior gains (the log likelihood is concave, but a model's estimates
    /// near 0 and 1 make its curvature vanish and a full step overshoot).
    fn fit(&mut self) {
        let mut w = self.weights();
        let mut current = self.log_posterior(w);
        for _ in 0..NEWTON_STEPS {
            let mut gradient = [0.0; WEIGHTS];
            let mut hessian = [[0.0; WEIGHTS]; WEIGHTS];
            for (k, &(mean, precision)) in PRIORS.iter().enumerate() {
                gradient[k] = -precision * (w[k] - mean);
                hessian[k][k] = precision;
            }
            for vote in &self.votes {
                let x = vote.inputs();
                let rate = sigmoid(dense_dot(w, x));
                let residual = f64::from(u8::from(vote.liked)) - rate;
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
                let value = self.log_posterior(tried);
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
        self.fitted = Some(w);
    }

    fn log_posterior(&self, w: [f64; WEIGHTS]) -> f64 {
        let prior: f64 = PRIORS
            .iter()
            .zip(w)
            .map(|(&(mean, precision), w)| -0.5 * precision * (w - mean).powi(2))
            .sum();
        let likelihood: f64 = self
            .votes
            .iter()
            .map(|vote| {
                // log σ(±η), without overflow: −ln(1 + e^∓η).
                let signed = if vote.liked { 1.0 } else { -1.0 } * dense_dot(w, vote.inputs());
                -softplus(-signed)
            })
            .sum();
        prior + likelihood
    }
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

    /// `votes` votes whose like rate is σ(`intercept` + `scale` · the estimate's logit +
    /// `views` · relative views).
    fn heard(intercept: f64, scale: f64, views: f64, votes: usize, seed: u64) -> Calibration {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut calibration = Calibration::default();
        for _ in 0..votes {
            let estimate: f64 = rng.random_range(0.02..0.98);
            let relative: f64 = rng.random_range(-1.5..1.5);
            let rate = sigmoid(intercept + scale * logit(estimate) + views * relative);
            calibration.record(estimate, relative, None, rng.random::<f64>() < rate, true);
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
        assert_eq!(calibration.views_weight(), views);
    }

    #[test]
    fn estimates_come_as_they_are_until_a_hundred_votes_then_follow_the_newest_votes() {
        let few = heard(-1.0, 0.2, 0.6, MIN_VOTES - 1, 2);
        assert_eq!(few.weights(), [0.0, 1.0, 0.0, 0.0]);
        assert_eq!((few.apply(0.9), few.views_weight()), (0.9, 0.0));
        // Well calibrated, views saying nothing: the fit says so.
        let mut calibration = heard(0.0, 1.0, 0.0, VOTES_KEPT, 3);
        let [_, scale, views, _] = calibration.weights();
        assert!(
            (scale - 1.0).abs() < 0.1 && views.abs() < 0.1,
            "{scale} {views}"
        );
        // Then the model grows overconfident: the old votes leave as the new ones come.
        let mut rng = StdRng::seed_from_u64(4);
        for _ in 0..VOTES_KEPT {
            let estimate: f64 = rng.random_range(0.02..0.98);
            let rate = sigmoid(0.3 * logit(estimate));
            calibration.record(estimate, 0.0, None, rng.random::<f64>() < rate, false);
        }
        assert_eq!(calibration.every_vote.votes.len(), VOTES_KEPT);
        let [_, scale, ..] = calibration.weights();
        assert!((scale - 0.3).abs() < 0.05, "{scale}");
    }

    #[test]
    fn views_are_weighed_with_the_voters_channel_votes_held_fixed() {
        // People like a post at σ(0.8 · its relative views + 0.5 · their channel votes' logit);
        // the model says nothing (0.5 for everyone). The ranker sends a post read little only
        // to people who liked its channel, so among the votes heard, views and channel votes
        // go against each other: read alone, views would seem worth less than they are.
        let mut rng = StdRng::seed_from_u64(5);
        let mut calibration = Calibration::default();
        while calibration.every_vote.votes.len() < VOTES_KEPT {
            let channel = Some((rng.random_range(0..=4), 4));
            let relative: f64 = rng.random_range(-1.5..1.5);
            if channel_logit(channel) + relative < 0.5 {
                continue;
            }
            let rate = sigmoid(0.8 * relative + 0.5 * channel_logit(channel));
            calibration.record(0.5, relative, channel, rng.random::<f64>() < rate, true);
        }
        let [_, _, views, channel] = calibration.weights();
        assert!((views - 0.8).abs() < 0.1, "{views}");
        assert!((channel - 0.5).abs() < 0.1, "{channel}");
        // What the ranker applies: views; the channel votes enter through the person's Beta.
        assert_eq!(calibration.views_weight(), views);
        assert_eq!(calibration.apply(0.5), sigmoid(calibration.weights()[0]));
    }

    #[test]
    fn views_are_weighed_on_posts_first_votes_not_on_the_votes_their_effect_sent_them() {
        // Posts liked at σ(0.8 · relative views + their unseen appeal, N(0, 1)); the model says
        // nothing. Every post gets a first vote; later voters see a post read more than its
        // channel's others, and one read less only if its first voter liked it, as a post's
        // effect would send them. Among those later votes a post read little is one that
        // pleased already: read over every vote, views would seem worth less than they are.
        let mut rng = StdRng::seed_from_u64(6);
        let appeal = Normal::new(0.0, 1.0).unwrap();
        let mut calibration = Calibration::default();
        for _ in 0..1_500 {
            let relative: f64 = rng.random_range(-1.5..1.5);
            let rate = sigmoid(0.8 * relative + appeal.sample(&mut rng));
            let first_liked = rng.random::<f64>() < rate;
            calibration.record(0.5, relative, None, first_liked, true);
            if first_liked || relative > 0.0 {
                for _ in 0..6 {
                    calibration.record(0.5, relative, None, rng.random::<f64>() < rate, false);
                }
            }
        }
        let over_every_vote = calibration.every_vote.weights()[VIEWS];
        let views = calibration.views_weight();
        // Over the posts' appeal, views are worth 0.8 / √(1 + π/8 · 1) ≈ 0.68 to a fit that
        // does not know it.
        assert!((views - 0.68).abs() < 0.1, "{views}");
        assert!(over_every_vote < views - 0.15, "{over_every_vote} {views}");
        assert_eq!(calibration.weights()[VIEWS], views);
    }
}
