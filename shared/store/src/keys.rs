//! Combined `_id` keys: one indexed equality per document on the hot paths.

use oleg_messages::{ChannelName, PostId, PostRef, UserId};
use std::borrow::Borrow;
use std::fmt;

/// `codecamp/2371`: a post as the store keys it (the `_id` of `posts`, the tail of a vote's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PostKey(String);

impl PostKey {
    pub fn new(channel: &str, post_id: i64) -> Self {
        Self(format!("{channel}/{post_id}"))
    }

    pub fn of(post: &PostRef) -> Self {
        Self::new(post.channel.as_str(), post.post_id.get())
    }

    /// Takes a key read back from the store.
    pub(crate) fn stored(key: String) -> Self {
        Self(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The channel part.
    pub fn channel(&self) -> &str {
        self.0.rsplit_once('/').map_or(self.0.as_str(), |(c, _)| c)
    }

    /// The post it names, if its parts are a valid channel name and post id.
    pub fn post_ref(&self) -> Option<PostRef> {
        let (channel, id) = self.0.rsplit_once('/')?;
        Some(PostRef {
            channel: ChannelName::parse(channel).ok()?,
            post_id: PostId::new(id.parse().ok()?).ok()?,
        })
    }
}

impl Borrow<str> for PostKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `190233:codecamp/2371`; also the key of a delivery.
pub fn vote_key(user: UserId, post: &PostRef) -> String {
    format!("{user}:{}", PostKey::of(post))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_key_names_its_channel_and_makes_the_vote_key() {
        let post = PostRef {
            channel: ChannelName::parse("codecamp").unwrap(),
            post_id: PostId::new(2371).unwrap(),
        };
        let key = PostKey::of(&post);
        assert_eq!(key.as_str(), "codecamp/2371");
        assert_eq!(key.channel(), "codecamp");
        assert_eq!(key, PostKey::new("codecamp", 2371));
        assert_eq!(
            vote_key(UserId::new(190233).unwrap(), &post),
            "190233:codecamp/2371"
        );
    }

    #[test]
    fn a_key_names_its_post_back() {
        let post = PostKey::new("codecamp", 2371).post_ref().unwrap();
        assert_eq!(PostKey::of(&post).as_str(), "codecamp/2371");
        assert!(PostKey::new("codecamp", -1).post_ref().is_none());
        assert!(PostKey::stored("no-slash".into()).post_ref().is_none());
    }
}
