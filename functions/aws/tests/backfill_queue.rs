//! The copy-jobs queue on SQS (local AWS): every job arrives once, as JSON `backfill-copy`
//! reads back, across several `SendMessageBatch` calls.
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use replwatch_aws::backfill_queue::BackfillJobQueue;
use replwatch_core::backfill::CopyJob;
use replwatch_core::backfill::fanout::{CopyJobQueue, CopyMessage};

#[tokio::test]
async fn every_job_is_queued_once_whatever_the_batch_size() {
    let account = support::unique_account();
    let config = support::config(&account, "us-west-2").await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("jobs-{account}"))
        .send()
        .await
        .expect("queue created")
        .queue_url()
        .expect("queue url")
        .to_owned();
    let messages: Vec<CopyMessage> = (0..23)
        .map(|n| CopyMessage {
            run_id: "run-1".into(),
            job: CopyJob {
                source: support::destination("us-west-2", &account),
                source_repository: support::repository("team-a/app"),
                destination: support::destination("eu-west-1", "222222222222"),
                destination_repository: support::repository("team-a/app"),
                digest: support::digest(&support::sha256_digest(format!("image {n}").as_bytes())),
                tags: vec![format!("v{n}")],
                subject: None,
            },
        })
        .collect();

    BackfillJobQueue::new(sqs.clone(), &queue_url)
        .enqueue(&messages)
        .await
        .expect("enqueued");

    let mut received: Vec<CopyMessage> = Vec::new();
    loop {
        let answer = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("received");
        if answer.messages().is_empty() {
            break;
        }
        for message in answer.messages() {
            received
                .push(serde_json::from_str(message.body().expect("body")).expect("a copy message"));
        }
    }
    received.sort_by(|a, b| a.job.tags.cmp(&b.job.tags));
    let mut expected = messages.clone();
    expected.sort_by(|a, b| a.job.tags.cmp(&b.job.tags));
    assert_eq!(received, expected);
}

#[tokio::test]
async fn a_missing_queue_is_an_error_naming_it() {
    let account = support::unique_account();
    let config = support::config(&account, "us-west-2").await;
    let queue_url = format!("{}/{account}/no-such-queue", support::endpoint());
    let error = BackfillJobQueue::new(aws_sdk_sqs::Client::new(&config), &queue_url)
        .enqueue(&[CopyMessage {
            run_id: "run-1".into(),
            job: CopyJob {
                source: support::destination("us-west-2", &account),
                source_repository: support::repository("app"),
                destination: support::destination("eu-west-1", &account),
                destination_repository: support::repository("app"),
                digest: support::digest(&support::sha256_digest(b"x")),
                tags: Vec::new(),
                subject: None,
            },
        }])
        .await
        .expect_err("no such queue");
    assert!(error.to_string().contains("no-such-queue"), "{error}");
}
