//! Groups end to end against the simulator's group server, with three and more phones:
//! creating one from wamux, messages both ways under sender keys, participants, settings,
//! invite links, leaving, and the events each raises.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::e2e::pair;
use crate::helpers::{Sim, assert_error, wait_for};
use crate::messaging::{app, linked, next_event};

const ALICE: &str = "15550005001";
const BOB: &str = "15550005002";
const CAROL: &str = "15550005003";
const DAVE: &str = "15550005004";
const ERIN: &str = "15550005005";
const LONG: Duration = Duration::from_secs(60);

/// The server's truth about a group.
async fn server_group(sim: &Sim, gid: &str) -> Value {
    let (s, b) = sim
        .admin_json(Method::GET, &format!("/groups/{gid}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

fn members(g: &Value) -> Vec<String> {
    let mut m: Vec<String> = g["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phone"].as_str().unwrap().to_owned())
        .collect();
    m.sort();
    m
}

/// The group message `text` in `phone`'s list, once it is there.
async fn phone_got(sim: &Sim, phone: &str, gid: &str, text: &str) -> Value {
    wait_for(
        LONG,
        &format!("{phone} to get {text:?} in the group"),
        || async {
            sim.messages(phone)
                .await
                .into_iter()
                .find(|m| m["to"] == gid && m["text"] == text)
        },
    )
    .await
}

#[tokio::test]
async fn a_group_created_from_wamux_carries_messages_both_ways() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    for (p, n) in [
        (ALICE, "Alice"),
        (BOB, "Bob"),
        (CAROL, "Carol"),
        (DAVE, "Dave"),
    ] {
        sim.phone(p, n).await;
    }
    // Dave lets nobody add him to groups.
    let (s, b) = sim
        .admin_json(
            Method::POST,
            &format!("/phones/{DAVE}/profile"),
            Some(json!({"privacy": {"groupadd": "none"}})),
        )
        .await;
    assert!(s.is_success(), "{b}");
    let mut hook = linked(
        &app,
        "g1",
        ALICE,
        &[
            "message-received",
            "group-joined",
            "message-delivered",
            "message-read",
            "poll-vote",
        ],
    )
    .await;

    // Bad requests are refused before WhatsApp is asked.
    for (body, code) in [
        (json!({"subject": ""}), "invalid_field"),
        (json!({"subject": "x".repeat(101)}), "invalid_field"),
        (
            json!({"subject": "ok", "participants": ["12"]}),
            "invalid_field",
        ),
        (
            json!({"subject": "ok", "participants": ["1203630@g.us"]}),
            "invalid_field",
        ),
        (json!({"subject": "ok", "extra": 1}), "invalid_body"),
    ] {
        let got = app.post_json("/api/sessions/g1/groups", body).await;
        assert_error(&got, StatusCode::BAD_REQUEST, code);
    }

    let (s, created) = app
        .post_json(
            "/api/sessions/g1/groups",
            json!({"subject": "Team", "participants": [BOB, format!("{CAROL}@c.us"), DAVE, "15550009999"],
                   "description": "where we plan"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let gid = created["group"]["id"].as_str().unwrap().to_owned();
    assert!(gid.ends_with("@g.us"), "{created}");
    assert_eq!(created["group"]["subject"], "Team");
    assert_eq!(created["group"]["description"], "where we plan");
    let results = created["results"].as_array().unwrap();
    let status_of = |phone: &str| {
        results
            .iter()
            .find(|r| r["phone"] == phone)
            .map(|r| r["status"].as_u64().unwrap())
    };
    assert_eq!(status_of(BOB), Some(200), "{created}");
    assert_eq!(status_of(CAROL), Some(200), "{created}");
    assert_eq!(status_of(DAVE), Some(403), "Dave refuses adds: {created}");
    assert_eq!(
        status_of("15550009999"),
        Some(404),
        "no such account: {created}"
    );
    let me = created["group"]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phone"] == ALICE)
        .cloned()
        .unwrap();
    assert_eq!(me["superAdmin"], true, "{created}");
    // The server agrees on who is in it.
    let g = server_group(sim, &gid).await;
    assert_eq!(members(&g), vec![ALICE, BOB, CAROL]);
    assert_eq!(g["creator"], ALICE);
    // We created one: group-joined.
    let joined = next_event(&mut hook, "group-joined").await;
    assert_eq!(joined["data"]["groupId"], gid.as_str());

    // wamux writes in the group; both members read it.
    let (s, sent) = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "g1", "to": gid, "text": "hello team"}),
        )
        .await;
    assert!(s.is_success(), "{sent}");
    let at_bob = phone_got(sim, BOB, &gid, "hello team").await;
    assert_eq!(at_bob["from"], ALICE);
    phone_got(sim, CAROL, &gid, "hello team").await;
    // A delivery receipt from each of them, naming who; then Bob reads it.
    let mut delivered_by = Vec::new();
    while delivered_by.len() < 2 {
        let ev = next_event(&mut hook, "message-delivered").await;
        assert_eq!(ev["data"]["id"], sent["id"], "{ev}");
        delivered_by.push(
            ev["data"]["by"]
                .as_str()
                .unwrap_or_else(|| panic!("{ev}"))
                .to_owned(),
        );
    }
    delivered_by.sort();
    assert_eq!(
        delivered_by,
        vec![
            format!("{BOB}@s.whatsapp.net"),
            format!("{CAROL}@s.whatsapp.net")
        ]
    );
    sim.read(BOB, &[at_bob["id"].as_str().unwrap()]).await;
    let ev = next_event(&mut hook, "message-read").await;
    assert_eq!(ev["data"]["by"], format!("{BOB}@s.whatsapp.net"), "{ev}");
    assert_eq!(ev["data"]["status"], "read");
    let (s, r) = app
        .get_json(&format!(
            "/api/messages/g1/{}/receipts",
            sent["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let receipts = r["receipts"].as_array().unwrap().clone();
    assert_eq!(receipts.len(), 2, "{r}");
    let got = app.get_json("/api/messages/g1/3EB0NOSUCHID/receipts").await;
    assert_error(&got, StatusCode::NOT_FOUND, "message_not_found");
    let of = |who: &str| {
        receipts
            .iter()
            .find(|r| r["participant"] == format!("{who}@s.whatsapp.net"))
            .map(|r| r["status"].clone())
    };
    assert_eq!(of(BOB), Some(json!("read")), "{ev}");
    assert_eq!(of(CAROL), Some(json!("delivered")), "{ev}");
    // Dave is not in it and has nothing.
    assert!(
        sim.messages(DAVE)
            .await
            .iter()
            .all(|m| m["to"] != gid.as_str()),
        "Dave got a message of a group he is not in"
    );

    // Mentions: ours reach the phones; bad ones are refused.
    let got = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "g1", "to": gid, "text": "@Bob?", "mentions": ["12"]}),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    let got = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "g1", "to": gid, "text": "@Bob?", "mentions": BOB}),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    let (s, sent) = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "g1", "to": gid, "text": "@Bob can you?", "mentions": [BOB]}),
        )
        .await;
    assert!(s.is_success(), "{sent}");
    assert_eq!(
        sent["mentions"],
        json!([format!("{BOB}@s.whatsapp.net")]),
        "{sent}"
    );
    let at_bob = phone_got(sim, BOB, &gid, "@Bob can you?").await;
    assert_eq!(at_bob["mentions"], json!([BOB]), "{at_bob}");

    // Bob answers in the group: the webhook names him as the participant.
    let bob_msg = sim
        .send_json(
            BOB,
            &json!({"to": gid, "text": "hi Alice", "mentions": [ALICE]}),
        )
        .await;
    let got = next_event(&mut hook, "message-received").await;
    let m = &got["data"];
    assert_eq!(m["id"], bob_msg["id"], "{got}");
    assert_eq!(m["chatId"], gid.as_str(), "{got}");
    assert_eq!(m["text"], "hi Alice");
    assert_eq!(m["participant"], format!("{BOB}@s.whatsapp.net"), "{got}");
    assert_eq!(
        m["mentions"],
        json!([format!("{ALICE}@s.whatsapp.net")]),
        "{got}"
    );
    assert_eq!(m["fromMe"], false);
    // Carol got Bob's message too (phone to phone, under Bob's sender key).
    let at_carol = phone_got(sim, CAROL, &gid, "hi Alice").await;
    assert_eq!(at_carol["from"], BOB);
    // And it is in the group's history.
    let (s, h) = app
        .get_json(&format!("/api/messages/g1?chatId={gid}&limit=50"))
        .await;
    assert_eq!(s, StatusCode::OK, "{h}");
    let texts: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(
        texts.contains(&"hello team") && texts.contains(&"hi Alice"),
        "{h}"
    );

    // A reply to Bob, a file and a poll go to the group too; Carol votes.
    let (s, reply) = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "g1", "to": gid, "text": "agreed", "quotedId": bob_msg["id"]}),
        )
        .await;
    assert!(s.is_success(), "{reply}");
    use base64::Engine as _;
    let pdf = b"%PDF-1.4 the plan".to_vec();
    let (s, media) = app
        .post_json(
            "/api/send-media",
            json!({"sessionId": "g1", "to": gid, "mimetype": "application/pdf", "fileName": "plan.pdf",
                   "base64": base64::engine::general_purpose::STANDARD.encode(&pdf)}),
        )
        .await;
    assert!(s.is_success(), "{media}");
    let (s, poll) = app
        .post_json(
            "/api/send-poll",
            json!({"sessionId": "g1", "to": gid, "question": "When?", "options": ["Mon", "Tue"]}),
        )
        .await;
    assert!(s.is_success(), "{poll}");
    phone_got(sim, BOB, &gid, "agreed").await;
    let (file, poll) = wait_for(LONG, "the file and the poll at Bob's phone", || async {
        let msgs = sim.messages(BOB).await;
        let file = msgs
            .iter()
            .find(|m| m["to"] == gid.as_str() && m["media"]["fileName"] == "plan.pdf")
            .cloned()?;
        let poll = msgs
            .iter()
            .find(|m| m["to"] == gid.as_str() && m["poll"]["question"] == "When?")
            .cloned()?;
        Some((file, poll))
    })
    .await;
    assert_eq!(file["media"]["size"], pdf.len(), "{file}");
    assert!(file["media"]["error"].is_null(), "{file}");
    sim.send_json(
        CAROL,
        &json!({"to": gid, "vote": {"messageId": poll["id"], "options": ["Tue"]}}),
    )
    .await;
    let ev = next_event(&mut hook, "poll-vote").await;
    assert_eq!(ev["data"]["vote"]["options"], json!(["Tue"]), "{ev}");

    // The group as wamux reads it, and in the list.
    let (s, info) = app
        .get_json(&format!("/api/sessions/g1/groups/{gid}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{info}");
    assert_eq!(info["participants"].as_array().unwrap().len(), 3, "{info}");
    let bare = gid.trim_end_matches("@g.us");
    let (s, same) = app
        .get_json(&format!("/api/sessions/g1/groups/{bare}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{same}");
    assert_eq!(same["id"], info["id"]);
    let (s, list) = app.get_json("/api/sessions/g1/groups").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == gid.as_str()),
        "{list}"
    );
    let got = app
        .get_json("/api/sessions/g1/groups/120363000000000000")
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "group_not_found");
    let got = app.get_json("/api/sessions/g1/groups/not-a-group!").await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
}

