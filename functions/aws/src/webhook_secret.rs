//! Where the Slack webhook URL comes from: Secrets Manager or SSM Parameter Store, never the
//! environment.
//!
//! Why: the URL is the credential (whoever has it can post to the channel), so it must not sit
//! in a function's environment, where anyone allowed to read the configuration sees it. The
//! function's environment holds only a reference (`SLACK_WEBHOOK_SECRET`):
//!
//! - a Secrets Manager secret ARN (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-abc123`):
//!   `GetSecretValue`; the `SecretString` is either the URL itself or JSON with a `url` or
//!   `webhook_url` string field (what the console's key/value editor produces);
//! - an SSM parameter ARN (`arn:aws:ssm:REGION:ACCOUNT:parameter/replwatch/slack`) or name
//!   (`/replwatch/slack`): `GetParameter` with decryption, so a `SecureString` works; its value
//!   is read the same way.
//!
//! An ARN in another Region is read in that Region. Errors name the reference (an ARN or a
//! parameter name, not secret) and say why, never the value; a reference that is itself a URL
//! (the webhook pasted in by mistake) is not repeated either.
//!
//! [`SlackWebhook`] is the Slack sink as the functions hold it: the URL is read when an alert
//! first needs it, not at start, so a secret that cannot be read (deleted, its key refusing,
//! Secrets Manager or SSM unavailable) never stops a function from starting or tracking; SNS
//! still delivers and the Slack deliveries stay pending. A failed read is tried again after a
//! backoff ([`reread_delay`]: 30 s doubling to 5 minutes), so a restored secret is picked up
//! within minutes without a call per alert meanwhile; a URL Slack refuses for good (a revoked
//! webhook) is dropped and read again, so a rotated secret is picked up too.

use aws_config::{Region, SdkConfig};
use chrono::{DateTime, TimeDelta, Utc};
use replwatch_core::backoff::Backoff;
use serde_json::Value;

use crate::service_error::{describe, is_transient};
use crate::slack::{SlackNotifier, WebhookUrl};

/// Where the webhook URL is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookReference {
    /// A Secrets Manager secret, by ARN, and the ARN's Region.
    SecretsManager { arn: String, region: String },
    /// An SSM parameter, by name or ARN, and the ARN's Region when given as one.
    SsmParameter {
        name: String,
        region: Option<String>,
    },
}

/// Why the webhook URL could not be had.
#[derive(Debug, thiserror::Error)]
pub enum WebhookSecretError {
    /// The reference is neither a secret ARN nor a parameter.
    #[error("webhook reference {reference}: {why}")]
    Unsupported { reference: String, why: String },
    /// The service call failed (not found, access denied, throttled, unreachable).
    #[error("webhook reference {reference}: {operation} failed: {message}")]
    Fetch {
        reference: String,
        operation: &'static str,
        message: String,
        retryable: bool,
    },
    /// The secret or parameter was read but does not hold a usable webhook URL.
    #[error("webhook reference {reference}: {why}")]
    Content { reference: String, why: String },
}

impl WebhookSecretError {
    /// Whether asking again later may work.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            WebhookSecretError::Fetch {
                retryable: true,
                ..
            }
        )
    }
}

/// How `reference` is shown in errors and logs: as it is, unless it looks like a URL.
fn shown(reference: &str) -> String {
    if reference.contains("://") || reference.contains("hooks.slack") {
        "(a URL, not shown: set a secret ARN or parameter name instead)".to_owned()
    } else {
        reference.to_owned()
    }
}

