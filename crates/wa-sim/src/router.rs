//! What the server does with each stanza a logged-in device sends: answer
//! IQs, route messages and receipts between devices, take acks.

use std::sync::Arc;

use wacore_binary::builder::NodeBuilder;
use wacore_binary::{Jid, Node, NodeContent, Server};

use crate::conn::{Reply, be_u32, bytes_of, child, children, id3, iq_result, is_user, jid_attr};
use crate::hub::{Core, Hub, Outbound, new_id, offline_marker, t_now};
use crate::iq::bundle_nodes;
use crate::phone::{self, attr};
use crate::state::{B64, SignedPreKey};

/// Most one-time prekeys kept per device: the client uploads hundreds, a
/// simulator needs a handful, and the snapshot stays small.
const MAX_STORED_PREKEYS: usize = 100;

/// Below this many one-time prekeys a device is asked to upload more.
const LOW_PREKEYS: usize = 5;

pub async fn handle_device_stanza(
    hub: &Arc<Hub>,
    phone: &str,
    device: u16,
    node: Node,
) -> Vec<Reply> {
    match node.tag.as_ref() {
        "iq" => handle_iq(hub, phone, device, &node).await,
        "message" => route_message(hub, phone, device, &node).await,
        "receipt" => route_receipt(hub, phone, device, &node).await,
        "ack" => {
            if let Some(id) = attr(&node, "id") {
                let mut core = hub.core.lock().await;
                core.acknowledge(phone, device, &[id]);
            }
            Vec::new()
        }
        "presence" => {
            let mut core = hub.core.lock().await;
            crate::presence::stanza(&mut core, phone, device, &node);
            Vec::new()
        }
        "call" => {
            let mut core = hub.core.lock().await;
            vec![Reply::Node(crate::calls::from_device(
                &mut core, phone, &node,
            ))]
        }
        "chatstate" => {
            let mut core = hub.core.lock().await;
            crate::presence::chatstate(&mut core, phone, &node);
            Vec::new()
        }
        // Unified-session pings need no answer.
        _ => Vec::new(),
    }
}

