//! The simulator's durable state: accounts, their devices and key bundles,
//! the phones' Signal state, queued stanzas and media metadata.
//!
//! Everything lives in one [`Snapshot`] written as JSON to `state.json` by
//! write-to-temp-then-rename, so a crash leaves either the old or the new
//! file, never half of one. Media blobs are separate files under `blobs/`.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Bytes that serialize as a base64 string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map(B64)
            .map_err(serde::de::Error::custom)
    }
}

impl From<Vec<u8>> for B64 {
    fn from(v: Vec<u8>) -> Self {
        B64(v)
    }
}

impl From<&[u8]> for B64 {
    fn from(v: &[u8]) -> Self {
        B64(v.to_vec())
    }
}

/// A signed prekey as the server hands it out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignedPreKey {
    pub id: u32,
    pub public: B64,
    pub signature: B64,
}

/// One device of an account: the phone (device 0) or a linked companion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub id: u16,
    /// The companion's Noise static key; logins must present it. `None` for
    /// the phone, which is simulated in-process and never connects.
    pub noise_pub: Option<B64>,
    pub key_index: u32,
    pub registration_id: u32,
    /// 32-byte Curve25519 identity public key.
    pub identity: B64,
    pub signed_prekey: Option<SignedPreKey>,
    /// One-time prekeys not yet handed out.
    pub prekeys: BTreeMap<u32, B64>,
    /// The companion's `ADVSignedDeviceIdentity` (with its device signature),
    /// served with its prekey bundle.
    pub device_identity: Option<B64>,
    pub push_name: String,
    pub platform: String,
    /// Stanzas (marshaled nodes) not yet acknowledged by the device, oldest first.
    pub queue: VecDeque<QueuedStanza>,
}

/// A stanza waiting for a device, kept until the device acks or receipts it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueuedStanza {
    pub id: String,
    pub node: B64,
}

/// The phone's private Signal material and what it has seen.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct PhoneSecrets {
    pub identity_private: B64,
    pub identity_public: B64,
    pub registration_id: u32,
    pub signed_prekey_id: u32,
    pub signed_prekey_private: B64,
    pub signed_prekey_public: B64,
    pub signed_prekey_signature: B64,
    /// One-time prekey private keys by id (removed once used).
    pub prekeys: BTreeMap<u32, B64>,
    pub next_prekey_id: u32,
    /// Signal sessions by "user.device" of the peer device.
    pub sessions: BTreeMap<String, B64>,
    /// Peer identity keys by "user.device".
    pub identities: BTreeMap<String, B64>,
    /// The app-state sync key the phone shares with each new companion.
    pub app_state_key_id: B64,
    pub app_state_key: B64,
    pub messages: Vec<PhoneMessage>,
}

/// A message the phone sent or received, decrypted (the admin API's shape).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PhoneMessage {
    pub id: String,
    /// Sender phone number (with device suffix `:N` when a companion sent it).
    pub from: String,
    pub to: String,
    pub from_me: bool,
    pub text: Option<String>,
    pub caption: Option<String>,
    pub media: Option<MediaSummary>,
    pub timestamp: u64,
    /// `sent`, `delivered`, `read` for own messages; `received`, `read` otherwise.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sender_device: Option<u16>,
}

/// What the phone knows about a media attachment it sent or received.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MediaSummary {
    pub kind: String,
    pub mimetype: String,
    pub file_name: Option<String>,
    pub size: u64,
    /// Hex sha256 of the plaintext (for received media: of what was downloaded and decrypted).
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// One account: a phone number, its LID, the phone and linked devices.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Account {
    pub phone: String,
    pub lid: String,
    pub name: String,
    pub next_device_id: u16,
    pub next_key_index: u32,
    pub devices: BTreeMap<u16, DeviceRecord>,
    /// Noise keys of unlinked companions: their logins get 401.
    pub revoked_noise: Vec<B64>,
    pub secrets: PhoneSecrets,
    pub created_at: u64,
}

/// Where an uploaded media blob lives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MediaMeta {
    pub kind: String,
    pub size: u64,
    pub file: String,
}

/// The whole durable state.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct Snapshot {
    pub server_noise_private: B64,
    pub next_lid: u64,
    pub accounts: BTreeMap<String, Account>,
    /// Media by direct path (`/mms/...` without query).
    pub media: BTreeMap<String, MediaMeta>,
}

/// Errors reading or writing the data dir.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid state file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Snapshot {
    pub fn load(dir: &Path) -> Result<Option<Snapshot>, StateError> {
        let path = dir.join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Parse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Writes the snapshot atomically (temp file, fsync, rename).
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join("state.json");
        let tmp = dir.join("state.json.tmp");
        let bytes = serde_json::to_vec(self).expect("snapshot is always serializable");
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&bytes).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(())
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
