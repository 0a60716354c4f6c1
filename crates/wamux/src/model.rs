//! Our own domain types. They parse and validate at the edge, so code past the API layer
//! never sees an unchecked session id or phone number.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A session's public name: 1-64 characters from `A-Z a-z 0-9 _ -`, so it is safe in URLs,
/// file names and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct SessionId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionIdError {
    #[error("sessionId must not be empty")]
    Empty,
    #[error("sessionId must be at most 64 characters")]
    TooLong,
    #[error("sessionId may only contain letters, digits, '_' and '-'")]
    BadChar,
}

impl SessionId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(s: &str) -> Result<Self, SessionIdError> {
        if s.is_empty() {
            return Err(SessionIdError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(SessionIdError::TooLong);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(SessionIdError::BadChar);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a session is in its life. The names are the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Starting,
    Qr,
    /// WhatsApp asks for the account owner's passkey before it links this device.
    PasskeyRequired,
    /// The passkey was accepted; the operator checks that the phone shows the same code.
    PasskeyConfirmation,
    Connecting,
    Connected,
    Disconnected,
    LoggedOut,
    Failed,
}

impl SessionStatus {
    pub const ALL: [SessionStatus; 9] = [
        SessionStatus::Starting,
        SessionStatus::Qr,
        SessionStatus::PasskeyRequired,
        SessionStatus::PasskeyConfirmation,
        SessionStatus::Connecting,
        SessionStatus::Connected,
        SessionStatus::Disconnected,
        SessionStatus::LoggedOut,
        SessionStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Starting => "starting",
            SessionStatus::Qr => "qr",
            SessionStatus::PasskeyRequired => "passkey_required",
            SessionStatus::PasskeyConfirmation => "passkey_confirmation",
            SessionStatus::Connecting => "connecting",
            SessionStatus::Connected => "connected",
            SessionStatus::Disconnected => "disconnected",
            SessionStatus::LoggedOut => "logged_out",
            SessionStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A chat address given by a user: a phone number in any of the accepted spellings, or a
/// JID (`...@s.whatsapp.net`, `...@c.us`, `...@lid`, `...@g.us`). Normalized to the JID
/// WhatsApp uses (`@c.us` becomes `@s.whatsapp.net`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ChatAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatAddressError {
    #[error("`to` is empty")]
    Empty,
    #[error(
        "`{0}` is not a valid phone number: use the international form with country code, e.g. 15551234567"
    )]
    BadPhone(String),
    #[error(
        "`{0}` is not a supported address: use a phone number or a JID ending in @s.whatsapp.net, @c.us, @lid or @g.us"
    )]
    BadJid(String),
}

impl ChatAddress {
    pub fn parse(input: &str) -> Result<Self, ChatAddressError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ChatAddressError::Empty);
        }
        if let Some((user, server)) = s.split_once('@') {
            let server = match server {
                "c.us" | "s.whatsapp.net" => "s.whatsapp.net",
                "lid" => "lid",
                "g.us" => "g.us",
                _ => return Err(ChatAddressError::BadJid(s.to_owned())),
            };
            // A device suffix (`:N`) is not an address a user sends to.
            let ok = match server {
                "g.us" => {
                    !user.is_empty()
                        && user.bytes().all(|b| b.is_ascii_digit() || b == b'-')
                        && user.len() <= 64
                }
                _ => is_phone_digits(user) || (server == "lid" && is_digits(user, 1, 20)),
            };
            if !ok {
                return Err(ChatAddressError::BadJid(s.to_owned()));
            }
            return Ok(Self(format!("{user}@{server}")));
        }
        let digits: String = s
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.' | '+'))
            .collect();
        let plus_ok = s.matches('+').count() <= 1 && (!s.contains('+') || s.starts_with('+'));
        if !plus_ok || !is_phone_digits(&digits) {
            return Err(ChatAddressError::BadPhone(s.to_owned()));
        }
        Ok(Self(format!("{digits}@s.whatsapp.net")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn user(&self) -> &str {
        self.0.split('@').next().unwrap_or_default()
    }
}

fn is_digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// E.164 allows at most 15 digits; the shortest real international numbers have 7.
/// A leading zero means a national (not international) number.
fn is_phone_digits(s: &str) -> bool {
    is_digits(s, 7, 15) && !s.starts_with('0')
}

/// Delivery state of a message. Only moves forward (`failed` is final).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Accepted into the send queue (`"queue": true` or `"sendAt"`), not sent yet.
    Queued,
    Pending,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Pending => "pending",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Read => "read",
            MessageStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            MessageStatus::Queued,
            MessageStatus::Pending,
            MessageStatus::Sent,
            MessageStatus::Delivered,
            MessageStatus::Read,
            MessageStatus::Failed,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }

    /// The statuses a message may have before moving to `self`.
    pub fn predecessors(self) -> &'static [&'static str] {
        match self {
            MessageStatus::Queued => &[],
            MessageStatus::Pending => &["queued"],
            MessageStatus::Sent => &["queued", "pending"],
            MessageStatus::Delivered => &["queued", "pending", "sent"],
            MessageStatus::Read => &["queued", "pending", "sent", "delivered"],
            // Sent, it may still be refused by WhatsApp's server (a negative ack).
            MessageStatus::Failed => &["queued", "pending", "sent"],
        }
    }
}

