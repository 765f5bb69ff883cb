//! The whole pipeline on one machine: the saved channel pages on a local site, the four workers,
//! optionally Prometheus, and the simulated people. The demo and the end-to-end test both run it.

use crate::fixtures::FixtureSite;
use crate::frontend::{Frontend, FrontendKind};
use crate::pipeline::{LocalPipeline, MetricsWatch, PipelineOptions, MESSAGE_FLOW_METRICS};
use crate::prometheus::{scrape_config, PrometheusServer};
use crate::simulation::{RoundReport, SimulationSettings, Simulator};
use crate::world::{World, WorldSettings};
use mongodb::bson::doc;
use oleg_bus::Bus;
use oleg_messages::{ModelStatus, ModelVersion, PostRef, UserId};
use oleg_settings::{AmqpSettings, MongoSettings};
use oleg_store::Store;
use oleg_testkit::telegram::FakeTelegram;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct RunSettings {
    pub simulation: SimulationSettings,
    /// How the people reach OLEG: through the bot (and a fake Telegram), or the queues.
    pub frontend: FrontendKind,
    /// Saved `t.me/s/<channel>` pages.
    pub fixtures: PathBuf,
    /// A generated world served beside the saved pages, its posts arriving round after round.
    pub world: Option<WorldSettings>,
    /// The workers' `OLEG_ENV`: `demo`, or `scale` for the scale run.
    pub config_env: String,
    pub amqp: AmqpSettings,
    pub mongo: MongoSettings,
    /// Worker logs, Prometheus' data and configuration.
    pub work_dir: PathBuf,
    /// Telemetry addresses by worker name; free ports where absent.
    pub metrics_addrs: BTreeMap<&'static str, String>,
    /// Where a local Prometheus listens; none started when absent.
    pub prometheus_listen: Option<String>,
    /// RabbitMQ's Prometheus plugin, scraped beside the workers.
    pub rabbitmq_metrics: String,
    /// How long to wait after a round for the trainer to publish a model from its votes.
    pub model_wait: Duration,
    /// Further `OLEG__…` settings for every worker.
    pub extra: Vec<(String, String)>,
}

/// Told about progress (the demo draws it; tests ignore it).
pub trait Observer: Sync {
    fn stage(&self, _what: &str) {}
    fn round_started(&self, _round: u32, _requests: u32) {}
    fn answered(&self) {}
    fn round_finished(&self, _report: &RoundReport, _stored_votes: u64) {}
}

/// Draws nothing.
pub struct Quiet;
impl Observer for Quiet {}

pub struct PipelineRun {
    pub settings: RunSettings,
    pub channels: Vec<String>,
    pub pipeline: LocalPipeline,
    /// The fake Telegram Bot API the bot talks to (bot frontend).
    pub telegram: Option<FakeTelegram>,
    pub prometheus: Option<PrometheusServer>,
    pub bus: Bus,
    pub store: Store,
    pub world: Option<Arc<World>>,
    watch: Option<MetricsWatch>,
    shutdown: CancellationToken,
}

/// How a run ended.
#[derive(Debug)]
pub struct RunOutcome {
    pub reports: Vec<RoundReport>,
    pub votes_sent: u64,
    pub votes_stored: u64,
    pub repeats: u64,
    pub posts: usize,
    /// Posts people asked for with `/send_new` (bot frontend) and got.
    pub sent_new: u64,
}

