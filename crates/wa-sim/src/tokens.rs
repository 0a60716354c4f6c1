//! Privacy tokens, as WhatsApp's server gives and checks them.
//!
//! A 1:1 message can carry proof that its sender may write to its recipient:
//!
//! - a trusted-contact token, `<tctoken>`: the recipient's account gave it to the sender
//!   (its devices ask for that with `<iq xmlns="privacy" type="set"><tokens><token
//!   jid=<sender> t type="trusted_contact"/>` after writing to someone, and the phone does
//!   the same), and the server handed it to the sender's devices in a `<notification
//!   type="privacy_token">` (a device linked later finds it in its history sync);
//! - an NCT token, `<cstoken>`: `HMAC-SHA256(sender's NCT salt, "<recipient LID>@lid")`,
//!   which only a genuine device of the sender can compute, since the salt reaches the
//!   account's devices only by app state (`nct_salt_sync` in `regular_high`) and history
//!   sync.
//!
//! What the server demands depends on the sender's account ([`Restrictions`]): by default
//! nothing (an established account, whose first messages to anyone go through); with
//! `requirePrivacyTokens`, a valid token of either kind; under a reach-out time-lock (a
//! new or reported account), a trusted-contact token, so it can answer people who wrote
//! to it and nobody else. A message that lacks what is demanded is refused whole with
//! `<ack error="463">`, as WhatsApp refuses it.
//!
//! Tokens live [`BUCKETS`] weeks from the time they were given ([`BUCKET_SECS`] each, the
//! A/B props `tctoken_duration` and `tctoken_num_buckets` the simulator serves), and are
//! given again when the giver writes in a later week.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};

use crate::conn::{bytes_of, child, children, iq_error, iq_result};
use crate::hub::{Core, new_id};
use crate::phone::attr;
use crate::state::{B64, now_secs};

/// A token's week, in seconds (the `tctoken_duration` prop).
pub const BUCKET_SECS: i64 = 604_800;

/// How many weeks a token lives (the `tctoken_num_buckets` prop; WhatsApp serves 26).
pub const BUCKETS: i64 = 26;

/// The error code of a message refused for want of a privacy token.
pub const MISSING_TOKEN: &str = "463";

/// A trusted-contact token an account gave: its bytes (the same for one holder each time
/// it is given again) and when it was last given.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Grant {
    pub token: B64,
    pub t: i64,
}

/// What WhatsApp demands of an account's 1:1 messages.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Restrictions {
    /// Every 1:1 message carries a valid `tctoken` or `cstoken`.
    #[serde(default)]
    pub require_privacy_tokens: bool,
    /// Reach-out time-lock: a 1:1 message needs a `tctoken`, so it reaches only accounts
    /// that gave this one a token (by writing to it).
    #[serde(default)]
    pub reachout_timelock: bool,
}

/// A fresh NCT salt.
pub fn new_salt() -> B64 {
    B64(rand::random::<[u8; 32]>().to_vec())
}

/// The `cstoken` a device of the account with `salt` attaches to a message to the
/// account with LID `recipient_lid` (the bare number).
pub fn cs_token(salt: &[u8], recipient_lid: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(salt).expect("HMAC takes any key length");
    mac.update(format!("{recipient_lid}@lid").as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The oldest `t` a token may have and still be valid at `now`: the start of the oldest
/// of the [`BUCKETS`] weeks that end with the current one.
fn valid_since(now: i64) -> i64 {
    (now / BUCKET_SECS - (BUCKETS - 1)) * BUCKET_SECS
}

/// The token `issuer` gave `holder`, while it is valid.
pub fn valid_grant<'a>(core: &'a Core, issuer: &str, holder: &str) -> Option<&'a Grant> {
    core.account(issuer)
        .and_then(|a| a.tokens_issued.get(holder))
        .filter(|g| g.t >= valid_since(now_secs() as i64))
}

/// Why a 1:1 message is refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub &'static str);

