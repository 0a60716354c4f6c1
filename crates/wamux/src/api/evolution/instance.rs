//! `/instance/...`: create (with its webhook and settings), connect (QR or pairing code),
//! connection state, list, logout, restart, delete.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Evo, EvoResult, bool_field, connection_state, instance, object, state_of, text_field};
use crate::AppState;
use crate::access::{self, Scope, SessionPattern};
use crate::api::Caller;
use crate::api::extract::ApiJson;
use crate::evolution::iso8601;
use crate::evolution::payload::{connection_state as state_name, instance_id};
use crate::model::{ChatAddress, SessionId, SessionStatus};
use crate::store::{self, access::KeyRecord};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/instance/create", post(create))
        .route("/instance/connect/{instance}", get(connect))
        .route("/instance/connectionState/{instance}", get(connection))
        .route("/instance/fetchInstances", get(fetch_instances))
        .route("/instance/logout/{instance}", delete(logout))
        .route("/instance/delete/{instance}", delete(remove))
        // Evolution 2.3 restarts with POST; its documentation says PUT.
        .route("/instance/restart/{instance}", post(restart).put(restart))
}

/// How long `qrcode: true` and `/instance/connect` wait for the first QR code (Evolution
/// waits a fixed 5 s and 2 s).
const QR_WAIT: Duration = Duration::from_secs(5);

/// The name of the scoped key that is an instance's token.
fn token_name(id: &SessionId) -> String {
    format!("evolution:{id}")
}

/// Evolution's QR object `{"pairingCode","code","base64","count"}` of the current code, or
/// `{"count":0}` while there is none yet.
fn qr_object(state: &AppState, id: &SessionId, pairing_code: Option<String>) -> Value {
    match state.sessions.qr(id) {
        Ok(qr) => json!({
            "pairingCode": pairing_code,
            "code": qr.code,
            "base64": crate::qr::data_url(&qr.code).ok(),
            "count": 1,
        }),
        Err(_) if pairing_code.is_some() => json!({"pairingCode": pairing_code, "count": 1}),
        Err(_) => json!({"count": 0}),
    }
}

/// Waits (a few seconds at most) until the session shows a QR code or is linked.
async fn until_qr_or_open(state: &AppState, id: &SessionId) {
    let waited = state
        .sessions
        .wait_for(id, QR_WAIT, |s| {
            s.qr.is_some()
                || matches!(
                    s.status,
                    SessionStatus::Connected | SessionStatus::LoggedOut | SessionStatus::Failed
                )
        })
        .await;
    if let Err(e) = waited {
        tracing::debug!(session = %id, "no QR code within the wait: {e}");
    }
}

