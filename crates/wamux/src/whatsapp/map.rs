//! Conversions from whatsapp-rust's types to ours.

use wacore::proto_helpers::MessageExt;
use wacore::types::events::{Event as WaLibEvent, InboundMessage};
use wacore::types::presence::ReceiptType;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, Jid};

use super::WaEvent;
use crate::event::EventKind;
use crate::model::ChatChange;
use crate::model::{
    ContactCard, Content, Location, Message, MessageKind, MessageStatus, Poll, PollVote,
    PresenceState, Reaction,
};
use crate::session::Me;

pub(super) fn me(client: &Client) -> Me {
    let pn = client.pn();
    let lid = client.lid();
    let push = client.push_name();
    Me {
        phone: pn.as_ref().map(|j| j.user_base().to_owned()),
        jid: pn.as_ref().map(Jid::to_non_ad_string),
        lid: lid.as_ref().map(Jid::to_non_ad_string),
        push_name: (!push.is_empty()).then_some(push),
    }
}

pub(super) fn event(e: &WaLibEvent) -> Option<WaEvent> {
    Some(match e {
        WaLibEvent::PairingQrCode(q) => WaEvent::Qr {
            code: q.code.clone(),
            expires_in_secs: q.timeout.as_secs(),
        },
        WaLibEvent::PairingCode(c) => WaEvent::PairingCode {
            code: c.code.clone(),
        },
        WaLibEvent::PairSuccess(p) => WaEvent::Paired {
            me: Me {
                phone: Some(p.id.user_base().to_owned()),
                jid: Some(p.id.to_non_ad_string()),
                lid: Some(p.lid.to_non_ad_string()),
                // The name WhatsApp gives at pairing (business accounts); kept so the next
                // client can be handed it (see `WaConnector::start`).
                push_name: (!p.business_name.is_empty()).then(|| p.business_name.clone()),
            },
        },
        WaLibEvent::PairError(p) => WaEvent::PairingFailed {
            reason: format!("pairing failed: {}", p.error),
        },
        WaLibEvent::PairingQrCodesExhausted(q) => WaEvent::QrExhausted {
            disconnected: q.disconnected,
        },
        WaLibEvent::PairPasskeyRequest(p) => WaEvent::PasskeyRequest {
            options_json: p.request_options_json.clone(),
        },
        WaLibEvent::PairPasskeyConfirmation(p) => WaEvent::PasskeyConfirmation {
            code: p.code.clone(),
            skip_handoff_ux: p.skip_handoff_ux,
        },
        WaLibEvent::PairPasskeyError(p) => WaEvent::PasskeyFailed {
            reason: if p.continuation {
                format!(
                    "the passkey step failed after WhatsApp accepted the assertion: {}",
                    p.error
                )
            } else {
                format!("the passkey step failed: {}", p.error)
            },
        },
        WaLibEvent::Connected(_) => WaEvent::Connected { me: Me::default() },
        WaLibEvent::Disconnected(d) => WaEvent::Disconnected {
            reason: d.reason.to_string(),
        },
        WaLibEvent::LoggedOut(l) => WaEvent::LoggedOut {
            reason: format!("logged out ({:?})", l.reason),
        },
        WaLibEvent::StreamReplaced(_) => WaEvent::Replaced,
        WaLibEvent::TemporaryBan(b) => WaEvent::PairingFailed {
            reason: format!("temporarily banned ({:?})", b.code),
        },
        WaLibEvent::ClientOutdated(_) => WaEvent::PairingFailed {
            reason: "WhatsApp refused this client version as outdated".into(),
        },
        WaLibEvent::Receipt(r) => {
            let status = match r.r#type {
                ReceiptType::Delivered => MessageStatus::Delivered,
                ReceiptType::Read | ReceiptType::Played => MessageStatus::Read,
                _ => return None,
            };
            let by = (r.source.chat.server == whatsapp_rust::Server::Group).then(|| {
                let (pn, lid) = split_pn_lid(&r.source.sender, r.source.sender_alt.as_ref());
                pn.or(lid)
                    .unwrap_or_else(|| r.source.sender.to_non_ad_string())
            });
            WaEvent::Receipt {
                ids: r.message_ids.iter().map(|id| id.to_string()).collect(),
                status,
                by,
            }
        }
        WaLibEvent::ServerAck(a) if a.class.as_deref().is_none_or(|c| c == "message") => {
            WaEvent::ServerAck {
                id: a.id.clone(),
                error: a.error.clone(),
            }
        }
        WaLibEvent::UndecryptableMessage(u) => {
            let src = &u.info.source;
            let (pn, lid) = split_pn_lid(&src.sender, src.sender_alt.as_ref());
            WaEvent::Undecryptable {
                id: u.info.id.to_string(),
                chat: if src.is_group {
                    src.chat.to_non_ad_string()
                } else {
                    pn.clone()
                        .or_else(|| lid.clone())
                        .unwrap_or_else(|| src.chat.to_non_ad_string())
                },
                from: pn.or(lid).unwrap_or_else(|| src.sender.to_non_ad_string()),
                timestamp: u.info.timestamp.timestamp(),
                unavailable: u.is_unavailable,
            }
        }
        WaLibEvent::GroupUpdate(u) => return super::groups::news(u),
        WaLibEvent::PictureUpdate(p) if p.jid.server == whatsapp_rust::Server::Group => {
            WaEvent::Group {
                group: p.jid.to_non_ad_string(),
                by: p.author.as_ref().map(Jid::to_non_ad_string),
                news: super::groups::GroupNews::Updated {
                    field: "picture",
                    value: serde_json::json!(p.picture_id),
                },
                timestamp: p.timestamp.timestamp(),
            }
        }
        WaLibEvent::StarUpdate(u) => WaEvent::Starred {
            id: u.message_id.clone(),
            starred: u.action.starred.unwrap_or(false),
        },
        WaLibEvent::DeleteMessageForMeUpdate(u) => WaEvent::DeletedForMe {
            chat: chat_of(&u.chat_jid),
            id: u.message_id.clone(),
        },
        WaLibEvent::PinUpdate(u) => WaEvent::Chat {
            chat: chat_of(&u.jid),
            change: ChatChange::Pinned(u.action.pinned.unwrap_or(false)),
        },
        WaLibEvent::ArchiveUpdate(u) => WaEvent::Chat {
            chat: chat_of(&u.jid),
            change: ChatChange::Archived(u.action.archived.unwrap_or(false)),
        },
        WaLibEvent::MuteUpdate(u) => WaEvent::Chat {
            chat: chat_of(&u.jid),
            change: if u.action.muted.unwrap_or(false) {
                ChatChange::Muted(u.action.mute_end_timestamp.filter(|t| *t > 0))
            } else {
                ChatChange::Unmuted
            },
        },
        WaLibEvent::MarkChatAsReadUpdate(u) => WaEvent::Chat {
            chat: chat_of(&u.jid),
            change: ChatChange::MarkedUnread(!u.action.read.unwrap_or(true)),
        },
        WaLibEvent::Presence(p) => WaEvent::Presence {
            from: p.from.to_non_ad_string(),
            state: if p.unavailable {
                PresenceState::Unavailable
            } else {
                PresenceState::Available
            },
            last_seen: p.last_seen.map(|t| t.timestamp()),
        },
        WaLibEvent::ChatPresence(c) => {
            use wacore::types::presence::{ChatPresence, ChatPresenceMedia};
            WaEvent::Presence {
                from: c.source.sender.to_non_ad_string(),
                state: match (&c.state, &c.media) {
                    (ChatPresence::Paused, _) => PresenceState::Paused,
                    (ChatPresence::Composing, ChatPresenceMedia::Audio) => PresenceState::Recording,
                    (ChatPresence::Composing, _) => PresenceState::Composing,
                },
                last_seen: None,
            }
        }
        WaLibEvent::IncomingCall(c) => {
            use wacore::types::call::CallAction;
            let (video, ended) = match &c.action {
                CallAction::Offer { is_video, .. } => (*is_video, false),
                CallAction::Terminate { .. } => (false, true),
                _ => return None,
            };
            WaEvent::Call {
                call_id: c.action.call_id().to_owned(),
                from: c.from.to_non_ad_string(),
                creator: c.action.call_creator().to_string(),
                video,
                ended,
                timestamp: c.timestamp.timestamp(),
            }
        }
        _ => return None,
    })
}

