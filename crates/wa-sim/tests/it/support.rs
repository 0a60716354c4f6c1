//! Test harness: a simulator on a free port, admin API helpers, and
//! whatsapp-rust clients pointed at it whose events arrive on a channel.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use wa_sim::{SimConfig, Simulator};
use whatsapp_rust::TokioRuntime;
use whatsapp_rust::bot::{Bot, BotHandle, EventDelivery};
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::wacore::net::{HttpClient, HttpRequest, HttpResponse};
use whatsapp_rust::wacore::types::events::Event;
use whatsapp_rust::wacore::types::message::MessageInfo;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, Jid};
use whatsapp_rust_sqlite_storage::SqliteStore;
use whatsapp_rust_tokio_transport::TokioWebSocketTransportFactory;

/// Long enough for a debug build on a loaded machine; events normally take
/// milliseconds.
pub const WAIT: Duration = Duration::from_secs(30);

/// A running simulator plus an HTTP client that trusts its CA.
pub struct TestSim {
    pub sim: Option<Simulator>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    pub admin: String,
    pub ws_url: String,
    pub ca_pem: String,
}

impl TestSim {
    pub async fn start() -> TestSim {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> TestSim {
        init_logs();
        let sim = Simulator::start(SimConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().join("sim"),
            tls: true,
            compact_after: wa_sim::COMPACT_AFTER,
        })
        .await
        .expect("simulator starts");
        let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).expect("CA pem");
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .expect("reqwest client");
        TestSim {
            admin: sim.admin_url(),
            ws_url: sim.ws_url(),
            ca_pem: sim.ca_pem().to_string(),
            sim: Some(sim),
            dir,
            http,
        }
    }

    /// Stops the simulator, keeping its data dir, and starts a new one on it.
    pub async fn restart(mut self) -> TestSim {
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
        }
        Self::start_in(self.dir).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.admin))
            .json(&body)
            .send()
            .await
            .expect("admin request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .expect("admin request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Creates an account and returns its phone handle.
    pub async fn phone(&self, number: &str) -> Phone<'_> {
        let (status, body) = self
            .post(
                "/phones",
                json!({"phone": number, "name": format!("Phone {number}")}),
            )
            .await;
        assert_eq!(status, 201, "creating phone {number}: {body}");
        Phone {
            sim: self,
            number: number.to_string(),
        }
    }

    /// A client factory pointed at this simulator.
    pub fn client_config(&self, db: PathBuf) -> ClientConfig {
        ClientConfig {
            ws_url: self.ws_url.clone(),
            ca_pem: self.ca_pem.clone(),
            db,
            history_sync: false,
        }
    }

    /// A fresh SQLite file path inside the test's temp dir.
    pub fn db_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.db"))
    }
}

/// An account's phone, driven through the admin API.
pub struct Phone<'a> {
    pub sim: &'a TestSim,
    pub number: String,
}

impl Phone<'_> {
    pub fn jid(&self) -> Jid {
        format!("{}@s.whatsapp.net", self.number).parse().unwrap()
    }

    pub async fn scan(&self, qr: &str) -> Value {
        let (status, body) = self
            .sim
            .post(&format!("/phones/{}/scan", self.number), json!({"qr": qr}))
            .await;
        assert_eq!(status, 200, "scan: {body}");
        body
    }

    pub async fn send_text(&self, to: &str, text: &str) -> String {
        let (status, body) = self
            .sim
            .post(
                &format!("/phones/{}/messages", self.number),
                json!({"to": to, "text": text}),
            )
            .await;
        assert_eq!(status, 201, "send: {body}");
        body["id"].as_str().unwrap().to_string()
    }

    pub async fn send_media(
        &self,
        to: &str,
        mimetype: &str,
        file_name: Option<&str>,
        caption: Option<&str>,
        data: &[u8],
    ) -> Value {
        use base64::Engine as _;
        let (status, body) = self
            .sim
            .post(
                &format!("/phones/{}/messages", self.number),
                json!({
                    "to": to,
                    "caption": caption,
                    "media": {
                        "mimetype": mimetype,
                        "fileName": file_name,
                        "data": base64::engine::general_purpose::STANDARD.encode(data),
                    }
                }),
            )
            .await;
        assert_eq!(status, 201, "send media: {body}");
        body
    }

    pub async fn messages(&self) -> Vec<Value> {
        let (status, body) = self
            .sim
            .get(&format!("/phones/{}/messages", self.number))
            .await;
        assert_eq!(status, 200, "messages: {body}");
        body.as_array().cloned().unwrap_or_default()
    }

    /// Polls the phone's message list until `pred` matches one (the phone
    /// has no event stream; the admin API is its only window).
    pub async fn wait_message(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(m) = self.messages().await.into_iter().find(|m| pred(m)) {
                return m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "phone {} never got the expected message; has {:?}",
                self.number,
                self.messages().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn read(&self, ids: &[&str]) {
        let (status, body) = self
            .sim
            .post(
                &format!("/phones/{}/read", self.number),
                json!({"ids": ids}),
            )
            .await;
        assert_eq!(status, 200, "read: {body}");
    }
}

/// Where and how a client connects.
#[derive(Clone)]
pub struct ClientConfig {
    pub ws_url: String,
    pub ca_pem: String,
    pub db: PathBuf,
    /// Process history sync (the tests' clients skip it unless told, as the gateway does).
    pub history_sync: bool,
}

/// A running whatsapp-rust client and its event stream.
pub struct TestClient {
    pub handle: Option<BotHandle>,
    /// Messages received but not yet claimed by `wait_message`.
    pub inbox: std::collections::VecDeque<(Arc<wa::Message>, Arc<MessageInfo>)>,
    pub client: Arc<Client>,
    pub events: mpsc::UnboundedReceiver<Arc<Event>>,
}

fn rustls_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA pem")).expect("CA cert");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Media over reqwest, trusting the simulator's CA.
struct SimHttp(reqwest::Client);

#[whatsapp_rust::async_trait]
impl HttpClient for SimHttp {
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        let method: reqwest::Method = request.method.parse()?;
        let mut req = self.0.request(method, &request.url);
        for (k, v) in &request.headers {
            req = req.header(k, v);
        }
        if let Some(body) = request.body {
            req = req.body(body.to_vec());
        }
        let resp = req.send().await?;
        let status_code = resp.status().as_u16();
        let body = resp.bytes().await?.to_vec();
        Ok(HttpResponse { status_code, body })
    }
}

