//! `oleg-bot` as a process against a fake Telegram Bot API on loopback (the Bot API's JSON for
//! getUpdates, sendMessage, answerCallbackQuery, editMessageReplyMarkup), the real broker and the
//! Mongo-wire server, with a stand-in ranker answering the recommendation RPC.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use mongodb::bson::doc;
use oleg_bus::{QueueName, Source, Subscription};
use oleg_messages::*;
use oleg_testkit::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_oleg-bot");
const TOKEN: &str = "123456:test-token";
const ADMIN: i64 = 900;

/// One Bot API call the bot made.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    body: Value,
    at: Instant,
}

#[derive(Default)]
struct FakeApi {
    updates: Mutex<Vec<Value>>,
    next_id: AtomicI64,
    calls: Mutex<Vec<Call>>,
    /// Chats whose person blocked the bot: sendMessage answers 403.
    blocked: Mutex<HashSet<i64>>,
    /// Chats whose next sendMessage answers 429 with retry_after 1.
    throttled: Mutex<HashSet<i64>>,
}

impl FakeApi {
    fn push_update(&self, kind: &str, payload: Value) {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        self.updates
            .lock()
            .unwrap()
            .push(json!({"update_id": id, kind: payload}));
    }

    fn calls(&self, method: &str) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    fn sent_to(&self, chat: i64) -> Vec<Call> {
        self.calls("sendmessage")
            .into_iter()
            .filter(|c| c.body["chat_id"] == json!(chat))
            .collect()
    }
}

fn person(id: i64) -> Value {
    json!({"id": id, "is_bot": false, "first_name": "Person", "language_code": "ru"})
}

fn private_chat(id: i64) -> Value {
    json!({"id": id, "type": "private", "first_name": "Person"})
}

fn message(id: i64, chat: i64, text: &str, markup: Option<Value>) -> Value {
    let mut m = json!({
        "message_id": id, "date": 1_764_000_000, "chat": private_chat(chat), "text": text,
    });
    if let Some(markup) = markup {
        m["reply_markup"] = markup;
    }
    m
}

