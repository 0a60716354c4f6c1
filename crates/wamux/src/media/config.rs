//! Media settings: `WAMUX_MEDIA_*` variables, a `[media]` table in the config file, and
//! `--media-*` flags. [`MediaOverrides::resolve`] checks them and names the one at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
}

pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;

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
            download_wait
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
        Ok(MediaConfig {
            dir,
            max_bytes,
            retention_days: self.retention_days.unwrap_or(0),
            signed_urls: self.signed_urls.unwrap_or(false),
            signed_url_ttl: duration(
                "WAMUX_MEDIA_SIGNED_URL_TTL",
                &self.signed_url_ttl,
                Duration::from_secs(7 * 86_400),
            )?,
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
}
