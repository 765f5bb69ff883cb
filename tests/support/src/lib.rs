//! Harness for integration tests against the real services that `deploy/dev/setup.sh` starts
//! (or that `AMQP_URI` / `MONGODB_URI` point at). Every test gets its own queue prefix and
//! database name, so tests run in parallel without seeing each other.

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use oleg_bus::{QueueName, Topology};
use oleg_settings::{AmqpSettings, MongoSettings};
use secrecy::{ExposeSecret, SecretString};
use std::process::Command;

/// The broker under test: `AMQP_URI`, else the local one.
pub fn amqp_uri() -> String {
    std::env::var("AMQP_URI").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The store under test: `MONGODB_URI`, else the local Mongo-wire server.
pub fn mongodb_uri() -> String {
    std::env::var("MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into())
}

/// A name unique to this test run, e.g. `t-bus-roundtrip-3f2a9c1b`.
pub fn unique_name(test: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t-{test}-{}", &id[..8])
}

/// Bus settings with a fresh prefix and fast reconnects.
pub fn amqp_settings(test: &str) -> AmqpSettings {
    AmqpSettings {
        uri: SecretString::from(amqp_uri()),
        prefix: unique_name(test),
        prefetch: 64,
        max_attempts: 3,
        reconnect_min_ms: 50,
        reconnect_max_ms: 1000,
        confirm_timeout_ms: 20_000,
    }
}

/// Store settings with a fresh database (its name fits MongoDB's 63-byte limit).
pub fn mongo_settings(test: &str) -> MongoSettings {
    MongoSettings {
        uri: SecretString::from(mongodb_uri()),
        database: unique_name(test).replace('-', "_"),
        timeout_ms: 5_000,
    }
}

/// Deletes every queue and exchange under the settings' prefix.
pub async fn delete_topology(settings: &AmqpSettings) {
    let topology = Topology::new(settings.prefix.clone());
    let connection = Connection::connect(
        settings.uri.expose_secret(),
        ConnectionProperties::default(),
    )
    .await
    .expect("broker reachable for clean-up");
    let channel = connection.create_channel().await.expect("channel");
    for queue in QueueName::ALL {
        let _ = channel
            .queue_delete(topology.queue(queue).into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in [topology.events_exchange(), topology.dead_exchange()] {
        let _ = channel
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "clean-up".into()).await;
}

/// How many messages wait in a queue (ready, not delivered).
pub async fn queue_depth(settings: &AmqpSettings, queue: &str) -> u32 {
    let connection = Connection::connect(
        settings.uri.expose_secret(),
        ConnectionProperties::default(),
    )
    .await
    .expect("broker reachable");
    let channel = connection.create_channel().await.expect("channel");
    let declared = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("queue exists");
    let _ = connection.close(200, "done".into()).await;
    declared.message_count()
}

/// Closes, from the broker's side, every connection whose client-given name is `name`, as an
/// operator or a broker restart would. Returns how many were closed.
pub fn close_connections_named(name: &str) -> usize {
    // Tab-separated rows: the pid (in the form close_connection takes), then the client properties.
    let listed = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "--quiet",
            "--no-table-headers",
        ])
        .output()
        .expect("rabbitmqctl is needed to close connections from the broker side");
    let mut closed = 0;
    for row in String::from_utf8_lossy(&listed.stdout).lines() {
        let Some((pid, properties)) = row.split_once('\t') else {
            continue;
        };
        if properties.contains(&format!("\"{name}\"")) {
            let status = Command::new("rabbitmqctl")
                .args(["close_connection", pid, "closed by a test"])
                .status()
                .expect("rabbitmqctl close_connection");
            assert!(
                status.success(),
                "rabbitmqctl close_connection {pid} failed"
            );
            closed += 1;
        }
    }
    closed
}
