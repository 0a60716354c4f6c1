//! A realistic network: with a latency and jitter set, every frame to a client comes that
//! much later and in order, logins and answers included; off, nothing waits.

use std::time::{Duration, Instant};

use serde_json::json;
use wacore::iq::prekeys::PreKeyCountSpec;

use crate::support::{TestSim, paired_client, text_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_jitter_delay_every_frame_and_keep_their_order() {
    let sim = TestSim::start().await;
    let alice = sim.phone("15550910001").await;
    let (a, cfg) = paired_client(&sim, &alice, "alice-net").await;

    assert_eq!(
        sim.get("/network").await,
        (200, json!({"latencyMs": 0, "jitterMs": 0}))
    );
    let (status, body) = sim.post("/network", json!({"latencyMs": 20_000})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_network"))
    );
    let (status, _) = sim.post("/network", json!({"latency": 5})).await;
    assert_eq!(status, 400, "unknown fields are refused");

    let (status, body) = sim
        .post("/network", json!({"latencyMs": 150, "jitterMs": 60}))
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"latencyMs": 150, "jitterMs": 60}))
    );

    // An answer takes at least the latency.
    let started = Instant::now();
    let count = a
        .client
        .execute(PreKeyCountSpec::new())
        .await
        .unwrap()
        .count;
    assert!(count > 0);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );

    // Messages keep their order whatever each one's jitter.
    let texts: Vec<String> = (1..=15).map(|i| format!("in order {i}")).collect();
    let bob = sim.phone("15550910002").await;
    for t in &texts {
        bob.send_text("15550910001", t).await;
    }
    let mut a = a;
    let mut got = Vec::new();
    while got.len() < texts.len() {
        let (m, _) = a
            .wait_message("the phone's texts", |m, _| {
                text_of(m).is_some_and(|t| t.starts_with("in order"))
            })
            .await;
        got.push(text_of(&m).unwrap());
    }
    assert_eq!(got, texts);

    // A new login goes through the handshake with every frame late.
    a.stop().await;
    let started = Instant::now();
    let mut again = cfg.start("alice-net").await;
    again.wait_connected().await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    // Off again: nothing waits.
    let (status, _) = sim.post("/network", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        sim.get("/network").await.1,
        json!({"latencyMs": 0, "jitterMs": 0})
    );
    again.client.execute(PreKeyCountSpec::new()).await.unwrap();
    again.stop().await;
}
