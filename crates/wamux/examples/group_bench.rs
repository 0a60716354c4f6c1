//! A big group end to end: wamux writes in a group of `--members` accounts (its own and
//! phones in `wa-sim`) while some members answer, and the benchmark measures what the group
//! costs the gateway and how long members' messages take to reach the webhook.
//!
//! Starts the release `wa-sim` and `wamux serve` as separate processes, links one session,
//! creates the group through the gateway's API, sends one warm-up message (the gateway gives
//! its sender key to every member device), then for `--seconds` has the gateway send `--rate`
//! texts per second to the group through `POST /api/send-message` while `--speakers` members
//! take turns writing `--answers` texts per second (each text carries the instant its send was
//! issued). Every member's phone decrypts every message and sends a delivery receipt, which
//! the gateway records per participant, so the gateway's CPU covers the fan-out of its own
//! sends (one encryption, WhatsApp fans out), the receipts of all members and the inbound
//! messages with their webhooks.
//!
//! ```text
//! cargo build --release -p wa-sim -p wamux --all-features --bins --examples
//! target/release/examples/group_bench --members 256 --rate 10 --answers 10 --seconds 30
//! ```
//! Flags: `--members N` (256, the session's own account included), `--rate R` gateway
//! messages/s (10), `--answers A` member messages/s (10), `--speakers S` members who answer
//! (20), `--seconds S` (30), `--drain-secs S` (30). `WA_SIM_BIN`, `WAMUX_BIN` and
//! `BENCH_DATABASE_URL` as for `webhook_bench`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use axum::body::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{Value, json};

mod support;
use support::{Link, cpu_ticks, free_port, now_ms, start_sim, summary};

const API_KEY: &str = "group-bench-key";
const TICKS_PER_SEC: f64 = 100.0;
const SESSION: &str = "gb";

struct Args {
    members: usize,
    rate: u64,
    answers: u64,
    speakers: usize,
    seconds: u64,
    drain_secs: u64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        members: 256,
        rate: 10,
        answers: 10,
        speakers: 20,
        seconds: 30,
        drain_secs: 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .with_context(|| format!("{flag}: `{value}` is not a number"))?;
        match flag.as_str() {
            "--members" => a.members = n as usize,
            "--rate" => a.rate = n,
            "--answers" => a.answers = n,
            "--speakers" => a.speakers = n as usize,
            "--seconds" => a.seconds = n,
            "--drain-secs" => a.drain_secs = n,
            other => bail!("unknown flag {other}"),
        }
    }
    ensure!(
        (3..=1024).contains(&a.members),
        "--members must be 3 to 1024"
    );
    ensure!((1..=100).contains(&a.rate), "--rate must be 1 to 100");
    ensure!(a.answers <= 100, "--answers must be at most 100");
    ensure!(
        (1..a.members).contains(&a.speakers),
        "--speakers must be 1 to members - 1"
    );
    ensure!(a.seconds >= 1, "--seconds must be at least 1");
    Ok(a)
}

/// Member `i`'s phone number; member 0 is the session's own account.
fn member(i: usize) -> String {
    format!("1557{i:07}")
}

/// What the webhook receiver saw: members' texts (`gb <seq> <issued ms>`), first arrivals.
#[derive(Default)]
struct Received {
    seen: HashSet<u64>,
    latencies: Vec<i64>,
    duplicates: u64,
    receipts: u64,
}

async fn start_receiver(received: Arc<Mutex<Received>>) -> anyhow::Result<String> {
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let received = received.clone();
        async move {
            let arrived = now_ms();
            let v: Value = serde_json::from_slice(&body).unwrap_or_default();
            let mut r = received.lock().expect("receiver lock");
            if v["event"] == "message-delivered" {
                r.receipts += 1;
                return "ok";
            }
            let text = v["data"]["text"].as_str().unwrap_or_default();
            let mut parts = text.split(' ');
            if let (Some("gb"), Some(seq), Some(sent)) = (parts.next(), parts.next(), parts.next())
                && let (Ok(seq), Ok(sent)) = (seq.parse::<u64>(), sent.parse::<i64>())
            {
                if r.seen.insert(seq) {
                    r.latencies.push(arrived - sent);
                } else {
                    r.duplicates += 1;
                }
            }
            "ok"
        }
    });
    support::serve(app).await
}

