//! The admin API (`/admin/...`): tests, benchmarks and the sandbox create
//! phones, scan QR codes, make phones send and read messages, and inject
//! faults through it.
//!
//! Every failure is an [`ApiError`], answered as
//! `{"error":{"code","message"}}` with a 4xx/5xx status.
//!
//! The passkey gate's routes are in [`passkey`].

mod groups;
mod passkey;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::hub::{Hub, MediaFault, Outbound};
use crate::journal::Change;
use crate::link_code::LinkError;
use crate::phone::{self, LinkOutcome, MediaKind, Outgoing, PhoneError};
use crate::state::{Account, now_secs};

/// An admin API error: status, stable code, human message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn phone_not_found(phone: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "phone_not_found",
            format!("no account with phone number {phone}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!("admin request failed: {}", self.message);
        }
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<PhoneError> for ApiError {
    fn from(e: PhoneError) -> Self {
        match &e {
            PhoneError::UnknownAccount(p) => ApiError::phone_not_found(p),
            PhoneError::BadQr(_) => ApiError::bad_request("invalid_qr", e.to_string()),
            PhoneError::UnknownRef(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "qr_not_found", e.to_string())
            }
            PhoneError::UnknownDevice(..) => {
                ApiError::new(StatusCode::NOT_FOUND, "device_not_found", e.to_string())
            }
            PhoneError::BadMedia(_) => ApiError::bad_request("invalid_media", e.to_string()),
            PhoneError::Offline(_) => {
                ApiError::new(StatusCode::CONFLICT, "phone_offline", e.to_string())
            }
            PhoneError::Group(g) => g.clone().into(),
            PhoneError::Signal(_) | PhoneError::Io(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> Self {
        let message = e.to_string();
        match e {
            LinkError::BadCode(_) => ApiError::bad_request("invalid_code", message),
            LinkError::WrongCode => ApiError::bad_request("code_mismatch", message),
            LinkError::NoRequest(_) | LinkError::Expired(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "link_code_not_found", message)
            }
            LinkError::Gone => ApiError::new(StatusCode::GONE, "device_gone", message),
            LinkError::Timeout(_) => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "link_timeout", message)
            }
            LinkError::Phone(p) => p.into(),
        }
    }
}

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Parses a JSON body, naming the problem on failure (axum's own rejection
/// is plain text).
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid request body: {e}")))
}

pub fn router() -> Router<Arc<Hub>> {
    Router::new()
        .route("/admin/health", get(health))
        .route("/admin/phones", post(create_phone).get(list_phones))
        .route("/admin/phones/{phone}", get(get_phone))
        .route("/admin/phones/{phone}/scan", post(scan))
        .route("/admin/phones/{phone}/link-code", post(link_code))
        .route(
            "/admin/phones/{phone}/messages",
            post(send_message).get(list_messages),
        )
        .route("/admin/phones/{phone}/read", post(read))
        .route("/admin/phones/{phone}/online", post(online))
        .route("/admin/phones/{phone}/restrictions", post(set_restrictions))
        .route(
            "/admin/phones/{phone}/presence",
            post(set_presence).get(get_presence),
        )
        .route("/admin/phones/{phone}/profile", post(set_profile))
        .route(
            "/admin/phones/{phone}/calls",
            post(place_call).get(list_calls),
        )
        .route("/admin/phones/{phone}/calls/{call}/end", post(end_call))
        .route(
            "/admin/phones/{phone}/devices/{device}/unlink",
            post(unlink),
        )
        .route("/admin/mock-phone/scan-qr", post(mock_scan))
        .route("/admin/faults/disconnect", post(fault_disconnect))
        .route("/admin/faults/silence", post(fault_silence))
        .route("/admin/faults/reject-connections", post(fault_reject))
        .route("/admin/faults/stream-error", post(fault_stream_error))
        .route("/admin/faults/ban", post(fault_ban))
        .route("/admin/faults/swallow-acks", post(fault_swallow_acks))
        .route(
            "/admin/faults/corrupt-messages",
            post(fault_corrupt_messages),
        )
        .route("/admin/faults/media", post(fault_media))
        .route("/admin/faults/media-expiry", post(fault_media_expiry))
        .route("/admin/network", get(get_network).post(set_network))
        .route("/admin/phones/{phone}/chats", get(chat_states))
        .route("/admin/phones/{phone}/chats/{chat}", post(chat_action))
        .route("/admin/faults/phone-forgets", post(fault_phone_forgets))
        .merge(passkey::router())
        .merge(groups::router())
        .fallback(not_found)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "no such admin route; see the wa-sim documentation",
    )
}

async fn health(State(hub): State<Arc<Hub>>) -> Json<Value> {
    let core = hub.core.lock().await;
    Json(json!({
        "status": "ok",
        "accounts": core.snap.accounts.len(),
        "connections": core.conns.len(),
    }))
}

fn valid_phone(phone: &str) -> Result<()> {
    if phone.len() < 5 || phone.len() > 16 || !phone.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "invalid_phone",
            format!("phone must be 5 to 16 digits, got {phone:?}"),
        ));
    }
    Ok(())
}

