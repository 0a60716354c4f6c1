//! Our events and messages in Evolution API v2's shapes (`data` of its webhooks, and the
//! message records its send routes answer with).
//!
//! Evolution builds these from Baileys' objects; the field names, types and presence here
//! follow its `prepareMessage` and its event handlers. What wamux cannot know (the media
//! keys and hashes WhatsApp's servers use, thumbnails) is left out rather than invented:
//! receivers use `mediaUrl` or `base64` for the file.

use serde::Serialize;
use serde_json::{Value, json};

use super::events::EvoEvent;
use crate::event::EventKind;
use crate::model::{Message, MessageKind, MessageStatus};

/// Who the instance is, for what a payload says about it.
#[derive(Debug, Clone, Default)]
pub struct Instance<'a> {
    pub name: &'a str,
    /// Evolution's `instanceId` (a UUID, see [`instance_id`]).
    pub id: String,
    /// The account's own JID (`wuid`), once linked.
    pub owner: Option<&'a str>,
    pub profile_name: Option<&'a str>,
}

impl<'a> Instance<'a> {
    /// The instance of session `name`, its linked account not named.
    pub fn of(name: &'a str) -> Self {
        Self {
            name,
            id: instance_id(name),
            ..Self::default()
        }
    }
}

/// A stable UUID-shaped id for a session, as Evolution's `instanceId` is: the same in every
/// payload and route of the instance.
pub fn instance_id(session: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(format!("wamux-instance:{session}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    // Version 8 (custom), RFC 9562 variant.
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Baileys' `WAMessageKey`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Key {
    pub remote_jid: String,
    /// The chat's other address (the LID of a phone-number chat, or the other way round).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_jid_alt: Option<String>,
    pub from_me: bool,
    pub id: String,
    /// The sender in a group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_alt: Option<String>,
    /// `pn` or `lid`: how WhatsApp addressed the message (messages received only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addressing_mode: Option<&'static str>,
}

/// Evolution's message record (`prepareMessage`): `messages.upsert` and `send.message`
/// carry it, and the send routes answer with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub key: Key,
    pub push_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    /// The WhatsApp message as an object keyed by its kind (`conversation`, `imageMessage`,
    /// ...), plus `mediaUrl` and `base64` for files.
    pub message: serde_json::Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_info: Option<Value>,
    pub message_type: String,
    pub message_timestamp: i64,
    pub instance_id: String,
    pub source: &'static str,
}

/// Evolution's status names (`renderStatus`): 0 ERROR ... 5 PLAYED.
pub fn status_name(s: MessageStatus) -> &'static str {
    match s {
        MessageStatus::Failed => "ERROR",
        MessageStatus::Queued | MessageStatus::Pending => "PENDING",
        MessageStatus::Sent => "SERVER_ACK",
        MessageStatus::Delivered => "DELIVERY_ACK",
        MessageStatus::Read => "READ",
    }
}

/// Baileys' `getDevice`: which kind of client made a message id.
pub fn device_of(id: &str) -> &'static str {
    let n = id.chars().count();
    if id.starts_with("3A") && n == 20 {
        "ios"
    } else if id.starts_with("3E") && n == 22 {
        "web"
    } else if n == 21 || n == 32 {
        "android"
    } else if id.starts_with("3F") || n == 18 {
        "desktop"
    } else {
        "unknown"
    }
}

fn is_lid(jid: &str) -> bool {
    jid.ends_with("@lid")
}

