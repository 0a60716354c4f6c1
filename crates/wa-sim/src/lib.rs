//! wa-sim: a WhatsApp Web multi-device server for tests, benchmarks and the
//! sandbox.
//!
//! It speaks the real protocol (Noise XX/IK handshake, binary stanzas,
//! Signal-encrypted messages, encrypted media) to unmodified whatsapp-rust
//! clients over real sockets, and simulates each account's phone in-process.
//! One port serves the chat WebSocket (`/ws/chat`), the admin API
//! (`/admin/...`) and the media host (`/mms/...`), over TLS with a CA the
//! simulator creates (or plain HTTP/WS when asked).
//!
//! Module map: [`noise`] handshake and frames, `conn` one socket, `router`
//! stanzas of logged-in devices, `phone` the virtual phones (Signal in
//! `signal`), `link_code` linking by phone number, `passkey` the passkey gate
//! on linking (WebAuthn in `webauthn`), `hub` shared state and routing,
//! `admin` the admin API, `media` the media host, `state` the
//! durable state, `journal` its persistence, `tls` certificates.
//!
//! Errors: each module has its own `thiserror` enum; `anyhow` only at the
//! edges ([`Simulator::start`]).

mod admin;
mod appstate;
mod calls;
mod conn;
mod groups;
mod history;
mod hub;
mod iq;
mod journal;
mod link_code;
mod media;
pub mod network;
pub mod noise;
mod passkey;
mod phone;
mod presence;
mod router;
mod signal;
mod state;
mod tls;
mod tokens;
mod webauthn;

pub use journal::COMPACT_AFTER;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::hub::Hub;
use crate::noise::ServerIdentity;
use crate::state::B64;

/// How to run a simulator.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where state, media blobs, the CA and `sim.json` are kept.
    pub data_dir: PathBuf,
    /// Serve `wss://`/`https://` with a generated CA (else plain `ws://`/`http://`).
    pub tls: bool,
    /// Journal size in bytes past which it is folded into the base ([`COMPACT_AFTER`] by
    /// default). Compacting takes about a second of a core per 64 MiB, so benchmarks that
    /// share the machine with the simulator defer it until after the run.
    pub compact_after: u64,
}

/// A running simulator.
pub struct Simulator {
    hub: Arc<Hub>,
    addr: SocketAddr,
    tls: bool,
    ca_file: PathBuf,
    ca_pem: String,
    server: tokio::task::JoinHandle<()>,
    persister: tokio::task::JoinHandle<()>,
    /// Stops the journal writer; only after the server, whose last answers wait for it.
    stop_persister: tokio_util::sync::CancellationToken,
}

impl Simulator {
    /// Binds, loads (or creates) state in the data dir, starts serving and
    /// writes `sim.json` with the URLs and CA path.
    pub async fn start(config: SimConfig) -> anyhow::Result<Simulator> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        let data_dir = config.data_dir.canonicalize()?;
        let mut snap = journal::load(&data_dir, None)?.unwrap_or_default();
        if snap.server_noise_private.0.len() != 32 {
            snap.server_noise_private = B64(ServerIdentity::generate_private().to_vec());
        }
        if snap.server_noise_root_private.0.len() != 32 {
            snap.server_noise_root_private = B64(ServerIdentity::generate_private().to_vec());
        }
        let private: [u8; 32] = snap.server_noise_private.0.as_slice().try_into()?;
        let root: [u8; 32] = snap.server_noise_root_private.0.as_slice().try_into()?;
        let identity = ServerIdentity::from_private(&private, &root)?;
        // Start from a fresh base: the journals so far are folded into it.
        let base_size = journal::save_base(&snap, &data_dir)?;
        let journal =
            journal::Journal::open(&data_dir, snap.journal, base_size, config.compact_after)?;

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let mut addr = listener.local_addr()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let media_host = addr.to_string();
        let hub = Hub::new(snap, identity, data_dir.clone(), media_host, journal);

