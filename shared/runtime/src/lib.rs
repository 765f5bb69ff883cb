//! Start-up and shutdown shared by the workers, so that each `main.rs` only wires its parts.

use anyhow::Context;
use oleg_bus::Bus;
use oleg_settings::{AmqpSettings, LogSettings, MongoSettings};
use oleg_store::Store;
use oleg_telemetry::{Component, Readiness, TelemetryServer};
use prometheus::Registry;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A token cancelled at the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let cancel = token.clone();
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "shutting down: finishing in-flight work");
        cancel.cancel();
    });
    Ok(token)
}

/// What a running worker shares between its parts.
pub struct WorkerContext {
    pub name: &'static str,
    pub registry: Registry,
    pub readiness: Readiness,
    pub shutdown: CancellationToken,
    pub telemetry: TelemetryServer,
}

impl WorkerContext {
    /// Logs, metrics registry, readiness over `components`, and the telemetry endpoint.
    pub async fn start(
        name: &'static str,
        log: &LogSettings,
        metrics_addr: &str,
        components: &[Component],
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        oleg_telemetry::init_logging(log)?;
        let registry = oleg_telemetry::new_registry()?;
        let readiness = Readiness::new(components);
        let telemetry = oleg_telemetry::serve(
            metrics_addr,
            registry.clone(),
            readiness.clone(),
            shutdown.clone(),
        )
        .await
        .with_context(|| format!("{name}: starting the telemetry endpoint"))?;
        Ok(Self {
            name,
            registry,
            readiness,
            shutdown,
            telemetry,
        })
    }

    /// Connects to the broker (retrying until it answers or shutdown).
    pub async fn connect_bus(&self, settings: &AmqpSettings) -> anyhow::Result<Bus> {
        tracing::info!(uri = %settings.redacted_uri(), prefix = %settings.prefix, "connecting to the broker");
        Bus::connect(
            settings.clone(),
            self.name,
            &self.registry,
            self.readiness.clone(),
            self.shutdown.clone(),
        )
        .await
        .context("connecting to the broker")
    }

    /// Connects to the store and creates its indexes, retrying while it is unreachable; keeps
    /// the store's readiness current with a ping every `probe_every`.
    pub async fn connect_store(
        &self,
        settings: &MongoSettings,
        probe_every: Duration,
    ) -> anyhow::Result<Store> {
        tracing::info!(uri = %settings.redacted_uri(), database = %settings.database, "connecting to the store");
        let store = Store::connect(settings, self.name)
            .await
            .context("configuring the store client")?;
        let mut delay = Duration::from_millis(200);
        loop {
            match store.ensure_indexes().await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, ?delay, "store not reachable yet; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => anyhow::bail!("shut down before the store answered"),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.readiness.set(Component::Store, true);
        let (probe, readiness, shutdown) =
            (store.clone(), self.readiness.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(probe_every) => {}
                }
                let up = probe.ping().await.is_ok();
                readiness.set(Component::Store, up);
            }
        });
        Ok(store)
    }
}
