//! What every worker shows the outside: `tracing` logs (JSON on request), Prometheus metrics with
//! the process's memory, and an HTTP endpoint serving `/metrics`, `/healthz` and `/readyz`.

mod memory;
mod readiness;
mod server;

pub use memory::{resident_bytes, PeakMemoryCollector};
pub use readiness::{Component, Readiness};
pub use server::{serve, TelemetryServer};

use oleg_settings::{LogFormat, LogSettings};
use prometheus::Registry;
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("log filter {filter:?} is invalid: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("could not register a metric: {0}")]
    Register(#[from] prometheus::Error),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Installs the global `tracing` subscriber; `RUST_LOG` wins over `log.level`.
pub fn init_logging(settings: &LogSettings) -> Result<(), TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => from_env,
        _ => settings.level.clone(),
    };
    let filter =
        EnvFilter::try_new(&filter).map_err(|source| TelemetryError::Filter { filter, source })?;
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests running several workers in one process) keeps the first subscriber.
    let _ = match settings.format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init(),
        // Colours only for a terminal: logs written to files stay plain text, searchable.
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())))
            .try_init(),
    };
    Ok(())
}

/// A registry holding the process collector (resident and virtual memory, CPU, open files) and
/// the peak resident memory, all read from `/proc` at scrape time.
pub fn new_registry() -> Result<Registry, TelemetryError> {
    let registry = Registry::new();
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    registry.register(Box::new(PeakMemoryCollector::new()))?;
    Ok(registry)
}
