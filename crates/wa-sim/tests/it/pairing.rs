//! Pairing by QR scan and by pairing code through the admin API, and logging
//! in again from the store.

use serde_json::json;
use whatsapp_rust::wacore::types::events::Event;

use crate::support::{TestSim, paired_client, text_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pairs_by_qr_scan_then_logs_in_again_without_qr() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15551200001").await;
    let (client, cfg) = paired_client(&sim, &alice, "alice-web").await;

    let own = client.client.pn().expect("paired client knows its number");
    assert_eq!(own.user.as_str(), "15551200001");
    assert_ne!(own.device, 0, "a companion gets a device id of its own");

    let (_, phones) = sim.get("/phones").await;
    let devices = phones[0]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2, "phone plus one linked device: {phones}");
    client.stop().await;

    // A new client over the same store resumes the session: no QR this time.
    let mut again = cfg.start("alice-web").await;
    let first = again
        .wait_for("Connected or a QR", |e| match e {
            whatsapp_rust::wacore::types::events::Event::Connected(_) => Some(true),
            whatsapp_rust::wacore::types::events::Event::PairingQrCode(_) => Some(false),
            _ => None,
        })
        .await;
    assert!(first, "a paired store must log in without showing a QR");
    again.stop().await;
}

/// "Link with phone number": the client asks for a code for the number, the
/// phone's user types it in, and the client is linked without any QR scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_links_by_pairing_code_then_logs_in_again_without_code() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15551300001").await;
    let cfg = sim.client_config(sim.db_path("alice-code"));
    let mut client = cfg.start_with_pair_code("alice-code", "15551300001").await;
    let code = client.wait_pair_code().await;
    assert_eq!(code.len(), 8, "an 8-character code: {code}");

    let (status, linked) = sim
        .post("/phones/15551300001/link-code", json!({"code": code}))
        .await;
    assert_eq!(status, 200, "{linked}");
    assert_eq!(linked["phone"], "15551300001");
    client.wait_connected().await;
    let own = client.client.pn().expect("linked client knows its number");
    assert_eq!(own.user.as_str(), "15551300001");
    assert_eq!(u64::from(own.device), linked["device"].as_u64().unwrap());

    // Linked for real: the phone's messages reach it.
    let id = alice.send_text("15551300001", "linked by code").await;
    let (msg, _) = client
        .wait_message("the phone's text", |_, i| i.id == id)
        .await;
    assert_eq!(text_of(&msg).as_deref(), Some("linked by code"));
    client.stop().await;

    // The store logs in again by itself: no code, no QR.
    let mut again = cfg.start_with_pair_code("alice-code", "15551300001").await;
    let first = again
        .wait_for("Connected, a code or a QR", |e| match e {
            Event::Connected(_) => Some("connected"),
            Event::PairingCode(_) => Some("code"),
            Event::PairingQrCode(_) => Some("qr"),
            _ => None,
        })
        .await;
    assert_eq!(first, "connected");
    let (_, account) = sim.get("/phones/15551300001").await;
    assert_eq!(account["devices"].as_array().unwrap().len(), 2, "{account}");
    again.stop().await;
}

/// A mistyped code links nothing: the phone is told so, the client hears
/// nothing and keeps waiting; the right code still works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pairing_code_does_not_link() {
    let sim = TestSim::start().await;
    sim.phone("15551300002").await;
    let cfg = sim.client_config(sim.db_path("bob-code"));
    let mut client = cfg.start_with_pair_code("bob-code", "15551300002").await;
    let code = client.wait_pair_code().await;
    // The same code with its first character changed.
    let first = if code.starts_with('A') { 'B' } else { 'A' };
    let wrong: String = std::iter::once(first).chain(code.chars().skip(1)).collect();

    let (status, body) = sim
        .post("/phones/15551300002/link-code", json!({"code": wrong}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "code_mismatch", "{body}");
    let (_, account) = sim.get("/phones/15551300002").await;
    assert_eq!(
        account["devices"].as_array().unwrap().len(),
        1,
        "nothing linked: {account}"
    );
    assert!(
        client.client.pn().is_none(),
        "the client must not be paired by a wrong code"
    );

    // Malformed codes and numbers nobody asked for are refused up front.
    let (status, body) = sim
        .post("/phones/15551300002/link-code", json!({"code": "0OIU"}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("invalid_code"))
    );
    sim.phone("15551300003").await;
    let (status, body) = sim
        .post("/phones/15551300003/link-code", json!({"code": code}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("link_code_not_found"))
    );

    // The phone tries again with the right code: linked.
    let (status, body) = sim
        .post("/phones/15551300002/link-code", json!({"code": code}))
        .await;
    assert_eq!(status, 200, "{body}");
    client.wait_connected().await;
    client.stop().await;
}

