//! The messaging surface beyond text and media, end to end against the simulator:
//! reactions, and what the phone does to our messages.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::e2e::pair;
use crate::helpers::{Options, TestApp, assert_error, wait_for};
use crate::webhooks::Receiver;

const ALICE: &str = "15550004001";
const BOB: &str = "15550004002";
const LONG: Duration = Duration::from_secs(60);

/// A server whose webhooks may go to this machine (the test's receiver).
async fn app() -> TestApp {
    TestApp::start_with(Options {
        sim: true,
        configure: Some(Box::new(|c| c.webhook.allow_private = true)),
        ..Options::default()
    })
    .await
}

/// The session's history message `id`.
async fn message(app: &TestApp, session: &str, id: &str) -> Option<Value> {
    let (s, b) = app
        .get_json(&format!("/api/messages/{session}?limit=500"))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
}

/// The next webhook body of event `event`, skipping others.
async fn next_event(hook: &mut Receiver, event: &str) -> Value {
    loop {
        let body = hook.next(LONG).await.json();
        if body["event"] == event {
            return body;
        }
    }
}

#[tokio::test]
async fn reactions_go_both_ways_and_show_on_the_message_they_react_to() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(ALICE, "Alice").await;
    sim.phone(BOB, "Bob").await;
    let mut hook = Receiver::start().await;
    pair(&app, "r1", ALICE).await;
    let (s, b) = app
        .post_json(
            "/api/r1/webhook",
            json!({"url": hook.url, "events": ["message-reaction"]}),
        )
        .await;
    assert!(s.is_success(), "{b}");
    let alice_jid = format!("{ALICE}@s.whatsapp.net");
    let bob_jid = format!("{BOB}@s.whatsapp.net");

    // Bob writes; we react to his message.
    let theirs = sim.send(BOB, ALICE, "lunch at one?").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(LONG, "Bob's message in the history", || async {
        message(&app, "r1", &theirs).await
    })
    .await;
    // Bad reactions are refused before anything reaches WhatsApp.
    for (body, status, code) in [
        (
            json!({"sessionId": "r1", "messageId": "3EB0NOSUCHMESSAGE", "emoji": "👍"}),
            StatusCode::NOT_FOUND,
            "message_not_found",
        ),
        (
            json!({"sessionId": "r1", "messageId": theirs, "emoji": "ok"}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            json!({"sessionId": "r1", "messageId": theirs, "emoji": "👍👍👍👍👍👍👍👍👍👍👍"}),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            json!({"sessionId": "r1", "messageId": theirs}),
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
        (
            json!({"sessionId": "r1", "emoji": "👍"}),
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
    ] {
        let got = app.post_json("/api/send-reaction", body).await;
        assert_error(&got, status, code);
    }
    let (s, sent) = app
        .post_json(
            "/api/send-reaction",
            json!({"sessionId": "r1", "messageId": theirs, "emoji": "👍"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sent}");
    assert_eq!(sent["type"], "reaction", "{sent}");
    assert_eq!(sent["status"], "sent", "{sent}");
    assert_eq!(sent["reaction"]["messageId"], theirs.as_str(), "{sent}");
    assert_eq!(sent["reaction"]["emoji"], "👍", "{sent}");
    // Bob's phone decrypts it and shows it on his message, and only that arrived.
    let on_phone = wait_for(LONG, "the reaction on Bob's message", || async {
        let m = sim.messages(BOB).await;
        let target = m.iter().find(|m| m["id"] == theirs.as_str())?.clone();
        (target["reactions"][ALICE] == "👍").then_some(m)
    })
    .await;
    let r = on_phone
        .iter()
        .find(|m| m["id"] == sent["id"])
        .expect("the reaction message");
    assert_eq!(r["reaction"]["messageId"], theirs.as_str(), "{r}");
    assert_eq!(r["from"], ALICE, "{r}");
    assert_eq!(
        on_phone.len(),
        2,
        "nothing else reached the phone: {on_phone:?}"
    );
    let shown = message(&app, "r1", &theirs).await.unwrap();
    assert_eq!(shown["reactions"][0]["emoji"], "👍", "{shown}");
    assert_eq!(shown["reactions"][0]["from"], alice_jid.as_str(), "{shown}");
    let ev = next_event(&mut hook, "message-reaction").await;
    assert_eq!(ev["data"]["id"], sent["id"], "{ev}");
    assert_eq!(ev["data"]["fromMe"], true, "{ev}");

    // We write; Bob reacts, changes his mind, then takes it back.
    let (s, ours) = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "r1", "to": BOB, "text": "one works"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{ours}");
    let ours = ours["id"].as_str().unwrap().to_owned();
    wait_for(LONG, "our message on Bob's phone", || async {
        sim.messages(BOB)
            .await
            .into_iter()
            .find(|m| m["id"] == ours.as_str())
    })
    .await;
    for (emoji, shown_as) in [("❤️", Some("❤️")), ("😂", Some("😂")), ("", None)] {
        let r = sim
            .send_json(
                BOB,
                &json!({"to": ALICE, "reaction": {"messageId": ours, "emoji": emoji}}),
            )
            .await;
        let ev = next_event(&mut hook, "message-reaction").await;
        assert_eq!(ev["data"]["id"], r["id"], "{ev}");
        assert_eq!(ev["data"]["fromMe"], false, "{ev}");
        assert_eq!(ev["data"]["from"], bob_jid.as_str(), "{ev}");
        assert_eq!(ev["data"]["reaction"]["messageId"], ours.as_str(), "{ev}");
        assert_eq!(ev["data"]["reaction"]["emoji"], emoji, "{ev}");
        let shown = message(&app, "r1", &ours).await.unwrap();
        let marks = shown["reactions"].as_array().cloned().unwrap_or_default();
        match shown_as {
            Some(e) => {
                assert_eq!(marks.len(), 1, "one per sender, the latest: {shown}");
                assert_eq!(marks[0]["emoji"], e, "{shown}");
                assert_eq!(marks[0]["from"], bob_jid.as_str(), "{shown}");
            }
            None => assert!(marks.is_empty(), "taken back: {shown}"),
        }
    }
    // The phone refuses to react to a message it does not have.
    let r = sim
        .admin
        .post(sim.url(&format!("/phones/{BOB}/messages")))
        .json(&json!({"to": ALICE, "reaction": {"messageId": "3EB0UNKNOWN", "emoji": "👍"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
