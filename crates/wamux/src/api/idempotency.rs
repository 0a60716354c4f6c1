//! `Idempotency-Key` on the send routes: a client that retries a send (after a timeout, a
//! dropped connection, a crash of its own) with the same key gets the first answer back,
//! and nothing is sent twice.
//!
//! The first request with a key claims it in the database before it runs; its answer is kept
//! for 24 hours if it succeeded. A retry with the same key and the same body is answered from
//! there (with `Idempotent-Replayed: true`); with another body it is refused (422
//! `idempotency_key_reused`); while the first still runs, 409 `idempotency_key_in_use`. A
//! first request that failed (4xx, 5xx) gives its key up, so the retry runs anew. Keys are
//! kept per route and per API key. The body is compared by its SHA-256, a multipart body without its
//! boundary, which clients draw anew for every request.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::AppState;
use crate::store::idempotency::{self, Claim};

pub const HEADER: &str = "idempotency-key";

/// Longest key accepted (Stripe's limit; a UUID is 36).
const MAX_KEY_LEN: usize = 255;

/// A first request that has not answered after this long most likely died with its server;
/// the retry is told so instead of "still running".
const IN_FLIGHT_STALE_SECS: i64 = 120;

/// What the layer of one route needs: the state, and the route's own body limit.
#[derive(Clone)]
pub struct Route {
    pub state: AppState,
    pub body_limit: usize,
}

/// Answers a send that carries an `Idempotency-Key` from the first answer for that key, or
/// runs it and keeps its answer. Use with `axum::middleware::from_fn_with_state(Route, layer)`.
pub async fn layer(
    State(Route { state, body_limit }): State<Route>,
    req: Request,
    next: Next,
) -> Response {
    let Some(key) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let key = match valid_key(key) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    // Each key's requests are its own: two tenants that pick the same Idempotency-Key
    // never see each other's answers.
    let route = match req
        .extensions()
        .get::<super::Caller>()
        .and_then(|c| c.key_id())
    {
        Some(id) => format!("{id} {}", req.uri().path()),
        None => req.uri().path().to_owned(),
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, body_limit).await {
        Ok(b) => b,
        Err(_) => return ApiError::payload_too_large(body_limit).into_response(),
    };
    let hash = body_hash(&parts.headers, &bytes);
    let store = &state.store;
    match idempotency::claim(store, &route, &key, &hash).await {
        Err(e) => ApiError::internal(e).into_response(),
        Ok(Claim::Replay { status, response }) => replay(status, response),
        Ok(Claim::OtherBody) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with another request body in the last 24 hours; use a new key for a new request",
        )
        .into_response(),
        Ok(Claim::InFlight { since }) => {
            let message = if crate::store::now() - since > IN_FLIGHT_STALE_SECS {
                "the first request with this Idempotency-Key never answered (the server may have stopped meanwhile); check the message history before sending again with a new key"
            } else {
                "the first request with this Idempotency-Key is still running; retry in a moment"
            };
            ApiError::conflict("idempotency_key_in_use", message).into_response()
        }
        Ok(Claim::New) => {
            let res = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            keep(&state, &route, &key, res).await
        }
    }
}

fn valid_key(v: &HeaderValue) -> Result<String, ApiError> {
    let k = v.to_str().ok().map(str::trim).unwrap_or_default();
    let printable = k.bytes().all(|b| b.is_ascii_graphic());
    if k.is_empty() || k.len() > MAX_KEY_LEN || !printable {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!(
                "`Idempotency-Key` must be 1 to {MAX_KEY_LEN} printable ASCII characters without spaces (a UUID, say)"
            ),
        ));
    }
    Ok(k.to_owned())
}

/// SHA-256 of the body, a multipart one with its boundary replaced by a fixed one.
fn body_hash(headers: &HeaderMap, body: &Bytes) -> Vec<u8> {
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(multipart_boundary);
    let mut h = Sha256::new();
    match boundary {
        Some(b) if !b.is_empty() => {
            let marker = format!("--{b}");
            let mut rest: &[u8] = body;
            while let Some(at) = find(rest, marker.as_bytes()) {
                h.update(&rest[..at]);
                h.update(b"--boundary");
                rest = &rest[at + marker.len()..];
            }
            h.update(rest);
        }
        _ => h.update(body),
    }
    h.finalize().to_vec()
}

/// The `boundary` parameter of a `multipart/...` content type.
fn multipart_boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (name, value) = p.split_once('=')?;
        (name.trim().eq_ignore_ascii_case("boundary"))
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn replay(status: u16, response: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            ),
        ],
        response,
    )
        .into_response()
}

/// Keeps a successful answer for the key; gives the key up after a failure.
async fn keep(state: &AppState, route: &str, key: &str, res: Response) -> Response {
    if !res.status().is_success() {
        if let Err(e) = idempotency::release(&state.store, route, key).await {
            tracing::error!("cannot give up an idempotency key: {e:#}");
        }
        return res;
    }
    let (parts, body) = res.into_parts();
    // Send answers are small JSON documents.
    let bytes = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("cannot read a send answer to keep it: {e}");
            return ApiError::internal(anyhow::anyhow!("unreadable answer")).into_response();
        }
    };
    if let Err(e) =
        idempotency::finish(&state.store, route, key, parts.status.as_u16(), &bytes).await
    {
        // The message went out; only the replay of its answer is lost. A retry then finds
        // the key in flight and is told to check the history.
        tracing::error!("cannot keep the answer of an idempotent send: {e:#}");
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_bodies_hash_alike_whatever_their_boundary() {
        let body = |b: &str| {
            Bytes::from(format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\n1555\r\n--{b}--\r\n"
            ))
        };
        let headers = |b: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={b}")
                    .parse()
                    .unwrap(),
            );
            h
        };
        let one = body_hash(&headers("aaa111"), &body("aaa111"));
        assert_eq!(one, body_hash(&headers("zz9"), &body("zz9")));
        let other = Bytes::from(
            "--q\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\n1556\r\n--q--\r\n",
        );
        assert_ne!(one, body_hash(&headers("q"), &other));
        let json = HeaderMap::new();
        assert_ne!(
            body_hash(&json, &Bytes::from("{\"a\":1}")),
            body_hash(&json, &Bytes::from("{\"a\":2}"))
        );
    }

    #[test]
    fn keys_are_printable_and_bounded() {
        assert!(valid_key(&HeaderValue::from_static("5f0c-uuid")).is_ok());
        assert!(valid_key(&HeaderValue::from_static("")).is_err());
        assert!(valid_key(&HeaderValue::from_static("has space")).is_err());
        assert!(valid_key(&HeaderValue::from_str(&"k".repeat(256)).unwrap()).is_err());
    }
}
