//! WhatsApp's passkey gate on device linking (SHORTCAKE_PASSKEY), for accounts created
//! with `"passkey": true`.
//!
//! When such a phone scans a QR code, or opens the key bundle of a pairing code, the
//! server does not send `pair-success`. It asks the registration connection for an
//! assertion from the owner's passkey (`passkey_prologue_request`, with the WebAuthn
//! request options or, with the `omitOptions` fault, without them: the client then
//! fetches them with `<passkey_request_options/>`), hands out a ref (`<ref/>`) and checks
//! the `<passkey_prologue>`: the assertion (see `webauthn`), the companion's ephemeral
//! identity naming that ref, and the optional handoff proof. The phone then answers with
//! an ephemeral identity of its own (`crsc_continuation`), the companion reveals the
//! nonce it committed to (`<companion_nonce>`), both derive the code the phone shows, and
//! the companion sends its keys and a new ADV secret under a key both derived
//! (`<encrypted_pairing_request>`). Only then is the device linked, as after a scan, with
//! `pair-success` under that new secret.
//!
//! Every value is derived here from the primitives (SHA-256, HMAC, HKDF, X25519,
//! AES-GCM) and waproto's messages, not with the client library's helpers, so that a bug
//! both sides shared could not hide.
//!
//! The phone's answers (the continuation, `pair-success`) come [`PHONE_ROUND_TRIP`] after
//! the server's IQ result, as they do from a phone somewhere else. whatsapp-rust relies
//! on that: it stores its ceremony, and later its new ADV secret, only once the IQ result
//! is in, so an answer sent along with the result would overtake them.
//!
//! A ceremony belongs to its registration connection: when that closes, the ceremony has
//! failed. Ceremonies live in memory, as connections do; the passkey is part of the
//! account's durable state.
//!
//! Errors: a request that does not fit the ceremony's stage gets `<error code="400">` and
//! changes nothing ([`Step::OutOfStage`]); one that fails a check gets `<error code="401"
//! text="not-authorized">` and ends the ceremony ([`Step::Refused`]). Which code WhatsApp
//! answers a refused prologue with is not known; 401 is an assumption.

mod shortcake;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, mpsc};
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Node, NodeContent};
use wacore_libsignal::protocol::KeyPair;

use self::shortcake::{Broken, Prologue};
use crate::conn::{Reply, child, children, iq_error, iq_result};
use crate::hub::{Core, Hub, Outbound, new_id, t_now};
use crate::phone::{self, PhoneError, attr};
use crate::webauthn::{self, Refused};

/// How long the options' challenge may be answered (WhatsApp's `timeout: 600000`).
const CHALLENGE_TTL: Duration = Duration::from_secs(600);

/// How long the phone takes to answer through the server. A phone on a mobile network
/// takes about a second; at a quarter of that, a client on a loaded machine had not
/// yet stored its ceremony when the continuation came (seen in CI), which a real phone
/// never provokes.
pub const PHONE_ROUND_TRIP: Duration = Duration::from_secs(1);

/// How many used challenges are remembered to name a replay as one.
const SPENT_KEPT: usize = 1024;

/// The IQ children of the ceremony (all `xmlns="md"`).
const REQUESTS: [&str; 5] = [
    "passkey_request_options",
    "ref",
    "passkey_prologue",
    "companion_nonce",
    "encrypted_pairing_request",
];

/// Fault switches for one phone's next ceremonies.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// `passkey_prologue_request` without the options.
    pub omit_options: bool,
    /// The phone never answers an accepted prologue (seen on WhatsApp: the assertion is
    /// accepted, and nothing follows).
    pub no_continuation: bool,
}

/// The ceremonies of all gated phones.
#[derive(Default)]
pub struct Ceremonies {
    /// The latest ceremony of each phone, finished or not.
    by_phone: HashMap<String, Ceremony>,
    spent: VecDeque<[u8; 32]>,
    next_id: u64,
    /// Woken whenever a phone's screen changes.
    pub changed: Arc<Notify>,
}

