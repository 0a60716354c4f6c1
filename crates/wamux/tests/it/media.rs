//! Media as users see it: files phones send arrive at a working `fileUrl` with the exact
//! bytes (sha256), in the history and in the webhook; files sent with `send-media` (URL,
//! base64, multipart) reach the phone byte for byte; failed downloads still announce the
//! message, with `media.error`, and a retry fixes them (through the phone's media re-upload
//! when the original path has expired); `/uploads` serves ranges and refuses every odd name.

use std::time::Duration;

use axum::body::Bytes;
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use wamux::Config;

use crate::helpers::{Options, TestApp, assert_error, wait_for};

pub(crate) const ALICE: &str = "15550000001";
pub(crate) const BOB: &str = "15550000002";
pub(crate) const LONG: Duration = Duration::from_secs(60);

pub(crate) fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Deterministic bytes that do not compress to nothing.
pub(crate) fn bytes(n: usize, seed: u8) -> Vec<u8> {
    let mut x = seed as u32 | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub(crate) fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub(crate) async fn app_with(configure: impl FnOnce(&mut Config) + Send + 'static) -> TestApp {
    TestApp::start_with(Options {
        sim: true,
        configure: Some(Box::new(move |c: &mut Config| {
            c.webhook.allow_private = true;
            configure(c);
        })),
        ..Options::default()
    })
    .await
}

/// Phones Alice (paired to session `s1`) and Bob.
pub(crate) async fn paired(app: &TestApp) {
    let sim = app.sim.as_ref().unwrap();
    sim.phone(ALICE, "Alice").await;
    sim.phone(BOB, "Bob").await;
    crate::e2e::pair(app, "s1", ALICE).await;
}

/// A webhook receiver: every body it gets, as JSON, in a channel.
pub(crate) struct Hooks {
    rx: mpsc::UnboundedReceiver<Value>,
}

impl Hooks {
    /// A receiver on a loopback port: its URL, and every JSON body it gets.
    pub(crate) async fn listen() -> (String, mpsc::UnboundedReceiver<Value>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let router = axum::Router::new().fallback(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    let _ = tx.send(v);
                }
                StatusCode::OK
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (url, rx)
    }

    pub(crate) async fn start(app: &TestApp) -> Self {
        let (url, rx) = Self::listen().await;
        let (s, b) = app
            .post_json(
                "/api/s1/webhook",
                json!({"url": url, "events": ["message-received"]}),
            )
            .await;
        assert!(s.is_success(), "{b}");
        Self { rx }
    }

    /// The `message-received` webhook of message `id`.
    pub(crate) async fn message(&mut self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + LONG;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = tokio::time::timeout(left, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no webhook for {id}"))
                .expect("receiver alive");
            if v["event"] == "message-received" && v["data"]["id"] == id {
                return v["data"].clone();
            }
        }
    }
}

/// The phone sends a file; returns the message id.
pub(crate) async fn phone_sends(
    app: &TestApp,
    mimetype: &str,
    file_name: Option<&str>,
    caption: Option<&str>,
    data: &[u8],
) -> String {
    phone_sends_as(app, mimetype, file_name, caption, data, false).await
}

/// The phone sends a file, as a voice note (recorded in the app) when `ptt`.
pub(crate) async fn phone_sends_as(
    app: &TestApp,
    mimetype: &str,
    file_name: Option<&str>,
    caption: Option<&str>,
    data: &[u8],
    ptt: bool,
) -> String {
    let sim = app.sim.as_ref().unwrap();
    let mut media = json!({"mimetype": mimetype, "data": b64(data), "ptt": ptt});
    if let Some(n) = file_name {
        media["fileName"] = n.into();
    }
    let r = sim
        .admin
        .post(sim.url(&format!("/phones/{BOB}/messages")))
        .json(&json!({"to": ALICE, "caption": caption, "media": media}))
        .send()
        .await
        .unwrap();
    let (status, body) = crate::helpers::into_json(r).await;
    assert!(status.is_success(), "phone send: {body}");
    body["id"].as_str().expect("message id").to_owned()
}

pub(crate) async fn history_message(app: &TestApp, id: &str) -> Value {
    let (s, b) = app.get_json("/api/messages/s1?limit=500").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in history: {b}"))
}

/// The file behind a `fileUrl`: status, content type and bytes.
pub(crate) async fn fetch(app: &TestApp, url: &str) -> (StatusCode, String, Vec<u8>) {
    let r = app.http.get(url).send().await.unwrap();
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, r.bytes().await.unwrap().to_vec())
}

