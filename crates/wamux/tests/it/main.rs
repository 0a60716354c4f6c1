//! The gateway's integration tests: one binary, real server on port 0, real HTTP.
//! Tests that need WhatsApp run against an in-process simulator (cargo feature `sandbox`).

mod api;
mod helpers;
mod webhooks;
#[cfg(feature = "sandbox")]
mod e2e;
#[cfg(feature = "sandbox")]
mod ui;