/// An inbound (or our-other-device) message in the public shape, with the key used to
/// deduplicate it and the event it raises.
///
/// `None` for messages that are protocol plumbing (key shares, history-sync notices,
/// sender-key distribution): they are acknowledged but are not part of anyone's history.
pub(super) fn inbound(
    session_id: &str,
    own_jid: Option<&str>,
    m: &InboundMessage,
) -> Option<(Message, String, EventKind)> {
    let info = &m.info;
    let src = &info.source;
    let base = m.message.get_base_message();
    let (kind, event) = classify(base, src.is_from_me)?;
    // A kind we have no shape for is kept, named, unless it is only plumbing.
    let raw_type = if kind == MessageKind::Unknown {
        Some(raw_type_of(base)?)
    } else {
        None
    };

    // Phone-number and LID forms of the sender and the chat, where the stanza told us.
    let (sender_pn, sender_lid) = split_pn_lid(&src.sender, src.sender_alt.as_ref());
    let chat_alt = if src.is_group {
        None
    } else if src.is_from_me {
        src.recipient_alt.as_ref()
    } else {
        src.sender_alt.as_ref()
    };
    let (chat_pn, chat_lid) = if src.is_group {
        (None, None)
    } else {
        split_pn_lid(&src.chat, chat_alt)
    };
    let chat_id = if src.is_group {
        src.chat.to_non_ad_string()
    } else {
        chat_pn
            .clone()
            .or_else(|| chat_lid.clone())
            .unwrap_or_else(|| src.chat.to_non_ad_string())
    };
    let from = sender_pn
        .clone()
        .or_else(|| sender_lid.clone())
        .unwrap_or_else(|| src.sender.to_non_ad_string());
    let to = if src.is_from_me {
        chat_id.clone()
    } else if src.is_group {
        src.chat.to_non_ad_string()
    } else {
        src.recipient
            .as_ref()
            .map(Jid::to_non_ad_string)
            .or_else(|| own_jid.map(str::to_owned))
            .unwrap_or_default()
    };

    let quoted_id = context_of(base).and_then(|c| c.stanza_id.clone());
    let msg = Message {
        id: info.id.to_string(),
        session_id: session_id.to_owned(),
        chat_id,
        from,
        to,
        from_me: src.is_from_me,
        push_name: (!info.push_name.is_empty()).then(|| info.push_name.clone()),
        kind,
        text: m
            .message
            .text_content()
            .map(str::to_owned)
            .or_else(|| {
                base.reaction_message
                    .as_option()
                    .and_then(|r| r.text.clone())
            })
            .or_else(|| edited_text_of(base)),
        caption: m.message.get_caption().map(str::to_owned),
        timestamp: info.timestamp.timestamp(),
        status: if src.is_from_me {
            MessageStatus::Sent
        } else {
            MessageStatus::Delivered
        },
        quoted_id,
        media: media_of(base),
        from_pn: sender_pn,
        from_lid: sender_lid,
        chat_pn,
        chat_lid,
        // As WhatsApp names the sender in the group (the LID in a LID group): receipts for
        // the message must name it so. `fromPn`/`fromLid` give both forms.
        participant: src.is_group.then(|| src.sender.to_non_ad_string()),
        location: location_of(base),
        contacts: contacts_of(base),
        reaction: reaction_of(base),
        reactions: Vec::new(),
        target_id: edit_target_of(base),
        edited_at: None,
        revoked: false,
        raw_type,
        mentions: context_of(base)
            .map(|c| c.mentioned_jid.clone())
            .unwrap_or_default(),
        forwarded: context_of(base).is_some_and(|c| c.is_forwarded == Some(true)),
        view_once: m.message.is_view_once(),
        starred: false,
        poll: poll_of(base),
        vote: vote_of(base).map(|(poll_id, _)| PollVote {
            poll_id,
            options: None,
            tally: None,
        }),
    };
    // Stanza ids are unique per (chat, sender); the sender's device does not matter.
    let sender_key = src.sender.to_non_ad_string();
    Some((msg, sender_key, event))
}

