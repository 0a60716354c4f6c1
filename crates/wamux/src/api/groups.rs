//! Groups: create one, list and read them, manage participants, change info and
//! settings, invite links, join and leave. Group ids are accepted as `<id>@g.us` or the
//! bare id; every route asks WhatsApp through the session, which must be connected.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, SessionPath, needs};
use super::{ApiError, Result};
use crate::AppState;
use crate::model::ChatAddress;
use crate::whatsapp::groups::{
    GroupEdit, GroupInfo, Joined, LinkResult, ParticipantAction, ParticipantResult,
};

/// The most participants one request may name (WhatsApp's group size limit).
const MAX_PARTICIPANTS: usize = 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions/{session_id}/groups", post(create).get(list))
        .route("/sessions/{session_id}/groups/join", post(join))
        .route(
            "/sessions/{session_id}/groups/{group_id}",
            get(show).patch(update),
        )
        .route(
            "/sessions/{session_id}/groups/{group_id}/participants",
            post(participants),
        )
        .route(
            "/sessions/{session_id}/groups/{group_id}/invite-link",
            get(invite_link).delete(revoke_invite_link),
        )
        .route(
            "/sessions/{session_id}/groups/{group_id}/leave",
            post(leave),
        )
        .route(
            "/sessions/{session_id}/groups/{group_id}/picture",
            get(picture).put(set_picture).delete(remove_picture),
        )
        .route(
            "/sessions/{session_id}/communities",
            post(create_community).get(communities),
        )
        .route(
            "/sessions/{session_id}/communities/{community_id}/groups",
            get(community_groups).post(link_groups),
        )
        .route(
            "/sessions/{session_id}/communities/{community_id}/groups/{group_id}",
            axum::routing::delete(unlink_group),
        )
}

/// A group id in a path: `<id>@g.us` or the bare id.
fn group_id(raw: &str) -> Result<ChatAddress> {
    let full = if raw.contains('@') {
        raw.to_owned()
    } else {
        format!("{raw}@g.us")
    };
    match ChatAddress::parse(&full) {
        Ok(a) if a.as_str().ends_with("@g.us") => Ok(a),
        _ => Err(ApiError::invalid_field(
            "groupId",
            format!("`{raw}` is not a group id (`<digits>@g.us` or the digits)"),
        )),
    }
}

/// A group's (or community's) subject: 1 to 100 characters once trimmed.
fn subject_of(raw: &str) -> Result<&str> {
    let s = raw.trim();
    if s.is_empty() || s.chars().count() > 100 {
        return Err(ApiError::invalid_field("subject", "1 to 100 characters"));
    }
    Ok(s)
}

/// A description: at most 2,048 characters.
fn description_ok(d: Option<&str>) -> Result<()> {
    if d.is_some_and(|d| d.chars().count() > 2048) {
        return Err(ApiError::invalid_field(
            "description",
            "at most 2,048 characters",
        ));
    }
    Ok(())
}