async fn handle_iq(hub: &Arc<Hub>, phone: &str, device: u16, node: &Node) -> Vec<Reply> {
    let id = attr(node, "id").unwrap_or_default();
    let ty = attr(node, "type").unwrap_or_default();
    if ty == "result" || ty == "error" {
        // Answers to our own IQs (none need follow-up).
        return Vec::new();
    }
    let xmlns = attr(node, "xmlns").unwrap_or_default();
    let ok = || vec![Reply::Node(iq_result(&id).build())];
    match xmlns.as_str() {
        "passive" => {
            let mut replies = ok();
            if child(node, "active").is_some() {
                replies.extend(flush_offline(hub, phone, device).await);
            }
            replies
        }
        "encrypt" if ty == "set" && child(node, "rotate").is_some() => {
            let mut core = hub.core.lock().await;
            let rotate = child(node, "rotate").expect("checked");
            vec![Reply::Node(crate::iq::rotate(
                &mut core, phone, device, &id, rotate,
            ))]
        }
        "encrypt" if ty == "set" => {
            store_bundle(hub, phone, device, node).await;
            ok()
        }
        "encrypt" if child(node, "key").is_some() => {
            vec![Reply::Node(prekey_bundles(hub, &id, node).await)]
        }
        "encrypt" if child(node, "count").is_some() => {
            let core = hub.core.lock().await;
            vec![Reply::Node(crate::iq::prekey_count(
                &core, phone, device, &id,
            ))]
        }
        "encrypt" if child(node, "digest").is_some() => {
            let core = hub.core.lock().await;
            vec![Reply::Node(crate::iq::digest(&core, phone, device, &id))]
        }
        "privacy" if child(node, "privacy").is_some() => {
            let mut core = hub.core.lock().await;
            vec![Reply::Node(crate::iq::privacy(&mut core, phone, &id, node))]
        }
        "blocklist" => {
            let mut core = hub.core.lock().await;
            vec![Reply::Node(crate::iq::blocklist(
                &mut core, phone, &id, node,
            ))]
        }
        "abt" => vec![Reply::Node(crate::iq::props(&id, node))],
        "w:g2" => {
            let mut core = hub.core.lock().await;
            vec![Reply::Node(crate::groups::iq::handle(
                &mut core, phone, device, &id, node,
            ))]
        }
        "usync" => vec![Reply::Node(usync(hub, &id, node).await)],
        "w:profile:picture" if ty == "get" => {
            vec![Reply::Node(profile_picture(hub, &id, node).await)]
        }
        "w:profile:picture" if ty == "set" => {
            vec![Reply::Node(
                set_picture(hub, phone, device, &id, node).await,
            )]
        }
        "w:sync:app:state" => {
            let mut core = hub.core.lock().await;
            vec![Reply::Node(crate::appstate::sync(
                &mut core, phone, device, &id, node,
            ))]
        }
        "w:m" if child(node, "media_conn").is_some() => {
            let auth = format!("sim-{}", new_id());
            vec![Reply::Node(
                iq_result(&id)
                    .children([NodeBuilder::new("media_conn")
                        .attr("auth", auth)
                        .attr("ttl", "3600")
                        .attr("auth_ttl", "21600")
                        .attr("max_buckets", "12")
                        .children([NodeBuilder::new("host")
                            .attr("hostname", hub.media_host.clone())
                            .build()])
                        .build()])
                    .build(),
            )]
        }
        "md" if child(node, "remove-companion-device").is_some() => {
            let target = child(node, "remove-companion-device")
                .and_then(|c| jid_attr(c, "jid"))
                .map(|j| j.device)
                .unwrap_or(device);
            let mut core = hub.core.lock().await;
            unlink(&mut core, phone, target);
            ok()
        }
        // What WhatsApp answers with an empty result: the keepalive ping, clearing a
        // dirty flag, push and client-stats settings.
        "w:p" | "urn:xmpp:whatsapp:dirty" | "urn:xmpp:whatsapp:push" | "w:stats" => ok(),
        "privacy" if ty == "set" && child(node, "tokens").is_some() => {
            let mut core = hub.core.lock().await;
            vec![Reply::Node(crate::tokens::issue_iq(
                &mut core, phone, &id, node,
            ))]
        }
        // Anything else is a feature the simulator does not have: the client hears so, as
        // it would from a WhatsApp server that does not know the request, instead of an
        // empty success it would take as done.
        _ => {
            let asked = children(node)
                .first()
                .map(|c| c.tag.to_string())
                .unwrap_or_default();
            tracing::warn!(%xmlns, %ty, %asked, "an IQ the simulator does not model: 501");
            vec![Reply::Node(crate::conn::iq_error(
                &id,
                501,
                "feature-not-implemented",
            ))]
        }
    }
}

/// Removes a companion: its queue goes, its noise key is refused from now
/// on, and a live connection is told it was logged out.
pub fn unlink(core: &mut Core, phone: &str, device: u16) -> bool {
    if device == 0 {
        return false;
    }
    let Some(acc) = core.account_mut(phone) else {
        return false;
    };
    let Some(dev) = acc.devices.remove(&device) else {
        return false;
    };
    if let Some(k) = dev.noise_pub {
        acc.revoked_noise.push(k);
    }
    crate::presence::disconnected(core, phone, device);
    if let Some(conn) = core.conns.remove(&(phone.to_string(), device)) {
        let node = NodeBuilder::new("stream:error")
            .attr("code", "401")
            .children([NodeBuilder::new("conflict")
                .attr("type", "device_removed")
                .build()])
            .build();
        if let Ok(bytes) = wacore_binary::marshal::marshal(&node) {
            conn.send(Outbound::NodeThenClose(bytes));
        }
    }
    true
}

