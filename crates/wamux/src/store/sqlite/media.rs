use sqlx::{Row as _, SqliteConnection};

use super::Db;
use crate::store::Result;
use crate::store::media::{New, Stored};

pub async fn insert(conn: &mut SqliteConnection, new: &New<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO media_jobs (session_id, message_id, chat_id, sender, event, media_ref, state, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)
         ON CONFLICT (session_id, chat_id, sender, message_id) DO NOTHING",
    )
    .bind(new.session_id)
    .bind(new.message_id)
    .bind(new.chat_id)
    .bind(new.sender)
    .bind(new.event)
    .bind(&new.media_ref)
    .bind(new.now)
    .bind(new.now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

const COLS: &str = "id, session_id, message_id, chat_id, sender, event, media_ref";

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Stored> {
    Ok(Stored {
        id: r.try_get("id")?,
        session_id: r.try_get("session_id")?,
        message_id: r.try_get("message_id")?,
        chat_id: r.try_get("chat_id")?,
        sender: r.try_get("sender")?,
        event: r.try_get("event")?,
        media_ref: r.try_get("media_ref")?,
    })
}

pub async fn pending(db: &Db, after_id: i64, limit: i64) -> Result<Vec<Stored>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM media_jobs WHERE state = 'pending' AND id > ? ORDER BY id LIMIT ?"
    )))
    .bind(after_id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(from_row).collect()
}

pub async fn for_message(
    db: &Db,
    session_id: &str,
    message_id: &str,
) -> Result<Option<(Stored, String)>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS}, state FROM media_jobs WHERE session_id = ? AND message_id = ? ORDER BY id DESC LIMIT 1"
    )))
    .bind(session_id)
    .bind(message_id)
    .fetch_optional(&db.pool)
    .await?;
    match row {
        Some(r) => Ok(Some((from_row(&r)?, r.try_get("state")?))),
        None => Ok(None),
    }
}

pub async fn finish(
    conn: &mut SqliteConnection,
    id: i64,
    error: Option<&str>,
    now: i64,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE media_jobs SET state = 'done', attempts = attempts + 1, last_error = ?, updated_at = ?
         WHERE id = ? AND state = 'pending'",
    )
    .bind(error)
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub async fn retried(
    conn: &mut SqliteConnection,
    id: i64,
    error: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE media_jobs SET attempts = attempts + 1, last_error = ?, updated_at = ? WHERE id = ?",
    )
    .bind(error)
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
