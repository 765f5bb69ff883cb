//! `oleg-bot` as a process against the fake Telegram Bot API of `oleg-testkit`, the real broker
//! and the Mongo-wire server, with a stand-in ranker answering the recommendation RPC.

use mongodb::bson::doc;
use oleg_bus::{QueueName, Source, Subscription};
use oleg_messages::*;
use oleg_testkit::stalling_proxy::StallingProxy;
use oleg_testkit::stand_in_ranker::StandInRanker;
use oleg_testkit::telegram::{Call, FakeTelegram};
use oleg_testkit::*;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_oleg-bot");
const TOKEN: &str = "123456:test-token";
const ADMIN: i64 = 900;
const LONG: Duration = Duration::from_secs(20);

struct Harness {
    services: TestServices,
    api: FakeTelegram,
    api_url: String,
    bot: WorkerProcess,
    ranker: StandInRanker,
    /// What the bot published for ingest.
    ingest: Subscription,
}

/// Settings every test's bot gets; `extra` adds or overrides.
fn bot_env<'a>(api_url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("OLEG__BOT__TOKEN", TOKEN),
        ("OLEG__BOT__API_URL", api_url),
        ("OLEG__BOT__CALLBACK_SECRET", "a callback secret for tests"),
        ("OLEG__BOT__ADMIN_IDS", "900"),
        ("OLEG__BOT__DIGEST_TIMES", "03:00"),
        // No bot catches up on the 03:00 digest, whenever the tests run.
        ("OLEG__BOT__DIGEST_CATCH_UP_S", "0"),
        ("OLEG__BOT__TIMEZONE", "UTC"),
        ("OLEG__BOT__POLL_TIMEOUT_S", "1"),
        ("OLEG__BOT__CHAT_INTERVAL_MS", "100"),
    ];
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        env.push((key, value));
    }
    env
}

impl Harness {
    async fn start(test: &str, extra: &[(&str, &str)]) -> Self {
        Self::start_with_ranker(test, extra, Duration::ZERO).await
    }

    async fn start_with_ranker(test: &str, extra: &[(&str, &str)], delay: Duration) -> Self {
        let services = TestServices::start(test, mongo_settings(test)).await;
        let (api, api_url) = FakeTelegram::serve().await;
        let ranker = StandInRanker::serve(&services.bus, delay);
        // Bind the ingest queue's consumer before the bot publishes anything.
        let mut ingest = Subscription::new(services.bus.clone(), Source::Shared(QueueName::Ingest));
        let _ = tokio::time::timeout(Duration::from_millis(200), ingest.next()).await;
        let bot = spawn_bot(&services, &bot_env(&api_url, extra));
        bot.wait_ready(Duration::from_secs(60)).await;
        Self {
            services,
            api,
            api_url,
            bot,
            ranker,
            ingest,
        }
    }

    /// Waits until `chat` has received `count` messages; returns them.
    async fn wait_sent(&self, chat: i64, count: usize) -> Vec<Call> {
        if self.api.next_sent(chat, count - 1, LONG).await.is_none() {
            panic!(
                "chat {chat} got {} of {count} messages: {:?}\nbot log:\n{}",
                self.api.sent_to(chat).len(),
                self.api.sent_to(chat),
                self.bot.log_tail()
            );
        }
        self.api.sent_to(chat)
    }

    /// The next message the bot published on the ingest queue, checked against its schema.
    async fn next_published(&mut self, kind: MessageKind) -> Vec<u8> {
        self.next_published_traced(kind).await.0
    }

