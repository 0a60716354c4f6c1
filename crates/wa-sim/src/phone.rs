//! The virtual phones: device 0 of every account, simulated in-process.
//!
//! A phone does what the app on a user's phone does: it owns the account's
//! identity key, scans QR codes (signing the companion's ADV identity), shares
//! app-state keys with new companions, and sends and receives end-to-end
//! encrypted messages (Signal sessions, padding, media encryption and upload,
//! own-device fan-out). Errors are [`PhoneError`]; the admin API maps them to
//! HTTP answers.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wacore::download::{DownloadUtils, MediaType};
use wacore::messages::MessageUtils;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};
use wacore_libsignal::protocol::ProtocolAddress;
use waproto::buffa::{Message as _, MessageField};
use waproto::whatsapp as wa;

use crate::hub::{Core, new_id, t_now};
use crate::journal::Change;
use crate::signal::{self, SignalError};
use crate::state::{
    Account, B64, DeviceRecord, MediaMeta, MediaSummary, OUTBOX_KEPT, PhoneContact, PhoneLocation,
    PhoneMessage, PhonePoll, PhoneReaction, PhoneVote, QueuedStanza, SentCopy, now_secs,
};

/// Why a phone action failed.
#[derive(Debug, thiserror::Error)]
pub enum PhoneError {
    #[error("no account with phone number {0}")]
    UnknownAccount(String),
    #[error("the QR code is not valid: {0}")]
    BadQr(String),
    #[error("no device is showing the QR code with ref {0} (expired, or already scanned)")]
    UnknownRef(String),
    #[error("account {0} has no device {1}")]
    UnknownDevice(String, u16),
    #[error("invalid media: {0}")]
    BadMedia(String),
    #[error("the phone {0} is offline")]
    Offline(String),
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error(transparent)]
    Group(#[from] crate::groups::GroupError),
    #[error("storing media: {0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, PhoneError>;

/// Creates an account with a phone holding a fresh Signal identity.
pub fn new_account(core: &mut Core, phone: &str, name: &str) -> Result<Account> {
    let (secrets, record) = signal::generate_phone()?;
    core.snap.next_lid += 1;
    // LIDs are opaque numbers unrelated to the phone number, as on WhatsApp;
    // random so that two simulators never hand out the same one.
    let lid = loop {
        let candidate = rand::random_range(100_000_000_000_000u64..1_000_000_000_000_000);
        if !core.lid_to_phone.contains_key(&candidate.to_string()) {
            break candidate.to_string();
        }
    };
    let mut devices = std::collections::BTreeMap::new();
    devices.insert(0, record);
    Ok(Account {
        phone: phone.to_string(),
        lid,
        name: name.to_string(),
        next_device_id: 1,
        next_key_index: 1,
        devices,
        revoked_noise: Vec::new(),
        secrets,
        created_at: now_secs(),
        passkey: None,
        privacy: Default::default(),
        blocked: Default::default(),
        offline: false,
        profile: Default::default(),
        history: None,
        app_state: Default::default(),
        nct_salt: Some(crate::tokens::new_salt()),
        tokens_issued: Default::default(),
        restrictions: Default::default(),
    })
}

/// The owner changed the about text: WhatsApp tells the people the account chats with
/// (here: those in its phone's history) with `<notification type="status"><set>`,
/// unless the account hides its about (`status` privacy `none`).
pub fn about_changed(core: &mut Core, phone: &str, about: &str) {
    if crate::iq::hides(core, phone, "status") {
        return;
    }
    let Some(acc) = core.account(phone) else {
        return;
    };
    let mut peers = std::collections::BTreeSet::new();
    for m in acc.secrets.messages.as_slice() {
        let peer = if m.from_me { &m.to } else { &m.from };
        let peer = peer.split(':').next().unwrap_or(peer);
        if peer != phone && !peer.contains('@') {
            peers.insert(peer.to_string());
        }
    }
    for peer in peers {
        for device in core.companions(&peer) {
            let id = new_id();
            let node = NodeBuilder::new("notification")
                .attr("from", Jid::pn(phone.to_string()))
                .attr("type", "status")
                .attr("id", id.clone())
                .attr("t", t_now())
                .children([NodeBuilder::new("set")
                    .string_content(about.to_string())
                    .build()])
                .build();
            core.deliver_to_companion(&peer, device, &id, &node);
        }
    }
}

/// Refuses what only a phone that is online can do (scan, send, read).
pub fn ensure_online(core: &Core, phone: &str) -> Result<()> {
    match core.account(phone) {
        None => Err(PhoneError::UnknownAccount(phone.to_string())),
        Some(a) if a.offline => Err(PhoneError::Offline(phone.to_string())),
        Some(_) => Ok(()),
    }
}

/// Takes the phone offline or brings it back. Back online, it handles what waited for it
/// in order (messages answered with their delivery receipts, receipts applied to its sent
/// messages) and returns how many stanzas that was.
pub async fn set_online(core: &mut Core, phone: &str, online: bool) -> Result<usize> {
    let acc = core
        .account_mut(phone)
        .ok_or_else(|| PhoneError::UnknownAccount(phone.to_string()))?;
    acc.offline = !online;
    if !online {
        return Ok(0);
    }
    let waiting: Vec<QueuedStanza> = acc
        .devices
        .get(&0)
        .map(|d| d.queue.iter().cloned().collect())
        .unwrap_or_default();
    for queued in &waiting {
        let node = match wacore_binary::marshal::unmarshal_ref(&queued.node.0[1..]) {
            Ok(n) => n.to_owned(),
            Err(e) => {
                tracing::error!("corrupt stanza queued for phone {phone}: {e}");
                continue;
            }
        };
        let from = attr(&node, "from").and_then(|f| f.parse::<Jid>().ok());
        match node.tag.as_ref() {
            "message" => {
                let Some(from) = from else { continue };
                if crate::groups::is_group(&from) {
                    let sender = crate::conn::jid_attr(&node, "participant")
                        .and_then(|p| core.phone_of(&p).map(|s| (s, p.device)));
                    if let Some((sender, device)) = sender {
                        let gid = from.user.to_string();
                        crate::groups::phone::receive(core, phone, (&sender, device), &gid, &node)
                            .await;
                    }
                    continue;
                }
                let Some(sender) = core.phone_of(&from) else {
                    continue;
                };
                receive(core, phone, (&sender, from.device), &node).await;
            }
            "receipt" => {
                let kind = attr(&node, "type");
                deliver_receipt(core, (phone, 0), &node, &queued.id, kind.as_deref());
            }
            _ => {}
        }
    }
    let ids: Vec<String> = waiting.into_iter().map(|q| q.id).collect();
    core.acknowledge(phone, 0, &ids);
    Ok(ids.len())
}

/// The ADV `raw_id` of an account: stable for its lifetime.
fn raw_id(acc: &Account) -> u32 {
    (acc.created_at as u32) | 1
}

/// `ADVSignedKeyIndexList` for the account's current companions, signed by
/// the account key (clients read, but do not verify, it).
pub fn key_index_list(acc: &Account) -> Vec<u8> {
    let valid: Vec<u32> = acc
        .devices
        .values()
        .filter(|d| d.id != 0)
        .map(|d| d.key_index)
        .collect();
    let details = wa::ADVKeyIndexList {
        raw_id: Some(raw_id(acc)),
        timestamp: Some(acc.created_at),
        current_index: Some(acc.next_key_index.saturating_sub(1)),
        valid_indexes: valid,
        account_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();
    let signature = signal::identity_pair(&acc.secrets)
        .ok()
        .and_then(|kp| {
            let msg = [&[6u8, 2][..], &details].concat();
            kp.private_key
                .calculate_signature(&msg, &mut rand::rng())
                .ok()
        })
        .map(|s| s.to_vec());
    wa::ADVSignedKeyIndexList {
        details: Some(details),
        account_signature: signature,
        account_signature_key: Some(acc.secrets.identity_public.0.clone()),
    }
    .encode_to_vec()
}

/// What a scan, or a pairing code the phone took, led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkOutcome {
    /// Linked as this device.
    Linked(u16),
    /// The account is gated: the device must first present the owner's passkey.
    PasskeyRequired,
}

/// The phone scans a QR code: links the showing connection as a new device, or
/// asks it for the owner's passkey first.
pub async fn scan(core: &mut Core, phone: &str, qr: &str) -> Result<LinkOutcome> {
    let (pair_ref, noise_pub, identity_pub, adv_secret) = parse_qr(qr)?;
    ensure_online(core, phone)?;
    let Some(pc) = core.pairing.get(&pair_ref) else {
        return Err(PhoneError::UnknownRef(pair_ref));
    };
    if pc.paired.is_some() {
        return Err(PhoneError::UnknownRef(pair_ref));
    }
    if pc.noise_pub != noise_pub || pc.identity != identity_pub {
        return Err(PhoneError::BadQr(
            "its keys do not match the device showing it".into(),
        ));
    }
    link_or_gate(core, phone, &pair_ref, adv_secret).await
}

/// Links the registration connection holding `pair_ref` (see [`link`]), or, for an
/// account gated with a passkey, starts the passkey ceremony that links it later.
pub async fn link_or_gate(
    core: &mut Core,
    phone: &str,
    pair_ref: &str,
    adv_secret: [u8; 32],
) -> Result<LinkOutcome> {
    let gated = core
        .account(phone)
        .ok_or_else(|| PhoneError::UnknownAccount(phone.to_string()))?
        .passkey
        .is_some();
    if !gated {
        return link(core, phone, pair_ref, &adv_secret)
            .await
            .map(LinkOutcome::Linked);
    }
    if is_linked(core, pair_ref) {
        return Err(PhoneError::UnknownRef(pair_ref.to_string()));
    }
    crate::passkey::start(core, phone, pair_ref, adv_secret)?;
    Ok(LinkOutcome::PasskeyRequired)
}

/// Whether the connection holding `pair_ref` already became a device (it shows several
/// refs and may also wait for a code: it becomes one device at most).
fn is_linked(core: &Core, pair_ref: &str) -> bool {
    let Some(pc) = core.pairing.get(pair_ref) else {
        return false;
    };
    core.pairing
        .values()
        .any(|p| p.conn_id == pc.conn_id && p.paired.is_some())
}

/// Links the registration connection holding `pair_ref` to the account of
/// `phone` as a new device: signs its identity, sends `pair-success` (with
/// the HMAC under `adv_secret`, the secret the QR code or the link-code
/// exchange gave both sides) and shares the app-state keys. Returns the new
/// device id.
pub async fn link(core: &mut Core, phone: &str, pair_ref: &str, adv_secret: &[u8]) -> Result<u16> {
    if core.account(phone).is_none() {
        return Err(PhoneError::UnknownAccount(phone.to_string()));
    }
    if !core.pairing.contains_key(pair_ref) || is_linked(core, pair_ref) {
        return Err(PhoneError::UnknownRef(pair_ref.to_string()));
    }
    let pc = &core.pairing[pair_ref];
    let noise_pub = pc.noise_pub;
    let identity_pub = pc.identity;
    let registration_id = pc.registration_id;
    let signed_prekey = pc.signed_prekey.clone();
    let push_name = pc.push_name.clone();
    let platform = pc.platform.clone();
    let tx = pc.tx.clone();

    let acc = core.account_mut(phone).expect("checked above");
    let device = acc.next_device_id;
    acc.next_device_id += 1;
    let key_index = acc.next_key_index;
    acc.next_key_index += 1;
    let kp = signal::identity_pair(&acc.secrets)?;
    let details = wa::ADVDeviceIdentity {
        raw_id: Some(raw_id(acc)),
        timestamp: Some(now_secs()),
        key_index: Some(key_index),
        account_type: Some(wa::ADVEncryptionType::E2EE),
        device_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();
    let to_sign = [&[6u8, 0][..], &details, &identity_pub].concat();
    let account_signature = kp
        .private_key
        .calculate_signature(&to_sign, &mut rand::rng())
        .map_err(SignalError::from)?;
    let signed = wa::ADVSignedDeviceIdentity {
        details: Some(details),
        account_signature_key: Some(kp.public_key.public_key_bytes().to_vec()),
        account_signature: Some(account_signature.to_vec()),
        device_signature: None,
    }
    .encode_to_vec();
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(adv_secret).expect("HMAC takes any key length");
    mac.update(&signed);
    let container = wa::ADVSignedDeviceIdentityHMAC {
        details: Some(signed),
        hmac: Some(mac.finalize().into_bytes().to_vec()),
        account_type: Some(wa::ADVEncryptionType::E2EE),
    }
    .encode_to_vec();

    acc.devices.insert(
        device,
        DeviceRecord {
            id: device,
            noise_pub: Some(B64(noise_pub.to_vec())),
            key_index,
            registration_id,
            identity: B64(identity_pub.to_vec()),
            signed_prekey: Some(signed_prekey),
            prekeys: Default::default(),
            device_identity: None,
            push_name,
            platform,
            queue: Default::default(),
        },
    );
    let lid = acc.lid.clone();
    let account_name = acc.name.clone();
    if let Some(pc) = core.pairing.get_mut(pair_ref) {
        pc.paired = Some((phone.to_string(), device));
    }

    let success = NodeBuilder::new("iq")
        .attr("from", "s.whatsapp.net")
        .attr("type", "set")
        .attr("id", new_id())
        .attr("xmlns", "md")
        .attr("t", t_now())
        .children([NodeBuilder::new("pair-success")
            .children([
                NodeBuilder::new("device-identity").bytes(container).build(),
                NodeBuilder::new("device")
                    .attr("jid", Jid::pn_device(phone.to_string(), device))
                    .attr("lid", Jid::lid_device(lid, device))
                    .build(),
                NodeBuilder::new("platform").attr("name", "android").build(),
                // The account's name. WhatsApp sends `<biz>` to business accounts only;
                // other companions learn their push name from the `setting_pushName`
                // app-state mutation, which this simulator does not serve. A client
                // without a push name takes the first-login path on every connection
                // (whatsapp-rust waits up to 10 s for an app-state key share before it
                // reports itself connected), so every reconnect would cost 10 s that it
                // does not cost against WhatsApp.
                NodeBuilder::new("biz").attr("name", account_name).build(),
            ])
            .build()])
        .build();
    send_node(&tx, &success);

    // Like the app: hand the new companion the app-state keys right away, so
    // it need not wait for them before reporting itself connected.
    let share = wa::Message {
        protocol_message: MessageField::some(wa::message::ProtocolMessage {
            r#type: Some(wa::message::protocol_message::Type::AppStateSyncKeyShare),
            app_state_sync_key_share: MessageField::some(share_for(core, phone)),
            ..Default::default()
        }),
        ..Default::default()
    };
    if let Err(e) = send_to_device(core, phone, phone, device, &share, None, "text").await {
        tracing::warn!("app-state key share to {phone}:{device} failed: {e}");
    }
    // Then its chats, by history sync, as the app does for every new companion.
    let acc = core.account(phone).expect("checked above");
    let names = |number: &str| core.account(number).map(|a| a.name.clone());
    let tokens = |number: &str| crate::tokens::valid_grant(core, number, phone).cloned();
    let history = crate::history::notifications(acc, &names, &tokens);
    for message in history {
        if let Err(e) = send_to_device(core, phone, phone, device, &message, None, "text").await {
            tracing::warn!("history sync to {phone}:{device} failed: {e}");
            break;
        }
    }
    Ok(device)
}

fn share_for(core: &Core, phone: &str) -> wa::message::AppStateSyncKeyShare {
    let acc = core.account(phone).expect("caller checked the account");
    let indexes: Vec<u32> = acc.devices.values().map(|d| d.key_index).collect();
    wa::message::AppStateSyncKeyShare {
        keys: vec![wa::message::AppStateSyncKey {
            key_id: MessageField::some(wa::message::AppStateSyncKeyId {
                key_id: Some(acc.secrets.app_state_key_id.0.clone()),
            }),
            key_data: MessageField::some(wa::message::AppStateSyncKeyData {
                key_data: Some(acc.secrets.app_state_key.0.clone()),
                fingerprint: MessageField::some(wa::message::AppStateSyncKeyFingerprint {
                    raw_id: Some(raw_id(acc)),
                    current_index: Some(0),
                    device_indexes: indexes,
                }),
                timestamp: Some(acc.created_at as i64 * 1000),
            }),
        }],
    }
}

/// The fields of a QR code: ref, noise key, identity key, ADV secret.
type QrParts = (String, [u8; 32], [u8; 32], [u8; 32]);

/// Where current WhatsApp Web puts its QR payload: in the fragment of a link that opens
/// *Linked devices* on the phone.
const QR_LINK: &str = "https://wa.me/settings/linked_devices#";

/// The `ref,noise,identity,adv_secret[,type]` payload of a QR code, in either form WhatsApp
/// Web shows it: bare, or as the fragment of [`QR_LINK`].
pub fn qr_payload(qr: &str) -> &str {
    let qr = qr.trim();
    qr.strip_prefix(QR_LINK).unwrap_or(qr)
}

/// `ref,noise,identity,adv_secret[,type]` (bare or in a link) -> parts.
fn parse_qr(qr: &str) -> Result<QrParts> {
    let parts: Vec<&str> = qr_payload(qr).split(',').collect();
    if parts.len() < 4 {
        return Err(PhoneError::BadQr(format!(
            "expected at least 4 comma-separated fields, got {}",
            parts.len()
        )));
    }
    let key = |s: &str, what: &str| -> Result<[u8; 32]> {
        STANDARD
            .decode(s)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| PhoneError::BadQr(format!("{what} is not 32 bytes of base64")))
    };
    Ok((
        parts[0].to_string(),
        key(parts[1], "noise key")?,
        key(parts[2], "identity key")?,
        key(parts[3], "ADV secret")?,
    ))
}

pub fn send_node(tx: &tokio::sync::mpsc::UnboundedSender<crate::hub::Outbound>, node: &Node) {
    match wacore_binary::marshal::marshal(node) {
        Ok(bytes) => {
            if tx.send(crate::hub::Outbound::Node(bytes)).is_err() {
                tracing::debug!("connection closed before a stanza could be sent");
            }
        }
        Err(e) => tracing::error!("cannot marshal stanza: {e}"),
    }
}

/// Content of a message the phone is asked to send.
pub enum Outgoing {
    Text(String),
    /// A text mentioning these phone numbers.
    Mentioning {
        text: String,
        mentions: Vec<String>,
    },
    Media {
        kind: MediaKind,
        mimetype: String,
        file_name: Option<String>,
        caption: Option<String>,
        data: Vec<u8>,
        /// For audio: a voice note (push-to-talk) rather than a file.
        ptt: bool,
        /// Shown once (photos, videos, audio).
        view_once: bool,
    },
    Location(PhoneLocation),
    /// One card is a contact message, several a contacts array.
    Contacts(Vec<PhoneContact>),
    /// A reaction to message `message_id` of the chat with `chat` (a phone number), which
    /// the phone sent itself when `from_me`; an empty emoji takes the reaction back.
    Reaction {
        chat: String,
        message_id: String,
        from_me: bool,
        emoji: String,
    },
    /// New text for message `message_id`, which the phone sent to `chat`.
    Edit {
        chat: String,
        message_id: String,
        text: String,
    },
    /// Deletes message `message_id`, which the phone sent to `chat`, for everyone.
    Revoke {
        chat: String,
        message_id: String,
    },
    /// Any message as given (a kind the simulator has no shape for).
    Raw(Box<wa::Message>),
    /// A poll; `selectable` options may be picked (1: a single choice).
    Poll {
        question: String,
        options: Vec<String>,
        selectable: u32,
    },
    /// A vote in poll `poll_id` of the chat with `chat` (no options: the vote taken back),
    /// encrypted as WhatsApp encrypts votes, with a key drawn from the poll's secret, its
    /// id, its creator and the voter.
    Vote {
        chat: String,
        poll_id: String,
        poll: PhonePoll,
        voter: String,
        options: Vec<String>,
    },
}

/// Media kinds a phone can send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaKind {
    /// Picks the kind from a mimetype, as the app's share sheet does.
    pub fn from_mimetype(mimetype: &str) -> MediaKind {
        if mimetype == "image/webp" {
            MediaKind::Sticker
        } else if mimetype.starts_with("image/") {
            MediaKind::Image
        } else if mimetype.starts_with("video/") {
            MediaKind::Video
        } else if mimetype.starts_with("audio/") {
            MediaKind::Audio
        } else {
            MediaKind::Document
        }
    }

    fn media_type(self) -> MediaType {
        match self {
            MediaKind::Image => MediaType::Image,
            MediaKind::Video => MediaType::Video,
            MediaKind::Audio => MediaType::Audio,
            MediaKind::Document => MediaType::Document,
            MediaKind::Sticker => MediaType::Sticker,
        }
    }

    fn name(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Stores an uploaded (encrypted) blob and returns its direct path.
pub fn store_blob(core: &mut Core, kind: &str, data: &[u8]) -> Result<String> {
    let blobs = core.blobs_dir.clone();
    let digest = hex(&Sha256::digest(data));
    std::fs::create_dir_all(&blobs)?;
    let file = format!("{digest}.enc");
    let path = blobs.join(&file);
    if !path.exists() {
        std::fs::write(&path, data)?;
    }
    let direct_path = format!("/mms/{kind}/{digest}");
    core.add_media(
        direct_path.clone(),
        MediaMeta {
            kind: kind.to_string(),
            size: data.len() as u64,
            file,
            reupload: false,
        },
    );
    Ok(direct_path)
}

/// An outgoing message: protobuf, stanza type, media summary, text or caption.
pub(crate) type Built = (
    wa::Message,
    &'static str,
    Option<MediaSummary>,
    Option<String>,
);

/// Builds the protobuf for an outgoing message, encrypting and uploading
/// media like the app does.
/// A chat's JID in message keys: a group's as it is, a phone number's as a user JID.
fn chat_jid(chat: &str) -> String {
    if chat.ends_with("@g.us") {
        chat.to_string()
    } else {
        Jid::pn(chat.to_string()).to_string()
    }
}

pub(crate) fn build_message(core: &mut Core, media_host: &str, out: Outgoing) -> Result<Built> {
    use wa::message::protocol_message::Type as Protocol;
    let own_key = |chat: String, id: String| {
        MessageField::some(wa::MessageKey {
            remote_jid: Some(chat_jid(&chat)),
            from_me: Some(true),
            id: Some(id),
            participant: None,
        })
    };
    match out {
        Outgoing::Raw(m) => Ok((*m, "text", None, None)),
        Outgoing::Poll {
            question,
            options,
            selectable,
        } => {
            let secret: [u8; 32] = rand::random();
            let poll = wa::message::PollCreationMessage {
                name: Some(question),
                options: options
                    .into_iter()
                    .map(|o| wa::message::poll_creation_message::Option {
                        option_name: Some(o),
                        option_hash: None,
                    })
                    .collect(),
                selectable_options_count: Some(selectable),
                ..Default::default()
            };
            // As the app sends them: v3 for a single choice, the first form otherwise.
            let mut msg = wa::Message {
                message_context_info: MessageField::some(wa::MessageContextInfo {
                    message_secret: Some(secret.to_vec()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            if selectable == 1 {
                msg.poll_creation_message_v3 = MessageField::some(poll);
            } else {
                msg.poll_creation_message = MessageField::some(poll);
            }
            Ok((msg, "poll", None, None))
        }
        Outgoing::Vote {
            chat,
            poll_id,
            poll,
            voter,
            options,
        } => {
            let hashes: Vec<Vec<u8>> = options
                .iter()
                .map(|o| wacore::poll::compute_option_hash(o).to_vec())
                .collect();
            let (payload, iv) = wacore::poll::encrypt_poll_vote_with_secret(
                &hashes,
                &poll.secret.0,
                &poll_id,
                &Jid::pn(poll.creator.clone()).to_string(),
                &Jid::pn(voter.clone()).to_string(),
            )
            .map_err(|e| PhoneError::BadMedia(format!("cannot encrypt the vote: {e}")))?;
            Ok((
                wa::Message {
                    poll_update_message: MessageField::some(wa::message::PollUpdateMessage {
                        poll_creation_message_key: MessageField::some(wa::MessageKey {
                            remote_jid: Some(chat_jid(&chat)),
                            from_me: Some(poll.creator == voter),
                            id: Some(poll_id),
                            participant: None,
                        }),
                        vote: MessageField::some(wa::message::PollEncValue {
                            enc_payload: Some(payload),
                            enc_iv: Some(iv.to_vec()),
                        }),
                        sender_timestamp_ms: Some(now_secs() as i64 * 1000),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "poll",
                None,
                None,
            ))
        }
        Outgoing::Edit {
            chat,
            message_id,
            text,
        } => Ok((
            wa::Message {
                protocol_message: MessageField::some(wa::message::ProtocolMessage {
                    key: own_key(chat, message_id),
                    r#type: Some(Protocol::MessageEdit),
                    edited_message: MessageField::some(wa::Message {
                        conversation: Some(text),
                        ..Default::default()
                    }),
                    timestamp_ms: Some(now_secs() as i64 * 1000),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "text",
            None,
            None,
        )),
        Outgoing::Revoke { chat, message_id } => Ok((
            wa::Message {
                protocol_message: MessageField::some(wa::message::ProtocolMessage {
                    key: own_key(chat, message_id),
                    r#type: Some(Protocol::Revoke),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "text",
            None,
            None,
        )),
        Outgoing::Reaction {
            chat,
            message_id,
            from_me,
            emoji,
        } => Ok((
            wa::Message {
                reaction_message: MessageField::some(wa::message::ReactionMessage {
                    key: MessageField::some(wa::MessageKey {
                        remote_jid: Some(chat_jid(&chat)),
                        from_me: Some(from_me),
                        id: Some(message_id),
                        participant: None,
                    }),
                    text: Some(emoji),
                    sender_timestamp_ms: Some(now_secs() as i64 * 1000),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "reaction",
            None,
            None,
        )),
        Outgoing::Location(l) => Ok((
            wa::Message {
                location_message: MessageField::some(wa::message::LocationMessage {
                    degrees_latitude: Some(l.latitude),
                    degrees_longitude: Some(l.longitude),
                    name: l.name,
                    address: l.address,
                    ..Default::default()
                }),
                ..Default::default()
            },
            "media",
            None,
            None,
        )),
        Outgoing::Contacts(cards) => {
            let mut cards: Vec<wa::message::ContactMessage> = cards
                .into_iter()
                .map(|c| wa::message::ContactMessage {
                    display_name: c.name,
                    vcard: Some(c.vcard),
                    ..Default::default()
                })
                .collect();
            let mut msg = wa::Message::default();
            if cards.len() == 1 {
                msg.contact_message = MessageField::some(cards.remove(0));
            } else {
                msg.contacts_array_message =
                    MessageField::some(wa::message::ContactsArrayMessage {
                        display_name: Some(format!("{} contacts", cards.len())),
                        contacts: cards,
                        ..Default::default()
                    });
            }
            Ok((msg, "media", None, None))
        }
        Outgoing::Text(text) => Ok((
            wa::Message {
                conversation: Some(text.clone()),
                ..Default::default()
            },
            "text",
            None,
            Some(text),
        )),
        Outgoing::Mentioning { text, mentions } => Ok((
            wa::Message {
                extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                    text: Some(text.clone()),
                    context_info: MessageField::some(wa::ContextInfo {
                        mentioned_jid: mentions
                            .into_iter()
                            .map(|p| Jid::pn(p).to_string())
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "text",
            None,
            Some(text),
        )),
        Outgoing::Media {
            kind,
            mimetype,
            file_name,
            caption,
            data,
            ptt,
            view_once,
        } => {
            let enc = wacore::upload::encrypt_media(&data, kind.media_type())
                .map_err(|e| PhoneError::BadMedia(e.to_string()))?;
            let upload_kind = match kind {
                MediaKind::Sticker => "image",
                k => k.name(),
            };
            let direct_path = store_blob(core, upload_kind, &enc.data_to_upload)?;
            let url = format!("https://{media_host}{direct_path}");
            let len = data.len() as u64;
            let ts = now_secs() as i64;
            let mut msg = wa::Message::default();
            match kind {
                MediaKind::Image => {
                    msg.image_message = MessageField::some(wa::message::ImageMessage {
                        url: Some(url),
                        mimetype: Some(mimetype.clone()),
                        caption: caption.clone(),
                        file_sha256: Some(enc.file_sha256.to_vec()),
                        file_length: Some(len),
                        media_key: Some(enc.media_key.to_vec()),
                        file_enc_sha256: Some(enc.file_enc_sha256.to_vec()),
                        direct_path: Some(direct_path),
                        media_key_timestamp: Some(ts),
                        view_once: view_once.then_some(true),
                        ..Default::default()
                    })
                }
                MediaKind::Video => {
                    msg.video_message = MessageField::some(wa::message::VideoMessage {
                        url: Some(url),
                        mimetype: Some(mimetype.clone()),
                        caption: caption.clone(),
                        file_sha256: Some(enc.file_sha256.to_vec()),
                        file_length: Some(len),
                        media_key: Some(enc.media_key.to_vec()),
                        file_enc_sha256: Some(enc.file_enc_sha256.to_vec()),
                        direct_path: Some(direct_path),
                        media_key_timestamp: Some(ts),
                        view_once: view_once.then_some(true),
                        ..Default::default()
                    })
                }
                MediaKind::Audio => {
                    msg.audio_message = MessageField::some(wa::message::AudioMessage {
                        url: Some(url),
                        mimetype: Some(mimetype.clone()),
                        ptt: Some(ptt),
                        file_sha256: Some(enc.file_sha256.to_vec()),
                        file_length: Some(len),
                        media_key: Some(enc.media_key.to_vec()),
                        file_enc_sha256: Some(enc.file_enc_sha256.to_vec()),
                        direct_path: Some(direct_path),
                        media_key_timestamp: Some(ts),
                        view_once: view_once.then_some(true),
                        ..Default::default()
                    })
                }
                MediaKind::Document => {
                    msg.document_message = MessageField::some(wa::message::DocumentMessage {
                        url: Some(url),
                        mimetype: Some(mimetype.clone()),
                        title: file_name.clone(),
                        file_name: file_name.clone(),
                        caption: caption.clone(),
                        file_sha256: Some(enc.file_sha256.to_vec()),
                        file_length: Some(len),
                        media_key: Some(enc.media_key.to_vec()),
                        file_enc_sha256: Some(enc.file_enc_sha256.to_vec()),
                        direct_path: Some(direct_path),
                        media_key_timestamp: Some(ts),
                        ..Default::default()
                    })
                }
                MediaKind::Sticker => {
                    msg.sticker_message = MessageField::some(wa::message::StickerMessage {
                        url: Some(url),
                        mimetype: Some(mimetype.clone()),
                        file_sha256: Some(enc.file_sha256.to_vec()),
                        file_length: Some(len),
                        media_key: Some(enc.media_key.to_vec()),
                        file_enc_sha256: Some(enc.file_enc_sha256.to_vec()),
                        direct_path: Some(direct_path),
                        media_key_timestamp: Some(ts),
                        ..Default::default()
                    })
                }
            }
            let summary = MediaSummary {
                kind: kind.name().to_string(),
                mimetype,
                file_name,
                size: len,
                sha256: hex(&Sha256::digest(&data)),
                error: None,
            };
            Ok((msg, "media", Some(summary), caption))
        }
    }
}

/// The phone of `from` sends a message to the account `to`: to every device
/// of `to`, and (wrapped as "sent from my phone") to `from`'s companions.
/// Returns the message id.
pub async fn send(
    core: &mut Core,
    media_host: &str,
    from: &str,
    to: &str,
    out: Outgoing,
) -> Result<PhoneMessage> {
    ensure_online(core, from)?;
    if to.ends_with("@g.us") {
        let gid = crate::groups::group_id_of(to);
        return crate::groups::phone::send(core, media_host, from, &gid, out).await;
    }
    let Some(target) = core.account(to) else {
        return Err(PhoneError::UnknownAccount(to.to_string()));
    };
    let target_devices: Vec<u16> = target.devices.keys().copied().collect();
    let built = build_message(core, media_host, out)?;
    let id = format!("3EB0{}", &new_id()[..16]);
    let record = keep_sent(core, from, to, &id, &built);
    let (message, stanza_type, _, _) = built;
    let media_type = media_type_attr(&message);
    for device in target_devices {
        if let Err(e) =
            send_to_device(core, from, to, device, &message, Some(&id), stanza_type).await
        {
            tracing::warn!("phone {from} could not encrypt for {to}:{device}: {e}");
        }
    }
    if from != to {
        let dsm = wacore::messages::wrap_device_sent(
            message.clone(),
            Jid::pn(to.to_string()).to_string(),
        );
        for device in core.companions(from) {
            if let Err(e) = send_to_device_with(
                core,
                from,
                from,
                device,
                &dsm,
                &id,
                stanza_type,
                Some(to),
                media_type,
            )
            .await
            {
                tracing::warn!("phone {from} could not encrypt for its device {device}: {e}");
            }
        }
        crate::tokens::after_phone_send(core, from, to);
    }
    Ok(record)
}

/// Records message `id` the phone sends to `to` (an account, or a group JID) as its app
/// shows it, applies what it does to other messages (an edit, a revoke, a reaction, a vote),
/// and keeps it as sent for retries. Returns the record.
pub(crate) fn keep_sent(
    core: &mut Core,
    from: &str,
    to: &str,
    id: &str,
    built: &Built,
) -> PhoneMessage {
    let (message, stanza_type, media, text_or_caption) = built;
    let (location, contacts) = shared_of(message);
    let is_media = media.is_some();
    let record = PhoneMessage {
        id: id.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        from_me: true,
        text: if is_media {
            None
        } else {
            text_or_caption.clone()
        },
        caption: if is_media {
            text_or_caption.clone()
        } else {
            None
        },
        media: media.clone(),
        timestamp: now_secs(),
        status: "sent".into(),
        sender_device: None,
        location,
        contacts,
        reaction: reaction_of(message),
        reactions: Default::default(),
        edited: false,
        revoked: false,
        poll: poll_of(message, from),
        vote: vote_of(core, from, from, message),
        forwarded: forwarded_of(message),
        view_once: view_once_of(message),
        mentions: mentions_of(core, message),
    };
    if core.account_untracked(from).is_none() {
        return record;
    }
    let copy = SentCopy {
        id: id.to_string(),
        to: to.to_string(),
        message: B64(message.encode_to_vec()),
        stanza_type: stanza_type.to_string(),
    };
    // An edit or a revoke changes the message it is about; it is no message of its own.
    let changes_another = amend(core, from, from, message);
    let acc = core.account_untracked(from).expect("checked above");
    if !changes_another {
        acc.secrets.messages.upsert(record.clone());
    }
    react(core, from, &record);
    tally(core, from, &record);
    let acc = core.account_untracked(from).expect("checked above");
    acc.secrets.outbox.push_back(copy.clone());
    if acc.secrets.outbox.len() > OUTBOX_KEPT {
        acc.secrets.outbox.pop_front();
    }
    if !changes_another {
        core.changes.push(Change::Message {
            phone: from.to_string(),
            message: Box::new(record.clone()),
        });
    }
    core.changes.push(Change::Sent {
        phone: from.to_string(),
        copy,
    });
    record
}

/// A device could not decrypt message `id` from the phone of `phone` and
/// asked again (a retry receipt): the phone drops its session with that
/// device and encrypts the message anew from the device's published keys, as
/// the app does. Returns whether the phone still had the message.
pub async fn resend(
    core: &mut Core,
    phone: &str,
    requester: (&str, u16),
    id: &str,
) -> Result<bool> {
    let copy = core
        .account(phone)
        .and_then(|a| a.secrets.outbox.iter().find(|c| c.id == id))
        .cloned();
    let Some(copy) = copy else {
        return Ok(false);
    };
    let message = wa::Message::decode_from_slice(&copy.message.0)
        .map_err(|e| PhoneError::BadMedia(format!("stored message {id}: {e}")))?;
    if let Some(acc) = core.account_mut(phone) {
        acc.secrets
            .sessions
            .remove(&format!("{}.{}", requester.0, requester.1));
    }
    let media_type = media_type_attr(&message);
    let (message, recipient) = if requester.0 == phone {
        let dsm = wacore::messages::wrap_device_sent(message, Jid::pn(copy.to.clone()).to_string());
        (dsm, Some(copy.to.as_str()))
    } else {
        (message, None)
    };
    tracing::debug!(
        "phone {phone} sends {id} again to {}:{}",
        requester.0,
        requester.1
    );
    send_to_device_with(
        core,
        phone,
        requester.0,
        requester.1,
        &message,
        id,
        &copy.stanza_type,
        recipient,
        media_type,
    )
    .await?;
    Ok(true)
}

pub(crate) fn media_type_attr(msg: &wa::Message) -> Option<&'static str> {
    if msg.image_message.is_set() {
        Some("image")
    } else if msg.video_message.is_set() {
        Some("video")
    } else if msg.audio_message.is_set() {
        Some("audio")
    } else if msg.document_message.is_set() {
        Some("document")
    } else if msg.sticker_message.is_set() {
        Some("sticker")
    } else if msg.location_message.is_set() {
        Some("location")
    } else if msg.contact_message.is_set() {
        Some("vcard")
    } else if msg.contacts_array_message.is_set() {
        Some("contact_array")
    } else {
        None
    }
}

/// Encrypts `message` from `from`'s phone for one device of `to`.
async fn send_to_device(
    core: &mut Core,
    from: &str,
    to: &str,
    device: u16,
    message: &wa::Message,
    id: Option<&str>,
    stanza_type: &str,
) -> Result<()> {
    let id = id
        .map(str::to_string)
        .unwrap_or_else(|| format!("3EB0{}", &new_id()[..16]));
    let media_type = media_type_attr(message);
    send_to_device_with(
        core,
        from,
        to,
        device,
        message,
        &id,
        stanza_type,
        None,
        media_type,
    )
    .await
}

/// Encrypts `plaintext` from `from`'s phone for one device of `to` over their pairwise
/// Signal session (made from the device's published bundle when there is none): the wire
/// type (`pkmsg`/`msg`) and the ciphertext.
pub(crate) async fn seal(
    core: &mut Core,
    from: &str,
    to: &str,
    device: u16,
    plaintext: &[u8],
) -> Result<(&'static str, Vec<u8>)> {
    let peer = ProtocolAddress::new(to, u32::from(device).into());
    let mut secrets = std::mem::take(
        &mut core
            .account_untracked(from)
            .ok_or_else(|| PhoneError::UnknownAccount(from.to_string()))?
            .secrets,
    );
    let peer_key = signal::address_key(&peer);
    let identity_before = secrets.identities.get(&peer_key).cloned();
    let result = async {
        let bundle = if signal::has_session(&secrets, &peer) {
            None
        } else {
            let record = core
                .account_mut(to)
                .and_then(|a| a.devices.get_mut(&device))
                .ok_or_else(|| PhoneError::UnknownDevice(to.to_string(), device))?;
            let bundle = signal::take_bundle(record)?;
            if device == 0 {
                // Keep the peer phone's published prekeys topped up.
                let acc = core.account_mut(to).expect("looked up above");
                let mut record = acc.devices.remove(&0).expect("device 0 exists");
                signal::replenish_prekeys(&mut acc.secrets, &mut record);
                acc.devices.insert(0, record);
            }
            Some(bundle)
        };
        Ok::<_, PhoneError>(signal::encrypt(&mut secrets, &peer, bundle, plaintext).await?)
    }
    .await;
    // The session moved on; the rest of the account only if the peer's identity is new.
    if secrets.identities.get(&peer_key) != identity_before.as_ref() {
        core.changes.account(from);
    }
    core.changes.session(from, peer_key);
    if let Some(acc) = core.account_untracked(from) {
        acc.secrets = secrets;
    }
    let (enc_type, mut ciphertext) = result?;
    // A message of an established session (`msg`): its MAC, at the end, no longer fits.
    if device != 0
        && enc_type == "msg"
        && core.faults.corrupt(from)
        && let Some(last) = ciphertext.last_mut()
    {
        *last ^= 0xff;
    }
    Ok((enc_type, ciphertext))
}

#[expect(
    clippy::too_many_arguments,
    reason = "one stanza's worth of routing facts"
)]
async fn send_to_device_with(
    core: &mut Core,
    from: &str,
    to: &str,
    device: u16,
    message: &wa::Message,
    id: &str,
    stanza_type: &str,
    recipient: Option<&str>,
    media_type: Option<&str>,
) -> Result<()> {
    let plaintext = MessageUtils::encode_and_pad(message);
    let (enc_type, ciphertext) = seal(core, from, to, device, &plaintext).await?;
    let (name, lid) = {
        let acc = core.account(from).expect("sender exists");
        (acc.name.clone(), acc.lid.clone())
    };
    let mut enc = NodeBuilder::new("enc")
        .attr("v", "2")
        .attr("type", enc_type);
    if let Some(mt) = media_type {
        enc = enc.attr("mediatype", mt);
    }
    let enc = enc.bytes(ciphertext.clone()).build();
    let mut stanza = NodeBuilder::new("message")
        .attr("from", Jid::pn(from.to_string()))
        .attr("id", id.to_string())
        .attr("t", t_now())
        .attr("type", stanza_type.to_string())
        .attr("notify", name)
        .attr("sender_lid", Jid::lid(lid));
    if let Some(r) = recipient {
        stanza = stanza.attr("recipient", Jid::pn(r.to_string()));
    }
    if let Some(edit) = edit_attr(message) {
        stanza = stanza.attr("edit", edit);
    }
    let stanza = stanza.children([enc]).build();
    if device == 0 {
        // Phone to phone: the other phone is in-process too.
        receive(core, to, (from, 0), &stanza).await;
    } else {
        core.add_origin(id, from, 0);
        core.deliver_to_companion(to, device, id, &stanza);
    }
    Ok(())
}

/// A phone receives a `<message>` from device `sender`: decrypts it, records
/// it, and answers with a delivery receipt.
pub async fn receive(core: &mut Core, phone: &str, sender: (&str, u16), stanza: &Node) {
    let id = attr(stanza, "id").unwrap_or_default();
    if core.account(phone).is_some_and(|a| a.offline) {
        // Kept for the phone, unanswered (no delivery receipt), until it is back.
        core.deliver_to_companion(phone, 0, &id, stanza);
        return;
    }
    let Some(enc) = stanza
        .children()
        .and_then(|c| c.iter().find(|n| n.tag == "enc"))
    else {
        return;
    };
    let Some(message) = open_pairwise(core, phone, sender, &id, enc).await else {
        return;
    };
    let (message, to) = if message.device_sent_message.is_set() {
        let dest = message
            .device_sent_message
            .as_option()
            .and_then(|d| d.destination_jid.clone())
            .unwrap_or_default();
        let dest_user = dest
            .split(['@', ':'])
            .next()
            .unwrap_or_default()
            .to_string();
        let dest_phone = dest
            .parse::<Jid>()
            .ok()
            .and_then(|j| core.phone_of(&j))
            .unwrap_or(dest_user);
        (wacore::messages::unwrap_device_sent(message), dest_phone)
    } else {
        (message, phone.to_string())
    };
    if message.protocol_message.is_set()
        || message.sender_key_distribution_message.is_set() && !has_content(&message)
    {
        // Protocol traffic is not a chat message; an edit or a revoke changes one.
        amend(core, phone, sender.0, &message);
        ack_receipt(core, phone, sender, &id);
        return;
    }
    take_in(core, phone, sender, &id, &message, to);
    ack_receipt(core, phone, sender, &id);
}

/// Decrypts a pairwise `enc` (`pkmsg`/`msg`) from device `sender` for the phone, keeping
/// its Signal state, and decodes the message. `None` (logged) when it cannot.
pub(crate) async fn open_pairwise(
    core: &mut Core,
    phone: &str,
    sender: (&str, u16),
    id: &str,
    enc: &Node,
) -> Option<wa::Message> {
    let enc_type = attr(enc, "type").unwrap_or_default();
    let Some(wacore_binary::NodeContent::Bytes(ciphertext)) = &enc.content else {
        return None;
    };
    let peer = ProtocolAddress::new(sender.0, u32::from(sender.1).into());
    let acc = core.account_untracked(phone)?;
    let mut secrets = std::mem::take(&mut acc.secrets);
    let peer_key = signal::address_key(&peer);
    let identity_before = secrets.identities.get(&peer_key).cloned();
    let prekeys_before = secrets.prekeys.len();
    let result = signal::decrypt(&mut secrets, &peer, &enc_type, ciphertext).await;
    let mut structure_changed = secrets.identities.get(&peer_key) != identity_before.as_ref()
        || secrets.prekeys.len() != prekeys_before;
    let acc = core.account_untracked(phone).expect("still there");
    acc.secrets = secrets;
    // Consumed prekeys get replaced so the phone never runs dry.
    let mut record = acc.devices.remove(&0).expect("device 0 exists");
    structure_changed |= signal::replenish_prekeys(&mut acc.secrets, &mut record);
    acc.devices.insert(0, record);
    if structure_changed {
        core.changes.account(phone);
    }
    core.changes.session(phone, peer_key);
    let plaintext = match result {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(
                "phone {phone} cannot decrypt {id} from {}:{}: {e}",
                sender.0,
                sender.1
            );
            return None;
        }
    };
    match wacore::messages::decode_plaintext(&plaintext, 2) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!("phone {phone}: undecodable plaintext in {id}: {e}");
            None
        }
    }
}

/// Records a chat message the phone received (or, from its own companion, sent) in the
/// chat `to` (the phone itself for a 1:1 chat with the sender, another account, or a
/// group JID), applying what it does to other messages (reactions, votes).
pub(crate) fn take_in(
    core: &mut Core,
    phone: &str,
    sender: (&str, u16),
    id: &str,
    message: &wa::Message,
    to: String,
) {
    let from_me = sender.0 == phone;
    let (text, caption, media) = content_of(core, message);
    let (location, contacts) = shared_of(message);
    let reaction = reaction_of(message);
    let poll = poll_of(message, sender.0);
    let vote = vote_of(core, phone, sender.0, message);
    let record = PhoneMessage {
        id: id.to_string(),
        from: sender.0.to_string(),
        to,
        from_me,
        text,
        caption,
        media,
        timestamp: now_secs(),
        status: if from_me {
            "sent".into()
        } else {
            "received".into()
        },
        sender_device: Some(sender.1),
        location,
        contacts,
        reaction,
        reactions: Default::default(),
        edited: false,
        revoked: false,
        poll,
        vote,
        forwarded: forwarded_of(message),
        view_once: view_once_of(message),
        mentions: mentions_of(core, message),
    };
    if let Some(acc) = core.account_untracked(phone)
        && !acc.secrets.messages.contains(&record.id)
    {
        acc.secrets.messages.upsert(record.clone());
        react(core, phone, &record);
        tally(core, phone, &record);
        core.changes.push(Change::Message {
            phone: phone.to_string(),
            message: Box::new(record),
        });
    }
}

pub(crate) fn has_content(m: &wa::Message) -> bool {
    m.conversation.is_some()
        || m.extended_text_message.is_set()
        || m.reaction_message.is_set()
        || m.poll_update_message.is_set()
        || poll_creation(m).is_some()
        || media_type_attr(m).is_some()
}

/// Applies an edit or a revoke by `sender` to the message it names in `phone`'s history,
/// as the app does: only the message's own sender may. Returns whether `message` was one.
pub(crate) fn amend(core: &mut Core, phone: &str, sender: &str, message: &wa::Message) -> bool {
    use wa::message::protocol_message::Type as Protocol;
    let Some(p) = message.protocol_message.as_option() else {
        return false;
    };
    let edit = match p.r#type {
        Some(Protocol::MessageEdit) => true,
        Some(Protocol::Revoke) => false,
        _ => return false,
    };
    let Some(target_id) = p.key.as_option().and_then(|k| k.id.clone()) else {
        return true;
    };
    let Some(acc) = core.account_untracked(phone) else {
        return true;
    };
    let Some(target) = acc.secrets.messages.get_mut(&target_id) else {
        return true;
    };
    if target.from.split(':').next() != Some(sender) || target.revoked {
        tracing::warn!("phone {phone}: {sender} may not change message {target_id}");
        return true;
    }
    if edit {
        let new = p.edited_message.as_option();
        let text = new.and_then(|m| m.conversation.clone()).or_else(|| {
            new.and_then(|m| m.extended_text_message.as_option())
                .and_then(|t| t.text.clone())
        });
        if target.caption.is_some() {
            target.caption = text;
        } else {
            target.text = text;
        }
        target.edited = true;
    } else {
        target.revoked = true;
        target.text = None;
        target.caption = None;
        target.media = None;
        target.location = None;
        target.contacts.clear();
    }
    let target = target.clone();
    core.changes.push(Change::Message {
        phone: phone.to_string(),
        message: Box::new(target),
    });
    true
}

/// The `edit` attribute WhatsApp puts on an edit (1) or a sender's revoke (7).
pub(crate) fn edit_attr(message: &wa::Message) -> Option<&'static str> {
    use wa::message::protocol_message::Type as Protocol;
    match message.protocol_message.as_option()?.r#type {
        Some(Protocol::MessageEdit) => Some("1"),
        Some(Protocol::Revoke) => Some("7"),
        _ => None,
    }
}

/// Whether the sender marked the message forwarded.
/// The phone numbers a text mentions (those the simulator has accounts for, by either JID
/// form; others by their user part).
pub(crate) fn mentions_of(core: &Core, m: &wa::Message) -> Vec<String> {
    m.extended_text_message
        .as_option()
        .and_then(|e| e.context_info.as_option())
        .map(|c| {
            c.mentioned_jid
                .iter()
                .filter_map(|j| j.parse::<Jid>().ok())
                .map(|j| core.phone_of(&j).unwrap_or_else(|| j.user.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the app shows the message once: the inline flag on its photo, video or audio,
/// or one of the wrappers older apps send.
pub(crate) fn view_once_of(m: &wa::Message) -> bool {
    m.image_message.as_option().and_then(|x| x.view_once) == Some(true)
        || m.video_message.as_option().and_then(|x| x.view_once) == Some(true)
        || m.audio_message.as_option().and_then(|x| x.view_once) == Some(true)
        || m.view_once_message.is_set()
        || m.view_once_message_v2.is_set()
        || m.view_once_message_v2_extension.is_set()
}

pub(crate) fn forwarded_of(m: &wa::Message) -> bool {
    [
        m.extended_text_message
            .as_option()
            .and_then(|x| x.context_info.as_option()),
        m.location_message
            .as_option()
            .and_then(|x| x.context_info.as_option()),
        m.contact_message
            .as_option()
            .and_then(|x| x.context_info.as_option()),
        m.contacts_array_message
            .as_option()
            .and_then(|x| x.context_info.as_option()),
        m.image_message
            .as_option()
            .and_then(|x| x.context_info.as_option()),
    ]
    .into_iter()
    .flatten()
    .any(|c| c.is_forwarded == Some(true))
}

/// The poll a message creates, in any of its forms.
fn poll_creation(m: &wa::Message) -> Option<&wa::message::PollCreationMessage> {
    m.poll_creation_message
        .as_option()
        .or(m.poll_creation_message_v2.as_option())
        .or(m.poll_creation_message_v3.as_option())
}

/// A poll created by `creator`, with its secret.
fn poll_of(m: &wa::Message, creator: &str) -> Option<PhonePoll> {
    let p = poll_creation(m)?;
    let secret = m.message_context_info.as_option()?.message_secret.clone()?;
    Some(PhonePoll {
        question: p.name.clone().unwrap_or_default(),
        options: p
            .options
            .iter()
            .filter_map(|o| o.option_name.clone())
            .collect(),
        selectable: p.selectable_options_count.unwrap_or(1),
        secret: B64(secret),
        creator: creator.split(':').next().unwrap_or(creator).to_string(),
        votes: Default::default(),
    })
}

/// A vote by `voter` that `phone` can open: the poll is in its history, and the vote
/// decrypts with that poll's secret.
fn vote_of(core: &Core, phone: &str, voter: &str, m: &wa::Message) -> Option<PhoneVote> {
    let u = m.poll_update_message.as_option()?;
    let poll_id = u.poll_creation_message_key.as_option()?.id.clone()?;
    let enc = u.vote.as_option()?;
    let poll = core
        .account(phone)?
        .secrets
        .messages
        .get(&poll_id)?
        .poll
        .clone()?;
    let voter = voter.split(':').next().unwrap_or(voter);
    let hashes = wacore::poll::decrypt_poll_vote_with_secret(
        wacore::poll::PollVoteCiphertext {
            enc_payload: enc.enc_payload.as_deref()?,
            enc_iv: enc.enc_iv.as_deref()?,
        },
        &poll.secret.0,
        &poll_id,
        &Jid::pn(poll.creator.clone()).to_string(),
        &Jid::pn(voter.to_string()).to_string(),
    )
    .map_err(|e| tracing::warn!("phone {phone}: cannot open a vote by {voter} in {poll_id}: {e}"))
    .ok()?;
    let options = poll
        .options
        .iter()
        .filter(|o| {
            let h = wacore::poll::compute_option_hash(o);
            hashes.iter().any(|x| x.as_slice() == h)
        })
        .cloned()
        .collect();
    Some(PhoneVote {
        message_id: poll_id,
        options,
    })
}

/// Counts `record`'s vote (if it is one) in its poll: each voter's latest vote counts.
fn tally(core: &mut Core, phone: &str, record: &PhoneMessage) {
    let Some(v) = &record.vote else { return };
    let Some(acc) = core.account_untracked(phone) else {
        return;
    };
    let Some(target) = acc.secrets.messages.get_mut(&v.message_id) else {
        return;
    };
    let Some(poll) = target.poll.as_mut() else {
        return;
    };
    let voter = record
        .from
        .split(':')
        .next()
        .unwrap_or(&record.from)
        .to_string();
    if v.options.is_empty() {
        poll.votes.remove(&voter);
    } else {
        poll.votes.insert(voter, v.options.clone());
    }
    let target = target.clone();
    core.changes.push(Change::Message {
        phone: phone.to_string(),
        message: Box::new(target),
    });
}

/// A reaction's target and emoji.
fn reaction_of(m: &wa::Message) -> Option<PhoneReaction> {
    let r = m.reaction_message.as_option()?;
    Some(PhoneReaction {
        message_id: r.key.as_option()?.id.clone()?,
        emoji: r.text.clone().unwrap_or_default(),
    })
}

/// Shows `record`'s reaction (if it is one) on its target in `phone`'s history, as the app
/// does: one per sender, the latest wins, an empty emoji takes it back.
fn react(core: &mut Core, phone: &str, record: &PhoneMessage) {
    let Some(r) = &record.reaction else { return };
    let Some(acc) = core.account_untracked(phone) else {
        return;
    };
    let Some(target) = acc.secrets.messages.get_mut(&r.message_id) else {
        return;
    };
    if r.emoji.is_empty() {
        target.reactions.remove(&record.from);
    } else {
        target
            .reactions
            .insert(record.from.clone(), r.emoji.clone());
    }
    let target = target.clone();
    core.changes.push(Change::Message {
        phone: phone.to_string(),
        message: Box::new(target),
    });
}

/// The phone's delivery receipt back to the sending device.
fn ack_receipt(core: &mut Core, phone: &str, sender: (&str, u16), id: &str) {
    if sender.0 == phone {
        // Own companions do not get delivery receipts from their phone.
        return;
    }
    let receipt = NodeBuilder::new("receipt")
        .attr("from", Jid::pn(phone.to_string()))
        .attr("id", id.to_string())
        .attr("t", t_now())
        .build();
    deliver_receipt(core, (sender.0, sender.1), &receipt, id, None);
}

/// Routes a receipt to a device: a companion gets the stanza, a phone updates
/// the status of its own sent message.
pub fn deliver_receipt(
    core: &mut Core,
    target: (&str, u16),
    receipt: &Node,
    id: &str,
    kind: Option<&str>,
) {
    if target.1 == 0 {
        if core.account(target.0).is_some_and(|a| a.offline) {
            core.deliver_to_companion(target.0, 0, id, receipt);
            return;
        }
        let status = match kind {
            Some("read") | Some("read-self") => "read",
            Some("played") => "read",
            None | Some("") | Some("delivery") | Some("inactive") => "delivered",
            _ => return,
        };
        let mut ids = vec![id.to_string()];
        if let Some(list) = receipt
            .children()
            .and_then(|c| c.iter().find(|n| n.tag == "list"))
        {
            ids.extend(
                list.children()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|i| attr(i, "id")),
            );
        }
        if let Some(acc) = core.account_untracked(target.0) {
            let mut changed = Vec::new();
            for id in ids {
                if let Some(m) = acc.secrets.messages.get_mut(&id)
                    && m.from_me
                    && m.status != status
                    && !(m.status == "read" && status == "delivered")
                {
                    m.status = status.to_string();
                    changed.push(id);
                }
            }
            for id in changed {
                core.changes.push(Change::Status {
                    phone: target.0.to_string(),
                    id,
                    status: status.to_string(),
                });
            }
        }
    } else {
        core.deliver_to_companion(target.0, target.1, id, receipt);
    }
}

/// The phone reads messages: read receipts go to each sender device.
pub fn mark_read(core: &mut Core, phone: &str, ids: &[String]) -> Result<usize> {
    ensure_online(core, phone)?;
    let acc = core
        .account_untracked(phone)
        .ok_or_else(|| PhoneError::UnknownAccount(phone.to_string()))?;
    let mut targets = Vec::new();
    for id in ids {
        if let Some(m) = acc.secrets.messages.get_mut(id)
            && !m.from_me
            && !targets.iter().any(|(_, _, t, _)| t == id)
        {
            m.status = "read".into();
            let group = m.to.strip_suffix("@g.us").map(str::to_string);
            targets.push((
                m.from.clone(),
                m.sender_device.unwrap_or(0),
                m.id.clone(),
                group,
            ));
        }
    }
    for (_, _, id, _) in &targets {
        core.changes.push(Change::Status {
            phone: phone.to_string(),
            id: id.clone(),
            status: "read".into(),
        });
    }
    let n = targets.len();
    for (from, device, id, group) in targets {
        // In a group the receipt comes from the group, naming the reader.
        let receipt = match &group {
            Some(gid) => {
                let lid_form = crate::groups::group(core, gid)
                    .is_ok_and(|g| g.addressing == crate::state::Addressing::Lid);
                NodeBuilder::new("receipt")
                    .attr("from", Jid::group(gid.clone()))
                    .attr("participant", core.device_jid(phone, 0, lid_form))
            }
            None => NodeBuilder::new("receipt").attr("from", Jid::pn(phone.to_string())),
        }
        .attr("id", id.clone())
        .attr("type", "read")
        .attr("t", t_now())
        .build();
        deliver_receipt(core, (&from, device), &receipt, &id, Some("read"));
    }
    Ok(n)
}

fn content_of(
    core: &Core,
    m: &wa::Message,
) -> (Option<String>, Option<String>, Option<MediaSummary>) {
    if let Some(t) = &m.conversation {
        return (Some(t.clone()), None, None);
    }
    if let Some(e) = m.extended_text_message.as_option() {
        return (e.text.clone(), None, None);
    }
    let media = |kind: MediaKind,
                 mimetype: &Option<String>,
                 file_name: Option<String>,
                 direct_path: &Option<String>,
                 media_key: &Option<Vec<u8>>| {
        let mut summary = MediaSummary {
            kind: kind.name().to_string(),
            mimetype: mimetype.clone().unwrap_or_default(),
            file_name,
            size: 0,
            sha256: String::new(),
            error: None,
        };
        match download(core, direct_path.as_deref(), media_key.as_deref(), kind) {
            Ok(bytes) => {
                summary.size = bytes.len() as u64;
                summary.sha256 = hex(&Sha256::digest(&bytes));
            }
            Err(e) => summary.error = Some(e),
        }
        summary
    };
    if let Some(i) = m.image_message.as_option() {
        let s = media(
            MediaKind::Image,
            &i.mimetype,
            None,
            &i.direct_path,
            &i.media_key,
        );
        return (None, i.caption.clone(), Some(s));
    }
    if let Some(v) = m.video_message.as_option() {
        let s = media(
            MediaKind::Video,
            &v.mimetype,
            None,
            &v.direct_path,
            &v.media_key,
        );
        return (None, v.caption.clone(), Some(s));
    }
    if let Some(a) = m.audio_message.as_option() {
        let s = media(
            MediaKind::Audio,
            &a.mimetype,
            None,
            &a.direct_path,
            &a.media_key,
        );
        return (None, None, Some(s));
    }
    if let Some(d) = m.document_message.as_option() {
        let s = media(
            MediaKind::Document,
            &d.mimetype,
            d.file_name.clone(),
            &d.direct_path,
            &d.media_key,
        );
        return (None, d.caption.clone(), Some(s));
    }
    if let Some(st) = m.sticker_message.as_option() {
        let s = media(
            MediaKind::Sticker,
            &st.mimetype,
            None,
            &st.direct_path,
            &st.media_key,
        );
        return (None, None, Some(s));
    }
    (None, None, None)
}

/// The location or contact cards a message shares.
fn shared_of(m: &wa::Message) -> (Option<PhoneLocation>, Vec<PhoneContact>) {
    let location = m.location_message.as_option().map(|l| PhoneLocation {
        latitude: l.degrees_latitude.unwrap_or_default(),
        longitude: l.degrees_longitude.unwrap_or_default(),
        name: l.name.clone(),
        address: l.address.clone(),
    });
    let card = |c: &wa::message::ContactMessage| PhoneContact {
        name: c.display_name.clone(),
        vcard: c.vcard.clone().unwrap_or_default(),
    };
    let contacts = if let Some(c) = m.contact_message.as_option() {
        vec![card(c)]
    } else if let Some(a) = m.contacts_array_message.as_option() {
        a.contacts.iter().map(card).collect()
    } else {
        Vec::new()
    };
    (location, contacts)
}

/// The phone downloads and decrypts a blob from the media host.
fn download(
    core: &Core,
    direct_path: Option<&str>,
    media_key: Option<&[u8]>,
    kind: MediaKind,
) -> std::result::Result<Vec<u8>, String> {
    let path = direct_path.ok_or("no direct path")?;
    let path = path.split('?').next().unwrap_or(path);
    let meta = core
        .snap
        .media
        .get(path)
        .ok_or_else(|| format!("no blob at {path}"))?;
    let data = std::fs::read(core.blobs_dir.join(&meta.file)).map_err(|e| e.to_string())?;
    let key = media_key.ok_or("no media key")?;
    DownloadUtils::verify_and_decrypt(&data, key, kind.media_type()).map_err(|e| e.to_string())
}

/// An attribute as a string.
pub fn attr(node: &Node, key: &str) -> Option<String> {
    node.attrs.get(key).map(|v| v.as_str().into_owned())
}

/// The media key and direct path of a message's attachment.
fn media_of(msg: &wa::Message) -> Option<(Vec<u8>, Option<String>)> {
    macro_rules! pick {
        ($($f:ident),*) => {
            $(if let Some(m) = msg.$f.as_option() {
                return m.media_key.clone().map(|k| (k, m.direct_path.clone()));
            })*
        };
    }
    pick!(
        image_message,
        video_message,
        audio_message,
        document_message,
        sticker_message
    );
    None
}

/// The key a media re-upload request and its answer are encrypted with.
fn media_retry_key(media_key: &[u8]) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    wacore::crypto::hkdf_sha256_into(
        media_key,
        None,
        b"WhatsApp Media Retry Notification",
        &mut key,
    )
    .ok()?;
    Some(key)
}

/// A device could not download the file of message `id` and asks its sender's phone to
/// upload it again (`<receipt type="server-error">` with `<encrypt>` and `<rmr>`). The
/// phone, which keeps its last sent messages with their media keys, decrypts the request,
/// "uploads" the same encrypted bytes under a new direct path and answers through the
/// server with `<notification type="mediaretry">`: the new path encrypted under the media
/// key, or `<error code="2">` when the phone no longer has the message (or it had no
/// file), `<error code="3">` when the request does not decrypt. `requester` is the
/// account of the asking device.
pub fn media_retry(core: &mut Core, requester: &str, receipt: &Node) -> Node {
    use crate::conn::{bytes_of, child, jid_attr};
    let id = attr(receipt, "id").unwrap_or_default();
    let rmr = child(receipt, "rmr");
    let from_me = rmr.and_then(|r| attr(r, "from_me")).as_deref() == Some("true");
    let sender = if from_me {
        Some(requester.to_string())
    } else {
        rmr.and_then(|r| jid_attr(r, "participant").or_else(|| jid_attr(r, "jid")))
            .and_then(|j| core.phone_of(&j))
    };
    let answer = |kids: Vec<Node>| {
        let mut n = NodeBuilder::new("notification")
            .attr("from", Jid::pn(requester.to_string()))
            .attr("type", "mediaretry")
            .attr("id", id.clone())
            .attr("t", t_now());
        let mut kids = kids;
        if let Some(r) = rmr {
            kids.push(r.clone());
        }
        n = n.children(kids);
        n.build()
    };
    let error = |code: &str| {
        answer(vec![
            NodeBuilder::new("error")
                .attr("code", code.to_string())
                .build(),
        ])
    };
    let found = sender
        .and_then(|s| core.account(&s))
        .and_then(|a| a.secrets.outbox.iter().find(|c| c.id == id))
        .and_then(|c| wa::Message::decode_from_slice(&c.message.0).ok())
        .and_then(|m| media_of(&m));
    let Some((media_key, Some(original))) = found else {
        tracing::debug!("media retry for {id}: the phone does not have it");
        return error("2");
    };
    let Some(key) = media_retry_key(&media_key) else {
        return error("3");
    };
    let encrypt = rmr.and(child(receipt, "encrypt"));
    let request = encrypt.and_then(|e| {
        let p = child(e, "enc_p").and_then(bytes_of)?;
        let iv = child(e, "enc_iv").and_then(bytes_of)?;
        wacore::media_retry::decrypt_media_retry_notification(&media_key, &id, iv, p).ok()
    });
    let asked_for = request
        .and_then(|b| wa::ServerErrorReceipt::decode_from_slice(&b).ok())
        .and_then(|r| r.stanza_id);
    if asked_for.as_deref() != Some(id.as_str()) {
        tracing::debug!("media retry for {id}: the request does not decrypt");
        return error("3");
    }
    let original = original.split('?').next().unwrap_or(&original).to_string();
    let Some(meta) = core.snap.media.get(&original).cloned() else {
        tracing::debug!("media retry for {id}: the phone's copy is not on the media host");
        return error("1");
    };
    // Same encrypted bytes, new location (a real phone uploads them again).
    let direct_path = format!(
        "/mms/{}/{}-{}",
        meta.kind,
        meta.file.trim_end_matches(".enc"),
        &new_id()[..12]
    );
    core.add_media(
        direct_path.clone(),
        MediaMeta {
            reupload: true,
            ..meta
        },
    );
    let plain = wa::MediaRetryNotification {
        stanza_id: Some(id.clone()),
        direct_path: Some(direct_path),
        result: Some(wa::media_retry_notification::ResultType::SUCCESS),
        ..Default::default()
    }
    .encode_to_vec();
    let iv: [u8; 12] = rand::random();
    let mut enc_p = Vec::with_capacity(plain.len() + 16);
    if wacore_libsignal::crypto::aes_256_gcm_encrypt(&key, &iv, id.as_bytes(), &plain, &mut enc_p)
        .is_err()
    {
        return error("1");
    }
    answer(vec![
        NodeBuilder::new("encrypt")
            .children([
                NodeBuilder::new("enc_p").bytes(enc_p).build(),
                NodeBuilder::new("enc_iv").bytes(iv.to_vec()).build(),
            ])
            .build(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bare payload and the `wa.me` link current WhatsApp Web encodes read the same.
    #[test]
    fn qr_codes_in_both_forms() {
        let key = |b: u8| STANDARD.encode([b; 32]);
        let bare = format!("2@abc,{},{},{}", key(1), key(2), key(3));
        let link = format!("{QR_LINK}{bare},1");
        for qr in [bare.clone(), link, format!("  {bare}\n")] {
            let (pair_ref, noise, identity, adv) = parse_qr(&qr).unwrap();
            assert_eq!(pair_ref, "2@abc");
            assert_eq!((noise, identity, adv), ([1; 32], [2; 32], [3; 32]));
        }
        assert!(parse_qr("https://example.com/#2@abc,x,y,z").is_err());
        assert!(parse_qr(&format!("{QR_LINK}2@abc")).is_err());
    }
}
