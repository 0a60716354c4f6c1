//! Scoped API keys from the outside: made by the admin, shown once, limited to their
//! sessions and scopes, revoked at once; the per-address limit on failed authentications;
//! the audit log. (Every route's check is covered by the OpenAPI-driven test in
//! `openapi.rs`; the Socket.IO feed's by the Node tests.)

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{KEY, Options, TestApp, assert_error, into_json, wait_until};
use crate::openapi::create_key;

async fn as_key(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .request(method, app.url(path))
        .header("X-API-Key", key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    into_json(req.send().await.unwrap()).await
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn a_key_is_shown_once_limited_to_its_patterns_and_revoked_at_once() {
    let app = TestApp::with_sim().await;
    let (s, _) = app
        .post_json("/api/start-session", json!({"sessionId": "other"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let (s, created) = app
        .post_json(
            "/api/keys",
            json!({"name": "tenant A", "sessions": ["tenant-a-*"], "scopes": ["manage", "read"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let secret = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("wmx_") && secret.len() == 47, "{secret}");
    assert_eq!(created["sessions"], json!(["tenant-a-*"]));
    assert_eq!(created["scopes"], json!(["read", "manage"]));
    assert_eq!(created["lastUsedAt"], Value::Null);

    // Listed without the secret.
    let r = app.get("/api/keys").send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains(&secret), "the list shows the secret");
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed["keys"][0]["id"], id.as_str());
    assert!(listed["keys"][0].get("key").is_none());

    // It may create and see sessions its pattern names, and nothing else.
    let got = as_key(
        &app,
        &secret,
        Method::POST,
        "/api/start-session",
        Some(json!({"sessionId": "tenant-a-new"})),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    let got = as_key(
        &app,
        &secret,
        Method::POST,
        "/api/start-session",
        Some(json!({"sessionId": "tenant-b-new"})),
    )
    .await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    let (_, sessions) = app.get_json("/api/sessions").await;
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 2);
    let (_, mine) = as_key(&app, &secret, Method::GET, "/api/sessions", None).await;
    assert_eq!(mine["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(mine["sessions"][0]["sessionId"], "tenant-a-new");
    let got = as_key(
        &app,
        &secret,
        Method::POST,
        "/api/send-message",
        Some(json!({"sessionId": "tenant-a-new", "to": "15551234567", "text": "hi"})),
    )
    .await;
    assert_error(&got, StatusCode::FORBIDDEN, "missing_scope");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`send`")
    );
    let (s, me) = as_key(&app, &secret, Method::GET, "/api/me", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        me,
        json!({"admin": false, "keyId": id, "sessions": ["tenant-a-*"], "scopes": ["read", "manage"]})
    );
    let (_, me) = app.get_json("/api/me").await;
    assert_eq!(me["admin"], true);
    let got = as_key(&app, &secret, Method::GET, "/api/keys", None).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");

    // Its use is noted (to the minute, after the answer).
    wait_until(Duration::from_secs(10), "lastUsedAt to be set", || async {
        let (_, listed) = app.get_json("/api/keys").await;
        listed["keys"][0]["lastUsedAt"].as_i64().is_some()
    })
    .await;

    // Revoked: refused from the next call on.
    let r = app
        .req(Method::DELETE, &format!("/api/keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got = as_key(&app, &secret, Method::GET, "/api/sessions", None).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = app
        .req(Method::DELETE, &format!("/api/keys/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let (_, listed) = app.get_json("/api/keys").await;
    assert_eq!(listed["keys"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn bad_key_requests_say_what_to_fix_and_expired_keys_are_refused() {
    let app = TestApp::start().await;
    let cases = [
        (
            json!({"sessions": "*", "scopes": ["read"]}),
            "missing_field",
            "name",
        ),
        (
            json!({"name": " ", "sessions": "*", "scopes": ["read"]}),
            "invalid_field",
            "name",
        ),
        (
            json!({"name": "x", "scopes": ["read"]}),
            "missing_field",
            "sessions",
        ),
        (
            json!({"name": "x", "sessions": ["a*b"], "scopes": ["read"]}),
            "invalid_field",
            "sessions",
        ),
        (
            json!({"name": "x", "sessions": [], "scopes": ["read"]}),
            "invalid_field",
            "sessions",
        ),
        (
            json!({"name": "x", "sessions": "all", "scopes": ["read"]}),
            "invalid_field",
            "sessions",
        ),
        (
            json!({"name": "x", "sessions": "*", "scopes": []}),
            "invalid_field",
            "scopes",
        ),
        (
            json!({"name": "x", "sessions": "*", "scopes": ["admin"]}),
            "invalid_field",
            "scopes",
        ),
        (
            json!({"name": "x", "sessions": "*", "scopes": ["read"], "expiresAt": 1}),
            "invalid_field",
            "expiresAt",
        ),
        (
            json!({"name": "x", "sessions": "*", "scopes": ["read"], "owner": "me"}),
            "invalid_body",
            "owner",
        ),
    ];
    for (body, code, field) in cases {
        let got = app.post_json("/api/keys", body.clone()).await;
        assert_error(&got, StatusCode::BAD_REQUEST, code);
        assert!(
            got.1["error"]["message"].as_str().unwrap().contains(field),
            "{body} -> {}",
            got.1
        );
    }
    let (_, listed) = app.get_json("/api/keys").await;
    assert_eq!(listed["keys"], json!([]), "a refused request made a key");

    // A key that expires is refused once it has.
    let (secret, _) = create_key(
        &app,
        json!({"name": "brief", "sessions": "*", "scopes": ["read"], "expiresAt": now() + 2}),
    )
    .await;
    let (s, _) = as_key(&app, &secret, Method::GET, "/api/sessions", None).await;
    assert_eq!(s, StatusCode::OK);
    wait_until(Duration::from_secs(10), "the key to expire", || async {
        as_key(&app, &secret, Method::GET, "/api/sessions", None)
            .await
            .0
            == StatusCode::UNAUTHORIZED
    })
    .await;
    // A wrong key that looks like one, and the admin key with a prefix: both refused.
    let got = as_key(&app, &format!("{secret}x"), Method::GET, "/api/me", None).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    let got = as_key(&app, &format!("wmx_{KEY}"), Method::GET, "/api/me", None).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    app.stop().await;
}

fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(ip))
        .build()
        .unwrap()
}

#[tokio::test]
async fn wrong_keys_from_one_address_get_429_while_another_address_keeps_working() {
    let app = TestApp::start_with(Options {
        configure: Some(Box::new(|c| c.auth_failures_per_minute = 20)),
        ..Options::default()
    })
    .await;
    let attacker = client_from(Ipv4Addr::new(127, 0, 0, 1));
    let user = client_from(Ipv4Addr::new(127, 0, 0, 2));
    // The counters are the process's: compare with what they were.
    let metrics = || async {
        user.get(app.url("/metrics"))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .parse()
            .unwrap()
    };
    let before = metrics().await;
    let (mut refused, mut limited) = (0, 0);
    for i in 0..200 {
        let r = attacker
            .get(app.url("/api/sessions"))
            .header("X-API-Key", format!("wrong-key-{i}"))
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                let after: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&after), "Retry-After {after}");
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], "rate_limited");
            }
            other => panic!("wrong key answered {other}"),
        }
        // The other address is not slowed: its valid key works throughout.
        if i % 50 == 0 {
            let r = user
                .get(app.url("/api/sessions"))
                .header("X-API-Key", KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "valid key from another address");
        }
    }
    assert_eq!((refused, limited), (20, 180));
    // The blocked address is blocked for any key until the minute is over; the other
    // address's wrong key is only a 401.
    let r = attacker
        .get(app.url("/api/sessions"))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = user
        .get(app.url("/api/sessions"))
        .header("X-API-Key", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // And it shows in the metrics.
    let after = metrics().await;
    let delta = |name: &str| value(&after, name) - value(&before, name);
    assert_eq!(delta("wamux_auth_failures_total"), 21.0);
    assert_eq!(delta("wamux_auth_rate_limited_total"), 181.0);
    app.stop().await;
}

#[tokio::test]
async fn mutating_calls_are_audited_with_their_key_route_session_and_result() {
    let app = TestApp::with_sim().await;
    let (secret, id) = create_key(
        &app,
        json!({"name": "reader", "sessions": ["s1"], "scopes": ["read"]}),
    )
    .await;
    let (s, _) = app
        .post_json("/api/start-session", json!({"sessionId": "s1"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let got = as_key(&app, &secret, Method::DELETE, "/api/sessions/s1", None).await;
    assert_error(&got, StatusCode::FORBIDDEN, "missing_scope");
    let got = as_key(
        &app,
        &secret,
        Method::POST,
        "/api/send-message",
        Some(json!({"sessionId": "s2", "to": "1555", "text": "x"})),
    )
    .await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    // Reads are not audited.
    let (s, _) = as_key(&app, &secret, Method::GET, "/api/status/s1", None).await;
    assert_eq!(s, StatusCode::OK);

    let (s, page) = app.get_json("/api/audit").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let entries: Vec<Value> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["at"].as_i64().unwrap() > 0);
            assert_eq!(e["client"], "127.0.0.1");
            json!([
                e["keyId"],
                e["method"],
                e["route"],
                e["sessionId"],
                e["status"]
            ])
        })
        .collect();
    assert_eq!(
        entries,
        vec![
            json!([id, "POST", "/api/send-message", "s2", 403]),
            json!([id, "DELETE", "/api/sessions/{session_id}", "s1", 403]),
            json!([null, "POST", "/api/start-session", "s1", 201]),
            json!([null, "POST", "/api/keys", null, 201]),
        ]
    );
    // Paged from the newest.
    let (_, first) = app.get_json("/api/audit?limit=3").await;
    let cursor = first["nextCursor"].as_str().unwrap().to_owned();
    let (_, rest) = app.get_json(&format!("/api/audit?before={cursor}")).await;
    assert_eq!(rest["entries"].as_array().unwrap().len(), 1);
    assert_eq!(rest["entries"][0]["route"], "/api/keys");
    assert_eq!(rest["nextCursor"], Value::Null);
    let got = app.get_json("/api/audit?limit=0").await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_query");
    let got = as_key(&app, &secret, Method::GET, "/api/audit", None).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    app.stop().await;
}
