//! Media benchmark of the gateway: one large video in and out, with the gateway's memory.
//!
//! Starts the release `wa-sim` and the release `wamux` (built with the `sandbox` feature) as
//! separate processes, so the memory figures are the gateway's own, links one session, then:
//! - in: a phone sends a video to the session; timed from the phone's send to the file being
//!   stored (the message's `media` in the history);
//! - out (multipart): `POST /api/send-media` with the video as a multipart upload, streamed
//!   from disk by the client; timed until the response (uploaded to the media host and sent);
//! - out (url): `POST /api/send-media` with a `url` served by this process.
//!
//! For each transfer the gateway's peak resident memory is taken from `VmHWM` (reset through
//! `/proc/<pid>/clear_refs` before the transfer) and from sampling `VmRSS` every 5 ms, and
//! reported over the idle process's RSS. The received files are checked byte for byte
//! (sha256) on the phone and at `fileUrl`.
//!
//! ```text
//! cargo build --release -p wa-sim -p wamux --all-features --bins --examples
//! target/release/examples/media_bench --mib 50
//! ```
//! Flags: `--mib N` (50). `WA_SIM_BIN` and `WAMUX_BIN` override the binaries (default
//! `target/release/wa-sim`, `target/release/wamux`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod support;
use support::{Proc, free_port, start_sim, status_kib};

const API_KEY: &str = "media-bench-key";
const SESSION: &str = "bench";
const ALICE: &str = "15550001001";
const BOB: &str = "15550001002";

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Peak memory of the gateway over one transfer: a sampler thread plus the kernel's own
/// high-water mark.
struct Peak {
    pid: u32,
    max_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peak {
    fn start(pid: u32) -> Self {
        // "5" resets VmHWM to the current RSS (Linux >= 4.0).
        if let Err(e) = std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
            eprintln!("note: cannot reset VmHWM ({e}); the sampled peak still holds");
        }
        let max_kib = Arc::new(AtomicU64::new(status_kib(pid, "VmRSS:")));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (max_kib.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            pid,
            max_kib,
            stop,
            thread: Some(thread),
        }
    }

    /// (sampled peak, VmHWM), in KiB.
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
        (
            self.max_kib.load(Ordering::Relaxed),
            status_kib(self.pid, "VmHWM:"),
        )
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn get(&self, path: &str) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("X-API-Key", API_KEY)
            .send()
            .await?;
        let s = r.status();
        Ok((s, r.json().await.unwrap_or(Value::Null)))
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("X-API-Key", API_KEY)
            .json(&body)
            .send()
            .await?;
        let s = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        ensure!(s.is_success(), "{path}: {s} {v}");
        Ok(v)
    }
}

