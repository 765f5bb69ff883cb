//! The ranker's decision for one request, apart from its I/O: which candidates a person may get,
//! in which order. Scores come from the model when it knows the person, else from smoothed
//! popularity (cold start); the policy (the person's posterior like rate per channel, shifted by
//! the post's views and own effect and by the person's taste for its kind ([`Taste`]), its mean or
//! a Thompson draw from it, or Gaussian noise) and a share of slots for untried channels explore.

use crate::calibration::{logit, sigmoid};
use crate::pool::{Expectation, Pool, PostEffectPrior};
pub use crate::taste::TasteSpread;
use crate::taste::{TastePosterior, TasteVote};
use oleg_messages::{ExplorationPolicy, UserId};
use oleg_scorer::{Candidate, ScoringModel};
use oleg_store::PersonHistory;
use rand::Rng;
use rand_distr::{Beta, Distribution, StandardNormal};

/// How a reply explores beyond the best scores.
pub struct Exploration<'a> {
    pub policy: ExplorationPolicy,
    /// Noise: the standard deviation of the Gaussian noise added to every score.
    pub noise: f64,
    /// Posterior mean and Thompson, for a person the model does not know: how many of their
    /// votes everyone's like rate (popularity) counts for beside their votes on its channel.
    pub prior_votes: f64,
    /// Posterior mean and Thompson, for a person the model knows: how far (a standard deviation
    /// in logits) their liking for a channel is expected to depart from the model's estimates
    /// ([`ChannelOffset`]).
    pub channel_sd: f64,
    /// Posterior mean and Thompson: the spread (in logits) of posts' effects, by which each
    /// post's logit is shifted as its voters' surprise supports ([`Pool::post_effect`]); 0: none.
    pub post_effect_sd: f64,
    /// Posterior mean and Thompson: the spread (in logits, per content feature) of a person's
    /// taste for kinds of post beyond what is expected of them ([`Taste`]); 0 for both: none.
    pub taste: TasteSpread,
    /// Posterior mean: until the person has cast this many votes (those held: in the candidate
    /// window), Thompson draws order their posts instead once the model knows them (see
    /// [`Exploration::policy`]).
    pub explore_votes: usize,
    /// Those draws come from the posterior with its counts multiplied by this (1: the posterior
    /// itself, as under the `thompson` policy).
    pub explore_concentration: f64,
    /// Thompson draws draw the person's taste over kinds of post too, once for all posts (see
    /// [`TastePosterior::departure`]); else they use its mean.
    pub explore_taste: bool,
    /// Leading slots given to the best posts of channels the person has not tried.
    pub fresh_slots: usize,
    /// What the person has seen (their channels count as tried) and liked per channel.
    pub history: &'a PersonHistory,
}

impl Exploration<'_> {
    /// The policy that orders this person's posts, and the concentration of its draws: under
    /// `posterior_mean`, once the model knows the person (`known`), Thompson draws from a
    /// narrowed posterior until they have cast `explore_votes` votes. A greedy pick learns only
    /// of the channels and kinds it already favours for a person; their first votes, spread
    /// wider, steer every later pick. Before the model knows them their posts go by everyone's
    /// like rate, and draws around it would spread those votes by chance, not around a guess
    /// about the person.
    fn policy(&self, known: bool) -> (ExplorationPolicy, f64) {
        match self.policy {
            ExplorationPolicy::PosteriorMean
                if known
                    && self.history.votes().take(self.explore_votes).count()
                        < self.explore_votes =>
            {
                (ExplorationPolicy::Thompson, self.explore_concentration)
            }
            policy => (policy, 1.0),
        }
    }
}

/// A candidate in the order it should be offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    /// Index into the pool's posts.
    pub index: usize,
    pub score: f64,
    /// Placed by channel exploration rather than by score alone.
    pub explored: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The best candidates, best first, as many as asked for.
    pub picks: Vec<Pick>,
    /// How many posts were candidates (not excluded).
    pub candidates: usize,
    /// Scored by popularity: the model does not know the person (or there is no model).
    pub cold_start: bool,
    /// The policy that ordered the picks not marked `explored`.
    pub policy: ExplorationPolicy,
}

/// How many candidates the Thompson policy draws for: those with the highest posterior mean
/// like rate. A post further down would have to draw above every one of theirs to be picked,
/// which its Beta almost never allows; and the draws are most of a large request's time.
pub const THOMPSON_DRAWS: usize = 1_000;

/// A person's votes the taste is fitted to, the newest: its cost grows with their cube.
const TASTE_VOTES: usize = 64;

/// How many candidates the person's taste is applied to: those with the highest posterior mean
/// without it. It costs a look-up per feature of each (some forty), most of a large request's
/// time if applied to all; a post further down would have to be moved past a thousand others
/// to be picked.
const TASTE_CANDIDATES: usize = 1_000;

