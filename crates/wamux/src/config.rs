//! Settings, in layers: built-in defaults, then an optional TOML file, then `WAMUX_*`
//! environment variables, then command-line flags. [`Config::load`] checks and types them
//! once, at startup, and names the setting that is wrong. Errors here are [`ConfigError`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::media::MediaConfig;
use crate::net::TrustedProxies;
use crate::store::{Database, PoolSize};
use crate::webhook::config::WebhookConfig;

/// A value that must not show up in logs or `Debug` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The gateway's settings, after layering and checking: every value here is typed and was
/// validated once, by [`Config::load`]. Every field has a `WAMUX_*` variable, a key of the
/// same name (lower case, without the prefix) in the config file, and a flag.
#[derive(Debug, Clone)]
pub struct Config {
    /// `WAMUX_API_KEY`: the key every `/api` request must carry. When unset, one is
    /// generated on first start, kept in `<data dir>/api_key` and printed once.
    pub api_key: Option<Secret>,
    /// `WAMUX_HOST`: address to listen on.
    pub host: String,
    /// `WAMUX_PORT`: port to listen on.
    pub port: u16,
    /// `WAMUX_DATA_DIR`: where everything is kept (database, device store, API key).
    pub data_dir: PathBuf,
    /// `WAMUX_DATABASE_URL`: where wamux keeps its data: unset means SQLite (`wamux.db` and
    /// `whatsapp.db` in the data directory); `postgres://user:password@host/db` means
    /// PostgreSQL, for everything including every device's keys (see docs/postgres.md).
    pub database_url: Option<Database>,
    /// `WAMUX_DATABASE_MAX_CONNECTIONS`: connections this node opens to PostgreSQL at most.
    pub database_pool: PoolSize,
    /// `WAMUX_PUBLIC_URL`: base of links handed out (media). Default `http://<host>:<port>`.
    pub public_url: Option<String>,
    /// `WAMUX_LOG`: log filter, e.g. `info` or `wamux=debug,whatsapp_rust=warn`.
    pub log: String,
    /// `WAMUX_LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
    /// `WAMUX_MAX_BODY_BYTES`: largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// `WAMUX_WA_URL` (sandbox builds only): WebSocket URL of a WhatsApp simulator.
    pub wa_url: Option<String>,
    /// `WAMUX_WA_CA_FILE` (sandbox builds only): CA certificate (PEM) of that simulator.
    pub wa_ca_file: Option<PathBuf>,
    /// `WAMUX_SIM_PORT` (`wamux sandbox` only): port of the in-process simulator; 0 = any.
    pub sim_port: u16,
    /// `WAMUX_WEBHOOK_*`: webhook delivery (see docs/webhooks.md).
    pub webhook: WebhookConfig,
    /// `WAMUX_MEDIA_*`: media storage, limits and links (see docs/media.md).
    pub media: MediaConfig,
    /// `WAMUX_LOG_DIR`: also write `combined.log`, `out.log` and `error.log` there.
    pub log_dir: Option<PathBuf>,
    /// `WAMUX_LOG_RETENTION`: rotated log files kept per name (one per day).
    pub log_retention: usize,
    /// `WAMUX_LOG_MASK_PHONES`: mask phone numbers (and JIDs) in every log line.
    pub log_mask_phones: bool,
    /// `WAMUX_TLS_CERT` / `WAMUX_TLS_KEY`: serve HTTPS with these PEM files (reloaded on change).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `WAMUX_TRUSTED_PROXIES`: IPs/CIDRs whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// `WAMUX_METRICS_LISTEN`: serve `/metrics` without the API key on this address instead.
    pub metrics_listen: Option<SocketAddr>,
    /// `WAMUX_PASSKEY_STEP_TIMEOUT`: how long WhatsApp may take for its next step of a
    /// passkey link (after the assertion, after the confirmation) before the attempt is
    /// given up as stuck.
    pub passkey_step_timeout: Duration,
    /// `WAMUX_AUTH_FAILURES_PER_MINUTE`: wrong or missing keys one client address may send
    /// per minute; past that it gets 429 until the minute is over.
    pub auth_failures_per_minute: u32,
    /// `WAMUX_AUDIT_RETENTION_DAYS`: how long the audit log keeps an entry.
    pub audit_retention_days: u32,
    /// `WAMUX_SEND_QUEUE`: send routes queue by default (`"queue": false` sends at once).
    pub send_queue: bool,
    /// `WAMUX_SEND_ACK_TIMEOUT`: how long a queued message waits for WhatsApp's server ack
    /// before it is sent again (with the same id).
    pub send_ack_timeout: Duration,
    /// `WAMUX_SEND_ATTEMPTS`: attempts a queued message gets before it is `failed`.
    pub send_attempts: u32,
    /// `WAMUX_COMPAT_EVOLUTION`: also answer Evolution API v2's routes (`/instance/...`,
    /// `/message/...`, header `apikey`), for clients written against Evolution.
    pub compat_evolution: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self::with_data_dir("./data")
    }
}

