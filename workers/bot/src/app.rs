//! What the bot does with each update, and the digests. Everything it learns or asks goes
//! through OLEG's queues: user starts and votes to ingest, "what next?" to the ranker over RPC,
//! channels to follow to the scraper.

use crate::callback::{Refusal, Signer};
use crate::chats::{Chats, Recipient};
use crate::command::Command;
use crate::metrics::BotMetrics;
use crate::render::{post_html, preview, shows_a_vote, vote_buttons};
use crate::settings::BotSettings;
use crate::stopwatch::{measured, waiting};
use crate::telegram::{send, RateLimits, SendError};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use oleg_bus::{Bus, BusError, QueueName, Routed, RpcClient};
use oleg_messages::{
    decode, AddChannel, FieldError, Message as BusMessage, PostRef, Reaction, RecommendReply,
    RecommendRequest, UserId, UserStarted, Vote, SCHEMA_VERSION,
};
use oleg_store::StoreError;
use secrecy::ExposeSecret;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use teloxide_core::payloads::setters::*;
use teloxide_core::requests::Requester;
use teloxide_core::types::{
    CallbackQuery, ChatId, MaybeInaccessibleMessage, Message, ParseMode, Update, UpdateKind,
};
use teloxide_core::Bot;
use tokio_util::sync::CancellationToken;

const ONBOARDING: &str = "Hi! I am OLEG. I read public Telegram channels and send you one post \
at a time. Press 👍 or 👎 under each post: I learn from your votes and pick the next post you are \
most likely to like. You also get your best new post four times a day.\n\n/send_new — a post now\n\
/stop — pause the daily posts\n/help — this message";

const HELP: &str = "/send_new — a post now\n/stop — pause the daily posts (/start resumes them)\n\
/help — this message\n\nVote with 👍 / 👎 under a post; you can change your vote later.";

const SLOW_DOWN: &str = "You are going faster than I can keep up with. Your votes are kept; \
give me a few seconds before the next post.";

/// How much of an update is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    Full,
    /// The person is over their allowance ([`crate::flood`]): a press still records its vote,
    /// but nothing is sent or asked of the ranker; `warn` sends the one "slow down" reply.
    Limited {
        warn: bool,
    },
}

/// What became of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Done, or failed in a way another attempt would not mend: it leaves the inbox.
    Finished,
    /// What it asked to record (a vote, a start, a pause, a channel to follow) did not reach the
    /// broker or the store, which are away: it stays kept and is tried again.
    Postponed,
}

/// Why handling an update stopped short.
#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error("the broker did not take it: {0}")]
    Bus(#[from] BusError),
    #[error("the store did not take it: {0}")]
    Store(#[from] StoreError),
    #[error("not from a person: {0}")]
    NotAPerson(#[from] FieldError),
}

impl HandleError {
    /// Whether another attempt may succeed: the broker or the store was away.
    fn is_transient(&self) -> bool {
        match self {
            HandleError::Bus(error) => error.is_transient(),
            HandleError::Store(error) => error.is_transient(),
            HandleError::NotAPerson(_) => false,
        }
    }
}

/// Why a post was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occasion {
    /// The person asked (start, vote, /send_new): say so when there is nothing.
    Asked,
    /// A scheduled digest: stay silent when there is nothing.
    Digest,
}

/// What a digest run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DigestSummary {
    pub sent: u32,
    pub already_sent: u32,
    pub nothing_new: u32,
    pub blocked: u32,
    /// Telegram did not take the post, or the ranker gave none and the claim could not be
    /// taken back: that person goes without this digest.
    pub failed: u32,
    /// Not sent and not claimed (the ranker gave no post, or the claim did not reach the
    /// store): a later run tries again, within `bot.digest_catch_up_s` of the digest's time.
    pub postponed: u32,
    /// Not reached before the bot stopped: the next bot sends them theirs
    /// (`bot.digest_catch_up_s`).
    pub left: u32,
}

