//! Commits inbound messages to our database before WhatsApp is told we have them.

use std::sync::Arc;

use wacore::proto_helpers::MessageExt as _;
use wacore::types::events::InboundMessage;
use whatsapp_rust::{Client, InboundDurabilityHook};

use crate::event::EventBus;
use crate::store::Store;

/// whatsapp-rust defers the ack of each batch until `on_messages` returns `Ok`; on `Err`
/// (or a crash) the server redelivers, and the unique key on
/// `(session, chat, sender, id)` makes the second insert a no-op.
pub(super) struct Durability {
    pub session_id: String,
    pub store: Store,
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
                Some((msg, sender_key, kind, media))
            })
            .collect();
        // Committed together with what other sessions' hooks queued meanwhile (group
        // commit); `write` returns once the transaction is committed.
        let (events, media_jobs) = self
            .store
            .write(move |conn| {
                Box::pin(async move {
                    let mut events = Vec::with_capacity(items.len());
                    let mut media_jobs = false;
                    for (msg, sender_key, kind, media) in &items {
                        // A message with a file is announced by the media worker once the
                        // file is downloaded (or failed to); here only its row and download
                        // job are written.
                        if let Some(media) = media {
                            media_jobs |=
                                crate::media::inbound::accept(conn, msg, sender_key, *kind, media)
                                    .await?;
                            continue;
                        }
                        if let Some(ev) =
                            crate::store::messages::insert(conn, msg, sender_key, *kind).await?
                        {
                            events.push(ev);
                        }
                    }
                    Ok((events, media_jobs))
                })
            })
            .await?;
        // Only committed events are announced.
        self.bus.publish_all(events);
        if media_jobs && let Some(wake) = &self.media_wake {
            wake.notify_one();
        }
        Ok(())
    }
}
