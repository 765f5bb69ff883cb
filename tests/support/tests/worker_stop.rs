//! A worker's connections are closed when it stops, also when it stops on an error: the runtime
//! closes them ([`oleg_runtime::run`]), not each worker on its way out.

use anyhow::Context;
use oleg_bus::Bus;
use oleg_runtime::{Connections, Worker};
use oleg_settings::{AmqpSettings, Check, MongoSettings, Validate};
use oleg_store::Store;
use oleg_telemetry::{Component, Readiness};
use oleg_testkit::{amqp_settings, mongo_settings};
use prometheus::Registry;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

#[derive(serde::Deserialize)]
struct FailingConfig {
    amqp: AmqpSettings,
    mongo: MongoSettings,
}

impl Validate for FailingConfig {
    fn validate(&self, _: &str, _: &mut Check) {}
}

/// A worker that connects to both services and fails as soon as it runs.
struct Failing {
    connections: Connections,
}

impl Worker for Failing {
    type Config = FailingConfig;
    const NAME: &'static str = "oleg-failing";
    const SECTION: &'static str = "failing";

    async fn build(config: FailingConfig, stop: CancellationToken) -> anyhow::Result<Self> {
        let readiness = Readiness::new(&[Component::Broker]);
        let bus = Bus::connect(config.amqp, Self::NAME, &Registry::new(), readiness, stop)
            .await
            .context("connecting to the broker")?;
        let store = Store::connect(&config.mongo, Self::NAME)
            .await
            .context("configuring the store client")?;
        Ok(Self {
            connections: Connections { bus, store },
        })
    }

    fn metrics_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    fn connections(&self) -> Connections {
        self.connections.clone()
    }

    async fn run_until_stopped(self) -> anyhow::Result<()> {
        anyhow::bail!("failed while running")
    }
}

#[tokio::test]
async fn a_worker_that_fails_while_running_has_its_connections_closed_all_the_same() {
    let config = FailingConfig {
        amqp: amqp_settings("worker-stop"),
        mongo: mongo_settings("worker-stop"),
    };
    let worker = Failing::build(config, CancellationToken::new())
        .await
        .expect("both services are reachable");
    let store = worker.connections.store.clone();
    store
        .ensure_indexes()
        .await
        .expect("the store answers while the worker runs");
    let stopped = oleg_runtime::run(worker).await;
    assert_eq!(
        stopped.expect_err("the worker's error").to_string(),
        "failed while running"
    );
    let after = store.ensure_indexes().await;
    assert!(
        after.is_err(),
        "the store's client still answers: {after:?}"
    );
}
