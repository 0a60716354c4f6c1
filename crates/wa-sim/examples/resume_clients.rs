//! Resume benchmark of bare whatsapp-rust clients: the floor for the gateway's restart time.
//!
//! Starts the `wa-sim` binary as a child process, pairs `N` whatsapp-rust clients with it
//! (one account each, through the push-name scan convention), stops them all, then starts
//! them all again from their stored credentials at once and measures the time until every
//! client reports `Connected`, with the CPU this process and the simulator spent meanwhile.
//! This is what the gateway does after a restart, without the gateway: no HTTP API, no
//! database of its own, no session actors.
//!
//! ```text
//! cargo build --release -p wa-sim -p wamux --all-features --bins --examples
//! target/release/examples/resume_clients 1000 sqlite 3
//! ```
//! Arguments: client count (default 1000); store (`sqlite`, the default: one
//! `SqliteStore::new_for_device` per client over one shared database file, as the gateway
//! keeps them; `files`: one SQLite file per client; `memory`: whatsapp-rust's in-memory
//! store, kept across the restart); how many
//! restarts to time (default 3); `named` (the default) or `nameless`. `WA_SIM_BIN` overrides
//! the simulator binary path.
//!
//! `nameless` clients do not know their account's push name. whatsapp-rust learns it from
//! the `setting_pushName` app-state mutation, and while it is unknown every connection takes
//! the first-login path: it waits up to 10 s for an app-state key share before it reports
//! `Connected`. `named` clients are given one up front (`with_push_name`), as a client that
//! has synced its app state once has it, and take the reconnect path. Since the simulator names
//! the account in `pair-success`, `nameless` clients learn a push name at pairing too, so the
//! two modes now differ only in where the name comes from.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use whatsapp_rust::TokioRuntime;
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::wacore::store::InMemoryBackend;
use whatsapp_rust::wacore::store::traits::Backend;
use whatsapp_rust::wacore::types::events::Event;
use whatsapp_rust_sqlite_storage::SqliteStore;
use whatsapp_rust_tokio_transport::TokioWebSocketTransportFactory;

mod support;
use support::{NoMedia, cpu_ticks, rustls_config};

fn phone_of(i: usize) -> String {
    format!("1555{i:07}")
}

/// Builds the scan request's body from the raw QR string.
type ScanBody = Box<dyn Fn(&str) -> String + Send + Sync>;

#[derive(Clone, Copy, PartialEq)]
enum StoreKind {
    Sqlite,
    Files,
    Memory,
}

/// Everything needed to build client `i` again.
struct Setup {
    ws_url: String,
    admin_url: String,
    tls: Arc<rustls::ClientConfig>,
    http: reqwest::Client,
    device_db: PathBuf,
    store: StoreKind,
    /// Whether the clients know their push name (see the module docs).
    named: bool,
    /// The in-memory stores, kept across restarts (index = client).
    memory: Vec<Arc<dyn Backend>>,
}

