use crate::{Readiness, TelemetryError};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use std::net::SocketAddr;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct AppState {
    registry: Registry,
    readiness: Readiness,
}

/// The running endpoint: where it listens, and its task.
pub struct TelemetryServer {
    pub local_addr: SocketAddr,
    pub task: JoinHandle<()>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` (port 0 picks a free port) until `shutdown`.
pub async fn serve(
    addr: &str,
    registry: Registry,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<TelemetryServer, TelemetryError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| TelemetryError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            registry,
            readiness,
        });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "telemetry endpoint stopped");
        }
    });
    tracing::info!(%local_addr, "serving /metrics, /healthz and /readyz");
    Ok(TelemetryServer { local_addr, task })
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = Vec::new();
    match TextEncoder::new().encode(&state.registry.gather(), &mut body) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let status = if state.readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        state.readiness.report().to_string(),
    )
        .into_response()
}
