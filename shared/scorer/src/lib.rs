//! A published model, ready to score in plain Rust.
//!
//! For the channel network the first layer splits: `W₁·[u; p; c] + b₁ = W_u·u + (W_p·p + W_c·c + b₁)`.
//! The bracket depends only on the post, so it is computed once per post when the model loads;
//! a request costs one `hidden × user_dim` matrix-vector product for the person, then per
//! candidate one add-ReLU-dot over `hidden` numbers.
//!
//! The content network (`content_mlp`) scores the posts it knows the same way (the trainer writes
//! each known post's content vector beside the weights). A post it has not seen is scored from
//! its content as the trainer would score it: the weighted sum of its features' rows of the
//! content table, through the post's block of the first layer, on its channel's part.

use oleg_features::{bucket, PostFeatures, FEATURES_VERSION};
use oleg_messages::VocabFile;
// A request looks up every candidate: foldhash (seeded per map) costs a fraction of SipHash.
use foldhash::HashMap;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ScorerError {
    #[error("weights: {0}")]
    Weights(String),
    #[error("vocabulary: {0}")]
    Vocab(String),
}

enum Network {
    Channel {
        user_dim: usize,
        hidden: usize,
        users: Vec<f32>,
        /// `hidden × user_dim`, the person's block of the first layer.
        user_block: Vec<f32>,
        /// Per post row: `W_p·p + W_c·c + b₁`.
        post_parts: Vec<f32>,
        /// For a post the model has not seen, per channel row: `W_p·p̄_c + W_c·c + b₁`, with
        /// `p̄_c` the channel's average post.
        channel_parts: Vec<f32>,
        /// For a post of an unknown channel: `W_p·p̄ + W_c·c̄ + b₁`.
        average_part: Vec<f32>,
        output: Vec<f32>,
        output_bias: f32,
        /// With content (`content_mlp`), a new post's id row is zero: the channel parts above
        /// leave out `W_p·p̄_c`, and the post's content is added per candidate.
        content: Option<ContentTable>,
        /// Per post row, the logit's post bias (`content_mlp`; empty otherwise, and zero for a
        /// post the model has not seen).
        post_bias: Vec<f32>,
    },
    Dot {
        dim: usize,
        users: Vec<f32>,
        user_bias: Vec<f32>,
        posts: Vec<f32>,
        post_bias: Vec<f32>,
        global_bias: f32,
        /// Per channel row, the average post (and its bias) for posts the model has not seen.
        channel_average: Vec<f32>,
        channel_average_bias: Vec<f32>,
        average_post: Vec<f32>,
        average_post_bias: f32,
    },
}

/// The content table of `content_mlp`, and the post's block of the first layer.
struct ContentTable {
    buckets: u32,
    post_dim: usize,
    /// `buckets × post_dim`.
    rows: Vec<f32>,
    /// `hidden × post_dim`: `W_p`.
    post_block: Vec<f32>,
}

impl ContentTable {
    /// `part + W_p·(Σ weight · row(feature))`, into `out`.
    fn add_to(
        &self,
        part: &[f32],
        features: &PostFeatures,
        vector: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) {
        vector.clear();
        vector.resize(self.post_dim, 0.0);
        for (hash, weight) in features.pairs() {
            let row = bucket(*hash, self.buckets) as usize * self.post_dim;
            for (v, r) in vector.iter_mut().zip(&self.rows[row..row + self.post_dim]) {
                *v += weight * r;
            }
        }
        out.clear();
        out.extend_from_slice(part);
        mat_vec_add(&self.post_block, self.post_dim, 0, vector, out);
    }
}

/// A post to score: its row in the model if the model saw it, else its channel (name) and its
/// content (which only a content network reads).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Candidate<'a> {
    Known(usize),
    New {
        channel: &'a str,
        content: &'a PostFeatures,
    },
    /// A post the model did not see, as [`ScoringModel::new_post_part`] worked it out once:
    /// scored as `New` would be, without working it out again for every request.
    Computed {
        part: &'a [f32],
        bias: f32,
    },
}

