//! The tracking pipeline end to end on the local AWS: images pushed into ECR, events through
//! EventBridge and SQS into the same handlers Lambda runs, the DynamoDB table, SNS, and the
//! sweep. The scenario (`testbed::scenario`) has a slow, a failing and a tag-conflicting
//! destination; every (image, destination) must reach its verdict with exactly one alert per
//! problem and none for healthy images, even when replication events are lost or repeated.

// Joins this binary rather than linking one more: every test binary costs CI minutes.
#[path = "alert_truth.rs"]
mod alert_truth;
#[path = "lost_push_events.rs"]
mod lost_push_events;
#[path = "own_health.rs"]
mod own_health;
#[path = "trust_boundary.rs"]
mod trust_boundary;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::TimeDelta;
use replwatch_core::alerts::Alert;
use replwatch_core::store::expectations_of;
use replwatch_core::{
    AccountId, AlertKind, Destination, Digest, ExpectationState, OffsetClock, Region,
    RepositoryName, SourceImage,
};
use replwatch_runtime::services::AwsTracking;
use testbed::deployment::{Copies, QueuedMessage, sqs_event};
use testbed::scenario::{FAILURE_CODE, SOURCE_REGION, Scenario, ScenarioPush, Verdicts};
use testbed::slack_capture::SlackCapture;
use testbed::{LocalAws, LocalDeployment, unique_account};

struct Run {
    aws: LocalAws,
    scenario: Scenario,
    deployment: LocalDeployment,
    clock: Arc<OffsetClock>,
    pushes: Vec<ScenarioPush>,
    alerts: Vec<Alert>,
    emf: Vec<String>,
    delivered: Vec<QueuedMessage>,
    slack: SlackCapture,
}

async fn start(pushes: usize) -> Run {
    let aws = LocalAws::from_env().unwrap_or_else(|e| panic!("{e}"));
    let scenario = Scenario::new(unique_account(), unique_account());
    let deployment = LocalDeployment::create(
        &aws,
        &scenario.central,
        SOURCE_REGION,
        &scenario.destinations().expect("destinations"),
    )
    .await
    .expect("deployment");
    scenario.prepare(&aws).await.expect("scenario");
    let pushed = scenario.push(&aws, pushes, "e2e").await.expect("pushes");
    Run {
        aws,
        scenario,
        deployment,
        clock: Arc::new(OffsetClock::new()),
        pushes: pushed,
        alerts: Vec::new(),
        emf: Vec::new(),
        delivered: Vec::new(),
        slack: SlackCapture::start().await.expect("slack capture"),
    }
}

impl Run {
    async fn tracking(&self) -> AwsTracking<Arc<OffsetClock>> {
        let parameter = self
            .deployment
            .slack_webhook_parameter(self.slack.url())
            .await
            .expect("webhook parameter");
        self.deployment
            .tracking(
                Arc::clone(&self.clock),
                &[("SLACK_WEBHOOK_SECRET", parameter.as_str())],
            )
            .await
            .expect("tracking")
    }

    /// Waits until every replication not held back by a paused destination has run.
    async fn settle(&self) {
        self.aws
            .settle_replication(&self.scenario.central)
            .await
            .expect("settle");
    }

    async fn pump(
        &mut self,
        tracking: &AwsTracking<Arc<OffsetClock>>,
        copies: &mut dyn FnMut(&QueuedMessage) -> Copies,
    ) {
        let mut log = Vec::new();
        let mut record = |m: &QueuedMessage| {
            let n = copies(m);
            match n {
                Copies::Drop => {}
                Copies::Once => log.push(m.clone()),
                Copies::Twice => {
                    log.push(m.clone());
                    log.push(m.clone());
                }
            }
            n
        };
        let report = self
            .deployment
            .pump(tracking, &mut record)
            .await
            .expect("pump");
        for batch in &report.batches {
            assert!(
                batch.response.batch_item_failures.is_empty(),
                "{:?}",
                batch.response
            );
            self.alerts.extend(batch.alerts.iter().cloned());
        }
        self.emf.extend(report.emf().cloned());
        self.delivered.extend(log);
    }

    async fn sweep(&mut self, tracking: &AwsTracking<Arc<OffsetClock>>) {
        let summary = tracking.run_sweep(None).await.expect("sweep");
        assert_eq!(summary.unconfirmed_images, 0);
        self.alerts.extend(summary.alerts.iter().cloned());
        self.emf.extend(summary.emf.iter().cloned());
    }

