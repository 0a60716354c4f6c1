//! `/group/...`: create, list and read groups, their participants, settings, invite
//! codes, leaving; the group in `?groupJid=` as Evolution takes it (`<id>` or `<id>@g.us`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Evo, EvoResult, instance, object, text_field};
use crate::AppState;
use crate::access::Scope;
use crate::api::Caller;
use crate::api::extract::ApiJson;
use crate::model::{ChatAddress, SessionId};
use crate::whatsapp::groups::{GroupEdit, GroupInfo, GroupParticipant, ParticipantAction};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/group/create/{instance}", post(create))
        .route("/group/fetchAllGroups/{instance}", get(fetch_all))
        .route("/group/findGroupInfos/{instance}", get(find))
        .route("/group/participants/{instance}", get(participants))
        .route(
            "/group/updateParticipant/{instance}",
            post(update_participants),
        )
        .route("/group/updateSetting/{instance}", post(update_setting))
        .route("/group/updateGroupSubject/{instance}", post(update_subject))
        .route(
            "/group/updateGroupDescription/{instance}",
            post(update_description),
        )
        .route("/group/inviteCode/{instance}", get(invite_code))
        .route(
            "/group/revokeInviteCode/{instance}",
            post(revoke_invite_code),
        )
        .route("/group/acceptInviteCode/{instance}", get(accept_invite))
        .route("/group/leaveGroup/{instance}", delete(leave))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupQuery {
    group_jid: Option<String>,
    get_participants: Option<String>,
    invite_code: Option<String>,
}

