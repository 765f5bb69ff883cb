use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    ChannelMlp,
    /// The channel network with a post's content ([`oleg_features`]) added to its id embedding.
    ContentMlp,
    Dot,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::ChannelMlp => "channel_mlp",
            Variant::ContentMlp => "content_mlp",
            Variant::Dot => "dot",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Mean squared error on the scaled sigmoid output (the original).
    Mse,
    /// Binary cross-entropy on the logit (the output scale must be 1).
    Bce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    /// Adam; embedding rows are updated lazily (only those a batch touched), as SparseAdam does,
    /// with one second moment per row and the first in bfloat16 (FBGEMM's partial row-wise Adam).
    Adam,
}

/// The network and how it is trained. Defaults reproduce the original OLEG network; a partial
/// table in configuration takes the defaults for what it leaves out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub variant: Variant,
    pub user_dim: i64,
    pub post_dim: i64,
    pub channel_dim: i64,
    pub hidden: i64,
    /// Embedding size of the dot variant (person and post).
    pub dot_dim: i64,
    /// Rows of the content table of `content_mlp`: feature hashes share rows modulo this.
    pub content_buckets: i64,
    /// The sigmoid is multiplied by this (1.05 in the original, so that 1 is reachable).
    pub output_scale: f64,
    pub loss: LossKind,
    pub optimizer: OptimizerKind,
    pub learning_rate: f64,
    /// L2 penalty on the embedding rows a batch used and on the dense weights.
    pub weight_decay: f64,
    pub batch_size: i64,
    /// Epochs of a full (from scratch) training.
    pub epochs: usize,
    /// Standard deviation of the initial embedding values.
    pub init_std: f64,
    /// `content_mlp`: the share of training votes whose post is seen without its id row and
    /// bias, by its channel and content alone, as a post nobody has voted on is scored; so the
    /// content rows learn what they can tell of a post instead of leaving it to the id rows.
    pub id_dropout: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            variant: Variant::ChannelMlp,
            user_dim: 100,
            post_dim: 20,
            channel_dim: 80,
            hidden: 70,
            dot_dim: 32,
            content_buckets: 1 << 14,
            output_scale: 1.05,
            loss: LossKind::Mse,
            optimizer: OptimizerKind::Sgd,
            learning_rate: 0.3,
            weight_decay: 0.0,
            batch_size: 512,
            epochs: 12,
            init_std: 1.0,
            id_dropout: 0.0,
        }
    }
}

impl ModelConfig {
    /// Problems with the configuration, as (field, expected) pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        for (field, value) in [
            ("user_dim", self.user_dim),
            ("post_dim", self.post_dim),
            ("channel_dim", self.channel_dim),
            ("hidden", self.hidden),
            ("dot_dim", self.dot_dim),
        ] {
            if !(1..=4096).contains(&value) {
                problems.push((field, format!("a size from 1 to 4096, found {value}")));
            }
        }
        if !(1..=1 << 24).contains(&self.content_buckets) {
            problems.push((
                "content_buckets",
                format!("from 1 to 16777216, found {}", self.content_buckets),
            ));
        }
        if !(1..=1_000_000).contains(&self.batch_size) {
            problems.push((
                "batch_size",
                format!("from 1 to 1000000, found {}", self.batch_size),
            ));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 100.0) {
            problems.push((
                "learning_rate",
                format!("above 0 and at most 100, found {}", self.learning_rate),
            ));
        }
        if !(0.0..=10.0).contains(&self.weight_decay) {
            problems.push((
                "weight_decay",
                format!("from 0 to 10, found {}", self.weight_decay),
            ));
        }
        if !(1..=10_000).contains(&self.epochs) {
            problems.push(("epochs", format!("from 1 to 10000, found {}", self.epochs)));
        }
        if !(self.init_std > 0.0 && self.init_std <= 10.0) {
            problems.push((
                "init_std",
                format!("above 0 and at most 10, found {}", self.init_std),
            ));
        }
        if !(0.0..1.0).contains(&self.id_dropout) {
            problems.push((
                "id_dropout",
                format!("from 0 to below 1, found {}", self.id_dropout),
            ));
        } else if self.id_dropout > 0.0 && self.variant != Variant::ContentMlp {
            problems.push((
                "id_dropout",
                format!(
                    "0 unless variant = \"content_mlp\" (a post without its id row has nothing else), found {}",
                    self.id_dropout
                ),
            ));
        }
        match self.loss {
            LossKind::Bce if self.output_scale != 1.0 => problems.push((
                "output_scale",
                format!(
                    "1 with loss = \"bce\" (a probability), found {}",
                    self.output_scale
                ),
            )),
            _ if !(self.output_scale >= 1.0 && self.output_scale <= 2.0) => problems.push((
                "output_scale",
                format!("from 1 to 2, found {}", self.output_scale),
            )),
            _ => {}
        }
        problems
    }
}
