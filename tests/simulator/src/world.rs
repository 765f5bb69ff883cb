//! A generated world that looks like real use: dozens of channels whose posts arrive round after
//! round, so most candidates are hours old with few votes. Each channel mixes two topics; each
//! post has one topic (its words say which), a quality every person shares, and the traits of
//! `taste.rs` (media, long text, links, forwarded). The local site serves it as `t.me/s/<channel>`
//! pages, so the scraper stays in the loop; the simulator reads the hidden topic and quality from
//! here, and nothing of OLEG can (the pages carry only what a real channel page shows).
//!
//! Views, as on a real page: a channel's reach (its subscribers, log-normal across channels),
//! times how far each post was passed on, which follows its quality only loosely:
//! views = reach · exp(`views_per_quality` · quality + N(0, 0.5²)). With the default 0.5 and
//! quality's spread of 0.8, a post's views relative to its channel correlate with its quality at
//! about 0.6; 0 makes views say nothing of quality.

use chrono::{DateTime, Duration as TimeDelta, Utc};
use oleg_messages::{ChannelName, PostRef};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU32, Ordering};

/// Topics and the words their posts are written with.
pub const TOPICS: [(&str, [&str; 12]); 8] = [
    (
        "space",
        [
            "rocket",
            "orbit",
            "launch",
            "satellite",
            "mars",
            "astronaut",
            "telescope",
            "lunar",
            "spacecraft",
            "comet",
            "galaxy",
            "booster",
        ],
    ),
    (
        "football",
        [
            "match", "goal", "striker", "league", "coach", "penalty", "stadium", "transfer",
            "derby", "keeper", "fans", "season",
        ],
    ),
    (
        "markets",
        [
            "stocks",
            "inflation",
            "bonds",
            "earnings",
            "index",
            "rates",
            "investors",
            "dividend",
            "rally",
            "shares",
            "currency",
            "banks",
        ],
    ),
    (
        "cooking",
        [
            "recipe", "dough", "garlic", "oven", "soup", "spices", "butter", "roast", "salad",
            "noodles", "baking", "sauce",
        ],
    ),
    (
        "gaming",
        [
            "console",
            "patch",
            "speedrun",
            "multiplayer",
            "quest",
            "studio",
            "trailer",
            "esports",
            "controller",
            "levels",
            "indie",
            "boss",
        ],
    ),
    (
        "science",
        [
            "study",
            "researchers",
            "molecule",
            "climate",
            "vaccine",
            "genome",
            "physics",
            "experiment",
            "species",
            "fossil",
            "neurons",
            "quantum",
        ],
    ),
    (
        "travel",
        [
            "flight",
            "island",
            "hotel",
            "visa",
            "beach",
            "mountains",
            "museum",
            "itinerary",
            "ferry",
            "hostel",
            "backpack",
            "airport",
        ],
    ),
    (
        "music",
        [
            "album",
            "concert",
            "guitar",
            "single",
            "festival",
            "vinyl",
            "drummer",
            "tour",
            "lyrics",
            "orchestra",
            "remix",
            "chorus",
        ],
    ),
];

/// Words any post may use.
const FILLER: [&str; 16] = [
    "today", "new", "update", "read", "more", "why", "how", "this", "week", "thread", "big",
    "first", "look", "best", "report", "story",
];

/// How big the world is and how fast it grows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorldSettings {
    pub channels: usize,
    /// Posts each channel has before the first round.
    pub first_posts: usize,
    /// Posts each channel publishes before each later round.
    pub posts_per_round: usize,
    pub rounds: u32,
    pub seed: u64,
    /// How strongly a post's views follow its quality (log-views per unit of quality).
    pub views_per_quality: f64,
}

impl WorldSettings {
    pub fn new(rounds: u32, seed: u64) -> Self {
        Self {
            channels: 24,
            first_posts: 3,
            posts_per_round: 1,
            rounds,
            seed,
            views_per_quality: 0.5,
        }
    }
}

/// What the simulated people know of a generated post and OLEG does not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hidden {
    pub topic: usize,
    pub quality: f64,
}

#[derive(Debug, Clone)]
struct Post {
    id: i64,
    /// The round before which it appears (0: there from the start).
    round: u32,
    published_at: DateTime<Utc>,
    text: String,
    photo: bool,
    links: Vec<String>,
    forwarded_from: Option<String>,
    views: u64,
    hidden: Hidden,
}

#[derive(Debug)]
struct Channel {
    name: String,
    posts: Vec<Post>,
}

#[derive(Debug)]
pub struct World {
    channels: Vec<Channel>,
    hidden: HashMap<PostRef, Hidden>,
    /// Posts of rounds up to this one are published.
    released: AtomicU32,
}

