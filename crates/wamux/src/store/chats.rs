//! The `chat_state` table: what the account did to each chat (pinned, archived, muted,
//! marked unread), through this session or on another of its devices. WhatsApp keeps it
//! as app state; the session writes it here as it changes, with its `chat-updated` event.

use std::collections::HashMap;

use super::{Result, Store, dispatch};
use crate::event::{Event, EventKind};
use crate::model::{ChatChange, ChatState};

/// The columns: pinned, archived, muted_until (unix ms, -1 for good), marked_unread.
pub type Row = (bool, bool, Option<i64>, bool);

/// A stored row as the state it holds.
fn state_of(row: Row) -> ChatState {
    let (pinned, archived, muted_until, marked_unread) = row;
    ChatState {
        pinned,
        archived,
        muted: muted_until.is_some(),
        muted_until: muted_until.filter(|t| *t > 0).map(|ms| ms / 1000),
        marked_unread,
    }
}

/// A state as the row that stores it.
fn row_of(s: &ChatState) -> Row {
    let muted_until = s
        .muted
        .then(|| s.muted_until.map_or(-1, |secs| secs * 1000));
    (s.pinned, s.archived, muted_until, s.marked_unread)
}

/// Every chat of the session with a state of its own.
pub async fn all(store: &Store, session_id: &str) -> Result<HashMap<String, ChatState>> {
    Ok(dispatch!(store, chats::all(session_id))?
        .into_iter()
        .map(|(chat, pinned, archived, muted, unread)| {
            (chat, state_of((pinned, archived, muted, unread)))
        })
        .collect())
}

/// Applies `changes` to the chat and, when its state changed, records the `chat-updated`
/// event in the same transaction. Returns the new state and the event.
pub async fn apply(
    store: &Store,
    session_id: &str,
    chat_id: &str,
    changes: &[ChatChange],
) -> Result<(ChatState, Option<Event>)> {
    let mut tx = store.begin().await?;
    let before = dispatch!(conn &mut tx.conn(), chats::get(session_id, chat_id))?
        .map(state_of)
        .unwrap_or_default();
    let after = changes.iter().fold(before.clone(), |s, c| s.with(*c));
    if after == before {
        tx.commit().await?;
        return Ok((after, None));
    }
    let now = super::now();
    dispatch!(conn &mut tx.conn(), chats::put(session_id, chat_id, row_of(&after), now))?;
    let mut data = serde_json::to_value(&after)?;
    data["sessionId"] = session_id.into();
    data["chatId"] = chat_id.into();
    let event = super::events::append(
        &mut tx.conn(),
        EventKind::ChatUpdated,
        session_id,
        Some(chat_id),
        data,
    )
    .await?;
    tx.commit().await?;
    Ok((after, Some(event)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;

    #[tokio::test]
    async fn changes_are_kept_and_only_a_change_is_an_event() {
        for db in testing::databases().await {
            let store = db.store().await;
            let chat = "15550001111@s.whatsapp.net";
            let (state, ev) = apply(
                &store,
                "s1",
                chat,
                &[
                    ChatChange::Pinned(true),
                    ChatChange::Muted(Some(4_000_000_000_000)),
                ],
            )
            .await
            .unwrap();
            assert!(state.pinned && state.muted);
            assert_eq!(state.muted_until, Some(4_000_000_000));
            let ev = ev.expect("a change is an event");
            assert_eq!(ev.kind, EventKind::ChatUpdated);
            assert_eq!(ev.data["pinned"], true);
            let (_, again) = apply(&store, "s1", chat, &[ChatChange::Pinned(true)])
                .await
                .unwrap();
            assert!(again.is_none(), "no change, no event");
            let (state, _) = apply(
                &store,
                "s1",
                chat,
                &[ChatChange::Muted(None), ChatChange::Archived(true)],
            )
            .await
            .unwrap();
            assert_eq!(
                (state.muted, state.muted_until, state.archived),
                (true, None, true)
            );
            let (state, _) = apply(&store, "s1", chat, &[ChatChange::Unmuted])
                .await
                .unwrap();
            assert!(!state.muted);
            let listed = all(&store, "s1").await.unwrap();
            assert_eq!(listed[chat], state);
            assert!(all(&store, "s2").await.unwrap().is_empty());
        }
    }
}
