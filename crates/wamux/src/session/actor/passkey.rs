//! The passkey step of linking, as a session's actor drives it: WhatsApp's request is
//! shown, the operator's assertion and confirmation go to WhatsApp off the actor's loop,
//! and each wait has a deadline (the operator's, until the request expires; WhatsApp's, the
//! step timeout). A failed step ends the link attempt ([`Actor::passkey_failed`]).

use std::time::Duration;

use tokio::sync::oneshot;

use super::{Actor, Exit};
use crate::event::EventKind;
use crate::model::SessionStatus;
use crate::passkey::{Assertion, Ceremony, Stage};
use crate::session::{Result, SessionError, check_passkey_stage};
use crate::store;
use crate::whatsapp::{WaEvent, WaSession};

/// What a passkey step's deadline waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PasskeyWait {
    /// The operator, until the request expires.
    Operator,
    /// WhatsApp's next step after ours.
    WhatsApp,
}

/// How long whatsapp-rust 0.7 offers QR codes on one connection after the first: five
/// more of 20 s each (the first one's lifetime comes with it). When they run out it closes
/// the connection, and a passkey step under way ends with it; there is no way to pause
/// the rotation from outside.
pub(super) const QR_BUDGET_AFTER_FIRST: i64 = 5 * 20;

pub(super) const QR_CODES_RAN_OUT: &str = "the QR codes of this link attempt ran out before the passkey step was finished, and the WhatsApp client closed the connection (about 160 s after the first code); start the session again and finish the step within the time shown";

/// How long after the phone took a pairing code whatsapp-rust still counts that link as
/// under way (its wait for `pair-success`, 60 s, less a margin for the round trips):
/// QR codes that run out within it do not close the connection.
const PAIR_CODE_HOLD: i64 = 55;

impl Actor {
    /// The operator hands over the owner's assertion: checked against the pending request,
    /// then sent to WhatsApp off the loop; `reply` hears whether WhatsApp accepted it.
    pub(super) fn submit_assertion(
        &mut self,
        assertion: Assertion,
        reply: oneshot::Sender<Result<()>>,
        session: &WaSession,
    ) {
        let pending = self.state.borrow().passkey.clone();
        if let Err(e) = check_passkey_stage(&self.id, pending.as_ref(), Stage::AssertionRequired) {
            let _ignored = reply.send(Err(e));
            return;
        }
        let pending = pending.expect("checked above");
        if assertion.challenge != pending.challenge {
            let _ignored = reply.send(Err(SessionError::InvalidAssertion(
                "`response.clientDataJSON`: its challenge is not the one WhatsApp asked for (an assertion from an older request, or for another session)".into(),
            )));
            return;
        }
        self.passkey_stage(Stage::Confirming, |_| {});
        self.wait_for_whatsapp();
        self.passkey_call(session, Some(reply), |s| async move {
            s.send_passkey_response(&assertion)
                .await
                .map_err(|e| format!("WhatsApp refused the passkey assertion: {e}"))
        });
    }

    /// The operator saw the same code on the phone.
    pub(super) fn confirm_by_operator(
        &mut self,
        reply: oneshot::Sender<Result<()>>,
        session: &WaSession,
    ) {
        let pending = self.state.borrow().passkey.clone();
        if let Err(e) = check_passkey_stage(&self.id, pending.as_ref(), Stage::ConfirmationRequired)
        {
            let _ignored = reply.send(Err(e));
            return;
        }
        self.confirm_passkey(session, Some(reply));
    }

    /// Why the step failed when its deadline passed.
    pub(super) fn passkey_timed_out(&self, wait: PasskeyWait) -> String {
        let expires_at = self.state.borrow().passkey.as_ref().map(|c| c.expires_at);
        match wait {
            PasskeyWait::WhatsApp => format!(
                "WhatsApp did not take the next passkey step within {} s; start the session again to link afresh",
                self.shared.settings.passkey_step_timeout.as_secs()
            ),
            // This end and the client's come together; either may be heard first.
            PasskeyWait::Operator if expires_at.is_some() && expires_at == self.qr_budget_ends => {
                QR_CODES_RAN_OUT.to_owned()
            }
            PasskeyWait::Operator => {
                "the passkey step was not completed in time; start the session again to link afresh"
                    .to_owned()
            }
        }
    }

    /// WhatsApp asks for the owner's passkey: show the request, whatever state we are in.
    pub(super) async fn passkey_requested(&mut self, options_json: &str) -> Option<Exit> {
        let mut ceremony = match Ceremony::from_options(options_json, store::now()) {
            Ok(c) => c,
            Err(e) => return Some(self.passkey_failed(e.to_string()).await),
        };
        if let Some(end) = self.qr_budget_ends {
            let held = self.linking_by_code && end <= store::now() + PAIR_CODE_HOLD;
            if !held {
                ceremony.expires_at = ceremony.expires_at.min(end);
            }
        }
        self.wait_for_operator(ceremony.expires_at);
        let data = serde_json::json!({
            "sessionId": self.id,
            "options": ceremony.options,
            "expiresAt": ceremony.expires_at,
        });
        self.state.send_modify(|s| {
            s.qr = None;
            s.passkey = Some(ceremony);
            s.passkey_error = None;
        });
        tracing::info!(session = %self.id, "WhatsApp asks for the account owner's passkey");
        self.set_status(SessionStatus::PasskeyRequired, None).await;
        self.record(EventKind::PasskeyRequired, None, data).await;
        None
    }

