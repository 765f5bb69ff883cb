use oleg_settings::{AmqpSettings, Check, LogSettings, MongoSettings, Validate};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct BotConfig {
    pub log: LogSettings,
    pub amqp: AmqpSettings,
    pub mongo: MongoSettings,
    pub bot: BotSettings,
}

/// How updates reach the bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateMode {
    /// `getUpdates` long polling (no public address needed).
    Polling,
    /// Telegram POSTs updates to `bot.webhook_url`, served on `bot.webhook_listen`.
    Webhook,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotSettings {
    pub metrics_addr: String,
    /// The token from @BotFather. Never logged.
    pub token: SecretString,
    /// The Bot API server (a local `telegram-bot-api`, or a fake one in tests).
    pub api_url: String,
    /// Signs the 👍/👎 buttons' callback data, so that forged presses are refused.
    pub callback_secret: SecretString,
    /// Presses on buttons older than this are refused as stale.
    pub callback_ttl_days: u32,
    /// Telegram user ids allowed the admin commands.
    #[serde(deserialize_with = "oleg_settings::one_or_many")]
    pub admin_ids: Vec<i64>,
    /// Local times (`HH:MM` or `HH:MM:SS` in `timezone`) at which every active person gets
    /// their best new post.
    #[serde(deserialize_with = "oleg_settings::one_or_many")]
    pub digest_times: Vec<String>,
    /// IANA time zone of `digest_times`.
    pub timezone: String,
    /// How long past its time a digest may still go out (0: only at its time): one whose time
    /// passed while no bot ran, or that a stopping bot left half sent, goes out from the next bot
    /// to those it has not reached if that bot starts within this long; people the ranker gave no
    /// post are tried again within it (and before the next digest).
    pub digest_catch_up_s: u64,
    pub mode: UpdateMode,
    pub poll_timeout_s: u64,
    /// Public HTTPS address Telegram posts updates to (webhook mode).
    pub webhook_url: String,
    pub webhook_listen: String,
    /// Messages per second to all chats together (Telegram allows about 30; paid broadcasts up
    /// to 1000; a local fake API, any).
    pub messages_per_second: u32,
    /// Least time between two messages to the same chat (Telegram allows about one a second).
    pub chat_interval_ms: u64,
    /// A `429` is retried after its `retry_after` this many times before the message is dropped.
    pub max_send_attempts: u32,
    /// Post text longer than this many characters is cut (Telegram's limit is 4096).
    pub max_text_chars: usize,
    /// How long to wait for the ranker's answer.
    pub rpc_timeout_ms: u64,
    /// Updates handled at once (each chat's updates one after another).
    pub max_concurrent_updates: usize,
    /// Updates of one chat that may wait; more are dropped (and counted).
    pub max_queued_per_chat: usize,
    /// What one person may ask for (commands, presses) per minute on average ...
    pub person_actions_per_minute: u32,
    /// ... and at once; beyond it they get one "slow down" and their presses only record votes.
    pub person_burst: u32,
    /// How long a stopping bot waits for the updates in flight.
    pub shutdown_grace_s: u64,
    /// Larger webhook bodies are refused (Telegram's updates are a few kilobytes).
    pub webhook_max_body_bytes: usize,
}

impl BotSettings {
    pub fn parsed_timezone(&self) -> Option<chrono_tz::Tz> {
        self.timezone.parse().ok()
    }

    /// `digest_times` as seconds after local midnight, sorted.
    pub fn digest_seconds(&self) -> Result<Vec<u32>, String> {
        let mut seconds = self
            .digest_times
            .iter()
            .map(|t| parse_time_of_day(t).ok_or_else(|| t.clone()))
            .collect::<Result<Vec<u32>, String>>()?;
        seconds.sort_unstable();
        seconds.dedup();
        Ok(seconds)
    }
}

/// `HH:MM` or `HH:MM:SS` → seconds after midnight.
fn parse_time_of_day(text: &str) -> Option<u32> {
    let parts: Vec<u32> = text
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (h, m, s) = match parts[..] {
        [h, m] => (h, m, 0),
        [h, m, s] => (h, m, s),
        _ => return None,
    };
    (h < 24 && m < 60 && s < 60).then_some(h * 3600 + m * 60 + s)
}

