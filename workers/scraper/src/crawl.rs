//! A crawl's decisions, without I/O: which page to fetch next, whose page it is, which posts
//! are the followed channel's, and when to poll the channel again. `worker` performs them.

use crate::parse::{ChannelHeader, ParsedPage, ParsedPost};
use crate::ScraperSettings;
use oleg_store::{ChannelPoll, ChannelStatus};
use std::time::Duration;

/// How one poll of a channel ended.
#[derive(Debug)]
pub enum Polled {
    Scraped {
        newest: Option<i64>,
        header: ChannelHeader,
        /// Another username the channel's posts carry.
        alias: Option<String>,
    },
    Missing,
    RateLimited(Duration),
    Failed(String),
}

/// The pages of one crawl: from the newest back (`?before=`) to the newest post already stored
/// (`known`), or on first sight to a depth of `first_sight_pages`.
pub struct PagePlan {
    known: Option<i64>,
    first_sight_pages: u32,
    pages: u32,
    /// Every post on the pages read, new or known (a post on two pages twice).
    posts: Vec<ParsedPost>,
    /// Each page's stretch of post ids, oldest to newest.
    stretches: Vec<(i64, i64)>,
    /// Whether a page had markup that could not be read: a post may be missing from it.
    unreadable: bool,
}

/// The posts of one crawl, each once, oldest first.
pub struct ReadPosts {
    /// Newer than the newest stored post: stored and announced.
    pub new: Vec<ParsedPost>,
    /// Stored already, read on the same pages: stored again, so that their views (still
    /// growing while a post is young) and edits stay current.
    pub known: Vec<ParsedPost>,
    /// The median view counter of all of them, known ones included: the channel's usual reach
    /// on this visit, which a new post's views are read against (a channel polled often has one
    /// new post a visit, its own median). `None` when no post showed one.
    pub median_views: Option<u64>,
    /// The stretches of post ids the pages showed whole (from each page's oldest post to its
    /// newest), where a stored post the pages did not show was deleted from the channel. Empty
    /// where a page may have left a post out for another reason: unreadable markup.
    pub shown: Vec<(i64, i64)>,
}

impl PagePlan {
    pub fn new(known: Option<i64>, first_sight_pages: u32) -> Self {
        Self {
            known,
            first_sight_pages,
            pages: 0,
            posts: Vec::new(),
            stretches: Vec::new(),
            unreadable: false,
        }
    }

    /// Keeps the page's posts; returns the `before` of the page to fetch next, or `None` when
    /// the crawl is complete.
    pub fn take(&mut self, page: ParsedPage) -> Option<i64> {
        self.pages += 1;
        let known = self.known;
        let reached_known = page.posts.iter().any(|p| !newer(p, known));
        let ids = page.posts.iter().map(|p| p.id);
        if let (Some(oldest), Some(newest)) = (ids.clone().min(), ids.max()) {
            self.stretches.push((oldest, newest));
        }
        self.unreadable |= !page.warnings.is_empty();
        self.posts.extend(page.posts);
        let deep_enough = known.is_none() && self.pages >= self.first_sight_pages;
        // A page before `known + 1` would hold nothing new.
        page.before
            .filter(|_| !reached_known && !deep_enough)
            .filter(|&before| known.is_none_or(|k| before > k + 1))
    }

    /// Whether any new post was read so far (a failure after that keeps what was read).
    pub fn has_posts(&self) -> bool {
        self.posts.iter().any(|p| newer(p, self.known))
    }

    /// The posts read, new and known.
    pub fn into_posts(mut self) -> ReadPosts {
        self.posts.sort_by_key(|p| p.id);
        self.posts.dedup_by_key(|p| p.id);
        let median_views = median(self.posts.iter().filter_map(|p| p.views).collect());
        let (new, known) = self.posts.into_iter().partition(|p| newer(p, self.known));
        ReadPosts {
            new,
            known,
            median_views,
            shown: if self.unreadable {
                Vec::new()
            } else {
                self.stretches
            },
        }
    }
}

/// The median of `values` (the upper middle of an even count); `None` when there are none.
fn median(mut values: Vec<u64>) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let middle = values.len() / 2;
    Some(*values.select_nth_unstable(middle).1)
}

/// Whether `post` is newer than the newest stored post, `known`.
fn newer(post: &ParsedPost, known: Option<i64>) -> bool {
    known.is_none_or(|k| post.id > k)
}

