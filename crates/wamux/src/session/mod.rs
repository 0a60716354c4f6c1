//! Sessions: a [`SessionManager`] owning one supervised actor per WhatsApp session.
//!
//! The manager keeps `HashMap<SessionId, Handle>` in step with the `sessions` table. Each
//! actor (see [`actor`]) owns its WhatsApp connection and publishes a [`Snapshot`] through a
//! `watch` channel, which is what the API reads, so status requests never wait on an actor.
//! Errors are [`SessionError`].

mod actions;
pub use actions::MAX_READ;
mod actor;
pub mod fault;
mod groups;
pub mod queue;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::event::EventBus;
use crate::model::{ChatAddress, Content, Message, SessionId, SessionStatus};
use crate::passkey::{Assertion, Ceremony, Stage};
use crate::store::{self, Store, StoreError};
use crate::whatsapp::{WaConnector, WaSession};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session `{0}` does not exist")]
    NotFound(String),
    #[error("session `{id}` is {status}, not connected")]
    NotConnected { id: String, status: SessionStatus },
    #[error("session `{id}` has no QR code (status {status})")]
    NoQr { id: String, status: SessionStatus },
    #[error("{0}")]
    WrongState(String),
    #[error("quoted message `{0}` not found")]
    QuotedNotFound(String),
    #[error("message `{0}` not found")]
    MessageNotFound(String),
    /// WhatsApp would not take this action on that message; the code says why.
    #[error("{1}")]
    Refused(&'static str, String),
    #[error("send failed: {0}")]
    Send(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// No passkey step waits for what was sent (or it waits for something else).
    #[error("{0}")]
    PasskeyNotPending(String),
    /// The assertion cannot be the answer to the pending request.
    #[error("{0}")]
    InvalidAssertion(String),
    /// WhatsApp did not answer a query, or answered it with an error.
    #[error("WhatsApp did not answer: {0}")]
    WhatsApp(String),
    /// WhatsApp refused a group request.
    #[error(transparent)]
    Group(crate::whatsapp::groups::GroupRefusal),
    /// WhatsApp refused the assertion or the confirmation; the link attempt is over.
    #[error("{0}")]
    PasskeyRejected(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = SessionError> = std::result::Result<T, E>;

/// A pairing QR code currently on offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qr {
    pub code: String,
    /// Unix seconds after which this code is no longer accepted.
    pub expires_at: i64,
}

/// Who the session is logged in as, where known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub phone: Option<String>,
    pub jid: Option<String>,
    pub lid: Option<String>,
    pub push_name: Option<String>,
}

impl Me {
    /// A message this account is about to send to `to`, in state `pending` and without
    /// content: the caller fills in text, caption, media or quote.
    pub fn outgoing_message(
        &self,
        session: &SessionId,
        message_id: &str,
        to: &crate::model::ChatAddress,
        kind: crate::model::MessageKind,
    ) -> crate::model::Message {
        let chat = to.as_str().to_owned();
        let (chat_pn, chat_lid) = if chat.ends_with("@lid") {
            (None, Some(chat.clone()))
        } else if chat.ends_with("@s.whatsapp.net") {
            (Some(chat.clone()), None)
        } else {
            (None, None)
        };
        crate::model::Message {
            id: message_id.to_owned(),
            session_id: session.to_string(),
            chat_id: chat.clone(),
            from: self
                .jid
                .clone()
                .or_else(|| self.lid.clone())
                .unwrap_or_default(),
            to: chat,
            from_me: true,
            push_name: self.push_name.clone(),
            kind,
            text: None,
            caption: None,
            timestamp: crate::store::now(),
            status: crate::model::MessageStatus::Pending,
            quoted_id: None,
            media: None,
            from_pn: self.jid.clone(),
            from_lid: self.lid.clone(),
            chat_pn,
            chat_lid,
            participant: None,
            location: None,
            contacts: None,
            reaction: None,
            reactions: Vec::new(),
            target_id: None,
            edited_at: None,
            revoked: false,
            poll: None,
            vote: None,
            raw_type: None,
            mentions: Vec::new(),
            forwarded: false,
            view_once: false,
            starred: false,
        }
    }
}

/// What the API shows about a session. Published by its actor on every change.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub status: SessionStatus,
    pub reason: Option<String>,
    pub qr: Option<Qr>,
    pub me: Me,
    pub since: i64,
    pub connection: Option<WaSession>,
    /// The passkey step WhatsApp asked for, while it is under way.
    pub passkey: Option<Ceremony>,
    /// How the last passkey step failed, until a new one starts or the session links.
    pub passkey_error: Option<String>,
}

