//! Deletes media files older than `WAMUX_MEDIA_RETENTION_DAYS`, hourly.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Media;

const EVERY: Duration = Duration::from_secs(3600);

pub(super) async fn run(media: Media, cancel: CancellationToken) {
    let days = media.config().retention_days;
    loop {
        let cutoff = crate::store::now() - (days as i64).saturating_mul(86_400);
        match media.storage().delete_older_than(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, days, "media retention: deleted old files"),
            Err(e) => tracing::error!("media retention failed: {e}"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}
