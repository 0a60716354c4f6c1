use sqlx::{Row as _, SqliteConnection};

use super::Db;
use crate::store::Result;
use crate::store::messages::{Cursor, Direction, EventRow, Filter, Key, Row};

pub async fn insert_rows(conn: &mut SqliteConnection, rows: &[Row<'_>]) -> Result<Vec<Key>> {
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!([
                r.msg.session_id,
                r.msg.id,
                r.msg.chat_id,
                r.sender_key,
                r.msg.from_me,
                r.msg.kind.as_str(),
                r.msg.status.as_str(),
                r.msg.timestamp,
                r.body,
                r.created_at,
            ])
        })
        .collect();
    // json_each walks the array in order, so rows (and their `seq`) keep the order given.
    Ok(sqlx::query_as(
        "INSERT INTO messages (session_id, id, chat_id, sender, from_me, type, status, timestamp, body, created_at)
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
                json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
                json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]'),
                json_extract(value, '$[9]')
         FROM json_each(?) WHERE true
         ON CONFLICT (session_id, chat_id, sender, id) DO NOTHING
         RETURNING session_id, chat_id, sender, id",
    )
    .bind(serde_json::Value::from(json).to_string())
    .fetch_all(&mut *conn)
    .await?)
}

/// The writer holds the write lock, so nobody else takes an id meanwhile, and
/// AUTOINCREMENT's counter follows the explicit ids.
pub async fn take_event_ids(conn: &mut SqliteConnection, n: usize) -> Result<Vec<i64>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let last: i64 = sqlx::query_scalar(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
                    COALESCE((SELECT MAX(id) FROM events), 0))",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((1..=n as i64).map(|i| last + i).collect())
}

pub async fn insert_events(conn: &mut SqliteConnection, rows: &[EventRow<'_>]) -> Result<()> {
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|e| serde_json::json!([e.id, e.session_id, e.event, e.chat_id, e.body, e.created_at]))
        .collect();
    sqlx::query(
        "INSERT INTO events (id, session_id, event, chat_id, body, created_at)
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                json_extract(value, '$[4]'), json_extract(value, '$[5]')
         FROM json_each(?)",
    )
    .bind(serde_json::Value::from(json).to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn set_media(
    conn: &mut SqliteConnection,
    session_id: &str,
    chat_id: &str,
    sender_key: &str,
    id: &str,
    media: &str,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "UPDATE messages SET body = json_set(body, '$.media', json(?1))
         WHERE session_id = ?2 AND chat_id = ?3 AND sender = ?4 AND id = ?5
         RETURNING body",
    )
    .bind(media)
    .bind(session_id)
    .bind(chat_id)
    .bind(sender_key)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// The sender key and body of message `id` of a chat (the newest, should two senders of
/// the chat have used one id).
pub async fn in_chat(
    conn: &mut SqliteConnection,
    session_id: &str,
    chat_id: &str,
    id: &str,
) -> Result<Option<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT sender, body FROM messages WHERE session_id = ?1 AND chat_id = ?2 AND id = ?3
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(session_id)
    .bind(chat_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Keeps the secret of a message (once: a redelivery does not replace it).
pub async fn put_secret(
    conn: &mut SqliteConnection,
    key: (&str, &str, &str),
    secret: &[u8],
) -> Result<()> {
    let (session_id, chat_id, id) = key;
    sqlx::query(
        "INSERT INTO message_secrets (session_id, chat_id, id, secret) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (session_id, chat_id, id) DO NOTHING",
    )
    .bind(session_id)
    .bind(chat_id)
    .bind(id)
    .bind(secret)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn secret(db: &Db, session_id: &str, chat_id: &str, id: &str) -> Result<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar(
        "SELECT secret FROM message_secrets WHERE session_id = ?1 AND chat_id = ?2 AND id = ?3",
    )
    .bind(session_id)
    .bind(chat_id)
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

/// The body of message `id` of a chat (the newest, should two senders have used one id).
pub async fn find_in_chat(
    db: &Db,
    session_id: &str,
    chat_id: &str,
    id: &str,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT body FROM messages WHERE session_id = ?1 AND chat_id = ?2 AND id = ?3
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(session_id)
    .bind(chat_id)
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

/// Replaces the body of one message.
pub async fn set_body(
    conn: &mut SqliteConnection,
    key: (&str, &str, &str, &str),
    body: &str,
) -> Result<()> {
    let (session_id, chat_id, sender, id) = key;
    sqlx::query(
        "UPDATE messages SET body = ?1
         WHERE session_id = ?2 AND chat_id = ?3 AND sender = ?4 AND id = ?5",
    )
    .bind(body)
    .bind(session_id)
    .bind(chat_id)
    .bind(sender)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The session's messages and distinct chats.
/// How many of the session's own messages since `since` (Unix seconds) WhatsApp took.
pub async fn sent_since(db: &Db, session_id: &str, since: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages WHERE session_id = ?1 AND from_me = 1
           AND timestamp >= ?2 AND status IN ('sent', 'delivered', 'read')",
    )
    .bind(session_id)
    .bind(since)
    .fetch_one(&db.pool)
    .await?)
}

pub async fn counts(db: &Db, session_id: &str) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT chat_id) FROM messages WHERE session_id = ?1",
    )
    .bind(session_id)
    .fetch_one(&db.pool)
    .await?)
}

