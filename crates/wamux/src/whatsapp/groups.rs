//! Groups through whatsapp-rust's group client: create, read, change, invite, join, leave;
//! and what WhatsApp's group notifications say, in our terms.

use serde::Serialize;
use whatsapp_rust::{
    GroupCreateOptions, GroupDescription, GroupError, GroupMetadata, GroupSubject, Jid,
    JoinGroupResult, MembershipApprovalMode, ParticipantChangeResponse, PreviousDescription,
};

use super::WaSession;
use crate::model::ChatAddress;

/// A group as WhatsApp describes it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupInfo {
    /// The group's JID, `<id>@g.us`.
    pub id: String,
    pub subject: String,
    pub description: Option<String>,
    /// Who created it (phone-number JID where known, else LID).
    pub owner: Option<String>,
    /// Unix seconds.
    pub created_at: Option<i64>,
    /// How WhatsApp names its participants: `pn` (phone numbers) or `lid`.
    pub addressing: String,
    pub settings: GroupSettings,
    pub participants: Vec<GroupParticipant>,
    pub size: usize,
    /// A community (the parent of linked groups).
    pub community: bool,
    /// The community it belongs to.
    pub parent: Option<String>,
    /// A community's announcement group.
    pub announcement_group: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupSettings {
    /// Only admins send messages.
    pub announce: bool,
    /// Only admins edit the group's info.
    pub locked: bool,
    /// Disappearing messages after this many seconds; 0: off.
    pub ephemeral: u32,
    /// Joining by link waits for an admin's approval.
    pub membership_approval: bool,
    /// Members (not only admins) may add others.
    pub members_can_add: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupParticipant {
    /// Digits of the phone number, where known.
    pub phone: Option<String>,
    /// Phone-number JID, where known.
    pub jid: Option<String>,
    pub lid: Option<String>,
    pub admin: bool,
    pub super_admin: bool,
}

/// One participant's outcome of an add, remove, promote or demote.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantResult {
    /// The participant as WhatsApp named it (phone-number JID or LID).
    pub participant: String,
    /// Digits of the phone number, where known.
    pub phone: Option<String>,
    /// WhatsApp's status: 200, or 403 (their privacy settings refuse being added: send
    /// them the invite link), 404 (not on WhatsApp, or not in the group), 406 (the
    /// creator cannot be removed or demoted), 409 (already in the group).
    pub status: u16,
    pub ok: bool,
    /// What went wrong, as a stable code: `privacy`, `not_found`, `not_allowed`,
    /// `already_participant`, `error`.
    pub error: Option<&'static str>,
    /// For a 403 on add: an invite code WhatsApp issued for them.
    pub invite_code: Option<String>,
}

/// What a participants request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParticipantAction {
    Add,
    Remove,
    Promote,
    Demote,
}

impl ParticipantAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ParticipantAction::Add => "add",
            ParticipantAction::Remove => "remove",
            ParticipantAction::Promote => "promote",
            ParticipantAction::Demote => "demote",
        }
    }
}

/// A change to a group's info or settings.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupEdit {
    Subject(String),
    /// `None`: delete the description.
    Description(Option<String>),
    Announce(bool),
    Locked(bool),
    Ephemeral(u32),
    MembershipApproval(bool),
}

/// How a join by invite went.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    pub group_id: String,
    /// `joined`, or `pending`: an admin must approve the request first.
    pub status: &'static str,
}

/// Why WhatsApp refused a group request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GroupRefusal {
    #[error("no such group")]
    NotFound,
    #[error("this account is not a participant of the group")]
    NotParticipant,
    #[error("only an admin of the group may do that")]
    NotAdmin,
    #[error("no group has that invite code (or it was revoked)")]
    BadInvite,
    #[error("{0}")]
    Invalid(String),
    #[error("the description changed since it was read; read the group again and retry")]
    Conflict,
    /// WhatsApp did not answer, or answered with something else.
    #[error("{0}")]
    Other(String),
}

