//! App-state sync: sync keys, collection versions (hash states) and mutation MACs.

use std::collections::HashMap;

use sqlx::Row;
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::error::Result;
use wacore::store::traits::{AppStateSyncKey, AppSyncStore};
use whatsapp_rust::async_trait;

use super::{PgDeviceStore, db_error, wire};

#[async_trait]
impl AppSyncStore for PgDeviceStore {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        let data: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT key_data FROM wa_app_state_keys WHERE key_id = $1 AND device_id = $2",
        )
        .bind(key_id)
        .bind(self.device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(data) = data else {
            return Ok(None);
        };
        // An undecodable key reads as absent: app-state sync then asks the primary device
        // for it again, and the answer overwrites the row.
        match wire::decode_app_state_sync_key(&data) {
            Ok(key) => Ok(Some(key)),
            Err(e) => {
                tracing::warn!(
                    device = self.device_id,
                    len = data.len(),
                    error = %e,
                    "app-state sync key does not decode, treating it as absent"
                );
                Ok(None)
            }
        }
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        sqlx::query(
            "INSERT INTO wa_app_state_keys (key_id, key_data, device_id) VALUES ($1, $2, $3)
             ON CONFLICT (key_id, device_id) DO UPDATE SET key_data = EXCLUDED.key_data",
        )
        .bind(key_id)
        .bind(wire::encode_app_state_sync_key(&key))
        .bind(self.device_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn get_version(&self, name: &str) -> Result<HashState> {
        let data: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT state_data FROM wa_app_state_versions WHERE name = $1 AND device_id = $2",
        )
        .bind(name)
        .bind(self.device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(data) = data else {
            return Ok(HashState::default());
        };
        // An undecodable state resets the collection, which then syncs again from version 0.
        match wire::decode_hash_state(&data) {
            Ok(state) => Ok(state),
            Err(e) => {
                tracing::warn!(
                    device = self.device_id,
                    collection = name,
                    len = data.len(),
                    error = %e,
                    "app-state version does not decode, resyncing the collection"
                );
                Ok(HashState::default())
            }
        }
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        sqlx::query(
            "INSERT INTO wa_app_state_versions (name, state_data, device_id) VALUES ($1, $2, $3)
             ON CONFLICT (name, device_id) DO UPDATE SET state_data = EXCLUDED.state_data",
        )
        .bind(name)
        .bind(wire::encode_hash_state(&state))
        .bind(self.device_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        if mutations.is_empty() {
            return Ok(());
        }
        let (index_macs, value_macs): (Vec<&[u8]>, Vec<&[u8]>) = mutations
            .iter()
            .map(|m| (&m.index_mac[..], &m.value_mac[..]))
            .unzip();
        sqlx::query(
            "INSERT INTO wa_app_state_mutation_macs (name, version, index_mac, value_mac, device_id)
             SELECT DISTINCT ON (index_mac) $1, $2, index_mac, value_mac, $5
             FROM unnest($3::bytea[], $4::bytea[]) WITH ORDINALITY AS t(index_mac, value_mac, n)
             ORDER BY index_mac, n DESC
             ON CONFLICT (name, index_mac, device_id) DO UPDATE
             SET version = EXCLUDED.version, value_mac = EXCLUDED.value_mac",
        )
        .bind(name)
        // The SQLite store keeps the version's bit pattern in a signed 64-bit column.
        .bind(version as i64)
        .bind(index_macs)
        .bind(value_macs)
        .bind(self.device_id)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar(
            "SELECT value_mac FROM wa_app_state_mutation_macs
             WHERE name = $1 AND index_mac = $2 AND device_id = $3",
        )
        .bind(name)
        .bind(index_mac)
        .bind(self.device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)
    }

    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> Result<HashMap<[u8; 32], Vec<u8>>> {
        if index_macs.is_empty() {
            return Ok(HashMap::new());
        }
        let wanted: Vec<&[u8]> = index_macs.iter().map(|m| &m[..]).collect();
        let rows = sqlx::query(
            "SELECT index_mac, value_mac FROM wa_app_state_mutation_macs
             WHERE name = $1 AND device_id = $2 AND index_mac = ANY($3::bytea[])",
        )
        .bind(name)
        .bind(self.device_id)
        .bind(wanted)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let index_mac: Vec<u8> = row.try_get(0).map_err(db_error)?;
            let value_mac: Vec<u8> = row.try_get(1).map_err(db_error)?;
            // Only 32-byte index MACs can have matched the query.
            if let Ok(index_mac) = <[u8; 32]>::try_from(index_mac.as_slice()) {
                out.insert(index_mac, value_mac);
            }
        }
        Ok(out)
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        if index_macs.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "DELETE FROM wa_app_state_mutation_macs
             WHERE name = $1 AND device_id = $2 AND index_mac = ANY($3::bytea[])",
        )
        .bind(name)
        .bind(self.device_id)
        .bind(index_macs)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM wa_app_state_mutation_macs WHERE name = $1 AND device_id = $2")
            .bind(name)
            .bind(self.device_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        // The newest key that decodes: an undecodable row reads as absent, so handing out
        // its id would make the next outbound patch fail to find its key.
        let rows = sqlx::query(
            "SELECT key_id, key_data FROM wa_app_state_keys
             WHERE device_id = $1 ORDER BY key_id DESC",
        )
        .bind(self.device_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        for row in rows {
            let key_data: Vec<u8> = row.try_get(1).map_err(db_error)?;
            if wire::decode_app_state_sync_key(&key_data).is_ok() {
                return row.try_get(0).map_err(db_error);
            }
        }
        Ok(None)
    }
}
