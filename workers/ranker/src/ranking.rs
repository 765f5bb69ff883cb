//! The ranker's decision for one request, apart from its I/O: which candidates a person may get,
//! in which order. Scores come from the model when it knows the person, else from smoothed
//! popularity (cold start); the exploration policy (Gaussian noise, Thompson sampling from the
//! person's posterior like rate per channel, or from their posterior correction to the model's
//! last layer) and a share of slots for untried channels explore. The last-layer policy scores
//! a person the model does not know yet as its average person, corrected by their votes.

use crate::pool::Pool;
use crate::posterior::{self, Posterior};
use oleg_messages::{ExplorationPolicy, UserId};
use oleg_scorer::{Candidate, ScoringModel};
use oleg_store::{PersonHistory, PostKey};
use rand::Rng;
use rand_distr::{Beta, Distribution, Normal, StandardNormal};
use std::collections::{HashMap, HashSet};

/// How a reply explores beyond the best scores.
pub struct Exploration<'a> {
    pub policy: ExplorationPolicy,
    /// Noise: the standard deviation of the Gaussian noise added to every score.
    pub noise: f64,
    /// Thompson: how many of the person's votes the model's estimate counts for.
    pub prior_votes: f64,
    /// Last layer: the prior's standard deviation of the person's correction along the last
    /// layer, in logits of a typical candidate, and of their liking for a channel.
    pub logit_sd: f64,
    pub channel_sd: f64,
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
    let user_row = scorer.and_then(|s| s.user_row(user.get()));
    let mut scores: Vec<f64> = match (scorer, user_row, exploration.policy) {
        (Some(scorer), _, ExplorationPolicy::LastLayer) => {
            last_layer_draw(scorer, user_row, pool, &candidates, exploration, rng)
        }
        (Some(scorer), Some(row), _) => {
            let mut out = Vec::with_capacity(candidates.len());
            scorer.score(row, &model_candidates(scorer, pool, &candidates), &mut out);
            out.into_iter().map(f64::from).collect()
        }
        _ => candidates
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
        ExplorationPolicy::Noise | ExplorationPolicy::LastLayer => {}
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

/// The pool's posts at `indices` as the model sees them.
fn model_candidates<'a>(
    scorer: &ScoringModel,
    pool: &'a Pool,
    indices: &[usize],
) -> Vec<Candidate<'a>> {
    indices
        .iter()
        .map(|&i| {
            let post = &pool.posts[i];
            scorer.candidate(&post.channel, post.post_id, &post.features)
        })
        .collect()
}

/// Most of a person's votes the last-layer posterior reads (the newest candidates'): a request
/// stays bounded however long their history.
const MAX_POSTERIOR_VOTES: usize = 500;

