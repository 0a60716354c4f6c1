//! Who is calling, for everything under `/api` (and the Socket.IO feed and `/metrics`).
//!
//! The key may come as `X-API-Key: KEY`, `?apiKey=KEY` (the seed's two forms) or
//! `Authorization: Bearer KEY`. It is the admin key (`WAMUX_API_KEY`, every right) or a
//! scoped key (`wmx_...`, see [`crate::access`]). Both are looked at only as SHA-256
//! digests: the admin key's is compared in constant time, so neither its content nor its
//! length leaks through timing; a scoped key's digest is looked up in the store.
//!
//! The middleware puts the [`Caller`] into the request; handlers take it (or a
//! [`SessionPath`](super::extract::SessionPath), which checks it) and ask it before they act:
//! a session outside the key's patterns is 403 `forbidden` (whether it exists or not, so a
//! key learns nothing of other tenants), a right the key lacks 403 `missing_scope`.
//!
//! Wrong or missing keys are counted per client address: past
//! `WAMUX_AUTH_FAILURES_PER_MINUTE` in a minute the address gets 429 with `Retry-After`,
//! whatever it sends, until the minute is over. Mutating calls are written to the audit log
//! after they answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tokio::sync::broadcast;

use super::ApiError;
use crate::AppState;
use crate::access::{self, Grant, Scope};
use crate::model::SessionId;
use crate::net::{ClientInfo, PeerAddr, TrustedProxies};
use crate::store::{self, Store, StoreError};

/// The admin key, kept only as its digest.
#[derive(Clone)]
pub struct ApiKey {
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl ApiKey {
    pub fn new(key: &str) -> Self {
        Self {
            digest: access::digest(key),
        }
    }

    /// Constant-time check of a presented key.
    pub fn matches(&self, presented: &str) -> bool {
        access::digest(presented).ct_eq(&self.digest).into()
    }
}

/// How often a key's `last_used_at` is written at most.
const TOUCH_EVERY_SECS: i64 = 60;

/// Addresses the failure counter remembers at most; beyond, finished windows are dropped.
const TRACKED_ADDRESSES: usize = 100_000;

const WINDOW: Duration = Duration::from_secs(60);

/// Every key there is: the admin key, the store's scoped keys, the failure counter, and the
/// news of revoked keys (for the Socket.IO feed, which closes their connections).
#[derive(Clone)]
pub struct Keys {
    inner: Arc<KeysInner>,
}

struct KeysInner {
    admin: ApiKey,
    trusted: TrustedProxies,
    store: Store,
    failures_per_window: u32,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    revoked: broadcast::Sender<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(***)")
    }
}

impl Keys {
    pub fn new(
        admin: ApiKey,
        store: Store,
        failures_per_minute: u32,
        trusted: TrustedProxies,
    ) -> Self {
        Self {
            inner: Arc::new(KeysInner {
                admin,
                trusted,
                store,
                failures_per_window: failures_per_minute,
                failures: Mutex::new(HashMap::new()),
                revoked: broadcast::channel(64).0,
            }),
        }
    }

    /// Who `presented` is: `None` for no key we know (or an expired one).
    pub async fn resolve(&self, presented: &str) -> Result<Option<Caller>, StoreError> {
        if self.inner.admin.matches(presented) {
            return Ok(Some(Caller::admin()));
        }
        // Our keys start with the prefix; an Evolution instance token (`hash`) may be any
        // string its client chose, so those are looked up too (wrong guesses still count
        // against the address).
        if !presented.starts_with(access::KEY_PREFIX) && presented.len() < access::MIN_TOKEN_LEN {
            return Ok(None);
        }
        let digest = access::digest(presented);
        let Some(key) = store::access::key_by_digest(&self.inner.store, &digest).await? else {
            return Ok(None);
        };
        let now = store::now();
        if key.expired_at(now) {
            return Ok(None);
        }
        if key.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY_SECS) {
            let store = self.inner.store.clone();
            let id = key.id.clone();
            tokio::spawn(async move {
                if let Err(e) = store::access::touch_key(&store, &id, now).await {
                    tracing::warn!(key = %id, "cannot note the key's last use: {e}");
                }
            });
        }
        Ok(Some(Caller::scoped(key.grant())))
    }

    /// Revokes a key: deleted from the store, and its live connections told.
    pub async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let deleted = store::access::delete_key(&self.inner.store, id).await?;
        if deleted {
            // Nobody listening is fine: no connection uses the key.
            let _ = self.inner.revoked.send(id.to_owned());
        }
        Ok(deleted)
    }

    /// Ids of keys revoked from now on.
    pub fn revocations(&self) -> broadcast::Receiver<String> {
        self.inner.revoked.subscribe()
    }

    /// The client's address: the peer, or what trusted proxies say (see [`ClientInfo`]).
    pub fn client_ip(
        &self,
        peer: Option<IpAddr>,
        headers: &axum::http::HeaderMap,
    ) -> Option<IpAddr> {
        ClientInfo::resolve(peer, headers, &self.inner.trusted).ip
    }

    /// When `ip` may try again, if it has used up its failures for this minute.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let failures = self
            .inner
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (start, n) = failures.get(&ip)?;
        let left = WINDOW.checked_sub(start.elapsed())?;
        (*n >= self.inner.failures_per_window).then_some(left)
    }

    /// Counts a failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        crate::metrics::auth_failure();
        let mut failures = self
            .inner
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if failures.len() >= TRACKED_ADDRESSES {
            failures.retain(|_, (start, _)| start.elapsed() < WINDOW);
        }
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// Who is calling: the admin, or a scoped key with its grant. Also notes the session the
/// call acted on, for the audit log.
#[derive(Clone, Debug)]
pub struct Caller {
    grant: Option<Arc<Grant>>,
    acted_on: Arc<Mutex<Option<String>>>,
}

