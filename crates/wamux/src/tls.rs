//! Built-in HTTPS for installs without a reverse proxy: `WAMUX_TLS_CERT` (certificate chain,
//! PEM) and `WAMUX_TLS_KEY` (private key, PEM), served with rustls on the API port.
//!
//! The files are watched (their modification times, every [`RELOAD_EVERY`]), so a renewed
//! certificate — certbot's deploy hook, say — is picked up without a restart; a pair that
//! fails to load is logged and the previous one kept. Handshakes run in their own tasks, so
//! a slow or silent client never holds up the accept loop.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How often the certificate files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads a certificate chain and key into a server configuration (HTTP/1.1 only, which is
/// what the API and the WebSocket upgrade use).
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read WAMUX_TLS_CERT {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "WAMUX_TLS_CERT {} holds no certificate",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read WAMUX_TLS_KEY {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("WAMUX_TLS_CERT and WAMUX_TLS_KEY do not form a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The current server configuration, replaced when the files change.
#[derive(Clone)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Reloading {
    fn get(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn stamp(&self) -> Option<(SystemTime, SystemTime)> {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((m(&self.cert)?, m(&self.key)?))
    }

    async fn watch(self, stop: CancellationToken) {
        let mut seen = self.stamp();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RELOAD_EVERY) => {}
            }
            let now = self.stamp();
            if now.is_none() || now == seen {
                continue;
            }
            seen = now;
            match load(&self.cert, &self.key) {
                Ok(c) => {
                    *self.current.write().unwrap_or_else(|p| p.into_inner()) = c;
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                }
                // Often the cert is written before the key: the next change completes it.
                Err(e) => {
                    tracing::warn!("TLS certificate not reloaded, keeping the old one: {e:#}")
                }
            }
        }
    }
}

/// A listener that hands out TLS streams, for `axum::serve`.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    _stop: tokio_util::sync::DropGuard,
}

impl TlsListener {
    /// Wraps `listener`; fails when the certificate or key cannot be loaded.
    pub fn new(listener: TcpListener, cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let local = listener.local_addr()?;
        let reloading = Reloading {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: Arc::new(RwLock::new(load(cert, key)?)),
        };
        let stop = CancellationToken::new();
        tokio::spawn(reloading.clone().watch(stop.clone()));
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, reloading, tx, stop.clone()));
        Ok(Self {
            local,
            ready,
            _stop: stop.drop_guard(),
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: Reloading,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    stop: CancellationToken,
) {
    loop {
        let (tcp, addr) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = TlsAcceptor::from(config.get());
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // The server is gone when this fails; nothing left to hand it to.
                    let _closed = ready.send((tls, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(client = %addr, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(client = %addr, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
