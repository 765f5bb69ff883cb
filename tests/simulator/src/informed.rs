//! The informed anchor: what a learner could pick from the same votes if it saw the posts' hidden
//! features (their channel, traits, and in the generated world topic and quality) but not the
//! person's weights. Per person, a Bayesian
//! logistic regression over those features with the population's prior (the spreads the people
//! are drawn from), fitted by Newton's method with a Laplace approximation of the posterior, and
//! updated with every vote the person gives to what OLEG sent them. It picks the post it expects
//! the person to like most; its pick is scored, like the others, by the person's hidden
//! probability. So it shows how much of the way from random order to the best pick the votes
//! make learnable.

use crate::taste::{PostTraits, TasteSpread, TRAITS};
use crate::world::TOPICS;
use oleg_messages::ChannelName;

/// Newton steps per update (warm-started from the last fit; a few suffice).
const NEWTON_STEPS: usize = 8;

pub struct InformedLearner {
    channels: Vec<ChannelName>,
    prior_mean: Vec<f64>,
    prior_precision: Vec<f64>,
    people: Vec<Posterior>,
}

#[derive(Clone)]
struct Posterior {
    features: Vec<Vec<f64>>,
    liked: Vec<f64>,
    mean: Vec<f64>,
    covariance: Vec<Vec<f64>>,
}

impl InformedLearner {
    /// `people` learners over posts of `channels`, with the prior the people are drawn from
    /// (bias N(-0.3, 0.5²), a channel's weight N(0, spread.channel²), a trait's N(0, spread.traits²)).
    pub fn new(people: usize, channels: &[ChannelName], spread: TasteSpread) -> Self {
        let mut prior_mean = vec![-0.3];
        let mut prior_variance = vec![0.25];
        for _ in channels {
            prior_mean.push(0.0);
            prior_variance.push(spread.channel.powi(2));
        }
        for _ in TRAITS {
            prior_mean.push(0.0);
            prior_variance.push(spread.traits.powi(2));
        }
        for _ in TOPICS {
            prior_mean.push(0.0);
            prior_variance.push(spread.topic.powi(2));
        }
        // Quality counts the same for everyone (weight 1): known, not learned.
        prior_mean.push(1.0);
        prior_variance.push(1e-6);
        let covariance = diagonal(&prior_variance);
        let prior = Posterior {
            features: Vec::new(),
            liked: Vec::new(),
            mean: prior_mean.clone(),
            covariance,
        };
        Self {
            channels: channels.to_vec(),
            prior_precision: prior_variance.iter().map(|v| 1.0 / v).collect(),
            prior_mean,
            people: vec![prior; people],
        }
    }

    fn features(&self, post: &PostTraits) -> Vec<f64> {
        let mut x = vec![1.0];
        x.extend(
            self.channels
                .iter()
                .map(|c| f64::from(u8::from(*c == post.post.channel))),
        );
        x.extend(post.traits);
        x.extend(
            (0..TOPICS.len())
                .map(|t| f64::from(u8::from(post.hidden.is_some_and(|h| h.topic == t)))),
        );
        x.push(post.hidden.map_or(0.0, |h| h.quality));
        x
    }

    /// The person's expected probability of liking `post` (the probit approximation of the
    /// logistic over the posterior).
    pub fn expected(&self, person: usize, post: &PostTraits) -> f64 {
        let posterior = &self.people[person];
        let x = self.features(post);
        let mean = dot(&posterior.mean, &x);
        let variance = dot(&x, &mat_vec(&posterior.covariance, &x));
        sigmoid(mean / (1.0 + std::f64::consts::PI * variance / 8.0).sqrt())
    }

