//! The account-level IQs a WhatsApp Web client sends at login and in normal use, answered
//! as WhatsApp answers them: the prekey count and the key-bundle digest, signed-prekey
//! rotation, the privacy settings, the blocklist and the A/B props.
//!
//! Each function takes the request and the core under its lock and gives back the answer;
//! what it changes is in the account, written with the journal's next batch.

use sha1::Digest as _;
use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node};

use crate::conn::{be_u32, bytes_of, child, children, id3, iq_error, iq_result};
use crate::hub::Core;
use crate::phone::attr;
use crate::state::{B64, DeviceRecord, SignedPreKey};

/// The privacy settings of an account nobody has changed, as WhatsApp gives them to a new
/// account, by category. A category missing from an account's own settings has this value.
pub const DEFAULT_PRIVACY: &[(&str, &str)] = &[
    ("readreceipts", "all"),
    ("last", "contacts"),
    ("online", "all"),
    ("profile", "contacts"),
    ("status", "contacts"),
    ("groupadd", "all"),
    ("calladd", "all"),
    ("messages", "all"),
    ("defense", "off"),
];

/// The values WhatsApp accepts for a privacy category.
fn privacy_values(category: &str) -> Option<&'static [&'static str]> {
    Some(match category {
        "last" | "profile" | "status" | "groupadd" => {
            &["all", "contacts", "contact_blacklist", "none"]
        }
        "readreceipts" => &["all", "none"],
        "online" => &["all", "match_last_seen"],
        "calladd" => &["all", "known", "contacts"],
        "messages" => &["all", "contacts"],
        "defense" => &["off", "on_standard"],
        _ => return None,
    })
}

/// Whether WhatsApp takes `value` for privacy category `category`.
pub fn privacy_value_ok(category: &str, value: &str) -> bool {
    privacy_values(category).is_some_and(|v| v.contains(&value))
}

/// How often a client should fetch the props again, in seconds (WhatsApp: a day).
const PROPS_REFRESH_SECS: u32 = 86_400;

/// The A/B props the simulator serves, by config code; a client takes its built-in default
/// for any other, as it does for a prop WhatsApp does not send. These are the privacy-token
/// ones (see `tokens`): attach the trusted-contact token to every 1:1 message, fall back to
/// the NCT token, and a token's week and lifetime in weeks.
const PROPS: &[(u32, &str)] = &[
    (10518, "true"), // privacy_token_sending_on_all_1_on_1_messages
    (24941, "true"), // wa_nct_token_send_enabled
    (865, "604800"), // tctoken_duration
    (909, "26"),     // tctoken_num_buckets
];

/// The part of a device's key bundle both a prekey fetch and the digest carry:
/// `<registration>`, `<type>`, `<identity>` and the signed prekey `<skey>`.
pub fn bundle_nodes(dev: &DeviceRecord, signed: &SignedPreKey) -> Vec<Node> {
    vec![
        NodeBuilder::new("registration")
            .bytes(dev.registration_id.to_be_bytes().to_vec())
            .build(),
        NodeBuilder::new("type").bytes(vec![5u8]).build(),
        NodeBuilder::new("identity")
            .bytes(dev.identity.0.clone())
            .build(),
        NodeBuilder::new("skey")
            .children([
                NodeBuilder::new("id").bytes(id3(signed.id)).build(),
                NodeBuilder::new("value")
                    .bytes(signed.public.0.clone())
                    .build(),
                NodeBuilder::new("signature")
                    .bytes(signed.signature.0.clone())
                    .build(),
            ])
            .build(),
    ]
}

/// `<iq xmlns="encrypt" type="get"><count/>`: how many one-time prekeys the server holds
/// for the device.
pub fn prekey_count(core: &Core, phone: &str, device: u16, id: &str) -> Node {
    let Some(dev) = core.account(phone).and_then(|a| a.devices.get(&device)) else {
        return iq_error(id, 404, "item-not-found");
    };
    iq_result(id)
        .children([NodeBuilder::new("count")
            .attr("value", dev.prekeys.len().to_string())
            .build()])
        .build()
}

