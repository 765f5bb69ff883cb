//! A fake Telegram Bot API on loopback, for the bot's tests, the demo and the benchmark: people
//! (tests or simulated people) push updates, the bot long-polls `getUpdates` (or receives them by
//! webhook) and calls `sendMessage`, `editMessageReplyMarkup`, `answerCallbackQuery`, … which
//! are recorded and delivered to each chat's inbox.
//!
//! It behaves like Telegram where the bot could tell: update ids grow, `getUpdates` with an
//! `offset` confirms (forgets) every update below it and returns the rest, long polls wait up to
//! their `timeout` (capped at a second here), and answers use Telegram's JSON envelope. A chat
//! can be made to answer `403` (the person blocked the bot) or one `429`, and `getUpdates` to
//! fail with `502` (as Telegram's front does on a bad day).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// One Bot API call the bot made.
#[derive(Debug, Clone)]
pub struct Call {
    /// Lower case (Telegram's method names are case-insensitive; teloxide capitalises them).
    pub method: String,
    pub body: Value,
    pub at: Instant,
}

impl Call {
    /// The chat a call was about.
    pub fn chat(&self) -> Option<i64> {
        self.body["chat_id"].as_i64()
    }

    /// A post's `https://t.me/<channel>/<id>` link (from its link preview), if it is one.
    pub fn post_link(&self) -> Option<&str> {
        self.body["link_preview_options"]["url"].as_str()
    }

    /// The callback data of button `index` of the message's inline keyboard.
    pub fn button_data(&self, index: usize) -> Option<&str> {
        self.body["reply_markup"]["inline_keyboard"][0][index]["callback_data"].as_str()
    }
}

#[derive(Default)]
struct Recorded {
    /// Updates not yet confirmed by an offset.
    updates: Vec<Value>,
    calls: Vec<Call>,
    /// Chats whose person blocked the bot: sendMessage answers 403.
    blocked: HashSet<i64>,
    /// Chats whose next sendMessage answers 429 with retry_after 1.
    throttled: HashSet<i64>,
    /// Messages sent per chat (sendMessage only), in order.
    inboxes: HashMap<i64, Vec<Call>>,
    /// getUpdates answers 502, confirming nothing.
    updates_failing: bool,
    /// The next getUpdates that returns updates sets `updates_failing` after it.
    updates_fail_after_next: bool,
}

/// The fake API; clone it freely (clones share everything).
#[derive(Clone, Default)]
pub struct FakeTelegram {
    state: Arc<Mutex<Recorded>>,
    next_id: Arc<AtomicI64>,
    /// Woken on every new update (long polls) and every call (inbox waiters).
    changed: Arc<Notify>,
}

