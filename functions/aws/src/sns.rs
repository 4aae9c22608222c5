//! The SNS sink: every notification published to one topic, as readable text or as an Amazon Q
//! Developer in chat applications (formerly AWS Chatbot) custom notification.
//!
//! Why SNS: it fans one alert out to whatever the operators subscribe (email, a chat channel
//! through Amazon Q Developer, a ticketing queue), and its subscription filter policies can
//! route on the three String message attributes every publish carries: `kind` (`OVERDUE`,
//! `FAILED`, `TAG_LOST`, `SUMMARY`), `severity` (`warning`, `critical`) and
//! `destination_region` (a Region or `multiple`). So "page on critical, mail the rest" is
//! subscription configuration, not code.
//!
//! Two formats, chosen per topic ([`SnsFormat`], `ALERT_FORMAT`):
//!
//! - [`SnsFormat::Text`]: the message is the core's readable body, the subject its one-line
//!   subject. Right for email and for queues read by people or scripts.
//! - [`SnsFormat::ChatNotification`]: the message is the custom-notification JSON that Amazon
//!   Q Developer in chat applications renders in Slack, Teams or Chime. A topic mapped to a
//!   chat channel drops any other payload silently, so this format is not optional there. The
//!   event format followed is the documented one ("Custom notifications using Amazon Q
//!   Developer in chat applications", Amazon Q Developer in chat applications administrator
//!   guide, `custom-notifs`): `version` must be `"1.0"` and `source` must be `"custom"` (the
//!   only required fields), `textType` only supports `client-markdown`, `id` is a unique event
//!   identifier, and `content` / `metadata` carry the optional title, description, next steps,
//!   keywords, thread id, summary, event type, related resources and additional context. The
//!   lengths enforced here ([`CHAT_TITLE_MAX_CHARS`] and the others) are this module's own
//!   conservative bounds: a chat message must stay readable, Slack renders a text block of at
//!   most 3,000 characters, and custom-action variables read from a notification are limited to
//!   1,024 characters each (`CustomActionAttachment.Variables`).
//!
//! The subject is made safe for SNS (no control or non-ASCII characters, fewer than 100
//! characters) whatever the core produced, because SNS refuses the whole publish otherwise.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use aws_sdk_sns::Client;

use crate::service_error::is_transient_service_error;
use aws_sdk_sns::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sns::operation::publish::PublishError;
use aws_sdk_sns::types::MessageAttributeValue;
use replwatch_core::alerts::{Alert, AlertSummary, Notification, Notifier, NotifyError};
use replwatch_core::backfill::run::BackfillRun;
use replwatch_core::model::SourceImage;
use replwatch_core::tracking::AlertKind;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

/// The sink name in [`NotifyError`]s.
pub const SINK: &str = "sns";
/// The attribute carrying [`Notification::kind`].
pub const KIND_ATTRIBUTE: &str = "kind";
/// The attribute carrying [`Notification::severity`].
pub const SEVERITY_ATTRIBUTE: &str = "severity";
/// The attribute carrying [`Notification::destination_region`].
pub const DESTINATION_REGION_ATTRIBUTE: &str = "destination_region";
/// The attribute carrying [`Notification::id`]: the same on every delivery attempt, so a
/// subscriber can drop a repeat.
pub const ALERT_ID_ATTRIBUTE: &str = "alert_id";

/// The longest message sent, in bytes: SNS takes at most 262,144 bytes, message attributes
/// included, so 4 KiB are left for them and the subject.
pub const MESSAGE_MAX_BYTES: usize = 256 * 1024 - 4096;
/// The longest chat notification title kept.
pub const CHAT_TITLE_MAX_CHARS: usize = 250;
/// The longest chat notification description kept (one Slack text block).
pub const CHAT_DESCRIPTION_MAX_CHARS: usize = 3000;
/// The longest single next step kept.
pub const CHAT_NEXT_STEP_MAX_CHARS: usize = 500;
/// The longest `metadata.summary` kept.
pub const CHAT_SUMMARY_MAX_CHARS: usize = 250;
/// The longest `metadata.additionalContext` value kept (the custom-action variable limit).
pub const CHAT_CONTEXT_VALUE_MAX_CHARS: usize = 1024;
/// At most this many related resources are listed.
pub const CHAT_MAX_RELATED_RESOURCES: usize = 10;