impl Snapshot {
    fn new(status: SessionStatus) -> Self {
        Self {
            status,
            reason: None,
            qr: None,
            me: Me::default(),
            since: store::now(),
            connection: None,
            passkey: None,
            passkey_error: None,
        }
    }
}

/// The passkey step as `GET /api/sessions/:id/passkey` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasskeyInfo {
    pub session_id: SessionId,
    pub stage: Stage,
    /// The `PublicKeyCredentialRequestOptions` to pass to `navigator.credentials.get()`
    /// on `https://web.whatsapp.com`, while an assertion or its answer is awaited.
    #[schema(value_type = Option<Object>)]
    pub options: Option<serde_json::Value>,
    /// The code the phone shows too (`XXXX-XXXX`), once WhatsApp accepted the assertion.
    pub code: Option<String>,
    /// WhatsApp proved continuity itself; the code is confirmed without the operator.
    pub skip_handoff_ux: bool,
    /// Unix seconds after which the step is given up.
    pub expires_at: Option<i64>,
    /// Why the last passkey step failed.
    pub error: Option<String>,
}

impl PasskeyInfo {
    fn from_snapshot(id: &SessionId, s: &Snapshot) -> Self {
        match &s.passkey {
            Some(c) => Self {
                session_id: id.clone(),
                stage: c.stage,
                options: Some(c.options.clone()),
                code: c.code.clone(),
                skip_handoff_ux: c.skip_handoff_ux,
                expires_at: Some(c.expires_at),
                error: None,
            },
            None => Self {
                session_id: id.clone(),
                stage: Stage::None,
                options: None,
                code: None,
                skip_handoff_ux: false,
                expires_at: None,
                error: s.passkey_error.clone(),
            },
        }
    }
}

/// How sessions behave; set once at startup from the configuration.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// How long WhatsApp may take for its next step of a passkey link (the continuation
    /// after the assertion, the link after the confirmation) before the attempt is given
    /// up as stuck.
    pub passkey_step_timeout: Duration,
    /// How long a queued message may wait for WhatsApp's server ack before the attempt
    /// counts as failed (and the message is sent again, with the same id).
    pub ack_timeout: Duration,
    /// Attempts a queued message gets before it is `failed`.
    pub send_attempts: u32,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            passkey_step_timeout: Duration::from_secs(60),
            ack_timeout: Duration::from_secs(30),
            send_attempts: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub session_id: SessionId,
    pub status: SessionStatus,
    pub reason: Option<String>,
    pub me: Option<Me>,
    pub has_qr: bool,
    /// Unix seconds since the status last changed.
    pub since: i64,
}

impl SessionInfo {
    fn from_snapshot(id: &SessionId, s: &Snapshot) -> Self {
        Self {
            session_id: id.clone(),
            status: s.status,
            reason: s.reason.clone(),
            me: (s.me != Me::default()).then(|| s.me.clone()),
            has_qr: s.qr.is_some(),
            since: s.since,
        }
    }
}

