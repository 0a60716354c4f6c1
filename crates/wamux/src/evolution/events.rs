//! Evolution API v2's webhook events: their subscription names (`MESSAGES_UPSERT`), the
//! names their payloads carry (`messages.upsert`), and which of our events each is made of.

use std::collections::BTreeSet;
use std::fmt;

use crate::event::EventKind;

/// One of Evolution's webhook events. Every name Evolution accepts in a subscription is
/// accepted here; those wamux has nothing for (`Produced::No`) are never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EvoEvent {
    ApplicationStartup,
    QrcodeUpdated,
    MessagesSet,
    MessagesUpsert,
    MessagesEdited,
    MessagesUpdate,
    MessagesDelete,
    SendMessage,
    SendMessageUpdate,
    ContactsSet,
    ContactsUpsert,
    ContactsUpdate,
    PresenceUpdate,
    ChatsSet,
    ChatsUpsert,
    ChatsUpdate,
    ChatsDelete,
    GroupsUpsert,
    GroupsUpdate,
    GroupParticipantsUpdate,
    ConnectionUpdate,
    LabelsEdit,
    LabelsAssociation,
    Call,
    TypebotStart,
    TypebotChangeStatus,
    MessagingHistorySet,
    RemoveInstance,
    LogoutInstance,
    InstanceCreate,
    InstanceDelete,
    StatusInstance,
}

/// Each event with its subscription name and its payload name, as Evolution spells them.
const NAMES: [(EvoEvent, &str, &str); 32] = [
    (
        EvoEvent::ApplicationStartup,
        "APPLICATION_STARTUP",
        "application.startup",
    ),
    (EvoEvent::QrcodeUpdated, "QRCODE_UPDATED", "qrcode.updated"),
    (EvoEvent::MessagesSet, "MESSAGES_SET", "messages.set"),
    (
        EvoEvent::MessagesUpsert,
        "MESSAGES_UPSERT",
        "messages.upsert",
    ),
    (
        EvoEvent::MessagesEdited,
        "MESSAGES_EDITED",
        "messages.edited",
    ),
    (
        EvoEvent::MessagesUpdate,
        "MESSAGES_UPDATE",
        "messages.update",
    ),
    (
        EvoEvent::MessagesDelete,
        "MESSAGES_DELETE",
        "messages.delete",
    ),
    (EvoEvent::SendMessage, "SEND_MESSAGE", "send.message"),
    (
        EvoEvent::SendMessageUpdate,
        "SEND_MESSAGE_UPDATE",
        "send.message.update",
    ),
    (EvoEvent::ContactsSet, "CONTACTS_SET", "contacts.set"),
    (
        EvoEvent::ContactsUpsert,
        "CONTACTS_UPSERT",
        "contacts.upsert",
    ),
    (
        EvoEvent::ContactsUpdate,
        "CONTACTS_UPDATE",
        "contacts.update",
    ),
    (
        EvoEvent::PresenceUpdate,
        "PRESENCE_UPDATE",
        "presence.update",
    ),
    (EvoEvent::ChatsSet, "CHATS_SET", "chats.set"),
    (EvoEvent::ChatsUpsert, "CHATS_UPSERT", "chats.upsert"),
    (EvoEvent::ChatsUpdate, "CHATS_UPDATE", "chats.update"),
    (EvoEvent::ChatsDelete, "CHATS_DELETE", "chats.delete"),
    (EvoEvent::GroupsUpsert, "GROUPS_UPSERT", "groups.upsert"),
    // Evolution's subscription list says GROUP_UPDATE, its code checks GROUPS_UPDATE: both
    // are taken (see `parse`).
    (EvoEvent::GroupsUpdate, "GROUP_UPDATE", "groups.update"),
    (
        EvoEvent::GroupParticipantsUpdate,
        "GROUP_PARTICIPANTS_UPDATE",
        "group-participants.update",
    ),
    (
        EvoEvent::ConnectionUpdate,
        "CONNECTION_UPDATE",
        "connection.update",
    ),
    (EvoEvent::LabelsEdit, "LABELS_EDIT", "labels.edit"),
    (
        EvoEvent::LabelsAssociation,
        "LABELS_ASSOCIATION",
        "labels.association",
    ),
    (EvoEvent::Call, "CALL", "call"),
    (EvoEvent::TypebotStart, "TYPEBOT_START", "typebot.start"),
    (
        EvoEvent::TypebotChangeStatus,
        "TYPEBOT_CHANGE_STATUS",
        "typebot.change-status",
    ),
    (
        EvoEvent::MessagingHistorySet,
        "MESSAGING_HISTORY_SET",
        "messaging-history.set",
    ),
    (
        EvoEvent::RemoveInstance,
        "REMOVE_INSTANCE",
        "remove.instance",
    ),
    (
        EvoEvent::LogoutInstance,
        "LOGOUT_INSTANCE",
        "logout.instance",
    ),
    (
        EvoEvent::InstanceCreate,
        "INSTANCE_CREATE",
        "instance.create",
    ),
    (
        EvoEvent::InstanceDelete,
        "INSTANCE_DELETE",
        "instance.delete",
    ),
    (
        EvoEvent::StatusInstance,
        "STATUS_INSTANCE",
        "status.instance",
    ),
];

