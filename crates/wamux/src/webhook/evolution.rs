//! The Evolution webhook format: each stored event becomes Evolution API v2's envelope
//! `{"event","instance","data","destination","date_time","sender","server_url","apikey"}`
//! when it is sent, so the outbox, the signatures, the retries and the replay are the same
//! as for our own format.

use std::sync::Arc;

use futures::future::BoxFuture;
use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::event::EventKind;
use crate::evolution::payload::{self, Instance};
use crate::evolution::{EvoEvent, iso8601};
use crate::store::webhooks::EvolutionHook;

/// Reads a stored media file by name, for webhooks that carry files inline.
pub type FileReader =
    Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<u8>>> + Send + Sync>;

/// What the Evolution format needs from the rest of the server.
#[derive(Clone)]
pub struct EvolutionContext {
    /// Evolution's `server_url`: our public URL.
    pub server_url: String,
    pub files: FileReader,
}

impl std::fmt::Debug for EvolutionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvolutionContext")
            .field("server_url", &self.server_url)
            .finish_non_exhaustive()
    }
}

/// The account a session is linked to, for `sender` and `connection.update`.
#[derive(Debug, Clone, Default)]
pub struct Owner {
    pub jid: Option<String>,
    pub push_name: Option<String>,
}

/// One delivery in the Evolution format.
#[derive(Debug)]
pub struct Rendered {
    pub event: EvoEvent,
    pub url: String,
    pub body: String,
}

/// Why a stored event is not sent to an Evolution webhook.
#[derive(Debug, PartialEq, Eq)]
pub enum Skip {
    /// Evolution has no event for it (a passkey step, ...).
    NoEquivalent,
    /// It would be an event the webhook did not subscribe to.
    NotSubscribed(EvoEvent),
}

/// Our stored body as Evolution's envelope, sent to `url` (or `url/<event>` with
/// `byEvents`).
pub async fn render(
    ctx: Option<&EvolutionContext>,
    hook: &EvolutionHook,
    session: &str,
    owner: &Owner,
    url: &str,
    stored: &str,
) -> Result<Rendered, Skip> {
    let stored: Value = serde_json::from_str(stored).map_err(|_| Skip::NoEquivalent)?;
    let kind: EventKind = stored["event"]
        .as_str()
        .and_then(|k| k.parse().ok())
        .ok_or(Skip::NoEquivalent)?;
    let inst = Instance {
        owner: owner.jid.as_deref(),
        profile_name: owner.push_name.as_deref(),
        ..Instance::of(session)
    };
    let qr_image = |code: &str| crate::qr::data_url(code).ok();
    let (event, mut data) =
        payload::event_data(kind, &stored["data"], &inst, qr_image).ok_or(Skip::NoEquivalent)?;
    if !hook.events.accepts(event) {
        return Err(Skip::NotSubscribed(event));
    }
    if hook.base64
        && matches!(event, EvoEvent::MessagesUpsert | EvoEvent::SendMessage)
        && let (Some(ctx), Some(name)) = (ctx, stored["data"]["media"]["fileName"].as_str())
    {
        // A file that cannot be read is sent without `base64`, as Evolution does when its
        // download fails; `mediaUrl` still leads to it.
        match (ctx.files)(name.to_owned()).await {
            Ok(bytes) => {
                use base64::Engine as _;
                data["message"]["base64"] = base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .into();
            }
            Err(e) => tracing::warn!(
                session,
                file = name,
                "cannot inline a file for an Evolution webhook: {e}"
            ),
        }
    }
    let mut envelope = json!({
        "event": event.name(),
        "instance": session,
        "data": data,
        "destination": url,
        "date_time": iso8601(crate::store::now_ms()),
        "server_url": ctx.map(|c| c.server_url.as_str()),
        "apikey": Value::Null,
    });
    // Evolution leaves `sender` out until the instance is linked. A QR code is shown only
    // while it is not, so its event names no account even when delivered after the scan.
    if let Some(jid) = owner
        .jid
        .as_ref()
        .filter(|_| event != EvoEvent::QrcodeUpdated)
    {
        envelope["sender"] = jid.clone().into();
    }
    let url = if hook.by_events {
        by_event_url(url, event)
    } else {
        url.to_owned()
    };
    Ok(Rendered {
        event,
        url,
        body: envelope.to_string(),
    })
}

/// `url/<event>` for `byEvents`: the event's name added to the path, the query kept
/// (`https://x/hook?t=1` becomes `https://x/hook/messages-upsert?t=1`).
fn by_event_url(url: &str, event: EvoEvent) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let path = format!("{}/{}", u.path().trim_end_matches('/'), event.path());
            u.set_path(&path);
            u.to_string()
        }
        // Not reached: stored URLs were parsed when set.
        Err(_) => format!("{}/{}", url.trim_end_matches('/'), event.path()),
    }
}

/// Evolution's `jwt_key` header: replaced by `Authorization: Bearer <JWT>`, HS256 over
/// `{"iat","exp"(10 minutes),"app":"evolution","action":"webhook"}`, keyed with its value.
pub fn headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            if k.eq_ignore_ascii_case("jwt_key") {
                ("Authorization".to_owned(), format!("Bearer {}", jwt(v)))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}

fn jwt(key: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = crate::store::now();
    let header = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = b64.encode(
        json!({"iat": now, "exp": now + 600, "app": "evolution", "action": "webhook"}).to_string(),
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key size");
    mac.update(format!("{header}.{claims}").as_bytes());
    let sig = b64.encode(mac.finalize().into_bytes());
    format!("{header}.{claims}.{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_events_adds_the_event_to_the_path_and_keeps_the_query() {
        assert_eq!(
            by_event_url("https://x.example/hook?t=1", EvoEvent::MessagesUpsert),
            "https://x.example/hook/messages-upsert?t=1"
        );
        assert_eq!(
            by_event_url("https://x.example/", EvoEvent::ConnectionUpdate),
            "https://x.example/connection-update"
        );
    }

    #[test]
    fn a_jwt_key_header_becomes_a_signed_bearer_token() {
        use base64::Engine as _;
        let out = headers(&[
            ("jwt_key".into(), "s3cret".into()),
            ("X-Other".into(), "v".into()),
        ]);
        assert_eq!(out[1], ("X-Other".to_owned(), "v".to_owned()));
        let (name, value) = &out[0];
        assert_eq!(name, "Authorization");
        let token = value.strip_prefix("Bearer ").unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            (claims["app"].as_str(), claims["action"].as_str()),
            (Some("evolution"), Some("webhook"))
        );
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            600
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        mac.verify_slice(&b64.decode(parts[2]).unwrap()).unwrap();
    }
}
