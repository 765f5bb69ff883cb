//! Configuration for every worker: `config/default.toml`, then `config/<OLEG_ENV>.toml` if it
//! exists, then `OLEG__SECTION__KEY` environment variables. Values are checked at start, and every
//! bad value is reported with its key and the form it should take.

mod sections;
mod validate;

pub use sections::{AmqpSettings, LogFormat, LogSettings, MongoSettings, ReplyMode};
pub use validate::{Check, InvalidKey, Validate};

use config::{Config, Environment, File, FileFormat};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration is invalid:\n{}", .0.iter().map(|k| format!("  - {k}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<InvalidKey>),
}

/// Where configuration comes from; [`Sources::from_process`] for workers, explicit values in tests.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The folder holding `default.toml` and `<env>.toml`.
    pub dir: PathBuf,
    /// The `OLEG_ENV` name, selecting an optional `<env>.toml` on top of the defaults.
    pub env_name: Option<String>,
    /// Environment variables (only `OLEG__…` ones are read).
    pub vars: HashMap<String, String>,
    /// Keys whose environment value is a comma-separated list (e.g. `scraper.channels`).
    pub list_keys: Vec<&'static str>,
}

impl Sources {
    /// `OLEG_CONFIG_DIR` (default `config`), `OLEG_ENV` and the process environment.
    pub fn from_process() -> Self {
        Self {
            dir: std::env::var_os("OLEG_CONFIG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("config")),
            env_name: std::env::var("OLEG_ENV").ok().filter(|e| !e.is_empty()),
            vars: std::env::vars().collect(),
            list_keys: Vec::new(),
        }
    }

    /// The repository's own `config/`, with no environment: what ships. For the tests and
    /// benches built from this source tree (the path is where it was compiled).
    pub fn repository() -> Self {
        Self::for_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"))
    }

    pub fn for_dir(dir: impl AsRef<Path>) -> Self {
        Self {
            dir: dir.as_ref().to_path_buf(),
            env_name: None,
            vars: HashMap::new(),
            list_keys: Vec::new(),
        }
    }
}

/// Loads and validates `T`, which names the sections a worker reads.
pub fn load<T: DeserializeOwned + Validate>(sources: &Sources) -> Result<T, SettingsError> {
    let default_file = sources.dir.join("default.toml");
    let mut builder =
        Config::builder().add_source(File::from(default_file).format(FileFormat::Toml));
    if let Some(env_name) = &sources.env_name {
        builder = builder.add_source(
            File::from(sources.dir.join(format!("{env_name}.toml")))
                .format(FileFormat::Toml)
                .required(false),
        );
    }
    // A list given as an empty variable (`OLEG__BOT__DIGEST_TIMES=`) is an empty list, not a
    // list of one empty string.
    let empty_list = |var: &str, value: &str| {
        value.trim().is_empty()
            && sources
                .list_keys
                .iter()
                .any(|key| var == format!("OLEG__{}", key.to_uppercase().replace('.', "__")))
    };
    for key in &sources.list_keys {
        let var = format!("OLEG__{}", key.to_uppercase().replace('.', "__"));
        if sources.vars.get(&var).is_some_and(|v| empty_list(&var, v)) {
            builder = builder.set_override(*key, Vec::<String>::new())?;
        }
    }
    let vars = sources
        .vars
        .iter()
        .filter(|(k, v)| k.starts_with("OLEG__") && !empty_list(k, v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut environment = Environment::with_prefix("OLEG")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .source(Some(vars));
    if !sources.list_keys.is_empty() {
        environment = environment.list_separator(",");
        for key in &sources.list_keys {
            environment = environment.with_list_parse_key(key);
        }
    }
    let settings: T = builder.add_source(environment).build()?.try_deserialize()?;
    let mut check = Check::default();
    settings.validate("", &mut check);
    check.finish().map(|()| settings)
}

/// Deserializes a list that an environment variable may give as one bare value: with
/// `OLEG__BOT__ADMIN_IDS=900` the value arrives as the number 900, not as a list of one.
pub fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
    }
    Ok(
        match <OneOrMany<T> as serde::Deserialize>::deserialize(deserializer)? {
            OneOrMany::Many(items) => items,
            OneOrMany::One(item) => vec![item],
        },
    )
}
