//! The only module that talks to whatsapp-rust: builds clients, maps their events to ours,
//! commits inbound messages before they are acknowledged, and sends.
//!
//! Everything outside speaks [`WaEvent`], [`WaSession`] and our own model types. Errors
//! from the library surface as `anyhow::Error` (this is the edge of background work) or as
//! plain strings in [`WaEvent`]s.

mod device_store;
pub mod groups;
mod hook;
mod http;
mod map;
mod media;
pub mod selfcheck;

pub use media::{EncryptedFile, OutgoingMedia, encrypt_file};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::mpsc;
use wacore::proto_helpers::MessageBuilderExt;
use wacore::types::events::{Event as WaLibEvent, EventHandler};
use whatsapp_rust::bot::{Bot, BotHandle};
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::send::SendOptions;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{Client, Jid};
use whatsapp_rust_tokio_transport::TokioWebSocketTransportFactory;

use crate::event::EventBus;
use crate::model::{ChatAddress, Content, Message, MessageStatus, SessionId};
use crate::session::Me;
use crate::store::Store;

/// What a WhatsApp client reports, in our terms.
#[derive(Debug, Clone)]
pub enum WaEvent {
    Qr {
        code: String,
        expires_in_secs: u64,
    },
    PairingCode {
        code: String,
    },
    Paired {
        me: Me,
    },
    Connected {
        me: Me,
    },
    Disconnected {
        reason: String,
    },
    /// The device was unlinked (or its credentials were refused): retrying cannot help.
    LoggedOut {
        reason: String,
    },
    /// Another client took over this device's stream.
    Replaced,
    /// Pairing gave up (pairing error, banned, outdated client).
    PairingFailed {
        reason: String,
    },
    /// Every QR code of this connection expired unscanned. `disconnected`: the client
    /// closed the connection (it keeps it while a pairing-code link is under way).
    QrExhausted {
        disconnected: bool,
    },
    /// WhatsApp asks for a passkey assertion before it links this device.
    PasskeyRequest {
        options_json: String,
    },
    /// WhatsApp accepted the assertion; the phone shows `code`.
    PasskeyConfirmation {
        code: String,
        skip_handoff_ux: bool,
    },
    /// The passkey step failed in the client (or WhatsApp refused what it sent).
    PasskeyFailed {
        reason: String,
    },
    Receipt {
        ids: Vec<String>,
        status: MessageStatus,
        /// In a group: the participant whose receipt it is.
        by: Option<String>,
    },
    /// A call rings (`ended: false`), or the caller hung up before it was taken.
    Call {
        call_id: String,
        /// Who calls (the peer the call's signaling goes to).
        from: String,
        /// Who created the call (the caller, for a one-to-one call).
        creator: String,
        video: bool,
        ended: bool,
        timestamp: i64,
    },
    /// A message arrived that could not be decrypted; the client has asked the sender for
    /// it again (a retry receipt), and it follows as a message when that works.
    Undecryptable {
        id: String,
        chat: String,
        from: String,
        timestamp: i64,
        /// WhatsApp itself withheld the content (view-once, or a message for another device).
        unavailable: bool,
    },
    /// A contact came online or went offline (`last_seen`: Unix seconds, where shared), or
    /// shows a chat state (typing, recording, paused) in their chat with us.
    Presence {
        from: String,
        state: crate::model::PresenceState,
        last_seen: Option<i64>,
    },
    /// The account pinned, archived, muted or marked a chat (on any of its devices, this
    /// one included): app state WhatsApp synced.
    Chat {
        chat: String,
        change: crate::model::ChatChange,
    },
    /// The account deleted message `id` of chat `chat` for itself (on any of its devices,
    /// this one included).
    DeletedForMe {
        chat: String,
        id: String,
    },
    /// The account starred or unstarred message `id` (on any of its devices).
    Starred {
        id: String,
        starred: bool,
    },
    /// WhatsApp's server took (or, with `error`, refused) the message sent with `id`.
    ServerAck {
        id: String,
        error: Option<String>,
    },
    /// Something changed in a group we are (or were) in; `by`: who did it.
    Group {
        group: String,
        by: Option<String>,
        news: groups::GroupNews,
        timestamp: i64,
    },
}

