//! The `messages` table: history of every message in and out, with its delivery status.

use super::{Conn, Result, Store, dispatch, events, now};
use crate::event::{Event, EventKind};
use crate::model::{Message, MessageKind, MessageStatus, OptionCount, ReceiptMark};

/// Inserts a message unless it is already stored (same session, chat, sender and id), and
/// appends `event` for it. Returns the event only when the row is new, which is what makes
/// redelivered inbound messages harmless.
pub async fn insert(
    conn: &mut Conn<'_>,
    msg: &Message,
    sender_key: &str,
    kind: EventKind,
) -> Result<Option<Event>> {
    let new = New {
        msg: msg.clone(),
        sender_key: sender_key.to_owned(),
        kind,
    };
    Ok(insert_many(conn, std::slice::from_ref(&new))
        .await?
        .pop()
        .flatten())
}

/// A message to store, with the sender key its row is unique by and the event announcing it.
#[derive(Debug)]
pub struct New {
    pub msg: Message,
    pub sender_key: String,
    pub kind: EventKind,
}

/// A `messages` row to insert.
pub(crate) struct Row<'a> {
    pub msg: &'a Message,
    pub sender_key: &'a str,
    pub body: String,
    pub created_at: i64,
}

/// A message's identity: session, chat, sender, id.
pub(crate) type Key = (String, String, String, String);

/// An `events` row to insert with its id taken beforehand.
pub(crate) struct EventRow<'a> {
    pub id: i64,
    pub session_id: &'a str,
    pub event: &'static str,
    pub chat_id: &'a str,
    pub body: String,
    pub created_at: i64,
}

/// [`insert`] for many messages at once, in a few statements however many there are: the
/// inbound path of every session writes through here. Returns, for each message in order,
/// its event, or `None` when it was already stored (or appears earlier in `items`). Call it
/// inside a write transaction ([`Store::begin`] or [`Store::write`]).
pub async fn insert_many(conn: &mut Conn<'_>, items: &[New]) -> Result<Vec<Option<Event>>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let key = |n: &New| -> Key {
        (
            n.msg.session_id.clone(),
            n.msg.chat_id.clone(),
            n.sender_key.clone(),
            n.msg.id.clone(),
        )
    };
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    let first: Vec<bool> = items.iter().map(|n| seen.insert(key(n))).collect();
    let created = now();
    let mut data = Vec::with_capacity(items.len());
    let mut rows = Vec::with_capacity(items.len());
    for (n, _) in items.iter().zip(&first).filter(|(_, first)| **first) {
        let value = serde_json::to_value(&n.msg)?;
        rows.push(Row {
            msg: &n.msg,
            sender_key: &n.sender_key,
            body: value.to_string(),
            created_at: created,
        });
        data.push(value);
    }
    // Rows (and their `seq`) keep the order of `items`.
    let inserted: std::collections::HashSet<Key> =
        dispatch!(conn conn.reborrow(), messages::insert_rows(&rows))?
            .into_iter()
            .collect();
    drop(rows);
    // A new reaction, edit, revoke or vote changes its target (history shows a message's
    // latest state); a vote's event carries the poll's count after it.
    let mut k = 0;
    for (n, first) in items.iter().zip(&first) {
        if !*first {
            continue;
        }
        if inserted.contains(&key(n))
            && let Some(tally) = apply(conn, n).await?
            && let Some(vote) = data[k].get_mut("vote")
        {
            vote["tally"] = serde_json::to_value(tally)?;
        }
        k += 1;
    }
    let news = items
        .iter()
        .zip(&first)
        .filter(|(n, first)| **first && inserted.contains(&key(n)))
        .count();
    // The events get their ids in order: the writer is the only one taking them.
    let mut ids = dispatch!(conn conn.reborrow(), messages::take_event_ids(news))?.into_iter();
    let mut out = Vec::with_capacity(items.len());
    let mut event_rows = Vec::new();
    let mut data = data.into_iter();
    for (n, &first) in items.iter().zip(&first) {
        if !first {
            out.push(None);
            continue;
        }
        let value = data.next().expect("one value per first occurrence");
        if !inserted.contains(&key(n)) {
            out.push(None);
            continue;
        }
        let id = ids.next().expect("one id per new message");
        let (timestamp, body) = events::row(n.kind, &n.msg.session_id, &value);
        event_rows.push(EventRow {
            id,
            session_id: &n.msg.session_id,
            event: n.kind.as_str(),
            chat_id: &n.msg.chat_id,
            body: body.to_string(),
            created_at: timestamp,
        });
        out.push(Some(Event {
            id,
            kind: n.kind,
            session_id: n.msg.session_id.clone(),
            chat_id: Some(n.msg.chat_id.clone()),
            timestamp,
            data: value,
        }));
    }
    if !event_rows.is_empty() {
        dispatch!(conn conn, messages::insert_events(&event_rows))?;
    }
    Ok(out)
}

