//! Peak memory and speed of a training cycle at production scale: 10 million votes from
//! 1 million people on 5 million posts (generated), through the trainer's own code path:
//! vocabularies, holdout split, one epoch, holdout evaluation, and writing the weights and
//! vocabularies out. Each variant runs in its own process, so each peak is its own.
//!
//! `cargo bench -p oleg-trainer --bench scale` (env: `OLEG_BENCH_VOTES`, `OLEG_BENCH_USERS`,
//! `OLEG_BENCH_POSTS`). Prints a Markdown table.
//!
//! `cargo bench -p oleg-trainer --bench scale -- --year`: a year of growth instead, month by
//! month, each month's full retraining in its own process, with the trainer's active window
//! (`trainer.active_days`, three months here) and without: what the model holds and the peak
//! memory of the retraining.

use oleg_model::{write_safetensors, LossKind, ModelConfig, OptimizerKind};
use oleg_telemetry::PeakMemoryCollector;
use oleg_trainer::cycle;
use oleg_trainer::dataset::{Columns, Vocabularies};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Instant;
use tch::Device;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn variant(name: &str) -> ModelConfig {
    match name {
        "original" => ModelConfig::default(),
        _ => ModelConfig {
            loss: LossKind::Bce,
            output_scale: 1.0,
            optimizer: OptimizerKind::Adam,
            learning_rate: 0.003,
            weight_decay: 0.001,
            init_std: 0.1,
            ..ModelConfig::default()
        },
    }
}

/// One variant, in this process: prints one table row.
fn run(name: &str) {
    tch::set_num_threads(1);
    let (votes, users, posts) = (
        env("OLEG_BENCH_VOTES", 10_000_000),
        env("OLEG_BENCH_USERS", 1_000_000),
        env("OLEG_BENCH_POSTS", 5_000_000),
    );
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(7);
    let mut vocab = Vocabularies::default();
    let mut columns = Columns::default();
    let channel_names: Vec<String> = (0..2_000).map(|c| format!("channel_{c:05}")).collect();
    // Every post and person appears (so the tables have their full size), the rest at random.
    for i in 0..votes {
        let post = if i < posts {
            i
        } else {
            rng.random_range(0..posts)
        };
        let user = if i < users {
            i as i64
        } else {
            rng.random_range(0..users as i64)
        };
        let channel = &channel_names[(post % 2_000) as usize];
        let like = if (user as u64 + post).is_multiple_of(3) {
            0.0
        } else {
            1.0
        };
        columns.push(&mut vocab, user, channel, post as i64, like);
    }
    let voted_at: Vec<i64> = (0..votes as i64).collect();
    let n = columns.len();
    let data = cycle::hold_out_recent(columns, &voted_at, 0..n, 0.1, 50_000, Device::Cpu);
    drop(voted_at);
    let prepared = started.elapsed().as_secs_f64();
    let config = variant(name);
    let mut network = cycle::fresh_network(&config, &vocab, Device::Cpu);
    let never = std::sync::atomic::AtomicBool::new(false);
    let figures = cycle::train(&mut network, &data, 1, None, &never).expect("never stopped");
    let epoch_seconds = figures.train_votes as f64 / figures.votes_per_second;
    let out = std::env::temp_dir().join(format!("oleg-bench-{}.safetensors", std::process::id()));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&out).unwrap());
    let named: Vec<(&str, &tch::Tensor)> = network
        .named_tensors()
        .iter()
        .map(|(n, t)| (*n, t))
        .collect();
    let bytes = write_safetensors(&named, &BTreeMap::new(), &mut file).unwrap();
    drop(file);
    let _ = std::fs::remove_file(&out);
    let peak_mb = PeakMemoryCollector::read_peak_bytes().unwrap_or(0) as f64 / (1 << 20) as f64;
    println!(
        "| {name} ({}) | {votes} | {users} | {posts} | {prepared:.0} | {epoch_seconds:.0} | {:.0} | {:.3} | {} | {peak_mb:.0} | {} |",
        match config.optimizer { OptimizerKind::Sgd => "SGD", OptimizerKind::Adam => "Adam" },
        figures.votes_per_second,
        figures.candidate.auc,
        bytes >> 20,
        if peak_mb < 4096.0 { "yes" } else { "NO" },
    );
}

