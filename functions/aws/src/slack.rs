//! The Slack sink: one Block Kit message per notification, posted to an incoming webhook.
//!
//! Why a webhook and not the Web API: a webhook needs no bot token, no scopes and no channel
//! id; the URL alone is the credential. That makes the URL a secret: it lives in Secrets
//! Manager or SSM ([`crate::webhook_secret`]), is held here as a [`WebhookUrl`] whose `Debug`
//! and `Display` print only `https://hooks.slack.com/***`, and every error text built here is
//! scrubbed of it (reqwest puts the request URL into its errors; [`reqwest::Error::without_url`]
//! removes it, and the scrub catches anything else).
//!
//! The message: a `header`, a `section` with the facts as fields, a `context` line and a
//! button to the image in the ECR console for a single alert; for a summary, a header and
//! sections listing the counts per destination and the first examples. Slack refuses a whole
//! message (`invalid_blocks`) when one limit is broken, so every text is cut to its limit here
//! (header 150 characters, section text 3,000, field 2,000, at most 10 fields, button text 75,
//! at most 50 blocks), and [`block_kit_violations`] checks the result before it is sent: a
//! message that still breaks a rule goes out as plain text instead of not at all.
//!
//! Delivery: Slack answers 429 with `Retry-After` when a webhook posts more than about one
//! message a second, and 5xx when it is having a bad day; both, and connection failures and
//! timeouts, are retried up to [`RetryPolicy::max_attempts`] times with deterministic
//! exponential delays (1 s, 2 s, 4 s by default; `Retry-After` wins when given, capped at 10 s
//! by default so a function's timeout is not eaten by one sink). Any
//! other answer (400 `invalid_blocks`, 403 `action_prohibited`, 404 `no_service` for a revoked
//! webhook) will not change by trying again: it is a non-retryable [`NotifyError`] carrying
//! Slack's own error text.
//!
//! HTTP: reqwest over rustls with the aws-lc-rs crypto provider the AWS SDK already builds, so
//! no second TLS stack; HTTP/1.1 only; no redirects followed.

use std::fmt;
use std::time::Duration;

use replwatch_core::alerts::{
    Alert, AlertSummary, Notification, Notifier, NotifyError, Severity, human_duration,
};
use replwatch_core::backfill::run::BackfillRun;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value, json};

use crate::sns::truncate_chars;

/// The sink name in [`NotifyError`]s.
pub const SINK: &str = "slack";
/// What a [`WebhookUrl`] prints instead of itself.
pub const REDACTED: &str = "https://hooks.slack.com/***";

/// Block Kit: at most this many blocks in one message.
pub const MAX_BLOCKS: usize = 50;
/// Block Kit: a `header` text.
pub const HEADER_MAX_CHARS: usize = 150;
/// Block Kit: a `section` text (and any other text object).
pub const TEXT_MAX_CHARS: usize = 3000;
/// Block Kit: one `section` field.
pub const FIELD_MAX_CHARS: usize = 2000;
/// Block Kit: fields in one `section`.
pub const MAX_FIELDS: usize = 10;
/// Block Kit: elements of one `context` block.
pub const MAX_CONTEXT_ELEMENTS: usize = 10;
/// Block Kit: elements of one `actions` block.
pub const MAX_ACTION_ELEMENTS: usize = 25;
/// Block Kit: a button's text.
pub const BUTTON_TEXT_MAX_CHARS: usize = 75;
/// Block Kit: a button's `url`.
pub const BUTTON_URL_MAX_CHARS: usize = 3000;
/// Block Kit: a button's `value`.
pub const BUTTON_VALUE_MAX_CHARS: usize = 2000;
/// Block Kit: `action_id` and `block_id`.
pub const ID_MAX_CHARS: usize = 255;
/// Slack truncates a message's top-level `text` past this.
pub const FALLBACK_TEXT_MAX_CHARS: usize = 40_000;

/// An incoming-webhook URL. A secret: it never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

/// Why a string is not a usable webhook URL (never the string itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidWebhookUrl {
    #[error("not a URL ({0})")]
    NotAUrl(String),
    #[error("not https (plain http is accepted only for 127.0.0.1, localhost and [::1])")]
    NotHttps,
    #[error("the URL carries a user name or password")]
    HasCredentials,
}

impl WebhookUrl {
    /// Accepts an `https` URL, or plain `http` on a loopback address (the tests' fake Slack).
    pub fn parse(value: &str) -> Result<Self, InvalidWebhookUrl> {
        let url =
            Url::parse(value.trim()).map_err(|e| InvalidWebhookUrl::NotAUrl(e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidWebhookUrl::HasCredentials);
        }
        let loopback = matches!(
            url.host_str(),
            Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
        );
        match (url.scheme(), loopback) {
            ("https", _) | ("http", true) if url.host_str().is_some() => Ok(Self(url)),
            ("https", _) => Err(InvalidWebhookUrl::NotAUrl("no host".into())),
            _ => Err(InvalidWebhookUrl::NotHttps),
        }
    }