/// Requests an actor handles itself, because they change its state machine.
#[derive(Debug)]
pub(crate) enum Command {
    Logout(oneshot::Sender<()>),
    Restart(oneshot::Sender<()>),
    PairingCode {
        phone: String,
        reply: oneshot::Sender<Result<String>>,
    },
    /// The owner's assertion for the pending passkey request.
    PasskeyAssertion {
        assertion: Assertion,
        reply: oneshot::Sender<Result<()>>,
    },
    /// The operator saw the same code on the phone.
    PasskeyConfirm(oneshot::Sender<Result<()>>),
}

struct Handle {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<Snapshot>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Everything an actor needs from the outside.
#[derive(Clone)]
pub(crate) struct Shared {
    pub store: Store,
    pub bus: EventBus,
    pub connector: Arc<WaConnector>,
    pub settings: SessionSettings,
    /// Who waits for WhatsApp's server ack of which sent message.
    pub acks: Arc<queue::AckWaiters>,
    /// The calls ringing now.
    pub calls: Arc<Mutex<Ringing>>,
}

/// Calls ringing now, by session and call id: who calls and who created the call (what a
/// reject must name). Calls are ephemeral, as on WhatsApp: a restart forgets them.
pub(crate) type Ringing = HashMap<(String, String), (String, String)>;

/// Owns every session's actor. Cheap to clone.
#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Shared,
    sessions: Mutex<HashMap<SessionId, Handle>>,
    /// Serializes create/delete so two requests for one id cannot race.
    lifecycle: tokio::sync::Mutex<()>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    queue: queue::Queue,
}

