//! What the benchmarks share: child processes that stop with the benchmark, loopback ports,
//! readings from `/proc`, and linking a session through the gateway's API and the
//! simulator's admin API.
#![allow(dead_code, reason = "each benchmark uses a different part")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

/// A child process (named for messages) that is killed when the benchmark lets go of it.
pub struct Proc(pub Child, pub &'static str);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Err(e) = self.0.kill().and_then(|()| self.0.wait().map(drop)) {
            eprintln!("stopping {}: {e}", self.1);
        }
    }
}

/// `BENCH_DATABASE_URL`: the database the measured gateway uses (`WAMUX_DATABASE_URL`), for
/// a run on PostgreSQL; it must be empty (a new database, or a new schema named in the URL's
/// `options=-c search_path=...`). Unset: SQLite in the run's data directory.
pub fn database_url() -> Option<String> {
    std::env::var("BENCH_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// The engine a run is on, for its report.
pub fn engine() -> &'static str {
    if database_url().is_some() {
        "postgres"
    } else {
        "sqlite"
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    // Bound and released at once; nothing else on the machine races for loopback ports here.
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits up to 30 s for a file another process writes in one go (the simulator's `sim.json`).
pub async fn wait_for_file(path: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    while !path.exists() {
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "{} did not appear",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give the writer a moment to close it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// A `wa-sim` process (the binary in `WA_SIM_BIN`, or target/release/wa-sim) and what its
/// `sim.json` says.
pub struct Sim {
    pub proc: Proc,
    pub ws_url: String,
    pub admin_url: String,
    pub ca_file: String,
}

/// Starts `wa-sim` on a loopback port with its data in `dir/sim`.
pub async fn start_sim(dir: &Path) -> anyhow::Result<Sim> {
    let bin = std::env::var("WA_SIM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/release/wa-sim"));
    let sim_dir = dir.join("sim");
    let proc = Proc(
        Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--log", "warn", "--data-dir"])
            .arg(&sim_dir)
            // The simulator stands in for WhatsApp's servers, which do not share the gateway's
            // cores: its journal compaction (about a second of a core per 64 MiB, every 30 s
            // at 2,000 messages/s) is left until after the run. BENCH_SIM_COMPACT_AFTER_MIB
            // sets it back (64 is the simulator's default).
            .env(
                "WA_SIM_COMPACT_AFTER_MIB",
                std::env::var("BENCH_SIM_COMPACT_AFTER_MIB").unwrap_or_else(|_| "65536".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
        "wa-sim",
    );
    wait_for_file(&sim_dir.join("sim.json")).await?;
    let info: Value = serde_json::from_slice(&std::fs::read(sim_dir.join("sim.json"))?)?;
    let field = |k: &str| {
        info[k]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("sim.json has no {k}"))
    };
    Ok(Sim {
        proc,
        ws_url: field("wsUrl")?,
        admin_url: field("adminUrl")?,
        ca_file: field("caFile")?,
    })
}

impl Sim {
    /// An HTTP client for the admin API, trusting the simulator's CA.
    pub fn admin_client(&self) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
                &self.ca_file,
            )?)?)
            .build()?)
    }
}

/// A `/proc/<pid>/status` size in KiB (`field` with its colon: "VmRSS:", "VmHWM:").
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may contain spaces; the fields after it are fixed.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// The gateway at `base` with its API key, and the simulator's admin API.
pub struct Link<'a> {
    pub http: &'a reqwest::Client,
    pub base: &'a str,
    pub key: &'a str,
    pub admin: &'a reqwest::Client,
    pub admin_url: &'a str,
}

