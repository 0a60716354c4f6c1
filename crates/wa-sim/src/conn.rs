//! One WebSocket connection at `/ws/chat`: the Noise handshake, then
//! registration (QR pairing) or login, then the stanza loop.
//!
//! Anything malformed ends this connection only. Errors inside are
//! [`ConnError`]; they are logged at debug level since a misbehaving client
//! is an expected event for a test server.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use tokio::sync::mpsc;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, NodeContent, Server};
use waproto::buffa::Message as _;
use waproto::whatsapp as wa;

use crate::hub::{ConnHandle, Hub, Outbound, PairingConn, new_id, t_now};
use crate::network::InFlight;
use crate::noise::{self, FrameCipher, FrameReader, HelloOutcome};
use crate::phone::attr;
use crate::state::{B64, SignedPreKey, now_secs};

/// Why a connection was closed by the server.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("handshake: {0}")]
    Noise(#[from] noise::NoiseServerError),
    #[error("timed out waiting for the client")]
    Timeout,
    #[error("socket closed")]
    Closed,
    #[error("bad client payload: {0}")]
    Payload(String),
    #[error("bad stanza: {0}")]
    Binary(#[from] wacore_binary::BinaryError),
}

type Result<T> = std::result::Result<T, ConnError>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// Who is on the other end once the handshake is done.
enum Peer {
    Device { phone: String, device: u16 },
    Pairing { refs: Vec<String>, conn_id: u64 },
}

/// Runs a connection to completion.
pub async fn run(hub: Arc<Hub>, mut ws: WebSocket) {
    let mut reader = FrameReader::default();
    match serve(&hub, &mut ws, &mut reader).await {
        Ok(()) => {}
        Err(e) => tracing::debug!("connection closed: {e}"),
    }
    // A close frame is a courtesy; the peer may already be gone.
    if ws.send(Message::Close(None)).await.is_err() {
        tracing::trace!("peer left before the close frame");
    }
}

async fn next_bytes(ws: &mut WebSocket) -> Result<Vec<u8>> {
    loop {
        match ws.recv().await {
            Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
            Some(Ok(Message::Text(_))) => {
                return Err(ConnError::Payload(
                    "text frames are not part of the protocol".into(),
                ));
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Err(ConnError::Closed),
            Some(Ok(_)) => continue,
        }
    }
}

async fn next_frame(ws: &mut WebSocket, reader: &mut FrameReader) -> Result<Vec<u8>> {
    loop {
        if let Some(frame) = reader.next_frame()? {
            return Ok(frame);
        }
        let bytes = next_bytes(ws).await?;
        reader.feed(&bytes);
    }
}

async fn handshake(
    hub: &Hub,
    ws: &mut WebSocket,
    reader: &mut FrameReader,
) -> Result<noise::Established> {
    let prologue = loop {
        if let Some(h) = reader.take_header()? {
            break h;
        }
        let bytes = next_bytes(ws).await?;
        reader.feed(&bytes);
    };
    let hello = next_frame(ws, reader).await?;
    match noise::respond_to_hello(&hub.identity, &prologue, &hello)? {
        HelloOutcome::Done { reply, established } => {
            send_late(hub, ws, noise::frame(&reply)).await?;
            Ok(established)
        }
        HelloOutcome::Continue { reply, pending } => {
            send_late(hub, ws, noise::frame(&reply)).await?;
            let finish = next_frame(ws, reader).await?;
            Ok(noise::finish_xx(pending, &finish)?)
        }
    }
}

async fn send_raw(ws: &mut WebSocket, bytes: Vec<u8>) -> Result<()> {
    ws.send(Message::Binary(bytes.into()))
        .await
        .map_err(|_| ConnError::Closed)
}

/// Writes `bytes` once the network's delay has passed: for the frames before the stanza
/// loop (handshake, login answer), when nothing else is in flight.
async fn send_late(hub: &Hub, ws: &mut WebSocket, bytes: Vec<u8>) -> Result<()> {
    let delay = hub.network.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    send_raw(ws, bytes).await
}

async fn send_node(
    hub: &Hub,
    ws: &mut WebSocket,
    cipher: &mut FrameCipher,
    node: &Node,
) -> Result<()> {
    let bytes = wacore_binary::marshal::marshal(node)?;
    let framed = cipher.seal(&bytes)?;
    send_late(hub, ws, framed).await
}

/// Sends a sealed frame through the network: now, or put in flight.
async fn emit(hub: &Hub, ws: &mut WebSocket, flight: &mut InFlight, framed: Vec<u8>) -> Result<()> {
    match flight.send(hub.network.get(), framed) {
        Some(now) => send_raw(ws, now).await,
        None => Ok(()),
    }
}

/// Lets every frame in flight arrive, each at its time (before the server closes).
async fn land(ws: &mut WebSocket, flight: &mut InFlight) -> Result<()> {
    for (at, bytes) in flight.drain().collect::<Vec<_>>() {
        tokio::time::sleep_until(at).await;
        send_raw(ws, bytes).await?;
    }
    Ok(())
}

fn failure(reason: &str) -> Node {
    NodeBuilder::new("failure")
        .attr("reason", reason.to_string())
        .attr("location", "sim")
        .build()
}

async fn serve(hub: &Arc<Hub>, ws: &mut WebSocket, reader: &mut FrameReader) -> Result<()> {
    let established = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(hub, ws, reader))
        .await
        .map_err(|_| ConnError::Timeout)??;
    let mut cipher = FrameCipher::new(established.write, established.read);
    let payload = wa::ClientPayload::decode_from_slice(&established.payload)
        .map_err(|e| ConnError::Payload(e.to_string()))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Outbound>();

    let peer = if let Some(user) = payload.username {
        let phone = user.to_string();
        let device = payload.device.unwrap_or(0) as u16;
        let mut core = hub.core.lock().await;
        let verdict = login_verdict(&core, &phone, device, &established.client_static);
        if let Some(node) = verdict {
            drop(core);
            send_node(hub, ws, &mut cipher, &node).await?;
            return Ok(());
        }
        let conn_id = core.next_conn_id();
        if let Some(old) = core.conns.insert(
            (phone.clone(), device),
            ConnHandle {
                conn_id,
                tx: tx.clone(),
                ready: false,
            },
        ) {
            // A newer login of the same device wins; the old socket is
            // usually already dead (the client is reconnecting).
            old.send(Outbound::Drop);
        }
        let lid = core
            .account(&phone)
            .map(|a| a.lid.clone())
            .unwrap_or_default();
        let renamed = if let Some(name) = payload.push_name.as_ref()
            && let Some(dev) = core
                .account_untracked(&phone)
                .and_then(|a| a.devices.get_mut(&device))
            && dev.push_name != *name
        {
            dev.push_name = name.clone();
            true
        } else {
            false
        };
        if renamed {
            core.changes.account(&phone);
        }
        drop(core);
        let success = NodeBuilder::new("success")
            .attr("t", t_now())
            .attr("lid", Jid::lid_device(lid, device))
            .attr("props", "1")
            .attr("abprops", "1")
            .attr("location", "sim")
            .attr("creation", now_secs().to_string())
            .build();
        hub.durable().await;
        send_node(hub, ws, &mut cipher, &success).await?;
        tracing::debug!("{phone}:{device} logged in");
        (Peer::Device { phone, device }, conn_id)
    } else {
        let reg = payload
            .device_pairing_data
            .as_option()
            .ok_or_else(|| ConnError::Payload("neither login nor registration".into()))?;
        let pairing = pairing_conn(reg, &payload, &established.client_static, tx.clone())?;
        let refs: Vec<String> = (0..6).map(|_| pair_ref()).collect();
        let mut core = hub.core.lock().await;
        let conn_id = core.next_conn_id();
        for r in &refs {
            core.pairing.insert(
                r.clone(),
                PairingConn {
                    conn_id,
                    ..pairing.clone_for()
                },
            );
        }
        drop(core);
        let node = NodeBuilder::new("iq")
            .attr("from", "s.whatsapp.net")
            .attr("type", "set")
            .attr("id", new_id())
            .attr("xmlns", "md")
            .children([NodeBuilder::new("pair-device")
                .children(
                    refs.iter()
                        .map(|r| NodeBuilder::new("ref").bytes(r.as_bytes().to_vec()).build()),
                )
                .build()])
            .build();
        send_node(hub, ws, &mut cipher, &node).await?;
        (Peer::Pairing { refs, conn_id }, conn_id)
    };
    let (peer, conn_id) = peer;

    let result = stanza_loop(hub, ws, reader, &mut cipher, &peer, &mut rx).await;

    let mut core = hub.core.lock().await;
    match &peer {
        Peer::Device { phone, device } => {
            let key = (phone.clone(), *device);
            if core.conns.get(&key).is_some_and(|c| c.conn_id == conn_id) {
                core.conns.remove(&key);
                crate::presence::disconnected(&mut core, phone, *device);
            }
        }
        Peer::Pairing { refs, .. } => {
            for r in refs {
                core.pairing.remove(r);
            }
            core.link_codes.retain(|_, l| l.conn_id != conn_id);
            crate::passkey::disconnected(&mut core, conn_id);
        }
    }
    result
}

/// `Some(<failure>)` if this login must be refused.
fn login_verdict(
    core: &crate::hub::Core,
    phone: &str,
    device: u16,
    client_static: &[u8; 32],
) -> Option<Node> {
    let Some(acc) = core.account(phone) else {
        return Some(failure("401"));
    };
    if acc.revoked_noise.iter().any(|k| k.0 == client_static) {
        return Some(failure("401"));
    }
    let Some(dev) = acc.devices.get(&device) else {
        return Some(failure("401"));
    };
    if dev.noise_pub.as_ref().map(|k| k.0.as_slice()) != Some(client_static.as_slice()) {
        return Some(failure("401"));
    }
    if let Some(until) = core.faults.bans.get(&(phone.to_string(), device))
        && *until > now_secs()
    {
        // `expire` is the remaining duration in seconds; code 101 is the
        // generic "spam" ban reason.
        return Some(
            NodeBuilder::new("failure")
                .attr("reason", "402")
                .attr("code", "101")
                .attr("expire", (*until - now_secs()).to_string())
                .attr("location", "sim")
                .build(),
        );
    }
    None
}

impl PairingConn {
    fn clone_for(&self) -> PairingConn {
        PairingConn {
            conn_id: self.conn_id,
            tx: self.tx.clone(),
            noise_pub: self.noise_pub,
            identity: self.identity,
            registration_id: self.registration_id,
            signed_prekey: self.signed_prekey.clone(),
            push_name: self.push_name.clone(),
            platform: self.platform.clone(),
            paired: None,
        }
    }
}

fn pair_ref() -> String {
    use base64::Engine as _;
    let bytes: [u8; 18] = rand::random();
    format!(
        "2@{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A big-endian number of up to 4 bytes (registration ids, key ids).
pub fn be_u32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
}

/// A key id as the wire carries it: 3 bytes, big-endian.
pub fn id3(id: u32) -> Vec<u8> {
    id.to_be_bytes()[1..].to_vec()
}

fn pairing_conn(
    reg: &wa::client_payload::DevicePairingRegistrationData,
    payload: &wa::ClientPayload,
    noise_pub: &[u8; 32],
    tx: mpsc::UnboundedSender<Outbound>,
) -> Result<PairingConn> {
    let field = |v: &Option<Vec<u8>>, what: &str| -> Result<Vec<u8>> {
        v.clone()
            .ok_or_else(|| ConnError::Payload(format!("registration without {what}")))
    };
    let identity: [u8; 32] = field(&reg.e_ident, "identity")?
        .try_into()
        .map_err(|_| ConnError::Payload("identity is not 32 bytes".into()))?;
    Ok(PairingConn {
        conn_id: 0,
        tx,
        noise_pub: *noise_pub,
        identity,
        registration_id: be_u32(&field(&reg.e_regid, "registration id")?),
        signed_prekey: SignedPreKey {
            id: be_u32(&field(&reg.e_skey_id, "signed prekey id")?),
            public: B64(field(&reg.e_skey_val, "signed prekey")?),
            signature: B64(field(&reg.e_skey_sig, "signed prekey signature")?),
        },
        push_name: payload.push_name.clone().unwrap_or_default(),
        platform: "web".into(),
        paired: None,
    })
}

async fn stanza_loop(
    hub: &Arc<Hub>,
    ws: &mut WebSocket,
    reader: &mut FrameReader,
    cipher: &mut FrameCipher,
    peer: &Peer,
    rx: &mut mpsc::UnboundedReceiver<Outbound>,
) -> Result<()> {
    let mut flight = InFlight::default();
    loop {
        // Frames already buffered come first. Their answers (acks among them) go
        // out together, once what handling them changed is on disk.
        let mut replies = Vec::new();
        while let Some(frame) = reader.next_frame()? {
            let plain = cipher.open(&frame)?;
            let data = wacore_binary::util::unpack(&plain)?;
            let node = wacore_binary::marshal::unmarshal_ref(&data)?.to_owned();
            replies.extend(handle(hub, peer, node).await);
            if matches!(replies.last(), Some(Reply::Close(_))) {
                break;
            }
        }
        if !replies.is_empty() {
            hub.durable().await;
        }
        for r in replies {
            match r {
                Reply::Node(n) => {
                    let framed = cipher.seal(&wacore_binary::marshal::marshal(&n)?)?;
                    emit(hub, ws, &mut flight, framed).await?;
                }
                Reply::Close(n) => {
                    let framed = cipher.seal(&wacore_binary::marshal::marshal(&n)?)?;
                    emit(hub, ws, &mut flight, framed).await?;
                    return land(ws, &mut flight).await;
                }
            }
        }
        let due = flight.next_due();
        tokio::select! {
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                for bytes in flight.due() {
                    send_raw(ws, bytes).await?;
                }
            }
            incoming = ws.recv() => match incoming {
                Some(Ok(Message::Binary(b))) => reader.feed(&b),
                Some(Ok(Message::Text(_))) => {
                    return Err(ConnError::Payload("text frame".into()));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => {}
            },
            out = rx.recv() => {
                let Some(first) = out else { return Ok(()) };
                // Stanzas routed here (messages, relayed receipts, pair-success) go
                // out once the change that queued them is on disk; those that
                // arrived meanwhile wait for the same batch.
                let mut outs = vec![first];
                while let Ok(next) = rx.try_recv() {
                    outs.push(next);
                }
                hub.durable().await;
                for out in outs {
                    match out {
                        Outbound::Node(bytes) => {
                            let framed = cipher.seal(&bytes)?;
                            emit(hub, ws, &mut flight, framed).await?;
                        }
                        Outbound::NodeThenClose(bytes) => {
                            let framed = cipher.seal(&bytes)?;
                            emit(hub, ws, &mut flight, framed).await?;
                            return land(ws, &mut flight).await;
                        }
                        Outbound::Drop => return Ok(()),
                        Outbound::Silence => return silent(hub, ws, rx).await,
                    }
                }
            }
            _ = hub.shutdown.cancelled() => return Ok(()),
        }
    }
}

/// A dead connection that looks alive: the socket stays open, whatever the
/// client sends is read and ignored (keepalive pings included), and nothing
/// goes out. Stanzas routed here stay queued until the device logs in again.
/// Ends when the client closes the socket or a newer login replaces it.
async fn silent(
    hub: &Arc<Hub>,
    ws: &mut WebSocket,
    rx: &mut mpsc::UnboundedReceiver<Outbound>,
) -> Result<()> {
    tracing::debug!("connection silenced");
    loop {
        tokio::select! {
            incoming = ws.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => {}
            },
            out = rx.recv() => match out {
                Some(Outbound::Drop) | None => return Ok(()),
                Some(_) => {}
            },
            _ = hub.shutdown.cancelled() => return Ok(()),
        }
    }
}

/// What the loop writes after handling a stanza.
pub enum Reply {
    Node(Node),
    Close(Node),
}

pub fn iq_result(id: &str) -> NodeBuilder {
    NodeBuilder::new("iq")
        .attr("from", "s.whatsapp.net")
        .attr("type", "result")
        .attr("id", id.to_string())
}

pub fn iq_error(id: &str, code: u16, text: &str) -> Node {
    NodeBuilder::new("iq")
        .attr("from", "s.whatsapp.net")
        .attr("type", "error")
        .attr("id", id.to_string())
        .children([NodeBuilder::new("error")
            .attr("code", code.to_string())
            .attr("text", text.to_string())
            .build()])
        .build()
}

pub fn children(node: &Node) -> &[Node] {
    node.children().unwrap_or_default()
}

pub fn child<'a>(node: &'a Node, tag: &str) -> Option<&'a Node> {
    children(node).iter().find(|c| c.tag == tag)
}