/// Sends the device its backlog (marked `offline`), then the offline marker,
/// then lets live traffic through.
async fn flush_offline(hub: &Arc<Hub>, phone: &str, device: u16) -> Vec<Reply> {
    let mut core = hub.core.lock().await;
    let queued: Vec<Vec<u8>> = core
        .account(phone)
        .and_then(|a| a.devices.get(&device))
        .map(|d| d.queue.iter().map(|q| q.node.0.clone()).collect())
        .unwrap_or_default();
    let mut replies = Vec::with_capacity(queued.len() + 1);
    for bytes in &queued {
        match wacore_binary::marshal::unmarshal_ref(&bytes[1..]) {
            Ok(n) => {
                let mut n = n.to_owned();
                n.attrs.insert("offline", "1");
                replies.push(Reply::Node(n));
            }
            Err(e) => tracing::error!("corrupt queued stanza for {phone}:{device}: {e}"),
        }
    }
    replies.push(Reply::Node(offline_marker(queued.len())));
    if let Some(conn) = core.conns.get_mut(&(phone.to_string(), device)) {
        conn.ready = true;
    }
    replies
}

/// Stores an uploaded prekey bundle (`<registration>`, `<identity>`, `<list>`, `<skey>`).
async fn store_bundle(hub: &Arc<Hub>, phone: &str, device: u16, node: &Node) {
    let mut core = hub.core.lock().await;
    let Some(dev) = core
        .account_mut(phone)
        .and_then(|a| a.devices.get_mut(&device))
    else {
        return;
    };
    if let Some(r) = child(node, "registration").and_then(bytes_of) {
        dev.registration_id = be_u32(r);
    }
    if let Some(i) = child(node, "identity").and_then(bytes_of) {
        dev.identity = B64(i.to_vec());
    }
    if let Some(skey) = child(node, "skey") {
        let id = child(skey, "id").and_then(bytes_of).map(be_u32);
        let value = child(skey, "value").and_then(bytes_of);
        let sig = child(skey, "signature").and_then(bytes_of);
        if let (Some(id), Some(value), Some(sig)) = (id, value, sig) {
            dev.signed_prekey = Some(SignedPreKey {
                id,
                public: B64(value.to_vec()),
                signature: B64(sig.to_vec()),
            });
        }
    }
    if let Some(list) = child(node, "list") {
        for key in children(list).iter().filter(|k| k.tag == "key") {
            if dev.prekeys.len() >= MAX_STORED_PREKEYS {
                break;
            }
            let id = child(key, "id").and_then(bytes_of).map(be_u32);
            let value = child(key, "value").and_then(bytes_of);
            if let (Some(id), Some(value)) = (id, value) {
                dev.prekeys.insert(id, B64(value.to_vec()));
            }
        }
    }
}

