//! Media kept in an S3-compatible bucket: a real S3 server (moto, from PyPI; scripts/test
//! installs it) runs on a loopback port for the test. Phone files and sent files land in the
//! bucket (checked with the S3 API directly), `fileUrl` serves the same bytes both through
//! our `/uploads` (with ranges) and as a presigned link of the store, and retention deletes
//! old files from the bucket.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload};
use reqwest::StatusCode;
use serde_json::json;
use wamux::config::Secret;

use crate::helpers::TestApp;
use crate::media::{
    BOB, Hooks, app_with, assert_stored, b64, bob_received, bytes, fetch, history_message, paired,
    phone_sends, sha_hex,
};

const BUCKET: &str = "wamux-media";
const PREFIX: &str = "media";

/// A moto S3 server on a free loopback port, stopped when dropped.
struct S3Server {
    child: Child,
    endpoint: String,
}

impl S3Server {
    /// `None` (with a note) when moto is not installed outside CI; in CI it must be there.
    async fn start() -> Option<Self> {
        let probe = Command::new("python3")
            .args(["-c", "import moto.server"])
            .output();
        if !probe.is_ok_and(|o| o.status.success()) {
            assert!(
                std::env::var_os("CI").is_none(),
                "python3 package moto[server] missing: scripts/test installs it"
            );
            eprintln!("note: python3 moto[server] not installed; the S3 storage test is not run");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if http
                .get(format!("{}/moto-api/", server.endpoint))
                .send()
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto did not start on {}",
                server.endpoint
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Creating a bucket is not part of object_store's API; moto takes an unsigned PUT.
        let r = http
            .put(format!("{}/{BUCKET}", server.endpoint))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "create bucket: {}", r.status());
        Some(server)
    }

    /// The bucket through the S3 API, as an independent client sees it.
    fn client(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill().and_then(|()| self.child.wait().map(drop)) {
            eprintln!("stopping moto: {e}");
        }
    }
}

async fn app_on_s3(s3: &S3Server, file_urls: &'static str, retention_days: u64) -> TestApp {
    let endpoint = s3.endpoint.clone();
    app_with(move |c| {
        c.media = wamux::media::MediaOverrides {
            allow_private: Some(true),
            storage: Some("s3".into()),
            s3_bucket: Some(BUCKET.into()),
            s3_endpoint: Some(endpoint),
            s3_region: Some("us-east-1".into()),
            s3_access_key_id: Some("test".into()),
            s3_secret_access_key: Some(Secret::new("test")),
            s3_prefix: Some(format!("/{PREFIX}/")),
            s3_file_urls: Some(file_urls.into()),
            retention_days: Some(retention_days),
            ..Default::default()
        }
        .resolve(&c.data_dir)
        .expect("valid S3 test settings");
    })
    .await
}

