//! The channel and content networks' training step with its gradients written out by hand:
//! about 25 libtorch operations a step where autograd's graph runs about 80, each with its dispatch, its
//! output allocation and its bookkeeping, which at batch 512 cost more than the arithmetic
//! (docs/BENCHMARKS.md, "Where a step's time goes"). The forward pass is the one autograd's loss
//! uses (`Network::mlp_forward`), run without a graph; the backward pass is autograd's arithmetic,
//! and a test holds the two to the same gradients.

use crate::network::{
    with_ids_kept, MlpForward, CHANNEL, CONTENT, HIDDEN_B, HIDDEN_W, OUTPUT_B, OUTPUT_W, POST,
    POST_BIAS, USER,
};
use crate::{Batch, LossKind, Network, Variant};
use tch::{Kind, Reduction, Tensor};

/// One parameter's gradient for one step.
pub(crate) enum Gradient {
    /// Rows of an embedding table, one per use in the batch: a row the batch used twice comes
    /// twice, and adds twice.
    Rows {
        rows: Tensor,
        values: Tensor,
    },
    Dense(Tensor),
}

impl Gradient {
    /// What autograd's last `backward` left in `parameter`, if anything.
    pub(crate) fn accumulated(parameter: &Tensor) -> Option<Self> {
        let gradient = parameter.grad();
        if !gradient.defined() {
            None
        } else if gradient.is_sparse() {
            Some(Self::Rows {
                rows: gradient.internal_indices().select(0, 0),
                values: gradient.internal_values(),
            })
        } else {
            Some(Self::Dense(gradient))
        }
    }
}

/// A batch's forward pass through `channel_mlp` or `content_mlp`, kept for its backward pass.
pub(crate) struct ExplicitPass<'a> {
    network: &'a Network,
    users: Tensor,
    posts: Tensor,
    channels: Tensor,
    id_kept: Option<Tensor>,
    forward: MlpForward,
    /// d loss / d logit, votes × 1.
    logit_gradient: Tensor,
    /// The batch's loss, penalty included, as `Network::loss` computes it.
    pub(crate) loss: Tensor,
}

impl Network {
    /// The forward pass of a step whose gradients are written by hand, for the variants that
    /// have one (`channel_mlp`, `content_mlp`); `None` for `dot`, which trains through autograd.
    pub(crate) fn explicit_pass(&self, batch: &Batch, labels: &Tensor) -> Option<ExplicitPass<'_>> {
        let config = self.config();
        if config.variant == Variant::Dot {
            return None;
        }
        let n = labels.size()[0] as f64;
        Some(tch::no_grad(|| {
            let forward = self.mlp_forward(batch);
            let logits = &forward.logits;
            let labels = labels.unsqueeze(1);
            let (loss, logit_gradient) = match config.loss {
                LossKind::Bce => (
                    logits.binary_cross_entropy_with_logits::<Tensor>(
                        &labels,
                        None,
                        None,
                        Reduction::Mean,
                    ),
                    (logits.sigmoid() - &labels) / n,
                ),
                LossKind::Mse => {
                    let squashed = logits.sigmoid();
                    let scale = config.output_scale;
                    let error = &squashed * scale - &labels;
                    (
                        error.square().mean(Kind::Float),
                        Tensor::sigmoid_backward(&(error * (2.0 * scale / n)), &squashed),
                    )
                }
            };
            let loss = if config.weight_decay > 0.0 {
                loss + self.mlp_penalty(&forward, n)
            } else {
                loss
            };
            ExplicitPass {
                network: self,
                users: batch.users.shallow_clone(),
                posts: batch.posts.shallow_clone(),
                channels: batch.channels.shallow_clone(),
                id_kept: batch.id_kept.as_ref().map(Tensor::shallow_clone),
                forward,
                logit_gradient,
                loss,
            }
        }))
    }
}

