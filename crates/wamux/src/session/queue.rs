//! The send queue's worker: sends what [`SessionManager::queue`] accepted, once its
//! session is connected and its time has come, in order per chat.
//!
//! One dispatcher task wakes when something is queued, when a session connects, and when
//! the next scheduled send is due. It starts one drain per connected session with due
//! sends; a drain sends the heads of the session's chats one by one until none is due. A
//! message is sent with the id it was given when queued, so one that WhatsApp took just
//! before a crash (its queue row not yet removed) goes again with the same id after the
//! restart, and the recipient's devices take it once. A message counts as sent when
//! WhatsApp's server acks it, not when it is written to the socket. A failed attempt is tried again
//! after a growing delay ([`retry_after`]), holding its chat's later messages back; after
//! `WAMUX_SEND_ATTEMPTS` (5) the message is `failed` with the last reason (`message-failed`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use super::{Result, SessionError, SessionManager};
use crate::event::EventKind;
use crate::model::{
    ChatAddress, Content, Message, MessageStatus, Pacing, PresenceState, SessionId, SessionStatus,
};
use crate::store::{self, queue::Queued};

/// How many due sends a drain takes from the store at a time.
const BATCH: i64 = 50;

/// The latest a scheduled send may be: a year ahead.
pub const MAX_AHEAD_SECS: i64 = 366 * 24 * 3600;

/// A sent message: its session and id.
type Sent = (String, String);

/// Settled with the server's error code, or `None` when it took the message.
type AckSender = oneshot::Sender<Option<String>>;

/// Who waits for the server ack of which message, per session.
#[derive(Default)]
pub(crate) struct AckWaiters {
    waiting: Mutex<HashMap<Sent, AckSender>>,
}

impl AckWaiters {
    /// Waits for the ack of `message_id`; register before sending, the ack can be quick.
    pub(crate) fn expect(
        &self,
        session: &str,
        message_id: &str,
    ) -> oneshot::Receiver<Option<String>> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .expect("ack lock")
            .insert((session.to_owned(), message_id.to_owned()), tx);
        rx
    }

    pub(crate) fn forget(&self, session: &str, message_id: &str) {
        self.waiting
            .lock()
            .expect("ack lock")
            .remove(&(session.to_owned(), message_id.to_owned()));
    }

    /// The server acked `message_id` (`error`: it refused it). Returns whether the queue
    /// was waiting for that ack (else the message was a direct send, or none of ours).
    pub(crate) fn settle(&self, session: &str, message_id: &str, error: Option<String>) -> bool {
        let waiter = self
            .waiting
            .lock()
            .expect("ack lock")
            .remove(&(session.to_owned(), message_id.to_owned()));
        match waiter {
            // The drain may have given up waiting meanwhile.
            Some(w) => w.send(error).is_ok(),
            None => false,
        }
    }
}

/// The dispatcher's state, shared with the API side.
#[derive(Default)]
pub(super) struct Queue {
    wake: Notify,
    draining: Mutex<HashSet<String>>,
    /// When each session's last queued send left (pacing counts from it).
    last_sent: Mutex<HashMap<String, tokio::time::Instant>>,
}

/// Seconds to wait after failed attempt number `attempts`: 5, 10, 20, 40 s.
pub fn retry_after(attempts: i64) -> i64 {
    5 * (1 << attempts.clamp(1, 4).saturating_sub(1))
}

impl SessionManager {
    /// Queues a message to `to`, due at `send_at` (Unix seconds; now when `None`): recorded
    /// (status `queued`) and announced at once, sent when the session is connected. The
    /// session must exist; it need not be connected.
    pub async fn queue(
        &self,
        id: &SessionId,
        to: &ChatAddress,
        content: &Content,
        reply: &crate::model::Reply,
        send_at: Option<i64>,
    ) -> Result<Message> {
        let quoted_id = reply.quoted_id.as_deref();
        let snapshot = self.snapshot(id)?;
        let store = &self.inner.shared.store;
        if let Some(q) = quoted_id
            && store::messages::find(store, id.as_str(), q)
                .await?
                .is_none()
        {
            return Err(SessionError::QuotedNotFound(q.to_owned()));
        }
        let mut msg = snapshot.me.outgoing_message(
            id,
            &crate::whatsapp::new_message_id(),
            to,
            content.kind(),
        );
        msg.status = MessageStatus::Queued;
        content.fill(&mut msg);
        msg.quoted_id = quoted_id.map(str::to_owned);
        msg.mentions = reply.mentions.clone();
        let due = send_at.unwrap_or_else(store::now);
        let from = msg.from.clone();
        if let Some(ev) = store::queue::enqueue(store, &msg, &from, to.as_str(), due).await? {
            self.inner.shared.bus.publish(ev);
        }
        self.inner.queue.wake.notify_one();
        Ok(msg)
    }