impl ClientConfig {
    /// Starts a client over the SQLite store at `db` (created if missing).
    pub async fn start(&self, push_name: &str) -> TestClient {
        self.start_with(push_name, None).await
    }

    /// Starts a client that asks for a pairing code for `phone` as soon as
    /// its socket is up (whatsapp-rust skips that when already logged in).
    pub async fn start_with_pair_code(&self, push_name: &str, phone: &str) -> TestClient {
        let options = PairCodeOptions {
            phone_number: phone.to_string(),
            ..Default::default()
        };
        self.start_with(push_name, Some(options)).await
    }

    async fn start_with(&self, push_name: &str, pair_code: Option<PairCodeOptions>) -> TestClient {
        let store = SqliteStore::new(&self.db.display().to_string())
            .await
            .expect("sqlite store");
        let connector = whatsapp_rust_tokio_transport::Connector::Rustls(
            tokio_rustls::TlsConnector::from(rustls_config(&self.ca_pem)),
        );
        let transport = TokioWebSocketTransportFactory::new()
            .with_url(self.ws_url.clone())
            .with_connector(connector);
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        let http = SimHttp(
            reqwest::Client::builder()
                .add_root_certificate(ca)
                .build()
                .unwrap(),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let mut builder = Bot::builder()
            .with_backend(store)
            .with_transport_factory(transport)
            .with_http_client(http)
            .with_runtime(TokioRuntime)
            .with_version((2, 3000, 1_020_000_000))
            .with_push_name(push_name)
            // One mailbox, in arrival order: tests assert on event order.
            .with_event_delivery(EventDelivery::Ordered { capacity: 4096 })
            .on_event(move |event, _client| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(event);
                }
            });
        if !self.history_sync {
            builder = builder.skip_history_sync();
        }
        if let Some(options) = pair_code {
            builder = builder.with_pair_code(options);
        }
        let bot = builder.build().await.expect("bot builds");
        let client = bot.client();
        let handle = bot.spawn();
        TestClient {
            handle: Some(handle),
            inbox: Default::default(),
            client,
            events: rx,
        }
    }
}

impl TestClient {
    /// Waits for the first event `pick` maps to `Some`, skipping others.
    pub async fn wait_for<T>(&mut self, what: &str, pick: impl Fn(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(ev)) => {
                    if let Some(v) = pick(&ev) {
                        return v;
                    }
                }
                Ok(None) => panic!("event stream ended while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    pub async fn wait_connected(&mut self) {
        self.wait_for("Connected", |e| {
            matches!(e, Event::Connected(_)).then_some(())
        })
        .await;
    }

    /// Waits for the pairing code the client shows for phone-number linking.
    pub async fn wait_pair_code(&mut self) -> String {
        self.wait_for("a pairing code", |e| match e {
            Event::PairingCode(c) => Some(c.code.clone()),
            Event::PairingCodeError(e) => panic!("no pairing code: {}", e.error),
            _ => None,
        })
        .await
    }

    pub async fn wait_qr(&mut self) -> String {
        self.wait_for("a QR code", |e| match e {
            Event::PairingQrCode(q) => Some(q.code.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for an incoming message matching `pred`; returns it. Messages
    /// arrive in batches (an offline backlog comes as one), so the others of
    /// a batch are kept for later calls.
    pub async fn wait_message(
        &mut self,
        what: &str,
        pred: impl Fn(&wa::Message, &MessageInfo) -> bool,
    ) -> (Arc<wa::Message>, Arc<MessageInfo>) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(pos) = self.inbox.iter().position(|(m, i)| pred(m, i)) {
                return self.inbox.remove(pos).expect("position is in range");
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(ev)) => {
                    if let Event::Messages(batch) = &*ev {
                        self.inbox.extend(
                            batch
                                .messages
                                .iter()
                                .map(|m| (m.message.clone(), m.info.clone())),
                        );
                    }
                }
                Ok(None) => panic!("event stream ended while waiting for {what}"),
                Err(_) => panic!(
                    "timed out waiting for {what}; unclaimed: {:?}",
                    self.inbox
                        .iter()
                        .map(|(_, i)| i.id.clone())
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(10), h.shutdown())
                .await
                .expect("client stops");
        }
    }
}

/// Pairs a new client with `phone` through the admin scan and waits until it
/// is connected.
pub async fn paired_client(
    sim: &TestSim,
    phone: &Phone<'_>,
    name: &str,
) -> (TestClient, ClientConfig) {
    let cfg = sim.client_config(sim.db_path(name));
    let mut client = cfg.start(name).await;
    let qr = client.wait_qr().await;
    phone.scan(&qr).await;
    client.wait_connected().await;
    (client, cfg)
}

/// The text of a message (plain or extended).
pub fn text_of(m: &wa::Message) -> Option<String> {
    m.conversation.clone().or_else(|| {
        m.extended_text_message
            .as_option()
            .and_then(|e| e.text.clone())
    })
}

fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("WA_SIM_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}
