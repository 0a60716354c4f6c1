//! Persistence by changes: the simulator appends what changed to a journal, instead of
//! writing its whole state, and confirms nothing before it is there.
//!
//! Durable before acknowledged: an admin answer, a server `<ack>`, a relayed receipt or
//! a `pair-success` leaves only once the batch holding the change behind it is written
//! and fsynced (`Hub::durable`). That is a group commit: whoever waits asks for a batch,
//! the writer takes one at once (otherwise every [`INTERVAL`]), and what is recorded
//! while one batch is being fsynced goes into the next. A `kill -9` therefore loses only
//! changes nobody was told about: those in the batch being written, and those recorded
//! since.
//!
//! On disk, the data dir holds `state.json`, a [`Snapshot`] (the base), and
//! `journal-N.jsonl` files. Each journal line is one batch of [`Change`]s (a JSON array),
//! written with one `write` and fsynced before the next batch is taken. The base names
//! the first journal that follows it ([`Snapshot::journal`]); loading reads the base and
//! replays every journal from that number on, in order. A last line cut short by a crash
//! is skipped: that batch was never fsynced, so the simulator never counted it as kept.
//!
//! What a batch holds is cheap to collect under the core lock: the message history,
//! queued stanzas, the phones' outboxes, message origins and media are recorded as they
//! change (a stanza queued and acknowledged within one batch cancels out and is never
//! written); an account whose keys or devices changed is named, and only it is copied
//! when the batch is taken, without its history; a Signal session that changed is copied
//! alone. Nothing copies or serializes the whole state while the simulator runs.
//!
//! Compaction keeps the journals short: once the current journal has grown past
//! [`COMPACT_AFTER`] bytes and past the size of the base, the writer moves on to a new
//! journal and a background thread loads the base and the finished journals from disk and
//! writes them as the new base (atomically, by rename), then deletes those journals. It
//! reads only files, so it needs no lock and no copy of the live state. Every start
//! compacts the same way before serving.
//!
//! Errors are [`StateError`]s.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::{
    Account, B64, DeviceRecord, Group, MediaMeta, OUTBOX_KEPT, PhoneMessage, PhoneSecrets,
    QueuedStanza, SentCopy, Snapshot, StateError,
};

/// How long changes nobody waits for (a login's new push name, say) may wait before they
/// are written; what the simulator confirms is written before it confirms it.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// By default, a journal is compacted into the base once it is larger than this and than the
/// base ([`SimConfig::compact_after`](crate::SimConfig::compact_after)).
pub const COMPACT_AFTER: u64 = 64 << 20;

/// One durable change.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    Globals {
        next_lid: u64,
    },
    /// An account's keys, sessions and devices: everything but its message history,
    /// its outbox and its devices' queues, which change by their own entries.
    Account {
        account: Box<Account>,
    },
    /// One Signal session of a phone (`None`: dropped).
    Session {
        phone: String,
        peer: String,
        record: Option<B64>,
    },
    /// A message the phone sent or received.
    Message {
        phone: String,
        message: Box<PhoneMessage>,
    },
    Status {
        phone: String,
        id: String,
        status: String,
    },
    Queued {
        phone: String,
        device: u16,
        stanza: QueuedStanza,
    },
    Acked {
        phone: String,
        device: u16,
        id: String,
    },
    /// A message kept in the phone's outbox for retries.
    Sent {
        phone: String,
        copy: SentCopy,
    },
    Forgot {
        phone: String,
        id: String,
    },
    Origin {
        id: String,
        phone: String,
        device: u16,
    },
    Media {
        path: String,
        meta: MediaMeta,
    },
    /// One sender key a phone holds (`None`: dropped).
    SenderKey {
        phone: String,
        key: String,
        record: Option<B64>,
    },
    /// A group as it is now (`None`: deleted).
    Group {
        id: String,
        group: Option<Box<Group>>,
    },
}

