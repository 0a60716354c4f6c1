//! Presence and chat states, as WhatsApp relays them: ephemeral, sent only to devices
//! connected at that moment, never queued or kept across a restart.
//!
//! An account is available while at least one of its devices has said
//! `<presence type="available">` on its current connection; when the last one says
//! `unavailable` or disconnects, it was last seen then. A device that sends
//! `<presence type="subscribe" to=...>` hears the account's presence at once and every
//! change of it while its connection lasts. `<chatstate to=...>` (typing, recording,
//! paused) goes to the recipient's connected companions.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, Server};

use crate::conn::{children, jid_attr};
use crate::hub::{Core, Outbound};
use crate::phone::attr;
use crate::state::now_secs;

/// Who is available and who listens, by account (phone number).
#[derive(Default)]
pub struct Presences {
    accounts: HashMap<String, Presence>,
    /// Watched account -> (subscriber account, device, whether it named the account by LID).
    subscribers: HashMap<String, BTreeSet<(String, u16, bool)>>,
    /// What each phone's screen shows of its chats: the latest chat state by sender.
    seen_states: HashMap<String, BTreeMap<String, String>>,
}

#[derive(Default)]
struct Presence {
    available: BTreeSet<u16>,
    last_seen: Option<u64>,
}

/// Sends `node` to a device if it is connected and caught up; drops it otherwise.
fn send_live(core: &Core, phone: &str, device: u16, node: &Node) {
    let Some(conn) = core.conns.get(&(phone.to_string(), device)) else {
        return;
    };
    if !conn.ready {
        return;
    }
    match wacore_binary::marshal::marshal(node) {
        Ok(bytes) => {
            let _ = conn.tx.send(Outbound::Node(bytes));
        }
        Err(e) => tracing::error!("cannot marshal a presence stanza: {e}"),
    }
}

/// The `<presence>` a subscriber hears about `phone`: available, or unavailable with the
/// time it was last seen (left out when the account's `last` privacy is `none`).
fn presence_of(core: &Core, phone: &str, lid_form: bool) -> Node {
    let from = if lid_form && let Some(acc) = core.account(phone) {
        Jid::lid(acc.lid.clone())
    } else {
        Jid::pn(phone.to_string())
    };
    let state = core.presence.accounts.get(phone);
    if state.is_some_and(|p| !p.available.is_empty()) {
        return NodeBuilder::new("presence").attr("from", from).build();
    }
    let mut b = NodeBuilder::new("presence")
        .attr("from", from)
        .attr("type", "unavailable");
    let hidden = crate::iq::privacy_settings(core, phone)
        .iter()
        .any(|(c, v)| c == "last" && v == "none");
    if let Some(last) = state.and_then(|p| p.last_seen)
        && !hidden
    {
        b = b.attr("last", last.to_string());
    }
    b.build()
}

fn is_available(core: &Core, phone: &str) -> bool {
    core.presence
        .accounts
        .get(phone)
        .is_some_and(|p| !p.available.is_empty())
}

/// Tells every subscriber of `phone` its presence.
fn announce(core: &Core, phone: &str) {
    let Some(subs) = core.presence.subscribers.get(phone) else {
        return;
    };
    for (sub, device, lid_form) in subs {
        send_live(core, sub, *device, &presence_of(core, phone, *lid_form));
    }
}

/// Marks a device available or not, and announces the account when that changes it.
fn set_available(core: &mut Core, phone: &str, device: u16, available: bool) {
    let before = is_available(core, phone);
    let p = core.presence.accounts.entry(phone.to_string()).or_default();
    if available {
        p.available.insert(device);
    } else {
        p.available.remove(&device);
    }
    let after = !p.available.is_empty();
    if before && !after {
        p.last_seen = Some(now_secs());
    }
    if before != after {
        announce(core, phone);
    }
}

