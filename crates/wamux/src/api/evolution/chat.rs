//! `/chat/whatsappNumbers/:instance` (which numbers have WhatsApp) and
//! `/chat/markMessageAsRead/:instance` (read receipts), `/chat/archiveChat` and
//! `/chat/markChatUnread` (app state), and the other `/chat` routes.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Evo, EvoResult, instance, key_id, object};
use crate::AppState;
use crate::access::Scope;
use crate::api::Caller;
use crate::api::extract::ApiJson;
use crate::model::ChatAddress;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chat/whatsappNumbers/{instance}", post(whatsapp_numbers))
        .route("/chat/markMessageAsRead/{instance}", post(mark_read))
        .route("/chat/sendPresence/{instance}", post(send_presence))
        .route(
            "/chat/deleteMessageForEveryone/{instance}",
            axum::routing::delete(delete_for_everyone),
        )
        .route("/chat/updateMessage/{instance}", post(update_message))
        .route(
            "/chat/fetchProfilePictureUrl/{instance}",
            post(profile_picture),
        )
        .route("/chat/findMessages/{instance}", post(find_messages))
        .route("/chat/findChats/{instance}", post(find_chats))
        .route("/chat/archiveChat/{instance}", post(archive_chat))
        .route("/chat/markChatUnread/{instance}", post(mark_chat_unread))
}

/// The chat `/chat/archiveChat` and `/chat/markChatUnread` act on, as Evolution reads it:
/// `lastMessage.key.remoteJid` when a last message is given, else `chat`. Returned as
/// given (Evolution echoes it in `chatId`) and parsed.
fn chat_of_action(body: &Value) -> EvoResult<(String, ChatAddress)> {
    object(body)?;
    let named = match body.get("lastMessage") {
        Some(Value::Object(_)) => body
            .pointer("/lastMessage/key/remoteJid")
            .and_then(Value::as_str)
            .filter(|j| !j.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                Evo::bad_request(&["lastMessage.key requires property \"remoteJid\""])
            })?,
        Some(Value::Null) | None => super::text_field(body, "chat")?
            .ok_or_else(|| Evo::bad_request(&["instance requires property \"lastMessage\""]))?,
        Some(_) => {
            return Err(Evo::bad_request(&[
                "lastMessage is not of a type(s) object",
            ]));
        }
    };
    let chat =
        ChatAddress::parse(&named).map_err(|e| Evo::bad_request(&[&format!("chat: {e}")]))?;
    Ok((named, chat))
}

/// Makes the change `change` reads from the body to the chat the body names (see
/// [`chat_of_action`]); the chat as named.
async fn act_on_chat(
    state: &AppState,
    caller: &Caller,
    name: &str,
    body: &Value,
    change: impl FnOnce(&Value) -> EvoResult<crate::model::ChatChange>,
) -> EvoResult<String> {
    let id = instance(state, caller, name, Scope::Send)?;
    let (named, chat) = chat_of_action(body)?;
    let change = change(body)?;
    state.sessions.chat_action(&id, &chat, &[change]).await?;
    Ok(named)
}

/// Archives or unarchives a chat. Evolution answers `archived: true` either way.
async fn archive_chat(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let change = |body: &Value| {
        let archive = super::bool_field(body, "archive")?
            .ok_or_else(|| Evo::bad_request(&["instance requires property \"archive\""]))?;
        Ok(crate::model::ChatChange::Archived(archive))
    };
    let named = act_on_chat(&state, &caller, &name, &body, change).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"chatId": named, "archived": true})),
    ))
}

/// Marks a chat unread.
async fn mark_chat_unread(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let change = |_: &Value| Ok(crate::model::ChatChange::MarkedUnread(true));
    let named = act_on_chat(&state, &caller, &name, &body, change).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"chatId": named, "markedChatUnread": true})),
    ))
}

