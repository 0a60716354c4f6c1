//! Scale benchmark of the gateway: many linked sessions in one `wamux` process.
//!
//! Starts the release `wa-sim` and the release `wamux` (built with `--features sandbox`) as
//! separate processes, so the memory and CPU figures are the gateway's own. Creates N sessions
//! through the HTTP API, has one simulated phone per session scan its QR, waits until all are
//! `connected`, then reports:
//! - the gateway's resident memory empty and with N idle sessions, hence MiB per session;
//! - its CPU use while the sessions sit idle;
//! - the time until all N are `connected` again after a SIGKILL and restart;
//! - `POST /api/send-message` throughput and latency across sessions.
//!
//! ```text
//! cargo build --release -p wa-sim -p wamux --all-features --bins --examples
//! target/release/examples/bench_sessions --sessions 1000
//! ```
//! Flags: `--sessions N` (1000), `--link-concurrency N` (16), `--idle-secs S` (30),
//! `--messages N` (2000), `--send-concurrency N` (32). `WA_SIM_BIN` and `WAMUX_BIN` override
//! the binaries (default `target/release/wa-sim`, `target/release/wamux`);
//! `BENCH_DATABASE_URL=postgres://...` (an empty database or schema) runs the gateway on
//! PostgreSQL.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use futures::{StreamExt as _, TryStreamExt as _};
use serde_json::{Value, json};

mod support;
use support::{Link, cpu_ticks, free_port, start_sim, status_kib};

const API_KEY: &str = "bench-sessions-key";
/// Linux reports utime/stime in USER_HZ ticks, which is 100 on every common configuration.
const TICKS_PER_SEC: f64 = 100.0;

struct Args {
    sessions: usize,
    link_concurrency: usize,
    idle_secs: u64,
    messages: usize,
    send_concurrency: usize,
    restarts: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        sessions: 1000,
        link_concurrency: 16,
        idle_secs: 30,
        messages: 2000,
        send_concurrency: 32,
        restarts: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .with_context(|| format!("{flag}: `{value}` is not a number"))?;
        match flag.as_str() {
            "--sessions" => a.sessions = n as usize,
            "--link-concurrency" => a.link_concurrency = n.max(1) as usize,
            "--idle-secs" => a.idle_secs = n,
            "--messages" => a.messages = n as usize,
            "--send-concurrency" => a.send_concurrency = n.max(1) as usize,
            "--restarts" => a.restarts = n.max(1) as usize,
            other => bail!("unknown flag {other}"),
        }
    }
    ensure!(a.sessions >= 1, "--sessions must be at least 1");
    Ok(a)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn phone_of(i: usize) -> String {
    format!("1555{i:07}")
}

fn session_of(i: usize) -> String {
    format!("bench{i}")
}

/// The gateway as a child process; restarted over the same data dir.
struct Gateway {
    bin: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    port: u16,
    ws_url: String,
    ca_file: String,
    child: Option<Child>,
}

impl Gateway {
    fn spawn(&mut self) -> anyhow::Result<u32> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.bin);
        // Settings the caller's environment may hold must not leak into the measured process.
        for (k, _) in std::env::vars() {
            if k.starts_with("WAMUX_") {
                cmd.env_remove(k);
            }
        }
        // A developer's RUST_BACKTRACE makes every logged anyhow error capture a backtrace,
        // which a production service does not pay for.
        cmd.env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE");
        let child = cmd
            .arg("serve")
            .env("WAMUX_API_KEY", API_KEY)
            .env("WAMUX_HOST", "127.0.0.1")
            .env("WAMUX_PORT", self.port.to_string())
            .env("WAMUX_DATA_DIR", &self.data_dir)
            .env("WAMUX_WA_URL", &self.ws_url)
            .env("WAMUX_WA_CA_FILE", &self.ca_file)
            .envs(support::database_url().map(|u| ("WAMUX_DATABASE_URL", u)))
            .env(
                "WAMUX_LOG",
                std::env::var("BENCH_WAMUX_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let pid = child.id();
        self.child = Some(child);
        Ok(pid)
    }

    /// SIGKILL: no graceful shutdown, as after a crash.
    fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            eprintln!("stopping wamux: {e}");
        }
    }
}

