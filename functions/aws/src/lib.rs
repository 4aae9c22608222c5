//! AWS adapters of replwatch: the implementations of the core's ports on AWS services.
//!
//! - [`alert_outbox`]: alerts waiting for delivery, on the tracking table.
//! - [`rules_record`]: each source registry's one rules record, shared by every container
//!   and the backfill.
//! - [`backfill_runs`]: backfill runs and their job reports on the tracking table.
//! - [`blob_claims`]: the backfill's blob claims on the tracking table (conditional writes
//!   with a lease), so concurrent copies upload a shared blob once.
//! - [`dynamodb`]: the expectation store on DynamoDB (conditional writes, sparse due index,
//!   TTL).
//! - [`ecr`]: the registry port on ECR, with cross-account reads through a reader role, and
//!   [`ecr::EcrClients`], the per-(account, Region) clients every ECR adapter uses.
//! - [`ecr_inventory`]: the backfill's inventory port on ECR (repositories with their
//!   settings, images, creation templates), read with bounded concurrency.
//! - [`ecr_copy`]: the backfill's copy port on ECR: manifests as stored, blobs streamed part
//!   by part from a presigned URL into the layer-upload API, digest-preserving `PutImage`,
//!   repository creation with settings; adaptive retry against ECR's rate limits.
//! - [`ecr_manifests`]: a manifest read as stored, its digest checked (copy and inventory).
//! - [`ecr_referrers`]: the referrers of one image (signatures, SBOMs, attestations).
//! - [`ecr_native_backfill`]: ECR's own replication backfill (start, list, results).
//! - [`region_opt_in`]: whether an account has opted in to a Region (`GetRegionOptStatus`,
//!   with that account's own credentials, other accounts through the cross-account role).
//! - [`local`]: client configuration for the local AWS test bed (`infra/local-aws/`).
//! - [`provisioning`]: the tracking table created by hand, for the local AWS and tests.
//! - [`service_error`]: how every adapter words an SDK error.
//! - [`cloudwatch`]: the gauge publisher port on CloudWatch `PutMetricData`.
//! - [`dead_letter`]: the SQS queue where events that can never be processed are parked.
//! - [`sns`]: the notifier port on SNS, as readable text or as Amazon Q Developer in chat
//!   applications custom notifications.
//! - [`slack`]: the notifier port on a Slack incoming webhook (Block Kit, retries).
//! - [`webhook_secret`]: the Slack webhook URL read from Secrets Manager or SSM, and the Slack
//!   sink that reads it when first needed.
//! - [`sweep_queue`]: the sweep's parts on a FIFO queue, each with its tick.

pub mod alert_outbox;
pub mod backfill_queue;
pub mod backfill_runs;
pub mod blob_claims;
pub mod cloudwatch;
pub mod dead_letter;
pub mod dynamodb;
pub mod dynamodb_table;
pub mod ecr;
pub mod ecr_clients;
pub mod ecr_copy;
pub mod ecr_images;
pub mod ecr_inventory;
pub mod ecr_listing;
pub mod ecr_manifests;
pub mod ecr_native_backfill;
pub mod ecr_referrers;
pub mod ecr_repositories;
pub mod ecr_rules;
pub mod ecr_shapes;
pub mod local;
pub mod provisioning;
pub mod read_incidents;
pub mod region_opt_in;
pub mod rules_record;
pub mod service_error;
pub mod slack;
pub mod sns;
pub mod sqs_queue;
pub mod sweep_queue;
pub mod tag_incidents;
pub mod tokio_sleeper;
pub mod tracked_pushes;
pub mod webhook_secret;

pub use dynamodb::DynamoExpectationStore;
