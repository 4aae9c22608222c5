//! sweep: on a schedule, sends again the alerts no sink took yet, confirms every due
//! expectation with one `DescribeImageReplicationStatus` per image, alerts on overdue and
//! failed images as it goes, reconciles the ones whose events were lost, stops before the
//! invocation's deadline with the rest left due, and publishes the pending and overdue gauges
//! and its heartbeat.
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
        move |event: LambdaEvent<serde_json::Value>| async move {
            let deadline = chrono::DateTime::<chrono::Utc>::from(event.context.deadline());
            let summary: SweepSummary = tracking.run_sweep(Some(deadline)).await?;
            for line in &summary.emf {
                println!("{line}");
            }
            Ok::<SweepSummary, Error>(summary)
        },
    ))
    .await
}
