//! The event log, for catching up: `GET /api/events?sessionId=&after=<cursor>&limit=`.
//!
//! Every event ever recorded, in order, whether or not a webhook was set when it happened.
//! A receiver that lost data pages from the last cursor it processed: each item's `id` is the
//! cursor, and `nextCursor` is where to continue (the same value when nothing is new).
//! A scoped key sees only its sessions' events: a page may then hold fewer than `limit`
//! (even none) while `hasMore` says to go on from `nextCursor`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::ApiQuery;
use super::{ApiError, Caller, Result};
use crate::AppState;
use crate::access::Scope;
use crate::model::SessionId;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

pub fn router() -> Router<AppState> {
    Router::new().route("/events", get(list))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventsQuery {
    session_id: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/events", tag = "events", operation_id = "listEvents", summary = "The event log",
    params(("sessionId" = Option<String>, Query, description = "only this session's events"),
        ("after" = Option<String>, Query, description = "a cursor (an event `id`) from a previous answer"),
        ("limit" = Option<i64>, Query, description = "1 to 1000, default 100")),
    responses((status = 200, description = "Events after the cursor, oldest first", body = crate::api::openapi::schemas::Events),
        (status = 400, description = "`invalid_query`, `invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<serde_json::Value>> {
    let session = q
        .session_id
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(SessionId::parse)
        .transpose()
        .map_err(ApiError::invalid_session_id)?;
    match &session {
        Some(id) => caller.may(id, Scope::Read)?,
        // A scoped key without `read` reads no session's events.
        None if caller.grant().is_some_and(|g| !g.has(Scope::Read)) => {
            return Err(ApiError::missing_scope(Scope::Read));
        }
        None => {}
    }
    let after = match q.after.as_deref().filter(|s| !s.is_empty()) {
        None => 0,
        Some(a) => a.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                "`after` must be a cursor (an event id) from a previous answer",
            )
        })?,
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be from 1 to {MAX_LIMIT}"),
        ));
    }
    let events = crate::store::events::list_after(
        &state.store,
        session.as_ref().map(SessionId::as_str),
        after,
        limit,
    )
    .await?;
    let next = events.last().map_or(after, |e| e.id);
    let full = events.len() as i64 == limit;
    let items: Vec<serde_json::Value> = events
        .iter()
        .filter(|e| caller.sees(&e.session_id))
        .map(|e| {
            let mut v = e.body();
            v["id"] = e.id.into();
            // The id webhooks carry for this event, to match replayed events with delivered ones.
            v["webhookId"] = state.webhooks.message_id(e.id).into();
            if let Some(chat) = &e.chat_id {
                v["chatId"] = chat.clone().into();
            }
            v
        })
        .collect();
    Ok(Json(serde_json::json!({
        "events": items,
        "nextCursor": next.to_string(),
        "hasMore": full,
    })))
}
