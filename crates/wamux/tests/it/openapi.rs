//! The OpenAPI document: committed and current, valid for an independent validator, and in
//! agreement with the router both ways (every documented operation is served, with the
//! documented statuses and answer shapes; every served route is documented).

use std::collections::BTreeSet;
use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use wamux::api::openapi;

use crate::helpers::{KEY, TestApp};

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn the_committed_openapi_json_is_current() {
    let generated = openapi::document_text();
    let path = committed_path();
    if std::env::var_os("WAMUX_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is not what this build generates; regenerate it with \
         `cargo run -p wamux -- openapi > docs/openapi.json` and commit it"
    );
}

/// `openapi-spec-validator` from PyPI (scripts/test installs it), run on what we generate.
#[test]
fn the_document_passes_an_independent_openapi_validator() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        // scripts/test installs it, so CI always runs this check.
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 package openapi-spec-validator missing: scripts/test installs it"
        );
        eprintln!("note: python3 openapi-spec-validator not installed; document not validated");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, openapi::document_text()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "validator rejected the document:\n{text}"
    );
    assert!(text.contains("OK"), "validator said: {text}");

    // And the validator does reject a broken document, so its OK means something.
    let mut broken = openapi::document();
    broken["paths"]["/api/health"]["get"]["responses"] = json!("not an object");
    std::fs::write(&file, broken.to_string()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "validator accepted a broken document"
    );
}

