//! The passkey step of linking (WhatsApp's SHORTCAKE_PASSKEY gate), in our own types.
//!
//! WhatsApp may ask for a WebAuthn assertion from the account owner's passkey before it
//! lets a new device in. Only the owner's browser on `https://web.whatsapp.com` can make
//! one, so the gateway hands the request options to the operator ([`Ceremony`]) and takes
//! the browser's `PublicKeyCredential.toJSON()` back ([`Assertion::parse`]), checked here at
//! the edge before anything reaches WhatsApp. Errors are [`AssertionError`].
//!
//! An assertion is a credential: it is never logged (its `Debug` hides it) nor stored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::Value;

/// Where a session's passkey step stands, as `GET /api/sessions/:id/passkey` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Nothing waits (no ceremony, or it ended; `error` says how the last one failed).
    None,
    /// WhatsApp waits for the owner's assertion.
    AssertionRequired,
    /// WhatsApp accepted the assertion; the phone shows a code the operator must compare.
    ConfirmationRequired,
    /// The gateway sent what was asked (the assertion or the confirmation) and waits for
    /// WhatsApp's next step.
    Confirming,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::None => "none",
            Stage::AssertionRequired => "assertion_required",
            Stage::ConfirmationRequired => "confirmation_required",
            Stage::Confirming => "confirming",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A passkey request from WhatsApp and how far it has got.
#[derive(Debug, Clone, PartialEq)]
pub struct Ceremony {
    pub stage: Stage,
    /// The `PublicKeyCredentialRequestOptions` WhatsApp sent, as it sent them.
    pub options: Value,
    /// The options' challenge, decoded: an assertion must answer this one.
    pub challenge: Vec<u8>,
    /// The verification code, once WhatsApp derived it (`XXXX-XXXX`).
    pub code: Option<String>,
    /// WhatsApp proved continuity itself: the code need not be compared.
    pub skip_handoff_ux: bool,
    /// Unix seconds after which the request is given up.
    pub expires_at: i64,
}

/// Why a request from WhatsApp could not be taken up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("WhatsApp sent passkey request options that cannot be used: {0}")]
pub struct BadOptions(String);

impl Ceremony {
    /// A ceremony for the options WhatsApp sent (`now` in Unix seconds). It expires when
    /// the options' `timeout` (milliseconds, 600 s when absent) runs out.
    pub fn from_options(options_json: &str, now: i64) -> Result<Self, BadOptions> {
        let options: Value =
            serde_json::from_str(options_json).map_err(|e| BadOptions(e.to_string()))?;
        let challenge = options
            .get("challenge")
            .and_then(Value::as_str)
            .ok_or_else(|| BadOptions("no `challenge`".into()))?;
        let challenge =
            decode_b64url(challenge).map_err(|e| BadOptions(format!("challenge: {e}")))?;
        if challenge.is_empty() {
            return Err(BadOptions("empty `challenge`".into()));
        }
        let timeout_ms = options
            .get("timeout")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_TIMEOUT_MS);
        Ok(Self {
            stage: Stage::AssertionRequired,
            options,
            challenge,
            code: None,
            skip_handoff_ux: false,
            expires_at: now.saturating_add((timeout_ms / 1000) as i64),
        })
    }
}

/// WebAuthn's usual request timeout, and the one WhatsApp sends.
const DEFAULT_TIMEOUT_MS: u64 = 600_000;

/// A WebAuthn assertion from the owner's browser, decoded and checked.
#[derive(Clone, PartialEq, Eq)]
pub struct Assertion {
    pub credential_id: Vec<u8>,
    pub client_data_json: Vec<u8>,
    pub authenticator_data: Vec<u8>,
    pub signature: Vec<u8>,
    pub user_handle: Option<Vec<u8>>,
    /// The challenge `clientDataJSON` answers, decoded.
    pub challenge: Vec<u8>,
}

impl std::fmt::Debug for Assertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Assertion(***)")
    }
}

