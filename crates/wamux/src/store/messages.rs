//! The `messages` table: history of every message in and out, with its delivery status.

use sqlx::{Row, SqliteConnection, SqlitePool};

use super::{Result, Store, events, now};
use crate::event::{Event, EventKind};
use crate::model::{Message, MessageStatus};

/// Inserts a message unless it is already stored (same session, chat, sender and id), and
/// appends `event` for it. Returns the event only when the row is new, which is what makes
/// redelivered inbound messages harmless.
pub async fn insert(
    conn: &mut SqliteConnection,
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

/// [`insert`] for many messages at once, in three statements however many there are: the
/// inbound path of every session writes through here. Returns, for each message in order,
/// its event, or `None` when it was already stored (or appears earlier in `items`). Call it
/// inside a write transaction ([`Store::begin`] or [`Store::write`]): the events' ids are
/// taken after the current largest.
pub async fn insert_many(conn: &mut SqliteConnection, items: &[New]) -> Result<Vec<Option<Event>>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let key = |n: &New| {
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
        rows.push(serde_json::json!([
            n.msg.session_id,
            n.msg.id,
            n.msg.chat_id,
            n.sender_key,
            n.msg.from_me,
            n.msg.kind,
            n.msg.status.as_str(),
            n.msg.timestamp,
            value.to_string(),
            created,
        ]));
        data.push(value);
    }
    // json_each walks the array in order, so rows (and their `seq`) keep the order of `items`.
    let inserted: Vec<(String, String, String, String)> = sqlx::query_as(
        "INSERT INTO messages (session_id, id, chat_id, sender, from_me, type, status, timestamp, body, created_at)
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
                json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
                json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]'),
                json_extract(value, '$[9]')
         FROM json_each(?) WHERE true
         ON CONFLICT (session_id, chat_id, sender, id) DO NOTHING
         RETURNING session_id, chat_id, sender, id",
    )
    .bind(serde_json::Value::from(rows).to_string())
    .fetch_all(&mut *conn)
    .await?;
    let inserted: std::collections::HashSet<_> = inserted.into_iter().collect();
    // The events get their ids here, in order: the writer holds the write lock, so nobody
    // else takes one meanwhile, and AUTOINCREMENT's counter follows the explicit ids.
    let mut next_id: i64 = sqlx::query_scalar(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
                    COALESCE((SELECT MAX(id) FROM events), 0))",
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(items.len());
    let mut event_rows = Vec::new();
    let mut data = data.into_iter();
    for (n, first) in items.iter().zip(first) {
        if !first {
            out.push(None);
            continue;
        }
        let value = data.next().expect("one value per first occurrence");
        if !inserted.contains(&key(n)) {
            out.push(None);
            continue;
        }
        next_id += 1;
        let (timestamp, body) = events::row(n.kind, &n.msg.session_id, &value);
        event_rows.push(serde_json::json!([
            next_id,
            n.msg.session_id,
            n.kind.as_str(),
            n.msg.chat_id,
            body.to_string(),
            timestamp,
        ]));
        out.push(Some(Event {
            id: next_id,
            kind: n.kind,
            session_id: n.msg.session_id.clone(),
            chat_id: Some(n.msg.chat_id.clone()),
            timestamp,
            data: value,
        }));
    }
    if !event_rows.is_empty() {
        sqlx::query(
            "INSERT INTO events (id, session_id, event, chat_id, body, created_at)
             SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                    json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                    json_extract(value, '$[4]'), json_extract(value, '$[5]')
             FROM json_each(?)",
        )
        .bind(serde_json::Value::from(event_rows).to_string())
        .execute(&mut *conn)
        .await?;
    }
    Ok(out)
}

pub async fn insert_row(
    conn: &mut SqliteConnection,
    msg: &Message,
    sender_key: &str,
) -> Result<bool> {
    let body = serde_json::to_value(msg)?;
    let inserted = sqlx::query(
        "INSERT INTO messages (session_id, id, chat_id, sender, from_me, type, status, timestamp, body, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (session_id, chat_id, sender, id) DO NOTHING",
    )
    .bind(&msg.session_id)
    .bind(&msg.id)
    .bind(&msg.chat_id)
    .bind(sender_key)
    .bind(msg.from_me)
    .bind(&msg.kind)
    .bind(msg.status.as_str())
    .bind(msg.timestamp)
    .bind(body.to_string())
    .bind(now())
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    Ok(inserted)
}