/// What kind of message it is: the public `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Text,
    Image,
    Video,
    Audio,
    /// A voice note.
    Ptt,
    Document,
    Sticker,
    Location,
    Contact,
    Poll,
    PollVote,
    Reaction,
    Edited,
    Revoked,
    /// A kind wamux has no shape for yet (`rawType` names it).
    #[serde(other)]
    Unknown,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Image => "image",
            MessageKind::Video => "video",
            MessageKind::Audio => "audio",
            MessageKind::Ptt => "ptt",
            MessageKind::Document => "document",
            MessageKind::Sticker => "sticker",
            MessageKind::Location => "location",
            MessageKind::Contact => "contact",
            MessageKind::Poll => "poll",
            MessageKind::PollVote => "poll_vote",
            MessageKind::Reaction => "reaction",
            MessageKind::Edited => "edited",
            MessageKind::Revoked => "revoked",
            MessageKind::Unknown => "unknown",
        }
    }

    /// An action on another message (it shows on its target), not a message of the chat.
    pub fn is_action(self) -> bool {
        matches!(
            self,
            MessageKind::Reaction
                | MessageKind::Edited
                | MessageKind::Revoked
                | MessageKind::PollVote
        )
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message in the public shape (DESIGN.md): the same JSON in history, webhooks and
/// Socket.IO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    pub session_id: String,
    /// The chat: the peer for a 1:1 chat, the group for a group.
    pub chat_id: String,
    /// Sender's phone-number JID where known (else its LID).
    pub from: String,
    /// Recipient's JID (the chat, or our own JID for inbound 1:1 messages).
    pub to: String,
    pub from_me: bool,
    pub push_name: Option<String>,
    #[serde(rename = "type")]
    pub kind: MessageKind,
    pub text: Option<String>,
    pub caption: Option<String>,
    /// Unix seconds.
    pub timestamp: i64,
    pub status: MessageStatus,
    pub quoted_id: Option<String>,
    pub media: Option<serde_json::Value>,
    /// Sender's phone-number JID and LID, each where known.
    pub from_pn: Option<String>,
    pub from_lid: Option<String>,
    /// The chat's phone-number JID and LID, each where known.
    pub chat_pn: Option<String>,
    pub chat_lid: Option<String>,
    /// Group participant that sent it, for group messages.
    pub participant: Option<String>,
    /// A shared location (`type: "location"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Shared contact cards (`type: "contact"`): one, or several for a contacts array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<ContactCard>>,
    /// For `type: "reaction"`: the message reacted to, and the emoji (empty: taken back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction: Option<Reaction>,
    /// The reactions on this message, one per sender (the latest counts), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionMark>,
    /// For `type: "edited"` and `"revoked"`: the message edited or revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    /// Unix seconds of the latest edit, on an edited message (its `text` is the new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<i64>,
    /// The sender deleted it for everyone: its content is gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
    /// For `type: "poll"`: the question, the options and the votes so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll: Option<Poll>,
    /// For `type: "poll_vote"`: the poll and the options picked, decrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote: Option<PollVote>,
    /// The sender forwarded it (WhatsApp shows "Forwarded").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forwarded: bool,
    /// View once: the recipient's app shows the photo, video or voice note once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub view_once: bool,
    /// Starred by the account (on any of its devices).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub starred: bool,
    /// For `type: "unknown"`: the kind WhatsApp sent, by its protobuf field name
    /// (`eventMessage`, `liveLocationMessage`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_type: Option<String>,
    /// Who the text or caption mentions (`@`), by phone-number JID (or LID).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
}