/// Where the clients connect and what they trust.
#[derive(Clone, Default)]
pub struct Endpoint {
    /// WebSocket URL; `None` is WhatsApp itself.
    pub url: Option<String>,
    /// Extra CA (PEM) to trust for the WebSocket and media hosts.
    pub ca_pem: Option<Vec<u8>>,
}

/// Builds WhatsApp clients for sessions.
pub struct WaConnector {
    device_db: PathBuf,
    endpoint: Endpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
    http: http::ReqwestHttpClient,
    bus: EventBus,
    media_wake: Option<Arc<tokio::sync::Notify>>,
    /// Commits every session's inbound messages (see [`hook::Committer`]).
    committer: hook::Committer,
    /// What each session ignores.
    ignores: hook::Ignores,
    /// Writes every device's pending-inbound rows (see [`device_store::Pending`]).
    pending: device_store::Pending,
    /// Holds the device stores when the database is PostgreSQL.
    store: Store,
    /// Clients being opened at once (see [`OPENING_AT_ONCE`]).
    opening: tokio::sync::Semaphore,
    /// Set once the device store's schema is up to date (see [`WaConnector::migrate`]).
    migrated: tokio::sync::OnceCell<()>,
}

/// How many clients may be opening their device store at once. Each opens its own SQLite
/// connection on the shared device database and checks its migrations there, on a blocking
/// thread; a restart starts every stored session together, and 1,000 openings at once spent
/// most of their time waiting on the file's lock (SQLite's busy handler sleeps between
/// tries) instead of opening. A handful at a time keeps both cores busy without that.
const OPENING_AT_ONCE: usize = 8;

/// WhatsApp Web version announced when we cannot look it up (no network to WhatsApp:
/// tests and the sandbox).
const PINNED_VERSION: (u32, u32, u32) = (2, 3000, 1_023_000_000);

impl WaConnector {
    pub fn new(
        device_db: &Path,
        endpoint: Endpoint,
        store: Store,
        bus: EventBus,
    ) -> anyhow::Result<Self> {
        let tls = match &endpoint.ca_pem {
            Some(pem) => Some(Arc::new(http::rustls_config_with_ca(pem)?)),
            None => None,
        };
        let http = http::ReqwestHttpClient::new(endpoint.ca_pem.as_deref())?;
        Ok(Self {
            device_db: device_db.to_owned(),
            endpoint,
            tls,
            http,
            pending: device_store::Pending::start(store.clone()),
            store: store.clone(),
            committer: hook::Committer::start(store),
            ignores: Default::default(),
            bus,
            media_wake: None,
            opening: tokio::sync::Semaphore::new(OPENING_AT_ONCE),
            migrated: tokio::sync::OnceCell::new(),
        })
    }

    /// Lets the durability hook wake the media worker when it commits a download job.
    pub fn with_media_wake(mut self, wake: Arc<tokio::sync::Notify>) -> Self {
        self.media_wake = Some(wake);
        self
    }