/// The group the query (or the body) names.
fn group_of(q: &GroupQuery, body: Option<&Value>) -> EvoResult<ChatAddress> {
    let raw = q
        .group_jid
        .clone()
        .or_else(|| {
            body.and_then(|b| b.get("groupJid"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .filter(|g| !g.trim().is_empty())
        .ok_or_else(|| Evo::bad_request(&["The group id needs to be informed in the query"]))?;
    let jid = if raw.ends_with("@g.us") {
        raw
    } else {
        format!("{raw}@g.us")
    };
    ChatAddress::parse(&jid).map_err(|e| Evo::bad_request(&[&e.to_string()]))
}

/// A participant as Baileys lists it: `id` as the group names them, the other address
/// beside it, and `admin`.
fn participant(p: &GroupParticipant, lid_group: bool) -> Value {
    let admin = if p.super_admin {
        json!("superadmin")
    } else if p.admin {
        json!("admin")
    } else {
        Value::Null
    };
    let (id, other) = match (lid_group, &p.lid, &p.jid) {
        (true, Some(lid), pn) => (lid.clone(), pn.clone().map(|pn| ("phoneNumber", pn))),
        (_, lid, Some(pn)) => (pn.clone(), lid.clone().map(|l| ("lid", l))),
        (_, Some(lid), None) => (lid.clone(), None),
        (_, None, None) => (String::new(), None),
    };
    let mut o = json!({"id": id, "admin": admin});
    if let Some((k, v)) = other {
        o[k] = v.into();
    }
    o
}

/// Baileys' `GroupMetadata` of a group, as Evolution passes it on.
fn metadata(g: &GroupInfo, with_participants: bool) -> Value {
    let lid_group = g.addressing == "lid";
    let mut o = json!({
        "id": g.id,
        "subject": g.subject,
        "subjectOwner": g.owner,
        "subjectTime": g.created_at,
        "size": g.size,
        "creation": g.created_at,
        "owner": g.owner,
        "desc": g.description,
        "restrict": g.settings.locked,
        "announce": g.settings.announce,
        "isCommunity": g.community,
        "isCommunityAnnounce": g.announcement_group,
        "linkedParent": g.parent,
        "joinApprovalMode": g.settings.membership_approval,
        "memberAddMode": g.settings.members_can_add,
        "ephemeralDuration": g.settings.ephemeral,
        "addressingMode": g.addressing,
    });
    if with_participants {
        o["participants"] = g
            .participants
            .iter()
            .map(|p| participant(p, lid_group))
            .collect();
    }
    o
}

fn people(body: &Value) -> EvoResult<Vec<ChatAddress>> {
    let list = body
        .get("participants")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty() && a.len() <= 1024)
        .ok_or_else(|| Evo::bad_request(&["instance requires property \"participants\""]))?;
    list.iter()
        .map(|p| {
            p.as_str()
                .and_then(|s| ChatAddress::parse(s).ok())
                .filter(|a| !a.as_str().ends_with("@g.us"))
                .ok_or_else(|| Evo::bad_request(&["participants must be phone numbers"]))
        })
        .collect()
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let id = instance(&state, &caller, &name, Scope::Send)?;
    object(&body)?;
    let subject = super::required_text(&body, "subject")?;
    if subject.trim().is_empty() || subject.chars().count() > 100 {
        return Err(Evo::bad_request(&["subject must be 1 to 100 characters"]));
    }
    let who = people(&body)?;
    let description = text_field(&body, "description")?.filter(|d| !d.trim().is_empty());
    let (mut group, results) = state
        .sessions
        .create_group(&id, &subject, &who, description.as_deref(), None)
        .await?;
    if super::bool_field(&body, "promoteParticipants")?.unwrap_or(false) {
        let added: Vec<ChatAddress> = results
            .iter()
            .filter(|r| r.ok)
            .filter_map(|r| ChatAddress::parse(&r.participant).ok())
            .collect();
        if !added.is_empty() {
            let gid = group_address(&group)?;
            state
                .sessions
                .group_participants(&id, &gid, ParticipantAction::Promote, &added)
                .await?;
            group = state.sessions.group(&id, &gid).await?;
        }
    }
    Ok((StatusCode::CREATED, Json(metadata(&group, true))))
}

/// An invite code from a link (`https://chat.whatsapp.com/<code>`) or the code itself.
fn bare_code(link: &str) -> String {
    link.rsplit('/').next().unwrap_or(link).trim().to_owned()
}

fn group_address(g: &GroupInfo) -> EvoResult<ChatAddress> {
    ChatAddress::parse(&g.id).map_err(|e| Evo::bad_request(&[&e.to_string()]))
}

async fn picture_url(state: &AppState, id: &SessionId, g: &GroupInfo) -> Value {
    let Ok(gid) = ChatAddress::parse(&g.id) else {
        return Value::Null;
    };
    match state.sessions.group_picture(id, &gid).await {
        Ok(Some(p)) => p.url.into(),
        _ => Value::Null,
    }
}

async fn fetch_all(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<GroupQuery>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Read)?;
    let with = match q.get_participants.as_deref() {
        Some("true") => true,
        Some(_) => false,
        None => {
            return Err(Evo::bad_request(&[
                "The getParticipants needs to be informed in the query",
            ]));
        }
    };
    let mut out = Vec::new();
    for g in state.sessions.groups(&id).await? {
        let mut m = metadata(&g, with);
        m["pictureUrl"] = picture_url(&state, &id, &g).await;
        out.push(m);
    }
    Ok(Json(Value::Array(out)))
}

async fn find(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<GroupQuery>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Read)?;
    let gid = group_of(&q, None)?;
    let g = state.sessions.group(&id, &gid).await?;
    let mut m = metadata(&g, true);
    m["pictureUrl"] = picture_url(&state, &id, &g).await;
    Ok(Json(m))
}

async fn participants(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<GroupQuery>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Read)?;
    let gid = group_of(&q, None)?;
    let g = state.sessions.group(&id, &gid).await?;
    let lid_group = g.addressing == "lid";
    let list: Vec<Value> = g
        .participants
        .iter()
        .map(|p| participant(p, lid_group))
        .collect();
    Ok(Json(json!({"participants": list})))
}