    /// The session's queued sends, in the order they will go.
    pub async fn queued(&self, id: &SessionId) -> Result<Vec<Queued>> {
        self.snapshot(id)?;
        Ok(store::queue::list(&self.inner.shared.store, id.as_str()).await?)
    }

    /// When each of `queued` (the session's queue, in order) is expected to go (Unix
    /// seconds): its time, after the ones before it, paced, and past the daily cap; an
    /// estimate (the jitter, retries and a disconnection move it).
    pub async fn expected(&self, id: &SessionId, queued: &[Queued]) -> Result<Vec<i64>> {
        let store = &self.inner.shared.store;
        let pacing = store::settings::pacing(store, id.as_str()).await?;
        let now = store::now();
        let day = now / 86_400 * 86_400;
        let mut left_today = match pacing.daily_cap {
            Some(cap) => {
                i64::from(cap) - store::messages::sent_since(store, id.as_str(), day).await?
            }
            None => i64::MAX,
        };
        let gap_ms = i64::from(pacing.interval_ms);
        let mut day_start = day;
        // The first waits for the gap after the session's last queued send.
        let since_last = self.last_sent(id).map(|at| at.elapsed().as_millis() as i64);
        let mut prev_ms: Option<i64> = since_last.map(|ago| now * 1000 - ago);
        let mut out = Vec::with_capacity(queued.len());
        for q in queued {
            let due = q.send_at.max(q.retry_at.unwrap_or(0)).max(now) * 1000;
            let mut at = prev_ms.map_or(due, |p| due.max(p + gap_ms));
            if left_today <= 0 {
                // Tomorrow's share starts at midnight (UTC).
                day_start += 86_400;
                left_today = pacing.daily_cap.map_or(i64::MAX, i64::from);
                at = at.max(day_start * 1000);
            }
            left_today -= 1;
            prev_ms = Some(at);
            out.push(at.div_euclid(1000));
        }
        Ok(out)
    }

    /// Cancels a queued send: it will not go, and its message is `failed` ("cancelled").
    /// Returns whether it was still queued.
    pub async fn cancel_queued(&self, id: &SessionId, message_id: &str) -> Result<bool> {
        self.snapshot(id)?;
        let ev = store::queue::give_up(
            &self.inner.shared.store,
            id.as_str(),
            message_id,
            "cancelled",
        )
        .await?;
        Ok(match ev {
            Some(ev) => {
                self.inner.shared.bus.publish(ev);
                true
            }
            None => false,
        })
    }

    /// Sends a `failed` text message of ours again, through the queue, with the id it had
    /// (a recipient that did get it takes it once). Returns the message, `queued`.
    pub async fn resend(&self, id: &SessionId, message_id: &str) -> Result<Message> {
        self.snapshot(id)?;
        let store = &self.inner.shared.store;
        let msg = store::messages::find(store, id.as_str(), message_id)
            .await?
            .filter(|m| m.from_me)
            .ok_or_else(|| SessionError::MessageNotFound(message_id.to_owned()))?;
        if msg.status != MessageStatus::Failed {
            return Err(SessionError::WrongState(format!(
                "message `{message_id}` is {}, not failed; only a failed message is sent again",
                msg.status.as_str()
            )));
        }
        if Content::of(&msg).is_none() {
            return Err(SessionError::WrongState(format!(
                "message `{message_id}` is a {}; only text, location and contact messages are sent again for now (send the file anew)",
                msg.kind
            )));
        }
        let requeued = store::queue::requeue(store, &msg, store::now()).await?;
        if !requeued {
            return Err(SessionError::WrongState(format!(
                "message `{message_id}` changed meanwhile; look at it again"
            )));
        }
        self.inner.queue.wake.notify_one();
        let mut msg = msg;
        msg.status = MessageStatus::Queued;
        Ok(msg)
    }

