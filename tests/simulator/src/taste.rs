//! Simulated people and their hidden tastes, all in this file. Each person likes a post with
//! probability σ(bias + liking for its channel + Σ liking for each trait it has + liking for its
//! topic + its quality):
//! - bias ~ N(-0.3, 0.5²) per person;
//! - channel liking ~ N(0, spread.channel²) per person and channel;
//! - trait liking ~ N(0, spread.traits²) per person and trait (media, long text, links,
//!   forwarded: read from the stored post as any reader sees it);
//! - topic liking ~ N(0, spread.topic²) per person and topic, and quality ~ N(0, 0.8²) per post,
//!   the same for everyone: only posts of the generated world (`world.rs`) have them.
//!
//! The recommender never sees these numbers, only the 👍 / 👎 they produce.

use crate::world::{Hidden, TOPICS};
use mongodb::bson::Document;
use oleg_messages::{ChannelName, PostId, PostRef, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;

/// Traits a person may care about, read from the stored post.
pub const TRAITS: [&str; 4] = ["media", "long_text", "links", "forwarded"];

/// A post as the simulated people see it.
#[derive(Debug, Clone)]
pub struct PostTraits {
    pub post: PostRef,
    pub traits: [f64; TRAITS.len()],
    /// Topic and quality, for a post of the generated world.
    pub hidden: Option<Hidden>,
}

impl PostTraits {
    /// Reads a document of the posts collection (as the scraper stored it).
    pub fn from_document(document: &Document) -> Option<Self> {
        let channel = ChannelName::parse(document.get_str("channel").ok()?).ok()?;
        let post_id = PostId::new(oleg_store::as_i64(document.get("post_id"))?).ok()?;
        let text = document.get_str("text").unwrap_or_default();
        let has = |key: &str| {
            document
                .get_array(key)
                .map(|items| !items.is_empty())
                .unwrap_or(false)
        };
        let forwarded = document
            .get_str("forwarded_from")
            .is_ok_and(|f| !f.is_empty());
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        Some(Self {
            post: PostRef { channel, post_id },
            traits: [
                flag(has("media")),
                flag(text.chars().count() > 280),
                flag(has("links")),
                flag(forwarded),
            ],
            hidden: None,
        })
    }
}

/// One simulated person: a bias, a liking for each channel and for each trait.
#[derive(Debug, Clone)]
pub struct Person {
    pub user_id: UserId,
    bias: f64,
    channel_affinity: HashMap<ChannelName, f64>,
    trait_weights: [f64; TRAITS.len()],
    topic_weights: [f64; TOPICS.len()],
}

impl Person {
    /// The probability that this person likes `post`.
    pub fn like_probability(&self, post: &PostTraits) -> f64 {
        let affinity = self
            .channel_affinity
            .get(&post.post.channel)
            .copied()
            .unwrap_or(0.0);
        let traits: f64 = self
            .trait_weights
            .iter()
            .zip(post.traits)
            .map(|(w, t)| w * t)
            .sum();
        let world = post
            .hidden
            .map_or(0.0, |h| self.topic_weights[h.topic] + h.quality);
        1.0 / (1.0 + (-(self.bias + affinity + traits + world)).exp())
    }
}

/// How strongly tastes differ between people (standard deviations of the hidden weights).
#[derive(Debug, Clone, Copy)]
pub struct TasteSpread {
    pub channel: f64,
    pub traits: f64,
    pub topic: f64,
}

impl Default for TasteSpread {
    fn default() -> Self {
        Self {
            channel: 1.6,
            traits: 0.9,
            topic: 1.2,
        }
    }
}

/// `count` people with ids from `first_user`, their tastes drawn from `seed`.
pub fn population(
    count: u32,
    first_user: i64,
    channels: &[ChannelName],
    spread: TasteSpread,
    seed: u64,
) -> Vec<Person> {
    let mut rng = StdRng::seed_from_u64(seed);
    let bias = Normal::new(-0.3, 0.5).expect("a valid spread");
    let channel = Normal::new(0.0, spread.channel).expect("a valid spread");
    let weight = Normal::new(0.0, spread.traits).expect("a valid spread");
    let topic = Normal::new(0.0, spread.topic).expect("a valid spread");
    (0..i64::from(count))
        .map(|i| Person {
            user_id: UserId::new(first_user + i).expect("a positive id"),
            bias: bias.sample(&mut rng),
            channel_affinity: channels
                .iter()
                .map(|c| (c.clone(), channel.sample(&mut rng)))
                .collect(),
            trait_weights: std::array::from_fn(|_| weight.sample(&mut rng)),
            topic_weights: std::array::from_fn(|_| topic.sample(&mut rng)),
        })
        .collect()
}

/// A vote drawn from the person's probability.
pub fn draws_like(rng: &mut StdRng, probability: f64) -> bool {
    rng.random_bool(probability.clamp(0.0, 1.0))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mongodb::bson::doc;

    pub(crate) fn post(channel: &str, traits: [f64; 4]) -> PostTraits {
        PostTraits {
            post: PostRef {
                channel: ChannelName::parse(channel).unwrap(),
                post_id: PostId::new(1).unwrap(),
            },
            traits,
            hidden: None,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_people_and_tastes_differ() {
        let channels = [
            ChannelName::parse("channel_a").unwrap(),
            ChannelName::parse("channel_b").unwrap(),
        ];
        let first = population(50, 1, &channels, TasteSpread::default(), 7);
        let again = population(50, 1, &channels, TasteSpread::default(), 7);
        let a = post("channel_a", [1.0, 0.0, 1.0, 0.0]);
        let b = post("channel_b", [0.0, 1.0, 0.0, 0.0]);
        for (x, y) in first.iter().zip(&again) {
            assert_eq!(x.like_probability(&a), y.like_probability(&a));
        }
        let prefer_a = first
            .iter()
            .filter(|p| p.like_probability(&a) > p.like_probability(&b))
            .count();
        assert!((10..40).contains(&prefer_a), "{prefer_a} of 50 prefer a");
        assert!(first
            .iter()
            .all(|p| (0.0..=1.0).contains(&p.like_probability(&a))));
    }

    #[test]
    fn traits_are_read_from_the_stored_post() {
        let stored = doc! {
            "channel": "campcode", "post_id": 2357_i64, "text": "x".repeat(300),
            "links": ["https://example.org"], "media": [{"kind": "photo"}], "forwarded_from": null,
        };
        let traits = PostTraits::from_document(&stored).unwrap();
        assert_eq!(traits.traits, [1.0, 1.0, 1.0, 0.0]);
        assert_eq!(traits.post.to_string(), "campcode/2357");
        assert!(PostTraits::from_document(&doc! {"channel": "x"}).is_none());
    }
}
