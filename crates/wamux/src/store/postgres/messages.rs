use sqlx::PgConnection;

use super::Db;
use crate::store::Result;
use crate::store::messages::{Cursor, Direction, EventRow, Filter, Key, Row};

pub async fn insert_rows(conn: &mut PgConnection, rows: &[Row<'_>]) -> Result<Vec<Key>> {
    let col = |f: fn(&Row<'_>) -> String| rows.iter().map(f).collect::<Vec<_>>();
    // WITH ORDINALITY keeps the order given, so rows (and their `seq`) follow it.
    Ok(sqlx::query_as(
        "INSERT INTO messages (session_id, id, chat_id, sender, from_me, type, status, timestamp, body, created_at)
         SELECT s, i, c, se, fm, t, st, ts, b, ca
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[],
                     $7::text[], $8::bigint[], $9::text[], $10::bigint[])
              WITH ORDINALITY AS r(s, i, c, se, fm, t, st, ts, b, ca, n)
         ORDER BY n
         ON CONFLICT (session_id, chat_id, sender, id) DO NOTHING
         RETURNING session_id, chat_id, sender, id",
    )
    .bind(col(|r| r.msg.session_id.clone()))
    .bind(col(|r| r.msg.id.clone()))
    .bind(col(|r| r.msg.chat_id.clone()))
    .bind(col(|r| r.sender_key.to_owned()))
    .bind(rows.iter().map(|r| r.msg.from_me).collect::<Vec<_>>())
    .bind(col(|r| r.msg.kind.as_str().to_owned()))
    .bind(col(|r| r.msg.status.as_str().to_owned()))
    .bind(rows.iter().map(|r| r.msg.timestamp).collect::<Vec<_>>())
    .bind(col(|r| r.body.clone()))
    .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?)
}

pub async fn take_event_ids(conn: &mut PgConnection, n: usize) -> Result<Vec<i64>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    super::events::take_ids(conn, n).await
}

pub async fn insert_events(conn: &mut PgConnection, rows: &[EventRow<'_>]) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (id, session_id, event, chat_id, body, created_at)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::bigint[])",
    )
    .bind(rows.iter().map(|e| e.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|e| e.session_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|e| e.event).collect::<Vec<_>>())
    .bind(rows.iter().map(|e| e.chat_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|e| e.body.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|e| e.created_at).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn set_media(
    conn: &mut PgConnection,
    session_id: &str,
    chat_id: &str,
    sender_key: &str,
    id: &str,
    media: &str,
) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "UPDATE messages SET body = jsonb_set(body::jsonb, '{media}', $1::jsonb)::text
         WHERE session_id = $2 AND chat_id = $3 AND sender = $4 AND id = $5
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

/// The session's messages and distinct chats.
/// How many of the session's own messages since `since` (Unix seconds) WhatsApp took.
pub async fn sent_since(db: &Db, session_id: &str, since: i64) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages WHERE session_id = $1 AND from_me = TRUE
           AND timestamp >= $2 AND status IN ('sent', 'delivered', 'read')",
    )
    .bind(session_id)
    .bind(since)
    .fetch_one(&db.pool)
    .await?)
}

