//! replwatch deployed on the local AWS, wired like `template.yaml`: ECR events on the source's
//! default bus go to the push queue; every destination Region's `ECR Replication Action`
//! events are forwarded to the central bus and from there to the replication queue; alerts go
//! to an SNS topic with an SQS subscription; malformed events to a dead-letter queue. The
//! functions run in this process, fed from those queues exactly as Lambda's SQS event source
//! would feed them.
//!
//! What a user sets besides the stacks is set too, as the test bed enforces it like AWS: the
//! queues carry template.yaml's own queue policies (EventBridge delivers to a queue only as its
//! policy allows), the forwarders' dead-letter queues infra/destination-region.yaml's, and
//! every destination account's registry lets the watched source account replicate into it.

use std::collections::{BTreeSet, HashMap};

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_eventbridge::types::Target;
use replwatch_core::registry::Registry;
use replwatch_core::store::RulesRecord;
use replwatch_core::{AlertOutbox, Clock, Destination, ExpectationStore};
use replwatch_runtime::Tracking;
use replwatch_runtime::batch::BatchOutcome;
use replwatch_runtime::services::{self, AwsTracking};
use replwatch_runtime::settings::Settings;

use crate::{Error, LocalAws, stack_templates};

pub const CENTRAL_BUS: &str = "replwatch-central";

/// The resources of one local deployment.
#[derive(Debug, Clone)]
pub struct LocalDeployment {
    pub aws: LocalAws,
    pub account: String,
    pub region: String,
    pub table: String,
    pub push_queue: String,
    pub replication_queue: String,
    pub dead_letter_queue: String,
    /// Events the rules could not deliver (template.yaml's `EventDeliveryDeadLetterQueue`).
    pub event_dead_letter_queue: String,
    pub alert_topic: String,
    pub alert_queue: String,
    pub namespace: String,
}

/// How many copies of a message the pump hands to the function: lets tests lose and repeat
/// events the way EventBridge may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copies {
    Drop,
    Once,
    Twice,
}

/// One message taken from a queue.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    pub queue: &'static str,
    pub message_id: String,
    pub body: String,
}

/// Messages a pump receives before it hands them to the functions and deletes them.
const PUMP_CHUNK: usize = 200;

/// What a pump delivered.
#[derive(Debug, Default)]
pub struct PumpReport {
    pub received: usize,
    pub delivered: usize,
    pub batches: Vec<BatchOutcome>,
    /// How long each batch's handler ran.
    pub batch_time: Vec<std::time::Duration>,
}

impl PumpReport {
    pub fn emf(&self) -> impl Iterator<Item = &String> {
        self.batches.iter().flat_map(|b| b.emf.iter())
    }

    /// Alerts the batches raised.
    pub fn alerts(&self) -> usize {
        self.batches.iter().map(|b| b.alerts.len()).sum()
    }
}

/// Which replication events the destination Regions forward to the central bus: the
/// `Forward` parameter of infra/destination-region.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Event mode: every `ECR Replication Action`.
    All,
    /// Lean mode: only those whose `result` is `FAILED`.
    FailedOnly,
}

/// An alert as it arrived on the topic's SQS subscription.
#[derive(Debug, Clone)]
pub struct PublishedAlert {
    pub subject: String,
    pub message: String,
    pub attributes: HashMap<String, String>,
}

impl LocalDeployment {
    /// Creates the central resources in `account`/`region` and the forwarding rule in every
    /// destination account and Region, forwarding every replication event.
    pub async fn create(
        aws: &LocalAws,
        account: &str,
        region: &str,
        destinations: &[Destination],
    ) -> Result<Self, Error> {
        Self::create_with(aws, account, region, destinations, Forward::All).await
    }

