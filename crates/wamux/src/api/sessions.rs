//! Sessions: start, QR, status, list, logout, restart, delete, pairing code.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::{ApiJson, ApiQuery, SessionPath};
use super::{ApiError, Result};
use crate::AppState;
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
            SessionError::Send(why) => ApiError::send_failed(why),
            SessionError::ShuttingDown => ApiError::unavailable("the server is shutting down"),
            SessionError::Timeout(what) => ApiError::new(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("timed out waiting for {what}"),
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

async fn start_session(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<StartBody>,
) -> Result<Response> {
    let id = match body.session_id {
        None | Some(serde_json::Value::Null) => return Err(ApiError::missing_field("sessionId")),
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err(ApiError::invalid_field("sessionId", "must be a string")),
    };
    let id = SessionId::parse(&id).map_err(ApiError::invalid_session_id)?;
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

async fn qr(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
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
    use base64::Engine;
    let data_url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    );
    Ok(Json(serde_json::json!({
        "sessionId": id,
        "qr": qr.code,
        "qrImage": data_url,
        "expiresAt": qr.expires_at,
    }))
    .into_response())
}

async fn status(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
) -> Result<Json<SessionInfo>> {
    Ok(Json(state.sessions.info(&id)?))
}

async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    let sessions = state.sessions.list();
    Json(serde_json::json!({"sessions": sessions}))
}

async fn logout(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
) -> Result<Json<SessionInfo>> {
    Ok(Json(state.sessions.logout(&id).await?))
}

async fn restart(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
) -> Result<Json<SessionInfo>> {
    Ok(Json(state.sessions.restart(&id).await?))
}

async fn delete_session(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
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

async fn pairing_code(
    State(state): State<AppState>,
    SessionPath(id): SessionPath,
    ApiJson(body): ApiJson<PairBody>,
) -> Result<Json<serde_json::Value>> {
    let phone = match body.phone {
        None | Some(serde_json::Value::Null) => return Err(ApiError::missing_field("phone")),
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