/// The key of one of our messages, as Evolution 2.4 gives it: `remoteJid` the phone-number
/// JID where known, `remoteJidAlt` the other address.
pub fn key_of(m: &Message) -> Key {
    let group = m.chat_id.ends_with("@g.us");
    let (remote, alt) = if group {
        (m.chat_id.clone(), None)
    } else {
        let pn = m.chat_pn.clone().filter(|j| !is_lid(j));
        let lid = m
            .chat_lid
            .clone()
            .or_else(|| is_lid(&m.chat_id).then(|| m.chat_id.clone()));
        match pn {
            // Evolution's records of what the account sends carry no second address.
            Some(pn) if !m.from_me => (pn, lid),
            Some(pn) => (pn, None),
            None => (m.chat_id.clone(), None),
        }
    };
    let (participant, participant_alt) = if group && !m.from_me {
        let named = m.participant.clone().unwrap_or_else(|| m.from.clone());
        let other = if is_lid(&named) {
            m.from_pn.clone()
        } else {
            m.from_lid.clone()
        };
        (Some(named), other)
    } else {
        (None, None)
    };
    let addressing_mode = (!m.from_me).then(|| {
        let by = participant.as_deref().unwrap_or(&m.chat_id);
        if is_lid(by) { "lid" } else { "pn" }
    });
    Key {
        remote_jid: remote,
        remote_jid_alt: alt.filter(|a| *a != m.chat_id || group),
        from_me: m.from_me,
        id: m.id.clone(),
        participant,
        participant_alt,
        addressing_mode,
    }
}

/// The WhatsApp message object and its `messageType`, for a message of ours. Evolution
/// flattens `extendedTextMessage` into `conversation`, and so does this.
fn content_of(m: &Message) -> (serde_json::Map<String, Value>, String) {
    let mut out = serde_json::Map::new();
    let text = m.text.clone().unwrap_or_default();
    let kind = match m.kind {
        MessageKind::Text | MessageKind::Edited => {
            out.insert("conversation".into(), text.into());
            "conversation"
        }
        MessageKind::Image
        | MessageKind::Video
        | MessageKind::Audio
        | MessageKind::Ptt
        | MessageKind::Document
        | MessageKind::Sticker => {
            let (field, ptt) = match m.kind {
                MessageKind::Image => ("imageMessage", false),
                MessageKind::Video => ("videoMessage", false),
                MessageKind::Audio => ("audioMessage", false),
                MessageKind::Ptt => ("audioMessage", true),
                MessageKind::Sticker => ("stickerMessage", false),
                _ => ("documentMessage", false),
            };
            let media = m.media.as_ref();
            let text_of = |k: &str| media.and_then(|x| x.get(k)).and_then(Value::as_str);
            let mut o = serde_json::Map::new();
            if let Some(mt) = text_of("mimetype") {
                o.insert("mimetype".into(), mt.into());
            }
            if let Some(c) = &m.caption {
                o.insert("caption".into(), c.clone().into());
            }
            if let Some(n) = media
                .and_then(|x| x.get("fileSize"))
                .and_then(Value::as_u64)
            {
                o.insert("fileLength".into(), n.into());
            }
            if field == "documentMessage"
                && let Some(name) = text_of("originalName").or_else(|| text_of("fileName"))
            {
                o.insert("fileName".into(), name.into());
                o.insert("title".into(), name.into());
            }
            if field == "audioMessage" {
                o.insert("ptt".into(), ptt.into());
            }
            out.insert(field.into(), Value::Object(o));
            if let Some(url) = text_of("fileUrl") {
                out.insert("mediaUrl".into(), url.into());
            }
            field
        }
        MessageKind::Location => {
            let l = m.location.as_ref();
            let mut o = serde_json::Map::new();
            o.insert(
                "degreesLatitude".into(),
                json!(l.map_or(0.0, |l| l.latitude)),
            );
            o.insert(
                "degreesLongitude".into(),
                json!(l.map_or(0.0, |l| l.longitude)),
            );
            if let Some(n) = l.and_then(|l| l.name.clone()) {
                o.insert("name".into(), n.into());
            }
            if let Some(a) = l.and_then(|l| l.address.clone()) {
                o.insert("address".into(), a.into());
            }
            out.insert("locationMessage".into(), Value::Object(o));
            "locationMessage"
        }
        MessageKind::Contact => {
            let cards = m.contacts.clone().unwrap_or_default();
            let card = |c: &crate::model::ContactCard| json!({"displayName": c.name.clone().unwrap_or_default(), "vcard": c.vcard});
            if cards.len() == 1 {
                out.insert("contactMessage".into(), card(&cards[0]));
                "contactMessage"
            } else {
                out.insert(
                    "contactsArrayMessage".into(),
                    json!({
                        "displayName": format!("{} contacts", cards.len()),
                        "contacts": cards.iter().map(card).collect::<Vec<_>>(),
                    }),
                );
                "contactsArrayMessage"
            }
        }
        MessageKind::Poll => {
            let p = m.poll.as_ref();
            let multiple = p.is_some_and(|p| p.multiple);
            // Baileys sends single-choice polls as V3; any number of choices is count 0.
            let field = if multiple {
                "pollCreationMessage"
            } else {
                "pollCreationMessageV3"
            };
            out.insert(
                field.into(),
                json!({
                    "name": p.map(|p| p.question.clone()).unwrap_or_default(),
                    "selectableOptionsCount": if multiple { 0 } else { 1 },
                    "options": p.map(|p| p.options.iter().map(|o| json!({"optionName": o})).collect::<Vec<_>>()).unwrap_or_default(),
                }),
            );
            field
        }
        MessageKind::Reaction => {
            let r = m.reaction.as_ref();
            out.insert(
                "reactionMessage".into(),
                json!({
                    "key": {
                        "remoteJid": key_of(m).remote_jid,
                        "id": r.map(|r| r.message_id.clone()).unwrap_or_default(),
                    },
                    "text": r.map(|r| r.emoji.clone()).unwrap_or_default(),
                    "senderTimestampMs": m.timestamp * 1000,
                }),
            );
            "reactionMessage"
        }
        _ => {
            // A kind WhatsApp sent that wamux has no shape for: its name, empty.
            let name = m.raw_type.clone().unwrap_or_else(|| "unknown".into());
            out.insert(name.clone(), json!({}));
            return (out, name);
        }
    };
    (out, kind.to_owned())
}

