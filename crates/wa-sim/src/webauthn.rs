//! WebAuthn as the passkey gate needs it: the account owner's passkey (a software ES256
//! credential for the relying party `whatsapp.com`, as a password manager keeps one), the
//! owner's browser on `https://web.whatsapp.com` getting an assertion from it ([`assert`]),
//! and WhatsApp checking that assertion as a relying party does ([`verify`]: the checks
//! of WebAuthn Level 3, section 7.2, in their order).
//!
//! P-256 ECDSA is ring's. Errors: [`AssertError`] for what the browser refuses to do,
//! [`Refused`] for an assertion the relying party refuses.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::state::{B64, Passkey};

/// WhatsApp's relying party id (not `web.whatsapp.com`, which is the origin's host).
pub const RP_ID: &str = "whatsapp.com";
/// Where the owner's browser runs `navigator.credentials.get()`.
pub const ORIGIN: &str = "https://web.whatsapp.com";

/// authenticatorData flags: user present, user verified.
const UP: u8 = 0x01;
const UV: u8 = 0x04;
/// Backup eligible and backed up: a passkey a password manager syncs.
const SYNCED: u8 = 0x08 | 0x10;

/// A field of an assertion [`assert`] can be asked to get wrong (for tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// authenticatorData for `web.whatsapp.com` instead of `whatsapp.com`.
    RpIdHash,
    /// clientDataJSON from another origin.
    Origin,
    /// clientDataJSON with a challenge nobody issued.
    Challenge,
    /// An authenticator that tested presence but did not verify the user.
    Uv,
    /// A signature that does not verify.
    Signature,
    /// A credential WhatsApp never registered.
    Credential,
}

impl Tamper {
    pub const NAMES: &'static str = "rpIdHash, origin, challenge, uv, signature or credential";

    pub fn parse(name: &str) -> Option<Tamper> {
        Some(match name {
            "rpIdHash" => Tamper::RpIdHash,
            "origin" => Tamper::Origin,
            "challenge" => Tamper::Challenge,
            "uv" => Tamper::Uv,
            "signature" => Tamper::Signature,
            "credential" => Tamper::Credential,
            _ => return None,
        })
    }
}

/// Why the owner's browser gives no assertion.
#[derive(Debug, thiserror::Error)]
pub enum AssertError {
    #[error("{0}")]
    BadOptions(String),
    #[error("the stored passkey is not a P-256 key: {0}")]
    Key(String),
}

/// Why WhatsApp refuses an assertion.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the assertion is malformed: {0}")]
    Malformed(String),
    #[error("<credential_id> is not the assertion's rawId")]
    CredentialMismatch,
    #[error("the credential is not registered for this account")]
    UnknownCredential,
    #[error("userHandle is not the account's")]
    UserHandle,
    #[error("clientDataJSON type is {0:?}, not \"webauthn.get\"")]
    WrongType(String),
    #[error("the challenge was already used (a replayed assertion)")]
    Replayed,
    #[error("the challenge is not the one WhatsApp issued")]
    WrongChallenge,
    #[error("clientDataJSON origin is {0:?}, not {ORIGIN}")]
    WrongOrigin(String),
    #[error("the assertion was made in a cross-origin frame")]
    CrossOrigin,
    #[error("authenticatorData rpIdHash is not SHA-256(\"{RP_ID}\")")]
    WrongRpIdHash,
    #[error("the authenticator did not test user presence (UP flag)")]
    NoUserPresence,
    #[error("the authenticator did not verify the user (UV flag)")]
    NoUserVerification,
    #[error("the signature does not verify with the registered public key")]
    BadSignature,
    #[error("sign count {got} is not above the stored {stored} (a cloned authenticator?)")]
    SignCount { got: u32, stored: u32 },
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// base64url as browsers and servers write it, with or without padding.
fn from_b64url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

fn random_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

/// A new passkey, registered with WhatsApp (its public key and a zero signature counter).
pub fn new_passkey() -> Result<Passkey, AssertError> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|e| AssertError::Key(e.to_string()))?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|e| AssertError::Key(e.to_string()))?;
    Ok(Passkey {
        credential_id: B64(random_bytes(rand::random_range(16..=32))),
        user_handle: B64(random_bytes(16)),
        private_key: B64(pkcs8.as_ref().to_vec()),
        counter: 0,
        public_key: B64(key.public_key().as_ref().to_vec()),
        sign_count: 0,
    })
}

