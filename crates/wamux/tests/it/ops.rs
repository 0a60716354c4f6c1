//! Operations: what an administrator installs and runs. The systemd unit and the nginx site
//! from `deploy/` are checked by the real tools and nginx really proxies a running wamux;
//! the built binary runs as in production (log files, metrics, backup) against the
//! simulator. `scripts/ops-test-setup` installs nginx (Debian package) when missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::oneshot;
use wamux::Config;

use crate::helpers::{KEY, wait_for, wait_until};

const LONG: Duration = Duration::from_secs(60);

pub(crate) fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// Installs nginx and curl once per test run (idempotent; nothing to do when present).
pub(crate) fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_file("scripts/ops-test-setup"))
            .output()
            .expect("run scripts/ops-test-setup");
        assert!(
            out.status.success(),
            "scripts/ops-test-setup failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

fn nginx_bin() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private CA and a certificate it signed for `localhost` and 127.0.0.1.
struct Certs {
    ca_pem: String,
    cert: PathBuf,
    key: PathBuf,
}

fn make_certs(dir: &Path, tag: &str) -> Certs {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_params = || {
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::CommonName, format!("wamux test CA {tag}"));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p
    };
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params().self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params(), ca_key);
    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, format!("localhost {tag}"));
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    Certs {
        ca_pem,
        cert: cert_path,
        key: key_path,
    }
}

fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// wamux in this process, on port 0.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::helpers::config(&dir.path().join("data"));
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(wamux::run(config, listener, async move {
            // Dropping the sender stops the server too.
            let _stopped = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _receiver_gone = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("server stops")
                .expect("no panic")
                .expect("server ran without error");
        }
    }
}

/// An nginx child process with its own prefix, killed on drop.
struct Nginx {
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Best effort: the process may already be gone.
        let _already_gone = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// The deployed site with what a test must change: certificate paths, and for a real run
/// the ports and the upstream. Each substitution must apply, so a reshaped site file fails
/// here rather than silently testing something else.
fn site_for_test(certs: &Certs, www: &Path, ports: Option<(u16, u16, SocketAddr)>) -> String {
    let mut site = std::fs::read_to_string(repo_file("deploy/nginx/wamux.conf")).unwrap();
    let mut subst = |from: &str, to: &str| {
        assert!(site.contains(from), "the nginx site no longer has `{from}`");
        site = site.replace(from, to);
    };
    subst(
        "/etc/letsencrypt/live/wamux.example.com/fullchain.pem",
        certs.cert.to_str().unwrap(),
    );
    subst(
        "/etc/letsencrypt/live/wamux.example.com/privkey.pem",
        certs.key.to_str().unwrap(),
    );
    subst("root /var/www/html;", &format!("root {};", www.display()));
    if let Some((http, https, upstream)) = ports {
        subst("server 127.0.0.1:3000;", &format!("server {upstream};"));
        subst("listen 80;", &format!("listen 127.0.0.1:{http};"));
        subst("listen [::]:80;", "");
        subst("listen 443 ssl;", &format!("listen 127.0.0.1:{https} ssl;"));
        subst("listen [::]:443 ssl;", "");
        subst("server_name wamux.example.com;", "server_name localhost;");
    }
    site
}

/// A main nginx.conf around the site, everything under `prefix`.
fn nginx_conf(prefix: &Path, site: &str) -> PathBuf {
    let p = prefix.display();
    std::fs::create_dir_all(prefix.join("tmp")).unwrap();
    std::fs::write(prefix.join("site.conf"), site).unwrap();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log {p}/access.log;\n  client_body_temp_path {p}/tmp/body;\n  \
         proxy_temp_path {p}/tmp/proxy;\n  fastcgi_temp_path {p}/tmp/fastcgi;\n  \
         uwsgi_temp_path {p}/tmp/uwsgi;\n  scgi_temp_path {p}/tmp/scgi;\n  include {p}/site.conf;\n}}\n"
    );
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

