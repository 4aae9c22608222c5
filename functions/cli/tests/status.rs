//! `replwatch status` against the local AWS, through the real binary: every destination the
//! rules select with its state, and `--wait` returning on COMPLETE (exit 0), on FAILED with
//! the failure code (exit 1), and giving up on a destination that stays in progress (exit 1).
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use replwatch_core::model::{AccountId, Destination, Region};
use replwatch_core::rules::{ReplicationConfiguration, ReplicationRule};
use testbed::{LocalAws, unique_account};

type Error = Box<dyn std::error::Error + Send + Sync>;

const SOURCE_REGION: &str = "us-west-2";

fn destination(region: &str, account: &str) -> Result<Destination, Error> {
    Ok(Destination::new(
        Region::parse(region)?,
        AccountId::parse(account)?,
    ))
}

fn replwatch(aws: &LocalAws, account: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replwatch"))
        .args(["--endpoint-url", aws.endpoint(), "--region", SOURCE_REGION])
        .args(["--role-name", "replwatch-reader", "--output", "json"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", account)
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env_remove("AWS_PROFILE")
        .env("NO_COLOR", "1")
        .output()
        .expect("replwatch runs")
}

fn json_of(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// An account whose repository `app` replicates to `destinations`, with `v1` pushed after the
/// rules exist.
async fn source_with(aws: &LocalAws, destinations: &[Destination]) -> Result<String, Error> {
    let account = unique_account();
    aws.ecr(&account, SOURCE_REGION)
        .await
        .create_repository()
        .repository_name("app")
        .send()
        .await?;
    aws.put_replication_configuration(
        &account,
        SOURCE_REGION,
        &ReplicationConfiguration {
            rules: vec![ReplicationRule {
                destinations: destinations.to_vec(),
                repository_filters: Vec::new(),
            }],
        },
    )
    .await?;
    // Each destination registry of another account admits the source, as ECR requires.
    for destination in destinations {
        aws.allow_replication_from(
            destination.registry_id.as_str(),
            destination.region.as_str(),
            &account,
        )
        .await?;
    }
    Ok(account)
}

#[tokio::test]
async fn wait_returns_once_every_destination_is_complete() -> Result<(), Error> {
    let aws = LocalAws::from_env()?;
    let partner = unique_account();
    let other = destination("eu-west-1", &partner)?;
    // The same-account destination is named by the source account, known once it exists:
    // the rules are put again with it, and its replication is delayed by two seconds.
    let account = source_with(&aws, std::slice::from_ref(&other)).await?;
    let same = destination("us-east-1", &account)?;
    aws.put_replication_configuration(
        &account,
        SOURCE_REGION,
        &ReplicationConfiguration {
            rules: vec![ReplicationRule {
                destinations: vec![same.clone(), other.clone()],
                repository_filters: Vec::new(),
            }],
        },
    )
    .await?;
    aws.configure_replication(&serde_json::json!({
        "destinations": {same.to_string(): {"delay_seconds": 2}}
    }))?;
    aws.push_image(
        &account,
        SOURCE_REGION,
        "app",
        Some("v1"),
        "status-complete",
    )
    .await?;

    let output = replwatch(
        &aws,
        &account,
        &[
            "status",
            "app:v1",
            "--wait",
            "--interval",
            "1s",
            "--timeout",
            "60s",
        ],
    );
    let report = json_of(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert_eq!(report["verdict"], "complete");
    let states: Vec<(&str, &str)> = report["destinations"]
        .as_array()
        .expect("destinations")
        .iter()
        .map(|d| {
            (
                d["destination"]["region"].as_str().unwrap_or_default(),
                d["state"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("us-east-1", "COMPLETE"), ("eu-west-1", "COMPLETE")]
    );
    let same_account = &report["destinations"][0];
    assert_eq!(same_account["tag"], "present", "{report}");
    assert!(
        same_account["latencySeconds"].as_i64().is_some(),
        "{report}"
    );

    // A signature pushed later: replicated to one destination, held back from the other.
    aws.configure_replication(&serde_json::json!({"destinations": {
        same.to_string(): {"delay_seconds": 0},
        other.to_string(): {"paused": true}
    }}))?;
    let v1 = report["digest"].as_str().ok_or("digest")?.to_owned();
    aws.push_referrer(
        &account,
        SOURCE_REGION,
        "app",
        (&v1, testbed::MANIFEST_MEDIA_TYPE),
        "application/vnd.cncf.notary.signature",
        b"signed",
    )
    .await?;
    aws.settle_replication(&account).await?;
    let output = replwatch(&aws, &account, &["status", "app:v1"]);
    aws.configure_replication(&serde_json::json!({"destinations": {
        same.to_string(): null, other.to_string(): null
    }}))?;
    let report = json_of(&output);
    let referrers: Vec<&serde_json::Value> = report["destinations"]
        .as_array()
        .expect("destinations")
        .iter()
        .map(|d| &d["referrers"])
        .collect();
    assert_eq!(
        referrers,
        [
            &serde_json::json!({"arrived": 1, "of": 1}),
            &serde_json::json!({"arrived": 0, "of": 1})
        ],
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn wait_returns_on_a_failure_with_its_code_and_gives_up_on_a_stuck_one() -> Result<(), Error>
{
    let aws = LocalAws::from_env()?;
    let failing_account = unique_account();
    let stuck_account = unique_account();
    let failing = destination("eu-central-1", &failing_account)?;
    let stuck = destination("ap-south-1", &stuck_account)?;
    aws.configure_replication(&serde_json::json!({
        "destinations": {
            failing.to_string(): {"fail": true, "failure_code": "ACCESS_DENIED"},
            stuck.to_string(): {"paused": true}
        }
    }))?;

    let account = source_with(&aws, std::slice::from_ref(&failing)).await?;
    aws.push_image(&account, SOURCE_REGION, "app", Some("v1"), "status-failed")
        .await?;
    let output = replwatch(
        &aws,
        &account,
        &[
            "status",
            "app:v1",
            "--wait",
            "--interval",
            "1s",
            "--timeout",
            "60s",
        ],
    );
    let report = json_of(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert_eq!(report["verdict"], "failed");
    assert_eq!(report["destinations"][0]["state"], "FAILED");
    assert_eq!(report["destinations"][0]["failureCode"], "ACCESS_DENIED");

    let account = source_with(&aws, std::slice::from_ref(&stuck)).await?;
    aws.push_image(&account, SOURCE_REGION, "app", Some("v1"), "status-stuck")
        .await?;
    let started = std::time::Instant::now();
    let output = replwatch(
        &aws,
        &account,
        &[
            "status",
            "app:v1",
            "--wait",
            "--interval",
            "1s",
            "--timeout",
            "3s",
        ],
    );
    let report = json_of(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert_eq!(report["verdict"], "pending");
    assert_eq!(report["timedOut"], true);
    assert_eq!(report["destinations"][0]["state"], "IN_PROGRESS");
    assert!(report["destinations"][0]["ageSeconds"].as_i64().is_some());
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));

    // An image that is not there is an error (exit 2) naming it.
    let output = replwatch(&aws, &account, &["status", "app:nope"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("app:nope"));
    Ok(())
}

/// `latest` in a mutable partner repository names an older build (its replication finished
/// after the newer one's): the image is there, but pulling `latest` there gets the older one.
/// `status` says so, names the image the tag has there, and exits 1, as the tracking
/// pipeline's TAG_DIVERGED incident does.
#[tokio::test]
async fn a_tag_naming_an_older_build_in_a_destination_is_shown_diverged_and_fails()
-> Result<(), Error> {
    let aws = LocalAws::from_env()?;
    let partner = destination("eu-west-1", &unique_account())?;
    let account = source_with(&aws, std::slice::from_ref(&partner)).await?;
    aws.configure_replication(&serde_json::json!({
        "destinations": {partner.to_string(): {"delay_seconds": 2}}
    }))?;
    let older = aws
        .push_image(&account, SOURCE_REGION, "app", Some("latest"), "build-1")
        .await?;
    aws.configure_replication(&serde_json::json!({
        "destinations": {partner.to_string(): {"delay_seconds": 0}}
    }))?;
    aws.push_image(&account, SOURCE_REGION, "app", Some("latest"), "build-2")
        .await?;
    aws.settle_replication(&account).await?;

    let output = replwatch(&aws, &account, &["status", "app:latest"]);
    let report = json_of(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert_eq!(report["verdict"], "tag-diverged", "{report}");
    let there = &report["destinations"][0];
    assert_eq!(there["state"], "COMPLETE", "{report}");
    assert_eq!(there["tag"], "diverged", "{report}");
    assert_eq!(there["tagNames"], older.digest.as_str(), "{report}");
    Ok(())
}