/// The chat an app-state change names, as WhatsApp names it (the index's JID).
fn chat_of(jid: &Jid) -> String {
    jid.to_non_ad_string()
}

fn split_pn_lid(primary: &Jid, alt: Option<&Jid>) -> (Option<String>, Option<String>) {
    let mut pn = None;
    let mut lid = None;
    for j in std::iter::once(primary).chain(alt) {
        if j.is_pn() && pn.is_none() {
            pn = Some(j.to_non_ad_string());
        } else if j.is_lid() && lid.is_none() {
            lid = Some(j.to_non_ad_string());
        }
    }
    (pn, lid)
}

/// The message's kind and the event it raises; `None` for protocol plumbing (key shares,
/// history-sync notices) other than edits and revokes.
fn classify(m: &wa::Message, from_me: bool) -> Option<(MessageKind, EventKind)> {
    use MessageKind as K;
    let plain = if from_me {
        EventKind::MessageFromMe
    } else {
        EventKind::MessageReceived
    };
    if m.reaction_message.is_set() {
        return Some((K::Reaction, EventKind::MessageReaction));
    }
    if m.poll_update_message.is_set() {
        return Some((K::PollVote, EventKind::PollVote));
    }
    if let Some(p) = m.protocol_message.as_option() {
        use wa::message::protocol_message::Type;
        return match p.r#type {
            Some(Type::Revoke) => Some((K::Revoked, EventKind::MessageRevoked)),
            Some(Type::MessageEdit) => Some((K::Edited, EventKind::MessageEdited)),
            _ => None,
        };
    }
    let kind = if m.image_message.is_set() {
        K::Image
    } else if m.video_message.is_set() {
        K::Video
    } else if let Some(a) = m.audio_message.as_option() {
        // A voice note is an audio message with the flag set; users tell them apart.
        if a.ptt == Some(true) {
            K::Ptt
        } else {
            K::Audio
        }
    } else if m.document_message.is_set() {
        K::Document
    } else if m.sticker_message.is_set() {
        K::Sticker
    } else if poll_creation(m).is_some() {
        K::Poll
    } else if m.location_message.is_set() {
        K::Location
    } else if m.contact_message.is_set() || m.contacts_array_message.is_set() {
        K::Contact
    } else if m.conversation.is_some() || m.extended_text_message.is_set() {
        K::Text
    } else {
        K::Unknown
    };
    Some((kind, plain))
}

