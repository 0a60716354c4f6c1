//! The delivery workers: one per session, and one shared pass for them all.
//!
//! A session's worker keeps its attempts in flight (at most one per chat, at most the
//! configured concurrency) and decides when the session needs a pass: new events, finished
//! attempts to record, a retry coming due. The pass itself is shared: the passes every
//! worker asks for while one runs are merged into the next, one write transaction that
//! records the answers of finished attempts, turns new events into deliveries and leases
//! what is due, for all those sessions in a handful of statements. The database then sees a
//! few statements per batch of events across the gateway, not a dozen per event and
//! session, which is what lets the gateway's single writer keep up with thousands of events
//! a second. The sends run outside it, so a slow receiver of one session never holds up the
//! pass, nor another session's deliveries.
//!
//! A successful answer that nothing waits on (no later delivery of its chat, no due work
//! short of a free slot) is not recorded by a pass of its own: it rides along with the pass
//! the next event brings, or is recorded after [`RECORD_LINGER`]. Nothing is lost by the
//! wait: until recorded, the delivery stays leased, and after a crash it is sent again, as
//! any delivery whose answer was not recorded.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinSet;

use super::Webhooks;
use super::client::Request;
use super::evolution::{self, Owner, Skip};
use super::schedule::{Verdict, verdict};
use super::signature::Secret;
use crate::store::webhooks::{
    self, Answer, Chain, Claim, Claimed, EventFilter, Format, Outcome, PassPlan, Route, Target,
    Webhook,
};
use crate::store::{Conn, now_ms};

/// At most this many deliveries of one chat are leased together (see [`send_chain`]).
const CHAIN: usize = 64;

/// At most this many sessions' passes share one transaction.
const PASS_BATCH: usize = 512;

/// The longest a successful answer waits to be recorded along with other work.
const RECORD_LINGER: Duration = Duration::from_millis(100);

/// A finished attempt, to be recorded by the next pass.
#[derive(Debug)]
struct Done {
    id: i64,
    target: Target,
    /// More deliveries of its chat wait for this one to be recorded.
    more: bool,
    outcome: Outcome,
    status: Option<u16>,
    error: Option<String>,
}

/// The session's webhook configuration, reloaded when any webhook changes.
struct Cached {
    generation: u64,
    own: Option<Webhook>,
    global_disabled: bool,
}

pub(super) async fn run(hooks: Webhooks, session: String, notify: Arc<Notify>) {
    let inner = &hooks.inner;
    let concurrency = inner.config.concurrency.max(1);
    let mut in_flight: JoinSet<Vec<Done>> = JoinSet::new();
    let mut done: Vec<Done> = Vec::new();
    let mut cache: Option<Cached> = None;
    // What the last pass left: when a delivery becomes due, and whether due work waits
    // for a free slot.
    let mut next_due: Option<i64> = None;
    let mut starved = false;
    // Set while answers wait to be recorded: the latest time to do it.
    let mut record_by: Option<tokio::time::Instant> = None;
    let mut run_pass = true;
    // Set when the worker was told there is new work (an event, a changed webhook): its pass
    // then skips the read that checks for work first.
    let mut told = true;
    tracing::debug!(session = %session, "webhook worker started");

    loop {
        if inner.cancel.is_cancelled() {
            break;
        }
        while let Some(r) = in_flight.try_join_next() {
            run_pass |= collect(&session, r, &mut done, starved);
        }
        if run_pass {
            run_pass = false;
            record_by = None;
            let free = concurrency.saturating_sub(in_flight.len());
            // A panic in one pass (a bug) is logged and the worker goes on after the poll
            // interval, rather than leaving the session without deliveries.
            let result = std::panic::AssertUnwindSafe(pass(
                &hooks,
                &session,
                &mut cache,
                &mut done,
                free,
                std::mem::take(&mut told),
                &mut in_flight,
            ))
            .catch_unwind()
            .await;
            (next_due, starved) = match result {
                Ok(Ok(left)) => (left.next_due, left.starved),
                Ok(Err(e)) => {
                    tracing::warn!(session = %session, error = %e, "webhook worker pass failed; will retry");
                    (None, false)
                }
                Err(_) => {
                    tracing::error!(session = %session, "webhook worker pass panicked; will retry");
                    cache = None;
                    (None, false)
                }
            };
        }
        if !done.is_empty() && record_by.is_none() {
            record_by = Some(tokio::time::Instant::now() + RECORD_LINGER);
        }

        let poll = inner.config.poll_interval;
        let mut wake = match next_due {
            // When every slot is busy, due work waits for a free slot, not for the clock.
            _ if in_flight.len() >= concurrency => poll,
            Some(at) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)).min(poll),
            None => poll,
        };
        if let Some(at) = record_by {
            wake = wake.min(at.saturating_duration_since(tokio::time::Instant::now()));
        }
        tokio::select! {
            () = inner.cancel.cancelled() => break,
            () = notify.notified() => (run_pass, told) = (true, true),
            Some(r) = in_flight.join_next(), if !in_flight.is_empty() => {
                run_pass |= collect(&session, r, &mut done, starved);
            }
            () = tokio::time::sleep(wake) => run_pass = true,
        }
    }

    // Let attempts in flight finish within the timeout and record their answers; an aborted
    // one keeps its lease and is sent again after the restart.
    let drain = async {
        while let Some(r) = in_flight.join_next().await {
            // Recorded below in any case.
            collect(&session, r, &mut done, false);
        }
    };
    if tokio::time::timeout(inner.config.timeout, drain)
        .await
        .is_err()
    {
        in_flight.abort_all();
    }
    if !done.is_empty()
        && let Err(e) = record_all(&hooks, &session, &mut done).await
    {
        tracing::warn!(session = %session, error = %e, "could not record the last webhook answers; they will be sent again");
    }
    tracing::debug!(session = %session, "webhook worker stopped");
}

