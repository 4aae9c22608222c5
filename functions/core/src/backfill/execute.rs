//! Running a plan: copies at bounded concurrency, and ECR's native backfills within ECR's
//! limits. Runtime-agnostic (stream combinators, an injected [`Sleeper`]), so the CLI runs it
//! on tokio and tests run it in microseconds.
//!
//! - [`create_repositories`] creates what the plan says is missing, before anything else;
//! - [`execute_copies`] runs copy jobs, subjects before their referrers (see
//!   [`referrer_levels`]), at most `concurrency` at once and spread over the
//!   destination repositories (see [`crate::backfill::copy::spread_over_repositories`]), telling a
//!   [`ProgressSink`] as each starts, uploads a blob, ends or fails (a progress bar in the CLI,
//!   metrics in a Lambda). A [`CancelFlag`] (Ctrl-C) stops new jobs from starting while the
//!   running ones finish, so no image is left half-copied by the stop;
//! - [`run_native`] starts native backfills as ECR allows them (one in progress per
//!   destination Region, ten per registry), follows them to the end, and returns per
//!   destination what ECR failed to bring; [`copy_jobs_after_native`] turns that into the copy
//!   pass.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use serde::Serialize;

use crate::backfill::copy::{
    CopyContext, CopyError, CopyJob, CopyObserver, CopyReport, copy_image_observed, referrer_levels,
};
use crate::backfill::plan::{CopyAction, DestinationPlan, PlannedImage};
use crate::backfill::port::{
    BlobClaims, CopyRegistry, NativeBackfill, NativeBackfillApi, NativeBackfillStatus,
    NativeImageResult, NativeStart, RepositoryCreator,
};
use crate::clock::Sleeper;
use crate::model::{Destination, Digest, Region, RepositoryName};
use crate::registry::RegistryError;

/// ECR runs at most this many native backfills at once in one registry.
pub const MAX_NATIVE_BACKFILLS_PER_REGISTRY: usize = 10;

/// Consecutive failed calls to the native backfill API before giving up on it (the
/// destinations concerned then fall back to copies).
const MAX_CONSECUTIVE_API_ERRORS: u32 = 5;

/// A stop request shared between whoever asks (a Ctrl-C handler) and the running backfill.
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Something that happened while a backfill ran.
#[derive(Debug, Clone, Copy)]
pub enum ProgressEvent<'a> {
    CopyStarted {
        job: &'a CopyJob,
    },
    BlobUploaded {
        job: &'a CopyJob,
        blob: &'a Digest,
        bytes: u64,
    },
    CopyDone {
        job: &'a CopyJob,
        report: &'a CopyReport,
    },
    CopyFailed {
        job: &'a CopyJob,
        error: &'a CopyError,
    },
    /// A native backfill started (or, `adopted`, was found already running for the
    /// destination and is followed instead of starting another).
    NativeStarted {
        destination: &'a Destination,
        backfill_id: &'a str,
        adopted: bool,
    },
    /// ECR's limits hold the destination back for now.
    NativeWaiting {
        destination: &'a Destination,
    },
    NativeStatus {
        destination: &'a Destination,
        status: &'a NativeBackfillStatus,
    },
    NativeFinished {
        destination: &'a Destination,
        status: &'a NativeBackfillStatus,
        completed: usize,
        failed: usize,
    },
    /// The destination falls back to copies.
    NativeRefused {
        destination: &'a Destination,
        reason: &'a str,
    },
}

/// Where progress goes.
pub trait ProgressSink: Send + Sync {
    fn report(&self, event: ProgressEvent<'_>);
}

/// Progress nobody watches.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn report(&self, _event: ProgressEvent<'_>) {}
}

/// A copy that failed, and whether running it again may work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedCopy {
    pub job: CopyJob,
    pub error: String,
    pub retryable: bool,
}

/// A tag a copy left alone because the destination holds it immutable on another image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyTagConflict {
    pub destination: Destination,
    pub repository: RepositoryName,
    pub digest: Digest,
    pub tag: String,
}

