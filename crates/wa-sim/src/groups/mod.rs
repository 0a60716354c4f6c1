//! Groups as WhatsApp's server runs them: the `w:g2` IQs a device sends (create, query,
//! participants, subject, description, settings, invite links, leave), the `w:gp2`
//! notifications every member's devices get when something changes, and the fan-out of
//! group messages: one `skmsg` (encrypted once, under the sender's sender key) to every
//! device of every participant, with the pairwise-encrypted sender-key distribution for
//! the devices the sender named.
//!
//! The rules live here once; the IQ handler ([`iq`]) and the admin API call the same
//! functions, so a phone creating a group through the admin API and a linked device
//! creating one over the socket get the same group, the same per-participant results and
//! the same notifications. Phones take part in groups through [`phone`].

pub mod iq;
pub mod phone;

use std::collections::BTreeSet;

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, Server};

use crate::conn::{child, children, jid_attr};
use crate::hub::{Core, new_id, t_now};
use crate::phone::attr;
use crate::state::{Addressing, Group, GroupDescription, GroupMember, Role, now_secs};

/// WhatsApp's limits: a subject of at most 100 characters, a description of 2,048,
/// 1,024 participants in a group.
pub const SUBJECT_MAX: usize = 100;
pub const DESCRIPTION_MAX: usize = 2048;
pub const SIZE_MAX: usize = 1024;

/// Why a group request was refused, with the IQ error WhatsApp answers it with.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum GroupError {
    #[error("no group {0}")]
    NotFound(String),
    #[error("{0} is not a participant of group {1}")]
    NotParticipant(String, String),
    #[error("only an admin of group {0} may do that")]
    NotAdmin(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("no group has the invite code {0}")]
    BadInvite(String),
    #[error("group {0} is full")]
    Full(String),
}

impl GroupError {
    /// The `<error code text>` of the IQ answer.
    pub fn iq_error(&self) -> (u16, &'static str) {
        match self {
            GroupError::NotFound(_) => (404, "item-not-found"),
            GroupError::NotParticipant(..) => (403, "forbidden"),
            GroupError::NotAdmin(_) => (401, "not-authorized"),
            GroupError::BadRequest(_) => (400, "bad-request"),
            GroupError::BadInvite(_) => (406, "not-acceptable"),
            GroupError::Full(_) => (419, "resource-limit"),
        }
    }
}

pub type Result<T> = std::result::Result<T, GroupError>;

/// One participant's outcome of an add, remove, promote or demote, as WhatsApp reports
/// each: 200, or 403 (their privacy settings refuse adds: an invite is the way), 404
/// (not on WhatsApp, or not in the group), 409 (already in it).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Outcome {
    /// The account's phone number, or the user part given when there is no such account.
    pub phone: String,
    pub status: u16,
    /// For a 403 on add: the invite (code, expiry) a direct add was refused for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invite: Option<(String, u64)>,
}

/// What a participants request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Add,
    Remove,
    Promote,
    Demote,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "add" => Action::Add,
            "remove" => Action::Remove,
            "promote" => Action::Promote,
            "demote" => Action::Demote,
            _ => return None,
        })
    }

    pub fn tag(self) -> &'static str {
        match self {
            Action::Add => "add",
            Action::Remove => "remove",
            Action::Promote => "promote",
            Action::Demote => "demote",
        }
    }
}

/// How a group is made (the rest of its settings start as WhatsApp's defaults).
#[derive(Debug, Clone)]
pub struct NewGroup {
    pub subject: String,
    pub participants: Vec<Jid>,
    pub addressing: Addressing,
    pub description: Option<String>,
    pub community: bool,
    pub parent: Option<String>,
    pub ephemeral: u32,
    pub membership_approval: bool,
    /// For a community: make its general chat too.
    pub general_chat: bool,
}

/// A group id as WhatsApp makes them now: `120363` and twelve more digits.
fn new_group_id(core: &Core) -> String {
    loop {
        let id = format!("120363{:012}", rand::random_range(0..1_000_000_000_000u64));
        if !core.snap.groups.contains_key(&id) {
            return id;
        }
    }
}

/// The group id of a JID or bare id (`<id>@g.us` or `<id>`).
pub fn group_id_of(s: &str) -> String {
    s.split('@').next().unwrap_or_default().to_string()
}

pub fn group<'a>(core: &'a Core, id: &str) -> Result<&'a Group> {
    core.snap
        .groups
        .get(id)
        .ok_or_else(|| GroupError::NotFound(id.to_string()))
}

fn group_mut<'a>(core: &'a mut Core, id: &str) -> Result<&'a mut Group> {
    core.changes.group(id);
    core.snap
        .groups
        .get_mut(id)
        .ok_or_else(|| GroupError::NotFound(id.to_string()))
}

