//! The virtual phones of sandbox mode, for the UI: a thin pass-through (admin key only) to
//! the simulator's admin API (see DESIGN.md). The browser cannot call the simulator itself:
//! it serves HTTPS with its own CA, which the browser does not trust, and on another origin.
//!
//! The simulator is the one the gateway talks to (`WAMUX_WA_URL` / `WAMUX_WA_CA_FILE`, which
//! `wamux sandbox` sets for its in-process simulator); its admin API lives on the same host
//! under `/admin`. Only the phone routes are passed through, not the fault injection ones.
//! Errors: [`ApiError`], like every `/api` route; the simulator's own error bodies are passed
//! on with its status.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::AppState;
use crate::api::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sandbox", get(info))
        .route("/sandbox/phones", get(phones).post(phones))
        .route(
            "/sandbox/phones/{phone}/messages",
            get(phone_route).post(phone_route),
        )
        .route("/sandbox/phones/{phone}/scan", post(phone_route))
        .route("/sandbox/phones/{phone}/read", post(phone_route))
        // A gated phone's screen, and its owner's browser making the passkey assertion.
        .route("/sandbox/phones/{phone}/passkey", get(phone_route))
        .route("/sandbox/phones/{phone}/passkey/assert", post(phone_route))
        // The virtual phones are the operator's, not a tenant's.
        .route_layer(axum::middleware::from_fn(crate::api::admin_route))
}

/// The simulator's admin base URL, from the WebSocket URL the gateway connects to.
fn admin_url(state: &AppState) -> Result<reqwest::Url, ApiError> {
    let ws = state.config.wa_url.as_deref().ok_or_else(|| {
        ApiError::not_found("not in sandbox mode: no simulator is configured (WAMUX_WA_URL)")
    })?;
    let mut url = reqwest::Url::parse(ws).map_err(ApiError::internal)?;
    let scheme = if url.scheme() == "ws" {
        "http"
    } else {
        "https"
    };
    url.set_scheme(scheme).map_err(|()| {
        ApiError::internal(anyhow::anyhow!(
            "cannot derive the simulator admin URL from {ws}"
        ))
    })?;
    url.set_path("/admin");
    url.set_query(None);
    Ok(url)
}

async fn info(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let admin = admin_url(&state)?;
    Ok(Json(serde_json::json!({
        "enabled": true,
        "adminUrl": admin.as_str(),
        "wsUrl": state.config.wa_url,
    })))
}

async fn phones(State(state): State<AppState>, method: Method, body: Bytes) -> Response {
    forward(&state, method, "phones", body).await
}

async fn phone_route(
    State(state): State<AppState>,
    Path(phone): Path<String>,
    method: Method,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    if phone.is_empty() || !phone.bytes().all(|b| b.is_ascii_digit()) {
        return ApiError::bad_request("invalid_phone", "a virtual phone is a number, digits only")
            .into_response();
    }
    // What follows the phone: one of the routes above, so nothing else is passed on.
    let prefix = format!("/phones/{phone}/");
    let action = uri
        .path()
        .split_once(&prefix)
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    forward(&state, method, &format!("phones/{phone}/{action}"), body).await
}

async fn forward(state: &AppState, method: Method, path: &str, body: Bytes) -> Response {
    match try_forward(state, method, path, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn try_forward(
    state: &AppState,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut url = admin_url(state)?;
    url.set_path(&format!("/admin/{path}"));
    let mut client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(20));
    if let Some(ca) = &state.config.wa_ca_file {
        let pem = tokio::fs::read(ca).await.map_err(ApiError::internal)?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(ApiError::internal)?;
        client = client.add_root_certificate(cert);
    }
    let client = client.build().map_err(ApiError::internal)?;
    let mut req = client.request(method.clone(), url);
    if method == Method::POST {
        req = req
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let res = req.send().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "simulator_unreachable",
            format!("the WhatsApp simulator did not answer: {e}"),
        )
    })?;
    let status = res.status();
    let bytes = res.bytes().await.map_err(ApiError::internal)?;
    if !status.is_success() && serde_json::from_slice::<serde_json::Value>(&bytes).is_err() {
        let text = String::from_utf8_lossy(&bytes);
        return Err(ApiError::new(
            status,
            "simulator_error",
            format!("the simulator answered {status}: {}", text.trim()),
        ));
    }
    Ok((status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}
