//! The `send_queue` table: sends accepted for later (`"queue": true`, `"sendAt"`), each
//! with its `messages` row (status `queued`) until WhatsApp took it.
//!
//! Order: a chat's messages go by their due time, then by the order they were queued. Only
//! the head of each chat may go ([`due`]), so a message that failed and waits for its retry
//! holds back the chat's later ones, and nothing overtakes.

use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use super::{Result, Store, dispatch, messages};
use crate::event::{Event, EventKind};
use crate::model::{ContactCard, Content, Location, Message, MessageStatus};

/// What is sent: its content (one of text, location, contacts) and the message it quotes.
/// Rows queued before locations and contacts could be queued hold only `text`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Body {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<ContactCard>>,
    pub quoted_id: Option<String>,
    /// User JIDs the text mentions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    /// Sent again as it was: marked forwarded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forwarded: bool,
}

/// A queued send.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub session_id: String,
    pub message_id: String,
    pub chat_id: String,
    /// The recipient as the sender wrote it (any accepted address form).
    pub to: String,
    pub body: Body,
    /// Unix seconds.
    pub send_at: i64,
    /// Unix seconds: when a failed attempt is tried again.
    pub retry_at: Option<i64>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
}

#[derive(FromRow)]
pub(crate) struct QueueRow {
    pub session_id: String,
    pub message_id: String,
    pub chat_id: String,
    pub to_address: String,
    pub body: String,
    pub send_at: i64,
    pub retry_at: Option<i64>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
}

impl TryFrom<QueueRow> for Queued {
    type Error = super::StoreError;

    fn try_from(r: QueueRow) -> Result<Self> {
        Ok(Queued {
            session_id: r.session_id,
            message_id: r.message_id,
            chat_id: r.chat_id,
            to: r.to_address,
            body: serde_json::from_str(&r.body)?,
            send_at: r.send_at,
            retry_at: r.retry_at,
            attempts: r.attempts,
            last_error: r.last_error,
            created_at: r.created_at,
        })
    }
}

impl Body {
    fn of(msg: &Message) -> Result<String> {
        Ok(serde_json::to_string(&Body {
            text: msg.text.clone(),
            location: msg.location.clone(),
            contacts: msg.contacts.clone(),
            quoted_id: msg.quoted_id.clone(),
            mentions: msg.mentions.clone(),
            forwarded: msg.forwarded,
        })?)
    }

    /// What the queued message says.
    pub fn content(&self) -> Content {
        let content = if let Some(l) = &self.location {
            Content::Location(l.clone())
        } else if let Some(c) = &self.contacts {
            Content::Contacts(c.clone())
        } else {
            Content::Text(self.text.clone().unwrap_or_default())
        };
        if self.forwarded {
            Content::Forwarded(Box::new(content))
        } else {
            content
        }
    }
}

/// Queues `msg` (status `queued`) to `to`, due at `send_at`: its history row, its
/// `message-from-me` event and its queue row in one transaction. Returns the event.
pub async fn enqueue(
    store: &Store,
    msg: &Message,
    sender_key: &str,
    to: &str,
    send_at: i64,
) -> Result<Option<Event>> {
    let body = Body::of(msg)?;
    let mut tx = store.begin().await?;
    let ev = messages::insert(&mut tx.conn(), msg, sender_key, EventKind::MessageFromMe).await?;
    dispatch!(conn &mut tx.conn(), queue::insert(msg, to, &body, send_at, super::now()))?;
    tx.commit().await?;
    Ok(ev)
}

/// The heads of `session`'s chats that may go at `now`, oldest first, at most `limit`.
pub async fn due(store: &Store, session: &str, now: i64, limit: i64) -> Result<Vec<Queued>> {
    dispatch!(store, queue::due(session, now, limit))?
        .into_iter()
        .map(Queued::try_from)
        .collect()
}

/// The sessions with queued sends, each with the earliest time one of them may go.
pub async fn sessions(store: &Store) -> Result<Vec<(String, i64)>> {
    dispatch!(store, queue::sessions())
}

/// A session's queued sends, in the order they will go.
pub async fn list(store: &Store, session: &str) -> Result<Vec<Queued>> {
    dispatch!(store, queue::list(session))?
        .into_iter()
        .map(Queued::try_from)
        .collect()
}

/// WhatsApp took the message: the queue row goes, the message is `sent`. Returns the event.
pub async fn sent(store: &Store, session: &str, message_id: &str) -> Result<Option<Event>> {
    let mut tx = store.begin().await?;
    dispatch!(conn &mut tx.conn(), queue::remove(session, message_id))?;
    tx.commit().await?;
    messages::advance_status(store, session, message_id, MessageStatus::Sent, None).await
}

/// An attempt failed: tried again at `retry_at`.
pub async fn failed_attempt(
    store: &Store,
    session: &str,
    message_id: &str,
    error: &str,
    retry_at: i64,
) -> Result<()> {
    let mut tx = store.begin().await?;
    dispatch!(conn &mut tx.conn(), queue::failed_attempt(session, message_id, error, retry_at))?;
    tx.commit().await
}

/// Gives a queued send up (cancelled, or out of attempts): the row goes and the message is
/// `failed` with `reason`. Returns the event, or `None` when it was not queued (any more).
pub async fn give_up(
    store: &Store,
    session: &str,
    message_id: &str,
    reason: &str,
) -> Result<Option<Event>> {
    let mut tx = store.begin().await?;
    let removed = dispatch!(conn &mut tx.conn(), queue::remove(session, message_id))?;
    tx.commit().await?;
    if !removed {
        return Ok(None);
    }
    messages::advance_status(
        store,
        session,
        message_id,
        MessageStatus::Failed,
        Some(reason),
    )
    .await
}