/// The `limit` best of the pool's posts that `excluded` (one flag per pool post, see
/// [`Pool::excluded`]) lets through for `user`, best first.
pub fn rank(
    pool: &Pool,
    excluded: &[bool],
    scorer: Option<&ScoringModel>,
    user: UserId,
    exploration: &Exploration,
    limit: usize,
    rng: &mut impl Rng,
) -> Ranked {
    let candidates: Vec<usize> = (0..pool.posts.len()).filter(|&i| !excluded[i]).collect();
    let user_row = scorer.and_then(|s| s.user_row(user.get()).map(|row| (s, row)));
    let mut scores: Vec<f64> = match user_row {
        Some((scorer, row)) => {
            let refs: Vec<Candidate> = candidates
                .iter()
                .map(|&i| pool.candidate(i, scorer))
                .collect();
            let mut out = Vec::with_capacity(refs.len());
            scorer.score(row, &refs, &mut out);
            out.into_iter().map(f64::from).collect()
        }
        None => candidates.iter().map(|&i| pool.popularity(i)).collect(),
    };
    // What orders the candidates: the score, except for Thompson posts left undrawn, which go
    // after every drawn one (by their posterior mean).
    let (policy, concentration) = exploration.policy(user_row.is_some());
    let mut keys = match policy {
        ExplorationPolicy::Noise => {
            if exploration.noise > 0.0 {
                for score in scores.iter_mut() {
                    *score += exploration.noise * rng.sample::<f64, _>(StandardNormal);
                }
            }
            scores.clone()
        }
        ExplorationPolicy::Thompson | ExplorationPolicy::PosteriorMean => {
            // The person's tallies by channel slot: a candidate's is then an index, not a lookup.
            let mut tallies: Vec<Option<(u32, u32)>> = vec![None; pool.channel_slots()];
            for (channel, tally) in &exploration.history.channel_votes {
                if let Some(slot) = pool.channel_slot(channel) {
                    tallies[slot] = Some(*tally);
                }
            }
            // Posts' effects from their voters' surprise; none under popularity (no model),
            // which counts the posts' likes already.
            let effects = user_row.and_then(|_| pool.post_effect_prior(exploration.post_effect_sd));
            // The person's channel offsets, from their votes read against the model; none
            // under popularity.
            let channels = user_row
                .map(|(scorer, row)| PersonChannels::fit(pool, scorer, row, exploration, &tallies));
            // The person's taste over kinds of post, beyond what the model and their channel
            // votes say; none under popularity (no model to be beyond), nor without votes on
            // candidates (it would shift nothing).
            let taste = channels
                .as_ref()
                .filter(|_| !exploration.taste.is_none())
                .map(|channels| channels.taste_votes(pool, exploration, effects))
                .filter(|votes| !votes.is_empty())
                .map(|votes| TastePosterior::fit(pool, &votes, exploration.taste));
            let mut posteriors: Vec<Posterior> = scores
                .iter()
                .zip(&candidates)
                .map(|(&score, &i)| {
                    let slot = pool.channel_slot_of(i);
                    let belief = match &channels {
                        Some(channels) => Belief::Model {
                            expected: expected_logit(pool, score),
                            channel: channels.offsets[slot],
                        },
                        None => {
                            Belief::Popularity(beta(score, tallies[slot], exploration.prior_votes))
                        }
                    };
                    Posterior::of(pool, i, belief, effects)
                })
                .collect();
            for (score, posterior) in scores.iter_mut().zip(&posteriors) {
                *score = posterior.mean();
            }
            if let Some(taste) = &taste {
                for (_, i) in top(&scores, TASTE_CANDIDATES) {
                    posteriors[i].shift += taste.mean().shift(pool, candidates[i]);
                    scores[i] = posteriors[i].mean();
                }
            }
            if policy == ExplorationPolicy::PosteriorMean {
                scores.clone()
            } else {
                let mut keys: Vec<f64> = scores.iter().map(|mean| mean - 2.0).collect();
                let departure = taste
                    .filter(|_| exploration.explore_taste)
                    .map(|taste| taste.departure(concentration, rng));
                // The draws' order does not matter: every drawn key is set before any is compared.
                for (_, i) in top(&keys, THOMPSON_DRAWS) {
                    if let Some(departure) = &departure {
                        posteriors[i].shift += departure.shift(pool, candidates[i]);
                    }
                    scores[i] = posteriors[i].draw(concentration, rng);
                    keys[i] = scores[i];
                }
                keys
            }
        }
    };
    let fresh = fresh_picks(pool, &candidates, &keys, exploration, limit);
    // Fresh picks go first; the rest by their keys (the fresh ones last, then left out).
    for &i in &fresh {
        keys[i] = f64::NEG_INFINITY;
    }
    let rest = limit.saturating_sub(fresh.len());
    let order: Vec<usize> = best(&keys, rest.saturating_add(fresh.len()))
        .into_iter()
        .filter(|i| !fresh.contains(i))
        .take(rest)
        .collect();
    let pick = |i: usize, explored| Pick {
        index: candidates[i],
        score: scores[i],
        explored,
    };
    let picks = fresh
        .iter()
        .map(|&i| pick(i, true))
        .chain(order.into_iter().map(|i| pick(i, false)))
        .collect();
    Ranked {
        picks,
        candidates: candidates.len(),
        cold_start: user_row.is_none(),
        policy,
    }
}

/// A vote of the person's on a post still in the pool, with the logit the model expected of it
/// (its calibrated estimate).
struct HeldVote {
    index: usize,
    liked: bool,
    voted_at_ms: i64,
    expected: f64,
}

