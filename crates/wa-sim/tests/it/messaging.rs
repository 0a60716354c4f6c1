//! Text messages between clients and phones, receipts.

use crate::support::{TestSim, paired_client, text_of};
use whatsapp_rust::wacore::types::events::Event;
use whatsapp_rust::wacore::types::presence::ReceiptType;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_text_reaches_phone_and_receipts_come_back() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15551000001").await;
    let bob = sim.phone("15551000002").await;
    let (mut client, _) = paired_client(&sim, &alice, "alice-web").await;

    let sent = client
        .client
        .send_text(bob.jid(), "hello bob")
        .await
        .expect("send");
    let id = sent.message_id.clone();

    let got = bob.wait_message(|m| m["id"] == id.as_str()).await;
    assert_eq!(got["text"], "hello bob");
    assert_eq!(got["from"], "15551000001");
    assert_eq!(got["fromMe"], false);

    let delivered = client
        .wait_for("delivery receipt", |e| match e {
            Event::Receipt(r) if r.message_ids.contains(&id) => Some(r.r#type.clone()),
            _ => None,
        })
        .await;
    assert_eq!(delivered, ReceiptType::Delivered);

    bob.read(&[id.as_str()]).await;
    client
        .wait_for("read receipt", |e| match e {
            Event::Receipt(r) if r.message_ids.contains(&id) && r.r#type == ReceiptType::Read => {
                Some(())
            }
            _ => None,
        })
        .await;
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_text_reaches_client() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15551100001").await;
    let bob = sim.phone("15551100002").await;
    let (mut client, _) = paired_client(&sim, &alice, "alice-web").await;

    let id = bob.send_text("15551100001", "hi alice").await;
    let (msg, info) = client
        .wait_message("bob's text", |_, info| info.id == id)
        .await;
    assert_eq!(text_of(&msg).as_deref(), Some("hi alice"));
    assert!(!info.source.is_from_me);
    assert_eq!(info.source.sender.user.as_str(), "15551100002");
    // The phone learns that its message arrived.
    bob.wait_message(|m| m["id"] == id.as_str() && m["status"] == "delivered")
        .await;
    client.stop().await;
}

/// An offline phone (`POST /admin/phones/:phone/online`) keeps what is sent to it
/// unanswered and can do nothing; back online, it takes the message and sends its
/// delivery receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_phone_answers_once_it_is_back() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15551000021").await;
    let bob = sim.phone("15551000022").await;
    let (mut b, _) = paired_client(&sim, &bob, "bob-away").await;

    let (status, body) = sim
        .post(
            "/phones/15551000021/online",
            serde_json::json!({"online": false}),
        )
        .await;
    assert_eq!(
        (status, body["online"].clone()),
        (200, false.into()),
        "{body}"
    );
    let (status, body) = sim
        .post(
            "/phones/15551000021/messages",
            serde_json::json!({"to": "15551000022", "text": "from a dead phone"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "phone_offline");

    let id = b
        .client
        .send_text(alice.jid(), "are you there?")
        .await
        .expect("send")
        .message_id;
    // It waits in the phone's queue, and the phone has not seen it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, acc) = sim.get("/phones/15551000021").await;
        let phone = &acc["devices"][0];
        assert_eq!(phone["online"], false);
        if phone["queued"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never queued: {acc}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        alice
            .messages()
            .await
            .iter()
            .all(|m| m["id"] != id.as_str())
    );
    while let Ok(e) = b.events.try_recv() {
        if let Event::Receipt(r) = &*e {
            assert!(
                !r.message_ids.contains(&id),
                "a receipt while offline: {r:?}"
            );
        }
    }

    let (status, body) = sim
        .post(
            "/phones/15551000021/online",
            serde_json::json!({"online": true}),
        )
        .await;
    assert_eq!((status, body["handled"].clone()), (200, 1.into()), "{body}");
    let got = alice.wait_message(|m| m["id"] == id.as_str()).await;
    assert_eq!(got["text"], "are you there?");
    let kind = b
        .wait_for("the phone's delivery receipt", |e| match e {
            Event::Receipt(r) if r.message_ids.contains(&id) => Some(r.r#type.clone()),
            _ => None,
        })
        .await;
    assert_eq!(kind, ReceiptType::Delivered);
    b.stop().await;
}
