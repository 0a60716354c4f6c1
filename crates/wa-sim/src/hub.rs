//! The shared core of the simulator: accounts, live connections, routing of
//! stanzas between devices, offline queues and fault switches.
//!
//! One `tokio::sync::Mutex<Core>` guards all of it. Routing decisions
//! ("is the device online and caught up? then send, else queue") must be
//! atomic with connection registration, or messages could overtake the
//! offline queue; a single lock makes that trivially true. Work under it is
//! kept short: persistence only takes the changes recorded since its last
//! batch ([`Core::changes`]) and writes them after the lock is released.
//!
//! Nothing is confirmed before it is on disk: an answer, an ack or a stanza
//! waits for [`Hub::durable`] before it leaves (a group commit; see `journal`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, Server};

use crate::journal::{self, Journal, Pending};
use crate::noise::ServerIdentity;
use crate::state::{Account, B64, QueuedStanza, Snapshot, now_secs};

/// What a connection task is told to do.
#[derive(Debug)]
pub enum Outbound {
    /// Send this marshaled node.
    Node(Vec<u8>),
    /// Send this node, then close the socket.
    NodeThenClose(Vec<u8>),
    /// Close the socket without a word (a dropped connection).
    Drop,
    /// Keep the socket open but never answer or send again (a connection
    /// that died somewhere along the way without either end noticing).
    Silence,
}

/// A registered, logged-in connection of one device.
pub struct ConnHandle {
    pub conn_id: u64,
    pub tx: mpsc::UnboundedSender<Outbound>,
    /// Set once the offline queue has been flushed; until then new stanzas
    /// are queued behind it so order is kept.
    pub ready: bool,
}

impl ConnHandle {
    /// Hands `out` to the connection's task. A task that already ended has
    /// closed its socket, which is all any caller wants, so that is only logged.
    pub fn send(&self, out: Outbound) {
        if self.tx.send(out).is_err() {
            tracing::debug!("connection {} already closed", self.conn_id);
        }
    }
}

/// A connection showing QR codes, waiting to be scanned.
pub struct PairingConn {
    pub conn_id: u64,
    pub tx: mpsc::UnboundedSender<Outbound>,
    pub noise_pub: [u8; 32],
    pub identity: [u8; 32],
    pub registration_id: u32,
    pub signed_prekey: crate::state::SignedPreKey,
    pub push_name: String,
    pub platform: String,
    /// Set by the scan: the device this connection became.
    pub paired: Option<(String, u16)>,
}

/// Fault switches flipped through the admin API.
#[derive(Default)]
pub struct Faults {
    /// Refuse this many upcoming WebSocket upgrades.
    pub reject_connections: u32,
    /// Upcoming media downloads to break, and how.
    pub media: Option<(MediaFault, u32)>,
    /// While set, every media path that is not a phone's re-upload answers 404, as a
    /// WhatsApp CDN URL does once it has expired.
    pub expire_original_media: bool,
    /// Devices banned until a unix time.
    pub bans: HashMap<(String, u16), u64>,
    /// How the passkey gate of each phone misbehaves.
    pub passkey: HashMap<String, crate::passkey::Faults>,
    /// Per phone, how many upcoming messages from its linked devices to another account
    /// are delivered without the server ack to the sender (as when the ack is lost).
    pub swallow_acks: HashMap<String, u32>,
    /// Per phone, how many of its upcoming messages reach linked devices with their
    /// ciphertext damaged (as a bit error would; only messages of an established session,
    /// `enc type="msg"`, count): the device cannot decrypt them and asks for them again
    /// with a retry receipt, which the phone answers with a fresh copy.
    pub corrupt_next: HashMap<String, u32>,
}

