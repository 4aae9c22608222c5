//! The ECR inventory reader against a fake ECR that pages (the local AWS answers every
//! `Describe*` in one page): every `nextToken` followed, the page size asked for, the prefix
//! filter applied, no more repositories read at once than configured, creation templates
//! paged and mapped, and a registry that may not read templates answering "none".
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use replwatch_aws::ecr_inventory::{EcrInventoryReader, InventoryOptions};
use replwatch_core::backfill::inventory::{ResourceTag, TagMutability};
use replwatch_core::backfill::port::InventoryReader;
use replwatch_core::model::{AccountId, Destination, Region};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ACCOUNT: &str = "111122223333";

/// What the fake registry holds, and what it saw.
#[derive(Default)]
struct Fake {
    /// Repository name -> image count.
    repositories: Vec<(String, usize)>,
    templates: usize,
    templates_denied: bool,
    /// (operation, maxResults, nextToken) of every call.
    calls: Vec<(String, Option<i64>, Option<String>)>,
    images_in_flight: usize,
    max_images_in_flight: usize,
}

type Shared = Arc<Mutex<Fake>>;

fn lock(fake: &Shared) -> std::sync::MutexGuard<'_, Fake> {
    fake.lock().unwrap_or_else(|p| p.into_inner())
}

fn image_digest(repository: &str, n: usize) -> String {
    let seed = format!("{repository}#{n}");
    let mut hex = String::new();
    for byte in seed.bytes().cycle().take(32) {
        hex.push_str(&format!("{byte:02x}"));
    }
    format!("sha256:{}", &hex[..64])
}

/// One page of `items` from the offset in `token`, and the next token.
fn page<T: Clone>(items: &[T], token: Option<&str>, max: Option<i64>) -> (Vec<T>, Option<String>) {
    let start: usize = token
        .and_then(|t| t.strip_prefix("at-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let size = max.map(|m| m as usize).unwrap_or(100);
    let end = (start + size).min(items.len());
    let next = (end < items.len()).then(|| format!("at-{end}"));
    (items[start..end].to_vec(), next)
}

async fn answer(fake: &Shared, operation: &str, body: &Value) -> (u16, Value) {
    let max = body["maxResults"].as_i64();
    let token = body["nextToken"].as_str();
    lock(fake)
        .calls
        .push((operation.to_owned(), max, token.map(str::to_owned)));
    match operation {
        "DescribeRepositories" => {
            let repositories: Vec<Value> = lock(fake)
                .repositories
                .iter()
                .enumerate()
                .map(|(i, (name, _))| {
                    json!({
                        "repositoryName": name, "registryId": ACCOUNT,
                        "repositoryArn": format!("arn:aws:ecr:us-west-2:{ACCOUNT}:repository/{name}"),
                        "imageTagMutability": if i % 2 == 0 { "MUTABLE" } else { "IMMUTABLE" },
                        "imageScanningConfiguration": {"scanOnPush": i % 2 == 1},
                        "encryptionConfiguration": {"encryptionType": "AES256"}
                    })
                })
                .collect();
            let (items, next) = page(&repositories, token, max);
            (200, json!({"repositories": items, "nextToken": next}))
        }
        "DescribeImages" => {
            let name = body["repositoryName"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if name == "pg/gone" {
                return (
                    400,
                    json!({"__type": "RepositoryNotFoundException", "message": "gone"}),
                );
            }
            {
                let mut f = lock(fake);
                f.images_in_flight += 1;
                f.max_images_in_flight = f.max_images_in_flight.max(f.images_in_flight);
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            let count = lock(fake)
                .repositories
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| *c)
                .unwrap_or(0);
            let images: Vec<Value> = (0..count)
                .map(|n| {
                    json!({
                        "registryId": ACCOUNT, "repositoryName": name,
                        "imageDigest": image_digest(&name, n),
                        "imageTags": if n == 0 { json!(["latest"]) } else { json!([]) },
                        "imagePushedAt": 1_700_000_000 + n,
                        "imageSizeInBytes": 1000 + n,
                        "imageManifestMediaType": "application/vnd.oci.image.manifest.v1+json"
                    })
                })
                .collect();
            lock(fake).images_in_flight -= 1;
            let (items, next) = page(&images, token, max);
            (200, json!({"imageDetails": items, "nextToken": next}))
        }
        "GetLifecyclePolicy" => {
            let name = body["repositoryName"].as_str().unwrap_or_default();
            if name.ends_with("r0") {
                (
                    200,
                    json!({"registryId": ACCOUNT, "repositoryName": name, "lifecyclePolicyText": "{\"rules\":[]}"}),
                )
            } else {
                (
                    400,
                    json!({"__type": "LifecyclePolicyNotFoundException", "message": "none"}),
                )
            }
        }
        "GetRepositoryPolicy" => {
            if body["repositoryName"].as_str() == Some("pg/denied") {
                (
                    400,
                    json!({"__type": "AccessDeniedException", "message": "not authorized"}),
                )
            } else {
                (
                    400,
                    json!({"__type": "RepositoryPolicyNotFoundException", "message": "none"}),
                )
            }
        }
        "DescribeRepositoryCreationTemplates" => {
            let (count, denied) = {
                let f = lock(fake);
                (f.templates, f.templates_denied)
            };
            if denied {
                return (
                    400,
                    json!({"__type": "AccessDeniedException", "message": "not authorized"}),
                );
            }
            let templates: Vec<Value> = (0..count)
                .map(|i| {
                    json!({
                        "prefix": if i == 0 { "ROOT".to_owned() } else { format!("team{i}/") },
                        "appliedFor": ["REPLICATION", "CREATE_ON_PUSH"],
                        "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
                        "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "dev-*"}],
                        "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "arn:aws:kms:us-west-2:111122223333:key/k"},
                        "lifecyclePolicy": "{\"rules\":[]}",
                        "resourceTags": [{"Key": "team", "Value": format!("team{i}")}]
                    })
                })
                .collect();
            let (items, next) = page(&templates, token, max);
            (
                200,
                json!({"registryId": ACCOUNT, "repositoryCreationTemplates": items, "nextToken": next}),
            )
        }
        _ => (
            400,
            json!({"__type": "UnknownOperationException", "message": operation}),
        ),
    }
}

async fn serve_connection(fake: Shared, mut stream: TcpStream) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let length: usize = header("content-length").parse().unwrap_or(0);
    while buffer.len() < head_end + 4 + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let body: Value =
        serde_json::from_slice(&buffer[head_end + 4..head_end + 4 + length]).unwrap_or(Value::Null);
    let target = header("x-amz-target");
    let operation = target.rsplit('.').next().unwrap_or_default().to_owned();
    let (status, payload) = answer(&fake, &operation, &body).await;
    let payload = payload.to_string();
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        if status == 200 { "OK" } else { "Bad Request" },
        payload.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn start(fake: Fake) -> (String, Shared) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let fake = Arc::new(Mutex::new(fake));
    let shared = Arc::clone(&fake);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_connection(Arc::clone(&shared), stream));
        }
    });
    (endpoint, fake)
}

