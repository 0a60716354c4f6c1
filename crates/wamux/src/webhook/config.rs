//! Webhook settings. The event filter is kept with the webhooks it belongs to, in the store,
//! and re-exported here.

use std::time::Duration;

pub use crate::store::webhooks::{EventFilter, FilterError, valid_names};

use super::schedule::RetrySchedule;
use super::signature::Secret;

/// Delivery settings. Every field has a `WAMUX_WEBHOOK_*` variable (see docs/webhooks.md).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `WAMUX_WEBHOOK_URL` / `_EVENTS` / `_SECRET`: used by sessions without a webhook of their own.
    pub global: Option<GlobalWebhook>,
    /// `WAMUX_WEBHOOK_ALLOW_PRIVATE`: allow loopback, private and link-local targets.
    pub allow_private: bool,
    /// `WAMUX_WEBHOOK_TIMEOUT`: per attempt, connection included (default 10 s, as the seed).
    pub timeout: Duration,
    /// `WAMUX_WEBHOOK_RETRY_SCHEDULE`: waits between attempts (default 5s,5m,30m,2h,5h,10h,10h).
    pub retry_schedule: RetrySchedule,
    /// `WAMUX_WEBHOOK_POLL_INTERVAL`: how often an idle worker looks at the database even
    /// without a wake-up (default 5 s); wake-ups make deliveries immediate.
    pub poll_interval: Duration,
    /// `WAMUX_WEBHOOK_CONCURRENCY`: deliveries of one session in flight at once, each from a
    /// different chat (default 4). Per-chat order holds whatever the value.
    pub concurrency: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            global: None,
            allow_private: false,
            timeout: Duration::from_secs(10),
            retry_schedule: RetrySchedule::default(),
            poll_interval: Duration::from_secs(5),
            concurrency: 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GlobalWebhook {
    pub url: String,
    pub events: EventFilter,
    /// When absent, one is generated once, stored, and printed once on stdout (never logged).
    pub secret: Option<Secret>,
}

impl WebhookConfig {
    /// Reads the `WAMUX_WEBHOOK_*` settings through `get` (the environment, or a config layer),
    /// starting from the defaults. Errors name the setting at fault.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut cfg = Self::default();
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if let Some(v) = get("WAMUX_WEBHOOK_ALLOW_PRIVATE") {
            cfg.allow_private = match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    return Err(format!(
                        "WAMUX_WEBHOOK_ALLOW_PRIVATE: {v:?} is not true or false"
                    ));
                }
            };
        }
        if let Some(v) = get("WAMUX_WEBHOOK_TIMEOUT") {
            cfg.timeout = super::schedule::parse_duration(&v)
                .map_err(|e| format!("WAMUX_WEBHOOK_TIMEOUT: {e}"))?;
            if cfg.timeout.is_zero() {
                return Err("WAMUX_WEBHOOK_TIMEOUT must be more than zero".into());
            }
        }
        if let Some(v) = get("WAMUX_WEBHOOK_RETRY_SCHEDULE") {
            cfg.retry_schedule = RetrySchedule::parse(&v)
                .map_err(|e| format!("WAMUX_WEBHOOK_RETRY_SCHEDULE: {e}"))?;
        }
        if let Some(v) = get("WAMUX_WEBHOOK_POLL_INTERVAL") {
            cfg.poll_interval = super::schedule::parse_duration(&v)
                .map_err(|e| format!("WAMUX_WEBHOOK_POLL_INTERVAL: {e}"))?
                .max(Duration::from_millis(10));
        }
        if let Some(v) = get("WAMUX_WEBHOOK_CONCURRENCY") {
            cfg.concurrency = v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| {
                    format!("WAMUX_WEBHOOK_CONCURRENCY: {v:?} is not a number from 1 to 64")
                })?;
        }
        if let Some(url) = get("WAMUX_WEBHOOK_URL") {
            super::guard::parse_url(&url).map_err(|e| format!("WAMUX_WEBHOOK_URL: {e}"))?;
            let events = match get("WAMUX_WEBHOOK_EVENTS") {
                Some(list) => EventFilter::parse(list.split(',').map(str::trim))
                    .map_err(|e| format!("WAMUX_WEBHOOK_EVENTS: {e}"))?,
                None => EventFilter::All,
            };
            let secret = get("WAMUX_WEBHOOK_SECRET")
                .map(|s| Secret::parse(&s).map_err(|e| format!("WAMUX_WEBHOOK_SECRET: {e}")))
                .transpose()?;
            cfg.global = Some(GlobalWebhook {
                url,
                events,
                secret,
            });
        } else if get("WAMUX_WEBHOOK_EVENTS").is_some() || get("WAMUX_WEBHOOK_SECRET").is_some() {
            return Err(
                "WAMUX_WEBHOOK_EVENTS and WAMUX_WEBHOOK_SECRET need WAMUX_WEBHOOK_URL".into(),
            );
        }
        Ok(cfg)
    }
}

