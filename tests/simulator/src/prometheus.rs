//! A local Prometheus (Debian's `prometheus`) for the demo and for checking dashboards against
//! real scrapes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct PrometheusServer {
    child: Option<Child>,
    pub url: String,
}

impl PrometheusServer {
    /// Starts `prometheus` with `config`, keeping its data in `data_dir`, listening on `listen`.
    pub fn start(config: &Path, data_dir: &Path, listen: &str, log: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let log_file = std::fs::File::create(log)?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data_dir.display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("starting prometheus (deploy/dev/setup.sh installs it): {e}")
            })?;
        Ok(Self {
            child: Some(child),
            url: format!("http://{listen}"),
        })
    }

    /// Waits until Prometheus answers `/-/ready`.
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let client = reqwest::Client::new();
        loop {
            let ready = client
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "prometheus at {} not ready within {within:?}",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An instant query: the `data` object of the answer, or the error Prometheus gave.
    pub async fn query(&self, expr: &str) -> anyhow::Result<serde_json::Value> {
        let answer: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await?
            .json()
            .await?;
        if answer["status"] != "success" {
            anyhow::bail!(
                "{}: {}",
                answer["errorType"].as_str().unwrap_or("error"),
                answer["error"].as_str().unwrap_or("no detail")
            );
        }
        Ok(answer["data"].clone())
    }

    /// The health of every scrape target: `(job, health)`.
    pub async fn target_health(&self) -> anyhow::Result<Vec<(String, String)>> {
        let answer: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/targets", self.url))
            .send()
            .await?
            .json()
            .await?;
        Ok(answer["data"]["activeTargets"]
            .as_array()
            .map(|targets| {
                targets
                    .iter()
                    .map(|t| {
                        (
                            t["labels"]["job"].as_str().unwrap_or_default().to_owned(),
                            t["health"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A scrape configuration for these worker targets (`oleg-<worker>` jobs), the local RabbitMQ's
/// plugin, and the repository's alert rules.
pub fn scrape_config(
    workers: &[(&'static str, String)],
    rabbitmq: &str,
    interval: &str,
    rules: &Path,
) -> String {
    let mut out = format!(
        "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\nrule_files:\n  - {}\nscrape_configs:\n",
        rules.display()
    );
    for (name, addr) in workers {
        out.push_str(&format!(
            "  - job_name: oleg-{name}\n    static_configs:\n      - targets: ['{addr}']\n"
        ));
    }
    out.push_str(&format!(
        "  - job_name: rabbitmq\n    static_configs:\n      - targets: ['{rabbitmq}']\n  - job_name: rabbitmq-queues\n    metrics_path: /metrics/detailed\n    params:\n      family: [queue_coarse_metrics, queue_consumer_count]\n    static_configs:\n      - targets: ['{rabbitmq}']\n"
    ));
    out
}

/// The repository's `deploy/prometheus/` folder.
pub fn deploy_dir() -> PathBuf {
    oleg_testkit::repo_root().join("deploy/prometheus")
}
