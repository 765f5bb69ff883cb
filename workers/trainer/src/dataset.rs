//! Votes as index columns, and the vocabularies that map ids to embedding rows.

use oleg_features::{PostContent, PostFeatures};
use oleg_model::Votes;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;
use tch::Device;

/// Id → row, in order of first sight; rows never move, so a grown model keeps what it learned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vocab<K: Hash + Eq + Clone> {
    rows: HashMap<K, i64>,
    keys: Vec<K>,
}

impl<K: Hash + Eq + Clone> Vocab<K> {
    pub fn from_keys(keys: Vec<K>) -> Self {
        let rows = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as i64))
            .collect();
        Self { rows, keys }
    }

    /// The key's row, adding it at the end if new.
    pub fn row<Q>(&mut self, key: &Q) -> i64
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(&row) = self.rows.get(key) {
            return row;
        }
        let row = self.keys.len() as i64;
        self.rows.insert(key.to_owned(), row);
        self.keys.push(key.to_owned());
        row
    }

    pub fn get(&self, key: &K) -> Option<i64> {
        self.rows.get(key).copied()
    }

    pub fn len(&self) -> i64 {
        self.keys.len() as i64
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> &[K] {
        &self.keys
    }
}

/// A post is known by its channel's row and its id in that channel.
pub type PostKey = (i64, i64);

/// Everything that names rows: people, channels, posts, and each post's channel row; and the
/// content features of the post rows whose content has been read (rows in order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vocabularies {
    pub users: Vocab<i64>,
    pub channels: Vocab<String>,
    pub posts: Vocab<PostKey>,
    pub post_features: Vec<PostFeatures>,
}

impl Vocabularies {
    /// The post rows whose content has not been read: (channel name, post id) each.
    pub fn posts_without_features(&self) -> Vec<(&str, i64)> {
        self.posts.keys()[self.post_features.len().min(self.posts.keys().len())..]
            .iter()
            .map(|(channel, post)| (self.channels.keys()[*channel as usize].as_str(), *post))
            .collect()
    }

    /// Gives every post row without features those of its content, as `content_of` (channel,
    /// post id) finds it; a post without any is content-free.
    pub fn complete_features<'a>(
        &mut self,
        content_of: impl Fn(&str, i64) -> Option<&'a PostContent>,
    ) {
        let none = PostContent::default();
        let features: Vec<PostFeatures> = self
            .posts_without_features()
            .into_iter()
            .map(|(channel, post)| PostFeatures::of(content_of(channel, post).unwrap_or(&none)))
            .collect();
        self.post_features.extend(features);
    }

    /// The channel row of every post row (what [`oleg_model::Network::grow`] needs).
    pub fn post_channels(&self) -> Vec<i64> {
        self.posts
            .keys()
            .iter()
            .map(|(channel, _)| *channel)
            .collect()
    }
}

/// Votes as row-index columns.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    pub users: Vec<i64>,
    pub posts: Vec<i64>,
    pub channels: Vec<i64>,
    pub labels: Vec<f32>,
}

impl Columns {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn push(
        &mut self,
        vocab: &mut Vocabularies,
        user: i64,
        channel: &str,
        post: i64,
        label: f32,
    ) {
        let channel_row = vocab.channels.row(channel);
        self.users.push(vocab.users.row(&user));
        self.posts.push(vocab.posts.row(&(channel_row, post)));
        self.channels.push(channel_row);
        self.labels.push(label);
    }