impl Link<'_> {
    /// Starts session `id`, fetches its QR, has `phone` scan it and waits until it is connected.
    pub async fn link(&self, id: &str, phone: &str) -> anyhow::Result<()> {
        let (http, base, key) = (self.http, self.base, self.key);
        http.post(format!("{base}/api/start-session"))
            .header("X-API-Key", key)
            .json(&json!({ "sessionId": id }))
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("start-session {id}"))?;
        let start = Instant::now();
        let deadline = Duration::from_secs(120);
        let qr = loop {
            let r = http
                .get(format!("{base}/api/qr/{id}"))
                .header("X-API-Key", key)
                .send()
                .await?;
            if r.status().is_success() {
                let v: Value = r.json().await?;
                break v["qr"].as_str().context("no `qr`")?.to_owned();
            }
            // 409 until the session has its first QR.
            ensure!(
                r.status() == reqwest::StatusCode::CONFLICT && start.elapsed() < deadline,
                "no QR for {id}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.admin
            .post(format!("{}/phones/{phone}/scan", self.admin_url))
            .json(&json!({ "qr": qr }))
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("phone {phone} scanning {id}"))?;
        loop {
            let v: Value = http
                .get(format!("{base}/api/status/{id}"))
                .header("X-API-Key", key)
                .send()
                .await?
                .json()
                .await?;
            if v["status"] == "connected" {
                return Ok(());
            }
            ensure!(
                start.elapsed() < deadline,
                "{id} not connected after {deadline:?}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Starts the release `wamux serve` (`WAMUX_BIN`) against `sim`, with its data and log in
/// `dir`, on the database of [`database_url`]; only the caller's `WAMUX_WEBHOOK_*`
/// variables reach it.
pub async fn start_gateway(
    dir: &Path,
    sim: &Sim,
    port: u16,
    api_key: &str,
) -> anyhow::Result<Proc> {
    let bin = std::env::var("WAMUX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/release/wamux"));
    let log = std::fs::File::create(dir.join("wamux.log"))?;
    let mut cmd = Command::new(&bin);
    // Only the webhook settings of the caller's environment reach the measured process.
    for (k, _) in std::env::vars() {
        if k.starts_with("WAMUX_") && !k.starts_with("WAMUX_WEBHOOK_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    let child = cmd
        .arg("serve")
        .env("WAMUX_API_KEY", api_key)
        .env("WAMUX_HOST", "127.0.0.1")
        .env("WAMUX_PORT", port.to_string())
        .env("WAMUX_DATA_DIR", dir.join("wamux"))
        .env("WAMUX_WA_URL", &sim.ws_url)
        .env("WAMUX_WA_CA_FILE", &sim.ca_file)
        .envs(database_url().map(|u| ("WAMUX_DATABASE_URL", u)))
        .env("WAMUX_LOG", "warn")
        // The receivers are on loopback.
        .env("WAMUX_WEBHOOK_ALLOW_PRIVATE", "true")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Proc(child, "wamux"))
}

/// Waits up to 60 s for the gateway at `base` to answer its health check.
pub async fn wait_healthy(http: &reqwest::Client, base: &str, api_key: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let r = http
            .get(format!("{base}/api/health"))
            .header("X-API-Key", api_key)
            .send()
            .await;
        if matches!(&r, Ok(r) if r.status().is_success()) {
            return Ok(());
        }
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "wamux not healthy after 60 s ({r:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates a phone in the simulator (one that exists already is fine).
pub async fn create_phone(
    admin: &reqwest::Client,
    admin_url: &str,
    phone: &str,
) -> anyhow::Result<()> {
    let r = admin
        .post(format!("{admin_url}/phones"))
        .json(&json!({ "phone": phone, "name": format!("Phone {phone}") }))
        .send()
        .await?;
    ensure!(
        r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT,
        "creating phone {phone}: {}",
        r.status()
    );
    Ok(())
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Sorted-sample percentile.
pub fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// p50, p90, p99 and max of sorted samples, in ms.
pub fn summary(sorted: &[i64]) -> String {
    format!(
        "p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        pct(sorted, 0.5),
        pct(sorted, 0.9),
        pct(sorted, 0.99),
        sorted.last().copied().unwrap_or(-1)
    )
}

/// Serves `app` on a loopback port of its own, in the background; its base URL.
pub async fn serve(app: axum::Router) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("receiver stopped: {e}");
        }
    });
    Ok(url)
}
