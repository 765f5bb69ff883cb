//! The scale run, small: the load generator drives the four workers, every vote it cast is
//! stored, nothing is sent twice, and every process's memory and CPU is measured.

use oleg_simulator::run::Quiet;
use oleg_simulator::scale::{run_scale, ScaleSettings};
use oleg_testkit::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_scale_run_reports_every_stage_and_process() {
    let settings = ScaleSettings {
        people: 400,
        channels: 6,
        posts_per_channel: 30,
        load: Duration::from_secs(6),
        concurrency: 8,
        seed: 3,
        fixtures: repo_root().join("../shared/fixtures/telegram"),
        amqp: amqp_settings("scale"),
        mongo: mongo_settings("scale"),
        work_dir: scratch_dir("scale"),
    };
    let report = run_scale(settings, &Quiet).await.unwrap();
    let table = report.table();
    eprintln!("{table}");
    let load = &report.load;
    // 30 posts a channel take two pages: the scraper read past the first.
    assert!(report.posts >= 6 * 30, "{table}");
    assert!(load.requests > 50, "{table}");
    assert_eq!((load.failed_requests, load.failed_votes), (0, 0), "{table}");
    assert_eq!(load.repeats, 0, "{table}");
    assert_eq!(load.votes + load.empty, load.requests, "{table}");
    assert!(load.round_trip_ms(0.5) > 0.0 && load.round_trip_ms(0.99) >= load.round_trip_ms(0.5));
    assert!(report.ranker_handle_ms > 0.0, "{table}");
    for worker in ["scraper", "ingest", "trainer", "ranker", "load generator"] {
        let process = report
            .processes
            .iter()
            .find(|p| p.name == worker)
            .unwrap_or_else(|| panic!("{worker} missing: {table}"));
        assert!(process.peak_rss_bytes > 1_000_000, "{table}");
    }
    // The ranker answered every request, so it used CPU; the busiest process used some.
    let ranker = report
        .processes
        .iter()
        .find(|p| p.name == "ranker")
        .unwrap();
    assert!(ranker.load_cores > 0.0, "{table}");
    assert!(report.busiest().1 > 0.0, "{table}");
}
