//! The `sessions` table.

use serde::Serialize;
use sqlx::{FromRow, SqlitePool};

use super::{Result, Store, events, now};
use crate::event::{Event, EventKind};
use crate::model::SessionStatus;

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct SessionRow {
    pub device_id: i64,
    pub id: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub logged_in: bool,
    pub phone: Option<String>,
    pub jid: Option<String>,
    pub lid: Option<String>,
    pub push_name: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What WhatsApp told us about our own account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Me {
    pub phone: Option<String>,
    pub jid: Option<String>,
    pub lid: Option<String>,
    pub push_name: Option<String>,
}

const COLS: &str = "device_id, id, status, status_reason, logged_in, phone, jid, lid, push_name, created_at, updated_at";

/// Creates the session if it does not exist. Returns the row and whether it was created.
pub async fn create_or_get(store: &Store, id: &str) -> Result<(SessionRow, bool)> {
    let t = now();
    let inserted = sqlx::query(
        "INSERT INTO sessions (id, status, created_at, updated_at) VALUES (?, 'starting', ?, ?)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(t)
    .bind(t)
    .execute(store.pool())
    .await?
    .rows_affected()
        == 1;
    let row = get(store.pool(), id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok((row, inserted))
}

pub async fn get(pool: &SqlitePool, id: &str) -> Result<Option<SessionRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM sessions WHERE id = ?"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

pub async fn list(pool: &SqlitePool) -> Result<Vec<SessionRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM sessions ORDER BY created_at, id"
    )))
    .fetch_all(pool)
    .await?)
}

/// Records a status change and its `session-status` event in one transaction. Returns
/// `None` when the status and reason are already the stored ones (no event either).
pub async fn set_status(
    store: &Store,
    id: &str,
    status: SessionStatus,
    reason: Option<&str>,
) -> Result<Option<Event>> {
    let mut tx = store.begin().await?;
    let changed = sqlx::query(
        "UPDATE sessions SET status = ?, status_reason = ?, updated_at = ?
         WHERE id = ? AND (status IS NOT ? OR status_reason IS NOT ?)",
    )
    .bind(status.as_str())
    .bind(reason)
    .bind(now())
    .bind(id)
    .bind(status.as_str())
    .bind(reason)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !changed {
        return Ok(None);
    }
    let event = events::append(
        &mut tx,
        EventKind::SessionStatus,
        id,
        None,
        serde_json::json!({"sessionId": id, "status": status.as_str(), "reason": reason}),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(event))
}

/// Stores who we are once paired/connected, and whether the session is logged in.
pub async fn set_me(store: &Store, id: &str, me: &Me, logged_in: bool) -> Result<()> {
    // Through the writer connection, like every other write: a write on the shared pool
    // would wait for SQLite's lock in its sleeping busy handler instead of in line.
    let mut tx = store.begin().await?;
    sqlx::query(
        "UPDATE sessions SET phone = COALESCE(?, phone), jid = COALESCE(?, jid), lid = COALESCE(?, lid),
         push_name = COALESCE(?, push_name), logged_in = ?, updated_at = ? WHERE id = ?",
    )
    .bind(&me.phone)
    .bind(&me.jid)
    .bind(&me.lid)
    .bind(&me.push_name)
    .bind(logged_in)
    .bind(now())
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Forgets the account (after a logout): the next start needs a new QR.
pub async fn clear_login(store: &Store, id: &str) -> Result<()> {
    let mut tx = store.begin().await?;
    sqlx::query("UPDATE sessions SET logged_in = 0, updated_at = ? WHERE id = ?")
        .bind(now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Gives the session a fresh device number, so a re-pairing after logout starts from a
/// clean device store row instead of the logged-out identity.
pub async fn renumber_device(store: &Store, id: &str) -> Result<SessionRow> {
    let mut tx = store.begin().await?;
    let row: SessionRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM sessions WHERE id = ?"
    )))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM sessions WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO sessions (id, status, status_reason, logged_in, created_at, updated_at)
         VALUES (?, ?, ?, 0, ?, ?)",
    )
    .bind(id)
    .bind(&row.status)
    .bind(&row.status_reason)
    .bind(row.created_at)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM sessions WHERE id = ?"
    )))
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row)
}

/// Deletes the session and its message history. The event log is kept: it is the
/// record of what was already announced.
pub async fn delete(store: &Store, id: &str) -> Result<bool> {
    let mut tx = store.begin().await?;
    sqlx::query("DELETE FROM messages WHERE session_id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let n = sqlx::query("DELETE FROM sessions WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}
