//! The deadline check: what ECR says about each due push in each of its destinations, and the
//! tag incidents that follow.
//!
//! A destination is never reported OVERDUE, NOT_STARTED or FAILED without a look in the
//! destination first: `DescribeImageReplicationStatus` is per image (digest), so after a
//! promotion (the same image pushed with a second tag) it says IN_PROGRESS for the first
//! tag's destinations too, and after a rollback it may say COMPLETE for a push that never
//! arrived. The destination's own images and tags are the truth; the status only says why
//! something is missing. In order, only as far as needed:
//!
//! | the destination has | ECR's status for it | verdict |
//! |---|---|---|
//! | the image, with the pushed tag (or the push was untagged) | anything | REPLICATED |
//! | anything but that | not listed, and the rules read again from ECR do not select it | NOT_SELECTED (counted) |
//! | not the image | IN_PROGRESS / FAILED / not listed | OVERDUE / FAILED / NOT_STARTED |
//! | not the image | COMPLETE | SUPERSEDED (it arrived and was removed since: drift for `replwatch audit`) |
//! | the image without the tag, and a later push moved the tag (the source's tag names another image, or the same image was pushed with it again) | anything | SUPERSEDED (the later push carries the tag) |
//! | the image without the tag, the tag on nothing | IN_PROGRESS / FAILED / else | OVERDUE / FAILED / SUPERSEDED (removed by hand: drift) |
//! | the image without the tag, the tag on another image, tags immutable | anything | TAG_LOST, and the tag's incident (TAG_LOST) |
//! | the same, tags mutable | IN_PROGRESS / FAILED / else | OVERDUE / FAILED / TAG_LOST and the tag's incident (TAG_DIVERGED: an older push of the tag finished last, or it was changed there) |
//!
//! A source image that no longer exists closes everything, silently.
//!
//! Each destination is confirmed on its own: a read that fails (in the destination, or in the
//! source for what the verdict needs) leaves only that destination unconfirmed, retried with
//! backoff, while the others get their verdicts ([`crate::unreadable`]). A check that fails as
//! a whole (the store) is put off by [`FAILED_CHECK_RETRY`], out of the due index's head.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::{StreamExt, future, stream};

use super::{Effects, Pipeline, PipelineError};
use crate::alerts::Alert;
use crate::clock::Clock;
use crate::incident::{Divergence, DivergenceCause, ResolutionReason, TagIncident, TagObservation};
use crate::model::{Destination, Digest, ExpectationKey, SourceImage, TagKey};
use crate::outbox::PendingAlert;
use crate::push::{PushOutcome, TrackedPush};
use crate::registry::{DestinationReplication, ImageReplicationStatus, Registry, RegistryError};
use crate::store::{ExpectationStore, RulesRecord, StoreError, SweepPart};
use crate::tracker::{Applied, Creation, MAX_ATTEMPTS};
use crate::tracking::{ExpectationState, Observation, ReplicationExpectation, TagArrival};
use crate::unreadable::{
    ReadFailure, ReadFailureKind, ReadIncident, ReadIncidentKey, ReadObservation,
};

/// What a sweep did, for its log line and its gauges.
#[derive(Debug, Default)]
pub struct SweepReport {
    pub effects: Effects,
    /// Due pushes, records and incidents looked at.
    pub checked: usize,
    /// Whether more was due than this round took.
    pub more: bool,
    /// Images confirmed with the status API (one call each).
    pub images: usize,
    /// Open tag incidents looked at again.
    pub incidents: usize,
    /// Destinations the check closed as arrived: every one of a push that arrived on time
    /// (its event, if it came, wrote nothing), and records whose event never came.
    pub reconciled: usize,
    /// Destinations of pushes left unconfirmed this time: a registry their confirmation
    /// needs could not be read. Each is retried with backoff; the others got their verdicts.
    pub unconfirmed: usize,
    /// Images and incidents whose check failed as a whole (the store could not be read or
    /// written): each is put off ([`FAILED_CHECK_RETRY`]) so it leaves the head of the due
    /// index.
    pub failures: Vec<PipelineError>,
    /// Of those, how many could not even be put off: they are still at the head of the due
    /// index, so another round would read them again.
    pub stuck: usize,
    /// Registry reads not made because the round had seen that registry down
    /// ([`DOWN_AFTER_FAILURES`]): their destinations were left unconfirmed at once.
    pub skipped_reads: usize,
}

/// How long an image or incident whose check failed as a whole waits before it is tried
/// again.
pub const FAILED_CHECK_RETRY: TimeDelta = TimeDelta::minutes(5);

/// What checking one image did.
#[derive(Debug, Default)]
struct ImageCheck {
    effects: Effects,
    reconciled: usize,
    unconfirmed: usize,
}

