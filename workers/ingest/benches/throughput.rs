//! Ingest throughput on this machine, with the two raw rates it is bounded by, measured in one
//! run against the real broker and store:
//! - broker: publish with confirms + consume + ack, no store;
//! - store: bulk vote upserts in ingest-sized batches, no broker;
//! - pipeline: publish → oleg-ingest (in process) → stored, end to end;
//! - the same pipeline draining a backlog published before it started (no publisher sharing the
//!   machine's CPU with the broker, the store and ingest).
//!
//! Beside each rate it says how many of the machine's cores the broker, the store server and the
//! bench's own process (publishers and ingest) kept busy meanwhile.
//!
//! `cargo bench -p oleg-ingest --bench throughput` (after deploy/dev/setup.sh; `OLEG_BENCH_VOTES`
//! sets the count, default 20000). Prints a Markdown table.

use chrono::{TimeZone, Utc};
use futures::future::join_all;
use oleg_bus::{Bus, QueueName, Source, Subscription};
use oleg_ingest::{Ingest, IngestMetrics, IngestSettings};
use oleg_messages::*;
use oleg_store::Store;
use oleg_telemetry::{Component, Readiness};
use oleg_testkit::processes::{cpu_seconds, find_process, SERVICES};
use oleg_testkit::{amqp_settings, delete_topology, mongo_settings, scraped_post};
use prometheus::Registry;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const PUBLISHERS: usize = 16;
const BATCH: usize = 500;

fn votes(n: usize, salt: i64) -> Vec<Vote> {
    let channel = ChannelName::parse("codecamp").unwrap();
    (0..n as i64)
        .map(|i| {
            let post = PostRef {
                channel: channel.clone(),
                post_id: PostId::new(1 + i % 500).unwrap(),
            };
            let user = UserId::new(1 + salt * 1_000_000 + i / 500).unwrap();
            Vote::new(
                user,
                post,
                Reaction::Like,
                Utc.timestamp_millis_opt(1_764_000_000_000 + i).unwrap(),
            )
        })
        .collect()
}

/// Publishes with `PUBLISHERS` concurrent confirmed publishers, as a busy bot frontend would.
async fn publish(bus: &Bus, votes: &[Vote]) {
    let chunk = votes.len().div_ceil(PUBLISHERS);
    join_all(votes.chunks(chunk).map(|part| async move {
        for vote in part {
            bus.publish(vote).await.expect("confirmed");
        }
    }))
    .await;
}

async fn connect(
    test: &str,
    prefetch: u16,
) -> (Bus, oleg_settings::AmqpSettings, CancellationToken) {
    let mut settings = amqp_settings(test);
    settings.prefetch = prefetch;
    let shutdown = CancellationToken::new();
    let bus = Bus::connect(
        settings.clone(),
        test,
        &Registry::new(),
        Readiness::default(),
        shutdown.clone(),
    )
    .await
    .expect("broker (run deploy/dev/setup.sh)");
    (bus, settings, shutdown)
}

async fn seeded_store(test: &str) -> Store {
    let store = Store::connect(&mongo_settings(test), test).await.unwrap();
    store
        .ensure_indexes()
        .await
        .expect("store (run deploy/dev/setup.sh)");
    let channel = ChannelName::parse("codecamp").unwrap();
    let posts: Vec<ScrapedPost> = (1..=500)
        .map(|id| {
            scraped_post(&PostRef {
                channel: channel.clone(),
                post_id: PostId::new(id).unwrap(),
            })
        })
        .collect();
    store.upsert_posts(&posts, 0).await.unwrap();
    store
}

async fn broker_rate(n: usize, processes: &[(&str, u32)]) -> Rate {
    let (bus, settings, shutdown) = connect("bench-broker", 1000).await;
    let votes = votes(n, 1);
    let run = RunWatch::start(processes);
    let consumer = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let mut subscription = Subscription::new(bus, Source::Shared(QueueName::Ingest));
            for _ in 0..n {
                subscription
                    .next()
                    .await
                    .expect("delivery")
                    .ack()
                    .await
                    .expect("ack");
            }
        })
    };
    publish(&bus, &votes).await;
    consumer.await.unwrap();
    let rate = run.rate(n);
    shutdown.cancel();
    bus.close().await;
    delete_topology(&settings).await;
    rate
}

async fn store_rate(n: usize, processes: &[(&str, u32)]) -> Rate {
    let store = seeded_store("bench_store").await;
    let votes = votes(n, 2);
    let run = RunWatch::start(processes);
    for batch in votes.chunks(BATCH) {
        store.upsert_votes(batch, 1).await.unwrap();
    }
    let rate = run.rate(n);
    store.drop_database().await.unwrap();
    rate
}