/// Applies reaction, edit, revoke or vote `n` to the message it is about, when that one is
/// stored. Only a message's sender edits or revokes it; anyone in the chat reacts and
/// votes. Returns a poll's count after a vote.
async fn apply(conn: &mut Conn<'_>, n: &New) -> Result<Option<Vec<OptionCount>>> {
    let m = &n.msg;
    let target_id = match (&m.reaction, &m.target_id, &m.vote) {
        (Some(r), _, _) => &r.message_id,
        (None, Some(t), _) if matches!(m.kind, MessageKind::Edited | MessageKind::Revoked) => t,
        (None, None, Some(v)) if v.options.is_some() => &v.poll_id,
        _ => return Ok(None),
    };
    let found = dispatch!(
        conn conn.reborrow(),
        messages::in_chat(&m.session_id, &m.chat_id, target_id)
    )?;
    let Some((sender, body)) = found else {
        return Ok(None);
    };
    let mut target: Message = serde_json::from_str(&body)?;
    let by_its_sender = target.from_me == m.from_me
        && (m.from_me || sender == n.sender_key || target.from == m.from);
    let mut tally = None;
    match (&m.reaction, m.kind) {
        (Some(r), _) => target.apply_reaction(&m.from, &r.emoji, m.timestamp),
        (None, MessageKind::PollVote) => {
            let (Some(poll), Some(vote)) = (target.poll.as_mut(), &m.vote) else {
                return Ok(None);
            };
            poll.apply_vote(
                &m.from,
                vote.options.as_deref().unwrap_or_default(),
                m.timestamp,
            );
            tally = Some(poll.tally.clone());
        }
        (None, MessageKind::Edited) if by_its_sender && !target.revoked => {
            target.apply_edit(m.text.as_deref().unwrap_or_default(), m.timestamp)
        }
        (None, MessageKind::Revoked) if by_its_sender => target.apply_revoke(),
        _ => {
            tracing::info!(
                session = %m.session_id,
                "ignored a {} of message {target_id} by someone who did not send it",
                m.kind
            );
            return Ok(None);
        }
    }
    let body = serde_json::to_string(&target)?;
    dispatch!(
        conn conn.reborrow(),
        messages::set_body((&m.session_id, &m.chat_id, &sender, &target.id), &body)
    )?;
    Ok(tally)
}

/// Keeps the secret `msg` carries (a poll's), in the transaction that stores `msg`.
pub async fn put_secret(conn: &mut Conn<'_>, msg: &Message, secret: &[u8]) -> Result<()> {
    dispatch!(
        conn conn,
        messages::put_secret((&msg.session_id, &msg.chat_id, &msg.id), secret)
    )
}

/// Poll `id` of a chat, with its secret, when both are stored.
pub async fn poll(
    store: &Store,
    session_id: &str,
    chat_id: &str,
    id: &str,
) -> Result<Option<(Message, Vec<u8>)>> {
    let Some(body) = dispatch!(store, messages::find_in_chat(session_id, chat_id, id))? else {
        return Ok(None);
    };
    let msg: Message = serde_json::from_str(&body)?;
    if msg.poll.is_none() {
        return Ok(None);
    }
    let secret = dispatch!(store, messages::secret(session_id, chat_id, id))?;
    Ok(secret.map(|s| (msg, s)))
}

