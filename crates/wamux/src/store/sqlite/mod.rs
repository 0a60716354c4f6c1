//! The SQLite backend: `wamux.db` in WAL mode, with one writer connection.

pub mod access;
pub mod calls;
pub mod chats;
pub mod device;
pub mod events;
pub mod idempotency;
pub mod media;
pub mod messages;
pub mod pending;
pub mod queue;
pub mod sessions;
pub mod settings;
pub mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection as _, Row as _, SqliteConnection, SqlitePool, Transaction};

use super::Result;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How often the background task checkpoints the write-ahead log.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The size of the write-ahead log, in pages, at which the writer checkpoints itself (about
/// 40 MiB with SQLite's 4 KiB pages; SQLite's default is 1,000).
const WRITER_CHECKPOINT_PAGES: u32 = 10_000;

#[derive(Clone, Debug)]
pub struct Db {
    pub(super) pool: SqlitePool,
    /// One connection for write transactions, so writers queue in order in the pool instead
    /// of polling SQLite's lock: its busy handler sleeps 1, 2, 5, ... up to 100 ms between
    /// tries and is not woken when the lock frees, which under many concurrent writers (one
    /// inbound hook and one webhook worker per session) added tens of ms to commits.
    writer: SqlitePool,
}

impl Db {
    /// Opens (creating if needed) the database file and runs pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode is durable against process crashes, which is the
            // guarantee the inbound hook needs; FULL would only add power-loss safety at
            // a large cost per commit.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(opts.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        // The writer leaves checkpoints to a background task until the log reaches
        // WRITER_CHECKPOINT_PAGES: a checkpoint run by the writer stalls every write queued
        // behind it (it copies and syncs up to the whole log), while one run on another
        // connection does not block writers at all. The writer's own, rarer, checkpoint is what
        // lets the log start over from the beginning under a constant stream of writes.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(
                opts.pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES.to_string())
                    // Each job's savepoint keeps the prior content of every page the job changes
                    // in a statement journal: in memory, not a temporary file written page by
                    // page (two system calls per page, a third of the gateway's file writes).
                    .pragma("temp_store", "memory"),
            )
            .await?;
        tokio::spawn(checkpoints(pool.clone()));
        Ok(Self { pool, writer })
    }

    /// `BEGIN IMMEDIATE` takes SQLite's write lock up front, so a write made outside the
    /// writer connection queues on the busy timeout instead of deadlocking on a read-to-write
    /// upgrade.
    pub async fn begin(&self) -> Result<Transaction<'static, sqlx::Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// Copies the write-ahead log into the database file every [`CHECKPOINT_EVERY`], without
/// waiting for readers or writers (a passive checkpoint), so the writer seldom has to. Ends
/// when the database is closed.
async fn checkpoints(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            break;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
            && !pool.is_closed()
        {
            tracing::debug!(error = %e, "background checkpoint failed; the writer checkpoints on its own");
        }
    }
}

/// Opens an existing SQLite file other than ours (the device store, a backup's source).
async fn open_file(path: &Path) -> Result<SqliteConnection> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        // The server may hold the write lock for a moment; wait rather than fail.
        .busy_timeout(Duration::from_secs(30));
    Ok(SqliteConnection::connect_with(&opts).await?)
}

/// Deletes one device's rows from the whatsapp-rust device store (a separate SQLite file
/// holding many devices, each row tagged with its device number). The table list is read
/// from the file itself, so a newer store schema is still wiped completely.
pub async fn wipe_device_rows(device_db: &Path, device_id: i64) -> Result<()> {
    let mut conn = open_file(device_db).await?;
    let tables = device_tables(&mut conn).await?;
    let mut tx = conn.begin().await?;
    for (table, column) in tables {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM \"{}\" WHERE {column} = ?",
            table.replace('"', "\"\"")
        )))
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The device store's tables and the column naming the device in each.
async fn device_tables(conn: &mut SqliteConnection) -> Result<Vec<(String, &'static str)>> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
         AND name NOT LIKE '__diesel%'",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::new();
    for t in tables {
        let names = columns(conn, &t).await?;
        let column = if names.iter().any(|c| c == "device_id") {
            "device_id"
        } else if t == "device" && names.iter().any(|c| c == "id") {
            "id"
        } else {
            continue;
        };
        out.push((t, column));
    }
    Ok(out)
}

/// The column names of `table`.
async fn columns(conn: &mut SqliteConnection, table: &str) -> Result<Vec<String>> {
    let cols = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT name FROM pragma_table_info('{}')",
        table.replace('\'', "''")
    )))
    .fetch_all(&mut *conn)
    .await?;
    Ok(cols
        .iter()
        .filter_map(|r: &SqliteRow| r.try_get::<String, _>("name").ok())
        .collect())
}

/// Whether the file at `path` is a SQLite database.
pub fn is_database(path: &Path) -> std::io::Result<bool> {
    use std::io::Read as _;
    let mut magic = [0u8; 16];
    let mut f = std::fs::File::open(path)?;
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(&magic == b"SQLite format 3\0"),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes a consistent copy of the database at `src` to `dst` with `VACUUM INTO`, which reads
/// one snapshot inside a transaction: writers carry on and the copy is never torn.
pub async fn vacuum_into(src: &Path, dst: &Path) -> Result<()> {
    let mut conn = open_file(src).await?;
    let target = dst.to_str().ok_or_else(|| {
        super::StoreError::Invalid(format!("{} is not valid UTF-8", dst.display()))
    })?;
    sqlx::query("VACUUM INTO ?")
        .bind(target)
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}