/// Per candidate, the like rate under one draw of the person's correction to the model's logit,
/// from its posterior given their votes on posts still in the pool (the model scores those as
/// it scores candidates). The correction is linear in what the output layer reads of the post
/// and in the post's channel: a channel the person never voted on keeps its prior, drawn once
/// per request, so every post of an untried channel shares one draw.
fn last_layer_draw(
    scorer: &ScoringModel,
    user_row: Option<usize>,
    pool: &Pool,
    candidates: &[usize],
    exploration: &Exploration,
    rng: &mut impl Rng,
) -> Vec<f64> {
    let dim = scorer.last_layer_dim();
    let (mut logits, mut features) = (Vec::new(), Vec::new());
    let refs = model_candidates(scorer, pool, candidates);
    scorer.last_layer(user_row, &refs, &mut logits, &mut features);
    let mut voted: Vec<(usize, bool)> = exploration
        .history
        .votes
        .iter()
        .filter_map(|(key, liked)| pool.position(key).map(|i| (i, *liked)))
        .collect();
    voted.sort_unstable_by_key(|&(i, _)| std::cmp::Reverse(i));
    voted.truncate(MAX_POSTERIOR_VOTES);
    let (indices, liked): (Vec<usize>, Vec<bool>) = voted.into_iter().unzip();
    let (mut vote_logits, mut vote_features) = (Vec::new(), Vec::new());
    scorer.last_layer(
        user_row,
        &model_candidates(scorer, pool, &indices),
        &mut vote_logits,
        &mut vote_features,
    );
    // One weight per channel voted on, after the last layer's.
    let mut channels: HashMap<&str, usize> = HashMap::new();
    for &i in &indices {
        let next = dim + channels.len();
        channels
            .entry(pool.posts[i].channel.as_str())
            .or_insert(next);
    }
    let width = dim + channels.len();
    let rows: Vec<f32> = vote_features
        .chunks_exact(dim)
        .zip(&indices)
        .flat_map(|(h, &i)| {
            let mut row = h.to_vec();
            row.resize(width, 0.0);
            row[channels[pool.posts[i].channel.as_str()]] = 1.0;
            row
        })
        .collect();
    // Scale the last layer's prior to its features: before any vote, a typical candidate's
    // logit moves by about `logit_sd`, whatever the size of the model's hidden units.
    let mean_square = features.iter().map(|x| x * x).sum::<f32>() / candidates.len().max(1) as f32;
    let mut prior = vec![exploration.logit_sd.powi(2) / f64::from(mean_square).max(1e-9); dim];
    prior.resize(width, exploration.channel_sd.powi(2));
    let weights = Posterior::fit(&rows, &vote_logits, &liked, &prior).draw(rng);
    let untried = Normal::new(0.0, exploration.channel_sd).expect("a valid spread");
    let mut untried_draws: HashMap<&str, f64> = HashMap::new();
    logits
        .iter()
        .zip(features.chunks_exact(dim))
        .zip(candidates)
        .map(|((z, h), &i)| {
            let channel = pool.posts[i].channel.as_str();
            let channel_weight = match channels.get(channel) {
                Some(&k) => weights[k],
                None => *untried_draws
                    .entry(channel)
                    .or_insert_with(|| untried.sample(rng)),
            };
            let logit = f64::from(*z) + posterior::dot(h, &weights[..dim]) + channel_weight;
            1.0 / (1.0 + (-logit).exp())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oleg_store::RecentPost;
    use rand::SeedableRng;

    fn pool() -> Pool {
        let counts = HashMap::from([
            (PostKey::new("liked", 1), (9, 10)),
            (PostKey::new("liked", 2), (7, 10)),
            (PostKey::new("disliked", 1), (1, 10)),
        ]);
        let posts = [("liked", 1), ("liked", 2), ("disliked", 1), ("other", 1)]
            .into_iter()
            .map(|(channel, post_id)| RecentPost {
                channel: channel.into(),
                post_id,
                published_at_ms: 0,
                content: Default::default(),
            })
            .collect();
        Pool::new(posts, counts, 5.0)
    }

    fn noise(history: &PersonHistory) -> Exploration<'_> {
        Exploration {
            policy: ExplorationPolicy::Noise,
            noise: 0.0,
            prior_votes: 4.0,
            logit_sd: 1.0,
            channel_sd: 1.0,
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
        let history = PersonHistory {
            seen: HashSet::from([PostKey::new("liked", 9)]),
            ..Default::default()
        };
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

    /// A `dot` model of one person (id 1, at the origin, so every logit is 0) and posts 1-3 of
    /// channel "kinds" at (1, 0), posts 4-6 at (0, 1): the model cannot tell them apart, only
    /// a person's votes can.
    fn two_kinds() -> (Pool, ScoringModel) {
        let f32s =
            |values: &[f32]| -> Vec<u8> { values.iter().flat_map(|v| v.to_le_bytes()).collect() };
        let posts = f32s(&[1., 0., 1., 0., 1., 0., 0., 1., 0., 1., 0., 1.]);
        let (user, zeros, one) = (f32s(&[0., 0.]), f32s(&[0.; 6]), f32s(&[0.]));
        let view = |shape: Vec<usize>, data| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, data).unwrap()
        };
        let weights = safetensors::tensor::serialize(
            [
                ("user_embedding", view(vec![1, 2], &user)),
                ("user_bias", view(vec![1, 1], &one)),
                ("post_embedding", view(vec![6, 2], &posts)),
                ("post_bias", view(vec![6, 1], &zeros)),
                ("global_bias", view(vec![1], &one)),
            ],
            Some(HashMap::from([
                ("variant".to_owned(), "dot".to_owned()),
                ("output_scale".to_owned(), "1.0".to_owned()),
            ])),
        )
        .unwrap();
        let vocab = serde_json::json!({
            "users": [1], "channels": ["kinds"], "posts": (1..=6).map(|id| (0, id)).collect::<Vec<_>>(),
        });
        let model = ScoringModel::load(&weights, vocab.to_string().as_bytes()).unwrap();
        let posts = (1..=6)
            .map(|post_id| RecentPost {
                channel: "kinds".into(),
                post_id,
                published_at_ms: 0,
                content: Default::default(),
            })
            .collect();
        (Pool::new(posts, HashMap::new(), 5.0), model)
    }

    #[test]
    fn the_last_layer_posterior_follows_what_the_persons_votes_share_beyond_the_channel() {
        let (pool, model) = two_kinds();
        // Liked two posts of the first kind, disliked two of the second: all one channel, so
        // per-channel Thompson cannot tell post 3 from post 6.
        let voted = PersonHistory {
            votes: vec![
                (PostKey::new("kinds", 1), true),
                (PostKey::new("kinds", 2), true),
                (PostKey::new("kinds", 4), false),
                (PostKey::new("kinds", 5), false),
            ],
            ..Default::default()
        };
        let first = |history: &PersonHistory, seed| {
            let ranked = rank(
                &pool,
                |key| !matches!(key.as_str(), "kinds/3" | "kinds/6"),
                Some(&model),
                // Someone the model does not know: scored as its average person.
                UserId::new(2).unwrap(),
                &Exploration {
                    policy: ExplorationPolicy::LastLayer,
                    ..noise(history)
                },
                &mut rand::rngs::StdRng::seed_from_u64(seed),
            );
            assert!(ranked.cold_start);
            assert_eq!(ranked.candidates, 2);
            keys(&pool, &ranked)[0].clone()
        };
        let led = |history: &PersonHistory| {
            (0..200)
                .filter(|&seed| first(history, seed) == "kinds/3")
                .count()
        };
        assert!(led(&voted) > 160, "the votes decide: {}", led(&voted));
        // Without votes both lead about as often: the prior explores.
        let none = PersonHistory::default();
        assert!((50..150).contains(&led(&none)), "{}", led(&none));
    }

    #[test]
    fn thompson_sampling_follows_the_persons_own_votes_on_a_channel() {
        let pool = pool();
        // By popularity "liked" posts lead; this person disliked that channel ten times and
        // liked "disliked" ten times.
        let history = PersonHistory {
            channel_votes: HashMap::from([
                ("liked".to_owned(), (0, 10)),
                ("disliked".to_owned(), (10, 10)),
            ]),
            ..Default::default()
        };
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
