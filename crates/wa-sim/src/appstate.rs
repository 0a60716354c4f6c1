//! App state (syncd), as WhatsApp's server keeps it: per account, five collections of
//! encrypted patches the account's devices write and read. The server cannot read them
//! (they are encrypted with the app-state key the phone shares with its companions); it
//! numbers them, hands out what a device has not seen, refuses a patch built on a stale
//! version (409, with what it missed), and tells the account's other devices with a
//! `<notification type="server_sync">`.
//!
//! The phone, which holds the key, also writes: when its user pins, archives, mutes or
//! renames ([`phone_action`]), it builds the patch as WhatsApp's app does (the record
//! encrypted and MACed, the collection's LTHash moved on, snapshot and patch MACs), and
//! reads every device's patches back to show the chats' state ([`chat_states`]).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use wacore::appstate::decode::decode_record;
use wacore::appstate::encode::encode_record;
use wacore::appstate::hash::{HashState, generate_patch_mac};
use wacore::appstate::keys::expand_app_state_keys;
use wacore::appstate::schemas::{self, Schema};
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};
use waproto::buffa::{Message as _, MessageField};
use waproto::whatsapp as wa;
use waproto::whatsapp::syncd_mutation::SyncdOperation;

use crate::conn::{child, children, iq_error, iq_result};
use crate::hub::{Core, new_id, t_now};
use crate::phone::attr;
use crate::state::B64;

/// The collections WhatsApp keeps.
pub const COLLECTIONS: [&str; 5] = [
    "critical_block",
    "critical_unblock_low",
    "regular_high",
    "regular_low",
    "regular",
];

/// The most patches one answer carries; the rest come with `has_more_patches`.
pub const PATCHES_PER_ANSWER: usize = 500;

/// One collection: its patches in order (patch `n` is version `n + 1`), each as stored,
/// with the version the server gave it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Collection {
    pub patches: Vec<B64>,
}

impl Collection {
    pub fn version(&self) -> u64 {
        self.patches.len() as u64
    }
}

fn collection_node(name: &str) -> NodeBuilder {
    NodeBuilder::new("collection").attr("name", name.to_string())
}

fn patches_node(patches: &[B64]) -> Node {
    NodeBuilder::new("patches")
        .children(
            patches
                .iter()
                .map(|p| NodeBuilder::new("patch").bytes(p.0.clone()).build()),
        )
        .build()
}

/// Patches after `version`, at most [`PATCHES_PER_ANSWER`], and whether more follow.
fn after(col: &Collection, version: u64) -> (&[B64], bool) {
    let from = (version as usize).min(col.patches.len());
    let rest = &col.patches[from..];
    let n = rest.len().min(PATCHES_PER_ANSWER);
    (&rest[..n], rest.len() > n)
}

/// Numbers `patch` as version `version` (the server's part) and stores it.
fn append(col: &mut Collection, mut patch: wa::SyncdPatch) -> u64 {
    let version = col.version() + 1;
    patch.version = MessageField::some(wa::SyncdVersion {
        version: Some(version),
    });
    col.patches.push(B64(patch.encode_to_vec()));
    version
}

/// Tells the account's devices but `except` (and the phone, which reads the server's
/// state itself) that collections moved on: one `server_sync` notification per collection
/// (clients such as Baileys read only the first `<collection>` of one).
fn notify(core: &mut Core, phone: &str, except: u16, moved: &[(String, u64)]) {
    for device in core.companions(phone).into_iter().filter(|d| *d != except) {
        for (name, version) in moved {
            let id = new_id();
            let node = NodeBuilder::new("notification")
                .attr("from", "s.whatsapp.net")
                .attr("type", "server_sync")
                .attr("id", id.clone())
                .attr("t", t_now())
                .children([collection_node(name)
                    .attr("version", version.to_string())
                    .build()])
                .build();
            core.deliver_to_companion(phone, device, &id, &node);
        }
    }
}