fn context_of(m: &wa::Message) -> Option<&wa::ContextInfo> {
    if let Some(x) = m.extended_text_message.as_option() {
        return x.context_info.as_option();
    }
    if let Some(x) = m.image_message.as_option() {
        return x.context_info.as_option();
    }
    if let Some(x) = m.video_message.as_option() {
        return x.context_info.as_option();
    }
    if let Some(x) = m.document_message.as_option() {
        return x.context_info.as_option();
    }
    if let Some(x) = m.location_message.as_option() {
        return x.context_info.as_option();
    }
    if let Some(x) = m.contact_message.as_option() {
        return x.context_info.as_option();
    }
    if let Some(x) = m.contacts_array_message.as_option() {
        return x.context_info.as_option();
    }
    None
}

/// The message WhatsApp is sent for `content`, with its quote (`ctx`) where given.
pub(super) fn outgoing(content: &Content, ctx: Option<wa::ContextInfo>) -> wa::Message {
    use wacore::proto_helpers::MessageBuilderExt;
    use whatsapp_rust::buffa::MessageField;
    let field = || {
        ctx.clone()
            .map_or_else(MessageField::none, MessageField::some)
    };
    let card = |c: &ContactCard| wa::message::ContactMessage {
        display_name: c.name.clone(),
        vcard: Some(c.vcard.clone()),
        context_info: field(),
        ..Default::default()
    };
    match content {
        Content::Forwarded(inner) => {
            let mut ctx = ctx.clone().unwrap_or_default();
            ctx.is_forwarded = Some(true);
            ctx.forwarding_score = Some(1);
            outgoing(inner, Some(ctx))
        }
        Content::Text(t) => match ctx.clone() {
            Some(c) => wa::Message::text_with_context(t.clone(), c),
            None => wa::Message::text(t.clone()),
        },
        Content::Location(l) => wa::Message {
            location_message: MessageField::some(wa::message::LocationMessage {
                degrees_latitude: Some(l.latitude),
                degrees_longitude: Some(l.longitude),
                name: l.name.clone(),
                address: l.address.clone(),
                context_info: field(),
                ..Default::default()
            }),
            ..Default::default()
        },
        Content::Contacts(cards) if cards.len() == 1 => wa::Message {
            contact_message: MessageField::some(card(&cards[0])),
            ..Default::default()
        },
        Content::Edit { target, text } => wa::Message {
            protocol_message: MessageField::some(wa::message::ProtocolMessage {
                key: MessageField::some(own_key(target, true)),
                r#type: Some(wa::message::protocol_message::Type::MessageEdit),
                edited_message: MessageField::some(wa::Message::text(text.clone())),
                timestamp_ms: Some(crate::store::now() * 1000),
                ..Default::default()
            }),
            ..Default::default()
        },
        Content::Poll { poll, secret } => {
            let creation = wa::message::PollCreationMessage {
                name: Some(poll.question.clone()),
                options: poll
                    .options
                    .iter()
                    .map(|o| wa::message::poll_creation_message::Option {
                        option_name: Some(o.clone()),
                        option_hash: None,
                    })
                    .collect(),
                selectable_options_count: Some(if poll.multiple {
                    poll.options.len() as u32
                } else {
                    1
                }),
                context_info: field(),
                ..Default::default()
            };
            let mut m = wa::Message {
                message_context_info: MessageField::some(wa::MessageContextInfo {
                    message_secret: Some(secret.to_vec()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            // As WhatsApp Web sends them: v3 for a single choice, the first form otherwise.
            if poll.multiple {
                m.poll_creation_message = MessageField::some(creation);
            } else {
                m.poll_creation_message_v3 = MessageField::some(creation);
            }
            m
        }
        Content::Revoke { target } => wa::Message {
            protocol_message: MessageField::some(wa::message::ProtocolMessage {
                key: MessageField::some(own_key(target, false)),
                r#type: Some(wa::message::protocol_message::Type::Revoke),
                ..Default::default()
            }),
            ..Default::default()
        },
        Content::Reaction { target, emoji } => wa::Message {
            reaction_message: MessageField::some(wa::message::ReactionMessage {
                key: MessageField::some(wa::MessageKey {
                    remote_jid: Some(target.chat_id.clone()),
                    from_me: Some(target.from_me),
                    id: Some(target.id.clone()),
                    // In a group, whose message it is.
                    participant: target.participant.clone().filter(|_| !target.from_me),
                }),
                text: Some(emoji.clone()),
                sender_timestamp_ms: Some(crate::store::now() * 1000),
                ..Default::default()
            }),
            ..Default::default()
        },
        // As the app names a shared list of contacts.
        Content::Contacts(cards) => wa::Message {
            contacts_array_message: MessageField::some(wa::message::ContactsArrayMessage {
                display_name: Some(format!("{} contacts", cards.len())),
                contacts: cards
                    .iter()
                    .map(|c| wa::message::ContactMessage {
                        context_info: MessageField::none(),
                        ..card(c)
                    })
                    .collect(),
                context_info: field(),
            }),
            ..Default::default()
        },
    }
}

/// The protobuf name of the first content field `m` has, leaving out what only carries
/// keys and context (`None` when nothing else is there).
fn raw_type_of(m: &wa::Message) -> Option<String> {
    const PLUMBING: [&str; 4] = [
        "sender_key_distribution_message",
        "fast_ratchet_key_sender_key_distribution_message",
        "message_context_info",
        "device_sent_message",
    ];
    let value = serde_json::to_value(m).ok()?;
    let field = value
        .as_object()?
        .iter()
        .find(|(k, v)| !v.is_null() && !PLUMBING.contains(&k.as_str()))
        .map(|(k, _)| k.as_str())?;
    // The proto's own spelling: `live_location_message` is `liveLocationMessage`.
    let mut name = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            name.extend(c.to_uppercase());
            upper = false;
        } else {
            name.push(c);
        }
    }
    Some(name)
}

/// The poll a message creates, in any of its forms.
fn poll_creation(m: &wa::Message) -> Option<&wa::message::PollCreationMessage> {
    m.poll_creation_message
        .as_option()
        .or(m.poll_creation_message_v2.as_option())
        .or(m.poll_creation_message_v3.as_option())
}

fn poll_of(m: &wa::Message) -> Option<Poll> {
    let p = poll_creation(m)?;
    let options: Vec<String> = p
        .options
        .iter()
        .filter_map(|o| o.option_name.clone())
        .collect();
    let mut poll = Poll::new(
        p.name.as_deref().unwrap_or_default(),
        options.clone(),
        false,
    )
    .unwrap_or(Poll {
        question: p.name.clone().unwrap_or_default(),
        options,
        multiple: false,
        votes: Vec::new(),
        tally: Vec::new(),
    });
    poll.multiple = p.selectable_options_count.unwrap_or(1) != 1;
    Some(poll)
}

/// The poll a vote is for, and the vote as sent (encrypted).
pub(super) fn vote_of(m: &wa::Message) -> Option<(String, &wa::message::PollEncValue)> {
    let u = m.poll_update_message.as_option()?;
    let poll_id = u.poll_creation_message_key.as_option()?.id.clone()?;
    Some((poll_id, u.vote.as_option()?))
}

/// The secret a message carries (a poll's: its votes' keys are drawn from it).
pub(super) fn secret_of(m: &InboundMessage) -> Option<Vec<u8>> {
    let base = m.message.get_base_message();
    [&m.message, base]
        .into_iter()
        .find_map(|x| x.message_context_info.as_option()?.message_secret.clone())
        .filter(|s| s.len() == 32)
}

/// The message an edit or a revoke is about.
fn edit_target_of(m: &wa::Message) -> Option<String> {
    use wa::message::protocol_message::Type;
    let p = m.protocol_message.as_option()?;
    matches!(p.r#type, Some(Type::Revoke | Type::MessageEdit))
        .then(|| p.key.as_option()?.id.clone())
        .flatten()
}

/// The new text (or caption) of an edit.
fn edited_text_of(m: &wa::Message) -> Option<String> {
    let new = m.protocol_message.as_option()?.edited_message.as_option()?;
    new.text_content()
        .or_else(|| new.get_caption())
        .map(str::to_owned)
}

/// The key of a message of ours, as an edit (`in_group`: with us as the participant in a
/// group) or a revoke (never a participant) names it, as WhatsApp Web sends them.
fn own_key(target: &Message, in_group: bool) -> wa::MessageKey {
    wa::MessageKey {
        remote_jid: Some(target.chat_id.clone()),
        from_me: Some(true),
        id: Some(target.id.clone()),
        participant: (in_group && target.chat_id.ends_with("@g.us")).then(|| target.from.clone()),
    }
}

fn reaction_of(m: &wa::Message) -> Option<Reaction> {
    let r = m.reaction_message.as_option()?;
    Some(Reaction {
        message_id: r.key.as_option()?.id.clone()?,
        emoji: r.text.clone().unwrap_or_default(),
    })
}

fn location_of(m: &wa::Message) -> Option<Location> {
    let l = m.location_message.as_option()?;
    Some(Location {
        latitude: l.degrees_latitude.unwrap_or_default(),
        longitude: l.degrees_longitude.unwrap_or_default(),
        name: l.name.clone(),
        address: l.address.clone(),
    })
}

fn contacts_of(m: &wa::Message) -> Option<Vec<ContactCard>> {
    let card = |c: &wa::message::ContactMessage| ContactCard {
        name: c.display_name.clone(),
        vcard: c.vcard.clone().unwrap_or_default(),
    };
    if let Some(c) = m.contact_message.as_option() {
        return Some(vec![card(c)]);
    }
    let a = m.contacts_array_message.as_option()?;
    Some(a.contacts.iter().map(card).collect())
}

/// What is known about attached media before any download (the media module fills in
/// the stored file later).
fn media_of(m: &wa::Message) -> Option<serde_json::Value> {
    let (mimetype, file_name, size) = if let Some(x) = m.image_message.as_option() {
        (x.mimetype.clone(), None, x.file_length)
    } else if let Some(x) = m.video_message.as_option() {
        (x.mimetype.clone(), None, x.file_length)
    } else if let Some(x) = m.audio_message.as_option() {
        (x.mimetype.clone(), None, x.file_length)
    } else if let Some(x) = m.document_message.as_option() {
        (x.mimetype.clone(), x.file_name.clone(), x.file_length)
    } else if let Some(x) = m.sticker_message.as_option() {
        (x.mimetype.clone(), None, x.file_length)
    } else {
        return None;
    };
    Some(serde_json::json!({
        "mimetype": mimetype,
        "originalName": file_name,
        "fileSize": size,
    }))
}
