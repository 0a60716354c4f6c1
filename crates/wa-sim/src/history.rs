//! History sync: what a phone hands a device it has just linked, as WhatsApp's app does.
//!
//! Right after the app-state keys, the phone sends its new companion
//! `HISTORY_SYNC_NOTIFICATION` protocol messages: an `INITIAL_BOOTSTRAP` chunk with the
//! chats and their recent messages, `RECENT` chunks with the rest, then `PUSH_NAME` with the
//! names of the people in them. Clients wait for the first one after a new link (Baileys
//! holds its events until it comes). Each chunk is a zlib-compressed `HistorySync` carried
//! inline (`initialHistBootstrapInlinePayload`) rather than as a media blob.
//!
//! The chats are the phone's own (what it sent and received through the simulator) plus,
//! for an account created with a [`HistorySpec`], a made-up past of that size: realistic
//! accounts for benchmarks, without storing the messages.

use std::collections::BTreeMap;
use std::io::Write as _;

use serde::{Deserialize, Serialize};
use waproto::buffa::{Message as _, MessageField};
use waproto::whatsapp as wa;
use waproto::whatsapp::message::protocol_message::Type as ProtocolType;

use crate::state::{Account, now_secs};

/// How many messages one chunk carries at most (WhatsApp's are of this order).
pub const MESSAGES_PER_CHUNK: usize = 2_000;
/// The most messages a made-up past may have in all.
pub const MAX_MESSAGES: u64 = 200_000;
/// The most contacts or chats a made-up past may have.
pub const MAX_CONTACTS: u32 = 50_000;

/// A made-up past for an account (`"history"` of `POST /admin/phones`): `contacts` people with
/// push names, `chats` one-to-one chats (with those people first), `messagesPerChat`
/// messages in each, alternating between them and the account, a minute apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HistorySpec {
    #[serde(default)]
    pub contacts: u32,
    #[serde(default)]
    pub chats: u32,
    #[serde(default)]
    pub messages_per_chat: u32,
    /// How many of the chats are pinned, archived and muted (the first ones, the next
    /// ones, and the first ones again), as app state the account's devices sync.
    #[serde(default)]
    pub pinned: u32,
    #[serde(default)]
    pub archived: u32,
    #[serde(default)]
    pub muted: u32,
}

impl HistorySpec {
    /// Why WhatsApp's app could not hold this past, if it could not.
    pub fn problem(&self) -> Option<String> {
        if self.contacts > MAX_CONTACTS || self.chats > MAX_CONTACTS {
            return Some(format!(
                "at most {MAX_CONTACTS} contacts and {MAX_CONTACTS} chats"
            ));
        }
        if self.pinned > 3 {
            return Some("at most 3 pinned chats, as WhatsApp allows".into());
        }
        if self.pinned + self.archived > self.chats || self.muted > self.chats {
            return Some("pinned + archived and muted are at most chats".into());
        }
        let total = u64::from(self.chats) * u64::from(self.messages_per_chat);
        if total > MAX_MESSAGES {
            return Some(format!(
                "chats × messagesPerChat is {total}; at most {MAX_MESSAGES}"
            ));
        }
        None
    }
}

/// The phone number of the `i`-th made-up person (`+1 999`, a range no real number uses).
pub fn made_up_number(i: u32) -> String {
    format!("1999{i:07}")
}

fn user_jid(number: &str) -> String {
    format!("{number}@s.whatsapp.net")
}

/// One chat as history sync carries it.
struct Chat {
    jid: String,
    name: Option<String>,
    messages: Vec<wa::WebMessageInfo>,
}

fn text_message(
    chat: &str,
    id: String,
    from_me: bool,
    text: String,
    timestamp: u64,
    read: bool,
) -> wa::WebMessageInfo {
    use wa::web_message_info::Status;
    wa::WebMessageInfo {
        key: MessageField::some(wa::MessageKey {
            remote_jid: Some(chat.to_string()),
            from_me: Some(from_me),
            id: Some(id),
            participant: None,
        }),
        message: MessageField::some(wa::Message {
            conversation: Some(text),
            ..Default::default()
        }),
        message_timestamp: Some(timestamp),
        status: Some(if read {
            Status::READ
        } else {
            Status::DELIVERY_ACK
        }),
        ..Default::default()
    }
}

