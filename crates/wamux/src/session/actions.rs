//! What a session does to messages and chats beyond sending: reactions, edits and revokes
//! of stored messages, read receipts, presence and chat states.

use super::{Result, SessionError, SessionManager, actor};
use crate::model::{
    ChatAddress, Content, EDIT_WINDOW_SECS, Message, MessageKind, MessageStatus, PresenceState,
    REVOKE_WINDOW_SECS, SessionId,
};
use crate::store;

/// The most messages one read request marks.
pub const MAX_READ: usize = 1000;

impl SessionManager {
    /// Reacts to message `message_id` of the session's history with `emoji` (empty takes
    /// our reaction back). Returns the reaction message, recorded as any message we send.
    pub async fn react(&self, id: &SessionId, message_id: &str, emoji: &str) -> Result<Message> {
        let target = self.chat_message(id, message_id).await?;
        self.act(
            id,
            Content::Reaction {
                target: Box::new(target),
                emoji: emoji.to_owned(),
            },
        )
        .await
    }

    /// Edits the text of message `message_id`, one of ours sent less than
    /// [`EDIT_WINDOW_SECS`] ago. Returns the edit message; the target shows the new text.
    pub async fn edit(&self, id: &SessionId, message_id: &str, text: &str) -> Result<Message> {
        let target = self.own_target(id, message_id, "edited").await?;
        if target.kind != MessageKind::Text {
            return Err(SessionError::Refused(
                "not_editable",
                format!(
                    "message `{message_id}` is a {}; only text messages are edited",
                    target.kind
                ),
            ));
        }
        if store::now() - target.timestamp > EDIT_WINDOW_SECS {
            return Err(SessionError::Refused(
                "edit_window_passed",
                format!(
                    "message `{message_id}` was sent more than {} minutes ago; WhatsApp no longer takes edits of it",
                    EDIT_WINDOW_SECS / 60
                ),
            ));
        }
        let content = Content::Edit {
            target: Box::new(target),
            text: text.to_owned(),
        };
        self.act(id, content).await
    }

    /// Deletes message `message_id`, one of ours sent less than [`REVOKE_WINDOW_SECS`]
    /// ago, for everyone. Returns the revoke message; the target shows as revoked.
    pub async fn revoke(&self, id: &SessionId, message_id: &str) -> Result<Message> {
        let target = self.own_target(id, message_id, "revoked").await?;
        if store::now() - target.timestamp > REVOKE_WINDOW_SECS {
            return Err(SessionError::Refused(
                "revoke_window_passed",
                format!(
                    "message `{message_id}` was sent more than {} hours ago; WhatsApp no longer deletes it for everyone",
                    REVOKE_WINDOW_SECS / 3600
                ),
            ));
        }
        self.act(
            id,
            Content::Revoke {
                target: Box::new(target),
            },
        )
        .await
    }

    /// Deletes message `message_id` of the history for this account only (its phone and
    /// other devices follow, by app state): gone from the history, announced as
    /// `message-deleted`. Returns the message as it was.
    pub async fn delete_for_me(&self, id: &SessionId, message_id: &str) -> Result<Message> {
        let (conn, _) = self.live(id)?;
        let store = &self.inner.shared.store;
        let target = self.chat_message(id, message_id).await?;
        conn.delete_for_me(&target)
            .await
            .map_err(SessionError::WhatsApp)?;
        if let Some(ev) = store::messages::delete_for_me(store, id.as_str(), message_id).await? {
            self.inner.shared.bus.publish(ev);
        }
        Ok(target)
    }

    /// Stars or unstars message `message_id` of the history for the account (its phone and
    /// other devices follow, by app state), announced as `message-starred`. Returns the
    /// message as it is now.
    pub async fn star(&self, id: &SessionId, message_id: &str, starred: bool) -> Result<Message> {
        let (conn, _) = self.live(id)?;
        let store = &self.inner.shared.store;
        let mut target = self.chat_message(id, message_id).await?;
        conn.star(&target, starred)
            .await
            .map_err(SessionError::WhatsApp)?;
        if let Some(ev) =
            store::messages::set_starred(store, id.as_str(), message_id, starred).await?
        {
            self.inner.shared.bus.publish(ev);
        }
        target.starred = starred;
        Ok(target)
    }

    /// Forwards message `message_id` of the history to `to`, marked forwarded as WhatsApp
    /// marks it. Texts, locations and contact cards are forwarded (media not yet).
    pub async fn forward(
        &self,
        id: &SessionId,
        message_id: &str,
        to: &ChatAddress,
    ) -> Result<Message> {
        self.snapshot(id)?;
        let msg = store::messages::find(&self.inner.shared.store, id.as_str(), message_id)
            .await?
            .ok_or_else(|| SessionError::MessageNotFound(message_id.to_owned()))?;
        if msg.revoked {
            return Err(SessionError::Refused(
                "not_forwardable",
                format!("message `{message_id}` was deleted"),
            ));
        }
        let content = Content::of(&msg).ok_or_else(|| {
            SessionError::Refused(
                "not_forwardable",
                format!(
                    "message `{message_id}` is a {}; texts, locations and contact cards are forwarded (send a file anew)",
                    msg.kind
                ),
            )
        })?;
        let content = match content {
            Content::Forwarded(c) => Content::Forwarded(c),
            c => Content::Forwarded(Box::new(c)),
        };
        let (conn, me) = self.live(id)?;
        actor::send(
            &self.inner.shared,
            id,
            &conn,
            &me,
            to,
            &content,
            actor::Extras::default(),
        )
        .await
    }

