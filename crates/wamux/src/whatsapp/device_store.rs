//! The device store whatsapp-rust keeps its keys and sessions in, with its pending-inbound
//! buffer moved into our own database.
//!
//! whatsapp-rust writes a decrypted message to that buffer before it saves the Signal state
//! that decrypted it, calls our durability hook, then deletes the row: two write transactions
//! per message on the device store, each on a blocking thread and on the connection of one of
//! the devices sharing `whatsapp.db`, which made up much of the gateway's CPU at thousands of
//! messages a second. Here those rows go to `pending_inbound` in `wamux.db`, written set-wise
//! for every session at once inside the store's group commit (see [`Pending`]); everything
//! else is passed to the device's store unchanged. Rows an earlier version left in the
//! device store are still found (and deleted) there.

use std::sync::Arc;

use crate::store::pending::Row;
use crate::store::{Batcher, Store, StoreError};
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::error::{Result, StoreError as WaStoreError};
use wacore::store::traits::*;
use whatsapp_rust::async_trait;
use whatsapp_rust::bytes::Bytes;

/// One device's store (whatsapp-rust's SQLite one, or ours on PostgreSQL), with the
/// pending-inbound buffer in our database.
pub(super) struct DeviceBackend {
    inner: Arc<dyn Backend>,
    device_id: i64,
    pending: Pending,
    /// Whether `inner` may still hold pending-inbound rows of an earlier version (only
    /// whatsapp-rust's SQLite store ever kept them).
    legacy_pending: bool,
}

impl DeviceBackend {
    pub fn new(
        inner: Arc<dyn Backend>,
        device_id: i64,
        pending: Pending,
        legacy_pending: bool,
    ) -> Self {
        Self {
            inner,
            device_id,
            pending,
            legacy_pending,
        }
    }

    /// This device's row: to write with `message`, to delete without.
    fn row(&self, chat: &str, sender: &str, id: &str, message: Option<&[u8]>) -> Row {
        Row {
            device: self.device_id,
            chat: chat.to_owned(),
            sender: sender.to_owned(),
            id: id.to_owned(),
            message: message.map(<[u8]>::to_vec),
        }
    }

    async fn pending_store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        self.pending_store_pending_inbound_batch(&[PendingInboundRow {
            chat,
            sender,
            id,
            message,
        }])
        .await
    }

    async fn pending_store_pending_inbound_batch(
        &self,
        rows: &[PendingInboundRow<'_>],
    ) -> Result<()> {
        let rows = rows
            .iter()
            .map(|r| self.row(r.chat, r.sender, r.id, Some(r.message)))
            .collect();
        self.pending.send(rows).await
    }

    async fn pending_get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        // Deletes still queued must not leave a row to be found.
        self.pending.settled().await?;
        let ours =
            crate::store::pending::get(&self.pending.store, self.device_id, chat, sender, id)
                .await
                .map_err(wa_error)?;
        match ours {
            Some(message) => Ok(Some(message)),
            // Buffered by an earlier version, in the device store.
            None if self.legacy_pending => self.inner.get_pending_inbound(chat, sender, id).await,
            None => Ok(None),
        }
    }

    async fn pending_delete_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<()> {
        self.pending_delete_pending_inbound_batch(&[PendingInboundKey { chat, sender, id }])
            .await?;
        // This single delete follows a replay, which may have read the row from the device
        // store; the batched one after every hook call only ever concerns ours.
        if self.legacy_pending {
            self.inner.delete_pending_inbound(chat, sender, id).await?;
        }
        Ok(())
    }

    async fn pending_delete_pending_inbound_batch(
        &self,
        keys: &[PendingInboundKey<'_>],
    ) -> Result<()> {
        let keys = keys
            .iter()
            .map(|k| self.row(k.chat, k.sender, k.id, None))
            .collect();
        // whatsapp-rust deletes the rows after our hook has committed their messages, and
        // acks them only after this returns: waiting for this commit too would add a third
        // commit to every message's path. A row whose delete is lost is replayed as a
        // duplicate, which the hook drops.
        self.pending.enqueue(keys)
    }

    async fn pending_delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        let device = self.device_id;
        let ours =
            crate::store::pending::delete_expired(&self.pending.store, device, cutoff_timestamp)
                .await
                .map_err(wa_error)?;
        let theirs = if self.legacy_pending {
            self.inner
                .delete_expired_pending_inbound(cutoff_timestamp)
                .await?
        } else {
            0
        };
        Ok(u32::try_from(ours)
            .unwrap_or(u32::MAX)
            .saturating_add(theirs))
    }
}