/// A new companion gets the account's past by history sync, as from WhatsApp's app: an
/// `INITIAL_BOOTSTRAP` with the chats (the phone's own first, then the made-up ones of
/// `"history"`), `RECENT` chunks for the rest, and `PUSH_NAME` with the contacts' names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_companion_gets_the_accounts_past_by_history_sync() {
    use std::collections::HashMap;
    use whatsapp_rust::waproto::whatsapp::history_sync::HistorySyncType;

    let sim = TestSim::start().await;
    let (status, body) = sim
        .post(
            "/phones",
            json!({"phone": "15551200031", "name": "Hist",
                   "history": {"contacts": 40, "chats": 30, "messagesPerChat": 100,
                               "pinned": 2, "archived": 3, "muted": 1}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = sim
        .post(
            "/phones",
            json!({"phone": "15551200032", "history": {"chats": 1000, "messagesPerChat": 1000}}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_history"))
    );

    let hist = crate::support::Phone {
        sim: &sim,
        number: "15551200031".into(),
    };
    let friend = sim.phone("15551200033").await;
    friend.send_text("15551200031", "an old message").await;

    let mut cfg = sim.client_config(sim.db_path("hist-web"));
    cfg.history_sync = true;
    let mut client = cfg.start("hist-web").await;
    let qr = client.wait_qr().await;
    hist.scan(&qr).await;

    // 30 chats of 100 and one of 1: two chunks of 2,000 at most, and the push names.
    let mut chats: HashMap<String, usize> = HashMap::new();
    let mut types = Vec::new();
    let mut names = Vec::new();
    // The app state of that past comes by app-state sync meanwhile.
    let (mut pinned, mut archived, mut muted) = (Vec::new(), Vec::new(), Vec::new());
    while types.len() < 3 || pinned.len() < 2 || archived.len() < 3 || muted.is_empty() {
        enum Seen {
            Sync(Box<whatsapp_rust::waproto::whatsapp::HistorySync>),
            Pin(String),
            Archive(String),
            Mute(String),
        }
        let seen = client
            .wait_for("history sync and app state", |e| match e {
                Event::HistorySync(h) => {
                    Some(Seen::Sync(Box::new(h.get().cloned().expect("it decodes"))))
                }
                Event::PinUpdate(u) if u.action.pinned == Some(true) => {
                    Some(Seen::Pin(u.jid.user.to_string()))
                }
                Event::ArchiveUpdate(u) if u.action.archived == Some(true) => {
                    Some(Seen::Archive(u.jid.user.to_string()))
                }
                Event::MuteUpdate(u) if u.action.muted == Some(true) => {
                    Some(Seen::Mute(u.jid.user.to_string()))
                }
                _ => None,
            })
            .await;
        let sync = match seen {
            Seen::Sync(s) => *s,
            Seen::Pin(j) => {
                pinned.push(j);
                continue;
            }
            Seen::Archive(j) => {
                archived.push(j);
                continue;
            }
            Seen::Mute(j) => {
                muted.push(j);
                continue;
            }
        };
        types.push(sync.sync_type);
        for c in &sync.conversations {
            chats.insert(c.id.clone(), c.messages.len());
        }
        names.extend(sync.pushnames.iter().filter_map(|p| p.pushname.clone()));
    }
    // The client processes them as they come, not necessarily in order.
    types.sort_by_key(|t| *t as i32);
    assert_eq!(
        types,
        [
            HistorySyncType::INITIAL_BOOTSTRAP,
            HistorySyncType::RECENT,
            HistorySyncType::PUSH_NAME
        ]
    );
    assert_eq!(chats.len(), 31, "{chats:?}");
    assert_eq!(
        chats["15551200033@s.whatsapp.net"], 1,
        "the phone's own chat"
    );
    assert_eq!(chats["19990000000@s.whatsapp.net"], 100);
    assert_eq!(names.len(), 41, "40 contacts and the friend: {names:?}");
    assert!(names.contains(&"Phone 15551200033".to_string()));
    pinned.sort();
    archived.sort();
    assert_eq!(pinned, ["19990000000", "19990000001"]);
    assert_eq!(archived, ["19990000002", "19990000003", "19990000004"]);
    assert_eq!(muted, ["19990000000"]);
    client.stop().await;
}
