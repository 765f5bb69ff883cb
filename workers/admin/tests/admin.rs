//! oleg-admin's commands against the real broker and store.

use clap::Parser;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use oleg_admin::{Admin, AdminError, Cli};
use oleg_bus::{QueueName, Source, Subscription};
use oleg_messages::{
    encode, ChannelName, DeadLetter, DeadLetterReason, MessageKind, ModelStatus, ModelVersion,
    PostId, PostRef, Reaction, UserId, Vote,
};
use oleg_settings::Sources;
use oleg_store::UserSighting;
use oleg_testkit::*;

async fn connect(services: &TestServices) -> Admin {
    let mut sources = Sources::repository();
    sources.vars = worker_env(&services.amqp, &services.mongo)
        .into_iter()
        .collect();
    Admin::connect(sources).await.expect("admin connects")
}

/// Runs `oleg-admin <args>` answering prompts with `answer`; the outcome and what it printed.
async fn run(admin: &Admin, args: &[&str], answer: &str) -> (Result<(), AdminError>, String) {
    let cli = Cli::try_parse_from(std::iter::once("oleg-admin").chain(args.iter().copied()))
        .expect("valid arguments");
    let mut out = Vec::new();
    let outcome = admin
        .run(&cli.command, &mut out, &mut answer.as_bytes())
        .await;
    (outcome, String::from_utf8(out).unwrap())
}

fn post(channel: &str, post_id: i64) -> PostRef {
    PostRef {
        channel: ChannelName::parse(channel).unwrap(),
        post_id: PostId::new(post_id).unwrap(),
    }
}

