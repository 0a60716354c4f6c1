//! Our database: sessions, messages and the event log, in `<data dir>/wamux.db` (SQLite, WAL).
//!
//! This is the only module that writes SQL against our database. Functions that change state
//! also append the matching row to `events` in the same transaction and hand back the
//! [`Event`](crate::event::Event)s, which the caller publishes on the bus after the commit.
//! Errors are [`StoreError`]; callers at the HTTP edge map them to 500.

pub mod events;
pub mod messages;
pub mod sessions;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored JSON is invalid")]
    Json(#[from] serde_json::Error),
    /// A batched write (see [`sessions::set_status`]) failed as a whole.
    #[error("batched write failed: {0}")]
    Batch(std::sync::Arc<StoreError>),
    #[error("the database is closed")]
    Closed,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
pub type Tx = Transaction<'static, Sqlite>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    /// One connection for write transactions, so writers queue in order in the pool instead
    /// of polling SQLite's lock: its busy handler sleeps 1, 2, 5, ... up to 100 ms between
    /// tries and is not woken when the lock frees, which under many concurrent writers (one
    /// inbound hook and one webhook worker per session) added tens of ms to commits.
    writer: SqlitePool,
    /// The queue of the status writer (see [`sessions::set_status`]).
    statuses: tokio::sync::mpsc::UnboundedSender<sessions::StatusChange>,
}

impl Store {
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
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(opts)
            .await?;
        let (statuses, queue) = tokio::sync::mpsc::unbounded_channel();
        let store = Self {
            pool,
            writer,
            statuses,
        };
        // It ends when the last handle is dropped (the queue closes).
        tokio::spawn(sessions::status_writer(store.writer.clone(), queue));
        Ok(store)
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Starts a write transaction on the writer connection (callers wait their turn for it).
    /// `BEGIN IMMEDIATE` still takes SQLite's lock up front, so a write made outside these
    /// transactions queues on the busy timeout instead of deadlocking on a read-to-write
    /// upgrade. Never call it while holding its transaction: it would wait for itself.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// Current unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The device numbers a whatsapp-rust device store file holds (none if it does not exist).
pub async fn device_ids(device_db: &Path) -> Result<std::collections::HashSet<i64>> {
    use sqlx::Connection;
    if !device_db.exists() {
        return Ok(Default::default());
    }
    let opts = SqliteConnectOptions::new()
        .filename(device_db)
        .busy_timeout(Duration::from_secs(30));
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await?;
    let has_table: bool = sqlx::query_scalar(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'device'",
    )
    .fetch_one(&mut conn)
    .await?;
    if !has_table {
        return Ok(Default::default());
    }
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM device")
        .fetch_all(&mut conn)
        .await?;
    Ok(ids.into_iter().collect())
}

/// Deletes one device's rows from the whatsapp-rust device store (a separate SQLite file
/// holding many devices, each row tagged with its device number). The table list is read
/// from the file itself, so a newer store schema is still wiped completely.
pub async fn wipe_device_rows(device_db: &Path, device_id: i64) -> Result<()> {
    use sqlx::{Connection, Row};
    let opts = SqliteConnectOptions::new()
        .filename(device_db)
        .busy_timeout(Duration::from_secs(30));
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
         AND name NOT LIKE '__diesel%'",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut tx = conn.begin().await?;
    for t in tables {
        let cols = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT name FROM pragma_table_info('{}')",
            t.replace('\'', "''")
        )))
        .fetch_all(&mut *tx)
        .await?;
        let names: Vec<String> = cols
            .iter()
            .filter_map(|r| r.try_get::<String, _>("name").ok())
            .collect();
        let column = if names.iter().any(|c| c == "device_id") {
            "device_id"
        } else if t == "device" && names.iter().any(|c| c == "id") {
            "id"
        } else {
            continue;
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM \"{}\" WHERE {column} = ?",
            t.replace('"', "\"\"")
        )))
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
