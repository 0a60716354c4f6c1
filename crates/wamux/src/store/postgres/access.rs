use sqlx::PgConnection;

use super::Db;
use crate::store::Result;
use crate::store::access::{AuditEntry, KeyRecord, KeyRow};

const KEY_COLS: &str = "id, name, sessions, scopes, created_at, expires_at, last_used_at";

pub async fn insert_key(
    conn: &mut PgConnection,
    key: &KeyRecord,
    digest: &[u8],
    sessions: &str,
    scopes: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO api_keys (id, name, digest, sessions, scopes, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&key.id)
    .bind(&key.name)
    .bind(digest)
    .bind(sessions)
    .bind(scopes)
    .bind(key.created_at)
    .bind(key.expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn list_keys(db: &Db) -> Result<Vec<KeyRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLS} FROM api_keys ORDER BY created_at, id"
    )))
    .fetch_all(&db.pool)
    .await?)
}

pub async fn key_by_digest(db: &Db, digest: &[u8]) -> Result<Option<KeyRow>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLS} FROM api_keys WHERE digest = $1"
    )))
    .bind(digest)
    .fetch_optional(&db.pool)
    .await?)
}

pub async fn delete_key(conn: &mut PgConnection, id: &str) -> Result<bool> {
    Ok(sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected()
        == 1)
}

pub async fn touch_key(conn: &mut PgConnection, id: &str, t: i64) -> Result<()> {
    sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
        .bind(t)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn append_audit(conn: &mut PgConnection, e: &AuditEntry) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (at, key_id, method, route, session_id, status, client)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(e.at)
    .bind(&e.key_id)
    .bind(&e.method)
    .bind(&e.route)
    .bind(&e.session_id)
    .bind(e.status)
    .bind(&e.client)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn audit_log(db: &Db, before: i64, limit: i64) -> Result<Vec<AuditEntry>> {
    Ok(sqlx::query_as(
        "SELECT id, at, key_id, method, route, session_id, status, client FROM audit_log
         WHERE id < $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

pub async fn forget_audit_before(conn: &mut PgConnection, before: i64) -> Result<u64> {
    Ok(sqlx::query("DELETE FROM audit_log WHERE at < $1")
        .bind(before)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}