/// The person's votes on posts still in the pool, each scored by the model.
fn held_votes(
    pool: &Pool,
    scorer: &ScoringModel,
    row: usize,
    history: &PersonHistory,
) -> Vec<HeldVote> {
    let voted: Vec<(usize, bool, i64)> = history
        .votes()
        .filter_map(|(key, liked, at)| Some((pool.position(key)?, liked, at)))
        .collect();
    let refs: Vec<Candidate> = voted
        .iter()
        .map(|&(i, ..)| pool.candidate(i, scorer))
        .collect();
    let mut estimates = Vec::with_capacity(refs.len());
    scorer.score(row, &refs, &mut estimates);
    voted
        .into_iter()
        .zip(estimates)
        .map(|((index, liked, voted_at_ms), estimate)| HeldVote {
            index,
            liked,
            voted_at_ms,
            expected: expected_logit(pool, f64::from(estimate)),
        })
        .collect()
}

/// One of the person's votes on a channel: the held vote it is (`None`: a vote on a post the
/// pool no longer or not yet holds) and what it says, `(expected logit, liked)`.
struct ChannelVote {
    held: Option<usize>,
    read: (f64, bool),
}

/// A person's votes by channel and the channel offsets fitted to them.
struct PersonChannels {
    held: Vec<HeldVote>,
    /// By channel slot.
    votes: Vec<Vec<ChannelVote>>,
    /// By channel slot.
    offsets: Vec<ChannelOffset>,
}

impl PersonChannels {
    /// From the person's votes (held ones scored by the model at `row`) and their `tallies` by
    /// channel slot. A tally counts votes on posts the pool does not hold too; those are read at
    /// the mean expectation of the person's held votes on the channel (else of all their held
    /// votes; else 0 logits, an even chance).
    fn fit(
        pool: &Pool,
        scorer: &ScoringModel,
        row: usize,
        exploration: &Exploration,
        tallies: &[Option<(u32, u32)>],
    ) -> Self {
        let held = held_votes(pool, scorer, row, exploration.history);
        let mut votes: Vec<Vec<ChannelVote>> =
            (0..pool.channel_slots()).map(|_| Vec::new()).collect();
        for (k, vote) in held.iter().enumerate() {
            votes[pool.channel_slot_of(vote.index)].push(ChannelVote {
                held: Some(k),
                read: (vote.expected, vote.liked),
            });
        }
        let overall = mean(held.iter().map(|v| v.expected)).unwrap_or(0.0);
        for (channel, tally) in votes.iter_mut().zip(tallies) {
            let Some((likes, total)) = *tally else {
                continue;
            };
            let held_likes = channel.iter().filter(|v| v.read.1).count() as u32;
            let unheld = total.saturating_sub(channel.len() as u32);
            let unheld_likes = likes.saturating_sub(held_likes);
            let at = mean(channel.iter().map(|v| v.read.0)).unwrap_or(overall);
            channel.extend((0..unheld).map(|k| ChannelVote {
                held: None,
                read: (at, k < unheld_likes),
            }));
        }
        let offsets = votes
            .iter()
            .map(|channel| {
                ChannelOffset::fit(channel.iter().map(|v| v.read), exploration.channel_sd)
            })
            .collect();
        Self {
            held,
            votes,
            offsets,
        }
    }

    /// The person's newest held votes (at most [`TASTE_VOTES`]), each with the like rate the
    /// ranker expects of them without it: their channel offset fitted to their other votes on it.
    fn taste_votes(
        &self,
        pool: &Pool,
        exploration: &Exploration,
        effects: Option<PostEffectPrior>,
    ) -> Vec<TasteVote> {
        let mut newest: Vec<usize> = (0..self.held.len()).collect();
        if newest.len() > TASTE_VOTES {
            newest.select_nth_unstable_by_key(TASTE_VOTES - 1, |&k| {
                std::cmp::Reverse(self.held[k].voted_at_ms)
            });
            newest.truncate(TASTE_VOTES);
        }
        newest
            .into_iter()
            .map(|k| {
                let vote = &self.held[k];
                let slot = pool.channel_slot_of(vote.index);
                let others = self.votes[slot]
                    .iter()
                    .filter(|v| v.held != Some(k))
                    .map(|v| v.read);
                let belief = Belief::Model {
                    expected: vote.expected,
                    channel: ChannelOffset::fit_from(
                        others,
                        exploration.channel_sd,
                        self.offsets[slot].mean,
                    ),
                };
                TasteVote {
                    index: vote.index,
                    liked: vote.liked,
                    rate: Posterior::of(pool, vote.index, belief, effects).mean(),
                }
            })
            .collect()
    }
}

