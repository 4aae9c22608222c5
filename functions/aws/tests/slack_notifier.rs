//! The Slack sink against a fake Slack on 127.0.0.1: a minimal HTTP/1.1 server (one request
//! per connection) that records every posted body and answers from a script (200 `ok`, 429
//! with `Retry-After`, 500, 400 `invalid_blocks`). Checks that what is posted is valid Block
//! Kit, that 429 and 5xx are retried exactly as the policy says and other 4xx are not, and
//! that the webhook URL never shows up in an error or a `Debug` output.
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use replwatch_aws::slack::{RetryPolicy, SlackNotifier, WebhookUrl, block_kit_violations};
use replwatch_core::alerts::{Alert, Notification, Notifier, NotifyError, fold};
use replwatch_core::tracking::AlertKind;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET_PATH: &str = "/services/T000/B000/SECRETSECRET";

#[derive(Debug, Clone, Copy)]
enum Reply {
    Ok,
    TooManyRequests { retry_after_s: u64 },
    ServerError,
    InvalidBlocks,
}

#[derive(Debug, Clone)]
struct Request {
    path: String,
    content_type: String,
    body: String,
}

struct FakeSlack {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeSlack {
    /// Answers the scripted replies in order, then 200 to anything after them.
    async fn start(script: &[Reply]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let seen = requests.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, script) = (seen.clone(), script.clone());
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        serve_one(stream, seen, script),
                    )
                    .await;
                });
            }
        });
        Self {
            addr,
            requests,
            server,
        }
    }

    fn url(&self) -> WebhookUrl {
        WebhookUrl::parse(&format!("http://{}{SECRET_PATH}", self.addr)).expect("webhook url")
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }
}

async fn serve_one(
    mut stream: TcpStream,
    seen: Arc<Mutex<Vec<Request>>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buffer.len() > 1 << 20 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_owned();
    let mut content_length = 0usize;
    let mut content_type = String::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.trim().parse().unwrap_or(0),
                "content-type" => content_type = value.trim().to_owned(),
                _ => {}
            }
        }
    }
    while buffer.len() < head_end + content_length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buffer[head_end..head_end + content_length]).into_owned();
    seen.lock().expect("lock").push(Request {
        path,
        content_type,
        body,
    });
    let reply = script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(Reply::Ok);
    let (status, extra, text) = match reply {
        Reply::Ok => ("200 OK", String::new(), "ok"),
        Reply::TooManyRequests { retry_after_s } => (
            "429 Too Many Requests",
            format!("Retry-After: {retry_after_s}\r\n"),
            "rate_limited",
        ),
        Reply::ServerError => ("500 Internal Server Error", String::new(), "rollup_error"),
        Reply::InvalidBlocks => ("400 Bad Request", String::new(), "invalid_blocks"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        max_retry_after: Duration::from_secs(30),
        request_timeout: Duration::from_secs(5),
    }
}

use replwatch_core::alerts::samples::sample_alert as alert;

fn failed() -> Notification {
    Notification::Single(alert(AlertKind::Failed, "eu-west-1", 1))
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains("SECRETSECRET") && !text.contains("/services/T000"),
        "{what} leaks the webhook URL: {text}"
    );
}

fn assert_error_hides_url(err: &NotifyError) {
    assert_no_secret("error Display", &err.to_string());
    assert_no_secret("error Debug", &format!("{err:?}"));
}

#[tokio::test]
async fn a_single_alert_is_posted_once_as_valid_block_kit() {
    let slack = FakeSlack::start(&[Reply::Ok]).await;
    let notifier = SlackNotifier::with_retry(slack.url(), fast_retries()).expect("client");
    notifier.notify(&failed()).await.expect("delivered");

    let requests = slack.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, SECRET_PATH);
    assert!(
        requests[0].content_type.starts_with("application/json"),
        "{}",
        requests[0].content_type
    );
    let message: Value = serde_json::from_str(&requests[0].body).expect("JSON body");
    assert_eq!(
        block_kit_violations(&message),
        Vec::<String>::new(),
        "{message:#}"
    );
    assert_eq!(
        message["text"],
        "[replwatch] team-a/web:v1 replication failed to eu-west-1"
    );
    assert_eq!(message["blocks"][0]["type"], "header");
    assert_eq!(message["blocks"][3]["type"], "actions");
    assert!(
        message["blocks"][3]["elements"][0]["url"]
            .as_str()
            .expect("button url")
            .starts_with("https://us-west-2.console.aws.amazon.com/ecr/")
    );
    assert!(requests[0].body.contains("ACCESS_DENIED"));
}

