//! One session's actor: drives its WhatsApp client through the states and records every
//! change (status, QR, receipts) in the database before announcing it.
//!
//! [`supervise`] runs the actor and restarts it with jittered exponential backoff when it
//! fails or panics; a panic stays inside this task and never reaches other sessions.
//!
//! Reconnecting is ours too: the client's own reconnect loop is switched off (its fixed
//! Fibonacci schedule with ±10% jitter would bring every session back within the same
//! second after the server drops them all), and each lost connection ends one run of the
//! actor. The supervisor then waits a "full jitter" backoff and builds a fresh client from
//! the stored credentials. A connection that dies silently is caught by the client's
//! keepalive (no answer within its deadline drops the socket), which ends the run the same
//! way, so no session stays "connected but dead".

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{Command, Me, Qr, Result, SessionError, Shared, Snapshot, check_passkey_stage};
use crate::event::EventKind;
use crate::model::{ChatAddress, Message, MessageStatus, SessionId, SessionStatus};
use crate::passkey::{Ceremony, Stage};
use crate::store::{self, sessions::SessionRow};
use crate::whatsapp::{WaEvent, WaRunning, WaSession};

/// Why one run of the actor ended.
enum Exit {
    /// Shutdown or delete: stop quietly.
    Cancelled,
    /// Nothing more to do until someone starts the session again.
    Stopped,
    /// Something broke; try again after a backoff.
    Failed(String),
    /// The connection ended; connect again (right away when we asked for it, e.g. the
    /// reconnect WhatsApp requests after pairing, or an API restart).
    Reconnect { reason: String, immediate: bool },
}

const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// How often the actor checks that a `connected` session really is.
const WATCHDOG: Duration = Duration::from_secs(10);
/// How long a clean client stop may take.
const CLIENT_STOP_TIMEOUT: Duration = Duration::from_secs(8);

/// "Full jitter" exponential backoff: a uniform delay in `[0, min(cap, base * 2^attempt)]`,
/// so sessions that failed together do not retry together.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(BACKOFF_CAP);
    let ms = rand::random_range(0..=ceiling.as_millis() as u64);
    Duration::from_millis(ms.max(100))
}

pub(super) async fn supervise(
    shared: Shared,
    id: SessionId,
    row: SessionRow,
    state: watch::Sender<Snapshot>,
    mut commands: mpsc::Receiver<Command>,
    cancel: CancellationToken,
) {
    let mut actor = Actor {
        shared,
        id,
        device_id: row.device_id,
        logged_in: row.logged_in,
        saved_me: row.logged_in.then(|| Me {
            phone: row.phone.clone(),
            jid: row.jid.clone(),
            lid: row.lid.clone(),
            push_name: row.push_name.clone(),
        }),
        state,
        pending_code: None,
        attempt: 0,
        reconnect_now: false,
        qr_budget_ends: None,
        linking_by_code: false,
        passkey_deadline: None,
        own: None,
    };
    loop {
        let run = AssertUnwindSafe(actor.run(&mut commands, &cancel)).catch_unwind();
        let exit = match run.await {
            Ok(exit) => exit,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(session = %actor.id, "session actor panicked: {what}");
                // The run unwound past its own cleanup: its client is gone (dropping the
                // handle aborted it), so the API must not be offered its connection.
                actor.state.send_modify(|s| {
                    s.connection = None;
                    s.qr = None;
                });
                Exit::Failed(format!("internal error: {what}"))
            }
        };
        let delay = match exit {
            Exit::Cancelled | Exit::Stopped => return,
            Exit::Failed(reason) => {
                let delay = backoff(actor.attempt);
                tracing::warn!(session = %actor.id, ?delay, "session failed: {reason}; retrying");
                actor.set_status(SessionStatus::Failed, Some(&reason)).await;
                delay
            }
            Exit::Reconnect { reason, immediate } => {
                let delay = if immediate {
                    Duration::ZERO
                } else {
                    backoff(actor.attempt)
                };
                tracing::info!(session = %actor.id, ?delay, "connection ended: {reason}; reconnecting");
                actor
                    .set_status(SessionStatus::Disconnected, Some(&reason))
                    .await;
                delay
            }
        };
        actor.attempt = actor.attempt.saturating_add(1);
        if !actor.wait_out_backoff(delay, &mut commands, &cancel).await {
            return;
        }
    }
}

