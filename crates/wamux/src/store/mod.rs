//! Our database: sessions, messages, the event log, webhooks, media jobs and the
//! pending-inbound buffer, on SQLite (`<data dir>/wamux.db`, the default) or PostgreSQL
//! (`WAMUX_DATABASE_URL=postgres://...`).
//!
//! This is the only module that writes SQL. The rest of the code speaks the functions of the
//! submodules here, in our own types; each of those picks the backend's SQL from
//! [`sqlite`] or [`postgres`], which hold one module per table group and their own
//! migrations. Functions that change state also append the matching row to `events` in the
//! same transaction and hand back the [`Event`](crate::event::Event)s, which the caller
//! publishes on the bus after the commit. Errors are [`StoreError`]; callers at the HTTP edge
//! map them to 500.
//!
//! Every write goes through one connection, on both backends: transactions ([`Store::begin`])
//! and the group commit ([`Store::write`]) queue for it. On SQLite that avoids polling the
//! file lock; on both it makes event ids commit in the order they are taken, which the
//! webhook outbox's per-session cursor relies on (an id committed after a larger one was read
//! would be skipped).

pub mod access;
pub mod calls;
pub mod chats;
pub mod copy;
pub mod events;
pub mod idempotency;
pub mod media;
pub mod messages;
pub mod pending;
pub(crate) mod postgres;
pub mod queue;
pub mod sessions;
pub mod settings;
pub(crate) mod sqlite;
pub mod webhooks;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;

use crate::config::Secret;

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
    Batch(Arc<StoreError>),
    #[error("the database is closed")]
    Closed,
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// A row the caller expected is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::Db(sqlx::Error::RowNotFound))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where the data lives, from `WAMUX_DATABASE_URL`.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file (the default: `wamux.db` in the data directory).
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://user:password@host:port/database?options`), which may
    /// carry a password: hidden from `Debug`.
    Postgres(Secret),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Database::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&postgres::redact(url.expose()))
                .finish(),
        }
    }
}

impl Database {
    /// Reads a `WAMUX_DATABASE_URL`: `postgres://`/`postgresql://` or `sqlite://<path>`.
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            postgres::check_url(url)?;
            Ok(Database::Postgres(Secret::new(url)))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "sqlite:// needs a file path, e.g. sqlite:///var/lib/wamux/wamux.db".into(),
                );
            }
            Ok(Database::Sqlite(PathBuf::from(path)))
        } else {
            Err("expected a postgres://... or sqlite://... URL".into())
        }
    }

    /// The database of an installation: `url` when given, else `wamux.db` in `data_dir`.
    pub fn for_data_dir(url: Option<&Database>, data_dir: &Path) -> Self {
        url.cloned()
            .unwrap_or_else(|| Database::Sqlite(data_dir.join("wamux.db")))
    }

    /// What to show a user: the path, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres(url) => postgres::redact(url.expose()),
        }
    }
}

/// How many connections one node opens to PostgreSQL at most
/// (`WAMUX_DATABASE_MAX_CONNECTIONS`): one is the writer, the rest are split between reads
/// and the devices' keys. SQLite has no pool to size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSize(u32);

impl Default for PoolSize {
    fn default() -> Self {
        Self(20)
    }
}

impl PoolSize {
    pub fn new(max_connections: u32) -> Result<Self, String> {
        if (3..=1000).contains(&max_connections) {
            Ok(Self(max_connections))
        } else {
            Err(format!(
                "{max_connections} is not a number from 3 to 1000 (one writer, at least one for reads and one for the device keys)"
            ))
        }
    }

    pub fn max_connections(self) -> u32 {
        self.0
    }

    /// Connections for reads (API, webhook workers' lookups).
    fn reads(self) -> u32 {
        (self.0 - 1) / 2
    }

    /// Connections shared by every device's store.
    fn devices(self) -> u32 {
        self.0 - 1 - self.reads()
    }
}

/// One device's keys, behind whatsapp-rust's storage traits.
pub struct DeviceKeys {
    pub backend: Arc<dyn wacore::store::traits::Backend>,
    /// Older versions kept pending inbound messages in the SQLite device store's own
    /// table; such rows are still looked for there.
    pub legacy_pending: bool,
}

/// Handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    /// The queue of the group-commit writer (see [`Store::write`]).
    writes: tokio::sync::mpsc::UnboundedSender<Write>,
}