impl Config {
    /// The defaults, with everything kept under `data_dir` (media included).
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            api_key: None,
            host: "0.0.0.0".into(),
            port: 3000,
            media: MediaConfig::in_dir(&data_dir),
            data_dir,
            database_url: None,
            database_pool: PoolSize::default(),
            public_url: None,
            log: "info".into(),
            log_format: LogFormat::Text,
            max_body_bytes: 16 * 1024 * 1024,
            wa_url: None,
            wa_ca_file: None,
            sim_port: 0,
            webhook: WebhookConfig::default(),
            log_dir: None,
            log_retention: 14,
            log_mask_phones: false,
            tls_cert: None,
            tls_key: None,
            trusted_proxies: TrustedProxies::default(),
            metrics_listen: None,
            passkey_step_timeout: Duration::from_secs(60),
            auth_failures_per_minute: 30,
            audit_retention_days: 90,
            send_queue: false,
            compat_evolution: false,
            send_ack_timeout: Duration::from_secs(30),
            send_attempts: 5,
        }
    }
}

/// One layer: any subset of the settings. The file, the environment and the flags each
/// produce one.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// API key required on every /api request [default: generated, kept in <data dir>/api_key]
    #[arg(long, env = "WAMUX_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,
    /// Address to listen on [default: 0.0.0.0]
    #[arg(long, env = "WAMUX_HOST")]
    pub host: Option<String>,
    /// Port to listen on [default: 3000]
    #[arg(long, env = "WAMUX_PORT")]
    pub port: Option<u16>,
    /// Directory for the database, the WhatsApp device store and the generated API key [default: ./data]
    #[arg(long, env = "WAMUX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database: postgres://user:password@host/db for PostgreSQL [default: SQLite in the data directory]
    #[arg(long, env = "WAMUX_DATABASE_URL")]
    pub database_url: Option<Secret>,
    /// Connections one node opens to PostgreSQL at most, all pools together [default: 20]
    #[arg(long, env = "WAMUX_DATABASE_MAX_CONNECTIONS")]
    pub database_max_connections: Option<u32>,
    /// Public base URL for links handed out (media) [default: http://<host>:<port>]
    #[arg(long, env = "WAMUX_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Log filter (tracing syntax), e.g. info or wamux=debug [default: info]
    #[arg(long, env = "WAMUX_LOG")]
    pub log: Option<String>,
    /// Log format [default: text]
    #[arg(long, env = "WAMUX_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Largest request body accepted, in bytes; larger ones get 413 [default: 16777216]
    #[arg(long, env = "WAMUX_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// WebSocket URL of a WhatsApp simulator (sandbox builds only; refused by production builds)
    #[arg(long, env = "WAMUX_WA_URL")]
    #[cfg_attr(not(feature = "sandbox"), arg(hide = true))]
    pub wa_url: Option<String>,
    /// CA certificate (PEM) of that simulator (sandbox builds only; refused by production builds)
    #[arg(long, env = "WAMUX_WA_CA_FILE")]
    #[cfg_attr(not(feature = "sandbox"), arg(hide = true))]
    pub wa_ca_file: Option<PathBuf>,
    /// Port of the in-process simulator of `wamux sandbox` [default: any free port]
    #[arg(long, env = "WAMUX_SIM_PORT")]
    #[cfg_attr(not(feature = "sandbox"), arg(hide = true))]
    pub sim_port: Option<u16>,
    /// Webhook settings; in the config file, a `[webhook]` table.
    #[command(flatten)]
    #[serde(default)]
    pub webhook: crate::webhook::config::WebhookOverrides,
    /// Media settings; in the config file, a `[media]` table.
    #[command(flatten)]
    #[serde(default)]
    pub media: crate::media::MediaOverrides,
    /// Directory for combined.log, out.log and error.log, rotated daily [default: stdout only]
    #[arg(long, env = "WAMUX_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
    /// Rotated log files kept per name, one per day [default: 14]
    #[arg(long, env = "WAMUX_LOG_RETENTION")]
    pub log_retention: Option<usize>,
    /// Mask phone numbers in logs [default: false]
    #[arg(long, env = "WAMUX_LOG_MASK_PHONES")]
    pub log_mask_phones: Option<bool>,
    /// Certificate chain (PEM) for built-in HTTPS; reloaded when the file changes
    #[arg(long, env = "WAMUX_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for built-in HTTPS
    #[arg(long, env = "WAMUX_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For/Proto/Host are believed [default: none]
    #[arg(long, env = "WAMUX_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Serve /metrics without the API key on this address (e.g. 127.0.0.1:9100) [default: /metrics on the API port, with the key]
    #[arg(long, env = "WAMUX_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Seconds WhatsApp may take for its next step of a passkey link before the attempt is given up [default: 60]
    #[arg(long, env = "WAMUX_PASSKEY_STEP_TIMEOUT")]
    pub passkey_step_timeout: Option<u64>,
    /// Wrong or missing API keys one client address may send per minute before it gets 429 [default: 30]
    #[arg(long, env = "WAMUX_AUTH_FAILURES_PER_MINUTE")]
    pub auth_failures_per_minute: Option<u32>,
    /// Days the audit log of mutating API calls keeps an entry [default: 90]
    #[arg(long, env = "WAMUX_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u32>,
    /// Queue sends by default: accepted with 202 even while the session is offline, sent when it connects [default: false]
    #[arg(long, env = "WAMUX_SEND_QUEUE")]
    pub send_queue: Option<bool>,
    /// Seconds a queued message waits for WhatsApp's server ack before it is sent again [default: 30]
    #[arg(long, env = "WAMUX_SEND_ACK_TIMEOUT")]
    pub send_ack_timeout: Option<u64>,
    /// Attempts a queued message gets (5, 10, 20, 40 s apart) before it is failed [default: 5]
    #[arg(long, env = "WAMUX_SEND_ATTEMPTS")]
    pub send_attempts: Option<u32>,
    /// Also answer Evolution API v2's routes (/instance, /message, /chat, /webhook; header apikey) [default: false]
    #[arg(long, env = "WAMUX_COMPAT_EVOLUTION")]
    pub compat_evolution: Option<bool>,
}