impl World {
    pub fn generate(settings: WorldSettings) -> Self {
        let mut rng = StdRng::seed_from_u64(settings.seed ^ 0x3071d);
        let quality = Normal::new(0.0, 0.8).expect("a valid spread");
        let reach = Normal::new(8.0, 0.8).expect("a valid spread");
        let passed_on = Normal::new(0.0, 0.5).expect("a valid spread");
        let start = Utc::now() - TimeDelta::days(1);
        let mut hidden = HashMap::new();
        let channels = (0..settings.channels)
            .map(|c| {
                let main = c % TOPICS.len();
                let second = (main + 1 + rng.random_range(0..TOPICS.len() - 1)) % TOPICS.len();
                let name = format!("{}_channel_{:02}", TOPICS[main].0, c);
                // How the channel posts: its habits, shared by its posts.
                let channel_reach = reach.sample(&mut rng);
                let (photo_rate, long_rate, link_rate, forward_rate) = (
                    rng.random_range(0.1..0.9),
                    rng.random_range(0.1..0.7),
                    rng.random_range(0.0..0.6),
                    rng.random_range(0.0..0.4),
                );
                let count =
                    settings.first_posts + settings.posts_per_round * settings.rounds as usize;
                let posts: Vec<Post> = (0..count)
                    .map(|i| {
                        let round = if i < settings.first_posts {
                            0
                        } else {
                            1 + ((i - settings.first_posts) / settings.posts_per_round.max(1))
                                as u32
                        };
                        let topic = if rng.random_bool(0.7) { main } else { second };
                        let long = rng.random_bool(long_rate);
                        let id = 100 + i as i64;
                        let links = if rng.random_bool(link_rate) {
                            vec![format!(
                                "https://{}.example.org/{}/{id}",
                                TOPICS[topic].0, name
                            )]
                        } else {
                            Vec::new()
                        };
                        let forwarded_from = rng
                            .random_bool(forward_rate)
                            .then(|| format!("{} digest", TOPICS[topic].0));
                        let quality = quality.sample(&mut rng);
                        let views = (channel_reach
                            + settings.views_per_quality * quality
                            + passed_on.sample(&mut rng))
                        .exp() as u64;
                        Post {
                            id,
                            round,
                            published_at: start
                                + TimeDelta::minutes(i64::from(round) * 30 + i as i64),
                            text: text(&mut rng, topic, if long { 70 } else { 12 }),
                            photo: rng.random_bool(photo_rate),
                            links,
                            forwarded_from,
                            views,
                            hidden: Hidden { topic, quality },
                        }
                    })
                    .collect();
                let channel = ChannelName::parse(&name).expect("a valid generated name");
                for post in &posts {
                    hidden.insert(
                        PostRef {
                            channel: channel.clone(),
                            post_id: oleg_messages::PostId::new(post.id).expect("positive"),
                        },
                        post.hidden,
                    );
                }
                Channel { name, posts }
            })
            .collect();
        Self {
            channels,
            hidden,
            released: AtomicU32::new(0),
        }
    }

    pub fn channels(&self) -> Vec<String> {
        self.channels.iter().map(|c| c.name.clone()).collect()
    }

    /// Publishes the posts of rounds up to `round`.
    pub fn release(&self, round: u32) {
        self.released.store(round, Ordering::SeqCst);
    }

    /// Posts published so far, in all channels.
    pub fn published(&self) -> usize {
        let round = self.released.load(Ordering::SeqCst);
        self.channels
            .iter()
            .map(|c| c.posts.iter().filter(|p| p.round <= round).count())
            .sum()
    }

    pub fn hidden(&self, post: &PostRef) -> Option<Hidden> {
        self.hidden.get(post).copied()
    }

    /// The channel's page as `t.me/s/<channel>` shows it: its newest published posts (up to
    /// 20, older than `before` if given), with a link to older ones when there are more.
    pub fn page(&self, channel: &str, before: Option<i64>) -> Option<String> {
        const PAGE: usize = 20;
        let channel = self.channels.iter().find(|c| c.name == channel)?;
        let round = self.released.load(Ordering::SeqCst);
        let published: Vec<&Post> = channel
            .posts
            .iter()
            .filter(|p| p.round <= round && before.is_none_or(|b| p.id < b))
            .collect();
        let shown = &published[published.len().saturating_sub(PAGE)..];
        let mut html = format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{0}</title></head><body>\n\
             <div class=\"tgme_channel_info_header_title\">{0}</div>\
             <div class=\"tgme_channel_info_header_username\"><a href=\"https://t.me/{0}\">@{0}</a></div>\n",
            channel.name
        );
        if published.len() > shown.len() {
            let _ = writeln!(
                html,
                "<a class=\"tme_messages_more\" data-before=\"{}\" href=\"/s/{}?before={0}\"></a>",
                shown[0].id, channel.name
            );
        }
        for post in shown {
            let _ = write!(
                html,
                "<div class=\"tgme_widget_message_wrap\"><div class=\"tgme_widget_message\" data-post=\"{}/{}\">",
                channel.name, post.id
            );
            if let Some(source) = &post.forwarded_from {
                let _ = write!(
                    html,
                    "<a class=\"tgme_widget_message_forwarded_from_name\" href=\"https://t.me/digest\"><span>{source}</span></a>"
                );
            }
            if post.photo {
                let _ = write!(
                    html,
                    "<a class=\"tgme_widget_message_photo_wrap\" href=\"https://t.me/{}/{}\" style=\"background-image:url('https://cdn.example.org/{}.jpg')\"></a>",
                    channel.name, post.id, post.id
                );
            }
            let _ = write!(
                html,
                "<div class=\"tgme_widget_message_text\">{}",
                post.text
            );
            for link in &post.links {
                let _ = write!(html, " <a href=\"{link}\">{link}</a>");
            }
            let _ = writeln!(
                html,
                "</div><span class=\"tgme_widget_message_views\">{}</span>\
                 <a class=\"tgme_widget_message_date\" href=\"https://t.me/{}/{}\"><time datetime=\"{}\"></time></a></div></div>",
                post.views,
                channel.name,
                post.id,
                post.published_at.to_rfc3339()
            );
        }
        html.push_str("</body></html>\n");
        Some(html)
    }
}