struct Actor {
    shared: Shared,
    id: SessionId,
    device_id: i64,
    logged_in: bool,
    /// The account as stored, while the stored session is logged in: a session resumed
    /// after a restart comes back as the same account, and need not write it again.
    saved_me: Option<Me>,
    state: watch::Sender<Snapshot>,
    /// A pairing-code request waiting for the code.
    pending_code: Option<oneshot::Sender<Result<String>>>,
    /// Consecutive runs that did not reach `connected` (drives the backoff).
    attempt: u32,
    /// The current connection is ending because we (or WhatsApp's pairing flow) asked.
    reconnect_now: bool,
    /// When whatsapp-rust will give up this connection's QR codes (Unix seconds): it
    /// closes the connection then, and a passkey step under way ends with it.
    qr_budget_ends: Option<i64>,
    /// A pairing code was handed out on this connection: whatsapp-rust keeps the
    /// connection past its QR codes while that link waits for WhatsApp's answer.
    linking_by_code: bool,
    /// When the passkey step under way is given up, and what it waits for then.
    passkey_deadline: Option<(tokio::time::Instant, PasskeyWait)>,
    /// The run's own event channel: outcomes of our calls into the client (the passkey
    /// steps, which wait for WhatsApp off the actor's loop) come back on it.
    own: Option<mpsc::UnboundedSender<WaEvent>>,
}

/// What a passkey step's deadline waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PasskeyWait {
    /// The operator, until the request expires.
    Operator,
    /// WhatsApp's next step after ours.
    WhatsApp,
}

/// How long whatsapp-rust 0.7 offers QR codes on one connection after the first: five
/// more of 20 s each (the first one's lifetime comes with it). When they run out it closes
/// the connection, and a passkey step under way ends with it; there is no way to pause
/// the rotation from outside.
const QR_BUDGET_AFTER_FIRST: i64 = 5 * 20;

const QR_CODES_RAN_OUT: &str = "the QR codes of this link attempt ran out before the passkey step was finished, and the WhatsApp client closed the connection (about 160 s after the first code); start the session again and finish the step within the time shown";

/// How long after the phone took a pairing code whatsapp-rust still counts that link as
/// under way (its wait for `pair-success`, 60 s, less a margin for the round trips):
/// QR codes that run out within it do not close the connection.
const PAIR_CODE_HOLD: i64 = 55;

