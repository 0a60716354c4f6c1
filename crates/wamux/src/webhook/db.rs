//! The webhook tables (migration 0002): webhooks, cursors, deliveries.
//!
//! The gateway's `store` module owns the rest of the schema; this file is the only place that
//! writes SQL for webhooks. Every function that moves the outbox forward does it in one
//! `BEGIN IMMEDIATE` transaction, so a crash between any two statements changes nothing.

use sqlx::{Row, SqlitePool, sqlite::SqliteRow};

use crate::store::{Result, Store};

use super::config::{EventFilter, GlobalWebhook};
use super::signature::Secret;

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Which webhook a delivery is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Session,
    Global,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Session => "session",
            Target::Global => "global",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "global" {
            Target::Global
        } else {
            Target::Session
        }
    }
}

/// A session's own webhook as stored.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub session_id: String,
    pub url: String,
    pub events: EventFilter,
    pub headers: Vec<(String, String)>,
    pub secret: Secret,
    pub disabled_reason: Option<String>,
    /// Unix seconds, as every time the API shows (the table keeps milliseconds).
    pub created_at: i64,
    pub updated_at: i64,
}

/// The tables keep unix milliseconds (retry times need them); the API speaks unix seconds,
/// like every other timestamp it shows.
fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

fn webhook_from_row(r: &SqliteRow) -> Result<Webhook> {
    let headers: String = r.try_get("headers")?;
    let headers: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&headers)?;
    let secret: String = r.try_get("secret")?;
    Ok(Webhook {
        session_id: r.try_get("session_id")?,
        url: r.try_get("url")?,
        events: EventFilter::from_stored(&r.try_get::<String, _>("events")?),
        headers: headers
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
            .collect(),
        secret: Secret::from_stored(&secret).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        disabled_reason: r.try_get("disabled_reason")?,
        created_at: secs(r.try_get("created_at")?),
        updated_at: secs(r.try_get("updated_at")?),
    })
}

pub async fn get_webhook(pool: &SqlitePool, session_id: &str) -> Result<Option<Webhook>> {
    let row = sqlx::query("SELECT * FROM webhooks WHERE session_id = ?")
        .bind(session_id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(webhook_from_row).transpose()
}

/// What a caller asks to store; the secret is kept when `None` and the webhook exists.
#[derive(Debug)]
pub struct NewWebhook<'a> {
    pub url: &'a str,
    pub events: &'a EventFilter,
    pub headers: &'a [(String, String)],
    pub secret: Option<&'a Secret>,
}

/// Creates or replaces a session's webhook. Returns it and the secret if one was generated.
///
/// A webhook that did not exist starts at the current end of the event log (unless the
/// global webhook was already serving this session, whose cursor carries on); setting it
/// again keeps its cursor and re-enables it after a 410.
pub async fn set_webhook(
    store: &Store,
    session_id: &str,
    new: NewWebhook<'_>,
) -> Result<(Webhook, Option<Secret>)> {
    let mut tx = store.begin().await?;
    let existing: Option<String> =
        sqlx::query_scalar("SELECT secret FROM webhooks WHERE session_id = ?")
            .bind(session_id)
            .fetch_optional(&mut *tx)
            .await?;
    let (secret, generated) = match (new.secret, existing) {
        (Some(s), _) => (s.clone(), None),
        (None, Some(stored)) => (
            Secret::from_stored(&stored).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            None,
        ),
        (None, None) => {
            let s = Secret::generate();
            (s.clone(), Some(s))
        }
    };
    let headers: serde_json::Map<String, serde_json::Value> = new
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO webhooks (session_id, url, events, headers, secret, disabled_reason, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, NULL, ?, ?)
         ON CONFLICT (session_id) DO UPDATE SET url = excluded.url, events = excluded.events,
            headers = excluded.headers, secret = excluded.secret, disabled_reason = NULL,
            updated_at = excluded.updated_at",
    )
    .bind(session_id)
    .bind(new.url)
    .bind(serde_json::to_string(&new.events.names())?)
    .bind(serde_json::Value::Object(headers).to_string())
    .bind(secret.expose())
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT OR IGNORE INTO webhook_cursors (session_id, last_event_id)
         VALUES (?, (SELECT COALESCE(MAX(id), 0) FROM events))",
    )
    .bind(session_id)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query("SELECT * FROM webhooks WHERE session_id = ?")
        .bind(session_id)
        .fetch_one(&mut *tx)
        .await?;
    let webhook = webhook_from_row(&row)?;
    tx.commit().await?;
    Ok((webhook, generated))
}

