//! Throughput benchmark of the simulator alone: phones sending through the admin API to
//! linked whatsapp-rust clients.
//!
//! Starts the `wa-sim` binary as a child process (so its CPU and memory are its own), links
//! `--clients` bare whatsapp-rust clients (in-memory stores), each to its own account, and
//! creates a second phone per client. Each of those phones sends one warm-up text to its
//! client's account (the first message of a chat sets up the Signal session), then for
//! `--seconds` sends `--rate` texts per second through `POST /admin/phones/:phone/messages`.
//! The sends go over `--connections` keep-alive HTTP/1.1 connections, each carrying its
//! share of the phones one request after another (phone `i` always on connection
//! `i mod connections`, so a phone's messages go out in order); a send that is due while
//! its connection is busy waits for it, and sends still waiting `--drain-secs` after the
//! window are counted as not sent.
//!
//! Every text carries the instant its request was made. A client counts each message by
//! id (every accepted send must arrive exactly once) and takes the time from the admin
//! request to its `Messages` event as the latency. The simulator's CPU (`utime + stime`
//! from `/proc`) is read over the send window and its peak RSS (`VmHWM`) at the end.
//!
//! ```text
//! cargo build --release -p wa-sim --all-features --bins --examples
//! target/release/examples/phone_sends --clients 100 --rate 20 --seconds 30
//! ```
//! Flags: `--clients` (100), `--rate` per phone (20/s), `--seconds` (30), `--connections`
//! (16), `--drain-secs` (30). `WA_SIM_BIN` overrides the simulator binary
//! (`target/release/wa-sim`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use whatsapp_rust::TokioRuntime;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::wacore::store::InMemoryBackend;
use whatsapp_rust::wacore::types::events::Event;
use whatsapp_rust_tokio_transport::TokioWebSocketTransportFactory;

mod support;
use support::{NoMedia, cpu_ticks, proc_status_kib, rustls_config};

/// Marks the benchmark's texts: `TAG phone-index seq request-µs`.
const TAG: &str = "phone-sends";

struct Args {
    clients: usize,
    rate: u32,
    seconds: u64,
    connections: usize,
    drain_secs: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        clients: 100,
        rate: 20,
        seconds: 30,
        connections: 16,
        drain_secs: 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--clients" => args.clients = value.parse()?,
            "--rate" => args.rate = value.parse()?,
            "--seconds" => args.seconds = value.parse()?,
            "--connections" => args.connections = value.parse()?,
            "--drain-secs" => args.drain_secs = value.parse()?,
            other => anyhow::bail!(
                "unknown flag {other} (--clients, --rate, --seconds, --connections, --drain-secs)"
            ),
        }
    }
    anyhow::ensure!(
        args.clients > 0 && args.rate > 0 && args.connections > 0,
        "--clients, --rate and --connections must be positive"
    );
    Ok(args)
}

/// The account client `i` is linked to.
fn linked_phone(i: usize) -> String {
    format!("1555{i:07}")
}

/// The phone that sends to client `i`.
fn sender_phone(i: usize) -> String {
    format!("1556{i:07}")
}

/// Microseconds since the benchmark started (one clock for senders and clients).
fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// What the clients received.
#[derive(Default)]
struct Received {
    /// Times each message id arrived.
    by_id: HashMap<String, u32>,
    /// Benchmark messages (warm-ups excluded) received once.
    measured: u64,
    /// Request -> `Messages` event, µs, of the measured messages.
    latencies: Vec<u64>,
}

impl Received {
    fn take(&mut self, id: &str, text: Option<&str>) {
        let seen = self.by_id.entry(id.to_string()).or_insert(0);
        *seen += 1;
        if *seen > 1 {
            return;
        }
        let Some(text) = text else { return };
        let mut parts = text.split(' ');
        if parts.next() != Some(TAG) {
            return;
        }
        let seq: u64 = parts.nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let sent: Option<u64> = parts.next().and_then(|s| s.parse().ok());
        if seq > 0
            && let Some(sent) = sent
        {
            self.measured += 1;
            self.latencies.push(now_us().saturating_sub(sent));
        }
    }
}

struct Sim {
    child: std::process::Child,
    ws_url: String,
    admin_url: String,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

async fn start_sim() -> anyhow::Result<Sim> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("sim");
    let (child, info) = support::spawn_sim(&data_dir).await?;
    Ok(Sim {
        child,
        ws_url: info["wsUrl"].as_str().unwrap_or_default().to_string(),
        admin_url: info["adminUrl"].as_str().unwrap_or_default().to_string(),
        ca_pem: std::fs::read_to_string(info["caFile"].as_str().unwrap_or_default())?,
        _dir: dir,
    })
}

