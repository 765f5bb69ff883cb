use oleg_messages::ChannelName;
use oleg_settings::{AmqpSettings, Check, LogSettings, MongoSettings, Validate};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct ScraperConfig {
    pub log: LogSettings,
    pub amqp: AmqpSettings,
    pub mongo: MongoSettings,
    pub scraper: ScraperSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScraperSettings {
    pub metrics_addr: String,
    /// The only host ever requested; page content never chooses a URL.
    pub base_url: String,
    /// Channels followed from the start (more arrive as add-channel messages).
    pub channels: Vec<String>,
    pub poll_interval_s: u64,
    /// Each poll interval varies by up to this share either way.
    pub poll_jitter: f64,
    /// At most one request per this long (one host, so global and per host alike).
    pub request_interval_ms: u64,
    pub request_timeout_ms: u64,
    pub max_body_bytes: usize,
    /// Older pages followed back the first time a channel is seen.
    pub first_sight_pages: u32,
    /// How long to wait after a 429 that names no Retry-After.
    pub retry_after_default_s: u64,
    /// The longest pause a Retry-After can ask for (a larger one, or a far date, is cut to it).
    pub retry_after_max_s: u64,
    /// How often a channel that does not exist or is private is tried again.
    pub missing_retry_s: u64,
    /// Backoff after server or network errors: doubling from `backoff_min_s` up to this.
    pub backoff_min_s: u64,
    pub backoff_max_s: u64,
}

impl Validate for ScraperConfig {
    fn validate(&self, _: &str, check: &mut Check) {
        self.log.validate("log", check);
        self.amqp.validate("amqp", check);
        self.mongo.validate("mongo", check);
        let s = &self.scraper;
        check.socket_addr("scraper.metrics_addr".into(), &s.metrics_addr);
        check.require(
            url::Url::parse(&s.base_url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some()),
            "scraper.base_url".into(),
            "an http(s) URL such as https://t.me",
            format!("{:?}", s.base_url),
        );
        for (i, channel) in s.channels.iter().enumerate() {
            if let Err(error) = ChannelName::parse(channel) {
                check.require(
                    false,
                    format!("scraper.channels[{i}]"),
                    "a channel username (5-32 letters, digits, _)",
                    error.problem,
                );
            }
        }
        check.in_range(
            "scraper.poll_interval_s".into(),
            s.poll_interval_s,
            1,
            86_400 * 7,
        );
        check.in_range("scraper.poll_jitter".into(), s.poll_jitter, 0.0, 0.9);
        check.in_range(
            "scraper.request_interval_ms".into(),
            s.request_interval_ms,
            0,
            3_600_000,
        );
        check.in_range(
            "scraper.request_timeout_ms".into(),
            s.request_timeout_ms,
            100,
            600_000,
        );
        check.in_range(
            "scraper.max_body_bytes".into(),
            s.max_body_bytes,
            1024,
            256 << 20,
        );
        check.in_range(
            "scraper.first_sight_pages".into(),
            s.first_sight_pages,
            1,
            1000,
        );
        check.in_range(
            "scraper.retry_after_default_s".into(),
            s.retry_after_default_s,
            1,
            86_400,
        );
        check.in_range(
            "scraper.retry_after_max_s".into(),
            s.retry_after_max_s,
            1,
            86_400 * 7,
        );
        check.in_range(
            "scraper.missing_retry_s".into(),
            s.missing_retry_s,
            1,
            86_400 * 30,
        );
        check.in_range("scraper.backoff_min_s".into(), s.backoff_min_s, 1, 86_400);
        check.require(
            s.backoff_max_s >= s.backoff_min_s && s.backoff_max_s <= 86_400,
            "scraper.backoff_max_s".into(),
            "at least scraper.backoff_min_s and at most 86400",
            s.backoff_max_s,
        );
    }
}