    /// [`Self::create`], the destination Regions forwarding what `forward` says.
    pub async fn create_with(
        aws: &LocalAws,
        account: &str,
        region: &str,
        destinations: &[Destination],
        forward: Forward,
    ) -> Result<Self, Error> {
        let config = aws.config(account, region).await;
        let events = aws_sdk_eventbridge::Client::new(&config);
        let queue = |name: &'static str| aws.create_queue(account, region, name);
        let push_queue = queue("replwatch-push").await?;
        let replication_queue = queue("replwatch-replication").await?;
        let dead_letter_queue = queue("replwatch-dead-letters").await?;
        let event_dead_letter_queue = queue("replwatch-event-delivery-dead-letters").await?;
        let alert_queue = queue("replwatch-alerts-subscription").await?;
        let queue_arn = |name: &str| format!("arn:aws:sqs:{region}:{account}:{name}");
        let undelivered = || {
            aws_sdk_eventbridge::types::DeadLetterConfig::builder()
                .arn(queue_arn("replwatch-event-delivery-dead-letters"))
                .build()
        };

        // Source events on the default bus.
        let source_pattern = serde_json::json!({
            "source": ["aws.ecr"],
            "detail-type": ["ECR Image Action", "AWS API Call via CloudTrail"]
        });
        let push_rule = events
            .put_rule()
            .name("replwatch-push")
            .event_pattern(source_pattern.to_string())
            .send()
            .await?
            .rule_arn()
            .ok_or("no rule ARN")?
            .to_owned();
        events
            .put_targets()
            .rule("replwatch-push")
            .targets(
                Target::builder()
                    .id("push-queue")
                    .arn(queue_arn("replwatch-push"))
                    .dead_letter_config(undelivered())
                    .build()?,
            )
            .send()
            .await?;

        // The central bus, admitting the destination accounts as template.yaml's policy does,
        // and its rule to the replication queue.
        events.create_event_bus().name(CENTRAL_BUS).send().await?;
        let bus_arn = format!("arn:aws:events:{region}:{account}:event-bus/{CENTRAL_BUS}");
        let others: BTreeSet<&str> = destinations
            .iter()
            .map(|d| d.registry_id.as_str())
            .filter(|a| *a != account)
            .collect();
        if !others.is_empty() {
            let accounts: Vec<&str> = others.into_iter().collect();
            events
                .put_permission()
                .event_bus_name(CENTRAL_BUS)
                .policy(stack_templates::central_bus_policy(&accounts, &bus_arn)?.to_string())
                .send()
                .await?;
        }
        // The shipped rule's pattern: only the watched registry's replications.
        let replication_pattern =
            stack_templates::central_rule_pattern("ReplicationActionRule", account, region)?;
        let replication_rule = events
            .put_rule()
            .name("replwatch-replication")
            .event_bus_name(CENTRAL_BUS)
            .event_pattern(replication_pattern.to_string())
            .send()
            .await?
            .rule_arn()
            .ok_or("no rule ARN")?
            .to_owned();
        events
            .put_targets()
            .rule("replwatch-replication")
            .event_bus_name(CENTRAL_BUS)
            .targets(
                Target::builder()
                    .id("replication-queue")
                    .arn(queue_arn("replwatch-replication"))
                    .dead_letter_config(undelivered())
                    .build()?,
            )
            .send()
            .await?;

        // template.yaml's queue policies, for the local rules: one rule here takes both
        // ImageActionRule's and ReplicationConfigurationRule's events; the scheduled rules are
        // not deployed (the tests drive the schedules), their would-be ARNs stand in.
        let not_deployed = |name: &str| format!("arn:aws:events:{region}:{account}:rule/{name}");
        let (backfill_on_change, rules_check, lost_push_check, sweep_schedule) = (
            not_deployed("replwatch-backfill-on-rule-change"),
            not_deployed("replwatch-rules-check"),
            not_deployed("replwatch-lost-push-check"),
            not_deployed("replwatch-sweep-schedule"),
        );
        let (push_arn, replication_arn, event_dead_letters_arn) = (
            queue_arn("replwatch-push"),
            queue_arn("replwatch-replication"),
            queue_arn("replwatch-event-delivery-dead-letters"),
        );
        let attributes = [
            ("PushQueue.Arn", push_arn.as_str()),
            ("ReplicationQueue.Arn", replication_arn.as_str()),
            (
                "EventDeliveryDeadLetterQueue.Arn",
                event_dead_letters_arn.as_str(),
            ),
            ("ImageActionRule.Arn", push_rule.as_str()),
            ("ReplicationConfigurationRule.Arn", push_rule.as_str()),
            ("ReplicationActionRule.Arn", replication_rule.as_str()),
            ("BackfillOnRuleChangeRule.Arn", backfill_on_change.as_str()),
            ("RulesCheckRule.Arn", rules_check.as_str()),
            ("LostPushCheckRule.Arn", lost_push_check.as_str()),
            ("SweepScheduleRule.Arn", sweep_schedule.as_str()),
        ];
        for (policy, url) in [
            ("PushQueuePolicy", &push_queue),
            ("ReplicationQueuePolicy", &replication_queue),
            (
                "EventDeliveryDeadLetterQueuePolicy",
                &event_dead_letter_queue,
            ),
        ] {
            let document = stack_templates::queue_policy(
                "template.yaml",
                policy,
                &HashMap::new(),
                &attributes,
            )?;
            aws.set_queue_policy(account, region, url, &document)
                .await?;
        }

        // Each destination Region forwards its replication events to the central bus
        // (infra/destination-region.yaml on AWS), and each destination registry of another
        // account lets this one replicate into it (its registry permissions policy).
        for destination in destinations {
            if destination.registry_id.as_str() != account {
                aws.allow_replication_from(
                    destination.registry_id.as_str(),
                    destination.region.as_str(),
                    account,
                )
                .await?;
            }
            forwarder(aws, destination, account, region, forward).await?;
        }

        // Alerts: the topic, with an SQS subscription to read them back.
        let sns = aws_sdk_sns::Client::new(&config);
        let alert_topic = sns
            .create_topic()
            .name("replwatch-alerts")
            .send()
            .await?
            .topic_arn()
            .ok_or("no topic arn")?
            .to_owned();
        sns.subscribe()
            .topic_arn(&alert_topic)
            .protocol("sqs")
            .endpoint(queue_arn("replwatch-alerts-subscription"))
            .send()
            .await?;

        let table = "replwatch-tracking".to_owned();
        replwatch_aws::provisioning::create_tracking_table(
            &aws_sdk_dynamodb::Client::new(&config),
            &table,
        )
        .await?;
        Ok(Self {
            aws: aws.clone(),
            account: account.to_owned(),
            region: region.to_owned(),
            table,
            push_queue,
            replication_queue,
            dead_letter_queue,
            event_dead_letter_queue,
            alert_topic,
            alert_queue,
            namespace: format!("replwatch-local-{account}"),
        })
    }

