use sqlx::{Row as _, SqliteConnection};

use crate::store::Result;
use crate::store::idempotency::Stored;

pub async fn forget_before(conn: &mut SqliteConnection, before: i64) -> Result<()> {
    sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
        .bind(before)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn insert(
    conn: &mut SqliteConnection,
    route: &str,
    key: &str,
    body_hash: &[u8],
    now: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "INSERT INTO idempotency_keys (route, key, body_hash, created_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (route, key) DO NOTHING",
    )
    .bind(route)
    .bind(key)
    .bind(body_hash)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1)
}

pub async fn get(conn: &mut SqliteConnection, route: &str, key: &str) -> Result<Stored> {
    let row = sqlx::query(
        "SELECT body_hash, status, response, created_at FROM idempotency_keys
         WHERE route = ? AND key = ?",
    )
    .bind(route)
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Stored {
        body_hash: row.try_get("body_hash")?,
        status: row.try_get("status")?,
        response: row.try_get("response")?,
        created_at: row.try_get("created_at")?,
    })
}

pub async fn finish(
    conn: &mut SqliteConnection,
    route: &str,
    key: &str,
    status: i64,
    response: &[u8],
) -> Result<()> {
    sqlx::query("UPDATE idempotency_keys SET status = ?, response = ? WHERE route = ? AND key = ?")
        .bind(status)
        .bind(response)
        .bind(route)
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn release(conn: &mut SqliteConnection, route: &str, key: &str) -> Result<()> {
    sqlx::query("DELETE FROM idempotency_keys WHERE route = ? AND key = ? AND status IS NULL")
        .bind(route)
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
