//! Votes as index columns, and the vocabularies that map ids to embedding rows.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;

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

/// Everything that names rows: people, channels, posts, and each post's channel row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vocabularies {
    pub users: Vocab<i64>,
    pub channels: Vocab<String>,
    pub posts: Vocab<PostKey>,
}

impl Vocabularies {
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

/// Reads a `user,post,channel,vote` file (vote 1 = like, 0 = dislike), with a header.
pub fn read_votes_csv(path: &Path) -> Result<(Vocabularies, Columns), CsvError> {
    let name = path.display().to_string();
    let mut reader = csv::Reader::from_path(path).map_err(|source| CsvError::Read {
        path: name.clone(),
        source,
    })?;
    let mut vocab = Vocabularies::default();
    let mut columns = Columns::default();
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
        columns.push(&mut vocab, user, &channel, post, label);
    }
    Ok((vocab, columns))
}

/// A seeded shuffle split: (train, holdout) with `holdout_share` of the rows held out.
pub fn split(columns: &Columns, holdout_share: f64, seed: u64) -> (Columns, Columns) {
    let mut order: Vec<usize> = (0..columns.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let holdout = (columns.len() as f64 * holdout_share).round() as usize;
    let (held, kept) = order.split_at(holdout);
    (columns.pick(kept), columns.pick(held))
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
}