/// Whose page a channel page is.
#[derive(Debug, PartialEq)]
pub enum Owner {
    /// The followed channel's; its posts may carry another of its usernames (`alias`).
    Followed { alias: Option<String> },
    /// Another channel's (a rename, or a redirect to another channel's page).
    Unrelated(String),
}

/// Usernames are case-insensitive.
pub fn same_channel(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The page is the followed channel's if its posts carry the followed name, or if its header
/// names the followed channel (then the name its posts carry is an alias of the same channel).
pub fn page_owner(followed: &str, page: &ParsedPage) -> Owner {
    let claimed = page
        .posts
        .iter()
        .map(|p| p.channel.as_str())
        .find(|c| !same_channel(c, followed));
    let header_is_followed = page
        .header
        .username
        .as_deref()
        .is_some_and(|u| same_channel(u, followed));
    match claimed {
        None => Owner::Followed { alias: None },
        Some(other) if header_is_followed => Owner::Followed {
            alias: Some(other.to_owned()),
        },
        Some(_)
            if page
                .posts
                .iter()
                .any(|p| same_channel(&p.channel, followed)) =>
        {
            Owner::Followed { alias: None }
        }
        Some(other) => Owner::Unrelated(other.to_owned()),
    }
}

/// A crawl's posts sorted by the channel they name.
#[derive(Debug)]
pub struct ByOwner {
    /// The followed channel's, under its name or its alias: these are stored, under the name.
    pub own: Vec<ParsedPost>,
    /// How many of `own` carry the alias.
    pub aliased: usize,
    /// How many name another channel: left out.
    pub unrelated: usize,
}

pub fn sort_by_owner(posts: Vec<ParsedPost>, followed: &str, alias: Option<&str>) -> ByOwner {
    let (own, foreign): (Vec<ParsedPost>, Vec<ParsedPost>) = posts.into_iter().partition(|p| {
        same_channel(&p.channel, followed) || alias.is_some_and(|a| same_channel(&p.channel, a))
    });
    let aliased = own
        .iter()
        .filter(|p| !same_channel(&p.channel, followed))
        .count();
    ByOwner {
        own,
        aliased,
        unrelated: foreign.len(),
    }
}

/// What to record after a poll that ended as `polled`, `failures` polls having failed in a row
/// before it: the channel's state and when to poll it next. `jitter`, within
/// ±`poll_jitter`, spreads the channels' polls.
pub fn next_poll(
    polled: Polled,
    failures: i64,
    settings: &ScraperSettings,
    now_ms: i64,
    jitter: f64,
) -> ChannelPoll {
    let unchanged = ChannelPoll {
        status: ChannelStatus::Active,
        newest_post_id: None,
        title: None,
        alias: None,
        subscribers: None,
        failures,
        next_poll_ms: now_ms,
        polled_at_ms: now_ms,
    };
    match polled {
        Polled::Scraped {
            newest,
            header,
            alias,
        } => ChannelPoll {
            newest_post_id: newest,
            title: header.title,
            alias,
            subscribers: header
                .subscribers
                .map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
            failures: 0,
            next_poll_ms: now_ms
                + (settings.poll_interval_s as f64 * 1000.0 * (1.0 + jitter)) as i64,
            ..unchanged
        },
        Polled::Missing => ChannelPoll {
            status: ChannelStatus::Missing,
            failures: 0,
            next_poll_ms: now_ms + (settings.missing_retry_s * 1000) as i64,
            ..unchanged
        },
        Polled::RateLimited(wait) => ChannelPoll {
            next_poll_ms: now_ms + wait.as_millis() as i64,
            ..unchanged
        },
        Polled::Failed(_) => {
            let failures = failures + 1;
            // Doubling from backoff_min_s, at most backoff_max_s.
            let backoff = settings
                .backoff_min_s
                .saturating_mul(1 << failures.clamp(0, 20))
                .min(settings.backoff_max_s);
            ChannelPoll {
                failures,
                next_poll_ms: now_ms + (backoff * 1000) as i64,
                ..unchanged
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn post(channel: &str, id: i64) -> ParsedPost {
        ParsedPost {
            channel: channel.into(),
            id,
            date: Utc::now(),
            text: format!("post {id}"),
            links: vec![],
            views: None,
            media: vec![],
            forwarded_from: None,
            reply_to: None,
        }
    }

    /// A page of `ids` (newest last, as on the site) with a link to older posts unless it
    /// starts at 1.
    fn page(channel: &str, ids: std::ops::RangeInclusive<i64>) -> ParsedPage {
        let first = *ids.start();
        ParsedPage {
            header: ChannelHeader {
                title: Some("A channel".into()),
                username: Some(channel.into()),
                subscribers: None,
                description: None,
            },
            posts: ids.map(|id| post(channel, id)).collect(),
            service_messages: 0,
            warnings: vec![],
            before: (first > 1).then_some(first),
        }
    }

    fn ids(posts: &[ParsedPost]) -> Vec<i64> {
        posts.iter().map(|p| p.id).collect()
    }

    #[test]
    fn a_known_channel_is_read_back_to_its_newest_stored_post() {
        let mut plan = PagePlan::new(Some(15), 3);
        assert_eq!(plan.take(page("c", 31..=40)), Some(31));
        assert_eq!(plan.take(page("c", 21..=30)), Some(21));
        // This page reaches post 15: nothing older is fetched.
        assert_eq!(plan.take(page("c", 11..=20)), None);
        let read = plan.into_posts();
        assert_eq!(ids(&read.new), (16..=40).collect::<Vec<_>>());
        assert_eq!(
            ids(&read.known),
            (11..=15).collect::<Vec<_>>(),
            "stored again"
        );
    }

    #[test]
    fn the_pages_read_vouch_for_their_stretches_unless_a_post_could_not_be_read() {
        let mut plan = PagePlan::new(Some(15), 3);
        let mut newest = page("c", 31..=40);
        // 35 deleted: the page goes from 31 to 40 without it.
        newest.posts.retain(|p| p.id != 35);
        assert_eq!(plan.take(newest), Some(31));
        plan.take(page("c", 11..=20));
        assert_eq!(
            plan.into_posts().shown,
            vec![(31, 40), (11, 20)],
            "each page's own stretch: nothing said of 21 to 30, which no page showed"
        );

        let mut plan = PagePlan::new(Some(15), 3);
        let mut damaged = page("c", 11..=20);
        damaged.posts.retain(|p| p.id != 17);
        damaged.warnings.push(crate::parse::ParseWarning {
            post: None,
            problem: "unreadable".into(),
        });
        plan.take(damaged);
        assert!(
            plan.into_posts().shown.is_empty(),
            "a page with unreadable markup may have left a post out that was not deleted"
        );
    }

    /// `page` with each post's view counter given by `views(id)`.
    fn viewed(mut page: ParsedPage, views: impl Fn(i64) -> Option<u64>) -> ParsedPage {
        for post in &mut page.posts {
            post.views = views(post.id);
        }
        page
    }

    #[test]
    fn new_posts_are_read_against_the_median_views_of_every_post_on_the_pages() {
        // Posts 11-20 read 1,000 each, 21 (the one new post) 9,000: its channel reads 1,000.
        let mut plan = PagePlan::new(Some(20), 3);
        let views = |id| Some(if id == 21 { 9_000 } else { 1_000 });
        assert_eq!(plan.take(viewed(page("c", 11..=21), views)), None);
        let read = plan.into_posts();
        assert_eq!(read.median_views, Some(1_000));
        assert_eq!(ids(&read.new), [21]);
        // The upper middle of four counters; posts without one and posts read twice (on two
        // pages) count once or not at all.
        let mut plan = PagePlan::new(None, 3);
        let counters = [
            None,
            Some(900),
            None,
            Some(40_000),
            Some(1_200),
            Some(1_000),
        ];
        let views = |id: i64| counters[id as usize - 1];
        plan.take(viewed(page("c", 4..=6), views));
        plan.take(viewed(page("c", 1..=5), views));
        assert_eq!(plan.into_posts().median_views, Some(1_200));
        let unread = PagePlan::new(None, 3);
        assert_eq!(unread.into_posts().median_views, None);
        let mut one = PagePlan::new(None, 3);
        one.take(viewed(page("c", 1..=1), |_| Some(7)));
        assert_eq!(one.into_posts().median_views, Some(7));
    }

    #[test]
    fn no_page_is_fetched_that_could_only_hold_known_posts() {
        let mut plan = PagePlan::new(Some(30), 3);
        // Older posts exist, but `before=31` would only show posts up to 30.
        assert_eq!(plan.take(page("c", 31..=40)), None);
        let mut nothing_new = PagePlan::new(Some(40), 3);
        assert_eq!(nothing_new.take(page("c", 31..=40)), None);
        assert!(!nothing_new.has_posts());
    }

    #[test]
    fn a_channel_seen_first_is_read_to_a_depth_only() {
        let mut plan = PagePlan::new(None, 2);
        assert_eq!(plan.take(page("c", 91..=100)), Some(91));
        assert_eq!(plan.take(page("c", 81..=90)), None);
        let posts = plan.into_posts().new;
        assert_eq!(posts.len(), 20);
        assert_eq!((posts[0].id, posts[19].id), (81, 100));
        let mut whole = PagePlan::new(None, 5);
        assert_eq!(whole.take(page("c", 1..=10)), None, "no older page");
    }

    #[test]
    fn posts_seen_on_two_pages_are_kept_once_oldest_first() {
        let mut plan = PagePlan::new(None, 3);
        plan.take(page("c", 5..=10));
        plan.take(page("c", 1..=6));
        assert_eq!(ids(&plan.into_posts().new), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn a_page_is_the_followed_channels_by_its_posts_or_its_header() {
        assert_eq!(
            page_owner("Code_Camp", &page("code_camp", 1..=3)),
            Owner::Followed { alias: None }
        );
        let mut renamed = page("campcode", 1..=3);
        renamed.header.username = Some("code_camp".into());
        assert_eq!(
            page_owner("code_camp", &renamed),
            Owner::Followed {
                alias: Some("campcode".into())
            }
        );
        let mut forwarded_in = page("code_camp", 1..=3);
        forwarded_in.posts.push(post("other", 4));
        forwarded_in.header.username = None;
        assert_eq!(
            page_owner("code_camp", &forwarded_in),
            Owner::Followed { alias: None }
        );
        assert_eq!(
            page_owner("code_camp", &page("scam", 1..=3)),
            Owner::Unrelated("scam".into())
        );
    }

    #[test]
    fn posts_are_kept_under_the_followed_name_or_its_alias_only() {
        let posts = vec![post("code_camp", 1), post("CampCode", 2), post("scam", 3)];
        let sorted = sort_by_owner(posts, "code_camp", Some("campcode"));
        assert_eq!(ids(&sorted.own), vec![1, 2]);
        assert_eq!((sorted.aliased, sorted.unrelated), (1, 1));
        let without_alias = sort_by_owner(vec![post("campcode", 2)], "code_camp", None);
        assert_eq!((without_alias.own.len(), without_alias.unrelated), (0, 1));
    }

    fn settings() -> ScraperSettings {
        let config: crate::ScraperConfig =
            oleg_settings::load(&oleg_settings::Sources::repository())
                .expect("the repository's configuration");
        config.scraper
    }

    #[test]
    fn the_next_poll_follows_the_outcome() {
        let s = settings();
        let now = 1_000_000;
        let scraped = Polled::Scraped {
            newest: Some(42),
            header: page("c", 1..=1).header,
            alias: None,
        };
        let poll = next_poll(scraped, 3, &s, now, 0.1);
        assert_eq!((poll.status, poll.failures), (ChannelStatus::Active, 0));
        assert_eq!(poll.newest_post_id, Some(42));
        assert_eq!(
            poll.next_poll_ms,
            now + (s.poll_interval_s as f64 * 1100.0) as i64
        );

        let missing = next_poll(Polled::Missing, 3, &s, now, 0.0);
        assert_eq!(missing.status, ChannelStatus::Missing);
        assert_eq!(missing.next_poll_ms, now + s.missing_retry_s as i64 * 1000);

        let limited = next_poll(Polled::RateLimited(Duration::from_secs(7)), 2, &s, now, 0.0);
        assert_eq!((limited.failures, limited.next_poll_ms), (2, now + 7_000));
        assert_eq!(
            limited.newest_post_id, None,
            "nothing learnt, nothing changed"
        );
    }

    #[test]
    fn failed_polls_back_off_doubling_up_to_the_maximum() {
        let s = settings();
        let delays: Vec<i64> = (0..40)
            .map(|failures| {
                next_poll(Polled::Failed("status 502".into()), failures, &s, 0, 0.0).next_poll_ms
                    / 1000
            })
            .collect();
        assert_eq!(delays[0], (s.backoff_min_s * 2).min(s.backoff_max_s) as i64);
        assert!(delays.windows(2).all(|w| w[1] >= w[0]), "{delays:?}");
        assert_eq!(*delays.last().unwrap(), s.backoff_max_s as i64);
        let failed = next_poll(Polled::Failed("timeout".into()), 4, &s, 0, 0.0);
        assert_eq!(failed.failures, 5);
    }
}
