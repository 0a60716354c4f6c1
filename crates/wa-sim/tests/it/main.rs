//! Integration tests: unmodified whatsapp-rust clients against a real
//! simulator over TLS sockets.

mod admin;
mod appstate;
mod durability;
mod flows;
mod iq;
mod media;
mod messaging;
mod network;
mod pairing;
mod passkey;
mod presence;
mod support;
mod tokens;
