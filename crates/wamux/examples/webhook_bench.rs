//! Webhook outbox throughput and latency, without WhatsApp: `sessions` sessions each record
//! `rate` events per second for `seconds` seconds through the gateway's own store function and
//! event bus; one loopback receiver takes every session's webhook and measures the time from
//! each event's commit to its arrival.
//!
//! `cargo run -p wamux --example webhook_bench -- [sessions=100] [rate=20] [seconds=60]`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde_json::json;
use wamux::event::{EventBus, EventKind};
use wamux::store::Store;
use wamux::webhook::Webhooks;
use wamux::webhook::config::{EventFilter, WebhookOverrides};
use wamux::webhook::db::{self, NewWebhook, now_ms};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sessions = *args.first().unwrap_or(&100) as usize;
    let rate = *args.get(1).unwrap_or(&20);
    let seconds = *args.get(2).unwrap_or(&60);

    let latencies: Arc<Mutex<Vec<i64>>> = Arc::default();
    let lat = latencies.clone();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let lat = lat.clone();
        async move {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if let Some(sent) = v["data"]["sentAtMs"].as_i64() {
                lat.lock().unwrap().push(now_ms() - sent);
            }
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("wamux.db")).await?;
    let bus = EventBus::default();
    let config = WebhookOverrides {
        allow_private: Some(true),
        ..Default::default()
    }
    .resolve()
    .map_err(anyhow::Error::msg)?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let hooks = Webhooks::start(store.clone(), &bus, config, cancel.clone()).await?;
    for s in 0..sessions {
        db::set_webhook(
            &store,
            &format!("s{s}"),
            NewWebhook {
                url: &url,
                events: &EventFilter::All,
                headers: &[],
                secret: None,
            },
        )
        .await?;
    }

    println!("{sessions} sessions x {rate} events/s for {seconds} s");
    let started = Instant::now();
    let per_session = rate * seconds;
    let mut writers = Vec::new();
    for s in 0..sessions {
        let (store, bus) = (store.clone(), bus.clone());
        writers.push(tokio::spawn(async move {
            let session = format!("s{s}");
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            for i in 0..per_session {
                tick.tick().await;
                let chat = format!("chat-{}", i % 5);
                let mut tx = store.begin().await.unwrap();
                let e = wamux::store::events::append(
                    &mut tx,
                    EventKind::MessageReceived,
                    &session,
                    Some(&chat),
                    json!({"chatId": chat, "n": i, "sentAtMs": now_ms()}),
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
                bus.publish(e);
            }
        }));
    }
    for w in writers {
        w.await?;
    }
    let written = sessions as u64 * per_session;
    let write_time = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (latencies.lock().unwrap().len() as u64) < written && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = started.elapsed();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "written {written} events in {:.1} s ({:.0}/s)",
        write_time.as_secs_f64(),
        written as f64 / write_time.as_secs_f64()
    );
    println!(
        "delivered {} ({:.0}/s over {:.1} s); latency ms p50 {} p90 {} p99 {} max {}",
        l.len(),
        l.len() as f64 / total.as_secs_f64(),
        total.as_secs_f64(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        l.last().copied().unwrap_or(-1)
    );
    hooks.shutdown().await;
    store.close().await;
    Ok(())
}
