//! Messages: send text, locations and contact cards; read history; the send queue.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::extract::{ApiJson, ApiQuery, SessionPath, needs};
use super::{ApiError, Caller, Result};
use crate::AppState;
use crate::access::Scope;
use crate::model::{
    ChatAddress, ContactCard, Content, Location, Poll, SessionId, is_reaction_emoji,
};
use crate::store::messages::{Cursor, Direction, Filter};

pub fn router(state: &AppState) -> Router<AppState> {
    let limit = state.config.max_body_bytes;
    let idempotent = || {
        axum::middleware::from_fn_with_state(
            super::idempotency::Route {
                state: state.clone(),
                body_limit: limit,
            },
            super::idempotency::layer,
        )
    };
    Router::new()
        .route("/send-message", post(send_message).layer(idempotent()))
        .route("/send-location", post(send_location).layer(idempotent()))
        .route("/send-contact", post(send_contact).layer(idempotent()))
        .route("/send-reaction", post(send_reaction).layer(idempotent()))
        .route("/send-poll", post(send_poll).layer(idempotent()))
        .route("/messages/{session_id}", get(history))
        .route("/sessions/{session_id}/outbox", get(outbox))
        .route("/sessions/{session_id}/chats", get(chats))
        .route(
            "/sessions/{session_id}/chats/{chat}",
            axum::routing::patch(change_chat),
        )
        .route("/messages/{session_id}/{message_id}/resend", post(resend))
        .route(
            "/messages/{session_id}/{message_id}",
            axum::routing::patch(edit).delete(revoke),
        )
        .route("/messages/{session_id}/read", post(mark_read))
        .route(
            "/messages/{session_id}/{message_id}/receipts",
            get(receipts),
        )
        .route(
            "/messages/{session_id}/{message_id}/forward",
            post(forward).layer(idempotent()),
        )
        .route("/messages/{session_id}/{message_id}/star", post(star))
        .route(
            "/sessions/{session_id}/outbox/{message_id}",
            axum::routing::delete(cancel_queued),
        )
}

/// Takes a field that may be spelled two ways (the seed's aliases), as a string.
fn string_field(body: &Value, names: &[&str]) -> Result<Option<String>> {
    for n in names {
        match body.get(*n) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => return Ok(Some(s.clone())),
            // Phone numbers are often sent as JSON numbers.
            Some(Value::Number(x)) if *n == "number" || *n == "to" => {
                return Ok(Some(x.to_string()));
            }
            Some(_) => return Err(ApiError::invalid_field(n, "must be a string")),
        }
    }
    Ok(None)
}

#[utoipa::path(post, path = "/api/send-message", tag = "messages", operation_id = "sendMessage", summary = "Send a text message",
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe: the same key with the same body within 24 h returns the first answer (header `Idempotent-Replayed: true`) and sends nothing again"),),
    request_body = crate::api::openapi::schemas::SendMessage,
    responses((status = 200, description = "Sent; the message as history will show it", body = crate::api::openapi::schemas::Sent),
        (status = 202, description = "Queued (`\"queue\": true`, `sendAt`, or `WAMUX_SEND_QUEUE`): status `queued`, sent when the session is connected and `sendAt` has come", body = crate::api::openapi::schemas::Sent),
        (status = 400, description = "`missing_field`, `invalid_field`, `invalid_phone`, `invalid_session_id`, `invalid_json`, `invalid_idempotency_key`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the key came with another body", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `quoted_message_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`, `idempotency_key_in_use`", body = crate::api::openapi::schemas::ErrorBody), (status = 413, description = "`payload_too_large`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`send_failed`: WhatsApp did not accept it", body = crate::api::openapi::schemas::ErrorBody)))]
async fn send_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let target = Target::read(&state, &caller, &body, "\"text\":\"hi\"")?;
    let text = string_field(&body, &["text", "message"])?.ok_or(ApiError::missing_field("text"))?;
    if text.is_empty() {
        return Err(ApiError::invalid_field("text", "must not be empty"));
    }
    if text.len() > 65_536 {
        return Err(ApiError::invalid_field(
            "text",
            "must be at most 65536 bytes",
        ));
    }
    target.send(&state, Content::Text(text)).await
}

#[utoipa::path(post, path = "/api/send-location", tag = "messages", operation_id = "sendLocation", summary = "Send a location",
    params(("Idempotency-Key" = Option<String>, Header, description = "as for `/api/send-message`"),),
    request_body = crate::api::openapi::schemas::SendLocation,
    responses((status = 200, description = "Sent; the message as history will show it (`type: \"location\"`)", body = crate::api::openapi::schemas::Sent),
        (status = 202, description = "Queued, as for `/api/send-message`", body = crate::api::openapi::schemas::Sent),
        (status = 400, description = "`missing_field`, `invalid_field` (a latitude or longitude off the globe), `invalid_phone`, `invalid_session_id`, `invalid_json`, `invalid_idempotency_key`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `quoted_message_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`, `idempotency_key_in_use`", body = crate::api::openapi::schemas::ErrorBody), (status = 413, description = "`payload_too_large`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`send_failed`: WhatsApp did not accept it", body = crate::api::openapi::schemas::ErrorBody)))]
