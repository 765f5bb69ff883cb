//! A person's taste beyond what the model knows of them, for Thompson sampling: a Bayesian
//! logistic regression of their votes on the kinds of post they voted on (the channel, and the
//! structural features: media, length, links, forwarding), with the model's estimate for each
//! post as the offset. Fitted per request by Newton's method (a Laplace approximation: a
//! Gaussian at the posterior's mode).
//!
//! Why: a person's last few votes reach the model only at its next training, and the model
//! learns a person from a handful of votes slowly (an embedding of a hundred numbers). A weight
//! per kind of post needs few votes: two liked photos say something about the next photo. A kind
//! they never voted on keeps its prior, so a post of an untried kind has a wide posterior: that
//! is what explores.

/// The posterior over a person's weights, one per kind of post their votes had.
#[derive(Debug, Clone)]
pub struct Taste {
    /// Per kind slot (see [`crate::pool::Pool::kinds_of`]): its index in `mean`, or `NONE`.
    dims: Vec<u32>,
    mean: Vec<f64>,
    /// `mean.len()` squared, row-major.
    covariance: Vec<f64>,
    prior_variance: f64,
}

/// One vote: the kinds of its post, the model's logit for the person and post, and whether they
/// liked it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub kinds: &'a [u32],
    pub offset: f64,
    pub liked: bool,
}

const NONE: u32 = u32::MAX;
const NEWTON_STEPS: usize = 12;

impl Taste {
    /// The posterior from `votes` under a prior N(0, `prior_sd`²) on every weight; `slots` is
    /// how many kinds there are.
    pub fn fit(slots: usize, votes: &[Observation], prior_sd: f64) -> Self {
        let mut dims = vec![NONE; slots];
        let mut used = 0u32;
        for vote in votes {
            for &kind in vote.kinds {
                if dims[kind as usize] == NONE {
                    dims[kind as usize] = used;
                    used += 1;
                }
            }
        }
        let d = used as usize;
        let prior_variance = prior_sd * prior_sd;
        let mut taste = Self {
            dims,
            mean: vec![0.0; d],
            covariance: Vec::new(),
            prior_variance,
        };
        if d == 0 {
            return taste;
        }
        let rows: Vec<Vec<usize>> = votes
            .iter()
            .map(|v| {
                v.kinds
                    .iter()
                    .map(|&k| taste.dims[k as usize] as usize)
                    .collect()
            })
            .collect();
        let mut hessian = vec![0.0; d * d];
        for _ in 0..NEWTON_STEPS {
            // Gradient and Hessian of the negative log posterior at the current mean.
            let mut gradient: Vec<f64> = taste.mean.iter().map(|w| w / prior_variance).collect();
            hessian.iter_mut().for_each(|h| *h = 0.0);
            for i in 0..d {
                hessian[i * d + i] = 1.0 / prior_variance;
            }
            for (vote, row) in votes.iter().zip(&rows) {
                let z = vote.offset + row.iter().map(|&i| taste.mean[i]).sum::<f64>();
                let p = sigmoid(z);
                let residual = p - f64::from(u8::from(vote.liked));
                let curvature = (p * (1.0 - p)).max(1e-9);
                for &i in row {
                    gradient[i] += residual;
                    for &j in row {
                        hessian[i * d + j] += curvature;
                    }
                }
            }
            let Some(factor) = cholesky(&hessian, d) else {
                break;
            };
            let step = solve(&factor, d, &gradient);
            let largest = step.iter().fold(0f64, |m, s| m.max(s.abs()));
            for (w, s) in taste.mean.iter_mut().zip(&step) {
                *w -= s;
            }
            if largest < 1e-6 {
                break;
            }
        }
        // The covariance is the inverse Hessian at the mode (close enough to the last one).
        if let Some(factor) = cholesky(&hessian, d) {
            let mut covariance = vec![0.0; d * d];
            let mut unit = vec![0.0; d];
            for column in 0..d {
                unit.iter_mut().for_each(|u| *u = 0.0);
                unit[column] = 1.0;
                for (row, value) in solve(&factor, d, &unit).into_iter().enumerate() {
                    covariance[row * d + column] = value;
                }
            }
            taste.covariance = covariance;
        } else {
            taste.covariance = (0..d * d)
                .map(|i| {
                    if i % (d + 1) == 0 {
                        prior_variance
                    } else {
                        0.0
                    }
                })
                .collect();
        }
        taste
    }

    /// The person's mean weight summed over `kinds`: what to add to the model's logit.
    pub fn mean(&self, kinds: &[u32]) -> f64 {
        kinds
            .iter()
            .filter_map(|&k| self.dim(k))
            .map(|i| self.mean[i])
            .sum()
    }