impl Snapshot {
    /// Applies one journal entry.
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Globals { next_lid } => self.next_lid = next_lid,
            Change::Account { account } => {
                let mut account = *account;
                if let Some(old) = self.accounts.remove(&account.phone) {
                    account.secrets.messages = old.secrets.messages;
                    account.secrets.outbox = old.secrets.outbox;
                    let mut old_devices = old.devices;
                    for (id, dev) in account.devices.iter_mut() {
                        if let Some(old) = old_devices.remove(id) {
                            dev.queue = old.queue;
                        }
                    }
                }
                self.accounts.insert(account.phone.clone(), account);
            }
            Change::Session {
                phone,
                peer,
                record,
            } => {
                if let Some(acc) = self.accounts.get_mut(&phone) {
                    match record {
                        Some(r) => {
                            acc.secrets.sessions.insert(peer, r);
                        }
                        None => {
                            acc.secrets.sessions.remove(&peer);
                        }
                    }
                }
            }
            Change::Message { phone, message } => {
                if let Some(acc) = self.accounts.get_mut(&phone) {
                    acc.secrets.messages.upsert(*message);
                }
            }
            Change::Status { phone, id, status } => {
                if let Some(m) = self
                    .accounts
                    .get_mut(&phone)
                    .and_then(|a| a.secrets.messages.get_mut(&id))
                {
                    m.status = status;
                }
            }
            Change::Queued {
                phone,
                device,
                stanza,
            } => {
                if let Some(dev) = self.device_mut(&phone, device) {
                    dev.queue.push_back(stanza);
                }
            }
            Change::Acked { phone, device, id } => {
                if let Some(dev) = self.device_mut(&phone, device) {
                    dev.queue.retain(|q| q.id != id);
                }
            }
            Change::Sent { phone, copy } => {
                if let Some(acc) = self.accounts.get_mut(&phone) {
                    acc.secrets.outbox.push_back(copy);
                    while acc.secrets.outbox.len() > OUTBOX_KEPT {
                        acc.secrets.outbox.pop_front();
                    }
                }
            }
            Change::Forgot { phone, id } => {
                if let Some(acc) = self.accounts.get_mut(&phone) {
                    acc.secrets.outbox.retain(|c| c.id != id);
                }
            }
            Change::Origin { id, phone, device } => self.origins.insert(id, (phone, device)),
            Change::Media { path, meta } => {
                self.media.insert(path, meta);
            }
            Change::SenderKey { phone, key, record } => {
                if let Some(acc) = self.accounts.get_mut(&phone) {
                    match record {
                        Some(r) => {
                            acc.secrets.sender_keys.insert(key, r);
                        }
                        None => {
                            acc.secrets.sender_keys.remove(&key);
                        }
                    }
                }
            }
            Change::Group { id, group } => match group {
                Some(g) => {
                    self.groups.insert(id, *g);
                }
                None => {
                    self.groups.remove(&id);
                }
            },
        }
    }

    fn device_mut(&mut self, phone: &str, device: u16) -> Option<&mut DeviceRecord> {
        self.accounts
            .get_mut(phone)
            .and_then(|a| a.devices.get_mut(&device))
    }
}

impl Account {
    /// A copy without the message history, the outbox and the queues (see [`Change::Account`]).
    fn structure(&self) -> Account {
        let Account {
            phone,
            lid,
            name,
            next_device_id,
            next_key_index,
            devices,
            revoked_noise,
            secrets,
            created_at,
            passkey,
            privacy,
            blocked,
            offline,
            profile,
            history,
            app_state,
            nct_salt,
            tokens_issued,
            restrictions,
        } = self;
        Account {
            phone: phone.clone(),
            lid: lid.clone(),
            name: name.clone(),
            next_device_id: *next_device_id,
            next_key_index: *next_key_index,
            devices: devices.iter().map(|(id, d)| (*id, d.structure())).collect(),
            revoked_noise: revoked_noise.clone(),
            secrets: secrets.structure(),
            created_at: *created_at,
            passkey: passkey.clone(),
            privacy: privacy.clone(),
            blocked: blocked.clone(),
            offline: *offline,
            profile: profile.clone(),
            history: *history,
            app_state: app_state.clone(),
            nct_salt: nct_salt.clone(),
            tokens_issued: tokens_issued.clone(),
            restrictions: *restrictions,
        }
    }
}

