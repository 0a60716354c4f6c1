//! The `media_jobs` table (migration 0003): inbound downloads still to do.

use sqlx::{Row, SqliteConnection, SqlitePool};

use super::MediaRef;
use crate::store::{Result, now};

/// One pending download, with the message it belongs to.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub session_id: String,
    pub message_id: String,
    pub chat_id: String,
    pub sender: String,
    pub event: String,
    pub media_ref: MediaRef,
}

pub async fn insert(
    conn: &mut SqliteConnection,
    session_id: &str,
    message_id: &str,
    chat_id: &str,
    sender: &str,
    event: &str,
    media_ref: &MediaRef,
) -> Result<()> {
    let t = now();
    sqlx::query(
        "INSERT INTO media_jobs (session_id, message_id, chat_id, sender, event, media_ref, state, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)
         ON CONFLICT (session_id, chat_id, sender, message_id) DO NOTHING",
    )
    .bind(session_id)
    .bind(message_id)
    .bind(chat_id)
    .bind(sender)
    .bind(event)
    .bind(serde_json::to_string(media_ref)?)
    .bind(t)
    .bind(t)
    .execute(conn)
    .await?;
    Ok(())
}

const COLS: &str = "id, session_id, message_id, chat_id, sender, event, media_ref";

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Job> {
    let media_ref: String = r.try_get("media_ref")?;
    Ok(Job {
        id: r.try_get("id")?,
        session_id: r.try_get("session_id")?,
        message_id: r.try_get("message_id")?,
        chat_id: r.try_get("chat_id")?,
        sender: r.try_get("sender")?,
        event: r.try_get("event")?,
        media_ref: serde_json::from_str(&media_ref)?,
    })
}

/// Pending jobs after `after_id`, oldest first.
pub async fn pending(pool: &SqlitePool, after_id: i64, limit: i64) -> Result<Vec<Job>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM media_jobs WHERE state = 'pending' AND id > ? ORDER BY id LIMIT ?"
    )))
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The job (pending or done) of a message, for a retry by hand.
pub async fn for_message(
    pool: &SqlitePool,
    session_id: &str,
    message_id: &str,
) -> Result<Option<(Job, String)>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS}, state FROM media_jobs WHERE session_id = ? AND message_id = ? ORDER BY id DESC LIMIT 1"
    )))
    .bind(session_id)
    .bind(message_id)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(r) => Ok(Some((from_row(&r)?, r.try_get("state")?))),
        None => Ok(None),
    }
}

/// Marks the job done (inside the transaction that records its outcome).
pub async fn finish(conn: &mut SqliteConnection, id: i64, error: Option<&str>) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE media_jobs SET state = 'done', attempts = attempts + 1, last_error = ?, updated_at = ?
         WHERE id = ? AND state = 'pending'",
    )
    .bind(error)
    .bind(now())
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Records a retry by hand of a finished job.
pub async fn retried(conn: &mut SqliteConnection, id: i64, error: Option<&str>) -> Result<()> {
    sqlx::query("UPDATE media_jobs SET attempts = attempts + 1, last_error = ?, updated_at = ? WHERE id = ?")
        .bind(error)
        .bind(now())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
