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
pub(crate) async fn app() -> TestApp {
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

/// Links `session` to `phone`'s account and points its webhook, for `events`, at a new
/// receiver.
pub(crate) async fn linked(app: &TestApp, session: &str, phone: &str, events: &[&str]) -> Receiver {
    let hook = Receiver::start().await;
    pair(app, session, phone).await;
    let (s, b) = app
        .post_json(
            &format!("/api/{session}/webhook"),
            json!({"url": hook.url, "events": events}),
        )
        .await;
    assert!(s.is_success(), "{b}");
    hook
}

/// The next webhook body of event `event`, skipping others.
pub(crate) async fn next_event(hook: &mut Receiver, event: &str) -> Value {
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
    let mut hook = linked(&app, "r1", ALICE, &["message-reaction"]).await;
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
        .admin_json(
            reqwest::Method::POST,
            &format!("/phones/{BOB}/messages"),
            Some(json!({"to": ALICE, "reaction": {"messageId": "3EB0UNKNOWN", "emoji": "👍"}})),
        )
        .await;
    assert_eq!(r.0, StatusCode::NOT_FOUND, "{}", r.1);
}

#[tokio::test]
async fn edits_and_revokes_go_both_ways_and_history_shows_the_latest_state() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    const CAROL: &str = "15550004003";
    const DAN: &str = "15550004004";
    sim.phone(CAROL, "Carol").await;
    sim.phone(DAN, "Dan").await;
    let mut hook = linked(&app, "ed1", CAROL, &["message-edited", "message-revoked"]).await;
    let send = |text: &'static str| {
        let app = &app;
        async move {
            let (s, m) = app
                .post_json(
                    "/api/send-message",
                    json!({"sessionId": "ed1", "to": DAN, "text": text}),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{m}");
            m["id"].as_str().unwrap().to_owned()
        }
    };
    let first = send("see you at one").await;
    let second = send("this one goes").await;
    let theirs = sim.send(DAN, CAROL, "ok").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(LONG, "all three where they go", || async {
        let on_phone = sim.messages(DAN).await;
        let both = [&first, &second]
            .iter()
            .all(|id| on_phone.iter().any(|m| m["id"] == id.as_str()));
        (both && message(&app, "ed1", &theirs).await.is_some()).then_some(())
    })
    .await;

    // What WhatsApp would refuse is refused here, and nothing is sent.
    let path = |id: &str| format!("/api/messages/ed1/{id}");
    let patch = |id: String, body: Value| {
        let app = &app;
        async move {
            app.call_json(reqwest::Method::PATCH, &path(&id), Some(body))
                .await
        }
    };
    let delete = |id: String, query: &'static str| {
        let app = &app;
        async move {
            app.call_json(
                reqwest::Method::DELETE,
                &format!("{}{query}", path(&id)),
                None,
            )
            .await
        }
    };
    assert_error(
        &patch(theirs.clone(), json!({"text": "mine now"})).await,
        StatusCode::CONFLICT,
        "not_editable",
    );
    assert_error(
        &delete(theirs.clone(), "").await,
        StatusCode::CONFLICT,
        "not_revocable",
    );
    assert_error(
        &patch("3EB0NOSUCHMESSAGE".into(), json!({"text": "x"})).await,
        StatusCode::NOT_FOUND,
        "message_not_found",
    );
    assert_error(
        &patch(first.clone(), json!({"text": ""})).await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
    );
    assert_error(
        &patch(first.clone(), json!({"txt": "typo"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    assert_error(
        &delete(second.clone(), "?for=them").await,
        StatusCode::BAD_REQUEST,
        "invalid_field",
    );

    // We edit the first and revoke the second.
    let (s, edit) = patch(first.clone(), json!({"text": "see you at two"})).await;
    assert_eq!(s, StatusCode::OK, "{edit}");
    assert_eq!(edit["type"], "edited", "{edit}");
    assert_eq!(edit["targetId"], first.as_str(), "{edit}");
    let ev = next_event(&mut hook, "message-edited").await;
    assert_eq!(ev["data"]["targetId"], first.as_str(), "{ev}");
    assert_eq!(ev["data"]["text"], "see you at two", "{ev}");
    let (s, revoke) = delete(second.clone(), "").await;
    assert_eq!(s, StatusCode::OK, "{revoke}");
    assert_eq!(revoke["type"], "revoked", "{revoke}");
    let ev = next_event(&mut hook, "message-revoked").await;
    assert_eq!(ev["data"]["targetId"], second.as_str(), "{ev}");
    // Dan's phone shows both.
    wait_for(LONG, "the edit and the revoke on Dan's phone", || async {
        let m = sim.messages(DAN).await;
        let e = m.iter().find(|m| m["id"] == first.as_str())?;
        let r = m.iter().find(|m| m["id"] == second.as_str())?;
        (e["text"] == "see you at two"
            && e["edited"] == true
            && r["revoked"] == true
            && r["text"].is_null())
        .then_some(())
    })
    .await;
    // History shows the latest state; the edit and the revoke are their own entries too.
    let e = message(&app, "ed1", &first).await.unwrap();
    assert_eq!(e["text"], "see you at two", "{e}");
    assert!(e["editedAt"].as_i64().unwrap() > 0, "{e}");
    let r = message(&app, "ed1", &second).await.unwrap();
    assert_eq!(r["revoked"], true, "{r}");
    assert!(r["text"].is_null(), "{r}");
    assert!(
        message(&app, "ed1", edit["id"].as_str().unwrap())
            .await
            .is_some()
    );
    // A deleted message is not edited, nor deleted again.
    assert_error(
        &patch(second.clone(), json!({"text": "back"})).await,
        StatusCode::CONFLICT,
        "not_editable",
    );

    // Dan edits his message, then deletes it.
    let r = sim
        .send_json(
            DAN,
            &json!({"to": CAROL, "edit": {"messageId": theirs, "text": "ok, two it is"}}),
        )
        .await;
    let ev = next_event(&mut hook, "message-edited").await;
    assert_eq!(ev["data"]["id"], r["id"], "{ev}");
    assert_eq!(ev["data"]["fromMe"], false, "{ev}");
    assert_eq!(ev["data"]["targetId"], theirs.as_str(), "{ev}");
    assert_eq!(ev["data"]["text"], "ok, two it is", "{ev}");
    let shown = message(&app, "ed1", &theirs).await.unwrap();
    assert_eq!(shown["text"], "ok, two it is", "{shown}");
    assert!(shown["editedAt"].is_i64(), "{shown}");
    sim.send_json(DAN, &json!({"to": CAROL, "revoke": {"messageId": theirs}}))
        .await;
    let ev = next_event(&mut hook, "message-revoked").await;
    assert_eq!(ev["data"]["targetId"], theirs.as_str(), "{ev}");
    let shown = message(&app, "ed1", &theirs).await.unwrap();
    assert_eq!(shown["revoked"], true, "{shown}");
    assert!(shown["text"].is_null(), "{shown}");
    // A phone cannot edit what it did not send.
    let r = sim
        .admin_json(
            reqwest::Method::POST,
            &format!("/phones/{DAN}/messages"),
            Some(json!({"to": CAROL, "edit": {"messageId": first, "text": "forged"}})),
        )
        .await;
    assert_eq!(r.0, StatusCode::BAD_REQUEST, "{}", r.1);
}

#[tokio::test]
async fn messages_older_than_whatsapp_allows_are_not_edited_or_revoked() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    const ERIN: &str = "15550004005";
    const FRANK: &str = "15550004006";
    sim.phone(ERIN, "Erin").await;
    sim.phone(FRANK, "Frank").await;
    pair(&app, "old1", ERIN).await;
    // Two messages of ours, as if sent 20 minutes and 3 days ago.
    let store =
        wamux::store::Store::connect(&crate::helpers::database(&app.dir.path().join("data")))
            .await
            .unwrap();
    let now = wamux::store::now();
    for (id, age) in [
        ("3EB0AGED20MINUTES0", 20 * 60),
        ("3EB0AGED3DAYS00000", 3 * 86_400),
    ] {
        let msg: wamux::model::Message = serde_json::from_value(json!({
            "id": id, "sessionId": "old1", "chatId": format!("{FRANK}@s.whatsapp.net"),
            "from": format!("{ERIN}@s.whatsapp.net"), "to": format!("{FRANK}@s.whatsapp.net"),
            "fromMe": true, "pushName": null, "type": "text", "text": "long ago", "caption": null,
            "timestamp": now - age, "status": "delivered", "quotedId": null, "media": null,
            "fromPn": null, "fromLid": null, "chatPn": null, "chatLid": null, "participant": null
        }))
        .unwrap();
        let mut tx = store.begin().await.unwrap();
        wamux::store::messages::insert(
            &mut tx.conn(),
            &msg,
            &msg.from,
            wamux::event::EventKind::MessageFromMe,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let r = app
        .call_json(
            reqwest::Method::PATCH,
            "/api/messages/old1/3EB0AGED20MINUTES0",
            Some(json!({"text": "too late"})),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "edit_window_passed");
    let r = app
        .call_json(
            reqwest::Method::DELETE,
            "/api/messages/old1/3EB0AGED3DAYS00000",
            None,
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "revoke_window_passed");
    // Neither reached WhatsApp, and both are as they were.
    assert!(sim.messages(FRANK).await.is_empty());
    for id in ["3EB0AGED20MINUTES0", "3EB0AGED3DAYS00000"] {
        let m = message(&app, "old1", id).await.unwrap();
        assert_eq!(m["text"], "long ago", "{m}");
        assert!(
            m.get("editedAt").is_none() && m.get("revoked").is_none(),
            "{m}"
        );
    }
}

/// The simulator's view of `phone`'s presence.
async fn presence_of(app: &TestApp, phone: &str) -> Value {
    let sim = app.sim.as_ref().unwrap();
    let r = sim
        .admin_json(
            reqwest::Method::GET,
            &format!("/phones/{phone}/presence"),
            None,
        )
        .await;
    r.1
}

#[tokio::test]
async fn read_receipts_presence_and_typing_go_both_ways() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    const GUS: &str = "15550004007";
    const HAL: &str = "15550004008";
    sim.phone(GUS, "Gus").await;
    sim.phone(HAL, "Hal").await;
    let mut hook = linked(&app, "pr1", GUS, &["presence"]).await;
    let hal_jid = format!("{HAL}@s.whatsapp.net");

    // Hal writes twice; we read his chat.
    let mut theirs = Vec::new();
    for text in ["one", "two"] {
        theirs.push(
            sim.send(HAL, GUS, text).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    wait_for(LONG, "both in the history", || async {
        let mut all = true;
        for id in &theirs {
            all &= message(&app, "pr1", id).await.is_some();
        }
        all.then_some(())
    })
    .await;
    for (body, field) in [
        (json!({"chat": "12"}), "chat"),
        (json!({"chat": HAL, "messageIds": []}), "messageIds"),
        (
            json!({"chat": HAL, "messageIds": vec!["x"; 1001]}),
            "messageIds",
        ),
    ] {
        let got = app.post_json("/api/messages/pr1/read", body).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
        assert!(
            got.1["error"]["message"].as_str().unwrap().contains(field),
            "{}",
            got.1
        );
    }
    let (s, read) = app
        .post_json("/api/messages/pr1/read", json!({"chat": HAL}))
        .await;
    assert_eq!(s, StatusCode::OK, "{read}");
    let mut got: Vec<String> = serde_json::from_value(read["read"].clone()).unwrap();
    got.sort();
    let mut want = theirs.clone();
    want.sort();
    assert_eq!(got, want, "{read}");
    wait_for(LONG, "Hal's phone to show both read", || async {
        let m = sim.messages(HAL).await;
        theirs
            .iter()
            .all(|id| {
                m.iter()
                    .any(|m| m["id"] == id.as_str() && m["status"] == "read")
            })
            .then_some(())
    })
    .await;
    for id in &theirs {
        assert_eq!(message(&app, "pr1", id).await.unwrap()["status"], "read");
    }
    // Nothing is left to read.
    let (s, again) = app
        .post_json("/api/messages/pr1/read", json!({"chat": HAL}))
        .await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["read"], json!([]), "{again}");

    // Our presence and typing, as WhatsApp sees them.
    for (body, code) in [
        (json!({"state": "dancing"}), "invalid_field"),
        (json!({"state": "composing"}), "invalid_field"),
        (json!({"state": "available", "chat": HAL}), "invalid_field"),
        (json!({"state": "available", "extra": 1}), "invalid_body"),
    ] {
        let got = app.post_json("/api/sessions/pr1/presence", body).await;
        assert_error(&got, StatusCode::BAD_REQUEST, code);
    }
    let (s, b) = app
        .post_json("/api/sessions/pr1/presence", json!({"state": "available"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    wait_for(LONG, "WhatsApp to show us online", || async {
        (presence_of(&app, GUS).await["available"] == true).then_some(())
    })
    .await;
    let (s, b) = app
        .post_json(
            "/api/sessions/pr1/presence",
            json!({"state": "unavailable"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let p = wait_for(LONG, "WhatsApp to show us offline", || async {
        let p = presence_of(&app, GUS).await;
        (p["available"] == false).then_some(p)
    })
    .await;
    assert!(p["lastSeen"].as_u64().unwrap() > 0, "{p}");
    for state in ["composing", "recording", "paused"] {
        let (s, b) = app
            .post_json(
                "/api/sessions/pr1/presence",
                json!({"state": state, "chat": HAL}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["chatId"], hal_jid.as_str(), "{b}");
        wait_for(LONG, "Hal's phone to show it", || async {
            (presence_of(&app, HAL).await["chatStates"][GUS] == state).then_some(())
        })
        .await;
    }

    // Hal's presence and typing reach us once we subscribe.
    let (s, b) = app
        .post_json("/api/sessions/pr1/presence/subscribe", json!({"chat": HAL}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let ev = next_event(&mut hook, "presence").await;
    assert_eq!(ev["data"]["from"], hal_jid.as_str(), "{ev}");
    assert_eq!(ev["data"]["state"], "unavailable", "{ev}");
    let phone_presence = |body: Value| async move {
        let (s, b) = sim
            .admin_json(
                reqwest::Method::POST,
                &format!("/phones/{HAL}/presence"),
                Some(body),
            )
            .await;
        assert!(s.is_success(), "{b}");
    };
    phone_presence(json!({"state": "available"})).await;
    let ev = next_event(&mut hook, "presence").await;
    assert_eq!(ev["data"]["state"], "available", "{ev}");
    phone_presence(json!({"state": "composing", "to": GUS})).await;
    let ev = next_event(&mut hook, "presence").await;
    assert_eq!(ev["data"]["state"], "composing", "{ev}");
    assert_eq!(ev["data"]["from"], hal_jid.as_str(), "{ev}");
    phone_presence(json!({"state": "recording", "to": GUS})).await;
    assert_eq!(
        next_event(&mut hook, "presence").await["data"]["state"],
        "recording"
    );
    phone_presence(json!({"state": "unavailable"})).await;
    let ev = next_event(&mut hook, "presence").await;
    assert_eq!(ev["data"]["state"], "unavailable", "{ev}");
    assert!(ev["data"]["lastSeen"].as_i64().unwrap() > 0, "{ev}");
}

#[tokio::test]
async fn polls_go_both_ways_and_encrypted_votes_from_two_phones_are_tallied() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    const IVY: &str = "15550004009";
    const JOE: &str = "15550004010";
    sim.phone(IVY, "Ivy").await;
    sim.phone(JOE, "Joe").await;
    let mut hook = linked(&app, "poll1", IVY, &["poll-vote"]).await;
    let ivy_jid = format!("{IVY}@s.whatsapp.net");
    let joe_jid = format!("{JOE}@s.whatsapp.net");

    // Bad polls are refused and nothing is sent.
    let base = json!({"sessionId": "poll1", "to": JOE, "question": "Lunch?"});
    let with = |extra: Value| {
        let mut b = base.clone();
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let thirteen: Vec<String> = (0..13).map(|i| format!("o{i}")).collect();
    for (body, field) in [
        (with(json!({"options": ["only one"]})), "options"),
        (with(json!({"options": ["a", "a"]})), "options"),
        (with(json!({"options": thirteen})), "options"),
        (with(json!({"options": ["a", 2]})), "options"),
        (
            with(json!({"question": " ", "options": ["a", "b"]})),
            "question",
        ),
        (with(json!({"options": ["a", "b"], "queue": true})), "queue"),
        (
            with(json!({"options": ["a", "b"], "multiple": "yes"})),
            "multiple",
        ),
    ] {
        let got = app.post_json("/api/send-poll", body.clone()).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
        let msg = got.1["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(field), "{body}: {msg} should name {field}");
    }
    let got = app.post_json("/api/send-poll", with(json!({}))).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "missing_field");
    assert!(sim.messages(JOE).await.is_empty());

    // Our poll reaches Joe's phone, and our own phone.
    let (s, poll) = app
        .post_json(
            "/api/send-poll",
            with(json!({"options": ["12:00", "13:00", "14:00"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{poll}");
    assert_eq!(poll["type"], "poll", "{poll}");
    assert_eq!(poll["poll"]["question"], "Lunch?", "{poll}");
    assert_eq!(poll["poll"]["multiple"], false, "{poll}");
    let poll_id = poll["id"].as_str().unwrap().to_owned();
    for phone in [JOE, IVY] {
        let on_phone = wait_for(LONG, "the poll on the phone", || async {
            sim.messages(phone)
                .await
                .into_iter()
                .find(|m| m["id"] == poll_id.as_str() && m["poll"].is_object())
        })
        .await;
        assert_eq!(on_phone["poll"]["question"], "Lunch?", "{on_phone}");
        assert_eq!(
            on_phone["poll"]["options"],
            json!(["12:00", "13:00", "14:00"])
        );
        assert_eq!(on_phone["poll"]["selectable"], 1, "{on_phone}");
    }

    // Joe votes, Ivy votes from her phone, Joe changes his mind: each vote arrives
    // encrypted, is opened with the poll's secret, and counts once per voter.
    let steps = [
        (
            JOE,
            "13:00",
            &joe_jid,
            false,
            [("12:00", 0), ("13:00", 1), ("14:00", 0)],
        ),
        (
            IVY,
            "14:00",
            &ivy_jid,
            true,
            [("12:00", 0), ("13:00", 1), ("14:00", 1)],
        ),
        (
            JOE,
            "14:00",
            &joe_jid,
            false,
            [("12:00", 0), ("13:00", 0), ("14:00", 2)],
        ),
    ];
    for (phone, option, voter, from_me, counts) in steps {
        let sent = sim
            .send_json(
                phone,
                &json!({"to": if phone == JOE { IVY } else { JOE }, "vote": {"messageId": poll_id, "options": [option]}}),
            )
            .await;
        let ev = next_event(&mut hook, "poll-vote").await;
        let d = &ev["data"];
        assert_eq!(d["id"], sent["id"], "{ev}");
        assert_eq!(d["type"], "poll_vote", "{ev}");
        assert_eq!(d["from"], voter.as_str(), "{ev}");
        assert_eq!(d["fromMe"], from_me, "{ev}");
        assert_eq!(d["vote"]["pollId"], poll_id.as_str(), "{ev}");
        assert_eq!(d["vote"]["options"], json!([option]), "{ev}");
        let tally: Vec<(String, u64)> = d["vote"]["tally"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["option"].as_str().unwrap().to_owned(),
                    c["votes"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, u64)> = counts.iter().map(|(o, n)| (o.to_string(), *n)).collect();
        assert_eq!(tally, want, "{ev}");
    }
    let shown = message(&app, "poll1", &poll_id).await.unwrap();
    let votes = shown["poll"]["votes"].as_array().unwrap();
    assert_eq!(votes.len(), 2, "one ballot per voter: {shown}");
    assert!(
        votes.iter().all(|b| b["options"] == json!(["14:00"])),
        "{shown}"
    );
    assert_eq!(shown["poll"]["tally"][2]["votes"], 2, "{shown}");
    // Joe's phone opened Ivy's vote too.
    let joes = wait_for(LONG, "Ivy's vote on Joe's phone", || async {
        let m = sim.messages(JOE).await;
        let p = m.into_iter().find(|m| m["id"] == poll_id.as_str())?;
        (p["poll"]["votes"][IVY] == json!(["14:00"])).then_some(p)
    })
    .await;
    assert_eq!(joes["poll"]["votes"][JOE], json!(["14:00"]), "{joes}");

    // Joe's own poll, several answers allowed: we see it and his vote.
    let theirs = sim
        .send_json(
            JOE,
            &json!({"to": IVY, "poll": {"question": "Toppings?", "options": ["cheese", "ham", "olives"], "multiple": true}}),
        )
        .await;
    let theirs_id = theirs["id"].as_str().unwrap().to_owned();
    let got = wait_for(LONG, "Joe's poll in the history", || async {
        message(&app, "poll1", &theirs_id).await
    })
    .await;
    assert_eq!(got["type"], "poll", "{got}");
    assert_eq!(got["poll"]["multiple"], true, "{got}");
    assert_eq!(got["poll"]["options"], json!(["cheese", "ham", "olives"]));
    sim.send_json(
        JOE,
        &json!({"to": IVY, "vote": {"messageId": theirs_id, "options": ["cheese", "olives"]}}),
    )
    .await;
    let ev = next_event(&mut hook, "poll-vote").await;
    assert_eq!(
        ev["data"]["vote"]["options"],
        json!(["cheese", "olives"]),
        "{ev}"
    );
    let shown = message(&app, "poll1", &theirs_id).await.unwrap();
    let counts: Vec<u64> = shown["poll"]["tally"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["votes"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 0, 1], "{shown}");
}

#[tokio::test]
async fn unknown_kinds_are_kept_and_an_undecryptable_message_is_announced_then_recovered() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    const KIM: &str = "15550004011";
    const LEO: &str = "15550004012";
    sim.phone(KIM, "Kim").await;
    sim.phone(LEO, "Leo").await;
    let mut hook = linked(
        &app,
        "odd1",
        KIM,
        &["message-received", "message-undecryptable"],
    )
    .await;

    // A kind we have no shape for (a live location: field 18, empty) is kept, named.
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD.encode([0x92, 0x01, 0x00]);
    let odd = sim.send_json(LEO, &json!({"to": KIM, "raw": raw})).await;
    let ev = next_event(&mut hook, "message-received").await;
    assert_eq!(ev["data"]["id"], odd["id"], "{ev}");
    assert_eq!(ev["data"]["type"], "unknown", "{ev}");
    assert_eq!(ev["data"]["rawType"], "liveLocationMessage", "{ev}");
    let kept = message(&app, "odd1", odd["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(kept["rawType"], "liveLocationMessage", "{kept}");

    // Leo's next message reaches us damaged: we say so, ask for it again, and get it.
    // (Our answer first establishes the session, so his next one is an ordinary `msg`.)
    let (s, b) = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "odd1", "to": LEO, "text": "what was that?"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    wait_for(LONG, "our answer on Leo's phone", || async {
        sim.messages(LEO)
            .await
            .into_iter()
            .find(|m| m["id"] == b["id"])
    })
    .await;
    let r = sim
        .admin_json(
            reqwest::Method::POST,
            "/faults/corrupt-messages",
            Some(json!({"phone": LEO, "count": 1})),
        )
        .await;
    assert!(r.0.is_success(), "{}", r.1);
    let sent = sim.send(LEO, KIM, "did you get this?").await;
    let id = sent["id"].as_str().unwrap();
    let ev = next_event(&mut hook, "message-undecryptable").await;
    assert_eq!(ev["data"]["id"], id, "{ev}");
    assert_eq!(ev["data"]["from"], format!("{LEO}@s.whatsapp.net"), "{ev}");
    let ev = next_event(&mut hook, "message-received").await;
    assert_eq!(ev["data"]["id"], id, "{ev}");
    assert_eq!(ev["data"]["text"], "did you get this?", "{ev}");
}

#[tokio::test]
async fn a_message_is_forwarded_marked_forwarded_and_media_or_polls_are_refused() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    const MIA: &str = "15550004013";
    const NED: &str = "15550004014";
    const OLA: &str = "15550004015";
    for (p, n) in [(MIA, "Mia"), (NED, "Ned"), (OLA, "Ola")] {
        sim.phone(p, n).await;
    }
    pair(&app, "fw1", MIA).await;
    let theirs = sim.send(NED, MIA, "the address is 5 Elm St").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(LONG, "Ned's message in the history", || async {
        message(&app, "fw1", &theirs).await
    })
    .await;
    let forward = |id: String, body: Value| {
        let app = &app;
        async move {
            app.post_json(&format!("/api/messages/fw1/{id}/forward"), body)
                .await
        }
    };
    let (s, fwd) = forward(theirs.clone(), json!({"to": OLA})).await;
    assert_eq!(s, StatusCode::OK, "{fwd}");
    assert_eq!(fwd["forwarded"], true, "{fwd}");
    assert_eq!(fwd["text"], "the address is 5 Elm St", "{fwd}");
    assert_eq!(fwd["chatId"], format!("{OLA}@s.whatsapp.net"), "{fwd}");
    assert_ne!(fwd["id"], theirs.as_str());
    let got = wait_for(LONG, "the forward on Ola's phone", || async {
        sim.messages(OLA)
            .await
            .into_iter()
            .find(|m| m["id"] == fwd["id"])
    })
    .await;
    assert_eq!(got["text"], "the address is 5 Elm St", "{got}");
    assert_eq!(got["forwarded"], true, "{got}");
    // A location keeps its fields when forwarded.
    let (s, place) = app
        .post_json(
            "/api/send-location",
            json!({"sessionId": "fw1", "to": NED, "latitude": 1.5, "longitude": 2.5}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{place}");
    let (s, fwd) = forward(place["id"].as_str().unwrap().into(), json!({"to": OLA})).await;
    assert_eq!(s, StatusCode::OK, "{fwd}");
    let got = wait_for(LONG, "the forwarded location", || async {
        sim.messages(OLA)
            .await
            .into_iter()
            .find(|m| m["id"] == fwd["id"])
    })
    .await;
    assert_eq!(got["location"]["latitude"], 1.5, "{got}");
    assert_eq!(got["forwarded"], true, "{got}");

    // What cannot be forwarded is refused, and nothing goes.
    let (s, poll) = app
        .post_json(
            "/api/send-poll",
            json!({"sessionId": "fw1", "to": NED, "question": "?", "options": ["a", "b"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{poll}");
    let got = forward(poll["id"].as_str().unwrap().into(), json!({"to": OLA})).await;
    assert_error(&got, StatusCode::CONFLICT, "not_forwardable");
    let got = forward("3EB0NOSUCH".into(), json!({"to": OLA})).await;
    assert_error(&got, StatusCode::NOT_FOUND, "message_not_found");
    let got = forward(theirs.clone(), json!({"to": "12"})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_phone");
    assert_eq!(sim.messages(OLA).await.len(), 2);
}

#[tokio::test]
async fn contact_info_pictures_and_blocking_come_from_whatsapp() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    const PAT: &str = "15550004016";
    const QUE: &str = "15550004017";
    const RAY: &str = "15550004018";
    for (p, n) in [(PAT, "Pat"), (QUE, "Que"), (RAY, "Ray")] {
        sim.phone(p, n).await;
    }
    pair(&app, "ci1", PAT).await;
    // Que runs a business with a photo and an about text; Ray keeps WhatsApp's defaults.
    use base64::Engine as _;
    let photo = base64::engine::general_purpose::STANDARD.encode(b"\xff\xd8\xff\xe0 a tiny jpeg");
    let r = sim
        .admin_json(
            reqwest::Method::POST,
            &format!("/phones/{QUE}/profile"),
            Some(json!({"about": "Open 9 to 5", "business": true, "picture": photo})),
        )
        .await;
    assert!(r.0.is_success(), "{}", r.1);

    let (s, que) = app
        .get_json(&format!("/api/sessions/ci1/contacts/{QUE}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{que}");
    assert_eq!(que["jid"], format!("{QUE}@s.whatsapp.net"), "{que}");
    assert_eq!(que["phone"], QUE, "{que}");
    assert!(que["lid"].as_str().unwrap().ends_with("@lid"), "{que}");
    assert_eq!(que["about"], "Open 9 to 5", "{que}");
    assert_eq!(que["business"], true, "{que}");
    assert!(que["pushName"].is_null(), "Que has not written yet: {que}");
    let picture_id = que["pictureId"].as_str().expect("a picture id").to_owned();
    let (s, pic) = app
        .get_json(&format!("/api/sessions/ci1/contacts/{QUE}@c.us/picture"))
        .await;
    assert_eq!(s, StatusCode::OK, "{pic}");
    assert_eq!(pic["id"], picture_id.as_str(), "{pic}");
    assert!(
        pic["url"].as_str().unwrap().starts_with("https://"),
        "{pic}"
    );

    // Once Que writes, the name their message carried is known.
    let hello = sim.send(QUE, PAT, "hello from the shop").await;
    crate::helpers::wait_until(LONG, "Que's message in the history", || async {
        message(&app, "ci1", hello["id"].as_str().unwrap())
            .await
            .is_some()
    })
    .await;
    let (_, que) = app
        .get_json(&format!("/api/sessions/ci1/contacts/{QUE}"))
        .await;
    assert_eq!(que["pushName"], "Que", "{que}");

    // By its LID, the same account, with its number.
    let lid = que["lid"].as_str().unwrap();
    let (s, by_lid) = app
        .get_json(&format!("/api/sessions/ci1/contacts/{lid}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{by_lid}");
    assert_eq!(by_lid["lid"], lid, "{by_lid}");
    assert_eq!(by_lid["phone"], QUE, "{by_lid}");
    assert_eq!(by_lid["about"], "Open 9 to 5", "{by_lid}");

    let (s, ray) = app
        .get_json(&format!("/api/sessions/ci1/contacts/{RAY}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{ray}");
    assert_eq!(ray["about"], "Hey there! I am using WhatsApp.", "{ray}");
    assert_eq!(ray["business"], false, "{ray}");
    assert!(ray["pictureId"].is_null(), "{ray}");
    let got = app
        .get_json(&format!("/api/sessions/ci1/contacts/{RAY}/picture"))
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "picture_not_found");
    let got = app.get_json("/api/sessions/ci1/contacts/15550009999").await;
    assert_error(&got, StatusCode::NOT_FOUND, "contact_not_found");
    let got = app.get_json("/api/sessions/ci1/contacts/12").await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");

    // Blocking is WhatsApp's: the account's blocklist holds Ray (by number or LID), then not.
    let r = sim
        .admin_json(reqwest::Method::GET, &format!("/phones/{RAY}"), None)
        .await;
    let ray_lid = r.1["lid"].as_str().unwrap().to_owned();
    let ray_lid = &ray_lid;
    let blocked = |want: bool| async move {
        let r = sim
            .admin_json(reqwest::Method::GET, &format!("/phones/{PAT}"), None)
            .await;
        let acc = r.1;
        let listed = acc["blocked"].as_array().unwrap().iter().any(|j| {
            let j = j.as_str().unwrap();
            j.starts_with(RAY) || j == ray_lid
        });
        listed == want
    };
    let (s, b) = app
        .post_json(
            &format!("/api/sessions/ci1/contacts/{RAY}/block"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["blocked"], true, "{b}");
    crate::helpers::wait_until(LONG, "Ray on the blocklist", || blocked(true)).await;
    let (s, b) = app
        .post_json(
            &format!("/api/sessions/ci1/contacts/{RAY}/unblock"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    crate::helpers::wait_until(LONG, "Ray off the blocklist", || blocked(false)).await;
}

#[tokio::test]
async fn the_chat_list_shows_each_chat_with_its_last_message_and_unread_count() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    const SAL: &str = "15550004019";
    const TOM: &str = "15550004020";
    const UMA: &str = "15550004021";
    const VIC: &str = "15550004022";
    for (p, n) in [(SAL, "Sal"), (TOM, "Tom"), (UMA, "Uma"), (VIC, "Vic")] {
        sim.phone(p, n).await;
    }
    pair(&app, "ch1", SAL).await;
    let (s, b) = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "ch1", "to": VIC, "text": "first, to Vic"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Each arrives before the next goes: chats of one second are ordered by arrival.
    let mut last = Value::Null;
    for (from, text) in [(TOM, "tom 1"), (TOM, "tom 2"), (UMA, "uma 1")] {
        last = sim.send(from, SAL, text).await;
        let id = last["id"].as_str().unwrap().to_owned();
        wait_for(LONG, "the message in the history", || async {
            message(&app, "ch1", &id).await
        })
        .await;
    }
    // A reaction is no chat message: Uma's chat still ends with her text.
    sim.send_json(
        UMA,
        &json!({"to": SAL, "reaction": {"messageId": last["id"], "emoji": "👍"}}),
    )
    .await;
    let list = wait_for(LONG, "three chats", || async {
        let (s, b) = app.get_json("/api/sessions/ch1/chats").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let chats = b["chats"].as_array().unwrap().clone();
        (chats.len() == 3 && chats[0]["lastMessage"]["reactions"].is_array()).then_some(chats)
    })
    .await;
    let ids: Vec<&str> = list.iter().map(|c| c["chatId"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            format!("{UMA}@s.whatsapp.net"),
            format!("{TOM}@s.whatsapp.net"),
            format!("{VIC}@s.whatsapp.net")
        ],
        "the most recent first: {list:?}"
    );
    assert_eq!(list[0]["lastMessage"]["text"], "uma 1");
    assert_eq!(list[0]["unread"], 1);
    assert_eq!(list[1]["lastMessage"]["text"], "tom 2");
    assert_eq!(list[1]["unread"], 2);
    assert_eq!(list[2]["lastMessage"]["fromMe"], true);
    assert_eq!(list[2]["unread"], 0);
    // Read, Tom's chat has nothing unread.
    let (s, _) = app
        .post_json("/api/messages/ch1/read", json!({"chat": TOM}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, b) = app.get_json("/api/sessions/ch1/chats?limit=2").await;
    let chats = b["chats"].as_array().unwrap();
    assert_eq!(chats.len(), 2, "{b}");
    assert_eq!(chats[1]["unread"], 0, "{b}");
    let got = app.get_json("/api/sessions/ch1/chats?limit=0").await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
}

#[tokio::test]
async fn a_call_rings_as_an_event_and_is_declined_or_ends() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    const WES: &str = "15550004023";
    const XAN: &str = "15550004024";
    sim.phone(WES, "Wes").await;
    sim.phone(XAN, "Xan").await;
    let mut hook = linked(&app, "call1", WES, &["call"]).await;
    let call = |video: bool| async move {
        let r = sim
            .admin_json(
                reqwest::Method::POST,
                &format!("/phones/{XAN}/calls"),
                Some(json!({"to": WES, "video": video})),
            )
            .await;
        let (s, b) = r;
        assert!(s.is_success(), "{b}");
        b["id"].as_str().unwrap().to_owned()
    };
    let calls_of_xan = || async {
        let r = sim
            .admin_json(reqwest::Method::GET, &format!("/phones/{XAN}/calls"), None)
            .await;
        r.1
    };

    // A video call rings; we decline it and Xan's phone stops ringing.
    let first = call(true).await;
    let ev = next_event(&mut hook, "call").await;
    assert_eq!(ev["data"]["id"], first.as_str(), "{ev}");
    assert_eq!(ev["data"]["status"], "offer", "{ev}");
    assert_eq!(ev["data"]["video"], true, "{ev}");
    assert_eq!(ev["data"]["from"], format!("{XAN}@s.whatsapp.net"), "{ev}");
    let (s, b) = app
        .post_json(
            &format!("/api/sessions/call1/calls/{first}/reject"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["rejected"], true, "{b}");
    wait_for(LONG, "the call declined on Xan's phone", || async {
        let calls = calls_of_xan().await;
        calls
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == first.as_str() && c["state"] == "rejected")
            .then_some(())
    })
    .await;
    // Declined once, it rings no more.
    let got = app
        .post_json(
            &format!("/api/sessions/call1/calls/{first}/reject"),
            json!({}),
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "call_not_found");

    // A voice call Xan gives up on: offer, then ended; it can no longer be declined.
    let second = call(false).await;
    let ev = next_event(&mut hook, "call").await;
    assert_eq!(ev["data"]["id"], second.as_str(), "{ev}");
    assert_eq!(ev["data"]["video"], false, "{ev}");
    let r = sim
        .admin_json(
            reqwest::Method::POST,
            &format!("/phones/{XAN}/calls/{second}/end"),
            None,
        )
        .await;
    assert!(r.0.is_success(), "{}", r.1);
    let ev = next_event(&mut hook, "call").await;
    assert_eq!(ev["data"]["id"], second.as_str(), "{ev}");
    assert_eq!(ev["data"]["status"], "ended", "{ev}");
    let got = app
        .post_json(
            &format!("/api/sessions/call1/calls/{second}/reject"),
            json!({}),
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "call_not_found");

    // Set to decline calls with a reply: the next call is declined at once and Xan reads why.
    let (s, b) = app.get_json("/api/sessions/call1/calls/settings").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["reject"], false, "calls ring by default: {b}");
    let put = |body: Value| {
        let app = &app;
        async move {
            app.call_json(
                reqwest::Method::PUT,
                "/api/sessions/call1/calls/settings",
                Some(body),
            )
            .await
        }
    };
    let (s, b) = put(json!({"reject": true, "message": "No calls here, please write."})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["reject"], true, "{b}");
    let got = put(json!({"reject": true, "message": "x".repeat(5000)})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    let third = call(false).await;
    let ev = next_event(&mut hook, "call").await;
    assert_eq!(ev["data"]["status"], "offer", "{ev}");
    let ev = next_event(&mut hook, "call").await;
    assert_eq!(ev["data"]["id"], third.as_str(), "{ev}");
    assert_eq!(ev["data"]["status"], "rejected", "{ev}");
    wait_for(LONG, "the reply and the decline on Xan's phone", || async {
        let declined = calls_of_xan()
            .await
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == third.as_str() && c["state"] == "rejected");
        let replied = sim
            .messages(XAN)
            .await
            .iter()
            .any(|m| m["text"] == "No calls here, please write.");
        (declined && replied).then_some(())
    })
    .await;
}

/// Pinning, archiving, muting and marking chats unread, both ways: what the API changes is
/// an app-state patch the account's phone reads back; what the phone changes reaches the
/// session, its chat list and its webhook as `chat-updated`.
#[tokio::test]
async fn chats_are_pinned_archived_muted_and_marked_unread_both_ways() {
    const SHOP: &str = "15550004101";
    const DANA: &str = "15550004102";
    const ERIN: &str = "15550004103";
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(SHOP, "Shop").await;
    sim.phone(DANA, "Dana").await;
    sim.phone(ERIN, "Erin").await;
    let mut hook = linked(&app, "chat1", SHOP, &["chat-updated"]).await;
    let dana = format!("{DANA}@s.whatsapp.net");
    let erin = format!("{ERIN}@s.whatsapp.net");
    sim.send(ERIN, SHOP, "hello shop").await;
    wait_for(LONG, "Erin's message", || async {
        message_in(&app, "chat1", &erin).await.then_some(())
    })
    .await;

    let patch = |chat: String, body: Value| {
        let app = &app;
        async move {
            app.call_json(
                reqwest::Method::PATCH,
                &format!("/api/sessions/chat1/chats/{chat}"),
                Some(body),
            )
            .await
        }
    };

    // The API pins and mutes Dana's chat: the phone shows it, the webhook tells it.
    let (s, b) = patch(DANA.into(), json!({"pinned": true, "muted": true})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["chatId"], dana.as_str(), "{b}");
    assert_eq!(
        b["state"],
        json!({"pinned": true, "archived": false, "muted": true, "mutedUntil": null, "markedUnread": false})
    );
    let ev = next_event(&mut hook, "chat-updated").await;
    assert_eq!(ev["data"]["chatId"], dana.as_str(), "{ev}");
    assert_eq!(ev["data"]["pinned"], true, "{ev}");
    let on_phone = wait_for(LONG, "the phone to show the pin", || async {
        let (_, chats) = sim
            .admin_json(reqwest::Method::GET, &format!("/phones/{SHOP}/chats"), None)
            .await;
        (chats[&dana]["pinned"] == true).then_some(chats)
    })
    .await;
    assert_eq!(on_phone[&dana]["muted"], true, "{on_phone}");

    // Muted until a time, then marked unread: each a patch the phone decrypts.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let (s, b) = patch(
        DANA.into(),
        json!({"mutedUntil": until, "markedUnread": true}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["state"]["mutedUntil"], until, "{b}");
    assert_eq!(b["state"]["markedUnread"], true, "{b}");
    wait_for(
        LONG,
        "the phone to show the chat unread and muted until then",
        || async {
            let (_, chats) = sim
                .admin_json(reqwest::Method::GET, &format!("/phones/{SHOP}/chats"), None)
                .await;
            (chats[&dana]["markedUnread"] == true && chats[&dana]["muteUntil"] == until * 1000)
                .then_some(())
        },
    )
    .await;

    // The phone archives Erin's chat: the session's chat list and webhook show it.
    let r = sim
        .admin_json(
            reqwest::Method::POST,
            &format!("/phones/{SHOP}/chats/{ERIN}"),
            Some(json!({"archive": true})),
        )
        .await;
    assert!(r.0.is_success(), "{}", r.1);
    let ev = loop {
        let ev = next_event(&mut hook, "chat-updated").await;
        if ev["data"]["chatId"] == erin.as_str() {
            break ev;
        }
    };
    assert_eq!(ev["data"]["archived"], true, "{ev}");
    let (s, b) = app.get_json("/api/sessions/chat1/chats").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let listed = b["chats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chatId"] == erin.as_str())
        .cloned()
        .expect("Erin's chat is listed");
    assert_eq!(listed["state"]["archived"], true, "{listed}");

    // Bad requests change nothing.
    for body in [
        json!({}),
        json!({"mutedUntil": 5}),
        json!({"muted": false, "mutedUntil": until}),
        json!({"pinned": "yes"}),
        json!({"starred": true}),
    ] {
        let got = patch(DANA.into(), body.clone()).await;
        assert!(got.0 == StatusCode::BAD_REQUEST, "{body}: {got:?}");
    }
    let got = patch("not-a-chat".into(), json!({"pinned": true})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
}

/// Whether the session's history has a message in `chat`.
async fn message_in(app: &TestApp, session: &str, chat: &str) -> bool {
    let (s, b) = app
        .get_json(&format!("/api/messages/{session}?chat={chat}"))
        .await;
    s == StatusCode::OK && !b["messages"].as_array().unwrap().is_empty()
}

/// Sends `text` from `session` to `to` until WhatsApp takes one (the answer waits for
/// WhatsApp's verdict: 200 taken, 502 refused); returns how many WhatsApp refused first.
async fn send_until_taken(app: &TestApp, session: &str, to: &str, text: &str) -> usize {
    let sim = app.sim.as_ref().unwrap();
    let deadline = tokio::time::Instant::now() + LONG;
    let mut refused = 0;
    while tokio::time::Instant::now() < deadline {
        let (s, sent) = app
            .post_json(
                "/api/send-message",
                json!({"sessionId": session, "to": to, "text": text}),
            )
            .await;
        if s == StatusCode::OK {
            let id = sent["messageId"].as_str().unwrap().to_owned();
            wait_for(LONG, "the message at the phone", || async {
                sim.messages(to)
                    .await
                    .iter()
                    .any(|m| m["id"] == id.as_str())
                    .then_some(())
            })
            .await;
            return refused;
        }
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{sent}");
        assert_eq!(sent["error"]["code"], "send_failed", "{sent}");
        refused += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("WhatsApp refused all {refused} messages from {session} to {to}");
}

/// WhatsApp restricts whom an account may write to first (463): the send is answered with
/// the refusal, the message is `failed` with why, by webhook and in history, and never
/// reaches anyone; once the contact
/// wrote, their token comes along and the next message goes through. An account that must
/// prove every message gets through with the NCT salt the session learnt by app state.
#[tokio::test]
async fn a_message_whatsapp_refuses_for_want_of_a_privacy_token_fails_with_why() {
    const SHOP: &str = "15550004201";
    const NEW: &str = "15550004202";
    const FRESH: &str = "15550004203";
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(SHOP, "Shop").await;
    sim.phone(NEW, "New").await;
    sim.phone(FRESH, "Fresh").await;
    let mut hook = linked(&app, "tok1", SHOP, &["message-failed"]).await;
    let restrict = |body: Value| async move {
        let (s, b) = sim
            .admin_json(
                reqwest::Method::POST,
                &format!("/phones/{SHOP}/restrictions"),
                Some(body),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    };

    restrict(json!({"reachoutTimelock": true})).await;
    let (s, sent) = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "tok1", "to": NEW, "text": "special offer"}),
        )
        .await;
    // The answer waits for WhatsApp's verdict: refused, with why.
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{sent}");
    assert_eq!(sent["error"]["code"], "send_failed", "{sent}");
    let said = sent["error"]["message"].as_str().unwrap();
    assert!(said.contains("error 463"), "{said}");
    let ev = next_event(&mut hook, "message-failed").await;
    let id = ev["data"]["id"].as_str().unwrap().to_owned();
    let why = ev["data"]["error"].as_str().unwrap();
    assert!(
        why.contains("error 463") && why.contains("privacy token"),
        "{why}"
    );
    assert_eq!(
        message(&app, "tok1", &id).await.unwrap()["status"],
        "failed"
    );
    assert!(
        !sim.messages(NEW)
            .await
            .iter()
            .any(|m| m["id"] == id.as_str())
    );

    // The contact writes first: from then on the shop can answer.
    sim.send(NEW, SHOP, "what offer?").await;
    let new_chat = format!("{NEW}@s.whatsapp.net");
    wait_for(LONG, "New's message", || async {
        message_in(&app, "tok1", &new_chat).await.then_some(())
    })
    .await;
    send_until_taken(&app, "tok1", NEW, "this one").await;

    // Proof required of every message, no time-lock: a first message to someone new goes
    // through with the cstoken (the salt may still be on its way right after linking).
    restrict(json!({"reachoutTimelock": false, "requirePrivacyTokens": true})).await;
    send_until_taken(&app, "tok1", FRESH, "hello there").await;
    app.stop().await;
}

/// What the phone did to its chats before the session was linked comes with the account's
/// app state on the session's first connection: recorded as `chat-updated` events.
#[tokio::test]
async fn a_new_session_gets_the_chat_state_the_phone_had_before() {
    const SHOP: &str = "15550004301";
    const GUS: &str = "15550004302";
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(SHOP, "Shop").await;
    sim.phone(GUS, "Gus").await;
    let (s, b) = sim
        .admin_json(
            reqwest::Method::POST,
            &format!("/phones/{SHOP}/chats/{GUS}"),
            Some(json!({"pin": true, "mute": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    crate::e2e::pair(&app, "pre1", SHOP).await;
    let gus = format!("{GUS}@s.whatsapp.net");
    let updates = wait_for(LONG, "the phone's pin and mute", || async {
        let (_, b) = app.get_json("/api/events?sessionId=pre1&limit=500").await;
        let mine: Vec<Value> = b["events"]
            .as_array()?
            .iter()
            .filter(|e| e["event"] == "chat-updated" && e["data"]["chatId"] == gus.as_str())
            .cloned()
            .collect();
        let pinned = mine.iter().any(|e| e["data"]["pinned"] == true);
        let muted = mine.iter().any(|e| e["data"]["muted"] == true);
        (pinned && muted).then_some(mine)
    })
    .await;
    assert!(!updates.is_empty());
    app.stop().await;
}

/// Deleting for me, both ways: the API deletes a message for the account (gone from the
/// history, `message-deleted`, and the phone deletes it too), and what the phone deletes
/// for itself leaves the session's history the same way.
#[tokio::test]
async fn a_message_deleted_for_me_goes_from_the_history_and_from_the_phone() {
    const SHOP: &str = "15550004401";
    const IDA: &str = "15550004402";
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(SHOP, "Shop").await;
    sim.phone(IDA, "Ida").await;
    let mut hook = linked(&app, "del1", SHOP, &["message-deleted"]).await;
    let ida = format!("{IDA}@s.whatsapp.net");
    let first = sim.send(IDA, SHOP, "spam").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = sim.send(IDA, SHOP, "old news").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(LONG, "Ida's messages", || async {
        message(&app, "del1", &second).await.map(|_| ())
    })
    .await;

    let got = app
        .call_json(
            reqwest::Method::DELETE,
            &format!("/api/messages/del1/{first}?for=nobody"),
            None,
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    let (s, b) = app
        .call_json(
            reqwest::Method::DELETE,
            &format!("/api/messages/del1/{first}?for=me"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["id"], first.as_str(), "{b}");
    assert!(message(&app, "del1", &first).await.is_none());
    let ev = next_event(&mut hook, "message-deleted").await;
    assert_eq!(ev["data"]["id"], first.as_str(), "{ev}");
    assert_eq!(ev["data"]["chatId"], ida.as_str(), "{ev}");
    let got = app
        .call_json(
            reqwest::Method::DELETE,
            &format!("/api/messages/del1/{first}?for=me"),
            None,
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "message_not_found");
    // The phone read the patch: the message is deleted there too.
    wait_for(LONG, "the phone to delete it", || async {
        let (_, chats) = sim
            .admin_json(reqwest::Method::GET, &format!("/phones/{SHOP}/chats"), None)
            .await;
        chats[&ida]["deletedForMe"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|i| i == first.as_str()))
            .then_some(())
    })
    .await;

    // The phone deletes the other for itself: the session's history follows.
    let ev = phone_acts_until_heard(
        &app,
        &mut hook,
        &format!("/phones/{SHOP}/chats/{IDA}"),
        json!({"deleteForMe": [second]}),
        "message-deleted",
    )
    .await;
    assert_eq!(ev["data"]["id"], second.as_str(), "{ev}");
    assert!(message(&app, "del1", &second).await.is_none());
    app.stop().await;
}

/// Stars, both ways: the API stars a message (the phone shows it starred, `message-starred`,
/// history says `starred`), and the phone's unstar reaches the session's history.
#[tokio::test]
async fn a_message_is_starred_through_the_api_and_unstarred_on_the_phone() {
    const SHOP: &str = "15550004501";
    const JO: &str = "15550004502";
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    sim.phone(SHOP, "Shop").await;
    sim.phone(JO, "Jo").await;
    let mut hook = linked(&app, "star1", SHOP, &["message-starred"]).await;
    let jo = format!("{JO}@s.whatsapp.net");
    let id = sim.send(JO, SHOP, "remember me").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(LONG, "Jo's message", || async {
        message(&app, "star1", &id).await.map(|_| ())
    })
    .await;

    let star = |body: Value| {
        let app = &app;
        let path = format!("/api/messages/star1/{id}/star");
        async move { app.post_json(&path, body).await }
    };
    assert_error(
        &star(json!({"starred": "yes"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    let got = app
        .post_json("/api/messages/star1/NOPE/star", json!({"starred": true}))
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "message_not_found");
    let (s, b) = star(json!({"starred": true})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["starred"], true, "{b}");
    let ev = next_event(&mut hook, "message-starred").await;
    assert_eq!(ev["data"]["id"], id.as_str(), "{ev}");
    assert_eq!(ev["data"]["starred"], true, "{ev}");
    assert_eq!(message(&app, "star1", &id).await.unwrap()["starred"], true);
    wait_for(LONG, "the phone to show the star", || async {
        let (_, chats) = sim
            .admin_json(reqwest::Method::GET, &format!("/phones/{SHOP}/chats"), None)
            .await;
        (chats[&jo]["starred"] == json!([id])).then_some(())
    })
    .await;

    // The phone unstars it.
    let ev = phone_acts_until_heard(
        &app,
        &mut hook,
        &format!("/phones/{SHOP}/chats/{JO}"),
        json!({"unstar": [id]}),
        "message-starred",
    )
    .await;
    assert_eq!(ev["data"]["id"], id.as_str(), "{ev}");
    assert_eq!(ev["data"]["starred"], false, "{ev}");
    assert!(message(&app, "star1", &id).await.unwrap()["starred"] != true);
    app.stop().await;
}

/// The phone does `action` (an admin chat action at `path`) until the session's webhook
/// tells `event`, which it returns. whatsapp-rust skips a server_sync that comes while a sync
/// of its own runs, and then misses the patch until the next one: each try is a new patch.
async fn phone_acts_until_heard(
    app: &TestApp,
    hook: &mut Receiver,
    path: &str,
    action: Value,
    event: &str,
) -> Value {
    let sim = app.sim.as_ref().unwrap();
    for _ in 0..10 {
        let (s, b) = sim
            .admin_json(reqwest::Method::POST, path, Some(action.clone()))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        if let Ok(ev) = tokio::time::timeout(Duration::from_secs(5), next_event(hook, event)).await
        {
            return ev;
        }
    }
    panic!("the session never told {event} for the phone's {action}");
}
