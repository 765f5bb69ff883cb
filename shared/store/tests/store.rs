//! The store against the Mongo-wire server (or a real MongoDB via `MONGODB_URI`).

use chrono::{TimeZone, Utc};
use mongodb::bson::doc;
use oleg_messages::{
    ChannelName, ModelStatus, ModelVersion, PostId, PostRef, Reaction, UserId, Vote,
};
use oleg_store::{vote_key, PostKey, Store, UserSighting, VoteWrite, VoteWriteSummary};
use oleg_testkit::mongo_settings;

async fn store(test: &str) -> Store {
    let store = Store::connect(&mongo_settings(test), "oleg-store-test")
        .await
        .unwrap();
    store
        .ensure_indexes()
        .await
        .expect("the store is reachable (deploy/dev/setup.sh starts it)");
    store
}

fn post(id: i64) -> PostRef {
    PostRef {
        channel: ChannelName::parse("codecamp").unwrap(),
        post_id: PostId::new(id).unwrap(),
    }
}

fn vote(user: i64, post_id: i64, reaction: Reaction, at_secs: i64) -> Vote {
    Vote::new(
        UserId::new(user).unwrap(),
        post(post_id),
        reaction,
        Utc.timestamp_opt(at_secs, 0).unwrap(),
    )
}

async fn stored(store: &Store, user: i64, post_id: i64) -> Option<oleg_store::VoteRecord> {
    let key = vote_key(UserId::new(user).unwrap(), &post(post_id));
    store
        .collections()
        .votes
        .find_one(doc! {"_id": {"$eq": key}})
        .await
        .unwrap()
}

async fn posts_stored(store: &Store) -> u64 {
    store
        .collections()
        .posts
        .estimated_document_count()
        .await
        .unwrap()
}

#[tokio::test]
async fn index_creation_is_idempotent() {
    let store = store("store-indexes").await;
    let names = |store: Store| async move {
        let mut all = Vec::new();
        for collection in ["posts", "votes", "deliveries", "models"] {
            let mut names = store
                .database()
                .collection::<mongodb::bson::Document>(collection)
                .list_index_names()
                .await
                .unwrap();
            names.sort();
            all.push((collection, names));
        }
        all
    };
    let first = names(store.clone()).await;
    store.ensure_indexes().await.unwrap();
    store.ensure_indexes().await.unwrap();
    assert_eq!(names(store.clone()).await, first);
    // The unique (user, post) index refuses a second document for a pair, whatever its _id.
    let votes = store
        .database()
        .collection::<mongodb::bson::Document>("votes");
    votes
        .insert_one(doc! {"_id": "a", "user_id": 1_i64, "channel": "codecamp", "post_id": 5_i64})
        .await
        .unwrap();
    let again = votes
        .insert_one(doc! {"_id": "b", "user_id": 1_i64, "channel": "codecamp", "post_id": 5_i64})
        .await;
    assert!(
        again.is_err(),
        "unique index on (user_id, channel, post_id)"
    );
    store.drop_database().await.unwrap();
}

