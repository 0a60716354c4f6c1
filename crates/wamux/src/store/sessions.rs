//! The `sessions` table.

use serde::Serialize;
use sqlx::{FromRow, SqliteConnection, SqlitePool};

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

/// Records a status change and its `session-status` event. Returns `None` when the status
/// and reason are already the stored ones (no event either).
///
/// Status changes come in storms (a restart resumes every session at once, a dropped
/// server disconnects them all), so they go through the group commit ([`Store::write`]):
/// 2,000 changes are a handful of transactions instead of 2,000 turns on the writer
/// connection. The call returns once its change is committed.
pub async fn set_status(
    store: &Store,
    id: &str,
    status: SessionStatus,
    reason: Option<&str>,
) -> Result<Option<Event>> {
    let (id, reason) = (id.to_owned(), reason.map(str::to_owned));
    store
        .write(move |conn| Box::pin(async move { write_status(conn, &id, status, reason).await }))
        .await
}

async fn write_status(
    conn: &mut SqliteConnection,
    id: &str,
    status: SessionStatus,
    reason: Option<String>,
) -> Result<Option<Event>> {
    let changed = sqlx::query(
        "UPDATE sessions SET status = ?, status_reason = ?, updated_at = ?
         WHERE id = ? AND (status IS NOT ? OR status_reason IS NOT ?)",
    )
    .bind(status.as_str())
    .bind(&reason)
    .bind(now())
    .bind(id)
    .bind(status.as_str())
    .bind(&reason)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !changed {
        return Ok(None);
    }
    let event = events::append(
        conn,
        EventKind::SessionStatus,
        id,
        None,
        serde_json::json!({"sessionId": id, "status": status.as_str(), "reason": reason}),
    )
    .await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A storm of status changes from many sessions at once is committed in batches, and
    /// each change still gets its own row update and event, in each session's order.
    #[tokio::test]
    async fn concurrent_status_changes_all_land_with_their_events_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("wamux.db")).await.unwrap();
        let ids: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
        for id in &ids {
            create_or_get(&store, id).await.unwrap();
        }
        let steps = [
            (SessionStatus::Connecting, None),
            (SessionStatus::Connected, None),
            (SessionStatus::Disconnected, Some("connection lost")),
            // The same status and reason again: no change, no event.
            (SessionStatus::Disconnected, Some("connection lost")),
        ];
        let mut tasks = tokio::task::JoinSet::new();
        for id in ids.clone() {
            let store = store.clone();
            tasks.spawn(async move {
                let mut written = Vec::new();
                for (status, reason) in steps {
                    written.push(set_status(&store, &id, status, reason).await.unwrap());
                }
                (id, written)
            });
        }
        while let Some(r) = tasks.join_next().await {
            let (id, written) = r.unwrap();
            let kinds: Vec<_> = written
                .iter()
                .map(|e| {
                    e.as_ref()
                        .map(|e| e.data["status"].as_str().unwrap().to_owned())
                })
                .collect();
            assert_eq!(
                kinds,
                [
                    Some("connecting".to_owned()),
                    Some("connected".to_owned()),
                    Some("disconnected".to_owned()),
                    None
                ],
                "{id}"
            );
            let ids: Vec<i64> = written.iter().flatten().map(|e| e.id).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{id}: {ids:?}");
            let row = get(store.pool(), &id).await.unwrap().unwrap();
            assert_eq!(row.status, "disconnected");
            assert_eq!(row.status_reason.as_deref(), Some("connection lost"));
        }
        let events: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE event = 'session-status'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(events, 300 * 3);
    }
}