fn member_of(core: &Core, id: &str, phone: &str) -> Result<()> {
    let g = group(core, id)?;
    if g.member(phone).is_none() {
        return Err(GroupError::NotParticipant(phone.to_string(), g.jid()));
    }
    Ok(())
}

fn admin_of(core: &Core, id: &str, phone: &str) -> Result<()> {
    member_of(core, id, phone)?;
    if !group(core, id)?.is_admin(phone) {
        return Err(GroupError::NotAdmin(group(core, id)?.jid()));
    }
    Ok(())
}

/// Creates a group with `creator` as its super admin and adds whoever may be added.
pub fn create(core: &mut Core, creator: &str, new: NewGroup) -> Result<(Group, Vec<Outcome>)> {
    let subject = new.subject.trim().to_string();
    if subject.is_empty() || subject.chars().count() > SUBJECT_MAX {
        return Err(GroupError::BadRequest(format!(
            "a group's subject has 1 to {SUBJECT_MAX} characters"
        )));
    }
    if new
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > DESCRIPTION_MAX)
    {
        return Err(GroupError::BadRequest(format!(
            "a group's description has at most {DESCRIPTION_MAX} characters"
        )));
    }
    if new.participants.len() + 1 > SIZE_MAX {
        return Err(GroupError::Full(subject));
    }
    if let Some(parent) = &new.parent {
        admin_of(core, parent, creator)?;
        if !group(core, parent)?.community {
            return Err(GroupError::BadRequest(format!(
                "{parent} is not a community"
            )));
        }
    }
    let now = now_secs();
    let id = new_group_id(core);
    let mut g = Group {
        id: id.clone(),
        subject,
        subject_owner: creator.to_string(),
        subject_time: now,
        description: new
            .description
            .filter(|d| !d.is_empty())
            .map(|text| GroupDescription {
                id: new_id(),
                text,
                owner: creator.to_string(),
                time: now,
            }),
        creator: creator.to_string(),
        created_at: now,
        participants: vec![GroupMember {
            phone: creator.to_string(),
            role: Role::Superadmin,
            joined_at: now,
        }],
        announce: false,
        locked: false,
        ephemeral: new.ephemeral,
        membership_approval: new.membership_approval,
        members_may_add: true,
        invite_code: None,
        addressing: new.addressing,
        community: new.community,
        parent: new.parent.clone(),
        announcement_group: false,
        general_chat: false,
        picture: None,
    };
    let mut outcomes = Vec::new();
    let mut added = Vec::new();
    for jid in &new.participants {
        let outcome = admit(core, &g, jid);
        if outcome.status == 200 {
            g.participants.push(GroupMember {
                phone: outcome.phone.clone(),
                role: Role::Member,
                joined_at: now,
            });
            added.push(outcome.phone.clone());
        }
        outcomes.push(outcome);
    }
    core.snap.groups.insert(id.clone(), g.clone());
    core.changes.group(&id);
    if new.community {
        // A community comes with its announcement group, which every member is in, and
        // (when asked) a general chat.
        let mut linked = vec![(true, false)];
        if new.general_chat {
            linked.push((false, true));
        }
        for (announcement, general) in linked {
            let sub_id = new_group_id(core);
            let mut sub = g.clone();
            sub.id = sub_id.clone();
            sub.community = false;
            sub.parent = Some(id.clone());
            sub.announcement_group = announcement;
            sub.general_chat = general;
            sub.announce = announcement;
            sub.description = None;
            if general {
                sub.subject = "General".into();
            }
            core.snap.groups.insert(sub_id.clone(), sub);
            core.changes.group(&sub_id);
        }
    }
    // The members added learn of the group from a `<create>` notification (the creator's
    // device has it from the answer; the creator's other devices get it too).
    let node = group_node(core, &g);
    let create = NodeBuilder::new("create")
        .attr("reason", "create")
        .children([node])
        .build();
    notify(core, &id, creator, create, &[]);
    Ok((g, outcomes))
}

/// Whether `jid` can be added to `g`, and as whom.
fn admit(core: &Core, g: &Group, jid: &Jid) -> Outcome {
    let Some(phone) = core.phone_of(jid) else {
        return Outcome {
            phone: jid.user.to_string(),
            status: 404,
            invite: None,
        };
    };
    if g.member(&phone).is_some() {
        return Outcome {
            phone,
            status: 409,
            invite: None,
        };
    }
    if crate::iq::hides(core, &phone, "groupadd") {
        // WhatsApp hands back an invite the admin can send instead.
        let code = g.invite_code.clone().unwrap_or_else(invite_code);
        return Outcome {
            phone,
            status: 403,
            invite: Some((code, now_secs() + 3 * 24 * 3600)),
        };
    }
    Outcome {
        phone,
        status: 200,
        invite: None,
    }
}

