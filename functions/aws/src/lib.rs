//! AWS adapters of replwatch: the implementations of the core's ports on AWS services.
//!
//! - [`backfill_runs`]: backfill runs and their job reports on the tracking table.
//! - [`dynamodb`]: the expectation store on DynamoDB (conditional writes, sparse due index,
//!   TTL).
//! - [`ecr`]: the registry port on ECR, with cross-account reads through a reader role.
//! - [`local`]: client configuration for the local AWS test bed (`infra/local-aws/`).
//! - [`provisioning`]: the tracking table created by hand, for the local AWS and tests.
//! - [`service_error`]: how every adapter words an SDK error.
//! - [`cloudwatch`]: the gauge publisher port on CloudWatch `PutMetricData`.
//! - [`dead_letter`]: the SQS queue where events that can never be processed are parked.
//! - [`sns`]: the notifier port on SNS, as readable text or as Amazon Q Developer in chat
//!   applications custom notifications.
//! - [`slack`]: the notifier port on a Slack incoming webhook (Block Kit, retries).
//! - [`webhook_secret`]: the Slack webhook URL read from Secrets Manager or SSM.

pub mod backfill_runs;
pub mod cloudwatch;
pub mod dead_letter;
pub mod dynamodb;
pub mod ecr;
pub mod local;
pub mod provisioning;
pub mod service_error;
pub mod slack;
pub mod sns;
pub mod webhook_secret;

pub use dynamodb::DynamoExpectationStore;
