//! What the candidates' texts are about, learned from the texts alone: a topic model (latent
//! Dirichlet allocation) of their hashed words and word prefixes, leaving out words too common to
//! tell subjects apart. Posts on one subject use words from one set, so their mixes of subjects
//! agree even where they share few words; a person's taste for a subject then carries to a post
//! on it whatever its words.
//!
//! Votes play no part: the subjects come from the texts, so a person's votes are not counted
//! twice (as they would be along the model's own representation of posts, which their votes
//! trained).

use crate::pool::CandidatePost;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How many subjects the topic model tells apart.
pub const SUBJECTS: usize = 8;
/// Topic model's priors: each post's mix of subjects, and each subject's words.
const ALPHA: f64 = 0.1;
const BETA: f64 = 0.01;
/// Sweeps of the Gibbs sampler over every word of every teaching post.
const SWEEPS: usize = 150;
/// Words in more than this share of the teaching posts say nothing of a subject ("the", "new").
const MAX_WORD_SHARE: f64 = 0.3;
/// At most this many posts (spread evenly over the pool) teach the subjects: their cost grows
/// with the posts, and a few thousand texts show a pool's subjects.
const MAX_TEACHING_POSTS: usize = 5_000;
/// Fewer posts than this show no subjects worth learning.
pub const MIN_TEACHING_POSTS: usize = 3 * SUBJECTS;

/// A post's mix of subjects less the even mix, scaled so that the posts that taught them have a
/// mean squared norm of 1.
pub type Subject = [f32; SUBJECTS];

/// The subjects learned from a pool's texts: a topic model (latent Dirichlet allocation,
/// collapsed Gibbs sampling) over their words and word prefixes.
#[derive(Debug)]
pub struct TopicModel {
    /// For each word kept, how likely each subject is to have written it (normalised over
    /// subjects).
    words: foldhash::HashMap<u32, [f64; SUBJECTS]>,
    scale: f64,
}

/// A post's text as its features' hashes.
fn words_of(post: &CandidatePost) -> impl Iterator<Item = u32> + '_ {
    post.features.text_pairs().iter().map(|&(h, _)| h)
}

/// The words of the posts that teach the subjects: at most [`MAX_TEACHING_POSTS`], spread evenly
/// over the pool. A copy of a few thousand texts' hashes, taken under the pool's lock so that the
/// learning itself needs no lock.
#[derive(Debug)]
pub struct TeachingTexts {
    texts: Vec<Vec<u32>>,
    /// How many posts the pool had when the texts were taken.
    pub pool_posts: usize,
}

impl TeachingTexts {
    pub fn of(posts: &[CandidatePost]) -> Self {
        let step = posts.len().div_ceil(MAX_TEACHING_POSTS).max(1);
        Self {
            texts: posts
                .iter()
                .step_by(step)
                .map(|p| words_of(p).collect())
                .collect(),
            pool_posts: posts.len(),
        }
    }
}

