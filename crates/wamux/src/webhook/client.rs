//! One HTTP attempt: sign, POST, read the answer. No retries here; the worker decides.

use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};

use super::guard::{self, GuardedResolver};
use super::schedule::parse_retry_after;
use super::signature::Secret;

/// How much of a receiver's answer is kept for the deliveries view.
const RESPONSE_SNIPPET: usize = 512;

/// Sends deliveries. Holds one connection pool for all sessions; the per-request timeout keeps
/// one slow receiver from holding a worker longer than that.
#[derive(Clone, Debug)]
pub struct Sender {
    client: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
}

/// One signed request.
#[derive(Debug)]
pub struct Request<'a> {
    pub url: &'a str,
    pub msg_id: &'a str,
    pub body: &'a [u8],
    pub secret: &'a Secret,
    pub headers: &'a [(String, String)],
}

/// What the receiver said, or why it said nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    /// Transport error, or the start of a non-2xx answer's body.
    pub error: Option<String>,
    pub elapsed: Duration,
}

impl Sender {
    pub fn new(timeout: Duration, allow_private: bool) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            // A redirect would send the event (and its custom headers) to a URL nobody vetted.
            .redirect(reqwest::redirect::Policy::none())
            // An ambient HTTP_PROXY must not receive webhook traffic nor decide where it goes.
            .no_proxy()
            .dns_resolver(GuardedResolver::shared(allow_private))
            .connect_timeout(timeout)
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            client,
            allow_private,
            timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub async fn send(&self, req: Request<'_>) -> Answer {
        let started = Instant::now();
        let fail = |error: String| Answer {
            status: None,
            retry_after: None,
            error: Some(error),
            elapsed: started.elapsed(),
        };
        let url = match guard::parse_url(req.url) {
            Ok(url) => url,
            Err(e) => return fail(e.to_string()),
        };
        // Literal addresses never reach the resolver, so they are vetted here.
        if !self.allow_private
            && let Some(ip) = guard::literal_ip(&url)
            && let Err(e) = guard::check_ip(ip)
        {
            return fail(e.to_string());
        }

        let timestamp = unix_now();
        let mut headers = HeaderMap::new();
        for (name, value) in req.headers {
            // Validated when the webhook was set; a bad one is skipped, never sent mangled.
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(n, v);
            }
        }
        // Set last so a custom header cannot replace the signature or the content type.
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("wamux/", env!("CARGO_PKG_VERSION"))),
        );
        let signature = req.secret.sign(req.msg_id, timestamp, req.body);
        for (name, value) in [
            ("webhook-id", req.msg_id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ] {
            match HeaderValue::from_str(&value) {
                Ok(v) => {
                    headers.insert(name, v);
                }
                Err(e) => return fail(format!("cannot build header {name}: {e}")),
            }
        }

        let result = self
            .client
            .post(url)
            .headers(headers)
            .body(req.body.to_vec())
            .send()
            .await;
        let response = match result {
            Ok(r) => r,
            Err(e) => return fail(describe(&e)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let error = if response.status().is_success() {
            None
        } else {
            // The body helps whoever reads the deliveries view; a failure to read it does not
            // change the verdict, which the status already decides.
            let text = response.text().await.unwrap_or_default();
            let mut snippet: String = text.chars().take(RESPONSE_SNIPPET).collect();
            if snippet.is_empty() {
                snippet = format!("HTTP {status}");
            } else {
                snippet = format!("HTTP {status}: {snippet}");
            }
            Some(snippet)
        };
        Answer {
            status: Some(status),
            retry_after,
            error,
            elapsed: started.elapsed(),
        }
    }
}

/// A readable one-line cause: reqwest's own Display hides the interesting inner error.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut msg = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