fn invite_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..22)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Adds, removes, promotes or demotes participants; one outcome per participant named.
pub fn participants(
    core: &mut Core,
    actor: &str,
    id: &str,
    action: Action,
    who: &[Jid],
) -> Result<Vec<Outcome>> {
    let g = group(core, id)?.clone();
    member_of(core, id, actor)?;
    let may = match action {
        Action::Add => g.is_admin(actor) || g.members_may_add,
        // Anyone may remove themselves (that is leaving); the rest is for admins.
        _ => g.is_admin(actor),
    };
    if !may {
        return Err(GroupError::NotAdmin(g.jid()));
    }
    if action == Action::Add && g.participants.len() + who.len() > SIZE_MAX {
        return Err(GroupError::Full(g.jid()));
    }
    let now = now_secs();
    let mut outcomes = Vec::new();
    let mut changed: Vec<String> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    {
        let mut current = g.clone();
        for jid in who {
            let outcome = match action {
                Action::Add => admit(core, &current, jid),
                _ => match core.phone_of(jid) {
                    Some(phone) if current.member(&phone).is_some() => {
                        let superadmin = current
                            .member(&phone)
                            .is_some_and(|m| m.role == Role::Superadmin);
                        // The creator cannot be demoted or removed by another admin.
                        let status = if superadmin && phone != actor && action != Action::Promote {
                            406
                        } else {
                            200
                        };
                        Outcome {
                            phone,
                            status,
                            invite: None,
                        }
                    }
                    Some(phone) => Outcome {
                        phone,
                        status: 404,
                        invite: None,
                    },
                    None => Outcome {
                        phone: jid.user.to_string(),
                        status: 404,
                        invite: None,
                    },
                },
            };
            if outcome.status == 200 {
                match action {
                    Action::Add => current.participants.push(GroupMember {
                        phone: outcome.phone.clone(),
                        role: Role::Member,
                        joined_at: now,
                    }),
                    Action::Remove => {
                        current.participants.retain(|m| m.phone != outcome.phone);
                        removed.push(outcome.phone.clone());
                    }
                    Action::Promote | Action::Demote => {
                        if let Some(m) = current
                            .participants
                            .iter_mut()
                            .find(|m| m.phone == outcome.phone)
                            && m.role != Role::Superadmin
                        {
                            m.role = if action == Action::Promote {
                                Role::Admin
                            } else {
                                Role::Member
                            };
                        }
                    }
                }
                changed.push(outcome.phone.clone());
            }
            outcomes.push(outcome);
        }
        let g = group_mut(core, id)?;
        g.participants = current.participants;
    }
    if !changed.is_empty() {
        let g = group(core, id)?.clone();
        let node = participant_list(core, &g, action.tag(), &changed);
        notify(core, id, actor, node, &removed);
        if action == Action::Add {
            // The members added get the whole group, as on creation.
            let node = group_node(core, &g);
            let add_note = NodeBuilder::new("create")
                .attr("reason", "add")
                .children([node])
                .build();
            notify_only(core, id, actor, add_note, &changed);
        }
    }
    if !removed.is_empty() {
        phone::rotate_sender_keys(core, id);
        keep_an_admin(core, id, actor);
    }
    Ok(outcomes)
}

/// When the last admin is gone, WhatsApp makes the longest-standing member one.
fn keep_an_admin(core: &mut Core, id: &str, actor: &str) {
    let Ok(g) = group(core, id) else { return };
    if g.participants.is_empty() {
        core.snap.groups.remove(id);
        core.changes.group(id);
        return;
    }
    if g.participants.iter().any(|m| m.role != Role::Member) {
        return;
    }
    let Some(first) = g
        .participants
        .iter()
        .min_by_key(|m| m.joined_at)
        .map(|m| m.phone.clone())
    else {
        return;
    };
    if let Ok(g) = group_mut(core, id)
        && let Some(m) = g.participants.iter_mut().find(|m| m.phone == first)
    {
        m.role = Role::Admin;
    }
    let Ok(g) = group(core, id).cloned() else {
        return;
    };
    let node = participant_list(core, &g, "promote", &[first]);
    notify(core, id, actor, node, &[]);
}

/// A member leaves.
pub fn leave(core: &mut Core, phone: &str, id: &str) -> Result<()> {
    member_of(core, id, phone)?;
    group_mut(core, id)?
        .participants
        .retain(|m| m.phone != phone);
    let g = group(core, id)?.clone();
    let node = participant_list(core, &g, "remove", &[phone.to_string()]);
    notify(core, id, phone, node, &[phone.to_string()]);
    phone::rotate_sender_keys(core, id);
    keep_an_admin(core, id, phone);
    Ok(())
}

