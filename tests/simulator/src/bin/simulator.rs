//! `oleg-simulator`: simulated people use a running OLEG through its queues (sign up, ask the
//! ranker, vote), and the like rate of what they were recommended is printed per round. Reusable
//! as a load generator: raise `--people` and `--concurrency`.

use anyhow::Context;
use clap::Parser;
use oleg_simulator::cli::{init_logging, PeopleArgs};
use oleg_simulator::frontend::Frontend;
use oleg_simulator::simulation::{table, RoundReport, SimulationSettings, Simulator};
use oleg_simulator::ServiceConfig;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "oleg-simulator",
    about = "Simulated people use a running OLEG through its queues"
)]
struct Cli {
    #[command(flatten)]
    people: PeopleArgs,
    /// Ids of the simulated people start here (keep them apart from real people).
    #[arg(long, default_value_t = 1_000_000)]
    first_user: i64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// After each round, wait this long for a model trained on its votes (0: do not wait).
    #[arg(long, default_value_t = 30)]
    model_wait_s: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let cli = Cli::parse();
    let config = ServiceConfig::load(None)?;
    let store = oleg_store::Store::connect(&config.mongo, "oleg-simulator")
        .await
        .context("configuring the store's client")?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let connected = oleg_bus::Bus::connect(
        config.amqp.clone(),
        "oleg-simulator",
        &prometheus::Registry::new(),
        oleg_telemetry::Readiness::default(),
        shutdown.clone(),
    )
    .await
    .context("connecting to the broker");
    // The store's client is closed on every way out, before the runtime stops, as the workers
    // close theirs: the driver's background tasks are then not left to fail as it drops them.
    let bus = match connected {
        Ok(bus) => bus,
        Err(error) => {
            store.close().await;
            return Err(error);
        }
    };
    let simulated = simulate(&cli, bus.clone(), store.clone()).await;
    shutdown.cancel();
    bus.close().await;
    store.close().await;
    simulated
}

/// Signs the people up and plays the rounds, printing each round's line and then the table.
async fn simulate(cli: &Cli, bus: oleg_bus::Bus, store: oleg_store::Store) -> anyhow::Result<()> {
    let settings = SimulationSettings {
        first_user: cli.first_user,
        concurrency: cli.concurrency,
        ..cli.people.settings()
    };
    let frontend = Frontend::queues(bus.clone()).await?;
    let mut simulator = Simulator::new(bus, store, settings, frontend, None).await?;
    simulator.sign_up().await?;
    let mut reports: Vec<RoundReport> = Vec::new();
    for round in 1..=cli.people.rounds {
        let started = std::time::Instant::now();
        let report = simulator.play_round(round, &|| {}).await?;
        let elapsed = started.elapsed();
        eprintln!(
            "round {round}: {} votes in {:.1} s ({:.0} requests/s), 👍 rate {:.3}, {} failed",
            report.votes,
            elapsed.as_secs_f64(),
            f64::from(cli.people.people) / elapsed.as_secs_f64(),
            report.like_rate(),
            report.failures
        );
        let served = report.model_version.max(simulator.newest_model());
        reports.push(report);
        if cli.model_wait_s > 0 && round < cli.people.rounds {
            simulator
                .wait_for_model_newer(served, Duration::from_secs(cli.model_wait_s))
                .await;
        }
    }
    println!("{}", table(&reports));
    Ok(())
}
