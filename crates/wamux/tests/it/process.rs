//! The real `wamux` binary, killed with SIGKILL and started again on the same data dir.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{KEY, Sim, database_env, into_json, wait_for, wait_until};

const LONG: Duration = Duration::from_secs(60);

struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Server {
    async fn spawn(data_dir: &std::path::Path, port: u16, sim: &Sim) -> Self {
        Self::spawn_with(data_dir, port, sim, database_env(data_dir)).await
    }

    /// [`spawn`](Self::spawn) with more environment (the database, for one).
    async fn spawn_with(
        data_dir: &std::path::Path,
        port: u16,
        sim: &Sim,
        env: Vec<(&'static str, String)>,
    ) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_wamux"))
            .arg("serve")
            .env("WAMUX_API_KEY", KEY)
            .env("WAMUX_HOST", "127.0.0.1")
            .env("WAMUX_PORT", port.to_string())
            .env("WAMUX_DATA_DIR", data_dir)
            .envs(env)
            .env("WAMUX_WA_URL", sim.inner.ws_url())
            .env("WAMUX_WA_CA_FILE", sim.inner.ca_file())
            .env("WAMUX_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("wamux binary starts");
        let s = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        wait_until(Duration::from_secs(30), "the server to answer", || async {
            s.get("/api/health").await.0 == StatusCode::OK
        })
        .await;
        s
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        match self
            .http
            .get(format!("{}{path}", self.base))
            .header("X-API-Key", KEY)
            .send()
            .await
        {
            Ok(r) => into_json(r).await,
            Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Value::Null),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("X-API-Key", KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        into_json(r).await
    }

    /// Waits until `session`'s history holds a message with `text`.
    async fn wait_history(&self, session: &str, text: &str) {
        wait_until(
            LONG,
            &format!("{text:?} in {session}'s history"),
            || async {
                let (_, b) = self.get(&format!("/api/messages/{session}")).await;
                b["messages"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["text"] == text))
            },
        )
        .await;
    }

    async fn status(&self, session: &str) -> String {
        self.get(&format!("/api/status/{session}")).await.1["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn pair(&self, sim: &Sim, session: &str, phone: &str) {
        let (s, b) = self
            .post("/api/start-session", json!({"sessionId": session}))
            .await;
        assert!(s.is_success(), "{b}");
        let qr = wait_for(LONG, "a QR", || async {
            let (s, b) = self.get(&format!("/api/qr/{session}")).await;
            (s == StatusCode::OK).then(|| b["qr"].as_str().unwrap().to_owned())
        })
        .await;
        sim.scan(phone, &qr).await;
        wait_until(LONG, "connected", || async {
            self.status(session).await == "connected"
        })
        .await;
    }

    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then the process must exit cleanly on its own.
    async fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(ok.success());
        let status = tokio::task::spawn_blocking(move || self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "wamux exited with {status} after SIGTERM");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn after_kill_9_sessions_reconnect_without_qr_and_messages_sent_meanwhile_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path().join("sim")).await;
    let data = dir.path().join("data");
    let (alice, carol, bob) = ("15550000001", "15550000003", "15550000002");
    sim.phone(alice, "Alice").await;
    sim.phone(carol, "Carol").await;
    sim.phone(bob, "Bob").await;

    let port = free_port();
    let server = Server::spawn(&data, port, &sim).await;
    server.pair(&sim, "s1", alice).await;
    server.pair(&sim, "s2", carol).await;
    server.kill_9();

    // While the gateway is down, Bob writes to both.
    sim.send(bob, alice, "while you were away").await;
    sim.send(bob, carol, "carol, are you there?").await;

    let server = Server::spawn(&data, port, &sim).await;
    // Both come back by themselves; neither ever asks for a QR.
    wait_until(LONG, "both sessions connected again", || async {
        let mut all = true;
        for s in ["s1", "s2"] {
            let status = server.status(s).await;
            assert_ne!(
                status, "qr",
                "session {s} asked for a new QR after the restart"
            );
            all &= status == "connected";
        }
        all
    })
    .await;
    for (session, text) in [
        ("s1", "while you were away"),
        ("s2", "carol, are you there?"),
    ] {
        wait_until(LONG, "the message sent while down", || async {
            let (_, b) = server.get(&format!("/api/messages/{session}")).await;
            b["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["text"] == text))
        })
        .await;
    }
    let (s, b) = server
        .post(
            "/api/send-message",
            json!({"sessionId": "s1", "to": bob, "text": "back online"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    wait_until(LONG, "Bob to get it", || async {
        sim.messages(bob)
            .await
            .iter()
            .any(|m| m["text"] == "back online")
    })
    .await;
    server.terminate().await;
    sim.inner.shutdown().await;
}

/// 500 queued messages from 5 sessions drain while the gateway is killed with SIGKILL; after
/// the restart every one reaches its phone exactly once, each chat in order.
#[tokio::test]
async fn queued_messages_cut_off_by_kill_9_arrive_once_each_in_order_after_restart() {
    const PER_SESSION: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path().join("sim")).await;
    let data = dir.path().join("data");
    let bob = "15550000099";
    sim.phone(bob, "Bob").await;
    let senders: Vec<String> = (0..5).map(|i| format!("1555000001{i}")).collect();
    let port = free_port();
    let server = Server::spawn(&data, port, &sim).await;
    for (i, phone) in senders.iter().enumerate() {
        sim.phone(phone, &format!("Sender {i}")).await;
        server.pair(&sim, &format!("q{i}"), phone).await;
    }
    // All due at one moment, far enough ahead that all 500 are queued first (each is a
    // transaction: on PostgreSQL queueing them takes seconds), so that they drain together.
    let due = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 15;
    for n in 0..PER_SESSION {
        for i in 0..senders.len() {
            let (s, b) = server
                .post(
                    "/api/send-message",
                    json!({"sessionId": format!("q{i}"), "to": bob, "text": format!("q{i} {n:03}"), "sendAt": due}),
                )
                .await;
            assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        }
    }
    // Killed in the middle of the drain: as soon as the first ones arrive (the drain of all
    // 500 can take less than one look at the phone's list on a fast database).
    wait_until(LONG, "some to arrive", || async {
        !sim.messages(bob).await.is_empty()
    })
    .await;
    server.kill_9();
    let before_restart = sim.messages(bob).await.len();
    assert!(
        before_restart < senders.len() * PER_SESSION,
        "the drain was over before the kill; nothing was cut off"
    );

    let server = Server::spawn(&data, port, &sim).await;
    let got = wait_for(LONG, "all 500 at Bob's phone", || async {
        let got = sim.messages(bob).await;
        (got.len() >= senders.len() * PER_SESSION).then_some(got)
    })
    .await;
    assert_eq!(got.len(), senders.len() * PER_SESSION, "duplicates arrived");
    for (i, phone) in senders.iter().enumerate() {
        let texts: Vec<&str> = got
            .iter()
            .filter(|m| m["from"] == phone.as_str())
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (0..PER_SESSION).map(|n| format!("q{i} {n:03}")).collect();
        assert_eq!(texts, expected, "session q{i}'s chat with Bob");
    }
    wait_until(LONG, "the outboxes to empty", || async {
        let mut empty = true;
        for i in 0..senders.len() {
            let (_, b) = server.get(&format!("/api/sessions/q{i}/outbox")).await;
            empty &= b["messages"].as_array().is_some_and(Vec::is_empty);
        }
        empty
    })
    .await;
    server.terminate().await;
    sim.inner.shutdown().await;
}

/// A group's traffic cut off by SIGKILL: every message the members wrote is in the history
/// once after the restart (those the gateway had acknowledged were committed first; the rest
/// the server delivers again).
#[tokio::test]
async fn group_messages_cut_off_by_kill_9_are_all_there_once_after_restart() {
    const COUNT: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path().join("sim")).await;
    let data = dir.path().join("data");
    let (alice, bob, carol) = ("15550000201", "15550000202", "15550000203");
    for (p, n) in [(alice, "Alice"), (bob, "Bob"), (carol, "Carol")] {
        sim.phone(p, n).await;
    }
    let port = free_port();
    let server = Server::spawn(&data, port, &sim).await;
    server.pair(&sim, "gk", alice).await;
    let (s, g) = sim
        .admin_json(
            reqwest::Method::POST,
            "/groups",
            Some(json!({"creator": bob, "subject": "Busy", "participants": [alice, carol]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    let gid = g["jid"].as_str().unwrap().to_owned();
    // Bob and Carol write in turns; the gateway is killed while they do.
    let writers = {
        let sim_url = sim.url("");
        let gid = gid.clone();
        let http = sim.admin.clone();
        tokio::spawn(async move {
            for n in 0..COUNT {
                let from = if n % 2 == 0 { bob } else { carol };
                let r = http
                    .post(format!("{sim_url}/phones/{from}/messages"))
                    .json(&json!({"to": gid, "text": format!("g {n:03}")}))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.text().await.unwrap());
            }
        })
    };
    wait_until(LONG, "some group messages in the history", || async {
        let (_, b) = server.get("/api/messages/gk?limit=500").await;
        b["messages"].as_array().is_some_and(|m| m.len() >= 5)
    })
    .await;
    server.kill_9();
    writers.await.unwrap();

    let server = Server::spawn(&data, port, &sim).await;
    let texts = wait_for(LONG, "every group message in the history", || async {
        let (_, b) = server
            .get(&format!("/api/messages/gk?chat={gid}&limit=500"))
            .await;
        let texts: Vec<String> = b["messages"]
            .as_array()?
            .iter()
            .filter_map(|m| m["text"].as_str().map(str::to_owned))
            .collect();
        (texts.len() >= COUNT).then_some(texts)
    })
    .await;
    let mut sorted = texts.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        texts.len(),
        "a group message was stored twice"
    );
    let expected: Vec<String> = (0..COUNT).map(|n| format!("g {n:03}")).collect();
    assert_eq!(sorted, expected);
    server.terminate().await;
    sim.inner.shutdown().await;
}

impl Server {
    async fn send_with_key(&self, key: &str, body: Value) -> (StatusCode, Value, bool) {
        let r = self
            .http
            .post(format!("{}/api/send-message", self.base))
            .header("X-API-Key", KEY)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let replayed = r.headers().get("idempotent-replayed").is_some();
        let (s, b) = into_json(r).await;
        (s, b, replayed)
    }
}

/// A client that lost the answer to a send (the gateway was killed right after) retries it
/// with the same `Idempotency-Key`: the restarted gateway answers with the first message id
/// and sends nothing again.
#[tokio::test]
async fn a_send_retried_with_its_idempotency_key_after_kill_9_is_not_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path().join("sim")).await;
    let data = dir.path().join("data");
    let (alice, bob) = ("15550000011", "15550000012");
    sim.phone(alice, "Alice").await;
    sim.phone(bob, "Bob").await;
    let port = free_port();
    let server = Server::spawn(&data, port, &sim).await;
    server.pair(&sim, "s1", alice).await;
    let body = json!({"sessionId": "s1", "to": bob, "text": "exactly once"});
    let (s, first, replayed) = server.send_with_key("order-4711", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert!(!replayed);
    server.kill_9();

    let server = Server::spawn(&data, port, &sim).await;
    let (s, again, replayed) = server.send_with_key("order-4711", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert!(replayed, "answered from the first request");
    assert_eq!(again["messageId"], first["messageId"], "{again}");
    wait_until(LONG, "connected again", || async {
        server.status("s1").await == "connected"
    })
    .await;
    // A new key is a new message: once it has arrived, the first one has had every chance to
    // arrive twice.
    let (s, b, _) = server
        .send_with_key(
            "order-4712",
            json!({"sessionId": "s1", "to": bob, "text": "the next one"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    wait_until(LONG, "Bob to get the next one", || async {
        sim.messages(bob)
            .await
            .iter()
            .any(|m| m["text"] == "the next one")
    })
    .await;
    let copies = sim
        .messages(bob)
        .await
        .iter()
        .filter(|m| m["text"] == "exactly once")
        .count();
    assert_eq!(copies, 1, "the retried send went out once");
    server.terminate().await;
    sim.inner.shutdown().await;
}

/// Runs `wamux db copy`; returns whether it succeeded and what it printed.
fn db_copy(from: &str, to: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wamux"))
        .args(["db", "copy", "--from", from, "--to", to])
        .env_remove("WAMUX_DATABASE_URL")
        .output()
        .expect("wamux runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A user who outgrows one machine moves a live SQLite installation to PostgreSQL with
/// `wamux db copy`: the server started on PostgreSQL has the session connected without a
/// new QR code, its history, its webhook and the deliveries still owed, and sends with the
/// keys it brought along. A second copy into the same database is refused, and the way back
/// to SQLite works too.
#[tokio::test]
async fn db_copy_moves_a_linked_sqlite_installation_to_postgres_without_a_new_qr() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(dir.path().join("sim")).await;
    let data = dir.path().join("data");
    let (alice, bob) = ("15550000031", "15550000032");
    sim.phone(alice, "Alice").await;
    sim.phone(bob, "Bob").await;
    let sqlite_env = vec![("WAMUX_WEBHOOK_ALLOW_PRIVATE", "true".to_owned())];
    let server = Server::spawn_with(&data, free_port(), &sim, sqlite_env).await;
    server.pair(&sim, "s1", alice).await;
    sim.send(bob, alice, "before the move").await;
    server.wait_history("s1", "before the move").await;
    // A receiver that is down: its deliveries stay owed.
    let down = format!("http://127.0.0.1:{}/hook", free_port());
    let (s, b) = server
        .post("/api/s1/webhook", json!({"url": down, "events": ["all"]}))
        .await;
    assert!(s.is_success(), "{b}");
    let (s, b) = server
        .post(
            "/api/send-message",
            json!({"sessionId": "s1", "to": bob, "text": "owed to the webhook"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    wait_until(LONG, "a delivery owed", || async {
        let (_, b) = server
            .get("/api/s1/webhook/deliveries?status=pending")
            .await;
        b["deliveries"].as_array().is_some_and(|d| !d.is_empty())
    })
    .await;
    server.terminate().await;

    let pg = crate::helpers::postgres_schema(&dir.path().join("pg"));
    let (ok, text) = db_copy(data.to_str().unwrap(), pg.expose());
    assert!(ok, "{text}");
    assert!(text.contains("wa_sessions"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    let (ok, text) = db_copy(data.to_str().unwrap(), pg.expose());
    assert!(!ok, "a second copy into the same database is refused");
    assert!(text.contains("not empty"), "{text}");

    // A new data directory: everything comes from PostgreSQL.
    let moved = dir.path().join("moved");
    let pg_env = vec![
        ("WAMUX_DATABASE_URL", pg.expose().to_owned()),
        ("WAMUX_WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
    ];
    let server = Server::spawn_with(&moved, free_port(), &sim, pg_env).await;
    wait_until(LONG, "connected again without a QR", || async {
        server.status("s1").await == "connected"
    })
    .await;
    let (_, qr) = server.get("/api/qr/s1").await;
    assert!(qr.get("qr").is_none(), "no QR is offered: {qr}");
    let (_, b) = server.get("/api/messages/s1").await;
    let texts: Vec<&str> = b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert!(texts.contains(&"before the move"), "{texts:?}");
    assert!(texts.contains(&"owed to the webhook"), "{texts:?}");
    let (s, b) = server.get("/api/s1/webhook").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["url"], down, "{b}");
    let (_, b) = server
        .get("/api/s1/webhook/deliveries?status=pending")
        .await;
    assert!(
        b["deliveries"].as_array().is_some_and(|d| !d.is_empty()),
        "the owed deliveries came along: {b}"
    );
    // The keys came along: a message goes out and arrives.
    let (s, b) = server
        .post(
            "/api/send-message",
            json!({"sessionId": "s1", "to": bob, "text": "from postgres"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    wait_until(LONG, "Bob to get it", || async {
        sim.messages(bob)
            .await
            .iter()
            .any(|m| m["text"] == "from postgres")
    })
    .await;
    sim.send(bob, alice, "to postgres").await;
    server.wait_history("s1", "to postgres").await;
    server.terminate().await;

    // And back: a new SQLite installation from PostgreSQL.
    let back = dir.path().join("back");
    let (ok, text) = db_copy(pg.expose(), back.to_str().unwrap());
    assert!(ok, "{text}");
    let server = Server::spawn_with(&back, free_port(), &sim, Vec::new()).await;
    wait_until(LONG, "connected on SQLite again", || async {
        server.status("s1").await == "connected"
    })
    .await;
    let (_, b) = server.get("/api/messages/s1").await;
    assert!(
        b["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["text"] == "to postgres"),
        "{b}"
    );
    server.terminate().await;
    sim.inner.shutdown().await;
}