/// Stores a message without an event (one whose event waits for its media). Returns false
/// when it was already stored.
pub async fn insert_row(conn: &mut Conn<'_>, msg: &Message, sender_key: &str) -> Result<bool> {
    let row = Row {
        msg,
        sender_key,
        body: serde_json::to_value(msg)?.to_string(),
        created_at: now(),
    };
    Ok(!dispatch!(conn conn, messages::insert_rows(std::slice::from_ref(&row)))?.is_empty())
}

/// Replaces the `media` object of a stored message and returns the updated message.
pub async fn set_media(
    conn: &mut Conn<'_>,
    session_id: &str,
    chat_id: &str,
    sender_key: &str,
    id: &str,
    media: &serde_json::Value,
) -> Result<Option<serde_json::Value>> {
    let media = media.to_string();
    let body: Option<String> = dispatch!(
        conn conn,
        messages::set_media(session_id, chat_id, sender_key, id, &media)
    )?;
    Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
}

/// Received messages of `chat` not read yet (`ids`: only these), newest first, at most
/// `limit`, each with the group participant that sent it.
pub async fn unread(
    store: &Store,
    session_id: &str,
    chat_id: &str,
    ids: Option<&[String]>,
    limit: i64,
) -> Result<Vec<(String, Option<String>)>> {
    dispatch!(store, messages::unread(session_id, chat_id, ids, limit))
}

/// How much history a session has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub messages: i64,
    pub chats: i64,
}

/// Deletes the session's message `id` for the account (on this or another of its devices):
/// gone from the history, announced as `message-deleted`. `None` when it was not there.
pub async fn delete_for_me(store: &Store, session_id: &str, id: &str) -> Result<Option<Event>> {
    let mut tx = store.begin().await?;
    let Some(chat) = dispatch!(conn &mut tx.conn(), messages::delete(session_id, id))? else {
        return Ok(None);
    };
    let data = serde_json::json!({"sessionId": session_id, "id": id, "chatId": chat, "for": "me"});
    let ev = events::append(
        &mut tx.conn(),
        EventKind::MessageDeleted,
        session_id,
        Some(&chat),
        data,
    )
    .await?;
    tx.commit().await?;
    Ok(Some(ev))
}

/// Stars or unstars the session's message `id` (here or on another device of the account):
/// announced as `message-starred` with the message. `None` when it is not in the history or
/// already was so.
pub async fn set_starred(
    store: &Store,
    session_id: &str,
    id: &str,
    starred: bool,
) -> Result<Option<Event>> {
    let mut tx = store.begin().await?;
    let Some((chat, body)) =
        dispatch!(conn &mut tx.conn(), messages::set_starred(session_id, id, starred))?
    else {
        return Ok(None);
    };
    let data: serde_json::Value = serde_json::from_str(&body)?;
    let ev = events::append(
        &mut tx.conn(),
        EventKind::MessageStarred,
        session_id,
        Some(&chat),
        data,
    )
    .await?;
    tx.commit().await?;
    Ok(Some(ev))
}

/// How many of the session's own messages since `since` (Unix seconds) WhatsApp took.
pub async fn sent_since(store: &Store, session_id: &str, since: i64) -> Result<i64> {
    Ok(dispatch!(store, messages::sent_since(session_id, since))?)
}

/// The session's messages and chats in the history.
pub async fn counts(store: &Store, session_id: &str) -> Result<Counts> {
    let (messages, chats) = dispatch!(store, messages::counts(session_id))?;
    Ok(Counts { messages, chats })
}

/// A chat as the chat list shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Chat {
    pub chat_id: String,
    /// The latest message (reactions, edits, revokes and votes show on theirs).
    pub last_message: Message,
    /// Received messages not marked read yet.
    pub unread: i64,
    /// Pinned, archived, muted, marked unread (on any of the account's devices).
    pub state: crate::model::ChatState,
}

