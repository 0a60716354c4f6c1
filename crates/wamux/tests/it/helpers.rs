//! Test harness: `TestApp::start().await` runs the real server on port 0 with a fresh data
//! directory; `TestApp::with_sim()` also starts a WhatsApp simulator and points the gateway
//! at it.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use wamux::Config;
use wamux::config::Secret;

pub const KEY: &str = "test-api-key-123456";

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    #[cfg(feature = "sandbox")]
    pub sim: Option<Sim>,
}

/// A last adjustment of the configuration, applied just before the server starts.
pub type Configure = Box<dyn FnOnce(&mut Config) + Send>;

#[derive(Default)]
pub struct Options {
    pub max_body_bytes: Option<usize>,
    pub sim: bool,
    pub data_dir: Option<std::path::PathBuf>,
    /// Start without a configured key (the server generates one).
    pub no_key: bool,
    /// Adjusts the configuration last, before the server starts.
    pub configure: Option<Configure>,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    #[cfg(feature = "sandbox")]
    pub async fn with_sim() -> Self {
        Self::start_with(Options {
            sim: true,
            ..Options::default()
        })
        .await
    }

    pub async fn start_with(opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = config(&opts.data_dir.unwrap_or_else(|| dir.path().join("data")));
        if opts.no_key {
            config.api_key = None;
        }
        if let Some(n) = opts.max_body_bytes {
            config.max_body_bytes = n;
        }
        #[cfg(feature = "sandbox")]
        let sim = if opts.sim {
            let sim = Sim::start(dir.path().join("sim")).await;
            config.wa_url = Some(sim.inner.ws_url());
            config.wa_ca_file = Some(sim.inner.ca_file().to_owned());
            Some(sim)
        } else {
            None
        };
        #[cfg(not(feature = "sandbox"))]
        assert!(!opts.sim, "WhatsApp tests need the `sandbox` feature");
        if let Some(f) = opts.configure {
            f(&mut config);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(wamux::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let app = TestApp {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            dir,
            stop: Some(stop),
            task: Some(task),
            #[cfg(feature = "sandbox")]
            sim,
        };
        // The server is ready as soon as it answers.
        wait_until(Duration::from_secs(10), "the server to answer", || async {
            app.get("/api/health").send().await.is_ok()
        })
        .await;
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request carrying the API key.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("X-API-Key", KEY)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.req(Method::GET, path)
    }

    pub fn post(&self, path: &str, body: Value) -> RequestBuilder {
        self.req(Method::POST, path).json(&body)
    }

    /// GET with the key; returns status and JSON body.
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        into_json(self.get(path).send().await.unwrap()).await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        into_json(self.post(path, body).send().await.unwrap()).await
    }

    /// Any method with the key, with a JSON body or none; returns status and JSON body.
    pub async fn call_json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.req(method, path);
        if let Some(b) = body {
            r = r.json(&b);
        }
        into_json(r.send().await.unwrap()).await
    }

    pub async fn status_of(&self, session: &str) -> String {
        let (_, body) = self.get_json(&format!("/api/status/{session}")).await;
        body["status"].as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the session reports `status`.
    pub async fn wait_status(&self, session: &str, status: &str, timeout: Duration) {
        wait_until(
            timeout,
            &format!("session {session} to be {status}"),
            || async { self.status_of(session).await == status },
        )
        .await;
    }

    /// Stops the server the way ctrl-c does, and waits for it.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown().await;
        #[cfg(feature = "sandbox")]
        if let Some(sim) = self.sim.take() {
            sim.inner.shutdown().await;
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let r = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server stops within 30 s")
                .expect("server task did not panic");
            r.expect("server ran without error");
        }
    }
}

pub async fn into_json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Polls `cond` until it holds, failing the test after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts an error response: status and `error.code`, and a non-empty message.
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "body: {}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without a message: {}",
        got.1
    );
}

#[cfg(feature = "sandbox")]
pub struct Sim {
    pub inner: wa_sim::Simulator,
    pub admin: reqwest::Client,
}

#[cfg(feature = "sandbox")]
impl Sim {
    pub async fn start(dir: std::path::PathBuf) -> Self {
        let inner = wa_sim::Simulator::start(wa_sim::SimConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir,
            tls: true,
            compact_after: wa_sim::COMPACT_AFTER,
        })
        .await
        .expect("simulator starts");
        let ca = reqwest::Certificate::from_pem(inner.ca_pem().as_bytes()).unwrap();
        let admin = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        Sim { inner, admin }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.admin_url())
    }

    /// Creates a virtual phone (an account with its primary device).
    pub async fn phone(&self, phone: &str, name: &str) {
        let r = self
            .admin
            .post(self.url("/phones"))
            .json(&serde_json::json!({"phone": phone, "name": name}))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "create phone: {}",
            r.text().await.unwrap()
        );
    }

    pub async fn scan(&self, phone: &str, qr: &str) {
        let r = self
            .admin
            .post(self.url(&format!("/phones/{phone}/scan")))
            .json(&serde_json::json!({"qr": qr}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "scan: {}", r.text().await.unwrap());
    }

    pub async fn send(&self, phone: &str, to: &str, text: &str) -> Value {
        self.send_json(phone, &serde_json::json!({"to": to, "text": text}))
            .await
    }

    /// The phone sends what `body` describes (the simulator's admin send: text, location,
    /// contacts, ...).
    pub async fn send_json(&self, phone: &str, body: &Value) -> Value {
        let (status, body) = self
            .admin_json(
                Method::POST,
                &format!("/phones/{phone}/messages"),
                Some(body.clone()),
            )
            .await;
        assert!(status.is_success(), "phone send: {body}");
        body
    }

    /// Any call of the simulator's admin API (`path` under `/admin`): status and JSON body.
    pub async fn admin_json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.admin.request(method, self.url(path));
        if let Some(b) = body {
            r = r.json(&b);
        }
        into_json(r.send().await.unwrap()).await
    }

    pub async fn messages(&self, phone: &str) -> Vec<Value> {
        let r = self
            .admin
            .get(self.url(&format!("/phones/{phone}/messages")))
            .send()
            .await
            .unwrap();
        let (status, body) = into_json(r).await;
        assert!(status.is_success(), "phone messages: {body}");
        match body {
            Value::Array(v) => v,
            Value::Object(mut o) => match o.remove("messages") {
                Some(Value::Array(v)) => v,
                _ => vec![],
            },
            _ => vec![],
        }
    }

    pub async fn read(&self, phone: &str, ids: &[&str]) {
        let r = self
            .admin
            .post(self.url(&format!("/phones/{phone}/read")))
            .json(&serde_json::json!({"ids": ids}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "read: {}", r.text().await.unwrap());
    }
}