impl clap::builder::ValueParserFactory for Secret {
    type Parser =
        clap::builder::MapValueParser<clap::builder::StringValueParser, fn(String) -> Secret>;
    fn value_parser() -> Self::Parser {
        use clap::builder::TypedValueParser as _;
        clap::builder::StringValueParser::new().map(Secret as fn(String) -> Secret)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("setting {setting} is invalid: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

fn invalid(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.into(),
    }
}

impl Overrides {
    /// Reads a TOML file whose keys are the setting names without the `WAMUX_` prefix, in
    /// lower case (`port = 3000`, `data_dir = "/var/lib/wamux"`).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
    }
}

impl Overrides {
    /// Puts `other`'s settings over these.
    pub fn apply(&mut self, other: Overrides) {
        macro_rules! over {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        over!(
            api_key,
            host,
            port,
            data_dir,
            database_url,
            database_max_connections,
            public_url,
            log,
            log_format,
            max_body_bytes,
            wa_url,
            wa_ca_file,
            sim_port,
            log_dir,
            log_retention,
            log_mask_phones,
            tls_cert,
            tls_key,
            trusted_proxies,
            metrics_listen,
            passkey_step_timeout,
            auth_failures_per_minute,
            audit_retention_days,
            send_queue,
            send_ack_timeout,
            send_attempts,
            compat_evolution
        );
        self.webhook.apply(other.webhook);
        self.media.apply(other.media);
    }
}

impl Config {
    /// Builds the configuration from the layers: defaults, then `file` (if given), then
    /// `env_and_flags` (clap has already put flags over environment variables), and checks
    /// and types every setting, once.
    pub fn load(file: Option<&Path>, env_and_flags: Overrides) -> Result<Self, ConfigError> {
        let mut layers = Overrides::default();
        if let Some(path) = file {
            layers.apply(Overrides::from_file(path)?);
        }
        layers.apply(env_and_flags);
        Self::from_layers(layers)
    }

