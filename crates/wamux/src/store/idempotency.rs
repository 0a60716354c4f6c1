//! The `idempotency_keys` table: what the first request with an `Idempotency-Key` answered.

use super::{Result, Store, dispatch, now};

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
    claim_at(store, route, key, body_hash, now()).await
}

/// A key as stored: its body hash, the answer once there is one, and when it was claimed.
pub(crate) struct Stored {
    pub body_hash: Vec<u8>,
    pub status: Option<i64>,
    pub response: Option<Vec<u8>>,
    pub created_at: i64,
}

async fn claim_at(
    store: &Store,
    route: &str,
    key: &str,
    body_hash: &[u8],
    t: i64,
) -> Result<Claim> {
    let mut tx = store.begin().await?;
    dispatch!(conn &mut tx.conn(), idempotency::forget_before(t - KEPT_FOR_SECS))?;
    let inserted = dispatch!(conn &mut tx.conn(), idempotency::insert(route, key, body_hash, t))?;
    let claim = if inserted {
        Claim::New
    } else {
        let row = dispatch!(conn &mut tx.conn(), idempotency::get(route, key))?;
        match (row.body_hash == body_hash, row.status, row.response) {
            (false, _, _) => Claim::OtherBody,
            (true, Some(status), Some(response)) => Claim::Replay {
                status: u16::try_from(status).unwrap_or(500),
                response,
            },
            _ => Claim::InFlight {
                since: row.created_at,
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
    let mut tx = store.begin().await?;
    dispatch!(conn &mut tx.conn(), idempotency::finish(route, key, i64::from(status), response))?;
    tx.commit().await
}

/// Gives `key` up (the request failed before anything was sent): a retry runs anew.
pub async fn release(store: &Store, route: &str, key: &str) -> Result<()> {
    let mut tx = store.begin().await?;
    dispatch!(conn &mut tx.conn(), idempotency::release(route, key))?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_claimed_once_answered_again_and_refused_with_another_body() {
        for db in crate::store::testing::databases().await {
            let store = db.store().await;
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
            let later = now() + KEPT_FOR_SECS + 1;
            assert_eq!(
                claim_at(&store, r, "k1", b"b", later).await.unwrap(),
                Claim::New,
                "{}",
                store.engine()
            );
            db.drop().await;
        }
    }
}