fn vote(user: i64, post_id: i64, reaction: Reaction) -> Vote {
    Vote::new(
        UserId::new(user).unwrap(),
        post("channel_one", post_id),
        reaction,
        chrono::Utc::now(),
    )
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_where_they_came_from_and_purged_when_confirmed() {
    let services =
        TestServices::start("admin_dead_letters", mongo_settings("admin_dead_letters")).await;
    let admin = connect(&services).await;
    let vote_key = MessageKind::Vote.routing_key().unwrap();
    let ingest = services.bus.topology().queue(QueueName::Ingest);
    let original = encode(&vote(7, 12, Reaction::Like));
    let refused = DeadLetter::new(
        DeadLetterReason::StoreRefused,
        "the store refused it",
        &ingest,
        vote_key,
        5,
        &original,
    );
    let malformed = DeadLetter::new(
        DeadLetterReason::Malformed,
        "not JSON",
        &ingest,
        vote_key,
        1,
        b"{oops",
    );
    let worn_out = DeadLetter::new(
        DeadLetterReason::RetriesExhausted,
        "store down",
        &ingest,
        vote_key,
        5,
        &original,
    )
    .replayed(3);
    for letter in [&refused, &malformed, &worn_out] {
        services.bus.publish_dead_letter(letter).await.unwrap();
    }
    let dead = services.bus.topology().queue(QueueName::DeadLetters);

    let (done, listed) = run(&admin, &["dead-letters", "list"], "").await;
    done.unwrap();
    assert!(listed.contains("3 of 3 dead letters"), "{listed}");
    for reason in ["store_refused", "malformed", "retries_exhausted"] {
        assert!(listed.contains(reason), "{listed}");
    }
    let (_, malformed_only) = run(
        &admin,
        &[
            "dead-letters",
            "list",
            "--reason",
            "malformed",
            "--queue",
            "ingest",
        ],
        "",
    )
    .await;
    assert!(malformed_only.contains("1 of 3"), "{malformed_only}");
    let (_, recent) = run(&admin, &["dead-letters", "list", "--since", "1h"], "").await;
    assert!(recent.contains("3 of 3"), "{recent}");
    // Listing takes nothing away.
    assert_eq!(queue_depth(&services.amqp, &dead).await, 3);

    let (done, dry) = run(
        &admin,
        &[
            "dead-letters",
            "replay",
            "--reason",
            "store_refused",
            "--dry-run",
        ],
        "",
    )
    .await;
    done.unwrap();
    assert!(dry.contains("would replay"), "{dry}");
    assert_eq!(queue_depth(&services.amqp, &ingest).await, 0);

    // The refused vote goes back to the ingest queue as it was first sent, marked as replayed.
    let (done, replayed) = run(
        &admin,
        &["dead-letters", "replay", "--reason", "store_refused"],
        "",
    )
    .await;
    done.unwrap();
    assert!(replayed.contains("1 replayed, 0 left"), "{replayed}");
    let mut ingest_queue =
        Subscription::new(services.bus.clone(), Source::Shared(QueueName::Ingest));
    let again = tokio::time::timeout(std::time::Duration::from_secs(10), ingest_queue.next())
        .await
        .expect("the replayed vote arrives")
        .unwrap();
    assert_eq!(again.body, original);
    assert_eq!(again.replays(), 1);
    again.ack().await.unwrap();

    // A letter replayed as often as allowed is left, and the command says it did not do it all.
    let (done, capped) = run(
        &admin,
        &["dead-letters", "replay", "--reason", "retries_exhausted"],
        "",
    )
    .await;
    assert_eq!(done.unwrap_err().exit_code(), 4, "{capped}");
    assert!(capped.contains("replayed 3 times already"), "{capped}");
    assert_eq!(queue_depth(&services.amqp, &dead).await, 2);

    // One letter in full, by its id.
    let id = listed
        .lines()
        .find(|l| l.contains("malformed"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let (done, shown) = run(&admin, &["dead-letters", "show", &id], "").await;
    done.unwrap();
    assert!(
        shown.contains("{oops") && shown.contains("not JSON"),
        "{shown}"
    );
    let (missing, _) = run(&admin, &["dead-letters", "show", "no-such-id"], "").await;
    assert_eq!(missing.unwrap_err().exit_code(), 3);

    // A purge asks first; anything but yes removes nothing.
    let (declined, asked) = run(
        &admin,
        &["dead-letters", "purge", "--reason", "malformed"],
        "no\n",
    )
    .await;
    assert_eq!(declined.unwrap_err().exit_code(), 4);
    assert!(asked.contains("Type yes"), "{asked}");
    assert_eq!(queue_depth(&services.amqp, &dead).await, 2);
    let (done, purged) = run(
        &admin,
        &["dead-letters", "purge", "--reason", "malformed"],
        "yes\n",
    )
    .await;
    done.unwrap();
    assert!(purged.contains("1 dead letters removed"), "{purged}");
    let (done, _) = run(&admin, &["dead-letters", "purge", "--yes"], "").await;
    done.unwrap();
    assert_eq!(queue_depth(&services.amqp, &dead).await, 0);

    admin.close().await;
    services.finish().await;
}

#[tokio::test]
async fn a_message_the_broker_gave_up_on_is_replayed_to_its_exchange_and_key() {
    let services = TestServices::start("admin_poison", mongo_settings("admin_poison")).await;
    let admin = connect(&services).await;
    let vote_key = MessageKind::Vote.routing_key().unwrap();
    let body = encode(&vote(8, 3, Reaction::Dislike));
    // What the broker's own dead-lettering writes after the delivery limit: the original
    // message, with an x-death entry naming its queue, exchange and routing keys.
    use lapin::types::{AMQPValue, FieldArray, FieldTable};
    let mut death = FieldTable::default();
    let ingest = services.bus.topology().queue(QueueName::Ingest);
    death.insert("queue".into(), AMQPValue::LongString(ingest.clone().into()));
    death.insert(
        "reason".into(),
        AMQPValue::LongString("delivery_limit".into()),
    );
    death.insert(
        "exchange".into(),
        AMQPValue::LongString(services.bus.topology().events_exchange().into()),
    );
    death.insert(
        "routing-keys".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
            vote_key.into(),
        )])),
    );
    death.insert(
        "time".into(),
        AMQPValue::Timestamp(chrono::Utc::now().timestamp() as u64),
    );
    let mut headers = FieldTable::default();
    headers.insert(
        "x-death".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
    );
    services
        .bus
        .publish_bytes(
            &services.bus.topology().dead_exchange(),
            "poison.ingest",
            &body,
            lapin::BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap();

    let (done, listed) = run(&admin, &["dead-letters", "list", "--reason", "poison"], "").await;
    done.unwrap();
    assert!(
        listed.contains("1 of 1") && listed.contains(&ingest) && listed.contains("200"),
        "{listed}"
    );
    let (done, _) = run(&admin, &["dead-letters", "replay", "--queue", "ingest"], "").await;
    done.unwrap();
    assert_eq!(queue_depth(&services.amqp, &ingest).await, 1);

    admin.close().await;
    services.finish().await;
}

