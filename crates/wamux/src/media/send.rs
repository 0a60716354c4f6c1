//! Sending a file: type and kind resolved, the file stored (so the history shows it),
//! encrypted and uploaded in chunks, and sent; the message goes pending -> sent | failed
//! like a text message.

use super::fetch::{Incoming, IngestError};
use super::{Media, MediaKind, StoredFile, naming};
use crate::event::EventKind;
use crate::model::{ChatAddress, Message, MessageStatus, SessionId};
use crate::session::{SessionError, SessionManager};
use crate::store;
use crate::whatsapp::OutgoingMedia;

/// What the user asked for besides the file.
#[derive(Debug, Default)]
pub struct SendOptions {
    pub kind: Option<MediaKind>,
    pub mimetype: Option<String>,
    pub file_name: Option<String>,
    pub caption: Option<String>,
    /// Send it view once (images, videos and audio only).
    pub view_once: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SendMediaError {
    #[error("only images, videos and audio can be sent view once, not a {0}")]
    NotViewOnce(&'static str),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("cannot store the file: {0}")]
    Storage(#[source] std::io::Error),
    #[error("cannot prepare the file for upload: {0}")]
    Encrypt(String),
}

impl From<store::StoreError> for SendMediaError {
    fn from(e: store::StoreError) -> Self {
        SendMediaError::Session(SessionError::Store(e))
    }
}

/// The file's type: the one given, else the source's (unless it is the generic
/// `application/octet-stream`), else the one its name implies, else the generic one.
pub fn resolve_mimetype(given: Option<&str>, file: &Incoming, name: Option<&str>) -> String {
    if let Some(m) = given {
        return m.trim().to_owned();
    }
    let announced = file
        .content_type
        .as_deref()
        .filter(|m| naming::is_valid_mimetype(m))
        .filter(|m| naming::essence(m) != "application/octet-stream");
    if let Some(m) = announced {
        return m.trim().to_owned();
    }
    name.or(file.name_hint.as_deref())
        .and_then(naming::mimetype_for_name)
        .unwrap_or("application/octet-stream")
        .to_owned()
}

impl Media {
    /// Stores and sends `file` from session `id` to `to`. Returns the message as recorded
    /// (status `sent`), or the reason it was not sent (the history then shows it `failed`).
    pub async fn send(
        &self,
        sessions: &SessionManager,
        id: &SessionId,
        to: &ChatAddress,
        file: Incoming,
        opts: SendOptions,
    ) -> Result<Message, SendMediaError> {
        let (conn, me) = sessions.live(id)?;
        let mimetype = resolve_mimetype(opts.mimetype.as_deref(), &file, opts.file_name.as_deref());
        let kind = opts.kind.unwrap_or_else(|| MediaKind::infer(&mimetype));
        if opts.view_once && !kind.can_be_view_once() {
            return Err(SendMediaError::NotViewOnce(kind.as_str()));
        }
        let original_name = opts
            .file_name
            .as_deref()
            .or(file.name_hint.as_deref())
            .and_then(naming::sanitize_original_name);

        // Encrypt first (it needs the plain file where it is), then store the plain file.
        let enc_path = self.storage().staging_path();
        let plain = file.staged.path.clone();
        let enc = tokio::task::spawn_blocking(move || {
            crate::whatsapp::encrypt_file(&plain, &enc_path, kind)
        })
        .await
        .map_err(|e| SendMediaError::Encrypt(e.to_string()))?
        .map_err(|e| SendMediaError::Encrypt(format!("{e:#}")))?;
        let stored = StoredFile {
            file_name: naming::new_file_name(&mimetype, store::now()),
            original_name,
            mimetype,
            size: file.size,
            sha256: file.sha256,
        };
        self.storage()
            .commit(&file.staged.path, &stored.file_name)
            .await
            .map_err(SendMediaError::Storage)?;
        file.staged.committed();

        let out = conn.prepare(to).map_err(SessionError::Internal)?;
        let mut msg = me.outgoing_message(id, &out.id, to, kind.message_kind());
        msg.caption = opts.caption.clone().filter(|c| !c.is_empty());
        msg.view_once = opts.view_once;
        msg.media = Some(self.media_json(&stored).await);
        let from = msg.from.clone();
        let mut tx = self.store().begin().await?;
        let ev =
            store::messages::insert(&mut tx.conn(), &msg, &from, EventKind::MessageFromMe).await?;
        tx.commit().await?;
        if let Some(ev) = ev {
            self.bus().publish(ev);
        }

        let spec = OutgoingMedia {
            kind,
            mimetype: &stored.mimetype,
            file_name: stored.original_name.as_deref(),
            caption: msg.caption.as_deref(),
            view_once: msg.view_once,
        };
        let acked = sessions.expect_ack(id, &out.id);
        let sent = conn.send_media(&out, enc, &spec).await;
        sessions.settle_direct(id, &out.id, sent, acked).await?;
        msg.status = MessageStatus::Sent;
        Ok(msg)
    }
}