#[tokio::test]
async fn the_document_is_served_behind_the_key_and_shown_at_docs() {
    let app = TestApp::start().await;
    let r = app
        .http
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = app.get_json("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, openapi::document());
    assert_eq!(body["openapi"], "3.1.0");

    // The page is public like the UI and needs nothing from another origin.
    let r = app.http.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://cdn"),
        "external reference in /docs"
    );
    for asset in ["/assets/docs.js", "/assets/docs.css"] {
        assert!(page.contains(asset));
        let r = app.http.get(app.url(asset)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
    }
    app.stop().await;
}

/// Each documented operation, called with the key and without: the keyed ones answer 401
/// without it, and every one answers with a status it documents (never the router's 404 or
/// 405), with a body of the documented shape.
#[cfg(feature = "sandbox")]
#[tokio::test]
async fn every_documented_operation_answers_as_documented() {
    use crate::helpers::Options;
    use std::time::Duration;

    let app = TestApp::start_with(Options {
        sim: true,
        configure: Some(Box::new(|c| c.webhook.allow_private = true)),
        ..Options::default()
    })
    .await;
    // Something to find: a session waiting for its QR scan, and a webhook.
    let (s, _) = app
        .post_json("/api/start-session", json!({"sessionId": "probe"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    app.wait_qr("probe", Duration::from_secs(20)).await;
    let (s, _) = app
        .post_json(
            "/api/probe/webhook",
            json!({"url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let doc = openapi::document();
    let mut ops = operations(&doc);
    // Deleting goes last, so the other calls find what they look for.
    ops.sort_by_key(|(_, m, _)| *m == Method::DELETE);
    let mut checked_bodies = 0;
    for (path, method, op) in &ops {
        let url = fill(path);
        let keyed = op["security"].as_array().is_some_and(|s| !s.is_empty());
        if keyed {
            let r = app
                .http
                .request(method.clone(), app.url(&url))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {url} without the key"
            );
        }
        let mut req = app.req(method.clone(), &url);
        if !op["requestBody"].is_null() {
            req = req.json(&json!({}));
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let ctype = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = r.text().await.unwrap();
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {url} is not served"
        );
        assert!(
            !(status == StatusCode::NOT_FOUND
                && (text.is_empty() || text.contains("no such API route"))),
            "{method} {url} is not served: {text}"
        );
        let documented = &op["responses"][status.as_str()];
        assert!(
            documented.is_object(),
            "{method} {url} answered {status}, which it does not document: {text}"
        );
        if let Some(schema) = documented["content"]["application/json"]["schema"].as_object()
            && ctype.starts_with("application/json")
        {
            let body: Value = serde_json::from_str(&text).unwrap();
            let errors = check(&doc, &Value::Object(schema.clone()), &body, "$");
            assert!(
                errors.is_empty(),
                "{method} {url} ({status}) does not match its schema: {errors:#?}\n{body:#}"
            );
            checked_bodies += 1;
        }
    }
    assert!(ops.len() >= 25, "only {} operations documented", ops.len());
    assert!(
        checked_bodies >= 20,
        "only {checked_bodies} answers checked against schemas"
    );
    app.stop().await;
}

/// Every route the router serves (read from the router itself) is documented with each
/// method it answers to.
#[tokio::test]
async fn every_served_route_is_documented() {
    let app = TestApp::start().await;
    let served_paths = served_paths(&app).await;
    assert!(
        served_paths.contains("/api/start-session"),
        "{served_paths:?}"
    );
    let doc = openapi::document();
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(p, m, _)| (template(&p), m.to_string()))
        .collect();
    let mut served = BTreeSet::new();
    for path in &served_paths {
        if UNDOCUMENTED.iter().any(|(p, _)| {
            path == p || (p.ends_with('*') && path.starts_with(p.trim_end_matches('*')))
        }) {
            continue;
        }
        let url = fill(path);
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            let r = app.req(method.clone(), &url).send().await.unwrap();
            if r.status() != StatusCode::METHOD_NOT_ALLOWED {
                served.insert((template(path), method.to_string()));
            }
        }
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in the OpenAPI document (add #[utoipa::path] to the handler and list it in api/openapi.rs): {undocumented:?}"
    );
    let missing: Vec<_> = documented.difference(&served).collect();
    assert!(missing.is_empty(), "documented but not served: {missing:?}");
    app.stop().await;
}

/// Routes the document leaves out, and why.
const UNDOCUMENTED: &[(&str, &str)] = &[
    (
        "/api/sandbox*",
        "the sandbox build's pass-through to the simulator, for the UI only",
    ),
    ("/uploads", "answers 404 on purpose: there is no listing"),
    ("/uploads/", "answers 404 on purpose: there is no listing"),
];

/// The paths in the router, from its `Debug` output (axum has no other way to list them):
/// the `paths` of the first `Node`, which is the path router's (the fallback router's
/// comes after it).
async fn served_paths(app: &TestApp) -> BTreeSet<String> {
    let router = wamux::api::router(manual_state(app).await);
    let dump = format!("{router:?}");
    let start = dump
        .find("node: Node { paths: {")
        .expect("axum's Router Debug lists its paths");
    // `RouteId(1): "/api/qr/{session_id}", ...` up to the map's closing brace.
    let mut paths = BTreeSet::new();
    let (mut current, mut in_string, mut escaped) = (String::new(), false, false);
    for c in dump[start + "node: Node { paths: {".len()..].chars() {
        match (in_string, c) {
            (true, _) if escaped => {
                current.push(c);
                escaped = false;
            }
            (true, '\\') => escaped = true,
            (true, '"') => {
                paths.insert(std::mem::take(&mut current));
                in_string = false;
            }
            (true, c) => current.push(c),
            (false, '"') => in_string = true,
            (false, '}') => break,
            (false, _) => {}
        }
    }
    paths
}

/// A state like the one `wamux::run` builds, in the data dir of `app` (its router is what is
/// listed; `app` serves the same routes for the probing).
async fn manual_state(app: &TestApp) -> wamux::AppState {
    let dir = app.dir.path().join("listing");
    std::fs::create_dir_all(&dir).unwrap();
    let config = wamux::Config::with_data_dir(&dir);
    let store = wamux::store::Store::connect(&crate::helpers::database(&dir))
        .await
        .unwrap();
    let events = wamux::event::EventBus::default();
    let connector = wamux::whatsapp::WaConnector::new(
        &wamux::whatsapp::device_db_path(&dir),
        wamux::whatsapp::Endpoint {
            url: None,
            ca_pem: None,
        },
        store.clone(),
        events.clone(),
    )
    .unwrap();
    let sessions = wamux::session::SessionManager::new(
        store.clone(),
        events.clone(),
        connector,
        Default::default(),
    );
    let webhooks = wamux::webhook::Webhooks::start(
        store.clone(),
        &events,
        config.webhook.clone(),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    let media = wamux::media::Media::new(
        config.media.clone(),
        store.clone(),
        events.clone(),
        "http://127.0.0.1".into(),
        &dir,
    )
    .unwrap();
    wamux::AppState {
        config: std::sync::Arc::new(config),
        store: store.clone(),
        sessions,
        events,
        keys: wamux::api::Keys::new(
            wamux::api::ApiKey::new(KEY),
            store.clone(),
            30,
            Default::default(),
        ),
        started_at: std::time::Instant::now(),
        webhooks,
        media,
    }
}

fn operations(doc: &Value) -> Vec<(String, Method, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (m, op) in item.as_object().unwrap() {
            let method = Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap();
            out.push((path.clone(), method, op.clone()));
        }
    }
    out
}

/// `/api/qr/{sessionId}` and `/api/qr/{session_id}` -> `/api/qr/{}`.
fn template(path: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '{' => {
                depth += 1;
                out.push('{');
            }
            '}' => {
                depth -= 1;
                out.push('}');
            }
            _ if depth > 0 => {}
            c => out.push(c),
        }
    }
    out
}

/// A concrete URL for a path template: the probe session, delivery 1, a real asset.
fn fill(path: &str) -> String {
    let t = template(path);
    let t = t.replacen("/assets/{}", "/assets/docs.js", 1);
    let t = t.replacen("/uploads/{}", "/uploads/1700000000_missing.jpg", 1);
    let t = t.replacen("/deliveries/{}", "/deliveries/1", 1);
    let t = t.replacen("/{}/media/retry", "/3EB0PROBE/media/retry", 1);
    let t = t.replacen("/{}/resend", "/3EB0PROBE/resend", 1);
    t.replace("{}", "probe")
}

/// The answer `value` against `schema`: types, required properties, and the same for every
/// nested property and item. Enough to catch a renamed or missing field.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        return check(doc, &doc["components"]["schemas"][name], value, at);
    }
    let mut errors = Vec::new();
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            errors.extend(check(doc, s, value, at));
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(alts) = schema[key].as_array()
            && !alts.iter().any(|s| check(doc, s, value, at).is_empty())
        {
            errors.push(format!("{at}: matches none of {key}"));
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
        errors.push(format!("{at}: {value} is not {types:?}"));
        return errors;
    }
    if let Some(obj) = value.as_object() {
        for req in schema["required"].as_array().into_iter().flatten() {
            let name = req.as_str().unwrap();
            if !obj.contains_key(name) {
                errors.push(format!("{at}: missing required `{name}`"));
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (name, s) in props {
                if let Some(v) = obj.get(name) {
                    errors.extend(check(doc, s, v, &format!("{at}.{name}")));
                }
            }
        }
        if schema["additionalProperties"].is_object() {
            for (name, v) in obj {
                errors.extend(check(
                    doc,
                    &schema["additionalProperties"],
                    v,
                    &format!("{at}.{name}"),
                ));
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, v) in list.iter().enumerate() {
            errors.extend(check(doc, items, v, &format!("{at}[{i}]")));
        }
    }
    if let Some(values) = schema["enum"].as_array()
        && !values.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {values:?}"));
    }
    errors
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

#[test]
fn the_schema_check_catches_a_missing_field_and_a_wrong_type() {
    let doc = openapi::document();
    let schema = json!({"$ref": "#/components/schemas/ErrorBody"});
    let good = json!({"error": {"code": "x", "message": "y"}});
    assert!(check(&doc, &schema, &good, "$").is_empty());
    let missing = json!({"error": {"code": "x"}});
    assert_eq!(check(&doc, &schema, &missing, "$").len(), 1);
    let wrong = json!({"error": {"code": 1, "message": "y"}});
    assert_eq!(check(&doc, &schema, &wrong, "$").len(), 1);
}

/// A scoped key for the admin to hand out: its secret and id.
pub async fn create_key(app: &TestApp, body: Value) -> (String, String) {
    let (s, key) = app.post_json("/api/keys", body).await;
    assert_eq!(s, StatusCode::CREATED, "{key}");
    (
        key["key"].as_str().unwrap().to_owned(),
        key["id"].as_str().unwrap().to_owned(),
    )
}

/// What the admin sees of the probe session, the other sessions and the keys: a call that
/// slipped past its check would change some of it.
async fn snapshot(app: &TestApp) -> Value {
    let (_, sessions) = app.get_json("/api/sessions").await;
    let sessions: Vec<Value> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| json!([s["sessionId"], s["status"]]))
        .collect();
    let (_, webhook) = app.get_json("/api/probe/webhook").await;
    let (_, messages) = app.get_json("/api/messages/probe").await;
    let (_, keys) = app.get_json("/api/keys").await;
    let keys: Vec<Value> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].clone())
        .collect();
    json!({"sessions": sessions, "webhook": webhook, "messages": messages["messages"], "keys": keys})
}

