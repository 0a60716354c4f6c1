//! Linking an account that WhatsApp gates behind the owner's passkey, against the
//! simulator's gate: the session asks for the assertion, takes the owner's browser answer,
//! shows the code the phone shows, and links once the operator confirms it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp, assert_error, into_json, wait_for, wait_until};
use crate::webhooks::Receiver;

const LONG: Duration = Duration::from_secs(60);

/// A sandbox gateway whose webhooks may go to loopback receivers.
async fn app_with(step_timeout: Option<u64>) -> TestApp {
    TestApp::start_with(Options {
        sim: true,
        configure: Some(Box::new(move |c| {
            c.webhook.allow_private = true;
            if let Some(t) = step_timeout {
                c.passkey_step_timeout = Duration::from_secs(t);
            }
        })),
        ..Options::default()
    })
    .await
}

/// The simulator's admin API: status and JSON body.
async fn sim_req(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    app.sim
        .as_ref()
        .unwrap()
        .admin_json(method, path, body)
        .await
}

async fn gated_phone(app: &TestApp, phone: &str) {
    let (s, b) = sim_req(
        app,
        reqwest::Method::POST,
        "/phones",
        Some(json!({"phone": phone, "name": "Gated", "passkey": true})),
    )
    .await;
    assert!(s.is_success(), "{b}");
    assert_eq!(b["passkey"], true, "{b}");
}

