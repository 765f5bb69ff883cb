//! `oleg-ingest` (in-process, or as a process where a test kills it) against the real broker and Mongo-wire server: exactly-once storage
//! under duplicates, out-of-order re-votes, SIGKILL, a store outage and competing replicas; and
//! every kind of invalid message dead-lettered with its reason while valid ones are stored.

use chrono::{DateTime, TimeZone, Utc};
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::doc;
use oleg_bus::{QueueName, Source, Subscription};
use oleg_messages::*;
use oleg_store::VoteRecord;
use oleg_testkit::in_process::InProcess;
use oleg_testkit::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_oleg-ingest");
const CHANNEL: &str = "codecamp";
const POSTS: i64 = 200;

struct Services(TestServices);

impl std::ops::Deref for Services {
    type Target = TestServices;
    fn deref(&self) -> &TestServices {
        &self.0
    }
}

impl Services {
    /// Fresh services with posts 1..=POSTS stored; `mongo_uri` replaces the store under test.
    async fn new(test: &str, mongo_uri: Option<String>) -> Self {
        let mut mongo = mongo_settings(test);
        if let Some(uri) = mongo_uri {
            mongo.uri = secrecy::SecretString::from(uri);
        }
        mongo.timeout_ms = 1_000;
        let base = TestServices::start(test, mongo).await;
        let posts: Vec<ScrapedPost> = (1..=POSTS).map(|id| scraped_post(&post_ref(id))).collect();
        base.store.upsert_posts(&posts, 0).await.unwrap();
        Self(base)
    }

    /// The worker as a process, for the tests that kill it or read its log.
    fn spawn_worker(&self, extra: &[(&str, &str)], log: &str) -> WorkerProcess {
        self.spawn(
            BINARY,
            "OLEG__INGEST__METRICS_ADDR",
            log,
            &Self::settings(extra),
        )
    }

    /// The worker in-process, for the rest.
    async fn start_worker(&self, extra: &[(&str, &str)]) -> InProcess {
        self.start_in_process::<oleg_ingest::App>(&Self::settings(extra))
            .await
    }

    fn settings<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut settings = vec![("OLEG__INGEST__STORE_PROBE_MS", "200")];
        settings.extend_from_slice(extra);
        settings
    }

    /// Publishes with 64 confirms outstanding, as a busy bot does: any order must end the same.
    async fn publish_all(&self, votes: &[Vote]) {
        futures::stream::iter(votes)
            .for_each_concurrent(64, |vote| async move {
                self.bus.publish(vote).await.expect("confirmed");
            })
            .await;
    }

    async fn stored_votes(&self) -> HashMap<(i64, i64), VoteRecord> {
        let records: Vec<VoteRecord> = self
            .store
            .collections()
            .votes
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        records
            .into_iter()
            .map(|r| ((r.user_id, r.post_id), r))
            .collect()
    }

    /// Waits until the store holds exactly `expected` (newest vote per pair, nothing else) and
    /// the queue is drained, then checks once more that nothing moves.
    async fn assert_final_votes(&self, scenario: &Scenario, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let stored = self.stored_votes().await;
            let matches = scenario.matches(&stored);
            let drained =
                queue_depth(&self.amqp, &self.bus.topology().queue(QueueName::Ingest)).await == 0;
            if matches.is_ok() && drained {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                scenario
                    .matches(&self.stored_votes().await)
                    .expect("stable after draining");
                return;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "store never reached the expected votes: {}",
                    matches.unwrap_err()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn finish(self) {
        self.0.finish().await;
    }
}

fn post_ref(id: i64) -> PostRef {
    PostRef {
        channel: ChannelName::parse(CHANNEL).unwrap(),
        post_id: PostId::new(id).unwrap(),
    }
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_764_000_000_000 + ms).unwrap()
}

