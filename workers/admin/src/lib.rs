//! `oleg-admin`: what an operator does to a running OLEG, against the same broker and store as the
//! workers and with the same configuration (`config/` files, `OLEG__…` overrides). Each command
//! prints a table or a document and exits with a code a script can test ([`AdminError::exit_code`]).

mod channels;
mod cli;
mod dead_letters;
mod models;
mod retention;
mod status;
mod table;
mod users;

pub use cli::{
    ChannelCommand, Cli, Command, DeadLetterCommand, LetterFilter, ModelCommand, RetentionCommand,
    UserCommand,
};

use oleg_bus::{Bus, BusError};
use oleg_settings::{AmqpSettings, Check, MongoSettings, SettingsError, Sources, Validate};
use oleg_store::{Store, StoreError};
use oleg_telemetry::{Component, Readiness};
use serde::Deserialize;
use std::io::{BufRead, Write};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the tool waits for the broker and the store before it gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What `oleg-admin` reads from configuration: the workers' broker and store sections, the
/// retention ages, and the ranker's candidate window they must exceed.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminConfig {
    pub amqp: AmqpSettings,
    pub mongo: MongoSettings,
    pub retention: RetentionSettings,
    pub ranker: CandidateWindow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    pub delivery_days: u32,
    pub unvoted_post_days: u32,
    pub keep_models: u32,
}

/// The one ranker setting retention depends on.
#[derive(Debug, Clone, Deserialize)]
pub struct CandidateWindow {
    pub candidate_days: u32,
}

impl Validate for AdminConfig {
    fn validate(&self, _: &str, check: &mut Check) {
        self.amqp.validate("amqp", check);
        self.mongo.validate("mongo", check);
        let r = &self.retention;
        check.require(
            r.delivery_days > self.ranker.candidate_days,
            "retention.delivery_days".into(),
            "more than ranker.candidate_days, or posts still offered could be sent again",
            r.delivery_days,
        );
        check.require(
            r.unvoted_post_days >= self.ranker.candidate_days,
            "retention.unvoted_post_days".into(),
            "at least ranker.candidate_days, or candidates would be removed",
            r.unvoted_post_days,
        );
        check.in_range("retention.keep_models".into(), r.keep_models, 1, 1000);
    }
}

/// Why a command failed, and the exit code that says so.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    NotFound(String),
    /// The command ran, but part of it could not be done (e.g. some dead letters not replayed).
    #[error("{0}")]
    Incomplete(String),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("the broker: {0}")]
    Bus(#[from] BusError),
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{0}")]
    Unreachable(String),
}

impl AdminError {
    /// 2: bad input (as clap's usage errors); 3: no such thing; 4: done only in part; 1: the
    /// services or the configuration failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::BadInput(_) => 2,
            AdminError::NotFound(_) => 3,
            AdminError::Incomplete(_) => 4,
            _ => 1,
        }
    }
}

/// The connections a command works through.
pub struct Admin {
    pub bus: Bus,
    pub store: Store,
    pub retention: RetentionSettings,
}

impl Admin {
    /// Loads the configuration and connects to the broker and the store, giving up after
    /// [`CONNECT_TIMEOUT`].
    pub async fn connect(sources: Sources) -> Result<Self, AdminError> {
        let config: AdminConfig = oleg_settings::load(&sources)?;
        let store = Store::connect(&config.mongo, "oleg-admin").await?;
        match reach_services(&config, &store).await {
            Ok(bus) => Ok(Self {
                bus,
                store,
                retention: config.retention,
            }),
            Err(error) => {
                // Closed on this way out too, as `close` does on the others: the store's client
                // is then not left to the runtime's end.
                store.close().await;
                Err(error)
            }
        }
    }

    /// Runs one command, writing its report to `out`; `input` answers confirmations.
    pub async fn run(
        &self,
        command: &Command,
        out: &mut dyn Write,
        input: &mut dyn BufRead,
    ) -> Result<(), AdminError> {
        match command {
            Command::Status => status::show(self, out).await,
            Command::DeadLetters { command } => dead_letters::run(self, command, out, input).await,
            Command::Channels { command } => channels::run(self, command, out).await,
            Command::Models { command } => models::run(self, command, out).await,
            Command::Users { command } => users::run(self, command, out, input).await,
            Command::Retention { command } => retention::run(self, command, out).await,
        }
    }

    pub async fn close(&self) {
        self.bus.close().await;
        self.store.close().await;
    }
}

/// Checks that the store answers, then connects to the broker, each within [`CONNECT_TIMEOUT`].
async fn reach_services(config: &AdminConfig, store: &Store) -> Result<Bus, AdminError> {
    tokio::time::timeout(CONNECT_TIMEOUT, store.ping())
        .await
        .map_err(|_| {
            AdminError::Unreachable(format!(
                "the store at {} did not answer within {CONNECT_TIMEOUT:?}",
                config.mongo.redacted_uri()
            ))
        })??;
    let give_up = CancellationToken::new();
    let timer = {
        let give_up = give_up.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CONNECT_TIMEOUT).await;
            give_up.cancel();
        })
    };
    let bus = Bus::connect(
        config.amqp.clone(),
        "oleg-admin",
        &prometheus::Registry::new(),
        Readiness::new(&[Component::Broker]),
        give_up,
    )
    .await
    .map_err(|error| match error {
        BusError::ShuttingDown => AdminError::Unreachable(format!(
            "the broker at {} did not answer within {CONNECT_TIMEOUT:?}",
            config.amqp.redacted_uri()
        )),
        other => other.into(),
    })?;
    timer.abort();
    Ok(bus)
}

/// Now, in Unix milliseconds.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Asks `question` and reads the answer; only `yes` agrees.
fn confirm(
    out: &mut dyn Write,
    input: &mut dyn BufRead,
    question: &str,
) -> Result<bool, AdminError> {
    write!(out, "{question} Type yes to go on: ")?;
    out.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}
