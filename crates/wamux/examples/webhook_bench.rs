//! Webhook throughput and latency, end to end: phones in `wa-sim` send messages, the gateway
//! receives them, commits them and delivers them to receivers on loopback.
//!
//! Starts the release `wa-sim` and the release `wamux serve` (built with `--features sandbox`)
//! as separate processes. Links N sessions, each to its own phone, gives each session a
//! webhook (`message-received`) pointing at a receiver in this process, and has N other phones
//! send `--rate` messages per second each, phone k to the phone behind session k, for
//! `--seconds`. Each text carries its session, its sequence number and the instant this
//! program issued the send; the receiver takes its arrival time minus that instant as the
//! latency, counts what each session received, and checks that nothing is missing, nothing is
//! duplicated beyond a redelivery (same `webhook-id`), and each chat's messages arrive in order.
//!
//! ```text
//! cargo build --release -p wa-sim -p wamux --all-features --bins --examples
//! target/release/examples/webhook_bench --sessions 100 --rate 20 --seconds 60
//! ```
//! Flags: `--sessions N` (100), `--rate R` messages/s per session (20), `--seconds S` (60),
//! `--link-concurrency N` (16), `--drain-secs S` (30: how long to wait for stragglers).
//! `WA_SIM_BIN` and `WAMUX_BIN` override the binaries (default `target/release/wa-sim`,
//! `target/release/wamux`); `WAMUX_WEBHOOK_*` variables are passed on to the gateway;
//! `BENCH_DATABASE_URL=postgres://...` (an empty database or schema) runs it on PostgreSQL.
//!
//! `--outbox` measures the outbox alone instead, in this process and without WhatsApp:
//! events are appended through the gateway's store function (one transaction each) and the
//! latency runs from each event's commit to its arrival.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use axum::body::Bytes;
use axum::http::HeaderMap;
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{Value, json};

mod support;
use support::{Link, cpu_ticks, free_port, now_ms, pct, start_sim, summary};

const API_KEY: &str = "webhook-bench-key";
/// Linux reports utime/stime in USER_HZ ticks, which is 100 on every common configuration.
const TICKS_PER_SEC: f64 = 100.0;
/// Marks the benchmark's texts: `wb <session> <seq> <unix ms when the send was issued>`.
const TAG: &str = "wb";

struct Args {
    sessions: usize,
    rate: u64,
    seconds: u64,
    link_concurrency: usize,
    drain_secs: u64,
    outbox: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        sessions: 100,
        rate: 20,
        seconds: 60,
        link_concurrency: 16,
        drain_secs: 30,
        outbox: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--outbox" {
            a.outbox = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .with_context(|| format!("{flag}: `{value}` is not a number"))?;
        match flag.as_str() {
            "--sessions" => a.sessions = n as usize,
            "--rate" => a.rate = n,
            "--seconds" => a.seconds = n,
            "--link-concurrency" => a.link_concurrency = n.max(1) as usize,
            "--drain-secs" => a.drain_secs = n,
            other => bail!("unknown flag {other}"),
        }
    }
    ensure!(a.sessions >= 1, "--sessions must be at least 1");
    ensure!(
        (1..=1000).contains(&a.rate),
        "--rate must be from 1 to 1000"
    );
    ensure!(a.seconds >= 1, "--seconds must be at least 1");
    Ok(a)
}

/// The phone each session is linked to.
fn linked_phone(i: usize) -> String {
    format!("1555{i:07}")
}

/// The phone that sends to session `i`.
fn sender_phone(i: usize) -> String {
    format!("1556{i:07}")
}

fn session_of(i: usize) -> String {
    format!("wb{i}")
}

// ---------------------------------------------------------------- the receiver

/// What the receiver saw of one session.
#[derive(Default)]
struct SessionLog {
    /// Sequence numbers received, first arrival only.
    seen: HashMap<u64, String>,
    /// Highest sequence number so far per chat, to check order.
    last_per_chat: HashMap<String, u64>,
    out_of_order: u64,
    /// Same message again under the same `webhook-id`: an allowed redelivery.
    redelivered: u64,
    /// Same message again under another `webhook-id`: a real duplicate.
    duplicated: u64,
}

#[derive(Default)]
struct Received {
    sessions: HashMap<usize, SessionLog>,
    /// Arrival minus issue instant, ms, for measured (not warm-up) messages.
    latencies: Vec<i64>,
    measured: u64,
    warmups: u64,
    other: u64,
    first_ms: Option<i64>,
    last_ms: i64,
}

