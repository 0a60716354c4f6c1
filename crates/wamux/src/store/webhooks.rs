//! The webhook outbox: the session webhooks, the global webhook's state, each session's
//! cursor in the event log and the delivery rows, with the values kept in them (the event
//! filter and the signing secret).
//!
//! The outbox works over `events`: [`fan_out`] turns a session's events after its cursor into
//! deliveries and advances the cursor, [`claim`] leases the due deliveries of each chat and
//! [`record`] stores the answers, all inside the caller's transaction, so a crash between any
//! two statements changes nothing and no answer counts before it is committed. The tables keep
//! unix milliseconds (retry delays can be shorter than a second); what the API shows is in
//! unix seconds, like every other time it shows.

use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore as _;

use super::{Conn, Result, Store, dispatch, now_ms};
use crate::event::EventKind;
use crate::evolution::events::Subscriptions;

/// Which events a webhook receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    All,
    Only(BTreeSet<&'static str>),
}

/// An event name that is not one of ours; its message lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unknown event {0:?}; valid events are: all, {list}", list = valid_names().join(", "))]
    Unknown(String),
    #[error("events must name at least one event; valid events are: all, {list}", list = valid_names().join(", "))]
    Empty,
}

pub fn valid_names() -> Vec<&'static str> {
    EventKind::ALL.iter().map(|k| k.as_str()).collect()
}

impl EventFilter {
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, FilterError> {
        let mut set = BTreeSet::new();
        let mut all = false;
        for name in names {
            if name == "all" {
                all = true;
                continue;
            }
            let kind: EventKind = name
                .parse()
                .map_err(|_| FilterError::Unknown(name.to_owned()))?;
            set.insert(kind.as_str());
        }
        match (all, set.is_empty()) {
            (true, _) => Ok(Self::All),
            (false, true) => Err(FilterError::Empty),
            (false, false) => Ok(Self::Only(set)),
        }
    }

    /// Parses what this program stored; unknown names (from a newer version) are ignored.
    pub fn from_stored(json: &str) -> Self {
        let names: Vec<String> = serde_json::from_str(json).unwrap_or_default();
        if names.iter().any(|n| n == "all") {
            return Self::All;
        }
        Self::Only(
            names
                .iter()
                .filter_map(|n| n.parse::<EventKind>().ok())
                .map(EventKind::as_str)
                .collect(),
        )
    }

    pub fn accepts(&self, event: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(event),
        }
    }

    pub fn names(&self) -> Vec<&'static str> {
        match self {
            Self::All => vec!["all"],
            Self::Only(set) => set.iter().copied().collect(),
        }
    }
}

const SECRET_PREFIX: &str = "whsec_";
/// Generated secrets carry 32 random bytes, the strength of the HMAC-SHA256 key itself.
const GENERATED_LEN: usize = 32;
/// The Standard Webhooks specification asks for 24 to 64 bytes; shorter keys are too easy
/// to guess.
const MIN_LEN: usize = 24;
const MAX_LEN: usize = 64;

/// A webhook signing secret, kept as `whsec_<base64>` (the form Standard Webhooks libraries
/// read); signing with it belongs to the webhook module. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidSecret {
    #[error("secret must be \"whsec_\" followed by base64")]
    NotBase64,
    #[error("secret must decode to {MIN_LEN} to {MAX_LEN} bytes, this one has {0}")]
    Length(usize),
}

impl Secret {
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_LEN];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// Accepts `whsec_<base64>` or the bare base64, like the reference libraries do.
    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .unwrap_or(text.trim());
        let key = B64.decode(encoded).map_err(|_| InvalidSecret::NotBase64)?;
        if !(MIN_LEN..=MAX_LEN).contains(&key.len()) {
            return Err(InvalidSecret::Length(key.len()));
        }
        Ok(Self(key))
    }

    /// Parses a secret this program stored itself; the published test vector's key is shorter
    /// than we require of users, so this skips the length rule.
    pub fn from_stored(text: &str) -> Result<Self, InvalidSecret> {
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        B64.decode(encoded)
            .map(Self)
            .map_err(|_| InvalidSecret::NotBase64)
    }

    /// The `whsec_...` form shown to the user once and stored.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", B64.encode(&self.0))
    }

    /// The HMAC key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A stored secret that does not decode is a corrupt row.
fn stored_secret(text: &str) -> Result<Secret> {
    Secret::from_stored(text).map_err(|e| sqlx::Error::Decode(Box::new(e)).into())
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

/// The tables keep unix milliseconds (retry times need them); the API speaks unix seconds,
/// like every other timestamp it shows.
fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// How a webhook's deliveries are written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Format {
    /// Our body, `{"event","sessionId","timestamp","data"}`.
    #[default]
    Wamux,
    /// Evolution API v2's envelope and payloads ([`crate::evolution`]).
    Evolution(EvolutionHook),
}