    /// Checks and types the merged layers; the error names the setting that is wrong.
    pub fn from_layers(o: Overrides) -> Result<Self, ConfigError> {
        let d = Config::default();
        let api_key = o.api_key;
        if let Some(k) = &api_key {
            let k = k.expose();
            if k.len() < 8 {
                return Err(invalid("WAMUX_API_KEY", "must be at least 8 characters"));
            }
            if k.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(invalid(
                    "WAMUX_API_KEY",
                    "must not contain spaces or control characters",
                ));
            }
        }
        let host = o.host.unwrap_or(d.host);
        if host.parse::<IpAddr>().is_err() && !is_hostname(&host) {
            return Err(invalid(
                "WAMUX_HOST",
                format!("`{host}` is not an IP address or host name"),
            ));
        }
        let data_dir = o.data_dir.unwrap_or(d.data_dir);
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("WAMUX_DATA_DIR", "must not be empty"));
        }
        let database_url = o
            .database_url
            .map(|url| Database::parse(url.expose()))
            .transpose()
            .map_err(|m| invalid("WAMUX_DATABASE_URL", m))?;
        let database_pool = match o.database_max_connections {
            None => d.database_pool,
            Some(n) => {
                PoolSize::new(n).map_err(|m| invalid("WAMUX_DATABASE_MAX_CONNECTIONS", m))?
            }
        };
        if let Some(u) = &o.public_url {
            let ok = reqwest::Url::parse(u)
                .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(invalid(
                    "WAMUX_PUBLIC_URL",
                    format!("`{u}` is not an http(s) URL"),
                ));
            }
        }
        let log = o.log.unwrap_or(d.log);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
            return Err(invalid("WAMUX_LOG", e.to_string()));
        }
        let webhook = o
            .webhook
            .resolve()
            .map_err(|message| ConfigError::Invalid {
                setting: "WAMUX_WEBHOOK_*",
                message,
            })?;
        let passkey_step_timeout = o.passkey_step_timeout.unwrap_or(60);
        if !(1..=600).contains(&passkey_step_timeout) {
            return Err(invalid(
                "WAMUX_PASSKEY_STEP_TIMEOUT",
                "must be between 1 and 600 seconds",
            ));
        }
        let auth_failures_per_minute = o
            .auth_failures_per_minute
            .unwrap_or(d.auth_failures_per_minute);
        if auth_failures_per_minute == 0 {
            return Err(invalid(
                "WAMUX_AUTH_FAILURES_PER_MINUTE",
                "must be at least 1",
            ));
        }
        let audit_retention_days = o.audit_retention_days.unwrap_or(d.audit_retention_days);
        if !(1..=3650).contains(&audit_retention_days) {
            return Err(invalid(
                "WAMUX_AUDIT_RETENTION_DAYS",
                "must be between 1 and 3650 days",
            ));
        }
        let send_ack_timeout = o.send_ack_timeout.unwrap_or(d.send_ack_timeout.as_secs());
        if !(1..=600).contains(&send_ack_timeout) {
            return Err(invalid(
                "WAMUX_SEND_ACK_TIMEOUT",
                "must be between 1 and 600 seconds",
            ));
        }
        let send_attempts = o.send_attempts.unwrap_or(d.send_attempts);
        if !(1..=20).contains(&send_attempts) {
            return Err(invalid("WAMUX_SEND_ATTEMPTS", "must be between 1 and 20"));
        }
        let log_retention = o.log_retention.unwrap_or(d.log_retention);
        if log_retention == 0 {
            return Err(invalid("WAMUX_LOG_RETENTION", "must be at least 1"));
        }
        match (&o.tls_cert, &o.tls_key) {
            (Some(_), None) => {
                return Err(invalid("WAMUX_TLS_KEY", "is needed with WAMUX_TLS_CERT"));
            }
            (None, Some(_)) => {
                return Err(invalid("WAMUX_TLS_CERT", "is needed with WAMUX_TLS_KEY"));
            }
            _ => {}
        }
        let trusted_proxies = TrustedProxies::parse(&o.trusted_proxies.unwrap_or_default())
            .map_err(|m| invalid("WAMUX_TRUSTED_PROXIES", m))?;
        let metrics_listen = o
            .metrics_listen
            .map(|a| {
                a.parse::<SocketAddr>().map_err(|_| {
                    invalid(
                        "WAMUX_METRICS_LISTEN",
                        format!("`{a}` is not an address like 127.0.0.1:9100"),
                    )
                })
            })
            .transpose()?;
        let media = o
            .media
            .resolve(&data_dir)
            .map_err(|message| ConfigError::Invalid {
                setting: "WAMUX_MEDIA_*",
                message,
            })?;
        let max_body_bytes = o.max_body_bytes.unwrap_or(d.max_body_bytes);
        if max_body_bytes < 1024 {
            return Err(invalid("WAMUX_MAX_BODY_BYTES", "must be at least 1024"));
        }
        if cfg!(feature = "sandbox") {
            if let Some(u) = &o.wa_url {
                let ok = reqwest::Url::parse(u)
                    .map(|u| matches!(u.scheme(), "ws" | "wss"))
                    .unwrap_or(false);
                if !ok {
                    return Err(invalid(
                        "WAMUX_WA_URL",
                        format!("`{u}` is not a ws:// or wss:// URL"),
                    ));
                }
            }
            if let Some(p) = &o.wa_ca_file
                && !p.is_file()
            {
                return Err(invalid(
                    "WAMUX_WA_CA_FILE",
                    format!("{} is not a readable file", p.display()),
                ));
            }
        } else {
            // A production build talks to WhatsApp only; pointing it elsewhere is a
            // misconfiguration worth stopping for, not a setting to ignore.
            if o.wa_url.is_some() {
                return Err(invalid(
                    "WAMUX_WA_URL",
                    "this is a production build: it only connects to WhatsApp; unset WAMUX_WA_URL (a simulator needs a build with the `sandbox` feature)",
                ));
            }
            if o.wa_ca_file.is_some() {
                return Err(invalid(
                    "WAMUX_WA_CA_FILE",
                    "this is a production build: it only trusts WhatsApp; unset WAMUX_WA_CA_FILE (a simulator needs a build with the `sandbox` feature)",
                ));
            }
        }
        Ok(Config {
            api_key,
            host,
            port: o.port.unwrap_or(d.port),
            data_dir,
            database_url,
            database_pool,
            public_url: o.public_url,
            log,
            log_format: o.log_format.unwrap_or(d.log_format),
            max_body_bytes,
            wa_url: o.wa_url,
            wa_ca_file: o.wa_ca_file,
            sim_port: o.sim_port.unwrap_or(d.sim_port),
            webhook,
            media,
            log_dir: o.log_dir,
            log_retention,
            log_mask_phones: o.log_mask_phones.unwrap_or(d.log_mask_phones),
            tls_cert: o.tls_cert,
            tls_key: o.tls_key,
            trusted_proxies,
            metrics_listen,
            passkey_step_timeout: Duration::from_secs(passkey_step_timeout),
            auth_failures_per_minute,
            audit_retention_days,
            send_queue: o.send_queue.unwrap_or(d.send_queue),
            send_ack_timeout: Duration::from_secs(send_ack_timeout),
            send_attempts,
            compat_evolution: o.compat_evolution.unwrap_or(d.compat_evolution),
        })
    }

    /// Where the data is: the PostgreSQL of `WAMUX_DATABASE_URL`, else SQLite in the data
    /// directory.
    pub fn database(&self) -> Database {
        Database::for_data_dir(self.database_url.as_ref(), &self.data_dir)
    }

    /// Base URL for links handed out to clients.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let host = if self.host == "0.0.0.0" || self.host == "::" {
                    "localhost"
                } else {
                    &self.host
                };
                let scheme = if self.tls_cert.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{host}:{}", self.port)
            }
        }
    }
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
        })
}

