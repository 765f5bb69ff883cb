//! The scraping loop: polls due channels, follows `?before=` pages back to known posts (or to a
//! depth on first sight), stores posts idempotently, then announces the new ones.

use crate::crawl::{next_poll, page_owner, sort_by_owner, Owner, PagePlan, Polled};
use crate::fetch::{FetchError, Fetched, Fetcher};
use crate::parse::{parse_page, ParsedPage, ParsedPost};
use crate::ScraperSettings;
use chrono::Utc;
use oleg_bus::{consume, Bus, Outcome, QueueName, Source};
use oleg_messages::{AddChannel, ChannelName, PostId, ScrapedPost, SCHEMA_VERSION};
use oleg_store::{ChannelRecord, Store, CHANNEL_STATES};
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use rand::Rng;
use std::time::Duration;
use tokio::time::Instant;

/// How often the followed channels are counted by state for `oleg_scraper_channels`.
const CHANNELS_COUNTED_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct ScraperMetrics {
    pub requests: IntCounterVec,
    pub pages: IntCounter,
    pub posts: IntCounterVec,
    pub parse_warnings: IntCounter,
    pub mismatches: IntCounterVec,
    pub channels: IntGaugeVec,
}

impl ScraperMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "oleg_scraper_requests_total",
                    "Page requests by outcome (ok, missing, redirected_away: to another host, not followed, rate_limited, server_error, failed).",
                ),
                &["outcome"],
            )?,
            pages: IntCounter::new("oleg_scraper_pages_parsed_total", "Pages parsed.")?,
            posts: IntCounterVec::new(
                Opts::new(
                    "oleg_scraper_posts_total",
                    "Posts stored, by outcome (new, seen), and stored posts found deleted from their channel (deleted: a page no longer shows them; they are no longer recommended).",
                ),
                &["outcome"],
            )?,
            parse_warnings: IntCounter::new(
                "oleg_scraper_parse_warnings_total",
                "Posts or markup that could not be read and were skipped.",
            )?,
            mismatches: IntCounterVec::new(
                Opts::new(
                    "oleg_scraper_channel_mismatches_total",
                    "Posts whose page names another channel than the one followed: alias (the page is the followed channel's, under another of its usernames; stored under the followed name) or unrelated (not stored).",
                ),
                &["kind"],
            )?,
            channels: IntGaugeVec::new(
                Opts::new(
                    "oleg_scraper_channels",
                    "Followed channels by state (active, missing: not found or private, retried daily; paused), counted every minute.",
                ),
                &["state"],
            )?,
        };
        for kind in ["alias", "unrelated"] {
            metrics.mismatches.with_label_values(&[kind]);
        }
        // At 0 from the start: a scraper that never stores a post shows it (alert
        // OlegScraperStoresNothing).
        for outcome in ["new", "seen", "deleted"] {
            metrics.posts.with_label_values(&[outcome]);
        }
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.pages.clone()))?;
        registry.register(Box::new(metrics.posts.clone()))?;
        registry.register(Box::new(metrics.parse_warnings.clone()))?;
        registry.register(Box::new(metrics.mismatches.clone()))?;
        registry.register(Box::new(metrics.channels.clone()))?;
        Ok(metrics)
    }
}

pub struct Scraper {
    pub bus: Bus,
    pub store: Store,
    pub settings: ScraperSettings,
    pub metrics: ScraperMetrics,
    pub fetcher: Fetcher,
}

/// Stores the channels of the settings (known ones are left as they are).
pub async fn add_configured_channels(
    store: &Store,
    settings: &ScraperSettings,
) -> Result<(), oleg_store::StoreError> {
    let now = Utc::now().timestamp_millis();
    for channel in &settings.channels {
        store.add_channel(channel, now).await?;
    }
    Ok(())
}