/// Answers a prekey fetch: one bundle per requested device, each one-time
/// key handed out once.
async fn prekey_bundles(hub: &Arc<Hub>, id: &str, node: &Node) -> Node {
    let mut core = hub.core.lock().await;
    let mut users = Vec::new();
    let mut low_prekeys = Vec::new();
    let requested: Vec<Jid> = child(node, "key")
        .map(children)
        .unwrap_or_default()
        .iter()
        .filter(|u| u.tag == "user")
        .filter_map(|u| jid_attr(u, "jid"))
        .collect();
    for jid in requested {
        let resolved = core.phone_of(&jid);
        let dev = resolved.and_then(|phone| {
            core.account_mut(&phone)
                .and_then(|a| a.devices.get_mut(&jid.device))
                .map(|d| (phone.clone(), d))
        });
        let Some((phone, dev)) = dev else {
            users.push(
                NodeBuilder::new("user")
                    .attr("jid", jid.clone())
                    .children([NodeBuilder::new("error")
                        .attr("code", "404")
                        .attr("text", "item-not-found")
                        .build()])
                    .build(),
            );
            continue;
        };
        let Some(spk) = dev.signed_prekey.clone() else {
            users.push(
                NodeBuilder::new("user")
                    .attr("jid", jid.clone())
                    .children([NodeBuilder::new("error").attr("code", "406").build()])
                    .build(),
            );
            continue;
        };
        let one_time = dev.prekeys.pop_first();
        let had_one_time = one_time.is_some();
        let mut kids = bundle_nodes(dev, &spk);
        if let Some((kid, key)) = one_time {
            kids.push(
                NodeBuilder::new("key")
                    .children([
                        NodeBuilder::new("id").bytes(id3(kid)).build(),
                        NodeBuilder::new("value").bytes(key.0).build(),
                    ])
                    .build(),
            );
        }
        if let Some(di) = dev.device_identity.clone() {
            kids.push(NodeBuilder::new("device-identity").bytes(di.0).build());
        }
        let remaining = dev.prekeys.len();
        if jid.device != 0 && had_one_time && remaining < LOW_PREKEYS {
            // Like the real server: tell the device to upload more keys.
            low_prekeys.push((phone.clone(), jid.device, remaining));
        }
        if jid.device == 0 {
            // The phone republishes consumed keys at once.
            if let Some(acc) = core.account_mut(&phone) {
                let mut rec = acc.devices.remove(&0).expect("device 0 exists");
                crate::signal::replenish_prekeys(&mut acc.secrets, &mut rec);
                acc.devices.insert(0, rec);
            }
        }
        users.push(
            NodeBuilder::new("user")
                .attr("jid", jid.clone())
                .children(kids)
                .build(),
        );
    }
    for (phone, device, remaining) in low_prekeys {
        let nid = new_id();
        let note = NodeBuilder::new("notification")
            .attr("from", "s.whatsapp.net")
            .attr("type", "encrypt")
            .attr("id", nid.clone())
            .attr("t", t_now())
            .children([NodeBuilder::new("count")
                .attr("value", remaining.to_string())
                .build()])
            .build();
        core.deliver_to_companion(&phone, device, &nid, &note);
    }
    iq_result(id)
        .children([NodeBuilder::new("list").children(users).build()])
        .build()
}

/// Answers usync queries: devices (with the key-index list), LIDs, contacts.
/// A usync subprotocol's answer for a user it has nothing for.
fn usync_error(tag: &'static str, code: u16, text: &str) -> Node {
    NodeBuilder::new(tag)
        .children([NodeBuilder::new("error")
            .attr("code", code.to_string())
            .attr("text", text.to_string())
            .build()])
        .build()
}

/// `<iq xmlns="w:profile:picture" target=..><picture type query="url"/>`: where a user's
/// profile photo is, or 404 when there is none (or the owner hides it).
async fn profile_picture(hub: &Arc<Hub>, id: &str, node: &Node) -> Node {
    let core = hub.core.lock().await;
    let target = jid_attr(node, "target");
    let picture = match target {
        // A group's picture: its members see it.
        Some(g) if crate::groups::is_group(&g) => match crate::groups::group(&core, &g.user) {
            Ok(group) => group.picture.as_ref(),
            Err(_) => None,
        },
        _ => {
            let Some(target) = target.and_then(|j| core.phone_of(&j)) else {
                return crate::conn::iq_error(id, 404, "item-not-found");
            };
            let acc = core.account(&target).expect("phone_of names an account");
            if acc.profile.picture.is_some() && crate::iq::hides(&core, &target, "profile") {
                return crate::conn::iq_error(id, 401, "not-authorized");
            }
            acc.profile.picture.as_ref()
        }
    };
    match picture {
        Some(p) => iq_result(id)
            .children([NodeBuilder::new("picture")
                .attr("id", p.id.clone())
                .attr("type", "image")
                .attr(
                    "url",
                    format!("https://{}{}", hub.media_host, p.direct_path),
                )
                .attr("direct_path", p.direct_path.clone())
                .build()])
            .build(),
        None => crate::conn::iq_error(id, 404, "item-not-found"),
    }
}