    /// The URL itself. Named so that every place that needs it stands out.
    pub fn expose_secret(&self) -> &str {
        self.0.as_str()
    }

    /// `text` with every appearance of this URL, its path and its last path segment replaced
    /// by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(self.0.as_str(), REDACTED);
        let path = self.0.path();
        if path.len() > 1 {
            out = out.replace(path, "/***");
        }
        if let Some(last) = self.0.path_segments().and_then(|mut s| s.next_back())
            && last.len() >= 8
        {
            out = out.replace(last, "***");
        }
        out
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// How often and how patiently a post is tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The delay after the first failed attempt; doubled after each further one.
    pub base_delay: Duration,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// The time one attempt may take, connecting included.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based): `base_delay × 2^(attempt-1)`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
    }
}

/// The HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("Slack HTTP client: {0}")]
pub struct SlackSetupError(String);

/// Posts notifications to one Slack incoming webhook.
#[derive(Debug, Clone)]
pub struct SlackNotifier {
    http: reqwest::Client,
    url: WebhookUrl,
    retry: RetryPolicy,
}

impl SlackNotifier {
    /// A notifier with the default [`RetryPolicy`].
    pub fn new(url: WebhookUrl) -> Result<Self, SlackSetupError> {
        Self::with_retry(url, RetryPolicy::default())
    }

