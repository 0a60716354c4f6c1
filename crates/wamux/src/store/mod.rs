//! Our database: sessions, messages and the event log, in `<data dir>/wamux.db` (SQLite, WAL).
//!
//! This is the only module that writes SQL against our database. Functions that change state
//! also append the matching row to `events` in the same transaction and hand back the
//! [`Event`](crate::event::Event)s, which the caller publishes on the bus after the commit.
//! Errors are [`StoreError`]; callers at the HTTP edge map them to 500.

pub mod events;
pub mod idempotency;
pub mod messages;
pub mod sessions;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored JSON is invalid")]
    Json(#[from] serde_json::Error),
    /// A group commit (see [`Store::write`]) failed as a whole.
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
    /// The queue of the group-commit writer (see [`Store::write`]).
    writes: tokio::sync::mpsc::UnboundedSender<Write>,
}

/// A unit of work for [`Store::write`]: runs inside the shared transaction, inside its own
/// savepoint, and yields its value (handed over only after the commit).
type Job = Box<
    dyn for<'c> FnOnce(
            &'c mut SqliteConnection,
        ) -> BoxFuture<'c, Result<Box<dyn std::any::Any + Send>>>
        + Send,
>;

struct Write {
    job: Job,
    done: tokio::sync::oneshot::Sender<Result<Box<dyn std::any::Any + Send>>>,
}

/// At most this many [`Store::write`] jobs share one transaction.
const WRITE_BATCH: usize = 256;

/// How often the background task checkpoints the write-ahead log.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The size of the write-ahead log, in pages, at which the writer checkpoints itself (about
/// 40 MiB with SQLite's 4 KiB pages; SQLite's default is 1,000).
const WRITER_CHECKPOINT_PAGES: u32 = 10_000;

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
        let (writes, write_queue) = tokio::sync::mpsc::unbounded_channel();
        let store = Self {
            pool,
            writer,
            writes,
        };
        // The group commit runs on a thread of its own. Each statement is a round trip to
        // SQLite's thread; on the shared runtime every one of those waited for a worker to
        // come back to this task behind the gateway's other tasks (a commit took 6-8 ms of
        // waiting for a fraction of that in SQLite). It ends when the last handle is dropped
        // (the queue closes).
        let writer = store.writer.clone();
        std::thread::Builder::new()
            .name("wamux-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(group_commit(writer, write_queue)),
                    Err(e) => tracing::error!(error = %e, "the database writer could not start"),
                }
            })
            .map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        tokio::spawn(checkpoints(store.pool.clone()));
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
        begin_immediate(&self.writer).await
    }

    /// Runs `job` in a write transaction shared with the other jobs queued meanwhile
    /// (group commit), and returns its value once that transaction is committed.
    ///
    /// For writes that come from many tasks at a high rate (session status changes, the
    /// inbound messages and webhook passes of every session, each already batched by its
    /// own writer): one transaction each would queue them one by one on the writer
    /// connection, a few round trips to SQLite's thread apiece, and cap the whole gateway
    /// at a few hundred commits a second however many cores it has. Each job runs in its
    /// own savepoint, so a job that fails is undone alone and gets its own error; the others
    /// still commit. The caller gets `Ok` only after the commit: durable, as with
    /// [`begin`](Self::begin). Never call it while holding a [`begin`](Self::begin)
    /// transaction.
    pub async fn write<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let value = job(conn).await?;
                Ok(Box::new(value) as Box<dyn std::any::Any + Send>)
            })
        });
        self.writes
            .send(Write { job, done })
            .map_err(|_| StoreError::Closed)?;
        let value = answer.await.map_err(|_| StoreError::Closed)??;
        Ok(*value
            .downcast::<T>()
            .expect("a write job's value has the type it was queued with"))
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// Merges the requests of many tasks into one [`Store::write`] job: what is submitted while a
/// job runs goes into the next one, so a writer handles a whole batch with a few set-wise
/// statements. A caller gets its own answer once the batch is committed; when the batch
/// fails, every caller in it gets the error.
pub struct Batcher<Req, Out> {
    queue: tokio::sync::mpsc::UnboundedSender<Submitted<Req, Out>>,
}

type Submitted<Req, Out> = (
    Req,
    tokio::sync::oneshot::Sender<std::result::Result<Out, std::sync::Arc<StoreError>>>,
);

/// Writes a batch of requests inside the shared transaction: one answer per request, in order.
pub type BatchWrite<Req, Out> =
    for<'c> fn(&'c mut SqliteConnection, Vec<Req>) -> BoxFuture<'c, Result<Vec<Out>>>;

impl<Req, Out> Clone for Batcher<Req, Out> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

/// At most this many requests share one [`Batcher`] job.
const BATCHER_BATCH: usize = 512;