/// SHA-1 over the identity key, the signed prekey and its signature, then each one-time
/// prekey in the order listed: what WhatsApp's digest carries and clients recompute.
pub fn bundle_digest(
    identity: &[u8],
    signed: &SignedPreKey,
    prekeys: impl IntoIterator<Item = impl AsRef<[u8]>>,
) -> Vec<u8> {
    let mut hash = sha1::Sha1::new();
    hash.update(identity);
    hash.update(&signed.public.0);
    hash.update(&signed.signature.0);
    for key in prekeys {
        hash.update(key.as_ref());
    }
    hash.finalize().to_vec()
}

/// `<iq xmlns="encrypt" type="get"><digest/>`: the key bundle the server holds for the
/// device and its digest, or 404 when the device never uploaded one (the client then
/// uploads it again).
pub fn digest(core: &Core, phone: &str, device: u16, id: &str) -> Node {
    let Some(dev) = core.account(phone).and_then(|a| a.devices.get(&device)) else {
        return iq_error(id, 404, "item-not-found");
    };
    let Some(signed) = dev
        .signed_prekey
        .as_ref()
        .filter(|_| !dev.identity.0.is_empty())
    else {
        return iq_error(id, 404, "item-not-found");
    };
    let hash = bundle_digest(&dev.identity.0, signed, dev.prekeys.values().map(|k| &k.0));
    let ids: Vec<Node> = dev
        .prekeys
        .keys()
        .map(|k| NodeBuilder::new("id").bytes(id3(*k)).build())
        .collect();
    let mut kids = bundle_nodes(dev, signed);
    kids.push(NodeBuilder::new("list").children(ids).build());
    kids.push(NodeBuilder::new("hash").bytes(hash).build());
    iq_result(id)
        .children([NodeBuilder::new("digest").children(kids).build()])
        .build()
}

/// `<iq xmlns="encrypt" type="set"><rotate><skey>`: the device's new signed prekey, kept
/// from now on for its bundle. A malformed key (an id of 3 bytes, a 32-byte key, a 64-byte
/// signature) is refused with 400 and the old one kept.
pub fn rotate(core: &mut Core, phone: &str, device: u16, id: &str, rotate: &Node) -> Node {
    let skey = child(rotate, "skey");
    let field = |name: &str| skey.and_then(|s| child(s, name)).and_then(bytes_of);
    let (Some(key_id), Some(public), Some(signature)) =
        (field("id"), field("value"), field("signature"))
    else {
        return iq_error(id, 400, "bad-request");
    };
    if key_id.len() != 3 || public.len() != 32 || signature.len() != 64 {
        return iq_error(id, 400, "bad-request");
    }
    let Some(dev) = core
        .account_mut(phone)
        .and_then(|a| a.devices.get_mut(&device))
    else {
        return iq_error(id, 404, "item-not-found");
    };
    dev.signed_prekey = Some(SignedPreKey {
        id: be_u32(key_id),
        public: B64(public.to_vec()),
        signature: B64(signature.to_vec()),
    });
    iq_result(id).build()
}

/// The account's value for each privacy category, defaults filled in.
pub fn privacy_settings(core: &Core, phone: &str) -> Vec<(String, String)> {
    let own = core.account(phone).map(|a| &a.privacy);
    DEFAULT_PRIVACY
        .iter()
        .map(|(category, default)| {
            let value = own
                .and_then(|p| p.get(*category))
                .map_or(*default, String::as_str);
            ((*category).to_string(), value.to_string())
        })
        .collect()
}

/// Whether `phone`'s privacy setting `category` hides it from everyone (`none`). (The
/// simulator keeps no contact lists, so `contacts` shows it to all.)
pub fn hides(core: &Core, phone: &str, category: &str) -> bool {
    privacy_settings(core, phone)
        .iter()
        .any(|(c, v)| c == category && v == "none")
}

