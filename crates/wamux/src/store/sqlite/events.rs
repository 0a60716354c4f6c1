use sqlx::{Row as _, SqliteConnection};

use super::Db;
use crate::event::Event;
use crate::store::Result;
use crate::store::events::Stored;

pub async fn insert(
    conn: &mut SqliteConnection,
    kind: &str,
    session_id: &str,
    chat_id: Option<&str>,
    body: &str,
    created_at: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO events (session_id, event, chat_id, body, created_at)
         VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(session_id)
    .bind(kind)
    .bind(chat_id)
    .bind(body)
    .bind(created_at)
    .fetch_one(&mut *conn)
    .await?)
}

pub async fn list_after(
    db: &Db,
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
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(|r| stored(r)?.decode()).collect()
}

pub(super) fn stored(r: &sqlx::sqlite::SqliteRow) -> Result<Stored> {
    Ok(Stored {
        id: r.try_get("id")?,
        session_id: r.try_get("session_id")?,
        event: r.try_get("event")?,
        chat_id: r.try_get("chat_id")?,
        body: r.try_get("body")?,
        created_at: r.try_get("created_at")?,
    })
}