impl Scraper {
    /// Polls due channels and takes channel requests until the bus's shutdown token is
    /// cancelled, and returns once both have ended. Nothing here ends it early: a store that does
    /// not answer or a page that fails is logged and tried again.
    pub async fn run(self) {
        let shutdown = self.bus.shutdown_token().clone();
        let additions = tokio::spawn(follow_additions(self.bus.clone(), self.store.clone()));
        let mut counted_at: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            if counted_at.is_none_or(|at| at.elapsed() >= CHANNELS_COUNTED_EVERY) {
                self.count_channels().await;
                counted_at = Some(Instant::now());
            }
            let due = match self
                .store
                .due_channels(Utc::now().timestamp_millis(), 16)
                .await
            {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "cannot read channels; retrying");
                    Vec::new()
                }
            };
            for channel in &due {
                if shutdown.is_cancelled() {
                    break;
                }
                self.poll(channel).await;
            }
            if due.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        }
        // The consumer ends at the same stop, once the request in hand is stored and settled:
        // cut short, it could meet the store the runtime closes next.
        if let Err(error) = additions.await {
            tracing::error!(%error, "the channel requests' consumer panicked");
        }
    }

    /// Sets `oleg_scraper_channels`; a store that does not answer leaves the last count.
    async fn count_channels(&self) {
        match self.store.channels().await {
            Ok(channels) => {
                for state in CHANNEL_STATES {
                    let count = channels.iter().filter(|c| c.state() == state).count();
                    self.metrics
                        .channels
                        .with_label_values(&[state])
                        .set(count as i64);
                }
            }
            Err(error) => tracing::warn!(%error, "cannot count the channels"),
        }
    }

    async fn poll(&self, channel: &ChannelRecord) {
        let polled = self.crawl(channel).await;
        match &polled {
            Polled::Missing => {
                tracing::info!(channel = %channel.name, "channel does not exist or is private; retrying rarely");
            }
            Polled::Failed(problem) => {
                tracing::warn!(channel = %channel.name, %problem, failures = channel.failures + 1, "poll failed");
            }
            Polled::Scraped { .. } | Polled::RateLimited(_) => {}
        }
        let jitter = self.settings.poll_jitter;
        let jitter = rand::rng().random_range(-jitter..=jitter);
        let now = Utc::now().timestamp_millis();
        let poll = next_poll(polled, channel.failures, &self.settings, now, jitter);
        match self.store.record_poll(&channel.name, &poll).await {
            Ok(true) => {}
            // Paused or unfollowed while it was polled: posts it stored of a channel no
            // longer followed are withdrawn like the rest of them.
            Ok(false) => self.withdraw_if_unfollowed(&channel.name).await,
            Err(error) => {
                tracing::warn!(%error, channel = %channel.name, "could not record the poll");
            }
        }
    }

    async fn withdraw_if_unfollowed(&self, channel: &str) {
        let now = Utc::now().timestamp_millis();
        let withdrawn = match self.store.channel(channel).await {
            Ok(Some(_)) => return,
            Ok(None) => self.store.withdraw_unfollowed_posts(channel, now).await,
            Err(error) => Err(error),
        };
        if let Err(error) = withdrawn {
            tracing::warn!(%error, channel, "could not withdraw the posts of a channel unfollowed while it was polled");
        }
    }

    async fn fetch(&self, channel: &str, before: Option<i64>) -> Result<ParsedPage, Polled> {
        let fetched = self.fetcher.channel_page(channel, before).await;
        let label = match &fetched {
            Ok(Fetched::Page(_)) => "ok",
            Ok(Fetched::Missing) => "missing",
            Ok(Fetched::RedirectedAway) => "redirected_away",
            Ok(Fetched::RateLimited(_)) => "rate_limited",
            Ok(Fetched::ServerError(_)) => "server_error",
            Err(_) => "failed",
        };
        self.metrics.requests.with_label_values(&[label]).inc();
        match fetched {
            Ok(Fetched::Page(html)) => {
                let page = parse_page(&html);
                self.metrics.pages.inc();
                for warning in &page.warnings {
                    self.metrics.parse_warnings.inc();
                    tracing::warn!(channel, post = ?warning.post, problem = %warning.problem, "skipped unreadable markup");
                }
                Ok(page)
            }
            Ok(Fetched::Missing) => Err(Polled::Missing),
            Ok(Fetched::RedirectedAway) => {
                tracing::warn!(channel, "redirected to another host; not followed");
                Err(Polled::Missing)
            }
            Ok(Fetched::RateLimited(wait)) => Err(Polled::RateLimited(wait)),
            Ok(Fetched::ServerError(status)) => Err(Polled::Failed(format!("status {status}"))),
            Err(
                error @ (FetchError::Network(_) | FetchError::TooLarge(_) | FetchError::Status(_)),
            ) => Err(Polled::Failed(error.to_string())),
        }
    }

    async fn crawl(&self, channel: &ChannelRecord) -> Polled {
        let known = channel.newest_post_id;
        let first = match self.fetch(&channel.name, None).await {
            Ok(page) => page,
            Err(outcome) => return outcome,
        };
        if first.posts.is_empty() && first.header.title.is_none() {
            return Polled::Missing;
        }
        let header = first.header.clone();
        let alias = match page_owner(&channel.name, &first) {
            Owner::Followed { alias } => alias,
            Owner::Unrelated(claimed) => {
                self.metrics
                    .mismatches
                    .with_label_values(&["unrelated"])
                    .inc_by(first.posts.len() as u64);
                tracing::warn!(channel = %channel.name, page = %claimed, "the page is another channel's; nothing stored");
                return Polled::Missing;
            }
        };
        let mut plan = PagePlan::new(channel.newest_post_id, self.settings.first_sight_pages);
        let mut next = plan.take(first);
        while let Some(before) = next {
            next = match self.fetch(&channel.name, Some(before)).await {
                Ok(page) => plan.take(page),
                // Keep what was read; the rest comes next time.
                Err(_) if plan.has_posts() => None,
                Err(outcome) => return outcome,
            };
        }
        // The followed name is the one stored: an alias's posts go under it, any other
        // channel's are left out.
        let read = plan.into_posts();
        let sorted = sort_by_owner(read.new, &channel.name, alias.as_deref());
        let mismatches = &self.metrics.mismatches;
        mismatches
            .with_label_values(&["unrelated"])
            .inc_by(sorted.unrelated as u64);
        mismatches
            .with_label_values(&["alias"])
            .inc_by(sorted.aliased as u64);
        let newest = sorted.own.iter().map(|p| p.id).max().or(known);
        // Known posts are stored again (their views grow, their text may be edited), counted
        // as seen and not announced; their mismatches were counted when they were new.
        let known_sorted = sort_by_owner(read.known, &channel.name, alias.as_deref());
        let scraped: Vec<ScrapedPost> = sorted
            .own
            .iter()
            .chain(&known_sorted.own)
            .filter_map(|post| to_message(post, &channel.name, read.median_views))
            .collect();
        // A post naming another channel is numbered in that channel's sequence: the stretches
        // would not be the followed channel's.
        let shown = if sorted.unrelated + known_sorted.unrelated == 0 {
            read.shown
        } else {
            Vec::new()
        };
        match self
            .store
            .upsert_posts(&scraped, Utc::now().timestamp_millis())
            .await
        {
            Ok(new) => {
                self.metrics
                    .posts
                    .with_label_values(&["new"])
                    .inc_by(new.len() as u64);
                self.metrics
                    .posts
                    .with_label_values(&["seen"])
                    .inc_by((scraped.len() - new.len()) as u64);
                for post in scraped.iter().filter(|p| {
                    new.iter()
                        .any(|n| n.channel == p.channel && n.post_id == p.post_id)
                }) {
                    if let Err(error) = self.bus.publish(post).await {
                        tracing::warn!(%error, post = %post.post_id, "could not announce a post");
                    }
                }
                let present: Vec<i64> = scraped.iter().map(|p| p.post_id.get()).collect();
                self.mark_deleted(&channel.name, &shown, &present).await;
                Polled::Scraped {
                    newest,
                    header,
                    alias,
                }
            }
            Err(error) => Polled::Failed(format!("store: {error}")),
        }
    }

    /// Marks the stored posts within `shown` that are not `present` as deleted: they leave the
    /// candidates at the rankers' next reload. A failure is logged and tried again at the next
    /// poll, which shows the same stretch while the posts are young.
    async fn mark_deleted(&self, channel: &str, shown: &[(i64, i64)], present: &[i64]) {
        let now = Utc::now().timestamp_millis();
        for &stretch in shown {
            match self
                .store
                .mark_deleted_posts(channel, stretch, present, now)
                .await
            {
                Ok(0) => {}
                Ok(marked) => {
                    self.metrics
                        .posts
                        .with_label_values(&["deleted"])
                        .inc_by(marked);
                    tracing::info!(
                        channel,
                        marked,
                        "posts deleted from the channel; no longer recommended"
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, channel, "could not mark deleted posts");
                }
            }
        }
    }
}