#[tokio::test]
async fn participants_settings_and_invites_follow_whatsapps_rules() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    for (p, n) in [
        (ALICE, "Alice"),
        (BOB, "Bob"),
        (CAROL, "Carol"),
        (DAVE, "Dave"),
        (ERIN, "Erin"),
    ] {
        sim.phone(p, n).await;
    }
    let mut hook = linked(
        &app,
        "g2",
        ALICE,
        &[
            "group-participants",
            "group-updated",
            "group-joined",
            "message-received",
        ],
    )
    .await;
    let (s, created) = app
        .post_json(
            "/api/sessions/g2/groups",
            json!({"subject": "Club", "participants": [BOB, CAROL]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let gid = created["group"]["id"].as_str().unwrap().to_owned();
    let path = |rest: &str| format!("/api/sessions/g2/groups/{gid}{rest}");

    // Bob writes first, so he has given his sender key to the members of the time.
    sim.send_json(BOB, &json!({"to": gid, "text": "before Dave"}))
        .await;
    phone_got(sim, CAROL, &gid, "before Dave").await;

    // Add Dave (ok) and Carol (already in); promote Bob; remove nobody-in-the-group.
    let (s, added) = app
        .post_json(
            &path("/participants"),
            json!({"action": "add", "participants": [DAVE, CAROL]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{added}");
    let res = added["results"].as_array().unwrap();
    let of = |phone: &str| res.iter().find(|r| r["phone"] == phone).unwrap().clone();
    assert_eq!(of(DAVE)["status"], 200, "{added}");
    assert_eq!(of(CAROL)["status"], 409, "{added}");
    assert_eq!(of(CAROL)["error"], "already_participant");
    let (s, promoted) = app
        .post_json(
            &path("/participants"),
            json!({"action": "promote", "participants": [BOB]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{promoted}");
    let (s, removed) = app
        .post_json(
            &path("/participants"),
            json!({"action": "remove", "participants": [ERIN]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{removed}");
    assert_eq!(removed["results"][0]["status"], 404, "{removed}");
    let got = app
        .post_json(
            &path("/participants"),
            json!({"action": "kick", "participants": [BOB]}),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_body");
    let got = app
        .post_json(
            &path("/participants"),
            json!({"action": "add", "participants": []}),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    let g = server_group(sim, &gid).await;
    assert_eq!(members(&g), vec![ALICE, BOB, CAROL, DAVE]);
    let bob = g["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phone"] == BOB)
        .unwrap()
        .clone();
    assert_eq!(bob["role"], "admin");

    // Dave, added later, reads what is written from now on but not what came before.
    sim.send_json(BOB, &json!({"to": gid, "text": "after Dave"}))
        .await;
    phone_got(sim, DAVE, &gid, "after Dave").await;
    assert!(
        sim.messages(DAVE)
            .await
            .iter()
            .all(|m| m["text"] != "before Dave"),
        "Dave read a message from before he joined"
    );

    // Bob (an admin) changes the subject: group-updated, by Bob.
    let (s, b) = sim
        .admin_json(
            Method::PATCH,
            &format!("/groups/{gid}"),
            Some(json!({"by": BOB, "subject": "Book club"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let ev = next_event(&mut hook, "group-updated").await;
    assert_eq!(ev["data"]["groupId"], gid.as_str(), "{ev}");
    assert_eq!(ev["data"]["field"], "subject");
    assert_eq!(ev["data"]["value"], "Book club");
    assert_eq!(ev["data"]["by"], format!("{BOB}@s.whatsapp.net"));

    // Pictures: a phone sets one (group-updated, field picture); we read it, set ours, remove it.
    let jpeg = {
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xE0];
        j.extend(b"a group picture");
        j
    };
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&jpeg);
    let got = app.get_json(&path("/picture")).await;
    assert_error(&got, StatusCode::NOT_FOUND, "picture_not_found");
    let (s, b) = sim
        .admin_json(
            Method::PATCH,
            &format!("/groups/{gid}"),
            Some(json!({"by": BOB, "picture": b64})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let ev = next_event(&mut hook, "group-updated").await;
    assert_eq!(ev["data"]["field"], "picture", "{ev}");
    assert_eq!(ev["data"]["value"], b["picture"], "{ev}");
    let (s, pic) = app.get_json(&path("/picture")).await;
    assert_eq!(s, StatusCode::OK, "{pic}");
    assert_eq!(pic["id"], b["picture"], "{pic}");
    let bytes = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(sim.inner.ca_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap()
        .get(pic["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], &jpeg[..], "the picture's URL serves it");
    for (body, code) in [
        (json!({"image": "not base64!"}), "invalid_field"),
        (
            json!({"image": base64::engine::general_purpose::STANDARD.encode(b"GIF89a")}),
            "invalid_field",
        ),
        (json!({}), "invalid_body"),
    ] {
        let got = app
            .call_json(Method::PUT, &path("/picture"), Some(body))
            .await;
        assert_error(&got, StatusCode::BAD_REQUEST, code);
    }
    let (s, set) = app
        .call_json(Method::PUT, &path("/picture"), Some(json!({"image": b64})))
        .await;
    assert_eq!(s, StatusCode::OK, "{set}");
    assert!(set["id"].is_string(), "{set}");
    assert_eq!(server_group(sim, &gid).await["picture"], set["id"]);
    let (s, _) = app.call_json(Method::DELETE, &path("/picture"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(server_group(sim, &gid).await["picture"].is_null());

    // Our own settings change: announce mode, then only admins may write.
    let (s, info) = app
        .call_json(
            Method::PATCH,
            &path(""),
            Some(json!({"announce": true, "description": "books only"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{info}");
    assert_eq!(info["settings"]["announce"], true, "{info}");
    assert_eq!(info["description"], "books only");
    let got = app
        .call_json(Method::PATCH, &path(""), Some(json!({"ephemeral": 5})))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    let got = app
        .call_json(Method::PATCH, &path(""), Some(json!({})))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "missing_field");
    let (s, refused) = sim
        .admin_json(
            Method::POST,
            &format!("/phones/{CAROL}/messages"),
            Some(json!({"to": gid, "text": "can I?"})),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "a member writes in an announcement group: {refused}"
    );

    // Carol removes Alice? She is no admin: refused by WhatsApp, and wamux says so.
    let (s, b) = sim
        .admin_json(
            Method::POST,
            &format!("/groups/{gid}/participants"),
            Some(json!({"by": CAROL, "action": "remove", "participants": [ALICE]})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");

    // Alice removes Carol: group-participants; Carol gets nothing more.
    let (s, removed) = app
        .post_json(
            &path("/participants"),
            json!({"action": "remove", "participants": [CAROL]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{removed}");
    assert_eq!(removed["results"][0]["status"], 200, "{removed}");
    let g = server_group(sim, &gid).await;
    assert_eq!(members(&g), vec![ALICE, BOB, DAVE]);
    let (s, sent) = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "g2", "to": gid, "text": "without Carol"}),
        )
        .await;
    assert!(s.is_success(), "{sent}");
    phone_got(sim, BOB, &gid, "without Carol").await;
    phone_got(sim, DAVE, &gid, "without Carol").await;
    assert!(
        sim.messages(CAROL)
            .await
            .iter()
            .all(|m| m["text"] != "without Carol"),
        "Carol read a message after she was removed"
    );

    // The invite link: Erin joins by it; a revoked link no longer works.
    let (s, link) = app.get_json(&path("/invite-link")).await;
    assert_eq!(s, StatusCode::OK, "{link}");
    let code = link["code"].as_str().unwrap().to_owned();
    assert!(link["link"].as_str().unwrap().ends_with(&code), "{link}");
    let (s, j) = sim
        .admin_json(
            Method::POST,
            "/groups/join",
            Some(json!({"phone": ERIN, "code": code})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    let ev = next_event(&mut hook, "group-participants").await;
    let ev = if ev["data"]["participants"][0] == format!("{ERIN}@s.whatsapp.net") {
        ev
    } else {
        // The earlier changes came first.
        loop {
            let e = next_event(&mut hook, "group-participants").await;
            if e["data"]["participants"][0] == format!("{ERIN}@s.whatsapp.net") {
                break e;
            }
        }
    };
    assert_eq!(ev["data"]["action"], "add", "{ev}");
    let (s, new_link) = app
        .call_json(Method::DELETE, &path("/invite-link"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{new_link}");
    assert_ne!(new_link["code"], code.as_str());
    let (s, j) = sim
        .admin_json(
            Method::POST,
            "/groups/join",
            Some(json!({"phone": CAROL, "code": code})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "an old code: {j}");

    // Leaving: the server no longer has us; reading the group is refused.
    let (s, left) = app.post_json(&path("/leave"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{left}");
    let g = server_group(sim, &gid).await;
    assert!(!members(&g).contains(&ALICE.to_owned()), "{g}");
    let got = app.get_json(&path("")).await;
    assert_error(&got, StatusCode::FORBIDDEN, "not_a_participant");
    let got = app
        .post_json(
            "/api/sessions/g2/groups/join",
            json!({"code": "not a code"}),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    let got = app
        .post_json(
            "/api/sessions/g2/groups/join",
            json!({"code": "AAAAAAAAAAAAAAAAAAAAAA"}),
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "invite_not_found");
    // And back by the new link.
    let (s, j) = app
        .post_json(
            "/api/sessions/g2/groups/join",
            json!({"code": new_link["link"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["status"], "joined");
    assert_eq!(j["groupId"], gid.as_str());
}

#[tokio::test]
async fn a_group_a_phone_creates_reaches_wamux_and_lid_groups_work_too() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    for (p, n) in [(ALICE, "Alice"), (BOB, "Bob"), (CAROL, "Carol")] {
        sim.phone(p, n).await;
    }
    let mut hook = linked(&app, "g3", ALICE, &["group-joined", "message-received"]).await;
    for addressing in ["pn", "lid"] {
        let (s, g) = sim
            .admin_json(
                Method::POST,
                "/groups",
                Some(
                    json!({"creator": BOB, "subject": format!("Bob's {addressing}"),
                            "participants": [ALICE, CAROL], "addressing": addressing}),
                ),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{g}");
        let gid = g["jid"].as_str().unwrap().to_owned();
        let joined = next_event(&mut hook, "group-joined").await;
        assert_eq!(joined["data"]["groupId"], gid.as_str(), "{joined}");
        assert_eq!(joined["data"]["subject"], format!("Bob's {addressing}"));

        let text = format!("welcome ({addressing})");
        sim.send_json(BOB, &json!({"to": gid, "text": text})).await;
        let got = next_event(&mut hook, "message-received").await;
        assert_eq!(got["data"]["chatId"], gid.as_str(), "{got}");
        assert_eq!(got["data"]["text"], text.as_str());
        assert_eq!(
            got["data"]["fromPn"],
            format!("{BOB}@s.whatsapp.net"),
            "{got}"
        );

        // wamux answers in it; Bob and Carol read it.
        let answer = format!("thanks ({addressing})");
        let (s, sent) = app
            .post_json(
                "/api/send-message",
                json!({"sessionId": "g3", "to": gid, "text": answer}),
            )
            .await;
        assert!(s.is_success(), "{sent}");
        phone_got(sim, BOB, &gid, &answer).await;
        phone_got(sim, CAROL, &gid, &answer).await;
        // Other kinds go to groups the same way: a reaction to Bob's message, a location.
        let (s, r) = app
            .post_json(
                "/api/send-reaction",
                json!({"sessionId": "g3", "messageId": got["data"]["id"], "emoji": "🎉"}),
            )
            .await;
        assert!(s.is_success(), "{r}");
        let (s, l) = app
            .post_json(
                "/api/send-location",
                json!({"sessionId": "g3", "to": gid, "latitude": 52.52, "longitude": 13.405, "name": "here"}),
            )
            .await;
        assert!(s.is_success(), "{l}");
        wait_for(
            LONG,
            "the reaction and the location at Carol's phone",
            || async {
                let msgs = sim.messages(CAROL).await;
                let reacted = msgs
                    .iter()
                    .any(|m| m["id"] == got["data"]["id"] && m["reactions"][ALICE] == "🎉");
                let located = msgs
                    .iter()
                    .any(|m| m["to"] == gid.as_str() && m["location"]["name"] == "here");
                (reacted && located).then_some(())
            },
        )
        .await;
        let (s, info) = app
            .get_json(&format!("/api/sessions/g3/groups/{gid}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{info}");
        assert_eq!(info["addressing"], addressing, "{info}");
        let phones: Vec<&str> = info["participants"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["phone"].as_str())
            .collect();
        assert!(phones.contains(&BOB) && phones.contains(&ALICE), "{info}");
        assert!(
            info["participants"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["lid"].is_string()),
            "{info}"
        );
    }
}

#[tokio::test]
async fn the_ignore_setting_drops_group_traffic_but_not_direct_chats() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    for (p, n) in [(ALICE, "Alice"), (BOB, "Bob"), (CAROL, "Carol")] {
        sim.phone(p, n).await;
    }
    let mut hook = linked(&app, "g4", ALICE, &["message-received"]).await;
    let (s, g) = sim
        .admin_json(
            Method::POST,
            "/groups",
            Some(json!({"creator": BOB, "subject": "Noisy", "participants": [ALICE, CAROL]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    let gid = g["jid"].as_str().unwrap().to_owned();

    let (s, st) = app.get_json("/api/sessions/g4/settings").await;
    assert_eq!(s, StatusCode::OK, "{st}");
    let off = json!({"intervalMs": 0, "jitterMs": 0, "typing": false, "dailyCap": null});
    assert_eq!(st, json!({"ignore": [], "pacing": off}));
    for bad in [
        json!({"ignore": ["everything"]}),
        json!({"ignore": "groups"}),
        json!({"mute": []}),
    ] {
        let got = app
            .call_json(Method::PUT, "/api/sessions/g4/settings", Some(bad))
            .await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_body");
    }
    let got = app
        .call_json(
            Method::PUT,
            "/api/sessions/nobody/settings",
            Some(json!({"ignore": ["groups"]})),
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
    let (s, st) = app
        .call_json(
            Method::PUT,
            "/api/sessions/g4/settings",
            Some(json!({"ignore": ["groups", "status"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{st}");
    assert_eq!(st, json!({"ignore": ["groups", "status"], "pacing": off}));

    // Bob writes in the group, then to Alice directly: only the direct one comes through.
    let dropped = sim
        .send_json(BOB, &json!({"to": gid, "text": "group chatter"}))
        .await;
    sim.send(BOB, ALICE, "just to you").await;
    let got = next_event(&mut hook, "message-received").await;
    assert_eq!(got["data"]["text"], "just to you", "{got}");
    // The group message was acknowledged all the same: Bob's phone saw it delivered.
    wait_for(LONG, "Bob's group message delivered", || async {
        sim.messages(BOB)
            .await
            .into_iter()
            .find(|m| m["id"] == dropped["id"] && m["status"] == "delivered")
    })
    .await;
    let (s, h) = app
        .get_json(&format!("/api/messages/g4?chat={gid}&limit=50"))
        .await;
    assert_eq!(s, StatusCode::OK, "{h}");
    assert_eq!(h["messages"].as_array().unwrap().len(), 0, "{h}");

    // Taken back: group messages come through again.
    let (s, st) = app
        .call_json(
            Method::PUT,
            "/api/sessions/g4/settings",
            Some(json!({"ignore": []})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{st}");
    sim.send_json(CAROL, &json!({"to": gid, "text": "anyone?"}))
        .await;
    let got = next_event(&mut hook, "message-received").await;
    assert_eq!(got["data"]["text"], "anyone?", "{got}");
    assert_eq!(got["data"]["chatId"], gid.as_str());
}

#[tokio::test]
async fn communities_hold_groups_linked_and_unlinked_by_their_admins() {
    let app = app().await;
    let sim = app.sim.as_ref().unwrap();
    for (p, n) in [(ALICE, "Alice"), (BOB, "Bob"), (CAROL, "Carol")] {
        sim.phone(p, n).await;
    }
    pair(&app, "g5", ALICE).await;
    let got = app
        .post_json("/api/sessions/g5/communities", json!({"subject": " "}))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    let (s, c) = app
        .post_json(
            "/api/sessions/g5/communities",
            json!({"subject": "Neighbours", "description": "the street"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["community"], true, "{c}");
    let cid = c["id"].as_str().unwrap().to_owned();
    let (s, list) = app.get_json("/api/sessions/g5/communities").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], cid.as_str());

    // It comes with its announcement group (first) and a general chat.
    let path = format!("/api/sessions/g5/communities/{cid}/groups");
    let (s, groups) = app.get_json(&path).await;
    assert_eq!(s, StatusCode::OK, "{groups}");
    let groups = groups.as_array().unwrap().clone();
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(groups[0]["announcementGroup"], true, "{groups:?}");
    assert!(
        groups.iter().all(|g| g["parent"] == cid.as_str()),
        "{groups:?}"
    );

    // A group made in the community, one linked afterwards, one that is not ours to link.
    let (s, inside) = app
        .post_json(
            "/api/sessions/g5/groups",
            json!({"subject": "Parking", "participants": [BOB], "community": cid}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{inside}");
    assert_eq!(inside["group"]["parent"], cid.as_str(), "{inside}");
    let (s, plain) = app
        .post_json(
            "/api/sessions/g5/groups",
            json!({"subject": "Garden", "participants": [CAROL]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{plain}");
    let garden = plain["group"]["id"].as_str().unwrap().to_owned();
    let (s, bobs) = sim
        .admin_json(
            Method::POST,
            "/groups",
            Some(json!({"creator": BOB, "subject": "Bob's", "participants": [ALICE]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{bobs}");
    let bobs = bobs["jid"].as_str().unwrap().to_owned();
    let (s, linked) = app
        .post_json(
            &path,
            json!({"groups": [garden, bobs, "120363000000000001"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{linked}");
    let status = |gid: &str| {
        linked["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["groupId"] == gid)
            .map(|r| r["status"].as_u64().unwrap())
    };
    assert_eq!(status(&garden), Some(200), "{linked}");
    assert_eq!(status(&bobs), Some(401), "not our group to link: {linked}");
    assert_eq!(status("120363000000000001@g.us"), Some(404), "{linked}");
    let server = server_group(sim, &cid).await;
    let linked_there: Vec<&str> = server["linkedGroups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g.as_str())
        .collect();
    assert!(linked_there.contains(&garden.as_str()), "{server}");
    assert!(!linked_there.contains(&bobs.as_str()), "{server}");
    // Carol, in the garden group, is now a member of the community.
    assert!(members(&server).contains(&CAROL.to_owned()), "{server}");
    let (s, groups) = app.get_json(&path).await;
    assert_eq!(s, StatusCode::OK, "{groups}");
    assert_eq!(groups.as_array().unwrap().len(), 4, "{groups}");

    // Unlinked again; the announcement group cannot be.
    let (s, un) = app
        .call_json(Method::DELETE, &format!("{path}/{garden}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{un}");
    assert_eq!(un["results"][0]["status"], 200, "{un}");
    let ann = groups[0]["id"].as_str().unwrap().to_owned();
    let (s, un) = app
        .call_json(Method::DELETE, &format!("{path}/{ann}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{un}");
    assert_eq!(un["results"][0]["status"], 406, "{un}");
    let server = server_group(sim, &garden).await;
    assert!(server["parent"].is_null(), "{server}");
    // A plain group is no community.
    let got = app
        .get_json(&format!("/api/sessions/g5/communities/{garden}/groups"))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_group_request");
}
