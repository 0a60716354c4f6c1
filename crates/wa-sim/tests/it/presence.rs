//! Presence and typing indicators between two unmodified whatsapp-rust clients.

use whatsapp_rust::wacore::types::events::Event;
use whatsapp_rust::wacore::types::presence::ChatPresence;

use crate::support::{TestClient, TestSim, paired_client};

/// Waits for `who`'s presence to be `unavailable` (or not), returning the last-seen time.
async fn presence(
    client: &mut TestClient,
    who: &str,
    unavailable: bool,
) -> Option<whatsapp_rust::wacore::chrono::DateTime<whatsapp_rust::wacore::chrono::Utc>> {
    client
        .wait_for("a presence update", |e| match e {
            Event::Presence(p) if p.from.user == who && p.unavailable == unavailable => {
                Some(p.last_seen)
            }
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_presence_and_typing() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550910001").await;
    let bob = sim.phone("15550910002").await;
    let (a, _) = paired_client(&sim, &alice, "alice-pres").await;
    let (mut b, _) = paired_client(&sim, &bob, "bob-pres").await;

    b.client.presence().subscribe(alice.jid()).await.unwrap();
    a.client.presence().set_available().await.unwrap();
    presence(&mut b, "15550910001", false).await;

    a.client
        .chatstate()
        .send_composing(&bob.jid())
        .await
        .unwrap();
    let state = b
        .wait_for("alice typing", |e| match e {
            Event::ChatPresence(c) if c.source.chat.user == "15550910001" => Some(c.state),
            _ => None,
        })
        .await;
    assert_eq!(state, ChatPresence::Composing);

    a.client.presence().set_unavailable().await.unwrap();
    let last_seen = presence(&mut b, "15550910001", true).await;
    assert!(
        last_seen.is_some(),
        "an account going away was last seen then"
    );

    // Back again, then gone with its connection.
    a.client.presence().set_available().await.unwrap();
    presence(&mut b, "15550910001", false).await;
    a.stop().await;
    presence(&mut b, "15550910001", true).await;
    b.stop().await;
}