    /// Starts the dispatcher; it runs until the manager shuts down.
    pub fn start_queue(&self) {
        let mgr = self.clone();
        self.inner
            .tracker
            .spawn(async move { mgr.dispatch().await });
    }

    async fn dispatch(&self) {
        let mut bus = self.inner.shared.bus.subscribe();
        loop {
            let next = match self.start_drains().await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!("send queue: cannot read the queue: {e}");
                    Some(store::now() + 5)
                }
            };
            let wait = next.map_or(Duration::from_secs(3600), |t| {
                Duration::from_secs((t - store::now()).clamp(1, 3600) as u64)
            });
            tokio::select! {
                () = self.inner.cancel.cancelled() => return,
                () = self.inner.queue.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = connected(&mut bus) => {}
            }
        }
    }

    /// Starts a drain for each connected session with something due; returns when the
    /// next send not yet due is.
    async fn start_drains(&self) -> Result<Option<i64>> {
        let now = store::now();
        let mut next: Option<i64> = None;
        for (session, due_at) in store::queue::sessions(&self.inner.shared.store).await? {
            let Ok(id) = SessionId::parse(&session) else {
                continue;
            };
            if due_at > now {
                next = Some(next.map_or(due_at, |n| n.min(due_at)));
                continue;
            }
            // A session that is not connected is looked at again when it connects.
            if self.live(&id).is_err() {
                continue;
            }
            // Something due may still be held back (a chat's head waits for its retry).
            next = Some(next.map_or(now + 1, |n| n.min(now + 1)));
            let fresh = self
                .inner
                .queue
                .draining
                .lock()
                .expect("queue lock")
                .insert(session.clone());
            if fresh {
                let mgr = self.clone();
                self.inner.tracker.spawn(async move {
                    if let Err(e) = mgr.drain(&id).await {
                        tracing::warn!(session = %id, "send queue: {e}");
                    }
                    mgr.inner
                        .queue
                        .draining
                        .lock()
                        .expect("queue lock")
                        .remove(id.as_str());
                    mgr.inner.queue.wake.notify_one();
                });
            }
        }
        Ok(next)
    }

    /// Sends the session's due messages until none is due or the session is gone.
    async fn drain(&self, id: &SessionId) -> Result<()> {
        let store = &self.inner.shared.store;
        let pacing = store::settings::pacing(store, id.as_str()).await?;
        loop {
            let due = store::queue::due(store, id.as_str(), store::now(), BATCH).await?;
            if due.is_empty() {
                return Ok(());
            }
            for q in due {
                if self.inner.cancel.is_cancelled() {
                    return Ok(());
                }
                let Ok((conn, _)) = self.live(id) else {
                    return Ok(());
                };
                if let Some(cap) = pacing.daily_cap {
                    let day = store::now() / 86_400 * 86_400;
                    if store::messages::sent_since(store, id.as_str(), day).await? >= i64::from(cap)
                    {
                        tracing::info!(session = %id, "daily cap of {cap} messages reached; the queue waits for tomorrow (UTC)");
                        store::queue::hold(store, id.as_str(), day + 86_400).await?;
                        return Ok(());
                    }
                }
                if !self.pace(id, &pacing, &conn, &q).await {
                    return Ok(());
                }
                let quoted = match &q.body.quoted_id {
                    Some(qid) => store::messages::find(store, id.as_str(), qid).await?,
                    None => None,
                };
                let acks = &self.inner.shared.acks;
                let acked = acks.expect(id.as_str(), &q.message_id);
                let sent = match ChatAddress::parse(&q.to) {
                    Ok(to) => match conn.outgoing(&to, q.message_id.clone()) {
                        Ok(out) => {
                            conn.send(&out, &q.body.content(), quoted.as_ref(), &q.body.mentions)
                                .await
                        }
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e.to_string()),
                };
                self.inner
                    .queue
                    .last_sent
                    .lock()
                    .expect("queue lock")
                    .insert(id.to_string(), tokio::time::Instant::now());
                // Written to the socket is not taken: only the server's ack is (a stanza
                // still in flight when the process dies is lost with it).
                let timeout = self.inner.shared.settings.ack_timeout;
                let sent = match sent {
                    Ok(()) => match tokio::time::timeout(timeout, acked).await {
                        Ok(Ok(None)) => Ok(()),
                        Ok(Ok(Some(code))) => Err(crate::whatsapp::refusal(&code)),
                        Ok(Err(_)) | Err(_) => {
                            Err(format!("no server ack within {} s", timeout.as_secs()))
                        }
                    },
                    Err(e) => Err(e),
                };
                acks.forget(id.as_str(), &q.message_id);
                let ev = match sent {
                    Ok(()) => store::queue::sent(store, id.as_str(), &q.message_id).await?,
                    Err(why)
                        if q.attempts + 1
                            >= i64::from(self.inner.shared.settings.send_attempts) =>
                    {
                        tracing::warn!(session = %id, message = %q.message_id, "queued message failed for good: {why}");
                        store::queue::give_up(store, id.as_str(), &q.message_id, &why).await?
                    }
                    Err(why) => {
                        tracing::info!(session = %id, message = %q.message_id, attempt = q.attempts + 1, "queued message not sent, tried again later: {why}");
                        let at = store::now() + retry_after(q.attempts + 1);
                        store::queue::failed_attempt(store, id.as_str(), &q.message_id, &why, at)
                            .await?;
                        None
                    }
                };
                if let Some(ev) = ev {
                    self.inner.shared.bus.publish(ev);
                }
            }
        }
    }
}

