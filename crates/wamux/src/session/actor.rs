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
//!
//! The passkey step some accounts need before they link is driven from [`passkey`].

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt as _;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::{Command, Me, Qr, Result, SessionError, Shared, Snapshot};
use crate::event::EventKind;
use crate::model::{ChatAddress, Content, Message, MessageStatus, SessionId, SessionStatus};
use crate::store::{self, sessions::SessionRow};
use crate::whatsapp::{WaEvent, WaRunning, WaSession};

mod passkey;

use passkey::{PasskeyWait, QR_BUDGET_AFTER_FIRST, QR_CODES_RAN_OUT};

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
        app_state_owed: false,
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
    /// The session has just been linked: its first connection fetches the account's app
    /// state (see [`WaSession::sync_app_state`]).
    app_state_owed: bool,
}

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
                wait = passkey::timer(self.passkey_deadline) => {
                    let why = self.passkey_timed_out(wait);
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
                self.app_state_owed = true;
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
                if std::mem::take(&mut self.app_state_owed) {
                    session.sync_app_state();
                }
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
            WaEvent::Receipt { ids, status, by } => {
                for id in ids {
                    // The recipient has it: the server took it, whether or not its ack came.
                    self.shared.acks.settle(self.id.as_str(), &id, None);
                    let recorded = match &by {
                        Some(by) => {
                            store::messages::participant_receipt(
                                &self.shared.store,
                                self.id.as_str(),
                                &id,
                                status,
                                by,
                                store::now(),
                            )
                            .await
                        }
                        None => {
                            store::messages::advance_status(
                                &self.shared.store,
                                self.id.as_str(),
                                &id,
                                status,
                                None,
                            )
                            .await
                        }
                    };
                    match recorded {
                        Ok(Some(ev)) => self.shared.bus.publish(ev),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(session = %self.id, "cannot record a receipt: {e:#}")
                        }
                    }
                }
            }
            WaEvent::Call {
                call_id,
                from,
                creator,
                video,
                ended,
                timestamp,
            } => {
                let key = (self.id.to_string(), call_id.clone());
                {
                    let mut calls = self.shared.calls.lock().expect("calls lock");
                    if ended {
                        calls.remove(&key);
                    } else {
                        calls.insert(key, (from.clone(), creator));
                    }
                }
                self.record(
                    EventKind::Call,
                    Some(&from),
                    serde_json::json!({"sessionId": self.id, "id": call_id, "from": from, "video": video,
                        "status": if ended { "ended" } else { "offer" }, "timestamp": timestamp}),
                )
                .await;
                if !ended {
                    self.answer_call(session, &call_id, &from, video).await;
                }
            }
            WaEvent::Undecryptable {
                id,
                chat,
                from,
                timestamp,
                unavailable,
            } => {
                tracing::info!(session = %self.id, message = %id, "a message from {from} could not be decrypted; asked for it again");
                self.record(
                    EventKind::MessageUndecryptable,
                    Some(&chat),
                    serde_json::json!({"sessionId": self.id, "id": id, "chatId": chat, "from": from, "timestamp": timestamp, "unavailable": unavailable}),
                )
                .await;
            }
            WaEvent::Presence {
                from,
                state,
                last_seen,
            } => {
                self.record(
                    EventKind::Presence,
                    Some(&from),
                    serde_json::json!({"sessionId": self.id, "chatId": from, "from": from, "state": state, "lastSeen": last_seen}),
                )
                .await;
            }
            WaEvent::Chat { chat, change } => {
                match store::chats::apply(&self.shared.store, self.id.as_str(), &chat, &[change])
                    .await
                {
                    Ok((_, Some(ev))) => self.shared.bus.publish(ev),
                    Ok((_, None)) => {}
                    Err(e) => {
                        tracing::error!(session = %self.id, "cannot keep the state of chat {chat}: {e:#}")
                    }
                }
            }
            WaEvent::Starred { id, starred } => {
                match store::messages::set_starred(
                    &self.shared.store,
                    self.id.as_str(),
                    &id,
                    starred,
                )
                .await
                {
                    Ok(Some(ev)) => self.shared.bus.publish(ev),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(session = %self.id, "cannot star message {id}: {e:#}")
                    }
                }
            }
            WaEvent::DeletedForMe { chat, id } => {
                match store::messages::delete_for_me(&self.shared.store, self.id.as_str(), &id)
                    .await
                {
                    Ok(Some(ev)) => self.shared.bus.publish(ev),
                    Ok(None) => {
                        tracing::debug!(session = %self.id, "message {id} of {chat}, deleted for me, was not in the history")
                    }
                    Err(e) => {
                        tracing::error!(session = %self.id, "cannot delete message {id}: {e:#}")
                    }
                }
            }
            WaEvent::ServerAck { id, error } => {
                let queued = self
                    .shared
                    .acks
                    .settle(self.id.as_str(), &id, error.clone());
                // A direct send was reported sent as it left; WhatsApp did not take it.
                if let (false, Some(code)) = (queued, error) {
                    self.refused(&id, &code).await;
                }
            }
            WaEvent::Group {
                group,
                by,
                news,
                timestamp,
            } => self.group_news(group, by, news, timestamp).await,
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
                self.submit_assertion(assertion, reply, session);
                None
            }
            Command::PasskeyConfirm(reply) => {
                self.confirm_by_operator(reply, session);
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

    async fn logged_out(&mut self, reason: &str) {
        self.logged_in = false;
        self.saved_me = None;
        if let Err(e) = store::sessions::clear_login(&self.shared.store, self.id.as_str()).await {
            tracing::error!(session = %self.id, "cannot record logout: {e:#}");
        }
        self.state.send_modify(|s| s.qr = None);
        // The next login may be another number: nothing queued goes out under it.
        match store::queue::give_up_all(&self.shared.store, self.id.as_str(), "session logged out")
            .await
        {
            Ok(events) => self.shared.bus.publish_all(events),
            Err(e) => tracing::error!(session = %self.id, "cannot fail the queued messages: {e:#}"),
        }
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

    /// WhatsApp's server refused our message `id` with `code`: it is `failed`, with why.
    async fn refused(&self, id: &str, code: &str) {
        let why = crate::whatsapp::refusal(code);
        tracing::warn!(session = %self.id, message = %id, "{why}");
        let failed = store::messages::advance_status(
            &self.shared.store,
            self.id.as_str(),
            id,
            MessageStatus::Failed,
            Some(&why),
        )
        .await;
        match failed {
            Ok(Some(ev)) => self.shared.bus.publish(ev),
            Ok(None) => {}
            Err(e) => tracing::error!(session = %self.id, "cannot mark message {id} failed: {e:#}"),
        }
    }

    /// Records what a group notification said: `group-joined`, `group-participants` or
    /// `group-updated`, in the group's chat.
    async fn group_news(
        &self,
        group: String,
        by: Option<String>,
        news: crate::whatsapp::groups::GroupNews,
        timestamp: i64,
    ) {
        use crate::whatsapp::groups::GroupNews;
        let (kind, mut data) = match news {
            GroupNews::Joined { subject } => (
                EventKind::GroupJoined,
                serde_json::json!({"subject": subject}),
            ),
            GroupNews::Participants {
                action,
                participants,
            } => (
                EventKind::GroupParticipants,
                serde_json::json!({"action": action, "participants": participants}),
            ),
            GroupNews::Updated { field, value } => (
                EventKind::GroupUpdated,
                serde_json::json!({"field": field, "value": value}),
            ),
        };
        data["sessionId"] = serde_json::json!(self.id);
        data["groupId"] = serde_json::json!(group);
        data["by"] = serde_json::json!(by);
        data["timestamp"] = serde_json::json!(timestamp);
        self.record(kind, Some(&group), data).await;
    }

    /// Declines a ringing call at once when the session's call settings say so, and sends
    /// their reply to the caller.
    async fn answer_call(&self, session: &WaSession, call_id: &str, from: &str, video: bool) {
        let settings = match store::calls::get(&self.shared.store, self.id.as_str()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(session = %self.id, "cannot read the call settings: {e}");
                return;
            }
        };
        if !settings.reject {
            return;
        }
        let key = (self.id.to_string(), call_id.to_owned());
        let ringing = self.shared.calls.lock().expect("calls lock").remove(&key);
        let Some((peer, creator)) = ringing else {
            return;
        };
        if let Err(e) = session.reject_call(call_id, &peer, &creator).await {
            tracing::warn!(session = %self.id, "cannot decline call {call_id}: {e}");
            return;
        }
        self.record(
            EventKind::Call,
            Some(from),
            serde_json::json!({"sessionId": self.id, "id": call_id, "from": from, "video": video,
                "status": "rejected", "timestamp": store::now()}),
        )
        .await;
        let Some(text) = settings.message.filter(|m| !m.is_empty()) else {
            return;
        };
        let reply = match ChatAddress::parse(from) {
            Ok(to) => send(
                &self.shared,
                &self.id,
                session,
                &session.me(),
                &to,
                &Content::Text(text),
                Extras::default(),
            )
            .await
            .map(|_| ()),
            Err(e) => Err(SessionError::WrongState(e.to_string())),
        };
        if let Err(e) = reply {
            tracing::warn!(session = %self.id, "cannot reply to a declined call: {e}");
        }
    }

    /// Stores the status (with its `session-status` event), then shows it.
    /// Stores the status, then shows it in the snapshot, then announces it: whoever hears
    /// the event (the send queue on `connected`) finds the snapshot already there.
    async fn set_status(&self, status: SessionStatus, reason: Option<&str>) {
        let stored =
            store::sessions::set_status(&self.shared.store, self.id.as_str(), status, reason).await;
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
        match stored {
            Ok(Some(ev)) => self.shared.bus.publish(ev),
            Ok(None) => {}
            Err(e) => tracing::error!(session = %self.id, "cannot store status {status}: {e:#}"),
        }
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

/// What a send adds to its content: the message it quotes and who it mentions (JIDs).
#[derive(Clone, Copy, Default)]
pub(super) struct Extras<'a> {
    pub quoted: Option<&'a Message>,
    pub mentions: &'a [String],
}

/// Sends a message: stored as `pending` first (with its event), then `sent` or `failed`
/// depending on WhatsApp's answer; receipts move it on to delivered/read.
pub(super) async fn send(
    shared: &Shared,
    id: &SessionId,
    conn: &WaSession,
    me: &Me,
    to: &ChatAddress,
    content: &Content,
    extras: Extras<'_>,
) -> Result<Message> {
    let Extras { quoted, mentions } = extras;
    let out = conn.prepare(to)?;
    let mut msg = me.outgoing_message(id, &out.id, to, content.kind());
    content.fill(&mut msg);
    msg.quoted_id = quoted.map(|q| q.id.clone());
    msg.mentions = mentions.to_vec();
    let from = msg.from.clone();
    let mut tx = shared.store.begin().await?;
    // A reaction, an edit, a revoke is announced as one, whoever sent it.
    let event = match content {
        Content::Reaction { .. } => EventKind::MessageReaction,
        Content::Edit { .. } => EventKind::MessageEdited,
        Content::Revoke { .. } => EventKind::MessageRevoked,
        _ => EventKind::MessageFromMe,
    };
    let ev = store::messages::insert(&mut tx.conn(), &msg, &from, event).await?;
    if let Content::Poll { secret, .. } = content {
        store::messages::put_secret(&mut tx.conn(), &msg, secret).await?;
    }
    tx.commit().await?;
    if let Some(ev) = ev {
        shared.bus.publish(ev);
    }
    let acked = shared.acks.expect(id.as_str(), &out.id);
    let sent = conn.send(&out, content, quoted, mentions).await;
    settle_direct(shared, id, &out.id, sent, acked).await?;
    msg.status = MessageStatus::Sent;
    Ok(msg)
}

/// Settles a direct send of message `message_id`: `sent` is how writing it went, `acked`
/// the wait for WhatsApp's server ack (registered before writing). Written, it is `sent`
/// (`message-sent`, before any receipt can come), then the answer waits for that ack (or the
/// recipient's receipt), at most the ack timeout: refused, the message is `failed` with why
/// and so is the answer; taken, or no word in time (a later refusal still fails it), it
/// stays `sent`.
pub(super) async fn settle_direct(
    shared: &Shared,
    id: &SessionId,
    message_id: &str,
    sent: std::result::Result<(), String>,
    acked: oneshot::Receiver<Option<String>>,
) -> Result<()> {
    let advance = |status: MessageStatus, error: Option<String>| async move {
        let ev = store::messages::advance_status(
            &shared.store,
            id.as_str(),
            message_id,
            status,
            error.as_deref(),
        )
        .await?;
        if let Some(ev) = ev {
            shared.bus.publish(ev);
        }
        Ok::<_, SessionError>(())
    };
    let outcome = match sent {
        Ok(()) => {
            let recorded = advance(MessageStatus::Sent, None).await;
            let verdict = match recorded {
                Ok(()) => tokio::time::timeout(shared.settings.ack_timeout, acked).await,
                Err(e) => {
                    shared.acks.forget(id.as_str(), message_id);
                    return Err(e);
                }
            };
            match verdict {
                Ok(Ok(Some(code))) => Err(crate::whatsapp::refusal(&code)),
                _ => Ok(()),
            }
        }
        Err(why) => Err(why),
    };
    shared.acks.forget(id.as_str(), message_id);
    if let Err(why) = &outcome {
        advance(MessageStatus::Failed, Some(why.clone())).await?;
    }
    outcome.map_err(SessionError::Send)
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
