//! Sending to Telegram within its limits: about 30 messages a second overall and one a second
//! per chat (both configurable), a `429` retried after the `retry_after` Telegram gives, and a
//! person who blocked the bot (`403`) reported as such instead of retried.

use crate::metrics::BotMetrics;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use teloxide_core::errors::{ApiError, RequestError};
use teloxide_core::types::ChatId;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The person blocked the bot, deleted their account, or the chat is gone.
    #[error("the chat is gone or blocked the bot")]
    Blocked,
    #[error("the Bot API refused: {0}")]
    Failed(RequestError),
}

/// Telegram's limits on what the bot sends: about 30 messages a second overall and one a second
/// per chat. A message first waits for its chat's own next slot — which delays nobody else — and
/// then takes a token from the overall bucket (refilled at `messages_per_second`, holding a
/// second's worth), so a busy chat never holds up the others.
pub struct RateLimits {
    overall: Mutex<Bucket>,
    chats: Mutex<HashMap<i64, Instant>>,
    chat_interval: Duration,
    /// Sends waiting for a slot.
    waiting: prometheus::IntGauge,
}

/// A token bucket kept as the time its next token is due (the generic cell rate algorithm): a
/// caller reserves a slot at once and sleeps until it.
struct Bucket {
    next_due: Instant,
    interval: Duration,
    /// How far ahead of now tokens may be taken: a full bucket's worth.
    burst: Duration,
}

impl Bucket {
    fn reserve(&mut self, now: Instant) -> Instant {
        let due = self.next_due.max(now);
        self.next_due = due + self.interval;
        due.checked_sub(self.burst).map_or(now, |at| at.max(now))
    }
}

impl RateLimits {
    pub fn new(
        messages_per_second: u32,
        chat_interval: Duration,
        waiting: prometheus::IntGauge,
    ) -> Self {
        let per_second = messages_per_second.max(1);
        let interval = Duration::from_secs(1) / per_second;
        Self {
            overall: Mutex::new(Bucket {
                next_due: Instant::now(),
                interval,
                burst: interval * (per_second - 1),
            }),
            chats: Mutex::new(HashMap::new()),
            chat_interval,
            waiting,
        }
    }

    /// Waits until a message to `chat` may go.
    pub async fn wait(&self, chat: i64) {
        self.waiting.inc();
        let chat_slot = {
            let mut chats = self.chats.lock().expect("not poisoned");
            let now = Instant::now();
            // Forget chats whose next slot has passed, so the map stays small.
            if chats.len() > 10_000 {
                chats.retain(|_, next| *next > now);
            }
            let at = chats.get(&chat).copied().unwrap_or(now).max(now);
            chats.insert(chat, at + self.chat_interval);
            at
        };
        tokio::time::sleep_until(chat_slot).await;
        let overall_slot = self
            .overall
            .lock()
            .expect("not poisoned")
            .reserve(Instant::now());
        tokio::time::sleep_until(overall_slot).await;
        self.waiting.dec();
    }
}

/// Runs one Bot API call to `chat` within the limits, retrying `429`s; counts errors by code.
pub async fn send<T, F, Fut>(
    limits: &RateLimits,
    metrics: &BotMetrics,
    max_attempts: u32,
    chat: ChatId,
    call: F,
) -> Result<T, SendError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, RequestError>>,
{
    let started = std::time::Instant::now();
    let mut attempt = 0;
    let outcome = loop {
        attempt += 1;
        limits.wait(chat.0).await;
        let error = match call().await {
            Ok(value) => break Ok(value),
            Err(error) => error,
        };
        count_error(metrics, &error);
        match error {
            RequestError::RetryAfter(wait) if attempt < max_attempts => {
                tracing::info!(
                    chat = chat.0,
                    retry_after_s = wait.seconds(),
                    "Telegram asked to slow down"
                );
                tokio::time::sleep(wait.duration()).await;
            }
            RequestError::Network(_) if attempt < max_attempts => {
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
            error if is_gone(&error) => break Err(SendError::Blocked),
            error => break Err(SendError::Failed(error)),
        }
    };
    metrics
        .send_seconds
        .observe(started.elapsed().as_secs_f64());
    outcome
}

fn is_gone(error: &RequestError) -> bool {
    matches!(
        error,
        RequestError::Api(
            ApiError::BotBlocked
                | ApiError::UserDeactivated
                | ApiError::BotKicked
                | ApiError::BotKickedFromSupergroup
                | ApiError::ChatNotFound
        )
    )
}

/// Counts `error` in `oleg_bot_api_errors_total`.
pub fn count_error(metrics: &BotMetrics, error: &RequestError) {
    metrics.api_errors.with_label_values(&[code(error)]).inc();
}

/// The metric label of an error: its HTTP-like code where Telegram has one.
fn code(error: &RequestError) -> &'static str {
    match error {
        RequestError::RetryAfter(_) => "429",
        e if is_gone(e) => "403",
        RequestError::Api(_) | RequestError::MigrateToChatId(_) => "400",
        RequestError::Network(_) => "network",
        RequestError::InvalidJson { .. } | RequestError::Io(_) => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: u32, chat_interval: Duration) -> RateLimits {
        RateLimits::new(
            per_second,
            chat_interval,
            prometheus::IntGauge::new("waiting", "sends waiting").unwrap(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_chat_waiting_for_its_own_slot_delays_no_other_chat() {
        let limits = limits(10, Duration::from_secs(1));
        let start = Instant::now();
        limits.wait(1).await;
        // Chat 1's second message waits a second; meanwhile chats 2..=9 go at once.
        let second = async {
            limits.wait(1).await;
            start.elapsed()
        };
        let others = async {
            for chat in 2..=9 {
                limits.wait(chat).await;
            }
            start.elapsed()
        };
        let (second, others) = tokio::join!(second, others);
        assert_eq!(
            second,
            Duration::from_secs(1),
            "the same chat: one a second"
        );
        assert_eq!(others, Duration::ZERO, "other chats were held up");
    }

    #[tokio::test(start_paused = true)]
    async fn the_overall_rate_holds_after_a_burst_of_a_seconds_worth() {
        let limits = limits(10, Duration::ZERO);
        let start = Instant::now();
        for chat in 0..10 {
            limits.wait(chat).await;
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a full bucket: ten at once"
        );
        for chat in 10..30 {
            limits.wait(chat).await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(2), "then ten a second");
        assert_eq!(limits.waiting.get(), 0);
    }
}