#[tokio::test]
async fn upserting_the_same_vote_twice_leaves_one_document() {
    let store = store("store-same-vote").await;
    let v = vote(11, 2371, Reaction::Like, 1_000);
    assert_eq!(
        store
            .upsert_votes(std::slice::from_ref(&v), 5)
            .await
            .unwrap(),
        vec![VoteWrite::New]
    );
    assert_eq!(
        store
            .upsert_votes(std::slice::from_ref(&v), 6)
            .await
            .unwrap(),
        vec![VoteWrite::Unchanged]
    );
    assert_eq!(
        store
            .collections()
            .votes
            .estimated_document_count()
            .await
            .unwrap(),
        1
    );
    let record = stored(&store, 11, 2371).await.unwrap();
    assert_eq!(
        (record.reaction, record.revision, record.ingested_at_ms),
        (Reaction::Like, 1, 5)
    );
    store.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_later_vote_replaces_an_earlier_one_and_an_older_one_cannot_come_back() {
    let store = store("store-revote").await;
    let first = vote(12, 2372, Reaction::Like, 1_000);
    let later = vote(12, 2372, Reaction::Dislike, 2_000);
    store
        .upsert_votes(std::slice::from_ref(&first), 1)
        .await
        .unwrap();
    assert_eq!(
        store
            .upsert_votes(std::slice::from_ref(&later), 2)
            .await
            .unwrap(),
        vec![VoteWrite::Changed]
    );
    let record = stored(&store, 12, 2372).await.unwrap();
    assert_eq!(
        (record.reaction, record.voted_at_ms, record.revision),
        (Reaction::Dislike, 2_000_000, 2)
    );

    // The first vote redelivered after the change: nothing moves.
    assert_eq!(
        store.upsert_votes(&[first], 3).await.unwrap(),
        vec![VoteWrite::Unchanged]
    );
    let record = stored(&store, 12, 2372).await.unwrap();
    assert_eq!(
        (record.reaction, record.revision, record.ingested_at_ms),
        (Reaction::Dislike, 2, 2)
    );
    store.drop_database().await.unwrap();
}

#[tokio::test]
async fn one_batch_with_duplicates_and_out_of_order_revotes_ends_at_the_newest_votes() {
    let store = store("store-batch").await;
    let batch = vec![
        vote(1, 10, Reaction::Dislike, 300), // newest for (1, 10), arrives first
        vote(1, 10, Reaction::Like, 100),
        vote(1, 10, Reaction::Like, 200),
        vote(2, 10, Reaction::Like, 100),
        vote(2, 10, Reaction::Like, 100), // duplicate
        vote(3, 11, Reaction::Dislike, 50),
    ];
    let writes = store.upsert_votes(&batch, 9).await.unwrap();
    let summary = VoteWriteSummary::of(&writes);
    assert_eq!(summary.new, 3, "{writes:?}");
    assert_eq!(summary.new + summary.changed + summary.unchanged, 6);
    assert_eq!(
        store
            .collections()
            .votes
            .estimated_document_count()
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        stored(&store, 1, 10).await.unwrap().reaction,
        Reaction::Dislike,
        "the newest vote (at 300) wins"
    );
    assert_eq!(stored(&store, 1, 10).await.unwrap().voted_at_ms, 300_000);
    assert_eq!(
        stored(&store, 2, 10).await.unwrap().reaction,
        Reaction::Like
    );
    store.drop_database().await.unwrap();
}

#[tokio::test]
async fn people_are_created_on_first_sight_once() {
    let store = store("store-users").await;
    let seen = |user: i64, at_ms: i64, started: bool| UserSighting {
        user_id: UserId::new(user).unwrap(),
        at_ms,
        started,
        language_code: started.then(|| "ru".to_owned()),
    };
    assert_eq!(
        store
            .upsert_users(&[
                seen(5, 2_000, false),
                seen(5, 2_500, false),
                seen(6, 1_000, true)
            ])
            .await
            .unwrap()
            .created,
        2
    );
    assert_eq!(
        store
            .upsert_users(&[seen(5, 1_500, true), seen(6, 3_000, true)])
            .await
            .unwrap()
            .created,
        0
    );
    let five = store
        .collections()
        .users
        .find_one(doc! {"_id": {"$eq": 5_i64}})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            five.first_seen_ms,
            five.started_at_ms,
            five.language_code.as_deref()
        ),
        (1_500, Some(1_500), Some("ru"))
    );
    let six = store
        .collections()
        .users
        .find_one(doc! {"_id": {"$eq": 6_i64}})
        .await
        .unwrap()
        .unwrap();
    assert_eq!((six.first_seen_ms, six.started_at_ms), (1_000, Some(1_000)));
    store.drop_database().await.unwrap();
}

