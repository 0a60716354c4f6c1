//! The webhook tables on SQLite. Set-wise statements take their rows as one JSON array read
//! with `json_each`, SQLite's way of binding a list.

use sqlx::SqliteConnection;

use super::Db;
use crate::store::Result;
use crate::store::webhooks::{
    AnswerRow, DeliveryRow, GlobalRow, OpenRow, RouteRow, WebhookRow, WebhookWrite,
};

pub(crate) async fn get_webhook(db: &Db, session_id: &str) -> Result<Option<WebhookRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM webhooks WHERE session_id = ?")
            .bind(session_id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

pub(crate) async fn secret_of(
    conn: &mut SqliteConnection,
    session_id: &str,
) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT secret FROM webhooks WHERE session_id = ?")
            .bind(session_id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

pub(crate) async fn upsert_webhook(
    conn: &mut SqliteConnection,
    w: &WebhookWrite<'_>,
) -> Result<WebhookRow> {
    Ok(sqlx::query_as(
        "INSERT INTO webhooks (session_id, url, events, headers, secret, disabled_reason, created_at, updated_at,
            format, by_events, base64, enabled)
         VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (session_id) DO UPDATE SET url = excluded.url, events = excluded.events,
            headers = excluded.headers, secret = excluded.secret, disabled_reason = NULL,
            updated_at = excluded.updated_at, format = excluded.format,
            by_events = excluded.by_events, base64 = excluded.base64, enabled = excluded.enabled
         RETURNING *",
    )
    .bind(w.session_id)
    .bind(w.url)
    .bind(&w.events)
    .bind(&w.headers)
    .bind(&w.secret)
    .bind(w.now)
    .bind(w.now)
    .bind(w.format)
    .bind(w.by_events)
    .bind(w.base64)
    .bind(w.enabled)
    .fetch_one(&mut *conn)
    .await?)
}

/// Starts a session's cursor at the current end of the log, unless it has one.
pub(crate) async fn start_cursor(conn: &mut SqliteConnection, session_id: &str) -> Result<()> {
    sqlx::query(
        "INSERT OR IGNORE INTO webhook_cursors (session_id, last_event_id)
         VALUES (?, (SELECT COALESCE(MAX(id), 0) FROM events))",
    )
    .bind(session_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn delete_webhook(conn: &mut SqliteConnection, session_id: &str) -> Result<bool> {
    Ok(sqlx::query("DELETE FROM webhooks WHERE session_id = ?")
        .bind(session_id)
        .execute(&mut *conn)
        .await?
        .rows_affected()
        > 0)
}

/// Cancels the session webhook's undelivered deliveries.
pub(crate) async fn cancel_pending(
    conn: &mut SqliteConnection,
    session_id: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'cancelled', lease_until = NULL,
            last_error = 'webhook removed', updated_at = ?
         WHERE session_id = ? AND target = 'session' AND status = 'pending'",
    )
    .bind(now)
    .bind(session_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn delete_cursor(conn: &mut SqliteConnection, session_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM webhook_cursors WHERE session_id = ?")
        .bind(session_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes the global webhook's state and the cursors no session webhook uses.
pub(crate) async fn forget_global(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query("DELETE FROM webhook_global")
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "DELETE FROM webhook_cursors
         WHERE session_id NOT IN (SELECT session_id FROM webhooks)",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn global_row(conn: &mut SqliteConnection) -> Result<Option<GlobalRow>> {
    Ok(
        sqlx::query_as("SELECT url, start_event_id, secret, disabled_reason FROM webhook_global")
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// Stores the global webhook, starting at the current end of the log; returns that start.
pub(crate) async fn insert_global(
    conn: &mut SqliteConnection,
    url: &str,
    secret: &str,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO webhook_global (id, url, start_event_id, secret)
         SELECT 1, ?, COALESCE(MAX(id), 0), ? FROM events
         RETURNING start_event_id",
    )
    .bind(url)
    .bind(secret)
    .fetch_one(&mut *conn)
    .await?)
}

pub(crate) async fn update_global(
    conn: &mut SqliteConnection,
    url: &str,
    secret: &str,
    disabled_reason: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE webhook_global SET url = ?, secret = ?, disabled_reason = ?")
        .bind(url)
        .bind(secret)
        .bind(disabled_reason)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn global_disabled_reason(db: &Db) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT disabled_reason FROM webhook_global WHERE id = 1")
            .fetch_optional(&db.pool)
            .await?
            .flatten(),
    )
}

pub(crate) async fn disable_session(
    conn: &mut SqliteConnection,
    session_id: &str,
    reason: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE webhooks SET disabled_reason = ?, updated_at = ? WHERE session_id = ?")
        .bind(reason)
        .bind(now)
        .bind(session_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn disable_global(conn: &mut SqliteConnection, reason: &str) -> Result<()> {
    sqlx::query("UPDATE webhook_global SET disabled_reason = ?")
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn release_leases(conn: &mut SqliteConnection) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE webhook_deliveries SET lease_until = NULL
         WHERE status = 'pending' AND lease_until IS NOT NULL",
    )
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

pub(crate) async fn instance_tag(db: &Db) -> Result<String> {
    Ok(
        sqlx::query_scalar("SELECT tag FROM webhook_instance WHERE id = 1")
            .fetch_one(&db.pool)
            .await?,
    )
}

pub(crate) async fn sessions_with_outbox(db: &Db) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT session_id FROM webhook_cursors
         UNION SELECT session_id FROM webhooks
         UNION SELECT DISTINCT session_id FROM webhook_deliveries WHERE status = 'pending'",
    )
    .fetch_all(&db.pool)
    .await?)
}

/// Each session with events after `after_id`, with its last event id.
pub(crate) async fn last_event_ids(db: &Db, after_id: i64) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT session_id, MAX(id) AS max_id FROM events WHERE id > ? GROUP BY session_id",
    )
    .bind(after_id)
    .fetch_all(&db.pool)
    .await?)
}

pub(crate) async fn max_event_id(db: &Db) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(&db.pool)
            .await?,
    )
}