fn to_message(
    post: &ParsedPost,
    followed: &str,
    page_median_views: Option<u64>,
) -> Option<ScrapedPost> {
    Some(ScrapedPost {
        schema_version: SCHEMA_VERSION,
        channel: ChannelName::parse(followed).ok()?,
        post_id: PostId::new(post.id).ok()?,
        published_at: post.date,
        text: post.text.clone(),
        links: post.links.clone(),
        views: post.views,
        page_median_views,
        media: post.media.clone(),
        forwarded_from: post.forwarded_from.clone(),
        reply_to: post.reply_to.and_then(|r| PostId::new(r).ok()),
        scraped_at: Utc::now(),
    })
}

/// Channels asked for on the bus; a name that is not a username is dead-lettered with the reason.
async fn follow_additions(bus: Bus, store: Store) {
    let max_bytes = bus.settings().max_message_bytes;
    consume(
        bus,
        Source::Shared(QueueName::Scraper),
        max_bytes,
        |request: AddChannel| {
            let store = store.clone();
            async move {
                let now = Utc::now().timestamp_millis();
                match store.add_channel(request.channel.as_str(), now).await {
                    Ok(added) => {
                        tracing::info!(channel = %request.channel, added, "channel requested");
                        Outcome::Done
                    }
                    Err(error) => Outcome::failed(&error, error.is_transient()),
                }
            }
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_is_sent_with_its_views_and_the_median_views_of_its_channels_pages() {
        let post = ParsedPost {
            channel: "campcode".into(),
            id: 3,
            date: Utc::now(),
            text: String::new(),
            links: vec![],
            views: Some(40_000),
            media: vec![],
            forwarded_from: None,
            reply_to: None,
        };
        let message = to_message(&post, "campcode", Some(1_200)).unwrap();
        assert_eq!(
            (message.views, message.page_median_views),
            (Some(40_000), Some(1_200))
        );
    }
}