#[test]
fn systemd_accepts_the_unit() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo_file("deploy/systemd/wamux.service")).unwrap();
    let exec = "ExecStart=/usr/local/bin/wamux serve";
    assert!(unit.contains(exec), "the unit no longer has `{exec}`");
    let unit = unit.replace(
        exec,
        &format!("ExecStart={} serve", env!("CARGO_BIN_EXE_wamux")),
    );
    // The PM2 limits the seed ran with: restart on failure, 10 restarts, 10 s apart.
    for line in [
        "Restart=on-failure",
        "StartLimitBurst=10",
        "RestartSec=10s",
        "User=wamux",
        "StateDirectory=wamux",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.contains(line), "the unit lacks `{line}`");
    }
    let path = dir.path().join("wamux.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("wamux.service"),
        "systemd-analyze warns about the unit: {stderr}"
    );
}

#[test]
fn install_script_is_idempotent_in_a_scratch_root() {
    let root = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::new("bash")
            .arg(repo_file("deploy/install.sh"))
            .arg(env!("CARGO_BIN_EXE_wamux"))
            .env("WAMUX_INSTALL_PREFIX", root.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "install.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run();
    let env_file = root.path().join("etc/wamux/wamux.env");
    let first = std::fs::read_to_string(&env_file).unwrap();
    assert!(first.contains("WAMUX_API_KEY="));
    run();
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        first,
        "a second run must keep the settings (and the API key)"
    );
    assert!(root.path().join("usr/local/bin/wamux").is_file());
    assert!(
        root.path()
            .join("etc/systemd/system/wamux.service")
            .is_file()
    );
}