/// What a run of copies did, in job order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSummary {
    pub jobs: usize,
    /// Jobs that wrote something.
    pub copied: usize,
    /// Jobs the destination already satisfied.
    pub already_complete: usize,
    pub failed: Vec<FailedCopy>,
    /// Jobs a cancel kept from starting.
    pub not_started: Vec<CopyJob>,
    pub manifests_put: usize,
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
    pub blobs_already_present: usize,
    pub blobs_uploaded_elsewhere: usize,
    pub tag_conflicts: Vec<CopyTagConflict>,
}

impl ExecutionSummary {
    /// Every job ran and none failed (tag conflicts are reported, not failures).
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty() && self.not_started.is_empty()
    }

    /// The jobs worth running again: those that failed on a passing error, and those a
    /// cancel kept from starting.
    pub fn jobs_to_retry(&self) -> Vec<CopyJob> {
        self.failed
            .iter()
            .filter(|f| f.retryable)
            .map(|f| f.job.clone())
            .chain(self.not_started.iter().cloned())
            .collect()
    }

    /// Adds a later pass (the copies after a native backfill) to this one.
    pub fn merge(&mut self, later: ExecutionSummary) {
        self.jobs += later.jobs;
        self.copied += later.copied;
        self.already_complete += later.already_complete;
        self.failed.extend(later.failed);
        self.not_started.extend(later.not_started);
        self.manifests_put += later.manifests_put;
        self.blobs_uploaded += later.blobs_uploaded;
        self.bytes_uploaded += later.bytes_uploaded;
        self.blobs_already_present += later.blobs_already_present;
        self.blobs_uploaded_elsewhere += later.blobs_uploaded_elsewhere;
        self.tag_conflicts.extend(later.tag_conflicts);
    }

    fn record(&mut self, job: CopyJob, run: JobRun) {
        match run {
            JobRun::NotStarted => self.not_started.push(job),
            JobRun::Ran(Err(error)) => self.failed.push(FailedCopy {
                retryable: error.retryable(),
                error: error.to_string(),
                job,
            }),
            JobRun::Ran(Ok(report)) => {
                if report.already_complete {
                    self.already_complete += 1;
                } else {
                    self.copied += 1;
                }
                self.manifests_put += report.manifests_put;
                self.blobs_uploaded += report.blobs_uploaded;
                self.bytes_uploaded += report.bytes_uploaded;
                self.blobs_already_present += report.blobs_already_present;
                self.blobs_uploaded_elsewhere += report.blobs_uploaded_elsewhere;
                for tag in report.tag_conflicts {
                    self.tag_conflicts.push(CopyTagConflict {
                        destination: job.destination.clone(),
                        repository: job.destination_repository.clone(),
                        digest: job.digest.clone(),
                        tag,
                    });
                }
            }
        }
    }
}

/// Creates the repositories `plan` lists as missing; returns how many were created (one
/// found already there, made by someone else meanwhile, is fine).
pub async fn create_repositories(
    registry: &impl RepositoryCreator,
    plan: &DestinationPlan,
) -> Result<usize, RegistryError> {
    let mut created = 0;
    for creation in &plan.repositories_to_create {
        if registry
            .create_repository(&plan.destination, &creation.name, &creation.settings)
            .await?
        {
            created += 1;
        }
    }
    Ok(created)
}

/// What became of one job of a run.
enum JobRun {
    /// A cancel came before its turn.
    NotStarted,
    Ran(Result<CopyReport, CopyError>),
}

/// Tells the progress sink of the blobs of one job.
struct JobObserver<'a, P> {
    job: &'a CopyJob,
    progress: &'a P,
}

impl<P: ProgressSink> CopyObserver for JobObserver<'_, P> {
    fn blob_uploaded(&self, blob: &Digest, bytes: u64) {
        self.progress.report(ProgressEvent::BlobUploaded {
            job: self.job,
            blob,
            bytes,
        });
    }
}