async fn send_location(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let target = Target::read(
        &state,
        &caller,
        &body,
        "\"latitude\":52.52,\"longitude\":13.405",
    )?;
    let coordinate = |name: &str| -> Result<f64> {
        match body.get(name) {
            None | Some(Value::Null) => Err(ApiError::missing_field(name)),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| ApiError::invalid_field(name, "must be a number of degrees")),
        }
    };
    let (latitude, longitude) = (coordinate("latitude")?, coordinate("longitude")?);
    let name = short_text(&body, "name")?;
    let address = short_text(&body, "address")?;
    let location = Location::new(latitude, longitude, name, address).map_err(|e| {
        let field = if e.starts_with("latitude") {
            "latitude"
        } else {
            "longitude"
        };
        ApiError::invalid_field(field, e)
    })?;
    target.send(&state, Content::Location(location)).await
}

#[utoipa::path(post, path = "/api/send-reaction", tag = "messages", operation_id = "sendReaction", summary = "React to a message",
    params(("Idempotency-Key" = Option<String>, Header, description = "as for `/api/send-message`"),),
    request_body = crate::api::openapi::schemas::SendReaction,
    responses((status = 200, description = "Sent: the reaction message (`type: \"reaction\"`); the target shows it in `reactions`", body = crate::api::openapi::schemas::Sent),
        (status = 400, description = "`missing_field`, `invalid_field` (`emoji` is not one emoji), `invalid_session_id`, `invalid_json`, `invalid_idempotency_key`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `message_not_found`: no such message in the session's history", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`, `idempotency_key_in_use`", body = crate::api::openapi::schemas::ErrorBody), (status = 413, description = "`payload_too_large`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`send_failed`: WhatsApp did not accept it", body = crate::api::openapi::schemas::ErrorBody)))]
async fn send_reaction(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "body must be a JSON object like {\"sessionId\":\"s1\",\"messageId\":\"3EB0...\",\"emoji\":\"👍\"}",
        ));
    }
    let session =
        string_field(&body, &["sessionId"])?.ok_or(ApiError::missing_field("sessionId"))?;
    let session = SessionId::parse(&session).map_err(ApiError::invalid_session_id)?;
    caller.may(&session, Scope::Send)?;
    let message_id =
        string_field(&body, &["messageId"])?.ok_or(ApiError::missing_field("messageId"))?;
    if message_id.is_empty() || message_id.len() > 128 {
        return Err(ApiError::invalid_field(
            "messageId",
            "must be a message id from the history",
        ));
    }
    let emoji =
        string_field(&body, &["emoji", "reaction"])?.ok_or(ApiError::missing_field("emoji"))?;
    if !is_reaction_emoji(&emoji) {
        return Err(ApiError::invalid_field(
            "emoji",
            "must be one emoji, or \"\" to take the reaction back",
        ));
    }
    let msg = state.sessions.react(&session, &message_id, &emoji).await?;
    sent(&msg)
}

/// The answer to a send: the message, with the seed's `success` and `messageId`.
fn sent(msg: &crate::model::Message) -> Result<Json<Value>> {
    let mut out = serde_json::to_value(msg).map_err(ApiError::internal)?;
    if let Some(o) = out.as_object_mut() {
        o.insert("success".into(), true.into());
        o.insert("messageId".into(), msg.id.clone().into());
    }
    Ok(Json(out))
}

#[utoipa::path(post, path = "/api/send-poll", tag = "messages", operation_id = "sendPoll", summary = "Send a poll",
    params(("Idempotency-Key" = Option<String>, Header, description = "as for `/api/send-message`"),),
    request_body = crate::api::openapi::schemas::SendPoll,
    responses((status = 200, description = "Sent; the message as history will show it (`type: \"poll\"`); votes come as `poll-vote` events and show in its `poll`", body = crate::api::openapi::schemas::Sent),
        (status = 400, description = "`missing_field`, `invalid_field` (the question, fewer than 2, more than 12 or duplicate options; `queue`/`sendAt`: a poll is sent at once), `invalid_phone`, `invalid_session_id`, `invalid_json`, `invalid_idempotency_key`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `quoted_message_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`, `idempotency_key_in_use`", body = crate::api::openapi::schemas::ErrorBody), (status = 413, description = "`payload_too_large`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`send_failed`: WhatsApp did not accept it", body = crate::api::openapi::schemas::ErrorBody)))]