/// What an SNS message looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnsFormat {
    /// The readable body, for email and people.
    Text,
    /// The Amazon Q Developer in chat applications custom-notification JSON.
    ChatNotification,
}

/// `ALERT_FORMAT` was neither `text` nor `chat`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown SNS alert format {0:?}: expected `text` or `chat`")]
pub struct UnknownFormat(pub String);

impl FromStr for SnsFormat {
    type Err = UnknownFormat;

    /// `text`, or `chat` (also `chatbot`), as `ALERT_FORMAT` says; case-insensitive.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(SnsFormat::Text),
            "chat" | "chatbot" => Ok(SnsFormat::ChatNotification),
            _ => Err(UnknownFormat(value.to_owned())),
        }
    }
}

impl fmt::Display for SnsFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SnsFormat::Text => "text",
            SnsFormat::ChatNotification => "chat",
        })
    }
}

/// Publishes notifications to one SNS topic.
#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: Client,
    topic_arn: String,
    format: SnsFormat,
}

impl SnsNotifier {
    pub fn new(client: Client, topic_arn: impl Into<String>, format: SnsFormat) -> Self {
        Self {
            client,
            topic_arn: topic_arn.into(),
            format,
        }
    }

    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }

    pub fn format(&self) -> SnsFormat {
        self.format
    }
}

impl Notifier for SnsNotifier {
    async fn notify(&self, notification: &Notification) -> Result<(), NotifyError> {
        let message = render_message(notification, self.format);
        let subject = notification.subject();
        let output = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(subject)
            .message(message)
            .message_attributes(KIND_ATTRIBUTE, string_attribute(notification.kind())?)
            .message_attributes(
                SEVERITY_ATTRIBUTE,
                string_attribute(notification.severity().as_str())?,
            )
            .message_attributes(
                DESTINATION_REGION_ATTRIBUTE,
                string_attribute(&notification.destination_region())?,
            )
            .message_attributes(ALERT_ID_ATTRIBUTE, string_attribute(&notification.id())?)
            .send()
            .await
            .map_err(|e| publish_error(&self.topic_arn, e))?;
        tracing::info!(
            sink = SINK,
            topic_arn = %self.topic_arn,
            format = %self.format,
            kind = notification.kind(),
            severity = notification.severity().as_str(),
            alert_id = %notification.id(),
            message_id = output.message_id().unwrap_or_default(),
            "alert published"
        );
        Ok(())
    }
}

/// The message body in `format`.
pub fn render_message(notification: &Notification, format: SnsFormat) -> String {
    match format {
        SnsFormat::Text => fit_message(notification.body(), MESSAGE_MAX_BYTES),
        // Every text inside is bounded, so the JSON is far below the limit and stays whole.
        SnsFormat::ChatNotification => chat_notification(notification).to_string(),
    }
}

/// `text` within `max_bytes`: cut after the last whole line that fits, with a note saying so,
/// so a summary of a huge storm is still delivered instead of refused.
pub fn fit_message(text: String, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text;
    }
    let note = format!(
        "\n…cut: the whole text had {} bytes, more than SNS takes.\n",
        text.len()
    );
    let mut cut = max_bytes.saturating_sub(note.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let kept = match text[..cut].rfind('\n') {
        Some(at) => &text[..at],
        None => &text[..cut],
    };
    format!("{kept}{note}")
}

/// The Amazon Q Developer in chat applications custom notification for `notification`.
pub fn chat_notification(notification: &Notification) -> Value {
    match notification {
        Notification::Single(alert) => chat_single(notification, alert),
        Notification::Summary(summary) => chat_summary(notification, summary),
        Notification::BackfillCompleted(run) => chat_backfill(notification, run),
    }
}

