//! The Socket.IO feed at `/socket.io/` (protocol v5, which Socket.IO v3 and v4 clients speak).
//!
//! A client authenticates with an API key in the handshake `auth` (`{"apiKey": "..."}`) or the
//! query `apiKey`; without a valid key the namespace connection is refused with a
//! `connect_error`. A scoped key needs the `read` scope and hears only the sessions its
//! patterns name; when the key is revoked (or expires) its connections are closed. Each connection gets every session's events by default; the query
//! `sessionId=s1,s2` or the client events `subscribe` / `unsubscribe` with
//! `{"sessionIds": [...]}` narrow it (see [`Subscription`]). The event names and payloads are
//! the webhooks' own: the name is the event kind, the payload [`Event::body`].
//!
//! One fan-out task reads the [`EventBus`] and hands each event to the matching sockets with
//! a non-blocking `emit`: every socket has a bounded packet buffer (`max_buffer_size`), and
//! when a slow client's buffer is full the event is dropped for that client only, with a log
//! line. The server never waits for a client. A fan-out task that falls behind the bus loses
//! events the same way (logged), since the bus is a bounded broadcast; durable consumers read
//! the database, not this feed.
//!
//! Errors: nothing here reaches the HTTP error type; refused handshakes are [`AuthError`],
//! everything else is logged.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::DisconnectReason;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::access::Scope;
use crate::api::{Caller, Keys};
use crate::event::{Event, EventBus};

/// Packets buffered per client before its events are dropped. Generous enough for a burst
/// of a few hundred messages on a healthy link; a client that stays this far behind is slow.
const CLIENT_BUFFER: usize = 512;

/// Builds the Socket.IO layer and starts the fan-out task, which runs until `shutdown`.
/// Mount the layer on the app's router; it only answers requests under `/socket.io/`.
pub fn layer(keys: Keys, bus: &EventBus, shutdown: CancellationToken) -> SocketIoLayer {
    let (layer, io) = SocketIo::builder()
        .max_buffer_size(CLIENT_BUFFER)
        .build_layer();

    let revocations = keys.revocations();
    io.ns(
        "/",
        on_connect.with(move |s: SocketRef, TryData(auth): TryData<Value>| {
            let keys = keys.clone();
            async move {
                authenticate(&s, auth.ok().as_ref(), &keys).await?;
                // Here, not in `on_connect`: socketioxide sends the CONNECT packet after the
                // middlewares and only then spawns the connect handler, so a client's first
                // `subscribe` could come before a handler registered there exists.
                set_up(&s);
                Ok::<(), AuthError>(())
            }
        }),
    );

    tokio::spawn(close_revoked(io.clone(), revocations, shutdown.clone()));
    let rx = bus.subscribe();
    tokio::spawn(fan_out(io, rx, shutdown));
    layer
}

/// Closes the connections of each key revoked, as soon as it is.
async fn close_revoked(
    io: SocketIo,
    mut revoked: tokio::sync::broadcast::Receiver<String>,
    shutdown: CancellationToken,
) {
    loop {
        let id = tokio::select! {
            () = shutdown.cancelled() => return,
            r = revoked.recv() => match r {
                Ok(id) => Some(id),
                // Missed some: check every connection's key against the store's news below.
                Err(RecvError::Lagged(_)) => None,
                Err(RecvError::Closed) => return,
            },
        };
        for s in io.sockets() {
            let Some(c) = client(&s) else { continue };
            let key = c.caller.key_id();
            if key.is_some() && (id.is_none() || key == id.as_deref()) {
                tracing::info!(sid = %s.id, key = ?key, "socket.io connection of a revoked key closed");
                let _ = s.disconnect();
            }
        }
    }
}

/// Why a handshake was refused; the text reaches the client as `connect_error`'s message.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key: pass auth {{\"apiKey\": \"...\"}} or the query apiKey")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("this key lacks the `read` scope")]
    MissingScope,
    #[error("too many wrong API keys from this address; try again later")]
    RateLimited,
    #[error("internal error; see the server log")]
    Internal,
}