impl TopicModel {
    /// The subjects of the teaching texts; `None` with fewer than [`MIN_TEACHING_POSTS`] of them
    /// that share words. Takes a few hundred milliseconds at [`MAX_TEACHING_POSTS`] texts.
    pub fn learn(teaching: &TeachingTexts) -> Option<Self> {
        let teaching = &teaching.texts;
        let mut posts_with: foldhash::HashMap<u32, usize> = Default::default();
        for text in teaching {
            for &word in text {
                *posts_with.entry(word).or_default() += 1;
            }
        }
        let most = (teaching.len() as f64 * MAX_WORD_SHARE) as usize;
        // Words of one post say nothing of what posts share; too common ones, nothing of which.
        let mut vocabulary: Vec<u32> = posts_with
            .iter()
            .filter(|&(_, &n)| n >= 2 && n <= most)
            .map(|(&w, _)| w)
            .collect();
        vocabulary.sort_unstable();
        let ids: foldhash::HashMap<u32, usize> = vocabulary
            .iter()
            .enumerate()
            .map(|(i, &w)| (w, i))
            .collect();
        let texts: Vec<Vec<usize>> = teaching
            .iter()
            .map(|text| {
                text.iter()
                    .filter_map(|w| ids.get(w).copied())
                    .collect::<Vec<_>>()
            })
            .filter(|t| !t.is_empty())
            .collect();
        if texts.len() < MIN_TEACHING_POSTS {
            return None;
        }
        let v = vocabulary.len();
        // A fixed seed: the same pool gives the same subjects on every replica.
        let mut rng = StdRng::seed_from_u64(0x050b_1ec7);
        let mut word_subject = vec![[0u32; SUBJECTS]; v];
        let mut subject_total = [0u32; SUBJECTS];
        let mut text_subject = vec![[0u32; SUBJECTS]; texts.len()];
        let mut assigned: Vec<Vec<usize>> = texts
            .iter()
            .enumerate()
            .map(|(d, text)| {
                text.iter()
                    .map(|&w| {
                        let k = rng.random_range(0..SUBJECTS);
                        word_subject[w][k] += 1;
                        subject_total[k] += 1;
                        text_subject[d][k] += 1;
                        k
                    })
                    .collect()
            })
            .collect();
        let mut cumulative = [0.0; SUBJECTS];
        for _ in 0..SWEEPS {
            for (d, text) in texts.iter().enumerate() {
                for (position, &w) in text.iter().enumerate() {
                    let old = assigned[d][position];
                    word_subject[w][old] -= 1;
                    subject_total[old] -= 1;
                    text_subject[d][old] -= 1;
                    let mut sum = 0.0;
                    for k in 0..SUBJECTS {
                        sum += (f64::from(text_subject[d][k]) + ALPHA)
                            * (f64::from(word_subject[w][k]) + BETA)
                            / (f64::from(subject_total[k]) + v as f64 * BETA);
                        cumulative[k] = sum;
                    }
                    let draw = rng.random::<f64>() * sum;
                    let new = cumulative
                        .iter()
                        .position(|&c| c > draw)
                        .unwrap_or(SUBJECTS - 1);
                    assigned[d][position] = new;
                    word_subject[w][new] += 1;
                    subject_total[new] += 1;
                    text_subject[d][new] += 1;
                }
            }
        }
        let words = vocabulary
            .iter()
            .zip(&word_subject)
            .map(|(&word, counts)| {
                let mut given: [f64; SUBJECTS] = std::array::from_fn(|k| {
                    (f64::from(counts[k]) + BETA) / (f64::from(subject_total[k]) + v as f64 * BETA)
                });
                let total: f64 = given.iter().sum();
                given.iter_mut().for_each(|p| *p /= total);
                (word, given)
            })
            .collect();
        let mut model = Self { words, scale: 1.0 };
        let mean_square = teaching
            .iter()
            .map(|text| {
                model
                    .place_words(text.iter().copied())
                    .iter()
                    .map(|&x| f64::from(x * x))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / teaching.len() as f64;
        if mean_square <= 0.0 {
            return None;
        }
        model.scale = 1.0 / mean_square.sqrt();
        Some(model)
    }

    /// `post`'s mix of subjects (see [`TopicModel::place_words`]).
    pub fn place(&self, post: &CandidatePost) -> Subject {
        self.place_words(words_of(post))
    }

    /// The mix of subjects of a text's words (each word's subjects, each word's prior even), less
    /// the even mix.
    fn place_words(&self, words: impl Iterator<Item = u32>) -> Subject {
        let mut mix = [ALPHA; SUBJECTS];
        let mut known = 0.0;
        for word in words {
            if let Some(given) = self.words.get(&word) {
                for (m, p) in mix.iter_mut().zip(given) {
                    *m += p;
                }
                known += 1.0;
            }
        }
        if known == 0.0 {
            return Subject::default();
        }
        let total = SUBJECTS as f64 * ALPHA + known;
        mix.map(|m| ((m / total - 1.0 / SUBJECTS as f64) * self.scale) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oleg_features::PostContent;

    /// A post of `words` from one of two vocabularies, with words every post uses between them.
    fn post(post_id: i64, vocabulary: &[&str], seed: usize) -> CandidatePost {
        const FILLER: [&str; 6] = ["today", "new", "more", "this", "week", "story"];
        let text: Vec<&str> = (0..10)
            .map(|k| {
                let pick = (seed * 7 + k * 13) % 97;
                if k % 2 == 0 {
                    vocabulary[pick % vocabulary.len()]
                } else {
                    FILLER[pick % FILLER.len()]
                }
            })
            .collect();
        let content = PostContent {
            text: text.join(" "),
            ..PostContent::default()
        };
        CandidatePost::new("c".into(), post_id, 0, &content)
    }

    const SPACE: [&str; 8] = [
        "rocket",
        "orbit",
        "launch",
        "satellite",
        "mars",
        "comet",
        "galaxy",
        "lunar",
    ];
    const COOKING: [&str; 8] = [
        "recipe", "dough", "garlic", "oven", "soup", "butter", "roast", "sauce",
    ];

    /// Post `i`, on space if `i` is even and on cooking if odd.
    fn on_subject(i: i64) -> CandidatePost {
        post(i, if i % 2 == 0 { &SPACE } else { &COOKING }, i as usize)
    }

    /// What two posts' subjects add to the taste's kernel (at a prior of 1).
    fn kernel(a: &Subject, b: &Subject) -> f64 {
        a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum()
    }

    fn mean(values: &[f64]) -> f64 {
        values.iter().sum::<f64>() / values.len() as f64
    }

    #[test]
    fn posts_on_one_subject_lie_together_though_they_share_few_words() {
        let posts: Vec<CandidatePost> = (0..120).map(on_subject).collect();
        let model = TopicModel::learn(&TeachingTexts::of(&posts)).expect("enough texts");
        let places: Vec<Subject> = posts.iter().map(|p| model.place(p)).collect();
        let mean_squared: f64 = places.iter().map(|p| kernel(p, p)).sum::<f64>() / 120.0;
        assert!((mean_squared - 1.0).abs() < 1e-3, "{mean_squared}");
        let (mut same, mut apart) = (Vec::new(), Vec::new());
        for i in 0..120 {
            for j in i + 1..120 {
                let k = kernel(&places[i], &places[j]);
                if i % 2 == j % 2 {
                    same.push(k)
                } else {
                    apart.push(k)
                }
            }
        }
        assert!(
            mean(&same) > mean(&apart) + 0.5,
            "same subject: {}, apart: {}",
            mean(&same),
            mean(&apart)
        );
        // A post the subjects were not learnt from is placed with its subject.
        let new_space = model.place(&post(500, &SPACE, 1000));
        let towards = |parity: usize| {
            mean(
                &places
                    .iter()
                    .skip(parity)
                    .step_by(2)
                    .map(|p| kernel(p, &new_space))
                    .collect::<Vec<_>>(),
            )
        };
        assert!(
            towards(0) > towards(1) + 0.5,
            "{} against {}",
            towards(0),
            towards(1)
        );
    }

    #[test]
    fn too_few_texts_give_no_subjects() {
        let posts: Vec<CandidatePost> = (0..MIN_TEACHING_POSTS as i64 - 1)
            .map(|i| post(i, &["rocket", "orbit"], i as usize))
            .collect();
        assert!(TopicModel::learn(&TeachingTexts::of(&posts)).is_none());
    }

    #[test]
    fn the_pool_learns_subjects_once_it_has_enough_texts_and_places_posts_that_come_later() {
        let mut pool = crate::pool::Pool::default();
        for i in 0..MIN_TEACHING_POSTS as i64 - 1 {
            pool.insert(on_subject(i), None);
        }
        assert!(!pool.subjects_outgrown(), "too few texts yet");
        assert_eq!(pool.subject(0), &Subject::default());
        for i in MIN_TEACHING_POSTS as i64 - 1..120 {
            pool.insert(on_subject(i), None);
        }
        assert!(pool.subjects_outgrown());
        // As the ranker does it, the learning itself off the pool.
        let texts = pool.teaching_texts();
        assert!(pool.take_topic_model(TopicModel::learn(&texts), texts.pool_posts));
        assert_eq!(pool.subjects_learned_from(), Some(120));
        assert!(!pool.subjects_outgrown(), "learned from every post");
        // Subjects learned from fewer posts than those served are not taken.
        assert!(!pool.take_topic_model(None, 119));
        assert_eq!(pool.subjects_learned_from(), Some(120));
        pool.insert(on_subject(1000), None);
        let newest = pool.subject(pool.posts.len() - 1);
        let towards = |i: usize| kernel(newest, pool.subject(i));
        let (same, apart): (Vec<f64>, Vec<f64>) = (
            (0..120).step_by(2).map(towards).collect(),
            (1..120).step_by(2).map(towards).collect(),
        );
        assert!(
            mean(&same) > mean(&apart) + 0.5,
            "{} against {}",
            mean(&same),
            mean(&apart)
        );
        for i in 121..151 {
            pool.insert(on_subject(i), None);
        }
        assert!(pool.subjects_outgrown(), "grown by a quarter");
    }
}
