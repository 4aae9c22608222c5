//! The backfill functions around the core's fan-out (`replwatch_core::backfill::fanout`):
//!
//! - [`BackfillPlanner`] (`backfill-plan`): reads its input (a rules change from CloudTrail, a
//!   schedule, a manual request), plans, queues the copy jobs and reports `BackfillPlanned`.
//!   An event that cannot be read is parked on the dead-letter queue and acknowledged; a
//!   manual request that cannot be read is refused with the reason, to whoever invoked.
//! - [`BackfillCopier`] (`backfill-copy`): one SQS batch of copy jobs, at bounded concurrency,
//!   with partial batch failures for jobs worth retrying; on the last delivery SQS allows, a
//!   failing job is counted as failed so its run still completes. The invocation whose job
//!   completes a run sends the completion notification.

use std::collections::HashMap;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::StreamExt;
use futures_util::stream;
use replwatch_aws::dead_letter::DeadLetterQueue;
use replwatch_core::Clock;
use replwatch_core::alerts::Notification;
use replwatch_core::backfill::CopyContext;
use replwatch_core::backfill::fanout::{
    CopyJobQueue, CopyMessage, CopyMessageError, CopyMessageOutcome, FanoutError, PlanPorts,
    PlanRunReport, copy_message, plan_run,
};
use replwatch_core::backfill::port::{
    BlobClaims, CopyRegistry, DestinationAccess, InventoryReader, NativeBackfillApi,
    RepositoryCreator,
};
use replwatch_core::backfill::run::{BackfillRunStore, JobOutcome};
use replwatch_core::backfill::trigger::{TriggerError, parse_trigger};
use replwatch_core::clock::Sleeper;
use replwatch_core::metrics::{
    MetricName, MetricPoint, SLACK_WEBHOOK_UNAVAILABLE, dead_lettered_line, emf_lines,
    function_counts_line,
};
use replwatch_core::model::{AccountId, Destination};

use crate::delivery::Delivery;
use crate::settings::{SettingsError, aws_region, whole_number};

/// What the backfill functions read from the environment beyond [`crate::settings::Settings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillSettings {
    /// The source registry: this account, in this Region.
    pub source: Destination,
    /// `BACKFILL_QUEUE_URL`: where `backfill-plan` queues copy jobs.
    pub jobs_queue_url: Option<String>,
    /// `BACKFILL_ROLE_NAME`: the role in other accounts that may read and write their
    /// registries (the destination-account stack's writer role).
    pub role_name: Option<String>,
    /// `BACKFILL_EXTERNAL_ID`: the backfill role's own external id, never the reader's.
    pub external_id: Option<String>,
    /// `BACKFILL_ALLOWED_DESTINATIONS` (`REGION/ACCOUNT`, comma-separated): where a manual
    /// request may copy besides the destinations the replication rules name.
    pub allowed_destinations: Vec<Destination>,
    /// `COPY_CONCURRENCY`: images one `backfill-copy` invocation copies at once.
    pub copy_concurrency: usize,
    /// `MAX_RECEIVE_COUNT`: the jobs queue's redrive `maxReceiveCount`; the delivery with this
    /// count is the last, so a job still failing then is counted as failed.
    pub max_receive_count: u32,
}

impl BackfillSettings {
    pub fn from_env(home_account: &AccountId) -> Result<Self, SettingsError> {
        Self::from_lookup(home_account, |name| std::env::var(name).ok())
    }