/// Does `op` name a session: in its path, its query or its JSON body?
fn names_session(doc: &Value, path: &str, op: &Value) -> bool {
    let in_query = session_in_query(op);
    let in_body = op["requestBody"]["content"]
        .as_object()
        .is_some_and(|content| {
            content.values().any(|media| {
                let schema = resolve(doc, &media["schema"]);
                schema["properties"].get("sessionId").is_some()
            })
        });
    path.contains("{sessionId}") || in_query || in_body
}

/// Does `op` take the session as the `sessionId` query parameter?
fn session_in_query(op: &Value) -> bool {
    op["parameters"].as_array().is_some_and(|ps| {
        ps.iter()
            .any(|p| p["name"] == "sessionId" && p["in"] == "query")
    })
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Calls `op` on `session` with `key`: the session in the path, the query and the body.
async fn call_as(
    app: &TestApp,
    key: &str,
    method: &Method,
    path: &str,
    op: &Value,
    session: &str,
) -> (StatusCode, Value) {
    let url = fill(path).replace("/probe", &format!("/{session}"));
    let url = if session_in_query(op) {
        format!("{url}?sessionId={session}")
    } else {
        url
    };
    let mut req = app
        .http
        .request(method.clone(), app.url(&url))
        .header("X-API-Key", key);
    if !op["requestBody"].is_null() {
        req = req.json(&json!({"sessionId": session}));
    }
    crate::helpers::into_json(req.send().await.unwrap()).await
}

/// Every operation that names a session, called with a key scoped to another session,
/// answers 403 `forbidden` (for a session that exists and one that does not); every
/// mutating one, called with a read-only key for its session, answers 403; the admin's
/// routes refuse both keys; and afterwards nothing has changed. Lists and counts hold only
/// the key's sessions. Generated from the document, so a new route is covered as it lands,
/// and a route whose check is removed fails here.
#[cfg(feature = "sandbox")]
#[tokio::test]
async fn a_key_for_another_session_or_a_read_only_key_changes_nothing_anywhere() {
    use crate::helpers::{Options, assert_error};
    use std::time::Duration;

    let app = TestApp::start_with(Options {
        sim: true,
        configure: Some(Box::new(|c| c.webhook.allow_private = true)),
        ..Options::default()
    })
    .await;
    for id in ["probe", "mine"] {
        let (s, _) = app
            .post_json("/api/start-session", json!({"sessionId": id}))
            .await;
        assert_eq!(s, StatusCode::CREATED);
        app.wait_qr(id, Duration::from_secs(20)).await;
    }
    let (s, _) = app
        .post_json(
            "/api/probe/webhook",
            json!({"url": "http://127.0.0.1:9/hook"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (elsewhere, _) = create_key(
        &app,
        json!({"name": "elsewhere", "sessions": ["mine", "min*"], "scopes": ["read", "send", "manage", "webhooks"]}),
    )
    .await;
    let (reader, _) = create_key(
        &app,
        json!({"name": "reader", "sessions": ["probe"], "scopes": ["read"]}),
    )
    .await;
    let before = snapshot(&app).await;

    let doc = openapi::document();
    let (mut named, mut mutating, mut admin) = (0, 0, 0);
    for (path, method, op) in operations(&doc) {
        if !path.starts_with("/api/") {
            continue;
        }
        let admin_only = path.starts_with("/api/keys") || path == "/api/audit";
        if names_session(&doc, &path, &op) {
            named += 1;
            for target in ["probe", "nosuch"] {
                let got = call_as(&app, &elsewhere, &method, &path, &op, target).await;
                assert_eq!(
                    got.0,
                    StatusCode::FORBIDDEN,
                    "{method} {path} on `{target}` with a key for another session: {}",
                    got.1
                );
                assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
            }
        }
        if method != Method::GET {
            mutating += 1;
            let got = call_as(&app, &reader, &method, &path, &op, "probe").await;
            assert_eq!(
                got.0,
                StatusCode::FORBIDDEN,
                "{method} {path} with a read-only key: {}",
                got.1
            );
            let code = if admin_only {
                "forbidden"
            } else {
                "missing_scope"
            };
            assert_error(&got, StatusCode::FORBIDDEN, code);
        }
        if admin_only {
            admin += 1;
            for key in [&elsewhere, &reader] {
                let got = call_as(&app, key, &method, &path, &op, "probe").await;
                assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
            }
        }
    }
    assert!(named >= 22, "only {named} operations name a session");
    assert!(mutating >= 16, "only {mutating} mutating operations");
    assert!(admin >= 4, "only {admin} admin operations");
    assert_eq!(
        snapshot(&app).await,
        before,
        "a refused call changed something"
    );

    // Outside the document: the metrics and the sandbox's phones are the admin's.
    for path in ["/metrics", "/api/sandbox", "/api/sandbox/phones"] {
        let r = app
            .http
            .get(app.url(path))
            .header("X-API-Key", &elsewhere)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }

    // Lists and counts hold the key's sessions only.
    let as_key = |key: &str, path: &str| {
        let r = app.http.get(app.url(path)).header("X-API-Key", key);
        async move { crate::helpers::into_json(r.send().await.unwrap()).await }
    };
    let (_, list) = as_key(&elsewhere, "/api/sessions").await;
    let ids: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sessionId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["mine"]);
    let (_, health) = as_key(&elsewhere, "/api/health").await;
    assert_eq!(health["sessions"]["total"], 1, "{health}");
    let (_, events) = as_key(&elsewhere, "/api/events?limit=1000").await;
    let sessions: BTreeSet<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sessionId"].as_str().unwrap())
        .collect();
    assert_eq!(sessions, BTreeSet::from(["mine"]), "{events}");
    let (_, events) = as_key(&reader, "/api/events?sessionId=probe").await;
    assert!(!events["events"].as_array().unwrap().is_empty());
    app.stop().await;
}
