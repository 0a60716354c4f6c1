//! Linking by phone number instead of a QR code ("Link with phone number").
//!
//! The companion asks for a code for a number (`companion_hello`, sent on
//! its registration connection), the user types that code into the phone
//! (the admin API's `link-code`), the phone answers (`primary_hello`) and the
//! companion sends its key bundle (`companion_finish`). The bundle only opens
//! if both sides used the same code; then it goes on as a QR pairing does:
//! `pair-success`, `pair-device-sign`, the 515 restart (or, for an account
//! gated with a passkey, the passkey ceremony first).
//!
//! The code itself never travels. Each side wraps an ephemeral key with a key
//! derived from the code (PBKDF2-SHA256, 2^17 rounds, AES-256-CTR), so a
//! mistyped code only shows when the bundle fails its AES-GCM tag. As on
//! WhatsApp, the phone then reports a failed link and the companion hears
//! nothing (its own timer gives the code up); the phone may try again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use wacore::pair_code::PairCodeUtils;
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;
use wacore_libsignal::protocol::{KeyPair, PublicKey};

use crate::conn::{Reply, bytes_of, child, jid_attr};
use crate::hub::{Hub, Outbound, new_id, t_now};
use crate::phone::{self, LinkOutcome, PhoneError, attr};
use crate::state::now_secs;

/// How long a code may wait for the phone, as WhatsApp Web counts it.
const CODE_VALIDITY: Duration = Duration::from_secs(180);

/// How long the phone waits for the companion's `companion_finish` after
/// answering: the companion runs one PBKDF2 and a round trip.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

/// A companion waiting for its code to be entered on the phone of `phone`.
pub struct LinkCode {
    pub conn_id: u64,
    pub tx: mpsc::UnboundedSender<Outbound>,
    /// A QR ref of the same connection: its pairing entry holds the keys.
    pub qr_ref: String,
    pub pairing_ref: Vec<u8>,
    /// `salt(32) || iv(16) || AES-CTR(ephemeral public key)` under the code.
    pub wrapped_companion_ephemeral: Vec<u8>,
    pub created_at: u64,
    /// Set between the phone's `primary_hello` and the companion's answer.
    pub entered: Option<Entered>,
}

/// What the phone knows after a code was typed in.
pub struct Entered {
    primary_ephemeral: KeyPair,
    /// The companion's ephemeral key as unwrapped with the typed code
    /// (garbage when the code was wrong).
    companion_ephemeral: [u8; 32],
    outcome: oneshot::Sender<Result<LinkOutcome, LinkError>>,
}

/// Why entering a code did not link a device.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the code must be 8 characters of 1-9 and A-Z without I, O and U, got {0:?}")]
    BadCode(String),
    #[error("no device is waiting to be linked to {0} by code")]
    NoRequest(String),
    #[error("the code for {0} expired; request a new one on the device")]
    Expired(String),
    #[error("the device that asked for the code disconnected")]
    Gone,
    #[error("the code does not match the one the device shows; nothing was linked")]
    WrongCode,
    #[error("the device did not answer the phone within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Phone(#[from] PhoneError),
}

fn bad_request(id: &str, why: &str) -> Vec<Reply> {
    tracing::debug!("link_code_companion_reg refused: {why}");
    vec![Reply::Node(crate::conn::iq_error(id, 400, "bad-request"))]
}

/// Handles a `<link_code_companion_reg>` IQ from a registration connection.
pub async fn handle(hub: &Arc<Hub>, refs: &[String], iq: &Node, reg: &Node) -> Vec<Reply> {
    let id = attr(iq, "id").unwrap_or_default();
    let Some(phone) = jid_attr(reg, "jid").map(|j| j.user.to_string()) else {
        return bad_request(&id, "no jid");
    };
    match attr(reg, "stage").as_deref() {
        Some("companion_hello") => companion_hello(hub, refs, &id, &phone, reg).await,
        Some("companion_finish") => companion_finish(hub, refs, &id, &phone, reg).await,
        other => bad_request(&id, &format!("unknown stage {other:?}")),
    }
}