/// Participants named in a body: phone numbers or user JIDs, at least one.
fn people(field: &str, raw: &[String], at_least_one: bool) -> Result<Vec<ChatAddress>> {
    if at_least_one && raw.is_empty() {
        return Err(ApiError::invalid_field(
            field,
            "name at least one participant",
        ));
    }
    if raw.len() > MAX_PARTICIPANTS {
        return Err(ApiError::invalid_field(
            field,
            format!("at most {MAX_PARTICIPANTS} participants"),
        ));
    }
    let mut out: Vec<ChatAddress> = Vec::with_capacity(raw.len());
    for p in raw {
        let a = ChatAddress::parse(p).map_err(|e| ApiError::invalid_field(field, e))?;
        if a.as_str().ends_with("@g.us") {
            return Err(ApiError::invalid_field(
                field,
                format!("`{p}` is a group, not a participant"),
            ));
        }
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBody {
    /// The group's name, 1 to 100 characters.
    subject: String,
    /// Phone numbers or user JIDs to add (may be empty).
    #[serde(default)]
    participants: Vec<String>,
    /// Up to 2,048 characters.
    description: Option<String>,
    /// A community to create it in (`<id>@g.us` or the bare id); we must administer it.
    community: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    group: GroupInfo,
    /// One per participant asked for: added, or why not.
    results: Vec<ParticipantResult>,
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/groups", tag = "groups", operation_id = "createGroup", summary = "Create a group",
    params(("sessionId" = String, Path, description = "the session whose account creates (and administers) the group")),
    request_body = CreateBody,
    responses((status = 201, description = "The group, with the outcome for each participant (a 403 one refuses being added; send them the invite link)", body = Created),
        (status = 400, description = "`invalid_field`, `invalid_json`, `invalid_group_request`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Created>)> {
    let subject = subject_of(&body.subject)?;
    description_ok(body.description.as_deref())?;
    let who = people("participants", &body.participants, false)?;
    let community = body
        .community
        .as_deref()
        .map(|c| {
            group_id(c).map_err(|_| {
                ApiError::invalid_field("community", format!("`{c}` is not a community id"))
            })
        })
        .transpose()?;
    let (group, results) = state
        .sessions
        .create_group(
            &id,
            subject,
            &who,
            body.description.as_deref(),
            community.as_ref(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(Created { group, results })))
}

#[utoipa::path(get, path = "/api/sessions/{sessionId}/groups", tag = "groups", operation_id = "listGroups", summary = "The groups the account is in",
    params(("sessionId" = String, Path, description = "the session id")),
    responses((status = 200, description = "Every group, with its participants and settings", body = [GroupInfo]),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Read>,
) -> Result<Json<Vec<GroupInfo>>> {
    Ok(Json(state.sessions.groups(&id).await?))
}

#[utoipa::path(get, path = "/api/sessions/{sessionId}/groups/{groupId}", tag = "groups", operation_id = "getGroup", summary = "One group",
    params(("sessionId" = String, Path, description = "the session id"), ("groupId" = String, Path, description = "`<id>@g.us` or the bare id")),
    responses((status = 200, description = "Subject, description, owner, settings, participants (phone, LID, admin)", body = GroupInfo),
        (status = 400, description = "`invalid_field` (`groupId`)", body = crate::api::openapi::schemas::ErrorBody),
        (status = 403, description = "`not_a_participant`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Read>,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Json<GroupInfo>> {
    let g = group_id(&raw)?;
    Ok(Json(state.sessions.group(&id, &g).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateBody {
    subject: Option<String>,
    /// An empty string deletes the description.
    description: Option<String>,
    /// Only admins send messages.
    announce: Option<bool>,
    /// Only admins edit the group's info.
    locked: Option<bool>,
    /// Disappearing messages: 0 (off), 86400 (24 h), 604800 (7 days) or 7776000 (90 days).
    ephemeral: Option<u32>,
    /// Joining by link waits for an admin's approval.
    membership_approval: Option<bool>,
}

#[utoipa::path(patch, path = "/api/sessions/{sessionId}/groups/{groupId}", tag = "groups", operation_id = "updateGroup", summary = "Change a group's info or settings",
    params(("sessionId" = String, Path, description = "the session id"), ("groupId" = String, Path, description = "`<id>@g.us` or the bare id")),
    request_body = UpdateBody,
    responses((status = 200, description = "The group after the changes", body = GroupInfo),
        (status = 400, description = "`invalid_field`, `missing_field`, `invalid_group_request`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 403, description = "`not_a_participant`, `not_an_admin`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`, `group_changed`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, raw)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<GroupInfo>> {
    let g = group_id(&raw)?;
    let mut edits = Vec::new();
    if let Some(s) = &body.subject {
        edits.push(GroupEdit::Subject(subject_of(s)?.to_owned()));
    }
    if let Some(d) = body.description {
        description_ok(Some(&d))?;
        edits.push(GroupEdit::Description(Some(d).filter(|d| !d.is_empty())));
    }
    if let Some(a) = body.announce {
        edits.push(GroupEdit::Announce(a));
    }
    if let Some(l) = body.locked {
        edits.push(GroupEdit::Locked(l));
    }
    if let Some(e) = body.ephemeral {
        if ![0, 86_400, 604_800, 7_776_000].contains(&e) {
            return Err(ApiError::invalid_field(
                "ephemeral",
                "0, 86400, 604800 or 7776000 seconds",
            ));
        }
        edits.push(GroupEdit::Ephemeral(e));
    }
    if let Some(m) = body.membership_approval {
        edits.push(GroupEdit::MembershipApproval(m));
    }
    if edits.is_empty() {
        return Err(ApiError::bad_request(
            "missing_field",
            "give at least one of subject, description, announce, locked, ephemeral, membershipApproval",
        ));
    }
    Ok(Json(state.sessions.edit_group(&id, &g, &edits).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParticipantsBody {
    action: ParticipantAction,
    /// Phone numbers or user JIDs.
    participants: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Changed {
    action: ParticipantAction,
    results: Vec<ParticipantResult>,
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/groups/{groupId}/participants", tag = "groups", operation_id = "groupParticipants", summary = "Add, remove, promote or demote participants",
    params(("sessionId" = String, Path, description = "the session id"), ("groupId" = String, Path, description = "`<id>@g.us` or the bare id")),
    request_body = ParticipantsBody,
    responses((status = 200, description = "A result per participant (200, or 403 privacy, 404 not found, 406 not allowed, 409 already in)", body = Changed),
        (status = 400, description = "`invalid_field`, `invalid_json`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 403, description = "`not_a_participant`, `not_an_admin`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn participants(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, raw)): Path<(String, String)>,
    ApiJson(body): ApiJson<ParticipantsBody>,
) -> Result<Json<Changed>> {
    let g = group_id(&raw)?;
    let who = people("participants", &body.participants, true)?;
    let results = state
        .sessions
        .group_participants(&id, &g, body.action, &who)
        .await?;
    Ok(Json(Changed {
        action: body.action,
        results,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InviteLink {
    /// `https://chat.whatsapp.com/<code>`
    link: String,
    code: String,
}

impl InviteLink {
    fn of(link: String) -> Self {
        let code = link.rsplit('/').next().unwrap_or_default().to_owned();
        Self { link, code }
    }
}

#[utoipa::path(get, path = "/api/sessions/{sessionId}/groups/{groupId}/invite-link", tag = "groups", operation_id = "groupInviteLink", summary = "The group's invite link",
    params(("sessionId" = String, Path, description = "the session id (an admin of the group)"), ("groupId" = String, Path, description = "`<id>@g.us` or the bare id")),
    responses((status = 400, description = "`invalid_field` (`groupId`, `communityId`)", body = crate::api::openapi::schemas::ErrorBody),
        (status = 200, description = "The link and its code", body = InviteLink),
        (status = 403, description = "`not_a_participant`, `not_an_admin`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn invite_link(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Read>,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Json<InviteLink>> {
    let g = group_id(&raw)?;
    Ok(Json(InviteLink::of(
        state.sessions.invite_link(&id, &g, false).await?,
    )))
}

#[utoipa::path(delete, path = "/api/sessions/{sessionId}/groups/{groupId}/invite-link", tag = "groups", operation_id = "revokeGroupInviteLink", summary = "Revoke the invite link",
    params(("sessionId" = String, Path, description = "the session id (an admin of the group)"), ("groupId" = String, Path, description = "`<id>@g.us` or the bare id")),
    responses((status = 400, description = "`invalid_field` (`groupId`, `communityId`)", body = crate::api::openapi::schemas::ErrorBody),
        (status = 200, description = "The old link no longer works; this is the new one", body = InviteLink),
        (status = 403, description = "`not_a_participant`, `not_an_admin`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn revoke_invite_link(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Json<InviteLink>> {
    let g = group_id(&raw)?;
    Ok(Json(InviteLink::of(
        state.sessions.invite_link(&id, &g, true).await?,
    )))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinBody {
    /// The invite code, or the whole link (`https://chat.whatsapp.com/<code>`).
    code: String,
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/groups/join", tag = "groups", operation_id = "joinGroup", summary = "Join a group by invite",
    params(("sessionId" = String, Path, description = "the session id")),
    request_body = JoinBody,
    responses((status = 200, description = "Joined, or pending an admin's approval", body = Joined),
        (status = 400, description = "`invalid_field` (`code`)", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `invite_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn join(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    ApiJson(body): ApiJson<JoinBody>,
) -> Result<Json<Joined>> {
    let code = body.code.trim();
    let bare = code.rsplit('/').next().unwrap_or_default();
    if bare.is_empty() || bare.len() > 64 || !bare.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::invalid_field(
            "code",
            "an invite code (letters and digits) or a https://chat.whatsapp.com/ link",
        ));
    }
    Ok(Json(state.sessions.join_group(&id, bare).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Left {
    group_id: String,
    left: bool,
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/groups/{groupId}/leave", tag = "groups", operation_id = "leaveGroup", summary = "Leave a group",
    params(("sessionId" = String, Path, description = "the session id"), ("groupId" = String, Path, description = "`<id>@g.us` or the bare id")),
    responses((status = 400, description = "`invalid_field` (`groupId`, `communityId`)", body = crate::api::openapi::schemas::ErrorBody),
        (status = 200, description = "Left", body = Left),
        (status = 403, description = "`not_a_participant`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn leave(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Json<Left>> {
    let g = group_id(&raw)?;
    state.sessions.leave_group(&id, &g).await?;
    Ok(Json(Left {
        group_id: g.as_str().to_owned(),
        left: true,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommunityBody {
    /// The community's name, 1 to 100 characters.
    subject: String,
    /// Up to 2,048 characters.
    description: Option<String>,
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/communities", tag = "groups", operation_id = "createCommunity", summary = "Create a community",
    params(("sessionId" = String, Path, description = "the session whose account creates (and administers) it")),
    request_body = CommunityBody,
    responses((status = 201, description = "The community (`community: true`); WhatsApp makes its announcement group and a general chat with it", body = GroupInfo),
        (status = 400, description = "`invalid_field`, `invalid_body`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn create_community(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    ApiJson(body): ApiJson<CommunityBody>,
) -> Result<(StatusCode, Json<GroupInfo>)> {
    let subject = subject_of(&body.subject)?;
    description_ok(body.description.as_deref())?;
    let c = state
        .sessions
        .create_community(&id, subject, body.description.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[utoipa::path(get, path = "/api/sessions/{sessionId}/communities", tag = "groups", operation_id = "listCommunities", summary = "The communities the account is in",
    params(("sessionId" = String, Path, description = "the session id")),
    responses((status = 200, description = "Every community", body = [GroupInfo]),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn communities(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Read>,
) -> Result<Json<Vec<GroupInfo>>> {
    Ok(Json(state.sessions.communities(&id).await?))
}

#[utoipa::path(get, path = "/api/sessions/{sessionId}/communities/{communityId}/groups", tag = "groups", operation_id = "communityGroups", summary = "A community's groups",
    params(("sessionId" = String, Path, description = "the session id"), ("communityId" = String, Path, description = "`<id>@g.us` or the bare id")),
    responses((status = 200, description = "The community's groups the account is in, its announcement group first", body = [GroupInfo]),
        (status = 400, description = "`invalid_field`, `invalid_group_request` (a group, not a community)", body = crate::api::openapi::schemas::ErrorBody),
        (status = 403, description = "`not_a_participant`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn community_groups(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Read>,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Json<Vec<GroupInfo>>> {
    let c = group_id(&raw)?;
    Ok(Json(state.sessions.community_groups(&id, &c).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkBody {
    /// Groups to link (`<id>@g.us` or bare ids); we must administer each.
    groups: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Linked {
    results: Vec<LinkResult>,
}

#[utoipa::path(post, path = "/api/sessions/{sessionId}/communities/{communityId}/groups", tag = "groups", operation_id = "linkGroups", summary = "Link groups to a community",
    params(("sessionId" = String, Path, description = "the session id (an admin of the community)"), ("communityId" = String, Path, description = "`<id>@g.us` or the bare id")),
    request_body = LinkBody,
    responses((status = 200, description = "A result per group (200, or 401 not its admin, 404 no such group, 409 already in a community)", body = Linked),
        (status = 400, description = "`invalid_field`, `invalid_body`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 403, description = "`not_a_participant`, `not_an_admin`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn link_groups(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, raw)): Path<(String, String)>,
    ApiJson(body): ApiJson<LinkBody>,
) -> Result<Json<Linked>> {
    let c = group_id(&raw)?;
    if body.groups.is_empty() || body.groups.len() > 100 {
        return Err(ApiError::invalid_field("groups", "name 1 to 100 groups"));
    }
    let groups = body
        .groups
        .iter()
        .map(|g| {
            group_id(g)
                .map_err(|_| ApiError::invalid_field("groups", format!("`{g}` is not a group id")))
        })
        .collect::<Result<Vec<_>>>()?;
    let results = state.sessions.link_groups(&id, &c, &groups, true).await?;
    Ok(Json(Linked { results }))
}

#[utoipa::path(delete, path = "/api/sessions/{sessionId}/communities/{communityId}/groups/{groupId}", tag = "groups", operation_id = "unlinkGroup", summary = "Unlink a group from a community",
    params(("sessionId" = String, Path, description = "the session id (an admin of the community)"), ("communityId" = String, Path, description = "`<id>@g.us` or the bare id"), ("groupId" = String, Path, description = "`<id>@g.us` or the bare id")),
    responses((status = 400, description = "`invalid_field` (`groupId`, `communityId`)", body = crate::api::openapi::schemas::ErrorBody),
        (status = 200, description = "The outcome (406: not linked there, or the announcement group)", body = Linked),
        (status = 403, description = "`not_a_participant`, `not_an_admin`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn unlink_group(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, community, group)): Path<(String, String, String)>,
) -> Result<Json<Linked>> {
    let c = group_id(&community)?;
    let g = group_id(&group)?;
    let results = state.sessions.link_groups(&id, &c, &[g], false).await?;
    Ok(Json(Linked { results }))
}

/// The largest group picture accepted (WhatsApp scales pictures down to 640 px anyway).
const MAX_PICTURE_BYTES: usize = 2 * 1024 * 1024;

#[utoipa::path(get, path = "/api/sessions/{sessionId}/groups/{groupId}/picture", tag = "groups", operation_id = "groupPicture", summary = "A group's picture",
    params(("sessionId" = String, Path, description = "the session id"), ("groupId" = String, Path, description = "`<id>@g.us` or the bare id")),
    responses((status = 200, description = "Where the picture is (WhatsApp's URL, which expires; ask again then)", body = crate::whatsapp::Picture),
        (status = 400, description = "`invalid_field` (`groupId`)", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `picture_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn picture(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Read>,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Json<crate::whatsapp::Picture>> {
    let g = group_id(&raw)?;
    state
        .sessions
        .group_picture(&id, &g)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "picture_not_found",
                format!("group `{raw}` has no picture"),
            )
        })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PictureBody {
    /// The picture, a JPEG in base64, at most 2 MiB.
    image: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PictureSet {
    /// The new picture's id; absent once removed.
    id: Option<String>,
}

#[utoipa::path(put, path = "/api/sessions/{sessionId}/groups/{groupId}/picture", tag = "groups", operation_id = "setGroupPicture", summary = "Set a group's picture",
    params(("sessionId" = String, Path, description = "the session id"), ("groupId" = String, Path, description = "`<id>@g.us` or the bare id")),
    request_body = PictureBody,
    responses((status = 200, description = "Set; members see the new picture", body = PictureSet),
        (status = 400, description = "`invalid_field` (`image`: not base64, not a JPEG, too large; `groupId`), `invalid_body`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 403, description = "`not_a_participant`, `not_an_admin` (a locked group)", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn set_picture(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, raw)): Path<(String, String)>,
    ApiJson(body): ApiJson<PictureBody>,
) -> Result<Json<PictureSet>> {
    use base64::Engine as _;
    let g = group_id(&raw)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.image.trim().as_bytes())
        .map_err(|e| ApiError::invalid_field("image", format!("not base64: {e}")))?;
    if bytes.len() > MAX_PICTURE_BYTES {
        return Err(ApiError::invalid_field("image", "at most 2 MiB"));
    }
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Err(ApiError::invalid_field("image", "must be a JPEG"));
    }
    let id = state
        .sessions
        .set_group_picture(&id, &g, Some(bytes))
        .await?;
    Ok(Json(PictureSet { id }))
}

#[utoipa::path(delete, path = "/api/sessions/{sessionId}/groups/{groupId}/picture", tag = "groups", operation_id = "removeGroupPicture", summary = "Remove a group's picture",
    params(("sessionId" = String, Path, description = "the session id"), ("groupId" = String, Path, description = "`<id>@g.us` or the bare id")),
    responses((status = 200, description = "Removed", body = PictureSet),
        (status = 400, description = "`invalid_field` (`groupId`)", body = crate::api::openapi::schemas::ErrorBody),
        (status = 403, description = "`not_a_participant`, `not_an_admin` (a locked group)", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`, `group_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 502, description = "`whatsapp_error`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn remove_picture(
    State(state): State<AppState>,
    SessionPath(id, _): SessionPath<needs::Send>,
    Path((_, raw)): Path<(String, String)>,
) -> Result<Json<PictureSet>> {
    let g = group_id(&raw)?;
    state.sessions.set_group_picture(&id, &g, None).await?;
    Ok(Json(PictureSet { id: None }))
}
