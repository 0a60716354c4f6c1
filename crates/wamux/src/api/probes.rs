//! Probes for supervisors and load balancers, and the metrics endpoint.
//!
//! `GET /healthz` (the process answers) and `GET /readyz` (the database answers and the
//! stored sessions have been loaded) need no key and say nothing beyond `ok` or
//! `unavailable`. `GET /metrics` (Prometheus text format) needs the API key, unless
//! `WAMUX_METRICS_LISTEN` moves it to a separate listener, which then serves it without one
//! (bind that to a private address).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;

/// Probes, plus `/metrics` behind the key when it has no listener of its own.
pub fn router(state: &AppState) -> Router<AppState> {
    let probes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if state.config.metrics_listen.is_some() {
        return probes;
    }
    let metrics =
        Router::new()
            .route("/metrics", get(metrics))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                super::auth::require_admin_key,
            ));
    probes.merge(metrics)
}

/// The separate metrics listener's routes: `/metrics` without a key, and the probes.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "healthz", summary = "Liveness probe",
    responses((status = 200, description = "The process answers", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "health", operation_id = "readyz", summary = "Readiness probe",
    responses((status = 200, description = "Ready: the database answers", body = String, content_type = "text/plain"),
        (status = 503, description = "Not ready", body = String, content_type = "text/plain")))]
async fn readyz(State(state): State<AppState>) -> Response {
    // Sessions are restored before the server accepts connections, so answering at all
    // means they are loaded; what can still fail is the database.
    let db = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
    match db {
        Ok(Ok(_)) => "ok".into_response(),
        Ok(Err(e)) => {
            tracing::warn!("readiness: database unreachable: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable").into_response()
        }
        Err(_) => {
            tracing::warn!("readiness: database did not answer within 2 s");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable").into_response()
        }
    }
}

#[utoipa::path(get, path = "/metrics", tag = "health", operation_id = "metrics", summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text format. Needs the key here; a separate `WAMUX_METRICS_LISTEN` listener serves it without one", body = String, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&state).await,
    )
        .into_response()
}
