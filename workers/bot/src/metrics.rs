use crate::app::DigestSummary;
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry,
};

#[derive(Clone)]
pub struct BotMetrics {
    pub updates: IntCounterVec,
    pub sent: IntCounterVec,
    pub callback_refusals: IntCounterVec,
    pub api_errors: IntCounterVec,
    pub send_seconds: Histogram,
    pub throttled: IntCounterVec,
    pub pending_sends: IntGauge,
    pub in_flight: IntGauge,
    pub receiving: IntGauge,
    pub postponed: IntCounter,
    pub digest_people: IntCounterVec,
    pub handle_seconds: Histogram,
    pub own_work_seconds: Histogram,
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
            throttled: IntCounterVec::new(
                Opts::new(
                    "oleg_bot_throttled_updates_total",
                    "Updates limited because their person was over the allowance (rate) or their chat had too many waiting (queue_full).",
                ),
                &["reason"],
            )?,
            pending_sends: IntGauge::new(
                "oleg_bot_pending_sends",
                "Messages waiting for a slot under the rate limits.",
            )?,
            in_flight: IntGauge::new(
                "oleg_bot_updates_in_flight",
                "Updates taken and not yet handled (queued or being handled), or refused and not yet removed from the inbox.",
            )?,
            receiving: IntGauge::new(
                "oleg_bot_receiving",
                "1 while the bot takes updates from Telegram (long polling: the last getUpdates answered; webhook: the webhook is set), 0 while getUpdates fails (a revoked token, another bot polling with the same token, Telegram out of reach).",
            )?,
            postponed: IntCounter::new(
                "oleg_bot_updates_postponed_total",
                "Attempts at an update that ended with what it asked to record (a vote, a start, a pause, a channel) not taken by the broker or the store: the update stays kept and is tried again.",
            )?,
            digest_people: IntCounterVec::new(
                Opts::new(
                    "oleg_bot_digest_people_total",
                    "People each digest run went through, by outcome: sent, already_sent, nothing_new, blocked, failed (Telegram did not take it, or the ranker gave no post and the claim could not be taken back), postponed (the ranker gave no post, or the claim did not reach the store: tried again) and left (the bot stopped first: the next one sends it).",
                ),
                &["outcome"],
            )?,
            handle_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "oleg_bot_handle_seconds",
                    "Time to handle one update, waits for Telegram, the broker, the store and the ranker included.",
                )
                .buckets(exponential_buckets(0.001, 2.0, 16)?),
            )?,
            own_work_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "oleg_bot_own_work_seconds",
                    "The bot's own work per update: its handling time less the waits for Telegram, the broker, the store and the ranker.",
                )
                .buckets(exponential_buckets(0.00005, 2.0, 16)?),
            )?,
        };
        // Every label a panel or an alert reads exists from the start, at zero.
        for kind in ["command", "callback", "other"] {
            metrics.updates.with_label_values(&[kind]);
        }
        for kind in ["onboarding", "post", "digest", "notice"] {
            metrics.sent.with_label_values(&[kind]);
        }
        for reason in ["forged", "stale", "malformed"] {
            metrics.callback_refusals.with_label_values(&[reason]);
        }
        for code in ["403", "429", "400", "network", "other"] {
            metrics.api_errors.with_label_values(&[code]);
        }
        for reason in ["rate", "queue_full"] {
            metrics.throttled.with_label_values(&[reason]);
        }
        for (outcome, _) in DigestSummary::default().by_outcome() {
            metrics.digest_people.with_label_values(&[outcome]);
        }
        registry.register(Box::new(metrics.updates.clone()))?;
        registry.register(Box::new(metrics.sent.clone()))?;
        registry.register(Box::new(metrics.callback_refusals.clone()))?;
        registry.register(Box::new(metrics.api_errors.clone()))?;
        registry.register(Box::new(metrics.send_seconds.clone()))?;
        registry.register(Box::new(metrics.throttled.clone()))?;
        registry.register(Box::new(metrics.pending_sends.clone()))?;
        registry.register(Box::new(metrics.in_flight.clone()))?;
        registry.register(Box::new(metrics.receiving.clone()))?;
        registry.register(Box::new(metrics.postponed.clone()))?;
        registry.register(Box::new(metrics.digest_people.clone()))?;
        registry.register(Box::new(metrics.handle_seconds.clone()))?;
        registry.register(Box::new(metrics.own_work_seconds.clone()))?;
        Ok(metrics)
    }
}
