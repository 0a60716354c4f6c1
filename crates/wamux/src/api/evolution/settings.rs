//! `/settings/set/:instance` and `/settings/find/:instance`: the instance's behaviour
//! settings, as Evolution names them. `rejectCall`/`msgCall` are the session's call
//! settings and `groupsIgnore` its `ignore: ["groups"]`; the others are Evolution's and
//! stay off (see docs/migrating-from-evolution.md).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Evo, EvoResult, bool_field, instance, object, text_field};
use crate::AppState;
use crate::access::Scope;
use crate::api::Caller;
use crate::api::extract::ApiJson;
use crate::model::{ChatClass, Ignore, SessionId};
use crate::store;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/settings/set/{instance}", post(set))
        .route("/settings/find/{instance}", get(find))
}

/// What wamux acts on of Evolution's settings.
pub(super) struct Behaviour {
    pub reject_call: bool,
    pub msg_call: Option<String>,
    pub groups_ignore: bool,
}

impl Behaviour {
    /// Reads them from a body (missing ones are off).
    pub(super) fn read(body: &Value) -> EvoResult<Self> {
        let msg_call = text_field(body, "msgCall")?.filter(|m| !m.trim().is_empty());
        if msg_call.as_ref().is_some_and(|m| m.len() > 4096) {
            return Err(Evo::bad_request(&["msgCall must be at most 4096 bytes"]));
        }
        Ok(Self {
            reject_call: bool_field(body, "rejectCall")?.unwrap_or(false),
            msg_call,
            groups_ignore: bool_field(body, "groupsIgnore")?.unwrap_or(false),
        })
    }

    /// Stores them: the call settings, and `groups` added to or taken from what the session
    /// ignores (its other classes stay).
    pub(super) async fn apply(&self, state: &AppState, id: &SessionId) -> EvoResult<()> {
        let calls = store::calls::CallSettings {
            reject: self.reject_call,
            message: self.msg_call.clone(),
        };
        store::calls::set(&state.store, id.as_str(), &calls).await?;
        let mut classes = state.sessions.ignore(id).await?.classes();
        classes.retain(|c| *c != ChatClass::Groups);
        if self.groups_ignore {
            classes.push(ChatClass::Groups);
        }
        state.sessions.set_ignore(id, Ignore::of(&classes)).await?;
        Ok(())
    }
}

/// The settings as Evolution shows them.
pub(super) async fn current(state: &AppState, id: &SessionId) -> EvoResult<Value> {
    let calls = store::calls::get(&state.store, id.as_str()).await?;
    let ignore = state.sessions.ignore(id).await?;
    Ok(json!({
        "rejectCall": calls.reject,
        "msgCall": calls.message.unwrap_or_default(),
        "groupsIgnore": ignore.classes().contains(&ChatClass::Groups),
        "alwaysOnline": false,
        "readMessages": false,
        "readStatus": false,
        "syncFullHistory": false,
        "wavoipToken": "",
    }))
}

async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let id = instance(&state, &caller, &name, Scope::Manage)?;
    object(&body)?;
    Behaviour::read(&body)?.apply(&state, &id).await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"settings": {"instanceName": id.as_str(), "settings": current(&state, &id).await?}}),
        ),
    ))
}

async fn find(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Read)?;
    Ok(Json(current(&state, &id).await?))
}