impl PipelineRun {
    /// Serves the pages, clears the run's database and queues, starts the workers (and
    /// Prometheus) and waits until the scraper has stored posts of every channel.
    pub async fn start(settings: RunSettings, observer: &dyn Observer) -> anyhow::Result<Self> {
        let mut site = FixtureSite::load(&settings.fixtures)?;
        let saved = site.channels().len();
        let world = settings.world.map(|w| Arc::new(World::generate(w)));
        let mut extra = Vec::new();
        if let Some(world) = &world {
            site = site.with_world(world.clone());
            // New posts appear before every round: the scraper looks every second (unless the
            // run's own settings, which come after, say otherwise).
            extra.extend([
                ("OLEG__SCRAPER__POLL_INTERVAL_S".to_owned(), "1".to_owned()),
                (
                    "OLEG__SCRAPER__REQUEST_INTERVAL_MS".to_owned(),
                    "10".to_owned(),
                ),
            ]);
        }
        extra.extend(settings.extra.iter().cloned());
        let channels = site.channels();
        let site_url = site.serve().await?;
        observer.stage(&format!(
            "serving {saved} saved channel pages and {} generated channels at {site_url}",
            channels.len() - saved
        ));

        let shutdown = CancellationToken::new();
        let store = Store::connect(&settings.mongo, "oleg-demo").await?;
        store.drop_database().await?;
        oleg_testkit::delete_topology(&settings.amqp).await;
        let bus = Bus::connect(
            settings.amqp.clone(),
            "oleg-demo",
            &prometheus::Registry::new(),
            oleg_telemetry::Readiness::default(),
            shutdown.clone(),
        )
        .await?;

        let telegram = match settings.frontend {
            FrontendKind::Bot => {
                let (telegram, url) = FakeTelegram::serve().await;
                observer.stage(&format!("a fake Telegram Bot API for oleg-bot at {url}"));
                Some((telegram, url))
            }
            FrontendKind::Queues => None,
        };
        let pipeline = LocalPipeline::start(&PipelineOptions {
            amqp: settings.amqp.clone(),
            mongo: settings.mongo.clone(),
            config_env: settings.config_env.clone(),
            site_url,
            channels: channels.clone(),
            log_dir: settings.work_dir.join("logs"),
            metrics_addrs: settings.metrics_addrs.clone(),
            extra,
            bot_api_url: telegram.as_ref().map(|(_, url)| url.clone()),
        })?;
        let started: Vec<&str> = pipeline.workers.iter().map(|(k, _)| k.binary).collect();
        observer.stage(&format!("started {}", started.join(", ")));
        pipeline.wait_ready(Duration::from_secs(60)).await;
        let watch = MetricsWatch::start(pipeline.metrics_targets(), Duration::from_millis(500));

        let prometheus = match &settings.prometheus_listen {
            Some(listen) => {
                let config = settings.work_dir.join("prometheus.yml");
                std::fs::write(
                    &config,
                    scrape_config(
                        &pipeline.metrics_targets(),
                        &settings.rabbitmq_metrics,
                        "2s",
                        &crate::prometheus::deploy_dir().join("alerts.yml"),
                    ),
                )?;
                let server = PrometheusServer::start(
                    &config,
                    &settings.work_dir.join("prometheus-data"),
                    listen,
                    &settings.work_dir.join("logs/prometheus.log"),
                )?;
                server.wait_ready(Duration::from_secs(30)).await?;
                observer.stage(&format!("Prometheus scrapes every worker: {}", server.url));
                Some(server)
            }
            None => None,
        };

        let run = Self {
            settings,
            channels,
            pipeline,
            telegram: telegram.map(|(telegram, _)| telegram),
            prometheus,
            bus,
            store,
            world,
            watch: Some(watch),
            shutdown,
        };
        run.wait_for_posts(Duration::from_secs(90)).await?;
        observer.stage("the scraper stored posts of every channel");
        Ok(run)
    }

