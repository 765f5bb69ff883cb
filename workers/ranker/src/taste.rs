//! A person's taste over kinds of post, beyond what the ranker already expects of them: a
//! Bayesian logistic regression of their votes on the candidates they voted on over those
//! posts' kind (content features: media, length, links, forwarding, words, and the broad form
//! those fall in), each vote's expected like rate as its offset. The model trained on most of
//! those votes, so it expects them and they say little; the votes cast since it trained say what
//! it does not know yet.

use crate::calibration::{dense_dot, Lu};
use crate::pool::Pool;
use crate::subjects::SUBJECTS;
use oleg_features::BROAD_FORMS;
use rand::Rng;
use rand_distr::StandardNormal;

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

/// How far (in logits per feature) a person's taste is expected to differ beyond what the ranker
/// expects of them: for a post's form (media, length, links, forwarding; each feature weighs 1)
/// and for what its text says (its words, which share a norm of 1 a post), and for its broad form
/// (any media, text past a paragraph, any link, forwarded; each flag weighs 1), which carries a
/// taste across the fine classes (photo to video, one link count to another).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TasteSpread {
    pub form: f64,
    pub text: f64,
    pub broad: f64,
    pub subject: f64,
}

impl TasteSpread {
    pub fn is_none(&self) -> bool {
        self.form <= 0.0 && self.text <= 0.0 && self.broad <= 0.0 && self.subject <= 0.0
    }
}

/// A person's weights over kinds of post: the posterior mean of their taste, or a departure
/// from it drawn for Thompson sampling.
pub struct Taste {
    form: Vec<f64>,
    text: Vec<f64>,
    broad: [f64; BROAD_FORMS],
    subject: [f64; SUBJECTS],
}

/// A voted post's form and text features, each sorted by feature, its broad form and its mix of
/// subjects.
struct Kind {
    form: Vec<(u32, f64)>,
    text: Vec<(u32, f64)>,
    broad: [f64; BROAD_FORMS],
    subject: [f64; SUBJECTS],
}

impl Kind {
    fn of(pool: &Pool, index: usize) -> Self {
        let sorted = |pairs: &[(u32, f32)]| {
            let mut pairs: Vec<(u32, f64)> = pairs.iter().map(widen).collect();
            pairs.sort_unstable_by_key(|&(h, _)| h);
            pairs
        };
        let features = &pool.posts[index].features;
        Self {
            form: sorted(features.structure_pairs()),
            text: sorted(features.text_pairs()),
            broad: broad_form(pool, index),
            subject: pool.subject(index).map(f64::from),
        }
    }
}

/// The Laplace posterior of a person's taste given their votes, under a prior N(0, sd²) on each
/// kind's weight (`spread`'s form, text, broad or subject sd): one Newton step from nought (the
/// offsets already hold what is expected), solved in the votes' space (w = Σ Xᵀ (I + W X Σ Xᵀ)⁻¹ r,
/// Σ the prior's variances, W the votes' information, r their residuals), since a person has far
/// fewer votes than their posts have features.
pub struct TastePosterior {
    kinds: Vec<Kind>,
    /// The variances of the prior: form, text, broad form, subjects.
    variances: [f64; 4],
    information: Vec<f64>,
    /// I + W X Σ Xᵀ, factorised once for the mean and each draw; `None` if it is singular.
    system: Option<Lu>,
    mean: Taste,
}

impl TastePosterior {
    pub fn fit(pool: &Pool, votes: &[TasteVote], spread: TasteSpread) -> Self {
        let kinds: Vec<Kind> = votes
            .iter()
            .map(|vote| Kind::of(pool, vote.index))
            .collect();
        let variances = [spread.form, spread.text, spread.broad, spread.subject].map(|sd| sd * sd);
        let [form_variance, text_variance, broad_variance, subject_variance] = variances;
        let n = votes.len();
        // X Σ Xᵀ is symmetric: each pair's product once, for both of its cells.
        let information: Vec<f64> = votes.iter().map(|v| v.rate * (1.0 - v.rate)).collect();
        let mut system = vec![vec![0.0; n]; n];
        for i in 0..n {
            system[i][i] = 1.0;
            for j in i..n {
                let product = form_variance * dot(&kinds[i].form, &kinds[j].form)
                    + text_variance * dot(&kinds[i].text, &kinds[j].text)
                    + broad_variance * dense_dot(kinds[i].broad, kinds[j].broad)
                    + subject_variance * dense_dot(kinds[i].subject, kinds[j].subject);
                system[i][j] += information[i] * product;
                if j != i {
                    system[j][i] = information[j] * product;
                }
            }
        }
        let residuals: Vec<f64> = votes
            .iter()
            .map(|v| f64::from(u8::from(v.liked)) - v.rate)
            .collect();
        let mut posterior = Self {
            kinds,
            variances,
            information,
            system: Lu::of(system),
            mean: Taste::zero(),
        };
        posterior.mean = posterior.taste_for(residuals);
        posterior
    }