    /// The post among `candidates` the person is expected to like most.
    pub fn pick<'a>(
        &self,
        person: usize,
        candidates: impl Iterator<Item = &'a PostTraits>,
    ) -> Option<&'a PostTraits> {
        candidates
            .map(|post| (self.expected(person, post), post))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, post)| post)
    }

    /// Learns the person's vote on `post`.
    pub fn observe(&mut self, person: usize, post: &PostTraits, liked: bool) {
        let x = self.features(post);
        let posterior = &mut self.people[person];
        posterior.features.push(x);
        posterior.liked.push(f64::from(u8::from(liked)));
        let mut w = posterior.mean.clone();
        let mut hessian = Vec::new();
        for _ in 0..NEWTON_STEPS {
            let mut gradient: Vec<f64> = w
                .iter()
                .zip(&self.prior_mean)
                .zip(&self.prior_precision)
                .map(|((w, m), p)| p * (w - m))
                .collect();
            hessian = diagonal(&self.prior_precision);
            for (x, y) in posterior.features.iter().zip(&posterior.liked) {
                let p = sigmoid(dot(&w, x));
                for i in 0..x.len() {
                    gradient[i] += (p - y) * x[i];
                    for j in 0..x.len() {
                        hessian[i][j] += p * (1.0 - p) * x[i] * x[j];
                    }
                }
            }
            let step = solve(&hessian, &gradient);
            for (w, s) in w.iter_mut().zip(&step) {
                *w -= s;
            }
            if step.iter().all(|s| s.abs() < 1e-8) {
                break;
            }
        }
        posterior.covariance = inverse(&hessian);
        posterior.mean = w;
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn mat_vec(m: &[Vec<f64>], v: &[f64]) -> Vec<f64> {
    m.iter().map(|row| dot(row, v)).collect()
}

fn diagonal(values: &[f64]) -> Vec<Vec<f64>> {
    (0..values.len())
        .map(|i| {
            (0..values.len())
                .map(|j| if i == j { values[i] } else { 0.0 })
                .collect()
        })
        .collect()
}

/// The lower Cholesky factor of a symmetric positive-definite matrix (the Hessian is: a positive
/// prior precision plus positive semi-definite terms).
fn cholesky(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let sum: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                l[i][j] = (a[i][i] - sum).max(1e-12).sqrt();
            } else {
                l[i][j] = (a[i][j] - sum) / l[j][j];
            }
        }
    }
    l
}

fn solve(a: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let l = cholesky(a);
    let n = b.len();
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
    }
    x
}

fn inverse(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = a.len();
    let columns: Vec<Vec<f64>> = (0..n)
        .map(|j| {
            solve(
                a,
                &(0..n)
                    .map(|i| f64::from(u8::from(i == j)))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    (0..n)
        .map(|i| (0..n).map(|j| columns[j][i]).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taste::tests::post;

    #[test]
    fn solving_and_inverting_agree_with_a_known_system() {
        let a = vec![vec![4.0, 2.0], vec![2.0, 3.0]];
        let x = solve(&a, &[2.0, 1.0]);
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12, "{x:?}");
        let inv = inverse(&a);
        assert!((inv[0][0] - 0.375).abs() < 1e-12 && (inv[0][1] + 0.25).abs() < 1e-12);
    }

    #[test]
    fn votes_move_the_learner_toward_the_channel_a_person_likes() {
        let channels = [
            ChannelName::parse("channel_a").unwrap(),
            ChannelName::parse("channel_b").unwrap(),
        ];
        let mut learner = InformedLearner::new(1, &channels, TasteSpread::default());
        let (a, b) = (post("channel_a", [0.0; 4]), post("channel_b", [0.0; 4]));
        assert!((learner.expected(0, &a) - learner.expected(0, &b)).abs() < 1e-12);
        for _ in 0..6 {
            learner.observe(0, &a, true);
            learner.observe(0, &b, false);
        }
        assert!(learner.expected(0, &a) > 0.7 && learner.expected(0, &b) < 0.3);
        let picked = learner.pick(0, [&b, &a].into_iter()).unwrap();
        assert_eq!(picked.post.channel, channels[0]);
    }
}