    async fn wait_for_posts(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let stored = self
                .store
                .collections()
                .posts
                .distinct("channel", doc! {})
                .await?;
            if stored.len() >= self.channels.len() {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "posts of only {} of {} channels stored within {within:?}; scraper log:\n{}",
                stored.len(),
                self.channels.len(),
                self.pipeline.worker("scraper").log_tail()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Waits until the scraper has stored every post the world has published.
    pub async fn wait_for_world_posts(
        &self,
        world: &World,
        within: Duration,
    ) -> anyhow::Result<()> {
        wait_for_count(
            &self.store.collections().posts,
            doc! {"channel": {"$in": world.channels()}},
            world.published() as u64,
            "generated posts",
            within,
        )
        .await
    }

    /// The simulated people sign up and play their rounds; after each round the run waits until
    /// the votes are stored and for the model trained on them to serve.
    pub async fn simulate(&self, observer: &dyn Observer) -> anyhow::Result<RunOutcome> {
        let simulation = &self.settings.simulation;
        let frontend = match &self.telegram {
            Some(telegram) => Frontend::bot(telegram.clone(), simulation.seed),
            None => Frontend::queues(self.bus.clone()).await?,
        };
        let mut simulator = Simulator::new(
            self.bus.clone(),
            self.store.clone(),
            simulation.clone(),
            frontend,
            self.world.clone(),
        )
        .await?;
        simulator.sign_up().await?;
        observer.stage(&format!(
            "{} people signed up; {} posts to recommend",
            simulation.people,
            simulator.posts()
        ));
        let mut reports = Vec::new();
        let mut stored = 0;
        for round in 1..=simulation.rounds {
            if let Some(world) = &self.world {
                world.release(round - 1);
                self.wait_for_world_posts(world, Duration::from_secs(60))
                    .await?;
            }
            let models_before = self.store.next_model_version().await?;
            observer.round_started(round, simulation.people);
            let report = simulator.play_round(round, &|| observer.answered()).await?;
            let vote_wait = Duration::from_secs(60);
            stored = simulator.wait_until_stored(vote_wait).await?;
            // A vote not stored a minute after it was pressed is lost, and every later round
            // would only wait as long again: stop here, with what tells where it went.
            if stored < simulator.votes_sent() {
                anyhow::bail!(
                    "round {round}: {stored} of {} votes pressed so far stored after {vote_wait:?}\n{}",
                    simulator.votes_sent(),
                    self.votes_lost_report(&simulator).await?
                );
            }
            observer.round_finished(&report, stored);
            reports.push(report);
            if round < simulation.rounds {
                self.wait_for_training(models_before).await?;
            }
        }
        Ok(RunOutcome {
            reports,
            votes_sent: simulator.votes_sent(),
            votes_stored: stored,
            repeats: simulator.repeated.len() as u64,
            posts: simulator.posts(),
            sent_new: simulator.sent_new(),
        })
    }

    /// Where votes pressed and not stored may have gone: which they are, posts sent to a person
    /// twice (their second vote replaces the first), how each worker's messages went (a vote
    /// routed to no queue leaves no line in any log), and the bot's and ingest's warnings.
    async fn votes_lost_report(&self, simulator: &Simulator) -> anyhow::Result<String> {
        let missing = simulator.votes_not_stored().await?;
        let listed = |votes: &[(UserId, PostRef)]| {
            let named: Vec<String> = votes
                .iter()
                .take(20)
                .map(|(person, post)| format!("{person} on {post}"))
                .collect();
            format!("{} ({})", votes.len(), named.join(", "))
        };
        let mut report = format!(
            "not stored: {}\nposts sent to a person twice: {}\n",
            listed(&missing),
            listed(&simulator.repeated)
        );
        for line in self.pipeline.metric_lines(MESSAGE_FLOW_METRICS).await {
            report.push_str(&format!("{line}\n"));
        }
        for worker in ["bot", "ingest"] {
            let log = self.pipeline.worker(worker).log_text();
            let warnings: Vec<&str> = log
                .lines()
                .filter(|line| line.contains("WARN") || line.contains("ERROR"))
                .collect();
            report.push_str(&format!(
                "{worker}'s last warnings and errors ({} in all):\n{}\n",
                warnings.len(),
                warnings[warnings.len().saturating_sub(30)..].join("\n")
            ));
        }
        Ok(report)
    }

    /// Waits for the trainer's cycle on the round's votes to settle a model (published, rejected
    /// or abandoned: a version is allocated when a cycle starts), and for the ranker to serve the
    /// live one.
    async fn wait_for_training(&self, first_new_version: ModelVersion) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + self.settings.model_wait;
        let settled = doc! {
            "version": {"$gte": first_new_version.as_i64()},
            "status": {"$ne": ModelStatus::Training.as_str()},
        };
        while self
            .store
            .collections()
            .models
            .find_one(settled.clone())
            .await?
            .is_none()
        {
            if tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if let Some(version) = self.store.live_version().await? {
            self.wait_until_ranker_serves(version, Duration::from_secs(20))
                .await;
        }
        Ok(())
    }

    /// Polls the ranker's `oleg_ranker_model_version` until it reaches `version`.
    async fn wait_until_ranker_serves(&self, version: ModelVersion, within: Duration) {
        let ranker = self.pipeline.worker("ranker");
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Some((_, metrics)) = ranker.get("/metrics").await {
                let serving = metrics
                    .lines()
                    .find_map(|l| l.strip_prefix("oleg_ranker_model_version "))
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if serving >= Some(version.get()) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Rounds of `/metrics` scrapes so far and the failed ones by worker; stops watching.
    pub fn metrics_answered(&mut self) -> (u32, BTreeMap<&'static str, u32>) {
        self.watch
            .take()
            .map(MetricsWatch::finish)
            .unwrap_or_default()
    }

    /// Stops the workers and Prometheus; unless `keep_data`, removes the run's database and
    /// queues; closes the store's client ([`Store::close`]). Returns the workers that did not
    /// exit cleanly.
    pub async fn stop(mut self, keep_data: bool) -> Vec<&'static str> {
        let _ = self.metrics_answered();
        let unclean = self.pipeline.stop().await;
        if let Some(mut prometheus) = self.prometheus.take() {
            prometheus.stop();
        }
        self.shutdown.cancel();
        self.bus.close().await;
        if !keep_data {
            let _ = self.store.drop_database().await;
            oleg_testkit::delete_topology(&self.settings.amqp).await;
        }
        self.store.close().await;
        unclean
    }
}

/// Waits until at least `expected` documents of `collection` match `filter`; `what` names them
/// in the error after `within`.
pub async fn wait_for_count<T: Send + Sync>(
    collection: &mongodb::Collection<T>,
    filter: mongodb::bson::Document,
    expected: u64,
    what: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let stored = collection.count_documents(filter.clone()).await?;
        if stored >= expected {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{stored} of the {expected} {what} stored within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
