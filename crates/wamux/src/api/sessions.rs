//! Sessions: start, QR, status, list, logout, restart, delete, pairing code.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiQuery, SessionPath, needs};
use super::{ApiError, Caller, Result};
use crate::AppState;
use crate::access::Scope;
use crate::model::{ChatAddress, SessionId};
use crate::session::{SessionError, SessionInfo};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/start-session", post(start_session))
        .route("/qr/{session_id}", get(qr))
        .route("/status/{session_id}", get(status))
        .route("/sessions", get(list))
        .route("/sessions/{session_id}", delete(delete_session).get(status))
        .route("/sessions/{session_id}/logout", post(logout))
        .route("/sessions/{session_id}/restart", post(restart))
        .route("/sessions/{session_id}/pairing-code", post(pairing_code))
        .route(
            "/sessions/{session_id}/settings",
            get(settings).put(set_settings),
        )
}

/// A session's own settings.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Chats whose messages are dropped before storage and webhooks (still acknowledged to
    /// WhatsApp): any of `groups`, `status`, `channels`, `broadcast`.
    ignore: Vec<crate::model::ChatClass>,
    /// How queued messages are paced against WhatsApp's spam limits.
    pacing: crate::model::Pacing,
}

/// What changes in a session's settings: the fields given; the others stay.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsChange {
    #[serde(default)]
    ignore: Option<Vec<crate::model::ChatClass>>,
    #[serde(default)]
    pacing: Option<crate::model::Pacing>,
}

