//! The HTTP API: one module per resource, each with its own `router()`, composed here under
//! `/api` behind the API-key middleware. Handlers return [`error::Result`]. Each handler
//! carries its `#[utoipa::path]`; [`openapi`] collects them into the OpenAPI document.

mod auth;
mod contacts;
pub mod error;
mod events;
mod evolution;
pub mod extract;
mod groups;
mod health;
mod idempotency;
mod keys;
mod media;
mod messages;
pub mod openapi;
mod passkey;
mod presence;
pub mod probes;
mod sessions;
mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;

pub use auth::{ApiKey, Caller, Keys, admin_route, keep_audit_log};
pub use error::{ApiError, Result};

use crate::AppState;

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(health::router())
        .merge(sessions::router())
        .merge(keys::router())
        .merge(passkey::router())
        .merge(contacts::router())
        .merge(groups::router())
        .merge(presence::router())
        .merge(messages::router(&state))
        .merge(webhooks::router())
        .merge(events::router())
        .merge(openapi::router())
        .merge(media::router(&state))
        .merge(crate::web::api_router())
        .fallback(|| async { ApiError::not_found("no such API route") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));
    let mut root = Router::new().nest("/api", api);
    if state.config.compat_evolution {
        root = root.merge(evolution::router(&state));
    }
    root.merge(crate::media::serve::router())
        .merge(crate::web::router())
        .merge(probes::router(&state))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}