/// The session's chats, the most recent first, at most `limit`, each with its state.
pub async fn chats(store: &Store, session_id: &str, limit: i64) -> Result<Vec<Chat>> {
    let mut states = super::chats::all(store, session_id).await?;
    dispatch!(store, messages::chats(session_id, limit))?
        .into_iter()
        .map(|(chat_id, body, unread)| {
            Ok(Chat {
                state: states.remove(&chat_id).unwrap_or_default(),
                chat_id,
                last_message: serde_json::from_str(&body)?,
                unread,
            })
        })
        .collect()
}

/// Marks received messages of `chat` read (after their read receipts went).
pub async fn set_read(
    store: &Store,
    session_id: &str,
    chat_id: &str,
    ids: &[String],
) -> Result<()> {
    let mut tx = store.begin().await?;
    dispatch!(conn &mut tx.conn(), messages::set_read(session_id, chat_id, ids))?;
    tx.commit().await
}

/// Moves our own message `id` forward to `status` (never backwards) and records the
/// matching event. Returns `None` when nothing changed (unknown id, or already further).
pub async fn advance_status(
    store: &Store,
    session_id: &str,
    id: &str,
    status: MessageStatus,
    error: Option<&str>,
) -> Result<Option<Event>> {
    let kind = match status {
        MessageStatus::Queued | MessageStatus::Pending => return Ok(None),
        MessageStatus::Sent => EventKind::MessageSent,
        MessageStatus::Delivered => EventKind::MessageDelivered,
        MessageStatus::Read => EventKind::MessageRead,
        MessageStatus::Failed => EventKind::MessageFailed,
    };
    let prev = status.predecessors();
    let mut tx = store.begin().await?;
    let changed: Option<(String, String)> = dispatch!(
        conn &mut tx.conn(),
        messages::set_status(session_id, id, status.as_str(), &prev)
    )?;
    let Some((chat_id, body)) = changed else {
        return Ok(None);
    };
    let mut data: serde_json::Value = serde_json::from_str(&body)?;
    if let (Some(err), Some(obj)) = (error, data.as_object_mut()) {
        obj.insert("error".into(), err.into());
    }
    let ev = events::append(&mut tx.conn(), kind, session_id, Some(&chat_id), data).await?;
    tx.commit().await?;
    Ok(Some(ev))
}

/// A participant's receipt for a group message of ours: kept apart (see [`receipts`]),
/// announced as `message-delivered`/`message-read` with the participant as `by`; the
/// message's own status moves on with the first. `None` when there is nothing new.
pub async fn participant_receipt(
    store: &Store,
    session_id: &str,
    id: &str,
    status: MessageStatus,
    by: &str,
    at: i64,
) -> Result<Option<Event>> {
    let (kind, rank) = match status {
        MessageStatus::Delivered => (EventKind::MessageDelivered, 1),
        MessageStatus::Read => (EventKind::MessageRead, 2),
        _ => return Ok(None),
    };
    let Some(body) = dispatch!(store, messages::find(session_id, id))? else {
        return Ok(None);
    };
    let mut data: serde_json::Value = serde_json::from_str(&body)?;
    if data["fromMe"] != true {
        return Ok(None);
    }
    let mut tx = store.begin().await?;
    let fresh = dispatch!(
        conn &mut tx.conn(),
        messages::put_receipt((session_id, id, by), status.as_str(), rank, at)
    )?;
    if !fresh {
        return Ok(None);
    }
    let prev = status.predecessors();
    if let Some((_, body)) = dispatch!(
        conn &mut tx.conn(),
        messages::set_status(session_id, id, status.as_str(), &prev)
    )? {
        data = serde_json::from_str(&body)?;
    }
    let chat_id = data["chatId"].as_str().unwrap_or_default().to_owned();
    data["by"] = by.into();
    let ev = events::append(&mut tx.conn(), kind, session_id, Some(&chat_id), data).await?;
    tx.commit().await?;
    Ok(Some(ev))
}

