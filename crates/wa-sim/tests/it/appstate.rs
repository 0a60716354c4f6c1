//! App state between a phone and its companions, over real sockets: what the phone's user
//! pins, mutes or names reaches every linked device as a patch it verifies and decrypts,
//! and what a companion archives reaches the other companion and the phone.

use serde_json::json;
use wacore_binary::Jid;
use whatsapp_rust::wacore::types::events::Event;

use crate::support::{TestSim, paired_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_actions_reach_every_device_of_the_account() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550920001").await;
    let (mut a, _) = paired_client(&sim, &alice, "alice-a").await;
    let (mut b, _) = paired_client(&sim, &alice, "alice-b").await;
    let bob: Jid = "15550920002@s.whatsapp.net".parse().unwrap();
    let carol: Jid = "15550920003@s.whatsapp.net".parse().unwrap();

    // Right after linking, a companion may still be in the app-state sync it started on
    // its own; whatsapp-rust skips a server_sync that comes meanwhile (that sync is taken to
    // cover it) and can miss the patch until the next one. So first one patch that both
    // companions see: from then on each notification starts a sync of its own.
    // That first patch is sent again (a new version, a new notification) until both have it.
    let zed: Jid = "15550920009@s.whatsapp.net".parse().unwrap();
    let mut low = 0;
    for client in [&mut a, &mut b] {
        let mut seen = false;
        for _ in 0..10 {
            let (status, body) = sim
                .post(
                    "/phones/15550920001/chats/15550920009",
                    json!({"pin": true}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            low = body["collections"]["regular_low"].as_u64().unwrap();
            let first = client.wait_for("the first pin", |e| match e {
                Event::PinUpdate(u) if u.jid == zed => Some(()),
                _ => None,
            });
            if tokio::time::timeout(std::time::Duration::from_secs(3), first)
                .await
                .is_ok()
            {
                seen = true;
                break;
            }
        }
        assert!(seen, "a companion never got the first pin");
    }

    // The phone pins, mutes and names Bob's chat.
    let (status, body) = sim
        .post(
            "/phones/15550920001/chats/15550920002",
            json!({"pin": true, "mute": true, "name": "Bob Builder"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["state"],
        json!({"pinned": true, "archived": false, "muted": true, "name": "Bob Builder", "markedUnread": false})
    );
    assert_eq!(body["collections"]["regular_low"], low + 1);
    // regular_high already holds the NCT salt the phone shared when the account was made.
    assert_eq!(body["collections"]["regular_high"], 2);
    assert_eq!(body["collections"]["critical_unblock_low"], 1);

    // The three come from three collections, in whatever order the client syncs them.
    for client in [&mut a, &mut b] {
        enum Seen {
            Pin(Option<bool>),
            Mute(Option<bool>),
            Name(Option<String>),
        }
        let (mut pinned, mut muted, mut name) = (None, None, None);
        let mut tries = 0;
        while pinned.is_none() || muted.is_none() || name.is_none() {
            let seen = client.wait_for("the pin, the mute and the name", |e| match e {
                Event::PinUpdate(u) if u.jid == bob => Some(Seen::Pin(u.action.pinned)),
                Event::MuteUpdate(u) if u.jid == bob => Some(Seen::Mute(u.action.muted)),
                Event::ContactUpdate(u) if u.jid == bob => {
                    Some(Seen::Name(u.action.full_name.clone()))
                }
                _ => None,
            });
            let Ok(seen) = tokio::time::timeout(std::time::Duration::from_secs(3), seen).await
            else {
                // Skipped behind a sync of its own (see above): the phone does it again.
                tries += 1;
                assert!(
                    tries < 10,
                    "a companion never got the pin, the mute and the name"
                );
                let (status, body) = sim
                    .post(
                        "/phones/15550920001/chats/15550920002",
                        json!({"pin": true, "mute": true, "name": "Bob Builder"}),
                    )
                    .await;
                assert_eq!(status, 200, "{body}");
                continue;
            };
            match seen {
                Seen::Pin(v) => pinned = Some(v),
                Seen::Mute(v) => muted = Some(v),
                Seen::Name(v) => name = Some(v),
            }
        }
        assert_eq!(pinned, Some(Some(true)));
        assert_eq!(muted, Some(Some(true)));
        assert_eq!(name, Some(Some("Bob Builder".to_string())));
    }

    // A companion archives Carol's chat: the server takes its patch, the other companion
    // gets it, and the phone reads it (its MACs and encryption are right).
    a.client
        .chat_actions()
        .archive_chat(&carol, None)
        .await
        .expect("the server takes the patch");
    let mut archived = None;
    for _ in 0..10 {
        let seen = b.wait_for("the archive", |e| match e {
            Event::ArchiveUpdate(u) if u.jid == carol => Some(u.action.archived),
            _ => None,
        });
        if let Ok(v) = tokio::time::timeout(std::time::Duration::from_secs(3), seen).await {
            archived = Some(v);
            break;
        }
        // Skipped behind a sync of its own: the companion archives again.
        a.client
            .chat_actions()
            .archive_chat(&carol, None)
            .await
            .expect("the server takes the patch");
    }
    let archived = archived.expect("the other companion never got the archive");
    assert_eq!(archived, Some(true));
    let (_, chats) = sim.get("/phones/15550920001/chats").await;
    assert_eq!(
        chats["15550920003@s.whatsapp.net"]["archived"], true,
        "{chats}"
    );
    assert_eq!(
        chats["15550920002@s.whatsapp.net"]["pinned"], true,
        "{chats}"
    );

    // The phone unpins, after the companion's patch: its own builds on it.
    let mut unpinned = false;
    for _ in 0..10 {
        let (status, body) = sim
            .post(
                "/phones/15550920001/chats/15550920002",
                json!({"pin": false}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["collections"]["regular_low"].as_u64().unwrap() > low + 1,
            "{body}"
        );
        // Seen by the companion that did not write (the writer re-syncs after its patch).
        let seen = b.wait_for("the unpin", |e| match e {
            Event::PinUpdate(u) if u.jid == bob && u.action.pinned == Some(false) => Some(()),
            _ => None,
        });
        if tokio::time::timeout(std::time::Duration::from_secs(3), seen)
            .await
            .is_ok()
        {
            unpinned = true;
            break;
        }
    }
    assert!(unpinned, "the other companion never got the unpin");

    // Bad requests change nothing.
    let (status, body) = sim
        .post("/phones/15550920001/chats/15550920002", json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_action"))
    );
    let (status, body) = sim
        .post("/phones/15550920001/chats/15550920002", json!({"mute": 5}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_action"))
    );
    let (status, _) = sim
        .post(
            "/phones/15550920009/chats/15550920002",
            json!({"pin": true}),
        )
        .await;
    assert_eq!(status, 404);

    a.stop().await;
    b.stop().await;
}

/// The owner renames the account and changes its about text: its companions learn the new
/// push name by app state (`setting_pushName`), the people it chats with get the about
/// text as a `status` notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_name_reaches_the_companions_and_a_new_about_the_contacts() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550920011").await;
    let bob = sim.phone("15550920012").await;
    let (mut a, _) = paired_client(&sim, &alice, "alice-name").await;
    let (mut b, _) = paired_client(&sim, &bob, "bob-name").await;
    bob.send_text("15550920011", "hi").await;

    let (status, body) = sim
        .post(
            "/phones/15550920011/profile",
            json!({"name": "Alice Two", "about": "at the gym"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "Alice Two");

    let renamed = a
        .wait_for("the new push name", |e| match e {
            Event::SelfPushNameUpdated(u) => Some(u.new_name.clone()),
            _ => None,
        })
        .await;
    assert_eq!(renamed, "Alice Two");
    let about = b
        .wait_for("alice's about text", |e| match e {
            Event::UserAboutUpdate(u) => Some((u.jid.user.to_string(), u.status.clone())),
            _ => None,
        })
        .await;
    assert_eq!(about, ("15550920011".to_string(), "at the gym".to_string()));

    let (status, body) = sim
        .post("/phones/15550920011/profile", json!({"name": " "}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_name"))
    );
    a.stop().await;
    b.stop().await;
}

/// Stars and deletions for me, both ways: what the phone stars or deletes for itself
/// reaches a companion as app state it verifies, and what the companion stars the phone
/// reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stars_and_deletions_for_me_sync_between_the_phone_and_its_companions() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550921001").await;
    let bob = sim.phone("15550921002").await;
    let (mut a, _) = paired_client(&sim, &alice, "alice-a").await;
    let bob_jid: Jid = "15550921002@s.whatsapp.net".parse().unwrap();
    let first = bob.send_text(&alice.number, "keep this").await;
    let second = bob.send_text(&alice.number, "forget this").await;
    alice.wait_message(|m| m["id"] == second.as_str()).await;

    // A message the phone does not have in that chat: refused.
    let (status, body) = sim
        .post(
            "/phones/15550921001/chats/15550921002",
            json!({"star": ["NOPE"]}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "message_not_found");

    // The phone stars one and deletes the other for itself; the companion hears both
    // (the action is taken again while the companion's own first sync covers it up).
    enum Seen {
        Star(String, Option<bool>),
        Deleted(String),
    }
    let (mut starred, mut deleted) = (None, None);
    for _ in 0..10 {
        let (status, body) = sim
            .post(
                "/phones/15550921001/chats/15550921002",
                json!({"star": [first], "deleteForMe": [second]}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"]["starred"], json!([first]), "{body}");
        assert_eq!(body["state"]["deletedForMe"], json!([second]), "{body}");
        while starred.is_none() || deleted.is_none() {
            let seen = a.wait_for("the star and the deletion", |e| match e {
                Event::StarUpdate(u) if u.chat_jid == bob_jid => {
                    Some(Seen::Star(u.message_id.clone(), u.action.starred))
                }
                Event::DeleteMessageForMeUpdate(u) if u.chat_jid == bob_jid => {
                    Some(Seen::Deleted(u.message_id.clone()))
                }
                _ => None,
            });
            match tokio::time::timeout(std::time::Duration::from_secs(3), seen).await {
                Ok(Seen::Star(id, v)) => starred = Some((id, v)),
                Ok(Seen::Deleted(id)) => deleted = Some(id),
                Err(_) => break,
            }
        }
        if starred.is_some() && deleted.is_some() {
            break;
        }
    }
    assert_eq!(starred, Some((first.clone(), Some(true))));
    assert_eq!(deleted, Some(second.clone()));

    // The companion unstars it: the phone reads that back.
    a.client
        .chat_actions()
        .unstar_message(&bob_jid, None, &first, false)
        .await
        .expect("the server takes the patch");
    let (_, chats) = sim.get("/phones/15550921001/chats").await;
    let chat = &chats["15550921002@s.whatsapp.net"];
    assert!(chat.get("starred").is_none(), "{chats}");
    assert_eq!(chat["deletedForMe"], json!([second]), "{chats}");
}