fn account_json(acc: &Account, online: &dyn Fn(u16) -> bool) -> Value {
    let devices: Vec<Value> = acc
        .devices
        .values()
        .map(|d| {
            json!({
                "id": d.id,
                "jid": if d.id == 0 { format!("{}@s.whatsapp.net", acc.phone) } else { format!("{}:{}@s.whatsapp.net", acc.phone, d.id) },
                "lid": if d.id == 0 { format!("{}@lid", acc.lid) } else { format!("{}:{}@lid", acc.lid, d.id) },
                "kind": if d.id == 0 { "phone" } else { "companion" },
                "pushName": d.push_name,
                "keyIndex": d.key_index,
                "online": if d.id == 0 { !acc.offline } else { online(d.id) },
                "queued": d.queue.len(),
            })
        })
        .collect();
    json!({
        "phone": acc.phone,
        "name": acc.name,
        "jid": format!("{}@s.whatsapp.net", acc.phone),
        "lid": format!("{}@lid", acc.lid),
        "passkey": acc.passkey.is_some(),
        "devices": devices,
        "profile": acc.profile,
        "blocked": acc.blocked,
        "restrictions": acc.restrictions,
        // Who holds a trusted-contact token of this account, and since when (unix s).
        "tokensIssued": acc.tokens_issued.iter().map(|(holder, g)| (holder.clone(), g.t)).collect::<std::collections::BTreeMap<_, _>>(),
    })
}

#[derive(Deserialize)]
struct CreatePhone {
    phone: String,
    #[serde(default)]
    name: Option<String>,
    /// WhatsApp gates linking devices to this account with a passkey.
    #[serde(default)]
    passkey: bool,
    /// A made-up past that linked devices receive by history sync.
    #[serde(default)]
    history: Option<crate::history::HistorySpec>,
    /// What WhatsApp demands of its 1:1 messages (privacy tokens).
    #[serde(default)]
    restrictions: crate::tokens::Restrictions,
}

async fn create_phone(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Response> {
    let req: CreatePhone = parse(&body)?;
    let phone = req.phone.trim_start_matches('+').to_string();
    valid_phone(&phone)?;
    let mut core = hub.core.lock().await;
    if core.account(&phone).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "phone_exists",
            format!("an account with phone number {phone} already exists"),
        ));
    }
    if let Some(problem) = req.history.as_ref().and_then(|h| h.problem()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_history",
            problem,
        ));
    }
    let name = req.name.unwrap_or_else(|| format!("Phone {phone}"));
    let mut acc = phone::new_account(&mut core, &phone, &name)?;
    acc.history = req.history;
    acc.restrictions = req.restrictions;
    if req.passkey {
        acc.passkey = Some(crate::webauthn::new_passkey().map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?);
    }
    let body = account_json(&acc, &|_| false);
    let history = acc.history;
    core.insert_account(acc);
    crate::appstate::nct_salt(&mut core, &phone)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    if let Some(spec) = history {
        crate::appstate::made_up(&mut core, &phone, &spec).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?;
    }
    drop(core);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn list_phones(State(hub): State<Arc<Hub>>) -> Json<Value> {
    let core = hub.core.lock().await;
    let list: Vec<Value> = core
        .snap
        .accounts
        .values()
        .map(|a| account_json(a, &|d| core.conns.contains_key(&(a.phone.clone(), d))))
        .collect();
    Json(Value::Array(list))
}

async fn get_phone(State(hub): State<Arc<Hub>>, Path(phone): Path<String>) -> Result<Json<Value>> {
    let core = hub.core.lock().await;
    let acc = core
        .account(&phone)
        .ok_or_else(|| ApiError::phone_not_found(&phone))?;
    Ok(Json(account_json(acc, &|d| {
        core.conns.contains_key(&(phone.clone(), d))
    })))
}

#[derive(Deserialize)]
struct Scan {
    qr: String,
}

async fn scan(
    State(hub): State<Arc<Hub>>,
    Path(phone): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: Scan = parse(&body)?;
    do_scan(&hub, &phone, &req.qr).await
}

async fn do_scan(hub: &Arc<Hub>, phone: &str, qr: &str) -> Result<Response> {
    let mut core = hub.core.lock().await;
    let outcome = phone::scan(&mut core, phone, qr).await?;
    drop(core);
    Ok(link_answer(phone, outcome))
}

