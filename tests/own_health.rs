//! Nothing optional stops tracking, and the watcher is watched, on the local AWS through the
//! real handlers:
//! - the Slack webhook's parameter missing: every function still starts, SNS delivers each
//!   alert at once, tracking goes on for later pushes, the Slack deliveries stay pending and
//!   `SlackWebhookUnavailable` says why; once the parameter exists, the next sweep delivers
//!   each alert to Slack once and SNS sees no repeat;
//! - the sweep parts queue gone: the scheduled sweep tries again with backoff, still sweeps
//!   its own part, and counts the parts it could not queue in `SweepPartsNotDispatched`; its
//!   lone heartbeat makes the tick's minute short of the parts (what the heartbeat alarm
//!   watches);
//! - the parts queue back during the retry's backoff: every part is queued, and each part's
//!   heartbeat counts at its tick's time, so the tick's minute sums to the number of parts.

use std::sync::Arc;

use aws_sdk_sqs::types::QueueAttributeName;
use chrono::TimeDelta;
use replwatch_core::metrics::{
    SLACK_WEBHOOK_UNAVAILABLE, SWEEP_HEARTBEAT, SWEEP_PARTS_NOT_DISPATCHED,
};
use replwatch_core::{AlertKind, Clock, Destination, OffsetClock};
use replwatch_runtime::services::AwsTracking;
use replwatch_runtime::sweep::QueuedPart;
use testbed::deployment::Copies;
use testbed::slack_capture::SlackCapture;

use crate::alert_truth::World;

const SOURCE_REGION: &str = "us-west-2";

/// A `World` whose `team-a/web` replicates everywhere (`settings`: the test bed's
/// per-destination behaviour).
async fn world(settings: impl Fn(&[Destination]) -> serde_json::Value) -> World {
    let world = World::new(settings).await;
    world.replicated_repository("team-a/web").await;
    world
}

/// Pushes an image of `team-a/web` tagged `tag` and lets replication run its course.
async fn push(world: &World, tag: &str) {
    world
        .aws
        .push_image(&world.central, SOURCE_REGION, "team-a/web", Some(tag), tag)
        .await
        .expect("push");
    world
        .aws
        .settle_replication(&world.central)
        .await
        .expect("settle");
}

/// Every queued event through the functions once: the alerts raised and the EMF lines.
async fn pump(
    world: &World,
    tracking: &AwsTracking<Arc<OffsetClock>>,
) -> (Vec<AlertKind>, Vec<String>) {
    let report = world.pump_whole(tracking, &mut |_| Copies::Once).await;
    let alerts = report
        .batches
        .iter()
        .flat_map(|b| b.alerts.iter().map(|a| a.kind))
        .collect();
    (alerts, report.emf().cloned().collect())
}

/// A FIFO queue for the sweep's parts, and its URL.
async fn parts_queue(world: &World, name: &str) -> String {
    aws_sdk_sqs::Client::new(&world.aws.config(&world.central, SOURCE_REGION).await)
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("parts queue")
        .queue_url
        .expect("queue url")
}

/// (timestamp in ms, value) of every `metric` in `emf`.
fn counted(emf: &[String], metric: &str) -> Vec<(i64, f64)> {
    emf.iter()
        .filter_map(|line| {
            let json: serde_json::Value = serde_json::from_str(line).expect("EMF is JSON");
            let declared = json["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()?
                .iter()
                .any(|m| m["Name"] == metric);
            declared.then(|| {
                (
                    json["_aws"]["Timestamp"].as_i64().expect("timestamp"),
                    json[metric].as_f64().expect("value"),
                )
            })
        })
        .collect()
}

#[tokio::test]
async fn a_slack_webhook_that_cannot_be_read_stops_nothing_and_slack_catches_up_once_it_is_back() {
    let world = world(|d| {
        serde_json::json!({"destinations": {
            d[1].to_string(): {"fail": true, "failure_code": "ACCESS_DENIED"},
        }})
    })
    .await;
    let slack = SlackCapture::start().await.expect("slack");
    // The parameter the stack names does not exist (deleted, or not created yet).
    let parameter = "/replwatch/slack-webhook";
    let tracking = world.tracking(&[("SLACK_WEBHOOK_SECRET", parameter)]).await;

    push(&world, "v1").await;
    let (alerts, emf) = pump(&world, &tracking).await;
    assert_eq!(alerts, vec![AlertKind::Failed]);
    assert_eq!(world.published().await.len(), 1, "SNS at once");
    assert_eq!(counted(&emf, SLACK_WEBHOOK_UNAVAILABLE).len(), 1, "{emf:?}");

    // Tracking goes on: a later push is tracked to its verdict and told through SNS.
    world.clock.advance(TimeDelta::seconds(5));
    push(&world, "v2").await;
    let (alerts, _) = pump(&world, &tracking).await;
    assert_eq!(alerts, vec![AlertKind::Failed]);
    assert_eq!(world.published().await.len(), 1);

    // The sweep keeps beating and says why the two alerts are still pending.
    world.clock.advance(TimeDelta::minutes(3));
    let sweep = tracking.run_sweep(None).await.expect("sweep");
    assert_eq!(sweep.undelivered_alerts, 2);
    assert_eq!(counted(&sweep.emf, SWEEP_HEARTBEAT).len(), 1);
    assert_eq!(counted(&sweep.emf, SLACK_WEBHOOK_UNAVAILABLE).len(), 1);
    assert!(slack.messages().is_empty());

    // The parameter is back: the next sweep delivers both to Slack, nothing again to SNS.
    world
        .deployment
        .slack_webhook_parameter(slack.url())
        .await
        .expect("parameter");
    world.clock.advance(TimeDelta::minutes(31));
    let sweep = tracking.run_sweep(None).await.expect("sweep");
    assert_eq!(sweep.undelivered_alerts, 0);
    assert!(counted(&sweep.emf, SLACK_WEBHOOK_UNAVAILABLE).is_empty());
    let messages = slack.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages.iter().all(|m| m.to_string().contains("alert id")));
    assert!(
        world.published().await.is_empty(),
        "SNS had them already: no repeat"
    );
    // And a third sweep sends nothing again.
    world.clock.advance(TimeDelta::minutes(31));
    tracking.run_sweep(None).await.expect("sweep");
    assert_eq!(slack.messages().len(), 2);
}

