//! `wamux webhook test --url URL [--secret S]`: sends one signed sample event and reports the
//! receiver's answer, so a receiver can be checked before any phone is linked.

use std::time::Duration;

use super::client::{Answer, Request, Sender};
use super::signature::Secret;

/// What the command did, for printing and for tests.
#[derive(Debug)]
pub struct Report {
    pub msg_id: String,
    pub body: String,
    /// The secret used; generated when none was given.
    pub secret: Secret,
    pub secret_generated: bool,
    pub answer: Answer,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.answer.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// The sample body: a `message-received` event in the shape every webhook delivery has.
pub fn sample_body(now: i64) -> serde_json::Value {
    serde_json::json!({
        "event": "message-received",
        "sessionId": "webhook-test",
        "timestamp": now,
        "data": {
            "id": "3EB0TESTMESSAGE",
            "sessionId": "webhook-test",
            "chatId": "15550000001@s.whatsapp.net",
            "from": "15550000001@s.whatsapp.net",
            "to": "15550000002@s.whatsapp.net",
            "fromMe": false,
            "pushName": "wamux webhook test",
            "type": "text",
            "text": "Hello from wamux webhook test",
            "caption": null,
            "timestamp": now,
            "status": "received",
            "quotedId": null,
            "media": null
        }
    })
}

/// Sends the sample. The operator runs this from a shell and names the URL, so loopback and
/// private targets are allowed here, unlike for webhooks set through the API.
pub async fn run(url: &str, secret: Option<&str>, timeout: Duration) -> anyhow::Result<Report> {
    super::guard::parse_url(url).map_err(|e| anyhow::anyhow!("--url: {e}"))?;
    let (secret, secret_generated) = match secret {
        Some(s) => (
            Secret::parse(s).map_err(|e| anyhow::anyhow!("--secret: {e}"))?,
            false,
        ),
        None => (Secret::generate(), true),
    };
    let now = super::client::unix_now();
    let body = sample_body(now).to_string();
    let msg_id = format!("msg_test_{now}");
    let sender = Sender::new(timeout, true)?;
    let answer = sender
        .send(Request {
            url,
            msg_id: &msg_id,
            body: body.as_bytes(),
            secret: &secret,
            headers: &[],
        })
        .await;
    Ok(Report {
        msg_id,
        body,
        secret,
        secret_generated,
        answer,
    })
}

/// Prints the report the way the seed's test script did: what was sent, what came back.
pub fn print(report: &Report, url: &str) {
    println!("POST {url}");
    println!("webhook-id: {}", report.msg_id);
    if report.secret_generated {
        println!(
            "secret (generated for this test): {}",
            report.secret.expose()
        );
    }
    println!("body: {}", report.body);
    match report.answer.status {
        Some(status) => println!(
            "receiver answered HTTP {status} in {} ms{}",
            report.answer.elapsed.as_millis(),
            report
                .answer
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ),
        None => println!(
            "no answer after {} ms: {}",
            report.answer.elapsed.as_millis(),
            report.answer.error.as_deref().unwrap_or("unknown error")
        ),
    }
    println!("{}", if report.ok() { "OK" } else { "FAILED" });
}

/// `wamux webhook ...`
#[derive(Debug, clap::Subcommand)]
pub enum WebhookCmd {
    /// Send a signed sample `message-received` event to URL and report the answer
    Test {
        /// Receiver URL (http or https; loopback and private addresses are allowed here)
        #[arg(long)]
        url: String,
        /// Signing secret, whsec_... [default: a new one, printed]
        #[arg(long)]
        secret: Option<String>,
        /// Timeout [default: WAMUX_WEBHOOK_TIMEOUT, 10s]
        #[arg(long)]
        timeout: Option<String>,
    },
}

/// Runs a `wamux webhook` command; fails (exit code 1) when the receiver did not answer 2xx.
pub async fn run_cli(cmd: WebhookCmd, config: &crate::Config) -> anyhow::Result<()> {
    match cmd {
        WebhookCmd::Test {
            url,
            secret,
            timeout,
        } => {
            let timeout = match timeout {
                Some(t) => super::schedule::parse_duration(&t)
                    .map_err(|e| anyhow::anyhow!("--timeout: {e}"))?,
                None => config.webhook.timeout,
            };
            let report = run(&url, secret.as_deref(), timeout).await?;
            print(&report, &url);
            if report.ok() {
                Ok(())
            } else {
                anyhow::bail!("the receiver did not accept the test event")
            }
        }
    }
}