    /// As [`next_published`](Self::next_published), with the message's trace id.
    async fn next_published_traced(&mut self, kind: MessageKind) -> (Vec<u8>, String) {
        let incoming = tokio::time::timeout(LONG, self.ingest.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {} published; bot log:\n{}",
                    kind.name(),
                    self.bot.log_tail()
                )
            })
            .unwrap();
        assert_schema_valid(kind, &incoming.body);
        let (body, trace) = (incoming.body.clone(), incoming.trace_id());
        incoming.ack().await.unwrap();
        (body, trace)
    }

    /// Every vote published within `quiet` of the last one.
    async fn drain_votes(&mut self, quiet: Duration) -> Vec<Vote> {
        let mut votes = Vec::new();
        while let Ok(Some(incoming)) = tokio::time::timeout(quiet, self.ingest.next()).await {
            if incoming.routing_key == "vote.cast" {
                votes.push(decode(&incoming.body, 1 << 16).unwrap());
            }
            incoming.ack().await.unwrap();
        }
        votes
    }

    /// People send /start and get their first post; returns each one's post message.
    async fn start_people(&self, people: impl Iterator<Item = i64>) -> HashMap<i64, Call> {
        let people: Vec<i64> = people.collect();
        for &person in &people {
            self.api.send_text(person, "/start");
        }
        let mut posts = HashMap::new();
        for person in people {
            posts.insert(person, self.wait_sent(person, 2).await[1].clone());
        }
        posts
    }

    async fn metrics(&self) -> String {
        self.bot.get("/metrics").await.unwrap().1
    }

    /// SIGTERM to the bot; it must exit cleanly.
    async fn stop_bot(&mut self) {
        let stopped = self.bot.terminate_within(LONG).await;
        assert_eq!(stopped, Some(true), "{}", self.bot.log_tail());
    }

    /// One of the store's collections, as documents.
    fn collection(&self, name: &str) -> mongodb::Collection<mongodb::bson::Document> {
        self.services.store.database().collection(name)
    }

    /// How many updates the inbox keeps unhandled.
    async fn kept_updates(&self) -> u64 {
        self.collection("bot_updates")
            .count_documents(doc! {"done_at_ms": {"$exists": false}})
            .await
            .unwrap()
    }

    /// Waits until every update the inbox kept is handled.
    async fn wait_inbox_handled(&self) {
        wait_until(
            LONG,
            async || self.kept_updates().await == 0,
            || format!("updates stayed in the inbox:\n{}", self.bot.log_tail()),
        )
        .await;
    }

    /// Waits until each of `people` has got their digest, a post after their first two
    /// messages.
    async fn wait_digests(&self, people: &[i64]) {
        for &person in people {
            let digest = &self.wait_sent(person, 3).await[2];
            assert!(digest.post_link().is_some(), "{:?}", digest.body);
        }
    }

    /// Each of `people` has been sent `count` messages; `more` says what one more would mean.
    fn assert_sent_each(&self, people: &[i64], count: usize, more: &str) {
        for &person in people {
            assert_eq!(
                self.api.sent_to(person).len(),
                count,
                "person {person}: {more}"
            );
        }
    }

    /// The bot's metrics have each of `lines`.
    async fn assert_metrics(&self, lines: &[&str]) {
        let metrics = self.metrics().await;
        for line in lines {
            assert!(metrics.contains(line), "{line} missing:\n{metrics}");
        }
    }

    /// Waits until the bot's metrics have `line`.
    async fn wait_metric(&self, line: &str) {
        wait_until(
            LONG,
            async || self.metrics().await.contains(line),
            || format!("{line} missing:\n{}", self.bot.log_tail()),
        )
        .await;
    }

    /// Waits until the bot has put off `attempts` updates' attempts in all.
    async fn wait_postponed(&self, attempts: f64) {
        wait_until(
            LONG,
            async || {
                metric_sum(&self.metrics().await, "oleg_bot_updates_postponed_total") >= attempts
            },
            || self.bot.log_tail(),
        )
        .await;
    }

    async fn finish(self) {
        drop(self.bot);
        self.services.finish().await;
    }
}

fn spawn_bot(services: &TestServices, env: &[(&str, &str)]) -> WorkerProcess {
    services.spawn(BINARY, "OLEG__BOT__METRICS_ADDR", "bot.log", env)
}

/// The time of day `seconds` from now, as a digest time (the tests' bots keep UTC).
fn digest_time_in(seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(seconds))
        .format("%H:%M:%S")
        .to_string()
}

/// The settings of a bot whose one digest is at `at` and may go out up to 10 minutes late.
fn digest_env(at: &str) -> [(&str, &str); 2] {
    [
        ("OLEG__BOT__DIGEST_TIMES", at),
        ("OLEG__BOT__DIGEST_CATCH_UP_S", "600"),
    ]
}

/// The p-th percentile (0..=100) of `values`.
fn percentile(values: &mut [Duration], p: usize) -> Duration {
    values.sort();
    values[(values.len() * p / 100).min(values.len() - 1)]
}