/// `<iq xmlns="w:profile:picture" type="set" target="<group>">`: the group's new picture
/// (`<picture type="image">` bytes), or none to remove it; answered with `<picture id>`.
/// Without a group target it is the account's own photo.
async fn set_picture(hub: &Arc<Hub>, phone: &str, device: u16, id: &str, node: &Node) -> Node {
    let mut core = hub.core.lock().await;
    let image = child(node, "picture")
        .and_then(bytes_of)
        .map(<[u8]>::to_vec);
    if image.as_ref().is_some_and(Vec::is_empty) {
        return crate::conn::iq_error(id, 400, "bad-request");
    }
    let done = match jid_attr(node, "target").filter(crate::groups::is_group) {
        Some(g) => {
            core.acting_device = Some(device);
            let done = crate::groups::set_picture(&mut core, phone, &g.user, image.as_deref());
            core.acting_device = None;
            done
        }
        None => own_picture(&mut core, phone, image.as_deref()),
    };
    match done {
        Ok(pid) => {
            let mut b = iq_result(id);
            if let Some(pid) = pid {
                b = b.children([NodeBuilder::new("picture").attr("id", pid).build()]);
            }
            b.build()
        }
        Err(crate::phone::PhoneError::Group(e)) => {
            let (code, text) = e.iq_error();
            crate::conn::iq_error(id, code, text)
        }
        Err(e) => {
            tracing::warn!("setting a picture: {e}");
            crate::conn::iq_error(id, 500, "internal-server-error")
        }
    }
}

/// The account's own photo changes (`None`: removed); the new photo's id.
fn own_picture(
    core: &mut Core,
    phone: &str,
    image: Option<&[u8]>,
) -> Result<Option<String>, crate::phone::PhoneError> {
    let stored = match image {
        Some(bytes) => Some(crate::state::ProfilePicture {
            id: crate::state::now_secs().to_string(),
            direct_path: phone::store_blob(core, "image", bytes)?,
        }),
        None => None,
    };
    let pid = stored.as_ref().map(|p| p.id.clone());
    if let Some(acc) = core.account_mut(phone) {
        acc.profile.picture = stored;
    }
    Ok(pid)
}

async fn usync(hub: &Arc<Hub>, id: &str, node: &Node) -> Node {
    let core = hub.core.lock().await;
    let Some(us) = child(node, "usync") else {
        return iq_result(id).build();
    };
    let protocols: Vec<String> = child(us, "query")
        .map(children)
        .unwrap_or_default()
        .iter()
        .map(|q| q.tag.to_string())
        .collect();
    let mut users = Vec::new();
    for u in child(us, "list").map(children).unwrap_or_default() {
        if u.tag != "user" {
            continue;
        }
        // A user is named by `jid`, or by a phone number in `<contact>`.
        let contact = child(u, "contact").and_then(|c| match &c.content {
            Some(NodeContent::String(s)) => Some(s.to_string()),
            Some(NodeContent::Bytes(b)) => String::from_utf8(b.clone()).ok(),
            _ => None,
        });
        let jid = jid_attr(u, "jid").or_else(|| {
            contact.as_ref().map(|c| {
                let digits: String = c.chars().filter(char::is_ascii_digit).collect();
                Jid::pn(digits)
            })
        });
        let Some(jid) = jid else { continue };
        let phone = core.phone_of(&jid);
        let acc = phone.as_deref().and_then(|p| core.account(p));
        let mut kids = Vec::new();
        for p in &protocols {
            match p.as_str() {
                "devices" => {
                    let mut devs = Vec::new();
                    let mut key_index = None;
                    if let Some(acc) = acc {
                        for d in acc.devices.values() {
                            let mut b = NodeBuilder::new("device").attr("id", d.id.to_string());
                            if d.id != 0 {
                                b = b.attr("key-index", d.key_index.to_string());
                            }
                            devs.push(b.build());
                        }
                        key_index = Some(
                            NodeBuilder::new("key-index-list")
                                .attr("ts", acc.created_at.to_string())
                                .bytes(phone::key_index_list(acc))
                                .build(),
                        );
                    }
                    let mut dkids = vec![
                        NodeBuilder::new("device-list")
                            .attr("hash", format!("2:{}", devs.len()))
                            .children(devs)
                            .build(),
                    ];
                    dkids.extend(key_index);
                    kids.push(NodeBuilder::new("devices").children(dkids).build());
                }
                "lid" => {
                    if let Some(acc) = acc {
                        kids.push(
                            NodeBuilder::new("lid")
                                .attr("val", Jid::lid(acc.lid.clone()))
                                .build(),
                        );
                    } else {
                        kids.push(NodeBuilder::new("lid").build());
                    }
                }
                "status" => kids.push(match acc {
                    Some(a) if crate::iq::hides(&core, &a.phone, "status") => {
                        usync_error("status", 401, "not-authorized")
                    }
                    Some(a) => NodeBuilder::new("status")
                        .attr("t", a.created_at.to_string())
                        .string_content(
                            a.profile
                                .about
                                .clone()
                                .unwrap_or_else(|| crate::state::DEFAULT_ABOUT.into()),
                        )
                        .build(),
                    None => usync_error("status", 404, "item-not-found"),
                }),
                "picture" => kids.push(match acc.and_then(|a| a.profile.picture.as_ref()) {
                    Some(p) => NodeBuilder::new("picture").attr("id", p.id.clone()).build(),
                    None => usync_error("picture", 404, "item-not-found"),
                }),
                // Only a business account has a business profile.
                "business" if acc.is_some_and(|a| a.profile.business) => {
                    kids.push(NodeBuilder::new("business").build());
                }
                "contact" => {
                    let mut b = NodeBuilder::new("contact")
                        .attr("type", if acc.is_some() { "in" } else { "out" });
                    if let Some(c) = &contact {
                        b = b.string_content(c.as_str());
                    }
                    kids.push(b.build());
                }
                _ => {}
            }
        }
        let user_jid = if contact.is_some() && jid_attr(u, "jid").is_none() {
            Jid::pn(phone.clone().unwrap_or_else(|| jid.user.to_string()))
        } else {
            jid.to_non_ad()
        };
        users.push(
            NodeBuilder::new("user")
                .attr("jid", user_jid)
                .children(kids)
                .build(),
        );
    }
    let mut usync_b = NodeBuilder::new("usync");
    for key in ["sid", "mode", "context", "index", "last"] {
        if let Some(v) = attr(us, key) {
            usync_b = usync_b.attr(key, v);
        }
    }
    iq_result(id)
        .children([usync_b
            .children([NodeBuilder::new("list").children(users).build()])
            .build()])
        .build()
}