async fn send_poll(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let mut target = Target::read(
        &state,
        &caller,
        &body,
        "\"question\":\"Lunch?\",\"options\":[\"12:00\",\"13:00\"]",
    )?;
    // The queue keeps no secrets: a poll goes at once, whatever the queue's default.
    match SendPlan::read(&body, false)? {
        SendPlan::Now => target.plan = SendPlan::Now,
        SendPlan::Queue { .. } => {
            return Err(ApiError::invalid_field(
                if body.get("sendAt").is_some_and(|v| !v.is_null()) {
                    "sendAt"
                } else {
                    "queue"
                },
                "a poll is sent at once; it cannot be queued or scheduled yet",
            ));
        }
    }
    let question =
        string_field(&body, &["question", "name"])?.ok_or(ApiError::missing_field("question"))?;
    let options = match body.get("options") {
        None | Some(Value::Null) => return Err(ApiError::missing_field("options")),
        Some(Value::Array(a)) => a
            .iter()
            .map(|o| {
                o.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::invalid_field("options", "must be a list of strings"))
            })
            .collect::<Result<Vec<_>>>()?,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "options",
                "must be a list of strings",
            ));
        }
    };
    let multiple = match body.get("multiple") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid_field("multiple", "must be true or false")),
    };
    let poll = Poll::new(&question, options, multiple).map_err(|e| {
        let (field, why) = e.split_once(": ").unwrap_or(("options", e.as_str()));
        ApiError::invalid_field(field, why)
    })?;
    target.send(&state, Content::poll(poll)).await
}

/// The most cards one message shares.
const MAX_CARDS: usize = 100;

#[utoipa::path(post, path = "/api/send-contact", tag = "messages", operation_id = "sendContact", summary = "Send contact cards",
    params(("Idempotency-Key" = Option<String>, Header, description = "as for `/api/send-message`"),),
    request_body = crate::api::openapi::schemas::SendContact,
    responses((status = 200, description = "Sent; the message as history will show it (`type: \"contact\"`, the cards in `contacts`)", body = crate::api::openapi::schemas::Sent),
        (status = 202, description = "Queued, as for `/api/send-message`", body = crate::api::openapi::schemas::Sent),
        (status = 400, description = "`missing_field`, `invalid_field` (names the card: `contacts[1].phone`), `invalid_phone`, `invalid_session_id`, `invalid_json`, `invalid_idempotency_key`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `quoted_message_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`, `idempotency_key_in_use`", body = crate::api::openapi::schemas::ErrorBody), (status = 413, description = "`payload_too_large`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`send_failed`: WhatsApp did not accept it", body = crate::api::openapi::schemas::ErrorBody)))]
async fn send_contact(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Value>)> {
    let target = Target::read(
        &state,
        &caller,
        &body,
        "\"contacts\":[{\"name\":\"Ana\",\"phone\":\"15551234567\"}]",
    )?;
    let cards = match body.get("contacts") {
        None | Some(Value::Null) => return Err(ApiError::missing_field("contacts")),
        Some(Value::Array(a)) => a,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "contacts",
                "must be a list of {\"name\",\"phone\"} or {\"vcard\"}",
            ));
        }
    };
    if cards.is_empty() || cards.len() > MAX_CARDS {
        return Err(ApiError::invalid_field(
            "contacts",
            format!("must hold 1 to {MAX_CARDS} cards"),
        ));
    }
    let cards = cards
        .iter()
        .enumerate()
        .map(|(i, c)| card(i, c))
        .collect::<Result<Vec<_>>>()?;
    target.send(&state, Content::Contacts(cards)).await
}

/// One card of `/api/send-contact`: `{"name","phone"}` or `{"vcard","name"?}`.
fn card(i: usize, c: &Value) -> Result<ContactCard> {
    let at = |f: &str| format!("contacts[{i}].{f}");
    if !c.is_object() {
        return Err(ApiError::invalid_field(
            &format!("contacts[{i}]"),
            "must be {\"name\",\"phone\"} or {\"vcard\"}",
        ));
    }
    let name = string_field(c, &["name"])
        .map_err(|_| ApiError::invalid_field(&at("name"), "must be a string"))?;
    if let Some(v) = c.get("vcard").filter(|v| !v.is_null()) {
        let v = v
            .as_str()
            .ok_or_else(|| ApiError::invalid_field(&at("vcard"), "must be a string"))?;
        return ContactCard::from_vcard(v, name)
            .map_err(|e| ApiError::invalid_field(&at("vcard"), e));
    }
    let phone = string_field(c, &["phone"])
        .map_err(|_| ApiError::invalid_field(&at("phone"), "must be a string"))?
        .ok_or_else(|| ApiError::missing_field(&at("phone")))?;
    let name = name.ok_or_else(|| ApiError::missing_field(&at("name")))?;
    let addr = ChatAddress::parse(&phone)
        .ok()
        .filter(|a| a.as_str().ends_with("@s.whatsapp.net"))
        .ok_or_else(|| {
            ApiError::invalid_field(
                &at("phone"),
                format!("`{phone}` is not a phone number with country code, e.g. 15551234567"),
            )
        })?;
    ContactCard::for_phone(&name, addr.user()).map_err(|e| ApiError::invalid_field(&at("name"), e))
}