struct Ceremony {
    id: u64,
    conn_id: u64,
    tx: mpsc::UnboundedSender<Outbound>,
    /// A QR ref of the registration connection: its pairing entry holds the keys.
    qr_ref: String,
    /// The ADV secret the QR code or the pairing code gave both sides.
    adv_secret: [u8; 32],
    faults: Faults,
    /// A valid handoff proof came: the companion need not show the code.
    skip_handoff: bool,
    code: Option<String>,
    stage: Stage,
}

enum Stage {
    AssertionRequired {
        challenge: [u8; 32],
        issued: Instant,
        options: String,
        pairing_ref: Option<String>,
    },
    AwaitingNonce(Box<Handshake>),
    CodeShown {
        key: [u8; 32],
    },
    /// The pairing request opened; `pair-success` goes out a round trip later.
    Linking {
        adv_secret: [u8; 32],
    },
    Linked {
        device: u16,
    },
    Failed {
        error: String,
    },
}

/// What the phone holds between the prologue and the companion's nonce.
struct Handshake {
    prologue: Prologue,
    primary: KeyPair,
    primary_nonce: [u8; 32],
    /// Whether the phone's identity went out (the companion cannot answer before).
    continued: bool,
}

impl Stage {
    fn name(&self) -> &'static str {
        match self {
            Stage::AssertionRequired { .. } => "assertion_required",
            Stage::AwaitingNonce(_) => "awaiting_nonce",
            Stage::CodeShown { .. } | Stage::Linking { .. } => "code_shown",
            Stage::Linked { .. } => "linked",
            Stage::Failed { .. } => "failed",
        }
    }

    fn is_open(&self) -> bool {
        !matches!(self, Stage::Linked { .. } | Stage::Failed { .. })
    }
}

/// What a gated phone shows about its latest ceremony (the admin API's shape).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Screen {
    pub stage: &'static str,
    pub code: Option<String>,
    pub error: Option<String>,
    pub device: Option<u16>,
    pub skip_handoff: bool,
}

impl Ceremonies {
    pub fn screen(&self, phone: &str) -> Screen {
        let Some(c) = self.by_phone.get(phone) else {
            return Screen {
                stage: "none",
                code: None,
                error: None,
                device: None,
                skip_handoff: false,
            };
        };
        Screen {
            stage: c.stage.name(),
            code: c.code.clone(),
            error: match &c.stage {
                Stage::Failed { error } => Some(error.clone()),
                _ => None,
            },
            device: match c.stage {
                Stage::Linked { device } => Some(device),
                _ => None,
            },
            skip_handoff: c.skip_handoff,
        }
    }

    /// The phone whose open ceremony runs on this connection.
    fn open_on(&self, conn_id: u64) -> Option<String> {
        self.by_phone
            .iter()
            .find(|(_, c)| c.conn_id == conn_id && c.stage.is_open())
            .map(|(phone, _)| phone.clone())
    }

    /// The phone's ceremony `id`, if it is still the latest.
    fn current(&mut self, phone: &str, id: u64) -> Option<&mut Ceremony> {
        self.by_phone.get_mut(phone).filter(|c| c.id == id)
    }

    fn is_spent(&self, challenge: &[u8]) -> bool {
        self.spent.iter().any(|c| c[..] == *challenge)
    }

    fn spend(&mut self, challenge: [u8; 32]) {
        self.spent.push_back(challenge);
        while self.spent.len() > SPENT_KEPT {
            self.spent.pop_front();
        }
    }

    /// Ends the phone's ceremony; its challenge can no longer be used.
    fn fail(&mut self, phone: &str, error: String) {
        let Some(c) = self.by_phone.get_mut(phone) else {
            return;
        };
        tracing::debug!("passkey ceremony of {phone} failed: {error}");
        let ended = std::mem::replace(&mut c.stage, Stage::Failed { error });
        if let Stage::AssertionRequired { challenge, .. } = ended {
            self.spend(challenge);
        }
        self.changed.notify_waiters();
    }
}

/// The options `navigator.credentials.get()` takes, as WhatsApp sends them (its member
/// order included).
fn request_options(challenge: &[u8; 32]) -> String {
    use base64::Engine as _;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(challenge);
    format!(
        r#"{{"challenge":"{challenge}","timeout":{},"rpId":"{}","allowCredentials":[],"userVerification":"required","extensions":{{"uvm":true}}}}"#,
        CHALLENGE_TTL.as_millis(),
        webauthn::RP_ID,
    )
}

