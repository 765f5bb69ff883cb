//! `oleg-scale`: one replica of each worker on this machine under the load of many simulated
//! people on a large generated world; prints each stage's rate, the request round trip, and every
//! process's peak memory and CPU (the `pipeline-scale` block of docs/BENCHMARKS.md).

use clap::Parser;
use oleg_simulator::cli::init_logging;
use oleg_simulator::run::Observer;
use oleg_simulator::scale::{run_scale, ScaleSettings};
use oleg_simulator::ServiceConfig;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "oleg-scale",
    about = "Loads one replica of each OLEG worker with many simulated people and posts"
)]
struct Cli {
    #[arg(long, default_value_t = 100_000)]
    people: u32,
    /// Generated channels; with --posts-per-channel, the candidate posts.
    #[arg(long, default_value_t = 500)]
    channels: usize,
    #[arg(long, default_value_t = 100)]
    posts_per_channel: usize,
    /// Seconds of requests and votes.
    #[arg(long, default_value_t = 180)]
    load_s: u64,
    /// People asking (or voting) at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Saved t.me/s/<channel> pages (default: ../shared/fixtures/telegram beside the repository).
    #[arg(long)]
    fixtures: Option<PathBuf>,
}

struct Stages;

impl Observer for Stages {
    // Progress goes to stderr; the tables to stdout (what `deploy/dev/bench.sh` keeps).
    fn stage(&self, what: &str) {
        eprintln!("· {what}");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let cli = Cli::parse();
    let config = ServiceConfig::load(Some("scale"))?;
    let root = oleg_testkit::repo_root();
    let settings = ScaleSettings {
        people: cli.people,
        channels: cli.channels,
        posts_per_channel: cli.posts_per_channel,
        load: Duration::from_secs(cli.load_s),
        concurrency: cli.concurrency,
        seed: cli.seed,
        fixtures: cli
            .fixtures
            .unwrap_or_else(|| root.join("../shared/fixtures/telegram")),
        amqp: config.amqp,
        mongo: config.mongo,
        work_dir: root.join("var/scale"),
    };
    let report = run_scale(settings, &Stages).await?;
    println!("{}", report.table());
    Ok(())
}
