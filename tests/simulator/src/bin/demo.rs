//! `oleg-demo`, the README's main job: the whole pipeline on this machine. The scraper reads the
//! saved channel pages from a local site, simulated people use OLEG through `oleg-bot` (over a
//! local fake Telegram Bot API), the trainer retrains as their votes arrive and the ranker swaps
//! models. Ends with the like rate of
//! recommended posts per round, against random order and the best possible pick.

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use oleg_simulator::chart::learning_curve_svg;
use oleg_simulator::cli::{init_logging, PeopleArgs, WorldKind};
use oleg_simulator::frontend::FrontendKind;
use oleg_simulator::run::{Observer, PipelineRun, RunOutcome, RunSettings};
use oleg_simulator::simulation::{table, RoundReport};
use oleg_simulator::world::WorldSettings;
use oleg_simulator::ServiceConfig;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "oleg-demo",
    about = "Runs the whole OLEG pipeline locally on saved channel pages and simulated people"
)]
struct Cli {
    #[command(flatten)]
    people: PeopleArgs,
    /// Saved t.me/s/<channel> pages (default: ../shared/fixtures/telegram beside the repository).
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// Keep the workers and Prometheus running at the end (for Grafana / Prometheus) until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// Do not start Prometheus.
    #[arg(long)]
    no_prometheus: bool,
    /// How the people reach OLEG: through oleg-bot and a local fake Telegram Bot API, or
    /// straight through the queues (a load generator for ingest and the ranker).
    #[arg(long, value_enum, default_value_t = FrontendKind::Bot)]
    frontend: FrontendKind,
    /// The saved pages alone, or with a generated world whose posts arrive round after round.
    #[arg(long, value_enum, default_value_t = WorldKind::Saved)]
    world: WorldKind,
    /// In the generated world, how strongly a post's views follow its quality (log-views per
    /// unit of quality; 0: views say nothing of it). See `tests/simulator/src/world.rs`.
    #[arg(long, default_value_t = 0.5)]
    views_per_quality: f64,
}

/// A progress bar per round and a line per finished round.
struct Display {
    bar: Mutex<Option<ProgressBar>>,
}

impl Observer for Display {
    // Progress goes to stderr; the summary table to stdout (what `deploy/dev/bench.sh` keeps).
    fn stage(&self, what: &str) {
        eprintln!("· {what}");
    }

