//! Assembles [`Tracking`] on AWS from the settings: the DynamoDB store, the ECR registry with
//! its reader role, SNS and Slack ([`build`]; Slack's webhook is read when first needed, so a
//! secret that cannot be read never stops a function from starting); the CloudWatch gauges for the sweep
//! ([`attach_gauges`]); the dead-letter queue for the SQS-fed functions
//! ([`attach_dead_letters`]); the source listing for the lost-push check
//! ([`build_source_images`]); the backfill functions' services ([`build_backfill_planner`],
//! [`build_backfill_copier`]).
//!
//! Each function attaches only what it uses, because its IAM role grants only what its code
//! can call: the IAM cross-check test (`tests/iam_least_privilege.rs`) follows these builders
//! from each function's `main.rs` to the adapters and the SDK operations they call.

use aws_config::SdkConfig;
use replwatch_aws::DynamoExpectationStore;
use replwatch_aws::backfill_queue::BackfillJobQueue;
use replwatch_aws::backfill_runs::DynamoRunStore;
use replwatch_aws::blob_claims::DynamoBlobClaims;
use replwatch_aws::cloudwatch::CloudWatchGauges;
use replwatch_aws::dead_letter::DeadLetterQueue;
use replwatch_aws::ecr::EcrRegistry;
use replwatch_aws::ecr_clients::CrossAccountAccess;
use replwatch_aws::ecr_copy::EcrCopyRegistry;
use replwatch_aws::ecr_inventory::EcrInventoryReader;
use replwatch_aws::ecr_listing::EcrSourceImages;
use replwatch_aws::ecr_native_backfill::EcrNativeBackfill;
use replwatch_aws::ecr_repositories::EcrRepositoryCreator;
use replwatch_aws::region_opt_in::RegionOptIn;
use replwatch_aws::sns::{SnsFormat, SnsNotifier};
use replwatch_aws::sweep_queue::SweepPartQueue;
use replwatch_aws::tokio_sleeper::TokioSleeper;
use replwatch_aws::webhook_secret::SlackWebhook;
use replwatch_core::Clock;
use replwatch_core::pipeline::Pipeline;

use crate::Tracking;
use crate::backfill::{BackfillCopier, BackfillPlanner, BackfillSettings};
use crate::delivery::Delivery;
use crate::settings::{AlertFormat, Settings, SettingsError};

/// The tracking services as deployed.
pub type AwsTracking<C> = Tracking<DynamoExpectationStore, EcrRegistry, C>;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("HTTP client for blob transfers: {0}")]
    Transfers(String),
}

/// Builds the services from `sdk` (the function's own credentials) and `settings`.
pub async fn build<C: Clock>(
    sdk: &SdkConfig,
    settings: &Settings,
    clock: C,
) -> Result<AwsTracking<C>, StartupError> {
    let store =
        DynamoExpectationStore::new(aws_sdk_dynamodb::Client::new(sdk), settings.table.clone());
    let cross_account = settings
        .reader_role_name
        .as_ref()
        .map(|role_name| CrossAccountAccess {
            role_name: role_name.clone(),
            external_id: settings.reader_external_id.clone(),
            session_name: CrossAccountAccess::session_name_for(&settings.function_name),
        });
    let registry = EcrRegistry::for_tracking(
        sdk.clone(),
        settings.home_account.clone(),
        cross_account,
        settings.ecr_calls_per_second,
    );
    let pipeline = Pipeline::new(store, registry, clock, settings.pipeline);

    let delivery = delivery(sdk, settings);
    let mut tracking = Tracking::new(
        pipeline,
        delivery,
        settings.metric_namespace.clone(),
        settings.function_name.clone(),
        settings.storm_threshold,
    );
    tracking.watched = settings.watched_registry();
    Ok(tracking)
}

/// The alert sinks the settings name: the SNS topic, the Slack webhook (not read yet).
fn delivery(sdk: &SdkConfig, settings: &Settings) -> Delivery {
    let sns = settings.alert_topic_arn.as_ref().map(|topic| {
        let format = match settings.alert_format {
            AlertFormat::Text => SnsFormat::Text,
            AlertFormat::Chat => SnsFormat::ChatNotification,
        };
        SnsNotifier::new(aws_sdk_sns::Client::new(sdk), topic.clone(), format)
    });
    let slack = settings
        .slack_webhook
        .as_ref()
        .map(|reference| SlackWebhook::new(sdk.clone(), reference.clone()));
    Delivery { sns, slack }
}

/// Adds the CloudWatch gauges (pending, overdue): the sweep publishes them.
pub fn attach_gauges<C>(tracking: &mut AwsTracking<C>, sdk: &SdkConfig, settings: &Settings) {
    tracking.gauges = Some(CloudWatchGauges::new(
        aws_sdk_cloudwatch::Client::new(sdk),
        settings.metric_namespace.clone(),
    ));
}