#[tokio::test]
async fn ping_fails_cleanly_when_the_server_is_absent() {
    let mut settings = mongo_settings("store-absent");
    settings.uri = secrecy::SecretString::from("mongodb://127.0.0.1:1".to_owned());
    settings.timeout_ms = 300;
    let store = Store::connect(&settings, "oleg-store-test").await.unwrap();
    let error = store.ping().await.unwrap_err();
    assert!(error.to_string().contains("MongoDB"), "{error}");
    assert!(
        error.is_transient(),
        "an absent server is an outage: {error}"
    );
}

#[tokio::test]
async fn a_lease_has_one_holder_until_it_expires_and_each_taking_a_new_token() {
    let store = store("store-lease").await;
    let token = |claim: Option<oleg_store::LeaseClaim>| claim.map(|c| c.token);
    let a = store
        .acquire_lease("trainer", "a", 1_000, 500)
        .await
        .unwrap();
    assert_eq!(token(a.clone()), Some(1));
    assert_eq!(
        token(
            store
                .acquire_lease("trainer", "b", 1_100, 500)
                .await
                .unwrap()
        ),
        None,
        "a holds it"
    );
    assert_eq!(
        token(
            store
                .acquire_lease("trainer", "a", 1_400, 500)
                .await
                .unwrap()
        ),
        Some(1),
        "a renews, same token"
    );
    assert_eq!(
        token(
            store
                .acquire_lease("trainer", "b", 1_800, 500)
                .await
                .unwrap()
        ),
        None,
        "renewed until 1900"
    );
    let b = store
        .acquire_lease("trainer", "b", 2_000, 500)
        .await
        .unwrap();
    assert_eq!(
        token(b.clone()),
        Some(2),
        "expired: b takes it, the next token"
    );
    // a, back from a pause, holds token 1: it can neither renew nor take the lease.
    let a = a.unwrap();
    assert!(!store.renew_lease(&a, 2_100, 500).await.unwrap());
    assert_eq!(
        token(
            store
                .acquire_lease("trainer", "a", 2_100, 500)
                .await
                .unwrap()
        ),
        None
    );
    store.release_lease(&a).await.unwrap();
    assert!(
        store
            .renew_lease(b.as_ref().unwrap(), 2_200, 500)
            .await
            .unwrap(),
        "a's release did not touch b's lease"
    );
    store.release_lease(b.as_ref().unwrap()).await.unwrap();
    assert_eq!(
        token(
            store
                .acquire_lease("trainer", "a", 2_300, 500)
                .await
                .unwrap()
        ),
        Some(3),
        "released"
    );
    store.drop_database().await.unwrap();
}

/// Expiry is judged by the store's clock: a real lease taken at the store's time holds there.
#[tokio::test]
async fn the_store_tells_the_time_leases_are_judged_by() {
    let store = store("store-time").await;
    let before = chrono::Utc::now().timestamp_millis();
    let now = store.store_time_ms().await.unwrap();
    assert!(
        (now - before).abs() < 60_000,
        "the store's clock: {now}, ours: {before}"
    );
    let claim = store
        .acquire_lease("trainer", "a", now, 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(store.holds_lease(&claim).await.unwrap());
    let short = store
        .acquire_lease("short", "a", now - 10_000, 1_000)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !store.holds_lease(&short).await.unwrap(),
        "expired by the store's clock"
    );
    store.drop_database().await.unwrap();
}