/// An optional short text field (a place's name or address): at most 1024 bytes.
fn short_text(body: &Value, name: &str) -> Result<Option<String>> {
    let v = string_field(body, &[name])?.filter(|v| !v.trim().is_empty());
    if v.as_ref().is_some_and(|v| v.len() > 1024) {
        return Err(ApiError::invalid_field(name, "must be at most 1024 bytes"));
    }
    Ok(v)
}

/// `"mentions"`: phone numbers or user JIDs the text mentions (at most 1,024).
fn mentions_of(body: &Value) -> Result<Vec<String>> {
    let Some(v) = body.get("mentions").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list = v.as_array().filter(|a| a.len() <= 1024).ok_or_else(|| {
        ApiError::invalid_field(
            "mentions",
            "a list of at most 1,024 phone numbers or user JIDs",
        )
    })?;
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for m in list {
        let raw = match m {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(ApiError::invalid_field(
                    "mentions",
                    "each mention is a phone number or a user JID",
                ));
            }
        };
        let a = ChatAddress::parse(&raw).map_err(|e| ApiError::invalid_field("mentions", e))?;
        if a.as_str().ends_with("@g.us") {
            return Err(ApiError::invalid_field(
                "mentions",
                format!("`{raw}` is a group, not a person"),
            ));
        }
        if !out.iter().any(|o| o == a.as_str()) {
            out.push(a.as_str().to_owned());
        }
    }
    Ok(out)
}

/// What every send route reads the same way: the session (and the caller's right to send
/// from it), the recipient, the quoted message and when it goes.
struct Target {
    session: SessionId,
    to: ChatAddress,
    quoted: Option<String>,
    /// Who the text mentions, as user JIDs.
    mentions: Vec<String>,
    plan: SendPlan,
}

impl Target {
    /// `example` is the route's own fields, for the message that shows a whole body.
    fn read(state: &AppState, caller: &Caller, body: &Value, example: &str) -> Result<Self> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!(
                    "body must be a JSON object like {{\"sessionId\":\"s1\",\"to\":\"15551234567\",{example}}}"
                ),
            ));
        }
        let session =
            string_field(body, &["sessionId"])?.ok_or(ApiError::missing_field("sessionId"))?;
        let session = SessionId::parse(&session).map_err(ApiError::invalid_session_id)?;
        caller.may(&session, Scope::Send)?;
        let to = string_field(body, &["to", "number"])?.ok_or(ApiError::missing_field("to"))?;
        let to = ChatAddress::parse(&to).map_err(ApiError::invalid_phone)?;
        let quoted = string_field(body, &["quotedId", "quotedMessageId"])?;
        let mentions = mentions_of(body)?;
        let plan = SendPlan::read(body, state.config.send_queue)?;
        Ok(Target {
            session,
            to,
            quoted,
            mentions,
            plan,
        })
    }

    /// Sends (or queues) `content`; answers with the message and the seed's fields.
    async fn send(self, state: &AppState, content: Content) -> Result<(StatusCode, Json<Value>)> {
        let reply = crate::model::Reply {
            quoted_id: self.quoted,
            mentions: self.mentions,
        };
        let (status, msg) = match self.plan {
            SendPlan::Now => (
                StatusCode::OK,
                state
                    .sessions
                    .send(&self.session, &self.to, &content, &reply)
                    .await?,
            ),
            SendPlan::Queue { send_at } => (
                StatusCode::ACCEPTED,
                state
                    .sessions
                    .queue(&self.session, &self.to, &content, &reply, send_at)
                    .await?,
            ),
        };
        Ok((status, sent(&msg)?))
    }
}

/// Whether a send goes now or through the queue, from `"queue"` and `"sendAt"`.
enum SendPlan {
    Now,
    /// Queued; due at `send_at` (Unix seconds), or now.
    Queue {
        send_at: Option<i64>,
    },
}