    /// The variance of that sum: the posterior's over kinds they voted on, the prior's for
    /// each other.
    pub fn variance(&self, kinds: &[u32]) -> f64 {
        let d = self.mean.len();
        let mut seen = [0usize; 16];
        let (mut count, mut variance) = (0, 0.0);
        for &kind in kinds {
            match self.dim(kind) {
                Some(i) if count < seen.len() => {
                    seen[count] = i;
                    count += 1;
                }
                Some(_) | None => variance += self.prior_variance,
            }
        }
        for &i in &seen[..count] {
            for &j in &seen[..count] {
                variance += self.covariance[i * d + j];
            }
        }
        variance
    }

    fn dim(&self, kind: u32) -> Option<usize> {
        match self.dims.get(kind as usize) {
            Some(&i) if i != NONE => Some(i as usize),
            _ => None,
        }
    }
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The logit of a probability kept away from 0 and 1.
pub fn logit(p: f64) -> f64 {
    let p = p.clamp(0.02, 0.98);
    (p / (1.0 - p)).ln()
}

/// The lower Cholesky factor of the symmetric positive definite `d`×`d` matrix `m`.
fn cholesky(m: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let sum: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                let pivot = m[i * d + i] - sum;
                if pivot <= 0.0 {
                    return None;
                }
                l[i * d + i] = pivot.sqrt();
            } else {
                l[i * d + j] = (m[i * d + j] - sum) / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// Solves L Lᵀ x = b for the factor `l` of [`cholesky`].
fn solve(l: &[f64], d: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; d];
    for i in 0..d {
        let sum: f64 = (0..i).map(|k| l[i * d + k] * y[k]).sum();
        y[i] = (b[i] - sum) / l[i * d + i];
    }
    let mut x = vec![0.0; d];
    for i in (0..d).rev() {
        let sum: f64 = (i + 1..d).map(|k| l[k * d + i] * x[k]).sum();
        x[i] = (y[i] - sum) / l[i * d + i];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(kinds: &[u32], offset: f64, liked: bool) -> Observation<'_> {
        Observation {
            kinds,
            offset,
            liked,
        }
    }

    #[test]
    fn without_votes_every_kind_keeps_its_prior() {
        let taste = Taste::fit(4, &[], 0.5);
        assert_eq!(taste.mean(&[0, 2, 3]), 0.0);
        assert!((taste.variance(&[0, 2, 3]) - 3.0 * 0.25).abs() < 1e-12);
    }

    #[test]
    fn liked_kinds_rise_disliked_fall_and_voted_kinds_narrow() {
        // Kind 0: a channel; 1: photos; 2: long texts. Photos liked, long texts not.
        let (photo, long) = ([0, 1], [0, 2]);
        let votes: Vec<Observation> = (0..6)
            .flat_map(|_| [vote(&photo, 0.0, true), vote(&long, 0.0, false)])
            .collect();
        let taste = Taste::fit(4, &votes, 1.0);
        assert!(taste.mean(&[1]) > 0.5, "{}", taste.mean(&[1]));
        assert!(taste.mean(&[2]) < -0.5, "{}", taste.mean(&[2]));
        assert!(
            taste.mean(&[0]).abs() < 1e-6,
            "as many likes as not on the channel"
        );
        assert!(taste.variance(&[1]) < 0.8, "{}", taste.variance(&[1]));
        assert_eq!(taste.variance(&[3]), 1.0, "a kind never voted on");
    }

    #[test]
    fn what_the_model_expected_moves_the_taste_less() {
        let kinds = [0];
        let fit = |offset| Taste::fit(1, &[vote(&kinds, offset, true); 3], 1.0).mean(&kinds);
        assert!(fit(2.0) < fit(0.0) && fit(0.0) < fit(-2.0));
    }

    #[test]
    fn the_mean_is_the_posteriors_mode() {
        let (a, b, c) = ([0, 1], [0, 2], [1, 2]);
        let votes = [
            vote(&a, 0.3, true),
            vote(&b, -0.5, false),
            vote(&c, 1.0, true),
            vote(&a, -1.0, false),
        ];
        let prior_sd = 0.7;
        let taste = Taste::fit(3, &votes, prior_sd);
        // The gradient of the log posterior vanishes there.
        for kind in 0..3u32 {
            let likelihood: f64 = votes
                .iter()
                .filter(|v| v.kinds.contains(&kind))
                .map(|v| {
                    let p = sigmoid(v.offset + taste.mean(v.kinds));
                    f64::from(u8::from(v.liked)) - p
                })
                .sum();
            let gradient = likelihood - taste.mean(&[kind]) / (prior_sd * prior_sd);
            assert!(gradient.abs() < 1e-8, "kind {kind}: {gradient}");
        }
    }
}