/// Each version is allocated once, written only by its claim, and made live only while the
/// claim holds the training lease.
#[tokio::test]
async fn a_model_goes_live_only_under_the_lease_that_allocated_it() {
    let store = store("store-fencing").await;
    let now = store.store_time_ms().await.unwrap();
    let a = store
        .acquire_lease(oleg_store::TRAINING_LEASE, "a", now, 60_000)
        .await
        .unwrap()
        .unwrap();
    let first = store.allocate_model_version(&a, now).await.unwrap();
    let second = store.allocate_model_version(&a, now).await.unwrap();
    assert_eq!((first.get(), second.get()), (1, 2));
    store
        .finish_model(&a, first, ModelStatus::Published, doc! {})
        .await
        .unwrap();
    assert!(store.commit_live_model(&a, first, None).await.unwrap());
    assert_eq!(store.live_version().await.unwrap(), Some(v(1)));
    // b takes the lease over (a's expired): a can no longer make anything live.
    store.release_lease(&a).await.unwrap();
    let b = store
        .acquire_lease(oleg_store::TRAINING_LEASE, "b", now, 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(!store
        .commit_live_model(&a, second, Some(first))
        .await
        .unwrap());
    assert!(
        store
            .finish_model(&b, second, ModelStatus::Published, doc! {})
            .await
            .is_err(),
        "b wrote a version a allocated"
    );
    assert_eq!(store.live_version().await.unwrap(), Some(v(1)));
    assert!(matches!(
        store.allocate_model_version(&a, now).await,
        Err(oleg_store::StoreError::LeaseLost { .. })
    ));
    assert_eq!(store.allocate_model_version(&b, now).await.unwrap(), v(3));
    // An operator's rollback points it anywhere.
    store.set_live_model(v(2)).await.unwrap();
    assert_eq!(store.live_version().await.unwrap(), Some(v(2)));
    // A cycle that started from version 1 cannot undo the rollback; one built on 2 commits.
    let third = v(3);
    assert!(!store
        .commit_live_model(&b, third, Some(v(1)))
        .await
        .unwrap());
    assert_eq!(store.live_pointer().await.unwrap(), Some(v(2)));
    assert!(store
        .commit_live_model(&b, third, Some(v(2)))
        .await
        .unwrap());
    assert_eq!(store.live_version().await.unwrap(), Some(third));
    // Only a published version can be withdrawn.
    assert!(!store.withdraw_model(v(4)).await.unwrap());
    store.drop_database().await.unwrap();
}

#[tokio::test]
async fn an_edited_post_updates_its_text_and_views_without_counting_as_new() {
    let store = store("store-posts").await;
    let mut scraped = oleg_testkit::scraped_post(&post(2371));
    scraped.views = Some(100);
    assert_eq!(
        store
            .upsert_posts(std::slice::from_ref(&scraped), 1)
            .await
            .unwrap(),
        vec![post(2371)]
    );
    scraped.text = "edited".into();
    scraped.views = Some(9_000);
    scraped.page_median_views = Some(3_000);
    assert!(
        store
            .upsert_posts(std::slice::from_ref(&scraped), 2)
            .await
            .unwrap()
            .is_empty(),
        "not new"
    );
    let stored = store
        .collections()
        .posts
        .find_one(doc! {"_id": {"$eq": "codecamp/2371"}})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.text.as_str(), stored.views, stored.first_seen_ms),
        ("edited", Some(9_000), 1)
    );
    // What the trainer and the ranker read of it: the newest counters.
    let key = PostKey::of(&post(2371));
    let contents = store
        .post_contents(std::slice::from_ref(&key))
        .await
        .unwrap();
    let content = &contents[&key];
    assert_eq!(
        (
            content.text.as_str(),
            content.views,
            content.page_median_views
        ),
        ("edited", Some(9_000), Some(3_000))
    );
    assert_eq!(posts_stored(&store).await, 1);
    store.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_post_deleted_from_its_channel_is_no_candidate_until_it_is_shown_again() {
    let store = store("store-deleted-posts").await;
    let other = PostRef {
        channel: ChannelName::parse("othercamp").unwrap(),
        post_id: PostId::new(2372).unwrap(),
    };
    let posts: Vec<_> = (2370..=2375)
        .map(|id| oleg_testkit::scraped_post(&post(id)))
        .chain([oleg_testkit::scraped_post(&other)])
        .collect();
    store.upsert_posts(&posts, 1).await.unwrap();
    let candidates = || async {
        let mut keys: Vec<String> = store
            .recent_posts(0)
            .await
            .unwrap()
            .iter()
            .map(|p| format!("{}/{}", p.channel, p.post_id))
            .collect();
        keys.sort();
        keys
    };
    // A page showed codecamp's 2371 to 2374 without 2372 and 2373.
    assert_eq!(
        store
            .mark_deleted_posts("codecamp", (2371, 2374), &[2371, 2374], 5)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        candidates().await,
        [
            "codecamp/2370",
            "codecamp/2371",
            "codecamp/2374",
            "codecamp/2375",
            "othercamp/2372"
        ],
        "outside the stretch, shown, or another channel's: still candidates"
    );
    assert_eq!(
        store
            .mark_deleted_posts("codecamp", (2371, 2374), &[2371, 2374], 6)
            .await
            .unwrap(),
        0,
        "marked once"
    );
    let deleted = store
        .database()
        .collection::<mongodb::bson::Document>("posts")
        .find_one(doc! {"_id": {"$eq": "codecamp/2372"}})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        oleg_store::as_i64(deleted.get("deleted_at_ms")),
        Some(5),
        "{deleted}"
    );
    assert_eq!(
        posts_stored(&store).await,
        7,
        "a deleted post stays: its votes still train"
    );
    // Shown again (a page that had left it out for another reason): a candidate again.
    store
        .upsert_posts(std::slice::from_ref(&posts[2]), 7)
        .await
        .unwrap();
    assert!(candidates().await.contains(&"codecamp/2372".to_owned()));
    assert!(!candidates().await.contains(&"codecamp/2373".to_owned()));
    store.drop_database().await.unwrap();
}

