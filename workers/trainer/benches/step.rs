//! Where a training step's time goes: Ciao's training votes (the seeded 80/20 split of
//! `oleg-trainer eval`), one libtorch thread, the configured variants (`[trainer.variants]`),
//! one epoch each after a warm-up epoch, timed phase by phase (`oleg_model::StepTimes`).
//!
//! `cargo bench -p oleg-trainer --bench step` (env: `OLEG_CIAO_VOTES`, default
//! `../shared/data/ciao/votes.csv` from the repository root). Prints a Markdown table; a profile
//! of the same work by function is `perf record -g target/release/oleg-trainer eval ...`.

use oleg_model::{train_epoch_timed, Optimizer, StepTimes};
use oleg_settings::{load, Sources};
use oleg_trainer::cycle::fresh_network;
use oleg_trainer::dataset::{read_votes_csv, split};
use oleg_trainer::TrainerConfig;
use std::path::PathBuf;
use std::time::Duration;
use tch::Device;

fn main() {
    tch::set_num_threads(1);
    let repo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let path = std::env::var_os("OLEG_CIAO_VOTES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared/data/ciao/votes.csv"));
    let config: TrainerConfig = load(&Sources::repository()).expect("the repository's config");
    let mut file = read_votes_csv(&path).expect("Ciao's votes (see ../shared/data/ciao)");
    file.vocab.complete_features(|_, _| None);
    let (train, _) = split(&file.columns, 0.2, 42);
    let votes = train.to_votes(Device::Cpu);
    let rows = votes.all_rows();
    println!(
        "{} training votes, one thread; per step, milliseconds (share of the step)\n",
        train.len()
    );
    println!("| variant | batch | steps | gather batch | forward | backward | loss readout | update | step | epoch s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, model) in &config.trainer.variants {
        tch::manual_seed(42);
        let mut network = fresh_network(model, &file.vocab, Device::Cpu);
        let mut optimizer = Optimizer::new(&network);
        let mut epoch = |times: &mut StepTimes| {
            train_epoch_timed(
                &mut network,
                &mut optimizer,
                &votes,
                &rows,
                model.batch_size,
                |_| std::ops::ControlFlow::Continue(()),
                times,
            );
        };
        epoch(&mut StepTimes::default());
        let mut times = StepTimes::default();
        epoch(&mut times);
        let phases = [
            times.batch,
            times.forward,
            times.backward,
            times.readout,
            times.update,
        ];
        let total: Duration = phases.iter().sum();
        let per_step = |d: Duration| d.as_secs_f64() * 1e3 / times.steps as f64;
        let cells: Vec<String> = phases
            .iter()
            .map(|&d| {
                format!(
                    "{:.3} ({:.0} %)",
                    per_step(d),
                    100.0 * d.as_secs_f64() / total.as_secs_f64()
                )
            })
            .collect();
        println!(
            "| {name} | {} | {} | {} | {:.3} | {:.2} |",
            model.batch_size,
            times.steps,
            cells.join(" | "),
            per_step(total),
            total.as_secs_f64()
        );
    }
}