    /// The rows at `indices`, in that order.
    pub fn pick(&self, indices: &[usize]) -> Columns {
        Columns {
            users: indices.iter().map(|&i| self.users[i]).collect(),
            posts: indices.iter().map(|&i| self.posts[i]).collect(),
            channels: indices.iter().map(|&i| self.channels[i]).collect(),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// The columns as tensors on `device`, for training and prediction.
    pub fn to_votes(&self, device: Device) -> Votes {
        Votes::from_columns(
            &self.users,
            &self.posts,
            &self.channels,
            &self.labels,
            device,
        )
    }

    pub fn extend(&mut self, other: &Columns) {
        self.users.extend_from_slice(&other.users);
        self.posts.extend_from_slice(&other.posts);
        self.channels.extend_from_slice(&other.channels);
        self.labels.extend_from_slice(&other.labels);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("{path}: {source}")]
    Read { path: String, source: csv::Error },
    #[error("{path} line {line}: {problem}")]
    Row {
        path: String,
        line: u64,
        problem: String,
    },
}

/// A votes file, read: the vocabularies, the votes, and when each was cast if the file says.
#[derive(Debug)]
pub struct VotesFile {
    pub vocab: Vocabularies,
    pub columns: Columns,
    /// From a fifth column `voted_at_ms`, when the file has one.
    pub voted_at_ms: Option<Vec<i64>>,
}

/// Reads a `user,post,channel,vote[,voted_at_ms]` file (vote 1 = like, 0 = dislike), with a
/// header.
pub fn read_votes_csv(path: &Path) -> Result<VotesFile, CsvError> {
    let name = path.display().to_string();
    let mut reader = csv::Reader::from_path(path).map_err(|source| CsvError::Read {
        path: name.clone(),
        source,
    })?;
    let timed = reader
        .headers()
        .map_err(|source| CsvError::Read {
            path: name.clone(),
            source,
        })?
        .get(4)
        .is_some_and(|h| h.trim() == "voted_at_ms");
    let mut vocab = Vocabularies::default();
    let mut columns = Columns::default();
    let mut voted_at_ms = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|source| CsvError::Read {
            path: name.clone(),
            source,
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: usize, what: &str| {
            record.get(i).ok_or_else(|| CsvError::Row {
                path: name.clone(),
                line,
                problem: format!("no {what} column"),
            })
        };
        let number = |i: usize, what: &str| -> Result<i64, CsvError> {
            let text = field(i, what)?;
            text.trim().parse().map_err(|_| CsvError::Row {
                path: name.clone(),
                line,
                problem: format!("{what} {text:?} is not an integer"),
            })
        };
        let (user, post) = (number(0, "user")?, number(1, "post")?);
        let channel = field(2, "channel")?.trim().to_owned();
        let label = match number(3, "vote")? {
            1 => 1.0,
            0 => 0.0,
            other => {
                return Err(CsvError::Row {
                    path: name.clone(),
                    line,
                    problem: format!("vote {other} is neither 1 nor 0"),
                })
            }
        };
        if timed {
            voted_at_ms.push(number(4, "voted_at_ms")?);
        }
        columns.push(&mut vocab, user, &channel, post, label);
    }
    Ok(VotesFile {
        vocab,
        columns,
        voted_at_ms: timed.then_some(voted_at_ms),
    })
}

/// A seeded shuffle split: (train, holdout) with `holdout_share` of the rows held out.
pub fn split(columns: &Columns, holdout_share: f64, seed: u64) -> (Columns, Columns) {
    let mut order: Vec<usize> = (0..columns.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let holdout = (columns.len() as f64 * holdout_share).round() as usize;
    let (held, kept) = order.split_at(holdout);
    (columns.pick(kept), columns.pick(held))
}

/// A split in time: the newest `holdout_share` of the votes held out, the rest trained on. Votes
/// are ordered by `voted_at_ms` when given, else by post id (a channel numbers its posts in the
/// order they appear), ties in file order.
pub fn split_by_time(
    columns: &Columns,
    vocab: &Vocabularies,
    voted_at_ms: Option<&[i64]>,
    holdout_share: f64,
) -> (Columns, Columns) {
    let mut order: Vec<usize> = (0..columns.len()).collect();
    match voted_at_ms {
        Some(times) => order.sort_by_key(|&i| times[i]),
        None => order.sort_by_key(|&i| vocab.posts.keys()[columns.posts[i] as usize].1),
    }
    let kept = columns.len() - (columns.len() as f64 * holdout_share).round() as usize;
    let (train, held) = order.split_at(kept);
    (columns.pick(train), columns.pick(held))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_rows_are_stable() {
        let mut v = Vocab::default();
        assert_eq!(v.row(&10_i64), 0);
        assert_eq!(v.row(&7), 1);
        assert_eq!(v.row(&10), 0);
        assert_eq!(v.get(&7), Some(1));
        assert_eq!(Vocab::from_keys(v.keys().to_vec()), v);
    }

    #[test]
    fn split_is_seeded_and_complete() {
        let mut vocab = Vocabularies::default();
        let mut c = Columns::default();
        for i in 0..100 {
            c.push(&mut vocab, i, "chan", i, (i % 2) as f32);
        }
        let (a, b) = split(&c, 0.2, 1);
        let (a2, b2) = split(&c, 0.2, 1);
        assert_eq!((a.len(), b.len()), (80, 20));
        assert_eq!(a.users, a2.users);
        assert_eq!(b.users, b2.users);
        let mut all: Vec<i64> = a.users.iter().chain(&b.users).copied().collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_time_split_holds_out_the_newest_votes() {
        let mut vocab = Vocabularies::default();
        let mut c = Columns::default();
        // Posts 9, 8, …, 0 in file order; voted at times that run the other way.
        for i in 0..10 {
            c.push(&mut vocab, i, "chan", 9 - i, 1.0);
        }
        let times: Vec<i64> = (0..10).map(|i| 100 - i).collect();
        let (train, held) = split_by_time(&c, &vocab, Some(&times), 0.2);
        assert_eq!((train.len(), held.len()), (8, 2));
        assert_eq!(held.users, vec![1, 0], "the two latest votes, oldest first");
        let (_, held) = split_by_time(&c, &vocab, None, 0.3);
        assert_eq!(
            held.users,
            vec![2, 1, 0],
            "without times: the highest post ids"
        );
    }
}