#[test]
fn nginx_accepts_the_site() {
    setup();
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(&dir.path().join("tls"), "t");
    let site = site_for_test(&certs, dir.path(), None);
    let conf = nginx_conf(dir.path(), &site);
    let out = Command::new(nginx_bin())
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("nginx");
    assert!(
        out.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn nginx_in_front_serves_the_api_over_https_and_carries_socketio() {
    setup();
    let server = Server::start(|c| {
        c.trusted_proxies = wamux::net::TrustedProxies::parse(&["127.0.0.1".into()]).unwrap()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(&dir.path().join("tls"), "nginx");
    let (http, https) = (free_port(), free_port());
    let site = site_for_test(&certs, dir.path(), Some((http, https, server.addr)));
    let conf = nginx_conf(dir.path(), &site);
    let child = Command::new(nginx_bin())
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let _nginx = Nginx { child };
    let client = https_client(&certs.ca_pem);
    let base = format!("https://localhost:{https}");

    let health = wait_for(Duration::from_secs(20), "nginx to proxy HTTPS", || async {
        let r = client
            .get(format!("{base}/api/health"))
            .header("X-API-Key", KEY)
            .send()
            .await
            .ok()?;
        (r.status() == StatusCode::OK).then_some(r)
    })
    .await;
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    let r = client
        .get(format!("{base}/api/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the key is still required"
    );

    // Plain HTTP is sent to HTTPS.
    let r = client
        .get(format!("http://localhost:{http}/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers()["location"], "https://localhost/api/health");

    // Socket.IO over the WebSocket upgrade, through nginx.
    let (status, first) = socketio_over_websocket(https, &certs.ca_pem).await;
    assert!(status.contains(" 101 "), "upgrade refused: {status}");
    assert!(
        first.0.starts_with("0{") && first.0.contains("\"sid\""),
        "no engine.io open packet: {}",
        first.0
    );
    assert!(
        first.1.starts_with("40{") && first.1.contains("\"sid\""),
        "Socket.IO connect not acknowledged: {}",
        first.1
    );
    server.stop().await;
}

/// Opens `wss://localhost:PORT/socket.io/` by hand (the HTTP upgrade, then WebSocket
/// frames): returns the upgrade's status line, the engine.io open packet and the answer to a
/// Socket.IO connect.
async fn socketio_over_websocket(port: u16, ca_pem: &str) -> (String, (String, String)) {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut io = BufReader::new(tls);
    let request = format!(
        "GET /socket.io/?EIO=4&transport=websocket&apiKey={KEY} HTTP/1.1\r\nHost: localhost:{port}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    io.get_mut().write_all(request.as_bytes()).await.unwrap();
    let mut status = String::new();
    io.read_line(&mut status).await.unwrap();
    loop {
        let mut line = String::new();
        io.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    if !status.contains(" 101 ") {
        return (status, (String::new(), String::new()));
    }
    let open = read_text_frame(&mut io).await;
    // A client frame must be masked; a zero mask keeps the payload as is.
    io.get_mut()
        .write_all(&[0x81, 0x80 | 2, 0, 0, 0, 0, b'4', b'0'])
        .await
        .unwrap();
    // Skip engine.io pings ("2"), answering them, until the connect answer arrives.
    let mut connect = read_text_frame(&mut io).await;
    for _ in 0..5 {
        if connect != "2" {
            break;
        }
        io.get_mut()
            .write_all(&[0x81, 0x80 | 1, 0, 0, 0, 0, b'3'])
            .await
            .unwrap();
        connect = read_text_frame(&mut io).await;
    }
    (status, (open, connect))
}

async fn read_text_frame<R: tokio::io::AsyncRead + Unpin>(io: &mut R) -> String {
    let read = async {
        let mut head = [0u8; 2];
        io.read_exact(&mut head).await.unwrap();
        let len = match head[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                io.read_exact(&mut l).await.unwrap();
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                io.read_exact(&mut l).await.unwrap();
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        io.read_exact(&mut payload).await.unwrap();
        assert_eq!(head[0] & 0x0f, 1, "expected a text frame");
        String::from_utf8(payload).unwrap()
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a WebSocket frame within 10 s")
}

#[tokio::test]
async fn builtin_tls_serves_https_and_picks_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("tls");
    let first = make_certs(&tls_dir, "first");
    let (cert, key) = (first.cert.clone(), first.key.clone());
    let server = Server::start(|c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
    })
    .await;
    let port = server.addr.port();
    let url = format!("https://localhost:{port}/api/health");

    let client = https_client(&first.ca_pem);
    let r = wait_for(Duration::from_secs(10), "HTTPS to answer", || async {
        client.get(&url).header("X-API-Key", KEY).send().await.ok()
    })
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        client
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    // Plain HTTP on the TLS port gets nothing.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_err()
    );

    // A renewed certificate (from another CA, to tell them apart) is served without a restart.
    let second = make_certs(&tls_dir, "second");
    let renewed = https_client(&second.ca_pem);
    wait_until(
        wamux::tls::RELOAD_EVERY * 5,
        "the renewed certificate",
        || async {
            renewed
                .get(&url)
                .header("X-API-Key", KEY)
                .send()
                .await
                .is_ok()
        },
    )
    .await;
    assert!(
        https_client(&first.ca_pem).get(&url).send().await.is_err(),
        "the old certificate is still served"
    );
    server.stop().await;
}

/// One parsed exposition: samples by `name{labels}` (labels as written), checked strictly
/// against the text format (0.0.4): every sample belongs to a family declared by `# TYPE`,
/// names and labels are well formed, values are numbers, histograms are cumulative and end
/// with `+Inf` equal to `_count`.
#[derive(Debug, Default)]
struct Exposition {
    types: std::collections::HashMap<String, String>,
    samples: std::collections::BTreeMap<String, f64>,
}

impl Exposition {
    fn parse(text: &str) -> Result<Self, String> {
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
                })
        };
        let mut e = Exposition::default();
        let mut last_bucket: Option<(String, f64, f64)> = None;
        for (no, line) in text.lines().enumerate() {
            let err = |m: &str| format!("line {}: {m}: {line}", no + 1);
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        if !valid_name(name) {
                            return Err(err("bad metric name"));
                        }
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        {
                            return Err(err("unknown type"));
                        }
                        if e.types.insert(name.into(), kind.into()).is_some() {
                            return Err(err("family declared twice"));
                        }
                    }
                    (Some("HELP"), Some(name), _) if valid_name(name) => {}
                    _ => return Err(err("bad comment")),
                }
                continue;
            }
            let (series, value) = line.rsplit_once(' ').ok_or_else(|| err("no value"))?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().map_err(|_| err("value is not a number"))?,
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (
                    n,
                    l.strip_suffix('}')
                        .ok_or_else(|| err("unclosed label set"))?,
                ),
                None => (series, ""),
            };
            if !valid_name(name) {
                return Err(err("bad metric name"));
            }
            let mut le = None;
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| err("bad label"))?;
                if !valid_name(k) || k.contains(':') {
                    return Err(err("bad label name"));
                }
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .ok_or_else(|| err("label value not quoted"))?;
                if k == "le" {
                    le = Some(if v == "+Inf" {
                        f64::INFINITY
                    } else {
                        v.parse::<f64>().map_err(|_| err("bad le"))?
                    });
                }
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| e.types.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(name);
            if !e.types.contains_key(family) {
                return Err(err("sample without a # TYPE"));
            }
            if name.ends_with("_bucket") && family != name {
                let le = le.ok_or_else(|| err("bucket without le"))?;
                if let Some((f, prev_le, prev_v)) = &last_bucket
                    && f == family
                    && (le <= *prev_le || value < *prev_v)
                {
                    return Err(err("buckets not increasing"));
                }
                last_bucket = Some((family.to_owned(), le, value));
            }
            if name.ends_with("_count") && family != name {
                match &last_bucket {
                    Some((f, le, v)) if f == family && le.is_infinite() && *v == value => {}
                    _ => return Err(err("_count differs from the +Inf bucket")),
                }
            }
            if e.samples.insert(series.to_owned(), value).is_some() {
                return Err(err("sample repeated"));
            }
        }
        Ok(e)
    }

    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no sample {series} in {:?}", self.samples.keys()))
    }
}

