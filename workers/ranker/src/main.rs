use anyhow::Context;
use oleg_ranker::{Ranker, RankerConfig, RankerMetrics};
use oleg_runtime::{shutdown_on_signals, WorkerContext};
use oleg_settings::Sources;
use oleg_telemetry::Component;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: RankerConfig =
        oleg_settings::load(&Sources::from_process()).context("oleg-ranker configuration")?;
    let shutdown = shutdown_on_signals()?;
    let ctx = WorkerContext::start(
        "oleg-ranker",
        &config.log,
        &config.ranker.metrics_addr,
        &[Component::Broker, Component::Store],
        shutdown.clone(),
    )
    .await?;
    let metrics = RankerMetrics::register(&ctx.registry)?;
    let store = ctx
        .connect_store(&config.mongo, Duration::from_secs(2))
        .await?;
    let bus = ctx.connect_bus(&config.amqp).await?;
    Ranker::new(bus.clone(), store, config.ranker, metrics, shutdown)
        .run()
        .await;
    bus.close().await;
    tracing::info!("stopped");
    Ok(())
}