    fn round_started(&self, round: u32, requests: u32) {
        let bar = ProgressBar::new(u64::from(requests)).with_prefix(format!("round {round:>2}"));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} recommendations")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        *self.bar.lock().expect("not poisoned") = Some(bar);
    }

    fn answered(&self) {
        if let Some(bar) = &*self.bar.lock().expect("not poisoned") {
            bar.inc(1);
        }
    }

    fn round_finished(&self, r: &RoundReport, stored_votes: u64) {
        if let Some(bar) = self.bar.lock().expect("not poisoned").take() {
            bar.finish_and_clear();
        }
        eprintln!(
            "round {:>2} · model {:>3} · {} votes ({} stored in all) · 👍 rate {:.3} · P(👍) recommended {:.3}, random {:.3}, best {:.3}{}",
            r.round,
            r.model_version.map_or("–".into(), |v| format!("v{v}")),
            r.votes,
            stored_votes,
            r.like_rate(),
            r.recommended_rate(),
            r.random_rate(),
            r.best_rate(),
            if r.cold_starts > 0 { format!(" · {} cold starts", r.cold_starts) } else { String::new() },
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let cli = Cli::parse();
    let config = ServiceConfig::load(Some("demo"))?;
    let root = oleg_testkit::repo_root();
    // The ports of config/default.toml, which deploy/prometheus/prometheus.yml scrapes too.
    let metrics_addrs = BTreeMap::from([
        ("scraper", "127.0.0.1:9101".to_owned()),
        ("ingest", "127.0.0.1:9102".to_owned()),
        ("trainer", "127.0.0.1:9103".to_owned()),
        ("ranker", "127.0.0.1:9104".to_owned()),
        ("bot", "127.0.0.1:9105".to_owned()),
    ]);
    let prometheus_found = std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok();
    if !cli.no_prometheus && !prometheus_found {
        eprintln!(
            "· prometheus is not installed (deploy/dev/setup.sh installs it); running without it"
        );
    }
    let settings = RunSettings {
        simulation: cli.people.settings(),
        frontend: cli.frontend,
        fixtures: cli
            .fixtures
            .clone()
            .unwrap_or_else(|| root.join("../shared/fixtures/telegram")),
        world: (cli.world == WorldKind::Generated).then(|| WorldSettings {
            views_per_quality: cli.views_per_quality,
            ..WorldSettings::new(cli.people.rounds, cli.people.seed)
        }),
        config_env: "demo".into(),
        amqp: config.amqp,
        mongo: config.mongo,
        work_dir: root.join("var/demo"),
        metrics_addrs,
        prometheus_listen: (!cli.no_prometheus && prometheus_found)
            .then(|| "127.0.0.1:9090".to_owned()),
        rabbitmq_metrics: "127.0.0.1:15692".into(),
        model_wait: Duration::from_secs(30),
        extra: Vec::new(),
    };
    let display = Display {
        bar: Mutex::new(None),
    };
    let started = std::time::Instant::now();
    let run = PipelineRun::start(settings, &display).await?;
    let reported = match run.simulate(&display).await {
        Ok(outcome) => report(&cli, &root, &run, &outcome, started).await,
        Err(error) => Err(error),
    };
    // Stopped on every way out, a failure after the rounds too (its store's client is closed
    // before the runtime stops); what a failed run wrote is not kept.
    let unclean = run.stop(cli.keep && reported.is_ok()).await;
    reported?;
    anyhow::ensure!(
        unclean.is_empty(),
        "workers that did not stop cleanly: {unclean:?}"
    );
    Ok(())
}

/// Prints the table and the run's figures, writes the learning curve and the vote log, and with
/// `--keep` waits for Ctrl-C.
async fn report(
    cli: &Cli,
    root: &std::path::Path,
    run: &PipelineRun,
    outcome: &RunOutcome,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    println!("\n{}", table(&outcome.reports));
    let rounds = outcome.reports.len();
    let tail = RoundReport::combined(&outcome.reports[rounds.saturating_sub(3)..]);
    let first = &outcome.reports[0];
    println!(
        "Like rate of recommended posts: {:.3} in round 1 (random order {:.3}), {:.3} in the last 3 rounds (random order {:.3}, best possible {:.3}); {:.1} standard deviations above random order.",
        first.like_rate(),
        first.random_rate(),
        tail.like_rate(),
        tail.random_rate(),
        tail.best_rate(),
        tail.z_over_random(),
    );
    let (oleg, informed) = (
        tail.share_of_the_way(tail.recommended_rate()),
        tail.share_of_the_way(tail.informed_rate()),
    );
    println!(
        "Last 3 rounds, share of the way from random order to the best pick: OLEG {:.0} %, the informed learner (sees the posts' hidden features, learns from the same votes) {:.0} %; OLEG reaches {:.0} % of the informed learner's share.",
        100.0 * oleg,
        100.0 * informed,
        if informed > 0.0 { 100.0 * oleg / informed } else { 0.0 },
    );
    let alone = tail.informed_alone_share();
    println!(
        "Last 3 rounds, the same learner on its own (it picks, and learns from the votes on its own picks, so it pays for its exploration as OLEG does): {:.0} % of the way; OLEG reaches {:.0} % of its share.",
        100.0 * alone,
        if alone > 0.0 { 100.0 * oleg / alone } else { 0.0 },
    );
    println!(
        "Last 3 rounds, fresh posts (sent to nobody before their round, so no vote on them yet): {:.0} % of the picks, liked at {}.",
        100.0 * tail.fresh_share(),
        tail.fresh_rate()
            .map_or("– (none picked)".into(), |rate| format!("{rate:.3}")),
    );
    if cli.world == WorldKind::Generated {
        let (oleg, informed) = tail.mean_quality();
        println!(
            "Last 3 rounds, the picks' hidden quality (a logit every person shares, N(0, 0.8²) over posts): OLEG {oleg:.2}, the informed learner {informed:.2}; the rest of the gap between them is the person's taste."
        );
    }
    println!(
        "{} votes pressed, {} stored; {} posts, {} sent to a person twice, {} asked for with /send_new; {:.0} s.",
        outcome.votes_sent,
        outcome.votes_stored,
        outcome.posts,
        outcome.repeats,
        outcome.sent_new,
        started.elapsed().as_secs_f64()
    );
    let chart = root.join("var/demo/learning-curve.svg");
    std::fs::write(
        &chart,
        learning_curve_svg(
            &outcome.reports,
            &format!(
                "OLEG demo: {} people, {} rounds, seed {}, {} world",
                cli.people.people,
                cli.people.rounds,
                cli.people.seed,
                match cli.world {
                    WorldKind::Saved => "saved-pages",
                    WorldKind::Generated => "generated",
                }
            ),
        ),
    )?;
    println!("The learning curve: {}", chart.display());
    let (votes, posts) =
        oleg_simulator::vote_log::export(&run.store, &root.join("var/demo")).await?;
    println!(
        "The vote log, for `oleg-trainer eval --votes {} --posts {} --split time`.",
        votes.display(),
        posts.display()
    );
    if cli.keep {
        println!("\nKept running (Ctrl-C stops everything):");
        if let Some(prometheus) = &run.prometheus {
            println!("  Prometheus  {}", prometheus.url);
        }
        for (name, addr) in run.pipeline.metrics_targets() {
            println!("  {name:<8}    http://{addr}/metrics");
        }
        println!("  logs        {}", root.join("var/demo/logs").display());
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}
