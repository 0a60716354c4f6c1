use sqlx::SqliteConnection;

use super::Db;
use crate::store::Result;
use crate::store::sessions::{Me, SessionRow};

const COLS: &str = "device_id, id, status, status_reason, logged_in, phone, jid, lid, push_name, created_at, updated_at";

pub async fn create(conn: &mut SqliteConnection, id: &str, now: i64) -> Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO sessions (id, status, created_at, updated_at) VALUES (?, 'starting', ?, ?)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1)
}

pub async fn get_in(conn: &mut SqliteConnection, id: &str) -> Result<SessionRow> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM sessions WHERE id = ?"
    )))
    .bind(id)
    .fetch_one(&mut *conn)
    .await?)
}

pub async fn get(db: &Db, id: &str) -> Result<Option<SessionRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM sessions WHERE id = ?"
    )))
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

pub async fn list(db: &Db) -> Result<Vec<SessionRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM sessions ORDER BY created_at, id"
    )))
    .fetch_all(&db.pool)
    .await?)
}

pub async fn update_status(
    conn: &mut SqliteConnection,
    id: &str,
    status: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE sessions SET status = ?1, status_reason = ?2, updated_at = ?3
         WHERE id = ?4 AND (status IS NOT ?1 OR status_reason IS NOT ?2)",
    )
    .bind(status)
    .bind(reason)
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1)
}

pub async fn set_me(
    conn: &mut SqliteConnection,
    id: &str,
    me: &Me,
    logged_in: bool,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE sessions SET phone = COALESCE(?, phone), jid = COALESCE(?, jid), lid = COALESCE(?, lid),
         push_name = COALESCE(?, push_name), logged_in = ?, updated_at = ? WHERE id = ?",
    )
    .bind(&me.phone)
    .bind(&me.jid)
    .bind(&me.lid)
    .bind(&me.push_name)
    .bind(logged_in)
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn clear_login(conn: &mut SqliteConnection, id: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE sessions SET logged_in = 0, updated_at = ? WHERE id = ?")
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Inserts `row` again under a new device number (AUTOINCREMENT never hands out a deleted
/// one), logged out.
pub async fn reinsert(conn: &mut SqliteConnection, row: &SessionRow, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id, status, status_reason, logged_in, created_at, updated_at)
         VALUES (?, ?, ?, 0, ?, ?)",
    )
    .bind(&row.id)
    .bind(&row.status)
    .bind(&row.status_reason)
    .bind(row.created_at)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn delete(conn: &mut SqliteConnection, id: &str) -> Result<bool> {
    Ok(sqlx::query("DELETE FROM sessions WHERE id = ?")
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected()
        == 1)
}

pub async fn delete_messages(conn: &mut SqliteConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM messages WHERE session_id = ?")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM message_secrets WHERE session_id = ?")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM chat_state WHERE session_id = ?")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM call_settings WHERE session_id = ?")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM session_settings WHERE session_id = ?")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM message_receipts WHERE session_id = ?")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
