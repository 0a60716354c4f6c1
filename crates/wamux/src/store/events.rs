//! The `events` table: the durable log every output reads (the webhook outbox in particular).

use sqlx::{Row, SqliteConnection};

use super::{Result, now};
use crate::event::{Event, EventKind};

/// Appends one event inside the caller's transaction and returns it for publishing once the
/// transaction commits. Every event goes through here; nothing may write `events` otherwise.
pub async fn append(
    conn: &mut SqliteConnection,
    kind: EventKind,
    session_id: &str,
    chat_id: Option<&str>,
    data: serde_json::Value,
) -> Result<Event> {
    let (timestamp, body) = row(kind, session_id, &data);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO events (session_id, event, chat_id, body, created_at)
         VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(session_id)
    .bind(kind.as_str())
    .bind(chat_id)
    .bind(body.to_string())
    .bind(timestamp)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Event {
        id,
        kind,
        session_id: session_id.to_owned(),
        chat_id: chat_id.map(str::to_owned),
        timestamp,
        data,
    })
}

/// Events after `after_id`, oldest first (for replay and tests).
/// An event's time and stored body, for writers that insert the row themselves.
pub(super) fn row(
    kind: EventKind,
    session_id: &str,
    data: &serde_json::Value,
) -> (i64, serde_json::Value) {
    let timestamp = now();
    (
        timestamp,
        crate::event::body(kind, session_id, timestamp, data),
    )
}

pub async fn list_after(
    pool: &sqlx::SqlitePool,
    session_id: Option<&str>,
    after_id: i64,
    limit: i64,
) -> Result<Vec<Event>> {
    let rows = sqlx::query(
        "SELECT id, session_id, event, chat_id, body, created_at FROM events
         WHERE id > ? AND (? IS NULL OR session_id = ?) ORDER BY id LIMIT ?",
    )
    .bind(after_id)
    .bind(session_id)
    .bind(session_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(|r| from_row(&r)).collect()
}

pub(crate) fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Event> {
    let kind: String = r.try_get("event")?;
    let body: String = r.try_get("body")?;
    let mut body: serde_json::Value = serde_json::from_str(&body)?;
    Ok(Event {
        id: r.try_get("id")?,
        kind: kind
            .parse()
            .map_err(|e: crate::event::UnknownEventKind| sqlx::Error::Decode(Box::new(e)))?,
        session_id: r.try_get("session_id")?,
        chat_id: r.try_get("chat_id")?,
        timestamp: r.try_get("created_at")?,
        data: body
            .get_mut("data")
            .map(serde_json::Value::take)
            .unwrap_or_default(),
    })
}

/// Records an event that has no other state change attached (a new QR code, a call).
pub async fn record(
    store: &super::Store,
    kind: EventKind,
    session_id: &str,
    chat_id: Option<&str>,
    data: serde_json::Value,
) -> Result<Event> {
    let mut tx = store.begin().await?;
    let ev = append(&mut tx, kind, session_id, chat_id, data).await?;
    tx.commit().await?;
    Ok(ev)
}