/// An admin client with at most one connection: one request at a time keeps it to a
/// single keep-alive connection.
fn admin_client(ca_pem: &str) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
        .http1_only()
        .pool_max_idle_per_host(1)
        .build()?)
}

async fn admin_post(
    http: &reqwest::Client,
    url: String,
    body: serde_json::Value,
) -> anyhow::Result<reqwest::Response> {
    Ok(http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?)
}

/// Links client `i` to its account: the account's phone scans the client's QR code.
async fn start_client(
    sim: &Sim,
    http: reqwest::Client,
    i: usize,
    connected: Arc<AtomicUsize>,
    received: Arc<Mutex<Received>>,
) -> anyhow::Result<BotHandle> {
    let transport = TokioWebSocketTransportFactory::new()
        .with_url(sim.ws_url.clone())
        .with_connector(whatsapp_rust_tokio_transport::Connector::Rustls(
            tokio_rustls::TlsConnector::from(rustls_config(&sim.ca_pem)),
        ));
    let scan_url = format!("{}/phones/{}/scan", sim.admin_url, linked_phone(i));
    let bot = Bot::builder()
        .with_backend_arc(Arc::new(InMemoryBackend::new()))
        .with_transport_factory(transport)
        .with_http_client(NoMedia)
        .with_runtime(TokioRuntime)
        .with_version((2, 3000, 1_020_000_000))
        .with_push_name(format!("client-{i}"))
        .with_wanted_pre_key_count(5)
        .skip_history_sync()
        .on_event(move |event, _client| {
            let (http, scan_url) = (http.clone(), scan_url.clone());
            let (connected, received) = (connected.clone(), received.clone());
            async move {
                match &*event {
                    Event::PairingQrCode(q) => {
                        let body = serde_json::json!({ "qr": q.code });
                        match admin_post(&http, scan_url, body).await {
                            Ok(r) if r.status().is_success() => {}
                            Ok(r) => eprintln!("scan for client {i}: {}", r.status()),
                            Err(e) => eprintln!("scan for client {i} failed: {e}"),
                        }
                    }
                    Event::Connected(_) => {
                        connected.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::Messages(batch) => {
                        let mut r = received.lock().expect("receiver lock");
                        for m in batch.iter() {
                            let text = m.message.conversation.as_deref();
                            r.take(&m.info.id, text);
                        }
                    }
                    _ => {}
                }
            }
        })
        .build()
        .await?;
    Ok(bot.spawn())
}

async fn wait_until(what: &str, limit: Duration, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    while !done() {
        anyhow::ensure!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One due send: phone index, sequence number.
type Due = (usize, u64);

/// What the connections' workers tally.
#[derive(Default)]
struct Sends {
    accepted: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    not_sent: AtomicU64,
    /// Accepted in the window (answered before it ended).
    accepted_in_window: AtomicU64,
    /// Message ids of the accepted sends, with the request -> answer time in µs.
    answered: Mutex<Vec<(String, u64)>>,
    /// Due -> request start, µs: how long a send waited for its connection.
    waited: Mutex<Vec<u64>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let n = args.clients;
    now_us();
    let sim = start_sim().await?;
    let pid = sim.child.id();
    let http = admin_client(&sim.ca_pem)?;
    println!(
        "wa-sim pid {pid}; {n} clients, {} phones x {}/s for {} s = {} sends over {} connections",
        n,
        args.rate,
        args.seconds,
        n as u64 * args.rate as u64 * args.seconds,
        args.connections
    );

    for i in 0..n {
        for (phone, name) in [
            (linked_phone(i), format!("Linked {i}")),
            (sender_phone(i), format!("Sender {i}")),
        ] {
            let url = format!("{}/phones", sim.admin_url);
            let r = admin_post(
                &http,
                url,
                serde_json::json!({"phone": phone, "name": name}),
            )
            .await?;
            anyhow::ensure!(r.status().is_success(), "creating {phone}: {}", r.status());
        }
    }

    let connected = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Mutex::new(Received::default()));
    let t = Instant::now();
    let mut clients = Vec::with_capacity(n);
    // Link in waves of 50 so the handshakes do not swamp the machine.
    for i in 0..n {
        let scan_http = admin_client(&sim.ca_pem)?;
        clients.push(start_client(&sim, scan_http, i, connected.clone(), received.clone()).await?);
        if i % 50 == 49 {
            let want = i + 1 - 10;
            wait_until("linking", Duration::from_secs(300), || {
                connected.load(Ordering::Relaxed) >= want
            })
            .await?;
        }
    }
    wait_until("all clients connected", Duration::from_secs(300), || {
        connected.load(Ordering::Relaxed) >= n
    })
    .await?;
    println!("linked {n} clients in {:.1} s", t.elapsed().as_secs_f64());

    // Warm-up: one message per chat sets up its Signal session.
    let mut warm = tokio::task::JoinSet::new();
    for i in 0..n {
        let http = http.clone();
        let url = format!("{}/phones/{}/messages", sim.admin_url, sender_phone(i));
        warm.spawn(async move {
            let body =
                serde_json::json!({"to": linked_phone(i), "text": format!("{TAG} {i} 0 warm-up")});
            admin_post(&http, url, body).await
        });
    }
    while let Some(r) = warm.join_next().await {
        let r = r??;
        anyhow::ensure!(r.status().is_success(), "warm-up send: {}", r.status());
    }
    wait_until("warm-up messages", Duration::from_secs(60), || {
        received.lock().expect("receiver lock").by_id.len() >= n
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let warm_ids = received.lock().expect("receiver lock").by_id.len() as u64;

    // The send window.
    let sends = Arc::new(Sends::default());
    let period = Duration::from_secs_f64(1.0 / args.rate as f64);
    let window = Duration::from_secs(args.seconds);
    let per_phone = args.rate as u64 * args.seconds;
    let mut queues = Vec::with_capacity(args.connections);
    let mut workers = tokio::task::JoinSet::new();
    let start = tokio::time::Instant::now();
    let give_up = start + window + Duration::from_secs(args.drain_secs);
    let window_end = start + window;
    for _ in 0..args.connections {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Due, u64)>();
        queues.push(tx);
        let http = admin_client(&sim.ca_pem)?;
        let admin_url = sim.admin_url.clone();
        let sends = sends.clone();
        workers.spawn(async move {
            while let Some(((i, seq), due)) = rx.recv().await {
                if tokio::time::Instant::now() > give_up {
                    sends.not_sent.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let requested = now_us();
                sends
                    .waited
                    .lock()
                    .expect("waited lock")
                    .push(requested.saturating_sub(due));
                let url = format!("{admin_url}/phones/{}/messages", sender_phone(i));
                let body = serde_json::json!({
                    "to": linked_phone(i),
                    "text": format!("{TAG} {i} {seq} {requested}"),
                });
                match admin_post(&http, url, body).await {
                    Ok(r) if r.status().is_success() => {
                        let answered = now_us().saturating_sub(requested);
                        let id = r
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|v| v["id"].as_str().map(str::to_string));
                        sends.accepted.fetch_add(1, Ordering::Relaxed);
                        if tokio::time::Instant::now() <= window_end {
                            sends.accepted_in_window.fetch_add(1, Ordering::Relaxed);
                        }
                        if let Some(id) = id {
                            sends
                                .answered
                                .lock()
                                .expect("answered lock")
                                .push((id, answered));
                        }
                    }
                    Ok(r) => {
                        if sends.refused.fetch_add(1, Ordering::Relaxed) < 5 {
                            let status = r.status();
                            eprintln!(
                                "send refused: {status} {}",
                                r.text().await.unwrap_or_default()
                            );
                        }
                    }
                    Err(e) => {
                        if sends.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("send failed: {e}");
                        }
                    }
                }
            }
        });
    }
    let progress = {
        let (sends, received) = (sends.clone(), received.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                println!(
                    "  {:>4.0} s: {} accepted, {} received",
                    start.elapsed().as_secs_f64(),
                    sends.accepted.load(Ordering::Relaxed),
                    received.lock().expect("receiver lock").measured
                );
            }
        })
    };
    let sim_cpu0 = cpu_ticks(&pid.to_string());
    let own_cpu0 = cpu_ticks("self");
    let mut clocks = tokio::task::JoinSet::new();
    for i in 0..n {
        let queue = queues[i % args.connections].clone();
        // Spread the phones' clocks over one period, as independent phones would be.
        let first = start + period.mul_f64(i as f64 / n as f64);
        clocks.spawn(async move {
            let mut tick = tokio::time::interval_at(first, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for seq in 1..=per_phone {
                tick.tick().await;
                if queue.send(((i, seq), now_us())).is_err() {
                    return;
                }
            }
        });
    }
    drop(queues);
    while clocks.join_next().await.is_some() {}
    // The clocks are done at the end of the window; the CPU figure is over the window.
    tokio::time::sleep_until(window_end).await;
    let window_secs = start.elapsed().as_secs_f64();
    let sim_cpu = (cpu_ticks(&pid.to_string()) - sim_cpu0) as f64 / 100.0;
    let own_cpu = (cpu_ticks("self") - own_cpu0) as f64 / 100.0;
    while workers.join_next().await.is_some() {}
    let all_answered = start.elapsed().as_secs_f64();
    let accepted = sends.accepted.load(Ordering::Relaxed);
    let drain = Instant::now();
    while received.lock().expect("receiver lock").measured < accepted
        && drain.elapsed() < Duration::from_secs(args.drain_secs)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Late duplicates would come within a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    progress.abort();
    let sim_cpu_total = (cpu_ticks(&pid.to_string()) - sim_cpu0) as f64 / 100.0;
    let total_secs = start.elapsed().as_secs_f64();

    let offered = n as u64 * per_phone;
    let in_window = sends.accepted_in_window.load(Ordering::Relaxed);
    let answered = std::mem::take(&mut *sends.answered.lock().expect("answered lock"));
    let r = std::mem::take(&mut *received.lock().expect("receiver lock"));
    let missing = answered
        .iter()
        .filter(|(id, _)| !r.by_id.contains_key(id))
        .count();
    let duplicated = r.by_id.values().filter(|c| **c > 1).count();
    let unexpected = (r.by_id.len() as u64)
        .saturating_sub(warm_ids)
        .saturating_sub((answered.len() - missing) as u64);
    let mut lat = r.latencies.clone();
    lat.sort_unstable();
    let mut answer: Vec<u64> = answered.iter().map(|(_, us)| *us).collect();
    answer.sort_unstable();
    let mut waited = sends.waited.lock().expect("waited lock").clone();
    waited.sort_unstable();

    println!(
        "--- {n} phones x {}/s x {} s = {offered} sends offered",
        args.rate, args.seconds
    );
    println!(
        "accepted: {accepted} ({in_window} within the {:.0} s window: {:.0}/s; all answered after {all_answered:.1} s: {:.0}/s)",
        window_secs,
        in_window as f64 / window_secs,
        accepted as f64 / all_answered
    );
    println!(
        "refused: {}, failed: {}, not sent (still waiting {} s after the window): {}",
        sends.refused.load(Ordering::Relaxed),
        sends.failed.load(Ordering::Relaxed),
        args.drain_secs,
        sends.not_sent.load(Ordering::Relaxed)
    );
    println!(
        "received by the clients: {} once; accepted but missing: {missing}; duplicated: {duplicated}; received but not answered 2xx: {unexpected}",
        r.measured
    );
    println!(
        "latency admin request -> client's Messages event: p50 {} p90 {} p99 {} max {}",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.9)),
        ms(pct(&lat, 0.99)),
        ms(pct(&lat, 1.0))
    );
    println!(
        "admin request -> answer: p50 {} p99 {} max {}; due -> request (waiting for the connection): p50 {} p99 {}",
        ms(pct(&answer, 0.5)),
        ms(pct(&answer, 0.99)),
        ms(pct(&answer, 1.0)),
        ms(pct(&waited, 0.5)),
        ms(pct(&waited, 0.99))
    );
    println!(
        "wa-sim CPU: {sim_cpu:.1} s over the {window_secs:.1} s window = {:.0} % of one core ({:.0} % until everything arrived, {total_secs:.1} s); this process: {:.0} %",
        sim_cpu / window_secs * 100.0,
        sim_cpu_total / total_secs * 100.0,
        own_cpu / window_secs * 100.0
    );
    println!(
        "wa-sim peak RSS (VmHWM): {:.1} MiB, now {:.1} MiB",
        proc_status_kib(pid, "VmHWM:") as f64 / 1024.0,
        proc_status_kib(pid, "VmRSS:") as f64 / 1024.0
    );

    let mut stopping = tokio::task::JoinSet::new();
    for c in clients {
        stopping.spawn(c.shutdown());
    }
    while stopping.join_next().await.is_some() {}
    let mut child = sim.child;
    child.kill()?;
    child.wait()?;
    Ok(())
}
