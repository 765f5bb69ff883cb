use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry,
};

#[derive(Clone)]
pub struct IngestMetrics {
    pub received: IntCounterVec,
    pub votes_stored: IntCounterVec,
    pub users_created: IntCounter,
    pub batch_size: Histogram,
    pub write_seconds: Histogram,
    pub store_failures: IntCounter,
    pub store_refusals: IntCounter,
    pub vote_lag_seconds: Histogram,
}

impl IngestMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            received: IntCounterVec::new(
                Opts::new("oleg_ingest_received_total", "Messages received, by kind (vote, user_started, unknown)."),
                &["kind"],
            )?,
            votes_stored: IntCounterVec::new(
                Opts::new(
                    "oleg_ingest_votes_stored_total",
                    "Votes written, by outcome: new, changed (replaced an older vote) or duplicate (changed nothing).",
                ),
                &["outcome"],
            )?,
            users_created: IntCounter::new("oleg_ingest_users_created_total", "People stored for the first time.")?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new("oleg_ingest_batch_size", "Valid messages per committed batch.")
                    .buckets(exponential_buckets(1.0, 2.0, 14)?),
            )?,
            write_seconds: Histogram::with_opts(
                HistogramOpts::new("oleg_ingest_write_seconds", "Time to write one batch to the store.")
                    .buckets(exponential_buckets(0.001, 2.0, 16)?),
            )?,
            store_refusals: IntCounter::new(
                "oleg_ingest_store_refusals_total",
                "Messages the store refused to write (a permanent error): each is tried again up to amqp.max_attempts, then dead-lettered as store_refused.",
            )?,
            store_failures: IntCounter::new(
                "oleg_ingest_store_failures_total",
                "Batch writes that failed and were retried (the store was unreachable or refused).",
            )?,
            vote_lag_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "oleg_ingest_vote_lag_seconds",
                    "From the press of the button (voted_at) to the vote being stored: the consumer lag as people feel it.",
                )
                .buckets(exponential_buckets(0.01, 2.0, 16)?),
            )?,
        };
        registry.register(Box::new(metrics.received.clone()))?;
        registry.register(Box::new(metrics.votes_stored.clone()))?;
        registry.register(Box::new(metrics.users_created.clone()))?;
        registry.register(Box::new(metrics.batch_size.clone()))?;
        registry.register(Box::new(metrics.write_seconds.clone()))?;
        registry.register(Box::new(metrics.store_failures.clone()))?;
        registry.register(Box::new(metrics.store_refusals.clone()))?;
        registry.register(Box::new(metrics.vote_lag_seconds.clone()))?;
        Ok(metrics)
    }
}