    /// WhatsApp accepted the assertion and derived the code the phone shows.
    pub(super) async fn passkey_code(
        &mut self,
        code: String,
        skip_handoff_ux: bool,
        session: &WaSession,
    ) -> Option<Exit> {
        if self.state.borrow().passkey.is_none() {
            tracing::warn!(session = %self.id, "a passkey code arrived with no passkey step under way");
            return None;
        }
        let shown = code.clone();
        self.passkey_stage(Stage::ConfirmationRequired, |c| {
            c.code = Some(shown);
            c.skip_handoff_ux = skip_handoff_ux;
        });
        let expires_at = self.state.borrow().passkey.as_ref().map(|c| c.expires_at);
        self.wait_for_operator(expires_at.unwrap_or_default());
        self.set_status(SessionStatus::PasskeyConfirmation, None)
            .await;
        self.record(
            EventKind::PasskeyConfirmation,
            None,
            serde_json::json!({
                "sessionId": self.id,
                "code": code,
                "skipHandoffUx": skip_handoff_ux,
                "expiresAt": expires_at,
            }),
        )
        .await;
        if skip_handoff_ux {
            // WhatsApp proved continuity itself: there is nothing for the operator to compare.
            self.confirm_passkey(session, None);
        }
        None
    }

    /// The operator has until `expires_at` (Unix seconds) for the next step.
    fn wait_for_operator(&mut self, expires_at: i64) {
        let wait = Duration::from_secs((expires_at - store::now()).max(0) as u64);
        self.passkey_deadline = Some((tokio::time::Instant::now() + wait, PasskeyWait::Operator));
    }

    /// WhatsApp has the step timeout for its next step.
    fn wait_for_whatsapp(&mut self) {
        let wait = self.shared.settings.passkey_step_timeout;
        self.passkey_deadline = Some((tokio::time::Instant::now() + wait, PasskeyWait::WhatsApp));
    }

    /// Sends the confirmation; `reply` (an API caller) hears whether WhatsApp took it.
    fn confirm_passkey(&mut self, session: &WaSession, reply: Option<oneshot::Sender<Result<()>>>) {
        self.passkey_stage(Stage::Confirming, |_| {});
        self.wait_for_whatsapp();
        self.passkey_call(session, reply, |s| async move {
            s.send_passkey_confirmation()
                .await
                .map_err(|e| format!("WhatsApp refused the passkey confirmation: {e}"))
        });
    }

    /// Runs one passkey call to WhatsApp off the actor's loop (it waits for WhatsApp's
    /// answer); a refusal comes back to the actor as a failed step, and to `reply`.
    fn passkey_call<F, Fut>(
        &self,
        session: &WaSession,
        reply: Option<oneshot::Sender<Result<()>>>,
        call: F,
    ) where
        F: FnOnce(WaSession) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = std::result::Result<(), String>> + Send,
    {
        let session = session.clone();
        let own = self.own.clone();
        tokio::spawn(async move {
            let outcome = call(session).await;
            if let Err(reason) = &outcome
                && let Some(own) = &own
                && own
                    .send(WaEvent::PasskeyFailed {
                        reason: reason.clone(),
                    })
                    .is_err()
            {
                tracing::debug!("session actor gone before a passkey refusal reached it");
            }
            if let Some(reply) = reply {
                let _ignored = reply.send(outcome.map_err(SessionError::PasskeyRejected));
            }
        });
    }

    /// Moves the step under way to `stage`, changing what `edit` changes.
    fn passkey_stage(&self, stage: Stage, edit: impl FnOnce(&mut Ceremony)) {
        self.state.send_modify(|s| {
            if let Some(c) = s.passkey.as_mut() {
                c.stage = stage;
                edit(c);
            }
        });
    }

    /// Ends the step under way with `reason`: a `passkey-failed` event, and the error kept
    /// for `GET .../passkey`.
    pub(super) async fn end_passkey(&mut self, reason: &str) {
        self.passkey_deadline = None;
        let stage = self.state.borrow().passkey.as_ref().map(|c| c.stage);
        let Some(stage) = stage else { return };
        self.state.send_modify(|s| {
            s.passkey = None;
            s.passkey_error = Some(reason.to_owned());
        });
        tracing::warn!(session = %self.id, "passkey step failed: {reason}");
        self.record(
            EventKind::PasskeyFailed,
            None,
            serde_json::json!({"sessionId": self.id, "reason": reason, "stage": stage}),
        )
        .await;
    }

    /// The link attempt is over: WhatsApp forgets a failed ceremony, so the session stops
    /// (status `failed`) until someone starts it again, which links afresh.
    pub(super) async fn passkey_failed(&mut self, reason: String) -> Exit {
        self.end_passkey(&reason).await;
        self.state.send_modify(|s| s.qr = None);
        self.set_status(SessionStatus::Failed, Some(&reason)).await;
        Exit::Stopped
    }
}

/// Resolves at the passkey step's deadline with what it waited for; never without one.
pub(super) async fn timer(deadline: Option<(tokio::time::Instant, PasskeyWait)>) -> PasskeyWait {
    match deadline {
        Some((at, wait)) => {
            tokio::time::sleep_until(at).await;
            wait
        }
        None => std::future::pending().await,
    }
}