fn registry() -> Destination {
    Destination::new(
        Region::parse("us-west-2").expect("region"),
        AccountId::parse(ACCOUNT).expect("account"),
    )
}

async fn new_reader(endpoint: &str, options: InventoryOptions) -> EcrInventoryReader {
    EcrInventoryReader::with_options(
        replwatch_aws::local::sdk_config(endpoint, "us-west-2").await,
        AccountId::parse(ACCOUNT).expect("account"),
        None,
        options,
    )
}

fn options(page_size: i32, concurrency: usize) -> InventoryOptions {
    InventoryOptions {
        concurrency,
        page_size,
        ..InventoryOptions::default()
    }
}

#[tokio::test]
async fn every_page_is_read_with_bounded_concurrency() {
    let repositories: Vec<(String, usize)> = (0..6)
        .map(|i| (format!("pg/r{i}"), [7, 1, 0, 3, 2, 5][i]))
        .chain([("zz/other".to_owned(), 4)])
        .collect();
    let (endpoint, fake) = start(Fake {
        repositories: repositories.clone(),
        ..Fake::default()
    })
    .await;
    let reader = new_reader(&endpoint, options(2, 2)).await;

    let inventory = reader
        .repositories(&registry(), &["pg/".to_owned()])
        .await
        .expect("inventory");
    let read: Vec<(&str, usize)> = inventory
        .iter()
        .map(|r| (r.name.as_str(), r.images.len()))
        .collect();
    let expected: Vec<(&str, usize)> = repositories[..6]
        .iter()
        .map(|(n, c)| (n.as_str(), *c))
        .collect();
    assert_eq!(read, expected);

    let r0 = &inventory[0];
    assert_eq!(
        r0.settings.lifecycle_policy.as_deref(),
        Some("{\"rules\":[]}")
    );
    assert_eq!(r0.settings.repository_policy, None);
    assert_eq!(r0.settings.tag_mutability, TagMutability::Mutable);
    assert_eq!(
        inventory[1].settings.tag_mutability,
        TagMutability::Immutable
    );
    assert!(inventory[1].settings.scan_on_push);
    let digests: Vec<String> = r0
        .images
        .iter()
        .map(|i| i.digest.as_str().to_owned())
        .collect();
    let expected_digests: Vec<String> = (0..7).map(|n| image_digest("pg/r0", n)).collect();
    assert_eq!(digests, expected_digests);
    assert_eq!(r0.images[0].tags, ["latest"]);
    assert!(r0.images[1].tags.is_empty());
    assert_eq!(
        r0.images[2].pushed_at.map(|t| t.timestamp()),
        Some(1_700_000_002)
    );
    assert_eq!(r0.images[2].size_bytes, Some(1002));

    let f = lock(&fake);
    let count = |op: &str| f.calls.iter().filter(|(o, _, _)| o == op).count();
    // 7 repositories in pages of 2; images of pg/ only: 4 + 1 + 1 + 2 + 1 + 3 pages.
    assert_eq!(count("DescribeRepositories"), 4);
    assert_eq!(count("DescribeImages"), 12);
    assert_eq!(count("GetLifecyclePolicy"), 6);
    assert_eq!(count("GetRepositoryPolicy"), 6);
    assert!(
        f.calls
            .iter()
            .filter(|(o, _, _)| o == "DescribeImages" || o == "DescribeRepositories")
            .all(|(_, max, _)| *max == Some(2))
    );
    assert!(
        f.max_images_in_flight <= 2,
        "{} repositories read at once",
        f.max_images_in_flight
    );
}