fn notification(kind: &'static str) -> NodeBuilder {
    NodeBuilder::new("notification")
        .attr("from", "s.whatsapp.net")
        .attr("type", kind)
        .attr("id", new_id())
        .attr("t", t_now())
}

/// Starts the gate on the registration connection holding `qr_ref`, which `phone` just
/// scanned or whose pairing code it just took; `adv_secret` is the secret that exchange
/// gave both sides. Replaces the phone's previous ceremony.
pub fn start(
    core: &mut Core,
    phone: &str,
    qr_ref: &str,
    adv_secret: [u8; 32],
) -> Result<(), PhoneError> {
    let Some(pc) = core.pairing.get(qr_ref) else {
        return Err(PhoneError::UnknownRef(qr_ref.to_string()));
    };
    let (conn_id, tx) = (pc.conn_id, pc.tx.clone());
    let faults = core.faults.passkey.get(phone).copied().unwrap_or_default();
    let ceremonies = &mut core.passkeys;
    // A connection links to one account: a second phone taking its code ends the first's.
    let others: Vec<String> = ceremonies
        .by_phone
        .iter()
        .filter(|(p, c)| *p != phone && c.conn_id == conn_id && c.stage.is_open())
        .map(|(p, _)| p.clone())
        .collect();
    for other in others {
        ceremonies.fail(&other, "another phone took the device's code".into());
    }
    let challenge: [u8; 32] = rand::random();
    let options = request_options(&challenge);
    let mut request = notification("passkey_prologue_request");
    if !faults.omit_options {
        request = request.children([NodeBuilder::new("passkey_request_options")
            .string_content(options.clone())
            .build()]);
    }
    phone::send_node(&tx, &request.build());
    ceremonies.next_id += 1;
    let ceremony = Ceremony {
        id: ceremonies.next_id,
        conn_id,
        tx,
        qr_ref: qr_ref.to_string(),
        adv_secret,
        faults,
        skip_handoff: false,
        code: None,
        stage: Stage::AssertionRequired {
            challenge,
            issued: Instant::now(),
            options,
            pairing_ref: None,
        },
    };
    tracing::info!("linking a device to {phone} needs the owner's passkey");
    ceremonies.by_phone.insert(phone.to_string(), ceremony);
    ceremonies.changed.notify_waiters();
    Ok(())
}

/// The registration connection `conn_id` closed: its ceremony failed.
pub fn disconnected(core: &mut Core, conn_id: u64) {
    while let Some(phone) = core.passkeys.open_on(conn_id) {
        core.passkeys.fail(&phone, "the device disconnected".into());
    }
}

/// How a ceremony step went wrong.
enum Step {
    /// Not a request for this stage: answered 400, nothing changes.
    OutOfStage(String),
    /// A check failed: answered 401, the ceremony ends.
    Refused(String),
}

impl From<Refused> for Step {
    fn from(r: Refused) -> Self {
        Step::Refused(r.to_string())
    }
}

impl From<Broken> for Step {
    fn from(b: Broken) -> Self {
        Step::Refused(b.to_string())
    }
}

fn refused(why: impl Into<String>) -> Step {
    Step::Refused(why.into())
}

/// What the phone does a round trip after the server's answer.
enum Later {
    Continuation(Node),
    Link,
}

