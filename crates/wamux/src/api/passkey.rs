//! The passkey step of linking: what WhatsApp asks for, the owner's assertion, the code
//! confirmation. See docs/passkey.md for the operator's side.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::extract::{ApiJson, SessionPath, needs};
use super::{ApiError, Result};
use crate::AppState;
use crate::passkey::Assertion;
use crate::session::PasskeyInfo;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/sessions/{session_id}/passkey",
            get(passkey).post(submit_assertion),
        )
        .route("/sessions/{session_id}/passkey/confirm", post(confirm))
}

#[utoipa::path(get, path = "/api/sessions/{sessionId}/passkey", tag = "sessions", operation_id = "getPasskey", summary = "The passkey step of linking",
    description = "When WhatsApp gates a link behind the account owner's passkey, `stage` is `assertion_required` and `options` are the WebAuthn request options to pass to `navigator.credentials.get()` on https://web.whatsapp.com; then `confirmation_required` with the `code` the phone shows too; `confirming` while WhatsApp takes its next step. `none` with `error` after a failure.",
    params(("sessionId" = String, Path, description = "the session id")),
    responses((status = 200, description = "The passkey step", body = PasskeyInfo),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn passkey(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Manage>,
) -> Result<Json<PasskeyInfo>> {
    Ok(Json(state.sessions.passkey(&id)?))
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/passkey", tag = "sessions", operation_id = "submitPasskeyAssertion", summary = "Hand WhatsApp the owner's passkey assertion",
    description = "The body is what `PublicKeyCredential.toJSON()` returns in the owner's browser on https://web.whatsapp.com. Answers once WhatsApp accepted it; the code to compare follows (a `passkey-confirmation` event). The assertion is neither logged nor stored.",
    params(("sessionId" = String, Path, description = "the session id")),
    request_body(content = Object, description = "`PublicKeyCredential.toJSON()`: `{\"id\",\"rawId\",\"type\":\"public-key\",\"response\":{\"clientDataJSON\",\"authenticatorData\",\"signature\",\"userHandle\"}}`"),
    responses((status = 202, description = "WhatsApp accepted the assertion", body = PasskeyInfo),
        (status = 400, description = "`invalid_assertion` (the message names the field), `invalid_json`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`passkey_not_pending`: no assertion is awaited", body = crate::api::openapi::schemas::ErrorBody),
        (status = 422, description = "`passkey_rejected`: WhatsApp refused it; the link attempt is over (start the session again)", body = crate::api::openapi::schemas::ErrorBody),
        (status = 504, description = "`timeout`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn submit_assertion(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Manage>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<(StatusCode, Json<PasskeyInfo>)> {
    let assertion = Assertion::parse(&body)
        .map_err(|e| ApiError::bad_request("invalid_assertion", e.to_string()))?;
    let info = state.sessions.passkey_assertion(&id, assertion).await?;
    Ok((StatusCode::ACCEPTED, Json(info)))
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/passkey/confirm", tag = "sessions", operation_id = "confirmPasskey", summary = "Confirm the passkey code",
    description = "Call once the operator saw that the phone shows the same `code` as `GET .../passkey`. No body.",
    params(("sessionId" = String, Path, description = "the session id")),
    responses((status = 202, description = "WhatsApp took the confirmation; the link completes (status `connecting`, then `connected`)", body = PasskeyInfo),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`passkey_not_pending`: no code waits for confirmation", body = crate::api::openapi::schemas::ErrorBody),
        (status = 422, description = "`passkey_rejected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 504, description = "`timeout`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn confirm(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Manage>,
) -> Result<(StatusCode, Json<PasskeyInfo>)> {
    let info = state.sessions.passkey_confirm(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(info)))
}
