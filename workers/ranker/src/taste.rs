//! A person's taste over kinds of post, beyond what the ranker already expects of them: a
//! Bayesian logistic regression of their votes on the candidates they voted on over those
//! posts' kind (content features: media, length, links, forwarding, words), each vote's
//! expected like rate as its offset. The model trained on most of those votes, so it expects
//! them and they say little; the votes cast since it trained say what it does not know yet.

use crate::calibration::solve;
use crate::pool::Pool;

/// Buckets of the weights' table: kinds are hashed features, and a person's votes touch a few
/// hundred of them at most, so collisions are rare.
const BUCKETS: usize = 1 << 12;

/// A person's vote on a candidate, with the like rate expected of them without it.
#[derive(Debug, Clone, Copy)]
pub struct TasteVote {
    pub index: usize,
    pub liked: bool,
    pub rate: f64,
}

/// The posterior mean of a person's weights over kinds of post.
pub struct Taste {
    weights: Vec<f64>,
}

impl Taste {
    /// From `votes` under a prior N(0, sd²) on each kind's weight: one Newton step from nought
    /// (the offsets already hold what is expected), solved in the votes' space
    /// (w = sd² Xᵀ (I + sd² W X Xᵀ)⁻¹ r, W the votes' information, r their residuals), since a
    /// person has far fewer votes than their posts have features.
    pub fn fit(pool: &Pool, votes: &[TasteVote], sd: f64) -> Self {
        let kinds: Vec<Vec<(u32, f64)>> = votes
            .iter()
            .map(|vote| {
                let mut pairs: Vec<(u32, f64)> = pool.posts[vote.index]
                    .features
                    .kind_pairs()
                    .map(|(h, w)| (h, f64::from(w)))
                    .collect();
                pairs.sort_unstable_by_key(|&(h, _)| h);
                pairs
            })
            .collect();
        let n = votes.len();
        let variance = sd * sd;
        // X Xᵀ is symmetric: each pair's dot product once, for both of its cells.
        let mut gram = vec![vec![0.0; n]; n];
        for i in 0..n {
            for j in i..n {
                let product = dot(&kinds[i], &kinds[j]);
                gram[i][j] = product;
                gram[j][i] = product;
            }
        }
        let matrix: Vec<Vec<f64>> = gram
            .iter()
            .zip(votes)
            .enumerate()
            .map(|(i, (row, vote))| {
                let information = vote.rate * (1.0 - vote.rate);
                row.iter()
                    .enumerate()
                    .map(|(j, g)| variance * information * g + f64::from(u8::from(i == j)))
                    .collect()
            })
            .collect();
        let residuals: Vec<f64> = votes
            .iter()
            .map(|v| f64::from(u8::from(v.liked)) - v.rate)
            .collect();
        let mut weights = vec![0.0; BUCKETS];
        if let Some(alpha) = solve(matrix, residuals) {
            for (pairs, a) in kinds.iter().zip(alpha) {
                for &(h, w) in pairs {
                    weights[h as usize % BUCKETS] += variance * a * w;
                }
            }
        }
        Self { weights }
    }

    /// The shift of the logit of the pool's post at `index` that the person's taste supports.
    pub fn shift(&self, pool: &Pool, index: usize) -> f64 {
        pool.posts[index]
            .features
            .kind_pairs()
            .map(|(h, w)| self.weights[h as usize % BUCKETS] * f64::from(w))
            .sum()
    }
}

/// Two sparse vectors' dot product, each sorted by feature.
fn dot(a: &[(u32, f64)], b: &[(u32, f64)]) -> f64 {
    let (mut i, mut j, mut sum) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                sum += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    sum
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use oleg_features::PostContent;
    use oleg_messages::MediaKind;
    use oleg_store::RecentPost;
    use std::collections::HashMap;

    /// Posts 1–4 of channel "c" with a photo, 5–8 short texts without.
    pub(crate) fn pool() -> Pool {
        let posts = (1..=8)
            .map(|post_id| RecentPost {
                channel: "c".into(),
                post_id,
                published_at_ms: 0,
                content: PostContent {
                    text: "a line".into(),
                    media: if post_id <= 4 {
                        vec![MediaKind::Photo]
                    } else {
                        Vec::new()
                    },
                    ..PostContent::default()
                },
            })
            .collect();
        Pool::new(posts, HashMap::new(), 5.0)
    }

    /// Dislikes of posts 1–3 (photos) and likes of posts 5–7 (texts), each expected at `rate`
    /// of a like for the dislikes and 1 − `rate` for the likes.
    fn votes(rate: f64) -> Vec<TasteVote> {
        (0..3)
            .map(|i| TasteVote {
                index: i,
                liked: false,
                rate,
            })
            .chain((4..7).map(|i| TasteVote {
                index: i,
                liked: true,
                rate: 1.0 - rate,
            }))
            .collect()
    }

    #[test]
    fn votes_the_ranker_did_not_expect_move_posts_of_their_kind() {
        let pool = pool();
        let surprised = Taste::fit(&pool, &votes(0.5), 1.0);
        let (photo, text) = (surprised.shift(&pool, 3), surprised.shift(&pool, 7));
        assert!(photo < -0.5, "unvoted photo post: {photo}");
        assert!(text > 0.5, "unvoted text post: {text}");
        // Votes it expected say little: the model already knows this taste.
        let expected = Taste::fit(&pool, &votes(0.05), 1.0);
        let (photo_known, text_known) = (expected.shift(&pool, 3), expected.shift(&pool, 7));
        assert!(
            photo_known < 0.0 && photo_known > photo / 4.0,
            "{photo_known}"
        );
        assert!(text_known > 0.0 && text_known < text / 4.0, "{text_known}");
        // Without votes, or with a tighter prior, the shift is nought or smaller.
        assert_eq!(Taste::fit(&pool, &[], 1.0).shift(&pool, 3), 0.0);
        assert!(Taste::fit(&pool, &votes(0.5), 0.3).shift(&pool, 3) > photo / 2.0);
    }
}