/// 200 with the new device, or 202 when the device must present the owner's passkey
/// first (it is linked once the ceremony ends; `GET .../passkey` shows how it goes).
fn link_answer(phone: &str, outcome: LinkOutcome) -> Response {
    match outcome {
        LinkOutcome::Linked(device) => Json(json!({
            "phone": phone,
            "device": device,
            "jid": format!("{phone}:{device}@s.whatsapp.net"),
        }))
        .into_response(),
        LinkOutcome::PasskeyRequired => (
            StatusCode::ACCEPTED,
            Json(json!({"phone": phone, "passkey": "required", "stage": "assertion_required"})),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct LinkCodeBody {
    code: String,
}

/// The phone's user types the code a device shows into "Link with phone
/// number". Answers once the device has sent its key bundle and is linked
/// (or, for a gated account, asked for the owner's passkey), or the bundle did not open (a wrong code: nothing is linked, as on
/// WhatsApp the device hears nothing, and the phone may try again).
async fn link_code(
    State(hub): State<Arc<Hub>>,
    Path(phone): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: LinkCodeBody = parse(&body)?;
    phone::ensure_online(&*hub.core.lock().await, &phone)?;
    let outcome = crate::link_code::enter_code(&hub, &phone, &req.code).await?;
    Ok(link_answer(&phone, outcome))
}

/// The convention of whatsapp-rust's own e2e suite: the body is the raw QR
/// string, and the account is picked by the scanning device's push name
/// (created on first use), so the same name always lands on the same number.
async fn mock_scan(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Response> {
    let qr = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("invalid_qr", "the body must be the QR string"))?
        .trim()
        .to_string();
    let pair_ref = crate::phone::qr_payload(&qr)
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut core = hub.core.lock().await;
    let push_name = core
        .pairing
        .get(&pair_ref)
        .map(|p| p.push_name.clone())
        .ok_or_else(|| ApiError::from(PhoneError::UnknownRef(pair_ref.clone())))?;
    let name = if push_name.is_empty() {
        "wa-sim".to_string()
    } else {
        push_name
    };
    let phone = mock_number(&core, &name);
    if core.account(&phone).is_none() {
        let acc = phone::new_account(&mut core, &phone, &name)?;
        core.insert_account(acc);
        crate::appstate::nct_salt(&mut core, &phone).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?;
    }
    drop(core);
    do_scan(&hub, &phone, &qr).await
}

/// The number a push name maps to: `1555` and seven digits from a hash of
/// the name. Two names whose hashes meet would share an account, so a
/// number already taken by an account of another name moves on to the
/// next free one (stable: state is kept, so each name keeps its number).
fn mock_number(core: &crate::hub::Core, name: &str) -> String {
    const SPACE: u64 = 10_000_000;
    let digest = Sha256::digest(name.as_bytes());
    let start = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % SPACE;
    (0..SPACE)
        .map(|i| format!("1555{:07}", (start + i) % SPACE))
        .find(|phone| core.account(phone).is_none_or(|a| a.name == name))
        .expect("fewer than ten million accounts")
}

#[derive(Deserialize)]
struct SendMedia {
    mimetype: String,
    #[serde(default, rename = "fileName")]
    file_name: Option<String>,
    data: String,
    /// Audio recorded in the app (a voice note) rather than an audio file.
    #[serde(default)]
    ptt: bool,
    /// Shown once (photos, videos and audio only).
    #[serde(default, rename = "viewOnce")]
    view_once: bool,
}

#[derive(Deserialize)]
struct Send {
    to: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    caption: Option<String>,
    #[serde(default)]
    media: Option<SendMedia>,
    #[serde(default)]
    location: Option<crate::state::PhoneLocation>,
    /// Contact cards: `{"name"?, "vcard"}` each.
    #[serde(default)]
    contacts: Option<Vec<crate::state::PhoneContact>>,
    /// A reaction to a message of the chat with `to`: `{"messageId", "emoji"}`.
    #[serde(default)]
    reaction: Option<crate::state::PhoneReaction>,
    /// New text for a message the phone sent to `to`: `{"messageId", "text"}`.
    #[serde(default)]
    edit: Option<Amend>,
    /// Deletes a message the phone sent to `to` for everyone: `{"messageId"}`.
    #[serde(default)]
    revoke: Option<Amend>,
    /// A poll: `{"question", "options", "multiple"?}`.
    #[serde(default)]
    poll: Option<SendPoll>,
    /// A vote in a poll of the chat with `to`: `{"messageId", "options"}` (none: take it back).
    #[serde(default)]
    vote: Option<SendVote>,
    /// Any message, as protobuf bytes in base64 (kinds the simulator has no shape for).
    #[serde(default)]
    raw: Option<String>,
    /// Phone numbers the text mentions.
    #[serde(default)]
    mentions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendPoll {
    question: String,
    options: Vec<String>,
    #[serde(default)]
    multiple: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendVote {
    message_id: String,
    options: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Amend {
    message_id: String,
    #[serde(default)]
    text: Option<String>,
}

/// `15551234567`, `+1 555 123 4567`, `...@s.whatsapp.net`, `...@c.us`.
fn normalize_to(to: &str) -> Result<String> {
    if let Some(group) = to.strip_suffix("@g.us") {
        if group.is_empty() || !group.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            return Err(ApiError::bad_request(
                "invalid_to",
                format!("`to` is not a group JID: {to:?}"),
            ));
        }
        return Ok(to.to_string());
    }
    let user = to.split('@').next().unwrap_or_default();
    let user = user.split(':').next().unwrap_or_default();
    let digits: String = user.chars().filter(char::is_ascii_digit).collect();
    valid_phone(&digits).map_err(|_| {
        ApiError::bad_request("invalid_to", format!("`to` is not a phone number: {to:?}"))
    })?;
    Ok(digits)
}

async fn send_message(
    State(hub): State<Arc<Hub>>,
    Path(phone): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: Send = parse(&body)?;
    let to = normalize_to(&req.to)?;
    let own = |core: &crate::hub::Core, id: &str| -> Result<()> {
        let acc = core
            .account(&phone)
            .ok_or_else(|| ApiError::phone_not_found(&phone))?;
        match acc.secrets.messages.get(id) {
            Some(m) if m.from_me && m.to == to && !m.revoked => Ok(()),
            Some(_) => Err(ApiError::bad_request(
                "not_own_message",
                format!("message {id} is not one phone {phone} sent to {to} (and still has)"),
            )),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "message_not_found",
                format!("phone {phone} has no message {id}"),
            )),
        }
    };
    let out = match (req.text, req.media) {
        (None, None) if req.raw.is_some() => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(req.raw.expect("checked").as_bytes())
                .map_err(|e| {
                    ApiError::bad_request("invalid_raw", format!("raw is not base64: {e}"))
                })?;
            let message =
                <waproto::whatsapp::Message as waproto::buffa::Message>::decode_from_slice(&bytes)
                    .map_err(|e| {
                        ApiError::bad_request("invalid_raw", format!("raw is not a Message: {e}"))
                    })?;
            Outgoing::Raw(Box::new(message))
        }
        (None, None) if req.poll.is_some() => {
            let p = req.poll.expect("checked");
            let distinct: std::collections::BTreeSet<&String> = p.options.iter().collect();
            if p.question.is_empty()
                || !(2..=12).contains(&p.options.len())
                || distinct.len() != p.options.len()
            {
                return Err(ApiError::bad_request(
                    "invalid_poll",
                    "a poll has a question and 2 to 12 distinct options",
                ));
            }
            let selectable = if p.multiple {
                p.options.len() as u32
            } else {
                1
            };
            Outgoing::Poll {
                question: p.question,
                options: p.options,
                selectable,
            }
        }
        (None, None) if req.vote.is_some() => {
            let v = req.vote.expect("checked");
            let core = hub.core.lock().await;
            let acc = core
                .account(&phone)
                .ok_or_else(|| ApiError::phone_not_found(&phone))?;
            let poll = acc
                .secrets
                .messages
                .get(&v.message_id)
                .filter(|m| m.from.split(':').next() == Some(to.as_str()) || m.to == to)
                .and_then(|m| m.poll.clone())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        "poll_not_found",
                        format!(
                            "phone {phone} has no poll {} in its chat with {to}",
                            v.message_id
                        ),
                    )
                })?;
            drop(core);
            if v.options.iter().any(|o| !poll.options.contains(o))
                || v.options.len() > poll.selectable as usize
            {
                return Err(ApiError::bad_request(
                    "invalid_vote",
                    format!(
                        "pick at most {} of the poll's options {:?}",
                        poll.selectable, poll.options
                    ),
                ));
            }
            Outgoing::Vote {
                chat: to.clone(),
                poll_id: v.message_id,
                poll,
                voter: phone.clone(),
                options: v.options,
            }
        }
        (None, None) if req.edit.is_some() => {
            let e = req.edit.expect("checked");
            own(&*hub.core.lock().await, &e.message_id)?;
            let text = e.text.filter(|t| !t.is_empty()).ok_or_else(|| {
                ApiError::bad_request("missing_content", "an edit needs `edit.text`")
            })?;
            Outgoing::Edit {
                chat: to.clone(),
                message_id: e.message_id,
                text,
            }
        }
        (None, None) if req.revoke.is_some() => {
            let r = req.revoke.expect("checked");
            own(&*hub.core.lock().await, &r.message_id)?;
            Outgoing::Revoke {
                chat: to.clone(),
                message_id: r.message_id,
            }
        }
        (None, None) if req.reaction.is_some() => {
            let r = req.reaction.expect("checked");
            let core = hub.core.lock().await;
            let acc = core
                .account(&phone)
                .ok_or_else(|| ApiError::phone_not_found(&phone))?;
            // The app reacts only to a message it shows, in that chat.
            let target = acc
                .secrets
                .messages
                .get(&r.message_id)
                .filter(|m| m.from.split(':').next() == Some(to.as_str()) || m.to == to)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        "message_not_found",
                        format!(
                            "phone {phone} has no message {} in its chat with {to}",
                            r.message_id
                        ),
                    )
                })?;
            let from_me = target.from_me;
            drop(core);
            if r.emoji.chars().count() > 8 {
                return Err(ApiError::bad_request(
                    "invalid_reaction",
                    "a reaction is one emoji, or empty to take it back",
                ));
            }
            Outgoing::Reaction {
                chat: to.clone(),
                message_id: r.message_id,
                from_me,
                emoji: r.emoji,
            }
        }
        (None, None) if req.location.is_some() => {
            let l = req.location.expect("checked");
            if !(-90.0..=90.0).contains(&l.latitude) || !(-180.0..=180.0).contains(&l.longitude) {
                return Err(ApiError::bad_request(
                    "invalid_location",
                    "latitude must be within -90..90 and longitude within -180..180",
                ));
            }
            Outgoing::Location(l)
        }
        (None, None) if req.contacts.is_some() => {
            let cards = req.contacts.expect("checked");
            if cards.is_empty() || cards.iter().any(|c| !c.vcard.starts_with("BEGIN:VCARD")) {
                return Err(ApiError::bad_request(
                    "invalid_contacts",
                    "contacts must be a non-empty list of {\"name\", \"vcard\"} with vCards",
                ));
            }
            Outgoing::Contacts(cards)
        }
        (_, Some(m)) => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(m.data.as_bytes())
                .map_err(|e| {
                    ApiError::bad_request("invalid_media", format!("media.data is not base64: {e}"))
                })?;
            if m.mimetype.is_empty() || !m.mimetype.contains('/') {
                return Err(ApiError::bad_request(
                    "invalid_media",
                    "media.mimetype must be a MIME type like image/jpeg",
                ));
            }
            let kind = MediaKind::from_mimetype(&m.mimetype);
            if m.view_once
                && !matches!(kind, MediaKind::Image | MediaKind::Video | MediaKind::Audio)
            {
                return Err(ApiError::bad_request(
                    "invalid_media",
                    "only photos, videos and audio are sent view once",
                ));
            }
            Outgoing::Media {
                kind,
                mimetype: m.mimetype,
                file_name: m.file_name,
                caption: req.caption,
                data,
                ptt: m.ptt,
                view_once: m.view_once,
            }
        }
        (Some(t), None) if !t.is_empty() && !req.mentions.is_empty() => Outgoing::Mentioning {
            text: t,
            mentions: req
                .mentions
                .iter()
                .map(|m| {
                    m.trim_start_matches('+')
                        .split('@')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect(),
        },
        (Some(t), None) if !t.is_empty() => Outgoing::Text(t),
        _ => {
            return Err(ApiError::bad_request(
                "missing_content",
                "give `text`, `media` (with an optional `caption`), `location`, `contacts`, `reaction`, `edit`, `revoke`, `poll` or `vote`",
            ));
        }
    };
    let mut core = hub.core.lock().await;
    let record = phone::send(&mut core, &hub.media_host, &phone, &to, out).await?;
    drop(core);
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(record).unwrap_or_default()),
    )
        .into_response())
}

