//! OLEG's recommendation network in tch.
//!
//! Each vote is (person, post, channel of the post) → like = 1 / dislike = 0.
//! - [`Variant::ChannelMlp`] (the original OLEG network, `ModelConfig`'s default; the trainer's
//!   configuration publishes `ContentMlp`): embeddings of the person (100), the post (20) and its
//!   channel (80) are concatenated → Linear(200, 70) → ReLU → Linear(70, 1) → sigmoid × 1.05. Most posts get few votes; the channel embedding carries what
//!   is known of a channel to its new and rarely-voted posts.
//! - [`Variant::ContentMlp`]: the same network, with the post's vector the sum of its id
//!   embedding and its content vector (hashed features of its text, media, links and source,
//!   see `oleg-features`), so a post nobody voted on is scored by what it is. Its id rows start at
//!   zero: a new post is its content. A per-post bias on the logit carries what every person sees
//!   alike in a post (its quality); it too starts at zero.
//! - [`Variant::Dot`]: the earlier baseline, the dot product of person and post embeddings plus
//!   biases, for comparison.
//!
//! Memory discipline: embedding gradients are sparse (only the rows a batch touched), losses are
//! read out as `f64`, evaluation runs under no-grad, and nothing keeps a batch, a prediction or
//! the graph past its step. The two MLPs train without a graph: their backward pass is written
//! out by hand (`explicit.rs`, held to autograd's gradients by a test); `dot` uses autograd.

mod config;
mod content;
mod explicit;
mod metrics;
mod network;
mod optimizer;
mod serialize;
mod training;

pub use config::{LossKind, ModelConfig, OptimizerKind, Variant};
pub use metrics::{evaluate_predictions, Evaluation};
pub use network::{Batch, Network, Sizes, POST_CONTENT};
pub use optimizer::Optimizer;
pub use serialize::{read_tensors, write_network, write_safetensors, NamedTensor, Weights};
pub use training::{
    flush_denormals, labels_of, predict, train_epoch, train_epoch_timed, StepTimes, Votes,
};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("writing weights: {0}")]
    Io(#[from] std::io::Error),
    #[error("weights: {0}")]
    Weights(String),
}