/// How long shutdown waits for each actor before aborting it.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl SessionManager {
    pub fn new(
        store: Store,
        bus: EventBus,
        connector: WaConnector,
        settings: SessionSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                shared: Shared {
                    store,
                    bus,
                    connector: Arc::new(connector),
                    settings,
                    acks: Arc::default(),
                    calls: Arc::default(),
                },
                sessions: Mutex::new(HashMap::new()),
                lifecycle: tokio::sync::Mutex::new(()),
                cancel: CancellationToken::new(),
                tracker: TaskTracker::new(),
                queue: queue::Queue::default(),
            }),
        }
    }

    /// Starts an actor for every stored session. Logged-in ones reconnect with their stored
    /// credentials (no QR); the others come back to the QR step. All start concurrently.
    pub async fn restore(&self) -> Result<usize> {
        let _guard = self.inner.lifecycle.lock().await;
        let rows = store::sessions::list(&self.inner.shared.store).await?;
        let n = rows.len();
        for row in rows {
            let Ok(id) = SessionId::parse(&row.id) else {
                tracing::warn!(session = %row.id, "skipping stored session with an invalid id");
                continue;
            };
            // A session that was logged out stays so until someone starts it again.
            if row.status == SessionStatus::LoggedOut.as_str() && !row.logged_in {
                self.insert_idle(id, SessionStatus::LoggedOut, row.status_reason.clone());
                continue;
            }
            self.spawn(id, row);
        }
        Ok(n)
    }

    /// Creates the session, or resumes it when it exists. Returns whether it was created.
    pub async fn start(&self, id: SessionId) -> Result<(SessionInfo, bool)> {
        if self.inner.cancel.is_cancelled() {
            return Err(SessionError::ShuttingDown);
        }
        let _guard = self.inner.lifecycle.lock().await;
        let (row, created) =
            store::sessions::create_or_get(&self.inner.shared.store, id.as_str()).await?;
        let running = {
            let map = self.inner.sessions.lock().expect("sessions lock");
            map.get(&id).map(|h| !h.task.is_finished())
        };
        match running {
            Some(true) => {}
            _ => {
                // Not running (new, logged out, failed or crashed for good): (re)start it.
                let row = if row.status == SessionStatus::LoggedOut.as_str() {
                    self.fresh_device(&id, row.device_id).await?
                } else {
                    row
                };
                self.remove_handle(&id);
                self.spawn(id.clone(), row);
            }
        }
        Ok((self.info(&id)?, created))
    }

    /// Gives a logged-out session a new device number and wipes the old device's keys.
    async fn fresh_device(
        &self,
        id: &SessionId,
        old_device: i64,
    ) -> Result<store::sessions::SessionRow> {
        let row = store::sessions::renumber_device(&self.inner.shared.store, id.as_str()).await?;
        if let Err(e) = self.inner.shared.connector.delete_device(old_device).await {
            // Leftover keys of an unlinked device are useless but harmless.
            tracing::warn!(session = %id, "cannot wipe the old device's keys: {e:#}");
        }
        Ok(row)
    }

    fn insert_idle(&self, id: SessionId, status: SessionStatus, reason: Option<String>) {
        let mut snap = Snapshot::new(status);
        snap.reason = reason;
        let (_tx, rx) = watch::channel(snap);
        let (ctx, _crx) = mpsc::channel(1);
        let handle = Handle {
            commands: ctx,
            state: rx,
            cancel: self.inner.cancel.child_token(),
            task: tokio::spawn(async {}),
        };
        self.inner
            .sessions
            .lock()
            .expect("sessions lock")
            .insert(id, handle);
    }

    fn spawn(&self, id: SessionId, row: store::sessions::SessionRow) {
        let cancel = self.inner.cancel.child_token();
        let (tx, rx) = watch::channel(Snapshot::new(SessionStatus::Starting));
        let (ctx, crx) = mpsc::channel(8);
        let task = self.inner.tracker.spawn(actor::supervise(
            self.inner.shared.clone(),
            id.clone(),
            row,
            tx,
            crx,
            cancel.clone(),
        ));
        let handle = Handle {
            commands: ctx,
            state: rx,
            cancel,
            task,
        };
        if let Some(old) = self
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .insert(id, handle)
        {
            old.cancel.cancel();
        }
    }

    fn remove_handle(&self, id: &SessionId) -> Option<Handle> {
        self.inner
            .sessions
            .lock()
            .expect("sessions lock")
            .remove(id)
    }

    /// The session's current state (status, account, live connection).
    pub fn snapshot(&self, id: &SessionId) -> Result<Snapshot> {
        let map = self.inner.sessions.lock().expect("sessions lock");
        let h = map
            .get(id)
            .ok_or_else(|| SessionError::NotFound(id.to_string()))?;
        Ok(h.state.borrow().clone())
    }

    fn commands(&self, id: &SessionId) -> Result<mpsc::Sender<Command>> {
        let map = self.inner.sessions.lock().expect("sessions lock");
        map.get(id)
            .map(|h| h.commands.clone())
            .ok_or_else(|| SessionError::NotFound(id.to_string()))
    }

    pub fn info(&self, id: &SessionId) -> Result<SessionInfo> {
        Ok(SessionInfo::from_snapshot(id, &self.snapshot(id)?))
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let map = self.inner.sessions.lock().expect("sessions lock");
        let mut v: Vec<_> = map
            .iter()
            .map(|(id, h)| SessionInfo::from_snapshot(id, &h.state.borrow()))
            .collect();
        v.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        v
    }

    pub fn qr(&self, id: &SessionId) -> Result<Qr> {
        let s = self.snapshot(id)?;
        s.qr.ok_or(SessionError::NoQr {
            id: id.to_string(),
            status: s.status,
        })
    }

    /// Waits until the session's status satisfies `pred`, or `timeout` passes.
    pub async fn wait_for(
        &self,
        id: &SessionId,
        timeout: Duration,
        pred: impl Fn(&Snapshot) -> bool,
    ) -> Result<Snapshot> {
        let mut rx = {
            let map = self.inner.sessions.lock().expect("sessions lock");
            map.get(id)
                .ok_or_else(|| SessionError::NotFound(id.to_string()))?
                .state
                .clone()
        };
        let fut = rx.wait_for(|s| pred(s));
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(s)) => Ok(s.clone()),
            Ok(Err(_)) => Err(SessionError::WrongState(format!("session `{id}` stopped"))),
            Err(_) => Err(SessionError::Timeout("the session state")),
        }
    }

    async fn ask<T>(
        &self,
        id: &SessionId,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T> {
        let tx = self.commands(id)?;
        let (reply, rx) = oneshot::channel();
        tx.send(make(reply))
            .await
            .map_err(|_| SessionError::WrongState(format!("session `{id}` is not running")))?;
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(SessionError::WrongState(format!("session `{id}` stopped"))),
            Err(_) => Err(SessionError::Timeout("the session to answer")),
        }
    }

    /// Logs the device out of WhatsApp. The session stays (status `logged_out`); starting it
    /// again shows a new QR.
    pub async fn logout(&self, id: &SessionId) -> Result<SessionInfo> {
        let s = self.snapshot(id)?;
        if s.status == SessionStatus::LoggedOut {
            return Ok(SessionInfo::from_snapshot(id, &s));
        }
        self.ask(id, Command::Logout).await?;
        self.info(id)
    }

    /// Drops the connection and connects again (same credentials).
    pub async fn restart(&self, id: &SessionId) -> Result<SessionInfo> {
        let s = self.snapshot(id)?;
        if s.status == SessionStatus::LoggedOut {
            let _guard = self.inner.lifecycle.lock().await;
            let old_device = s_device_id(&self.inner.shared.store, id).await?;
            let row = self.fresh_device(id, old_device).await?;
            self.remove_handle(id);
            self.spawn(id.clone(), row);
            return self.info(id);
        }
        self.ask(id, Command::Restart).await?;
        self.info(id)
    }

    /// Logs out (when logged in), stops the actor and deletes everything kept for it.
    pub async fn delete(&self, id: &SessionId) -> Result<()> {
        let _guard = self.inner.lifecycle.lock().await;
        let row = store::sessions::get(&self.inner.shared.store, id.as_str())
            .await?
            .ok_or_else(|| SessionError::NotFound(id.to_string()))?;
        if let Some(h) = self.remove_handle(id) {
            let (reply, rx) = oneshot::channel();
            if h.commands.send(Command::Logout(reply)).await.is_ok() {
                // Best effort: a session that cannot reach WhatsApp is still deleted here.
                if tokio::time::timeout(Duration::from_secs(10), rx)
                    .await
                    .is_err()
                {
                    tracing::warn!(session = %id, "logout before delete timed out");
                }
            }
            stop(h).await;
        }
        store::sessions::delete(&self.inner.shared.store, id.as_str()).await?;
        self.inner
            .shared
            .connector
            .delete_device(row.device_id)
            .await?;
        Ok(())
    }

    pub async fn pairing_code(&self, id: &SessionId, phone: &str) -> Result<String> {
        let phone = phone.to_owned();
        self.ask(id, |reply| Command::PairingCode { phone, reply })
            .await?
    }

    /// The session's live connection and account, or why it cannot talk to WhatsApp now.
    pub fn live(&self, id: &SessionId) -> Result<(WaSession, Me)> {
        let s = self.snapshot(id)?;
        match (s.connection, s.status) {
            (Some(c), SessionStatus::Connected) => Ok((c, s.me)),
            (_, status) => Err(SessionError::NotConnected {
                id: id.to_string(),
                status,
            }),
        }
    }

    /// Which of `phones` (digits only) have a WhatsApp account, asked through the session.
    pub async fn check_numbers(
        &self,
        id: &SessionId,
        phones: &[String],
    ) -> Result<Vec<crate::whatsapp::NumberCheck>> {
        let (conn, _) = self.live(id)?;
        conn.check_numbers(phones)
            .await
            .map_err(SessionError::WhatsApp)
    }

    /// What WhatsApp tells about `who`'s account (`None`: no account).
    pub async fn contact_info(
        &self,
        id: &SessionId,
        who: &ChatAddress,
    ) -> Result<Option<crate::whatsapp::ContactInfo>> {
        let (conn, _) = self.live(id)?;
        let mut info = conn
            .contact_info(who)
            .await
            .map_err(SessionError::WhatsApp)?;
        if let Some(i) = info.as_mut() {
            // WhatsApp sends a push name only with messages: the latest one they sent us.
            for chat in [i.jid.clone(), i.lid.clone()].into_iter().flatten() {
                let filter = store::messages::Filter {
                    chat_id: Some(chat),
                    direction: Some(store::messages::Direction::In),
                    since: None,
                    until: None,
                };
                let (latest, _) =
                    store::messages::list(&self.inner.shared.store, id.as_str(), &filter, None, 1)
                        .await?;
                if let Some(name) = latest
                    .first()
                    .and_then(|m| m["pushName"].as_str())
                    .filter(|n| !n.is_empty())
                {
                    i.push_name = Some(name.to_owned());
                    break;
                }
            }
        }
        Ok(info)
    }

    /// Where `who`'s profile photo is (`None`: none, or hidden).
    pub async fn profile_picture(
        &self,
        id: &SessionId,
        who: &ChatAddress,
    ) -> Result<Option<crate::whatsapp::Picture>> {
        let (conn, _) = self.live(id)?;
        conn.profile_picture(who)
            .await
            .map_err(SessionError::WhatsApp)
    }

    /// Pins, archives, mutes or marks the chat on WhatsApp (each change a patch the
    /// account's devices sync), then keeps the new state with its `chat-updated` event.
    pub async fn chat_action(
        &self,
        id: &SessionId,
        chat: &ChatAddress,
        changes: &[crate::model::ChatChange],
    ) -> Result<crate::model::ChatState> {
        let (conn, _) = self.live(id)?;
        for change in changes {
            conn.chat_action(chat, *change)
                .await
                .map_err(SessionError::WhatsApp)?;
        }
        let (state, event) = store::chats::apply(
            &self.inner.shared.store,
            id.as_str(),
            chat.as_str(),
            changes,
        )
        .await?;
        if let Some(ev) = event {
            self.inner.shared.bus.publish(ev);
        }
        Ok(state)
    }

    /// Blocks or unblocks `who`.
    pub async fn block(&self, id: &SessionId, who: &ChatAddress, block: bool) -> Result<()> {
        let (conn, _) = self.live(id)?;
        conn.block(who, block).await.map_err(SessionError::WhatsApp)
    }

    /// The chat classes whose messages the session drops.
    pub async fn ignore(&self, id: &SessionId) -> Result<crate::model::Ignore> {
        self.snapshot(id)?;
        Ok(store::settings::ignore(&self.inner.shared.store, id.as_str()).await?)
    }

    /// Sets what the session drops; its client follows at once.
    pub async fn set_ignore(&self, id: &SessionId, ignore: crate::model::Ignore) -> Result<()> {
        self.snapshot(id)?;
        store::settings::set_ignore(&self.inner.shared.store, id.as_str(), ignore).await?;
        self.inner.shared.connector.set_ignore(id.as_str(), ignore);
        Ok(())
    }

    /// How the session's queued messages are paced.
    pub async fn pacing(&self, id: &SessionId) -> Result<crate::model::Pacing> {
        self.snapshot(id)?;
        Ok(store::settings::pacing(&self.inner.shared.store, id.as_str()).await?)
    }

    /// Sets how the session's queued messages are paced (checked by the caller with
    /// [`crate::model::Pacing::problem`]); the next messages follow it.
    pub async fn set_pacing(&self, id: &SessionId, pacing: &crate::model::Pacing) -> Result<()> {
        self.snapshot(id)?;
        store::settings::set_pacing(&self.inner.shared.store, id.as_str(), pacing).await?;
        Ok(())
    }

    /// The session's passkey step.
    pub fn passkey(&self, id: &SessionId) -> Result<PasskeyInfo> {
        Ok(PasskeyInfo::from_snapshot(id, &self.snapshot(id)?))
    }

    /// Hands the owner's assertion to WhatsApp. Answers once WhatsApp accepted it.
    pub async fn passkey_assertion(
        &self,
        id: &SessionId,
        assertion: Assertion,
    ) -> Result<PasskeyInfo> {
        self.passkey_pending(id, Stage::AssertionRequired)?;
        self.ask(id, |reply| Command::PasskeyAssertion { assertion, reply })
            .await??;
        self.passkey(id)
    }

    /// Tells WhatsApp the operator saw the same code on the phone.
    pub async fn passkey_confirm(&self, id: &SessionId) -> Result<PasskeyInfo> {
        self.passkey_pending(id, Stage::ConfirmationRequired)?;
        self.ask(id, Command::PasskeyConfirm).await??;
        self.passkey(id)
    }

    /// Refuses early (without asking the actor) when nothing waits at `stage`.
    fn passkey_pending(&self, id: &SessionId, stage: Stage) -> Result<()> {
        let s = self.snapshot(id)?;
        check_passkey_stage(id, s.passkey.as_ref(), stage)
    }

    /// Sends a message and records it (status `sent` once WhatsApp accepted it).
    pub async fn send(
        &self,
        id: &SessionId,
        to: &ChatAddress,
        content: &Content,
        reply: &crate::model::Reply,
    ) -> Result<Message> {
        let (conn, me) = self.live(id)?;
        let quoted = match &reply.quoted_id {
            Some(q) => Some(
                store::messages::find(&self.inner.shared.store, id.as_str(), q)
                    .await?
                    .ok_or_else(|| SessionError::QuotedNotFound(q.to_owned()))?,
            ),
            None => None,
        };
        actor::send(
            &self.inner.shared,
            id,
            &conn,
            &me,
            to,
            content,
            actor::Extras {
                quoted: quoted.as_ref(),
                mentions: &reply.mentions,
            },
        )
        .await
    }

    /// Registers for WhatsApp's server ack of message `message_id`, before it is written.
    pub(crate) fn expect_ack(
        &self,
        id: &SessionId,
        message_id: &str,
    ) -> tokio::sync::oneshot::Receiver<Option<String>> {
        self.inner.shared.acks.expect(id.as_str(), message_id)
    }

    /// Settles a direct send written with `sent` (see [`actor::settle_direct`]).
    pub(crate) async fn settle_direct(
        &self,
        id: &SessionId,
        message_id: &str,
        sent: std::result::Result<(), String>,
        acked: tokio::sync::oneshot::Receiver<Option<String>>,
    ) -> Result<()> {
        actor::settle_direct(&self.inner.shared, id, message_id, sent, acked).await
    }

    /// Stops every actor: each disconnects cleanly within a timeout, then is aborted.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        let handles: Vec<Handle> = self
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .drain()
            .map(|(_, h)| h)
            .collect();
        futures::future::join_all(handles.into_iter().map(stop)).await;
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

/// `Ok` when the session's passkey step waits at `stage`, else what it waits for.
fn check_passkey_stage(id: &SessionId, c: Option<&Ceremony>, stage: Stage) -> Result<()> {
    match c {
        Some(c) if c.stage == stage => Ok(()),
        Some(c) => Err(SessionError::PasskeyNotPending(format!(
            "session `{id}`'s passkey step is at stage `{}`, not `{stage}`",
            c.stage
        ))),
        None => Err(SessionError::PasskeyNotPending(format!(
            "session `{id}` has no passkey step waiting; WhatsApp asks for one only while linking"
        ))),
    }
}

async fn s_device_id(store: &Store, id: &SessionId) -> Result<i64> {
    Ok(store::sessions::get(store, id.as_str())
        .await?
        .ok_or_else(|| SessionError::NotFound(id.to_string()))?
        .device_id)
}

async fn stop(h: Handle) {
    h.cancel.cancel();
    let abort = h.task.abort_handle();
    if tokio::time::timeout(STOP_TIMEOUT, h.task).await.is_err() {
        tracing::warn!("session actor did not stop in time; aborting it");
        abort.abort();
    }
}
