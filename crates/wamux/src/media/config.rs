//! Media settings: `WAMUX_MEDIA_*` variables, a `[media]` table in the config file, and
//! `--media-*` flags. [`MediaOverrides::resolve`] checks them and names the one at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Secret;
use crate::webhook::schedule::parse_duration;

/// Resolved media settings (see docs/media.md).
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// `WAMUX_MEDIA_DIR`: where files are kept [default: `<data dir>/uploads`].
    pub dir: PathBuf,
    /// `WAMUX_MEDIA_MAX_BYTES`: largest file accepted, in or out [default: 100 MiB].
    pub max_bytes: u64,
    /// `WAMUX_MEDIA_RETENTION_DAYS`: files older than this are deleted; 0 keeps them.
    pub retention_days: u64,
    /// `WAMUX_MEDIA_SIGNED_URLS`: links carry `?exp=&sig=` and are refused without them.
    pub signed_urls: bool,
    /// `WAMUX_MEDIA_SIGNED_URL_TTL`: how long a signed link works [default: 7 days].
    pub signed_url_ttl: Duration,
    /// `WAMUX_MEDIA_FETCH_TIMEOUT`: for `send-media` with a `url` [default: 30s].
    pub fetch_timeout: Duration,
    /// `WAMUX_MEDIA_ALLOW_PRIVATE`: let `send-media` fetch from loopback/private addresses.
    pub allow_private: bool,
    /// `WAMUX_MEDIA_CONCURRENCY`: inbound downloads at once, all sessions [default: 4].
    pub concurrency: usize,
    /// `WAMUX_MEDIA_DOWNLOAD_WAIT`: how long a download waits for its session to be connected
    /// (after a restart) before it is given up as failed [default: 60s].
    pub download_wait: Duration,
    /// `WAMUX_MEDIA_STORAGE`: where files are kept: `local` (the directory) or `s3`.
    /// Either way files are first written to `<dir>/.staging`.
    pub backend: Backend,
}

#[derive(Debug, Clone)]
pub enum Backend {
    Local,
    S3(S3Config),
}

/// An S3-compatible bucket (AWS, MinIO, Ceph, R2, ...).
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `WAMUX_MEDIA_S3_BUCKET`
    pub bucket: String,
    /// `WAMUX_MEDIA_S3_ENDPOINT`: for stores other than AWS, e.g. `http://127.0.0.1:9000`
    /// (requests are then path-style).
    pub endpoint: Option<String>,
    /// `WAMUX_MEDIA_S3_REGION` [default: `AWS_REGION`, else us-east-1].
    pub region: Option<String>,
    /// `WAMUX_MEDIA_S3_ACCESS_KEY_ID` / `WAMUX_MEDIA_S3_SECRET_ACCESS_KEY`; when absent, the
    /// usual `AWS_*` variables are read.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    /// `WAMUX_MEDIA_S3_PREFIX`: keys are `<prefix>/<file name>` [default: none].
    pub prefix: String,
    /// `WAMUX_MEDIA_S3_FILE_URLS`: `fileUrl` points at our `/uploads` (`server`, default) or
    /// is a presigned link of the store itself (`presigned`), valid for
    /// `WAMUX_MEDIA_SIGNED_URL_TTL` (at most 7 days, the S3 limit).
    pub presigned_urls: bool,
}

pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;

impl MediaConfig {
    /// The defaults, with files kept in `<data_dir>/uploads`.
    pub fn in_dir(data_dir: &Path) -> Self {
        MediaOverrides::default()
            .resolve(data_dir)
            .expect("the default media settings are valid")
    }
}