impl Setup {
    async fn start(&self, i: usize, connected: Arc<AtomicUsize>) -> anyhow::Result<BotHandle> {
        let backend: Arc<dyn Backend> = match self.store {
            StoreKind::Memory => self.memory[i].clone(),
            StoreKind::Sqlite => Arc::new(
                SqliteStore::new_for_device(&self.device_db.to_string_lossy(), i as i32 + 1)
                    .await?,
            ),
            StoreKind::Files => {
                let file = self
                    .device_db
                    .with_file_name(format!("device-{}.db", i + 1));
                Arc::new(SqliteStore::new_for_device(&file.to_string_lossy(), 1).await?)
            }
        };
        let transport = TokioWebSocketTransportFactory::new()
            .with_url(self.ws_url.clone())
            .with_connector(whatsapp_rust_tokio_transport::Connector::Rustls(
                tokio_rustls::TlsConnector::from(self.tls.clone()),
            ));
        let http = self.http.clone();
        // Named clients pick their account by push name (the mock-phone convention);
        // nameless ones are scanned by the phone created for them.
        let (scan_url, scan_body): (String, ScanBody) = if self.named {
            (
                format!("{}/mock-phone/scan-qr", self.admin_url),
                Box::new(|qr: &str| qr.to_owned()),
            )
        } else {
            (
                format!("{}/phones/{}/scan", self.admin_url, phone_of(i)),
                Box::new(|qr: &str| serde_json::json!({ "qr": qr }).to_string()),
            )
        };
        let scan_body = Arc::new(scan_body);
        let mut builder = Bot::builder()
            .with_backend_arc(backend)
            .with_transport_factory(transport)
            .with_http_client(NoMedia)
            .with_runtime(TokioRuntime)
            .with_version((2, 3000, 1_020_000_000));
        if self.named {
            builder = builder.with_push_name(format!("resume-{i}"));
        }
        let bot = builder
            .with_wanted_pre_key_count(5)
            .skip_history_sync()
            .on_event(move |event, _client| {
                let http = http.clone();
                let scan_url = scan_url.clone();
                let scan_body = scan_body.clone();
                let connected = connected.clone();
                async move {
                    match &*event {
                        Event::PairingQrCode(q) => {
                            let scan = http
                                .post(&scan_url)
                                .header("content-type", "application/json")
                                .body(scan_body(&q.code))
                                .send()
                                .await;
                            if let Err(e) = scan {
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
        Ok(bot.spawn())
    }
}

async fn wait_for(connected: &AtomicUsize, n: usize, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while connected.load(Ordering::Relaxed) < n {
        anyhow::ensure!(
            start.elapsed() < limit,
            "only {} of {n} clients connected after {limit:?}",
            connected.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn stop_all(clients: Vec<BotHandle>) {
    let mut stopping = tokio::task::JoinSet::new();
    for c in clients {
        stopping.spawn(c.shutdown());
    }
    while stopping.join_next().await.is_some() {}
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let store = match args.next().as_deref() {
        None | Some("sqlite") => StoreKind::Sqlite,
        Some("files") => StoreKind::Files,
        Some("memory") => StoreKind::Memory,
        Some(other) => {
            anyhow::bail!("store must be `sqlite`, `files` or `memory`, not `{other}`")
        }
    };
    let restarts: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let named = match args.next().as_deref() {
        None | Some("named") => true,
        Some("nameless") => false,
        Some(other) => anyhow::bail!("`named` or `nameless`, not `{other}`"),
    };
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("sim");

    let (mut child, info) = support::spawn_sim(&data_dir).await?;
    let sim_pid = child.id().to_string();
    let ca_pem = std::fs::read_to_string(info["caFile"].as_str().unwrap())?;
    let setup = Arc::new(Setup {
        ws_url: info["wsUrl"].as_str().unwrap().to_string(),
        admin_url: info["adminUrl"].as_str().unwrap().to_string(),
        tls: rustls_config(&ca_pem),
        http: reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
            .build()?,
        device_db: dir.path().join("whatsapp.db"),
        store,
        named,
        memory: (0..n)
            .map(|_| Arc::new(InMemoryBackend::new()) as Arc<dyn Backend>)
            .collect(),
    });
    println!("wa-sim pid {sim_pid}");
    if !named {
        for i in 0..n {
            let r = setup
                .http
                .post(format!("{}/phones", setup.admin_url))
                .header("content-type", "application/json")
                .body(
                    serde_json::json!({ "phone": phone_of(i), "name": format!("Phone {i}") })
                        .to_string(),
                )
                .send()
                .await?;
            anyhow::ensure!(
                r.status().is_success(),
                "creating phone {i}: {}",
                r.status()
            );
        }
    }

    // Pair in waves of 100 so the machine is not swamped by handshakes.
    let connected = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        clients.push(setup.start(i, connected.clone()).await?);
        if i % 100 == 99 {
            wait_for(&connected, i + 1 - 20, Duration::from_secs(300)).await?;
        }
    }
    wait_for(&connected, n, Duration::from_secs(600)).await?;
    println!("paired {n} clients in {:.1} s", t.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(10)).await;

    let mut times = Vec::new();
    for round in 1..=restarts {
        stop_all(std::mem::take(&mut clients)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let connected = Arc::new(AtomicUsize::new(0));
        let sim0 = cpu_ticks(&sim_pid);
        let self0 = cpu_ticks("self");
        let t = Instant::now();
        // All at once, as a restarted process would: each start opens its store and spawns.
        let mut starting = tokio::task::JoinSet::new();
        for i in 0..n {
            let setup = setup.clone();
            let connected = connected.clone();
            starting.spawn(async move { setup.start(i, connected).await });
        }
        while let Some(c) = starting.join_next().await {
            clients.push(c??);
        }
        let spawned = t.elapsed();
        wait_for(&connected, n, Duration::from_secs(300)).await?;
        let all = t.elapsed();
        let sim_cpu = (cpu_ticks(&sim_pid) - sim0) as f64 / 100.0;
        let own_cpu = (cpu_ticks("self") - self0) as f64 / 100.0;
        println!(
            "restart {round}: all {n} started in {:.2} s, all connected in {:.2} s; CPU meanwhile: \
             clients {own_cpu:.2} s ({:.0} % of one core), wa-sim {sim_cpu:.2} s ({:.0} %)",
            spawned.as_secs_f64(),
            all.as_secs_f64(),
            own_cpu / all.as_secs_f64() * 100.0,
            sim_cpu / all.as_secs_f64() * 100.0,
        );
        times.push(all);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    times.sort();
    println!(
        "median over {restarts} restart(s): {:.2} s",
        times[times.len() / 2].as_secs_f64()
    );
    stop_all(clients).await;
    child.kill()?;
    child.wait()?;
    Ok(())
}
