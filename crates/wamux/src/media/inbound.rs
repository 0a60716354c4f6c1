//! The durability hook's side of incoming media: the message row and its download job are
//! written in the hook's transaction; the event waits for the download.

use super::{MediaRef, pending_json};
use crate::event::EventKind;
use crate::model::Message;
use crate::store::{Conn, Result, messages};

/// Stores `msg` (its `media` marked pending) and a job to download `media_ref`, unless the
/// message is already stored (a redelivery). Returns true when a job was added.
pub async fn accept(
    conn: &mut Conn<'_>,
    msg: &Message,
    sender_key: &str,
    event: EventKind,
    media_ref: &MediaRef,
) -> Result<bool> {
    let mut msg = msg.clone();
    msg.media = Some(pending_json(media_ref));
    if !messages::insert_row(conn, &msg, sender_key).await? {
        return Ok(false);
    }
    crate::store::media::insert(
        conn,
        &msg.session_id,
        &msg.id,
        &msg.chat_id,
        sender_key,
        event.as_str(),
        media_ref,
    )
    .await?;
    Ok(true)
}
