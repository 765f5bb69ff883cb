use oleg_settings::{AmqpSettings, Check, LogSettings, MongoSettings, Validate};
use serde::Deserialize;

/// Everything `oleg-ingest` reads from configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct IngestConfig {
    pub log: LogSettings,
    pub amqp: AmqpSettings,
    pub mongo: MongoSettings,
    pub ingest: IngestSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: String,
    /// Most messages written with one bulk upsert.
    pub batch_size: usize,
    /// How long a batch may wait to fill after its first message.
    pub batch_max_wait_ms: u64,
    /// Larger messages are dead-lettered as `too_large`.
    pub max_message_bytes: usize,
    /// Backoff between attempts to write a batch while the store is down.
    pub store_retry_min_ms: u64,
    pub store_retry_max_ms: u64,
    /// How often the store is pinged for `/readyz`.
    pub store_probe_ms: u64,
    /// Post ids remembered as stored, to spare a lookup per vote.
    pub known_posts_cache: usize,
    /// People remembered as stored, to spare an upsert per vote.
    pub known_users_cache: usize,
    /// Votes and starts dated further ahead of this worker's clock are refused as
    /// `from_the_future` (one such vote would outrank every later vote of its person on its post).
    pub max_clock_skew_ms: u64,
}

impl Validate for IngestConfig {
    fn validate(&self, _: &str, check: &mut Check) {
        self.log.validate("log", check);
        self.amqp.validate("amqp", check);
        self.mongo.validate("mongo", check);
        let s = &self.ingest;
        check.socket_addr("ingest.metrics_addr".into(), &s.metrics_addr);
        check.in_range("ingest.batch_size".into(), s.batch_size, 1, 10_000);
        // A batch can only fill up to the number of unacknowledged deliveries the broker sends.
        check.require(
            usize::from(self.amqp.prefetch) >= s.batch_size,
            "amqp.prefetch".into(),
            "at least ingest.batch_size, so that a batch can fill",
            self.amqp.prefetch,
        );
        check.in_range(
            "ingest.max_clock_skew_ms".into(),
            s.max_clock_skew_ms,
            0,
            86_400_000,
        );
        check.in_range(
            "ingest.batch_max_wait_ms".into(),
            s.batch_max_wait_ms,
            1,
            60_000,
        );
        check.in_range(
            "ingest.max_message_bytes".into(),
            s.max_message_bytes,
            256,
            16 << 20,
        );
        check.in_range(
            "ingest.store_retry_min_ms".into(),
            s.store_retry_min_ms,
            1,
            60_000,
        );
        check.require(
            s.store_retry_max_ms >= s.store_retry_min_ms && s.store_retry_max_ms <= 600_000,
            "ingest.store_retry_max_ms".into(),
            "at least ingest.store_retry_min_ms and at most 600000",
            s.store_retry_max_ms,
        );
        check.in_range(
            "ingest.store_probe_ms".into(),
            s.store_probe_ms,
            50,
            600_000,
        );
        check.in_range(
            "ingest.known_posts_cache".into(),
            s.known_posts_cache,
            0,
            100_000_000,
        );
        check.in_range(
            "ingest.known_users_cache".into(),
            s.known_users_cache,
            0,
            100_000_000,
        );
    }
}
