//! The reason this worker exists: memory stays flat over hundreds of training cycles (the
//! original kept loss tensors, and with them every graph, until it was OOM-killed).

use oleg_model::ModelConfig;
use oleg_telemetry::resident_bytes;
use oleg_trainer::cycle::{self, CycleData};
use oleg_trainer::dataset::{Columns, Vocabularies};
use std::sync::atomic::AtomicBool;
use tch::Device;

fn fixed_votes(n: i64) -> (Vocabularies, Columns) {
    let mut vocab = Vocabularies::default();
    let mut columns = Columns::default();
    for i in 0..n {
        let user = i % 500;
        let channel = ["codecamp", "excelhackru", "topwar_official"][(i % 3) as usize];
        let post = (i * 7) % 900;
        let like = if (user + i % 3) % 2 == 0 { 1.0 } else { 0.0 };
        columns.push(&mut vocab, user, channel, post, like);
    }
    (vocab, columns)
}

#[test]
fn resident_memory_stays_flat_over_two_hundred_cycles() {
    tch::set_num_threads(1);
    let (vocab, columns) = fixed_votes(12_000);
    let voted_at: Vec<i64> = (0..columns.len() as i64).collect();
    let data: CycleData =
        cycle::hold_out_recent(columns, &voted_at, 0..12_000, 0.1, 10_000, Device::Cpu);
    let config = ModelConfig::default();
    let mut network = cycle::fresh_network(&config, &vocab, Device::Cpu);
    let mut after_tenth = 0;
    let mut last_auc = f64::NAN;
    let never = AtomicBool::new(false);
    for cycle_number in 1..=200 {
        let live = Some(cycle::evaluate(&network, &data.holdout));
        let figures = cycle::train(&mut network, &data, 1, live, &never).unwrap();
        assert!(figures.last_epoch_loss.is_finite());
        last_auc = figures.candidate.auc;
        if cycle_number == 10 {
            after_tenth = resident_bytes().expect("RSS readable");
        }
    }
    let after_last = resident_bytes().unwrap();
    let growth = after_last as i64 - after_tenth as i64;
    assert!(
        growth < 50 << 20,
        "RSS grew by {} MB between cycle 10 ({} MB) and cycle 200 ({} MB)",
        growth >> 20,
        after_tenth >> 20,
        after_last >> 20
    );
    assert!(last_auc > 0.7, "and it learned: AUC {last_auc}");
}

/// A stop asked for ends training at the next batch, not at the end of the epochs.
#[test]
fn a_stop_ends_training_between_batches() {
    tch::set_num_threads(1);
    let (vocab, columns) = fixed_votes(12_000);
    let voted_at: Vec<i64> = (0..columns.len() as i64).collect();
    let data = cycle::hold_out_recent(columns, &voted_at, 0..12_000, 0.1, 10_000, Device::Cpu);
    let mut network = cycle::fresh_network(&ModelConfig::default(), &vocab, Device::Cpu);
    let stop = AtomicBool::new(true);
    let started = std::time::Instant::now();
    assert_eq!(
        cycle::train(&mut network, &data, 10_000, None, &stop).err(),
        Some(cycle::Stopped)
    );
    // Ten thousand epochs would take minutes; one batch takes milliseconds.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
