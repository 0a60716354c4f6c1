//! The device row: the device's own keys, account and client settings.

use std::sync::Arc;

use sqlx::Row;
use sqlx::postgres::PgRow;
use wacore::libsignal::protocol::{KeyPair, PrivateKey, PublicKey};
use wacore::store::Device;
use wacore::store::device::{DEVICE_PROPS, account_serde};
use wacore::store::error::{Result, StoreError};
use wacore::store::traits::DeviceStore;
use whatsapp_rust::{Jid, async_trait};

use super::{PgDeviceStore, db_error, wire};

/// A key pair as the SQLite store stores it: the private key, then the public key.
fn key_pair_bytes(key_pair: &KeyPair) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(key_pair.private_key.serialize());
    bytes.extend_from_slice(key_pair.public_key.public_key_bytes());
    bytes
}

fn key_pair_from(column: &str, bytes: &[u8]) -> Result<KeyPair> {
    if bytes.len() != 64 {
        return Err(StoreError::Validation(format!(
            "{column} has invalid length {} (expected 64)",
            bytes.len()
        )));
    }
    let private_key = PrivateKey::deserialize(&bytes[..32])
        .map_err(|e| StoreError::Serialization(Box::new(e)))?;
    let public_key = PublicKey::from_djb_public_key_bytes(&bytes[32..])
        .map_err(|e| StoreError::Serialization(Box::new(e)))?;
    Ok(KeyPair::new(public_key, private_key))
}

fn jid_text(jid: Option<&Jid>) -> String {
    jid.map(ToString::to_string).unwrap_or_default()
}

/// Binds a device's columns, in table order after `id`, after whatever is bound already.
fn bind_device<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    d: &Device,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    // Unsigned fields keep their bit pattern in signed columns, as in the SQLite store.
    query
        .bind(jid_text(d.lid.as_ref()))
        .bind(jid_text(d.pn.as_ref()))
        .bind(d.registration_id as i32)
        .bind(key_pair_bytes(&d.noise_key))
        .bind(key_pair_bytes(&d.identity_key))
        .bind(key_pair_bytes(&d.signed_pre_key))
        .bind(d.signed_pre_key_id as i32)
        .bind(d.signed_pre_key_signature.to_vec())
        .bind(d.adv_secret_key.to_vec())
        .bind(d.account.as_deref().map(account_serde::to_bytes))
        .bind(d.push_name.clone())
        .bind(d.app_version_primary as i32)
        .bind(d.app_version_secondary as i32)
        .bind(i64::from(d.app_version_tertiary))
        .bind(d.app_version_last_fetched_ms)
        .bind(d.edge_routing_info.clone())
        .bind(d.props_hash.clone())
        .bind(d.next_pre_key_id as i32)
        .bind(d.nct_salt.clone())
        .bind(d.server_has_prekeys)
        .bind(
            d.server_cert_chain
                .as_ref()
                .map(wire::encode_server_cert_chain),
        )
        .bind(d.login_counter)
        .bind(d.first_unupload_pre_key_id as i32)
        .bind(d.lid_migrated)
        .bind(d.last_signed_pre_key_rotation_ms)
        .bind(d.read_receipts_disabled)
}

fn device_from_row(device_id: i32, row: &PgRow) -> Result<Device> {
    fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
        row: &'r PgRow,
        column: &str,
    ) -> Result<T> {
        row.try_get(column).map_err(db_error)
    }
    let jid = |column: &str| -> Result<Option<Jid>> {
        let text: String = get(row, column)?;
        // An empty column means not paired yet; an unparsable one is treated the same, as
        // the SQLite store does.
        Ok(if text.is_empty() {
            None
        } else {
            text.parse().ok()
        })
    };
    let signature: Vec<u8> = get(row, "signed_pre_key_signature")?;
    let adv_secret_key: Vec<u8> = get(row, "adv_secret_key")?;
    let account: Option<Vec<u8>> = get(row, "account")?;
    let server_cert_chain: Option<Vec<u8>> = get(row, "server_cert_chain")?;
    let app_version_tertiary: i64 = get(row, "app_version_tertiary")?;
    Ok(Device {
        pn: jid("pn")?,
        lid: jid("lid")?,
        registration_id: get::<i32>(row, "registration_id")? as u32,
        noise_key: key_pair_from("noise_key", &get::<Vec<u8>>(row, "noise_key")?)?,
        identity_key: key_pair_from("identity_key", &get::<Vec<u8>>(row, "identity_key")?)?,
        signed_pre_key: key_pair_from("signed_pre_key", &get::<Vec<u8>>(row, "signed_pre_key")?)?,
        signed_pre_key_id: get::<i32>(row, "signed_pre_key_id")? as u32,
        signed_pre_key_signature: signature.as_slice().try_into().map_err(|_| {
            StoreError::Validation("signed_pre_key_signature has invalid length".into())
        })?,
        adv_secret_key: adv_secret_key
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Validation("adv_secret_key has invalid length".into()))?,
        account: account
            .map(|bytes| {
                account_serde::from_bytes(&bytes)
                    .map(Arc::new)
                    .map_err(|e| StoreError::Serialization(Box::new(e)))
            })
            .transpose()?,
        push_name: get(row, "push_name")?,
        app_version_primary: get::<i32>(row, "app_version_primary")? as u32,
        app_version_secondary: get::<i32>(row, "app_version_secondary")? as u32,
        app_version_tertiary: u32::try_from(app_version_tertiary).unwrap_or(0),
        app_version_last_fetched_ms: get(row, "app_version_last_fetched_ms")?,
        device_props: Arc::new(DEVICE_PROPS.clone()),
        client_profile: wacore::client_profile::ClientProfile::web(),
        edge_routing_info: get(row, "edge_routing_info")?,
        props_hash: get(row, "props_hash")?,
        next_pre_key_id: get::<i32>(row, "next_pre_key_id")? as u32,
        first_unupload_pre_key_id: get::<i32>(row, "first_unupload_pre_key_id")? as u32,
        server_has_prekeys: get(row, "server_has_prekeys")?,
        nct_salt: get(row, "nct_salt")?,
        nct_salt_sync_seen: false,
        // The chain only saves a handshake round trip: a bad one must not stop the device
        // from loading, the next connect does the full handshake and stores a fresh one.
        server_cert_chain: server_cert_chain.and_then(|bytes| {
            wire::decode_server_cert_chain(&bytes)
                .inspect_err(|e| {
                    tracing::warn!(
                        device = device_id,
                        len = bytes.len(),
                        error = %e,
                        "cached server certificate chain does not decode, dropping it"
                    );
                })
                .ok()
        }),
        login_counter: get(row, "login_counter")?,
        lid_migrated: get(row, "lid_migrated")?,
        last_signed_pre_key_rotation_ms: get(row, "last_signed_pre_key_rotation_ms")?,
        read_receipts_disabled: get(row, "read_receipts_disabled")?,
    })
}