impl Caller {
    pub fn admin() -> Self {
        Self {
            grant: None,
            acted_on: Arc::default(),
        }
    }

    pub fn scoped(grant: Grant) -> Self {
        Self {
            grant: Some(Arc::new(grant)),
            acted_on: Arc::default(),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.grant.is_none()
    }

    /// The scoped key's grant; `None` for the admin.
    pub fn grant(&self) -> Option<&Grant> {
        self.grant.as_deref()
    }

    /// The key's id; `None` for the admin key.
    pub fn key_id(&self) -> Option<&str> {
        self.grant.as_ref().map(|g| g.key_id.as_str())
    }

    /// Whether the key may see `session` at all (for filtering lists).
    pub fn sees(&self, session: &str) -> bool {
        self.grant.as_ref().is_none_or(|g| g.covers(session))
    }

    /// Checks that the key may use `scope` on `session`, and notes the session.
    pub fn may(&self, session: &SessionId, scope: Scope) -> Result<(), ApiError> {
        self.note(session.as_str());
        let Some(g) = &self.grant else {
            return Ok(());
        };
        if !g.covers(session.as_str()) {
            return Err(ApiError::forbidden(format!(
                "this key may not use session `{session}`"
            )));
        }
        if !g.has(scope) {
            return Err(ApiError::missing_scope(scope));
        }
        Ok(())
    }

    /// Checks that this is the admin key.
    pub fn admin_only(&self, what: &str) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "only the admin key may {what}"
            )))
        }
    }

    fn note(&self, session: &str) {
        let mut acted_on = self.acted_on.lock().unwrap_or_else(|p| p.into_inner());
        if acted_on.is_none() {
            *acted_on = Some(session.to_owned());
        }
    }

    fn acted_on(&self) -> Option<String> {
        self.acted_on
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("no API key was checked for this route"))
    }
}

/// The key a request presents, from any of the three places (or Evolution's `apikey`
/// header).
fn presented_key(req: &Request) -> Option<String> {
    for name in ["x-api-key", "apikey"] {
        if let Some(v) = req.headers().get(name) {
            return v.to_str().ok().map(str::to_owned);
        }
    }
    if let Some(v) = req.headers().get(AUTHORIZATION)
        && let Ok(v) = v.to_str()
        && let Some(token) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    {
        return Some(token.trim().to_owned());
    }
    let query = req.uri().query()?;
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == "apiKey")
        .map(|(_, v)| v.into_owned())
}

/// The client's address, as [`ClientInfo`] resolves it behind trusted proxies.
fn client_ip(state: &AppState, req: &Request) -> Option<IpAddr> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|c| c.0.0.ip());
    state.keys.client_ip(peer, req.headers())
}

fn too_many(retry_after: Duration) -> Response {
    crate::metrics::auth_rate_limited();
    let secs = retry_after.as_secs().max(1);
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests with a wrong or missing API key from this address; try again in {secs} s"),
    )
    .into_response();
    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// Resolves the caller from the client's address and the key it presented, or answers
