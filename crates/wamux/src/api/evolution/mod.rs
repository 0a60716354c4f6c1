//! Evolution API v2's REST routes (`WAMUX_COMPAT_EVOLUTION=true`), so a client written for
//! Evolution works by changing its base URL: `/instance/...`, `/message/...`, `/chat/...`,
//! `/webhook/...`, the key in the `apikey` header, the instance name being our session id.
//!
//! The routes are thin: they read Evolution's bodies, call what our own routes call, and
//! answer in Evolution's shapes ([`crate::evolution::payload`]) and status codes, with its
//! error envelope `{"status","error","response":{"message":[...]}}`. The global key is our
//! admin key; an instance's token (`hash`) is a scoped key for that one session. Where
//! Evolution's behaviour is an accident (a 500 for a missing field, a 200 carrying an error)
//! these answer as a client would expect instead; `docs/migrating-from-evolution.md` lists
//! the differences.

mod chat;
mod group;
mod instance;
mod message;
mod settings;
mod webhook;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, Caller};
use crate::AppState;
use crate::access::Scope;
use crate::model::SessionId;

/// The routes, under the server's root.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .merge(instance::router())
        .merge(message::router(state))
        .merge(chat::router())
        .merge(group::router())
        .merge(settings::router())
        .merge(webhook::router())
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
}

/// Our key check, with Evolution's refusal: 401 `{"...","response":{"message":"Unauthorized"}}`.
async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    super::auth::authenticate(state, req, next, |refused| {
        let status = refused.status();
        let message = if status == StatusCode::UNAUTHORIZED {
            Value::from("Unauthorized")
        } else {
            json!(["too many requests with a wrong or missing apikey; try again later"])
        };
        let mut r = Evo::new(status, message).into_response();
        if let Some(after) = refused.headers().get(axum::http::header::RETRY_AFTER) {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, after.clone());
        }
        r
    })
    .await
}

/// An answer in Evolution's error envelope.
#[derive(Debug)]
pub struct Evo {
    status: StatusCode,
    message: Value,
}

pub type EvoResult<T> = Result<T, Evo>;

impl Evo {
    pub fn new(status: StatusCode, message: Value) -> Self {
        Self { status, message }
    }

    /// 400 with these messages.
    pub fn bad_request(messages: &[&str]) -> Self {
        Self::new(StatusCode::BAD_REQUEST, json!(messages))
    }

    fn not_found(message: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, json!([message]))
    }
}

impl From<ApiError> for Evo {
    fn from(e: ApiError) -> Self {
        e.log();
        Self::new(e.status, json!([e.message]))
    }
}

impl From<crate::session::SessionError> for Evo {
    fn from(e: crate::session::SessionError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<crate::store::StoreError> for Evo {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for Evo {
    fn into_response(self) -> Response {
        let body = json!({
            "status": self.status.as_u16(),
            "error": self.status.canonical_reason().unwrap_or("Error"),
            "response": {"message": self.message},
        });
        (self.status, axum::Json(body)).into_response()
    }
}

/// The instance a path names, checked: the key may use it for `scope`, and it exists
/// (404 `The "x" instance does not exist`, as Evolution says it).
fn instance(state: &AppState, caller: &Caller, name: &str, scope: Scope) -> EvoResult<SessionId> {
    let missing = || Evo::not_found(format!("The \"{name}\" instance does not exist"));
    let id = SessionId::parse(name).map_err(|_| missing())?;
    // Evolution answers another instance's token with 401, not 403.
    caller
        .may(&id, scope)
        .map_err(|_| Evo::new(StatusCode::UNAUTHORIZED, Value::from("Unauthorized")))?;
    state.sessions.info(&id).map_err(|_| missing())?;
    Ok(id)
}

/// A JSON body, or Evolution's 400 for one that is not an object.
fn object(body: &Value) -> EvoResult<&serde_json::Map<String, Value>> {
    body.as_object()
        .ok_or_else(|| Evo::bad_request(&["the body must be a JSON object"]))
}

/// `field` of `body` as a string: absent is `None`, another type is Evolution's message.
fn text_field(body: &Value, field: &str) -> EvoResult<Option<String>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Evo::bad_request(&[&format!(
            "{field} is not of a type(s) string"
        )])),
    }
}

/// The message id a body names at `pointer` (`/id`, `/key/id`), with Evolution's message
/// for a missing one (`key requires property "id"`).
fn key_id(body: &Value, pointer: &str) -> EvoResult<String> {
    body.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty() && m.len() <= 128)
        .map(str::to_owned)
        .ok_or_else(|| {
            let path = pointer.trim_start_matches('/');
            let (parent, field) = path.rsplit_once('/').unwrap_or(("instance", path));
            let parent = parent.replace('/', ".");
            Evo::bad_request(&[&format!("{parent} requires property \"{field}\"")])
        })
}

/// A required string field, with Evolution's message for a missing one.
fn required_text(body: &Value, field: &str) -> EvoResult<String> {
    text_field(body, field)?
        .ok_or_else(|| Evo::bad_request(&[&format!("instance requires property \"{field}\"")]))
}

fn bool_field(body: &Value, field: &str) -> EvoResult<Option<bool>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Evo::bad_request(&[&format!(
            "{field} is not of a type(s) boolean"
        )])),
    }
}

/// Evolution's state names for an instance.
fn state_of(state: &AppState, id: &SessionId) -> EvoResult<&'static str> {
    let info = state.sessions.info(id)?;
    Ok(crate::evolution::payload::connection_state(info.status).0)
}

/// `{"instance":{"instanceName","state"}}`.
fn connection_state(id: &SessionId, state: &str) -> Value {
    json!({"instance": {"instanceName": id.as_str(), "state": state}})
}
