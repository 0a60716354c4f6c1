//! A session's webhook: `POST/GET/DELETE /api/:sessionId/webhook`, its deliveries
//! (`GET /api/:sessionId/webhook/deliveries`) and manual retries
//! (`POST /api/:sessionId/webhook/deliveries/:id/retry`).
//!
//! A webhook can be set before its session exists, so a client can receive the session's
//! first QR event. Changes apply at once: the session's worker is woken, never restarted.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::{ApiJson, ApiQuery, SessionPath, needs};
use super::{ApiError, Result};
use crate::AppState;
use crate::evolution::Subscriptions;
use crate::store::webhooks::{self, EvolutionHook, Format, NewWebhook, Webhook};
use crate::webhook::config::EventFilter;
use crate::webhook::{Secret, guard};

/// Custom headers a webhook may carry at most.
const MAX_HEADERS: usize = 32;
/// Headers the delivery itself sets; a custom one may not replace them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/{session_id}/webhook",
            get(get_webhook).post(set_webhook).delete(delete_webhook),
        )
        .route("/{session_id}/webhook/deliveries", get(list_deliveries))
        .route(
            "/{session_id}/webhook/deliveries/{delivery_id}/retry",
            post(retry_delivery),
        )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetBody {
    url: Option<serde_json::Value>,
    events: Option<serde_json::Value>,
    headers: Option<serde_json::Value>,
    secret: Option<serde_json::Value>,
    format: Option<serde_json::Value>,
    by_events: Option<serde_json::Value>,
    base64: Option<serde_json::Value>,
    enabled: Option<serde_json::Value>,
}

/// The webhook as shown: header values and the secret are never echoed back.
fn view(w: &Webhook) -> serde_json::Value {
    let headers: BTreeMap<&str, &str> =
        w.headers.iter().map(|(k, _)| (k.as_str(), "***")).collect();
    let events = match &w.format {
        Format::Wamux => w.events.names(),
        Format::Evolution(h) => h.events.names(),
    };
    let mut out = serde_json::json!({
        "sessionId": w.session_id,
        "url": w.url,
        "format": w.format.as_str(),
        "events": events,
        "headers": headers,
        "enabled": w.enabled,
        "status": if w.disabled_reason.is_some() { "disabled" } else { "active" },
        "disabledReason": w.disabled_reason,
        "createdAt": w.created_at,
        "updatedAt": w.updated_at,
    });
    if let Format::Evolution(h) = &w.format {
        out["byEvents"] = h.by_events.into();
        out["base64"] = h.base64.into();
    }
    out
}

/// A webhook to set, checked: what both dialects' routes store.
pub(crate) struct Setting {
    pub url: String,
    pub events: EventFilter,
    pub format: Format,
    pub enabled: bool,
    pub headers: Vec<(String, String)>,
    pub secret: Option<Secret>,
}

/// Checks the URL (no private targets unless allowed) and stores the webhook; the
/// session's worker follows at once. Returns it, the secret if one was generated, and
/// whether it existed before.
pub(crate) async fn put(
    state: &AppState,
    session: &crate::model::SessionId,
    s: Setting,
) -> Result<(Webhook, Option<Secret>, bool)> {
    let allow_private = state.webhooks.config().allow_private;
    guard::vet_url(&s.url, allow_private)
        .await
        .map_err(|e| ApiError::bad_request("invalid_url", format!("`url`: {e}")))?;
    let existed = webhooks::get_webhook(&state.store, session.as_str())
        .await?
        .is_some();
    let (webhook, generated) = webhooks::set_webhook(
        &state.store,
        session.as_str(),
        NewWebhook {
            url: &s.url,
            events: &s.events,
            format: &s.format,
            enabled: s.enabled,
            headers: &s.headers,
            secret: s.secret.as_ref(),
        },
    )
    .await?;
    state.webhooks.changed(session.as_str());
    tracing::info!(session = %session, format = webhook.format.as_str(), events = ?webhook.events.names(), "webhook set");
    Ok((webhook, generated, existed))
}

fn flag(value: Option<serde_json::Value>, name: &str, default: bool) -> Result<bool> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(serde_json::Value::Bool(b)) => Ok(b),
        Some(_) => Err(ApiError::invalid_field(name, "must be true or false")),
    }
}

/// The names of a list field: a JSON list of strings, or one comma-separated string.
pub(crate) fn name_list(value: serde_json::Value, field: &str) -> Result<Vec<String>> {
    match value {
        // The seed's clients sometimes send one name, or a comma-separated string.
        serde_json::Value::String(s) => Ok(s
            .split(',')
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect()),
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s),
                _ => Err(ApiError::invalid_field(
                    field,
                    "must be a list of event names",
                )),
            })
            .collect(),
        _ => Err(ApiError::invalid_field(
            field,
            "must be a list of event names",
        )),
    }
}