/// One participant's latest receipt for a group message of ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptMark {
    /// The participant's phone-number JID (or LID).
    pub participant: String,
    /// `delivered` or `read`.
    pub status: MessageStatus,
    /// Unix seconds.
    pub timestamp: i64,
}

/// A poll, with each voter's latest vote and the count per option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Poll {
    pub question: String,
    pub options: Vec<String>,
    /// Whether a voter may pick more than one option.
    pub multiple: bool,
    /// The latest vote of each voter, oldest first (a vote taken back is gone).
    #[serde(default)]
    pub votes: Vec<PollBallot>,
    /// Votes per option, in the order of `options`.
    #[serde(default)]
    pub tally: Vec<OptionCount>,
}

/// One voter's choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PollBallot {
    /// Who voted (as `from` of their messages).
    pub voter: String,
    pub options: Vec<String>,
    /// Unix seconds.
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OptionCount {
    pub option: String,
    pub votes: u32,
}

/// A vote message: the poll it is for and what was picked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PollVote {
    pub poll_id: String,
    /// The options picked (empty: the vote taken back); absent when the vote could not be
    /// opened (the poll is not in the history, or its key does not fit).
    pub options: Option<Vec<String>>,
    /// The poll's count after this vote (in `poll-vote` events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tally: Option<Vec<OptionCount>>,
}

impl Poll {
    /// A new poll, checked as WhatsApp checks one: a question, 2 to 12 distinct options.
    pub fn new(question: &str, options: Vec<String>, multiple: bool) -> Result<Self, String> {
        if question.trim().is_empty() || question.chars().count() > 255 {
            return Err("question: must be 1 to 255 characters".into());
        }
        if !(2..=12).contains(&options.len()) {
            return Err(format!(
                "options: a poll has 2 to 12 options, not {}",
                options.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for o in &options {
            if o.trim().is_empty() || o.chars().count() > 100 {
                return Err("options: each must be 1 to 100 characters".into());
            }
            if !seen.insert(o.as_str()) {
                return Err(format!("options: `{o}` is there twice"));
            }
        }
        let mut p = Poll {
            question: question.to_owned(),
            options,
            multiple,
            votes: Vec::new(),
            tally: Vec::new(),
        };
        p.count();
        Ok(p)
    }

    /// Takes `voter`'s latest vote (no options: taken back) and counts again.
    pub fn apply_vote(&mut self, voter: &str, options: &[String], at: i64) {
        self.votes.retain(|b| b.voter != voter);
        let picked: Vec<String> = options
            .iter()
            .filter(|o| self.options.contains(o))
            .cloned()
            .collect();
        if !picked.is_empty() {
            self.votes.push(PollBallot {
                voter: voter.to_owned(),
                options: picked,
                timestamp: at,
            });
        }
        self.count();
    }

    fn count(&mut self) {
        self.tally = self
            .options
            .iter()
            .map(|o| OptionCount {
                option: o.clone(),
                votes: self.votes.iter().filter(|b| b.options.contains(o)).count() as u32,
            })
            .collect();
    }
}

/// What a presence update says: the account online or not, or a chat state in one chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    Available,
    Unavailable,
    /// Typing.
    Composing,
    /// Recording a voice note.
    Recording,
    /// Stopped typing or recording.
    Paused,
}

impl PresenceState {
    pub const ALL: [PresenceState; 5] = [
        PresenceState::Available,
        PresenceState::Unavailable,
        PresenceState::Composing,
        PresenceState::Recording,
        PresenceState::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PresenceState::Available => "available",
            PresenceState::Unavailable => "unavailable",
            PresenceState::Composing => "composing",
            PresenceState::Recording => "recording",
            PresenceState::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// A chat state (shown in one chat) rather than the account's presence.
    pub fn in_chat(self) -> bool {
        !matches!(self, PresenceState::Available | PresenceState::Unavailable)
    }
}

/// How long after sending WhatsApp lets a message be edited.
pub const EDIT_WINDOW_SECS: i64 = 15 * 60;
/// How long after sending WhatsApp lets a message be deleted for everyone (about two and a
/// half days).
pub const REVOKE_WINDOW_SECS: i64 = 60 * 60 * 60;

/// What a reaction message says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reaction {
    /// The id of the message reacted to.
    pub message_id: String,
    /// One emoji; empty when the sender took the reaction back.
    pub emoji: String,
}

/// A reaction as its target shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReactionMark {
    /// Who reacted (as `from` of their messages).
    pub from: String,
    pub emoji: String,
    /// Unix seconds.
    pub timestamp: i64,
}

impl Message {
    /// Takes an edit (the new text) made at `at`.
    pub fn apply_edit(&mut self, text: &str, at: i64) {
        if self.caption.is_some() {
            self.caption = Some(text.to_owned());
        } else {
            self.text = Some(text.to_owned());
        }
        self.edited_at = Some(at);
    }