/// Removes a session's webhook and cancels its undelivered deliveries. Without a global
/// webhook the cursor goes too, so a webhook set later starts at the then current end.
pub async fn delete_webhook(store: &Store, session_id: &str, global_active: bool) -> Result<bool> {
    let mut tx = store.begin().await?;
    let deleted = sqlx::query("DELETE FROM webhooks WHERE session_id = ?")
        .bind(session_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0;
    if deleted {
        sqlx::query(
            "UPDATE webhook_deliveries SET status = 'cancelled', lease_until = NULL,
                last_error = 'webhook removed', updated_at = ?
             WHERE session_id = ? AND target = 'session' AND status = 'pending'",
        )
        .bind(now_ms())
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
        if !global_active {
            sqlx::query("DELETE FROM webhook_cursors WHERE session_id = ?")
                .bind(session_id)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(deleted)
}

/// The global webhook's stored state.
#[derive(Debug, Clone)]
pub struct GlobalState {
    pub start_event_id: i64,
    pub secret: Secret,
    pub disabled_reason: Option<String>,
}

/// Brings `webhook_global` in line with config at startup. Returns the state and, the first
/// time without a configured secret, the generated one (the caller shows it once).
pub async fn sync_global(
    store: &Store,
    cfg: Option<&GlobalWebhook>,
) -> Result<Option<(GlobalState, Option<Secret>)>> {
    let mut tx = store.begin().await?;
    let Some(cfg) = cfg else {
        // Forget it, and the cursors that only it used, so enabling it later starts afresh.
        sqlx::query("DELETE FROM webhook_global")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM webhook_cursors
             WHERE session_id NOT IN (SELECT session_id FROM webhooks)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(None);
    };
    let row =
        sqlx::query("SELECT url, start_event_id, secret, disabled_reason FROM webhook_global")
            .fetch_optional(&mut *tx)
            .await?;
    let mut generated = None;
    let state = match row {
        None => {
            let secret = match &cfg.secret {
                Some(s) => s.clone(),
                None => {
                    let s = Secret::generate();
                    generated = Some(s.clone());
                    s
                }
            };
            let start: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO webhook_global (id, url, start_event_id, secret) VALUES (1, ?, ?, ?)",
            )
            .bind(&cfg.url)
            .bind(start)
            .bind(secret.expose())
            .execute(&mut *tx)
            .await?;
            GlobalState {
                start_event_id: start,
                secret,
                disabled_reason: None,
            }
        }
        Some(r) => {
            let url: String = r.try_get("url")?;
            let stored: String = r.try_get("secret")?;
            let secret = match &cfg.secret {
                Some(s) => s.clone(),
                None => {
                    Secret::from_stored(&stored).map_err(|e| sqlx::Error::Decode(Box::new(e)))?
                }
            };
            // A new URL is a new receiver: a 410 from the old one no longer applies.
            let disabled_reason: Option<String> = if url == cfg.url {
                r.try_get("disabled_reason")?
            } else {
                None
            };
            sqlx::query("UPDATE webhook_global SET url = ?, secret = ?, disabled_reason = ?")
                .bind(&cfg.url)
                .bind(secret.expose())
                .bind(&disabled_reason)
                .execute(&mut *tx)
                .await?;
            GlobalState {
                start_event_id: r.try_get("start_event_id")?,
                secret,
                disabled_reason,
            }
        }
    };
    tx.commit().await?;
    Ok(Some((state, generated)))
}

pub async fn global_disabled_reason(pool: &SqlitePool) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT disabled_reason FROM webhook_global WHERE id = 1")
            .fetch_optional(pool)
            .await?
            .flatten(),
    )
}