#[utoipa::path(get, path = "/api/sessions/{sessionId}/settings", tag = "sessions", operation_id = "sessionSettings", summary = "A session's settings",
    params(("sessionId" = String, Path, description = "the session id")),
    responses((status = 200, description = "The settings", body = Settings),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn settings(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Read>,
) -> Result<Json<Settings>> {
    let ignore = state.sessions.ignore(&id).await?;
    Ok(Json(Settings {
        ignore: ignore.classes(),
        pacing: state.sessions.pacing(&id).await?,
    }))
}

#[utoipa::path(put, path = "/api/sessions/{sessionId}/settings", tag = "sessions", operation_id = "setSessionSettings", summary = "Change a session's settings",
    params(("sessionId" = String, Path, description = "the session id")),
    request_body = SettingsChange,
    responses((status = 200, description = "The settings now; the running client follows at once", body = Settings),
        (status = 400, description = "`invalid_body`: an unknown chat class or field; `invalid_field`: pacing out of bounds", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn set_settings(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Manage>,
    ApiJson(body): ApiJson<SettingsChange>,
) -> Result<Json<Settings>> {
    if let Some(problem) = body.pacing.as_ref().and_then(|p| p.problem()) {
        return Err(ApiError::invalid_field("pacing", problem));
    }
    if let Some(ignore) = &body.ignore {
        let ignore = crate::model::Ignore::of(ignore);
        state.sessions.set_ignore(&id, ignore).await?;
    }
    if let Some(pacing) = &body.pacing {
        state.sessions.set_pacing(&id, pacing).await?;
    }
    Ok(Json(Settings {
        ignore: state.sessions.ignore(&id).await?.classes(),
        pacing: state.sessions.pacing(&id).await?,
    }))
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound(id) => ApiError::session_not_found(&id),
            SessionError::NotConnected { id, status } => {
                ApiError::session_not_connected(&id, status)
            }
            SessionError::NoQr { id, status } => ApiError::no_qr(&id, status),
            SessionError::WrongState(msg) => ApiError::conflict("wrong_state", msg),
            SessionError::QuotedNotFound(id) => ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "quoted_message_not_found",
                format!("`quotedId`: message `{id}` is not in this session's history"),
            ),
            SessionError::MessageNotFound(id) => ApiError::message_not_found(&id),
            SessionError::Refused(code, msg) => ApiError::conflict(code, msg),
            SessionError::Send(why) => ApiError::send_failed(why),
            SessionError::ShuttingDown => ApiError::unavailable("the server is shutting down"),
            SessionError::Timeout(what) => ApiError::new(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("timed out waiting for {what}"),
            ),
            e @ SessionError::WhatsApp(_) => ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "whatsapp_error",
                e.to_string(),
            ),
            SessionError::Group(g) => ApiError::group(g),
            SessionError::PasskeyNotPending(msg) => ApiError::conflict("passkey_not_pending", msg),
            SessionError::InvalidAssertion(msg) => ApiError::bad_request("invalid_assertion", msg),
            SessionError::PasskeyRejected(msg) => ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "passkey_rejected",
                msg,
            ),
            SessionError::Store(e) => ApiError::internal(e),
            SessionError::Internal(e) => ApiError::internal(e),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartBody {
    session_id: Option<serde_json::Value>,
}

#[utoipa::path(post, path = "/api/start-session", tag = "sessions", operation_id = "startSession", summary = "Create or resume a session",
    request_body = crate::api::openapi::schemas::StartSession,
    responses((status = 201, description = "Session created; its QR code follows", body = crate::api::openapi::schemas::SessionStarted),
        (status = 200, description = "The session already existed (idempotent)", body = crate::api::openapi::schemas::SessionStarted),
        (status = 400, description = "`missing_field`, `invalid_field`, `invalid_session_id`, `invalid_json`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 415, description = "the body is not `application/json`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn start_session(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<StartBody>,
) -> Result<Response> {
    let id = match body.session_id {
        None | Some(serde_json::Value::Null) => return Err(ApiError::missing_field("sessionId")),
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err(ApiError::invalid_field("sessionId", "must be a string")),
    };
    let id = SessionId::parse(&id).map_err(ApiError::invalid_session_id)?;
    caller.may(&id, Scope::Manage)?;
    let (info, created) = state.sessions.start(id).await?;
    let status = if created {
        axum::http::StatusCode::CREATED
    } else {
        axum::http::StatusCode::OK
    };
    let mut body = serde_json::to_value(&info).map_err(ApiError::internal)?;
    if let Some(o) = body.as_object_mut() {
        o.insert("success".into(), true.into());
        o.insert("created".into(), created.into());
        o.insert(
            "message".into(),
            if created {
                "session created; fetch the QR code from GET /api/qr/{sessionId}".into()
            } else {
                "session already exists".into()
            },
        );
    }
    Ok((status, Json(body)).into_response())
}

#[derive(Deserialize)]
struct QrQuery {
    format: Option<String>,
}

#[utoipa::path(get, path = "/api/qr/{sessionId}", tag = "sessions", operation_id = "getQr", summary = "The QR code to scan",
    params(("sessionId" = String, Path, description = "the session id"), ("format" = Option<String>, Query, description = "`json` (default) or `png`")),
    responses((status = 200, description = "The current QR code", content((crate::api::openapi::schemas::Qr = "application/json"), (Vec<u8> = "image/png"))),
        (status = 400, description = "`invalid_query`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`qr_not_available`: the session is not waiting for a scan", body = crate::api::openapi::schemas::ErrorBody)))]
async fn qr(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Manage>,
    ApiQuery(q): ApiQuery<QrQuery>,
) -> Result<Response> {
    let want_png = match q.format.as_deref() {
        None | Some("json") => false,
        Some("png") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`format`: `{other}` is not one of json, png"),
            ));
        }
    };
    let qr = state.sessions.qr(&id)?;
    let png = crate::qr::png(&qr.code).map_err(ApiError::internal)?;
    if want_png {
        return Ok(([(CONTENT_TYPE, "image/png")], png).into_response());
    }
    let data_url = crate::qr::data_url(&qr.code).map_err(ApiError::internal)?;
    Ok(Json(serde_json::json!({
        "sessionId": id,
        "qr": qr.code,
        "qrImage": data_url,
        "expiresAt": qr.expires_at,
    }))
    .into_response())
}