/// Checks the proof a 1:1 `message` from `sender` to `recipient` (another account)
/// carries against what the sender's account must show.
pub fn check(core: &Core, sender: &str, recipient: &str, message: &Node) -> Result<(), Refused> {
    let Some(from) = core.account(sender) else {
        return Ok(());
    };
    let rules = from.restrictions;
    if !rules.require_privacy_tokens && !rules.reachout_timelock {
        return Ok(());
    }
    let tc_ok = child(message, "tctoken")
        .and_then(bytes_of)
        .is_some_and(|b| valid_grant(core, recipient, sender).is_some_and(|g| g.token.0 == b));
    if tc_ok {
        return Ok(());
    }
    if rules.reachout_timelock {
        return Err(Refused(
            "reach-out time-lock: no trusted-contact token from the recipient",
        ));
    }
    let cs_ok = match (
        child(message, "cstoken").and_then(bytes_of),
        &from.nct_salt,
        core.account(recipient),
    ) {
        (Some(b), Some(salt), Some(to)) => cs_token(&salt.0, &to.lid) == b,
        _ => false,
    };
    if cs_ok {
        Ok(())
    } else {
        Err(Refused("no valid tctoken or cstoken"))
    }
}

/// `issuer` gives `holder` its token, as of `t` (the same bytes as before, if it gave one),
/// and the server hands it to the holder's devices.
pub fn give(core: &mut Core, issuer: &str, holder: &str, t: i64) {
    if issuer == holder || core.account(holder).is_none() {
        return;
    }
    let Some(acc) = core.account_mut(issuer) else {
        return;
    };
    let issuer_lid = acc.lid.clone();
    let grant = acc
        .tokens_issued
        .entry(holder.to_string())
        .or_insert_with(|| Grant {
            token: B64(rand::random::<[u8; 20]>().to_vec()),
            t,
        });
    grant.t = grant.t.max(t);
    let grant = grant.clone();
    let id = new_id();
    let note = NodeBuilder::new("notification")
        .attr("from", Jid::pn(issuer.to_string()))
        .attr("sender_lid", Jid::lid(issuer_lid))
        .attr("type", "privacy_token")
        .attr("id", id.clone())
        .attr("t", now_secs().to_string())
        .children([NodeBuilder::new("tokens")
            .children([NodeBuilder::new("token")
                .attr("type", "trusted_contact")
                .attr("t", grant.t.to_string())
                .bytes(grant.token.0)
                .build()])
            .build()])
        .build();
    for device in core.companions(holder) {
        core.deliver_to_companion(holder, device, &id, &note);
    }
}

/// After the phone of `from` wrote to `to`, it gives `to` its token, unless it already
/// did this week (the app's sender-side cadence).
pub fn after_phone_send(core: &mut Core, from: &str, to: &str) {
    let now = now_secs() as i64;
    let current = core
        .account(from)
        .and_then(|a| a.tokens_issued.get(to))
        .is_some_and(|g| g.t / BUCKET_SECS >= now / BUCKET_SECS);
    if !current {
        give(core, from, to, now);
    }
}

