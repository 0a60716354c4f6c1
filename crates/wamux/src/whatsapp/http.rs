//! `wacore::net::HttpClient` over reqwest (media upload/download, version lookup).

use std::sync::Arc;

use anyhow::Context as _;
use wacore::net::{HttpClient, HttpRequest, HttpResponse, StreamingHttpResponse, UploadBody};

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

    // Media downloads and uploads stream through these, so a large file is never held whole
    // in memory. The library calls them on the blocking pool; they drive reqwest on the
    // runtime through its handle.
    fn supports_streaming(&self) -> bool {
        true
    }

    fn execute_streaming(&self, request: HttpRequest) -> anyhow::Result<StreamingHttpResponse> {
        let handle = tokio::runtime::Handle::try_current()
            .context("streaming download outside the runtime")?;
        let req = self.builder(&request)?;
        let resp = handle.block_on(req.send())?;
        Ok(StreamingHttpResponse {
            status_code: resp.status().as_u16(),
            body: Box::new(BodyReader {
                handle,
                resp,
                chunk: Default::default(),
            }),
        })
    }

    fn supports_upload_streaming(&self) -> bool {
        true
    }

    fn execute_upload(
        &self,
        request: HttpRequest,
        mut body: UploadBody,
        content_length: u64,
    ) -> anyhow::Result<HttpResponse> {
        use std::io::Read as _;
        let handle = tokio::runtime::Handle::try_current()
            .context("streaming upload outside the runtime")?;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let req = self
            .builder(&request)?
            .header(reqwest::header::CONTENT_LENGTH, content_length)
            .body(reqwest::Body::wrap_stream(stream));
        let task = handle.spawn(async move {
            let resp = req.send().await?;
            let status_code = resp.status().as_u16();
            let body = resp.bytes().await?.to_vec();
            Ok::<_, reqwest::Error>(HttpResponse { status_code, body })
        });
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    // A closed channel means the request already ended; its result says why.
                    if tx.blocking_send(Ok(buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    if tx.blocking_send(Err(e)).is_err() {
                        tracing::debug!("upload ended before the body was read");
                    }
                    break;
                }
            }
        }
        drop(tx);
        Ok(handle.block_on(task)??)
    }
}

impl ReqwestHttpClient {
    fn builder(&self, request: &HttpRequest) -> anyhow::Result<reqwest::RequestBuilder> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .with_context(|| format!("bad HTTP method {}", request.method))?;
        let mut req = self.client.request(method, &request.url);
        for (k, v) in &request.headers {
            req = req.header(k, v);
        }
        Ok(req)
    }
}

/// A response body read chunk by chunk from a blocking thread.
struct BodyReader {
    handle: tokio::runtime::Handle,
    resp: reqwest::Response,
    chunk: whatsapp_rust::bytes::Bytes,
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.handle.block_on(self.resp.chunk()) {
                Ok(Some(c)) => self.chunk = c,
                Ok(None) => return Ok(0),
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
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