/// About `words` words: the topic's words, with filler between.
fn text(rng: &mut StdRng, topic: usize, words: usize) -> String {
    let vocabulary = &TOPICS[topic].1;
    let mut out: Vec<&str> = Vec::with_capacity(words);
    for _ in 0..words {
        out.push(if rng.random_bool(0.55) {
            vocabulary[rng.random_range(0..vocabulary.len())]
        } else {
            FILLER[rng.random_range(0..FILLER.len())]
        });
    }
    let mut text = out.join(" ");
    if let Some(first) = text.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    text.push('.');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_show_what_is_released_and_the_scraper_reads_them() {
        let world = World::generate(WorldSettings::new(5, 1));
        let name = world.channels()[0].clone();
        let first = oleg_scraper::parse::parse_page(&world.page(&name, None).unwrap());
        assert!(first.warnings.is_empty(), "{:?}", first.warnings);
        assert_eq!(first.posts.len(), 3);
        assert_eq!(world.published(), 24 * 3);
        world.release(2);
        let later = oleg_scraper::parse::parse_page(&world.page(&name, None).unwrap());
        assert_eq!(later.posts.len(), 5);
        assert_eq!(world.published(), 24 * 5);
        let post = &later.posts[4];
        assert_eq!(post.channel, name);
        assert!(post.text.split_whitespace().count() >= 12);
        let reference = PostRef {
            channel: ChannelName::parse(&name).unwrap(),
            post_id: oleg_messages::PostId::new(post.id).unwrap(),
        };
        let hidden = world.hidden(&reference).unwrap();
        // The topic shows in the words, which is what content features can learn from.
        assert!(TOPICS[hidden.topic]
            .1
            .iter()
            .any(|w| post.text.to_lowercase().contains(w)));
        assert!(world.page("nonesuch", None).is_none());
    }

    /// The correlation, over every post, of its quality and its log-views less its channel's
    /// mean, as the scraper reads them off the pages.
    fn views_against_quality(views_per_quality: f64) -> f64 {
        let world = World::generate(WorldSettings {
            views_per_quality,
            ..WorldSettings::new(5, 3)
        });
        world.release(5);
        let mut pairs = Vec::new();
        for name in world.channels() {
            let page = oleg_scraper::parse::parse_page(&world.page(&name, None).unwrap());
            let logs: Vec<(f64, f64)> = page
                .posts
                .iter()
                .map(|post| {
                    let reference = PostRef {
                        channel: ChannelName::parse(&name).unwrap(),
                        post_id: oleg_messages::PostId::new(post.id).unwrap(),
                    };
                    let views = post.views.expect("every generated post shows its views");
                    (
                        (views as f64).ln(),
                        world.hidden(&reference).unwrap().quality,
                    )
                })
                .collect();
            let mean = logs.iter().map(|(v, _)| v).sum::<f64>() / logs.len() as f64;
            pairs.extend(logs.iter().map(|(v, q)| (v - mean, *q)));
        }
        let n = pairs.len() as f64;
        let (mv, mq) = pairs
            .iter()
            .fold((0.0, 0.0), |(a, b), (v, q)| (a + v / n, b + q / n));
        let cov: f64 = pairs.iter().map(|(v, q)| (v - mv) * (q - mq)).sum();
        let var_v: f64 = pairs.iter().map(|(v, _)| (v - mv).powi(2)).sum();
        let var_q: f64 = pairs.iter().map(|(_, q)| (q - mq).powi(2)).sum();
        cov / (var_v * var_q).sqrt()
    }

    #[test]
    fn views_follow_quality_loosely_and_not_at_all_when_told_not_to() {
        let loosely = views_against_quality(0.5);
        assert!((0.45..0.8).contains(&loosely), "{loosely}");
        let not_at_all = views_against_quality(0.0);
        assert!(not_at_all.abs() < 0.2, "{not_at_all}");
    }
}
