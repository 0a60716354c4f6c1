//! Commits inbound messages to our database before WhatsApp is told we have them.

use std::sync::Arc;

use wacore::proto_helpers::MessageExt as _;
use wacore::types::events::InboundMessage;
use whatsapp_rust::{Client, InboundDurabilityHook};

use crate::event::{Event, EventBus};
use crate::media::MediaRef;
use crate::store::messages::New;
use crate::store::{Batcher, Store};

/// whatsapp-rust defers the ack of each batch until `on_messages` returns `Ok`; on `Err`
/// (or a crash) the server redelivers, and the unique key on
/// `(session, chat, sender, id)` makes the second insert a no-op.
pub(super) struct Durability {
    pub session_id: String,
    pub committer: Committer,
    /// Read for the polls that votes are for.
    pub store: Store,
    pub bus: EventBus,
    /// Wakes the media worker when a download job was committed.
    pub media_wake: Option<Arc<tokio::sync::Notify>>,
    /// What each session ignores (see [`Ignores`]).
    pub ignores: Ignores,
}

/// The chat classes each session ignores, read by its hook on every batch and changed
/// through [`super::WaConnector::set_ignore`].
pub type Ignores = Arc<std::sync::RwLock<std::collections::HashMap<String, crate::model::Ignore>>>;

#[whatsapp_rust::async_trait]
impl InboundDurabilityHook for Durability {
    async fn on_messages(
        &self,
        client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> anyhow::Result<()> {
        let own = client.pn().map(|j| j.to_non_ad_string());
        let ignore = self
            .ignores
            .read()
            .expect("ignores lock")
            .get(&self.session_id)
            .copied()
            .unwrap_or_default();
        let mut items = Vec::with_capacity(batch.len());
        for m in batch {
            let Some((mut msg, sender_key, kind)) =
                super::map::inbound(&self.session_id, own.as_deref(), m)
            else {
                continue;
            };
            if ignore.drops(&msg.chat_id) {
                // Acknowledged (the batch returns Ok), never stored nor announced.
                continue;
            }
            if msg.vote.is_some() {
                open_vote(&client, &self.store, &mut msg, m).await;
            }
            let media = super::media::reference(m.message.get_base_message());
            // Most messages carry a secret; only a poll's is needed (to open its votes).
            let secret = msg.poll.as_ref().and_then(|_| super::map::secret_of(m));
            items.push(Item {
                new: New {
                    msg,
                    sender_key,
                    kind,
                },
                media,
                secret,
            });
        }
        let (events, media_jobs) = self.committer.commit(items).await?;
        // Only committed events are announced.
        self.bus.publish_all(events);
        if media_jobs && let Some(wake) = &self.media_wake {
            wake.notify_one();
        }
        Ok(())
    }
}

/// Decrypts a vote with the secret of its poll and names the options picked; a vote whose
/// poll is not stored (or whose key does not fit) stays unopened (`options` absent).
async fn open_vote(
    client: &Client,
    store: &Store,
    msg: &mut crate::model::Message,
    m: &InboundMessage,
) {
    let Some((poll_id, enc)) = super::map::vote_of(m.message.get_base_message()) else {
        return;
    };
    let poll = match crate::store::messages::poll(store, &msg.session_id, &msg.chat_id, &poll_id)
        .await
    {
        Ok(Some(p)) => p,
        Ok(None) => {
            tracing::info!(session = %msg.session_id, "a vote for poll {poll_id}, which is not in the history");
            return;
        }
        Err(e) => {
            tracing::warn!(session = %msg.session_id, "cannot read poll {poll_id}: {e}");
            return;
        }
    };
    let (poll_msg, secret) = poll;
    let Ok(creator) = poll_msg.from.parse::<whatsapp_rust::Jid>() else {
        return;
    };
    let voter = m.info.source.sender.to_non_ad();
    let ciphertext = whatsapp_rust::PollVoteCiphertext {
        enc_payload: enc.enc_payload.as_deref().unwrap_or_default(),
        enc_iv: enc.enc_iv.as_deref().unwrap_or_default(),
    };
    let hashes = match client
        .polls()
        .decrypt_vote(ciphertext, &secret, &poll_id, &creator, &voter)
        .await
    {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(session = %msg.session_id, "cannot open a vote in poll {poll_id}: {e}");
            return;
        }
    };
    let options = poll_msg
        .poll
        .map(|p| p.options)
        .unwrap_or_default()
        .into_iter()
        .filter(|o| {
            let h = wacore::poll::compute_option_hash(o);
            hashes.iter().any(|x| x.as_slice() == h)
        })
        .collect();
    if let Some(v) = msg.vote.as_mut() {
        v.options = Some(options);
    }
}

/// A message to commit, with its file and its secret when it has them.
struct Item {
    new: New,
    media: Option<MediaRef>,
    secret: Option<Vec<u8>>,
}

/// What a commit hands back: the events to announce, and whether a download job was queued.
type Committed = (Vec<Event>, bool);

/// Commits the inbound messages of every session together: what the hooks hand over while a
/// commit runs goes into the next one, written with a few set-wise statements (see
/// [`insert_many`](crate::store::messages::insert_many)) inside the store's group commit.
/// A hook returns once its messages are committed, as if it had written them alone; a
/// failure fails every hook of that commit, and WhatsApp redelivers their messages.
#[derive(Clone)]
pub(super) struct Committer {
    batcher: Batcher<Vec<Item>, Committed>,
}

impl Committer {
    pub fn start(store: Store) -> Self {
        Self {
            batcher: Batcher::start(store, |conn, calls| Box::pin(write(conn, calls))),
        }
    }

    async fn commit(&self, items: Vec<Item>) -> anyhow::Result<Committed> {
        if items.is_empty() {
            return Ok((Vec::new(), false));
        }
        Ok(self.batcher.submit(items).await?)
    }
}

/// Writes the messages of several hook calls; one result per call, in order.
async fn write(
    mut conn: crate::store::Conn<'_>,
    calls: Vec<Vec<Item>>,
) -> crate::store::Result<Vec<Committed>> {
    let mut results: Vec<Committed> = calls.iter().map(|_| (Vec::new(), false)).collect();
    // Messages with a file are announced by the media worker once the file is downloaded
    // (or failed to); here only their rows and download jobs are written.
    let mut texts = Vec::new();
    let mut owners = Vec::new();
    for (call, items) in calls.into_iter().enumerate() {
        for Item { new, media, secret } in items {
            if let Some(secret) = &secret {
                crate::store::messages::put_secret(&mut conn, &new.msg, secret).await?;
            }
            match media {
                Some(media) => {
                    results[call].1 |= crate::media::inbound::accept(
                        &mut conn,
                        &new.msg,
                        &new.sender_key,
                        new.kind,
                        &media,
                    )
                    .await?;
                }
                None => {
                    texts.push(new);
                    owners.push(call);
                }
            }
        }
    }
    let events = crate::store::messages::insert_many(&mut conn, &texts).await?;
    for (call, event) in owners.into_iter().zip(events) {
        results[call].0.extend(event);
    }
    Ok(results)
}