impl Validate for BotConfig {
    fn validate(&self, _: &str, check: &mut Check) {
        self.log.validate("log", check);
        self.amqp.validate("amqp", check);
        self.mongo.validate("mongo", check);
        let s = &self.bot;
        check.socket_addr("bot.metrics_addr".into(), &s.metrics_addr);
        let token = s.token.expose_secret();
        check.require(
            token.split_once(':').is_some_and(|(id, rest)| {
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty()
            }),
            "bot.token".into(),
            "the bot's token from @BotFather, <digits>:<secret>",
            if token.is_empty() {
                "nothing"
            } else {
                "something else (not shown)"
            },
        );
        check.require(
            reqwest::Url::parse(&s.api_url).is_ok(),
            "bot.api_url".into(),
            "an http(s) URL",
            &s.api_url,
        );
        check.require(
            s.callback_secret.expose_secret().len() >= 16,
            "bot.callback_secret".into(),
            "a secret of at least 16 characters",
            "a shorter one (not shown)",
        );
        check.in_range("bot.callback_ttl_days".into(), s.callback_ttl_days, 1, 3650);
        for (i, id) in s.admin_ids.iter().enumerate() {
            check.require(
                *id > 0,
                format!("bot.admin_ids[{i}]"),
                "a Telegram user id",
                id,
            );
        }
        for (i, time) in s.digest_times.iter().enumerate() {
            check.require(
                parse_time_of_day(time).is_some(),
                format!("bot.digest_times[{i}]"),
                "a time of day, HH:MM or HH:MM:SS",
                time,
            );
        }
        check.require(
            s.parsed_timezone().is_some(),
            "bot.timezone".into(),
            "an IANA time zone such as Europe/Moscow",
            &s.timezone,
        );
        check.in_range(
            "bot.digest_catch_up_s".into(),
            s.digest_catch_up_s,
            0,
            86_400,
        );
        check.in_range("bot.poll_timeout_s".into(), s.poll_timeout_s, 1, 50);
        if s.mode == UpdateMode::Webhook {
            check.require(
                s.webhook_url.starts_with("https://")
                    && reqwest::Url::parse(&s.webhook_url).is_ok(),
                "bot.webhook_url".into(),
                "the public https:// address Telegram posts updates to",
                &s.webhook_url,
            );
            check.socket_addr("bot.webhook_listen".into(), &s.webhook_listen);
        }
        check.in_range(
            "bot.messages_per_second".into(),
            s.messages_per_second,
            1,
            100_000,
        );
        check.in_range("bot.chat_interval_ms".into(), s.chat_interval_ms, 0, 60_000);
        check.in_range("bot.max_send_attempts".into(), s.max_send_attempts, 1, 20);
        check.in_range("bot.max_text_chars".into(), s.max_text_chars, 100, 3900);
        check.in_range("bot.rpc_timeout_ms".into(), s.rpc_timeout_ms, 100, 120_000);
        check.in_range(
            "bot.max_concurrent_updates".into(),
            s.max_concurrent_updates,
            1,
            100_000,
        );
        check.in_range(
            "bot.max_queued_per_chat".into(),
            s.max_queued_per_chat,
            1,
            10_000,
        );
        check.in_range(
            "bot.person_actions_per_minute".into(),
            s.person_actions_per_minute,
            1,
            100_000,
        );
        check.in_range("bot.person_burst".into(), s.person_burst, 1, 10_000);
        check.in_range("bot.shutdown_grace_s".into(), s.shutdown_grace_s, 0, 600);
        check.in_range(
            "bot.webhook_max_body_bytes".into(),
            s.webhook_max_body_bytes,
            1024,
            64 << 20,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_day_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_time_of_day("10:20"), Some(37_200));
        assert_eq!(parse_time_of_day("19:20:05"), Some(69_605));
        for bad in ["24:00", "10:60", "10", "a:b", "10:20:30:40", ""] {
            assert_eq!(parse_time_of_day(bad), None, "{bad}");
        }
    }
}