async fn list_messages(
    State(hub): State<Arc<Hub>>,
    Path(phone): Path<String>,
) -> Result<Json<Value>> {
    let core = hub.core.lock().await;
    let acc = core
        .account(&phone)
        .ok_or_else(|| ApiError::phone_not_found(&phone))?;
    Ok(Json(
        serde_json::to_value(acc.secrets.messages.as_slice()).unwrap_or_default(),
    ))
}

/// Changes what WhatsApp demands of the account's 1:1 messages: the fields given change,
/// the others stay.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RestrictionsChange {
    #[serde(default)]
    require_privacy_tokens: Option<bool>,
    #[serde(default)]
    reachout_timelock: Option<bool>,
}

async fn set_restrictions(
    State(hub): State<Arc<Hub>>,
    Path(phone): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let req: RestrictionsChange = parse(&body)?;
    let mut core = hub.core.lock().await;
    let acc = core
        .account_mut(&phone)
        .ok_or_else(|| ApiError::phone_not_found(&phone))?;
    let r = &mut acc.restrictions;
    if let Some(v) = req.require_privacy_tokens {
        r.require_privacy_tokens = v;
    }
    if let Some(v) = req.reachout_timelock {
        r.reachout_timelock = v;
    }
    Ok(Json(json!({"phone": phone, "restrictions": *r})))
}

