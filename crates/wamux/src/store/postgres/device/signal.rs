//! Signal protocol state: identities, sessions, one-time and signed pre-keys, sender keys.

use std::sync::Arc;

use sqlx::Row;
use wacore::store::error::{Result, StoreError};
use wacore::store::traits::SignalStore;
use whatsapp_rust::async_trait;
use whatsapp_rust::bytes::Bytes;

use super::{PgDeviceStore, db_error};

// Pre-key ids are u32 in whatsapp-rust and INTEGER in the SQLite store, which keeps their
// bit pattern: ids past i32::MAX are stored negative and read back unchanged.
fn key_id(id: u32) -> i32 {
    id as i32
}

fn key_id_back(id: i32) -> u32 {
    id as u32
}

impl PgDeviceStore {
    /// Upserts `(address, record)` pairs into one of the address-keyed tables.
    async fn put_address_records(
        &self,
        query: &'static str,
        rows: impl Iterator<Item = (&str, &[u8])>,
    ) -> Result<()> {
        let (addresses, records): (Vec<&str>, Vec<&[u8]>) = rows.unzip();
        if addresses.is_empty() {
            return Ok(());
        }
        sqlx::query(query)
            .bind(addresses)
            .bind(records)
            .bind(self.device_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn get_address_record(
        &self,
        query: &'static str,
        address: &str,
    ) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar(query)
            .bind(address)
            .bind(self.device_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn delete_by_address(&self, query: &'static str, address: &str) -> Result<()> {
        sqlx::query(query)
            .bind(address)
            .bind(self.device_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

#[async_trait]
impl SignalStore for PgDeviceStore {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.put_identities_batch(&[(Arc::from(address), key)])
            .await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        self.put_address_records(
            "INSERT INTO wa_identities (address, key, device_id)
             SELECT DISTINCT ON (address) address, key, $3
             FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS t(address, key, n)
             ORDER BY address, n DESC
             ON CONFLICT (address, device_id) DO UPDATE SET key = EXCLUDED.key",
            identities.iter().map(|(a, k)| (&**a, &k[..])),
        )
        .await
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        let key = self
            .get_address_record(
                "SELECT key FROM wa_identities WHERE address = $1 AND device_id = $2",
                address,
            )
            .await?;
        key.map(|k| {
            <[u8; 32]>::try_from(k.as_slice()).map_err(|_| {
                StoreError::Validation(format!(
                    "identity key has invalid length {} (expected 32)",
                    k.len()
                ))
            })
        })
        .transpose()
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.delete_by_address(
            "DELETE FROM wa_identities WHERE address = $1 AND device_id = $2",
            address,
        )
        .await
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        Ok(self
            .get_address_record(
                "SELECT record FROM wa_sessions WHERE address = $1 AND device_id = $2",
                address,
            )
            .await?
            .map(Bytes::from))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.put_address_records(SESSIONS_UPSERT, std::iter::once((address, session)))
            .await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.put_address_records(
            SESSIONS_UPSERT,
            sessions.iter().map(|(a, r)| (&**a, &r[..])),
        )
        .await
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.delete_by_address(
            "DELETE FROM wa_sessions WHERE address = $1 AND device_id = $2",
            address,
        )
        .await
    }

    async fn has_session(&self, address: &str) -> Result<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM wa_sessions WHERE address = $1 AND device_id = $2)",
        )
        .bind(address)
        .bind(self.device_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        // Addresses are `user@server` for device 0 and `user:device@server` otherwise. The
        // user part is a numeric PN or LID, but match by prefix without LIKE so that no
        // character in it can act as a wildcard.
        let at = format!("{user}@");
        let colon = format!("{user}:");
        sqlx::query_scalar(
            "SELECT EXISTS (
                 SELECT 1 FROM wa_sessions
                 WHERE device_id = $1 AND (starts_with(address, $2) OR starts_with(address, $3))
             ) OR EXISTS (
                 SELECT 1 FROM wa_identities
                 WHERE device_id = $1 AND (starts_with(address, $2) OR starts_with(address, $3))
             )",
        )
        .bind(self.device_id)
        .bind(at)
        .bind(colon)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        sqlx::query(
            "INSERT INTO wa_prekeys (id, key, uploaded, device_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id, device_id) DO UPDATE
             SET key = EXCLUDED.key, uploaded = EXCLUDED.uploaded",
        )
        .bind(key_id(id))
        .bind(record)
        .bind(uploaded)
        .bind(self.device_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let (ids, records): (Vec<i32>, Vec<&[u8]>) =
            keys.iter().map(|(id, r)| (key_id(*id), &r[..])).unzip();
        sqlx::query(
            "INSERT INTO wa_prekeys (id, key, uploaded, device_id)
             SELECT DISTINCT ON (id) id, key, $3, $4
             FROM unnest($1::integer[], $2::bytea[]) WITH ORDINALITY AS t(id, key, n)
             ORDER BY id, n DESC
             ON CONFLICT (id, device_id) DO UPDATE
             SET key = EXCLUDED.key, uploaded = EXCLUDED.uploaded",
        )
        .bind(ids)
        .bind(records)
        .bind(uploaded)
        .bind(self.device_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        let key: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT key FROM wa_prekeys WHERE id = $1 AND device_id = $2")
                .bind(key_id(id))
                .bind(self.device_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(key.map(Bytes::from))
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i32> = ids.iter().map(|id| key_id(*id)).collect();
        let rows = sqlx::query(
            "SELECT id, key FROM wa_prekeys WHERE device_id = $1 AND id = ANY($2::integer[])",
        )
        .bind(self.device_id)
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .map(|row| {
                let id: i32 = row.try_get(0).map_err(db_error)?;
                let key: Vec<u8> = row.try_get(1).map_err(db_error)?;
                Ok((key_id_back(id), Bytes::from(key)))
            })
            .collect()
    }

    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<i32> = ids.iter().map(|id| key_id(*id)).collect();
        // An UPDATE, never an upsert: a key consumed since the upload must stay deleted.
        sqlx::query(
            "UPDATE wa_prekeys SET uploaded = TRUE
             WHERE device_id = $1 AND id = ANY($2::integer[])",
        )
        .bind(self.device_id)
        .bind(ids)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        sqlx::query("DELETE FROM wa_prekeys WHERE id = $1 AND device_id = $2")
            .bind(key_id(id))
            .bind(self.device_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        let max: Option<i32> =
            sqlx::query_scalar("SELECT max(id) FROM wa_prekeys WHERE device_id = $1")
                .bind(self.device_id)
                .fetch_one(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(max.map_or(0, key_id_back))
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO wa_signed_prekeys (id, record, device_id) VALUES ($1, $2, $3)
             ON CONFLICT (id, device_id) DO UPDATE SET record = EXCLUDED.record",
        )
        .bind(key_id(id))
        .bind(record)
        .bind(self.device_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT record FROM wa_signed_prekeys WHERE id = $1 AND device_id = $2")
            .bind(key_id(id))
            .bind(self.device_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        let rows = sqlx::query("SELECT id, record FROM wa_signed_prekeys WHERE device_id = $1")
            .bind(self.device_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.into_iter()
            .map(|row| {
                let id: i32 = row.try_get(0).map_err(db_error)?;
                let record: Vec<u8> = row.try_get(1).map_err(db_error)?;
                Ok((key_id_back(id), record))
            })
            .collect()
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        sqlx::query("DELETE FROM wa_signed_prekeys WHERE id = $1 AND device_id = $2")
            .bind(key_id(id))
            .bind(self.device_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.put_address_records(SENDER_KEYS_UPSERT, std::iter::once((address, record)))
            .await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.put_address_records(
            SENDER_KEYS_UPSERT,
            sender_keys.iter().map(|(a, r)| (&**a, &r[..])),
        )
        .await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.get_address_record(
            "SELECT record FROM wa_sender_keys WHERE address = $1 AND device_id = $2",
            address,
        )
        .await
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.delete_by_address(
            "DELETE FROM wa_sender_keys WHERE address = $1 AND device_id = $2",
            address,
        )
        .await
    }
}

const SESSIONS_UPSERT: &str = "INSERT INTO wa_sessions (address, record, device_id)
     SELECT DISTINCT ON (address) address, record, $3
     FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS t(address, record, n)
     ORDER BY address, n DESC
     ON CONFLICT (address, device_id) DO UPDATE SET record = EXCLUDED.record";

const SENDER_KEYS_UPSERT: &str = "INSERT INTO wa_sender_keys (address, record, device_id)
     SELECT DISTINCT ON (address) address, record, $3
     FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS t(address, record, n)
     ORDER BY address, n DESC
     ON CONFLICT (address, device_id) DO UPDATE SET record = EXCLUDED.record";