impl WebhookReference {
    pub fn parse(reference: &str) -> Result<Self, WebhookSecretError> {
        let reference = reference.trim();
        let unsupported = |why: &str| WebhookSecretError::Unsupported {
            reference: shown(reference),
            why: why.to_owned(),
        };
        if reference.is_empty() {
            return Err(unsupported("empty"));
        }
        if reference.contains("://") {
            return Err(unsupported(
                "the webhook URL itself must not be configured; store it in Secrets Manager or SSM and give its ARN or name",
            ));
        }
        if let Some(rest) = reference.strip_prefix("arn:") {
            // arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE (the resource may hold colons).
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let [_partition, service, region, _account, resource] = parts.as_slice() else {
                return Err(unsupported("not a complete ARN"));
            };
            if region.is_empty() {
                return Err(unsupported("the ARN has no Region"));
            }
            return match *service {
                "secretsmanager" if resource.starts_with("secret:") => {
                    Ok(WebhookReference::SecretsManager {
                        arn: reference.to_owned(),
                        region: (*region).to_owned(),
                    })
                }
                "ssm" if resource.starts_with("parameter/") => Ok(WebhookReference::SsmParameter {
                    name: reference.to_owned(),
                    region: Some((*region).to_owned()),
                }),
                _ => Err(unsupported(
                    "expected a Secrets Manager secret ARN (arn:aws:secretsmanager:…:secret:…) or an SSM parameter ARN (arn:aws:ssm:…:parameter/…)",
                )),
            };
        }
        if reference.chars().any(char::is_whitespace) {
            return Err(unsupported("an SSM parameter name has no spaces"));
        }
        Ok(WebhookReference::SsmParameter {
            name: reference.to_owned(),
            region: None,
        })
    }
}

/// The webhook URL that `reference` points at.
pub async fn resolve_webhook_url(
    config: &SdkConfig,
    reference: &str,
) -> Result<WebhookUrl, WebhookSecretError> {
    let parsed = WebhookReference::parse(reference)?;
    let reference = shown(reference.trim());
    let value = match &parsed {
        WebhookReference::SecretsManager { arn, region } => {
            read_secret(config, arn, region, &reference).await?
        }
        WebhookReference::SsmParameter { name, region } => {
            read_parameter(config, name, region.as_deref(), &reference).await?
        }
    };
    let url = webhook_url_from(&value).map_err(|why| WebhookSecretError::Content {
        reference: reference.clone(),
        why,
    })?;
    tracing::info!(reference = %reference, "Slack webhook URL resolved");
    Ok(url)
}

/// The first wait before a webhook that could not be read is read again.
pub const FIRST_REREAD_AFTER: TimeDelta = TimeDelta::seconds(30);
/// The longest wait between two reads of a webhook that cannot be read.
pub const MAX_REREAD_AFTER: TimeDelta = TimeDelta::minutes(5);

/// How a webhook that could not be read is read again: 30 s, doubling, at most
/// [`MAX_REREAD_AFTER`].
pub const REREAD_BACKOFF: Backoff = Backoff::new(FIRST_REREAD_AFTER, MAX_REREAD_AFTER);

/// The wait after the `failures`-th failed read in a row ([`REREAD_BACKOFF`]).
pub fn reread_delay(failures: u32) -> TimeDelta {
    REREAD_BACKOFF.after(failures)
}

/// Why Slack cannot be posted to now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Slack webhook unavailable ({failures} failed reads in a row, next read at {retry_at}): {reason}"
)]
pub struct WebhookUnavailable {
    /// The error of the last read (names the reference, never the value).
    pub reason: String,
    pub failures: u32,
    pub retry_at: DateTime<Utc>,
}

enum WebhookState {
    Unread,
    Ready(SlackNotifier),
    Unreadable(WebhookUnavailable),
}

/// The Slack sink of one function container: the webhook URL that `reference` points at, read
/// when first needed and kept.
pub struct SlackWebhook {
    config: SdkConfig,
    reference: String,
    state: tokio::sync::Mutex<WebhookState>,
}

impl SlackWebhook {
    /// Reads nothing yet.
    pub fn new(config: SdkConfig, reference: impl Into<String>) -> Self {
        Self {
            config,
            reference: reference.into(),
            state: tokio::sync::Mutex::new(WebhookState::Unread),
        }
    }

