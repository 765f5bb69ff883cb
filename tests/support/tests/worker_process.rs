//! A worker that dies at start is reported at once, with its log, not waited on as if it were
//! starting (nor taken as ready by whatever else answers on its address).

use oleg_testkit::{scratch_dir, WorkerProcess};
use std::time::Duration;

#[tokio::test]
#[should_panic(expected = "before it was ready")]
async fn a_worker_that_exits_at_start_is_reported_not_waited_on() {
    let log = scratch_dir("exits_at_start").join("worker.log");
    let worker = WorkerProcess::spawn("false", &[], "OLEG__UNUSED__METRICS_ADDR", log);
    // Far longer than the test takes: a panic naming the limit would not match.
    worker.wait_ready(Duration::from_secs(120)).await;
}