/// An Evolution-format webhook's options, as Evolution names them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EvolutionHook {
    pub events: Subscriptions,
    /// `byEvents`: each event goes to `url/<event-name>` (`.../messages-upsert`).
    pub by_events: bool,
    /// `base64`: received files ride along inline in `data.message.base64`.
    pub base64: bool,
}

impl Format {
    pub fn as_str(&self) -> &'static str {
        match self {
            Format::Wamux => "wamux",
            Format::Evolution(_) => "evolution",
        }
    }
}

/// A session's own webhook as stored.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub session_id: String,
    pub url: String,
    /// Our events it receives (for the Evolution format, those its subscriptions are made of).
    pub events: EventFilter,
    pub format: Format,
    /// False: kept, but nothing is sent and events pass it by (Evolution's `enabled: false`).
    pub enabled: bool,
    pub headers: Vec<(String, String)>,
    pub secret: Secret,
    pub disabled_reason: Option<String>,
    /// Unix seconds, as every time the API shows (the table keeps milliseconds).
    pub created_at: i64,
    pub updated_at: i64,
}

/// A `webhooks` row as read.
#[derive(sqlx::FromRow)]
pub(crate) struct WebhookRow {
    pub session_id: String,
    pub url: String,
    /// JSON array of event names; `["all"]` for everything.
    pub events: String,
    /// JSON object of header names to values.
    pub headers: String,
    pub secret: String,
    pub disabled_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// `wamux` or `evolution` (whose `events` are Evolution subscription names).
    pub format: String,
    pub by_events: bool,
    pub base64: bool,
    pub enabled: bool,
}

impl WebhookRow {
    fn decode(self) -> Result<Webhook> {
        let headers: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&self.headers)?;
        let (events, format) = if self.format == "evolution" {
            let subs = Subscriptions::from_stored(&self.events);
            (
                EventFilter::Only(subs.kinds()),
                Format::Evolution(EvolutionHook {
                    events: subs,
                    by_events: self.by_events,
                    base64: self.base64,
                }),
            )
        } else {
            (EventFilter::from_stored(&self.events), Format::Wamux)
        };
        Ok(Webhook {
            session_id: self.session_id,
            url: self.url,
            events,
            format,
            enabled: self.enabled,
            headers: headers
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
                .collect(),
            secret: stored_secret(&self.secret)?,
            disabled_reason: self.disabled_reason,
            created_at: secs(self.created_at),
            updated_at: secs(self.updated_at),
        })
    }
}

pub async fn get_webhook(store: &Store, session_id: &str) -> Result<Option<Webhook>> {
    let row: Option<WebhookRow> = dispatch!(store, webhooks::get_webhook(session_id))?;
    row.map(WebhookRow::decode).transpose()
}

/// What a caller asks to store; the secret is kept when `None` and the webhook exists.
#[derive(Debug)]
pub struct NewWebhook<'a> {
    pub url: &'a str,
    /// For the wamux format; an Evolution one subscribes in its [`EvolutionHook`].
    pub events: &'a EventFilter,
    pub format: &'a Format,
    pub enabled: bool,
    pub headers: &'a [(String, String)],
    pub secret: Option<&'a Secret>,
}

/// A webhook's columns to write.
pub(crate) struct WebhookWrite<'a> {
    pub session_id: &'a str,
    pub url: &'a str,
    pub events: String,
    pub headers: String,
    pub secret: String,
    pub now: i64,
    pub format: &'static str,
    pub by_events: bool,
    pub base64: bool,
    pub enabled: bool,
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
    let existing: Option<String> = dispatch!(conn &mut tx.conn(), webhooks::secret_of(session_id))?;
    let (secret, generated) = match (new.secret, existing) {
        (Some(s), _) => (s.clone(), None),
        (None, Some(stored)) => (stored_secret(&stored)?, None),
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
    let (events, by_events, base64) = match new.format {
        Format::Wamux => (new.events.names(), false, false),
        Format::Evolution(h) => (h.events.stored_names(), h.by_events, h.base64),
    };
    let write = WebhookWrite {
        session_id,
        url: new.url,
        events: serde_json::to_string(&events)?,
        headers: serde_json::Value::Object(headers).to_string(),
        secret: secret.expose(),
        now: now_ms(),
        format: new.format.as_str(),
        by_events,
        base64,
        enabled: new.enabled,
    };
    let row: WebhookRow = dispatch!(conn &mut tx.conn(), webhooks::upsert_webhook(&write))?;
    dispatch!(conn &mut tx.conn(), webhooks::start_cursor(session_id))?;
    let webhook = row.decode()?;
    tx.commit().await?;
    Ok((webhook, generated))
}