/// What a member's phone has of the group: the gateway's texts (`gw <seq>`).
async fn gateway_texts_at(
    admin: &reqwest::Client,
    admin_url: &str,
    phone: &str,
    gid: &str,
) -> anyhow::Result<HashSet<u64>> {
    let list: Vec<Value> = admin
        .get(format!("{admin_url}/phones/{phone}/messages"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(list
        .iter()
        .filter(|m| m["to"] == gid && m["from"] == member(0).as_str())
        .filter_map(|m| m["text"].as_str()?.strip_prefix("gw ")?.parse().ok())
        .collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let n = args.members;
    let dir = tempfile::tempdir()?;
    let received: Arc<Mutex<Received>> = Arc::default();
    let hook_url = start_receiver(received.clone()).await?;
    let sim = start_sim(dir.path()).await?;
    let admin = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
            &sim.ca_file,
        )?)?)
        .timeout(Duration::from_secs(120))
        .build()?;
    let admin_url = sim.admin_url.clone();
    let port = free_port()?;
    let gw = support::start_gateway(dir.path(), &sim, port, API_KEY).await?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    support::wait_healthy(&http, &base, API_KEY).await?;
    println!(
        "database: {}; wa-sim pid {}, wamux pid {}",
        support::engine(),
        sim.proc.0.id(),
        gw.0.id()
    );

    futures::stream::iter(0..n)
        .map(|i| {
            let (admin, admin_url) = (&admin, &admin_url);
            async move { support::create_phone(admin, admin_url, &member(i)).await }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await?;
    Link {
        http: &http,
        base: &base,
        key: API_KEY,
        admin: &admin,
        admin_url: &admin_url,
    }
    .link(SESSION, &member(0))
    .await?;
    http.post(format!("{base}/api/{SESSION}/webhook"))
        .header("X-API-Key", API_KEY)
        .json(&json!({"url": format!("{hook_url}/hook"), "events": ["message-received", "message-delivered"]}))
        .send()
        .await?
        .error_for_status()?;

    let t = Instant::now();
    let created: Value = http
        .post(format!("{base}/api/sessions/{SESSION}/groups"))
        .header("X-API-Key", API_KEY)
        .json(&json!({"subject": "Bench", "participants": (1..n).map(member).collect::<Vec<_>>()}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let gid = created["group"]["id"]
        .as_str()
        .context("no group id")?
        .to_owned();
    let added = created["results"]
        .as_array()
        .map_or(0, |r| r.iter().filter(|r| r["ok"] == true).count());
    ensure!(
        added == n - 1,
        "only {added} of {} members added: {created}",
        n - 1
    );
    println!(
        "group of {n} created through the API in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // Warm-up: the first message gives the gateway's sender key to every member device.
    let samples = [member(1), member(n / 2), member(n - 1)];
    let send = {
        let (http, base, gid) = (http.clone(), base.clone(), gid.clone());
        move |seq: u64| {
            let (http, base, gid) = (http.clone(), base.clone(), gid.clone());
            async move {
                let t = Instant::now();
                let r = http
                    .post(format!("{base}/api/send-message"))
                    .header("X-API-Key", API_KEY)
                    .json(&json!({"sessionId": SESSION, "to": gid, "text": format!("gw {seq}")}))
                    .send()
                    .await;
                let ok = matches!(&r, Ok(r) if r.status().is_success());
                if !ok {
                    eprintln!("send gw {seq}: {r:?}");
                }
                (ok, t.elapsed().as_millis() as i64)
            }
        }
    };
    let t = Instant::now();
    let (ok, first_ms) = send(0).await;
    ensure!(ok, "the warm-up send failed");
    for p in &samples {
        loop {
            if gateway_texts_at(&admin, &admin_url, p, &gid)
                .await?
                .contains(&0)
            {
                break;
            }
            ensure!(
                t.elapsed() < Duration::from_secs(120),
                "{p} never got the warm-up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "warm-up: the first send (sender key to {} devices) answered in {first_ms} ms, at the sampled members in {:.2} s",
        n - 1,
        t.elapsed().as_secs_f64()
    );
    // Each speaker's first message distributes its own sender key; done before measuring.
    let speakers: Vec<String> = (1..=args.speakers).map(member).collect();
    for (k, p) in speakers.iter().enumerate() {
        admin
            .post(format!("{admin_url}/phones/{p}/messages"))
            .json(&json!({"to": gid, "text": format!("warm {k}")}))
            .send()
            .await?
            .error_for_status()?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let receipts_before = received.lock().expect("receiver lock").receipts;

    println!(
        "measuring {} s: the gateway sends {}/s to {n} members, {} members answer {}/s",
        args.seconds, args.rate, args.speakers, args.answers
    );
    let pids = [sim.proc.0.id(), gw.0.id()];
    let ticks0 = pids.map(cpu_ticks);
    let t = Instant::now();
    let sent_lat: Arc<Mutex<Vec<i64>>> = Arc::default();
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    let total = args.rate * args.seconds;
    {
        let period = Duration::from_secs_f64(1.0 / args.rate as f64);
        let mut tick = tokio::time::interval(period);
        let (sent_lat, failed) = (sent_lat.clone(), failed.clone());
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            let mut inflight = Vec::new();
            for seq in 1..=total {
                tick.tick().await;
                let (sent_lat, failed, send) = (sent_lat.clone(), failed.clone(), send.clone());
                inflight.push(tokio::spawn(async move {
                    let (ok, ms) = send(seq).await;
                    if ok {
                        sent_lat.lock().expect("lat lock").push(ms);
                    } else {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }));
            }
            for f in inflight {
                let _ = f.await;
            }
        }));
    }
    let answers = args.answers * args.seconds;
    if args.answers > 0 {
        let period = Duration::from_secs_f64(1.0 / args.answers as f64);
        let mut tick = tokio::time::interval(period);
        let (admin, admin_url, gid, speakers) = (
            admin.clone(),
            admin_url.clone(),
            gid.clone(),
            speakers.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut inflight = Vec::new();
            for seq in 0..answers {
                tick.tick().await;
                let from = speakers[seq as usize % speakers.len()].clone();
                let (admin, admin_url, gid) = (admin.clone(), admin_url.clone(), gid.clone());
                inflight.push(tokio::spawn(async move {
                    let r = admin
                        .post(format!("{admin_url}/phones/{from}/messages"))
                        .json(&json!({"to": gid, "text": format!("gb {seq} {}", now_ms())}))
                        .send()
                        .await;
                    if !matches!(&r, Ok(r) if r.status().is_success()) {
                        eprintln!("answer {seq}: {r:?}");
                    }
                }));
            }
            for f in inflight {
                let _ = f.await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let window = t.elapsed().as_secs_f64();
    let ticks1 = pids.map(cpu_ticks);
    let cpu = |i: usize| (ticks1[i] - ticks0[i]) as f64 / TICKS_PER_SEC;
    let deadline = Instant::now() + Duration::from_secs(args.drain_secs);
    while Instant::now() < deadline
        && (received.lock().expect("receiver lock").seen.len() as u64) < answers
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut missing_at = Vec::new();
    for p in &samples {
        let got = gateway_texts_at(&admin, &admin_url, p, &gid).await?;
        let missing = (1..=total).filter(|s| !got.contains(s)).count();
        missing_at.push(format!("{p}: {missing} missing"));
    }
    let r = received.lock().expect("receiver lock");
    let mut lat = r.latencies.clone();
    lat.sort_unstable();
    let mut sl = sent_lat.lock().expect("lat lock").clone();
    sl.sort_unstable();
    println!();
    println!(
        "gateway sends: {} of {total} answered ({} failed); API answer {}",
        sl.len(),
        failed.load(std::sync::atomic::Ordering::Relaxed),
        summary(&sl)
    );
    println!("  at the sampled members: {}", missing_at.join(", "));
    println!(
        "members' messages to the webhook: {} of {answers} delivered, {} duplicated; latency {}",
        r.seen.len(),
        r.duplicates,
        summary(&lat)
    );
    println!(
        "delivery receipts announced during the window: {} (~{:.0}/s)",
        r.receipts - receipts_before,
        (r.receipts - receipts_before) as f64 / window
    );
    println!(
        "CPU over the {window:.1} s window: wa-sim {:.0} %, wamux {:.0} % of a core; wamux {:.1} ms of CPU per group message sent or received",
        cpu(0) / window * 100.0,
        cpu(1) / window * 100.0,
        cpu(1) * 1000.0 / (total + answers) as f64
    );
    Ok(())
}