/// Routes a `<message>` from a device to every device it was encrypted for.
async fn route_message(hub: &Arc<Hub>, phone: &str, device: u16, node: &Node) -> Vec<Reply> {
    let id = attr(node, "id").unwrap_or_default();
    let Some(to) = jid_attr(node, "to") else {
        return Vec::new();
    };
    let ack = NodeBuilder::new("ack")
        .attr("class", "message")
        .attr("id", id.clone())
        .attr("from", to.clone())
        .attr("t", t_now())
        .build();
    if crate::groups::is_group(&to) {
        let mut core = hub.core.lock().await;
        let ack = crate::groups::route_message(&mut core, phone, device, node).await;
        let refused = ack.attrs.get("error").is_some();
        if !refused && core.faults.swallow_ack(phone) {
            return Vec::new();
        }
        return vec![Reply::Node(ack)];
    }
    if !is_user(&to) {
        // Status and newsletters are not modelled: ack so the
        // client does not retry, but deliver nothing.
        return vec![Reply::Node(ack)];
    }
    let device_identity = child(node, "device-identity").cloned();
    let mut targets: Vec<(Jid, Vec<Node>)> = Vec::new();
    if let Some(parts) = child(node, "participants") {
        for t in children(parts).iter().filter(|t| t.tag == "to") {
            if let Some(j) = jid_attr(t, "jid") {
                let encs = children(t)
                    .iter()
                    .filter(|e| e.tag == "enc")
                    .cloned()
                    .collect();
                targets.push((j, encs));
            }
        }
    } else {
        let encs: Vec<Node> = children(node)
            .iter()
            .filter(|e| e.tag == "enc")
            .cloned()
            .collect();
        if !encs.is_empty() {
            targets.push((to.clone(), encs));
        }
    }

    let mut core = hub.core.lock().await;
    let to_phone = core.phone_of(&to);
    if let Some(recipient) = to_phone.as_deref().filter(|t| *t != phone)
        && let Err(refused) = crate::tokens::check(&core, phone, recipient, node)
    {
        tracing::info!(phone, recipient, id, "message refused (463): {}", refused.0);
        return vec![Reply::Node(
            NodeBuilder::new("ack")
                .attr("class", "message")
                .attr("id", id.clone())
                .attr("from", to.clone())
                .attr("t", t_now())
                .attr("error", crate::tokens::MISSING_TOKEN)
                .build(),
        )];
    }
    core.add_origin(&id, phone, device);
    let sender_name = core
        .account(phone)
        .map(|a| {
            a.devices
                .get(&device)
                .map(|d| d.push_name.clone())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| a.name.clone())
        })
        .unwrap_or_default();
    let sender_lid = core
        .account(phone)
        .map(|a| a.lid.clone())
        .unwrap_or_default();
    for (jid, encs) in targets {
        let Some(target_phone) = core.phone_of(&jid) else {
            continue;
        };
        let target_device = jid.device;
        if core
            .account(&target_phone)
            .is_none_or(|a| !a.devices.contains_key(&target_device))
        {
            continue;
        }
        let lid_form = jid.server == Server::Lid;
        let from = core.device_jid(phone, device, lid_form);
        let mut b = NodeBuilder::new("message")
            .attr("from", from)
            .attr("id", id.clone())
            .attr("t", t_now())
            .attr("type", attr(node, "type").unwrap_or_else(|| "text".into()))
            .attr("notify", sender_name.clone());
        b = if lid_form {
            b.attr("sender_pn", Jid::pn(phone.to_string()))
        } else {
            b.attr("sender_lid", Jid::lid(sender_lid.clone()))
        };
        if target_phone == phone {
            // A copy for the sender's own devices names the chat it belongs to.
            b = b.attr("recipient", to.to_non_ad());
        }
        if let Some(e) = attr(node, "edit") {
            b = b.attr("edit", e);
        }
        let mut kids = encs;
        if let Some(di) = &device_identity {
            kids.push(di.clone());
        }
        let stanza = b.children(kids).build();
        if target_device == 0 {
            phone::receive(&mut core, &target_phone, (phone, device), &stanza).await;
        } else {
            core.deliver_to_companion(&target_phone, target_device, &id, &stanza);
        }
    }
    // Only chat messages to another account count (not the device's own protocol traffic).
    let to_other = to_phone.as_deref().is_some_and(|t| t != phone);
    drop(to_phone);
    if to_other && core.faults.swallow_ack(phone) {
        tracing::info!(
            phone,
            id,
            "fault: message delivered, its server ack swallowed"
        );
        return Vec::new();
    }
    vec![Reply::Node(ack)]
}