/// The webhook settings as one config layer (file `[webhook]` table, `WAMUX_WEBHOOK_*`
/// variables, `--webhook-*` flags); [`WebhookOverrides::resolve`] checks and types them.
#[derive(Debug, Clone, Default, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct WebhookOverrides {
    /// Global webhook URL, for sessions without their own
    #[arg(long = "webhook-url", env = "WAMUX_WEBHOOK_URL")]
    pub url: Option<String>,
    /// Events the global webhook receives, comma-separated [default: all]
    #[arg(long = "webhook-events", env = "WAMUX_WEBHOOK_EVENTS")]
    pub events: Option<String>,
    /// Signing secret (whsec_...) of the global webhook [default: generated once, printed once on stdout]
    #[arg(
        long = "webhook-secret",
        env = "WAMUX_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<String>,
    /// Allow webhook targets on loopback, private and link-local addresses [default: false]
    #[arg(long = "webhook-allow-private", env = "WAMUX_WEBHOOK_ALLOW_PRIVATE")]
    pub allow_private: Option<bool>,
    /// Timeout of one delivery attempt, e.g. 10s or 500ms [default: 10s]
    #[arg(long = "webhook-timeout", env = "WAMUX_WEBHOOK_TIMEOUT")]
    pub timeout: Option<String>,
    /// Waits between attempts, comma-separated [default: 5s,5m,30m,2h,5h,10h,10h]
    #[arg(long = "webhook-retry-schedule", env = "WAMUX_WEBHOOK_RETRY_SCHEDULE")]
    pub retry_schedule: Option<String>,
    /// How often workers check the database without a wake-up [default: 5s]
    #[arg(long = "webhook-poll-interval", env = "WAMUX_WEBHOOK_POLL_INTERVAL")]
    pub poll_interval: Option<String>,
    /// Deliveries of one session in flight at once, from different chats [default: 4]
    #[arg(long = "webhook-concurrency", env = "WAMUX_WEBHOOK_CONCURRENCY")]
    pub concurrency: Option<String>,
}

impl WebhookOverrides {
    /// Puts `other`'s settings over these.
    pub fn apply(&mut self, other: WebhookOverrides) {
        macro_rules! over {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        over!(
            url,
            events,
            secret,
            allow_private,
            timeout,
            retry_schedule,
            poll_interval,
            concurrency
        );
    }

    pub fn resolve(&self) -> Result<WebhookConfig, String> {
        WebhookConfig::from_lookup(|k| match k {
            "WAMUX_WEBHOOK_URL" => self.url.clone(),
            "WAMUX_WEBHOOK_EVENTS" => self.events.clone(),
            "WAMUX_WEBHOOK_SECRET" => self.secret.clone(),
            "WAMUX_WEBHOOK_ALLOW_PRIVATE" => self.allow_private.map(|b| b.to_string()),
            "WAMUX_WEBHOOK_TIMEOUT" => self.timeout.clone(),
            "WAMUX_WEBHOOK_RETRY_SCHEDULE" => self.retry_schedule.clone(),
            "WAMUX_WEBHOOK_POLL_INTERVAL" => self.poll_interval.clone(),
            "WAMUX_WEBHOOK_CONCURRENCY" => self.concurrency.clone(),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_and_checked() {
        let cfg = WebhookConfig::from_lookup(|k| match k {
            "WAMUX_WEBHOOK_URL" => Some("https://example.com/hook".into()),
            "WAMUX_WEBHOOK_EVENTS" => Some("message-received, qr".into()),
            "WAMUX_WEBHOOK_TIMEOUT" => Some("250ms".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.timeout, Duration::from_millis(250));
        assert!(cfg.global.unwrap().events.accepts("qr"));
        let err = WebhookConfig::from_lookup(|k| {
            (k == "WAMUX_WEBHOOK_EVENTS").then(|| "nope".to_owned())
        })
        .unwrap_err();
        assert!(err.contains("WAMUX_WEBHOOK_URL"));
    }
}