    /// Builds and starts the client for one session. It connects (and reconnects) on its
    /// own; what happens is reported on `events`.
    ///
    /// `push_name` is the account's name as we stored it when the session last connected.
    /// whatsapp-rust keeps the name in its device store, written every 30 s; a device that
    /// lost it (the process was killed before that write) takes the first-login path on
    /// every connection, which waits up to 10 s for an app-state key share before it
    /// reports itself connected. Handing it the name we know puts it back; WhatsApp's own
    /// app-state sync still corrects it if the user renamed the account meanwhile.
    pub async fn start(
        &self,
        session_id: &SessionId,
        device_id: i64,
        push_name: Option<&str>,
        events: mpsc::UnboundedSender<WaEvent>,
    ) -> anyhow::Result<(WaSession, WaRunning)> {
        let device_id = i32::try_from(device_id).context("device number out of range")?;
        // Held until the client is built (it loads the device from the store); connecting
        // happens after, concurrently.
        self.migrate().await?;
        let opening_slot = self
            .opening
            .acquire()
            .await
            .context("the connector is closed")?;
        let keys = self
            .store
            .open_device(&self.device_db, device_id)
            .await
            .context("cannot open the WhatsApp device store")?;
        let backend = device_store::DeviceBackend::new(
            keys.backend,
            i64::from(device_id),
            self.pending.clone(),
            keys.legacy_pending,
        );
        let mut transport = TokioWebSocketTransportFactory::new();
        if let Some(url) = &self.endpoint.url {
            transport = transport.with_url(url.clone());
        }
        if let Some(tls) = &self.tls {
            transport = transport.with_connector(whatsapp_rust_tokio_transport::Connector::Rustls(
                tokio_rustls::TlsConnector::from(tls.clone()),
            ));
        }
        let ignore = crate::store::settings::ignore(&self.store, session_id.as_str())
            .await
            .context("cannot read the session's settings")?;
        self.set_ignore(session_id.as_str(), ignore);
        let hook = hook::Durability {
            session_id: session_id.to_string(),
            committer: self.committer.clone(),
            store: self.store.clone(),
            bus: self.bus.clone(),
            media_wake: self.media_wake.clone(),
            ignores: self.ignores.clone(),
        };
        let mut builder = Bot::builder()
            .with_backend(backend)
            .with_transport_factory(transport)
            .with_http_client(self.http.clone())
            .with_inbound_durability_hook(hook)
            .with_event_handler(Handler { events })
            .skip_history_sync();
        if self.endpoint.url.is_some() {
            builder = builder.with_version(PINNED_VERSION);
        }
        if let Some(name) = push_name.filter(|n| !n.is_empty()) {
            builder = builder.with_push_name(name);
        }
        let bot = builder
            .build()
            .await
            .context("cannot build the WhatsApp client")?;
        let client = bot.client();
        // The session actor reconnects with its own jittered backoff (see session::actor);
        // the client's loop then ends with each connection instead of retrying itself.
        client
            .enable_auto_reconnect
            .store(false, std::sync::atomic::Ordering::Relaxed);
        drop(opening_slot);
        let handle = bot.spawn();
        Ok((
            WaSession {
                client,
                session_id: session_id.to_string(),
            },
            WaRunning { handle },
        ))
    }

    /// What the session's running client drops from now on (read again at each start).
    pub fn set_ignore(&self, session_id: &str, ignore: crate::model::Ignore) {
        self.ignores
            .write()
            .expect("ignores lock")
            .insert(session_id.to_owned(), ignore);
    }

    /// Brings the device store's schema up to date, once, before any device opens it.
    ///
    /// Every device's store runs the storage crate's migrations when it opens, each on its
    /// own connection; on a new file, stores opening together each saw no schema yet and
    /// all created it, and all but one failed ("table identities already exists"). One
    /// store opened first leaves the others nothing to migrate.
    async fn migrate(&self) -> anyhow::Result<()> {
        self.migrated
            .get_or_try_init(|| self.store.prepare_devices(&self.device_db))
            .await
            .map(|_| ())
            .context("cannot set up the WhatsApp device store")
    }

    /// Deletes everything the device store keeps for a device.
    pub async fn delete_device(&self, device_id: i64) -> anyhow::Result<()> {
        self.store
            .delete_device(&self.device_db, device_id)
            .await
            .context("cannot delete the device's WhatsApp keys")
    }
}

/// The running client task. Dropping it aborts the client.
pub struct WaRunning {
    handle: BotHandle,
}

impl WaRunning {
    /// Disconnects cleanly (flushing state) and waits for the client to stop.
    pub async fn stop(self) {
        self.handle.shutdown().await;
    }

    /// Resolves when the client's run loop has ended on its own.
    pub async fn finished(&mut self) {
        (&mut self.handle).await;
    }
}

/// A live client, shared with request handlers for sending.
#[derive(Clone)]
pub struct WaSession {
    client: Arc<Client>,
    session_id: String,
}

impl std::fmt::Debug for WaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaSession")
            .field("session_id", &self.session_id)
            .finish()
    }
}