    /// The notifier for the webhook: the one read before, else read now (unless the last read
    /// failed less than its backoff before `now`).
    pub async fn notifier(&self, now: DateTime<Utc>) -> Result<SlackNotifier, WebhookUnavailable> {
        let mut state = self.state.lock().await;
        let failures = match &*state {
            WebhookState::Ready(notifier) => return Ok(notifier.clone()),
            WebhookState::Unreadable(unavailable) if now < unavailable.retry_at => {
                return Err(unavailable.clone());
            }
            WebhookState::Unreadable(unavailable) => unavailable.failures,
            WebhookState::Unread => 0,
        };
        let read = match resolve_webhook_url(&self.config, &self.reference).await {
            Ok(url) => SlackNotifier::new(url).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match read {
            Ok(notifier) => {
                if failures > 0 {
                    tracing::info!(failures, "Slack webhook readable again");
                }
                *state = WebhookState::Ready(notifier.clone());
                Ok(notifier)
            }
            Err(reason) => {
                let failures = failures + 1;
                let unavailable = WebhookUnavailable {
                    reason,
                    failures,
                    retry_at: now + reread_delay(failures),
                };
                tracing::error!(
                    error = %unavailable.reason,
                    failures,
                    retry_at = %unavailable.retry_at.to_rfc3339(),
                    "Slack webhook not read; Slack alerts stay pending"
                );
                *state = WebhookState::Unreadable(unavailable.clone());
                Err(unavailable)
            }
        }
    }

    /// Drops the URL read before (Slack refused it for good: revoked, or the channel gone), so
    /// the next alert reads the secret again and finds a rotated URL.
    pub async fn forget(&self) {
        let mut state = self.state.lock().await;
        if matches!(*state, WebhookState::Ready(_)) {
            *state = WebhookState::Unread;
        }
    }
}

async fn read_secret(
    config: &SdkConfig,
    arn: &str,
    region: &str,
    reference: &str,
) -> Result<String, WebhookSecretError> {
    const OP: &str = "GetSecretValue";
    let client = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(config)
            .region(Region::new(region.to_owned()))
            .build(),
    );
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|error| {
            let retryable = is_transient(&error);
            let message = describe(&error);
            WebhookSecretError::Fetch {
                reference: reference.to_owned(),
                operation: OP,
                message,
                retryable,
            }
        })?;
    match output.secret_string() {
        Some(s) => Ok(s.to_owned()),
        None if output.secret_binary().is_some() => Err(WebhookSecretError::Content {
            reference: reference.to_owned(),
            why: "the secret holds binary data; store the URL as SecretString".into(),
        }),
        None => Err(WebhookSecretError::Content {
            reference: reference.to_owned(),
            why: "the secret has no SecretString".into(),
        }),
    }
}

async fn read_parameter(
    config: &SdkConfig,
    name: &str,
    region: Option<&str>,
    reference: &str,
) -> Result<String, WebhookSecretError> {
    const OP: &str = "GetParameter";
    let mut builder = aws_sdk_ssm::config::Builder::from(config);
    if let Some(region) = region {
        builder = builder.region(Region::new(region.to_owned()));
    }
    let client = aws_sdk_ssm::Client::from_conf(builder.build());
    let output = client
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|error| {
            let retryable = is_transient(&error);
            let message = describe(&error);
            WebhookSecretError::Fetch {
                reference: reference.to_owned(),
                operation: OP,
                message,
                retryable,
            }
        })?;
    output
        .parameter()
        .and_then(|p| p.value())
        .map(str::to_owned)
        .ok_or_else(|| WebhookSecretError::Content {
            reference: reference.to_owned(),
            why: "the parameter has no value".into(),
        })
}