/// What a model makes of a post it did not see, from its channel and content.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPostPart {
    part: Box<[f32]>,
    bias: f32,
}

impl NewPostPart {
    pub fn candidate(&self) -> Candidate<'_> {
        Candidate::Computed {
            part: &self.part,
            bias: self.bias,
        }
    }
}

pub struct ScoringModel {
    /// Unique per model loaded in this process: what a caller's cache of post rows is for.
    id: u64,
    network: Network,
    output_scale: f32,
    user_rows: HashMap<i64, usize>,
    channel_rows: HashMap<String, usize>,
    /// (channel row, post id) → post row: a lookup costs no allocation.
    post_rows: HashMap<(usize, i64), usize>,
}

struct Tensors<'a>(safetensors::SafeTensors<'a>);

impl Tensors<'_> {
    fn get(&self, name: &str, rank: usize) -> Result<(Vec<usize>, Vec<f32>), ScorerError> {
        let view = self
            .0
            .tensor(name)
            .map_err(|e| ScorerError::Weights(format!("{name}: {e}")))?;
        if view.dtype() != safetensors::Dtype::F32 || view.shape().len() != rank {
            return Err(ScorerError::Weights(format!(
                "{name} is {:?} {:?}, expected rank-{rank} F32",
                view.dtype(),
                view.shape()
            )));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((view.shape().to_vec(), values))
    }
}

fn column_means(values: &[f32], rows: usize, dim: usize) -> Vec<f32> {
    let mut mean = vec![0f32; dim];
    if rows == 0 {
        return mean;
    }
    for row in values.chunks_exact(dim) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows as f32);
    mean
}

/// Per channel row, the mean of its posts' rows (or `fallback` for a channel without posts).
fn channel_means(
    values: &[f32],
    dim: usize,
    post_channels: &[usize],
    channels: usize,
    fallback: &[f32],
) -> Vec<f32> {
    let mut sums = vec![0f32; channels * dim];
    let mut counts = vec![0usize; channels];
    for (row, &channel) in post_channels.iter().enumerate() {
        counts[channel] += 1;
        for k in 0..dim {
            sums[channel * dim + k] += values[row * dim + k];
        }
    }
    for channel in 0..channels {
        for k in 0..dim {
            sums[channel * dim + k] = if counts[channel] == 0 {
                fallback[k]
            } else {
                sums[channel * dim + k] / counts[channel] as f32
            };
        }
    }
    sums
}

/// Columns `start..start + width` of the row-major matrix `m` with `cols` columns, row-major.
fn column_block(m: &[f32], cols: usize, start: usize, width: usize) -> Vec<f32> {
    m.chunks_exact(cols)
        .flat_map(|row| &row[start..start + width])
        .copied()
        .collect()
}

/// `out = M·x (+ out)`, with M `rows × cols` row-major, `x` starting at column `offset` of M.
fn mat_vec_add(m: &[f32], cols: usize, offset: usize, x: &[f32], out: &mut [f32]) {
    for (r, o) in out.iter_mut().enumerate() {
        let row = &m[r * cols + offset..r * cols + offset + x.len()];
        *o += row.iter().zip(x).map(|(a, b)| a * b).sum::<f32>();
    }
}

