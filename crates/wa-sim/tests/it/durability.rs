//! What the simulator confirmed survives a `kill -9`, however soon after the confirmation
//! it comes: the `wa-sim` binary runs as a child process and is killed, not shut down.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::support::{Phone, TestSim, paired_client, text_of};

/// The `wa-sim` binary on `dir`, and a [`TestSim`] handle on it (without an in-process
/// simulator).
async fn start_process(dir: tempfile::TempDir) -> (SimProcess, TestSim) {
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
        .map(SimProcess)
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

/// The `wa-sim` child process, killed when dropped too, so that a failing test does
/// not leave it running.
struct SimProcess(std::process::Child);

impl Drop for SimProcess {
    fn drop(&mut self) {
        // Already killed and reaped by `kill_9`, unless the test failed first; no
        // assertion here, as it may run while a failed test unwinds.
        if let Err(e) = self.0.kill().and_then(|()| self.0.wait().map(drop)) {
            eprintln!("stopping wa-sim: {e}");
        }
    }
}

fn kill_9(mut child: SimProcess) {
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("reaped");
}

/// The devices of `number` after a restart (a 404 fails the test).
async fn devices(sim: &TestSim, number: &str) -> Vec<u64> {
    let (status, body) = sim.get(&format!("/phones/{number}")).await;
    assert_eq!(status, 200, "phone {number} after the restart: {body}");
    body["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_created_or_linked_is_kept_through_kill_9_right_after_the_answer() {
    let (child, sim) = start_process(tempfile::tempdir().unwrap()).await;
    let (status, body) = sim
        .post("/phones", json!({"phone": "15551700101", "name": "Ann"}))
        .await;
    assert_eq!(status, 201, "{body}");
    kill_9(child);

    let (child, sim) = start_process(sim.dir).await;
    assert_eq!(devices(&sim, "15551700101").await, [0]);
    let ann = Phone {
        sim: &sim,
        number: "15551700101".into(),
    };
    let mut client = sim
        .client_config(sim.db_path("ann-web"))
        .start("ann-web")
        .await;
    let qr = client.wait_qr().await;
    let linked = ann.scan(&qr).await;
    kill_9(child);
    assert_eq!(linked["device"], 1, "{linked}");
    client.stop().await;

    let (child, sim) = start_process(sim.dir).await;
    assert_eq!(devices(&sim, "15551700101").await, [0, 1]);
    kill_9(child);
}

/// Phones send to an account whose companion is offline as fast as the simulator takes
/// them, and it is killed mid-stream: every send it answered 201 is kept by both phones
/// and still queued for the companion, which gets each of them when it logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_send_survives_kill_9_mid_stream() {
    const SENDERS: [&str; 2] = ["15551700202", "15551700203"];
    const IN_FLIGHT_PER_SENDER: usize = 3;
    const ACKED_BEFORE_KILL: usize = 120;
    let (child, sim) = start_process(tempfile::tempdir().unwrap()).await;
    let alice = sim.phone("15551700201").await;
    for number in SENDERS {
        sim.phone(number).await;
    }
    let (client, cfg) = paired_client(&sim, &alice, "alice-web").await;
    client.stop().await;
    drop(alice);

    // Each task sends until the simulator is gone; what was answered 201 is recorded.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let (enough_tx, mut enough) = tokio::sync::watch::channel(0usize);
    let mut tasks = Vec::new();
    for number in SENDERS {
        for lane in 0..IN_FLIGHT_PER_SENDER {
            let url = format!("{}/phones/{number}/messages", sim.admin);
            let http = sim.http.clone();
            let acked = acked.clone();
            let enough_tx = enough_tx.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let text = format!("{number} lane {lane} #{i}");
                    let body = json!({"to": "15551700201", "text": text});
                    let Ok(resp) = http.post(&url).json(&body).send().await else {
                        return;
                    };
                    if resp.status() != 201 {
                        return;
                    }
                    let Ok(v) = resp.json::<serde_json::Value>().await else {
                        return;
                    };
                    let id = v["id"].as_str().unwrap().to_string();
                    let n = {
                        let mut acked = acked.lock().unwrap();
                        acked.push((id, text));
                        acked.len()
                    };
                    enough_tx.send_replace(n);
                }
            }));
        }
    }
    enough
        .wait_for(|n| *n >= ACKED_BEFORE_KILL)
        .await
        .expect("senders run");
    kill_9(child);
    for t in tasks {
        t.await.expect("sender task");
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= ACKED_BEFORE_KILL);

    let (child, sim) = start_process(sim.dir).await;
    let alice = Phone {
        sim: &sim,
        number: "15551700201".into(),
    };
    let got = alice.messages().await;
    let mut sent = Vec::new();
    for number in SENDERS {
        let phone = Phone {
            sim: &sim,
            number: number.into(),
        };
        sent.extend(phone.messages().await);
    }
    for (id, _) in &acked {
        let s = sent.iter().find(|m| m["id"] == id.as_str());
        let s = s.unwrap_or_else(|| panic!("the sender's phone lost {id}, which it had sent"));
        assert_eq!(s["status"], "delivered", "{s}");
        assert!(
            got.iter().any(|m| m["id"] == id.as_str()),
            "alice's phone lost {id}"
        );
    }
    let cfg = crate::support::ClientConfig {
        ws_url: sim.ws_url.clone(),
        ca_pem: sim.ca_pem.clone(),
        ..cfg
    };
    let mut client = cfg.start("alice-web").await;
    for (id, text) in &acked {
        let (msg, _) = client
            .wait_message("an acknowledged message", |_, m| m.id == *id)
            .await;
        assert_eq!(text_of(&msg).as_ref(), Some(text));
    }
    client.stop().await;
    drop(alice);
    kill_9(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_and_queued_stanzas_survive_kill_9() {
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