/// The mean of `values`; `None` for none.
fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0_u32), |(sum, n), value| (sum + value, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

/// The best (by `keys`) of the candidates from channels the person has not tried (seen no post
/// of), for the reply's first `fresh_slots` places.
fn fresh_picks(
    pool: &Pool,
    candidates: &[usize],
    keys: &[f64],
    exploration: &Exploration,
    limit: usize,
) -> Vec<usize> {
    let slots = exploration.fresh_slots.min(limit);
    if slots == 0 {
        return Vec::new();
    }
    let mut tried = vec![false; pool.channel_slots()];
    for key in &exploration.history.seen {
        if let Some(slot) = pool.channel_slot(key.channel()) {
            tried[slot] = true;
        }
    }
    let untried: Vec<usize> = (0..candidates.len())
        .filter(|&i| !tried[pool.channel_slot_of(candidates[i])])
        .collect();
    let untried_keys: Vec<f64> = untried.iter().map(|&i| keys[i]).collect();
    best(&untried_keys, slots)
        .into_iter()
        .map(|j| untried[j])
        .collect()
}

/// The indices of the `n` largest of `keys`, largest first (a selection, then a sort of those
/// only: a request wants a few of thousands).
fn best(keys: &[f64], n: usize) -> Vec<usize> {
    let mut chosen = top(keys, n);
    chosen.sort_unstable_by(by_key);
    chosen.into_iter().map(|(_, i)| i).collect()
}

/// The `n` largest of `keys` with their indices, in no particular order.
fn top(keys: &[f64], n: usize) -> Vec<(f64, usize)> {
    // Each key beside its index: the selection then compares neighbours in memory, not keys
    // fetched through indices from all over the candidates.
    let mut order: Vec<(f64, usize)> = keys.iter().copied().zip(0..).collect();
    if n < order.len() {
        if n == 0 {
            return Vec::new();
        }
        order.select_nth_unstable_by(n - 1, by_key);
        order.truncate(n);
    }
    order
}

/// Larger keys first; ties keep the pool's order.
fn by_key(a: &(f64, usize), b: &(f64, usize)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// What a voter, `user`, was expected to make of the pool's post at `index`, for learning posts'
/// effects from their surprise: the model's calibrated estimate as a Beta with `channel`, their
/// (likes, votes) on its channel, shifted by the post's views, before any post effect; `None`
/// when the model does not know the person (their scores are then popularity, which counts the
/// post's own votes).
pub fn expected_like(
    pool: &Pool,
    index: usize,
    scorer: Option<&ScoringModel>,
    user: UserId,
    channel: Option<(u32, u32)>,
    prior_votes: f64,
) -> Option<Expectation> {
    let scorer = scorer?;
    let row = scorer.user_row(user.get())?;
    let mut estimate = Vec::with_capacity(1);
    scorer.score(row, &[pool.candidate(index, scorer)], &mut estimate);
    let estimate = f64::from(estimate[0]);
    // The voter's channel as a Beta of their tally: this runs for every vote heard, where
    // reading each of the voter's own votes against the model (as their channel offset does)
    // would score their history each time; measured at its optimum as it is (docs/BENCHMARKS.md,
    // "posts' voters read against their taste").
    let channel = posterior_mean(beta(pool.calibrated(estimate), channel, prior_votes));
    Some(Expectation {
        estimate,
        posterior: shifted(channel, pool.views_shift(index)),
    })
}

/// The logit of the like rate the model's `estimate` stands for, once calibrated, kept within
/// the rates 0.02 and 0.98 (as a Beta's are, [`beta`]), which no few votes could move past.
fn expected_logit(pool: &Pool, estimate: f64) -> f64 {
    pool.calibrated_logit(estimate)
        .clamp(-EXPECTED_LOGIT_BOUND, EXPECTED_LOGIT_BOUND)
}

/// logit(0.98) = ln 49.
const EXPECTED_LOGIT_BOUND: f64 = 3.891_820_298_110_626_5;

/// What the ranker believes of a person's liking for a channel beyond the model's estimates: an
/// offset to the logit of each of its posts, normal with this mean and variance. A vote on a
/// post the model expected them to like says less than one on a post it expected them not to.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ChannelOffset {
    mean: f64,
    variance: f64,
}

impl ChannelOffset {
    /// The posterior's Laplace approximation under the prior N(0, sd²), from `votes`, each an
    /// (expected logit, liked): its mode, the variance the curvature's inverse there.
    fn fit(votes: impl Iterator<Item = (f64, bool)> + Clone, sd: f64) -> Self {
        Self::fit_from(votes, sd, 0.0)
    }

    /// [`Self::fit`], its search started at `start` (a fit to nearly the same votes reaches the
    /// mode in a step or two). The log-posterior is concave, so the mode is unique and its slope
    /// falls through it: Newton's method, kept within the bracket the slope's signs close in on
    /// (a bisection where a step would leave it; the plain step can swing ever wider when many
    /// votes agree, the curvature vanishing away from the mode). The mode lies within
    /// n · sd² of nought for n votes, where the likes' pull against the prior's ends.
    fn fit_from(votes: impl Iterator<Item = (f64, bool)> + Clone, sd: f64, start: f64) -> Self {
        let precision = 1.0 / (sd * sd);
        let reach = votes.clone().count() as f64 / precision + 1.0;
        let (mut low, mut high) = (-reach, reach);
        let mut mean = start.clamp(low, high);
        let mut curvature = precision;
        for _ in 0..OFFSET_SEARCH_STEPS {
            let mut slope = -mean * precision;
            curvature = precision;
            for (expected, liked) in votes.clone() {
                let p = sigmoid(expected + mean);
                slope += f64::from(u8::from(liked)) - p;
                curvature += p * (1.0 - p);
            }
            if slope > 0.0 {
                low = mean;
            } else if slope < 0.0 {
                high = mean;
            } else {
                break;
            }
            let newton = mean + slope / curvature;
            let next = if newton > low && newton < high {
                newton
            } else {
                (low + high) / 2.0
            };
            let step = next - mean;
            mean = next;
            if step.abs() < 1e-9 {
                break;
            }
        }
        Self {
            mean,
            variance: 1.0 / curvature,
        }
    }
}

/// Steps at most to a channel offset's mode: Newton's reach it to 1e-9 in a handful; bisections
/// halve the bracket (a thousand votes' 2,600 logits to 1e-9 in about 42).
const OFFSET_SEARCH_STEPS: usize = 80;

/// What the posterior policies believe of a person's like rate for one post.
#[derive(Debug, Clone, Copy)]
enum Belief {
    /// The model knows the person: its expectation (a logit) moved by their channel offset.
    Model {
        expected: f64,
        channel: ChannelOffset,
    },
    /// It does not: everyone's like rate (popularity) and their votes on the channel, as a
    /// Beta(α, β) (see [`beta`]).
    Popularity((f64, f64)),
}

/// A [`Belief`] and the shift of its logit that every person shares (the post's views and,
/// where asked, its own effect: none under popularity, which counts the post's votes already).
#[derive(Debug, Clone, Copy)]
struct Posterior {
    belief: Belief,
    shift: f64,
}

impl Posterior {
    /// For the pool's post at `index`.
    fn of(pool: &Pool, index: usize, belief: Belief, effects: Option<PostEffectPrior>) -> Self {
        let shift = match belief {
            Belief::Model { .. } => {
                pool.views_shift(index)
                    + effects.map_or(0.0, |prior| pool.post_effect(index, &prior))
            }
            Belief::Popularity(_) => 0.0,
        };
        Self { belief, shift }
    }

    fn mean(&self) -> f64 {
        match self.belief {
            Belief::Model { expected, channel } => sigmoid(expected + channel.mean + self.shift),
            Belief::Popularity(counts) => shifted(posterior_mean(counts), self.shift),
        }
    }

    /// A draw with the belief's spread narrowed by `concentration` (a Beta's counts multiplied
    /// by it, a channel offset's variance divided), shifted; the mean where the Beta is
    /// degenerate.
    fn draw(&self, concentration: f64, rng: &mut impl Rng) -> f64 {
        match self.belief {
            Belief::Model { expected, channel } => {
                let departure: f64 = rng.sample(StandardNormal);
                let offset = channel.mean + (channel.variance / concentration).sqrt() * departure;
                sigmoid(expected + offset + self.shift)
            }
            Belief::Popularity((alpha, beta)) => {
                Beta::new(alpha * concentration, beta * concentration)
                    .map_or(self.mean(), |posterior| {
                        shifted(posterior.sample(rng), self.shift)
                    })
            }
        }
    }
}

/// The mean of a Beta(α, β).
fn posterior_mean((alpha, beta): (f64, f64)) -> f64 {
    alpha / (alpha + beta)
}

/// `rate` with its logit moved by `shift`.
pub(crate) fn shifted(rate: f64, shift: f64) -> f64 {
    if shift == 0.0 {
        // No votes on the post and no views weighed (before the calibration's first fit).
        return rate;
    }
    sigmoid(logit(rate) + shift)
}

/// A like rate `rate` worth `prior_votes` votes, plus the person's (likes, votes) on the post's
/// channel, as a Beta(α, β). Few votes leave it wide (exploration); many pull it to what the
/// person did (exploitation).
fn beta(rate: f64, channel: Option<(u32, u32)>, prior_votes: f64) -> (f64, f64) {
    let p = rate.clamp(0.02, 0.98);
    let (likes, votes) = channel.unwrap_or((0, 0));
    (
        prior_votes * p + f64::from(likes),
        prior_votes * (1.0 - p) + f64::from(votes.saturating_sub(likes)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::Voter;
    use oleg_store::{PostKey, VoteChange};
    use rand::SeedableRng;
    use std::collections::HashMap;

    fn pool() -> Pool {
        let counts = HashMap::from([
            (PostKey::new("liked", 1), (9, 10)),
            (PostKey::new("liked", 2), (7, 10)),
            (PostKey::new("disliked", 1), (1, 10)),
        ]);
        let posts = crate::pool::tests::recent(&[
            ("liked", 1),
            ("liked", 2),
            ("disliked", 1),
            ("other", 1),
        ]);
        Pool::new(posts, counts, 5.0)
    }

    fn noise(history: &PersonHistory) -> Exploration<'_> {
        Exploration {
            policy: ExplorationPolicy::Noise,
            noise: 0.0,
            prior_votes: 4.0,
            channel_sd: 1.6,
            post_effect_sd: 0.5,
            taste: TasteSpread {
                form: 0.0,
                text: 0.0,
                broad: 0.0,
                subject: 0.0,
            },
            explore_votes: 0,
            explore_concentration: 1.0,
            explore_taste: false,
            fresh_slots: 0,
            history,
        }
    }

    /// The ranking `user` gets from the whole pool with `seed`.
    fn seeded(
        pool: &Pool,
        scorer: Option<&ScoringModel>,
        user: UserId,
        exploration: &Exploration,
        seed: u64,
    ) -> Ranked {
        rank(
            pool,
            &pool.excluded([]),
            scorer,
            user,
            exploration,
            usize::MAX,
            &mut rand::rngs::StdRng::seed_from_u64(seed),
        )
    }

    /// The order a person the model does not know gets from the whole pool with `seed`.
    fn seeded_order(pool: &Pool, exploration: &Exploration, seed: u64) -> Vec<String> {
        keys(
            pool,
            &seeded(pool, None, UserId::new(1).unwrap(), exploration, seed),
        )
    }

    fn keys(pool: &Pool, ranked: &Ranked) -> Vec<String> {
        ranked
            .picks
            .iter()
            .map(|p| pool.posts[p.index].key.to_string())
            .collect()
    }

    #[test]
    fn without_a_model_posts_go_by_popularity_and_excluded_ones_never_come() {
        let pool = pool();
        let history = PersonHistory::default();
        let excluded = pool.excluded([&PostKey::new("liked", 2), &PostKey::new("gone", 1)]);
        let rank_top = |limit| {
            rank(
                &pool,
                &excluded,
                None,
                UserId::new(1).unwrap(),
                &noise(&history),
                limit,
                &mut rand::rngs::StdRng::seed_from_u64(1),
            )
        };
        let ranked = rank_top(10);
        assert!(ranked.cold_start);
        assert_eq!(ranked.candidates, 3);
        assert_eq!(keys(&pool, &ranked), ["liked/1", "other/1", "disliked/1"]);
        assert!(ranked.picks.iter().all(|p| !p.explored));
        // As many as asked for, the best first.
        assert_eq!(keys(&pool, &rank_top(2)), ["liked/1", "other/1"]);
    }

    #[test]
    fn fresh_slots_go_to_the_best_posts_of_untried_channels_first() {
        let pool = pool();
        let mut history = PersonHistory::default();
        history.record_sent(PostKey::new("liked", 9));
        let ranked = rank(
            &pool,
            &pool.excluded([]),
            None,
            UserId::new(1).unwrap(),
            &Exploration {
                fresh_slots: 1,
                ..noise(&history)
            },
            usize::MAX,
            &mut rand::rngs::StdRng::seed_from_u64(1),
        );
        assert_eq!(
            keys(&pool, &ranked),
            ["other/1", "liked/1", "liked/2", "disliked/1"]
        );
        assert!(ranked.picks[0].explored && !ranked.picks[1].explored);
    }

    #[test]
    fn noise_reorders_close_scores_but_the_same_seed_gives_the_same_order() {
        let pool = pool();
        let history = PersonHistory::default();
        let exploration = Exploration {
            noise: 1.0,
            ..noise(&history)
        };
        let run = |seed| seeded_order(&pool, &exploration, seed);
        assert_eq!(run(3), run(3));
        assert!(
            (0..20).any(|seed| run(seed)[0] != "liked/1"),
            "noise of 1.0 never changed the best post"
        );
    }

    #[test]
    fn the_posterior_mean_follows_the_persons_own_votes_on_a_channel() {
        let pool = pool();
        let order = |history: &PersonHistory, seed| {
            seeded_order(
                &pool,
                &Exploration {
                    policy: ExplorationPolicy::PosteriorMean,
                    prior_votes: 1.0,
                    ..noise(history)
                },
                seed,
            )
        };
        // Without votes of their own: the estimates' order (here popularity).
        let fresh = PersonHistory::default();
        assert_eq!(
            order(&fresh, 1),
            ["liked/1", "liked/2", "other/1", "disliked/1"]
        );
        // One dislike of the popular channel (9 likes in 10) and one like of the unpopular one
        // (1 in 10) outweigh the estimates, each worth one vote: the order turns at once.
        let mut history = PersonHistory::default();
        history.record_vote(PostKey::new("liked", 10), false, 1);
        history.record_vote(PostKey::new("disliked", 10), true, 1);
        assert_eq!(
            order(&history, 1),
            ["disliked/1", "other/1", "liked/1", "liked/2"]
        );
        // The same every time: no draw.
        assert_eq!(order(&history, 2), order(&history, 1));
    }

    #[test]
    fn a_persons_surprising_votes_on_a_kind_of_post_move_the_others_of_that_kind() {
        let scorer = crate::pool::tests::small_scorer();
        let mut pool = crate::taste::tests::pool();
        pool.resolve(&scorer);
        let user = UserId::new(1).unwrap();
        // Posts c/1–4 have a photo, c/5–8 are short texts: the person votes against one kind
        // and for the other on three posts each, and the first unvoted post of the kind they
        // liked comes first, whichever the model put first.
        let first_of = |liked_photos: bool| {
            let mut history = PersonHistory::default();
            for id in [1, 2, 3, 5, 6, 7] {
                history.record_vote(PostKey::new("c", id), (id <= 4) == liked_photos, id);
            }
            let exploration = Exploration {
                policy: ExplorationPolicy::PosteriorMean,
                post_effect_sd: 0.0,
                taste: crate::taste::tests::spread(1.0),
                ..noise(&history)
            };
            let ranked = rank(
                &pool,
                &pool.excluded(&history.seen),
                Some(&scorer),
                user,
                &exploration,
                1,
                &mut rand::rngs::StdRng::seed_from_u64(1),
            );
            keys(&pool, &ranked).remove(0)
        };
        assert_eq!(first_of(true), "c/4");
        assert_eq!(first_of(false), "c/8");
    }

    #[test]
    fn a_post_liked_beyond_expectation_rises_and_one_disliked_sinks() {
        let scorer = crate::pool::tests::small_scorer();
        let mut pool = Pool::new(
            crate::pool::tests::recent(&[("a", 1), ("a", 2)]),
            HashMap::new(),
            5.0,
        );
        pool.resolve(&scorer);
        let user = UserId::new(1).unwrap();
        let history = PersonHistory::default();
        let order = |pool: &Pool, post_effect_sd| {
            let exploration = Exploration {
                policy: ExplorationPolicy::PosteriorMean,
                post_effect_sd,
                ..noise(&history)
            };
            let ranked = rank(
                pool,
                &pool.excluded([]),
                Some(&scorer),
                user,
                &exploration,
                2,
                &mut rand::rngs::StdRng::seed_from_u64(1),
            );
            keys(pool, &ranked)
        };
        // The model's own order, whatever it is; then its first post is disliked and its
        // second liked, ten times each, by people expected to like either as not.
        let by_model = order(&pool, 0.5);
        let (first, second) = (PostKey::new("a", 1), PostKey::new("a", 2));
        let (first, second) = if by_model[0] == first.to_string() {
            (first, second)
        } else {
            (second, first)
        };
        let expected = expected_like(&pool, 0, Some(&scorer), user, None, 1.0)
            .expect("the model knows the person");
        assert!((0.0..1.0).contains(&expected.estimate));
        // No vote heard yet: the estimate comes as it is, and the person voted on no post of
        // the channel.
        assert!((expected.posterior - expected.estimate.clamp(0.02, 0.98)).abs() < 1e-12);
        for _ in 0..10 {
            let voter = Voter::expecting(0.5);
            crate::pool::tests::hear(&mut pool, &first, false, VoteChange::New, voter);
            crate::pool::tests::hear(&mut pool, &second, true, VoteChange::New, voter);
        }
        assert_eq!(
            order(&pool, 0.0),
            by_model,
            "post effects off: the model's order"
        );
        assert_eq!(
            order(&pool, 0.5),
            [second.to_string(), first.to_string()],
            "the surprise turns the order"
        );
    }

    #[test]
    fn a_persons_first_votes_are_explored_for_once_the_model_knows_them() {
        let scorer = crate::pool::tests::small_scorer();
        let mut pool = pool();
        pool.resolve(&scorer);
        // The model knows person 1, not person 2.
        let (known, stranger) = (UserId::new(1).unwrap(), UserId::new(2).unwrap());
        let mut history = PersonHistory::default();
        fn explore(history: &PersonHistory) -> Exploration<'_> {
            Exploration {
                policy: ExplorationPolicy::PosteriorMean,
                explore_votes: 3,
                explore_concentration: 4.0,
                explore_taste: false,
                ..noise(history)
            }
        }
        let ranked = |user, exploration: &Exploration, seed| {
            seeded(&pool, Some(&scorer), user, exploration, seed)
        };
        let policy = |user, history: &PersonHistory| ranked(user, &explore(history), 0).policy;
        let orders = |user, history: &PersonHistory| {
            (0..50)
                .map(|seed| keys(&pool, &ranked(user, &explore(history), seed)))
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        // Two votes of three: the known person's posts are Thompson draws, and the reply says so.
        history.record_vote(PostKey::new("liked", 10), true, 1);
        history.record_vote(PostKey::new("liked", 11), true, 2);
        assert_eq!(policy(known, &history), ExplorationPolicy::Thompson);
        assert!(orders(known, &history) > 1, "draws vary the order");
        // A person the model does not know: everyone's like rate, its mean, one order.
        assert_eq!(policy(stranger, &history), ExplorationPolicy::PosteriorMean);
        assert_eq!(orders(stranger, &history), 1);
        // The third vote: the posterior's mean, one order whatever the seed.
        history.record_vote(PostKey::new("other", 10), false, 3);
        assert_eq!(policy(known, &history), ExplorationPolicy::PosteriorMean);
        assert_eq!(orders(known, &history), 1);
        // None explored for: the mean from the first vote.
        let nobody = PersonHistory::default();
        let greedy = Exploration {
            explore_votes: 0,
            ..explore(&nobody)
        };
        assert_eq!(
            ranked(known, &greedy, 0).policy,
            ExplorationPolicy::PosteriorMean
        );
    }

    /// The mean and variance of 20,000 of `posterior`'s draws at `concentration`, each read
    /// through `read`.
    fn draws_moments(
        posterior: &Posterior,
        concentration: f64,
        read: fn(f64) -> f64,
        rng: &mut rand::rngs::StdRng,
    ) -> (f64, f64) {
        let draws: Vec<f64> = (0..20_000)
            .map(|_| read(posterior.draw(concentration, rng)))
            .collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let variance = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64;
        (mean, variance)
    }

    #[test]
    fn concentrated_draws_keep_the_posteriors_mean_and_narrow_its_spread() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let popularity = Posterior {
            belief: Belief::Popularity((0.4, 0.6)),
            shift: 0.0,
        };
        // Beta(α, β) has variance m(1 − m)/(α + β + 1): 0.12 here, 0.048 at four times the counts.
        let (mean, variance) = draws_moments(&popularity, 1.0, |p| p, &mut rng);
        assert!((mean - 0.4).abs() < 0.01 && (variance - 0.12).abs() < 0.005);
        let (mean, variance) = draws_moments(&popularity, 4.0, |p| p, &mut rng);
        assert!(
            (mean - 0.4).abs() < 0.01 && (variance - 0.048).abs() < 0.003,
            "{mean} {variance}"
        );
        // A channel offset's draws, as logits: the expectation, the offset and the shift, its
        // variance divided by the concentration.
        let model = Posterior {
            belief: Belief::Model {
                expected: -0.5,
                channel: ChannelOffset {
                    mean: 0.75,
                    variance: 1.0,
                },
            },
            shift: 0.25,
        };
        for (concentration, spread) in [(1.0, 1.0), (4.0, 0.25)] {
            let (mean, variance) = draws_moments(&model, concentration, logit, &mut rng);
            assert!(
                (mean - 0.5).abs() < 0.02 && (variance - spread).abs() < 0.03 * spread,
                "{mean} {variance}"
            );
        }
        assert!((model.mean() - sigmoid(0.5)).abs() < 1e-12);
        assert!((EXPECTED_LOGIT_BOUND - logit(0.98)).abs() < 1e-12);
    }

    #[test]
    fn a_channel_offset_reads_each_vote_against_what_the_model_expected() {
        let fit = |votes: &[(f64, bool)]| ChannelOffset::fit(votes.iter().copied(), 1.6);
        // No votes: the prior.
        assert_eq!(
            fit(&[]),
            ChannelOffset {
                mean: 0.0,
                variance: 1.6 * 1.6
            }
        );
        // A like of a post the model expected them to dislike says more than one it expected
        // them to like; a dislike, the other way round.
        let (surprising, expected) = (fit(&[(-2.0, true)]), fit(&[(2.0, true)]));
        assert!(surprising.mean > expected.mean && expected.mean > 0.0);
        let (surprising, expected) = (fit(&[(2.0, false)]), fit(&[(-2.0, false)]));
        assert!(surprising.mean < expected.mean && expected.mean < 0.0);
        // The mode: the log-posterior's slope is nought there; more votes, a narrower offset.
        let votes = [(-0.2, true), (0.4, true), (0.1, false), (-1.0, true)];
        let offset = fit(&votes);
        let slope = -offset.mean / (1.6 * 1.6)
            + votes
                .iter()
                .map(|&(e, liked)| f64::from(u8::from(liked)) - sigmoid(e + offset.mean))
                .sum::<f64>();
        assert!(slope.abs() < 1e-9, "{slope}");
        assert!(offset.variance < fit(&votes[..2]).variance);
        // Started elsewhere, the same mode.
        let again = ChannelOffset::fit_from(votes.iter().copied(), 1.6, 5.0);
        assert!((again.mean - offset.mean).abs() < 1e-9);
        // A thousand likes of posts the model all but ruled out: the plain Newton step swings
        // between about 0 and 49 logits there; the search still finds the mode.
        let many = vec![(-3.9, true); 1000];
        let offset = fit(&many);
        let slope = -offset.mean / (1.6 * 1.6) + 1000.0 * (1.0 - sigmoid(-3.9 + offset.mean));
        assert!(
            slope.abs() < 1e-6 && offset.mean > 3.9,
            "{} {slope}",
            offset.mean
        );
    }

    #[test]
    fn once_the_model_knows_a_person_their_votes_on_a_channel_move_its_posts() {
        let scorer = crate::pool::tests::small_scorer();
        let mut pool = pool();
        pool.resolve(&scorer);
        let known = UserId::new(1).unwrap();
        let order = |history: &PersonHistory| {
            let exploration = Exploration {
                policy: ExplorationPolicy::PosteriorMean,
                post_effect_sd: 0.0,
                ..noise(history)
            };
            keys(&pool, &seeded(&pool, Some(&scorer), known, &exploration, 1))
        };
        let first_channel =
            |history: &PersonHistory| order(history)[0].split('/').next().unwrap().to_owned();
        // Votes on the channels of the model's first and last posts: its first disliked, its
        // last liked, on held posts (read against the model) and on posts the pool no longer
        // holds (counted in the tally, read at the held votes' expectation).
        let by_model = order(&PersonHistory::default());
        let channel = |key: &String| key.split('/').next().unwrap().to_owned();
        let (top, bottom) = (channel(&by_model[0]), channel(by_model.last().unwrap()));
        assert_ne!(top, bottom);
        for held in [false, true] {
            let mut history = PersonHistory::default();
            for (k, id) in [1_i64, 2, 3].into_iter().enumerate() {
                let id = if held && k == 0 { 1 } else { 100 + id };
                history.record_vote(PostKey::new(&top, id), false, id);
                history.record_vote(PostKey::new(&bottom, id), true, id);
            }
            assert_eq!(first_channel(&history), bottom, "held votes: {held}");
            assert_eq!(channel(order(&history).last().unwrap()), top);
        }
    }

    #[test]
    fn thompson_sampling_follows_the_persons_own_votes_on_a_channel() {
        let pool = pool();
        // By popularity "liked" posts lead; this person disliked that channel ten times and
        // liked "disliked" ten times.
        let mut history = PersonHistory::default();
        for id in 10..20 {
            history.record_vote(PostKey::new("liked", id), false, 1);
            history.record_vote(PostKey::new("disliked", id), true, 1);
        }
        fn thompson(history: &PersonHistory) -> Exploration<'_> {
            Exploration {
                policy: ExplorationPolicy::Thompson,
                ..noise(history)
            }
        }
        let first = |history: &PersonHistory, seed| {
            seeded_order(&pool, &thompson(history), seed)[0].clone()
        };
        let led = |history: &PersonHistory| {
            (0..200)
                .filter(|&seed| first(history, seed) == "disliked/1")
                .count()
        };
        // The channel they liked leads most often, the one they disliked almost never; the
        // untried channel's wide posterior leads now and then (exploration).
        assert!(
            led(&history) > 110,
            "the person's votes decide: {}",
            led(&history)
        );
        let disliked_first = (0..200)
            .filter(|&seed| first(&history, seed).starts_with("liked/"))
            .count();
        assert!(disliked_first < 10, "{disliked_first}");
        // Without votes of their own, the draws stay around the estimates: mostly the popular
        // post, sometimes another (exploration).
        let fresh = PersonHistory::default();
        let popular = (0..200)
            .filter(|&seed| first(&fresh, seed) == "liked/1")
            .count();
        assert!((60..190).contains(&popular), "{popular}");
        assert!(led(&fresh) < 40, "{}", led(&fresh));
    }
}
