//! What a caller may do. The admin key (`WAMUX_API_KEY`) may do everything; a scoped key
//! (`wmx_...`, made with `POST /api/keys`) may use its [`Scope`]s on the sessions its
//! [`SessionPattern`]s name, and nothing else.
//!
//! A key is 256 random bits, shown once; the store keeps only its SHA-256 digest
//! ([`digest`]), which is enough for a secret that long (nobody can guess one to try).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::model::SessionId;

/// What every scoped key starts with, so a leaked one is recognisable (and scannable).
pub const KEY_PREFIX: &str = "wmx_";

/// The shortest token a client may choose for an instance (Evolution's `token`): long
/// enough not to be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// A right on a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Status, QR code, history, events, media.
    Read,
    /// Sending messages and media.
    Send,
    /// Creating, starting, logging out, restarting, deleting and pairing sessions.
    Manage,
    /// The session's webhook and its deliveries.
    Webhooks,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Send, Scope::Manage, Scope::Webhooks];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Send => "send",
            Scope::Manage => "manage",
            Scope::Webhooks => "webhooks",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session id (`s1`), a prefix (`tenant-a-*`), or every session (`*`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SessionPattern {
    Exact(String),
    Prefix(String),
}

impl SessionPattern {
    /// Reads a pattern: a session id, optionally ending in `*`; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (body, wildcard) = match s.strip_suffix('*') {
            Some(body) => (body, true),
            None => (s, false),
        };
        if body.contains('*') {
            return Err(format!("`{s}`: `*` may only end a pattern"));
        }
        if wildcard {
            if !body.is_empty() {
                SessionId::parse(body).map_err(|e| format!("`{s}`: {e}"))?;
            }
            return Ok(SessionPattern::Prefix(body.to_owned()));
        }
        SessionId::parse(body).map_err(|e| format!("`{s}`: {e}"))?;
        Ok(SessionPattern::Exact(body.to_owned()))
    }

    pub fn matches(&self, session: &str) -> bool {
        match self {
            SessionPattern::Exact(id) => id == session,
            SessionPattern::Prefix(p) => session.starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for SessionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionPattern::Exact(id) => f.write_str(id),
            SessionPattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

impl Serialize for SessionPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SessionPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SessionPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What one scoped key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub key_id: String,
    pub sessions: Vec<SessionPattern>,
    pub scopes: BTreeSet<Scope>,
    /// Unix seconds; refused from then on.
    pub expires_at: Option<i64>,
}

impl Grant {
    /// Whether the key's patterns name `session`.
    pub fn covers(&self, session: &str) -> bool {
        self.sessions.iter().any(|p| p.matches(session))
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A new key's secret: `wmx_` and 256 random bits in base64url.
pub fn new_secret() -> String {
    use base64::Engine as _;
    let bits: [u8; 32] = rand::random();
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bits)
    )
}

/// A new key's id: public, names the key in lists, the audit log and `DELETE /api/keys/:id`.
pub fn new_id() -> String {
    let bits: [u8; 8] = rand::random();
    let hex: String = bits.iter().map(|b| format!("{b:02x}")).collect();
    format!("key_{hex}")
}

/// What the store keeps of a secret.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_match_and_print() {
        let p = SessionPattern::parse("tenant-a-*").unwrap();
        assert!(p.matches("tenant-a-1") && p.matches("tenant-a-"));
        assert!(!p.matches("tenant-b-1") && !p.matches("tenant-a"));
        assert_eq!(p.to_string(), "tenant-a-*");
        let all = SessionPattern::parse("*").unwrap();
        assert!(all.matches("anything"));
        let one = SessionPattern::parse("s1").unwrap();
        assert!(one.matches("s1") && !one.matches("s10"));
        for bad in ["", "a*b", "**", "a b*", "x/y"] {
            assert!(SessionPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn secrets_are_long_prefixed_and_distinct() {
        let a = new_secret();
        let b = new_secret();
        assert!(a.starts_with(KEY_PREFIX));
        assert_eq!(a.len(), KEY_PREFIX.len() + 43);
        assert_ne!(a, b);
        assert_ne!(digest(&a), digest(&b));
        assert!(new_id().starts_with("key_"));
    }

    #[test]
    fn scopes_round_trip() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("admin"), None);
    }
}
