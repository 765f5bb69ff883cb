//! Validated domain values shared by every message.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// A problem with one field of an otherwise well-formed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    pub field: &'static str,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

/// A Telegram user id: the person talking to the bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UserId(i64);

impl UserId {
    pub fn new(raw: i64) -> Result<Self, FieldError> {
        if raw > 0 {
            Ok(Self(raw))
        } else {
            Err(FieldError::new(
                "user_id",
                format!("must be a positive integer, got {raw}"),
            ))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A public channel's username, as in `t.me/<name>`: 5-32 letters, digits or underscores.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ChannelName(String);

impl ChannelName {
    pub const MIN_LEN: usize = 5;
    pub const MAX_LEN: usize = 32;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let len = raw.chars().count();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(FieldError::new(
                "channel",
                format!(
                    "must be {}-{} characters long, got {len} in {raw:?}",
                    Self::MIN_LEN,
                    Self::MAX_LEN
                ),
            ));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
        {
            return Err(FieldError::new(
                "channel",
                format!("may hold only letters, digits and '_', found {bad:?} in {raw:?}"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message id inside one channel (`t.me/<channel>/<post_id>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct PostId(i64);

impl PostId {
    pub fn new(raw: i64) -> Result<Self, FieldError> {
        if raw > 0 {
            Ok(Self(raw))
        } else {
            Err(FieldError::new(
                "post_id",
                format!("must be a positive integer, got {raw}"),
            ))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for PostId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for PostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One post, globally: a channel and a message id in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostRef {
    pub channel: ChannelName,
    pub post_id: PostId,
}

impl fmt::Display for PostRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.channel, self.post_id)
    }
}

/// What a person pressed under a post.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reaction {
    Like,
    Dislike,
}

impl Reaction {
    pub const NAMES: [&'static str; 2] = ["like", "dislike"];

    /// The training target: like = 1, dislike = 0.
    pub fn as_label(self) -> f32 {
        match self {
            Reaction::Like => 1.0,
            Reaction::Dislike => 0.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reaction::Like => "like",
            Reaction::Dislike => "dislike",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_follow_telegram_usernames() {
        for good in ["codecamp", "air_alert_ua", "abcde", &"a".repeat(32)] {
            assert!(ChannelName::parse(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("abcd", "5-32 characters"),
            (&"a".repeat(33), "5-32 characters"),
            ("code-camp", "'-'"),
            ("t.me/x/y", "'.'"),
            ("кодкэмп", "'к'"),
        ] {
            let err = ChannelName::parse(bad).unwrap_err();
            assert_eq!(err.field, "channel");
            assert!(err.problem.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn ids_must_be_positive() {
        assert!(UserId::new(0).is_err());
        assert!(PostId::new(-3).is_err());
        assert_eq!(UserId::new(42).unwrap().get(), 42);
    }
}
