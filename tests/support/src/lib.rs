//! Harness for integration tests against the real services that `deploy/dev/setup.sh` starts
//! (or that `AMQP_URI` / `MONGODB_URI` point at). Every test gets its own queue prefix and
//! database name, so tests run in parallel without seeing each other.

pub mod fault_proxy;
pub mod in_process;
pub mod processes;
mod proxy;
pub mod stalling_proxy;
pub mod stand_in_ranker;
pub mod telegram;

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

/// The first `host:port` of the store under test (for a proxy in front of it).
pub fn mongodb_address() -> String {
    first_address(&mongodb_uri())
}

/// The first `host:port` of the broker under test (for a proxy in front of it).
pub fn amqp_address() -> String {
    first_address(&amqp_uri())
}

/// The first `host:port` a `scheme://[user:password@]host:port[,…]/…` URI names.
fn first_address(uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let hosts = rest.split(['/', '?']).next().unwrap_or(rest);
    let hosts = hosts.rsplit_once('@').map_or(hosts, |(_, h)| h);
    hosts.split(',').next().unwrap_or(hosts).to_owned()
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
        rpc_reply: oleg_settings::ReplyMode::Queue,
        max_message_bytes: 262_144,
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

/// A connection to the first of the settings' broker nodes that answers (as the bus connects).
async fn connect_to_broker(settings: &AmqpSettings) -> Connection {
    let mut failure = None;
    for node in settings.node_uris() {
        match Connection::connect(node, ConnectionProperties::default()).await {
            Ok(connection) => return connection,
            Err(error) => failure = Some(error),
        }
    }
    panic!("no broker node reachable (deploy/dev/setup.sh starts one): {failure:?}")
}

/// Deletes every queue and exchange under the settings' prefix.
pub async fn delete_topology(settings: &AmqpSettings) {
    let topology = Topology::new(settings.prefix.clone());
    let connection = connect_to_broker(settings).await;
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

/// Deletes one queue, as an operator might by mistake.
pub async fn delete_queue(settings: &AmqpSettings, queue: &str) {
    let connection = connect_to_broker(settings).await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .expect("queue deleted");
    let _ = connection.close(200, "done".into()).await;
}

/// How many messages wait in a queue (ready, not delivered).
pub async fn queue_depth(settings: &AmqpSettings, queue: &str) -> u32 {
    declare_passively(settings, queue).await.message_count()
}

/// Checks `holds` every 50 ms until it does; after `within`, panics with what `failure` says
/// then (a worker's log, the state reached).
pub async fn wait_until(
    within: std::time::Duration,
    mut holds: impl AsyncFnMut() -> bool,
    failure: impl FnOnce() -> String,
) {
    let deadline = std::time::Instant::now() + within;
    while !holds().await {
        if std::time::Instant::now() >= deadline {
            panic!("not within {within:?}: {}", failure());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until the broker has `count` consumers attached to a queue: a worker is ready before
/// the broker starts handing it deliveries.
pub async fn wait_for_consumers(settings: &AmqpSettings, queue: &str, count: u32) {
    let attached = std::cell::Cell::new(0);
    wait_until(
        std::time::Duration::from_secs(30),
        async || {
            attached.set(declare_passively(settings, queue).await.consumer_count());
            attached.get() >= count
        },
        || format!("{queue} has {} consumers, not {count}", attached.get()),
    )
    .await;
}

async fn declare_passively(settings: &AmqpSettings, queue: &str) -> lapin::Queue {
    let connection = connect_to_broker(settings).await;
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
    declared
}

/// Closes, from the broker's side, the connections of the bus named `name` on queue prefix
/// `prefix` (a bus names its connections `<name>@<prefix>`), as an operator or a broker restart
/// would. Returns how many were closed.
pub fn close_connections_named(name: &str, prefix: &str) -> usize {
    close_connections_where(|connection| connection == format!("{name}@{prefix}"))
}

/// Closes, from the broker's side, every connection of the deployment (or test) using queue
/// prefix `prefix`: `rabbitmqctl close_all_connections`, without touching other tests'.
pub fn close_deployment_connections(prefix: &str) -> usize {
    close_connections_where(|connection| connection.ends_with(&format!("@{prefix}")))
}

fn close_connections_where(chosen: impl Fn(&str) -> bool) -> usize {
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
        let Some(connection) = connection_name(properties) else {
            continue;
        };
        if chosen(connection) {
            let status = Command::new("rabbitmqctl")
                .args(["close_connection", pid, "closed by a test"])
                .stdout(std::process::Stdio::null())
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

/// The `connection_name` in rabbitmqctl's rendering of client properties:
/// `[{"connection_name","oleg-bot@oleg"},…]`.
fn connection_name(properties: &str) -> Option<&str> {
    let (_, rest) = properties.split_once("{\"connection_name\",\"")?;
    rest.split_once('"').map(|(name, _)| name)
}

/// The repository root (for `config/` and `var/`).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The sum of the series on a `/metrics` page that start with `series` (a name, or a name and
/// the first of its labels: `oleg_x_total{outcome="duplicate"`); 0 if none.
pub fn metric_sum(page: &str, series: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(series) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A free loopback port (bound, then released), never one handed out before in this process:
/// the kernel may pick a released port again, and two workers told the same port would leave one
/// dead while the other answers its readiness probe.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// A scratch folder under `target/test-runs/`, emptied first.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = repo_root().join("target/test-runs").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `OLEG__…` variables that point a worker at these services.
pub fn worker_env(amqp: &AmqpSettings, mongo: &MongoSettings) -> Vec<(String, String)> {
    vec![
        (
            "OLEG_CONFIG_DIR".into(),
            repo_root().join("config").display().to_string(),
        ),
        (
            "OLEG__AMQP__URI".into(),
            amqp.uri.expose_secret().to_owned(),
        ),
        ("OLEG__AMQP__PREFIX".into(), amqp.prefix.clone()),
        (
            "OLEG__AMQP__RECONNECT_MIN_MS".into(),
            amqp.reconnect_min_ms.to_string(),
        ),
        (
            "OLEG__AMQP__RECONNECT_MAX_MS".into(),
            amqp.reconnect_max_ms.to_string(),
        ),
        (
            "OLEG__MONGO__URI".into(),
            mongo.uri.expose_secret().to_owned(),
        ),
        ("OLEG__MONGO__DATABASE".into(), mongo.database.clone()),
        (
            "OLEG__MONGO__TIMEOUT_MS".into(),
            mongo.timeout_ms.to_string(),
        ),
    ]
}

/// A worker binary running as its own process, logging to `<scratch>/<name>.log`.
pub struct WorkerProcess {
    /// Behind a lock so that `wait_ready`, which takes `&self`, can see whether it has exited.
    child: std::sync::Mutex<std::process::Child>,
    pub metrics_addr: String,
    pub log: std::path::PathBuf,
}

impl WorkerProcess {
    /// Starts `binary` with `env`; `metrics_key` is its metrics address key (e.g.
    /// `OLEG__INGEST__METRICS_ADDR`), set to a free port.
    pub fn spawn(
        binary: &str,
        env: &[(String, String)],
        metrics_key: &str,
        log: std::path::PathBuf,
    ) -> Self {
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        Self::spawn_at(binary, env, metrics_key, metrics_addr, log)
    }

    /// As [`spawn`](Self::spawn), serving telemetry on `metrics_addr`.
    pub fn spawn_at(
        binary: &str,
        env: &[(String, String)],
        metrics_key: &str,
        metrics_addr: String,
        log: std::path::PathBuf,
    ) -> Self {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("worker log");
        let child = std::process::Command::new(binary)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(metrics_key, &metrics_addr)
            .env("RUST_LOG", "info,lapin=warn,lapin::returned_messages=error")
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        Self {
            child: std::sync::Mutex::new(child),
            metrics_addr,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().expect("child lock").id()
    }

    /// How it exited, or `None` while it runs.
    fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.child
            .lock()
            .expect("child lock")
            .try_wait()
            .ok()
            .flatten()
    }

    /// GET `path` on the worker's telemetry endpoint: `(status, body)`, or `None` if it does not answer.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        get_telemetry(&self.metrics_addr, path).await
    }

    /// Waits until `/readyz` says 200; panics, with its log, if the worker exits first: a worker
    /// that died at start is not waited on, nor, once it has exited, taken as ready by whatever
    /// else answers on its address (a fixed address can still be taken between a worker's start
    /// and its death: `LocalPipeline::start` checks those before spawning).
    pub async fn wait_ready(&self, limit: std::time::Duration) {
        wait_telemetry_ready(
            &self.metrics_addr,
            limit,
            || self.exit_status().map(|status| status.to_string()),
            || self.log_tail(),
        )
        .await
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        let child = self.child.get_mut().expect("child lock");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERM, then waits for the process to exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let child = self.child.get_mut().expect("child lock");
        signal(child.id(), "TERM");
        child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// SIGTERM, then waits up to `limit`: whether it exited successfully, `None` if it still
    /// runs.
    pub async fn terminate_within(&mut self, limit: std::time::Duration) -> Option<bool> {
        signal(self.pid(), "TERM");
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                return Some(status.success());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        None
    }

    /// SIGSTOP: frozen where it stands, as by a long pause of its machine.
    pub fn freeze(&self) {
        signal(self.pid(), "STOP");
    }

    /// SIGCONT: goes on from where it was frozen.
    pub fn thaw(&self) {
        signal(self.pid(), "CONT");
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// GET `path` on a telemetry endpoint: `(status, body)`, or `None` if it does not answer.
pub(crate) async fn get_telemetry(addr: &str, path: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("http://{addr}{path}")).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Waits until `/readyz` at `addr` says 200; panics with `log()` after `limit`, or as soon as
/// `exited()` says how the worker ended. A 200 counts only if the worker had not exited by the
/// time it came.
pub(crate) async fn wait_telemetry_ready(
    addr: &str,
    limit: std::time::Duration,
    exited: impl Fn() -> Option<String>,
    log: impl Fn() -> String,
) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let ready = matches!(get_telemetry(addr, "/readyz").await, Some((200, _)));
        if let Some(how) = exited() {
            panic!("worker exited ({how}) before it was ready; log:\n{}", log());
        }
        if ready {
            return;
        }
        if std::time::Instant::now() >= deadline {
            panic!("worker not ready within {limit:?}; log:\n{}", log());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
}

/// A private Mongo-wire server (nx-27017) that a test may stop and start again, keeping its data.
pub struct StandInServer {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl StandInServer {
    pub fn start(name: &str) -> Self {
        let mut server = Self {
            port: free_port(),
            dir: scratch_dir(name),
            child: None,
        };
        server.resume();
        server
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// SIGTERM and wait (acknowledged writes survive, as with MongoDB).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
    }

    /// Starts (again) on the same port and data.
    pub fn resume(&mut self) {
        let binary = std::env::var("OLEG_NX_27017").unwrap_or_else(|_| {
            repo_root()
                .join("var/venv/bin/nx-27017")
                .display()
                .to_string()
        });
        let data = self.dir.join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .arg("--log-file")
            .arg(self.dir.join("server.log"))
            .arg("--pid-file")
            .arg(self.dir.join("server.pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary} (deploy/dev/setup.sh installs it): {e}"));
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nx-27017 did not listen on {}",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for StandInServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The services one integration test uses: a bus connection and a store, under names of its own.
pub struct TestServices {
    pub amqp: AmqpSettings,
    pub mongo: MongoSettings,
    pub bus: oleg_bus::Bus,
    pub store: oleg_store::Store,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub name: String,
    in_process: std::sync::Mutex<Vec<in_process::Finished>>,
}

impl TestServices {
    /// Connects to the broker (fresh prefix) and to `mongo`, whose indexes it creates; empties
    /// the test's log folder, `target/test-runs/<test>/`.
    pub async fn start(test: &str, mongo: MongoSettings) -> Self {
        scratch_dir(test);
        let amqp = amqp_settings(test);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let bus = oleg_bus::Bus::connect(
            amqp.clone(),
            test,
            &prometheus::Registry::new(),
            oleg_telemetry::Readiness::default(),
            shutdown.clone(),
        )
        .await
        .expect("the broker is reachable (deploy/dev/setup.sh starts it)");
        let store = oleg_store::Store::connect(&mongo, test)
            .await
            .expect("store client");
        store
            .ensure_indexes()
            .await
            .expect("the store is reachable (deploy/dev/setup.sh starts it)");
        Self {
            amqp,
            mongo,
            bus,
            store,
            shutdown,
            name: test.to_owned(),
            in_process: Default::default(),
        }
    }

    /// Starts a worker binary on these services, with `extra` settings, logging to
    /// `target/test-runs/<test>/<log>`.
    pub fn spawn(
        &self,
        binary: &str,
        metrics_key: &str,
        log: &str,
        extra: &[(&str, &str)],
    ) -> WorkerProcess {
        let mut env = worker_env(&self.amqp, &self.mongo);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let dir = repo_root().join("target/test-runs").join(&self.name);
        std::fs::create_dir_all(&dir).expect("log dir");
        WorkerProcess::spawn(binary, &env, metrics_key, dir.join(log))
    }

    /// Starts worker `W` in-process on these services, with `extra` settings; it stops at the
    /// latest when the services finish.
    pub async fn start_in_process<W: oleg_runtime::Worker>(
        &self,
        extra: &[(&str, &str)],
    ) -> in_process::InProcess
    where
        W::Config: Send + 'static,
    {
        let mut vars = worker_env(&self.amqp, &self.mongo);
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (worker, finished) =
            in_process::InProcess::start::<W>(vars, self.shutdown.child_token()).await;
        self.in_process.lock().unwrap().push(finished);
        worker
    }

    /// Stops the in-process workers and waits for them, closes the bus and removes the test's
    /// queues, exchanges and database.
    pub async fn finish(self) {
        self.shutdown.cancel();
        let workers = std::mem::take(&mut *self.in_process.lock().unwrap());
        for mut finished in workers {
            let ended = finished.wait_for(|done| *done);
            // A sender dropped without a word means a panicked thread: finished all the same.
            let stopped = tokio::time::timeout(std::time::Duration::from_secs(30), ended).await;
            assert!(
                stopped.is_ok(),
                "an in-process worker did not stop within 30 s"
            );
        }
        self.bus.close().await;
        delete_topology(&self.amqp).await;
        let _ = self.store.drop_database().await;
    }
}

/// A post as the scraper would announce it, published now.
pub fn scraped_post(post: &oleg_messages::PostRef) -> oleg_messages::ScrapedPost {
    oleg_messages::ScrapedPost {
        schema_version: oleg_messages::SCHEMA_VERSION,
        channel: post.channel.clone(),
        post_id: post.post_id,
        published_at: chrono::Utc::now(),
        text: format!("post {post}"),
        links: vec![],
        views: None,
        page_median_views: None,
        media: vec![],
        forwarded_from: None,
        reply_to: None,
        scraped_at: chrono::Utc::now(),
    }
}

/// Panics unless `body` (as a worker sent it) validates against the message kind's JSON Schema.
pub fn assert_schema_valid(kind: oleg_messages::MessageKind, body: &[u8]) {
    let document: serde_json::Value = serde_json::from_slice(body).expect("a JSON body");
    let schema: serde_json::Value = serde_json::from_str(kind.schema()).expect("a JSON schema");
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("a valid schema");
    let problems: Vec<String> = validator
        .iter_errors(&document)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        problems.is_empty(),
        "{} refuses {document}: {problems:?}",
        kind.name()
    );
}