/// Removes a session's webhook and cancels its undelivered deliveries. Without a global
/// webhook the cursor goes too, so a webhook set later starts at the then current end.
pub async fn delete_webhook(store: &Store, session_id: &str, global_active: bool) -> Result<bool> {
    let mut tx = store.begin().await?;
    let deleted: bool = dispatch!(conn &mut tx.conn(), webhooks::delete_webhook(session_id))?;
    if deleted {
        dispatch!(conn &mut tx.conn(), webhooks::cancel_pending(session_id, now_ms()))?;
        if !global_active {
            dispatch!(conn &mut tx.conn(), webhooks::delete_cursor(session_id))?;
        }
    }
    tx.commit().await?;
    Ok(deleted)
}

/// The global webhook as configured, for [`sync_global`].
#[derive(Debug, Clone, Copy)]
pub struct GlobalSettings<'a> {
    pub url: &'a str,
    /// When absent, the stored one is kept (or one is generated the first time).
    pub secret: Option<&'a Secret>,
}

/// The global webhook's stored state.
#[derive(Debug, Clone)]
pub struct GlobalState {
    pub start_event_id: i64,
    pub secret: Secret,
    pub disabled_reason: Option<String>,
}

/// The `webhook_global` row as read.
#[derive(sqlx::FromRow)]
pub(crate) struct GlobalRow {
    pub url: String,
    pub start_event_id: i64,
    pub secret: String,
    pub disabled_reason: Option<String>,
}

/// Brings `webhook_global` in line with config at startup. Returns the state and, the first
/// time without a configured secret, the generated one (the caller shows it once).
pub async fn sync_global(
    store: &Store,
    cfg: Option<GlobalSettings<'_>>,
) -> Result<Option<(GlobalState, Option<Secret>)>> {
    let mut tx = store.begin().await?;
    let Some(cfg) = cfg else {
        // Forget it, and the cursors that only it used, so enabling it later starts afresh.
        dispatch!(conn &mut tx.conn(), webhooks::forget_global())?;
        tx.commit().await?;
        return Ok(None);
    };
    let row: Option<GlobalRow> = dispatch!(conn &mut tx.conn(), webhooks::global_row())?;
    let mut generated = None;
    let state = match row {
        None => {
            let secret = match cfg.secret {
                Some(s) => s.clone(),
                None => {
                    let s = Secret::generate();
                    generated = Some(s.clone());
                    s
                }
            };
            // It starts at the current end of the log.
            let start: i64 = dispatch!(
                conn &mut tx.conn(),
                webhooks::insert_global(cfg.url, &secret.expose())
            )?;
            GlobalState {
                start_event_id: start,
                secret,
                disabled_reason: None,
            }
        }
        Some(r) => {
            let secret = match cfg.secret {
                Some(s) => s.clone(),
                None => stored_secret(&r.secret)?,
            };
            // A new URL is a new receiver: a 410 from the old one no longer applies.
            let disabled_reason = if r.url == cfg.url {
                r.disabled_reason
            } else {
                None
            };
            dispatch!(
                conn &mut tx.conn(),
                webhooks::update_global(cfg.url, &secret.expose(), disabled_reason.as_deref())
            )?;
            GlobalState {
                start_event_id: r.start_event_id,
                secret,
                disabled_reason,
            }
        }
    };
    tx.commit().await?;
    Ok(Some((state, generated)))
}

pub async fn global_disabled_reason(store: &Store) -> Result<Option<String>> {
    dispatch!(store, webhooks::global_disabled_reason())
}

/// Marks a webhook disabled (the receiver answered 410).
pub async fn disable(
    conn: &mut Conn<'_>,
    session_id: &str,
    target: Target,
    reason: &str,
) -> Result<()> {
    match target {
        Target::Session => {
            dispatch!(conn conn, webhooks::disable_session(session_id, reason, now_ms()))
        }
        Target::Global => dispatch!(conn conn, webhooks::disable_global(reason)),
    }
}

/// After a restart nobody holds a lease: the database belongs to this one process, so
/// every delivery a dead process was sending is due again right away.
pub async fn release_leases(store: &Store) -> Result<u64> {
    let mut tx = store.begin().await?;
    let released: u64 = dispatch!(conn &mut tx.conn(), webhooks::release_leases())?;
    tx.commit().await?;
    Ok(released)
}

/// A random tag of this database, part of every `webhook-id`.
pub async fn instance_tag(store: &Store) -> Result<String> {
    dispatch!(store, webhooks::instance_tag())
}