#[tokio::test]
async fn an_unfollowed_channels_posts_are_no_candidates_until_it_is_followed_again() {
    let store = store("store-unfollowed").await;
    assert!(store.add_channel("codecamp", 1).await.unwrap());
    let posts: Vec<_> = (1..=3)
        .map(|id| oleg_testkit::scraped_post(&post(id)))
        .collect();
    store.upsert_posts(&posts, 1).await.unwrap();
    let candidates = || async { store.recent_posts(0).await.unwrap().len() };
    assert_eq!(candidates().await, 3);

    assert!(store.remove_channel("codecamp", 2).await.unwrap());
    assert_eq!(candidates().await, 0);
    assert_eq!(
        posts_stored(&store).await,
        3,
        "stored: their votes still train"
    );
    assert!(!store.remove_channel("codecamp", 3).await.unwrap());
    // A poll that was in flight finds the channel gone; its posts are withdrawn again.
    let poll = oleg_store::ChannelPoll {
        status: oleg_store::ChannelStatus::Active,
        newest_post_id: Some(4),
        title: None,
        alias: None,
        subscribers: None,
        failures: 0,
        next_poll_ms: 0,
        polled_at_ms: 4,
    };
    store
        .upsert_posts(&[oleg_testkit::scraped_post(&post(4))], 4)
        .await
        .unwrap();
    assert!(!store.record_poll("codecamp", &poll).await.unwrap());
    assert_eq!(
        store
            .withdraw_unfollowed_posts("codecamp", 4)
            .await
            .unwrap(),
        1
    );
    assert_eq!(candidates().await, 0);

    assert!(store.add_channel("codecamp", 5).await.unwrap());
    assert_eq!(candidates().await, 4, "followed again: candidates again");
    assert!(store.record_poll("codecamp", &poll).await.unwrap());
    store.drop_database().await.unwrap();
}

#[tokio::test]
async fn model_versions_order_by_number_past_nine() {
    let store = store("store-model-versions").await;
    assert_eq!(store.next_model_version().await.unwrap(), v(1));
    for version in [1, 2, 9, 10, 11] {
        let status = if version == 11 {
            ModelStatus::Rejected
        } else {
            ModelStatus::Published
        };
        store
            .record_model(v(version), status, doc! {})
            .await
            .unwrap();
    }
    assert_eq!(store.next_model_version().await.unwrap(), v(12));
    let live = store.live_model().await.unwrap().unwrap();
    assert_eq!(live.version, v(10));
    store.drop_database().await.unwrap();
}