/// A `read-self` receipt reaches the reader's other devices as `<receipt from=<reader>
/// recipient=<chat> type="read-self">`, and the phone marks the messages read.
fn sync_read_self(
    core: &mut Core,
    phone: &str,
    device: u16,
    chat: &Jid,
    node: &Node,
    ids: &[String],
) {
    let mut receipt = NodeBuilder::new("receipt")
        .attr("from", Jid::pn(phone.to_string()))
        .attr("recipient", Jid::new(chat.user.clone(), chat.server))
        .attr("id", ids[0].clone())
        .attr("type", "read-self")
        .attr("t", attr(node, "t").unwrap_or_else(crate::hub::t_now));
    if let Some(list) = child(node, "list") {
        receipt = receipt.children([list.clone()]);
    }
    let receipt = receipt.build();
    for d in core.companions(phone).into_iter().filter(|d| *d != device) {
        core.deliver_to_companion(phone, d, &ids[0], &receipt);
    }
    if device != 0
        && let Some(acc) = core.account_untracked(phone)
    {
        let mut read = Vec::new();
        for id in ids {
            if let Some(m) = acc.secrets.messages.get_mut(id)
                && !m.from_me
                && m.status != "read"
            {
                m.status = "read".into();
                read.push(id.clone());
            }
        }
        for id in read {
            core.changes.push(crate::journal::Change::Status {
                phone: phone.to_string(),
                id,
                status: "read".into(),
            });
        }
    }
}

