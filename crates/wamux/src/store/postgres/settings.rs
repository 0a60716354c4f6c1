use sqlx::PgConnection;

use super::Db;
use crate::store::Result;

pub async fn ignore(db: &Db, session_id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT ignored FROM session_settings WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

pub async fn set_ignore(conn: &mut PgConnection, session_id: &str, ignore: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO session_settings (session_id, ignored) VALUES ($1, $2)
         ON CONFLICT (session_id) DO UPDATE SET ignored = excluded.ignored",
    )
    .bind(session_id)
    .bind(ignore)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn pacing(db: &Db, session_id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT pacing FROM session_settings WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

pub async fn set_pacing(conn: &mut PgConnection, session_id: &str, pacing: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO session_settings (session_id, pacing) VALUES ($1, $2)
         ON CONFLICT (session_id) DO UPDATE SET pacing = excluded.pacing",
    )
    .bind(session_id)
    .bind(pacing)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