pub(crate) fn assert_stored(app: &TestApp, media: &Value, data: &[u8], mimetype: &str) {
    assert!(media.get("error").is_none(), "unexpected error: {media}");
    assert_eq!(media["mimetype"], mimetype, "{media}");
    assert_eq!(media["fileSize"], data.len(), "{media}");
    assert_eq!(media["sha256"], sha_hex(data), "{media}");
    let name = media["fileName"].as_str().unwrap();
    let (ts, rest) = name.split_once('_').unwrap();
    assert!(ts.parse::<i64>().unwrap() > 1_600_000_000, "{name}");
    let (random, _ext) = rest.split_once('.').unwrap();
    assert_eq!(random.len(), 32, "128 random bits in hex: {name}");
    assert_eq!(
        media["fileUrl"],
        format!("{}/uploads/{name}", app.base),
        "{media}"
    );
}

#[tokio::test]
async fn phone_media_of_every_kind_arrives_at_its_file_url_with_the_same_bytes() {
    let app = app_with(|_| {}).await;
    paired(&app).await;
    let mut hooks = Hooks::start(&app).await;
    // mimetype, document name, caption, size, message type, stored extension
    let cases = [
        ("image/jpeg", None, Some("a photo"), 40_000, "image", "jpg"),
        ("video/mp4", None, Some("a clip"), 300_000, "video", "mp4"),
        ("audio/mpeg", None, None, 23_456, "audio", "mp3"),
        // A voice note: audio recorded in the app.
        ("audio/ogg; codecs=opus", None, None, 12_345, "ptt", "ogg"),
        (
            "application/pdf",
            Some("Q3 report.pdf"),
            Some("the report"),
            77_777,
            "document",
            "pdf",
        ),
        ("image/webp", None, None, 9_000, "sticker", "webp"),
    ];
    for (i, (mimetype, file_name, caption, size, kind, ext)) in cases.into_iter().enumerate() {
        let data = bytes(size, i as u8 + 1);
        let ptt = kind == "ptt";
        let id = phone_sends_as(&app, mimetype, file_name, caption, &data, ptt).await;

        // The webhook carries the final media object.
        let msg = hooks.message(&id).await;
        assert_eq!(msg["type"], kind, "{msg}");
        assert_eq!(msg["from"], format!("{BOB}@s.whatsapp.net"));
        if let Some(c) = caption {
            assert_eq!(msg["caption"], c, "{msg}");
        }
        let media = &msg["media"];
        assert_stored(&app, media, &data, mimetype);
        assert!(
            media["fileName"].as_str().unwrap().ends_with(ext),
            "{media}"
        );
        match file_name {
            Some(n) => assert_eq!(media["originalName"], n),
            None => assert_eq!(media["originalName"], media["fileName"]),
        }

        // The same object in the history.
        let stored = history_message(&app, &id).await;
        assert_eq!(stored["media"], msg["media"]);

        // The link serves exactly the phone's bytes, with the file's type.
        let (status, ct, body) = fetch(&app, media["fileUrl"].as_str().unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(sha_hex(&body), sha_hex(&data), "{kind}");
        assert!(mimetype.starts_with(ct.as_str()), "{ct} for {mimetype}");
    }
    app.stop().await;
}

/// A small HTTP server with one file on it.
async fn file_server(path: &'static str, content_type: &'static str, data: Vec<u8>) -> String {
    let router = axum::Router::new().route(
        path,
        axum::routing::get(move || {
            let data = data.clone();
            async move { ([("content-type", content_type)], data) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("{base}{path}")
}

/// A multipart `send-media` form from s1 to Bob with one file.
fn file_form(data: &[u8], file_name: &str, mime: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .text("sessionId", "s1")
        .text("to", BOB)
        .part(
            "file",
            reqwest::multipart::Part::bytes(data.to_vec())
                .file_name(file_name.to_owned())
                .mime_str(mime)
                .unwrap(),
        )
}

/// Posts a multipart form to `POST /api/send-media`.
async fn send_multipart(app: &TestApp, form: reqwest::multipart::Form) -> (StatusCode, Value) {
    let r = app
        .req(Method::POST, "/api/send-media")
        .multipart(form)
        .send()
        .await
        .unwrap();
    crate::helpers::into_json(r).await
}

/// Waits for Bob's phone to have message `id`, and returns its media summary.
pub(crate) async fn bob_received(app: &TestApp, id: &str) -> Value {
    let sim = app.sim.as_ref().unwrap();
    wait_for(LONG, &format!("Bob's phone to get {id}"), || async {
        sim.messages(BOB)
            .await
            .into_iter()
            .find(|m| m["id"] == id && m["fromMe"] == false)
            .map(|m| m["media"].clone())
    })
    .await
}

#[tokio::test]
async fn send_media_by_url_base64_and_upload_reaches_the_phone_byte_identical() {
    let app = app_with(|c| c.media.allow_private = true).await;
    paired(&app).await;

    // From a URL: type from the server's Content-Type, stored for the history too.
    let photo = bytes(50_000, 7);
    let url = file_server("/files/photo.jpg", "image/jpeg", photo.clone()).await;
    let (s, sent) = app
        .post_json(
            "/api/send-media",
            json!({"sessionId": "s1", "to": BOB, "url": url, "caption": "from a url"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sent}");
    assert_eq!(sent["type"], "image");
    assert_eq!(sent["status"], "sent");
    assert_stored(&app, &sent["media"], &photo, "image/jpeg");
    let got = bob_received(&app, sent["messageId"].as_str().unwrap()).await;
    assert_eq!(got["sha256"], sha_hex(&photo), "{got}");
    assert_eq!(got["kind"], "image");
    let (_, _, served) = fetch(&app, sent["media"]["fileUrl"].as_str().unwrap()).await;
    assert_eq!(served, photo);
    let stored = history_message(&app, sent["messageId"].as_str().unwrap()).await;
    assert_eq!(stored["media"]["sha256"], sha_hex(&photo));

    // Base64 in a data URL, as a document with its name.
    let pdf = bytes(30_000, 9);
    let (s, sent) = app
        .post_json(
            "/api/send-media",
            json!({"sessionId": "s1", "to": BOB, "fileName": "invoice.pdf",
                   "base64": format!("data:application/pdf;base64,{}", b64(&pdf))}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sent}");
    assert_eq!(sent["type"], "document");
    assert_eq!(sent["media"]["originalName"], "invoice.pdf");
    let got = bob_received(&app, sent["messageId"].as_str().unwrap()).await;
    assert_eq!(got["sha256"], sha_hex(&pdf), "{got}");
    assert_eq!(got["fileName"], "invoice.pdf");

    // Plain base64 with the type given: a video.
    let clip = bytes(80_000, 11);
    let (s, sent) = app
        .post_json(
            "/api/send-media",
            json!({"sessionId": "s1", "to": BOB, "mimetype": "video/mp4", "base64": b64(&clip)}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sent}");
    assert_eq!(sent["type"], "video");
    let got = bob_received(&app, sent["messageId"].as_str().unwrap()).await;
    assert_eq!(got["sha256"], sha_hex(&clip), "{got}");

    // Multipart upload: a voice note.
    let voice = bytes(20_000, 13);
    let form = reqwest::multipart::Form::new()
        .text("sessionId", "s1")
        .text("to", BOB)
        .text("type", "ptt")
        .part(
            "file",
            reqwest::multipart::Part::bytes(voice.clone())
                .file_name("note.ogg")
                .mime_str("audio/ogg; codecs=opus")
                .unwrap(),
        );
    let (s, sent) = send_multipart(&app, form).await;
    assert_eq!(s, StatusCode::OK, "{sent}");
    assert_eq!(sent["type"], "ptt");
    assert_stored(&app, &sent["media"], &voice, "audio/ogg; codecs=opus");
    let got = bob_received(&app, sent["messageId"].as_str().unwrap()).await;
    assert_eq!(got["sha256"], sha_hex(&voice), "{got}");
    assert_eq!(got["kind"], "audio");

    // Multipart, sticker inferred from image/webp.
    let sticker = bytes(5_000, 17);
    let form = file_form(&sticker, "s.webp", "image/webp");
    let (s, sent) = send_multipart(&app, form).await;
    assert_eq!(s, StatusCode::OK, "{sent}");
    assert_eq!(sent["type"], "sticker");
    let got = bob_received(&app, sent["messageId"].as_str().unwrap()).await;
    assert_eq!(got["sha256"], sha_hex(&sticker), "{got}");
    app.stop().await;
}

pub(crate) async fn fault(app: &TestApp, mode: &str, count: u32) {
    let sim = app.sim.as_ref().unwrap();
    let r = sim
        .admin
        .post(sim.url("/faults/media"))
        .json(&json!({"mode": mode, "count": count}))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "fault: {}",
        r.text().await.unwrap()
    );
}

#[tokio::test]
async fn failed_downloads_still_announce_the_message_with_media_error_and_retry_fixes_them() {
    let app = app_with(|_| {}).await;
    paired(&app).await;
    let mut hooks = Hooks::start(&app).await;
    for (i, mode) in ["not_found", "corrupt", "oversized"]
        .into_iter()
        .enumerate()
    {
        let data = bytes(20_000, 40 + i as u8);
        // More failures than the client's own retries, so the download really fails.
        fault(&app, mode, 10).await;
        let id = phone_sends(&app, "image/png", None, Some(mode), &data).await;
        let msg = hooks.message(&id).await;
        let media = &msg["media"];
        assert!(
            media["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{mode}: {media}"
        );
        // What is known is still there.
        assert_eq!(media["mimetype"], "image/png", "{media}");
        assert_eq!(media["fileSize"], data.len(), "{media}");
        assert_eq!(msg["caption"], mode);
        let stored = history_message(&app, &id).await;
        assert_eq!(stored["media"]["error"], media["error"]);

        fault(&app, "off", 0).await;
        let (s, fixed) = app
            .post_json(&format!("/api/messages/s1/{id}/media/retry"), json!({}))
            .await;
        assert_eq!(s, StatusCode::OK, "{mode}: {fixed}");
        assert_stored(&app, &fixed["media"], &data, "image/png");
        let (_, _, served) = fetch(&app, fixed["media"]["fileUrl"].as_str().unwrap()).await;
        assert_eq!(sha_hex(&served), sha_hex(&data));
        let stored = history_message(&app, &id).await;
        assert_eq!(stored["media"], fixed["media"]);
    }

    // Over our own limit: not downloaded at all, and said so.
    app.stop().await;
    let app = app_with(|c| c.media.max_bytes = 10_000).await;
    paired(&app).await;
    let mut hooks = Hooks::start(&app).await;
    let id = phone_sends(&app, "video/mp4", None, None, &bytes(20_000, 3)).await;
    let msg = hooks.message(&id).await;
    let err = msg["media"]["error"].as_str().unwrap();
    assert!(err.contains("limit"), "{err}");

    // Retry of an unknown message, or of one without media.
    let got = app
        .post_json("/api/messages/s1/NOPE/media/retry", json!({}))
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "message_not_found");
    app.stop().await;
}

/// Flips the simulator's `media-expiry` fault: original media paths answer 404 for good.
async fn expire_originals(app: &TestApp, enabled: bool) {
    let sim = app.sim.as_ref().unwrap();
    let r = sim
        .admin
        .post(sim.url("/faults/media-expiry"))
        .json(&json!({"enabled": enabled}))
        .send()
        .await
        .unwrap();
    let url = r.url().to_string();
    assert!(
        r.status().is_success(),
        "{url}: {}",
        r.text().await.unwrap()
    );
}

#[tokio::test]
async fn retry_of_an_expired_file_goes_through_the_phones_media_reupload() {
    let app = app_with(|_| {}).await;
    paired(&app).await;
    let mut hooks = Hooks::start(&app).await;
    expire_originals(&app, true).await;

    let data = bytes(60_000, 77);
    let id = phone_sends(&app, "image/jpeg", None, Some("expired"), &data).await;
    let msg = hooks.message(&id).await;
    let err = msg["media"]["error"].as_str().expect("media.error");
    assert!(err.contains("download failed"), "{err}");
    assert_eq!(msg["media"]["fileUrl"], Value::Null);
    assert_eq!(msg["media"]["sha256"], sha_hex(&data), "declared sha256");
    assert_eq!(history_message(&app, &id).await["media"]["error"], err);

    // The original path is still expired: only the phone's re-upload can bring the file.
    let (s, fixed) = app
        .post_json(&format!("/api/messages/s1/{id}/media/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{fixed}");
    assert_stored(&app, &fixed["media"], &data, "image/jpeg");
    let (status, _, served) = fetch(&app, fixed["media"]["fileUrl"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sha_hex(&served), sha_hex(&data));
    let stored = history_message(&app, &id).await;
    assert_eq!(stored["media"], fixed["media"]);
    assert_eq!(stored["caption"], "expired");

    // A message the phone no longer has: neither the re-upload nor the original works.
    let data = bytes(30_000, 78);
    let id = phone_sends(&app, "image/png", None, None, &data).await;
    hooks.message(&id).await;
    let sim = app.sim.as_ref().unwrap();
    let r = sim
        .admin
        .post(sim.url("/faults/phone-forgets"))
        .json(&json!({"phone": BOB, "id": id}))
        .send()
        .await
        .unwrap();
    let (status, body) = crate::helpers::into_json(r).await;
    assert!(status.is_success() && body["forgotten"] == true, "{body}");
    let got = app
        .post_json(&format!("/api/messages/s1/{id}/media/retry"), json!({}))
        .await;
    assert_error(&got, StatusCode::BAD_GATEWAY, "media_download_failed");
    let why = got.1["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        why.contains("no longer has the file") && why.contains("original location"),
        "{}",
        got.1
    );
    let stored = history_message(&app, &id).await;
    let err = stored["media"]["error"].as_str().expect("media.error");
    assert!(err.contains("no longer has the file"), "{err}");
    assert_eq!(stored["media"]["fileUrl"], Value::Null);

    // Once the original location works again, a retry falls back to it.
    expire_originals(&app, false).await;
    let (s, fixed) = app
        .post_json(&format!("/api/messages/s1/{id}/media/retry"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{fixed}");
    assert_stored(&app, &fixed["media"], &data, "image/png");
    app.stop().await;
}

/// A request sent byte for byte, so the path reaches the server as written.
async fn raw_status(app: &TestApp, path: &str) -> u16 {
    let addr = app.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {path}: {text}"))
}

#[tokio::test]
async fn uploads_serve_ranges_and_caching_and_refuse_every_odd_name() {
    let app = TestApp::start().await;
    let dir = app.dir.path().join("data").join("uploads");
    let name = "1700000000_00112233445566778899aabbccddeeff.png";
    let data = bytes(1000, 5);
    std::fs::write(dir.join(name), &data).unwrap();
    // Something that must never be reachable.
    std::fs::write(dir.join("secret.txt"), b"secret").unwrap();
    let url = app.url(&format!("/uploads/{name}"));

    // Whole file, no API key needed.
    let r = app.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["content-length"], "1000");
    assert_eq!(h["accept-ranges"], "bytes");
    assert!(h["cache-control"].to_str().unwrap().contains("max-age"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert_eq!(r.bytes().await.unwrap().to_vec(), data);

    // Ranges.
    for (range, from, to) in [
        ("bytes=0-9", 0, 9),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
    ] {
        let r = app
            .http
            .get(&url)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {from}-{to}/1000").as_str()
        );
        assert_eq!(
            r.headers()["content-length"],
            (to - from + 1).to_string().as_str()
        );
        assert_eq!(r.bytes().await.unwrap().to_vec(), data[from..=to].to_vec());
    }
    let r = app
        .http
        .get(&url)
        .header("range", "bytes=5000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */1000");

    // Conditional and HEAD.
    let r = app
        .http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = app.http.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "1000");

    // Unknown files, listings and every traversal spelling: 404.
    for path in [
        "/uploads/1700000000_ffffffffffffffffffffffffffffffff.png",
        "/uploads/secret.txt",
        "/uploads/",
        "/uploads",
        "/uploads/.staging",
        "/uploads/../wamux.db",
        "/uploads/../../etc/passwd",
        "/uploads/%2e%2e/wamux.db",
        "/uploads/%2E%2E%2Fwamux.db",
        "/uploads/..%2f..%2fetc%2fpasswd",
        "/uploads/..%5cwamux.db",
        "/uploads/..\\wamux.db",
        "/uploads//etc/passwd",
        "/uploads/%2Fetc%2Fpasswd",
        "/uploads/1700000000_00112233445566778899aabbccddeeff.png%00",
        "/uploads/%00",
        "/uploads/%ff%fe",
        "/uploads/1700000000_00112233445566778899aabbccddeeff.png/..",
    ] {
        assert_eq!(raw_status(&app, path).await, 404, "{path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn signed_links_are_required_when_enabled() {
    let app = TestApp::start_with(Options {
        configure: Some(Box::new(|c: &mut Config| c.media.signed_urls = true)),
        ..Options::default()
    })
    .await;
    let name = "1700000000_00112233445566778899aabbccddeeff.png";
    std::fs::write(app.dir.path().join("data/uploads").join(name), b"x").unwrap();
    for q in ["", "?exp=99999999999&sig=AAAA", "?exp=1&sig=AAAA"] {
        let r = app
            .http
            .get(app.url(&format!("/uploads/{name}{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{q}");
    }
    app.stop().await;
}

#[tokio::test]
async fn send_media_says_what_is_wrong_with_bad_media() {
    let app = app_with(|c| c.media.max_bytes = 64 * 1024).await;

    // Before any session exists: field checks, then the session.
    let bad = |body: Value| {
        let app = &app;
        async move { app.post_json("/api/send-media", body).await }
    };
    let got = bad(json!({"to": BOB, "base64": "AAAA"})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "missing_field");
    let got =
        bad(json!({"sessionId": "s1", "to": BOB, "base64": "AAAA", "type": "hologram"})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_media_type");
    let got =
        bad(json!({"sessionId": "s1", "to": BOB, "base64": "AAAA", "mimetype": "nonsense"})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    let got = bad(json!({"sessionId": "s1", "to": "abc", "base64": "AAAA"})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_phone");
    let got = bad(json!({"sessionId": "nobody", "to": BOB, "base64": "AAAA"})).await;
    assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");

    paired(&app).await;
    let got = bad(json!({"sessionId": "s1", "to": BOB})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "missing_field");
    let got =
        bad(json!({"sessionId": "s1", "to": BOB, "url": "http://x/y", "base64": "AAAA"})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_body");
    let got = bad(json!({"sessionId": "s1", "to": BOB, "base64": "not base64 at all!!"})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_base64");
    let got = bad(json!({"sessionId": "s1", "to": BOB, "base64": ""})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "empty_media");
    let got = bad(json!({"sessionId": "s1", "to": BOB, "base64": "data:image/png;base64,"})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "empty_media");
    let got = bad(json!({"sessionId": "s1", "to": BOB, "base64": b64(&bytes(100_000, 1))})).await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "media_too_large");
    // Private addresses are refused like webhook targets; bad URLs are named.
    let local = file_server("/f.png", "image/png", bytes(10, 1)).await;
    let got = bad(json!({"sessionId": "s1", "to": BOB, "url": local})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_url");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{}",
        got.1
    );
    let got = bad(json!({"sessionId": "s1", "to": BOB, "url": "ftp://example.com/x"})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_url");
    // Multipart without a file.
    let form = reqwest::multipart::Form::new()
        .text("sessionId", "s1")
        .text("to", BOB);
    let got = send_multipart(&app, form).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "missing_field");
    // Multipart over the limit.
    let form = reqwest::multipart::Form::new()
        .text("sessionId", "s1")
        .text("to", BOB)
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes(100_000, 2)).file_name("big.bin"),
        );
    let got = send_multipart(&app, form).await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "media_too_large");
    app.stop().await;
}

#[tokio::test]
async fn send_media_from_unreachable_urls_is_a_client_error() {
    let app = app_with(|c| {
        c.media.allow_private = true;
        c.media.fetch_timeout = Duration::from_secs(3);
    })
    .await;
    paired(&app).await;
    let missing = file_server("/here.png", "image/png", bytes(10, 1)).await;
    let missing = missing.replace("/here.png", "/gone.png");
    for url in [missing.as_str(), "http://127.0.0.1:1/x.png"] {
        let got = app
            .post_json(
                "/api/send-media",
                json!({"sessionId": "s1", "to": BOB, "url": url}),
            )
            .await;
        assert_error(&got, StatusCode::BAD_REQUEST, "media_unreachable");
    }
    app.stop().await;
}

/// A message of session `session`'s history once its file is stored (or failed).
async fn settled_message(app: &TestApp, session: &str, id: &str) -> Value {
    wait_for(
        LONG,
        &format!("{id} with its file in {session}"),
        || async {
            let (_, b) = app
                .get_json(&format!("/api/messages/{session}?limit=500"))
                .await;
            b["messages"]
                .as_array()?
                .iter()
                .find(|m| m["id"] == id && m["media"].get("pending").is_none())
                .cloned()
        },
    )
    .await
}

#[tokio::test]
async fn voice_notes_and_audio_files_keep_their_kind_both_ways() {
    let app = app_with(|c| c.media.allow_private = true).await;
    paired(&app).await;
    // Session s2 is one of Bob's linked devices: it sees what Bob's phone gets, through the
    // same decoding as any message, so it shows whether the voice-note flag arrived.
    crate::e2e::pair(&app, "s2", BOB).await;

    let voice = bytes(15_000, 51);
    let form = file_form(&voice, "note.ogg", "audio/ogg; codecs=opus");
    let (s, sent_voice) = send_multipart(&app, form).await;
    assert_eq!(s, StatusCode::OK, "{sent_voice}");
    // Ogg/Opus is inferred as a voice note.
    assert_eq!(sent_voice["type"], "ptt");

    let song = bytes(33_000, 53);
    let (s, sent_song) = app
        .post_json(
            "/api/send-media",
            json!({"sessionId": "s1", "to": BOB, "mimetype": "audio/mpeg", "base64": b64(&song)}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sent_song}");
    assert_eq!(sent_song["type"], "audio");

    // A voice note sent as `type: ptt` although its type alone would make it an audio file.
    let forced = bytes(9_000, 55);
    let (s, sent_forced) = app
        .post_json(
            "/api/send-media",
            json!({"sessionId": "s1", "to": BOB, "mimetype": "audio/mpeg", "type": "ptt",
                   "base64": b64(&forced)}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sent_forced}");
    assert_eq!(sent_forced["type"], "ptt");

    for (sent, data, kind) in [
        (&sent_voice, &voice, "ptt"),
        (&sent_song, &song, "audio"),
        (&sent_forced, &forced, "ptt"),
    ] {
        let id = sent["messageId"].as_str().unwrap();
        let got = bob_received(&app, id).await;
        assert_eq!(got["sha256"], sha_hex(data), "{got}");
        assert_eq!(got["kind"], "audio", "{got}");
        let mine = history_message(&app, id).await;
        assert_eq!(mine["type"], kind, "{mine}");
        // Bob's linked device s2 got it with the flag, and stored the same bytes.
        let theirs = settled_message(&app, "s2", id).await;
        assert_eq!(theirs["type"], kind, "{theirs}");
        assert_eq!(theirs["fromMe"], false, "{theirs}");
        assert_eq!(theirs["media"]["sha256"], sha_hex(data), "{theirs}");
        let (_, _, served) = fetch(&app, theirs["media"]["fileUrl"].as_str().unwrap()).await;
        assert_eq!(sha_hex(&served), sha_hex(data));
    }
    app.stop().await;
}

/// View once, both ways: a photo sent with `viewOnce` reaches the phone marked so; a voice
/// note the phone sends view once is stored and marked so in history; other kinds and bad
/// values are refused before anything is sent.
#[tokio::test]
async fn view_once_media_goes_both_ways_marked() {
    let app = app_with(|_| {}).await;
    paired(&app).await;
    let sim = app.sim.as_ref().unwrap();

    let photo = bytes(20_000, 3);
    let (s, sent) = app
        .post_json(
            "/api/send-media",
            json!({"sessionId": "s1", "to": BOB, "mimetype": "image/jpeg", "base64": b64(&photo), "viewOnce": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sent}");
    assert_eq!(sent["viewOnce"], true, "{sent}");
    let id = sent["messageId"].as_str().unwrap().to_owned();
    let on_phone = wait_for(LONG, "Bob's phone to have the photo", || async {
        sim.messages(BOB)
            .await
            .into_iter()
            .find(|m| m["id"] == id.as_str() && m["media"]["sha256"] == sha_hex(&photo))
    })
    .await;
    assert_eq!(on_phone["viewOnce"], true, "{on_phone}");
    assert_eq!(history_message(&app, &id).await["viewOnce"], true);

    // From the phone: a voice note shown once.
    let note = bytes(5_000, 4);
    let r = sim
        .admin_json(
            Method::POST,
            &format!("/phones/{BOB}/messages"),
            Some(json!({"to": ALICE, "media": {"mimetype": "audio/ogg; codecs=opus", "data": b64(&note), "ptt": true, "viewOnce": true}})),
        )
        .await;
    assert!(r.0.is_success(), "{}", r.1);
    let theirs = r.1["id"].as_str().unwrap().to_owned();
    let got = wait_for(LONG, "the voice note in history", || async {
        let (_, b) = app.get_json("/api/messages/s1?limit=500").await;
        b["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == theirs.as_str() && m["media"]["sha256"] == sha_hex(&note))
            .cloned()
    })
    .await;
    assert_eq!(got["type"], "ptt", "{got}");
    assert_eq!(got["viewOnce"], true, "{got}");

    // Refused: a document view once, a value that is not a boolean.
    let got = app
        .post_json(
            "/api/send-media",
            json!({"sessionId": "s1", "to": BOB, "mimetype": "application/pdf", "base64": b64(&photo), "viewOnce": true}),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    let got = app
        .post_json(
            "/api/send-media",
            json!({"sessionId": "s1", "to": BOB, "type": "sticker", "base64": b64(&photo), "viewOnce": true}),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    let got = app
        .post_json(
            "/api/send-media",
            json!({"sessionId": "s1", "to": BOB, "mimetype": "image/jpeg", "base64": b64(&photo), "viewOnce": "maybe"}),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
}