impl Faults {
    /// Whether this message from `phone` to a linked device goes damaged (counts it).
    pub fn corrupt(&mut self, phone: &str) -> bool {
        match self.corrupt_next.get_mut(phone) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    /// Whether the ack of this message from `phone` is to be swallowed (counts it).
    pub fn swallow_ack(&mut self, phone: &str) -> bool {
        match self.swallow_acks.get_mut(phone) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

/// How a faulted media download fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaFault {
    NotFound,
    Corrupt,
    /// Answer 413 as if the blob exceeded the host's size limit.
    Oversized,
}

/// All mutable simulator state.
pub struct Core {
    pub snap: Snapshot,
    /// What changed in `snap` since the last journal batch. Whoever changes `snap`
    /// records it here: [`Core::account_mut`] does for an account's keys and devices;
    /// message history, outboxes, queues, origins, media and Signal sessions are
    /// recorded entry by entry.
    pub changes: Pending,
    pub lid_to_phone: HashMap<String, String>,
    pub conns: HashMap<(String, u16), ConnHandle>,
    pub pairing: HashMap<String, PairingConn>,
    /// Companions waiting for a pairing code to be entered, by phone number.
    pub link_codes: HashMap<String, crate::link_code::LinkCode>,
    /// Passkey ceremonies of gated phones (see `passkey`).
    pub passkeys: crate::passkey::Ceremonies,
    pub faults: Faults,
    /// Who is available and who subscribed to whom (see `presence`).
    pub presence: crate::presence::Presences,
    /// Calls, ringing or done (see `calls`).
    pub calls: crate::calls::Calls,
    /// Where uploaded media blobs are kept.
    pub blobs_dir: PathBuf,
    /// How groups a device creates name their participants (`POST /admin/groups/addressing`).
    pub group_addressing: crate::state::Addressing,
    /// The device whose `w:g2` request is being handled: it has the answer, so the change's
    /// notification skips it.
    pub acting_device: Option<u16>,
    next_conn_id: u64,
}

impl Core {
    pub fn new(snap: Snapshot, blobs_dir: PathBuf) -> Self {
        let lid_to_phone = snap
            .accounts
            .values()
            .map(|a| (a.lid.clone(), a.phone.clone()))
            .collect();
        Self {
            snap,
            changes: Pending::default(),
            lid_to_phone,
            conns: HashMap::new(),
            pairing: HashMap::new(),
            link_codes: HashMap::new(),
            passkeys: Default::default(),
            faults: Faults::default(),
            presence: Default::default(),
            calls: Default::default(),
            blobs_dir,
            group_addressing: crate::state::Addressing::Pn,
            acting_device: None,
            next_conn_id: 1,
        }
    }

    pub fn next_conn_id(&mut self) -> u64 {
        self.next_conn_id += 1;
        self.next_conn_id
    }

    /// The account's phone number for a user JID in either addressing form.
    pub fn phone_of(&self, jid: &Jid) -> Option<String> {
        match jid.server {
            Server::Pn | Server::Legacy => self
                .snap
                .accounts
                .contains_key(jid.user.as_str())
                .then(|| jid.user.to_string()),
            Server::Lid => self.lid_to_phone.get(jid.user.as_str()).cloned(),
            _ => None,
        }
    }

    pub fn account(&self, phone: &str) -> Option<&Account> {
        self.snap.accounts.get(phone)
    }

    /// An account to change its keys, sessions or devices: it is written whole with the
    /// next batch.
    pub fn account_mut(&mut self, phone: &str) -> Option<&mut Account> {
        let acc = self.snap.accounts.get_mut(phone)?;
        self.changes.account(phone);
        Some(acc)
    }

    /// An account whose changes the caller records in [`Core::changes`] itself (the
    /// per-message paths, which would otherwise copy the account at every batch).
    pub fn account_untracked(&mut self, phone: &str) -> Option<&mut Account> {
        self.snap.accounts.get_mut(phone)
    }

    /// Adds a new account.
    pub fn insert_account(&mut self, acc: Account) {
        self.lid_to_phone.insert(acc.lid.clone(), acc.phone.clone());
        self.changes.account(&acc.phone);
        self.changes.globals();
        self.snap.accounts.insert(acc.phone.clone(), acc);
    }

    /// Records which device sent message `id`.
    pub fn add_origin(&mut self, id: &str, phone: &str, device: u16) {
        self.snap
            .origins
            .insert(id.to_string(), (phone.to_string(), device));
        self.changes.push(journal::Change::Origin {
            id: id.to_string(),
            phone: phone.to_string(),
            device,
        });
    }

    /// Records a media blob's location.
    pub fn add_media(&mut self, path: String, meta: crate::state::MediaMeta) {
        self.changes.push(journal::Change::Media {
            path: path.clone(),
            meta: meta.clone(),
        });
        self.snap.media.insert(path, meta);
    }

    /// A device's JID in the addressing form `like` uses.
    pub fn device_jid(&self, phone: &str, device: u16, lid_form: bool) -> Jid {
        if lid_form && let Some(acc) = self.account(phone) {
            return Jid::lid_device(acc.lid.clone(), device);
        }
        Jid::pn_device(phone.to_string(), device)
    }

    /// Sends `node` to a companion device now if it is connected and caught
    /// up, else appends it to the device's offline queue. Stanzas with an id
    /// stay queued until the device acks or receipts them, so a connection
    /// dropped mid-delivery redelivers them on the next login.
    pub fn deliver_to_companion(&mut self, phone: &str, device: u16, id: &str, node: &Node) {
        let bytes = match wacore_binary::marshal::marshal(node) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot marshal stanza {id}: {e}");
                return;
            }
        };
        let Some(acc) = self.snap.accounts.get_mut(phone) else {
            return;
        };
        let Some(dev) = acc.devices.get_mut(&device) else {
            return;
        };
        let stanza = QueuedStanza {
            id: id.to_string(),
            node: B64(bytes.clone()),
        };
        dev.queue.push_back(stanza.clone());
        self.changes.queued(phone, device, stanza);
        if let Some(conn) = self.conns.get(&(phone.to_string(), device))
            && conn.ready
        {
            // The receiving task marks it delivered only via ack/receipt.
            if conn.tx.send(Outbound::Node(bytes)).is_err() {
                tracing::debug!("connection of {phone}:{device} went away; stanza stays queued");
            }
        }
    }

