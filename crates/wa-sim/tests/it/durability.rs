//! What the simulator accepted survives a `kill -9` once its persistence interval (0.5 s)
//! has passed: the `wa-sim` binary runs as a child process and is killed, not shut down.

use std::path::Path;
use std::time::Duration;

use crate::support::{TestSim, paired_client, text_of};

/// The `wa-sim` binary on `dir`, and a [`TestSim`] handle on it (without an in-process
/// simulator).
async fn start_process(dir: tempfile::TempDir) -> (std::process::Child, TestSim) {
    let data_dir = dir.path().join("sim");
    let sim_json = data_dir.join("sim.json");
    if let Err(e) = std::fs::remove_file(&sim_json) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::NotFound,
            "removing sim.json: {e}"
        );
    }
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_wa-sim"))
        .args(["--listen", "127.0.0.1:0", "--log", "warn", "--data-dir"])
        .arg(&data_dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("wa-sim starts");
    let info = wait_for_json(&sim_json).await;
    let ca_pem = std::fs::read_to_string(info["caFile"].as_str().unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let sim = TestSim {
        sim: None,
        dir,
        http,
        admin: info["adminUrl"].as_str().unwrap().to_string(),
        ws_url: info["wsUrl"].as_str().unwrap().to_string(),
        ca_pem,
    };
    (child, sim)
}

async fn wait_for_json(path: &Path) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    loop {
        if let Ok(bytes) = std::fs::read(path)
            && let Ok(v) = serde_json::from_slice(&bytes)
        {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "wa-sim did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kill_9(mut child: std::process::Child) {
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_and_queued_stanzas_survive_kill_9_after_the_persistence_interval() {
    let (child, sim) = start_process(tempfile::tempdir().unwrap()).await;
    let alice = sim.phone("15551700001").await;
    let bob = sim.phone("15551700002").await;
    let (client, cfg) = paired_client(&sim, &alice, "alice-web").await;
    client.stop().await;

    // Alice's companion is offline: these wait in its queue, and alice's phone gets them.
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(bob.send_text("15551700001", &format!("queued {i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop((alice, bob));
    kill_9(child);

    // Twice: the first start folds the journal into a new base, the second reads that.
    let mut sim = sim;
    for round in 0..2 {
        let (child, again) = start_process(sim.dir).await;
        sim = again;
        let bob = crate::support::Phone {
            sim: &sim,
            number: "15551700002".into(),
        };
        let alice = crate::support::Phone {
            sim: &sim,
            number: "15551700001".into(),
        };
        let sent = bob.messages().await;
        let got = alice.messages().await;
        for id in &ids {
            let s = sent.iter().find(|m| m["id"] == id.as_str());
            let s = s.unwrap_or_else(|| panic!("round {round}: bob's phone lost {id}"));
            assert_eq!(s["status"], "delivered", "round {round}: {s}");
            assert!(
                got.iter().any(|m| m["id"] == id.as_str()),
                "round {round}: alice's phone lost {id}"
            );
        }
        if round == 1 {
            // The companion logs in and gets its whole queue, each message once.
            let cfg = crate::support::ClientConfig {
                ws_url: sim.ws_url.clone(),
                ca_pem: sim.ca_pem.clone(),
                ..cfg.clone()
            };
            let mut client = cfg.start("alice-web").await;
            for (i, id) in ids.iter().enumerate() {
                let (msg, _) = client
                    .wait_message("a queued message", |_, m| m.id == *id)
                    .await;
                assert_eq!(text_of(&msg), Some(format!("queued {i}")));
            }
            client.stop().await;
        }
        drop((alice, bob));
        kill_9(child);
    }
}