/// Received messages of a chat not read yet (`ids`: only these), newest first, with the
/// group participant that sent each.
pub async fn unread(
    db: &Db,
    session_id: &str,
    chat_id: &str,
    ids: Option<&[String]>,
    limit: i64,
) -> Result<Vec<(String, Option<String>)>> {
    let ids = ids.map(serde_json::to_string).transpose()?;
    Ok(sqlx::query_as(
        "SELECT id, json_extract(body, '$.participant') FROM messages
         WHERE session_id = ?1 AND chat_id = ?2 AND from_me = 0 AND status = 'delivered'
           AND type NOT IN ('reaction', 'edited', 'revoked')
           AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3)))
         ORDER BY timestamp DESC LIMIT ?4",
    )
    .bind(session_id)
    .bind(chat_id)
    .bind(ids)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

/// The session's chats, the most recent first, each with its last message's body and the
/// number of received messages not read yet.
pub async fn chats(db: &Db, session_id: &str, limit: i64) -> Result<Vec<(String, String, i64)>> {
    Ok(sqlx::query_as(
        "WITH ranked AS (
             SELECT chat_id, timestamp, seq, body,
                    ROW_NUMBER() OVER (PARTITION BY chat_id ORDER BY timestamp DESC, seq DESC) AS rn
             FROM messages
             WHERE session_id = ?1 AND type NOT IN ('reaction', 'edited', 'revoked', 'poll_vote')),
         unread AS (
             SELECT chat_id, COUNT(*) AS n FROM messages
             WHERE session_id = ?1 AND from_me = 0 AND status = 'delivered'
               AND type NOT IN ('reaction', 'edited', 'revoked', 'poll_vote')
             GROUP BY chat_id)
         SELECT r.chat_id, r.body, COALESCE(u.n, 0) FROM ranked r
         LEFT JOIN unread u ON u.chat_id = r.chat_id
         WHERE r.rn = 1
         ORDER BY r.timestamp DESC, r.seq DESC
         LIMIT ?2",
    )
    .bind(session_id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

/// Marks received messages of a chat read.
pub async fn set_read(
    conn: &mut SqliteConnection,
    session_id: &str,
    chat_id: &str,
    ids: &[String],
) -> Result<()> {
    sqlx::query(
        "UPDATE messages SET status = 'read', body = json_set(body, '$.status', 'read')
         WHERE session_id = ?1 AND chat_id = ?2 AND from_me = 0 AND status = 'delivered'
           AND id IN (SELECT value FROM json_each(?3))",
    )
    .bind(session_id)
    .bind(chat_id)
    .bind(serde_json::to_string(ids)?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Returns the chat and the new body when the status moved.
pub async fn set_status(
    conn: &mut SqliteConnection,
    session_id: &str,
    id: &str,
    status: &str,
    from: &[&str],
) -> Result<Option<(String, String)>> {
    Ok(sqlx::query_as(
        "UPDATE messages SET status = ?1, body = json_set(body, '$.status', ?1)
         WHERE session_id = ?2 AND id = ?3 AND from_me = 1
           AND status IN (SELECT value FROM json_each(?4))
         RETURNING chat_id, body",
    )
    .bind(status)
    .bind(session_id)
    .bind(id)
    .bind(serde_json::to_string(from)?)
    .fetch_optional(&mut *conn)
    .await?)
}

/// `(seq, timestamp, body)`, newest first.
pub async fn list(
    db: &Db,
    session_id: &str,
    filter: &Filter,
    after: Option<Cursor>,
    limit: i64,
) -> Result<Vec<(i64, i64, String)>> {
    let from_me = filter.direction.map(|d| d == Direction::Out);
    Ok(sqlx::query_as(
        "SELECT seq, timestamp, body FROM messages
         WHERE session_id = ?1
           AND (?2 IS NULL OR chat_id = ?2)
           AND (?3 IS NULL OR from_me = ?3)
           AND (?4 IS NULL OR timestamp >= ?4)
           AND (?5 IS NULL OR timestamp < ?5)
           AND (?6 IS NULL OR timestamp < ?6 OR (timestamp = ?6 AND seq < ?7))
         ORDER BY timestamp DESC, seq DESC
         LIMIT ?8",
    )
    .bind(session_id)
    .bind(&filter.chat_id)
    .bind(from_me)
    .bind(filter.since)
    .bind(filter.until)
    .bind(after.map(|c| c.timestamp))
    .bind(after.map(|c| c.seq))
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

/// How many messages match `filter`.
pub async fn count_matching(db: &Db, session_id: &str, filter: &Filter) -> Result<i64> {
    let from_me = filter.direction.map(|d| d == Direction::Out);
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages
         WHERE session_id = ?1
           AND (?2 IS NULL OR chat_id = ?2)
           AND (?3 IS NULL OR from_me = ?3)
           AND (?4 IS NULL OR timestamp >= ?4)
           AND (?5 IS NULL OR timestamp < ?5)",
    )
    .bind(session_id)
    .bind(&filter.chat_id)
    .bind(from_me)
    .bind(filter.since)
    .bind(filter.until)
    .fetch_one(&db.pool)
    .await?)
}

/// The bodies of `limit` messages matching `filter` after skipping `skip`, newest first.
pub async fn skip_list(
    db: &Db,
    session_id: &str,
    filter: &Filter,
    skip: i64,
    limit: i64,
) -> Result<Vec<String>> {
    let from_me = filter.direction.map(|d| d == Direction::Out);
    Ok(sqlx::query_scalar(
        "SELECT body FROM messages
         WHERE session_id = ?1
           AND (?2 IS NULL OR chat_id = ?2)
           AND (?3 IS NULL OR from_me = ?3)
           AND (?4 IS NULL OR timestamp >= ?4)
           AND (?5 IS NULL OR timestamp < ?5)
         ORDER BY timestamp DESC, seq DESC
         LIMIT ?6 OFFSET ?7",
    )
    .bind(session_id)
    .bind(&filter.chat_id)
    .bind(from_me)
    .bind(filter.since)
    .bind(filter.until)
    .bind(limit)
    .bind(skip)
    .fetch_all(&db.pool)
    .await?)
}

pub async fn find(db: &Db, session_id: &str, id: &str) -> Result<Option<String>> {
    let row = sqlx::query("SELECT body FROM messages WHERE session_id = ? AND id = ? LIMIT 1")
        .bind(session_id)
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row.map(|r| r.try_get("body")).transpose()?)
}

/// Keeps a participant's receipt unless it said as much before (or more): whether it is new.
pub async fn put_receipt(
    conn: &mut SqliteConnection,
    key: (&str, &str, &str),
    status: &str,
    rank: i64,
    at: i64,
) -> Result<bool> {
    let (session_id, message_id, participant) = key;
    let done = sqlx::query(
        "INSERT INTO message_receipts (session_id, message_id, participant, status, rank, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (session_id, message_id, participant) DO UPDATE
           SET status = excluded.status, rank = excluded.rank, at = excluded.at
           WHERE message_receipts.rank < excluded.rank",
    )
    .bind(session_id)
    .bind(message_id)
    .bind(participant)
    .bind(status)
    .bind(rank)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `(participant, status, at)` of a message's receipts, in the order they came.
pub async fn receipts(
    db: &Db,
    session_id: &str,
    message_id: &str,
) -> Result<Vec<(String, String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT participant, status, at FROM message_receipts
         WHERE session_id = ?1 AND message_id = ?2 ORDER BY at, participant",
    )
    .bind(session_id)
    .bind(message_id)
    .fetch_all(&db.pool)
    .await?)
}

/// Removes the session's message `id` with its receipts and secret; the chat it was in.
pub async fn delete(
    conn: &mut SqliteConnection,
    session_id: &str,
    id: &str,
) -> Result<Option<String>> {
    let chat: Option<String> = sqlx::query_scalar(
        "DELETE FROM messages WHERE session_id = ?1 AND id = ?2 RETURNING chat_id",
    )
    .bind(session_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(chat) = chat else {
        return Ok(None);
    };
    sqlx::query("DELETE FROM message_receipts WHERE session_id = ?1 AND message_id = ?2")
        .bind(session_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM message_secrets WHERE session_id = ?1 AND chat_id = ?2 AND id = ?3")
        .bind(session_id)
        .bind(&chat)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(chat))
}

/// Stars or unstars the session's message `id`; its chat and body when that changed it.
pub async fn set_starred(
    conn: &mut SqliteConnection,
    session_id: &str,
    id: &str,
    starred: bool,
) -> Result<Option<(String, String)>> {
    Ok(sqlx::query_as(
        "UPDATE messages SET body = json_set(body, '$.starred', json(CASE WHEN ?1 THEN 'true' ELSE 'false' END))
         WHERE session_id = ?2 AND id = ?3
           AND COALESCE(json_extract(body, '$.starred'), 0) != ?1
         RETURNING chat_id, body",
    )
    .bind(starred)
    .bind(session_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}