pub fn bytes_of(node: &Node) -> Option<&[u8]> {
    match &node.content {
        Some(NodeContent::Bytes(b)) => Some(b),
        _ => None,
    }
}

async fn handle(hub: &Arc<Hub>, peer: &Peer, node: Node) -> Vec<Reply> {
    match peer {
        Peer::Pairing { refs, conn_id } => handle_pairing(hub, refs, *conn_id, node).await,
        Peer::Device { phone, device } => {
            crate::router::handle_device_stanza(hub, phone, *device, node).await
        }
    }
}

async fn handle_pairing(hub: &Arc<Hub>, refs: &[String], conn_id: u64, node: Node) -> Vec<Reply> {
    if node.tag != "iq" {
        return Vec::new();
    }
    let id = attr(&node, "id").unwrap_or_default();
    if let Some(replies) = crate::passkey::handle_iq(hub, conn_id, &node).await {
        return replies;
    }
    if let Some(reg) = child(&node, "link_code_companion_reg") {
        return crate::link_code::handle(hub, refs, &node, reg).await;
    }
    if let Some(sign) = child(&node, "pair-device-sign") {
        let identity = child(sign, "device-identity")
            .and_then(bytes_of)
            .map(<[u8]>::to_vec);
        let mut core = hub.core.lock().await;
        let paired = refs
            .iter()
            .find_map(|r| core.pairing.get(r).and_then(|p| p.paired.clone()));
        if let (Some((phone, device)), Some(identity)) = (paired, identity) {
            if let Some(dev) = core
                .account_mut(&phone)
                .and_then(|a| a.devices.get_mut(&device))
            {
                dev.device_identity = Some(B64(identity));
            }
            drop(core);
            tracing::info!("{phone}:{device} paired");
            // The client restarts the stream and logs in with its new identity.
            let restart = NodeBuilder::new("stream:error").attr("code", "515").build();
            return vec![Reply::Close(restart)];
        }
        return Vec::new();
    }
    match attr(&node, "type").as_deref() {
        Some("get") | Some("set") => {
            if attr(&node, "xmlns").as_deref() == Some("w:p") {
                return vec![Reply::Node(iq_result(&id).build())];
            }
            vec![Reply::Node(iq_result(&id).build())]
        }
        _ => Vec::new(),
    }
}

/// A JID attribute value.
pub fn jid_attr(node: &Node, key: &str) -> Option<Jid> {
    node.attrs.get(key).and_then(|v| v.to_jid())
}

/// True for JIDs of users (not groups, broadcasts, servers).
pub fn is_user(jid: &Jid) -> bool {
    matches!(jid.server, Server::Pn | Server::Lid | Server::Legacy) && !jid.user.is_empty()
}
