//! The simulator's durable state: accounts, their devices and key bundles,
//! the phones' Signal state, queued stanzas and media metadata.
//!
//! Everything lives in one [`Snapshot`]. On disk it is a base, `state.json`, written by
//! write-to-temp-then-rename (a crash leaves either the old or the new file, never half
//! of one), followed by the journals of changes made since (see `journal`). Media blobs
//! are separate files under `blobs/`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
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
    pub messages: History,
    /// The last [`OUTBOX_KEPT`] messages the phone sent, as sent, so it can
    /// encrypt one again when a device answers it with a retry receipt.
    #[serde(default)]
    pub outbox: VecDeque<SentCopy>,
    /// Sender keys by "group::user.device" (the phone's own, and those other members
    /// distributed to it), as libsignal serializes them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sender_keys: BTreeMap<String, B64>,
    /// Per group, the devices ("user.device") the phone gave its current sender key to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sender_key_shared: BTreeMap<String, BTreeSet<String>>,
}

/// The messages a phone sent and received, oldest first, with an index by id (a phone's
/// message ids are unique: a message it sends to itself is recorded once).
#[derive(Clone, Debug, Default)]
pub struct History {
    list: Vec<PhoneMessage>,
    by_id: HashMap<String, usize>,
}

impl History {
    /// Adds a message, or replaces the one with its id.
    pub fn upsert(&mut self, message: PhoneMessage) {
        match self.by_id.get(&message.id) {
            Some(&at) => self.list[at] = message,
            None => {
                self.by_id.insert(message.id.clone(), self.list.len());
                self.list.push(message);
            }
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn get(&self, id: &str) -> Option<&PhoneMessage> {
        self.by_id.get(id).map(|&at| &self.list[at])
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut PhoneMessage> {
        self.by_id.get(id).map(|&at| &mut self.list[at])
    }

    pub fn as_slice(&self) -> &[PhoneMessage] {
        &self.list
    }
}

impl Serialize for History {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.list.serialize(s)
    }
}

impl<'de> Deserialize<'de> for History {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut history = History::default();
        for m in Vec::<PhoneMessage>::deserialize(d)? {
            history.upsert(m);
        }
        Ok(history)
    }
}

/// How many sent messages a phone keeps for retries.
pub const OUTBOX_KEPT: usize = 100;

/// A message as the phone sent it (before any own-device wrapping).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SentCopy {
    pub id: String,
    /// The account it was sent to.
    pub to: String,
    /// The encoded `wa::Message`.
    pub message: B64,
    /// The stanza's `type` (`text`, `media`).
    pub stanza_type: String,
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
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub location: Option<PhoneLocation>,
    /// Shared contact cards (one for a contact message, several for a contacts array).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub contacts: Vec<PhoneContact>,
    /// For a reaction: the message it reacts to and its emoji (empty takes it back).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reaction: Option<PhoneReaction>,
    /// The reactions this message has, by the phone number that reacted (latest wins).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub reactions: BTreeMap<String, String>,
    /// Its sender edited it (the text is the new one).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub edited: bool,
    /// Its sender deleted it for everyone: the content is gone.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub revoked: bool,
    /// A poll, with the votes the phone has seen.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub poll: Option<PhonePoll>,
    /// A vote in a poll, decrypted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vote: Option<PhoneVote>,
    /// The app marks it "Forwarded".
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub forwarded: bool,
    /// A photo, video or voice note the app shows once.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub view_once: bool,
    /// The phone numbers its text mentions (`@`).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub mentions: Vec<String>,
}

/// A poll as the phone shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PhonePoll {
    pub question: String,
    pub options: Vec<String>,
    /// How many options one voter may pick (1: a single choice).
    pub selectable: u32,
    /// The poll's message secret: votes are encrypted with keys drawn from it.
    pub secret: B64,
    /// The phone number that created it.
    pub creator: String,
    /// The latest vote of each voter (by phone number); an empty vote is none.
    #[serde(default)]
    pub votes: BTreeMap<String, Vec<String>>,
}

/// A vote, decrypted: the poll it is for and the options picked (none: taken back).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PhoneVote {
    pub message_id: String,
    pub options: Vec<String>,
}

/// A reaction, as the phone sent or received it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PhoneReaction {
    pub message_id: String,
    pub emoji: String,
}

/// A shared location, as the phone sent or received it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PhoneLocation {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
}