/// `<iq xmlns="privacy">`: `get` answers every category; `set` changes the ones named
/// (all or nothing: an unknown category or a value it does not take is refused with 400).
pub fn privacy(core: &mut Core, phone: &str, id: &str, node: &Node) -> Node {
    let Some(request) = child(node, "privacy") else {
        return iq_error(id, 400, "bad-request");
    };
    let category = |name: &str, value: &str| {
        NodeBuilder::new("category")
            .attr("name", name.to_string())
            .attr("value", value.to_string())
            .build()
    };
    if attr(node, "type").as_deref() == Some("get") {
        let settings = privacy_settings(core, phone)
            .iter()
            .map(|(n, v)| category(n, v))
            .collect::<Vec<_>>();
        return iq_result(id)
            .children([NodeBuilder::new("privacy").children(settings).build()])
            .build();
    }
    let mut changes = Vec::new();
    for c in children(request).iter().filter(|c| c.tag == "category") {
        let (Some(name), Some(value)) = (attr(c, "name"), attr(c, "value")) else {
            return iq_error(id, 400, "bad-request");
        };
        if !privacy_values(&name).is_some_and(|values| values.contains(&value.as_str())) {
            return iq_error(id, 400, "bad-request");
        }
        changes.push((name, value));
    }
    if changes.is_empty() {
        return iq_error(id, 400, "bad-request");
    }
    let Some(acc) = core.account_mut(phone) else {
        return iq_error(id, 404, "item-not-found");
    };
    for (name, value) in &changes {
        acc.privacy.insert(name.clone(), value.clone());
    }
    let echoed = changes
        .iter()
        .map(|(n, v)| category(n, v))
        .collect::<Vec<_>>();
    iq_result(id)
        .children([NodeBuilder::new("privacy").children(echoed).build()])
        .build()
}

/// `<iq xmlns="blocklist">`: `get` lists the blocked accounts; `set` with
/// `<item action="block|unblock" jid=.../>` changes the list.
pub fn blocklist(core: &mut Core, phone: &str, id: &str, node: &Node) -> Node {
    if attr(node, "type").as_deref() == Some("get") {
        let items: Vec<Node> = core
            .account(phone)
            .map(|a| a.blocked.iter())
            .into_iter()
            .flatten()
            .map(|jid| NodeBuilder::new("item").attr("jid", jid.clone()).build())
            .collect();
        return iq_result(id)
            .children([NodeBuilder::new("list").children(items).build()])
            .build();
    }
    let Some(item) = child(node, "item") else {
        return iq_error(id, 400, "bad-request");
    };
    let jid = attr(item, "jid").and_then(|j| j.parse::<Jid>().ok());
    let (Some(action), Some(jid)) = (attr(item, "action"), jid) else {
        return iq_error(id, 400, "bad-request");
    };
    let jid = jid.to_non_ad().to_string();
    let Some(acc) = core.account_mut(phone) else {
        return iq_error(id, 404, "item-not-found");
    };
    match action.as_str() {
        "block" => {
            acc.blocked.insert(jid);
        }
        "unblock" => {
            acc.blocked.remove(&jid);
        }
        _ => return iq_error(id, 400, "bad-request"),
    }
    iq_result(id).build()
}