/// One layer of media settings.
#[derive(Debug, Clone, Default, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct MediaOverrides {
    /// Directory for media files [default: <data dir>/uploads]
    #[arg(long = "media-dir", env = "WAMUX_MEDIA_DIR")]
    pub dir: Option<PathBuf>,
    /// Largest media file accepted, in bytes, incoming or outgoing [default: 104857600]
    #[arg(long = "media-max-bytes", env = "WAMUX_MEDIA_MAX_BYTES")]
    pub max_bytes: Option<u64>,
    /// Delete media files older than this many days; 0 keeps them [default: 0]
    #[arg(long = "media-retention-days", env = "WAMUX_MEDIA_RETENTION_DAYS")]
    pub retention_days: Option<u64>,
    /// Hand out signed, expiring media links and refuse unsigned ones [default: false]
    #[arg(long = "media-signed-urls", env = "WAMUX_MEDIA_SIGNED_URLS")]
    pub signed_urls: Option<bool>,
    /// Lifetime of a signed media link, e.g. 24h [default: 168h]
    #[arg(long = "media-signed-url-ttl", env = "WAMUX_MEDIA_SIGNED_URL_TTL")]
    pub signed_url_ttl: Option<String>,
    /// Timeout for fetching a send-media `url` [default: 30s]
    #[arg(long = "media-fetch-timeout", env = "WAMUX_MEDIA_FETCH_TIMEOUT")]
    pub fetch_timeout: Option<String>,
    /// Allow send-media URLs on loopback, private and link-local addresses [default: false]
    #[arg(
        id = "media_allow_private",
        long = "media-allow-private",
        env = "WAMUX_MEDIA_ALLOW_PRIVATE"
    )]
    pub allow_private: Option<bool>,
    /// Incoming media downloads running at once [default: 4]
    #[arg(
        id = "media_concurrency",
        long = "media-concurrency",
        env = "WAMUX_MEDIA_CONCURRENCY"
    )]
    pub concurrency: Option<usize>,
    /// How long a download waits for its session to connect, e.g. 60s [default: 60s]
    #[arg(long = "media-download-wait", env = "WAMUX_MEDIA_DOWNLOAD_WAIT")]
    pub download_wait: Option<String>,
    /// Where media files are kept: local or s3 [default: local]
    #[arg(
        id = "media_storage",
        long = "media-storage",
        env = "WAMUX_MEDIA_STORAGE"
    )]
    pub storage: Option<String>,
    /// S3 bucket of media files (with --media-storage s3)
    #[arg(long = "media-s3-bucket", env = "WAMUX_MEDIA_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000 [default: AWS]
    #[arg(long = "media-s3-endpoint", env = "WAMUX_MEDIA_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: AWS_REGION, else us-east-1]
    #[arg(long = "media-s3-region", env = "WAMUX_MEDIA_S3_REGION")]
    pub s3_region: Option<String>,
    /// S3 access key id [default: AWS_ACCESS_KEY_ID]
    #[arg(long = "media-s3-access-key-id", env = "WAMUX_MEDIA_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key [default: AWS_SECRET_ACCESS_KEY]
    #[arg(
        long = "media-s3-secret-access-key",
        env = "WAMUX_MEDIA_S3_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub s3_secret_access_key: Option<Secret>,
    /// Key prefix of media files in the bucket [default: none]
    #[arg(long = "media-s3-prefix", env = "WAMUX_MEDIA_S3_PREFIX")]
    pub s3_prefix: Option<String>,
    /// fileUrl of S3 files: server (our /uploads) or presigned (the store's own link) [default: server]
    #[arg(long = "media-s3-file-urls", env = "WAMUX_MEDIA_S3_FILE_URLS")]
    pub s3_file_urls: Option<String>,
}

