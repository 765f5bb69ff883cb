/// Holdout figures: mean squared error, log-loss and ROC AUC.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub mse: f64,
    pub log_loss: f64,
    pub auc: f64,
    pub count: usize,
    /// Liked votes among `count`.
    pub positives: usize,
}

impl Evaluation {
    /// The standard error of the AUC on a holdout of this many likes and dislikes (Hanley &
    /// McNeil, 1982); infinite where it cannot be measured.
    pub fn auc_standard_error(&self) -> f64 {
        let (p, n) = (self.positives as f64, (self.count - self.positives) as f64);
        let a = self.auc;
        if !a.is_finite() || p == 0.0 || n == 0.0 {
            return f64::INFINITY;
        }
        let (q1, q2) = (a / (2.0 - a), 2.0 * a * a / (1.0 + a));
        let variance =
            (a * (1.0 - a) + (p - 1.0) * (q1 - a * a) + (n - 1.0) * (q2 - a * a)) / (p * n);
        variance.max(0.0).sqrt()
    }
}

/// Scores predictions (probabilities; values above 1 from the 1.05 scale are clipped for the
/// log-loss) against 0/1 labels. AUC counts ties as half, via average ranks.
pub fn evaluate_predictions(predictions: &[f32], labels: &[f32]) -> Evaluation {
    assert_eq!(predictions.len(), labels.len(), "one prediction per label");
    let n = predictions.len();
    if n == 0 {
        return Evaluation {
            mse: f64::NAN,
            log_loss: f64::NAN,
            auc: f64::NAN,
            count: 0,
            positives: 0,
        };
    }
    let mut squared = 0.0;
    let mut log_loss = 0.0;
    const EPS: f64 = 1e-7;
    for (&p, &y) in predictions.iter().zip(labels) {
        let (p, y) = (f64::from(p), f64::from(y));
        squared += (p - y).powi(2);
        let q = p.clamp(EPS, 1.0 - EPS);
        log_loss -= y * q.ln() + (1.0 - y) * (1.0 - q).ln();
    }
    Evaluation {
        mse: squared / n as f64,
        log_loss: log_loss / n as f64,
        auc: roc_auc(predictions, labels),
        count: n,
        positives: labels.iter().filter(|&&y| y > 0.5).count(),
    }
}

fn roc_auc(predictions: &[f32], labels: &[f32]) -> f64 {
    let mut order: Vec<usize> = (0..predictions.len()).collect();
    order.sort_by(|&a, &b| predictions[a].total_cmp(&predictions[b]));
    // Sum of the (tie-averaged, 1-based) ranks of the positives.
    let mut positive_rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && predictions[order[j + 1]] == predictions[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if labels[k] > 0.5 {
                positive_rank_sum += average_rank;
            }
        }
        i = j + 1;
    }
    let positives = labels.iter().filter(|&&y| y > 0.5).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return f64::NAN;
    }
    (positive_rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_known_orderings() {
        assert_eq!(
            evaluate_predictions(&[0.1, 0.2, 0.8, 0.9], &[0.0, 0.0, 1.0, 1.0]).auc,
            1.0
        );
        assert_eq!(
            evaluate_predictions(&[0.9, 0.8, 0.2, 0.1], &[0.0, 0.0, 1.0, 1.0]).auc,
            0.0
        );
        assert_eq!(
            evaluate_predictions(&[0.5, 0.5, 0.5, 0.5], &[0.0, 1.0, 0.0, 1.0]).auc,
            0.5
        );
        // One inversion of four pairs.
        assert_eq!(
            evaluate_predictions(&[0.1, 0.6, 0.5, 0.9], &[0.0, 0.0, 1.0, 1.0]).auc,
            0.75
        );
    }

    #[test]
    fn mse_and_log_loss() {
        let e = evaluate_predictions(&[1.0, 0.0], &[1.0, 0.0]);
        assert_eq!(e.mse, 0.0);
        assert!(e.log_loss < 1e-6);
        let e = evaluate_predictions(&[0.5, 0.5], &[1.0, 0.0]);
        assert!((e.mse - 0.25).abs() < 1e-12);
        assert!((e.log_loss - std::f64::consts::LN_2).abs() < 1e-9);
        assert!(evaluate_predictions(&[1.05], &[1.0]).log_loss.is_finite());
    }
}