    /// Takes a revoke: the content is gone, the message stays as "deleted".
    pub fn apply_revoke(&mut self) {
        self.revoked = true;
        self.text = None;
        self.caption = None;
        self.location = None;
        self.contacts = None;
        self.media = None;
    }

    /// Shows `reaction` by `from` on this message: one per sender, the latest wins, an
    /// empty emoji takes it back.
    pub fn apply_reaction(&mut self, from: &str, emoji: &str, timestamp: i64) {
        self.reactions.retain(|r| r.from != from);
        if !emoji.is_empty() {
            self.reactions.push(ReactionMark {
                from: from.to_owned(),
                emoji: emoji.to_owned(),
                timestamp,
            });
        }
    }
}

/// Whether `s` can be sent as a reaction: one emoji (a single sequence, with its skin tone
/// or joiners), or empty to take a reaction back.
pub fn is_reaction_emoji(s: &str) -> bool {
    s.is_empty()
        || (s.chars().count() <= 10
            && s.len() <= 64
            && !s.is_ascii()
            && !s
                .chars()
                .any(|c| c.is_ascii_alphabetic() || c.is_whitespace() || c.is_control()))
}

/// A location shared in a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// Degrees, -90 to 90.
    pub latitude: f64,
    /// Degrees, -180 to 180.
    pub longitude: f64,
    pub name: Option<String>,
    pub address: Option<String>,
}

/// A contact card shared in a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactCard {
    /// The name the sender's phone shows for the card.
    pub name: Option<String>,
    /// The card itself (vCard 3.0 text, as WhatsApp sends it).
    pub vcard: String,
}

impl Location {
    /// A location to send; the coordinates must be on Earth.
    pub fn new(
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
    ) -> Result<Self, String> {
        if !latitude.is_finite() || !(-90.0..=90.0).contains(&latitude) {
            return Err(format!("latitude {latitude} is not between -90 and 90"));
        }
        if !longitude.is_finite() || !(-180.0..=180.0).contains(&longitude) {
            return Err(format!("longitude {longitude} is not between -180 and 180"));
        }
        Ok(Location {
            latitude,
            longitude,
            name,
            address,
        })
    }
}

impl ContactCard {
    /// The longest card accepted, in bytes (a card with a photo is larger; WhatsApp
    /// shares cards without one).
    pub const MAX_VCARD: usize = 16 * 1024;

    /// The card WhatsApp's app makes for a name and a phone number (digits with country
    /// code): the `waid` lets the recipient's app offer "message" and "add".
    pub fn for_phone(name: &str, digits: &str) -> Result<Self, String> {
        let name = name.trim();
        if name.is_empty() {
            return Err("name must not be empty".into());
        }
        if name.len() > 256 {
            return Err("name must be at most 256 bytes".into());
        }
        if name.chars().any(char::is_control) {
            return Err("name must not contain line breaks or control characters".into());
        }
        // vCard 3.0 text escaping: a name cannot end the line or add a field.
        let escaped = name
            .replace('\\', "\\\\")
            .replace(',', "\\,")
            .replace(';', "\\;");
        Ok(ContactCard {
            name: Some(name.to_owned()),
            vcard: format!(
                "BEGIN:VCARD\nVERSION:3.0\nFN:{escaped}\nTEL;type=CELL;type=VOICE;waid={digits}:+{digits}\nEND:VCARD"
            ),
        })
    }

