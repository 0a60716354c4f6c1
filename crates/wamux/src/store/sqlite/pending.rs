use sqlx::SqliteConnection;

use super::Db;
use crate::store::Result;
use crate::store::pending::Row;

fn json(rows: &[Row]) -> String {
    serde_json::Value::from(
        rows.iter()
            .map(|r| {
                serde_json::json!([
                    r.device,
                    r.chat,
                    r.sender,
                    r.id,
                    r.message.as_deref().map(hex)
                ])
            })
            .collect::<Vec<_>>(),
    )
    .to_string()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
            s
        })
}

pub async fn delete(conn: &mut SqliteConnection, rows: &[Row]) -> Result<()> {
    sqlx::query(
        "DELETE FROM pending_inbound WHERE (device_id, chat, sender, id) IN
           (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                   json_extract(value, '$[2]'), json_extract(value, '$[3]')
            FROM json_each(?))",
    )
    .bind(json(rows))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn upsert(conn: &mut SqliteConnection, rows: &[Row], now: i64) -> Result<()> {
    sqlx::query(
        "INSERT OR REPLACE INTO pending_inbound (device_id, chat, sender, id, message, created_at)
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                unhex(json_extract(value, '$[4]')), ?
         FROM json_each(?)",
    )
    .bind(now)
    .bind(json(rows))
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
         WHERE device_id = ? AND chat = ? AND sender = ? AND id = ?",
    )
    .bind(device)
    .bind(chat)
    .bind(sender)
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

pub async fn delete_before(conn: &mut SqliteConnection, device: i64, cutoff: i64) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM pending_inbound WHERE device_id = ? AND created_at < ?")
            .bind(device)
            .bind(cutoff)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
    )
}