#[test]
fn the_metrics_parser_is_strict() {
    let ok = "# TYPE a_total counter\na_total{x=\"1\"} 3\n# TYPE h histogram\n\
              h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
    assert_eq!(Exposition::parse(ok).unwrap().get("h_count"), 2.0);
    for bad in [
        "a_total 1\n",
        "# TYPE a counter\na{x=1} 1\n",
        "# TYPE a counter\na one\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",
    ] {
        assert!(Exposition::parse(bad).is_err(), "accepted: {bad}");
    }
}

#[cfg(feature = "sandbox")]
mod production_binary {
    //! The built binary, configured as deploy/ configures it, against the simulator.

    use super::*;
    use crate::helpers::Sim;
    use serde_json::json;

    const ALICE: &str = "15550007001";
    const BOB: &str = "15550007002";
    // Needles a log must never contain.
    const API_KEY: &str = "ops-api-key-5d1c9a7e3b";
    /// `whsec_` + base64("ops-test-webhook-secret-32-bytes").
    const WEBHOOK_SECRET: &str = "whsec_b3BzLXRlc3Qtd2ViaG9vay1zZWNyZXQtMzItYnl0ZXM=";
    const HEADER_VALUE: &str = "receiver-token-8e2f4c";
    const INBOUND: &str = "inbound body b71e: my card is 4111";
    const OUTBOUND: &str = "outbound body 39ca: the door code is 2580";

    struct Wamux {
        child: Child,
        base: String,
        http: reqwest::Client,
    }

    impl Wamux {
        fn spawn(data_dir: &Path, log_dir: &Path, sim: &Sim, out: &Path) -> Self {
            let port = free_port();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_wamux"));
            for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("WAMUX_")) {
                cmd.env_remove(k);
            }
            cmd.arg("serve")
                .env("WAMUX_API_KEY", API_KEY)
                .env("WAMUX_HOST", "127.0.0.1")
                .env("WAMUX_PORT", port.to_string())
                .env("WAMUX_DATA_DIR", data_dir)
                .envs(crate::helpers::database_env(data_dir))
                .env("WAMUX_LOG_DIR", log_dir)
                .env("WAMUX_LOG", "info,wamux=debug")
                .env("WAMUX_LOG_MASK_PHONES", "true")
                .env("WAMUX_WA_URL", sim.inner.ws_url())
                .env("WAMUX_WA_CA_FILE", sim.inner.ca_file())
                .env("WAMUX_WEBHOOK_ALLOW_PRIVATE", "true")
                .stdout(std::fs::File::create(out.with_extension("stdout")).unwrap())
                .stderr(std::fs::File::create(out.with_extension("stderr")).unwrap());
            Wamux {
                child: cmd.spawn().expect("start wamux"),
                base: format!("http://127.0.0.1:{port}"),
                http: reqwest::Client::new(),
            }
        }

