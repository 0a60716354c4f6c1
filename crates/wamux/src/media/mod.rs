//! Media: files of incoming and outgoing messages, stored under unguessable names and
//! served at `GET /uploads/<name>`.
//!
//! Incoming: the durability hook commits a media message's row together with a job
//! ([`inbound::accept`]) and returns at once, so the WhatsApp ack never waits on a download.
//! The [`worker`] downloads and decrypts the file into storage, then writes the message's
//! `media` object and its `message-received` (or `message-from-me`) event in one
//! transaction: the event is written exactly once, with the final object, whether the
//! download worked or not (`media.error`). Jobs left unfinished by a crash are resumed at
//! startup.
//!
//! Outgoing ([`send`]): the file (URL, base64 or upload) is staged with its size and sha256,
//! stored, encrypted, uploaded and sent; the history shows it like an incoming one.
//!
//! Errors: [`send::SendMediaError`] for requests (mapped to 4xx at the HTTP edge), strings in
//! `media.error` for downloads (they are data, not failures), `anyhow` in the background jobs.

pub mod config;
pub mod fetch;
pub mod inbound;
pub mod naming;
mod retention;
pub mod s3;
pub mod send;
pub mod serve;
pub mod storage;
mod worker;

use std::sync::Arc;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{MediaConfig, MediaOverrides};
pub use storage::Storage;
pub use worker::RetryError;

use crate::event::EventBus;
use crate::session::SessionManager;
use crate::store::Store;

/// The kinds of media message. `Ptt` is a voice note (an audio message with the flag set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Image,
    Video,
    Audio,
    Ptt,
    Document,
    Sticker,
}

impl MediaKind {
    pub const ALL: [MediaKind; 6] = [
        MediaKind::Image,
        MediaKind::Video,
        MediaKind::Audio,
        MediaKind::Ptt,
        MediaKind::Document,
        MediaKind::Sticker,
    ];

    /// The message `type` a file of this kind is sent as.
    pub fn message_kind(self) -> crate::model::MessageKind {
        use crate::model::MessageKind as K;
        match self {
            MediaKind::Image => K::Image,
            MediaKind::Video => K::Video,
            MediaKind::Audio => K::Audio,
            MediaKind::Ptt => K::Ptt,
            MediaKind::Document => K::Document,
            MediaKind::Sticker => K::Sticker,
        }
    }

    /// Whether WhatsApp sends this kind view once (photos, videos, voice notes and audio).
    pub fn can_be_view_once(self) -> bool {
        matches!(
            self,
            MediaKind::Image | MediaKind::Video | MediaKind::Audio | MediaKind::Ptt
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Ptt => "ptt",
            MediaKind::Document => "document",
            MediaKind::Sticker => "sticker",
        }
    }

    /// A user's `type`; `voice` is accepted for `ptt`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().to_ascii_lowercase();
        if s == "voice" {
            return Some(MediaKind::Ptt);
        }
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind a file of this type is sent as when the user does not say: `image/webp` is
    /// a sticker and Opus-in-Ogg a voice note, as the WhatsApp apps send them.
    pub fn infer(mimetype: &str) -> Self {
        let e = naming::essence(mimetype);
        let lower = mimetype.to_ascii_lowercase();
        if e == "image/webp" {
            MediaKind::Sticker
        } else if e.starts_with("image/") {
            MediaKind::Image
        } else if e.starts_with("video/") {
            MediaKind::Video
        } else if e == "audio/ogg" && lower.contains("opus") {
            MediaKind::Ptt
        } else if e.starts_with("audio/") {
            MediaKind::Audio
        } else {
            MediaKind::Document
        }
    }
}

/// Everything needed to download and decrypt an attachment again, kept with its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaRef {
    pub kind: MediaKind,
    pub direct_path: Option<String>,
    pub url: Option<String>,
    #[serde(with = "b64")]
    pub media_key: Vec<u8>,
    #[serde(with = "b64")]
    pub file_sha256: Vec<u8>,
    #[serde(with = "b64")]
    pub file_enc_sha256: Vec<u8>,
    /// As the sender declared it.
    pub file_length: Option<u64>,
    pub mimetype: Option<String>,
    pub file_name: Option<String>,
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file in storage, described for a message's `media` object.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub file_name: String,
    pub original_name: Option<String>,
    pub mimetype: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// The media subsystem: storage, links, the inbound download worker. Cheap to clone.