fn chat_backfill(notification: &Notification, run: &BackfillRun) -> Value {
    let severity = notification.severity();
    let title = format!(
        "{} {}",
        severity_emoji(notification),
        notification.headline()
    );
    let mut lines = vec![
        format!(
            "*Backfill* `{}` of `{}`: {} of {} images copied, {} failed, {:.1} MiB uploaded.",
            run.id,
            run.source,
            run.copied,
            run.planned,
            run.failed,
            run.bytes_uploaded as f64 / 1_048_576.0
        ),
        String::new(),
        "*Destinations:*".to_owned(),
    ];
    for (destination, planned) in &run.destinations {
        lines.push(format!("• `{destination}`: {planned} images planned"));
    }
    let description = join_within(&lines, CHAT_DESCRIPTION_MAX_CHARS);
    let mut context = Map::new();
    let mut put = |key: &str, value: String| {
        context.insert(
            key.to_owned(),
            Value::String(truncate_chars(&value, CHAT_CONTEXT_VALUE_MAX_CHARS)),
        );
    };
    put("kind", notification.kind().to_owned());
    put("severity", severity.as_str().to_owned());
    put("runId", run.id.clone());
    put("planned", run.planned.to_string());
    put("copied", run.copied.to_string());
    put("failed", run.failed.to_string());
    put("bytesUploaded", run.bytes_uploaded.to_string());
    let mut next_steps = Vec::new();
    if run.failed > 0 {
        next_steps.push(truncate_chars(
            "Run `replwatch backfill --dry-run` to see what is still missing; a rerun copies only that.",
            CHAT_NEXT_STEP_MAX_CHARS,
        ));
    }
    json!({
        "version": "1.0",
        "source": "custom",
        "id": notification.id(),
        "content": {
            "textType": "client-markdown",
            "title": truncate_chars(&title, CHAT_TITLE_MAX_CHARS),
            "description": truncate_chars(&description, CHAT_DESCRIPTION_MAX_CHARS),
            "nextSteps": next_steps,
            "keywords": ["replwatch", "BACKFILL", severity.as_str()],
        },
        "metadata": {
            "summary": truncate_chars(&notification.subject(), CHAT_SUMMARY_MAX_CHARS),
            "eventType": event_type(notification),
            "relatedResources": Vec::<String>::new(),
            "additionalContext": Value::Object(context),
        },
    })
}