/// A shared contact card.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PhoneContact {
    #[serde(default)]
    pub name: Option<String>,
    pub vcard: String,
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
    /// Set for an account WhatsApp gates with a passkey: linking a device then needs an
    /// assertion from it (see `passkey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkey: Option<Passkey>,
    /// Privacy settings the account changed, by category (the others have WhatsApp's
    /// defaults, see `iq::DEFAULT_PRIVACY`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub privacy: BTreeMap<String, String>,
    /// Accounts it blocked (user JIDs).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub blocked: BTreeSet<String>,
    /// The phone is offline (out of coverage, switched off): what is sent to it waits in
    /// its queue, unanswered, until it comes back (`POST /admin/phones/:phone/online`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
    /// The profile others can look up: the about text (WhatsApp's default when unset),
    /// whether it is a business account, and the profile photo.
    #[serde(default)]
    pub profile: Profile,
    /// The account's app-state collections (syncd patches), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub app_state: BTreeMap<String, crate::appstate::Collection>,
    /// The made-up past a device linked to this account receives by history sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<crate::history::HistorySpec>,
    /// The account's NCT salt, which its devices learn by app state and history sync and
    /// prove themselves with (`cstoken`); `None` for an account made before salts existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nct_salt: Option<B64>,
    /// The trusted-contact tokens the account gave, by the phone number it gave each to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens_issued: BTreeMap<String, crate::tokens::Grant>,
    /// What WhatsApp demands of the account's 1:1 messages (see `tokens`).
    #[serde(default)]
    pub restrictions: crate::tokens::Restrictions,
}

/// What an account shows of itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    #[serde(default)]
    pub about: Option<String>,
    #[serde(default)]
    pub business: bool,
    /// The photo: its id and where the media host keeps it.
    #[serde(default)]
    pub picture: Option<ProfilePicture>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfilePicture {
    pub id: String,
    pub direct_path: String,
}

/// What an account's about says until its owner changes it.
pub const DEFAULT_ABOUT: &str = "Hey there! I am using WhatsApp.";

/// A gated account's passkey: the owner's credential (a software ES256 key, as a
/// password manager keeps it) and what WhatsApp registered of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Passkey {
    pub credential_id: B64,
    pub user_handle: B64,
    /// The owner's side: the private key (PKCS#8) and the authenticator's signature counter.
    pub private_key: B64,
    pub counter: u32,
    /// WhatsApp's side: the public key (an uncompressed P-256 point) and the last
    /// signature counter it accepted.
    pub public_key: B64,
    pub sign_count: u32,
}

/// Where an uploaded media blob lives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MediaMeta {
    pub kind: String,
    pub size: u64,
    pub file: String,
    /// A path a phone made when a device asked it to upload the file again (a media
    /// re-upload request); the `media-expiry` fault leaves these working.
    #[serde(default)]
    pub reupload: bool,
}

/// The whole durable state.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct Snapshot {
    pub server_noise_private: B64,
    /// The private key of the root the server's certificate chain is signed with (the
    /// simulator's `WhatsAppLongTerm1`).
    #[serde(default)]
    pub server_noise_root_private: B64,
    pub next_lid: u64,
    pub accounts: BTreeMap<String, Account>,
    /// Media by direct path (`/mms/...` without query).
    pub media: BTreeMap<String, MediaMeta>,
    /// Which device sent each recent message, so a receipt addressed to the
    /// bare user (as clients send them) reaches that device, also after a
    /// restart.
    #[serde(default)]
    pub origins: Origins,
    /// The first journal that follows this base (see `journal`).
    #[serde(default)]
    pub journal: u64,
    /// Groups and communities by id (the user part of `<id>@g.us`).
    #[serde(default)]
    pub groups: BTreeMap<String, Group>,
}

/// A group as WhatsApp's server keeps it (see `groups`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub id: String,
    pub subject: String,
    /// Who set the subject (a phone number) and when.
    pub subject_owner: String,
    pub subject_time: u64,
    #[serde(default)]
    pub description: Option<GroupDescription>,
    /// The creator's phone number.
    pub creator: String,
    pub created_at: u64,
    pub participants: Vec<GroupMember>,
    /// Only admins send messages.
    #[serde(default)]
    pub announce: bool,
    /// Only admins edit the group's info.
    #[serde(default)]
    pub locked: bool,
    /// Disappearing messages: seconds, 0 for off.
    #[serde(default)]
    pub ephemeral: u32,
    /// Joining by link needs an admin's approval.
    #[serde(default)]
    pub membership_approval: bool,
    /// Whether members (not only admins) may add others.
    #[serde(default = "all_may_add")]
    pub members_may_add: bool,
    /// The invite link's code, made on the first request for it.
    #[serde(default)]
    pub invite_code: Option<String>,
    /// `lid`: participants are named by their LIDs (WhatsApp's newer groups), `pn`: by phone.
    pub addressing: Addressing,
    /// A community: the parent of linked groups.
    #[serde(default)]
    pub community: bool,
    /// The community this group is linked to.
    #[serde(default)]
    pub parent: Option<String>,
    /// A community's announcement group (every member of the community is in it).
    #[serde(default)]
    pub announcement_group: bool,
    /// A community's general chat, made with it.
    #[serde(default)]
    pub general_chat: bool,
    /// The group's picture.
    #[serde(default)]
    pub picture: Option<ProfilePicture>,
}