/// The chats, the most recent first, each with its last message (Evolution's `fetchChats`).
async fn find_chats(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Read)?;
    // Evolution's clients often send no body at all here.
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Evo::bad_request(&[&format!("the body is not JSON: {e}")]))?
    };
    let only = chat_at(&body, "/where/remoteJid")?;
    let take = body
        .get("take")
        .and_then(Value::as_i64)
        .filter(|n| *n >= 1)
        .unwrap_or(MAX_PAGE)
        .min(MAX_PAGE);
    let skip = body.get("skip").and_then(Value::as_i64).unwrap_or(0).max(0);
    let inst = crate::evolution::payload::Instance::of(id.as_str());
    let chats = crate::store::messages::chats(&state.store, id.as_str(), MAX_PAGE).await?;
    let out: Vec<Value> = chats
        .iter()
        .filter(|c| only.as_ref().is_none_or(|o| *o == c.chat_id))
        .skip(usize::try_from(skip).unwrap_or(0))
        .take(usize::try_from(take).unwrap_or(0))
        .map(|c| {
            let m = &c.last_message;
            let r = crate::evolution::payload::record(m, &inst);
            let remote = r.key.remote_jid.clone();
            let mut last = serde_json::to_value(&r).unwrap_or_default();
            last["id"] = m.id.clone().into();
            if m.from_me {
                last["pushName"] = "Você".into();
            }
            let push_name = if m.from_me { None } else { m.push_name.clone() };
            json!({
                "id": Value::Null,
                "remoteJid": remote,
                "pushName": push_name,
                "profilePicUrl": Value::Null,
                "updatedAt": crate::evolution::iso8601(m.timestamp * 1000),
                "windowStart": Value::Null,
                "windowExpires": Value::Null,
                "windowActive": false,
                "lastMessage": last,
                "unreadCount": c.unread,
                "isSaved": false,
            })
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

/// The chat a filter names at `pointer` (`/where/remoteJid`), as our chat id.
fn chat_at(body: &Value, pointer: &str) -> EvoResult<Option<String>> {
    let Some(j) = body.pointer(pointer).and_then(Value::as_str) else {
        return Ok(None);
    };
    let field = pointer.trim_start_matches('/').replace('/', ".");
    ChatAddress::parse(j)
        .map(|a| Some(a.as_str().to_owned()))
        .map_err(|e| Evo::bad_request(&[&format!("{field}: {e}")]))
}

/// The most records one page of `findMessages` holds.
const MAX_PAGE: i64 = 500;

/// A unix time from Evolution's filter: a date string (`new Date(...)` reads it) or seconds.
fn time_of(v: &Value, field: &str) -> EvoResult<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| Evo::bad_request(&[&format!("{field} is not a time")])),
        Value::String(s) => {
            parse_date(s).ok_or_else(|| Evo::bad_request(&[&format!("{field} is not a date: {s}")]))
        }
        _ => Err(Evo::bad_request(&[&format!("{field} is not a time")])),
    }
}

/// `2026-03-09`, `2026-03-09T00:35:45Z` or with milliseconds: unix seconds (UTC).
fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00Z"));
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let time = time.trim_end_matches('Z');
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (
        t.next()??,
        t.next().flatten().unwrap_or(0),
        t.next().flatten().unwrap_or(0),
    );
    // Days from the civil date (the inverse of the one the logs use).
    let (y, mo) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

