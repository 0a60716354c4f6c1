use sqlx::PgConnection;

use super::Db;
use crate::store::Result;
use crate::store::pending::Row;

fn col(rows: &[Row], f: fn(&Row) -> &str) -> Vec<&str> {
    rows.iter().map(f).collect()
}

pub async fn delete(conn: &mut PgConnection, rows: &[Row]) -> Result<()> {
    sqlx::query(
        "DELETE FROM pending_inbound WHERE (device_id, chat, sender, id) IN
           (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]))",
    )
    .bind(rows.iter().map(|r| r.device).collect::<Vec<_>>())
    .bind(col(rows, |r| &r.chat))
    .bind(col(rows, |r| &r.sender))
    .bind(col(rows, |r| &r.id))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn upsert(conn: &mut PgConnection, rows: &[Row], now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO pending_inbound (device_id, chat, sender, id, message, created_at)
         SELECT d, c, s, i, m, $6
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bytea[]) AS r(d, c, s, i, m)
         ON CONFLICT (device_id, chat, sender, id)
         DO UPDATE SET message = excluded.message, created_at = excluded.created_at",
    )
    .bind(rows.iter().map(|r| r.device).collect::<Vec<_>>())
    .bind(col(rows, |r| &r.chat))
    .bind(col(rows, |r| &r.sender))
    .bind(col(rows, |r| &r.id))
    .bind(
        rows.iter()
            .map(|r| r.message.as_deref().unwrap_or_default())
            .collect::<Vec<_>>(),
    )
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn get(
    db: &Db,
    device: i64,
    chat: &str,
    sender: &str,
    id: &str,
) -> Result<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar(
        "SELECT message FROM pending_inbound
         WHERE device_id = $1 AND chat = $2 AND sender = $3 AND id = $4",
    )
    .bind(device)
    .bind(chat)
    .bind(sender)
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

pub async fn delete_before(conn: &mut PgConnection, device: i64, cutoff: i64) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM pending_inbound WHERE device_id = $1 AND created_at < $2")
            .bind(device)
            .bind(cutoff)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
    )
}
