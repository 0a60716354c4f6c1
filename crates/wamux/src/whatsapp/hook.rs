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
    pub bus: EventBus,
    /// Wakes the media worker when a download job was committed.
    pub media_wake: Option<Arc<tokio::sync::Notify>>,
}

#[whatsapp_rust::async_trait]
impl InboundDurabilityHook for Durability {
    async fn on_messages(
        &self,
        client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> anyhow::Result<()> {
        let own = client.pn().map(|j| j.to_non_ad_string());
        let items: Vec<_> = batch
            .iter()
            .filter_map(|m| {
                let (msg, sender_key, kind) =
                    super::map::inbound(&self.session_id, own.as_deref(), m)?;
                let media = super::media::reference(m.message.get_base_message());
                Some((
                    New {
                        msg,
                        sender_key,
                        kind,
                    },
                    media,
                ))
            })
            .collect();
        let (events, media_jobs) = self.committer.commit(items).await?;
        // Only committed events are announced.
        self.bus.publish_all(events);
        if media_jobs && let Some(wake) = &self.media_wake {
            wake.notify_one();
        }
        Ok(())
    }
}

/// A message to commit, with its file when it has one.
type Item = (New, Option<MediaRef>);

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
        for (new, media) in items {
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
