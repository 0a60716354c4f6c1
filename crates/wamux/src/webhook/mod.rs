//! Webhooks: a durable outbox over the `events` table, one delivery worker per session.
//!
//! How an event reaches a receiver:
//! 1. The gateway writes the event row in the same transaction as the change it describes and
//!    publishes it on the [`EventBus`] after the commit.
//! 2. The dispatcher hears it on the bus (or finds it by polling, if the bus lagged) and wakes
//!    the session's worker.
//! 3. The worker asks for a pass, which reads the session's events after its cursor, records a
//!    delivery row for each one the webhook wants and advances the cursor ([`webhooks::fan_out`]),
//!    then leases the oldest open delivery of each chat ([`webhooks::claim`]), in one transaction
//!    shared with the passes other sessions asked for meanwhile.
//! 4. The worker signs and POSTs each leased delivery, and the next pass records the answer:
//!    delivered, retry at a time computed from the attempt count, or final.
//!
//! A crash between any two steps loses nothing: an event without a delivery row is still after
//! the cursor, and a leased delivery is sent again when its lease expires (or at once after a
//! restart). Receivers may therefore see an event twice; `webhook-id` is stable for them to
//! deduplicate.
//!
//! Errors: [`crate::store::StoreError`] from [`webhooks`]; the background tasks log and carry on
//! (a database hiccup must not stop deliveries), retrying at the polling interval.

pub mod client;
pub mod config;
pub mod evolution;
pub mod guard;
pub mod schedule;
pub mod signature;
pub mod test_command;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::event::EventBus;
use crate::store::{Store, webhooks};

pub use config::{EventFilter, GlobalWebhook, WebhookConfig};
pub use signature::Secret;