impl SessionManager {
    /// When the session's last queued send left, since this process started.
    fn last_sent(&self, id: &SessionId) -> Option<tokio::time::Instant> {
        self.inner
            .queue
            .last_sent
            .lock()
            .expect("queue lock")
            .get(id.as_str())
            .copied()
    }

    /// Waits out the session's pacing before queued message `q` goes, showing "typing…"
    /// for its last part if asked. `false` when the server is stopping meanwhile.
    async fn pace(
        &self,
        id: &SessionId,
        pacing: &Pacing,
        conn: &crate::whatsapp::WaSession,
        q: &Queued,
    ) -> bool {
        let last = self.last_sent(id);
        let now = tokio::time::Instant::now();
        let ready = last.map_or(now, |l| (l + pacing.gap()).max(now));
        let typing = if pacing.typing {
            let chars = q.body.text.as_deref().map_or(0, |t| t.chars().count());
            Pacing::typing_for(chars)
        } else {
            Duration::ZERO
        };
        let cancel = &self.inner.cancel;
        let until = |at: tokio::time::Instant| async move {
            tokio::select! {
                () = cancel.cancelled() => false,
                () = tokio::time::sleep_until(at) => true,
            }
        };
        // Typing takes the end of the gap, or starts now when the gap is shorter.
        if !until(ready.checked_sub(typing).unwrap_or(now).max(now)).await {
            return false;
        }
        if typing.is_zero() {
            return true;
        }
        let Ok(to) = ChatAddress::parse(&q.to) else {
            return true;
        };
        if let Err(e) = conn.chat_state(&to, PresenceState::Composing).await {
            tracing::debug!(session = %id, "cannot show typing before a queued message: {e}");
        }
        let shown = until(tokio::time::Instant::now() + typing).await;
        if let Err(e) = conn.chat_state(&to, PresenceState::Paused).await {
            tracing::debug!(session = %id, "cannot clear typing: {e}");
        }
        shown
    }
}

/// Resolves when some session connects (or the bus lagged, when one may have).
async fn connected(
    bus: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<crate::event::Event>>,
) {
    loop {
        match bus.recv().await {
            Ok(ev)
                if ev.kind == EventKind::SessionStatus
                    && ev.data["status"] == SessionStatus::Connected.as_str() =>
            {
                return;
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time() {
        let waits: Vec<i64> = (1..=5).map(retry_after).collect();
        assert_eq!(waits, [5, 10, 20, 40, 40]);
    }
}
