//! `oleg-cluster-drill`, run by `deploy/dev/cluster-drill.sh` against a three-node RabbitMQ
//! cluster it started: the whole pipeline with simulated people through the bot as load; a
//! third of the way in, the node leading the ingest queue is killed (SIGKILL), and brought back
//! later. Then: every vote stored exactly once, recommendations answered again after the kill,
//! every worker still the process it started as. Prints the pause and the rates before, during
//! and after, and a one-line verdict; exits non-zero on a failed check.
//!
//! The script does what is RabbitMQ's: `<control> leader QUEUE` prints the leading node's number,
//! `<control> kill N` and `<control> start N` stop and start node N.

use clap::Parser;
use mongodb::bson::doc;
use oleg_bus::QueueName;
use oleg_simulator::cli::{init_logging, PeopleArgs};
use oleg_simulator::frontend::FrontendKind;
use oleg_simulator::pipeline::MESSAGE_FLOW_METRICS;
use oleg_simulator::run::{Observer, PipelineRun, RunSettings};
use oleg_simulator::simulation::RoundReport;
use oleg_simulator::ServiceConfig;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "oleg-cluster-drill",
    about = "Loses a RabbitMQ node under load"
)]
struct Cli {
    #[command(flatten)]
    people: PeopleArgs,
    /// The script that controls the nodes (`leader`, `kill`, `start`).
    #[arg(long)]
    control: PathBuf,
    /// The share of the expected presses answered before the leader is killed.
    #[arg(long, default_value_t = 0.15)]
    kill_at: f64,
    /// How long the node stays down.
    #[arg(long, default_value_t = 10)]
    down_s: u64,
}

/// When each press was answered.
struct Answers {
    at: Mutex<Vec<Instant>>,
}

impl Observer for Answers {
    fn stage(&self, what: &str) {
        eprintln!("· {what}");
    }

    fn answered(&self) {
        self.at.lock().expect("not poisoned").push(Instant::now());
    }

    fn round_finished(&self, r: &RoundReport, stored_votes: u64) {
        eprintln!(
            "round {:>2} · {} votes ({stored_votes} stored in all) · {} presses without a post",
            r.round, r.votes, r.failures
        );
    }
}

impl Answers {
    fn count(&self) -> usize {
        self.at.lock().expect("not poisoned").len()
    }

    /// Answers per second within `[from, to)`.
    fn rate(&self, from: Instant, to: Instant) -> f64 {
        let at = self.at.lock().expect("not poisoned");
        let n = at.iter().filter(|t| **t >= from && **t < to).count();
        n as f64 / to.saturating_duration_since(from).as_secs_f64().max(1e-3)
    }

    /// The longest wait for an answer from `from` on.
    fn longest_pause(&self, from: Instant, to: Instant) -> Duration {
        let at = self.at.lock().expect("not poisoned");
        let mut times: Vec<Instant> = at
            .iter()
            .copied()
            .filter(|t| *t >= from && *t <= to)
            .collect();
        times.sort();
        let mut previous = from;
        let mut longest = Duration::ZERO;
        for t in times {
            longest = longest.max(t - previous);
            previous = t;
        }
        longest
    }
}