/// Votes in publishing order and the final vote each (person, post) pair must end with.
struct Scenario {
    messages: Vec<Vote>,
    newest: HashMap<(i64, i64), Vote>,
    revoted: std::collections::HashSet<(i64, i64)>,
}

impl Scenario {
    /// `total` messages: distinct pairs, plus 5 % re-votes (half of them delivered before the
    /// vote they replace) and 10 % exact duplicates delivered later than their original.
    fn generate(total: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let revotes = total * 5 / 100;
        let duplicates = total * 10 / 100;
        let base = total - revotes - duplicates;
        let mut pairs = std::collections::HashSet::new();
        let mut messages = Vec::with_capacity(total);
        while messages.len() < base {
            let pair = (rng.random_range(1..=2_000_i64), rng.random_range(1..=POSTS));
            if pairs.insert(pair) {
                let reaction = if rng.random_bool(0.7) {
                    Reaction::Like
                } else {
                    Reaction::Dislike
                };
                let vote = Vote::new(
                    UserId::new(pair.0).unwrap(),
                    post_ref(pair.1),
                    reaction,
                    at_ms(messages.len() as i64),
                );
                messages.push(vote);
            }
        }
        let mut revoted = std::collections::HashSet::new();
        for i in 0..revotes {
            let original_index = rng.random_range(0..messages.len());
            let original = messages[original_index].clone();
            let key = (original.user_id.get(), original.post_id.get());
            if !revoted.insert(key) {
                continue;
            }
            let flipped = if original.reaction == Reaction::Like {
                Reaction::Dislike
            } else {
                Reaction::Like
            };
            let newer = Vote::new(
                original.user_id,
                original.post(),
                flipped,
                original.voted_at + chrono::Duration::hours(1),
            );
            if i % 2 == 0 {
                messages.insert(original_index, newer); // out of order: the newer vote arrives first
            } else {
                let later = rng.random_range(original_index + 1..=messages.len());
                messages.insert(later, newer);
            }
        }
        while messages.len() < total {
            let original_index = rng.random_range(0..messages.len());
            let copy = messages[original_index].clone();
            let later = rng.random_range(original_index + 1..=messages.len());
            messages.insert(later, copy);
        }
        let mut newest: HashMap<(i64, i64), Vote> = HashMap::new();
        for vote in &messages {
            let key = (vote.user_id.get(), vote.post_id.get());
            if newest.get(&key).is_none_or(|v| v.voted_at < vote.voted_at) {
                newest.insert(key, vote.clone());
            }
        }
        Self {
            messages,
            newest,
            revoted,
        }
    }

    /// Distinct pairs, each voted once.
    fn from_votes(votes: Vec<Vote>) -> Self {
        let newest = votes
            .iter()
            .map(|v| ((v.user_id.get(), v.post_id.get()), v.clone()))
            .collect();
        Self {
            messages: votes,
            newest,
            revoted: Default::default(),
        }
    }

