//! Contacts: whether phone numbers have a WhatsApp account.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, SessionPath, needs};
use super::{ApiError, Result};
use crate::AppState;
use crate::model::ChatAddress;
use crate::whatsapp::NumberCheck;

/// How many numbers one request may ask about (WhatsApp Web asks in batches this size).
const MAX_PHONES: usize = 50;

pub fn router() -> Router<AppState> {
    Router::new().route("/sessions/{session_id}/contacts/check", post(check))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CheckBody {
    /// Phone numbers in any accepted spelling (`15551234567`, `+1 555 123 4567`,
    /// `15551234567@c.us`), at most 50.
    phones: Option<Vec<serde_json::Value>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CheckAnswer {
    /// One per number asked about, in the same order.
    results: Vec<NumberCheck>,
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/contacts/check", tag = "sessions", operation_id = "checkNumbers", summary = "Which numbers are on WhatsApp",
    params(("sessionId" = String, Path, description = "the session id, which asks WhatsApp")),
    request_body = CheckBody,
    responses((status = 200, description = "One answer per number, in order", body = CheckAnswer),
        (status = 400, description = "`missing_field`, `invalid_field` (names the entry), `invalid_session_id`, `invalid_json`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`: WhatsApp did not answer", body = crate::api::openapi::schemas::ErrorBody)))]
async fn check(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    ApiJson(body): ApiJson<CheckBody>,
) -> Result<Json<CheckAnswer>> {
    let phones = body
        .phones
        .ok_or_else(|| ApiError::missing_field("phones"))?;
    if phones.is_empty() {
        return Err(ApiError::invalid_field(
            "phones",
            "must name at least one number",
        ));
    }
    if phones.len() > MAX_PHONES {
        return Err(ApiError::invalid_field(
            "phones",
            format!(
                "at most {MAX_PHONES} numbers per request, got {}",
                phones.len()
            ),
        ));
    }
    let mut digits = Vec::with_capacity(phones.len());
    for (i, p) in phones.iter().enumerate() {
        let text = match p {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => {
                return Err(ApiError::invalid_field(
                    &format!("phones[{i}]"),
                    "must be a string",
                ));
            }
        };
        let addr = ChatAddress::parse(&text)
            .map_err(|e| ApiError::invalid_field(&format!("phones[{i}]"), e))?;
        if !addr.as_str().ends_with("@s.whatsapp.net") {
            return Err(ApiError::invalid_field(
                &format!("phones[{i}]"),
                format!("`{text}` is not a phone number"),
            ));
        }
        digits.push(addr.user().to_owned());
    }
    let results = state.sessions.check_numbers(&id, &digits).await?;
    Ok(Json(CheckAnswer { results }))
}