#[derive(Clone, Debug)]
enum Db {
    Sqlite(sqlite::Db),
    Postgres(postgres::Db),
}

/// A connection inside a write transaction, handed to the functions of the submodules that
/// take part in a caller's transaction (see [`Tx::conn`] and [`Store::write`]).
pub enum Conn<'a> {
    Sqlite(&'a mut sqlx::SqliteConnection),
    Postgres(&'a mut sqlx::PgConnection),
}

impl Conn<'_> {
    /// The same connection, for one more call.
    pub fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
        }
    }
}

/// A write transaction; dropped without [`commit`](Self::commit), it rolls back.
pub struct Tx(TxInner);

enum TxInner {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    pub fn conn(&mut self) -> Conn<'_> {
        match &mut self.0 {
            TxInner::Sqlite(tx) => Conn::Sqlite(tx),
            TxInner::Postgres(tx) => Conn::Postgres(tx),
        }
    }

    pub async fn commit(self) -> Result<()> {
        match self.0 {
            TxInner::Sqlite(tx) => tx.commit().await?,
            TxInner::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    /// Runs statements that take no parameters (savepoints).
    async fn execute(&mut self, sql: &'static str) -> Result<()> {
        match &mut self.0 {
            TxInner::Sqlite(tx) => {
                sqlx::raw_sql(sql).execute(&mut **tx).await?;
            }
            TxInner::Postgres(tx) => {
                sqlx::raw_sql(sql).execute(&mut **tx).await?;
            }
        }
        Ok(())
    }
}

/// A unit of work for [`Store::write`]: runs inside the shared transaction, inside its own
/// savepoint, and yields its value (handed over only after the commit).
type Job = Box<
    dyn for<'c> FnOnce(Conn<'c>) -> BoxFuture<'c, Result<Box<dyn std::any::Any + Send>>> + Send,
>;

struct Write {
    job: Job,
    done: tokio::sync::oneshot::Sender<Result<Box<dyn std::any::Any + Send>>>,
}

/// At most this many [`Store::write`] jobs share one transaction.
const WRITE_BATCH: usize = 256;

impl Store {
    /// Opens (creating if needed) the database and runs pending migrations, with the
    /// default pool size.
    pub async fn connect(database: &Database) -> Result<Self> {
        Self::connect_with(database, PoolSize::default()).await
    }

    /// [`connect`](Self::connect) with at most `pool` connections to PostgreSQL.
    pub async fn connect_with(database: &Database, pool: PoolSize) -> Result<Self> {
        let (writes, queue) = tokio::sync::mpsc::unbounded_channel();
        // The group commit runs on a thread of its own. Each of its statements is a round
        // trip (to SQLite's thread, or to PostgreSQL), and on the shared runtime every one of
        // those waited for a worker to come back to this task behind the gateway's other
        // tasks: on SQLite a commit took 6-8 ms of waiting for a fraction of that in the
        // database, and on PostgreSQL inbound messages, three commits each, lagged at a
        // quarter of SQLite's rate.
        let writer = WriterThread::start()?;
        let db = match database {
            Database::Sqlite(path) => Db::Sqlite(sqlite::Db::open(path).await?),
            Database::Postgres(url) => {
                // A PostgreSQL connection's socket is driven by the runtime that opened it.
                let owned = url.expose().to_owned();
                let conn = writer
                    .runtime
                    .spawn(async move { postgres::open_writer(&owned).await })
                    .await
                    .map_err(|e| {
                        StoreError::Invalid(format!("the database writer stopped: {e}"))
                    })??;
                Db::Postgres(
                    postgres::Db::open(url.expose(), pool.reads(), pool.devices(), conn).await?,
                )
            }
        };
        let store = Self { db, writes };
        writer.run(group_commit(store.db.clone(), queue));
        Ok(store)
    }

    /// Opens the SQLite database at `path` (see [`connect`](Self::connect)).
    pub async fn open(path: &Path) -> Result<Self> {
        Self::connect(&Database::Sqlite(path.to_owned())).await
    }

    /// Which engine this is, for logs and `/health`.
    pub fn engine(&self) -> &'static str {
        match &self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Starts a write transaction on the writer connection (callers wait their turn for it).
    /// Never call it while holding its transaction: it would wait for itself.
    pub async fn begin(&self) -> Result<Tx> {
        self.db.begin().await
    }

