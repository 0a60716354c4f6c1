//! One session's delivery worker: fan out new events, lease what is due, send, record.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::Webhooks;
use super::client::{Answer, Request};
use super::db::{self, Claimed, Outcome, Target, now_ms};
use super::schedule::{Verdict, verdict};

/// Events read from the log per transaction.
const FAN_OUT_BATCH: i64 = 256;

pub(super) async fn run(hooks: Webhooks, session: String, notify: Arc<Notify>) {
    let inner = &hooks.inner;
    let concurrency = inner.config.concurrency.max(1);
    // Held a little past the timeout so a lease never expires under a live attempt.
    let lease_ms = (inner.config.timeout * 2 + Duration::from_secs(1)).as_millis() as i64;
    let mut in_flight: JoinSet<()> = JoinSet::new();
    tracing::debug!(session = %session, "webhook worker started");

    loop {
        if inner.cancel.is_cancelled() {
            break;
        }
        let mut wake_at: Option<i64> = None;
        // A panic in one pass (a bug) is logged and the worker goes on after the poll
        // interval, rather than leaving the session without deliveries.
        let pass = std::panic::AssertUnwindSafe(pass(
            &hooks,
            &session,
            concurrency.saturating_sub(in_flight.len()),
            lease_ms,
            &mut in_flight,
        ))
        .catch_unwind()
        .await;
        match pass {
            Ok(Ok(next)) => wake_at = next,
            Ok(Err(e)) => {
                tracing::warn!(session = %session, error = %e, "webhook worker pass failed; will retry")
            }
            Err(_) => {
                tracing::error!(session = %session, "webhook worker pass panicked; will retry")
            }
        }

        let poll = inner.config.poll_interval;
        let sleep = match wake_at {
            // When every slot is busy, due work waits for a free slot, not for the clock.
            _ if in_flight.len() >= concurrency => poll,
            Some(at) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)).min(poll),
            None => poll,
        };
        tokio::select! {
            () = inner.cancel.cancelled() => break,
            () = notify.notified() => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }

    // Let attempts in flight finish within the timeout; an aborted one is sent again later.
    let drain = async { while in_flight.join_next().await.is_some() {} };
    if tokio::time::timeout(inner.config.timeout, drain)
        .await
        .is_err()
    {
        in_flight.abort_all();
    }
    tracing::debug!(session = %session, "webhook worker stopped");
}

/// One pass: fan out, claim, start sends. Returns when the next head becomes due.
async fn pass(
    hooks: &Webhooks,
    session: &str,
    free: usize,
    lease_ms: i64,
    in_flight: &mut JoinSet<()>,
) -> anyhow::Result<Option<i64>> {
    let inner = &hooks.inner;
    let global = inner.global.as_ref().map(|(g, start, _)| (g, *start));
    while db::fan_out(&inner.store, session, global, FAN_OUT_BATCH).await? == FAN_OUT_BATCH as usize
    {
    }

    let mut skip = Vec::new();
    let own = db::get_webhook(inner.store.pool(), session).await?;
    if own.as_ref().is_some_and(|w| w.disabled_reason.is_some()) {
        skip.push(Target::Session);
    }
    if inner.global.is_some()
        && db::global_disabled_reason(inner.store.pool())
            .await?
            .is_some()
    {
        skip.push(Target::Global);
    }
    if free == 0 {
        return Ok(None);
    }
    let (claimed, next) = db::claim(&inner.store, session, free, lease_ms, &skip).await?;
    for c in claimed {
        let hooks = hooks.clone();
        let session = session.to_owned();
        in_flight.spawn(async move {
            if let Err(e) = deliver(&hooks, &session, c).await {
                tracing::warn!(session = %session, error = %e, "could not record a webhook attempt; it will be retried");
            }
        });
    }
    Ok(next)
}

/// Sends one leased delivery and records the answer.
async fn deliver(hooks: &Webhooks, session: &str, c: Claimed) -> anyhow::Result<()> {
    let inner = &hooks.inner;
    let pool = inner.store.pool();
    let (url, headers, secret) = match c.target {
        Target::Session => match db::get_webhook(pool, session).await? {
            Some(w) if w.disabled_reason.is_some() => {
                db::release(pool, c.id).await?;
                return Ok(());
            }
            Some(w) => (w.url, w.headers, w.secret),
            None => {
                db::record(
                    pool,
                    c.id,
                    &Outcome::Final("cancelled"),
                    None,
                    Some("webhook removed"),
                )
                .await?;
                return Ok(());
            }
        },
        Target::Global => match &inner.global {
            Some((g, _, secret)) => (g.url.clone(), Vec::new(), secret.clone()),
            None => {
                db::record(
                    pool,
                    c.id,
                    &Outcome::Final("cancelled"),
                    None,
                    Some("global webhook removed"),
                )
                .await?;
                return Ok(());
            }
        },
    };
    let msg_id = hooks.message_id(c.event_id);
    let answer: Answer = inner
        .sender
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
        Verdict::Reject => Outcome::Final("failed"),
        Verdict::Gone => {
            let reason = format!(
                "the receiver answered 410 Gone at {} (unix ms); set the webhook again to re-enable it",
                now_ms()
            );
            db::disable(pool, session, c.target, &reason).await?;
            tracing::warn!(
                session,
                target = c.target.as_str(),
                "webhook disabled: the receiver answered 410 Gone"
            );
            Outcome::Final("failed")
        }
    };
    crate::metrics::webhook_attempt(
        match &outcome {
            Outcome::Delivered => "delivered",
            Outcome::RetryAt(_) => "retry",
            Outcome::Final(s) => s,
        },
        answer.elapsed,
    );
    // The URL's host only: paths and queries can carry tokens.
    let host = reqwest::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned));
    match &outcome {
        Outcome::Delivered => tracing::debug!(
            session,
            delivery = c.id,
            event = c.event_id,
            status = answer.status,
            elapsed_ms = answer.elapsed.as_millis() as u64,
            "webhook delivered"
        ),
        other => tracing::info!(
            session, delivery = c.id, event = c.event_id, chat = %c.chat_key, attempt = attempts, host = host.as_deref(),
            status = answer.status, error = answer.error.as_deref(), outcome = ?other, "webhook attempt failed"
        ),
    }
    db::record(pool, c.id, &outcome, answer.status, answer.error.as_deref()).await?;
    if !matches!(outcome, Outcome::RetryAt(_)) {
        // The chat's next delivery may now go; don't wait for the clock.
        hooks.wake(session);
    }
    Ok(())
}