impl FakeTelegram {
    /// Serves on a free loopback port; returns the API and its base URL (`bot.api_url`).
    pub async fn serve() -> (Self, String) {
        let api = Self::default();
        let app = Router::new()
            .route("/{token}/{method}", post(bot_api))
            .with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("fake Bot API") });
        (api, url)
    }

    fn id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Queues an update of `kind` (`message`, `callback_query`) and returns its id.
    pub fn push_update(&self, kind: &str, payload: Value) -> i64 {
        let id = self.id();
        self.state
            .lock()
            .unwrap()
            .updates
            .push(json!({"update_id": id, kind: payload}));
        self.changed.notify_waiters();
        id
    }

    /// `person` sends `text` (a command gets its entity) in their private chat.
    pub fn send_text(&self, person: i64, text: &str) -> i64 {
        let mut m = message(self.id(), person, text, None);
        m["from"] = user(person);
        if text.starts_with('/') {
            let length = text.split_whitespace().next().unwrap_or(text).len();
            m["entities"] = json!([{"type": "bot_command", "offset": 0, "length": length}]);
        }
        self.push_update("message", m)
    }

    /// `person` presses button `button` (0: 👍, 1: 👎) under `post`, a message the bot sent.
    pub fn press(&self, person: i64, post: &Call, button: usize) -> i64 {
        let data = post.button_data(button).expect("a message with buttons");
        self.press_data(person, post, data)
    }

    /// A press with the given callback data (a forged one, in tests).
    pub fn press_data(&self, person: i64, post: &Call, data: &str) -> i64 {
        let markup = post.body["reply_markup"].clone();
        let query_id = self.id();
        self.push_update(
            "callback_query",
            json!({
                "id": format!("cq{query_id}"), "from": user(person), "chat_instance": "ci",
                "data": data, "message": message(query_id, person, "post", Some(markup)),
            }),
        )
    }

    /// Every call of `method` (lower case).
    pub fn calls(&self, method: &str) -> Vec<Call> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// What was sent to `chat` (sendMessage), in order.
    pub fn sent_to(&self, chat: i64) -> Vec<Call> {
        self.state
            .lock()
            .unwrap()
            .inboxes
            .get(&chat)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `chat` has received more than `seen` messages; returns the first new one.
    pub async fn next_sent(&self, chat: i64, seen: usize, within: Duration) -> Option<Call> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            if let Some(call) = self
                .state
                .lock()
                .unwrap()
                .inboxes
                .get(&chat)
                .and_then(|inbox| inbox.get(seen).cloned())
            {
                return Some(call);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// Updates not yet confirmed by the bot's `getUpdates` offset.
    pub fn unconfirmed(&self) -> usize {
        self.state.lock().unwrap().updates.len()
    }

    pub fn block(&self, chat: i64) {
        self.state.lock().unwrap().blocked.insert(chat);
    }

    pub fn throttle_once(&self, chat: i64) {
        self.state.lock().unwrap().throttled.insert(chat);
    }

    /// The next `getUpdates` that returns updates is the last to succeed: every later one
    /// answers `502` and confirms nothing, until [`heal_updates`](Self::heal_updates).
    pub fn fail_updates_after_next(&self) {
        self.state.lock().unwrap().updates_fail_after_next = true;
    }

    pub fn heal_updates(&self) {
        let mut state = self.state.lock().unwrap();
        state.updates_failing = false;
        state.updates_fail_after_next = false;
    }

    async fn answer(&self, method: String, body: Value) -> Value {
        let chat = body["chat_id"].as_i64().unwrap_or_default();
        let call = Call {
            method: method.clone(),
            body: body.clone(),
            at: Instant::now(),
        };
        {
            let mut state = self.state.lock().unwrap();
            state.calls.push(call.clone());
            if method == "sendmessage" {
                if state.blocked.contains(&chat) {
                    return json!({
                        "ok": false, "error_code": 403,
                        "description": "Forbidden: bot was blocked by the user",
                    });
                }
                if state.throttled.remove(&chat) {
                    return json!({
                        "ok": false, "error_code": 429,
                        "description": "Too Many Requests: retry after 1",
                        "parameters": {"retry_after": 1},
                    });
                }
                state.inboxes.entry(chat).or_default().push(call);
            }
        }
        self.changed.notify_waiters();
        match method.as_str() {
            "getupdates" => self.get_updates(&body).await,
            "sendmessage" | "editmessagereplymarkup" => {
                let text = body["text"].as_str().unwrap_or("post");
                let sent = message(self.id(), chat, text, body.get("reply_markup").cloned());
                json!({"ok": true, "result": sent})
            }
            _ => json!({"ok": true, "result": true}),
        }
    }

    async fn get_updates(&self, body: &Value) -> Value {
        let offset = body["offset"].as_i64().unwrap_or(0);
        let limit = body["limit"].as_u64().unwrap_or(100).clamp(1, 100) as usize;
        let wait = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0).min(1));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            let ready: Vec<Value> = {
                let mut state = self.state.lock().unwrap();
                if state.updates_failing {
                    return json!({"ok": false, "error_code": 502, "description": "Bad Gateway"});
                }
                // An offset confirms every update below it: Telegram forgets them.
                state
                    .updates
                    .retain(|u| u["update_id"].as_i64().unwrap() >= offset);
                let ready: Vec<Value> = state.updates.iter().take(limit).cloned().collect();
                if !ready.is_empty() && state.updates_fail_after_next {
                    state.updates_failing = true;
                }
                ready
            };
            if !ready.is_empty() || tokio::time::timeout_at(deadline, changed).await.is_err() {
                return json!({"ok": true, "result": ready});
            }
        }
    }
}

async fn bot_api(
    State(api): State<FakeTelegram>,
    Path((_token, method)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // teloxide sends JSON, except for methods that may carry a file (setWebhook): multipart.
    let body = match content_type.split_once("boundary=") {
        Some((_, boundary)) => multipart_fields(&body, boundary),
        None => serde_json::from_slice(&body).unwrap_or_default(),
    };
    Json(api.answer(method.to_ascii_lowercase(), body).await)
}

/// The text fields of a `multipart/form-data` body, as a JSON object (values parsed as JSON where
/// they are JSON, as Telegram does).
fn multipart_fields(body: &[u8], boundary: &str) -> Value {
    let text = String::from_utf8_lossy(body);
    let mut fields = serde_json::Map::new();
    for part in text.split(&format!("--{boundary}")) {
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let Some(name) = head
            .split("name=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        let parsed = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
        fields.insert(name.to_owned(), parsed);
    }
    Value::Object(fields)
}

/// A Telegram user (a person, not a bot).
pub fn user(id: i64) -> Value {
    json!({"id": id, "is_bot": false, "first_name": "Person", "language_code": "ru"})
}

/// A message in `chat`, the private chat of the person with that id.
pub fn message(id: i64, chat: i64, text: &str, markup: Option<Value>) -> Value {
    let mut m = json!({
        "message_id": id, "date": 1_764_000_000, "text": text,
        "chat": {"id": chat, "type": "private", "first_name": "Person"},
    });
    if let Some(markup) = markup {
        m["reply_markup"] = markup;
    }
    m
}