/// What `navigator.credentials.get({publicKey: options})` on [`ORIGIN`] returns with the
/// owner's passkey, as `PublicKeyCredential.toJSON()`. The authenticator's counter moves
/// on with every assertion, used or not. `tamper` makes exactly one field wrong.
pub fn assert(
    passkey: &mut Passkey,
    options: &Value,
    tamper: Option<Tamper>,
) -> Result<Value, AssertError> {
    let bad = |why: &str| AssertError::BadOptions(why.to_string());
    let challenge = options
        .get("challenge")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("the options have no challenge string"))?;
    let challenge = from_b64url(challenge)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad("the challenge is not base64url"))?;
    match options.get("rpId") {
        Some(Value::String(rp)) if rp == RP_ID => {}
        // The browser then asks for credentials of the page's own host.
        None => {
            return Err(bad(
                "without an rpId the browser asks for web.whatsapp.com credentials; the passkey is for whatsapp.com",
            ));
        }
        Some(other) => {
            return Err(AssertError::BadOptions(format!(
                "the passkey is for rpId {RP_ID:?}, the options ask for {other}"
            )));
        }
    }
    if let Some(allowed) = options.get("allowCredentials") {
        let allowed = allowed
            .as_array()
            .ok_or_else(|| bad("allowCredentials is not an array"))?;
        let listed = allowed.iter().any(|c| {
            c.get("id").and_then(Value::as_str).and_then(from_b64url)
                == Some(passkey.credential_id.0.clone())
        });
        if !allowed.is_empty() && !listed {
            return Err(bad("allowCredentials does not list the owner's passkey"));
        }
    }
    // A platform authenticator verifies the user whatever `userVerification` asks.

    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &passkey.private_key.0,
        &rng,
    )
    .map_err(|e| AssertError::Key(e.to_string()))?;
    passkey.counter += 1;

    let challenge = match tamper {
        Some(Tamper::Challenge) => b64url(&random_bytes(32)),
        _ => b64url(&challenge),
    };
    let origin = match tamper {
        Some(Tamper::Origin) => "https://wamux.example",
        _ => ORIGIN,
    };
    // Browsers write these four members in this order.
    let client_data = format!(
        r#"{{"type":"webauthn.get","challenge":"{challenge}","origin":"{origin}","crossOrigin":false}}"#
    );
    let rp_id = match tamper {
        Some(Tamper::RpIdHash) => "web.whatsapp.com",
        _ => RP_ID,
    };
    let flags = match tamper {
        Some(Tamper::Uv) => UP | SYNCED,
        _ => UP | UV | SYNCED,
    };
    let mut authenticator_data = Sha256::digest(rp_id.as_bytes()).to_vec();
    authenticator_data.push(flags);
    authenticator_data.extend_from_slice(&passkey.counter.to_be_bytes());

    let signed = [
        &authenticator_data[..],
        &Sha256::digest(client_data.as_bytes()),
    ]
    .concat();
    let mut signature = key
        .sign(&rng, &signed)
        .map_err(|e| AssertError::Key(e.to_string()))?
        .as_ref()
        .to_vec();
    if tamper == Some(Tamper::Signature) {
        // The last byte of `s`: the DER stays well-formed, the value is wrong.
        *signature.last_mut().expect("a signature is not empty") ^= 1;
    }
    let credential_id = match tamper {
        Some(Tamper::Credential) => random_bytes(passkey.credential_id.0.len()),
        _ => passkey.credential_id.0.clone(),
    };
    Ok(json!({
        "id": b64url(&credential_id),
        "rawId": b64url(&credential_id),
        "type": "public-key",
        "authenticatorAttachment": "platform",
        "clientExtensionResults": {},
        "response": {
            "clientDataJSON": b64url(client_data.as_bytes()),
            "authenticatorData": b64url(&authenticator_data),
            "signature": b64url(&signature),
            "userHandle": b64url(&passkey.user_handle.0),
        },
    }))
}

/// The challenge check's view of the ceremony.
pub struct Challenge<'a> {
    /// What the server issued for this ceremony.
    pub issued: &'a [u8],
    /// Whether a challenge was issued and used before.
    pub spent: &'a dyn Fn(&[u8]) -> bool,
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str, Refused> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Refused::Malformed(format!("no {name} string")))
}

fn b64_field(v: &Value, name: &str) -> Result<Vec<u8>, Refused> {
    from_b64url(field(v, name)?)
        .ok_or_else(|| Refused::Malformed(format!("{name} is not base64url")))
}

