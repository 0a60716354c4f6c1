//! The group server's admin routes: phones create and manage groups (the same rules as a
//! device's `w:g2` requests), and `GET /admin/groups/:id` shows the server's truth.
//! Phones send to a group through `POST /admin/phones/:phone/messages` with
//! `"to": "<id>@g.us"`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use wacore_binary::Jid;

use super::{ApiError, Result, parse};
use crate::groups::{self, Action, Change, GroupError, Joined, NewGroup};
use crate::hub::{Core, Hub};
use crate::state::{Addressing, Group, Role};

pub fn router() -> Router<Arc<Hub>> {
    Router::new()
        .route("/admin/groups", post(create).get(list))
        .route("/admin/groups/addressing", post(set_addressing))
        .route("/admin/groups/join", post(join))
        .route("/admin/groups/{id}", get(show).patch(update))
        .route("/admin/groups/{id}/participants", post(participants))
        .route("/admin/groups/{id}/invite", post(invite))
        .route("/admin/groups/{id}/leave", post(leave))
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> Self {
        let message = e.to_string();
        match e {
            GroupError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "group_not_found", message)
            }
            GroupError::NotParticipant(..) => {
                ApiError::new(StatusCode::FORBIDDEN, "not_a_participant", message)
            }
            GroupError::NotAdmin(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "not_an_admin", message)
            }
            GroupError::BadRequest(_) => ApiError::bad_request("invalid_group_request", message),
            GroupError::BadInvite(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "invite_not_found", message)
            }
            GroupError::Full(_) => ApiError::new(StatusCode::CONFLICT, "group_full", message),
        }
    }
}

fn phone_of(core: &Core, phone: &str) -> Result<String> {
    let digits = phone
        .trim_start_matches('+')
        .split('@')
        .next()
        .unwrap_or_default();
    if core.account(digits).is_none() {
        return Err(ApiError::phone_not_found(digits));
    }
    Ok(digits.to_string())
}

/// The server's view of a group.
pub fn group_json(core: &Core, g: &Group) -> Value {
    let participants: Vec<Value> = g
        .participants
        .iter()
        .map(|m| {
            json!({
                "phone": m.phone,
                "lid": core.account(&m.phone).map(|a| a.lid.clone()),
                "role": match m.role {
                    Role::Member => "member",
                    Role::Admin => "admin",
                    Role::Superadmin => "superadmin",
                },
                "joinedAt": m.joined_at,
            })
        })
        .collect();
    json!({
        "id": g.id,
        "jid": g.jid(),
        "subject": g.subject,
        "subjectOwner": g.subject_owner,
        "description": g.description.as_ref().map(|d| d.text.clone()),
        "creator": g.creator,
        "createdAt": g.created_at,
        "participants": participants,
        "announce": g.announce,
        "locked": g.locked,
        "ephemeral": g.ephemeral,
        "membershipApproval": g.membership_approval,
        "inviteCode": g.invite_code,
        "addressing": g.addressing,
        "community": g.community,
        "parent": g.parent,
        "announcementGroup": g.announcement_group,
        "generalChat": g.general_chat,
        "picture": g.picture.as_ref().map(|p| p.id.clone()),
        "linkedGroups": if g.community {
            groups::linked(core, &g.id).iter().map(|l| l.jid()).collect::<Vec<_>>()
        } else {
            Vec::new()
        },
    })
}

fn outcomes_json(outcomes: &[groups::Outcome]) -> Value {
    Value::Array(
        outcomes
            .iter()
            .map(|o| {
                let mut v = json!({"phone": o.phone, "status": o.status});
                if let Some((code, exp)) = &o.invite {
                    v["invite"] = json!({"code": code, "expiration": exp});
                }
                v
            })
            .collect(),
    )
}