/// What is wrong with a pasted assertion. The message names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AssertionError {
    #[error("the body must be the JSON object `PublicKeyCredential.toJSON()` returns")]
    NotAnObject,
    #[error("`{0}` is required")]
    Missing(&'static str),
    #[error("`{field}`: {why}")]
    Invalid { field: &'static str, why: String },
}

fn invalid(field: &'static str, why: impl Into<String>) -> AssertionError {
    AssertionError::Invalid {
        field,
        why: why.into(),
    }
}

fn decode_b64url(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('='))
}

fn b64_field(
    obj: &Value,
    name: &'static str,
    path: &'static str,
) -> Result<Vec<u8>, AssertionError> {
    match obj.get(name) {
        None | Some(Value::Null) => Err(AssertionError::Missing(path)),
        Some(Value::String(s)) if s.is_empty() => Err(AssertionError::Missing(path)),
        Some(Value::String(s)) => {
            decode_b64url(s).map_err(|e| invalid(path, format!("not base64url: {e}")))
        }
        Some(_) => Err(invalid(path, "must be a base64url string")),
    }
}

impl Assertion {
    /// Reads `PublicKeyCredential.toJSON()` (also the older shape with the same fields):
    /// `{"id","rawId","type":"public-key","response":{"clientDataJSON","authenticatorData",
    /// "signature","userHandle"?}}`, every binary field base64url. Checks what can be
    /// checked without the key: the shape, that `id` and `rawId` agree, and that
    /// `clientDataJSON` is a `webauthn.get` answer with a challenge.
    pub fn parse(body: &Value) -> Result<Self, AssertionError> {
        let obj = body.as_object().ok_or(AssertionError::NotAnObject)?;
        let body = Value::Object(obj.clone());
        match obj.get("type") {
            Some(Value::String(t)) if t == "public-key" => {}
            Some(Value::String(t)) => {
                return Err(invalid("type", format!("must be `public-key`, got `{t}`")));
            }
            None | Some(Value::Null) => return Err(AssertionError::Missing("type")),
            Some(_) => return Err(invalid("type", "must be the string `public-key`")),
        }
        let raw_id = b64_field(&body, "rawId", "rawId")?;
        if let Some(id) = obj.get("id").filter(|v| !v.is_null()) {
            let id = id
                .as_str()
                .ok_or_else(|| invalid("id", "must be a base64url string"))?;
            let id = decode_b64url(id).map_err(|e| invalid("id", format!("not base64url: {e}")))?;
            if id != raw_id {
                return Err(invalid("id", "does not match `rawId`"));
            }
        }
        let response = obj
            .get("response")
            .ok_or(AssertionError::Missing("response"))?;
        if !response.is_object() {
            return Err(invalid("response", "must be an object"));
        }
        let client_data_json = b64_field(response, "clientDataJSON", "response.clientDataJSON")?;
        let authenticator_data =
            b64_field(response, "authenticatorData", "response.authenticatorData")?;
        let signature = b64_field(response, "signature", "response.signature")?;
        let user_handle = match response.get("userHandle") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(_) => Some(b64_field(response, "userHandle", "response.userHandle")?),
        };
        // 32 bytes of RP id hash, one of flags, four of sign count.
        if authenticator_data.len() < 37 {
            return Err(invalid(
                "response.authenticatorData",
                format!(
                    "is {} bytes; WebAuthn's is at least 37",
                    authenticator_data.len()
                ),
            ));
        }
        let client_data: Value = serde_json::from_slice(&client_data_json).map_err(|e| {
            invalid(
                "response.clientDataJSON",
                format!("does not decode to JSON: {e}"),
            )
        })?;
        match client_data.get("type").and_then(Value::as_str) {
            Some("webauthn.get") => {}
            Some(other) => {
                return Err(invalid(
                    "response.clientDataJSON",
                    format!(
                        "is of type `{other}`; an assertion's is `webauthn.get` (was the credential created instead of used?)"
                    ),
                ));
            }
            None => return Err(invalid("response.clientDataJSON", "has no `type`")),
        }
        let challenge = client_data
            .get("challenge")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("response.clientDataJSON", "has no `challenge`"))?;
        let challenge = decode_b64url(challenge).map_err(|e| {
            invalid(
                "response.clientDataJSON",
                format!("its challenge is not base64url: {e}"),
            )
        })?;
        Ok(Self {
            credential_id: raw_id,
            client_data_json,
            authenticator_data,
            signature,
            user_handle,
            challenge,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    fn good(challenge: &[u8]) -> Value {
        let cd = json!({"type":"webauthn.get","challenge": b64(challenge),"origin":"https://web.whatsapp.com"});
        json!({
            "id": b64(b"cred-1"), "rawId": b64(b"cred-1"), "type": "public-key",
            "authenticatorAttachment": "platform", "clientExtensionResults": {},
            "response": {
                "clientDataJSON": b64(cd.to_string().as_bytes()),
                "authenticatorData": b64(&[7u8; 37]),
                "signature": b64(b"sig"),
                "userHandle": b64(b"user"),
            }
        })
    }

    #[test]
    fn a_browser_assertion_is_read_with_its_challenge() {
        let a = Assertion::parse(&good(b"the challenge")).unwrap();
        assert_eq!(a.credential_id, b"cred-1");
        assert_eq!(a.challenge, b"the challenge");
        assert_eq!(a.user_handle.as_deref(), Some(&b"user"[..]));
        assert_eq!(format!("{a:?}"), "Assertion(***)", "never shown in logs");
    }

    #[test]
    fn each_malformed_field_is_named() {
        type Spoil = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Spoil, &str)> = vec![
            (Box::new(|v| v["type"] = json!("password")), "type"),
            (Box::new(|v| v["rawId"] = json!("not base64!")), "rawId"),
            (Box::new(|v| v["id"] = json!(b64(b"other"))), "id"),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("response");
                }),
                "response",
            ),
            (
                Box::new(|v| v["response"]["signature"] = json!("")),
                "response.signature",
            ),
            (
                Box::new(|v| v["response"]["authenticatorData"] = json!(b64(b"short"))),
                "response.authenticatorData",
            ),
            (
                Box::new(|v| v["response"]["clientDataJSON"] = json!(b64(b"not json"))),
                "response.clientDataJSON",
            ),
            (
                Box::new(|v| {
                    let cd = json!({"type":"webauthn.create","challenge":"AA"});
                    v["response"]["clientDataJSON"] = json!(b64(cd.to_string().as_bytes()));
                }),
                "webauthn.create",
            ),
        ];
        for (spoil, named) in cases {
            let mut v = good(b"c");
            spoil(&mut v);
            let err = Assertion::parse(&v).unwrap_err().to_string();
            assert!(err.contains(named), "{err} should name {named}");
        }
        assert_eq!(
            Assertion::parse(&json!("text")).unwrap_err(),
            AssertionError::NotAnObject
        );
    }

    #[test]
    fn stage_names_are_the_same_in_json_and_in_messages() {
        for s in [
            Stage::None,
            Stage::AssertionRequired,
            Stage::ConfirmationRequired,
            Stage::Confirming,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn options_give_the_challenge_and_the_deadline() {
        let c = Ceremony::from_options(
            r#"{"challenge":"AQID","timeout":600000,"rpId":"whatsapp.com"}"#,
            1_000,
        )
        .unwrap();
        assert_eq!(c.challenge, vec![1, 2, 3]);
        assert_eq!(c.expires_at, 1_600);
        assert_eq!(c.stage, Stage::AssertionRequired);
        assert!(Ceremony::from_options(r#"{"timeout":1}"#, 0).is_err());
        assert!(Ceremony::from_options("not json", 0).is_err());
    }
}