/// Keeps a chain's finished attempts for the next pass; true when that pass should run now
/// (an answer holds up other work, or is a failure worth recording at once).
fn collect(
    session: &str,
    r: Result<Vec<Done>, tokio::task::JoinError>,
    done: &mut Vec<Done>,
    starved: bool,
) -> bool {
    match r {
        Ok(chain) => {
            let urgent = starved
                || chain
                    .iter()
                    .any(|d| d.more || !matches!(d.outcome, Outcome::Delivered));
            done.extend(chain);
            urgent
        }
        // The deliveries stay leased and are sent again when the lease expires.
        Err(e) => {
            tracing::error!(session, error = %e, "webhook send task failed");
            false
        }
    }
}

async fn record_all(hooks: &Webhooks, session: &str, done: &mut Vec<Done>) -> anyhow::Result<()> {
    let mut tx = hooks.inner.store.begin().await?;
    disable_gone(hooks, session, &mut tx.conn(), done).await?;
    webhooks::record(&mut tx.conn(), &answers(done)).await?;
    tx.commit().await?;
    done.clear();
    Ok(())
}

/// The answers to store for finished attempts.
fn answers(done: &[Done]) -> Vec<Answer<'_>> {
    done.iter()
        .map(|d| Answer {
            id: d.id,
            outcome: &d.outcome,
            status_code: d.status,
            error: d.error.as_deref(),
        })
        .collect()
}

/// Disables the webhooks whose receiver answered 410.
async fn disable_gone(
    hooks: &Webhooks,
    session: &str,
    conn: &mut Conn<'_>,
    done: &[Done],
) -> crate::store::Result<()> {
    for d in done.iter().filter(|d| d.status == Some(410)) {
        let reason = format!(
            "the receiver answered 410 Gone at {} (unix seconds); set the webhook again to re-enable it",
            now_ms() / 1000
        );
        webhooks::disable(conn, session, d.target, &reason).await?;
        hooks.inner.generation.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            session,
            target = d.target.as_str(),
            "webhook disabled: the receiver answered 410 Gone"
        );
    }
    Ok(())
}

/// What a session's worker asks of the shared pass.
pub(super) struct PassRequest {
    session: String,
    /// The webhook configuration the route and skip list were computed with.
    generation: u64,
    route: Option<Route>,
    start_if_new: i64,
    skip: Vec<Target>,
    /// Free send slots: how many deliveries to lease at most.
    free: usize,
    done: Vec<Done>,
    /// `None` when the pass failed (it logs why); the worker tries again later.
    answer: oneshot::Sender<Option<Claim>>,
}

