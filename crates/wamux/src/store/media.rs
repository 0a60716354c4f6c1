//! The `media_jobs` table: inbound downloads still to do.
//!
//! A job carries what the media module needs to download the file again (`R`, its
//! `MediaRef`), kept as JSON.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Conn, Result, Store, dispatch, now};

/// One download, with the message it belongs to.
#[derive(Debug, Clone)]
pub struct Job<R> {
    pub id: i64,
    pub session_id: String,
    pub message_id: String,
    pub chat_id: String,
    pub sender: String,
    pub event: String,
    pub media_ref: R,
}

/// A job as stored, its reference still JSON.
pub(crate) type Stored = Job<String>;

impl Stored {
    fn decode<R: DeserializeOwned>(self) -> Result<Job<R>> {
        Ok(Job {
            media_ref: serde_json::from_str(&self.media_ref)?,
            id: self.id,
            session_id: self.session_id,
            message_id: self.message_id,
            chat_id: self.chat_id,
            sender: self.sender,
            event: self.event,
        })
    }
}

/// What [`insert`] writes.
pub(crate) struct New<'a> {
    pub session_id: &'a str,
    pub message_id: &'a str,
    pub chat_id: &'a str,
    pub sender: &'a str,
    pub event: &'a str,
    pub media_ref: String,
    pub now: i64,
}

/// Adds a download job for a message, inside the caller's transaction (the one storing the
/// message); a job already there for it is kept.
pub async fn insert(
    conn: &mut Conn<'_>,
    session_id: &str,
    message_id: &str,
    chat_id: &str,
    sender: &str,
    event: &str,
    media_ref: &impl Serialize,
) -> Result<()> {
    let new = New {
        session_id,
        message_id,
        chat_id,
        sender,
        event,
        media_ref: serde_json::to_string(media_ref)?,
        now: now(),
    };
    dispatch!(conn conn, media::insert(&new))
}

/// Pending jobs after `after_id`, oldest first.
pub async fn pending<R: DeserializeOwned>(
    store: &Store,
    after_id: i64,
    limit: i64,
) -> Result<Vec<Job<R>>> {
    let rows: Vec<Stored> = dispatch!(store, media::pending(after_id, limit))?;
    rows.into_iter().map(Stored::decode).collect()
}

/// The job (pending or done) of a message, for a retry by hand, with its state.
pub async fn for_message<R: DeserializeOwned>(
    store: &Store,
    session_id: &str,
    message_id: &str,
) -> Result<Option<(Job<R>, String)>> {
    let row: Option<(Stored, String)> =
        dispatch!(store, media::for_message(session_id, message_id))?;
    row.map(|(job, state)| Ok((job.decode()?, state)))
        .transpose()
}

/// Marks the job done (inside the transaction that records its outcome). False when it
/// was already done.
pub async fn finish(conn: &mut Conn<'_>, id: i64, error: Option<&str>) -> Result<bool> {
    dispatch!(conn conn, media::finish(id, error, now()))
}

/// Records a retry by hand of a finished job.
pub async fn retried(conn: &mut Conn<'_>, id: i64, error: Option<&str>) -> Result<()> {
    dispatch!(conn conn, media::retried(id, error, now()))
}
