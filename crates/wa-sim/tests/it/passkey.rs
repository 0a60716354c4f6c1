//! The passkey gate (SHORTCAKE_PASSKEY) on accounts created with `"passkey": true`, with
//! real whatsapp-rust clients: the owner's passkey and the code let a device on, by QR or
//! by pairing code; a wrong assertion, a replayed one, or a phone that never answers
//! links nothing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use whatsapp_rust::passkey::Assertion;
use whatsapp_rust::wacore::types::events::Event;

use crate::support::{Phone, TestClient, TestSim, text_of};

/// Creates an account WhatsApp gates with a passkey.
async fn gated_phone<'a>(sim: &'a TestSim, number: &str) -> Phone<'a> {
    let (status, body) = sim
        .post(
            "/phones",
            json!({"phone": number, "name": format!("Phone {number}"), "passkey": true}),
        )
        .await;
    assert_eq!(status, 201, "creating gated phone {number}: {body}");
    assert_eq!(body["passkey"], true, "{body}");
    Phone {
        sim,
        number: number.to_string(),
    }
}

/// The phone scans the client's QR code: the answer says a passkey is required.
async fn scan_gated(phone: &Phone<'_>, qr: &str) {
    let (status, body) = phone
        .sim
        .post(&format!("/phones/{}/scan", phone.number), json!({"qr": qr}))
        .await;
    assert_eq!(status, 202, "scan: {body}");
    assert_eq!(
        body,
        json!({"phone": phone.number, "passkey": "required", "stage": "assertion_required"})
    );
}

/// What the phone shows.
async fn screen(phone: &Phone<'_>) -> Value {
    let (status, body) = phone
        .sim
        .get(&format!("/phones/{}/passkey", phone.number))
        .await;
    assert_eq!(status, 200, "passkey screen: {body}");
    body
}

async fn devices(phone: &Phone<'_>) -> usize {
    let (_, account) = phone.sim.get(&format!("/phones/{}", phone.number)).await;
    account["devices"].as_array().expect("devices").len()
}

/// The owner's browser answers the options the client got; packed as whatsapp-rust
/// takes an assertion.
async fn assertion(phone: &Phone<'_>, options: &str, tamper: Option<&str>) -> Assertion {
    let (status, body) = phone
        .sim
        .post(
            &format!("/phones/{}/passkey/assert", phone.number),
            json!({"options": options, "tamper": tamper}),
        )
        .await;
    assert_eq!(status, 200, "assert: {body}");
    let credential_id = URL_SAFE_NO_PAD
        .decode(body["rawId"].as_str().expect("rawId"))
        .expect("rawId is base64url");
    Assertion {
        assertion_json: serde_json::to_vec(&body).unwrap(),
        credential_id,
    }
}

async fn wait_passkey_request(client: &mut TestClient) -> String {
    client
        .wait_for("a passkey request", |e| match e {
            Event::PairPasskeyRequest(r) => Some(r.request_options_json.clone()),
            Event::PairPasskeyError(e) => panic!("passkey error: {}", e.error),
            _ => None,
        })
        .await
}

async fn wait_code(client: &mut TestClient) -> String {
    client
        .wait_for("the passkey code", |e| match e {
            Event::PairPasskeyConfirmation(c) => Some(c.code.clone()),
            Event::PairPasskeyError(e) => panic!("passkey error: {}", e.error),
            _ => None,
        })
        .await
}

/// From the passkey request on: the owner's passkey, the code both show, the client's
/// confirmation, and the client is linked. Returns the code.
async fn pass_the_gate(phone: &Phone<'_>, client: &mut TestClient) -> String {
    let options = wait_passkey_request(client).await;
    let owner = assertion(phone, &options, None).await;
    client
        .client
        .send_passkey_response(owner)
        .await
        .expect("the owner's passkey is accepted");
    let code = wait_code(client).await;
    let shown = screen(phone).await;
    assert_eq!(shown["stage"], "code_shown", "{shown}");
    assert_eq!(shown["code"], code, "the phone shows the client's code");
    client
        .client
        .send_passkey_confirmation()
        .await
        .expect("the pairing request is accepted");
    client.wait_connected().await;
    code
}

