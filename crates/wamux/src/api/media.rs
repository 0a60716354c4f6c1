//! Media: `POST /send-media` (JSON with `url` or `base64`, or multipart with a `file` part)
//! and `POST /messages/:sessionId/:messageId/media/retry`.

use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

use super::extract::{ApiJson, SessionPath, needs};
use super::{ApiError, Caller, Result};
use crate::AppState;
use crate::access::Scope;
use crate::media::fetch::{self, Incoming, IngestError};
use crate::media::send::{SendMediaError, SendOptions};
use crate::media::storage::Staged;
use crate::media::{MediaKind, RetryError, naming};
use crate::model::{ChatAddress, SessionId};

pub fn router(state: &AppState) -> Router<AppState> {
    // Base64 text is a third larger than the file it holds; multipart a little larger.
    let max = state.media.config().max_bytes;
    let limit = usize::try_from(max.saturating_mul(4) / 3 + 64 * 1024).unwrap_or(usize::MAX);
    let body_limit = limit.max(state.config.max_body_bytes);
    Router::new()
        .route(
            "/send-media",
            post(send_media)
                .layer(DefaultBodyLimit::max(body_limit))
                .layer(axum::middleware::from_fn_with_state(
                    super::idempotency::Route {
                        state: state.clone(),
                        body_limit,
                    },
                    super::idempotency::layer,
                )),
        )
        .route(
            "/messages/{session_id}/{message_id}/media/retry",
            post(retry),
        )
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let code = match &e {
            IngestError::Empty => "empty_media",
            IngestError::TooLarge(_) => {
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "media_too_large",
                    e.to_string(),
                );
            }
            IngestError::BadBase64(_) => "invalid_base64",
            IngestError::BadUrl(_) => "invalid_url",
            IngestError::Unreachable(_) | IngestError::HttpStatus(_) => "media_unreachable",
            IngestError::Upload(_) => "invalid_upload",
            IngestError::Io(_) => return ApiError::internal(e),
        };
        ApiError::bad_request(code, e.to_string())
    }
}

impl From<SendMediaError> for ApiError {
    fn from(e: SendMediaError) -> Self {
        match e {
            SendMediaError::Ingest(e) => e.into(),
            e @ SendMediaError::NotViewOnce(_) => {
                ApiError::invalid_field("viewOnce", e.to_string())
            }
            SendMediaError::Session(e) => e.into(),
            e @ (SendMediaError::Storage(_) | SendMediaError::Encrypt(_)) => ApiError::internal(e),
        }
    }
}

/// The fields of a send-media request, whichever way it came.
#[derive(Default)]
struct Fields {
    session_id: Option<String>,
    to: Option<String>,
    url: Option<String>,
    base64: Option<String>,
    mimetype: Option<String>,
    file_name: Option<String>,
    caption: Option<String>,
    kind: Option<String>,
    view_once: Option<String>,
}