async fn bot_api(
    State(api): State<Arc<FakeApi>>,
    Path((_token, method)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Json<Value> {
    // Telegram's method names are case-insensitive; teloxide capitalises them.
    let method = method.to_ascii_lowercase();
    api.calls.lock().unwrap().push(Call {
        method: method.clone(),
        body: body.clone(),
        at: Instant::now(),
    });
    let chat = body["chat_id"].as_i64().unwrap_or_default();
    let answer = match method.as_str() {
        "getupdates" => {
            let offset = body["offset"].as_i64().unwrap_or(0);
            let deadline = Instant::now() + Duration::from_millis(500);
            loop {
                let ready: Vec<Value> = api
                    .updates
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|u| u["update_id"].as_i64().unwrap() >= offset)
                    .cloned()
                    .collect();
                if !ready.is_empty() || Instant::now() > deadline {
                    break json!({"ok": true, "result": ready});
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        "sendmessage" if api.blocked.lock().unwrap().contains(&chat) => json!({
            "ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user",
        }),
        "sendmessage" if api.throttled.lock().unwrap().remove(&chat) => json!({
            "ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1",
            "parameters": {"retry_after": 1},
        }),
        "sendmessage" | "editmessagereplymarkup" => {
            let id = api.next_id.fetch_add(1, Ordering::SeqCst) + 1000;
            let text = body["text"].as_str().unwrap_or("post");
            json!({"ok": true, "result": message(id, chat, text, body.get("reply_markup").cloned())})
        }
        _ => json!({"ok": true, "result": true}),
    };
    Json(answer)
}

struct Harness {
    services: TestServices,
    api: Arc<FakeApi>,
    bot: WorkerProcess,
    /// What the bot published for ingest.
    ingest: Subscription,
}

impl Harness {
    async fn start(test: &str, digest_time: &str) -> Self {
        let services = TestServices::start(test, mongo_settings(test)).await;
        let api = Arc::new(FakeApi::default());
        let app = Router::new()
            .route("/{token}/{method}", post(bot_api))
            .with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        serve_recommendations(&services);
        // Bind the ingest queue's consumer before the bot publishes anything.
        let mut ingest = Subscription::new(services.bus.clone(), Source::Shared(QueueName::Ingest));
        let _ = tokio::time::timeout(Duration::from_millis(200), ingest.next()).await;
        let admin = ADMIN.to_string();
        let bot = services.spawn(
            BINARY,
            "OLEG__BOT__METRICS_ADDR",
            "bot.log",
            &[
                ("OLEG__BOT__TOKEN", TOKEN),
                ("OLEG__BOT__API_URL", &api_url),
                ("OLEG__BOT__CALLBACK_SECRET", "a callback secret for tests"),
                ("OLEG__BOT__ADMIN_IDS", &admin),
                ("OLEG__BOT__DIGEST_TIMES", digest_time),
                ("OLEG__BOT__TIMEZONE", "UTC"),
                ("OLEG__BOT__POLL_TIMEOUT_S", "1"),
                ("OLEG__BOT__CHAT_INTERVAL_MS", "100"),
            ],
        );
        bot.wait_ready(Duration::from_secs(60)).await;
        Self {
            services,
            api,
            bot,
            ingest,
        }
    }

    /// Waits until `chat` has received `count` messages; returns them.
    async fn wait_sent(&self, chat: i64, count: usize) -> Vec<Call> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let sent = self.api.sent_to(chat);
            if sent.len() >= count {
                return sent;
            }
            assert!(
                Instant::now() < deadline,
                "chat {chat} got {} of {count} messages: {sent:?}\nbot log:\n{}",
                sent.len(),
                self.bot.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The next message the bot published on the ingest queue, checked against its schema.
    async fn next_published(&mut self, kind: MessageKind) -> Vec<u8> {
        let incoming = tokio::time::timeout(Duration::from_secs(20), self.ingest.next())
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
        let body = incoming.body.clone();
        incoming.ack().await.unwrap();
        body
    }

    fn start_command(&self, user: i64) {
        let mut m = message(1, user, "/start", None);
        m["from"] = person(user);
        m["entities"] = json!([{"type": "bot_command", "offset": 0, "length": 6}]);
        self.api.push_update("message", m);
    }

    fn press(&self, user: i64, post_message: &Call, button: usize, data: Option<&str>) {
        let markup = post_message.body["reply_markup"].clone();
        let data = data.map(str::to_owned).unwrap_or_else(|| {
            markup["inline_keyboard"][0][button]["callback_data"]
                .as_str()
                .unwrap()
                .to_owned()
        });
        let id = self.api.next_id.fetch_add(1, Ordering::SeqCst);
        self.api.push_update(
            "callback_query",
            json!({
                "id": format!("cq{id}"), "from": person(user), "chat_instance": "ci", "data": data,
                "message": message(77, user, "post", Some(markup)),
            }),
        );
    }

    async fn metrics(&self) -> String {
        self.bot.get("/metrics").await.unwrap().1
    }

    async fn finish(self) {
        drop(self.bot);
        self.services.finish().await;
    }
}

/// Answers recommendation requests like the ranker: each person gets `campcode/101`, `/102`, …
/// in turn, never one twice.
fn serve_recommendations(services: &TestServices) {
    let bus = services.bus.clone();
    tokio::spawn(async move {
        let mut requests = Subscription::new(bus.clone(), Source::Shared(QueueName::Recommend));
        let mut served: HashMap<i64, i64> = HashMap::new();
        while let Some(incoming) = requests.next().await {
            let request: RecommendRequest = decode(&incoming.body, 1 << 16).unwrap();
            let n = served.entry(request.user_id.get()).or_default();
            *n += 1;
            let reply = RecommendReply::Ok {
                schema_version: SCHEMA_VERSION,
                user_id: request.user_id,
                posts: vec![RecommendedPost {
                    channel: ChannelName::parse("campcode").unwrap(),
                    post_id: PostId::new(100 + *n).unwrap(),
                    score: 0.9,
                    explored: false,
                    text: Some(format!("Post {n} with <tags> & ampersands")),
                }],
                model_version: Some(3),
                cold_start: false,
                exploration_noise: 0.05,
            };
            let (to, id) = (
                incoming.reply_to().unwrap(),
                incoming.correlation_id().unwrap(),
            );
            bus.reply(&to, &id, &reply).await.unwrap();
            incoming.ack().await.unwrap();
        }
    });
}

#[tokio::test]
async fn start_vote_change_and_forged_presses() {
    let mut h = Harness::start("bot-votes", "03:00").await;
    let user = 501;

    // /start: a user-started message, onboarding, then a post with its source and buttons.
    h.start_command(user);
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
    assert_eq!(
        post.body["link_preview_options"]["url"],
        "https://t.me/campcode/101"
    );
    let buttons = &post.body["reply_markup"]["inline_keyboard"][0];
    assert_eq!(
        (buttons[0]["text"].as_str(), buttons[1]["text"].as_str()),
        (Some("👍"), Some("👎"))
    );
    for b in buttons.as_array().unwrap() {
        assert!(b["callback_data"].as_str().unwrap().len() <= 64);
    }

    // 👍: a valid vote, the press answered, the button marked, the next post sent.
    h.press(user, post, 0, None);
    let vote: Vote = decode(&h.next_published(MessageKind::Vote).await, 1 << 16).unwrap();
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
    let marked = Call {
        body: json!({"reply_markup": edits[0].body["reply_markup"].clone()}),
        ..edits[0].clone()
    };
    h.press(user, &marked, 1, None);
    let changed: Vote = decode(&h.next_published(MessageKind::Vote).await, 1 << 16).unwrap();
    assert_eq!(
        (changed.post_id.get(), changed.reaction),
        (101, Reaction::Dislike)
    );
    assert!(changed.voted_at > vote.voted_at);

    // A forged press (the signature of another secret) is refused and counted; no vote.
    let forged = sent[2].body["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        .as_str()
        .unwrap()
        .rsplit_once('|')
        .map(|(body, _)| format!("{body}|AAAAAAAAAAA"))
        .unwrap();
    h.press(user, &sent[2], 0, Some(&forged));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h
        .metrics()
        .await
        .contains("oleg_bot_callback_refusals_total{reason=\"forged\"} 1")
    {
        assert!(
            Instant::now() < deadline,
            "refusal not counted:\n{}",
            h.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(800), h.ingest.next())
            .await
            .is_err(),
        "a forged press published a vote"
    );
    let metrics = h.metrics().await;
    for wanted in [
        "oleg_bot_updates_total{kind=\"command\"} 1",
        "oleg_bot_messages_sent_total{kind=\"post\"} 2",
        "oleg_bot_send_seconds_count",
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(wanted), "{wanted} missing:\n{metrics}");
    }
    h.finish().await;
}

#[tokio::test]
async fn digests_reach_every_active_person_once_retrying_429_and_dropping_403() {
    // The digest goes out a few seconds after the people have started.
    let at = (chrono::Utc::now() + chrono::Duration::seconds(12))
        .format("%H:%M:%S")
        .to_string();
    let mut h = Harness::start("bot-digest", &at).await;
    let (steady, throttled, blocked, paused) = (601, 602, 603, 604);
    for user in [steady, throttled, blocked, paused] {
        h.start_command(user);
        h.next_published(MessageKind::UserStarted).await;
        h.wait_sent(user, 2).await;
    }
    let mut stop = message(2, paused, "/stop", None);
    stop["from"] = person(paused);
    h.api.push_update("message", stop);
    h.wait_sent(paused, 3).await;
    h.api.throttled.lock().unwrap().insert(throttled);
    h.api.blocked.lock().unwrap().insert(blocked);

    // One digest post each to the active, unpaused people; the 429 retried after a second.
    let steady_sent = h.wait_sent(steady, 3).await;
    assert!(steady_sent[2].body["text"]
        .as_str()
        .unwrap()
        .contains("campcode/102"));
    let throttled_sent = h.wait_sent(throttled, 4).await;
    assert!(
        throttled_sent[3].at - throttled_sent[2].at >= Duration::from_secs(1),
        "the retry came before retry_after"
    );
    assert_eq!(
        throttled_sent[3].body["text"],
        throttled_sent[2].body["text"]
    );

    // The person who blocked the bot is marked inactive; nothing went to the paused one.
    let chats = h
        .services
        .store
        .database()
        .collection::<mongodb::bson::Document>("bot_chats");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let record = chats
            .find_one(doc! {"_id": blocked})
            .await
            .unwrap()
            .unwrap();
        if record.get_str("status") == Ok("blocked") {
            break;
        }
        assert!(Instant::now() < deadline, "not marked inactive: {record}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        h.api.sent_to(paused).len(),
        3,
        "a paused person got a digest"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.api.sent_to(steady).len(), 3, "a digest went out twice");
    let metrics = h.metrics().await;
    for wanted in [
        "oleg_bot_api_errors_total{code=\"429\"} 1",
        "oleg_bot_api_errors_total{code=\"403\"} 1",
        "oleg_bot_messages_sent_total{kind=\"digest\"} 2",
    ] {
        assert!(metrics.contains(wanted), "{wanted} missing:\n{metrics}");
    }
    h.finish().await;
}

#[tokio::test]
async fn admins_add_channels_and_see_status_others_cannot() {
    let h = Harness::start("bot-admin", "03:00").await;
    let mut scraper = Subscription::new(h.services.bus.clone(), Source::Shared(QueueName::Scraper));
    let _ = tokio::time::timeout(Duration::from_millis(200), scraper.next()).await;
    for (user, text) in [
        (ADMIN, "/add_channel durov"),
        (ADMIN, "/status"),
        (42, "/add_channel durov"),
    ] {
        let mut m = message(3, user, text, None);
        m["from"] = person(user);
        h.api.push_update("message", m);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let incoming = tokio::time::timeout(Duration::from_secs(20), scraper.next())
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

#[test]
fn bad_configuration_fails_fast_naming_the_keys_and_hiding_secrets() {
    let output = std::process::Command::new(BINARY)
        .env("OLEG_CONFIG_DIR", repo_root().join("config"))
        .env("OLEG__BOT__TOKEN", "not-a-token-sekrit")
        .env("OLEG__BOT__CALLBACK_SECRET", "short")
        .env("OLEG__BOT__DIGEST_TIMES", "10:20,25:00")
        .env("OLEG__BOT__TIMEZONE", "Mars/Olympus")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for key in [
        "bot.token (OLEG__BOT__TOKEN)",
        "bot.callback_secret (OLEG__BOT__CALLBACK_SECRET)",
        "bot.digest_times[1]",
        "bot.timezone",
    ] {
        assert!(stderr.contains(key), "{key} not named: {stderr}");
    }
    assert!(
        !stderr.contains("sekrit"),
        "the token was printed: {stderr}"
    );
}