    pub fn with_retry(url: WebhookUrl, retry: RetryPolicy) -> Result<Self, SlackSetupError> {
        let http = reqwest::Client::builder()
            .timeout(retry.request_timeout)
            .connect_timeout(retry.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("replwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SlackSetupError(url.scrub(&error_chain(&e.without_url()))))?;
        Ok(Self { http, url, retry })
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    async fn post_once(&self, body: &str) -> Result<(), Attempt> {
        let response = self
            .http
            .post(self.url.0.clone())
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| {
                let retryable = !e.is_builder();
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                let reason = format!("{what}: {}", error_chain(&e.without_url()));
                Attempt {
                    reason: self.url.scrub(&reason),
                    retryable,
                    retry_after: None,
                    status: None,
                }
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let text = truncate_chars(text.trim(), 500);
        let reason = self.url.scrub(&format!(
            "HTTP {}: {}",
            status.as_u16(),
            if text.is_empty() {
                status.canonical_reason().unwrap_or("no reason given")
            } else {
                &text
            }
        ));
        Err(Attempt {
            reason,
            retryable: status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
            retry_after,
            status: Some(status.as_u16()),
        })
    }
}

/// One failed attempt.
struct Attempt {
    reason: String,
    retryable: bool,
    retry_after: Option<Duration>,
    status: Option<u16>,
}

impl Notifier for SlackNotifier {
    async fn notify(&self, notification: &Notification) -> Result<(), NotifyError> {
        let mut message = render_message(notification);
        let violations = block_kit_violations(&message);
        if !violations.is_empty() {
            // A rendering bug must not cost the alert: send the readable text instead.
            tracing::error!(
                sink = SINK,
                kind = notification.kind(),
                violations = ?violations,
                "rendered Block Kit message breaks Slack's limits; sending plain text"
            );
            message = plain_message(notification);
        }
        let body = message.to_string();
        let max_attempts = self.retry.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.post_once(&body).await {
                Ok(()) => {
                    tracing::info!(
                        sink = SINK,
                        kind = notification.kind(),
                        severity = notification.severity().as_str(),
                        attempts = attempt,
                        "alert posted"
                    );
                    return Ok(());
                }
                Err(failed) if failed.retryable && attempt < max_attempts => {
                    let delay = match failed.retry_after {
                        Some(after) => after.min(self.retry.max_retry_after),
                        None => self.retry.backoff(attempt),
                    };
                    tracing::warn!(
                        sink = SINK,
                        attempt,
                        status = failed.status,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %failed.reason,
                        "post failed; trying again"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(failed) => {
                    tracing::warn!(
                        sink = SINK,
                        attempt,
                        status = failed.status,
                        retryable = failed.retryable,
                        error = %failed.reason,
                        "post failed"
                    );
                    let message = if failed.retryable {
                        format!(
                            "webhook post failed after {attempt} attempts: {}",
                            failed.reason
                        )
                    } else {
                        format!("Slack refused the message: {}", failed.reason)
                    };
                    return Err(NotifyError {
                        sink: SINK,
                        message,
                        retryable: failed.retryable,
                    });
                }
            }
        }
    }
}

/// `Retry-After` in seconds (the form Slack sends); an HTTP date is ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// An error and its sources, `: `-joined.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

// ---- rendering --------------------------------------------------------------------------

/// The Block Kit message for `notification`: `{"text": fallback, "blocks": [...]}`.
pub fn render_message(notification: &Notification) -> Value {
    let blocks = match notification {
        Notification::Single(alert) => single_blocks(notification, alert),
        Notification::Summary(summary) => summary_blocks(notification, summary),
        Notification::BackfillCompleted(run) => backfill_blocks(notification, run),
    };
    json!({
        "text": truncate_chars(&notification.subject(), FALLBACK_TEXT_MAX_CHARS),
        "blocks": blocks,
    })
}

/// The message without blocks: the readable body as the text.
pub fn plain_message(notification: &Notification) -> Value {
    json!({ "text": truncate_chars(&escape(&notification.body()), TEXT_MAX_CHARS) })
}

fn emoji(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => ":rotating_light:",
        Severity::Warning => ":warning:",
        Severity::Info => ":white_check_mark:",
    }
}

fn backfill_blocks(notification: &Notification, run: &BackfillRun) -> Vec<Value> {
    let severity = notification.severity();
    let field = |name: &str, value: String| mrkdwn(&format!("*{name}*\n{value}"), FIELD_MAX_CHARS);
    let fields = vec![
        field("Source", format!("`{}`", run.source)),
        field("Planned", format!("{} images", run.planned)),
        field("Copied", format!("{} images", run.copied)),
        field("Failed", format!("{} images", run.failed)),
        field(
            "Uploaded",
            format!("{:.1} MiB", run.bytes_uploaded as f64 / 1_048_576.0),
        ),
        field("Destinations", run.destinations.len().to_string()),
    ];
    let destination_lines: Vec<String> = run
        .destinations
        .iter()
        .map(|(destination, planned)| format!("• `{destination}`: {planned} images planned"))
        .collect();
    let (texts, left_out) = pack_lines(&destination_lines, TEXT_MAX_CHARS, 3);
    let mut blocks = vec![
        header(&format!("{} {}", emoji(severity), notification.headline())),
        json!({ "type": "section", "fields": fields }),
    ];
    blocks.extend(texts.iter().map(|t| section(t)));
    if left_out > 0 {
        blocks.push(context(&format!("… and {left_out} more destinations")));
    }
    blocks.push(context(&format!(
        "replwatch · backfill `{}` · started {}",
        escape(&run.id),
        run.started_at.to_rfc3339()
    )));
    blocks
}

fn header(text: &str) -> Value {
    json!({
        "type": "header",
        "text": { "type": "plain_text", "text": truncate_chars(text, HEADER_MAX_CHARS), "emoji": true },
    })
}

fn mrkdwn(text: &str, max: usize) -> Value {
    json!({ "type": "mrkdwn", "text": truncate_chars(text, max) })
}

fn section(text: &str) -> Value {
    json!({ "type": "section", "text": mrkdwn(text, TEXT_MAX_CHARS) })
}

fn context(text: &str) -> Value {
    json!({ "type": "context", "elements": [mrkdwn(text, TEXT_MAX_CHARS)] })
}

/// `&`, `<` and `>` escaped, as Slack wants them in text it formats.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn single_blocks(notification: &Notification, alert: &Alert) -> Vec<Value> {
    let severity = notification.severity();
    let image = &alert.key.image;
    let title = notification.headline();
    let field = |name: &str, value: String| mrkdwn(&format!("*{name}*\n{value}"), FIELD_MAX_CHARS);
    let mut fields = vec![
        field(
            "Image",
            format!(
                "`{}`\n`{}`",
                escape(image.repository.as_str()),
                image.digest
            ),
        ),
        field(
            "Tag",
            alert
                .key
                .tag
                .as_deref()
                .map(|t| format!("`{}`", escape(t)))
                .unwrap_or_else(|| format!("(untagged, {})", image.digest.short())),
        ),
        field(
            "Source",
            format!("{}\n{}", image.registry.region, image.registry.registry_id),
        ),
        field(
            "Destination",
            format!(
                "{}\n{}",
                alert.key.destination.region, alert.key.destination.registry_id
            ),
        ),
        field("State", format!("`{}`", alert.kind.as_str())),
    ];
    if let Some(age) = alert.age() {
        fields.push(field("Age", human_duration(age)));
    }
    if let Some(code) = &alert.failure_code {
        fields.push(field("Failure code", format!("`{}`", escape(code))));
    }
    if let Some(unreadable) = &alert.unreadable {
        let failure = &unreadable.failure;
        fields.push(field(
            "Unreadable",
            format!(
                "{} {}\n`{}`",
                failure.location.region,
                failure.location.registry_id,
                failure.kind.as_str()
            ),
        ));
        fields.push(field(
            "Failing call",
            format!(
                "`{}`: {}",
                escape(&failure.operation),
                escape(&failure.error)
            ),
        ));
    } else if let Some(incident) = &alert.incident {
        fields.push(field(
            "In the destination",
            alert
                .tag_held_by
                .as_ref()
                .map_or("nothing".to_owned(), |d| format!("`{d}`")),
        ));
        fields.push(field(
            "Cause",
            escape(replwatch_core::alerts::cause_sentence(incident.cause)),
        ));
    } else {
        fields.push(field("Pushed", alert.key.occurrence.to_rfc3339()));
    }
    fields.truncate(MAX_FIELDS);

    let mut button = json!({
        "type": "button",
        "text": {
            "type": "plain_text",
            "text": truncate_chars("Open in the ECR console", BUTTON_TEXT_MAX_CHARS),
            "emoji": true,
        },
        "action_id": "replwatch-open-console",
    });
    let url = alert.console_url();
    if url.chars().count() <= BUTTON_URL_MAX_CHARS {
        button["url"] = Value::String(url);
    }
    if severity == Severity::Critical {
        button["style"] = Value::String("danger".into());
    }

    let mut blocks = vec![
        header(&format!("{} {title}", emoji(severity))),
        json!({
            "type": "section",
            "text": mrkdwn(&format!("*{}*\n{}", escape(&title), escape(&alert.next_step())), TEXT_MAX_CHARS),
            "fields": fields,
        }),
        context(&format!(
            "replwatch · severity *{}* · detected {} · alert id `{}`",
            severity.as_str(),
            alert.detected_at.to_rfc3339(),
            alert.id()
        )),
    ];
    if button.get("url").is_some() {
        blocks.push(json!({ "type": "actions", "elements": [button] }));
    }
    blocks
}

/// `lines` packed, whole, into texts of at most `max` characters each, at most `max_texts`
/// of them; returns the texts and how many lines did not fit.
fn pack_lines(lines: &[String], max: usize, max_texts: usize) -> (Vec<String>, usize) {
    let mut texts: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut current_chars = 0;
    for (i, line) in lines.iter().enumerate() {
        let line = truncate_chars(line, max);
        let chars = line.chars().count();
        let sep = usize::from(!current.is_empty());
        if current_chars + sep + chars > max {
            texts.push(std::mem::take(&mut current));
            current_chars = 0;
            if texts.len() == max_texts {
                return (texts, lines.len() - i);
            }
        }
        if !current.is_empty() {
            current.push('\n');
            current_chars += 1;
        }
        current.push_str(&line);
        current_chars += chars;
    }
    if !current.is_empty() {
        if texts.len() == max_texts {
            // Cannot happen (checked before each line), but never exceed the budget.
            return (texts, 1);
        }
        texts.push(current);
    }
    (texts, 0)
}

fn summary_blocks(notification: &Notification, summary: &AlertSummary) -> Vec<Value> {
    let severity = notification.severity();
    let mut totals: std::collections::BTreeMap<&str, usize> = Default::default();
    let destination_lines: Vec<String> = summary
        .by_destination
        .iter()
        .map(|(destination, kinds)| {
            let counts: Vec<String> = kinds
                .iter()
                .map(|(kind, n)| {
                    *totals.entry(kind.as_str()).or_default() += n;
                    format!("{n} {}", kind.as_str())
                })
                .collect();
            format!("• `{destination}`: {}", counts.join(", "))
        })
        .collect();
    let totals: Vec<String> = totals.iter().map(|(k, n)| format!("{n} {k}")).collect();

    let mut blocks = vec![
        header(&format!("{} {}", emoji(severity), notification.headline())),
        section(&format!(
            "*{} replication problems* ({}) in {} destinations, detected {}.\nMany images at once usually means a Regional problem: check the AWS Health Dashboard for the destination Regions. replwatch keeps checking every image and reports each arrival.",
            summary.total,
            totals.join(", "),
            summary.by_destination.len(),
            summary.detected_at.to_rfc3339()
        )),
        json!({ "type": "divider" }),
    ];

    let example_lines: Vec<String> =
        std::iter::once(format!("*First {} of them:*", summary.examples.len()))
            .chain(summary.examples.iter().map(|a| {
                format!(
                    "• <{}|{}> → `{}`: {}",
                    a.console_url(),
                    escape(&a.image_reference()),
                    a.key.destination,
                    a.kind.as_str()
                )
            }))
            .collect();
    let (examples, _) = pack_lines(&example_lines, TEXT_MAX_CHARS, 2);

    // Whatever is left of the 50 blocks goes to the destinations: header, intro, divider,
    // the examples, the two closing contexts and a possible "more" line are already counted.
    let reserved = blocks.len() + examples.len() + 3;
    let budget = MAX_BLOCKS.saturating_sub(reserved).max(1);
    let mut lines = vec!["*Per destination:*".to_owned()];
    lines.extend(destination_lines);
    let (texts, left_out) = pack_lines(&lines, TEXT_MAX_CHARS, budget);
    blocks.extend(texts.iter().map(|t| section(t)));
    if left_out > 0 {
        blocks.push(context(&format!(
            "…and {left_out} more destinations (see the logs or the dashboard)"
        )));
    }
    blocks.extend(examples.iter().map(|t| section(t)));
    blocks.push(context(&format!(
        "replwatch · severity *{}* · {} alerts folded into one message",
        severity.as_str(),
        summary.total
    )));
    // The ids let a reader match the alerts folded here with ones seen one by one.
    blocks.push(context(&crate::sns::truncate_chars(
        &format!("alert ids: {}", summary.alert_ids.join(" ")),
        TEXT_MAX_CHARS,
    )));
    blocks
}

// ---- validation -------------------------------------------------------------------------

/// Every way `message` breaks the Block Kit rules this sink relies on (an empty list when it
/// is fine): block types `header`, `section`, `context`, `actions`, `divider` only; text
/// objects typed `plain_text` or `mrkdwn`, non-empty and within their limits; at most 50
/// blocks, 10 fields of at most 2,000 characters, 3,000 characters per text, 150 per header,
/// buttons with at most 75 characters of text.
pub fn block_kit_violations(message: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(root) = message.as_object() else {
        return vec!["the message is not a JSON object".into()];
    };
    for key in root.keys() {
        if !["text", "blocks"].contains(&key.as_str()) {
            out.push(format!("unexpected top-level field `{key}`"));
        }
    }
    match root.get("text") {
        Some(Value::String(t)) if t.chars().count() > FALLBACK_TEXT_MAX_CHARS => {
            out.push(format!("`text` has {} characters", t.chars().count()))
        }
        Some(Value::String(_)) => {}
        Some(_) => out.push("`text` is not a string".into()),
        None => out.push("no fallback `text`".into()),
    }
    let Some(blocks) = root.get("blocks") else {
        return out;
    };
    let Some(blocks) = blocks.as_array() else {
        out.push("`blocks` is not an array".into());
        return out;
    };
    if blocks.is_empty() {
        out.push("`blocks` is empty".into());
    }
    if blocks.len() > MAX_BLOCKS {
        out.push(format!("{} blocks, more than {MAX_BLOCKS}", blocks.len()));
    }
    for (i, block) in blocks.iter().enumerate() {
        check_block(&format!("blocks[{i}]"), block, &mut out);
    }
    out
}

fn check_block(at: &str, block: &Value, out: &mut Vec<String>) {
    let Some(obj) = block.as_object() else {
        out.push(format!("{at}: not an object"));
        return;
    };
    let kind = obj.get("type").and_then(Value::as_str).unwrap_or("");
    let allowed: &[&str] = match kind {
        "header" => &["type", "block_id", "text"],
        "section" => &["type", "block_id", "text", "fields"],
        "context" => &["type", "block_id", "elements"],
        "actions" => &["type", "block_id", "elements"],
        "divider" => &["type", "block_id"],
        other => {
            out.push(format!("{at}: block type {other:?} is not allowed"));
            return;
        }
    };
    unknown_keys(at, obj, allowed, out);
    if let Some(id) = obj.get("block_id") {
        check_id(&format!("{at}.block_id"), id, out);
    }
    match kind {
        "header" => match obj.get("text") {
            Some(text) => check_text(
                &format!("{at}.text"),
                text,
                &["plain_text"],
                HEADER_MAX_CHARS,
                out,
            ),
            None => out.push(format!("{at}: header without text")),
        },
        "section" => {
            let text = obj.get("text");
            let fields = obj.get("fields");
            if text.is_none() && fields.is_none() {
                out.push(format!("{at}: section without text or fields"));
            }
            if let Some(text) = text {
                check_text(
                    &format!("{at}.text"),
                    text,
                    &["plain_text", "mrkdwn"],
                    TEXT_MAX_CHARS,
                    out,
                );
            }
            if let Some(fields) = fields {
                match fields.as_array() {
                    Some(items) => {
                        if items.is_empty() || items.len() > MAX_FIELDS {
                            out.push(format!(
                                "{at}.fields: {} fields, must be 1 to {MAX_FIELDS}",
                                items.len()
                            ));
                        }
                        for (j, f) in items.iter().enumerate() {
                            check_text(
                                &format!("{at}.fields[{j}]"),
                                f,
                                &["plain_text", "mrkdwn"],
                                FIELD_MAX_CHARS,
                                out,
                            );
                        }
                    }
                    None => out.push(format!("{at}.fields: not an array")),
                }
            }
        }
        "context" => match obj.get("elements").and_then(Value::as_array) {
            Some(items) => {
                if items.is_empty() || items.len() > MAX_CONTEXT_ELEMENTS {
                    out.push(format!(
                        "{at}.elements: {} elements, must be 1 to {MAX_CONTEXT_ELEMENTS}",
                        items.len()
                    ));
                }
                for (j, e) in items.iter().enumerate() {
                    check_text(
                        &format!("{at}.elements[{j}]"),
                        e,
                        &["plain_text", "mrkdwn"],
                        TEXT_MAX_CHARS,
                        out,
                    );
                }
            }
            None => out.push(format!("{at}: context without an elements array")),
        },
        "actions" => match obj.get("elements").and_then(Value::as_array) {
            Some(items) => {
                if items.is_empty() || items.len() > MAX_ACTION_ELEMENTS {
                    out.push(format!(
                        "{at}.elements: {} elements, must be 1 to {MAX_ACTION_ELEMENTS}",
                        items.len()
                    ));
                }
                for (j, e) in items.iter().enumerate() {
                    check_button(&format!("{at}.elements[{j}]"), e, out);
                }
            }
            None => out.push(format!("{at}: actions without an elements array")),
        },
        _ => {}
    }
}

fn check_button(at: &str, button: &Value, out: &mut Vec<String>) {
    let Some(obj) = button.as_object() else {
        out.push(format!("{at}: not an object"));
        return;
    };
    if obj.get("type").and_then(Value::as_str) != Some("button") {
        out.push(format!("{at}: only buttons are allowed in actions"));
        return;
    }
    unknown_keys(
        at,
        obj,
        &["type", "text", "url", "action_id", "value", "style"],
        out,
    );
    match obj.get("text") {
        Some(text) => check_text(
            &format!("{at}.text"),
            text,
            &["plain_text"],
            BUTTON_TEXT_MAX_CHARS,
            out,
        ),
        None => out.push(format!("{at}: button without text")),
    }
    if let Some(url) = obj.get("url") {
        match url.as_str() {
            Some(u) if u.chars().count() > BUTTON_URL_MAX_CHARS => out.push(format!(
                "{at}.url: more than {BUTTON_URL_MAX_CHARS} characters"
            )),
            Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) => {
                out.push(format!("{at}.url: not an http(s) URL"))
            }
            Some(_) => {}
            None => out.push(format!("{at}.url: not a string")),
        }
    }
    if let Some(id) = obj.get("action_id") {
        check_id(&format!("{at}.action_id"), id, out);
    }
    if let Some(value) = obj.get("value") {
        match value.as_str() {
            Some(v) if v.chars().count() <= BUTTON_VALUE_MAX_CHARS => {}
            _ => out.push(format!(
                "{at}.value: not a string of at most {BUTTON_VALUE_MAX_CHARS} characters"
            )),
        }
    }
    if let Some(style) = obj.get("style")
        && !matches!(style.as_str(), Some("primary" | "danger"))
    {
        out.push(format!("{at}.style: must be primary or danger"));
    }
}

fn check_text(at: &str, text: &Value, types: &[&str], max: usize, out: &mut Vec<String>) {
    let Some(obj) = text.as_object() else {
        out.push(format!("{at}: not a text object"));
        return;
    };
    let kind = obj.get("type").and_then(Value::as_str).unwrap_or("");
    if !types.contains(&kind) {
        out.push(format!(
            "{at}: text type {kind:?}, expected one of {types:?}"
        ));
    }
    let allowed: &[&str] = if kind == "mrkdwn" {
        &["type", "text", "verbatim"]
    } else {
        &["type", "text", "emoji"]
    };
    unknown_keys(at, obj, allowed, out);
    match obj.get("text").and_then(Value::as_str) {
        Some("") => out.push(format!("{at}: empty text")),
        Some(t) if t.chars().count() > max => out.push(format!(
            "{at}: {} characters, more than {max}",
            t.chars().count()
        )),
        Some(_) => {}
        None => out.push(format!("{at}: no text string")),
    }
    for flag in ["emoji", "verbatim"] {
        if let Some(v) = obj.get(flag)
            && !v.is_boolean()
        {
            out.push(format!("{at}.{flag}: not a boolean"));
        }
    }
}

fn check_id(at: &str, id: &Value, out: &mut Vec<String>) {
    match id.as_str() {
        Some(s) if !s.is_empty() && s.chars().count() <= ID_MAX_CHARS => {}
        _ => out.push(format!(
            "{at}: must be a string of 1 to {ID_MAX_CHARS} characters"
        )),
    }
}

fn unknown_keys(at: &str, obj: &Map<String, Value>, allowed: &[&str], out: &mut Vec<String>) {
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) {
            out.push(format!("{at}: unexpected field `{key}`"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replwatch_core::alerts::fold;
    use replwatch_core::tracking::AlertKind;

    use replwatch_core::alerts::samples::sample_alert as alert;

    fn texts(v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(o) => {
                    if let Some(Value::String(t)) = o.get("text") {
                        out.push(t.clone());
                    }
                    o.values().for_each(|c| walk(c, out));
                }
                Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
                _ => {}
            }
        }
        walk(v, &mut out);
        out
    }

    #[test]
    fn a_single_alert_of_each_kind_is_valid_block_kit_with_every_fact() {
        for kind in AlertKind::ALL {
            let n = Notification::Single(alert(kind, "eu-west-1", 1));
            let m = render_message(&n);
            assert_eq!(block_kit_violations(&m), Vec::<String>::new(), "{m:#}");
            let blocks = m["blocks"].as_array().expect("blocks");
            let types: Vec<&str> = blocks
                .iter()
                .map(|b| b["type"].as_str().expect("type"))
                .collect();
            assert_eq!(types, ["header", "section", "context", "actions"]);
            assert_eq!(m["text"], n.subject());
            let fields: Vec<&str> = blocks[1]["fields"]
                .as_array()
                .expect("fields")
                .iter()
                .map(|f| f["text"].as_str().expect("text"))
                .collect();
            let names: Vec<&str> = fields
                .iter()
                .map(|f| f.lines().next().expect("name"))
                .collect();
            let incident = matches!(
                kind,
                AlertKind::TagLost | AlertKind::TagDiverged | AlertKind::Resolved
            );
            let mut want = vec!["*Image*", "*Tag*", "*Source*", "*Destination*", "*State*"];
            if incident {
                // A tag incident: what the destination's tag names, and why.
                want.extend(["*In the destination*", "*Cause*"]);
                assert!(
                    fields.iter().any(|f| f.contains("sha256:eeee")),
                    "{kind:?}: {fields:?}"
                );
            } else {
                want.push("*Age*");
                if kind == AlertKind::Failed {
                    want.push("*Failure code*");
                }
                if kind == AlertKind::Unconfirmed {
                    // The registry that cannot be read, and the call it refuses.
                    want.extend(["*Unreadable*", "*Failing call*"]);
                    assert!(
                        fields.iter().any(|f| f.contains("`AssumeRole`")),
                        "{fields:?}"
                    );
                } else {
                    want.push("*Pushed*");
                }
                assert!(fields.iter().any(|f| f.contains("31m 0s")));
            }
            assert_eq!(names, want, "{kind:?}");
            assert!(fields.contains(&format!("*State*\n`{}`", kind.as_str()).as_str()));
            let button = &blocks[3]["elements"][0];
            assert_eq!(button["url"], Value::String(n_console(&n)));
            assert_eq!(
                button.get("style").is_some(),
                matches!(kind, AlertKind::Failed | AlertKind::NotStarted)
            );
        }
    }

    #[test]
    fn a_finished_backfill_renders_as_valid_block_kit_with_its_counts() {
        let run =
            replwatch_core::alerts::samples::sample_backfill_run(&["eu-west-1", "us-east-1"], 2);
        let m = render_message(&Notification::BackfillCompleted(run));
        assert_eq!(block_kit_violations(&m), Vec::<String>::new(), "{m:#}");
        let text = m.to_string();
        assert!(
            text.contains(":warning:"),
            "failures make it a warning: {text}"
        );
        assert!(text.contains("*Failed*\\n2 images"), "{text}");
        assert!(
            text.contains("`eu-west-1/222222222222`: 10 images planned"),
            "{text}"
        );
    }

    fn n_console(n: &Notification) -> String {
        match n {
            Notification::Single(a) => a.console_url(),
            Notification::Summary(_) | Notification::BackfillCompleted(_) => String::new(),
        }
    }

    #[test]
    fn a_storm_over_sixty_destinations_stays_within_every_limit() {
        let alerts: Vec<Alert> = (0..60)
            .flat_map(|i| {
                let region = format!("xx-test-{}", i + 1);
                [
                    alert(AlertKind::Overdue, &region, i),
                    alert(AlertKind::Failed, &region, 100 + i),
                    alert(AlertKind::TagLost, &region, 200 + i),
                ]
            })
            .collect();
        let out = fold(alerts, 10);
        let m = render_message(&out[0]);
        assert_eq!(block_kit_violations(&m), Vec::<String>::new(), "{m:#}");
        let all = texts(&m).join("\n");
        for i in 1..=60 {
            assert!(
                all.contains(&format!(
                    "`xx-test-{i}/222222222222`: 1 OVERDUE, 1 FAILED, 1 TAG_LOST"
                )),
                "destination {i} missing"
            );
        }
        assert!(all.contains("180 replication problems"), "{all}");
        assert!(all.contains("First 5 of them"));
        assert!(
            m["blocks"][0]["text"]["text"]
                .as_str()
                .expect("header")
                .starts_with(":rotating_light:")
        );
    }

    #[test]
    fn thousands_of_destinations_are_cut_to_fifty_blocks_with_a_note() {
        let alerts: Vec<Alert> = (0..5000)
            .map(|i| alert(AlertKind::Overdue, &format!("xx-test-{}", i + 1), i))
            .collect();
        let out = fold(alerts, 10);
        let m = render_message(&out[0]);
        assert_eq!(block_kit_violations(&m), Vec::<String>::new());
        assert!(m["blocks"].as_array().expect("blocks").len() <= MAX_BLOCKS);
        assert!(texts(&m).iter().any(|t| t.contains("more destinations")));
    }

    #[test]
    fn long_values_are_cut_to_their_limits() {
        let mut a = alert(AlertKind::Failed, "eu-west-1", 3);
        a.key.tag = Some("t".repeat(5000));
        a.failure_code = Some("X".repeat(5000));
        let m = render_message(&Notification::Single(a));
        assert_eq!(block_kit_violations(&m), Vec::<String>::new(), "{m:#}");
        assert!(texts(&m).iter().any(|t| t.ends_with('…')));
    }

    #[test]
    fn the_validator_catches_each_broken_rule() {
        let good = render_message(&Notification::Single(alert(
            AlertKind::Failed,
            "eu-west-1",
            1,
        )));
        assert!(block_kit_violations(&good).is_empty());
        type Breaker = Box<dyn Fn(&mut Value)>;
        let broken: Vec<(&str, Breaker)> = vec![
            (
                "header",
                Box::new(|m| m["blocks"][0]["text"]["text"] = json!("h".repeat(151))),
            ),
            (
                "header",
                Box::new(|m| m["blocks"][0]["text"]["type"] = json!("mrkdwn")),
            ),
            (
                "block type",
                Box::new(|m| m["blocks"][2]["type"] = json!("image")),
            ),
            (
                "fields",
                Box::new(|m| {
                    m["blocks"][1]["fields"] =
                        json!(vec![json!({"type": "mrkdwn", "text": "x"}); 11])
                }),
            ),
            (
                "2000",
                Box::new(|m| m["blocks"][1]["fields"][0]["text"] = json!("f".repeat(2001))),
            ),
            (
                "3000",
                Box::new(|m| m["blocks"][1]["text"]["text"] = json!("s".repeat(3001))),
            ),
            (
                "75",
                Box::new(|m| m["blocks"][3]["elements"][0]["text"]["text"] = json!("b".repeat(76))),
            ),
            (
                "text type",
                Box::new(|m| m["blocks"][2]["elements"][0]["type"] = json!("markdown")),
            ),
            (
                "empty",
                Box::new(|m| m["blocks"][1]["text"]["text"] = json!("")),
            ),
            (
                "blocks",
                Box::new(|m| m["blocks"] = json!(vec![json!({"type": "divider"}); 51])),
            ),
            (
                "unexpected",
                Box::new(|m| m["blocks"][1]["accessory"] = json!({})),
            ),
            (
                "style",
                Box::new(|m| m["blocks"][3]["elements"][0]["style"] = json!("blue")),
            ),
            (
                "fallback",
                Box::new(|m| {
                    m.as_object_mut().expect("object").remove("text");
                }),
            ),
        ];
        for (what, breaker) in broken {
            let mut m = good.clone();
            breaker(&mut m);
            let v = block_kit_violations(&m);
            assert!(!v.is_empty(), "{what}: not caught");
        }
    }

    #[test]
    fn the_webhook_url_never_prints_itself() {
        let url = WebhookUrl::parse("https://hooks.slack.com/services/T000/B000/SECRETSECRET")
            .expect("url");
        assert_eq!(url.to_string(), REDACTED);
        assert_eq!(format!("{url:?}"), REDACTED);
        let notifier = SlackNotifier::new(url.clone()).expect("client");
        assert!(!format!("{notifier:?}").contains("SECRETSECRET"));
        assert_eq!(
            url.scrub("error for https://hooks.slack.com/services/T000/B000/SECRETSECRET and /services/T000/B000/SECRETSECRET and SECRETSECRET"),
            "error for https://hooks.slack.com/*** and /*** and ***"
        );
    }

    #[test]
    fn webhook_urls_must_be_https_except_on_loopback() {
        assert!(WebhookUrl::parse("https://hooks.slack.com/services/A/B/C").is_ok());
        assert!(WebhookUrl::parse("http://127.0.0.1:9/services/A/B/C").is_ok());
        assert_eq!(
            WebhookUrl::parse("http://hooks.slack.com/services/A/B/C"),
            Err(InvalidWebhookUrl::NotHttps)
        );
        assert_eq!(
            WebhookUrl::parse("https://user:pw@hooks.slack.com/x"),
            Err(InvalidWebhookUrl::HasCredentials)
        );
        let err = WebhookUrl::parse("not a url SECRETSECRET").expect_err("not a url");
        assert!(!err.to_string().contains("SECRET"), "{err}");
    }

    #[test]
    fn backoff_doubles_from_the_base_delay() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(10),
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff(1), Duration::from_millis(10));
        assert_eq!(p.backoff(2), Duration::from_millis(20));
        assert_eq!(p.backoff(3), Duration::from_millis(40));
        assert_eq!(RetryPolicy::default().backoff(3), Duration::from_secs(4));
    }

    #[test]
    fn packing_keeps_lines_whole_and_counts_what_is_left() {
        let lines: Vec<String> = (0..10).map(|i| format!("line {i:02}")).collect();
        let (texts, left) = pack_lines(&lines, 23, 2);
        assert_eq!(
            texts,
            ["line 00\nline 01\nline 02", "line 03\nline 04\nline 05"]
        );
        assert_eq!(left, 4);
        let (texts, left) = pack_lines(&lines, 1000, 1);
        assert_eq!(texts.len(), 1);
        assert_eq!(left, 0);
    }
}