#[derive(Clone)]
pub struct Media {
    inner: Arc<Inner>,
}

struct Inner {
    config: MediaConfig,
    storage: Arc<dyn Storage>,
    store: Store,
    bus: EventBus,
    public_url: String,
    /// Key of signed links; random per data dir, kept in `<data dir>/media_url_key`.
    url_key: [u8; 32],
    wake: Arc<Notify>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    fetcher: reqwest::Client,
}

impl Media {
    /// Opens the storage; the worker starts with [`Media::start`].
    pub fn new(
        config: MediaConfig,
        store: Store,
        bus: EventBus,
        public_url: String,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let storage: Arc<dyn Storage> = match &config.backend {
            config::Backend::Local => Arc::new(
                storage::LocalStorage::open(&config.dir)
                    .with_context(|| format!("cannot create media dir {}", config.dir.display()))?,
            ),
            config::Backend::S3(s3) => Arc::new(
                s3::S3Storage::open(s3, &config.dir)
                    .context("cannot set up the S3 media storage")?,
            ),
        };
        let url_key = load_url_key(data_dir).context("cannot keep the media link key")?;
        let fetcher = fetch::client(config.fetch_timeout, config.allow_private)
            .context("cannot build the media fetch client")?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                storage,
                store,
                bus,
                public_url: public_url.trim_end_matches('/').to_owned(),
                url_key,
                wake: Arc::new(Notify::new()),
                cancel: CancellationToken::new(),
                tracker: TaskTracker::new(),
                fetcher,
            }),
        })
    }

    /// Starts the download worker (resuming jobs a previous run left) and the retention job.
    pub fn start(&self, sessions: SessionManager) {
        tracing::info!(storage = %self.inner.storage.describe(), "media storage");
        self.inner.tracker.spawn(worker::run(
            self.clone(),
            sessions,
            self.inner.cancel.clone(),
        ));
        if self.inner.config.retention_days > 0 {
            self.inner
                .tracker
                .spawn(retention::run(self.clone(), self.inner.cancel.clone()));
        }
    }

    /// Stops the background work; unfinished downloads are resumed on the next start.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.inner.tracker.wait(),
        )
        .await
        .is_err()
        {
            tracing::warn!("media downloads did not stop in time; they resume on next start");
        }
    }

    /// Wakes the worker: a job was committed. Given to the durability hook.
    pub fn waker(&self) -> Arc<Notify> {
        self.inner.wake.clone()
    }

    pub fn config(&self) -> &MediaConfig {
        &self.inner.config
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The whole of a stored file, at most the media size limit.
    pub async fn read_file(&self, file_name: &str) -> std::io::Result<Vec<u8>> {
        use futures::TryStreamExt as _;
        let storage = &self.inner.storage;
        let meta = storage
            .stat(file_name)
            .await?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))?;
        if meta.len > self.inner.config.max_bytes {
            return Err(std::io::Error::other(
                "the file is larger than the media limit",
            ));
        }
        let mut out = Vec::with_capacity(usize::try_from(meta.len).unwrap_or(0));
        let mut chunks = storage.read(file_name, 0, meta.len).await?;
        while let Some(chunk) = chunks.try_next().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// The base of our public links (`WAMUX_PUBLIC_URL`).
    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }

    pub(crate) fn bus(&self) -> &EventBus {
        &self.inner.bus
    }

    pub(crate) fn fetcher(&self) -> &reqwest::Client {
        &self.inner.fetcher
    }

    /// The public link of a stored file: the store's presigned link when so configured,
    /// else ours, signed when signed links are on.
    pub async fn file_url(&self, file_name: &str) -> String {
        let presigned =
            matches!(&self.inner.config.backend, config::Backend::S3(c) if c.presigned_urls);
        if presigned {
            match self
                .inner
                .storage
                .direct_url(file_name, self.inner.config.signed_url_ttl)
                .await
            {
                Ok(Some(url)) => return url,
                Ok(None) => {}
                // Our own link works as well; the store's is only a shortcut.
                Err(e) => {
                    tracing::warn!(file = %file_name, "cannot presign a media link, giving ours: {e}")
                }
            }
        }
        self.server_url(file_name)
    }

    /// Our `/uploads` link of a stored file, signed when signed links are on.
    pub fn server_url(&self, file_name: &str) -> String {
        let base = format!("{}/uploads/{file_name}", self.inner.public_url);
        if !self.inner.config.signed_urls {
            return base;
        }
        let exp = crate::store::now() + self.inner.config.signed_url_ttl.as_secs() as i64;
        format!("{base}?exp={exp}&sig={}", self.signature(file_name, exp))
    }

    fn signature(&self, file_name: &str, exp: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.inner.url_key).expect("any key size");
        mac.update(file_name.as_bytes());
        mac.update(b".");
        mac.update(exp.to_string().as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Checks a signed link's `exp` and `sig` (constant-time).
    pub fn verify_signature(&self, file_name: &str, exp: &str, sig: &str) -> bool {
        let Ok(exp_n) = exp.parse::<i64>() else {
            return false;
        };
        if exp_n < crate::store::now() {
            return false;
        }
        let Ok(given) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.inner.url_key).expect("any key size");
        mac.update(file_name.as_bytes());
        mac.update(b".");
        mac.update(exp.as_bytes());
        mac.verify_slice(&given).is_ok()
    }

    /// The `media` object of a message whose file is stored.
    pub async fn media_json(&self, f: &StoredFile) -> serde_json::Value {
        serde_json::json!({
            "fileUrl": self.file_url(&f.file_name).await,
            "fileName": f.file_name,
            "originalName": f.original_name.clone().unwrap_or_else(|| f.file_name.clone()),
            "mimetype": f.mimetype,
            "fileSize": f.size,
            "sha256": hex(&f.sha256),
        })
    }
}