    /// Message `message_id` of the session's history, a chat message (not a reaction, an
    /// edit or a revoke, which show on their targets).
    async fn chat_message(&self, id: &SessionId, message_id: &str) -> Result<Message> {
        self.snapshot(id)?;
        store::messages::find(&self.inner.shared.store, id.as_str(), message_id)
            .await?
            .filter(|m| !m.kind.is_action())
            .ok_or_else(|| SessionError::MessageNotFound(message_id.to_owned()))
    }

    /// A message of ours that WhatsApp has (sent, not revoked), to be `done` to.
    async fn own_target(&self, id: &SessionId, message_id: &str, done: &str) -> Result<Message> {
        let target = self.chat_message(id, message_id).await?;
        let code = if done == "edited" {
            "not_editable"
        } else {
            "not_revocable"
        };
        if !target.from_me {
            return Err(SessionError::Refused(
                code,
                format!(
                    "message `{message_id}` was sent by someone else; only its sender can have it {done}"
                ),
            ));
        }
        if target.revoked {
            return Err(SessionError::Refused(
                code,
                format!("message `{message_id}` was deleted already"),
            ));
        }
        if matches!(
            target.status,
            MessageStatus::Queued | MessageStatus::Pending | MessageStatus::Failed
        ) {
            return Err(SessionError::Refused(
                code,
                format!(
                    "message `{message_id}` is {}: WhatsApp does not have it (cancel a queued one instead)",
                    target.status.as_str()
                ),
            ));
        }
        Ok(target)
    }

    /// Sends an action on a stored message (reaction, edit, revoke) in the target's chat.
    async fn act(&self, id: &SessionId, content: Content) -> Result<Message> {
        let target = content.target().ok_or_else(|| {
            SessionError::Internal(anyhow::anyhow!("an action without a target message"))
        })?;
        let to = ChatAddress::parse(&target.chat_id)
            .map_err(|e| SessionError::Internal(anyhow::anyhow!("stored chat id: {e}")))?;
        let (conn, me) = self.live(id)?;
        actor::send(
            &self.inner.shared,
            id,
            &conn,
            &me,
            &to,
            &content,
            actor::Extras::default(),
        )
        .await
    }

    /// Each participant's latest receipt for group message `message_id` of ours.
    pub async fn receipts(
        &self,
        id: &SessionId,
        message_id: &str,
    ) -> Result<Vec<crate::model::ReceiptMark>> {
        self.snapshot(id)?;
        let store = &self.inner.shared.store;
        if store::messages::find(store, id.as_str(), message_id)
            .await?
            .is_none()
        {
            return Err(SessionError::MessageNotFound(message_id.to_owned()));
        }
        Ok(store::messages::receipts(store, id.as_str(), message_id).await?)
    }

    /// Declines call `call_id`, ringing now. `false` when no such call rings.
    pub async fn reject_call(&self, id: &SessionId, call_id: &str) -> Result<bool> {
        self.snapshot(id)?;
        let key = (id.to_string(), call_id.to_owned());
        let Some((peer, creator)) = self
            .inner
            .shared
            .calls
            .lock()
            .expect("calls lock")
            .get(&key)
            .cloned()
        else {
            return Ok(false);
        };
        let (conn, _) = self.live(id)?;
        conn.reject_call(call_id, &peer, &creator)
            .await
            .map_err(SessionError::WhatsApp)?;
        self.inner
            .shared
            .calls
            .lock()
            .expect("calls lock")
            .remove(&key);
        Ok(true)
    }

    /// Shows the account online or offline (`available`, `unavailable`), or a chat state
    /// (`composing`, `recording`, `paused`) in the chat with `chat`.
    pub async fn presence(
        &self,
        id: &SessionId,
        state: PresenceState,
        chat: Option<&ChatAddress>,
    ) -> Result<()> {
        let (conn, _) = self.live(id)?;
        match (state, chat) {
            (PresenceState::Available | PresenceState::Unavailable, _) => {
                conn.set_presence(state == PresenceState::Available).await
            }
            (_, Some(chat)) => conn.chat_state(chat, state).await,
            (_, None) => Err(format!(
                "a `{}` state needs the chat it is shown in",
                state.as_str()
            )),
        }
        .map_err(SessionError::WhatsApp)
    }

    /// Asks WhatsApp for `chat`'s presence: `presence` events follow while connected.
    pub async fn subscribe_presence(&self, id: &SessionId, chat: &ChatAddress) -> Result<()> {
        let (conn, _) = self.live(id)?;
        conn.subscribe_presence(chat)
            .await
            .map_err(SessionError::WhatsApp)
    }

    /// Sends read receipts for received messages of `chat`: those in `ids`, or every one
    /// not read yet (the newest [`MAX_READ`]). Returns the ids marked read.
    pub async fn mark_read(
        &self,
        id: &SessionId,
        chat: &ChatAddress,
        ids: Option<&[String]>,
    ) -> Result<Vec<String>> {
        self.snapshot(id)?;
        let store = &self.inner.shared.store;
        let unread =
            store::messages::unread(store, id.as_str(), chat.as_str(), ids, MAX_READ as i64)
                .await?;
        if unread.is_empty() {
            return Ok(Vec::new());
        }
        let (conn, _) = self.live(id)?;
        // In a group each sender's messages are receipted apart.
        let mut by_sender: std::collections::BTreeMap<Option<&str>, Vec<&str>> = Default::default();
        for (msg_id, participant) in &unread {
            by_sender
                .entry(participant.as_deref())
                .or_default()
                .push(msg_id);
        }
        for (sender, msg_ids) in by_sender {
            conn.mark_read(chat, sender, &msg_ids)
                .await
                .map_err(SessionError::WhatsApp)?;
        }
        let read: Vec<String> = unread.into_iter().map(|(m, _)| m).collect();
        store::messages::set_read(store, id.as_str(), chat.as_str(), &read).await?;
        Ok(read)
    }
}
