//! whatsapp-rust's device store on PostgreSQL: [`PgDeviceStore`] implements its storage
//! traits (Signal keys and sessions, app-state sync, protocol bookkeeping, message secrets,
//! the device row itself) for one device, on a pool shared by every device.
//!
//! The schema (`migrations/postgres/0002_device_store.sql`) mirrors the SQLite store's final
//! schema table for table and column for column, with a `wa_` prefix, and every value is
//! encoded the way the SQLite store encodes it, so rows can be copied between the two
//! backends without decoding them. Every row is keyed by the device id, as there.
//!
//! Writes of many rows go to the server as one statement over arrays (`unnest`), so a batch
//! costs one round trip whatever its size. A batch may name the same key twice; the later
//! entry wins, as it would when the entries are written one after the other.
//!
//! The pending-inbound buffer is not stored here: the gateway keeps it in its own table, so
//! those methods keep their trait defaults.

mod app_sync;
mod device_row;
mod protocol;
mod signal;
mod wire;

use sqlx::PgPool;
use wacore::store::error::StoreError;

/// The tables that hold a device's rows, by their SQLite names (the PostgreSQL ones carry a
/// `wa_` prefix), parents first: copy them in this order and delete in the reverse one.
pub const DEVICE_TABLES: &[&str] = &[
    "device",
    "identities",
    "sessions",
    "prekeys",
    "signed_prekeys",
    "sender_keys",
    "app_state_keys",
    "app_state_versions",
    "app_state_mutation_macs",
    "lid_pn_mapping",
    "base_keys",
    "device_registry",
    "sender_key_devices",
    "tc_tokens",
    "sent_messages",
    "msg_secrets",
    "group_metadata",
];

/// The PostgreSQL table holding the rows of the SQLite table `table`.
pub fn pg_table(table: &str) -> String {
    format!("wa_{table}")
}

/// whatsapp-rust's storage backend for one device, on a pool shared by all devices.
#[derive(Clone, Debug)]
pub struct PgDeviceStore {
    pool: PgPool,
    device_id: i32,
}

impl PgDeviceStore {
    pub fn new(pool: PgPool, device_id: i32) -> Self {
        Self { pool, device_id }
    }
}

/// Deletes every row of device `device_id`, in all the device store's tables, atomically.
pub async fn delete_device(pool: &PgPool, device_id: i32) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for table in DEVICE_TABLES.iter().rev() {
        // The device row's own key is its id; every other table names the device.
        let key = if *table == "device" {
            "id"
        } else {
            "device_id"
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {} WHERE {key} = $1",
            pg_table(table)
        )))
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// whatsapp-rust's error for a failed query: losing the server is a connection error, the
/// rest are database errors.
fn db_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => StoreError::Connection(Box::new(e)),
        e => StoreError::Database(Box::new(e)),
    }
}

/// Unix seconds, as the SQLite store stamps its `created_at` / `updated_at` columns.
fn now_secs() -> i64 {
    wacore::time::now_secs()
}