#[utoipa::path(post, path = "/api/{sessionId}/webhook", tag = "webhooks", operation_id = "setWebhook", summary = "Set the session's webhook",
    params(("sessionId" = String, Path, description = "the session id")), request_body = crate::api::openapi::schemas::SetWebhook,
    responses((status = 201, description = "Set (the session may not exist yet); `secret` is shown this once when generated", body = crate::api::openapi::schemas::WebhookView),
        (status = 200, description = "Replaced", body = crate::api::openapi::schemas::WebhookView),
        (status = 400, description = "`missing_field`, `invalid_field`, `invalid_url`, `invalid_events`, `invalid_secret`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn set_webhook(
    State(state): State<AppState>,
    SessionPath(session, _): SessionPath<needs::Webhooks>,
    ApiJson(body): ApiJson<SetBody>,
) -> Result<Response> {
    let url = match body.url {
        Some(serde_json::Value::String(u)) if !u.trim().is_empty() => u.trim().to_owned(),
        Some(serde_json::Value::String(_)) | None | Some(serde_json::Value::Null) => {
            return Err(ApiError::missing_field("url"));
        }
        Some(_) => return Err(ApiError::invalid_field("url", "must be a string")),
    };
    let evolution = match body.format {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::String(f)) if f == "wamux" => false,
        Some(serde_json::Value::String(f)) if f == "evolution" => true,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "format",
                "must be \"wamux\" or \"evolution\"",
            ));
        }
    };
    let (by_events, base64) = (
        flag(body.by_events, "byEvents", false)?,
        flag(body.base64, "base64", false)?,
    );
    if !evolution && (by_events || base64) {
        return Err(ApiError::invalid_field(
            "format",
            "`byEvents` and `base64` are options of the \"evolution\" format",
        ));
    }
    let names = body
        .events
        .filter(|v| !v.is_null())
        .map(|v| name_list(v, "events"))
        .transpose()?;
    let (events, format) = if evolution {
        let subs = Subscriptions::parse(names.iter().flatten().map(String::as_str))
            .map_err(|e| ApiError::bad_request("invalid_events", format!("`events`: {e}")))?;
        (
            EventFilter::Only(subs.kinds()),
            Format::Evolution(EvolutionHook {
                events: subs,
                by_events,
                base64,
            }),
        )
    } else {
        let events = match &names {
            None => EventFilter::All,
            Some(names) => EventFilter::parse(names.iter().map(String::as_str))
                .map_err(|e| ApiError::bad_request("invalid_events", format!("`events`: {e}")))?,
        };
        (events, Format::Wamux)
    };
    let headers = parse_headers(body.headers)?;
    let secret = match body.secret {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(
            Secret::parse(&s)
                .map_err(|e| ApiError::bad_request("invalid_secret", format!("`secret`: {e}")))?,
        ),
        Some(_) => return Err(ApiError::invalid_field("secret", "must be a string")),
    };
    let enabled = flag(body.enabled, "enabled", true)?;
    let (webhook, generated, existed) = put(
        &state,
        &session,
        Setting {
            url,
            events,
            format,
            enabled,
            headers,
            secret,
        },
    )
    .await?;
    let mut out = view(&webhook);
    if let Some(secret) = generated {
        // The only time it is shown; GET never returns it.
        out["secret"] = serde_json::Value::String(secret.expose());
    }
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(out)).into_response())
}

pub(crate) fn parse_headers(value: Option<serde_json::Value>) -> Result<Vec<(String, String)>> {
    let map = match value {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Object(map)) => map,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "headers",
                "must be an object of header names to string values",
            ));
        }
    };
    if map.len() > MAX_HEADERS {
        return Err(ApiError::invalid_field(
            "headers",
            format!("at most {MAX_HEADERS} headers"),
        ));
    }
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let serde_json::Value::String(value) = value else {
            return Err(ApiError::invalid_field(
                "headers",
                format!("the value of `{name}` must be a string"),
            ));
        };
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ApiError::invalid_field(
                "headers",
                format!("`{name}` is not a valid header name"),
            ));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(ApiError::invalid_field(
                "headers",
                format!("`{name}` is set by wamux itself and cannot be replaced"),
            ));
        }
        if reqwest::header::HeaderValue::from_str(&value).is_err() {
            // The value itself is not echoed: it is probably a credential.
            return Err(ApiError::invalid_field(
                "headers",
                format!("the value of `{name}` is not a valid header value"),
            ));
        }
        out.push((name, value));
    }
    Ok(out)
}

#[utoipa::path(get, path = "/api/{sessionId}/webhook", tag = "webhooks", operation_id = "getWebhook", summary = "The session's webhook",
    params(("sessionId" = String, Path, description = "the session id")),
    responses((status = 200, description = "The webhook and its deliveries by status", body = crate::api::openapi::schemas::WebhookView),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody), (status = 404, description = "`webhook_not_found`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn get_webhook(
    State(state): State<AppState>,
    SessionPath(session, _): SessionPath<needs::Webhooks>,
) -> Result<Json<serde_json::Value>> {
    let Some(webhook) = webhooks::get_webhook(&state.store, session.as_str()).await? else {
        return Err(no_webhook(&state, session.as_str()));
    };
    let mut out = view(&webhook);
    let counts: BTreeMap<String, i64> = webhooks::delivery_counts(&state.store, session.as_str())
        .await?
        .into_iter()
        .collect();
    out["deliveries"] = serde_json::json!(counts);
    Ok(Json(out))
}

