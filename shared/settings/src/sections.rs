//! The sections every worker shares.

use crate::validate::key;
use crate::{Check, Validate};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,lapin=warn`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Validate for LogSettings {
    fn validate(&self, prefix: &str, check: &mut Check) {
        check.require(
            !self.level.trim().is_empty(),
            key(prefix, "level"),
            "a tracing filter such as \"info\"",
            "an empty string",
        );
    }
}

/// RabbitMQ. The URI may hold a password, so it is a secret: it is never logged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    pub uri: SecretString,
    /// Prefix of every exchange and queue name, so that several deployments (or tests) share a broker.
    pub prefix: String,
    /// Unacknowledged deliveries a consumer may hold.
    pub prefetch: u16,
    /// Deliveries of one message before it is dead-lettered as `retries_exhausted`.
    pub max_attempts: u32,
    /// Reconnect backoff: first delay and cap, in milliseconds (doubling, with jitter).
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// How long a publish may wait for the broker's confirm.
    pub confirm_timeout_ms: u64,
    /// Where RPC replies come back to a client (the bot asking the ranker).
    pub rpc_reply: ReplyMode,
    /// Larger messages are refused (dead-lettered as `too_large`) by every consumer; ingest and
    /// the ranker's requests have tighter limits of their own.
    pub max_message_bytes: usize,
}

/// Where RPC replies come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyMode {
    /// RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to`): no queue to declare.
    Direct,
    /// An exclusive, auto-deleted queue declared per connection.
    Queue,
}

impl AmqpSettings {
    /// The broker's nodes: `uri` may list several, comma-separated (the nodes of a cluster).
    pub fn node_uris(&self) -> Vec<&str> {
        self.uri
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|node| !node.is_empty())
            .collect()
    }

    /// `scheme://host:port/vhost` of each node without credentials, for logs.
    pub fn redacted_uri(&self) -> String {
        self.node_uris()
            .into_iter()
            .map(redact)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Validate for AmqpSettings {
    fn validate(&self, prefix: &str, check: &mut Check) {
        let nodes = self.node_uris();
        let valid = |node: &&str| matches!(Url::parse(node), Ok(u) if matches!(u.scheme(), "amqp" | "amqps") && u.host().is_some());
        check.require(
            !nodes.is_empty() && nodes.iter().all(valid),
            key(prefix, "uri"),
            "an amqp:// or amqps:// URI with a host, or several separated by commas (a cluster's nodes)",
            self.redacted_uri(),
        );
        check.require(
            !self.prefix.is_empty()
                && self.prefix.len() <= 64
                && self
                    .prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            key(prefix, "prefix"),
            "1-64 characters of letters, digits, '-', '_' or '.'",
            format!("{:?}", self.prefix),
        );
        check.in_range(key(prefix, "prefetch"), self.prefetch, 1, u16::MAX);
        check.in_range(key(prefix, "max_attempts"), self.max_attempts, 1, 100);
        check.in_range(
            key(prefix, "reconnect_min_ms"),
            self.reconnect_min_ms,
            1,
            60_000,
        );
        check.require(
            self.reconnect_max_ms >= self.reconnect_min_ms && self.reconnect_max_ms <= 600_000,
            key(prefix, "reconnect_max_ms"),
            "at least amqp.reconnect_min_ms and at most 600000",
            self.reconnect_max_ms,
        );
        check.in_range(
            key(prefix, "max_message_bytes"),
            self.max_message_bytes,
            1024,
            64 << 20,
        );
        check.in_range(
            key(prefix, "confirm_timeout_ms"),
            self.confirm_timeout_ms,
            100,
            600_000,
        );
    }
}

/// MongoDB. The URI may hold a password, so it is a secret: it is never logged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoSettings {
    pub uri: SecretString,
    pub database: String,
    /// Server selection and connect timeout, in milliseconds.
    pub timeout_ms: u64,
}

impl MongoSettings {
    pub fn redacted_uri(&self) -> String {
        redact(self.uri.expose_secret())
    }
}

impl Validate for MongoSettings {
    fn validate(&self, prefix: &str, check: &mut Check) {
        let uri = Url::parse(self.uri.expose_secret());
        check.require(
            matches!(&uri, Ok(u) if matches!(u.scheme(), "mongodb" | "mongodb+srv")),
            key(prefix, "uri"),
            "a mongodb:// or mongodb+srv:// URI",
            redact(self.uri.expose_secret()),
        );
        // MongoDB's own rules for database names.
        check.require(
            !self.database.is_empty()
                && self.database.len() < 64
                && !self.database.chars().any(|c| "/\\. \"$*<>:|?".contains(c)),
            key(prefix, "database"),
            "1-63 characters without / \\ . space \" $ * < > : | ?",
            format!("{:?}", self.database),
        );
        check.in_range(key(prefix, "timeout_ms"), self.timeout_ms, 100, 600_000);
    }
}

/// Drops user, password and query from a URI; anything unparsable is hidden whole.
fn redact(uri: &str) -> String {
    match Url::parse(uri) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.to_string()
        }
        Err(_) => "<unparsable URI, not shown>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redaction_drops_credentials() {
        assert_eq!(
            redact("amqp://guest:s3cret@rabbit:5672/%2f"),
            "amqp://rabbit:5672/%2f"
        );
        assert_eq!(
            redact("mongodb://u:p@a,b/?replicaSet=rs0&authSource=x"),
            "mongodb://a,b/"
        );
        assert!(!redact("mongodb://u:p@[bad").contains("u:p"));
    }
}
