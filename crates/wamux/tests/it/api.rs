//! The HTTP surface without WhatsApp: auth, validation, errors.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{KEY, Options, TestApp, assert_error, into_json};

#[tokio::test]
async fn health_answers_with_the_key_in_any_of_the_three_forms() {
    let app = TestApp::start().await;
    let forms = [
        app.http
            .get(app.url("/api/health"))
            .header("X-API-Key", KEY),
        app.http.get(app.url(&format!("/api/health?apiKey={KEY}"))),
        app.http
            .get(app.url("/api/health"))
            .header("Authorization", format!("Bearer {KEY}")),
    ];
    for req in forms {
        let (status, body) = into_json(req.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "ok");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(body["sessions"]["total"], 0);
        assert_eq!(body["sessions"]["byStatus"]["connected"], 0);
        assert!(body["uptimeSeconds"].is_u64());
    }
    app.stop().await;
}

#[tokio::test]
async fn requests_without_the_right_key_get_401_json() {
    let app = TestApp::start().await;
    let missing = into_json(app.http.get(app.url("/api/health")).send().await.unwrap()).await;
    assert_error(&missing, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        missing.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-API-Key")
    );

    for req in [
        app.http
            .get(app.url("/api/health"))
            .header("X-API-Key", "wrong-key-123456"),
        app.http.get(app.url("/api/health?apiKey=wrong-key-123456")),
        app.http
            .get(app.url("/api/health"))
            .header("Authorization", "Bearer wrong"),
        // The right key with one character more or less is still wrong.
        app.http
            .get(app.url("/api/health"))
            .header("X-API-Key", format!("{KEY}x")),
        app.http
            .get(app.url("/api/health"))
            .header("X-API-Key", &KEY[..KEY.len() - 1]),
    ] {
        let got = into_json(req.send().await.unwrap()).await;
        assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(got.1["error"]["message"], "invalid API key");
    }

    // Every /api route is behind the key, including ones that do not exist...
    let got = into_json(
        app.http
            .post(app.url("/api/start-session"))
            .json(&json!({"sessionId":"s1"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    let got = into_json(app.http.get(app.url("/api/nope")).send().await.unwrap()).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    // ...which, with the key, are a JSON 404.
    let got = app.get_json("/api/nope").await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found");
    // Nothing was created by the refused request.
    let (_, list) = app.get_json("/api/sessions").await;
    assert_eq!(list["sessions"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn a_generated_key_is_kept_in_the_data_dir_and_works() {
    let app = TestApp::start_with(Options {
        no_key: true,
        ..Options::default()
    })
    .await;
    let key = std::fs::read_to_string(app.dir.path().join("data/api_key")).unwrap();
    assert!(key.len() >= 40, "weak generated key");
    let ok = app
        .http
        .get(app.url("/api/health"))
        .header("X-API-Key", key.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let refused = app.get("/api/health").send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn start_session_explains_what_is_wrong_with_the_body() {
    let app = TestApp::start().await;
    let raw = |body: &'static str| {
        app.req(reqwest::Method::POST, "/api/start-session")
            .header("Content-Type", "application/json")
            .body(body)
    };
    let got = into_json(raw("{\"sessionId\": ").send().await.unwrap()).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_json");
    // A body that is JSON but not an object.
    let got = into_json(raw("\"s1\"").send().await.unwrap()).await;
    assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expected"),
        "{}",
        got.1
    );

    let got = app
        .post_json("/api/start-session", json!({"sessionId": 5}))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_field");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sessionId")
    );
    let got = app.post_json("/api/start-session", json!({})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "missing_field");
    for bad in ["", "has space", "../etc", "ü", &"x".repeat(65)] {
        let got = app
            .post_json("/api/start-session", json!({"sessionId": bad}))
            .await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_session_id");
    }
    let got = into_json(
        app.req(reqwest::Method::POST, "/api/start-session")
            .body("{\"sessionId\":\"s1\"}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(
        &got,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let (_, list) = app.get_json("/api/sessions").await;
    assert_eq!(
        list["sessions"],
        json!([]),
        "no session may come from a bad request"
    );
    app.stop().await;
}

#[tokio::test]
async fn send_message_explains_what_is_wrong_with_the_body() {
    let app = TestApp::start().await;
    let cases = [
        (
            json!({"to": "15551234567", "text": "hi"}),
            "missing_field",
            "sessionId",
        ),
        (
            json!({"sessionId": "s1", "text": "hi"}),
            "missing_field",
            "to",
        ),
        (
            json!({"sessionId": "s1", "to": "15551234567"}),
            "missing_field",
            "text",
        ),
        (
            json!({"sessionId": "s1", "to": "15551234567", "text": 5}),
            "invalid_field",
            "text",
        ),
        (
            json!({"sessionId": "s1", "to": ["x"], "text": "hi"}),
            "invalid_field",
            "to",
        ),
        (
            json!({"sessionId": "s1", "to": "15551234567", "text": ""}),
            "invalid_field",
            "text",
        ),
        (
            json!({"sessionId": "bad id", "to": "15551234567", "text": "hi"}),
            "invalid_session_id",
            "",
        ),
        (
            json!({"sessionId": "s1", "to": "not-a-number", "text": "hi"}),
            "invalid_phone",
            "not-a-number",
        ),
        (
            json!({"sessionId": "s1", "to": "123", "text": "hi"}),
            "invalid_phone",
            "123",
        ),
        (
            json!({"sessionId": "s1", "to": "15551234567@example.com", "text": "hi"}),
            "invalid_phone",
            "example.com",
        ),
        (
            json!({"sessionId": "s1", "to": "15551234567", "text": "hi", "quotedId": 7}),
            "invalid_field",
            "quotedId",
        ),
    ];
    for (body, code, mentions) in cases {
        let got = app.post_json("/api/send-message", body.clone()).await;
        assert_error(&got, StatusCode::BAD_REQUEST, code);
        assert!(
            got.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains(mentions),
            "{body} -> {}",
            got.1
        );
    }
    // Valid input, the seed's aliases, all four address forms: the session is what is missing.
    for to in [
        "15551234567",
        "+1 555 123 4567",
        "15551234567@s.whatsapp.net",
        "15551234567@c.us",
    ] {
        let got = app
            .post_json(
                "/api/send-message",
                json!({"sessionId": "s1", "number": to, "message": "hi"}),
            )
            .await;
        assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_and_malformed_sessions_in_paths() {
    let app = TestApp::start().await;
    for path in [
        "/api/qr/nobody",
        "/api/status/nobody",
        "/api/messages/nobody",
        "/api/sessions/nobody",
    ] {
        let got = app.get_json(path).await;
        assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
    }
    for (method, path) in [
        (reqwest::Method::POST, "/api/sessions/nobody/logout"),
        (reqwest::Method::POST, "/api/sessions/nobody/restart"),
        (reqwest::Method::DELETE, "/api/sessions/nobody"),
    ] {
        let got = into_json(app.req(method, path).send().await.unwrap()).await;
        assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
    }
    let got = app
        .post_json(
            "/api/sessions/nobody/pairing-code",
            json!({"phone": "15551234567"}),
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
    let got = app
        .post_json("/api/sessions/nobody/pairing-code", json!({"phone": "12"}))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_phone");
    for path in [
        "/api/status/bad%20id",
        "/api/qr/a.b",
        &format!("/api/messages/{}", "x".repeat(65)),
    ] {
        let got = app.get_json(path).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_session_id");
    }
    let got = app.get_json("/api/qr/nobody?format=gif").await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_query");
    app.stop().await;
}

#[tokio::test]
async fn history_query_mistakes_are_400() {
    let app = TestApp::start().await;
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=9999", "limit"),
        ("limit=abc", "limit"),
        ("direction=sideways", "direction"),
        ("cursor=garbage", "cursor"),
        ("chat=notaphone", "chat"),
        ("since=yesterday", "since"),
    ] {
        let got = app.get_json(&format!("/api/messages/s1?{q}")).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{q}: {}", got.1);
        assert!(
            got.1["error"]["message"].as_str().unwrap().contains(field),
            "{q}: {}",
            got.1
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let app = TestApp::start_with(Options {
        max_body_bytes: Some(2048),
        ..Options::default()
    })
    .await;
    let big = "x".repeat(4096);
    let got = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "s1", "to": "15551234567", "text": big}),
        )
        .await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Just under the limit is fine (and fails later, for the missing session).
    let got = app
        .post_json(
            "/api/send-message",
            json!({"sessionId": "s1", "to": "15551234567", "text": "x".repeat(1500)}),
        )
        .await;
    assert_error(&got, StatusCode::NOT_FOUND, "session_not_found");
    app.stop().await;
}