    /// Stores `url` as the Slack webhook in an SSM SecureString parameter and returns the
    /// parameter name, for `SLACK_WEBHOOK_SECRET`.
    pub async fn slack_webhook_parameter(&self, url: &str) -> Result<String, Error> {
        let name = "/replwatch/slack-webhook";
        aws_sdk_ssm::Client::new(&self.aws.config(&self.account, &self.region).await)
            .put_parameter()
            .name(name)
            .value(url)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await?;
        Ok(name.to_owned())
    }

    /// The functions' environment, as the stack sets it; `extra` adds or overrides variables.
    pub fn environment(&self, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = [
            ("TRACKING_TABLE", self.table.as_str()),
            ("REPLWATCH_HOME_ACCOUNT", self.account.as_str()),
            ("READER_ROLE_NAME", "replwatch-reader"),
            ("READER_EXTERNAL_ID", "replwatch-local"),
            ("METRIC_NAMESPACE", self.namespace.as_str()),
            ("ALERT_TOPIC_ARN", self.alert_topic.as_str()),
            ("DEAD_LETTER_QUEUE_URL", self.dead_letter_queue.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", "replwatch-local"),
            ("AWS_REGION", self.region.as_str()),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        env
    }

    /// The functions' services, built as in Lambda from that environment; one value plays every
    /// function, so it gets both the gauges (sweep) and the dead-letter queue (SQS-fed ones).
    pub async fn tracking<C: Clock>(
        &self,
        clock: C,
        extra: &[(&str, &str)],
    ) -> Result<AwsTracking<C>, Error> {
        let env = self.environment(extra);
        let settings = Settings::from_lookup(|name| env.get(name).cloned())?;
        let sdk = self.aws.config(&self.account, &self.region).await;
        let mut tracking = services::build(&sdk, &settings, clock).await?;
        services::attach_gauges(&mut tracking, &sdk, &settings);
        services::attach_dead_letters(&mut tracking, &sdk, &settings);
        services::attach_sweep_parts(&mut tracking, &sdk, &settings);
        Ok(tracking)
    }

    /// Takes what is waiting on one queue (up to `max` messages).
    async fn receive(
        &self,
        queue: &'static str,
        url: &str,
        max: usize,
    ) -> Result<Vec<(QueuedMessage, String)>, Error> {
        let sqs = aws_sdk_sqs::Client::new(&self.aws.config(&self.account, &self.region).await);
        let mut out = Vec::new();
        while out.len() < max {
            let output = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .visibility_timeout(30)
                .send()
                .await?;
            if output.messages().is_empty() {
                break;
            }
            for m in output.messages() {
                out.push((
                    QueuedMessage {
                        queue,
                        message_id: m.message_id().unwrap_or_default().to_owned(),
                        body: m.body().unwrap_or_default().to_owned(),
                    },
                    m.receipt_handle().unwrap_or_default().to_owned(),
                ));
            }
        }
        Ok(out)
    }

    /// Delivers everything waiting on the push and replication queues to the functions, in
    /// batches of up to ten as the SQS event source does, deleting what they acknowledged.
    /// `copies` decides, per message, whether it is lost, delivered, or delivered twice.
    pub async fn pump<S: ExpectationStore + AlertOutbox + RulesRecord, R: Registry, C: Clock>(
        &self,
        tracking: &Tracking<S, R, C>,
        copies: &mut dyn FnMut(&QueuedMessage) -> Copies,
    ) -> Result<PumpReport, Error> {
        let mut report = self.pump_queue(tracking, "push", 10, copies).await?;
        let replication = self.pump_queue(tracking, "replication", 10, copies).await?;
        report.received += replication.received;
        report.delivered += replication.delivered;
        report.batches.extend(replication.batches);
        report.batch_time.extend(replication.batch_time);
        Ok(report)
    }

    /// [`Self::pump`] for one queue (`push` or `replication`), in batches of up to `batch`
    /// messages (`batch_size`, the event source mapping's `BatchSize`).
    pub async fn pump_queue<
        S: ExpectationStore + AlertOutbox + RulesRecord,
        R: Registry,
        C: Clock,
    >(
        &self,
        tracking: &Tracking<S, R, C>,
        queue: &'static str,
        batch_size: usize,
        copies: &mut dyn FnMut(&QueuedMessage) -> Copies,
    ) -> Result<PumpReport, Error> {
        let sqs = aws_sdk_sqs::Client::new(&self.aws.config(&self.account, &self.region).await);
        let url = match queue {
            "push" => self.push_queue.clone(),
            "replication" => self.replication_queue.clone(),
            other => return Err(format!("no queue {other:?} to pump").into()),
        };
        let mut report = PumpReport::default();
        // In chunks: what is received must be handled and deleted well within the receive's
        // visibility timeout, or it comes back.
        loop {
            let messages = self.receive(queue, &url, PUMP_CHUNK).await?;
            if messages.is_empty() {
                break;
            }
            report.received += messages.len();
            let mut deliveries = Vec::new();
            for (message, _) in &messages {
                match copies(message) {
                    Copies::Drop => {}
                    Copies::Once => deliveries.push(message.clone()),
                    Copies::Twice => {
                        deliveries.push(message.clone());
                        deliveries.push(message.clone());
                    }
                }
            }
            report.delivered += deliveries.len();
            let mut failed = Vec::new();
            for batch in deliveries.chunks(batch_size.max(1)) {
                let started = std::time::Instant::now();
                let outcome = tracking
                    .process_batch(sqs_event(batch, &self.region)?)
                    .await;
                report.batch_time.push(started.elapsed());
                failed.extend(
                    outcome
                        .response
                        .batch_item_failures
                        .iter()
                        .map(|f| f.item_identifier.clone()),
                );
                report.batches.push(outcome);
            }
            let acknowledged: Vec<_> = messages
                .iter()
                .filter(|(message, _)| !failed.contains(&message.message_id))
                .enumerate()
                .map(|(i, (_, handle))| {
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .build()
                })
                .collect::<Result<_, _>>()?;
            for entries in acknowledged.chunks(10) {
                sqs.delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries.to_vec()))
                    .send()
                    .await?;
            }
            // What failed stays invisible until its timeout, as on SQS: a later pump has it.
        }
        Ok(report)
    }

