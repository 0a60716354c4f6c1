//! The `call_settings` table: how each session answers calls.

use super::{Result, Store, dispatch};

/// A session's answer to calls. The default lets them ring.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallSettings {
    /// Decline every call at once.
    pub reject: bool,
    /// Sent to the caller after declining, when set.
    pub message: Option<String>,
}

pub async fn get(store: &Store, session_id: &str) -> Result<CallSettings> {
    Ok(dispatch!(store, calls::get(session_id))?
        .map(|(reject, message)| CallSettings { reject, message })
        .unwrap_or_default())
}

pub async fn set(store: &Store, session_id: &str, s: &CallSettings) -> Result<()> {
    let mut tx = store.begin().await?;
    dispatch!(conn &mut tx.conn(), calls::set(session_id, s.reject, s.message.as_deref()))?;
    tx.commit().await
}