#[tokio::test]
async fn creation_templates_are_paged_and_mapped() {
    let (endpoint, fake) = start(Fake {
        templates: 3,
        ..Fake::default()
    })
    .await;
    let reader = new_reader(&endpoint, options(2, 8)).await;
    let templates = reader
        .creation_templates(&registry())
        .await
        .expect("templates");
    let prefixes: Vec<&str> = templates.iter().map(|t| t.prefix.as_str()).collect();
    assert_eq!(prefixes, ["ROOT", "team1/", "team2/"]);
    let first = &templates[0];
    assert_eq!(first.applied_for, ["REPLICATION", "CREATE_ON_PUSH"]);
    assert_eq!(
        first.settings.tag_mutability,
        TagMutability::ImmutableWithExclusion {
            mutable_tags: vec!["dev-*".into()]
        }
    );
    assert_eq!(first.settings.encryption.encryption_type, "KMS");
    assert_eq!(
        first.settings.encryption.kms_key.as_deref(),
        Some("arn:aws:kms:us-west-2:111122223333:key/k")
    );
    assert_eq!(
        first.settings.lifecycle_policy.as_deref(),
        Some("{\"rules\":[]}")
    );
    assert_eq!(first.settings.repository_policy, None);
    assert_eq!(
        first.settings.resource_tags,
        [ResourceTag {
            key: "team".into(),
            value: "team0".into()
        }]
    );
    let pages = lock(&fake)
        .calls
        .iter()
        .filter(|(o, _, _)| o == "DescribeRepositoryCreationTemplates")
        .count();
    assert_eq!(pages, 2);
}

#[tokio::test]
async fn templates_that_may_not_be_read_are_none() {
    let (endpoint, _fake) = start(Fake {
        templates: 3,
        templates_denied: true,
        ..Fake::default()
    })
    .await;
    let reader = new_reader(&endpoint, options(1000, 8)).await;
    let templates = reader
        .creation_templates(&registry())
        .await
        .expect("denied reads as none");
    assert!(templates.is_empty());
}

#[tokio::test]
async fn a_repository_deleted_meanwhile_is_left_out_and_a_denied_read_fails_the_inventory() {
    let (endpoint, _fake) = start(Fake {
        repositories: vec![("pg/gone".to_owned(), 1), ("pg/ok".to_owned(), 1)],
        ..Fake::default()
    })
    .await;
    let reader = new_reader(&endpoint, options(1000, 8)).await;
    let inventory = reader
        .repositories(&registry(), &[])
        .await
        .expect("inventory");
    let names: Vec<&str> = inventory.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["pg/ok"]);

    let (endpoint, _fake) = start(Fake {
        repositories: vec![("pg/denied".to_owned(), 1), ("pg/ok".to_owned(), 1)],
        ..Fake::default()
    })
    .await;
    let denied = new_reader(&endpoint, options(1000, 8)).await;
    let error = denied
        .repositories(&registry(), &[])
        .await
        .expect_err("denied");
    assert_eq!(error.operation, "GetRepositoryPolicy");
    assert!(error.resource.contains("pg/denied"), "{error}");
    assert!(error.message.contains("AccessDeniedException"), "{error}");
    assert!(!error.retryable);
}