/// Handles an IQ of the ceremony from a registration connection; `None` for other IQs.
pub async fn handle_iq(hub: &Arc<Hub>, conn_id: u64, iq: &Node) -> Option<Vec<Reply>> {
    let asks = matches!(attr(iq, "type").as_deref(), Some("get" | "set"));
    if !asks || attr(iq, "xmlns").as_deref() != Some("md") {
        return None;
    }
    let request = children(iq)
        .iter()
        .find(|c| REQUESTS.iter().any(|t| c.tag == *t))?;
    let id = attr(iq, "id").unwrap_or_default();
    let mut core = hub.core.lock().await;
    let Some(phone) = core.passkeys.open_on(conn_id) else {
        tracing::debug!("<{}> on a connection with no passkey ceremony", request.tag);
        return Some(vec![Reply::Node(iq_error(&id, 400, "bad-request"))]);
    };
    let stage_before = core.passkeys.by_phone[&phone].stage.name();
    let outcome = match request.tag.as_ref() {
        "passkey_request_options" => options(&core, &phone).map(|n| (Some(n), None)),
        "ref" => new_ref(&mut core, &phone).map(|n| (Some(n), None)),
        "passkey_prologue" => prologue(&mut core, &phone, request).map(|later| (None, later)),
        "companion_nonce" => nonce(&mut core, &phone, request).map(|()| (None, None)),
        _ => pairing_request(&mut core, &phone, request).map(|()| (None, Some(Later::Link))),
    };
    let reply = match outcome {
        Ok((content, later)) => {
            if let Some(later) = later {
                let ceremony = core.passkeys.by_phone[&phone].id;
                tokio::spawn(answer_later(hub.clone(), phone.clone(), ceremony, later));
            }
            if core.passkeys.by_phone[&phone].stage.name() != stage_before {
                core.passkeys.changed.notify_waiters();
            }
            let answer = iq_result(&id);
            match content {
                Some(node) => answer.children([node]).build(),
                None => answer.build(),
            }
        }
        Err(Step::OutOfStage(why)) => {
            tracing::debug!("<{}> for {phone} does not fit: {why}", request.tag);
            iq_error(&id, 400, "bad-request")
        }
        Err(Step::Refused(why)) => {
            core.passkeys.fail(&phone, why);
            iq_error(&id, 401, "not-authorized")
        }
    };
    Some(vec![Reply::Node(reply)])
}

fn ceremony<'a>(core: &'a mut Core, phone: &str) -> &'a mut Ceremony {
    core.passkeys
        .by_phone
        .get_mut(phone)
        .expect("the caller found the ceremony")
}

fn options(core: &Core, phone: &str) -> Result<Node, Step> {
    match &core.passkeys.by_phone[phone].stage {
        Stage::AssertionRequired { options, .. } => Ok(NodeBuilder::new("passkey_request_options")
            .string_content(options.clone())
            .build()),
        _ => Err(Step::OutOfStage("the assertion was already checked".into())),
    }
}

fn new_ref(core: &mut Core, phone: &str) -> Result<Node, Step> {
    let Stage::AssertionRequired { pairing_ref, .. } = &mut ceremony(core, phone).stage else {
        return Err(Step::OutOfStage("the assertion was already checked".into()));
    };
    let fresh = format!("2@{}{}", new_id(), new_id());
    *pairing_ref = Some(fresh.clone());
    Ok(NodeBuilder::new("ref").bytes(fresh.into_bytes()).build())
}

/// A child's payload, as bytes or as a string.
fn payload<'a>(node: &'a Node, tag: &str) -> Option<&'a [u8]> {
    match &child(node, tag)?.content {
        Some(NodeContent::Bytes(b)) => Some(b),
        Some(NodeContent::String(s)) => Some(s.as_bytes()),
        _ => None,
    }
}

fn required<'a>(node: &'a Node, tag: &str) -> Result<&'a [u8], Step> {
    payload(node, tag).ok_or_else(|| refused(format!("<passkey_prologue> without <{tag}>")))
}

