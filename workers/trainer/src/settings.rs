use oleg_model::ModelConfig;
use oleg_settings::{AmqpSettings, Check, LogSettings, MongoSettings, Validate};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Everything `oleg-trainer` reads from configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct TrainerConfig {
    pub log: LogSettings,
    pub amqp: AmqpSettings,
    pub mongo: MongoSettings,
    pub trainer: TrainerSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerSettings {
    pub metrics_addr: String,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads.
    pub threads: i32,
    /// An incremental cycle needs this many new or changed votes…
    pub min_new_votes: u64,
    /// …and this long since the last cycle.
    pub min_interval_s: u64,
    pub incremental_epochs: usize,
    /// Older votes sampled into an incremental cycle: up to this many times the new ones…
    pub older_sample_factor: u64,
    /// …but at least this many batches in all.
    pub min_batches: u64,
    /// A full retraining from scratch after this many incremental cycles.
    pub full_every: u64,
    /// Share of the most recent votes held out for evaluation, at most `holdout_max`.
    pub holdout_share: f64,
    pub holdout_max: u64,
    /// A model is published only if its holdout AUC is at most this much below the live one's.
    pub max_auc_drop: f64,
    /// The training lease expires this long after its holder stops renewing it.
    pub lease_ttl_s: u64,
    /// An incremental cycle reads the votes ingested this long before the live model's newest
    /// one again (skipping those it trained on): a batch that committed late, stamped earlier,
    /// is not missed.
    pub watermark_overlap_s: u64,
    /// Votes ingested longer ago than this are left out of training (0: none are), so people
    /// and posts with no vote since drop out of the model at the next full retraining and its
    /// size follows activity, not history; one who returns comes back as a new row.
    pub active_days: u32,
    /// Votes per read from the store.
    pub read_batch: u32,
    pub seed: u64,
    /// The network trained and published.
    pub model: ModelConfig,
    /// Named configurations compared by `oleg-trainer eval`.
    #[serde(default)]
    pub variants: BTreeMap<String, ModelConfig>,
}

impl TrainerSettings {
    pub fn device(&self) -> Option<tch::Device> {
        match self.device.as_str() {
            "cpu" => Some(tch::Device::Cpu),
            "cuda" => Some(tch::Device::Cuda(0)),
            other => other
                .strip_prefix("cuda:")?
                .parse()
                .ok()
                .map(tch::Device::Cuda),
        }
    }
}

fn check_model(check: &mut Check, prefix: &str, model: &ModelConfig) {
    for (field, expected) in model.problems() {
        check.require(
            false,
            format!("{prefix}.{field}"),
            &expected,
            "an invalid value",
        );
    }
}

impl Validate for TrainerConfig {
    fn validate(&self, _: &str, check: &mut Check) {
        self.log.validate("log", check);
        self.amqp.validate("amqp", check);
        self.mongo.validate("mongo", check);
        let s = &self.trainer;
        check.socket_addr("trainer.metrics_addr".into(), &s.metrics_addr);
        check.require(
            s.device().is_some(),
            "trainer.device".into(),
            "\"cpu\", \"cuda\" or \"cuda:N\"",
            format!("{:?}", s.device),
        );
        check.in_range("trainer.threads".into(), s.threads, 1, 256);
        check.in_range("trainer.min_new_votes".into(), s.min_new_votes, 1, u64::MAX);
        check.in_range("trainer.min_interval_s".into(), s.min_interval_s, 0, 86_400);
        check.in_range(
            "trainer.incremental_epochs".into(),
            s.incremental_epochs,
            1,
            1000,
        );
        check.in_range(
            "trainer.older_sample_factor".into(),
            s.older_sample_factor,
            0,
            10_000,
        );
        check.in_range("trainer.min_batches".into(), s.min_batches, 1, 1_000_000);
        check.in_range("trainer.full_every".into(), s.full_every, 1, 1_000_000);
        check.require(
            s.holdout_share > 0.0 && s.holdout_share < 0.5,
            "trainer.holdout_share".into(),
            "a share above 0 and below 0.5",
            s.holdout_share,
        );
        check.in_range("trainer.holdout_max".into(), s.holdout_max, 1, 100_000_000);
        check.in_range("trainer.max_auc_drop".into(), s.max_auc_drop, 0.0, 1.0);
        check.in_range("trainer.lease_ttl_s".into(), s.lease_ttl_s, 2, 3_600);
        check.in_range("trainer.active_days".into(), s.active_days, 0, 36_500);
        check.in_range(
            "trainer.watermark_overlap_s".into(),
            s.watermark_overlap_s,
            0,
            86_400,
        );
        check.in_range("trainer.read_batch".into(), s.read_batch, 1, 1_000_000);
        check_model(check, "trainer.model", &s.model);
        for (name, variant) in &s.variants {
            check_model(check, &format!("trainer.variants.{name}"), variant);
        }
    }
}