/// Changes to a group's info and settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Subject(String),
    /// `None` deletes the description.
    Description(Option<String>),
    Announce(bool),
    Locked(bool),
    Ephemeral(u32),
    MembershipApproval(bool),
}

/// Applies one change (subject and description: anyone unless the group is locked;
/// settings: admins) and tells the members.
pub fn change(core: &mut Core, actor: &str, id: &str, what: Change) -> Result<()> {
    let g = group(core, id)?.clone();
    member_of(core, id, actor)?;
    let info = matches!(what, Change::Subject(_) | Change::Description(_));
    if (!info || g.locked) && !g.is_admin(actor) {
        return Err(GroupError::NotAdmin(g.jid()));
    }
    let now = now_secs();
    let node = match &what {
        Change::Subject(s) => {
            let s = s.trim();
            if s.is_empty() || s.chars().count() > SUBJECT_MAX {
                return Err(GroupError::BadRequest(format!(
                    "a group's subject has 1 to {SUBJECT_MAX} characters"
                )));
            }
            let g = group_mut(core, id)?;
            g.subject = s.to_string();
            g.subject_owner = actor.to_string();
            g.subject_time = now;
            NodeBuilder::new("subject")
                .attr("subject", s.to_string())
                .attr("s_o", actor_jid(core, &g_addressing(core, id), actor))
                .attr("s_t", now.to_string())
                .build()
        }
        Change::Description(d) => {
            if d.as_ref()
                .is_some_and(|d| d.chars().count() > DESCRIPTION_MAX)
            {
                return Err(GroupError::BadRequest(format!(
                    "a group's description has at most {DESCRIPTION_MAX} characters"
                )));
            }
            let desc_id = new_id();
            let g = group_mut(core, id)?;
            g.description = d
                .clone()
                .filter(|t| !t.is_empty())
                .map(|text| GroupDescription {
                    id: desc_id.clone(),
                    text,
                    owner: actor.to_string(),
                    time: now,
                });
            match d.clone().filter(|t| !t.is_empty()) {
                Some(text) => NodeBuilder::new("description")
                    .attr("id", desc_id)
                    .children([NodeBuilder::new("body").string_content(text).build()])
                    .build(),
                None => NodeBuilder::new("description")
                    .attr("id", desc_id)
                    .children([NodeBuilder::new("delete").build()])
                    .build(),
            }
        }
        Change::Announce(on) => {
            group_mut(core, id)?.announce = *on;
            NodeBuilder::new(if *on {
                "announcement"
            } else {
                "not_announcement"
            })
            .build()
        }
        Change::Locked(on) => {
            group_mut(core, id)?.locked = *on;
            NodeBuilder::new(if *on { "locked" } else { "unlocked" }).build()
        }
        Change::Ephemeral(secs) => {
            group_mut(core, id)?.ephemeral = *secs;
            if *secs == 0 {
                NodeBuilder::new("not_ephemeral").build()
            } else {
                NodeBuilder::new("ephemeral")
                    .attr("expiration", secs.to_string())
                    .build()
            }
        }
        Change::MembershipApproval(on) => {
            group_mut(core, id)?.membership_approval = *on;
            NodeBuilder::new("membership_approval_mode")
                .children([NodeBuilder::new("group_join")
                    .attr("state", if *on { "on" } else { "off" })
                    .build()])
                .build()
        }
    };
    notify(core, id, actor, node, &[]);
    Ok(())
}

fn g_addressing(core: &Core, id: &str) -> Addressing {
    core.snap
        .groups
        .get(id)
        .map_or(Addressing::Pn, |g| g.addressing)
}

/// The group's invite code (made on first use); `reset` makes a new one, and the old
/// link stops working.
pub fn invite(core: &mut Core, actor: &str, id: &str, reset: bool) -> Result<String> {
    admin_of(core, id, actor)?;
    let g = group_mut(core, id)?;
    if reset || g.invite_code.is_none() {
        g.invite_code = Some(invite_code());
    }
    let code = g.invite_code.clone().expect("set above");
    if reset {
        let node = NodeBuilder::new("revoke").build();
        notify(core, id, actor, node, &[]);
    }
    Ok(code)
}

/// The group an invite code opens.
pub fn by_invite<'a>(core: &'a Core, code: &str) -> Result<&'a Group> {
    core.snap
        .groups
        .values()
        .find(|g| g.invite_code.as_deref() == Some(code))
        .ok_or_else(|| GroupError::BadInvite(code.to_string()))
}