impl MediaOverrides {
    /// Puts `other`'s settings over these.
    pub fn apply(&mut self, other: MediaOverrides) {
        macro_rules! over {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        over!(
            dir,
            max_bytes,
            retention_days,
            signed_urls,
            signed_url_ttl,
            fetch_timeout,
            allow_private,
            concurrency,
            download_wait,
            storage,
            s3_bucket,
            s3_endpoint,
            s3_region,
            s3_access_key_id,
            s3_secret_access_key,
            s3_prefix,
            s3_file_urls
        );
    }

    /// Checks and types the settings; `data_dir` gives the default directory.
    pub fn resolve(&self, data_dir: &Path) -> Result<MediaConfig, String> {
        let duration = |name: &str, v: &Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(s) => match parse_duration(s) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(format!("{name} must be more than zero")),
                Err(e) => Err(format!("{name}: {e}")),
            },
        };
        let max_bytes = self.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
        if max_bytes == 0 {
            return Err("WAMUX_MEDIA_MAX_BYTES must be more than zero".into());
        }
        let concurrency = self.concurrency.unwrap_or(4);
        if !(1..=64).contains(&concurrency) {
            return Err("WAMUX_MEDIA_CONCURRENCY must be a number from 1 to 64".into());
        }
        let dir = self.dir.clone().unwrap_or_else(|| data_dir.join("uploads"));
        if dir.as_os_str().is_empty() {
            return Err("WAMUX_MEDIA_DIR must not be empty".into());
        }
        let signed_url_ttl = duration(
            "WAMUX_MEDIA_SIGNED_URL_TTL",
            &self.signed_url_ttl,
            Duration::from_secs(7 * 86_400),
        )?;
        let backend = match self.storage.as_deref().map(str::trim) {
            None | Some("local") => Backend::Local,
            Some("s3") => Backend::S3(self.s3(signed_url_ttl)?),
            Some(other) => {
                return Err(format!(
                    "WAMUX_MEDIA_STORAGE must be `local` or `s3`, not {other:?}"
                ));
            }
        };
        Ok(MediaConfig {
            dir,
            max_bytes,
            retention_days: self.retention_days.unwrap_or(0),
            signed_urls: self.signed_urls.unwrap_or(false),
            signed_url_ttl,
            fetch_timeout: duration(
                "WAMUX_MEDIA_FETCH_TIMEOUT",
                &self.fetch_timeout,
                Duration::from_secs(30),
            )?,
            allow_private: self.allow_private.unwrap_or(false),
            concurrency,
            download_wait: duration(
                "WAMUX_MEDIA_DOWNLOAD_WAIT",
                &self.download_wait,
                Duration::from_secs(60),
            )?,
            backend,
        })
    }

    fn s3(&self, signed_url_ttl: Duration) -> Result<S3Config, String> {
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let bucket = given(&self.s3_bucket)
            .ok_or("WAMUX_MEDIA_S3_BUCKET is required with WAMUX_MEDIA_STORAGE=s3")?;
        let endpoint = given(&self.s3_endpoint);
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(format!(
                "WAMUX_MEDIA_S3_ENDPOINT must be an http:// or https:// URL, not {e:?}"
            ));
        }
        let presigned_urls = match self.s3_file_urls.as_deref().map(str::trim) {
            None | Some("server") => false,
            Some("presigned") => true,
            Some(other) => {
                return Err(format!(
                    "WAMUX_MEDIA_S3_FILE_URLS must be `server` or `presigned`, not {other:?}"
                ));
            }
        };
        if presigned_urls && signed_url_ttl > Duration::from_secs(7 * 86_400) {
            return Err(
                "WAMUX_MEDIA_SIGNED_URL_TTL must be at most 7 days with presigned S3 links".into(),
            );
        }
        let access_key_id = given(&self.s3_access_key_id);
        let secret_access_key = self
            .s3_secret_access_key
            .clone()
            .filter(|s| !s.expose().is_empty());
        if access_key_id.is_some() != secret_access_key.is_some() {
            return Err(
                "WAMUX_MEDIA_S3_ACCESS_KEY_ID and WAMUX_MEDIA_S3_SECRET_ACCESS_KEY go together"
                    .into(),
            );
        }
        Ok(S3Config {
            bucket,
            endpoint,
            region: given(&self.s3_region),
            access_key_id,
            secret_access_key,
            prefix: self
                .s3_prefix
                .as_deref()
                .unwrap_or_default()
                .trim_matches('/')
                .to_owned(),
            presigned_urls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = MediaOverrides::default()
            .resolve(Path::new("/data"))
            .unwrap();
        assert_eq!(c.dir, Path::new("/data/uploads"));
        assert_eq!(c.max_bytes, DEFAULT_MAX_BYTES);
        assert_eq!(c.retention_days, 0);
        assert!(!c.signed_urls);
        let bad = MediaOverrides {
            fetch_timeout: Some("soon".into()),
            ..Default::default()
        };
        assert!(
            bad.resolve(Path::new("/d"))
                .unwrap_err()
                .contains("WAMUX_MEDIA_FETCH_TIMEOUT")
        );
    }

    #[test]
    fn s3_settings_are_checked() {
        let s3 = |f: &dyn Fn(&mut MediaOverrides)| {
            let mut o = MediaOverrides {
                storage: Some("s3".into()),
                s3_bucket: Some("media".into()),
                ..Default::default()
            };
            f(&mut o);
            o.resolve(Path::new("/d"))
        };
        match s3(&|o| o.s3_prefix = Some("/wamux/".into()))
            .unwrap()
            .backend
        {
            Backend::S3(c) => {
                assert_eq!(c.bucket, "media");
                assert_eq!(c.prefix, "wamux");
                assert!(!c.presigned_urls);
            }
            Backend::Local => panic!("s3 expected"),
        }
        let err = |f: &dyn Fn(&mut MediaOverrides), name: &str| {
            let e = s3(f).unwrap_err();
            assert!(e.contains(name), "{e}");
        };
        err(&|o| o.s3_bucket = None, "WAMUX_MEDIA_S3_BUCKET");
        err(
            &|o| o.s3_endpoint = Some("minio:9000".into()),
            "WAMUX_MEDIA_S3_ENDPOINT",
        );
        err(
            &|o| o.s3_file_urls = Some("cdn".into()),
            "WAMUX_MEDIA_S3_FILE_URLS",
        );
        err(
            &|o| {
                o.s3_file_urls = Some("presigned".into());
                o.signed_url_ttl = Some("720h".into());
            },
            "WAMUX_MEDIA_SIGNED_URL_TTL",
        );
        err(
            &|o| o.s3_access_key_id = Some("AKIA".into()),
            "WAMUX_MEDIA_S3_SECRET_ACCESS_KEY",
        );
        err(&|o| o.storage = Some("ftp".into()), "WAMUX_MEDIA_STORAGE");
    }
}
