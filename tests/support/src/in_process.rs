//! A worker run inside the test process: built from the repository's configuration with the
//! test's services and settings (as its binary would be from the environment), with telemetry on
//! a free port, on a thread and runtime of its own. Faster to start than a process, and the
//! worker stops when the test asks, when its handle is dropped, or when the test's services
//! finish (which wait for it, so that nothing of it outlives the test's queues).

use oleg_runtime::{load_config, Worker};
use oleg_settings::Sources;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct InProcess {
    pub metrics_addr: String,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

/// Becomes true when an in-process worker's thread has finished.
pub type Finished = tokio::sync::watch::Receiver<bool>;

impl InProcess {
    /// Builds `W` from `config/` with `vars` (`OLEG__…` overrides) and runs it until `stop` is
    /// cancelled; returns once it is built (telemetry bound, services connected), with a
    /// [`Finished`] to wait for its end.
    pub async fn start<W: Worker>(
        vars: Vec<(String, String)>,
        stop: CancellationToken,
    ) -> (Self, Finished)
    where
        W::Config: Send + 'static,
    {
        capture_logs();
        let mut sources = Sources::repository();
        sources.vars = vars.into_iter().collect();
        sources.vars.insert(
            format!("OLEG__{}__METRICS_ADDR", W::SECTION.to_uppercase()),
            "127.0.0.1:0".into(),
        );
        let config = load_config::<W>(sources).expect("the worker's test configuration");
        let (built, ready) = tokio::sync::oneshot::channel();
        let (finished_tx, finished) = tokio::sync::watch::channel(false);
        let token = stop.clone();
        let thread = std::thread::Builder::new()
            .name(W::NAME.into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                let run = runtime.block_on(async move {
                    match W::build(config, token).await {
                        Ok(worker) => {
                            let _ = built.send(Ok(worker.metrics_addr().to_string()));
                            oleg_runtime::run(worker).await
                        }
                        Err(error) => {
                            let _ = built.send(Err(format!("{error:#}")));
                            Err(error)
                        }
                    }
                });
                // Its runtime (and with it every connection) is gone before it says so.
                drop(runtime);
                finished_tx.send_replace(true);
                run
            })
            .expect("a thread for the worker");
        let metrics_addr = match ready.await {
            Ok(Ok(addr)) => addr,
            Ok(Err(error)) => panic!("{} did not start: {error}", W::NAME),
            Err(_) => panic!("{} panicked while starting", W::NAME),
        };
        let worker = Self {
            metrics_addr,
            stop,
            thread: Some(thread),
        };
        (worker, finished)
    }

    /// GET `path` on the worker's telemetry endpoint: `(status, body)`.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        crate::get_telemetry(&self.metrics_addr, path).await
    }

    /// Waits until `/readyz` says 200.
    pub async fn wait_ready(&self, limit: Duration) {
        // Its thread's end is not watched here: `stop` joins it and reports how it went.
        crate::wait_telemetry_ready(&self.metrics_addr, limit, || None, || self.log_tail()).await
    }

    /// Its log is the test's own output, shown when the test fails.
    pub fn log_tail(&self) -> String {
        "(running in-process: its log is in the test's captured output)".into()
    }

    /// Asks it to stop and waits until it has: whether it stopped cleanly.
    pub async fn stop(mut self) -> bool {
        self.stop.cancel();
        let thread = self.thread.take().expect("not stopped yet");
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .is_ok_and(|joined| joined.is_ok_and(|run| run.is_ok()))
    }
}

/// Sends the in-process workers' logs through the test harness's output capture, so a passing
/// test prints nothing and a failing one shows them. It is installed before any worker's own
/// subscriber, which then stands aside; `RUST_LOG` filters, `info` by default.
fn capture_logs() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

impl Drop for InProcess {
    fn drop(&mut self) {
        // The thread finishes on its own once stopped; nobody waits for it.
        self.stop.cancel();
    }
}