/// `Σ max(a + b, 0) · w`, summed in 8 independent lanes: a single running sum is a chain of
/// dependent additions that the compiler may not reorder, and costs 4× more on 70 hidden units.
#[inline(always)]
fn relu_dot(a: &[f32], b: &[f32], w: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut lanes = [0f32; LANES];
    let (a8, b8, w8) = (
        a.chunks_exact(LANES),
        b.chunks_exact(LANES),
        w.chunks_exact(LANES),
    );
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .zip(w8.remainder())
        .map(|((x, y), z)| (x + y).max(0.0) * z)
        .sum();
    for ((x, y), z) in a8.zip(b8).zip(w8) {
        for (lane, ((x, y), z)) in lanes.iter_mut().zip(x.iter().zip(y).zip(z)) {
            *lane += (x + y).max(0.0) * z;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `e^x` in plain arithmetic, so that a loop over many values compiles to vector instructions:
/// libm's `expf` is one call per value, a quarter of the time of scoring 100,000 candidates.
/// Cephes' `expf` (range reduction by `ln 2` in two parts, a degree-5 polynomial): relative
/// error below 2·10⁻⁷ (a test checks it); arguments are clamped to where `f32` has a normal
/// result.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // 2ⁿ, built from its exponent bits (n is within -126..=127 after the clamp).
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The trainer's two files, read: the weights, the vocabulary, and each post row's channel row.
struct Files<'a> {
    tensors: Tensors<'a>,
    metadata: BTreeMap<String, String>,
    vocab: VocabFile,
    post_channels: Vec<usize>,
}

impl<'a> Files<'a> {
    fn read(weights: &'a [u8], vocab: &[u8]) -> Result<Self, ScorerError> {
        let vocab: VocabFile =
            serde_json::from_slice(vocab).map_err(|e| ScorerError::Vocab(e.to_string()))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(weights)
            .map_err(|e| ScorerError::Weights(e.to_string()))?;
        let metadata = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let tensors = Tensors(
            safetensors::SafeTensors::deserialize(weights)
                .map_err(|e| ScorerError::Weights(e.to_string()))?,
        );
        let channels = vocab.channels.len();
        let post_channels = vocab
            .posts
            .iter()
            .map(|(c, _)| usize::try_from(*c).ok().filter(|c| *c < channels))
            .collect::<Option<_>>()
            .ok_or_else(|| ScorerError::Vocab("a post names a channel row out of range".into()))?;
        Ok(Self {
            tensors,
            metadata,
            vocab,
            post_channels,
        })
    }

    /// An embedding must have one row per id of its vocabulary.
    fn check_rows(&self, name: &str, shape: &[usize], rows: usize) -> Result<(), ScorerError> {
        if shape[0] == rows {
            Ok(())
        } else {
            Err(ScorerError::Vocab(format!(
                "{name} has {} rows for {rows} ids",
                shape[0]
            )))
        }
    }
}

impl Network {
    /// The channel network (with content or without), with each post's part of the first
    /// layer computed ahead.
    fn channel_mlp(files: &Files, with_content: bool) -> Result<Self, ScorerError> {
        let channels = files.vocab.channels.len();
        let (us, users) = files.tensors.get("user_embedding", 2)?;
        let (ps, mut posts) = files.tensors.get("post_embedding", 2)?;
        let (cs, channel_emb) = files.tensors.get("channel_embedding", 2)?;
        let (hs, w1) = files.tensors.get("hidden.weight", 2)?;
        let (_, b1) = files.tensors.get("hidden.bias", 1)?;
        let (_, w2) = files.tensors.get("output.weight", 2)?;
        let (_, b2) = files.tensors.get("output.bias", 1)?;
        files.check_rows("user_embedding", &us, files.vocab.users.len())?;
        files.check_rows("post_embedding", &ps, files.vocab.posts.len())?;
        files.check_rows("channel_embedding", &cs, channels)?;
        let (user_dim, post_dim, channel_dim, hidden) = (us[1], ps[1], cs[1], hs[0]);
        if hs[1] != user_dim + post_dim + channel_dim
            || w2.len() != hidden
            || b1.len() != hidden
            || b2.len() != 1
        {
            return Err(ScorerError::Weights(
                "layer shapes do not fit the embeddings".into(),
            ));
        }
        let cols = hs[1];
        let mut post_bias = Vec::new();
        let content = if with_content {
            let version = files.metadata.get("features").map(String::as_str);
            if version != Some(FEATURES_VERSION) {
                return Err(ScorerError::Weights(format!(
                    "trained on post features version {version:?}, this scorer computes version {FEATURES_VERSION}"
                )));
            }
            let (ts, rows) = files.tensors.get("content_embedding", 2)?;
            let (cs, post_content) = files.tensors.get("post_content", 2)?;
            files.check_rows("post_content", &cs, files.vocab.posts.len())?;
            if ts[1] != post_dim || cs[1] != post_dim || ts[0] == 0 {
                return Err(ScorerError::Weights(
                    "the content table does not fit the post embedding".into(),
                ));
            }
            posts
                .iter_mut()
                .zip(&post_content)
                .for_each(|(p, c)| *p += c);
            let (bs, bias) = files.tensors.get("post_bias", 2)?;
            files.check_rows("post_bias", &bs, files.vocab.posts.len())?;
            post_bias = bias;
            Some(ContentTable {
                buckets: u32::try_from(ts[0])
                    .map_err(|_| ScorerError::Weights("content table too large".into()))?,
                post_dim,
                rows,
                post_block: column_block(&w1, cols, user_dim, post_dim),
            })
        } else {
            None
        };
        let part = |post: &[f32], channel: &[f32]| {
            let mut out = b1.clone();
            mat_vec_add(&w1, cols, user_dim, post, &mut out);
            mat_vec_add(&w1, cols, user_dim + post_dim, channel, &mut out);
            out
        };
        let post_parts: Vec<f32> = (0..files.vocab.posts.len())
            .flat_map(|row| {
                let c = files.post_channels[row];
                part(
                    &posts[row * post_dim..(row + 1) * post_dim],
                    &channel_emb[c * channel_dim..(c + 1) * channel_dim],
                )
            })
            .collect();
        // A post the model has not seen starts where the trainer would start it: at the
        // average post of its channel, or (with content) at zero plus its content.
        let (average_post, channel_posts) = if content.is_some() {
            (vec![0f32; post_dim], vec![0f32; channels * post_dim])
        } else {
            let average = column_means(&posts, files.vocab.posts.len(), post_dim);
            let per_channel =
                channel_means(&posts, post_dim, &files.post_channels, channels, &average);
            (average, per_channel)
        };
        let channel_parts: Vec<f32> = (0..channels)
            .flat_map(|c| {
                part(
                    &channel_posts[c * post_dim..(c + 1) * post_dim],
                    &channel_emb[c * channel_dim..(c + 1) * channel_dim],
                )
            })
            .collect();
        let average_part = part(
            &average_post,
            &column_means(&channel_emb, channels, channel_dim),
        );
        let user_block = column_block(&w1, cols, 0, user_dim);
        Ok(Network::Channel {
            user_dim,
            hidden,
            users,
            user_block,
            post_parts,
            channel_parts,
            average_part,
            output: w2,
            output_bias: b2[0],
            content,
            post_bias,
        })
    }

    fn dot(files: &Files) -> Result<Self, ScorerError> {
        let channels = files.vocab.channels.len();
        let (us, users) = files.tensors.get("user_embedding", 2)?;
        let (ps, posts) = files.tensors.get("post_embedding", 2)?;
        let (_, user_bias) = files.tensors.get("user_bias", 2)?;
        let (_, post_bias) = files.tensors.get("post_bias", 2)?;
        let (_, global) = files.tensors.get("global_bias", 1)?;
        files.check_rows("user_embedding", &us, files.vocab.users.len())?;
        files.check_rows("post_embedding", &ps, files.vocab.posts.len())?;
        let dim = us[1];
        let average_post = column_means(&posts, files.vocab.posts.len(), dim);
        let average_post_bias = column_means(&post_bias, files.vocab.posts.len(), 1)[0];
        Ok(Network::Dot {
            dim,
            channel_average: channel_means(
                &posts,
                dim,
                &files.post_channels,
                channels,
                &average_post,
            ),
            channel_average_bias: channel_means(
                &post_bias,
                1,
                &files.post_channels,
                channels,
                &[average_post_bias],
            ),
            average_post,
            average_post_bias,
            users,
            user_bias,
            posts,
            post_bias,
            global_bias: global[0],
        })
    }
}

impl ScoringModel {
    /// Builds a model from the trainer's two files.
    pub fn load(weights: &[u8], vocab: &[u8]) -> Result<Self, ScorerError> {
        let files = Files::read(weights, vocab)?;
        let output_scale: f32 = files
            .metadata
            .get("output_scale")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ScorerError::Weights("metadata output_scale missing".into()))?;
        let network = match files.metadata.get("variant").map(String::as_str) {
            Some("channel_mlp") => Network::channel_mlp(&files, false)?,
            Some("content_mlp") => Network::channel_mlp(&files, true)?,
            Some("dot") => Network::dot(&files)?,
            other => return Err(ScorerError::Weights(format!("unknown variant {other:?}"))),
        };
        let Files {
            vocab,
            post_channels,
            ..
        } = files;
        static LOADED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Ok(Self {
            id: LOADED.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            network,
            output_scale,
            user_rows: vocab
                .users
                .iter()
                .enumerate()
                .map(|(row, id)| (*id, row))
                .collect(),
            channel_rows: vocab
                .channels
                .iter()
                .enumerate()
                .map(|(row, c)| (c.clone(), row))
                .collect(),
            post_rows: post_channels
                .iter()
                .zip(&vocab.posts)
                .enumerate()
                .map(|(row, (channel, (_, id)))| ((*channel, *id), row))
                .collect(),
        })
    }

    pub fn user_row(&self, user_id: i64) -> Option<usize> {
        self.user_rows.get(&user_id).copied()
    }

    /// This model's identity among those loaded in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The post's row, if the model saw it.
    pub fn post_row(&self, channel: &str, post_id: i64) -> Option<usize> {
        let channel = *self.channel_rows.get(channel)?;
        self.post_rows.get(&(channel, post_id)).copied()
    }

    pub fn candidate<'a>(
        &self,
        channel: &'a str,
        post_id: i64,
        content: &'a PostFeatures,
    ) -> Candidate<'a> {
        match self.post_row(channel, post_id) {
            Some(row) => Candidate::Known(row),
            None => Candidate::New { channel, content },
        }
    }

    /// What this model makes of a post it did not see (for [`Candidate::Computed`]): for a
    /// content network most of a new post's cost, which depends on the model and the post only.
    pub fn new_post_part(&self, channel: &str, content: &PostFeatures) -> NewPostPart {
        let (mut vector, mut with_content) = (Vec::new(), Vec::new());
        let (part, bias) = self.new_part(channel, content, &mut vector, &mut with_content);
        NewPostPart {
            part: part.into(),
            bias,
        }
    }

    /// A new post's part (the first layer's post input for the channel network, the post
    /// vector for the dot network) and bias; `vector` and `with_content` are scratch space.
    fn new_part<'s>(
        &'s self,
        channel: &str,
        features: &PostFeatures,
        vector: &mut Vec<f32>,
        with_content: &'s mut Vec<f32>,
    ) -> (&'s [f32], f32) {
        match &self.network {
            Network::Channel {
                hidden,
                channel_parts,
                average_part,
                content,
                ..
            } => {
                let hidden = *hidden;
                let part = match self.channel_rows.get(channel) {
                    Some(&c) => &channel_parts[c * hidden..(c + 1) * hidden],
                    None => &average_part[..],
                };
                match content {
                    Some(table) => {
                        table.add_to(part, features, vector, with_content);
                        (&with_content[..], 0.0)
                    }
                    None => (part, 0.0),
                }
            }
            Network::Dot {
                dim,
                channel_average,
                channel_average_bias,
                average_post,
                average_post_bias,
                ..
            } => match self.channel_rows.get(channel) {
                Some(&c) => (
                    &channel_average[c * dim..(c + 1) * dim],
                    channel_average_bias[c],
                ),
                None => (&average_post[..], *average_post_bias),
            },
        }
    }

    /// Scores candidates for the person at `user_row`, in order.
    pub fn score(&self, user_row: usize, candidates: &[Candidate<'_>], out: &mut Vec<f32>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.score_avx2(user_row, candidates, out) };
        }
        self.score_any_cpu(user_row, candidates, out)
    }

    /// [`Self::score`] compiled for AVX2: the same code (no fused multiply-add, so the same
    /// sums), with each candidate's 8-lane loop in one 256-bit register instead of two 128-bit
    /// ones. Scoring is most of a large request's time.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn score_avx2(&self, user_row: usize, candidates: &[Candidate<'_>], out: &mut Vec<f32>) {
        self.score_any_cpu(user_row, candidates, out)
    }

    #[inline(always)]
    fn score_any_cpu(&self, user_row: usize, candidates: &[Candidate<'_>], out: &mut Vec<f32>) {
        out.clear();
        match &self.network {
            Network::Channel {
                user_dim,
                hidden,
                users,
                user_block,
                post_parts,
                output,
                output_bias,
                post_bias,
                ..
            } => {
                let (dim, hidden) = (*user_dim, *hidden);
                let (mut vector, mut with_content) = (Vec::new(), Vec::new());
                let mut person = vec![0f32; hidden];
                mat_vec_add(
                    user_block,
                    dim,
                    0,
                    &users[user_row * dim..(user_row + 1) * dim],
                    &mut person,
                );
                for candidate in candidates {
                    let (part, bias) = match candidate {
                        Candidate::Known(row) => (
                            &post_parts[row * hidden..(row + 1) * hidden],
                            post_bias.get(*row).copied().unwrap_or(0.0),
                        ),
                        Candidate::New { channel, content } => {
                            self.new_part(channel, content, &mut vector, &mut with_content)
                        }
                        Candidate::Computed { part, bias } => (*part, *bias),
                    };
                    out.push(relu_dot(&person, part, output) + output_bias + bias);
                }
            }
            Network::Dot {
                dim,
                users,
                user_bias,
                posts,
                post_bias,
                global_bias,
                ..
            } => {
                let dim = *dim;
                let u = &users[user_row * dim..(user_row + 1) * dim];
                let (mut vector, mut with_content) = (Vec::new(), Vec::new());
                for candidate in candidates {
                    let (p, b) = match candidate {
                        Candidate::Known(row) => {
                            (&posts[row * dim..(row + 1) * dim], post_bias[*row])
                        }
                        Candidate::New { channel, content } => {
                            self.new_part(channel, content, &mut vector, &mut with_content)
                        }
                        Candidate::Computed { part, bias } => (*part, *bias),
                    };
                    out.push(
                        u.iter().zip(p).map(|(a, b)| a * b).sum::<f32>()
                            + user_bias[user_row]
                            + b
                            + global_bias,
                    );
                }
            }
        }
        // Logits to scores in a pass of their own, which vectorizes.
        for value in out.iter_mut() {
            *value = sigmoid(*value) * self.output_scale;
        }
    }

    pub fn users(&self) -> usize {
        self.user_rows.len()
    }

    pub fn posts(&self) -> usize {
        self.post_rows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ten_millionths_of_the_exact_value() {
        let mut worst = 0f64;
        for step in -60_000..=60_000 {
            let x = step as f32 * 1e-3;
            let exact = f64::from(x).exp();
            worst = worst.max(((f64::from(exp(x)) - exact) / exact).abs());
        }
        assert!(worst < 2e-7, "largest relative error {worst:e}");
    }

    #[test]
    fn sigmoid_of_extreme_logits_is_zero_or_one_not_nan() {
        for (x, expected) in [
            (-1e30, 0.0),
            (-200.0, 0.0),
            (200.0, 1.0),
            (1e30, 1.0),
            (0.0, 0.5),
        ] {
            let y = sigmoid(x);
            assert!((y - expected).abs() < 1e-6, "sigmoid({x}) = {y}");
        }
        assert!(sigmoid(f32::NAN).is_nan());
    }
}