fn chat_single(notification: &Notification, alert: &Alert) -> Value {
    let severity = notification.severity();
    let image = &alert.key.image;
    let title = format!(
        "{} {}",
        severity_emoji(notification),
        notification.headline()
    );

    let mut description = format!(
        "*{}* → `{}` ({})\n",
        alert.image_reference(),
        alert.key.destination.region,
        alert.key.destination.registry_id
    );
    description.push_str(&format!("*Image:* `{}`\n", image.digest));
    description.push_str(&format!(
        "*Tag:* {}\n",
        alert
            .key
            .tag
            .as_deref()
            .map(|t| format!("`{t}`"))
            .unwrap_or_else(|| "(untagged)".to_owned())
    ));
    description.push_str(&format!("*Repository:* `{}`\n", image.repository));
    description.push_str(&format!(
        "*Source:* {} ({})\n",
        image.registry.region, image.registry.registry_id
    ));
    description.push_str(&format!(
        "*Destination:* {} ({})\n",
        alert.key.destination.region, alert.key.destination.registry_id
    ));
    description.push_str(&format!("*State:* {}\n", alert.kind.as_str()));
    if let Some(age) = alert.age() {
        description.push_str(&format!(
            "*Age:* {}\n",
            replwatch_core::alerts::human_duration(age)
        ));
    }
    if let Some(code) = &alert.failure_code {
        description.push_str(&format!("*Failure code:* `{code}`\n"));
    }
    if let Some(incident) = &alert.incident {
        description.push_str(&format!(
            "*Cause:* {}\n*In the destination:* {}\n*Open since:* {}\n",
            replwatch_core::alerts::cause_sentence(incident.cause),
            alert
                .tag_held_by
                .as_ref()
                .map_or("nothing".to_owned(), |d| format!("`{d}`")),
            incident.opened_at.to_rfc3339()
        ));
        if let Some(reason) = incident.resolution {
            description.push_str(&format!("*Resolved:* {}\n", reason.describe()));
        }
    }
    description.push_str(&format!("*Detected:* {}", alert.detected_at.to_rfc3339()));

    let mut context = Map::new();
    let mut put = |key: &str, value: String| {
        context.insert(
            key.to_owned(),
            Value::String(truncate_chars(&value, CHAT_CONTEXT_VALUE_MAX_CHARS)),
        );
    };
    put("kind", alert.kind.as_str().to_owned());
    put("severity", severity.as_str().to_owned());
    put("alertId", alert.id());
    put("repository", image.repository.to_string());
    if let Some(tag) = &alert.key.tag {
        put("tag", tag.clone());
    }
    put("digest", image.digest.to_string());
    put("sourceRegion", image.registry.region.to_string());
    put("sourceAccount", image.registry.registry_id.to_string());
    put(
        "destinationRegion",
        alert.key.destination.region.to_string(),
    );
    put(
        "destinationAccount",
        alert.key.destination.registry_id.to_string(),
    );
    if let Some(code) = &alert.failure_code {
        put("failureCode", code.clone());
    }
    if alert.incident.is_none() {
        put("pushedAt", alert.key.occurrence.to_rfc3339());
    }
    if let Some(incident) = &alert.incident {
        put("cause", incident.cause.as_str().to_owned());
        put("incidentOpenedAt", incident.opened_at.to_rfc3339());
        if let Some(found) = &alert.tag_held_by {
            put("destinationDigest", found.to_string());
        }
        if let Some(reason) = incident.resolution {
            put("resolution", reason.as_str().to_owned());
        }
    }
    if let Some(age) = alert.age() {
        put("ageSeconds", age.num_seconds().to_string());
    }
    put("detectedAt", alert.detected_at.to_rfc3339());
    put("consoleUrl", alert.console_url());

    json!({
        "version": "1.0",
        "source": "custom",
        "id": notification.id(),
        "content": {
            "textType": "client-markdown",
            "title": truncate_chars(&title, CHAT_TITLE_MAX_CHARS),
            "description": truncate_chars(&description, CHAT_DESCRIPTION_MAX_CHARS),
            "nextSteps": [
                truncate_chars(&alert.next_step(), CHAT_NEXT_STEP_MAX_CHARS),
                truncate_chars(
                    &format!("Open the image in the ECR console: {}", alert.console_url()),
                    CHAT_NEXT_STEP_MAX_CHARS,
                ),
            ],
            "keywords": [
                "replwatch",
                alert.kind.as_str(),
                severity.as_str(),
                alert.key.destination.region.as_str(),
            ],
        },
        "metadata": {
            // One thread per push × destination: a later alert for the same push (overdue,
            // then failed) lands under the first one; one per tag incident: its resolution
            // lands under its opening.
            "threadId": match &alert.incident {
                Some(incident) => stable_id(
                    "incident",
                    &format!(
                        "{}|{}|{}|{}|{}",
                        image.registry,
                        image.repository,
                        alert.key.tag.as_deref().unwrap_or(""),
                        alert.key.destination,
                        incident.opened_at.to_rfc3339()
                    ),
                ),
                None => stable_id(
                    "item",
                    &format!(
                        "{}|{}|{}|{}",
                        image,
                        alert.key.tag.as_deref().unwrap_or(""),
                        alert.key.destination,
                        alert.key.occurrence.to_rfc3339()
                    ),
                ),
            },
            "summary": truncate_chars(&notification.subject(), CHAT_SUMMARY_MAX_CHARS),
            "eventType": event_type(notification),
            "relatedResources": [
                repository_arn(image),
                destination_repository_arn(alert),
            ],
            "additionalContext": Value::Object(context),
        },
    })
}