/// A `<presence>` from a device: available, unavailable, subscribe or unsubscribe.
pub fn stanza(core: &mut Core, phone: &str, device: u16, node: &Node) {
    let target = || {
        jid_attr(node, "to").and_then(|jid| {
            let lid_form = jid.server == Server::Lid;
            core.phone_of(&jid).map(|p| (p, lid_form))
        })
    };
    match attr(node, "type").as_deref() {
        Some("subscribe") => {
            let Some((watched, lid_form)) = target() else {
                return;
            };
            core.presence
                .subscribers
                .entry(watched.clone())
                .or_default()
                .insert((phone.to_string(), device, lid_form));
            send_live(core, phone, device, &presence_of(core, &watched, lid_form));
        }
        Some("unsubscribe") => {
            if let Some((watched, _)) = target()
                && let Some(subs) = core.presence.subscribers.get_mut(&watched)
            {
                subs.retain(|(p, d, _)| !(p == phone && *d == device));
            }
        }
        Some("unavailable") => set_available(core, phone, device, false),
        // `available`, or no type at all.
        _ => set_available(core, phone, device, true),
    }
}

/// A `<chatstate to=...>` from a device: relayed to the recipient's connected companions,
/// from the sender's account in the form the sender addressed the recipient in.
pub fn chatstate(core: &mut Core, phone: &str, node: &Node) {
    let Some(to) = jid_attr(node, "to") else {
        return;
    };
    let Some(target) = core.phone_of(&to) else {
        return;
    };
    let from = if to.server == Server::Lid
        && let Some(acc) = core.account(phone)
    {
        Jid::lid(acc.lid.clone())
    } else {
        Jid::pn(phone.to_string())
    };
    // `<composing/>` (with `media="audio"` when recording) or `<paused/>`.
    let Some(state) = children(node).first().cloned() else {
        return;
    };
    // The recipient's phone shows it too ("typing...", "recording audio...").
    let shown = match (state.tag.as_ref(), attr(&state, "media").as_deref()) {
        ("composing", Some("audio")) => "recording",
        ("composing", _) => "composing",
        _ => "paused",
    };
    core.presence
        .seen_states
        .entry(target.clone())
        .or_default()
        .insert(phone.to_string(), shown.to_string());
    let relayed = NodeBuilder::new("chatstate")
        .attr("from", from)
        .children([state])
        .build();
    for device in core.companions(&target) {
        if target == phone {
            continue;
        }
        send_live(core, &target, device, &relayed);
    }
}

/// A device's connection ended: its subscriptions end, and it is no longer available.
pub fn disconnected(core: &mut Core, phone: &str, device: u16) {
    for subs in core.presence.subscribers.values_mut() {
        subs.retain(|(p, d, _)| !(p == phone && *d == device));
    }
    if core
        .presence
        .accounts
        .get(phone)
        .is_some_and(|p| p.available.contains(&device))
    {
        set_available(core, phone, device, false);
    }
}

/// The phone itself (device 0) comes online or goes offline in the app.
pub fn phone_available(core: &mut Core, phone: &str, available: bool) {
    set_available(core, phone, 0, available);
}

/// The phone's user types (`composing`), records audio (`recording`) or stops (`paused`)
/// in the chat with `to`: relayed as the app sends it.
pub fn phone_chatstate(core: &mut Core, phone: &str, to: &str, state: &str) {
    let child = match state {
        "recording" => NodeBuilder::new("composing").attr("media", "audio").build(),
        "composing" => NodeBuilder::new("composing").build(),
        _ => NodeBuilder::new("paused").build(),
    };
    let node = NodeBuilder::new("chatstate")
        .attr("to", Jid::pn(to.to_string()))
        .children([child])
        .build();
    chatstate(core, phone, &node);
}

/// What the simulator knows of `phone`'s presence: whether the account is available (on
/// any device), when it was last seen, and the chat states its phone was shown, by sender.
pub fn view(core: &Core, phone: &str) -> serde_json::Value {
    let p = core.presence.accounts.get(phone);
    serde_json::json!({
        "available": is_available(core, phone),
        "lastSeen": p.and_then(|p| p.last_seen),
        "chatStates": core.presence.seen_states.get(phone).cloned().unwrap_or_default(),
    })
}
