//! Test databases: every store test runs on SQLite and on PostgreSQL.
//!
//! PostgreSQL is the server at `WAMUX_TEST_POSTGRES_URL` (default: the local one, user
//! `postgres`, database `test`); each test gets a schema of its own, dropped at the end.

use sqlx::Connection as _;

use super::{Conn, Database, Result, Store};

/// The server the PostgreSQL tests use.
pub fn postgres_url() -> String {
    std::env::var("WAMUX_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres { schema: String },
}

/// One database of each kind, empty.
pub async fn databases() -> Vec<TestDb> {
    vec![
        TestDb::Sqlite(tempfile::tempdir().expect("a temporary directory")),
        TestDb::postgres().await,
    ]
}

impl TestDb {
    pub async fn postgres() -> Self {
        let schema = format!("wamux_t_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(&postgres_url())
            .await
            .expect("the test PostgreSQL server answers (WAMUX_TEST_POSTGRES_URL)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await
            .expect("a test schema");
        TestDb::Postgres { schema }
    }

    pub fn database(&self) -> Database {
        match self {
            TestDb::Sqlite(dir) => Database::Sqlite(dir.path().join("wamux.db")),
            TestDb::Postgres { schema } => {
                let url = postgres_url();
                let sep = if url.contains('?') { '&' } else { '?' };
                Database::Postgres(crate::config::Secret::new(format!(
                    "{url}{sep}options=-c%20search_path%3D{schema}"
                )))
            }
        }
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.database())
            .await
            .expect("the test database opens")
    }

    pub async fn drop(self) {
        if let TestDb::Postgres { schema } = self {
            let mut conn = sqlx::PgConnection::connect(&postgres_url())
                .await
                .expect("the test PostgreSQL server answers");
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&mut conn)
                .await
                .expect("the test schema is dropped");
        }
    }
}

/// A statement that fails, inside a job.
pub async fn fail(conn: &mut Conn<'_>) -> Result<()> {
    match conn {
        Conn::Sqlite(c) => {
            sqlx::query("INSERT INTO no_such_table VALUES (1)")
                .execute(&mut **c)
                .await?;
        }
        Conn::Postgres(c) => {
            sqlx::query("INSERT INTO no_such_table VALUES (1)")
                .execute(&mut **c)
                .await?;
        }
    }
    Ok(())
}
