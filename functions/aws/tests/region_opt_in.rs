//! The Region opt-in adapter against the local AWS (`infra/local-aws/`, `region_opt_in.py`):
//! the home account asked with its own credentials, another account through the assumed role,
//! and what replication between them needs.
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_ecr::config::Credentials;
use replwatch_aws::ecr_clients::CrossAccountAccess;
use replwatch_aws::local;
use replwatch_aws::region_opt_in::RegionOptIn;
use replwatch_core::model::{AccountId, Region};
use replwatch_core::region_opt_in::OptInStatus;

const OPT_IN: &str = "eu-south-1";

/// Two accounts of this process alone (the test bed keeps opt-in state per account).
fn accounts() -> (AccountId, AccountId) {
    let pid = u64::from(std::process::id()) % 100_000;
    let account = |n: u64| {
        AccountId::parse(&format!("{:012}", 600_000_000_000 + pid * 10 + n)).expect("account")
    };
    (account(1), account(2))
}

/// `account`'s own credentials on the test bed (a 12-digit access key id acts as that account).
async fn config(account: &AccountId) -> SdkConfig {
    let endpoint = local::endpoint_from_env().unwrap_or_else(|e| panic!("{e}"));
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-west-2"))
        .credentials_provider(Credentials::new(
            account.as_str(),
            "local",
            None,
            None,
            "local-aws",
        ))
        .load()
        .await
}

/// `EnableRegion` in `account`, then waits for the test bed to finish enabling it.
async fn enable(account: &AccountId, reader: &RegionOptIn) {
    aws_sdk_account::Client::new(&config(account).await)
        .enable_region()
        .region_name(OPT_IN)
        .send()
        .await
        .expect("EnableRegion");
    let deadline = Instant::now() + Duration::from_secs(10);
    let region = Region::parse(OPT_IN).expect("region");
    while reader.status(account, &region).await.expect("status") != OptInStatus::Enabled {
        assert!(Instant::now() < deadline, "{OPT_IN} never became ENABLED");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn each_account_is_asked_with_its_own_credentials() {
    let (home, other) = accounts();
    let reader = RegionOptIn::new(
        config(&home).await,
        home.clone(),
        Some(CrossAccountAccess {
            role_name: "replwatch-reader".into(),
            external_id: Some("replwatch-ext".into()),
            session_name: "replwatch-test".into(),
        }),
    );
    let region = Region::parse(OPT_IN).expect("region");
    let default = Region::parse("us-east-1").expect("region");
    assert_eq!(
        reader.status(&home, &default).await.expect("status"),
        OptInStatus::EnabledByDefault
    );
    for account in [&home, &other] {
        assert_eq!(
            reader.status(account, &region).await.expect("status"),
            OptInStatus::Disabled
        );
    }
    assert_eq!(
        reader
            .replication_blocker(&home, &other, &default)
            .await
            .expect("read"),
        None
    );

    // Enabled in the other account only: read through the role there, and the home account
    // still blocks replication.
    enable(&other, &reader).await;
    assert_eq!(
        reader.status(&other, &region).await.expect("status"),
        OptInStatus::Enabled
    );
    assert_eq!(
        reader.status(&home, &region).await.expect("status"),
        OptInStatus::Disabled
    );
    assert_eq!(
        reader
            .replication_blocker(&home, &other, &region)
            .await
            .expect("read"),
        Some((home.clone(), OptInStatus::Disabled))
    );

    enable(&home, &reader).await;
    assert_eq!(
        reader
            .replication_blocker(&home, &other, &region)
            .await
            .expect("read"),
        None
    );
    assert_eq!(
        reader
            .replication_blocker(&home, &home, &region)
            .await
            .expect("read"),
        None
    );
}

#[tokio::test]
async fn another_account_without_a_role_is_a_clear_permanent_error() {
    let (home, other) = accounts();
    let reader = RegionOptIn::new(config(&home).await, home, None);
    let error = reader
        .status(&other, &Region::parse(OPT_IN).expect("region"))
        .await
        .expect_err("no role");
    assert_eq!(error.operation, "AssumeRole");
    assert!(!error.retryable);
    assert!(
        error.message.contains("no cross-account role"),
        "{}",
        error.message
    );
}