const UPSERT_DEVICE: &str = "INSERT INTO wa_device (id, lid, pn, registration_id, noise_key,
         identity_key, signed_pre_key, signed_pre_key_id, signed_pre_key_signature,
         adv_secret_key, account, push_name, app_version_primary, app_version_secondary,
         app_version_tertiary, app_version_last_fetched_ms, edge_routing_info, props_hash,
         next_pre_key_id, nct_salt, server_has_prekeys, server_cert_chain, login_counter,
         first_unupload_pre_key_id, lid_migrated, last_signed_pre_key_rotation_ms,
         read_receipts_disabled)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
         $19, $20, $21, $22, $23, $24, $25, $26, $27)
     ON CONFLICT (id) DO UPDATE SET
         lid = EXCLUDED.lid, pn = EXCLUDED.pn, registration_id = EXCLUDED.registration_id,
         noise_key = EXCLUDED.noise_key, identity_key = EXCLUDED.identity_key,
         signed_pre_key = EXCLUDED.signed_pre_key,
         signed_pre_key_id = EXCLUDED.signed_pre_key_id,
         signed_pre_key_signature = EXCLUDED.signed_pre_key_signature,
         adv_secret_key = EXCLUDED.adv_secret_key, account = EXCLUDED.account,
         push_name = EXCLUDED.push_name, app_version_primary = EXCLUDED.app_version_primary,
         app_version_secondary = EXCLUDED.app_version_secondary,
         app_version_tertiary = EXCLUDED.app_version_tertiary,
         app_version_last_fetched_ms = EXCLUDED.app_version_last_fetched_ms,
         edge_routing_info = EXCLUDED.edge_routing_info, props_hash = EXCLUDED.props_hash,
         next_pre_key_id = EXCLUDED.next_pre_key_id, nct_salt = EXCLUDED.nct_salt,
         server_has_prekeys = EXCLUDED.server_has_prekeys,
         server_cert_chain = EXCLUDED.server_cert_chain,
         login_counter = EXCLUDED.login_counter,
         first_unupload_pre_key_id = EXCLUDED.first_unupload_pre_key_id,
         lid_migrated = EXCLUDED.lid_migrated,
         last_signed_pre_key_rotation_ms = EXCLUDED.last_signed_pre_key_rotation_ms,
         read_receipts_disabled = EXCLUDED.read_receipts_disabled";

const INSERT_DEVICE_WITH_ID: &str = "INSERT INTO wa_device (id, lid, pn, registration_id,
         noise_key, identity_key, signed_pre_key, signed_pre_key_id, signed_pre_key_signature,
         adv_secret_key, account, push_name, app_version_primary, app_version_secondary,
         app_version_tertiary, app_version_last_fetched_ms, edge_routing_info, props_hash,
         next_pre_key_id, nct_salt, server_has_prekeys, server_cert_chain, login_counter,
         first_unupload_pre_key_id, lid_migrated, last_signed_pre_key_rotation_ms,
         read_receipts_disabled)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
         $19, $20, $21, $22, $23, $24, $25, $26, $27)";

#[async_trait]
impl DeviceStore for PgDeviceStore {
    async fn save(&self, device: &Device) -> Result<()> {
        bind_device(sqlx::query(UPSERT_DEVICE).bind(self.device_id), device)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn load(&self) -> Result<Option<Device>> {
        let row = sqlx::query("SELECT * FROM wa_device WHERE id = $1")
            .bind(self.device_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|row| device_from_row(self.device_id, &row))
            .transpose()
    }

    async fn exists(&self) -> Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM wa_device WHERE id = $1)")
            .bind(self.device_id)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)
    }

    /// Creates this store's device row, with fresh keys, under its device id.
    ///
    /// whatsapp-rust calls this when [`exists`](DeviceStore::exists) says the row is
    /// missing and then loads and saves the row under the same id, so the id cannot be
    /// chosen here: the gateway hands out device numbers with its sessions.
    async fn create(&self) -> Result<i32> {
        bind_device(
            sqlx::query(INSERT_DEVICE_WITH_ID).bind(self.device_id),
            &Device::new(),
        )
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(self.device_id)
    }

    async fn resource_report(&self) -> wacore::stats::StorageResourceReport {
        // The data lives in the database server, not in this process.
        wacore::stats::StorageResourceReport {
            memory_bytes: Some(0),
            ..Default::default()
        }
    }
}
