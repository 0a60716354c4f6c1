use sqlx::PgConnection;

use super::Db;
use crate::store::Result;
use crate::store::sessions::{Me, SessionRow};

const COLS: &str = "device_id, id, status, status_reason, logged_in, phone, jid, lid, push_name, created_at, updated_at";

pub async fn create(conn: &mut PgConnection, id: &str, now: i64) -> Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO sessions (id, status, created_at, updated_at) VALUES ($1, 'starting', $2, $3)
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

pub async fn get_in(conn: &mut PgConnection, id: &str) -> Result<SessionRow> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM sessions WHERE id = $1"
    )))
    .bind(id)
    .fetch_one(&mut *conn)
    .await?)
}

pub async fn get(db: &Db, id: &str) -> Result<Option<SessionRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM sessions WHERE id = $1"
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
    conn: &mut PgConnection,
    id: &str,
    status: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE sessions SET status = $1, status_reason = $2, updated_at = $3
         WHERE id = $4 AND (status IS DISTINCT FROM $1 OR status_reason IS DISTINCT FROM $2)",
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
    conn: &mut PgConnection,
    id: &str,
    me: &Me,
    logged_in: bool,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE sessions SET phone = COALESCE($1, phone), jid = COALESCE($2, jid), lid = COALESCE($3, lid),
         push_name = COALESCE($4, push_name), logged_in = $5, updated_at = $6 WHERE id = $7",
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

pub async fn clear_login(conn: &mut PgConnection, id: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE sessions SET logged_in = false, updated_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Inserts `row` again under a new device number (the identity never hands out a used
/// one), logged out.
pub async fn reinsert(conn: &mut PgConnection, row: &SessionRow, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id, status, status_reason, logged_in, created_at, updated_at)
         VALUES ($1, $2, $3, false, $4, $5)",
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

pub async fn delete(conn: &mut PgConnection, id: &str) -> Result<bool> {
    Ok(sqlx::query("DELETE FROM sessions WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected()
        == 1)
}

pub async fn delete_messages(conn: &mut PgConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM messages WHERE session_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM message_secrets WHERE session_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM chat_state WHERE session_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM call_settings WHERE session_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM session_settings WHERE session_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM message_receipts WHERE session_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