/// Stage 1: remembers the wrapped key under the phone number and hands out a
/// pairing ref. A newer request for the same number replaces an older one,
/// as the real server routes the phone's answer by number.
async fn companion_hello(
    hub: &Arc<Hub>,
    refs: &[String],
    id: &str,
    phone: &str,
    reg: &Node,
) -> Vec<Reply> {
    let wrapped =
        child(reg, "link_code_pairing_wrapped_companion_ephemeral_pub").and_then(bytes_of);
    let Some(wrapped) = wrapped.filter(|w| w.len() == 80) else {
        return bad_request(id, "wrapped ephemeral key is not 80 bytes");
    };
    let auth_key = child(reg, "companion_server_auth_key_pub").and_then(bytes_of);
    let mut core = hub.core.lock().await;
    let Some((qr_ref, pc)) = refs
        .iter()
        .find_map(|r| core.pairing.get(r).map(|pc| (r.clone(), pc)))
    else {
        return bad_request(id, "connection has no pairing state");
    };
    if auth_key != Some(pc.noise_pub.as_slice()) {
        return bad_request(
            id,
            "companion_server_auth_key_pub is not this connection's key",
        );
    }
    if core.account(phone).is_none() {
        return bad_request(id, &format!("{phone} has no account"));
    }
    let pairing_ref = format!("2@{}", new_id()).into_bytes();
    let request = LinkCode {
        conn_id: pc.conn_id,
        tx: pc.tx.clone(),
        qr_ref,
        pairing_ref: pairing_ref.clone(),
        wrapped_companion_ephemeral: wrapped.to_vec(),
        created_at: now_secs(),
        entered: None,
    };
    core.link_codes.insert(phone.to_string(), request);
    tracing::info!("a device asks to be linked to {phone} by code");
    let reply = crate::conn::iq_result(id)
        .children([NodeBuilder::new("link_code_companion_reg")
            .children([NodeBuilder::new("link_code_pairing_ref")
                .bytes(pairing_ref)
                .build()])
            .build()])
        .build();
    vec![Reply::Node(reply)]
}

/// Stage 3: the phone opens the companion's key bundle. The server
/// acknowledges the bundle either way; only a bundle that opens links.
async fn companion_finish(
    hub: &Arc<Hub>,
    refs: &[String],
    id: &str,
    phone: &str,
    reg: &Node,
) -> Vec<Reply> {
    let bundle = child(reg, "link_code_pairing_wrapped_key_bundle").and_then(bytes_of);
    let pairing_ref = child(reg, "link_code_pairing_ref").and_then(bytes_of);
    let companion_identity = child(reg, "companion_identity_public").and_then(bytes_of);
    let (Some(bundle), Some(pairing_ref), Some(companion_identity)) =
        (bundle, pairing_ref, companion_identity)
    else {
        return bad_request(id, "companion_finish without bundle, ref or identity");
    };
    let mut core = hub.core.lock().await;
    let Some(request) = core
        .link_codes
        .get_mut(phone)
        .filter(|l| l.pairing_ref == pairing_ref && refs.contains(&l.qr_ref))
    else {
        return bad_request(id, "companion_finish for no outstanding code");
    };
    let Some(entered) = request.entered.take() else {
        return bad_request(id, "companion_finish before the phone answered");
    };
    let qr_ref = request.qr_ref.clone();
    let Some(pc) = core.pairing.get(&qr_ref) else {
        return bad_request(id, "connection has no pairing state");
    };
    let companion_identity_known = pc.identity;
    let Some(acc) = core.account(phone) else {
        return bad_request(id, "the account is gone");
    };
    let opened = open_bundle(
        acc,
        &entered,
        bundle,
        companion_identity,
        &companion_identity_known,
    );
    let outcome = match opened {
        Ok(adv_secret) => {
            let linked = phone::link_or_gate(&mut core, phone, &qr_ref, adv_secret).await;
            if linked.is_ok() {
                core.link_codes.remove(phone);
            }
            linked.map_err(LinkError::from)
        }
        Err(why) => {
            tracing::info!("phone {phone} cannot open the key bundle: {why}");
            Err(LinkError::WrongCode)
        }
    };
    if entered.outcome.send(outcome).is_err() {
        tracing::debug!("nobody waits for the link-code outcome any more");
    }
    vec![Reply::Node(crate::conn::iq_result(id).build())]
}

/// Decrypts and checks `salt(32) || iv(12) || AES-GCM(companion identity ||
/// primary identity || random)`; returns the ADV secret both sides derive.
fn open_bundle(
    acc: &crate::state::Account,
    entered: &Entered,
    wrapped: &[u8],
    companion_identity: &[u8],
    companion_identity_known: &[u8; 32],
) -> Result<[u8; 32], String> {
    if wrapped.len() != 32 + 12 + 96 + 16 {
        return Err(format!("bundle is {} bytes", wrapped.len()));
    }
    let companion_eph = PublicKey::from_djb_public_key_bytes(&entered.companion_ephemeral)
        .map_err(|e| e.to_string())?;
    let ephemeral_shared = entered
        .primary_ephemeral
        .private_key
        .calculate_agreement(&companion_eph)
        .map_err(|e| e.to_string())?;
    let mut key = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(
        &ephemeral_shared,
        Some(&wrapped[..32]),
        b"link_code_pairing_key_bundle_encryption_key",
        &mut key,
    )
    .map_err(|e| e.to_string())?;
    let iv: [u8; 12] = wrapped[32..44].try_into().expect("12 bytes");
    let mut bundle = Vec::with_capacity(96);
    wacore_libsignal::crypto::aes_256_gcm_decrypt(&key, &iv, b"", &wrapped[44..], &mut bundle)
        .map_err(|e| format!("AES-GCM: {e}"))?;
    let primary_identity = &acc.secrets.identity_public.0;
    if &bundle[..32] != companion_identity || &bundle[..32] != companion_identity_known.as_slice() {
        return Err("the bundle names another companion identity".into());
    }
    if &bundle[32..64] != primary_identity.as_slice() {
        return Err("the bundle names another primary identity".into());
    }
    let identity = crate::signal::identity_pair(&acc.secrets).map_err(|e| e.to_string())?;
    let companion_identity_key =
        PublicKey::from_djb_public_key_bytes(companion_identity).map_err(|e| e.to_string())?;
    let identity_shared = identity
        .private_key
        .calculate_agreement(&companion_identity_key)
        .map_err(|e| e.to_string())?;
    let secret = [&ephemeral_shared[..], &identity_shared[..], &bundle[64..96]].concat();
    let mut adv_secret = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(&secret, None, b"adv_secret", &mut adv_secret)
        .map_err(|e| e.to_string())?;
    Ok(adv_secret)
}