/// Why one destination of a push got no verdict.
enum TargetFailure {
    /// A read in a registry failed: this destination waits; the others of the push go on.
    Unread(ReadFailure),
    /// Anything else (the store): the image's whole check fails.
    Other(PipelineError),
}

impl From<PipelineError> for TargetFailure {
    fn from(error: PipelineError) -> Self {
        TargetFailure::Other(error)
    }
}

impl TargetFailure {
    /// A registry read made in `location` failed.
    fn read_in(location: &Destination) -> impl Fn(RegistryError) -> TargetFailure + '_ {
        move |error| TargetFailure::Unread(ReadFailure::new(location.clone(), &error))
    }

    /// A step that reads the source registry (and maybe the store) failed.
    fn in_source(source: &Destination) -> impl Fn(PipelineError) -> TargetFailure + '_ {
        move |error| match error {
            PipelineError::Registry(error) => {
                TargetFailure::Unread(ReadFailure::new(source.clone(), &error))
            }
            other => TargetFailure::Other(other),
        }
    }
}

/// What one sweep round already knows about the registries it reads: the read incidents it
/// saw (so thousands of images waiting on one registry read its incident once), and the
/// registries whose reads keep failing.
#[derive(Default)]
struct RoundMemo {
    open: Mutex<HashSet<ReadIncidentKey>>,
    resolved: Mutex<HashSet<ReadIncidentKey>>,
    /// Per registry: its reads that failed in a row this round, and the last failure.
    failing: Mutex<HashMap<Destination, (u32, ReadFailure)>>,
    /// Reads not made because their registry was down this round.
    skipped: std::sync::atomic::AtomicUsize,
}

/// Reads of one registry that fail as unavailable (5xx, timeouts, throttling) in a row, with
/// none succeeding or refused between, before a round takes the registry as down: the rest of
/// the round leaves what needs it unconfirmed without calling it, so a Region that is down
/// costs each round a few failed calls, and their timeouts, instead of one per image; it is
/// tried again the next round. Three, so that one throttled or dropped call never does it.
/// Refusals never count: they fail at once, and may be one repository's policy alone.
pub const DOWN_AFTER_FAILURES: u32 = 3;

/// One destination of one push to confirm, and where its verdict is kept.
struct Target {
    /// The due push it is checked with (its index), if any.
    push: Option<usize>,
    /// Its own record, or the seed its push would start one from.
    record: ReplicationExpectation,
    /// Whether `record` is stored (the destination has a record of its own).
    stored: bool,
}

/// What ECR says about one push in one destination.
struct Finding {
    observation: Observation,
    /// The tag names another image there than in the source: its incident's news.
    divergence: Option<Divergence>,
}

impl From<Observation> for Finding {
    fn from(observation: Observation) -> Self {
        Self {
            observation,
            divergence: None,
        }
    }
}

/// What ECR's status says when this push may still be on its way: IN_PROGRESS (still
/// replicating) or FAILED (with its failure code); nothing for COMPLETE or a destination it
/// does not list.
fn still_replicating(
    listed: Option<&DestinationReplication>,
    at: DateTime<Utc>,
) -> Option<Observation> {
    match listed {
        Some(DestinationReplication::InProgress) => Some(Observation::StillInProgress { at }),
        Some(DestinationReplication::Failed { failure_code }) => {
            Some(Observation::ReplicationFailed {
                at,
                failure_code: failure_code.clone(),
            })
        }
        _ => None,
    }
}

/// Reads about the source that several destinations of one image may need, made once.
#[derive(Default)]
struct SourceLookups {
    /// The image each tag names in the source.
    tags: Mutex<HashMap<String, Option<Digest>>>,
}

impl RoundMemo {
    /// `read` of `location`, unless the location is down this round
    /// ([`DOWN_AFTER_FAILURES`]): then its last failure, without a call.
    async fn read<T>(
        &self,
        location: &Destination,
        read: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, ReadFailure> {
        if let Some(failure) = self.down(location) {
            self.skipped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(failure);
        }
        let result = read.await;
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(value) => {
                failing.remove(location);
                Ok(value)
            }
            Err(error) => {
                let failure = ReadFailure::new(location.clone(), &error);
                if failure.kind == ReadFailureKind::Unavailable {
                    failing
                        .entry(location.clone())
                        .and_modify(|(n, last)| {
                            *n += 1;
                            *last = failure.clone();
                        })
                        .or_insert((1, failure.clone()));
                } else {
                    // A refusal fails at once (nothing to save) and may be one repository's
                    // policy: the registry's other repositories are still read.
                    failing.remove(location);
                }
                Err(failure)
            }
        }
    }

