//! `replwatch audit` against the local AWS, through the real binary: a destination with every
//! kind of drift, and one in sync.
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use replwatch_core::model::{AccountId, Destination, Region};
use replwatch_core::rules::{ReplicationConfiguration, ReplicationRule};
use testbed::{LocalAws, unique_account};

type Error = Box<dyn std::error::Error + Send + Sync>;

const SOURCE_REGION: &str = "us-west-2";

fn audit(aws: &LocalAws, account: &str) -> (Option<i32>, serde_json::Value) {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_replwatch"))
        .args(["--endpoint-url", aws.endpoint(), "--region", SOURCE_REGION])
        .args(["--output", "json", "audit"])
        .env("AWS_ACCESS_KEY_ID", account)
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("replwatch runs");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

async fn rules(aws: &LocalAws, account: &str, destination: &Destination) -> Result<(), Error> {
    aws.put_replication_configuration(
        account,
        SOURCE_REGION,
        &ReplicationConfiguration {
            rules: vec![ReplicationRule {
                destinations: vec![destination.clone()],
                repository_filters: Vec::new(),
            }],
        },
    )
    .await
}

#[tokio::test]
async fn every_kind_of_drift_is_reported_and_fails_the_audit() -> Result<(), Error> {
    let aws = LocalAws::from_env()?;
    let account = unique_account();
    let destination_region = "us-east-1";
    let source_ecr = aws.ecr(&account, SOURCE_REGION).await;
    let destination_ecr = aws.ecr(&account, destination_region).await;
    source_ecr
        .create_repository()
        .repository_name("app")
        .image_tag_mutability(aws_sdk_ecr::types::ImageTagMutability::Immutable)
        .send()
        .await?;
    // The destination repository exists with other settings (mutable tags).
    destination_ecr
        .create_repository()
        .repository_name("app")
        .send()
        .await?;
    // Pushed before the rules: nothing replicates them. The test bed derives the content
    // from the seed, so the same seed pushed in the destination is the same image.
    aws.push_image(&account, SOURCE_REGION, "app", Some("v1"), "in-both")
        .await?;
    aws.push_image(&account, destination_region, "app", Some("v1"), "in-both")
        .await?;
    aws.push_image(&account, SOURCE_REGION, "app", Some("v2"), "untagged-there")
        .await?;
    aws.push_image(&account, destination_region, "app", None, "untagged-there")
        .await?;
    aws.push_image(&account, SOURCE_REGION, "app", Some("v3"), "only-in-source")
        .await?;
    aws.push_image(
        &account,
        destination_region,
        "app",
        Some("v3"),
        "other-image",
    )
    .await?;
    aws.push_image(
        &account,
        destination_region,
        "app",
        Some("old"),
        "deleted-in-source",
    )
    .await?;
    rules(
        &aws,
        &account,
        &Destination::new(
            Region::parse(destination_region)?,
            AccountId::parse(&account)?,
        ),
    )
    .await?;

    let (code, report) = audit(&aws, &account);
    assert_eq!(code, Some(1), "{report}");
    let destination = &report["destinations"][0];
    assert_eq!(destination["images"], 3);
    let counts = &destination["counts"];
    assert_eq!(counts["missing"], 1, "{report}");
    assert_eq!(counts["tag-lost"], 1, "{report}");
    assert_eq!(counts["tag-mismatch"], 1, "{report}");
    assert_eq!(counts["not-in-source"], 2, "{report}");
    assert_eq!(counts["settings-differ"], 1, "{report}");
    let lost = destination["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["kind"] == "tag-lost")
        .expect("a lost tag");
    assert_eq!(lost["tag"], "v2");
    // v3 names an image here the source never tagged v3, in a mutable repository: what the
    // tracking pipeline's TAG_DIVERGED incident would say, with what to do.
    let mismatch = destination["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["kind"] == "tag-mismatch")
        .expect("a tag mismatch");
    assert_eq!(mismatch["tag"], "v3");
    let detail = mismatch["detail"].as_str().expect("detail");
    assert!(
        detail.contains("the tag was changed in the destination")
            && detail.contains("(TAG_DIVERGED)"),
        "{detail}"
    );
    assert!(
        detail.contains("replwatch backfill --destination"),
        "{detail}"
    );
    Ok(())
}

#[tokio::test]
async fn a_destination_that_received_every_push_is_in_sync() -> Result<(), Error> {
    let aws = LocalAws::from_env()?;
    let account = unique_account();
    aws.ecr(&account, SOURCE_REGION)
        .await
        .create_repository()
        .repository_name("app")
        .send()
        .await?;
    rules(
        &aws,
        &account,
        &Destination::new(Region::parse("eu-west-1")?, AccountId::parse(&account)?),
    )
    .await?;
    aws.push_image(&account, SOURCE_REGION, "app", Some("v1"), "synced-1")
        .await?;
    aws.push_image(&account, SOURCE_REGION, "app", None, "synced-2")
        .await?;
    aws.flush_replication(&account)?;
    let (code, report) = audit(&aws, &account);
    // Replication creates the repository with default settings, like ECR: same as the source.
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["destinations"][0]["images"], 2);
    assert_eq!(
        report["destinations"][0]["findings"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    Ok(())
}
