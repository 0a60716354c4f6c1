//! The `api_keys` and `audit_log` tables: scoped keys (only their digests) and the record
//! of every mutating API call.

use std::collections::BTreeSet;

use sqlx::FromRow;

use super::{Result, Store, StoreError, dispatch, now};
use crate::access::{Grant, Scope, SessionPattern};

/// A scoped key as stored, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub sessions: Vec<SessionPattern>,
    pub scopes: BTreeSet<Scope>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl KeyRecord {
    pub fn grant(&self) -> Grant {
        Grant {
            key_id: self.id.clone(),
            sessions: self.sessions.clone(),
            scopes: self.scopes.clone(),
            expires_at: self.expires_at,
        }
    }

    pub fn expired_at(&self, t: i64) -> bool {
        self.expires_at.is_some_and(|e| e <= t)
    }
}

/// A row of `api_keys`, its lists still JSON text.
#[derive(FromRow)]
pub(crate) struct KeyRow {
    pub id: String,
    pub name: String,
    pub sessions: String,
    pub scopes: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl TryFrom<KeyRow> for KeyRecord {
    type Error = StoreError;

    fn try_from(r: KeyRow) -> Result<Self> {
        Ok(KeyRecord {
            id: r.id,
            name: r.name,
            sessions: serde_json::from_str(&r.sessions)?,
            scopes: serde_json::from_str(&r.scopes)?,
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
        })
    }
}

/// Stores a new key under the digest of its secret.
pub async fn create_key(store: &Store, key: &KeyRecord, digest: &[u8]) -> Result<()> {
    let sessions = serde_json::to_string(&key.sessions)?;
    let scopes = serde_json::to_string(&key.scopes)?;
    let mut tx = store.begin().await?;
    dispatch!(conn &mut tx.conn(), access::insert_key(key, digest, &sessions, &scopes))?;
    tx.commit().await
}

/// Every key, oldest first.
pub async fn list_keys(store: &Store) -> Result<Vec<KeyRecord>> {
    dispatch!(store, access::list_keys())?
        .into_iter()
        .map(KeyRecord::try_from)
        .collect()
}

/// The key whose secret has this digest, expired or not.
pub async fn key_by_digest(store: &Store, digest: &[u8]) -> Result<Option<KeyRecord>> {
    dispatch!(store, access::key_by_digest(digest))?
        .map(KeyRecord::try_from)
        .transpose()
}

/// Deletes a key. Returns whether it existed.
pub async fn delete_key(store: &Store, id: &str) -> Result<bool> {
    let mut tx = store.begin().await?;
    let deleted = dispatch!(conn &mut tx.conn(), access::delete_key(id))?;
    tx.commit().await?;
    Ok(deleted)
}

/// Notes that a key was used at `t`.
pub async fn touch_key(store: &Store, id: &str, t: i64) -> Result<()> {
    let id = id.to_owned();
    store
        .write(move |mut conn| {
            Box::pin(async move { dispatch!(conn &mut conn, access::touch_key(&id, t)) })
        })
        .await
}

/// One mutating API call.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AuditEntry {
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// The key's id; `None` for the admin key.
    pub key_id: Option<String>,
    pub method: String,
    /// The route as declared (`/api/sessions/{session_id}`), not the raw path.
    pub route: String,
    pub session_id: Option<String>,
    pub status: i32,
    /// The client's address.
    pub client: Option<String>,
}

/// Records a call (its `id` and `at` are assigned here), through the group commit.
pub async fn audit(store: &Store, mut entry: AuditEntry) -> Result<()> {
    entry.at = now();
    store
        .write(move |mut conn| {
            Box::pin(async move { dispatch!(conn &mut conn, access::append_audit(&entry)) })
        })
        .await
}

/// The newest entries before `before` (an id; `None` for the newest), newest first.
pub async fn audit_log(store: &Store, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>> {
    dispatch!(
        store,
        access::audit_log(before.unwrap_or(i64::MAX), i64::from(limit))
    )
}

/// Forgets entries older than `before` (Unix seconds). Returns how many.
pub async fn forget_audit_before(store: &Store, before: i64) -> Result<u64> {
    let mut tx = store.begin().await?;
    let n = dispatch!(conn &mut tx.conn(), access::forget_audit_before(before))?;
    tx.commit().await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    #[tokio::test]
    async fn keys_are_found_by_digest_listed_touched_and_deleted() {
        for db in testing::databases().await {
            let store = db.store().await;
            let key = KeyRecord {
                id: "key_1".into(),
                name: "tenant a".into(),
                sessions: vec![SessionPattern::parse("tenant-a-*").unwrap()],
                scopes: [Scope::Read, Scope::Send].into(),
                created_at: 100,
                expires_at: Some(200),
                last_used_at: None,
            };
            create_key(&store, &key, &[7; 32]).await.unwrap();
            assert!(
                create_key(
                    &store,
                    &KeyRecord {
                        id: "key_2".into(),
                        ..key.clone()
                    },
                    &[7; 32]
                )
                .await
                .is_err(),
                "two keys with one digest"
            );
            assert_eq!(
                key_by_digest(&store, &[7; 32]).await.unwrap(),
                Some(key.clone())
            );
            assert_eq!(key_by_digest(&store, &[8; 32]).await.unwrap(), None);
            touch_key(&store, "key_1", 150).await.unwrap();
            let listed = list_keys(&store).await.unwrap();
            assert_eq!(listed.len(), 1);
            assert_eq!(listed[0].last_used_at, Some(150));
            assert!(listed[0].expired_at(200) && !listed[0].expired_at(199));
            assert!(delete_key(&store, "key_1").await.unwrap());
            assert!(!delete_key(&store, "key_1").await.unwrap());
            assert_eq!(key_by_digest(&store, &[7; 32]).await.unwrap(), None);
            db.drop().await;
        }
    }

    #[tokio::test]
    async fn the_audit_log_pages_newest_first_and_forgets_old_entries() {
        for db in testing::databases().await {
            let store = db.store().await;
            for i in 0..5 {
                audit(
                    &store,
                    AuditEntry {
                        id: 0,
                        at: 0,
                        key_id: (i % 2 == 0).then(|| "key_1".to_owned()),
                        method: "POST".into(),
                        route: "/api/send-message".into(),
                        session_id: Some(format!("s{i}")),
                        status: 201,
                        client: Some("127.0.0.1".into()),
                    },
                )
                .await
                .unwrap();
            }
            let page = audit_log(&store, None, 3).await.unwrap();
            let sessions: Vec<_> = page.iter().map(|e| e.session_id.clone().unwrap()).collect();
            assert_eq!(sessions, ["s4", "s3", "s2"]);
            assert!(page[0].at > 0 && page[0].key_id.as_deref() == Some("key_1"));
            let rest = audit_log(&store, Some(page[2].id), 10).await.unwrap();
            assert_eq!(rest.len(), 2);
            assert_eq!(forget_audit_before(&store, now() + 1).await.unwrap(), 5);
            assert!(audit_log(&store, None, 10).await.unwrap().is_empty());
            db.drop().await;
        }
    }
}