/// The year: each month 30,000 people join and 100,000 posts appear in 2,000 channels; a person
/// votes in the three months from joining (about 3 votes a month), on posts of that month;
/// 300,000 votes a month.
const YEAR_PEOPLE_PER_MONTH: i64 = 30_000;
const YEAR_POSTS_PER_MONTH: i64 = 100_000;
const YEAR_VOTES_PER_MONTH: u64 = 300_000;
const YEAR_ACTIVE_MONTHS: u32 = 3;

/// The full retraining at the end of `month`, trained on the votes of the last `window` months
/// (all of them with `None`): prints one table row.
fn year_month(month: u32, window: Option<u32>) {
    tch::set_num_threads(1);
    let mut vocab = Vocabularies::default();
    let mut columns = Columns::default();
    let mut voted_at = Vec::new();
    for m in 1..=month {
        let mut rng = StdRng::seed_from_u64(u64::from(m));
        if window.is_some_and(|w| m + w <= month) {
            continue;
        }
        let first_person = i64::from(m.saturating_sub(YEAR_ACTIVE_MONTHS)) * YEAR_PEOPLE_PER_MONTH;
        let people = i64::from(m) * YEAR_PEOPLE_PER_MONTH - first_person;
        for i in 0..YEAR_VOTES_PER_MONTH {
            let user = first_person + rng.random_range(0..people);
            let post =
                i64::from(m - 1) * YEAR_POSTS_PER_MONTH + rng.random_range(0..YEAR_POSTS_PER_MONTH);
            let channel = format!("channel_{:05}", post % 2_000);
            let like = if (user + post) % 3 == 0 { 0.0 } else { 1.0 };
            columns.push(&mut vocab, user, &channel, post, like);
            voted_at.push(i64::from(m) * 1_000_000_000 + i as i64);
        }
    }
    let n = columns.len();
    let data = cycle::hold_out_recent(columns, &voted_at, 0..n, 0.1, 50_000, Device::Cpu);
    drop(voted_at);
    let config = variant("tuned");
    let mut network = cycle::fresh_network(&config, &vocab, Device::Cpu);
    let never = std::sync::atomic::AtomicBool::new(false);
    let figures = cycle::train(&mut network, &data, 1, None, &never).expect("never stopped");
    let weights_mb: f64 = network
        .named_tensors()
        .iter()
        .map(|(_, t)| t.numel() as f64 * 4.0)
        .sum::<f64>()
        / (1 << 20) as f64;
    let peak_mb = PeakMemoryCollector::read_peak_bytes().unwrap_or(0) as f64 / (1 << 20) as f64;
    println!(
        "| {month} | {} | {} | {} | {} | {weights_mb:.0} | {:.0} | {peak_mb:.0} |",
        window.map_or("all history".to_owned(), |w| format!("last {w} months")),
        figures.train_votes,
        vocab.users.len(),
        vocab.posts.len(),
        figures.train_votes as f64 / figures.votes_per_second,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let after = |flag: &str| args.iter().skip_while(|a| *a != flag).nth(1);
    if let Some(name) = after("--variant") {
        run(name);
        return;
    }
    if let Some(month) = after("--year-month") {
        let window = after("--window").and_then(|w| w.parse().ok());
        year_month(month.parse().expect("a month"), window);
        return;
    }
    if args.iter().any(|a| a == "--year") {
        println!(
            "| month | trained on | votes | people | posts | weights MB | epoch s | peak RSS MB |"
        );
        println!("|---:|---|---:|---:|---:|---:|---:|---:|");
        for month in [1, 3, 6, 9, 12] {
            for window in [None, Some(YEAR_ACTIVE_MONTHS)] {
                let mut command = std::process::Command::new(std::env::current_exe().unwrap());
                command.args(["--year-month", &month.to_string()]);
                if let Some(w) = window {
                    command.args(["--window", &w.to_string()]);
                }
                assert!(command.status().unwrap().success(), "month {month} failed");
            }
        }
        return;
    }
    println!("| variant | votes | people | posts | prepare s | epoch s | votes/s | holdout AUC | weights MB | peak RSS MB | within 4 GB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for name in ["original", "tuned"] {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--variant", name])
            .status()
            .unwrap();
        assert!(status.success(), "{name} failed");
    }
}