/// The key is resolved by [`Keys::resolve`], as the HTTP API's are, and counts against the
/// same per-address limit of failures. The caller is kept in the socket's extensions.
async fn authenticate(s: &SocketRef, auth: Option<&Value>, keys: &Keys) -> Result<(), AuthError> {
    let ip = keys.client_ip(
        s.req_parts()
            .extensions
            .get::<axum::extract::ConnectInfo<crate::net::PeerAddr>>()
            .map(|c| c.0.0.ip()),
        &s.req_parts().headers,
    );
    if ip.is_some_and(|ip| keys.blocked(ip).is_some()) {
        crate::metrics::auth_rate_limited();
        return Err(AuthError::RateLimited);
    }
    let failed = |e: AuthError| {
        if let Some(ip) = ip {
            keys.failed(ip);
        }
        Err(e)
    };
    let from_auth = auth
        .and_then(|a| a.get("apiKey"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let given = from_auth.or_else(|| query_param(s, "apiKey"));
    let Some(given) = given else {
        tracing::debug!(sid = %s.id, "socket.io handshake without API key refused");
        return failed(AuthError::Missing);
    };
    match keys.resolve(&given).await {
        Ok(Some(caller)) if caller.grant().is_some_and(|g| !g.has(Scope::Read)) => {
            Err(AuthError::MissingScope)
        }
        Ok(Some(caller)) => {
            s.extensions.insert(caller);
            Ok(())
        }
        Ok(None) => {
            tracing::info!(sid = %s.id, "socket.io handshake with a wrong API key refused");
            failed(AuthError::Invalid)
        }
        Err(e) => {
            tracing::error!("socket.io handshake: cannot look the key up: {e}");
            Err(AuthError::Internal)
        }
    }
}

fn query_param(s: &SocketRef, name: &str) -> Option<String> {
    let query = s.req_parts().uri.query()?;
    form_pairs(query).find(|(k, _)| k == name).map(|(_, v)| v)
}

/// `application/x-www-form-urlencoded` pairs, decoded; the client percent-encodes the `,` of
/// `sessionId=s1,s2`.
fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Per-connection state, kept in the socket's extensions.
struct Client {
    caller: Caller,
    subscription: Mutex<Subscription>,
    dropped: AtomicU64,
}

async fn on_connect(s: SocketRef) {
    tracing::trace!(sid = %s.id, "socket.io connect handler");
}

/// A connection's state and event handlers, set up once its key is accepted.
fn set_up(s: &SocketRef) {
    let mut sub = Subscription::default();
    if let Some(ids) = query_param(s, "sessionId").or_else(|| query_param(s, "sessionIds")) {
        sub.subscribe(split_ids(&ids));
    }
    tracing::debug!(sid = %s.id, subscription = ?sub, "socket.io client connected");
    // Set by `authenticate`, which runs first; a connection without it hears nothing.
    let Some(caller) = s.extensions.get::<Caller>() else {
        return;
    };
    s.extensions.insert(Arc::new(Client {
        caller,
        subscription: Mutex::new(sub),
        dropped: AtomicU64::new(0),
    }));

    s.on(
        "subscribe",
        async |s: SocketRef, TryData(req): TryData<SubscribeRequest>, ack: AckSender| {
            change_subscription(&s, req.map(|r| r.ids()), ack, Subscription::subscribe);
        },
    );
    s.on(
        "unsubscribe",
        async |s: SocketRef, TryData(req): TryData<SubscribeRequest>, ack: AckSender| {
            change_subscription(&s, req.map(|r| r.ids()), ack, Subscription::unsubscribe);
        },
    );
    s.on_disconnect(async |s: SocketRef, reason: DisconnectReason| {
        let dropped = client(&s).map_or(0, |c| c.dropped.load(Ordering::Relaxed));
        tracing::debug!(sid = %s.id, ?reason, dropped, "socket.io client disconnected");
    });
}

fn client(s: &SocketRef) -> Option<Arc<Client>> {
    s.extensions.get::<Arc<Client>>()
}

fn change_subscription<E: std::fmt::Display>(
    s: &SocketRef,
    ids: Result<Vec<String>, E>,
    ack: AckSender,
    apply: fn(&mut Subscription, Vec<String>),
) {
    let reply = match (ids, client(s)) {
        (Ok(ids), Some(c)) => {
            let mut sub = c.subscription.lock().unwrap_or_else(|p| p.into_inner());
            apply(&mut sub, ids);
            let mut reply = sub.describe();
            // A scoped key hears its own sessions only, whatever it subscribes to.
            if let Some(g) = c.caller.grant() {
                let patterns: Vec<String> = g.sessions.iter().map(ToString::to_string).collect();
                reply["limitedTo"] = patterns.into();
            }
            reply
        }
        (Err(e), _) => serde_json::json!({"error": {
            "code": "bad_request",
            "message": format!("expected {{\"sessionIds\": [\"s1\", ...]}}: {e}"),
        }}),
        (Ok(_), None) => serde_json::json!({"error": {
            "code": "internal", "message": "connection state missing",
        }}),
    };
    if let Err(e) = ack.send(&reply) {
        tracing::debug!(sid = %s.id, error = %e, "socket.io subscription ack not sent");
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscribeRequest {
    #[serde(default)]
    session_ids: Option<IdList>,
    #[serde(default)]
    session_id: Option<IdList>,
}

/// `["s1","s2"]` or `"s1,s2"`: both spellings are easy to get wrong from a client, so both work.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum IdList {
    Many(Vec<String>),
    One(String),
}

impl SubscribeRequest {
    fn ids(self) -> Vec<String> {
        match self.session_ids.or(self.session_id) {
            Some(IdList::Many(v)) => v,
            Some(IdList::One(s)) => split_ids(&s),
            None => Vec::new(),
        }
    }
}

fn split_ids(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Which sessions a connection hears about. It starts with every session; the first
/// `subscribe` narrows it to the sessions named, later ones add to them. `unsubscribe` takes
/// sessions away (from "every session" too). `"*"` stands for every session in both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Every session except these.
    AllExcept(BTreeSet<String>),
    /// Only these sessions (possibly none).
    Only(BTreeSet<String>),
}

impl Default for Subscription {
    fn default() -> Self {
        Subscription::AllExcept(BTreeSet::new())
    }
}

const EVERY_SESSION: &str = "*";

impl Subscription {
    pub fn wants(&self, session_id: &str) -> bool {
        match self {
            Subscription::AllExcept(except) => !except.contains(session_id),
            Subscription::Only(only) => only.contains(session_id),
        }
    }

    pub fn subscribe(&mut self, ids: Vec<String>) {
        if ids.iter().any(|i| i == EVERY_SESSION) {
            *self = Subscription::default();
            return;
        }
        match self {
            // Narrowing from the default: the client names what it wants.
            Subscription::AllExcept(except) if except.is_empty() => {
                if !ids.is_empty() {
                    *self = Subscription::Only(ids.into_iter().collect());
                }
            }
            Subscription::AllExcept(except) => {
                for id in &ids {
                    except.remove(id);
                }
            }
            Subscription::Only(only) => only.extend(ids),
        }
    }

    pub fn unsubscribe(&mut self, ids: Vec<String>) {
        if ids.iter().any(|i| i == EVERY_SESSION) {
            *self = Subscription::Only(BTreeSet::new());
            return;
        }
        match self {
            Subscription::AllExcept(except) => except.extend(ids),
            Subscription::Only(only) => {
                for id in &ids {
                    only.remove(id);
                }
            }
        }
    }

    /// What the `subscribe`/`unsubscribe` acks answer.
    fn describe(&self) -> Value {
        match self {
            Subscription::AllExcept(except) => {
                serde_json::json!({"all": true, "except": except, "sessionIds": []})
            }
            Subscription::Only(only) => serde_json::json!({"all": false, "sessionIds": only}),
        }
    }
}

async fn fan_out(
    io: SocketIo,
    mut rx: tokio::sync::broadcast::Receiver<Arc<Event>>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            r = rx.recv() => r,
        };
        match event {
            Ok(event) => deliver(&io, &event),
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    skipped = n,
                    "socket.io feed fell behind the event bus; events skipped for all clients"
                );
            }
            Err(RecvError::Closed) => break,
        }
    }
    io.close().await;
}