async fn find_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<Json<Value>> {
    use crate::store::messages::{Direction, Filter};
    let id = instance(&state, &caller, &name, Scope::Read)?;
    object(&body)?;
    let key = body.pointer("/where/key").cloned().unwrap_or(Value::Null);
    let chat_id = chat_at(&body, "/where/key/remoteJid")?;
    let direction = key
        .get("fromMe")
        .and_then(Value::as_bool)
        .map(|me| if me { Direction::Out } else { Direction::In });
    let range = body.pointer("/where/messageTimestamp");
    let since = range
        .and_then(|r| r.get("gte"))
        .map(|v| time_of(v, "messageTimestamp.gte"))
        .transpose()?;
    let until = range
        .and_then(|r| r.get("lte"))
        .map(|v| time_of(v, "messageTimestamp.lte").map(|t| t + 1))
        .transpose()?;
    let number = |field: &str, default: i64| -> EvoResult<i64> {
        match body.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .filter(|n| *n >= 1)
                .ok_or_else(|| Evo::bad_request(&[&format!("{field} must be a number from 1")])),
        }
    };
    let offset = number("offset", 50)?.min(MAX_PAGE);
    let page = number("page", 1)?.min(100_000);
    let inst = crate::evolution::payload::Instance::of(id.as_str());
    let (total, messages) = match key.get("id").and_then(Value::as_str) {
        Some(msg_id) => {
            let m = crate::store::messages::find(&state.store, id.as_str(), msg_id).await?;
            let m: Vec<_> = m
                .into_iter()
                .filter(|m| chat_id.as_ref().is_none_or(|c| *c == m.chat_id))
                .collect();
            (m.len() as i64, m)
        }
        None => {
            let filter = Filter {
                chat_id,
                direction,
                since,
                until,
            };
            crate::store::messages::numbered_page(
                &state.store,
                id.as_str(),
                &filter,
                (page - 1) * offset,
                offset,
            )
            .await?
        }
    };
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let r = crate::evolution::payload::record(m, &inst);
            let status = r.status;
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["id"] = m.id.clone().into();
            if v.get("contextInfo").is_none() {
                v["contextInfo"] = Value::Null;
            }
            v["MessageUpdate"] = match status {
                Some(s) if m.from_me => json!([{"status": s}]),
                _ => json!([]),
            };
            if let Some(o) = v.as_object_mut() {
                o.remove("status");
            }
            v
        })
        .collect();
    Ok(Json(json!({"messages": {
        "total": total,
        "pages": (total + offset - 1) / offset,
        "currentPage": page,
        "records": records,
    }})))
}

/// The answer to an edit or a delete: the protocol message that carried it, as Baileys
/// returns it from `sendMessage`.
fn protocol_answer(
    id: &crate::model::SessionId,
    action: &crate::model::Message,
    kind: &str,
) -> Value {
    let key = crate::evolution::payload::key_of(action);
    let mut protocol = json!({
        "key": {"remoteJid": key.remote_jid, "fromMe": true, "id": action.target_id},
        "type": kind,
    });
    if kind == "MESSAGE_EDIT" {
        protocol["editedMessage"] = json!({"conversation": action.text});
        protocol["timestampMs"] = (action.timestamp * 1000).to_string().into();
    }
    json!({
        "key": key,
        "message": {"protocolMessage": protocol},
        "messageTimestamp": action.timestamp,
        "status": crate::evolution::payload::status_name(action.status),
        "instanceId": crate::evolution::payload::instance_id(id.as_str()),
    })
}

async fn delete_for_everyone(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let id = instance(&state, &caller, &name, Scope::Send)?;
    object(&body)?;
    let message_id = key_id(&body, "/id")?;
    let action = state.sessions.revoke(&id, &message_id).await?;
    Ok((
        StatusCode::CREATED,
        Json(protocol_answer(&id, &action, "REVOKE")),
    ))
}

async fn update_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Send)?;
    object(&body)?;
    let message_id = key_id(&body, "/key/id")?;
    let text = super::required_text(&body, "text")?;
    if text.trim().is_empty() || text.len() > 65_536 {
        return Err(Evo::bad_request(&["text must be 1 to 65536 bytes"]));
    }
    let action = state.sessions.edit(&id, &message_id, &text).await?;
    Ok(Json(protocol_answer(&id, &action, "MESSAGE_EDIT")))
}

async fn send_presence(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let presence = super::text_field(&body, "presence")?.unwrap_or_else(|| "composing".into());
    let shown = crate::model::PresenceState::parse(&presence).ok_or_else(|| {
        Evo::bad_request(&[
            "presence is not one of enum values: unavailable,available,composing,recording,paused",
        ])
    })?;
    let send = super::message::Send::read(&state, &caller, &name, &body).await?;
    send.show(&state, shown).await?;
    Ok((StatusCode::CREATED, Json(json!({"presence": presence}))))
}

async fn profile_picture(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Read)?;
    let number = super::required_text(&body, "number")?;
    let who = ChatAddress::parse(&number).map_err(|e| Evo::bad_request(&[&e.to_string()]))?;
    let picture = state.sessions.profile_picture(&id, &who).await?;
    Ok(Json(json!({
        "wuid": who.as_str(),
        "profilePictureUrl": picture.map(|p| p.url),
    })))
}

/// The most numbers one check asks about.
const MAX_NUMBERS: usize = 500;

