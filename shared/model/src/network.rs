use crate::content::{Gathered, PostContents};
use crate::{LossKind, ModelConfig, ModelError, Variant};
use oleg_features::PostFeatures;
use tch::{Device, Kind, Reduction, Tensor};

/// Rows of each embedding table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    pub users: i64,
    pub posts: i64,
    pub channels: i64,
}

/// Row indices (Int64, one per vote) of the person, the post and its channel.
pub struct Batch {
    pub users: Tensor,
    pub posts: Tensor,
    pub channels: Tensor,
    /// In training with `id_dropout`: per vote (votes × 1, Float), 1 where the post keeps its
    /// id row and bias and 0 where it is seen by its channel and content alone.
    pub id_kept: Option<Tensor>,
}

/// `rows` (one per vote: a post's id row, bias, or their gradient) with those of the votes whose
/// post id was dropped set to nought; unchanged without a mask.
pub(crate) fn with_ids_kept(id_kept: Option<&Tensor>, rows: Tensor) -> Tensor {
    match id_kept {
        Some(kept) => rows * kept,
        None => rows,
    }
}

/// The network's parameters as named tensors, in a fixed order. Names and layouts follow
/// PyTorch (`hidden.weight` is out × in), so weights read the same anywhere.
pub struct Network {
    config: ModelConfig,
    params: Vec<(&'static str, Tensor)>,
    device: Device,
    /// Each post row's content features (`content_mlp` only; not parameters).
    contents: PostContents,
}

pub(crate) const USER: &str = "user_embedding";
pub(crate) const POST: &str = "post_embedding";
pub(crate) const CHANNEL: &str = "channel_embedding";
pub(crate) const CONTENT: &str = "content_embedding";
/// Written beside the parameters of `content_mlp`: each post row's content vector as trained,
/// so that a scorer needs no post's content to score the posts the model knows.
pub const POST_CONTENT: &str = "post_content";
pub(crate) const HIDDEN_W: &str = "hidden.weight";
pub(crate) const HIDDEN_B: &str = "hidden.bias";
pub(crate) const OUTPUT_W: &str = "output.weight";
pub(crate) const OUTPUT_B: &str = "output.bias";
const USER_BIAS: &str = "user_bias";
pub(crate) const POST_BIAS: &str = "post_bias";
const GLOBAL_BIAS: &str = "global_bias";

/// What the MLPs' forward pass computed for a batch.
pub(crate) struct MlpForward {
    /// The concatenated embedding rows, votes × (person + post with its content + channel).
    pub(crate) inputs: Tensor,
    /// After the ReLU.
    pub(crate) hidden: Tensor,
    /// Votes × 1.
    pub(crate) logits: Tensor,
    /// `content_mlp`: the posts' content entries and their per-post biases.
    pub(crate) content: Option<(Gathered, Tensor)>,
}

/// Embedding tables (indexed by row) and whether each is a per-post table.
const TABLES: [(&str, Table); 5] = [
    (USER, Table::User),
    (POST, Table::Post),
    (CHANNEL, Table::Channel),
    (USER_BIAS, Table::User),
    (POST_BIAS, Table::Post),
];

#[derive(Clone, Copy, PartialEq)]
enum Table {
    User,
    Post,
    Channel,
}

impl Network {
    /// A freshly initialised network: embeddings ~ N(0, init_std) (PyTorch's default for
    /// `nn.Embedding` at init_std = 1), linear layers ~ U(±1/√fan_in) (PyTorch's default).
    pub fn new(config: &ModelConfig, sizes: Sizes, device: Device) -> Self {
        let options = (Kind::Float, device);
        let normal =
            |rows: i64, dim: i64, std: f64| Tensor::zeros([rows, dim], options).normal_(0.0, std);
        let uniform = |shape: &[i64], fan_in: i64| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            Tensor::zeros(shape, options).uniform_(-bound, bound)
        };
        let params = match config.variant {
            Variant::ChannelMlp | Variant::ContentMlp => {
                let input = config.user_dim + config.post_dim + config.channel_dim;
                let with_content = config.variant == Variant::ContentMlp;
                let posts = if with_content {
                    // A post's id row only adds what its content does not say; a new post has
                    // none yet.
                    Tensor::zeros([sizes.posts, config.post_dim], options)
                } else {
                    normal(sizes.posts, config.post_dim, config.init_std)
                };
                let mut params = vec![
                    (USER, normal(sizes.users, config.user_dim, config.init_std)),
                    (POST, posts),
                    (
                        CHANNEL,
                        normal(sizes.channels, config.channel_dim, config.init_std),
                    ),
                ];
                if with_content {
                    // What every person sees in a post alike (its quality) is one number per
                    // post, added to the logit: votes of anyone move it.
                    params.push((POST_BIAS, Tensor::zeros([sizes.posts, 1], options)));
                    // A post sums about six unit-weight features: this starts its content
                    // vector at the spread of an id embedding.
                    params.push((
                        CONTENT,
                        normal(
                            config.content_buckets,
                            config.post_dim,
                            config.init_std / 6f64.sqrt(),
                        ),
                    ));
                }
                params.extend([
                    (HIDDEN_W, uniform(&[config.hidden, input], input)),
                    (HIDDEN_B, uniform(&[config.hidden], input)),
                    (OUTPUT_W, uniform(&[1, config.hidden], config.hidden)),
                    (OUTPUT_B, uniform(&[1], config.hidden)),
                ]);
                params
            }
            Variant::Dot => {
                // Dot products of N(0, s) vectors have variance dim·s⁴: this keeps it at init_std⁴.
                let std = config.init_std / (config.dot_dim as f64).powf(0.25);
                vec![
                    (USER, normal(sizes.users, config.dot_dim, std)),
                    (POST, normal(sizes.posts, config.dot_dim, std)),
                    (USER_BIAS, Tensor::zeros([sizes.users, 1], options)),
                    (POST_BIAS, Tensor::zeros([sizes.posts, 1], options)),
                    (GLOBAL_BIAS, Tensor::zeros([1], options)),
                ]
            }
        };
        Self::with_params(config.clone(), params, device)
    }