impl Fields {
    fn set(&mut self, name: &str, value: String) {
        let slot = match name {
            "sessionId" => &mut self.session_id,
            "to" | "number" => &mut self.to,
            "url" | "mediaUrl" => &mut self.url,
            "base64" | "data" => &mut self.base64,
            "mimetype" | "mimeType" => &mut self.mimetype,
            "fileName" | "filename" => &mut self.file_name,
            "caption" => &mut self.caption,
            "type" => &mut self.kind,
            "viewOnce" => &mut self.view_once,
            _ => return,
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }

    fn from_json(body: &Value) -> Result<Self> {
        let obj = body.as_object().ok_or_else(|| {
            ApiError::bad_request(
                "invalid_body",
                "body must be a JSON object like {\"sessionId\":\"s1\",\"to\":\"15551234567\",\"url\":\"https://...\"}",
            )
        })?;
        let mut f = Fields::default();
        for (k, v) in obj {
            match v {
                Value::Null => {}
                Value::String(s) => f.set(k, s.clone()),
                Value::Number(n) if k == "to" || k == "number" => f.set(k, n.to_string()),
                Value::Bool(b) if k == "viewOnce" => f.set(k, b.to_string()),
                _ if k == "apiKey" => {}
                _ => {
                    let known = [
                        "sessionId",
                        "to",
                        "number",
                        "url",
                        "mediaUrl",
                        "base64",
                        "data",
                        "mimetype",
                        "mimeType",
                        "fileName",
                        "filename",
                        "caption",
                        "type",
                        "viewOnce",
                    ];
                    if known.contains(&k.as_str()) {
                        return Err(ApiError::invalid_field(k, "must be a string"));
                    }
                }
            }
        }
        Ok(f)
    }
}

/// Checked fields: session, recipient and options, before any file is taken in.
struct Checked {
    session: SessionId,
    to: ChatAddress,
    opts: SendOptions,
}

fn check(f: &Fields, caller: &Caller) -> Result<Checked> {
    let session = f
        .session_id
        .as_deref()
        .ok_or(ApiError::missing_field("sessionId"))?;
    let session = SessionId::parse(session).map_err(ApiError::invalid_session_id)?;
    caller.may(&session, Scope::Send)?;
    let to = f.to.as_deref().ok_or(ApiError::missing_field("to"))?;
    let to = ChatAddress::parse(to).map_err(ApiError::invalid_phone)?;
    let kind = match f.kind.as_deref().filter(|k| !k.trim().is_empty()) {
        None => None,
        Some(k) => Some(MediaKind::parse(k).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_media_type",
                format!("`type` {k:?} is not one of image, video, audio, ptt, document, sticker"),
            )
        })?),
    };
    let mimetype = match f.mimetype.as_deref().filter(|m| !m.trim().is_empty()) {
        Some(m) if !naming::is_valid_mimetype(m) => {
            return Err(ApiError::invalid_field(
                "mimetype",
                format!("{m:?} is not a MIME type like image/jpeg"),
            ));
        }
        m => m.map(str::to_owned),
    };
    if f.caption.as_ref().is_some_and(|c| c.len() > 65_536) {
        return Err(ApiError::invalid_field(
            "caption",
            "must be at most 65536 bytes",
        ));
    }
    let view_once = match f.view_once.as_deref().map(str::trim) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(ApiError::invalid_field(
                "viewOnce",
                format!("must be true or false, not {v:?}"),
            ));
        }
    };
    if view_once && kind.is_some_and(|k| !k.can_be_view_once()) {
        return Err(ApiError::invalid_field(
            "viewOnce",
            "only images, videos and audio can be sent view once",
        ));
    }
    Ok(Checked {
        session,
        to,
        opts: SendOptions {
            view_once,
            kind,
            mimetype,
            file_name: f.file_name.clone().filter(|n| !n.trim().is_empty()),
            caption: f.caption.clone(),
        },
    })
}