pub(crate) async fn outbox_depth(db: &Db) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
            .fetch_one(&db.pool)
            .await?,
    )
}

pub(crate) async fn has_work(db: &Db, session_id: &str, start_if_new: i64) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events WHERE session_id = ?1 AND id >
                COALESCE((SELECT last_event_id FROM webhook_cursors WHERE session_id = ?1), ?2))
             OR EXISTS (SELECT 1 FROM webhook_deliveries WHERE session_id = ?1 AND status = 'pending')",
    )
    .bind(session_id)
    .bind(start_if_new)
    .fetch_one(&db.pool)
    .await?)
}

pub(crate) async fn fan_out(
    conn: &mut SqliteConnection,
    routes: &[RouteRow<'_>],
    now: i64,
) -> Result<()> {
    let routes: Vec<serde_json::Value> = routes
        .iter()
        .map(
            |r| serde_json::json!({"s": r.session_id, "t": r.target, "k": r.events, "st": r.start}),
        )
        .collect();
    let routes = serde_json::Value::from(routes).to_string();
    // Each route with the id its session's events are read after.
    const ROUTES: &str = "WITH r AS (
            SELECT json_extract(value, '$.s') AS s, json_extract(value, '$.t') AS t,
                   json_extract(value, '$.k') AS k, json_extract(value, '$.st') AS st
            FROM json_each(?1)),
        b AS (SELECT r.s, r.t, r.k, COALESCE(c.last_event_id, r.st) AS after
              FROM r LEFT JOIN webhook_cursors c ON c.session_id = r.s)";
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "{ROUTES}
         INSERT OR IGNORE INTO webhook_deliveries
           (session_id, event_id, target, chat_key, status, attempts, next_attempt_at, created_at, updated_at)
         SELECT e.session_id, e.id, b.t, COALESCE(e.chat_id, ''), 'pending', 0, ?2, ?2, ?2
         FROM b JOIN events e ON e.session_id = b.s AND e.id > b.after
         WHERE b.k IS NULL OR e.event IN (SELECT value FROM json_each(b.k))
         ORDER BY e.id"
    )))
    .bind(&routes)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    // `WHERE true` keeps SQLite from reading ON CONFLICT as a join constraint.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "{ROUTES}
         INSERT INTO webhook_cursors (session_id, last_event_id)
         SELECT b.s, MAX(e.id) FROM b JOIN events e ON e.session_id = b.s AND e.id > b.after
         WHERE true GROUP BY b.s
         ON CONFLICT (session_id) DO UPDATE SET last_event_id = excluded.last_event_id"
    )))
    .bind(&routes)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The first `chain` open deliveries of each (session, target, chat) of `sessions`, in