/// Marks a webhook disabled (the receiver answered 410).
pub async fn disable(
    conn: &mut Conn,
    session_id: &str,
    target: Target,
    reason: &str,
) -> Result<()> {
    match target {
        Target::Session => {
            sqlx::query(
                "UPDATE webhooks SET disabled_reason = ?, updated_at = ? WHERE session_id = ?",
            )
            .bind(reason)
            .bind(now_ms())
            .bind(session_id)
            .execute(&mut *conn)
            .await?;
        }
        Target::Global => {
            sqlx::query("UPDATE webhook_global SET disabled_reason = ?")
                .bind(reason)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// After a restart nobody holds a lease: the database belongs to this one process, so
/// every delivery a dead process was sending is due again right away.
pub async fn release_leases(pool: &SqlitePool) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE webhook_deliveries SET lease_until = NULL
         WHERE status = 'pending' AND lease_until IS NOT NULL",
    )
    .execute(pool)
    .await?
    .rows_affected())
}

pub async fn instance_tag(pool: &SqlitePool) -> Result<String> {
    Ok(
        sqlx::query_scalar("SELECT tag FROM webhook_instance WHERE id = 1")
            .fetch_one(pool)
            .await?,
    )
}

/// Sessions that may have outbox work: a cursor, a webhook or an open delivery.
pub async fn sessions_with_outbox(pool: &SqlitePool) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT session_id FROM webhook_cursors
         UNION SELECT session_id FROM webhooks
         UNION SELECT DISTINCT session_id FROM webhook_deliveries WHERE status = 'pending'",
    )
    .fetch_all(pool)
    .await?)
}

/// Sessions with events after `after_id`, and the highest id seen (the dispatcher's scan for
/// sessions it has not heard of on the bus).
pub async fn sessions_with_events_after(
    pool: &SqlitePool,
    after_id: i64,
) -> Result<(Vec<String>, i64)> {
    let rows = sqlx::query(
        "SELECT session_id, MAX(id) AS max_id FROM events WHERE id > ? GROUP BY session_id",
    )
    .bind(after_id)
    .fetch_all(pool)
    .await?;
    let mut max = after_id;
    let mut sessions = Vec::with_capacity(rows.len());
    for r in rows {
        max = max.max(r.try_get("max_id")?);
        sessions.push(r.try_get("session_id")?);
    }
    Ok((sessions, max))
}

pub async fn max_event_id(pool: &SqlitePool) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
            .fetch_one(pool)
            .await?,
    )
}

/// The webhook that serves a session right now, for turning events into deliveries.
#[derive(Debug, Clone)]
pub struct Route {
    pub target: Target,
    pub events: EventFilter,
}

pub type Conn = sqlx::SqliteConnection;

/// Whether the session has anything for a worker pass: events after its cursor (or after
/// `start_if_new` without one) or a pending delivery. A read, so idle wake-ups do not take
/// the write lock.
pub async fn has_work(pool: &SqlitePool, session_id: &str, start_if_new: i64) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events WHERE session_id = ?1 AND id >
                COALESCE((SELECT last_event_id FROM webhook_cursors WHERE session_id = ?1), ?2))
             OR EXISTS (SELECT 1 FROM webhook_deliveries WHERE session_id = ?1 AND status = 'pending')",
    )
    .bind(session_id)
    .bind(start_if_new)
    .fetch_one(pool)
    .await?)
}

