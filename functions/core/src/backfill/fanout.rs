//! The backfill as the Lambda functions run it: `backfill-plan` plans once and fans the copies
//! out as queue messages ([`plan_run`]); any number of `backfill-copy` invocations each take
//! some ([`copy_message`]).
//!
//! Native destinations are not followed here (a function cannot wait hours): the plan starts
//! ECR's backfill and queues only the retags it will not do. Once a native backfill for a
//! destination has ended, a later plan (the schedule, or a manual invoke) copies whatever is
//! still missing there instead of starting ECR's again, since ECR already failed to bring it.
//!
//! Every step is safe to repeat: a retried plan invocation reuses its run id (its request id)
//! and re-queues jobs that are then counted once; a redelivered copy job finds its blobs and
//! manifest in place and reports nothing new.

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backfill::copy::{CopyContext, CopyJob, CopyReport, copy_image, referrer_levels};
use crate::backfill::execute::create_repositories;
use crate::backfill::inventory::DestinationInventory;
use crate::backfill::plan::{BackfillPlan, CopyAction, PlanRequest, Strategy, plan_backfill};
use crate::backfill::port::{
    BlobClaims, CopyRegistry, DestinationAccess, InventoryReader, NativeBackfillApi, NativeStart,
    RepositoryCreator, refused_destinations,
};
use crate::backfill::run::{BackfillRun, BackfillRunStore, JobOutcome, job_id};
use crate::backfill::trigger::{
    BackfillRequest, BackfillTrigger, added_destinations, backfill_destinations,
    unlisted_destinations,
};
use crate::clock::Sleeper;
use crate::model::Destination;
use crate::registry::RegistryError;
use crate::store::StoreError;

/// One copy job on the queue, with the run it counts towards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyMessage {
    pub run_id: String,
    pub job: CopyJob,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("queue {operation}: {message}")]
pub struct QueueError {
    pub operation: &'static str,
    pub message: String,
}

/// Where copy jobs wait for `backfill-copy` (SQS on AWS).
pub trait CopyJobQueue: Send + Sync {
    /// Queues every message, or fails (a partial send is retried whole: duplicates are
    /// harmless, jobs are idempotent).
    fn enqueue(
        &self,
        messages: &[CopyMessage],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// What `backfill-plan` needs.
pub struct PlanPorts<'a, I, N, W, S, Q, A> {
    /// The inventories, and the configuration in force (`DescribeRegistry`), whatever the
    /// event said.
    pub inventory: &'a I,
    /// Whether each destination can take images now (its Region enabled in both accounts).
    pub access: &'a A,
    pub native: &'a N,
    /// Creates the destination repositories copies go to.
    pub creator: &'a W,
    pub runs: &'a S,
    pub queue: &'a Q,
}

/// What ECR was asked for one native destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum NativeAction {
    Started {
        destination: Destination,
        backfill_id: String,
    },
    AlreadyRunning {
        destination: Destination,
        backfill_id: String,
    },
    /// ECR's limits (one per destination Region, ten per registry): the next plan starts it.
    Deferred { destination: Destination },
    /// ECR refused, or its last backfill there ended and left images behind: copied instead.
    CopiedInstead {
        destination: Destination,
        reason: String,
    },
}

/// What one plan invocation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanRunReport {
    /// Why nothing was planned, when nothing was.
    pub skipped: Option<String>,
    pub dry_run: bool,
    pub plan: Option<BackfillPlan>,
    /// The run the queued jobs count towards (none when nothing was queued).
    pub run: Option<BackfillRun>,
    pub repositories_created: usize,
    pub native: Vec<NativeAction>,
    pub jobs_queued: usize,
}