impl ExplicitPass<'_> {
    /// Every parameter's gradient, in the order of `Network::named_tensors`.
    pub(crate) fn backward(self) -> Vec<Option<Gradient>> {
        let network = self.network;
        let config = network.config();
        let MlpForward {
            inputs,
            hidden,
            content,
            ..
        } = &self.forward;
        let n = inputs.size()[0] as f64;
        let decay = config.weight_decay;
        tch::no_grad(|| {
            let hidden_w = network.param(HIDDEN_W);
            let output_w = network.param(OUTPUT_W);
            let mut output_w_gradient = self.logit_gradient.tr().mm(hidden);
            let output_b_gradient = self.logit_gradient.sum_dim_intlist(0, false, Kind::Float);
            let hidden_gradient = hidden.threshold_backward(&self.logit_gradient.mm(output_w), 0.0);
            let mut hidden_w_gradient = hidden_gradient.tr().mm(inputs);
            let hidden_b_gradient = hidden_gradient.sum_dim_intlist(0, false, Kind::Float);
            let mut inputs_gradient = hidden_gradient.mm(hidden_w);
            if decay > 0.0 {
                inputs_gradient += inputs * (2.0 * decay / n);
                hidden_w_gradient += hidden_w * (2.0 * decay);
                output_w_gradient += output_w * (2.0 * decay);
            }
            let (user_dim, post_dim) = (config.user_dim, config.post_dim);
            let post_gradient = inputs_gradient.narrow(1, user_dim, post_dim);
            // A dropped id row and bias took no part in the vote's logit.
            let kept = |gradient| with_ids_kept(self.id_kept.as_ref(), gradient);
            // A post's vector is its id row plus its content rows (each times its weight), so
            // each gets the vector's gradient, the content rows times their weight.
            let (content_gradient, bias_gradient) = match content {
                Some((entries, biases)) => {
                    // A new tensor, not `+=`: that would add into the logit gradient itself.
                    let bias_gradient = if decay > 0.0 {
                        &self.logit_gradient + biases * (2.0 * decay / n)
                    } else {
                        self.logit_gradient.shallow_clone()
                    };
                    (
                        Some(Gradient::Rows {
                            rows: entries.rows.shallow_clone(),
                            values: post_gradient.index_select(0, &entries.positions)
                                * entries.weights.unsqueeze(1),
                        }),
                        Some(Gradient::Rows {
                            rows: self.posts.shallow_clone(),
                            values: kept(bias_gradient),
                        }),
                    )
                }
                None => (None, None),
            };
            let rows = |rows: &Tensor, values: Tensor| {
                Some(Gradient::Rows {
                    rows: rows.shallow_clone(),
                    values,
                })
            };
            let mut by_name = [
                (
                    USER,
                    rows(&self.users, inputs_gradient.narrow(1, 0, user_dim)),
                ),
                (POST, rows(&self.posts, kept(post_gradient))),
                (
                    CHANNEL,
                    rows(
                        &self.channels,
                        inputs_gradient.narrow(1, user_dim + post_dim, config.channel_dim),
                    ),
                ),
                (CONTENT, content_gradient),
                (POST_BIAS, bias_gradient),
                (HIDDEN_W, Some(Gradient::Dense(hidden_w_gradient))),
                (HIDDEN_B, Some(Gradient::Dense(hidden_b_gradient))),
                (OUTPUT_W, Some(Gradient::Dense(output_w_gradient))),
                (OUTPUT_B, Some(Gradient::Dense(output_b_gradient))),
            ];
            network
                .named_tensors()
                .iter()
                .map(|(name, _)| {
                    by_name
                        .iter_mut()
                        .find(|(n, _)| n == name)
                        .and_then(|(_, gradient)| gradient.take())
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Gradient;
    use crate::{Batch, LossKind, ModelConfig, Network, OptimizerKind, Sizes, Variant};
    use oleg_features::{PostContent, PostFeatures};
    use tch::{Device, Kind, Tensor};

    fn dense(gradient: &Gradient, rows_of: i64) -> Tensor {
        match gradient {
            Gradient::Dense(g) => g.copy(),
            Gradient::Rows { rows, values } => {
                Tensor::zeros([rows_of, values.size()[1]], (Kind::Float, Device::Cpu))
                    .index_add(0, rows, values)
            }
        }
    }

    /// Autograd's and the hand-written gradients of one batch with repeated rows, for each loss,
    /// with and without weight decay.
    #[test]
    fn explicit_gradients_are_autograds() {
        let cases = [Variant::ChannelMlp, Variant::ContentMlp]
            .into_iter()
            .flat_map(|variant| {
                [
                    (variant, LossKind::Mse, 0.0),
                    (variant, LossKind::Mse, 1e-2),
                    (variant, LossKind::Bce, 0.0),
                    (variant, LossKind::Bce, 1e-2),
                ]
            });
        for (variant, loss, decay) in cases {
            tch::manual_seed(7);
            let config = ModelConfig {
                variant,
                content_buckets: 16,
                loss,
                optimizer: OptimizerKind::Sgd,
                weight_decay: decay,
                output_scale: if loss == LossKind::Mse { 1.05 } else { 1.0 },
                ..ModelConfig::default()
            };
            let sizes = Sizes {
                users: 5,
                posts: 7,
                channels: 3,
            };
            let mut network = Network::new(&config, sizes, Device::Cpu);
            // Posts 0 to 5 have content (some sharing features), post 6 none.
            let contents: Vec<PostFeatures> = (0..6)
                .map(|post| {
                    PostFeatures::of(&PostContent {
                        text: format!("post {} of {}", post % 3, post),
                        ..PostContent::default()
                    })
                })
                .collect();
            network.add_post_contents(&contents);
            if variant == Variant::ContentMlp {
                // Id rows and biases start at zero: move them so their gradients show.
                tch::no_grad(|| {
                    for (_, parameter) in network.params_mut() {
                        let _ = parameter.g_add_(&(parameter.randn_like() * 0.1));
                    }
                });
            }
            let batch = Batch {
                users: Tensor::from_slice(&[0i64, 1, 1, 4, 2, 0]),
                posts: Tensor::from_slice(&[3i64, 3, 6, 0, 2, 5]),
                channels: Tensor::from_slice(&[1i64, 1, 2, 0, 0, 1]),
                // Post 3's id row and bias dropped for one of its two votes, post 0's for its one.
                id_kept: (variant == Variant::ContentMlp)
                    .then(|| Tensor::from_slice(&[1f32, 0., 1., 0., 1., 1.]).unsqueeze(1)),
            };
            let labels = Tensor::from_slice(&[1f32, 0., 1., 1., 0., 0.]);

            let autograd_loss = network.loss(&batch, &labels);
            autograd_loss.backward();
            let pass = network.explicit_pass(&batch, &labels).expect("channel_mlp");
            let explicit_loss = pass.loss.double_value(&[]);
            assert!(
                (explicit_loss - autograd_loss.double_value(&[])).abs() < 1e-6,
                "{variant:?}, {loss:?}, decay {decay}: loss {explicit_loss} against {}",
                autograd_loss.double_value(&[])
            );
            let explicit = pass.backward();
            for ((name, parameter), explicit) in network.named_tensors().iter().zip(&explicit) {
                let rows_of = parameter.size()[0];
                let autograd = Gradient::accumulated(parameter).expect("autograd's gradient");
                let explicit = explicit.as_ref().expect("explicit gradient");
                let difference = (dense(explicit, rows_of) - dense(&autograd, rows_of))
                    .abs()
                    .max()
                    .double_value(&[]);
                assert!(
                    difference < 1e-6,
                    "{variant:?}, {loss:?}, decay {decay}: {name} differs by {difference}"
                );
            }
        }
    }
}
