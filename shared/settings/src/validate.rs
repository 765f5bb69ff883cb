use std::fmt;

/// One key whose value is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKey {
    /// Dotted path, e.g. `amqp.prefetch`; the environment variable is `OLEG__AMQP__PREFETCH`.
    pub key: String,
    pub expected: String,
    pub found: String,
}

impl InvalidKey {
    pub fn env_var(&self) -> String {
        format!("OLEG__{}", self.key.replace('.', "__").to_uppercase())
    }
}

impl fmt::Display for InvalidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): expected {}, found {}",
            self.key,
            self.env_var(),
            self.expected,
            self.found
        )
    }
}

/// Collects every invalid key, so one start reports them all.
#[derive(Debug, Default)]
pub struct Check {
    invalid: Vec<InvalidKey>,
}

impl Check {
    pub fn require(&mut self, ok: bool, key: String, expected: &str, found: impl fmt::Display) {
        if !ok {
            self.invalid.push(InvalidKey {
                key,
                expected: expected.to_owned(),
                found: found.to_string(),
            });
        }
    }

    /// Checks `low <= value <= high`.
    pub fn in_range<N: PartialOrd + fmt::Display + Copy>(
        &mut self,
        key: String,
        value: N,
        low: N,
        high: N,
    ) {
        self.require(
            value >= low && value <= high,
            key,
            &format!("a number from {low} to {high}"),
            value,
        );
    }

    /// Checks that `value` is a socket address such as `127.0.0.1:9102`.
    pub fn socket_addr(&mut self, key: String, value: &str) {
        self.require(
            value.parse::<std::net::SocketAddr>().is_ok(),
            key,
            "an address such as 127.0.0.1:9102",
            format!("{value:?}"),
        );
    }

    pub fn finish(self) -> Result<(), crate::SettingsError> {
        if self.invalid.is_empty() {
            Ok(())
        } else {
            Err(crate::SettingsError::Invalid(self.invalid))
        }
    }
}

/// A configuration section that can check its own values. `prefix` is the section's dotted path
/// (empty at the top), so errors name the full key.
pub trait Validate {
    fn validate(&self, prefix: &str, check: &mut Check);
}

/// Joins a section path and a key.
pub fn key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}