impl EvoEvent {
    pub fn all() -> impl Iterator<Item = EvoEvent> {
        NAMES.iter().map(|(e, _, _)| *e)
    }

    fn entry(self) -> &'static (EvoEvent, &'static str, &'static str) {
        NAMES
            .iter()
            .find(|(e, _, _)| *e == self)
            .expect("every event is in NAMES")
    }

    /// The upper-case name subscriptions use: `MESSAGES_UPSERT`.
    pub fn subscription(self) -> &'static str {
        self.entry().1
    }

    /// The name the payload's `event` carries: `messages.upsert`.
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// The path suffix of `byEvents` webhooks: `messages-upsert`.
    pub fn path(self) -> String {
        self.name().replace(['.', '_'], "-")
    }

    /// Takes a subscription name as Evolution users write it: `MESSAGES_UPSERT`, the payload
    /// name `messages.upsert`, in any case.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("GROUPS_UPDATE") {
            return Some(EvoEvent::GroupsUpdate);
        }
        NAMES
            .iter()
            .find(|(_, sub, name)| s.eq_ignore_ascii_case(sub) || s.eq_ignore_ascii_case(name))
            .map(|(e, _, _)| *e)
    }

    /// Our events an Evolution event is made of (none: wamux never sends it).
    pub fn kinds(self) -> &'static [EventKind] {
        use EventKind as K;
        match self {
            EvoEvent::MessagesUpsert => &[K::MessageReceived, K::MessageFromMe, K::MessageReaction],
            // What the API sends is announced as `message-from-me` (or `message-reaction`) while
            // pending; the renderer tells the two apart.
            EvoEvent::SendMessage => &[K::MessageFromMe, K::MessageReaction],
            EvoEvent::MessagesUpdate => &[
                K::MessageSent,
                K::MessageDelivered,
                K::MessageRead,
                K::MessageFailed,
                K::PollVote,
            ],
            EvoEvent::MessagesDelete => &[K::MessageRevoked],
            EvoEvent::MessagesEdited => &[K::MessageEdited],
            EvoEvent::ConnectionUpdate => &[K::SessionStatus],
            EvoEvent::QrcodeUpdated => &[K::Qr],
            EvoEvent::Call => &[K::Call],
            EvoEvent::PresenceUpdate => &[K::Presence],
            EvoEvent::GroupsUpsert => &[K::GroupJoined],
            EvoEvent::GroupsUpdate => &[K::GroupUpdated],
            EvoEvent::GroupParticipantsUpdate => &[K::GroupParticipants],
            EvoEvent::ChatsUpdate => &[K::ChatUpdated],
            _ => &[],
        }
    }
}

impl fmt::Display for EvoEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.subscription())
    }
}

/// What an Evolution webhook subscribed to: everything (an empty list, as Evolution reads
/// it), or these events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Subscriptions {
    #[default]
    All,
    Only(BTreeSet<EvoEvent>),
}