fn chat_summary(notification: &Notification, summary: &AlertSummary) -> Value {
    let severity = notification.severity();
    let title = format!(
        "{} {}",
        severity_emoji(notification),
        notification.headline()
    );

    let mut lines = vec![
        format!(
            "*{} replication problems* detected at {}.",
            summary.total,
            summary.detected_at.to_rfc3339()
        ),
        String::new(),
        "*Per destination:*".to_owned(),
    ];
    let mut totals: BTreeMap<AlertKind, usize> = BTreeMap::new();
    for (destination, kinds) in &summary.by_destination {
        let counts: Vec<String> = kinds
            .iter()
            .map(|(kind, n)| {
                *totals.entry(*kind).or_default() += n;
                format!("{n} {}", kind.as_str())
            })
            .collect();
        lines.push(format!("• `{destination}`: {}", counts.join(", ")));
    }
    lines.push(String::new());
    lines.push(format!("*First {} of them:*", summary.examples.len()));
    for a in &summary.examples {
        lines.push(format!(
            "• {} → `{}`: {}",
            a.image_reference(),
            a.key.destination,
            a.kind.as_str()
        ));
    }
    let description = join_within(&lines, CHAT_DESCRIPTION_MAX_CHARS);

    let mut context = Map::new();
    context.insert("kind".into(), Value::String("SUMMARY".into()));
    context.insert("severity".into(), Value::String(severity.as_str().into()));
    context.insert("total".into(), Value::String(summary.total.to_string()));
    context.insert(
        "alertIds".into(),
        Value::String(truncate_chars(
            &summary.alert_ids.join(" "),
            CHAT_CONTEXT_VALUE_MAX_CHARS,
        )),
    );
    context.insert(
        "destinations".into(),
        Value::String(summary.by_destination.len().to_string()),
    );
    for (kind, n) in &totals {
        context.insert(
            format!("count{}", camel_kind(*kind)),
            Value::String(n.to_string()),
        );
    }
    context.insert(
        "detectedAt".into(),
        Value::String(summary.detected_at.to_rfc3339()),
    );

    let mut related: Vec<String> = Vec::new();
    for a in &summary.examples {
        let arn = repository_arn(&a.key.image);
        if !related.contains(&arn) {
            related.push(arn);
        }
    }
    related.truncate(CHAT_MAX_RELATED_RESOURCES);

    let mut keywords = vec!["replwatch".to_owned(), "SUMMARY".to_owned()];
    keywords.push(severity.as_str().to_owned());
    keywords.extend(totals.keys().map(|k| k.as_str().to_owned()));

    json!({
        "version": "1.0",
        "source": "custom",
        "id": notification.id(),
        "content": {
            "textType": "client-markdown",
            "title": truncate_chars(&title, CHAT_TITLE_MAX_CHARS),
            "description": description,
            "nextSteps": [
                "Check the AWS Health Dashboard for the destination Regions: many images at once usually means a Regional problem, not an image problem.",
                "replwatch keeps checking every affected image and reports each arrival; failed ones need a new push or `replwatch backfill` once the cause is fixed.",
            ],
            "keywords": keywords,
        },
        "metadata": {
            "summary": truncate_chars(&notification.subject(), CHAT_SUMMARY_MAX_CHARS),
            "eventType": event_type(notification),
            "relatedResources": related,
            "additionalContext": Value::Object(context),
        },
    })
}

/// `ReplicationOverdue`, `ReplicationFailed`, `ReplicationTagLost` or `ReplicationSummary`:
/// letters only, so it can also name a custom-action notification type.
pub fn event_type(notification: &Notification) -> String {
    match notification {
        Notification::Single(a) => format!("Replication{}", camel_kind(a.kind)),
        Notification::Summary(_) => "ReplicationSummary".to_owned(),
        Notification::BackfillCompleted(_) => "BackfillCompleted".to_owned(),
    }
}

fn camel_kind(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::Overdue => "Overdue",
        AlertKind::Failed => "Failed",
        AlertKind::TagLost => "TagLost",
        AlertKind::NotStarted => "NotStarted",
        AlertKind::TagDiverged => "TagDiverged",
        AlertKind::Resolved => "Resolved",
        AlertKind::Unconfirmed => "Unconfirmed",
    }
}

fn severity_emoji(notification: &Notification) -> &'static str {
    match notification.severity() {
        replwatch_core::alerts::Severity::Critical => ":rotating_light:",
        replwatch_core::alerts::Severity::Warning => ":warning:",
        replwatch_core::alerts::Severity::Info => ":white_check_mark:",
    }
}