#[derive(Deserialize)]
struct Online {
    online: bool,
}

/// Takes the phone offline (`{"online": false}`) or brings it back (`true`): offline, what
/// is sent to it waits unanswered and it can do nothing; back, it handles what waited.
async fn online(
    State(hub): State<Arc<Hub>>,
    Path(phone): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let req: Online = parse(&body)?;
    let mut core = hub.core.lock().await;
    let handled = phone::set_online(&mut core, &phone, req.online).await?;
    drop(core);
    Ok(Json(
        json!({"phone": phone, "online": req.online, "handled": handled}),
    ))
}

#[derive(Deserialize)]
struct Read {
    ids: Vec<String>,
}

async fn read(
    State(hub): State<Arc<Hub>>,
    Path(phone): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let req: Read = parse(&body)?;
    let mut core = hub.core.lock().await;
    let n = phone::mark_read(&mut core, &phone, &req.ids)?;
    drop(core);
    Ok(Json(json!({"read": n})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceCall {
    to: String,
    #[serde(default)]
    video: bool,
}

/// The phone calls `to`: its linked devices ring.
async fn place_call(
    State(hub): State<Arc<Hub>>,
    Path(phone): Path<String>,
    body: Bytes,
) -> Result<Response> {
    let req: PlaceCall = parse(&body)?;
    let to = normalize_to(&req.to)?;
    let mut core = hub.core.lock().await;
    phone::ensure_online(&core, &phone)?;
    if core.account(&to).is_none() {
        return Err(ApiError::phone_not_found(&to));
    }
    let call = crate::calls::offer(&mut core, &phone, &to, req.video);
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(call).unwrap_or_default()),
    )
        .into_response())
}