/// The `contextInfo` Evolution lifts out of the message: the quote and the mentions.
fn context_of(m: &Message) -> Option<Value> {
    if m.quoted_id.is_none() && m.mentions.is_empty() && !m.forwarded {
        return None;
    }
    let mut o = serde_json::Map::new();
    if let Some(q) = &m.quoted_id {
        o.insert("stanzaId".into(), q.clone().into());
    }
    if !m.mentions.is_empty() {
        o.insert("mentionedJid".into(), json!(m.mentions));
    }
    if m.forwarded {
        o.insert("isForwarded".into(), true.into());
        o.insert("forwardingScore".into(), 1.into());
    }
    Some(Value::Object(o))
}

/// Evolution's record of a message. `status` is Evolution's: incoming messages are
/// `DELIVERY_ACK`, and our own follow their state.
pub fn record(m: &Message, inst: &Instance<'_>) -> Record {
    let key = key_of(m);
    let (message, message_type) = content_of(m);
    let push_name = m.push_name.clone().or_else(|| {
        if m.from_me {
            // What Evolution writes for its own messages without a name.
            Some("Você".to_owned())
        } else {
            key.participant
                .as_deref()
                .map(|p| p.split('@').next().unwrap_or(p).to_owned())
        }
    });
    Record {
        push_name,
        status: Some(if m.from_me {
            status_name(m.status)
        } else {
            "DELIVERY_ACK"
        }),
        message,
        context_info: context_of(m),
        message_type,
        message_timestamp: m.timestamp,
        instance_id: inst.id.clone(),
        source: device_of(&m.id),
        key,
    }
}

/// The record of a message sent through the API (`send.message`, the send routes'
/// answers): Evolution names the sender "Você" there, whatever the account's name.
pub fn sent_record(m: &Message, inst: &Instance<'_>) -> Record {
    Record {
        push_name: Some("Você".to_owned()),
        ..record(m, inst)
    }
}

/// Evolution's `connection.update` state for one of our statuses.
pub fn connection_state(status: crate::model::SessionStatus) -> (&'static str, u16) {
    use crate::model::SessionStatus as S;
    match status {
        S::Connected => ("open", 200),
        S::Starting | S::Qr | S::PasskeyRequired | S::PasskeyConfirmation | S::Connecting => {
            ("connecting", 200)
        }
        // Baileys' DisconnectReason: loggedOut 401, connectionClosed 428, badSession 500.
        S::LoggedOut => ("close", 401),
        S::Disconnected => ("close", 428),
        S::Failed => ("close", 500),
    }
}

