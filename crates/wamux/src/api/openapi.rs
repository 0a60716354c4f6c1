//! The OpenAPI 3.1 document, generated from the handlers: each handler carries a
//! `#[utoipa::path]` attribute next to its code, the message, session and delivery shapes
//! derive their schemas from the types the handlers serialize, and [`document`] collects
//! them. `GET /api/openapi.json` serves it (behind the API key like every `/api` route),
//! `wamux openapi` prints it, and `docs/openapi.json` is the committed copy a test keeps
//! current. The router and the document are checked against each other by tests: every
//! route the router serves is documented, and every documented operation answers.
//!
//! Handlers that build their JSON by hand describe it with the schema types in [`schemas`],
//! which exist only for the document; a test checks real answers against them.

use axum::Json;
use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "docs", operation_id = "openapi", summary = "This document",
    responses((status = 200, description = "The OpenAPI 3.1 document of this server", body = serde_json::Value)))]
async fn openapi_json() -> Json<Value> {
    Json(document())
}

/// The operations whose handlers serve two paths: (documented path, alias path, operation id).
/// `GET /api/sessions/{sessionId}` is the REST spelling of the seed's `/api/status/{sessionId}`.
const ALIASES: &[(&str, &str, &str)] = &[(
    "/api/status/{sessionId}",
    "/api/sessions/{sessionId}",
    "getSession",
)];

/// The security schemes; any one of them is enough.
const SCHEMES: [&str; 3] = ["apiKeyHeader", "apiKeyQuery", "bearer"];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wamux",
        description = "WhatsApp multi-session HTTP API. Every `/api` route (and `/metrics`) needs \
            an API key (the admin key, or a scoped key from `POST /api/keys`), as the `X-API-Key` header, the `apiKey` query parameter or \
            `Authorization: Bearer <key>`. Errors are JSON: `{\"error\":{\"code\",\"message\"}}`. \
            Live events also arrive over Socket.IO (v4) at `/socket.io/` and as webhooks; see \
            docs/ui-and-socketio.md and docs/webhooks.md.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        super::health::health,
        super::sessions::start_session,
        super::sessions::qr,
        super::sessions::status,
        super::sessions::list,
        super::sessions::delete_session,
        super::sessions::logout,
        super::sessions::restart,
        super::sessions::pairing_code,
        super::sessions::settings,
        super::sessions::set_settings,
        super::passkey::passkey,
        super::passkey::submit_assertion,
        super::passkey::confirm,
        super::contacts::check,
        super::messages::send_message,
        super::messages::send_location,
        super::messages::send_contact,
        super::messages::send_reaction,
        super::messages::send_poll,
        super::messages::history,
        super::messages::outbox,
        super::messages::chats,
        super::messages::change_chat,
        super::messages::cancel_queued,
        super::messages::resend,
        super::messages::edit,
        super::messages::mark_read,
        super::messages::forward,
        super::messages::star,
        super::messages::receipts,
        super::presence::set,
        super::contacts::info,
        super::contacts::picture,
        super::contacts::block,
        super::contacts::unblock,
        super::groups::create,
        super::groups::list,
        super::groups::show,
        super::groups::update,
        super::groups::participants,
        super::groups::invite_link,
        super::groups::revoke_invite_link,
        super::groups::join,
        super::groups::leave,
        super::groups::picture,
        super::groups::set_picture,
        super::groups::remove_picture,
        super::groups::create_community,
        super::groups::communities,
        super::groups::community_groups,
        super::groups::link_groups,
        super::groups::unlink_group,
        super::presence::subscribe,
        super::presence::reject_call,
        super::presence::call_settings,
        super::presence::set_call_settings,
        super::messages::revoke,
        super::media::send_media,
        super::media::retry,
        super::webhooks::get_webhook,
        super::webhooks::set_webhook,
        super::webhooks::delete_webhook,
        super::webhooks::list_deliveries,
        super::webhooks::retry_delivery,
        crate::web::webhook_test::send_test,
        super::events::list,
        super::keys::create,
        super::keys::list,
        super::keys::revoke,
        super::keys::me,
        super::keys::audit,
        openapi_json,
        super::probes::healthz,
        super::probes::readyz,
        super::probes::metrics,
        crate::media::serve::serve,
        crate::web::index,
        crate::web::asset,
        crate::web::docs,
    ),
    tags(
        (name = "sessions", description = "WhatsApp linked-device sessions: create, log in by QR or pairing code, watch, remove"),
        (name = "messages", description = "Send text and read the message history"),
        (name = "groups", description = "Groups: create, read, participants, info and settings, invite links, join, leave"),
        (name = "media", description = "Send files; download received ones again; stored files under /uploads"),
        (name = "webhooks", description = "A session's webhook (Standard Webhooks signatures) and its deliveries"),
        (name = "events", description = "The event log, to catch up on what a receiver missed"),
        (name = "keys", description = "Scoped API keys (admin only), who a key is, and the audit log"),
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "docs", description = "This document and the page that shows it"),
        (name = "ui", description = "The management web UI"),
    ),
)]
struct ApiDoc;

