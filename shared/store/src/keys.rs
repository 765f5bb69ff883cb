//! Combined `_id` keys: one indexed equality per document on the hot paths.

use oleg_messages::{PostRef, UserId};

/// `codecamp/2371`
pub fn post_key(post: &PostRef) -> String {
    format!("{}/{}", post.channel, post.post_id)
}

/// `190233:codecamp/2371`; also the key of a delivery.
pub fn vote_key(user: UserId, post: &PostRef) -> String {
    format!("{user}:{}", post_key(post))
}
