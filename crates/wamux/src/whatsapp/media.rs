//! Media through whatsapp-rust: what an incoming message says about its attachment, the
//! streamed download and decryption into a file, and the streamed encryption and upload of
//! a file we send. Memory stays small whatever the file size: bytes go from the socket to
//! the file (and from the file to the socket) in chunks.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use whatsapp_rust::download::{DownloadParams, DownloadWriter, MediaType};
use whatsapp_rust::send::SendOptions;
use whatsapp_rust::waproto::whatsapp as wa;

use super::{Outgoing, WaSession};
use crate::media::{MediaKind, MediaRef};

fn media_type(kind: MediaKind) -> MediaType {
    match kind {
        MediaKind::Image => MediaType::Image,
        MediaKind::Video => MediaType::Video,
        MediaKind::Audio | MediaKind::Ptt => MediaType::Audio,
        MediaKind::Document => MediaType::Document,
        MediaKind::Sticker => MediaType::Sticker,
    }
}

/// The attachment of a message, if it has one we download.
pub(crate) fn reference(m: &wa::Message) -> Option<MediaRef> {
    macro_rules! r {
        ($x:expr, $kind:expr, $name:expr) => {
            MediaRef {
                kind: $kind,
                direct_path: $x.direct_path.clone(),
                url: $x.url.clone(),
                media_key: $x.media_key.clone().unwrap_or_default(),
                file_sha256: $x.file_sha256.clone().unwrap_or_default(),
                file_enc_sha256: $x.file_enc_sha256.clone().unwrap_or_default(),
                file_length: $x.file_length,
                mimetype: $x.mimetype.clone(),
                file_name: $name,
            }
        };
    }
    if let Some(x) = m.image_message.as_option() {
        return Some(r!(x, MediaKind::Image, None));
    }
    if let Some(x) = m.video_message.as_option() {
        return Some(r!(x, MediaKind::Video, None));
    }
    if let Some(x) = m.audio_message.as_option() {
        let kind = if x.ptt == Some(true) {
            MediaKind::Ptt
        } else {
            MediaKind::Audio
        };
        return Some(r!(x, kind, None));
    }
    if let Some(x) = m.document_message.as_option() {
        return Some(r!(x, MediaKind::Document, x.file_name.clone()));
    }
    if let Some(x) = m.sticker_message.as_option() {
        return Some(r!(x, MediaKind::Sticker, None));
    }
    None
}

/// A file writer that refuses to grow past `limit` bytes.
struct Limited {
    file: std::fs::File,
    limit: u64,
    pos: u64,
}

impl Write for Limited {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.pos + buf.len() as u64 > self.limit {
            return Err(std::io::Error::other(format!(
                "the file is larger than the limit of {} bytes (WAMUX_MEDIA_MAX_BYTES)",
                self.limit
            )));
        }
        let n = self.file.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Limited {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.pos = self.file.seek(pos)?;
        Ok(self.pos)
    }
}

impl DownloadWriter for Limited {
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }
}

impl WaSession {
    /// Downloads and decrypts an attachment into `file` (emptied first; left empty on
    /// failure). The error is a sentence for `media.error`.
    pub async fn download_to_file(
        &self,
        r: &MediaRef,
        file: std::fs::File,
        limit: u64,
    ) -> Result<(), String> {
        let Some(path) = r.direct_path.clone().or_else(|| {
            r.url.as_deref().and_then(|u| {
                reqwest::Url::parse(u)
                    .ok()
                    .map(|u| format!("{}?{}", u.path(), u.query().unwrap_or_default()))
            })
        }) else {
            return Err("the message names no download location".into());
        };
        if r.media_key.is_empty() {
            return Err("the message carries no media key".into());
        }
        let params = DownloadParams::encrypted(
            path,
            &r.media_key,
            &r.file_sha256,
            &r.file_enc_sha256,
            r.file_length.unwrap_or(0),
            media_type(r.kind),
        );
        let writer = Limited {
            file,
            limit,
            pos: 0,
        };
        match self.client.download_to_writer(&params, writer).await {
            Ok(mut w) => w.flush().map_err(|e| format!("cannot write the file: {e}")),
            Err(e) => Err(format!("download failed: {e:#}")),
        }
    }

