//! `wamux db copy`: moves a whole installation between SQLite and PostgreSQL, our tables and
//! every device's keys, so a user who outgrows one machine keeps every linked session
//! without a new QR code.
//!
//! An installation on SQLite is two files, `wamux.db` (ours) and `whatsapp.db`
//! (whatsapp-rust's device store); on PostgreSQL it is one database, the device tables
//! prefixed `wa_`. Both schemas have the same tables and columns, so rows are copied column
//! by column; the PostgreSQL column types say how each value is read and written. The
//! target must be empty. The copy is one transaction on the PostgreSQL side, so a failed
//! copy leaves nothing behind there; copy from a stopped server (the source is read as it
//! is, not frozen).

use std::path::{Path, PathBuf};

use sqlx::{Connection as _, PgConnection, Row as _, SqliteConnection};

use super::{Database, Result, Store, StoreError, postgres::device::DEVICE_TABLES};

/// Our tables, parents first; every one is copied.
const OUR_TABLES: &[&str] = &[
    "sessions",
    "messages",
    "events",
    "webhooks",
    "webhook_global",
    "webhook_cursors",
    "webhook_deliveries",
    "webhook_instance",
    "media_jobs",
    "pending_inbound",
    "idempotency_keys",
    "api_keys",
    "audit_log",
    "send_queue",
    "message_secrets",
    "call_settings",
    "chat_state",
    "session_settings",
    "message_receipts",
];

/// Identity and serial columns whose counters must follow the copied ids.
const COUNTERS: &[(&str, &str)] = &[
    ("sessions", "device_id"),
    ("messages", "seq"),
    ("events", "id"),
    ("webhook_deliveries", "id"),
    ("media_jobs", "id"),
    ("audit_log", "id"),
    ("send_queue", "seq"),
    ("wa_device", "id"),
];

/// One end of a copy.
#[derive(Debug, Clone)]
pub enum Place {
    /// `wamux.db` and, beside it, the device store `whatsapp.db`.
    Sqlite {
        ours: PathBuf,
        devices: PathBuf,
    },
    Postgres(Database),
}

impl Place {
    /// `postgres://...`, `sqlite://<file or data dir>`, or a path (a data directory or
    /// its `wamux.db`).
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let path = match Database::parse(s) {
            Ok(db @ Database::Postgres(_)) => return Ok(Place::Postgres(db)),
            Ok(Database::Sqlite(path)) => path,
            Err(_) if !s.contains("://") => PathBuf::from(s),
            Err(e) => return Err(e),
        };
        // A file: an existing one, or a new one named `*.db`; anything else is a data
        // directory (a new one is created).
        let file =
            path.is_file() || (!path.exists() && path.extension().is_some_and(|e| e == "db"));
        let ours = if file { path } else { path.join("wamux.db") };
        let devices = ours.with_file_name("whatsapp.db");
        Ok(Place::Sqlite { ours, devices })
    }

    /// What to show a user.
    pub fn display(&self) -> String {
        match self {
            Place::Sqlite { ours, devices } => {
                format!("{} and {}", ours.display(), devices.display())
            }
            Place::Postgres(db) => db.display(),
        }
    }
}

/// What a copy moved.
#[derive(Debug, Default)]
pub struct Report {
    /// `(table, rows)`, in the order copied.
    pub tables: Vec<(String, u64)>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows: u64 = self.tables.iter().map(|(_, n)| n).sum();
        write!(f, "{} rows in {} tables:", rows, self.tables.len())?;
        for (t, n) in &self.tables {
            write!(f, " {t} {n};")?;
        }
        Ok(())
    }
}