impl DeviceRecord {
    fn structure(&self) -> DeviceRecord {
        let DeviceRecord {
            id,
            noise_pub,
            key_index,
            registration_id,
            identity,
            signed_prekey,
            prekeys,
            device_identity,
            push_name,
            platform,
            queue: _,
        } = self;
        DeviceRecord {
            id: *id,
            noise_pub: noise_pub.clone(),
            key_index: *key_index,
            registration_id: *registration_id,
            identity: identity.clone(),
            signed_prekey: signed_prekey.clone(),
            prekeys: prekeys.clone(),
            device_identity: device_identity.clone(),
            push_name: push_name.clone(),
            platform: platform.clone(),
            queue: Default::default(),
        }
    }
}

impl PhoneSecrets {
    fn structure(&self) -> PhoneSecrets {
        let PhoneSecrets {
            identity_private,
            identity_public,
            registration_id,
            signed_prekey_id,
            signed_prekey_private,
            signed_prekey_public,
            signed_prekey_signature,
            prekeys,
            next_prekey_id,
            sessions,
            identities,
            app_state_key_id,
            app_state_key,
            messages: _,
            outbox: _,
            sender_keys,
            sender_key_shared,
        } = self;
        PhoneSecrets {
            identity_private: identity_private.clone(),
            identity_public: identity_public.clone(),
            registration_id: *registration_id,
            signed_prekey_id: *signed_prekey_id,
            signed_prekey_private: signed_prekey_private.clone(),
            signed_prekey_public: signed_prekey_public.clone(),
            signed_prekey_signature: signed_prekey_signature.clone(),
            prekeys: prekeys.clone(),
            next_prekey_id: *next_prekey_id,
            sessions: sessions.clone(),
            identities: identities.clone(),
            app_state_key_id: app_state_key_id.clone(),
            app_state_key: app_state_key.clone(),
            messages: Default::default(),
            outbox: Default::default(),
            sender_keys: sender_keys.clone(),
            sender_key_shared: sender_key_shared.clone(),
        }
    }
}

