//! `oleg-trainer` as a process against the real broker and Mongo-wire server: it trains when
//! votes are there, publishes a version (weights and vocabularies in chunks, a model document,
//! a model-published notice), trains incrementally on announced votes, and two replicas never
//! train at once.

use chrono::{TimeZone, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use oleg_bus::{Source, Subscription};
use oleg_messages::*;
use oleg_store::as_i64;
use oleg_testkit::*;
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_oleg-trainer");
const CHANNELS: [&str; 4] = ["channel_a", "channel_b", "channel_c", "channel_d"];

struct Services(TestServices);

impl std::ops::Deref for Services {
    type Target = TestServices;
    fn deref(&self) -> &TestServices {
        &self.0
    }
}

impl Services {
    /// A queue of this test's own for `model.published` notices, bound before anything can be
    /// published.
    async fn published_models(&self) -> Subscription {
        let mut published = Subscription::new(
            self.bus.clone(),
            Source::PerReplica(vec!["model.published"]),
        );
        let probe = tokio::time::timeout(Duration::from_millis(300), published.next()).await;
        assert!(probe.is_err(), "nothing was published yet");
        published
    }

    /// Announces `new_votes` stored through `through_ms`, as ingest does.
    async fn announce(&self, new_votes: u64, through_ms: i64) {
        let notice = VotesIngested {
            schema_version: SCHEMA_VERSION,
            new_votes,
            changed_votes: 0,
            duplicate_votes: 0,
            ingested_through: Utc.timestamp_millis_opt(through_ms).unwrap(),
        };
        self.bus.publish(&notice).await.unwrap();
    }

    /// The vocabularies file of a stored model, as JSON.
    async fn model_vocab(&self, version: ModelVersion) -> serde_json::Value {
        let record = self.store.model(version).await.unwrap().unwrap();
        let files = record.files.unwrap();
        let bytes = self
            .store
            .read_model_file(version, VOCAB_FILE, &files.vocab)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    async fn new(test: &str) -> Self {
        Self(TestServices::start(test, mongo_settings(test)).await)
    }

    fn spawn_trainer(&self, log: &str) -> WorkerProcess {
        self.spawn_trainer_with(log, &[])
    }

    fn spawn_trainer_with(&self, log: &str, extra: &[(&str, &str)]) -> WorkerProcess {
        let mut settings = vec![
            ("OLEG__TRAINER__MIN_NEW_VOTES", "100"),
            ("OLEG__TRAINER__MIN_INTERVAL_S", "0"),
            ("OLEG__TRAINER__FULL_EVERY", "5"),
            ("OLEG__TRAINER__HOLDOUT_SHARE", "0.2"),
            ("OLEG__TRAINER__LEASE_TTL_S", "5"),
            ("OLEG__TRAINER__MODEL__EPOCHS", "4"),
            ("OLEG__TRAINER__INCREMENTAL_EPOCHS", "2"),
            // The tests' votes are stamped in 1970 unless a test says otherwise.
            ("OLEG__TRAINER__ACTIVE_DAYS", "0"),
            ("OMP_NUM_THREADS", "1"),
        ];
        for (key, value) in extra {
            settings.retain(|(k, _)| k != key);
            settings.push((key, value));
        }
        self.spawn(BINARY, "OLEG__TRAINER__METRICS_ADDR", log, &settings)
    }

    /// Waits until a model document satisfies `done`; returns it.
    async fn wait_for_model(
        &self,
        what: &str,
        filter: Document,
        trainers: &[&WorkerProcess],
    ) -> Document {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(found) = self
                .store
                .collections()
                .models
                .find_one(filter.clone())
                .await
                .unwrap()
            {
                return found;
            }
            let logs: Vec<String> = trainers.iter().map(|t| t.log_tail()).collect();
            assert!(
                std::time::Instant::now() < deadline,
                "{what} never came; logs:\n{}",
                logs.join("\n---\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stores `count` votes of people `first_user..` with a planted taste: a person likes the
    /// channels whose index has the person's parity.
    async fn store_votes(&self, first_user: i64, count: i64, ingested_at_ms: i64) {
        let votes: Vec<Vote> = (0..count)
            .map(|i| {
                let user = first_user + i % 150;
                let channel = (i / 7) % 4;
                let post = PostRef {
                    channel: ChannelName::parse(CHANNELS[channel as usize]).unwrap(),
                    post_id: PostId::new(1 + (i * 13) % 40).unwrap(),
                };
                let reaction = if (user + channel) % 2 == 0 {
                    Reaction::Like
                } else {
                    Reaction::Dislike
                };
                Vote::new(
                    UserId::new(user).unwrap(),
                    post,
                    reaction,
                    Utc.timestamp_millis_opt(1_764_000_000_000 + i).unwrap(),
                )
            })
            .collect();
        for chunk in votes.chunks(500) {
            self.store
                .upsert_votes(chunk, ingested_at_ms)
                .await
                .unwrap();
        }
    }

    async fn models(&self) -> Vec<Document> {
        self.store
            .collections()
            .models
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    }

    async fn finish(self) {
        self.0.finish().await;
    }
}

async fn next_published(
    subscription: &mut Subscription,
    within: Duration,
    trainer: &WorkerProcess,
) -> ModelPublished {
    let Ok(incoming) = tokio::time::timeout(within, subscription.next()).await else {
        let metrics = trainer
            .get("/metrics")
            .await
            .map(|(_, m)| m)
            .unwrap_or_default();
        let progress: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("oleg_trainer_") || l.starts_with("oleg_amqp_"))
            .collect();
        panic!(
            "no model published in {within:?}; trainer metrics:\n{}\ntrainer log:\n{}",
            progress.join("\n"),
            trainer.log_tail()
        );
    };
    let incoming = incoming.unwrap();
    let notice: ModelPublished = decode(&incoming.body, 1 << 20).unwrap();
    incoming.ack().await.unwrap();
    notice
}

#[tokio::test]
async fn trains_publishes_and_then_trains_incrementally_on_announced_votes() {
    let services = Services::new("trainer-cycle").await;
    let mut published = services.published_models().await;
    services.store_votes(1, 6_000, 1_000).await;

    let trainer = services.spawn_trainer("trainer.log");
    let first = next_published(&mut published, Duration::from_secs(120), &trainer).await;
    assert_eq!(first.version.get(), 1);
    assert_eq!(first.variant, "content_mlp");
    assert!(
        first.holdout.auc > 0.75,
        "learned the planted taste: {:?}",
        first.holdout
    );
    let stored = services
        .store
        .collections()
        .votes
        .estimated_document_count()
        .await
        .unwrap();
    assert_eq!(
        first.holdout.votes,
        (stored as f64 * 0.2).round() as u64,
        "the most recent fifth is held out"
    );

    let record = services.store.model(first.version).await.unwrap().unwrap();
    assert_eq!(record.status, ModelStatus::Published);
    assert_eq!(
        record.figures.as_ref().unwrap().get_str("kind").unwrap(),
        "full"
    );
    let files = record.files.unwrap();
    let weights = services
        .store
        .read_model_file(first.version, WEIGHTS_FILE, &files.weights)
        .await
        .unwrap();
    let (tensors, metadata) = oleg_model::read_tensors(&weights).unwrap();
    assert_eq!(metadata["variant"], "content_mlp");
    assert_eq!(metadata["features"], oleg_features::FEATURES_VERSION);
    let rows_of = |name: &str| tensors.iter().find(|(n, _)| n == name).unwrap().1.size()[0];
    assert_eq!(
        rows_of("post_content"),
        rows_of("post_embedding"),
        "every post's content vector is written beside the weights"
    );
    let users = tensors
        .iter()
        .find(|(n, _)| n == "user_embedding")
        .unwrap()
        .1
        .size();
    assert_eq!(users, vec![150, 100]);
    let vocab = services.model_vocab(first.version).await;
    assert_eq!(vocab["users"].as_array().unwrap().len(), 150);
    assert_eq!(vocab["channels"].as_array().unwrap().len(), 4);

    // New people vote; ingest would announce it.
    services.store_votes(1_001, 1_500, 2_000).await;
    services.announce(1_500, 2_000).await;
    let second = next_published(&mut published, Duration::from_secs(120), &trainer).await;
    assert_eq!(second.version.get(), 2);
    let record = services.store.model(second.version).await.unwrap().unwrap();
    let figures = record.figures.unwrap();
    assert_eq!(figures.get_str("kind").unwrap(), "incremental");
    assert!(
        figures.get_document("live_holdout").is_ok(),
        "compared with the live model"
    );
    assert_eq!(as_i64(figures.get("trained_through_ms")), Some(2_000));

    // The notice goes out before the cycle's duration is recorded: wait for the figures.
    let wanted = [
        "oleg_trainer_holdout_auc",
        "oleg_trainer_model_version 2",
        "oleg_trainer_cycle_seconds_count 2",
        "process_resident_memory_bytes",
    ];
    wait_until(
        Duration::from_secs(10),
        async || {
            let (_, metrics) = trainer.get("/metrics").await.unwrap();
            wanted.iter().all(|name| metrics.contains(name))
        },
        || format!("one of {wanted:?} missing from /metrics"),
    )
    .await;
    services.finish().await;
}

#[tokio::test]
async fn two_replicas_never_train_at_once() {
    let services = Services::new("trainer-lease").await;
    services.store_votes(1, 6_000, 1_000).await;
    let first = services.spawn_trainer("first.log");
    let second = services.spawn_trainer("second.log");
    first.wait_ready(Duration::from_secs(60)).await;
    second.wait_ready(Duration::from_secs(60)).await;
    wait_until(
        Duration::from_secs(120),
        async || !services.models().await.is_empty(),
        || {
            format!(
                "no model; logs:\n{}\n{}",
                first.log_tail(),
                second.log_tail()
            )
        },
    )
    .await;
    // Give the other replica time to try: it must find the lease taken or nothing new.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let models = services.models().await;
    assert_eq!(
        models.len(),
        1,
        "one training for one set of votes: {models:?}"
    );
    let published = |body: &str| {
        body.lines()
            .filter(|l| {
                l.starts_with("oleg_trainer_cycles_total") && l.contains("outcome=\"published\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let total = published(&first.get("/metrics").await.unwrap().1)
        + published(&second.get("/metrics").await.unwrap().1);
    assert_eq!(total, 1.0);
    services.finish().await;
}

/// Defect: versions were "max + 1" then an overwriting upsert, expiry was judged by each
/// trainer's own clock, and a lost lease was checked only after training. A trainer frozen past
/// its lease in the middle of a cycle, then thawed, must publish nothing; the one that took the
/// lease over publishes, and every version is written by the one that allocated it.
#[tokio::test]
async fn a_trainer_frozen_past_its_lease_publishes_nothing_when_it_thaws() {
    let services = Services::new("trainer-fencing").await;
    services.store_votes(1, 6_000, 1_000).await;
    let slow = [
        ("OLEG__TRAINER__LEASE_TTL_S", "2"),
        ("OLEG__TRAINER__MODEL__EPOCHS", "12"),
    ];
    let frozen = services.spawn_trainer_with("frozen.log", &slow);
    let started = services
        .wait_for_model(
            "a cycle of the first trainer",
            doc! {"status": "training"},
            &[&frozen],
        )
        .await;
    frozen.freeze();
    let frozen_holder = started.get_str("holder").unwrap().to_owned();

    let taker = services.spawn_trainer_with("taker.log", &slow);
    let live = services
        .wait_for_model(
            "the second trainer's model",
            doc! {"status": "published"},
            &[&frozen, &taker],
        )
        .await;
    assert_ne!(live.get_str("holder").unwrap(), frozen_holder);
    frozen.thaw();
    services
        .wait_for_model(
            "the frozen trainer giving its version up",
            doc! {"_id": started.get("_id").unwrap(), "status": "abandoned"},
            &[&frozen, &taker],
        )
        .await;
    // Give it time to do anything else it might.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let models = services.models().await;
    let published: Vec<&Document> = models
        .iter()
        .filter(|m| m.get_str("status") == Ok("published"))
        .collect();
    assert_eq!(published.len(), 1, "{models:?}");
    assert_ne!(published[0].get_str("holder").unwrap(), frozen_holder);
    assert_eq!(
        services
            .store
            .live_version()
            .await
            .unwrap()
            .map(|v| v.as_i64()),
        as_i64(published[0].get("_id"))
    );
    let frozen_log = std::fs::read_to_string(&frozen.log).unwrap();
    assert!(
        frozen_log.contains("taken over") || frozen_log.contains("lost the training lease"),
        "{frozen_log}"
    );
    services.finish().await;
}

/// The model follows activity: a full retraining leaves out people whose votes are all older
/// than `active_days`, and one who votes again comes back as a new row.
#[tokio::test]
async fn people_inactive_beyond_the_window_leave_the_model_and_return_when_they_vote() {
    let services = Services::new("trainer-active").await;
    let mut published = services.published_models().await;
    let day_ms = 86_400_000;
    let now = Utc::now().timestamp_millis();
    // People 1..=100 last voted 400 days ago, people 1001..=1150 yesterday.
    store_taste_votes(&services, 60, 1, 1_700_000_000_000, now - 400 * day_ms).await;
    services.store_votes(1_001, 6_000, now - day_ms).await;
    let trainer =
        services.spawn_trainer_with("trainer.log", &[("OLEG__TRAINER__ACTIVE_DAYS", "365")]);
    let users_of = |vocab: serde_json::Value| {
        let mut users: Vec<i64> = vocab["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_i64().unwrap())
            .collect();
        users.sort_unstable();
        users
    };
    let first = next_published(&mut published, Duration::from_secs(120), &trainer).await;
    let users = users_of(services.model_vocab(first.version).await);
    assert_eq!(
        users,
        (1_001..=1_150).collect::<Vec<_>>(),
        "only the active people"
    );
    // People 1..=100 vote again, on new posts.
    let back = store_taste_votes(&services, 3, 1_000, now - 60_000, now).await;
    services.announce(back as u64, now).await;
    let second = next_published(&mut published, Duration::from_secs(120), &trainer).await;
    let users = users_of(services.model_vocab(second.version).await);
    assert_eq!(users.len(), 250, "back as new rows");
    assert!(users.contains(&1) && users.contains(&100) && users.contains(&1_150));
    services.finish().await;
}

/// Defect: ingest stamps a vote before writing it, so a batch that commits late can carry a time
/// before the live model's mark, and incremental cycles ("ingested after the mark") skipped it
/// until the next full cycle.
#[tokio::test]
async fn a_batch_committed_late_is_trained_in_the_next_incremental_cycle() {
    let services = Services::new("trainer-late").await;
    let mut published = services.published_models().await;
    services.store_votes(1, 6_000, 10_000).await;
    let trainer = services.spawn_trainer("trainer.log");
    let first = next_published(&mut published, Duration::from_secs(120), &trainer).await;
    // A batch stamped 5 s before the first model's newest vote lands only now.
    services.store_votes(2_001, 300, 5_000).await;
    services.announce(300, 5_000).await;
    let second = next_published(&mut published, Duration::from_secs(120), &trainer).await;
    assert_eq!(second.version.get(), first.version.get() + 1);
    let record = services.store.model(second.version).await.unwrap().unwrap();
    let figures = record.figures.unwrap();
    assert_eq!(figures.get_str("kind").unwrap(), "incremental");
    assert_eq!(as_i64(figures.get("new_votes")), Some(300), "{figures}");
    services.finish().await;
}

/// Votes of people 1..=100, `per_person` each, on posts `first_post..` of every channel: a
/// person likes the channels whose index has their parity. Voted at `voted_at_ms..`, stored
/// as ingested at `ingested_at_ms`.
async fn store_taste_votes(
    services: &Services,
    per_person: i64,
    first_post: i64,
    voted_at_ms: i64,
    ingested_at_ms: i64,
) -> usize {
    let mut votes = Vec::new();
    for user in 1..=100i64 {
        for k in 0..per_person {
            let channel = (user + k) % 4;
            let post_id = first_post + (user * 7 + k) % 150 + 150 * (k / 150);
            let liked = (user + channel) % 2 == 0;
            votes.push(Vote::new(
                UserId::new(user).unwrap(),
                PostRef {
                    channel: ChannelName::parse(CHANNELS[channel as usize]).unwrap(),
                    post_id: PostId::new(post_id).unwrap(),
                },
                if liked {
                    Reaction::Like
                } else {
                    Reaction::Dislike
                },
                Utc.timestamp_millis_opt(voted_at_ms + user * per_person + k)
                    .unwrap(),
            ));
        }
    }
    for chunk in votes.chunks(500) {
        services
            .store
            .upsert_votes(chunk, ingested_at_ms)
            .await
            .unwrap();
    }
    votes.len()
}

/// Defect (issue 16): a full cycle held out the newest votes of all, most of which the live
/// model had trained on, so the live model's holdout figures were inflated and full
/// retrainings of equal quality were rejected. Both are now measured on votes neither
/// trained on.
#[tokio::test]
async fn a_full_retraining_as_good_as_the_live_model_is_published() {
    let services = Services::new("trainer-fair-gate").await;
    let stored = store_taste_votes(&services, 60, 1, 1_764_000_000_000, 1_000).await;
    let trainer = services.spawn_trainer_with(
        "trainer.log",
        &[
            ("OLEG__TRAINER__FULL_EVERY", "1"),
            ("OLEG__TRAINER__MAX_AUC_DROP", "0.05"),
        ],
    );
    let first = services
        .wait_for_model(
            "model 1",
            doc! {"version": 1, "status": "published"},
            &[&trainer],
        )
        .await;
    assert_eq!(
        as_i64(
            first
                .get_document("figures")
                .unwrap()
                .get_document("holdout")
                .unwrap()
                .get("votes")
        ),
        Some((stored as f64 * 0.2).round() as i64)
    );
    // The same people vote on posts they have not seen, later.
    let new = store_taste_votes(&services, 8, 1_000, 1_765_000_000_000, 2_000).await;
    services.announce(new as u64, 2_000).await;
    let second = services
        .wait_for_model(
            "model 2's verdict",
            doc! {"version": 2, "status": {"$in": ["published", "rejected"]}},
            &[&trainer],
        )
        .await;
    let figures = second.get_document("figures").unwrap();
    assert_eq!(figures.get_str("kind").unwrap(), "full");
    let holdout = |name: &str| as_i64(figures.get_document(name).unwrap().get("votes"));
    assert_eq!(
        (holdout("holdout"), holdout("live_holdout")),
        (
            Some((new as f64 * 0.2).round() as i64),
            Some((new as f64 * 0.2).round() as i64)
        ),
        "both measured on a fifth of the votes the live model never saw: {figures}"
    );
    assert_eq!(second.get_str("status").unwrap(), "published", "{figures}");
    services.finish().await;
}

/// Defect: a SIGTERM during a cycle waited for the cycle to end (minutes at scale).
#[tokio::test]
async fn sigterm_stops_a_cycle_between_batches_and_releases_the_lease() {
    let services = Services::new("trainer-sigterm").await;
    services.store_votes(1, 6_000, 1_000).await;
    let mut trainer =
        services.spawn_trainer_with("trainer.log", &[("OLEG__TRAINER__MODEL__EPOCHS", "5000")]);
    services
        .wait_for_model("a cycle", doc! {"status": "training"}, &[&trainer])
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = std::time::Instant::now();
    let exit = trainer.terminate_within(Duration::from_secs(10)).await;
    assert_eq!(
        exit,
        Some(true),
        "did not stop within 10 s:\n{}",
        trainer.log_tail()
    );
    assert!(stopped.elapsed() < Duration::from_secs(10));
    let lease = services
        .store
        .database()
        .collection::<Document>("leases")
        .find_one(doc! {"_id": oleg_store::TRAINING_LEASE})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        as_i64(lease.get("expires_at_ms")),
        Some(0),
        "lease not released: {lease}"
    );
    let abandoned = services.models().await;
    assert!(
        abandoned
            .iter()
            .all(|m| m.get_str("status") != Ok("published")),
        "{abandoned:?}"
    );
    services.finish().await;
}
