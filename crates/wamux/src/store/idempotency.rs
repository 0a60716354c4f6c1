//! The `idempotency_keys` table: what the first request with an `Idempotency-Key` answered.

use sqlx::Row as _;

use super::{Result, Store, now};

/// How long a key's answer is kept (and a retry with it answered from here).
pub const KEPT_FOR_SECS: i64 = 24 * 60 * 60;

/// What a request with a key finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new (or its last use expired): the request runs, and must then be
    /// [`finish`]ed or [`release`]d.
    New,
    /// The first request with the key answered this; it is answered again.
    Replay { status: u16, response: Vec<u8> },
    /// The key was used with another body.
    OtherBody,
    /// The first request with the key has not answered yet (since `since`, Unix seconds).
    InFlight { since: i64 },
}

/// Claims `key` on `route` for a request whose body hashes to `body_hash`.
pub async fn claim(store: &Store, route: &str, key: &str, body_hash: &[u8]) -> Result<Claim> {
    let t = now();
    let mut tx = store.begin().await?;
    sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
        .bind(t - KEPT_FOR_SECS)
        .execute(&mut *tx)
        .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (route, key, body_hash, created_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (route, key) DO NOTHING",
    )
    .bind(route)
    .bind(key)
    .bind(body_hash)
    .bind(t)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let claim = if inserted {
        Claim::New
    } else {
        let row = sqlx::query(
            "SELECT body_hash, status, response, created_at FROM idempotency_keys
             WHERE route = ? AND key = ?",
        )
        .bind(route)
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        let hash: Vec<u8> = row.try_get("body_hash")?;
        let status: Option<i64> = row.try_get("status")?;
        let response: Option<Vec<u8>> = row.try_get("response")?;
        match (hash == body_hash, status, response) {
            (false, _, _) => Claim::OtherBody,
            (true, Some(status), Some(response)) => Claim::Replay {
                status: u16::try_from(status).unwrap_or(500),
                response,
            },
            _ => Claim::InFlight {
                since: row.try_get("created_at")?,
            },
        }
    };
    tx.commit().await?;
    Ok(claim)
}

/// Keeps the answer of the request that claimed `key`.
pub async fn finish(
    store: &Store,
    route: &str,
    key: &str,
    status: u16,
    response: &[u8],
) -> Result<()> {
    sqlx::query("UPDATE idempotency_keys SET status = ?, response = ? WHERE route = ? AND key = ?")
        .bind(i64::from(status))
        .bind(response)
        .bind(route)
        .bind(key)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Gives `key` up (the request failed before anything was sent): a retry runs anew.
pub async fn release(store: &Store, route: &str, key: &str) -> Result<()> {
    sqlx::query("DELETE FROM idempotency_keys WHERE route = ? AND key = ? AND status IS NULL")
        .bind(route)
        .bind(key)
        .execute(store.pool())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_claimed_once_answered_again_and_refused_with_another_body() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let r = "/send-message";
        assert_eq!(claim(&store, r, "k1", b"a").await.unwrap(), Claim::New);
        assert!(matches!(
            claim(&store, r, "k1", b"a").await.unwrap(),
            Claim::InFlight { .. }
        ));
        finish(&store, r, "k1", 200, b"{\"id\":1}").await.unwrap();
        assert_eq!(
            claim(&store, r, "k1", b"a").await.unwrap(),
            Claim::Replay {
                status: 200,
                response: b"{\"id\":1}".to_vec()
            }
        );
        assert_eq!(
            claim(&store, r, "k1", b"b").await.unwrap(),
            Claim::OtherBody
        );
        // Keys belong to their route.
        assert_eq!(
            claim(&store, "/send-media", "k1", b"b").await.unwrap(),
            Claim::New
        );
        // A released key runs anew; an answered one is not released.
        assert_eq!(claim(&store, r, "k2", b"a").await.unwrap(), Claim::New);
        release(&store, r, "k2").await.unwrap();
        assert_eq!(claim(&store, r, "k2", b"a").await.unwrap(), Claim::New);
        release(&store, r, "k1").await.unwrap();
        assert!(matches!(
            claim(&store, r, "k1", b"a").await.unwrap(),
            Claim::Replay { .. }
        ));
        // Expired answers are forgotten.
        sqlx::query("UPDATE idempotency_keys SET created_at = created_at - ?")
            .bind(KEPT_FOR_SECS + 1)
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(claim(&store, r, "k1", b"b").await.unwrap(), Claim::New);
    }
}