    /// The whole scenario: events, a sweep past the SLA, the slow destination released,
    /// a later sweep.
    async fn play(
        &mut self,
        copies: &mut dyn FnMut(&QueuedMessage) -> Copies,
    ) -> AwsTracking<Arc<OffsetClock>> {
        let tracking = self.tracking().await;
        self.settle().await;
        self.pump(&tracking, copies).await;
        self.clock.advance(TimeDelta::minutes(31));
        self.sweep(&tracking).await;
        self.scenario.release_slow(&self.aws).expect("release");
        self.aws
            .flush_replication(&self.scenario.central)
            .expect("flush");
        self.pump(&tracking, copies).await;
        // Past the recheck interval, so overdue records whose events were lost are confirmed.
        self.clock.advance(TimeDelta::minutes(16));
        self.sweep(&tracking).await;
        tracking
    }

    async fn verdicts(&self, tracking: &AwsTracking<Arc<OffsetClock>>) -> Verdicts {
        let mut out = Verdicts::new();
        for push in &self.pushes {
            let image = SourceImage {
                registry: Destination::new(
                    Region::parse(SOURCE_REGION).expect("region"),
                    AccountId::parse(&self.scenario.central).expect("account"),
                ),
                repository: RepositoryName::parse(&push.image.repository).expect("repository"),
                digest: Digest::parse(&push.image.digest).expect("digest"),
            };
            let pipeline = &tracking.pipeline;
            for record in expectations_of(pipeline.store(), &image, &pipeline.settings().policy)
                .await
                .expect("records")
            {
                out.insert(
                    (
                        push.image.repository.clone(),
                        push.image.digest.clone(),
                        record.key.tag.clone(),
                        record.key.destination.clone(),
                    ),
                    record.state,
                );
            }
        }
        out
    }

    fn alert_counts(&self) -> BTreeMap<(String, AlertKind), usize> {
        let mut counts = BTreeMap::new();
        for a in &self.alerts {
            *counts
                .entry((a.key.destination.region.to_string(), a.kind))
                .or_default() += 1;
        }
        counts
    }

    /// The alerts a perfect observer raises: one per failed, tag-lost and overdue item.
    fn expected_alerts(&self, expected: &Verdicts) -> BTreeMap<(String, AlertKind), usize> {
        let slow = self.scenario.slow().expect("slow");
        let mut counts = BTreeMap::new();
        for ((_, _, _, destination), verdict) in expected {
            let kind = match verdict {
                ExpectationState::Failed => Some(AlertKind::Failed),
                ExpectationState::TagLost => Some(AlertKind::TagLost),
                _ if *destination == slow => Some(AlertKind::Overdue),
                _ => None,
            };
            if let Some(kind) = kind {
                *counts
                    .entry((destination.region.to_string(), kind))
                    .or_default() += 1;
            }
        }
        counts
    }
}

/// Sums every EMF value per (metric, destination Region).
fn emf_totals(lines: &[String]) -> HashMap<(String, String), (f64, usize)> {
    let mut totals: HashMap<(String, String), (f64, usize)> = HashMap::new();
    for line in lines {
        let doc: serde_json::Value = serde_json::from_str(line).expect("EMF line is JSON");
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert!(doc["_aws"]["Timestamp"].as_i64().is_some(), "{line}");
        let region = doc["DestinationRegion"].as_str().unwrap_or("-").to_owned();
        for metric in directive["Metrics"].as_array().expect("metrics") {
            let name = metric["Name"].as_str().expect("name").to_owned();
            let values: Vec<f64> = match &doc[&name] {
                serde_json::Value::Array(v) => v.iter().filter_map(|x| x.as_f64()).collect(),
                v => v.as_f64().into_iter().collect(),
            };
            assert!(!values.is_empty(), "{name} has no value in {line}");
            let entry = totals.entry((name, region.clone())).or_default();
            entry.0 += values.iter().sum::<f64>();
            entry.1 += values.len();
        }
    }
    totals
}