impl PlanRunReport {
    fn skipped(reason: impl Into<String>) -> Self {
        Self {
            skipped: Some(reason.into()),
            dry_run: false,
            plan: None,
            run: None,
            repositories_created: 0,
            native: Vec::new(),
            jobs_queued: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("plan: {0}")]
    Plan(String),
    /// A request the stack does not allow: retrying it cannot help.
    #[error("backfill request refused: {0}")]
    Refused(String),
}

/// Plans the backfill `trigger` asks for in `source` and fans it out; `run_id` names the run
/// (the invocation's request id, the same on Lambda's retries of one event). With `allowed`,
/// a request naming a destination that neither the rules nor `allowed` name is
/// [`FanoutError::Refused`] before anything is written ([`unlisted_destinations`]); `None`
/// takes any.
pub async fn plan_run<I, N, W, S, Q, A>(
    ports: &PlanPorts<'_, I, N, W, S, Q, A>,
    source: &Destination,
    trigger: BackfillTrigger,
    allowed: Option<&[Destination]>,
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<PlanRunReport, FanoutError>
where
    I: InventoryReader,
    N: NativeBackfillApi,
    W: RepositoryCreator,
    S: BackfillRunStore,
    Q: CopyJobQueue,
    A: DestinationAccess,
{
    let (request, configuration_changed) = match trigger {
        BackfillTrigger::Ignored { reason, .. } => return Ok(PlanRunReport::skipped(reason)),
        BackfillTrigger::ConfigurationChanged { registry, .. } if registry != *source => {
            return Ok(PlanRunReport::skipped(format!(
                "the change is to registry {registry}, this deployment watches {source}"
            )));
        }
        BackfillTrigger::ConfigurationChanged { .. } => (BackfillRequest::default(), true),
        BackfillTrigger::Scheduled { .. } => (BackfillRequest::default(), false),
        BackfillTrigger::Manual(request) => {
            let since_config_change = request.since_config_change;
            (request, since_config_change)
        }
    };
    let configuration = ports.inventory.replication_configuration(source).await?;
    if let Some(allowed) = allowed {
        let unlisted = unlisted_destinations(&request, &configuration, allowed);
        if !unlisted.is_empty() {
            let named: Vec<String> = unlisted.iter().map(ToString::to_string).collect();
            return Err(FanoutError::Refused(format!(
                "destinations {} are neither in the replication rules nor in \
                 BackfillAllowedDestinations",
                named.join(", ")
            )));
        }
    }
    let only_destinations = if configuration_changed {
        let previous = ports.runs.last_configuration(source).await?;
        match added_destinations(previous.as_ref(), &configuration) {
            Some(added) if added.is_empty() => {
                ports
                    .runs
                    .remember_configuration(source, &configuration)
                    .await?;
                return Ok(PlanRunReport::skipped(
                    "the replication rules gained no destination since the last plan: nothing to backfill",
                ));
            }
            other => other,
        }
    } else {
        None
    };

    let filters = request.filters();
    let mut destinations = backfill_destinations(
        &configuration,
        only_destinations.as_deref(),
        &request.destinations,
        source,
    );
    let refused = refused_destinations(ports.access, source, &destinations).await;
    destinations.retain(|d| !refused.iter().any(|(r, _)| r == d));
    let source_inventory = ports
        .inventory
        .repositories(source, &filters.repository_prefixes)
        .await?;
    let mut destination_inventories = Vec::with_capacity(destinations.len());
    for destination in &destinations {
        destination_inventories.push(DestinationInventory {
            destination: destination.clone(),
            repositories: ports
                .inventory
                .repositories(destination, &filters.repository_prefixes)
                .await?,
            creation_templates: ports.inventory.creation_templates(destination).await?,
        });
    }
    let plan = plan_backfill(&PlanRequest {
        source,
        configuration: &configuration,
        source_inventory: &source_inventory,
        destination_inventories: &destination_inventories,
        extra_destinations: &request.destinations,
        filters: &filters,
        force_copy: request.force_copy,
        only_destinations: only_destinations.as_deref(),
        refused: &refused,
    })
    .map_err(|e| FanoutError::Plan(e.to_string()))?;
    let mut report = PlanRunReport {
        skipped: None,
        dry_run: request.dry_run,
        plan: None,
        run: None,
        repositories_created: 0,
        native: Vec::new(),
        jobs_queued: 0,
    };
    if request.dry_run {
        report.plan = Some(plan);
        return Ok(report);
    }
    let listed = if plan
        .destinations
        .iter()
        .any(|p| p.strategy == Strategy::Native && !p.is_empty())
    {
        ports.native.list(source).await?
    } else {
        Vec::new()
    };
    let mut jobs: Vec<CopyJob> = Vec::new();
    let mut planned: BTreeMap<Destination, u64> = BTreeMap::new();
    let mut planned_bytes = 0;
    for destination_plan in plan.destinations.iter().filter(|p| !p.is_empty()) {
        let destination = &destination_plan.destination;
        report.repositories_created += create_repositories(ports.creator, destination_plan).await?;
        let copy_all = match destination_plan.strategy {
            Strategy::Copy => true,
            Strategy::Native => {
                let mine = listed.iter().filter(|b| b.destination == *destination);
                let running = mine.clone().find(|b| !b.status.is_terminal());
                let action = if let Some(running) = running {
                    NativeAction::AlreadyRunning {
                        destination: destination.clone(),
                        backfill_id: running.id.clone(),
                    }
                } else if let Some(ended) = mine.clone().next() {
                    NativeAction::CopiedInstead {
                        destination: destination.clone(),
                        reason: format!(
                            "ECR's backfill {} ended ({:?}) without bringing these images",
                            ended.id, ended.status
                        ),
                    }
                } else {
                    match ports.native.start(source, destination).await? {
                        NativeStart::Started(backfill) => NativeAction::Started {
                            destination: destination.clone(),
                            backfill_id: backfill.id,
                        },
                        NativeStart::LimitReached => NativeAction::Deferred {
                            destination: destination.clone(),
                        },
                        NativeStart::Refused { reason } => NativeAction::CopiedInstead {
                            destination: destination.clone(),
                            reason: format!("ECR refused its backfill: {reason}"),
                        },
                    }
                };
                let copy_all = matches!(action, NativeAction::CopiedInstead { .. });
                report.native.push(action);
                copy_all
            }
        };
        let selected: Vec<CopyJob> = if copy_all {
            planned_bytes += destination_plan.totals.bytes_estimate;
            destination_plan.copy_jobs(source)
        } else {
            // ECR's backfill brings images, not the tags images already there lack.
            destination_plan
                .items
                .iter()
                .filter(|item| item.action == CopyAction::Retag)
                .map(|item| destination_plan.copy_job(source, item))
                .collect()
        };
        if !selected.is_empty() {
            planned.insert(destination.clone(), selected.len() as u64);
            jobs.extend(selected);
        }
    }
    report.plan = Some(plan);
    if !jobs.is_empty() {
        let run = BackfillRun::new(run_id, source.clone(), now, planned, planned_bytes);
        ports.runs.create_run(&run).await?;
        // Subjects queued before their referrers (a referrer taken first waits for its
        // subject: `CopyError::SubjectNotYetCopied` is retried), each depth spread over
        // repositories.
        let messages: Vec<CopyMessage> = referrer_levels(jobs, |job| job)
            .into_iter()
            .flatten()
            .map(|job| CopyMessage {
                run_id: run_id.to_owned(),
                job,
            })
            .collect();
        ports.queue.enqueue(&messages).await?;
        report.jobs_queued = messages.len();
        report.run = Some(run);
    }
    // Last, once the repositories, ECR's backfills, the run and its jobs are durable: rules
    // recorded earlier would make Lambda's retry of a failed invocation see nothing added,
    // and the backfill would be lost. A retry redoes the steps above harmlessly (same run
    // id, repositories and running backfills found, duplicate jobs counted once).
    ports
        .runs
        .remember_configuration(source, &configuration)
        .await?;
    Ok(report)
}

/// What became of one queued job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyMessageOutcome {
    pub outcome: JobOutcome,
    pub report: Option<CopyReport>,
    /// `false` for a redelivery of a job already counted.
    pub first_time: bool,
    /// The run, when this job was its last: notify its completion.
    pub completed_run: Option<BackfillRun>,
}

/// Why a job was not done now.
#[derive(Debug, thiserror::Error)]
pub enum CopyMessageError {
    /// Passing: deliver it again.
    #[error("copy {job}: {message}; will be retried")]
    Retry { job: String, message: String },
    /// Not a job this stack planned: never copied, never retried (park it with the reason).
    #[error("copy job refused: {reason}")]
    Refused { reason: String },
}

/// Why `message` is not a job the backfill planned from `watched`, the one registry it copies
/// from; `None` when it is. A job writes images into another account: the queue's policy
/// keeps others from sending one, and this keeps a job that got in anyway (or a planner bug)
/// from copying anything its run did not plan.
pub fn refusal(
    message: &CopyMessage,
    run: Option<&BackfillRun>,
    watched: &Destination,
) -> Option<String> {
    let job = &message.job;
    let Some(run) = run else {
        return Some(format!("run {} was never planned", message.run_id));
    };
    if job.source != *watched {
        return Some(format!(
            "its source {} is not the watched registry {watched}",
            job.source
        ));
    }
    if run.source != job.source {
        return Some(format!(
            "run {} copies from {}, not {}",
            run.id, run.source, job.source
        ));
    }
    if job.destination == job.source || !run.destinations.contains_key(&job.destination) {
        return Some(format!(
            "run {} plans no copy to {}",
            run.id, job.destination
        ));
    }
    None
}

/// Copies the job of `message` and counts it in its run. A passing error (throttling past
/// the SDK's retries, a network failure) returns [`CopyMessageError::Retry`] so the queue
/// delivers it again, unless `last_attempt`: then, like a permanent error, the job is counted
/// as failed so the run still completes. A job its run did not plan from `watched` is
/// [`CopyMessageError::Refused`] before any ECR call.
pub async fn copy_message<W, B, Z, S>(
    context: &CopyContext<'_, W, B, Z>,
    runs: &S,
    watched: &Destination,
    message: &CopyMessage,
    last_attempt: bool,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<CopyMessageOutcome, CopyMessageError>
where
    W: CopyRegistry,
    B: BlobClaims,
    Z: Sleeper,
    S: BackfillRunStore,
{
    let job = &message.job;
    // Runs are written before their jobs are queued (plan_run), and read consistently.
    let run = runs
        .run(&message.run_id)
        .await
        .map_err(|e| CopyMessageError::Retry {
            job: job.to_string(),
            message: format!("its run could not be read: {e}"),
        })?;
    if let Some(reason) = refusal(message, run.as_ref(), watched) {
        return Err(CopyMessageError::Refused { reason });
    }
    let (outcome, report) = match copy_image(context, job).await {
        Ok(report) => (
            JobOutcome::Copied {
                bytes_uploaded: report.bytes_uploaded,
            },
            Some(report),
        ),
        Err(error) if error.retryable() && !last_attempt => {
            return Err(CopyMessageError::Retry {
                job: job.to_string(),
                message: error.to_string(),
            });
        }
        Err(error) => (
            JobOutcome::Failed {
                reason: error.to_string(),
            },
            None,
        ),
    };
    let id = job_id(&job.destination, &job.destination_repository, &job.digest);
    let recorded = runs
        .record_job(&message.run_id, &id, &outcome, now())
        .await
        .map_err(|e| CopyMessageError::Retry {
            job: job.to_string(),
            message: format!("the copy is done but counting it failed: {e}"),
        })?;
    Ok(CopyMessageOutcome {
        outcome,
        report,
        first_time: recorded.first_time,
        completed_run: recorded.completed_run,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::backfill::copy::{CopyOptions, DEFAULT_CLAIM_TTL, InMemoryBlobClaims};
    use crate::backfill::in_memory_ecr::InMemoryEcr;
    use crate::backfill::port::{NativeBackfill, NativeBackfillStatus, NativeImageResult};
    use crate::backfill::run::InMemoryRunStore;
    use crate::clock::SystemClock;
    use crate::model::{AccountId, Digest, Region, RepositoryName};
    use crate::rules::{ReplicationConfiguration, ReplicationRule};

    fn dest(region: &str, account: &str) -> Destination {
        Destination::new(
            Region::parse(region).expect("region"),
            AccountId::parse(account).expect("account"),
        )
    }

    fn source() -> Destination {
        dest("us-west-2", "111111111111")
    }

    fn configured() -> Destination {
        dest("us-east-1", "111111111111")
    }

    fn extra() -> Destination {
        dest("eu-west-1", "222222222222")
    }

    fn repo(name: &str) -> RepositoryName {
        RepositoryName::parse(name).expect("repository")
    }

    fn configuration(destinations: &[Destination]) -> ReplicationConfiguration {
        ReplicationConfiguration {
            rules: vec![ReplicationRule {
                destinations: destinations.to_vec(),
                repository_filters: Vec::new(),
            }],
        }
    }

    fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// ECR's native backfill, started but never progressing: what a plan sees right after.
    #[derive(Default)]
    struct Native(Mutex<Vec<NativeBackfill>>);

    impl NativeBackfillApi for Native {
        async fn start(
            &self,
            _source: &Destination,
            destination: &Destination,
        ) -> Result<NativeStart, RegistryError> {
            let backfill = NativeBackfill {
                id: format!("bf-{}", lock(&self.0).len() + 1),
                destination: destination.clone(),
                status: NativeBackfillStatus::InProgress,
            };
            lock(&self.0).push(backfill.clone());
            Ok(NativeStart::Started(backfill))
        }

        async fn list(&self, _source: &Destination) -> Result<Vec<NativeBackfill>, RegistryError> {
            Ok(lock(&self.0).clone())
        }

        async fn results(
            &self,
            _source: &Destination,
            _backfill_id: &str,
        ) -> Result<Vec<NativeImageResult>, RegistryError> {
            Ok(Vec::new())
        }
    }

    /// The jobs queue; refuses the next `failures` sends (SQS unavailable).
    #[derive(Default)]
    struct Queue(Mutex<Vec<CopyMessage>>, Mutex<u32>);

    impl CopyJobQueue for Queue {
        async fn enqueue(&self, messages: &[CopyMessage]) -> Result<(), QueueError> {
            let mut failures = lock(&self.1);
            if *failures > 0 {
                *failures -= 1;
                return Err(QueueError {
                    operation: "SendMessageBatch",
                    message: "ServiceUnavailable".into(),
                });
            }
            lock(&self.0).extend(messages.iter().cloned());
            Ok(())
        }
    }

    struct NoWait;

    impl Sleeper for NoWait {
        async fn sleep(&self, _duration: Duration) {
            crate::clock::yield_now().await;
        }
    }

    struct World {
        ecr: InMemoryEcr,
        native: Native,
        runs: InMemoryRunStore,
        queue: Queue,
        access: ClosedRegions,
    }

    /// Destinations whose Region is not enabled: refused with a reason naming the Region.
    #[derive(Default)]
    struct ClosedRegions(Vec<Destination>);

    impl DestinationAccess for ClosedRegions {
        async fn refusal(
            &self,
            _source: &Destination,
            destination: &Destination,
        ) -> Result<Option<String>, RegistryError> {
            Ok(self
                .0
                .contains(destination)
                .then(|| format!("Region {} is DISABLED", destination.region)))
        }
    }

    impl World {
        fn new(destinations: &[Destination]) -> Self {
            let ecr = InMemoryEcr::new();
            let app = repo("team-a/app");
            let base: &[u8] = b"shared base layer";
            ecr.push_image(&source(), &app, &["v1"], &[base, b"app v1"]);
            ecr.push_image(&source(), &app, &["v2", "latest"], &[base, b"app v2"]);
            ecr.push_image(&source(), &app, &[], &[base, b"untagged"]);
            ecr.set_replication_configuration(&source(), configuration(destinations));
            Self {
                ecr,
                native: Native::default(),
                runs: InMemoryRunStore::default(),
                queue: Queue::default(),
                access: ClosedRegions::default(),
            }
        }

        async fn plan(&self, trigger: BackfillTrigger, run_id: &str) -> PlanRunReport {
            self.try_plan(trigger, None, run_id)
                .await
                .expect("plan runs")
        }

        async fn try_plan(
            &self,
            trigger: BackfillTrigger,
            allowed: Option<&[Destination]>,
            run_id: &str,
        ) -> Result<PlanRunReport, FanoutError> {
            let ports = PlanPorts {
                inventory: &self.ecr,
                access: &self.access,
                native: &self.native,
                creator: &self.ecr,
                runs: &self.runs,
                queue: &self.queue,
            };
            plan_run(&ports, &source(), trigger, allowed, run_id, Utc::now()).await
        }

        /// Takes every queued message once, as `backfill-copy` would; returns the completed
        /// runs the copies reported.
        async fn copy_all(&self) -> Vec<BackfillRun> {
            let claims = InMemoryBlobClaims::new(SystemClock, DEFAULT_CLAIM_TTL);
            let context = CopyContext {
                registry: &self.ecr,
                claims: &claims,
                sleeper: &NoWait,
                options: CopyOptions::default(),
            };
            let messages: Vec<CopyMessage> = std::mem::take(&mut *lock(&self.queue.0));
            let mut completed = Vec::new();
            for message in &messages {
                let outcome =
                    copy_message(&context, &self.runs, &source(), message, false, Utc::now)
                        .await
                        .expect("copied");
                completed.extend(outcome.completed_run);
            }
            // A redelivery of every message counts nothing and completes nothing again.
            for message in &messages {
                let outcome =
                    copy_message(&context, &self.runs, &source(), message, false, Utc::now)
                        .await
                        .expect("copied again");
                assert!(!outcome.first_time);
                assert!(outcome.completed_run.is_none());
            }
            completed
        }
    }

    fn manual(destinations: Vec<Destination>) -> BackfillTrigger {
        BackfillTrigger::Manual(BackfillRequest {
            destinations,
            ..BackfillRequest::default()
        })
    }

    #[tokio::test]
    async fn a_request_to_a_destination_the_stack_does_not_allow_is_refused_before_any_write() {
        let world = World::new(&[]);
        let refused = world
            .try_plan(manual(vec![extra()]), Some(&[]), "run-refused")
            .await;
        assert!(
            matches!(&refused, Err(FanoutError::Refused(why)) if why.contains("eu-west-1/222222222222")),
            "{refused:?}"
        );
        assert!(world.runs.run("run-refused").await.expect("read").is_none());
        assert!(lock(&world.queue.0).is_empty(), "nothing queued");
        let allowed = world
            .try_plan(manual(vec![extra()]), Some(&[extra()]), "run-allowed")
            .await
            .expect("an allowed destination plans");
        assert_eq!(allowed.jobs_queued, 3);
    }

    #[tokio::test]
    async fn a_job_its_run_did_not_plan_from_the_watched_registry_is_refused_before_any_copy() {
        let world = World::new(&[]);
        world.plan(manual(vec![extra()]), "run-1").await;
        let planned: CopyMessage = lock(&world.queue.0)[0].clone();
        let stranger = dest("ap-south-1", "999999999999");
        let forged = |edit: &dyn Fn(&mut CopyMessage)| {
            let mut message = planned.clone();
            edit(&mut message);
            message
        };
        let cases = [
            (
                "another source",
                forged(&|m| m.job.source = stranger.clone()),
                "is not the watched registry",
            ),
            (
                "another destination",
                forged(&|m| m.job.destination = stranger.clone()),
                "plans no copy to ap-south-1/999999999999",
            ),
            (
                "back into the source",
                forged(&|m| m.job.destination = source()),
                "plans no copy to",
            ),
            (
                "a run never planned",
                forged(&|m| m.run_id = "run-forged".into()),
                "run run-forged was never planned",
            ),
        ];
        let claims = InMemoryBlobClaims::new(SystemClock, DEFAULT_CLAIM_TTL);
        let context = CopyContext {
            registry: &world.ecr,
            claims: &claims,
            sleeper: &NoWait,
            options: CopyOptions::default(),
        };
        let calls_before = world.ecr.total_calls();
        for (case, message, reason) in cases {
            match copy_message(&context, &world.runs, &source(), &message, true, Utc::now).await {
                Err(CopyMessageError::Refused { reason: given }) => {
                    assert!(given.contains(reason), "{case}: {given}")
                }
                other => panic!("{case}: {other:?}"),
            }
        }
        assert_eq!(
            world.ecr.total_calls(),
            calls_before,
            "no ECR call for a refused job"
        );
        let run = world.runs.run("run-1").await.expect("read").expect("run");
        assert_eq!(
            (run.copied, run.failed),
            (0, 0),
            "nothing counted in the real run"
        );
        // The planned job itself still copies.
        copy_message(&context, &world.runs, &source(), &planned, false, Utc::now)
            .await
            .expect("the planned job copies");
    }

    #[tokio::test]
    async fn a_manual_backfill_fans_out_one_job_per_image_and_completes_once() {
        let world = World::new(&[]);
        let report = world.plan(manual(vec![extra()]), "run-1").await;
        assert_eq!(report.jobs_queued, 3);
        assert_eq!(report.repositories_created, 1);
        let run = report.run.expect("a run");
        assert_eq!(run.planned, 3);
        assert_eq!(run.destinations.get(&extra()), Some(&3));

        let completed = world.copy_all().await;
        assert_eq!(completed.len(), 1, "the run completes exactly once");
        assert_eq!((completed[0].copied, completed[0].failed), (3, 0));
        assert_eq!(
            world
                .ecr
                .tags_of(&extra(), &repo("team-a/app"), &world_digest(&world, "v2")),
            world
                .ecr
                .tags_of(&source(), &repo("team-a/app"), &world_digest(&world, "v2")),
        );

        let again = world.plan(manual(vec![extra()]), "run-2").await;
        assert_eq!(again.jobs_queued, 0);
        assert!(again.run.is_none());
        assert!(again.plan.is_some_and(|p| p.is_empty()));
    }

    #[tokio::test]
    async fn a_destination_that_cannot_take_images_is_refused_and_the_others_planned() {
        let closed = dest("eu-south-1", "333333333333");
        let mut world = World::new(&[]);
        world.access = ClosedRegions(vec![closed.clone()]);
        let report = world
            .plan(manual(vec![extra(), closed.clone()]), "run-1")
            .await;
        let plan = report.plan.expect("a plan");
        let refused: Vec<(&Destination, Option<&str>)> = plan
            .destinations
            .iter()
            .map(|p| (&p.destination, p.refused.as_deref()))
            .collect();
        assert_eq!(
            refused,
            [
                (&closed, Some("Region eu-south-1 is DISABLED")),
                (&extra(), None)
            ]
        );
        // Its inventory is never read (the in-memory ECR would answer, a disabled Region not).
        assert_eq!(report.jobs_queued, 3);
        assert_eq!(report.run.expect("a run").destinations.get(&closed), None);
    }

    fn world_digest(world: &World, tag: &str) -> Digest {
        futures_util::FutureExt::now_or_never(world.ecr.repositories(&source(), &[]))
            .expect("in-memory answers at once")
            .expect("inventory")
            .into_iter()
            .flat_map(|r| r.images)
            .find(|i| i.tags.iter().any(|t| t == tag))
            .map(|i| i.digest)
            .expect("tagged image")
    }

    #[tokio::test]
    async fn configured_destinations_start_ecrs_backfill_and_queue_no_copies() {
        let world = World::new(&[configured()]);
        let report = world
            .plan(
                BackfillTrigger::Scheduled {
                    event_id: "s".into(),
                },
                "run-1",
            )
            .await;
        assert_eq!(
            report.native,
            [NativeAction::Started {
                destination: configured(),
                backfill_id: "bf-1".into()
            }]
        );
        assert_eq!(report.jobs_queued, 0);

        // While it runs, the next plan follows it instead of starting another.
        let report = world
            .plan(
                BackfillTrigger::Scheduled {
                    event_id: "s2".into(),
                },
                "run-2",
            )
            .await;
        assert!(matches!(
            report.native[..],
            [NativeAction::AlreadyRunning { .. }]
        ));
        assert_eq!(lock(&world.native.0).len(), 1);

        // Once it ended without bringing the images, they are copied.
        lock(&world.native.0)[0].status = NativeBackfillStatus::Failed {
            failure_code: Some("ACCESS_DENIED".into()),
        };
        let report = world
            .plan(
                BackfillTrigger::Scheduled {
                    event_id: "s3".into(),
                },
                "run-3",
            )
            .await;
        assert!(matches!(
            report.native[..],
            [NativeAction::CopiedInstead { .. }]
        ));
        assert_eq!(report.jobs_queued, 3);
    }

    #[tokio::test]
    async fn a_configuration_change_plans_only_the_destinations_it_added() {
        let world = World::new(&[configured()]);
        let change = |destinations: &[Destination]| BackfillTrigger::ConfigurationChanged {
            event_id: "e".into(),
            registry: source(),
            configuration: configuration(destinations),
        };
        // Nothing remembered yet: every destination is planned (ECR's backfill starts).
        let first = world.plan(change(&[configured()]), "run-1").await;
        assert_eq!(first.native.len(), 1);

        // The same rules again: nothing added, nothing planned.
        let same = world.plan(change(&[configured()]), "run-2").await;
        assert!(same.skipped.is_some_and(|r| r.contains("no destination")));

        // A new cross-account destination in the rules: only it is planned.
        world
            .ecr
            .set_replication_configuration(&source(), configuration(&[configured(), extra()]));
        let added = world.plan(change(&[configured(), extra()]), "run-3").await;
        let plan = added.plan.expect("a plan");
        let planned: Vec<&Destination> = plan.destinations.iter().map(|p| &p.destination).collect();
        assert_eq!(planned, [&extra()]);

        // A change to another registry is not ours.
        let other = BackfillTrigger::ConfigurationChanged {
            event_id: "e".into(),
            registry: dest("ap-south-1", "111111111111"),
            configuration: configuration(&[extra()]),
        };
        assert!(world.plan(other, "run-4").await.skipped.is_some());
    }

    #[tokio::test]
    async fn a_rules_change_whose_jobs_could_not_be_queued_is_backfilled_by_the_retry() {
        let world = World::new(&[]);
        let change = BackfillTrigger::ConfigurationChanged {
            event_id: "e".into(),
            registry: source(),
            configuration: configuration(&[extra()]),
        };
        world
            .ecr
            .set_replication_configuration(&source(), configuration(&[extra()]));
        // ECR's own backfill to it already ended without the images: they are copied.
        lock(&world.native.0).push(NativeBackfill {
            id: "bf-0".into(),
            destination: extra(),
            status: NativeBackfillStatus::Failed {
                failure_code: Some("ACCESS_DENIED".into()),
            },
        });
        *lock(&world.queue.1) = 1;
        let failed = world.try_plan(change.clone(), None, "request-1").await;
        assert!(
            matches!(failed, Err(FanoutError::Queue(_))),
            "the invocation fails: {failed:?}"
        );
        assert!(lock(&world.queue.0).is_empty());

        // Lambda retries the event with the same request id: the added destination is still
        // new, and its jobs are queued under the same run.
        let retried = world.plan(change.clone(), "request-1").await;
        assert_eq!(retried.skipped, None);
        assert_eq!(retried.jobs_queued, 3);
        assert_eq!(lock(&world.queue.0).len(), 3);
        let completed = world.copy_all().await;
        assert_eq!(completed.len(), 1);
        assert_eq!((completed[0].copied, completed[0].failed), (3, 0));

        // Done and recorded: the same change again adds nothing.
        let again = world.plan(change, "request-2").await;
        assert!(again.skipped.is_some_and(|r| r.contains("no destination")));
    }

    #[tokio::test]
    async fn a_dry_run_plans_and_changes_nothing() {
        let world = World::new(&[]);
        let report = world
            .plan(
                BackfillTrigger::Manual(BackfillRequest {
                    destinations: vec![extra()],
                    dry_run: true,
                    ..BackfillRequest::default()
                }),
                "run-1",
            )
            .await;
        assert!(report.dry_run);
        assert_eq!(report.plan.map(|p| p.totals.images), Some(3));
        assert_eq!(report.jobs_queued, 0);
        assert!(lock(&world.queue.0).is_empty());
        assert_eq!(
            futures_util::FutureExt::now_or_never(world.runs.run("run-1"))
                .expect("at once")
                .expect("read"),
            None
        );
    }
}