/// Checks `<webauthn_assertion>` (the `toJSON()` shape) and `<credential_id>` as
/// WhatsApp's relying party does. Returns the signature counter to store.
pub fn verify(
    passkey: &Passkey,
    credential_id: &[u8],
    assertion: &[u8],
    challenge: Challenge<'_>,
) -> Result<u32, Refused> {
    let assertion: Value = serde_json::from_slice(assertion)
        .map_err(|e| Refused::Malformed(format!("not JSON: {e}")))?;
    if field(&assertion, "type")? != "public-key" {
        return Err(Refused::Malformed("type is not \"public-key\"".into()));
    }
    let raw_id = b64_field(&assertion, "rawId")?;
    if b64_field(&assertion, "id")? != raw_id {
        return Err(Refused::Malformed("id is not rawId".into()));
    }
    if credential_id != raw_id {
        return Err(Refused::CredentialMismatch);
    }
    if raw_id != passkey.credential_id.0 {
        return Err(Refused::UnknownCredential);
    }
    let response = assertion
        .get("response")
        .ok_or_else(|| Refused::Malformed("no response".into()))?;
    match response.get("userHandle") {
        None | Some(Value::Null) => {}
        Some(_) if b64_field(response, "userHandle")? == passkey.user_handle.0 => {}
        Some(_) => return Err(Refused::UserHandle),
    }
    let client_data_json = b64_field(response, "clientDataJSON")?;
    let authenticator_data = b64_field(response, "authenticatorData")?;
    let signature = b64_field(response, "signature")?;

    let client_data: Value = serde_json::from_slice(&client_data_json)
        .map_err(|e| Refused::Malformed(format!("clientDataJSON is not JSON: {e}")))?;
    let kind = field(&client_data, "type")?;
    if kind != "webauthn.get" {
        return Err(Refused::WrongType(kind.to_string()));
    }
    let challenge_got = b64_field(&client_data, "challenge")?;
    if (challenge.spent)(&challenge_got) {
        return Err(Refused::Replayed);
    }
    if challenge_got != challenge.issued {
        return Err(Refused::WrongChallenge);
    }
    let origin = field(&client_data, "origin")?;
    if origin != ORIGIN {
        return Err(Refused::WrongOrigin(origin.to_string()));
    }
    if client_data.get("crossOrigin") == Some(&Value::Bool(true)) {
        return Err(Refused::CrossOrigin);
    }

    if authenticator_data.len() < 37 {
        return Err(Refused::Malformed(
            "authenticatorData is shorter than 37 bytes".into(),
        ));
    }
    if authenticator_data[..32] != Sha256::digest(RP_ID.as_bytes())[..] {
        return Err(Refused::WrongRpIdHash);
    }
    let flags = authenticator_data[32];
    if flags & UP == 0 {
        return Err(Refused::NoUserPresence);
    }
    if flags & UV == 0 {
        return Err(Refused::NoUserVerification);
    }
    let signed = [&authenticator_data[..], &Sha256::digest(&client_data_json)].concat();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &passkey.public_key.0)
        .verify(&signed, &signature)
        .map_err(|_| Refused::BadSignature)?;
    let got = u32::from_be_bytes(authenticator_data[33..37].try_into().expect("4 bytes"));
    let stored = passkey.sign_count;
    // Authenticators without a counter send 0 every time.
    if (got != 0 || stored != 0) && got <= stored {
        return Err(Refused::SignCount { got, stored });
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(challenge: &[u8]) -> Value {
        json!({"challenge": b64url(challenge), "rpId": RP_ID, "allowCredentials": []})
    }

    fn check(passkey: &Passkey, assertion: &Value, issued: &[u8]) -> Result<u32, Refused> {
        let raw_id = from_b64url(assertion["rawId"].as_str().unwrap()).unwrap();
        verify(
            passkey,
            &raw_id,
            assertion.to_string().as_bytes(),
            Challenge {
                issued,
                spent: &|_| false,
            },
        )
    }

    #[test]
    fn a_good_assertion_verifies_and_each_tampered_field_is_refused() {
        let mut passkey = new_passkey().unwrap();
        let issued = [7u8; 32];
        let good = assert(&mut passkey, &options(&issued), None).unwrap();
        assert_eq!(check(&passkey, &good, &issued).unwrap(), 1);

        let cases = [
            (Tamper::RpIdHash, "rpIdHash"),
            (Tamper::Origin, "origin"),
            (Tamper::Challenge, "not the one WhatsApp issued"),
            (Tamper::Uv, "UV flag"),
            (Tamper::Signature, "signature does not verify"),
            (Tamper::Credential, "not registered"),
        ];
        for (tamper, why) in cases {
            let bad = assert(&mut passkey, &options(&issued), Some(tamper)).unwrap();
            let refused = check(&passkey, &bad, &issued).unwrap_err().to_string();
            assert!(refused.contains(why), "{tamper:?}: {refused}");
        }
    }

    #[test]
    fn a_counter_that_does_not_move_on_is_refused() {
        let mut passkey = new_passkey().unwrap();
        let issued = [1u8; 32];
        let first = assert(&mut passkey, &options(&issued), None).unwrap();
        passkey.sign_count = 1;
        assert!(matches!(
            check(&passkey, &first, &issued),
            Err(Refused::SignCount { got: 1, stored: 1 })
        ));
    }

    #[test]
    fn the_browser_refuses_options_for_another_relying_party() {
        let mut passkey = new_passkey().unwrap();
        let c = b64url(&[1; 32]);
        for options in [
            json!({"rpId": RP_ID}),
            json!({"challenge": c}),
            json!({"challenge": c, "rpId": "web.whatsapp.com"}),
            json!({"challenge": c, "rpId": RP_ID, "allowCredentials": [{"type": "public-key", "id": "AAAA"}]}),
        ] {
            assert!(
                matches!(
                    assert(&mut passkey, &options, None),
                    Err(AssertError::BadOptions(_))
                ),
                "{options}"
            );
        }
        assert_eq!(passkey.counter, 0, "nothing was signed");
    }
}
