//! Privacy tokens over real sockets: a restricted account's whatsapp-rust device proves
//! itself with the NCT salt it learnt by app state, a time-locked one reaches only people
//! who wrote to it (their token comes by notification), and what lacks proof is refused
//! with WhatsApp's 463.

use std::time::Duration;

use serde_json::json;
use whatsapp_rust::wacore::types::events::Event;
use whatsapp_rust::waproto::whatsapp as wa;

use crate::support::{TestClient, TestSim, paired_client};

fn text(body: &str) -> wa::Message {
    wa::Message {
        conversation: Some(body.to_string()),
        ..Default::default()
    }
}

/// Sends `body` to `to` and returns the server's verdict: `None` taken, `Some(code)` refused.
async fn send(client: &mut TestClient, to: &str, body: &str) -> (String, Option<String>) {
    let jid: wacore_binary::Jid = format!("{to}@s.whatsapp.net").parse().unwrap();
    let sent = client
        .client
        .send_message(jid, text(body))
        .await
        .expect("send");
    let id = sent.message_id.clone();
    let verdict = client
        .wait_for("the server's ack", |e| match e {
            Event::ServerAck(a) if a.id == id => Some(a.error.clone()),
            _ => None,
        })
        .await;
    (id, verdict)
}

/// Waits until the client holds the account's NCT salt (app state, after linking).
async fn wait_for_salt(client: &TestClient) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while client
        .client
        .persistence_manager()
        .get_device_snapshot()
        .nct_salt
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the device never got the NCT salt"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privacy_tokens_decide_whom_a_restricted_account_reaches() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550930001").await;
    let bob = sim.phone("15550930002").await;
    let carol = sim.phone("15550930003").await;
    let (mut a, _) = paired_client(&sim, &alice, "alice").await;
    wait_for_salt(&a).await;

    // Unrestricted, a first message goes through.
    let (id, verdict) = send(&mut a, &bob.number, "hello bob").await;
    assert_eq!(verdict, None);
    bob.wait_message(|m| m["id"] == id.as_str()).await;

    // Tokens required: the device's cstoken (HMAC of the salt it got by app state) passes.
    let (status, body) = sim
        .post(
            "/phones/15550930001/restrictions",
            json!({"requirePrivacyTokens": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (id, verdict) = send(&mut a, &carol.number, "first words to carol").await;
    assert_eq!(verdict, None, "a cstoken should pass");
    carol.wait_message(|m| m["id"] == id.as_str()).await;
    // After writing, the device gave carol its own token (the issue IQ after a send).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, acc) = sim.get("/phones/15550930001").await;
        if acc["tokensIssued"]["15550930003"].is_number() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no token given: {acc}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Time-locked: nobody who never wrote to alice hears from her, cstoken or not.
    let (status, body) = sim
        .post(
            "/phones/15550930001/restrictions",
            json!({"reachoutTimelock": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["restrictions"],
        json!({"requirePrivacyTokens": true, "reachoutTimelock": true})
    );
    let (refused, verdict) = send(&mut a, &carol.number, "are you there?").await;
    assert_eq!(verdict.as_deref(), Some("463"));

    // Carol writes; her phone gives alice a token, which reaches the device by notification.
    let reply = carol.send_text(&alice.number, "I am, write to me").await;
    a.wait_message("carol's message", |_, i| i.id == reply.as_str())
        .await;
    let (_, acc) = sim.get("/phones/15550930003").await;
    assert!(acc["tokensIssued"]["15550930001"].is_number(), "{acc}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (id, verdict) = loop {
        // The notification and the message come one after the other; until the client
        // stored the token, its message still lacks one.
        let (id, verdict) = send(&mut a, &carol.number, "there you are").await;
        if verdict.is_none() || tokio::time::Instant::now() > deadline {
            break (id, verdict);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(verdict, None, "carol's token should pass");
    carol.wait_message(|m| m["id"] == id.as_str()).await;
    // Bob never wrote: still refused. The refused message never reached anyone.
    let (_, verdict) = send(&mut a, &bob.number, "and you, bob?").await;
    assert_eq!(verdict.as_deref(), Some("463"));
    assert!(
        !carol
            .messages()
            .await
            .iter()
            .any(|m| m["id"] == refused.as_str()),
        "a refused message was delivered"
    );

    // The restrictions outlive a restart.
    let sim = {
        a.stop().await;
        sim.restart().await
    };
    let (_, acc) = sim.get("/phones/15550930001").await;
    assert_eq!(acc["restrictions"]["reachoutTimelock"], true);
}

/// A device linked after a contact gave the account its token finds the token in its
/// history sync (the chat's `tcToken`), and the salt in the bootstrap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_linked_later_gets_the_tokens_by_history_sync() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550931001").await;
    let carol = sim.phone("15550931003").await;
    carol.send_text(&alice.number, "hi alice").await;
    let (_, acc) = sim.get("/phones/15550931003").await;
    let given = acc["tokensIssued"]["15550931001"]
        .as_i64()
        .expect("carol gave a token");

    let mut cfg = sim.client_config(sim.db_path("alice"));
    cfg.history_sync = true;
    let mut a = cfg.start("alice").await;
    let qr = a.wait_qr().await;
    alice.scan(&qr).await;
    a.wait_connected().await;
    wait_for_salt(&a).await;
    let (_, carol_acc) = sim.get("/phones/15550931003").await;
    let carol_lid = carol_acc["lid"]
        .as_str()
        .unwrap()
        .trim_end_matches("@lid")
        .to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let entry = loop {
        // Kept under carol's number, or her LID once the client knows it.
        let mut found = None;
        for key in [carol.number.as_str(), carol_lid.as_str()] {
            if let Some(e) = a.client.tc_token().get(key).await.expect("token store") {
                found = Some(e);
            }
        }
        if let Some(e) = found.filter(|e| !e.token.is_empty()) {
            break e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the history sync brought no token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(entry.token_timestamp, given);
    assert_eq!(entry.token.len(), 20);
}
