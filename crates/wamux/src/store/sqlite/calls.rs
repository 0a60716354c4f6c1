use sqlx::SqliteConnection;

use super::Db;
use crate::store::Result;

pub async fn get(db: &Db, session_id: &str) -> Result<Option<(bool, Option<String>)>> {
    Ok(
        sqlx::query_as("SELECT reject, message FROM call_settings WHERE session_id = ?1")
            .bind(session_id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

pub async fn set(
    conn: &mut SqliteConnection,
    session_id: &str,
    reject: bool,
    message: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO call_settings (session_id, reject, message) VALUES (?1, ?2, ?3)
         ON CONFLICT (session_id) DO UPDATE SET reject = excluded.reject, message = excluded.message",
    )
    .bind(session_id)
    .bind(reject)
    .bind(message)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
