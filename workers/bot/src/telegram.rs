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

/// When the next message may go, overall and per chat.
struct Schedule {
    next_any: Instant,
    next_per_chat: HashMap<i64, Instant>,
}

pub struct RateLimits {
    schedule: Mutex<Schedule>,
    any_interval: Duration,
    chat_interval: Duration,
}

impl RateLimits {
    pub fn new(messages_per_second: u32, chat_interval: Duration) -> Self {
        Self {
            schedule: Mutex::new(Schedule {
                next_any: Instant::now(),
                next_per_chat: HashMap::new(),
            }),
            any_interval: Duration::from_secs(1) / messages_per_second.max(1),
            chat_interval,
        }
    }

    /// Reserves the earliest slot for a message to `chat` and waits for it.
    pub async fn wait(&self, chat: i64) {
        let at = {
            let mut schedule = self.schedule.lock().expect("not poisoned");
            let now = Instant::now();
            // Forget chats whose next slot has passed, so the map stays small.
            if schedule.next_per_chat.len() > 10_000 {
                schedule.next_per_chat.retain(|_, t| *t > now);
            }
            let chat_next = schedule.next_per_chat.get(&chat).copied().unwrap_or(now);
            let at = now.max(schedule.next_any).max(chat_next);
            schedule.next_any = at + self.any_interval;
            schedule.next_per_chat.insert(chat, at + self.chat_interval);
            at
        };
        tokio::time::sleep_until(at).await;
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
        metrics.api_errors.with_label_values(&[code(&error)]).inc();
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

    #[tokio::test(start_paused = true)]
    async fn messages_to_one_chat_are_spaced_and_all_chats_share_the_overall_rate() {
        let limits = RateLimits::new(10, Duration::from_secs(1));
        let start = tokio::time::Instant::now();
        limits.wait(1).await;
        limits.wait(2).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(100),
            "overall: 10 a second"
        );
        limits.wait(1).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1),
            "the same chat: one a second"
        );
    }
}