/// `<iq xmlns="privacy" type="set"><tokens><token jid t type="trusted_contact"/>…`: a device
/// of `phone` gives tokens. Answered with an empty result, as WhatsApp answers (the token
/// itself reaches the holder by notification).
pub fn issue_iq(core: &mut Core, phone: &str, id: &str, node: &Node) -> Node {
    let Some(tokens) = child(node, "tokens") else {
        return iq_error(id, 400, "bad-request");
    };
    let now = now_secs() as i64;
    let mut given = Vec::new();
    for token in children(tokens).iter().filter(|t| t.tag == "token") {
        let holder = attr(token, "jid")
            .and_then(|j| j.parse::<Jid>().ok())
            .and_then(|j| core.phone_of(&j));
        let t = attr(token, "t").and_then(|t| t.parse::<i64>().ok());
        let (Some(t), Some(kind)) = (t, attr(token, "type")) else {
            return iq_error(id, 400, "bad-request");
        };
        if kind != "trusted_contact" {
            return iq_error(id, 400, "bad-request");
        }
        // A holder WhatsApp does not know gets nothing; the rest still do.
        if let Some(holder) = holder {
            given.push((holder, t.min(now)));
        }
    }
    for (holder, t) in given {
        give(core, phone, &holder, t);
    }
    iq_result(id).build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Snapshot;

    fn core_with(phones: &[&str]) -> Core {
        let mut core = Core::new(Snapshot::default(), std::env::temp_dir());
        for p in phones {
            let acc = crate::phone::new_account(&mut core, p, "n").unwrap();
            core.insert_account(acc);
        }
        core
    }

    fn message(kids: Vec<Node>) -> Node {
        NodeBuilder::new("message").children(kids).build()
    }

    #[test]
    fn the_cs_token_is_the_hmac_whatsapp_web_computes() {
        // The client's own function computes the same bytes.
        let salt = [7u8; 32];
        assert_eq!(
            cs_token(&salt, "123456789012345"),
            wacore::iq::tctoken::compute_cs_token(&salt, "123456789012345@lid")
        );
    }

    #[test]
    fn an_unrestricted_account_needs_no_token() {
        let core = core_with(&["15550001", "15550002"]);
        assert_eq!(
            check(&core, "15550001", "15550002", &message(vec![])),
            Ok(())
        );
    }

    #[test]
    fn a_required_token_is_a_valid_cstoken_or_tctoken() {
        let mut core = core_with(&["15550001", "15550002"]);
        core.account_mut("15550001")
            .unwrap()
            .restrictions
            .require_privacy_tokens = true;
        assert!(check(&core, "15550001", "15550002", &message(vec![])).is_err());

        let salt = core.account("15550001").unwrap().nct_salt.clone().unwrap();
        let lid = core.account("15550002").unwrap().lid.clone();
        let good = NodeBuilder::new("cstoken")
            .bytes(cs_token(&salt.0, &lid))
            .build();
        assert_eq!(
            check(&core, "15550001", "15550002", &message(vec![good])),
            Ok(())
        );
        // Another account's salt, or another recipient, proves nothing.
        let wrong = NodeBuilder::new("cstoken")
            .bytes(cs_token(&[1u8; 32], &lid))
            .build();
        assert!(check(&core, "15550001", "15550002", &message(vec![wrong])).is_err());

        give(&mut core, "15550002", "15550001", now_secs() as i64);
        let token = core.account("15550002").unwrap().tokens_issued["15550001"].clone();
        let tc = NodeBuilder::new("tctoken").bytes(token.token.0).build();
        assert_eq!(
            check(&core, "15550001", "15550002", &message(vec![tc])),
            Ok(())
        );
    }

    #[test]
    fn a_timelocked_account_reaches_only_those_who_gave_it_a_token() {
        let mut core = core_with(&["15550001", "15550002", "15550003"]);
        core.account_mut("15550001")
            .unwrap()
            .restrictions
            .reachout_timelock = true;
        let salt = core.account("15550001").unwrap().nct_salt.clone().unwrap();
        let lid = core.account("15550002").unwrap().lid.clone();
        let cs = NodeBuilder::new("cstoken")
            .bytes(cs_token(&salt.0, &lid))
            .build();
        assert!(check(&core, "15550001", "15550002", &message(vec![cs])).is_err());

        give(&mut core, "15550002", "15550001", now_secs() as i64);
        let grant = core.account("15550002").unwrap().tokens_issued["15550001"].clone();
        let tc = || {
            NodeBuilder::new("tctoken")
                .bytes(grant.token.0.clone())
                .build()
        };
        assert_eq!(
            check(&core, "15550001", "15550002", &message(vec![tc()])),
            Ok(())
        );
        // The token is 15550002's for 15550001: it opens no other chat.
        assert!(check(&core, "15550001", "15550003", &message(vec![tc()])).is_err());
    }

    #[test]
    fn a_token_expires_after_its_weeks_and_keeps_its_bytes_when_given_again() {
        let mut core = core_with(&["15550001", "15550002"]);
        let now = now_secs() as i64;
        give(
            &mut core,
            "15550002",
            "15550001",
            now - BUCKETS * BUCKET_SECS - 1,
        );
        assert!(valid_grant(&core, "15550002", "15550001").is_none());
        let before = core.account("15550002").unwrap().tokens_issued["15550001"].clone();
        after_phone_send(&mut core, "15550002", "15550001");
        let after = valid_grant(&core, "15550002", "15550001").unwrap().clone();
        assert_eq!(after.token, before.token);
        assert!(after.t >= now);
    }

    #[test]
    fn the_issue_iq_refuses_what_is_not_a_trusted_contact_token() {
        let mut core = core_with(&["15550001", "15550002"]);
        let iq = |kind: &str| {
            NodeBuilder::new("iq")
                .children([NodeBuilder::new("tokens")
                    .children([NodeBuilder::new("token")
                        .attr("jid", "15550002@s.whatsapp.net")
                        .attr("t", "1700000000")
                        .attr("type", kind.to_string())
                        .build()])
                    .build()])
                .build()
        };
        let answer = issue_iq(&mut core, "15550001", "q1", &iq("other"));
        assert_eq!(attr(&answer, "type").as_deref(), Some("error"));
        let answer = issue_iq(&mut core, "15550001", "q2", &iq("trusted_contact"));
        assert_eq!(attr(&answer, "type").as_deref(), Some("result"));
        assert_eq!(
            core.account("15550001").unwrap().tokens_issued["15550002"].t,
            1_700_000_000
        );
    }
}
