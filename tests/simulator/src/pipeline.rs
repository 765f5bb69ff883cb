//! The workers as local processes on given services (the four of the pipeline, and the bot when
//! people use it), and a watch on their `/metrics`.

use anyhow::Context;
use oleg_settings::{AmqpSettings, MongoSettings};
use oleg_testkit::{worker_env, WorkerProcess};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A worker: its binary and the key of its telemetry address.
#[derive(Debug, Clone, Copy)]
pub struct WorkerKind {
    pub name: &'static str,
    pub binary: &'static str,
    pub metrics_key: &'static str,
}

pub const WORKERS: [WorkerKind; 4] = [
    WorkerKind {
        name: "scraper",
        binary: "oleg-scraper",
        metrics_key: "OLEG__SCRAPER__METRICS_ADDR",
    },
    WorkerKind {
        name: "ingest",
        binary: "oleg-ingest",
        metrics_key: "OLEG__INGEST__METRICS_ADDR",
    },
    WorkerKind {
        name: "trainer",
        binary: "oleg-trainer",
        metrics_key: "OLEG__TRAINER__METRICS_ADDR",
    },
    WorkerKind {
        name: "ranker",
        binary: "oleg-ranker",
        metrics_key: "OLEG__RANKER__METRICS_ADDR",
    },
];

/// The Telegram frontend, started when a (fake) Bot API is given.
pub const BOT: WorkerKind = WorkerKind {
    name: "bot",
    binary: "oleg-bot",
    metrics_key: "OLEG__BOT__METRICS_ADDR",
};

/// A worker binary built beside the running executable (`target/<profile>/`), also when the
/// executable is a test in `target/<profile>/deps/`.
pub fn worker_binary(binary: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(binary);
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: build the workers first (cargo build --workspace --bins)",
        path.display()
    );
    Ok(path)
}

#[derive(Debug, Clone)]
pub struct PipelineOptions {
    pub amqp: AmqpSettings,
    pub mongo: MongoSettings,
    /// The workers' `OLEG_ENV` (`config/<config_env>.toml` on top of the defaults).
    pub config_env: String,
    /// Where the scraper reads `/s/<channel>` pages.
    pub site_url: String,
    pub channels: Vec<String>,
    /// Each worker logs to `<log_dir>/<worker>.log`.
    pub log_dir: PathBuf,
    /// Telemetry addresses by worker name; a free port where absent.
    pub metrics_addrs: BTreeMap<&'static str, String>,
    /// Further `OLEG__…` settings for every worker.
    pub extra: Vec<(String, String)>,
    /// The Bot API `oleg-bot` talks to; no bot is started when absent.
    pub bot_api_url: Option<String>,
}

pub struct LocalPipeline {
    pub workers: Vec<(WorkerKind, WorkerProcess)>,
}

/// How long a worker may take to stop after SIGTERM (the longest wait it has for in-flight work
/// is `amqp.confirm_timeout_ms` and the store's timeouts, well under this).
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// The metrics that tell where a message went: each worker's publishes by outcome and their
/// retries, the bot's updates, those postponed for another attempt and the presses it refused,
/// and each consumer's deliveries, those handed back and those dead-lettered.
pub const MESSAGE_FLOW_METRICS: &[&str] = &[
    "oleg_amqp_published_total",
    "oleg_amqp_publish_retries_total",
    "oleg_bot_updates_total",
    "oleg_bot_updates_postponed_total",
    "oleg_bot_callback_refusals_total",
    "oleg_amqp_consumed_total",
    "oleg_amqp_retried_total",
    "oleg_amqp_dead_lettered_total",
];

