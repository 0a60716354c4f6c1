//! `wacore::net::HttpClient` over reqwest (media upload/download, version lookup).

use std::sync::Arc;

use anyhow::Context as _;
use wacore::net::{HttpClient, HttpRequest, HttpResponse};

#[derive(Clone)]
pub(super) struct ReqwestHttpClient {
    client: reqwest::Client,
}

impl ReqwestHttpClient {
    /// `extra_ca`: a PEM certificate to trust besides the usual roots (the simulator's).
    pub(super) fn new(extra_ca: Option<&[u8]>) -> anyhow::Result<Self> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(20))
            .timeout(std::time::Duration::from_secs(300));
        if let Some(pem) = extra_ca {
            b = b.add_root_certificate(
                reqwest::Certificate::from_pem(pem).context("invalid CA certificate (PEM)")?,
            );
        }
        Ok(Self {
            client: b.build().context("cannot build the HTTP client")?,
        })
    }
}

#[whatsapp_rust::async_trait]
impl HttpClient for ReqwestHttpClient {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .with_context(|| format!("bad HTTP method {}", request.method))?;
        let mut req = self.client.request(method, &request.url);
        for (k, v) in &request.headers {
            req = req.header(k, v);
        }
        if let Some(body) = request.body {
            req = req.body(body);
        }
        let resp = req.send().await?;
        let status_code = resp.status().as_u16();
        let body = resp.bytes().await?.to_vec();
        Ok(HttpResponse { status_code, body })
    }
}

/// A rustls client configuration trusting the usual web roots plus `ca_pem`.
pub(super) fn rustls_config_with_ca(ca_pem: &[u8]) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.context("invalid CA certificate (PEM)")?)
            .context("unusable CA certificate")?;
        n += 1;
    }
    anyhow::ensure!(n > 0, "the CA file holds no certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