/// What changed since the last batch, recorded by the code that changes it.
#[derive(Default)]
pub struct Pending {
    /// Entries in order; `None` where a queued stanza was acknowledged within the batch.
    log: Vec<Option<Change>>,
    /// Where in `log` each stanza queued in this batch is, so an ack can cancel it.
    queued: HashMap<(String, u16, String), Vec<usize>>,
    accounts: HashSet<String>,
    sessions: HashSet<(String, String)>,
    sender_keys: HashSet<(String, String)>,
    groups: HashSet<String>,
    globals: bool,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
            && self.accounts.is_empty()
            && self.sessions.is_empty()
            && self.sender_keys.is_empty()
            && self.groups.is_empty()
            && !self.globals
    }

    pub fn push(&mut self, change: Change) {
        self.log.push(Some(change));
    }

    /// The account's keys, sessions or devices changed.
    pub fn account(&mut self, phone: &str) {
        if !self.accounts.contains(phone) {
            self.accounts.insert(phone.to_string());
        }
    }

    /// One Signal session of the account's phone changed.
    pub fn session(&mut self, phone: &str, peer: String) {
        self.sessions.insert((phone.to_string(), peer));
    }

    /// One sender key of the account's phone changed.
    pub fn sender_key(&mut self, phone: &str, key: String) {
        self.sender_keys.insert((phone.to_string(), key));
    }

    /// A group changed (or was deleted).
    pub fn group(&mut self, id: &str) {
        if !self.groups.contains(id) {
            self.groups.insert(id.to_string());
        }
    }

    pub fn globals(&mut self) {
        self.globals = true;
    }

    pub fn queued(&mut self, phone: &str, device: u16, stanza: QueuedStanza) {
        self.queued
            .entry((phone.to_string(), device, stanza.id.clone()))
            .or_default()
            .push(self.log.len());
        self.log.push(Some(Change::Queued {
            phone: phone.to_string(),
            device,
            stanza,
        }));
    }

    /// `removed` stanzas with this id left the device's queue. Those queued within this
    /// batch are simply not written; an ack is written only for older ones.
    pub fn acked(&mut self, phone: &str, device: u16, id: &str, removed: usize) {
        let key = (phone.to_string(), device, id.to_string());
        let in_batch = self.queued.remove(&key).unwrap_or_default();
        for at in &in_batch {
            self.log[*at] = None;
        }
        if removed > in_batch.len() {
            self.log.push(Some(Change::Acked {
                phone: key.0,
                device,
                id: key.2,
            }));
        }
    }

    /// Turns what was recorded into a batch, copying the accounts and sessions it names
    /// from `snap`. Accounts come first, so the entries after them find their devices.
    pub fn take(&mut self, snap: &Snapshot) -> Vec<Change> {
        let mut batch = Vec::with_capacity(self.log.len() + self.sessions.len() + 1);
        if std::mem::take(&mut self.globals) {
            batch.push(Change::Globals {
                next_lid: snap.next_lid,
            });
        }
        for phone in self.accounts.drain() {
            if let Some(acc) = snap.accounts.get(&phone) {
                batch.push(Change::Account {
                    account: Box::new(acc.structure()),
                });
            }
        }
        batch.extend(self.log.drain(..).flatten());
        self.queued.clear();
        for id in self.groups.drain() {
            batch.push(Change::Group {
                group: snap.groups.get(&id).cloned().map(Box::new),
                id,
            });
        }
        for (phone, key) in self.sender_keys.drain() {
            if let Some(acc) = snap.accounts.get(&phone) {
                let record = acc.secrets.sender_keys.get(&key).cloned();
                batch.push(Change::SenderKey { phone, key, record });
            }
        }
        for (phone, peer) in self.sessions.drain() {
            if let Some(acc) = snap.accounts.get(&phone) {
                let record = acc.secrets.sessions.get(&peer).cloned();
                batch.push(Change::Session {
                    phone,
                    peer,
                    record,
                });
            }
        }
        batch
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

fn journal_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("journal-{seq}.jsonl"))
}

