//! The passkey gate's admin routes: the owner's browser (`passkey/assert`), what the
//! phone shows (`GET passkey`, which can wait for a stage) and the gate's faults.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, Result, parse};
use crate::hub::Hub;
use crate::passkey::Faults;
use crate::webauthn::{self, AssertError, Tamper};

/// How long `GET .../passkey?wait=STAGE` waits at most.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

const STAGES: [&str; 6] = [
    "none",
    "assertion_required",
    "awaiting_nonce",
    "code_shown",
    "linked",
    "failed",
];

pub fn router() -> Router<Arc<Hub>> {
    Router::new()
        .route("/admin/phones/{phone}/passkey", get(screen))
        .route("/admin/phones/{phone}/passkey/assert", post(assert))
        .route("/admin/faults/passkey", post(faults))
}

fn not_enabled(phone: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "passkey_not_enabled",
        format!("account {phone} is not gated with a passkey"),
    )
}

#[derive(Deserialize)]
struct AssertBody {
    /// The request options, as an object or as the JSON string the device got.
    options: Value,
    #[serde(default)]
    tamper: Option<String>,
}

/// The owner's browser on https://web.whatsapp.com answers `navigator.credentials.get()`
/// with the account's passkey: a `PublicKeyCredential.toJSON()`.
async fn assert(
    State(hub): State<Arc<Hub>>,
    Path(phone): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let req: AssertBody = parse(&body)?;
    let options = match req.options {
        Value::String(s) => serde_json::from_str(&s).map_err(|e| {
            ApiError::bad_request("invalid_options", format!("options is not JSON: {e}"))
        })?,
        options => options,
    };
    if !options.is_object() {
        return Err(ApiError::bad_request(
            "invalid_options",
            "options must be an object (or a string of one)",
        ));
    }
    let tamper = match req.tamper {
        None => None,
        Some(t) => Some(Tamper::parse(&t).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_tamper",
                format!("tamper must be {}, got {t:?}", Tamper::NAMES),
            )
        })?),
    };
    let mut core = hub.core.lock().await;
    let acc = core
        .account(&phone)
        .ok_or_else(|| ApiError::phone_not_found(&phone))?;
    if acc.passkey.is_none() {
        return Err(not_enabled(&phone));
    }
    let passkey = core
        .account_mut(&phone)
        .and_then(|a| a.passkey.as_mut())
        .expect("checked above");
    let assertion = webauthn::assert(passkey, &options, tamper).map_err(|e| match e {
        AssertError::BadOptions(why) => ApiError::bad_request("invalid_options", why),
        AssertError::Key(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    })?;
    Ok(Json(assertion))
}

#[derive(Deserialize)]
struct ScreenQuery {
    #[serde(default)]
    wait: Option<String>,
}

/// What the phone shows about its latest ceremony. With `?wait=STAGE`, answers once it
/// shows that stage or the ceremony ended (up to 30 s; then 408).
async fn screen(
    State(hub): State<Arc<Hub>>,
    Path(phone): Path<String>,
    Query(query): Query<ScreenQuery>,
) -> Result<Json<Value>> {
    if let Some(stage) = &query.wait
        && !STAGES.contains(&stage.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_stage",
            format!("wait must be one of {}, got {stage:?}", STAGES.join(", ")),
        ));
    }
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        let core = hub.core.lock().await;
        if core.account(&phone).is_none() {
            return Err(ApiError::phone_not_found(&phone));
        }
        let screen = core.passkeys.screen(&phone);
        let shown = match &query.wait {
            None => true,
            Some(stage) => screen.stage == stage || matches!(screen.stage, "linked" | "failed"),
        };
        if shown {
            return Ok(Json(json!(screen)));
        }
        // Listen before the lock goes, or a change in between would be missed.
        let changed = core.passkeys.changed.clone();
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        drop(core);
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "passkey_wait_timeout",
                format!(
                    "the phone still shows {} after {WAIT_LIMIT:?}",
                    screen.stage
                ),
            ));
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FaultBody {
    phone: String,
    #[serde(default)]
    omit_options: bool,
    #[serde(default)]
    no_continuation: bool,
}

/// Sets how the phone's next ceremonies misbehave (both off: as WhatsApp should).
async fn faults(State(hub): State<Arc<Hub>>, body: Bytes) -> Result<Json<Value>> {
    let req: FaultBody = parse(&body)?;
    let mut core = hub.core.lock().await;
    if core.account(&req.phone).is_none() {
        return Err(ApiError::phone_not_found(&req.phone));
    }
    let faults = Faults {
        omit_options: req.omit_options,
        no_continuation: req.no_continuation,
    };
    core.faults.passkey.insert(req.phone.clone(), faults);
    Ok(Json(json!({
        "phone": req.phone,
        "omitOptions": faults.omit_options,
        "noContinuation": faults.no_continuation,
    })))
}