/// Reads the session's events after its cursor (at most `batch`), records a delivery for each
/// one the route wants, and advances the cursor, inside the caller's transaction. Returns how
/// many events were read; fewer than `batch` means the session is caught up.
pub async fn fan_out(
    conn: &mut Conn,
    session_id: &str,
    route: &Route,
    start_if_new: i64,
    batch: i64,
) -> Result<usize> {
    let cursor: Option<i64> =
        sqlx::query_scalar("SELECT last_event_id FROM webhook_cursors WHERE session_id = ?")
            .bind(session_id)
            .fetch_optional(&mut *conn)
            .await?;
    let cursor = cursor.unwrap_or(start_if_new);
    let events: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT id, event, chat_id FROM events WHERE session_id = ? AND id > ? ORDER BY id LIMIT ?",
    )
    .bind(session_id)
    .bind(cursor)
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    let Some(&(last, _, _)) = events.last() else {
        return Ok(0);
    };
    let now = now_ms();
    for (id, kind, chat) in &events {
        if !route.events.accepts(kind) {
            continue;
        }
        sqlx::query(
            "INSERT OR IGNORE INTO webhook_deliveries
               (session_id, event_id, target, chat_key, status, attempts, next_attempt_at, created_at, updated_at)
             VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
        )
        .bind(session_id)
        .bind(id)
        .bind(route.target.as_str())
        .bind(chat.as_deref().unwrap_or(""))
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "INSERT INTO webhook_cursors (session_id, last_event_id) VALUES (?, ?)
         ON CONFLICT (session_id) DO UPDATE SET last_event_id = excluded.last_event_id",
    )
    .bind(session_id)
    .bind(last)
    .execute(&mut *conn)
    .await?;
    Ok(events.len())
}

/// A delivery a worker has leased and must now send.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub event_id: i64,
    pub target: Target,
    pub chat_key: String,
    pub attempts: u32,
    pub body: String,
    /// Whether more deliveries of its chat wait behind it (they go once it is recorded).
    pub more: bool,
}

/// What [`claim`] leased, and what it left.
#[derive(Debug, Default)]
pub struct Claim {
    pub claimed: Vec<Claimed>,
    /// When the earliest head not taken becomes due.
    pub next_due: Option<i64>,
    /// Heads were due but `limit` was reached: a slot that frees up has work at once.
    pub starved: bool,
}