/// Sessions that may have outbox work: a cursor, a webhook or an open delivery.
pub async fn sessions_with_outbox(store: &Store) -> Result<Vec<String>> {
    dispatch!(store, webhooks::sessions_with_outbox())
}

/// Sessions with events after `after_id`, and the highest id seen (the dispatcher's scan for
/// sessions it has not heard of on the bus).
pub async fn sessions_with_events_after(
    store: &Store,
    after_id: i64,
) -> Result<(Vec<String>, i64)> {
    let rows: Vec<(String, i64)> = dispatch!(store, webhooks::last_event_ids(after_id))?;
    let max = rows.iter().map(|(_, id)| *id).fold(after_id, i64::max);
    Ok((rows.into_iter().map(|(s, _)| s).collect(), max))
}

pub async fn max_event_id(store: &Store) -> Result<i64> {
    dispatch!(store, webhooks::max_event_id())
}

/// Deliveries waiting to be sent (pending or retrying), for the metrics.
pub async fn outbox_depth(store: &Store) -> Result<i64> {
    dispatch!(store, webhooks::outbox_depth())
}

/// Whether the session has anything for a worker pass: events after its cursor (or after
/// `start_if_new` without one) or a pending delivery. A read, so idle wake-ups do not take
/// the writer.
pub async fn has_work(store: &Store, session_id: &str, start_if_new: i64) -> Result<bool> {
    dispatch!(store, webhooks::has_work(session_id, start_if_new))
}

/// The webhook that serves a session right now, for turning events into deliveries.
#[derive(Debug, Clone)]
pub struct Route {
    pub target: Target,
    pub events: EventFilter,
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

/// One session's route, for [`fan_out`]'s statements.
pub(crate) struct RouteRow<'a> {
    pub session_id: &'a str,
    pub target: &'static str,
    /// `None`: every event.
    pub events: Option<Vec<&'static str>>,
    /// The cursor when the session has none.
    pub start: i64,
}

/// Reads the events after each session's cursor, records a delivery for each one its route
/// wants and advances the cursor, for all the sessions at once, inside the caller's
/// transaction, in a statement or two however many sessions and events.
pub async fn fan_out(conn: &mut Conn<'_>, plans: &[PassPlan<'_>]) -> Result<()> {
    let routes: Vec<RouteRow<'_>> = plans
        .iter()
        .filter_map(|p| {
            let route = p.route?;
            Some(RouteRow {
                session_id: p.session_id,
                target: route.target.as_str(),
                events: match &route.events {
                    EventFilter::All => None,
                    filter => Some(filter.names()),
                },
                start: p.start_if_new,
            })
        })
        .collect();
    if routes.is_empty() {
        return Ok(());
    }
    dispatch!(conn conn, webhooks::fan_out(&routes, now_ms()))
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

/// One of the first open deliveries of a (session, target, chat), with its position among
/// them and how many are open: rows come ordered by session, target, chat and position.
#[derive(sqlx::FromRow)]
pub(crate) struct OpenRow {
    pub id: i64,
    pub session_id: String,
    pub event_id: i64,
    pub target: String,
    pub chat_key: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub lease_until: Option<i64>,
    pub pos: i64,
    pub open: i64,
    /// The event's stored body: what is sent.
    pub body: String,
}

/// For each plan, leases the due deliveries of up to its `limit` chats, at most `chain` per
/// chat, oldest first (the oldest open one of a chat is its head, and a chat's events go out
/// in order), skipping the targets in its `skip`, inside the caller's transaction. The claims
/// come back in the order of `plans`.
pub async fn claim(
    conn: &mut Conn<'_>,
    plans: &[PassPlan<'_>],
    chain: usize,
    lease_ms: i64,
) -> Result<Vec<Claim>> {
    let mut out: Vec<Claim> = plans.iter().map(|_| Claim::default()).collect();
    if plans.is_empty() {
        return Ok(out);
    }
    let index: HashMap<&str, usize> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| (p.session_id, i))
        .collect();
    let sessions: Vec<&str> = plans.iter().map(|p| p.session_id).collect();
    let now = now_ms();
    let per_chat = i64::try_from(chain.max(1)).unwrap_or(i64::MAX);
    let rows: Vec<OpenRow> = dispatch!(
        conn conn.reborrow(),
        webhooks::open_deliveries(&sessions, per_chat)
    )?;
    let mut leased = Vec::new();
    // Whether the chat being read is being taken: set by its head, cleared by a delivery
    // that is not due (its followers wait for the next pass).
    let mut taking = false;
    for r in rows {
        let Some(&i) = index.get(r.session_id.as_str()) else {
            continue;
        };
        let (plan, out) = (&plans[i], &mut out[i]);
        let target = Target::parse(&r.target);
        if plan.skip.contains(&target) {
            continue;
        }
        let ready_at = r.next_attempt_at.max(r.lease_until.unwrap_or(0));
        if r.pos == 1 {
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
                open: usize::try_from(r.open).unwrap_or(usize::MAX),
            });
        } else if !taking || ready_at > now {
            taking = false;
            continue;
        }
        leased.push(r.id);
        out.chains
            .last_mut()
            .expect("a chain was started by its head")
            .deliveries
            .push(Claimed {
                id: r.id,
                event_id: r.event_id,
                target,
                chat_key: r.chat_key,
                attempts: u32::try_from(r.attempts).unwrap_or(0),
                body: r.body,
            });
    }
    if !leased.is_empty() {
        dispatch!(conn conn, webhooks::lease(&leased, now + lease_ms))?;
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

/// An answer as the columns it changes.
pub(crate) struct AnswerRow<'a> {
    pub id: i64,
    pub status: &'static str,
    /// The next attempt's time; `None` keeps it.
    pub next: Option<i64>,
    pub delivered_at: Option<i64>,
    /// 1 when an attempt was made.
    pub attempted: i64,
    pub code: Option<i64>,
    pub error: Option<&'a str>,
    /// Only the lease goes: `last_error` and `updated_at` stay.
    pub released: bool,
}