    /// Drops queued stanzas the device has acknowledged.
    pub fn acknowledge(&mut self, phone: &str, device: u16, ids: &[String]) -> bool {
        let Some(dev) = self
            .snap
            .accounts
            .get_mut(phone)
            .and_then(|a| a.devices.get_mut(&device))
        else {
            return false;
        };
        let mut any = false;
        for id in ids {
            let before = dev.queue.len();
            // Acks mostly come in order: the stanza is at the front. The same id can be
            // queued more than once (a message's delivery and read receipts); an ack
            // takes them all.
            if dev.queue.front().is_some_and(|q| q.id == *id) {
                dev.queue.pop_front();
            }
            if dev.queue.iter().any(|q| q.id == *id) {
                dev.queue.retain(|q| q.id != *id);
            }
            let removed = before - dev.queue.len();
            if removed > 0 {
                self.changes.acked(phone, device, id, removed);
                any = true;
            }
        }
        any
    }

    /// Companion device ids of an account (everything but the phone).
    pub fn companions(&self, phone: &str) -> Vec<u16> {
        self.account(phone)
            .map(|a| a.devices.keys().copied().filter(|d| *d != 0).collect())
            .unwrap_or_default()
    }
}

/// The simulator's shared handle, owned by every task.
pub struct Hub {
    pub core: Mutex<Core>,
    pub identity: ServerIdentity,
    pub data_dir: PathBuf,
    /// `host:port` clients use for media (the same port as everything else).
    pub media_host: String,
    pub shutdown: CancellationToken,
    /// The latency and jitter of the chat socket (off unless set).
    pub network: crate::network::Shaping,
    /// Held from taking a batch until it is written, so batches reach the journal in
    /// the order they were taken.
    writer: Mutex<Writer>,
    commit: Commit,
}

/// The group commit: batches are numbered in the order they are taken, and
/// whoever must not answer before its change is on disk waits for the number
/// of the batch its change went into.
struct Commit {
    /// The batch that what is recorded now goes into. Moved on only by
    /// [`Hub::persist`], under the core lock, as it takes a batch.
    collecting: AtomicU64,
    /// The last batch on disk (with every batch before it).
    written: watch::Sender<u64>,
    /// Someone waits: take and write a batch now rather than at the next tick.
    wanted: Notify,
}

struct Writer {
    journal: Arc<std::sync::Mutex<Journal>>,
    /// A batch whose write failed; it goes out ahead of the next one.
    unwritten: Vec<journal::Change>,
    /// A compaction running in the background, with the size of the base it writes.
    compaction: Option<tokio::task::JoinHandle<Result<u64, crate::state::StateError>>>,
}

impl Hub {
    pub fn new(
        snap: Snapshot,
        identity: ServerIdentity,
        data_dir: PathBuf,
        media_host: String,
        journal: Journal,
    ) -> Arc<Self> {
        Arc::new(Self {
            core: Mutex::new(Core::new(snap, data_dir.join("blobs"))),
            identity,
            data_dir,
            media_host,
            shutdown: CancellationToken::new(),
            network: Default::default(),
            writer: Mutex::new(Writer {
                journal: Arc::new(std::sync::Mutex::new(journal)),
                unwritten: Vec::new(),
                compaction: None,
            }),
            commit: Commit {
                collecting: AtomicU64::new(1),
                written: watch::Sender::new(0),
                wanted: Notify::new(),
            },
        })
    }

