//! The `session_settings` table: a session's own settings.

use super::{Result, Store, dispatch};
use crate::model::{Ignore, Pacing};

/// The chats whose messages the session drops (none unless set).
pub async fn ignore(store: &Store, session_id: &str) -> Result<Ignore> {
    Ok(dispatch!(store, settings::ignore(session_id))?
        .map(|s| Ignore::parse_stored(&s))
        .unwrap_or_default())
}

pub async fn set_ignore(store: &Store, session_id: &str, ignore: Ignore) -> Result<()> {
    let mut tx = store.begin().await?;
    dispatch!(conn &mut tx.conn(), settings::set_ignore(session_id, &ignore.stored()))?;
    tx.commit().await
}

/// How the session's queued messages are paced (off unless set).
pub async fn pacing(store: &Store, session_id: &str) -> Result<Pacing> {
    Ok(dispatch!(store, settings::pacing(session_id))?
        .map(|s| Pacing::parse_stored(&s))
        .unwrap_or_default())
}

pub async fn set_pacing(store: &Store, session_id: &str, pacing: &Pacing) -> Result<()> {
    let mut tx = store.begin().await?;
    dispatch!(conn &mut tx.conn(), settings::set_pacing(session_id, &pacing.stored()))?;
    tx.commit().await
}