fn user_jids(phones: &[String]) -> Vec<Jid> {
    phones
        .iter()
        .map(|p| {
            Jid::pn(
                p.trim_start_matches('+')
                    .split('@')
                    .next()
                    .unwrap_or_default(),
            )
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Create {
    creator: String,
    subject: String,
    #[serde(default)]
    participants: Vec<String>,
    addressing: Option<Addressing>,
    description: Option<String>,
    #[serde(default)]
    community: bool,
    /// A community to create the group in.
    parent: Option<String>,
}

async fn create(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Response> {
    let req: Create = parse(&body)?;
    let mut core = hub.core.lock().await;
    let creator = phone_of(&core, &req.creator)?;
    let addressing = req.addressing.unwrap_or(core.group_addressing);
    let (g, outcomes) = groups::create(
        &mut core,
        &creator,
        NewGroup {
            subject: req.subject,
            participants: user_jids(&req.participants),
            addressing,
            description: req.description,
            community: req.community,
            parent: req.parent.map(|p| groups::group_id_of(&p)),
            ephemeral: 0,
            membership_approval: false,
            general_chat: false,
        },
    )?;
    let mut body = group_json(&core, &g);
    body["results"] = outcomes_json(&outcomes);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list(State(hub): State<Arc<Hub>>) -> Json<Value> {
    let core = hub.core.lock().await;
    Json(Value::Array(
        core.snap
            .groups
            .values()
            .map(|g| group_json(&core, g))
            .collect(),
    ))
}

async fn show(State(hub): State<Arc<Hub>>, Path(id): Path<String>) -> Result<Json<Value>> {
    let core = hub.core.lock().await;
    let g = groups::group(&core, &groups::group_id_of(&id))?;
    Ok(Json(group_json(&core, g)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Participants {
    by: String,
    action: String,
    participants: Vec<String>,
}

async fn participants(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let req: Participants = parse(&body)?;
    let action = Action::parse(&req.action).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_action",
            "action is one of add, remove, promote, demote",
        )
    })?;
    let mut core = hub.core.lock().await;
    let by = phone_of(&core, &req.by)?;
    let outcomes = groups::participants(
        &mut core,
        &by,
        &groups::group_id_of(&id),
        action,
        &user_jids(&req.participants),
    )?;
    Ok(Json(json!({"results": outcomes_json(&outcomes)})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Update {
    by: String,
    subject: Option<String>,
    /// An empty description deletes it.
    description: Option<String>,
    announce: Option<bool>,
    locked: Option<bool>,
    ephemeral: Option<u32>,
    membership_approval: Option<bool>,
    /// A new picture (base64 JPEG), or `""` to remove it.
    picture: Option<String>,
}

async fn update(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let req: Update = parse(&body)?;
    let gid = groups::group_id_of(&id);
    let mut core = hub.core.lock().await;
    let by = phone_of(&core, &req.by)?;
    let mut changes = Vec::new();
    if let Some(s) = req.subject {
        changes.push(Change::Subject(s));
    }
    if let Some(d) = req.description {
        changes.push(Change::Description(Some(d).filter(|d| !d.is_empty())));
    }
    if let Some(a) = req.announce {
        changes.push(Change::Announce(a));
    }
    if let Some(l) = req.locked {
        changes.push(Change::Locked(l));
    }
    if let Some(e) = req.ephemeral {
        changes.push(Change::Ephemeral(e));
    }
    if let Some(m) = req.membership_approval {
        changes.push(Change::MembershipApproval(m));
    }
    if changes.is_empty() && req.picture.is_none() {
        return Err(ApiError::bad_request(
            "missing_change",
            "give subject, description, announce, locked, ephemeral, membershipApproval or picture",
        ));
    }
    for c in changes {
        groups::change(&mut core, &by, &gid, c)?;
    }
    if let Some(p) = &req.picture {
        let bytes = if p.is_empty() {
            None
        } else {
            Some(
                base64::engine::general_purpose::STANDARD
                    .decode(p.as_bytes())
                    .map_err(|e| {
                        ApiError::bad_request(
                            "invalid_picture",
                            format!("picture is not base64: {e}"),
                        )
                    })?,
            )
        };
        groups::set_picture(&mut core, &by, &gid, bytes.as_deref())?;
    }
    let g = groups::group(&core, &gid)?;
    Ok(Json(group_json(&core, g)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Invite {
    by: String,
    #[serde(default)]
    reset: bool,
}

async fn invite(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let req: Invite = parse(&body)?;
    let mut core = hub.core.lock().await;
    let by = phone_of(&core, &req.by)?;
    let code = groups::invite(&mut core, &by, &groups::group_id_of(&id), req.reset)?;
    Ok(Json(
        json!({"code": code, "link": format!("https://chat.whatsapp.com/{code}")}),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Join {
    phone: String,
    code: String,
}

async fn join(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Json<Value>> {
    let req: Join = parse(&body)?;
    let mut core = hub.core.lock().await;
    let phone = phone_of(&core, &req.phone)?;
    let code = req.code.rsplit('/').next().unwrap_or_default().to_string();
    Ok(Json(match groups::join(&mut core, &phone, &code)? {
        Joined::Joined(g) => json!({"joined": format!("{g}@g.us")}),
        Joined::Pending(g) => json!({"pending": format!("{g}@g.us")}),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Leave {
    phone: String,
}

async fn leave(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let req: Leave = parse(&body)?;
    let mut core = hub.core.lock().await;
    let phone = phone_of(&core, &req.phone)?;
    groups::leave(&mut core, &phone, &groups::group_id_of(&id))?;
    Ok(Json(json!({"left": true})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetAddressing {
    addressing: Addressing,
}

/// How the groups devices create from now on name their participants (`pn` or `lid`).
async fn set_addressing(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Json<Value>> {
    let req: SetAddressing = parse(&body)?;
    hub.core.lock().await.group_addressing = req.addressing;
    Ok(Json(json!({"addressing": req.addressing})))
}
