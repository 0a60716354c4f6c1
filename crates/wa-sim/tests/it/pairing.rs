//! Pairing by QR through the admin API, and logging in again from the store.

use crate::support::{TestSim, paired_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pairs_by_qr_scan_then_logs_in_again_without_qr() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15551200001").await;
    let (client, cfg) = paired_client(&sim, &alice, "alice-web").await;

    let own = client.client.pn().expect("paired client knows its number");
    assert_eq!(own.user.as_str(), "15551200001");
    assert_ne!(own.device, 0, "a companion gets a device id of its own");

    let (_, phones) = sim.get("/phones").await;
    let devices = phones[0]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2, "phone plus one linked device: {phones}");
    client.stop().await;

    // A new client over the same store resumes the session: no QR this time.
    let mut again = cfg.start("alice-web").await;
    let first = again
        .wait_for("Connected or a QR", |e| match e {
            whatsapp_rust::wacore::types::events::Event::Connected(_) => Some(true),
            whatsapp_rust::wacore::types::events::Event::PairingQrCode(_) => Some(false),
            _ => None,
        })
        .await;
    assert!(first, "a paired store must log in without showing a QR");
    again.stop().await;
}
