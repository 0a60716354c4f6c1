//! Evolution API's dialect, end to end against the simulator: its REST routes called as its
//! documentation calls them (header `apikey`), and its webhook format as a receiver written
//! for Evolution sees it.
//!
//! The golden shapes below are Evolution 2.3's, from its source (`prepareMessage`, the
//! `messages.update` handler, `connectionUpdate`, the instance controller, the webhook
//! controller): every field with its JSON type. Where wamux leaves a field out on purpose,
//! the test says so next to the shape, and `docs/migrating-from-evolution.md` lists it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{KEY, Options, TestApp, into_json, wait_for};
use crate::webhooks::{Hit, Receiver};

const ALICE: &str = "15550008001";
const BOB: &str = "15550008002";
const CAROL: &str = "15550008003";
const DAVE: &str = "15550008004";
const ERIN: &str = "15550008005";
const NOBODY: &str = "15550008099";
const LONG: Duration = Duration::from_secs(60);

/// A server speaking Evolution's dialect, whose webhooks may go to this machine.
async fn app() -> TestApp {
    TestApp::start_with(Options {
        sim: true,
        configure: Some(Box::new(|c| {
            c.webhook.allow_private = true;
            c.compat_evolution = true;
        })),
        ..Options::default()
    })
    .await
}