/// A new client over the store logs in by itself: no QR, no code, no passkey.
async fn logs_in_again(client: &mut TestClient) {
    let first = client
        .wait_for("Connected, a QR or a passkey request", |e| match e {
            Event::Connected(_) => Some("connected"),
            Event::PairingQrCode(_) => Some("qr"),
            Event::PairingCode(_) => Some("code"),
            Event::PairPasskeyRequest(_) => Some("passkey"),
            _ => None,
        })
        .await;
    assert_eq!(first, "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_phone_links_by_qr_with_the_owners_passkey_then_logs_in_again_without_it() {
    let sim = TestSim::start().await;
    let alice = gated_phone(&sim, "15551400001").await;
    let cfg = sim.client_config(sim.db_path("alice-pk"));
    let mut client = cfg.start("alice-pk").await;
    let qr = client.wait_qr().await;
    scan_gated(&alice, &qr).await;
    assert_eq!(
        devices(&alice).await,
        1,
        "nothing is linked before the gate"
    );

    let options = wait_passkey_request(&mut client).await;
    let parsed: Value = serde_json::from_str(&options).unwrap();
    let challenge = URL_SAFE_NO_PAD
        .decode(parsed["challenge"].as_str().unwrap())
        .unwrap();
    assert_eq!(challenge.len(), 32, "{options}");
    assert_eq!(
        parsed,
        json!({
            "challenge": parsed["challenge"],
            "timeout": 600000,
            "rpId": "whatsapp.com",
            "allowCredentials": [],
            "userVerification": "required",
            "extensions": {"uvm": true},
        })
    );
    let owner = assertion(&alice, &options, None).await;
    client.client.send_passkey_response(owner).await.unwrap();
    let code = wait_code(&mut client).await;
    assert_eq!(code.len(), 9, "XXXX-XXXX: {code}");
    assert_eq!(&code[4..5], "-");
    let shown = screen(&alice).await;
    assert_eq!(
        shown,
        json!({"stage": "code_shown", "code": code, "error": null, "device": null, "skipHandoff": false})
    );
    client.client.send_passkey_confirmation().await.unwrap();
    client.wait_connected().await;

    let own = client.client.pn().expect("linked client knows its number");
    assert_eq!(own.user.as_str(), "15551400001");
    let shown = screen(&alice).await;
    assert_eq!(shown["stage"], "linked", "{shown}");
    assert_eq!(shown["device"], u64::from(own.device));
    assert_eq!(devices(&alice).await, 2);

    let id = alice.send_text("15551400001", "through the gate").await;
    let (msg, _) = client
        .wait_message("the phone's text", |_, i| i.id == id)
        .await;
    assert_eq!(text_of(&msg).as_deref(), Some("through the gate"));
    client.stop().await;

    let mut again = cfg.start("alice-pk").await;
    logs_in_again(&mut again).await;
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_phone_links_by_pairing_code_with_the_owners_passkey() {
    let sim = TestSim::start().await;
    let bob = gated_phone(&sim, "15551400002").await;
    let cfg = sim.client_config(sim.db_path("bob-pk"));
    let mut client = cfg.start_with_pair_code("bob-pk", "15551400002").await;
    let pair_code = client.wait_pair_code().await;
    let (status, body) = sim
        .post("/phones/15551400002/link-code", json!({"code": pair_code}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["stage"], "assertion_required", "{body}");
    assert_eq!(devices(&bob).await, 1);

    pass_the_gate(&bob, &mut client).await;
    let own = client.client.pn().expect("linked client knows its number");
    assert_eq!(screen(&bob).await["device"], u64::from(own.device));
    let id = bob.send_text("15551400002", "code and passkey").await;
    let (msg, _) = client
        .wait_message("the phone's text", |_, i| i.id == id)
        .await;
    assert_eq!(text_of(&msg).as_deref(), Some("code and passkey"));
    client.stop().await;

    let mut again = cfg.start_with_pair_code("bob-pk", "15551400002").await;
    logs_in_again(&mut again).await;
    again.stop().await;
}

/// Each wrong field, and a good assertion for a challenge already used, is refused:
/// the client hears so, the phone shows why, nothing is linked. The owner's passkey
/// still links the same client afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_replayed_assertions_are_refused_and_link_nothing() {
    let sim = TestSim::start().await;
    let carol = gated_phone(&sim, "15551400003").await;
    let cfg = sim.client_config(sim.db_path("carol-pk"));
    let mut client = cfg.start("carol-pk").await;
    let qr = client.wait_qr().await;

    let cases = [
        ("rpIdHash", "rpIdHash"),
        ("origin", "origin"),
        ("challenge", "not the one WhatsApp issued"),
        ("uv", "did not verify the user"),
        ("signature", "signature does not verify"),
        ("credential", "not registered"),
    ];
    let mut for_a_used_challenge = None;
    for (tamper, why) in cases {
        scan_gated(&carol, &qr).await;
        let options = wait_passkey_request(&mut client).await;
        if for_a_used_challenge.is_none() {
            for_a_used_challenge = Some(assertion(&carol, &options, None).await);
        }
        let wrong = assertion(&carol, &options, Some(tamper)).await;
        let refused = client.client.send_passkey_response(wrong).await;
        assert!(refused.is_err(), "a wrong {tamper} must be refused");
        let shown = screen(&carol).await;
        assert_eq!(shown["stage"], "failed", "{tamper}: {shown}");
        let error = shown["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{tamper}: {shown}");
        assert_eq!(devices(&carol).await, 1, "{tamper} linked nothing");
    }

    scan_gated(&carol, &qr).await;
    wait_passkey_request(&mut client).await;
    let replayed = for_a_used_challenge.expect("kept from the first round");
    assert!(client.client.send_passkey_response(replayed).await.is_err());
    let shown = screen(&carol).await;
    assert_eq!(shown["stage"], "failed", "{shown}");
    assert!(
        shown["error"]
            .as_str()
            .unwrap_or_default()
            .contains("already used"),
        "{shown}"
    );
    assert!(client.client.pn().is_none(), "the client is not linked");

    scan_gated(&carol, &qr).await;
    pass_the_gate(&carol, &mut client).await;
    assert_eq!(devices(&carol).await, 2);
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_fetches_the_options_when_the_request_omits_them() {
    let sim = TestSim::start().await;
    let dave = gated_phone(&sim, "15551400004").await;
    let (status, body) = sim
        .post(
            "/faults/passkey",
            json!({"phone": "15551400004", "omitOptions": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"phone": "15551400004", "omitOptions": true, "noContinuation": false})
    );
    let cfg = sim.client_config(sim.db_path("dave-pk"));
    let mut client = cfg.start("dave-pk").await;
    let qr = client.wait_qr().await;
    scan_gated(&dave, &qr).await;
    pass_the_gate(&dave, &mut client).await;
    assert_eq!(devices(&dave).await, 2);
    client.stop().await;
}

/// The phone accepts the assertion and then never answers (as WhatsApp sometimes does):
/// the client gets no code and no device, and its leaving ends the ceremony.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_phones_continuation_the_client_gets_no_code_and_no_device() {
    let sim = TestSim::start().await;
    let erin = gated_phone(&sim, "15551400005").await;
    let (status, body) = sim
        .post(
            "/faults/passkey",
            json!({"phone": "15551400005", "noContinuation": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let cfg = sim.client_config(sim.db_path("erin-pk"));
    let mut stuck = cfg.start("erin-pk").await;
    let qr = stuck.wait_qr().await;
    scan_gated(&erin, &qr).await;
    let options = wait_passkey_request(&mut stuck).await;
    let owner = assertion(&erin, &options, None).await;
    stuck
        .client
        .send_passkey_response(owner)
        .await
        .expect("the assertion itself is accepted");
    let shown = screen(&erin).await;
    assert_eq!(shown["stage"], "awaiting_nonce", "{shown}");
    assert_eq!(shown["code"], Value::Null);

    // Meanwhile a whole link through another phone's gate, which waits on that phone's
    // answers twice: the stuck client's would have come long before.
    let frank = gated_phone(&sim, "15551400006").await;
    let other = sim.client_config(sim.db_path("frank-pk"));
    let mut fine = other.start("frank-pk").await;
    let qr = fine.wait_qr().await;
    scan_gated(&frank, &qr).await;
    pass_the_gate(&frank, &mut fine).await;
    while let Ok(event) = stuck.events.try_recv() {
        assert!(
            !matches!(&*event, Event::PairPasskeyConfirmation(_)),
            "no code without the phone's continuation"
        );
    }
    assert_eq!(devices(&erin).await, 1);

    stuck.stop().await;
    let (status, shown) = sim.get("/phones/15551400005/passkey?wait=failed").await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        shown,
        json!({"stage": "failed", "code": null, "error": "the device disconnected", "device": null, "skipHandoff": false})
    );
    assert_eq!(devices(&erin).await, 1);
    fine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_account_keeps_its_passkey_across_a_restart() {
    let sim = TestSim::start().await;
    gated_phone(&sim, "15551400007").await;
    let sim = sim.restart().await;
    let (_, account) = sim.get("/phones/15551400007").await;
    assert_eq!(account["passkey"], true, "{account}");
    let gail = Phone {
        sim: &sim,
        number: "15551400007".into(),
    };
    let cfg = sim.client_config(sim.db_path("gail-pk"));
    let mut client = cfg.start("gail-pk").await;
    let qr = client.wait_qr().await;
    scan_gated(&gail, &qr).await;
    pass_the_gate(&gail, &mut client).await;
    client.stop().await;
}

/// Accounts created as before have no gate: scans link at once, and the passkey routes
/// say so; bad requests to them are named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungated_phones_link_as_before_and_the_passkey_routes_refuse_bad_requests() {
    let sim = TestSim::start().await;
    let hank = sim.phone("15551400008").await;
    let (_, account) = sim.get("/phones/15551400008").await;
    assert_eq!(account["passkey"], false, "{account}");
    assert_eq!(screen(&hank).await["stage"], "none");
    let (status, body) = sim
        .post(
            "/phones/15551400008/passkey/assert",
            json!({"options": {"challenge": "AAAA", "rpId": "whatsapp.com"}}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("passkey_not_enabled"))
    );
    let (status, _) = sim.get("/phones/15559999999/passkey").await;
    assert_eq!(status, 404);
    let (status, _) = sim
        .post("/faults/passkey", json!({"phone": "15559999999"}))
        .await;
    assert_eq!(status, 404);

    gated_phone(&sim, "15551400009").await;
    for (body, code) in [
        (
            json!({"options": {"rpId": "whatsapp.com"}}),
            "invalid_options",
        ),
        (
            json!({"options": {"challenge": "AAAA", "rpId": "web.whatsapp.com"}}),
            "invalid_options",
        ),
        (json!({"options": "{not json"}), "invalid_options"),
        (
            json!({"options": {"challenge": "AAAA", "rpId": "whatsapp.com"}, "tamper": "everything"}),
            "invalid_tamper",
        ),
    ] {
        let (status, answer) = sim.post("/phones/15551400009/passkey/assert", body).await;
        assert_eq!(
            (status, answer["error"]["code"].clone()),
            (400, json!(code))
        );
    }

    let cfg = sim.client_config(sim.db_path("hank"));
    let mut client = cfg.start("hank").await;
    let qr = client.wait_qr().await;
    let linked = hank.scan(&qr).await;
    assert!(linked["device"].as_u64().is_some(), "{linked}");
    client.wait_connected().await;
    assert_eq!(screen(&hank).await["stage"], "none");
    client.stop().await;
}