/// What the owner's browser on web.whatsapp.com answers for `options` (`tamper` spoils
/// one field).
async fn owner_assertion(
    app: &TestApp,
    phone: &str,
    options: &Value,
    tamper: Option<&str>,
) -> Value {
    let mut body = json!({"options": options});
    if let Some(t) = tamper {
        body["tamper"] = t.into();
    }
    let (s, b) = sim_req(
        app,
        reqwest::Method::POST,
        &format!("/phones/{phone}/passkey/assert"),
        Some(body),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

/// What the phone's screen shows.
async fn phone_screen(app: &TestApp, phone: &str) -> Value {
    let (s, b) = sim_req(
        app,
        reqwest::Method::GET,
        &format!("/phones/{phone}/passkey"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

async fn passkey_of(app: &TestApp, session: &str) -> Value {
    let (s, b) = app
        .get_json(&format!("/api/sessions/{session}/passkey"))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

/// Starts `session` with a webhook to `hook` and waits for its QR.
async fn start_with_hook(app: &TestApp, session: &str, hook: &Receiver) -> String {
    let (s, b) = app
        .post_json("/api/start-session", json!({"sessionId": session}))
        .await;
    assert!(s.is_success(), "{b}");
    let (s, b) = app
        .post_json(&format!("/api/{session}/webhook"), json!({"url": hook.url}))
        .await;
    assert!(s.is_success(), "{b}");
    app.wait_qr(session, LONG).await
}

/// A gated phone scans the session's QR: WhatsApp answers with the passkey gate.
async fn scan_gated(app: &TestApp, phone: &str, qr: &str) {
    let (s, b) = sim_req(
        app,
        reqwest::Method::POST,
        &format!("/phones/{phone}/scan"),
        Some(json!({"qr": qr})),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::ACCEPTED,
        "a gated phone does not link at once: {b}"
    );
    assert_eq!(b["passkey"], "required", "{b}");
}

/// The next webhook named `event` (the names of the ones before it go to `seen`).
async fn next_event(hook: &mut Receiver, event: &str, seen: &mut Vec<String>) -> Value {
    next_event_within(hook, event, seen, LONG).await
}

async fn next_event_within(
    hook: &mut Receiver,
    event: &str,
    seen: &mut Vec<String>,
    within: Duration,
) -> Value {
    loop {
        let body = hook.next(within).await.json();
        let name = body["event"].as_str().unwrap_or_default().to_owned();
        seen.push(name.clone());
        if name == event {
            return body;
        }
    }
}

/// Submits the owner's answer and confirms the code; returns once connected.
async fn finish_ceremony(app: &TestApp, session: &str, phone: &str) {
    app.wait_status(session, "passkey_required", LONG).await;
    let pending = passkey_of(app, session).await;
    let assertion = owner_assertion(app, phone, &pending["options"], None).await;
    let (s, b) = app
        .post_json(&format!("/api/sessions/{session}/passkey"), assertion)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    app.wait_status(session, "passkey_confirmation", LONG).await;
    let (s, b) = into_json(
        app.req(
            reqwest::Method::POST,
            &format!("/api/sessions/{session}/passkey/confirm"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    app.wait_status(session, "connected", LONG).await;
}

#[tokio::test]
async fn a_gated_account_links_by_qr_through_the_passkey_step_and_stays_linked() {
    let app = app_with(None).await;
    let sim = app.sim.as_ref().unwrap();
    const OWNER: &str = "15550003001";
    const FRIEND: &str = "15550003002";
    gated_phone(&app, OWNER).await;
    sim.phone(FRIEND, "Friend").await;
    let mut hook = Receiver::start().await;
    let qr = start_with_hook(&app, "pk1", &hook).await;

    // Nothing waits yet.
    let got = app
        .req(reqwest::Method::POST, "/api/sessions/pk1/passkey/confirm")
        .send()
        .await
        .unwrap();
    assert_error(
        &into_json(got).await,
        StatusCode::CONFLICT,
        "passkey_not_pending",
    );
    assert_eq!(passkey_of(&app, "pk1").await["stage"], "none");

    scan_gated(&app, OWNER, &qr).await;
    app.wait_status("pk1", "passkey_required", LONG).await;
    let mut seen = Vec::new();
    let required = next_event(&mut hook, "passkey-required", &mut seen).await;
    let pending = passkey_of(&app, "pk1").await;
    assert_eq!(pending["stage"], "assertion_required", "{pending}");
    let options = pending["options"].clone();
    assert_eq!(options["rpId"], "whatsapp.com", "{options}");
    assert_eq!(options["userVerification"], "required", "{options}");
    assert_eq!(
        required["data"]["options"], options,
        "the event carries the same options"
    );
    assert!(pending["expiresAt"].as_i64().unwrap() > required["timestamp"].as_i64().unwrap());
    // The QR is gone while the passkey step runs.
    let (s, _) = app.get_json("/api/qr/pk1").await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Checked at the edge: a malformed paste and an answer to another challenge.
    let good = owner_assertion(&app, OWNER, &options, None).await;
    let mut broken = good.clone();
    broken["response"]["signature"] = json!("not base64url!");
    let got = app.post_json("/api/sessions/pk1/passkey", broken).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_assertion");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("response.signature"),
        "{}",
        got.1
    );
    let mut other = options.clone();
    other["challenge"] = json!("b3RoZXItY2hhbGxlbmdlLW9mLTMyLWJ5dGVzLWxvbmcuLi4");
    let stale = owner_assertion(&app, OWNER, &other, None).await;
    let got = app.post_json("/api/sessions/pk1/passkey", stale).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_assertion");
    assert_eq!(
        passkey_of(&app, "pk1").await["stage"],
        "assertion_required",
        "a refused paste changes nothing"
    );

    // The owner's answer: WhatsApp accepts it and both sides show the same code.
    let (s, b) = app.post_json("/api/sessions/pk1/passkey", good).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    app.wait_status("pk1", "passkey_confirmation", LONG).await;
    let confirmation = next_event(&mut hook, "passkey-confirmation", &mut seen).await;
    let code = passkey_of(&app, "pk1").await["code"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(code.len(), 9, "XXXX-XXXX: {code}");
    assert_eq!(confirmation["data"]["code"], code.as_str());
    let screen = phone_screen(&app, OWNER).await;
    assert_eq!(
        screen["code"],
        code.as_str(),
        "the phone shows the same code: {screen}"
    );
    assert_eq!(
        passkey_of(&app, "pk1").await["stage"],
        "confirmation_required"
    );

    let (s, b) = into_json(
        app.req(reqwest::Method::POST, "/api/sessions/pk1/passkey/confirm")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    app.wait_status("pk1", "connected", LONG).await;
    let (_, status) = app.get_json("/api/status/pk1").await;
    assert_eq!(status["me"]["phone"], OWNER, "{status}");
    assert_eq!(passkey_of(&app, "pk1").await["stage"], "none");
    assert!(!seen.iter().any(|e| e == "passkey-failed"), "{seen:?}");
    // required came before confirmation, and connected came after both.
    loop {
        let body = hook.next(LONG).await.json();
        assert_ne!(body["event"], "passkey-failed", "{body}");
        if body["event"] == "session-status" && body["data"]["status"] == "connected" {
            break;
        }
    }

    // Messages flow both ways.
    let (s, sent) = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "pk1", "to": FRIEND, "text": "past the gate"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sent}");
    let id = sent["messageId"].as_str().unwrap().to_owned();
    wait_until(LONG, "the friend to get the message", || async {
        sim.messages(FRIEND)
            .await
            .iter()
            .any(|m| m["id"] == id.as_str())
    })
    .await;
    sim.send(FRIEND, OWNER, "welcome").await;
    wait_until(LONG, "the reply in the history", || async {
        let (_, b) = app.get_json("/api/messages/pk1?direction=in").await;
        b["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["text"] == "welcome")
    })
    .await;

    // A new client from the stored credentials logs in without any passkey step.
    let (s, b) = app.post_json("/api/sessions/pk1/restart", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    app.wait_status("pk1", "connected", LONG).await;
    let (_, events) = app.get_json("/api/events?sessionId=pk1").await;
    let passkey_events: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .filter(|e| e.starts_with("passkey-"))
        .collect();
    assert_eq!(
        passkey_events,
        ["passkey-required", "passkey-confirmation"],
        "{events}"
    );
}

#[tokio::test]
async fn a_refused_assertion_fails_the_link_and_start_session_links_afresh() {
    let app = app_with(None).await;
    const OWNER: &str = "15550003011";
    gated_phone(&app, OWNER).await;
    let mut hook = Receiver::start().await;
    let qr = start_with_hook(&app, "pk2", &hook).await;
    scan_gated(&app, OWNER, &qr).await;
    app.wait_status("pk2", "passkey_required", LONG).await;
    let options = passkey_of(&app, "pk2").await["options"].clone();

    // Well formed, but not signed by the owner's key: only WhatsApp can tell.
    let forged = owner_assertion(&app, OWNER, &options, Some("signature")).await;
    let got = app.post_json("/api/sessions/pk2/passkey", forged).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "passkey_rejected");
    let mut seen = Vec::new();
    let failed = next_event(&mut hook, "passkey-failed", &mut seen).await;
    let reason = failed["data"]["reason"].as_str().unwrap();
    assert!(reason.contains("refused"), "{reason}");
    app.wait_status("pk2", "failed", LONG).await;
    let after = passkey_of(&app, "pk2").await;
    assert_eq!(after["stage"], "none");
    assert_eq!(after["error"], reason, "{after}");
    assert!(
        sim_companions(&app, OWNER).await.is_empty(),
        "nothing was linked"
    );

    // Starting again shows a new QR, and a good assertion then links.
    let (s, b) = app
        .post_json("/api/start-session", json!({"sessionId": "pk2"}))
        .await;
    assert!(s.is_success(), "{b}");
    let qr = app.wait_qr("pk2", LONG).await;
    scan_gated(&app, OWNER, &qr).await;
    finish_ceremony(&app, "pk2", OWNER).await;
    assert_eq!(sim_companions(&app, OWNER).await.len(), 1);
}

async fn sim_companions(app: &TestApp, phone: &str) -> Vec<u64> {
    app.sim.as_ref().unwrap().companions(phone).await
}

#[tokio::test]
async fn a_continuation_that_never_comes_ends_in_passkey_failed() {
    let app = app_with(Some(2)).await;
    const OWNER: &str = "15550003021";
    gated_phone(&app, OWNER).await;
    let (s, b) = sim_req(
        &app,
        reqwest::Method::POST,
        "/faults/passkey",
        Some(json!({"phone": OWNER, "noContinuation": true})),
    )
    .await;
    assert!(s.is_success(), "{b}");
    let mut hook = Receiver::start().await;
    let qr = start_with_hook(&app, "pk3", &hook).await;
    scan_gated(&app, OWNER, &qr).await;
    app.wait_status("pk3", "passkey_required", LONG).await;
    let options = passkey_of(&app, "pk3").await["options"].clone();
    let assertion = owner_assertion(&app, OWNER, &options, None).await;
    let (s, b) = app.post_json("/api/sessions/pk3/passkey", assertion).await;
    assert_eq!(
        s,
        StatusCode::ACCEPTED,
        "WhatsApp accepted the assertion: {b}"
    );
    assert_eq!(b["stage"], "confirming", "{b}");

    let mut seen = Vec::new();
    let failed = next_event(&mut hook, "passkey-failed", &mut seen).await;
    let reason = failed["data"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("did not take the next passkey step within 2 s"),
        "{reason}"
    );
    assert_eq!(failed["data"]["stage"], "confirming");
    app.wait_status("pk3", "failed", LONG).await;
    assert!(sim_companions(&app, OWNER).await.is_empty());
}

/// How many QR codes the session has offered.
async fn qr_count(app: &TestApp, session: &str) -> usize {
    let (_, ev) = app
        .get_json(&format!("/api/events?sessionId={session}&limit=1000"))
        .await;
    ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "qr")
        .count()
}

/// whatsapp-rust 0.7 closes a link attempt's connection when its six QR codes have run out
/// (about 160 s after the first), passkey step or not. The step's deadline says so, and
/// running out ends in `passkey-failed` with the reason. This test waits that long.
#[tokio::test]
async fn a_passkey_step_by_qr_must_end_before_the_qr_codes_run_out() {
    let app = app_with(None).await;
    const OWNER: &str = "15550003041";
    gated_phone(&app, OWNER).await;
    let mut hook = Receiver::start().await;
    let qr = start_with_hook(&app, "pk5", &hook).await;
    let (_, first) = app.get_json("/api/qr/pk5").await;
    let first_expires = first["expiresAt"].as_i64().unwrap();
    scan_gated(&app, OWNER, &qr).await;
    app.wait_status("pk5", "passkey_required", LONG).await;
    let pending = passkey_of(&app, "pk5").await;
    let deadline = pending["expiresAt"].as_i64().unwrap();
    // The first code's 60 s and five more of 20 s: not the passkey's own 600 s.
    assert!(
        (deadline - (first_expires + 100)).abs() <= 2,
        "deadline {deadline}, first QR expiring at {first_expires}"
    );
    let mut seen = Vec::new();
    let failed = next_event_within(
        &mut hook,
        "passkey-failed",
        &mut seen,
        Duration::from_secs(240),
    )
    .await;
    let reason = failed["data"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("QR codes of this link attempt ran out"),
        "{reason}"
    );
    app.wait_status("pk5", "failed", LONG).await;
    assert!(sim_companions(&app, OWNER).await.is_empty());
}

/// A pairing code the phone took shortly before the QR codes run out keeps the connection
/// past them: whatsapp-rust waits for that link. The passkey step then has its whole
/// 600 s, and completes after the QR codes are gone. This test waits for the last QR code.
#[tokio::test]
async fn a_passkey_step_after_a_late_pairing_code_outlasts_the_qr_codes() {
    let app = app_with(None).await;
    const OWNER: &str = "15550003031";
    gated_phone(&app, OWNER).await;
    let hook = Receiver::start().await;
    start_with_hook(&app, "pk4", &hook).await;
    // The sixth and last QR code (140 s after the first was shown).
    wait_until(Duration::from_secs(200), "the last QR code", || async {
        qr_count(&app, "pk4").await >= 6
    })
    .await;
    let (s, b) = app
        .post_json("/api/sessions/pk4/pairing-code", json!({"phone": OWNER}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let code = b["code"].as_str().unwrap().to_owned();
    let (s, b) = sim_req(
        &app,
        reqwest::Method::POST,
        &format!("/phones/{OWNER}/link-code"),
        Some(json!({"code": code})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    app.wait_status("pk4", "passkey_required", LONG).await;
    let pending = passkey_of(&app, "pk4").await;
    assert!(
        pending["expiresAt"].as_i64().unwrap() > unix_now() + 500,
        "the passkey's own 600 s: {pending}"
    );

    // The QR codes run out; the step goes on.
    wait_for(
        Duration::from_secs(60),
        "the QR codes to run out",
        || async {
            let (_, s) = app.get_json("/api/status/pk4").await;
            (s["reason"] == "the QR codes ran out; the passkey step goes on").then_some(())
        },
    )
    .await;
    assert_eq!(app.status_of("pk4").await, "passkey_required");
    finish_ceremony(&app, "pk4", OWNER).await;
    let (_, status) = app.get_json("/api/status/pk4").await;
    assert_eq!(status["me"]["phone"], OWNER, "{status}");
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn passkey_routes_check_the_session_and_the_key() {
    let app = TestApp::start().await;
    let got = app.get_json("/api/sessions/nope/passkey").await;
    assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
    let got = app.post_json("/api/sessions/nope/passkey", json!({})).await;
    assert_eq!(
        got.0,
        StatusCode::BAD_REQUEST,
        "validated before the session is looked up: {}",
        got.1
    );
    let got = into_json(
        app.http
            .get(app.url("/api/sessions/nope/passkey"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
}