/// A pairing code for `number`, as `?number=` or `number` asks.
async fn pairing_code(state: &AppState, id: &SessionId, number: &str) -> EvoResult<String> {
    let addr = ChatAddress::parse(number)
        .ok()
        .filter(|a| a.as_str().ends_with("@s.whatsapp.net"))
        .ok_or_else(|| Evo::bad_request(&["number must be a phone number"]))?;
    Ok(state.sessions.pairing_code(id, addr.user()).await?)
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    object(&body)?;
    let name = super::required_text(&body, "instanceName")?;
    let id = SessionId::parse(&name).map_err(|e| Evo::bad_request(&[&e.to_string()]))?;
    caller.may(&id, Scope::Manage)?;
    match text_field(&body, "integration")?.as_deref() {
        None | Some("WHATSAPP-BAILEYS") => {}
        Some(other @ ("WHATSAPP-BUSINESS" | "EVOLUTION")) => {
            return Err(Evo::bad_request(&[&format!(
                "integration {other} is not available in wamux; use WHATSAPP-BAILEYS"
            )]));
        }
        Some(_) => return Err(Evo::bad_request(&["Invalid integration"])),
    }
    if state.sessions.info(&id).is_ok() {
        return Err(Evo::new(
            StatusCode::FORBIDDEN,
            json!([format!("This name \"{name}\" is already in use.")]),
        ));
    }
    // Everything is checked before anything is created, so a refused create leaves nothing.
    let token = match text_field(&body, "token")? {
        Some(t) if t.len() < access::MIN_TOKEN_LEN || t.len() > 256 => {
            return Err(Evo::bad_request(&[&format!(
                "token must be {} to 256 characters",
                access::MIN_TOKEN_LEN
            )]));
        }
        Some(t) => {
            if store::access::key_by_digest(&state.store, &access::digest(&t))
                .await?
                .is_some()
            {
                return Err(Evo::bad_request(&["token is already in use"]));
            }
            t
        }
        None => access::new_secret(),
    };
    let number = text_field(&body, "number")?.filter(|n| !n.trim().is_empty());
    let want_qr = bool_field(&body, "qrcode")?.unwrap_or(false);
    let behaviour = super::settings::Behaviour::read(&body)?;
    let mut flags = serde_json::Map::new();
    for f in [
        "alwaysOnline",
        "readMessages",
        "readStatus",
        "syncFullHistory",
    ] {
        flags.insert(f.into(), bool_field(&body, f)?.unwrap_or(false).into());
    }
    let hook = match body.get("webhook").filter(|w| !w.is_null()) {
        // Evolution turns on a webhook given at creation, whatever its `enabled` says.
        Some(w) => Some(super::webhook::setting(w, Some(true))?),
        None => None,
    };

    let (info, _) = state.sessions.start(id.clone()).await?;
    let record = KeyRecord {
        id: access::new_id(),
        name: token_name(&id),
        sessions: vec![SessionPattern::Exact(id.to_string())],
        scopes: Scope::ALL.into_iter().collect(),
        created_at: store::now(),
        expires_at: None,
        last_used_at: None,
    };
    store::access::create_key(&state.store, &record, &access::digest(&token)).await?;
    behaviour.apply(&state, &id).await?;
    let mut webhook = json!({});
    if let Some(setting) = hook {
        let (w, _, _) = crate::api::webhooks::put(&state, &id, setting).await?;
        if let crate::store::webhooks::Format::Evolution(h) = &w.format {
            webhook = json!({
                "webhookUrl": w.url,
                "webhookHeaders": w.headers.iter().map(|(k, _)| (k.clone(), Value::from("***"))).collect::<serde_json::Map<_, _>>(),
                "webhookByEvents": h.by_events,
                "webhookBase64": h.base64,
            });
        }
    }
    tracing::info!(session = %id, "Evolution instance created");
    let mut status = state_name(info.status).0;
    let mut out = json!({
        "instance": {
            "instanceName": id.as_str(),
            "instanceId": instance_id(id.as_str()),
            "integration": "WHATSAPP-BAILEYS",
            "webhookWaBusiness": Value::Null,
            "accessTokenWaBusiness": "",
            "status": status,
        },
        "hash": token,
        "webhook": webhook,
        "websocket": {},
        "rabbitmq": {},
        "nats": {},
        "sqs": {},
        "settings": {
            "rejectCall": behaviour.reject_call,
            "msgCall": behaviour.msg_call.clone().unwrap_or_default(),
            "groupsIgnore": behaviour.groups_ignore,
            "alwaysOnline": flags["alwaysOnline"],
            "readMessages": flags["readMessages"],
            "readStatus": flags["readStatus"],
            "syncFullHistory": flags["syncFullHistory"],
            "wavoipToken": "",
        },
    });
    if want_qr {
        until_qr_or_open(&state, &id).await;
        let code = match &number {
            Some(n) => Some(pairing_code(&state, &id, n).await?),
            None => None,
        };
        out["qrcode"] = qr_object(&state, &id, code);
        status = state_of(&state, &id)?;
        out["instance"]["status"] = status.into();
    }
    Ok((StatusCode::CREATED, Json(out)))
}

#[derive(Deserialize)]
struct ConnectQuery {
    number: Option<String>,
}

async fn connect(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ConnectQuery>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Manage)?;
    let info = state.sessions.info(&id)?;
    match info.status {
        SessionStatus::Connected => return Ok(Json(connection_state(&id, "open"))),
        SessionStatus::Qr | SessionStatus::Starting | SessionStatus::Connecting => {}
        // Linked once and dropped, or never linked and given up: connect again, as
        // Evolution makes a new socket.
        _ => {
            state.sessions.restart(&id).await?;
        }
    }
    until_qr_or_open(&state, &id).await;
    if state_of(&state, &id)? == "open" {
        return Ok(Json(connection_state(&id, "open")));
    }
    let code = match q.number.as_deref().filter(|n| !n.trim().is_empty()) {
        Some(n) => Some(pairing_code(&state, &id, n).await?),
        None => None,
    };
    Ok(Json(qr_object(&state, &id, code)))
}

