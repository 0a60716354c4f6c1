use sqlx::SqliteConnection;

use super::Db;
use crate::store::Result;
use crate::store::chats::Row;

pub async fn get(
    conn: &mut SqliteConnection,
    session_id: &str,
    chat_id: &str,
) -> Result<Option<Row>> {
    Ok(sqlx::query_as(
        "SELECT pinned, archived, muted_until, marked_unread FROM chat_state
         WHERE session_id = ?1 AND chat_id = ?2",
    )
    .bind(session_id)
    .bind(chat_id)
    .fetch_optional(&mut *conn)
    .await?)
}

pub async fn all(
    db: &Db,
    session_id: &str,
) -> Result<Vec<(String, bool, bool, Option<i64>, bool)>> {
    Ok(sqlx::query_as(
        "SELECT chat_id, pinned, archived, muted_until, marked_unread FROM chat_state
         WHERE session_id = ?1",
    )
    .bind(session_id)
    .fetch_all(&db.pool)
    .await?)
}

pub async fn put(
    conn: &mut SqliteConnection,
    session_id: &str,
    chat_id: &str,
    row: Row,
    now: i64,
) -> Result<()> {
    let (pinned, archived, muted_until, marked_unread) = row;
    sqlx::query(
        "INSERT INTO chat_state (session_id, chat_id, pinned, archived, muted_until, marked_unread, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (session_id, chat_id) DO UPDATE SET pinned = excluded.pinned,
             archived = excluded.archived, muted_until = excluded.muted_until,
             marked_unread = excluded.marked_unread, updated_at = excluded.updated_at",
    )
    .bind(session_id)
    .bind(chat_id)
    .bind(pinned)
    .bind(archived)
    .bind(muted_until)
    .bind(marked_unread)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
