//! The scale run: the simulator as a load generator against one replica of each worker. A
//! generated world of many channels is served to the scraper, many people sign up, then for a
//! fixed time people ask the ranker for a post and vote on it, `concurrency` at a time, as bot
//! users would. Measured: each stage's rate, the request round trip, how far ingest keeps up, what
//! the trainer managed, and every process's peak memory and CPU (workers, broker, store), which
//! says where the bottleneck is.
//!
//! The people's tastes here leave out the per-channel likings of `taste.rs`: a hundred thousand
//! people times hundreds of channels would make the load generator the largest process.

use crate::frontend::{recommend, FrontendKind, Shown};
use crate::run::{wait_for_count, Observer, PipelineRun, RunSettings};
use crate::simulation::{load_posts, SimulationSettings};
use crate::taste::{draws_like, population, PostTraits, TasteSpread};
use crate::world::WorldSettings;
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::doc;
use oleg_bus::{Bus, RpcClient};
use oleg_messages::{PostRef, Reaction, UserStarted, Vote};
use oleg_settings::{AmqpSettings, MongoSettings};
use oleg_testkit::processes::{cpu_seconds, find_process, SERVICES};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Posts on one page of `t.me/s/<channel>` (and of the generated world's pages).
const POSTS_PER_PAGE: usize = 20;

#[derive(Debug, Clone)]
pub struct ScaleSettings {
    pub people: u32,
    pub channels: usize,
    pub posts_per_channel: usize,
    /// How long people keep asking and voting.
    pub load: Duration,
    /// People asking (or voting) at once.
    pub concurrency: usize,
    pub seed: u64,
    /// Saved `t.me/s/<channel>` pages, served beside the generated world.
    pub fixtures: PathBuf,
    pub amqp: AmqpSettings,
    pub mongo: MongoSettings,
    /// Worker logs.
    pub work_dir: PathBuf,
}

/// One person's request and vote.
struct Session {
    person: usize,
    shown: Shown,
    round_trip: Duration,
    /// The vote was published (and confirmed by the broker).
    voted: bool,
    vote_failure: Option<String>,
}

/// What people did under load, and how long the ranker took to answer.
#[derive(Debug, Clone, Default)]
pub struct LoadFigures {
    pub elapsed: Duration,
    pub requests: u64,
    /// Replies with no post (the person has seen every candidate).
    pub empty: u64,
    /// Error replies and timeouts.
    pub failed_requests: u64,
    /// Votes the broker refused, or on posts the store does not hold.
    pub failed_votes: u64,
    pub votes: u64,
    /// Posts sent to a person a second time (the ranker promises none).
    pub repeats: u64,
    /// Round trips of the requests answered, in ms, sorted.
    pub round_trips_ms: Vec<f64>,
}

impl LoadFigures {
    /// The `q` quantile of the round trips (nearest rank), in ms.
    pub fn round_trip_ms(&self, q: f64) -> f64 {
        let sorted = &self.round_trips_ms;
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = (q * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A process of the run and what it used.
#[derive(Debug, Clone)]
pub struct ProcessFigures {
    pub name: String,
    pub peak_rss_bytes: u64,
    /// CPU time during the load over its wall time (1.0: one core busy throughout).
    pub load_cores: f64,
}

#[derive(Debug, Clone)]
pub struct ScaleReport {
    pub settings: ScaleSettings,
    pub posts: usize,
    /// From the workers' start until every generated post was stored.
    pub scrape: Duration,
    /// From the first sign-up published until every person was stored.
    pub sign_up: Duration,
    pub load: LoadFigures,
    /// Votes stored when the load ended.
    pub votes_stored_in_load: u64,
    /// After the load, until every vote published was stored.
    pub drain: Duration,
    /// Training cycles by outcome, and their mean duration.
    pub cycles: BTreeMap<&'static str, u64>,
    pub mean_cycle_s: f64,
    /// The ranker's own time per request, and the time requests waited in its queue (means).
    pub ranker_handle_ms: f64,
    pub ranker_queue_wait_ms: f64,
    pub processes: Vec<ProcessFigures>,
}

/// Runs the pipeline on the world and the people of `settings`, loads it, and stops it.
pub async fn run_scale(
    settings: ScaleSettings,
    observer: &dyn Observer,
) -> anyhow::Result<ScaleReport> {
    let pages = settings.posts_per_channel.div_ceil(POSTS_PER_PAGE).max(1);
    let run_settings = RunSettings {
        simulation: SimulationSettings {
            people: settings.people,
            rounds: 0,
            seed: settings.seed,
            concurrency: settings.concurrency,
            ..Default::default()
        },
        frontend: FrontendKind::Queues,
        fixtures: settings.fixtures.clone(),
        world: Some(WorldSettings {
            channels: settings.channels,
            first_posts: settings.posts_per_channel,
            posts_per_round: 0,
            ..WorldSettings::new(0, settings.seed)
        }),
        config_env: "scale".into(),
        amqp: settings.amqp.clone(),
        mongo: settings.mongo.clone(),
        work_dir: settings.work_dir.clone(),
        metrics_addrs: BTreeMap::new(),
        prometheus_listen: None,
        rabbitmq_metrics: String::new(),
        model_wait: Duration::ZERO,
        extra: vec![
            // Every post of a channel on first sight, then production's pace: the world does
            // not grow during the run.
            ("OLEG__SCRAPER__FIRST_SIGHT_PAGES".into(), pages.to_string()),
            ("OLEG__SCRAPER__POLL_INTERVAL_S".into(), "600".into()),
        ],
    };
    let started = Instant::now();
    let run = PipelineRun::start(run_settings, observer).await?;
    let outcome = load_run(&run, &settings, started, observer).await;
    let unclean = run.stop(false).await;
    let report = outcome?;
    anyhow::ensure!(
        unclean.is_empty(),
        "workers that did not stop cleanly: {unclean:?}"
    );
    Ok(report)
}

async fn load_run(
    run: &PipelineRun,
    settings: &ScaleSettings,
    started: Instant,
    observer: &dyn Observer,
) -> anyhow::Result<ScaleReport> {
    let world = run
        .world
        .clone()
        .expect("the scale run has a generated world");
    run.wait_for_world_posts(&world, Duration::from_secs(900))
        .await?;
    let scrape = started.elapsed();
    let posts = load_posts(&run.store, Some(&world)).await?;
    observer.stage(&format!(
        "{} posts stored in {:.0} s",
        posts.len(),
        scrape.as_secs_f64()
    ));

    let first_user = SimulationSettings::default().first_user;
    let people = population(
        settings.people,
        first_user,
        &[],
        TasteSpread::default(),
        settings.seed,
    );
    let sign_up_started = Instant::now();
    let now = Utc::now();
    let starts: Vec<UserStarted> = people
        .iter()
        .map(|person| UserStarted::new(person.user_id, now))
        .collect();
    futures::stream::iter(&starts)
        .map(|start| run.bus.publish(start))
        .buffer_unordered(settings.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    wait_for_count(
        &run.store.collections().users,
        doc! {"_id": {"$gte": first_user}},
        u64::from(settings.people),
        "people",
        Duration::from_secs(900),
    )
    .await?;
    let sign_up = sign_up_started.elapsed();
    observer.stage(&format!(
        "{} people signed up in {:.0} s",
        settings.people,
        sign_up.as_secs_f64()
    ));

    let mut watched: Vec<(String, u32)> = run
        .pipeline
        .workers
        .iter()
        .map(|(kind, worker)| (kind.name.to_owned(), worker.pid()))
        .collect();
    watched.extend(
        SERVICES
            .into_iter()
            .filter_map(|(name, needle)| Some((name.to_owned(), find_process(needle)?))),
    );
    watched.push(("load generator".into(), std::process::id()));
    let watch = ProcessWatch::start(watched);

    observer.stage(&format!(
        "{:.0} s of requests and votes, {} at a time",
        settings.load.as_secs_f64(),
        settings.concurrency
    ));
    let rpc = RpcClient::new(&run.bus).await?;
    let cpu_before = watch.cpu_seconds();
    let load = apply_load(&run.bus, &rpc, &people, &posts, settings).await;
    let cpu_after = watch.cpu_seconds();
    let votes_filter = doc! {"user_id": {"$gte": first_user}};
    let votes = run.store.collections().votes;
    let votes_stored_in_load = votes.count_documents(votes_filter.clone()).await?;
    observer.stage(&format!(
        "{} requests, {} votes; {} votes stored when the load ended",
        load.requests, load.votes, votes_stored_in_load
    ));
    let drain_started = Instant::now();
    wait_for_count(
        &votes,
        votes_filter,
        load.votes,
        "votes",
        Duration::from_secs(900),
    )
    .await?;
    let drain = drain_started.elapsed();

    let page = |name: &'static str| async move {
        run.pipeline
            .worker(name)
            .get("/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let (trainer, ranker) = (page("trainer").await, page("ranker").await);
    let cycles = ["published", "rejected", "failed"]
        .into_iter()
        .map(|outcome| {
            let total = ["full", "incremental"]
                .iter()
                .map(|kind| {
                    oleg_testkit::metric_sum(
                        &trainer,
                        &format!(
                            "oleg_trainer_cycles_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}"
                        ),
                    )
                })
                .sum::<f64>();
            (outcome, total as u64)
        })
        .collect();
    let mean = |page: &str, histogram: &str| {
        let count = oleg_testkit::metric_sum(page, &format!("{histogram}_count"));
        if count > 0.0 {
            oleg_testkit::metric_sum(page, &format!("{histogram}_sum")) / count
        } else {
            0.0
        }
    };
    let seconds = load.elapsed.as_secs_f64();
    let processes = watch
        .finish()
        .into_iter()
        .map(|(name, pid, peak_rss_bytes)| ProcessFigures {
            load_cores: cpu_after
                .get(&pid)
                .zip(cpu_before.get(&pid))
                .map_or(0.0, |(after, before)| (after - before) / seconds),
            name,
            peak_rss_bytes,
        })
        .collect();
    Ok(ScaleReport {
        settings: settings.clone(),
        posts: posts.len(),
        scrape,
        sign_up,
        load,
        votes_stored_in_load,
        drain,
        cycles,
        mean_cycle_s: mean(&trainer, "oleg_trainer_cycle_seconds"),
        ranker_handle_ms: 1e3 * mean(&ranker, "oleg_ranker_handle_seconds"),
        ranker_queue_wait_ms: 1e3 * mean(&ranker, "oleg_ranker_queue_wait_seconds"),
        processes,
    })
}

/// People picked at random ask for a post and vote on it, `concurrency` at a time, until the
/// load's time is up.
async fn apply_load(
    bus: &Bus,
    rpc: &RpcClient,
    people: &[crate::taste::Person],
    posts: &HashMap<PostRef, PostTraits>,
    settings: &ScaleSettings,
) -> LoadFigures {
    let timeout = SimulationSettings::default().request_timeout;
    let started = Instant::now();
    let deadline = started + settings.load;
    let sessions: Vec<Session> = futures::stream::iter(0u64..)
        .take_while(|_| std::future::ready(Instant::now() < deadline))
        .map(|session| async move {
            let mut rng = StdRng::seed_from_u64(settings.seed ^ session.wrapping_mul(0x9e37_79b9));
            let index = rng.random_range(0..people.len());
            let person = &people[index];
            let asked = Instant::now();
            let shown = recommend(rpc, person.user_id, timeout).await;
            let round_trip = asked.elapsed();
            let (mut voted, mut vote_failure) = (false, None);
            if let Shown::Post { post, .. } = &shown {
                match posts.get(post) {
                    Some(traits) => {
                        let reaction = if draws_like(&mut rng, person.like_probability(traits)) {
                            Reaction::Like
                        } else {
                            Reaction::Dislike
                        };
                        let vote = Vote::new(person.user_id, post.clone(), reaction, Utc::now());
                        match bus.publish(&vote).await {
                            Ok(_) => voted = true,
                            Err(error) => vote_failure = Some(error.to_string()),
                        }
                    }
                    None => vote_failure = Some(format!("{post} is not in the store")),
                }
            }
            Session {
                person: index,
                shown,
                round_trip,
                voted,
                vote_failure,
            }
        })
        .buffer_unordered(settings.concurrency)
        .collect()
        .await;
    let mut figures = LoadFigures {
        elapsed: started.elapsed(),
        ..Default::default()
    };
    let mut received: HashMap<usize, HashSet<PostRef>> = HashMap::new();
    for session in sessions {
        figures.requests += 1;
        figures.votes += u64::from(session.voted);
        if let Some(problem) = &session.vote_failure {
            tracing::warn!(%problem, "a vote was not cast");
            figures.failed_votes += 1;
        }
        match session.shown {
            Shown::Post { post, .. } => {
                figures
                    .round_trips_ms
                    .push(session.round_trip.as_secs_f64() * 1e3);
                if !received.entry(session.person).or_default().insert(post) {
                    figures.repeats += 1;
                }
            }
            Shown::Nothing => {
                figures
                    .round_trips_ms
                    .push(session.round_trip.as_secs_f64() * 1e3);
                figures.empty += 1;
            }
            Shown::Failed(problem) => {
                tracing::warn!(%problem, "a request failed");
                figures.failed_requests += 1;
            }
        }
    }
    figures.round_trips_ms.sort_by(f64::total_cmp);
    figures
}

/// A process's resident memory now, in bytes.
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// Samples the resident memory of some processes every half second and keeps each one's peak
/// (the broker and the store ran before the run, so their own high-water marks would not do).
struct ProcessWatch {
    processes: Vec<(String, u32)>,
    peaks: Arc<Mutex<Vec<u64>>>,
    stop: CancellationToken,
}

impl ProcessWatch {
    fn start(processes: Vec<(String, u32)>) -> Self {
        let peaks = Arc::new(Mutex::new(vec![0; processes.len()]));
        let stop = CancellationToken::new();
        let (pids, sampled, token): (Vec<u32>, _, _) = (
            processes.iter().map(|(_, pid)| *pid).collect(),
            peaks.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !token.is_cancelled() {
                for (index, pid) in pids.iter().enumerate() {
                    let rss = resident_bytes(*pid).unwrap_or(0);
                    let mut peaks = sampled.lock().expect("not poisoned");
                    peaks[index] = peaks[index].max(rss);
                }
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        });
        Self {
            processes,
            peaks,
            stop,
        }
    }

    /// CPU seconds so far, by pid.
    fn cpu_seconds(&self) -> HashMap<u32, f64> {
        self.processes
            .iter()
            .filter_map(|(_, pid)| Some((*pid, cpu_seconds(*pid)?)))
            .collect()
    }

    /// `(name, pid, peak resident bytes)` of each process; stops sampling.
    fn finish(self) -> Vec<(String, u32, u64)> {
        self.stop.cancel();
        let peaks = self.peaks.lock().expect("not poisoned").clone();
        self.processes
            .into_iter()
            .zip(peaks)
            .map(|((name, pid), peak)| (name, pid, peak))
            .collect()
    }
}

impl ScaleReport {
    /// The busiest process during the load, and the cores all of them used together.
    pub fn busiest(&self) -> (Option<&ProcessFigures>, f64) {
        let busiest = self
            .processes
            .iter()
            .max_by(|a, b| a.load_cores.total_cmp(&b.load_cores));
        (busiest, self.processes.iter().map(|p| p.load_cores).sum())
    }

    /// Two tables (the stages, the processes) and the bottleneck, in Markdown.
    pub fn table(&self) -> String {
        let s = &self.settings;
        let load = &self.load;
        let rate = |count: u64, took: Duration| count as f64 / took.as_secs_f64().max(1e-9);
        let mut out = format!(
            "{} people, {} posts ({} generated channels × {} and the saved pages), {:.0} s of load with {} people asking at once, seed {}.\n\n",
            s.people,
            self.posts,
            s.channels,
            s.posts_per_channel,
            s.load.as_secs_f64(),
            s.concurrency,
            s.seed
        );
        out.push_str("| stage | count | time | rate |\n|---|---:|---:|---:|\n");
        let generated = (s.channels * s.posts_per_channel) as u64;
        out.push_str(&format!(
            "| scraper: generated posts read and stored | {generated} | {:.0} s | {:.0} posts/s |\n",
            self.scrape.as_secs_f64(),
            rate(generated, self.scrape)
        ));
        out.push_str(&format!(
            "| ingest: sign-ups stored | {} | {:.0} s | {:.0} /s |\n",
            s.people,
            self.sign_up.as_secs_f64(),
            rate(u64::from(s.people), self.sign_up)
        ));
        out.push_str(&format!(
            "| ranker: requests answered (p50 {:.1} ms, p99 {:.1} ms round trip; in the ranker {:.1} ms, queued {:.1} ms on average) | {} | {:.0} s | {:.0} /s |\n",
            load.round_trip_ms(0.5),
            load.round_trip_ms(0.99),
            self.ranker_handle_ms,
            self.ranker_queue_wait_ms,
            load.requests - load.failed_requests,
            load.elapsed.as_secs_f64(),
            load.per_second(load.requests - load.failed_requests)
        ));
        out.push_str(&format!(
            "| votes cast (each confirmed by the broker) | {} | {:.0} s | {:.0} /s |\n",
            load.votes,
            load.elapsed.as_secs_f64(),
            load.per_second(load.votes)
        ));
        out.push_str(&format!(
            "| ingest: votes stored during the load | {} | {:.0} s | {:.0} /s |\n",
            self.votes_stored_in_load,
            load.elapsed.as_secs_f64(),
            load.per_second(self.votes_stored_in_load)
        ));
        out.push_str(&format!(
            "| ingest: the rest stored after the load | {} | {:.1} s | |\n",
            load.votes.saturating_sub(self.votes_stored_in_load),
            self.drain.as_secs_f64()
        ));
        out.push_str(&format!(
            "| trainer: cycles published / rejected / failed (mean cycle {:.0} s) | {} / {} / {} | | |\n",
            self.mean_cycle_s,
            self.cycles.get("published").copied().unwrap_or(0),
            self.cycles.get("rejected").copied().unwrap_or(0),
            self.cycles.get("failed").copied().unwrap_or(0),
        ));
        out.push_str(&format!(
            "\nFailed requests: {}; failed votes: {}; empty replies: {}; posts sent to a person twice: {}.\n\n",
            load.failed_requests, load.failed_votes, load.empty, load.repeats
        ));
        out.push_str(
            "| process | peak RSS | CPU during the load (cores) | CPU per request answered |\n|---|---:|---:|---:|\n",
        );
        let answered = load.per_second(load.requests - load.failed_requests);
        for p in &self.processes {
            out.push_str(&format!(
                "| {} | {:.0} MB | {:.2} | {:.2} ms |\n",
                p.name,
                p.peak_rss_bytes as f64 / 1e6,
                p.load_cores,
                1e3 * p.load_cores / answered.max(1e-9)
            ));
        }
        let (busiest, total) = self.busiest();
        if let Some(busiest) = busiest {
            out.push_str(&format!(
                "\nBusiest during the load: {} at {:.2} cores; all processes together {:.2} of the machine's {} cores.\n",
                busiest.name,
                busiest.load_cores,
                total,
                std::thread::available_parallelism().map_or(0, |n| n.get())
            ));
        }
        out
    }
}
