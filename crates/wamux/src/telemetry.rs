//! Logs: to stdout (text or JSON, `WAMUX_LOG_FORMAT`) and, with `WAMUX_LOG_DIR`, also to the
//! files the PM2 setup we replace wrote — `combined.log` (everything), `out.log` (info and
//! below) and `error.log` (warnings and errors) — each rotated at UTC midnight to
//! `NAME.YYYY-MM-DD`, keeping `WAMUX_LOG_RETENTION` old files per name.
//!
//! What must never be logged (message bodies, API keys, webhook secrets, header values) is
//! kept out at the call sites; `WAMUX_LOG_MASK_PHONES` masks phone numbers in every line,
//! whoever wrote it (our code or a dependency), by rewriting digit runs at the writer.
//! One access-log line per request: method, path (never the query, which may carry
//! `apiKey`), status, latency and the client address (see [`crate::net`]).

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Level;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::Registry;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{Config, LogFormat};
use crate::net::{ClientInfo, PeerAddr, TrustedProxies};

/// The log file names, as the seed's deployment had them.
pub const LOG_FILES: [&str; 3] = ["combined.log", "out.log", "error.log"];

type BoxLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global logger. Fails only when the log directory cannot be written.
pub fn init_logging(config: &Config) -> io::Result<()> {
    let mask = config.log_mask_phones;
    let filter = || EnvFilter::new(&config.log);
    let mut layers: Vec<BoxLayer> = vec![
        fmt_layer(
            config.log_format,
            io::stdout().is_terminal(),
            Sink {
                target: Target::Stdout,
                mask,
            },
        )
        .with_filter(filter())
        .boxed(),
    ];
    if let Some(dir) = &config.log_dir {
        std::fs::create_dir_all(dir)?;
        let file = |name: &str| -> io::Result<Sink> {
            Ok(Sink {
                target: Target::File(Arc::new(RollingFile::open(
                    dir,
                    name,
                    config.log_retention,
                )?)),
                mask,
            })
        };
        let [combined, out, error] = LOG_FILES;
        layers.push(
            fmt_layer(config.log_format, false, file(combined)?)
                .with_filter(filter())
                .boxed(),
        );
        layers.push(
            fmt_layer(config.log_format, false, file(out)?)
                .with_filter(filter().and(filter_fn(|m| *m.level() > Level::WARN)))
                .boxed(),
        );
        layers.push(
            fmt_layer(config.log_format, false, file(error)?)
                .with_filter(filter().and(filter_fn(|m| *m.level() <= Level::WARN)))
                .boxed(),
        );
    }
    // A second init (tests calling this twice) keeps the first logger.
    if tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_err()
    {
        tracing::debug!("a logger was already installed");
    }
    Ok(())
}

fn fmt_layer(format: LogFormat, ansi: bool, sink: Sink) -> BoxLayer {
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(sink);
    match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    }
}

#[derive(Clone)]
enum Target {
    Stdout,
    File(Arc<RollingFile>),
}

/// Where one layer writes, with the phone mask applied to each formatted event.
#[derive(Clone)]
struct Sink {
    target: Target,
    mask: bool,
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self)
    }
}

struct SinkWriter<'a>(&'a Sink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The formatter hands over one whole event per call, so a phone number is never
        // split across two writes.
        let masked;
        let data = if self.0.mask {
            masked = mask_phones(buf);
            &masked[..]
        } else {
            buf
        };
        match &self.0.target {
            Target::Stdout => io::stdout().lock().write_all(data)?,
            Target::File(f) => f.write_all(data)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &self.0.target {
            Target::Stdout => io::stdout().flush(),
            Target::File(_) => Ok(()),
        }
    }
}

