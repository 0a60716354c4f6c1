//! wamux: many WhatsApp linked-device sessions behind one HTTP API.
//!
//! [`run`] is the whole server; `main` only parses the configuration and calls it, and the
//! tests call it on port 0. Error handling: `thiserror` enums inside modules
//! ([`store::StoreError`], [`session::SessionError`], [`config::ConfigError`]), one
//! [`api::ApiError`] at the HTTP edge, `anyhow` only at the edges of background work.

pub mod access;
pub mod api;
pub mod backup;
pub mod config;
pub mod event;
pub mod evolution;
pub mod media;
pub mod metrics;
pub mod model;
pub mod net;
pub mod passkey;
pub mod qr;
pub mod realtime;
pub mod session;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod web;
pub mod webhook;
pub mod whatsapp;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio::net::TcpListener;

pub use config::Config;

use crate::event::EventBus;
use crate::session::SessionManager;
use crate::store::Store;

/// What every request handler (and the webhook/realtime modules) can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub sessions: SessionManager,
    pub events: EventBus,
    pub keys: api::Keys,
    pub started_at: Instant,
    pub webhooks: webhook::Webhooks,
    pub media: media::Media,
}

/// Runs the gateway on `listener` until `shutdown` resolves, then stops cleanly: the HTTP
/// server stops accepting and finishes in-flight requests, every session disconnects, and
/// the database is closed.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    check_certificate_safety()?;
    // A bad certificate is a startup error, not something the first client finds out.
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        tls::load(cert, key)?;
    }
    let trusted = Arc::new(config.trusted_proxies.clone());
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let (key, generated) = config::resolve_api_key(&config)
        .with_context(|| format!("cannot keep the API key in {}", config.data_dir.display()))?;
    if generated {
        // Printed once, on the terminal, never through the logger.
        println!(
            "Generated API key (stored in {}): {}",
            config.data_dir.join("api_key").display(),
            key.expose()
        );
    }
    let database = config.database();
    let store = Store::connect_with(&database, config.database_pool)
        .await
        .with_context(|| format!("cannot open the database {}", database.display()))?;
    tracing::info!(engine = store.engine(), database = %database.display(), "database open");
    let events = EventBus::default();
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    metrics::watch(&events, metrics_stop.clone());
    let endpoint = whatsapp::Endpoint {
        url: config.wa_url.clone(),
        ca_pem: match &config.wa_ca_file {
            Some(p) => Some(
                std::fs::read(p)
                    .with_context(|| format!("cannot read WAMUX_WA_CA_FILE {}", p.display()))?,
            ),
            None => None,
        },
    };
    let media = media::Media::new(
        config.media.clone(),
        store.clone(),
        events.clone(),
        media_base_url(&config, &listener)?,
        &config.data_dir,
    )?;
    let connector = whatsapp::WaConnector::new(
        &whatsapp::device_db_path(&config.data_dir),
        endpoint,
        store.clone(),
        events.clone(),
    )
    .context("cannot set up the WhatsApp connector")?
    .with_media_wake(media.waker());
    let sessions = SessionManager::new(
        store.clone(),
        events.clone(),
        connector,
        session::SessionSettings {
            passkey_step_timeout: config.passkey_step_timeout,
            ack_timeout: config.send_ack_timeout,
            send_attempts: config.send_attempts,
        },
    );
    // Started before the sessions, so their first events are heard; stopped after them, so
    // their last ones are recorded (and delivered after a restart at worst).
    let webhooks = webhook::Webhooks::start(
        store.clone(),
        &events,
        config.webhook.clone(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .context("cannot start webhook delivery")?;
    let files = media.clone();
    webhooks.set_evolution_context(webhook::evolution::EvolutionContext {
        server_url: media.public_url().to_owned(),
        files: std::sync::Arc::new(move |name: String| {
            let files = files.clone();
            Box::pin(async move { files.read_file(&name).await })
        }),
    });
    let keys = api::Keys::new(
        api::ApiKey::new(key.expose()),
        store.clone(),
        config.auth_failures_per_minute,
        config.trusted_proxies.clone(),
    );
    let audit_retention_days = config.audit_retention_days;
    let state = AppState {
        config: Arc::new(config),
        store: store.clone(),
        sessions: sessions.clone(),
        events,
        keys,
        started_at: Instant::now(),
        webhooks: webhooks.clone(),
        media: media.clone(),
    };
    // Resumes downloads a previous run left unfinished; they wait for their sessions.
    media.start(sessions.clone());
    tokio::spawn(api::keep_audit_log(
        store.clone(),
        audit_retention_days,
        metrics_stop.clone(),
    ));
    let restored = sessions
        .restore()
        .await
        .context("cannot restore sessions")?;
    sessions.start_queue();
    if let Some(addr) = &state.config.metrics_listen {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on WAMUX_METRICS_LISTEN {addr}"))?;
        let stop = metrics_stop.clone();
        let app = api::probes::metrics_router(state.clone());
        tokio::spawn(async move {
            let served = axum::serve(l, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!("metrics listener failed: {e}");
            }
        });
    }
    let tls = state
        .config
        .tls_cert
        .clone()
        .zip(state.config.tls_key.clone());
    tracing::info!(
        addr = %listener.local_addr()?,
        tls = tls.is_some(),
        restored,
        "wamux listening"
    );
    // The Socket.IO feed holds long-lived connections: close them when shutdown starts so
    // the graceful shutdown does not wait on them.
    let feed_stop = tokio_util::sync::CancellationToken::new();
    let feed = realtime::layer(state.keys.clone(), &state.events, feed_stop.clone());
    let app = api::router(state)
        .layer(feed)
        .layer(axum::middleware::from_fn_with_state(
            trusted,
            telemetry::access_log,
        ))
        .into_make_service_with_connect_info::<net::PeerAddr>();
    let shutdown = async move {
        shutdown.await;
        feed_stop.cancel();
    };
    match tls {
        Some((cert, key)) => {
            let listener = tls::TlsListener::new(listener, &cert, &key)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
    .context("HTTP server failed")?;
    metrics_stop.cancel();
    tracing::info!("shutting down sessions");
    media.shutdown().await;
    sessions.shutdown().await;
    webhooks.shutdown().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The base of media links: `WAMUX_PUBLIC_URL`, else this server's address with the port it
/// really listens on (port 0 picks one).
fn media_base_url(config: &Config, listener: &TcpListener) -> anyhow::Result<String> {
    let mut c = config.clone();
    if c.public_url.is_none() {
        c.port = listener.local_addr()?.port();
    }
    Ok(c.public_url())
}

/// A production build must reject unsigned WhatsApp certificate chains; refuse to run
/// otherwise. A sandbox build accepts them on purpose (the simulator has no WhatsApp key).
fn check_certificate_safety() -> anyhow::Result<()> {
    let rejected = whatsapp::selfcheck::unsigned_chain_rejected();
    if cfg!(feature = "sandbox") {
        if !rejected {
            tracing::warn!(
                "sandbox build: WhatsApp server certificates are NOT verified; never use this binary with real accounts"
            );
        }
        return Ok(());
    }
    anyhow::ensure!(
        rejected,
        "refusing to run: this build accepts unsigned WhatsApp server certificates \
         (whatsapp-rust was built with danger-skip-cert-chain-verify); \
         build the production binary on its own: cargo build --release -p wamux"
    );
    Ok(())
}