    fn with_params(
        config: ModelConfig,
        params: Vec<(&'static str, Tensor)>,
        device: Device,
    ) -> Self {
        let params = params
            .into_iter()
            .map(|(n, t)| (n, t.set_requires_grad(true)))
            .collect();
        Self {
            config,
            params,
            device,
            contents: PostContents::default(),
        }
    }

    /// Rebuilds a network from named tensors (as written by [`Network::named_tensors`]).
    pub fn from_named(
        config: &ModelConfig,
        named: Vec<(String, Tensor)>,
        device: Device,
    ) -> Result<Self, ModelError> {
        let fresh = Self::new(
            config,
            Sizes {
                users: 1,
                posts: 1,
                channels: 1,
            },
            Device::Cpu,
        );
        let mut params = Vec::new();
        for (name, template) in &fresh.params {
            let (_, tensor) = named
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| ModelError::Weights(format!("{name} is missing")))?;
            let (expected, found) = (template.size(), tensor.size());
            let is_table = TABLES.iter().any(|(t, _)| t == name);
            let same_shape = if is_table {
                expected[1..] == found[1..]
            } else {
                expected == found
            };
            if !same_shape {
                return Err(ModelError::Weights(format!(
                    "{name} has shape {found:?}, the configuration needs {expected:?}"
                )));
            }
            params.push((
                *name,
                tensor
                    .to_kind(Kind::Float)
                    .to_device(device)
                    .detach()
                    .copy(),
            ));
        }
        Ok(Self::with_params(config.clone(), params, device))
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn sizes(&self) -> Sizes {
        let rows = |name| self.param(name).size()[0];
        Sizes {
            users: rows(USER),
            posts: rows(POST),
            channels: match self.config.variant {
                Variant::ChannelMlp | Variant::ContentMlp => rows(CHANNEL),
                Variant::Dot => 0,
            },
        }
    }

    pub fn named_tensors(&self) -> &[(&'static str, Tensor)] {
        &self.params
    }

    pub(crate) fn params_mut(&mut self) -> &mut [(&'static str, Tensor)] {
        &mut self.params
    }

    pub(crate) fn param(&self, name: &str) -> &Tensor {
        &self
            .params
            .iter()
            .find(|(n, _)| *n == name)
            .expect("parameter of this variant")
            .1
    }

    /// Logits (before the sigmoid) and the L2 penalty on what the batch used.
    fn logits(&self, batch: &Batch) -> (Tensor, Option<Tensor>) {
        let n = batch.users.size()[0] as f64;
        let decay = self.config.weight_decay;
        match self.config.variant {
            Variant::ChannelMlp | Variant::ContentMlp => {
                let forward = self.mlp_forward(batch);
                // Built only with decay: without, these operations cost a step 4 % for nothing.
                let penalty = (decay > 0.0).then(|| self.mlp_penalty(&forward, n));
                (forward.logits.squeeze_dim(-1), penalty)
            }
            Variant::Dot => {
                let u = self.lookup(USER, &batch.users);
                let p = self.lookup(POST, &batch.posts);
                let logits = (&u * &p).sum_dim_intlist(1, false, Kind::Float)
                    + self.lookup(USER_BIAS, &batch.users).squeeze_dim(-1)
                    + self.lookup(POST_BIAS, &batch.posts).squeeze_dim(-1)
                    + self.param(GLOBAL_BIAS);
                let penalty = (decay > 0.0).then(|| {
                    (u.square().sum(Kind::Float) + p.square().sum(Kind::Float)) * (decay / n)
                });
                (logits, penalty)
            }
        }
    }

    /// The MLPs' forward pass to the logit, with what the hand-written backward pass reads
    /// (`explicit.rs`); under autograd the same operations build the graph.
    pub(crate) fn mlp_forward(&self, batch: &Batch) -> MlpForward {
        let kept = |rows| with_ids_kept(batch.id_kept.as_ref(), rows);
        let mut posts = kept(self.lookup(POST, &batch.posts));
        let content = (self.config.variant == Variant::ContentMlp).then(|| {
            let entries = self.content_entries(&batch.posts);
            posts = posts.index_add(0, &entries.positions, &self.weighted_content(&entries));
            let biases = kept(self.lookup(POST_BIAS, &batch.posts));
            (entries, biases)
        });
        let inputs = Tensor::cat(
            &[
                self.lookup(USER, &batch.users),
                posts,
                self.lookup(CHANNEL, &batch.channels),
            ],
            1,
        );
        let hidden = inputs
            .linear(self.param(HIDDEN_W), Some(self.param(HIDDEN_B)))
            .relu();
        let mut logits = hidden.linear(self.param(OUTPUT_W), Some(self.param(OUTPUT_B)));
        if let Some((_, biases)) = &content {
            logits += biases;
        }
        MlpForward {
            inputs,
            hidden,
            logits,
            content,
        }
    }

    /// The MLPs' L2 penalty: on the rows a batch used, per vote, and on the layers' weights.
    pub(crate) fn mlp_penalty(&self, forward: &MlpForward, votes: f64) -> Tensor {
        let decay = self.config.weight_decay;
        let mut used = forward.inputs.square().sum(Kind::Float);
        if let Some((_, biases)) = &forward.content {
            used += biases.square().sum(Kind::Float);
        }
        used * (decay / votes)
            + (self.param(HIDDEN_W).square().sum(Kind::Float)
                + self.param(OUTPUT_W).square().sum(Kind::Float))
                * decay
    }

    /// The rows of table `name` (sparse gradients: a step touches only the rows its batch used).
    fn lookup(&self, name: &str, rows: &Tensor) -> Tensor {
        Tensor::embedding(self.param(name), rows, -1, false, true)
    }

    /// Each entry's row of the content table times its weight.
    fn weighted_content(&self, entries: &Gathered) -> Tensor {
        self.lookup(CONTENT, &entries.rows) * entries.weights.unsqueeze(1)
    }

    /// Each post's content vector: the weighted sum of its features' rows of the content table.
    fn content_vectors(&self, posts: &Tensor) -> Tensor {
        let n = posts.size()[0];
        let entries = self.content_entries(posts);
        Tensor::zeros([n, self.config.post_dim], (Kind::Float, self.device)).index_add(
            0,
            &entries.positions,
            &self.weighted_content(&entries),
        )
    }

    /// The content table's entries of `posts`: rows, weights and each one's batch position.
    pub(crate) fn content_entries(&self, posts: &Tensor) -> Gathered {
        self.contents
            .gather(&PostContents::host_rows(posts), self.device)
    }

    /// Post rows whose content the network has (`content_mlp`; other variants keep none).
    pub fn post_contents(&self) -> usize {
        self.contents.len()
    }

    /// Gives the next post rows their content; a row without any scores as content-free.
    pub fn add_post_contents<'a>(&mut self, features: impl IntoIterator<Item = &'a PostFeatures>) {
        if self.config.variant == Variant::ContentMlp {
            for f in features {
                self.contents.push(f, self.config.content_buckets);
            }
        }
    }

    /// Tensors a scorer reads beside the parameters: for `content_mlp`, [`POST_CONTENT`].
    pub fn derived_tensors(&self) -> Vec<(&'static str, Tensor)> {
        const BLOCK: i64 = 1 << 16;
        if self.config.variant != Variant::ContentMlp {
            return Vec::new();
        }
        let posts = self.sizes().posts;
        let blocks: Vec<Tensor> = tch::no_grad(|| {
            (0..posts)
                .step_by(BLOCK as usize)
                .map(|start| {
                    let rows = Tensor::arange_start(
                        start,
                        (start + BLOCK).min(posts),
                        (Kind::Int64, self.device),
                    );
                    self.content_vectors(&rows)
                })
                .collect()
        });
        let content = if blocks.is_empty() {
            Tensor::zeros([0, self.config.post_dim], (Kind::Float, self.device))
        } else {
            Tensor::cat(&blocks, 0)
        };
        vec![(POST_CONTENT, content)]
    }

    fn output(&self, logits: &Tensor) -> Tensor {
        logits.sigmoid() * self.config.output_scale
    }

    /// `batch` with its posts' id rows dropped for a random `id_dropout` share of its votes
    /// (`content_mlp` in training; unchanged otherwise).
    pub fn with_id_dropout(&self, mut batch: Batch) -> Batch {
        let share = self.config.id_dropout;
        if share > 0.0 && self.config.variant == Variant::ContentMlp {
            let votes = batch.posts.size()[0];
            batch.id_kept =
                Some(Tensor::full([votes, 1], 1.0 - share, (Kind::Float, self.device)).bernoulli());
        }
        batch
    }

    /// The training loss of a batch, with its graph (call `backward` on it, then drop it).
    pub fn loss(&self, batch: &Batch, labels: &Tensor) -> Tensor {
        let (logits, penalty) = self.logits(batch);
        let loss = match self.config.loss {
            LossKind::Mse => self.output(&logits).mse_loss(labels, Reduction::Mean),
            LossKind::Bce => logits.binary_cross_entropy_with_logits::<Tensor>(
                labels,
                None,
                None,
                Reduction::Mean,
            ),
        };
        match penalty {
            Some(penalty) => loss + penalty,
            None => loss,
        }
    }

    /// Predicted like probabilities (scaled as trained), without a graph.
    pub fn predict(&self, batch: &Batch) -> Tensor {
        tch::no_grad(|| self.output(&self.logits(batch).0))
    }

    /// Grows the tables to `sizes` without retraining what is known. New people and channels
    /// start from the average row; in `content_mlp` a new post's id row starts at zero (it is
    /// its content, see [`Network::add_post_contents`]); otherwise a new post starts from the
    /// average post of its channel
    /// (`post_channels[row]` is the channel row of every post, old and new), or from the
    /// average post when its channel has none yet.
    pub fn grow(&mut self, sizes: Sizes, post_channels: &[i64]) -> Result<(), ModelError> {
        let old = self.sizes();
        if sizes.users < old.users || sizes.posts < old.posts || sizes.channels < old.channels {
            return Err(ModelError::Weights(format!(
                "cannot shrink {old:?} to {sizes:?}"
            )));
        }
        if post_channels.len() as i64 != sizes.posts {
            return Err(ModelError::Weights(format!(
                "{} post channels given for {} posts",
                post_channels.len(),
                sizes.posts
            )));
        }
        let channel_rows = Tensor::from_slice(post_channels).to_device(self.device);
        let channels_needed = post_channels.iter().copied().max().map_or(0, |m| m + 1);
        let channel_slots = sizes.channels.max(channels_needed);
        tch::no_grad(|| {
            for (name, tensor) in self.params.iter_mut() {
                let Some((_, table)) = TABLES.iter().find(|(t, _)| t == name) else {
                    continue;
                };
                let (old_rows, new_rows) = match table {
                    Table::User => (old.users, sizes.users),
                    Table::Post => (old.posts, sizes.posts),
                    Table::Channel => (old.channels, sizes.channels),
                };
                if new_rows == old_rows {
                    continue;
                }
                let dim = tensor.size()[1];
                let grown = Tensor::zeros([new_rows, dim], (Kind::Float, self.device));
                grown.narrow(0, 0, old_rows).copy_(tensor);
                let average = tensor.mean_dim(0, true, Kind::Float);
                let mut fresh = grown.narrow(0, old_rows, new_rows - old_rows);
                if *table == Table::Post && self.config.variant == Variant::ContentMlp {
                    // A new post is its content until votes say more (the rows are zero).
                } else if *table == Table::Post && old_rows > 0 {
                    // Sum and count the old posts of each channel, then average per channel.
                    let old_channels = channel_rows.narrow(0, 0, old_rows);
                    let sums = Tensor::zeros([channel_slots, dim], (Kind::Float, self.device))
                        .index_add(0, &old_channels, tensor);
                    let counts = Tensor::zeros([channel_slots], (Kind::Float, self.device))
                        .index_add(
                            0,
                            &old_channels,
                            &Tensor::ones([old_rows], (Kind::Float, self.device)),
                        );
                    let per_channel = (&sums / counts.clamp_min(1.0).unsqueeze(1)).where_self(
                        &counts.gt(0.0).unsqueeze(1),
                        &average.expand([channel_slots, dim], false),
                    );
                    let new_channels = channel_rows.narrow(0, old_rows, new_rows - old_rows);
                    fresh.copy_(&per_channel.index_select(0, &new_channels));
                } else {
                    fresh.copy_(&average.expand([new_rows - old_rows, dim], false));
                }
                *tensor = grown.set_requires_grad(true);
            }
        });
        Ok(())
    }
}