impl<Req: Send + 'static, Out: Send + 'static> Batcher<Req, Out> {
    /// Starts the batching task; it ends when the last handle is dropped.
    pub fn start(store: Store, write: BatchWrite<Req, Out>) -> Self {
        let (queue, mut submitted) = tokio::sync::mpsc::unbounded_channel::<Submitted<Req, Out>>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCHER_BATCH);
            while submitted.recv_many(&mut batch, BATCHER_BATCH).await > 0 {
                let (requests, answers): (Vec<Req>, Vec<_>) = batch.drain(..).unzip();
                match store.write(move |conn| write(conn, requests)).await {
                    Ok(results) => {
                        for (answer, result) in answers.into_iter().zip(results) {
                            // A caller that gave up meanwhile no longer waits for it.
                            let _ = answer.send(Ok(result));
                        }
                    }
                    Err(e) => {
                        let e = std::sync::Arc::new(e);
                        let mut unheard = false;
                        for answer in answers {
                            unheard |= answer.send(Err(e.clone())).is_err();
                        }
                        if unheard {
                            // Requests queued without waiting (see `enqueue`) have nobody
                            // else to tell.
                            tracing::warn!(error = %e, "a batched write failed");
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Queues a request without waiting for it: it is written with the next batch, and a
    /// failure is only logged. For writes whose loss is harmless; [`submit`](Self::submit)
    /// after it returns once it is committed (requests are written in the order queued).
    pub fn enqueue(&self, request: Req) -> Result<()> {
        let (answer, _) = tokio::sync::oneshot::channel();
        self.queue
            .send((request, answer))
            .map_err(|_| StoreError::Closed)
    }

    /// Submits a request and waits for its answer, after the commit.
    pub async fn submit(&self, request: Req) -> Result<Out> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.queue
            .send((request, answer))
            .map_err(|_| StoreError::Closed)?;
        match answered.await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(StoreError::Batch(e)),
            Err(_) => Err(StoreError::Closed),
        }
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

/// The group-commit writer behind [`Store::write`].
async fn group_commit(writer: SqlitePool, mut queue: tokio::sync::mpsc::UnboundedReceiver<Write>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while queue.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let (jobs, dones): (Vec<Job>, Vec<_>) = batch.drain(..).map(|w| (w.job, w.done)).unzip();
        match run_batch(&writer, jobs).await {
            Ok(results) => {
                for (done, result) in dones.into_iter().zip(results) {
                    let _ = done.send(result);
                }
            }
            Err(e) => {
                let e = std::sync::Arc::new(e);
                for done in dones {
                    let _ = done.send(Err(StoreError::Batch(e.clone())));
                }
            }
        }
    }
}

/// Runs the jobs in one transaction, each in a savepoint. The outer error is the
/// transaction's own (begin or commit failed: nothing was written).
///
/// Between two jobs, releasing one savepoint and opening the next go to SQLite's thread as
/// one round trip; the last savepoint is released by the commit.
async fn run_batch(
    writer: &SqlitePool,
    jobs: Vec<Job>,
) -> Result<Vec<Result<Box<dyn std::any::Any + Send>>>> {
    let mut tx = begin_immediate(writer).await?;
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        let open = if results.is_empty() {
            "SAVEPOINT job"
        } else {
            "RELEASE job; SAVEPOINT job"
        };
        sqlx::raw_sql(open).execute(&mut *tx).await?;
        let result = job(&mut tx).await;
        if result.is_err() {
            sqlx::query("ROLLBACK TO job").execute(&mut *tx).await?;
        }
        results.push(result);
    }
    tx.commit().await?;
    Ok(results)
}

/// `BEGIN IMMEDIATE` takes SQLite's write lock up front, so a write made outside the writer
/// connection queues on the busy timeout instead of deadlocking on a read-to-write upgrade.
async fn begin_immediate(writer: &SqlitePool) -> Result<Tx> {
    Ok(writer.begin_with("BEGIN IMMEDIATE").await?)
}

/// Current unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs queued together share a transaction, but a failing one is undone alone: the
    /// others commit and return their values.
    #[tokio::test]
    async fn group_commit_isolates_a_failing_job() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("wamux.db")).await.unwrap();
        let mut jobs = tokio::task::JoinSet::new();
        for i in 0..200i64 {
            let store = store.clone();
            jobs.spawn(async move {
                let r = store
                    .write(move |conn| {
                        Box::pin(async move {
                            sqlx::query(
                                "INSERT INTO sessions (id, status, created_at, updated_at)
                                 VALUES (?, 'starting', 0, 0)",
                            )
                            .bind(format!("s{i}"))
                            .execute(&mut *conn)
                            .await?;
                            if i % 10 == 7 {
                                // Fails after its first write: that write must be undone.
                                sqlx::query("INSERT INTO no_such_table VALUES (1)")
                                    .execute(&mut *conn)
                                    .await?;
                            }
                            Ok(i * 2)
                        })
                    })
                    .await;
                (i, r)
            });
        }
        while let Some(r) = jobs.join_next().await {
            let (i, r) = r.unwrap();
            if i % 10 == 7 {
                assert!(r.is_err(), "job {i} should fail");
            } else {
                assert_eq!(r.unwrap(), i * 2);
            }
        }
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM sessions")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(ids.len(), 180);
        assert!(!ids.iter().any(|id| id.ends_with('7')), "{ids:?}");
    }
}