pub async fn counts(db: &Db, session_id: &str) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT chat_id) FROM messages WHERE session_id = $1",
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
    Ok(sqlx::query_as(
        "SELECT id, body::jsonb ->> 'participant' FROM messages
         WHERE session_id = $1 AND chat_id = $2 AND NOT from_me AND status = 'delivered'
           AND type NOT IN ('reaction', 'edited', 'revoked')
           AND ($3::text[] IS NULL OR id = ANY($3))
         ORDER BY timestamp DESC LIMIT $4",
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
             WHERE session_id = $1 AND type NOT IN ('reaction', 'edited', 'revoked', 'poll_vote')),
         unread AS (
             SELECT chat_id, COUNT(*) AS n FROM messages
             WHERE session_id = $1 AND NOT from_me AND status = 'delivered'
               AND type NOT IN ('reaction', 'edited', 'revoked', 'poll_vote')
             GROUP BY chat_id)
         SELECT r.chat_id, r.body, COALESCE(u.n, 0) FROM ranked r
         LEFT JOIN unread u ON u.chat_id = r.chat_id
         WHERE r.rn = 1
         ORDER BY r.timestamp DESC, r.seq DESC
         LIMIT $2",
    )
    .bind(session_id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

/// Marks received messages of a chat read.
pub async fn set_read(
    conn: &mut PgConnection,
    session_id: &str,
    chat_id: &str,
    ids: &[String],
) -> Result<()> {
    sqlx::query(
        "UPDATE messages SET status = 'read',
                body = jsonb_set(body::jsonb, '{status}', '\"read\"')::text
         WHERE session_id = $1 AND chat_id = $2 AND NOT from_me AND status = 'delivered'
           AND id = ANY($3)",
    )
    .bind(session_id)
    .bind(chat_id)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The sender key and body of message `id` of a chat (the newest, should two senders of
/// the chat have used one id).
pub async fn in_chat(
    conn: &mut PgConnection,
    session_id: &str,
    chat_id: &str,
    id: &str,
) -> Result<Option<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT sender, body FROM messages WHERE session_id = $1 AND chat_id = $2 AND id = $3
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
    conn: &mut PgConnection,
    key: (&str, &str, &str),
    secret: &[u8],
) -> Result<()> {
    let (session_id, chat_id, id) = key;
    sqlx::query(
        "INSERT INTO message_secrets (session_id, chat_id, id, secret) VALUES ($1, $2, $3, $4)
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
        "SELECT secret FROM message_secrets WHERE session_id = $1 AND chat_id = $2 AND id = $3",
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
        "SELECT body FROM messages WHERE session_id = $1 AND chat_id = $2 AND id = $3
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
    conn: &mut PgConnection,
    key: (&str, &str, &str, &str),
    body: &str,
) -> Result<()> {
    let (session_id, chat_id, sender, id) = key;
    sqlx::query(
        "UPDATE messages SET body = $1
         WHERE session_id = $2 AND chat_id = $3 AND sender = $4 AND id = $5",
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

pub async fn set_status(
    conn: &mut PgConnection,
    session_id: &str,
    id: &str,
    status: &str,
    from: &[&str],
) -> Result<Option<(String, String)>> {
    Ok(sqlx::query_as(
        "UPDATE messages SET status = $1,
                body = jsonb_set(body::jsonb, '{status}', to_jsonb($1::text))::text
         WHERE session_id = $2 AND id = $3 AND from_me AND status = ANY($4)
         RETURNING chat_id, body",
    )
    .bind(status)
    .bind(session_id)
    .bind(id)
    .bind(from)
    .fetch_optional(&mut *conn)
    .await?)
}

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
         WHERE session_id = $1
           AND ($2::text IS NULL OR chat_id = $2)
           AND ($3::bool IS NULL OR from_me = $3)
           AND ($4::bigint IS NULL OR timestamp >= $4)
           AND ($5::bigint IS NULL OR timestamp < $5)
           AND ($6::bigint IS NULL OR timestamp < $6 OR (timestamp = $6 AND seq < $7))
         ORDER BY timestamp DESC, seq DESC
         LIMIT $8",
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
         WHERE session_id = $1
           AND ($2::text IS NULL OR chat_id = $2)
           AND ($3::bool IS NULL OR from_me = $3)
           AND ($4::bigint IS NULL OR timestamp >= $4)
           AND ($5::bigint IS NULL OR timestamp < $5)",
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
         WHERE session_id = $1
           AND ($2::text IS NULL OR chat_id = $2)
           AND ($3::bool IS NULL OR from_me = $3)
           AND ($4::bigint IS NULL OR timestamp >= $4)
           AND ($5::bigint IS NULL OR timestamp < $5)
         ORDER BY timestamp DESC, seq DESC
         LIMIT $6 OFFSET $7",
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
    Ok(
        sqlx::query_scalar("SELECT body FROM messages WHERE session_id = $1 AND id = $2 LIMIT 1")
            .bind(session_id)
            .bind(id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

/// Keeps a participant's receipt unless it said as much before (or more): whether it is new.
pub async fn put_receipt(
    conn: &mut PgConnection,
    key: (&str, &str, &str),
    status: &str,
    rank: i64,
    at: i64,
) -> Result<bool> {
    let (session_id, message_id, participant) = key;
    let done = sqlx::query(
        "INSERT INTO message_receipts (session_id, message_id, participant, status, rank, at)
         VALUES ($1, $2, $3, $4, $5, $6)
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
         WHERE session_id = $1 AND message_id = $2 ORDER BY at, participant",
    )
    .bind(session_id)
    .bind(message_id)
    .fetch_all(&db.pool)
    .await?)
}

/// Removes the session's message `id` with its receipts and secret; the chat it was in.
pub async fn delete(conn: &mut PgConnection, session_id: &str, id: &str) -> Result<Option<String>> {
    let chat: Option<String> = sqlx::query_scalar(
        "DELETE FROM messages WHERE session_id = $1 AND id = $2 RETURNING chat_id",
    )
    .bind(session_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(chat) = chat else {
        return Ok(None);
    };
    sqlx::query("DELETE FROM message_receipts WHERE session_id = $1 AND message_id = $2")
        .bind(session_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM message_secrets WHERE session_id = $1 AND chat_id = $2 AND id = $3")
        .bind(session_id)
        .bind(&chat)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(Some(chat))
}

/// Stars or unstars the session's message `id`; its chat and body when that changed it.
pub async fn set_starred(
    conn: &mut PgConnection,
    session_id: &str,
    id: &str,
    starred: bool,
) -> Result<Option<(String, String)>> {
    Ok(sqlx::query_as(
        "UPDATE messages SET body = jsonb_set(body::jsonb, '{starred}', to_jsonb($1::boolean))::text
         WHERE session_id = $2 AND id = $3
           AND COALESCE((body::jsonb ->> 'starred')::boolean, FALSE) != $1
         RETURNING chat_id, body",
    )
    .bind(starred)
    .bind(session_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}