/// A value on its way between the two engines, typed by the PostgreSQL column.
enum Value {
    Int(Option<i64>),
    Int4(Option<i32>),
    Bool(Option<bool>),
    Real(Option<f64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

/// How a PostgreSQL column's values are carried.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Int,
    Int4,
    Bool,
    Real,
    Text,
    Bytes,
}

impl Kind {
    fn of(data_type: &str) -> Result<Self> {
        Ok(match data_type {
            "bigint" => Kind::Int,
            "integer" | "smallint" => Kind::Int4,
            "boolean" => Kind::Bool,
            "double precision" | "real" => Kind::Real,
            "text" | "character varying" => Kind::Text,
            "bytea" => Kind::Bytes,
            other => {
                return Err(StoreError::Invalid(format!(
                    "cannot copy a column of type {other}"
                )));
            }
        })
    }
}

/// Copies the installation at `from` into the empty one at `to`. One end must be
/// PostgreSQL, the other SQLite.
pub async fn copy(from: &Place, to: &Place) -> Result<Report> {
    match (from, to) {
        (Place::Sqlite { ours, devices }, Place::Postgres(db)) => {
            if !ours.exists() {
                return Err(StoreError::Invalid(format!(
                    "{} does not exist",
                    ours.display()
                )));
            }
            // Brings the target's schema up to date, and the source's (an older version's
            // file gets our latest migrations first).
            Store::open(ours).await?.close().await;
            let target = Store::connect(db).await?;
            target.close().await;
            let mut pg = pg_connect(db).await?;
            let mut tx = pg.begin().await?;
            refuse_if_not_empty_pg(&mut tx).await?;
            let mut report = Report::default();
            let mut src = sqlite_open(ours).await?;
            // The target's own tag goes: deliveries keep the ids receivers have seen.
            sqlx::query("DELETE FROM webhook_instance")
                .execute(&mut *tx)
                .await?;
            for table in OUR_TABLES {
                let n = sqlite_to_pg(&mut src, table, &mut tx, table).await?;
                report.tables.push(((*table).to_owned(), n));
            }
            if devices.exists() {
                let mut src = sqlite_open(devices).await?;
                for table in DEVICE_TABLES {
                    let pg_table = super::postgres::device::pg_table(table);
                    let n = sqlite_to_pg(&mut src, table, &mut tx, &pg_table).await?;
                    report.tables.push((pg_table, n));
                }
            }
            for (table, column) in COUNTERS {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                                   GREATEST((SELECT MAX({column}) FROM {table}), 1))"
                )))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(report)
        }
        (Place::Postgres(db), Place::Sqlite { ours, devices }) => {
            if ours.exists() || devices.exists() {
                return Err(StoreError::Invalid(format!(
                    "{} already holds an installation; copy into an empty place",
                    to.display()
                )));
            }
            let source = Store::connect(db).await?;
            source.close().await;
            Store::open(ours).await?.close().await;
            super::sqlite::device::prepare(devices).await?;
            let mut pg = pg_connect(db).await?;
            // One snapshot of the source for the whole copy.
            let mut src = pg.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *src)
                .await?;
            let mut report = Report::default();
            let mut dst = sqlite_open(ours).await?;
            let mut tx = dst.begin().await?;
            sqlx::query("DELETE FROM webhook_instance")
                .execute(&mut *tx)
                .await?;
            for table in OUR_TABLES {
                let n = pg_to_sqlite(&mut src, table, &mut tx, table).await?;
                report.tables.push(((*table).to_owned(), n));
            }
            tx.commit().await?;
            let mut dst = sqlite_open(devices).await?;
            let mut tx = dst.begin().await?;
            for table in DEVICE_TABLES {
                let pg_table = super::postgres::device::pg_table(table);
                let n = pg_to_sqlite(&mut src, &pg_table, &mut tx, table).await?;
                report.tables.push(((*table).to_owned(), n));
            }
            tx.commit().await?;
            src.commit().await?;
            Ok(report)
        }
        _ => Err(StoreError::Invalid(
            "copy from SQLite to PostgreSQL or from PostgreSQL to SQLite".into(),
        )),
    }
}

async fn pg_connect(db: &Database) -> Result<PgConnection> {
    match db {
        Database::Postgres(url) => Ok(PgConnection::connect(url.expose()).await?),
        Database::Sqlite(_) => Err(StoreError::Invalid("not a PostgreSQL database".into())),
    }
}

async fn sqlite_open(path: &Path) -> Result<SqliteConnection> {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::from_secs(30));
    Ok(SqliteConnection::connect_with(&opts).await?)
}

/// A non-empty target would mix two installations (and their device numbers).
async fn refuse_if_not_empty_pg(conn: &mut PgConnection) -> Result<()> {
    for table in ["sessions", "events", "messages", "webhooks", "wa_device"] {
        let any: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {table})"
        )))
        .fetch_one(&mut *conn)
        .await?;
        if any {
            return Err(StoreError::Invalid(format!(
                "the target database is not empty ({table} has rows); copy into an empty database"
            )));
        }
    }
    Ok(())
}

/// The columns of a PostgreSQL table (in the current schema) and how each is carried.
async fn pg_columns(conn: &mut PgConnection, table: &str) -> Result<Vec<(String, Kind)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Err(StoreError::Invalid(format!("table {table} is missing")));
    }
    rows.into_iter()
        .map(|(name, ty)| Ok((name, Kind::of(&ty)?)))
        .collect()
}