fn refusal(e: GroupError) -> GroupRefusal {
    use whatsapp_rust::request::IqError;
    match e {
        GroupError::Iq(IqError::ServerError { code, text, .. }) => match code {
            404 => GroupRefusal::NotFound,
            403 => GroupRefusal::NotParticipant,
            401 => GroupRefusal::NotAdmin,
            406 => GroupRefusal::BadInvite,
            400 => GroupRefusal::Invalid(format!("WhatsApp refused the request: {text}")),
            409 => GroupRefusal::Conflict,
            _ => GroupRefusal::Other(format!("WhatsApp answered {code} {text}")),
        },
        GroupError::InvalidRequest(m) => GroupRefusal::Invalid(m),
        GroupError::DescriptionConflict => GroupRefusal::Conflict,
        other => GroupRefusal::Other(other.to_string()),
    }
}

fn community_refusal(e: whatsapp_rust::CommunityError) -> GroupRefusal {
    match e {
        whatsapp_rust::CommunityError::Group(g) => refusal(g),
        whatsapp_rust::CommunityError::Iq(i) => refusal(GroupError::Iq(i)),
        other => GroupRefusal::Other(other.to_string()),
    }
}

/// One group's outcome of a link to (or unlink from) a community.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkResult {
    pub group_id: String,
    /// 200, or 401 (not an admin of that group), 404 (no such group), 406 (not linked
    /// there, or the announcement group), 409 (already in a community).
    pub status: u16,
    pub ok: bool,
}

fn digits(j: &Jid) -> String {
    j.user_base().to_owned()
}

fn info(m: GroupMetadata) -> GroupInfo {
    let participants: Vec<GroupParticipant> = m
        .participants
        .iter()
        .map(|p| {
            let (pn, lid) = if p.jid.is_lid() {
                (p.phone_number.clone(), Some(p.jid.clone()))
            } else {
                (Some(p.jid.clone()), p.lid.clone())
            };
            GroupParticipant {
                phone: pn.as_ref().map(digits),
                jid: pn.as_ref().map(Jid::to_non_ad_string),
                lid: lid.as_ref().map(Jid::to_non_ad_string),
                admin: p.is_admin(),
                super_admin: p.is_super_admin(),
            }
        })
        .collect();
    let owner = m
        .creator_pn
        .as_ref()
        .or(m.creator.as_ref())
        .map(Jid::to_non_ad_string);
    GroupInfo {
        id: m.id.to_non_ad_string(),
        subject: m.subject,
        description: m.description,
        owner,
        created_at: m.creation_time.map(|t| t as i64),
        addressing: m.addressing_mode.as_str().to_owned(),
        settings: GroupSettings {
            announce: m.is_announcement,
            locked: m.is_locked,
            ephemeral: m.ephemeral.and_then(|e| e.expiration).unwrap_or(0),
            membership_approval: m.membership_approval,
            members_can_add: !matches!(
                m.member_add_mode,
                Some(whatsapp_rust::MemberAddMode::AdminAdd)
            ),
        },
        size: m.size.map_or(participants.len(), |s| s as usize),
        participants,
        community: m.is_parent_group,
        parent: m.parent_group_jid.as_ref().map(Jid::to_non_ad_string),
        announcement_group: m.is_default_sub_group,
    }
}

fn result(r: ParticipantChangeResponse) -> ParticipantResult {
    let status = r
        .error
        .as_deref()
        .and_then(|e| e.parse::<u16>().ok())
        .unwrap_or(if r.error.is_some() { 500 } else { 200 });
    let pn = if r.jid.is_lid() {
        r.phone_number.clone()
    } else {
        Some(r.jid.clone())
    };
    ParticipantResult {
        participant: r.jid.to_non_ad_string(),
        phone: pn.as_ref().map(digits),
        ok: status == 200,
        error: match status {
            200 => None,
            403 => Some("privacy"),
            404 => Some("not_found"),
            406 => Some("not_allowed"),
            409 => Some("already_participant"),
            _ => Some("error"),
        },
        invite_code: r.add_request.map(|a| a.code),
        status,
    }
}

