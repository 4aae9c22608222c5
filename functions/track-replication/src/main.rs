//! track-replication: closes expectations from `ECR Replication Action` events forwarded from
//! every destination Region to the central bus: records the latency, confirms a FAILED result and
//! its failure code with the status API, and checks the pushed tag is in the destination where
//! that repository's tags are immutable (the only place ECR drops a tag on replication).
//!
//! Invoked by SQS with EventBridge events as message bodies; reports partial batch failures.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use replwatch_core::SystemClock;
use replwatch_runtime::settings::Settings;
use replwatch_runtime::{logging, services};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init();
    let settings = Settings::from_env()?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let mut tracking = services::build(&sdk, &settings, SystemClock).await?;
    services::attach_dead_letters(&mut tracking, &sdk, &settings);
    let tracking = &tracking;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let outcome = tracking.process_batch(event.payload).await;
        for line in &outcome.emf {
            logging::write_metric_line(line);
        }
        Ok::<SqsBatchResponse, Error>(outcome.response)
    }))
    .await
}
