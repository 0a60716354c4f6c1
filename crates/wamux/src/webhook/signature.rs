//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
//!
//! Secrets travel as `whsec_<base64>`; the HMAC key is the decoded bytes, which is what every
//! Standard Webhooks library does on the receiving side, so a receiver can verify with one.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::Sha256;

const PREFIX: &str = "whsec_";
/// Generated secrets carry 32 random bytes, the strength of the HMAC-SHA256 key itself.
const GENERATED_LEN: usize = 32;
/// The spec asks for 24 to 64 bytes; shorter keys are too easy to guess.
const MIN_LEN: usize = 24;
const MAX_LEN: usize = 64;

/// A webhook signing secret. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidSecret {
    #[error("secret must be \"whsec_\" followed by base64")]
    NotBase64,
    #[error("secret must decode to {MIN_LEN} to {MAX_LEN} bytes, this one has {0}")]
    Length(usize),
}

impl Secret {
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_LEN];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// Accepts `whsec_<base64>` or the bare base64, like the reference libraries do.
    pub fn parse(text: &str) -> Result<Self, InvalidSecret> {
        let encoded = text.trim().strip_prefix(PREFIX).unwrap_or(text.trim());
        let key = B64.decode(encoded).map_err(|_| InvalidSecret::NotBase64)?;
        if !(MIN_LEN..=MAX_LEN).contains(&key.len()) {
            return Err(InvalidSecret::Length(key.len()));
        }
        Ok(Self(key))
    }

    /// Parses a secret this program stored itself; the published test vector's key is shorter
    /// than we require of users, so this skips the length rule.
    pub fn from_stored(text: &str) -> Result<Self, InvalidSecret> {
        let encoded = text.strip_prefix(PREFIX).unwrap_or(text);
        B64.decode(encoded)
            .map(Self)
            .map_err(|_| InvalidSecret::NotBase64)
    }

    /// The `whsec_...` form shown to the user once and stored.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", B64.encode(&self.0))
    }

    /// The `webhook-signature` header value for one attempt.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }

    /// Checks a `webhook-signature` header (space-separated `v1,<sig>` entries) in constant time.
    pub fn verify(&self, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
        mac.update(body);
        header.split_whitespace().any(|entry| {
            let Some(sig) = entry.strip_prefix("v1,") else {
                return false;
            };
            let Ok(sig) = B64.decode(sig) else {
                return false;
            };
            mac.clone().verify_slice(&sig).is_ok()
        })
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks specification and its libraries.
    #[test]
    fn reproduces_the_published_test_vector() {
        let secret = Secret::from_stored("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(secret.verify(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
            "v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        ));
        assert!(!secret.verify("msg_other", 1614265330, br#"{"test": 2432232314}"#, &sig));
    }

    #[test]
    fn generated_secrets_round_trip_and_stay_hidden() {
        let secret = Secret::generate();
        let text = secret.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(Secret::parse(&text).unwrap(), secret);
        assert!(!format!("{secret:?}").contains(&text[6..]));
    }

    #[test]
    fn rejects_bad_secrets() {
        assert_eq!(
            Secret::parse("whsec_not base64!"),
            Err(InvalidSecret::NotBase64)
        );
        assert_eq!(Secret::parse("whsec_AAAA"), Err(InvalidSecret::Length(3)));
    }
}