    /// The posterior mean.
    pub fn mean(&self) -> &Taste {
        &self.mean
    }

    /// A draw's departure from the mean, its spread narrowed by `concentration` (the draw's
    /// variance divided by it), by Matheron's rule: a draw w₀ from the prior, moved by what the
    /// votes say against it (w₀ + Σ Xᵀ (I + W X Σ Xᵀ)⁻¹ (−W X w₀ − √W η), η standard normal) is a
    /// draw from the posterior less its mean. Posts of one kind move together, as the person's
    /// taste would: independent draws per post would explore kinds only by chance.
    pub fn departure(&self, concentration: f64, rng: &mut impl Rng) -> Taste {
        let prior = Taste::prior_draw(self.variances, rng);
        let against: Vec<f64> = self
            .kinds
            .iter()
            .zip(&self.information)
            .map(|(kind, &information)| {
                let noise: f64 = rng.sample(StandardNormal);
                -information * prior.at(kind) - information.sqrt() * noise
            })
            .collect();
        let mut departure = self.taste_for(against);
        departure.add(&prior);
        departure.scale(concentration.recip().sqrt());
        departure
    }

    /// Σ Xᵀ (I + W X Σ Xᵀ)⁻¹ `residuals`: the weights the votes support for their residuals;
    /// nought if the system is singular.
    fn taste_for(&self, residuals: Vec<f64>) -> Taste {
        let mut taste = Taste::zero();
        let Some(system) = &self.system else {
            return taste;
        };
        let alpha = system.solve(residuals);
        let [form_variance, text_variance, broad_variance, subject_variance] = self.variances;
        for (kind, a) in self.kinds.iter().zip(alpha) {
            for (weights, pairs, variance) in [
                (&mut taste.form, &kind.form, form_variance),
                (&mut taste.text, &kind.text, text_variance),
            ] {
                for &(h, w) in pairs {
                    weights[h as usize % BUCKETS] += variance * a * w;
                }
            }
            for (weight, flag) in taste.broad.iter_mut().zip(kind.broad) {
                *weight += broad_variance * a * flag;
            }
            for (weight, x) in taste.subject.iter_mut().zip(kind.subject) {
                *weight += subject_variance * a * x;
            }
        }
        taste
    }
}

impl Taste {
    fn zero() -> Self {
        Self {
            form: vec![0.0; BUCKETS],
            text: vec![0.0; BUCKETS],
            broad: [0.0; BROAD_FORMS],
            subject: [0.0; SUBJECTS],
        }
    }

    /// Weights drawn from the prior N(0, `variances`) (form, text, broad form, subjects).
    fn prior_draw(variances: [f64; 4], rng: &mut impl Rng) -> Self {
        let [form, text, broad, subject] = variances.map(f64::sqrt);
        let mut draw = |sd: f64| sd * rng.sample::<f64, _>(StandardNormal);
        Self {
            form: (0..BUCKETS).map(|_| draw(form)).collect(),
            text: (0..BUCKETS).map(|_| draw(text)).collect(),
            broad: std::array::from_fn(|_| draw(broad)),
            subject: std::array::from_fn(|_| draw(subject)),
        }
    }

    fn add(&mut self, other: &Self) {
        for (a, b) in self.weights_mut().zip(other.weights()) {
            *a += b;
        }
    }

    fn scale(&mut self, factor: f64) {
        for a in self.weights_mut() {
            *a *= factor;
        }
    }

