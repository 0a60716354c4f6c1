//! Capacity benchmark: one `wa-sim` process, many paired idle clients.
//!
//! Starts the `wa-sim` binary as a child process (so its memory and CPU are
//! its own), pairs `N` whatsapp-rust clients with it (one account each, via
//! the push-name scan convention), keeps them idle and connected, and
//! reports the simulator's resident memory per connection and its CPU use
//! while idle.
//!
//! ```text
//! cargo build --release -p wa-sim --bin wa-sim
//! cargo run --release -p wa-sim --example idle_clients -- 5000 60
//! ```
//! Arguments: client count (default 1000), idle seconds to measure (default 60).
//! `WA_SIM_BIN` overrides the simulator binary path.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use whatsapp_rust::TokioRuntime;
use whatsapp_rust::bot::Bot;
use whatsapp_rust::wacore::store::InMemoryBackend;
use whatsapp_rust::wacore::types::events::Event;
use whatsapp_rust_tokio_transport::TokioWebSocketTransportFactory;

mod support;
use support::{NoMedia, cpu_ticks, proc_status_kib, rustls_config};

fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let idle_secs: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(60);
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("sim");

    let (mut child, info) = support::spawn_sim(&data_dir).await?;
    let pid = child.id();
    let ws_url = info["wsUrl"].as_str().unwrap().to_string();
    let admin_url = info["adminUrl"].as_str().unwrap().to_string();
    let ca_pem = std::fs::read_to_string(info["caFile"].as_str().unwrap())?;
    let tls = rustls_config(&ca_pem);
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
        .build()?;
    let rss_before = rss_kib(pid);
    println!("wa-sim pid {pid}, RSS before clients: {rss_before} KiB");

    let connected = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::with_capacity(n);
    let pairing_started = Instant::now();
    for i in 0..n {
        let connector = whatsapp_rust_tokio_transport::Connector::Rustls(
            tokio_rustls::TlsConnector::from(tls.clone()),
        );
        let transport = TokioWebSocketTransportFactory::new()
            .with_url(ws_url.clone())
            .with_connector(connector);
        let http = http.clone();
        let scan_url = format!("{admin_url}/mock-phone/scan-qr");
        let counter = connected.clone();
        let bot = Bot::builder()
            .with_backend(InMemoryBackend::new())
            .with_transport_factory(transport)
            .with_http_client(NoMedia)
            .with_runtime(TokioRuntime)
            .with_version((2, 3000, 1_020_000_000))
            .with_push_name(format!("bench-{i}"))
            .with_wanted_pre_key_count(5)
            .skip_history_sync()
            .on_event(move |event, _client| {
                let http = http.clone();
                let scan_url = scan_url.clone();
                let connected = counter.clone();
                async move {
                    match &*event {
                        Event::PairingQrCode(q) => {
                            if let Err(e) = http.post(&scan_url).body(q.code.clone()).send().await {
                                eprintln!("scan failed: {e}");
                            }
                        }
                        Event::Connected(_) => {
                            connected.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            })
            .build()
            .await?;
        clients.push(bot.spawn());
        // Pair in waves so the machine is not swamped by handshakes.
        if i % 100 == 99 {
            while connected.load(Ordering::Relaxed) + 20 < i {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            println!(
                "{} / {n} connected after {:.1} s",
                connected.load(Ordering::Relaxed),
                pairing_started.elapsed().as_secs_f64()
            );
        }
    }
    while connected.load(Ordering::Relaxed) < n {
        anyhow::ensure!(
            pairing_started.elapsed() < Duration::from_secs(30 * 60),
            "only {} of {n} clients connected",
            connected.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "all {n} clients paired and connected in {:.1} s",
        pairing_started.elapsed().as_secs_f64()
    );

    // Let post-login traffic settle before measuring "idle".
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cpu0 = cpu_ticks(&pid.to_string());
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let cpu1 = cpu_ticks(&pid.to_string());
    let wall = t0.elapsed().as_secs_f64();
    let rss_after = rss_kib(pid);
    let (status, body) = {
        let r = http.get(format!("{admin_url}/health")).send().await?;
        (r.status(), r.text().await?)
    };
    println!("health: {status} {body}");
    println!(
        "connected clients:       {}",
        connected.load(Ordering::Relaxed)
    );
    println!("wa-sim RSS:              {rss_before} KiB -> {rss_after} KiB");
    println!(
        "memory per connection:   {:.1} KiB",
        (rss_after.saturating_sub(rss_before)) as f64 / n as f64
    );
    println!(
        "idle CPU over {wall:.0} s:     {:.2} % of one core",
        (cpu1 - cpu0) as f64 / ticks_per_sec / wall * 100.0
    );
    child.kill()?;
    child.wait()?;
    Ok(())
}
