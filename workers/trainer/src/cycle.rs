//! One training cycle: read votes from the store, hold out the most recent ones, train, compare
//! with the live model on the same holdout, publish or reject.

use crate::dataset::{Columns, Vocabularies};
use crate::settings::TrainerSettings;
use oleg_model::{
    evaluate_predictions, labels_of, predict, train_epoch, Evaluation, ModelConfig, Network,
    Optimizer, Sizes, Votes,
};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CycleKind {
    /// From scratch on every vote.
    Full,
    /// The live model, a few more epochs on the new votes plus a sample of older ones.
    Incremental,
}

/// Where the trainer stands between cycles.
#[derive(Debug, Clone, Copy)]
pub struct Standing {
    /// Votes announced since the last cycle.
    pub pending_votes: u64,
    /// Time since the last cycle ended; `None` before the first.
    pub since_last_cycle: Option<Duration>,
    /// A model is live (an incremental cycle has something to start from).
    pub has_live: bool,
    pub incrementals_since_full: u64,
}

/// Whether a cycle is due, and which: none before `min_new_votes` announced votes and
/// `min_interval_s` since the last cycle; a full one when no model is live, and as every
/// `full_every`-th cycle; incremental otherwise.
pub fn due(settings: &TrainerSettings, standing: Standing) -> Option<CycleKind> {
    let waited = standing
        .since_last_cycle
        .is_none_or(|t| t >= Duration::from_secs(settings.min_interval_s));
    if standing.pending_votes < settings.min_new_votes || !waited {
        return None;
    }
    Some(
        if !standing.has_live || standing.incrementals_since_full + 1 >= settings.full_every {
            CycleKind::Full
        } else {
            CycleKind::Incremental
        },
    )
}

impl CycleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CycleKind::Full => "full",
            CycleKind::Incremental => "incremental",
        }
    }
}

/// A cycle's votes: the training rows already as tensors (the host columns are gone), the
/// holdout rows as columns.
pub struct CycleData {
    pub train: Votes,
    pub holdout: Columns,
}

/// What a cycle measured.
#[derive(Debug, Clone, Copy)]
pub struct CycleFigures {
    pub epochs: usize,
    pub last_epoch_loss: f64,
    pub candidate: Evaluation,
    /// The live model on the same holdout, when there is one.
    pub live: Option<Evaluation>,
    pub votes_per_second: f64,
    pub train_votes: usize,
}

/// Splits the cycle's votes: the most recent `share` (by vote time) of `recent_pool` rows, at
/// most `max`, are held out; everything else trains, moved to `device`.
pub fn hold_out_recent(
    columns: Columns,
    voted_at_ms: &[i64],
    recent_pool: std::ops::Range<usize>,
    share: f64,
    max: u64,
    device: Device,
) -> CycleData {
    let mut pool: Vec<usize> = recent_pool.collect();
    pool.sort_by_key(|&i| std::cmp::Reverse(voted_at_ms[i]));
    let count = ((pool.len() as f64 * share).round() as usize).min(max as usize);
    let mut held = vec![false; columns.len()];
    for &i in &pool[..count] {
        held[i] = true;
    }
    let (holdout, train): (Vec<usize>, Vec<usize>) = (0..columns.len()).partition(|&i| held[i]);
    let holdout = columns.pick(&holdout);
    let train = columns.pick(&train).to_votes(device);
    CycleData { train, holdout }
}

/// Brings `network` to the vocabularies' sizes (new rows start from averages, see
/// [`Network::grow`]) and gives its new post rows their content features.
pub fn fit_to(network: &mut Network, vocab: &Vocabularies) -> Result<(), oleg_model::ModelError> {
    let sizes = Sizes {
        users: vocab.users.len(),
        posts: vocab.posts.len(),
        channels: vocab.channels.len(),
    };
    let current = network.sizes();
    if sizes.users > current.users
        || sizes.posts > current.posts
        || sizes.channels > current.channels
    {
        let sizes = Sizes {
            users: sizes.users.max(current.users),
            posts: sizes.posts.max(current.posts),
            channels: sizes.channels.max(current.channels),
        };
        network.grow(sizes, &vocab.post_channels())?;
    }
    let known = network.post_contents();
    network.add_post_contents(vocab.post_features.get(known..).unwrap_or_default());
    Ok(())
}

