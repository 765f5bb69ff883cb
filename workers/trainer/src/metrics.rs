use prometheus::{
    exponential_buckets, Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry,
};

#[derive(Clone)]
pub struct TrainerMetrics {
    pub cycles: IntCounterVec,
    pub cycle_seconds: Histogram,
    pub epoch_loss: Gauge,
    pub holdout_auc: Gauge,
    pub holdout_mse: Gauge,
    pub holdout_log_loss: Gauge,
    pub votes_per_second: Gauge,
    pub model_version: IntGauge,
    pub model_published_at: Gauge,
    pub pending_votes: IntGauge,
    pub lease_lost: IntCounterVec,
}

impl TrainerMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| Gauge::new(name, help);
        let metrics = Self {
            cycles: IntCounterVec::new(
                Opts::new("oleg_trainer_cycles_total", "Training cycles by kind (full, incremental) and outcome (published, rejected, failed)."),
                &["kind", "outcome"],
            )?,
            cycle_seconds: Histogram::with_opts(
                HistogramOpts::new("oleg_trainer_cycle_seconds", "Duration of a training cycle, reading and publishing included.")
                    .buckets(exponential_buckets(0.25, 2.0, 16)?),
            )?,
            epoch_loss: gauge("oleg_trainer_epoch_loss", "Training loss of the last epoch of the last cycle.")?,
            holdout_auc: gauge("oleg_trainer_holdout_auc", "Holdout ROC AUC of the last trained model.")?,
            holdout_mse: gauge("oleg_trainer_holdout_mse", "Holdout mean squared error of the last trained model.")?,
            holdout_log_loss: gauge("oleg_trainer_holdout_log_loss", "Holdout log-loss of the last trained model.")?,
            votes_per_second: gauge("oleg_trainer_votes_per_second", "Training throughput of the last cycle (votes × epochs / s).")?,
            model_version: IntGauge::new("oleg_trainer_model_version", "The live model version (0: none yet).")?,
            model_published_at: gauge("oleg_trainer_model_published_timestamp_seconds", "When the live model was published (Unix time).")?,
            pending_votes: IntGauge::new("oleg_trainer_pending_votes", "New and changed votes announced since the last cycle.")?,
            lease_lost: IntCounterVec::new(
                Opts::new("oleg_trainer_lease_busy_total", "Cycles skipped or abandoned because another trainer holds the lease."),
                &["when"],
            )?,
        };
        registry.register(Box::new(metrics.cycles.clone()))?;
        registry.register(Box::new(metrics.cycle_seconds.clone()))?;
        registry.register(Box::new(metrics.epoch_loss.clone()))?;
        registry.register(Box::new(metrics.holdout_auc.clone()))?;
        registry.register(Box::new(metrics.holdout_mse.clone()))?;
        registry.register(Box::new(metrics.holdout_log_loss.clone()))?;
        registry.register(Box::new(metrics.votes_per_second.clone()))?;
        registry.register(Box::new(metrics.model_version.clone()))?;
        registry.register(Box::new(metrics.model_published_at.clone()))?;
        registry.register(Box::new(metrics.pending_votes.clone()))?;
        registry.register(Box::new(metrics.lease_lost.clone()))?;
        Ok(metrics)
    }
}
