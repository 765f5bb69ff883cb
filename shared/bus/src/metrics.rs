use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub(crate) struct BusMetrics {
    pub reconnects: IntCounter,
    pub connected: IntGauge,
    pub published: IntCounterVec,
    pub publish_retries: IntCounter,
    pub consumed: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub retried: IntCounterVec,
    pub dead_letter_queue_missing: IntCounterVec,
    pub rpc_calls: IntCounterVec,
    pub rpc_reply_path_up: IntGauge,
    pub rpc_unmatched_replies: IntCounter,
}

impl BusMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            reconnects: IntCounter::new(
                "oleg_amqp_reconnects_total",
                "Connections to the broker made after the first one (broker restarts, lost connections).",
            )?,
            connected: IntGauge::new("oleg_amqp_connected", "1 while the broker connection is up.")?,
            published: IntCounterVec::new(
                Opts::new("oleg_amqp_published_total", "Messages the broker confirmed, by routing key and outcome."),
                &["routing_key", "outcome"],
            )?,
            publish_retries: IntCounter::new(
                "oleg_amqp_publish_retries_total",
                "Publishes tried again after a lost channel or a broker nack.",
            )?,
            consumed: IntCounterVec::new(
                Opts::new("oleg_amqp_consumed_total", "Deliveries received, by queue."),
                &["queue"],
            )?,
            dead_lettered: IntCounterVec::new(
                Opts::new("oleg_amqp_dead_lettered_total", "Messages sent to the dead-letter queue, by queue and reason."),
                &["queue", "reason"],
            )?,
            retried: IntCounterVec::new(
                Opts::new("oleg_amqp_retried_total", "Deliveries handed back for another attempt, by queue."),
                &["queue"],
            )?,
            dead_letter_queue_missing: IntCounterVec::new(
                Opts::new(
                    "oleg_amqp_dead_letter_queue_missing_total",
                    "Dead letters the broker could not route (the dead-letter queue was deleted): the topology is declared again and the message kept, by queue.",
                ),
                &["queue"],
            )?,
            rpc_calls: IntCounterVec::new(
                Opts::new(
                    "oleg_rpc_calls_total",
                    "RPC calls by outcome (ok, timeout, lost, failed), and sends repeated after a lost reply path (resent).",
                ),
                &["outcome"],
            )?,
            rpc_reply_path_up: IntGauge::new(
                "oleg_rpc_reply_path_up",
                "1 while an RPC client's reply path is open (0 when down or unused).",
            )?,
            rpc_unmatched_replies: IntCounter::new(
                "oleg_rpc_unmatched_replies_total",
                "RPC replies that arrived after their call timed out or was sent again.",
            )?,
        };
        registry.register(Box::new(metrics.reconnects.clone()))?;
        registry.register(Box::new(metrics.connected.clone()))?;
        registry.register(Box::new(metrics.published.clone()))?;
        registry.register(Box::new(metrics.publish_retries.clone()))?;
        registry.register(Box::new(metrics.consumed.clone()))?;
        registry.register(Box::new(metrics.dead_lettered.clone()))?;
        registry.register(Box::new(metrics.retried.clone()))?;
        registry.register(Box::new(metrics.dead_letter_queue_missing.clone()))?;
        registry.register(Box::new(metrics.rpc_calls.clone()))?;
        registry.register(Box::new(metrics.rpc_reply_path_up.clone()))?;
        registry.register(Box::new(metrics.rpc_unmatched_replies.clone()))?;
        Ok(metrics)
    }
}