fn no_webhook(state: &AppState, session: &str) -> ApiError {
    let global = if state.webhooks.global().is_some() {
        "; the global webhook (WAMUX_WEBHOOK_URL) receives its events"
    } else {
        ""
    };
    ApiError::new(
        StatusCode::NOT_FOUND,
        "webhook_not_found",
        format!(
            "session `{session}` has no webhook{global}; set one with POST /api/{session}/webhook"
        ),
    )
}

#[utoipa::path(delete, path = "/api/{sessionId}/webhook", tag = "webhooks", operation_id = "deleteWebhook", summary = "Remove the session's webhook",
    params(("sessionId" = String, Path, description = "the session id")),
    responses((status = 200, description = "Removed; pending deliveries are cancelled", body = crate::api::openapi::schemas::WebhookDeleted),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody), (status = 404, description = "`webhook_not_found`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn delete_webhook(
    State(state): State<AppState>,
    SessionPath(session, _): SessionPath<needs::Webhooks>,
) -> Result<Json<serde_json::Value>> {
    let deleted = webhooks::delete_webhook(
        &state.store,
        session.as_str(),
        state.webhooks.global().is_some(),
    )
    .await?;
    if !deleted {
        return Err(no_webhook(&state, session.as_str()));
    }
    state.webhooks.changed(session.as_str());
    tracing::info!(session = %session, "webhook removed");
    Ok(Json(
        serde_json::json!({"sessionId": session, "deleted": true}),
    ))
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    status: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

const DELIVERY_STATUSES: &[&str] = &["pending", "delivered", "failed", "dead", "cancelled"];

#[utoipa::path(get, path = "/api/{sessionId}/webhook/deliveries", tag = "webhooks", operation_id = "listDeliveries", summary = "Webhook deliveries",
    params(("sessionId" = String, Path, description = "the session id"),
        ("status" = Option<String>, Query, description = "`pending`, `delivered`, `failed`, `dead` or `cancelled`"),
        ("before" = Option<i64>, Query, description = "`nextCursor` of the previous page"),
        ("limit" = Option<i64>, Query, description = "1 to 500, default 50")),
    responses((status = 200, description = "Deliveries, newest first", body = crate::api::openapi::schemas::Deliveries),
        (status = 400, description = "`invalid_query`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn list_deliveries(
    State(state): State<AppState>,
    SessionPath(session, _): SessionPath<needs::Webhooks>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<serde_json::Value>> {
    if let Some(s) = &q.status
        && !DELIVERY_STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`status` must be one of: {}", DELIVERY_STATUSES.join(", ")),
        ));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`limit` must be from 1 to 500",
        ));
    }
    let deliveries = webhooks::list_deliveries(
        &state.store,
        session.as_str(),
        q.status.as_deref(),
        q.before,
        limit,
    )
    .await?;
    let next = (deliveries.len() as i64 == limit)
        .then(|| deliveries.last().map(|d| d.id))
        .flatten();
    let tag = state.webhooks.clone();
    let items: Vec<serde_json::Value> = deliveries
        .into_iter()
        .map(|d| {
            let mut v = serde_json::to_value(&d).unwrap_or_default();
            v["webhookId"] = serde_json::Value::String(tag.message_id(d.event_id));
            v
        })
        .collect();
    Ok(Json(
        serde_json::json!({"deliveries": items, "nextCursor": next}),
    ))
}

#[utoipa::path(post, path = "/api/{sessionId}/webhook/deliveries/{deliveryId}/retry", tag = "webhooks", operation_id = "retryDelivery", summary = "Retry a webhook delivery",
    params(("sessionId" = String, Path, description = "the session id"), ("deliveryId" = i64, Path, description = "a delivery `id`")),
    responses((status = 200, description = "Queued again, at once", body = crate::api::openapi::schemas::DeliveryView),
        (status = 400, description = "`invalid_path`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody), (status = 404, description = "`not_found`: no such delivery", body = crate::api::openapi::schemas::ErrorBody)))]
async fn retry_delivery(
    State(state): State<AppState>,
    SessionPath(session, _): SessionPath<needs::Webhooks>,
    path: std::result::Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>> {
    let Path((_, delivery_id)) = path?;
    let id: i64 = delivery_id
        .parse()
        .map_err(|_| ApiError::bad_request("invalid_path", "the delivery id must be a number"))?;
    if !webhooks::retry_delivery(&state.store, session.as_str(), id).await? {
        return Err(ApiError::not_found(format!(
            "session `{session}` has no delivery {id}"
        )));
    }
    state.webhooks.wake(session.as_str());
    let delivery = webhooks::get_delivery(&state.store, session.as_str(), id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("session `{session}` has no delivery {id}")))?;
    let mut v = serde_json::to_value(&delivery).map_err(ApiError::internal)?;
    v["webhookId"] = serde_json::Value::String(state.webhooks.message_id(delivery.event_id));
    Ok(Json(v))
}