/// `<iq xmlns="w:sync:app:state" type="set"><sync><collection name version
/// return_snapshot>[<patch>…]</collection>…</sync>`: a collection with patches is a write
/// (taken when built on the current version, else 409 with the patches missed); one
/// without is a fetch of the patches after `version`.
pub fn sync(core: &mut Core, phone: &str, device: u16, id: &str, node: &Node) -> Node {
    let Some(sync) = child(node, "sync") else {
        return iq_error(id, 400, "bad-request");
    };
    let mut answers = Vec::new();
    let mut moved = Vec::new();
    for c in children(sync).iter().filter(|c| c.tag == "collection") {
        let name = attr(c, "name").unwrap_or_default();
        let error = |code: u16, text: &str| {
            collection_node(&name)
                .attr("type", "error")
                .children([NodeBuilder::new("error")
                    .attr("code", code.to_string())
                    .attr("text", text.to_string())
                    .build()])
        };
        if !COLLECTIONS.contains(&name.as_str()) {
            answers.push(error(400, "bad-request").build());
            continue;
        }
        let Some(version) = attr(c, "version")
            .map(|v| v.parse::<u64>())
            .unwrap_or(Ok(0))
            .ok()
        else {
            answers.push(error(400, "bad-request").build());
            continue;
        };
        let uploads: Vec<&Node> = children(c).iter().filter(|p| p.tag == "patch").collect();
        let Some(acc) = core.account_mut(phone) else {
            return iq_error(id, 404, "item-not-found");
        };
        let col = acc.app_state.entry(name.clone()).or_default();
        if uploads.is_empty() {
            let (patches, more) = after(col, version);
            let mut answer = collection_node(&name)
                .attr("version", col.version().to_string())
                .attr("has_more_patches", more.to_string());
            if !patches.is_empty() {
                answer = answer.children([patches_node(patches)]);
            }
            answers.push(answer.build());
            continue;
        }
        if version != col.version() {
            let (patches, more) = after(col, version);
            let answer = error(409, "conflict")
                .attr("version", col.version().to_string())
                .attr("has_more_patches", more.to_string());
            let mut kids = vec![
                NodeBuilder::new("error")
                    .attr("code", "409")
                    .attr("text", "conflict")
                    .build(),
            ];
            if !patches.is_empty() {
                kids.push(patches_node(patches));
            }
            answers.push(answer.children(kids).build());
            continue;
        }
        let decoded: Option<Vec<wa::SyncdPatch>> = uploads
            .iter()
            .map(|p| {
                crate::conn::bytes_of(p)
                    .and_then(|b| wa::SyncdPatch::decode_from_slice(b).ok())
                    .filter(|p| !p.mutations.is_empty())
            })
            .collect();
        let Some(decoded) = decoded else {
            answers.push(error(400, "bad-request").build());
            continue;
        };
        let mut new = version;
        for patch in decoded {
            new = append(col, patch);
        }
        core.changes.account(phone);
        answers.push(
            collection_node(&name)
                .attr("version", new.to_string())
                .build(),
        );
        moved.push((name, new));
    }
    notify(core, phone, device, &moved);
    iq_result(id)
        .children([NodeBuilder::new("sync").children(answers).build()])
        .build()
}

/// What the phone's user does to a chat.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChatAction {
    #[serde(default)]
    pub pin: Option<bool>,
    #[serde(default)]
    pub archive: Option<bool>,
    /// `true` mutes for good, `false` unmutes, a number mutes until then (unix ms).
    #[serde(default)]
    pub mute: Option<serde_json::Value>,
    /// The name the phone's address book gives the contact.
    #[serde(default)]
    pub name: Option<String>,
    /// Messages of the chat (ids) the user stars.
    #[serde(default)]
    pub star: Vec<String>,
    /// Messages of the chat (ids) the user unstars.
    #[serde(default)]
    pub unstar: Vec<String>,
    /// Messages of the chat (ids) the user deletes for themself (not for everyone).
    #[serde(default)]
    pub delete_for_me: Vec<String>,
}

/// A message a chat action names: its id and whether the phone's account sent it.
pub struct MessageRef {
    pub id: String,
    pub from_me: bool,
    pub timestamp: i64,
}

/// Why a chat action cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("nothing to do: give pin, archive, mute, name, star, unstar or deleteForMe")]
    Empty,
    #[error("the phone has no message {0} in that chat")]
    UnknownMessage(String),
    #[error("mute is true, false or a time in unix milliseconds in the future")]
    BadMute,
    #[error("name is empty or over 100 characters")]
    BadName,
    #[error("no account for {0}")]
    UnknownAccount(String),
}