/// The whole document, as served and committed.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    for (path, alias, id) in ALIASES {
        let mut op = doc["paths"][path]["get"].clone();
        op["operationId"] = (*id).into();
        doc["paths"][alias]["get"] = op;
    }
    secure(&mut doc);
    binary_bodies(&mut doc);
    doc
}

/// [`document`] as the pretty JSON text of `docs/openapi.json`, with a final newline.
pub fn document_text() -> String {
    let mut s = serde_json::to_string_pretty(&document()).expect("the document serializes");
    s.push('\n');
    s
}

/// Adds the security schemes, marks every keyed operation (`/api/*` and `/metrics`) as
/// needing one of them, and gives each a 401 answer: the auth middleware is a layer, not a
/// handler, so the handlers' own attributes do not say it.
fn secure(doc: &mut Value) {
    doc["components"]["securitySchemes"] = json!({
        "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "apiKeyQuery": {"type": "apiKey", "in": "query", "name": "apiKey"},
        "bearer": {"type": "http", "scheme": "bearer", "description": "the API key as a bearer token"},
    });
    let requirement: Vec<Value> = SCHEMES.iter().map(|s| json!({ *s: [] })).collect();
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        if !(path.starts_with("/api/") || path == "/metrics") {
            continue;
        }
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            op["security"] = Value::Array(requirement.clone());
            let error =
                json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
            op["responses"]["401"] = json!({
                "description": "no API key, or a wrong one (`unauthorized`)",
                "content": error,
            });
            op["responses"]["403"] = json!({
                "description": "`forbidden`: the key may not use this session (whether it exists or not) or this route; `missing_scope`: the key lacks the scope the call needs",
                "content": error,
            });
            op["responses"]["429"] = json!({
                "description": "`rate_limited`: too many wrong or missing keys from this address; wait `Retry-After` seconds",
                "content": error,
            });
        }
    }
}

/// Files (the QR PNG, stored media) as OpenAPI 3.1 says binary content is described: a
/// string of that media type. utoipa would describe `Vec<u8>` as an array of integers.
fn binary_bodies(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for op in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|i| i.values_mut())
    {
        let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
            continue;
        };
        // `get_mut`, not `[...]`: indexing a map for writing inserts a null.
        let contents = responses
            .values_mut()
            .filter_map(|r| r.get_mut("content").and_then(Value::as_object_mut));
        for content in contents {
            for (media_type, media) in content.iter_mut() {
                if media_type.starts_with("image/") || media_type == "application/octet-stream" {
                    media["schema"] = json!({"type": "string", "contentMediaType": media_type});
                }
            }
        }
    }
}

/// Shapes of hand-built JSON answers and of request bodies that handlers parse field by
/// field (to accept the seed's aliases and name the bad field). Only the document uses them.
pub mod schemas {
    use std::collections::BTreeMap;

    use serde::Serialize;
    use utoipa::ToSchema;

    use crate::model::Message;
    use crate::session::SessionInfo;
    pub use crate::store::webhooks::Delivery;

    /// Every error: `{"error":{"code","message"}}`.
    #[derive(Serialize, ToSchema)]
    pub struct ErrorBody {
        pub error: ErrorDetail,
    }