/// Each participant's latest receipt for message `id` of ours (a group message).
pub async fn receipts(store: &Store, session_id: &str, id: &str) -> Result<Vec<ReceiptMark>> {
    let rows = dispatch!(store, messages::receipts(session_id, id))?;
    Ok(rows
        .into_iter()
        .filter_map(|(participant, status, at)| {
            let status = MessageStatus::parse(&status)?;
            Some(ReceiptMark {
                participant,
                status,
                timestamp: at,
            })
        })
        .collect())
}

/// Which way a message went, for filtering history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub chat_id: Option<String>,
    pub direction: Option<Direction>,
    /// Only messages at or after this unix time.
    pub since: Option<i64>,
    /// Only messages before this unix time.
    pub until: Option<i64>,
}

/// Position after the last message of a page: `(timestamp, seq)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub timestamp: i64,
    pub seq: i64,
}

impl Cursor {
    pub fn encode(self) -> String {
        format!("{}.{}", self.timestamp, self.seq)
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (a, b) = s.split_once('.')?;
        Some(Self {
            timestamp: a.parse().ok()?,
            seq: b.parse().ok()?,
        })
    }
}

/// A page of history, newest first.
pub async fn list(
    store: &Store,
    session_id: &str,
    filter: &Filter,
    after: Option<Cursor>,
    limit: i64,
) -> Result<(Vec<serde_json::Value>, Option<Cursor>)> {
    let rows: Vec<(i64, i64, String)> =
        dispatch!(store, messages::list(session_id, filter, after, limit + 1))?;
    let more = rows.len() as i64 > limit;
    let mut out = Vec::with_capacity(rows.len());
    let mut last = None;
    for (seq, timestamp, body) in rows.into_iter().take(limit as usize) {
        out.push(serde_json::from_str(&body)?);
        last = Some(Cursor { timestamp, seq });
    }
    Ok((out, if more { last } else { None }))
}

/// The history as numbered pages (Evolution's `page` and `offset`): how many messages match
/// in all, and `limit` of them after skipping `skip`, newest first.
pub async fn numbered_page(
    store: &Store,
    session_id: &str,
    filter: &Filter,
    skip: i64,
    limit: i64,
) -> Result<(i64, Vec<Message>)> {
    let total: i64 = dispatch!(store, messages::count_matching(session_id, filter))?;
    let bodies: Vec<String> =
        dispatch!(store, messages::skip_list(session_id, filter, skip, limit))?;
    let messages = bodies
        .iter()
        .map(|b| serde_json::from_str(b))
        .collect::<std::result::Result<_, _>>()?;
    Ok((total, messages))
}