/// the request (401, 429, 500).
async fn resolve(
    state: &AppState,
    ip: Option<IpAddr>,
    key: Option<String>,
) -> Result<Caller, Response> {
    if let Some(left) = ip.and_then(|ip| state.keys.blocked(ip)) {
        return Err(too_many(left));
    }
    let refuse = |message: &str| {
        if let Some(ip) = ip {
            state.keys.failed(ip);
        }
        ApiError::unauthorized(message.to_owned()).into_response()
    };
    let Some(key) = key else {
        return Err(refuse(
            "missing API key: send it as the `X-API-Key` header, `Authorization: Bearer <key>` or the `apiKey` query parameter",
        ));
    };
    match state.keys.resolve(&key).await {
        Ok(Some(caller)) => Ok(caller),
        Ok(None) => Err(refuse("invalid API key")),
        Err(e) => Err(ApiError::internal(e).into_response()),
    }
}

/// The `/api` middleware: authenticates, hands the [`Caller`] on, and records mutating
/// calls in the audit log.
pub async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    authenticate(state, req, next, |r| r).await
}

/// The same for another dialect's routes, whose refusals (401, 429) `refuse` rewrites into
/// that dialect's error body.
pub async fn authenticate(
    state: AppState,
    mut req: Request,
    next: Next,
    refuse: impl FnOnce(Response) -> Response,
) -> Response {
    let ip = client_ip(&state, &req);
    let caller = match resolve(&state, ip, presented_key(&req)).await {
        Ok(c) => c,
        Err(r) => return refuse(r),
    };
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let audit = mutating.then(|| store::access::AuditEntry {
        id: 0,
        at: 0,
        key_id: caller.key_id().map(str::to_owned),
        method: req.method().to_string(),
        route: req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| req.uri().path().to_owned(), |m| m.as_str().to_owned()),
        session_id: None,
        status: 0,
        client: ip.map(|ip| ip.to_string()),
    });
    req.extensions_mut().insert(caller.clone());
    let response = next.run(req).await;
    if let Some(mut entry) = audit {
        entry.session_id = caller.acted_on();
        entry.status = i32::from(response.status().as_u16());
        if let Err(e) = store::access::audit(&state.store, entry).await {
            tracing::error!("cannot write the audit log: {e}");
        }
    }
    response
}

/// Middleware for routes only the admin key may use (`/metrics` on the API port).
pub async fn require_admin_key(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let ip = client_ip(&state, &req);
    match resolve(&state, ip, presented_key(&req)).await {
        Ok(c) if c.is_admin() => next.run(req).await,
        Ok(_) => ApiError::forbidden("only the admin key may read the metrics").into_response(),
        Err(r) => r,
    }
}

/// A route layer for routes only the admin key may use: `.route_layer(from_fn(admin_route))`.
/// It runs before the handler's extractors, so a scoped key learns nothing from the body
/// checks either.
pub async fn admin_route(caller: Caller, req: Request, next: Next) -> Response {
    match caller.admin_only("use this route") {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Forgets audit entries older than `days`, at start and then every hour, until `stop`.
pub async fn keep_audit_log(store: Store, days: u32, stop: tokio_util::sync::CancellationToken) {
    loop {
        let before = store::now() - i64::from(days) * 86_400;
        match store::access::forget_audit_before(&store, before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, days, "audit log: old entries forgotten"),
            Err(e) => tracing::warn!("audit log: cannot forget old entries: {e}"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_keys() {
        let k = ApiKey::new("right-key-123");
        assert!(k.matches("right-key-123"));
        assert!(!k.matches("right-key-124"));
        assert!(!k.matches(""));
        assert!(!format!("{k:?}").contains("right"));
    }

    #[test]
    fn a_scoped_caller_may_use_only_its_scopes_on_its_sessions() {
        let c = Caller::scoped(Grant {
            key_id: "key_1".into(),
            sessions: vec![access::SessionPattern::parse("tenant-a-*").unwrap()],
            scopes: [Scope::Read].into(),
            expires_at: None,
        });
        let own = SessionId::parse("tenant-a-1").unwrap();
        let other = SessionId::parse("other").unwrap();
        assert!(c.may(&own, Scope::Read).is_ok());
        let e = c.may(&own, Scope::Send).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "missing_scope"));
        assert!(e.message.contains("`send`"), "{}", e.message);
        let e = c.may(&other, Scope::Read).unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "forbidden"));
        assert!(c.sees("tenant-a-2") && !c.sees("other"));
        assert!(c.admin_only("manage keys").is_err());
        assert_eq!(c.acted_on().as_deref(), Some("tenant-a-1"));
        let admin = Caller::admin();
        assert!(admin.may(&other, Scope::Manage).is_ok() && admin.sees("x"));
    }
}
