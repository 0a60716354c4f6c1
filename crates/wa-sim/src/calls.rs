//! Voice and video calls as far as signaling goes: a phone's offer rings the callee's
//! linked devices (as `<call><offer>`), a device may reject it (`<call><reject>`), and the
//! caller may hang up (`<call><terminate>`). No media flows. Calls are ephemeral, as on
//! WhatsApp: a restart forgets them.

use std::collections::BTreeMap;

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};

use crate::conn::child;
use crate::hub::{Core, new_id, t_now};
use crate::phone::attr;

/// A call and where it stands.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub id: String,
    pub from: String,
    pub to: String,
    pub video: bool,
    /// `ringing`, `rejected` (by the callee's device), `ended` (the caller hung up).
    pub state: String,
}

/// Calls by id.
#[derive(Default)]
pub struct Calls {
    calls: BTreeMap<String, Call>,
}

/// `from`'s phone calls `to`: every linked device of `to` gets the offer.
pub fn offer(core: &mut Core, from: &str, to: &str, video: bool) -> Call {
    let call_id = new_id().to_uppercase();
    let creator = Jid::pn(from.to_string());
    let mut media = vec![
        NodeBuilder::new("audio")
            .attr("enc", "opus")
            .attr("rate", "16000")
            .build(),
        NodeBuilder::new("audio")
            .attr("enc", "opus")
            .attr("rate", "8000")
            .build(),
    ];
    if video {
        media.push(NodeBuilder::new("video").attr("enc", "vp8").build());
    }
    let action = NodeBuilder::new("offer")
        .attr("call-id", call_id.clone())
        .attr("call-creator", creator)
        .children(media)
        .build();
    send(core, from, to, action);
    let call = Call {
        id: call_id.clone(),
        from: from.to_string(),
        to: to.to_string(),
        video,
        state: "ringing".into(),
    };
    core.calls.calls.insert(call_id, call.clone());
    call
}

/// The caller hangs up.
pub fn terminate(core: &mut Core, from: &str, call_id: &str) -> Option<Call> {
    let call = core
        .calls
        .calls
        .get_mut(call_id)
        .filter(|c| c.from == from)?;
    call.state = "ended".into();
    let call = call.clone();
    let action = NodeBuilder::new("terminate")
        .attr("call-id", call_id.to_string())
        .attr("call-creator", Jid::pn(call.from.clone()))
        .build();
    send(core, &call.from, &call.to, action);
    Some(call)
}

/// Sends a `<call>` with `action` from `from`'s phone to every linked device of `to`.
fn send(core: &mut Core, from: &str, to: &str, action: Node) {
    let name = core
        .account(from)
        .map(|a| a.name.clone())
        .unwrap_or_default();
    for device in core.companions(to) {
        let id = new_id().to_uppercase();
        let stanza = NodeBuilder::new("call")
            .attr("from", Jid::pn(from.to_string()))
            .attr("id", id.clone())
            .attr("t", t_now())
            .attr("notify", name.clone())
            .children([action.clone()])
            .build();
        core.deliver_to_companion(to, device, &id, &stanza);
    }
}

/// A `<call>` from a linked device of `phone`: a reject of a call that rings it ends the
/// call for the caller. Answers the server's ack.
pub fn from_device(core: &mut Core, phone: &str, node: &Node) -> Node {
    let id = attr(node, "id").unwrap_or_default();
    let to = attr(node, "to").unwrap_or_default();
    let mut ack = NodeBuilder::new("ack")
        .attr("class", "call")
        .attr("id", id)
        .attr("from", to);
    if let Some(reject) = child(node, "reject") {
        ack = ack.attr("type", "reject");
        if let Some(call_id) = attr(reject, "call-id")
            && let Some(call) = core.calls.calls.get_mut(&call_id)
            && call.to == phone
            && call.state == "ringing"
        {
            call.state = "rejected".into();
        }
    }
    ack.build()
}

/// The calls `phone` made or got, oldest first.
pub fn of(core: &Core, phone: &str) -> Vec<Call> {
    core.calls
        .calls
        .values()
        .filter(|c| c.from == phone || c.to == phone)
        .cloned()
        .collect()
}
