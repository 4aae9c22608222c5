//! sweep: on a schedule, sends again the alerts no sink took yet, queues the other parts of
//! the due work when `SWEEP_PARTS` splits it, confirms its own part (each due push or record
//! with one `DescribeImageReplicationStatus` per image and the destination reads), alerts on
//! overdue, failed and lost-tag images as it goes, closes the ones that arrived, stops before
//! the invocation's deadline with the rest left due, and publishes the pending and overdue
//! gauges and its heartbeat.
//!
//! Invoked by the schedule (whose event's content is ignored: the table says what is due), or
//! by the parts queue with one part per message (`{"index": 3, "of": 8, "tick": "…"}`), which
//! it sweeps alone; its heartbeat counts at its tick. A message that is not a part is logged
//! and dropped: retrying cannot fix it. A part whose sweep fails fails the invocation, so SQS
//! delivers it again and, after the queue's `maxReceiveCount`, moves it to its dead-letter
//! queue.
//!
//! Its own schedule invokes it with `{"check": "lost-pushes", ...}`
//! ([`replwatch_runtime::lost_pushes`]): then it only looks for pushes of this registry whose
//! PUSH event was lost, and tracks them.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use replwatch_core::{Clock, SystemClock};
use replwatch_runtime::backfill::this_registry;
use replwatch_runtime::lost_pushes::LostPushCheck;
use replwatch_runtime::settings::Settings;
use replwatch_runtime::sweep::QueuedPart;
use replwatch_runtime::{logging, services};

#[tokio::main]
async fn main() -> Result<(), Error> {
    logging::init();
    let settings = Settings::from_env()?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let mut tracking = services::build(&sdk, &settings, SystemClock).await?;
    services::attach_gauges(&mut tracking, &sdk, &settings);
    services::attach_sweep_parts(&mut tracking, &sdk, &settings);
    let tracking = &tracking;
    let source = &this_registry(&settings.home_account, |name| std::env::var(name).ok())?;
    let source_images = &services::build_source_images(&sdk, &settings);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let deadline = chrono::DateTime::<chrono::Utc>::from(event.context.deadline());
            if let Some(check) = LostPushCheck::from_payload(&event.payload) {
                let summary = tracking
                    .run_lost_push_check(source_images, source, &check, Some(deadline))
                    .await?;
                for line in &summary.emf {
                    logging::write_metric_line(line);
                }
                // What was read is tracked; failing the invocation retries it once, then
                // parks it on the failure queue, whose alarm says so.
                if summary.failures > 0 {
                    return Err(format!(
                        "lost-push check: {} repositories or images not read (see the log)",
                        summary.failures
                    )
                    .into());
                }
                return Ok(serde_json::to_value(summary)?);
            }
            let summaries = match serde_json::from_value::<SqsEvent>(event.payload) {
                Ok(batch) if !batch.records.is_empty() => {
                    let mut summaries = Vec::new();
                    for record in batch.records {
                        let body = record.body.as_deref().unwrap_or_default();
                        let sent = record
                            .attributes
                            .get("SentTimestamp")
                            .and_then(|ms| ms.parse().ok())
                            .and_then(chrono::DateTime::from_timestamp_millis)
                            .unwrap_or_else(|| SystemClock.now());
                        match QueuedPart::parse(body, sent) {
                            Ok(queued) => summaries
                                .push(tracking.run_queued_part(Some(deadline), queued).await?),
                            Err(error) => tracing::error!(
                                message_id = record.message_id.as_deref(),
                                body,
                                error,
                                "not a sweep part; dropped"
                            ),
                        }
                    }
                    summaries
                }
                _ => vec![tracking.run_sweep(Some(deadline)).await?],
            };
            // The sweep wrote its metric lines itself, each as soon as what it counts was
            // stored (`SweepSummary::emf`).
            Ok::<serde_json::Value, Error>(serde_json::to_value(summaries)?)
        },
    ))
    .await
}