    fn down(&self, location: &Destination) -> Option<ReadFailure> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(location)
            .filter(|(n, _)| *n >= DOWN_AFTER_FAILURES)
            .map(|(_, failure)| failure.clone())
    }

    fn knows(&self, set: &Mutex<HashSet<ReadIncidentKey>>, key: &ReadIncidentKey) -> bool {
        set.lock().unwrap_or_else(|p| p.into_inner()).contains(key)
    }

    fn learn(&self, set: &Mutex<HashSet<ReadIncidentKey>>, key: ReadIncidentKey) {
        set.lock().unwrap_or_else(|p| p.into_inner()).insert(key);
    }
}

impl<S: ExpectationStore + RulesRecord, R: Registry, C: Clock> Pipeline<S, R, C> {
    /// Confirms about `limit` due pushes, records and incidents with the API, images
    /// concurrently (at most [`super::PipelineSettings::sweep_concurrency`] at once), and
    /// applies what it says. A sweep calls this in rounds, delivering each round's alerts
    /// before the next, until nothing is due or its time is up.
    pub async fn sweep(&self, limit: usize, part: SweepPart) -> Result<SweepReport, PipelineError> {
        self.sweep_reporting(limit, part, |_| {}).await
    }

    /// [`Pipeline::sweep`], calling `on_checked` with what each image's (or incident's) check
    /// did as soon as its writes are stored, so the caller can publish its metrics before
    /// anything else can fail or the invocation be cut off.
    pub async fn sweep_reporting(
        &self,
        limit: usize,
        part: SweepPart,
        on_checked: impl Fn(&Effects) + Sync,
    ) -> Result<SweepReport, PipelineError> {
        let now = self.clock.now();
        let due = self.store.due(now, limit, part).await?;
        let mut report = SweepReport {
            checked: due.len(),
            more: due.more,
            incidents: due.incidents.len(),
            ..SweepReport::default()
        };
        let mut by_image: BTreeMap<SourceImage, (Vec<TrackedPush>, Vec<ReplicationExpectation>)> =
            BTreeMap::new();
        for push in due.pushes {
            by_image.entry(push.image.clone()).or_default().0.push(push);
        }
        for record in due.records {
            by_image
                .entry(record.key.image.clone())
                .or_default()
                .1
                .push(record);
        }
        report.images = by_image.len();
        let concurrency = self.settings.sweep_concurrency.max(1);
        let memo = RoundMemo::default();
        let memo = &memo;
        let report = Mutex::new(report);
        let report_ref = &report;
        let on_checked = &on_checked;
        future::join(
            stream::iter(by_image)
                .map(|(image, (pushes, records))| async move {
                    let checked = self.check_image(image, &pushes, &records, memo, now).await;
                    let put_off = match &checked {
                        Err(_) => self.put_off(pushes, records, now).await,
                        Ok(_) => true,
                    };
                    (checked, put_off)
                })
                .buffer_unordered(concurrency)
                .for_each(|(checked, put_off)| async move {
                    let mut report = report_ref.lock().unwrap_or_else(|p| p.into_inner());
                    match checked {
                        Ok(check) => {
                            on_checked(&check.effects);
                            report.reconciled += check.reconciled;
                            report.unconfirmed += check.unconfirmed;
                            report.effects.merge(check.effects);
                        }
                        Err(error) => {
                            report.failures.push(error);
                            report.stuck += usize::from(!put_off);
                        }
                    }
                }),
            stream::iter(due.incidents)
                .map(|incident| async move {
                    let retry = incident.clone();
                    let checked = self.recheck_incident(incident, now).await;
                    let put_off = match &checked {
                        Err(_) => self.put_off_incident(retry, now).await,
                        Ok(_) => true,
                    };
                    (checked, put_off)
                })
                .buffer_unordered(concurrency)
                .for_each(|(checked, put_off)| async move {
                    let mut report = report_ref.lock().unwrap_or_else(|p| p.into_inner());
                    match checked {
                        Ok(effects) => {
                            on_checked(&effects);
                            report.effects.merge(effects);
                        }
                        Err(error) => {
                            report.failures.push(error);
                            report.stuck += usize::from(!put_off);
                        }
                    }
                }),
        )
        .await;
        let mut report = report.into_inner().unwrap_or_else(|p| p.into_inner());
        report.skipped_reads = memo.skipped.load(std::sync::atomic::Ordering::Relaxed);
        Ok(report)
    }

    /// Puts off the due pushes and records of an image whose check failed as a whole, so they
    /// leave the head of the due index; whether every write took.
    async fn put_off(
        &self,
        pushes: Vec<TrackedPush>,
        records: Vec<ReplicationExpectation>,
        now: DateTime<Utc>,
    ) -> bool {
        let retry_at = now + FAILED_CHECK_RETRY;
        let mut all = true;
        for mut push in pushes {
            push.retry_at = Some(retry_at);
            all &= self.kept_or_moved_on(self.store.save_push(&push).await);
        }
        for mut record in records {
            record.next_check_at = Some(retry_at);
            all &= self.kept_or_moved_on(self.store.save(&record, &[]).await);
        }
        all
    }