fn wa_error(e: StoreError) -> WaStoreError {
    WaStoreError::Database(Box::new(e))
}

/// Writes the pending-inbound rows of every device: what is asked while a write runs goes
/// into the next one, a statement per run of writes or deletes, inside the store's group
/// commit. A caller returns once its rows are committed, except for the deletes after each
/// hook call, which are queued (see [`Pending::enqueue`]).
#[derive(Clone)]
pub(super) struct Pending {
    store: Store,
    batcher: Batcher<Vec<Row>, ()>,
}

impl Pending {
    pub fn start(store: Store) -> Self {
        Self {
            batcher: Batcher::start(store.clone(), |conn, requests| {
                Box::pin(crate::store::pending::write(conn, requests))
            }),
            store,
        }
    }

    async fn send(&self, rows: Vec<Row>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.batcher.submit(rows).await.map_err(wa_error)
    }

    /// Queues rows without waiting for their commit.
    fn enqueue(&self, rows: Vec<Row>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.batcher.enqueue(rows).map_err(wa_error)
    }

    /// Returns once everything queued before it is committed.
    async fn settled(&self) -> Result<()> {
        self.batcher.submit(Vec::new()).await.map_err(wa_error)
    }
}

// Everything else goes to the device's SqliteStore as is.

#[async_trait]
impl SignalStore for DeviceBackend {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.inner.put_identity(address, key).await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        self.inner.put_identities_batch(identities).await
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        self.inner.load_identity(address).await
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.inner.delete_identity(address).await
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        self.inner.get_session(address).await
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.inner.put_session(address, session).await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.inner.put_sessions_batch(sessions).await
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.inner.delete_session(address).await
    }

    async fn has_session(&self, address: &str) -> Result<bool> {
        self.inner.has_session(address).await
    }

    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        self.inner.has_signal_state_for_user(user).await
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        self.inner.store_prekey(id, record, uploaded).await
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        self.inner.store_prekeys_batch(keys, uploaded).await
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        self.inner.load_prekey(id).await
    }

    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        self.inner.load_prekeys_batch(ids).await
    }

    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        self.inner.mark_prekeys_uploaded(ids).await
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        self.inner.remove_prekey(id).await
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        self.inner.get_max_prekey_id().await
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        self.inner.store_signed_prekey(id, record).await
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        self.inner.load_signed_prekey(id).await
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        self.inner.load_all_signed_prekeys().await
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        self.inner.remove_signed_prekey(id).await
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.inner.put_sender_key(address, record).await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.inner.put_sender_keys_batch(sender_keys).await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get_sender_key(address).await
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.inner.delete_sender_key(address).await
    }
}

#[async_trait]
impl AppSyncStore for DeviceBackend {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        self.inner.get_sync_key(key_id).await
    }

    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        self.inner.set_sync_key(key_id, key).await
    }

    async fn get_version(&self, name: &str) -> Result<HashState> {
        self.inner.get_version(name).await
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        self.inner.set_version(name, state).await
    }

    async fn put_mutation_macs(
        &self,
        name: &str,
        version: u64,
        mutations: &[AppStateMutationMAC],
    ) -> Result<()> {
        self.inner.put_mutation_macs(name, version, mutations).await
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get_mutation_mac(name, index_mac).await
    }

    async fn get_mutation_macs(
        &self,
        name: &str,
        index_macs: &[[u8; 32]],
    ) -> Result<std::collections::HashMap<[u8; 32], Vec<u8>>> {
        self.inner.get_mutation_macs(name, index_macs).await
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        self.inner.delete_mutation_macs(name, index_macs).await
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        self.inner.clear_mutation_macs(name).await
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        self.inner.get_latest_sync_key_id().await
    }
}