#[tokio::test]
async fn thirty_pushes_reach_their_verdicts_with_one_alert_per_problem_and_replay_changes_nothing()
{
    let mut run = start(30).await;
    let tracking = run.play(&mut |_| Copies::Once).await;

    let expected = run.scenario.expected(&run.pushes).expect("expected");
    assert_eq!(expected.len(), 15 * 3 + 15 * 2);
    assert_eq!(run.verdicts(&tracking).await, expected);
    assert_eq!(run.alert_counts(), run.expected_alerts(&expected));
    for alert in run.alerts.iter().filter(|a| a.kind == AlertKind::Failed) {
        assert_eq!(
            alert.failure_code.as_deref(),
            Some(FAILURE_CODE),
            "confirmed with the status API"
        );
    }

    // Metrics: one Replicated per arrival with its tag, a latency per arrival with a known
    // push time, Failed, Overdue and TagLost counts per destination.
    let totals = emf_totals(&run.emf);
    let count = |name: &str, region: &str| {
        totals
            .get(&(name.to_owned(), region.to_owned()))
            .map_or(0.0, |t| t.0)
    };
    let items = |region: &str, verdict: ExpectationState| {
        expected
            .iter()
            .filter(|((_, _, _, d), v)| d.region.as_str() == region && **v == verdict)
            .count() as f64
    };
    assert_eq!(
        count("Replicated", "eu-west-1"),
        items("eu-west-1", ExpectationState::Replicated)
    );
    assert_eq!(count("TagLost", "eu-west-1"), 1.0);
    assert_eq!(count("Replicated", "us-east-1"), 15.0);
    assert_eq!(count("Overdue", "us-east-1"), 15.0);
    assert_eq!(count("Failed", "ap-southeast-2"), 30.0);
    let latencies = totals
        .get(&("ReplicationLatency".to_owned(), "us-east-1".to_owned()))
        .expect("latency");
    assert_eq!(latencies.1, 15, "one latency per late arrival");

    // Alerts reached the SNS topic with their attributes.
    let published = run
        .deployment
        .published_alerts()
        .await
        .expect("published alerts");
    assert!(!published.is_empty());
    for alert in &published {
        for attribute in ["kind", "severity", "destination_region"] {
            assert!(
                alert.attributes.contains_key(attribute),
                "{attribute} missing on {alert:?}"
            );
        }
        assert!(
            alert.subject.starts_with("[replwatch]"),
            "{}",
            alert.subject
        );
    }
    let tag_lost = published
        .iter()
        .find(|a| a.attributes.get("kind").map(String::as_str) == Some("TAG_LOST"))
        .expect("the tag-lost alert");
    assert_eq!(tag_lost.attributes["destination_region"], "eu-west-1");
    assert!(
        tag_lost.message.contains("team-a/web:v1"),
        "{}",
        tag_lost.message
    );
    // The fifteen overdue alerts of one sweep came as one summary.
    let summaries: Vec<_> = published
        .iter()
        .filter(|a| a.attributes.get("kind").map(String::as_str) == Some("SUMMARY"))
        .collect();
    assert_eq!(summaries.len(), 1, "{published:#?}");
    assert!(
        summaries[0].message.contains("15 OVERDUE"),
        "{}",
        summaries[0].message
    );

    // The same notifications reached Slack, each a valid Block Kit message.
    let slack = run.slack.messages();
    assert_eq!(
        slack.len(),
        published.len(),
        "one Slack message per notification"
    );
    for message in &slack {
        let violations = replwatch_aws::slack::block_kit_violations(message);
        assert!(violations.is_empty(), "{violations:?} in {message:#}");
    }

    // A second run of the same events changes nothing: no write, no alert, no metric.
    let before = run.verdicts(&tracking).await;
    for batch in run.delivered.chunks(10) {
        let outcome = tracking
            .process_batch(sqs_event(batch, SOURCE_REGION).expect("event"))
            .await;
        assert!(outcome.response.batch_item_failures.is_empty());
        assert_eq!(outcome.changed, 0, "replay changed records");
        assert!(
            outcome.alerts.is_empty(),
            "replay alerted: {:?}",
            outcome.alerts
        );
        assert!(
            outcome.emf.is_empty(),
            "replay counted metrics: {:?}",
            outcome.emf
        );
    }
    assert_eq!(run.verdicts(&tracking).await, before);
}

#[tokio::test]
async fn lost_and_repeated_events_reach_the_same_verdicts_without_false_alerts() {
    let mut run = start(30).await;
    let mut dropped = 0;
    let mut repeated = 0;
    let mut seen: HashMap<&'static str, usize> = HashMap::new();
    // Exact rates, by arrival order on each queue: of the replication events, every fifth is
    // lost and every tenth (another one) delivered twice; every tenth push event twice.
    let tracking = run
        .play(&mut |m| {
            let n = seen.entry(m.queue).or_default();
            *n += 1;
            match (m.queue, *n % 10) {
                ("replication", 0 | 5) => {
                    dropped += 1;
                    Copies::Drop
                }
                (_, 3) => {
                    repeated += 1;
                    Copies::Twice
                }
                _ => Copies::Once,
            }
        })
        .await;
    assert!(
        dropped > 5 && repeated > 3,
        "the filter must bite: {dropped} dropped, {repeated} repeated"
    );
    let expected = run.scenario.expected(&run.pushes).expect("expected");
    assert_eq!(run.verdicts(&tracking).await, expected);
    assert_eq!(
        run.alert_counts(),
        run.expected_alerts(&expected),
        "no false or repeated alerts"
    );
}

