//! Scoped API keys (`/api/keys`, admin only), who a key is (`/api/me`, any key) and the
//! audit log (`/api/audit`, admin only).

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::extract::{ApiJson, ApiQuery};
use super::{ApiError, Caller, Result};
use crate::AppState;
use crate::access::{self, Scope, SessionPattern};
use crate::store::{self, access::KeyRecord};

/// Longest key name.
const MAX_NAME: usize = 100;
/// Most session patterns on one key.
const MAX_PATTERNS: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/keys", get(list).post(create))
        .route("/keys/{key_id}", delete(revoke))
        .route("/audit", get(audit))
        .route_layer(axum::middleware::from_fn(super::admin_route))
        .route("/me", get(me))
}

/// A key as listed: never its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    #[schema(example = "key_3f9c2a1b0d4e5f60")]
    pub id: String,
    pub name: String,
    /// Session ids and prefixes (`tenant-a-*`); `["*"]` is every session.
    #[schema(value_type = Vec<String>, example = json!(["tenant-a-*"]))]
    pub sessions: Vec<SessionPattern>,
    #[schema(value_type = Vec<String>, example = json!(["read", "send"]))]
    pub scopes: BTreeSet<Scope>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; after it the key is refused.
    pub expires_at: Option<i64>,
    /// Unix seconds, to the minute.
    pub last_used_at: Option<i64>,
}

impl From<KeyRecord> for KeyView {
    fn from(k: KeyRecord) -> Self {
        Self {
            id: k.id,
            name: k.name,
            sessions: k.sessions,
            scopes: k.scopes,
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
        }
    }
}

/// A new key: the only answer that holds its secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyCreated {
    #[serde(flatten)]
    pub view: KeyView,
    /// The secret: shown this once, kept only as a digest. Use it like the admin key.
    #[schema(example = "wmx_1Q2w3E4r5T6y7U8i9O0pAaSsDdFfGgHhJjKkLlZzXxC")]
    pub key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// `POST /api/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKey {
    /// For people: who or what uses the key. 1 to 100 characters.
    #[schema(example = "tenant A's CRM")]
    pub name: Option<String>,
    /// `"*"` (every session), or session ids and prefixes ending in `*`.
    #[schema(value_type = Object, example = json!(["tenant-a-*"]))]
    pub sessions: Option<Value>,
    /// Some of `read`, `send`, `manage`, `webhooks`.
    #[schema(value_type = Vec<String>, example = json!(["read", "send"]))]
    pub scopes: Option<Value>,
    /// Unix seconds, in the future; none means the key does not expire.
    pub expires_at: Option<i64>,
}

/// `GET /api/me`: who the presented key is.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    /// The admin key may do everything, including managing keys.
    pub admin: bool,
    /// The key's id; absent for the admin key.
    pub key_id: Option<String>,
    /// `["*"]` for the admin key.
    pub sessions: Vec<String>,
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub entries: Vec<AuditView>,
    /// Give it as `before` for the next (older) page; absent at the end.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditView {
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// The key's id; absent for the admin key.
    pub key_id: Option<String>,
    #[schema(example = "POST")]
    pub method: String,
    #[schema(example = "/api/send-message")]
    pub route: String,
    pub session_id: Option<String>,
    /// The HTTP status the call answered with.
    pub status: i32,
    /// The client's address.
    pub client: Option<String>,
}

/// The new key's record (a fresh id, created `now`), or what is wrong with the request.
fn parse_create(body: CreateKey, now: i64) -> Result<KeyRecord> {
    let name = body.name.ok_or(ApiError::missing_field("name"))?;
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(ApiError::invalid_field(
            "name",
            format!("must be 1 to {MAX_NAME} characters"),
        ));
    }
    let sessions = match body.sessions.ok_or(ApiError::missing_field("sessions"))? {
        Value::String(s) if s == "*" => vec![SessionPattern::Prefix(String::new())],
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_PATTERNS => items
            .iter()
            .map(|v| {
                let s = v
                    .as_str()
                    .ok_or_else(|| ApiError::invalid_field("sessions", "must hold strings"))?;
                SessionPattern::parse(s).map_err(|e| ApiError::invalid_field("sessions", e))
            })
            .collect::<Result<Vec<_>>>()?,
        _ => {
            return Err(ApiError::invalid_field(
                "sessions",
                format!(
                    "must be \"*\" or a list of 1 to {MAX_PATTERNS} session ids or prefixes like \"tenant-a-*\""
                ),
            ));
        }
    };
    let scopes = match body.scopes.ok_or(ApiError::missing_field("scopes"))? {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| {
                v.as_str().and_then(Scope::parse).ok_or_else(|| {
                    ApiError::invalid_field(
                        "scopes",
                        format!("{v} is not one of read, send, manage, webhooks"),
                    )
                })
            })
            .collect::<Result<BTreeSet<_>>>()?,
        _ => {
            return Err(ApiError::invalid_field(
                "scopes",
                "must be a non-empty list of read, send, manage, webhooks",
            ));
        }
    };
    if let Some(t) = body.expires_at
        && t <= now
    {
        return Err(ApiError::invalid_field(
            "expiresAt",
            "must be in the future (Unix seconds)",
        ));
    }
    Ok(KeyRecord {
        id: access::new_id(),
        name,
        sessions,
        scopes,
        created_at: now,
        expires_at: body.expires_at,
        last_used_at: None,
    })
}

