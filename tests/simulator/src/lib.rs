//! Simulated people with hidden tastes who use OLEG: through `oleg-bot` and a fake Telegram Bot
//! API, or straight through the queues and messages a bot uses. Also runs the whole pipeline on
//! one machine (the demo and the end-to-end test).

pub mod chart;
pub mod cli;
pub mod dashboards;
pub mod fixtures;
pub mod frontend;
pub mod informed;
pub mod pipeline;
pub mod prometheus;
pub mod run;
pub mod scale;
pub mod simulation;
pub mod taste;
pub mod vote_log;
pub mod world;

use oleg_settings::{AmqpSettings, Check, MongoSettings, Validate};

/// The services the simulator talks to: `config/` files (`OLEG_ENV=demo` for the demo's queue
/// prefix and database) plus `OLEG__AMQP__…` / `OLEG__MONGO__…` overrides.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ServiceConfig {
    pub amqp: AmqpSettings,
    pub mongo: MongoSettings,
}

impl Validate for ServiceConfig {
    fn validate(&self, _: &str, check: &mut Check) {
        self.amqp.validate("amqp", check);
        self.mongo.validate("mongo", check);
    }
}

impl ServiceConfig {
    /// Loads the configuration from `OLEG_CONFIG_DIR` (else the repository's `config/`), with
    /// `config/<default_env>.toml` on top when `OLEG_ENV` is not set.
    pub fn load(default_env: Option<&str>) -> anyhow::Result<Self> {
        let mut sources = oleg_settings::Sources::from_process();
        if std::env::var_os("OLEG_CONFIG_DIR").is_none() {
            sources.dir = oleg_testkit::repo_root().join("config");
        }
        if sources.env_name.is_none() {
            sources.env_name = default_env.map(str::to_owned);
        }
        oleg_settings::load(&sources).map_err(|e| anyhow::anyhow!("configuration: {e}"))
    }
}
