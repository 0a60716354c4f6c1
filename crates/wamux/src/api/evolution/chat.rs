//! `/chat/whatsappNumbers/:instance` (which numbers have WhatsApp) and
//! `/chat/markMessageAsRead/:instance` (read receipts).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Evo, EvoResult, instance, object};
use crate::AppState;
use crate::access::Scope;
use crate::api::Caller;
use crate::api::extract::ApiJson;
use crate::model::ChatAddress;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chat/whatsappNumbers/{instance}", post(whatsapp_numbers))
        .route("/chat/markMessageAsRead/{instance}", post(mark_read))
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