/// One mutation to write: its schema, its index parts and its value.
type Planned = (&'static Schema, Vec<String>, wa::SyncActionValue);

/// The mutations an action makes; `message` finds a message the action names.
fn mutations(
    chat: &str,
    action: &ChatAction,
    message: &dyn Fn(&str) -> Option<MessageRef>,
) -> Result<Vec<Planned>, ActionError> {
    let now = crate::state::now_secs() as i64 * 1000;
    let value = |f: &dyn Fn(&mut wa::SyncActionValue)| {
        let mut v = wa::SyncActionValue {
            timestamp: Some(now),
            ..Default::default()
        };
        f(&mut v);
        v
    };
    let chat_index = |schema: &Schema| vec![schema.name.to_string(), chat.to_string()];
    let mut out = Vec::new();
    if let Some(pinned) = action.pin {
        out.push((
            &schemas::PIN,
            chat_index(&schemas::PIN),
            value(&|v| {
                v.pin_action = MessageField::some(wa::sync_action_value::PinAction {
                    pinned: Some(pinned),
                })
            }),
        ));
    }
    if let Some(archived) = action.archive {
        out.push((
            &schemas::ARCHIVE,
            chat_index(&schemas::ARCHIVE),
            value(&|v| {
                v.archive_chat_action =
                    MessageField::some(wa::sync_action_value::ArchiveChatAction {
                        archived: Some(archived),
                        ..Default::default()
                    })
            }),
        ));
    }
    if let Some(mute) = &action.mute {
        let (muted, until) = match mute {
            serde_json::Value::Bool(true) => (true, -1),
            serde_json::Value::Bool(false) => (false, 0),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(t) if t > now => (true, t),
                _ => return Err(ActionError::BadMute),
            },
            _ => return Err(ActionError::BadMute),
        };
        out.push((
            &schemas::MUTE,
            chat_index(&schemas::MUTE),
            value(&|v| {
                v.mute_action = MessageField::some(wa::sync_action_value::MuteAction {
                    muted: Some(muted),
                    mute_end_timestamp: Some(until),
                    ..Default::default()
                })
            }),
        ));
    }
    if let Some(name) = &action.name {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(ActionError::BadName);
        }
        out.push((
            &schemas::CONTACT,
            chat_index(&schemas::CONTACT),
            value(&|v| {
                v.contact_action = MessageField::some(wa::sync_action_value::ContactAction {
                    full_name: Some(name.to_string()),
                    first_name: name.split_whitespace().next().map(str::to_string),
                    ..Default::default()
                })
            }),
        ));
    }
    let found = |id: &String| message(id).ok_or_else(|| ActionError::UnknownMessage(id.clone()));
    let key_index = |schema: &Schema, m: &MessageRef| {
        let from_me = if m.from_me { "1" } else { "0" };
        vec![
            schema.name.to_string(),
            chat.to_string(),
            m.id.clone(),
            from_me.to_string(),
            "0".to_string(),
        ]
    };
    for (ids, starred) in [(&action.star, true), (&action.unstar, false)] {
        for id in ids {
            let m = found(id)?;
            out.push((
                &schemas::STAR,
                key_index(&schemas::STAR, &m),
                value(&|v| {
                    v.star_action = MessageField::some(wa::sync_action_value::StarAction {
                        starred: Some(starred),
                    })
                }),
            ));
        }
    }
    for id in &action.delete_for_me {
        let m = found(id)?;
        out.push((
            &schemas::DELETE_MESSAGE_FOR_ME,
            key_index(&schemas::DELETE_MESSAGE_FOR_ME, &m),
            value(&|v| {
                v.delete_message_for_me_action =
                    MessageField::some(wa::sync_action_value::DeleteMessageForMeAction {
                        delete_media: Some(true),
                        message_timestamp: Some(m.timestamp * 1000),
                    })
            }),
        ));
    }
    if out.is_empty() {
        return Err(ActionError::Empty);
    }
    Ok(out)
}

/// The LTHash state of a collection after all its patches, with the value MAC of each
/// index now set (what a device rebuilds from the patches, without decrypting them).
fn replay(col: &Collection) -> HashState {
    let mut state = HashState::default();
    for p in &col.patches {
        let Ok(patch) = wa::SyncdPatch::decode_from_slice(&p.0) else {
            continue;
        };
        apply_macs(&mut state, &patch.mutations);
        state.version += 1;
    }
    state
}

