//! Phones in groups: a phone sends to a group as the app does (its own sender key, given
//! pairwise to every member device that does not have it yet, then one `skmsg` for all),
//! and takes in what members send (their distributions, then their `skmsg`s).
//!
//! A phone names every sender key's owner `phone.device` (its phone number, whatever the
//! group's addressing), so a key survives a group switching between PN and LID.

use wacore::messages::MessageUtils;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};
use waproto::buffa::{Message as _, MessageField};
use waproto::whatsapp as wa;

use crate::hub::{Core, new_id, t_now};
use crate::phone::{self, Outgoing, PhoneError, attr};
use crate::signal;
use crate::state::{Addressing, PhoneMessage};

type Result<T> = std::result::Result<T, PhoneError>;

fn owner(phone: &str, device: u16) -> String {
    format!("{phone}.{device}")
}

/// `from`'s phone sends `out` to group `gid`.
pub async fn send(
    core: &mut Core,
    media_host: &str,
    from: &str,
    gid: &str,
    out: Outgoing,
) -> Result<PhoneMessage> {
    let g = super::group(core, gid)?.clone();
    if g.member(from).is_none() {
        return Err(super::GroupError::NotParticipant(from.to_string(), g.jid()).into());
    }
    if g.announce && !g.is_admin(from) {
        return Err(super::GroupError::NotAdmin(g.jid()).into());
    }
    let built = phone::build_message(core, media_host, out)?;
    let id = format!("3EB0{}", &new_id()[..16]);
    let record = phone::keep_sent(core, from, &g.jid(), &id, &built);
    let (message, stanza_type, _, _) = &built;
    fan_out(core, from, &g, &id, message, stanza_type, None).await?;
    Ok(record)
}

