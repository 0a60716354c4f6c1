//! The one error type at the HTTP edge. Handlers return [`Result<T>`]; every failure becomes
//! `{"error":{"code","message"}}` with the fitting status. 5xx are logged with their cause
//! chain; the client only sees a generic message for those.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The cause of a 5xx, logged and never sent.
    source: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            source: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid_field(field: &str, why: impl std::fmt::Display) -> Self {
        Self::bad_request("invalid_field", format!("`{field}`: {why}"))
    }

    pub fn missing_field(field: &str) -> Self {
        Self::bad_request("missing_field", format!("`{field}` is required"))
    }

    pub fn invalid_session_id(why: impl std::fmt::Display) -> Self {
        Self::bad_request("invalid_session_id", why.to_string())
    }

    pub fn invalid_phone(why: impl std::fmt::Display) -> Self {
        Self::bad_request("invalid_phone", why.to_string())
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn missing_scope(scope: crate::access::Scope) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "missing_scope",
            format!("this key lacks the `{scope}` scope"),
        )
    }

    pub fn session_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("session `{id}` does not exist; create it with POST /api/start-session"),
        )
    }

    pub fn message_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "message_not_found",
            format!("message `{id}` is not in this session's history"),
        )
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn session_not_connected(id: &str, status: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "session_not_connected",
            format!("session `{id}` is {status}, not connected; check GET /api/status/{id}"),
        )
    }

    pub fn no_qr(id: &str, status: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "qr_not_available",
            format!("session `{id}` has no QR code to scan (status: {status})"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// WhatsApp refused a group request.
    pub fn group(g: crate::whatsapp::groups::GroupRefusal) -> Self {
        use crate::whatsapp::groups::GroupRefusal as R;
        let message = g.to_string();
        match g {
            R::NotFound => Self::new(StatusCode::NOT_FOUND, "group_not_found", message),
            R::NotParticipant => Self::new(StatusCode::FORBIDDEN, "not_a_participant", message),
            R::NotAdmin => Self::new(StatusCode::FORBIDDEN, "not_an_admin", message),
            R::BadInvite => Self::new(StatusCode::NOT_FOUND, "invite_not_found", message),
            R::Invalid(_) => Self::bad_request("invalid_group_request", message),
            R::Conflict => Self::conflict("group_changed", message),
            R::Other(_) => Self::new(StatusCode::BAD_GATEWAY, "whatsapp_error", message),
        }
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn send_failed(why: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "send_failed",
            format!("WhatsApp did not accept the message: {why}"),
        )
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error; see the server log".into(),
            source: Some(source.into()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::internal(e)
    }
}

impl ApiError {
    /// Logs a 5xx with its cause (the answer never carries it).
    pub fn log(&self) {
        if self.status.is_server_error() {
            match &self.source {
                Some(e) => tracing::error!(code = self.code, "request failed: {e:#}"),
                None => tracing::error!(code = self.code, "request failed: {}", self.message),
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            JsonRejection::JsonSyntaxError(e) => Self::bad_request(
                "invalid_json",
                format!("body is not valid JSON: {}", e.body_text_detail()),
            ),
            JsonRejection::JsonDataError(e) => {
                Self::bad_request("invalid_body", e.body_text_detail())
            }
            JsonRejection::BytesRejection(e) => {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Self::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "request body is larger than the server's limit (WAMUX_MAX_BODY_BYTES)",
                    )
                } else {
                    Self::bad_request("invalid_body", e.body_text())
                }
            }
            other => Self::bad_request("invalid_body", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request("invalid_query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request("invalid_path", r.body_text())
    }
}

trait DetailText {
    fn body_text_detail(&self) -> String;
}

impl<T: std::error::Error> DetailText for T {
    /// serde's message without axum's "Failed to deserialize the JSON body into the target
    /// type:" prefix, which says nothing a client can act on.
    fn body_text_detail(&self) -> String {
        let mut src: &dyn std::error::Error = self;
        while let Some(next) = src.source() {
            src = next;
        }
        src.to_string()
    }
}