/// The URL in a secret's or parameter's value: the value itself, or the `url` / `webhook_url`
/// field of a JSON object. The error never quotes the value.
pub fn webhook_url_from(value: &str) -> Result<WebhookUrl, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("the value is empty".into());
    }
    let candidate = if value.starts_with('{') {
        let json: Value = serde_json::from_str(value).map_err(|e| {
            format!(
                "the value looks like JSON but does not parse (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        ["url", "webhook_url"]
            .iter()
            .find_map(|k| json.get(*k).and_then(Value::as_str))
            .map(str::to_owned)
            .ok_or_else(|| {
                "the value is JSON without a `url` or `webhook_url` string field".to_owned()
            })?
    } else {
        value.to_owned()
    };
    WebhookUrl::parse(&candidate).map_err(|e| format!("the value is not a usable webhook URL: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_webhooks_are_read_again_from_30_seconds_to_5_minutes() {
        let delays: Vec<i64> = (1..=6).map(|n| reread_delay(n).num_seconds()).collect();
        assert_eq!(delays, vec![30, 60, 120, 240, 300, 300]);
        assert_eq!(reread_delay(u32::MAX), MAX_REREAD_AFTER);
    }

    #[test]
    fn references_are_told_apart() {
        assert_eq!(
            WebhookReference::parse(
                "arn:aws:secretsmanager:eu-west-1:111111111111:secret:replwatch/slack-AbCdEf"
            )
            .expect("secret"),
            WebhookReference::SecretsManager {
                arn: "arn:aws:secretsmanager:eu-west-1:111111111111:secret:replwatch/slack-AbCdEf"
                    .into(),
                region: "eu-west-1".into()
            }
        );
        assert_eq!(
            WebhookReference::parse("arn:aws:ssm:us-east-1:111111111111:parameter/replwatch/slack")
                .expect("parameter arn"),
            WebhookReference::SsmParameter {
                name: "arn:aws:ssm:us-east-1:111111111111:parameter/replwatch/slack".into(),
                region: Some("us-east-1".into())
            }
        );
        assert_eq!(
            WebhookReference::parse(" /replwatch/slack ").expect("name"),
            WebhookReference::SsmParameter {
                name: "/replwatch/slack".into(),
                region: None
            }
        );
        for bad in [
            "",
            "arn:aws:s3:::bucket/key",
            "arn:aws:secretsmanager:eu-west-1:111111111111:notasecret",
            "arn:aws:ssm:eu-west-1",
            "two words",
        ] {
            assert!(WebhookReference::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_pasted_url_is_refused_without_being_repeated() {
        let err =
            WebhookReference::parse("https://hooks.slack.com/services/T000/B000/SECRETSECRET")
                .expect_err("a URL is not a reference");
        assert!(!err.to_string().contains("SECRETSECRET"), "{err}");
        assert!(err.to_string().contains("not shown"), "{err}");
    }

    #[test]
    fn values_hold_the_url_or_json_with_it() {
        let url = "https://hooks.slack.com/services/T000/B000/SECRETSECRET";
        for value in [
            url.to_owned(),
            format!("  {url}\n"),
            format!(r#"{{"url": "{url}"}}"#),
            format!(r##"{{"webhook_url": "{url}", "channel": "#alerts"}}"##),
        ] {
            assert_eq!(
                webhook_url_from(&value).expect("url").expose_secret(),
                url,
                "{value}"
            );
        }
        for value in [
            String::new(),
            r#"{"hook": "https://hooks.slack.com/services/T000/B000/SECRETSECRET"}"#.to_owned(),
            r#"{"url": "http://hooks.slack.com/services/T000/B000/SECRETSECRET"}"#.to_owned(),
            r#"{"url": "https://hooks.slack.com/SECRETSECRET"#.to_owned(),
            "SECRETSECRET".to_owned(),
        ] {
            let why = webhook_url_from(&value).expect_err("unusable");
            assert!(!why.contains("SECRETSECRET"), "{why}");
        }
    }
}
