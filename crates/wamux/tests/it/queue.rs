//! The send queue end to end: sends accepted while the session is offline, scheduled sends,
//! cancelling, order per chat, and a connection lost while messages wait.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, wait_for, wait_until};

const ALICE: &str = "15550000001";
const BOB: &str = "15550000002";
const CAROL: &str = "15550000003";
const LONG: Duration = Duration::from_secs(60);

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn queue(app: &TestApp, body: Value) -> Value {
    let (s, b) = app.post_json("/api/send-message", body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["status"], "queued", "{b}");
    b
}

async fn outbox(app: &TestApp, session: &str) -> Vec<Value> {
    let (s, b) = app
        .get_json(&format!("/api/sessions/{session}/outbox"))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["messages"].as_array().unwrap().clone()
}

/// Texts the phone received from `from`, in the order it received them.
async fn received(app: &TestApp, phone: &str, from: &str) -> Vec<(String, String, i64)> {
    let sim = app.sim.as_ref().unwrap();
    sim.messages(phone)
        .await
        .into_iter()
        .filter(|m| m["from"] == from && m["fromMe"] != true)
        .map(|m| {
            (
                m["id"].as_str().unwrap_or_default().to_owned(),
                m["text"].as_str().unwrap_or_default().to_owned(),
                m["timestamp"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

async fn history_status(app: &TestApp, session: &str, id: &str) -> Value {
    let (_, b) = app.get_json(&format!("/api/messages/{session}")).await;
    b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .map(|m| m["status"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn queued_sends_wait_for_the_link_then_go_in_order_and_scheduled_ones_at_their_time() {
    let app = TestApp::with_sim().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(ALICE, "Alice").await;
    sim.phone(BOB, "Bob").await;
    sim.phone(CAROL, "Carol").await;
    let (s, _) = app
        .post_json("/api/start-session", json!({"sessionId": "q1"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // Not linked yet: a plain send is refused, a queued one accepted.
    let got = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "q1", "to": BOB, "text": "now"}),
        )
        .await;
    assert_error(&got, StatusCode::CONFLICT, "session_not_connected");
    let mut ids = Vec::new();
    for i in 0..5 {
        let to = if i % 2 == 0 { BOB } else { CAROL };
        let m = queue(
            &app,
            json!({"sessionId": "q1", "to": to, "text": format!("queued {i}"), "queue": true}),
        )
        .await;
        assert!(m["id"].as_str().unwrap().starts_with("3EB0"), "{m}");
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    let soon = now() + 3;
    let scheduled = queue(
        &app,
        json!({"sessionId": "q1", "to": BOB, "text": "scheduled", "sendAt": soon}),
    )
    .await;
    let later = queue(
        &app,
        json!({"sessionId": "q1", "to": CAROL, "text": "never", "sendAt": now() + 3600}),
    )
    .await;
    let waiting = outbox(&app, "q1").await;
    assert_eq!(waiting.len(), 7);
    assert_eq!(waiting[0]["messageId"], ids[0].as_str());
    assert_eq!(waiting[0]["text"], "queued 0");
    assert_eq!(waiting[0]["attempts"], 0);
    assert_eq!(history_status(&app, "q1", &ids[0]).await, "queued");

    // Linked: the queued ones go, each chat in order, each once.
    let qr = app.wait_qr("q1", LONG).await;
    sim.scan(ALICE, &qr).await;
    app.wait_status("q1", "connected", LONG).await;
    let to_bob = wait_for(LONG, "Bob's queued messages", || async {
        let got = received(&app, BOB, ALICE).await;
        (got.len() >= 3).then_some(got)
    })
    .await;
    let texts: Vec<&str> = to_bob.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(texts[..3], ["queued 0", "queued 2", "queued 4"]);
    let to_carol = wait_for(LONG, "Carol's queued messages", || async {
        let got = received(&app, CAROL, ALICE).await;
        (got.len() >= 2).then_some(got)
    })
    .await;
    let texts: Vec<&str> = to_carol.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(texts, ["queued 1", "queued 3"]);
    assert_eq!(to_bob[0].0, ids[0], "sent with the id it was queued with");
    for id in &ids {
        wait_until(LONG, "the history to say sent", || async {
            let s = history_status(&app, "q1", id).await;
            s == "sent" || s == "delivered"
        })
        .await;
    }

    // The scheduled one arrives at its time, not before.
    let got = wait_for(LONG, "the scheduled message", || async {
        received(&app, BOB, ALICE)
            .await
            .into_iter()
            .find(|m| m.1 == "scheduled")
    })
    .await;
    assert_eq!(got.0, scheduled["id"].as_str().unwrap());
    assert!(got.2 >= soon, "arrived at {} before its time {soon}", got.2);

    // The far one is still waiting (the others leave once their server acks are in);
    // cancelled, it never goes.
    wait_until(LONG, "only the far one to be left", || async {
        outbox(&app, "q1").await.len() == 1
    })
    .await;
    let waiting = outbox(&app, "q1").await;
    assert_eq!(waiting[0]["text"], "never");
    let later_id = later["id"].as_str().unwrap();
    let path = format!("/api/sessions/q1/outbox/{later_id}");
    let r = app.req(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.req(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(outbox(&app, "q1").await.is_empty());
    assert_eq!(history_status(&app, "q1", later_id).await, "failed");
    assert!(
        !received(&app, CAROL, ALICE)
            .await
            .iter()
            .any(|m| m.1 == "never")
    );
    app.stop().await;
}

#[tokio::test]
async fn bad_queue_requests_say_what_to_fix() {
    let app = TestApp::with_sim().await;
    let (s, _) = app
        .post_json("/api/start-session", json!({"sessionId": "q2"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let base = json!({"sessionId": "q2", "to": BOB, "text": "x"});
    let with = |extra: Value| {
        let mut b = base.clone();
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    for (extra, field) in [
        (json!({"queue": "yes"}), "queue"),
        (json!({"sendAt": "tomorrow"}), "sendAt"),
        (json!({"sendAt": 1.5}), "sendAt"),
        (json!({"sendAt": now() + 2 * 366 * 86_400}), "sendAt"),
        (json!({"sendAt": 86_400}), "sendAt"),
        (json!({"sendAt": now() + 60, "queue": false}), "queue"),
    ] {
        let got = app
            .post_json("/api/send-message", with(extra.clone()))
            .await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
        assert!(
            got.1["error"]["message"].as_str().unwrap().contains(field),
            "{extra} -> {}",
            got.1
        );
    }
    let got = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "nosuch", "to": BOB, "text": "x", "queue": true}),
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
    let got = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "q2", "to": BOB, "text": "x", "queue": true, "quotedId": "3EB0NOPE"}),
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "quoted_message_not_found");
    assert!(
        outbox(&app, "q2").await.is_empty(),
        "a refused send was queued"
    );
    app.stop().await;
}

/// A session the simulator cuts off while 100 queued messages wait: all go once it is
/// back, in order, each once.
#[tokio::test]
async fn a_hundred_queued_messages_go_after_the_connection_comes_back() {
    let app = TestApp::with_sim().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(ALICE, "Alice").await;
    sim.phone(BOB, "Bob").await;
    crate::e2e::pair(&app, "q3", ALICE).await;
    // Refuse the reconnections for a while, then cut the connection.
    let r = sim
        .admin
        .post(sim.url("/faults/reject-connections"))
        .json(&json!({"count": 3}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = sim
        .admin
        .post(sim.url("/faults/disconnect"))
        .json(&json!({"phone": ALICE}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_until(LONG, "q3 to notice", || async {
        app.status_of("q3").await != "connected"
    })
    .await;
    for i in 0..100 {
        queue(
            &app,
            json!({"sessionId": "q3", "to": BOB, "text": format!("m{i:03}"), "queue": true}),
        )
        .await;
    }
    app.wait_status("q3", "connected", LONG).await;
    let got = wait_for(LONG, "all 100 at Bob's phone", || async {
        let got = received(&app, BOB, ALICE).await;
        (got.len() >= 100).then_some(got)
    })
    .await;
    let texts: Vec<String> = got.into_iter().map(|m| m.1).collect();
    let expected: Vec<String> = (0..100).map(|i| format!("m{i:03}")).collect();
    assert_eq!(texts, expected);
    wait_until(LONG, "the outbox to empty", || async {
        outbox(&app, "q3").await.is_empty()
    })
    .await;
    app.stop().await;
}

/// The simulator swallows the server acks of a queued message: after its attempts (each
/// waiting `WAMUX_SEND_ACK_TIMEOUT`) it is `failed` with the reason and a `message-failed`
/// webhook; `resend` queues it again with its id, and once acked it is `sent`.
#[tokio::test]
async fn a_message_whatsapp_never_acks_fails_with_a_webhook_and_resend_delivers_it() {
    use crate::helpers::Options;
    let app = TestApp::start_with(Options {
        sim: true,
        configure: Some(Box::new(|c| {
            c.webhook.allow_private = true;
            c.send_ack_timeout = Duration::from_secs(1);
            c.send_attempts = 2;
        })),
        ..Options::default()
    })
    .await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(ALICE, "Alice").await;
    sim.phone(BOB, "Bob").await;
    crate::e2e::pair(&app, "q4", ALICE).await;

    let (url, mut hooks) = crate::media::Hooks::listen().await;
    let (s, b) = app
        .post_json(
            "/api/q4/webhook",
            json!({"url": url, "events": ["message-failed", "message-sent"]}),
        )
        .await;
    assert!(s.is_success(), "{b}");

    // Bob's phone is off (no delivery receipt either), and the acks get lost.
    let online = |on: bool| async move {
        let r = sim
            .admin
            .post(sim.url(&format!("/phones/{BOB}/online")))
            .json(&json!({"online": on}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    };
    online(false).await;
    let r = sim
        .admin
        .post(sim.url("/faults/swallow-acks"))
        .json(&json!({"phone": ALICE, "count": 2}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let m = queue(
        &app,
        json!({"sessionId": "q4", "to": BOB, "text": "are you there?", "queue": true}),
    )
    .await;
    let id = m["id"].as_str().unwrap().to_owned();
    // Both attempts reach the server (Bob's phone will keep one), neither is acked.
    let failed = tokio::time::timeout(LONG, async {
        loop {
            let v = hooks.recv().await.expect("receiver alive");
            if v["event"] == "message-failed" && v["data"]["id"] == id.as_str() {
                return v;
            }
        }
    })
    .await
    .expect("a message-failed webhook");
    assert!(
        failed["data"]["error"]
            .as_str()
            .unwrap()
            .contains("no server ack within 1 s"),
        "{failed}"
    );
    assert_eq!(history_status(&app, "q4", &id).await, "failed");
    assert!(outbox(&app, "q4").await.is_empty());

    // Bob's phone is back; sent again, acked this time.
    online(true).await;
    let (s, b) = app
        .post_json(&format!("/api/messages/q4/{id}/resend"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["status"], "queued");
    wait_until(LONG, "the resent message to be sent", || async {
        let s = history_status(&app, "q4", &id).await;
        s == "sent" || s == "delivered"
    })
    .await;
    assert_eq!(
        received(&app, BOB, ALICE)
            .await
            .iter()
            .filter(|m| m.0 == id)
            .count(),
        1,
        "the recipient sees it once"
    );
    // Only a failed message is sent again.
    let got = app
        .post_json(&format!("/api/messages/q4/{id}/resend"), json!({}))
        .await;
    assert_error(&got, StatusCode::CONFLICT, "wrong_state");
    let got = app
        .post_json("/api/messages/q4/3EB0NOPE/resend", json!({}))
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "message_not_found");
    app.stop().await;
}

/// Logging out fails what the session had queued: its next login may be another number.
#[tokio::test]
async fn logging_out_fails_the_queued_messages() {
    let app = TestApp::with_sim().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(ALICE, "Alice").await;
    sim.phone(BOB, "Bob").await;
    crate::e2e::pair(&app, "q5", ALICE).await;
    let m = queue(
        &app,
        json!({"sessionId": "q5", "to": BOB, "text": "tomorrow", "sendAt": now() + 3600}),
    )
    .await;
    let id = m["id"].as_str().unwrap().to_owned();
    let (s, b) = app.post_json("/api/sessions/q5/logout", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(outbox(&app, "q5").await.is_empty());
    assert_eq!(history_status(&app, "q5", &id).await, "failed");
    let (_, events) = app.get_json("/api/events?sessionId=q5&limit=1000").await;
    let failed = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "message-failed" && e["data"]["id"] == id.as_str())
        .cloned()
        .expect("a message-failed event");
    assert_eq!(failed["data"]["error"], "session logged out");
    app.stop().await;
}

/// Pacing: 20 queued messages with a 2 s ± 0.5 s interval leave within those bounds (each
/// gap measured between the moments WhatsApp took them, as the webhooks report), with
/// "typing…" shown at the phone before them; the outbox tells when each will go; a daily
/// cap holds the rest for the next day; bad settings are refused.
#[tokio::test]
async fn paced_messages_leave_at_their_interval_typing_first_and_stop_at_the_daily_cap() {
    use crate::helpers::Options;
    const SHOP: &str = "15550000501";
    const DORA: &str = "15550000502";
    let app = TestApp::start_with(Options {
        sim: true,
        configure: Some(Box::new(|c| c.webhook.allow_private = true)),
        ..Options::default()
    })
    .await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(SHOP, "Shop").await;
    sim.phone(DORA, "Dora").await;
    crate::e2e::pair(&app, "pace1", SHOP).await;
    let settings = |body: Value| {
        let app = &app;
        async move {
            app.call_json(Method::PUT, "/api/sessions/pace1/settings", Some(body))
                .await
        }
    };

    // Out of bounds: refused, nothing changed.
    for bad in [
        json!({"pacing": {"intervalMs": 1000, "jitterMs": 1001}}),
        json!({"pacing": {"intervalMs": 3_600_001}}),
        json!({"pacing": {"dailyCap": 0}}),
    ] {
        let got = settings(bad.clone()).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    }
    let got =
        settings(json!({"pacing": {"intervalMs": 2000, "jitterMs": 500, "typing": true}})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    // Changing the ignored chats keeps the pacing.
    let got = settings(json!({"ignore": ["status"]})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(
        got.1["pacing"],
        json!({"intervalMs": 2000, "jitterMs": 500, "typing": true, "dailyCap": null})
    );

    let (url, mut hooks) = crate::media::Hooks::listen().await;
    let (s, b) = app
        .post_json(
            "/api/pace1/webhook",
            json!({"url": url, "events": ["message-sent", "message-delivered"]}),
        )
        .await;
    assert!(s.is_success(), "{b}");
    // Watches the phone for "typing…" from the shop while the messages go.
    let typing_seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let seen = typing_seen.clone();
        let admin = sim.admin.clone();
        let url = sim.url(&format!("/phones/{DORA}/presence"));
        tokio::spawn(async move {
            while !seen.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(r) = admin.get(&url).send().await
                    && let Ok(v) = r.json::<Value>().await
                    && v["chatStates"][SHOP] == "composing"
                {
                    seen.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut ids = Vec::new();
    for i in 0..20 {
        let m = queue(
            &app,
            json!({"sessionId": "pace1", "to": DORA, "text": format!("offer {i}"), "queue": true}),
        )
        .await;
        ids.push(m["id"].as_str().unwrap().to_owned());
    }
    // The outbox spreads them 2 s apart (give or take a second for the rounding).
    let planned: Vec<i64> = outbox(&app, "pace1")
        .await
        .iter()
        .map(|m| m["expectedAt"].as_i64().unwrap())
        .collect();
    // (The first may have gone already.)
    assert!(planned.len() >= 18, "{planned:?}");
    let span = planned[planned.len() - 1] - planned[0];
    let want = 2 * (planned.len() as i64 - 1);
    assert!((want - 1..=want + 1).contains(&span), "{planned:?}");
    // WhatsApp took a message when its server ack or its delivery receipt came, whichever
    // was first (the phone's receipt can overtake the ack).
    let mut at = Vec::new();
    let mut taken = std::collections::HashSet::new();
    while at.len() < ids.len() {
        let v = tokio::time::timeout(LONG, hooks.recv())
            .await
            .expect("a message-sent or message-delivered webhook")
            .expect("receiver alive");
        let id = v["data"]["id"].as_str().unwrap_or_default().to_owned();
        if ids.contains(&id) && taken.insert(id) {
            at.push(tokio::time::Instant::now());
        }
    }
    let gaps: Vec<f64> = at.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    // 2 s ± 0.5 s, and a little for the ack and the webhook on a shared machine.
    for g in &gaps {
        assert!((1.3..=2.7).contains(g), "gaps {gaps:?}");
    }
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    assert!(
        (1.7..=2.3).contains(&mean),
        "mean gap {mean}, gaps {gaps:?}"
    );
    assert!(
        typing_seen.load(std::sync::atomic::Ordering::Relaxed),
        "the phone never saw the shop typing"
    );
    watcher.abort();
    let got = received(&app, DORA, SHOP).await;
    let texts: Vec<&str> = got.iter().map(|(_, t, _)| t.as_str()).collect();
    let want: Vec<String> = (0..20).map(|i| format!("offer {i}")).collect();
    assert_eq!(texts, want);

    // A daily cap of 21: one more goes today, the next waits for tomorrow (UTC).
    let got = settings(json!({"pacing": {"dailyCap": 21}})).await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    let last = queue(
        &app,
        json!({"sessionId": "pace1", "to": DORA, "text": "one more", "queue": true}),
    )
    .await;
    wait_for(LONG, "the 21st message", || async {
        let status = history_status(&app, "pace1", last["id"].as_str().unwrap()).await;
        (status == "sent" || status == "delivered").then_some(())
    })
    .await;
    let held = queue(
        &app,
        json!({"sessionId": "pace1", "to": DORA, "text": "tomorrow", "queue": true}),
    )
    .await;
    let tomorrow = (now() / 86_400 + 1) * 86_400;
    let waiting = wait_for(LONG, "the queue to hold the 22nd", || async {
        let o = outbox(&app, "pace1").await;
        (o.len() == 1 && o[0]["retryAt"] == tomorrow).then_some(o)
    })
    .await;
    assert_eq!(waiting[0]["messageId"], held["id"]);
    assert_eq!(waiting[0]["expectedAt"], tomorrow);
    assert_eq!(
        history_status(&app, "pace1", held["id"].as_str().unwrap()).await,
        "queued"
    );
    app.stop().await;
}
