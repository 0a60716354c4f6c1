//! The webhook tables on PostgreSQL: the queries of the SQLite backend, with lists bound as
//! arrays (`unnest`, `= ANY`).

use sqlx::PgConnection;

use super::Db;
use crate::store::Result;
use crate::store::webhooks::{
    AnswerRow, DeliveryRow, GlobalRow, OpenRow, RouteRow, WebhookRow, WebhookWrite,
};

pub(crate) async fn get_webhook(db: &Db, session_id: &str) -> Result<Option<WebhookRow>> {
    Ok(
        sqlx::query_as("SELECT * FROM webhooks WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

pub(crate) async fn secret_of(conn: &mut PgConnection, session_id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT secret FROM webhooks WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

pub(crate) async fn upsert_webhook(
    conn: &mut PgConnection,
    w: &WebhookWrite<'_>,
) -> Result<WebhookRow> {
    Ok(sqlx::query_as(
        "INSERT INTO webhooks (session_id, url, events, headers, secret, disabled_reason, created_at, updated_at,
            format, by_events, base64, enabled)
         VALUES ($1, $2, $3, $4, $5, NULL, $6, $6, $7, $8, $9, $10)
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
    .bind(w.format)
    .bind(w.by_events)
    .bind(w.base64)
    .bind(w.enabled)
    .fetch_one(&mut *conn)
    .await?)
}

pub(crate) async fn start_cursor(conn: &mut PgConnection, session_id: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO webhook_cursors (session_id, last_event_id)
         VALUES ($1, (SELECT COALESCE(MAX(id), 0) FROM events))
         ON CONFLICT (session_id) DO NOTHING",
    )
    .bind(session_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn delete_webhook(conn: &mut PgConnection, session_id: &str) -> Result<bool> {
    Ok(sqlx::query("DELETE FROM webhooks WHERE session_id = $1")
        .bind(session_id)
        .execute(&mut *conn)
        .await?
        .rows_affected()
        > 0)
}

pub(crate) async fn cancel_pending(
    conn: &mut PgConnection,
    session_id: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'cancelled', lease_until = NULL,
            last_error = 'webhook removed', updated_at = $1
         WHERE session_id = $2 AND target = 'session' AND status = 'pending'",
    )
    .bind(now)
    .bind(session_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn delete_cursor(conn: &mut PgConnection, session_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM webhook_cursors WHERE session_id = $1")
        .bind(session_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn forget_global(conn: &mut PgConnection) -> Result<()> {
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

pub(crate) async fn global_row(conn: &mut PgConnection) -> Result<Option<GlobalRow>> {
    Ok(
        sqlx::query_as("SELECT url, start_event_id, secret, disabled_reason FROM webhook_global")
            .fetch_optional(&mut *conn)
            .await?,
    )
}

pub(crate) async fn insert_global(conn: &mut PgConnection, url: &str, secret: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO webhook_global (id, url, start_event_id, secret)
         SELECT 1, $1, COALESCE(MAX(id), 0), $2 FROM events
         RETURNING start_event_id",
    )
    .bind(url)
    .bind(secret)
    .fetch_one(&mut *conn)
    .await?)
}

pub(crate) async fn update_global(
    conn: &mut PgConnection,
    url: &str,
    secret: &str,
    disabled_reason: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE webhook_global SET url = $1, secret = $2, disabled_reason = $3")
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
    conn: &mut PgConnection,
    session_id: &str,
    reason: &str,
    now: i64,
) -> Result<()> {
    sqlx::query("UPDATE webhooks SET disabled_reason = $1, updated_at = $2 WHERE session_id = $3")
        .bind(reason)
        .bind(now)
        .bind(session_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn disable_global(conn: &mut PgConnection, reason: &str) -> Result<()> {
    sqlx::query("UPDATE webhook_global SET disabled_reason = $1")
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn release_leases(conn: &mut PgConnection) -> Result<u64> {
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

pub(crate) async fn last_event_ids(db: &Db, after_id: i64) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT session_id, MAX(id) AS max_id FROM events WHERE id > $1 GROUP BY session_id",
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
        "SELECT EXISTS (SELECT 1 FROM events WHERE session_id = $1 AND id >
                COALESCE((SELECT last_event_id FROM webhook_cursors WHERE session_id = $1), $2))
             OR EXISTS (SELECT 1 FROM webhook_deliveries WHERE session_id = $1 AND status = 'pending')",
    )
    .bind(session_id)
    .bind(start_if_new)
    .fetch_one(&db.pool)
    .await?)
}

pub(crate) async fn fan_out(
    conn: &mut PgConnection,
    routes: &[RouteRow<'_>],
    now: i64,
) -> Result<()> {
    let sessions: Vec<&str> = routes.iter().map(|r| r.session_id).collect();
    let targets: Vec<&str> = routes.iter().map(|r| r.target).collect();
    // A route's event names as a JSON array (arrays of arrays must be rectangular); `None`
    // for every event.
    let filters: Vec<Option<String>> = routes
        .iter()
        .map(|r| r.events.as_ref().map(serde_json::to_string).transpose())
        .collect::<Result<_, _>>()?;
    let starts: Vec<i64> = routes.iter().map(|r| r.start).collect();
    // One statement, so the deliveries and the cursor come from the same snapshot: between
    // two statements another connection may commit events, which the cursor would then skip.
    sqlx::query(
        "WITH r AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS r(s, t, k, st)),
         b AS (SELECT r.s, r.t, r.k::jsonb AS k, COALESCE(c.last_event_id, r.st) AS after
               FROM r LEFT JOIN webhook_cursors c ON c.session_id = r.s),
         unread AS (SELECT e.session_id, e.id, e.event, e.chat_id, b.t, b.k
                    FROM b JOIN events e ON e.session_id = b.s AND e.id > b.after),
         deliveries AS (
            INSERT INTO webhook_deliveries
              (session_id, event_id, target, chat_key, status, attempts, next_attempt_at, created_at, updated_at)
            SELECT session_id, id, t, COALESCE(chat_id, ''), 'pending', 0, $5, $5, $5
            FROM unread WHERE k IS NULL OR k ? event
            ORDER BY id
            ON CONFLICT (event_id, target) DO NOTHING)
         INSERT INTO webhook_cursors (session_id, last_event_id)
         SELECT session_id, MAX(id) FROM unread GROUP BY session_id
         ON CONFLICT (session_id) DO UPDATE SET last_event_id = excluded.last_event_id",
    )
    .bind(&sessions)
    .bind(&targets)
    .bind(&filters)
    .bind(&starts)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn open_deliveries(
    conn: &mut PgConnection,
    sessions: &[&str],
    chain: i64,
) -> Result<Vec<OpenRow>> {
    // Ordered bytewise, as SQLite does, so both pick the same chats when a limit cuts in.
    Ok(sqlx::query_as(
        r#"SELECT d.id, d.session_id, d.event_id, d.target, d.chat_key, d.attempts,
                d.next_attempt_at, d.lease_until, d.pos, d.open, e.body
         FROM (SELECT id, session_id, event_id, target, chat_key, attempts, next_attempt_at,
                      lease_until,
                      ROW_NUMBER() OVER chat AS pos, COUNT(*) OVER chat AS open
               FROM webhook_deliveries
               WHERE session_id = ANY($1) AND status = 'pending'
               WINDOW chat AS (PARTITION BY session_id, target, chat_key ORDER BY id
                               ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)) d
         JOIN events e ON e.id = d.event_id
         WHERE d.pos <= $2
         ORDER BY d.session_id COLLATE "C", d.target COLLATE "C", d.chat_key COLLATE "C", d.pos"#,
    )
    .bind(sessions)
    .bind(chain)
    .fetch_all(&mut *conn)
    .await?)
}

pub(crate) async fn lease(conn: &mut PgConnection, ids: &[i64], until: i64) -> Result<()> {
    sqlx::query("UPDATE webhook_deliveries SET lease_until = $1 WHERE id = ANY($2)")
        .bind(until)
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn record(
    conn: &mut PgConnection,
    answers: &[AnswerRow<'_>],
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE webhook_deliveries AS d SET status = j.status, attempts = d.attempts + j.attempted,
            next_attempt_at = COALESCE(j.next, d.next_attempt_at), lease_until = NULL,
            last_status = COALESCE(j.code, d.last_status),
            last_error = CASE WHEN j.released THEN d.last_error ELSE j.error END,
            updated_at = CASE WHEN j.released THEN d.updated_at ELSE $9 END,
            delivered_at = COALESCE(j.delivered_at, d.delivered_at)
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                     $6::bigint[], $7::text[], $8::bool[])
              AS j(id, status, next, delivered_at, attempted, code, error, released)
         WHERE d.id = j.id AND d.status = 'pending'",
    )
    .bind(answers.iter().map(|a| a.id).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.status).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.next).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.delivered_at).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.attempted).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.code).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.error).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.released).collect::<Vec<_>>())
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
        " WHERE d.session_id = $1 AND ($2::text IS NULL OR d.status = $2)
           AND ($3::bigint IS NULL OR d.id < $3)
         ORDER BY d.id DESC LIMIT $4"
    ))
    .bind(session_id)
    .bind(status)
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
        " WHERE d.session_id = $1 AND d.id = $2"
    ))
    .bind(session_id)
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

pub(crate) async fn retry_delivery(
    conn: &mut PgConnection,
    session_id: &str,
    id: i64,
    now: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $1,
            lease_until = CASE WHEN status = 'pending' THEN lease_until ELSE NULL END,
            updated_at = $1
         WHERE session_id = $2 AND id = $3",
    )
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
        "SELECT status, COUNT(*) FROM webhook_deliveries WHERE session_id = $1 GROUP BY status",
    )
    .bind(session_id)
    .fetch_all(&db.pool)
    .await?)
}
