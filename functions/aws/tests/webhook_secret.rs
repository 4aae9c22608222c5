//! Webhook URL resolution against the local AWS (`infra/local-aws/start`), through the real
//! Secrets Manager and SSM clients: a secret holding the URL, one holding JSON, a SecureString
//! parameter by name and by ARN, and a missing secret; the Slack sink reading its webhook when
//! first needed, backing off while it cannot, and picking up a restored or rotated one. The
//! server is shared with other tests, so every name is unique to this run.
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};

use aws_config::SdkConfig;
use chrono::{TimeDelta, Utc};
use replwatch_aws::local;
use replwatch_aws::webhook_secret::{
    FIRST_REREAD_AFTER, SlackWebhook, WebhookSecretError, resolve_webhook_url,
};

async fn config() -> SdkConfig {
    let endpoint = local::endpoint_from_env().unwrap_or_else(|e| panic!("{e}"));
    local::sdk_config(&endpoint, "us-west-2").await
}

fn unique(label: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "replwatch-webhook-test-{label}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn url(secret: &str) -> String {
    format!("https://hooks.slack.com/services/T000/B000/{secret}")
}

async fn secret(config: &SdkConfig, value: &str) -> String {
    aws_sdk_secretsmanager::Client::new(config)
        .create_secret()
        .name(unique("secret"))
        .secret_string(value)
        .send()
        .await
        .expect("create secret")
        .arn
        .expect("secret arn")
}

#[tokio::test]
async fn a_secret_holding_the_url_itself() {
    let config = config().await;
    let arn = secret(&config, &url("RAWSECRET1")).await;
    let resolved = resolve_webhook_url(&config, &arn).await.expect("resolved");
    assert_eq!(resolved.expose_secret(), url("RAWSECRET1"));
    assert!(!format!("{resolved:?} {resolved}").contains("RAWSECRET1"));
}

#[tokio::test]
async fn a_secret_holding_json_with_the_url() {
    let config = config().await;
    let arn = secret(
        &config,
        &format!(
            r#"{{"url": "{}", "channel": "alerts"}}"#,
            url("JSONSECRET2")
        ),
    )
    .await;
    let resolved = resolve_webhook_url(&config, &arn).await.expect("resolved");
    assert_eq!(resolved.expose_secret(), url("JSONSECRET2"));
}

#[tokio::test]
async fn a_secure_string_parameter_by_name_and_by_arn() {
    let config = config().await;
    let ssm = aws_sdk_ssm::Client::new(&config);
    let name = format!("/replwatch/test/{}", unique("param"));
    ssm.put_parameter()
        .name(&name)
        .value(url("PARAMSECRET3"))
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("put parameter");
    let by_name = resolve_webhook_url(&config, &name)
        .await
        .expect("resolved by name");
    assert_eq!(by_name.expose_secret(), url("PARAMSECRET3"));

    let arn = ssm
        .get_parameter()
        .name(&name)
        .send()
        .await
        .expect("get parameter")
        .parameter
        .and_then(|p| p.arn)
        .expect("parameter arn");
    assert!(arn.starts_with("arn:aws:ssm:us-west-2:"), "{arn}");
    let by_arn = resolve_webhook_url(&config, &arn)
        .await
        .expect("resolved by arn");
    assert_eq!(by_arn.expose_secret(), url("PARAMSECRET3"));
}

#[tokio::test]
async fn a_missing_secret_names_the_reference_and_why() {
    let config = config().await;
    let arn = format!(
        "arn:aws:secretsmanager:us-west-2:123456789012:secret:{}-AbCdEf",
        unique("missing")
    );
    let err = resolve_webhook_url(&config, &arn)
        .await
        .expect_err("no such secret");
    let text = err.to_string();
    assert!(text.contains(&arn), "{text}");
    assert!(text.contains("GetSecretValue"), "{text}");
    assert!(text.contains("ResourceNotFoundException"), "{text}");
    assert!(matches!(err, WebhookSecretError::Fetch { .. }), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_missing_parameter_names_the_reference_and_why() {
    let config = config().await;
    let name = format!("/replwatch/test/{}", unique("missing"));
    let err = resolve_webhook_url(&config, &name)
        .await
        .expect_err("no such parameter");
    let text = err.to_string();
    assert!(text.contains(&name), "{text}");
    assert!(text.contains("ParameterNotFound"), "{text}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_secret_without_a_url_says_so_without_quoting_it() {
    let config = config().await;
    let arn = secret(&config, r#"{"token": "VALUESECRET4"}"#).await;
    let err = resolve_webhook_url(&config, &arn)
        .await
        .expect_err("no url in it");
    let text = err.to_string();
    assert!(text.contains(&arn), "{text}");
    assert!(text.contains("`url` or `webhook_url`"), "{text}");
    assert!(!text.contains("VALUESECRET4"), "{text}");
}

/// The parameter is missing when the first alert needs Slack: no notifier, and no read again
/// before the backoff; once the parameter exists and the backoff passed, the notifier is there
/// and kept; a URL forgotten after Slack refused it is read again, the rotated one.
#[tokio::test]
async fn the_slack_webhook_is_read_when_needed_again_after_a_backoff_and_after_a_refusal() {
    let config = config().await;
    let ssm = aws_sdk_ssm::Client::new(&config);
    let name = format!("/replwatch/test/{}", unique("lazy"));
    let put = |value: String| {
        ssm.put_parameter()
            .name(&name)
            .value(value)
            .overwrite(true)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
    };
    // Building it reads nothing: a missing parameter is no error yet.
    let webhook = SlackWebhook::new(config.clone(), name.clone());
    let start = Utc::now();

    let unavailable = webhook.notifier(start).await.expect_err("no parameter yet");
    assert!(
        unavailable.reason.contains("ParameterNotFound"),
        "{unavailable}"
    );
    assert_eq!(unavailable.failures, 1);
    assert_eq!(unavailable.retry_at, start + FIRST_REREAD_AFTER);

    put(url("LAZYSECRET5")).await.expect("put parameter");
    // Within the backoff the parameter is not read again.
    let waiting = webhook
        .notifier(start + TimeDelta::seconds(10))
        .await
        .expect_err("still backing off");
    assert_eq!(waiting, unavailable);

    let later = start + FIRST_REREAD_AFTER;
    let notifier = webhook
        .notifier(later)
        .await
        .expect("read after the backoff");
    assert!(format!("{notifier:?}").contains("hooks.slack.com/***"));
    assert!(!format!("{notifier:?}").contains("LAZYSECRET5"));

    // Kept: a parameter gone now does not matter until Slack refuses the URL.
    ssm.delete_parameter()
        .name(&name)
        .send()
        .await
        .expect("delete");
    webhook.notifier(later).await.expect("kept");
    webhook.forget().await;
    let gone = webhook.notifier(later).await.expect_err("read again, gone");
    assert!(gone.reason.contains("ParameterNotFound"), "{gone}");
    assert_eq!(
        gone.failures, 1,
        "a fresh read after a refusal starts a new backoff"
    );
}