/// `<passkey_prologue>`: the assertion, the companion's ephemeral identity and commitment,
/// and an optional handoff proof. Returns the phone's continuation, unless faulted.
fn prologue(core: &mut Core, phone: &str, request: &Node) -> Result<Option<Later>, Step> {
    let Core {
        snap,
        passkeys,
        changes,
        ..
    } = core;
    let c = passkeys.by_phone.get(phone).expect("the caller found it");
    let Stage::AssertionRequired {
        challenge,
        issued,
        pairing_ref,
        ..
    } = &c.stage
    else {
        return Err(Step::OutOfStage("the assertion was already checked".into()));
    };
    let Some(pairing_ref) = pairing_ref.clone() else {
        return Err(Step::OutOfStage("no <ref/> was handed out yet".into()));
    };
    if issued.elapsed() > CHALLENGE_TTL {
        return Err(refused("the challenge expired"));
    }
    let (challenge, adv_secret) = (*challenge, c.adv_secret);
    let passkey = snap
        .accounts
        .get(phone)
        .and_then(|a| a.passkey.as_ref())
        .ok_or_else(|| refused("the account has no passkey"))?;
    let prologue_payload = required(request, "prologue_payload")?;
    let sign_count = webauthn::verify(
        passkey,
        required(request, "credential_id")?,
        required(request, "webauthn_assertion")?,
        webauthn::Challenge {
            issued: &challenge,
            spent: &|used| passkeys.is_spent(used),
        },
    )?;
    let prologue = shortcake::open_prologue(prologue_payload)?;
    if prologue.pairing_ref != pairing_ref {
        return Err(refused(format!(
            "the prologue names ref {:?}, not the one handed out",
            prologue.pairing_ref
        )));
    }
    let proof = payload(request, "pairing_handoff_proof");
    if let Some(proof) = proof {
        shortcake::check_handoff_proof(&adv_secret, prologue_payload, proof)?;
    }

    // Accepted. WhatsApp keeps the counter; the challenge is used up.
    let acc = snap.accounts.get_mut(phone).expect("found above");
    if let Some(p) = acc.passkey.as_mut() {
        p.sign_count = sign_count;
    }
    changes.account(phone);
    passkeys.spend(challenge);
    let handshake = Handshake {
        prologue,
        primary: KeyPair::generate(&mut rand::rng()),
        primary_nonce: rand::random(),
        continued: false,
    };
    let continuation = notification("crsc_continuation")
        .children([NodeBuilder::new("primary_ephemeral_identity")
            .bytes(shortcake::primary_identity(
                &handshake.primary,
                &handshake.primary_nonce,
            ))
            .build()])
        .build();
    let c = passkeys.by_phone.get_mut(phone).expect("found above");
    c.skip_handoff = proof.is_some();
    let faults = c.faults;
    c.stage = Stage::AwaitingNonce(Box::new(handshake));
    tracing::info!("the owner's passkey let a device of {phone} on");
    if faults.no_continuation {
        tracing::info!("fault: the phone of {phone} will not answer");
        return Ok(None);
    }
    Ok(Some(Later::Continuation(continuation)))
}

/// `<companion_nonce>`: it must open the commitment; then the phone shows the code.
fn nonce(core: &mut Core, phone: &str, request: &Node) -> Result<(), Step> {
    let c = ceremony(core, phone);
    let Stage::AwaitingNonce(h) = &c.stage else {
        return Err(Step::OutOfStage("not waiting for a nonce".into()));
    };
    if !h.continued {
        return Err(Step::OutOfStage(
            "the phone's ephemeral identity has not gone out".into(),
        ));
    }
    let companion_nonce = match &request.content {
        Some(NodeContent::Bytes(b)) if b.len() == 32 => b.as_slice(),
        _ => return Err(refused("the companion nonce is not 32 bytes")),
    };
    shortcake::check_commitment(&h.prologue, companion_nonce)?;
    let code = shortcake::verification_code(
        companion_nonce,
        h.primary.public_key.public_key_bytes(),
        &h.primary_nonce,
    );
    let key = shortcake::pairing_key(&h.primary, &h.prologue)?;
    tracing::info!("the phone of {phone} shows {code}");
    c.code = Some(code);
    c.stage = Stage::CodeShown { key };
    Ok(())
}

/// `<encrypted_pairing_request>`: the companion's keys, which must be this connection's,
/// and the new ADV secret `pair-success` goes out under.
fn pairing_request(core: &mut Core, phone: &str, request: &Node) -> Result<(), Step> {
    let c = &core.passkeys.by_phone[phone];
    let Stage::CodeShown { key } = c.stage else {
        return Err(Step::OutOfStage("no code was shown".into()));
    };
    let Some(pc) = core.pairing.get(&c.qr_ref) else {
        return Err(refused("the device is gone"));
    };
    let wrapped = match &request.content {
        Some(NodeContent::Bytes(b)) => b.as_slice(),
        _ => return Err(refused("the pairing request carries no bytes")),
    };
    let inner = shortcake::open_pairing_request(&key, wrapped)?;
    if inner.noise_public != pc.noise_pub {
        return Err(refused(
            "the pairing request's noise key is not the connection's",
        ));
    }
    if inner.identity_public != pc.identity {
        return Err(refused(
            "the pairing request's identity key is not the connection's",
        ));
    }
    let adv_secret = inner.adv_secret;
    ceremony(core, phone).stage = Stage::Linking { adv_secret };
    Ok(())
}