/// A text message ready to send: we choose its id up front so the pending row exists
/// before WhatsApp sees the message.
/// A message id in WhatsApp Web's form (`3EB0` and 18 hex digits), for a message that is
/// recorded before it has a connection to be sent over.
pub fn new_message_id() -> String {
    wacore::request::RequestUtils::message_id_at(None, crate::store::now().max(0) as u64)
}

/// The chat of a stored message and, for someone else's group message, who sent it: how
/// app state names a message.
fn key_of(message: &crate::model::Message) -> Result<(Jid, Option<Jid>), String> {
    let parse = |j: &str| {
        j.parse::<Jid>()
            .map_err(|e| format!("invalid JID {j}: {e:?}"))
    };
    let participant = match &message.participant {
        Some(p) if !message.from_me => Some(parse(p)?),
        _ => None,
    };
    Ok((parse(&message.chat_id)?, participant))
}

fn jid_of(to: &ChatAddress) -> Result<Jid, String> {
    to.as_str()
        .parse()
        .map_err(|e| format!("invalid JID {}: {e:?}", to.as_str()))
}

pub struct Outgoing {
    pub id: String,
    pub to: Jid,
}

impl WaSession {
    pub fn me(&self) -> Me {
        map::me(&self.client)
    }

    pub fn is_connected(&self) -> bool {
        self.client.is_connected() && self.client.is_logged_in()
    }

    /// Allocates a message id for a send to `to`.
    pub fn prepare(&self, to: &ChatAddress) -> anyhow::Result<Outgoing> {
        self.outgoing(to, self.client.generate_message_id())
    }

    /// A send to `to` under an id given beforehand ([`new_message_id`]): a queued message
    /// keeps its id across attempts and restarts.
    pub fn outgoing(&self, to: &ChatAddress, id: String) -> anyhow::Result<Outgoing> {
        let to: Jid = to
            .as_str()
            .parse()
            .map_err(|e| anyhow::anyhow!("invalid JID {}: {e:?}", to.as_str()))?;
        Ok(Outgoing { id, to })
    }