fn group_jid(group: &ChatAddress) -> Result<Jid, GroupRefusal> {
    group
        .as_str()
        .parse()
        .map_err(|e| GroupRefusal::Invalid(format!("invalid group id {}: {e:?}", group.as_str())))
}

fn user_jids(users: &[ChatAddress]) -> Result<Vec<Jid>, GroupRefusal> {
    users
        .iter()
        .map(|u| {
            u.as_str().parse().map_err(|e| {
                GroupRefusal::Invalid(format!("invalid participant {}: {e:?}", u.as_str()))
            })
        })
        .collect()
}

impl WaSession {
    /// Creates a group with us as its super admin (in `community`, when given); the
    /// outcome for each participant.
    pub async fn create_group(
        &self,
        subject: &str,
        participants: &[ChatAddress],
        description: Option<&str>,
        community: Option<&ChatAddress>,
    ) -> Result<(GroupInfo, Vec<ParticipantResult>), GroupRefusal> {
        let parent = community.map(group_jid).transpose()?;
        let subject =
            GroupSubject::new(subject).map_err(|e| GroupRefusal::Invalid(e.to_string()))?;
        let description = description
            .map(GroupDescription::new)
            .transpose()
            .map_err(|e| GroupRefusal::Invalid(e.to_string()))?;
        let asked = user_jids(participants)?;
        // Created with us alone, then the others added: WhatsApp answers an add with a
        // result per participant, which the create answer does not carry in a form the
        // client reads.
        let options = GroupCreateOptions::builder()
            .subject(subject.into_string())
            .maybe_description(description)
            .maybe_linked_parent(parent)
            .build::<GroupCreateOptions>();
        let created = self
            .client
            .groups()
            .create_group(options)
            .await
            .map_err(refusal)?;
        let jid = created.metadata.id.clone();
        let results = if asked.is_empty() {
            Vec::new()
        } else {
            self.client
                .groups()
                .add_participants(jid.clone(), &asked)
                .await
                .map_err(refusal)?
                .into_iter()
                .map(result)
                .collect()
        };
        let group = if asked.is_empty() {
            info(created.metadata)
        } else {
            self.client
                .groups()
                .get_metadata(&jid)
                .await
                .map(info)
                .map_err(refusal)?
        };
        Ok((group, results))
    }

    /// Creates a community (with its announcement group and a general chat).
    pub async fn create_community(
        &self,
        subject: &str,
        description: Option<&str>,
    ) -> Result<GroupInfo, GroupRefusal> {
        GroupSubject::new(subject).map_err(|e| GroupRefusal::Invalid(e.to_string()))?;
        let mut options = whatsapp_rust::CreateCommunityOptions::new(subject);
        options.description = description.map(str::to_owned);
        let created = self
            .client
            .community()
            .create(options)
            .await
            .map_err(community_refusal)?;
        Ok(info(created.metadata))
    }

    /// Links groups to a community (or, `link: false`, unlinks them): each group's outcome.
    pub async fn link_groups(
        &self,
        community: &ChatAddress,
        groups: &[ChatAddress],
        link: bool,
    ) -> Result<Vec<LinkResult>, GroupRefusal> {
        let parent = group_jid(community)?;
        let jids = groups
            .iter()
            .map(group_jid)
            .collect::<Result<Vec<_>, _>>()?;
        let c = self.client.community();
        let (done, failed) = if link {
            let r = c
                .link_subgroups(parent, &jids)
                .await
                .map_err(community_refusal)?;
            (r.linked_jids, r.failed_groups)
        } else {
            let r = c
                .unlink_subgroups(parent, &jids, false)
                .await
                .map_err(community_refusal)?;
            (r.unlinked_jids, r.failed_groups)
        };
        let mut out: Vec<LinkResult> = done
            .into_iter()
            .map(|j| LinkResult {
                group_id: j.to_non_ad_string(),
                status: 200,
                ok: true,
            })
            .collect();
        out.extend(failed.into_iter().map(|(j, code)| LinkResult {
            group_id: j.to_non_ad_string(),
            status: u16::try_from(code).unwrap_or(500),
            ok: false,
        }));
        Ok(out)
    }