#[tokio::test]
async fn malformed_events_are_parked_once_and_counted_and_unknown_ones_skipped() {
    let aws = LocalAws::from_env().unwrap_or_else(|e| panic!("{e}"));
    let account = unique_account();
    let deployment = LocalDeployment::create(&aws, &account, SOURCE_REGION, &[])
        .await
        .expect("deployment");
    let clock = OffsetClock::new();
    let tracking = deployment.tracking(&clock, &[]).await.expect("tracking");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events/bad");
    let mut messages = Vec::new();
    for name in [
        "bad-digest.json",
        "missing-detail.json",
        "truncated.json",
        "wrong-types.json",
        "unknown-detail-type.json",
    ] {
        messages.push(QueuedMessage {
            queue: "push",
            message_id: name.to_owned(),
            body: std::fs::read_to_string(dir.join(name)).expect("sample"),
        });
    }
    let outcome = tracking
        .process_batch(sqs_event(&messages, SOURCE_REGION).expect("event"))
        .await;
    assert!(
        outcome.response.batch_item_failures.is_empty(),
        "never retried"
    );
    assert_eq!(
        (outcome.parked, outcome.skipped, outcome.handled),
        (4, 1, 0)
    );
    let line = outcome
        .emf
        .iter()
        .find(|l| l.contains("DeadLetteredEvents"))
        .expect("dead-letter metric");
    let doc: serde_json::Value = serde_json::from_str(line).expect("json");
    assert_eq!(doc["DeadLetteredEvents"].as_f64(), Some(4.0));

    let parked = deployment.dead_letters().await.expect("dead letters");
    let mut bodies: Vec<&str> = parked.iter().map(|m| m.body.as_str()).collect();
    bodies.sort();
    let mut sent: Vec<&str> = messages[..4].iter().map(|m| m.body.as_str()).collect();
    sent.sort();
    assert_eq!(bodies, sent, "parked byte for byte, once each");
}

/// Events about a registry the stack does not watch (a destination's edited forwarder, a
/// widened rule) are dropped before any read or write, and counted; the watched registry's own
/// events still go through.
#[tokio::test]
async fn events_about_a_registry_the_stack_does_not_watch_are_dropped_and_counted() {
    let aws = LocalAws::from_env().unwrap_or_else(|e| panic!("{e}"));
    let (account, stranger) = (unique_account(), unique_account());
    let deployment = LocalDeployment::create(&aws, &account, SOURCE_REGION, &[])
        .await
        .expect("deployment");
    let clock = OffsetClock::new();
    let tracking = deployment.tracking(&clock, &[]).await.expect("tracking");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events");
    let sample = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let text = std::fs::read_to_string(dir.join(name)).expect("sample");
        let mut event: serde_json::Value = serde_json::from_str(&text).expect("json");
        edit(&mut event);
        QueuedMessage {
            queue: "replication",
            message_id: format!("{name}-{}", event["id"]),
            body: event.to_string(),
        }
    };
    let messages = [
        // The watched registry's push: taken.
        sample("push-tagged.json", &|e| {
            e["account"] = account.as_str().into()
        }),
        // A push in another account, and in the watched account's other Region.
        sample("push-tagged.json", &|e| {
            e["account"] = stranger.as_str().into()
        }),
        sample("push-tagged.json", &|e| {
            e["account"] = account.as_str().into();
            e["region"] = "eu-central-1".into();
        }),
        // Replications of another account's images, and of the watched account's other Region.
        sample("replication-success.json", &|e| {
            e["detail"]["source-account"] = stranger.as_str().into()
        }),
        sample("replication-failed.json", &|e| {
            e["detail"]["source-account"] = account.as_str().into();
            e["detail"]["source-region"] = "eu-central-1".into();
        }),
    ];
    let outcome = tracking
        .process_batch(sqs_event(&messages, SOURCE_REGION).expect("event"))
        .await;
    assert!(outcome.response.batch_item_failures.is_empty());
    assert_eq!(
        (outcome.handled, outcome.not_watched, outcome.parked),
        (1, 4, 0)
    );
    let line = outcome
        .emf
        .iter()
        .find(|l| l.contains("EventsNotWatched"))
        .expect("EventsNotWatched metric");
    let doc: serde_json::Value = serde_json::from_str(line).expect("json");
    assert_eq!(doc["EventsNotWatched"].as_f64(), Some(4.0));
    assert!(
        deployment
            .dead_letters()
            .await
            .expect("dead letters")
            .is_empty()
    );
}