/// Stores the answers, in one statement. A delivery no longer pending (retried or
/// cancelled meanwhile by hand) keeps its state.
pub async fn record(conn: &mut Conn<'_>, answers: &[Answer<'_>]) -> Result<()> {
    if answers.is_empty() {
        return Ok(());
    }
    let now = now_ms();
    let rows: Vec<AnswerRow<'_>> = answers
        .iter()
        .map(|a| {
            let (status, next, delivered_at, attempted) = match a.outcome {
                Outcome::Delivered => ("delivered", Some(now), Some(now), 1),
                Outcome::RetryAt(at) => ("pending", Some(*at), None, 1),
                Outcome::Final("cancelled") => ("cancelled", Some(now), None, 0),
                Outcome::Final(s) => (*s, Some(now), None, 1),
                Outcome::Released => ("pending", None, None, 0),
            };
            AnswerRow {
                id: a.id,
                status,
                next,
                delivered_at,
                attempted,
                code: a.status_code.map(i64::from),
                error: a.error,
                released: matches!(a.outcome, Outcome::Released),
            }
        })
        .collect();
    dispatch!(conn conn, webhooks::record(&rows, now))
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

/// A delivery joined with its event, as read.
#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    pub id: i64,
    pub event_id: i64,
    pub event: String,
    pub chat_id: Option<String>,
    pub target: String,
    pub status: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub delivered_at: Option<i64>,
}

impl From<DeliveryRow> for Delivery {
    fn from(r: DeliveryRow) -> Self {
        Delivery {
            id: r.id,
            event_id: r.event_id,
            event: r.event,
            chat_id: r.chat_id,
            target: r.target,
            // Rounded up: "next try at" must not read as already past.
            next_attempt_at: (r.status == "pending").then(|| -secs(-r.next_attempt_at)),
            status: r.status,
            attempts: r.attempts,
            last_status_code: r.last_status,
            last_error: r.last_error,
            created_at: secs(r.created_at),
            updated_at: secs(r.updated_at),
            delivered_at: r.delivered_at.map(secs),
        }
    }
}