/// Adds the queue the sweep sends its other parts to, when it splits the due work.
pub fn attach_sweep_parts<C>(tracking: &mut AwsTracking<C>, sdk: &SdkConfig, settings: &Settings) {
    tracking.sweep_parts = settings.sweep_queue_url.as_ref().map(|url| {
        (
            SweepPartQueue::new(aws_sdk_sqs::Client::new(sdk), url.clone()),
            settings.sweep_parts,
        )
    });
}

/// Adds the queue where malformed events are parked: the functions fed by SQS batches use it.
pub fn attach_dead_letters<C>(tracking: &mut AwsTracking<C>, sdk: &SdkConfig, settings: &Settings) {
    tracking.dead_letters = settings
        .dead_letter_queue_url
        .as_ref()
        .map(|url| DeadLetterQueue::new(aws_sdk_sqs::Client::new(sdk), url.clone()));
}

/// The source registry's listing, for the sweep's lost-push check: this account's
/// repositories and images, read with the function's own credentials.
pub fn build_source_images(sdk: &SdkConfig, settings: &Settings) -> EcrSourceImages {
    EcrSourceImages::new(sdk.clone(), settings.home_account.clone())
}

/// `backfill-plan` as deployed.
pub type AwsBackfillPlanner<C> = BackfillPlanner<
    EcrInventoryReader,
    EcrNativeBackfill,
    EcrRepositoryCreator,
    DynamoRunStore,
    BackfillJobQueue,
    C,
    RegionOptIn,
>;

/// `backfill-copy` as deployed.
pub type AwsBackfillCopier<C> =
    BackfillCopier<EcrCopyRegistry, DynamoBlobClaims, DynamoRunStore, TokioSleeper, C>;

fn backfill_access(settings: &Settings, backfill: &BackfillSettings) -> Option<CrossAccountAccess> {
    backfill
        .role_name
        .as_ref()
        .map(|role_name| CrossAccountAccess {
            role_name: role_name.clone(),
            external_id: backfill.external_id.clone(),
            session_name: CrossAccountAccess::session_name_for(&settings.function_name),
        })
}

/// Builds `backfill-plan`: inventories, ECR's native backfill, repository creation, the run
/// record and the jobs queue.
pub fn build_backfill_planner<C: Clock>(
    sdk: &SdkConfig,
    settings: &Settings,
    backfill: &BackfillSettings,
    clock: C,
) -> Result<AwsBackfillPlanner<C>, StartupError> {
    let home = settings.home_account.clone();
    let access = backfill_access(settings, backfill);
    let queue_url = backfill.jobs_queue_url.clone().ok_or(SettingsError {
        variable: "BACKFILL_QUEUE_URL",
        message: "must be set".into(),
    })?;
    Ok(BackfillPlanner {
        inventory: EcrInventoryReader::new(sdk.clone(), home.clone(), access.clone()),
        access: RegionOptIn::new(sdk.clone(), home.clone(), access.clone()),
        native: EcrNativeBackfill::new(sdk.clone(), home.clone(), access.clone()),
        creator: EcrRepositoryCreator::new(sdk.clone(), home, access),
        runs: DynamoRunStore::new(aws_sdk_dynamodb::Client::new(sdk), settings.table.clone()),
        queue: BackfillJobQueue::new(aws_sdk_sqs::Client::new(sdk), queue_url),
        clock,
        source: backfill.source.clone(),
        allowed_destinations: backfill.allowed_destinations.clone(),
        dead_letters: settings
            .dead_letter_queue_url
            .as_ref()
            .map(|url| DeadLetterQueue::new(aws_sdk_sqs::Client::new(sdk), url.clone())),
        namespace: settings.metric_namespace.clone(),
        function_name: settings.function_name.clone(),
    })
}

/// Builds `backfill-copy`: the copy through ECR, blob claims and run records on the table,
/// the alert sinks for the completion notice, the dead-letter queue for unreadable jobs.
pub async fn build_backfill_copier<C: Clock>(
    sdk: &SdkConfig,
    settings: &Settings,
    backfill: &BackfillSettings,
    clock: C,
) -> Result<AwsBackfillCopier<C>, StartupError> {
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let mut registry = EcrCopyRegistry::new(
        sdk.clone(),
        settings.home_account.clone(),
        backfill_access(settings, backfill),
    )
    .map_err(|e| StartupError::Transfers(e.to_string()))?;
    // Its share of the stack's ECR budget, like the tracking functions'.
    if let Some(cap) = settings.ecr_calls_per_second {
        registry = registry.with_call_cap(cap);
    }
    Ok(BackfillCopier {
        source: backfill.source.clone(),
        registry,
        claims: DynamoBlobClaims::new(dynamodb.clone(), settings.table.clone()),
        runs: DynamoRunStore::new(dynamodb, settings.table.clone()),
        sleeper: TokioSleeper,
        clock,
        delivery: delivery(sdk, settings),
        dead_letters: settings
            .dead_letter_queue_url
            .as_ref()
            .map(|url| DeadLetterQueue::new(aws_sdk_sqs::Client::new(sdk), url.clone())),
        namespace: settings.metric_namespace.clone(),
        function_name: settings.function_name.clone(),
        concurrency: backfill.copy_concurrency,
        max_receive_count: backfill.max_receive_count,
    })
}