#[tokio::test]
async fn start_vote_change_and_forged_presses() {
    let mut h = Harness::start("bot-votes", &[]).await;
    let user = 501;

    // /start: a user-started message, onboarding, then a post with its source and buttons.
    h.api.send_text(user, "/start");
    let started: UserStarted =
        decode(&h.next_published(MessageKind::UserStarted).await, 1 << 16).unwrap();
    assert_eq!(started.user_id.get(), user);
    assert_eq!(started.language_code.as_deref(), Some("ru"));
    let sent = h.wait_sent(user, 2).await;
    assert!(sent[0].body["text"].as_str().unwrap().contains("👍"));
    let post = &sent[1];
    assert_eq!(post.body["parse_mode"], "HTML");
    assert_eq!(
        post.body["text"],
        "Post 1 with &lt;tags&gt; &amp; ampersands\n\nSource: <a href=\"https://t.me/campcode/101\">@campcode</a>"
    );
    assert_eq!(post.post_link(), Some("https://t.me/campcode/101"));
    let buttons = &post.body["reply_markup"]["inline_keyboard"][0];
    assert_eq!(
        (buttons[0]["text"].as_str(), buttons[1]["text"].as_str()),
        (Some("👍"), Some("👎"))
    );
    for b in buttons.as_array().unwrap() {
        assert!(b["callback_data"].as_str().unwrap().len() <= 64);
    }

    // 👍: a valid vote, the press answered, the button marked, the next post sent.
    h.api.press(user, post, 0);
    let (body, trace) = h.next_published_traced(MessageKind::Vote).await;
    let vote: Vote = decode(&body, 1 << 16).unwrap();
    // The press's trace is on the vote and in the bot's log of handling it.
    wait_until(
        Duration::from_secs(10),
        async || h.bot.log_text().contains(&format!("trace={trace}")),
        || format!("{trace} not in the log:\n{}", h.bot.log_tail()),
    )
    .await;
    assert_eq!(
        (
            vote.user_id.get(),
            vote.channel.as_str(),
            vote.post_id.get(),
            vote.reaction
        ),
        (user, "campcode", 101, Reaction::Like)
    );
    assert!(
        (chrono::Utc::now() - vote.voted_at).num_seconds() < 30,
        "the press time"
    );
    let sent = h.wait_sent(user, 3).await;
    assert!(sent[2].body["text"]
        .as_str()
        .unwrap()
        .contains("campcode/102"));
    let edits = h.api.calls("editmessagereplymarkup");
    assert_eq!(edits.len(), 1);
    assert_eq!(
        edits[0].body["reply_markup"]["inline_keyboard"][0][0]["text"],
        "👍 ✓"
    );
    assert!(!h.api.calls("answercallbackquery").is_empty());

    // Changing the vote later: a new vote replaces the old one; no extra post for it.
    h.api.press(user, &edits[0], 1);
    let changed: Vote = decode(&h.next_published(MessageKind::Vote).await, 1 << 16).unwrap();
    assert_eq!(
        (changed.post_id.get(), changed.reaction),
        (101, Reaction::Dislike)
    );
    assert!(changed.voted_at > vote.voted_at);

    // A forged press (the signature of another secret) is refused and counted; no vote.
    let forged = sent[2]
        .button_data(0)
        .unwrap()
        .rsplit_once('|')
        .map(|(body, _)| format!("{body}|AAAAAAAAAAA"))
        .unwrap();
    h.api.press_data(user, &sent[2], &forged);
    h.wait_metric("oleg_bot_callback_refusals_total{reason=\"forged\"} 1")
        .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(800), h.ingest.next())
            .await
            .is_err(),
        "a forged press published a vote"
    );
    h.assert_metrics(&[
        "oleg_bot_updates_total{kind=\"command\"} 1",
        "oleg_bot_messages_sent_total{kind=\"post\"} 2",
        "oleg_bot_send_seconds_count",
        "oleg_bot_own_work_seconds_count 4",
        "oleg_rpc_reply_path_up 1",
        "oleg_rpc_calls_total{outcome=\"ok\"} 2",
        "process_resident_memory_bytes",
    ])
    .await;
    let ready = h.bot.get("/readyz").await.unwrap().1;
    assert!(ready.contains("\"reply_path\":true"), "{ready}");
    h.finish().await;
}

#[tokio::test]
async fn digests_reach_every_active_person_once_retrying_429_and_dropping_403() {
    // The digest goes out a few seconds after the people have started.
    let at = digest_time_in(12);
    let h = Harness::start("bot-digest", &[("OLEG__BOT__DIGEST_TIMES", &at)]).await;
    let (steady, throttled, blocked, paused) = (601, 602, 603, 604);
    h.start_people([steady, throttled, blocked, paused].into_iter())
        .await;
    h.api.send_text(paused, "/stop");
    h.wait_sent(paused, 3).await;
    h.api.throttle_once(throttled);
    h.api.block(blocked);

    // One digest post each to the active, unpaused people; the 429 retried after a second.
    let steady_sent = h.wait_sent(steady, 3).await;
    assert!(steady_sent[2].body["text"]
        .as_str()
        .unwrap()
        .contains("campcode/102"));
    h.wait_sent(throttled, 3).await;
    let to_throttled: Vec<Call> = h
        .api
        .calls("sendmessage")
        .into_iter()
        .filter(|c| c.chat() == Some(throttled))
        .collect();
    let (refused, retried) = (&to_throttled[2], &to_throttled[3]);
    assert!(
        retried.at - refused.at >= Duration::from_secs(1),
        "the retry came before retry_after"
    );
    assert_eq!(retried.body["text"], refused.body["text"]);

    // The person who blocked the bot is marked inactive; nothing went to the paused one.
    let chats = h.collection("bot_chats");
    wait_until(
        Duration::from_secs(10),
        async || {
            let record = chats.find_one(doc! {"_id": blocked}).await.unwrap();
            record.unwrap().get_str("status") == Ok("blocked")
        },
        || format!("person {blocked} was not marked inactive"),
    )
    .await;
    assert_eq!(
        h.api.sent_to(paused).len(),
        3,
        "a paused person got a digest"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.api.sent_to(steady).len(), 3, "a digest went out twice");
    h.assert_metrics(&[
        "oleg_bot_api_errors_total{code=\"429\"} 1",
        "oleg_bot_api_errors_total{code=\"403\"} 1",
        "oleg_bot_messages_sent_total{kind=\"digest\"} 2",
    ])
    .await;
    h.finish().await;
}

