//! The normalized event model that every output (webhooks, Socket.IO, history) uses.
//!
//! An [`Event`] is born as a row in the `events` table, written by
//! [`crate::store::events::append`] in the same transaction as the state change that caused it.
//! Only after that transaction commits is it published on the [`EventBus`], so a subscriber
//! never sees an event that a crash could take back, and the durable outbox (which reads the
//! table) never misses one that was published.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// What happened. The names (`as_str`) are the public contract: webhook `event` fields,
/// Socket.IO event names and webhook subscriptions use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum EventKind {
    MessageReceived,
    MessageFromMe,
    MessageSent,
    MessageDelivered,
    MessageRead,
    MessageFailed,
    MessageReaction,
    MessageRevoked,
    MessageEdited,
    SessionStatus,
    Qr,
    PasskeyRequired,
    PasskeyConfirmation,
    PasskeyFailed,
    Call,
    Presence,
    PollVote,
    MessageUndecryptable,
    GroupJoined,
    GroupUpdated,
    GroupParticipants,
    ChatUpdated,
    MessageDeleted,
    MessageStarred,
}

impl EventKind {
    pub const ALL: [EventKind; 24] = [
        EventKind::MessageReceived,
        EventKind::MessageFromMe,
        EventKind::MessageSent,
        EventKind::MessageDelivered,
        EventKind::MessageRead,
        EventKind::MessageFailed,
        EventKind::MessageReaction,
        EventKind::MessageRevoked,
        EventKind::MessageEdited,
        EventKind::SessionStatus,
        EventKind::Qr,
        EventKind::PasskeyRequired,
        EventKind::PasskeyConfirmation,
        EventKind::PasskeyFailed,
        EventKind::Call,
        EventKind::Presence,
        EventKind::PollVote,
        EventKind::MessageUndecryptable,
        EventKind::GroupJoined,
        EventKind::GroupUpdated,
        EventKind::GroupParticipants,
        EventKind::ChatUpdated,
        EventKind::MessageDeleted,
        EventKind::MessageStarred,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MessageReceived => "message-received",
            EventKind::MessageFromMe => "message-from-me",
            EventKind::MessageSent => "message-sent",
            EventKind::MessageDelivered => "message-delivered",
            EventKind::MessageRead => "message-read",
            EventKind::MessageFailed => "message-failed",
            EventKind::MessageReaction => "message-reaction",
            EventKind::MessageRevoked => "message-revoked",
            EventKind::MessageEdited => "message-edited",
            EventKind::SessionStatus => "session-status",
            EventKind::Qr => "qr",
            EventKind::PasskeyRequired => "passkey-required",
            EventKind::PasskeyConfirmation => "passkey-confirmation",
            EventKind::PasskeyFailed => "passkey-failed",
            EventKind::Call => "call",
            EventKind::Presence => "presence",
            EventKind::PollVote => "poll-vote",
            EventKind::MessageUndecryptable => "message-undecryptable",
            EventKind::GroupJoined => "group-joined",
            EventKind::GroupUpdated => "group-updated",
            EventKind::GroupParticipants => "group-participants",
            EventKind::ChatUpdated => "chat-updated",
            EventKind::MessageDeleted => "message-deleted",
            EventKind::MessageStarred => "message-starred",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event `{0}`")]
pub struct UnknownEventKind(pub String);

impl FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownEventKind(s.to_owned()))
    }
}

impl From<EventKind> for &'static str {
    fn from(k: EventKind) -> Self {
        k.as_str()
    }
}

impl TryFrom<String> for EventKind {
    type Error = UnknownEventKind;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// One committed event. `id` is the `events` row id: increasing, usable as a cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub kind: EventKind,
    pub session_id: String,
    pub chat_id: Option<String>,
    /// Unix seconds.
    pub timestamp: i64,
    pub data: serde_json::Value,
}

impl Event {
    /// The webhook / Socket.IO payload: `{"event","sessionId","timestamp","data"}`.
    pub fn body(&self) -> serde_json::Value {
        body(self.kind, &self.session_id, self.timestamp, &self.data)
    }
}

/// The payload shape, shared with the store which persists it before an `Event` exists.
pub fn body(
    kind: EventKind,
    session_id: &str,
    timestamp: i64,
    data: &serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "event": kind.as_str(),
        "sessionId": session_id,
        "timestamp": timestamp,
        "data": data,
    })
}

/// Fan-out of committed events to live consumers (Socket.IO, the webhook outbox's wake-up).
///
/// A lagging subscriber loses events from the channel (tokio broadcast semantics), never
/// from the database: anything that must not miss an event reads the `events` table and
/// uses the bus only as a wake-up.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        Self { tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Publish events that are already committed. Having no subscriber is normal.
    pub fn publish(&self, event: Event) {
        // `send` only fails when nobody listens, which is not an error for a bus.
        if self.tx.send(Arc::new(event)).is_err() {
            tracing::trace!("event published with no live subscriber");
        }
    }

    pub fn publish_all(&self, events: impl IntoIterator<Item = Event>) {
        for e in events {
            self.publish(e);
        }
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(4096)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), k);
        }
        assert_eq!(EventKind::MessageReceived.as_str(), "message-received");
        assert!("all".parse::<EventKind>().is_err());
    }

    #[test]
    fn body_shape() {
        let e = Event {
            id: 1,
            kind: EventKind::Qr,
            session_id: "s1".into(),
            chat_id: None,
            timestamp: 5,
            data: serde_json::json!({"qr": "x"}),
        };
        assert_eq!(
            e.body(),
            serde_json::json!({"event":"qr","sessionId":"s1","timestamp":5,"data":{"qr":"x"}})
        );
    }
}