    /// Runs `job` in a write transaction shared with the other jobs queued meanwhile
    /// (group commit), and returns its value once that transaction is committed.
    ///
    /// For writes that come from many tasks at a high rate (session status changes, the
    /// inbound messages and webhook passes of every session, each already batched by its
    /// own writer): one transaction each would queue them one by one on the writer
    /// connection, a few round trips apiece, and cap the whole gateway at a few hundred
    /// commits a second however many cores it has. Each job runs in its own savepoint, so a
    /// job that fails is undone alone and gets its own error; the others still commit. The
    /// caller gets `Ok` only after the commit: durable, as with [`begin`](Self::begin).
    /// Never call it while holding a [`begin`](Self::begin) transaction.
    pub async fn write<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(Conn<'c>) -> BoxFuture<'c, Result<T>> + Send + 'static,
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

    /// Answers when the database does (for the readiness probe).
    pub async fn ping(&self) -> Result<()> {
        match &self.db {
            Db::Sqlite(db) => db.ping().await,
            Db::Postgres(db) => db.ping().await,
        }
    }

    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite(db) => db.close().await,
            Db::Postgres(db) => db.close().await,
        }
    }

    /// Brings the device store's schema up to date before any device opens it: on SQLite
    /// whatsapp-rust's schema in the file `device_db`; on PostgreSQL the device tables are
    /// migrated with ours, so there is nothing to do.
    pub async fn prepare_devices(&self, device_db: &Path) -> Result<()> {
        match &self.db {
            Db::Postgres(_) => Ok(()),
            Db::Sqlite(_) => sqlite::device::prepare(device_db).await,
        }
    }

    /// One device's keys: in this database (PostgreSQL, one pool shared by every device),
    /// else in the SQLite file `device_db`.
    pub async fn open_device(&self, device_db: &Path, device_id: i32) -> Result<DeviceKeys> {
        Ok(match &self.db {
            Db::Postgres(db) => DeviceKeys {
                backend: Arc::new(postgres::device::PgDeviceStore::new(
                    db.devices().clone(),
                    device_id,
                )),
                legacy_pending: false,
            },
            Db::Sqlite(_) => DeviceKeys {
                backend: sqlite::device::open(device_db, device_id).await?,
                legacy_pending: true,
            },
        })
    }

    /// Deletes everything the device store keeps for a device: in this database
    /// (PostgreSQL), else in the SQLite file `device_db` (nothing to do when it does not
    /// exist).
    pub async fn delete_device(&self, device_db: &Path, device_id: i64) -> Result<()> {
        match &self.db {
            Db::Postgres(db) => {
                let id = i32::try_from(device_id).map_err(|_| {
                    StoreError::Invalid(format!("device number {device_id} out of range"))
                })?;
                postgres::device::delete_device(db.devices(), id).await?;
                Ok(())
            }
            Db::Sqlite(_) if !device_db.exists() => Ok(()),
            Db::Sqlite(_) => sqlite::wipe_device_rows(device_db, device_id).await,
        }
    }

    fn backend(&self) -> Backend<'_> {
        match &self.db {
            Db::Sqlite(db) => Backend::Sqlite(db),
            Db::Postgres(db) => Backend::Postgres(db),
        }
    }
}

/// The thread the group commit runs on, with a runtime of its own. It ends when the task
/// given to [`run`](Self::run) does (the group commit ends when the last handle on the
/// store is dropped), or at once if none is given.
struct WriterThread {
    runtime: tokio::runtime::Handle,
    task: tokio::sync::oneshot::Sender<BoxFuture<'static, ()>>,
}

impl WriterThread {
    fn start() -> Result<Self> {
        let (handle, runtime) = std::sync::mpsc::channel();
        let (task, next) = tokio::sync::oneshot::channel::<BoxFuture<'static, ()>>();
        std::thread::Builder::new()
            .name("wamux-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        let _ = handle.send(Ok(rt.handle().clone()));
                        rt.block_on(async move {
                            if let Ok(task) = next.await {
                                task.await;
                            }
                        });
                    }
                    Err(e) => {
                        let _ = handle.send(Err(e));
                    }
                }
            })
            .map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        let runtime = runtime
            .recv()
            .map_err(|_| StoreError::Invalid("the database writer did not start".into()))?
            .map_err(|e| StoreError::Db(sqlx::Error::Io(e)))?;
        Ok(Self { runtime, task })
    }

    fn run(self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let _ = self.task.send(Box::pin(task));
    }
}