/// Defect: a digest went out only from a bot running at its time, and a stop waited for the
/// whole run: a deploy across a digest skipped it for everyone, and one during a digest held the
/// stop until every person had theirs. The stop now ends the claiming, and the next bot sends
/// the digest to those it has not reached, once.
#[tokio::test]
async fn a_digest_a_stopping_bot_left_half_sent_goes_out_from_the_next_one_once() {
    // More people than a digest sends to at once (32), each post taking the ranker 1.5 s.
    let people: Vec<i64> = (651..=690).collect();
    let at = digest_time_in(15);
    let extra = digest_env(&at);
    let mut h =
        Harness::start_with_ranker("bot-digest-catch-up", &extra, Duration::from_millis(1500))
            .await;
    h.start_people(people.iter().copied()).await;
    let reached = |h: &Harness| {
        people
            .iter()
            .filter(|&&person| h.api.sent_to(person).len() > 2)
            .count()
    };
    // Stopped once the digest has begun: the first people claimed, their posts on the way.
    let chats = h.collection("bot_chats");
    wait_until(
        Duration::from_secs(40),
        async || {
            let claimed = doc! {"last_digest_s": {"$gt": 0}};
            chats.count_documents(claimed).await.unwrap() > 0
        },
        || h.bot.log_tail(),
    )
    .await;
    h.stop_bot().await;
    let before = reached(&h);
    assert!(
        before < people.len(),
        "the stop waited for the whole digest"
    );

    let api_url = h.api_url.clone();
    let env = bot_env(&api_url, &extra);
    h.bot = spawn_bot(&h.services, &env);
    h.wait_digests(&people).await;
    // A bot starting again finds everyone reached, and someone who came after the digest's time
    // is not sent it.
    let newcomer = 691;
    h.start_people([newcomer].into_iter()).await;
    h.stop_bot().await;
    h.bot = spawn_bot(&h.services, &env);
    wait_until(
        LONG,
        async || h.bot.log_text().matches("digest sent").count() >= 3,
        || h.bot.log_tail(),
    )
    .await;
    h.assert_sent_each(&people, 3, "a digest twice");
    assert_eq!(h.api.sent_to(newcomer).len(), 2, "a digest to a newcomer");
    h.finish().await;
}