#[tokio::test]
async fn a_large_summary_is_posted_as_valid_block_kit() {
    let slack = FakeSlack::start(&[]).await;
    let notifier = SlackNotifier::with_retry(slack.url(), fast_retries()).expect("client");
    let alerts: Vec<Alert> = (0..60)
        .flat_map(|i| {
            let region = format!("xx-test-{}", i + 1);
            [
                alert(AlertKind::Overdue, &region, i),
                alert(AlertKind::Failed, &region, 100 + i),
            ]
        })
        .collect();
    let summary = fold(alerts, 10).remove(0);
    notifier.notify(&summary).await.expect("delivered");

    let requests = slack.requests();
    assert_eq!(requests.len(), 1);
    let message: Value = serde_json::from_str(&requests[0].body).expect("JSON body");
    assert_eq!(block_kit_violations(&message), Vec::<String>::new());
    assert!(message["blocks"].as_array().expect("blocks").len() <= 50);
    assert!(requests[0].body.contains("xx-test-60/222222222222"));
}

#[tokio::test]
async fn too_many_requests_then_ok_is_delivered_after_one_retry() {
    let slack = FakeSlack::start(&[Reply::TooManyRequests { retry_after_s: 0 }, Reply::Ok]).await;
    // A long backoff: only honouring `Retry-After: 0` makes this quick.
    let policy = RetryPolicy {
        base_delay: Duration::from_secs(20),
        ..fast_retries()
    };
    let notifier = SlackNotifier::with_retry(slack.url(), policy).expect("client");
    let started = Instant::now();
    notifier.notify(&failed()).await.expect("delivered");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "Retry-After ignored: {:?}",
        started.elapsed()
    );
    let requests = slack.requests();
    assert_eq!(requests.len(), 2, "one retry");
    assert_eq!(requests[0].body, requests[1].body, "the same message again");
}

#[tokio::test]
async fn retry_after_is_capped() {
    let slack = FakeSlack::start(&[Reply::TooManyRequests { retry_after_s: 600 }, Reply::Ok]).await;
    let policy = RetryPolicy {
        max_retry_after: Duration::from_millis(50),
        ..fast_retries()
    };
    let notifier = SlackNotifier::with_retry(slack.url(), policy).expect("client");
    let started = Instant::now();
    notifier.notify(&failed()).await.expect("delivered");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(50),
        "waited the cap: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "not the 600 s asked: {elapsed:?}"
    );
    assert_eq!(slack.requests().len(), 2);
}

#[tokio::test]
async fn server_errors_are_retried_with_doubling_delays_then_given_up_as_retryable() {
    let slack = FakeSlack::start(&[Reply::ServerError; 6]).await;
    let policy = RetryPolicy {
        base_delay: Duration::from_millis(40),
        ..fast_retries()
    };
    let notifier = SlackNotifier::with_retry(slack.url(), policy).expect("client");
    let started = Instant::now();
    let err = notifier.notify(&failed()).await.expect_err("gives up");
    let elapsed = started.elapsed();
    assert_eq!(slack.requests().len(), 4, "exactly 4 attempts");
    assert!(
        elapsed >= Duration::from_millis(40 + 80 + 160),
        "backoff 40, 80, 160 ms: {elapsed:?}"
    );
    assert_eq!(err.sink, "slack");
    assert!(err.retryable, "{err}");
    assert!(err.message.contains("after 4 attempts"), "{err}");
    assert!(err.message.contains("HTTP 500"), "{err}");
    assert_error_hides_url(&err);
}

#[tokio::test]
async fn invalid_blocks_is_not_retried_and_says_why() {
    let slack = FakeSlack::start(&[Reply::InvalidBlocks, Reply::Ok]).await;
    let notifier = SlackNotifier::with_retry(slack.url(), fast_retries()).expect("client");
    let err = notifier.notify(&failed()).await.expect_err("refused");
    assert_eq!(slack.requests().len(), 1, "no retry");
    assert_eq!(err.sink, "slack");
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("invalid_blocks"), "{err}");
    assert!(err.message.contains("HTTP 400"), "{err}");
    assert_error_hides_url(&err);
}

#[tokio::test]
async fn an_unreachable_webhook_is_retried_and_never_named() {
    // A port that was just free: nothing listens there.
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("address")
    };
    let url = WebhookUrl::parse(&format!("http://{addr}{SECRET_PATH}")).expect("url");
    let notifier = SlackNotifier::with_retry(url.clone(), fast_retries()).expect("client");
    let err = notifier.notify(&failed()).await.expect_err("unreachable");
    assert!(err.retryable, "{err}");
    assert!(err.message.contains("after 4 attempts"), "{err}");
    assert!(err.message.contains("could not connect"), "{err}");
    assert_error_hides_url(&err);
    assert_no_secret("notifier Debug", &format!("{notifier:?}"));
    assert_no_secret("url Debug", &format!("{url:?}"));
    assert_no_secret("url Display", &url.to_string());
    assert_eq!(url.to_string(), "https://hooks.slack.com/***");
}
