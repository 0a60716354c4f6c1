//! End to end through the HTTP API against the WhatsApp simulator: what a user of the seed's
//! API does, and what they see.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, wait_for, wait_until};

const ALICE: &str = "15550000001";
const BOB: &str = "15550000002";
const LONG: Duration = Duration::from_secs(60);

/// Starts `session`, waits for its QR and has `phone` scan it; returns once connected.
pub async fn pair(app: &TestApp, session: &str, phone: &str) {
    let sim = app.sim.as_ref().unwrap();
    let (status, body) = app
        .post_json("/api/start-session", json!({"sessionId": session}))
        .await;
    assert!(status.is_success(), "{body}");
    let qr = app.wait_qr(session, LONG).await;
    sim.scan(phone, &qr).await;
    app.wait_status(session, "connected", LONG).await;
}

async fn history(app: &TestApp, session: &str, query: &str) -> Vec<Value> {
    let (s, b) = app
        .get_json(&format!("/api/messages/{session}?{query}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn the_seed_flow_start_scan_send_reply_history() {
    let app = TestApp::with_sim().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(ALICE, "Alice").await;
    sim.phone(BOB, "Bob").await;

    // Start: 201 the first time, 200 (same session) after.
    let (status, body) = app
        .post_json("/api/start-session", json!({"sessionId": "s1"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["sessionId"], "s1");
    let (status, body) = app
        .post_json("/api/start-session", json!({"sessionId": "s1"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["created"], false);

    // Not connected yet: sending is refused with 409.
    let got = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "s1", "to": BOB, "text": "too early"}),
        )
        .await;
    assert_error(&got, StatusCode::CONFLICT, "session_not_connected");

    // QR: raw string, PNG data URL, and the PNG itself.
    let qr = wait_for(LONG, "the QR code", || async {
        let got = app.get_json("/api/qr/s1").await;
        (got.0 == StatusCode::OK).then_some(got.1)
    })
    .await;
    assert_eq!(app.status_of("s1").await, "qr");
    let raw = qr["qr"].as_str().unwrap();
    assert!(raw.split(',').count() >= 4, "unexpected QR payload {raw}");
    assert!(
        qr["qrImage"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
    assert!(qr["expiresAt"].as_i64().unwrap() > 0);
    let png = app.get("/api/qr/s1?format=png").send().await.unwrap();
    assert_eq!(png.headers()["content-type"], "image/png");
    assert_eq!(&png.bytes().await.unwrap()[1..4], b"PNG");

    // The phone scans: connected, and we know who we are.
    sim.scan(ALICE, raw).await;
    app.wait_status("s1", "connected", LONG).await;
    let (_, status) = app.get_json("/api/status/s1").await;
    assert_eq!(status["me"]["phone"], ALICE, "{status}");
    assert_eq!(status["me"]["jid"], format!("{ALICE}@s.whatsapp.net"));
    assert!(
        status["me"]["lid"].as_str().unwrap().ends_with("@lid"),
        "{status}"
    );
    let got = app.get_json("/api/qr/s1").await;
    assert_error(&got, StatusCode::CONFLICT, "qr_not_available");

    // Send with the seed's field names and a formatted number: it reaches Bob's phone.
    let (status, sent) = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "s1", "number": "+1 555 000 0002", "message": "hello bob"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let id = sent["messageId"].as_str().unwrap().to_owned();
    assert_eq!(sent["status"], "sent");
    assert_eq!(sent["chatId"], format!("{BOB}@s.whatsapp.net"));
    assert_eq!(sent["fromMe"], true);
    wait_until(LONG, "Bob's phone to get the message", || async {
        sim.messages(BOB)
            .await
            .iter()
            .any(|m| m["id"] == id.as_str() && m["text"] == "hello bob" && m["fromMe"] == false)
    })
    .await;

    // Bob replies; the reply is in the history with the sender's phone JID.
    sim.send(BOB, ALICE, "hi alice").await;
    wait_until(LONG, "the reply in the history", || async {
        history(&app, "s1", "direction=in")
            .await
            .iter()
            .any(|m| m["text"] == "hi alice")
    })
    .await;
    let inbound = history(&app, "s1", "direction=in").await;
    let reply = inbound.iter().find(|m| m["text"] == "hi alice").unwrap();
    assert_eq!(reply["from"], format!("{BOB}@s.whatsapp.net"), "{reply}");
    assert_eq!(reply["chatId"], format!("{BOB}@s.whatsapp.net"));
    assert_eq!(reply["fromMe"], false);
    assert_eq!(reply["sessionId"], "s1");
    assert_eq!(reply["type"], "text");
    assert_eq!(reply["status"], "delivered");

    // Delivery and read receipts move our message forward.
    wait_until(LONG, "our message to be delivered", || async {
        history(&app, "s1", "direction=out").await.iter().any(|m| {
            m["id"] == id.as_str() && (m["status"] == "delivered" || m["status"] == "read")
        })
    })
    .await;
    sim.read(BOB, &[&id]).await;
    wait_until(LONG, "our message to be read", || async {
        history(&app, "s1", "direction=out")
            .await
            .iter()
            .any(|m| m["id"] == id.as_str() && m["status"] == "read")
    })
    .await;

    // Both directions, newest first, filterable by chat, pageable.
    let all = history(&app, "s1", &format!("chat={BOB}")).await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[0]["text"], "hi alice");
    assert_eq!(all[1]["text"], "hello bob");
    let (_, page1) = app.get_json("/api/messages/s1?limit=1").await;
    assert_eq!(page1["messages"].as_array().unwrap().len(), 1);
    let cursor = page1["nextCursor"].as_str().unwrap();
    let (_, page2) = app
        .get_json(&format!("/api/messages/s1?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(page2["messages"][0]["text"], "hello bob");
    assert!(page2["nextCursor"].is_null(), "{page2}");
    let none = history(&app, "s1", &format!("since={}", i64::MAX / 2)).await;
    assert!(none.is_empty());

    // Quoting a message from the history works; quoting an unknown id is a 404.
    let reply_id = reply["id"].as_str().unwrap();
    let (status, body) = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "s1", "to": BOB, "text": "quoted", "quotedId": reply_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["quotedId"], reply_id);
    let got = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "s1", "to": BOB, "text": "x", "quotedId": "nope"}),
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "quoted_message_not_found");

    let (_, list) = app.get_json("/api/sessions").await;
    assert_eq!(list["sessions"][0]["sessionId"], "s1");
    assert_eq!(list["sessions"][0]["status"], "connected");
    let (_, health) = app.get_json("/api/health").await;
    assert_eq!(health["sessions"]["byStatus"]["connected"], 1);
    app.stop().await;
}

#[tokio::test]
async fn ten_sessions_at_once_each_see_only_their_own_messages() {
    let app = TestApp::with_sim().await;
    let sim = app.sim.as_ref().unwrap();
    const FRIEND: &str = "15550000999";
    sim.phone(FRIEND, "Friend").await;
    let phones: Vec<String> = (0..10).map(|i| format!("155500001{i:02}")).collect();
    for (i, p) in phones.iter().enumerate() {
        sim.phone(p, &format!("Owner {i}")).await;
    }
    // All ten pair concurrently.
    futures::future::join_all(phones.iter().enumerate().map(|(i, p)| {
        let app = &app;
        async move { pair(app, &format!("multi{i}"), p).await }
    }))
    .await;
    let (_, health) = app.get_json("/api/health").await;
    assert_eq!(health["sessions"]["byStatus"]["connected"], 10, "{health}");

    // The friend writes to each owner; each session sends one message back.
    for (i, p) in phones.iter().enumerate() {
        sim.send(FRIEND, p, &format!("for owner {i}")).await;
    }
    for i in 0..10 {
        let (status, body) = app
            .post_json("/api/send-message", json!({"sessionId": format!("multi{i}"), "to": FRIEND, "text": format!("from owner {i}")}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for (i, phone) in phones.iter().enumerate() {
        let session = format!("multi{i}");
        wait_until(LONG, &format!("{session}'s inbound message"), || async {
            !history(&app, &session, "direction=in").await.is_empty()
        })
        .await;
        let inbound = history(&app, &session, "direction=in").await;
        assert_eq!(inbound.len(), 1, "{session}: {inbound:?}");
        assert_eq!(inbound[0]["text"], format!("for owner {i}"));
        assert_eq!(inbound[0]["to"], format!("{phone}@s.whatsapp.net"));
        let outbound = history(&app, &session, "direction=out").await;
        assert_eq!(outbound.len(), 1, "{session}: {outbound:?}");
        assert_eq!(outbound[0]["text"], format!("from owner {i}"));
    }
    wait_until(LONG, "the friend to get all ten", || async {
        let got = sim.messages(FRIEND).await;
        (0..10).all(|i| {
            got.iter()
                .any(|m| m["text"] == format!("from owner {i}").as_str())
        })
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn logout_then_start_again_shows_a_new_qr_and_delete_forgets_the_session() {
    let app = TestApp::with_sim().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(ALICE, "Alice").await;
    pair(&app, "s1", ALICE).await;
    assert_eq!(sim.companions(ALICE).await.len(), 1);

    let (status, body) = crate::helpers::into_json(
        app.req(reqwest::Method::POST, "/api/sessions/s1/logout")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "logged_out", "{body}");
    wait_until(LONG, "the phone to drop the device", || async {
        sim.companions(ALICE).await.is_empty()
    })
    .await;
    let got = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "s1", "to": BOB, "text": "x"}),
        )
        .await;
    assert_error(&got, StatusCode::CONFLICT, "session_not_connected");

    // Starting it again pairs from scratch: a new QR, and the phone can link it again.
    let (status, body) = app
        .post_json("/api/start-session", json!({"sessionId": "s1"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let qr = app.wait_qr("s1", LONG).await;
    sim.scan(ALICE, &qr).await;
    app.wait_status("s1", "connected", LONG).await;

    // Delete: logs out, forgets the session and its history.
    let (status, body) = crate::helpers::into_json(
        app.req(reqwest::Method::DELETE, "/api/sessions/s1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deleted"], true);
    let got = app.get_json("/api/status/s1").await;
    assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
    let got = app.get_json("/api/messages/s1").await;
    assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
    wait_until(LONG, "the phone to drop the device", || async {
        sim.companions(ALICE).await.is_empty()
    })
    .await;
    let (_, list) = app.get_json("/api/sessions").await;
    assert_eq!(list["sessions"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn unlinking_from_the_phone_marks_the_session_logged_out() {
    let app = TestApp::with_sim().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(ALICE, "Alice").await;
    pair(&app, "s1", ALICE).await;
    let device = sim.companions(ALICE).await[0];
    sim.unlink(ALICE, device).await;
    app.wait_status("s1", "logged_out", LONG).await;
    let (_, status) = app.get_json("/api/status/s1").await;
    assert!(
        status["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{status}"
    );
    app.stop().await;
}

#[tokio::test]
async fn restart_reconnects_and_sessions_come_back_without_a_qr() {
    let app = TestApp::with_sim().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(ALICE, "Alice").await;
    sim.phone(BOB, "Bob").await;
    pair(&app, "s1", ALICE).await;
    let (status, body) = crate::helpers::into_json(
        app.req(reqwest::Method::POST, "/api/sessions/s1/restart")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.wait_status("s1", "connected", LONG).await;
    let (status, body) = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "s1", "to": BOB, "text": "after restart"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.stop().await;
}

/// The `session-status` values recorded for `session`, oldest first.
async fn status_history(app: &TestApp, session: &str) -> Vec<String> {
    let (s, b) = app
        .get_json(&format!("/api/events?sessionId={session}&limit=500"))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "session-status")
        .map(|e| e["data"]["status"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn when_the_server_drops_everyone_each_session_reconnects_by_itself() {
    let app = TestApp::with_sim().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(BOB, "Bob").await;
    let phones: Vec<String> = (0..5).map(|i| format!("155500002{i:02}")).collect();
    for p in &phones {
        sim.phone(p, "Owner").await;
    }
    for (i, p) in phones.iter().enumerate() {
        pair(&app, &format!("drop{i}"), p).await;
    }
    let r = sim
        .admin
        .post(sim.url("/faults/disconnect"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    for i in 0..5 {
        let session = format!("drop{i}");
        wait_until(
            LONG,
            &format!("{session} to notice and come back"),
            || async {
                let h = status_history(&app, &session).await;
                let dropped = h.iter().rposition(|s| s == "disconnected");
                matches!(dropped, Some(d) if h[d..].iter().any(|s| s == "connected"))
                    && app.status_of(&session).await == "connected"
            },
        )
        .await;
        let h = status_history(&app, &session).await;
        let first_drop = h.iter().position(|s| s == "disconnected").unwrap();
        assert!(
            !h[first_drop..].iter().any(|s| s == "qr"),
            "{session} asked for a QR after reconnecting: {h:?}"
        );
    }
    // And they work. A session may drop once more while the others reconnect (the server
    // is busy with all of them); it comes back by itself, so a send waits for it.
    for i in 0..5 {
        let session = format!("drop{i}");
        let body = json!({"sessionId": session, "to": BOB, "text": format!("still here {i}")});
        let deadline = tokio::time::Instant::now() + LONG;
        loop {
            let (status, answer) = app.post_json("/api/send-message", body.clone()).await;
            if status == StatusCode::OK {
                break;
            }
            let history = status_history(&app, &session).await;
            assert!(
                status == StatusCode::CONFLICT && tokio::time::Instant::now() < deadline,
                "{session} could not send: {status} {answer}; statuses: {history:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    wait_until(LONG, "Bob to get all five", || async {
        let got = sim.messages(BOB).await;
        (0..5).all(|i| {
            got.iter()
                .any(|m| m["text"] == format!("still here {i}").as_str())
        })
    })
    .await;
    app.stop().await;
}

/// Sessions started all at once on a new data directory open the WhatsApp device store
/// together; none of them fails on the store's schema (each used to create it anew).
#[tokio::test]
async fn sessions_started_together_on_a_new_data_dir_all_offer_a_qr_without_failing() {
    let app = TestApp::with_sim().await;
    let ids: Vec<String> = (0..24).map(|i| format!("burst{i}")).collect();
    let starts = ids.iter().map(|id| {
        let app = &app;
        async move {
            app.post_json("/api/start-session", json!({"sessionId": id}))
                .await
        }
    });
    for (status, body) in futures::future::join_all(starts).await {
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    for id in &ids {
        app.wait_qr(id, LONG).await;
    }
    let (_, events) = app.get_json("/api/events?limit=1000").await;
    let failed: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "session-status" && e["data"]["status"] == "failed")
        .collect();
    assert!(
        failed.is_empty(),
        "sessions failed while starting: {failed:?}"
    );
}

/// "Is this number on WhatsApp?": asked through a connected session, answered by WhatsApp,
/// one answer per number in order.
#[tokio::test]
async fn a_connected_session_tells_which_numbers_are_on_whatsapp() {
    let app = TestApp::with_sim().await;
    let sim = app.sim.as_ref().unwrap();
    const CAROL: &str = "15550000003";
    sim.phone(ALICE, "Alice").await;
    sim.phone(CAROL, "Carol").await;
    let (s, b) = app
        .post_json("/api/start-session", json!({"sessionId": "nc1"}))
        .await;
    assert!(s.is_success(), "{b}");
    // Not connected yet.
    let got = app
        .post_json(
            "/api/sessions/nc1/contacts/check",
            json!({"phones": [CAROL]}),
        )
        .await;
    assert_error(&got, StatusCode::CONFLICT, "session_not_connected");
    let qr = app.wait_qr("nc1", LONG).await;
    sim.scan(ALICE, &qr).await;
    app.wait_status("nc1", "connected", LONG).await;

    let (s, b) = app
        .post_json(
            "/api/sessions/nc1/contacts/check",
            json!({"phones": ["+1 555 000 0003", "15550009999@c.us", 15550000001u64]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let results = b["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{b}");
    assert_eq!(results[0]["phone"], CAROL);
    assert_eq!(results[0]["exists"], true, "{b}");
    assert_eq!(results[0]["jid"], format!("{CAROL}@s.whatsapp.net"));
    let carol = sim.account(CAROL).await;
    assert_eq!(
        results[0]["lid"]
            .as_str()
            .map(|l| l.trim_end_matches("@lid")),
        carol["lid"].as_str().map(|l| l.trim_end_matches("@lid")),
        "{b} / {carol}"
    );
    assert_eq!(results[1]["phone"], "15550009999");
    assert_eq!(results[1]["exists"], false, "{b}");
    assert!(
        results[1]["jid"].is_null() && results[1]["lid"].is_null(),
        "{b}"
    );
    assert_eq!(results[2]["phone"], ALICE);
    assert_eq!(results[2]["exists"], true, "{b}");

    // Checked at the edge, naming the entry.
    let got = app
        .post_json(
            "/api/sessions/nc1/contacts/check",
            json!({"phones": [CAROL, "abc"]}),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("phones[1]"),
        "{}",
        got.1
    );
    let got = app
        .post_json("/api/sessions/nc1/contacts/check", json!({"phones": []}))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    let got = app
        .post_json("/api/sessions/nc1/contacts/check", json!({}))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "missing_field");
    let many: Vec<String> = (0..51).map(|i| format!("1555000{i:04}")).collect();
    let got = app
        .post_json("/api/sessions/nc1/contacts/check", json!({"phones": many}))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
}

/// `Idempotency-Key`: a retried send gets the first answer and is not sent again; the same
/// key with another body is refused; multipart retries match whatever their boundary.
#[tokio::test]
async fn sends_retried_with_the_same_idempotency_key_go_out_once() {
    let app = TestApp::with_sim().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(ALICE, "Alice").await;
    sim.phone(BOB, "Bob").await;
    pair(&app, "ik1", ALICE).await;
    let send = |key: &'static str, body: Value| {
        let req = app
            .post("/api/send-message", body)
            .header("Idempotency-Key", key);
        async move {
            let r = req.send().await.unwrap();
            let replayed = r.headers().get("idempotent-replayed").is_some();
            let (s, b) = crate::helpers::into_json(r).await;
            (s, b, replayed)
        }
    };
    let body = json!({"sessionId": "ik1", "to": BOB, "text": "once only"});
    let (s, first, replayed) = send("k-1", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert!(!replayed);
    let (s, again, replayed) = send("k-1", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert!(replayed);
    assert_eq!(again, first, "the same answer");

    let got = send(
        "k-1",
        json!({"sessionId": "ik1", "to": BOB, "text": "something else"}),
    )
    .await;
    assert_error(
        &(got.0, got.1),
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    let got = send("has space", body.clone()).await;
    assert_error(
        &(got.0, got.1),
        StatusCode::BAD_REQUEST,
        "invalid_idempotency_key",
    );
    // A failed first request gives its key up: the retry runs.
    let (s, _, _) = send(
        "k-2",
        json!({"sessionId": "ik1", "to": "not a number", "text": "x"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b, replayed) = send(
        "k-2",
        json!({"sessionId": "ik1", "to": BOB, "text": "second try"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(!replayed);

    // Multipart: every request draws its own boundary.
    let media = || {
        reqwest::multipart::Form::new()
            .text("sessionId", "ik1")
            .text("to", BOB)
            .part(
                "file",
                reqwest::multipart::Part::bytes(b"just some text".to_vec())
                    .file_name("note.txt")
                    .mime_str("text/plain")
                    .unwrap(),
            )
    };
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = app
            .req(reqwest::Method::POST, "/api/send-media")
            .header("Idempotency-Key", "media-1")
            .multipart(media())
            .send()
            .await
            .unwrap();
        let (s, b) = crate::helpers::into_json(r).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        ids.push(b["messageId"].clone());
    }
    assert_eq!(ids[0], ids[1]);

    wait_until(LONG, "Bob to get the second try", || async {
        sim.messages(BOB)
            .await
            .iter()
            .any(|m| m["text"] == "second try")
    })
    .await;
    let got = sim.messages(BOB).await;
    assert_eq!(
        got.iter().filter(|m| m["text"] == "once only").count(),
        1,
        "{got:?}"
    );
}

#[tokio::test]
async fn a_location_and_contact_cards_from_a_phone_arrive_with_their_fields() {
    let app = TestApp::with_sim().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(ALICE, "Alice").await;
    sim.phone(BOB, "Bob").await;
    pair(&app, "loc1", ALICE).await;
    let vcard = "BEGIN:VCARD\nVERSION:3.0\nFN:Carol\nTEL;type=CELL;waid=15550000003:+1 555 000 0003\nEND:VCARD";
    for body in [
        json!({"to": ALICE, "location": {"latitude": 40.4168, "longitude": -3.7038, "name": "Sol", "address": "Madrid"}}),
        json!({"to": ALICE, "contacts": [{"name": "Carol", "vcard": vcard}]}),
        json!({"to": ALICE, "contacts": [{"name": "Carol", "vcard": vcard}, {"name": "Dan", "vcard": vcard.replace("Carol", "Dan")}]}),
    ] {
        sim.send_json(BOB, &body).await;
    }
    let got = wait_for(LONG, "three inbound messages", || async {
        let h = history(&app, "loc1", "direction=in").await;
        (h.len() == 3).then_some(h)
    })
    .await;
    // Newest first.
    let (array, card, place) = (&got[0], &got[1], &got[2]);
    assert_eq!(place["type"], "location", "{place}");
    assert_eq!(place["location"]["latitude"], 40.4168, "{place}");
    assert_eq!(place["location"]["longitude"], -3.7038, "{place}");
    assert_eq!(place["location"]["name"], "Sol", "{place}");
    assert_eq!(place["location"]["address"], "Madrid", "{place}");
    assert_eq!(card["type"], "contact", "{card}");
    assert_eq!(card["contacts"][0]["name"], "Carol", "{card}");
    assert_eq!(card["contacts"][0]["vcard"], vcard, "{card}");
    assert_eq!(array["type"], "contact", "{array}");
    let names: Vec<_> = array["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Carol", "Dan"], "{array}");
    // A text message carries neither field.
    sim.send(BOB, ALICE, "plain").await;
    let text = wait_for(LONG, "the text", || async {
        let h = history(&app, "loc1", "direction=in").await;
        (h.len() == 4).then(|| h[0].clone())
    })
    .await;
    assert!(
        text.get("location").is_none() && text.get("contacts").is_none(),
        "{text}"
    );
}

#[tokio::test]
async fn locations_and_contact_cards_sent_from_the_api_reach_the_phone_decrypted() {
    let app = TestApp::with_sim().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(ALICE, "Alice").await;
    sim.phone(BOB, "Bob").await;
    pair(&app, "loc2", ALICE).await;

    // Bad input is refused with what to fix, and nothing reaches WhatsApp.
    let base = json!({"sessionId": "loc2", "to": BOB});
    let with = |extra: Value| {
        let mut b = base.clone();
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    for (route, body, code, names) in [
        (
            "/api/send-location",
            with(json!({"latitude": 200, "longitude": 0})),
            "invalid_field",
            "latitude",
        ),
        (
            "/api/send-location",
            with(json!({"latitude": 10, "longitude": -181})),
            "invalid_field",
            "longitude",
        ),
        (
            "/api/send-location",
            with(json!({"latitude": "north", "longitude": 0})),
            "invalid_field",
            "latitude",
        ),
        (
            "/api/send-location",
            with(json!({"longitude": 0})),
            "missing_field",
            "latitude",
        ),
        (
            "/api/send-contact",
            with(json!({"contacts": []})),
            "invalid_field",
            "contacts",
        ),
        (
            "/api/send-contact",
            with(json!({})),
            "missing_field",
            "contacts",
        ),
        (
            "/api/send-contact",
            with(
                json!({"contacts": [{"name": "A", "phone": "15550000009"}, {"name": "B", "phone": "12"}]}),
            ),
            "invalid_field",
            "contacts[1].phone",
        ),
        (
            "/api/send-contact",
            with(json!({"contacts": [{"phone": "15550000009"}]})),
            "missing_field",
            "contacts[0].name",
        ),
        (
            "/api/send-contact",
            with(json!({"contacts": [{"name": "Eve\nTEL:+1", "phone": "15550000009"}]})),
            "invalid_field",
            "contacts[0].name",
        ),
        (
            "/api/send-contact",
            with(json!({"contacts": [{"vcard": "hello"}]})),
            "invalid_field",
            "contacts[0].vcard",
        ),
    ] {
        let got = app.post_json(route, body.clone()).await;
        assert_error(&got, StatusCode::BAD_REQUEST, code);
        let msg = got.1["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(names),
            "{route} {body}: {msg} should name {names}"
        );
    }

    // A location with its name and address, sent now.
    let (status, place) = app
        .post_json(
            "/api/send-location",
            with(json!({"latitude": 52.5163, "longitude": 13.3777, "name": "Brandenburger Tor", "address": "Pariser Platz, Berlin"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{place}");
    assert_eq!(place["type"], "location", "{place}");
    assert_eq!(place["status"], "sent", "{place}");
    assert_eq!(place["location"]["latitude"], 52.5163, "{place}");
    // One card made from a name and a number, then two (a contacts array) through the queue.
    let (status, card) = app
        .post_json(
            "/api/send-contact",
            with(json!({"contacts": [{"name": "Ana; Ruiz", "phone": "+1 555 000 0009"}], "quotedId": place["id"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{card}");
    assert_eq!(card["type"], "contact", "{card}");
    let vcard =
        "BEGIN:VCARD\nVERSION:3.0\nFN:Dan\nTEL;type=CELL;waid=15550000008:+15550000008\nEND:VCARD";
    let (status, queued) = app
        .post_json(
            "/api/send-contact",
            with(json!({"contacts": [{"name": "Carol", "phone": "15550000007"}, {"vcard": vcard}], "queue": true})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["status"], "queued", "{queued}");

    let got = wait_for(LONG, "three messages on Bob's phone", || async {
        let m = sim.messages(BOB).await;
        (m.len() == 3).then_some(m)
    })
    .await;
    let on_phone = |id: &Value| got.iter().find(|m| m["id"] == *id).cloned().unwrap();
    let p = on_phone(&place["id"]);
    assert_eq!(p["location"]["latitude"], 52.5163, "{p}");
    assert_eq!(p["location"]["longitude"], 13.3777, "{p}");
    assert_eq!(p["location"]["name"], "Brandenburger Tor", "{p}");
    assert_eq!(p["location"]["address"], "Pariser Platz, Berlin", "{p}");
    let c = on_phone(&card["id"]);
    assert_eq!(c["contacts"].as_array().unwrap().len(), 1, "{c}");
    assert_eq!(c["contacts"][0]["name"], "Ana; Ruiz", "{c}");
    let card_text = c["contacts"][0]["vcard"].as_str().unwrap();
    assert!(card_text.contains("FN:Ana\\; Ruiz\n"), "{card_text}");
    assert!(
        card_text.contains("waid=15550000009:+15550000009"),
        "{card_text}"
    );
    let a = on_phone(&queued["id"]);
    let names: Vec<_> = a["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Carol", "Dan"], "{a}");
    assert_eq!(a["contacts"][1]["vcard"], vcard, "{a}");

    // History has them as sent, with their fields.
    let out = wait_for(LONG, "the queued array sent", || async {
        let h = history(&app, "loc2", "direction=out").await;
        h.iter()
            .all(|m| m["status"] != "queued" && m["status"] != "pending")
            .then_some(h)
    })
    .await;
    assert_eq!(out.len(), 3);
    assert_eq!(
        out[0]["contacts"].as_array().unwrap().len(),
        2,
        "{}",
        out[0]
    );
    assert_eq!(out[1]["quotedId"], place["id"], "{}", out[1]);
    assert_eq!(
        out[2]["location"]["name"], "Brandenburger Tor",
        "{}",
        out[2]
    );
}
