//! The DynamoDB backfill run store against the local AWS, through the same contract as the
//! in-memory store (`replwatch_core::backfill::run::contract`).
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};

use replwatch_aws::backfill_runs::DynamoRunStore;
use replwatch_aws::local;
use replwatch_core::backfill::run::contract;

async fn fresh_store() -> DynamoRunStore {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let endpoint = local::endpoint_from_env().unwrap_or_else(|e| panic!("{e}"));
    let config = local::sdk_config(&endpoint, "us-west-2").await;
    let table = format!(
        "replwatch-runs-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let client = aws_sdk_dynamodb::Client::new(&config);
    replwatch_aws::provisioning::create_tracking_table(&client, &table)
        .await
        .expect("create table");
    DynamoRunStore::new(client, table)
}

#[tokio::test]
async fn jobs_are_counted_once_and_the_run_completes_once() {
    let store = fresh_store().await;
    contract::counts_each_job_once_and_completes_once(&store, "run-1").await;
}

#[tokio::test]
async fn the_last_configuration_is_kept() {
    let store = fresh_store().await;
    contract::remembers_the_last_configuration(&store).await;
}
