//! `oleg-scraper` against servers and pages that misbehave: a redirect to another host (never
//! followed: the other host gets no request), pages that name another channel than the one
//! followed (an alias is stored under the followed name; an unrelated channel not at all), a
//! Retry-After too large for any clock, a response that stalls past the timeout, and a body over
//! the limit.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mongodb::bson::doc;
use oleg_testkit::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_oleg-scraper");

fn codecamp_page() -> String {
    std::fs::read_to_string(repo_root().join("../shared/fixtures/telegram/codecamp.html")).unwrap()
}

/// What the site answers for one channel.
#[derive(Clone)]
enum Answer {
    /// codecamp.html: header @codecamp, posts `campcode/2357`…`campcode/2376`.
    CodecampPage,
    Redirect(String),
    TooManyRequests(&'static str),
    /// The page, after this long on the first request only.
    StallOnce(Duration),
}

#[derive(Default)]
struct Site {
    answers: HashMap<String, Answer>,
    hits: Mutex<HashMap<String, u32>>,
}

async fn page(Path(channel): Path<String>, State(site): State<Arc<Site>>) -> Response {
    let hit = {
        let mut hits = site.hits.lock().unwrap();
        let n = hits.entry(channel.clone()).or_default();
        *n += 1;
        *n
    };
    let html = || {
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            codecamp_page(),
        )
            .into_response()
    };
    match site.answers.get(&channel).cloned() {
        Some(Answer::CodecampPage) => html(),
        Some(Answer::Redirect(to)) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
        Some(Answer::TooManyRequests(wait)) => {
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, wait)]).into_response()
        }
        Some(Answer::StallOnce(stall)) => {
            if hit == 1 {
                tokio::time::sleep(stall).await;
            }
            html()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Serves `answers` at `/s/<channel>` on `ip`; returns the site and its base URL.
async fn serve(ip: &str, answers: HashMap<String, Answer>) -> (Arc<Site>, String) {
    let site = Arc::new(Site {
        answers,
        ..Default::default()
    });
    let app = Router::new()
        .route("/s/{channel}", get(page))
        .with_state(site.clone());
    let listener = tokio::net::TcpListener::bind(format!("{ip}:0"))
        .await
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (site, base)
}

struct Harness {
    services: TestServices,
    scraper: WorkerProcess,
}

impl Harness {
    async fn start(test: &str, base: &str, channels: &[&str], extra: &[(&str, &str)]) -> Self {
        let services = TestServices::start(test, mongo_settings(test)).await;
        let channels = channels.join(",");
        let mut settings = vec![
            ("OLEG__SCRAPER__BASE_URL", base),
            ("OLEG__SCRAPER__CHANNELS", channels.as_str()),
            ("OLEG__SCRAPER__REQUEST_INTERVAL_MS", "50"),
            ("OLEG__SCRAPER__FIRST_SIGHT_PAGES", "1"),
            ("OLEG__SCRAPER__BACKOFF_MIN_S", "1"),
        ];
        settings.extend_from_slice(extra);
        let scraper = services.spawn(
            BINARY,
            "OLEG__SCRAPER__METRICS_ADDR",
            "scraper.log",
            &settings,
        );
        scraper.wait_ready(Duration::from_secs(30)).await;
        Self { services, scraper }
    }

    /// Waits until `name` satisfies `done`.
    async fn wait_channel(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&oleg_store::ChannelRecord) -> bool,
    ) -> oleg_store::ChannelRecord {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // No record yet is "not yet": the scraper stores a channel it follows from its
            // settings at its first pass, which may come a moment after it reports ready.
            let record = self.services.store.channel(name).await.unwrap();
            if let Some(record) = record.as_ref().filter(|record| done(record)) {
                return record.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {what} never happened: {record:?}\n{}",
                self.scraper.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn posts(&self, channel: &str) -> u64 {
        self.services
            .store
            .collections()
            .posts
            .count_documents(doc! {"channel": channel})
            .await
            .unwrap()
    }

    async fn metric(&self, line: &str) -> u64 {
        let metrics = self.scraper.get("/metrics").await.unwrap().1;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or(0)
    }

    async fn finish(self) {
        drop(self.scraper);
        self.services.finish().await;
    }
}

/// Defect: reqwest followed up to ten redirects to any host; only the path was checked after.
#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed() {
    let (elsewhere, elsewhere_base) = serve(
        "127.0.0.2",
        HashMap::from([("offsite_one".to_owned(), Answer::CodecampPage)]),
    )
    .await;
    let (_, base) = serve(
        "127.0.0.1",
        HashMap::from([(
            "offsite_one".to_owned(),
            Answer::Redirect(format!("{elsewhere_base}/s/offsite_one")),
        )]),
    )
    .await;
    let h = Harness::start("scraper-offsite", &base, &["offsite_one"], &[]).await;
    h.wait_channel("offsite_one", "marked missing", |c| {
        c.status == oleg_store::ChannelStatus::Missing
    })
    .await;
    assert!(
        elsewhere.hits.lock().unwrap().is_empty(),
        "the other host was asked"
    );
    assert_eq!(h.posts("offsite_one").await + h.posts("campcode").await, 0);
    assert_eq!(
        h.metric("oleg_scraper_requests_total{outcome=\"redirected_away\"}")
            .await,
        1
    );
    h.finish().await;
}

/// Defect: posts took their channel from the page's `data-post`, so any page could store posts
/// under a channel nobody follows.
#[tokio::test]
async fn posts_are_stored_only_under_the_followed_channel() {
    let (_, base) = serve(
        "127.0.0.1",
        HashMap::from([
            // Its own page under another of its usernames: header @codecamp, posts campcode/….
            ("codecamp".to_owned(), Answer::CodecampPage),
            // A page claiming an unrelated channel.
            ("notcodecamp".to_owned(), Answer::CodecampPage),
            // A redirect on the same host to another channel's page.
            (
                "hopper_one".to_owned(),
                Answer::Redirect("/s/codecamp".into()),
            ),
        ]),
    )
    .await;
    let h = Harness::start(
        "scraper-owner",
        &base,
        &["codecamp", "notcodecamp", "hopper_one"],
        &[],
    )
    .await;
    let codecamp = h
        .wait_channel("codecamp", "scraped", |c| c.newest_post_id.is_some())
        .await;
    assert_eq!(codecamp.newest_post_id, Some(2376));
    assert_eq!(codecamp.alias.as_deref(), Some("campcode"));
    for name in ["notcodecamp", "hopper_one"] {
        h.wait_channel(name, "marked missing", |c| {
            c.status == oleg_store::ChannelStatus::Missing
        })
        .await;
    }
    assert_eq!(h.posts("codecamp").await, 20);
    let stored = h
        .services
        .store
        .collections()
        .posts
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(stored, 20, "posts stored under a channel nobody follows");
    assert_eq!(
        h.metric("oleg_scraper_channel_mismatches_total{kind=\"alias\"}")
            .await,
        20
    );
    assert_eq!(
        h.metric("oleg_scraper_channel_mismatches_total{kind=\"unrelated\"}")
            .await,
        40
    );
    h.finish().await;
}

/// Defect: `Instant::now() + wait` panicked on a Retry-After of u64::MAX seconds, a crash loop
/// since the channel was still due after a restart; a date in the year 9999 paused for ever.
#[tokio::test]
async fn no_retry_after_crashes_the_scraper_or_pauses_it_beyond_the_limit() {
    let (_, base) = serve(
        "127.0.0.1",
        HashMap::from([
            (
                "hugewait_one".to_owned(),
                Answer::TooManyRequests("18446744073709551615"),
            ),
            (
                "farwait_one".to_owned(),
                Answer::TooManyRequests("Fri, 31 Dec 9999 23:59:59 GMT"),
            ),
        ]),
    )
    .await;
    let started = chrono::Utc::now().timestamp_millis();
    let day_ms = 86_400_000;
    let h = Harness::start(
        "scraper-retry-after",
        &base,
        &["hugewait_one", "farwait_one"],
        &[],
    )
    .await;
    let huge = h
        .wait_channel("hugewait_one", "rate limited", |c| {
            c.next_poll_ms > started + 60_000
        })
        .await;
    assert!(huge.next_poll_ms <= started + day_ms + 60_000, "{huge:?}");
    // The whole host pauses for the first 429, so the other channel is not asked yet; the
    // scraper lives on and answers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.scraper.get("/healthz").await.map(|r| r.0), Some(200));
    h.finish().await;

    // A date in the year 9999, alone.
    let h = Harness::start("scraper-retry-date", &base, &["farwait_one"], &[]).await;
    let far = h
        .wait_channel("farwait_one", "rate limited", |c| {
            c.next_poll_ms > started + 60_000
        })
        .await;
    assert!(far.next_poll_ms <= started + day_ms + 120_000, "{far:?}");
    assert_eq!(h.scraper.get("/healthz").await.map(|r| r.0), Some(200));
    h.finish().await;
}

/// A response that stalls past `request_timeout_ms` is a failure with backoff, then retried.
#[tokio::test]
async fn a_stalled_response_times_out_and_is_retried() {
    let (site, base) = serve(
        "127.0.0.1",
        HashMap::from([(
            "campcode".to_owned(),
            Answer::StallOnce(Duration::from_secs(4)),
        )]),
    )
    .await;
    let h = Harness::start(
        "scraper-stall",
        &base,
        &["campcode"],
        &[("OLEG__SCRAPER__REQUEST_TIMEOUT_MS", "500")],
    )
    .await;
    h.wait_channel("campcode", "scraped", |c| c.newest_post_id == Some(2376))
        .await;
    assert_eq!(h.posts("campcode").await, 20);
    assert_eq!(
        h.metric("oleg_scraper_requests_total{outcome=\"failed\"}")
            .await,
        1
    );
    assert_eq!(site.hits.lock().unwrap()["campcode"], 2);
    h.finish().await;
}

/// A body over `max_body_bytes` stores nothing and counts as a failed poll.
#[tokio::test]
async fn a_body_over_the_limit_stores_nothing() {
    let (_, base) = serve(
        "127.0.0.1",
        HashMap::from([("campcode".to_owned(), Answer::CodecampPage)]),
    )
    .await;
    let h = Harness::start(
        "scraper-big",
        &base,
        &["campcode"],
        &[("OLEG__SCRAPER__MAX_BODY_BYTES", "20000")],
    )
    .await;
    h.wait_channel("campcode", "failed", |c| c.failures >= 1)
        .await;
    assert_eq!(h.posts("campcode").await, 0);
    assert!(
        h.metric("oleg_scraper_requests_total{outcome=\"failed\"}")
            .await
            >= 1
    );
    h.finish().await;
}