/// What a message event is in Evolution's terms: what we send ourselves is announced as
/// `send.message` when it goes out (pending or queued), everything else as `messages.upsert`.
fn message_event(m: &Message) -> EvoEvent {
    if m.from_me && matches!(m.status, MessageStatus::Queued | MessageStatus::Pending) {
        EvoEvent::SendMessage
    } else {
        EvoEvent::MessagesUpsert
    }
}

fn str_of<'a>(data: &'a Value, k: &str) -> Option<&'a str> {
    data.get(k).and_then(Value::as_str)
}

/// One of our events as Evolution's event and `data`; `None` when Evolution has no event
/// for it (passkey steps, undecryptable messages, ...). `qr_image` makes the PNG data URL of
/// a QR code.
pub fn event_data(
    kind: EventKind,
    data: &Value,
    inst: &Instance<'_>,
    qr_image: impl Fn(&str) -> Option<String>,
) -> Option<(EvoEvent, Value)> {
    use EventKind as K;
    let message = || serde_json::from_value::<Message>(data.clone()).ok();
    Some(match kind {
        K::MessageReceived | K::MessageFromMe | K::MessageReaction => {
            let m = message()?;
            let event = message_event(&m);
            let r = match event {
                EvoEvent::SendMessage => sent_record(&m, inst),
                _ => record(&m, inst),
            };
            (event, serde_json::to_value(r).ok()?)
        }
        K::MessageSent | K::MessageDelivered | K::MessageRead | K::MessageFailed => {
            let m = message()?;
            let key = key_of(&m);
            let status = match kind {
                K::MessageSent => "SERVER_ACK",
                K::MessageDelivered => "DELIVERY_ACK",
                K::MessageRead => "READ",
                _ => "ERROR",
            };
            let mut o = json!({
                "keyId": m.id,
                "remoteJid": key.remote_jid,
                "fromMe": m.from_me,
                "status": status,
                "instanceId": inst.id,
                "messageId": m.id,
            });
            // A group participant's receipt names them; 1:1 updates have no participant.
            if let Some(by) = str_of(data, "by") {
                o["participant"] = by.into();
            }
            (EvoEvent::MessagesUpdate, o)
        }
        K::PollVote => {
            let m = message()?;
            let vote = m.vote.as_ref()?;
            let key = key_of(&m);
            let poll_updates: Vec<Value> = vote
                .tally
                .iter()
                .flatten()
                .map(|c| {
                    json!({"name": c.option, "voters": if vote.options.as_ref().is_some_and(|o| o.contains(&c.option)) { json!([m.from]) } else { json!([]) }})
                })
                .collect();
            let mut o = json!({
                "keyId": vote.poll_id,
                "remoteJid": key.remote_jid,
                "fromMe": false,
                "status": "SERVER_ACK",
                "pollUpdates": poll_updates,
                "instanceId": inst.id,
                "messageId": vote.poll_id,
            });
            if key.participant.is_some() {
                o["participant"] = key.participant.into();
            }
            (EvoEvent::MessagesUpdate, o)
        }
        K::MessageRevoked => {
            let m = message()?;
            // The key of the deleted message, as the revoke names it: no second address.
            let mut key = key_of(&m);
            key.id = m.target_id.clone()?;
            key.addressing_mode = None;
            key.remote_jid_alt = None;
            key.participant_alt = None;
            (EvoEvent::MessagesDelete, serde_json::to_value(key).ok()?)
        }
        K::MessageEdited => {
            let m = message()?;
            let mut key = key_of(&m);
            key.id = m.target_id.clone()?;
            key.addressing_mode = None;
            key.remote_jid_alt = None;
            (
                EvoEvent::MessagesEdited,
                json!({
                    "key": key,
                    "type": "MESSAGE_EDIT",
                    "editedMessage": {"conversation": m.text.clone().unwrap_or_default()},
                    "timestampMs": (m.timestamp * 1000).to_string(),
                }),
            )
        }
        K::SessionStatus => {
            let status = crate::model::SessionStatus::parse(str_of(data, "status")?)?;
            // Evolution announces no close it reconnects from; `connecting` follows.
            if status == crate::model::SessionStatus::Disconnected {
                return None;
            }
            let (state, reason) = connection_state(status);
            let mut o = json!({"instance": inst.name, "state": state, "statusReason": reason});
            if state == "open" {
                o["wuid"] = inst.owner.into();
                // Evolution leaves the name out while it does not know it.
                if let Some(name) = inst.profile_name {
                    o["profileName"] = name.into();
                }
                o["profilePictureUrl"] = Value::Null;
            }
            (EvoEvent::ConnectionUpdate, o)
        }
        K::Qr => {
            let code = str_of(data, "qr")?;
            (
                EvoEvent::QrcodeUpdated,
                json!({"qrcode": {
                    "instance": inst.name,
                    "pairingCode": Value::Null,
                    "code": code,
                    "base64": qr_image(code),
                }}),
            )
        }
        K::Call => {
            let status = match str_of(data, "status")? {
                "offer" => "offer",
                "rejected" => "reject",
                _ => "terminate",
            };
            let from = str_of(data, "from")?;
            let at = data.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
            (
                EvoEvent::Call,
                json!({
                    "chatId": from,
                    "from": from,
                    "id": str_of(data, "id")?,
                    "date": super::iso8601(at * 1000),
                    "offline": false,
                    "status": status,
                    "isVideo": data.get("video").and_then(Value::as_bool).unwrap_or(false),
                    "isGroup": false,
                }),
            )
        }
        K::ChatUpdated => {
            // Evolution's chats.update names the chat; the state follows it.
            let mut chat = data.clone();
            if let Some(o) = chat.as_object_mut() {
                o.remove("sessionId");
                let id = o.remove("chatId")?;
                o.insert("remoteJid".into(), id);
                o.insert("instanceId".into(), inst.id.clone().into());
            }
            (EvoEvent::ChatsUpdate, json!([chat]))
        }
        K::Presence => {
            let chat = str_of(data, "chatId")?;
            let from = str_of(data, "from").unwrap_or(chat);
            let mut p = json!({"lastKnownPresence": str_of(data, "state")?});
            if let Some(t) = data.get("lastSeen").and_then(Value::as_i64) {
                p["lastSeen"] = t.into();
            }
            (
                EvoEvent::PresenceUpdate,
                json!({"id": chat, "presences": {from: p}}),
            )
        }
        K::GroupJoined => (
            EvoEvent::GroupsUpsert,
            json!([{
                "id": str_of(data, "groupId")?,
                "subject": str_of(data, "subject"),
                "author": str_of(data, "by"),
                "creation": data.get("timestamp").and_then(Value::as_i64),
            }]),
        ),
        K::GroupUpdated => {
            let field = match str_of(data, "field")? {
                "subject" => "subject",
                "description" => "desc",
                "announce" => "announce",
                "locked" => "restrict",
                "ephemeral" => "ephemeralDuration",
                "membershipApproval" => "joinApprovalMode",
                "inviteLink" => "inviteCode",
                // Baileys announces picture changes elsewhere; Evolution has no field for it.
                _ => return None,
            };
            let mut o = json!({"id": str_of(data, "groupId")?, "author": str_of(data, "by")});
            o[field] = data.get("value").cloned().unwrap_or(Value::Null);
            (EvoEvent::GroupsUpdate, json!([o]))
        }
        K::GroupParticipants => (
            EvoEvent::GroupParticipantsUpdate,
            json!({
                "id": str_of(data, "groupId")?,
                "author": str_of(data, "by"),
                "participants": data.get("participants").cloned().unwrap_or_else(|| json!([])),
                "action": str_of(data, "action")?,
            }),
        ),
        // Evolution has no event for a message deleted for the account only, or starred.
        K::PasskeyRequired
        | K::PasskeyConfirmation
        | K::PasskeyFailed
        | K::MessageUndecryptable
        | K::MessageDeleted
        | K::MessageStarred => return None,
    })
}