fn deliver(io: &SocketIo, event: &Event) {
    let sockets = io.sockets();
    if sockets.is_empty() {
        return;
    }
    let name = event.kind.as_str();
    let body = event.body();
    for s in sockets {
        let Some(c) = client(&s) else { continue };
        if let Some(g) = c.caller.grant()
            && g.expires_at.is_some_and(|t| t <= crate::store::now())
        {
            tracing::info!(sid = %s.id, key = %g.key_id, "socket.io connection of an expired key closed");
            let _ = s.disconnect();
            continue;
        }
        let wanted = c.caller.sees(&event.session_id)
            && c.subscription
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .wants(&event.session_id);
        if !wanted {
            continue;
        }
        match s.emit(name, &body) {
            Ok(()) => {}
            Err(socketioxide::SendError::Socket(socketioxide::SocketError::Closed)) => {}
            Err(e) => {
                let n = c.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // One line for the first drop and then every hundredth, so one stuck client
                // cannot flood the log.
                if n == 1 || n % 100 == 0 {
                    tracing::warn!(
                        sid = %s.id, event = name, session = %event.session_id,
                        dropped_total = n, error = %e,
                        "socket.io client too slow; event dropped for it",
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_hears_every_session() {
        let s = Subscription::default();
        assert!(s.wants("a") && s.wants("b"));
    }

    #[test]
    fn first_subscribe_narrows_then_adds() {
        let mut s = Subscription::default();
        s.subscribe(ids(&["a"]));
        assert!(s.wants("a") && !s.wants("b"));
        s.subscribe(ids(&["b"]));
        assert!(s.wants("a") && s.wants("b") && !s.wants("c"));
        s.unsubscribe(ids(&["a"]));
        assert!(!s.wants("a") && s.wants("b"));
    }

    #[test]
    fn unsubscribe_from_everything_and_back() {
        let mut s = Subscription::default();
        s.unsubscribe(ids(&["a"]));
        assert!(!s.wants("a") && s.wants("b"));
        s.subscribe(ids(&["a"]));
        assert!(s.wants("a") && s.wants("b"));
        s.unsubscribe(ids(&["*"]));
        assert!(!s.wants("a"));
        s.subscribe(ids(&["*"]));
        assert!(s.wants("zzz"));
    }

    #[test]
    fn query_values_are_decoded() {
        let pairs: Vec<_> =
            form_pairs("EIO=4&transport=polling&sessionId=s1%2Cs2&apiKey=a+b%25").collect();
        assert!(pairs.contains(&("sessionId".into(), "s1,s2".into())));
        assert!(pairs.contains(&("apiKey".into(), "a b%".into())));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn subscribe_request_spellings() {
        let r: SubscribeRequest = serde_json::from_str(r#"{"sessionIds":["a","b"]}"#).unwrap();
        assert_eq!(r.ids(), ids(&["a", "b"]));
        let r: SubscribeRequest = serde_json::from_str(r#"{"sessionId":"a, b"}"#).unwrap();
        assert_eq!(r.ids(), ids(&["a", "b"]));
    }
}
