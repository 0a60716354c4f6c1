//! `POST /api/:sessionId/webhook/test`: the UI's "send test event" button. Sends one signed
//! sample `message-received` event, in the shape every delivery has, to the session's
//! configured webhook (its URL, headers and secret) and answers with what the receiver said.
//!
//! It goes straight out, not through the outbox: a test is a question asked now ("does my
//! receiver work?"), not an event to retry for a day, and it must not advance any cursor or
//! show up as a message. It follows the same rules as deliveries: the URL guard
//! (`WAMUX_WEBHOOK_ALLOW_PRIVATE`), the timeout, no redirects. Errors: [`ApiError`].

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};

use crate::AppState;
use crate::api::ApiError;
use crate::api::extract::{SessionPath, needs};
use crate::store::webhooks;
use crate::webhook::client::{Request, Sender};

pub fn router() -> Router<AppState> {
    Router::new().route("/{session_id}/webhook/test", post(send_test))
}

#[utoipa::path(post, path = "/api/{sessionId}/webhook/test", tag = "webhooks", operation_id = "testWebhook", summary = "Send a test event to the webhook",
    params(("sessionId" = String, Path, description = "the session id")),
    responses((status = 200, description = "One signed sample `message-received` event was sent now; what the receiver answered", body = crate::api::openapi::schemas::WebhookTest),
        (status = 400, description = "`invalid_session_id`", body = crate::api::openapi::schemas::ErrorBody), (status = 404, description = "`webhook_not_found`", body = crate::api::openapi::schemas::ErrorBody)))]
async fn send_test(
    State(state): State<AppState>,
    SessionPath(session, _): SessionPath<needs::Webhooks>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(webhook) = webhooks::get_webhook(&state.store, session.as_str()).await? else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "webhook_not_found",
            format!("session `{session}` has no webhook; set one with POST /api/{session}/webhook"),
        ));
    };
    let cfg = state.webhooks.config();
    let sender = Sender::new(cfg.timeout, cfg.allow_private).map_err(ApiError::internal)?;
    let now = crate::webhook::client::unix_now();
    let mut body = crate::webhook::test_command::sample_body(now);
    body["sessionId"] = session.as_str().into();
    body["data"]["sessionId"] = session.as_str().into();
    let body = body.to_string();
    let msg_id = format!("msg_test_{}_{now}", session.as_str());
    let answer = sender
        .send(Request {
            url: &webhook.url,
            msg_id: &msg_id,
            body: body.as_bytes(),
            secret: &webhook.secret,
            headers: &webhook.headers,
        })
        .await;
    let ok = answer.status.is_some_and(|s| (200..300).contains(&s));
    tracing::info!(session = %session, ok, status = ?answer.status, "webhook test event sent");
    Ok(Json(serde_json::json!({
        "sessionId": session,
        "ok": ok,
        "webhookId": msg_id,
        "url": webhook.url,
        "status": answer.status,
        "error": answer.error,
        "elapsedMs": u64::try_from(answer.elapsed.as_millis()).unwrap_or(u64::MAX),
    })))
}
