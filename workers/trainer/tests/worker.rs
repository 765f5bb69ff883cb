//! `oleg-trainer` as a process against the real broker and Mongo-wire server: it trains when
//! votes are there, publishes a version (weights and vocabularies in chunks, a model document,
//! a model-published notice), trains incrementally on announced votes, and two replicas never
//! train at once.

use chrono::{TimeZone, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use oleg_bus::{Source, Subscription};
use oleg_messages::*;
use oleg_store::{as_i64, StoredFile};
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
    async fn new(test: &str) -> Self {
        Self(TestServices::start(test, mongo_settings(test)).await)
    }

    fn spawn_trainer(&self, log: &str) -> WorkerProcess {
        self.spawn(
            BINARY,
            "OLEG__TRAINER__METRICS_ADDR",
            log,
            &[
                ("OLEG__TRAINER__MIN_NEW_VOTES", "100"),
                ("OLEG__TRAINER__MIN_INTERVAL_S", "0"),
                ("OLEG__TRAINER__FULL_EVERY", "5"),
                ("OLEG__TRAINER__HOLDOUT_SHARE", "0.2"),
                ("OLEG__TRAINER__LEASE_TTL_S", "5"),
                ("OLEG__TRAINER__MODEL__EPOCHS", "4"),
                ("OLEG__TRAINER__INCREMENTAL_EPOCHS", "2"),
                ("OMP_NUM_THREADS", "1"),
            ],
        )
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
    let mut published = Subscription::new(
        services.bus.clone(),
        Source::PerReplica(vec!["model.published"]),
    );
    // Bind the replica queue before anything can be published.
    let probe = tokio::time::timeout(Duration::from_millis(300), published.next()).await;
    assert!(probe.is_err());
    services.store_votes(1, 6_000, 1_000).await;

    let trainer = services.spawn_trainer("trainer.log");
    let first = next_published(&mut published, Duration::from_secs(120), &trainer).await;
    assert_eq!(first.version, 1);
    assert_eq!(first.variant, "channel_mlp");
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

    let document = services.store.model(1).await.unwrap().unwrap();
    assert_eq!(document.get_str("status").unwrap(), "published");
    assert_eq!(
        document
            .get_document("figures")
            .unwrap()
            .get_str("kind")
            .unwrap(),
        "full"
    );
    let files = document.get_document("files").unwrap();
    let weights_record =
        StoredFile::from_document(files.get_document("weights.safetensors").unwrap()).unwrap();
    let weights = services
        .store
        .read_model_file(1, "weights.safetensors", &weights_record)
        .await
        .unwrap();
    let (tensors, metadata) = oleg_model::read_tensors(&weights).unwrap();
    assert_eq!(metadata["variant"], "channel_mlp");
    let users = tensors
        .iter()
        .find(|(n, _)| n == "user_embedding")
        .unwrap()
        .1
        .size();
    assert_eq!(users, vec![150, 100]);
    let vocab_record =
        StoredFile::from_document(files.get_document("vocab.json").unwrap()).unwrap();
    let vocab: serde_json::Value = serde_json::from_slice(
        &services
            .store
            .read_model_file(1, "vocab.json", &vocab_record)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(vocab["users"].as_array().unwrap().len(), 150);
    assert_eq!(vocab["channels"].as_array().unwrap().len(), 4);

    // New people vote; ingest would announce it.
    services.store_votes(1_001, 1_500, 2_000).await;
    let notice = VotesIngested {
        schema_version: SCHEMA_VERSION,
        new_votes: 1_500,
        changed_votes: 0,
        duplicate_votes: 0,
        ingested_through: Utc.timestamp_millis_opt(2_000).unwrap(),
    };
    services.bus.publish(&notice).await.unwrap();
    let second = next_published(&mut published, Duration::from_secs(120), &trainer).await;
    assert_eq!(second.version, 2);
    let document = services.store.model(2).await.unwrap().unwrap();
    let figures = document.get_document("figures").unwrap();
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
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = trainer.get("/metrics").await.unwrap();
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|name| !metrics.contains(name))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing:?} missing from /metrics"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while services.models().await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no model; logs:\n{}\n{}",
            first.log_tail(),
            second.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