/// The backend a read goes to.
enum Backend<'a> {
    Sqlite(&'a sqlite::Db),
    Postgres(&'a postgres::Db),
}

impl Db {
    async fn begin(&self) -> Result<Tx> {
        Ok(Tx(match self {
            Db::Sqlite(db) => TxInner::Sqlite(db.begin().await?),
            Db::Postgres(db) => TxInner::Postgres(db.begin().await?),
        }))
    }

    /// [`begin`](Self::begin), with the savepoint of the first job open.
    async fn begin_with_savepoint(&self) -> Result<Tx> {
        Ok(match self {
            Db::Sqlite(_) => {
                let mut tx = self.begin().await?;
                tx.execute("SAVEPOINT job").await?;
                tx
            }
            Db::Postgres(db) => Tx(TxInner::Postgres(db.begin_with_savepoint().await?)),
        })
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
    tokio::sync::oneshot::Sender<std::result::Result<Out, Arc<StoreError>>>,
);

/// Writes a batch of requests inside the shared transaction: one answer per request, in order.
pub type BatchWrite<Req, Out> = for<'c> fn(Conn<'c>, Vec<Req>) -> BoxFuture<'c, Result<Vec<Out>>>;

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
                        let e = Arc::new(e);
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

/// The group-commit writer behind [`Store::write`].
async fn group_commit(db: Db, mut queue: tokio::sync::mpsc::UnboundedReceiver<Write>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while queue.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        let (jobs, dones): (Vec<Job>, Vec<_>) = batch.drain(..).map(|w| (w.job, w.done)).unzip();
        match run_batch(&db, jobs).await {
            Ok(results) => {
                for (done, result) in dones.into_iter().zip(results) {
                    let _ = done.send(result);
                }
            }
            Err(e) => {
                let e = Arc::new(e);
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
/// Opening the transaction and the first savepoint go to the database as one round trip,
/// as do releasing one savepoint and opening the next between two jobs; the last savepoint
/// is released by the commit. A job alone in its transaction needs no savepoint: when it
/// fails, the whole transaction is undone.
async fn run_batch(db: &Db, jobs: Vec<Job>) -> Result<Vec<Result<Box<dyn std::any::Any + Send>>>> {
    if jobs.len() == 1 {
        let job = jobs.into_iter().next().expect("one job");
        let mut tx = db.begin().await?;
        let result = job(tx.conn()).await;
        if result.is_ok() {
            tx.commit().await?;
        }
        // Dropped without a commit, the transaction rolls back.
        return Ok(vec![result]);
    }
    let mut tx = db.begin_with_savepoint().await?;
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        if !results.is_empty() {
            tx.execute("RELEASE SAVEPOINT job; SAVEPOINT job").await?;
        }
        let result = job(tx.conn()).await;
        if result.is_err() {
            tx.execute("ROLLBACK TO SAVEPOINT job").await?;
        }
        results.push(result);
    }
    tx.commit().await?;
    Ok(results)
}

/// Current unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Calls the backend's version of a function: `dispatch!(store, module::function(args))` for
/// reads on the pool, `dispatch!(conn conn, module::function(args))` inside a transaction.
macro_rules! dispatch {
    (conn $conn:expr, $module:ident :: $f:ident ( $($arg:expr),* $(,)? )) => {
        match $conn {
            $crate::store::Conn::Sqlite(c) => $crate::store::sqlite::$module::$f(c, $($arg),*).await,
            $crate::store::Conn::Postgres(c) => $crate::store::postgres::$module::$f(c, $($arg),*).await,
        }
    };
    ($store:expr, $module:ident :: $f:ident ( $($arg:expr),* $(,)? )) => {
        match $store.backend() {
            $crate::store::Backend::Sqlite(db) => $crate::store::sqlite::$module::$f(db, $($arg),*).await,
            $crate::store::Backend::Postgres(db) => $crate::store::postgres::$module::$f(db, $($arg),*).await,
        }
    };
}
pub(crate) use dispatch;

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs queued together share a transaction, but a failing one is undone alone: the
    /// others commit and return their values.
    #[tokio::test]
    async fn group_commit_isolates_a_failing_job() {
        for db in testing::databases().await {
            let store = db.store().await;
            let mut jobs = tokio::task::JoinSet::new();
            for i in 0..200i64 {
                let store = store.clone();
                jobs.spawn(async move {
                    let r = store
                        .write(move |mut conn| {
                            Box::pin(async move {
                                events::append(
                                    &mut conn,
                                    crate::event::EventKind::SessionStatus,
                                    &format!("s{i}"),
                                    None,
                                    serde_json::json!({}),
                                )
                                .await?;
                                if i % 10 == 7 {
                                    // Fails after its first write: that write must be undone.
                                    testing::fail(&mut conn).await?;
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
            let ids: Vec<String> = events::list_after(&store, None, 0, 1000)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.session_id)
                .collect();
            assert_eq!(ids.len(), 180, "{}", store.engine());
            assert!(!ids.iter().any(|id| id.ends_with('7')), "{ids:?}");
            db.drop().await;
        }
    }

    /// A job alone in its transaction (no savepoint) that fails is undone whole and gets its
    /// own error; the writer goes on with the next one.
    #[tokio::test]
    async fn a_lone_failing_job_is_undone() {
        for db in testing::databases().await {
            let store = db.store().await;
            let append = |session: &'static str, fail: bool| {
                let store = store.clone();
                async move {
                    store
                        .write(move |mut conn| {
                            Box::pin(async move {
                                events::append(
                                    &mut conn,
                                    crate::event::EventKind::SessionStatus,
                                    session,
                                    None,
                                    serde_json::json!({}),
                                )
                                .await?;
                                if fail {
                                    testing::fail(&mut conn).await?;
                                }
                                Ok(())
                            })
                        })
                        .await
                }
            };
            assert!(append("undone", true).await.is_err(), "{}", store.engine());
            append("kept", false).await.unwrap();
            let ids: Vec<String> = events::list_after(&store, None, 0, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.session_id)
                .collect();
            assert_eq!(ids, ["kept"], "{}", store.engine());
            db.drop().await;
        }
    }
}

/// The seam holds: the rest of the gateway names no database crate and writes no SQL.
#[cfg(test)]
mod seam {
    use std::path::{Path, PathBuf};

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Whether a line of code names a database crate or starts an SQL statement.
    fn touches_the_database(line: &str) -> bool {
        const CRATES: [&str; 4] = [
            "sqlx",
            "rusqlite",
            "whatsapp_rust_sqlite_storage",
            "SqliteStore",
        ];
        const STATEMENTS: [&str; 7] = [
            "SELECT ",
            "INSERT INTO",
            "UPDATE ",
            "DELETE FROM",
            "CREATE TABLE",
            "PRAGMA ",
            "BEGIN IMMEDIATE",
        ];
        let line = line.trim_start();
        !line.starts_with("//")
            && (CRATES.iter().any(|c| line.contains(c))
                || STATEMENTS.iter().any(|s| {
                    line.contains(&format!("\"{s}"))
                        || line.contains(&format!("\"{}", s.to_lowercase()))
                }))
    }

    #[test]
    fn the_check_sees_what_it_looks_for() {
        assert!(touches_the_database("let q = sqlx::query(\"x\");"));
        assert!(touches_the_database(
            "    conn.execute(\"DELETE FROM sessions\")"
        ));
        assert!(touches_the_database(
            "use whatsapp_rust_sqlite_storage::SqliteStore;"
        ));
        assert!(!touches_the_database("// SELECT the sessions"));
        assert!(!touches_the_database(
            "store.delete_device(&path, id).await"
        ));
    }

    #[test]
    fn no_sql_and_no_database_crate_outside_the_store() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let store = src.join("store");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let outside: Vec<_> = files.iter().filter(|f| !f.starts_with(&store)).collect();
        assert!(
            outside.len() > 20,
            "the walk found the sources: {outside:?}"
        );
        let mut found = Vec::new();
        for file in outside {
            let text = std::fs::read_to_string(file).unwrap();
            // A module's unit tests may set up whatsapp-rust's own store to compare with.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                if touches_the_database(line) {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(
            found.is_empty(),
            "outside src/store/:\n{}",
            found.join("\n")
        );
    }
}