/// A subscription name Evolution does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event {0:?}; Evolution's events are: {list}", list = subscription_names().join(", "))]
pub struct UnknownEvoEvent(pub String);

pub fn subscription_names() -> Vec<&'static str> {
    EvoEvent::all().map(EvoEvent::subscription).collect()
}

impl Subscriptions {
    /// An empty list is every event, as in Evolution; so is `all`.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, UnknownEvoEvent> {
        let mut set = BTreeSet::new();
        for n in names {
            if n.trim().eq_ignore_ascii_case("all") {
                return Ok(Self::All);
            }
            set.insert(EvoEvent::parse(n).ok_or_else(|| UnknownEvoEvent(n.to_owned()))?);
        }
        Ok(if set.is_empty() {
            Self::All
        } else {
            Self::Only(set)
        })
    }

    /// Parses what this program stored; unknown names (from a newer version) are ignored.
    pub fn from_stored(json: &str) -> Self {
        let names: Vec<String> = serde_json::from_str(json).unwrap_or_default();
        if names.iter().any(|n| n == "all") || names.is_empty() {
            return Self::All;
        }
        Self::Only(names.iter().filter_map(|n| EvoEvent::parse(n)).collect())
    }

    pub fn accepts(&self, e: EvoEvent) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(&e),
        }
    }

    /// The subscription names, `["all"]` for everything (as stored).
    pub fn stored_names(&self) -> Vec<&'static str> {
        match self {
            Self::All => vec!["all"],
            Self::Only(set) => set.iter().map(|e| e.subscription()).collect(),
        }
    }

    /// The names as Evolution shows them: every event it sends for all.
    pub fn names(&self) -> Vec<&'static str> {
        match self {
            Self::All => EvoEvent::all()
                .filter(|e| !e.kinds().is_empty())
                .map(EvoEvent::subscription)
                .collect(),
            Self::Only(set) => set.iter().map(|e| e.subscription()).collect(),
        }
    }

    /// Our events that can make one of the subscribed events.
    pub fn kinds(&self) -> BTreeSet<&'static str> {
        EvoEvent::all()
            .filter(|e| self.accepts(*e))
            .flat_map(|e| e.kinds().iter().map(|k| k.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_every_spelling_evolution_users_write() {
        for e in EvoEvent::all() {
            assert_eq!(EvoEvent::parse(e.subscription()), Some(e));
            assert_eq!(EvoEvent::parse(e.name()), Some(e));
            assert_eq!(EvoEvent::parse(&e.subscription().to_lowercase()), Some(e));
        }
        assert_eq!(
            EvoEvent::parse("GROUPS_UPDATE"),
            Some(EvoEvent::GroupsUpdate)
        );
        assert_eq!(EvoEvent::MessagesUpsert.path(), "messages-upsert");
        assert_eq!(
            EvoEvent::GroupParticipantsUpdate.path(),
            "group-participants-update"
        );
        assert!(EvoEvent::parse("MESSAGE_UPSERT").is_none());
    }

    #[test]
    fn subscriptions_name_the_events_of_ours_they_need() {
        let s = Subscriptions::parse(["MESSAGES_UPSERT", "CONNECTION_UPDATE"]).unwrap();
        let kinds = s.kinds();
        assert!(kinds.contains("message-received") && kinds.contains("session-status"));
        assert!(!kinds.contains("message-delivered"));
        assert_eq!(Subscriptions::parse([]).unwrap(), Subscriptions::All);
        let e = Subscriptions::parse(["NOPE"]).unwrap_err();
        assert!(e.to_string().contains("MESSAGES_UPSERT"), "{e}");
        let stored = serde_json::to_string(&s.stored_names()).unwrap();
        assert_eq!(Subscriptions::from_stored(&stored), s);
        // Events wamux never sends are accepted, and only name nothing of ours.
        let s = Subscriptions::parse(["CONTACTS_UPSERT"]).unwrap();
        assert!(s.kinds().is_empty());
    }
}
