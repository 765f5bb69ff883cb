use prometheus::{exponential_buckets, Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct BotMetrics {
    pub updates: IntCounterVec,
    pub sent: IntCounterVec,
    pub callback_refusals: IntCounterVec,
    pub api_errors: IntCounterVec,
    pub send_seconds: Histogram,
}

impl BotMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            updates: IntCounterVec::new(
                Opts::new(
                    "oleg_bot_updates_total",
                    "Updates received from Telegram, by kind (command, callback, other).",
                ),
                &["kind"],
            )?,
            sent: IntCounterVec::new(
                Opts::new(
                    "oleg_bot_messages_sent_total",
                    "Messages sent, by kind (onboarding, post, digest, notice).",
                ),
                &["kind"],
            )?,
            callback_refusals: IntCounterVec::new(
                Opts::new(
                    "oleg_bot_callback_refusals_total",
                    "Button presses refused, by reason (forged, stale, malformed).",
                ),
                &["reason"],
            )?,
            api_errors: IntCounterVec::new(
                Opts::new(
                    "oleg_bot_api_errors_total",
                    "Bot API errors, by code (403, 429, 400, network, other).",
                ),
                &["code"],
            )?,
            send_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "oleg_bot_send_seconds",
                    "Time to send one message, waits for rate limits and retries included.",
                )
                .buckets(exponential_buckets(0.005, 2.0, 14)?),
            )?,
        };
        registry.register(Box::new(metrics.updates.clone()))?;
        registry.register(Box::new(metrics.sent.clone()))?;
        registry.register(Box::new(metrics.callback_refusals.clone()))?;
        registry.register(Box::new(metrics.api_errors.clone()))?;
        registry.register(Box::new(metrics.send_seconds.clone()))?;
        Ok(metrics)
    }
}
