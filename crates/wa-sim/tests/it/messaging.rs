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