/// How a join by invite went.
#[derive(Debug, Clone, PartialEq)]
pub enum Joined {
    Joined(String),
    /// The group wants an admin's approval first.
    Pending(String),
}

/// `phone` joins the group an invite code opens.
pub fn join(core: &mut Core, phone: &str, code: &str) -> Result<Joined> {
    let g = by_invite(core, code)?.clone();
    if g.member(phone).is_some() {
        return Ok(Joined::Joined(g.id));
    }
    if g.membership_approval {
        return Ok(Joined::Pending(g.id));
    }
    if g.participants.len() + 1 > SIZE_MAX {
        return Err(GroupError::Full(g.jid()));
    }
    group_mut(core, &g.id)?.participants.push(GroupMember {
        phone: phone.to_string(),
        role: Role::Member,
        joined_at: now_secs(),
    });
    let g = group(core, &g.id)?.clone();
    let node = participant_list(core, &g, "add", &[phone.to_string()]);
    let node = with_attr(node, "reason", "invite");
    notify(core, &g.id, phone, node, &[]);
    Ok(Joined::Joined(g.id))
}

fn with_attr(mut node: Node, key: &'static str, value: &str) -> Node {
    node.attrs.insert(key, value.to_string());
    node
}

/// The groups `phone` is in.
pub fn participating(core: &Core, phone: &str) -> Vec<Group> {
    core.snap
        .groups
        .values()
        .filter(|g| g.member(phone).is_some())
        .cloned()
        .collect()
}

/// A user's JID in the form the group names its participants.
fn actor_jid(core: &Core, addressing: &Addressing, phone: &str) -> Jid {
    match (addressing, core.account(phone)) {
        (Addressing::Lid, Some(acc)) => Jid::lid(acc.lid.clone()),
        _ => Jid::pn(phone.to_string()),
    }
}

/// `<group>` as WhatsApp describes one in answers and `<create>` notifications.
pub fn group_node(core: &Core, g: &Group) -> Node {
    let mut kids: Vec<Node> = g
        .participants
        .iter()
        .map(|m| {
            let mut b = NodeBuilder::new("participant")
                .attr("jid", actor_jid(core, &g.addressing, &m.phone));
            let lid = core.account(&m.phone).map(|a| a.lid.clone());
            b = match (g.addressing, lid) {
                (Addressing::Lid, _) => b.attr("phone_number", Jid::pn(m.phone.clone())),
                (Addressing::Pn, Some(lid)) => b.attr("lid", Jid::lid(lid)),
                (Addressing::Pn, None) => b,
            };
            match m.role {
                Role::Member => {}
                Role::Admin => b = b.attr("type", "admin"),
                Role::Superadmin => b = b.attr("type", "superadmin"),
            }
            b.build()
        })
        .collect();
    if let Some(d) = &g.description {
        kids.push(
            NodeBuilder::new("description")
                .attr("id", d.id.clone())
                .attr("participant", actor_jid(core, &g.addressing, &d.owner))
                .attr("t", d.time.to_string())
                .children([NodeBuilder::new("body")
                    .string_content(d.text.clone())
                    .build()])
                .build(),
        );
    }
    if g.locked {
        kids.push(NodeBuilder::new("locked").build());
    }
    if g.announce {
        kids.push(NodeBuilder::new("announcement").build());
    }
    if g.ephemeral > 0 {
        kids.push(
            NodeBuilder::new("ephemeral")
                .attr("expiration", g.ephemeral.to_string())
                .build(),
        );
    }
    if g.membership_approval {
        kids.push(
            NodeBuilder::new("membership_approval_mode")
                .children([NodeBuilder::new("group_join").attr("state", "on").build()])
                .build(),
        );
    }
    kids.push(
        NodeBuilder::new("member_add_mode")
            .string_content(if g.members_may_add {
                "all_member_add"
            } else {
                "admin_add"
            })
            .build(),
    );
    if g.community {
        kids.push(NodeBuilder::new("parent").build());
    }
    if let Some(p) = &g.parent {
        kids.push(
            NodeBuilder::new("linked_parent")
                .attr("jid", Jid::group(p.clone()))
                .build(),
        );
    }
    if g.announcement_group {
        kids.push(NodeBuilder::new("default_sub_group").build());
    }
    if g.general_chat {
        kids.push(NodeBuilder::new("general_chat").build());
    }
    let mut b = NodeBuilder::new("group")
        .attr("id", g.id.clone())
        .attr("subject", g.subject.clone())
        .attr("s_o", actor_jid(core, &g.addressing, &g.subject_owner))
        .attr("s_t", g.subject_time.to_string())
        .attr("creator", actor_jid(core, &g.addressing, &g.creator))
        .attr("creation", g.created_at.to_string())
        .attr("size", g.participants.len().to_string())
        .attr(
            "addressing_mode",
            match g.addressing {
                Addressing::Lid => "lid",
                Addressing::Pn => "pn",
            },
        );
    if g.addressing == Addressing::Lid {
        b = b.attr("creator_pn", Jid::pn(g.creator.clone()));
    }
    b.children(kids).build()
}

