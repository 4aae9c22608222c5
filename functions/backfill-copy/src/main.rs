//! backfill-copy: takes copy jobs from the backfill's SQS queue and copies each image,
//! digest-preserving, through the ECR API (blobs the destination lacks, child manifests before
//! an index, tags). Jobs are idempotent: a redelivery finds the work done and counts nothing.
//!
//! Reports partial batch failures for jobs worth retrying; the last delivery counts a failing
//! job as failed so its run completes, and the invocation that completes a run notifies.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use replwatch_core::SystemClock;
use replwatch_runtime::backfill::BackfillSettings;
use replwatch_runtime::settings::Settings;
use replwatch_runtime::{logging, services};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init();
    let settings = Settings::from_env()?;
    let backfill = BackfillSettings::from_env(&settings.home_account)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let copier = services::build_backfill_copier(&sdk, &settings, &backfill, SystemClock).await?;
    let copier = &copier;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let outcome = copier.process_batch(event.payload).await;
        for line in &outcome.emf {
            logging::write_metric_line(line);
        }
        Ok::<SqsBatchResponse, Error>(outcome.response)
    }))
    .await
}
