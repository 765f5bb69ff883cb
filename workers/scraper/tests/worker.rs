//! `oleg-scraper` as a process against pages served from loopback: every post stored once,
//! `?before=` pagination, a 429 with Retry-After, a 500, a slow response, a missing channel, the
//! rate limit kept, a restart that resumes from the newest stored post, and a deleted post.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mongodb::bson::doc;
use oleg_bus::{Bus, QueueName, Source, Subscription};
use oleg_messages::{
    decode, AddChannel, ChannelName, DeadLetter, DeadLetterReason, ScrapedPost, SCHEMA_VERSION,
};
use oleg_store::Store;
use oleg_telemetry::Readiness;
use oleg_testkit::*;
use prometheus::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const BINARY: &str = env!("CARGO_BIN_EXE_oleg-scraper");

#[derive(Default)]
struct Site {
    requests: Mutex<Vec<(Instant, String)>>,
    hits: Mutex<HashMap<String, u32>>,
    /// campcode's newest post (3.5K views) has since been read 7.5K times, and its post 2370
    /// was deleted.
    campcode_changed: std::sync::atomic::AtomicBool,
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("../shared/fixtures/telegram").join(name)).unwrap()
}

async fn channel_page(
    Path(channel): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    State(site): State<Arc<Site>>,
) -> Response {
    let before = query.get("before").cloned();
    site.requests.lock().unwrap().push((
        Instant::now(),
        format!("{channel}?{}", before.clone().unwrap_or_default()),
    ));
    let hit = {
        let mut hits = site.hits.lock().unwrap();
        let n = hits.entry(channel.clone()).or_default();
        *n += 1;
        *n
    };
    let html =
        |body: String| ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    match channel.as_str() {
        "campcode" if before.as_deref() == Some("2357") => {
            // An older page: the same markup with ids 1357–1376.
            html(
                fixture("codecamp.html")
                    .replace("campcode/23", "campcode/13")
                    .replace("data-before=\"2357\"", "data-before=\"1357\""),
            )
        }
        "campcode"
            if site
                .campcode_changed
                .load(std::sync::atomic::Ordering::SeqCst) =>
        {
            html(without_post(
                &fixture("codecamp.html").replace(
                    "tgme_widget_message_views\">3.5K<",
                    "tgme_widget_message_views\">7.5K<",
                ),
                "campcode/2370",
            ))
        }
        "campcode" => html(fixture("codecamp.html")),
        "excelhackru" if hit == 1 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "excelhackru" => html(fixture("excelhackru.html")),
        "topwar_official" if hit == 1 => {
            (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response()
        }
        "topwar_official" => html(fixture("topwar_official.html")),
        "infoscape_test" => html(fixture("infoscape_test.html")),
        "air_alert_ua" => {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            html(fixture("air_alert_ua.html"))
        }
        // Telegram sends unknown and private channels to their info page.
        other => (StatusCode::FOUND, [(header::LOCATION, format!("/{other}"))]).into_response(),
    }
}

/// `html` without the post `post` (`channel/id`), as Telegram shows a channel page once the
/// post is deleted.
fn without_post(html: &str, post: &str) -> String {
    const WRAP: &str = "<div class=\"tgme_widget_message_wrap";
    let at = html
        .find(&format!("data-post=\"{post}\""))
        .expect("the post is on the page");
    let start = html[..at].rfind(WRAP).expect("its message's wrap");
    let end = at + html[at..].find(WRAP).expect("a newer post follows");
    format!("{}{}", &html[..start], &html[end..])
}

/// A request to follow `channel` that names no person.
fn channel_request(channel: &str) -> AddChannel {
    AddChannel {
        schema_version: SCHEMA_VERSION,
        channel: ChannelName::parse(channel).unwrap(),
        requested_by: None,
        requested_at: chrono::Utc::now(),
    }
}

async fn serve_site(site: Arc<Site>) -> String {
    let app = Router::new()
        .route("/s/{channel}", get(channel_page))
        .route("/{channel}", get(|| async { "a channel info page" }))
        .with_state(site);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn scrapes_every_post_once_politely_and_resumes_after_a_restart() {
    let site = Arc::new(Site::default());
    let base = serve_site(site.clone()).await;
    let amqp = amqp_settings("scraper-e2e");
    let mongo = mongo_settings("scraper-e2e");
    let shutdown = CancellationToken::new();
    let bus = Bus::connect(
        amqp.clone(),
        "scraper-e2e",
        &Registry::new(),
        Readiness::default(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let store = Store::connect(&mongo, "scraper-e2e").await.unwrap();
    store.ensure_indexes().await.unwrap();
    let mut notices = Subscription::new(bus.clone(), Source::PerReplica(vec!["post.scraped"]));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), notices.next())
            .await
            .is_err(),
        "bound, nothing yet"
    );

    let mut env = worker_env(&amqp, &mongo);
    for (key, value) in [
        ("OLEG__SCRAPER__BASE_URL", base.as_str()),
        (
            "OLEG__SCRAPER__CHANNELS",
            "campcode,excelhackru,topwar_official,air_alert_ua,nosuchchannel",
        ),
        ("OLEG__SCRAPER__REQUEST_INTERVAL_MS", "300"),
        ("OLEG__SCRAPER__POLL_INTERVAL_S", "3"),
        ("OLEG__SCRAPER__BACKOFF_MIN_S", "1"),
        ("OLEG__SCRAPER__FIRST_SIGHT_PAGES", "2"),
        ("OLEG__SCRAPER__REQUEST_TIMEOUT_MS", "5000"),
    ] {
        env.push((key.into(), value.into()));
    }
    let dir = repo_root().join("target/test-runs/scraper-e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let mut scraper = WorkerProcess::spawn(
        BINARY,
        &env,
        "OLEG__SCRAPER__METRICS_ADDR",
        dir.join("first.log"),
    );

    // 40 campcode posts (two pages), 18 + 12 + 20 from the others.
    let mut announced = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while announced.len() < 90 {
        let left = deadline.saturating_duration_since(Instant::now());
        let incoming = tokio::time::timeout(left, notices.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} of 90 posts announced; log:\n{}",
                    announced.len(),
                    scraper.log_tail()
                )
            })
            .unwrap();
        let post: ScrapedPost = decode(&incoming.body, 1 << 20).unwrap();
        *announced
            .entry(format!("{}/{}", post.channel, post.post_id))
            .or_insert(0) += 1;
        incoming.ack().await.unwrap();
    }
    assert!(
        announced.values().all(|&n| n == 1),
        "each post announced once"
    );
    assert_eq!(
        store
            .collections()
            .posts
            .count_documents(doc! {})
            .await
            .unwrap(),
        90
    );
    assert!(announced.contains_key("campcode/1357") && announced.contains_key("campcode/2376"));

    let channel = |name: &'static str| {
        let store = store.clone();
        async move { store.channel(name).await.unwrap().unwrap() }
    };
    wait_until(
        Duration::from_secs(20),
        async || channel("nosuchchannel").await.status == oleg_store::ChannelStatus::Missing,
        || "the missing channel was never marked".to_owned(),
    )
    .await;
    assert_eq!(channel("campcode").await.newest_post_id, Some(2376));
    assert_eq!(channel("campcode").await.title.as_deref(), Some("CodeCamp"));
    assert_eq!(
        channel("topwar_official").await.newest_post_id,
        Some(71008),
        "read after its 429"
    );
    assert_eq!(
        channel("excelhackru").await.failures,
        0,
        "recovered after its 500"
    );

    // Polite: never two requests closer than the interval.
    let mut starts: Vec<Instant> = site
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(t, _)| *t)
        .collect();
    starts.sort();
    for pair in starts.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(280),
            "requests {:?} apart",
            pair[1] - pair[0]
        );
    }

    let views_of_the_newest = || {
        let store = store.clone();
        async move {
            let post = store
                .collections()
                .posts
                .find_one(doc! {"channel": "campcode", "post_id": 2376_i64})
                .await
                .unwrap()
                .expect("stored");
            post.views
        }
    };
    assert_eq!(views_of_the_newest().await, Some(3_500));

    // Restart: it polls again from the newest stored post, without older pages or new notices,
    // stores the posts it read again with their current views, and marks the post the channel
    // deleted since.
    site.campcode_changed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    scraper.kill();
    let before_restart = site.requests.lock().unwrap().len();
    let scraper = WorkerProcess::spawn(
        BINARY,
        &env,
        "OLEG__SCRAPER__METRICS_ADDR",
        dir.join("second.log"),
    );
    scraper.wait_ready(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after: Vec<String> = site.requests.lock().unwrap()[before_restart..]
        .iter()
        .map(|(_, r)| r.clone())
        .collect();
    assert!(
        after.iter().any(|r| r == "campcode?"),
        "it polled again: {after:?}"
    );
    assert!(
        after.iter().all(|r| r.ends_with('?')),
        "no older pages after a restart: {after:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), notices.next())
            .await
            .is_err(),
        "nothing new to announce"
    );
    assert_eq!(
        store
            .collections()
            .posts
            .count_documents(doc! {})
            .await
            .unwrap(),
        90
    );
    assert_eq!(
        views_of_the_newest().await,
        Some(7_500),
        "a known post read again keeps its current views"
    );
    let candidates = || {
        let store = store.clone();
        async move {
            let posts = store.recent_posts(0).await.unwrap();
            posts
                .iter()
                .filter(|p| p.channel == "campcode")
                .map(|p| p.post_id)
                .collect::<Vec<_>>()
        }
    };
    wait_until(
        Duration::from_secs(10),
        async || !candidates().await.contains(&2370),
        || {
            format!(
                "the deleted post is still a candidate; log:\n{}",
                scraper.log_tail()
            )
        },
    )
    .await;
    let left = candidates().await;
    assert_eq!(left.len(), 39, "only the deleted post left the candidates");
    assert!(left.contains(&2369) && left.contains(&2371) && left.contains(&1370));
    let (_, metrics) = scraper.get("/metrics").await.unwrap();
    assert!(
        metrics.contains("oleg_scraper_posts_total{outcome=\"seen\"}"),
        "re-read posts are counted as seen"
    );
    for line in [
        "oleg_scraper_posts_total{outcome=\"deleted\"} 1",
        "oleg_scraper_channels{state=\"active\"} 4",
        "oleg_scraper_channels{state=\"missing\"} 1",
        "oleg_scraper_channels{state=\"paused\"} 0",
    ] {
        assert!(metrics.contains(line), "no {line}:\n{metrics}");
    }

    // A channel asked for on the bus is followed; a name that is no username is refused.
    bus.publish(&channel_request("infoscape_test"))
        .await
        .unwrap();
    let bad =
        br#"{"schema_version":1,"channel":"no/such name","requested_at":"2026-11-27T10:30:00Z"}"#;
    bus.publish_bytes(
        &bus.topology().events_exchange(),
        "channel.add",
        bad,
        Default::default(),
    )
    .await
    .unwrap();
    for _ in 0..5 {
        let incoming = tokio::time::timeout(Duration::from_secs(30), notices.next())
            .await
            .expect("the requested channel's posts")
            .unwrap();
        let post: ScrapedPost = decode(&incoming.body, 1 << 20).unwrap();
        assert_eq!(post.channel.as_str(), "infoscape_test");
        incoming.ack().await.unwrap();
    }
    let mut dead = Subscription::new(bus.clone(), Source::Shared(QueueName::DeadLetters));
    let letter = tokio::time::timeout(Duration::from_secs(10), dead.next())
        .await
        .expect("the bad name refused")
        .unwrap();
    let letter: DeadLetter = decode(&letter.body, 1 << 20).unwrap();
    assert_eq!(letter.reason, DeadLetterReason::Malformed);
    assert!(letter.detail.contains("channel"), "{}", letter.detail);

    shutdown.cancel();
    bus.close().await;
    delete_topology(&amqp).await;
    let _ = store.drop_database().await;
}