        async fn ready(&self) {
            wait_until(LONG, "wamux to be ready", || async {
                self.http
                    .get(format!("{}/readyz", self.base))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK)
            })
            .await;
        }

        fn get(&self, path: &str) -> reqwest::RequestBuilder {
            self.http
                .get(format!("{}{path}", self.base))
                .header("X-API-Key", API_KEY)
        }

        fn post(&self, path: &str, body: serde_json::Value) -> reqwest::RequestBuilder {
            self.http
                .post(format!("{}{path}", self.base))
                .header("X-API-Key", API_KEY)
                .json(&body)
        }

        async fn status(&self, session: &str) -> String {
            let r = self.get(&format!("/api/status/{session}")).send().await;
            match r {
                Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default()["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                Err(_) => String::new(),
            }
        }

        async fn wait_connected(&self, session: &str) {
            wait_until(LONG, &format!("{session} to connect"), || async {
                self.status(session).await == "connected"
            })
            .await;
        }

        async fn metrics(&self) -> Exposition {
            let r = self.get("/metrics").send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert!(
                r.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/plain; version=0.0.4")
            );
            Exposition::parse(&r.text().await.unwrap()).unwrap_or_else(|e| panic!("{e}"))
        }

        /// SIGTERM, as systemd stops it; waits for a clean exit.
        async fn terminate(mut self) {
            let pid = self.child.id().to_string();
            assert!(
                Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap()
                    .success()
            );
            let status = wait_for(Duration::from_secs(30), "wamux to exit", || {
                let s = self.child.try_wait().unwrap();
                async move { s }
            })
            .await;
            assert!(status.success(), "wamux exited with {status}");
        }
    }

    impl Drop for Wamux {
        fn drop(&mut self) {
            // Only matters when a test failed half-way; a stopped child ignores it.
            let _already_gone = self.child.kill();
            let _reaped = self.child.wait();
        }
    }

    /// A webhook receiver that hands over each body it gets.
    async fn receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let app = axum::Router::new().fallback(move |body: String| {
            let tx = tx.clone();
            async move {
                let _test_gone = tx.send(body);
                "ok"
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, rx)
    }

    #[tokio::test]
    async fn a_production_run_logs_to_the_seed_files_without_secrets_counts_messages_and_backs_up()
    {
        let dir = tempfile::tempdir().unwrap();
        let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
        let sim = Sim::start(dir.path().join("sim")).await;
        sim.phone(ALICE, "Alice").await;
        sim.phone(BOB, "Bob").await;
        let wamux = Wamux::spawn(&data, &logs, &sim, &dir.path().join("run1"));
        wamux.ready().await;

        // Probes answer without a key and without details; metrics need the key.
        let healthz = wamux
            .http
            .get(format!("{}/healthz", wamux.base))
            .send()
            .await
            .unwrap();
        assert_eq!(healthz.text().await.unwrap(), "ok");
        let anon = wamux
            .http
            .get(format!("{}/metrics", wamux.base))
            .send()
            .await
            .unwrap();
        assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
        let before = wamux.metrics().await;

        // Pair Alice's phone, set a webhook with a secret and a header, exchange messages.
        let r = wamux
            .post("/api/start-session", json!({"sessionId": "ops"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let qr = wait_for(LONG, "a QR", || async {
            let r = wamux.get("/api/qr/ops").send().await.ok()?;
            let b: serde_json::Value = r.json().await.ok()?;
            b["qr"].as_str().map(str::to_owned)
        })
        .await;
        sim.scan(ALICE, &qr).await;
        wamux.wait_connected("ops").await;
        let (hook_url, mut hooks) = receiver().await;
        let r = wamux
            .post(
                "/api/ops/webhook",
                json!({"url": hook_url, "events": ["all"], "secret": WEBHOOK_SECRET,
                       "headers": {"X-Receiver-Token": HEADER_VALUE}}),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        sim.send(BOB, ALICE, INBOUND).await;
        tokio::time::timeout(LONG, async {
            while let Some(body) = hooks.recv().await {
                if body.contains(INBOUND) {
                    return;
                }
            }
        })
        .await
        .expect("the inbound message reaches the webhook");
        let r = wamux
            .post(
                "/api/send-message",
                json!({"sessionId": "ops", "to": BOB, "text": OUTBOUND}),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        wait_until(LONG, "Bob to get the message", || async {
            sim.messages(BOB)
                .await
                .iter()
                .any(|m| m["text"] == OUTBOUND)
        })
        .await;
        // The key in the query (the seed's form) must not reach the access log either.
        let r = wamux
            .http
            .get(format!("{}/api/sessions?apiKey={API_KEY}", wamux.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);

        // Counters moved.
        let after = wait_for(LONG, "the counters to move", || async {
            let m = wamux.metrics().await;
            let moved = m.get("wamux_messages_total{direction=\"in\"}")
                > before.get("wamux_messages_total{direction=\"in\"}")
                && m.get("wamux_messages_total{direction=\"out\"}")
                    > before.get("wamux_messages_total{direction=\"out\"}")
                && m.get("wamux_webhook_deliveries_total{outcome=\"delivered\"}")
                    > before.get("wamux_webhook_deliveries_total{outcome=\"delivered\"}");
            moved.then_some(m)
        })
        .await;
        assert_eq!(after.get("wamux_sessions{status=\"connected\"}"), 1.0);
        assert!(after.get("wamux_webhook_delivery_duration_seconds_count") >= 1.0);
        assert_eq!(
            after.types["wamux_webhook_delivery_duration_seconds"],
            "histogram"
        );
        assert!(after.samples.contains_key("wamux_webhook_outbox_depth"));
        assert!(after.samples.contains_key("wamux_session_reconnects_total"));

        // A backup taken while the server runs.
        let backup = dir.path().join("backup");
        let out = Command::new(env!("CARGO_BIN_EXE_wamux"))
            .arg("backup")
            .arg("--out")
            .arg(&backup)
            .env("WAMUX_DATA_DIR", &data)
            .envs(crate::helpers::database_env(&data))
            .env("WAMUX_API_KEY", API_KEY)
            .env_remove("WAMUX_LOG_DIR")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "wamux backup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wamux.terminate().await;

        // The logs: the seed's three files, an access log line, and no secret.
        for name in wamux::telemetry::LOG_FILES {
            assert!(logs.join(name).is_file(), "{name} missing");
        }
        let combined = std::fs::read_to_string(logs.join("combined.log")).unwrap();
        assert!(combined.contains("wamux listening"), "{combined}");
        assert!(combined.contains("/api/send-message"), "no access log line");
        let mut texts = vec![];
        for name in wamux::telemetry::LOG_FILES {
            texts.push((
                name.to_owned(),
                std::fs::read_to_string(logs.join(name)).unwrap(),
            ));
        }
        for ext in ["stdout", "stderr"] {
            let p = dir.path().join("run1").with_extension(ext);
            texts.push((ext.to_owned(), std::fs::read_to_string(p).unwrap()));
        }
        let needles = [
            API_KEY,
            WEBHOOK_SECRET,
            &WEBHOOK_SECRET["whsec_".len()..],
            HEADER_VALUE,
            INBOUND,
            OUTBOUND,
            "my card",
            "door code",
            ALICE,
            BOB,
        ];
        for (name, text) in &texts {
            for needle in needles {
                assert!(
                    !text.contains(needle),
                    "{name} contains `{needle}`:\n{text}"
                );
            }
        }

        // The backup holds the session: a server started on it is connected again without
        // a QR (the original is stopped first: one device, one connection).
        assert!(backup.join("wamux.db").is_file() && backup.join("whatsapp.db").is_file());
        // A backup is a SQLite installation; on PostgreSQL it goes back with `db copy`.
        if let Some(url) = crate::helpers::database_url(&backup) {
            let copy = Command::new(env!("CARGO_BIN_EXE_wamux"))
                .args(["db", "copy", "--from"])
                .arg(&backup)
                .args(["--to", url.expose()])
                .env_remove("WAMUX_DATABASE_URL")
                .output()
                .expect("run wamux db copy");
            assert!(
                copy.status.success(),
                "db copy of the backup failed: {}",
                String::from_utf8_lossy(&copy.stderr)
            );
        }
        let restored = Wamux::spawn(
            &backup,
            &dir.path().join("logs2"),
            &sim,
            &dir.path().join("run2"),
        );
        restored.ready().await;
        restored.wait_connected("ops").await;
        let history: serde_json::Value = restored
            .get("/api/messages/ops")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            history["messages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["text"] == INBOUND),
            "history missing from the backup: {history}"
        );
        restored.terminate().await;
        sim.inner.shutdown().await;
    }
}