fn apply_macs(state: &mut HashState, mutations: &[wa::SyncdMutation]) {
    let map = state.index_value_map.clone();
    let key = |index_mac: &[u8]| base64::engine::general_purpose::STANDARD.encode(index_mac);
    let (_, result) = state.update_hash(mutations, |index_mac, _| {
        Ok(map.get(&key(index_mac)).cloned())
    });
    if let Err(e) = result {
        tracing::warn!("app-state patch with an unknown operation: {e}");
    }
    for m in mutations {
        let Some(record) = m.record.as_option() else {
            continue;
        };
        let Some(index_mac) = record.index.as_option().and_then(|i| i.blob.as_deref()) else {
            continue;
        };
        let remove = m.operation.is_some_and(|op| op == SyncdOperation::REMOVE);
        if remove {
            state.index_value_map.remove(&key(index_mac));
        } else if let Some(blob) = record.value.as_option().and_then(|v| v.blob.as_deref())
            && blob.len() >= 32
        {
            state
                .index_value_map
                .insert(key(index_mac), blob[blob.len() - 32..].to_vec());
        }
    }
}

/// The phone's user acts on the chat with `chat` (a JID): one patch per collection the
/// action touches, as WhatsApp's app writes them, and the account's devices told. Returns
/// the collections and their new versions.
pub fn phone_action(
    core: &mut Core,
    phone: &str,
    chat: &Jid,
    action: &ChatAction,
) -> Result<Vec<(String, u64)>, ActionError> {
    let user = chat.user.to_string();
    let message = |id: &str| {
        core.account(phone)?
            .secrets
            .messages
            .get(id)
            .filter(|m| {
                let peer = if m.from_me { &m.to } else { &m.from };
                peer.split([':', '@']).next() == Some(user.as_str()) || *peer == chat.to_string()
            })
            .map(|m| MessageRef {
                id: m.id.clone(),
                from_me: m.from_me,
                timestamp: m.timestamp as i64,
            })
    };
    let planned = mutations(&chat.to_string(), action, &message)?;
    write(core, phone, planned)
}

/// The phone's user renames the account: a `setting_pushName` mutation, so its companions
/// show the new name.
pub fn push_name(
    core: &mut Core,
    phone: &str,
    name: &str,
) -> Result<Vec<(String, u64)>, ActionError> {
    let value = wa::SyncActionValue {
        timestamp: Some(crate::state::now_secs() as i64 * 1000),
        push_name_setting: MessageField::some(wa::sync_action_value::PushNameSetting {
            name: Some(name.to_string()),
        }),
        ..Default::default()
    };
    let index = vec![schemas::SETTING_PUSH_NAME.name.to_string()];
    write(
        core,
        phone,
        vec![(&schemas::SETTING_PUSH_NAME, index, value)],
    )
}

/// The phone shares the account's NCT salt with its devices: a `nct_salt_sync` mutation
/// in `regular_high`, as WhatsApp provisions it (see `tokens`). Nothing for an account
/// without a salt.
pub fn nct_salt(core: &mut Core, phone: &str) -> Result<Vec<(String, u64)>, ActionError> {
    let Some(salt) = core
        .account(phone)
        .ok_or_else(|| ActionError::UnknownAccount(phone.to_string()))?
        .nct_salt
        .clone()
    else {
        return Ok(Vec::new());
    };
    let value = wa::SyncActionValue {
        timestamp: Some(crate::state::now_secs() as i64 * 1000),
        nct_salt_sync_action: MessageField::some(wa::sync_action_value::NctSaltSyncAction {
            salt: Some(salt.0),
        }),
        ..Default::default()
    };
    let index = vec![schemas::NCT_SALT_SYNC.name.to_string()];
    write(core, phone, vec![(&schemas::NCT_SALT_SYNC, index, value)])
}

/// The app state of a made-up past: the first `pinned` chats pinned, the next `archived`
/// archived, the first `muted` muted.
pub fn made_up(
    core: &mut Core,
    phone: &str,
    spec: &crate::history::HistorySpec,
) -> Result<Vec<(String, u64)>, ActionError> {
    let mut planned = Vec::new();
    for c in 0..spec.chats {
        let action = ChatAction {
            pin: (c < spec.pinned).then_some(true),
            archive: (c >= spec.pinned && c < spec.pinned + spec.archived).then_some(true),
            mute: (c < spec.muted).then_some(serde_json::Value::Bool(true)),
            name: None,
            star: Vec::new(),
            unstar: Vec::new(),
            delete_for_me: Vec::new(),
        };
        if action.pin.is_none() && action.archive.is_none() && action.mute.is_none() {
            continue;
        }
        let chat = format!("{}@s.whatsapp.net", crate::history::made_up_number(c));
        planned.extend(mutations(&chat, &action, &|_| None)?);
    }
    if planned.is_empty() {
        return Ok(Vec::new());
    }
    write(core, phone, planned)
}

