//! When to try a delivery again, and whether to try at all.

use std::time::{Duration, SystemTime};

use rand::Rng as _;

/// Delays between attempts: the n-th entry is the wait after the n-th failed attempt. When the
/// list runs out the delivery is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl Default for RetrySchedule {
    /// The Standard Webhooks schedule, extended with one more 10 h step so that retries span
    /// more than 24 hours (5 s + 5 min + 30 min + 2 h + 5 h + 10 h + 10 h ≈ 27.6 h).
    fn default() -> Self {
        const M: u64 = 60;
        const H: u64 = 60 * M;
        Self(
            [5, 5 * M, 30 * M, 2 * H, 5 * H, 10 * H, 10 * H]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        )
    }
}

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Self {
        Self(delays)
    }

    /// Parses `5s,5m,30m,2h` (units `ms`, `s`, `m`, `h`; a bare number is seconds).
    pub fn parse(text: &str) -> Result<Self, String> {
        let delays = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_duration)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(delays))
    }

    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// Total number of attempts a delivery gets before it is dead-lettered.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.0.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// The wait after `attempts` failed attempts, jittered by ±10% so that deliveries that failed
    /// together (a receiver outage) do not come back in one burst. `None`: give up.
    pub fn next_delay(&self, attempts: u32) -> Option<Duration> {
        let base = *self
            .0
            .get(usize::try_from(attempts).ok()?.checked_sub(1)?)?;
        let factor = rand::rng().random_range(0.9..=1.1);
        Some(base.mul_f64(factor))
    }
}

/// Parses `250ms`, `5s`, `5m`, `2h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 250ms, 5s, 5m or 2h"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!(
            "{text:?} is not a duration like 250ms, 5s, 5m or 2h"
        )),
    }
}

/// What one attempt's answer means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again later (5xx, timeouts, connection errors, 408/409/425/429).
    Retry,
    /// The receiver rejected this event for good (other 4xx, 3xx): retrying cannot help.
    Reject,
    /// 410 Gone: the receiver asks us to stop; the webhook is disabled.
    Gone,
}

pub fn verdict(status: Option<u16>) -> Verdict {
    match status {
        None => Verdict::Retry,
        Some(200..=299) => Verdict::Delivered,
        Some(410) => Verdict::Gone,
        Some(408 | 409 | 425 | 429) => Verdict::Retry,
        Some(500..) => Verdict::Retry,
        // 1xx/3xx (redirects are not followed, so a moved receiver must be reconfigured) and 4xx.
        Some(_) => Verdict::Reject,
    }
}

/// Reads `Retry-After` as delay-seconds or an HTTP date. Capped at a day: a receiver cannot
/// park a delivery beyond the retry window.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    const CAP: Duration = Duration::from_secs(24 * 3600);
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or_default(),
    };
    Some(delay.min(CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_spans_more_than_a_day() {
        let s = RetrySchedule::default();
        let total: Duration = s.delays().iter().sum();
        assert!(total > Duration::from_secs(24 * 3600));
        assert_eq!(s.delays()[0], Duration::from_secs(5));
        assert_eq!(s.max_attempts(), 8);
        assert!(s.next_delay(0).is_none());
        assert!(s.next_delay(8).is_none());
        let d = s.next_delay(1).unwrap();
        assert!(d >= Duration::from_millis(4500) && d <= Duration::from_millis(5500));
    }

    #[test]
    fn parses_schedules() {
        let s = RetrySchedule::parse("50ms, 1s,2m,3h,4").unwrap();
        assert_eq!(
            s.delays(),
            &[
                Duration::from_millis(50),
                Duration::from_secs(1),
                Duration::from_secs(120),
                Duration::from_secs(3 * 3600),
                Duration::from_secs(4)
            ]
        );
        assert!(RetrySchedule::parse("5x").is_err());
    }

    #[test]
    fn classifies_answers() {
        assert_eq!(verdict(Some(204)), Verdict::Delivered);
        assert_eq!(verdict(Some(500)), Verdict::Retry);
        assert_eq!(verdict(None), Verdict::Retry);
        for code in [408, 409, 425, 429] {
            assert_eq!(verdict(Some(code)), Verdict::Retry);
        }
        assert_eq!(verdict(Some(400)), Verdict::Reject);
        assert_eq!(verdict(Some(404)), Verdict::Reject);
        assert_eq!(verdict(Some(301)), Verdict::Reject);
        assert_eq!(verdict(Some(410)), Verdict::Gone);
    }

    #[test]
    fn reads_retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("999999", now),
            Some(Duration::from_secs(86400))
        );
    }
}