fn all_may_add() -> bool {
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Addressing {
    Pn,
    Lid,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroupDescription {
    pub id: String,
    pub text: String,
    pub owner: String,
    pub time: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroupMember {
    pub phone: String,
    pub role: Role,
    pub joined_at: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Superadmin,
}

impl Group {
    pub fn member(&self, phone: &str) -> Option<&GroupMember> {
        self.participants.iter().find(|m| m.phone == phone)
    }

    pub fn is_admin(&self, phone: &str) -> bool {
        self.member(phone).is_some_and(|m| m.role != Role::Member)
    }

    pub fn jid(&self) -> String {
        format!("{}@g.us", self.id)
    }
}

/// How many message origins are kept: receipts come within minutes, read
/// receipts within days, and each entry costs the snapshot ~60 bytes.
pub const ORIGINS_KEPT: usize = 20_000;

/// Message id -> (phone, device) of its sender, the newest [`ORIGINS_KEPT`].
/// Stored as a list of `[id, phone, device]`, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Origins {
    by_id: HashMap<String, (String, u16)>,
    order: VecDeque<String>,
}

impl Origins {
    pub fn insert(&mut self, id: String, origin: (String, u16)) {
        if self.by_id.insert(id.clone(), origin).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > ORIGINS_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&(String, u16)> {
        self.by_id.get(id)
    }
}

impl Serialize for Origins {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.order.iter().filter_map(|id| {
            self.by_id
                .get(id)
                .map(|(phone, device)| (id, phone, device))
        }))
    }
}

impl<'de> Deserialize<'de> for Origins {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<(String, String, u16)>::deserialize(d)?;
        let mut origins = Origins::default();
        for (id, phone, device) in list {
            origins.insert(id, (phone, device));
        }
        Ok(origins)
    }
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
    /// Reads the base alone; `journal::load` replays the journals over it.
    pub fn load_base(dir: &Path) -> Result<Option<Snapshot>, StateError> {
        let path = dir.join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StateError::Parse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Writes the snapshot atomically (temp file, fsync, rename); returns its size.
    pub fn save(&self, dir: &Path) -> Result<u64, StateError> {
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
        // The rename itself must be on disk before the journals it replaces are deleted.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        Ok(bytes.len() as u64)
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_round_trip_oldest_first_and_keep_only_the_newest() {
        let mut o = Origins::default();
        for i in 0..ORIGINS_KEPT + 3 {
            o.insert(format!("m{i}"), ("15550000001".into(), (i % 3) as u16));
        }
        // Re-inserting a known id does not count twice.
        o.insert("m5".into(), ("15550000001".into(), 7));
        assert!(
            o.get("m0").is_none() && o.get("m2").is_none(),
            "oldest evicted"
        );
        assert_eq!(o.get("m5"), Some(&("15550000001".to_string(), 7)));
        let json = serde_json::to_string(&o).unwrap();
        assert!(
            json.starts_with(r#"[["m3","15550000001",0]"#),
            "{}",
            &json[..40]
        );
        let back: Origins = serde_json::from_str(&json).unwrap();
        assert_eq!(back.order.len(), ORIGINS_KEPT);
        assert_eq!(back.get("m5"), o.get("m5"));
        assert_eq!(
            back.get(&format!("m{}", ORIGINS_KEPT + 2)),
            Some(&("15550000001".to_string(), ((ORIGINS_KEPT + 2) % 3) as u16))
        );
        // Snapshots written before origins were kept still load.
        let old: Snapshot = serde_json::from_str(
            r#"{"server_noise_private":"","next_lid":0,"accounts":{},"media":{}}"#,
        )
        .unwrap();
        assert!(old.origins.get("x").is_none());
    }
}