/// Writes mutations from the phone: one patch per collection.
fn write(
    core: &mut Core,
    phone: &str,
    planned: Vec<Planned>,
) -> Result<Vec<(String, u64)>, ActionError> {
    let acc = core
        .account_mut(phone)
        .ok_or_else(|| ActionError::UnknownAccount(phone.to_string()))?;
    let keys = expand_app_state_keys(&acc.secrets.app_state_key.0);
    let key_id = acc.secrets.app_state_key_id.0.clone();
    let mut by_collection: BTreeMap<&'static str, Vec<wa::SyncdMutation>> = BTreeMap::new();
    for (schema, index, value) in planned {
        let index = serde_json::to_vec(&index).expect("strings serialize");
        let iv: [u8; 16] = rand::random();
        let (mutation, _) = encode_record(
            SyncdOperation::SET,
            &index,
            &value,
            &keys,
            &key_id,
            &iv,
            schema.version as i32,
        );
        by_collection
            .entry(schema.collection.as_str())
            .or_default()
            .push(mutation);
    }
    let mut moved = Vec::new();
    for (name, mutations) in by_collection {
        let col = acc.app_state.entry(name.to_string()).or_default();
        let mut state = replay(col);
        apply_macs(&mut state, &mutations);
        state.version += 1;
        let mut patch = wa::SyncdPatch {
            snapshot_mac: Some(state.generate_snapshot_mac(name, &keys.snapshot_mac)),
            key_id: MessageField::some(wa::KeyId {
                id: Some(key_id.clone()),
            }),
            mutations,
            ..Default::default()
        };
        patch.patch_mac = Some(generate_patch_mac(
            &patch,
            name,
            &keys.patch_mac,
            state.version,
        ));
        moved.push((name.to_string(), append(col, patch)));
    }
    core.changes.account(phone);
    notify(core, phone, 0, &moved);
    Ok(moved)
}

/// A chat's state as the phone shows it, from every device's patches.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChatState {
    pub pinned: bool,
    pub archived: bool,
    pub muted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mute_until: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Marked unread by hand (`markChatAsRead` with `read: false`).
    pub marked_unread: bool,
    /// The chat's messages (ids) starred on some device.
    #[serde(skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub starred: std::collections::BTreeSet<String>,
    /// The chat's messages (ids) deleted for the account on some device.
    #[serde(skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub deleted_for_me: std::collections::BTreeSet<String>,
}