#[tokio::test]
async fn a_sweep_part_that_cannot_be_queued_is_retried_then_counted_and_its_beat_is_missing() {
    let world =
        world(|d| serde_json::json!({"destinations": {d[0].to_string(): {"paused": true}}})).await;
    let queue = parts_queue(&world, &format!("sweep-parts-gone-{}.fifo", world.central)).await;
    aws_sdk_sqs::Client::new(&world.aws.config(&world.central, SOURCE_REGION).await)
        .delete_queue()
        .queue_url(&queue)
        .send()
        .await
        .expect("delete the parts queue");
    let tracking = world
        .tracking(&[("SWEEP_PARTS", "4"), ("SWEEP_QUEUE_URL", queue.as_str())])
        .await;
    for i in 0..8 {
        push(&world, &format!("v{i}")).await;
    }
    pump(&world, &tracking).await;
    world.clock.advance(TimeDelta::minutes(31));

    let started = std::time::Instant::now();
    let sweep = tracking
        .run_sweep(None)
        .await
        .expect("part 0 is swept anyway");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(3),
        "three attempts, 1 s and 2 s apart: {:?}",
        started.elapsed()
    );
    assert_eq!(sweep.parts_not_dispatched, 3);
    assert_eq!(
        counted(&sweep.emf, SWEEP_PARTS_NOT_DISPATCHED)
            .iter()
            .map(|(_, n)| *n)
            .collect::<Vec<_>>(),
        vec![3.0]
    );
    // Part 0 checked its share: OVERDUE only, for the paused destination only.
    assert!(sweep.alerts.len() <= 8, "{:?}", sweep.alerts);
    assert!(
        sweep
            .alerts
            .iter()
            .all(|a| a.kind == AlertKind::Overdue && a.key.destination == world.destinations[0]),
        "{:?}",
        sweep.alerts
    );
    // One beat for a tick of four parts: the heartbeat alarm's minute is short.
    assert_eq!(
        counted(&sweep.emf, SWEEP_HEARTBEAT)
            .iter()
            .map(|(_, n)| *n)
            .sum::<f64>(),
        1.0
    );
}

#[tokio::test]
async fn a_parts_queue_back_within_the_retry_gets_every_part_and_each_beats_at_its_tick() {
    let world = world(|_| serde_json::json!({})).await;
    let name = format!("sweep-parts-back-{}.fifo", world.central);
    let queue = parts_queue(&world, &name).await;
    let sqs = aws_sdk_sqs::Client::new(&world.aws.config(&world.central, SOURCE_REGION).await);
    sqs.delete_queue()
        .queue_url(&queue)
        .send()
        .await
        .expect("delete the parts queue");
    let tracking = world
        .tracking(&[("SWEEP_PARTS", "4"), ("SWEEP_QUEUE_URL", queue.as_str())])
        .await;
    let tick = world.clock.now();
    // The queue comes back while the first failed send waits its backoff.
    let restore = {
        let world_aws = world.aws.clone();
        let central = world.central.clone();
        let name = name.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            aws_sdk_sqs::Client::new(&world_aws.config(&central, SOURCE_REGION).await)
                .create_queue()
                .queue_name(name)
                .attributes(QueueAttributeName::FifoQueue, "true")
                .send()
                .await
                .expect("queue back")
        })
    };
    let sweep = tracking.run_sweep(None).await.expect("sweep");
    restore.await.expect("restore task");
    assert_eq!(sweep.parts_not_dispatched, 0);
    assert!(counted(&sweep.emf, SWEEP_PARTS_NOT_DISPATCHED).is_empty());

    let received = sqs
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .send()
        .await
        .expect("receive");
    let mut beats = counted(&sweep.emf, SWEEP_HEARTBEAT);
    let mut parts = Vec::new();
    for message in received.messages() {
        let queued = QueuedPart::parse(
            message.body().unwrap_or_default(),
            tick + TimeDelta::hours(1),
        )
        .expect("a part with its tick");
        parts.push(queued.part.index);
        let summary = tracking
            .run_queued_part(None, queued)
            .await
            .expect("part sweep");
        beats.extend(counted(&summary.emf, SWEEP_HEARTBEAT));
    }
    parts.sort_unstable();
    assert_eq!(parts, vec![1, 2, 3], "every part queued once");
    // Four beats, all at the tick's time: that minute sums to the number of parts.
    assert_eq!(beats.len(), 4, "{beats:?}");
    assert!(beats.iter().all(|beat| *beat == beats[0]), "{beats:?}");
    assert!(
        (beats[0].0 - tick.timestamp_millis()).abs() < 1_000,
        "{beats:?}"
    );
}
