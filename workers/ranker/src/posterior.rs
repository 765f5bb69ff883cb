//! A person's own correction to the model's logit, learned from their votes at request time
//! (a neural-linear bandit): the model's logit for a post plus `w · x`, with `x` what the ranker
//! knows of the post (what the output layer reads of it for that person, and its channel) and
//! `w` the person's weights, N(0, diag(σ²)) before any vote. The posterior over `w` after their votes is the Laplace approximation of that logistic
//! regression (a few Newton steps from zero); Thompson sampling draws one `w` per request, so
//! a person with few votes is shown posts the model is unsure of for them, and every vote moves
//! the next pick before any training has seen it.

use rand::Rng;
use rand_distr::StandardNormal;

/// Newton steps from zero: the prior keeps the problem well conditioned, so a few suffice.
const NEWTON_STEPS: usize = 4;

/// The posterior over a person's weights: its mode and the Cholesky factor of its precision.
#[derive(Debug, Clone)]
pub struct Posterior {
    dim: usize,
    mean: Vec<f64>,
    /// Lower-triangular `L` with `L Lᵀ` the precision, row-major `dim × dim`.
    precision_factor: Vec<f64>,
}

impl Posterior {
    /// Fits to votes given as `features` (`prior_variances.len()` numbers per vote), the
    /// model's `logits` for them, and whether each was a like; `prior_variances` is σ² per weight.
    pub fn fit(features: &[f32], logits: &[f32], liked: &[bool], prior_variances: &[f64]) -> Self {
        let dim = prior_variances.len();
        debug_assert_eq!(features.len(), logits.len() * dim);
        let prior_precision: Vec<f64> = prior_variances
            .iter()
            .map(|v| 1.0 / v.max(f64::MIN_POSITIVE))
            .collect();
        let mut mean = vec![0.0; dim];
        let steps = if liked.is_empty() { 0 } else { NEWTON_STEPS };
        let mut factor = Vec::new();
        for step in 0..=steps {
            let mut precision = vec![0.0; dim * dim];
            let mut gradient: Vec<f64> = mean
                .iter()
                .zip(&prior_precision)
                .map(|(w, p)| -w * p)
                .collect();
            for (k, p) in prior_precision.iter().enumerate() {
                precision[k * dim + k] = *p;
            }
            for ((x, &z), &y) in features.chunks_exact(dim).zip(logits).zip(liked) {
                let logit = f64::from(z) + dot(x, &mean);
                let p = 1.0 / (1.0 + (-logit).exp());
                let (residual, weight) = (f64::from(u8::from(y)) - p, p * (1.0 - p));
                for i in 0..dim {
                    let xi = f64::from(x[i]);
                    gradient[i] += residual * xi;
                    let row = &mut precision[i * dim..i * dim + i + 1];
                    for (cell, &xj) in row.iter_mut().zip(x) {
                        *cell += weight * xi * f64::from(xj);
                    }
                }
            }
            factor = cholesky(precision, dim);
            if step == steps {
                break;
            }
            let delta = solve_transposed(&factor, &solve_lower(&factor, &gradient), dim);
            mean.iter_mut().zip(&delta).for_each(|(w, d)| *w += d);
        }
        Self {
            dim,
            mean,
            precision_factor: factor,
        }
    }

    /// One draw of the person's weights.
    pub fn draw(&self, rng: &mut impl Rng) -> Vec<f64> {
        let noise: Vec<f64> = (0..self.dim)
            .map(|_| rng.sample::<f64, _>(StandardNormal))
            .collect();
        // Lᵀ x = ε gives x ~ N(0, (L Lᵀ)⁻¹).
        let offset = solve_transposed(&self.precision_factor, &noise, self.dim);
        self.mean.iter().zip(offset).map(|(m, o)| m + o).collect()
    }

    #[cfg(test)]
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }
}

pub fn dot(x: &[f32], w: &[f64]) -> f64 {
    x.iter().zip(w).map(|(a, b)| f64::from(*a) * b).sum()
}

