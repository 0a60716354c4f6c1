//! `POST /webhook/set/:instance` and `GET /webhook/find/:instance`: the instance's webhook,
//! in the Evolution format, with Evolution's fields.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Evo, EvoResult, bool_field, instance, text_field};
use crate::AppState;
use crate::access::Scope;
use crate::api::Caller;
use crate::api::extract::ApiJson;
use crate::api::webhooks::{Setting, name_list, parse_headers, put};
use crate::evolution::{Subscriptions, iso8601, payload::instance_id};
use crate::store::webhooks::{self, EventFilter, EvolutionHook, Format, Webhook};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhook/set/{instance}", post(set))
        .route("/webhook/find/{instance}", get(find))
}

/// Reads Evolution's webhook object, nested (`{"enabled","url","events","byEvents",
/// "base64","headers"}`, as its code takes it) or flat with the `webhook*` names its
/// documentation shows. `enabled` overrides what the body says.
pub(super) fn setting(w: &Value, enabled: Option<bool>) -> EvoResult<Setting> {
    if !w.is_object() {
        return Err(Evo::bad_request(&["webhook is not of a type(s) object"]));
    }
    let either = |a: &str, b: &str| -> EvoResult<Option<bool>> {
        Ok(bool_field(w, a)?.or(bool_field(w, b)?))
    };
    let url = text_field(w, "url")?
        .or(text_field(w, "webhookUrl")?)
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Evo::bad_request(&["webhook requires property \"url\""]))?;
    let enabled = match enabled {
        Some(e) => e,
        None => bool_field(w, "enabled")?
            .ok_or_else(|| Evo::bad_request(&["webhook requires property \"enabled\""]))?,
    };
    let names = match w.get("events").or_else(|| w.get("webhookEvents")) {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => name_list(v.clone(), "events")?,
    };
    // An empty list is every event, as in Evolution.
    let subs = Subscriptions::parse(names.iter().map(String::as_str))
        .map_err(|e| Evo::bad_request(&[&e.to_string()]))?;
    let headers = match w.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(h) => parse_headers(Some(h.clone()))?,
    };
    Ok(Setting {
        url,
        events: EventFilter::Only(subs.kinds()),
        format: Format::Evolution(EvolutionHook {
            events: subs,
            by_events: either("byEvents", "webhookByEvents")?.unwrap_or(false),
            base64: either("base64", "webhookBase64")?.unwrap_or(false),
        }),
        enabled,
        headers,
        // A new webhook gets a signing secret; a changed one keeps its own.
        secret: None,
    })
}

/// The webhook as Evolution's `Webhook` row. Header values are never shown again.
fn row(w: &Webhook) -> Value {
    let events = match &w.format {
        Format::Evolution(h) if w.enabled => json!(h.events.names()),
        // Evolution keeps no events for a webhook that is off.
        Format::Evolution(_) => json!([]),
        Format::Wamux => json!(w.events.names()),
    };
    let (by_events, base64) = match &w.format {
        Format::Evolution(h) => (h.by_events, h.base64),
        Format::Wamux => (false, false),
    };
    let headers: serde_json::Map<String, Value> = w
        .headers
        .iter()
        .map(|(k, _)| (k.clone(), Value::from("***")))
        .collect();
    let iid = instance_id(&w.session_id);
    json!({
        "id": format!("wh_{}", iid.replace('-', "")),
        "url": w.url,
        "headers": if headers.is_empty() { Value::Null } else { Value::Object(headers) },
        "enabled": w.enabled && w.disabled_reason.is_none(),
        "events": events,
        "webhookByEvents": by_events,
        "webhookBase64": base64,
        "createdAt": iso8601(w.created_at * 1000),
        "updatedAt": iso8601(w.updated_at * 1000),
        "instanceId": iid,
    })
}

async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let id = instance(&state, &caller, &name, Scope::Webhooks)?;
    // Evolution's code reads `{"webhook": {...}}`; its documentation shows the fields flat.
    let w = match body.get("webhook") {
        Some(w) if !w.is_null() => w,
        _ if body.get("url").is_some() || body.get("webhookUrl").is_some() => &body,
        _ => {
            return Err(Evo::bad_request(&[
                "instance requires property \"webhook\"",
            ]));
        }
    };
    let (w, _, _) = put(&state, &id, setting(w, None)?).await?;
    Ok((StatusCode::CREATED, Json(row(&w))))
}

async fn find(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Webhooks)?;
    let w = webhooks::get_webhook(&state.store, id.as_str()).await?;
    // No webhook: the literal `null`, as Evolution answers.
    Ok(Json(w.as_ref().map_or(Value::Null, row)))
}
