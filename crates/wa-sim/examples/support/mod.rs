//! What the simulator's client benchmarks share: starting the `wa-sim` binary, an HTTP
//! client for clients that send no media, a TLS setup that trusts the simulator's CA, and
//! CPU and memory readings from `/proc`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use whatsapp_rust::wacore::net::{HttpClient, HttpRequest, HttpResponse};

/// Starts the `wa-sim` binary (`WA_SIM_BIN`, default `target/release/wa-sim`) on a loopback
/// port with its data in `data_dir`, and waits for the `sim.json` it writes once listening.
/// Returns the child and that file's contents (`wsUrl`, `adminUrl`, `caFile`).
pub async fn spawn_sim(
    data_dir: &Path,
) -> anyhow::Result<(std::process::Child, serde_json::Value)> {
    let bin = std::env::var("WA_SIM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/release/wa-sim"));
    let child = std::process::Command::new(&bin)
        .args(["--listen", "127.0.0.1:0", "--log", "warn", "--data-dir"])
        .arg(data_dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {}: {e}", bin.display()))?;
    let sim_json = data_dir.join("sim.json");
    let start = Instant::now();
    while !sim_json.exists() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(30),
            "wa-sim did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Written before it is complete? Give the writer a moment, as a reader of a fresh file.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let info = serde_json::from_slice(&std::fs::read(&sim_json)?)?;
    Ok((child, info))
}

/// A field (`VmRSS:`, `VmHWM:`, ...) of `/proc/<pid>/status`, in KiB.
#[allow(dead_code)] // not every benchmark reads memory
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The clients' media HTTP client: the benchmarks send and fetch no media.
pub struct NoMedia;

#[whatsapp_rust::async_trait]
impl HttpClient for NoMedia {
    async fn execute(&self, _request: HttpRequest) -> anyhow::Result<HttpResponse> {
        anyhow::bail!("the benchmark sends no media")
    }
}

/// utime + stime of a process (`/proc/<proc_entry>`: a pid or `self`), in clock ticks
/// (USER_HZ, 100 on Linux).
pub fn cpu_ticks(proc_entry: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{proc_entry}/stat")).unwrap_or_default();
    // The command name may contain spaces; the fields after it are fixed.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    utime + stime
}

/// A TLS client configuration that trusts the simulator's CA (PEM).
pub fn rustls_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA pem")).expect("CA cert");
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}