fn repository_arn(image: &SourceImage) -> String {
    format!(
        "arn:aws:ecr:{}:{}:repository/{}",
        image.registry.region, image.registry.registry_id, image.repository
    )
}

fn destination_repository_arn(alert: &Alert) -> String {
    format!(
        "arn:aws:ecr:{}:{}:repository/{}",
        alert.key.destination.region, alert.key.destination.registry_id, alert.key.image.repository
    )
}

/// `replwatch-<what>-` and 32 hex digits of the SHA-256 of `key`: stable for the same event,
/// short, and only characters any consumer accepts.
fn stable_id(what: &str, key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("replwatch-{what}-{}", hex::encode(&digest[..16]))
}

/// `lines` joined by newlines within `max` characters: when they do not all fit, the last
/// lines are replaced by a note saying how many were left out. A line is never cut in the
/// middle (half a Markdown link is worse than none) unless the first one alone is too long.
fn join_within(lines: &[String], max: usize) -> String {
    let note = |left: usize| format!("…and {left} more lines");
    let mut out = String::new();
    let mut used = 0;
    for (i, line) in lines.iter().enumerate() {
        let cost = usize::from(i > 0) + line.chars().count();
        let left_after = lines.len() - i - 1;
        let reserve = if left_after == 0 {
            0
        } else {
            1 + note(left_after).chars().count()
        };
        if used + cost + reserve > max {
            if i == 0 {
                return truncate_chars(line, max);
            }
            // The previous line reserved room for exactly this note.
            out.push('\n');
            out.push_str(&note(lines.len() - i));
            return out;
        }
        if i > 0 {
            out.push('\n');
        }
        out.push_str(line);
        used += cost;
    }
    out
}

/// `text` cut to at most `max` characters, ending in `…` when cut.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, NotifyError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| NotifyError {
            sink: SINK,
            message: format!("message attribute: {e}"),
            retryable: false,
        })
}