/// The phone's user types `code` into "Link with phone number": the phone
/// answers the waiting companion and waits for its key bundle. Returns the
/// new device id, or that the owner's passkey is required first.
pub async fn enter_code(hub: &Arc<Hub>, phone: &str, code: &str) -> Result<LinkOutcome, LinkError> {
    let code = code.trim().to_ascii_uppercase();
    if !PairCodeUtils::validate_code(&code) {
        return Err(LinkError::BadCode(code));
    }
    let (wrapped, pairing_ref) = {
        let mut core = hub.core.lock().await;
        if core.account(phone).is_none() {
            return Err(PhoneError::UnknownAccount(phone.to_string()).into());
        }
        let Some(request) = core.link_codes.get(phone) else {
            return Err(LinkError::NoRequest(phone.to_string()));
        };
        if now_secs().saturating_sub(request.created_at) > CODE_VALIDITY.as_secs() {
            core.link_codes.remove(phone);
            return Err(LinkError::Expired(phone.to_string()));
        }
        (
            request.wrapped_companion_ephemeral.clone(),
            request.pairing_ref.clone(),
        )
    };
    // Two PBKDF2 runs of 2^17 rounds: off the async threads and the lock.
    let typed = code.clone();
    let (companion_ephemeral, primary_ephemeral, wrapped_primary) =
        tokio::task::spawn_blocking(move || {
            let companion = PairCodeUtils::decrypt_primary_ephemeral_pub(&wrapped, &typed)
                .expect("the wrapped key was checked to be 80 bytes");
            let primary = KeyPair::generate(&mut rand::rng());
            let public: [u8; 32] = primary
                .public_key
                .public_key_bytes()
                .try_into()
                .expect("a Curve25519 key is 32 bytes");
            let wrapped = PairCodeUtils::encrypt_ephemeral_pub(&public, &typed);
            (companion, primary, wrapped)
        })
        .await
        .expect("key wrapping does not panic");

    let (outcome, done) = oneshot::channel();
    {
        let mut core = hub.core.lock().await;
        let identity_pub = match core.account(phone) {
            Some(acc) => acc.secrets.identity_public.0.clone(),
            None => return Err(PhoneError::UnknownAccount(phone.to_string()).into()),
        };
        let Some(request) = core
            .link_codes
            .get_mut(phone)
            .filter(|l| l.pairing_ref == pairing_ref)
        else {
            return Err(LinkError::Gone);
        };
        request.entered = Some(Entered {
            primary_ephemeral,
            companion_ephemeral,
            outcome,
        });
        let hello = NodeBuilder::new("notification")
            .attr("from", "s.whatsapp.net")
            .attr("type", "link_code_companion_reg")
            .attr("id", new_id())
            .attr("t", t_now())
            .children([NodeBuilder::new("link_code_companion_reg")
                .attr("stage", "primary_hello")
                .children([
                    NodeBuilder::new("link_code_pairing_wrapped_primary_ephemeral_pub")
                        .bytes(wrapped_primary.to_vec())
                        .build(),
                    NodeBuilder::new("primary_identity_pub")
                        .bytes(identity_pub)
                        .build(),
                    NodeBuilder::new("link_code_pairing_ref")
                        .bytes(pairing_ref.clone())
                        .build(),
                ])
                .build()])
            .build();
        phone::send_node(&request.tx, &hello);
    }
    match tokio::time::timeout(FINISH_TIMEOUT, done).await {
        Ok(Ok(outcome)) => outcome,
        // The connection ended and took the request with it.
        Ok(Err(_)) => Err(LinkError::Gone),
        Err(_) => {
            let mut core = hub.core.lock().await;
            if let Some(request) = core
                .link_codes
                .get_mut(phone)
                .filter(|l| l.pairing_ref == pairing_ref)
            {
                request.entered = None;
            }
            Err(LinkError::Timeout(FINISH_TIMEOUT))
        }
    }
}