/// `<add>`, `<remove>`, `<promote>` or `<demote>` naming participants.
fn participant_list(core: &Core, g: &Group, tag: &'static str, phones: &[String]) -> Node {
    let kids: Vec<Node> = phones
        .iter()
        .map(|p| {
            let mut b =
                NodeBuilder::new("participant").attr("jid", actor_jid(core, &g.addressing, p));
            if g.addressing == Addressing::Lid {
                b = b.attr("phone_number", Jid::pn(p.clone()));
            }
            b.build()
        })
        .collect();
    NodeBuilder::new(tag).children(kids).build()
}

/// Tells every device of every member (and of `also`, members just removed) what changed:
/// a `w:gp2` notification naming the actor.
fn notify(core: &mut Core, id: &str, actor: &str, action: Node, also: &[String]) {
    let Ok(g) = group(core, id) else { return };
    let mut to: BTreeSet<String> = g.participants.iter().map(|m| m.phone.clone()).collect();
    to.extend(also.iter().cloned());
    let to: Vec<String> = to.into_iter().collect();
    notify_only(core, id, actor, action, &to);
}

fn notify_only(core: &mut Core, id: &str, actor: &str, action: Node, to: &[String]) {
    let Ok(g) = group(core, id) else { return };
    let addressing = g.addressing;
    let jid = Jid::group(g.id.clone());
    let actor_name = core
        .account(actor)
        .map(|a| a.name.clone())
        .unwrap_or_default();
    for phone in to {
        for device in core.companions(phone) {
            if phone == actor && core.acting_device == Some(device) {
                continue;
            }
            let nid = new_id();
            let mut b = NodeBuilder::new("notification")
                .attr("from", jid.clone())
                .attr("type", "w:gp2")
                .attr("id", nid.clone())
                .attr("t", t_now())
                .attr("participant", actor_jid(core, &addressing, actor))
                .attr("notify", actor_name.clone());
            if addressing == Addressing::Lid {
                b = b
                    .attr("addressing_mode", "lid")
                    .attr("participant_pn", Jid::pn(actor.to_string()));
            }
            let node = b.children([action.clone()]).build();
            core.deliver_to_companion(phone, device, &nid, &node);
        }
    }
}

/// Routes a `<message to="<id>@g.us">` from a device: the sender must be a participant
/// (and an admin, in an announcement group); every other device of every participant gets
/// the `skmsg`, with its own pairwise `enc` where the sender gave one. Returns the ack.
pub async fn route_message(core: &mut Core, phone: &str, device: u16, node: &Node) -> Node {
    let id = attr(node, "id").unwrap_or_default();
    let to = jid_attr(node, "to").expect("the router checked `to`");
    let ack = |error: Option<u16>| {
        let mut b = NodeBuilder::new("ack")
            .attr("class", "message")
            .attr("id", id.clone())
            .attr("from", to.clone())
            .attr("t", t_now());
        if let Some(e) = error {
            b = b.attr("error", e.to_string());
        }
        b.build()
    };
    let gid = to.user.to_string();
    let g = match group(core, &gid) {
        Ok(g) => g.clone(),
        Err(_) => return ack(Some(404)),
    };
    if g.member(phone).is_none() || (g.announce && !g.is_admin(phone)) {
        tracing::info!(phone, group = %gid, "group message refused: not a participant (or not an admin of an announcement group)");
        return ack(Some(403));
    }
    let mut pairwise: std::collections::HashMap<(String, u16), Vec<Node>> = Default::default();
    if let Some(parts) = child(node, "participants") {
        for t in children(parts).iter().filter(|t| t.tag == "to") {
            if let Some(j) = jid_attr(t, "jid")
                && let Some(p) = core.phone_of(&j)
            {
                let encs = children(t)
                    .iter()
                    .filter(|e| e.tag == "enc")
                    .cloned()
                    .collect();
                pairwise.insert((p, j.device), encs);
            }
        }
    }
    let Some(skmsg) = children(node)
        .iter()
        .find(|e| e.tag == "enc" && attr(e, "type").as_deref() == Some("skmsg"))
        .cloned()
    else {
        return ack(Some(400));
    };
    let device_identity = child(node, "device-identity").cloned();
    core.add_origin(&id, phone, device);
    let sender_name = core
        .account(phone)
        .map(|a| {
            a.devices
                .get(&device)
                .map(|d| d.push_name.clone())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| a.name.clone())
        })
        .unwrap_or_default();
    let lid_form = g.addressing == Addressing::Lid;
    let participant = core.device_jid(phone, device, lid_form);
    let stanza_type = attr(node, "type").unwrap_or_else(|| "text".into());
    let edit = attr(node, "edit");
    let sender_alt = if lid_form {
        ("participant_pn", Jid::pn(phone.to_string()))
    } else {
        (
            "participant_lid",
            Jid::lid(
                core.account(phone)
                    .map(|a| a.lid.clone())
                    .unwrap_or_default(),
            ),
        )
    };
    for member in g.participants.iter().map(|m| m.phone.clone()) {
        let devices: Vec<u16> = core
            .account(&member)
            .map(|a| a.devices.keys().copied().collect())
            .unwrap_or_default();
        for d in devices {
            if member == phone && d == device {
                continue;
            }
            let mut kids = pairwise.remove(&(member.clone(), d)).unwrap_or_default();
            let has_pairwise = !kids.is_empty();
            kids.push(skmsg.clone());
            if has_pairwise && let Some(di) = &device_identity {
                kids.push(di.clone());
            }
            let mut b = NodeBuilder::new("message")
                .attr("from", Jid::group(gid.clone()))
                .attr("participant", participant.clone())
                .attr(sender_alt.0, sender_alt.1.clone())
                .attr("id", id.clone())
                .attr("t", t_now())
                .attr("type", stanza_type.clone())
                .attr("notify", sender_name.clone());
            if lid_form {
                b = b.attr("addressing_mode", "lid");
            }
            if let Some(e) = &edit {
                b = b.attr("edit", e.clone());
            }
            let stanza = b.children(kids).build();
            if d == 0 {
                phone::receive(core, &member, (phone, device), &gid, &stanza).await;
            } else {
                core.deliver_to_companion(&member, d, &id, &stanza);
            }
        }
    }
    ack(None)
}

