//! Start-up and shutdown shared by the workers. Each worker is one [`Worker`]: built from its
//! configuration ([`Worker::build`]: telemetry bound, services connected) and then run until a
//! stop is asked for ([`Worker::run_until_stopped`]). Its `main.rs` is [`main_of`]; the test kit
//! builds the same worker in-process, on port 0, with a token of its own for the stop.

use anyhow::Context;
use oleg_bus::Bus;
use oleg_settings::{AmqpSettings, LogSettings, MongoSettings};
use oleg_settings::{Sources, Validate};
use oleg_store::Store;
use oleg_telemetry::{Component, Readiness, TelemetryServer};
use prometheus::Registry;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A worker: built from its configuration, then run until stopped.
pub trait Worker: Sized {
    /// Everything it reads from configuration.
    type Config: DeserializeOwned + Validate;
    /// Its name in logs and in the broker's connection list.
    const NAME: &'static str;
    /// Its section of the configuration (`[ingest]`, …), which holds its `metrics_addr`.
    const SECTION: &'static str;
    /// Configuration keys an environment variable may give as a comma-separated list.
    const LIST_KEYS: &'static [&'static str] = &[];

    /// Starts telemetry (its address may name port 0) and connects to the services, giving up
    /// when `stop` is cancelled first; stopping later ends [`run_until_stopped`](Self::run_until_stopped).
    fn build(
        config: Self::Config,
        stop: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<Self>>;

    /// Where `/metrics`, `/healthz` and `/readyz` answer.
    fn metrics_addr(&self) -> SocketAddr;

    /// Its connections to the services, which [`run`] closes once it has stopped.
    fn connections(&self) -> Connections;

    /// Works until the stop token is cancelled and finishes what is in flight; [`run`] closes
    /// its connections after, however it ended.
    fn run_until_stopped(self) -> impl Future<Output = anyhow::Result<()>>;
}

/// A worker's connections to the broker and the store.
#[derive(Clone)]
pub struct Connections {
    pub bus: Bus,
    pub store: Store,
}

impl Connections {
    /// Closes the broker's connection, then the store's client ([`Store::close`]: before the
    /// runtime stops, so that none of the driver's tasks is cut short).
    pub async fn close(&self) {
        self.bus.close().await;
        tracing::info!("broker connection closed; closing the store's");
        self.store.close().await;
    }
}

/// Runs a built worker until it stops, then closes its connections: after a clean stop and
/// after an error alike.
pub async fn run<W: Worker>(worker: W) -> anyhow::Result<()> {
    let connections = worker.connections();
    let stopped = worker.run_until_stopped().await;
    // Said at each step, so that a stop that hangs shows where.
    tracing::info!("work finished; closing the connections");
    connections.close().await;
    stopped
}

/// Loads `W`'s configuration from `sources`.
pub fn load_config<W: Worker>(mut sources: Sources) -> anyhow::Result<W::Config> {
    sources.list_keys.extend_from_slice(W::LIST_KEYS);
    oleg_settings::load(&sources).with_context(|| format!("{} configuration", W::NAME))
}

/// A worker binary's whole `main`: configuration from the files and the environment, a stop at
/// the first SIGTERM or SIGINT, build, [`run`].
pub async fn main_of<W: Worker>() -> anyhow::Result<()> {
    let config = load_config::<W>(Sources::from_process())?;
    let worker = W::build(config, shutdown_on_signals()?).await?;
    run(worker).await?;
    tracing::info!("stopped");
    Ok(())
}

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
    /// Where the telemetry endpoint listens.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.telemetry.local_addr
    }

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