/// Replaces the `media` object of a stored message and returns the updated message.
pub async fn set_media(
    conn: &mut SqliteConnection,
    session_id: &str,
    chat_id: &str,
    sender_key: &str,
    id: &str,
    media: &serde_json::Value,
) -> Result<Option<serde_json::Value>> {
    let row = sqlx::query(
        "UPDATE messages SET body = json_set(body, '$.media', json(?1))
         WHERE session_id = ?2 AND chat_id = ?3 AND sender = ?4 AND id = ?5
         RETURNING body",
    )
    .bind(media.to_string())
    .bind(session_id)
    .bind(chat_id)
    .bind(sender_key)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(r) => {
            let body: String = r.try_get("body")?;
            Ok(Some(serde_json::from_str(&body)?))
        }
        None => Ok(None),
    }
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
        MessageStatus::Pending => return Ok(None),
        MessageStatus::Sent => EventKind::MessageSent,
        MessageStatus::Delivered => EventKind::MessageDelivered,
        MessageStatus::Read => EventKind::MessageRead,
        MessageStatus::Failed => EventKind::MessageFailed,
    };
    let prev = status.predecessors();
    let mut tx = store.begin().await?;
    let row = sqlx::query(
        "UPDATE messages SET status = ?1, body = json_set(body, '$.status', ?1)
         WHERE session_id = ?2 AND id = ?3 AND from_me = 1
           AND status IN (SELECT value FROM json_each(?4))
         RETURNING chat_id, body",
    )
    .bind(status.as_str())
    .bind(session_id)
    .bind(id)
    .bind(serde_json::to_string(prev)?)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let chat_id: String = row.try_get("chat_id")?;
    let body: String = row.try_get("body")?;
    let mut data: serde_json::Value = serde_json::from_str(&body)?;
    if let (Some(err), Some(obj)) = (error, data.as_object_mut()) {
        obj.insert("error".into(), err.into());
    }
    let ev = events::append(&mut tx, kind, session_id, Some(&chat_id), data).await?;
    tx.commit().await?;
    Ok(Some(ev))
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
    pool: &SqlitePool,
    session_id: &str,
    filter: &Filter,
    after: Option<Cursor>,
    limit: i64,
) -> Result<(Vec<serde_json::Value>, Option<Cursor>)> {
    let from_me = filter.direction.map(|d| d == Direction::Out);
    let rows = sqlx::query(
        "SELECT seq, timestamp, body FROM messages
         WHERE session_id = ?1
           AND (?2 IS NULL OR chat_id = ?2)
           AND (?3 IS NULL OR from_me = ?3)
           AND (?4 IS NULL OR timestamp >= ?4)
           AND (?5 IS NULL OR timestamp < ?5)
           AND (?6 IS NULL OR timestamp < ?6 OR (timestamp = ?6 AND seq < ?7))
         ORDER BY timestamp DESC, seq DESC
         LIMIT ?8",
    )
    .bind(session_id)
    .bind(&filter.chat_id)
    .bind(from_me)
    .bind(filter.since)
    .bind(filter.until)
    .bind(after.map(|c| c.timestamp))
    .bind(after.map(|c| c.seq))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let more = rows.len() as i64 > limit;
    let mut out = Vec::with_capacity(rows.len());
    let mut last = None;
    for r in rows.iter().take(limit as usize) {
        let body: String = r.try_get("body")?;
        out.push(serde_json::from_str(&body)?);
        last = Some(Cursor {
            timestamp: r.try_get("timestamp")?,
            seq: r.try_get("seq")?,
        });
    }
    Ok((out, if more { last } else { None }))
}

/// One stored message by id (ours or theirs), for quoting.
pub async fn find(pool: &SqlitePool, session_id: &str, id: &str) -> Result<Option<Message>> {
    let row = sqlx::query("SELECT body FROM messages WHERE session_id = ? AND id = ? LIMIT 1")
        .bind(session_id)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    match row {
        Some(r) => {
            let body: String = r.try_get("body")?;
            Ok(Some(serde_json::from_str(&body)?))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(session: &str, id: &str) -> Message {
        Message {
            id: id.to_owned(),
            session_id: session.to_owned(),
            chat_id: "1555@s.whatsapp.net".to_owned(),
            from: "1555@s.whatsapp.net".to_owned(),
            to: "1666@s.whatsapp.net".to_owned(),
            from_me: false,
            push_name: None,
            kind: "text".to_owned(),
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
        }
    }

    /// [`insert`] of a message that is not stored yet: its event.
    async fn insert_one(conn: &mut SqliteConnection, session: &str, id: &str) -> Event {
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
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("wamux.db")).await.unwrap();
        // The way the gateway calls it: inside a write transaction.
        let mut conn = store.begin().await.unwrap();
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
        // What was stored matches what was announced, row for row.
        let stored: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT id, session_id, body FROM events ORDER BY id")
                .fetch_all(&mut *conn)
                .await
                .unwrap();
        assert_eq!(
            stored.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![first.id, b, c, d, later.id]
        );
        let body: serde_json::Value = serde_json::from_str(&stored[3].2).unwrap();
        assert_eq!(body["event"], "message-received");
        assert_eq!(body["sessionId"], "s1");
        assert_eq!(body["data"]["id"], "D");
        // Messages keep the order they came in.
        let order: Vec<String> = sqlx::query_scalar("SELECT id FROM messages ORDER BY seq")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(order, ["A", "B", "C", "D", "E"]);
        let text: String = sqlx::query_scalar("SELECT body FROM messages WHERE id = 'C'")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Message>(&text).unwrap(),
            message("s2", "C")
        );
    }
}
