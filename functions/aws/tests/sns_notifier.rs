//! The SNS sink against the local AWS (`infra/local-aws/start`), through the real aws-sdk-sns
//! client: a topic with an SQS queue subscribed to it (the SNS envelope, not raw delivery), so
//! the test reads exactly what a subscriber gets: subject, message and message attributes. The
//! server is shared with other tests, so each test makes its own topic and queue.
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use replwatch_aws::local;
use replwatch_aws::sns::{SnsFormat, SnsNotifier};
use replwatch_core::alerts::{Alert, Notification, Notifier, fold};
use replwatch_core::tracking::AlertKind;
use serde_json::Value;

use replwatch_core::alerts::samples::sample_alert as alert;

fn summary() -> Notification {
    let mut alerts: Vec<Alert> = (0..7)
        .map(|i| alert(AlertKind::Overdue, "eu-west-1", i))
        .collect();
    alerts.extend((10..13).map(|i| alert(AlertKind::Failed, "ap-southeast-2", i)));
    let mut out = fold(alerts, 5);
    assert_eq!(out.len(), 1);
    out.remove(0)
}

struct Fixture {
    sns: aws_sdk_sns::Client,
    sqs: aws_sdk_sqs::Client,
    topic_arn: String,
    queue_url: String,
}

async fn fixture(label: &str) -> Fixture {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let endpoint = local::endpoint_from_env().unwrap_or_else(|e| panic!("{e}"));
    let config = local::sdk_config(&endpoint, "us-west-2").await;
    let sns = aws_sdk_sns::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let name = format!(
        "replwatch-sns-test-{label}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let topic_arn = sns
        .create_topic()
        .name(&name)
        .send()
        .await
        .expect("create topic")
        .topic_arn
        .expect("topic arn");
    let queue_url = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .expect("queue arn");
    sns.subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .send()
        .await
        .expect("subscribe");
    Fixture {
        sns,
        sqs,
        topic_arn,
        queue_url,
    }
}

/// The SNS envelopes in the queue, by subject, waiting until `count` have arrived.
async fn envelopes(f: &Fixture, count: usize) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    for _ in 0..10 {
        let received = f
            .sqs
            .receive_message()
            .queue_url(&f.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for m in received.messages.unwrap_or_default() {
            let envelope: Value =
                serde_json::from_str(m.body().expect("body")).expect("SNS envelope is JSON");
            assert_eq!(envelope["Type"], "Notification", "{envelope:#}");
            assert_eq!(envelope["TopicArn"], f.topic_arn.as_str());
            let subject = envelope["Subject"].as_str().expect("subject").to_owned();
            assert!(
                out.insert(subject.clone(), envelope).is_none(),
                "delivered twice: {subject}"
            );
        }
        if out.len() >= count {
            break;
        }
    }
    assert_eq!(out.len(), count, "{:#?}", out.keys());
    out
}

fn attributes(envelope: &Value) -> HashMap<String, String> {
    envelope["MessageAttributes"]
        .as_object()
        .expect("message attributes")
        .iter()
        .map(|(k, v)| {
            assert_eq!(v["Type"], "String", "{k}");
            (k.clone(), v["Value"].as_str().expect("value").to_owned())
        })
        .collect()
}

fn expected_attributes(
    notification: &Notification,
    kind: &str,
    severity: &str,
    region: &str,
) -> HashMap<String, String> {
    let id = notification.id();
    [
        ("kind", kind),
        ("severity", severity),
        ("destination_region", region),
        ("alert_id", id.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[tokio::test]
async fn text_alerts_arrive_with_subject_body_and_filterable_attributes() {
    let f = fixture("text").await;
    let notifier = SnsNotifier::new(f.sns.clone(), f.topic_arn.clone(), SnsFormat::Text);
    let single = Notification::Single(alert(AlertKind::Failed, "eu-west-1", 1));
    let summary = summary();
    notifier.notify(&single).await.expect("publish single");
    notifier.notify(&summary).await.expect("publish summary");

    let got = envelopes(&f, 2).await;
    let single_envelope = &got["[replwatch] team-a/web:v1 replication failed to eu-west-1"];
    assert_eq!(single_envelope["Message"], single.body());
    let body = single_envelope["Message"].as_str().expect("message");
    for fact in [
        "team-a/web:v1 replication failed in eu-west-1.",
        "Pushed:      2026-11-20T10:00:00+00:00",
        "Destination: eu-west-1 (222222222222)",
        "Failure:     ACCESS_DENIED",
        "Age:         31m 0s",
        "console.aws.amazon.com/ecr/repositories/private/111111111111/team-a/web",
    ] {
        assert!(body.contains(fact), "missing {fact:?} in\n{body}");
    }
    assert_eq!(
        attributes(single_envelope),
        expected_attributes(&single, "FAILED", "critical", "eu-west-1")
    );

    let summary_envelope = &got["[replwatch] 10 replication problems in 2 destinations"];
    let body = summary_envelope["Message"].as_str().expect("message");
    assert!(
        body.contains("ap-southeast-2/222222222222: 3 FAILED"),
        "{body}"
    );
    assert!(body.contains("eu-west-1/222222222222: 7 OVERDUE"), "{body}");
    assert_eq!(
        attributes(summary_envelope),
        expected_attributes(&summary, "SUMMARY", "critical", "multiple")
    );
}

#[tokio::test]
async fn chat_alerts_arrive_as_documented_custom_notifications() {
    let f = fixture("chat").await;
    let notifier = SnsNotifier::new(
        f.sns.clone(),
        f.topic_arn.clone(),
        SnsFormat::ChatNotification,
    );
    let single = Notification::Single(alert(AlertKind::TagLost, "eu-central-1", 2));
    let summary = summary();
    notifier.notify(&single).await.expect("publish single");
    notifier.notify(&summary).await.expect("publish summary");

    let got = envelopes(&f, 2).await;
    let single_envelope = &got["[replwatch] team-a/web:v2 names another image (immutable destination) in eu-central-1"];
    let chat: Value = serde_json::from_str(single_envelope["Message"].as_str().expect("message"))
        .expect("the message is JSON");
    assert_eq!(chat["version"], "1.0");
    assert_eq!(chat["source"], "custom");
    assert_eq!(
        chat["id"].as_str(),
        Some(single.id().as_str()),
        "the alert's id"
    );
    assert_eq!(chat["content"]["textType"], "client-markdown");
    assert_eq!(
        chat["content"]["title"],
        ":warning: team-a/web:v2 names another image (immutable destination) in eu-central-1"
    );
    let description = chat["content"]["description"]
        .as_str()
        .expect("description");
    assert!(description.contains("*State:* TAG_LOST"), "{description}");
    assert!(
        description.contains("*In the destination:* `sha256:eeee"),
        "{description}"
    );
    assert!(description.contains("immutable"), "{description}");
    assert_eq!(
        chat["metadata"]["additionalContext"]["cause"],
        "IMMUTABLE_HELD"
    );
    assert!(
        chat["content"]["nextSteps"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(chat["metadata"]["eventType"], "ReplicationTagLost");
    assert_eq!(
        chat["metadata"]["additionalContext"]["destinationRegion"],
        "eu-central-1"
    );
    assert_eq!(
        attributes(single_envelope),
        expected_attributes(&single, "TAG_LOST", "warning", "eu-central-1")
    );

    let summary_envelope = &got["[replwatch] 10 replication problems in 2 destinations"];
    let chat: Value = serde_json::from_str(summary_envelope["Message"].as_str().expect("message"))
        .expect("the message is JSON");
    assert_eq!(chat["version"], "1.0");
    assert_eq!(chat["source"], "custom");
    assert_eq!(chat["content"]["textType"], "client-markdown");
    let description = chat["content"]["description"]
        .as_str()
        .expect("description");
    assert!(
        description.contains("`ap-southeast-2/222222222222`: 3 FAILED"),
        "{description}"
    );
    assert_eq!(chat["metadata"]["eventType"], "ReplicationSummary");
    assert_eq!(
        attributes(summary_envelope),
        expected_attributes(&summary, "SUMMARY", "critical", "multiple")
    );
}

#[tokio::test]
async fn a_missing_topic_is_a_non_retryable_error_naming_the_topic() {
    let endpoint = local::endpoint_from_env().unwrap_or_else(|e| panic!("{e}"));
    let config = local::sdk_config(&endpoint, "us-west-2").await;
    let topic_arn = format!(
        "arn:aws:sns:us-west-2:123456789012:replwatch-sns-test-missing-{}",
        std::process::id()
    );
    let notifier = SnsNotifier::new(
        aws_sdk_sns::Client::new(&config),
        topic_arn.clone(),
        SnsFormat::Text,
    );
    let err = notifier
        .notify(&Notification::Single(alert(
            AlertKind::Overdue,
            "eu-west-1",
            3,
        )))
        .await
        .expect_err("no such topic");
    assert_eq!(err.sink, "sns");
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains(&topic_arn), "{err}");
    assert!(err.message.contains("NotFound"), "{err}");
}