impl Actor {
    /// Sleeps through a backoff while still answering the API: a logout ends the session
    /// (no client is running, so there is nothing to unlink now: the stored identity is
    /// dropped and the next start pairs anew), a restart skips the wait. Returns `false`
    /// when the actor must stop.
    async fn wait_out_backoff(
        &mut self,
        delay: Duration,
        commands: &mut mpsc::Receiver<Command>,
        cancel: &CancellationToken,
    ) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = &mut sleep => return true,
                cmd = commands.recv() => match cmd {
                    None => return false,
                    Some(Command::Logout(reply)) => {
                        self.logged_out("logged out through the API").await;
                        let _ignored = reply.send(());
                        return false;
                    }
                    Some(Command::Restart(reply)) => {
                        let _ignored = reply.send(());
                        self.attempt = 0;
                        return true;
                    }
                    Some(Command::PairingCode { reply, .. }) => {
                        let _ignored = reply.send(Err(SessionError::WrongState(format!(
                            "session `{}` is reconnecting; try again in a moment",
                            self.id
                        ))));
                    }
                    Some(Command::PasskeyAssertion { reply, .. } | Command::PasskeyConfirm(reply)) => {
                        let _ignored = reply.send(Err(SessionError::PasskeyNotPending(format!(
                            "session `{}` is reconnecting; no passkey step waits",
                            self.id
                        ))));
                    }
                },
            }
        }
    }

    async fn run(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        cancel: &CancellationToken,
    ) -> Exit {
        self.reconnect_now = false;
        self.qr_budget_ends = None;
        self.linking_by_code = false;
        self.passkey_deadline = None;
        if self.state.borrow().status != SessionStatus::Disconnected {
            self.set_status(SessionStatus::Starting, None).await;
        }
        let (tx, mut events) = mpsc::unbounded_channel();
        self.own = Some(tx.clone());
        let push_name = self.saved_me.as_ref().and_then(|me| me.push_name.clone());
        let (session, mut running) = match self
            .shared
            .connector
            .start(&self.id, self.device_id, push_name.as_deref(), tx)
            .await
        {
            Ok(x) => x,
            Err(e) => return Exit::Failed(format!("{e:#}")),
        };
        self.state
            .send_modify(|s| s.connection = Some(session.clone()));
        self.set_status(SessionStatus::Connecting, None).await;
        let mut watchdog = tokio::time::interval(WATCHDOG);
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let exit = loop {
            tokio::select! {
                _ = cancel.cancelled() => break Exit::Cancelled,
                ev = events.recv() => {
                    let Some(ev) = ev else { break Exit::Failed("client event stream ended".into()) };
                    if let Some(exit) = self.on_event(ev, &session).await {
                        break exit;
                    }
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break Exit::Cancelled };
                    if let Some(exit) = self.on_command(cmd, &session).await {
                        break exit;
                    }
                }
                wait = passkey_timer(self.passkey_deadline) => {
                    let expires_at = self.state.borrow().passkey.as_ref().map(|c| c.expires_at);
                    let why = match wait {
                        PasskeyWait::WhatsApp => format!(
                            "WhatsApp did not take the next passkey step within {} s; start the session again to link afresh",
                            self.shared.settings.passkey_step_timeout.as_secs()
                        ),
                        // This end and the client's come together; either may be heard first.
                        PasskeyWait::Operator if expires_at.is_some() && expires_at == self.qr_budget_ends => {
                            QR_CODES_RAN_OUT.to_owned()
                        }
                        PasskeyWait::Operator => "the passkey step was not completed in time; start the session again to link afresh".to_owned(),
                    };
                    break self.passkey_failed(why).await;
                }
                _ = running.finished() => {
                    // What the client said last decides what this end means (a logout,
                    // a pairing that completed); read it all before deciding.
                    let mut decided = None;
                    while let Ok(ev) = events.try_recv() {
                        if let Some(exit) = self.on_event(ev, &session).await {
                            decided = Some(exit);
                            break;
                        }
                    }
                    break decided.unwrap_or_else(|| {
                        let s = self.state.borrow();
                        let reason = match (&s.status, &s.reason) {
                            (SessionStatus::Disconnected, Some(r)) => r.clone(),
                            _ => "connection closed".into(),
                        };
                        Exit::Reconnect { reason, immediate: self.reconnect_now }
                    });
                }
                _ = watchdog.tick() => self.check_alive(&session).await,
                // Never completes outside sandbox builds (see `fault`).
                _ = super::fault::armed(self.id.as_str()) => {
                    panic!("fault injected into session `{}`", self.id)
                }
            }
        };
        if self.state.borrow().passkey.is_some() {
            // The ceremony lives in the connection (and the client's memory): it ends here.
            self.end_passkey("the connection to WhatsApp ended during the passkey step")
                .await;
        }
        self.state.send_modify(|s| {
            s.connection = None;
            s.qr = None;
        });
        stop_client(running).await;
        if matches!(exit, Exit::Cancelled) {
            self.set_status(SessionStatus::Disconnected, Some("server stopped"))
                .await;
        }
        exit
    }

    /// A session the client believes connected but whose socket is gone (keepalive
    /// failures drop it) is shown as disconnected; the client is already reconnecting.
    async fn check_alive(&mut self, session: &WaSession) {
        let status = self.state.borrow().status;
        if status == SessionStatus::Connected && !session.is_connected() {
            self.set_status(SessionStatus::Disconnected, Some("connection lost"))
                .await;
        }
    }

    async fn on_event(&mut self, ev: WaEvent, session: &WaSession) -> Option<Exit> {
        match ev {
            WaEvent::Qr {
                code,
                expires_in_secs,
            } => {
                if self.qr_budget_ends.is_none() {
                    self.qr_budget_ends =
                        Some(store::now() + expires_in_secs as i64 + QR_BUDGET_AFTER_FIRST);
                }
                if self.state.borrow().passkey.is_some() {
                    // whatsapp-rust goes on rotating codes during the passkey step; the
                    // device is already scanned, so none of them is shown.
                    return None;
                }
                let qr = Qr {
                    code,
                    expires_at: store::now() + expires_in_secs as i64,
                };
                self.state.send_modify(|s| s.qr = Some(qr.clone()));
                self.set_status(SessionStatus::Qr, None).await;
                self.record(
                    EventKind::Qr,
                    None,
                    serde_json::json!({"sessionId": self.id, "qr": qr.code, "expiresAt": qr.expires_at}),
                )
                .await;
            }
            WaEvent::PairingCode { code } => {
                if let Some(reply) = self.pending_code.take() {
                    let _ignored = reply.send(Ok(code));
                }
            }
            WaEvent::Paired { me } => {
                self.logged_in = true;
                self.passkey_deadline = None;
                self.save_me(&me).await;
                self.state.send_modify(|s| {
                    s.qr = None;
                    s.me = me;
                    s.passkey = None;
                    s.passkey_error = None;
                });
                self.set_status(SessionStatus::Connecting, Some("paired"))
                    .await;
            }
            WaEvent::Connected { .. } => {
                let me = session.me();
                self.logged_in = true;
                self.save_me(&me).await;
                self.state.send_modify(|s| {
                    s.qr = None;
                    s.me = me;
                });
                self.set_status(SessionStatus::Connected, None).await;
                self.attempt = 0;
            }
            WaEvent::Disconnected { reason } => {
                self.set_status(SessionStatus::Disconnected, Some(&reason))
                    .await;
            }
            WaEvent::LoggedOut { reason } => {
                self.logged_out(&reason).await;
                return Some(Exit::Stopped);
            }
            WaEvent::Replaced => {
                self.set_status(
                    SessionStatus::Failed,
                    Some("another client took over this device's connection"),
                )
                .await;
                return Some(Exit::Stopped);
            }
            WaEvent::QrExhausted { disconnected } => {
                if self.state.borrow().passkey.is_some() {
                    if disconnected {
                        return Some(self.passkey_failed(QR_CODES_RAN_OUT.to_owned()).await);
                    }
                    let status = self.state.borrow().status;
                    self.set_status(
                        status,
                        Some("the QR codes ran out; the passkey step goes on"),
                    )
                    .await;
                    return None;
                }
                return self
                    .pairing_failed(
                        "no QR code was scanned in time; start the session again for new codes"
                            .into(),
                    )
                    .await;
            }
            WaEvent::PasskeyRequest { options_json } => {
                return self.passkey_requested(&options_json).await;
            }
            WaEvent::PasskeyConfirmation {
                code,
                skip_handoff_ux,
            } => return self.passkey_code(code, skip_handoff_ux, session).await,
            WaEvent::PasskeyFailed { reason } => {
                if self.state.borrow().passkey.is_some() {
                    return Some(self.passkey_failed(reason).await);
                }
                tracing::warn!(session = %self.id, "{reason}");
            }
            WaEvent::PairingFailed { reason } => return self.pairing_failed(reason).await,
            WaEvent::Receipt { ids, status } => {
                for id in ids {
                    match store::messages::advance_status(
                        &self.shared.store,
                        self.id.as_str(),
                        &id,
                        status,
                        None,
                    )
                    .await
                    {
                        Ok(Some(ev)) => self.shared.bus.publish(ev),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(session = %self.id, "cannot record a receipt: {e:#}")
                        }
                    }
                }
            }
            WaEvent::Call {
                from,
                id,
                timestamp,
            } => {
                self.record(
                    EventKind::Call,
                    Some(&from),
                    serde_json::json!({"sessionId": self.id, "id": id, "from": from, "timestamp": timestamp}),
                )
                .await;
            }
        }
        None
    }

    async fn on_command(&mut self, cmd: Command, session: &WaSession) -> Option<Exit> {
        match cmd {
            Command::Logout(reply) => {
                session.logout().await;
                self.logged_out("logged out through the API").await;
                let _ignored = reply.send(());
                Some(Exit::Stopped)
            }
            Command::Restart(reply) => {
                self.set_status(SessionStatus::Connecting, Some("restart requested"))
                    .await;
                self.reconnect_now = true;
                session.reconnect().await;
                let _ignored = reply.send(());
                None
            }
            Command::PairingCode { phone, reply } => {
                if self.logged_in {
                    let _ignored = reply.send(Err(SessionError::WrongState(format!(
                        "session `{}` is already paired",
                        self.id
                    ))));
                    return None;
                }
                // The code also comes back as an event; the direct answer is enough.
                let r = session
                    .pairing_code(&phone)
                    .await
                    .map_err(SessionError::WrongState);
                self.linking_by_code |= r.is_ok();
                let _ignored = reply.send(r);
                None
            }
            Command::PasskeyAssertion { assertion, reply } => {
                let pending = self.state.borrow().passkey.clone();
                if let Err(e) =
                    check_passkey_stage(&self.id, pending.as_ref(), Stage::AssertionRequired)
                {
                    let _ignored = reply.send(Err(e));
                    return None;
                }
                let pending = pending.expect("checked above");
                if assertion.challenge != pending.challenge {
                    let _ignored = reply.send(Err(SessionError::InvalidAssertion(
                        "`response.clientDataJSON`: its challenge is not the one WhatsApp asked for (an assertion from an older request, or for another session)".into(),
                    )));
                    return None;
                }
                self.passkey_stage(Stage::Confirming, |c| c.assertion_sent = true);
                self.wait_for_whatsapp();
                self.passkey_call(session, Some(reply), |s| async move {
                    s.send_passkey_response(&assertion)
                        .await
                        .map_err(|e| format!("WhatsApp refused the passkey assertion: {e}"))
                });
                None
            }
            Command::PasskeyConfirm(reply) => {
                let pending = self.state.borrow().passkey.clone();
                if let Err(e) =
                    check_passkey_stage(&self.id, pending.as_ref(), Stage::ConfirmationRequired)
                {
                    let _ignored = reply.send(Err(e));
                    return None;
                }
                self.confirm_passkey(session, Some(reply));
                None
            }
        }
    }

    /// Pairing gave up: an unpaired session stops (status `failed`) until started again.
    async fn pairing_failed(&mut self, reason: String) -> Option<Exit> {
        if let Some(reply) = self.pending_code.take() {
            let _ignored = reply.send(Err(SessionError::WrongState(reason.clone())));
        }
        if !self.logged_in {
            self.state.send_modify(|s| s.qr = None);
            self.set_status(SessionStatus::Failed, Some(&reason)).await;
            return Some(Exit::Stopped);
        }
        tracing::warn!(session = %self.id, "{reason}");
        None
    }

    /// WhatsApp asks for the owner's passkey: show the request, whatever state we are in.
    async fn passkey_requested(&mut self, options_json: &str) -> Option<Exit> {
        let mut ceremony = match Ceremony::from_options(options_json, store::now()) {
            Ok(c) => c,
            Err(e) => return Some(self.passkey_failed(e.to_string()).await),
        };
        if let Some(end) = self.qr_budget_ends {
            let held = self.linking_by_code && end <= store::now() + PAIR_CODE_HOLD;
            if !held {
                ceremony.expires_at = ceremony.expires_at.min(end);
            }
        }
        self.wait_for_operator(ceremony.expires_at);
        let data = serde_json::json!({
            "sessionId": self.id,
            "options": ceremony.options,
            "expiresAt": ceremony.expires_at,
        });
        self.state.send_modify(|s| {
            s.qr = None;
            s.passkey = Some(ceremony);
            s.passkey_error = None;
        });
        tracing::info!(session = %self.id, "WhatsApp asks for the account owner's passkey");
        self.set_status(SessionStatus::PasskeyRequired, None).await;
        self.record(EventKind::PasskeyRequired, None, data).await;
        None
    }

    /// WhatsApp accepted the assertion and derived the code the phone shows.
    async fn passkey_code(
        &mut self,
        code: String,
        skip_handoff_ux: bool,
        session: &WaSession,
    ) -> Option<Exit> {
        if self.state.borrow().passkey.is_none() {
            tracing::warn!(session = %self.id, "a passkey code arrived with no passkey step under way");
            return None;
        }
        let shown = code.clone();
        self.passkey_stage(Stage::ConfirmationRequired, |c| {
            c.code = Some(shown);
            c.skip_handoff_ux = skip_handoff_ux;
        });
        let expires_at = self.state.borrow().passkey.as_ref().map(|c| c.expires_at);
        self.wait_for_operator(expires_at.unwrap_or_default());
        self.set_status(SessionStatus::PasskeyConfirmation, None)
            .await;
        self.record(
            EventKind::PasskeyConfirmation,
            None,
            serde_json::json!({
                "sessionId": self.id,
                "code": code,
                "skipHandoffUx": skip_handoff_ux,
                "expiresAt": expires_at,
            }),
        )
        .await;
        if skip_handoff_ux {
            // WhatsApp proved continuity itself: there is nothing for the operator to compare.
            self.confirm_passkey(session, None);
        }
        None
    }

    /// The operator has until `expires_at` (Unix seconds) for the next step.
    fn wait_for_operator(&mut self, expires_at: i64) {
        let wait = Duration::from_secs((expires_at - store::now()).max(0) as u64);
        self.passkey_deadline = Some((tokio::time::Instant::now() + wait, PasskeyWait::Operator));
    }

    /// WhatsApp has the step timeout for its next step.
    fn wait_for_whatsapp(&mut self) {
        let wait = self.shared.settings.passkey_step_timeout;
        self.passkey_deadline = Some((tokio::time::Instant::now() + wait, PasskeyWait::WhatsApp));
    }

    /// Sends the confirmation; `reply` (an API caller) hears whether WhatsApp took it.
    fn confirm_passkey(&mut self, session: &WaSession, reply: Option<oneshot::Sender<Result<()>>>) {
        self.passkey_stage(Stage::Confirming, |_| {});
        self.wait_for_whatsapp();
        self.passkey_call(session, reply, |s| async move {
            s.send_passkey_confirmation()
                .await
                .map_err(|e| format!("WhatsApp refused the passkey confirmation: {e}"))
        });
    }

    /// Runs one passkey call to WhatsApp off the actor's loop (it waits for WhatsApp's
    /// answer); a refusal comes back to the actor as a failed step, and to `reply`.
    fn passkey_call<F, Fut>(
        &self,
        session: &WaSession,
        reply: Option<oneshot::Sender<Result<()>>>,
        call: F,
    ) where
        F: FnOnce(WaSession) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::result::Result<(), String>> + Send,
    {
        let session = session.clone();
        let own = self.own.clone();
        tokio::spawn(async move {
            let outcome = call(session).await;
            if let Err(reason) = &outcome
                && let Some(own) = &own
                && own
                    .send(WaEvent::PasskeyFailed {
                        reason: reason.clone(),
                    })
                    .is_err()
            {
                tracing::debug!("session actor gone before a passkey refusal reached it");
            }
            if let Some(reply) = reply {
                let _ignored = reply.send(outcome.map_err(SessionError::PasskeyRejected));
            }
        });
    }

    /// Moves the step under way to `stage`, changing what `edit` changes.
    fn passkey_stage(&self, stage: Stage, edit: impl FnOnce(&mut Ceremony)) {
        self.state.send_modify(|s| {
            if let Some(c) = s.passkey.as_mut() {
                c.stage = stage;
                edit(c);
            }
        });
    }

    /// Ends the step under way with `reason`: a `passkey-failed` event, and the error kept
    /// for `GET .../passkey`.
    async fn end_passkey(&mut self, reason: &str) {
        self.passkey_deadline = None;
        let stage = self.state.borrow().passkey.as_ref().map(|c| c.stage);
        let Some(stage) = stage else { return };
        self.state.send_modify(|s| {
            s.passkey = None;
            s.passkey_error = Some(reason.to_owned());
        });
        tracing::warn!(session = %self.id, "passkey step failed: {reason}");
        self.record(
            EventKind::PasskeyFailed,
            None,
            serde_json::json!({"sessionId": self.id, "reason": reason, "stage": stage}),
        )
        .await;
    }

    /// The link attempt is over: WhatsApp forgets a failed ceremony, so the session stops
    /// (status `failed`) until someone starts it again, which links afresh.
    async fn passkey_failed(&mut self, reason: String) -> Exit {
        self.end_passkey(&reason).await;
        self.state.send_modify(|s| s.qr = None);
        self.set_status(SessionStatus::Failed, Some(&reason)).await;
        Exit::Stopped
    }

    async fn logged_out(&mut self, reason: &str) {
        self.logged_in = false;
        self.saved_me = None;
        if let Err(e) = store::sessions::clear_login(&self.shared.store, self.id.as_str()).await {
            tracing::error!(session = %self.id, "cannot record logout: {e:#}");
        }
        self.state.send_modify(|s| s.qr = None);
        self.set_status(SessionStatus::LoggedOut, Some(reason))
            .await;
    }

    async fn save_me(&mut self, me: &Me) {
        if self.saved_me.as_ref() == Some(me) {
            return;
        }
        let row = store::sessions::Me {
            phone: me.phone.clone(),
            jid: me.jid.clone(),
            lid: me.lid.clone(),
            push_name: me.push_name.clone(),
        };
        if let Err(e) =
            store::sessions::set_me(&self.shared.store, self.id.as_str(), &row, true).await
        {
            tracing::error!(session = %self.id, "cannot store the account: {e:#}");
            return;
        }
        self.saved_me = Some(me.clone());
    }

    async fn record(&self, kind: EventKind, chat: Option<&str>, data: serde_json::Value) {
        match store::events::record(&self.shared.store, kind, self.id.as_str(), chat, data).await {
            Ok(ev) => self.shared.bus.publish(ev),
            Err(e) => tracing::error!(session = %self.id, "cannot record {kind} event: {e:#}"),
        }
    }

    /// Stores the status (with its `session-status` event), then shows it.
    async fn set_status(&self, status: SessionStatus, reason: Option<&str>) {
        match store::sessions::set_status(&self.shared.store, self.id.as_str(), status, reason)
            .await
        {
            Ok(Some(ev)) => self.shared.bus.publish(ev),
            Ok(None) => {}
            Err(e) => tracing::error!(session = %self.id, "cannot store status {status}: {e:#}"),
        }
        self.state.send_if_modified(|s| {
            let reason = reason.map(str::to_owned);
            if s.status == status && s.reason == reason {
                return false;
            }
            s.status = status;
            s.reason = reason;
            s.since = store::now();
            true
        });
    }
}