/// A call with Evolution's `apikey` header.
async fn evo(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = app
        .http
        .request(method, app.url(path))
        .header("apikey", key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    into_json(r.send().await.unwrap()).await
}

/// The JSON type skeleton of a value: what the golden tests compare.
fn shape(v: &Value) -> Value {
    match v {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("boolean"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(a) => Value::Array(a.iter().take(1).map(shape).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
    }
}

#[track_caller]
fn assert_shape(got: &Value, want: Value) {
    assert_eq!(
        shape(got),
        want,
        "shape differs from Evolution's; the body was {got:#}"
    );
}

/// Evolution's webhook envelope around `data`, for a linked instance (`sender` is its JID).
fn envelope(data: Value) -> Value {
    let mut e = envelope_unlinked(data);
    e["sender"] = json!("string");
    e
}

/// The envelope before the instance is linked: no `sender` yet.
fn envelope_unlinked(data: Value) -> Value {
    json!({
        "event": "string", "instance": "string", "data": data, "destination": "string",
        "date_time": "string", "server_url": "string", "apikey": "null",
    })
}

/// Evolution's message record (`prepareMessage`) with `message` of the given shape.
///
/// Left out on purpose: the `contextInfo` Evolution copies into plain sends (an empty
/// mention list and a disappearing-mode timestamp); it is there when a message quotes,
/// mentions or forwards.
fn record(key: Value, message: Value) -> Value {
    json!({
        "key": key, "pushName": "string", "status": "string", "message": message,
        "messageType": "string", "messageTimestamp": "number", "instanceId": "string",
        "source": "string",
    })
}

fn sent_key() -> Value {
    json!({"remoteJid": "string", "fromMe": "boolean", "id": "string"})
}

/// Message `id` of `session`'s history.
async fn entry(app: &TestApp, session: &str, id: &str) -> Value {
    let (_, h) = app
        .get_json(&format!("/api/messages/{session}?limit=100"))
        .await;
    h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("message {id} is not in the history: {h}"))
}

/// Collects webhook deliveries; takes the one wanted and keeps the others for later.
struct Hook {
    rx: Receiver,
    backlog: Vec<Hit>,
}

impl Hook {
    async fn take(&mut self, event: &str, pred: impl Fn(&Value) -> bool) -> Hit {
        if let Some(i) = self
            .backlog
            .iter()
            .position(|h| h.json()["event"] == event && pred(&h.json()))
        {
            return self.backlog.remove(i);
        }
        loop {
            let Some(hit) = self.rx.try_next(LONG).await else {
                let seen: Vec<Value> = self.backlog.iter().map(Hit::json).collect();
                panic!("no matching {event} within {LONG:?}; these came: {seen:#?}");
            };
            let body = hit.json();
            if body["event"] == event && pred(&body) {
                return hit;
            }
            self.backlog.push(hit);
        }
    }
}

/// Creates an Evolution instance with a webhook for `events` and links it to `phone` by
/// its QR code, as Evolution's documentation goes: create with `qrcode: true`, the phone
/// scans the code, `connectionState` says `open`. Returns the instance token and the hook.
async fn linked_instance(
    app: &TestApp,
    name: &str,
    phone: &str,
    events: &[&str],
) -> (String, Hook, Value) {
    let sim = app.sim.as_ref().unwrap();
    let rx = Receiver::start().await;
    let (s, created) = evo(
        app,
        Method::POST,
        "/instance/create",
        KEY,
        Some(json!({
            "instanceName": name,
            "qrcode": true,
            "integration": "WHATSAPP-BAILEYS",
            "webhook": {"url": rx.url, "byEvents": false, "base64": false, "events": events},
        })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let token = created["hash"].as_str().unwrap().to_owned();
    let code = created["qrcode"]["code"]
        .as_str()
        .expect("qrcode: true shows the QR code")
        .to_owned();
    sim.scan(phone, &code).await;
    let mut state = String::new();
    for _ in 0..600 {
        let (s, b) = evo(
            app,
            Method::GET,
            &format!("/instance/connectionState/{name}"),
            &token,
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        state = b["instance"]["state"].as_str().unwrap().to_owned();
        if state == "open" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "open");
    (
        token,
        Hook {
            rx,
            backlog: Vec::new(),
        },
        created,
    )
}

/// Evolution's documented flow: create an instance with a webhook, connect by QR, send a
/// text, get the reply as `messages.upsert` with the text in `message.conversation`, and the
/// delivery as `messages.update` `DELIVERY_ACK`; every body in Evolution's shapes.
#[tokio::test]
async fn an_evolution_client_links_sends_and_hears_replies_and_receipts() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(ALICE, "Alice").await;
    sim.phone(BOB, "Bob").await;
    let (token, mut hook, created) = linked_instance(
        &app,
        "evo1",
        ALICE,
        &[
            "QRCODE_UPDATED",
            "CONNECTION_UPDATE",
            "MESSAGES_UPSERT",
            "MESSAGES_UPDATE",
            "SEND_MESSAGE",
        ],
    )
    .await;

    // The create answer.
    let mut want = json!({
        "instance": {"instanceName": "string", "instanceId": "string", "integration": "string",
                     "webhookWaBusiness": "null", "accessTokenWaBusiness": "string", "status": "string"},
        "hash": "string",
        "webhook": {"webhookUrl": "string", "webhookHeaders": {}, "webhookByEvents": "boolean", "webhookBase64": "boolean"},
        "websocket": {}, "rabbitmq": {}, "nats": {}, "sqs": {},
        "settings": {"rejectCall": "boolean", "msgCall": "string", "groupsIgnore": "boolean",
                     "alwaysOnline": "boolean", "readMessages": "boolean", "readStatus": "boolean",
                     "syncFullHistory": "boolean", "wavoipToken": "string"},
        "qrcode": {"pairingCode": "null", "code": "string", "base64": "string", "count": "number"},
    });
    // Evolution echoes the headers given; none were.
    want["webhook"]["webhookHeaders"] = json!({});
    assert_shape(&created, want);
    assert_eq!(created["instance"]["instanceName"], "evo1");
    assert!(
        created["qrcode"]["base64"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );

    // The QR code and the link, as webhooks.
    let qr = hook.take("qrcode.updated", |_| true).await.json();
    assert_shape(
        &qr,
        envelope_unlinked(
            json!({"qrcode": {"instance": "string", "pairingCode": "null", "code": "string", "base64": "string"}}),
        ),
    );
    assert_eq!(qr["instance"], "evo1");
    assert_eq!(qr["data"]["qrcode"]["code"], created["qrcode"]["code"]);
    let open = hook
        .take("connection.update", |b| b["data"]["state"] == "open")
        .await
        .json();
    let mut want = json!({"instance": "string", "state": "string", "statusReason": "number",
                          "wuid": "string", "profileName": "string", "profilePictureUrl": "null"});
    // As in Evolution, the name is left out while WhatsApp has not told it yet.
    if open["data"].get("profileName").is_none() {
        want.as_object_mut().unwrap().remove("profileName");
    }
    assert_shape(&open, envelope(want));
    assert_eq!(open["data"]["wuid"], format!("{ALICE}@s.whatsapp.net"));
    assert_eq!(open["sender"], format!("{ALICE}@s.whatsapp.net"));
    assert_eq!(open["data"]["statusReason"], 200);

    // sendText, with the instance's own token.
    let (s, sent) = evo(
        &app,
        Method::POST,
        "/message/sendText/evo1",
        &token,
        Some(json!({"number": BOB, "text": "Olá, Bob"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{sent}");
    assert_shape(&sent, record(sent_key(), json!({"conversation": "string"})));
    assert_eq!(sent["key"]["remoteJid"], format!("{BOB}@s.whatsapp.net"));
    assert_eq!(sent["key"]["fromMe"], true);
    assert_eq!(sent["message"]["conversation"], "Olá, Bob");
    assert_eq!(sent["messageType"], "conversation");
    assert_eq!(sent["pushName"], "Você");
    let id = sent["key"]["id"].as_str().unwrap().to_owned();

    // send.message, then the server's and Bob's phone's acks.
    let ev = hook.take("send.message", |_| true).await.json();
    assert_shape(
        &ev,
        envelope(record(sent_key(), json!({"conversation": "string"}))),
    );
    assert_eq!(ev["data"]["key"]["id"], id.as_str());
    assert_eq!(ev["data"]["status"], "PENDING");
    let update = json!({"keyId": "string", "remoteJid": "string", "fromMe": "boolean",
                        "status": "string", "instanceId": "string", "messageId": "string"});
    for status in ["SERVER_ACK", "DELIVERY_ACK"] {
        let ev = hook
            .take("messages.update", |b| {
                b["data"]["keyId"] == id.as_str() && b["data"]["status"] == status
            })
            .await
            .json();
        assert_shape(&ev, envelope(update.clone()));
        assert_eq!(ev["data"]["remoteJid"], format!("{BOB}@s.whatsapp.net"));
        assert_eq!(ev["data"]["fromMe"], true);
        assert_eq!(ev["data"]["instanceId"], created["instance"]["instanceId"]);
    }
    assert!(
        sim.messages(BOB)
            .await
            .iter()
            .any(|m| m["text"] == "Olá, Bob"),
        "Bob's phone shows the text"
    );

    // Bob answers: messages.upsert with the text in message.conversation.
    let reply = sim.send(BOB, ALICE, "Tudo bem!").await;
    let ev = hook
        .take("messages.upsert", |b| b["data"]["key"]["id"] == reply["id"])
        .await;
    assert_eq!(ev.path, "/hook", "no byEvents: the URL itself");
    let ev = ev.json();
    let mut key = json!({"remoteJid": "string", "fromMe": "boolean", "id": "string", "addressingMode": "string"});
    if ev["data"]["key"].get("remoteJidAlt").is_some() {
        key["remoteJidAlt"] = json!("string");
    }
    assert_shape(
        &ev,
        envelope(record(key, json!({"conversation": "string"}))),
    );
    assert_eq!(ev["data"]["message"]["conversation"], "Tudo bem!");
    assert_eq!(ev["data"]["key"]["fromMe"], false);
    assert_eq!(
        ev["data"]["key"]["remoteJid"],
        format!("{BOB}@s.whatsapp.net")
    );
    assert_eq!(ev["data"]["pushName"], "Bob");
    assert_eq!(ev["data"]["status"], "DELIVERY_ACK");
    assert_eq!(ev["data"]["messageType"], "conversation");

    // Reading it sends the receipt to Bob's phone.
    let (s, b) = evo(
        &app,
        Method::POST,
        "/chat/markMessageAsRead/evo1",
        &token,
        Some(json!({"readMessages": [{"remoteJid": format!("{BOB}@s.whatsapp.net"), "fromMe": false, "id": reply["id"]}]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b, json!({"message": "Read messages", "read": "success"}));
    let rid = reply["id"].as_str().unwrap().to_owned();
    crate::helpers::wait_until(LONG, "Bob to see his message read", || async {
        sim.messages(BOB)
            .await
            .iter()
            .any(|m| m["id"] == rid.as_str() && m["status"] == "read")
    })
    .await;

    // Bob reads ours: READ.
    sim.read(BOB, &[&id]).await;
    let ev = hook
        .take("messages.update", |b| {
            b["data"]["keyId"] == id.as_str() && b["data"]["status"] == "READ"
        })
        .await
        .json();
    assert_shape(&ev, envelope(update));

    // The history, a page at a time, as findMessages gives it.
    let (s, found) = evo(
        &app,
        Method::POST,
        "/chat/findMessages/evo1",
        &token,
        Some(json!({"where": {"key": {"remoteJid": format!("{BOB}@s.whatsapp.net")}}, "offset": 1, "page": 2})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{found}");
    assert_eq!(found["messages"]["total"], 2, "{found}");
    assert_eq!(found["messages"]["pages"], 2);
    assert_eq!(found["messages"]["currentPage"], 2);
    let records = found["messages"]["records"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    // Page 2 of 1 each, newest first: our text, sent before Bob's answer.
    assert_eq!(records[0]["key"]["id"], id.as_str());
    assert_shape(
        &records[0],
        json!({"id": "string", "key": sent_key(), "pushName": "string",
               "message": {"conversation": "string"}, "contextInfo": "null",
               "messageType": "string", "messageTimestamp": "number", "instanceId": "string",
               "source": "string", "MessageUpdate": [{"status": "string"}]}),
    );
    assert_eq!(records[0]["MessageUpdate"][0]["status"], "READ");
    let (s, mine) = evo(
        &app,
        Method::POST,
        "/chat/findMessages/evo1",
        &token,
        Some(json!({"where": {"key": {"fromMe": false}}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{mine}");
    assert_eq!(mine["messages"]["total"], 1);
    assert_eq!(
        mine["messages"]["records"][0]["message"]["conversation"],
        "Tudo bem!"
    );

    // The chat list: Bob's chat with its last message.
    let (s, chats) = evo(
        &app,
        Method::POST,
        "/chat/findChats/evo1",
        &token,
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{chats}");
    let chats = chats.as_array().unwrap();
    assert_eq!(chats.len(), 1, "{chats:?}");
    assert_eq!(chats[0]["remoteJid"], format!("{BOB}@s.whatsapp.net"));
    assert_eq!(
        chats[0]["lastMessage"]["message"]["conversation"],
        "Tudo bem!"
    );
    assert_eq!(chats[0]["unreadCount"], 0, "Bob's answer was read");
    let mut shape_of = chats[0].clone();
    shape_of["lastMessage"] = json!({});
    assert_shape(
        &shape_of,
        json!({"id": "null", "remoteJid": "string", "pushName": "string", "profilePicUrl": "null",
               "updatedAt": "string", "windowStart": "null", "windowExpires": "null",
               "windowActive": "boolean", "lastMessage": {}, "unreadCount": "number",
               "isSaved": "boolean"}),
    );

    // Logging out closes the connection: `close` with Baileys' loggedOut reason.
    let (s, b) = evo(&app, Method::DELETE, "/instance/logout/evo1", &token, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let ev = hook
        .take("connection.update", |b| b["data"]["state"] == "close")
        .await
        .json();
    assert_shape(
        &ev,
        envelope(json!({"instance": "string", "state": "string", "statusReason": "number"})),
    );
    assert_eq!(ev["data"]["statusReason"], 401);
}

/// Every other event Evolution sends, from a real exchange: files inline (`base64`) and
/// by link, what the phone sends itself, edits, deletions, calls, presence and groups; and
/// the webhook options (`byEvents`, `jwt_key`, `enabled: false`).
#[tokio::test]
async fn every_evolution_event_comes_in_evolution_s_shape() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    for (p, n) in [(CAROL, "Carol"), (DAVE, "Dave"), (ERIN, "Erin")] {
        sim.phone(p, n).await;
    }
    let (token, hook, _) = linked_instance(&app, "evo2", CAROL, &[]).await;
    drop(hook);
    // byEvents and base64, set the way Evolution's code reads it; a jwt_key header. A
    // signing secret set first through our own API stays: deliveries are signed as ever.
    let mut rx = Receiver::start().await;
    use base64::Engine as _;
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(b"evolution-receivers-verify-too!!")
    );
    let (s, b) = app
        .post_json(
            "/api/evo2/webhook",
            json!({"url": rx.url, "format": "evolution", "secret": secret}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["format"], "evolution");
    let (s, row) = evo(
        &app,
        Method::POST,
        "/webhook/set/evo2",
        &token,
        Some(json!({"webhook": {
            "enabled": true, "url": rx.url, "byEvents": true, "base64": true,
            "headers": {"jwt_key": "receiver-shared-secret"}, "events": [],
        }})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{row}");
    let webhook_row = json!({"id": "string", "url": "string", "headers": {"jwt_key": "string"},
        "enabled": "boolean", "events": ["string"], "webhookByEvents": "boolean",
        "webhookBase64": "boolean", "createdAt": "string", "updatedAt": "string",
        "instanceId": "string"});
    assert_shape(&row, webhook_row.clone());
    assert_eq!(
        row["headers"]["jwt_key"], "***",
        "header values are not shown"
    );
    assert!(
        row["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "MESSAGES_UPSERT")
    );
    let (s, found) = evo(&app, Method::GET, "/webhook/find/evo2", &token, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(found, row);
    let mut hook = Hook {
        rx: std::mem::replace(&mut rx, Receiver::start().await),
        backlog: Vec::new(),
    };

    // An image from Dave: by link (mediaUrl) and inline (base64), to url/messages-upsert.
    let jpeg: Vec<u8> = (0..2048u32).map(|i| (i * 7 % 251) as u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&jpeg);
    let pic = sim
        .send_json(
            DAVE,
            &json!({"to": CAROL, "caption": "look", "media": {"mimetype": "image/jpeg", "fileName": "p.jpg", "data": b64}}),
        )
        .await;
    let hit = hook
        .take("messages.upsert", |b| b["data"]["key"]["id"] == pic["id"])
        .await;
    assert_eq!(hit.path, "/hook/messages-upsert");
    let bearer = hit.header("authorization").to_owned();
    assert!(
        bearer.starts_with("Bearer ey"),
        "jwt_key becomes a JWT: {bearer}"
    );
    assert_eq!(hit.header("jwt_key"), "", "the key itself is not sent");
    assert!(
        crate::webhooks::verify(&secret, &hit),
        "signed like every delivery"
    );
    let ev = hit.json();
    let mut key = json!({"remoteJid": "string", "fromMe": "boolean", "id": "string", "addressingMode": "string"});
    if ev["data"]["key"].get("remoteJidAlt").is_some() {
        key["remoteJidAlt"] = json!("string");
    }
    // Left out on purpose: the media keys and hashes of WhatsApp's servers (`url`,
    // `mediaKey`, `fileSha256`, `fileEncSha256`, `directPath`, `jpegThumbnail`, ...).
    assert_shape(
        &ev,
        envelope(record(
            key.clone(),
            json!({"imageMessage": {"mimetype": "string", "caption": "string", "fileLength": "number"},
                       "mediaUrl": "string", "base64": "string"}),
        )),
    );
    assert_eq!(ev["data"]["messageType"], "imageMessage");
    assert_eq!(ev["data"]["message"]["imageMessage"]["caption"], "look");
    assert_eq!(ev["data"]["message"]["base64"], b64.as_str());
    let link = ev["data"]["message"]["mediaUrl"].as_str().unwrap();
    let fetched = app.http.get(link).send().await.unwrap();
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), jpeg.as_slice());

    // What Carol's phone sends itself: messages.upsert with fromMe, SERVER_ACK.
    let own = sim.send(CAROL, DAVE, "from my phone").await;
    let ev = hook
        .take("messages.upsert", |b| b["data"]["key"]["id"] == own["id"])
        .await
        .json();
    assert_shape(
        &ev,
        envelope(record(sent_key(), json!({"conversation": "string"}))),
    );
    assert_eq!(ev["data"]["key"]["fromMe"], true);
    assert_eq!(ev["data"]["status"], "SERVER_ACK");

    // Carol's poll, and Dave's vote as messages.update with pollUpdates.
    let (s, poll) = evo(
        &app,
        Method::POST,
        "/message/sendPoll/evo2",
        &token,
        Some(json!({"number": DAVE, "name": "Crust?", "selectableCount": 1, "values": ["thin", "thick"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{poll}");
    let poll_id = poll["key"]["id"].as_str().unwrap().to_owned();
    sim.send_json(
        DAVE,
        &json!({"to": CAROL, "vote": {"messageId": poll_id, "options": ["thick"]}}),
    )
    .await;
    let hit = hook
        .take("messages.update", |b| {
            b["data"]["keyId"] == poll_id.as_str() && b["data"].get("pollUpdates").is_some()
        })
        .await;
    assert_eq!(hit.path, "/hook/messages-update");
    let mut ev = hit.json();
    // Every option is listed; only the options picked name this voter.
    assert_eq!(
        ev["data"]["pollUpdates"][0],
        json!({"name": "thin", "voters": []})
    );
    ev["data"]["pollUpdates"]
        .as_array_mut()
        .unwrap()
        .retain(|o| o["name"] == "thick");
    assert_shape(
        &ev,
        envelope(
            json!({"keyId": "string", "remoteJid": "string", "fromMe": "boolean",
                        "status": "string", "pollUpdates": [{"name": "string", "voters": ["string"]}],
                        "instanceId": "string", "messageId": "string"}),
        ),
    );
    let thick = ev["data"]["pollUpdates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "thick")
        .cloned()
        .unwrap();
    assert_eq!(thick["voters"], json!([format!("{DAVE}@s.whatsapp.net")]));

    // Dave edits, then deletes, his message.
    let theirs = sim.send(DAVE, CAROL, "two pizzas").await;
    let theirs_id = theirs["id"].as_str().unwrap().to_owned();
    sim.send_json(
        DAVE,
        &json!({"to": CAROL, "edit": {"messageId": theirs_id, "text": "three pizzas"}}),
    )
    .await;
    let hit = hook
        .take("messages.edited", |b| {
            b["data"]["key"]["id"] == theirs_id.as_str()
        })
        .await;
    assert_eq!(hit.path, "/hook/messages-edited");
    let ev = hit.json();
    assert_shape(
        &ev,
        envelope(
            json!({"key": sent_key(), "type": "string", "editedMessage": {"conversation": "string"}, "timestampMs": "string"}),
        ),
    );
    assert_eq!(ev["data"]["type"], "MESSAGE_EDIT");
    assert_eq!(ev["data"]["editedMessage"]["conversation"], "three pizzas");
    sim.send_json(
        DAVE,
        &json!({"to": CAROL, "revoke": {"messageId": theirs_id}}),
    )
    .await;
    let ev = hook
        .take("messages.delete", |b| b["data"]["id"] == theirs_id.as_str())
        .await
        .json();
    assert_shape(&ev, envelope(sent_key()));
    assert_eq!(ev["data"]["remoteJid"], format!("{DAVE}@s.whatsapp.net"));
    assert_eq!(ev["data"]["fromMe"], false);

    // A call from Erin.
    let (s, call) = sim
        .admin_json(
            Method::POST,
            &format!("/phones/{ERIN}/calls"),
            Some(json!({"to": CAROL, "video": true})),
        )
        .await;
    assert!(s.is_success(), "{call}");
    let ev = hook
        .take("call", |b| b["data"]["id"] == call["id"])
        .await
        .json();
    assert_shape(
        &ev,
        envelope(
            json!({"chatId": "string", "from": "string", "id": "string", "date": "string",
                   "offline": "boolean", "status": "string", "isVideo": "boolean", "isGroup": "boolean"}),
        ),
    );
    assert_eq!(ev["data"]["status"], "offer");
    assert_eq!(ev["data"]["isVideo"], true);

    // Erin types.
    let (s, b) = sim
        .admin_json(
            Method::POST,
            &format!("/phones/{ERIN}/presence"),
            Some(json!({"state": "composing", "to": CAROL})),
        )
        .await;
    assert!(s.is_success(), "{b}");
    let ev = hook.take("presence.update", |_| true).await.json();
    let erin = format!("{ERIN}@s.whatsapp.net");
    assert_shape(
        &ev,
        envelope(
            json!({"id": "string", "presences": {erin.as_str(): {"lastKnownPresence": "string"}}}),
        ),
    );
    assert_eq!(
        ev["data"]["presences"][&erin]["lastKnownPresence"],
        "composing"
    );

    // Dave makes a group with Carol, names it again, and adds Erin.
    let (s, g) = sim
        .admin_json(
            Method::POST,
            "/groups",
            Some(json!({"creator": DAVE, "subject": "Pizza", "participants": [CAROL]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    let gid = g["id"].as_str().unwrap().to_owned();
    let gjid = format!("{gid}@g.us");
    let ev = hook
        .take("groups.upsert", |b| b["data"][0]["id"] == gjid.as_str())
        .await
        .json();
    assert_shape(
        &ev,
        envelope(
            json!([{"id": "string", "subject": "string", "author": "string", "creation": "number"}]),
        ),
    );
    let (s, b) = sim
        .admin_json(
            Method::PATCH,
            &format!("/groups/{gid}"),
            Some(json!({"by": DAVE, "subject": "Pizza night"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let hit = hook.take("groups.update", |_| true).await;
    assert_eq!(hit.path, "/hook/groups-update");
    let ev = hit.json();
    assert_shape(
        &ev,
        envelope(json!([{"id": "string", "author": "string", "subject": "string"}])),
    );
    assert_eq!(ev["data"][0]["subject"], "Pizza night");
    let (s, b) = sim
        .admin_json(
            Method::POST,
            &format!("/groups/{gid}/participants"),
            Some(json!({"by": DAVE, "action": "add", "participants": [ERIN]})),
        )
        .await;
    assert!(s.is_success(), "{b}");
    let hit = hook.take("group-participants.update", |_| true).await;
    assert_eq!(hit.path, "/hook/group-participants-update");
    let ev = hit.json();
    assert_shape(
        &ev,
        envelope(
            json!({"id": "string", "author": "string", "participants": ["string"], "action": "string"}),
        ),
    );
    assert_eq!(ev["data"]["action"], "add");

    // A member writes in the group: the key names the group and the participant.
    let (_, m) = sim
        .admin_json(
            Method::POST,
            &format!("/phones/{DAVE}/messages"),
            Some(json!({"to": gjid, "text": "who wants olives?"})),
        )
        .await;
    let ev = hook
        .take("messages.upsert", |b| b["data"]["key"]["id"] == m["id"])
        .await
        .json();
    let key = ev["data"]["key"].clone();
    assert_eq!(key["remoteJid"], gjid.as_str());
    assert!(key["participant"].is_string(), "{key}");

    // Off, then on again with the flat fields of Evolution's documentation.
    let (s, off) = evo(
        &app,
        Method::POST,
        "/webhook/set/evo2",
        &token,
        Some(json!({"webhook": {"enabled": false, "url": hook.rx.url}})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{off}");
    assert_eq!(off["enabled"], false);
    assert_eq!(off["events"], json!([]));
    let (s, b) = evo(
        &app,
        Method::POST,
        "/webhook/set/evo2",
        &token,
        Some(json!({"enabled": true, "url": hook.rx.url, "webhookByEvents": false, "events": ["MESSAGES_UPSERT"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "the documentation's flat form: {b}");
    assert_eq!(b["events"], json!(["MESSAGES_UPSERT"]));
    let after = sim.send(DAVE, CAROL, "last call").await;
    let ev = hook
        .take("messages.upsert", |b| b["data"]["key"]["id"] == after["id"])
        .await;
    assert_eq!(ev.path, "/hook");
}

/// The REST routes' answers and refusals in Evolution's shapes: the other send routes,
/// number checks, instance lists, the key rules, logout and delete.
#[tokio::test]
async fn evolution_routes_answer_in_evolution_s_shapes_and_refuse_as_it_does() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    const FAY: &str = "15550008011";
    const GIL: &str = "15550008012";
    sim.phone(FAY, "Fay").await;
    sim.phone(GIL, "Gil").await;

    // Refusals before any instance: no key, a wrong key, an unknown instance.
    let unauthorized =
        json!({"status": 401, "error": "Unauthorized", "response": {"message": "Unauthorized"}});
    let (s, b) = into_json(
        app.http
            .get(app.url("/instance/fetchInstances"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, &b), (StatusCode::UNAUTHORIZED, &unauthorized));
    let (s, b) = evo(
        &app,
        Method::GET,
        "/instance/fetchInstances",
        "wrong-key-0123456789",
        None,
    )
    .await;
    assert_eq!((s, &b), (StatusCode::UNAUTHORIZED, &unauthorized));
    let (s, b) = evo(
        &app,
        Method::GET,
        "/instance/connectionState/nope",
        KEY,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        b,
        json!({"status": 404, "error": "Not Found", "response": {"message": ["The \"nope\" instance does not exist"]}})
    );
    let (s, b) = evo(
        &app,
        Method::POST,
        "/instance/create",
        KEY,
        Some(json!({"instanceName": "evo3", "integration": "WHATSAPP-BUSINESS"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_shape(
        &b,
        json!({"status": "number", "error": "string", "response": {"message": ["string"]}}),
    );

    // A token of the client's choosing, as Evolution's `token`.
    let chosen = "B8E3A1C2-6F0D-4C1B-9A57-0E2F3D4C5B6A";
    let (s, created) = evo(
        &app,
        Method::POST,
        "/instance/create",
        KEY,
        Some(json!({"instanceName": "evo3", "token": chosen, "rejectCall": true, "msgCall": "no calls"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["hash"], chosen);
    assert_eq!(created["settings"]["rejectCall"], true);
    assert!(
        created.get("qrcode").is_none(),
        "no qrcode asked: {created}"
    );
    let (s, b) = evo(
        &app,
        Method::POST,
        "/instance/create",
        KEY,
        Some(json!({"instanceName": "evo3"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(
        b["response"]["message"][0],
        "This name \"evo3\" is already in use."
    );

    // connect: the QR object; the phone scans it.
    let (s, qr) = evo(&app, Method::GET, "/instance/connect/evo3", chosen, None).await;
    assert_eq!(s, StatusCode::OK, "{qr}");
    assert_shape(
        &qr,
        json!({"pairingCode": "null", "code": "string", "base64": "string", "count": "number"}),
    );
    sim.scan(FAY, qr["code"].as_str().unwrap()).await;
    app.wait_status("evo3", "connected", LONG).await;
    let (s, b) = evo(&app, Method::GET, "/instance/connect/evo3", chosen, None).await;
    assert_eq!(
        (s, b),
        (
            StatusCode::OK,
            json!({"instance": {"instanceName": "evo3", "state": "open"}})
        )
    );

    // Another instance's token is refused here.
    let (s, other) = evo(
        &app,
        Method::POST,
        "/instance/create",
        KEY,
        Some(json!({"instanceName": "evo4"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{other}");
    let other_token = other["hash"].as_str().unwrap().to_owned();
    let (s, b) = evo(
        &app,
        Method::GET,
        "/instance/connectionState/evo3",
        &other_token,
        None,
    )
    .await;
    assert_eq!((s, b), (StatusCode::UNAUTHORIZED, unauthorized.clone()));

    // fetchInstances: the global key sees both, a token its own.
    let (s, all) = evo(&app, Method::GET, "/instance/fetchInstances", KEY, None).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let (s, mine) = evo(&app, Method::GET, "/instance/fetchInstances", chosen, None).await;
    assert_eq!(s, StatusCode::OK, "{mine}");
    let mine = mine.as_array().unwrap();
    assert_eq!(mine.len(), 1);
    // Left out on purpose: `token` is null (kept only as a digest), and the relations
    // wamux has no counterpart for are null.
    assert_shape(
        &mine[0],
        json!({
            "id": "string", "name": "string", "connectionStatus": "string", "ownerJid": "string",
            "profileName": "string", "profilePicUrl": "null", "integration": "string",
            "number": "null", "businessId": "null", "token": "null", "clientName": "string",
            "disconnectionReasonCode": "null", "disconnectionObject": "null",
            "disconnectionAt": "null", "createdAt": "string", "updatedAt": "string",
            "Chatwoot": "null", "Proxy": "null", "Rabbitmq": "null", "Nats": "null",
            "Sqs": "null", "Websocket": "null",
            "Setting": {"id": "string", "rejectCall": "boolean", "msgCall": "string",
                        "groupsIgnore": "boolean", "alwaysOnline": "boolean",
                        "readMessages": "boolean", "readStatus": "boolean",
                        "syncFullHistory": "boolean", "wavoipToken": "string",
                        "createdAt": "string", "updatedAt": "string", "instanceId": "string"},
            "_count": {"Message": "number", "Contact": "number", "Chat": "number"},
        }),
    );
    assert_eq!(mine[0]["name"], "evo3");
    assert_eq!(mine[0]["connectionStatus"], "open");
    assert_eq!(mine[0]["ownerJid"], format!("{FAY}@s.whatsapp.net"));
    assert_eq!(mine[0]["Setting"]["rejectCall"], true);
    assert_eq!(mine[0]["Setting"]["msgCall"], "no calls");

    // Settings: set as Evolution's /settings/set takes them, read back.
    let (s, b) = evo(
        &app,
        Method::POST,
        "/settings/set/evo3",
        chosen,
        Some(
            json!({"rejectCall": false, "msgCall": "", "groupsIgnore": true, "alwaysOnline": false,
                    "readMessages": false, "readStatus": false, "syncFullHistory": false}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["settings"]["instanceName"], "evo3");
    let (s, found) = evo(&app, Method::GET, "/settings/find/evo3", chosen, None).await;
    assert_eq!(s, StatusCode::OK, "{found}");
    assert_eq!(found, b["settings"]["settings"]);
    assert_eq!(
        (found["rejectCall"].clone(), found["groupsIgnore"].clone()),
        (json!(false), json!(true))
    );
    let (_, ours) = app.get_json("/api/sessions/evo3/settings").await;
    assert_eq!(
        ours["ignore"],
        json!(["groups"]),
        "the session's own setting follows"
    );
    let (s, b) = evo(
        &app,
        Method::POST,
        "/settings/set/evo3",
        chosen,
        Some(json!({"rejectCall": true, "msgCall": "no calls", "groupsIgnore": false})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // whatsappNumbers: who has an account.
    let (s, b) = evo(
        &app,
        Method::POST,
        "/chat/whatsappNumbers/evo3",
        chosen,
        Some(json!({"numbers": [GIL, NOBODY]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b[0]["exists"], true, "{b}");
    assert_eq!(b[0]["jid"], format!("{GIL}@s.whatsapp.net"));
    assert_eq!(b[0]["number"], GIL);
    assert_eq!(
        b[1],
        json!({"jid": format!("{NOBODY}@s.whatsapp.net"), "exists": false, "number": NOBODY})
    );

    // A send to a number without WhatsApp names it, and sends nothing.
    let (s, b) = evo(
        &app,
        Method::POST,
        "/message/sendText/evo3",
        chosen,
        Some(json!({"number": NOBODY, "text": "hello?"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        b,
        json!({"status": 400, "error": "Bad Request", "response": {"message": [
            {"jid": format!("{NOBODY}@s.whatsapp.net"), "exists": false, "number": NOBODY}]}})
    );
    let (s, b) = evo(
        &app,
        Method::POST,
        "/message/sendText/evo3",
        chosen,
        Some(json!({"number": GIL})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        b["response"]["message"][0],
        "instance requires property \"text\""
    );

    // The other kinds, each answered with its record, and each on Gil's phone.
    let post = |path: &'static str, body: Value| {
        let app = &app;
        async move { evo(app, Method::POST, path, chosen, Some(body)).await }
    };
    let (s, loc) = post(
        "/message/sendLocation/evo3",
        json!({"number": GIL, "latitude": -23.55, "longitude": -46.63, "name": "Paulista", "address": "Av. Paulista"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{loc}");
    assert_shape(
        &loc,
        record(
            sent_key(),
            json!({"locationMessage": {"degreesLatitude": "number", "degreesLongitude": "number", "name": "string", "address": "string"}}),
        ),
    );
    assert_eq!(loc["messageType"], "locationMessage");
    let (s, card) = post(
        "/message/sendContact/evo3",
        json!({"number": GIL, "contact": [{"fullName": "Ana Souza", "wuid": "5511999999999", "phoneNumber": "+55 11 99999-9999"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{card}");
    assert_shape(
        &card,
        record(
            sent_key(),
            json!({"contactMessage": {"displayName": "string", "vcard": "string"}}),
        ),
    );
    assert!(
        card["message"]["contactMessage"]["vcard"]
            .as_str()
            .unwrap()
            .contains("waid=5511999999999")
    );
    let (s, poll) = post(
        "/message/sendPoll/evo3",
        json!({"number": GIL, "name": "Lunch?", "selectableCount": 1, "values": ["12:00", "13:00"]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{poll}");
    // Left out on purpose: `messageContextInfo` (the poll's secret stays ours).
    assert_shape(
        &poll,
        record(
            sent_key(),
            json!({"pollCreationMessageV3": {"name": "string", "selectableOptionsCount": "number", "options": [{"optionName": "string"}]}}),
        ),
    );
    let (s, image) = post(
        "/message/sendMedia/evo3",
        json!({"number": GIL, "mediatype": "image", "mimetype": "image/png", "caption": "a dot",
               "media": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
               "fileName": "dot.png"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{image}");
    assert_eq!(image["messageType"], "imageMessage");
    assert_eq!(image["message"]["imageMessage"]["caption"], "a dot");
    // The multipart form, with the file as `file`.
    let form = reqwest::multipart::Form::new()
        .text("number", GIL)
        .text("mediatype", "document")
        .text("caption", "the report")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"%PDF-1.4 not really".to_vec())
                .file_name("report.pdf")
                .mime_str("application/pdf")
                .unwrap(),
        );
    let (s, doc) = into_json(
        app.http
            .post(app.url("/message/sendMedia/evo3"))
            .header("apikey", chosen)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{doc}");
    assert_eq!(doc["messageType"], "documentMessage");
    assert_eq!(doc["message"]["documentMessage"]["fileName"], "report.pdf");
    assert_eq!(doc["message"]["documentMessage"]["caption"], "the report");
    let (s, b) = post(
        "/message/sendMedia/evo3",
        json!({"number": GIL, "mediatype": "document", "media": "aGVsbG8="}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        b["response"]["message"][0],
        "For base64 the file name must be informed."
    );
    let ogg = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        b"OggS-not-really-opus",
    );
    let (s, voice) = post(
        "/message/sendWhatsAppAudio/evo3",
        json!({"number": GIL, "audio": ogg}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{voice}");
    assert_eq!(voice["messageType"], "audioMessage");
    assert_eq!(voice["message"]["audioMessage"]["ptt"], true);
    let text_id = {
        let (s, t) = post(
            "/message/sendText/evo3",
            json!({"number": GIL, "text": "react to me", "delay": 300}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        t["key"]["id"].as_str().unwrap().to_owned()
    };
    let (s, reaction) = post(
        "/message/sendReaction/evo3",
        json!({"key": {"remoteJid": format!("{GIL}@s.whatsapp.net"), "fromMe": true, "id": text_id}, "reaction": "👍"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{reaction}");
    assert_shape(
        &reaction,
        record(
            sent_key(),
            json!({"reactionMessage": {"key": {"remoteJid": "string", "id": "string"}, "text": "string", "senderTimestampMs": "number"}}),
        ),
    );
    let (s, b) = post(
        "/message/sendReaction/evo3",
        json!({"key": {"remoteJid": GIL, "fromMe": true, "id": text_id}, "reaction": "nope"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        b["response"]["message"][0],
        "Reaction must be a single emoji or empty string"
    );
    // Typing, an edit, a delete for everyone, a profile photo.
    let (s, b) = post(
        "/chat/sendPresence/evo3",
        json!({"number": GIL, "presence": "composing", "delay": 0}),
    )
    .await;
    assert_eq!(
        (s, b),
        (StatusCode::CREATED, json!({"presence": "composing"}))
    );
    crate::helpers::wait_until(LONG, "Gil's phone to show Fay typing", || async {
        let (_, p) = sim
            .admin_json(Method::GET, &format!("/phones/{GIL}/presence"), None)
            .await;
        p["chatStates"][FAY] == "composing"
    })
    .await;
    let gil_jid = format!("{GIL}@s.whatsapp.net");
    let (s, edit) = post(
        "/chat/updateMessage/evo3",
        json!({"number": GIL, "key": {"remoteJid": gil_jid, "fromMe": true, "id": text_id}, "text": "edited"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{edit}");
    assert_shape(
        &edit,
        json!({"key": sent_key(), "message": {"protocolMessage": {
                   "key": sent_key(), "type": "string", "editedMessage": {"conversation": "string"},
                   "timestampMs": "string"}},
               "messageTimestamp": "number", "status": "string", "instanceId": "string"}),
    );
    assert_eq!(
        edit["message"]["protocolMessage"]["key"]["id"],
        text_id.as_str()
    );
    assert_eq!(entry(&app, "evo3", &text_id).await["text"], "edited");
    let (s, del) = evo(
        &app,
        Method::DELETE,
        "/chat/deleteMessageForEveryone/evo3",
        chosen,
        Some(json!({"id": text_id, "fromMe": true, "remoteJid": gil_jid})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{del}");
    assert_eq!(del["message"]["protocolMessage"]["type"], "REVOKE");
    assert_eq!(entry(&app, "evo3", &text_id).await["revoked"], true);
    let (s, pic) = post("/chat/fetchProfilePictureUrl/evo3", json!({"number": GIL})).await;
    assert_eq!(s, StatusCode::OK, "{pic}");
    assert_eq!(pic, json!({"wuid": gil_jid, "profilePictureUrl": null}));
    // Groups, as Evolution's /group routes make and change them.
    let (s, g) = post(
        "/group/create/evo3",
        json!({"subject": "Evo group", "description": "for tests", "participants": [GIL]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    // Baileys 7 lists a participant's other address next to `id` (`lid` in a PN group).
    let participant = json!({"id": "string", "lid": "string", "admin": "string"});
    let group_shape = |participants: bool, picture: bool| {
        let mut m = json!({
            "id": "string", "subject": "string", "subjectOwner": "string", "subjectTime": "number",
            "size": "number", "creation": "number", "owner": "string", "desc": "string",
            "restrict": "boolean", "announce": "boolean", "isCommunity": "boolean",
            "isCommunityAnnounce": "boolean", "linkedParent": "null", "joinApprovalMode": "boolean",
            "memberAddMode": "boolean", "ephemeralDuration": "number", "addressingMode": "string",
        });
        if participants {
            m["participants"] = json!([participant.clone()]);
        }
        if picture {
            m["pictureUrl"] = json!("null");
        }
        m
    };
    // The first participant is the creator (an admin); the shape of each is the same.
    let mut first = g.clone();
    first["participants"] = json!([g["participants"][0]]);
    assert_shape(&first, group_shape(true, false));
    let gid = g["id"].as_str().unwrap().to_owned();
    assert!(gid.ends_with("@g.us"), "{gid}");
    assert_eq!(g["size"], 2);
    let bare = gid.trim_end_matches("@g.us").to_owned();
    let get = |path: String| {
        let app = &app;
        async move { evo(app, Method::GET, &path, chosen, None).await }
    };
    let (s, b) = get("/group/fetchAllGroups/evo3".into()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, all) = get("/group/fetchAllGroups/evo3?getParticipants=false".into()).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_shape(&all, json!([group_shape(false, true)]));
    let (s, info) = get(format!("/group/findGroupInfos/evo3?groupJid={bare}")).await;
    assert_eq!(s, StatusCode::OK, "{info}");
    assert_eq!(info["subject"], "Evo group");
    assert_eq!(info["desc"], "for tests");
    let (s, p) = get(format!("/group/participants/evo3?groupJid={gid}")).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["participants"].as_array().unwrap().len(), 2, "{p}");
    let with_group = |path: &str| format!("{path}?groupJid={bare}");
    let (s, b) = evo(
        &app,
        Method::POST,
        &with_group("/group/updateGroupSubject/evo3"),
        chosen,
        Some(json!({"subject": "Renamed"})),
    )
    .await;
    assert_eq!((s, b), (StatusCode::CREATED, json!({"update": "success"})));
    let (s, b) = evo(
        &app,
        Method::POST,
        &with_group("/group/updateSetting/evo3"),
        chosen,
        Some(json!({"action": "announcement"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (_, info) = get(format!("/group/findGroupInfos/evo3?groupJid={bare}")).await;
    assert_eq!(
        (info["subject"].clone(), info["announce"].clone()),
        (json!("Renamed"), json!(true))
    );
    let (s, promoted) = evo(
        &app,
        Method::POST,
        &with_group("/group/updateParticipant/evo3"),
        chosen,
        Some(json!({"action": "promote", "participants": [GIL]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{promoted}");
    assert_shape(
        &promoted,
        json!({"updateParticipants": [{"status": "string", "jid": "string"}]}),
    );
    assert_eq!(promoted["updateParticipants"][0]["status"], "200");
    let (s, code) = get(with_group("/group/inviteCode/evo3")).await;
    assert_eq!(s, StatusCode::OK, "{code}");
    assert_shape(
        &code,
        json!({"inviteUrl": "string", "inviteCode": "string"}),
    );
    assert!(
        code["inviteUrl"]
            .as_str()
            .unwrap()
            .starts_with("https://chat.whatsapp.com/")
    );
    let (s, revoked) = evo(
        &app,
        Method::POST,
        &with_group("/group/revokeInviteCode/evo3"),
        chosen,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{revoked}");
    assert_eq!(revoked["revoked"], true);
    assert_ne!(revoked["inviteCode"], code["inviteCode"]);
    let (s, left) = evo(
        &app,
        Method::DELETE,
        &with_group("/group/leaveGroup/evo3"),
        chosen,
        None,
    )
    .await;
    assert_eq!(
        (s, left),
        (StatusCode::OK, json!({"groupJid": gid, "leave": true}))
    );

    crate::helpers::wait_until(LONG, "Gil's phone to show every kind", || async {
        let got = sim.messages(GIL).await;
        let has = |f: &dyn Fn(&Value) -> bool| got.iter().any(f);
        has(&|m| m["id"] == text_id.as_str())
            && has(&|m| m.get("location").is_some_and(|l| !l.is_null()))
            && has(&|m| m.get("poll").is_some_and(|p| !p.is_null()))
            && has(&|m| m["caption"] == "a dot")
    })
    .await;

    // logout, then delete: the token goes with the instance.
    let (s, b) = evo(&app, Method::DELETE, "/instance/logout/evo3", chosen, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({"status": "SUCCESS", "error": false, "response": {"message": "Instance logged out"}})
    );
    let (s, b) = evo(&app, Method::DELETE, "/instance/logout/evo3", chosen, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(
        b["response"]["message"][0],
        "The \"evo3\" instance is not connected"
    );
    // Connecting again after a logout starts a new link, with a new QR code.
    let (s, qr) = evo(&app, Method::GET, "/instance/connect/evo3", chosen, None).await;
    assert_eq!(s, StatusCode::OK, "{qr}");
    assert!(qr["code"].is_string(), "a fresh QR code: {qr}");
    let (s, b) = evo(
        &app,
        Method::PUT,
        "/instance/restart/evo4",
        &other_token,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["instance"]["instanceName"], "evo4");
    let (s, b) = evo(&app, Method::DELETE, "/instance/delete/evo3", chosen, None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({"status": "SUCCESS", "error": false, "response": {"message": "Instance deleted"}})
    );
    let (s, _) = evo(&app, Method::GET, "/instance/fetchInstances", chosen, None).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the deleted instance's token is revoked"
    );
    let (s, b) = evo(&app, Method::GET, "/webhook/find/evo4", KEY, None).await;
    assert_eq!(
        (s, b),
        (StatusCode::OK, Value::Null),
        "no webhook: Evolution's literal null"
    );
}

/// Off by default: the routes are not there.
#[tokio::test]
async fn evolution_routes_are_off_unless_asked_for() {
    let app = TestApp::start().await;
    let (s, _) = evo(&app, Method::GET, "/instance/fetchInstances", KEY, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// `curl` with `args`, as a user types it: the answer's JSON.
async fn curl(args: &[&str]) -> Value {
    // Off the runtime's thread: the server under test runs on it.
    let owned: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .arg("-sS")
            .args(&owned)
            .output()
            .expect("run curl")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "curl {args:?} did not answer JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The walk-through of docs/migrating-from-evolution.md, with curl as written there:
/// create with a webhook and `qrcode: true`, the phone scans, `connectionState`, sendText,
/// the reply arrives as `messages.upsert`, the delivery as `messages.update` `DELIVERY_ACK`.
#[tokio::test]
async fn the_documented_curl_walk_through_works_as_written() {
    crate::ops::setup();
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    const HAL: &str = "15550008021";
    const IDA: &str = "15550008022";
    sim.phone(HAL, "Hal").await;
    sim.phone(IDA, "Ida").await;
    let rx = Receiver::start().await;
    let mut hook = Hook {
        rx,
        backlog: Vec::new(),
    };
    let url = &app.base;
    let apikey = format!("apikey: {KEY}");
    let create = json!({
        "instanceName": "shop", "integration": "WHATSAPP-BAILEYS", "qrcode": true,
        "webhook": {"url": hook.rx.url, "byEvents": false, "base64": false,
                    "events": ["QRCODE_UPDATED", "CONNECTION_UPDATE", "MESSAGES_UPSERT", "MESSAGES_UPDATE", "SEND_MESSAGE"]},
    })
    .to_string();
    let created = curl(&[
        "-X",
        "POST",
        &format!("{url}/instance/create"),
        "-H",
        &apikey,
        "-H",
        "Content-Type: application/json",
        "-d",
        &create,
    ])
    .await;
    assert_eq!(created["instance"]["instanceName"], "shop", "{created}");
    let token = created["hash"].as_str().unwrap().to_owned();
    sim.scan(HAL, created["qrcode"]["code"].as_str().unwrap())
        .await;
    let state_url = format!("{url}/instance/connectionState/shop");
    let token_header = format!("apikey: {token}");
    crate::helpers::wait_until(LONG, "the instance to be open", || async {
        curl(&[&state_url, "-H", &token_header]).await
            == json!({"instance": {"instanceName": "shop", "state": "open"}})
    })
    .await;
    let sent = curl(&[
        "-X",
        "POST",
        &format!("{url}/message/sendText/shop"),
        "-H",
        &token_header,
        "-H",
        "Content-Type: application/json",
        "-d",
        &json!({"number": IDA, "text": "Olá!"}).to_string(),
    ])
    .await;
    assert_eq!(sent["message"]["conversation"], "Olá!", "{sent}");
    let id = sent["key"]["id"].as_str().unwrap().to_owned();
    let reply = sim.send(IDA, HAL, "Oi!").await;
    let ev = hook
        .take("messages.upsert", |b| b["data"]["key"]["id"] == reply["id"])
        .await
        .json();
    assert_eq!(ev["data"]["message"]["conversation"], "Oi!");
    hook.take("messages.update", |b| {
        b["data"]["keyId"] == id.as_str() && b["data"]["status"] == "DELIVERY_ACK"
    })
    .await;
}

/// `/chat/archiveChat` and `/chat/markChatUnread`, as Evolution takes and answers them: the
/// chat from `lastMessage.key.remoteJid` or `chat`, an app-state patch the phone reads back.
#[tokio::test]
async fn evolution_archives_and_marks_chats_unread() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    const HAL: &str = "15550008021";
    const IVY: &str = "15550008022";
    sim.phone(HAL, "Hal").await;
    sim.phone(IVY, "Ivy").await;
    let (token, _hook, _) = linked_instance(&app, "evo-chat", HAL, &[]).await;
    let ivy = format!("{IVY}@s.whatsapp.net");

    let (s, b) = evo(
        &app,
        Method::POST,
        "/chat/archiveChat/evo-chat",
        &token,
        Some(json!({"lastMessage": {"key": {"remoteJid": ivy, "fromMe": false, "id": "3EB0AAAA"}}, "archive": true})),
    )
    .await;
    assert_eq!(
        (s, &b),
        (
            StatusCode::CREATED,
            &json!({"chatId": ivy, "archived": true})
        )
    );
    let (s, b) = evo(
        &app,
        Method::POST,
        "/chat/markChatUnread/evo-chat",
        &token,
        Some(json!({"chat": ivy})),
    )
    .await;
    assert_eq!(
        (s, &b),
        (
            StatusCode::CREATED,
            &json!({"chatId": ivy, "markedChatUnread": true})
        )
    );
    wait_for(
        Duration::from_secs(60),
        "the phone to show the chat archived and unread",
        || async {
            let (_, chats) = sim
                .admin_json(Method::GET, &format!("/phones/{HAL}/chats"), None)
                .await;
            (chats[&ivy]["archived"] == true && chats[&ivy]["markedUnread"] == true).then_some(())
        },
    )
    .await;

    for (path, body) in [
        ("/chat/archiveChat/evo-chat", json!({"chat": ivy})),
        ("/chat/markChatUnread/evo-chat", json!({})),
        (
            "/chat/markChatUnread/evo-chat",
            json!({"lastMessage": {"key": {"id": "x"}}}),
        ),
    ] {
        let (s, b) = evo(&app, Method::POST, path, &token, Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path} {body}: {b}");
    }
}