impl LocalPipeline {
    /// Starts the four workers (and the bot, given a Bot API) with the options' `OLEG_ENV` on
    /// their services.
    pub fn start(options: &PipelineOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&options.log_dir)?;
        let mut env = worker_env(&options.amqp, &options.mongo);
        env.extend([
            ("OLEG_ENV".to_owned(), options.config_env.clone()),
            (
                "OLEG__SCRAPER__BASE_URL".to_owned(),
                options.site_url.clone(),
            ),
            (
                "OLEG__SCRAPER__CHANNELS".to_owned(),
                options.channels.join(","),
            ),
            // One OpenMP thread: the trainer shares a small machine with everything else.
            ("OMP_NUM_THREADS".to_owned(), "1".to_owned()),
        ]);
        if let Some(api_url) = &options.bot_api_url {
            let secret = uuid::Uuid::new_v4().simple().to_string();
            env.extend([
                ("OLEG__BOT__API_URL".to_owned(), api_url.clone()),
                // The fake API takes any token of the right shape.
                (
                    "OLEG__BOT__TOKEN".to_owned(),
                    "100000:local-fake-bot-api".to_owned(),
                ),
                ("OLEG__BOT__CALLBACK_SECRET".to_owned(), secret),
            ]);
        }
        env.extend(options.extra.iter().cloned());
        let bot = options.bot_api_url.as_ref().map(|_| BOT);
        let mut workers = Vec::new();
        for kind in WORKERS.into_iter().chain(bot) {
            let binary = worker_binary(kind.binary)?;
            let log = options.log_dir.join(format!("{}.log", kind.name));
            let _ = std::fs::remove_file(&log);
            let process = match options.metrics_addrs.get(kind.name) {
                Some(addr) => {
                    // A worker that cannot take its address exits, and whatever holds it (often
                    // the same worker of an earlier run, not yet gone) would answer for it.
                    std::net::TcpListener::bind(addr).with_context(|| {
                        format!(
                            "{}'s telemetry address {addr} is taken: is an earlier run's {} \
                             still running?",
                            kind.name, kind.binary
                        )
                    })?;
                    WorkerProcess::spawn_at(
                        &binary.display().to_string(),
                        &env,
                        kind.metrics_key,
                        addr.clone(),
                        log,
                    )
                }
                None => {
                    WorkerProcess::spawn(&binary.display().to_string(), &env, kind.metrics_key, log)
                }
            };
            workers.push((kind, process));
        }
        Ok(Self { workers })
    }

    /// Waits until every worker's `/readyz` says 200.
    pub async fn wait_ready(&self, within: Duration) {
        for (_, worker) in &self.workers {
            worker.wait_ready(within).await;
        }
    }

    pub fn worker(&self, name: &str) -> &WorkerProcess {
        &self
            .workers
            .iter()
            .find(|(kind, _)| kind.name == name)
            .expect("one of the workers")
            .1
    }

    /// The lines of each worker's `/metrics` that start with one of `names`, each after its
    /// worker's name; a worker that does not answer says so.
    pub async fn metric_lines(&self, names: &[&str]) -> Vec<String> {
        let mut lines = Vec::new();
        for (kind, worker) in &self.workers {
            match worker.get("/metrics").await {
                Some((_, metrics)) => lines.extend(
                    metrics
                        .lines()
                        .filter(|line| names.iter().any(|name| line.starts_with(name)))
                        .map(|line| format!("{}: {line}", kind.name)),
                ),
                None => lines.push(format!("{}: /metrics did not answer", kind.name)),
            }
        }
        lines
    }

    /// `(worker name, telemetry address)` of each worker.
    pub fn metrics_targets(&self) -> Vec<(&'static str, String)> {
        self.workers
            .iter()
            .map(|(kind, worker)| (kind.name, worker.metrics_addr.clone()))
            .collect()
    }

    /// SIGTERM to each worker, newest stage first; returns the workers that did not exit cleanly.
    /// One still running [`STOP_LIMIT`] later is killed, said on stderr and returned with them,
    /// so that a stop that hangs fails the run instead of holding it.
    pub async fn stop(&mut self) -> Vec<&'static str> {
        let mut unclean = Vec::new();
        for (kind, worker) in self.workers.iter_mut().rev() {
            match worker.terminate_within(STOP_LIMIT).await {
                Some(true) => {}
                Some(false) => unclean.push(kind.name),
                None => {
                    eprintln!(
                        "· {} had not stopped {STOP_LIMIT:?} after SIGTERM: killed; the end of its log:\n{}",
                        kind.name,
                        worker.log_tail()
                    );
                    worker.kill();
                    unclean.push(kind.name);
                }
            }
        }
        unclean
    }
}

/// Scrapes every worker's `/metrics` at an interval and counts the scrapes that failed.
pub struct MetricsWatch {
    failures: Arc<Mutex<BTreeMap<&'static str, u32>>>,
    scrapes: Arc<Mutex<u32>>,
    stop: CancellationToken,
}

impl MetricsWatch {
    pub fn start(targets: Vec<(&'static str, String)>, every: Duration) -> Self {
        let failures: Arc<Mutex<BTreeMap<&'static str, u32>>> = Arc::default();
        let scrapes: Arc<Mutex<u32>> = Arc::default();
        let stop = CancellationToken::new();
        let (failed, done, token) = (failures.clone(), scrapes.clone(), stop.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !token.is_cancelled() {
                for (name, addr) in &targets {
                    let answered = client
                        .get(format!("http://{addr}/metrics"))
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    if !answered {
                        *failed
                            .lock()
                            .expect("not poisoned")
                            .entry(name)
                            .or_default() += 1;
                    }
                }
                *done.lock().expect("not poisoned") += 1;
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
        Self {
            failures,
            scrapes,
            stop,
        }
    }

    /// Rounds of scrapes done, and the failed scrapes by worker.
    pub fn finish(self) -> (u32, BTreeMap<&'static str, u32>) {
        self.stop.cancel();
        let scrapes = *self.scrapes.lock().expect("not poisoned");
        let failures = self.failures.lock().expect("not poisoned").clone();
        (scrapes, failures)
    }
}
