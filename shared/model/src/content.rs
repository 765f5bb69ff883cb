//! Each post row's content features as rows of the content table with weights, held on the host
//! in one flat list (CSR): a post costs its features, not a fixed width.

use oleg_features::{bucket, PostFeatures};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PostContents {
    /// Post row `r` owns entries `offsets[r]..offsets[r + 1]`.
    offsets: Vec<usize>,
    /// Content table rows (`content_buckets` is at most 2²⁴).
    rows: Vec<u32>,
    weights: Vec<f32>,
}

/// The entries of a batch's posts: content rows, weights, and the batch position of each.
pub(crate) struct Gathered {
    pub rows: Tensor,
    pub weights: Tensor,
    pub positions: Tensor,
}

impl PostContents {
    /// Appends the next post row's features, hashed into `buckets` rows.
    pub(crate) fn push(&mut self, features: &PostFeatures, buckets: i64) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        let buckets = u32::try_from(buckets).unwrap_or(u32::MAX);
        for (hash, weight) in features.pairs() {
            self.rows.push(bucket(*hash, buckets));
            self.weights.push(*weight);
        }
        self.offsets.push(self.rows.len());
    }

    /// Post rows with content.
    pub(crate) fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The entries of `posts` (post rows; a row without content has none).
    pub(crate) fn gather(&self, posts: &[i64], device: Device) -> Gathered {
        let (mut rows, mut weights, mut positions): (Vec<i64>, Vec<f32>, Vec<i64>) =
            (Vec::new(), Vec::new(), Vec::new());
        for (position, &post) in posts.iter().enumerate() {
            let Some(range) = usize::try_from(post)
                .ok()
                .filter(|&p| p < self.len())
                .map(|p| self.offsets[p]..self.offsets[p + 1])
            else {
                continue;
            };
            rows.extend(self.rows[range.clone()].iter().map(|&r| i64::from(r)));
            weights.extend_from_slice(&self.weights[range.clone()]);
            positions.extend(std::iter::repeat_n(position as i64, range.len()));
        }
        Gathered {
            rows: Tensor::from_slice(&rows).to_device(device),
            weights: Tensor::from_slice(&weights).to_device(device),
            positions: Tensor::from_slice(&positions).to_device(device),
        }
    }

    /// Host copy of a batch's post rows (an Int64 column).
    pub(crate) fn host_rows(posts: &Tensor) -> Vec<i64> {
        let posts = posts
            .to_device(Device::Cpu)
            .to_kind(Kind::Int64)
            .contiguous();
        let n = posts.numel();
        let mut out = vec![0i64; n];
        posts.copy_data(&mut out, n);
        out
    }
}