/// The `media` object of a message whose file could not be stored: the reason and what the
/// sender declared.
pub fn error_json(r: &MediaRef, error: &str) -> serde_json::Value {
    serde_json::json!({
        "error": error,
        "fileUrl": null,
        "fileName": null,
        "originalName": r.file_name.as_deref().and_then(naming::sanitize_original_name),
        "mimetype": r.mimetype,
        "fileSize": r.file_length,
        "sha256": (!r.file_sha256.is_empty()).then(|| hex(&r.file_sha256)),
    })
}

/// The `media` object while the download is under way (history only; no event carries it).
pub fn pending_json(r: &MediaRef) -> serde_json::Value {
    serde_json::json!({
        "pending": true,
        "fileUrl": null,
        "fileName": null,
        "originalName": r.file_name.as_deref().and_then(naming::sanitize_original_name),
        "mimetype": r.mimetype,
        "fileSize": r.file_length,
        "sha256": (!r.file_sha256.is_empty()).then(|| hex(&r.file_sha256)),
    })
}

fn load_url_key(data_dir: &std::path::Path) -> std::io::Result<[u8; 32]> {
    let path = data_dir.join("media_url_key");
    match std::fs::read(&path) {
        Ok(b) if b.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(&b);
            return Ok(k);
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let k: [u8; 32] = rand::random();
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&path)?;
    f.write_all(&k)?;
    f.sync_all()?;
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_infer() {
        assert_eq!(MediaKind::parse("PTT"), Some(MediaKind::Ptt));
        assert_eq!(MediaKind::parse("voice"), Some(MediaKind::Ptt));
        assert_eq!(MediaKind::parse("gif"), None);
        assert_eq!(MediaKind::infer("image/webp"), MediaKind::Sticker);
        assert_eq!(MediaKind::infer("image/png"), MediaKind::Image);
        assert_eq!(MediaKind::infer("audio/ogg; codecs=opus"), MediaKind::Ptt);
        assert_eq!(MediaKind::infer("audio/mpeg"), MediaKind::Audio);
        assert_eq!(MediaKind::infer("video/mp4"), MediaKind::Video);
        assert_eq!(MediaKind::infer("application/pdf"), MediaKind::Document);
    }

    #[test]
    fn media_refs_round_trip() {
        let r = MediaRef {
            kind: MediaKind::Document,
            direct_path: Some("/mms/document/x".into()),
            url: None,
            media_key: vec![1; 32],
            file_sha256: vec![2; 32],
            file_enc_sha256: vec![3; 32],
            file_length: Some(5),
            mimetype: Some("application/pdf".into()),
            file_name: Some("a.pdf".into()),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<MediaRef>(&s).unwrap(), r);
    }
}