async fn wait_healthy(http: &reqwest::Client, gw: &Gateway) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let r = http
            .get(format!("{}/api/health", gw.base()))
            .header("X-API-Key", API_KEY)
            .send()
            .await;
        if matches!(&r, Ok(r) if r.status().is_success()) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "wamux not healthy after 60 s; see {} ({r:?})",
                gw.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many sessions are `connected`, and how many are listed at all.
async fn count_connected(http: &reqwest::Client, base: &str) -> anyhow::Result<(usize, usize)> {
    let v: Value = http
        .get(format!("{base}/api/sessions"))
        .header("X-API-Key", API_KEY)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let list = v["sessions"].as_array().context("no `sessions` array")?;
    let connected = list.iter().filter(|s| s["status"] == "connected").count();
    Ok((connected, list.len()))
}

async fn wait_all_connected(
    http: &reqwest::Client,
    base: &str,
    n: usize,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut last = (0, 0);
    loop {
        // Connection refused while the restarted process is still binding: keep polling.
        if let Ok(c) = count_connected(http, base).await {
            last = c;
            if c.0 >= n {
                return Ok(start.elapsed());
            }
        }
        ensure!(
            start.elapsed() < limit,
            "only {} of {n} connected ({} listed) after {limit:?}",
            last.0,
            last.1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx]
}

/// What one SIGKILL + restart cost.
struct Resume {
    http_ready: Duration,
    all: Duration,
    first: Duration,
    half: Duration,
    p90: Duration,
    /// CPU seconds the gateway and the simulator spent from the restart until all were back.
    gateway_cpu: f64,
    sim_cpu: f64,
    log_lines: Vec<String>,
}

/// Kills the gateway (SIGKILL, as after a crash), starts it over the same data dir and polls
/// `GET /api/sessions` every 20 ms, noting when each session is first seen `connected`.
async fn restart(
    gw: &mut Gateway,
    http: &reqwest::Client,
    sim_pid: u32,
    n: usize,
) -> anyhow::Result<(u32, Resume)> {
    gw.kill()?;
    let log_before = std::fs::metadata(&gw.log).map(|m| m.len()).unwrap_or(0) as usize;
    let sim_cpu0 = cpu_ticks(sim_pid);
    let t = Instant::now();
    let pid = gw.spawn()?;
    // BENCH_PERF=FILE profiles both processes during the resume with `perf record`.
    let perf = match std::env::var("BENCH_PERF") {
        Ok(out) => Some(
            Command::new("perf")
                .args(["record", "-F", "999", "-g", "-o", &out, "-p"])
                .arg(format!("{pid},{sim_pid}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting perf")?,
        ),
        Err(_) => None,
    };
    wait_healthy(http, gw).await?;
    let http_ready = t.elapsed();
    let base = gw.base();
    let mut seen: std::collections::HashMap<String, Duration> = std::collections::HashMap::new();
    let limit = Duration::from_secs(300);
    loop {
        if let Ok(v) = http
            .get(format!("{base}/api/sessions"))
            .header("X-API-Key", API_KEY)
            .send()
            .await
            .and_then(|r| r.error_for_status())
        {
            let v: Value = v.json().await?;
            let now = t.elapsed();
            for s in v["sessions"].as_array().context("no `sessions` array")? {
                if s["status"] == "connected"
                    && let Some(id) = s["sessionId"].as_str()
                {
                    seen.entry(id.to_owned()).or_insert(now);
                }
            }
            if seen.len() >= n {
                break;
            }
        }
        ensure!(
            t.elapsed() < limit,
            "only {} of {n} connected after {limit:?}",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = t.elapsed();
    if let Some(perf) = perf {
        // SIGINT makes perf write its file and exit.
        Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status()?;
        perf.wait_with_output()?;
    }
    let gateway_cpu = cpu_ticks(pid) as f64 / TICKS_PER_SEC;
    let sim_cpu = cpu_ticks(sim_pid).saturating_sub(sim_cpu0) as f64 / TICKS_PER_SEC;
    let mut times: Vec<Duration> = seen.into_values().collect();
    times.sort();
    let log = std::fs::read_to_string(&gw.log).unwrap_or_default();
    let log_lines = log
        .get(log_before..)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    Ok((
        pid,
        Resume {
            http_ready,
            all,
            first: times[0],
            half: percentile(&times, 0.5),
            p90: percentile(&times, 0.9),
            gateway_cpu,
            sim_cpu,
            log_lines,
        },
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let n = args.sessions;
    let wamux_bin = std::env::var("WAMUX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/release/wamux"));
    let dir = tempfile::tempdir()?;

    // The simulator.
    let sim = start_sim(dir.path()).await?;
    let admin = sim.admin_client()?;
    let (ws_url, admin_url, ca_file) = (
        sim.ws_url.clone(),
        sim.admin_url.clone(),
        sim.ca_file.clone(),
    );
    println!("database: {}", support::engine());
    println!("wa-sim pid {}", sim.proc.0.id());

    // The gateway, empty.
    let mut gw = Gateway {
        bin: wamux_bin,
        data_dir: dir.path().join("wamux"),
        log: dir.path().join("wamux.log"),
        port: free_port()?,
        ws_url,
        ca_file,
        child: None,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let pid = gw.spawn()?;
    wait_healthy(&http, &gw).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_empty = status_kib(pid, "VmRSS:");
    println!(
        "wamux pid {pid}, empty RSS: {rss_empty} KiB ({:.1} MiB)",
        mib(rss_empty)
    );

    // One phone per session: a session is a linked device of its own account.
    let t = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let admin = &admin;
            let admin_url = &admin_url;
            async move {
                let r = admin
                    .post(format!("{admin_url}/phones"))
                    .json(&json!({ "phone": phone_of(i), "name": format!("Phone {i}") }))
                    .send()
                    .await?;
                ensure!(
                    r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT,
                    "creating phone {i}: {}",
                    r.status()
                );
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await?;
    println!("{n} phones created in {:.1} s", t.elapsed().as_secs_f64());

    let base = gw.base();
    let t = Instant::now();
    let mut linked = 0usize;
    let link = Link {
        http: &http,
        base: &base,
        key: API_KEY,
        admin: &admin,
        admin_url: &admin_url,
    };
    let mut links = futures::stream::iter(0..n)
        .map(|i| {
            let link = &link;
            async move { link.link(&session_of(i), &phone_of(i)).await }
        })
        .buffer_unordered(args.link_concurrency);
    while let Some(r) = links.next().await {
        r?;
        linked += 1;
        if linked.is_multiple_of(100) || linked == n {
            println!(
                "{linked} / {n} linked after {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
    }
    drop(links);
    wait_all_connected(&http, &base, n, Duration::from_secs(60)).await?;
    let link_time = t.elapsed();
    println!(
        "all {n} sessions connected in {:.1} s ({:.1} sessions/s)",
        link_time.as_secs_f64(),
        n as f64 / link_time.as_secs_f64()
    );

    // Post-login traffic (prekey uploads, app state, receipts) settles before "idle".
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_full = status_kib(pid, "VmRSS:");
    let cpu0 = cpu_ticks(pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let idle_cpu = (cpu_ticks(pid) - cpu0) as f64 / TICKS_PER_SEC / t0.elapsed().as_secs_f64();
    let rss_after_idle = status_kib(pid, "VmRSS:");
    let (still, _) = count_connected(&http, &base).await?;
    println!(
        "RSS with {n} connected idle sessions: {rss_full} KiB ({:.1} MiB); after the idle window: {rss_after_idle} KiB",
        mib(rss_full)
    );
    println!(
        "memory per session: {:.3} MiB ({:.0} KiB)",
        mib(rss_full.saturating_sub(rss_empty)) / n as f64,
        rss_full.saturating_sub(rss_empty) as f64 / n as f64
    );
    println!(
        "idle CPU over {} s: {:.2} % of one core ({still} / {n} still connected)",
        args.idle_secs,
        idle_cpu * 100.0
    );

    // Crash and restart over the same data dir, as often as asked; the figures of every
    // restart are printed, then their median.
    let mut pid = pid;
    let mut resumes = Vec::with_capacity(args.restarts);
    for round in 1..=args.restarts {
        let (new_pid, r) = restart(&mut gw, &http, sim.proc.0.id(), n).await?;
        pid = new_pid;
        println!(
            "restart {round}: HTTP up in {:.2} s; all {n} connected in {:.2} s; first connected at {:.2} s, \
             half at {:.2} s, 90 % at {:.2} s; CPU during the resume: wamux {:.2} s, wa-sim {:.2} s \
             ({:.0} % / {:.0} % of one core); {} gateway log lines",
            r.http_ready.as_secs_f64(),
            r.all.as_secs_f64(),
            r.first.as_secs_f64(),
            r.half.as_secs_f64(),
            r.p90.as_secs_f64(),
            r.gateway_cpu,
            r.sim_cpu,
            r.gateway_cpu / r.all.as_secs_f64() * 100.0,
            r.sim_cpu / r.all.as_secs_f64() * 100.0,
            r.log_lines.len(),
        );
        for line in r.log_lines.iter().take(5) {
            println!("  {line}");
        }
        resumes.push(r.all);
        if round < args.restarts {
            // Let the post-login traffic of this round settle before killing it again.
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
    resumes.sort();
    println!(
        "after SIGKILL + restart, all {n} connected: median {:.2} s over {} restart(s)",
        resumes[resumes.len() / 2].as_secs_f64(),
        resumes.len()
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_restarted = status_kib(pid, "VmRSS:");
    println!(
        "RSS after restart with {n} sessions: {rss_restarted} KiB ({:.1} MiB)",
        mib(rss_restarted)
    );

    // Throughput: session k sends to the phone behind session k+1, spread over all sessions.
    let t = Instant::now();
    let results: Vec<(bool, Duration)> = futures::stream::iter(0..args.messages)
        .map(|k| {
            let http = &http;
            let base = &base;
            async move {
                let started = Instant::now();
                let r = http
                    .post(format!("{base}/api/send-message"))
                    .header("X-API-Key", API_KEY)
                    .json(&json!({
                        "sessionId": session_of(k % n),
                        "to": phone_of((k + 1) % n),
                        "text": format!("bench message {k}"),
                    }))
                    .send()
                    .await;
                let ok = match r {
                    Ok(r) if r.status().is_success() => true,
                    Ok(r) => {
                        eprintln!(
                            "send {k}: {} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        );
                        false
                    }
                    Err(e) => {
                        eprintln!("send {k}: {e}");
                        false
                    }
                };
                (ok, started.elapsed())
            }
        })
        .buffer_unordered(args.send_concurrency)
        .collect()
        .await;
    let wall = t.elapsed();
    let ok = results.iter().filter(|(ok, _)| *ok).count();
    let mut lat: Vec<Duration> = results.iter().map(|(_, d)| *d).collect();
    lat.sort();
    println!(
        "send-message: {ok} / {} accepted in {:.2} s = {:.0} messages/s (concurrency {}); latency median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        args.messages,
        wall.as_secs_f64(),
        ok as f64 / wall.as_secs_f64(),
        args.send_concurrency,
        percentile(&lat, 0.5).as_secs_f64() * 1000.0,
        percentile(&lat, 0.95).as_secs_f64() * 1000.0,
        percentile(&lat, 1.0).as_secs_f64() * 1000.0,
    );
    println!("RSS after sending: {} KiB", status_kib(pid, "VmRSS:"));
    drop(gw);
    drop(sim);
    Ok(())
}