/// The phone's answer, a round trip after the server's: sent only if the ceremony is
/// still at the stage that asked for it.
async fn answer_later(hub: Arc<Hub>, phone: String, id: u64, later: Later) {
    tokio::select! {
        _ = tokio::time::sleep(PHONE_ROUND_TRIP) => {}
        _ = hub.shutdown.cancelled() => return,
    }
    let mut core = hub.core.lock().await;
    let Some(c) = core.passkeys.current(&phone, id) else {
        return;
    };
    match (later, &mut c.stage) {
        (Later::Continuation(node), Stage::AwaitingNonce(h)) => {
            h.continued = true;
            phone::send_node(&c.tx, &node);
        }
        (Later::Link, Stage::Linking { adv_secret }) => {
            let (qr_ref, adv_secret) = (c.qr_ref.clone(), *adv_secret);
            match phone::link(&mut core, &phone, &qr_ref, &adv_secret).await {
                Ok(device) => {
                    if let Some(c) = core.passkeys.current(&phone, id) {
                        c.stage = Stage::Linked { device };
                    }
                    core.passkeys.changed.notify_waiters();
                }
                Err(e) => core.passkeys.fail(&phone, format!("linking failed: {e}")),
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::PairingConn;
    use crate::state::{B64, SignedPreKey, Snapshot};
    use wacore::shortcake::ShortcakeUtils;

    const PHONE: &str = "15550000001";
    const QR_REF: &str = "2@qr";
    const ADV_SECRET: [u8; 32] = [9; 32];

    /// A gated account whose phone just scanned the QR code of connection 7.
    fn scanned(faults: Faults) -> (Core, mpsc::UnboundedReceiver<Outbound>) {
        let mut core = Core::new(Snapshot::default(), std::env::temp_dir());
        let mut acc = phone::new_account(&mut core, PHONE, "Alice").unwrap();
        acc.passkey = Some(webauthn::new_passkey().unwrap());
        core.insert_account(acc);
        core.faults.passkey.insert(PHONE.into(), faults);
        let (tx, rx) = mpsc::unbounded_channel();
        let keys = SignedPreKey {
            id: 1,
            public: B64(vec![5; 33]),
            signature: B64(vec![6; 64]),
        };
        let pc = PairingConn {
            conn_id: 7,
            tx,
            noise_pub: [1; 32],
            identity: [2; 32],
            registration_id: 1,
            signed_prekey: keys,
            push_name: String::new(),
            platform: "web".into(),
            paired: None,
        };
        core.pairing.insert(QR_REF.into(), pc);
        start(&mut core, PHONE, QR_REF, ADV_SECRET).unwrap();
        (core, rx)
    }

    /// The `<passkey_prologue>` a whatsapp-rust companion sends, with a handoff proof
    /// under `handoff_secret` if given.
    fn prologue_node(core: &mut Core, handoff_secret: Option<[u8; 32]>) -> Node {
        let pairing_ref = match new_ref(core, PHONE).ok().unwrap().content {
            Some(NodeContent::Bytes(b)) => String::from_utf8(b).unwrap(),
            _ => panic!("a ref"),
        };
        let Stage::AssertionRequired { options, .. } = &core.passkeys.by_phone[PHONE].stage else {
            panic!("a new ceremony asks for an assertion");
        };
        let options: serde_json::Value = serde_json::from_str(options).unwrap();
        let passkey = core.account_mut(PHONE).unwrap().passkey.as_mut().unwrap();
        let assertion = webauthn::assert(passkey, &options, None).unwrap();
        let identity = ShortcakeUtils::build_companion_ephemeral_identity(
            &[3; 32],
            waproto::whatsapp::device_props::PlatformType::CHROME,
            &pairing_ref,
        );
        let commitment = ShortcakeUtils::commitment_hash(&identity, &[4; 32]);
        let payload = ShortcakeUtils::build_prologue_payload(&identity, &commitment);
        let mut kids = vec![
            NodeBuilder::new("credential_id")
                .bytes(passkey.credential_id.0.clone())
                .build(),
            NodeBuilder::new("webauthn_assertion")
                .bytes(assertion.to_string().into_bytes())
                .build(),
            NodeBuilder::new("prologue_payload")
                .bytes(payload.clone())
                .build(),
        ];
        if let Some(secret) = handoff_secret {
            let key = ShortcakeUtils::derive_pairing_handoff_hmac_key(&secret).unwrap();
            let proof = ShortcakeUtils::compute_pairing_handoff_proof(&key, &payload);
            kids.push(
                NodeBuilder::new("pairing_handoff_proof")
                    .bytes(proof.to_vec())
                    .build(),
            );
        }
        NodeBuilder::new("passkey_prologue").children(kids).build()
    }

    fn refusal(outcome: Result<Option<Later>, Step>) -> String {
        match outcome {
            Err(Step::Refused(why)) => why,
            Err(Step::OutOfStage(why)) => panic!("out of stage: {why}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn a_handoff_proof_under_the_scanned_secret_skips_the_code_step() {
        let (mut core, _rx) = scanned(Faults::default());
        let node = prologue_node(&mut core, Some(ADV_SECRET));
        let later = prologue(&mut core, PHONE, &node).ok().unwrap();
        assert!(matches!(later, Some(Later::Continuation(_))));
        let screen = core.passkeys.screen(PHONE);
        assert_eq!(
            (screen.stage, screen.skip_handoff),
            ("awaiting_nonce", true)
        );

        let (mut core, _rx) = scanned(Faults::default());
        let node = prologue_node(&mut core, Some([8; 32]));
        let why = refusal(prologue(&mut core, PHONE, &node));
        assert!(why.contains("handoff proof"), "{why}");
    }

    #[test]
    fn a_prologue_after_the_challenge_expired_is_refused() {
        let (mut core, _rx) = scanned(Faults::default());
        let node = prologue_node(&mut core, None);
        if let Stage::AssertionRequired { issued, .. } = &mut ceremony(&mut core, PHONE).stage {
            *issued = Instant::now()
                .checked_sub(CHALLENGE_TTL + Duration::from_secs(1))
                .unwrap();
        }
        let why = refusal(prologue(&mut core, PHONE, &node));
        assert!(why.contains("expired"), "{why}");
    }

    #[test]
    fn the_no_continuation_fault_accepts_the_prologue_and_the_phone_stays_silent() {
        let faults = Faults {
            no_continuation: true,
            ..Faults::default()
        };
        let (mut core, _rx) = scanned(faults);
        let node = prologue_node(&mut core, None);
        let later = prologue(&mut core, PHONE, &node).ok().unwrap();
        assert!(later.is_none(), "nothing is scheduled");
        assert_eq!(core.passkeys.screen(PHONE).stage, "awaiting_nonce");
    }

    #[test]
    fn the_omit_options_fault_sends_the_request_without_them() {
        let (_core, mut rx) = scanned(Faults {
            omit_options: true,
            ..Faults::default()
        });
        let Ok(Outbound::Node(bytes)) = rx.try_recv() else {
            panic!("the request went out");
        };
        let data = wacore_binary::util::unpack(&bytes).unwrap();
        let sent = wacore_binary::marshal::unmarshal_ref(&data)
            .unwrap()
            .to_owned();
        assert_eq!(
            attr(&sent, "type").as_deref(),
            Some("passkey_prologue_request")
        );
        assert!(child(&sent, "passkey_request_options").is_none());
    }

    #[test]
    fn the_options_are_what_whatsapp_sends() {
        let options: serde_json::Value =
            serde_json::from_str(&request_options(&[0xfb; 32])).unwrap();
        assert_eq!(
            options,
            serde_json::json!({
                "challenge": "-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_s",
                "timeout": 600000,
                "rpId": "whatsapp.com",
                "allowCredentials": [],
                "userVerification": "required",
                "extensions": {"uvm": true},
            })
        );
    }
}
