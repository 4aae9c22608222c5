//! Blob claims on DynamoDB against the local AWS (`infra/local-aws/`): one holder at a time,
//! a release only by the holder, and a dead holder's claim taken over once its lease ends.
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use replwatch_aws::blob_claims::{DynamoBlobClaims, claim_key};
use replwatch_aws::local;
use replwatch_core::backfill::port::{BlobClaims, Claim};
use replwatch_core::model::{AccountId, Destination, Digest, Region, RepositoryName};

async fn fresh_table() -> (aws_sdk_dynamodb::Client, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let endpoint = local::endpoint_from_env().unwrap_or_else(|e| panic!("{e}"));
    let config = local::sdk_config(&endpoint, "us-west-2").await;
    let table = format!(
        "replwatch-claims-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let client = aws_sdk_dynamodb::Client::new(&config);
    replwatch_aws::provisioning::create_tracking_table(&client, &table)
        .await
        .expect("create table");
    (client, table)
}

fn target() -> (Destination, RepositoryName, Digest) {
    (
        Destination::new(
            Region::parse("eu-west-1").expect("region"),
            AccountId::parse("222222222222").expect("account"),
        ),
        RepositoryName::parse("team/web").expect("repository"),
        Digest::parse(&format!("sha256:{}", "ab".repeat(32))).expect("digest"),
    )
}

#[tokio::test]
async fn one_holder_at_a_time_and_only_the_holder_releases() {
    let (client, table) = fresh_table().await;
    let first = DynamoBlobClaims::new(client.clone(), &table);
    let second = DynamoBlobClaims::new(client.clone(), &table);
    assert_ne!(first.owner(), second.owner());
    let (destination, repository, blob) = target();

    assert_eq!(
        first
            .claim(&destination, &repository, &blob)
            .await
            .expect("claim"),
        Claim::Granted
    );
    assert_eq!(
        second
            .claim(&destination, &repository, &blob)
            .await
            .expect("claim"),
        Claim::HeldElsewhere
    );
    // A second copy in the same process is just as much "elsewhere".
    assert_eq!(
        first
            .claim(&destination, &repository, &blob)
            .await
            .expect("claim"),
        Claim::HeldElsewhere
    );
    // Another blob, or the same blob in another repository, is claimed on its own.
    let other_repository = RepositoryName::parse("team/api").expect("repository");
    assert_eq!(
        second
            .claim(&destination, &other_repository, &blob)
            .await
            .expect("claim"),
        Claim::Granted
    );

    // A release by a non-holder changes nothing.
    second
        .release(&destination, &repository, &blob)
        .await
        .expect("release by a non-holder");
    assert_eq!(
        second
            .claim(&destination, &repository, &blob)
            .await
            .expect("claim"),
        Claim::HeldElsewhere
    );

    // The item carries its lease and TTL.
    let (pk, sk) = claim_key(&destination, &repository, &blob);
    let item = client
        .get_item()
        .table_name(&table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk.clone()))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(sk.clone()))
        .consistent_read(true)
        .send()
        .await
        .expect("get")
        .item
        .expect("claim item");
    for attribute in ["owner", "lease_until", "expires_at"] {
        assert!(item.contains_key(attribute), "{attribute} in {item:?}");
    }

    first
        .release(&destination, &repository, &blob)
        .await
        .expect("release");
    assert_eq!(
        second
            .claim(&destination, &repository, &blob)
            .await
            .expect("claim"),
        Claim::Granted
    );
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_the_late_holder_cannot_release_it() {
    let (client, table) = fresh_table().await;
    let lease = Duration::from_millis(400);
    let dead = DynamoBlobClaims::new(client.clone(), &table).with_lease(lease);
    let alive = DynamoBlobClaims::new(client.clone(), &table).with_lease(Duration::from_secs(60));
    let third = DynamoBlobClaims::new(client.clone(), &table);
    let (destination, repository, blob) = target();

    assert_eq!(
        dead.claim(&destination, &repository, &blob)
            .await
            .expect("claim"),
        Claim::Granted
    );
    assert_eq!(
        alive
            .claim(&destination, &repository, &blob)
            .await
            .expect("claim"),
        Claim::HeldElsewhere
    );
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    assert_eq!(
        alive
            .claim(&destination, &repository, &blob)
            .await
            .expect("claim"),
        Claim::Granted
    );
    // The holder whose lease ran out comes back and releases: the new claim stays.
    dead.release(&destination, &repository, &blob)
        .await
        .expect("late release");
    assert_eq!(
        third
            .claim(&destination, &repository, &blob)
            .await
            .expect("claim"),
        Claim::HeldElsewhere
    );
    alive
        .release(&destination, &repository, &blob)
        .await
        .expect("release");
    assert_eq!(
        third
            .claim(&destination, &repository, &blob)
            .await
            .expect("claim"),
        Claim::Granted
    );
}
