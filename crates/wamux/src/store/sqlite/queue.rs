use sqlx::SqliteConnection;

use super::Db;
use crate::model::Message;
use crate::store::Result;
use crate::store::queue::QueueRow;

const COLS: &str = "session_id, message_id, chat_id, to_address, body, send_at, retry_at, attempts, last_error, created_at";

pub async fn insert(
    conn: &mut SqliteConnection,
    msg: &Message,
    to: &str,
    body: &str,
    send_at: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO send_queue (session_id, message_id, chat_id, to_address, body, send_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&msg.session_id)
    .bind(&msg.id)
    .bind(&msg.chat_id)
    .bind(to)
    .bind(body)
    .bind(send_at)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn due(db: &Db, session: &str, now: i64, limit: i64) -> Result<Vec<QueueRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM send_queue q
         WHERE q.session_id = ?1 AND q.send_at <= ?2 AND (q.retry_at IS NULL OR q.retry_at <= ?2)
           AND NOT EXISTS (
             SELECT 1 FROM send_queue p
             WHERE p.session_id = q.session_id AND p.chat_id = q.chat_id
               AND (p.send_at < q.send_at OR (p.send_at = q.send_at AND p.seq < q.seq)))
         ORDER BY q.send_at, q.seq LIMIT ?3"
    )))
    .bind(session)
    .bind(now)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

pub async fn sessions(db: &Db) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT session_id, MIN(MAX(send_at, COALESCE(retry_at, 0))) FROM send_queue
         GROUP BY session_id ORDER BY session_id",
    )
    .fetch_all(&db.pool)
    .await?)
}

pub async fn list(db: &Db, session: &str) -> Result<Vec<QueueRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM send_queue WHERE session_id = ? ORDER BY send_at, seq"
    )))
    .bind(session)
    .fetch_all(&db.pool)
    .await?)
}

pub async fn remove(conn: &mut SqliteConnection, session: &str, message_id: &str) -> Result<bool> {
    Ok(
        sqlx::query("DELETE FROM send_queue WHERE session_id = ? AND message_id = ?")
            .bind(session)
            .bind(message_id)
            .execute(&mut *conn)
            .await?
            .rows_affected()
            == 1,
    )
}

pub async fn failed_attempt(
    conn: &mut SqliteConnection,
    session: &str,
    message_id: &str,
    error: &str,
    retry_at: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE send_queue SET attempts = attempts + 1, last_error = ?, retry_at = ?
         WHERE session_id = ? AND message_id = ?",
    )
    .bind(error)
    .bind(retry_at)
    .bind(session)
    .bind(message_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Holds every queued send of `session` back until `until` (at least).
pub async fn hold(conn: &mut SqliteConnection, session: &str, until: i64) -> Result<()> {
    sqlx::query(
        "UPDATE send_queue SET retry_at = MAX(COALESCE(retry_at, 0), ?1) WHERE session_id = ?2",
    )
    .bind(until)
    .bind(session)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn forget_session(conn: &mut SqliteConnection, session: &str) -> Result<()> {
    sqlx::query("DELETE FROM send_queue WHERE session_id = ?")
        .bind(session)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