/// Replaces all but the last three digits of every run of 8 to 15 digits (the length of
/// phone numbers, with or without a JID suffix) with `*`. Longer runs are ids, shorter
/// ones counts and times; both are left alone.
pub fn mask_phones(buf: &[u8]) -> Vec<u8> {
    let mut out = buf.to_vec();
    let mut i = 0;
    while i < out.len() {
        if !out[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < out.len() && out[i].is_ascii_digit() {
            i += 1;
        }
        if (8..=15).contains(&(i - start)) {
            out[start..i - 3].fill(b'*');
        }
    }
    out
}

/// An append-only file that moves itself aside at UTC midnight and keeps `keep` old ones.
struct RollingFile {
    dir: PathBuf,
    name: String,
    keep: usize,
    state: Mutex<(File, i64)>,
}

impl RollingFile {
    fn open(dir: &Path, name: &str, keep: usize) -> io::Result<Self> {
        let path = dir.join(name);
        // A file left from an earlier day is rotated at the first write.
        let day = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map(day_of)
            .unwrap_or_else(|_| day_of(SystemTime::now()));
        let file = append(&path)?;
        Ok(Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            keep,
            state: Mutex::new((file, day)),
        })
    }

    fn write_all(&self, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let today = day_of(SystemTime::now());
        if today != state.1 {
            let current = self.dir.join(&self.name);
            let rotated = self.dir.join(format!("{}.{}", self.name, date(state.1)));
            // If the move fails (e.g. the file was removed), keep logging to a fresh file.
            if let Err(e) = std::fs::rename(&current, &rotated)
                && e.kind() != io::ErrorKind::NotFound
            {
                eprintln!("wamux: cannot rotate {}: {e}", current.display());
            }
            state.0 = append(&current)?;
            state.1 = today;
            self.prune();
        }
        state.0.write_all(data)
    }

    /// Deletes the oldest rotated files beyond the retention count. The date suffix sorts
    /// chronologically, so a name sort is enough.
    fn prune(&self) {
        let prefix = format!("{}.", self.name);
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut old: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix(&prefix))
                    .is_some_and(|d| d.len() == 10 && d.as_bytes()[4] == b'-')
            })
            .map(|e| e.path())
            .collect();
        old.sort();
        let excess = old.len().saturating_sub(self.keep);
        for p in &old[..excess] {
            if let Err(e) = std::fs::remove_file(p) {
                eprintln!("wamux: cannot remove old log {}: {e}", p.display());
            }
        }
    }
}

fn append(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o640);
    }
    opts.open(path)
}

/// Days since the unix epoch (UTC).
fn day_of(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| (d.as_secs() / 86_400) as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DD` of a day number (proleptic Gregorian calendar, days since 1970-01-01).
pub fn date(days: i64) -> String {
    // Shift to a calendar whose years start in March, so the leap day is the year's last.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Middleware: one log line per request, and the request counter.
pub async fn access_log(
    State(trusted): State<Arc<TrustedProxies>>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let peer = req
        .extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|c| c.0.0.ip());
    let client = ClientInfo::resolve(peer, req.headers(), &trusted);
    let method = req.method().clone();
    // The path only: the query may carry the API key (`?apiKey=`).
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let client_ip = client.ip.map(|ip| ip.to_string());
    if status >= 500 {
        tracing::warn!(target: "wamux::http", %method, %path, status, elapsed_ms, client = client_ip.as_deref(), "request");
    } else {
        tracing::info!(target: "wamux::http", %method, %path, status, elapsed_ms, client = client_ip.as_deref(), "request");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_phone_numbers_not_times() {
        let line = b"session=s1 from=15550000001@s.whatsapp.net lid=123456789012345@lid took 250ms at 2026-11-28";
        let got = String::from_utf8(mask_phones(line)).unwrap();
        assert_eq!(
            got,
            "session=s1 from=********001@s.whatsapp.net lid=************345@lid took 250ms at 2026-11-28"
        );
    }

    #[test]
    fn dates_from_day_numbers() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(11_016), "2000-02-29");
        assert_eq!(date(20_785), "2026-11-28");
    }

    #[test]
    fn rotation_keeps_the_retention_count() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"] {
            std::fs::write(dir.path().join(format!("out.log.{d}")), "x").unwrap();
        }
        let f = RollingFile::open(dir.path(), "out.log", 2).unwrap();
        f.write_all(b"today\n").unwrap();
        // Pretend the current file is from yesterday: the next write rotates it.
        f.state.lock().unwrap().1 -= 1;
        f.write_all(b"tomorrow\n").unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let yesterday = date(day_of(SystemTime::now()) - 1);
        assert_eq!(
            names,
            vec![
                "out.log".to_owned(),
                "out.log.2026-11-04".to_owned(),
                format!("out.log.{yesterday}")
            ]
        );
        let current = std::fs::read_to_string(dir.path().join("out.log")).unwrap();
        assert_eq!(current, "tomorrow\n");
    }
}
