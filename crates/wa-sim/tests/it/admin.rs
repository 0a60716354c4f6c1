//! The admin API's contract: shapes and errors.

use crate::support::TestSim;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_requests_get_json_errors_naming_the_problem() {
    let sim = TestSim::start().await;
    let (status, body) = sim.post("/phones", json!({"phone": "12ab"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_phone");

    sim.phone("15550100001").await;
    let (status, body) = sim.post("/phones", json!({"phone": "15550100001"})).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "phone_exists");

    let (status, body) = sim.get("/phones/19999999999/messages").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "phone_not_found");

    let (status, body) = sim
        .post("/phones/15550100001/scan", json!({"qr": "nonsense"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_qr");

    let (status, body) = sim
        .post("/phones/15550100001/messages", json!({"to": "15550100001"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "missing_content");

    let (status, body) = sim.post("/faults/media", json!({"mode": "explode"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_mode");

    let (status, body) = sim.get("/nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "route_not_found");

    let (_, phones) = sim.get("/phones").await;
    assert_eq!(phones[0]["phone"], "15550100001");
    assert!(phones[0]["lid"].as_str().unwrap().ends_with("@lid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_mode_serves_ws_and_http_without_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let sim = wa_sim::Simulator::start(wa_sim::SimConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        tls: false,
        compact_after: wa_sim::COMPACT_AFTER,
    })
    .await
    .unwrap();
    assert!(sim.ws_url().starts_with("ws://"));
    assert!(sim.admin_url().starts_with("http://"));
    let health: serde_json::Value = reqwest::get(format!("{}/health", sim.admin_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("sim.json")).unwrap()).unwrap();
    assert!(info["caFile"].is_null());
    sim.shutdown().await;
}
