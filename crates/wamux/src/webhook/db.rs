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

/// What one session asks of a shared pass: turn its new events into deliveries along `route`
/// (none: its webhook is disabled or gone) and lease up to `limit` due deliveries, skipping
/// the targets in `skip` (disabled webhooks).
#[derive(Debug)]
pub struct PassPlan<'a> {
    pub session_id: &'a str,
    pub route: Option<&'a Route>,
    /// Where the cursor starts when the session has none yet.
    pub start_if_new: i64,
    pub limit: usize,
    pub skip: &'a [Target],
}

/// Reads the events after each session's cursor, records a delivery for each one its route
/// wants and advances the cursor, for all the sessions at once, inside the caller's
/// transaction. Two statements however many sessions and events.
pub async fn fan_out(conn: &mut Conn, plans: &[PassPlan<'_>]) -> Result<()> {
    let routes: Vec<serde_json::Value> = plans
        .iter()
        .filter_map(|p| {
            let route = p.route?;
            Some(serde_json::json!({
                "s": p.session_id,
                "t": route.target.as_str(),
                // null: every event.
                "k": match &route.events {
                    EventFilter::All => None,
                    filter => Some(filter.names()),
                },
                "st": p.start_if_new,
            }))
        })
        .collect();
    if routes.is_empty() {
        return Ok(());
    }
    let routes = serde_json::Value::from(routes).to_string();
    // Each route with the id its session's events are read after.
    const ROUTES: &str = "WITH r AS (
            SELECT json_extract(value, '$.s') AS s, json_extract(value, '$.t') AS t,
                   json_extract(value, '$.k') AS k, json_extract(value, '$.st') AS st
            FROM json_each(?1)),
        b AS (SELECT r.s, r.t, r.k, COALESCE(c.last_event_id, r.st) AS after
              FROM r LEFT JOIN webhook_cursors c ON c.session_id = r.s)";
    let now = now_ms();
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

/// A delivery a worker has leased and must now send.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: i64,
    pub event_id: i64,
    pub target: Target,
    pub chat_key: String,
    pub attempts: u32,
    pub body: String,
}

/// Deliveries of one chat leased together, oldest first: each is sent once the one before it
/// has an answer that lets the chat move on.
#[derive(Debug, Clone)]
pub struct Chain {
    pub deliveries: Vec<Claimed>,
    /// How many deliveries of the chat were open, the chain's included.
    pub open: usize,
}

/// What [`claim`] leased for one session, and what it left.
#[derive(Debug, Default)]
pub struct Claim {
    pub chains: Vec<Chain>,
    /// When the earliest chat not taken becomes due.
    pub next_due: Option<i64>,
    /// Chats were due but `limit` was reached: a slot that frees up has work at once.
    pub starved: bool,
}

