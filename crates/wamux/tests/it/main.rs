//! The gateway's integration tests: one binary, real server on port 0, real HTTP.
//! Tests that need WhatsApp run against an in-process simulator (cargo feature `sandbox`).

mod api;
#[cfg(feature = "sandbox")]
mod e2e;
#[cfg(feature = "sandbox")]
mod evolution;
#[cfg(feature = "sandbox")]
mod groups;
mod helpers;
#[cfg(feature = "sandbox")]
mod isolation;
#[cfg(feature = "sandbox")]
mod keys;
#[cfg(feature = "sandbox")]
mod liveness;
#[cfg(feature = "sandbox")]
mod media;
#[cfg(feature = "sandbox")]
mod media_s3;
#[cfg(feature = "sandbox")]
mod messaging;
mod openapi;
mod ops;
#[cfg(feature = "sandbox")]
mod pairing;
#[cfg(feature = "sandbox")]
mod passkey;
#[cfg(feature = "sandbox")]
mod process;
#[cfg(feature = "sandbox")]
mod queue;
#[cfg(feature = "sandbox")]
mod ui;
mod webhooks;
