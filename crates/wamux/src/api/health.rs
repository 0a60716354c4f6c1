//! `GET /api/health`: liveness and a summary.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::AppState;
use crate::model::SessionStatus;

pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

#[utoipa::path(get, path = "/api/health", tag = "health", operation_id = "health", summary = "Liveness and summary",
    responses((status = 200, description = "Liveness and a summary of the sessions", body = crate::api::openapi::schemas::Health)))]
async fn health(State(state): State<AppState>, caller: super::Caller) -> Json<serde_json::Value> {
    let mut sessions = state.sessions.list();
    // A scoped key counts only the sessions it may see.
    sessions.retain(|s| caller.sees(s.session_id.as_str()));
    let mut by_status = serde_json::Map::new();
    for s in SessionStatus::ALL {
        by_status.insert(s.as_str().into(), 0.into());
    }
    for s in &sessions {
        if let Some(n) = by_status.get_mut(s.status.as_str()) {
            *n = (n.as_u64().unwrap_or(0) + 1).into();
        }
    }
    Json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptimeSeconds": state.started_at.elapsed().as_secs(),
        "sessions": {"total": sessions.len(), "byStatus": by_status},
    }))
}