/// Relays a receipt for a group message (`to` the group, `participant` its sender) to
/// the device that sent it, naming the reader as the participant.
pub async fn route_receipt(core: &mut Core, phone: &str, device: u16, node: &Node) {
    let id = attr(node, "id").unwrap_or_default();
    let ty = attr(node, "type");
    let Some(to) = jid_attr(node, "to") else {
        return;
    };
    let gid = to.user.to_string();
    let Ok(g) = group(core, &gid).cloned() else {
        return;
    };
    let Some(sender) = jid_attr(node, "participant") else {
        return;
    };
    let Some(sender_phone) = core.phone_of(&sender) else {
        return;
    };
    let target_device = if sender.device != 0 {
        sender.device
    } else {
        core.snap
            .origins
            .get(&id)
            .filter(|(p, _)| *p == sender_phone)
            .map_or(0, |(_, d)| *d)
    };
    if sender_phone == phone && target_device == device {
        return;
    }
    let reader = core.device_jid(phone, device, g.addressing == Addressing::Lid);
    let mut b = NodeBuilder::new("receipt")
        .attr("from", Jid::group(gid.clone()))
        .attr("participant", reader)
        .attr("id", id.clone())
        .attr("t", t_now());
    if let Some(t) = &ty {
        b = b.attr("type", t.clone());
    }
    let kids: Vec<Node> = children(node).to_vec();
    if !kids.is_empty() {
        b = b.children(kids);
    }
    let receipt = b.build();
    if ty.as_deref() == Some("retry") && target_device == 0 {
        // The device could not decrypt a phone's group message: the phone gives it its
        // sender key again and sends the message once more.
        match phone::resend(core, &sender_phone, &gid, (phone, device), &id).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!("group retry for {id}: the phone no longer has it"),
            Err(e) => tracing::warn!("phone {sender_phone} cannot send {id} again: {e}"),
        }
        return;
    }
    crate::phone::deliver_receipt(
        core,
        (&sender_phone, target_device),
        &receipt,
        &id,
        ty.as_deref(),
    );
}