/// The columns the SQLite store declares INTEGER hold 32-bit values, stored as the SQLite
/// store stores them (truncated, not rejected).
fn as_i32(v: i64) -> i32 {
    v as i32
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use sqlx::{AssertSqlSafe, Row};
    use wacore::appstate::hash::HashState;
    use wacore::appstate::processor::AppStateMutationMAC;
    use wacore::store::Device;
    use wacore::store::device::{CachedNoiseCert, CachedServerCertChain};
    use wacore::store::traits::*;
    use whatsapp_rust::bytes::Bytes;
    use whatsapp_rust_sqlite_storage::SqliteStore;

    use super::*;

    const MIGRATION: &str = include_str!("../../../migrations/postgres/0002_device_store.sql");

    /// A schema of its own on the test server, with the migration applied.
    struct TestDb {
        admin: PgPool,
        pool: PgPool,
        schema: String,
    }

    impl TestDb {
        async fn new() -> Self {
            let url = std::env::var("WAMUX_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let schema = format!("wamux_t_{:016x}", rand::random::<u64>());
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
                .expect("connect to the test server");
            sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&admin)
                .await
                .unwrap();
            let options: PgConnectOptions = url.parse().unwrap();
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .connect_with(options.options([("search_path", schema.as_str())]))
                .await
                .unwrap();
            sqlx::raw_sql(MIGRATION).execute(&pool).await.unwrap();
            Self {
                admin,
                pool,
                schema,
            }
        }

        /// A store for `device_id`, its device row created.
        async fn store(&self, device_id: i32) -> PgDeviceStore {
            let store = PgDeviceStore::new(self.pool.clone(), device_id);
            store.create().await.unwrap();
            store
        }

        async fn count(&self, table: &str, device_id: i32) -> i64 {
            let key = if table == "device" { "id" } else { "device_id" };
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT count(*) FROM {} WHERE {key} = $1",
                pg_table(table)
            )))
            .bind(device_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
        }

        async fn drop(self) {
            self.pool.close().await;
            sqlx::query(AssertSqlSafe(format!(
                "DROP SCHEMA {} CASCADE",
                self.schema
            )))
            .execute(&self.admin)
            .await
            .unwrap();
        }
    }

    fn arc(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    fn cert_chain() -> CachedServerCertChain {
        CachedServerCertChain {
            intermediate: CachedNoiseCert {
                key: [3; 32],
                not_before: 1_700_000_000,
                not_after: 1_900_000_000,
            },
            leaf: CachedNoiseCert {
                key: [4; 32],
                not_before: 1_700_000_100,
                not_after: 1_800_000_000,
            },
        }
    }

    fn paired_device() -> Device {
        let mut d = Device::new();
        d.pn = Some("5511987650001:7@s.whatsapp.net".parse().unwrap());
        d.lid = Some("100000012345678:7@lid".parse().unwrap());
        d.push_name = "Tester".into();
        d.account = Some(Arc::new(
            whatsapp_rust::waproto::whatsapp::ADVSignedDeviceIdentity {
                details: Some(vec![1, 2, 3]),
                account_signature_key: Some(vec![4; 32]),
                account_signature: Some(vec![5; 64]),
                device_signature: Some(vec![6; 64]),
            },
        ));
        d.app_version_primary = 2;
        d.app_version_secondary = 3000;
        d.app_version_tertiary = 1_020_304_050;
        d.app_version_last_fetched_ms = 1_700_000_000_123;
        d.edge_routing_info = Some(vec![9, 9]);
        d.props_hash = Some("abc".into());
        d.next_pre_key_id = 812;
        d.first_unupload_pre_key_id = 800;
        d.server_has_prekeys = true;
        d.nct_salt = Some(vec![7; 16]);
        d.server_cert_chain = Some(cert_chain());
        d.login_counter = 5;
        d.lid_migrated = true;
        d.last_signed_pre_key_rotation_ms = 1_700_000_000_999;
        d.read_receipts_disabled = true;
        d
    }

    /// The persisted fields of a device, comparable.
    fn persisted(d: &Device) -> impl PartialEq + std::fmt::Debug {
        (
            (
                d.pn.as_ref().map(ToString::to_string),
                d.lid.as_ref().map(ToString::to_string),
                d.registration_id,
                d.noise_key.private_key.serialize().to_vec(),
                d.noise_key.public_key.public_key_bytes().to_vec(),
                d.identity_key.private_key.serialize().to_vec(),
                d.signed_pre_key.public_key.public_key_bytes().to_vec(),
                d.signed_pre_key_id,
                d.signed_pre_key_signature.to_vec(),
                d.adv_secret_key,
                d.account
                    .as_ref()
                    .map(|a| (a.details.clone(), a.device_signature.clone())),
                d.push_name.clone(),
            ),
            (
                d.app_version_primary,
                d.app_version_secondary,
                d.app_version_tertiary,
                d.app_version_last_fetched_ms,
                d.edge_routing_info.clone(),
                d.props_hash.clone(),
                d.next_pre_key_id,
                d.first_unupload_pre_key_id,
                d.server_has_prekeys,
                d.nct_salt.clone(),
                d.server_cert_chain.clone(),
                d.login_counter,
            ),
            (
                d.lid_migrated,
                d.last_signed_pre_key_rotation_ms,
                d.read_receipts_disabled,
            ),
        )
    }

    #[tokio::test]
    async fn device_row_save_load_exists_create() {
        let db = TestDb::new().await;
        let store = PgDeviceStore::new(db.pool.clone(), 7);
        assert!(!store.exists().await.unwrap());
        assert!(store.load().await.unwrap().is_none());
        assert_eq!(store.create().await.unwrap(), 7);
        assert!(store.exists().await.unwrap());
        let fresh = store.load().await.unwrap().unwrap();
        assert!(fresh.pn.is_none() && fresh.account.is_none());

        let device = paired_device();
        store.save(&device).await.unwrap();
        let loaded = store.load().await.unwrap().unwrap();
        assert_eq!(persisted(&loaded), persisted(&device));

        // A broken cache blob degrades to no cache instead of failing the load.
        sqlx::query("UPDATE wa_device SET server_cert_chain = '\\x0a05'::bytea WHERE id = 7")
            .execute(&db.pool)
            .await
            .unwrap();
        assert!(
            store
                .load()
                .await
                .unwrap()
                .unwrap()
                .server_cert_chain
                .is_none()
        );

        db.drop().await;
    }

    #[tokio::test]
    async fn identities_and_sessions() {
        let db = TestDb::new().await;
        let s = db.store(1).await;
        let addr = "5511987650001:3@s.whatsapp.net";
        assert!(s.load_identity(addr).await.unwrap().is_none());
        s.put_identity(addr, [1; 32]).await.unwrap();
        s.put_identity(addr, [2; 32]).await.unwrap();
        assert_eq!(s.load_identity(addr).await.unwrap(), Some([2; 32]));
        s.put_identities_batch(&[
            (arc("a@lid"), [3; 32]),
            (arc("b@lid"), [4; 32]),
            (arc("a@lid"), [5; 32]),
        ])
        .await
        .unwrap();
        assert_eq!(s.load_identity("a@lid").await.unwrap(), Some([5; 32]));
        assert_eq!(s.load_identity("b@lid").await.unwrap(), Some([4; 32]));
        s.put_identities_batch(&[]).await.unwrap();
        s.delete_identity("a@lid").await.unwrap();
        assert!(s.load_identity("a@lid").await.unwrap().is_none());

        assert!(!s.has_session(addr).await.unwrap());
        s.put_session(addr, b"one").await.unwrap();
        assert!(s.has_session(addr).await.unwrap());
        assert_eq!(
            s.get_session(addr).await.unwrap().as_deref(),
            Some(&b"one"[..])
        );
        s.put_sessions_batch(&[
            (arc(addr), Bytes::from_static(b"two")),
            (
                arc("5511987650002@s.whatsapp.net"),
                Bytes::from_static(b"x"),
            ),
            (arc(addr), Bytes::from_static(b"three")),
        ])
        .await
        .unwrap();
        assert_eq!(
            s.get_session(addr).await.unwrap().as_deref(),
            Some(&b"three"[..])
        );
        s.delete_session(addr).await.unwrap();
        assert!(s.get_session(addr).await.unwrap().is_none());

        // Device 0 is `user@server`, others `user:dev@server`; other users never match.
        assert!(s.has_signal_state_for_user("5511987650002").await.unwrap());
        assert!(s.has_signal_state_for_user("5511987650001").await.unwrap());
        assert!(s.has_signal_state_for_user("b").await.unwrap());
        assert!(!s.has_signal_state_for_user("551198765000").await.unwrap());
        assert!(!s.has_signal_state_for_user("5511987650003").await.unwrap());
        db.drop().await;
    }

    #[tokio::test]
    async fn prekeys_and_signed_prekeys() {
        let db = TestDb::new().await;
        let s = db.store(1).await;
        assert_eq!(s.get_max_prekey_id().await.unwrap(), 0);
        s.store_prekey(1, b"k1", false).await.unwrap();
        s.store_prekeys_batch(
            &[
                (2, Bytes::from_static(b"k2")),
                (3, Bytes::from_static(b"k3")),
                (2, Bytes::from_static(b"k2b")),
            ],
            false,
        )
        .await
        .unwrap();
        // Ids keep their bit pattern past i32::MAX.
        s.store_prekey(u32::MAX - 1, b"big", true).await.unwrap();
        assert_eq!(
            s.load_prekey(2).await.unwrap().as_deref(),
            Some(&b"k2b"[..])
        );
        assert_eq!(
            s.load_prekey(u32::MAX - 1).await.unwrap().as_deref(),
            Some(&b"big"[..])
        );
        let mut batch = s
            .load_prekeys_batch(&[1, 3, 99, u32::MAX - 1])
            .await
            .unwrap();
        batch.sort_by_key(|(id, _)| *id);
        assert_eq!(
            batch,
            vec![
                (1, Bytes::from_static(b"k1")),
                (3, Bytes::from_static(b"k3")),
                (u32::MAX - 1, Bytes::from_static(b"big"))
            ]
        );
        assert!(s.load_prekeys_batch(&[]).await.unwrap().is_empty());
        s.remove_prekey(u32::MAX - 1).await.unwrap();
        assert_eq!(s.get_max_prekey_id().await.unwrap(), 3);

        s.remove_prekey(3).await.unwrap();
        s.mark_prekeys_uploaded(&[1, 3]).await.unwrap();
        assert!(
            s.load_prekey(3).await.unwrap().is_none(),
            "marking must not resurrect a key"
        );
        let uploaded: Vec<(i32, bool)> =
            sqlx::query("SELECT id, uploaded FROM wa_prekeys WHERE device_id = 1 ORDER BY id")
                .fetch_all(&db.pool)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
        assert_eq!(uploaded, vec![(1, true), (2, false)]);

        assert!(s.load_signed_prekey(1).await.unwrap().is_none());
        s.store_signed_prekey(1, b"s1").await.unwrap();
        s.store_signed_prekey(2, b"s2").await.unwrap();
        s.store_signed_prekey(1, b"s1b").await.unwrap();
        assert_eq!(
            s.load_signed_prekey(1).await.unwrap(),
            Some(b"s1b".to_vec())
        );
        let mut all = s.load_all_signed_prekeys().await.unwrap();
        all.sort();
        assert_eq!(all, vec![(1, b"s1b".to_vec()), (2, b"s2".to_vec())]);
        s.remove_signed_prekey(1).await.unwrap();
        assert_eq!(s.load_all_signed_prekeys().await.unwrap().len(), 1);
        db.drop().await;
    }

    #[tokio::test]
    async fn sender_keys_and_sender_key_devices() {
        let db = TestDb::new().await;
        let s = db.store(1).await;
        let g = "120363021033254949@g.us";
        s.put_sender_key("g::a", b"r1").await.unwrap();
        s.put_sender_keys_batch(&[
            (arc("g::a"), Bytes::from_static(b"r2")),
            (arc("g::b"), Bytes::from_static(b"r3")),
        ])
        .await
        .unwrap();
        assert_eq!(
            s.get_sender_key("g::a").await.unwrap(),
            Some(b"r2".to_vec())
        );
        s.delete_sender_key("g::a").await.unwrap();
        assert!(s.get_sender_key("g::a").await.unwrap().is_none());

        s.set_sender_key_status(
            g,
            &[("a:1@lid", true), ("b:2@lid", false), ("a:1@lid", false)],
        )
        .await
        .unwrap();
        s.set_sender_key_status("other@g.us", &[("a:1@lid", true)])
            .await
            .unwrap();
        let mut got = s.get_sender_key_devices(g).await.unwrap();
        got.sort();
        assert_eq!(
            got,
            vec![("a:1@lid".into(), false), ("b:2@lid".into(), false)]
        );
        s.set_sender_key_status(g, &[("b:2@lid", true)])
            .await
            .unwrap();
        assert!(
            s.get_sender_key_devices(g)
                .await
                .unwrap()
                .contains(&("b:2@lid".into(), true))
        );
        s.delete_sender_key_device_rows(&["a:1@lid"]).await.unwrap();
        assert_eq!(s.get_sender_key_devices(g).await.unwrap().len(), 1);
        assert!(
            s.get_sender_key_devices("other@g.us")
                .await
                .unwrap()
                .is_empty()
        );
        s.clear_sender_key_devices(g).await.unwrap();
        assert!(s.get_sender_key_devices(g).await.unwrap().is_empty());
        s.set_sender_key_status(g, &[("c:1@lid", true)])
            .await
            .unwrap();
        s.clear_all_sender_key_devices().await.unwrap();
        assert!(s.get_sender_key_devices(g).await.unwrap().is_empty());
        db.drop().await;
    }

    #[tokio::test]
    async fn app_state_sync() {
        let db = TestDb::new().await;
        let s = db.store(1).await;
        let key = |b: u8, ts| AppStateSyncKey {
            key_data: vec![b; 32],
            fingerprint: vec![b, 1],
            timestamp: ts,
        };
        assert!(s.get_sync_key(b"k1").await.unwrap().is_none());
        assert!(s.get_latest_sync_key_id().await.unwrap().is_none());
        s.set_sync_key(&[0, 1], key(1, 10)).await.unwrap();
        s.set_sync_key(&[0, 2], key(2, 20)).await.unwrap();
        let got = s.get_sync_key(&[0, 2]).await.unwrap().unwrap();
        assert_eq!(
            (got.key_data, got.fingerprint, got.timestamp),
            (vec![2; 32], vec![2, 1], 20)
        );
        assert_eq!(s.get_latest_sync_key_id().await.unwrap(), Some(vec![0, 2]));
        // A newer but undecodable row reads as absent and is passed over.
        sqlx::query("INSERT INTO wa_app_state_keys VALUES ('\\x0009'::bytea, '\\x0a01'::bytea, 1)")
            .execute(&db.pool)
            .await
            .unwrap();
        assert!(s.get_sync_key(&[0, 9]).await.unwrap().is_none());
        assert_eq!(s.get_latest_sync_key_id().await.unwrap(), Some(vec![0, 2]));

        let v = s.get_version("regular").await.unwrap();
        assert_eq!((v.version, v.hash), (0, [0; 128]));
        let mut state = HashState {
            version: 7,
            hash: [5; 128],
            index_value_map: HashMap::from([("i".to_string(), vec![1, 2])]),
            mac_mismatch_fatal: true,
        };
        s.set_version("regular", state.clone()).await.unwrap();
        state.version = 8;
        s.set_version("regular", state.clone()).await.unwrap();
        let got = s.get_version("regular").await.unwrap();
        assert_eq!(
            (
                got.version,
                got.hash,
                got.index_value_map,
                got.mac_mismatch_fatal
            ),
            (8, [5; 128], state.index_value_map.clone(), true)
        );

        let mac = |i: u8, v: u8| AppStateMutationMAC {
            index_mac: vec![i; 32],
            value_mac: vec![v; 32],
        };
        s.put_mutation_macs("regular", 3, &[mac(1, 10), mac(2, 20), mac(1, 11)])
            .await
            .unwrap();
        s.put_mutation_macs("critical", 3, &[mac(1, 99)])
            .await
            .unwrap();
        s.put_mutation_macs("regular", 3, &[]).await.unwrap();
        assert_eq!(
            s.get_mutation_mac("regular", &[1; 32]).await.unwrap(),
            Some(vec![11; 32])
        );
        let batch = s
            .get_mutation_macs("regular", &[[1; 32], [2; 32], [3; 32]])
            .await
            .unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[&[2; 32]], vec![20; 32]);
        s.delete_mutation_macs("regular", &[vec![1; 32]])
            .await
            .unwrap();
        assert!(
            s.get_mutation_mac("regular", &[1; 32])
                .await
                .unwrap()
                .is_none()
        );
        s.clear_mutation_macs("regular").await.unwrap();
        assert!(
            s.get_mutation_mac("regular", &[2; 32])
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            s.get_mutation_mac("critical", &[1; 32]).await.unwrap(),
            Some(vec![99; 32])
        );
        db.drop().await;
    }

    #[tokio::test]
    async fn lid_mappings_base_keys_device_lists_group_metadata() {
        let db = TestDb::new().await;
        let s = db.store(1).await;
        let m = |lid: &str, pn: &str, c, u| LidPnMappingEntry {
            lid: lid.into(),
            phone_number: pn.into(),
            created_at: c,
            updated_at: u,
            learning_source: "usync".into(),
        };
        s.put_lid_mapping(&m("100", "551", 10, 10)).await.unwrap();
        s.put_lid_mappings(&[
            m("200", "551", 20, 20),
            m("300", "553", 30, 30),
            m("100", "552", 40, 40),
        ])
        .await
        .unwrap();
        let got = s.get_lid_mapping("100").await.unwrap().unwrap();
        assert_eq!(
            (got.phone_number.as_str(), got.created_at, got.updated_at),
            ("552", 10, 40)
        );
        assert_eq!(s.get_pn_mapping("551").await.unwrap().unwrap().lid, "200");
        assert!(s.get_pn_mapping("559").await.unwrap().is_none());
        assert_eq!(s.get_all_lid_mappings().await.unwrap().len(), 3);

        s.save_base_key("a", "m1", b"base").await.unwrap();
        assert!(s.has_same_base_key("a", "m1", b"base").await.unwrap());
        assert!(!s.has_same_base_key("a", "m1", b"other").await.unwrap());
        assert!(!s.has_same_base_key("a", "m2", b"base").await.unwrap());
        s.delete_base_key("a", "m1").await.unwrap();
        assert!(!s.has_same_base_key("a", "m1", b"base").await.unwrap());

        let rec = |user: &str, n: u32, raw_id| DeviceListRecord {
            user: user.into(),
            devices: (0..n)
                .map(|i| DeviceInfo::new(i, Some(i + 1)).with_hosting(i == 1))
                .collect(),
            timestamp: 1_700_000_000,
            phash: Some(format!("2:{n}")),
            raw_id,
        };
        s.update_device_list(rec("551", 1, None)).await.unwrap();
        s.update_device_lists(vec![
            rec("552", 2, Some(u32::MAX)),
            rec("551", 3, Some(5)),
            rec("553", 0, None),
        ])
        .await
        .unwrap();
        let got = s.get_devices("551").await.unwrap().unwrap();
        assert_eq!(
            (got.devices.len(), got.phash.as_deref(), got.raw_id),
            (3, Some("2:3"), Some(5))
        );
        assert!(got.devices[1].is_hosted && got.devices[2].key_index == Some(3));
        let got = s.get_devices("552").await.unwrap().unwrap();
        assert_eq!((got.timestamp, got.raw_id), (1_700_000_000, Some(u32::MAX)));
        s.delete_devices("551").await.unwrap();
        assert!(s.get_devices("551").await.unwrap().is_none());

        assert!(s.get_group_metadata("g@g.us").await.unwrap().is_none());
        s.put_group_metadata("g@g.us", b"v1").await.unwrap();
        s.put_group_metadata("g@g.us", b"v2").await.unwrap();
        assert_eq!(
            s.get_group_metadata("g@g.us").await.unwrap(),
            Some(b"v2".to_vec())
        );
        s.delete_group_metadata("g@g.us").await.unwrap();
        assert!(s.get_group_metadata("g@g.us").await.unwrap().is_none());
        db.drop().await;
    }

    #[tokio::test]
    async fn tc_tokens() {
        let db = TestDb::new().await;
        let s = db.store(1).await;
        let entry = |t: &[u8], ts, sender| TcTokenEntry {
            token: t.to_vec(),
            token_timestamp: ts,
            sender_timestamp: sender,
        };
        assert!(s.get_tc_token("a@lid").await.unwrap().is_none());
        s.put_tc_token("a@lid", &entry(b"t1", 100, Some(50)))
            .await
            .unwrap();
        let got = s.get_tc_token("a@lid").await.unwrap().unwrap();
        assert_eq!(
            (got.token, got.token_timestamp, got.sender_timestamp),
            (b"t1".to_vec(), 100, Some(50))
        );

        // Newer wins, and the sender bucket stays.
        s.store_received_tc_token("a@lid", b"old", 90)
            .await
            .unwrap();
        assert_eq!(s.get_tc_token("a@lid").await.unwrap().unwrap().token, b"t1");
        s.store_received_tc_token("a@lid", b"t2", 100)
            .await
            .unwrap();
        let got = s.get_tc_token("a@lid").await.unwrap().unwrap();
        assert_eq!(
            (got.token, got.sender_timestamp),
            (b"t2".to_vec(), Some(50))
        );

        // The sender bucket only moves forward and never touches the token.
        s.touch_tc_token_sender_timestamp("a@lid", 40)
            .await
            .unwrap();
        s.touch_tc_token_sender_timestamp("a@lid", 60)
            .await
            .unwrap();
        let got = s.get_tc_token("a@lid").await.unwrap().unwrap();
        assert_eq!(
            (got.token, got.sender_timestamp),
            (b"t2".to_vec(), Some(60))
        );

        // A placeholder never blocks the first real token, however old.
        s.touch_tc_token_sender_timestamp("b@lid", 500)
            .await
            .unwrap();
        let got = s.get_tc_token("b@lid").await.unwrap().unwrap();
        assert_eq!(
            (got.token.len(), got.token_timestamp, got.sender_timestamp),
            (0, 500, Some(500))
        );
        s.store_received_tc_token("b@lid", b"real", 10)
            .await
            .unwrap();
        let got = s.get_tc_token("b@lid").await.unwrap().unwrap();
        assert_eq!(
            (got.token, got.token_timestamp, got.sender_timestamp),
            (b"real".to_vec(), 10, Some(500))
        );

        s.put_tc_token("c@lid", &entry(b"t", 10, None))
            .await
            .unwrap();
        s.put_tc_token("d@lid", &entry(b"", 10, Some(1000)))
            .await
            .unwrap();
        let mut jids = s.get_all_tc_token_jids().await.unwrap();
        jids.sort();
        assert_eq!(jids, ["a@lid", "b@lid", "c@lid", "d@lid"]);
        // c: expired token, no sender bucket; d: no token but a live bucket; b: live bucket.
        assert_eq!(s.delete_expired_tc_tokens(50, 200).await.unwrap(), 1);
        assert!(s.get_tc_token("c@lid").await.unwrap().is_none());
        s.delete_tc_token("a@lid").await.unwrap();
        assert_eq!(s.get_all_tc_token_jids().await.unwrap().len(), 2);
        db.drop().await;
    }

    #[tokio::test]
    async fn sent_messages_and_msg_secrets() {
        let db = TestDb::new().await;
        let s = db.store(1).await;
        s.store_sent_message("c@s.whatsapp.net", "m1", b"p1")
            .await
            .unwrap();
        s.store_sent_message("c@s.whatsapp.net", "m1", b"p2")
            .await
            .unwrap();
        assert_eq!(
            s.take_sent_message("c@s.whatsapp.net", "m1").await.unwrap(),
            Some(b"p2".to_vec())
        );
        assert!(
            s.take_sent_message("c@s.whatsapp.net", "m1")
                .await
                .unwrap()
                .is_none()
        );
        s.store_sent_message("c@s.whatsapp.net", "m2", b"p")
            .await
            .unwrap();
        assert_eq!(
            s.delete_expired_sent_messages(now_secs() - 60)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            s.delete_expired_sent_messages(now_secs() + 60)
                .await
                .unwrap(),
            1
        );

        let e = |id: &str, secret: u8, expires_at, message_ts| MsgSecretEntry {
            chat: arc("c@s.whatsapp.net"),
            sender: arc("c@s.whatsapp.net"),
            msg_id: arc(id),
            secret: [secret; 32],
            expires_at,
            message_ts,
        };
        s.put_msg_secret("g@g.us", "a@lid", "x", &[9; 32])
            .await
            .unwrap();
        assert_eq!(
            s.get_msg_secret("g@g.us", "a@lid", "x").await.unwrap(),
            Some(vec![9; 32])
        );
        assert!(
            s.get_msg_secret("g@g.us", "b@lid", "x")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(s.put_msg_secrets(vec![]).await.unwrap(), 0);
        s.put_msg_secrets(vec![
            e("m1", 1, 100, 0),
            e("m2", 2, 200, 50),
            e("m1", 3, 150, 40),
        ])
        .await
        .unwrap();
        assert_eq!(
            s.get_msg_secret_with_ts("c@s.whatsapp.net", "c@s.whatsapp.net", "m1")
                .await
                .unwrap(),
            Some((vec![3; 32], 40))
        );
        // Against the stored row: a deadline never shrinks, a known parent time stays.
        s.put_msg_secrets(vec![e("m1", 4, 120, 0), e("m2", 5, 0, 0)])
            .await
            .unwrap();
        let rows: Vec<(String, i64, i64)> =
            sqlx::query("SELECT msg_id, expires_at, message_ts FROM wa_msg_secrets WHERE chat = 'c@s.whatsapp.net' ORDER BY msg_id")
                .fetch_all(&db.pool)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
        assert_eq!(rows, vec![("m1".into(), 150, 40), ("m2".into(), 0, 50)]);
        assert_eq!(
            s.get_msg_secret("c@s.whatsapp.net", "c@s.whatsapp.net", "m1")
                .await
                .unwrap(),
            Some(vec![4; 32])
        );
        // Only passed, non-zero deadlines go.
        assert_eq!(s.delete_expired_msg_secrets(149).await.unwrap(), 0);
        assert_eq!(s.delete_expired_msg_secrets(150).await.unwrap(), 1);
        assert!(
            s.get_msg_secret("c@s.whatsapp.net", "c@s.whatsapp.net", "m2")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            s.get_msg_secret("g@g.us", "a@lid", "x")
                .await
                .unwrap()
                .is_some()
        );
        db.drop().await;
    }

    /// Writes one row of every kind through `s`.
    async fn fill(s: &PgDeviceStore, tag: u8) {
        s.put_identity("a@lid", [tag; 32]).await.unwrap();
        s.put_session("a@lid", &[tag]).await.unwrap();
        s.store_prekey(1, &[tag], false).await.unwrap();
        s.store_signed_prekey(1, &[tag]).await.unwrap();
        s.put_sender_key("g::a", &[tag]).await.unwrap();
        s.set_sync_key(
            &[1],
            AppStateSyncKey {
                key_data: vec![tag; 32],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        s.set_version("regular", HashState::default())
            .await
            .unwrap();
        s.put_mutation_macs(
            "regular",
            1,
            &[AppStateMutationMAC {
                index_mac: vec![1; 32],
                value_mac: vec![tag; 32],
            }],
        )
        .await
        .unwrap();
        s.put_lid_mapping(&LidPnMappingEntry {
            lid: "100".into(),
            phone_number: format!("55{tag}"),
            created_at: 1,
            updated_at: 1,
            learning_source: "usync".into(),
        })
        .await
        .unwrap();
        s.save_base_key("a@lid", "m", &[tag]).await.unwrap();
        s.update_device_list(DeviceListRecord {
            user: "551".into(),
            devices: vec![DeviceInfo::new(u32::from(tag), None)],
            timestamp: 1,
            phash: None,
            raw_id: None,
        })
        .await
        .unwrap();
        s.set_sender_key_status("g@g.us", &[("a:1@lid", true)])
            .await
            .unwrap();
        s.put_tc_token(
            "a@lid",
            &TcTokenEntry {
                token: vec![tag],
                token_timestamp: 1,
                sender_timestamp: None,
            },
        )
        .await
        .unwrap();
        s.store_sent_message("c", "m", &[tag]).await.unwrap();
        s.put_msg_secret("c", "c", "m", &[tag; 32]).await.unwrap();
        s.put_group_metadata("g@g.us", &[tag]).await.unwrap();
    }

    #[tokio::test]
    async fn devices_are_isolated_and_delete_device_removes_only_one() {
        let db = TestDb::new().await;
        let one = db.store(1).await;
        let two = db.store(2).await;
        fill(&one, 1).await;
        fill(&two, 2).await;
        for table in DEVICE_TABLES {
            assert_eq!(db.count(table, 1).await, 1, "{table}");
            assert_eq!(db.count(table, 2).await, 1, "{table}");
        }
        assert_eq!(one.load_identity("a@lid").await.unwrap(), Some([1; 32]));
        assert_eq!(two.load_identity("a@lid").await.unwrap(), Some([2; 32]));
        assert_eq!(two.get_sender_key("g::a").await.unwrap(), Some(vec![2]));
        assert_eq!(
            one.get_devices("551").await.unwrap().unwrap().devices[0].device_id,
            1
        );
        assert_eq!(
            two.get_msg_secret("c", "c", "m").await.unwrap(),
            Some(vec![2; 32])
        );
        one.clear_all_sender_key_devices().await.unwrap();
        assert_eq!(two.get_sender_key_devices("g@g.us").await.unwrap().len(), 1);

        delete_device(&db.pool, 1).await.unwrap();
        for table in DEVICE_TABLES {
            assert_eq!(db.count(table, 1).await, 0, "{table}");
            assert_eq!(db.count(table, 2).await, 1, "{table}");
        }
        assert!(!one.exists().await.unwrap());
        assert!(two.load().await.unwrap().is_some());
        db.drop().await;
    }

    /// The table list covers every table of the migration.
    #[tokio::test]
    async fn device_tables_cover_the_schema() {
        let db = TestDb::new().await;
        let mut tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        tables.sort();
        let mut ours: Vec<String> = DEVICE_TABLES.iter().map(|t| pg_table(t)).collect();
        ours.sort();
        assert_eq!(tables, ours);
        db.drop().await;
    }

    /// Same tables and columns (names, order, nullability) as the SQLite store, pending-inbound
    /// aside; and what both stores write for the same values is the same bytes, and rows
    /// copied column by column from SQLite read back through this store.
    #[tokio::test]
    async fn rows_match_the_sqlite_store() {
        let db = TestDb::new().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whatsapp.db");
        let path = path.to_str().unwrap();
        let sqlite = SqliteStore::new_for_device(path, 1).await.unwrap();
        sqlite.create().await.unwrap();
        let pg = db.store(1).await;

        let device = paired_device();
        let chain_only = HashState {
            version: 3,
            hash: [8; 128],
            index_value_map: HashMap::from([("only".to_string(), vec![1])]),
            mac_mismatch_fatal: true,
        };
        let sync_key = AppStateSyncKey {
            key_data: vec![1; 32],
            fingerprint: vec![2, 3],
            timestamp: 1_700_000_000,
        };
        let list = DeviceListRecord {
            user: "551".into(),
            devices: vec![
                DeviceInfo::new(0, Some(1)),
                DeviceInfo::new(3, None).with_hosting(true),
            ],
            timestamp: 1_700_000_000,
            phash: Some("2:abc".into()),
            raw_id: Some(7),
        };
        sqlite.save(&device).await.unwrap();
        pg.save(&device).await.unwrap();
        sqlite
            .set_version("regular", chain_only.clone())
            .await
            .unwrap();
        pg.set_version("regular", chain_only).await.unwrap();
        sqlite
            .set_sync_key(&[1, 2], sync_key.clone())
            .await
            .unwrap();
        pg.set_sync_key(&[1, 2], sync_key).await.unwrap();
        sqlite.update_device_list(list.clone()).await.unwrap();
        pg.update_device_list(list).await.unwrap();
        sqlite
            .set_sender_key_status("g@g.us", &[("a:1@lid", true)])
            .await
            .unwrap();
        sqlite
            .put_msg_secrets(vec![MsgSecretEntry::new(
                &"551@s.whatsapp.net".parse().unwrap(),
                &"551:2@s.whatsapp.net".parse().unwrap(),
                "m",
                [4; 32],
                99,
                98,
            )])
            .await
            .unwrap();
        sqlite
            .put_tc_token(
                "a@lid",
                &TcTokenEntry {
                    token: vec![1],
                    token_timestamp: 5,
                    sender_timestamp: None,
                },
            )
            .await
            .unwrap();
        drop(sqlite);

        let lite = sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
            .await
            .unwrap();
        let mut sqlite_tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '__diesel%' AND name <> 'pending_inbound_messages'",
        )
        .fetch_all(&lite)
        .await
        .unwrap();
        sqlite_tables.sort();
        let mut ours: Vec<String> = DEVICE_TABLES.iter().map(|t| t.to_string()).collect();
        ours.sort();
        assert_eq!(sqlite_tables, ours);

        for table in DEVICE_TABLES {
            let lite_cols: Vec<(String, bool)> =
                sqlx::query(AssertSqlSafe(format!("PRAGMA table_info({table})")))
                    .fetch_all(&lite)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| {
                        (
                            r.get::<String, _>("name"),
                            r.get::<i64, _>("notnull") != 0 || r.get::<i64, _>("pk") != 0,
                        )
                    })
                    .collect();
            let pg_cols: Vec<(String, bool)> = sqlx::query(
                "SELECT column_name::text, is_nullable = 'NO' FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            )
            .bind(pg_table(table))
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
            assert_eq!(pg_cols, lite_cols, "{table}");
        }

        // Deterministic encodings are byte for byte what the SQLite store writes.
        for (table, column, key) in [
            ("device", "server_cert_chain", "id"),
            ("device", "account", "id"),
            ("app_state_versions", "state_data", "device_id"),
            ("app_state_keys", "key_data", "device_id"),
        ] {
            let q = format!("SELECT {column} FROM {{}} WHERE {key} = 1");
            let lite_bytes: Vec<u8> = sqlx::query_scalar(AssertSqlSafe(q.replace("{}", table)))
                .fetch_one(&lite)
                .await
                .unwrap();
            let pg_bytes: Vec<u8> =
                sqlx::query_scalar(AssertSqlSafe(q.replace("{}", &pg_table(table))))
                    .fetch_one(&db.pool)
                    .await
                    .unwrap();
            assert_eq!(pg_bytes, lite_bytes, "{table}.{column}");
        }
        let q = "SELECT devices_json FROM {} WHERE user_id = '551'";
        let lite_json: String =
            sqlx::query_scalar(AssertSqlSafe(q.replace("{}", "device_registry")))
                .fetch_one(&lite)
                .await
                .unwrap();
        let pg_json: String =
            sqlx::query_scalar(AssertSqlSafe(q.replace("{}", "wa_device_registry")))
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(pg_json, lite_json);

        // Copy every SQLite row of device 1 into device 5, column by column, undecoded.
        for table in DEVICE_TABLES {
            let types: Vec<(String, String)> = sqlx::query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            )
            .bind(pg_table(table))
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
            let rows = sqlx::query(AssertSqlSafe(format!("SELECT * FROM {table}")))
                .fetch_all(&lite)
                .await
                .unwrap();
            for row in rows {
                let names: Vec<&str> = types.iter().map(|(n, _)| n.as_str()).collect();
                let params: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
                let sql = format!(
                    "INSERT INTO {} ({}) VALUES ({})",
                    pg_table(table),
                    names.join(", "),
                    params.join(", ")
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for (name, ty) in &types {
                    let renumbered =
                        matches!(name.as_str(), "id" if *table == "device") || name == "device_id";
                    q = match ty.as_str() {
                        _ if renumbered => q.bind(5i32),
                        "bytea" => q.bind(row.get::<Option<Vec<u8>>, _>(name.as_str())),
                        "text" => q.bind(row.get::<Option<String>, _>(name.as_str())),
                        "integer" => {
                            q.bind(row.get::<Option<i64>, _>(name.as_str()).map(|v| v as i32))
                        }
                        "bigint" => q.bind(row.get::<Option<i64>, _>(name.as_str())),
                        "boolean" => q.bind(row.get::<Option<bool>, _>(name.as_str())),
                        other => panic!("unexpected column type {other}"),
                    };
                }
                q.execute(&db.pool).await.unwrap();
            }
        }
        let copied = PgDeviceStore::new(db.pool.clone(), 5);
        assert_eq!(
            persisted(&copied.load().await.unwrap().unwrap()),
            persisted(&device)
        );
        assert_eq!(copied.get_version("regular").await.unwrap().version, 3);
        assert_eq!(
            copied
                .get_sync_key(&[1, 2])
                .await
                .unwrap()
                .unwrap()
                .fingerprint,
            vec![2, 3]
        );
        assert_eq!(
            copied.get_devices("551").await.unwrap().unwrap().raw_id,
            Some(7)
        );
        assert_eq!(
            copied.get_sender_key_devices("g@g.us").await.unwrap(),
            vec![("a:1@lid".into(), true)]
        );
        assert_eq!(
            copied
                .get_msg_secret_with_ts("551@s.whatsapp.net", "551@s.whatsapp.net", "m")
                .await
                .unwrap(),
            Some((vec![4; 32], 98))
        );
        assert_eq!(
            copied.get_tc_token("a@lid").await.unwrap().unwrap().token,
            vec![1]
        );
        lite.close().await;
        db.drop().await;
    }

    /// whatsapp-rust's own start-up path: create the row when missing, load it, save it.
    #[tokio::test]
    async fn persistence_manager_starts_on_the_store() {
        let db = TestDb::new().await;
        let backend: Arc<dyn Backend> = Arc::new(PgDeviceStore::new(db.pool.clone(), 3));
        let manager =
            whatsapp_rust::store::persistence_manager::PersistenceManager::new(backend.clone())
                .await
                .unwrap();
        drop(manager);
        assert!(backend.exists().await.unwrap());
        assert!(backend.load().await.unwrap().is_some());
        db.drop().await;
    }
}
