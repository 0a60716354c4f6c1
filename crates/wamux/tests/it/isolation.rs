//! A panic inside one session's task stays there: the session is reported `failed` and
//! comes back by itself, while the other sessions keep sending and receiving and the server
//! keeps answering.
//!
//! No input makes the session code panic, so the panic is caused through the sandbox
//! build's fault hook, `wamux::session::fault::panic_session`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::e2e::pair;
use crate::helpers::{TestApp, wait_for, wait_until};

const LONG: Duration = Duration::from_secs(60);
const BOB: &str = "15550000501";
/// Session ids are this test's own: the fault hook is process-wide, keyed by session id.
const VICTIM: &str = "isolation-victim";
const CALM: [&str; 2] = ["isolation-calm-a", "isolation-calm-b"];

/// `(status, reason)` of every `session-status` event recorded for `session`, oldest first.
async fn statuses(app: &TestApp, session: &str) -> Vec<(String, String)> {
    let (s, b) = app
        .get_json(&format!("/api/events?sessionId={session}&limit=500"))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "session-status")
        .map(|e| {
            (
                e["data"]["status"].as_str().unwrap_or_default().to_owned(),
                e["data"]["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn send(app: &TestApp, session: &str, to: &str, text: &str) {
    let (status, body) = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": session, "to": to, "text": text}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{session} sending: {body}");
}

async fn received(app: &TestApp, session: &str, text: &str) -> bool {
    let (s, b) = app.get_json(&format!("/api/messages/{session}")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m: &Value| m["fromMe"] == false && m["text"] == text)
}

#[tokio::test]
async fn a_panic_in_one_session_is_reported_and_restarted_while_the_others_keep_working() {
    let app = TestApp::with_sim().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(BOB, "Bob").await;
    let phones = ["15550000502", "15550000503", "15550000504"];
    for p in phones {
        sim.phone(p, "Owner").await;
    }
    pair(&app, VICTIM, phones[0]).await;
    pair(&app, CALM[0], phones[1]).await;
    pair(&app, CALM[1], phones[2]).await;
    let calm_before: Vec<usize> = {
        let mut v = Vec::new();
        for s in CALM {
            v.push(statuses(&app, s).await.len());
        }
        v
    };

    wamux::session::fault::panic_session(VICTIM);

    // The others work while the victim is down: each sends to Bob, and each receives.
    for (i, s) in CALM.iter().enumerate() {
        send(&app, s, BOB, &format!("calm {i} during")).await;
        sim.send(BOB, phones[i + 1], &format!("to calm {i} during"))
            .await;
    }
    // The panic is reported as the session's failure, with its message...
    let (failed_at, reason) = wait_for(LONG, "the victim to be reported failed", || async {
        statuses(&app, VICTIM)
            .await
            .into_iter()
            .enumerate()
            .find(|(_, (status, _))| status == "failed")
            .map(|(i, (_, reason))| (i, reason))
    })
    .await;
    assert!(
        reason.contains("internal error") && reason.contains("fault injected"),
        "the failure does not say it was a panic: {reason:?}"
    );
    // ...and the supervisor brings the session back, with its stored credentials (no QR).
    wait_until(LONG, "the victim to be connected again", || async {
        let h = statuses(&app, VICTIM).await;
        h[failed_at..].iter().any(|(s, _)| s == "connected")
            && app.status_of(VICTIM).await == "connected"
    })
    .await;
    let after: Vec<String> = statuses(&app, VICTIM).await[failed_at..]
        .iter()
        .map(|(s, _)| s.clone())
        .collect();
    assert!(
        !after.iter().any(|s| s == "qr"),
        "the victim asked for a QR after its restart: {after:?}"
    );
    send(&app, VICTIM, BOB, "victim after").await;

    // The other sessions never noticed: no status change at all since they were paired.
    for (i, s) in CALM.iter().enumerate() {
        let h = statuses(&app, s).await;
        assert_eq!(
            h.len(),
            calm_before[i],
            "{s} changed status while another session panicked: {h:?}"
        );
        assert_eq!(app.status_of(s).await, "connected");
        send(&app, s, BOB, &format!("calm {i} after")).await;
    }
    wait_until(LONG, "Bob to get every message", || async {
        let got = sim.messages(BOB).await;
        let texts: Vec<&str> = got.iter().filter_map(|m| m["text"].as_str()).collect();
        [
            "calm 0 during",
            "calm 1 during",
            "victim after",
            "calm 0 after",
            "calm 1 after",
        ]
        .iter()
        .all(|t| texts.contains(t))
    })
    .await;
    for (i, s) in CALM.iter().enumerate() {
        let text = format!("to calm {i} during");
        wait_until(LONG, &format!("{s} to receive Bob's message"), || async {
            received(&app, s, &text).await
        })
        .await;
    }
    let (status, body) = app.get_json("/api/health").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.stop().await;
}
