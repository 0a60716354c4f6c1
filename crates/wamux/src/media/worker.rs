//! The inbound download worker: takes pending jobs, downloads each file into storage and
//! records the outcome and the message's event in one transaction.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::media as db;

/// A download job.
pub(super) type Job = db::Job<super::MediaRef>;
use super::storage::Staged;
use super::{Media, MediaKind, MediaRef, StoredFile, error_json, naming};
use crate::event::EventKind;
use crate::model::{SessionId, SessionStatus};
use crate::session::SessionManager;
use crate::store::{events, messages};
use crate::whatsapp::WaSession;

/// Without a wake-up the worker still looks for jobs this often.
const POLL: Duration = Duration::from_secs(5);

pub(super) async fn run(media: Media, sessions: SessionManager, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(media.config().concurrency));
    let in_flight: Arc<Mutex<HashSet<i64>>> = Arc::default();
    let tasks = TaskTracker::new();
    let wake = media.waker();
    loop {
        match db::pending(media.store(), 0, 256).await {
            Ok(jobs) => {
                for job in jobs {
                    if !in_flight.lock().expect("in-flight lock").insert(job.id) {
                        continue;
                    }
                    let (media, sessions, permits, in_flight, cancel) = (
                        media.clone(),
                        sessions.clone(),
                        permits.clone(),
                        in_flight.clone(),
                        cancel.clone(),
                    );
                    tasks.spawn(async move {
                        let id = job.id;
                        if let Ok(_permit) = permits.acquire_owned().await {
                            tokio::select! {
                                // Left pending: the next start resumes it.
                                _ = cancel.cancelled() => {}
                                _ = process(&media, &sessions, job) => {}
                            }
                        }
                        in_flight.lock().expect("in-flight lock").remove(&id);
                    });
                }
            }
            Err(e) => tracing::error!("cannot read media jobs: {e:#}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    tasks.close();
    tasks.wait().await;
}

async fn process(media: &Media, sessions: &SessionManager, job: Job) {
    let outcome = match connection(media, sessions, &job.session_id).await {
        Ok(conn) => download(media, &conn, &job.media_ref).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &outcome {
        tracing::warn!(session = %job.session_id, message = %job.message_id, "media not stored: {e}");
    }
    if let Err(e) = record(media, &job, outcome).await {
        // The job stays pending and is tried again on the next pass or start.
        tracing::error!(session = %job.session_id, "cannot record a media download: {e:#}");
        tokio::time::sleep(POLL).await;
    }
}

/// The session's live connection, waiting a while for it after a restart.
async fn connection(
    media: &Media,
    sessions: &SessionManager,
    session: &str,
) -> Result<WaSession, String> {
    let id = SessionId::parse(session).map_err(|e| e.to_string())?;
    let snap = sessions
        .wait_for(&id, media.config().download_wait, |s| {
            s.status == SessionStatus::Connected && s.connection.is_some()
        })
        .await
        .map_err(|_| format!("session `{session}` was not connected, so the file could not be downloaded; retry later"))?;
    snap.connection
        .ok_or_else(|| format!("session `{session}` is not connected"))
}

fn default_mimetype(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Image => "image/jpeg",
        MediaKind::Video => "video/mp4",
        MediaKind::Audio | MediaKind::Ptt => "audio/ogg; codecs=opus",
        MediaKind::Document => "application/octet-stream",
        MediaKind::Sticker => "image/webp",
    }
}

/// Downloads, checks and stores one file. The error is a sentence for `media.error`.
pub(super) async fn download(
    media: &Media,
    conn: &WaSession,
    r: &MediaRef,
) -> Result<StoredFile, String> {
    let max = media.config().max_bytes;
    if let Some(n) = r.file_length
        && n > max
    {
        return Err(format!(
            "the file is {n} bytes, over the limit of {max} bytes (WAMUX_MEDIA_MAX_BYTES)"
        ));
    }
    let staged = Staged::new(media.storage().staging_path());
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&staged.path)
        .map_err(|e| format!("storage error: {e}"))?;
    conn.download_to_file(r, file, max).await?;
    let path = staged.path.clone();
    let (size, sha256) = tokio::task::spawn_blocking(move || super::fetch::hash_file(&path))
        .await
        .map_err(|e| format!("storage error: {e}"))?
        .map_err(|e| format!("storage error: {e}"))?;
    if size == 0 {
        return Err("the downloaded file is empty".into());
    }
    if !r.file_sha256.is_empty() && r.file_sha256 != sha256 {
        return Err("the downloaded file does not match the sha256 the sender declared".into());
    }
    let mimetype = r
        .mimetype
        .clone()
        .filter(|m| naming::is_valid_mimetype(m))
        .unwrap_or_else(|| default_mimetype(r.kind).to_owned());
    let file_name = naming::new_file_name(&mimetype, crate::store::now());
    media
        .storage()
        .commit(&staged.path, &file_name)
        .await
        .map_err(|e| format!("storage error: {e}"))?;
    staged.committed();
    Ok(StoredFile {
        file_name,
        original_name: r
            .file_name
            .as_deref()
            .and_then(naming::sanitize_original_name),
        mimetype,
        size,
        sha256,
    })
}

/// Writes the outcome into the message and, the first time, the message's event.
async fn record(
    media: &Media,
    job: &Job,
    outcome: Result<StoredFile, String>,
) -> anyhow::Result<()> {
    let (json, error) = match &outcome {
        Ok(f) => (media.media_json(f).await, None),
        Err(e) => (error_json(&job.media_ref, e), Some(e.as_str())),
    };
    let mut tx = media.store().begin().await?;
    let body = messages::set_media(
        &mut tx.conn(),
        &job.session_id,
        &job.chat_id,
        &job.sender,
        &job.message_id,
        &json,
    )
    .await?;
    if !db::finish(&mut tx.conn(), job.id, error).await? {
        // Someone else finished it; keep their outcome.
        return Ok(());
    }
    let mut published = None;
    if let Some(body) = body {
        let kind: EventKind = job.event.parse().unwrap_or(EventKind::MessageReceived);
        published = Some(
            events::append(
                &mut tx.conn(),
                kind,
                &job.session_id,
                Some(&job.chat_id),
                body,
            )
            .await?,
        );
    }
    tx.commit().await?;
    if let Some(ev) = published {
        media.bus().publish(ev);
    }
    Ok(())
}

/// Why a retry by hand did not store the file.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("message `{0}` is not in this session's history")]
    NoMessage(String),
    #[error("message `{0}` has no media")]
    NoMedia(String),
    #[error("the first download of this file is still under way")]
    Pending,
    #[error("{0}")]
    Failed(String, serde_json::Value),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl Media {
    /// Downloads a message's file again (after a failure) through `conn`, and updates the
    /// history. Returns the updated message.
    pub async fn retry(
        &self,
        conn: &WaSession,
        session: &str,
        message_id: &str,
    ) -> Result<serde_json::Value, RetryError> {
        let store = self.store();
        if messages::find(store, session, message_id).await?.is_none() {
            return Err(RetryError::NoMessage(message_id.to_owned()));
        }
        let Some((job, state)) = db::for_message(store, session, message_id).await? else {
            return Err(RetryError::NoMedia(message_id.to_owned()));
        };
        if state == "pending" {
            return Err(RetryError::Pending);
        }
        let outcome = redownload(self, conn, &job).await;
        let (json, error) = match &outcome {
            Ok(f) => (self.media_json(f).await, None),
            Err(e) => (error_json(&job.media_ref, e), Some(e.clone())),
        };
        let mut tx = self.store().begin().await?;
        let body = messages::set_media(
            &mut tx.conn(),
            session,
            &job.chat_id,
            &job.sender,
            message_id,
            &json,
        )
        .await?;
        db::retried(&mut tx.conn(), job.id, error.as_deref()).await?;
        tx.commit().await?;
        let body = body.ok_or_else(|| RetryError::NoMessage(message_id.to_owned()))?;
        match error {
            None => Ok(body),
            Some(e) => Err(RetryError::Failed(e, body)),
        }
    }
}

/// A retry by hand: first asks the sender's phone to upload the file again (WhatsApp's
/// media re-upload request) and downloads it from the new path; when that is not possible
/// or fails, downloads from the location the message named. The error says why both failed.
async fn redownload(media: &Media, conn: &WaSession, job: &Job) -> Result<StoredFile, String> {
    let r = &job.media_ref;
    let max = media.config().max_bytes;
    if r.file_length.is_some_and(|n| n > max) {
        // No point asking the phone for a file we would not take.
        return download(media, conn, r).await;
    }
    let from_me = job.event == EventKind::MessageFromMe.as_str();
    let reupload = match conn
        .request_reupload(r, &job.message_id, &job.chat_id, &job.sender, from_me)
        .await
    {
        Ok(direct_path) => {
            let fresh = MediaRef {
                direct_path: Some(direct_path),
                url: None,
                ..r.clone()
            };
            match download(media, conn, &fresh).await {
                Ok(f) => return Ok(f),
                Err(e) => format!("the re-uploaded file could not be stored: {e}"),
            }
        }
        Err(e) => format!("re-upload request failed: {e}"),
    };
    tracing::info!(session = %job.session_id, message = %job.message_id, "{reupload}; trying the original location");
    download(media, conn, r)
        .await
        .map_err(|e| format!("{reupload}; from the original location: {e}"))
}