/// The pipeline's rate: with the votes published while ingest runs (`Load::Live`, end to end),
/// or all published before it starts (`Load::Backlog`: ingest draining a queue, with no
/// publisher sharing the machine).
async fn pipeline_rate(n: usize, load: Load, processes: &[(&str, u32)]) -> Pipeline {
    let (bus, settings, shutdown) = connect("bench-pipeline", 1000).await;
    let store = seeded_store("bench_pipeline").await;
    let ingest_settings = IngestSettings {
        metrics_addr: "127.0.0.1:0".into(),
        batch_size: BATCH,
        batch_max_wait_ms: 100,
        max_message_bytes: 16 * 1024,
        store_retry_min_ms: 100,
        store_retry_max_ms: 2_000,
        store_probe_ms: 2_000,
        known_posts_cache: 1_000_000,
        known_users_cache: 1_000_000,
        max_clock_skew_ms: 300_000,
    };
    let readiness = Readiness::new(&[Component::Broker, Component::Store]);
    let registry = Registry::new();
    let metrics = IngestMetrics::register(&registry).unwrap();
    let ingest = Ingest::new(
        bus.clone(),
        store.clone(),
        ingest_settings,
        metrics.clone(),
        readiness,
        shutdown.clone(),
    );
    let votes = votes(n, 3);
    if load == Load::Backlog {
        publish(&bus, &votes).await;
    }
    let run = RunWatch::start(processes);
    let worker = tokio::spawn(ingest.run());
    if load == Load::Live {
        publish(&bus, &votes).await;
    }
    while store
        .collections()
        .votes
        .estimated_document_count()
        .await
        .unwrap()
        < n as u64
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = run.rate(n);
    let writing = metrics.write_seconds.get_sample_sum() * rate.per_s / n as f64;
    let batches = metrics.write_seconds.get_sample_count();
    shutdown.cancel();
    worker.await.unwrap();
    bus.close().await;
    delete_topology(&settings).await;
    store.drop_database().await.unwrap();
    Pipeline {
        rate,
        writing,
        batches,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Load {
    Live,
    Backlog,
}

/// Votes per second, and the cores each watched process kept busy meanwhile.
struct Rate {
    per_s: f64,
    cores: Vec<f64>,
}

/// The pipeline's rate, and how it spent its time.
struct Pipeline {
    rate: Rate,
    /// Share of the wall time the worker spent in store writes.
    writing: f64,
    batches: u64,
}

/// The processes whose CPU each phase reports: this one, then the services found running.
fn watched() -> Vec<(&'static str, u32)> {
    let mut processes = vec![("this bench (publishers, ingest)", std::process::id())];
    processes.extend(
        SERVICES
            .into_iter()
            .filter_map(|(name, needle)| Some((name, find_process(needle)?))),
    );
    processes
}

/// Times a run, and the CPU each watched process used during it.
struct RunWatch {
    pids: Vec<u32>,
    cpu_before: Vec<f64>,
    started: Instant,
}

impl RunWatch {
    fn start(processes: &[(&str, u32)]) -> Self {
        let pids: Vec<u32> = processes.iter().map(|(_, pid)| *pid).collect();
        Self {
            cpu_before: Self::cpu(&pids),
            pids,
            started: Instant::now(),
        }
    }

    fn cpu(pids: &[u32]) -> Vec<f64> {
        pids.iter()
            .map(|pid| cpu_seconds(*pid).unwrap_or(0.0))
            .collect()
    }

    /// `votes` over the time since the start, and the cores each process kept busy meanwhile
    /// (CPU seconds per second).
    fn rate(&self, votes: usize) -> Rate {
        let seconds = self.started.elapsed().as_secs_f64();
        Rate {
            per_s: votes as f64 / seconds,
            cores: Self::cpu(&self.pids)
                .iter()
                .zip(&self.cpu_before)
                .map(|(after, before)| (after - before) / seconds)
                .collect(),
        }
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("OLEG_BENCH_VOTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let processes = watched();
    let Rate {
        per_s: broker,
        cores: broker_cores,
    } = broker_rate(n, &processes).await;
    let Rate {
        per_s: store,
        cores: store_cores,
    } = store_rate(n, &processes).await;
    let Pipeline {
        rate: Rate {
            per_s: pipeline,
            cores: pipeline_cores,
        },
        writing,
        batches,
    } = pipeline_rate(n, Load::Live, &processes).await;
    let Pipeline {
        rate: Rate {
            per_s: draining,
            cores: draining_cores,
        },
        ..
    } = pipeline_rate(n, Load::Backlog, &processes).await;
    let bound = broker.min(store);
    println!("ingest throughput, {n} votes, {PUBLISHERS} concurrent confirmed publishers, batches of {BATCH}\n");
    println!("| path | votes/s | ratio to the slower raw rate |");
    println!("|---|---:|---:|");
    println!(
        "| raw broker (publish+confirm, consume, ack) | {broker:.0} | {:.2} |",
        broker / bound
    );
    println!(
        "| raw store (bulk upserts of {BATCH}) | {store:.0} | {:.2} |",
        store / bound
    );
    println!(
        "| oleg-ingest pipeline (publish → stored) | {pipeline:.0} | {:.2} |",
        pipeline / bound
    );
    println!(
        "| oleg-ingest draining a backlog (published before it started) | {:.0} | {:.2} |",
        draining,
        draining / bound
    );
    println!(
        "\nend to end, the pipeline wrote {batches} batches; store writes took {:.0} % of its wall time \
         (their mean {:.0} ms against {:.0} ms for a batch of {BATCH} in the raw store run)",
        writing * 100.0,
        writing * n as f64 / pipeline / batches as f64 * 1000.0,
        BATCH as f64 / store * 1000.0
    );
    println!(
        "\ncores kept busy during each run (CPU seconds per second; the machine has {}):\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let names: Vec<&str> = processes.iter().map(|(name, _)| *name).collect();
    println!("| run | {} | all |", names.join(" | "));
    println!("|---|{}---:|", "---:|".repeat(names.len()));
    for (run, cores) in [
        ("raw broker", &broker_cores),
        ("raw store", &store_cores),
        ("pipeline, end to end", &pipeline_cores),
        ("pipeline, draining a backlog", &draining_cores),
    ] {
        let cells: Vec<String> = cores.iter().map(|c| format!("{c:.2}")).collect();
        println!(
            "| {run} | {} | {:.2} |",
            cells.join(" | "),
            cores.iter().sum::<f64>()
        );
    }
    let verdict = |rate: f64| {
        if rate >= 0.8 * bound {
            "met"
        } else {
            "NOT met"
        }
    };
    println!(
        "\ntarget (issue 14): pipeline ≥ 0.8 × the slower raw rate → end to end {}, draining a backlog {}",
        verdict(pipeline),
        verdict(draining)
    );
}
