//! Peak memory and speed of a training cycle at production scale: 10 million votes from
//! 1 million people on 5 million posts (generated), through the trainer's own code path:
//! vocabularies, holdout split, one epoch, holdout evaluation, and writing the weights and
//! vocabularies out. Each variant runs in its own process, so each peak is its own.
//!
//! `cargo bench -p oleg-trainer --bench scale` (env: `OLEG_BENCH_VOTES`, `OLEG_BENCH_USERS`,
//! `OLEG_BENCH_POSTS`). Prints a Markdown table.

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

fn main() {
    if let Some(name) = std::env::args().skip_while(|a| a != "--variant").nth(1) {
        run(&name);
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