        // An HTTP answer leaves once what the request changed is on disk. (The chat
        // socket waits for the same before each stanza it sends.)
        let answers =
            admin::router()
                .merge(media::router())
                .layer(axum::middleware::from_fn_with_state(
                    hub.clone(),
                    durable_answer,
                ));
        let app = Router::new()
            .route("/ws/chat", get(ws_upgrade))
            .merge(answers)
            // Media uploads and phones' media sends are far over axum's 2 MB default
            // (WhatsApp's media host takes files of up to 2 GB).
            .layer(axum::extract::DefaultBodyLimit::max(512 * 1024 * 1024))
            .with_state(hub.clone());

        let shutdown = hub.shutdown.clone();
        let (ca_file, ca_pem, server) = if config.tls {
            let material = tls::load_or_create(&data_dir)?;
            let listener = tls::TlsListener::new(listener, material.server_config)?;
            let server = tokio::spawn(async move {
                let serve = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { shutdown.cancelled().await });
                if let Err(e) = serve.await {
                    tracing::error!("server stopped: {e}");
                }
            });
            (material.ca_file, material.ca_pem, server)
        } else {
            let server = tokio::spawn(async move {
                let serve = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { shutdown.cancelled().await });
                if let Err(e) = serve.await {
                    tracing::error!("server stopped: {e}");
                }
            });
            (PathBuf::new(), String::new(), server)
        };
        let stop_persister = tokio_util::sync::CancellationToken::new();
        let persister = tokio::spawn(hub.clone().persist_loop(stop_persister.clone()));
        let sim = Simulator {
            hub,
            addr,
            tls: config.tls,
            ca_file,
            ca_pem,
            server,
            persister,
            stop_persister,
        };
        sim.write_sim_json(&data_dir)?;
        Ok(sim)
    }

    fn write_sim_json(&self, dir: &Path) -> anyhow::Result<()> {
        let body = serde_json::json!({
            "wsUrl": self.ws_url(),
            "adminUrl": self.admin_url(),
            "caFile": if self.tls { Some(self.ca_file.display().to_string()) } else { None },
            "noiseRootKey": self.noise_root_key(),
        });
        let tmp = dir.join("sim.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&body)?)?;
        std::fs::rename(&tmp, dir.join("sim.json"))?;
        Ok(())
    }

    /// The chat WebSocket URL, e.g. `wss://127.0.0.1:PORT/ws/chat`.
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/ws/chat", self.addr)
    }

    /// The admin API base URL, e.g. `https://127.0.0.1:PORT/admin`.
    pub fn admin_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/admin", self.addr)
    }

    /// The public key (hex) the server's Noise certificate chain is rooted in: what a
    /// client pins instead of WhatsApp's `WhatsAppLongTerm1` key to check the chain.
    pub fn noise_root_key(&self) -> String {
        self.hub
            .identity
            .root_public
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The latency and jitter every frame to a client takes from now on (see
    /// [`network`]); [`network::Network::default`] turns it off.
    pub fn set_network(&self, network: network::Network) {
        self.hub.network.set(network);
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate file clients should trust (empty without TLS).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The CA certificate as PEM (empty without TLS).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Closes every socket, stops serving and writes the state to disk.
    pub async fn shutdown(self) {
        self.hub.shutdown.cancel();
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(5), &mut server)
            .await
            .is_err()
        {
            tracing::warn!("server did not stop within 5 s; aborting it");
            server.abort();
        }
        self.stop_persister.cancel();
        if let Err(e) = self.persister.await {
            tracing::warn!("state writer task failed: {e}");
        }
        self.hub.close().await;
    }
}

async fn durable_answer(
    State(hub): State<Arc<Hub>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    hub.durable().await;
    response
}

async fn ws_upgrade(State(hub): State<Arc<Hub>>, ws: WebSocketUpgrade) -> Response {
    {
        let mut core = hub.core.lock().await;
        if core.faults.reject_connections > 0 {
            core.faults.reject_connections -= 1;
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "connection rejected (fault)",
            )
                .into_response();
        }
    }
    // Small socket buffers: thousands of mostly idle connections are the
    // point, and stanzas are small (media goes over HTTP).
    ws.max_message_size(32 << 20)
        .read_buffer_size(4 << 10)
        .write_buffer_size(0)
        .on_upgrade(move |socket| conn::run(hub, socket))
}