impl SendPlan {
    fn read(body: &Value, queue_by_default: bool) -> Result<Self> {
        let queue = match body.get("queue") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(ApiError::invalid_field("queue", "must be true or false")),
        };
        let send_at = match body.get("sendAt") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let t = v.as_i64().ok_or_else(|| {
                    ApiError::invalid_field("sendAt", "must be a Unix time in seconds")
                })?;
                let now = crate::store::now();
                if t > now + crate::session::queue::MAX_AHEAD_SECS {
                    return Err(ApiError::invalid_field(
                        "sendAt",
                        "must be at most a year ahead",
                    ));
                }
                if t < 1_000_000_000 {
                    return Err(ApiError::invalid_field(
                        "sendAt",
                        "must be a Unix time in seconds (a past time sends at once)",
                    ));
                }
                Some(t)
            }
        };
        match (queue, send_at) {
            (Some(false), Some(_)) => Err(ApiError::invalid_field(
                "queue",
                "a send with `sendAt` goes through the queue; leave `queue` out or true",
            )),
            (_, Some(t)) => Ok(SendPlan::Queue { send_at: Some(t) }),
            (Some(true), None) => Ok(SendPlan::Queue { send_at: None }),
            (Some(false), None) => Ok(SendPlan::Now),
            (None, None) if queue_by_default => Ok(SendPlan::Queue { send_at: None }),
            (None, None) => Ok(SendPlan::Now),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HistoryQuery {
    chat: Option<String>,
    chat_id: Option<String>,
    direction: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
    #[serde(rename = "apiKey")]
    _api_key: Option<String>,
}

#[utoipa::path(get, path = "/api/messages/{sessionId}", tag = "messages", operation_id = "listMessages", summary = "Message history",
    params(("sessionId" = String, Path, description = "the session id"),
        ("chat" = Option<String>, Query, description = "only this chat (any `to` form; also `chatId`)"),
        ("direction" = Option<String>, Query, description = "`in`, `out` or `all` (default)"),
        ("since" = Option<i64>, Query, description = "unix seconds, inclusive"),
        ("until" = Option<i64>, Query, description = "unix seconds, inclusive"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
        ("limit" = Option<i64>, Query, description = "1 to 500, default 50")),
    responses((status = 200, description = "A page of the history, newest first", body = crate::api::openapi::schemas::History),
        (status = 400, description = "`invalid_field`, `invalid_query`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody), (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn history(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Read>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<Value>> {
    let chat_id = match q.chat.or(q.chat_id) {
        Some(c) => Some(
            ChatAddress::parse(&c)
                .map_err(|e| ApiError::invalid_field("chat", e))?
                .as_str()
                .to_owned(),
        ),
        None => None,
    };
    let direction = match q.direction.as_deref() {
        None | Some("all") => None,
        Some("in") | Some("incoming") => Some(Direction::In),
        Some("out") | Some("outgoing") => Some(Direction::Out),
        Some(other) => {
            return Err(ApiError::invalid_field(
                "direction",
                format!("`{other}` is not one of in, out, all"),
            ));
        }
    };
    let limit = int_param("limit", q.limit.as_deref())?.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 500",
        ));
    }
    let since = int_param("since", q.since.as_deref())?;
    let until = int_param("until", q.until.as_deref())?;
    let cursor = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(Cursor::decode(c).ok_or_else(|| {
            ApiError::invalid_field("cursor", "is not a cursor this API returned")
        })?),
    };
    // Parameters are checked first so a typo is reported even for an unknown session.
    state.sessions.info(&id)?;
    let filter = Filter {
        chat_id,
        direction,
        since,
        until,
    };
    let (messages, next) =
        crate::store::messages::list(&state.store, id.as_str(), &filter, cursor, limit).await?;
    Ok(Json(serde_json::json!({
        "sessionId": id,
        "messages": messages,
        "nextCursor": next.map(Cursor::encode),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatsQuery {
    limit: Option<String>,
    #[serde(rename = "apiKey")]
    _api_key: Option<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Chats {
    session_id: String,
    /// The most recent first.
    chats: Vec<crate::store::messages::Chat>,
}

#[utoipa::path(get, path = "/api/sessions/{sessionId}/chats", tag = "messages", operation_id = "listChats", summary = "The session's chats",
    params(("sessionId" = String, Path, description = "the session id"),
        ("limit" = Option<i64>, Query, description = "1 to 500, default 100")),
    responses((status = 200, description = "Each chat with its last message and how many received messages are not read yet, the most recent first", body = Chats),
        (status = 400, description = "`invalid_field`, `invalid_query`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody), (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn chats(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Read>,
    ApiQuery(q): ApiQuery<ChatsQuery>,
) -> Result<Json<Chats>> {
    let limit = int_param("limit", q.limit.as_deref())?.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 500",
        ));
    }
    state.sessions.info(&id)?;
    let chats = crate::store::messages::chats(&state.store, id.as_str(), limit).await?;
    Ok(Json(Chats {
        session_id: id.to_string(),
        chats,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChatBody {
    pinned: Option<bool>,
    archived: Option<bool>,
    muted: Option<bool>,
    /// With `muted: true`: the unix time (seconds, in the future) the mute ends; without
    /// it the chat is muted for good.
    muted_until: Option<i64>,
    /// Mark the chat unread (or not) by hand.
    marked_unread: Option<bool>,
}

/// A chat's state after a change.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatStateView {
    chat_id: String,
    state: crate::model::ChatState,
}

#[utoipa::path(patch, path = "/api/sessions/{sessionId}/chats/{chat}", tag = "messages", operation_id = "changeChat", summary = "Pin, archive, mute or mark a chat unread",
    params(("sessionId" = String, Path, description = "the session id"), ("chat" = String, Path, description = "a phone number, a user JID or a group JID")),
    request_body = ChatBody,
    responses((status = 200, description = "WhatsApp took the change (the account's other devices show it too); the chat's state", body = ChatStateView),
        (status = 400, description = "`invalid_field`, `invalid_body`, `invalid_json`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn change_chat(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, raw)): Path<(String, String)>,
    ApiJson(body): ApiJson<ChatBody>,
) -> Result<Json<ChatStateView>> {
    use crate::model::ChatChange;
    let chat = ChatAddress::parse(&raw).map_err(|e| ApiError::invalid_field("chat", e))?;
    let mut changes = Vec::new();
    if let Some(v) = body.pinned {
        changes.push(ChatChange::Pinned(v));
    }
    if let Some(v) = body.archived {
        changes.push(ChatChange::Archived(v));
    }
    match (body.muted, body.muted_until) {
        (None, None) => {}
        (Some(false), None) => changes.push(ChatChange::Unmuted),
        (Some(true), None) => changes.push(ChatChange::Muted(None)),
        (Some(true) | None, Some(t)) => {
            if t <= crate::store::now() {
                return Err(ApiError::invalid_field(
                    "mutedUntil",
                    "must be a unix time (seconds) in the future",
                ));
            }
            if t > 253_402_300_799 {
                return Err(ApiError::invalid_field(
                    "mutedUntil",
                    "is past the year 9999",
                ));
            }
            changes.push(ChatChange::Muted(Some(t * 1000)));
        }
        (Some(false), Some(_)) => {
            return Err(ApiError::invalid_field(
                "mutedUntil",
                "goes with `muted: true` (or alone), not `muted: false`",
            ));
        }
    }
    if let Some(v) = body.marked_unread {
        changes.push(ChatChange::MarkedUnread(v));
    }
    if changes.is_empty() {
        return Err(ApiError::invalid_field(
            "body",
            "give at least one of pinned, archived, muted, mutedUntil, markedUnread",
        ));
    }
    let chat_state = state.sessions.chat_action(&id, &chat, &changes).await?;
    Ok(Json(ChatStateView {
        chat_id: chat.as_str().to_owned(),
        state: chat_state,
    }))
}

/// An integer query parameter; the error names it.
fn int_param(name: &str, v: Option<&str>) -> Result<Option<i64>> {
    match v {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid_field(name, format!("`{s}` is not an integer"))),
    }
}

/// A queued send, as `GET /api/sessions/:id/outbox` lists it.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuedView {
    pub message_id: String,
    pub chat_id: String,
    pub to: String,
    #[serde(rename = "type")]
    pub kind: crate::model::MessageKind,
    /// For `type: "text"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<ContactCard>>,
    pub quoted_id: Option<String>,
    /// Unix seconds: when it may go (the session must be connected too).
    pub send_at: i64,
    /// Unix seconds: when a failed attempt is tried again (or, past the daily cap, when
    /// the next day's share begins).
    pub retry_at: Option<i64>,
    /// Unix seconds: when it is expected to go, after the messages before it, paced and
    /// within the daily cap (an estimate, if the session stays connected).
    pub expected_at: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Outbox {
    pub messages: Vec<QueuedView>,
}

#[utoipa::path(get, path = "/api/sessions/{sessionId}/outbox", tag = "messages", operation_id = "listOutbox", summary = "Queued sends",
    params(("sessionId" = String, Path, description = "the session id")),
    responses((status = 200, description = "What the session has queued, in the order it will go", body = Outbox),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody), (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn outbox(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Read>,
) -> Result<Json<Outbox>> {
    let queued = state.sessions.queued(&id).await?;
    let expected = state.sessions.expected(&id, &queued).await?;
    Ok(Json(Outbox {
        messages: queued
            .into_iter()
            .zip(expected)
            .map(|(q, expected_at)| QueuedView {
                expected_at,
                message_id: q.message_id,
                chat_id: q.chat_id,
                to: q.to,
                kind: q.body.content().kind(),
                text: q
                    .body
                    .text
                    .filter(|_| q.body.location.is_none() && q.body.contacts.is_none()),
                location: q.body.location,
                contacts: q.body.contacts,
                quoted_id: q.body.quoted_id,
                send_at: q.send_at,
                retry_at: q.retry_at,
                attempts: q.attempts,
                last_error: q.last_error,
                created_at: q.created_at,
            })
            .collect(),
    }))
}

#[utoipa::path(delete, path = "/api/sessions/{sessionId}/outbox/{messageId}", tag = "messages", operation_id = "cancelQueued", summary = "Cancel a queued send",
    params(("sessionId" = String, Path, description = "the session id"), ("messageId" = String, Path, description = "a queued message's id")),
    responses((status = 200, description = "Cancelled: it will not go; its message is `failed` with the reason `cancelled`", body = crate::api::openapi::schemas::Cancelled),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `not_found`: not queued (sent already, or never queued)", body = crate::api::openapi::schemas::ErrorBody)))]
async fn cancel_queued(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, message_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    if !state.sessions.cancel_queued(&id, &message_id).await? {
        return Err(ApiError::not_found(format!(
            "message `{message_id}` is not queued in session `{id}` (sent already, or never queued)"
        )));
    }
    Ok(Json(
        serde_json::json!({"messageId": message_id, "cancelled": true}),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadBody {
    /// The chat (any `to` form).
    #[schema(example = "15551234567")]
    chat: String,
    /// Only these received messages (at most 1000); without it, every one of the chat not
    /// read yet.
    message_ids: Option<Vec<String>>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Marked {
    chat_id: String,
    /// The messages whose read receipts went (those already read, or not in the chat, are
    /// left out).
    read: Vec<String>,
}

#[utoipa::path(post, path = "/api/messages/{sessionId}/read", tag = "messages", operation_id = "markRead", summary = "Mark received messages read",
    params(("sessionId" = String, Path, description = "the session id")),
    request_body = ReadBody,
    responses((status = 200, description = "Read receipts went to the senders; the messages are `read` in history", body = Marked),
        (status = 400, description = "`invalid_field`, `invalid_body`, `invalid_json`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn mark_read(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    ApiJson(body): ApiJson<ReadBody>,
) -> Result<Json<Marked>> {
    let chat = ChatAddress::parse(&body.chat).map_err(|e| ApiError::invalid_field("chat", e))?;
    if let Some(ids) = &body.message_ids {
        let max = crate::session::MAX_READ;
        if ids.is_empty() || ids.len() > max {
            return Err(ApiError::invalid_field(
                "messageIds",
                format!("must name 1 to {max} messages (leave it out for all unread)"),
            ));
        }
        if ids.iter().any(|i| i.is_empty() || i.len() > 128) {
            return Err(ApiError::invalid_field(
                "messageIds",
                "holds something that is not a message id",
            ));
        }
    }
    let read = state
        .sessions
        .mark_read(&id, &chat, body.message_ids.as_deref())
        .await?;
    Ok(Json(Marked {
        chat_id: chat.as_str().to_owned(),
        read,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardBody {
    /// Where to (any `to` form; also `number`).
    #[schema(example = "15551234567")]
    #[serde(alias = "number")]
    to: String,
}

#[utoipa::path(post, path = "/api/messages/{sessionId}/{messageId}/forward", tag = "messages", operation_id = "forwardMessage", summary = "Forward a message",
    params(("sessionId" = String, Path, description = "the session id"), ("messageId" = String, Path, description = "a text, location or contact message of the history"),
        ("Idempotency-Key" = Option<String>, Header, description = "as for `/api/send-message`")),
    request_body = ForwardBody,
    responses((status = 200, description = "Sent: the new message, `forwarded: true` (the recipient sees \"Forwarded\")", body = crate::model::Message),
        (status = 400, description = "`invalid_phone`, `invalid_body`, `invalid_json`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `message_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`not_forwardable` (media, a poll, a deleted message...), `session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`send_failed`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn forward(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, message_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<ForwardBody>,
) -> Result<Json<crate::model::Message>> {
    let to = ChatAddress::parse(&body.to).map_err(ApiError::invalid_phone)?;
    Ok(Json(state.sessions.forward(&id, &message_id, &to).await?))
}

/// Star or unstar.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StarBody {
    starred: bool,
}

#[utoipa::path(post, path = "/api/messages/{sessionId}/{messageId}/star", tag = "messages", operation_id = "starMessage", summary = "Star or unstar a message",
    params(("sessionId" = String, Path, description = "the session id"), ("messageId" = String, Path, description = "a message of the history")),
    request_body = StarBody,
    responses((status = 200, description = "Done: the message, `starred` as asked; the account's phone and devices show it (`message-starred`)", body = crate::model::Message),
        (status = 400, description = "`invalid_body`, `invalid_json`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `message_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn star(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, message_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<StarBody>,
) -> Result<Json<crate::model::Message>> {
    Ok(Json(
        state.sessions.star(&id, &message_id, body.starred).await?,
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Receipts {
    message_id: String,
    /// Each participant's latest receipt, in the order they came.
    receipts: Vec<crate::model::ReceiptMark>,
}

#[utoipa::path(get, path = "/api/messages/{sessionId}/{messageId}/receipts", tag = "messages", operation_id = "messageReceipts", summary = "Who received and read a group message of ours",
    params(("sessionId" = String, Path, description = "the session id"), ("messageId" = String, Path, description = "a message of the history")),
    responses((status = 200, description = "One entry per participant that sent a receipt (`delivered`, then `read`); empty for a 1:1 message, whose `status` says it all", body = Receipts),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `message_not_found`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn receipts(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Read>,
    Path((_, message_id)): Path<(String, String)>,
) -> Result<Json<Receipts>> {
    let receipts = state.sessions.receipts(&id, &message_id).await?;
    Ok(Json(Receipts {
        message_id,
        receipts,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditBody {
    /// The new text, at most 65536 bytes.
    #[schema(example = "see you at two")]
    text: String,
}

#[utoipa::path(patch, path = "/api/messages/{sessionId}/{messageId}", tag = "messages", operation_id = "editMessage", summary = "Edit a message of ours",
    params(("sessionId" = String, Path, description = "the session id"), ("messageId" = String, Path, description = "a text message we sent, less than 15 minutes ago")),
    request_body = EditBody,
    responses((status = 200, description = "Sent: the edit message (`type: \"edited\"`, `targetId`); the message itself now has the new text and `editedAt`", body = crate::model::Message),
        (status = 400, description = "`invalid_field`, `invalid_body`, `invalid_json`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `message_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`not_editable` (someone else's, not a text, deleted, or not sent), `edit_window_passed`, `session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`send_failed`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn edit(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, message_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<EditBody>,
) -> Result<Json<crate::model::Message>> {
    if body.text.is_empty() {
        return Err(ApiError::invalid_field("text", "must not be empty"));
    }
    if body.text.len() > 65_536 {
        return Err(ApiError::invalid_field(
            "text",
            "must be at most 65536 bytes",
        ));
    }
    Ok(Json(
        state.sessions.edit(&id, &message_id, &body.text).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeQuery {
    #[serde(rename = "for")]
    scope: Option<String>,
    #[serde(rename = "apiKey")]
    _api_key: Option<String>,
}

#[utoipa::path(delete, path = "/api/messages/{sessionId}/{messageId}", tag = "messages", operation_id = "revokeMessage", summary = "Delete a message for everyone, or for this account",
    params(("sessionId" = String, Path, description = "the session id"), ("messageId" = String, Path, description = "for everyone: a message we sent, less than 60 hours ago; for me: any message of the history"),
        ("for" = Option<String>, Query, description = "`everyone` (the default) or `me`: for this account only, on all its devices")),
    responses((status = 200, description = "For everyone, sent: the revoke message (`type: \"revoked\"`, `targetId`); the message itself is now `revoked: true`, without its content. For me: the message as it was, now gone from the history (`message-deleted`)", body = crate::model::Message),
        (status = 400, description = "`invalid_field` (`for`), `invalid_query`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `message_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`not_revocable` (someone else's, deleted already, or not sent), `revoke_window_passed`, `session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`send_failed`, `whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn revoke(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, message_id)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<RevokeQuery>,
) -> Result<Json<crate::model::Message>> {
    match q.scope.as_deref() {
        None | Some("everyone") => {}
        Some("me") => return Ok(Json(state.sessions.delete_for_me(&id, &message_id).await?)),
        Some(other) => {
            return Err(ApiError::invalid_field(
                "for",
                format!("`{other}` is neither `everyone` nor `me`"),
            ));
        }
    }
    Ok(Json(state.sessions.revoke(&id, &message_id).await?))
}

#[utoipa::path(post, path = "/api/messages/{sessionId}/{messageId}/resend", tag = "messages", operation_id = "resendMessage", summary = "Send a failed message again",
    params(("sessionId" = String, Path, description = "the session id"), ("messageId" = String, Path, description = "a failed message's id")),
    responses((status = 202, description = "Queued again with its id (a recipient that did get it sees it once): status `queued`", body = crate::model::Message),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `message_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`wrong_state`: the message is not failed, or is not a text", body = crate::api::openapi::schemas::ErrorBody)))]
async fn resend(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, message_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<crate::model::Message>)> {
    let msg = state.sessions.resend(&id, &message_id).await?;
    Ok((StatusCode::ACCEPTED, Json(msg)))
}
