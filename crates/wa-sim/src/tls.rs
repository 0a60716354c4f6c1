//! TLS for the simulator's single port: a local certificate authority, a leaf
//! certificate for `127.0.0.1`/`localhost`, and a listener that hands axum
//! already-decrypted streams.
//!
//! The CA key is kept in the data dir so a restarted simulator serves a leaf
//! that clients configured with the old `ca.pem` still trust.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Errors while creating or loading the simulator's certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("reading or writing {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("bad PEM in {0}")]
    Pem(PathBuf),
}

/// The CA (as PEM, and where it was written) plus a ready server config.
pub struct TlsMaterial {
    pub ca_pem: String,
    pub ca_file: PathBuf,
    pub server_config: Arc<rustls::ServerConfig>,
}

fn ca_params() -> CertificateParams {
    // Deterministic parameters: together with the stored key they rebuild the
    // same issuer after a restart without parsing the old certificate.
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "wa-sim local CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "wa-sim");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, data: &str) -> Result<(), TlsError> {
    std::fs::write(path, data).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Loads the CA from `dir` (or creates it), then signs a fresh leaf.
pub fn load_or_create(dir: &Path) -> Result<TlsMaterial, TlsError> {
    let ca_file = dir.join("ca.pem");
    let ca_key_file = dir.join("ca-key.pem");
    let (ca_key, ca_pem) = if ca_file.exists() && ca_key_file.exists() {
        let key = KeyPair::from_pem(&read(&ca_key_file)?)?;
        (key, read(&ca_file)?)
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        let pem = cert.pem();
        write(&ca_key_file, &key.serialize_pem())?;
        write(&ca_file, &pem)?;
        (key, pem)
    };
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "wa-sim");
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;

    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|_| TlsError::Pem(ca_file.clone()))?;
    let key_der = PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes())
        .map_err(|_| TlsError::Pem(ca_key_file.clone()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca_der], key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem,
        ca_file,
        server_config: Arc::new(config),
    })
}

/// A listener that performs TLS handshakes concurrently, so one slow or
/// hostile client never holds up the accept loop.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Usually EMFILE: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if let Err(e) = tcp.set_nodelay(true) {
                    // Only latency suffers; the connection still works.
                    tracing::debug!("set_nodelay for {addr}: {e}");
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(stream)) => {
                            if tx.send((stream, addr)).await.is_err() {
                                tracing::debug!("listener closed before handing over {addr}");
                            }
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {addr} failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {addr} timed out"),
                    }
                });
            }
        });
        Ok(Self { rx, local, task })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept task only ends when aborted on drop; park forever so
            // axum's serve loop simply stops producing connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
