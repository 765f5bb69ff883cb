//! Defaults load, `<OLEG_ENV>.toml` and `OLEG__…` variables override them, and every bad value is
//! refused with its key named.

use oleg_settings::{
    load, AmqpSettings, Check, LogFormat, LogSettings, MongoSettings, SettingsError, Sources,
    Validate,
};
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::collections::HashMap;

#[derive(Debug, Deserialize)]
struct Common {
    log: LogSettings,
    amqp: AmqpSettings,
    mongo: MongoSettings,
}

impl Validate for Common {
    fn validate(&self, _: &str, check: &mut Check) {
        self.log.validate("log", check);
        self.amqp.validate("amqp", check);
        self.mongo.validate("mongo", check);
    }
}

fn with_vars(vars: &[(&str, &str)]) -> Sources {
    let mut sources = Sources::repository();
    sources.vars = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<HashMap<_, _>>();
    sources
}

fn invalid_keys(vars: &[(&str, &str)]) -> Vec<String> {
    match load::<Common>(&with_vars(vars)) {
        Err(SettingsError::Invalid(keys)) => keys.iter().map(|k| k.to_string()).collect(),
        Err(other) => vec![other.to_string()],
        Ok(_) => vec![],
    }
}

#[test]
fn defaults_load_from_the_repository_config() {
    let settings = load::<Common>(&Sources::repository()).unwrap();
    assert_eq!(settings.amqp.prefix, "oleg");
    assert_eq!(settings.amqp.prefetch, 1024);
    assert_eq!(settings.mongo.database, "oleg");
    assert_eq!(settings.log.format, LogFormat::Text);
}

#[test]
fn environment_variables_and_env_file_override_defaults() {
    let mut sources = with_vars(&[
        ("OLEG__AMQP__PREFETCH", "64"),
        ("OLEG__AMQP__URI", "amqp://u:pw@rabbit.internal:5672/prod"),
        ("OLEG__MONGO__DATABASE", "oleg_test_1"),
        ("UNRELATED__AMQP__PREFETCH", "7"),
    ]);
    sources.env_name = Some("production".into());
    let settings = load::<Common>(&sources).unwrap();
    assert_eq!(settings.amqp.prefetch, 64);
    assert_eq!(
        settings.amqp.uri.expose_secret(),
        "amqp://u:pw@rabbit.internal:5672/prod"
    );
    assert_eq!(settings.mongo.database, "oleg_test_1");
    assert_eq!(
        settings.log.format,
        LogFormat::Json,
        "production.toml applies"
    );
    assert_eq!(
        settings.amqp.max_attempts, 5,
        "untouched keys keep defaults"
    );
}

#[test]
fn each_invalid_value_is_rejected_with_its_key_named() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "OLEG__AMQP__PREFETCH",
            "0",
            "amqp.prefetch (OLEG__AMQP__PREFETCH): expected a number from 1 to 65535, found 0",
        ),
        ("OLEG__AMQP__PREFETCH", "many", "amqp.prefetch"),
        ("OLEG__AMQP__PREFETCH", "70000", "amqp.prefetch"),
        ("OLEG__AMQP__MAX_ATTEMPTS", "0", "amqp.max_attempts"),
        (
            "OLEG__AMQP__URI",
            "http://x",
            "amqp.uri (OLEG__AMQP__URI): expected an amqp:// or amqps:// URI",
        ),
        ("OLEG__AMQP__PREFIX", "a b", "amqp.prefix"),
        (
            "OLEG__AMQP__RECONNECT_MAX_MS",
            "10",
            "amqp.reconnect_max_ms",
        ),
        (
            "OLEG__AMQP__CONFIRM_TIMEOUT_MS",
            "1",
            "amqp.confirm_timeout_ms",
        ),
        ("OLEG__MONGO__URI", "postgres://db", "mongo.uri"),
        ("OLEG__MONGO__DATABASE", "a.b", "mongo.database"),
        ("OLEG__MONGO__TIMEOUT_MS", "0", "mongo.timeout_ms"),
        ("OLEG__LOG__FORMAT", "xml", "log.format"),
        ("OLEG__LOG__LEVEL", "", "log.level"),
        ("OLEG__AMQP__PREFECH", "5", "prefech"),
    ];
    for (var, value, says) in cases {
        let errors = invalid_keys(&[(var, value)]);
        assert!(
            errors.iter().any(|e| e.contains(says)),
            "{var}={value:?} should be refused mentioning {says:?}, got {errors:?}"
        );
    }
}

#[test]
fn all_invalid_keys_are_reported_at_once_and_secrets_stay_hidden() {
    let errors = invalid_keys(&[
        ("OLEG__AMQP__PREFETCH", "0"),
        ("OLEG__MONGO__TIMEOUT_MS", "0"),
        ("OLEG__AMQP__URI", "ftp://user:hunter2@host"),
    ]);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors.iter().all(|e| !e.contains("hunter2")), "{errors:?}");
}

#[test]
fn a_missing_default_file_is_a_clear_error() {
    let err = load::<Common>(&Sources::for_dir("/nonexistent/oleg-config")).unwrap_err();
    assert!(err.to_string().contains("default.toml"), "{err}");
}

/// The scraper's channels as a list key: several, one bare value, or none.
#[derive(Debug, Deserialize)]
struct Listed {
    scraper: Channels,
}

#[derive(Debug, Deserialize)]
struct Channels {
    #[serde(deserialize_with = "oleg_settings::one_or_many")]
    channels: Vec<String>,
}

impl Validate for Listed {
    fn validate(&self, _: &str, _: &mut Check) {}
}

#[test]
fn a_list_variable_holds_several_values_one_or_none() {
    for (value, expected) in [
        ("durov,codecamp", vec!["durov", "codecamp"]),
        ("durov", vec!["durov"]),
        ("", vec![]),
    ] {
        let mut sources = with_vars(&[("OLEG__SCRAPER__CHANNELS", value)]);
        sources.list_keys.push("scraper.channels");
        let listed = load::<Listed>(&sources).unwrap();
        assert_eq!(listed.scraper.channels, expected, "{value:?}");
    }
}