/// The API key in force: the configured one, or the one kept in `<data dir>/api_key`, or a
/// new one written there. Returns the key and whether it was just generated (the caller
/// prints it once; it is never logged).
pub fn resolve_api_key(config: &Config) -> std::io::Result<(Secret, bool)> {
    if let Some(k) = &config.api_key {
        return Ok((k.clone(), false));
    }
    let path = config.data_dir.join("api_key");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok((Secret::new(s.trim()), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key = generate_key();
    write_private(&path, key.as_bytes())?;
    Ok((Secret::new(key), true))
}

/// 32 random bytes, URL-safe base64 (43 characters).
pub fn generate_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_hidden_from_debug() {
        let c = Config::load(
            None,
            Overrides {
                api_key: Some(Secret::new("supersecretkey")),
                database_url: Some(Secret::new(
                    "postgres://wamux:dbpassword1@db.internal/wamux",
                )),
                webhook: crate::webhook::config::WebhookOverrides {
                    url: Some("https://example.com/hook".into()),
                    secret: Some("whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0".into()),
                    ..Default::default()
                },
                media: crate::media::MediaOverrides {
                    storage: Some("s3".into()),
                    s3_bucket: Some("b".into()),
                    s3_access_key_id: Some("AKIDEXAMPLE".into()),
                    s3_secret_access_key: Some(Secret::new("s3secretvalue")),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap();
        let shown = format!("{c:?}");
        for secret in [
            "supersecretkey",
            "dbpassword1",
            "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
            "s3secretvalue",
        ] {
            assert!(!shown.contains(secret), "{secret} shows in {shown}");
        }
        assert!(shown.contains("db.internal"), "{shown}");
    }

    #[test]
    fn typed_once_from_the_layers() {
        let c = Config::load(
            None,
            Overrides {
                data_dir: Some("/srv/wamux".into()),
                metrics_listen: Some("127.0.0.1:9100".into()),
                database_max_connections: Some(5),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.media.dir, PathBuf::from("/srv/wamux/uploads"));
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(c.database_pool.max_connections(), 5);
        assert_eq!(c.database(), Database::Sqlite("/srv/wamux/wamux.db".into()));
        assert_eq!(
            Config::with_data_dir("/x").media.dir,
            PathBuf::from("/x/uploads")
        );
        let e = Config::load(
            None,
            Overrides {
                database_max_connections: Some(1),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("WAMUX_DATABASE_MAX_CONNECTIONS"),
            "{e}"
        );
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wamux.toml");
        std::fs::write(
            &file,
            "port = 4000\nhost = \"127.0.0.1\"\nlog = \"debug\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            Overrides {
                port: Some(5000),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.port, 5000);
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.log, "debug");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn errors_name_the_setting() {
        let bad = |o: Overrides| Config::load(None, o).unwrap_err().to_string();
        assert!(
            bad(Overrides {
                api_key: Some(Secret::new("short")),
                ..Default::default()
            })
            .contains("WAMUX_API_KEY")
        );
        assert!(
            bad(Overrides {
                host: Some("not a host".into()),
                ..Default::default()
            })
            .contains("WAMUX_HOST")
        );
        assert!(
            bad(Overrides {
                public_url: Some("ftp://x".into()),
                ..Default::default()
            })
            .contains("WAMUX_PUBLIC_URL")
        );
        assert!(
            bad(Overrides {
                log: Some("wamux=notalevel".into()),
                ..Default::default()
            })
            .contains("WAMUX_LOG")
        );
    }

    #[test]
    fn simulator_settings_are_for_sandbox_builds_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not checked here").unwrap();
        let url = Config::load(
            None,
            Overrides {
                wa_url: Some("wss://127.0.0.1:9/ws/chat".into()),
                ..Default::default()
            },
        );
        let ca_file = Config::load(
            None,
            Overrides {
                wa_ca_file: Some(ca),
                ..Default::default()
            },
        );
        if cfg!(feature = "sandbox") {
            assert!(url.is_ok() && ca_file.is_ok());
            let bad = Config::load(
                None,
                Overrides {
                    wa_url: Some("http://x".into()),
                    ..Default::default()
                },
            );
            assert!(bad.unwrap_err().to_string().contains("WAMUX_WA_URL"));
        } else {
            let e = url.unwrap_err().to_string();
            assert!(
                e.contains("WAMUX_WA_URL") && e.contains("production"),
                "{e}"
            );
            let e = ca_file.unwrap_err().to_string();
            assert!(
                e.contains("WAMUX_WA_CA_FILE") && e.contains("production"),
                "{e}"
            );
        }
    }

    #[test]
    fn unknown_file_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wamux.toml");
        std::fs::write(&file, "prot = 4000\n").unwrap();
        let e = Config::load(Some(&file), Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("prot"), "{e}");
    }

    #[test]
    fn generated_key_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config {
            data_dir: dir.path().to_owned(),
            ..Default::default()
        };
        let (k1, new1) = resolve_api_key(&c).unwrap();
        let (k2, new2) = resolve_api_key(&c).unwrap();
        assert!(new1 && !new2);
        assert_eq!(k1, k2);
        assert!(k1.expose().len() >= 40);
    }
}
