//! The ranker's decision for one request, apart from its I/O: which candidates a person may get,
//! in which order. Scores come from the model when it knows the person, else from smoothed
//! popularity (cold start); the exploration policy (Gaussian noise, or Thompson sampling from the
//! person's posterior like rate per channel) and a share of slots for untried channels explore.

use crate::pool::Pool;
use oleg_messages::{ExplorationPolicy, UserId};
use oleg_scorer::{Candidate, ScoringModel};
use oleg_store::{PersonHistory, PostKey};
use rand::Rng;
use rand_distr::{Beta, Distribution, StandardNormal};
use std::collections::HashSet;

/// How a reply explores beyond the best scores.
pub struct Exploration<'a> {
    pub policy: ExplorationPolicy,
    /// Noise: the standard deviation of the Gaussian noise added to every score.
    pub noise: f64,
    /// Thompson: how many of the person's votes the model's estimate counts for.
    pub prior_votes: f64,
    /// Leading slots given to the best posts of channels the person has not tried.
    pub fresh_slots: usize,
    /// What the person has seen (their channels count as tried) and liked per channel.
    pub history: &'a PersonHistory,
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
    /// Every candidate, best first.
    pub picks: Vec<Pick>,
    /// How many posts were candidates (not excluded).
    pub candidates: usize,
    /// Scored by popularity: the model does not know the person (or there is no model).
    pub cold_start: bool,
}

/// Orders the pool's posts that `excluded` lets through for `user`.
pub fn rank(
    pool: &Pool,
    excluded: impl Fn(&PostKey) -> bool,
    scorer: Option<&ScoringModel>,
    user: UserId,
    exploration: &Exploration,
    rng: &mut impl Rng,
) -> Ranked {
    let candidates: Vec<usize> = (0..pool.posts.len())
        .filter(|&i| !excluded(&pool.posts[i].key))
        .collect();
    let user_row = scorer.and_then(|s| s.user_row(user.get()).map(|row| (s, row)));
    let mut scores: Vec<f64> = match user_row {
        Some((scorer, row)) => {
            let refs: Vec<Candidate> = candidates
                .iter()
                .map(|&i| {
                    let post = &pool.posts[i];
                    scorer.candidate(&post.channel, post.post_id, &post.features)
                })
                .collect();
            let mut out = Vec::with_capacity(refs.len());
            scorer.score(row, &refs, &mut out);
            out.into_iter().map(f64::from).collect()
        }
        None => candidates
            .iter()
            .map(|&i| pool.popularity(&pool.posts[i]))
            .collect(),
    };
    match exploration.policy {
        ExplorationPolicy::Noise if exploration.noise > 0.0 => {
            for score in scores.iter_mut() {
                *score += exploration.noise * rng.sample::<f64, _>(StandardNormal);
            }
        }
        ExplorationPolicy::Noise => {}
        ExplorationPolicy::Thompson => {
            for (score, &i) in scores.iter_mut().zip(&candidates) {
                let channel = pool.posts[i].channel.as_str();
                let tally = exploration.history.channel_votes.get(channel);
                *score = posterior_draw(*score, tally.copied(), exploration.prior_votes, rng);
            }
        }
    }
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let tried: HashSet<&str> = exploration
        .history
        .seen
        .iter()
        .map(PostKey::channel)
        .collect();
    let fresh: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| !tried.contains(pool.posts[candidates[i]].channel.as_str()))
        .take(exploration.fresh_slots)
        .collect();
    let pick = |i: usize, explored| Pick {
        index: candidates[i],
        score: scores[i],
        explored,
    };
    let picks = fresh
        .iter()
        .map(|&i| pick(i, true))
        .chain(
            order
                .iter()
                .filter(|i| !fresh.contains(i))
                .map(|&i| pick(i, false)),
        )
        .collect();
    Ranked {
        picks,
        candidates: candidates.len(),
        cold_start: user_row.is_none(),
    }
}

/// A draw of the person's like rate for a post: Beta with the model's estimate `estimate` worth
/// `prior_votes` votes, plus the person's (likes, votes) on the post's channel. Few votes leave
/// it wide (exploration); many pull it to what the person did (exploitation), before the next
/// training has seen them.
fn posterior_draw(
    estimate: f64,
    channel: Option<(u32, u32)>,
    prior_votes: f64,
    rng: &mut impl Rng,
) -> f64 {
    let p = estimate.clamp(0.02, 0.98);
    let (likes, votes) = channel.unwrap_or((0, 0));
    let alpha = prior_votes * p + f64::from(likes);
    let beta = prior_votes * (1.0 - p) + f64::from(votes.saturating_sub(likes));
    Beta::new(alpha, beta).map_or(p, |beta| beta.sample(rng))
}

#[cfg(test)]
mod tests {
    use super::*;
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
            fresh_slots: 0,
            history,
        }
    }

    /// The order a person the model does not know gets from the whole pool with `seed`.
    fn seeded_order(pool: &Pool, exploration: &Exploration, seed: u64) -> Vec<String> {
        let ranked = rank(
            pool,
            |_| false,
            None,
            UserId::new(1).unwrap(),
            exploration,
            &mut rand::rngs::StdRng::seed_from_u64(seed),
        );
        keys(pool, &ranked)
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
        let ranked = rank(
            &pool,
            |key| key.as_str() == "liked/2",
            None,
            UserId::new(1).unwrap(),
            &noise(&history),
            &mut rand::rngs::StdRng::seed_from_u64(1),
        );
        assert!(ranked.cold_start);
        assert_eq!(ranked.candidates, 3);
        assert_eq!(keys(&pool, &ranked), ["liked/1", "other/1", "disliked/1"]);
        assert!(ranked.picks.iter().all(|p| !p.explored));
    }

    #[test]
    fn fresh_slots_go_to_the_best_posts_of_untried_channels_first() {
        let pool = pool();
        let mut history = PersonHistory::default();
        history.record_sent(PostKey::new("liked", 9));
        let ranked = rank(
            &pool,
            |_| false,
            None,
            UserId::new(1).unwrap(),
            &Exploration {
                fresh_slots: 1,
                ..noise(&history)
            },
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
