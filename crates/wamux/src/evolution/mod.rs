//! Evolution API v2's dialect: its webhook events and payloads ([`events`], [`payload`]),
//! so its users switch to wamux by changing a URL. The webhook format that uses them is
//! [`crate::webhook::evolution`]; the REST routes are in `api/evolution/`.
//!
//! This module only translates: it knows our model and Evolution's shapes, nothing of the
//! store, the sessions or HTTP.

pub mod events;
pub mod payload;

pub use events::{EvoEvent, Subscriptions};

/// `2026-03-09T00:35:45.123Z` for unix milliseconds, as JavaScript's `toISOString`.
pub fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let rem = secs.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        crate::telemetry::date(secs.div_euclid(86_400)),
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
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