async fn whatsapp_numbers(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Read)?;
    object(&body)?;
    let numbers: Vec<String> = match body.get("numbers") {
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_NUMBERS => a
            .iter()
            .map(|n| match n {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(Evo::bad_request(&["numbers[] is not of a type(s) string"])),
            })
            .collect::<EvoResult<_>>()?,
        None | Some(Value::Null) => {
            return Err(Evo::bad_request(&[
                "instance requires property \"numbers\"",
            ]));
        }
        Some(_) => {
            return Err(Evo::bad_request(&[&format!(
                "numbers must be a list of 1 to {MAX_NUMBERS} numbers"
            )]));
        }
    };
    // Evolution answers groups first, then people, each in the order asked.
    let mut groups = Vec::new();
    let mut people: Vec<(String, Option<ChatAddress>)> = Vec::new();
    for n in numbers {
        match ChatAddress::parse(&n) {
            Ok(a) if a.as_str().ends_with("@g.us") => {
                let found = state.sessions.group(&id, &a).await.ok();
                let mut item = json!({"jid": a.as_str(), "exists": found.is_some(), "number": n});
                if let Some(g) = found {
                    item["name"] = g.subject.into();
                }
                groups.push(item);
            }
            Ok(a) if a.as_str().ends_with("@lid") => {
                groups.push(json!({"jid": a.as_str(), "exists": true, "number": n, "lid": "lid"}));
            }
            Ok(a) => people.push((n, Some(a))),
            Err(_) => people.push((n, None)),
        }
    }
    let digits: Vec<String> = people
        .iter()
        .filter_map(|(_, a)| a.as_ref().map(|a| a.user().to_owned()))
        .collect();
    let checks = if digits.is_empty() {
        Vec::new()
    } else {
        state.sessions.check_numbers(&id, &digits).await?
    };
    let by_phone: BTreeMap<&str, &crate::whatsapp::NumberCheck> =
        checks.iter().map(|c| (c.phone.as_str(), c)).collect();
    let mut out = groups;
    for (n, a) in &people {
        let Some(a) = a else {
            // Not a number at all: Evolution's answer for it is "no account".
            out.push(json!({"jid": format!("{}@s.whatsapp.net", n.chars().filter(char::is_ascii_digit).collect::<String>()), "exists": false, "number": n}));
            continue;
        };
        let check = by_phone.get(a.user());
        let exists = check.is_some_and(|c| c.exists);
        let jid = check
            .and_then(|c| c.jid.clone())
            .unwrap_or_else(|| a.as_str().to_owned());
        let mut item = json!({"jid": jid, "exists": exists, "number": n});
        if let Some(lid) = check.and_then(|c| c.lid.clone()) {
            item["lid"] = lid.into();
        }
        out.push(item);
    }
    Ok(Json(Value::Array(out)))
}

async fn mark_read(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let id = instance(&state, &caller, &name, Scope::Send)?;
    object(&body)?;
    let list = match body.get("readMessages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => {
            return Err(Evo::bad_request(&[
                "instance requires property \"readMessages\"",
            ]));
        }
    };
    let mut by_chat: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, m) in list.iter().enumerate() {
        let field = |f: &str| {
            m.get(f)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| {
                    Evo::bad_request(&[&format!("readMessages[{i}] requires property \"{f}\"")])
                })
        };
        let (chat, msg_id) = (field("remoteJid")?, field("id")?);
        let chat = ChatAddress::parse(&chat)
            .map_err(|e| Evo::bad_request(&[&format!("readMessages[{i}].remoteJid: {e}")]))?;
        by_chat
            .entry(chat.as_str().to_owned())
            .or_default()
            .push(msg_id);
    }
    for (chat, ids) in by_chat {
        let chat = ChatAddress::parse(&chat).map_err(|e| Evo::bad_request(&[&e.to_string()]))?;
        state.sessions.mark_read(&id, &chat, Some(&ids)).await?;
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({"message": "Read messages", "read": "success"})),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_read_as_javascript_reads_them() {
        assert_eq!(super::parse_date("1970-01-01"), Some(0));
        assert_eq!(
            super::parse_date("2026-03-09T00:35:45.123Z"),
            Some(1_773_016_545)
        );
        assert_eq!(super::parse_date("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(super::parse_date("2026-13-01"), None);
        assert_eq!(super::parse_date("yesterday"), None);
    }
}
