//! The account IQs a client sends at login and in use, over real sockets from an
//! unmodified whatsapp-rust client: WhatsApp's answers, and WhatsApp's error for what the
//! simulator does not model.

use wacore::iq::prekeys::{DigestKeyBundleSpec, PreKeyCountSpec};
use wacore::iq::privacy::{PrivacyCategory, PrivacyValue};
use wacore::iq::spec::IqSpec;
use wacore::request::InfoQuery;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, NodeContent, NodeRef, Server};
use whatsapp_rust::request::IqError;

use crate::support::{TestSim, paired_client};

/// A business-profile query: a namespace the simulator does not model.
struct BusinessProfile;

impl IqSpec for BusinessProfile {
    type Response = ();

    fn build_iq(&self) -> InfoQuery<'static> {
        InfoQuery::get(
            "w:biz",
            Jid::new("", Server::Pn),
            Some(NodeContent::Nodes(vec![
                NodeBuilder::new("business_profile")
                    .attr("v", "244")
                    .build(),
            ])),
        )
    }

    fn parse_response(&self, _response: &NodeRef<'_>) -> Result<(), anyhow::Error> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_digest_privacy_and_an_unmodelled_iq() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550900001").await;
    let bob = sim.phone("15550900002").await;
    let (a, _) = paired_client(&sim, &alice, "alice-iq").await;
    let (b, _) = paired_client(&sim, &bob, "bob-iq").await;

    // The count is the one-time prekeys the server holds for the device, and the digest
    // lists exactly those.
    let count = a
        .client
        .execute(PreKeyCountSpec::new())
        .await
        .unwrap()
        .count;
    assert!(count > 0, "the device uploaded prekeys at login");
    let digest = a.client.execute(DigestKeyBundleSpec::new()).await.unwrap();
    assert_eq!(digest.prekey_ids.len(), count);
    assert_eq!(digest.identity.len(), 32);
    assert_eq!(digest.hash.len(), 20);

    // A first message from another account takes one of them.
    b.client.send_text(alice.jid(), "hello").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = a
            .client
            .execute(PreKeyCountSpec::new())
            .await
            .unwrap()
            .count;
        if now == count - 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "count stayed {now}, expected {}",
            count - 1
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // WhatsApp's defaults for an account nobody changed.
    let privacy = a.client.fetch_privacy_settings().await.unwrap();
    let value = |c: PrivacyCategory| {
        privacy
            .settings
            .iter()
            .find(|s| s.category == c)
            .map(|s| s.value.clone())
    };
    assert_eq!(
        value(PrivacyCategory::ReadReceipts),
        Some(PrivacyValue::All)
    );
    assert_eq!(value(PrivacyCategory::GroupAdd), Some(PrivacyValue::All));

    // Not modelled: an error the client sees as one, not an empty success.
    match a.client.execute(BusinessProfile).await {
        Err(IqError::ServerError { code, .. }) => assert_eq!(code, 501),
        other => panic!("expected a 501, got {other:?}"),
    }
    a.stop().await;
    b.stop().await;
}

/// A `read-self` receipt (the reader has read receipts off) never reaches the sender, only
/// the reader's other devices (and its phone shows the message read); a `read` sent after
/// it does reach the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_self_is_not_shown_to_the_sender() {
    use whatsapp_rust::wacore::types::events::Event;
    use whatsapp_rust::wacore::types::presence::ReceiptType;

    let sim = TestSim::start().await;
    let alice = sim.phone("15550900011").await;
    let bob = sim.phone("15550900012").await;
    let (mut a, _) = paired_client(&sim, &alice, "alice-rs").await;
    let (mut b, _) = paired_client(&sim, &bob, "bob-rs").await;
    let (mut b2, _) = paired_client(&sim, &bob, "bob-rs2").await;
    let first = a
        .client
        .send_text(bob.jid(), "one")
        .await
        .unwrap()
        .message_id;
    let second = a
        .client
        .send_text(bob.jid(), "two")
        .await
        .unwrap()
        .message_id;
    b.wait_message("the first", |_, i| i.id == first).await;
    b.wait_message("the second", |_, i| i.id == second).await;

    let receipt = NodeBuilder::new("receipt")
        .attr("to", alice.jid())
        .attr("id", first.clone())
        .attr("type", "read-self")
        .attr("t", "1")
        .build();
    b.client.send_node(receipt).await.unwrap();
    b.client
        .mark_as_read(&alice.jid(), None, &[second.as_str()])
        .await
        .unwrap();
    // The simulator handles a device's stanzas in order, so a relayed `read-self` would
    // have come first.
    let read = a
        .wait_for("a read receipt", |e| match e {
            Event::Receipt(r)
                if r.r#type == ReceiptType::Read || r.r#type == ReceiptType::ReadSelf =>
            {
                Some(r.message_ids.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(read, vec![second]);

    let synced = b2
        .wait_for("the read-self on the reader's other device", |e| match e {
            Event::Receipt(r) if r.r#type == ReceiptType::ReadSelf => {
                Some((r.message_ids.clone(), r.source.sender.user.to_string()))
            }
            _ => None,
        })
        .await;
    // From the reader's own account: its devices show the chat read, nobody else hears.
    assert_eq!(synced, (vec![first.clone()], "15550900012".to_string()));
    let on_phone = bob
        .wait_message(|m| m["id"] == first.as_str() && m["status"] == "read")
        .await;
    assert_eq!(on_phone["fromMe"], false);
    a.stop().await;
    b.stop().await;
    b2.stop().await;
}
