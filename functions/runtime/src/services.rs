//! Assembles [`Tracking`] on AWS from the settings: the DynamoDB store, the ECR registry with
//! its reader role, SNS and Slack ([`build`]); the CloudWatch gauges for the sweep
//! ([`attach_gauges`]); the dead-letter queue for the SQS-fed functions
//! ([`attach_dead_letters`]).
//!
//! Each function attaches only what it uses, because its IAM role grants only what its code
//! can call: the IAM cross-check test (`tests/iam_least_privilege.rs`) follows these builders
//! from each function's `main.rs` to the adapters and the SDK operations they call.

use aws_config::SdkConfig;
use replwatch_aws::DynamoExpectationStore;
use replwatch_aws::cloudwatch::CloudWatchGauges;
use replwatch_aws::dead_letter::DeadLetterQueue;
use replwatch_aws::ecr::{CrossAccountAccess, EcrRegistry};
use replwatch_aws::slack::SlackNotifier;
use replwatch_aws::sns::{SnsFormat, SnsNotifier};
use replwatch_aws::webhook_secret::resolve_webhook_url;
use replwatch_core::Clock;
use replwatch_core::pipeline::Pipeline;

use crate::Tracking;
use crate::delivery::Delivery;
use crate::settings::{AlertFormat, Settings, SettingsError};

/// The tracking services as deployed.
pub type AwsTracking<C> = Tracking<DynamoExpectationStore, EcrRegistry, C>;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("Slack webhook {reference}: {message}")]
    SlackWebhook { reference: String, message: String },
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
        });
    let registry = EcrRegistry::new(sdk.clone(), settings.home_account.clone(), cross_account);
    let pipeline = Pipeline::new(store, registry, clock, settings.pipeline);

    let sns = settings.alert_topic_arn.as_ref().map(|topic| {
        let format = match settings.alert_format {
            AlertFormat::Text => SnsFormat::Text,
            AlertFormat::Chat => SnsFormat::ChatNotification,
        };
        SnsNotifier::new(aws_sdk_sns::Client::new(sdk), topic.clone(), format)
    });
    let slack = match &settings.slack_webhook {
        None => None,
        Some(reference) => {
            let url = resolve_webhook_url(sdk, reference).await.map_err(|e| {
                StartupError::SlackWebhook {
                    reference: reference.clone(),
                    message: e.to_string(),
                }
            })?;
            Some(
                SlackNotifier::new(url).map_err(|e| StartupError::SlackWebhook {
                    reference: reference.clone(),
                    message: e.to_string(),
                })?,
            )
        }
    };
    let tracking = Tracking::new(
        pipeline,
        Delivery { sns, slack },
        settings.metric_namespace.clone(),
        settings.function_name.clone(),
        settings.storm_threshold,
    );
    Ok(tracking)
}

/// Adds the CloudWatch gauges (pending, overdue): the sweep publishes them.
pub fn attach_gauges<C>(tracking: &mut AwsTracking<C>, sdk: &SdkConfig, settings: &Settings) {
    tracking.gauges = Some(CloudWatchGauges::new(
        aws_sdk_cloudwatch::Client::new(sdk),
        settings.metric_namespace.clone(),
    ));
}

/// Adds the queue where malformed events are parked: the functions fed by SQS batches use it.
pub fn attach_dead_letters<C>(tracking: &mut AwsTracking<C>, sdk: &SdkConfig, settings: &Settings) {
    tracking.dead_letters = settings
        .dead_letter_queue_url
        .as_ref()
        .map(|url| DeadLetterQueue::new(aws_sdk_sqs::Client::new(sdk), url.clone()));
}