#[tokio::test]
async fn destinations_forward_only_the_replications_of_the_watched_source_registries() {
    let aws = LocalAws::from_env().unwrap_or_else(|e| panic!("{e}"));
    let central = unique_account();
    let destination = Destination::new(
        Region::parse("eu-west-1").expect("region"),
        AccountId::parse(&central).expect("account"),
    );
    let deployment = LocalDeployment::create(
        &aws,
        &central,
        SOURCE_REGION,
        std::slice::from_ref(&destination),
    )
    .await
    .expect("deployment");
    // Another registry of the account, in a Region replwatch does not watch, replicates into the
    // same destination.
    let foreign_region = "ap-south-1";
    for region in [SOURCE_REGION, foreign_region] {
        push_one_image(&aws, &central, region, std::slice::from_ref(&destination)).await;
    }
    aws.flush_replication(&central).expect("replication");

    assert_eq!(
        forwarded(&deployment, &["/detail/source-region", "/detail/result"]).await,
        vec![vec![SOURCE_REGION.to_owned(), "SUCCESS".to_owned()]]
    );
}

/// Repository `team/app` in `account`/`region`, replicated by the registry's rules to
/// `destinations`, and one image pushed into it.
async fn push_one_image(aws: &LocalAws, account: &str, region: &str, destinations: &[Destination]) {
    aws.ecr(account, region)
        .await
        .create_repository()
        .repository_name("team/app")
        .send()
        .await
        .expect("repository");
    let rules: replwatch_core::ReplicationConfiguration =
        serde_json::from_value(serde_json::json!({"rules": [{"destinations": destinations}]}))
            .expect("rules");
    aws.put_replication_configuration(account, region, &rules)
        .await
        .expect("rules");
    aws.push_image(account, region, "team/app", Some("v1"), region)
        .await
        .expect("push");
}

/// The fields at `pointers` of each replication event forwarded to the central bus.
async fn forwarded(deployment: &LocalDeployment, pointers: &[&str]) -> Vec<Vec<String>> {
    deployment
        .replication_events()
        .await
        .expect("events")
        .iter()
        .map(|m| {
            let event: serde_json::Value = serde_json::from_str(&m.body).expect("event");
            pointers
                .iter()
                .map(|p| {
                    event
                        .pointer(p)
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn a_forwarder_in_an_account_the_central_bus_does_not_admit_is_refused_and_keeps_its_events()
{
    let aws = LocalAws::from_env().unwrap_or_else(|e| panic!("{e}"));
    let (central, partner, stranger) = (unique_account(), unique_account(), unique_account());
    let region = Region::parse("eu-west-1").expect("region");
    let admitted = Destination::new(region.clone(), AccountId::parse(&partner).expect("account"));
    let unlisted = Destination::new(region, AccountId::parse(&stranger).expect("account"));
    // The central bus admits the partner (template.yaml's policy for DestinationAccountIds).
    let deployment = LocalDeployment::create(
        &aws,
        &central,
        SOURCE_REGION,
        std::slice::from_ref(&admitted),
    )
    .await
    .expect("deployment");
    let undelivered = deployment.forwarder_in(&unlisted).await.expect("forwarder");
    push_one_image(&aws, &central, SOURCE_REGION, &[admitted, unlisted]).await;
    aws.flush_replication(&central).expect("replication");

    assert_eq!(
        forwarded(&deployment, &["/account"]).await,
        vec![vec![partner]],
        "only the admitted account's event arrives"
    );

    let sqs = aws_sdk_sqs::Client::new(&aws.config(&stranger, "eu-west-1").await);
    let kept = sqs
        .receive_message()
        .queue_url(&undelivered)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .send()
        .await
        .expect("receive");
    let [message] = kept.messages() else {
        panic!("one undelivered event: {:?}", kept.messages())
    };
    let attribute = |name: &str| {
        message
            .message_attributes()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(attribute("ERROR_CODE"), "NO_PERMISSIONS");
    assert!(attribute("RULE_ARN").contains(":rule/replwatch-forward-replication"));
    let event: serde_json::Value =
        serde_json::from_str(message.body().unwrap_or_default()).expect("event");
    assert_eq!(event["detail-type"], "ECR Replication Action");
}