/// Handle on the webhook machinery; cheap to clone. API handlers call [`Webhooks::wake`]
/// after changing a webhook so the change applies at once.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: WebhookConfig,
    /// For webhooks set through the API: only public addresses unless allowed.
    sender: client::Sender,
    /// For the global webhook, whose URL the operator chose: any address.
    operator_sender: client::Sender,
    /// Bumped whenever a webhook changes, so workers reload their copy.
    generation: AtomicU64,
    /// The global webhook with where it started in the log and its secret.
    global: Option<(GlobalWebhook, i64, Secret)>,
    /// Part of every `webhook-id` (see migration 0002).
    tag: String,
    workers: Mutex<HashMap<String, Arc<Notify>>>,
    /// What Evolution-format webhooks need (see [`Webhooks::set_evolution_context`]).
    evolution: std::sync::OnceLock<evolution::EvolutionContext>,
    /// Requests for the shared pass (see [`worker::run_passes`]).
    passes: tokio::sync::mpsc::UnboundedSender<worker::PassRequest>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Starts the dispatcher and a worker for every session with outbox work. `cancel` stops
    /// them; await [`Webhooks::shutdown`] to wait for them.
    pub async fn start(
        store: Store,
        bus: &EventBus,
        config: WebhookConfig,
        cancel: CancellationToken,
    ) -> anyhow::Result<Self> {
        let sender = client::Sender::new(config.timeout, config.allow_private)?;
        let operator_sender = client::Sender::new(config.timeout, true)?;
        let released = webhooks::release_leases(&store).await?;
        if released > 0 {
            tracing::info!(
                released,
                "webhook deliveries in flight at the last stop will be sent again"
            );
        }
        let settings = config.global.as_ref().map(|g| webhooks::GlobalSettings {
            url: &g.url,
            secret: g.secret.as_ref(),
        });
        let global = match webhooks::sync_global(&store, settings).await? {
            Some((state, generated)) => {
                let cfg = config.global.clone().expect("synced from config");
                if let Some(secret) = generated {
                    // Shown once, like a secret generated through the API: on the terminal,
                    // never through the logger (log files and collectors keep what they get).
                    println!("Generated webhook signing secret: {}", secret.expose());
                    tracing::warn!(
                        "WAMUX_WEBHOOK_SECRET is not set: generated a signing secret for the global webhook \
                         (printed once on stdout); set WAMUX_WEBHOOK_SECRET to it (or to your own) so receivers can verify signatures"
                    );
                }
                if let Some(reason) = &state.disabled_reason {
                    tracing::warn!(%reason, "the global webhook is disabled; change WAMUX_WEBHOOK_URL to enable it again");
                }
                Some((cfg, state.start_event_id, state.secret))
            }
            None => None,
        };
        let tag = webhooks::instance_tag(&store).await?;
        let (passes, pass_queue) = tokio::sync::mpsc::unbounded_channel();
        let hooks = Self {
            inner: Arc::new(Inner {
                store,
                config,
                sender,
                operator_sender,
                generation: AtomicU64::new(0),
                global,
                tag,
                workers: Mutex::new(HashMap::new()),
                evolution: std::sync::OnceLock::new(),
                passes,
                tracker: TaskTracker::new(),
                cancel,
            }),
        };
        // Subscribe before the first scan, so nothing committed in between goes unheard.
        let rx = bus.subscribe();
        let mut sessions = webhooks::sessions_with_outbox(&hooks.inner.store).await?;
        let scanned = match &hooks.inner.global {
            Some((_, start, _)) => {
                let (more, max) =
                    webhooks::sessions_with_events_after(&hooks.inner.store, *start).await?;
                sessions.extend(more);
                max
            }
            None => webhooks::max_event_id(&hooks.inner.store).await?,
        };
        for s in sessions {
            hooks.wake(&s);
        }
        let this = hooks.clone();
        hooks
            .inner
            .tracker
            .spawn(async move { this.dispatch(rx, scanned).await });
        let this = hooks.clone();
        hooks
            .inner
            .tracker
            .spawn(async move { worker::run_passes(this, pass_queue).await });
        Ok(hooks)
    }

    /// Gives Evolution-format webhooks the public URL and the stored files (for `base64`).
    /// Set once at startup; until then they go without `server_url` and files.
    pub fn set_evolution_context(&self, ctx: evolution::EvolutionContext) {
        if self.inner.evolution.set(ctx).is_err() {
            tracing::debug!("the Evolution webhook context was already set");
        }
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.inner.config
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Whether a global webhook is configured (sessions without their own use it).
    pub fn global(&self) -> Option<&GlobalWebhook> {
        self.inner.global.as_ref().map(|(g, _, _)| g)
    }

    /// Tells the workers that a session's webhook changed (set, removed), and wakes its worker.
    pub fn changed(&self, session_id: &str) {
        self.inner.generation.fetch_add(1, Ordering::Relaxed);
        self.wake(session_id);
    }

    /// Wakes (starting it if needed) the worker of a session.
    pub fn wake(&self, session_id: &str) {
        if self.inner.cancel.is_cancelled() {
            return;
        }
        let mut workers = self.inner.workers.lock().expect("workers lock poisoned");
        if let Some(n) = workers.get(session_id) {
            n.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        workers.insert(session_id.to_owned(), notify.clone());
        drop(workers);
        let this = self.clone();
        let session = session_id.to_owned();
        self.inner.tracker.spawn(async move {
            worker::run(this.clone(), session.clone(), notify).await;
            // A worker only returns at shutdown, or after a panic was caught inside it; in both
            // cases the next wake-up starts a fresh one.
            this.inner
                .workers
                .lock()
                .expect("workers lock poisoned")
                .remove(&session);
        });
    }

    /// Stops the dispatcher and the workers and waits for them (at most the delivery timeout
    /// plus a second; whatever is still in flight then is sent again after the restart).
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        let limit = self.inner.config.timeout + Duration::from_secs(1);
        if tokio::time::timeout(limit, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "webhook workers did not stop in time; their deliveries will be retried"
            );
        }
    }

    async fn dispatch(
        self,
        mut rx: broadcast::Receiver<Arc<crate::event::Event>>,
        mut scanned: i64,
    ) {
        let mut poll = tokio::time::interval(self.inner.config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut bus_open = true;
        loop {
            let mut lagged = false;
            tokio::select! {
                () = self.inner.cancel.cancelled() => return,
                msg = rx.recv(), if bus_open => match msg {
                    Ok(event) => {
                        self.wake(&event.session_id);
                        continue;
                    }
                    // Missed some: the scan below finds their sessions in the table.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "webhook dispatcher lagged behind the event bus");
                        lagged = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => bus_open = false,
                },
                _ = poll.tick() => {}
            }
            match webhooks::sessions_with_events_after(&self.inner.store, scanned).await {
                Ok((sessions, max)) => {
                    scanned = max;
                    for s in sessions {
                        self.wake(&s);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %anyhow::Error::from(e), "webhook dispatcher could not scan events")
                }
            }
            if lagged {
                let workers: Vec<Arc<Notify>> = self
                    .inner
                    .workers
                    .lock()
                    .expect("workers lock poisoned")
                    .values()
                    .cloned()
                    .collect();
                for n in workers {
                    n.notify_one();
                }
            }
        }
    }

    /// The `webhook-id` of an event: stable across retries, unique across databases.
    pub fn message_id(&self, event_id: i64) -> String {
        message_id(&self.inner.tag, event_id)
    }
}

pub fn message_id(tag: &str, event_id: i64) -> String {
    format!("msg_{tag}_{event_id}")
}