/// The object of a stored file, read back with the S3 API.
async fn object(bucket: &AmazonS3, file_name: &str) -> Vec<u8> {
    let key = Key::from(format!("{PREFIX}/{file_name}"));
    bucket
        .get(&key)
        .await
        .unwrap_or_else(|e| panic!("{key} not in the bucket: {e}"))
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn s3_storage_keeps_phone_and_sent_files_in_the_bucket_and_serves_them() {
    let Some(s3) = S3Server::start().await else {
        return;
    };
    let bucket = s3.client();
    // Left by an earlier run a year ago: retention deletes it at startup. A key that is not
    // one of our names stays whatever its age.
    let old = format!("{PREFIX}/1600000000_{}.jpg", "ab".repeat(16));
    let foreign = format!("{PREFIX}/notes.txt");
    for k in [&old, &foreign] {
        bucket
            .put(&Key::from(k.as_str()), PutPayload::from_static(b"x"))
            .await
            .unwrap();
    }

    let app = app_on_s3(&s3, "server", 30).await;
    paired(&app).await;
    let mut hooks = Hooks::start(&app).await;

    // A phone's video, large enough to go up in several parts.
    let video = bytes(9 * 1024 * 1024 + 123, 5);
    let id = phone_sends(&app, "video/mp4", None, Some("big"), &video).await;
    let msg = hooks.message(&id).await;
    assert_stored(&app, &msg["media"], &video, "video/mp4");
    let name = msg["media"]["fileName"].as_str().unwrap();
    assert_eq!(sha_hex(&object(&bucket, name).await), sha_hex(&video));
    // Only the bucket has it: nothing is left in the local directory but staging.
    let uploads = app.dir.path().join("data/uploads");
    let local: Vec<_> = std::fs::read_dir(&uploads)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(local, [".staging"], "{local:?}");
    assert_eq!(
        std::fs::read_dir(uploads.join(".staging")).unwrap().count(),
        0
    );

    // Our /uploads serves it from the bucket, whole and by range.
    let url = msg["media"]["fileUrl"].as_str().unwrap();
    let (status, ct, body) = fetch(&app, url).await;
    assert_eq!((status, ct.as_str()), (StatusCode::OK, "video/mp4"));
    assert_eq!(sha_hex(&body), sha_hex(&video));
    let r = app
        .http
        .get(url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 1000-1999/{}", video.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), &video[1000..2000]);
    let unknown = url.replace(&name[11..], &"0".repeat(name.len() - 11));
    assert_eq!(fetch(&app, &unknown).await.0, StatusCode::NOT_FOUND);

    // send-media stores the sent file in the bucket too, and the phone gets the same bytes.
    let pdf = bytes(60_000, 21);
    let (s, sent) = app
        .post_json(
            "/api/send-media",
            json!({"sessionId": "s1", "to": BOB, "fileName": "terms.pdf",
                   "base64": format!("data:application/pdf;base64,{}", b64(&pdf))}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sent}");
    assert_stored(&app, &sent["media"], &pdf, "application/pdf");
    let sent_name = sent["media"]["fileName"].as_str().unwrap();
    assert_eq!(object(&bucket, sent_name).await, pdf);
    let got = bob_received(&app, sent["messageId"].as_str().unwrap()).await;
    assert_eq!(got["sha256"], sha_hex(&pdf), "{got}");
    let (_, _, served) = fetch(&app, sent["media"]["fileUrl"].as_str().unwrap()).await;
    assert_eq!(served, pdf);

    // Retention ran at startup: the old file is gone, the foreign key is not.
    let keys: Vec<String> = {
        use futures::TryStreamExt as _;
        bucket
            .list(Some(&Key::from(PREFIX)))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap()
    };
    assert!(!keys.contains(&old), "{keys:?}");
    assert!(keys.contains(&foreign), "{keys:?}");
    assert!(keys.contains(&format!("{PREFIX}/{name}")), "{keys:?}");
    app.stop().await;
}

#[tokio::test]
async fn s3_presigned_file_urls_serve_the_same_bytes_from_the_store() {
    let Some(s3) = S3Server::start().await else {
        return;
    };
    let app = app_on_s3(&s3, "presigned", 0).await;
    paired(&app).await;
    let mut hooks = Hooks::start(&app).await;

    let photo = bytes(70_000, 33);
    let id = phone_sends(&app, "image/jpeg", None, None, &photo).await;
    let msg = hooks.message(&id).await;
    let media = &msg["media"];
    assert!(media.get("error").is_none(), "{media}");
    let url = media["fileUrl"].as_str().unwrap();
    let name = media["fileName"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/{BUCKET}/{PREFIX}/{name}?", s3.endpoint)),
        "{url}"
    );
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(sha_hex(&r.bytes().await.unwrap()), sha_hex(&photo));
    // The same file through our own /uploads still works.
    let (status, _, body) = fetch(&app, &format!("{}/uploads/{name}", app.base)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, photo);
    assert_eq!(history_message(&app, &id).await["media"]["fileName"], name);

    // Sent files get presigned links too.
    let clip = bytes(40_000, 35);
    let (s, sent) = app
        .post_json(
            "/api/send-media",
            json!({"sessionId": "s1", "to": BOB, "mimetype": "video/mp4", "base64": b64(&clip)}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sent}");
    let url = sent["media"]["fileUrl"].as_str().unwrap();
    assert!(url.starts_with(&s3.endpoint), "{url}");
    assert_eq!(
        reqwest::get(url).await.unwrap().bytes().await.unwrap(),
        clip
    );
    let got = bob_received(&app, sent["messageId"].as_str().unwrap()).await;
    assert_eq!(got["sha256"], sha_hex(&clip), "{got}");
    app.stop().await;
}
