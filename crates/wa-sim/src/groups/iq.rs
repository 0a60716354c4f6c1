//! `<iq xmlns="w:g2">`: what a device asks of the group server, answered as WhatsApp
//! answers (the group node, a result per participant, or an `<error code text>`).

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, NodeContent};

use super::{Action, Change, GroupError, Joined, NewGroup};
use crate::conn::{child, children, iq_error, iq_result, jid_attr};
use crate::hub::Core;
use crate::phone::attr;
use crate::state::Addressing;

fn text_of(node: &Node) -> Option<String> {
    match &node.content {
        Some(NodeContent::String(s)) => Some(s.to_string()),
        Some(NodeContent::Bytes(b)) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

fn refused(id: &str, e: &GroupError) -> Node {
    let (code, text) = e.iq_error();
    tracing::debug!("w:g2 refused: {e}");
    iq_error(id, code, text)
}

/// Answers one `w:g2` IQ from `phone`'s device.
pub fn handle(core: &mut Core, phone: &str, device: u16, id: &str, node: &Node) -> Node {
    core.acting_device = Some(device);
    let answer = answer(core, phone, id, node);
    core.acting_device = None;
    match answer {
        Ok(n) => n,
        Err(e) => refused(id, &e),
    }
}

fn answer(core: &mut Core, phone: &str, id: &str, node: &Node) -> super::Result<Node> {
    let ty = attr(node, "type").unwrap_or_default();
    let to = jid_attr(node, "to");
    // The group the IQ is about (`to="<id>@g.us"`), or none for `to="g.us"`.
    let gid = to
        .as_ref()
        .filter(|j| !j.user.is_empty())
        .map(|j| j.user.to_string());
    let Some(first) = children(node).first() else {
        return Err(GroupError::BadRequest("an empty w:g2 request".into()));
    };
    let tag = first.tag.to_string();
    let need_gid = || {
        gid.clone()
            .ok_or_else(|| GroupError::BadRequest(format!("<{tag}> needs a group in `to`")))
    };
    match (ty.as_str(), tag.as_str()) {
        ("set", "create") => {
            let subject = attr(first, "subject").unwrap_or_default();
            let participants: Vec<Jid> = children(first)
                .iter()
                .filter(|p| p.tag == "participant")
                .filter_map(|p| jid_attr(p, "jid"))
                .collect();
            let ephemeral = child(first, "ephemeral")
                .and_then(|e| attr(e, "expiration"))
                .and_then(|e| e.parse().ok())
                .unwrap_or(0);
            let membership_approval = child(first, "membership_approval_mode")
                .and_then(|m| child(m, "group_join"))
                .and_then(|j| attr(j, "state"))
                .is_some_and(|s| s == "on");
            let description = child(first, "description")
                .and_then(|d| child(d, "body"))
                .and_then(text_of);
            let parent = child(first, "linked_parent")
                .and_then(|p| jid_attr(p, "jid"))
                .map(|j| j.user.to_string());
            let (g, outcomes) = super::create(
                core,
                phone,
                NewGroup {
                    subject,
                    participants,
                    addressing: core.group_addressing,
                    description,
                    community: child(first, "parent").is_some(),
                    parent,
                    ephemeral,
                    membership_approval,
                    general_chat: child(first, "create_general_chat").is_some(),
                },
            )?;
            let mut node = super::group_node(core, &g);
            // Participants that could not be added are named with their error.
            let errors: Vec<Node> = outcomes
                .iter()
                .filter(|o| o.status != 200)
                .map(|o| outcome_node(core, &g.addressing, o))
                .collect();
            if let Some(NodeContent::Nodes(kids)) = &mut node.content {
                kids.extend(errors);
            }
            Ok(iq_result(id).children([node]).build())
        }
        ("get", "query") => {
            let gid = need_gid()?;
            super::member_of(core, &gid, phone)?;
            let g = super::group(core, &gid)?;
            Ok(iq_result(id).children([super::group_node(core, g)]).build())
        }
        ("get", "participating") => {
            let groups: Vec<Node> = super::participating(core, phone)
                .iter()
                .map(|g| super::group_node(core, g))
                .collect();
            Ok(iq_result(id)
                .children([NodeBuilder::new("groups").children(groups).build()])
                .build())
        }
        ("set", "add" | "remove" | "promote" | "demote") => {
            let gid = need_gid()?;
            let action = Action::parse(&tag).expect("matched above");
            let who: Vec<Jid> = children(first)
                .iter()
                .filter(|p| p.tag == "participant")
                .filter_map(|p| jid_attr(p, "jid"))
                .collect();
            if who.is_empty() {
                return Err(GroupError::BadRequest(format!(
                    "<{tag}> names no participant"
                )));
            }
            let outcomes = super::participants(core, phone, &gid, action, &who)?;
            let addressing = super::group(core, &gid).map_or(Addressing::Pn, |g| g.addressing);
            let kids: Vec<Node> = outcomes
                .iter()
                .map(|o| outcome_node(core, &addressing, o))
                .collect();
            Ok(iq_result(id)
                .children([NodeBuilder::new(action.tag()).children(kids).build()])
                .build())
        }
        ("set", "subject") => {
            let gid = need_gid()?;
            let subject = text_of(first).unwrap_or_default();
            super::change(core, phone, &gid, Change::Subject(subject))?;
            Ok(iq_result(id).build())
        }
        ("set", "description") => {
            let gid = need_gid()?;
            let text = if attr(first, "delete").as_deref() == Some("true") {
                None
            } else {
                child(first, "body").and_then(text_of)
            };
            super::change(core, phone, &gid, Change::Description(text))?;
            Ok(iq_result(id).build())
        }
        ("set", "announcement" | "not_announcement") => {
            let gid = need_gid()?;
            super::change(core, phone, &gid, Change::Announce(tag == "announcement"))?;
            Ok(iq_result(id).build())
        }
        ("set", "locked" | "unlocked") => {
            let gid = need_gid()?;
            super::change(core, phone, &gid, Change::Locked(tag == "locked"))?;
            Ok(iq_result(id).build())
        }
        ("set", "ephemeral" | "not_ephemeral") => {
            let gid = need_gid()?;
            let secs = attr(first, "expiration")
                .and_then(|e| e.parse().ok())
                .unwrap_or(0);
            let secs = if tag == "not_ephemeral" { 0 } else { secs };
            super::change(core, phone, &gid, Change::Ephemeral(secs))?;
            Ok(iq_result(id).build())
        }
        ("set", "membership_approval_mode") => {
            let gid = need_gid()?;
            let on = child(first, "group_join")
                .and_then(|j| attr(j, "state"))
                .is_some_and(|s| s == "on");
            super::change(core, phone, &gid, Change::MembershipApproval(on))?;
            Ok(iq_result(id).build())
        }
        // With a group: its invite code (`set`: a new one). Without: a code's group
        // (`get`) or joining by it (`set`).
        ("get" | "set", "invite") if gid.is_some() && attr(first, "code").is_none() => {
            let gid = need_gid()?;
            let code = super::invite(core, phone, &gid, ty == "set")?;
            Ok(iq_result(id)
                .children([NodeBuilder::new("invite").attr("code", code).build()])
                .build())
        }
        ("get", "invite") => {
            let code = attr(first, "code").unwrap_or_default();
            let g = super::by_invite(core, &code)?;
            Ok(iq_result(id).children([super::group_node(core, g)]).build())
        }
        ("set", "invite") => {
            let code = attr(first, "code").unwrap_or_default();
            match super::join(core, phone, &code)? {
                Joined::Joined(g) => Ok(iq_result(id)
                    .children([NodeBuilder::new("group").attr("jid", Jid::group(g)).build()])
                    .build()),
                Joined::Pending(g) => Ok(iq_result(id)
                    .children([NodeBuilder::new("membership_approval_request")
                        .attr("jid", Jid::group(g))
                        .build()])
                    .build()),
            }
        }
        ("set", "leave") => {
            let groups: Vec<String> = children(first)
                .iter()
                .filter(|g| g.tag == "group")
                .filter_map(|g| attr(g, "id"))
                .map(|g| super::group_id_of(&g))
                .collect();
            if groups.is_empty() {
                return Err(GroupError::BadRequest("<leave> names no group".into()));
            }
            for g in &groups {
                super::leave(core, phone, g)?;
            }
            Ok(iq_result(id).build())
        }
        ("set", "links" | "unlink") => {
            let gid = need_gid()?;
            let link = if tag == "links" {
                child(first, "link").unwrap_or(first)
            } else {
                first
            };
            let groups: Vec<String> = children(link)
                .iter()
                .filter(|g| g.tag == "group")
                .filter_map(|g| attr(g, "jid"))
                .map(|g| super::group_id_of(&g))
                .collect();
            let outcomes = if tag == "links" {
                super::link(core, phone, &gid, &groups)?
            } else {
                super::unlink(core, phone, &gid, &groups)?
            };
            let kids: Vec<Node> = outcomes
                .iter()
                .map(|(g, status)| {
                    let mut b = NodeBuilder::new("group").attr("jid", Jid::group(g.clone()));
                    if *status != 200 {
                        b = b.attr("error", status.to_string());
                    }
                    b.build()
                })
                .collect();
            let inner = if tag == "links" {
                NodeBuilder::new("links")
                    .children([NodeBuilder::new("link")
                        .attr("link_type", "sub_group")
                        .children(kids)
                        .build()])
                    .build()
            } else {
                NodeBuilder::new("unlink")
                    .attr("unlink_type", "sub_group")
                    .children(kids)
                    .build()
            };
            Ok(iq_result(id).children([inner]).build())
        }
        _ => {
            tracing::warn!(%ty, %tag, "a w:g2 request the simulator does not model: 501");
            Ok(iq_error(id, 501, "feature-not-implemented"))
        }
    }
}

/// `<participant jid [error] [phone_number]>` for one outcome.
fn outcome_node(core: &Core, addressing: &Addressing, o: &super::Outcome) -> Node {
    let jid = match (addressing, core.account(&o.phone)) {
        (Addressing::Lid, Some(acc)) => Jid::lid(acc.lid.clone()),
        _ => Jid::pn(o.phone.clone()),
    };
    let mut b = NodeBuilder::new("participant").attr("jid", jid);
    if *addressing == Addressing::Lid && core.account(&o.phone).is_some() {
        b = b.attr("phone_number", Jid::pn(o.phone.clone()));
    }
    if o.status != 200 {
        b = b.attr("error", o.status.to_string());
    }
    if let Some((code, expiration)) = &o.invite {
        b = b.children([NodeBuilder::new("add_request")
            .attr("code", code.clone())
            .attr("expiration", expiration.to_string())
            .build()]);
    }
    b.build()
}
