//! Media files in an S3-compatible bucket, through `object_store`. Files are staged on the
//! local disk like with [`LocalStorage`](super::storage::LocalStorage), then uploaded in
//! parts (a few parts in memory at a time, whatever the file's size) under
//! `<prefix>/<name>`; reads are ranged GETs, so `/uploads` serves `Range` requests from the
//! bucket too. Presigned links are available for `fileUrl`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt as _, TryStreamExt as _};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::signer::Signer as _;
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, ObjectStore, ObjectStoreExt as _,
    PutMultipartOptions, PutPayload, WriteMultipart,
};
use tokio::io::AsyncReadExt as _;

use super::config::S3Config;
use super::naming;
use super::storage::{Meta, Storage, clean_staging, new_staging_path};

/// Files up to this size go up in one PUT; larger ones in parts of this size.
const PART: usize = 8 * 1024 * 1024;
/// Parts being uploaded at once.
const PARTS_IN_FLIGHT: usize = 2;

pub struct S3Storage {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
    staging: PathBuf,
}

fn io_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        e => io::Error::other(e),
    }
}

impl S3Storage {
    /// Builds the client (no request is made); staging files go in `<dir>/.staging`.
    pub fn open(config: &S3Config, dir: &Path) -> anyhow::Result<Self> {
        let staging = dir.join(".staging");
        std::fs::create_dir_all(&staging)?;
        // The usual AWS_* variables first; our settings override them.
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
        if let Some(region) = &config.region {
            b = b.with_region(region);
        } else if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            b = b.with_region("us-east-1");
        }
        if let Some(endpoint) = &config.endpoint {
            // Other stores rarely route bucket subdomains: address buckets by path.
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            b = b
                .with_access_key_id(id)
                .with_secret_access_key(secret.expose());
        }
        Ok(Self {
            store: Arc::new(b.build()?),
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
            staging,
        })
    }

    fn key(&self, name: &str) -> io::Result<Key> {
        if !naming::is_stored_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a stored file name",
            ));
        }
        Ok(if self.prefix.is_empty() {
            Key::from(name)
        } else {
            Key::from(format!("{}/{name}", self.prefix))
        })
    }

    async fn upload(&self, staged: &Path, key: &Key, name: &str) -> io::Result<()> {
        let mut attributes = Attributes::new();
        if let Some(m) = name
            .rsplit_once('.')
            .and_then(|(_, ext)| naming::mimetype_for_ext(ext))
        {
            attributes.insert(Attribute::ContentType, m.into());
        }
        let mut file = tokio::fs::File::open(staged).await?;
        let len = file.metadata().await?.len();
        if len <= PART as u64 {
            let mut buf = Vec::with_capacity(len as usize);
            file.read_to_end(&mut buf).await?;
            let opts = object_store::PutOptions {
                attributes,
                ..Default::default()
            };
            self.store
                .put_opts(key, PutPayload::from(buf), opts)
                .await
                .map_err(io_error)?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart_opts(
                key,
                PutMultipartOptions {
                    attributes,
                    ..Default::default()
                },
            )
            .await
            .map_err(io_error)?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    abort(w).await;
                    return Err(e);
                }
            };
            if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                abort(w).await;
                return Err(io_error(e));
            }
            w.write(&buf[..n]);
        }
        w.finish().await.map_err(io_error)?;
        Ok(())
    }
}

/// Drops the parts of a failed upload, so the bucket does not keep paying for them.
async fn abort(w: WriteMultipart) {
    if let Err(e) = w.abort().await {
        tracing::warn!("cannot abort a failed multipart upload: {e}");
    }
}

impl Storage for S3Storage {
    fn staging_path(&self) -> PathBuf {
        new_staging_path(&self.staging)
    }

    fn commit<'a>(&'a self, staged: &'a Path, name: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let key = self.key(name)?;
            self.upload(staged, &key, name).await?;
            // Uploaded: the staged copy is no longer needed.
            if let Err(e) = tokio::fs::remove_file(staged).await {
                tracing::warn!(path = %staged.display(), "cannot delete a staged media file: {e}");
            }
            Ok(())
        })
    }

    fn stat<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Option<Meta>>> {
        Box::pin(async move {
            match self.store.head(&self.key(name)?).await {
                Ok(m) => Ok(Some(Meta {
                    len: m.size,
                    modified: SystemTime::from(m.last_modified),
                })),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(io_error(e)),
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
            let key = self.key(name)?;
            if len == 0 {
                return Ok(futures::stream::empty().boxed());
            }
            let opts = GetOptions {
                range: Some(GetRange::Bounded(start..start + len)),
                ..Default::default()
            };
            let got = self.store.get_opts(&key, opts).await.map_err(io_error)?;
            Ok(got.into_stream().map_err(io_error).boxed())
        })
    }

    fn delete_older_than(&self, cutoff: i64) -> BoxFuture<'_, io::Result<usize>> {
        Box::pin(async move {
            let prefix = (!self.prefix.is_empty()).then(|| Key::from(self.prefix.as_str()));
            let mut listing = self.store.list(prefix.as_ref());
            let mut n = 0;
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(io_error)?;
                let Some(name) = meta.location.filename() else {
                    continue;
                };
                // Only our own files directly under the prefix; anything else is not ours.
                if self.key(name).ok().as_ref() != Some(&meta.location) {
                    continue;
                }
                if naming::stored_at(name).is_some_and(|t| t < cutoff) {
                    match self.store.delete(&meta.location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => n += 1,
                        Err(e) => return Err(io_error(e)),
                    }
                }
            }
            clean_staging(&self.staging).await?;
            Ok(n)
        })
    }

    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("S3 bucket {}", self.bucket)
        } else {
            format!("S3 bucket {} under {}/", self.bucket, self.prefix)
        }
    }

    fn direct_url<'a>(
        &'a self,
        name: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, io::Result<Option<String>>> {
        Box::pin(async move {
            let key = self.key(name)?;
            let url = self
                .store
                .signed_url(reqwest::Method::GET, &key, ttl)
                .await
                .map_err(io_error)?;
            Ok(Some(url.to_string()))
        })
    }
}