/// Holds every queued send of `session` back until `until` (Unix seconds) at least.
pub async fn hold(store: &Store, session: &str, until: i64) -> Result<()> {
    let mut tx = store.begin().await?;
    dispatch!(conn &mut tx.conn(), queue::hold(session, until))?;
    tx.commit().await
}

/// Gives up every queued send of `session` (it logged out): each message `failed` with
/// `reason`. Returns their events.
pub async fn give_up_all(store: &Store, session: &str, reason: &str) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for q in list(store, session).await? {
        if let Some(ev) = give_up(store, session, &q.message_id, reason).await? {
            events.push(ev);
        }
    }
    Ok(events)
}

/// Puts a `failed` message of ours back in the queue, due at `now`, with its id: its status
/// back to `queued` and its queue row, in one transaction. Returns whether it was failed.
pub async fn requeue(store: &Store, msg: &Message, now: i64) -> Result<bool> {
    let body = Body::of(msg)?;
    let mut tx = store.begin().await?;
    let changed = dispatch!(
        conn &mut tx.conn(),
        messages::set_status(&msg.session_id, &msg.id, MessageStatus::Queued.as_str(), &["failed"])
    )?;
    if changed.is_none() {
        return Ok(false);
    }
    dispatch!(conn &mut tx.conn(), queue::insert(msg, &msg.chat_id, &body, now, now))?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MessageStatus;
    use crate::store::testing;

    /// A row queued before other kinds existed still reads as its text; a forwarded
    /// location keeps both its place and its mark.
    #[test]
    fn queued_bodies_read_back_as_their_content() {
        let old: Body = serde_json::from_str(r#"{"text":"hi","quotedId":null}"#).unwrap();
        assert_eq!(old.content(), Content::Text("hi".into()));
        let mut m = crate::store::messages::tests::message("s1", "m1");
        let place = Location::new(1.5, 2.5, Some("here".into()), None).unwrap();
        Content::Forwarded(Box::new(Content::Location(place.clone()))).fill(&mut m);
        let body: Body = serde_json::from_str(&Body::of(&m).unwrap()).unwrap();
        assert_eq!(
            body.content(),
            Content::Forwarded(Box::new(Content::Location(place)))
        );
        assert_eq!(body.content().kind(), crate::model::MessageKind::Location);
    }

    fn msg(id: &str, chat: &str) -> Message {
        Message {
            chat_id: chat.into(),
            to: chat.into(),
            from_me: true,
            status: MessageStatus::Queued,
            ..messages::tests::message("s1", id)
        }
    }

    /// Each chat's head goes first, by due time and then queue order; a failed head holds
    /// its chat back until its retry; giving up fails the message once.
    #[tokio::test]
    async fn only_each_chats_head_is_due_and_a_failed_head_holds_its_chat() {
        for db in testing::databases().await {
            let store = db.store().await;
            let a = "15550000002@s.whatsapp.net";
            let b = "15550000003@s.whatsapp.net";
            enqueue(&store, &msg("m1", a), "me", a, 100).await.unwrap();
            enqueue(&store, &msg("m2", a), "me", a, 100).await.unwrap();
            enqueue(&store, &msg("m3", b), "me", b, 200).await.unwrap();
            // Scheduled earlier, queued later: goes before m1 in its chat.
            enqueue(&store, &msg("m0", a), "me", a, 50).await.unwrap();
            let ids = |v: Vec<Queued>| v.into_iter().map(|q| q.message_id).collect::<Vec<_>>();
            assert_eq!(
                ids(due(&store, "s1", 10, 10).await.unwrap()),
                Vec::<String>::new()
            );
            assert_eq!(ids(due(&store, "s1", 150, 10).await.unwrap()), ["m0"]);
            assert_eq!(ids(due(&store, "s1", 250, 10).await.unwrap()), ["m0", "m3"]);
            assert_eq!(sessions(&store).await.unwrap(), [("s1".to_owned(), 50)]);

            failed_attempt(&store, "s1", "m0", "timeout", 300)
                .await
                .unwrap();
            assert_eq!(ids(due(&store, "s1", 250, 10).await.unwrap()), ["m3"]);
            let listed = list(&store, "s1").await.unwrap();
            assert_eq!(ids(listed.clone()), ["m0", "m1", "m2", "m3"]);
            assert_eq!((listed[0].attempts, listed[0].retry_at), (1, Some(300)));
            assert_eq!(listed[0].last_error.as_deref(), Some("timeout"));
            assert_eq!(ids(due(&store, "s1", 300, 10).await.unwrap()), ["m0", "m3"]);

            assert!(sent(&store, "s1", "m0").await.unwrap().is_some());
            assert_eq!(ids(due(&store, "s1", 300, 10).await.unwrap()), ["m1", "m3"]);
            let ev = give_up(&store, "s1", "m1", "cancelled")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(ev.kind, EventKind::MessageFailed);
            assert!(
                give_up(&store, "s1", "m1", "cancelled")
                    .await
                    .unwrap()
                    .is_none()
            );
            let m1 = messages::find(&store, "s1", "m1").await.unwrap().unwrap();
            assert_eq!(m1.status, MessageStatus::Failed);
            let m0 = messages::find(&store, "s1", "m0").await.unwrap().unwrap();
            assert_eq!(m0.status, MessageStatus::Sent);
            db.drop().await;
        }
    }
}