/// The history message `id` once its file is stored; fails on `media.error`.
async fn stored_message(api: &Api, id: &str) -> anyhow::Result<Value> {
    let start = Instant::now();
    loop {
        let (_, b) = api
            .get(&format!("/api/messages/{SESSION}?limit=20"))
            .await?;
        if let Some(m) = b["messages"]
            .as_array()
            .and_then(|l| l.iter().find(|m| m["id"] == id))
        {
            if let Some(e) = m["media"]["error"].as_str() {
                bail!("download failed: {e}");
            }
            if m["media"]["fileUrl"].is_string() {
                return Ok(m.clone());
            }
        }
        ensure!(
            start.elapsed() < Duration::from_secs(300),
            "{id} not stored after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until Bob's phone has message `id` and returns its media summary.
async fn bob_received(admin: &reqwest::Client, admin_url: &str, id: &str) -> anyhow::Result<Value> {
    let start = Instant::now();
    loop {
        let list: Value = admin
            .get(format!("{admin_url}/phones/{BOB}/messages"))
            .send()
            .await?
            .json()
            .await?;
        if let Some(m) = list
            .as_array()
            .and_then(|l| l.iter().find(|m| m["id"] == id))
        {
            return Ok(m["media"].clone());
        }
        ensure!(
            start.elapsed() < Duration::from_secs(120),
            "Bob's phone did not get {id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn report(what: &str, bytes: usize, took: Duration, peak: (u64, u64), idle: u64) {
    let mb = bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{what}: {mb:.0} MiB in {:.2} s = {:.1} MiB/s; gateway peak RSS {:.1} MiB sampled / {:.1} MiB VmHWM = +{:.1} MiB over idle",
        took.as_secs_f64(),
        mb / took.as_secs_f64(),
        mib(peak.0),
        mib(peak.1),
        mib(peak.0.max(peak.1).saturating_sub(idle)),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut size_mib = 50usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--mib" => {
                size_mib = args
                    .next()
                    .context("--mib needs a value")?
                    .parse()
                    .context("--mib takes a number")?
            }
            other => bail!("unknown flag {other}"),
        }
    }
    let wamux_bin = std::env::var("WAMUX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/release/wamux"));
    let dir = tempfile::tempdir()?;

    let sim = start_sim(dir.path()).await?;
    let admin = sim.admin_client()?;
    let (ws_url, admin_url, ca_file) = (
        sim.ws_url.clone(),
        sim.admin_url.clone(),
        sim.ca_file.clone(),
    );

    let port = free_port()?;
    let log = std::fs::File::create(dir.path().join("wamux.log"))?;
    let mut cmd = Command::new(&wamux_bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("WAMUX_") {
            cmd.env_remove(k);
        }
    }
    let gw = Proc(
        cmd.arg("serve")
            .env("WAMUX_API_KEY", API_KEY)
            .env("WAMUX_HOST", "127.0.0.1")
            .env("WAMUX_PORT", port.to_string())
            .env("WAMUX_DATA_DIR", dir.path().join("wamux"))
            .env("WAMUX_WA_URL", &ws_url)
            .env("WAMUX_WA_CA_FILE", &ca_file)
            .env("WAMUX_MEDIA_ALLOW_PRIVATE", "true")
            .env("WAMUX_MEDIA_MAX_BYTES", ((size_mib + 16) << 20).to_string())
            .env("WAMUX_MEDIA_FETCH_TIMEOUT", "300s")
            .env("WAMUX_LOG", "warn")
            .env_remove("RUST_BACKTRACE")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", wamux_bin.display()))?,
        "wamux",
    );
    let pid = gw.0.id();
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()?,
        base: format!("http://127.0.0.1:{port}"),
    };
    let start = Instant::now();
    while api.get("/api/health").await.is_err() {
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "wamux did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Two phones; Alice's account is linked to the session.
    for (phone, name) in [(ALICE, "Alice"), (BOB, "Bob")] {
        admin
            .post(format!("{admin_url}/phones"))
            .json(&json!({"phone": phone, "name": name}))
            .send()
            .await?
            .error_for_status()?;
    }
    api.post("/api/start-session", json!({"sessionId": SESSION}))
        .await?;
    let qr = loop {
        let (s, v) = api.get(&format!("/api/qr/{SESSION}")).await?;
        if s.is_success() {
            break v["qr"].as_str().context("qr")?.to_owned();
        }
        ensure!(start.elapsed() < Duration::from_secs(120), "no QR");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    admin
        .post(format!("{admin_url}/phones/{ALICE}/scan"))
        .json(&json!({"qr": qr}))
        .send()
        .await?
        .error_for_status()?;
    loop {
        let (_, v) = api.get(&format!("/api/status/{SESSION}")).await?;
        if v["status"] == "connected" {
            break;
        }
        ensure!(start.elapsed() < Duration::from_secs(120), "not connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Post-login traffic settles first.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = status_kib(pid, "VmRSS:");
    println!(
        "wamux pid {pid}: idle RSS with one connected session {:.1} MiB (VmHWM so far {:.1} MiB)",
        mib(idle),
        mib(status_kib(pid, "VmHWM:"))
    );

    // A video that does not compress: xorshift bytes.
    let len = size_mib << 20;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let video: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let video_sha = sha_hex(&video);
    let video_path = dir.path().join("clip.mp4");
    std::fs::write(&video_path, &video)?;

    // In: Bob's phone sends the video; the gateway downloads, decrypts and stores it.
    let body = json!({"to": ALICE, "caption": "big clip", "media": {
        "mimetype": "video/mp4",
        "data": base64::engine::general_purpose::STANDARD.encode(&video),
    }});
    let peak = Peak::start(pid);
    let t = Instant::now();
    let sent: Value = admin
        .post(format!("{admin_url}/phones/{BOB}/messages"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    drop(body);
    let phone_done = t.elapsed();
    let id = sent["id"].as_str().context("message id")?;
    let msg = stored_message(&api, id).await?;
    let took = t.elapsed();
    let peak = peak.finish();
    ensure!(
        msg["media"]["sha256"] == video_sha.as_str(),
        "stored file differs: {}",
        msg["media"]
    );
    let gateway_part = took.saturating_sub(phone_done);
    println!(
        "(of which the phone's encrypt + upload + send: {:.2} s; the gateway's download, decrypt and store after it: {:.2} s = {:.1} MiB/s)",
        phone_done.as_secs_f64(),
        gateway_part.as_secs_f64(),
        size_mib as f64 / gateway_part.as_secs_f64()
    );
    report("in  (phone -> gateway)", len, took, peak, idle);
    let served = api
        .http
        .get(msg["media"]["fileUrl"].as_str().context("fileUrl")?)
        .send()
        .await?
        .bytes()
        .await?;
    ensure!(sha_hex(&served) == video_sha, "fileUrl serves other bytes");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Out, multipart: streamed from disk by the client.
    let file = tokio::fs::File::open(&video_path).await?;
    let part = reqwest::multipart::Part::stream_with_length(reqwest::Body::from(file), len as u64)
        .file_name("clip.mp4")
        .mime_str("video/mp4")?;
    let form = reqwest::multipart::Form::new()
        .text("sessionId", SESSION)
        .text("to", BOB)
        .part("file", part);
    let peak = Peak::start(pid);
    let t = Instant::now();
    let r = api
        .http
        .post(format!("{}/api/send-media", api.base))
        .header("X-API-Key", API_KEY)
        .multipart(form)
        .send()
        .await?;
    let s = r.status();
    let v: Value = r.json().await?;
    let took = t.elapsed();
    let peak = peak.finish();
    ensure!(s.is_success(), "send-media multipart: {s} {v}");
    report("out (multipart upload)", len, took, peak, idle);
    let got = bob_received(&admin, &admin_url, v["messageId"].as_str().context("id")?).await?;
    ensure!(got["sha256"] == video_sha.as_str(), "phone got {got}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Out, url: served by this process.
    let video = Arc::new(video);
    let served_video = video.clone();
    let router = axum::Router::new().route(
        "/clip.mp4",
        axum::routing::get(move || {
            let v = served_video.clone();
            async move {
                (
                    [("content-type", "video/mp4")],
                    axum::body::Bytes::from_owner(VecOwner(v)),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/clip.mp4", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    let peak = Peak::start(pid);
    let t = Instant::now();
    let v = api
        .post(
            "/api/send-media",
            json!({"sessionId": SESSION, "to": BOB, "url": url}),
        )
        .await?;
    let took = t.elapsed();
    let peak = peak.finish();
    report("out (url)             ", len, took, peak, idle);
    let got = bob_received(&admin, &admin_url, v["messageId"].as_str().context("id")?).await?;
    ensure!(got["sha256"] == video_sha.as_str(), "phone got {got}");
    println!("all three transfers byte-identical (sha256 {video_sha})");
    drop(gw);
    Ok(())
}

/// Lets the served body borrow the shared buffer instead of copying 50 MiB per request.
struct VecOwner(Arc<Vec<u8>>);

impl AsRef<[u8]> for VecOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}