#[async_trait]
impl ProtocolStore for DeviceBackend {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        self.inner.get_sender_key_devices(group_jid).await
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        self.inner.set_sender_key_status(group_jid, entries).await
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        self.inner.clear_sender_key_devices(group_jid).await
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        self.inner.delete_sender_key_device_rows(device_jids).await
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        self.inner.clear_all_sender_key_devices().await
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        self.inner.get_lid_mapping(lid).await
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        self.inner.get_pn_mapping(phone).await
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        self.inner.put_lid_mapping(entry).await
    }

    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> Result<()> {
        self.inner.put_lid_mappings(entries).await
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        self.inner.get_all_lid_mappings().await
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        self.inner
            .save_base_key(address, message_id, base_key)
            .await
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        self.inner
            .has_same_base_key(address, message_id, current_base_key)
            .await
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        self.inner.delete_base_key(address, message_id).await
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.inner.update_device_list(record).await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        self.inner.update_device_lists(records).await
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        self.inner.get_devices(user).await
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.inner.delete_devices(user).await
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get_group_metadata(group_jid).await
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.inner.put_group_metadata(group_jid, blob).await
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.inner.delete_group_metadata(group_jid).await
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        self.inner.get_tc_token(jid).await
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        self.inner.put_tc_token(jid, entry).await
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        self.inner.delete_tc_token(jid).await
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        self.inner.get_all_tc_token_jids().await
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        self.inner
            .delete_expired_tc_tokens(token_cutoff, sender_cutoff)
            .await
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        self.inner
            .touch_tc_token_sender_timestamp(jid, sender_timestamp)
            .await
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        self.inner
            .store_received_tc_token(jid, token, token_timestamp)
            .await
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        self.inner
            .store_sent_message(chat_jid, message_id, payload)
            .await
    }

    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        self.inner.take_sent_message(chat_jid, message_id).await
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.inner
            .delete_expired_sent_messages(cutoff_timestamp)
            .await
    }

    async fn store_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
        message: &[u8],
    ) -> Result<()> {
        self.pending_store_pending_inbound(chat, sender, id, message)
            .await
    }

    async fn get_pending_inbound(
        &self,
        chat: &str,
        sender: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.pending_get_pending_inbound(chat, sender, id).await
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        self.pending_delete_pending_inbound(chat, sender, id).await
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.pending_delete_expired_pending_inbound(cutoff_timestamp)
            .await
    }

    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> Result<()> {
        self.pending_store_pending_inbound_batch(rows).await
    }

    async fn delete_pending_inbound_batch(&self, keys: &[PendingInboundKey<'_>]) -> Result<()> {
        self.pending_delete_pending_inbound_batch(keys).await
    }
}

#[async_trait]
impl MsgSecretStore for DeviceBackend {
    async fn put_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
        secret: &[u8; wacore::reporting_token::MESSAGE_SECRET_SIZE],
    ) -> Result<()> {
        self.inner
            .put_msg_secret(chat, sender, msg_id, secret)
            .await
    }

    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        self.inner.put_msg_secrets(entries).await
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        self.inner.get_msg_secret(chat, sender, msg_id).await
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        self.inner
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        self.inner
            .delete_expired_msg_secrets(cutoff_timestamp)
            .await
    }
}

#[async_trait]
impl DeviceStore for DeviceBackend {
    async fn save(&self, device: &wacore::store::Device) -> Result<()> {
        self.inner.save(device).await
    }

    async fn load(&self) -> Result<Option<wacore::store::Device>> {
        self.inner.load().await
    }

    async fn exists(&self) -> Result<bool> {
        self.inner.exists().await
    }

