//! Presence: showing the account online or typing, and hearing contacts' presence. Calls:
//! declining one that rings.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, SessionPath, needs};
use super::{ApiError, Result};
use crate::AppState;
use crate::model::{ChatAddress, PresenceState};
use crate::store::calls::CallSettings;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions/{session_id}/presence", post(set))
        .route("/sessions/{session_id}/presence/subscribe", post(subscribe))
        .route(
            "/sessions/{session_id}/calls/{call_id}/reject",
            post(reject_call),
        )
        .route(
            "/sessions/{session_id}/calls/settings",
            axum::routing::get(call_settings).put(set_call_settings),
        )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceBody {
    /// `available` or `unavailable` (the account), or `composing`, `recording`, `paused`
    /// (shown in `chat`).
    #[schema(example = "composing")]
    state: String,
    /// The chat a chat state is shown in (any `to` form); only with those states.
    #[schema(example = "15551234567")]
    chat: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresenceSet {
    session_id: String,
    state: PresenceState,
    chat_id: Option<String>,
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/presence", tag = "sessions", operation_id = "setPresence", summary = "Show the account online, offline or typing",
    params(("sessionId" = String, Path, description = "the session id")),
    request_body = PresenceBody,
    responses((status = 200, description = "WhatsApp has it", body = PresenceSet),
        (status = 400, description = "`invalid_field` (`state`, or `chat` missing for a chat state or given for the account's), `invalid_body`, `invalid_json`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn set(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    ApiJson(body): ApiJson<PresenceBody>,
) -> Result<Json<PresenceSet>> {
    let presence = PresenceState::parse(&body.state).ok_or_else(|| {
        ApiError::invalid_field(
            "state",
            format!(
                "`{}` is not one of available, unavailable, composing, recording, paused",
                body.state
            ),
        )
    })?;
    let chat = match (presence.in_chat(), body.chat) {
        (true, None) => {
            return Err(ApiError::invalid_field(
                "chat",
                format!(
                    "a `{}` state is shown in a chat: give `chat`",
                    presence.as_str()
                ),
            ));
        }
        (false, Some(_)) => {
            return Err(ApiError::invalid_field(
                "chat",
                "`available` and `unavailable` are the account's, not a chat's: leave `chat` out",
            ));
        }
        (_, Some(c)) => {
            Some(ChatAddress::parse(&c).map_err(|e| ApiError::invalid_field("chat", e))?)
        }
        (false, None) => None,
    };
    state
        .sessions
        .presence(&id, presence, chat.as_ref())
        .await?;
    Ok(Json(PresenceSet {
        session_id: id.to_string(),
        state: presence,
        chat_id: chat.map(|c| c.as_str().to_owned()),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeBody {
    /// Whose presence to hear (any `to` form).
    #[schema(example = "15551234567")]
    chat: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subscribed {
    session_id: String,
    chat_id: String,
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/presence/subscribe", tag = "sessions", operation_id = "subscribePresence", summary = "Hear a contact's presence",
    params(("sessionId" = String, Path, description = "the session id")),
    request_body = SubscribeBody,
    responses((status = 200, description = "Subscribed: `presence` events follow (at once, then on every change) while the session stays connected; subscribe again after a reconnect", body = Subscribed),
        (status = 400, description = "`invalid_field`, `invalid_body`, `invalid_json`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn subscribe(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    ApiJson(body): ApiJson<SubscribeBody>,
) -> Result<Json<Subscribed>> {
    let chat = ChatAddress::parse(&body.chat).map_err(|e| ApiError::invalid_field("chat", e))?;
    if chat.as_str().ends_with("@g.us") {
        return Err(ApiError::invalid_field(
            "chat",
            "a group has no presence; subscribe to its members",
        ));
    }
    state.sessions.subscribe_presence(&id, &chat).await?;
    Ok(Json(Subscribed {
        session_id: id.to_string(),
        chat_id: chat.as_str().to_owned(),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallRejected {
    session_id: String,
    call_id: String,
    rejected: bool,
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/calls/{callId}/reject", tag = "sessions", operation_id = "rejectCall", summary = "Decline a ringing call",
    params(("sessionId" = String, Path, description = "the session id"), ("callId" = String, Path, description = "the `id` of the `call` event")),
    responses((status = 200, description = "Declined: the caller's phone stops ringing", body = CallRejected),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `call_not_found`: no such call rings (taken, ended, or declined already)", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn reject_call(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    axum::extract::Path((_, call_id)): axum::extract::Path<(String, String)>,
) -> Result<Json<CallRejected>> {
    if !state.sessions.reject_call(&id, &call_id).await? {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "call_not_found",
            format!("no call `{call_id}` rings in session `{id}`"),
        ));
    }
    Ok(Json(CallRejected {
        session_id: id.to_string(),
        call_id,
        rejected: true,
    }))
}

#[utoipa::path(get, path = "/api/sessions/{sessionId}/calls/settings", tag = "sessions", operation_id = "callSettings", summary = "How the session answers calls",
    params(("sessionId" = String, Path, description = "the session id")),
    responses((status = 200, description = "The settings (by default calls ring)", body = CallSettings),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn call_settings(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Manage>,
) -> Result<Json<CallSettings>> {
    state.sessions.info(&id)?;
    Ok(Json(
        crate::store::calls::get(&state.store, id.as_str()).await?,
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallSettingsBody {
    /// Decline every call at once.
    reject: bool,
    /// Sent to the caller after declining (at most 4096 bytes); leave it out for none.
    #[schema(example = "I cannot take calls here; please write.")]
    message: Option<String>,
}

#[utoipa::path(put, path = "/api/sessions/{sessionId}/calls/settings", tag = "sessions", operation_id = "setCallSettings", summary = "Decline calls automatically",
    params(("sessionId" = String, Path, description = "the session id")),
    request_body = CallSettingsBody,
    responses((status = 200, description = "Stored; it applies to the next call (`call` events then show `offer`, then `rejected`)", body = CallSettings),
        (status = 400, description = "`invalid_field` (`message`), `invalid_body`, `invalid_json`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn set_call_settings(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Manage>,
    ApiJson(body): ApiJson<CallSettingsBody>,
) -> Result<Json<CallSettings>> {
    let message = body.message.filter(|m| !m.trim().is_empty());
    if message.as_ref().is_some_and(|m| m.len() > 4096) {
        return Err(ApiError::invalid_field(
            "message",
            "must be at most 4096 bytes",
        ));
    }
    state.sessions.info(&id)?;
    let settings = CallSettings {
        reject: body.reject,
        message,
    };
    crate::store::calls::set(&state.store, id.as_str(), &settings).await?;
    Ok(Json(settings))
}