    /// A card given whole; its name is taken from `FN` unless `name` is given.
    pub fn from_vcard(vcard: &str, name: Option<String>) -> Result<Self, String> {
        let v = vcard.trim();
        if v.len() > Self::MAX_VCARD {
            return Err(format!("vcard must be at most {} bytes", Self::MAX_VCARD));
        }
        let upper = v.to_ascii_uppercase();
        if !upper.starts_with("BEGIN:VCARD") || !upper.ends_with("END:VCARD") {
            return Err("vcard must be a vCard (BEGIN:VCARD ... END:VCARD)".into());
        }
        if !upper.contains("\nVERSION:") {
            return Err("vcard has no VERSION line".into());
        }
        let name = name.or_else(|| {
            v.lines()
                .find_map(|l| l.strip_prefix("FN:").or_else(|| l.strip_prefix("fn:")))
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
        });
        Ok(ContactCard {
            name,
            vcard: v.to_owned(),
        })
    }
}

/// What a message of ours says, for the kinds sent from their content alone (media goes
/// through the media module, which uploads first).
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text(String),
    Location(Location),
    /// One card, or several (a contacts array).
    Contacts(Vec<ContactCard>),
    /// A reaction to `target`, a message of the chat it goes to; an empty emoji takes our
    /// reaction back.
    Reaction {
        target: Box<Message>,
        emoji: String,
    },
    /// New text for `target`, a message of ours.
    Edit {
        target: Box<Message>,
        text: String,
    },
    /// Deletes `target`, a message of ours, for everyone.
    Revoke {
        target: Box<Message>,
    },
    /// A poll, with the secret its votes will be encrypted with.
    Poll {
        poll: Poll,
        secret: [u8; 32],
    },
    /// Another message's content, marked forwarded.
    Forwarded(Box<Content>),
}

impl Content {
    /// A poll with a fresh secret.
    pub fn poll(poll: Poll) -> Content {
        Content::Poll {
            poll,
            secret: rand::random(),
        }
    }

    /// The message `type` it is stored under.
    pub fn kind(&self) -> MessageKind {
        match self {
            Content::Text(_) => MessageKind::Text,
            Content::Location(_) => MessageKind::Location,
            Content::Contacts(_) => MessageKind::Contact,
            Content::Reaction { .. } => MessageKind::Reaction,
            Content::Edit { .. } => MessageKind::Edited,
            Content::Revoke { .. } => MessageKind::Revoked,
            Content::Poll { .. } => MessageKind::Poll,
            Content::Forwarded(c) => c.kind(),
        }
    }

    /// Writes it into `msg`, whose `type` it sets.
    pub fn fill(&self, msg: &mut Message) {
        msg.kind = self.kind();
        match self {
            Content::Text(t) => msg.text = Some(t.clone()),
            Content::Location(l) => msg.location = Some(l.clone()),
            Content::Contacts(c) => msg.contacts = Some(c.clone()),
            Content::Reaction { target, emoji } => {
                msg.text = Some(emoji.clone());
                msg.reaction = Some(Reaction {
                    message_id: target.id.clone(),
                    emoji: emoji.clone(),
                });
            }
            Content::Edit { target, text } => {
                msg.text = Some(text.clone());
                msg.target_id = Some(target.id.clone());
            }
            Content::Revoke { target } => msg.target_id = Some(target.id.clone()),
            Content::Poll { poll, .. } => msg.poll = Some(poll.clone()),
            Content::Forwarded(c) => {
                c.fill(msg);
                msg.forwarded = true;
            }
        }
    }

    /// The stored message an action (reaction, edit, revoke) is about.
    pub fn target(&self) -> Option<&Message> {
        match self {
            Content::Reaction { target, .. }
            | Content::Edit { target, .. }
            | Content::Revoke { target } => Some(target),
            Content::Text(_)
            | Content::Location(_)
            | Content::Contacts(_)
            | Content::Poll { .. }
            | Content::Forwarded(_) => None,
        }
    }

