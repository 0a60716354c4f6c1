//! The media host (`/mms/...`): uploads and downloads exactly as the client
//! does them. Blobs are kept as uploaded (encrypted), addressed by the
//! sha256 of their bytes.
//!
//! A download can be made to fail on purpose (`POST /admin/faults/media`):
//! 404, corrupted bytes, or 413 as if the blob were over the size limit. With
//! `POST /admin/faults/media-expiry` every original path answers 404 for good while the
//! paths of phones' re-uploads (media re-upload requests) still work.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::admin::ApiError;
use crate::hub::{Hub, MediaFault};

pub fn router() -> Router<Arc<Hub>> {
    Router::new().route("/mms/{kind}/{id}", get(download).post(upload))
}

fn has_auth(query: &Option<String>) -> bool {
    query.as_deref().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.starts_with("auth=") && kv.len() > 5)
    })
}

async fn upload(
    State(hub): State<Arc<Hub>>,
    Path((kind, _token)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !has_auth(&query) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_auth",
            "media uploads need the media_conn auth token in ?auth=",
        ));
    }
    if query.as_deref().is_some_and(|q| q.contains("resume=1")) {
        // Nothing is ever partially stored: tell the client to upload it all.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_uploaded",
            "no partial upload",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "the upload body is empty",
        ));
    }
    let mut core = hub.core.lock().await;
    let direct_path = crate::phone::store_blob(&mut core, &kind, &body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()))?;
    drop(core);
    let url = format!("https://{}{}", hub.media_host, direct_path);
    Ok(axum::Json(json!({"url": url, "direct_path": direct_path})).into_response())
}

async fn download(
    State(hub): State<Arc<Hub>>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let path = format!("/mms/{kind}/{id}");
    let mut core = hub.core.lock().await;
    let fault = match core.faults.media.as_mut() {
        Some((mode, n)) if *n > 0 => {
            *n -= 1;
            Some(*mode)
        }
        _ => None,
    };
    if core.faults.media.is_some_and(|(_, n)| n == 0) {
        core.faults.media = None;
    }
    let meta = core.snap.media.get(&path).cloned();
    let expired = core.faults.expire_original_media && meta.as_ref().is_some_and(|m| !m.reupload);
    let file = core.blobs_dir.clone();
    drop(core);
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "media_not_found",
            format!("no media at {path}"),
        )
    };
    if expired {
        return Err(not_found());
    }
    match fault {
        Some(MediaFault::NotFound) => return Err(not_found()),
        Some(MediaFault::Oversized) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "media_too_large",
                format!("{path} exceeds the media size limit"),
            ));
        }
        _ => {}
    }
    let meta = meta.ok_or_else(not_found)?;
    let mut data = tokio::fs::read(file.join(&meta.file))
        .await
        .map_err(|_| not_found())?;
    if fault == Some(MediaFault::Corrupt) {
        // Flip bytes in the middle: the client's MAC check must catch it.
        let mid = data.len() / 2;
        for b in data.iter_mut().skip(mid).take(16) {
            *b ^= 0xA5;
        }
    }
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}
