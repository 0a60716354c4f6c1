use sqlx::{PgConnection, Row as _};

use super::Db;
use crate::event::Event;
use crate::store::Result;
use crate::store::events::Stored;

pub async fn insert(
    conn: &mut PgConnection,
    kind: &str,
    session_id: &str,
    chat_id: Option<&str>,
    body: &str,
    created_at: i64,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO events (session_id, event, chat_id, body, created_at)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
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
         WHERE id > $1 AND ($2::text IS NULL OR session_id = $2) ORDER BY id LIMIT $3",
    )
    .bind(after_id)
    .bind(session_id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(|r| stored(r)?.decode()).collect()
}

pub(super) fn stored(r: &sqlx::postgres::PgRow) -> Result<Stored> {
    Ok(Stored {
        id: r.try_get("id")?,
        session_id: r.try_get("session_id")?,
        event: r.try_get("event")?,
        chat_id: r.try_get("chat_id")?,
        body: r.try_get("body")?,
        created_at: r.try_get("created_at")?,
    })
}

/// Takes `n` event ids, in increasing order, for rows inserted with explicit ids.
pub(super) async fn take_ids(conn: &mut PgConnection, n: usize) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, $1)",
    )
    .bind(i64::try_from(n).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?)
}