/// The account's chats: its own messages (texts and captions; what has no text is left
/// out), then the made-up ones. Oldest message first in each chat.
fn chats(acc: &Account, names: &dyn Fn(&str) -> Option<String>) -> Vec<Chat> {
    let mut own: BTreeMap<String, Vec<wa::WebMessageInfo>> = BTreeMap::new();
    for m in acc.secrets.messages.as_slice() {
        let Some(text) = m.text.clone().or_else(|| m.caption.clone()) else {
            continue;
        };
        if m.revoked {
            continue;
        }
        let peer = if m.from_me { &m.to } else { &m.from };
        let peer = peer.split(':').next().unwrap_or(peer);
        let chat = if peer.contains('@') {
            peer.to_string()
        } else {
            user_jid(peer)
        };
        let entry = own.entry(chat.clone()).or_default();
        entry.push(text_message(
            &chat,
            m.id.clone(),
            m.from_me,
            text,
            m.timestamp,
            m.status == "read",
        ));
    }
    let mut list: Vec<Chat> = own
        .into_iter()
        .map(|(jid, messages)| Chat {
            name: names(jid.split('@').next().unwrap_or_default()),
            jid,
            messages,
        })
        .collect();

    let Some(spec) = acc.history else {
        return list;
    };
    let now = now_secs();
    let per_chat = u64::from(spec.messages_per_chat);
    for c in 0..spec.chats {
        let number = made_up_number(c);
        let jid = user_jid(&number);
        let messages = (0..spec.messages_per_chat)
            .map(|k| {
                // The newest chat first, each chat's messages a minute apart, all in the past.
                let age = (u64::from(c) * per_chat + (per_chat - u64::from(k))) * 60;
                text_message(
                    &jid,
                    format!("3EB0{:08X}{:08X}", c, k),
                    k % 2 == 1,
                    format!("Message {} in chat {}", k + 1, c + 1),
                    now.saturating_sub(age),
                    true,
                )
            })
            .collect();
        list.push(Chat {
            name: (c < spec.contacts).then(|| format!("Contact {}", c + 1)),
            jid,
            messages,
        });
    }
    list
}

/// The push names history sync gives: of the made-up contacts, and of the simulator's
/// accounts the phone chatted with.
fn pushnames(acc: &Account, chats: &[Chat]) -> Vec<wa::Pushname> {
    let mut names: Vec<wa::Pushname> = chats
        .iter()
        .filter_map(|c| {
            c.name.clone().map(|n| wa::Pushname {
                id: Some(c.jid.clone()),
                pushname: Some(n),
            })
        })
        .collect();
    if let Some(spec) = acc.history {
        for i in spec.chats..spec.contacts {
            names.push(wa::Pushname {
                id: Some(user_jid(&made_up_number(i))),
                pushname: Some(format!("Contact {}", i + 1)),
            });
        }
    }
    names
}

fn compress(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(bytes).expect("writing to a Vec cannot fail");
    z.finish().expect("writing to a Vec cannot fail")
}