/// Defect: a person the ranker gave no post at a digest's time (restarting, or its store away)
/// was claimed all the same and went without that digest. The claim is taken back and the digest
/// tried again for them, within `bot.digest_catch_up_s` of its time.
#[tokio::test]
async fn a_digest_the_ranker_gave_no_post_for_is_tried_again_and_sent_once() {
    let people: Vec<i64> = (711..=713).collect();
    let at = digest_time_in(15);
    let extra = digest_env(&at);
    let h = Harness::start("bot-digest-retry", &extra).await;
    h.start_people(people.iter().copied()).await;
    // The digest's first two requests are refused.
    h.ranker.refuse_next(2);
    h.wait_digests(&people).await;
    assert!(
        h.bot.log_text().contains("trying the digest again"),
        "{}",
        h.bot.log_tail()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.assert_sent_each(&people, 3, "a digest twice");
    h.assert_metrics(&[
        "oleg_bot_digest_people_total{outcome=\"postponed\"} 2\n",
        "oleg_bot_digest_people_total{outcome=\"sent\"} 3\n",
        "oleg_bot_digest_people_total{outcome=\"failed\"} 0\n",
    ])
    .await;
    h.finish().await;
}

#[tokio::test]
async fn admins_add_channels_and_see_status_others_cannot() {
    let h = Harness::start("bot-admin", &[]).await;
    let mut scraper = Subscription::new(h.services.bus.clone(), Source::Shared(QueueName::Scraper));
    let _ = tokio::time::timeout(Duration::from_millis(200), scraper.next()).await;
    for (user, text) in [
        (ADMIN, "/add_channel durov"),
        (ADMIN, "/status"),
        (42, "/add_channel durov"),
    ] {
        h.api.send_text(user, text);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let incoming = tokio::time::timeout(LONG, scraper.next())
        .await
        .expect("an add-channel message")
        .unwrap();
    assert_schema_valid(MessageKind::AddChannel, &incoming.body);
    let added: AddChannel = decode(&incoming.body, 1 << 16).unwrap();
    assert_eq!(
        (added.channel.as_str(), added.requested_by.map(|u| u.get())),
        ("durov", Some(ADMIN))
    );
    incoming.ack().await.unwrap();
    let admin_sent = h.wait_sent(ADMIN, 2).await;
    assert!(admin_sent[0].body["text"]
        .as_str()
        .unwrap()
        .contains("@durov"));
    let status = admin_sent[1].body["text"].as_str().unwrap();
    assert!(
        status.contains(".ingest: 0 waiting") && status.contains("model"),
        "{status}"
    );
    let refused = h.wait_sent(42, 1).await;
    assert_eq!(refused[0].body["text"], "This command is for admins.");
    assert!(
        tokio::time::timeout(Duration::from_millis(800), scraper.next())
            .await
            .is_err(),
        "a non-admin added a channel"
    );
    h.finish().await;
}

/// Defect: the reply queue died with the bot's connection and was never made again, so after a
/// broker hiccup every person got "cannot pick a post" and the ranker's replies (and the posts in
/// them) went nowhere.
#[tokio::test]
async fn after_the_broker_closes_every_connection_everyone_gets_their_next_post_and_no_post_is_lost(
) {
    let people: Vec<i64> = (1001..=1020).collect();
    let mut h = Harness::start("bot-broker", &[]).await;
    let mut posts = h.start_people(people.iter().copied()).await;
    for round in 0..4 {
        if round == 2 {
            // Mid-round: presses in flight while the broker drops the bot and the ranker.
            for &person in &people[..10] {
                h.api.press(person, &posts[&person], 0);
            }
            assert!(close_deployment_connections(&h.services.amqp.prefix) >= 2);
            for &person in &people[10..] {
                h.api.press(person, &posts[&person], 0);
            }
        } else {
            for &person in &people {
                h.api.press(person, &posts[&person], 0);
            }
        }
        let started = Instant::now();
        for &person in &people {
            let next = h.wait_sent(person, 3 + round).await;
            posts.insert(person, next[2 + round].clone());
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "round {round} took {:?}",
            started.elapsed()
        );
    }
    // No post was used up without being shown: what the ranker counts as delivered is exactly
    // what each person saw, and every press became one vote.
    for &person in &people {
        let mut shown: Vec<i64> = h.api.sent_to(person)[1..]
            .iter()
            .filter_map(|c| c.post_link()?.rsplit('/').next()?.parse().ok())
            .collect();
        let mut delivered = h.ranker.delivered.lock().unwrap()[&person].clone();
        shown.sort_unstable();
        delivered.sort_unstable();
        assert_eq!(shown, delivered, "person {person}");
        assert_eq!(shown.len(), 5, "person {person}: {shown:?}");
    }
    let votes = h.drain_votes(Duration::from_secs(2)).await;
    let distinct: HashSet<(i64, i64)> = votes
        .iter()
        .map(|v| (v.user_id.get(), v.post_id.get()))
        .collect();
    assert_eq!(distinct.len(), people.len() * 4, "votes: {}", votes.len());
    let ready = h.bot.get("/readyz").await.unwrap();
    assert_eq!(ready.0, 200, "{}", ready.1);
    h.finish().await;
}

/// Defect: a press whose vote the broker did not take (down past `amqp.confirm_timeout_ms`)
/// counted as handled and left the inbox, so the vote was lost. It stays kept and is tried again
/// until the broker takes the vote; the person then gets their next post. A bot stopping while
/// it waits leaves it kept for the next bot. Defect: while it waited it held its handling slot,
/// so with the broker away as many people as slots stalled everyone else (one slot here).
#[tokio::test]
async fn a_press_made_while_the_broker_is_down_is_kept_until_its_vote_is_published() {
    let broker = StallingProxy::start(amqp_address()).await;
    let uri = broker.amqp_uri();
    let extra = [
        ("OLEG__AMQP__URI", uri.as_str()),
        ("OLEG__AMQP__CONFIRM_TIMEOUT_MS", "1000"),
        ("OLEG__BOT__MAX_CONCURRENT_UPDATES", "1"),
    ];
    let mut h = Harness::start("bot-broker-down", &extra).await;
    let user = 1101;
    let posts = h.start_people([user].into_iter()).await;
    h.drain_votes(Duration::from_millis(300)).await;

    broker.go_down();
    h.api.press(user, &posts[&user], 0);
    h.wait_postponed(1.0).await;
    assert_eq!(h.kept_updates().await, 1);
    // Another person's /help needs neither broker nor store: answered while the press waits.
    h.api.send_text(1102, "/help");
    h.wait_sent(1102, 1).await;

    broker.resume();
    let vote: Vote = decode(&h.next_published(MessageKind::Vote).await, 1 << 16).unwrap();
    assert_eq!(
        (vote.user_id.get(), vote.post_id.get(), vote.reaction),
        (user, 101, Reaction::Like)
    );
    let next = h.wait_sent(user, 3).await[2].clone();
    h.wait_inbox_handled().await;
    // Tried more than once, counted once.
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("oleg_bot_updates_total{kind=\"callback\"} 1\n"),
        "{metrics}"
    );

    // Down again, and the bot stops while the next press waits for another attempt.
    broker.go_down();
    h.api.press(user, &next, 1);
    h.wait_postponed(2.0).await;
    h.stop_bot().await;
    assert_eq!(h.kept_updates().await, 1);
    broker.resume();
    h.bot = spawn_bot(&h.services, &bot_env(&h.api_url, &extra));
    let vote: Vote = decode(&h.next_published(MessageKind::Vote).await, 1 << 16).unwrap();
    assert_eq!(
        (vote.post_id.get(), vote.reaction),
        (102, Reaction::Dislike)
    );
    h.wait_sent(user, 4).await;
    h.finish().await;
}

/// Defect: a vote the broker took but routed to no queue (none bound to take it, or returned
/// while a queue's leader moved) counted as published: the press left the inbox and the vote was
/// lost. It is tried again until a queue takes it.
#[tokio::test]
async fn a_vote_that_reached_no_queue_is_tried_again_until_one_takes_it() {
    let mut h = Harness::start("bot-vote-no-queue", &[]).await;
    let user = 1201;
    let posts = h.start_people([user].into_iter()).await;
    h.drain_votes(Duration::from_millis(300)).await;
    let queue = h.services.bus.topology().queue(QueueName::Ingest);
    delete_queue(&h.services.amqp, &queue).await;
    h.api.press(user, &posts[&user], 0);
    h.wait_postponed(1.0).await;
    // A bus connecting declares the topology again.
    let redeclaring = oleg_bus::Bus::connect(
        h.services.amqp.clone(),
        "redeclaring",
        &prometheus::Registry::new(),
        oleg_telemetry::Readiness::default(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    redeclaring.close().await;
    h.ingest = Subscription::new(h.services.bus.clone(), Source::Shared(QueueName::Ingest));
    let vote: Vote = decode(&h.next_published(MessageKind::Vote).await, 1 << 16).unwrap();
    assert_eq!((vote.user_id.get(), vote.post_id.get()), (user, 101));
    h.wait_sent(user, 3).await;
    h.finish().await;
}

/// Defect: every message moved the overall next slot to its chat's own next slot, so each
/// vote (two messages to one chat) held up everyone by the per-chat interval.
#[tokio::test]
async fn two_hundred_chats_voting_at_once_keep_the_overall_limit_busy() {
    const LIMIT: f64 = 100.0;
    let people: Vec<i64> = (2001..=2200).collect();
    let h = Harness::start(
        "bot-throughput",
        &[
            ("OLEG__BOT__MESSAGES_PER_SECOND", "100"),
            ("OLEG__BOT__CHAT_INTERVAL_MS", "1000"),
        ],
    )
    .await;
    let posts = h.start_people(people.iter().copied()).await;
    // Let the overall bucket fill up again, then everyone votes at once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pressed = Instant::now();
    for &person in &people {
        h.api.press(person, &posts[&person], 0);
    }
    for &person in &people {
        h.wait_sent(person, 3).await;
    }
    // Messages (edits and posts) sent since the presses, past the bucket's first second's worth.
    let mut times: Vec<Instant> = ["sendmessage", "editmessagereplymarkup"]
        .iter()
        .flat_map(|m| h.api.calls(m))
        .filter(|c| c.at >= pressed)
        .map(|c| c.at)
        .collect();
    times.sort();
    assert_eq!(times.len(), 400);
    // The bucket holds a second's worth: past that, the rate. Sustained: the messages beyond the
    // first second's worth, over the time they took. Never over: at no moment more had gone
    // than a full bucket plus the rate since the presses.
    // The defect ran at about 2 a second; a busy two-core machine costs the bot some of the rate
    // (89 a second in one CI run), so the check leaves it a quarter.
    let took = (times[times.len() - 1] - pressed).as_secs_f64();
    let rate = (times.len() as f64 - LIMIT) / took;
    assert!(
        rate >= 0.75 * LIMIT,
        "{rate:.1} messages a second against a limit of {LIMIT} ({took:.2} s)"
    );
    for (sent, at) in times.iter().enumerate() {
        let allowed = LIMIT + LIMIT * (*at - pressed).as_secs_f64() + 1.0;
        assert!(
            (sent + 1) as f64 <= allowed,
            "{} messages within {:?} of the presses: over the limit",
            sent + 1,
            *at - pressed
        );
    }
    h.finish().await;
}

/// Defect: one person's flood was served in full, and its messages pushed every other chat back.
#[tokio::test]
async fn a_flooding_person_neither_delays_others_nor_uses_up_posts() {
    let flooder = 3000;
    let people: Vec<i64> = (3001..=3030).collect();
    let h = Harness::start(
        "bot-flood",
        &[
            ("OLEG__BOT__MESSAGES_PER_SECOND", "200"),
            ("OLEG__BOT__CHAT_INTERVAL_MS", "300"),
        ],
    )
    .await;
    let mut posts = h.start_people(people.iter().copied()).await;
    h.start_people([flooder].into_iter()).await;
    let flooder_requests = h.ranker.requests_from(flooder);

    // Press → next post, for everyone but the flooder; with the flood when `flood` is set.
    let round = |posts: &HashMap<i64, Call>, round: usize, flood: bool| {
        let (api, people) = (h.api.clone(), people.clone());
        let posts = posts.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            if flood {
                for _ in 0..100 {
                    api.send_text(flooder, "/send_new");
                }
            }
            let mut pressed = HashMap::new();
            for &person in &people {
                pressed.insert(person, Instant::now());
                api.press(person, &posts[&person], 0);
            }
            let mut latencies = Vec::new();
            let mut next = HashMap::new();
            for &person in &people {
                let post = api
                    .next_sent(person, 2 + round, LONG)
                    .await
                    .expect("a next post");
                latencies.push(post.at - pressed[&person]);
                next.insert(person, post);
            }
            (percentile(&mut latencies, 99), next)
        }
    };
    let (quiet_p99, next) = round(&posts, 0, false).await;
    posts = next;
    let (flood_p99, _) = round(&posts, 1, true).await;
    assert!(
        flood_p99 <= quiet_p99 * 2 + Duration::from_millis(300),
        "p99 press → next post: {quiet_p99:?} without the flood, {flood_p99:?} with it"
    );
    // The flooder got the first few answered, one "slow down", and used up few posts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = h.api.sent_to(flooder);
    let slow_downs = sent
        .iter()
        .filter(|c| c.body["text"].as_str().unwrap_or("").contains("faster"))
        .count();
    assert_eq!(slow_downs, 1, "{sent:?}");
    let asked = h.ranker.requests_from(flooder) - flooder_requests;
    assert!(
        (4..=8).contains(&asked),
        "the flood asked the ranker for {asked} posts"
    );
    let metrics = h.metrics().await;
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("oleg_bot_throttled_updates_total{reason=\"rate\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(refused >= 90, "{refused} refused:\n{metrics}");
    h.finish().await;
}

/// Defect: handlers were detached tasks and the polling offset moved past them, so a SIGTERM
/// lost the presses being handled (and a restart never saw them again).
// Two threads: the test waits for the bot's exit on one while the stand-in ranker and the fake
// API answer on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_presses_in_flight_and_a_restart_handles_none_twice() {
    let people: Vec<i64> = (4001..=4050).collect();
    let mut h = Harness::start_with_ranker("bot-sigterm", &[], Duration::from_millis(1500)).await;
    let posts = h.start_people(people.iter().copied()).await;
    h.drain_votes(Duration::from_millis(500)).await;
    let answered_before = h.api.calls("answercallbackquery").len();
    for &person in &people {
        h.api.press(person, &posts[&person], 0);
    }
    // Every press taken (its vote published and the press answered), every next post pending.
    wait_until(
        LONG,
        async || h.api.calls("answercallbackquery").len() >= answered_before + people.len(),
        || h.bot.log_tail(),
    )
    .await;
    assert!(
        h.bot.terminate(),
        "did not stop cleanly:\n{}",
        h.bot.log_tail()
    );
    for &person in &people {
        assert_eq!(
            h.api.sent_to(person).len(),
            3,
            "person {person}: the pending post was not sent before stopping"
        );
    }
    assert_eq!(h.api.unconfirmed(), 0, "handled updates were not confirmed");

    // A new bot finds nothing to redo.
    let env = bot_env(&h.api_url, &[]);
    h.bot = spawn_bot(&h.services, &env);
    h.bot.wait_ready(Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let votes = h.drain_votes(Duration::from_secs(1)).await;
    assert_eq!(
        votes.len(),
        people.len(),
        "every press one vote, none twice"
    );
    for &person in &people {
        assert_eq!(
            h.api.sent_to(person).len(),
            3,
            "person {person}: sent twice"
        );
    }
    h.finish().await;
}

/// Defect: a stopping bot that could not confirm its last updates to Telegram (getUpdates
/// failing) exited with an error, and the next bot was sent them again and handled them twice:
/// each press another post. It starts past every update taken before.
#[tokio::test]
async fn updates_telegram_was_not_told_were_taken_are_not_handled_again_by_the_next_bot() {
    let people: Vec<i64> = (4101..=4105).collect();
    let mut h = Harness::start("bot-unconfirmed", &[]).await;
    let posts = h.start_people(people.iter().copied()).await;
    h.drain_votes(Duration::from_millis(300)).await;
    // The presses come in one poll; every poll after it fails, so none confirms them.
    h.api.fail_updates_after_next();
    for &person in &people {
        h.api.press(person, &posts[&person], 0);
    }
    for &person in &people {
        h.wait_sent(person, 3).await;
    }
    // A bot whose getUpdates fails says so (and its alert pages after 5 minutes).
    h.wait_metric("oleg_bot_receiving 0\n").await;
    let stopped = h.bot.terminate_within(LONG).await;
    assert!(h.api.unconfirmed() >= people.len());
    h.api.heal_updates();

    let env = bot_env(&h.api_url, &[]);
    h.bot = spawn_bot(&h.services, &env);
    h.bot.wait_ready(Duration::from_secs(60)).await;
    wait_until(LONG, async || h.api.unconfirmed() == 0, || h.bot.log_tail()).await;
    h.wait_metric("oleg_bot_receiving 1\n").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.assert_sent_each(&people, 3, "a press handled twice");
    assert_eq!(
        h.drain_votes(Duration::from_secs(1)).await.len(),
        people.len()
    );
    assert_eq!(
        stopped,
        Some(true),
        "the stop failed:\n{}",
        h.bot.log_tail()
    );
    h.finish().await;
}

/// Telegram's side of a bot receiving updates by webhook.
struct Webhook {
    url: String,
    secret: String,
    client: reqwest::Client,
}

impl Webhook {
    /// Starts a bot in webhook mode and waits until it has set its webhook and listens.
    async fn start(test: &str) -> (Harness, Webhook) {
        let listen = format!("127.0.0.1:{}", free_port());
        let h = Harness::start(
            test,
            &[
                ("OLEG__BOT__MODE", "webhook"),
                (
                    "OLEG__BOT__WEBHOOK_URL",
                    "https://bot.example/telegram/hook",
                ),
                ("OLEG__BOT__WEBHOOK_LISTEN", &listen),
                ("OLEG__BOT__WEBHOOK_MAX_BODY_BYTES", "65536"),
            ],
        )
        .await;
        // Ready comes before the webhook is set and its listener bound: wait for both.
        wait_until(
            Duration::from_secs(30),
            async || {
                !h.api.calls("setwebhook").is_empty()
                    && tokio::net::TcpStream::connect(&listen).await.is_ok()
            },
            || h.bot.log_tail(),
        )
        .await;
        let set = h.api.calls("setwebhook");
        let webhook = Webhook {
            url: format!("http://{listen}/telegram/hook"),
            secret: set[0].body["secret_token"].as_str().unwrap().to_owned(),
            client: reqwest::Client::new(),
        };
        (h, webhook)
    }

    /// POSTs `body` with `secret` as Telegram's secret token; returns the status.
    async fn post_with(&self, secret: Option<&str>, body: String) -> u16 {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(secret) = secret {
            request = request.header("x-telegram-bot-api-secret-token", secret);
        }
        request.send().await.unwrap().status().as_u16()
    }

    /// POSTs `update` as Telegram does.
    async fn post(&self, update: &serde_json::Value) -> u16 {
        self.post_with(Some(&self.secret), update.to_string()).await
    }
}

/// An update whose message `text` comes from person `user`.
fn text_update(update_id: u32, user: i64, text: &str) -> serde_json::Value {
    let mut update = json!({"update_id": update_id, "message": oleg_testkit::telegram::message(update_id as i64, user, text, None)});
    update["message"]["from"] = oleg_testkit::telegram::user(user);
    update
}

/// Defect: the webhook parsed the body before checking the secret (so anyone could make it parse
/// anything), compared the secret with `==`, and had no body limit of its own.
#[tokio::test]
async fn the_webhook_checks_its_secret_before_reading_and_caps_the_body() {
    let (h, webhook) = Webhook::start("bot-webhook").await;
    let wrong: String = webhook.secret.chars().rev().collect();
    assert_eq!(webhook.post_with(None, "not json".into()).await, 401);
    assert_eq!(webhook.post_with(Some(&wrong), "{".into()).await, 401);
    assert_eq!(webhook.post_with(Some(&wrong[..4]), "{".into()).await, 401);
    assert_eq!(
        webhook.post(&text_update(1, 77, &"x".repeat(70_000))).await,
        413
    );
    assert_eq!(
        webhook
            .post_with(Some(&webhook.secret), "{\"update_id\": \"x\"}".into())
            .await,
        400
    );
    assert_eq!(webhook.post(&text_update(1, 77, "/start")).await, 200);
    h.wait_sent(77, 2).await;
    h.finish().await;
}

/// Defect: a handled update left the inbox without a trace, so one Telegram sent again — its
/// webhook call's 200 lost on the way — was taken afresh and handled a second time (here a
/// second onboarding and a second post). Its id stays for the day Telegram may resend it.
#[tokio::test]
async fn a_webhook_update_telegram_sends_again_after_it_was_handled_is_handled_once() {
    let (h, webhook) = Webhook::start("bot-webhook-resent").await;
    let start = text_update(1, 78, "/start");
    assert_eq!(webhook.post(&start).await, 200);
    h.wait_sent(78, 2).await;
    h.wait_inbox_handled().await;
    // Sent again, then a /help: a person's updates are handled in order, so had the /start been
    // taken again, its two messages would come before the help.
    assert_eq!(webhook.post(&start).await, 200);
    assert_eq!(webhook.post(&text_update(2, 78, "/help")).await, 200);
    let sent = h.wait_sent(78, 3).await;
    assert!(
        sent[2].body["text"]
            .as_str()
            .unwrap()
            .starts_with("/send_new"),
        "the /start was handled again: {sent:?}"
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("oleg_bot_updates_total{kind=\"command\"} 2\n"),
        "{metrics}"
    );
    h.finish().await;
}

#[test]
fn bad_configuration_fails_fast_naming_the_keys_and_hiding_secrets() {
    let output = std::process::Command::new(BINARY)
        .env("OLEG_CONFIG_DIR", repo_root().join("config"))
        .env("OLEG__BOT__TOKEN", "not-a-token-sekrit")
        .env("OLEG__BOT__CALLBACK_SECRET", "short")
        .env("OLEG__BOT__DIGEST_TIMES", "10:20,25:00")
        .env("OLEG__BOT__TIMEZONE", "Mars/Olympus")
        .env("OLEG__BOT__MAX_CONCURRENT_UPDATES", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for key in [
        "bot.token (OLEG__BOT__TOKEN)",
        "bot.callback_secret (OLEG__BOT__CALLBACK_SECRET)",
        "bot.digest_times[1]",
        "bot.timezone",
        "bot.max_concurrent_updates",
    ] {
        assert!(stderr.contains(key), "{key} not named: {stderr}");
    }
    assert!(
        !stderr.contains("sekrit"),
        "the token was printed: {stderr}"
    );
}