async fn update_participants(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<GroupQuery>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let id = instance(&state, &caller, &name, Scope::Send)?;
    object(&body)?;
    let gid = group_of(&q, Some(&body))?;
    let action = match text_field(&body, "action")?.as_deref() {
        Some("add") => ParticipantAction::Add,
        Some("remove") => ParticipantAction::Remove,
        Some("promote") => ParticipantAction::Promote,
        Some("demote") => ParticipantAction::Demote,
        _ => {
            return Err(Evo::bad_request(&[
                "action is not one of enum values: add,remove,promote,demote",
            ]));
        }
    };
    let who = people(&body)?;
    let results = state
        .sessions
        .group_participants(&id, &gid, action, &who)
        .await?;
    // Baileys' answer: one `{"status","jid"}` per participant, the status as text.
    let list: Vec<Value> = results
        .iter()
        .map(|r| json!({"status": r.status.to_string(), "jid": r.participant}))
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({"updateParticipants": list})),
    ))
}

async fn update_setting(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<GroupQuery>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let id = instance(&state, &caller, &name, Scope::Send)?;
    object(&body)?;
    let gid = group_of(&q, Some(&body))?;
    let edit = match text_field(&body, "action")?.as_deref() {
        Some("announcement") => GroupEdit::Announce(true),
        Some("not_announcement") => GroupEdit::Announce(false),
        Some("locked") => GroupEdit::Locked(true),
        Some("unlocked") => GroupEdit::Locked(false),
        _ => {
            return Err(Evo::bad_request(&[
                "action is not one of enum values: announcement,not_announcement,locked,unlocked",
            ]));
        }
    };
    state.sessions.edit_group(&id, &gid, &[edit]).await?;
    // Baileys' `groupSettingUpdate` answers nothing: Evolution's body is empty of it.
    Ok((StatusCode::CREATED, Json(json!({}))))
}

async fn edit(
    state: &AppState,
    caller: &Caller,
    name: &str,
    q: &GroupQuery,
    body: &Value,
    field: &str,
    make: impl FnOnce(String) -> GroupEdit,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let id = instance(state, caller, name, Scope::Send)?;
    object(body)?;
    let gid = group_of(q, Some(body))?;
    let value = super::required_text(body, field)?;
    state.sessions.edit_group(&id, &gid, &[make(value)]).await?;
    Ok((StatusCode::CREATED, Json(json!({"update": "success"}))))
}

async fn update_subject(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<GroupQuery>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    edit(
        &state,
        &caller,
        &name,
        &q,
        &body,
        "subject",
        GroupEdit::Subject,
    )
    .await
}

async fn update_description(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<GroupQuery>,
    ApiJson(body): ApiJson<Value>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    edit(&state, &caller, &name, &q, &body, "description", |d| {
        GroupEdit::Description((!d.trim().is_empty()).then_some(d))
    })
    .await
}

async fn invite_code(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<GroupQuery>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Read)?;
    let gid = group_of(&q, None)?;
    let code = state.sessions.invite_link(&id, &gid, false).await?;
    let code = bare_code(&code);
    Ok(Json(json!({
        "inviteUrl": format!("https://chat.whatsapp.com/{code}"),
        "inviteCode": code,
    })))
}

async fn revoke_invite_code(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<GroupQuery>,
) -> EvoResult<(StatusCode, Json<Value>)> {
    let id = instance(&state, &caller, &name, Scope::Send)?;
    let gid = group_of(&q, None)?;
    let code = state.sessions.invite_link(&id, &gid, true).await?;
    let code = bare_code(&code);
    Ok((
        StatusCode::CREATED,
        Json(json!({"revoked": true, "inviteCode": code})),
    ))
}

async fn accept_invite(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<GroupQuery>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Send)?;
    let code = q
        .invite_code
        .as_deref()
        .map(bare_code)
        .filter(|c| !c.is_empty() && c.len() <= 64)
        .ok_or_else(|| Evo::bad_request(&["The invite code needs to be informed in the query"]))?;
    let joined = state.sessions.join_group(&id, &code).await?;
    Ok(Json(json!({"accepted": true, "groupJid": joined.group_id})))
}

async fn leave(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<GroupQuery>,
) -> EvoResult<Json<Value>> {
    let id = instance(&state, &caller, &name, Scope::Send)?;
    let gid = group_of(&q, None)?;
    state.sessions.leave_group(&id, &gid).await?;
    Ok(Json(json!({"groupJid": gid.as_str(), "leave": true})))
}