impl DigestSummary {
    /// Each count with its outcome's name (the label of `oleg_bot_digest_people_total`).
    pub fn by_outcome(&self) -> [(&'static str, u32); 7] {
        [
            ("sent", self.sent),
            ("already_sent", self.already_sent),
            ("nothing_new", self.nothing_new),
            ("blocked", self.blocked),
            ("failed", self.failed),
            ("postponed", self.postponed),
            ("left", self.left),
        ]
    }
}

enum Outcome {
    Sent,
    NothingNew,
    Blocked,
    /// Telegram did not take the post.
    Failed,
    /// The ranker gave no post (no answer, or a refusal): nothing was sent.
    NoAnswer,
}

/// What became of one person's digest.
enum DigestResult {
    AlreadySent,
    /// Not sent, and not claimed (any more): a later run sends it.
    Postponed,
    Ended(Outcome),
}

pub struct BotApp {
    bot: Bot,
    bus: Bus,
    rpc: RpcClient,
    chats: Chats,
    signer: Signer,
    limits: RateLimits,
    settings: BotSettings,
    metrics: BotMetrics,
    /// The model version of the last recommendation (for /status).
    model_version: AtomicU64,
}

impl BotApp {
    pub async fn new(
        bot: Bot,
        bus: Bus,
        chats: Chats,
        settings: BotSettings,
        metrics: BotMetrics,
    ) -> anyhow::Result<Self> {
        let rpc = RpcClient::new(&bus).await?;
        Ok(Self {
            signer: Signer::new(
                settings.callback_secret.expose_secret().as_bytes(),
                settings.callback_ttl_days,
            ),
            limits: RateLimits::new(
                settings.messages_per_second,
                Duration::from_millis(settings.chat_interval_ms),
                metrics.pending_sends.clone(),
            ),
            bot,
            bus,
            rpc,
            chats,
            settings,
            metrics,
            model_version: AtomicU64::new(0),
        })
    }

    pub fn bot(&self) -> &Bot {
        &self.bot
    }

    pub fn metrics(&self) -> &BotMetrics {
        &self.metrics
    }

    /// Counts an update taken, once however often it is tried: a command (a person's text), a
    /// callback (a button press) or other (edits, channel posts, photos, …).
    pub fn count(&self, update: &Update) {
        let kind = match &update.kind {
            UpdateKind::Message(message) if message.text().is_some() && message.from.is_some() => {
                "command"
            }
            UpdateKind::CallbackQuery(_) => "callback",
            _ => "other",
        };
        self.metrics.updates.with_label_values(&[kind]).inc();
    }