/// order, and how many are open in the chat.
pub(crate) async fn open_deliveries(
    conn: &mut SqliteConnection,
    sessions: &[&str],
    chain: i64,
) -> Result<Vec<OpenRow>> {
    Ok(sqlx::query_as(
        "SELECT d.id, d.session_id, d.event_id, d.target, d.chat_key, d.attempts,
                d.next_attempt_at, d.lease_until, d.pos, d.open, e.body
         FROM (SELECT id, session_id, event_id, target, chat_key, attempts, next_attempt_at,
                      lease_until,
                      ROW_NUMBER() OVER chat AS pos, COUNT(*) OVER chat AS open
               FROM webhook_deliveries
               WHERE session_id IN (SELECT value FROM json_each(?1)) AND status = 'pending'
               WINDOW chat AS (PARTITION BY session_id, target, chat_key ORDER BY id
                               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)) d
         JOIN events e ON e.id = d.event_id
         WHERE d.pos <= ?2
         ORDER BY d.session_id, d.target, d.chat_key, d.pos",
    )
    .bind(serde_json::to_string(sessions)?)
    .bind(chain)
    .fetch_all(&mut *conn)
    .await?)
}

pub(crate) async fn lease(conn: &mut SqliteConnection, ids: &[i64], until: i64) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET lease_until = ?
         WHERE id IN (SELECT value FROM json_each(?))",
    )
    .bind(until)
    .bind(serde_json::to_string(ids)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn record(
    conn: &mut SqliteConnection,
    answers: &[AnswerRow<'_>],
    now: i64,
) -> Result<()> {
    let rows: Vec<serde_json::Value> = answers
        .iter()
        .map(|a| {
            serde_json::json!({
                "id": a.id, "status": a.status, "next": a.next, "delivered_at": a.delivered_at,
                "attempted": a.attempted, "code": a.code, "error": a.error,
                "released": a.released,
            })
        })
        .collect();
    sqlx::query(
        "UPDATE webhook_deliveries AS d SET status = j.status, attempts = d.attempts + j.attempted,
            next_attempt_at = COALESCE(j.next, d.next_attempt_at), lease_until = NULL,
            last_status = COALESCE(j.code, d.last_status),
            last_error = CASE WHEN j.released THEN d.last_error ELSE j.error END,
            updated_at = CASE WHEN j.released THEN d.updated_at ELSE ?2 END,
            delivered_at = COALESCE(j.delivered_at, d.delivered_at)
         FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.status') AS status,
                      json_extract(value, '$.released') AS released,
                      json_extract(value, '$.next') AS next,
                      json_extract(value, '$.delivered_at') AS delivered_at,
                      json_extract(value, '$.attempted') AS attempted,
                      json_extract(value, '$.code') AS code, json_extract(value, '$.error') AS error
               FROM json_each(?1)) AS j
         WHERE d.id = j.id AND d.status = 'pending'",
    )
    .bind(serde_json::Value::from(rows).to_string())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

macro_rules! delivery_select {
    () => {
        "SELECT d.id, d.event_id, e.event, e.chat_id, d.target, d.status, d.attempts,
    d.last_status, d.last_error, d.next_attempt_at, d.created_at, d.updated_at, d.delivered_at
         FROM webhook_deliveries d JOIN events e ON e.id = d.event_id"
    };
}

pub(crate) async fn list_deliveries(
    db: &Db,
    session_id: &str,
    status: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliveryRow>> {
    Ok(sqlx::query_as(concat!(
        delivery_select!(),
        " WHERE d.session_id = ? AND (? IS NULL OR d.status = ?) AND (? IS NULL OR d.id < ?)
         ORDER BY d.id DESC LIMIT ?"
    ))
    .bind(session_id)
    .bind(status)
    .bind(status)
    .bind(before)
    .bind(before)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

pub(crate) async fn get_delivery(
    db: &Db,
    session_id: &str,
    id: i64,
) -> Result<Option<DeliveryRow>> {
    Ok(sqlx::query_as(concat!(
        delivery_select!(),
        " WHERE d.session_id = ? AND d.id = ?"
    ))
    .bind(session_id)
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

pub(crate) async fn retry_delivery(
    conn: &mut SqliteConnection,
    session_id: &str,
    id: i64,
    now: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?,
            lease_until = CASE WHEN status = 'pending' THEN lease_until ELSE NULL END,
            updated_at = ?
         WHERE session_id = ? AND id = ?",
    )
    .bind(now)
    .bind(now)
    .bind(session_id)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0)
}

pub(crate) async fn delivery_counts(db: &Db, session_id: &str) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT status, COUNT(*) FROM webhook_deliveries WHERE session_id = ? GROUP BY status",
    )
    .bind(session_id)
    .fetch_all(&db.pool)
    .await?)
}