/// Sets the group's picture (`None` removes it): any member, or only admins when the group
/// is locked. Members' devices get a `<notification type="picture">`. Returns the new id.
pub fn set_picture(
    core: &mut Core,
    actor: &str,
    id: &str,
    image: Option<&[u8]>,
) -> std::result::Result<Option<String>, crate::phone::PhoneError> {
    let g = group(core, id)?.clone();
    member_of(core, id, actor)?;
    if g.locked && !g.is_admin(actor) {
        return Err(GroupError::NotAdmin(g.jid()).into());
    }
    let picture = match image {
        Some(bytes) => Some(crate::state::ProfilePicture {
            id: (now_secs() * 1000 + u64::from(rand::random::<u16>() % 1000)).to_string(),
            direct_path: crate::phone::store_blob(core, "image", bytes)?,
        }),
        None => None,
    };
    let new_id_ = picture.as_ref().map(|p| p.id.clone());
    group_mut(core, id)?.picture = picture;
    let author = actor_jid(core, &g.addressing, actor);
    let action = match &new_id_ {
        Some(pid) => NodeBuilder::new("set")
            .attr("jid", Jid::group(id.to_string()))
            .attr("id", pid.clone())
            .attr("author", author),
        None => NodeBuilder::new("delete")
            .attr("jid", Jid::group(id.to_string()))
            .attr("author", author),
    }
    .build();
    let members: Vec<String> = g.participants.iter().map(|m| m.phone.clone()).collect();
    for phone in members {
        for device in core.companions(&phone) {
            if phone == actor && core.acting_device == Some(device) {
                continue;
            }
            let nid = new_id();
            let node = NodeBuilder::new("notification")
                .attr("from", Jid::group(id.to_string()))
                .attr("type", "picture")
                .attr("id", nid.clone())
                .attr("t", t_now())
                .children([action.clone()])
                .build();
            core.deliver_to_companion(&phone, device, &nid, &node);
        }
    }
    Ok(new_id_)
}

/// The community's groups: its announcement group first, then the others.
pub fn linked(core: &Core, community: &str) -> Vec<Group> {
    let mut out: Vec<Group> = core
        .snap
        .groups
        .values()
        .filter(|g| g.parent.as_deref() == Some(community))
        .cloned()
        .collect();
    out.sort_by_key(|g| (!g.announcement_group, g.created_at, g.id.clone()));
    out
}

/// Links groups to a community: the actor must be an admin of both; each group's outcome
/// (200, 404 no such group, 401 not its admin, 409 already in a community).
pub fn link(
    core: &mut Core,
    actor: &str,
    community: &str,
    groups: &[String],
) -> Result<Vec<(String, u16)>> {
    admin_of(core, community, actor)?;
    if !group(core, community)?.community {
        return Err(GroupError::BadRequest(format!(
            "{community} is not a community"
        )));
    }
    let mut out = Vec::new();
    for gid in groups {
        let status = match group(core, gid) {
            Err(_) => 404,
            Ok(g) if !g.is_admin(actor) => 401,
            Ok(g) if g.parent.is_some() || g.community => 409,
            Ok(_) => 200,
        };
        if status == 200 {
            group_mut(core, gid)?.parent = Some(community.to_string());
            // Its members become members of the community and its announcement group.
            let members = group(core, gid)?.participants.clone();
            let announcement = linked(core, community)
                .into_iter()
                .find(|g| g.announcement_group)
                .map(|g| g.id);
            for target in std::iter::once(community.to_string()).chain(announcement) {
                let now = now_secs();
                let g = group_mut(core, &target)?;
                for m in &members {
                    if g.member(&m.phone).is_none() {
                        g.participants.push(GroupMember {
                            phone: m.phone.clone(),
                            role: Role::Member,
                            joined_at: now,
                        });
                    }
                }
            }
            let subject = group(core, gid)?.subject.clone();
            let node = NodeBuilder::new("link")
                .attr("link_type", "sub_group")
                .children([NodeBuilder::new("group")
                    .attr("jid", Jid::group(gid.clone()))
                    .attr("subject", subject)
                    .build()])
                .build();
            notify(core, community, actor, node.clone(), &[]);
            notify(core, gid, actor, node, &[]);
        }
        out.push((gid.clone(), status));
    }
    Ok(out)
}

/// Unlinks groups from their community (the actor: an admin of the community).
pub fn unlink(
    core: &mut Core,
    actor: &str,
    community: &str,
    groups: &[String],
) -> Result<Vec<(String, u16)>> {
    admin_of(core, community, actor)?;
    let mut out = Vec::new();
    for gid in groups {
        let status = match group(core, gid) {
            Err(_) => 404,
            Ok(g) if g.parent.as_deref() != Some(community) || g.announcement_group => 406,
            Ok(_) => 200,
        };
        if status == 200 {
            group_mut(core, gid)?.parent = None;
            let node = NodeBuilder::new("unlink")
                .attr("unlink_type", "sub_group")
                .children([NodeBuilder::new("group")
                    .attr("jid", Jid::group(gid.clone()))
                    .build()])
                .build();
            notify(core, community, actor, node.clone(), &[]);
            notify(core, gid, actor, node, &[]);
        }
        out.push((gid.clone(), status));
    }
    Ok(out)
}

/// True for a JID of a group.
pub fn is_group(jid: &Jid) -> bool {
    jid.server == Server::Group && !jid.user.is_empty()
}