/// Defect: the scraper aborted its consumer of channel requests when it stopped and returned
/// without waiting for it, so a request in hand was dropped half-way (to be delivered again) and
/// could meet the store the runtime closes next. The store holds the request's write back while
/// the stop comes: `run` returns only once the request is stored and settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_request_in_hand_at_a_stop_is_stored_and_settled_before_the_scraper_returns() {
    use oleg_testkit::fault_proxy::FaultProxy;
    let test = "scraper-stop";
    let proxy = FaultProxy::start(mongodb_address()).await;
    let through_proxy = oleg_settings::MongoSettings {
        uri: proxy.mongodb_uri().into(),
        ..mongo_settings(test)
    };
    let services = TestServices::start(test, through_proxy).await;
    let (bus, store) = (services.bus.clone(), services.store.clone());
    let config: oleg_scraper::ScraperConfig =
        oleg_settings::load(&oleg_settings::Sources::repository()).unwrap();
    let settings = oleg_scraper::ScraperSettings {
        channels: Vec::new(),
        ..config.scraper
    };
    let fetcher = oleg_scraper::fetch::Fetcher::new(
        "http://127.0.0.1:9",
        Duration::from_millis(settings.request_interval_ms),
        Duration::from_millis(settings.request_timeout_ms),
        settings.max_body_bytes,
        oleg_scraper::fetch::RetryAfter {
            default: Duration::from_secs(1),
            max: Duration::from_secs(1),
        },
    )
    .unwrap();
    let scraper = oleg_scraper::worker::Scraper {
        bus: bus.clone(),
        store: store.clone(),
        settings,
        metrics: oleg_scraper::worker::ScraperMetrics::register(&Registry::new()).unwrap(),
        fetcher,
    };
    let queue = bus.topology().queue(QueueName::Scraper);
    let running = tokio::spawn(scraper.run());
    wait_for_consumers(&services.amqp, &queue, 1).await;

    proxy.hold_next(&[b"update\0", b"channels\0", b"infoscape_test"]);
    bus.publish(&channel_request("infoscape_test"))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), proxy.wait_held())
        .await
        .expect("the request's write reached the store");
    services.shutdown.cancel();
    // Long enough for the polling loop, which sleeps a quarter of a second, to have ended.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !running.is_finished(),
        "the scraper returned with a channel request in hand"
    );
    proxy.release();
    running.await.unwrap();
    // Closed first, so that a delivery left unacked is back in the queue's count.
    bus.close().await;
    assert_eq!(
        queue_depth(&services.amqp, &queue).await,
        0,
        "the request was not settled: it will be delivered again"
    );
    let added = store.channel("infoscape_test").await.unwrap();
    assert!(added.is_some(), "the requested channel was not stored");
    services.finish().await;
    store.close().await;
}
