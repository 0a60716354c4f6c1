//! API-key authentication for everything under `/api`.
//!
//! The key may come as `X-API-Key: KEY`, `?apiKey=KEY` (the seed's two forms) or
//! `Authorization: Bearer KEY`. Keys are compared as SHA-256 digests with a constant-time
//! equality, so neither the content nor the length of the real key leaks through timing.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::AppState;

/// The expected key, kept only as its digest.
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
            digest: Sha256::digest(key.as_bytes()).into(),
        }
    }

    /// Constant-time check of a presented key.
    pub fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        d.ct_eq(&self.digest).into()
    }
}

/// The key a request presents, from any of the three places.
fn presented_key(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get("x-api-key") {
        return v.to_str().ok().map(str::to_owned);
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

pub async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match presented_key(&req) {
        None => ApiError::unauthorized(
            "missing API key: send it as the `X-API-Key` header, `Authorization: Bearer <key>` or the `apiKey` query parameter",
        )
        .into_response(),
        Some(k) if state.api_key.matches(&k) => next.run(req).await,
        Some(_) => ApiError::unauthorized("invalid API key").into_response(),
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
}