fn v(version: i64) -> ModelVersion {
    ModelVersion::new(version).unwrap()
}

/// A statement the store refuses is reported for that vote alone; the rest of the batch lands,
/// and a refusal is not taken for an outage.
#[tokio::test]
async fn a_vote_the_store_refuses_is_reported_alone_and_is_not_an_outage() {
    let store = store("store-refused").await;
    // A stored vote of another shape: its revision is text, so `$inc` on it is refused.
    store
        .database()
        .collection::<mongodb::bson::Document>("votes")
        .insert_one(doc! {"_id": vote_key(UserId::new(2).unwrap(), &post(1)), "voted_at_ms": 0_i64, "revision": "one"})
        .await
        .unwrap();
    let writes = store
        .upsert_votes(
            &[
                vote(1, 1, Reaction::Like, 10),
                vote(2, 1, Reaction::Like, 10),
            ],
            1,
        )
        .await
        .unwrap();
    assert_eq!(writes[0], VoteWrite::New);
    assert!(
        matches!(&writes[1], VoteWrite::Refused(message) if !message.is_empty()),
        "{writes:?}"
    );
    assert!(stored(&store, 1, 1).await.is_some());
    let refused = oleg_store::StoreError::Refused {
        collection: "votes",
        detail: "code 14: type mismatch".into(),
    };
    assert!(!refused.is_transient());
    store.drop_database().await.unwrap();
}

/// The ranker's view of a person: every post voted on or sent since the window began, and likes
/// and votes per channel among those.
#[tokio::test]
async fn a_persons_history_holds_what_they_saw_and_their_votes_per_channel() {
    let store = store("store-history").await;
    let user = UserId::new(5).unwrap();
    store
        .upsert_votes(
            &[
                vote(5, 1, Reaction::Like, 10),
                vote(5, 2, Reaction::Dislike, 10),
                vote(5, 3, Reaction::Like, 10),
                vote(6, 4, Reaction::Like, 10),
                // Before the window: its post is no candidate any more.
                vote(5, 5, Reaction::Like, 1),
            ],
            1,
        )
        .await
        .unwrap();
    store
        .record_delivery(user, &post(9), 10_000, "r")
        .await
        .unwrap();
    store
        .record_delivery(user, &post(8), 1_000, "r")
        .await
        .unwrap();
    let mut history = store.person_history(user, 5_000).await.unwrap();
    let seen = |history: &oleg_store::PersonHistory| {
        let mut seen: Vec<String> = history.seen.iter().map(|k| k.to_string()).collect();
        seen.sort();
        seen
    };
    assert_eq!(
        seen(&history),
        ["codecamp/1", "codecamp/2", "codecamp/3", "codecamp/9"]
    );
    let tally = |history: &oleg_store::PersonHistory| history.channel_votes["codecamp"];
    assert_eq!(tally(&history), (2, 3));
    // What the ranker's notices add: a later vote replaces the older one, an older one is
    // ignored, a new one counts; a release forgets a post sent, not one voted on.
    let key = |id| PostKey::new("codecamp", id);
    use oleg_store::VoteChange;
    let replaced = VoteChange::Replaced { was_liked: false };
    assert_eq!(history.record_vote(key(2), true, 20_000), replaced);
    assert_eq!(tally(&history), (3, 3));
    assert_eq!(
        history.record_vote(key(2), false, 15_000),
        VoteChange::Stale
    );
    assert_eq!(tally(&history), (3, 3));
    assert_eq!(history.record_vote(key(7), false, 20_000), VoteChange::New);
    assert_eq!(tally(&history), (3, 4));
    history.release(&key(9));
    history.release(&key(7));
    assert_eq!(
        seen(&history),
        ["codecamp/1", "codecamp/2", "codecamp/3", "codecamp/7"]
    );
    store.drop_database().await.unwrap();
}