    /// Handles one update; records how long it took, and how much of that was the bot's own
    /// work rather than waiting for Telegram, the broker, the store or the ranker.
    pub async fn handle(&self, update: &Update, handling: Handling) -> Handled {
        let started = std::time::Instant::now();
        let (result, waited) = measured(async {
            match (&update.kind, handling) {
                (UpdateKind::Message(message), Handling::Full) => self.on_message(message).await,
                (UpdateKind::CallbackQuery(query), _) => self.on_callback(query, handling).await,
                (UpdateKind::Message(message), Handling::Limited { warn }) => {
                    if warn {
                        self.notice(message.chat.id, SLOW_DOWN, "notice").await;
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        })
        .await;
        let took = started.elapsed();
        tracing::info!(
            took_ms = took.as_millis() as u64,
            ?handling,
            "update handled"
        );
        self.metrics.handle_seconds.observe(took.as_secs_f64());
        self.metrics
            .own_work_seconds
            .observe(took.saturating_sub(waited).as_secs_f64());
        match result {
            Ok(()) => Handled::Finished,
            Err(error) if error.is_transient() => {
                self.metrics.postponed.inc();
                tracing::warn!(%error, update = update.id.0, "could not record an update; kept to be tried again");
                Handled::Postponed
            }
            Err(error) => {
                tracing::error!(%error, update = update.id.0, "handling an update failed");
                Handled::Finished
            }
        }
    }

    async fn on_message(&self, message: &Message) -> Result<(), HandleError> {
        let (Some(text), Some(from)) = (message.text(), message.from.as_ref()) else {
            return Ok(());
        };
        let chat = message.chat.id;
        let user = UserId::new(from.id.0 as i64)?;
        let is_admin = self.settings.admin_ids.contains(&user.get());
        match Command::parse(text, is_admin) {
            Command::Start => {
                waiting(
                    self.chats
                        .started(user.get(), chat.0, Utc::now().timestamp_millis()),
                )
                .await
                .map_err(StoreError::from)?;
                let mut started = UserStarted::new(user, Utc::now());
                started.language_code = from.language_code.clone();
                self.record(&started).await?;
                self.notice(chat, ONBOARDING, "onboarding").await;
                self.send_next(user, chat, Occasion::Asked).await;
            }
            Command::SendNew => {
                self.send_next(user, chat, Occasion::Asked).await;
            }
            Command::Stop => {
                waiting(self.chats.pause(user.get()))
                    .await
                    .map_err(StoreError::from)?;
                self.notice(
                    chat,
                    "Daily posts paused. /start resumes them; /send_new still sends a post.",
                    "notice",
                )
                .await;
            }
            Command::AddChannel(channel) => {
                self.record(&AddChannel {
                    schema_version: SCHEMA_VERSION,
                    channel: channel.clone(),
                    requested_by: Some(user),
                    requested_at: Utc::now(),
                })
                .await?;
                let reply = format!("Asked the scraper to follow @{channel}.");
                self.notice(chat, &reply, "notice").await;
            }
            Command::AddChannelUsage(reply) => self.notice(chat, &reply, "notice").await,
            Command::Status => {
                let status = self.status().await;
                self.notice(chat, &status, "notice").await;
            }
            Command::AdminOnly => {
                self.notice(chat, "This command is for admins.", "notice")
                    .await;
            }
            Command::Help => self.notice(chat, HELP, "notice").await,
        }
        Ok(())
    }

    async fn on_callback(
        &self,
        query: &CallbackQuery,
        handling: Handling,
    ) -> Result<(), HandleError> {
        let user = UserId::new(query.from.id.0 as i64)?;
        let today = Utc::now().timestamp().div_euclid(86_400);
        let press = query
            .data
            .as_deref()
            .ok_or(Refusal::Malformed)
            .and_then(|data| self.signer.verify(user, data, today));
        let press = match press {
            Ok(press) => press,
            Err(refusal) => {
                tracing::warn!(
                    user = user.get(),
                    reason = refusal.as_str(),
                    "button press refused"
                );
                self.metrics
                    .callback_refusals
                    .with_label_values(&[refusal.as_str()])
                    .inc();
                let _ = waiting(
                    self.bot
                        .answer_callback_query(query.id.clone())
                        .text("This button is not valid any more.")
                        .into_future(),
                )
                .await;
                return Ok(());
            }
        };
        let vote = Vote::new(user, press.post.clone(), press.reaction, Utc::now());
        self.record(&vote).await?;
        let answer = match press.reaction {
            Reaction::Like => "Noted: 👍",
            Reaction::Dislike => "Noted: 👎",
        };
        let _ = waiting(
            self.bot
                .answer_callback_query(query.id.clone())
                .text(answer)
                .into_future(),
        )
        .await;
        let Some(MaybeInaccessibleMessage::Regular(message)) = &query.message else {
            return Ok(());
        };
        if let Handling::Limited { warn } = handling {
            if warn {
                self.notice(message.chat.id, SLOW_DOWN, "notice").await;
            }
            return Ok(());
        }
        let first_vote = !shows_a_vote(message.reply_markup());
        let buttons = self.buttons(user, &press.post, Some(press.reaction), today);
        let (chat, id) = (message.chat.id, message.id);
        let edited = self
            .telegram(chat, || {
                self.bot
                    .edit_message_reply_markup(chat, id)
                    .reply_markup(buttons.clone())
                    .into_future()
            })
            .await;
        if let Err(error) = edited {
            tracing::warn!(%error, "could not mark the chosen button");
        }
        // A changed vote on an older post does not ask for another post.
        if first_vote {
            self.send_next(user, chat, Occasion::Asked).await;
        }
        Ok(())
    }

    /// Publishes what an update asks to record. One that reached no queue (none bound to take
    /// it, or the broker returned it) is not recorded: an error, so the update is tried again.
    async fn record<M: BusMessage>(&self, message: &M) -> Result<(), HandleError> {
        match waiting(self.bus.publish(message)).await? {
            Routed::Queued => Ok(()),
            Routed::NoQueue => Err(HandleError::Bus(BusError::NoQueue(format!(
                "for {}",
                M::KIND.name()
            )))),
        }
    }

    /// One Bot API call to `chat`, within the rate limits, retried on `429`.
    async fn telegram<T, F, Fut>(&self, chat: ChatId, call: F) -> Result<T, SendError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, teloxide_core::RequestError>>,
    {
        waiting(send(
            &self.limits,
            &self.metrics,
            self.settings.max_send_attempts,
            chat,
            call,
        ))
        .await
    }

    fn buttons(
        &self,
        user: UserId,
        post: &PostRef,
        chosen: Option<Reaction>,
        day: i64,
    ) -> teloxide_core::types::InlineKeyboardMarkup {
        vote_buttons(
            self.signer.sign(user, post, Reaction::Like, day),
            self.signer.sign(user, post, Reaction::Dislike, day),
            chosen,
        )
    }

    /// Asks the ranker for the person's next post and sends it.
    async fn send_next(&self, user: UserId, chat: ChatId, occasion: Occasion) -> Outcome {
        let timeout = Duration::from_millis(self.settings.rpc_timeout_ms);
        let reply = match waiting(self.rpc.call(
            QueueName::Recommend,
            &RecommendRequest::new(user, 1),
            timeout,
        ))
        .await
        {
            Ok(body) => decode::<RecommendReply>(&body, 1 << 20).map_err(|r| r.detail),
            Err(error) => Err(error.to_string()),
        };
        let post = match reply {
            Ok(RecommendReply::Ok {
                mut posts,
                model_version,
                ..
            }) => {
                if let Some(version) = model_version {
                    self.model_version.store(version.get(), Ordering::Relaxed);
                }
                if posts.is_empty() {
                    None
                } else {
                    Some(posts.swap_remove(0))
                }
            }
            Ok(RecommendReply::Error { error, .. }) => {
                tracing::warn!(code = ?error.code, message = %error.message, "the ranker refused");
                return self.apologise(chat, occasion).await;
            }
            Err(problem) => {
                tracing::warn!(%problem, "no answer from the ranker");
                return self.apologise(chat, occasion).await;
            }
        };
        let Some(post) = post else {
            if occasion == Occasion::Asked {
                self.notice(
                    chat,
                    "Nothing new for you right now. I will send more when the channels post.",
                    "notice",
                )
                .await;
            }
            return Outcome::NothingNew;
        };
        let reference = PostRef {
            channel: post.channel,
            post_id: post.post_id,
        };
        let html = post_html(
            &reference,
            post.text.as_deref().unwrap_or_default(),
            self.settings.max_text_chars,
        );
        let today = Utc::now().timestamp().div_euclid(86_400);
        let buttons = self.buttons(user, &reference, None, today);
        let sent = self
            .telegram(chat, || {
                self.bot
                    .send_message(chat, html.clone())
                    .parse_mode(ParseMode::Html)
                    .link_preview_options(preview(&reference))
                    .reply_markup(buttons.clone())
                    .into_future()
            })
            .await;
        let kind = match occasion {
            Occasion::Asked => "post",
            Occasion::Digest => "digest",
        };
        self.outcome(user, sent.map(|_| ()), kind).await
    }

    async fn apologise(&self, chat: ChatId, occasion: Occasion) -> Outcome {
        if occasion == Occasion::Asked {
            self.notice(
                chat,
                "I cannot pick a post right now. Please try /send_new in a minute.",
                "notice",
            )
            .await;
        }
        Outcome::NoAnswer
    }

    async fn notice(&self, chat: ChatId, text: &str, kind: &'static str) {
        let sent = self
            .telegram(chat, || self.bot.send_message(chat, text).into_future())
            .await;
        // Chat ids of private chats are the people's ids.
        if let Ok(user) = UserId::new(chat.0) {
            self.outcome(user, sent.map(|_| ()), kind).await;
        }
    }

    async fn outcome(
        &self,
        user: UserId,
        sent: Result<(), SendError>,
        kind: &'static str,
    ) -> Outcome {
        match sent {
            Ok(()) => {
                self.metrics.sent.with_label_values(&[kind]).inc();
                Outcome::Sent
            }
            Err(SendError::Blocked) => {
                tracing::info!(
                    user = user.get(),
                    "the person blocked the bot; marked inactive"
                );
                if let Err(error) = waiting(self.chats.block(user.get())).await {
                    tracing::warn!(%error, "could not mark the person inactive");
                }
                Outcome::Blocked
            }
            Err(error) => {
                tracing::warn!(%error, user = user.get(), kind, "could not send");
                Outcome::Failed
            }
        }
    }

    /// Sends the digest due at `slot` to every active person who has not had it, until
    /// `shutdown`: the sends under way then finish, and nobody else is claimed.
    pub async fn run_digest(
        &self,
        slot: DateTime<Utc>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<DigestSummary> {
        let slot_s = slot.timestamp();
        let recipients = self.chats.digest_recipients(slot_s).await?;
        let total = recipients.len();
        let outcomes: Vec<DigestResult> = futures::stream::iter(recipients)
            .take_until(shutdown.cancelled())
            .map(|Recipient { user_id, chat_id }| async move {
                match self.chats.claim_digest(user_id, slot_s).await {
                    Ok(true) => {}
                    Ok(false) => return DigestResult::AlreadySent,
                    Err(error) => {
                        tracing::warn!(%error, user_id, "could not claim the digest; tried again later");
                        return DigestResult::Postponed;
                    }
                }
                let Ok(user) = UserId::new(user_id) else {
                    return DigestResult::Ended(Outcome::Failed);
                };
                match self.send_next(user, ChatId(chat_id), Occasion::Digest).await {
                    // Nothing was sent (and the ranker recorded nothing it answered): the claim is
                    // released so that a later run sends the digest.
                    Outcome::NoAnswer => match self.chats.release_digest(user_id, slot_s).await {
                        Ok(()) => DigestResult::Postponed,
                        Err(error) => {
                            tracing::warn!(%error, user_id, "could not release a digest the ranker gave no post for");
                            DigestResult::Ended(Outcome::NoAnswer)
                        }
                    },
                    outcome => DigestResult::Ended(outcome),
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let mut summary = DigestSummary {
            left: (total - outcomes.len()) as u32,
            ..DigestSummary::default()
        };
        for outcome in outcomes {
            match outcome {
                DigestResult::AlreadySent => summary.already_sent += 1,
                DigestResult::Postponed => summary.postponed += 1,
                DigestResult::Ended(Outcome::Sent) => summary.sent += 1,
                DigestResult::Ended(Outcome::NothingNew) => summary.nothing_new += 1,
                DigestResult::Ended(Outcome::Blocked) => summary.blocked += 1,
                DigestResult::Ended(Outcome::Failed | Outcome::NoAnswer) => summary.failed += 1,
            }
        }
        for (outcome, people) in summary.by_outcome() {
            self.metrics
                .digest_people
                .with_label_values(&[outcome])
                .inc_by(u64::from(people));
        }
        tracing::info!(%slot, ?summary, "digest sent");
        Ok(summary)
    }

    /// Queue depths and the model version, for admins.
    async fn status(&self) -> String {
        let mut lines = vec!["OLEG status".to_owned()];
        for queue in QueueName::ALL {
            let depth = match self.bus.queue_depth(queue).await {
                Ok(n) => n.to_string(),
                Err(error) => format!("unknown ({error})"),
            };
            lines.push(format!(
                "{}: {depth} waiting",
                self.bus.topology().queue(queue)
            ));
        }
        let version = self.model_version.load(Ordering::Relaxed);
        lines.push(if version == 0 {
            "model: none seen yet".to_owned()
        } else {
            format!("model: version {version} (as of the last recommendation)")
        });
        lines.join("\n")
    }

    pub fn settings(&self) -> &BotSettings {
        &self.settings
    }
}