    fn weights(&self) -> impl Iterator<Item = f64> + '_ {
        self.form
            .iter()
            .chain(&self.text)
            .chain(&self.broad)
            .chain(&self.subject)
            .copied()
    }

    fn weights_mut(&mut self) -> impl Iterator<Item = &mut f64> {
        self.form
            .iter_mut()
            .chain(self.text.iter_mut())
            .chain(self.broad.iter_mut())
            .chain(self.subject.iter_mut())
    }

    /// The shift of the logit of a voted post's kind.
    fn at(&self, kind: &Kind) -> f64 {
        self.shift_of(
            kind.form.iter().copied(),
            kind.text.iter().copied(),
            kind.broad,
            kind.subject,
        )
    }

    /// The shift of the logit of the pool's post at `index` that the person's taste supports.
    pub fn shift(&self, pool: &Pool, index: usize) -> f64 {
        let features = &pool.posts[index].features;
        self.shift_of(
            features.structure_pairs().iter().map(widen),
            features.text_pairs().iter().map(widen),
            broad_form(pool, index),
            pool.subject(index).map(f64::from),
        )
    }

    /// The shift of the logit of a post with these form and text features, broad form and mix
    /// of subjects: one sum for voted posts and candidates alike.
    fn shift_of(
        &self,
        form: impl Iterator<Item = (u32, f64)>,
        text: impl Iterator<Item = (u32, f64)>,
        broad: [f64; BROAD_FORMS],
        subject: [f64; SUBJECTS],
    ) -> f64 {
        sparse_dot(&self.form, form)
            + sparse_dot(&self.text, text)
            + dense_dot(self.broad, broad)
            + dense_dot(self.subject, subject)
    }
}

/// A post's feature with its weight widened to f64.
fn widen(&(h, w): &(u32, f32)) -> (u32, f64) {
    (h, f64::from(w))
}

/// Bucketed weights' dot product with a post's sparse features.
fn sparse_dot(weights: &[f64], pairs: impl Iterator<Item = (u32, f64)>) -> f64 {
    pairs.map(|(h, w)| weights[h as usize % BUCKETS] * w).sum()
}