/// Every chat some device pinned, archived, muted, named or marked, by JID: the phone decrypts the
/// account's patches in order (later ones win).
pub fn chat_states(core: &Core, phone: &str) -> BTreeMap<String, ChatState> {
    let mut out: BTreeMap<String, ChatState> = BTreeMap::new();
    let Some(acc) = core.account(phone) else {
        return out;
    };
    let keys = expand_app_state_keys(&acc.secrets.app_state_key.0);
    for col in acc.app_state.values() {
        for p in &col.patches {
            let Ok(patch) = wa::SyncdPatch::decode_from_slice(&p.0) else {
                continue;
            };
            let key_id = patch
                .key_id
                .as_option()
                .and_then(|k| k.id.clone())
                .unwrap_or_default();
            for m in &patch.mutations {
                let Some(record) = m.record.as_option() else {
                    continue;
                };
                let op = m
                    .operation
                    .and_then(|o| o.as_known())
                    .unwrap_or(SyncdOperation::SET);
                let Ok((mutation, _)) = decode_record(op, record, &keys, &key_id, true) else {
                    continue;
                };
                let (Some(kind), Some(chat)) = (mutation.index.first(), mutation.index.get(1))
                else {
                    continue;
                };
                let Some(value) = mutation.action_value else {
                    continue;
                };
                let state = out.entry(chat.clone()).or_default();
                match kind.as_str() {
                    "pin_v1" => {
                        state.pinned = value
                            .pin_action
                            .as_option()
                            .and_then(|a| a.pinned)
                            .unwrap_or(false)
                    }
                    "archive" => {
                        state.archived = value
                            .archive_chat_action
                            .as_option()
                            .and_then(|a| a.archived)
                            .unwrap_or(false)
                    }
                    "mute" => {
                        let a = value.mute_action.as_option();
                        state.muted = a.and_then(|a| a.muted).unwrap_or(false);
                        state.mute_until = a
                            .and_then(|a| a.mute_end_timestamp)
                            .filter(|t| state.muted && *t > 0);
                    }
                    "markChatAsRead" => {
                        state.marked_unread = value
                            .mark_chat_as_read_action
                            .as_option()
                            .and_then(|a| a.read)
                            .is_some_and(|read| !read)
                    }
                    "contact" => {
                        state.name = value
                            .contact_action
                            .as_option()
                            .and_then(|a| a.full_name.clone())
                    }
                    "star" => {
                        let Some(id) = mutation.index.get(2) else {
                            continue;
                        };
                        let starred = value
                            .star_action
                            .as_option()
                            .and_then(|a| a.starred)
                            .unwrap_or(false);
                        if starred {
                            state.starred.insert(id.clone());
                        } else {
                            state.starred.remove(id);
                        }
                    }
                    "deleteMessageForMe" => {
                        if let Some(id) = mutation.index.get(2) {
                            state.deleted_for_me.insert(id.clone());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Snapshot;

    fn core() -> Core {
        let mut core = Core::new(Snapshot::default(), std::env::temp_dir());
        let acc = crate::phone::new_account(&mut core, "15550930001", "A").unwrap();
        core.insert_account(acc);
        core
    }

    fn request(name: &str, version: u64, patch: Option<&wa::SyncdPatch>) -> Node {
        let mut c = collection_node(name).attr("version", version.to_string());
        if let Some(p) = patch {
            c = c.children([NodeBuilder::new("patch").bytes(p.encode_to_vec()).build()]);
        }
        NodeBuilder::new("iq")
            .children([NodeBuilder::new("sync").children([c.build()]).build()])
            .build()
    }

    fn answer(node: &Node) -> &Node {
        &children(child(node, "sync").unwrap())[0]
    }

    fn patch() -> wa::SyncdPatch {
        wa::SyncdPatch {
            mutations: vec![wa::SyncdMutation::default()],
            ..Default::default()
        }
    }

    #[test]
    fn writes_are_numbered_stale_ones_get_409_with_what_they_missed() {
        let mut core = core();
        let p = patch();
        let ok = sync(
            &mut core,
            "15550930001",
            1,
            "1",
            &request("regular", 0, Some(&p)),
        );
        assert_eq!(attr(answer(&ok), "version").as_deref(), Some("1"));

        // Built on version 0 again: refused, with patch 1.
        let stale = sync(
            &mut core,
            "15550930001",
            2,
            "2",
            &request("regular", 0, Some(&p)),
        );
        let c = answer(&stale);
        assert_eq!(attr(c, "type").as_deref(), Some("error"));
        assert_eq!(
            attr(child(c, "error").unwrap(), "code").as_deref(),
            Some("409")
        );
        let missed = children(child(c, "patches").unwrap());
        assert_eq!(missed.len(), 1);
        let served =
            wa::SyncdPatch::decode_from_slice(crate::conn::bytes_of(&missed[0]).unwrap()).unwrap();
        assert_eq!(served.version.as_option().and_then(|v| v.version), Some(1));

        // A fetch from 0 gets it; from 1 nothing.
        let got = sync(
            &mut core,
            "15550930001",
            2,
            "3",
            &request("regular", 0, None),
        );
        assert_eq!(children(child(answer(&got), "patches").unwrap()).len(), 1);
        let none = sync(
            &mut core,
            "15550930001",
            2,
            "4",
            &request("regular", 1, None),
        );
        assert!(child(answer(&none), "patches").is_none());
        assert_eq!(attr(answer(&none), "version").as_deref(), Some("1"));

        // An unknown collection or an empty patch is a 400, and nothing is stored.
        for bad in [
            request("favourites", 0, Some(&p)),
            request("regular", 1, Some(&wa::SyncdPatch::default())),
        ] {
            let r = sync(&mut core, "15550930001", 1, "5", &bad);
            assert_eq!(
                attr(child(answer(&r), "error").unwrap(), "code").as_deref(),
                Some("400")
            );
        }
        assert_eq!(
            core.account("15550930001").unwrap().app_state["regular"].version(),
            1
        );
    }
}