    #[derive(Serialize, ToSchema)]
    pub struct ErrorDetail {
        /// Stable, machine-readable: `session_not_found`, `invalid_field`, `unauthorized`, ...
        #[schema(example = "session_not_found")]
        pub code: String,
        /// For people: what is wrong and what to do.
        pub message: String,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Health {
        #[schema(example = "ok")]
        pub status: String,
        pub version: String,
        pub uptime_seconds: u64,
        pub sessions: SessionCounts,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SessionCounts {
        pub total: u64,
        /// Every status, with 0 where no session has it.
        pub by_status: BTreeMap<String, u64>,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct StartSession {
        /// Letters, digits, `_` and `-`, at most 64.
        #[schema(example = "s1")]
        pub session_id: String,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SessionStarted {
        #[serde(flatten)]
        pub session: SessionInfo,
        pub success: bool,
        /// False when the session already existed (the call is idempotent).
        pub created: bool,
        pub message: String,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Qr {
        pub session_id: String,
        /// The raw QR string, for a QR library or `POST /admin/phones/:phone/scan` of wa-sim.
        pub qr: String,
        /// The QR code as a PNG data URL.
        #[schema(example = "data:image/png;base64,iVBORw0KGgo...")]
        pub qr_image: String,
        /// Unix seconds.
        pub expires_at: i64,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Cancelled {
        pub message_id: String,
        pub cancelled: bool,
    }

    #[derive(Serialize, ToSchema)]
    pub struct KeyRevoked {
        #[schema(example = "key_3f9c2a1b0d4e5f60")]
        pub id: String,
        pub revoked: bool,
    }

    #[derive(Serialize, ToSchema)]
    pub struct SessionList {
        pub sessions: Vec<SessionInfo>,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SessionDeleted {
        pub success: bool,
        pub session_id: String,
        pub deleted: bool,
    }

    #[derive(Serialize, ToSchema)]
    pub struct PairingCodeRequest {
        /// The phone number of the account to link, in international form.
        #[schema(example = "15551234567")]
        pub phone: String,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct PairingCode {
        pub session_id: String,
        /// To type on the phone: Linked devices > Link with phone number.
        #[schema(example = "ABCD-EFGH")]
        pub code: String,
    }

    /// `to` may be `15551234567`, `+1 555 123 4567`, `15551234567@s.whatsapp.net`,
    /// `15551234567@c.us`, a `@lid` or a `@g.us` group.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SendMessage {
        #[schema(example = "s1")]
        pub session_id: String,
        /// Also accepted as `number`.
        #[schema(example = "15551234567")]
        pub to: String,
        /// Also accepted as `message`. At most 65536 bytes.
        #[schema(example = "hello")]
        pub text: String,
        /// The message this one replies to (also `quotedMessageId`).
        pub quoted_id: Option<String>,
        /// Queue it: answered with 202 at once, even while the session is offline, and sent
        /// when it is connected, in order per chat, after a restart too. The default is
        /// `WAMUX_SEND_QUEUE`.
        pub queue: Option<bool>,
        /// Send it at this Unix time (seconds; at most a year ahead), through the queue.
        pub send_at: Option<i64>,
    }

    /// Also `number`, `quotedId`, `queue` and `sendAt` as for `/api/send-message`.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SendLocation {
        #[schema(example = "s1")]
        pub session_id: String,
        #[schema(example = "15551234567")]
        pub to: String,
        /// Degrees, -90 to 90.
        #[schema(example = 52.5163)]
        pub latitude: f64,
        /// Degrees, -180 to 180.
        #[schema(example = 13.3777)]
        pub longitude: f64,
        /// The place's name; at most 1024 bytes.
        #[schema(example = "Brandenburger Tor")]
        pub name: Option<String>,
        /// At most 1024 bytes.
        pub address: Option<String>,
        pub quoted_id: Option<String>,
        pub queue: Option<bool>,
        pub send_at: Option<i64>,
    }

    /// One card: a name and a phone number (the card is made as WhatsApp's app makes it),
    /// or a whole vCard (its `FN` names it unless `name` is given).
    #[derive(Serialize, ToSchema)]
    pub struct CardInput {
        #[schema(example = "Ana Ruiz")]
        pub name: Option<String>,
        /// With country code.
        #[schema(example = "15551234567")]
        pub phone: Option<String>,
        /// vCard 3.0 text, at most 16 KiB.
        pub vcard: Option<String>,
    }

    /// Also `number`, `quotedId`, `queue` and `sendAt` as for `/api/send-message`.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SendContact {
        #[schema(example = "s1")]
        pub session_id: String,
        #[schema(example = "15551234567")]
        pub to: String,
        /// 1 to 100 cards; several go as one contacts array.
        pub contacts: Vec<CardInput>,
        pub quoted_id: Option<String>,
        pub queue: Option<bool>,
        pub send_at: Option<i64>,
    }

    /// Also `number` and `quotedId` as for `/api/send-message` (a poll is not queued).
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SendPoll {
        #[schema(example = "s1")]
        pub session_id: String,
        #[schema(example = "15551234567")]
        pub to: String,
        /// 1 to 255 characters (also `name`).
        #[schema(example = "Lunch?")]
        pub question: String,
        /// 2 to 12 distinct options, 1 to 100 characters each.
        #[schema(example = json!(["12:00", "13:00"]))]
        pub options: Vec<String>,
        /// Whether a voter may pick several (default false).
        pub multiple: Option<bool>,
        pub quoted_id: Option<String>,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SendReaction {
        #[schema(example = "s1")]
        pub session_id: String,
        /// A message of the session's history (sent or received).
        #[schema(example = "3EB0C0FFEE00112233")]
        pub message_id: String,
        /// One emoji; `""` takes our reaction back. Also `reaction`.
        #[schema(example = "👍")]
        pub emoji: String,
    }

    /// The sent message, plus `success` and `messageId` (the seed's answer).
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Sent {
        #[serde(flatten)]
        pub message: Message,
        pub success: bool,
        pub message_id: String,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct History {
        pub session_id: String,
        /// Newest first.
        pub messages: Vec<Message>,
        /// Pass as `cursor` for the next page; null on the last one.
        pub next_cursor: Option<String>,
    }

    /// JSON: the file as `url` (fetched by the server) or `base64`.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SendMediaJson {
        #[schema(example = "s1")]
        pub session_id: String,
        /// Also `number`.
        #[schema(example = "15551234567")]
        pub to: String,
        /// Also `mediaUrl`. Give `url` or `base64`, not both.
        pub url: Option<String>,
        /// Also `data`; plain base64 or a `data:` URL.
        pub base64: Option<String>,
        /// Also `mimeType`; guessed from the content when absent.
        pub mimetype: Option<String>,
        /// Also `filename`.
        pub file_name: Option<String>,
        pub caption: Option<String>,
        /// `image`, `video`, `audio`, `ptt`, `document` or `sticker`; from the MIME type when absent.
        #[serde(rename = "type")]
        pub kind: Option<String>,
        /// Send it view once (images, videos and audio only).
        pub view_once: Option<bool>,
    }

    /// Multipart: the same fields as text parts, and the file as the `file` part.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SendMediaForm {
        pub session_id: String,
        pub to: String,
        #[schema(format = Binary, content_media_type = "application/octet-stream")]
        pub file: String,
        pub mimetype: Option<String>,
        pub file_name: Option<String>,
        pub caption: Option<String>,
        #[serde(rename = "type")]
        pub kind: Option<String>,
        /// `true` sends it view once.
        pub view_once: Option<String>,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SetWebhook {
        #[schema(example = "https://example.com/hooks/wamux")]
        pub url: String,
        /// Event names, or `["all"]` (the default). A comma-separated string is accepted too.
        #[schema(example = json!(["message-received", "message-delivered"]))]
        pub events: Option<Vec<String>>,
        /// Extra headers sent with every delivery (at most 32); never echoed back.
        pub headers: Option<BTreeMap<String, String>>,
        /// A `whsec_...` signing secret; one is generated (and shown once) when absent.
        pub secret: Option<String>,
        /// `wamux` (the default) or `evolution`: Evolution API v2's envelope and event names
        /// (`events` then takes Evolution's names, `MESSAGES_UPSERT`, ...; empty is all).
        #[schema(example = "wamux")]
        pub format: Option<String>,
        /// Evolution format only: post each event to `url/<event-name>`.
        pub by_events: Option<bool>,
        /// Evolution format only: received files inline, as `data.message.base64`.
        pub base64: Option<bool>,
        /// `false` keeps the webhook but sends nothing; events pass it by (default `true`).
        pub enabled: Option<bool>,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct WebhookView {
        pub session_id: String,
        pub url: String,
        /// `wamux` or `evolution`.
        pub format: String,
        pub events: Vec<String>,
        /// Header names, with each value shown as `***`.
        pub headers: BTreeMap<String, String>,
        /// `false`: set to send nothing.
        pub enabled: bool,
        /// Evolution format only.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub by_events: Option<bool>,
        /// Evolution format only.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub base64: Option<bool>,
        /// `active` or `disabled` (after a 410 Gone).
        pub status: String,
        pub disabled_reason: Option<String>,
        pub created_at: i64,
        pub updated_at: i64,
        /// Only in the answer that generated it.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub secret: Option<String>,
        /// Deliveries by status (`GET` only).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub deliveries: Option<BTreeMap<String, i64>>,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct WebhookDeleted {
        pub session_id: String,
        pub deleted: bool,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct DeliveryView {
        #[serde(flatten)]
        pub delivery: Delivery,
        /// The `webhook-id` header the delivery carries.
        pub webhook_id: String,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Deliveries {
        /// Newest first.
        pub deliveries: Vec<DeliveryView>,
        /// Pass as `before` for the next page; null on the last one.
        pub next_cursor: Option<i64>,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct WebhookTest {
        pub session_id: String,
        /// The receiver answered 2xx.
        pub ok: bool,
        pub webhook_id: String,
        pub url: String,
        /// The receiver's HTTP status, null when it could not be reached.
        pub status: Option<u16>,
        pub error: Option<String>,
        pub elapsed_ms: u64,
    }

    /// One recorded event: the webhook body plus its cursor.
    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct EventItem {
        /// The cursor: pass it as `after`.
        pub id: i64,
        /// The `webhook-id` its deliveries carry.
        pub webhook_id: String,
        #[schema(example = "message-received")]
        pub event: String,
        pub session_id: String,
        /// Unix seconds.
        pub timestamp: i64,
        /// The message, status or QR the event is about.
        pub data: serde_json::Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub chat_id: Option<String>,
    }

    #[derive(Serialize, ToSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct Events {
        pub events: Vec<EventItem>,
        /// Where to continue; the same value when nothing is new.
        pub next_cursor: String,
        pub has_more: bool,
    }
}
