//! The `events` table: the durable log every output reads (the webhook outbox in particular).

use super::{Conn, Result, Store, dispatch, now};
use crate::event::{Event, EventKind};

/// Appends one event inside the caller's transaction and returns it for publishing once the
/// transaction commits. Every event goes through here; nothing may write `events` otherwise.
pub async fn append(
    conn: &mut Conn<'_>,
    kind: EventKind,
    session_id: &str,
    chat_id: Option<&str>,
    data: serde_json::Value,
) -> Result<Event> {
    let (timestamp, body) = row(kind, session_id, &data);
    let body = body.to_string();
    let id = dispatch!(
        conn conn,
        events::insert(kind.as_str(), session_id, chat_id, &body, timestamp)
    )?;
    Ok(Event {
        id,
        kind,
        session_id: session_id.to_owned(),
        chat_id: chat_id.map(str::to_owned),
        timestamp,
        data,
    })
}

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

/// Events after `after_id`, oldest first (for replay and tests).
pub async fn list_after(
    store: &Store,
    session_id: Option<&str>,
    after_id: i64,
    limit: i64,
) -> Result<Vec<Event>> {
    dispatch!(store, events::list_after(session_id, after_id, limit))
}

/// An `events` row as read.
pub(crate) struct Stored {
    pub id: i64,
    pub session_id: String,
    pub event: String,
    pub chat_id: Option<String>,
    pub body: String,
    pub created_at: i64,
}

impl Stored {
    pub fn decode(self) -> Result<Event> {
        let mut body: serde_json::Value = serde_json::from_str(&self.body)?;
        Ok(Event {
            id: self.id,
            kind: self
                .event
                .parse()
                .map_err(|e: crate::event::UnknownEventKind| {
                    super::StoreError::Invalid(e.to_string())
                })?,
            session_id: self.session_id,
            chat_id: self.chat_id,
            timestamp: self.created_at,
            data: body
                .get_mut("data")
                .map(serde_json::Value::take)
                .unwrap_or_default(),
        })
    }
}

/// Records an event that has no other state change attached (a new QR code, a call).
pub async fn record(
    store: &Store,
    kind: EventKind,
    session_id: &str,
    chat_id: Option<&str>,
    data: serde_json::Value,
) -> Result<Event> {
    let mut tx = store.begin().await?;
    let ev = append(&mut tx.conn(), kind, session_id, chat_id, data).await?;
    tx.commit().await?;
    Ok(ev)
}
