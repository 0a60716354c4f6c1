//! The management UI: static files from `crates/wamux/web/`, compiled into the binary so a
//! deployment is one file and needs no Node.js. `/` is the page; `/assets/*` its scripts,
//! styles and the vendored Socket.IO client. The page itself holds no secret: it asks for the
//! API key and calls the same `/api` routes as any client. `/docs` shows the OpenAPI document,
//! which it carries in the page (see [`docs`]).

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

#[cfg(feature = "sandbox")]
pub mod sandbox;
pub(crate) mod webhook_test;

struct Asset {
    name: &'static str,
    mime: &'static str,
    body: &'static [u8],
}

const INDEX: &[u8] = include_bytes!("../../web/index.html");

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/app.js"),
    },
    Asset {
        name: "api.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/api.js"),
    },
    Asset {
        name: "app.css",
        mime: "text/css; charset=utf-8",
        body: include_bytes!("../../web/app.css"),
    },
    Asset {
        name: "docs.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/docs.js"),
    },
    Asset {
        name: "docs.css",
        mime: "text/css; charset=utf-8",
        body: include_bytes!("../../web/docs.css"),
    },
    Asset {
        name: "vendor/socket.io.esm.min.js",
        mime: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/vendor/socket.io.esm.min.js"),
    },
];

/// Only our own origin: no inline script, no third-party anything. `data:` images are the
/// QR codes the API returns; `ws:`/`wss:` is the live feed. Media previews come from
/// `/uploads`, which may live on another public URL, hence `img-src`/`media-src` https too.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob: https: http:; media-src 'self' blob: https: http:; \
    connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
    form-action 'self'";

/// The page and its assets, served without the API key (the page asks for it).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/docs", get(docs))
        .route("/assets/{*file}", get(asset))
}

/// Routes the UI needs under `/api` (behind the API key): a webhook's test event, and the
/// virtual phones of sandbox mode (absent from production builds, where `/api/sandbox` is an
/// unknown route).
pub fn api_router() -> Router<crate::AppState> {
    webhook_test::router().merge(sandbox_router())
}

#[cfg(feature = "sandbox")]
fn sandbox_router() -> Router<crate::AppState> {
    sandbox::router()
}

#[cfg(not(feature = "sandbox"))]
fn sandbox_router() -> Router<crate::AppState> {
    Router::new()
}

#[utoipa::path(get, path = "/", tag = "ui", operation_id = "ui", summary = "The web UI",
    responses((status = 200, description = "The management UI; it asks for the API key", body = String, content_type = "text/html")))]
async fn index() -> Response {
    serve("text/html; charset=utf-8", INDEX)
}

/// The page for `/docs`: the document goes in as a JSON data block (not a script, so the CSP
/// allows it), which `docs.js` renders. The document describes this build's API and holds
/// nothing of the server's data, so the page needs no key and works without any network.
static DOCS_PAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let template = include_str!("../../web/docs.html");
    // `</script>` inside the data would end the block; `<\/` is the same JSON string.
    let doc = crate::api::openapi::document_text().replace("</", "<\\/");
    template.replace("{{OPENAPI_JSON}}", doc.trim_end())
});

#[utoipa::path(get, path = "/docs", tag = "docs", operation_id = "docs", summary = "The API documentation page",
    responses((status = 200, description = "This document, rendered; works offline", body = String, content_type = "text/html")))]
async fn docs() -> Response {
    serve("text/html; charset=utf-8", DOCS_PAGE.as_bytes())
}

#[utoipa::path(get, path = "/assets/{file}", tag = "ui", operation_id = "uiAsset", summary = "Web UI assets",
    params(("file" = String, Path, description = "a script or style of the UI or of the docs page")),
    responses((status = 200, description = "The file", body = String), (status = 404, description = "No such asset")))]
async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => serve(a.mime, a.body),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

fn serve(mime: &'static str, body: &'static [u8]) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    // Small files, and a stale UI after an upgrade is worse than a revalidation.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        let html = std::str::from_utf8(INDEX).unwrap();
        for a in ["/assets/app.js", "/assets/app.css"] {
            assert!(html.contains(a), "index.html does not reference {a}");
        }
        let app = std::str::from_utf8(ASSETS[0].body).unwrap();
        for import in ["./api.js", "./vendor/socket.io.esm.min.js"] {
            assert!(app.contains(import));
            let name = import.trim_start_matches("./");
            assert!(ASSETS.iter().any(|a| a.name == name), "{name} not embedded");
        }
    }

    /// The Webhook tab offers every event the server raises (its list is the page's own).
    #[test]
    fn the_webhook_tab_lists_every_event() {
        let app = std::str::from_utf8(ASSETS[0].body).unwrap();
        let start = app.find("const EVENT_KINDS = [").unwrap();
        let list = &app[start..start + app[start..].find("];").unwrap()];
        for kind in crate::event::EventKind::ALL {
            assert!(
                list.contains(&format!("'{kind}'")),
                "the Webhook tab does not offer {kind}"
            );
        }
    }

    #[test]
    fn the_docs_page_carries_the_document() {
        let page = DOCS_PAGE.as_str();
        for a in ["/assets/docs.js", "/assets/docs.css"] {
            assert!(page.contains(a), "docs.html does not reference {a}");
        }
        let start = page
            .find(r#"<script type="application/json" id="openapi">"#)
            .unwrap();
        let body = &page[start..];
        let json = &body[body.find('>').unwrap() + 1..body.find("</script>").unwrap()];
        let doc: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(doc, crate::api::openapi::document());
    }
}