#[utoipa::path(post, path = "/api/send-media", tag = "media", operation_id = "sendMedia", summary = "Send a file",
    params(("Idempotency-Key" = Option<String>, Header, description = "makes a retry safe: the same key with the same body within 24 h returns the first answer (header `Idempotent-Replayed: true`) and sends nothing again"),),
    request_body(content((crate::api::openapi::schemas::SendMediaJson = "application/json"), (crate::api::openapi::schemas::SendMediaForm = "multipart/form-data"))),
    responses((status = 200, description = "Sent; the message as history will show it", body = crate::api::openapi::schemas::Sent),
        (status = 400, description = "`missing_field`, `invalid_field`, `invalid_base64`, `invalid_url`, `media_unreachable`, `empty_media`, `invalid_body`, `invalid_idempotency_key`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the key came with another body", body = crate::api::openapi::schemas::ErrorBody),
        (status = 404, description = "`session_not_found`", body = crate::api::openapi::schemas::ErrorBody), (status = 409, description = "`session_not_connected`, `idempotency_key_in_use`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 413, description = "`media_too_large`, `payload_too_large`", body = crate::api::openapi::schemas::ErrorBody), (status = 502, description = "`send_failed`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn send_media(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
) -> Result<Json<Value>> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    let media = state.media.clone();
    let limit = media.config().max_bytes;
    let (checked, file) = if is_multipart {
        let mut mp = Multipart::from_request(req, &state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_body", e.body_text()))?;
        let mut fields = Fields::default();
        let mut file: Option<Incoming> = None;
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| multipart_error(&e.body_text(), e.status()))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            if name == "file" {
                // A key that may not send here sends no file to stage either.
                if let Some(id) = fields.session_id.as_deref() {
                    let id = SessionId::parse(id).map_err(ApiError::invalid_session_id)?;
                    caller.may(&id, Scope::Send)?;
                }
                if file.is_some() {
                    return Err(ApiError::bad_request(
                        "invalid_body",
                        "send one `file` part",
                    ));
                }
                let staged = Staged::new(media.storage().staging_path());
                file = Some(fetch::from_field(staged, field, limit).await?);
            } else {
                let text = field
                    .text()
                    .await
                    .map_err(|e| multipart_error(&e.body_text(), e.status()))?;
                fields.set(&name, text);
            }
        }
        let checked = check(&fields, &caller)?;
        let file = match file {
            Some(f) => f,
            None => return Err(ApiError::missing_field("file")),
        };
        (checked, file)
    } else {
        let ApiJson(body) = ApiJson::<Value>::from_request(req, &state).await?;
        let fields = Fields::from_json(&body)?;
        let checked = check(&fields, &caller)?;
        // Do not fetch anything for a session that cannot send it.
        state.sessions.live(&checked.session)?;
        let staged = Staged::new(media.storage().staging_path());
        let file = match (&fields.url, &fields.base64) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "give either `url` or `base64`, not both",
                ));
            }
            (Some(url), None) => {
                fetch::from_url(
                    media.fetcher(),
                    staged,
                    url,
                    media.config().allow_private,
                    limit,
                )
                .await?
            }
            (None, Some(b64)) => fetch::from_base64(staged, b64, limit).await?,
            (None, None) => {
                return Err(ApiError::bad_request(
                    "missing_field",
                    "`url` or `base64` is required (or send multipart/form-data with a `file` part)",
                ));
            }
        };
        (checked, file)
    };
    let msg = media
        .send(
            &state.sessions,
            &checked.session,
            &checked.to,
            file,
            checked.opts,
        )
        .await?;
    let mut out = serde_json::to_value(&msg).map_err(ApiError::internal)?;
    if let Some(o) = out.as_object_mut() {
        o.insert("success".into(), true.into());
        o.insert("messageId".into(), msg.id.clone().into());
    }
    Ok(Json(out))
}

fn multipart_error(text: &str, status: StatusCode) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "media_too_large",
            "the upload is larger than the limit (WAMUX_MEDIA_MAX_BYTES)",
        )
    } else {
        ApiError::bad_request("invalid_body", format!("bad multipart body: {text}"))
    }
}

#[utoipa::path(post, path = "/api/messages/{sessionId}/{messageId}/media/retry", tag = "media", operation_id = "retryMediaDownload", summary = "Download a received file again",
    params(("sessionId" = String, Path, description = "the session id"), ("messageId" = String, Path, description = "a message id from the history")),
    responses((status = 200, description = "Downloaded again; the message with its new `media`", body = crate::model::Message),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody), (status = 404, description = "`session_not_found`, `message_not_found`", body = crate::api::openapi::schemas::ErrorBody),
        (status = 409, description = "`session_not_connected`, `no_media`, `media_pending`", body = crate::api::openapi::schemas::ErrorBody), (status = 502, description = "`media_download_failed`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn retry(
    State(state): State<AppState>,
    SessionPath(session, _): SessionPath<needs::Manage>,
    Path((_, message_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let (conn, _) = state.sessions.live(&session)?;
    match state
        .media
        .retry(&conn, session.as_str(), &message_id)
        .await
    {
        Ok(msg) => Ok(Json(msg)),
        Err(RetryError::NoMessage(id)) => Err(ApiError::message_not_found(&id)),
        Err(e @ RetryError::NoMedia(_)) => Err(ApiError::conflict("no_media", e.to_string())),
        Err(e @ RetryError::Pending) => Err(ApiError::conflict("media_pending", e.to_string())),
        Err(RetryError::Failed(why, _)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "media_download_failed",
            format!("the file could not be downloaded again: {why}"),
        )),
        Err(RetryError::Store(e)) => Err(e.into()),
    }
}
