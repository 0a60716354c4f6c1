//! `GET /uploads/<name>`: stored files, without the API key (their names are unguessable),
//! or with `?exp=&sig=` when signed links are on. Only names this server makes are looked
//! up, so every odd path (`..`, encoded separators, absolute paths, backslashes, NUL) is a
//! plain 404, and there is no listing.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::naming;
use crate::AppState;

pub fn router() -> Router<AppState> {
    // No listing: the directory itself is as unknown as any other path.
    Router::new()
        .route("/uploads", get(not_found))
        .route("/uploads/", get(not_found))
        .route("/uploads/{*path}", get(serve))
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Range: bytes=...` header against a file of `len` bytes: `Ok(None)` for the whole
/// file (no header, or one we do not serve partially, like several ranges), `Err` when
/// nothing of the range exists (416).
fn parse_range(h: Option<&HeaderValue>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = h
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        // The last `b` bytes.
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || len == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
        };
        (start, end)
    };
    if start >= len || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

#[utoipa::path(get, path = "/uploads/{name}", tag = "media", operation_id = "getUpload", summary = "A stored media file",
    params(("name" = String, Path, description = "a stored file's name, as in a message's `media.fileName`"),
        ("exp" = Option<i64>, Query, description = "expiry of a signed link (when signed links are on)"),
        ("sig" = Option<String>, Query, description = "signature of a signed link")),
    responses((status = 200, description = "The file (supports `Range`)", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 206, description = "Part of the file", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 403, description = "A signed link is required, or has expired"),
        (status = 404, description = "No such file"),
        (status = 416, description = "The range is outside the file")))]
async fn serve(
    State(state): State<AppState>,
    method: Method,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    // A path that does not even decode (bad UTF-8) is as unknown as any other.
    let Ok(Path(name)) = path else {
        return not_found().await;
    };
    if !naming::is_stored_name(&name) {
        return not_found().await;
    }
    let media = &state.media;
    if media.config().signed_urls {
        let q = query.as_deref().unwrap_or_default();
        let ok = match (query_param(q, "exp"), query_param(q, "sig")) {
            (Some(exp), Some(sig)) => media.verify_signature(&name, exp, sig),
            _ => false,
        };
        if !ok {
            return (
                StatusCode::FORBIDDEN,
                "this media link is invalid or has expired",
            )
                .into_response();
        }
    }
    let meta = match media.storage().stat(&name).await {
        Ok(Some(m)) => m,
        Ok(None) => return not_found().await,
        Err(e) => {
            tracing::error!(file = %name, "cannot read a media file: {e}");
            return (StatusCode::INTERNAL_SERVER_ERROR, "storage error").into_response();
        }
    };
    let mimetype = name
        .rsplit_once('.')
        .and_then(|(_, ext)| naming::mimetype_for_ext(ext))
        .unwrap_or("application/octet-stream");
    let mtime = meta
        .modified
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Stored files never change, so size and time identify the content.
    let etag = format!("\"{:x}-{:x}\"", meta.len, mtime);
    let mut h = HeaderMap::new();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    set(&mut h, header::CONTENT_TYPE, mimetype);
    set(&mut h, header::ACCEPT_RANGES, "bytes");
    set(&mut h, header::ETAG, &etag);
    set(
        &mut h,
        header::LAST_MODIFIED,
        &httpdate::fmt_http_date(meta.modified),
    );
    set(
        &mut h,
        header::CACHE_CONTROL,
        if media.config().signed_urls {
            "private, max-age=3600"
        } else {
            "public, max-age=31536000, immutable"
        },
    );
    // Files come from strangers: never let one run as a page of this origin.
    set(&mut h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(
        &mut h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; sandbox",
    );
    let inline = [
        "image/",
        "video/",
        "audio/",
        "application/pdf",
        "text/plain",
    ]
    .iter()
    .any(|p| mimetype.starts_with(p));
    set(
        &mut h,
        header::CONTENT_DISPOSITION,
        &format!(
            "{}; filename=\"{name}\"",
            if inline { "inline" } else { "attachment" }
        ),
    );
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    let (status, start, len) = match parse_range(headers.get(header::RANGE), meta.len) {
        Ok(None) => (StatusCode::OK, 0, meta.len),
        Ok(Some((s, e))) => {
            set(
                &mut h,
                header::CONTENT_RANGE,
                &format!("bytes {s}-{e}/{}", meta.len),
            );
            (StatusCode::PARTIAL_CONTENT, s, e - s + 1)
        }
        Err(()) => {
            set(
                &mut h,
                header::CONTENT_RANGE,
                &format!("bytes */{}", meta.len),
            );
            return (StatusCode::RANGE_NOT_SATISFIABLE, h).into_response();
        }
    };
    set(&mut h, header::CONTENT_LENGTH, &len.to_string());
    if method == Method::HEAD {
        return (status, h).into_response();
    }
    match media.storage().read(&name, start, len).await {
        Ok(stream) => (status, h, Body::from_stream(stream)).into_response(),
        Err(e) => {
            tracing::error!(file = %name, "cannot read a media file: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "storage error").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
        parse_range(Some(&HeaderValue::from_str(s).unwrap()), len)
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(r("bytes=0-3", 10), Ok(Some((0, 3))));
        assert_eq!(r("bytes=5-", 10), Ok(Some((5, 9))));
        assert_eq!(r("bytes=-4", 10), Ok(Some((6, 9))));
        assert_eq!(r("bytes=-40", 10), Ok(Some((0, 9))));
        assert_eq!(r("bytes=2-100", 10), Ok(Some((2, 9))));
        assert_eq!(r("bytes=10-", 10), Err(()));
        assert_eq!(r("bytes=5-2", 10), Err(()));
        assert_eq!(r("bytes=0-1,3-4", 10), Ok(None));
        assert_eq!(r("items=0-1", 10), Ok(None));
        assert_eq!(r("bytes=x-1", 10), Err(()));
    }
}
