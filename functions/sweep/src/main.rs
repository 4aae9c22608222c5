//! sweep: on a schedule, confirms every due expectation with one
//! `DescribeImageReplicationStatus` per image, alerts on overdue and failed images, reconciles
//! the ones whose events were lost, and publishes the pending and overdue gauges.
//!
//! The scheduled event's content is ignored: the table says what is due.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use replwatch_core::SystemClock;
use replwatch_runtime::settings::Settings;
use replwatch_runtime::sweep::SweepSummary;
use replwatch_runtime::{logging, services};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init();
    let settings = Settings::from_env()?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let mut tracking = services::build(&sdk, &settings, SystemClock).await?;
    services::attach_gauges(&mut tracking, &sdk, &settings);
    let tracking = &tracking;
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let summary: SweepSummary = tracking.run_sweep().await?;
            for line in &summary.emf {
                println!("{line}");
            }
            Ok::<SweepSummary, Error>(summary)
        },
    ))
    .await
}