async fn connection(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Read)?;
    Ok(Json(connection_state(&id, state_of(&state, &id)?)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FetchQuery {
    instance_name: Option<String>,
    instance_id: Option<String>,
}

async fn fetch_instances(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FetchQuery>,
) -> EvoResult<Json<Value>> {
    let mut sessions = state.sessions.list();
    sessions.retain(|s| caller.sees(s.session_id.as_str()));
    if let Some(name) = &q.instance_name {
        sessions.retain(|s| s.session_id.as_str() == name);
        if sessions.is_empty() {
            return Err(Evo::not_found(format!("Instance \"{name}\" not found")));
        }
    }
    if let Some(wanted) = &q.instance_id {
        sessions.retain(|s| instance_id(s.session_id.as_str()) == *wanted);
        if sessions.is_empty() {
            return Err(Evo::not_found(format!("Instance \"{wanted}\" not found")));
        }
    }
    let mut out = Vec::with_capacity(sessions.len());
    for s in sessions {
        let id = s.session_id.as_str();
        let row = store::sessions::get(&state.store, id).await?;
        let counts = store::messages::counts(&state.store, id).await?;
        let (created, updated) = row
            .as_ref()
            .map_or((0, 0), |r| (r.created_at, r.updated_at));
        let iid = instance_id(id);
        let closed = matches!(
            s.status,
            SessionStatus::LoggedOut | SessionStatus::Failed | SessionStatus::Disconnected
        );
        let mut setting = super::settings::current(&state, &s.session_id).await?;
        setting["id"] = format!("set_{}", &iid[..8]).into();
        setting["createdAt"] = iso8601(created * 1000).into();
        setting["updatedAt"] = iso8601(updated * 1000).into();
        setting["instanceId"] = iid.clone().into();
        out.push(json!({
            "id": iid,
            "name": id,
            "connectionStatus": state_name(s.status).0,
            "ownerJid": s.me.as_ref().and_then(|m| m.jid.clone()),
            "profileName": s.me.as_ref().and_then(|m| m.push_name.clone()),
            "profilePicUrl": Value::Null,
            "integration": "WHATSAPP-BAILEYS",
            "number": Value::Null,
            "businessId": Value::Null,
            // Tokens are kept only as digests: they cannot be shown again.
            "token": Value::Null,
            "clientName": "wamux",
            "disconnectionReasonCode": closed.then(|| state_name(s.status).1),
            "disconnectionObject": if closed { s.reason.clone().map(|r| json!({"reason": r}).to_string()) } else { None },
            "disconnectionAt": closed.then(|| iso8601(s.since * 1000)),
            "createdAt": iso8601(created * 1000),
            "updatedAt": iso8601(updated * 1000),
            "Chatwoot": Value::Null,
            "Proxy": Value::Null,
            "Rabbitmq": Value::Null,
            "Nats": Value::Null,
            "Sqs": Value::Null,
            "Websocket": Value::Null,
            "Setting": setting,
            "_count": {"Message": counts.messages, "Contact": counts.chats, "Chat": counts.chats},
        }));
    }
    Ok(Json(Value::Array(out)))
}

fn success(message: &str) -> Json<Value> {
    Json(json!({"status": "SUCCESS", "error": false, "response": {"message": message}}))
}

async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Manage)?;
    if state_of(&state, &id)? == "close" {
        return Err(Evo::bad_request(&[&format!(
            "The \"{name}\" instance is not connected"
        )]));
    }
    state.sessions.logout(&id).await?;
    Ok(success("Instance logged out"))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Manage)?;
    state.sessions.delete(&id).await?;
    let global = state.webhooks.global().is_some();
    if store::webhooks::delete_webhook(&state.store, id.as_str(), global).await? {
        state.webhooks.changed(id.as_str());
    }
    // The instance's token goes with it.
    let exact = SessionPattern::Exact(id.to_string());
    for key in store::access::list_keys(&state.store).await? {
        if key.name == token_name(&id) && key.sessions == [exact.clone()] {
            state.keys.revoke(&key.id).await?;
        }
    }
    tracing::info!(session = %id, "Evolution instance deleted");
    Ok(success("Instance deleted"))
}

async fn restart(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Manage)?;
    state.sessions.restart(&id).await?;
    Ok(Json(connection_state(&id, state_of(&state, &id)?)))
}