#[tokio::test]
async fn channels_are_followed_paused_resumed_retried_and_unfollowed_as_the_scraper_reads_them() {
    let services = TestServices::start("admin_channels", mongo_settings("admin_channels")).await;
    let admin = connect(&services).await;
    let store = &services.store;
    let due_names = || async {
        store
            .due_channels(chrono::Utc::now().timestamp_millis() + 1, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    };

    run(&admin, &["channels", "follow", "@channel_one"], "")
        .await
        .0
        .unwrap();
    run(&admin, &["channels", "follow", "channel_two"], "")
        .await
        .0
        .unwrap();
    assert_eq!(due_names().await, ["channel_one", "channel_two"]);

    run(&admin, &["channels", "pause", "channel_one"], "")
        .await
        .0
        .unwrap();
    assert_eq!(due_names().await, ["channel_two"]);
    // A poll that was in flight when the channel was paused does not undo the pause.
    let poll = oleg_store::ChannelPoll {
        status: oleg_store::ChannelStatus::Active,
        newest_post_id: Some(5),
        title: None,
        alias: None,
        subscribers: None,
        failures: 0,
        next_poll_ms: 0,
        polled_at_ms: chrono::Utc::now().timestamp_millis(),
    };
    assert!(!store.record_poll("channel_one", &poll).await.unwrap());
    assert_eq!(due_names().await, ["channel_two"]);
    let (_, listed) = run(&admin, &["channels", "list"], "").await;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("channel_one") && l.contains("paused")),
        "{listed}"
    );

    run(&admin, &["channels", "resume", "channel_one"], "")
        .await
        .0
        .unwrap();
    assert_eq!(due_names().await, ["channel_one", "channel_two"]);
    let (done, said) = run(&admin, &["channels", "unfollow", "channel_two"], "").await;
    done.unwrap();
    assert_eq!(
        said.trim(),
        "no longer following channel_two; its posts stay stored but are no longer recommended"
    );
    assert_eq!(due_names().await, ["channel_one"]);

    // Channels the scraper found missing (retried in a day) are polled at once on an
    // operator's word: one, or every missing one.
    run(&admin, &["channels", "follow", "channel_three"], "")
        .await
        .0
        .unwrap();
    let in_a_day = chrono::Utc::now().timestamp_millis() + 86_400_000;
    for name in ["channel_one", "channel_three"] {
        let missing = oleg_store::ChannelPoll {
            status: oleg_store::ChannelStatus::Missing,
            next_poll_ms: in_a_day,
            ..poll.clone()
        };
        store.record_poll(name, &missing).await.unwrap();
    }
    assert!(due_names().await.is_empty());
    let (done, said) = run(&admin, &["channels", "retry", "channel_one"], "").await;
    done.unwrap();
    assert_eq!(said.trim(), "channel_one: polled at once");
    assert_eq!(due_names().await, ["channel_one"]);
    let (done, said) = run(&admin, &["channels", "retry", "--missing"], "").await;
    done.unwrap();
    assert_eq!(said.trim(), "2 missing channels: polled at once");
    assert_eq!(due_names().await, ["channel_one", "channel_three"]);
    run(&admin, &["channels", "follow", "channel_four"], "")
        .await
        .0
        .unwrap();
    let (active, _) = run(&admin, &["channels", "retry", "channel_four"], "").await;
    assert_eq!(active.unwrap_err().exit_code(), 2, "not missing");
    let (unfollowed, _) = run(&admin, &["channels", "retry", "channel_two"], "").await;
    assert_eq!(unfollowed.unwrap_err().exit_code(), 3);

    let (unknown, _) = run(&admin, &["channels", "pause", "channel_nine"], "").await;
    assert_eq!(unknown.unwrap_err().exit_code(), 3);
    let (bad, _) = run(&admin, &["channels", "follow", "a b"], "").await;
    assert_eq!(bad.unwrap_err().exit_code(), 2);

    admin.close().await;
    services.finish().await;
}