fn publish_error(
    topic_arn: &str,
    error: SdkError<PublishError, aws_sdk_sns::config::http::HttpResponse>,
) -> NotifyError {
    let (retryable, message) = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            (true, DisplayErrorContext(&error).to_string())
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let text = match error.code() {
                Some(_) => crate::service_error::describe(&error),
                None => format!("HTTP {status}: {}", DisplayErrorContext(&error)),
            };
            (is_transient_service_error(error.code(), status), text)
        }
        _ => (false, DisplayErrorContext(&error).to_string()),
    };
    tracing::warn!(sink = SINK, topic_arn, retryable, error = %message, "publish failed");
    NotifyError {
        sink: SINK,
        message: format!("Publish to {topic_arn} failed: {message}"),
        retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replwatch_core::alerts::fold;

    use replwatch_core::alerts::samples::sample_alert as alert;

    /// Checks the documented custom-notification schema and this module's bounds.
    fn chat_violations(v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        if v["version"] != "1.0" {
            out.push(format!("version must be \"1.0\": {}", v["version"]));
        }
        if v["source"] != "custom" {
            out.push(format!("source must be \"custom\": {}", v["source"]));
        }
        let Some(root) = v.as_object() else {
            return vec!["not an object".into()];
        };
        for key in root.keys() {
            if !["version", "source", "id", "content", "metadata"].contains(&key.as_str()) {
                out.push(format!("unknown top-level field {key}"));
            }
        }
        let content = &v["content"];
        if content["textType"] != "client-markdown" {
            out.push("textType must be client-markdown".into());
        }
        for (field, max) in [
            ("title", CHAT_TITLE_MAX_CHARS),
            ("description", CHAT_DESCRIPTION_MAX_CHARS),
        ] {
            match content[field].as_str() {
                Some(s) if !s.trim().is_empty() && s.chars().count() <= max => {}
                other => out.push(format!(
                    "content.{field} missing, empty or too long: {other:?}"
                )),
            }
        }
        for field in ["nextSteps", "keywords"] {
            match content[field].as_array() {
                Some(items)
                    if items
                        .iter()
                        .all(|i| i.as_str().is_some_and(|s| !s.is_empty())) => {}
                other => out.push(format!(
                    "content.{field} must be a list of strings: {other:?}"
                )),
            }
        }
        if let Some(obj) = content.as_object() {
            for key in obj.keys() {
                if !["textType", "title", "description", "nextSteps", "keywords"]
                    .contains(&key.as_str())
                {
                    out.push(format!("unknown content field {key}"));
                }
            }
        }
        let metadata = &v["metadata"];
        if let Some(obj) = metadata.as_object() {
            for key in obj.keys() {
                if ![
                    "threadId",
                    "summary",
                    "eventType",
                    "relatedResources",
                    "additionalContext",
                ]
                .contains(&key.as_str())
                {
                    out.push(format!("unknown metadata field {key}"));
                }
            }
        }
        for field in ["threadId", "summary", "eventType"] {
            if !metadata[field].is_null() && !metadata[field].is_string() {
                out.push(format!("metadata.{field} must be a string"));
            }
        }
        if !metadata["relatedResources"]
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string))
        {
            out.push("metadata.relatedResources must be a list of strings".into());
        }
        match metadata["additionalContext"].as_object() {
            Some(ctx) => {
                for (k, val) in ctx {
                    match val.as_str() {
                        Some(s) if s.chars().count() <= CHAT_CONTEXT_VALUE_MAX_CHARS => {}
                        _ => out.push(format!("additionalContext.{k} must be a short string")),
                    }
                }
            }
            None => out.push("metadata.additionalContext must be an object".into()),
        }
        out
    }

    #[test]
    fn a_single_alert_of_each_kind_is_a_documented_custom_notification() {
        for kind in [AlertKind::Overdue, AlertKind::Failed, AlertKind::TagLost] {
            let n = Notification::Single(alert(kind, "eu-west-1", 1));
            let v = chat_notification(&n);
            assert_eq!(chat_violations(&v), Vec::<String>::new(), "{kind:?}: {v:#}");
            assert_eq!(v["metadata"]["additionalContext"]["kind"], kind.as_str());
            let description = v["content"]["description"].as_str().expect("description");
            assert!(description.contains("team-a/web:v1"), "{description}");
            assert!(description.contains("*State:* "), "{description}");
            assert!(
                v["content"]["nextSteps"][1]
                    .as_str()
                    .expect("step")
                    .contains("console.aws.amazon.com/ecr"),
            );
            // Parses back from the published text.
            let text = render_message(&n, SnsFormat::ChatNotification);
            assert_eq!(serde_json::from_str::<Value>(&text).expect("json"), v);
        }
        let failed = chat_notification(&Notification::Single(alert(
            AlertKind::Failed,
            "eu-west-1",
            1,
        )));
        assert_eq!(failed["metadata"]["eventType"], "ReplicationFailed");
        assert_eq!(
            failed["metadata"]["additionalContext"]["failureCode"],
            "ACCESS_DENIED"
        );
        assert!(
            failed["content"]["title"]
                .as_str()
                .expect("title")
                .starts_with(":rotating_light: team-a/web:v1 replication failed")
        );
    }

    #[test]
    fn a_finished_backfill_is_a_documented_custom_notification() {
        let run = replwatch_core::alerts::samples::sample_backfill_run(&["eu-west-1"], 0);
        let n = Notification::BackfillCompleted(run);
        let v = chat_notification(&n);
        assert_eq!(chat_violations(&v), Vec::<String>::new(), "{v:#}");
        assert_eq!(v["metadata"]["eventType"], "BackfillCompleted");
        assert_eq!(v["metadata"]["additionalContext"]["copied"], "10");
        assert!(
            v["content"]["title"]
                .as_str()
                .is_some_and(|t| t.starts_with(":white_check_mark:")),
            "{v:#}"
        );
    }

    #[test]
    fn ids_are_stable_per_event_and_threads_group_one_item() {
        let overdue = chat_notification(&Notification::Single(alert(
            AlertKind::Overdue,
            "eu-west-1",
            1,
        )));
        let again = chat_notification(&Notification::Single(alert(
            AlertKind::Overdue,
            "eu-west-1",
            1,
        )));
        let failed = chat_notification(&Notification::Single(alert(
            AlertKind::Failed,
            "eu-west-1",
            1,
        )));
        let other = chat_notification(&Notification::Single(alert(
            AlertKind::Overdue,
            "eu-west-1",
            2,
        )));
        assert_eq!(overdue["id"], again["id"]);
        assert_ne!(overdue["id"], failed["id"]);
        assert_eq!(
            overdue["metadata"]["threadId"],
            failed["metadata"]["threadId"]
        );
        assert_ne!(
            overdue["metadata"]["threadId"],
            other["metadata"]["threadId"]
        );
    }

    #[test]
    fn a_large_summary_stays_within_the_bounds() {
        let regions: Vec<String> = (0..60).map(|i| format!("xx-test-{}", i + 1)).collect();
        let alerts: Vec<Alert> = regions
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                [
                    alert(AlertKind::Overdue, r, i as u32),
                    alert(AlertKind::Failed, r, 1000 + i as u32),
                ]
            })
            .collect();
        let out = fold(alerts, 10);
        let [n @ Notification::Summary(_)] = out.as_slice() else {
            panic!("one summary expected")
        };
        let v = chat_notification(n);
        assert_eq!(chat_violations(&v), Vec::<String>::new(), "{v:#}");
        let description = v["content"]["description"].as_str().expect("description");
        assert!(
            description.contains("*120 replication problems*"),
            "{description}"
        );
        assert!(
            description.contains("more lines"),
            "cut with a note: {description}"
        );
        assert_eq!(v["metadata"]["eventType"], "ReplicationSummary");
        assert_eq!(v["metadata"]["additionalContext"]["countFailed"], "60");
        assert_eq!(v["metadata"]["additionalContext"]["destinations"], "60");
    }

    #[test]
    fn a_small_summary_lists_every_destination_and_example() {
        let mut alerts: Vec<Alert> = (0..7)
            .map(|i| alert(AlertKind::Overdue, "eu-west-1", i))
            .collect();
        alerts.extend((10..13).map(|i| alert(AlertKind::TagLost, "ap-southeast-2", i)));
        let out = fold(alerts, 5);
        let v = chat_notification(&out[0]);
        assert_eq!(chat_violations(&v), Vec::<String>::new());
        let description = v["content"]["description"].as_str().expect("description");
        assert!(
            description.contains("`ap-southeast-2/222222222222`: 3 TAG_LOST"),
            "{description}"
        );
        assert!(
            description.contains("`eu-west-1/222222222222`: 7 OVERDUE"),
            "{description}"
        );
        assert!(description.contains("team-a/web:v0 → `eu-west-1/222222222222`: OVERDUE"));
        assert!(!description.contains("more lines"));
        assert!(
            v["content"]["title"]
                .as_str()
                .expect("title")
                .starts_with(":warning: ")
        );
    }

    #[test]
    fn huge_texts_are_cut_at_a_line_to_fit_sns() {
        let line = "  eu-west-1/222222222222: 7 OVERDUE, 3 FAILED\n";
        let text = line.repeat(10_000);
        let fitted = fit_message(text.clone(), MESSAGE_MAX_BYTES);
        assert!(fitted.len() <= MESSAGE_MAX_BYTES, "{}", fitted.len());
        assert!(fitted.len() > MESSAGE_MAX_BYTES - 200, "uses the room");
        assert!(fitted.contains(&format!("the whole text had {} bytes", text.len())));
        let before_note = fitted.split("\n…cut").next().expect("kept part");
        assert!(
            before_note
                .lines()
                .all(|l| l == line.trim_end_matches('\n'))
        );
        assert_eq!(fit_message("short".into(), 10), "short");
    }

    #[test]
    fn formats_parse_from_the_environment_value() {
        assert_eq!("text".parse(), Ok(SnsFormat::Text));
        assert_eq!(" Chat ".parse(), Ok(SnsFormat::ChatNotification));
        assert!("html".parse::<SnsFormat>().is_err());
    }
}