    fn matches(&self, stored: &HashMap<(i64, i64), VoteRecord>) -> Result<(), String> {
        if stored.len() != self.newest.len() {
            return Err(format!(
                "{} stored votes, expected {}",
                stored.len(),
                self.newest.len()
            ));
        }
        for (key, vote) in &self.newest {
            let record = stored.get(key).ok_or_else(|| format!("{key:?} missing"))?;
            if record.reaction != vote.reaction
                || record.voted_at_ms != vote.voted_at.timestamp_millis()
            {
                return Err(format!("{key:?} holds {record:?}, expected {vote:?}"));
            }
            // One document per pair; a replaced vote only raises the revision count.
            let max_revision = if self.revoted.contains(key) { 2 } else { 1 };
            if !(1..=max_revision).contains(&record.revision) {
                return Err(format!("{key:?} has revision {}", record.revision));
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn ten_thousand_votes_with_duplicates_and_out_of_order_revotes_are_stored_exactly() {
    let services = Services::new("ingest-10k", None).await;
    let scenario = Scenario::generate(10_000, 7);
    assert_eq!(scenario.messages.len(), 10_000);
    let worker = services.start_worker(&[]).await;
    worker.wait_ready(Duration::from_secs(30)).await;
    services.publish_all(&scenario.messages).await;
    services
        .assert_final_votes(&scenario, Duration::from_secs(120))
        .await;

    let (_, metrics) = worker.get("/metrics").await.expect("metrics answer");
    assert_eq!(
        metric_sum(&metrics, "oleg_ingest_votes_stored_total"),
        10_000.0,
        "every message accounted for"
    );
    assert!(
        metric_sum(
            &metrics,
            "oleg_ingest_votes_stored_total{outcome=\"duplicate\"}"
        ) >= 1_000.0
    );
    assert!(metrics.contains("process_resident_memory_bytes"));
    let users = services
        .store
        .collections()
        .users
        .estimated_document_count()
        .await
        .unwrap();
    let distinct_users = scenario
        .newest
        .keys()
        .map(|(u, _)| *u)
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert_eq!(users as usize, distinct_users, "each person created once");
    services.finish().await;
}

#[tokio::test]
async fn invalid_messages_are_dead_lettered_with_their_reason_and_valid_ones_stored() {
    let services = Services::new("ingest-invalid", None).await;
    let valid: Vec<Vote> = (1..=5)
        .map(|u| {
            Vote::new(
                UserId::new(u).unwrap(),
                post_ref(u),
                Reaction::Like,
                at_ms(u),
            )
        })
        .collect();
    let good = serde_json::to_value(&valid[0]).unwrap();
    let with = |key: &str, value: serde_json::Value| {
        let mut doc = good.clone();
        doc[key] = value;
        doc.to_string().into_bytes()
    };
    let mut oversized = good.clone();
    oversized["padding"] = serde_json::Value::String("x".repeat(17 * 1024));
    let invalid: Vec<(&str, Vec<u8>, DeadLetterReason)> = vec![
        (
            "vote.cast",
            b"{not json".to_vec(),
            DeadLetterReason::Malformed,
        ),
        (
            "vote.cast",
            with("reaction", "love".into()),
            DeadLetterReason::UnknownReaction,
        ),
        (
            "vote.cast",
            oversized.to_string().into_bytes(),
            DeadLetterReason::TooLarge,
        ),
        (
            "vote.cast",
            with("schema_version", 2.into()),
            DeadLetterReason::UnsupportedSchemaVersion,
        ),
        (
            "vote.cast",
            with("post_id", 999.into()),
            DeadLetterReason::UnknownPost,
        ),
        (
            "user.started",
            br#"{"schema_version":1,"user_id":"abc"}"#.to_vec(),
            DeadLetterReason::Malformed,
        ),
        // Defect: a vote dated in the year 9999 outranked every later vote on its post.
        (
            "vote.cast",
            with("voted_at", "9999-01-01T00:00:00Z".into()),
            DeadLetterReason::FromTheFuture,
        ),
    ];
    // Interleave so that one batch holds all of them.
    let exchange = services.bus.topology().events_exchange();
    for (i, (key, body, _)) in invalid.iter().enumerate() {
        services
            .bus
            .publish_bytes(&exchange, key, body, Default::default())
            .await
            .unwrap();
        services.bus.publish(&valid[i % valid.len()]).await.unwrap();
    }
    services
        .bus
        .publish(&UserStarted::new(UserId::new(77).unwrap(), at_ms(0)))
        .await
        .unwrap();
    let worker = services.start_worker(&[]).await;
    worker.wait_ready(Duration::from_secs(30)).await;

    let mut dead = Subscription::new(services.bus.clone(), Source::Shared(QueueName::DeadLetters));
    let mut reasons = Vec::new();
    for _ in 0..invalid.len() {
        let incoming = tokio::time::timeout(Duration::from_secs(30), dead.next())
            .await
            .expect("a dead letter")
            .unwrap();
        let letter: DeadLetter = decode(&incoming.body, 1 << 20).unwrap();
        let original = letter.payload.to_bytes().unwrap();
        let expected = invalid
            .iter()
            .find(|(_, body, _)| *body == original)
            .expect("the original body, untouched");
        assert_eq!(letter.reason, expected.2, "{}", letter.detail);
        assert!(!letter.detail.is_empty());
        reasons.push(letter.reason);
        incoming.ack().await.unwrap();
    }
    assert_eq!(reasons.len(), 7);
    let scenario = Scenario::from_votes(valid);
    services
        .assert_final_votes(&scenario, Duration::from_secs(30))
        .await;
    let started = services
        .store
        .collections()
        .users
        .find_one(doc! {"_id": {"$eq": 77_i64}})
        .await
        .unwrap();
    assert!(
        started.and_then(|u| u.started_at_ms).is_some(),
        "the start was stored"
    );
    let (_, metrics) = worker.get("/metrics").await.unwrap();
    assert_eq!(metric_sum(&metrics, "oleg_amqp_dead_lettered_total"), 7.0);
    services.finish().await;
}

#[tokio::test]
async fn a_worker_killed_mid_stream_and_restarted_stores_every_vote_exactly_once() {
    let services = Services::new("ingest-sigkill", None).await;
    let scenario = Scenario::generate(10_000, 11);
    let mut worker = services.spawn_worker(
        &[
            ("OLEG__INGEST__BATCH_SIZE", "200"),
            ("OLEG__AMQP__PREFETCH", "400"),
        ],
        "first.log",
    );
    worker.wait_ready(Duration::from_secs(30)).await;
    let publishing = {
        let bus = services.bus.clone();
        let messages = scenario.messages.clone();
        tokio::spawn(async move {
            for vote in &messages {
                bus.publish(vote).await.expect("confirmed");
            }
        })
    };
    while services
        .store
        .collections()
        .votes
        .estimated_document_count()
        .await
        .unwrap()
        < 2_000
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.kill();
    let restarted = services.spawn_worker(&[], "second.log");
    restarted.wait_ready(Duration::from_secs(30)).await;
    publishing.await.unwrap();
    services
        .assert_final_votes(&scenario, Duration::from_secs(120))
        .await;
    services.finish().await;
}

#[tokio::test]
async fn a_store_outage_holds_the_votes_and_readiness_until_it_returns() {
    let mut server = StandInServer::start("ingest-outage-store");
    let services = Services::new("ingest-outage", Some(server.uri())).await;
    let scenario = Scenario::generate(3_000, 13);
    let worker = services
        .start_worker(&[("OLEG__INGEST__BATCH_SIZE", "100")])
        .await;
    worker.wait_ready(Duration::from_secs(30)).await;
    let publishing = {
        let bus = services.bus.clone();
        let messages = scenario.messages.clone();
        tokio::spawn(async move {
            for vote in &messages {
                bus.publish(vote).await.expect("confirmed");
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        })
    };
    while services
        .store
        .collections()
        .votes
        .estimated_document_count()
        .await
        .unwrap()
        < 500
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop();
    wait_until(
        Duration::from_secs(20),
        async || {
            let readyz = worker.get("/readyz").await;
            matches!(readyz, Some((503, body)) if body.contains(r#""store":false"#))
        },
        || {
            format!(
                "/readyz never said the store was away; log:\n{}",
                worker.log_tail()
            )
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.resume();
    worker.wait_ready(Duration::from_secs(30)).await;
    publishing.await.unwrap();
    services
        .assert_final_votes(&scenario, Duration::from_secs(120))
        .await;
    let (_, metrics) = worker.get("/metrics").await.unwrap();
    assert!(metric_sum(&metrics, "oleg_ingest_store_failures_total") >= 1.0);
    services.finish().await;
}

#[tokio::test]
async fn two_competing_workers_store_every_vote_exactly_once() {
    let services = Services::new("ingest-two", None).await;
    let scenario = Scenario::generate(10_000, 17);
    let first = services
        .start_worker(&[("OLEG__INGEST__BATCH_SIZE", "100")])
        .await;
    let second = services
        .start_worker(&[("OLEG__INGEST__BATCH_SIZE", "100")])
        .await;
    first.wait_ready(Duration::from_secs(30)).await;
    second.wait_ready(Duration::from_secs(30)).await;
    let queue = services.bus.topology().queue(QueueName::Ingest);
    wait_for_consumers(&services.amqp, &queue, 2).await;
    services.publish_all(&scenario.messages).await;
    services
        .assert_final_votes(&scenario, Duration::from_secs(120))
        .await;
    let received = |body: &str| metric_sum(body, "oleg_ingest_received_total");
    let (a, b) = (
        received(&first.get("/metrics").await.unwrap().1),
        received(&second.get("/metrics").await.unwrap().1),
    );
    assert!(a > 0.0 && b > 0.0, "both replicas took work: {a} and {b}");
    services.finish().await;
}

#[tokio::test]
async fn sigterm_finishes_in_flight_work_and_exits_cleanly() {
    let services = Services::new("ingest-sigterm", None).await;
    let mut worker = services.spawn_worker(&[], "worker.log");
    worker.wait_ready(Duration::from_secs(30)).await;
    let votes: Vec<Vote> = (1..=50)
        .map(|u| {
            Vote::new(
                UserId::new(u).unwrap(),
                post_ref(u),
                Reaction::Like,
                at_ms(u),
            )
        })
        .collect();
    services.publish_all(&votes).await;
    let scenario = Scenario::from_votes(votes);
    services
        .assert_final_votes(&scenario, Duration::from_secs(30))
        .await;
    assert!(
        worker.terminate(),
        "exit status 0 after SIGTERM; log:\n{}",
        worker.log_tail()
    );
    // Defect: every worker logged lapin's "Connection error ... Closing" on a clean stop.
    let log = std::fs::read_to_string(&worker.log).unwrap();
    assert!(
        !log.contains("ERROR"),
        "a clean stop logged an error:\n{log}"
    );
    services.finish().await;
}

/// Defect: a document the store refuses failed the whole batch, which was retried for ever as if
/// the store were down, holding up every vote behind it.
#[tokio::test]
async fn a_vote_the_store_refuses_is_dead_lettered_after_its_attempts_and_holds_up_nothing() {
    let services = Services::new("ingest-refused", None).await;
    // A stored vote of another shape: its revision is text, so the store refuses any update of
    // it (a type mismatch), every time.
    services
        .store
        .database()
        .collection::<mongodb::bson::Document>("votes")
        .insert_one(doc! {"_id": oleg_store::vote_key(UserId::new(9).unwrap(), &post_ref(9)), "voted_at_ms": 0_i64, "revision": "one"})
        .await
        .unwrap();
    let refused = Vote::new(
        UserId::new(9).unwrap(),
        post_ref(9),
        Reaction::Like,
        at_ms(9),
    );
    let others: Vec<Vote> = (10..=30)
        .map(|u| {
            Vote::new(
                UserId::new(u).unwrap(),
                post_ref(u),
                Reaction::Like,
                at_ms(u),
            )
        })
        .collect();
    services.publish_all(&others[..10]).await;
    services.publish_all(std::slice::from_ref(&refused)).await;
    services.publish_all(&others[10..]).await;
    let worker = services
        .start_worker(&[("OLEG__AMQP__MAX_ATTEMPTS", "3")])
        .await;
    worker.wait_ready(Duration::from_secs(30)).await;

    let mut dead = Subscription::new(services.bus.clone(), Source::Shared(QueueName::DeadLetters));
    let incoming = tokio::time::timeout(Duration::from_secs(30), dead.next())
        .await
        .unwrap_or_else(|_| panic!("no dead letter; log:\n{}", worker.log_tail()))
        .unwrap();
    let letter: DeadLetter = decode(&incoming.body, 1 << 20).unwrap();
    assert_eq!(
        letter.reason,
        DeadLetterReason::StoreRefused,
        "{}",
        letter.detail
    );
    assert_eq!(letter.attempts, 3);
    let original: Vote = decode(&letter.payload.to_bytes().unwrap(), 1 << 16).unwrap();
    assert_eq!(original, refused);
    incoming.ack().await.unwrap();
    // Everything else was stored, and the worker stays ready and keeps going.
    let mut expected = others.clone();
    let later = Vote::new(
        UserId::new(31).unwrap(),
        post_ref(31),
        Reaction::Dislike,
        at_ms(31),
    );
    services.publish_all(std::slice::from_ref(&later)).await;
    expected.push(later);
    let votes = &services.store.collections().votes;
    wait_until(
        Duration::from_secs(20),
        async || {
            let stored = votes.count_documents(doc! {"user_id": {"$gte": 10}});
            stored.await.unwrap() == expected.len() as u64
        },
        || "the votes after the refused one were held up behind it".to_owned(),
    )
    .await;
    assert_eq!(worker.get("/readyz").await.map(|r| r.0), Some(200));
    let (_, metrics) = worker.get("/metrics").await.unwrap();
    assert_eq!(
        metric_sum(&metrics, "oleg_ingest_store_refusals_total"),
        3.0
    );
    assert_eq!(
        metric_sum(&metrics, "oleg_ingest_store_failures_total"),
        0.0,
        "taken for an outage"
    );
    services.finish().await;
}

/// Defect: with the dead-letter queue deleted, dead-lettering requeued at once, for ever.
#[tokio::test]
async fn a_deleted_dead_letter_queue_costs_neither_a_hot_loop_nor_the_message() {
    let services = Services::new("ingest-no-dlq", None).await;
    let worker = services.start_worker(&[]).await;
    worker.wait_ready(Duration::from_secs(30)).await;
    delete_queue(
        &services.amqp,
        &services.bus.topology().queue(QueueName::DeadLetters),
    )
    .await;
    let exchange = services.bus.topology().events_exchange();
    services
        .bus
        .publish_bytes(&exchange, "vote.cast", b"{not json", Default::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, metrics) = worker.get("/metrics").await.unwrap();
    let consumed = metric_sum(&metrics, "oleg_amqp_consumed_total");
    assert!(
        consumed <= 5.0,
        "delivered {consumed} times in 3 s: a hot loop"
    );
    assert!(metric_sum(&metrics, "oleg_amqp_dead_letter_queue_missing_total") >= 1.0);
    // The queue is declared again and the letter lands in it.
    let mut dead = Subscription::new(services.bus.clone(), Source::Shared(QueueName::DeadLetters));
    let incoming = tokio::time::timeout(Duration::from_secs(20), dead.next())
        .await
        .expect("the dead letter, once the queue is back")
        .unwrap();
    let letter: DeadLetter = decode(&incoming.body, 1 << 20).unwrap();
    assert_eq!(letter.reason, DeadLetterReason::Malformed);
    incoming.ack().await.unwrap();
    services.finish().await;
}

#[test]
fn bad_configuration_fails_fast_naming_the_key() {
    let output = std::process::Command::new(BINARY)
        .env("OLEG_CONFIG_DIR", repo_root().join("config"))
        .env("OLEG__INGEST__BATCH_SIZE", "0")
        .env("OLEG__AMQP__URI", "amqp://user:sekrit@[")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ingest.batch_size (OLEG__INGEST__BATCH_SIZE)"),
        "{stderr}"
    );
    assert!(stderr.contains("amqp.uri"), "{stderr}");
    assert!(
        !stderr.contains("sekrit"),
        "the password must not be printed: {stderr}"
    );
}