/// One stored message by id (ours or theirs), for quoting.
pub async fn find(store: &Store, session_id: &str, id: &str) -> Result<Option<Message>> {
    let body: Option<String> = dispatch!(store, messages::find(session_id, id))?;
    Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::testing;

    /// A received text message, for tests of the tables that hold messages.
    pub(crate) fn message(session: &str, id: &str) -> Message {
        Message {
            id: id.to_owned(),
            session_id: session.to_owned(),
            chat_id: "1555@s.whatsapp.net".to_owned(),
            from: "1555@s.whatsapp.net".to_owned(),
            to: "1666@s.whatsapp.net".to_owned(),
            from_me: false,
            push_name: None,
            kind: MessageKind::Text,
            text: Some(format!("text of {id}")),
            caption: None,
            timestamp: 1_700_000_000,
            status: MessageStatus::Delivered,
            quoted_id: None,
            media: None,
            from_pn: None,
            from_lid: None,
            chat_pn: None,
            chat_lid: None,
            participant: None,
            location: None,
            contacts: None,
            reaction: None,
            reactions: Vec::new(),
            target_id: None,
            edited_at: None,
            revoked: false,
            poll: None,
            vote: None,
            raw_type: None,
            mentions: Vec::new(),
            forwarded: false,
            view_once: false,
            starred: false,
        }
    }

    /// [`insert`] of a message that is not stored yet: its event.
    async fn insert_one(conn: &mut Conn<'_>, session: &str, id: &str) -> Event {
        insert(
            conn,
            &message(session, id),
            "1555@s.whatsapp.net",
            EventKind::MessageReceived,
        )
        .await
        .unwrap()
        .expect("a new message")
    }

    fn new(session: &str, id: &str) -> New {
        New {
            msg: message(session, id),
            sender_key: "1555@s.whatsapp.net".to_owned(),
            kind: EventKind::MessageReceived,
        }
    }

    /// Set-wise inserts give the same results as one by one: an event per new message, in
    /// order, none for a message already stored or repeated in the batch, and event ids that
    /// keep growing across both ways of writing.
    #[tokio::test]
    async fn insert_many_announces_each_new_message_once_in_order() {
        for db in testing::databases().await {
            let store = db.store().await;
            // The way the gateway calls it: inside a write transaction.
            let mut tx = store.begin().await.unwrap();
            let mut conn = tx.conn();
            let first = insert_one(&mut conn, "s1", "A").await;
            let items = [
                new("s1", "B"),
                new("s1", "A"),
                new("s2", "C"),
                new("s1", "B"),
                new("s1", "D"),
            ];
            let events = insert_many(&mut conn, &items).await.unwrap();
            let ids: Vec<Option<i64>> = events.iter().map(|e| e.as_ref().map(|e| e.id)).collect();
            assert!(ids[1].is_none() && ids[3].is_none(), "{ids:?}");
            let (b, c, d) = (ids[0].unwrap(), ids[2].unwrap(), ids[4].unwrap());
            assert!(first.id < b && b < c && c < d, "{ids:?}");
            assert_eq!(events[2].as_ref().unwrap().session_id, "s2");
            assert_eq!(events[4].as_ref().unwrap().data["text"], "text of D");

            let later = insert_one(&mut conn, "s1", "E").await;
            assert!(later.id > d);
            tx.commit().await.unwrap();
            // What was stored matches what was announced, row for row.
            let stored = events::list_after(&store, None, 0, 100).await.unwrap();
            assert_eq!(
                stored.iter().map(|e| e.id).collect::<Vec<_>>(),
                vec![first.id, b, c, d, later.id],
                "{}",
                store.engine()
            );
            assert_eq!(stored[3].kind, EventKind::MessageReceived);
            assert_eq!(stored[3].session_id, "s1");
            assert_eq!(stored[3].data["id"], "D");
            // Messages keep the order they came in (newest first at one timestamp).
            let (page, _) = list(&store, "s1", &Filter::default(), None, 10)
                .await
                .unwrap();
            let order: Vec<&str> = page.iter().map(|m| m["id"].as_str().unwrap()).collect();
            assert_eq!(order, ["E", "D", "B", "A"]);
            assert_eq!(
                find(&store, "s2", "C").await.unwrap().unwrap(),
                message("s2", "C")
            );
            db.drop().await;
        }
    }

    /// A status only moves forward, and each move is announced once.
    #[tokio::test]
    async fn status_moves_forward_only() {
        for db in testing::databases().await {
            let store = db.store().await;
            let mut msg = message("s1", "OUT");
            msg.from_me = true;
            msg.status = MessageStatus::Pending;
            let mut tx = store.begin().await.unwrap();
            insert(&mut tx.conn(), &msg, "me", EventKind::MessageFromMe)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            let read = advance_status(&store, "s1", "OUT", MessageStatus::Read, None)
                .await
                .unwrap()
                .expect("pending to read");
            assert_eq!(read.data["status"], "read");
            assert!(
                advance_status(&store, "s1", "OUT", MessageStatus::Delivered, None)
                    .await
                    .unwrap()
                    .is_none(),
                "{}",
                store.engine()
            );
            let media = serde_json::json!({"state": "ready"});
            let mut tx = store.begin().await.unwrap();
            let body = set_media(&mut tx.conn(), "s1", &msg.chat_id, "me", "OUT", &media)
                .await
                .unwrap()
                .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(body["media"], media);
            assert_eq!(body["status"], "read");
            db.drop().await;
        }
    }
}