/// The broad form of the pool's post at `index`, its flags as 0 or 1.
fn broad_form(pool: &Pool, index: usize) -> [f64; BROAD_FORMS] {
    pool.posts[index]
        .features
        .broad_form()
        .map(|flag| f64::from(u8::from(flag)))
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

    /// Posts 1–4 of channel "c" with a photo, 5–8 without, all of the same short text.
    pub(crate) fn pool() -> Pool {
        pool_of(|post_id| PostContent {
            text: "a line".into(),
            media: if post_id <= 4 {
                vec![MediaKind::Photo]
            } else {
                Vec::new()
            },
            ..PostContent::default()
        })
    }

    /// Posts 1–8 of channel "c" with the given content.
    fn pool_of(content: impl Fn(i64) -> PostContent) -> Pool {
        let posts = (1..=8)
            .map(|post_id| RecentPost {
                channel: "c".into(),
                post_id,
                published_at_ms: 0,
                content: content(post_id),
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

    /// The posterior mean of the taste.
    fn fit(pool: &Pool, votes: &[TasteVote], spread: TasteSpread) -> Taste {
        TastePosterior::fit(pool, votes, spread).mean
    }

    /// The same spread for form, text and broad form.
    pub(crate) fn spread(sd: f64) -> TasteSpread {
        TasteSpread {
            form: sd,
            text: sd,
            broad: sd,
            subject: sd,
        }
    }

    #[test]
    fn a_drawn_taste_departs_from_the_mean_by_the_posteriors_spread_narrowed_by_concentration() {
        use rand::SeedableRng;
        // Only the broad form: the photo posts share one weight (any media), the text posts none.
        // Three dislikes of photos each carry information 0.25 against a prior variance of 1, so
        // the weight's posterior variance is 1 / (1 + 3 × 0.25).
        let pool = pool();
        let spread = TasteSpread {
            broad: 1.0,
            ..spread(0.0)
        };
        let posterior = TastePosterior::fit(&pool, &votes(0.5), spread);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let draws = 4_000;
        let moments = |concentration: f64, rng: &mut rand::rngs::StdRng| {
            let (mut sum, mut squares) = (0.0, 0.0);
            for _ in 0..draws {
                let departure = posterior.departure(concentration, rng);
                let (photo, other_photo, text) = (
                    departure.shift(&pool, 3),
                    departure.shift(&pool, 0),
                    departure.shift(&pool, 7),
                );
                assert_eq!(photo, other_photo, "posts of one kind move together");
                assert_eq!(text, 0.0, "a kind the draw has no weight for stays");
                sum += photo;
                squares += photo * photo;
            }
            let mean = sum / f64::from(draws);
            (mean, squares / f64::from(draws) - mean * mean)
        };
        let variance = 1.0 / 1.75;
        let (mean, spread_at_1) = moments(1.0, &mut rng);
        assert!(mean.abs() < 0.04, "{mean}");
        assert!(
            (spread_at_1 / variance - 1.0).abs() < 0.08,
            "{spread_at_1} against {variance}"
        );
        let (_, spread_at_4) = moments(4.0, &mut rng);
        assert!(
            (spread_at_4 / (variance / 4.0) - 1.0).abs() < 0.08,
            "{spread_at_4} against {}",
            variance / 4.0
        );
    }

    #[test]
    fn votes_the_ranker_did_not_expect_move_posts_of_their_kind() {
        let pool = pool();
        let surprised = fit(&pool, &votes(0.5), spread(1.0));
        let (photo, text) = (surprised.shift(&pool, 3), surprised.shift(&pool, 7));
        assert!(photo < -0.5, "unvoted photo post: {photo}");
        assert!(text > 0.5, "unvoted text post: {text}");
        // Votes it expected say little: the model already knows this taste.
        let expected = fit(&pool, &votes(0.05), spread(1.0));
        let (photo_known, text_known) = (expected.shift(&pool, 3), expected.shift(&pool, 7));
        assert!(
            photo_known < 0.0 && photo_known > photo / 4.0,
            "{photo_known}"
        );
        assert!(text_known > 0.0 && text_known < text / 4.0, "{text_known}");
        // Without votes, or with a tighter prior, the shift is nought or smaller.
        assert_eq!(fit(&pool, &[], spread(1.0)).shift(&pool, 3), 0.0);
        assert!(fit(&pool, &votes(0.5), spread(0.3)).shift(&pool, 3) > photo / 2.0);
    }

    #[test]
    fn what_a_text_says_moves_posts_that_say_the_same_by_its_own_spread() {
        // Posts 1–4 about launches, 5–8 about football, all of one form: liking the launches
        // and not the football says nothing of the form, only of the words.
        let pool = pool_of(|post_id| PostContent {
            text: if post_id <= 4 {
                "rocket orbit launch tonight"
            } else {
                "striker scored penalty tonight"
            }
            .into(),
            ..PostContent::default()
        });
        let (space, football) = (3, 7);
        let shifts = |spread| {
            let taste = fit(&pool, &votes(0.5), spread);
            (taste.shift(&pool, space), taste.shift(&pool, football))
        };
        let form_only = shifts(TasteSpread {
            text: 0.0,
            ..spread(1.0)
        });
        assert!(
            (form_only.0 - form_only.1).abs() < 1e-9,
            "the form alone cannot tell them apart: {form_only:?}"
        );
        // votes() dislikes posts 1–3 and likes 5–7.
        let (space_shift, football_shift) = shifts(spread(1.0));
        assert!(
            football_shift - space_shift > 0.5,
            "{football_shift} against {space_shift}"
        );
        let wider = shifts(TasteSpread {
            text: 2.0,
            ..spread(1.0)
        });
        assert!(wider.1 - wider.0 > football_shift - space_shift);
    }

    #[test]
    fn the_broad_form_carries_a_taste_for_photos_over_to_videos() {
        // Posts 1–3 have a photo, 4 a video, 5–8 none: disliking the photos says nothing of the
        // video by the fine classes (media:photo and media:video are apart), but does by the
        // broad form (both have media).
        let pool = pool_of(|post_id| PostContent {
            text: "a line".into(),
            media: match post_id {
                1..=3 => vec![MediaKind::Photo],
                4 => vec![MediaKind::Video],
                _ => Vec::new(),
            },
            ..PostContent::default()
        });
        let (photo, video) = (0, 3);
        let shifts = |broad| {
            let spread = TasteSpread {
                broad,
                ..spread(1.0)
            };
            let taste = fit(&pool, &votes(0.5), spread);
            (taste.shift(&pool, photo), taste.shift(&pool, video))
        };
        let (photo_fine, video_fine) = shifts(0.0);
        assert!(photo_fine < -0.5, "{photo_fine}");
        assert!(video_fine.abs() < 0.1, "{video_fine}");
        let (photo_broad, video_broad) = shifts(1.0);
        assert!(video_broad < -0.3, "{video_broad}");
        assert!(
            video_broad < photo_broad / 3.0,
            "{video_broad} against {photo_broad}"
        );
    }
}