/// The journals in `dir`, by number.
fn journals(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StateError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_prefix("journal-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((seq, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// Loads the base and replays the journals that follow it (up to journal `upto`, when
/// given). The snapshot's [`Snapshot::journal`] is then the number of the next journal.
pub fn load(dir: &Path, upto: Option<u64>) -> Result<Option<Snapshot>, StateError> {
    let Some(mut snap) = Snapshot::load_base(dir)? else {
        return Ok(None);
    };
    for (seq, path) in journals(dir)? {
        if seq < snap.journal || upto.is_some_and(|u| seq > u) {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let mut lines = bytes.split(|b| *b == b'\n').peekable();
        while let Some(line) = lines.next() {
            if line.is_empty() {
                continue;
            }
            let last = lines.peek().is_none_or(|rest| rest.is_empty());
            match serde_json::from_slice::<Vec<Change>>(line) {
                Ok(batch) => batch.into_iter().for_each(|c| snap.apply(c)),
                Err(e) if last => {
                    // Only the batch being written when the process died can be cut short.
                    tracing::warn!(
                        "{}: skipping an incomplete last batch ({e})",
                        path.display()
                    );
                }
                Err(source) => return Err(StateError::Parse { path, source }),
            }
        }
        snap.journal = seq + 1;
    }
    Ok(Some(snap))
}

/// Writes `snap` as the new base and deletes the journals it includes.
pub fn save_base(snap: &Snapshot, dir: &Path) -> Result<u64, StateError> {
    let size = snap.save(dir)?;
    for (seq, path) in journals(dir)? {
        if seq < snap.journal
            && let Err(e) = std::fs::remove_file(&path)
        {
            // Harmless: the next compaction skips and deletes it again.
            tracing::warn!("cannot delete {}: {e}", path.display());
        }
    }
    Ok(size)
}

/// Folds journals up to `upto` into the base, from disk alone. Returns the new base's size.
pub fn compact(dir: &Path, upto: u64) -> Result<u64, StateError> {
    let snap = load(dir, Some(upto))?.unwrap_or_default();
    save_base(&snap, dir)
}

/// The journal being appended to.
pub struct Journal {
    dir: PathBuf,
    seq: u64,
    file: std::fs::File,
    len: u64,
    /// Size of the base when it was last written, to know when compacting pays.
    pub base_size: u64,
    /// The journal size past which compacting pays (see [`COMPACT_AFTER`]).
    compact_after: u64,
}

impl Journal {
    pub fn open(
        dir: &Path,
        seq: u64,
        base_size: u64,
        compact_after: u64,
    ) -> Result<Journal, StateError> {
        let path = journal_path(dir, seq);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        Ok(Journal {
            dir: dir.to_owned(),
            seq,
            file,
            len,
            base_size,
            compact_after,
        })
    }

    /// Appends one batch as one line and waits until it is on disk.
    pub fn append(&mut self, batch: &[Change]) -> Result<(), StateError> {
        let mut line = serde_json::to_vec(batch).expect("changes are always serializable");
        line.push(b'\n');
        let path = journal_path(&self.dir, self.seq);
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Cut off what part of the line got out, or the next batch would be
            // appended to it and the journal would not load.
            if let Err(e) = self.file.set_len(self.len) {
                tracing::error!("{}: cannot cut off a failed write: {e}", path.display());
            }
            return Err(io_err(&path)(e));
        }
        self.len += line.len() as u64;
        Ok(())
    }

    /// Whether this journal is worth folding into the base.
    pub fn wants_compaction(&self) -> bool {
        self.len > self.compact_after.max(self.base_size)
    }

    /// Moves on to the next journal; returns the number of the finished one.
    pub fn rotate(&mut self) -> Result<u64, StateError> {
        let finished = self.seq;
        *self = Journal::open(&self.dir, finished + 1, self.base_size, self.compact_after)?;
        Ok(finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::PhoneMessage;

    fn message(id: &str) -> PhoneMessage {
        PhoneMessage {
            id: id.into(),
            from: "15550000002".into(),
            to: "15550000001".into(),
            from_me: false,
            text: Some(id.into()),
            caption: None,
            media: None,
            timestamp: 1,
            status: "received".into(),
            sender_device: Some(0),
            location: None,
            contacts: Vec::new(),
            reaction: None,
            reactions: Default::default(),
            edited: false,
            revoked: false,
            poll: None,
            vote: None,
            forwarded: false,
            view_once: false,
            mentions: Vec::new(),
        }
    }

    fn account(phone: &str) -> Account {
        let (secrets, record) = crate::signal::generate_phone().unwrap();
        let mut devices = std::collections::BTreeMap::new();
        devices.insert(0, record.clone());
        devices.insert(1, DeviceRecord { id: 1, ..record });
        Account {
            phone: phone.into(),
            lid: "1".into(),
            name: "n".into(),
            next_device_id: 2,
            next_key_index: 1,
            devices,
            revoked_noise: Vec::new(),
            secrets,
            created_at: 1,
            passkey: None,
            privacy: Default::default(),
            blocked: Default::default(),
            offline: false,
            profile: Default::default(),
            history: None,
            app_state: Default::default(),
            nct_salt: None,
            tokens_issued: Default::default(),
            restrictions: Default::default(),
        }
    }

    fn stanza(id: &str) -> QueuedStanza {
        QueuedStanza {
            id: id.into(),
            node: B64(vec![0, 1, 2]),
        }
    }

    /// Records into `pending` and applies to `snap` what the simulator would do for a few
    /// messages, then writes the batch.
    fn run(snap: &mut Snapshot, pending: &mut Pending, journal: &mut Journal, ids: &[&str]) {
        let phone = "15550000001";
        for id in ids {
            let m = message(id);
            snap.accounts
                .get_mut(phone)
                .unwrap()
                .secrets
                .messages
                .upsert(m.clone());
            pending.push(Change::Message {
                phone: phone.into(),
                message: Box::new(m),
            });
            snap.accounts
                .get_mut(phone)
                .unwrap()
                .devices
                .get_mut(&1)
                .unwrap()
                .queue
                .push_back(stanza(id));
            pending.queued(phone, 1, stanza(id));
        }
        journal.append(&pending.take(snap)).unwrap();
    }

    const PHONE: &str = "15550000001";

    /// A state with one account, written as the base in `dir`; returns it and the base's size.
    fn one_account_base(dir: &Path) -> (Snapshot, u64) {
        let mut snap = Snapshot::default();
        snap.accounts.insert(PHONE.into(), account(PHONE));
        let base = save_base(&snap, dir).unwrap();
        (snap, base)
    }

    #[test]
    fn journal_replays_over_the_base_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let phone = PHONE;
        let (mut snap, base) = one_account_base(dir);
        let mut journal = Journal::open(dir, snap.journal, base, COMPACT_AFTER).unwrap();
        let mut pending = Pending::default();

        run(&mut snap, &mut pending, &mut journal, &["a", "b"]);
        // "a" is acknowledged in a later batch, "c" within its own batch: "c" is never
        // written, "a" leaves by an ack.
        run(&mut snap, &mut pending, &mut journal, &["c"]);
        for id in ["a", "c"] {
            let dev = snap
                .accounts
                .get_mut(phone)
                .unwrap()
                .devices
                .get_mut(&1)
                .unwrap();
            dev.queue.retain(|q| q.id != id);
            pending.acked(phone, 1, id, 1);
        }
        let status = Change::Status {
            phone: phone.into(),
            id: "b".into(),
            status: "read".into(),
        };
        snap.apply(Change::Status {
            phone: phone.into(),
            id: "b".into(),
            status: "read".into(),
        });
        pending.push(status);
        // A session changed, and the account's keys.
        snap.accounts
            .get_mut(phone)
            .unwrap()
            .secrets
            .sessions
            .insert("15550000002.0".into(), B64(vec![9]));
        pending.session(phone, "15550000002.0".into());
        snap.accounts.get_mut(phone).unwrap().name = "renamed".into();
        pending.account(phone);
        let batch = pending.take(&snap);
        assert!(
            !batch
                .iter()
                .any(|c| matches!(c, Change::Queued { stanza, .. } if stanza.id == "c")),
            "a stanza acked within its batch is not written"
        );
        journal.append(&batch).unwrap();

        let check = |loaded: &Snapshot| {
            let acc = &loaded.accounts[phone];
            assert_eq!(acc.name, "renamed");
            let messages = acc.secrets.messages.as_slice();
            let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
            assert_eq!(ids, ["a", "b", "c"]);
            assert_eq!(messages[1].status, "read");
            let queue: Vec<&str> = acc.devices[&1]
                .queue
                .iter()
                .map(|q| q.id.as_str())
                .collect();
            assert_eq!(queue, ["b"]);
            assert_eq!(acc.secrets.sessions["15550000002.0"], B64(vec![9]));
        };
        let loaded = load(dir, None).unwrap().unwrap();
        check(&loaded);
        assert_eq!(loaded.journal, 1);

        // A batch cut short by a crash is skipped; the ones before it stay.
        std::fs::OpenOptions::new()
            .append(true)
            .open(journal_path(dir, 0))
            .unwrap()
            .write_all(br#"[{"message":{"phone":"1555"#)
            .unwrap();
        check(&load(dir, None).unwrap().unwrap());

        // Compaction folds journal 0 into the base; journal 1 goes on from there.
        let finished = journal.rotate().unwrap();
        run(&mut snap, &mut pending, &mut journal, &["d"]);
        compact(dir, finished).unwrap();
        assert!(!journal_path(dir, 0).exists());
        let loaded = load(dir, None).unwrap().unwrap();
        let ids: Vec<&str> = loaded.accounts[phone]
            .secrets
            .messages
            .as_slice()
            .iter()
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert_eq!(loaded.journal, 2);
    }

    /// Groups and sender keys are journaled like the rest: a reload has the group as it
    /// was last changed (or gone), and each sender key as last written (or dropped).
    #[test]
    fn groups_and_sender_keys_replay_from_the_journal() {
        use crate::state::{Addressing, Group, GroupMember, Role};
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let (mut snap, base) = one_account_base(dir);
        let mut journal = Journal::open(dir, snap.journal, base, COMPACT_AFTER).unwrap();
        let mut pending = Pending::default();
        let group = |id: &str, subject: &str| Group {
            id: id.into(),
            subject: subject.into(),
            subject_owner: PHONE.into(),
            subject_time: 1,
            description: None,
            creator: PHONE.into(),
            created_at: 1,
            participants: vec![GroupMember {
                phone: PHONE.into(),
                role: Role::Superadmin,
                joined_at: 1,
            }],
            announce: false,
            locked: false,
            ephemeral: 0,
            membership_approval: false,
            members_may_add: true,
            invite_code: None,
            addressing: Addressing::Lid,
            community: false,
            parent: None,
            announcement_group: false,
            general_chat: false,
            picture: None,
        };
        for (id, subject) in [("120363000000000001", "one"), ("120363000000000002", "two")] {
            snap.groups.insert(id.into(), group(id, subject));
            pending.group(id);
        }
        let acc = snap.accounts.get_mut(PHONE).unwrap();
        acc.secrets.sender_keys.insert("g:a".into(), B64(vec![1]));
        acc.secrets.sender_keys.insert("g:b".into(), B64(vec![2]));
        pending.sender_key(PHONE, "g:a".into());
        pending.sender_key(PHONE, "g:b".into());
        journal.append(&pending.take(&snap)).unwrap();
        // Then: one group renamed, the other deleted; one key moved on, the other dropped.
        snap.groups.get_mut("120363000000000001").unwrap().subject = "renamed".into();
        pending.group("120363000000000001");
        snap.groups.remove("120363000000000002");
        pending.group("120363000000000002");
        let acc = snap.accounts.get_mut(PHONE).unwrap();
        acc.secrets.sender_keys.insert("g:a".into(), B64(vec![3]));
        acc.secrets.sender_keys.remove("g:b");
        pending.sender_key(PHONE, "g:a".into());
        pending.sender_key(PHONE, "g:b".into());
        journal.append(&pending.take(&snap)).unwrap();

        let loaded = load(dir, None).unwrap().unwrap();
        assert_eq!(loaded.groups.len(), 1);
        let g = &loaded.groups["120363000000000001"];
        assert_eq!(g.subject, "renamed");
        assert_eq!(g.addressing, Addressing::Lid);
        assert_eq!(g.participants[0].role, Role::Superadmin);
        let keys = &loaded.accounts[PHONE].secrets.sender_keys;
        assert_eq!(keys.get("g:a"), Some(&B64(vec![3])));
        assert!(!keys.contains_key("g:b"));
    }

    #[test]
    fn compaction_waits_for_the_configured_size_and_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let (mut snap, base) = one_account_base(dir);
        let mut journal = Journal::open(dir, snap.journal, base, 0).unwrap();
        let mut pending = Pending::default();
        run(&mut snap, &mut pending, &mut journal, &["a"]);
        assert!(
            !journal.wants_compaction(),
            "a journal smaller than the base is not worth compacting"
        );
        let mut ids = Vec::new();
        while journal.len <= base {
            ids.push(format!("m{}", ids.len()));
            let batch: Vec<&str> = ids.last().map(String::as_str).into_iter().collect();
            run(&mut snap, &mut pending, &mut journal, &batch);
        }
        assert!(journal.wants_compaction());
        // The same journal, with the threshold a benchmark sets: not yet.
        let deferred = Journal::open(dir, snap.journal, base, journal.len + 1).unwrap();
        assert_eq!(deferred.len, journal.len);
        assert!(!deferred.wants_compaction());
    }
}