/// The caller hangs up.
async fn end_call(
    State(hub): State<Arc<Hub>>,
    Path((phone, call)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let mut core = hub.core.lock().await;
    let ended = crate::calls::terminate(&mut core, &phone, &call).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "call_not_found",
            format!("phone {phone} placed no call {call}"),
        )
    })?;
    Ok(Json(serde_json::to_value(ended).unwrap_or_default()))
}

async fn list_calls(State(hub): State<Arc<Hub>>, Path(phone): Path<String>) -> Result<Json<Value>> {
    let core = hub.core.lock().await;
    if core.account(&phone).is_none() {
        return Err(ApiError::phone_not_found(&phone));
    }
    Ok(Json(
        serde_json::to_value(crate::calls::of(&core, &phone)).unwrap_or_default(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetProfile {
    /// The account's name (its push name), 1 to 25 characters.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    about: Option<String>,
    #[serde(default)]
    business: Option<bool>,
    /// A new profile photo (base64 JPEG), or `""` to remove it.
    #[serde(default)]
    picture: Option<String>,
    /// Privacy settings the owner changes in the app, by category (`{"groupadd": "none"}`).
    #[serde(default)]
    privacy: std::collections::BTreeMap<String, String>,
}

/// The phone's owner changes what others can look up: the about text, the business flag,
/// the profile photo.
async fn set_profile(
    State(hub): State<Arc<Hub>>,
    Path(phone): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let req: SetProfile = parse(&body)?;
    let picture = match req.picture.as_deref() {
        None => None,
        Some("") => Some(None),
        Some(b) => Some(Some(
            base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .map_err(|e| {
                    ApiError::bad_request("invalid_picture", format!("picture is not base64: {e}"))
                })?,
        )),
    };
    for (category, value) in &req.privacy {
        if !crate::iq::privacy_value_ok(category, value) {
            return Err(ApiError::bad_request(
                "invalid_privacy",
                format!("privacy `{category}` cannot be `{value}`"),
            ));
        }
    }
    let name = match req.name.as_deref().map(str::trim) {
        Some(n) if n.is_empty() || n.chars().count() > 25 => {
            return Err(ApiError::bad_request(
                "invalid_name",
                "name is 1 to 25 characters",
            ));
        }
        n => n.map(str::to_string),
    };
    let mut core = hub.core.lock().await;
    if core.account(&phone).is_none() {
        return Err(ApiError::phone_not_found(&phone));
    }
    if let Some(name) = &name {
        core.account_mut(&phone).expect("checked").name = name.clone();
        crate::appstate::push_name(&mut core, &phone, name).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })?;
    }
    if let Some(about) = &req.about {
        phone::about_changed(&mut core, &phone, about);
    }
    let stored = match picture {
        Some(Some(bytes)) => Some(Some(crate::state::ProfilePicture {
            id: (crate::state::now_secs() * 1000 + u64::from(rand::random::<u16>() % 1000))
                .to_string(),
            direct_path: phone::store_blob(&mut core, "image", &bytes)?,
        })),
        Some(None) => Some(None),
        None => None,
    };
    let acc = core.account_mut(&phone).expect("checked");
    if let Some(a) = req.about {
        acc.profile.about = Some(a);
    }
    if let Some(b) = req.business {
        acc.profile.business = b;
    }
    if let Some(p) = stored {
        acc.profile.picture = p;
    }
    acc.privacy.extend(req.privacy);
    let mut profile = serde_json::to_value(&acc.profile).unwrap_or_default();
    profile["name"] = json!(acc.name);
    Ok(Json(profile))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPresence {
    /// `available`, `unavailable`, or a chat state for `to`: `composing`, `recording`, `paused`.
    state: String,
    #[serde(default)]
    to: Option<String>,
}

/// The phone's user opens or leaves the app, or types in a chat.
async fn set_presence(
    State(hub): State<Arc<Hub>>,
    Path(phone): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let req: SetPresence = parse(&body)?;
    let mut core = hub.core.lock().await;
    if core.account(&phone).is_none() {
        return Err(ApiError::phone_not_found(&phone));
    }
    match (req.state.as_str(), req.to) {
        ("available" | "unavailable", None) => {
            crate::presence::phone_available(&mut core, &phone, req.state == "available");
        }
        ("composing" | "recording" | "paused", Some(to)) => {
            let to = normalize_to(&to)?;
            crate::presence::phone_chatstate(&mut core, &phone, &to, &req.state);
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_presence",
                "give {\"state\": \"available\"|\"unavailable\"}, or {\"state\": \"composing\"|\"recording\"|\"paused\", \"to\"}",
            ));
        }
    }
    Ok(Json(crate::presence::view(&core, &phone)))
}

async fn get_presence(
    State(hub): State<Arc<Hub>>,
    Path(phone): Path<String>,
) -> Result<Json<Value>> {
    let core = hub.core.lock().await;
    if core.account(&phone).is_none() {
        return Err(ApiError::phone_not_found(&phone));
    }
    Ok(Json(crate::presence::view(&core, &phone)))
}

async fn unlink(
    State(hub): State<Arc<Hub>>,
    Path((phone, device)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let device: u16 = device.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_device",
            format!("device must be a number, got {device:?}"),
        )
    })?;
    let mut core = hub.core.lock().await;
    if core.account(&phone).is_none() {
        return Err(ApiError::phone_not_found(&phone));
    }
    if device == 0 {
        return Err(ApiError::bad_request(
            "invalid_device",
            "device 0 is the phone itself and cannot be unlinked",
        ));
    }
    if !crate::router::unlink(&mut core, &phone, device) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "device_not_found",
            format!("account {phone} has no device {device}"),
        ));
    }
    drop(core);
    Ok(Json(
        json!({"phone": phone, "device": device, "unlinked": true}),
    ))
}