    /// Alerts published on the topic so far (taken off its subscription queue).
    pub async fn published_alerts(&self) -> Result<Vec<PublishedAlert>, Error> {
        let sqs = aws_sdk_sqs::Client::new(&self.aws.config(&self.account, &self.region).await);
        let mut alerts = Vec::new();
        for (message, handle) in self
            .receive("alerts", &self.alert_queue, usize::MAX)
            .await?
        {
            let envelope: serde_json::Value = serde_json::from_str(&message.body)?;
            let attributes = envelope["MessageAttributes"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v["Value"].as_str().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            alerts.push(PublishedAlert {
                subject: envelope["Subject"].as_str().unwrap_or_default().to_owned(),
                message: envelope["Message"].as_str().unwrap_or_default().to_owned(),
                attributes,
            });
            sqs.delete_message()
                .queue_url(&self.alert_queue)
                .receipt_handle(handle)
                .send()
                .await?;
        }
        Ok(alerts)
    }

    /// Deploys infra/destination-region.yaml's forwarder in `destination` (an account the
    /// central bus may not admit), forwarding every replication event of this source.
    pub async fn forwarder_in(&self, destination: &Destination) -> Result<String, Error> {
        forwarder(
            &self.aws,
            destination,
            &self.account,
            &self.region,
            Forward::All,
        )
        .await
    }

    /// Messages parked on the dead-letter queue so far: (body, attributes).
    pub async fn dead_letters(&self) -> Result<Vec<QueuedMessage>, Error> {
        self.take("dead-letters", &self.dead_letter_queue).await
    }

    /// The replication events forwarded to the central bus and waiting for track-replication.
    pub async fn replication_events(&self) -> Result<Vec<QueuedMessage>, Error> {
        self.take("replication", &self.replication_queue).await
    }

    async fn take(&self, queue: &'static str, url: &str) -> Result<Vec<QueuedMessage>, Error> {
        Ok(self
            .receive(queue, url, usize::MAX)
            .await?
            .into_iter()
            .map(|(m, _)| m)
            .collect())
    }
}

/// The Lambda SQS event carrying `messages`, as the event source mapping builds it.
pub fn sqs_event(messages: &[QueuedMessage], region: &str) -> Result<SqsEvent, Error> {
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            serde_json::json!({
                "messageId": m.message_id,
                "receiptHandle": "local",
                "body": m.body,
                "attributes": {},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:{region}:000000000000:replwatch-{}", m.queue),
                "awsRegion": region
            })
        })
        .collect();
    Ok(serde_json::from_value(
        serde_json::json!({ "Records": records }),
    )?)
}