/// Runs `jobs`, at most `concurrency` at once (at least one); see the module documentation.
pub async fn execute_copies<R, C, S, P>(
    context: &CopyContext<'_, R, C, S>,
    jobs: Vec<CopyJob>,
    concurrency: usize,
    progress: &P,
    cancel: &CancelFlag,
) -> ExecutionSummary
where
    R: CopyRegistry,
    C: BlobClaims,
    S: Sleeper,
    P: ProgressSink,
{
    let total = jobs.len();
    // Subjects before their referrers: the jobs of each referrer depth after the depth before.
    // Within one, an order that spreads over repositories; reported in the order given.
    let levels = referrer_levels(jobs.into_iter().enumerate().collect(), |(_, job)| job);
    let mut outcomes: Vec<(usize, CopyJob, JobRun)> = Vec::with_capacity(total);
    for level in levels {
        outcomes.extend(run_level(context, level, concurrency, progress, cancel).await);
    }
    // A referrer whose subject is a child of an index copied at its own depth found it
    // missing: once everything else ran, it finds it there.
    let (waiting, mut outcomes): (Vec<_>, Vec<_>) = outcomes
        .into_iter()
        .partition(|o| matches!(o.2, JobRun::Ran(Err(CopyError::SubjectNotYetCopied { .. }))));
    let again = waiting
        .into_iter()
        .map(|(index, job, _)| (index, job))
        .collect();
    outcomes.extend(run_level(context, again, concurrency, progress, cancel).await);
    outcomes.sort_by_key(|(index, _, _)| *index);
    let mut summary = ExecutionSummary {
        jobs: total,
        ..ExecutionSummary::default()
    };
    for (_, job, result) in outcomes {
        summary.record(job, result);
    }
    summary
}