impl Received {
    fn take(&mut self, headers: &HeaderMap, body: &[u8]) {
        let arrived = now_ms();
        let v: Value = serde_json::from_slice(body).unwrap_or_default();
        let text = v["data"]["text"].as_str().unwrap_or_default();
        let mut parts = text.split(' ');
        let (Some(TAG), Some(session), Some(seq), Some(sent)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            self.other += 1;
            return;
        };
        let (Ok(session), Ok(sent)) = (session.parse::<usize>(), sent.parse::<i64>()) else {
            self.other += 1;
            return;
        };
        if seq == "warmup" {
            self.warmups += 1;
            return;
        }
        let Ok(seq) = seq.parse::<u64>() else {
            self.other += 1;
            return;
        };
        let webhook_id = headers
            .get("webhook-id")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let chat = v["data"]["chatId"].as_str().unwrap_or_default().to_owned();
        let log = self.sessions.entry(session).or_default();
        if let Some(id) = log.seen.get(&seq) {
            if *id == webhook_id {
                log.redelivered += 1;
            } else {
                log.duplicated += 1;
            }
            return;
        }
        log.seen.insert(seq, webhook_id);
        let last = log.last_per_chat.entry(chat).or_insert(0);
        if seq < *last {
            log.out_of_order += 1;
        }
        *last = (*last).max(seq);
        self.measured += 1;
        self.latencies.push(arrived - sent);
        self.first_ms.get_or_insert(arrived);
        self.last_ms = arrived;
    }
}

/// Starts the loopback receiver; returns its base URL.
async fn start_receiver(received: Arc<Mutex<Received>>) -> anyhow::Result<String> {
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let received = received.clone();
        async move {
            received
                .lock()
                .expect("receiver lock")
                .take(&headers, &body);
            "ok"
        }
    });
    support::serve(app).await
}

// ---------------------------------------------------------------- the two processes

/// Starts session `i`, sets its webhook, has its phone scan the QR, waits until connected.
async fn link_one(link: &Link<'_>, hook_url: &str, i: usize) -> anyhow::Result<()> {
    let id = session_of(i);
    link.link(&id, &linked_phone(i)).await?;
    link.http
        .post(format!("{}/api/{id}/webhook", link.base))
        .header("X-API-Key", API_KEY)
        .json(&json!({ "url": format!("{hook_url}/hook/{i}"), "events": ["message-received"] }))
        .send()
        .await?
        .error_for_status()
        .with_context(|| format!("setting the webhook of {id}"))?;
    Ok(())
}

