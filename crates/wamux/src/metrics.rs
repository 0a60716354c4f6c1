//! Prometheus metrics: a handful of process-wide atomics, rendered in the text exposition
//! format by [`render`]. Small on purpose: no registry crate, no labels beyond fixed sets.
//!
//! Counters are fed two ways: webhook attempts by one call in the delivery worker
//! ([`webhook_attempt`]); messages and reconnects by [`watch`], which follows the event bus
//! (so the session code needs no metrics calls). Gauges (sessions by status, outbox depth)
//! are read when scraped.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::event::{EventBus, EventKind};
use crate::model::SessionStatus;

/// Upper bounds (seconds) of the webhook delivery latency histogram.
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Outcomes of a webhook attempt, as recorded by the worker.
const OUTCOMES: [&str; 5] = ["delivered", "retry", "failed", "dead", "cancelled"];

struct Metrics {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    reconnects: AtomicU64,
    deliveries: [AtomicU64; OUTCOMES.len()],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    auth_failures: AtomicU64,
    auth_rate_limited: AtomicU64,
}

static METRICS: Metrics = Metrics {
    messages_in: AtomicU64::new(0),
    messages_out: AtomicU64::new(0),
    reconnects: AtomicU64::new(0),
    deliveries: [const { AtomicU64::new(0) }; OUTCOMES.len()],
    latency_buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64::new(0),
    latency_sum_micros: AtomicU64::new(0),
    auth_failures: AtomicU64::new(0),
    auth_rate_limited: AtomicU64::new(0),
};

/// Counts a request refused for a wrong or missing API key.
pub fn auth_failure() {
    METRICS.auth_failures.fetch_add(1, Relaxed);
}

/// Counts a request refused because its address had too many failed authentications.
pub fn auth_rate_limited() {
    METRICS.auth_rate_limited.fetch_add(1, Relaxed);
}

/// Records one webhook delivery attempt: its outcome (`delivered`, `retry`, `failed`,
/// `dead`) and how long the receiver took.
pub fn webhook_attempt(outcome: &str, elapsed: Duration) {
    let m = &METRICS;
    if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
        m.deliveries[i].fetch_add(1, Relaxed);
    }
    let secs = elapsed.as_secs_f64();
    // Buckets are stored non-cumulative and summed when rendered.
    if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
        m.latency_buckets[i].fetch_add(1, Relaxed);
    }
    m.latency_count.fetch_add(1, Relaxed);
    m.latency_sum_micros
        .fetch_add(elapsed.as_micros() as u64, Relaxed);
}

/// Follows the event bus until `stop`: counts messages in and out, and reconnects (a
/// session that comes back to `connected` after having been connected in this process).
pub fn watch(bus: &EventBus, stop: CancellationToken) {
    let mut rx = bus.subscribe();
    tokio::spawn(async move {
        let mut seen_connected: HashSet<String> = HashSet::new();
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                r = rx.recv() => match r {
                    Ok(ev) => ev,
                    // Counts may fall short after a lag; they never double.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            };
            match ev.kind {
                EventKind::MessageReceived => {
                    METRICS.messages_in.fetch_add(1, Relaxed);
                }
                EventKind::MessageSent | EventKind::MessageFromMe => {
                    METRICS.messages_out.fetch_add(1, Relaxed);
                }
                EventKind::SessionStatus
                    if ev.data["status"] == SessionStatus::Connected.as_str()
                        && !seen_connected.insert(ev.session_id.clone()) =>
                {
                    METRICS.reconnects.fetch_add(1, Relaxed);
                }
                _ => {}
            }
        }
    });
}

/// The whole exposition, for `GET /metrics`.
pub async fn render(state: &AppState) -> String {
    let m = &METRICS;
    let mut out = String::with_capacity(4096);
    header(
        &mut out,
        "wamux_build_info",
        "gauge",
        "Version of this build.",
    );
    line(
        &mut out,
        "wamux_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    header(
        &mut out,
        "wamux_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    );
    line(
        &mut out,
        "wamux_uptime_seconds",
        &[],
        state.started_at.elapsed().as_secs(),
    );

    let sessions = state.sessions.list();
    header(&mut out, "wamux_sessions", "gauge", "Sessions by status.");
    for s in SessionStatus::ALL {
        let n = sessions.iter().filter(|i| i.status == s).count();
        line(&mut out, "wamux_sessions", &[("status", s.as_str())], n);
    }

    header(
        &mut out,
        "wamux_messages_total",
        "counter",
        "Messages received from and sent to WhatsApp.",
    );
    line(
        &mut out,
        "wamux_messages_total",
        &[("direction", "in")],
        m.messages_in.load(Relaxed),
    );
    line(
        &mut out,
        "wamux_messages_total",
        &[("direction", "out")],
        m.messages_out.load(Relaxed),
    );

    header(
        &mut out,
        "wamux_session_reconnects_total",
        "counter",
        "Times a session connected again after having been connected.",
    );
    line(
        &mut out,
        "wamux_session_reconnects_total",
        &[],
        m.reconnects.load(Relaxed),
    );

    header(
        &mut out,
        "wamux_webhook_deliveries_total",
        "counter",
        "Webhook delivery attempts by outcome.",
    );
    for (i, o) in OUTCOMES.iter().enumerate() {
        line(
            &mut out,
            "wamux_webhook_deliveries_total",
            &[("outcome", o)],
            m.deliveries[i].load(Relaxed),
        );
    }

    let h = "wamux_webhook_delivery_duration_seconds";
    header(
        &mut out,
        h,
        "histogram",
        "Time webhook receivers took to answer.",
    );
    let mut cumulative = 0;
    for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
        cumulative += m.latency_buckets[i].load(Relaxed);
        line(
            &mut out,
            &format!("{h}_bucket"),
            &[("le", &b.to_string())],
            cumulative,
        );
    }
    let count = m.latency_count.load(Relaxed);
    line(&mut out, &format!("{h}_bucket"), &[("le", "+Inf")], count);
    let _infallible = writeln!(
        out,
        "{h}_sum {}",
        m.latency_sum_micros.load(Relaxed) as f64 / 1e6
    );
    line(&mut out, &format!("{h}_count"), &[], count);

    header(
        &mut out,
        "wamux_auth_failures_total",
        "counter",
        "Requests refused for a wrong or missing API key.",
    );
    line(
        &mut out,
        "wamux_auth_failures_total",
        &[],
        m.auth_failures.load(Relaxed),
    );
    header(
        &mut out,
        "wamux_auth_rate_limited_total",
        "counter",
        "Requests refused with 429 after too many failed authentications from their address.",
    );
    line(
        &mut out,
        "wamux_auth_rate_limited_total",
        &[],
        m.auth_rate_limited.load(Relaxed),
    );

    header(
        &mut out,
        "wamux_webhook_outbox_depth",
        "gauge",
        "Webhook deliveries waiting to be sent (pending or retrying).",
    );
    // A scrape that cannot read the database leaves the gauge out rather than lying.
    match crate::store::webhooks::outbox_depth(&state.store).await {
        Ok(n) => line(&mut out, "wamux_webhook_outbox_depth", &[], n),
        Err(e) => tracing::warn!(
            "metrics: cannot read the outbox depth: {:#}",
            anyhow::Error::from(e)
        ),
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _infallible = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn line(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Label values here are our own constants: no escaping needed.
            let _infallible = write!(out, "{k}=\"{v}\"");
        }
        out.push('}');
    }
    let _infallible = writeln!(out, " {value}");
}