/// The digest of the props served, which a client sends back to ask for changes only.
fn props_hash() -> String {
    let mut hash = sha1::Sha1::new();
    for (code, value) in PROPS {
        hash.update(code.to_be_bytes());
        hash.update(value.as_bytes());
        hash.update([0]);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `<iq xmlns="abt" type="get"><props protocol="1" [hash=...]/>`: the A/B props. A client
/// that already holds the current set (its `hash` matches) gets an empty delta.
pub fn props(id: &str, node: &Node) -> Node {
    let Some(request) = child(node, "props") else {
        return iq_error(id, 400, "bad-request");
    };
    let hash = props_hash();
    let current = attr(request, "hash").is_some_and(|h| h == hash);
    let props: Vec<Node> = if current {
        Vec::new()
    } else {
        PROPS
            .iter()
            .map(|(code, value)| {
                NodeBuilder::new("prop")
                    .attr("config_code", code.to_string())
                    .attr("config_value", value.to_string())
                    .build()
            })
            .collect()
    };
    iq_result(id)
        .children([NodeBuilder::new("props")
            .attr("protocol", "1")
            .attr("ab_key", "wa-sim")
            .attr("hash", hash)
            .attr("refresh", PROPS_REFRESH_SECS.to_string())
            .attr("refresh_id", "1")
            .attr("delta_update", if current { "true" } else { "false" })
            .children(props)
            .build()])
        .build()
}

#[cfg(test)]
mod tests {
    //! Each request is built by whatsapp-rust's own IQ spec, as a client sends it, and each
    //! answer is read back with that spec's own parser.

    use super::*;
    use crate::state::Snapshot;
    use wacore::iq::blocklist::{GetBlocklistSpec, UpdateBlocklistSpec};
    use wacore::iq::prekeys::{DigestKeyBundleSpec, PreKeyCountSpec, RotateSignedPreKeySpec};
    use wacore::iq::privacy::{
        PrivacyCategory, PrivacySettingsSpec, PrivacyValue, SetPrivacySettingSpec,
    };
    use wacore::iq::props::PropsSpec;
    use wacore::iq::spec::IqSpec;
    use wacore::request::InfoQueryType;
    use wacore_binary::NodeContent;

    const PHONE: &str = "15550000001";

    /// An account with a linked device 1 that uploaded a bundle with three prekeys.
    fn core() -> Core {
        let mut core = Core::new(Snapshot::default(), std::env::temp_dir());
        let mut acc = crate::phone::new_account(&mut core, PHONE, "Alice").unwrap();
        let phone_record = acc.devices[&0].clone();
        acc.devices.insert(
            1,
            DeviceRecord {
                id: 1,
                noise_pub: None,
                registration_id: 0x0102_0304,
                identity: B64(vec![7; 32]),
                signed_prekey: Some(SignedPreKey {
                    id: 9,
                    public: B64(vec![8; 32]),
                    signature: B64(vec![6; 64]),
                }),
                prekeys: (1..=3).map(|i| (i, B64(vec![i as u8; 32]))).collect(),
                device_identity: None,
                queue: Default::default(),
                ..phone_record
            },
        );
        core.insert_account(acc);
        core
    }

    /// The `<iq>` a client sends for `spec`.
    fn request(spec: &impl IqSpec) -> Node {
        let iq = spec.build_iq();
        let ty = match iq.query_type {
            InfoQueryType::Get => "get",
            InfoQueryType::Set => "set",
        };
        let mut b = NodeBuilder::new("iq")
            .attr("id", "q1")
            .attr("xmlns", iq.namespace.to_string())
            .attr("type", ty)
            .attr("to", "s.whatsapp.net");
        if let Some(NodeContent::Nodes(nodes)) = iq.content {
            b = b.children(nodes);
        }
        b.build()
    }

    fn error_code(answer: &Node) -> Option<String> {
        (attr(answer, "type").as_deref() == Some("error"))
            .then(|| child(answer, "error").and_then(|e| attr(e, "code")))
            .flatten()
    }

    #[test]
    fn count_is_the_prekeys_held() {
        let core = core();
        let answer = prekey_count(&core, PHONE, 1, "q1");
        let spec = PreKeyCountSpec::new();
        assert_eq!(attr(&request(&spec), "xmlns").as_deref(), Some("encrypt"));
        assert_eq!(spec.parse_response(&answer.as_node_ref()).unwrap().count, 3);
        assert_eq!(
            error_code(&prekey_count(&core, PHONE, 5, "q1")).as_deref(),
            Some("404")
        );
    }

    #[test]
    fn digest_is_what_the_client_recomputes() {
        let core = core();
        let spec = DigestKeyBundleSpec::new();
        let req = request(&spec);
        assert!(child(&req, "digest").is_some());
        let answer = digest(&core, PHONE, 1, "q1");
        let got = spec.parse_response(&answer.as_node_ref()).unwrap();
        assert_eq!(got.reg_id, 0x0102_0304);
        assert_eq!(got.identity, vec![7; 32]);
        assert_eq!((got.skey_id, got.skey_pubkey.clone()), (9, vec![8; 32]));
        assert_eq!(got.prekey_ids, vec![1, 2, 3]);
        // The client's own computation over its copy of the same keys.
        let keys: Vec<Vec<u8>> = (1..=3u8).map(|i| vec![i; 32]).collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let expected =
            wacore::prekeys::compute_key_bundle_digest(&[7; 32], &[8; 32], &[6; 64], &refs);
        assert_eq!(got.hash, expected);
        // A device with no bundle: 404, on which whatsapp-rust uploads it again.
        let mut bare = core;
        bare.account_mut(PHONE)
            .unwrap()
            .devices
            .get_mut(&1)
            .unwrap()
            .signed_prekey = None;
        assert_eq!(
            error_code(&digest(&bare, PHONE, 1, "q1")).as_deref(),
            Some("404")
        );
    }

    #[test]
    fn a_rotated_signed_prekey_is_kept_and_a_bad_one_refused() {
        let mut core = core();
        let key = wacore::libsignal::protocol::KeyPair::generate(&mut rand::rng());
        let spec = RotateSignedPreKeySpec::new(77, key.public_key, vec![3; 64]);
        let req = request(&spec);
        let answer = rotate(&mut core, PHONE, 1, "q1", child(&req, "rotate").unwrap());
        assert_eq!(attr(&answer, "type").as_deref(), Some("result"));
        let held = core.account(PHONE).unwrap().devices[&1]
            .signed_prekey
            .clone()
            .unwrap();
        assert_eq!(held.id, 77);
        assert_eq!(held.public.0, key.public_key.public_key_bytes().to_vec());
        // The digest now carries it.
        let got = DigestKeyBundleSpec::new()
            .parse_response(&digest(&core, PHONE, 1, "q1").as_node_ref())
            .unwrap();
        assert_eq!(got.skey_id, 77);

        let short = RotateSignedPreKeySpec::new(78, key.public_key, vec![3; 10]);
        let req = request(&short);
        let answer = rotate(&mut core, PHONE, 1, "q1", child(&req, "rotate").unwrap());
        assert_eq!(error_code(&answer).as_deref(), Some("400"));
        assert_eq!(
            core.account(PHONE).unwrap().devices[&1]
                .signed_prekey
                .as_ref()
                .unwrap()
                .id,
            77
        );
    }

    #[test]
    fn privacy_has_whatsapps_defaults_and_keeps_changes() {
        let mut core = core();
        let spec = PrivacySettingsSpec::new();
        let answer = privacy(&mut core, PHONE, "q1", &request(&spec));
        let settings = spec.parse_response(&answer.as_node_ref()).unwrap().settings;
        let value = |settings: &[wacore::iq::privacy::PrivacySetting], c: PrivacyCategory| {
            settings
                .iter()
                .find(|s| s.category == c)
                .map(|s| s.value.clone())
        };
        assert_eq!(settings.len(), DEFAULT_PRIVACY.len());
        assert_eq!(
            value(&settings, PrivacyCategory::ReadReceipts),
            Some(PrivacyValue::All)
        );
        assert_eq!(
            value(&settings, PrivacyCategory::Last),
            Some(PrivacyValue::Contacts)
        );
        assert_eq!(
            value(&settings, PrivacyCategory::DefenseMode),
            Some(PrivacyValue::Off)
        );

        let set = SetPrivacySettingSpec::new(PrivacyCategory::ReadReceipts, PrivacyValue::None);
        let answer = privacy(&mut core, PHONE, "q1", &request(&set));
        assert_eq!(attr(&answer, "type").as_deref(), Some("result"));
        let answer = privacy(&mut core, PHONE, "q1", &request(&spec));
        let settings = spec.parse_response(&answer.as_node_ref()).unwrap().settings;
        assert_eq!(
            value(&settings, PrivacyCategory::ReadReceipts),
            Some(PrivacyValue::None)
        );

        // A value the category does not take changes nothing (whatsapp-rust's spec refuses
        // to build one, so the request is written out).
        let bad = NodeBuilder::new("iq")
            .attr("id", "q2")
            .attr("xmlns", "privacy")
            .attr("type", "set")
            .children([NodeBuilder::new("privacy")
                .children([NodeBuilder::new("category")
                    .attr("name", "readreceipts")
                    .attr("value", "contacts")
                    .build()])
                .build()])
            .build();
        let answer = privacy(&mut core, PHONE, "q2", &bad);
        assert_eq!(error_code(&answer).as_deref(), Some("400"));
        assert_eq!(core.account(PHONE).unwrap().privacy["readreceipts"], "none");
    }

    #[test]
    fn blocklist_keeps_blocks_and_unblocks() {
        let mut core = core();
        let spec = GetBlocklistSpec;
        let list = |core: &mut Core| {
            spec.parse_response(&blocklist(core, PHONE, "q1", &request(&spec)).as_node_ref())
                .unwrap()
        };
        assert!(list(&mut core).is_empty());
        let jid: Jid = "15550000002@s.whatsapp.net".parse().unwrap();
        let answer = blocklist(
            &mut core,
            PHONE,
            "q1",
            &request(&UpdateBlocklistSpec::block(&jid)),
        );
        assert_eq!(attr(&answer, "type").as_deref(), Some("result"));
        let entries = list(&mut core);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].jid.user, "15550000002");
        blocklist(
            &mut core,
            PHONE,
            "q1",
            &request(&UpdateBlocklistSpec::unblock(&jid)),
        );
        assert!(list(&mut core).is_empty());
    }

    #[test]
    fn props_answer_parses_and_a_current_hash_gets_an_empty_delta() {
        let spec = PropsSpec::new();
        let answer = props("q1", &request(&spec));
        let got = spec.parse_response(&answer.as_node_ref()).unwrap();
        assert_eq!(got.refresh, Some(PROPS_REFRESH_SECS));
        assert!(!got.delta_update);
        // The privacy-token props, with the token lifetime the server itself checks.
        use wacore::iq::abprops::web;
        let value = |code: u32| {
            got.experiment_props
                .iter()
                .find(|p| p.0 == code)
                .map(|p| p.1.to_string())
        };
        let on = Some("true".to_string());
        assert_eq!(
            value(web::PRIVACY_TOKEN_SENDING_ON_ALL_1_ON_1_MESSAGES.code),
            on
        );
        assert_eq!(value(web::WA_NCT_TOKEN_SEND_ENABLED.code), on);
        assert_eq!(
            value(web::TCTOKEN_DURATION.code),
            Some(crate::tokens::BUCKET_SECS.to_string())
        );
        assert_eq!(
            value(web::TCTOKEN_NUM_BUCKETS.code),
            Some(crate::tokens::BUCKETS.to_string())
        );
        let hash = got.hash.unwrap();
        let again = PropsSpec::with_hash(&hash);
        let got = again
            .parse_response(&props("q1", &request(&again)).as_node_ref())
            .unwrap();
        assert!(got.delta_update);
        assert!(got.experiment_props.is_empty());
    }
}
