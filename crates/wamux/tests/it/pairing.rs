//! Linking a session by pairing code ("Link with phone number") through the API, against the
//! WhatsApp simulator: the user asks for a code, types it into the phone, and the session
//! connects without any QR scan.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, into_json, wait_until};

const ALICE: &str = "15550001001";
const BOB: &str = "15550001002";
const LONG: Duration = Duration::from_secs(60);

/// The phone's user types `code` into WhatsApp; returns the simulator's answer.
async fn enter_code(app: &TestApp, phone: &str, code: &str) -> (StatusCode, Value) {
    let sim = app.sim.as_ref().unwrap();
    let resp = sim
        .admin
        .post(sim.url(&format!("/phones/{phone}/link-code")))
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    into_json(resp).await
}

/// Starts `session` and waits until it is up and showing a QR (its socket is open, so a
/// code can be asked for).
async fn start_unpaired(app: &TestApp, session: &str) {
    let (status, body) = app
        .post_json("/api/start-session", json!({"sessionId": session}))
        .await;
    assert!(status.is_success(), "{body}");
    app.wait_qr(session, LONG).await;
}

#[tokio::test]
async fn session_links_by_pairing_code_and_messages_flow() {
    let app = TestApp::with_sim().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(ALICE, "Alice").await;
    sim.phone(BOB, "Bob").await;
    start_unpaired(&app, "pc1").await;

    // Any spelling of the number the other routes take.
    let (status, body) = app
        .post_json(
            "/api/sessions/pc1/pairing-code",
            json!({"phone": "+1 555 000 1001"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["sessionId"], "pc1");
    let code = body["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 8, "an 8-character code: {code}");

    let (status, linked) = enter_code(&app, ALICE, &code).await;
    assert_eq!(status, StatusCode::OK, "{linked}");
    app.wait_status("pc1", "connected", LONG).await;
    let (_, status) = app.get_json("/api/status/pc1").await;
    assert_eq!(status["me"]["phone"], ALICE, "{status}");
    assert_eq!(status["me"]["jid"], format!("{ALICE}@s.whatsapp.net"));

    // Linked for real: sending and receiving work.
    let (status, sent) = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "pc1", "to": BOB, "text": "linked by code"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let id = sent["messageId"].as_str().unwrap().to_owned();
    wait_until(LONG, "Bob's phone to get the message", || async {
        sim.messages(BOB)
            .await
            .iter()
            .any(|m| m["id"] == id.as_str() && m["text"] == "linked by code")
    })
    .await;
    let reply = sim.send(BOB, ALICE, "welcome").await;
    let reply_id = reply["id"].as_str().unwrap().to_owned();
    wait_until(LONG, "Bob's reply in the history", || async {
        let (_, b) = app.get_json("/api/messages/pc1?direction=in").await;
        b["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["id"] == reply_id.as_str()))
    })
    .await;

    // Paired now: another code is refused.
    let got = app
        .post_json("/api/sessions/pc1/pairing-code", json!({"phone": ALICE}))
        .await;
    assert_eq!(got.0, StatusCode::CONFLICT, "{}", got.1);
    app.stop().await;
}

#[tokio::test]
async fn wrong_pairing_code_leaves_the_session_unlinked() {
    let app = TestApp::with_sim().await;
    app.sim.as_ref().unwrap().phone(ALICE, "Alice").await;
    start_unpaired(&app, "pc2").await;
    let (status, body) = app
        .post_json("/api/sessions/pc2/pairing-code", json!({"phone": ALICE}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let code = body["code"].as_str().unwrap();
    // The same code with its first character changed.
    let first = if code.starts_with('A') { 'B' } else { 'A' };
    let wrong: String = std::iter::once(first).chain(code.chars().skip(1)).collect();

    let (status, body) = enter_code(&app, ALICE, &wrong).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "code_mismatch");
    assert_ne!(app.status_of("pc2").await, "connected");
    let (_, status) = app.get_json("/api/status/pc2").await;
    assert!(status["me"]["phone"].is_null(), "{status}");
    app.stop().await;
}

#[tokio::test]
async fn pairing_code_for_a_bad_phone_number_is_a_400_naming_it() {
    let app = TestApp::with_sim().await;
    app.sim.as_ref().unwrap().phone(ALICE, "Alice").await;
    start_unpaired(&app, "pc3").await;
    for (phone, code, names) in [
        (json!("12345"), "invalid_phone", "12345"),
        (json!("05551234567"), "invalid_phone", "05551234567"),
        (json!("call me"), "invalid_phone", "call me"),
        (json!("1203630@g.us"), "invalid_phone", "phone"),
        (json!(""), "missing_field", "phone"),
        (json!(["1555"]), "invalid_field", "phone"),
        (Value::Null, "missing_field", "phone"),
        (json!(15550001001u64), "", ""),
    ] {
        let got = app
            .post_json("/api/sessions/pc3/pairing-code", json!({"phone": phone}))
            .await;
        if code.is_empty() {
            // A number as a JSON number is fine.
            assert_eq!(got.0, StatusCode::OK, "{phone}: {}", got.1);
            continue;
        }
        assert_error(&got, StatusCode::BAD_REQUEST, code);
        let message = got.1["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(names),
            "{phone}: the message should name {names:?}: {message}"
        );
    }
    let got = app
        .post_json("/api/sessions/nope/pairing-code", json!({"phone": ALICE}))
        .await;
    assert_eq!(got.0, StatusCode::NOT_FOUND, "{}", got.1);
    app.stop().await;
}