    async fn create(&self) -> Result<i32> {
        self.inner.create().await
    }

    async fn snapshot_db(&self, name: &str, extra_content: Option<&[u8]>) -> Result<()> {
        self.inner.snapshot_db(name, extra_content).await
    }

    async fn resource_report(&self) -> wacore::stats::StorageResourceReport {
        self.inner.resource_report().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use whatsapp_rust_sqlite_storage::SqliteStore;

    async fn backends(dir: &std::path::Path) -> (DeviceBackend, DeviceBackend, SqliteStore) {
        let store = Store::open(&dir.join("wamux.db")).await.unwrap();
        let pending = Pending::start(store);
        let path = dir.join("whatsapp.db");
        let path = path.to_str().unwrap();
        let one = SqliteStore::new_for_device(path, 1).await.unwrap();
        let two = SqliteStore::new_for_device(path, 2).await.unwrap();
        (
            DeviceBackend::new(Arc::new(one.clone()), 1, pending.clone(), true),
            DeviceBackend::new(Arc::new(two), 2, pending, true),
            one,
        )
    }

    /// Deletes a row the way whatsapp-rust does after each hook call (queued, not waited for).
    async fn delete(backend: &DeviceBackend, id: &str) {
        backend
            .delete_pending_inbound_batch(&[PendingInboundKey {
                chat: "c@s.whatsapp.net",
                sender: "s@s.whatsapp.net",
                id,
            }])
            .await
            .unwrap();
    }

    async fn get(backend: &DeviceBackend, id: &str) -> Option<Vec<u8>> {
        backend
            .get_pending_inbound("c@s.whatsapp.net", "s@s.whatsapp.net", id)
            .await
            .unwrap()
    }

    /// Rows written through the backend come back byte for byte, per device, until deleted;
    /// a row an earlier version left in the device store is still found and deleted there.
    #[tokio::test]
    async fn pending_rows_round_trip_per_device_and_old_rows_are_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two, inner) = backends(dir.path()).await;
        let bytes: Vec<u8> = (0..=255u8).collect();
        one.store_pending_inbound_batch(&[
            PendingInboundRow {
                chat: "c@s.whatsapp.net",
                sender: "s@s.whatsapp.net",
                id: "A",
                message: &bytes,
            },
            PendingInboundRow {
                chat: "c@s.whatsapp.net",
                sender: "s@s.whatsapp.net",
                id: "B",
                message: b"",
            },
        ])
        .await
        .unwrap();
        assert_eq!(get(&one, "A").await, Some(bytes.clone()));
        assert_eq!(get(&one, "B").await, Some(Vec::new()));
        assert_eq!(get(&two, "A").await, None, "another device's row");

        delete(&one, "A").await;
        assert_eq!(get(&one, "A").await, None);
        assert_eq!(get(&one, "B").await, Some(Vec::new()));

        // A queued delete followed by a write of the same row (a redelivery): the write
        // wins, whether or not both land in one batch.
        delete(&one, "B").await;
        one.store_pending_inbound_batch(&[PendingInboundRow {
            chat: "c@s.whatsapp.net",
            sender: "s@s.whatsapp.net",
            id: "B",
            message: b"again",
        }])
        .await
        .unwrap();
        assert_eq!(get(&one, "B").await, Some(b"again".to_vec()));

        inner
            .store_pending_inbound("c@s.whatsapp.net", "s@s.whatsapp.net", "OLD", b"old")
            .await
            .unwrap();
        assert_eq!(get(&one, "OLD").await, Some(b"old".to_vec()));
        one.delete_pending_inbound("c@s.whatsapp.net", "s@s.whatsapp.net", "OLD")
            .await
            .unwrap();
        assert_eq!(get(&one, "OLD").await, None);

        // Expiry sweeps ours too.
        let removed = one
            .delete_expired_pending_inbound(crate::store::now() + 10)
            .await
            .unwrap();
        assert_eq!(removed, 1);
        assert_eq!(get(&one, "B").await, None);
    }
}