    /// Asks the sender's phone to upload the attachment of message `message_id` again
    /// (WhatsApp's media re-upload request: a `server-error` receipt answered by a
    /// `mediaretry` notification). Returns the new direct path; the error is a sentence for
    /// `media.error`.
    pub async fn request_reupload(
        &self,
        r: &MediaRef,
        message_id: &str,
        chat: &str,
        sender: &str,
        from_me: bool,
    ) -> Result<String, String> {
        use whatsapp_rust::{Jid, MediaRetryResult, MediaReuploadRequest, Server};
        if r.media_key.is_empty() {
            return Err("the message carries no media key".into());
        }
        let chat_jid: Jid = chat
            .parse()
            .map_err(|e| format!("the chat `{chat}` is not a WhatsApp address: {e}"))?;
        let participant: Option<Jid> = if chat_jid.server == Server::Group {
            sender.parse().ok()
        } else {
            None
        };
        let req = MediaReuploadRequest {
            msg_id: message_id,
            chat_jid: &chat_jid,
            media_key: &r.media_key,
            is_from_me: from_me,
            participant: participant.as_ref(),
        };
        match self.client.media_reupload().request(&req).await {
            Ok(MediaRetryResult::Success { direct_path }) => Ok(direct_path),
            Ok(MediaRetryResult::NotFound) => {
                Err("the sender's phone no longer has the file".into())
            }
            Ok(MediaRetryResult::DecryptionError) => {
                Err("the sender's phone could not decrypt the request".into())
            }
            Ok(MediaRetryResult::GeneralError) => {
                Err("the sender's phone could not upload the file again".into())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Uploads an encrypted file and sends it as `spec` says, with `out`'s message id.
    pub async fn send_media(
        &self,
        out: &Outgoing,
        mut enc: EncryptedFile,
        spec: &OutgoingMedia<'_>,
    ) -> Result<(), String> {
        let info = enc.info.take().ok_or("the file was already sent")?;
        let source = FileSource {
            path: enc.path.clone(),
            len: enc.len,
        };
        let up = self
            .client
            .upload_stream(source, info, media_type(spec.kind))
            .await
            .map_err(|e| format!("upload failed: {e:#}"))?;
        drop(enc);
        let caption = spec.caption.map(str::to_owned);
        let mimetype = Some(spec.mimetype.to_owned());
        use whatsapp_rust::media as m;
        let mut message = match spec.kind {
            MediaKind::Image => m::image_message(
                up,
                m::ImageOptions {
                    caption,
                    mimetype,
                    ..Default::default()
                },
            ),
            MediaKind::Video => m::video_message(
                up,
                m::VideoOptions {
                    caption,
                    mimetype,
                    ..Default::default()
                },
            ),
            MediaKind::Audio | MediaKind::Ptt => m::audio_message(
                up,
                m::AudioOptions {
                    mimetype,
                    ptt: Some(spec.kind == MediaKind::Ptt),
                    ..Default::default()
                },
            ),
            MediaKind::Document => m::document_message(
                up,
                m::DocumentOptions {
                    mimetype,
                    file_name: spec.file_name.map(str::to_owned),
                    title: spec.file_name.map(str::to_owned),
                    caption,
                    ..Default::default()
                },
            ),
            MediaKind::Sticker => wa::Message {
                sticker_message: whatsapp_rust::buffa::MessageField::some(
                    wa::message::StickerMessage {
                        url: Some(up.url),
                        direct_path: Some(up.direct_path),
                        media_key: Some(up.media_key.to_vec()),
                        file_sha256: Some(up.file_sha256.to_vec()),
                        file_enc_sha256: Some(up.file_enc_sha256.to_vec()),
                        file_length: Some(up.file_length),
                        media_key_timestamp: Some(up.media_key_timestamp),
                        mimetype,
                        ..Default::default()
                    },
                ),
                ..Default::default()
            },
        };
        if spec.view_once {
            // The inline flag current WhatsApp clients send (older ones wrap the message).
            if let Some(i) = message.image_message.as_option_mut() {
                i.view_once = Some(true);
            }
            if let Some(v) = message.video_message.as_option_mut() {
                v.view_once = Some(true);
            }
            if let Some(a) = message.audio_message.as_option_mut() {
                a.view_once = Some(true);
            }
        }
        self.client
            .send_message_with_options(
                out.to.clone(),
                message,
                SendOptions::default().with_message_id(out.id.clone()),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// What to send, besides the file.
pub struct OutgoingMedia<'a> {
    pub kind: MediaKind,
    pub mimetype: &'a str,
    pub file_name: Option<&'a str>,
    pub caption: Option<&'a str>,
    /// Shown once (images, videos, audio).
    pub view_once: bool,
}

/// A file encrypted for upload, on disk next to the plain one; deleted when dropped.
pub struct EncryptedFile {
    path: PathBuf,
    len: u64,
    info: Option<wacore::upload::EncryptedMediaInfo>,
}

impl Drop for EncryptedFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), "cannot delete an encrypted upload: {e}");
        }
    }
}

/// Encrypts `plain` into `dest` in chunks. Blocking: run it on the blocking pool.
pub fn encrypt_file(plain: &Path, dest: &Path, kind: MediaKind) -> anyhow::Result<EncryptedFile> {
    let input = std::io::BufReader::new(std::fs::File::open(plain)?);
    let mut out = std::io::BufWriter::new(std::fs::File::create(dest)?);
    // From here on the guard removes `dest` on any error.
    let mut enc = EncryptedFile {
        path: dest.to_owned(),
        len: 0,
        info: None,
    };
    let info = wacore::upload::encrypt_media_streaming(input, &mut out, media_type(kind))?;
    out.flush()?;
    drop(out);
    enc.len = std::fs::metadata(dest)?.len();
    enc.info = Some(info);
    Ok(enc)
}

/// The encrypted file as an upload body, re-readable from any offset (retries, resume).
struct FileSource {
    path: PathBuf,
    len: u64,
}

impl wacore::upload::UploadSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn reader_from(&self, offset: u64) -> std::io::Result<Box<dyn Read + Send>> {
        let mut f = std::fs::File::open(&self.path)?;
        f.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(std::io::BufReader::new(f)))
    }
}