/// For each plan, leases the due deliveries of up to its `limit` chats, at most `chain` per
/// chat, oldest first (the oldest open one of a chat is its head, and a chat's events go out
/// in order), skipping the targets in its `skip`, inside the caller's transaction. The claims
/// come back in the order of `plans`.
pub async fn claim(
    conn: &mut Conn,
    plans: &[PassPlan<'_>],
    chain: usize,
    lease_ms: i64,
) -> Result<Vec<Claim>> {
    let mut out: Vec<Claim> = plans.iter().map(|_| Claim::default()).collect();
    let index: std::collections::HashMap<&str, usize> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| (p.session_id, i))
        .collect();
    let sessions =
        serde_json::Value::from(plans.iter().map(|p| p.session_id).collect::<Vec<_>>()).to_string();
    let now = now_ms();
    // The first `chain` open deliveries of each (session, target, chat), in order, and how
    // many are open in the chat.
    let rows = sqlx::query(
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
    .bind(&sessions)
    .bind(i64::try_from(chain.max(1)).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    let mut leased = Vec::new();
    // Whether the chat being read is being taken: set by its head, cleared by a delivery
    // that is not due (its followers wait for the next pass).
    let mut taking = false;
    for r in rows {
        let session: String = r.try_get("session_id")?;
        let Some(&i) = index.get(session.as_str()) else {
            continue;
        };
        let (plan, out) = (&plans[i], &mut out[i]);
        let target = Target::parse(&r.try_get::<String, _>("target")?);
        if plan.skip.contains(&target) {
            continue;
        }
        let due: i64 = r.try_get("next_attempt_at")?;
        let lease: Option<i64> = r.try_get("lease_until")?;
        let ready_at = due.max(lease.unwrap_or(0));
        if r.try_get::<i64, _>("pos")? == 1 {
            taking = false;
            if ready_at <= now && out.chains.len() >= plan.limit {
                out.starved = true;
            }
            if ready_at > now || out.chains.len() >= plan.limit {
                out.next_due = Some(out.next_due.map_or(ready_at, |w| w.min(ready_at)));
                continue;
            }
            taking = true;
            out.chains.push(Chain {
                deliveries: Vec::new(),
                open: usize::try_from(r.try_get::<i64, _>("open")?).unwrap_or(usize::MAX),
            });
        } else if !taking || ready_at > now {
            taking = false;
            continue;
        }
        let id: i64 = r.try_get("id")?;
        leased.push(id);
        out.chains
            .last_mut()
            .expect("a chain was started by its head")
            .deliveries
            .push(Claimed {
                id,
                event_id: r.try_get("event_id")?,
                target,
                chat_key: r.try_get("chat_key")?,
                attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
                body: r.try_get("body")?,
            });
    }
    if !leased.is_empty() {
        sqlx::query(
            "UPDATE webhook_deliveries SET lease_until = ?
             WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(now + lease_ms)
        .bind(serde_json::Value::from(leased).to_string())
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
    /// Not attempted after all (the delivery before it in its chain did not go through): the
    /// lease is dropped and nothing else changes.
    Released,
}

/// A finished attempt (or a delivery given up without one) to store.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    pub id: i64,
    pub outcome: &'a Outcome,
    pub status_code: Option<u16>,
    pub error: Option<&'a str>,
}

/// Stores the answers, in one statement. A delivery no longer pending (retried or
/// cancelled meanwhile by hand) keeps its state.
pub async fn record(conn: &mut Conn, answers: &[Answer<'_>]) -> Result<()> {
    if answers.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let rows: Vec<serde_json::Value> = answers
        .iter()
        .map(|a| {
            let (status, next, delivered_at, attempted) = match a.outcome {
                Outcome::Delivered => ("delivered", Some(now), Some(now), 1),
                Outcome::RetryAt(at) => ("pending", Some(*at), None, 1),
                Outcome::Final("cancelled") => ("cancelled", Some(now), None, 0),
                Outcome::Final(s) => (*s, Some(now), None, 1),
                Outcome::Released => ("pending", None, None, 0),
            };
            serde_json::json!({
                "id": a.id, "status": status, "next": next, "delivered_at": delivered_at,
                "attempted": attempted, "code": a.status_code, "error": a.error,
                "released": matches!(a.outcome, Outcome::Released),
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn event(conn: &mut Conn, session: &str, chat: &str) -> i64 {
        sqlx::query_scalar(
            "INSERT INTO events (session_id, event, chat_id, body, created_at)
             VALUES (?, 'message-received', ?, '{}', 0) RETURNING id",
        )
        .bind(session)
        .bind(chat)
        .fetch_one(&mut *conn)
        .await
        .unwrap()
    }

    fn plan<'a>(session: &'a str, route: &'a Route, limit: usize) -> PassPlan<'a> {
        PassPlan {
            session_id: session,
            route: Some(route),
            start_if_new: 0,
            limit,
            skip: &[],
        }
    }

    fn ids(claim: &Claim) -> Vec<Vec<i64>> {
        claim
            .chains
            .iter()
            .map(|c| c.deliveries.iter().map(|d| d.event_id).collect())
            .collect()
    }

    /// A chat's due deliveries are leased together, oldest first and at most `chain` of them;
    /// a leased or not-yet-due head holds its chat; `limit` counts chats; a released delivery
    /// is due again with nothing else changed.
    #[tokio::test]
    async fn claim_leases_chains_of_due_deliveries_per_chat() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("wamux.db")).await.unwrap();
        let mut conn = store.pool().acquire().await.unwrap();
        let route = Route {
            target: Target::Session,
            events: EventFilter::All,
        };
        let mut a = Vec::new();
        for _ in 0..3 {
            a.push(event(&mut conn, "s1", "chat-a").await);
        }
        let b = event(&mut conn, "s1", "chat-b").await;
        let other = event(&mut conn, "s2", "chat-a").await;
        let plans = [plan("s1", &route, 1), plan("s2", &route, 4)];
        fan_out(&mut conn, &plans).await.unwrap();

        let claims = claim(&mut conn, &plans, 2, 60_000).await.unwrap();
        assert_eq!(ids(&claims[0]), vec![vec![a[0], a[1]]]);
        assert_eq!(claims[0].chains[0].open, 3);
        assert!(
            claims[0].starved,
            "chat-b was due but the one slot was taken"
        );
        assert_eq!(ids(&claims[1]), vec![vec![other]]);

        // chat-a is leased: only chat-b can go now.
        let plans = [plan("s1", &route, 4)];
        let again = claim(&mut conn, &plans, 2, 60_000).await.unwrap();
        assert_eq!(ids(&again[0]), vec![vec![b]]);

        // The head went through, the one after it was not tried: it leads the chat now,
        // untouched, and the third follows it.
        let chain = &claims[0].chains[0].deliveries;
        record(
            &mut conn,
            &[
                Answer {
                    id: chain[0].id,
                    outcome: &Outcome::Delivered,
                    status_code: Some(200),
                    error: None,
                },
                Answer {
                    id: chain[1].id,
                    outcome: &Outcome::Released,
                    status_code: None,
                    error: None,
                },
            ],
        )
        .await
        .unwrap();
        let (status, attempts, lease): (String, i64, Option<i64>) = sqlx::query_as(
            "SELECT status, attempts, lease_until FROM webhook_deliveries WHERE id = ?",
        )
        .bind(chain[1].id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!((status.as_str(), attempts, lease), ("pending", 0, None));
        let next = claim(&mut conn, &plans, 8, 60_000).await.unwrap();
        assert_eq!(ids(&next[0]), vec![vec![a[1], a[2]]]);

        // A head to retry later holds its chat, and says when it is due.
        let head = next[0].chains[0].deliveries[0].id;
        let at = now_ms() + 60_000;
        record(
            &mut conn,
            &[
                Answer {
                    id: head,
                    outcome: &Outcome::RetryAt(at),
                    status_code: Some(500),
                    error: Some("HTTP 500"),
                },
                Answer {
                    id: next[0].chains[0].deliveries[1].id,
                    outcome: &Outcome::Released,
                    status_code: None,
                    error: None,
                },
            ],
        )
        .await
        .unwrap();
        let held = claim(&mut conn, &plans, 8, 60_000).await.unwrap();
        assert!(held[0].chains.is_empty(), "{:?}", ids(&held[0]));
        // (chat-b's lease, taken above, ends first.)
        assert!(
            held[0].next_due.is_some_and(|due| due <= at),
            "{:?}",
            held[0].next_due
        );
    }
}
