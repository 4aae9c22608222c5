//! The dead-letter queue against the local AWS (`infra/local-aws/start`), through the real
//! aws-sdk-sqs client: a parked body comes back byte for byte, with why beside it. The server
//! is shared with other tests, so each test makes its own queue.
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{Message, MessageAttributeValue};
use replwatch_aws::dead_letter::{DeadLetterError, DeadLetterQueue, MAX_REASON_BYTES};
use replwatch_aws::local;

async fn fresh_queue() -> (Client, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let endpoint = local::endpoint_from_env().unwrap_or_else(|e| panic!("{e}"));
    let config = local::sdk_config(&endpoint, "us-west-2").await;
    let client = Client::new(&config);
    let name = format!(
        "replwatch-dlq-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let url = client
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    (client, url)
}

async fn receive_one(client: &Client, url: &str) -> Message {
    let out = client
        .receive_message()
        .queue_url(url)
        .message_attribute_names("All")
        .max_number_of_messages(10)
        .wait_time_seconds(2)
        .send()
        .await
        .expect("receive");
    let mut messages = out.messages.unwrap_or_default();
    assert_eq!(
        messages.len(),
        1,
        "exactly one parked message: {messages:?}"
    );
    messages.remove(0)
}

fn string_attributes(message: &Message) -> HashMap<String, String> {
    message
        .message_attributes()
        .into_iter()
        .flatten()
        .map(|(k, v): (&String, &MessageAttributeValue)| {
            assert_eq!(v.data_type(), "String", "{k}");
            (k.clone(), v.string_value().unwrap_or_default().to_owned())
        })
        .collect()
}

/// An EventBridge event cut off mid-way, with the whitespace and non-ASCII text a re-encoder
/// would change.
const TRUNCATED: &str = "{\n  \"version\": \"0\",\n  \"id\": \"6a7e8feb-b491-4cf7-a9f1-bf3703467718\",\n  \"detail-type\": \"ECR Image Action\",\t\"detail\": {\"repository-name\": \"équipe/web\", \"image-tag\": \"v1 🚀\", \"action-type\": \"PU";

#[tokio::test]
async fn a_truncated_event_is_parked_byte_for_byte_with_its_reason_and_id() {
    let (client, url) = fresh_queue().await;
    let dlq = DeadLetterQueue::new(client.clone(), url.clone());
    let reason = format!(
        "EOF while parsing a string at line 5 column 140; {}",
        "x".repeat(3000)
    );
    dlq.park(
        TRUNCATED,
        Some("6a7e8feb-b491-4cf7-a9f1-bf3703467718"),
        &reason,
    )
    .await
    .expect("parked");

    let message = receive_one(&client, &url).await;
    assert_eq!(
        message.body().map(str::as_bytes),
        Some(TRUNCATED.as_bytes())
    );
    let attributes = string_attributes(&message);
    assert_eq!(
        attributes.get("event_id").map(String::as_str),
        Some("6a7e8feb-b491-4cf7-a9f1-bf3703467718")
    );
    let parked_reason = attributes.get("reason").expect("reason attribute");
    assert!(parked_reason.starts_with("EOF while parsing a string at line 5 column 140; xxx"));
    assert!(parked_reason.ends_with('…'), "marked as cut");
    assert!(
        parked_reason.len() <= MAX_REASON_BYTES,
        "{}",
        parked_reason.len()
    );
    assert_eq!(attributes.len(), 2, "{attributes:?}");
}

#[tokio::test]
async fn an_event_without_a_readable_id_is_parked_with_its_reason_only() {
    let (client, url) = fresh_queue().await;
    let dlq = DeadLetterQueue::new(client.clone(), url.clone());
    dlq.park("not json at all", None, "expected value at line 1 column 1")
        .await
        .expect("parked");
    let message = receive_one(&client, &url).await;
    assert_eq!(message.body(), Some("not json at all"));
    let attributes = string_attributes(&message);
    assert_eq!(
        attributes,
        HashMap::from([(
            "reason".to_owned(),
            "expected value at line 1 column 1".to_owned()
        )])
    );
}

#[tokio::test]
async fn a_missing_queue_is_reported_with_the_service_error() {
    let (client, url) = fresh_queue().await;
    let missing = format!("{url}-missing");
    let err = DeadLetterQueue::new(client, missing.clone())
        .park("{}", None, "test")
        .await
        .expect_err("no such queue");
    match &err {
        DeadLetterError::Send { queue_url, message } => {
            assert_eq!(queue_url, &missing);
            assert!(
                message.contains("NonExistentQueue") || message.contains("QueueDoesNotExist"),
                "the service's code: {message}"
            );
        }
        other => panic!("expected a send error, got {other}"),
    }
}

#[tokio::test]
async fn a_body_sqs_would_refuse_is_an_error_not_a_silent_change() {
    let (client, url) = fresh_queue().await;
    let err = DeadLetterQueue::new(client, url)
        .park("{\"a\":\u{0}", None, "NUL in body")
        .await
        .expect_err("SQS refuses NUL");
    assert!(matches!(err, DeadLetterError::Unsendable(_)), "{err}");
}
