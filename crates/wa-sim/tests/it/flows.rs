//! Longer user stories: two clients, offline delivery, own messages from the
//! phone, unlinking, dropped connections, restarts.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use whatsapp_rust::wacore::types::events::Event;

use crate::support::{TestSim, paired_client, text_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_on_different_accounts_talk_both_ways() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550200001").await;
    let bob = sim.phone("15550200002").await;
    let (mut a, _) = paired_client(&sim, &alice, "alice-web").await;
    let (mut b, _) = paired_client(&sim, &bob, "bob-web").await;

    let sent = a.client.send_text(bob.jid(), "ping").await.expect("send");
    let (msg, info) = b
        .wait_message("alice's ping", |_, i| i.id == sent.message_id)
        .await;
    assert_eq!(text_of(&msg).as_deref(), Some("ping"));
    assert_eq!(info.source.sender.user.as_str(), "15550200001");

    let sent = b.client.send_text(alice.jid(), "pong").await.expect("send");
    let (msg, _) = a
        .wait_message("bob's pong", |_, i| i.id == sent.message_id)
        .await;
    assert_eq!(text_of(&msg).as_deref(), Some("pong"));
    // Each account's phone saw the conversation too.
    bob.wait_message(|m| m["text"] == "ping").await;
    alice.wait_message(|m| m["text"] == "pong").await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_offline_arrive_in_order_after_reconnect() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550300001").await;
    let bob = sim.phone("15550300002").await;
    let (client, cfg) = paired_client(&sim, &alice, "alice-web").await;
    client.stop().await;

    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(bob.send_text("15550300001", &format!("offline {i}")).await);
    }
    let (_, phones) = sim.get("/phones/15550300001").await;
    let queued: u64 = phones["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["queued"].as_u64().unwrap())
        .sum();
    assert!(
        queued >= 5,
        "the messages wait in the device's queue: {phones}"
    );

    let mut again = cfg.start("alice-web").await;
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let (msg, info) = again
            .wait_message("offline messages", |_, i| ids.contains(&i.id))
            .await;
        assert!(info.is_offline, "delivered from the offline queue");
        got.push((info.id.clone(), text_of(&msg).unwrap_or_default()));
    }
    let got_ids: Vec<String> = got.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(got_ids, ids, "offline messages keep their order");
    assert_eq!(got[4].1, "offline 4");
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_message_to_a_third_account_reaches_the_linked_client_as_from_me() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550400001").await;
    let carol = sim.phone("15550400003").await;
    let (mut client, _) = paired_client(&sim, &alice, "alice-web").await;

    let id = alice.send_text("15550400003", "sent from my phone").await;
    let (msg, info) = client.wait_message("own message", |_, i| i.id == id).await;
    assert!(info.source.is_from_me);
    assert_eq!(info.source.chat.user.as_str(), "15550400003");
    assert_eq!(text_of(&msg).as_deref(), Some("sent from my phone"));
    carol.wait_message(|m| m["id"] == id.as_str()).await;
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlinked_client_is_logged_out_and_cannot_log_in_again() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550500001").await;
    let (mut client, cfg) = paired_client(&sim, &alice, "alice-web").await;
    let device = client.client.pn().unwrap().device;

    let (status, body) = sim
        .post(
            &format!("/phones/15550500001/devices/{device}/unlink"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    client
        .wait_for("LoggedOut", |e| {
            matches!(e, Event::LoggedOut(_)).then_some(())
        })
        .await;
    client.stop().await;

    let (_, phone) = sim.get("/phones/15550500001").await;
    assert_eq!(phone["devices"].as_array().unwrap().len(), 1, "{phone}");

    // Logging in again with the unlinked identity is refused (401 on connect).
    let mut again = cfg.start("alice-web").await;
    let on_connect = again
        .wait_for("LoggedOut on connect", |e| match e {
            Event::LoggedOut(l) => Some(l.on_connect),
            Event::Connected(_) => Some(false),
            _ => None,
        })
        .await;
    assert!(
        on_connect,
        "the server must refuse the unlinked device's login"
    );
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_reconnect_and_garbage_disturbs_no_one() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550600001").await;
    let bob = sim.phone("15550600002").await;
    let (mut client, _) = paired_client(&sim, &alice, "alice-web").await;

    let (status, body) = sim
        .post("/faults/disconnect", json!({"phone": "15550600001"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["dropped"], 1);
    client
        .wait_for("Disconnected", |e| {
            matches!(e, Event::Disconnected(_)).then_some(())
        })
        .await;
    client.wait_connected().await;

    // Raw garbage on a TCP socket, and a TLS WebSocket sending junk frames.
    let addr = sim
        .ws_url
        .trim_start_matches("wss://")
        .trim_end_matches("/ws/chat")
        .to_string();
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    raw.write_all(b"\x00\xffnot tls at all\r\n\r\n")
        .await
        .unwrap();
    let mut junk = tokio::net::TcpStream::connect(&addr).await.unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();

    // The paired client is not disturbed: messages still flow.
    let id = bob.send_text("15550600001", "still here?").await;
    client
        .wait_message("message after garbage", |_, i| i.id == id)
        .await;

    // Rejected connection attempts: the client keeps retrying and gets in.
    let (status, _) = sim
        .post("/faults/reject-connections", json!({"count": 2}))
        .await;
    assert_eq!(status, 200);
    sim.post("/faults/disconnect", json!({})).await;
    client
        .wait_for("Disconnected", |e| {
            matches!(e, Event::Disconnected(_)).then_some(())
        })
        .await;
    client.wait_connected().await;
    drop(raw);
    drop(junk);
    tokio::time::sleep(Duration::from_millis(1)).await;
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_simulator_restart() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550700001").await;
    sim.phone("15550700002").await;
    let (client, cfg) = paired_client(&sim, &alice, "alice-web").await;
    client.stop().await;
    drop(alice);

    let sim = sim.restart().await;
    let bob = crate::support::Phone {
        sim: &sim,
        number: "15550700002".into(),
    };
    let id = bob.send_text("15550700001", "after restart").await;
    let cfg = crate::support::ClientConfig {
        ws_url: sim.ws_url.clone(),
        ca_pem: sim.ca_pem.clone(),
        ..cfg
    };
    let mut again = cfg.start("alice-web").await;
    let (msg, _) = again
        .wait_message("message after restart", |_, i| i.id == id)
        .await;
    assert_eq!(text_of(&msg).as_deref(), Some("after restart"));
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_replaced_and_temporary_ban_reach_the_client() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15551300001").await;
    let (mut client, cfg) = paired_client(&sim, &alice, "alice-web").await;

    let (status, body) = sim
        .post(
            "/faults/stream-error",
            json!({"phone": "15551300001", "type": "replaced"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sent"], 1);
    client
        .wait_for("StreamReplaced", |e| {
            matches!(e, Event::StreamReplaced(_)).then_some(())
        })
        .await;
    client.stop().await;

    let (status, body) = sim
        .post(
            "/faults/ban",
            json!({"phone": "15551300001", "seconds": 600}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut again = cfg.start("alice-web").await;
    let expire = again
        .wait_for("TemporaryBan", |e| match e {
            Event::TemporaryBan(b) => Some(b.expire.num_seconds()),
            Event::Connected(_) => Some(-1),
            _ => None,
        })
        .await;
    assert!((1..=600).contains(&expire), "ban expiry {expire}");
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_phone_scan_picks_the_account_by_push_name_and_writes_sim_json() {
    let sim = TestSim::start().await;
    let cfg = sim.client_config(sim.db_path("mock"));
    let mut client = cfg.start("Mock Tester").await;
    let qr = client.wait_qr().await;
    let resp = sim
        .http
        .post(format!("{}/mock-phone/scan-qr", sim.admin))
        .body(qr)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let phone = body["phone"].as_str().unwrap().to_string();
    assert!(phone.starts_with("1555"), "{body}");
    client.wait_connected().await;
    let (_, acc) = sim.get(&format!("/phones/{phone}")).await;
    assert_eq!(acc["name"], "Mock Tester");
    assert_eq!(acc["devices"][1]["pushName"], "Mock Tester");
    client.stop().await;

    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(sim.dir.path().join("sim").join("sim.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(info["wsUrl"], sim.ws_url.as_str());
    assert_eq!(info["adminUrl"], sim.admin.as_str());
    let ca = std::fs::read_to_string(info["caFile"].as_str().unwrap()).unwrap();
    assert_eq!(ca, sim.ca_pem);
}

/// Clients address read receipts to the bare user; the simulator remembers
/// which device sent each message, also across a restart, so the receipt
/// reaches the sending client and not the account's phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipt_after_a_restart_reaches_the_sending_device() {
    use whatsapp_rust::wacore::types::presence::ReceiptType;
    let sim = TestSim::start().await;
    let alice = sim.phone("15550710001").await;
    let bob = sim.phone("15550710002").await;
    let alice_jid = alice.jid();
    let (a, a_cfg) = paired_client(&sim, &alice, "alice-web").await;
    let (mut b, b_cfg) = paired_client(&sim, &bob, "bob-web").await;
    let sent = a
        .client
        .send_text(bob.jid(), "read me later")
        .await
        .expect("send");
    let id = sent.message_id.clone();
    b.wait_message("alice's text", |_, i| i.id == id).await;
    a.stop().await;
    b.stop().await;
    drop((alice, bob));

    let sim = sim.restart().await;
    let moved = |cfg: crate::support::ClientConfig| crate::support::ClientConfig {
        ws_url: sim.ws_url.clone(),
        ca_pem: sim.ca_pem.clone(),
        ..cfg
    };
    let mut a = moved(a_cfg).start("alice-web").await;
    a.wait_connected().await;
    let mut b = moved(b_cfg).start("bob-web").await;
    b.wait_connected().await;
    b.client
        .mark_as_read(&alice_jid, None, &[id.as_str()])
        .await
        .expect("read receipt");
    a.wait_for("the read receipt", |e| match e {
        Event::Receipt(r) if r.message_ids.contains(&id) && r.r#type == ReceiptType::Read => {
            Some(())
        }
        _ => None,
    })
    .await;
    a.stop().await;
    b.stop().await;
}

/// A push name whose number (from its hash) already belongs to an account
/// of another name gets an account of its own, and keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_phone_scan_never_puts_two_push_names_on_one_account() {
    use sha2::{Digest, Sha256};
    let first = "tester-0";
    let digest = Sha256::digest(first.as_bytes());
    let slot = u64::from_be_bytes(digest[..8].try_into().unwrap()) % 10_000_000;
    // Another name got there first (a hash collision, or a phone created
    // through the API): the mock scan must move on rather than join it.
    let sim = TestSim::start().await;
    let taken = format!("1555{slot:07}");
    let (status, _) = sim
        .post("/phones", json!({"phone": taken, "name": "Someone Else"}))
        .await;
    assert_eq!(status, 201);

    let mut numbers = Vec::new();
    for name in [first, first] {
        let cfg = sim.client_config(sim.db_path(&format!("mock-{}", numbers.len())));
        let mut client = cfg.start(name).await;
        let qr = client.wait_qr().await;
        let resp = sim
            .http
            .post(format!("{}/mock-phone/scan-qr", sim.admin))
            .body(qr)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        numbers.push(body["phone"].as_str().unwrap().to_string());
        client.wait_connected().await;
        client.stop().await;
    }
    assert_ne!(numbers[0], taken, "a number of another name is not reused");
    assert_eq!(numbers[0], numbers[1], "the same name keeps its number");
    let (_, acc) = sim.get(&format!("/phones/{taken}")).await;
    assert_eq!(acc["devices"].as_array().unwrap().len(), 1, "{acc}");
}

/// Right after a scan the new device has uploaded no one-time prekeys yet:
/// phones must still reach it (a bundle without a one-time key), also while
/// other devices are being linked and messaged at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_messages_sent_right_after_linking_all_arrive_under_load() {
    let sim = TestSim::start().await;
    let sender = sim.phone("15550720000").await;
    let numbers: Vec<String> = (1..=4).map(|i| format!("1555072000{i}")).collect();
    let mut phones = Vec::new();
    for n in &numbers {
        phones.push(sim.phone(n).await);
    }
    let link_and_receive = |phone: &crate::support::Phone<'_>, name: String| {
        let sim = &sim;
        let sender = &sender;
        let number = phone.number.clone();
        async move {
            let cfg = sim.client_config(sim.db_path(&name));
            let mut client = cfg.start(&name).await;
            let qr = client.wait_qr().await;
            let own = crate::support::Phone {
                sim,
                number: number.clone(),
            };
            own.scan(&qr).await;
            // At once, before the client has even logged in again.
            let mut ids = Vec::new();
            for i in 0..5 {
                ids.push(sender.send_text(&number, &format!("{name} #{i}")).await);
            }
            ids.push(own.send_text("15550720000", "from my phone").await);
            for id in &ids {
                client
                    .wait_message("every message", |_, i| i.id == *id)
                    .await;
            }
            client.stop().await;
        }
    };
    let runs: Vec<_> = phones
        .iter()
        .enumerate()
        .map(|(i, p)| link_and_receive(p, format!("linked-{i}")))
        .collect();
    futures::future::join_all(runs).await;
}
