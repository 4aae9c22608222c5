//! backfill-plan: plans the backfill of the destinations and fans it out. Invoked by the
//! CloudTrail `PutReplicationConfiguration` event (plans only the destinations it added), by
//! a schedule (every destination), or by hand with a request such as
//! `{"repositoryPrefixes": ["team-a/"], "destinations": [{"region": "eu-west-1",
//! "registryId": "222222222222"}], "dryRun": true}`.
//!
//! Starts ECR's native backfill where it applies, creates missing repositories, records the
//! run and queues one copy job per (image, destination) for `backfill-copy`. The run is named
//! by the request id, which Lambda keeps across retries of one event.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use replwatch_core::SystemClock;
use replwatch_runtime::backfill::{BackfillSettings, PlanInvocation};
use replwatch_runtime::settings::Settings;
use replwatch_runtime::{logging, services};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init();
    let settings = Settings::from_env()?;
    let backfill = BackfillSettings::from_env(&settings.home_account)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let planner = services::build_backfill_planner(&sdk, &settings, &backfill, SystemClock)?;
    let planner = &planner;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let input = serde_json::to_vec(&event.payload)?;
            let invocation = planner.handle(&input, &event.context.request_id).await?;
            for line in &invocation.emf {
                logging::write_metric_line(line);
            }
            Ok::<PlanInvocation, Error>(invocation)
        },
    ))
    .await
}
