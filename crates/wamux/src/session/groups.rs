//! What a session does with groups: create, read, change, invite, join, leave, through
//! its WhatsApp connection. Creating or joining a group records `group-joined` (WhatsApp
//! tells our other devices, not the one that asked).

use super::{Result, SessionError, SessionManager};
use crate::event::EventKind;
use crate::model::{ChatAddress, SessionId};
use crate::store;
use crate::whatsapp::groups::{GroupEdit, GroupInfo, Joined, ParticipantAction, ParticipantResult};

impl SessionManager {
    /// Creates a group with the session's account as its super admin.
    pub async fn create_group(
        &self,
        id: &SessionId,
        subject: &str,
        participants: &[ChatAddress],
        description: Option<&str>,
    ) -> Result<(GroupInfo, Vec<ParticipantResult>)> {
        let (conn, me) = self.live(id)?;
        let (group, results) = conn
            .create_group(subject, participants, description)
            .await
            .map_err(SessionError::Group)?;
        self.joined(id, &group.id, Some(&group.subject), me.jid.as_deref())
            .await;
        Ok((group, results))
    }

    pub async fn groups(&self, id: &SessionId) -> Result<Vec<GroupInfo>> {
        let (conn, _) = self.live(id)?;
        conn.groups().await.map_err(SessionError::Group)
    }

    pub async fn group(&self, id: &SessionId, group: &ChatAddress) -> Result<GroupInfo> {
        let (conn, _) = self.live(id)?;
        conn.group(group).await.map_err(SessionError::Group)
    }

    pub async fn group_participants(
        &self,
        id: &SessionId,
        group: &ChatAddress,
        action: ParticipantAction,
        who: &[ChatAddress],
    ) -> Result<Vec<ParticipantResult>> {
        let (conn, _) = self.live(id)?;
        conn.group_participants(group, action, who)
            .await
            .map_err(SessionError::Group)
    }

    /// Applies the edits in order, then reads the group back.
    pub async fn edit_group(
        &self,
        id: &SessionId,
        group: &ChatAddress,
        edits: &[GroupEdit],
    ) -> Result<GroupInfo> {
        let (conn, _) = self.live(id)?;
        for e in edits {
            conn.edit_group(group, e)
                .await
                .map_err(SessionError::Group)?;
        }
        conn.group(group).await.map_err(SessionError::Group)
    }

    pub async fn invite_link(
        &self,
        id: &SessionId,
        group: &ChatAddress,
        reset: bool,
    ) -> Result<String> {
        let (conn, _) = self.live(id)?;
        conn.invite_link(group, reset)
            .await
            .map_err(SessionError::Group)
    }

    pub async fn join_group(&self, id: &SessionId, code: &str) -> Result<Joined> {
        let (conn, me) = self.live(id)?;
        let joined = conn.join_group(code).await.map_err(SessionError::Group)?;
        if joined.status == "joined" {
            self.joined(id, &joined.group_id, None, me.jid.as_deref())
                .await;
        }
        Ok(joined)
    }

    pub async fn leave_group(&self, id: &SessionId, group: &ChatAddress) -> Result<()> {
        let (conn, _) = self.live(id)?;
        conn.leave_group(group).await.map_err(SessionError::Group)
    }

    async fn joined(&self, id: &SessionId, group: &str, subject: Option<&str>, by: Option<&str>) {
        let data = serde_json::json!({"sessionId": id, "groupId": group, "subject": subject,
            "by": by, "timestamp": store::now()});
        match store::events::record(
            &self.inner.shared.store,
            EventKind::GroupJoined,
            id.as_str(),
            Some(group),
            data,
        )
        .await
        {
            Ok(ev) => self.inner.shared.bus.publish(ev),
            Err(e) => tracing::error!(session = %id, "cannot record group-joined: {e:#}"),
        }
    }
}