/// Relays a receipt to the device that sent the message.
async fn route_receipt(hub: &Arc<Hub>, phone: &str, device: u16, node: &Node) -> Vec<Reply> {
    let id = attr(node, "id").unwrap_or_default();
    let ty = attr(node, "type");
    let mut ids = vec![id.clone()];
    if let Some(list) = child(node, "list") {
        ids.extend(children(list).iter().filter_map(|i| attr(i, "id")));
    }
    let mut core = hub.core.lock().await;
    // A receipt is also the device's acknowledgement of those messages.
    core.acknowledge(phone, device, &ids);
    let ack = NodeBuilder::new("ack")
        .attr("class", "receipt")
        .attr("id", id.clone())
        .attr("from", attr(node, "to").unwrap_or_default());
    let ack = match &ty {
        Some(t) => ack.attr("type", t.clone()),
        None => ack,
    }
    .build();
    if ty.as_deref() == Some("server-error") && child(node, "rmr").is_some() {
        // A media re-upload request: the sender's phone answers it.
        let notification = phone::media_retry(&mut core, phone, node);
        return vec![Reply::Node(ack), Reply::Node(notification)];
    }
    if matches!(
        ty.as_deref(),
        Some("server-error") | Some("enc_rekey_retry")
    ) {
        return vec![Reply::Node(ack)];
    }
    if ty.as_deref() == Some("read-self") {
        // The reader has read receipts off (a client sends `read-self` then): WhatsApp
        // never tells the sender, only the reader's own other devices, so they show the
        // chat read too.
        if let Some(to) = jid_attr(node, "to")
            && !crate::groups::is_group(&to)
        {
            sync_read_self(&mut core, phone, device, &to, node, &ids);
        }
        return vec![Reply::Node(ack)];
    }
    let Some(to) = jid_attr(node, "to") else {
        return vec![Reply::Node(ack)];
    };
    if crate::groups::is_group(&to) {
        crate::groups::route_receipt(&mut core, phone, device, node).await;
        return vec![Reply::Node(ack)];
    }
    let Some(to_phone) = core.phone_of(&to) else {
        return vec![Reply::Node(ack)];
    };
    let target_device = if to.device != 0 {
        Some(to.device)
    } else {
        core.snap
            .origins
            .get(&id)
            .filter(|(p, _)| *p == to_phone)
            .map(|(_, d)| *d)
            .or(Some(0))
    }
    .unwrap_or(0);
    if to_phone == phone && target_device == device {
        return vec![Reply::Node(ack)];
    }
    if ty.as_deref() == Some("retry") && target_device == 0 {
        // The device could not decrypt a phone's message: the phone sends it
        // again. (A companion gets the retry receipt and does that itself.)
        match phone::resend(&mut core, &to_phone, (phone, device), &id).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!("retry for {id}: the phone no longer has it"),
            Err(e) => tracing::warn!("phone {to_phone} cannot send {id} again: {e}"),
        }
        return vec![Reply::Node(ack)];
    }
    let lid_form = to.server == Server::Lid;
    let from = core.device_jid(phone, device, lid_form);
    let mut b = NodeBuilder::new("receipt")
        .attr("from", from)
        .attr("id", id.clone())
        .attr("t", t_now());
    if let Some(t) = &ty {
        b = b.attr("type", t.clone());
    }
    if let Some(r) = jid_attr(node, "recipient") {
        b = b.attr("recipient", r);
    }
    let kids: Vec<Node> = children(node).to_vec();
    if !kids.is_empty() {
        b = b.children(kids);
    }
    let receipt = b.build();
    phone::deliver_receipt(
        &mut core,
        (&to_phone, target_device),
        &receipt,
        &id,
        ty.as_deref(),
    );
    vec![Reply::Node(ack)]
}
