//! The `sessions` table.

use serde::Serialize;
use sqlx::FromRow;

use super::{Conn, Result, Store, dispatch, events, now};
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

/// Creates the session if it does not exist. Returns the row and whether it was created.
pub async fn create_or_get(store: &Store, id: &str) -> Result<(SessionRow, bool)> {
    let mut tx = store.begin().await?;
    let created = dispatch!(conn &mut tx.conn(), sessions::create(id, now()))?;
    let row = dispatch!(conn &mut tx.conn(), sessions::get_in(id))?;
    tx.commit().await?;
    Ok((row, created))
}

pub async fn get(store: &Store, id: &str) -> Result<Option<SessionRow>> {
    dispatch!(store, sessions::get(id))
}

pub async fn list(store: &Store) -> Result<Vec<SessionRow>> {
    dispatch!(store, sessions::list())
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
        .write(move |mut conn| {
            Box::pin(async move { write_status(&mut conn, &id, status, reason).await })
        })
        .await
}

async fn write_status(
    conn: &mut Conn<'_>,
    id: &str,
    status: SessionStatus,
    reason: Option<String>,
) -> Result<Option<Event>> {
    let changed = dispatch!(
        conn conn.reborrow(),
        sessions::update_status(id, status.as_str(), reason.as_deref(), now())
    )?;
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
    let mut tx = store.begin().await?;
    dispatch!(conn &mut tx.conn(), sessions::set_me(id, me, logged_in, now()))?;
    tx.commit().await
}

/// Forgets the account (after a logout): the next start needs a new QR.
pub async fn clear_login(store: &Store, id: &str) -> Result<()> {
    let mut tx = store.begin().await?;
    dispatch!(conn &mut tx.conn(), sessions::clear_login(id, now()))?;
    tx.commit().await
}

/// Gives the session a fresh device number, so a re-pairing after logout starts from a
/// clean device store row instead of the logged-out identity.
pub async fn renumber_device(store: &Store, id: &str) -> Result<SessionRow> {
    let mut tx = store.begin().await?;
    let row = dispatch!(conn &mut tx.conn(), sessions::get_in(id))?;
    dispatch!(conn &mut tx.conn(), sessions::delete(id))?;
    dispatch!(conn &mut tx.conn(), sessions::reinsert(&row, now()))?;
    let row = dispatch!(conn &mut tx.conn(), sessions::get_in(id))?;
    tx.commit().await?;
    Ok(row)
}

/// Deletes the session, its message history and its queued sends. The event log is kept: it is the
/// record of what was already announced.
pub async fn delete(store: &Store, id: &str) -> Result<bool> {
    let mut tx = store.begin().await?;
    dispatch!(conn &mut tx.conn(), sessions::delete_messages(id))?;
    dispatch!(conn &mut tx.conn(), queue::forget_session(id))?;
    let deleted = dispatch!(conn &mut tx.conn(), sessions::delete(id))?;
    tx.commit().await?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A storm of status changes from many sessions at once is committed in batches, and
    /// each change still gets its own row update and event, in each session's order.
    #[tokio::test]
    async fn concurrent_status_changes_all_land_with_their_events_in_order() {
        for db in crate::store::testing::databases().await {
            let store = db.store().await;
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
                let row = get(&store, &id).await.unwrap().unwrap();
                assert_eq!(row.status, "disconnected");
                assert_eq!(row.status_reason.as_deref(), Some("connection lost"));
            }
            let events = crate::store::events::list_after(&store, None, 0, 10_000)
                .await
                .unwrap();
            assert_eq!(
                events
                    .iter()
                    .filter(|e| e.kind == EventKind::SessionStatus)
                    .count(),
                300 * 3,
                "{}",
                store.engine()
            );
            db.drop().await;
        }
    }
}
