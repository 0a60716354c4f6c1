//! Getting a file to send into staging: from a URL (guarded like webhooks), base64 text or a
//! multipart upload. Each is written to disk as it arrives, counted against the size limit
//! and hashed on the way.

use std::io;
use std::path::Path;
use std::time::Duration;

use axum::body::Bytes;
use base64::Engine as _;
use futures::{Stream, StreamExt as _};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::storage::Staged;
use crate::webhook::guard;

/// Why a file could not be taken in. Each names the problem for a 4xx answer.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is larger than the limit of {0} bytes (WAMUX_MEDIA_MAX_BYTES)")]
    TooLarge(u64),
    #[error("`base64` is not valid base64: {0}")]
    BadBase64(String),
    #[error("`url` {0}")]
    BadUrl(String),
    #[error("`url` could not be fetched: {0}")]
    Unreachable(String),
    #[error("`url` answered HTTP {0}")]
    HttpStatus(u16),
    #[error("the upload could not be read: {0}")]
    Upload(String),
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

/// A file in staging, with what was learned while taking it in.
pub struct Incoming {
    pub staged: Staged,
    pub size: u64,
    pub sha256: [u8; 32],
    /// The type the source announced (data URL, `Content-Type`, multipart part).
    pub content_type: Option<String>,
    /// A name the source suggested (URL path, multipart file name).
    pub name_hint: Option<String>,
}

/// The client for `send-media` URLs: every resolved address is checked like a webhook
/// target, redirects too (at most 5), and the whole fetch has a timeout.
pub fn client(timeout: Duration, allow_private: bool) -> reqwest::Result<reqwest::Client> {
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            return attempt.error("too many redirects");
        }
        let url = attempt.url().clone();
        if guard::parse_url(url.as_str()).is_err() {
            return attempt.error("redirect to a URL that is not http(s)");
        }
        // Names are checked by the resolver; literal addresses never reach it.
        if !allow_private
            && let Some(ip) = guard::literal_ip(&url)
            && let Err(e) = guard::check_ip(ip)
        {
            return attempt.error(e);
        }
        attempt.follow()
    });
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .redirect(policy)
        .dns_resolver(guard::GuardedResolver::shared(allow_private))
        .build()
}

/// Writes a stream of chunks to `staged`, enforcing `limit`.
async fn write_stream<E: std::fmt::Display>(
    staged: &Staged,
    chunks: impl Stream<Item = Result<Bytes, E>>,
    limit: u64,
    read_error: impl Fn(String) -> IngestError,
) -> Result<(u64, [u8; 32]), IngestError> {
    let mut chunks = std::pin::pin!(chunks);
    let mut file = tokio::io::BufWriter::new(tokio::fs::File::create(&staged.path).await?);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| read_error(e.to_string()))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(IngestError::TooLarge(limit));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    file.into_inner().sync_all().await?;
    if size == 0 {
        return Err(IngestError::Empty);
    }
    Ok((size, hasher.finalize().into()))
}

/// `base64` as sent: plain, URL-safe or a `data:<type>;base64,` URL; whitespace ignored.
pub async fn from_base64(staged: Staged, text: &str, limit: u64) -> Result<Incoming, IngestError> {
    let (content_type, payload) = match text.strip_prefix("data:") {
        Some(rest) => {
            let (head, data) = rest.split_once(',').ok_or_else(|| {
                IngestError::BadBase64("a data URL needs a comma before the data".into())
            })?;
            let Some(mime) = head.strip_suffix(";base64") else {
                return Err(IngestError::BadBase64(
                    "only base64 data URLs (`data:<type>;base64,...`) are accepted".into(),
                ));
            };
            ((!mime.is_empty()).then(|| mime.to_owned()), data)
        }
        None => (None, text),
    };
    let clean: String = payload.chars().filter(|c| !c.is_whitespace()).collect();
    // Decoded size is about 3/4 of the text: refuse early without decoding a huge body.
    if (clean.len() as u64 / 4).saturating_mul(3) > limit.saturating_add(3) {
        return Err(IngestError::TooLarge(limit));
    }
    let trimmed = clean.trim_end_matches('=');
    let engine = if trimmed.contains(['-', '_']) {
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
    } else {
        &base64::engine::general_purpose::STANDARD_NO_PAD
    };
    let bytes = engine
        .decode(trimmed)
        .map_err(|e| IngestError::BadBase64(e.to_string()))?;
    let once = futures::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(bytes))]);
    let (size, sha256) = write_stream(&staged, once, limit, IngestError::Upload).await?;
    Ok(Incoming {
        staged,
        size,
        sha256,
        content_type,
        name_hint: None,
    })
}

/// Fetches `url` (GET) into staging.
pub async fn from_url(
    client: &reqwest::Client,
    staged: Staged,
    url: &str,
    allow_private: bool,
    limit: u64,
) -> Result<Incoming, IngestError> {
    let url = guard::vet_url(url, allow_private)
        .await
        .map_err(|e| IngestError::BadUrl(e.to_string().trim_start_matches("url ").to_owned()))?;
    let resp = client.get(url.clone()).send().await.map_err(|e| {
        let mut msg = e.to_string();
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
        while let Some(s) = src {
            msg = format!("{msg}: {s}");
            src = s.source();
        }
        IngestError::Unreachable(msg)
    })?;
    if !resp.status().is_success() {
        return Err(IngestError::HttpStatus(resp.status().as_u16()));
    }
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(IngestError::TooLarge(limit));
    }
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let name_hint = resp
        .url()
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .map(percent_decode);
    let (size, sha256) = write_stream(&staged, resp.bytes_stream(), limit, |e| {
        IngestError::Unreachable(e)
    })
    .await?;
    Ok(Incoming {
        staged,
        size,
        sha256,
        content_type,
        name_hint,
    })
}

/// A multipart `file` part into staging.
pub async fn from_field(
    staged: Staged,
    field: axum::extract::multipart::Field<'_>,
    limit: u64,
) -> Result<Incoming, IngestError> {
    let content_type = field.content_type().map(str::to_owned);
    let name_hint = field.file_name().map(str::to_owned);
    let (size, sha256) = write_stream(&staged, field, limit, IngestError::Upload).await?;
    Ok(Incoming {
        staged,
        size,
        sha256,
        content_type,
        name_hint,
    })
}

/// Size and sha256 of a file. Blocking.
pub fn hash_file(path: &Path) -> io::Result<(u64, [u8; 32])> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hasher.finalize().into()))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("my%20file.pdf"), "my file.pdf");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
