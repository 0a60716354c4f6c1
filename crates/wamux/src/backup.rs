//! `wamux backup --out DIR`: a consistent copy of the data dir, safe while the server runs.
//!
//! Every SQLite database in the data dir (ours, `wamux.db`, and the WhatsApp device store,
//! whatever files it uses) is copied with `VACUUM INTO`, which reads one snapshot inside a
//! transaction, so writers carry on and the copy is never torn. Their `-wal`/`-shm`/
//! `-journal` companions are skipped (the snapshot already holds their content); every
//! other file (API key, media, ...) is copied as is. Each database is consistent on its own;
//! the two are not frozen at the same instant, which the gateway tolerates as it tolerates a
//! crash between their writes.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::store::{Database, copy, sqlite};

/// What a backup wrote.
#[derive(Debug, Default)]
pub struct Report {
    pub out: PathBuf,
    pub databases: Vec<PathBuf>,
    pub files: usize,
    pub bytes: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "backup written to {}: {} database(s) ({}), {} other file(s), {} bytes",
            self.out.display(),
            self.databases.len(),
            self.databases
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            self.files,
            self.bytes
        )
    }
}

/// Copies `data_dir` into `out`, which must not exist yet or be empty, and must not be
/// inside the data dir.
pub async fn run(data_dir: &Path, database: &Database, out: &Path) -> anyhow::Result<Report> {
    let data_dir = data_dir
        .canonicalize()
        .with_context(|| format!("data dir {} not found", data_dir.display()))?;
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .with_context(|| format!("{} is not a directory", out.display()))?
            .next()
            .is_none();
        if !empty {
            bail!("{} exists and is not empty", out.display());
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let out = out.canonicalize()?;
    if out.starts_with(&data_dir) {
        bail!(
            "the backup cannot go inside the data dir ({})",
            data_dir.display()
        );
    }
    let mut report = Report {
        out: out.clone(),
        ..Default::default()
    };
    if let Database::Postgres(_) = database {
        // The database goes into the backup as the SQLite files of an installation, so
        // `wamux db copy --from <backup> --to postgres://...` restores it.
        let (ours, devices) = (out.join("wamux.db"), out.join("whatsapp.db"));
        copy::copy(
            &copy::Place::Postgres(database.clone()),
            &copy::Place::Sqlite {
                ours: ours.clone(),
                devices: devices.clone(),
            },
        )
        .await
        .with_context(|| format!("cannot copy the database {}", database.display()))?;
        for db in [ours, devices] {
            report.bytes += std::fs::metadata(&db)?.len();
            report
                .databases
                .push(db.strip_prefix(&out).unwrap_or(&db).to_owned());
        }
    }
    copy_dir(&data_dir, &out, Path::new(""), &mut report).await?;
    Ok(report)
}

async fn copy_dir(root: &Path, out: &Path, rel: &Path, report: &mut Report) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel = rel.join(entry.file_name());
        let (src, dst) = (root.join(&rel), out.join(&rel));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::create_dir_all(&dst)?;
            Box::pin(copy_dir(root, out, &rel, report)).await?;
        } else if !kind.is_file() || is_companion(&src) || dst.exists() {
            // (Already there: the database, written first on PostgreSQL.)
            continue;
        } else if sqlite::is_database(&src)? {
            sqlite::vacuum_into(&src, &dst)
                .await
                .with_context(|| format!("cannot copy database {}", src.display()))?;
            report.bytes += std::fs::metadata(&dst)?.len();
            report.databases.push(rel);
        } else {
            report.bytes += std::fs::copy(&src, &dst)
                .with_context(|| format!("cannot copy {}", src.display()))?;
            report.files += 1;
        }
    }
    Ok(())
}

/// `x.db-wal`, `x.db-shm`, `x.db-journal` next to a database `x.db`.
fn is_companion(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    ["-wal", "-shm", "-journal"].iter().any(|sfx| {
        name.strip_suffix(sfx)
            .is_some_and(|db| path.with_file_name(db).is_file())
    })
}
