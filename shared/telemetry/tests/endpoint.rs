//! `/metrics` is valid Prometheus text (checked by promtool, Prometheus's own parser) with the memory
//! gauges; `/readyz` follows the components; `/healthz` answers.

use oleg_telemetry::{new_registry, serve, Component, Readiness};
use std::io::Write;
use std::process::{Command, Stdio};
use tokio_util::sync::CancellationToken;

fn promtool_check_metrics(body: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool is needed (deploy/dev/setup.sh installs it): {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // Exit 3 means lint warnings only (naming advice); 1 is a parse error.
    match out.status.code() {
        Some(0) | Some(3) => Ok(()),
        _ => Err(said),
    }
}

fn gauge(body: &str, name: &str) -> f64 {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[tokio::test]
async fn metrics_parse_and_include_memory_gauges() {
    let registry = new_registry().unwrap();
    let requests =
        prometheus::IntCounter::new("oleg_test_requests_total", "Test requests.").unwrap();
    registry.register(Box::new(requests.clone())).unwrap();
    requests.inc_by(3);
    let readiness = Readiness::new(&[Component::Broker, Component::Store]);
    let shutdown = CancellationToken::new();
    let server = serve("127.0.0.1:0", registry, readiness.clone(), shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr);

    let response = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let body = response.text().await.unwrap();
    promtool_check_metrics(&body).unwrap();
    let rss = gauge(&body, "process_resident_memory_bytes");
    let vsz = gauge(&body, "process_virtual_memory_bytes");
    let peak = gauge(&body, "process_resident_memory_peak_bytes");
    // The resident size and the peak are two reads of /proc a moment apart, and the kernel's
    // per-thread counters sync lazily: the peak may trail by a few pages.
    assert!(
        rss > 1e6 && vsz >= rss && peak >= rss - 64.0 * 4096.0,
        "rss {rss} vsz {vsz} peak {peak}"
    );
    assert_eq!(gauge(&body, "oleg_test_requests_total"), 3.0);

    // Memory is read at scrape time: a 64 MiB allocation shows in the next scrape.
    let ballast = vec![1u8; 64 << 20];
    let after: String = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(gauge(&after, "process_resident_memory_bytes") > rss + 32e6);
    drop(ballast);

    shutdown.cancel();
    server.task.await.unwrap();
}

#[tokio::test]
async fn readyz_is_ready_only_when_every_component_is_up() {
    let readiness = Readiness::new(&[Component::Broker, Component::Store]);
    let shutdown = CancellationToken::new();
    let server = serve(
        "127.0.0.1:0",
        new_registry().unwrap(),
        readiness.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let get = |path: &'static str| {
        let url = format!("http://{}{path}", server.local_addr);
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(
        get("/readyz").await,
        (503, r#"{"broker":false,"store":false}"#.to_owned())
    );
    readiness.set(Component::Broker, true);
    assert_eq!(get("/readyz").await.0, 503);
    readiness.set(Component::Store, true);
    assert_eq!(
        get("/readyz").await,
        (200, r#"{"broker":true,"store":true}"#.to_owned())
    );
    readiness.set(Component::Store, false);
    assert_eq!(get("/readyz").await.0, 503);
    shutdown.cancel();
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = first.local_addr().unwrap().to_string();
        let err = serve(
            &addr,
            new_registry().unwrap(),
            Readiness::default(),
            CancellationToken::new(),
        )
        .await
        .err()
        .unwrap();
        assert!(err.to_string().contains(&addr), "{err}");
    });
}