    /// Returns once everything recorded in [`Core::changes`] before the call is
    /// on disk. Whatever confirms a change (an admin answer, a server ack, a
    /// relayed receipt, `pair-success`) waits for this before it leaves. Callers
    /// that arrive while a batch is being written all go into the next one.
    pub async fn durable(&self) {
        // A change recorded before this load is in this batch or an earlier one:
        // `persist` moves `collecting` on under the lock the change was made under.
        let batch = self.commit.collecting.load(Ordering::SeqCst);
        let mut written = self.commit.written.subscribe();
        self.commit.wanted.notify_one();
        if written.wait_for(|w| *w >= batch).await.is_err() {
            // The sender lives in the hub, which outlives every caller.
            tracing::error!("the journal writer is gone; answering without it");
        }
    }

    /// Writes what changed since the last batch to the journal now, tells the
    /// waiters, and starts a compaction when the journal has grown enough.
    pub async fn persist(&self) {
        let mut writer = self.writer.lock().await;
        let mut batch = std::mem::take(&mut writer.unwritten);
        let number = {
            let mut core = self.core.lock().await;
            if !core.changes.is_empty() {
                let Core { snap, changes, .. } = &mut *core;
                batch.extend(changes.take(snap));
            }
            self.commit.collecting.fetch_add(1, Ordering::SeqCst)
        };
        if batch.is_empty() {
            // Nothing new, and every earlier batch is written (a failed one would
            // be in `batch`): this one is as durable as they are.
            self.commit.written.send_replace(number);
            return;
        }
        if let Some(done) = writer.compaction.take_if(|c| c.is_finished()) {
            Self::compacted(&writer, done).await;
        }
        let compacting = writer.compaction.is_some();
        let journal = writer.journal.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut journal = journal.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = journal.append(&batch) {
                return Err((e, Some(batch)));
            }
            if compacting || !journal.wants_compaction() {
                return Ok(None);
            }
            journal.rotate().map(Some).map_err(|e| (e, None))
        })
        .await;
        match written {
            Ok(Ok(None)) => {
                self.commit.written.send_replace(number);
            }
            Ok(Ok(Some(finished))) => {
                self.commit.written.send_replace(number);
                let dir = self.data_dir.clone();
                writer.compaction = Some(tokio::task::spawn_blocking(move || {
                    journal::compact(&dir, finished)
                }));
            }
            Ok(Err((e, Some(batch)))) => {
                // The waiters keep waiting; the batch goes out with the next one
                // (two batches in a row apply as they would one after the other).
                tracing::error!("writing the journal failed: {e}");
                writer.unwritten = batch;
            }
            Ok(Err((e, None))) => {
                // The batch is on disk; only moving on to a new journal failed.
                tracing::error!("starting a new journal failed: {e}");
                self.commit.written.send_replace(number);
            }
            Err(e) => tracing::error!("journal writer panicked: {e}"),
        }
    }

    async fn compacted(
        writer: &Writer,
        done: tokio::task::JoinHandle<Result<u64, crate::state::StateError>>,
    ) {
        match done.await {
            Ok(Ok(size)) => {
                writer
                    .journal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .base_size = size;
            }
            // The journals stay; the next compaction includes them.
            Ok(Err(e)) => tracing::error!("compacting the state failed: {e}"),
            Err(e) => tracing::error!("compaction panicked: {e}"),
        }
    }

    /// Writes what is left and waits for a running compaction.
    pub async fn close(&self) {
        self.persist().await;
        let mut writer = self.writer.lock().await;
        if let Some(c) = writer.compaction.take() {
            Self::compacted(&writer, c).await;
        }
    }

    /// Background writer, until `stop`: a batch as soon as someone waits for one
    /// ([`Hub::durable`]), else one per [`journal::INTERVAL`]. What accumulates
    /// while a batch is being written goes into the next.
    pub async fn persist_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(journal::INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.commit.wanted.notified() => {}
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            self.persist().await;
        }
    }
}

/// A fresh message/IQ id in the style of the real server.
pub fn new_id() -> String {
    let n: u64 = rand::random();
    format!("{n:016X}")
}

/// `<ib><offline count=N/></ib>`: tells the client its backlog is through.
pub fn offline_marker(count: usize) -> Node {
    NodeBuilder::new("ib")
        .children([NodeBuilder::new("offline")
            .attr("count", count.to_string())
            .build()])
        .build()
}

/// Server timestamp attribute value.
pub fn t_now() -> String {
    now_secs().to_string()
}