#[derive(Deserialize, Default)]
struct Target {
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    device: Option<u16>,
}

fn parse_optional<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse(body)
    }
}

async fn fault_disconnect(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Json<Value>> {
    let t: Target = parse_optional(&body)?;
    let mut core = hub.core.lock().await;
    let keys: Vec<(String, u16)> = core
        .conns
        .keys()
        .filter(|(p, d)| {
            t.phone.as_ref().is_none_or(|x| x == p) && t.device.is_none_or(|x| x == *d)
        })
        .cloned()
        .collect();
    for k in &keys {
        if let Some(c) = core.conns.remove(k) {
            c.send(Outbound::Drop);
        }
    }
    Ok(Json(json!({"dropped": keys.len()})))
}

/// Matching connections stay open but go quiet: no answers, no keepalive
/// pongs, no stanzas. Logins after this are served normally.
async fn fault_silence(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Json<Value>> {
    let t: Target = parse_optional(&body)?;
    let core = hub.core.lock().await;
    let mut silenced = 0;
    for ((p, d), c) in &core.conns {
        if t.phone.as_ref().is_none_or(|x| x == p) && t.device.is_none_or(|x| x == *d) {
            c.send(Outbound::Silence);
            silenced += 1;
        }
    }
    Ok(Json(json!({"silenced": silenced})))
}

#[derive(Deserialize)]
struct Count {
    count: u32,
}

async fn fault_reject(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Json<Value>> {
    let c: Count = parse(&body)?;
    hub.core.lock().await.faults.reject_connections = c.count;
    Ok(Json(json!({"rejectNext": c.count})))
}

#[derive(Deserialize)]
struct StreamError {
    phone: String,
    #[serde(default)]
    device: Option<u16>,
    /// `replaced` (another login took over) or `conflict`.
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

async fn fault_stream_error(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Json<Value>> {
    let req: StreamError = parse(&body)?;
    let kind = req.kind.unwrap_or_else(|| "replaced".into());
    if kind != "replaced" && kind != "conflict" {
        return Err(ApiError::bad_request(
            "invalid_type",
            format!("type must be \"replaced\" or \"conflict\", got {kind:?}"),
        ));
    }
    let node = wacore_binary::builder::NodeBuilder::new("stream:error")
        .children([wacore_binary::builder::NodeBuilder::new("conflict")
            .attr("type", kind)
            .build()])
        .build();
    let bytes = wacore_binary::marshal::marshal(&node)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let mut core = hub.core.lock().await;
    let keys: Vec<(String, u16)> = core
        .conns
        .keys()
        .filter(|(p, d)| *p == req.phone && req.device.is_none_or(|x| x == *d))
        .cloned()
        .collect();
    for k in &keys {
        if let Some(c) = core.conns.remove(k) {
            c.send(Outbound::NodeThenClose(bytes.clone()));
        }
    }
    Ok(Json(json!({"sent": keys.len()})))
}

#[derive(Deserialize)]
struct Ban {
    phone: String,
    #[serde(default)]
    device: Option<u16>,
    #[serde(default = "default_ban")]
    seconds: u64,
}

fn default_ban() -> u64 {
    3600
}

#[derive(Deserialize)]
struct SwallowAcks {
    phone: String,
    count: u32,
}

/// The next `count` messages sent by the phone's linked devices are delivered, but their
/// senders never get the server ack.
async fn fault_swallow_acks(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Json<Value>> {
    let req: SwallowAcks = parse(&body)?;
    let mut core = hub.core.lock().await;
    if core.account(&req.phone).is_none() {
        return Err(ApiError::phone_not_found(&req.phone));
    }
    core.faults
        .swallow_acks
        .insert(req.phone.clone(), req.count);
    Ok(Json(json!({"phone": req.phone, "swallowNext": req.count})))
}

/// The phone's next `count` messages reach linked devices damaged; each device asks for
/// its copy again (a retry receipt), and the phone sends it anew.
async fn fault_corrupt_messages(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Json<Value>> {
    let req: SwallowAcks = parse(&body)?;
    let mut core = hub.core.lock().await;
    if core.account(&req.phone).is_none() {
        return Err(ApiError::phone_not_found(&req.phone));
    }
    core.faults
        .corrupt_next
        .insert(req.phone.clone(), req.count);
    Ok(Json(json!({"phone": req.phone, "corruptNext": req.count})))
}

async fn fault_ban(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Json<Value>> {
    let req: Ban = parse(&body)?;
    let mut core = hub.core.lock().await;
    let devices: Vec<u16> = core
        .account(&req.phone)
        .ok_or_else(|| ApiError::phone_not_found(&req.phone))?
        .devices
        .keys()
        .copied()
        .filter(|d| *d != 0 && req.device.is_none_or(|x| x == *d))
        .collect();
    let until = now_secs() + req.seconds;
    for d in &devices {
        core.faults.bans.insert((req.phone.clone(), *d), until);
        // Banned devices are disconnected; their next login gets 402.
        if let Some(c) = core.conns.remove(&(req.phone.clone(), *d)) {
            c.send(Outbound::Drop);
        }
    }
    Ok(Json(json!({"banned": devices, "until": until})))
}

#[derive(Deserialize)]
struct MediaFaultReq {
    mode: String,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

async fn fault_media(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Json<Value>> {
    let req: MediaFaultReq = parse(&body)?;
    let mode = match req.mode.as_str() {
        "not_found" => MediaFault::NotFound,
        "corrupt" => MediaFault::Corrupt,
        "oversized" => MediaFault::Oversized,
        "off" | "none" => {
            hub.core.lock().await.faults.media = None;
            return Ok(Json(json!({"mode": "off"})));
        }
        other => {
            return Err(ApiError::bad_request(
                "invalid_mode",
                format!("mode must be not_found, corrupt, oversized or off, got {other:?}"),
            ));
        }
    };
    hub.core.lock().await.faults.media = Some((mode, req.count));
    Ok(Json(json!({"mode": req.mode, "count": req.count})))
}

#[derive(Deserialize)]
struct MediaExpiry {
    enabled: bool,
}

async fn fault_media_expiry(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Json<Value>> {
    let req: MediaExpiry = parse(&body)?;
    hub.core.lock().await.faults.expire_original_media = req.enabled;
    Ok(Json(json!({"enabled": req.enabled})))
}

/// The phone's user pins, archives, mutes or names a chat: app-state patches, pushed to
/// the account's devices.
async fn chat_action(
    State(hub): State<Arc<Hub>>,
    Path((phone, chat)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>> {
    let req: crate::appstate::ChatAction = parse(&body)?;
    let to = normalize_to(&chat)?;
    let jid: wacore_binary::Jid = if to.ends_with("@g.us") {
        to.parse()
    } else {
        format!("{to}@s.whatsapp.net").parse()
    }
    .map_err(|_| ApiError::bad_request("invalid_to", format!("not a chat: {chat:?}")))?;
    let mut core = hub.core.lock().await;
    phone::ensure_online(&core, &phone)?;
    let moved =
        crate::appstate::phone_action(&mut core, &phone, &jid, &req).map_err(|e| match e {
            crate::appstate::ActionError::UnknownAccount(p) => ApiError::phone_not_found(&p),
            e @ crate::appstate::ActionError::UnknownMessage(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "message_not_found", e.to_string())
            }
            e => ApiError::bad_request("invalid_action", e.to_string()),
        })?;
    let state = crate::appstate::chat_states(&core, &phone)
        .remove(&jid.to_string())
        .unwrap_or_default();
    let collections: serde_json::Map<String, Value> =
        moved.into_iter().map(|(n, v)| (n, json!(v))).collect();
    Ok(Json(
        json!({"chat": jid.to_string(), "state": state, "collections": collections}),
    ))
}

/// The chats' state as the phone shows it: what any of the account's devices pinned,
/// archived, muted or named.
async fn chat_states(
    State(hub): State<Arc<Hub>>,
    Path(phone): Path<String>,
) -> Result<Json<Value>> {
    let core = hub.core.lock().await;
    if core.account(&phone).is_none() {
        return Err(ApiError::phone_not_found(&phone));
    }
    Ok(Json(json!(crate::appstate::chat_states(&core, &phone))))
}

async fn get_network(State(hub): State<Arc<Hub>>) -> Json<crate::network::Network> {
    Json(hub.network.get())
}

/// The latency and jitter every frame to a client takes from now on (`0` turns it off).
async fn set_network(
    State(hub): State<Arc<Hub>>,
    body: Bytes,
) -> Result<Json<crate::network::Network>> {
    let req: crate::network::Network = parse(&body)?;
    let max = crate::network::MAX_MS;
    if req.latency_ms > max || req.jitter_ms > max {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_network",
            format!("latencyMs and jitterMs are at most {max}"),
        ));
    }
    hub.network.set(req);
    Ok(Json(req))
}

#[derive(Deserialize)]
struct PhoneForgets {
    phone: String,
    id: String,
}

/// The phone drops a sent message from what it keeps (as after its retention ran out):
/// retry and media re-upload requests for it then find nothing.
async fn fault_phone_forgets(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Json<Value>> {
    let req: PhoneForgets = parse(&body)?;
    let mut core = hub.core.lock().await;
    let acc = core
        .account_untracked(&req.phone)
        .ok_or_else(|| PhoneError::UnknownAccount(req.phone.clone()))?;
    let before = acc.secrets.outbox.len();
    acc.secrets.outbox.retain(|c| c.id != req.id);
    let forgotten = before != acc.secrets.outbox.len();
    if forgotten {
        core.changes.push(Change::Forgot {
            phone: req.phone,
            id: req.id,
        });
    }
    drop(core);
    Ok(Json(json!({"forgotten": forgotten})))
}