#[utoipa::path(post, path = "/api/keys", tag = "keys", operation_id = "createKey", summary = "Create a scoped key",
    request_body = CreateKey,
    responses((status = 201, description = "Created; the secret is in `key`, shown only now", body = KeyCreated),
        (status = 400, description = "`missing_field`, `invalid_field`, `invalid_body`, `invalid_json`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<KeyCreated>)> {
    let record = parse_create(body, store::now())?;
    let secret = access::new_secret();
    store::access::create_key(&state.store, &record, &access::digest(&secret)).await?;
    tracing::info!(key = %record.id, name = %record.name, "API key created");
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            view: record.into(),
            key: secret,
        }),
    ))
}

#[utoipa::path(get, path = "/api/keys", tag = "keys", operation_id = "listKeys", summary = "The scoped keys",
    responses((status = 200, description = "Every scoped key, oldest first, without secrets", body = KeyList)))]
async fn list(State(state): State<AppState>) -> Result<Json<KeyList>> {
    let keys = store::access::list_keys(&state.store).await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(KeyView::from).collect(),
    }))
}

#[utoipa::path(delete, path = "/api/keys/{keyId}", tag = "keys", operation_id = "revokeKey", summary = "Revoke a key",
    params(("keyId" = String, Path, description = "the key's `id`")),
    responses((status = 200, description = "Revoked: refused from now on, its Socket.IO connections closed", body = crate::api::openapi::schemas::KeyRevoked),
        (status = 404, description = "`not_found`: no such key", body = crate::api::openapi::schemas::ErrorBody)))]
async fn revoke(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>> {
    if !state.keys.revoke(&id).await? {
        return Err(ApiError::not_found(format!("there is no key `{id}`")));
    }
    tracing::info!(key = %id, "API key revoked");
    Ok(Json(serde_json::json!({"id": id, "revoked": true})))
}

#[utoipa::path(get, path = "/api/me", tag = "keys", operation_id = "me", summary = "Who this key is",
    responses((status = 200, description = "The presented key's sessions and scopes", body = Me)))]
async fn me(caller: Caller) -> Json<Me> {
    Json(match caller.grant() {
        None => Me {
            admin: true,
            key_id: None,
            sessions: vec!["*".into()],
            scopes: Scope::ALL.iter().map(|s| s.to_string()).collect(),
        },
        Some(g) => Me {
            admin: false,
            key_id: Some(g.key_id.clone()),
            sessions: g.sessions.iter().map(ToString::to_string).collect(),
            scopes: g.scopes.iter().map(ToString::to_string).collect(),
        },
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AuditQuery {
    before: Option<String>,
    limit: Option<String>,
    #[serde(rename = "apiKey")]
    _api_key: Option<String>,
}

#[utoipa::path(get, path = "/api/audit", tag = "keys", operation_id = "auditLog", summary = "The audit log",
    params(("before" = Option<String>, Query, description = "a `nextCursor` from a previous page"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 100")),
    responses((status = 200, description = "Mutating calls, newest first", body = AuditPage),
        (status = 400, description = "`invalid_query`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn audit(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>> {
    let bad = |what: &str| ApiError::bad_request("invalid_query", what.to_owned());
    let before = q
        .before
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| bad("`before` must be a `nextCursor`"))
        })
        .transpose()?;
    let limit = match q.limit.as_deref().filter(|s| !s.is_empty()) {
        None => 100,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| bad("`limit` must be from 1 to 1000"))?,
    };
    let entries = store::access::audit_log(&state.store, before, limit).await?;
    let next_cursor = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(AuditPage {
        entries: entries
            .into_iter()
            .map(|e| AuditView {
                id: e.id,
                at: e.at,
                key_id: e.key_id,
                method: e.method,
                route: e.route,
                session_id: e.session_id,
                status: e.status,
                client: e.client,
            })
            .collect(),
        next_cursor,
    }))
}