fn notification(sync: &wa::HistorySync) -> wa::Message {
    use wa::message::HistorySyncType as T;
    let ty = match sync.sync_type {
        wa::history_sync::HistorySyncType::INITIAL_BOOTSTRAP => T::INITIAL_BOOTSTRAP,
        wa::history_sync::HistorySyncType::PUSH_NAME => T::PUSH_NAME,
        _ => T::RECENT,
    };
    let oldest = sync
        .conversations
        .iter()
        .flat_map(|c| c.messages.iter())
        .filter_map(|m| m.message.as_option().and_then(|i| i.message_timestamp))
        .min();
    wa::Message {
        protocol_message: MessageField::some(wa::message::ProtocolMessage {
            r#type: Some(ProtocolType::HISTORY_SYNC_NOTIFICATION),
            history_sync_notification: MessageField::some(wa::message::HistorySyncNotification {
                sync_type: Some(ty),
                chunk_order: sync.chunk_order,
                progress: sync.progress,
                oldest_msg_in_chunk_timestamp_sec: oldest.map(|t| t as i64),
                initial_hist_bootstrap_inline_payload: Some(compress(&sync.encode_to_vec())),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The history-sync messages the phone sends a device it just linked, in order.
/// `names` gives the simulator's name for an account the phone chatted with.
/// `tokens` gives the valid trusted-contact token an account gave this one, which the chat
/// carries (with the time this account last gave its own), as WhatsApp's history does.
pub fn notifications(
    acc: &Account,
    names: &dyn Fn(&str) -> Option<String>,
    tokens: &dyn Fn(&str) -> Option<crate::tokens::Grant>,
) -> Vec<wa::Message> {
    use wa::history_sync::HistorySyncType as T;
    let chats = chats(acc, names);
    let pushnames = pushnames(acc, &chats);

    // Chunks of whole chats, at most MESSAGES_PER_CHUNK messages each (a bigger chat is a
    // chunk of its own).
    let mut chunks: Vec<Vec<wa::Conversation>> = vec![Vec::new()];
    let mut in_chunk = 0;
    for chat in chats {
        let n = chat.messages.len();
        if in_chunk > 0 && in_chunk + n > MESSAGES_PER_CHUNK {
            chunks.push(Vec::new());
            in_chunk = 0;
        }
        in_chunk += n;
        let last = chat
            .messages
            .iter()
            .filter_map(|m| m.message_timestamp)
            .max();
        let peer = chat.jid.split('@').next().unwrap_or_default();
        let received = tokens(peer);
        let given = acc.tokens_issued.get(peer);
        chunks
            .last_mut()
            .expect("never empty")
            .push(wa::Conversation {
                tc_token: received.as_ref().map(|g| g.token.0.clone()),
                tc_token_timestamp: received.as_ref().map(|g| g.t as u64),
                tc_token_sender_timestamp: given.map(|g| g.t as u64),
                id: chat.jid,
                name: chat.name,
                last_msg_timestamp: last,
                conversation_timestamp: last,
                unread_count: Some(0),
                end_of_history_transfer: Some(true),
                messages: chat
                    .messages
                    .into_iter()
                    .enumerate()
                    .map(|(i, m)| wa::HistorySyncMsg {
                        message: MessageField::some(m),
                        msg_order_id: Some(i as u64 + 1),
                    })
                    .collect(),
                ..Default::default()
            });
    }
    let count = chunks.len() as u32;
    let mut out: Vec<wa::Message> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, conversations)| {
            let i = i as u32;
            notification(&wa::HistorySync {
                sync_type: if i == 0 {
                    T::INITIAL_BOOTSTRAP
                } else {
                    T::RECENT
                },
                conversations,
                chunk_order: Some(i),
                progress: Some((i + 1) * 100 / count),
                // The bootstrap also carries the account's NCT salt.
                nct_salt: if i == 0 {
                    acc.nct_salt.as_ref().map(|s| s.0.clone())
                } else {
                    None
                },
                ..Default::default()
            })
        })
        .collect();
    out.push(notification(&wa::HistorySync {
        sync_type: T::PUSH_NAME,
        pushnames,
        chunk_order: Some(0),
        progress: Some(100),
        ..Default::default()
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(m: &wa::Message) -> wa::HistorySync {
        let n = m
            .protocol_message
            .as_option()
            .unwrap()
            .history_sync_notification
            .as_option()
            .unwrap();
        let inflated = wacore_binary::zlib_pool::decompress_zlib_pooled(
            n.initial_hist_bootstrap_inline_payload.as_ref().unwrap(),
            64 << 20,
        )
        .unwrap();
        wa::HistorySync::decode_from_slice(&inflated).unwrap()
    }

    fn account(spec: Option<HistorySpec>) -> Account {
        let mut core = crate::hub::Core::new(Default::default(), std::env::temp_dir());
        let mut acc = crate::phone::new_account(&mut core, "15550001111", "n").unwrap();
        acc.history = spec;
        acc
    }

    #[test]
    fn an_empty_account_still_gets_a_bootstrap_and_push_names() {
        let acc = account(None);
        let list = notifications(&acc, &|_| None, &|_| None);
        assert_eq!(list.len(), 2);
        let first = decode(&list[0]);
        // The bootstrap hands the device the account's NCT salt.
        assert_eq!(first.nct_salt, acc.nct_salt.clone().map(|s| s.0));
        assert!(first.nct_salt.is_some());
        assert_eq!(
            first.sync_type,
            wa::history_sync::HistorySyncType::INITIAL_BOOTSTRAP
        );
        assert!(first.conversations.is_empty());
        assert_eq!(first.progress, Some(100));
        assert_eq!(
            decode(&list[1]).sync_type,
            wa::history_sync::HistorySyncType::PUSH_NAME
        );
    }

    #[test]
    fn a_made_up_past_comes_in_chunks_with_every_message_and_name() {
        let spec = HistorySpec {
            contacts: 30,
            chats: 25,
            messages_per_chat: 300,
            ..Default::default()
        };
        let list = notifications(&account(Some(spec)), &|_| None, &|_| None);
        let syncs: Vec<wa::HistorySync> = list.iter().map(decode).collect();
        let (names, chunks) = syncs.split_last().unwrap();
        // 25 × 300 = 7,500 messages: six chats a chunk.
        assert_eq!(chunks.len(), 5);
        assert_eq!(
            chunks[0].sync_type,
            wa::history_sync::HistorySyncType::INITIAL_BOOTSTRAP
        );
        assert!(
            chunks[1..]
                .iter()
                .all(|c| c.sync_type == wa::history_sync::HistorySyncType::RECENT)
        );
        assert_eq!(chunks.last().unwrap().progress, Some(100));
        let convs: Vec<&wa::Conversation> =
            chunks.iter().flat_map(|c| c.conversations.iter()).collect();
        assert_eq!(convs.len(), 25);
        assert!(convs.iter().all(|c| c.messages.len() == 300));
        assert_eq!(convs[0].name.as_deref(), Some("Contact 1"));
        assert_eq!(names.pushnames.len(), 30);
        let ids: std::collections::HashSet<_> = convs
            .iter()
            .flat_map(|c| c.messages.iter())
            .map(|m| {
                m.message
                    .as_option()
                    .unwrap()
                    .key
                    .as_option()
                    .unwrap()
                    .id
                    .clone()
            })
            .collect();
        assert_eq!(ids.len(), 7_500, "message ids are unique");
        assert!(
            HistorySpec {
                contacts: 1,
                chats: 1_000,
                messages_per_chat: 1_000,
                ..Default::default()
            }
            .problem()
            .is_some()
        );
        assert!(
            HistorySpec {
                chats: 3,
                pinned: 2,
                archived: 2,
                ..Default::default()
            }
            .problem()
            .is_some(),
            "more pinned and archived chats than chats"
        );
    }
}