fn control(script: &PathBuf, args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new("bash")
        .arg(script)
        .args(args)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "{} {args:?} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let cli = Cli::parse();
    let config = ServiceConfig::load(Some("demo"))?;
    let root = oleg_testkit::repo_root();
    let simulation = cli.people.settings();
    let expected = f64::from(simulation.people * simulation.rounds);
    let ingest_queue = format!("{}.ingest", config.amqp.prefix);
    eprintln!("· broker nodes: {}", config.amqp.redacted_uri());
    let settings = RunSettings {
        simulation,
        frontend: FrontendKind::Bot,
        fixtures: root.join("../shared/fixtures/telegram"),
        world: None,
        config_env: "demo".into(),
        amqp: config.amqp,
        mongo: config.mongo,
        work_dir: root.join("var/cluster-drill"),
        metrics_addrs: BTreeMap::new(),
        prometheus_listen: None,
        rabbitmq_metrics: String::new(),
        // Rounds follow each other at once: the drill is about the broker, not learning.
        model_wait: Duration::ZERO,
        extra: Vec::new(),
    };
    let answers = Answers {
        at: Mutex::new(Vec::new()),
    };
    let mut run = PipelineRun::start(settings, &answers).await?;
    let started = Instant::now();

    // The fault, beside the load: the ingest queue's leader killed, then started again.
    let fault = async {
        while (answers.count() as f64) < cli.kill_at * expected {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let leader = control(&cli.control, &["leader", &ingest_queue])?;
        let killed_at = Instant::now();
        control(&cli.control, &["kill", &leader])?;
        eprintln!("· killed node {leader}, leader of {ingest_queue}");
        tokio::time::sleep(Duration::from_secs(cli.down_s)).await;
        control(&cli.control, &["start", &leader])?;
        let back_at = Instant::now();
        eprintln!("· node {leader} is back");
        anyhow::Ok((leader, killed_at, back_at))
    };
    let (outcome, fault) = tokio::join!(run.simulate(&answers), fault);
    let ended = Instant::now();
    let outcome = outcome?;
    let (leader, killed_at, back_at) = fault?;

    let votes = &run.store.collections().votes;
    let applied_twice = votes
        .count_documents(doc! {"revision": {"$gt": 1_i64}})
        .await?;
    let (_, unanswered) = run.metrics_answered();
    let all = RoundReport::combined(&outcome.reports);
    let last = outcome.reports.last().expect("at least one round");
    let answered_after = answers.rate(back_at, ended) > 0.0;
    let ingest_depth = run
        .bus
        .queue_depth(QueueName::Ingest)
        .await
        .unwrap_or(u32::MAX);
    // How each worker's messages went: where a lost vote went, on a failure (a vote routed to
    // no queue, say, leaves no line in any log).
    let message_flow = run.pipeline.metric_lines(MESSAGE_FLOW_METRICS).await;
    let unclean = run.stop(false).await;

    println!("\n| phase | seconds | presses answered / s |\n|---|---:|---:|");
    for (phase, from, to) in [
        ("before the kill", started, killed_at),
        (&*format!("node {leader} down"), killed_at, back_at),
        ("after it came back", back_at, ended),
    ] {
        println!(
            "| {phase} | {:.1} | {:.1} |",
            (to - from).as_secs_f64(),
            answers.rate(from, to)
        );
    }
    let pause = answers.longest_pause(killed_at, ended);
    println!(
        "\nlongest wait for an answer after the kill: {:.1} s; presses without a post: {}; votes pressed {}, stored {}, applied twice {}; ingest queue left {}",
        pause.as_secs_f64(),
        all.failures,
        outcome.votes_sent,
        outcome.votes_stored,
        applied_twice,
        ingest_depth
    );
    let mut failed = Vec::new();
    if outcome.votes_stored != outcome.votes_sent || applied_twice > 0 {
        failed.push("votes not stored exactly once".to_owned());
    }
    if !answered_after || last.failures > 0 {
        failed.push("recommendations did not resume".to_owned());
    }
    if !unanswered.is_empty() || !unclean.is_empty() {
        failed.push(format!(
            "workers failed: /metrics unanswered {unanswered:?}, unclean stop {unclean:?}"
        ));
    }
    if failed.is_empty() {
        println!(
            "verdict: PASS — node {leader} (leader of {ingest_queue}) killed under load: {} votes stored exactly once, answers resumed after a {:.1} s pause, no worker restarted",
            outcome.votes_stored,
            pause.as_secs_f64()
        );
        // Exit here rather than by tearing down the runtime: a detached task's store query cut
        // short by the teardown made the MongoDB driver panic after the verdict.
        use std::io::Write;
        std::io::stdout().flush()?;
        std::process::exit(0);
    } else {
        println!("\nthe workers' messages:");
        for line in &message_flow {
            println!("  {line}");
        }
        println!("verdict: FAIL — {}", failed.join("; "));
        std::process::exit(1);
    }
}