/// Polls `f` until it yields a value, failing the test after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl TestApp {
    /// Waits for the session's QR code and returns the raw string.
    pub async fn wait_qr(&self, session: &str, timeout: Duration) -> String {
        wait_for(timeout, &format!("a QR for {session}"), || async {
            let (s, b) = self.get_json(&format!("/api/qr/{session}")).await;
            (s == StatusCode::OK).then(|| b["qr"].as_str().unwrap().to_owned())
        })
        .await
    }
}

#[cfg(feature = "sandbox")]
impl Sim {
    /// The account as the simulator sees it (devices, online state).
    pub async fn account(&self, phone: &str) -> Value {
        let r = self
            .admin
            .get(self.url(&format!("/phones/{phone}")))
            .send()
            .await
            .unwrap();
        let (status, body) = into_json(r).await;
        assert!(status.is_success(), "account: {body}");
        body
    }

    /// Ids of the account's linked (companion) devices.
    pub async fn companions(&self, phone: &str) -> Vec<u64> {
        self.account(phone).await["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["id"] != 0)
            .map(|d| d["id"].as_u64().unwrap())
            .collect()
    }

    pub async fn unlink(&self, phone: &str, device: u64) {
        let r = self
            .admin
            .post(self.url(&format!("/phones/{phone}/devices/{device}/unlink")))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "unlink: {}",
            r.text().await.unwrap()
        );
    }
}

/// The database the gateway under test uses for the data directory `data_dir`: SQLite in
/// it, unless `WAMUX_TEST_BACKEND=postgres`, which gives every data directory a schema of
/// its own on the test PostgreSQL server (`WAMUX_TEST_POSTGRES_URL`), the same one each time
/// (a restarted server finds its data). The test run drops those schemas.
pub fn database_url(data_dir: &std::path::Path) -> Option<Secret> {
    if std::env::var("WAMUX_TEST_BACKEND").as_deref() != Ok("postgres") {
        return None;
    }
    Some(postgres_schema(data_dir))
}

/// A PostgreSQL URL whose schema belongs to `key` alone (created when missing), on the test
/// server `WAMUX_TEST_POSTGRES_URL`.
pub fn postgres_schema(key: &std::path::Path) -> Secret {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let schema = format!("wamux_it_{:016x}", h.finish());
    let base = std::env::var("WAMUX_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    // A thread of its own: callers may be inside a runtime or not.
    let create = {
        let (base, schema) = (base.clone(), schema.clone());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    use sqlx::Connection as _;
                    let mut conn = sqlx::PgConnection::connect(&base)
                        .await
                        .expect("the test PostgreSQL server answers (WAMUX_TEST_POSTGRES_URL)");
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "CREATE SCHEMA IF NOT EXISTS {schema}"
                    )))
                    .execute(&mut conn)
                    .await
                    .expect("a test schema");
                })
        })
    };
    create.join().expect("the schema is created");
    let sep = if base.contains('?') { '&' } else { '?' };
    Secret::new(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

/// [`database_url`] as the store opens it.
pub fn database(data_dir: &std::path::Path) -> wamux::store::Database {
    config(data_dir).database()
}

/// A test server's settings on `data_dir`: the test key, a free loopback port, quiet logs,
/// and the backend the tests run on.
pub fn config(data_dir: &std::path::Path) -> Config {
    Config {
        api_key: Some(Secret::new(KEY)),
        host: "127.0.0.1".into(),
        port: 0,
        log: "warn".into(),
        database_url: database_url(data_dir).map(wamux::store::Database::Postgres),
        // Tests probe every route without a key; the limit has its own test.
        auth_failures_per_minute: 1_000_000,
        ..Config::with_data_dir(data_dir)
    }
}

/// `WAMUX_DATABASE_URL` for a server process on `data_dir`, when the tests run on PostgreSQL.
pub fn database_env(data_dir: &std::path::Path) -> Vec<(&'static str, String)> {
    database_url(data_dir)
        .map(|url| ("WAMUX_DATABASE_URL", url.expose().to_owned()))
        .into_iter()
        .collect()
}
