//! Evolution API v2's dialect: its webhook events and payloads ([`events`], [`payload`]),
//! so its users switch to wamux by changing a URL. The webhook format that uses them is
//! [`crate::webhook::evolution`], its REST routes [`crate::api::evolution`].
//!
//! This module only translates: it knows our model and Evolution's shapes, nothing of the
//! store, the sessions or HTTP.

pub mod events;
pub mod payload;

pub use events::{EvoEvent, Subscriptions};

/// `2026-03-09T00:35:45.123Z` for unix milliseconds, as JavaScript's `toISOString`.
pub fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_read_as_javascript_writes_them() {
        assert_eq!(super::iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::iso8601(1_773_016_545_123),
            "2026-03-09T00:35:45.123Z"
        );
        assert_eq!(super::iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