/// The sender phone of session `i` sends `text`; returns whether the simulator accepted it.
async fn phone_send(admin: &reqwest::Client, admin_url: &str, i: usize, text: String) -> bool {
    let r = admin
        .post(format!("{admin_url}/phones/{}/messages", sender_phone(i)))
        .json(&json!({ "to": linked_phone(i), "text": text }))
        .send()
        .await;
    match r {
        Ok(r) if r.status().is_success() => true,
        Ok(r) => {
            eprintln!(
                "send for session {i}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
            false
        }
        Err(e) => {
            eprintln!("send for session {i}: {e}");
            false
        }
    }
}

/// CPU use of the three processes over a window, in % of one core.
struct CpuWindow {
    pids: [(&'static str, u32); 3],
    start: [u64; 3],
    at: Instant,
}

impl CpuWindow {
    fn start(pids: [(&'static str, u32); 3]) -> Self {
        Self {
            start: pids.map(|(_, p)| cpu_ticks(p)),
            pids,
            at: Instant::now(),
        }
    }

    fn report(&self) -> String {
        let secs = self.at.elapsed().as_secs_f64();
        self.pids
            .iter()
            .zip(self.start)
            .map(|((name, pid), t0)| {
                let used = cpu_ticks(*pid).saturating_sub(t0) as f64 / TICKS_PER_SEC;
                format!("{name} {:.0} %", used / secs * 100.0)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

async fn end_to_end(args: &Args) -> anyhow::Result<()> {
    let n = args.sessions;
    let dir = tempfile::tempdir()?;
    let received: Arc<Mutex<Received>> = Arc::default();
    let hook_url = start_receiver(received.clone()).await?;

    let sim = start_sim(dir.path()).await?;
    let admin = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
            &sim.ca_file,
        )?)?)
        .timeout(Duration::from_secs(60))
        .build()?;
    let admin_url = sim.admin_url.clone();
    let port = free_port()?;
    let gw = support::start_gateway(dir.path(), &sim, port, API_KEY).await?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    support::wait_healthy(&http, &base, API_KEY).await?;
    println!(
        "database: {}; wa-sim pid {}, wamux pid {} (log {})",
        support::engine(),
        sim.proc.0.id(),
        gw.0.id(),
        dir.path().join("wamux.log").display()
    );

    let t = Instant::now();
    futures::stream::iter((0..n).flat_map(|i| [linked_phone(i), sender_phone(i)]))
        .map(|p| {
            let (admin, admin_url) = (&admin, &admin_url);
            async move { support::create_phone(admin, admin_url, &p).await }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await?;
    let link = Link {
        http: &http,
        base: &base,
        key: API_KEY,
        admin: &admin,
        admin_url: &admin_url,
    };
    futures::stream::iter(0..n)
        .map(|i| link_one(&link, &hook_url, i))
        .buffer_unordered(args.link_concurrency)
        .try_collect::<()>()
        .await?;
    println!(
        "{n} sessions linked, each with a webhook, in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // One message per session first: the first message of a chat sets up its Signal session
    // on both sides, which the steady state does not pay for.
    let t = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (admin, admin_url) = (&admin, &admin_url);
            async move {
                ensure!(
                    phone_send(
                        admin,
                        admin_url,
                        i,
                        format!("{TAG} {i} warmup {}", now_ms())
                    )
                    .await,
                    "warm-up send for session {i} failed"
                );
                Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await?;
    while received.lock().expect("receiver lock").warmups < n as u64 {
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "only {} of {n} warm-up messages reached the receiver after 60 s",
            received.lock().expect("receiver lock").warmups
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "warm-up: one message per session delivered in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The measured window. Each session's sender issues a send every 1/rate s on its own
    // clock, whether or not the previous one is done, so a slow simulator shows as latency
    // (the instant is taken when the send is due), not as a lower offered rate.
    let per_session = args.rate * args.seconds;
    let offered = n as u64 * per_session;
    println!(
        "sending: {n} sessions x {} messages/s for {} s = {offered} messages",
        args.rate, args.seconds
    );
    let accepted = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let admin_lat: Arc<Mutex<Vec<i64>>> = Arc::default();
    let cpu = CpuWindow::start([
        ("wa-sim", sim.proc.0.id()),
        ("wamux", gw.0.id()),
        ("bench", std::process::id()),
    ]);
    let t = Instant::now();
    // Sends still queued by then are dropped (the simulator could not keep up) and counted.
    let give_up = t + Duration::from_secs(args.seconds + args.drain_secs);
    let dropped = Arc::new(AtomicU64::new(0));
    let progress = {
        let (accepted, received) = (accepted.clone(), received.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let (measured, p99) = {
                    let r = received.lock().expect("receiver lock");
                    let tail = &r.latencies[r.latencies.len().saturating_sub(2000)..];
                    let mut tail = tail.to_vec();
                    tail.sort_unstable();
                    (r.measured, pct(&tail, 0.99))
                };
                println!(
                    "  {:>4.0} s: {} accepted by the simulator, {measured} delivered, p99 of the last 2,000: {p99} ms",
                    t.elapsed().as_secs_f64(),
                    accepted.load(Ordering::Relaxed),
                );
            }
        })
    };
    let period = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut senders = Vec::with_capacity(n);
    for i in 0..n {
        let (admin, admin_url) = (admin.clone(), admin_url.clone());
        let (accepted, rejected, admin_lat, dropped) = (
            accepted.clone(),
            rejected.clone(),
            admin_lat.clone(),
            dropped.clone(),
        );
        // Spread the sessions' clocks over one period, as independent phones would be.
        let first = tokio::time::Instant::now() + period.mul_f64(i as f64 / n as f64);
        senders.push(tokio::spawn(async move {
            // The clock issues, one task sends: a phone sends its messages one after another,
            // so the chat's order is the order of `seq`.
            let (queue, mut issued_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, i64)>();
            let clock = tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(first, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for seq in 1..=per_session {
                    tick.tick().await;
                    if queue.send((seq, now_ms())).is_err() {
                        return;
                    }
                }
            });
            while let Some((seq, issued)) = issued_rx.recv().await {
                if Instant::now() > give_up {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let text = format!("{TAG} {i} {seq} {issued}");
                if phone_send(&admin, &admin_url, i, text).await {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    admin_lat
                        .lock()
                        .expect("latency lock")
                        .push(now_ms() - issued);
                } else {
                    rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Err(e) = clock.await {
                eprintln!("session {i}'s clock failed: {e}");
            }
        }));
    }
    for s in senders {
        s.await?;
    }
    let send_time = t.elapsed();
    let accepted = accepted.load(Ordering::Relaxed);
    println!(
        "sends issued and answered in {:.1} s: {accepted} accepted by the simulator ({:.0}/s), {} rejected, {} not sent (the simulator fell {} s behind)",
        send_time.as_secs_f64(),
        accepted as f64 / send_time.as_secs_f64(),
        rejected.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
        args.drain_secs
    );
    let drain = Instant::now();
    while received.lock().expect("receiver lock").measured < accepted
        && drain.elapsed() < Duration::from_secs(args.drain_secs)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress.abort();
    println!("CPU over the run: {}", cpu.report());

    let mut admin_lat = admin_lat.lock().expect("latency lock").clone();
    admin_lat.sort_unstable();
    let r = received.lock().expect("receiver lock");
    let mut lat = r.latencies.clone();
    lat.sort_unstable();
    let span_ms = (r.last_ms - r.first_ms.unwrap_or(r.last_ms)).max(1);
    let (mut missing, mut dup, mut redelivered, mut disorder) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..n {
        let log = r.sessions.get(&i);
        let got = log.map_or(0, |l| l.seen.len() as u64);
        missing += per_session.saturating_sub(got);
        if let Some(l) = log {
            dup += l.duplicated;
            redelivered += l.redelivered;
            disorder += l.out_of_order;
        }
    }
    println!(
        "delivered {} of {offered} ({:.0} events/s between the first and last arrival); missing {missing}, duplicated {dup}, redelivered {redelivered}, out of chat order {disorder}, other events {}",
        r.measured,
        r.measured as f64 * 1000.0 / span_ms as f64,
        r.other
    );
    println!(
        "latency, phone's send issued -> receiver: {}",
        summary(&lat)
    );
    println!(
        "the simulator's admin API answered the send (due -> answered) after: {}",
        summary(&admin_lat)
    );
    drop(r);
    drop(gw);
    drop(sim);
    Ok(())
}

// ---------------------------------------------------------------- --outbox

async fn outbox_only(args: &Args) -> anyhow::Result<()> {
    use wamux::event::{EventBus, EventKind};
    use wamux::store::Store;
    use wamux::store::webhooks::{self as db, NewWebhook};
    use wamux::webhook::Webhooks;
    use wamux::webhook::config::{EventFilter, WebhookOverrides};

    let (sessions, rate, seconds) = (args.sessions, args.rate, args.seconds);
    let latencies: Arc<Mutex<Vec<i64>>> = Arc::default();
    let lat = latencies.clone();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let lat = lat.clone();
        async move {
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            if let Some(sent) = v["data"]["sentAtMs"].as_i64() {
                lat.lock().expect("latency lock").push(now_ms() - sent);
            }
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir()?;
    let database = match support::database_url() {
        Some(url) => wamux::store::Database::parse(&url).map_err(anyhow::Error::msg)?,
        None => wamux::store::Database::Sqlite(dir.path().join("wamux.db")),
    };
    let store = Store::connect(&database).await?;
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
                format: &db::Format::Wamux,
                enabled: true,
                headers: &[],
                secret: None,
            },
        )
        .await?;
    }

    println!(
        "outbox only, on {}: {sessions} sessions x {rate} events/s for {seconds} s",
        support::engine()
    );
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
                let mut tx = store.begin().await?;
                let e = wamux::store::events::append(
                    &mut tx.conn(),
                    EventKind::MessageReceived,
                    &session,
                    Some(&chat),
                    json!({"chatId": chat, "n": i, "sentAtMs": now_ms()}),
                )
                .await?;
                tx.commit().await?;
                bus.publish(e);
            }
            anyhow::Ok(())
        }));
    }
    for w in writers {
        w.await??;
    }
    let written = sessions as u64 * per_session;
    let write_time = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(args.drain_secs.max(1));
    while (latencies.lock().expect("latency lock").len() as u64) < written
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = started.elapsed();
    let mut l = latencies.lock().expect("latency lock").clone();
    l.sort_unstable();
    println!(
        "written {written} events in {:.1} s ({:.0}/s)",
        write_time.as_secs_f64(),
        written as f64 / write_time.as_secs_f64()
    );
    println!(
        "delivered {} ({:.0}/s over {:.1} s); latency commit -> receiver: {}",
        l.len(),
        l.len() as f64 / total.as_secs_f64(),
        total.as_secs_f64(),
        summary(&l)
    );
    hooks.shutdown().await;
    store.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if args.outbox {
        outbox_only(&args).await
    } else {
        end_to_end(&args).await
    }
}
