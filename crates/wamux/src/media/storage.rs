//! Where media files live, behind one trait: [`Storage`]. Files are always written to a
//! local staging path first (downloads need a seekable file, uploads are hashed while they
//! are written), then [`Storage::commit`]ted under their final name. The local directory is
//! the one backend so far; an S3-compatible one fits the same trait (stage locally, then
//! upload; `stat`/`read` map to HEAD and ranged GET): [`super::s3::S3Storage`].

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use axum::body::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use super::naming;

/// Size and age of a stored file.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub len: u64,
    pub modified: SystemTime,
}

pub trait Storage: Send + Sync + 'static {
    /// A fresh local path where a new file may be written before [`Storage::commit`].
    fn staging_path(&self) -> PathBuf;

    /// Moves a finished staged file in under `name` (a name from
    /// [`naming::new_file_name`]).
    fn commit<'a>(&'a self, staged: &'a Path, name: &'a str) -> BoxFuture<'a, io::Result<()>>;

    /// Size and age of `name`; `None` when there is no such file.
    fn stat<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Option<Meta>>>;

    /// `len` bytes of `name` from `start`, as a stream.
    fn read<'a>(
        &'a self,
        name: &'a str,
        start: u64,
        len: u64,
    ) -> BoxFuture<'a, io::Result<BoxStream<'static, io::Result<Bytes>>>>;

    /// Deletes stored files whose name says they were stored before `cutoff` (unix
    /// seconds), and staging leftovers older than a day. Returns how many were deleted.
    fn delete_older_than(&self, cutoff: i64) -> BoxFuture<'_, io::Result<usize>>;

    /// For logs: where the files are.
    fn describe(&self) -> String;

    /// A link to `name` served by the store itself, valid for `ttl`, when the store can
    /// make one (presigned S3 links); `None` means links go through our `/uploads`.
    fn direct_url<'a>(
        &'a self,
        _name: &'a str,
        _ttl: std::time::Duration,
    ) -> BoxFuture<'a, io::Result<Option<String>>> {
        Box::pin(async { Ok(None) })
    }
}

/// Deletes staging files older than a day: only a crash mid-transfer leaves them.
pub(super) async fn clean_staging(staging: &Path) -> io::Result<()> {
    let day_ago = SystemTime::now() - std::time::Duration::from_secs(86_400);
    let mut dir = tokio::fs::read_dir(staging).await?;
    while let Some(entry) = dir.next_entry().await? {
        let old = entry
            .metadata()
            .await
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < day_ago);
        if old {
            tokio::fs::remove_file(entry.path()).await?;
        }
    }
    Ok(())
}

/// A fresh random file name in `staging`.
pub(super) fn new_staging_path(staging: &Path) -> PathBuf {
    let r: [u8; 12] = rand::random();
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    staging.join(format!("{hex}.part"))
}

/// Files in a local directory (default `<data dir>/uploads`), staging in `.staging/` inside
/// it, so a commit is an atomic rename on one filesystem.
pub struct LocalStorage {
    dir: PathBuf,
    staging: PathBuf,
}

impl LocalStorage {
    pub fn open(dir: &Path) -> io::Result<Self> {
        let staging = dir.join(".staging");
        std::fs::create_dir_all(&staging)?;
        Ok(Self {
            dir: dir.to_owned(),
            staging,
        })
    }

    /// The file's path, only for names we make (see [`naming::is_stored_name`]).
    fn path_of(&self, name: &str) -> io::Result<PathBuf> {
        if !naming::is_stored_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a stored file name",
            ));
        }
        Ok(self.dir.join(name))
    }
}

impl Storage for LocalStorage {
    fn staging_path(&self) -> PathBuf {
        new_staging_path(&self.staging)
    }

    fn commit<'a>(&'a self, staged: &'a Path, name: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let dest = self.path_of(name)?;
            tokio::fs::rename(staged, dest).await
        })
    }

    fn stat<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Option<Meta>>> {
        Box::pin(async move {
            let path = self.path_of(name)?;
            match tokio::fs::metadata(&path).await {
                Ok(m) if m.is_file() => Ok(Some(Meta {
                    len: m.len(),
                    modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                })),
                Ok(_) => Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn read<'a>(
        &'a self,
        name: &'a str,
        start: u64,
        len: u64,
    ) -> BoxFuture<'a, io::Result<BoxStream<'static, io::Result<Bytes>>>> {
        Box::pin(async move {
            use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
            let mut f = tokio::fs::File::open(self.path_of(name)?).await?;
            f.seek(io::SeekFrom::Start(start)).await?;
            let stream = futures::stream::unfold((f, len), |(mut f, left)| async move {
                if left == 0 {
                    return None;
                }
                let mut buf = vec![0u8; left.min(64 * 1024) as usize];
                match f.read(&mut buf).await {
                    Ok(0) => Some((
                        Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file shrank while being read",
                        )),
                        (f, 0),
                    )),
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok(Bytes::from(buf)), (f, left - n as u64)))
                    }
                    Err(e) => Some((Err(e), (f, 0))),
                }
            });
            Ok(Box::pin(stream) as BoxStream<'static, io::Result<Bytes>>)
        })
    }

    fn delete_older_than(&self, cutoff: i64) -> BoxFuture<'_, io::Result<usize>> {
        Box::pin(async move {
            let mut n = 0;
            let mut dir = tokio::fs::read_dir(&self.dir).await?;
            while let Some(entry) = dir.next_entry().await? {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if naming::is_stored_name(name)
                    && naming::stored_at(name).is_some_and(|t| t < cutoff)
                {
                    tokio::fs::remove_file(entry.path()).await?;
                    n += 1;
                }
            }
            clean_staging(&self.staging).await?;
            Ok(n)
        })
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.dir.display())
    }
}

/// A staged file that is deleted when dropped, unless it was committed.
pub struct Staged {
    pub path: PathBuf,
    keep: bool,
}

impl Staged {
    pub fn new(path: PathBuf) -> Self {
        Self { path, keep: false }
    }

    /// Called once the file has been moved away (committed).
    pub fn committed(mut self) {
        self.keep = true;
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), "cannot delete a staged media file: {e}");
        }
    }
}
