//! The shared core of the simulator: accounts, live connections, routing of
//! stanzas between devices, offline queues and fault switches.
//!
//! One `tokio::sync::Mutex<Core>` guards all of it. Routing decisions
//! ("is the device online and caught up? then send, else queue") must be
//! atomic with connection registration, or messages could overtake the
//! offline queue; a single lock makes that trivially true and the simulator
//! is nowhere near lock-bound.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Mutex, Notify, mpsc};
use tokio_util::sync::CancellationToken;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, Server};

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
    pub lid_to_phone: HashMap<String, String>,
    pub conns: HashMap<(String, u16), ConnHandle>,
    pub pairing: HashMap<String, PairingConn>,
    /// Companions waiting for a pairing code to be entered, by phone number.
    pub link_codes: HashMap<String, crate::link_code::LinkCode>,
    pub faults: Faults,
    /// Where uploaded media blobs are kept.
    pub blobs_dir: PathBuf,
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
            lid_to_phone,
            conns: HashMap::new(),
            pairing: HashMap::new(),
            link_codes: HashMap::new(),
            faults: Faults::default(),
            blobs_dir,
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

    pub fn account_mut(&mut self, phone: &str) -> Option<&mut Account> {
        self.snap.accounts.get_mut(phone)
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
        dev.queue.push_back(QueuedStanza {
            id: id.to_string(),
            node: B64(bytes.clone()),
        });
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
        let before = dev.queue.len();
        dev.queue.retain(|q| !ids.contains(&q.id));
        before != dev.queue.len()
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
    pub dirty: Notify,
    pub shutdown: CancellationToken,
}

impl Hub {
    pub fn new(
        snap: Snapshot,
        identity: ServerIdentity,
        data_dir: PathBuf,
        media_host: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            core: Mutex::new(Core::new(snap, data_dir.join("blobs"))),
            identity,
            data_dir,
            media_host,
            dirty: Notify::new(),
            shutdown: CancellationToken::new(),
        })
    }

    /// Asks the persistence task to write a snapshot soon.
    pub fn mark_dirty(&self) {
        self.dirty.notify_one();
    }

    /// Writes the current state to disk now.
    pub async fn persist(&self) {
        let snap = self.core.lock().await.snap.clone();
        let dir = self.data_dir.clone();
        match tokio::task::spawn_blocking(move || snap.save(&dir)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("saving state failed: {e}"),
            Err(e) => tracing::error!("state writer panicked: {e}"),
        }
    }

    /// Background writer: coalesces bursts of changes into one write.
    pub async fn persist_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.dirty.notified() => {}
                _ = self.shutdown.cancelled() => return,
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
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