#[utoipa::path(get, path = "/api/status/{sessionId}", tag = "sessions", operation_id = "getStatus", summary = "A session's status",
    params(("sessionId" = String, Path, description = "the session id")),
    responses((status = 200, description = "The session's status", body = crate::session::SessionInfo),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody), (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn status(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Read>,
) -> Result<Json<SessionInfo>> {
    Ok(Json(state.sessions.info(&id)?))
}

#[utoipa::path(get, path = "/api/sessions", tag = "sessions", operation_id = "listSessions", summary = "All sessions",
    responses((status = 200, description = "All sessions with their status (for a scoped key, those its patterns name)", body = crate::api::openapi::schemas::SessionList)))]
async fn list(State(state): State<AppState>, caller: Caller) -> Json<serde_json::Value> {
    let mut sessions = state.sessions.list();
    sessions.retain(|s| caller.sees(s.session_id.as_str()));
    Json(serde_json::json!({"sessions": sessions}))
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/logout", tag = "sessions", operation_id = "logoutSession", summary = "Log a session out",
    params(("sessionId" = String, Path, description = "the session id")),
    responses((status = 200, description = "Logged out: the device is unlinked; the session stays, ready for a new QR", body = crate::session::SessionInfo),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody), (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody), (status = 409, description = "`wrong_state`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn logout(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Manage>,
) -> Result<Json<SessionInfo>> {
    Ok(Json(state.sessions.logout(&id).await?))
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/restart", tag = "sessions", operation_id = "restartSession", summary = "Reconnect a session",
    params(("sessionId" = String, Path, description = "the session id")),
    responses((status = 200, description = "Reconnecting", body = crate::session::SessionInfo),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody), (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody), (status = 409, description = "`wrong_state`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn restart(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Manage>,
) -> Result<Json<SessionInfo>> {
    Ok(Json(state.sessions.restart(&id).await?))
}

#[utoipa::path(delete, path = "/api/sessions/{sessionId}", tag = "sessions", operation_id = "deleteSession", summary = "Delete a session",
    params(("sessionId" = String, Path, description = "the session id")),
    responses((status = 200, description = "Logged out and removed with its data", body = crate::api::openapi::schemas::SessionDeleted),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody), (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn delete_session(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Manage>,
) -> Result<Json<serde_json::Value>> {
    state.sessions.delete(&id).await?;
    Ok(Json(
        serde_json::json!({"success": true, "sessionId": id, "deleted": true}),
    ))
}

#[derive(Deserialize)]
struct PairBody {
    phone: Option<serde_json::Value>,
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/pairing-code", tag = "sessions", operation_id = "pairingCode", summary = "Log in with a pairing code",
    params(("sessionId" = String, Path, description = "the session id")), request_body = crate::api::openapi::schemas::PairingCodeRequest,
    responses((status = 200, description = "A code to type on the phone instead of scanning the QR", body = crate::api::openapi::schemas::PairingCode),
        (status = 400, description = "`missing_field`, `invalid_phone`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody), (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`wrong_state`: the session is not waiting for a login", body = crate::api::openapi::schemas::ErrorBody), (status = 504, description = "`timeout`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn pairing_code(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Manage>,
    ApiJson(body): ApiJson<PairBody>,
) -> Result<Json<serde_json::Value>> {
    let phone = match body.phone {
        None | Some(serde_json::Value::Null) => return Err(ApiError::missing_field("phone")),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => {
            return Err(ApiError::missing_field("phone"));
        }
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(_) => return Err(ApiError::invalid_field("phone", "must be a string")),
    };
    let addr = ChatAddress::parse(&phone).map_err(ApiError::invalid_phone)?;
    if !addr.as_str().ends_with("@s.whatsapp.net") {
        return Err(ApiError::invalid_phone("`phone` must be a phone number"));
    }
    let code = state.sessions.pairing_code(&id, addr.user()).await?;
    Ok(Json(serde_json::json!({"sessionId": id, "code": code})))
}