    /// Puts off an incident whose recheck failed by one recheck interval.
    async fn put_off_incident(&self, mut incident: TagIncident, now: DateTime<Utc>) -> bool {
        incident.next_check_at = Some(now + self.settings.policy.recheck_interval);
        self.kept_or_moved_on(self.store.save_incident(&incident, &[]).await)
    }

    /// Whether a put-off write took, or someone else wrote the item since (then it is no
    /// longer where it was either).
    fn kept_or_moved_on(&self, written: Result<u64, StoreError>) -> bool {
        match written {
            Ok(_) | Err(StoreError::Conflict { .. }) => true,
            Err(error) => {
                tracing::warn!(error = %error, "a failed check could not be put off");
                false
            }
        }
    }

    /// Checks one image's due pushes and records: one status call, a look in each
    /// destination, then the writes. Destinations of a push without a record of their own
    /// that reached a quiet verdict are closed by the push's closing write; only problems get
    /// records, and the closing write names them.
    async fn check_image(
        &self,
        image: SourceImage,
        pushes: &[TrackedPush],
        records: &[ReplicationExpectation],
        memo: &RoundMemo,
        now: DateTime<Utc>,
    ) -> Result<ImageCheck, PipelineError> {
        let policy = self.settings.policy;
        let mut check = ImageCheck::default();
        let own = if pushes.is_empty() {
            Vec::new()
        } else {
            self.store.for_image(&image).await?
        };
        let mut targets: Vec<Target> = records
            .iter()
            .map(|record| Target {
                push: None,
                record: record.clone(),
                stored: true,
            })
            .collect();
        for (index, push) in pushes.iter().enumerate() {
            for destination in &push.destinations {
                let key = push.key(destination);
                if let Some(target) = targets.iter_mut().find(|t| t.record.key == key) {
                    target.push = Some(index);
                    continue;
                }
                // A record of its own (a failure an event reported) is confirmed again too:
                // the destination may have the image by now. A failure recorded before this
                // push was tracked (named by its event's time, at or after the push) is this
                // push's: it takes the push's time, and is not raised again.
                let own_record = own.iter().find(|r| r.key == key).or_else(|| {
                    own.iter()
                        .filter(|r| {
                            r.pushed_at.is_none()
                                && r.key.tag == push.tag
                                && &r.key.destination == destination
                                && r.key.occurrence >= push.pushed_at
                        })
                        .min_by_key(|r| r.key.occurrence)
                });
                let (record, stored) = match own_record {
                    Some(record) if record.pushed_at.is_none() => {
                        let adopted = self
                            .tracker()
                            .observe(
                                &record.key,
                                &Observation::Pushed { at: push.pushed_at },
                                Creation::ExistingOnly,
                            )
                            .await?;
                        let record = adopted
                            .as_ref()
                            .map_or_else(|| record.clone(), |a| a.record.clone());
                        check.effects.record(adopted);
                        (record, true)
                    }
                    Some(record) => (record.clone(), true),
                    None => (push.seed(destination, &policy), false),
                };
                targets.push(Target {
                    push: Some(index),
                    record,
                    stored,
                });
            }
        }
        // Each destination is confirmed on its own: one that cannot be read is left
        // unconfirmed, and never keeps the others of the push from their verdicts.
        // Only rechecks of destinations waiting on one registry this round has seen down: no
        // call at all (not even the source's status), they wait on with its failure.
        let waiting_on_down = match (pushes.is_empty(), records.first()) {
            (true, Some(first)) => first
                .unconfirmed
                .as_ref()
                .map(|u| &u.failure.location)
                .filter(|location| {
                    records.iter().all(|r| {
                        r.unconfirmed
                            .as_ref()
                            .is_some_and(|u| &u.failure.location == *location)
                    })
                })
                .and_then(|location| memo.down(location)),
            _ => None,
        };
        let status = match waiting_on_down {
            Some(failure) => {
                memo.skipped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(failure)
            }
            None => {
                memo.read(&image.registry, self.registry.replication_status(&image))
                    .await
            }
        };
        let source_gone = matches!(status, Ok(ImageReplicationStatus::SourceImageNotFound));
        let lookups = SourceLookups::default();
        let findings = future::join_all(targets.iter().map(|t| async {
            match &status {
                Ok(status) => {
                    self.confirm_destination(&image, status, &t.record.key, &lookups, memo, now)
                        .await
                }
                Err(failure) => Err(TargetFailure::Unread(failure.clone())),
            }
        }))
        .await;

        let mut closing: Vec<Vec<Applied>> = vec![Vec::new(); pushes.len()];
        let mut recorded: Vec<Vec<_>> = vec![Vec::new(); pushes.len()];
        let mut deleted = vec![false; pushes.len()];
        for (target, finding) in targets.into_iter().zip(findings) {
            let key = target.record.key.clone();
            // A deleted source settles a destination without a read there: that says nothing
            // about whether the destination can be read again.
            let unread_before = target
                .record
                .unconfirmed
                .as_ref()
                .filter(|u| !source_gone || u.failure.location == image.registry)
                .map(|u| u.failure.incident_key());
            let finding = match finding {
                Ok(finding) => finding,
                Err(TargetFailure::Other(error)) => return Err(error),
                Err(TargetFailure::Unread(failure)) => {
                    check.unconfirmed += 1;
                    Observation::Unconfirmed { at: now, failure }.into()
                }
            };
            if let (Some(divergence), Some(tag)) = (finding.divergence, &key.tag) {
                let tag_key = TagKey {
                    registry: key.image.registry.clone(),
                    repository: key.image.repository.clone(),
                    tag: tag.clone(),
                    destination: key.destination.clone(),
                };
                self.diverged(&tag_key, divergence, now, &mut check.effects)
                    .await?;
            }
            let observation = finding.observation;
            let arrived = matches!(
                observation,
                Observation::Arrived {
                    tag: TagArrival::Present | TagArrival::Superseded,
                    ..
                }
            );
            let Some(index) = target.push.filter(|_| !target.stored) else {
                let applied = self
                    .tracker()
                    .observe(&key, &observation, Creation::ExistingOnly)
                    .await?;
                if arrived && applied.as_ref().is_some_and(|a| a.transition.changed) {
                    check.reconciled += 1;
                }
                if let Some(applied) = &applied {
                    self.after_late_arrival(applied, now, &mut check.effects)
                        .await?;
                    self.follow_reads(applied, unread_before, memo, now, &mut check.effects)
                        .await?;
                }
                check.effects.record(applied);
                if let Some(index) = target.push {
                    recorded[index].push(key.destination);
                }
                continue;
            };
            let mut record = target.record.clone();
            let transition = record.apply(&observation, &policy);
            if record.state.is_closed() && record.state.alert().is_none() {
                deleted[index] |= record.state == ExpectationState::Deleted;
                closing[index].push(Applied {
                    record,
                    transition,
                    alerts: Vec::new(),
                });
            } else {
                let applied = self
                    .tracker()
                    .observe_seeded(&target.record, &observation)
                    .await?;
                if let Some(applied) = &applied {
                    self.follow_reads(applied, unread_before, memo, now, &mut check.effects)
                        .await?;
                }
                check.effects.record(applied);
                recorded[index].push(key.destination);
            }
        }

        for (((push, closed), recorded), deleted) in
            pushes.iter().zip(closing).zip(recorded).zip(deleted)
        {
            let mut push = push.clone();
            let outcome = if deleted {
                PushOutcome::Deleted { at: now }
            } else {
                PushOutcome::Confirmed {
                    at: now,
                    closed: closed
                        .iter()
                        .filter(|a| a.record.state != ExpectationState::Replicated)
                        .map(|a| (a.record.key.destination.clone(), a.record.state))
                        .collect(),
                    recorded,
                }
            };
            push.close(outcome, &policy);
            match self.store.save_push(&push).await {
                Ok(_) => {
                    check.effects.pushes_written += 1;
                    check.reconciled += closed
                        .iter()
                        .filter(|a| {
                            matches!(
                                a.record.state,
                                ExpectationState::Replicated | ExpectationState::Superseded
                            )
                        })
                        .count();
                    for applied in closed {
                        check.effects.record(Some(applied));
                    }
                }
                // Another sweep (or a delete) settled it first and counted what it closed.
                Err(StoreError::Conflict { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Ok(check)
    }

    /// Keeps the read incidents in step with one destination's outcome: unconfirmed past the
    /// grace, it holds its registry's incident open (opening it, with its one alert);
    /// confirmed after being unconfirmed, it resolves the incident it was held by.
    async fn follow_reads(
        &self,
        applied: &Applied,
        unread_before: Option<ReadIncidentKey>,
        memo: &RoundMemo,
        now: DateTime<Utc>,
        effects: &mut Effects,
    ) -> Result<(), PipelineError> {
        let record = &applied.record;
        match (&record.unconfirmed, unread_before) {
            (Some(unconfirmed), _) if unconfirmed.counted => {
                let failure = &unconfirmed.failure;
                let key = failure.incident_key();
                if memo.knows(&memo.open, &key) {
                    return Ok(());
                }
                let observation = ReadObservation::Unreadable {
                    at: now,
                    failure: failure.clone(),
                    waiting: record.key.clone(),
                };
                self.observe_reads(&key, &observation, now, effects).await?;
                memo.learn(&memo.open, key);
            }
            (None, Some(key)) => {
                if memo.knows(&memo.resolved, &key) {
                    return Ok(());
                }
                let observation = ReadObservation::Readable { at: now };
                self.observe_reads(&key, &observation, now, effects).await?;
                memo.learn(&memo.resolved, key);
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies `observation` to the read incident of `key` (read, transition, conditional
    /// write with the alert it raises; on a lost race, again).
    async fn observe_reads(
        &self,
        key: &ReadIncidentKey,
        observation: &ReadObservation,
        now: DateTime<Utc>,
        effects: &mut Effects,
    ) -> Result<(), PipelineError> {
        write_incident(
            key,
            async || self.store.read_incident(key).await,
            |current| {
                let (incident, transition) = ReadIncident::observe(current, observation);
                let incident = incident.filter(|_| transition.changed)?;
                let alerts = transition
                    .raised
                    .map(|kind| Alert::for_read_incident(kind, &incident, now))
                    .into_iter()
                    .collect();
                Some((incident, alerts))
            },
            async |incident, pending| self.store.save_read_incident(incident, pending).await,
            effects,
        )
        .await
    }

    /// What ECR says about the push of `key` in its destination: the table in the module
    /// documentation, each read made only when the ones before left the question open.
    async fn confirm_destination(
        &self,
        image: &SourceImage,
        status: &ImageReplicationStatus,
        key: &ExpectationKey,
        lookups: &SourceLookups,
        memo: &RoundMemo,
        now: DateTime<Utc>,
    ) -> Result<Finding, TargetFailure> {
        let at = now;
        let in_destination = TargetFailure::read_in(&key.destination);
        let in_source = TargetFailure::in_source(&image.registry);
        if *status == ImageReplicationStatus::SourceImageNotFound {
            return Ok(Observation::SourceDeleted { at }.into());
        }
        let arrived = |tag: TagArrival| -> Finding {
            Observation::Arrived {
                arrived_at: None,
                observed_at: now,
                tag,
            }
            .into()
        };
        let destination = &key.destination;
        // The first read in the destination: where a Region that is down shows, so the one
        // the round gates on.
        let tags = memo
            .read(
                destination,
                self.registry
                    .image_tags(destination, &image.repository, &image.digest),
            )
            .await
            .map_err(TargetFailure::Unread)?;
        let Some(tag) = &key.tag else {
            if tags.is_some() {
                return Ok(arrived(TagArrival::Present));
            }
            return self
                .missing(key, status.for_destination(destination), now)
                .await
                .map_err(&in_source);
        };
        let listed = status.for_destination(destination);
        // ECR's status is the image's: IN_PROGRESS may be this push still replicating, or
        // another push of the image. Where it would move the tag when it finishes (a mutable
        // repository), this push is looked at again until ECR is done with the image: a late
        // finish can take the tag from a newer push, which nothing would check again.
        let in_flight = async || -> Result<bool, TargetFailure> {
            Ok(matches!(listed, Some(DestinationReplication::InProgress))
                && !self
                    .registry
                    .tag_mutability(destination, &image.repository)
                    .await
                    .map_err(&in_destination)?
                    .is_some_and(|m| m.is_immutable(tag)))
        };
        let waiting_or = |finding: Finding, waiting: bool| {
            if waiting {
                Observation::Waiting { at }.into()
            } else {
                finding
            }
        };
        if tags.as_ref().is_some_and(|t| t.contains(tag)) {
            return Ok(waiting_or(arrived(TagArrival::Present), in_flight().await?));
        }
        if listed.is_none() && !self.selected_since_push(key).await.map_err(&in_source)? {
            return Ok(Observation::NotSelected { at }.into());
        }
        if tags.is_none() {
            return self.missing(key, listed, now).await.map_err(&in_source);
        }
        // The image is there without the tag. Only the source's newest push of the tag must
        // carry it: a later one (of another image, or of this one again) carries it instead.
        if self
            .source_tag(image, tag, lookups)
            .await
            .map_err(&in_source)?
            .as_ref()
            != Some(&image.digest)
            || self.pushed_again(key, tag).await?
        {
            return Ok(waiting_or(
                arrived(TagArrival::Superseded),
                in_flight().await?,
            ));
        }
        let holder = self
            .registry
            .tagged_image(destination, &image.repository, tag)
            .await
            .map_err(&in_destination)?
            .filter(|holder| holder != &image.digest);
        let Some(holder) = holder else {
            // The tag is on nothing: ECR never leaves it so, so unless this push is still
            // replicating, it was removed there by hand (drift, for `replwatch audit`).
            return Ok(still_replicating(listed, at)
                .map_or_else(|| arrived(TagArrival::Superseded), Finding::from));
        };
        let immutable = self
            .registry
            .tag_mutability(destination, &image.repository)
            .await
            .map_err(&in_destination)?
            .is_some_and(|m| m.is_immutable(tag));
        if !immutable && let Some(observation) = still_replicating(listed, at) {
            // This push's replication will still move the tag.
            return Ok(observation.into());
        }
        let cause = if immutable {
            DivergenceCause::ImmutableHeld
        } else if self
            .pushed_before(image, &holder, tag, key.occurrence)
            .await?
        {
            DivergenceCause::OlderReplicationLast
        } else {
            DivergenceCause::ChangedInDestination
        };
        Ok(Finding {
            observation: Observation::Arrived {
                arrived_at: None,
                observed_at: now,
                tag: TagArrival::Lost {
                    held_by: holder.clone(),
                },
            },
            divergence: Some(Divergence {
                cause,
                expected: image.digest.clone(),
                found: Some(holder),
            }),
        })
    }

    /// The image is not in the destination: why, as ECR's status says.
    async fn missing(
        &self,
        key: &ExpectationKey,
        listed: Option<&DestinationReplication>,
        at: DateTime<Utc>,
    ) -> Result<Finding, PipelineError> {
        Ok(match (still_replicating(listed, at), listed) {
            (Some(replicating), _) => replicating,
            // ECR says the copy is done, but the destination no longer shows it (a lifecycle
            // rule or a hand removed it): replication did its part, so no alert; what the
            // destination holds now is drift, for `replwatch audit`.
            (None, Some(DestinationReplication::Complete)) => Observation::Arrived {
                arrived_at: None,
                observed_at: at,
                tag: TagArrival::Superseded,
            },
            (None, _) if self.selected_since_push(key).await? => Observation::NotStarted { at },
            (None, _) => Observation::NotSelected { at },
        }
        .into())
    }

    /// Whether the rules ECR had at the push (or since) select the destination of `key`.
    /// ECR's events give the push time to the second, so only rules seen a second after it
    /// are surely later than the push.
    async fn selected_since_push(&self, key: &ExpectationKey) -> Result<bool, PipelineError> {
        let registry = &key.image.registry;
        Ok(self
            .configuration_since(registry, key.occurrence + TimeDelta::seconds(1))
            .await?
            .destinations_for(registry, &key.image.repository)
            .contains(&key.destination))
    }

    /// The image `tag` names in the source now, read once per image check.
    async fn source_tag(
        &self,
        image: &SourceImage,
        tag: &str,
        lookups: &SourceLookups,
    ) -> Result<Option<Digest>, PipelineError> {
        if let Some(known) = lookups
            .tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tag)
        {
            return Ok(known.clone());
        }
        let holder = self
            .registry
            .tagged_image(&image.registry, &image.repository, tag)
            .await?;
        lookups
            .tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tag.to_owned(), holder.clone());
        Ok(holder)
    }

    /// Whether the image and tag of `key` were pushed again after its push.
    async fn pushed_again(&self, key: &ExpectationKey, tag: &str) -> Result<bool, PipelineError> {
        Ok(self
            .store
            .latest_push(&key.image, Some(tag), None)
            .await?
            .is_some_and(|p| p.pushed_at > key.occurrence))
    }

    /// Whether `holder` was pushed with `tag` at or before `at`: an older build of the tag.
    async fn pushed_before(
        &self,
        image: &SourceImage,
        holder: &Digest,
        tag: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, PipelineError> {
        let older = SourceImage {
            digest: holder.clone(),
            ..image.clone()
        };
        Ok(self
            .store
            .latest_push(&older, Some(tag), Some(at))
            .await?
            .is_some())
    }

    /// A push that arrived after its check (a problem was raised for it, or it was left
    /// waiting) may have taken its tag back from a newer push that arrived and was checked
    /// already (an older build finishing last, in a mutable destination): nothing would check
    /// the tag again, so the arrival does. The tag diverges when it names this push's image there while the source's names
    /// another, whose newest push is past its deadline (one still within it will move the
    /// tag itself, and its own check judges).
    pub(super) async fn after_late_arrival(
        &self,
        applied: &Applied,
        now: DateTime<Utc>,
        effects: &mut Effects,
    ) -> Result<(), PipelineError> {
        let transition = &applied.transition;
        let record = &applied.record;
        // Still open after its push's check (a problem, or waiting on a replication that
        // could take the tag back), or failed: then it arrived with the tag.
        let late = matches!(
            transition.from,
            ExpectationState::Pending
                | ExpectationState::Overdue
                | ExpectationState::NotStarted
                | ExpectationState::Failed
        ) && record.deadline.is_some_and(|d| d <= now);
        let Some(tag) = &record.key.tag else {
            return Ok(());
        };
        if !late || transition.to != ExpectationState::Replicated {
            return Ok(());
        }
        let image = &record.key.image;
        let Some(expected) = self
            .registry
            .tagged_image(&image.registry, &image.repository, tag)
            .await?
            .filter(|source| source != &image.digest)
        else {
            return Ok(());
        };
        let newest = SourceImage {
            digest: expected.clone(),
            ..image.clone()
        };
        let overdue = self
            .store
            .latest_push(&newest, Some(tag), None)
            .await?
            .is_some_and(|push| push.deadline <= now);
        let holder = self
            .registry
            .tagged_image(&record.key.destination, &image.repository, tag)
            .await?;
        if !overdue || holder.as_ref() != Some(&image.digest) {
            return Ok(());
        }
        let key = TagKey {
            registry: image.registry.clone(),
            repository: image.repository.clone(),
            tag: tag.clone(),
            destination: record.key.destination.clone(),
        };
        let divergence = Divergence {
            cause: DivergenceCause::OlderReplicationLast,
            expected,
            found: holder,
        };
        self.diverged(&key, divergence, now, effects).await
    }

    /// The tag of `key` names another image in the destination: its incident opens (one
    /// alert) or, already open, takes the news.
    pub(super) async fn diverged(
        &self,
        key: &TagKey,
        divergence: Divergence,
        now: DateTime<Utc>,
        effects: &mut Effects,
    ) -> Result<(), PipelineError> {
        let observation = TagObservation::Diverged {
            at: now,
            divergence,
        };
        self.observe_tag(key, &observation, now, effects).await
    }

    /// An open incident, looked at again: resolved once the tag names the same image in the
    /// destination as in the source (or the source no longer has it, or the rules no longer
    /// replicate the repository there); otherwise it names what it sees now, without a new
    /// alert.
    async fn recheck_incident(
        &self,
        incident: TagIncident,
        now: DateTime<Utc>,
    ) -> Result<Effects, PipelineError> {
        let key = &incident.key;
        let source = self
            .registry
            .tagged_image(&key.registry, &key.repository, &key.tag)
            .await?;
        let settled = |reason| TagObservation::Settled { at: now, reason };
        let observation = match source {
            None => settled(ResolutionReason::TagGoneFromSource),
            Some(expected) => {
                let selected = self
                    .configuration(&key.registry)
                    .await?
                    .destinations_for(&key.registry, &key.repository)
                    .contains(&key.destination);
                let found = if selected {
                    self.registry
                        .tagged_image(&key.destination, &key.repository, &key.tag)
                        .await?
                } else {
                    None
                };
                if !selected {
                    settled(ResolutionReason::NoLongerReplicated)
                } else if found.as_ref() == Some(&expected) {
                    settled(ResolutionReason::Converged)
                } else {
                    TagObservation::Diverged {
                        at: now,
                        divergence: Divergence {
                            cause: incident.divergence.cause,
                            expected,
                            found,
                        },
                    }
                }
            }
        };
        let mut effects = Effects::default();
        self.observe_tag(key, &observation, now, &mut effects)
            .await?;
        Ok(effects)
    }

    /// Applies `observation` to the incident of `key` (read, transition, conditional write
    /// with the alert it raises; on a lost race, again).
    async fn observe_tag(
        &self,
        key: &TagKey,
        observation: &TagObservation,
        now: DateTime<Utc>,
        effects: &mut Effects,
    ) -> Result<(), PipelineError> {
        let policy = self.settings.policy;
        write_incident(
            key,
            async || self.store.incident(key).await,
            |current| {
                let mut incident = match (current, observation) {
                    (Some(incident), _) => incident,
                    (None, TagObservation::Diverged { at, divergence }) => {
                        TagIncident::open(key.clone(), *at, divergence.clone(), &policy)
                    }
                    (None, TagObservation::Settled { .. }) => return None,
                };
                let transition = incident.apply(observation, &policy);
                transition.changed.then(|| {
                    let alerts = transition
                        .raised
                        .map(|kind| Alert::for_incident(kind, &incident, now))
                        .into_iter()
                        .collect();
                    (incident, alerts)
                })
            },
            async |incident, pending| self.store.save_incident(incident, pending).await,
            effects,
        )
        .await
    }
}

/// The loop every incident write shares: read it (`read`), apply what was learned (`next`:
/// the incident to write and the alerts it raises, or nothing to write), write it on the
/// version read with those alerts in the same write (`save`); on a lost race, again.
async fn write_incident<T>(
    item: &dyn std::fmt::Display,
    read: impl AsyncFn() -> Result<Option<T>, StoreError>,
    next: impl Fn(Option<T>) -> Option<(T, Vec<Alert>)>,
    save: impl AsyncFn(&T, &[PendingAlert]) -> Result<u64, StoreError>,
    effects: &mut Effects,
) -> Result<(), PipelineError> {
    for _ in 0..MAX_ATTEMPTS {
        let Some((incident, alerts)) = next(read().await?) else {
            return Ok(());
        };
        let pending: Vec<PendingAlert> = alerts.iter().cloned().map(PendingAlert::raised).collect();
        match save(&incident, &pending).await {
            Ok(_) => {
                effects.alerts.extend(alerts);
                return Ok(());
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(other) => return Err(other.into()),
        }
    }
    Err(PipelineError::Contended {
        item: item.to_string(),
    })
}
