//! Protocol bookkeeping (sender-key distribution, LID-PN mappings, retry base keys, device
//! lists, group metadata, trusted-contact tokens, sent messages for retries) and message
//! secrets.

use sqlx::Row;
use sqlx::postgres::PgRow;
use wacore::store::error::{Result, StoreError};
use wacore::store::traits::{
    DeviceInfo, DeviceListRecord, LidPnMappingEntry, MsgSecretEntry, MsgSecretStore, ProtocolStore,
    TcTokenEntry,
};
use whatsapp_rust::async_trait;

use super::{PgDeviceStore, as_i32, db_error, now_secs};

fn lid_mapping(row: PgRow) -> Result<LidPnMappingEntry> {
    Ok(LidPnMappingEntry {
        lid: row.try_get("lid").map_err(db_error)?,
        phone_number: row.try_get("phone_number").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
        learning_source: row.try_get("learning_source").map_err(db_error)?,
    })
}

fn devices_json(devices: &[DeviceInfo]) -> Result<String> {
    serde_json::to_string(devices).map_err(|e| StoreError::Serialization(Box::new(e)))
}

impl PgDeviceStore {
    async fn exec(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<u64> {
        Ok(query
            .execute(&self.pool)
            .await
            .map_err(db_error)?
            .rows_affected())
    }
}

#[async_trait]
impl ProtocolStore for PgDeviceStore {
    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        let rows = sqlx::query(
            "SELECT device_jid, has_key FROM wa_sender_key_devices
             WHERE group_jid = $1 AND device_id = $2",
        )
        .bind(group_jid)
        .bind(self.device_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .map(|row| {
                let jid: String = row.try_get(0).map_err(db_error)?;
                let has_key: i32 = row.try_get(1).map_err(db_error)?;
                Ok((jid, has_key != 0))
            })
            .collect()
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let (jids, has_keys): (Vec<&str>, Vec<i32>) = entries
            .iter()
            .map(|(jid, has_key)| (*jid, i32::from(*has_key)))
            .unzip();
        self.exec(
            sqlx::query(
                "INSERT INTO wa_sender_key_devices (group_jid, device_jid, has_key, device_id, updated_at)
                 SELECT DISTINCT ON (device_jid) $1, device_jid, has_key, $4, $5
                 FROM unnest($2::text[], $3::integer[]) WITH ORDINALITY AS t(device_jid, has_key, n)
                 ORDER BY device_jid, n DESC
                 ON CONFLICT (group_jid, device_jid, device_id) DO UPDATE
                 SET has_key = EXCLUDED.has_key, updated_at = EXCLUDED.updated_at",
            )
            .bind(group_jid)
            .bind(jids)
            .bind(has_keys)
            .bind(self.device_id)
            .bind(now_secs()),
        )
        .await?;
        Ok(())
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        self.exec(
            sqlx::query(
                "DELETE FROM wa_sender_key_devices WHERE group_jid = $1 AND device_id = $2",
            )
            .bind(group_jid)
            .bind(self.device_id),
        )
        .await?;
        Ok(())
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        self.exec(
            sqlx::query(
                "DELETE FROM wa_sender_key_devices
                 WHERE device_id = $1 AND device_jid = ANY($2::text[])",
            )
            .bind(self.device_id)
            .bind(device_jids),
        )
        .await?;
        Ok(())
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        self.exec(
            sqlx::query("DELETE FROM wa_sender_key_devices WHERE device_id = $1")
                .bind(self.device_id),
        )
        .await?;
        Ok(())
    }

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        sqlx::query(
            "SELECT lid, phone_number, created_at, learning_source, updated_at
             FROM wa_lid_pn_mapping WHERE lid = $1 AND device_id = $2",
        )
        .bind(lid)
        .bind(self.device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .map(lid_mapping)
        .transpose()
    }

    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        sqlx::query(
            "SELECT lid, phone_number, created_at, learning_source, updated_at
             FROM wa_lid_pn_mapping WHERE phone_number = $1 AND device_id = $2
             ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(phone)
        .bind(self.device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .map(lid_mapping)
        .transpose()
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        self.put_lid_mappings(std::slice::from_ref(entry)).await
    }

    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let lids: Vec<&str> = entries.iter().map(|e| e.lid.as_str()).collect();
        let phones: Vec<&str> = entries.iter().map(|e| e.phone_number.as_str()).collect();
        let created: Vec<i64> = entries.iter().map(|e| e.created_at).collect();
        let sources: Vec<&str> = entries.iter().map(|e| e.learning_source.as_str()).collect();
        let updated: Vec<i64> = entries.iter().map(|e| e.updated_at).collect();
        // A mapping keeps the time it was first learned.
        self.exec(
            sqlx::query(
                "INSERT INTO wa_lid_pn_mapping
                     (lid, phone_number, created_at, learning_source, updated_at, device_id)
                 SELECT DISTINCT ON (lid) lid, phone_number, created_at, learning_source, updated_at, $6
                 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[])
                     WITH ORDINALITY AS t(lid, phone_number, created_at, learning_source, updated_at, n)
                 ORDER BY lid, n DESC
                 ON CONFLICT (lid, device_id) DO UPDATE
                 SET phone_number = EXCLUDED.phone_number,
                     learning_source = EXCLUDED.learning_source,
                     updated_at = EXCLUDED.updated_at",
            )
            .bind(lids)
            .bind(phones)
            .bind(created)
            .bind(sources)
            .bind(updated)
            .bind(self.device_id),
        )
        .await?;
        Ok(())
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        sqlx::query(
            "SELECT lid, phone_number, created_at, learning_source, updated_at
             FROM wa_lid_pn_mapping WHERE device_id = $1",
        )
        .bind(self.device_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(lid_mapping)
        .collect()
    }

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO wa_base_keys (address, message_id, base_key, device_id, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (address, message_id, device_id) DO UPDATE
                 SET base_key = EXCLUDED.base_key",
            )
            .bind(address)
            .bind(message_id)
            .bind(base_key)
            .bind(self.device_id)
            .bind(as_i32(now_secs())),
        )
        .await?;
        Ok(())
    }

    async fn has_same_base_key(
        &self,
        address: &str,
        message_id: &str,
        current_base_key: &[u8],
    ) -> Result<bool> {
        let stored: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT base_key FROM wa_base_keys
             WHERE address = $1 AND message_id = $2 AND device_id = $3",
        )
        .bind(address)
        .bind(message_id)
        .bind(self.device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(stored.as_deref() == Some(current_base_key))
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        self.exec(
            sqlx::query(
                "DELETE FROM wa_base_keys WHERE address = $1 AND message_id = $2 AND device_id = $3",
            )
            .bind(address)
            .bind(message_id)
            .bind(self.device_id),
        )
        .await?;
        Ok(())
    }

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.update_device_lists(vec![record]).await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut users = Vec::with_capacity(records.len());
        let mut jsons = Vec::with_capacity(records.len());
        let mut timestamps = Vec::with_capacity(records.len());
        let mut phashes = Vec::with_capacity(records.len());
        let mut raw_ids = Vec::with_capacity(records.len());
        for r in &records {
            users.push(r.user.as_str());
            jsons.push(devices_json(&r.devices)?);
            timestamps.push(as_i32(r.timestamp));
            phashes.push(r.phash.as_deref());
            // The SQLite store keeps raw_id's bit pattern in an INTEGER column.
            raw_ids.push(r.raw_id.map(|v| v as i32));
        }
        self.exec(
            sqlx::query(
                "INSERT INTO wa_device_registry
                     (user_id, devices_json, timestamp, phash, device_id, updated_at, raw_id)
                 SELECT DISTINCT ON (user_id) user_id, devices_json, timestamp, phash, $6, $7, raw_id
                 FROM unnest($1::text[], $2::text[], $3::integer[], $4::text[], $5::integer[])
                     WITH ORDINALITY AS t(user_id, devices_json, timestamp, phash, raw_id, n)
                 ORDER BY user_id, n DESC
                 ON CONFLICT (user_id, device_id) DO UPDATE
                 SET devices_json = EXCLUDED.devices_json,
                     timestamp = EXCLUDED.timestamp,
                     phash = EXCLUDED.phash,
                     updated_at = EXCLUDED.updated_at,
                     raw_id = EXCLUDED.raw_id",
            )
            .bind(users)
            .bind(jsons)
            .bind(timestamps)
            .bind(phashes)
            .bind(raw_ids)
            .bind(self.device_id)
            .bind(as_i32(now_secs())),
        )
        .await?;
        Ok(())
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        let Some(row) = sqlx::query(
            "SELECT user_id, devices_json, timestamp, phash, raw_id FROM wa_device_registry
             WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user)
        .bind(self.device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        else {
            return Ok(None);
        };
        let json: String = row.try_get("devices_json").map_err(db_error)?;
        let devices: Vec<DeviceInfo> =
            serde_json::from_str(&json).map_err(|e| StoreError::Serialization(Box::new(e)))?;
        let timestamp: i32 = row.try_get("timestamp").map_err(db_error)?;
        let raw_id: Option<i32> = row.try_get("raw_id").map_err(db_error)?;
        Ok(Some(DeviceListRecord {
            user: row.try_get("user_id").map_err(db_error)?,
            devices,
            timestamp: i64::from(timestamp),
            phash: row.try_get("phash").map_err(db_error)?,
            raw_id: raw_id.map(|v| v as u32),
        }))
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        self.exec(
            sqlx::query("DELETE FROM wa_device_registry WHERE user_id = $1 AND device_id = $2")
                .bind(user)
                .bind(self.device_id),
        )
        .await?;
        Ok(())
    }

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar(
            "SELECT info FROM wa_group_metadata WHERE group_jid = $1 AND device_id = $2",
        )
        .bind(group_jid)
        .bind(self.device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO wa_group_metadata (group_jid, info, device_id, updated_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (group_jid, device_id) DO UPDATE
                 SET info = EXCLUDED.info, updated_at = EXCLUDED.updated_at",
            )
            .bind(group_jid)
            .bind(blob)
            .bind(self.device_id)
            .bind(now_secs()),
        )
        .await?;
        Ok(())
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        self.exec(
            sqlx::query("DELETE FROM wa_group_metadata WHERE group_jid = $1 AND device_id = $2")
                .bind(group_jid)
                .bind(self.device_id),
        )
        .await?;
        Ok(())
    }

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        let Some(row) = sqlx::query(
            "SELECT token, token_timestamp, sender_timestamp FROM wa_tc_tokens
             WHERE jid = $1 AND device_id = $2",
        )
        .bind(jid)
        .bind(self.device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        else {
            return Ok(None);
        };
        Ok(Some(TcTokenEntry {
            token: row.try_get(0).map_err(db_error)?,
            token_timestamp: row.try_get(1).map_err(db_error)?,
            sender_timestamp: row.try_get(2).map_err(db_error)?,
        }))
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        self.exec(
            sqlx::query(
                "INSERT INTO wa_tc_tokens
                     (jid, token, token_timestamp, sender_timestamp, device_id, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (jid, device_id) DO UPDATE
                 SET token = EXCLUDED.token,
                     token_timestamp = EXCLUDED.token_timestamp,
                     sender_timestamp = EXCLUDED.sender_timestamp,
                     updated_at = EXCLUDED.updated_at",
            )
            .bind(jid)
            .bind(&entry.token)
            .bind(entry.token_timestamp)
            .bind(entry.sender_timestamp)
            .bind(self.device_id)
            .bind(now_secs()),
        )
        .await?;
        Ok(())
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        self.exec(
            sqlx::query("DELETE FROM wa_tc_tokens WHERE jid = $1 AND device_id = $2")
                .bind(jid)
                .bind(self.device_id),
        )
        .await?;
        Ok(())
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT jid FROM wa_tc_tokens WHERE device_id = $1")
            .bind(self.device_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        // Only a row with neither a live received token nor a live sender bucket goes.
        let deleted = self
            .exec(
                sqlx::query(
                    "DELETE FROM wa_tc_tokens
                     WHERE device_id = $1
                       AND (token = ''::bytea OR token_timestamp < $2)
                       AND (sender_timestamp IS NULL OR sender_timestamp < $3)",
                )
                .bind(self.device_id)
                .bind(token_cutoff)
                .bind(sender_cutoff),
            )
            .await?;
        Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
    }

    async fn store_received_tc_token(
        &self,
        jid: &str,
        token: &[u8],
        token_timestamp: i64,
    ) -> Result<()> {
        // One statement, so the newer-wins check and the write cannot be split by a
        // concurrent writer; the sender bucket is left as it is.
        self.exec(
            sqlx::query(
                "INSERT INTO wa_tc_tokens
                     (jid, token, token_timestamp, sender_timestamp, device_id, updated_at)
                 VALUES ($1, $2, $3, NULL, $4, $5)
                 ON CONFLICT (jid, device_id) DO UPDATE
                 SET token = EXCLUDED.token,
                     token_timestamp = EXCLUDED.token_timestamp,
                     updated_at = EXCLUDED.updated_at
                 WHERE wa_tc_tokens.token = ''::bytea
                    OR EXCLUDED.token_timestamp >= wa_tc_tokens.token_timestamp",
            )
            .bind(jid)
            .bind(token)
            .bind(token_timestamp)
            .bind(self.device_id)
            .bind(now_secs()),
        )
        .await?;
        Ok(())
    }

    async fn touch_tc_token_sender_timestamp(
        &self,
        jid: &str,
        sender_timestamp: i64,
    ) -> Result<()> {
        // A placeholder without token bytes when absent; otherwise only the sender bucket
        // moves, and only forward (GREATEST skips a NULL).
        self.exec(
            sqlx::query(
                "INSERT INTO wa_tc_tokens
                     (jid, token, token_timestamp, sender_timestamp, device_id, updated_at)
                 VALUES ($1, ''::bytea, $2, $2, $3, $4)
                 ON CONFLICT (jid, device_id) DO UPDATE
                 SET sender_timestamp = GREATEST(wa_tc_tokens.sender_timestamp, EXCLUDED.sender_timestamp),
                     updated_at = EXCLUDED.updated_at",
            )
            .bind(jid)
            .bind(sender_timestamp)
            .bind(self.device_id)
            .bind(now_secs()),
        )
        .await?;
        Ok(())
    }

    async fn store_sent_message(
        &self,
        chat_jid: &str,
        message_id: &str,
        payload: &[u8],
    ) -> Result<()> {
        // A resend replaces the row whole, its age included.
        self.exec(
            sqlx::query(
                "INSERT INTO wa_sent_messages (chat_jid, message_id, payload, device_id, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (chat_jid, message_id, device_id) DO UPDATE
                 SET payload = EXCLUDED.payload, created_at = EXCLUDED.created_at",
            )
            .bind(chat_jid)
            .bind(message_id)
            .bind(payload)
            .bind(self.device_id)
            .bind(now_secs()),
        )
        .await?;
        Ok(())
    }

    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        // DELETE ... RETURNING reads and removes in one step: two concurrent retries cannot
        // both get the payload.
        sqlx::query_scalar(
            "DELETE FROM wa_sent_messages
             WHERE chat_jid = $1 AND message_id = $2 AND device_id = $3
             RETURNING payload",
        )
        .bind(chat_jid)
        .bind(message_id)
        .bind(self.device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        let deleted = self
            .exec(
                sqlx::query(
                    "DELETE FROM wa_sent_messages WHERE device_id = $1 AND created_at < $2",
                )
                .bind(self.device_id)
                .bind(cutoff_timestamp),
            )
            .await?;
        Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
    }
}

#[async_trait]
impl MsgSecretStore for PgDeviceStore {
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        if entries.is_empty() {
            return Ok(0);
        }
        let chats: Vec<&str> = entries.iter().map(|e| &*e.chat).collect();
        let senders: Vec<&str> = entries.iter().map(|e| &*e.sender).collect();
        let ids: Vec<&str> = entries.iter().map(|e| &*e.msg_id).collect();
        let secrets: Vec<&[u8]> = entries.iter().map(|e| &e.secret[..]).collect();
        let expires: Vec<i64> = entries.iter().map(|e| e.expires_at).collect();
        let message_ts: Vec<i64> = entries.iter().map(|e| e.message_ts).collect();
        // Entries for the same message, within the batch and against the stored row, merge
        // as `merge_msg_secret_expiry` and `merge_msg_secret_message_ts` do: a deadline of
        // 0 (never) wins, otherwise the later one; the later parent time wins. The secret
        // itself is the last one written.
        let stored = self
            .exec(
                sqlx::query(
                    "INSERT INTO wa_msg_secrets
                         (chat, sender, msg_id, secret, device_id, created_at, expires_at, message_ts)
                     SELECT chat, sender, msg_id, (array_agg(secret ORDER BY n DESC))[1], $7, $8,
                            CASE WHEN bool_or(expires_at = 0) THEN 0 ELSE max(expires_at) END,
                            max(message_ts)
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bigint[], $6::bigint[])
                         WITH ORDINALITY AS t(chat, sender, msg_id, secret, expires_at, message_ts, n)
                     GROUP BY chat, sender, msg_id
                     ON CONFLICT (chat, sender, msg_id, device_id) DO UPDATE
                     SET secret = EXCLUDED.secret,
                         created_at = EXCLUDED.created_at,
                         expires_at = CASE
                             WHEN wa_msg_secrets.expires_at = 0 OR EXCLUDED.expires_at = 0 THEN 0
                             ELSE GREATEST(wa_msg_secrets.expires_at, EXCLUDED.expires_at)
                         END,
                         message_ts = GREATEST(wa_msg_secrets.message_ts, EXCLUDED.message_ts)",
                )
                .bind(chats)
                .bind(senders)
                .bind(ids)
                .bind(secrets)
                .bind(expires)
                .bind(message_ts)
                .bind(self.device_id)
                .bind(now_secs()),
            )
            .await?;
        Ok(usize::try_from(stored).unwrap_or(usize::MAX))
    }

    async fn get_msg_secret(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_msg_secret_with_ts(chat, sender, msg_id)
            .await?
            .map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(
        &self,
        chat: &str,
        sender: &str,
        msg_id: &str,
    ) -> Result<Option<(Vec<u8>, i64)>> {
        let Some(row) = sqlx::query(
            "SELECT secret, message_ts FROM wa_msg_secrets
             WHERE chat = $1 AND sender = $2 AND msg_id = $3 AND device_id = $4",
        )
        .bind(chat)
        .bind(sender)
        .bind(msg_id)
        .bind(self.device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        else {
            return Ok(None);
        };
        Ok(Some((
            row.try_get(0).map_err(db_error)?,
            row.try_get(1).map_err(db_error)?,
        )))
    }

    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        let deleted = self
            .exec(
                sqlx::query(
                    "DELETE FROM wa_msg_secrets
                     WHERE device_id = $1 AND expires_at <> 0 AND expires_at <= $2",
                )
                .bind(self.device_id)
                .bind(cutoff_timestamp),
            )
            .await?;
        Ok(u32::try_from(deleted).unwrap_or(u32::MAX))
    }
}