/// Runs the passes the workers ask for, merging those that queued meanwhile into one. Each
/// runs through the store's group commit ([`Store::write`](crate::store::Store::write)), in
/// the same transaction as the inbound messages committed meanwhile. Ends at shutdown.
pub(super) async fn run_passes(hooks: Webhooks, mut queue: mpsc::UnboundedReceiver<PassRequest>) {
    let mut batch = Vec::with_capacity(PASS_BATCH);
    loop {
        tokio::select! {
            () = hooks.inner.cancel.cancelled() => break,
            n = queue.recv_many(&mut batch, PASS_BATCH) => if n == 0 { break },
        }
        let requests = std::mem::take(&mut batch);
        let sessions = requests.len();
        let this = hooks.clone();
        let pass = hooks.inner.store.write(move |mut conn| {
            Box::pin(async move {
                let claims = shared_pass(&this, &mut conn, &requests).await?;
                Ok((requests, claims))
            })
        });
        // A panic in a pass (a bug) is logged and the workers ask again later, rather than
        // leaving every session without deliveries. A failed pass drops its requests: each
        // worker hears it as a failure and tries again after its poll interval.
        match std::panic::AssertUnwindSafe(pass).catch_unwind().await {
            Ok(Ok((requests, claims))) => {
                for (r, claim) in requests.into_iter().zip(claims) {
                    // A worker that stopped meanwhile no longer waits for it.
                    let _ = r.answer.send(Some(claim));
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(sessions, error = %e, "webhook pass failed; will retry");
            }
            Err(_) => tracing::error!(sessions, "webhook pass panicked; will retry"),
        }
    }
}

/// One shared pass, inside the caller's transaction: records the answers, fans out the new
/// events and leases due deliveries for every request. The claims come back in the order of
/// `requests`.
async fn shared_pass(
    hooks: &Webhooks,
    conn: &mut Conn<'_>,
    requests: &[PassRequest],
) -> crate::store::Result<Vec<Claim>> {
    let inner = &hooks.inner;
    // Held well past the timeout so a lease never expires under a live attempt.
    let lease_ms = (inner.config.timeout * 2 + Duration::from_secs(1)).as_millis() as i64;
    for r in requests {
        disable_gone(hooks, &r.session, conn, &r.done).await?;
    }
    let answers: Vec<Answer<'_>> = requests.iter().flat_map(|r| answers(&r.done)).collect();
    webhooks::record(conn, &answers).await?;
    // A webhook that changed since a worker looked (a 410 just now, or an API call while
    // the request queued) gets no events or leases along its old route: the worker runs
    // again at once with the new one. The answers above are recorded either way.
    let generation = inner.generation.load(Ordering::Relaxed);
    let current: Vec<usize> = (0..requests.len())
        .filter(|&i| requests[i].generation == generation)
        .collect();
    let plans: Vec<PassPlan<'_>> = current
        .iter()
        .map(|&i| {
            let r = &requests[i];
            PassPlan {
                session_id: &r.session,
                route: r.route.as_ref(),
                start_if_new: r.start_if_new,
                limit: r.free,
                skip: &r.skip,
            }
        })
        .collect();
    webhooks::fan_out(conn, &plans).await?;
    let claimed = webhooks::claim(conn, &plans, CHAIN, lease_ms).await?;
    let mut claims: Vec<Claim> = requests
        .iter()
        .map(|_| Claim {
            next_due: Some(now_ms()),
            ..Default::default()
        })
        .collect();
    for (i, claim) in current.into_iter().zip(claimed) {
        claims[i] = claim;
    }
    Ok(claims)
}

/// Asks for a pass for this session (see [`run_passes`]) and starts the sends it leased.
/// Returns what the claim left (when the next delivery becomes due). Unless `told` (the
/// worker was told of new work) or answers wait to be recorded, it first checks with a read
/// that there is anything to do.
async fn pass(
    hooks: &Webhooks,
    session: &str,
    cache: &mut Option<Cached>,
    done: &mut Vec<Done>,
    free: usize,
    told: bool,
    in_flight: &mut JoinSet<Vec<Done>>,
) -> anyhow::Result<Claim> {
    let inner = &hooks.inner;
    let store = &inner.store;
    let generation = inner.generation.load(Ordering::Relaxed);
    if cache.as_ref().is_none_or(|c| c.generation != generation) {
        *cache = Some(Cached {
            generation,
            own: webhooks::get_webhook(store, session).await?,
            global_disabled: inner.global.is_some()
                && webhooks::global_disabled_reason(store).await?.is_some(),
        });
    }
    let c = cache.as_ref().expect("just loaded");
    let (route, start_if_new) = match (&c.own, &inner.global) {
        (Some(w), _) => (
            w.disabled_reason.is_none().then(|| Route {
                target: Target::Session,
                // A webhook switched off lets its events pass by: nothing piles up for it.
                events: if w.enabled {
                    w.events.clone()
                } else {
                    EventFilter::Only(Default::default())
                },
            }),
            // The cursor is created with the webhook; this is only a fallback.
            i64::MAX,
        ),
        (None, Some((g, start, _))) => (
            (!c.global_disabled).then(|| Route {
                target: Target::Global,
                events: g.events.clone(),
            }),
            *start,
        ),
        (None, None) => (None, i64::MAX),
    };
    let mut skip = Vec::new();
    if c.own.as_ref().is_some_and(|w| w.disabled_reason.is_some()) {
        skip.push(Target::Session);
    }
    if c.global_disabled {
        skip.push(Target::Global);
    }

    if !told && done.is_empty() && !webhooks::has_work(store, session, start_if_new).await? {
        return Ok(Claim::default());
    }
    let (answer, answered) = oneshot::channel();
    inner
        .passes
        .send(PassRequest {
            session: session.to_owned(),
            generation: c.generation,
            route,
            start_if_new,
            skip,
            free,
            done: std::mem::take(done),
            answer,
        })
        .map_err(|_| anyhow::anyhow!("webhook passes have stopped"))?;
    // The shared pass logs its own failure; the worker tries again after the poll interval,
    // and what it leased before stays leased until then (sent again if the lease runs out).
    let Ok(Some(mut claim)) = answered.await else {
        return Ok(Claim::default());
    };
    for chain in std::mem::take(&mut claim.chains) {
        let Some(first) = chain.deliveries.first() else {
            continue;
        };
        let target = match first.target {
            Target::Session => c.own.as_ref().map(|w| Endpoint {
                url: w.url.clone(),
                headers: w.headers.clone(),
                secret: w.secret.clone(),
                format: w.format.clone(),
            }),
            Target::Global => inner.global.as_ref().map(|(g, _, secret)| Endpoint {
                url: g.url.clone(),
                headers: Vec::new(),
                secret: secret.clone(),
                format: Format::Wamux,
            }),
        };
        match target {
            Some(endpoint) => {
                let hooks = hooks.clone();
                let session = session.to_owned();
                in_flight
                    .spawn(async move { send_chain(&hooks, &session, chain, &endpoint).await });
            }
            // Its webhook is gone: nothing to send them to. Recorded by the next pass, at once.
            None => {
                done.extend(chain.deliveries.into_iter().map(|d| Done {
                    id: d.id,
                    target: d.target,
                    more: false,
                    outcome: Outcome::Final("cancelled"),
                    status: None,
                    error: Some("webhook removed".to_owned()),
                }));
                claim.next_due = Some(now_ms());
            }
        }
    }
    Ok(claim)
}

/// Sends a chat's leased deliveries in order, each once the one before it went through (was
/// delivered, or failed for good). A delivery to retry holds the chat: the ones after it are
/// released, as are those the lease no longer covers.
async fn send_chain(hooks: &Webhooks, session: &str, chain: Chain, to: &Endpoint) -> Vec<Done> {
    let started = tokio::time::Instant::now();
    // The Evolution format names the linked account in every delivery.
    let owner = match &to.format {
        Format::Wamux => None,
        Format::Evolution(_) => Some(owner_of(&hooks.inner.store, session).await),
    };
    // The lease runs twice the timeout: a send started within the first timeout ends
    // (answered or timed out) before it expires.
    let budget = hooks.inner.config.timeout;
    let mut out = Vec::with_capacity(chain.deliveries.len());
    let mut go_on = true;
    for (k, c) in chain.deliveries.into_iter().enumerate() {
        // Deliveries of the chat still open behind this one.
        let behind = chain.open.saturating_sub(k + 1) > 0;
        if !go_on || started.elapsed() >= budget {
            go_on = false;
            out.push(Done {
                id: c.id,
                target: c.target,
                more: true,
                outcome: Outcome::Released,
                status: None,
                error: None,
            });
            continue;
        }
        let d = send(hooks, session, c, to, owner.as_ref(), behind).await;
        go_on =
            matches!(d.outcome, Outcome::Delivered | Outcome::Final(_)) && d.status != Some(410);
        out.push(d);
    }
    out
}

/// Where and how a chain's deliveries go.
struct Endpoint {
    url: String,
    headers: Vec<(String, String)>,
    secret: Secret,
    format: Format,
}

/// The linked account of `session`, for the Evolution format; unknown when it cannot be read
/// (the delivery goes without it rather than waiting).
async fn owner_of(store: &crate::store::Store, session: &str) -> Owner {
    match crate::store::sessions::get(store, session).await {
        Ok(Some(row)) => Owner {
            jid: row.jid,
            push_name: row.push_name,
        },
        Ok(None) => Owner::default(),
        Err(e) => {
            tracing::warn!(session, error = %e, "cannot read the session's account for an Evolution webhook");
            Owner::default()
        }
    }
}

/// Sends one leased delivery and decides what its answer means.
async fn send(
    hooks: &Webhooks,
    session: &str,
    c: Claimed,
    to: &Endpoint,
    owner: Option<&Owner>,
    more: bool,
) -> Done {
    let inner = &hooks.inner;
    let msg_id = hooks.message_id(c.event_id);
    // The operator chose the global URL, so it may be private; API-set ones are vetted.
    let sender = match c.target {
        Target::Session => &inner.sender,
        Target::Global => &inner.operator_sender,
    };
    let rendered;
    let evolution_headers;
    let (url, body, headers) = match &to.format {
        Format::Wamux => (to.url.as_str(), c.body.as_str(), to.headers.as_slice()),
        Format::Evolution(hook) => {
            let owner = owner.cloned().unwrap_or_default();
            match evolution::render(
                inner.evolution.get(),
                hook,
                session,
                &owner,
                &to.url,
                &c.body,
            )
            .await
            {
                Ok(r) => rendered = r,
                // Nothing of it to send: final, and the chat moves on.
                Err(skip) => {
                    return Done {
                        id: c.id,
                        target: c.target,
                        more,
                        outcome: Outcome::Final("cancelled"),
                        status: None,
                        error: Some(match skip {
                            Skip::NoEquivalent => "Evolution has no event for it".to_owned(),
                            Skip::NotSubscribed(e) => format!("not subscribed to {e}"),
                        }),
                    };
                }
            }
            evolution_headers = evolution::headers(&to.headers);
            (
                rendered.url.as_str(),
                rendered.body.as_str(),
                evolution_headers.as_slice(),
            )
        }
    };
    let answer = sender
        .send(Request {
            url,
            msg_id: &msg_id,
            body: body.as_bytes(),
            secret: &to.secret,
            headers,
        })
        .await;
    let attempts = c.attempts + 1;
    let outcome = match verdict(answer.status) {
        Verdict::Delivered => Outcome::Delivered,
        Verdict::Retry => match inner.config.retry_schedule.next_delay(attempts) {
            Some(delay) => {
                let delay = answer.retry_after.map_or(delay, |ra| ra.max(delay));
                Outcome::RetryAt(now_ms() + delay.as_millis() as i64)
            }
            None => Outcome::Final("dead"),
        },
        Verdict::Reject | Verdict::Gone => Outcome::Final("failed"),
    };
    crate::metrics::webhook_attempt(
        match &outcome {
            Outcome::Delivered => "delivered",
            Outcome::RetryAt(_) => "retry",
            Outcome::Final(s) => s,
            Outcome::Released => "released",
        },
        answer.elapsed,
    );
    if let Outcome::Delivered = outcome {
        tracing::debug!(
            session,
            delivery = c.id,
            event = c.event_id,
            status = answer.status,
            elapsed_ms = answer.elapsed.as_millis() as u64,
            "webhook delivered"
        );
    } else {
        // The URL's host only: paths and queries can carry tokens.
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned));
        tracing::info!(
            session, delivery = c.id, event = c.event_id, chat = %c.chat_key, attempt = attempts,
            host = host.as_deref(), status = answer.status, error = answer.error.as_deref(),
            outcome = ?outcome, "webhook attempt failed"
        );
    }
    Done {
        id: c.id,
        target: c.target,
        more,
        outcome,
        status: answer.status,
        error: answer.error,
    }
}
