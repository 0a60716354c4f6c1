//! One session's delivery worker.
//!
//! Each pass is one write transaction: record the answers of finished attempts, turn new
//! events into deliveries, lease what is due. The sends run outside it, concurrently (one per
//! chat at most), and report back to the next pass. Under load a pass handles many events and
//! answers at once, so the database sees a few transactions per batch, not per event.
//!
//! A successful answer that nothing waits on (no later delivery of its chat, no due work
//! short of a free slot) is not recorded by a pass of its own: it rides along with the pass
//! the next event brings, or is recorded after [`RECORD_LINGER`]. That halves the write
//! transactions at a steady trickle of events. Nothing is lost by the wait: until recorded,
//! the delivery stays leased, and after a crash it is sent again, as any delivery whose
//! answer was not recorded.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::Webhooks;
use super::client::Request;
use super::db::{self, Claimed, Outcome, Route, Target, Webhook, now_ms};
use super::schedule::{Verdict, verdict};
use super::signature::Secret;

/// Events read from the log per statement.
const FAN_OUT_BATCH: i64 = 512;

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
    // Held well past the timeout so a lease never expires under a live attempt.
    let lease_ms = (inner.config.timeout * 2 + Duration::from_secs(1)).as_millis() as i64;
    let mut in_flight: JoinSet<Done> = JoinSet::new();
    let mut done: Vec<Done> = Vec::new();
    let mut cache: Option<Cached> = None;
    // What the last pass left: when a delivery becomes due, and whether due work waits
    // for a free slot.
    let mut next_due: Option<i64> = None;
    let mut starved = false;
    // Set while answers wait to be recorded: the latest time to do it.
    let mut record_by: Option<tokio::time::Instant> = None;
    let mut run_pass = true;
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
                lease_ms,
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
            () = notify.notified() => run_pass = true,
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

/// Keeps a finished attempt for the next pass; true when that pass should run now (its
/// answer holds up other work, or is a failure worth recording at once).
fn collect(
    session: &str,
    r: Result<Done, tokio::task::JoinError>,
    done: &mut Vec<Done>,
    starved: bool,
) -> bool {
    match r {
        Ok(d) => {
            let urgent = d.more || starved || !matches!(d.outcome, Outcome::Delivered);
            done.push(d);
            urgent
        }
        // The delivery stays leased and is sent again when the lease expires.
        Err(e) => {
            tracing::error!(session, error = %e, "webhook send task failed");
            false
        }
    }
}

async fn record_all(hooks: &Webhooks, session: &str, done: &mut Vec<Done>) -> anyhow::Result<()> {
    let mut tx = hooks.inner.store.begin().await?;
    record_done(hooks, session, &mut tx, done).await?;
    tx.commit().await?;
    Ok(())
}

/// Records finished attempts; a 410 disables its webhook.
async fn record_done(
    hooks: &Webhooks,
    session: &str,
    conn: &mut db::Conn,
    done: &mut Vec<Done>,
) -> anyhow::Result<()> {
    for d in done.drain(..) {
        if d.status == Some(410) {
            let reason = format!(
                "the receiver answered 410 Gone at {} (unix seconds); set the webhook again to re-enable it",
                now_ms() / 1000
            );
            db::disable(conn, session, d.target, &reason).await?;
            hooks.inner.generation.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                session,
                target = d.target.as_str(),
                "webhook disabled: the receiver answered 410 Gone"
            );
        }
        db::record(conn, d.id, &d.outcome, d.status, d.error.as_deref()).await?;
    }
    Ok(())
}

/// One pass. Returns what the claim left (when the next delivery becomes due).
async fn pass(
    hooks: &Webhooks,
    session: &str,
    cache: &mut Option<Cached>,
    done: &mut Vec<Done>,
    free: usize,
    lease_ms: i64,
    in_flight: &mut JoinSet<Done>,
) -> anyhow::Result<db::Claim> {
    let inner = &hooks.inner;
    let pool = inner.store.pool();
    let generation = inner.generation.load(Ordering::Relaxed);
    if cache.as_ref().is_none_or(|c| c.generation != generation) {
        *cache = Some(Cached {
            generation,
            own: db::get_webhook(pool, session).await?,
            global_disabled: inner.global.is_some()
                && db::global_disabled_reason(pool).await?.is_some(),
        });
    }
    let c = cache.as_ref().expect("just loaded");
    let (route, start_if_new) = match (&c.own, &inner.global) {
        (Some(w), _) => (
            w.disabled_reason.is_none().then(|| Route {
                target: Target::Session,
                events: w.events.clone(),
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

    if done.is_empty() && !db::has_work(pool, session, start_if_new).await? {
        return Ok(db::Claim::default());
    }
    let mut tx = inner.store.begin().await?;
    if inner.generation.load(Ordering::Relaxed) != generation {
        // A webhook changed while this pass waited for the writer: events committed since
        // must follow the new filter, so run again at once with it.
        tx.rollback().await?;
        return Ok(db::Claim {
            next_due: Some(now_ms()),
            ..Default::default()
        });
    }
    record_done(hooks, session, &mut tx, done).await?;
    if let Some(route) = &route {
        while db::fan_out(&mut tx, session, route, start_if_new, FAN_OUT_BATCH).await?
            == FAN_OUT_BATCH as usize
        {}
    }
    let mut claim = if free > 0 {
        db::claim(&mut tx, session, free, lease_ms, &skip).await?
    } else {
        // Nothing can be sent now; a slot that frees up brings the next pass.
        db::Claim {
            starved: true,
            ..Default::default()
        }
    };
    let mut sends = Vec::with_capacity(claim.claimed.len());
    for cl in std::mem::take(&mut claim.claimed) {
        let target = match cl.target {
            Target::Session => c
                .own
                .as_ref()
                .map(|w| (w.url.clone(), w.headers.clone(), w.secret.clone())),
            Target::Global => inner
                .global
                .as_ref()
                .map(|(g, _, secret)| (g.url.clone(), Vec::new(), secret.clone())),
        };
        match target {
            Some(t) => sends.push((cl, t)),
            // Its webhook is gone: nothing to send it to.
            None => {
                db::record(
                    &mut tx,
                    cl.id,
                    &Outcome::Final("cancelled"),
                    None,
                    Some("webhook removed"),
                )
                .await?
            }
        }
    }
    tx.commit().await?;
    for (cl, (url, headers, secret)) in sends {
        let hooks = hooks.clone();
        let session = session.to_owned();
        in_flight.spawn(async move { send(&hooks, &session, cl, url, headers, secret).await });
    }
    Ok(claim)
}

/// Sends one leased delivery and decides what its answer means.
async fn send(
    hooks: &Webhooks,
    session: &str,
    c: Claimed,
    url: String,
    headers: Vec<(String, String)>,
    secret: Secret,
) -> Done {
    let inner = &hooks.inner;
    let msg_id = hooks.message_id(c.event_id);
    // The operator chose the global URL, so it may be private; API-set ones are vetted.
    let sender = match c.target {
        Target::Session => &inner.sender,
        Target::Global => &inner.operator_sender,
    };
    let answer = sender
        .send(Request {
            url: &url,
            msg_id: &msg_id,
            body: c.body.as_bytes(),
            secret: &secret,
            headers: &headers,
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
        let host = reqwest::Url::parse(&url)
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
        more: c.more,
        outcome,
        status: answer.status,
        error: answer.error,
    }
}