    /// The content of a stored message, when it is of a kind sent this way (and sent again:
    /// a reaction is not).
    pub fn of(msg: &Message) -> Option<Content> {
        match msg.kind {
            MessageKind::Text => msg.text.clone().map(Content::Text),
            MessageKind::Location => msg.location.clone().map(Content::Location),
            MessageKind::Contact => msg.contacts.clone().map(Content::Contacts),
            _ => None,
        }
        .map(|c| {
            if msg.forwarded {
                Content::Forwarded(Box::new(c))
            } else {
                c
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids() {
        assert!(SessionId::parse("s1").is_ok());
        assert!(SessionId::parse("my_session-2").is_ok());
        assert_eq!(SessionId::parse(""), Err(SessionIdError::Empty));
        assert_eq!(SessionId::parse("a b"), Err(SessionIdError::BadChar));
        assert_eq!(SessionId::parse("../x"), Err(SessionIdError::BadChar));
        assert_eq!(
            SessionId::parse(&"a".repeat(65)),
            Err(SessionIdError::TooLong)
        );
    }

    #[test]
    fn the_four_address_forms() {
        for s in [
            "15551234567",
            "+1 555 123 4567",
            "15551234567@s.whatsapp.net",
            "15551234567@c.us",
            "+1 (555) 123-4567",
        ] {
            assert_eq!(
                ChatAddress::parse(s).unwrap().as_str(),
                "15551234567@s.whatsapp.net",
                "{s}"
            );
        }
        assert_eq!(
            ChatAddress::parse("123456789@lid").unwrap().as_str(),
            "123456789@lid"
        );
        assert_eq!(
            ChatAddress::parse("120363000000000001@g.us")
                .unwrap()
                .as_str(),
            "120363000000000001@g.us"
        );
        for bad in [
            "",
            "abc",
            "123",
            "0555123456",
            "1555123456789012",
            "1555+1234567",
            "15551234567@example.com",
            "abc@c.us",
        ] {
            assert!(ChatAddress::parse(bad).is_err(), "{bad}");
        }
    }
}

/// A class of chats a session can ignore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChatClass {
    /// Group chats (`@g.us`).
    Groups,
    /// Status updates (`status@broadcast`).
    Status,
    /// Channels (`@newsletter`).
    Channels,
    /// Broadcast lists (`@broadcast`).
    Broadcast,
}

impl ChatClass {
    pub const ALL: [ChatClass; 4] = [
        ChatClass::Groups,
        ChatClass::Status,
        ChatClass::Channels,
        ChatClass::Broadcast,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChatClass::Groups => "groups",
            ChatClass::Status => "status",
            ChatClass::Channels => "channels",
            ChatClass::Broadcast => "broadcast",
        }
    }

    /// The class of a chat JID (`None`: a one-to-one chat).
    pub fn of(chat: &str) -> Option<ChatClass> {
        if chat.ends_with("@g.us") {
            Some(ChatClass::Groups)
        } else if chat == "status@broadcast" {
            Some(ChatClass::Status)
        } else if chat.ends_with("@newsletter") {
            Some(ChatClass::Channels)
        } else if chat.ends_with("@broadcast") {
            Some(ChatClass::Broadcast)
        } else {
            None
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// How a session's queued messages are paced, so that a bulk send looks like a person
/// typing rather than a machine (WhatsApp bans numbers that send too fast). All off by
/// default; direct sends are never held back, but do count towards the daily cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pacing {
    /// The least time between two queued sends, in milliseconds (0: none; at most an hour).
    #[serde(default)]
    pub interval_ms: u32,
    /// Each gap is the interval give or take up to this, at random (at most the interval).
    #[serde(default)]
    pub jitter_ms: u32,
    /// Shows "typing…" in the chat before each queued message, longer for a longer text.
    #[serde(default)]
    pub typing: bool,
    /// At most this many messages sent a day (UTC); queued ones beyond it wait for the next.
    #[serde(default)]
    pub daily_cap: Option<u32>,
}

impl Pacing {
    /// The longest interval taken.
    pub const MAX_INTERVAL_MS: u32 = 3_600_000;

    /// What is wrong with these settings, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.interval_ms > Self::MAX_INTERVAL_MS {
            return Some(format!(
                "`intervalMs` is at most {} (an hour)",
                Self::MAX_INTERVAL_MS
            ));
        }
        if self.jitter_ms > self.interval_ms {
            return Some("`jitterMs` is at most `intervalMs`".into());
        }
        if self.daily_cap == Some(0) {
            return Some("`dailyCap` is at least 1 (leave it out for none)".into());
        }
        None
    }

    /// The gap before the next queued send: the interval, give or take the jitter.
    pub fn gap(&self) -> std::time::Duration {
        let jitter = i64::from(self.jitter_ms);
        let offset = if jitter == 0 {
            0
        } else {
            rand::random_range(-jitter..=jitter)
        };
        let ms = (i64::from(self.interval_ms) + offset).max(0) as u64;
        std::time::Duration::from_millis(ms)
    }

    /// How long "typing…" shows before a message of `chars` characters: 50 ms a
    /// character, between 1 and 6 s.
    pub fn typing_for(chars: usize) -> std::time::Duration {
        std::time::Duration::from_millis((chars as u64 * 50).clamp(1_000, 6_000))
    }

    /// As stored (empty when all is off).
    pub fn stored(&self) -> String {
        if *self == Pacing::default() {
            String::new()
        } else {
            serde_json::to_string(self).expect("pacing serializes")
        }
    }

    /// From what [`Pacing::stored`] wrote; off when empty or unreadable.
    pub fn parse_stored(s: &str) -> Pacing {
        if s.is_empty() {
            return Pacing::default();
        }
        serde_json::from_str(s).unwrap_or_else(|e| {
            tracing::warn!("unreadable pacing setting {s:?}, taken as none: {e}");
            Pacing::default()
        })
    }
}

/// The chat classes whose messages a session drops before storage and webhooks (they are
/// still acknowledged to WhatsApp, so nothing is redelivered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ignore(u8);

impl Ignore {
    pub fn of(classes: &[ChatClass]) -> Self {
        Self(classes.iter().fold(0, |acc, c| acc | c.bit()))
    }

    pub fn contains(self, class: ChatClass) -> bool {
        self.0 & class.bit() != 0
    }

    /// Whether a message of chat `chat` is dropped.
    pub fn drops(self, chat: &str) -> bool {
        ChatClass::of(chat).is_some_and(|c| self.contains(c))
    }

    pub fn classes(self) -> Vec<ChatClass> {
        ChatClass::ALL
            .into_iter()
            .filter(|c| self.contains(*c))
            .collect()
    }

    /// As the store keeps it: the class names, comma-separated.
    pub fn stored(self) -> String {
        self.classes()
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Reads [`Ignore::stored`]; unknown names (from a newer version) are skipped.
    pub fn parse_stored(s: &str) -> Self {
        let classes: Vec<ChatClass> = s
            .split(',')
            .filter_map(|n| ChatClass::ALL.into_iter().find(|c| c.as_str() == n))
            .collect();
        Self::of(&classes)
    }
}

#[cfg(test)]
mod ignore_tests {
    use super::*;

    #[test]
    fn ignore_classifies_chats_and_round_trips_through_the_store() {
        let i = Ignore::of(&[ChatClass::Groups, ChatClass::Status]);
        assert!(i.drops("120363025246125486@g.us"));
        assert!(i.drops("status@broadcast"));
        assert!(!i.drops("15551234567@s.whatsapp.net"));
        assert!(!i.drops("120363025246125486@newsletter"));
        assert!(!Ignore::default().drops("120363025246125486@g.us"));
        assert_eq!(i.stored(), "groups,status");
        assert_eq!(Ignore::parse_stored(&i.stored()), i);
        assert_eq!(
            Ignore::parse_stored("channels,future"),
            Ignore::of(&[ChatClass::Channels])
        );
        assert_eq!(Ignore::parse_stored(""), Ignore::default());
    }
}

/// What a send adds to its content: the message it quotes and who it mentions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub quoted_id: Option<String>,
    /// User JIDs.
    pub mentions: Vec<String>,
}

/// A chat's state. The default is a chat nobody touched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatState {
    pub pinned: bool,
    pub archived: bool,
    pub muted: bool,
    /// Unix seconds the mute ends; `null` when not muted or muted for good.
    pub muted_until: Option<i64>,
    /// Marked unread by hand (WhatsApp's "mark as unread").
    pub marked_unread: bool,
}

/// One change to a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatChange {
    Pinned(bool),
    Archived(bool),
    /// Muted until a unix-ms time, or for good (`None`).
    Muted(Option<i64>),
    Unmuted,
    MarkedUnread(bool),
}

impl ChatState {
    /// The state after `change`.
    pub fn with(mut self, change: ChatChange) -> Self {
        match change {
            ChatChange::Pinned(v) => self.pinned = v,
            ChatChange::Archived(v) => self.archived = v,
            ChatChange::Muted(until_ms) => {
                self.muted = true;
                self.muted_until = until_ms.map(|ms| ms / 1000);
            }
            ChatChange::Unmuted => {
                self.muted = false;
                self.muted_until = None;
            }
            ChatChange::MarkedUnread(v) => self.marked_unread = v,
        }
        self
    }
}