    pub fn from_lookup(
        home_account: &AccountId,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let count = |variable: &'static str, default: u32| -> Result<u32, SettingsError> {
            get(variable).map_or(Ok(default), |v| {
                whole_number(variable, &v, 1..=u64::from(u32::MAX)).map(|n| n as u32)
            })
        };
        let external_id = get("BACKFILL_EXTERNAL_ID");
        // Every tracking function and every account's reader role holds the reader's id: were
        // it the backfill's too, any of them would open write access to every account.
        if external_id.is_some() && external_id == get("READER_EXTERNAL_ID") {
            return Err(SettingsError {
                variable: "BACKFILL_EXTERNAL_ID",
                message: "must differ from READER_EXTERNAL_ID (the backfill role has its own)"
                    .into(),
            });
        }
        let allowed_destinations = get("BACKFILL_ALLOWED_DESTINATIONS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| {
                Destination::parse_in(d, home_account).map_err(|e| SettingsError {
                    variable: "BACKFILL_ALLOWED_DESTINATIONS",
                    message: format!("{d:?}: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            source: this_registry(home_account, &lookup)?,
            jobs_queue_url: get("BACKFILL_QUEUE_URL"),
            role_name: get("BACKFILL_ROLE_NAME"),
            external_id,
            allowed_destinations,
            copy_concurrency: count("COPY_CONCURRENCY", 4)? as usize,
            max_receive_count: count("MAX_RECEIVE_COUNT", 5)?,
        })
    }
}

/// The registry of this account in this Region (`AWS_REGION`, which Lambda sets): the source
/// the backfill copies from and the lost-push check lists.
pub fn this_registry(
    home_account: &AccountId,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Destination, SettingsError> {
    let region = aws_region(lookup)?.ok_or(SettingsError {
        variable: "AWS_REGION",
        message: "must be set (Lambda sets it)".into(),
    })?;
    Ok(Destination::new(region, home_account.clone()))
}

/// `backfill-plan`'s services.
pub struct BackfillPlanner<I, N, W, S, Q, C, A> {
    pub inventory: I,
    /// Whether each destination can take images now (its Region enabled in both accounts).
    pub access: A,
    pub native: N,
    pub creator: W,
    pub runs: S,
    pub queue: Q,
    pub clock: C,
    pub source: Destination,
    /// Where a manual request may copy besides the rules' destinations.
    pub allowed_destinations: Vec<Destination>,
    pub dead_letters: Option<DeadLetterQueue>,
    pub namespace: String,
    pub function_name: String,
}

/// What one plan invocation returns (and logs).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanInvocation {
    #[serde(flatten)]
    pub report: PlanRunReport,
    /// EMF lines, printed by the caller.
    #[serde(skip)]
    pub emf: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanFailure {
    /// A manual request the function cannot read: the caller gets the reason.
    #[error("{0}")]
    BadRequest(TriggerError),
    /// A call failed; Lambda's retry (same request id, same run) may succeed.
    #[error(transparent)]
    Fanout(#[from] FanoutError),
}

impl<I, N, W, S, Q, C, A> BackfillPlanner<I, N, W, S, Q, C, A>
where
    I: InventoryReader,
    N: NativeBackfillApi,
    W: RepositoryCreator,
    S: BackfillRunStore,
    Q: CopyJobQueue,
    C: Clock,
    A: DestinationAccess,
{
    /// Handles one invocation; `request_id` names the run.
    pub async fn handle(
        &self,
        input: &[u8],
        request_id: &str,
    ) -> Result<PlanInvocation, PlanFailure> {
        let trigger = match parse_trigger(input) {
            Ok(trigger) => trigger,
            Err(TriggerError::Event(error)) => {
                tracing::error!(
                    event_id = error.id.as_deref(),
                    field = %error.field,
                    error = %error,
                    "malformed event parked on the dead-letter queue"
                );
                let parked = self
                    .park(input, error.id.as_deref(), &error.to_string())
                    .await;
                let now = self.clock.now();
                return Ok(PlanInvocation {
                    report: PlanRunReport {
                        skipped: Some(format!("malformed event: {error}")),
                        dry_run: false,
                        plan: None,
                        run: None,
                        repositories_created: 0,
                        native: Vec::new(),
                        jobs_queued: 0,
                    },
                    emf: if parked {
                        vec![dead_lettered_line(
                            &self.namespace,
                            now,
                            &self.function_name,
                            1,
                        )]
                    } else {
                        Vec::new()
                    },
                });
            }
            Err(request) => {
                tracing::error!(error = %request, "backfill request refused");
                return Err(PlanFailure::BadRequest(request));
            }
        };
        let ports = PlanPorts {
            inventory: &self.inventory,
            access: &self.access,
            native: &self.native,
            creator: &self.creator,
            runs: &self.runs,
            queue: &self.queue,
        };
        let now = self.clock.now();
        let report = match plan_run(
            &ports,
            &self.source,
            trigger,
            Some(&self.allowed_destinations),
            request_id,
            now,
        )
        .await
        {
            Ok(report) => report,
            Err(FanoutError::Refused(reason)) => {
                let refused = TriggerError::Request(reason);
                tracing::error!(error = %refused, "backfill request refused");
                return Err(PlanFailure::BadRequest(refused));
            }
            Err(other) => return Err(other.into()),
        };
        let points: Vec<MetricPoint> = report
            .run
            .iter()
            .flat_map(|run| &run.destinations)
            .map(|(destination, planned)| MetricPoint {
                name: MetricName::BackfillPlanned,
                value: *planned as f64,
                destination: destination.clone(),
            })
            .collect();
        tracing::info!(
            run_id = report.run.as_ref().map(|r| r.id.as_str()),
            skipped = report.skipped.as_deref(),
            dry_run = report.dry_run,
            jobs_queued = report.jobs_queued,
            repositories_created = report.repositories_created,
            native = ?report.native,
            "backfill planned"
        );
        Ok(PlanInvocation {
            emf: emf_lines(&self.namespace, now, &points),
            report,
        })
    }

    async fn park(&self, input: &[u8], event_id: Option<&str>, reason: &str) -> bool {
        let Some(queue) = &self.dead_letters else {
            tracing::error!("no DEAD_LETTER_QUEUE_URL configured; the event is only in this log");
            return false;
        };
        match queue
            .park(&String::from_utf8_lossy(input), event_id, reason)
            .await
        {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(error = %error, "could not park the event");
                false
            }
        }
    }
}

/// `backfill-copy`'s services.
pub struct BackfillCopier<W, B, S, Z, C> {
    /// The watched registry: the only source a job may copy from.
    pub source: Destination,
    pub registry: W,
    pub claims: B,
    pub runs: S,
    pub sleeper: Z,
    pub clock: C,
    pub delivery: Delivery,
    pub dead_letters: Option<DeadLetterQueue>,
    pub namespace: String,
    pub function_name: String,
    pub concurrency: usize,
    pub max_receive_count: u32,
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct CopyBatchOutcome {
    pub response: SqsBatchResponse,
    pub emf: Vec<String>,
    pub copied: usize,
    pub failed: usize,
    pub retried: usize,
    pub parked: usize,
    pub completed_runs: usize,
}

enum MessageResult {
    Done(Box<(CopyMessageOutcome, Destination)>),
    Retry(String),
    Parked,
    /// Could not be parked: SQS keeps it, and its redrive policy moves it aside.
    Unparked(String),
}

impl<W, B, S, Z, C> BackfillCopier<W, B, S, Z, C>
where
    W: CopyRegistry,
    B: BlobClaims,
    S: BackfillRunStore,
    Z: Sleeper,
    C: Clock,
{
    pub async fn process_batch(&self, event: SqsEvent) -> CopyBatchOutcome {
        let context = CopyContext {
            registry: &self.registry,
            claims: &self.claims,
            sleeper: &self.sleeper,
            options: replwatch_core::backfill::CopyOptions::default(),
        };
        let results: Vec<MessageResult> = stream::iter(event.records)
            .map(|message| self.process_message(&context, message))
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        let mut outcome = CopyBatchOutcome::default();
        let mut points = Vec::new();
        let mut notifications = Vec::new();
        for result in results {
            match result {
                MessageResult::Done(done) => {
                    let (done, destination) = *done;
                    if done.first_time {
                        match &done.outcome {
                            JobOutcome::Copied { bytes_uploaded } => {
                                outcome.copied += 1;
                                points.push(point(MetricName::BackfillCopied, 1.0, &destination));
                                points.push(point(
                                    MetricName::BackfillBytes,
                                    *bytes_uploaded as f64,
                                    &destination,
                                ));
                            }
                            JobOutcome::Failed { .. } => {
                                outcome.failed += 1;
                                points.push(point(MetricName::BackfillFailed, 1.0, &destination));
                            }
                        }
                    }
                    if let Some(run) = done.completed_run {
                        outcome.completed_runs += 1;
                        notifications.push(Notification::BackfillCompleted(run));
                    }
                }
                MessageResult::Retry(message_id) | MessageResult::Unparked(message_id) => {
                    outcome.retried += 1;
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = message_id;
                    outcome.response.batch_item_failures.push(failure);
                }
                MessageResult::Parked => outcome.parked += 1,
            }
        }
        let now = self.clock.now();
        let delivery = self.delivery.deliver(&notifications, now).await;
        outcome.emf = emf_lines(&self.namespace, now, &points);
        if delivery.slack_unavailable > 0 {
            outcome.emf.push(function_counts_line(
                &self.namespace,
                now,
                &self.function_name,
                &[(SLACK_WEBHOOK_UNAVAILABLE, 1)],
            ));
        }
        if outcome.parked > 0 {
            outcome.emf.push(dead_lettered_line(
                &self.namespace,
                now,
                &self.function_name,
                outcome.parked as u32,
            ));
        }
        outcome
    }

    async fn process_message(
        &self,
        context: &CopyContext<'_, W, B, Z>,
        message: SqsMessage,
    ) -> MessageResult {
        let message_id = message.message_id.clone().unwrap_or_default();
        let body = message.body.as_deref().unwrap_or_default();
        let parsed: CopyMessage = match serde_json::from_str(body) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::error!(message_id, error = %error, "malformed copy job parked on the dead-letter queue");
                return self
                    .park(body, message_id, &format!("not a copy job: {error}"))
                    .await;
            }
        };
        let receives = receive_count(&message.attributes);
        let last_attempt = receives >= self.max_receive_count;
        let result = copy_message(
            context,
            &self.runs,
            &self.source,
            &parsed,
            last_attempt,
            || self.clock.now(),
        )
        .await;
        match result {
            Ok(done) => {
                match &done.outcome {
                    JobOutcome::Copied { bytes_uploaded } => tracing::info!(
                        run_id = parsed.run_id,
                        job = %parsed.job,
                        bytes_uploaded,
                        first_time = done.first_time,
                        "image copied"
                    ),
                    JobOutcome::Failed { reason } => tracing::warn!(
                        run_id = parsed.run_id,
                        job = %parsed.job,
                        reason,
                        receives,
                        "image not copied; counted as failed"
                    ),
                }
                MessageResult::Done(Box::new((done, parsed.job.destination.clone())))
            }
            Err(CopyMessageError::Refused { reason }) => {
                tracing::error!(message_id, run_id = parsed.run_id, job = %parsed.job, reason, "copy job refused and parked on the dead-letter queue");
                self.park(body, message_id, &format!("copy job refused: {reason}"))
                    .await
            }
            Err(error @ CopyMessageError::Retry { .. }) => {
                tracing::warn!(message_id, run_id = parsed.run_id, receives, error = %error, "copy job will be delivered again");
                MessageResult::Retry(message_id)
            }
        }
    }

    /// Parks `body` on the dead-letter queue with `reason`; a message that cannot be parked
    /// stays on its queue (delivered again) rather than being lost.
    async fn park(&self, body: &str, message_id: String, reason: &str) -> MessageResult {
        match &self.dead_letters {
            Some(queue) => match queue.park(body, Some(&message_id), reason).await {
                Ok(()) => MessageResult::Parked,
                Err(e) => {
                    tracing::error!(error = %e, "could not park the job");
                    MessageResult::Unparked(message_id)
                }
            },
            None => MessageResult::Parked,
        }
    }
}

fn point(name: MetricName, value: f64, destination: &Destination) -> MetricPoint {
    MetricPoint {
        name,
        value,
        destination: destination.clone(),
    }
}

/// SQS's `ApproximateReceiveCount` (1 on the first delivery).
fn receive_count(attributes: &HashMap<String, String>) -> u32 {
    attributes
        .get("ApproximateReceiveCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> AccountId {
        AccountId::parse("111111111111").expect("account")
    }

    #[test]
    fn the_source_is_this_account_in_this_region() {
        let settings = BackfillSettings::from_lookup(&account(), |name| match name {
            "AWS_REGION" => Some("us-west-2".into()),
            "BACKFILL_QUEUE_URL" => Some("https://sqs/jobs".into()),
            "COPY_CONCURRENCY" => Some("6".into()),
            _ => None,
        })
        .expect("settings");
        assert_eq!(settings.source.to_string(), "us-west-2/111111111111");
        assert_eq!(settings.jobs_queue_url.as_deref(), Some("https://sqs/jobs"));
        assert_eq!(
            (settings.copy_concurrency, settings.max_receive_count),
            (6, 5)
        );
    }

    #[test]
    fn bad_numbers_and_a_missing_region_name_the_variable() {
        let missing = BackfillSettings::from_lookup(&account(), |_| None);
        assert_eq!(missing.map_err(|e| e.variable), Err("AWS_REGION"));
        let zero = BackfillSettings::from_lookup(&account(), |name| match name {
            "AWS_REGION" => Some("us-west-2".into()),
            "MAX_RECEIVE_COUNT" => Some("0".into()),
            _ => None,
        });
        assert_eq!(zero.map_err(|e| e.variable), Err("MAX_RECEIVE_COUNT"));
    }

    #[test]
    fn allowed_destinations_are_region_slash_account_or_a_region_of_this_account() {
        let with = |allowed: &'static str| {
            BackfillSettings::from_lookup(&account(), move |name| match name {
                "AWS_REGION" => Some("us-west-2".into()),
                "BACKFILL_ALLOWED_DESTINATIONS" => Some(allowed.into()),
                _ => None,
            })
        };
        let parsed = with("eu-west-1/222222222222, us-east-1").expect("settings");
        let named: Vec<String> = parsed
            .allowed_destinations
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(named, ["eu-west-1/222222222222", "us-east-1/111111111111"]);
        assert_eq!(
            with("eu-west-1/*").map_err(|e| e.variable),
            Err("BACKFILL_ALLOWED_DESTINATIONS")
        );
        assert!(with("").expect("settings").allowed_destinations.is_empty());
    }

    #[test]
    fn the_backfill_never_takes_the_reader_s_external_id() {
        let with = |backfill: &'static str| {
            BackfillSettings::from_lookup(&account(), move |name| match name {
                "AWS_REGION" => Some("us-west-2".into()),
                "READER_EXTERNAL_ID" => Some("reader-1".into()),
                "BACKFILL_EXTERNAL_ID" => Some(backfill.into()),
                _ => None,
            })
        };
        assert_eq!(
            with("reader-1").map_err(|e| e.variable),
            Err("BACKFILL_EXTERNAL_ID")
        );
        assert_eq!(
            with("backfill-1").map(|s| s.external_id),
            Ok(Some("backfill-1".to_owned()))
        );
    }

    #[test]
    fn the_receive_count_defaults_to_a_first_delivery() {
        let mut attributes = HashMap::new();
        assert_eq!(receive_count(&attributes), 1);
        attributes.insert("ApproximateReceiveCount".to_owned(), "5".to_owned());
        assert_eq!(receive_count(&attributes), 5);
    }
}
