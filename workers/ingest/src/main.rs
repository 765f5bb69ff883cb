use anyhow::Context;
use oleg_ingest::{Ingest, IngestConfig, IngestMetrics};
use oleg_runtime::{shutdown_on_signals, WorkerContext};
use oleg_settings::Sources;
use oleg_telemetry::Component;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: IngestConfig =
        oleg_settings::load(&Sources::from_process()).context("oleg-ingest configuration")?;
    let shutdown = shutdown_on_signals()?;
    let ctx = WorkerContext::start(
        "oleg-ingest",
        &config.log,
        &config.ingest.metrics_addr,
        &[Component::Broker, Component::Store],
        shutdown.clone(),
    )
    .await?;
    let metrics = IngestMetrics::register(&ctx.registry)?;
    let store = ctx
        .connect_store(
            &config.mongo,
            Duration::from_millis(config.ingest.store_probe_ms),
        )
        .await?;
    let bus = ctx.connect_bus(&config.amqp).await?;
    tracing::info!(batch_size = config.ingest.batch_size, "ingesting votes");
    Ingest::new(
        bus.clone(),
        store,
        config.ingest,
        metrics,
        ctx.readiness.clone(),
        shutdown,
    )
    .run()
    .await;
    bus.close().await;
    tracing::info!("stopped");
    Ok(())
}