/// Runs the jobs of one referrer depth, at most `concurrency` at once.
async fn run_level<R, C, S, P>(
    context: &CopyContext<'_, R, C, S>,
    order: Vec<(usize, CopyJob)>,
    concurrency: usize,
    progress: &P,
    cancel: &CancelFlag,
) -> Vec<(usize, CopyJob, JobRun)>
where
    R: CopyRegistry,
    C: BlobClaims,
    S: Sleeper,
    P: ProgressSink,
{
    stream::iter(order)
        .map(|(index, job)| async move {
            // Checked as the job's turn comes, not when the run began: a cancel stops
            // everything still queued.
            if cancel.is_cancelled() {
                return (index, job, JobRun::NotStarted);
            }
            progress.report(ProgressEvent::CopyStarted { job: &job });
            let observer = JobObserver {
                job: &job,
                progress,
            };
            let result = copy_image_observed(context, &job, &observer).await;
            match &result {
                Ok(report) => progress.report(ProgressEvent::CopyDone { job: &job, report }),
                // Tried again once the rest ran: not a failure yet.
                Err(CopyError::SubjectNotYetCopied { .. }) => {}
                Err(error) => progress.report(ProgressEvent::CopyFailed { job: &job, error }),
            }
            (index, job, JobRun::Ran(result))
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
}

/// How a destination's native backfill ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeResult {
    /// ECR finished (completely or not): its results, one per image and tag.
    Finished {
        status: NativeBackfillStatus,
        completed: Vec<NativeImageResult>,
        failed: Vec<NativeImageResult>,
    },
    /// ECR refused to start one: the destination falls back to copies.
    Refused { reason: String },
    /// The API failed past retrying: the destination falls back to copies.
    Error { message: String },
    /// A cancel came before it could start.
    NotStarted,
    /// A cancel came while it ran: ECR carries on without us.
    StillRunning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeDestinationOutcome {
    pub destination: Destination,
    pub backfill_id: Option<String>,
    pub result: NativeResult,
}

impl NativeDestinationOutcome {
    /// Whether every planned item of the destination must be copied instead.
    pub fn falls_back_to_copy(&self) -> bool {
        matches!(
            self.result,
            NativeResult::Refused { .. } | NativeResult::Error { .. }
        )
    }
}

/// Per destination, in destination order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NativeOutcome {
    pub destinations: Vec<NativeDestinationOutcome>,
}

impl NativeOutcome {
    pub fn for_destination(&self, destination: &Destination) -> Option<&NativeDestinationOutcome> {
        self.destinations
            .iter()
            .find(|o| &o.destination == destination)
    }
}

/// The copy pass after a native backfill of `plan`'s destination: every item when ECR
/// refused or the API failed; after a finished backfill, the retags (a backfill replicates
/// images, it does not add tags to images already there) and, of each copy, exactly the
/// (image, tag) replications ECR did not report complete: an image whose `v1` arrived and
/// whose `v2` failed gets a job putting `v2` alone (its blobs are there). Replications ECR
/// reported complete are left out; others it may have brought anyway cost one
/// `DescribeImages` each. Nothing while a backfill still runs or never started.
pub fn copy_jobs_after_native(
    plan: &DestinationPlan,
    source: &Destination,
    outcome: &NativeDestinationOutcome,
) -> Vec<CopyJob> {
    match &outcome.result {
        NativeResult::Refused { .. } | NativeResult::Error { .. } => plan.copy_jobs(source),
        NativeResult::NotStarted | NativeResult::StillRunning => Vec::new(),
        NativeResult::Finished { completed, .. } => {
            let completed: HashSet<(&RepositoryName, &Digest, Option<&str>)> = completed
                .iter()
                .map(|r| (&r.repository, &r.digest, r.tag.as_deref()))
                .collect();
            let arrived = |item: &PlannedImage, tag: Option<&str>| {
                completed.contains(&(&item.repository, &item.digest, tag))
            };
            plan.items
                .iter()
                .filter_map(|item| {
                    if item.action == CopyAction::Retag {
                        return Some(plan.copy_job(source, item));
                    }
                    if item.tags.is_empty() {
                        return (!arrived(item, None)).then(|| plan.copy_job(source, item));
                    }
                    let missing: Vec<String> = item
                        .tags
                        .iter()
                        .filter(|tag| !arrived(item, Some(tag)))
                        .cloned()
                        .collect();
                    (!missing.is_empty()).then(|| CopyJob {
                        tags: missing,
                        ..plan.copy_job(source, item)
                    })
                })
                .collect()
        }
    }
}

/// A destination being followed: the backfill id, and its last status (to report changes).
struct Followed {
    id: String,
    destination: Destination,
    status: Option<NativeBackfillStatus>,
}

/// Starts a native backfill to each of `destinations` within ECR's limits, follows them
/// (polling `ListReplicationBackfills` every `poll_interval`) to the end, and reads their
/// results. A backfill already running for one of the destinations is followed, not
/// duplicated. On cancel, nothing more starts and the function returns at once: backfills
/// already started carry on in ECR.
pub async fn run_native<A, S, P>(
    api: &A,
    source: &Destination,
    destinations: &[Destination],
    sleeper: &S,
    poll_interval: Duration,
    progress: &P,
    cancel: &CancelFlag,
) -> NativeOutcome
where
    A: NativeBackfillApi,
    S: Sleeper,
    P: ProgressSink,
{
    let mut pending: Vec<Destination> = Vec::new();
    for destination in destinations {
        if !pending.contains(destination) && destination != source {
            pending.push(destination.clone());
        }
    }
    let mut start_errors: Vec<(Destination, u32)> = Vec::new();
    let mut running: Vec<Followed> = Vec::new();
    let mut outcomes: Vec<NativeDestinationOutcome> = Vec::new();
    // What ECR runs already (ours from an earlier run, or anyone's): known before starting.
    let mut listed: Vec<NativeBackfill> = api.list(source).await.unwrap_or_default();
    for backfill in listed.iter().filter(|b| !b.status.is_terminal()) {
        if let Some(position) = pending.iter().position(|d| *d == backfill.destination) {
            let destination = pending.remove(position);
            progress.report(ProgressEvent::NativeStarted {
                destination: &destination,
                backfill_id: &backfill.id,
                adopted: true,
            });
            running.push(Followed {
                id: backfill.id.clone(),
                destination,
                status: Some(backfill.status.clone()),
            });
        }
    }
    let mut list_errors = 0;
    loop {
        if cancel.is_cancelled() {
            break;
        }
        pending = start_what_fits(
            api,
            source,
            pending,
            &listed,
            &mut running,
            &mut start_errors,
            &mut outcomes,
            progress,
        )
        .await;
        if running.is_empty() && pending.is_empty() {
            break;
        }
        sleeper.sleep(poll_interval).await;
        if cancel.is_cancelled() {
            break;
        }
        match api.list(source).await {
            Ok(list) => {
                list_errors = 0;
                listed = list;
            }
            Err(error) => {
                list_errors += 1;
                if !error.retryable || list_errors >= MAX_CONSECUTIVE_API_ERRORS {
                    let message = error.to_string();
                    for followed in running.drain(..) {
                        outcomes.push(NativeDestinationOutcome {
                            destination: followed.destination,
                            backfill_id: Some(followed.id),
                            result: NativeResult::Error {
                                message: message.clone(),
                            },
                        });
                    }
                    for destination in pending.drain(..) {
                        outcomes.push(NativeDestinationOutcome {
                            destination,
                            backfill_id: None,
                            result: NativeResult::Error {
                                message: message.clone(),
                            },
                        });
                    }
                    break;
                }
                continue;
            }
        }
        let mut still_running = Vec::new();
        for mut followed in running.drain(..) {
            let Some(backfill) = listed.iter().find(|b| b.id == followed.id) else {
                // Just started and not listed yet.
                still_running.push(followed);
                continue;
            };
            if backfill.status.is_terminal() {
                let outcome = finish(
                    api,
                    source,
                    sleeper,
                    poll_interval,
                    followed,
                    &backfill.status,
                )
                .await;
                if let NativeResult::Finished {
                    status,
                    completed,
                    failed,
                } = &outcome.result
                {
                    progress.report(ProgressEvent::NativeFinished {
                        destination: &outcome.destination,
                        status,
                        completed: completed.len(),
                        failed: failed.len(),
                    });
                }
                outcomes.push(outcome);
            } else {
                if followed.status.as_ref() != Some(&backfill.status) {
                    progress.report(ProgressEvent::NativeStatus {
                        destination: &followed.destination,
                        status: &backfill.status,
                    });
                    followed.status = Some(backfill.status.clone());
                }
                still_running.push(followed);
            }
        }
        running = still_running;
    }
    for followed in running {
        outcomes.push(NativeDestinationOutcome {
            destination: followed.destination,
            backfill_id: Some(followed.id),
            result: NativeResult::StillRunning,
        });
    }
    for destination in pending {
        outcomes.push(NativeDestinationOutcome {
            destination,
            backfill_id: None,
            result: NativeResult::NotStarted,
        });
    }
    outcomes.sort_by(|a, b| a.destination.cmp(&b.destination));
    NativeOutcome {
        destinations: outcomes,
    }
}

/// Starts the pending destinations ECR's limits allow now; returns those still waiting.
#[allow(clippy::too_many_arguments)] // the loop state of `run_native`, passed by parts
async fn start_what_fits<A: NativeBackfillApi, P: ProgressSink>(
    api: &A,
    source: &Destination,
    pending: Vec<Destination>,
    listed: &[NativeBackfill],
    running: &mut Vec<Followed>,
    start_errors: &mut Vec<(Destination, u32)>,
    outcomes: &mut Vec<NativeDestinationOutcome>,
    progress: &P,
) -> Vec<Destination> {
    // In progress: what ECR lists as not terminal, and ours (a fresh start may not be listed).
    let mut active: HashSet<&str> = listed
        .iter()
        .filter(|b| !b.status.is_terminal())
        .map(|b| b.id.as_str())
        .collect();
    let mut busy: HashSet<Region> = listed
        .iter()
        .filter(|b| !b.status.is_terminal())
        .map(|b| b.destination.region.clone())
        .collect();
    for followed in running.iter() {
        active.insert(followed.id.as_str());
        busy.insert(followed.destination.region.clone());
    }
    let mut active_count = active.len();
    let mut waiting = Vec::new();
    let mut started = Vec::new();
    for destination in pending {
        if busy.contains(&destination.region) || active_count >= MAX_NATIVE_BACKFILLS_PER_REGISTRY {
            progress.report(ProgressEvent::NativeWaiting {
                destination: &destination,
            });
            waiting.push(destination);
            continue;
        }
        match api.start(source, &destination).await {
            Ok(NativeStart::Started(backfill)) => {
                progress.report(ProgressEvent::NativeStarted {
                    destination: &destination,
                    backfill_id: &backfill.id,
                    adopted: false,
                });
                busy.insert(destination.region.clone());
                active_count += 1;
                started.push(Followed {
                    id: backfill.id,
                    destination,
                    status: Some(backfill.status),
                });
            }
            Ok(NativeStart::LimitReached) => {
                // Someone else's backfill holds the Region or the registry: wait for a turn.
                progress.report(ProgressEvent::NativeWaiting {
                    destination: &destination,
                });
                busy.insert(destination.region.clone());
                waiting.push(destination);
            }
            Ok(NativeStart::Refused { reason }) => {
                progress.report(ProgressEvent::NativeRefused {
                    destination: &destination,
                    reason: &reason,
                });
                outcomes.push(NativeDestinationOutcome {
                    destination,
                    backfill_id: None,
                    result: NativeResult::Refused { reason },
                });
            }
            Err(error) => {
                let attempts = match start_errors.iter_mut().find(|(d, _)| *d == destination) {
                    Some((_, attempts)) => {
                        *attempts += 1;
                        *attempts
                    }
                    None => {
                        start_errors.push((destination.clone(), 1));
                        1
                    }
                };
                if error.retryable && attempts < MAX_CONSECUTIVE_API_ERRORS {
                    waiting.push(destination);
                } else {
                    let message = error.to_string();
                    progress.report(ProgressEvent::NativeRefused {
                        destination: &destination,
                        reason: &message,
                    });
                    outcomes.push(NativeDestinationOutcome {
                        destination,
                        backfill_id: None,
                        result: NativeResult::Error { message },
                    });
                }
            }
        }
    }
    running.extend(started);
    waiting
}

/// Reads the results of a terminal backfill (retrying passing errors).
async fn finish<A: NativeBackfillApi, S: Sleeper>(
    api: &A,
    source: &Destination,
    sleeper: &S,
    poll_interval: Duration,
    followed: Followed,
    status: &NativeBackfillStatus,
) -> NativeDestinationOutcome {
    let mut attempts = 0;
    let result = loop {
        match api.results(source, &followed.id).await {
            Ok(results) => {
                let (completed, failed): (Vec<NativeImageResult>, Vec<NativeImageResult>) =
                    results.into_iter().partition(|r| r.failure.is_none());
                break NativeResult::Finished {
                    status: status.clone(),
                    completed,
                    failed,
                };
            }
            Err(error) => {
                attempts += 1;
                if !error.retryable || attempts >= MAX_CONSECUTIVE_API_ERRORS {
                    break NativeResult::Error {
                        message: error.to_string(),
                    };
                }
                sleeper.sleep(poll_interval).await;
            }
        }
    };
    NativeDestinationOutcome {
        destination: followed.destination,
        backfill_id: Some(followed.id),
        result,
    }
}

#[cfg(test)]
mod tests;