/// Encrypts `message` once under `from`'s sender key for `g` and delivers it to every
/// device of every participant (`only`: to that one device), with the sender key
/// distribution, pairwise, for each device that does not have it yet.
async fn fan_out(
    core: &mut Core,
    from: &str,
    g: &crate::state::Group,
    id: &str,
    message: &wa::Message,
    stanza_type: &str,
    only: Option<(&str, u16)>,
) -> Result<()> {
    let gjid = g.jid();
    let me = owner(from, 0);
    let key_id = signal::sender_key_id(&gjid, &me);
    let acc = core
        .account_untracked(from)
        .ok_or_else(|| PhoneError::UnknownAccount(from.to_string()))?;
    let mut secrets = std::mem::take(&mut acc.secrets);
    let plaintext = MessageUtils::encode_and_pad(message);
    let sealed = async {
        let distribution = signal::sender_key_distribution(&mut secrets, &gjid, &me).await?;
        let skmsg = signal::group_encrypt(&mut secrets, &gjid, &me, &plaintext).await?;
        Ok::<_, signal::SignalError>((distribution, skmsg))
    }
    .await;
    let shared = secrets
        .sender_key_shared
        .get(&gjid)
        .cloned()
        .unwrap_or_default();
    if let Some(acc) = core.account_untracked(from) {
        acc.secrets = secrets;
    }
    core.changes.sender_key(from, key_id);
    let (distribution, skmsg) = sealed?;
    let skdm = wa::Message {
        sender_key_distribution_message: MessageField::some(
            wa::message::SenderKeyDistributionMessage {
                group_id: Some(gjid.clone()),
                axolotl_sender_key_distribution_message: Some(distribution),
            },
        ),
        ..Default::default()
    };
    let skdm_plain = MessageUtils::encode_and_pad(&skdm);
    let lid_form = g.addressing == Addressing::Lid;
    let participant = core.device_jid(from, 0, lid_form);
    let (name, lid) = core
        .account(from)
        .map(|a| (a.name.clone(), a.lid.clone()))
        .unwrap_or_default();
    let media_type = phone::media_type_attr(message);
    let mut newly_shared = Vec::new();
    let targets: Vec<(String, u16)> = g
        .participants
        .iter()
        .flat_map(|m| {
            core.account(&m.phone)
                .map(|a| {
                    a.devices
                        .keys()
                        .map(|d| (m.phone.clone(), *d))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .filter(|(p, d)| !(p == from && *d == 0))
        .filter(|(p, d)| only.is_none_or(|(op, od)| op == p && od == *d))
        .collect();
    for (member, device) in targets {
        let mut kids = Vec::new();
        let who = owner(&member, device);
        if !shared.contains(&who) {
            match phone::seal(core, from, &member, device, &skdm_plain).await {
                Ok((enc_type, ciphertext)) => {
                    kids.push(
                        NodeBuilder::new("enc")
                            .attr("v", "2")
                            .attr("type", enc_type)
                            .bytes(ciphertext)
                            .build(),
                    );
                    newly_shared.push(who);
                }
                Err(e) => {
                    tracing::warn!(
                        "phone {from} cannot give its sender key to {member}:{device}: {e}"
                    );
                    continue;
                }
            }
        }
        let mut enc = NodeBuilder::new("enc").attr("v", "2").attr("type", "skmsg");
        if let Some(mt) = media_type {
            enc = enc.attr("mediatype", mt);
        }
        kids.push(enc.bytes(skmsg.clone()).build());
        let mut b = NodeBuilder::new("message")
            .attr("from", Jid::group(g.id.clone()))
            .attr("participant", participant.clone())
            .attr("id", id.to_string())
            .attr("t", t_now())
            .attr("type", stanza_type.to_string())
            .attr("notify", name.clone());
        b = if lid_form {
            b.attr("addressing_mode", "lid")
                .attr("participant_pn", Jid::pn(from.to_string()))
        } else {
            b.attr("participant_lid", Jid::lid(lid.clone()))
        };
        if let Some(edit) = phone::edit_attr(message) {
            b = b.attr("edit", edit);
        }
        let stanza = b.children(kids).build();
        if device == 0 {
            receive(core, &member, (from, 0), &g.id, &stanza).await;
        } else {
            core.add_origin(id, from, 0);
            core.deliver_to_companion(&member, device, id, &stanza);
        }
    }
    if !newly_shared.is_empty()
        && let Some(acc) = core.account_mut(from)
    {
        acc.secrets
            .sender_key_shared
            .entry(gjid.clone())
            .or_default()
            .extend(newly_shared);
    }
    Ok(())
}

/// A phone takes in a group message from device `sender`: the sender key distribution in
/// its pairwise `enc`, if any, then the `skmsg`; records it and answers with a delivery
/// receipt naming itself as the participant.
pub async fn receive(core: &mut Core, phone: &str, sender: (&str, u16), gid: &str, stanza: &Node) {
    let id = attr(stanza, "id").unwrap_or_default();
    if core.account(phone).is_some_and(|a| a.offline) {
        core.deliver_to_companion(phone, 0, &id, stanza);
        return;
    }
    let gjid = format!("{gid}@g.us");
    let who = owner(sender.0, sender.1);
    let mut message = None;
    for enc in stanza.children().unwrap_or_default() {
        if enc.tag != "enc" {
            continue;
        }
        let Some(wacore_binary::NodeContent::Bytes(ciphertext)) = &enc.content else {
            continue;
        };
        match attr(enc, "type").as_deref() {
            Some("pkmsg") | Some("msg") => {
                let Some(m) = phone::open_pairwise(core, phone, sender, &id, enc).await else {
                    continue;
                };
                if let Some(d) = m.sender_key_distribution_message.as_option()
                    && let Some(bytes) = &d.axolotl_sender_key_distribution_message
                {
                    let mut secrets = take_secrets(core, phone);
                    let result =
                        signal::process_distribution(&mut secrets, &gjid, &who, bytes).await;
                    put_secrets(core, phone, secrets);
                    match result {
                        Ok(()) => core
                            .changes
                            .sender_key(phone, signal::sender_key_id(&gjid, &who)),
                        Err(e) => tracing::warn!(
                            "phone {phone} cannot take {}'s sender key for {gid}: {e}",
                            sender.0
                        ),
                    }
                }
                if phone::has_content(&m) || m.protocol_message.is_set() {
                    message = Some(m);
                }
            }
            Some("skmsg") => {
                let mut secrets = take_secrets(core, phone);
                let result = signal::group_decrypt(&mut secrets, &gjid, &who, ciphertext).await;
                put_secrets(core, phone, secrets);
                core.changes
                    .sender_key(phone, signal::sender_key_id(&gjid, &who));
                match result {
                    Ok(plain) => match wacore::messages::decode_plaintext(&plain, 2) {
                        Ok(m) => message = Some(m),
                        Err(e) => {
                            tracing::warn!("phone {phone}: undecodable group message {id}: {e}")
                        }
                    },
                    Err(e) => {
                        tracing::warn!(
                            "phone {phone} cannot decrypt group message {id} from {}: {e}",
                            sender.0
                        );
                    }
                }
            }
            _ => {}
        }
    }
    let Some(message) = message else {
        return;
    };
    if message.protocol_message.is_set() {
        phone::amend(core, phone, sender.0, &message);
    } else {
        phone::take_in(core, phone, sender, &id, &message, gjid.clone());
    }
    if sender.0 != phone {
        let lid_form = super::group(core, gid).is_ok_and(|g| g.addressing == Addressing::Lid);
        let receipt = NodeBuilder::new("receipt")
            .attr("from", Jid::group(gid.to_string()))
            .attr("participant", core.device_jid(phone, 0, lid_form))
            .attr("id", id.clone())
            .attr("t", t_now())
            .build();
        phone::deliver_receipt(core, sender, &receipt, &id, None);
    }
}

/// The phone's secrets, moved out for a Signal operation ([`put_secrets`] puts them back).
fn take_secrets(core: &mut Core, phone: &str) -> crate::state::PhoneSecrets {
    core.account_untracked(phone)
        .map(|a| std::mem::take(&mut a.secrets))
        .unwrap_or_default()
}

fn put_secrets(core: &mut Core, phone: &str, secrets: crate::state::PhoneSecrets) {
    if let Some(acc) = core.account_untracked(phone) {
        acc.secrets = secrets;
    }
}

/// Someone left or was removed: every member phone drops its sender key for the group,
/// so what it sends next is under a new key the one who left never gets (as the app does).
pub fn rotate_sender_keys(core: &mut Core, gid: &str) {
    let gjid = format!("{gid}@g.us");
    let members: Vec<String> = super::group(core, gid)
        .map(|g| g.participants.iter().map(|m| m.phone.clone()).collect())
        .unwrap_or_default();
    for phone in members {
        let key = signal::sender_key_id(&gjid, &owner(&phone, 0));
        if let Some(acc) = core.account_mut(&phone) {
            acc.secrets.sender_keys.remove(&key);
            acc.secrets.sender_key_shared.remove(&gjid);
        }
    }
}

/// A device could not decrypt one of the phone's group messages (a retry receipt): the
/// phone gives that device its sender key again and sends the message once more, to it.
pub async fn resend(
    core: &mut Core,
    phone: &str,
    gid: &str,
    requester: (&str, u16),
    id: &str,
) -> Result<bool> {
    let Ok(g) = super::group(core, gid).cloned() else {
        return Ok(false);
    };
    let copy = core
        .account(phone)
        .and_then(|a| a.secrets.outbox.iter().find(|c| c.id == id))
        .cloned();
    let Some(copy) = copy else {
        return Ok(false);
    };
    if g.member(requester.0).is_none() {
        return Ok(false);
    }
    let message = wa::Message::decode_from_slice(&copy.message.0)
        .map_err(|e| PhoneError::BadMedia(format!("stored message {id}: {e}")))?;
    if let Some(acc) = core.account_mut(phone) {
        // A fresh pairwise session too, as for a 1:1 retry.
        acc.secrets
            .sessions
            .remove(&owner(requester.0, requester.1));
        if let Some(shared) = acc.secrets.sender_key_shared.get_mut(&g.jid()) {
            shared.remove(&owner(requester.0, requester.1));
        }
    }
    fan_out(
        core,
        phone,
        &g,
        id,
        &message,
        &copy.stanza_type,
        Some(requester),
    )
    .await?;
    Ok(true)
}