    /// The groups this account is in.
    pub async fn groups(&self) -> Result<Vec<GroupInfo>, GroupRefusal> {
        let all = self
            .client
            .groups()
            .get_participating()
            .await
            .map_err(refusal)?;
        let mut list: Vec<GroupInfo> = all.into_values().map(info).collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(list)
    }

    /// One group, as WhatsApp has it now.
    pub async fn group(&self, group: &ChatAddress) -> Result<GroupInfo, GroupRefusal> {
        let jid = group_jid(group)?;
        self.client
            .groups()
            .get_metadata(&jid)
            .await
            .map(info)
            .map_err(refusal)
    }

    /// Adds, removes, promotes or demotes participants.
    pub async fn group_participants(
        &self,
        group: &ChatAddress,
        action: ParticipantAction,
        who: &[ChatAddress],
    ) -> Result<Vec<ParticipantResult>, GroupRefusal> {
        let jid = group_jid(group)?;
        let who = user_jids(who)?;
        let g = self.client.groups();
        let out = match action {
            ParticipantAction::Add => g.add_participants(jid, &who).await,
            ParticipantAction::Remove => g.remove_participants(jid, &who).await,
            ParticipantAction::Promote => g.promote_participants(jid, &who).await,
            ParticipantAction::Demote => g.demote_participants(jid, &who).await,
        }
        .map_err(refusal)?;
        Ok(out.into_iter().map(result).collect())
    }

    /// Changes the group's info or one of its settings.
    pub async fn edit_group(
        &self,
        group: &ChatAddress,
        edit: &GroupEdit,
    ) -> Result<(), GroupRefusal> {
        let jid = group_jid(group)?;
        let g = self.client.groups();
        let invalid = |e: anyhow::Error| GroupRefusal::Invalid(e.to_string());
        match edit {
            GroupEdit::Subject(s) => {
                g.set_subject(jid, GroupSubject::new(s.as_str()).map_err(invalid)?)
                    .await
            }
            GroupEdit::Description(d) => {
                let d = d
                    .as_deref()
                    .map(GroupDescription::new)
                    .transpose()
                    .map_err(invalid)?;
                g.set_description(jid, d, PreviousDescription::Resolve)
                    .await
            }
            GroupEdit::Announce(on) => g.set_announce(jid, *on).await,
            GroupEdit::Locked(on) => g.set_locked(jid, *on).await,
            GroupEdit::Ephemeral(secs) => g.set_ephemeral(jid, *secs).await,
            GroupEdit::MembershipApproval(on) => {
                g.set_membership_approval(
                    jid,
                    if *on {
                        MembershipApprovalMode::On
                    } else {
                        MembershipApprovalMode::Off
                    },
                )
                .await
            }
        }
        .map_err(refusal)
    }

    /// The group's invite link; `reset` revokes the current one and makes a new one.
    pub async fn invite_link(
        &self,
        group: &ChatAddress,
        reset: bool,
    ) -> Result<String, GroupRefusal> {
        let jid = group_jid(group)?;
        self.client
            .groups()
            .get_invite_link(jid, reset)
            .await
            .map_err(refusal)
    }

    /// Joins the group an invite code (or link) opens.
    pub async fn join_group(&self, code: &str) -> Result<Joined, GroupRefusal> {
        let out = self
            .client
            .groups()
            .join_with_invite_code(code)
            .await
            .map_err(refusal)?;
        Ok(match out {
            JoinGroupResult::Joined(j) => Joined {
                group_id: j.to_non_ad_string(),
                status: "joined",
            },
            JoinGroupResult::PendingApproval(j) => Joined {
                group_id: j.to_non_ad_string(),
                status: "pending",
            },
        })
    }

    /// The group's picture (`None`: it has none).
    pub async fn group_picture(
        &self,
        group: &ChatAddress,
    ) -> Result<Option<super::Picture>, GroupRefusal> {
        let jid = group_jid(group)?;
        let pic = self
            .client
            .contacts()
            .get_profile_picture(&jid, false)
            .await
            .map_err(|e| GroupRefusal::Other(e.to_string()))?;
        Ok(pic.map(|p| super::Picture {
            id: p.id,
            url: p.url,
        }))
    }