#[tokio::test]
async fn a_forgotten_person_leaves_nothing_in_any_collection_and_others_keep_theirs() {
    let services = TestServices::start("admin_forget", mongo_settings("admin_forget")).await;
    let admin = connect(&services).await;
    let store = &services.store;
    let (forgotten, kept) = (4242_i64, 5151_i64);
    for user in [forgotten, kept] {
        let id = UserId::new(user).unwrap();
        store
            .upsert_users(&[UserSighting {
                user_id: id,
                at_ms: 1,
                started: true,
                language_code: Some("en".into()),
            }])
            .await
            .unwrap();
        store
            .upsert_votes(
                &[
                    vote(user, 1, Reaction::Like),
                    vote(user, 2, Reaction::Dislike),
                ],
                1,
            )
            .await
            .unwrap();
        store
            .record_delivery(id, &post("channel_one", 3), 1, "request")
            .await
            .unwrap();
        store
            .database()
            .collection::<Document>(oleg_store::Collections::BOT_CHATS)
            .insert_one(doc! {"_id": user, "chat_id": user, "status": "active", "started_at_ms": 1_i64, "last_digest_s": 0_i64})
            .await
            .unwrap();
    }

    let (done, exported) = run(&admin, &["users", "export", "4242"], "").await;
    done.unwrap();
    let export: serde_json::Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(export["votes"].as_array().unwrap().len(), 2);
    assert_eq!(export["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(export["bot_chat"]["chat_id"], 4242);

    let (declined, _) = run(&admin, &["users", "forget", "4242"], "\n").await;
    assert_eq!(declined.unwrap_err().exit_code(), 4);
    assert!(!store
        .person_data(UserId::new(forgotten).unwrap())
        .await
        .unwrap()
        .is_empty());
    let (done, said) = run(&admin, &["users", "forget", "4242", "--yes"], "").await;
    done.unwrap();
    assert!(
        said.contains("2 votes, 1 deliveries, 1 chat records, 1 person records"),
        "{said}"
    );

    // No document anywhere still names the person; the other person keeps everything.
    let mentions = |document: &Document, user: i64| {
        document.get("_id") == Some(&Bson::Int64(user))
            || document.get("_id") == Some(&Bson::Int32(user as i32))
            || oleg_store::as_i64(document.get("user_id")) == Some(user)
            || document
                .get_str("_id")
                .is_ok_and(|id| id.starts_with(&format!("{user}:")))
    };
    let database = store.database();
    let (mut left, mut others) = (0, 0);
    for name in database.list_collection_names().await.unwrap() {
        let documents: Vec<Document> = database
            .collection::<Document>(&name)
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        left += documents.iter().filter(|d| mentions(d, forgotten)).count();
        others += documents.iter().filter(|d| mentions(d, kept)).count();
    }
    assert_eq!(left, 0, "documents about the forgotten person remain");
    assert_eq!(
        others, 5,
        "the other person's user, chat, two votes and delivery"
    );

    let (gone, _) = run(&admin, &["users", "export", "4242"], "").await;
    assert_eq!(gone.unwrap_err().exit_code(), 3);

    admin.close().await;
    services.finish().await;
}

/// Publishes version `n` with small files, as a trainer would, with `details` added.
async fn publish(store: &oleg_store::Store, n: i64, details: Document) {
    let version = ModelVersion::new(n).unwrap();
    store
        .publish_model_outright(version, b"weights", b"{}")
        .await
        .unwrap();
    if !details.is_empty() {
        store
            .collections()
            .models
            .update_one(doc! {"_id": n}, doc! {"$set": details})
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn models_are_listed_with_the_live_one_marked_and_bad_versions_refused() {
    let services = TestServices::start("admin_models", mongo_settings("admin_models")).await;
    let admin = connect(&services).await;
    let store = &services.store;
    let v = |n| ModelVersion::new(n).unwrap();
    publish(
        store,
        1,
        doc! {"figures": {"kind": "full", "holdout": {"auc": 0.71}}, "trained_on_votes": 900_i64},
    )
    .await;
    store
        .record_model(v(2), ModelStatus::Rejected, doc! {})
        .await
        .unwrap();
    store.set_live_model(v(1)).await.unwrap();

    let (done, listed) = run(&admin, &["models", "list"], "").await;
    done.unwrap();
    let line = |version: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(version))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("1 ").contains("published")
            && line("1 ").contains("live")
            && line("1 ").contains("0.7100"),
        "{listed}"
    );
    assert!(
        line("2 ").contains("rejected") && !line("2 ").contains("live"),
        "{listed}"
    );

    let (done, shown) = run(&admin, &["models", "show", "1"], "").await;
    done.unwrap();
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        (shown["live"].as_bool(), shown["trained_on_votes"].as_i64()),
        (Some(true), Some(900))
    );
    let (missing, _) = run(&admin, &["models", "show", "99"], "").await;
    assert_eq!(missing.unwrap_err().exit_code(), 3);
    let (bad, _) = run(&admin, &["models", "show", "latest"], "").await;
    assert_eq!(bad.unwrap_err().exit_code(), 2);

    // A rollback moves the live pointer to an older published version and tells the rankers.
    publish(
        store,
        3,
        doc! {"figures": {"holdout": {"auc": 0.52, "votes": 40_i64}}},
    )
    .await;
    store.set_live_model(v(3)).await.unwrap();
    let key = MessageKind::ModelPublished.routing_key().unwrap();
    let mut notices = Subscription::new(services.bus.clone(), Source::PerReplica(vec![key]));
    let notice = tokio::spawn(async move {
        let incoming = notices.next().await.unwrap();
        let body = incoming.body.clone();
        incoming.ack().await.unwrap();
        oleg_messages::decode::<oleg_messages::ModelPublished>(&body, 1 << 20).unwrap()
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (refused, _) = run(&admin, &["models", "rollback", "2"], "").await;
    assert_eq!(
        refused.unwrap_err().exit_code(),
        2,
        "a rejected version never goes live"
    );
    let (done, said) = run(&admin, &["models", "rollback", "1"], "").await;
    done.unwrap();
    assert!(said.contains("model 1 is live (was 3)"), "{said}");
    assert_eq!(store.live_version().await.unwrap(), Some(v(1)));
    let notice = tokio::time::timeout(std::time::Duration::from_secs(10), notice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((notice.version, notice.trained_on_votes), (v(1), 900));

    // Withdrawing the live version puts the newest published one before it in its place;
    // with none before it, it is refused.
    let (done, said) = run(&admin, &["models", "withdraw", "3"], "").await;
    done.unwrap();
    assert!(
        said.contains("model 3 withdrawn") && !said.contains("in its place"),
        "{said}"
    );
    let (alone, _) = run(&admin, &["models", "withdraw", "1"], "").await;
    assert_eq!(alone.unwrap_err().exit_code(), 2);
    publish(store, 4, doc! {}).await;
    run(&admin, &["models", "rollback", "4"], "")
        .await
        .0
        .unwrap();
    let (done, said) = run(&admin, &["models", "withdraw", "4"], "").await;
    done.unwrap();
    assert!(said.contains("model 1 is live in its place"), "{said}");
    assert_eq!(store.live_version().await.unwrap(), Some(v(1)));
    assert_eq!(
        store.model(v(4)).await.unwrap().unwrap().status,
        ModelStatus::Withdrawn
    );

    admin.close().await;
    services.finish().await;
}

#[tokio::test]
async fn status_shows_queues_dead_letters_the_live_model_and_channels() {
    let services = TestServices::start("admin_status", mongo_settings("admin_status")).await;
    let admin = connect(&services).await;
    let ingest = services.bus.topology().queue(QueueName::Ingest);
    let letter = DeadLetter::new(
        DeadLetterReason::Malformed,
        "x",
        &ingest,
        "vote.cast",
        1,
        b"x",
    );
    services.bus.publish_dead_letter(&letter).await.unwrap();
    services.store.add_channel("channel_one", 0).await.unwrap();

    let (done, status) = run(&admin, &["status"], "").await;
    done.unwrap();
    assert!(status.contains(&ingest), "{status}");
    assert!(status.contains("dead letters: 1 (malformed 1)"), "{status}");
    assert!(status.contains("live model: none yet"), "{status}");
    assert!(
        status.contains("channels: 1 followed (0 paused, 0 missing), none fetched yet"),
        "{status}"
    );
    assert!(status.contains("no vote stored yet"), "{status}");
    // Status reads the dead letters without taking them.
    assert_eq!(
        queue_depth(
            &services.amqp,
            &services.bus.topology().queue(QueueName::DeadLetters)
        )
        .await,
        1
    );

    admin.close().await;
    services.finish().await;
}

#[tokio::test]
async fn the_binary_exits_with_codes_a_script_can_test() {
    let services = TestServices::start("admin_binary", mongo_settings("admin_binary")).await;
    let admin = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_oleg-admin"))
            .args(args)
            .envs(worker_env(&services.amqp, &services.mongo))
            .output()
            .unwrap()
    };
    let code = |args: &[&str]| admin(args).status.code();
    assert_eq!(code(&["status"]), Some(0));
    assert_eq!(code(&["users", "export", "31337"]), Some(3));
    assert_eq!(code(&["users", "export", "abc"]), Some(2));
    assert_eq!(code(&["no-such-command"]), Some(2));
    // A bad setting is named, with the variable that sets it.
    let misconfigured = std::process::Command::new(env!("CARGO_BIN_EXE_oleg-admin"))
        .arg("status")
        .envs(worker_env(&services.amqp, &services.mongo))
        .env("OLEG__RETENTION__DELIVERY_DAYS", "5")
        .output()
        .unwrap();
    assert_eq!(misconfigured.status.code(), Some(1));
    let said = String::from_utf8_lossy(&misconfigured.stderr);
    assert!(
        said.contains("retention.delivery_days") && said.contains("OLEG__RETENTION__DELIVERY_DAYS"),
        "{said}"
    );
    let refused = admin(&["models", "show", "0"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a model version"));
    services.finish().await;
}

#[tokio::test]
async fn retention_removes_only_what_can_no_longer_matter() {
    let services = TestServices::start("admin_retention", mongo_settings("admin_retention")).await;
    let admin = connect(&services).await;
    let store = &services.store;
    const DAY: i64 = 86_400_000;
    let now = chrono::Utc::now().timestamp_millis();
    let user = UserId::new(3).unwrap();
    // Deliveries: one from 20 days ago (past the 14 kept), one from yesterday.
    store
        .record_delivery(user, &post("channel_one", 1), now - 20 * DAY, "old")
        .await
        .unwrap();
    store
        .record_delivery(user, &post("channel_one", 2), now - DAY, "new")
        .await
        .unwrap();
    // Posts: 40 days old and unvoted (goes), 40 days old and voted (stays), new and unvoted.
    let mut posts = Vec::new();
    for (id, age_days) in [(10, 40), (11, 40), (12, 1)] {
        let mut scraped = scraped_post(&post("channel_one", id));
        scraped.published_at =
            chrono::DateTime::from_timestamp_millis(now - age_days * DAY).unwrap();
        posts.push(scraped);
    }
    store.upsert_posts(&posts, now).await.unwrap();
    store
        .upsert_votes(&[vote(3, 11, Reaction::Like)], now)
        .await
        .unwrap();
    // Models 1..=8 published; a rollback made 3 live. Kept: 8..=4 (the newest five), 3 (live)
    // and 2 (its rollback target); 1 loses its files.
    for n in 1..=8 {
        publish(store, n, doc! {}).await;
    }
    store
        .set_live_model(ModelVersion::new(3).unwrap())
        .await
        .unwrap();

    let (done, dry) = run(&admin, &["retention", "run", "--dry-run"], "").await;
    done.unwrap();
    assert!(
        dry.contains("would remove 1 deliveries")
            && dry.contains("would remove 1 posts")
            && dry.contains("model versions (1)"),
        "{dry}"
    );
    assert_eq!(
        store
            .collections()
            .deliveries
            .count_documents(doc! {})
            .await
            .unwrap(),
        2,
        "a dry run removes nothing"
    );

    let (done, said) = run(&admin, &["retention", "run"], "").await;
    done.unwrap();
    assert!(
        said.contains("removed 1 deliveries") && said.contains("removed 1 posts"),
        "{said}"
    );
    let deliveries: Vec<i64> = store
        .collections()
        .deliveries
        .find(doc! {})
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|d| d.post_id)
        .collect();
    assert_eq!(deliveries, [2]);
    let mut kept_posts: Vec<i64> = store
        .collections()
        .posts
        .find(doc! {})
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|p| p.post_id)
        .collect();
    kept_posts.sort();
    assert_eq!(kept_posts, [11, 12]);
    for n in 1..=8 {
        let version = ModelVersion::new(n).unwrap();
        let record = store.model(version).await.unwrap().unwrap();
        let chunks = store
            .database()
            .collection::<Document>("model_chunks")
            .count_documents(doc! {"version": n})
            .await
            .unwrap();
        match (n, record.files) {
            (1, None) => assert_eq!(chunks, 0),
            (1, Some(_)) => panic!("model 1 kept its files"),
            (_, Some(files)) => {
                store
                    .read_model_file(version, oleg_messages::WEIGHTS_FILE, &files.weights)
                    .await
                    .unwrap();
            }
            (_, None) => panic!("model {n} lost its files"),
        }
    }
    // A version without files cannot be rolled back to; running again removes nothing more.
    let (refused, _) = run(&admin, &["models", "rollback", "1"], "").await;
    assert_eq!(refused.unwrap_err().exit_code(), 2);
    let (done, again) = run(&admin, &["retention", "run"], "").await;
    done.unwrap();
    assert!(
        again.contains("removed 0 deliveries")
            && again.contains("removed 0 posts")
            && again.contains("files of 0 model versions"),
        "{again}"
    );

    admin.close().await;
    services.finish().await;
}

#[tokio::test]
async fn a_letter_whose_payload_does_not_decode_is_listed_but_never_replayed() {
    let services =
        TestServices::start("admin_bad_payload", mongo_settings("admin_bad_payload")).await;
    let admin = connect(&services).await;
    let ingest = services.bus.topology().queue(QueueName::Ingest);
    let mut letter = DeadLetter::new(
        DeadLetterReason::Malformed,
        "not JSON",
        &ingest,
        "vote.cast",
        1,
        b"x",
    );
    letter.payload = oleg_messages::Payload::Base64("%%% not base64 %%%".into());
    services.bus.publish_dead_letter(&letter).await.unwrap();

    let (done, listed) = run(&admin, &["dead-letters", "list"], "").await;
    done.unwrap();
    assert!(listed.contains("1 of 1"), "{listed}");
    let (left, said) = run(&admin, &["dead-letters", "replay"], "").await;
    assert_eq!(left.unwrap_err().exit_code(), 4, "{said}");
    assert!(said.contains("does not say where it came from"), "{said}");
    assert_eq!(
        queue_depth(&services.amqp, &ingest).await,
        0,
        "nothing was published"
    );
    let dead = services.bus.topology().queue(QueueName::DeadLetters);
    assert_eq!(
        queue_depth(&services.amqp, &dead).await,
        1,
        "the letter stays"
    );

    admin.close().await;
    services.finish().await;
}