/// Evaluates `network` on `holdout`.
pub fn evaluate(network: &Network, holdout: &Columns) -> Evaluation {
    let votes = holdout.to_votes(network.device());
    let rows = votes.all_rows();
    evaluate_predictions(&predict(network, &votes, &rows), &labels_of(&votes, &rows))
}

/// Training stopped between batches: the lease was lost or a stop was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Trains `network` for `epochs` on `data.train` and evaluates it on `data.holdout`, unless
/// `stop` is set (checked between batches). Everything allocated here is dropped on return:
/// losses come back as numbers, the optimizer (and any Adam state) dies with this call.
pub fn train(
    network: &mut Network,
    data: &CycleData,
    epochs: usize,
    live: Option<Evaluation>,
    stop: &AtomicBool,
) -> Result<CycleFigures, Stopped> {
    let device = network.device();
    let votes = &data.train;
    let rows = Tensor::arange(votes.len(), (Kind::Int64, device));
    let batch_size = network.config().batch_size;
    let mut optimizer = Optimizer::new(network);
    let started = Instant::now();
    let mut last_epoch_loss = f64::NAN;
    let go_on = |_| {
        if stop.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    for _ in 0..epochs {
        last_epoch_loss = train_epoch(network, &mut optimizer, votes, &rows, batch_size, go_on);
        if stop.load(Ordering::SeqCst) {
            return Err(Stopped);
        }
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    Ok(CycleFigures {
        epochs,
        last_epoch_loss,
        candidate: evaluate(network, &data.holdout),
        live,
        votes_per_second: (votes.len() as usize * epochs) as f64 / seconds,
        train_votes: votes.len() as usize,
    })
}

/// A fresh network for a full cycle, sized to the vocabularies.
pub fn fresh_network(config: &ModelConfig, vocab: &Vocabularies, device: Device) -> Network {
    let sizes = Sizes {
        users: vocab.users.len(),
        posts: vocab.posts.len(),
        channels: vocab.channels.len(),
    };
    let mut network = Network::new(config, sizes, device);
    network.add_post_contents(&vocab.post_features);
    network
}

/// How far below the live model's holdout AUC the candidate's may be: `max_auc_drop`, or the
/// holdout's noise where that is larger (two standard errors of the difference, taking the two
/// AUCs as independent, which overstates it: they share the holdout). On a holdout of a few
/// dozen votes two equally good models differ by more than any fixed allowance, and rejecting on
/// noise keeps a stale model serving; on a large holdout the allowance is `max_auc_drop`.
pub fn allowed_auc_drop(figures: &CycleFigures, max_auc_drop: f64) -> f64 {
    let noise = figures.live.map_or(0.0, |live| {
        2.0 * (figures.candidate.auc_standard_error().powi(2) + live.auc_standard_error().powi(2))
            .sqrt()
    });
    max_auc_drop.max(noise)
}

/// Whether the candidate may replace the live model.
pub fn accept(figures: &CycleFigures, max_auc_drop: f64) -> bool {
    match figures.live {
        None => figures.candidate.auc.is_finite() || figures.candidate.count == 0,
        Some(live) if !live.auc.is_finite() => true,
        Some(live) => figures.candidate.auc >= live.auc - allowed_auc_drop(figures, max_auc_drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TrainerSettings {
        let config: crate::settings::TrainerConfig =
            oleg_settings::load(&oleg_settings::Sources::repository())
                .expect("the repository's configuration");
        let mut settings = config.trainer;
        settings.min_new_votes = 100;
        settings.min_interval_s = 60;
        settings.full_every = 3;
        settings
    }

    fn standing(
        pending_votes: u64,
        since_s: Option<u64>,
        has_live: bool,
        incrementals: u64,
    ) -> Standing {
        Standing {
            pending_votes,
            since_last_cycle: since_s.map(Duration::from_secs),
            has_live,
            incrementals_since_full: incrementals,
        }
    }

    #[test]
    fn a_cycle_waits_for_enough_votes_and_the_interval() {
        let s = settings();
        assert_eq!(due(&s, standing(99, None, false, 0)), None);
        assert_eq!(
            due(&s, standing(100, None, false, 0)),
            Some(CycleKind::Full)
        );
        assert_eq!(due(&s, standing(5_000, Some(59), true, 0)), None);
        assert_eq!(
            due(&s, standing(100, Some(60), true, 0)),
            Some(CycleKind::Incremental)
        );
    }

    #[test]
    fn every_full_every_th_cycle_and_any_without_a_live_model_is_full() {
        let s = settings();
        let kinds: Vec<_> = (0..3)
            .map(|incrementals| due(&s, standing(100, Some(60), true, incrementals)))
            .collect();
        use CycleKind::*;
        assert_eq!(
            kinds,
            vec![Some(Incremental), Some(Incremental), Some(Full)]
        );
        assert_eq!(due(&s, standing(100, Some(60), false, 0)), Some(Full));
    }

    fn evaluation(auc: f64, count: usize) -> Evaluation {
        Evaluation {
            mse: 0.2,
            log_loss: 0.6,
            auc,
            count,
            positives: count / 2,
        }
    }

    fn figures(candidate: Evaluation, live: Option<Evaluation>) -> CycleFigures {
        CycleFigures {
            epochs: 1,
            last_epoch_loss: 0.5,
            candidate,
            live,
            votes_per_second: 1.0,
            train_votes: 10,
        }
    }

    #[test]
    fn a_candidate_replaces_the_live_model_unless_it_is_worse_beyond_the_allowed_drop() {
        let (live, drop) = (Some(evaluation(0.70, 100_000)), 0.02);
        assert!(accept(&figures(evaluation(0.69, 100_000), live), drop));
        assert!(accept(&figures(evaluation(0.75, 100_000), live), drop));
        assert!(!accept(&figures(evaluation(0.67, 100_000), live), drop));
        // A live model that could not be measured (one class in the holdout) does not block.
        assert!(accept(
            &figures(evaluation(0.5, 100), Some(evaluation(f64::NAN, 100))),
            drop
        ));
    }

    /// Defect: on the demo's holdouts of about 50 votes, 6 of 21 candidates were rejected for
    /// drops such as 0.60 → 0.51, well inside the noise of AUCs measured on 50 votes.
    #[test]
    fn a_drop_the_holdout_cannot_tell_from_noise_does_not_block_a_clear_one_does() {
        let small = |auc| evaluation(auc, 50);
        let noisy = figures(small(0.51), Some(small(0.604)));
        assert!(
            allowed_auc_drop(&noisy, 0.05) > 0.2,
            "{}",
            allowed_auc_drop(&noisy, 0.05)
        );
        assert!(accept(&noisy, 0.05));
        assert!(!accept(&figures(small(0.3), Some(small(0.8))), 0.05));
        // Large holdouts: the configured allowance.
        let large = figures(evaluation(0.70, 200_000), Some(evaluation(0.71, 200_000)));
        assert_eq!(allowed_auc_drop(&large, 0.01), 0.01);
    }

    #[test]
    fn a_first_model_needs_a_measurable_holdout_or_none_at_all() {
        assert!(accept(&figures(evaluation(0.6, 100), None), 0.02));
        assert!(accept(&figures(evaluation(f64::NAN, 0), None), 0.02));
        assert!(!accept(&figures(evaluation(f64::NAN, 100), None), 0.02));
    }
}
