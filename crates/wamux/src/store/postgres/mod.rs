//! The PostgreSQL backend: a pool for reads and the device store, and one writer connection
//! (see the store module for why every write goes through one connection).

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

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Transaction};

use super::{Result, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone, Debug)]
pub struct Db {
    pub(super) pool: PgPool,
    writer: PgPool,
    devices: PgPool,
}

impl Db {
    /// Connects and runs pending migrations (under PostgreSQL's advisory lock, so nodes
    /// starting together migrate once). `reads` and `devices` size those pools; `writer`
    /// (from [`open_writer`]) is the one connection every write goes through.
    pub async fn open(url: &str, reads: u32, devices: u32, writer: PgPool) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        let read = pool(&opts, reads, 0).await?;
        MIGRATOR.run(&read).await?;
        Ok(Self {
            writer,
            devices: pool(&opts, devices, 0).await?,
            pool: read,
        })
    }

    pub async fn begin(&self) -> Result<Transaction<'static, sqlx::Postgres>> {
        Ok(self.writer.begin().await?)
    }

    /// A transaction whose first savepoint (`job`) is already open: one round trip for both.
    pub async fn begin_with_savepoint(&self) -> Result<Transaction<'static, sqlx::Postgres>> {
        Ok(self.writer.begin_with("BEGIN; SAVEPOINT job").await?)
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.devices.close().await;
        self.pool.close().await;
    }

    /// The pool every device's store shares.
    pub(crate) fn devices(&self) -> &PgPool {
        &self.devices
    }
}

/// The writer's pool of one connection. Its socket is driven by the runtime this runs on
/// (the store's writer thread, see the store module).
pub async fn open_writer(url: &str) -> Result<PgPool> {
    pool(&PgConnectOptions::from_str(url)?, 1, 1).await
}

async fn pool(opts: &PgConnectOptions, max: u32, min: u32) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(max)
        .min_connections(min)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(opts.clone())
        .await?)
}

/// Refuses a URL PostgreSQL's driver cannot read, at startup, with the driver's reason.
pub fn check_url(url: &str) -> std::result::Result<(), String> {
    PgConnectOptions::from_str(url)
        .map(drop)
        .map_err(|e| match StoreError::from(e) {
            StoreError::Db(e) => format!("not a valid PostgreSQL URL: {e}"),
            e => e.to_string(),
        })
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "postgres://***".into();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let host = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    // A password may also come as a query parameter.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://wamux:s3cret@db:5432/wamux?sslmode=require"),
            "postgres://wamux:***@db:5432/wamux?sslmode=require"
        );
        assert_eq!(
            redact("postgres://db/wamux?user=u&password=s3cret"),
            "postgres://db/wamux?user=u&password=***"
        );
        assert_eq!(redact("postgresql://localhost"), "postgresql://localhost");
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
    }
}