/// Resolves at the passkey step's deadline with what it waited for; never without one.
async fn passkey_timer(deadline: Option<(tokio::time::Instant, PasskeyWait)>) -> PasskeyWait {
    match deadline {
        Some((at, wait)) => {
            tokio::time::sleep_until(at).await;
            wait
        }
        None => std::future::pending().await,
    }
}

async fn stop_client(running: WaRunning) {
    if tokio::time::timeout(CLIENT_STOP_TIMEOUT, running.stop())
        .await
        .is_err()
    {
        tracing::warn!("WhatsApp client did not stop in time");
    }
}

/// Sends a text message: stored as `pending` first (with its event), then `sent` or
/// `failed` depending on WhatsApp's answer; receipts move it on to delivered/read.
pub(super) async fn send_text(
    shared: &Shared,
    id: &SessionId,
    conn: &WaSession,
    me: &Me,
    to: &ChatAddress,
    text: &str,
    quoted: Option<&Message>,
) -> Result<Message> {
    let out = conn.prepare(to)?;
    let mut msg = me.outgoing_message(id, &out.id, to, "text");
    msg.text = Some(text.to_owned());
    msg.quoted_id = quoted.map(|q| q.id.clone());
    let from = msg.from.clone();
    let mut tx = shared.store.begin().await?;
    let ev = store::messages::insert(&mut tx, &msg, &from, EventKind::MessageFromMe).await?;
    tx.commit().await?;
    if let Some(ev) = ev {
        shared.bus.publish(ev);
    }
    let quote = quoted.map(|q| (q.id.as_str(), q.from.as_str(), q.text.as_deref()));
    match conn.send_text(&out, text, quote).await {
        Ok(()) => {
            if let Some(ev) = store::messages::advance_status(
                &shared.store,
                id.as_str(),
                &out.id,
                MessageStatus::Sent,
                None,
            )
            .await?
            {
                shared.bus.publish(ev);
            }
            msg.status = MessageStatus::Sent;
            Ok(msg)
        }
        Err(why) => {
            if let Some(ev) = store::messages::advance_status(
                &shared.store,
                id.as_str(),
                &out.id,
                MessageStatus::Failed,
                Some(&why),
            )
            .await?
            {
                shared.bus.publish(ev);
            }
            Err(SessionError::Send(why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..40 {
            let d = backoff(attempt);
            assert!(d <= BACKOFF_CAP);
            assert!(d >= Duration::from_millis(100));
        }
        // Jitter: many draws at a high attempt are not all the same.
        let draws: std::collections::HashSet<_> = (0..20).map(|_| backoff(10)).collect();
        assert!(draws.len() > 1);
    }
}
