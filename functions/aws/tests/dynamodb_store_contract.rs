//! The DynamoDB store passes the same contract as the in-memory one, against the local AWS
//! (`infra/local-aws/start`), through the real aws-sdk-dynamodb client. Each test gets its own
//! freshly created table.

use std::sync::atomic::{AtomicU32, Ordering};

use replwatch_aws::DynamoExpectationStore;
use replwatch_aws::local;

async fn fresh_store() -> DynamoExpectationStore {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let endpoint = local::endpoint_from_env().unwrap_or_else(|e| panic!("{e}"));
    let config = local::sdk_config(&endpoint, "us-west-2").await;
    let table = format!(
        "replwatch-contract-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let client = aws_sdk_dynamodb::Client::new(&config);
    replwatch_aws::provisioning::create_tracking_table(&client, &table)
        .await
        .expect("create table");
    DynamoExpectationStore::new(client, table)
}

replwatch_core::expectation_store_contract!(fresh_store());