/// The column names of a SQLite table.
async fn sqlite_columns(conn: &mut SqliteConnection, table: &str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT name FROM pragma_table_info('{table}')"
    )))
    .fetch_all(&mut *conn)
    .await?)
}

/// The columns both sides have, typed by the PostgreSQL side. A column only the source has
/// would be lost: that is an error, not a silent drop.
fn shared(pg: Vec<(String, Kind)>, sqlite: &[String], table: &str) -> Result<Vec<(String, Kind)>> {
    if let Some(extra) = sqlite.iter().find(|c| !pg.iter().any(|(p, _)| p == *c)) {
        return Err(StoreError::Invalid(format!(
            "column {table}.{extra} has no counterpart on PostgreSQL"
        )));
    }
    Ok(pg.into_iter().filter(|(c, _)| sqlite.contains(c)).collect())
}

fn column_list(cols: &[(String, Kind)]) -> String {
    cols.iter()
        .map(|(c, _)| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows copied per INSERT.
const CHUNK: usize = 500;

// The same reading and binding on either engine (sqlx's decode and encode traits are per
// engine, so a macro rather than a generic function).

/// Every row of `rows` as [`Value`]s, column by column as `cols` types them.
macro_rules! read_rows {
    ($rows:expr, $cols:expr) => {{
        let mut values = Vec::with_capacity($rows.len());
        for r in &$rows {
            let mut row = Vec::with_capacity($cols.len());
            for (i, (_, kind)) in $cols.iter().enumerate() {
                row.push(match kind {
                    Kind::Int => Value::Int(r.try_get(i)?),
                    Kind::Int4 => Value::Int4(r.try_get(i)?),
                    Kind::Bool => Value::Bool(r.try_get(i)?),
                    Kind::Real => Value::Real(r.try_get(i)?),
                    Kind::Text => Value::Text(r.try_get(i)?),
                    Kind::Bytes => Value::Bytes(r.try_get(i)?),
                });
            }
            values.push(row);
        }
        values
    }};
}

/// Binds one row's values to an INSERT's `VALUES` tuple.
macro_rules! bind_row {
    ($b:expr, $row:expr) => {
        for v in $row {
            match v {
                Value::Int(v) => $b.push_bind(*v),
                Value::Int4(v) => $b.push_bind(*v),
                Value::Bool(v) => $b.push_bind(*v),
                Value::Real(v) => $b.push_bind(*v),
                Value::Text(v) => $b.push_bind(v.clone()),
                Value::Bytes(v) => $b.push_bind(v.clone()),
            };
        }
    };
}

async fn sqlite_to_pg(
    src: &mut SqliteConnection,
    table: &str,
    dst: &mut PgConnection,
    pg_table: &str,
) -> Result<u64> {
    let sqlite_cols = sqlite_columns(src, table).await?;
    if sqlite_cols.is_empty() {
        // A device store from before this table existed.
        return Ok(0);
    }
    let cols = shared(pg_columns(dst, pg_table).await?, &sqlite_cols, table)?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM \"{table}\"",
        column_list(&cols)
    )))
    .fetch_all(&mut *src)
    .await?;
    let values = read_rows!(rows, cols);
    for chunk in values.chunks(CHUNK) {
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
            "INSERT INTO \"{pg_table}\" ({}) ",
            column_list(&cols)
        ));
        q.push_values(chunk, |mut b, row| bind_row!(b, row));
        q.build().execute(&mut *dst).await?;
    }
    Ok(values.len() as u64)
}

async fn pg_to_sqlite(
    src: &mut PgConnection,
    pg_table: &str,
    dst: &mut SqliteConnection,
    table: &str,
) -> Result<u64> {
    let sqlite_cols = sqlite_columns(dst, table).await?;
    let cols = shared(pg_columns(src, pg_table).await?, &sqlite_cols, table)?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM \"{pg_table}\"",
        column_list(&cols)
    )))
    .fetch_all(&mut *src)
    .await?;
    let values = read_rows!(rows, cols);
    // SQLite allows 32,766 parameters per statement.
    let per = (32_000 / cols.len().max(1)).clamp(1, CHUNK);
    for chunk in values.chunks(per) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "INSERT INTO \"{table}\" ({}) ",
            column_list(&cols)
        ));
        q.push_values(chunk, |mut b, row| bind_row!(b, row));
        q.build().execute(&mut *dst).await?;
    }
    Ok(values.len() as u64)
}