/// The forwarding rule of infra/destination-region.yaml in `destination`, towards the central
/// bus of `account`/`region`, with its dead-letter queue and that queue's policy (the stack's
/// `UndeliveredEventsPolicy`); returns that queue's URL.
async fn forwarder(
    aws: &LocalAws,
    destination: &Destination,
    account: &str,
    region: &str,
    forward: Forward,
) -> Result<String, Error> {
    let bus_arn = format!("arn:aws:events:{region}:{account}:event-bus/{CENTRAL_BUS}");
    let pattern = stack_templates::forwarding_pattern(&HashMap::from([
        ("CentralBusArn", serde_json::json!(bus_arn)),
        ("SourceAccountIds", serde_json::json!([account])),
        ("SourceRegions", serde_json::json!([region])),
        (
            "Forward",
            serde_json::json!(match forward {
                Forward::All => "ALL",
                Forward::FailedOnly => "FAILED",
            }),
        ),
    ]))?;
    let (dest_account, dest_region) = (
        destination.registry_id.as_str(),
        destination.region.as_str(),
    );
    let undelivered = aws
        .create_queue(dest_account, dest_region, "replwatch-forwarder-undelivered")
        .await?;
    let events = aws_sdk_eventbridge::Client::new(&aws.config(dest_account, dest_region).await);
    let rule = events
        .put_rule()
        .name("replwatch-forward-replication")
        .event_pattern(pattern.to_string())
        .send()
        .await?
        .rule_arn()
        .ok_or("no rule ARN")?
        .to_owned();
    let undelivered_arn =
        format!("arn:aws:sqs:{dest_region}:{dest_account}:replwatch-forwarder-undelivered");
    let policy = stack_templates::queue_policy(
        "infra/destination-region.yaml",
        "UndeliveredEventsPolicy",
        &HashMap::new(),
        &[
            ("UndeliveredEvents.Arn", undelivered_arn.as_str()),
            ("ForwardReplicationActions.Arn", rule.as_str()),
        ],
    )?;
    aws.set_queue_policy(dest_account, dest_region, &undelivered, &policy)
        .await?;
    events
        .put_targets()
        .rule("replwatch-forward-replication")
        .targets(
            Target::builder()
                .id("central-bus")
                .arn(&bus_arn)
                .role_arn(format!(
                    "arn:aws:iam::{dest_account}:role/replwatch-forwarder"
                ))
                .dead_letter_config(
                    aws_sdk_eventbridge::types::DeadLetterConfig::builder()
                        .arn(&undelivered_arn)
                        .build(),
                )
                .build()?,
        )
        .send()
        .await?;
    Ok(undelivered)
}
