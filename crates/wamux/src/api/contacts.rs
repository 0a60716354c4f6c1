//! Contacts: whether phone numbers have a WhatsApp account, what an account shows of
//! itself (about, business, profile photo), blocking.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, SessionPath, needs};
use super::{ApiError, Result};
use crate::AppState;
use crate::model::ChatAddress;
use crate::whatsapp::{ContactInfo, NumberCheck, Picture};

/// How many numbers one request may ask about (WhatsApp Web asks in batches this size).
const MAX_PHONES: usize = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions/{session_id}/contacts/check", post(check))
        .route("/sessions/{session_id}/contacts/{contact}", get(info))
        .route(
            "/sessions/{session_id}/contacts/{contact}/picture",
            get(picture),
        )
        .route(
            "/sessions/{session_id}/contacts/{contact}/block",
            post(block),
        )
        .route(
            "/sessions/{session_id}/contacts/{contact}/unblock",
            post(unblock),
        )
}

/// A contact named in a path: a phone number or a user JID (not a group).
fn contact(raw: &str) -> Result<ChatAddress> {
    let addr = ChatAddress::parse(raw).map_err(|e| ApiError::invalid_field("contact", e))?;
    if addr.as_str().ends_with("@g.us") {
        return Err(ApiError::invalid_field(
            "contact",
            "a group is not a contact; use a phone number or a user JID",
        ));
    }
    Ok(addr)
}

#[utoipa::path(get, path = "/api/sessions/{sessionId}/contacts/{contact}", tag = "sessions", operation_id = "contactInfo", summary = "What an account shows of itself",
    params(("sessionId" = String, Path, description = "the session id, which asks WhatsApp"), ("contact" = String, Path, description = "a phone number or a user JID (`...@s.whatsapp.net`, `...@lid`)")),
    responses((status = 200, description = "The account: phone and LID, about text, business flag and name, whether it has a photo", body = crate::whatsapp::ContactInfo),
        (status = 400, description = "`invalid_field` (`contact`), `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `contact_not_found`: no WhatsApp account", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn info(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Read>,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Json<ContactInfo>> {
    let who = contact(&raw)?;
    state
        .sessions
        .contact_info(&id, &who)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "contact_not_found",
                format!("`{raw}` has no WhatsApp account"),
            )
        })
}

#[utoipa::path(get, path = "/api/sessions/{sessionId}/contacts/{contact}/picture", tag = "sessions", operation_id = "contactPicture", summary = "An account's profile photo",
    params(("sessionId" = String, Path, description = "the session id, which asks WhatsApp"), ("contact" = String, Path, description = "a phone number or a user JID")),
    responses((status = 200, description = "Where the photo is (WhatsApp's URL, which expires; ask again then)", body = crate::whatsapp::Picture),
        (status = 400, description = "`invalid_field` (`contact`), `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `picture_not_found`: no photo, or its owner hides it from us", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn picture(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Read>,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Json<Picture>> {
    let who = contact(&raw)?;
    state
        .sessions
        .profile_picture(&id, &who)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "picture_not_found",
                format!("`{raw}` has no profile photo we may see"),
            )
        })
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Blocked {
    contact: String,
    blocked: bool,
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/contacts/{contact}/block", tag = "sessions", operation_id = "blockContact", summary = "Block a contact",
    params(("sessionId" = String, Path, description = "the session id"), ("contact" = String, Path, description = "a phone number or a user JID")),
    responses((status = 200, description = "Blocked: their messages, calls and presence no longer reach the account", body = Blocked),
        (status = 400, description = "`invalid_field` (`contact`), `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn block(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Json<Blocked>> {
    set_blocked(state, id, &raw, true).await
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/contacts/{contact}/unblock", tag = "sessions", operation_id = "unblockContact", summary = "Unblock a contact",
    params(("sessionId" = String, Path, description = "the session id"), ("contact" = String, Path, description = "a phone number or a user JID")),
    responses((status = 200, description = "Unblocked", body = Blocked),
        (status = 400, description = "`invalid_field` (`contact`), `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn unblock(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Json<Blocked>> {
    set_blocked(state, id, &raw, false).await
}

async fn set_blocked(
    state: AppState,
    id: crate::model::SessionId,
    raw: &str,
    blocked: bool,
) -> Result<Json<Blocked>> {
    let who = contact(raw)?;
    state.sessions.block(&id, &who, blocked).await?;
    Ok(Json(Blocked {
        contact: who.as_str().to_owned(),
        blocked,
    }))
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