/// Leases up to `limit` deliveries that are due, each the oldest open one of its chat (so a
/// chat's events go out in order), skipping targets in `skip` (disabled webhooks), inside the
/// caller's transaction.
pub async fn claim(
    conn: &mut Conn,
    session_id: &str,
    limit: usize,
    lease_ms: i64,
    skip: &[Target],
) -> Result<Claim> {
    let now = now_ms();
    // The head of each (target, chat) group, and how many are open in the group.
    let rows = sqlx::query(
        "SELECT d.id, d.event_id, d.target, d.chat_key, d.attempts, d.next_attempt_at, d.lease_until, e.body, h.open
         FROM (SELECT MIN(id) AS id, COUNT(*) AS open FROM webhook_deliveries
               WHERE session_id = ? AND status = 'pending' GROUP BY target, chat_key) h
         JOIN webhook_deliveries d ON d.id = h.id
         JOIN events e ON e.id = d.event_id
         ORDER BY d.id",
    )
    .bind(session_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Claim::default();
    for r in rows {
        let target = Target::parse(&r.try_get::<String, _>("target")?);
        if skip.contains(&target) {
            continue;
        }
        let due: i64 = r.try_get("next_attempt_at")?;
        let lease: Option<i64> = r.try_get("lease_until")?;
        let ready_at = due.max(lease.unwrap_or(0));
        if ready_at <= now && out.claimed.len() >= limit {
            out.starved = true;
        }
        if ready_at > now || out.claimed.len() >= limit {
            out.next_due = Some(out.next_due.map_or(ready_at, |w| w.min(ready_at)));
            continue;
        }
        out.claimed.push(Claimed {
            id: r.try_get("id")?,
            event_id: r.try_get("event_id")?,
            target,
            chat_key: r.try_get("chat_key")?,
            attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
            body: r.try_get("body")?,
            more: r.try_get::<i64, _>("open")? > 1,
        });
    }
    for c in &out.claimed {
        sqlx::query("UPDATE webhook_deliveries SET lease_until = ? WHERE id = ?")
            .bind(now + lease_ms)
            .bind(c.id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(out)
}

/// The result of one attempt, as stored.
#[derive(Debug, Clone)]
pub enum Outcome {
    Delivered,
    /// Try again at this time (unix ms).
    RetryAt(i64),
    /// Give up: `failed` (rejected, gone), `dead` (retries exhausted) or `cancelled`.
    Final(&'static str),
}

pub async fn record(
    conn: &mut Conn,
    id: i64,
    outcome: &Outcome,
    status_code: Option<u16>,
    error: Option<&str>,
) -> Result<()> {
    let now = now_ms();
    let (status, next, delivered_at, attempted) = match outcome {
        Outcome::Delivered => ("delivered", now, Some(now), 1),
        Outcome::RetryAt(at) => ("pending", *at, None, 1),
        Outcome::Final("cancelled") => ("cancelled", now, None, 0),
        Outcome::Final(s) => (*s, now, None, 1),
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET status = ?, attempts = attempts + ?, next_attempt_at = ?,
            lease_until = NULL, last_status = COALESCE(?, last_status), last_error = ?,
            updated_at = ?, delivered_at = COALESCE(?, delivered_at)
         WHERE id = ? AND status = 'pending'",
    )
    .bind(status)
    .bind(attempted)
    .bind(next)
    .bind(status_code.map(i64::from))
    .bind(error)
    .bind(now)
    .bind(delivered_at)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A delivery attempt series of one event to one webhook; times in unix seconds.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: i64,
    /// The event's id in the event log.
    pub event_id: i64,
    pub event: String,
    pub chat_id: Option<String>,
    /// The URL it goes to.
    pub target: String,
    /// `pending`, `delivered`, `failed`, `dead` or `cancelled`.
    pub status: String,
    pub attempts: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    /// For pending deliveries only.
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub delivered_at: Option<i64>,
}

macro_rules! delivery_select {
    () => {
        "SELECT d.id, d.event_id, e.event, e.chat_id, d.target, d.status, d.attempts,
    d.last_status, d.last_error, d.next_attempt_at, d.created_at, d.updated_at, d.delivered_at
         FROM webhook_deliveries d JOIN events e ON e.id = d.event_id"
    };
}

fn delivery_from_row(r: &SqliteRow) -> Result<Delivery> {
    let status: String = r.try_get("status")?;
    Ok(Delivery {
        id: r.try_get("id")?,
        event_id: r.try_get("event_id")?,
        event: r.try_get("event")?,
        chat_id: r.try_get("chat_id")?,
        target: r.try_get("target")?,
        next_attempt_at: if status == "pending" {
            // Rounded up: "next try at" must not read as already past.
            Some(-secs(-r.try_get::<i64, _>("next_attempt_at")?))
        } else {
            None
        },
        status,
        attempts: r.try_get("attempts")?,
        last_status_code: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
        created_at: secs(r.try_get("created_at")?),
        updated_at: secs(r.try_get("updated_at")?),
        delivered_at: r.try_get::<Option<i64>, _>("delivered_at")?.map(secs),
    })
}

/// Newest first; `before` pages (a delivery id), `status` filters.
pub async fn list_deliveries(
    pool: &SqlitePool,
    session_id: &str,
    status: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Delivery>> {
    let rows = sqlx::query(concat!(
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
    .fetch_all(pool)
    .await?;
    rows.iter().map(delivery_from_row).collect()
}

pub async fn get_delivery(
    pool: &SqlitePool,
    session_id: &str,
    id: i64,
) -> Result<Option<Delivery>> {
    let row = sqlx::query(concat!(
        delivery_select!(),
        " WHERE d.session_id = ? AND d.id = ?"
    ))
    .bind(session_id)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(delivery_from_row).transpose()
}

/// Makes a delivery due now with a fresh retry schedule, whatever its state (a delivered one
/// is sent again). Returns false when there is no such delivery.
pub async fn retry_delivery(pool: &SqlitePool, session_id: &str, id: i64) -> Result<bool> {
    let now = now_ms();
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
    .execute(pool)
    .await?
    .rows_affected()
        > 0)
}

/// Counts by status, for the webhook view.
pub async fn delivery_counts(pool: &SqlitePool, session_id: &str) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT status, COUNT(*) FROM webhook_deliveries WHERE session_id = ? GROUP BY status",
    )
    .bind(session_id)
    .fetch_all(pool)
    .await?)
}