    /// Sets the group's picture (a JPEG), or removes it (`None`); the new picture's id.
    pub async fn set_group_picture(
        &self,
        group: &ChatAddress,
        jpeg: Option<Vec<u8>>,
    ) -> Result<Option<String>, GroupRefusal> {
        let jid = group_jid(group)?;
        let g = self.client.groups();
        let r = match jpeg {
            Some(bytes) => g.set_profile_picture(jid, bytes).await,
            None => g.remove_profile_picture(jid).await,
        }
        .map_err(refusal)?;
        Ok(Some(r.id).filter(|id| !id.is_empty()))
    }

    /// Leaves the group.
    pub async fn leave_group(&self, group: &ChatAddress) -> Result<(), GroupRefusal> {
        let jid = group_jid(group)?;
        self.client.groups().leave(jid).await.map_err(refusal)
    }
}

/// What a group notification says changed.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupNews {
    /// We were added to a group, or one we created came into being.
    Joined { subject: Option<String> },
    /// Participants were added, removed, promoted or demoted.
    Participants {
        action: &'static str,
        participants: Vec<String>,
    },
    /// Its info or a setting changed: `field` and its new value.
    Updated {
        field: &'static str,
        value: serde_json::Value,
    },
}

/// A group notification, in our terms.
pub(super) fn news(u: &wacore::types::events::GroupUpdate) -> Option<super::WaEvent> {
    use serde_json::json;
    use wacore::stanza::groups::GroupNotificationAction as A;
    let people = |ps: &[wacore::stanza::groups::GroupParticipantInfo]| -> Vec<String> {
        ps.iter()
            .map(|p| {
                if p.jid.is_lid() {
                    p.phone_number.as_ref().unwrap_or(&p.jid).to_non_ad_string()
                } else {
                    p.jid.to_non_ad_string()
                }
            })
            .collect()
    };
    let news = match &u.action {
        A::Create { raw } => GroupNews::Joined {
            subject: raw
                .children()
                .and_then(|c| c.iter().find(|n| n.tag == "group"))
                .and_then(|g| g.attrs.get("subject"))
                .map(|s| s.to_string()),
        },
        A::Add { participants, .. } => GroupNews::Participants {
            action: "add",
            participants: people(participants),
        },
        A::Remove { participants, .. } => GroupNews::Participants {
            action: "remove",
            participants: people(participants),
        },
        A::Promote { participants } => GroupNews::Participants {
            action: "promote",
            participants: people(participants),
        },
        A::Demote { participants } => GroupNews::Participants {
            action: "demote",
            participants: people(participants),
        },
        A::Subject { subject, .. } => GroupNews::Updated {
            field: "subject",
            value: json!(subject),
        },
        A::Description { description, .. } => GroupNews::Updated {
            field: "description",
            value: json!(description),
        },
        A::Locked { .. } => GroupNews::Updated {
            field: "locked",
            value: json!(true),
        },
        A::Unlocked => GroupNews::Updated {
            field: "locked",
            value: json!(false),
        },
        A::Announce => GroupNews::Updated {
            field: "announce",
            value: json!(true),
        },
        A::NotAnnounce => GroupNews::Updated {
            field: "announce",
            value: json!(false),
        },
        A::Ephemeral { expiration, .. } => GroupNews::Updated {
            field: "ephemeral",
            value: json!(expiration),
        },
        A::MembershipApprovalMode { enabled } => GroupNews::Updated {
            field: "membershipApproval",
            value: json!(enabled),
        },
        A::RevokeInvite => GroupNews::Updated {
            field: "inviteLink",
            value: json!("revoked"),
        },
        _ => return None,
    };
    let by = u
        .participant_pn
        .as_ref()
        .or(u.participant.as_ref())
        .map(Jid::to_non_ad_string);
    Some(super::WaEvent::Group {
        group: u.group_jid.to_non_ad_string(),
        by,
        news,
        timestamp: u.timestamp.timestamp(),
    })
}