/// Newest first; `before` pages (a delivery id), `status` filters.
pub async fn list_deliveries(
    store: &Store,
    session_id: &str,
    status: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Delivery>> {
    let rows: Vec<DeliveryRow> = dispatch!(
        store,
        webhooks::list_deliveries(session_id, status, before, limit)
    )?;
    Ok(rows.into_iter().map(Delivery::from).collect())
}

pub async fn get_delivery(store: &Store, session_id: &str, id: i64) -> Result<Option<Delivery>> {
    let row: Option<DeliveryRow> = dispatch!(store, webhooks::get_delivery(session_id, id))?;
    Ok(row.map(Delivery::from))
}

/// Makes a delivery due now with a fresh retry schedule, whatever its state (a delivered one
/// is sent again). Returns false when there is no such delivery.
pub async fn retry_delivery(store: &Store, session_id: &str, id: i64) -> Result<bool> {
    let mut tx = store.begin().await?;
    let found: bool = dispatch!(
        conn &mut tx.conn(),
        webhooks::retry_delivery(session_id, id, now_ms())
    )?;
    tx.commit().await?;
    Ok(found)
}

/// Counts by status, for the webhook view.
pub async fn delivery_counts(store: &Store, session_id: &str) -> Result<Vec<(String, i64)>> {
    dispatch!(store, webhooks::delivery_counts(session_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Tx, events, testing};

    async fn event(tx: &mut Tx, session: &str, chat: &str) -> i64 {
        events::append(
            &mut tx.conn(),
            EventKind::MessageReceived,
            session,
            Some(chat),
            serde_json::json!({}),
        )
        .await
        .unwrap()
        .id
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

    /// [`claim`] in a transaction of its own.
    async fn claim_now(store: &Store, plans: &[PassPlan<'_>], chain: usize) -> Vec<Claim> {
        let mut tx = store.begin().await.unwrap();
        let claims = claim(&mut tx.conn(), plans, chain, 60_000).await.unwrap();
        tx.commit().await.unwrap();
        claims
    }

    /// [`record`] in a transaction of its own.
    async fn record_now(store: &Store, answers: &[Answer<'_>]) {
        let mut tx = store.begin().await.unwrap();
        record(&mut tx.conn(), answers).await.unwrap();
        tx.commit().await.unwrap();
    }

    fn answer(id: i64, outcome: &Outcome) -> Answer<'_> {
        Answer {
            id,
            outcome,
            status_code: None,
            error: None,
        }
    }

    /// A chat's due deliveries are leased together, oldest first and at most `chain` of them;
    /// a leased or not-yet-due head holds its chat; `limit` counts chats; a released delivery
    /// is due again with nothing else changed.
    #[tokio::test]
    async fn claim_leases_chains_of_due_deliveries_per_chat() {
        for db in testing::databases().await {
            let store = db.store().await;
            let route = Route {
                target: Target::Session,
                events: EventFilter::All,
            };
            let mut tx = store.begin().await.unwrap();
            let mut a = Vec::new();
            for _ in 0..3 {
                a.push(event(&mut tx, "s1", "chat-a").await);
            }
            let b = event(&mut tx, "s1", "chat-b").await;
            let other = event(&mut tx, "s2", "chat-a").await;
            let plans = [plan("s1", &route, 1), plan("s2", &route, 4)];
            fan_out(&mut tx.conn(), &plans).await.unwrap();
            tx.commit().await.unwrap();

            let claims = claim_now(&store, &plans, 2).await;
            assert_eq!(
                ids(&claims[0]),
                vec![vec![a[0], a[1]]],
                "{}",
                store.engine()
            );
            assert_eq!(claims[0].chains[0].open, 3);
            assert!(
                claims[0].starved,
                "chat-b was due but the one slot was taken"
            );
            assert_eq!(ids(&claims[1]), vec![vec![other]]);

            // chat-a is leased: only chat-b can go now.
            let plans = [plan("s1", &route, 4)];
            let again = claim_now(&store, &plans, 2).await;
            assert_eq!(ids(&again[0]), vec![vec![b]]);

            // The head went through, the one after it was not tried: it leads the chat now,
            // untouched, and the third follows it.
            let chain = &claims[0].chains[0].deliveries;
            let before = get_delivery(&store, "s1", chain[1].id)
                .await
                .unwrap()
                .unwrap();
            record_now(
                &store,
                &[
                    Answer {
                        status_code: Some(200),
                        ..answer(chain[0].id, &Outcome::Delivered)
                    },
                    answer(chain[1].id, &Outcome::Released),
                ],
            )
            .await;
            let delivered = get_delivery(&store, "s1", chain[0].id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (delivered.status.as_str(), delivered.attempts),
                ("delivered", 1)
            );
            assert_eq!(delivered.last_status_code, Some(200));
            let released = get_delivery(&store, "s1", chain[1].id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (released.status.as_str(), released.attempts),
                ("pending", 0)
            );
            assert_eq!(released.updated_at, before.updated_at);
            assert_eq!(released.last_error, None);
            let next = claim_now(&store, &plans, 8).await;
            assert_eq!(ids(&next[0]), vec![vec![a[1], a[2]]]);

            // A head to retry later holds its chat, and says when it is due.
            let head = next[0].chains[0].deliveries[0].id;
            let at = now_ms() + 60_000;
            record_now(
                &store,
                &[
                    Answer {
                        id: head,
                        outcome: &Outcome::RetryAt(at),
                        status_code: Some(500),
                        error: Some("HTTP 500"),
                    },
                    answer(next[0].chains[0].deliveries[1].id, &Outcome::Released),
                ],
            )
            .await;
            let held = claim_now(&store, &plans, 8).await;
            assert!(held[0].chains.is_empty(), "{:?}", ids(&held[0]));
            // (chat-b's lease, taken above, ends first.)
            assert!(
                held[0].next_due.is_some_and(|due| due <= at),
                "{:?}",
                held[0].next_due
            );
            let retrying = get_delivery(&store, "s1", head).await.unwrap().unwrap();
            assert_eq!(retrying.attempts, 1);
            assert_eq!(retrying.last_error.as_deref(), Some("HTTP 500"));
            assert_eq!(retrying.next_attempt_at, Some(-secs(-at)));
            db.drop().await;
        }
    }

    /// The filter picks the events; the cursor moves past every event read, wanted or not, so
    /// nothing is fanned out twice.
    #[tokio::test]
    async fn fan_out_follows_the_filter_and_advances_the_cursor() {
        for db in testing::databases().await {
            let store = db.store().await;
            let route = Route {
                target: Target::Global,
                events: EventFilter::parse(["message-received"]).unwrap(),
            };
            let mut tx = store.begin().await.unwrap();
            let wanted = event(&mut tx, "s1", "c").await;
            let status = events::append(
                &mut tx.conn(),
                EventKind::SessionStatus,
                "s1",
                None,
                serde_json::json!({}),
            )
            .await
            .unwrap()
            .id;
            let plans = [plan("s1", &route, 4)];
            fan_out(&mut tx.conn(), &plans).await.unwrap();
            tx.commit().await.unwrap();
            assert!(has_work(&store, "s1", 0).await.unwrap());
            let mut tx = store.begin().await.unwrap();
            fan_out(&mut tx.conn(), &plans).await.unwrap();
            tx.commit().await.unwrap();

            let all = list_deliveries(&store, "s1", None, None, 10).await.unwrap();
            assert_eq!(
                all.iter()
                    .map(|d| (d.event_id, d.target.as_str()))
                    .collect::<Vec<_>>(),
                vec![(wanted, "global")],
                "{}",
                store.engine()
            );
            assert_eq!(all[0].chat_id.as_deref(), Some("c"));
            assert_eq!(outbox_depth(&store).await.unwrap(), 1);
            let claims = claim_now(&store, &plans, 4).await;
            record_now(
                &store,
                &[answer(
                    claims[0].chains[0].deliveries[0].id,
                    &Outcome::Delivered,
                )],
            )
            .await;
            assert!(!has_work(&store, "s1", 0).await.unwrap());
            assert_eq!(outbox_depth(&store).await.unwrap(), 0);
            assert!(!has_work(&store, "s2", 0).await.unwrap());
            let (sessions, max) = sessions_with_events_after(&store, 0).await.unwrap();
            assert_eq!((sessions, max), (vec!["s1".to_owned()], status));
            assert_eq!(max_event_id(&store).await.unwrap(), status);
            db.drop().await;
        }
    }

    /// Setting, reading, disabling, re-enabling and removing a session's webhook, the global
    /// webhook's state across restarts, and retries by hand.
    #[tokio::test]
    async fn webhooks_are_set_synced_and_removed() {
        for db in testing::databases().await {
            let store = db.store().await;
            let events_filter = EventFilter::parse(["qr", "message-received"]).unwrap();
            let headers = vec![("X-Token".to_owned(), "t".to_owned())];
            let new = || NewWebhook {
                url: "https://example.com/a",
                events: &events_filter,
                format: &Format::Wamux,
                enabled: true,
                headers: &headers,
                secret: None,
            };
            let (hook, generated) = set_webhook(&store, "s1", new()).await.unwrap();
            let generated = generated.expect("a first webhook gets a secret");
            assert_eq!(hook.secret, generated);
            assert_eq!(hook.events, events_filter);
            assert_eq!(hook.headers, headers);
            assert_eq!((hook.format.clone(), hook.enabled), (Format::Wamux, true));
            assert_eq!(sessions_with_outbox(&store).await.unwrap(), ["s1"]);

            // An Evolution webhook keeps its subscriptions and options, and receives the
            // events of ours they are made of.
            let evo = Format::Evolution(EvolutionHook {
                events: Subscriptions::parse(["MESSAGES_UPDATE"]).unwrap(),
                by_events: true,
                base64: false,
            });
            let (hook, _) = set_webhook(
                &store,
                "s2",
                NewWebhook {
                    format: &evo,
                    enabled: false,
                    ..new()
                },
            )
            .await
            .unwrap();
            let again = get_webhook(&store, "s2").await.unwrap().unwrap();
            assert_eq!((again.format, again.enabled), (evo, false));
            assert!(hook.events.accepts("message-delivered") && !hook.events.accepts("qr"));
            assert!(delete_webhook(&store, "s2", false).await.unwrap());

            let mut tx = store.begin().await.unwrap();
            disable(&mut tx.conn(), "s1", Target::Session, "gone")
                .await
                .unwrap();
            tx.commit().await.unwrap();
            let stored = get_webhook(&store, "s1").await.unwrap().unwrap();
            assert_eq!(stored.disabled_reason.as_deref(), Some("gone"));
            // Set again: the secret stays, the webhook is enabled again.
            let (again, none) = set_webhook(&store, "s1", new()).await.unwrap();
            assert!(none.is_none(), "{}", store.engine());
            assert_eq!(again.secret, generated);
            assert_eq!(again.disabled_reason, None);

            let mut tx = store.begin().await.unwrap();
            let e = event(&mut tx, "s1", "c").await;
            let route = Route {
                target: Target::Session,
                events: EventFilter::All,
            };
            fan_out(&mut tx.conn(), &[plan("s1", &route, 4)])
                .await
                .unwrap();
            tx.commit().await.unwrap();
            let counts = delivery_counts(&store, "s1").await.unwrap();
            assert_eq!(counts, vec![("pending".to_owned(), 1)]);
            assert!(delete_webhook(&store, "s1", false).await.unwrap());
            assert!(!delete_webhook(&store, "s1", false).await.unwrap());
            assert!(get_webhook(&store, "s1").await.unwrap().is_none());
            let cancelled = &list_deliveries(&store, "s1", Some("cancelled"), None, 10)
                .await
                .unwrap()[0];
            assert_eq!(cancelled.event_id, e);
            assert_eq!(cancelled.next_attempt_at, None);
            assert_eq!(cancelled.last_error.as_deref(), Some("webhook removed"));
            assert!(retry_delivery(&store, "s1", cancelled.id).await.unwrap());
            assert!(
                !retry_delivery(&store, "s1", cancelled.id + 1)
                    .await
                    .unwrap()
            );
            let retried = get_delivery(&store, "s1", cancelled.id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!((retried.status.as_str(), retried.attempts), ("pending", 0));
            assert_eq!(release_leases(&store).await.unwrap(), 0);

            // The global webhook: created at the end of the log, its secret kept, a 410 kept
            // for the same URL and forgotten for a new one.
            let settings = |url| GlobalSettings { url, secret: None };
            let (state, secret) = sync_global(&store, Some(settings("https://example.com/g")))
                .await
                .unwrap()
                .unwrap();
            let secret = secret.expect("generated the first time");
            assert_eq!((state.start_event_id, &state.secret), (e, &secret));
            let mut tx = store.begin().await.unwrap();
            disable(&mut tx.conn(), "", Target::Global, "410")
                .await
                .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(
                global_disabled_reason(&store).await.unwrap().as_deref(),
                Some("410")
            );
            let (same, none) = sync_global(&store, Some(settings("https://example.com/g")))
                .await
                .unwrap()
                .unwrap();
            assert!(none.is_none());
            assert_eq!(
                (same.secret, same.disabled_reason.as_deref()),
                (secret, Some("410"))
            );
            let (moved, _) = sync_global(&store, Some(settings("https://example.com/h")))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(moved.disabled_reason, None);
            assert_eq!(global_disabled_reason(&store).await.unwrap(), None);
            assert!(sync_global(&store, None).await.unwrap().is_none());
            assert!(!instance_tag(&store).await.unwrap().is_empty());
            db.drop().await;
        }
    }

    #[test]
    fn filters_parse_and_list_valid_names() {
        assert_eq!(EventFilter::parse(["all"]).unwrap(), EventFilter::All);
        let f = EventFilter::parse(["message-received", "qr"]).unwrap();
        assert!(f.accepts("qr") && !f.accepts("message-from-me"));
        let err = EventFilter::parse(["message"]).unwrap_err().to_string();
        assert!(err.contains("message-received") && err.contains("session-status"));
        assert_eq!(EventFilter::parse([]), Err(FilterError::Empty));
        assert_eq!(
            EventFilter::from_stored(r#"["qr","newer-event"]"#).names(),
            ["qr"]
        );
    }

    #[test]
    fn generated_secrets_round_trip_and_stay_hidden() {
        let secret = Secret::generate();
        let text = secret.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(Secret::parse(&text).unwrap(), secret);
        assert!(!format!("{secret:?}").contains(&text[6..]));
    }

    #[test]
    fn rejects_bad_secrets() {
        assert_eq!(
            Secret::parse("whsec_not base64!"),
            Err(InvalidSecret::NotBase64)
        );
        assert_eq!(Secret::parse("whsec_AAAA"), Err(InvalidSecret::Length(3)));
    }
}
