//! What the simulator's client benchmarks share: an HTTP client for clients that send no
//! media, a TLS setup that trusts the simulator's CA, and CPU readings from `/proc`.

use std::sync::Arc;

use whatsapp_rust::wacore::net::{HttpClient, HttpRequest, HttpResponse};

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