    /// Sends `content`, optionally quoting an earlier message of the chat and mentioning
    /// users (JIDs).
    pub async fn send(
        &self,
        out: &Outgoing,
        content: &Content,
        quoted: Option<&Message>,
        mentions: &[String],
    ) -> Result<(), String> {
        let mut ctx = quoted.map(|q| wa::ContextInfo {
            stanza_id: Some(q.id.clone()),
            participant: Some(q.from.clone()),
            quoted_message: whatsapp_rust::buffa::MessageField::some(wa::Message::text(
                q.text
                    .clone()
                    .or_else(|| q.caption.clone())
                    .unwrap_or_default(),
            )),
            ..Default::default()
        });
        if !mentions.is_empty() {
            ctx.get_or_insert_with(Default::default).mentioned_jid = mentions.to_vec();
        }
        self.client
            .send_message_with_options(
                out.to.clone(),
                map::outgoing(content, ctx),
                SendOptions::default().with_message_id(out.id.clone()),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Shows the account online (`available`) or offline.
    pub async fn set_presence(&self, available: bool) -> Result<(), String> {
        let p = self.client.presence();
        if available {
            p.set_available().await
        } else {
            p.set_unavailable().await
        }
        .map_err(|e| e.to_string())
    }

    /// Shows `state` (composing, recording, paused) in the chat with `to`.
    pub async fn chat_state(
        &self,
        to: &ChatAddress,
        state: crate::model::PresenceState,
    ) -> Result<(), String> {
        use whatsapp_rust::features::ChatStateType;
        let state = match state {
            crate::model::PresenceState::Composing => ChatStateType::Composing,
            crate::model::PresenceState::Recording => ChatStateType::Recording,
            crate::model::PresenceState::Paused => ChatStateType::Paused,
            other => return Err(format!("`{}` is not a chat state", other.as_str())),
        };
        self.client
            .chatstate()
            .send(&jid_of(to)?, state)
            .await
            .map_err(|e| e.to_string())
    }

    /// Subscribes to `to`'s presence.
    pub async fn subscribe_presence(&self, to: &ChatAddress) -> Result<(), String> {
        self.client
            .presence()
            .subscribe(jid_of(to)?)
            .await
            .map_err(|e| e.to_string())
    }

    /// Sends read receipts for messages of `chat` (in a group, all from `sender`).
    pub async fn mark_read(
        &self,
        chat: &ChatAddress,
        sender: Option<&str>,
        ids: &[&str],
    ) -> Result<(), String> {
        let sender = sender
            .map(|s| s.parse::<Jid>().map_err(|e| format!("sender {s}: {e:?}")))
            .transpose()?;
        self.client
            .mark_as_read(&jid_of(chat)?, sender.as_ref(), ids)
            .await
            .map_err(|e| e.to_string())
    }

    pub fn jid_string(jid: &Jid) -> String {
        jid.to_non_ad_string()
    }

    /// Requests a pairing code for `phone` (digits only). The code is also reported as
    /// [`WaEvent::PairingCode`].
    pub async fn pairing_code(&self, phone: &str) -> Result<String, String> {
        self.client
            .pair_with_code(PairCodeOptions {
                phone_number: phone.to_owned(),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())
    }

    /// Sends the owner's passkey assertion to WhatsApp, in the shape WhatsApp Web sends it.
    /// Returns once WhatsApp accepted it (its continuation follows as an event).
    pub async fn send_passkey_response(
        &self,
        assertion: &crate::passkey::Assertion,
    ) -> Result<(), String> {
        let assertion_json = whatsapp_rust::passkey::build_webauthn_assertion_json(
            &assertion.credential_id,
            &assertion.client_data_json,
            &assertion.authenticator_data,
            &assertion.signature,
            assertion.user_handle.as_deref(),
        );
        self.client
            .send_passkey_response(whatsapp_rust::passkey::Assertion {
                assertion_json,
                credential_id: assertion.credential_id.clone(),
            })
            .await
            .map_err(|e| e.to_string())
    }

    /// Finishes a passkey link after the operator compared the code with the phone's.
    pub async fn send_passkey_confirmation(&self) -> Result<(), String> {
        self.client
            .send_passkey_confirmation()
            .await
            .map_err(|e| e.to_string())
    }

    /// Asks WhatsApp which of `phones` (digits only) have an account: one answer per
    /// number, in order, with the account's JIDs where it has one.
    pub async fn check_numbers(&self, phones: &[String]) -> Result<Vec<NumberCheck>, String> {
        let jids: Vec<Jid> = phones.iter().map(|p| Jid::pn(p.as_str())).collect();
        let found = self
            .client
            .contacts()
            .is_on_whatsapp(&jids)
            .await
            .map_err(|e| e.to_string())?;
        Ok(phones
            .iter()
            .map(|phone| {
                let hit = found.iter().find(|r| {
                    let pn = if r.jid.is_pn() {
                        Some(&r.jid)
                    } else {
                        r.pn_jid.as_ref()
                    };
                    pn.is_some_and(|j| j.user == *phone)
                });
                match hit {
                    Some(r) if r.is_registered => NumberCheck {
                        phone: phone.clone(),
                        exists: true,
                        jid: Some(Jid::pn(phone.as_str()).to_non_ad_string()),
                        lid: r
                            .lid
                            .as_ref()
                            .or(r.jid.is_lid().then_some(&r.jid))
                            .map(Jid::to_non_ad_string),
                    },
                    _ => NumberCheck {
                        phone: phone.clone(),
                        exists: false,
                        jid: None,
                        lid: None,
                    },
                }
            })
            .collect())
    }

    /// What WhatsApp tells about `who`'s account (`None`: it has none).
    pub async fn contact_info(&self, who: &ChatAddress) -> Result<Option<ContactInfo>, String> {
        let jid = jid_of(who)?;
        let mut found = self
            .client
            .contacts()
            .get_user_info(std::slice::from_ref(&jid))
            .await
            .map_err(|e| e.to_string())?;
        let Some(info) = found.remove(&jid).or_else(|| found.into_values().next()) else {
            return Ok(None);
        };
        // No device and no LID: the number has no account.
        if info.devices.is_empty() && info.lid.is_none() && !info.jid.is_lid() {
            return Ok(None);
        }
        let (mut pn, mut lid) = if info.jid.is_lid() {
            (None, Some(info.jid.to_non_ad_string()))
        } else {
            (
                Some(info.jid.to_non_ad_string()),
                info.lid.as_ref().map(Jid::to_non_ad_string),
            )
        };
        // The other form, from the LID and phone mappings WhatsApp has told this device.
        if pn.is_none() || lid.is_none() {
            match self.client.get_lid_pn_entry(&info.jid).await {
                Ok(Some(e)) => {
                    pn = pn.or_else(|| Some(Jid::pn(&*e.phone_number).to_non_ad_string()));
                    lid = lid.or_else(|| Some(Jid::lid(&*e.lid).to_non_ad_string()));
                }
                Ok(None) => {}
                Err(e) => tracing::debug!("no LID/phone mapping for {}: {e}", info.jid),
            }
        }
        Ok(Some(ContactInfo {
            phone: pn
                .as_ref()
                .map(|j| j.split('@').next().unwrap_or_default().to_owned()),
            jid: pn,
            lid,
            about: info.status,
            business: info.is_business,
            business_name: info.verified_name.and_then(|v| v.name),
            picture_id: info.picture_id,
            push_name: None,
        }))
    }

    /// Where `who`'s profile photo is (`None`: none, or hidden from us).
    pub async fn profile_picture(&self, who: &ChatAddress) -> Result<Option<Picture>, String> {
        let pic = self
            .client
            .contacts()
            .get_profile_picture(&jid_of(who)?, false)
            .await
            .map_err(|e| e.to_string())?;
        Ok(pic.map(|p| Picture {
            id: p.id,
            url: p.url,
        }))
    }

    /// Declines a ringing call.
    pub async fn reject_call(
        &self,
        call_id: &str,
        peer: &str,
        creator: &str,
    ) -> Result<(), String> {
        let peer: Jid = peer.parse().map_err(|e| format!("caller {peer}: {e:?}"))?;
        let creator: Jid = creator
            .parse()
            .map_err(|e| format!("call creator {creator}: {e:?}"))?;
        self.client
            .voip()
            .reject_call(call_id, &peer, &creator)
            .await
            .map_err(|e| e.to_string())
    }

    /// Blocks `who` (or unblocks).
    pub async fn block(&self, who: &ChatAddress, block: bool) -> Result<(), String> {
        let jid = jid_of(who)?;
        let b = self.client.blocking();
        if block {
            b.block(&jid).await
        } else {
            b.unblock(&jid).await
        }
        .map_err(|e| e.to_string())
    }

    /// Pins, archives, mutes or marks the chat, as app state the account's devices sync.
    pub async fn chat_action(
        &self,
        chat: &ChatAddress,
        change: crate::model::ChatChange,
    ) -> Result<(), String> {
        use crate::model::ChatChange as C;
        let jid = jid_of(chat)?;
        let a = self.client.chat_actions();
        match change {
            C::Pinned(true) => a.pin_chat(&jid).await,
            C::Pinned(false) => a.unpin_chat(&jid).await,
            C::Archived(true) => a.archive_chat(&jid, None).await,
            C::Archived(false) => a.unarchive_chat(&jid, None).await,
            C::Muted(None) => a.mute_chat(&jid).await,
            C::Muted(Some(until_ms)) => a.mute_chat_until(&jid, until_ms).await,
            C::Unmuted => a.unmute_chat(&jid).await,
            C::MarkedUnread(unread) => a.mark_chat_as_read(&jid, !unread, None).await,
        }
        .map_err(|e| e.to_string())
    }

    /// Deletes `message` for the account only, as app state its other devices follow (the
    /// phone removes it too, media included).
    pub async fn delete_for_me(&self, message: &crate::model::Message) -> Result<(), String> {
        let (chat, participant) = key_of(message)?;
        self.client
            .chat_actions()
            .delete_message_for_me(
                &chat,
                participant.as_ref(),
                &message.id,
                message.from_me,
                true,
                Some(message.timestamp * 1000),
            )
            .await
            .map_err(|e| e.to_string())
    }

    /// Stars or unstars `message` for the account, as app state its other devices follow.
    pub async fn star(&self, message: &crate::model::Message, starred: bool) -> Result<(), String> {
        let (chat, participant) = key_of(message)?;
        let a = self.client.chat_actions();
        let (p, id, mine) = (participant.as_ref(), message.id.as_str(), message.from_me);
        if starred {
            a.star_message(&chat, p, id, mine).await
        } else {
            a.unstar_message(&chat, p, id, mine).await
        }
        .map_err(|e| e.to_string())
    }

    /// Unlinks this device from the account and disconnects.
    pub async fn logout(&self) {
        self.client.logout().await;
    }

    /// Fetches every app-state collection of the account (chat pins, archives and mutes,
    /// contact names, the push name, the salt privacy tokens are computed with), in the
    /// background. Due on the first connection after linking: whatsapp-rust fetches them
    /// by itself only when the client that linked is the one that reconnects, or when it
    /// has no push name yet (which a business account always has); each of our
    /// connections is a new client.
    pub fn sync_app_state(&self) {
        use whatsapp_rust::sync_task::MajorSyncTask;
        use whatsapp_rust::wacore::appstate::patch_decode::WAPatchName;
        let client = self.client.clone();
        tokio::spawn(async move {
            for name in [
                WAPatchName::CriticalBlock,
                WAPatchName::CriticalUnblockLow,
                WAPatchName::RegularHigh,
                WAPatchName::RegularLow,
                WAPatchName::Regular,
            ] {
                client
                    .process_sync_task(MajorSyncTask::AppStateSync {
                        name,
                        full_sync: false,
                    })
                    .await;
            }
        });
    }

    /// Drops the connection; the client reconnects by itself.
    pub async fn reconnect(&self) {
        self.client.reconnect().await;
    }
}

/// Whether a phone number has a WhatsApp account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NumberCheck {
    /// The number asked about, digits only.
    pub phone: String,
    pub exists: bool,
    /// The account's phone-number JID, when it exists.
    pub jid: Option<String>,
    /// The account's LID, when WhatsApp gave it.
    pub lid: Option<String>,
}

/// What WhatsApp tells about an account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactInfo {
    /// Digits, where the phone number is known.
    pub phone: Option<String>,
    pub jid: Option<String>,
    pub lid: Option<String>,
    /// The about (status) text; absent when its owner hides it from us.
    pub about: Option<String>,
    pub business: bool,
    /// A business account's verified name.
    pub business_name: Option<String>,
    /// Set when it has a profile photo we may see (`.../picture` gives its URL).
    pub picture_id: Option<String>,
    /// The name they gave WhatsApp, as their latest message to this session carried it;
    /// absent when they have not written.
    pub push_name: Option<String>,
}

/// Where a profile photo is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Picture {
    pub id: String,
    /// WhatsApp's URL of the photo (it expires after a while; ask again then).
    pub url: String,
}

/// Maps library events onto the session's channel. Runs inline on the client's dispatch
/// path, so it only converts and forwards.
struct Handler {
    events: mpsc::UnboundedSender<WaEvent>,
}

impl EventHandler for Handler {
    fn handle_event(&self, event: Arc<WaLibEvent>) {
        if let Some(e) = map::event(&event)
            && self.events.send(e).is_err()
        {
            tracing::trace!("session actor gone; dropping a WhatsApp event");
        }
    }
}

/// The device store file inside the data dir.
pub fn device_db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("whatsapp.db")
}

/// Why WhatsApp's server refused a message, from the `error` of its ack: what a user reads
/// as the message's `error`.
pub fn refusal(code: &str) -> String {
    let why = match code {
        "463" => {
            ": the recipient takes messages from this account only with a privacy token, and it \
             has none for them. WhatsApp restricts whom a new or reported account may write to \
             first (a reach-out time-lock); it can still answer people who wrote to it"
        }
        "400" | "479" => ": WhatsApp found the message malformed",
        "404" => ": the recipient is not on WhatsApp",
        "503" => ": WhatsApp is unavailable for now; try again later",
        _ => "",
    };
    format!("WhatsApp refused it (error {code}){why}")
}
