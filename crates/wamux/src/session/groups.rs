//! What a session does with groups: create, read, change, invite, join, leave, through
//! its WhatsApp connection. Creating or joining a group records `group-joined` (WhatsApp
//! tells our other devices, not the one that asked).

use super::{Result, SessionError, SessionManager};
use crate::event::EventKind;
use crate::model::{ChatAddress, SessionId};
use crate::store;
use crate::whatsapp::groups::{
    GroupEdit, GroupInfo, GroupRefusal, Joined, LinkResult, ParticipantAction, ParticipantResult,
};

impl SessionManager {
    /// Creates a group with the session's account as its super admin.
    pub async fn create_group(
        &self,
        id: &SessionId,
        subject: &str,
        participants: &[ChatAddress],
        description: Option<&str>,
        community: Option<&ChatAddress>,
    ) -> Result<(GroupInfo, Vec<ParticipantResult>)> {
        let (conn, me) = self.live(id)?;
        let (group, results) = conn
            .create_group(subject, participants, description, community)
            .await
            .map_err(SessionError::Group)?;
        self.joined(id, &group.id, Some(&group.subject), me.jid.as_deref())
            .await;
        Ok((group, results))
    }

    /// Creates a community (with its announcement group and a general chat).
    pub async fn create_community(
        &self,
        id: &SessionId,
        subject: &str,
        description: Option<&str>,
    ) -> Result<GroupInfo> {
        let (conn, me) = self.live(id)?;
        let community = conn
            .create_community(subject, description)
            .await
            .map_err(SessionError::Group)?;
        self.joined(
            id,
            &community.id,
            Some(&community.subject),
            me.jid.as_deref(),
        )
        .await;
        Ok(community)
    }

    /// The communities the account is in.
    pub async fn communities(&self, id: &SessionId) -> Result<Vec<GroupInfo>> {
        let mut all = self.groups(id).await?;
        all.retain(|g| g.community);
        Ok(all)
    }

    /// The groups of `community` the account is in (its announcement group first).
    pub async fn community_groups(
        &self,
        id: &SessionId,
        community: &ChatAddress,
    ) -> Result<Vec<GroupInfo>> {
        let (conn, _) = self.live(id)?;
        let c = conn.group(community).await.map_err(SessionError::Group)?;
        if !c.community {
            return Err(SessionError::Group(GroupRefusal::Invalid(format!(
                "{} is a group, not a community",
                c.id
            ))));
        }
        let mut groups: Vec<GroupInfo> = conn
            .groups()
            .await
            .map_err(SessionError::Group)?
            .into_iter()
            .filter(|g| g.parent.as_deref() == Some(c.id.as_str()))
            .collect();
        groups.sort_by_key(|g| !g.announcement_group);
        Ok(groups)
    }

    /// Links groups to a community, or unlinks them.
    pub async fn link_groups(
        &self,
        id: &SessionId,
        community: &ChatAddress,
        groups: &[ChatAddress],
        link: bool,
    ) -> Result<Vec<LinkResult>> {
        let (conn, _) = self.live(id)?;
        conn.link_groups(community, groups, link)
            .await
            .map_err(SessionError::Group)
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

    pub async fn group_picture(
        &self,
        id: &SessionId,
        group: &ChatAddress,
    ) -> Result<Option<crate::whatsapp::Picture>> {
        let (conn, _) = self.live(id)?;
        conn.group_picture(group).await.map_err(SessionError::Group)
    }

    pub async fn set_group_picture(
        &self,
        id: &SessionId,
        group: &ChatAddress,
        jpeg: Option<Vec<u8>>,
    ) -> Result<Option<String>> {
        let (conn, _) = self.live(id)?;
        conn.set_group_picture(group, jpeg)
            .await
            .map_err(SessionError::Group)
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