/// The Cholesky factor of the symmetric positive definite `m` (only its lower triangle is
/// read), computed in place.
fn cholesky(mut m: Vec<f64>, n: usize) -> Vec<f64> {
    for j in 0..n {
        let mut diagonal = m[j * n + j];
        for k in 0..j {
            diagonal -= m[j * n + k] * m[j * n + k];
        }
        // The prior makes the matrix positive definite; the floor only guards rounding.
        let diagonal = diagonal.max(1e-12).sqrt();
        m[j * n + j] = diagonal;
        for i in j + 1..n {
            let mut value = m[i * n + j];
            for k in 0..j {
                value -= m[i * n + k] * m[j * n + k];
            }
            m[i * n + j] = value / diagonal;
        }
        for k in j + 1..n {
            m[j * n + k] = 0.0;
        }
    }
    m
}

/// `x` with `L x = b`.
fn solve_lower(l: &[f64], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut x = b.to_vec();
    for i in 0..n {
        for k in 0..i {
            x[i] -= l[i * n + k] * x[k];
        }
        x[i] /= l[i * n + i];
    }
    x
}

/// `x` with `Lᵀ x = b`.
fn solve_transposed(l: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut x = b.to_vec();
    for i in (0..n).rev() {
        for k in i + 1..n {
            x[i] -= l[k * n + i] * x[k];
        }
        x[i] /= l[i * n + i];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn without_votes_draws_follow_the_prior() {
        let posterior = Posterior::fit(&[], &[], &[], &[4.0; 3]);
        assert_eq!(posterior.mean(), [0.0; 3]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let draws: Vec<f64> = (0..4000).map(|_| posterior.draw(&mut rng)[1]).collect();
        let variance = draws.iter().map(|d| d * d).sum::<f64>() / draws.len() as f64;
        assert!((3.6..4.4).contains(&variance), "{variance}");
    }

    #[test]
    fn votes_move_the_weights_toward_what_the_person_liked_and_narrow_them() {
        // Feature 0 marks what the person likes, feature 1 what they dislike; the model's
        // logit is 0 for all, so only the person's votes can tell.
        let mut features = Vec::new();
        let mut liked = Vec::new();
        for i in 0..20 {
            let likes = i % 2 == 0;
            features.extend([f32::from(u8::from(likes)), f32::from(u8::from(!likes))]);
            liked.push(likes);
        }
        let logits = vec![0.0; liked.len()];
        let posterior = Posterior::fit(&features, &logits, &liked, &[1.0; 2]);
        assert!(posterior.mean()[0] > 1.0, "{:?}", posterior.mean());
        assert!(posterior.mean()[1] < -1.0, "{:?}", posterior.mean());
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let spread = |p: &Posterior, rng: &mut rand::rngs::StdRng| {
            let draws: Vec<f64> = (0..2000).map(|_| p.draw(rng)[0]).collect();
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / draws.len() as f64
        };
        let prior = Posterior::fit(&[], &[], &[], &[1.0; 2]);
        assert!(spread(&posterior, &mut rng) < 0.5 * spread(&prior, &mut rng));
    }

    #[test]
    fn the_mode_solves_the_regularised_logistic_regression() {
        // One feature, offsets that already explain some of the votes: at the mode the
        // gradient of the log posterior is zero.
        let features = [1.0, 0.5, -1.0, 2.0, 0.3];
        let logits = [0.2, -0.4, 0.1, 0.0, 1.0];
        let liked = [true, false, true, true, false];
        let posterior = Posterior::fit(&features, &logits, &liked, &[2.0]);
        let w = posterior.mean()[0];
        let gradient: f64 = features
            .iter()
            .zip(&logits)
            .zip(&liked)
            .map(|((&x, &z), &y)| {
                let p = 1.0 / (1.0 + (-(f64::from(z) + f64::from(x) * w)).exp());
                (f64::from(u8::from(y)) - p) * f64::from(x)
            })
            .sum::<f64>()
            - w / 2.0;
        assert!(gradient.abs() < 1e-6, "gradient {gradient} at {w}");
    }
}
