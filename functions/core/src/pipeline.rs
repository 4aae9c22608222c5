//! The tracking pipeline: what the three functions do with an event or a tick, written once
//! against the ports (store, registry, clock) so it runs the same in Lambda, in the local
//! runner and in tests.
//!
//! - [`Pipeline::handle`] takes one parsed event: a PUSH records one expectation per
//!   destination the rules select, a restore from the archive one per destination and tag; a
//!   DELETE closes them; a REPLICATE closes one, after checking the tag in the destination
//!   (SUCCESS: present, superseded or lost, see [`crate::registry::tag_arrival`]) or the
//!   failure code with the status API (FAILED); a `PutReplicationConfiguration` is recorded in
//!   the shared rules record that every container checks every few seconds.
//! - [`Pipeline::sweep`] reads what is due, up to a limit, confirms each image with one
//!   `DescribeImageReplicationStatus`, and marks it overdue, failed, arrived (an event was
//!   lost: reconciled silently) or deleted.
//!
//! Every step returns the transitions it made and the alerts they raised, which the store has
//! already kept as pending with the state change ([`crate::outbox`]); the caller sends them
//! and turns transitions into metrics. Nothing here sends or logs metrics itself, so a handler
//! that fails half-way can be retried without double counting what it did not write.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::{StreamExt, future, stream};

use crate::alerts::Alert;
use crate::clock::Clock;
use crate::events::{EcrEvent, ImageActionKind, ImageEvent, ReplicationEvent, ReplicationResult};
use crate::metrics::{MetricPoint, latency_point, points_for};
use crate::model::{Destination, ExpectationKey, SourceImage};
use crate::push::{PushOutcome, TrackedPush};
use crate::registry::{DestinationReplication, ImageReplicationStatus, Registry, RegistryError};
use crate::rules::ReplicationConfiguration;
use crate::store::{
    ExpectationStore, RecordedRules, RulesRecord, StoreError, SweepPart, expectations_of,
};
use crate::tracker::{Applied, Creation, MAX_ATTEMPTS, Tracker, TrackerError};
use crate::tracking::{
    ExpectationState, Observation, ReplicationExpectation, TagArrival, TrackingPolicy,
};

/// How the pipeline behaves; every field has a production default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineSettings {
    pub policy: TrackingPolicy,
    /// How long a registry's replication rules are trusted before `DescribeRegistry` is asked
    /// again (a `PutReplicationConfiguration` event refreshes them at once). Every container
    /// shares what it reads through the rules record, so one read serves them all.
    pub configuration_ttl: TimeDelta,
    /// How often a container compares its cached rules with the shared rules record: the
    /// longest a rules change seen by one container takes to reach the others.
    pub rules_check_interval: TimeDelta,
    /// How many due pushes and records one round of a sweep reads; a sweep runs rounds until
    /// nothing is due or its invocation is near its deadline.
    pub sweep_batch: usize,
    /// How many images a sweep confirms at once: each is one status call and a read per
    /// destination, mostly waiting on ECR.
    pub sweep_concurrency: usize,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            policy: TrackingPolicy::default(),
            configuration_ttl: TimeDelta::minutes(5),
            rules_check_interval: TimeDelta::seconds(10),
            sweep_batch: 250,
            sweep_concurrency: 64,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{item}: still contended after {MAX_ATTEMPTS} attempts")]
    Contended { item: String },
}

/// What one event or sweep changed.
#[derive(Debug, Default)]
pub struct Effects {
    /// Every destination whose state changed, with what changed: written as its own record,
    /// or closed by its push's closing write.
    pub applied: Vec<Applied>,
    /// Problems raised for the first time, already stored as pending: to send now.
    pub alerts: Vec<Alert>,
    /// Latencies of arrivals that needed no write: their push stands for them until its
    /// deadline check. One per event received, so a duplicated event counts twice.
    pub latencies: Vec<ArrivalLatency>,
    /// Pushes written: tracked, checked or deleted.
    pub pushes_written: usize,
}

/// How long one replication took, from its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrivalLatency {
    pub destination: Destination,
    pub latency: TimeDelta,
}

impl Effects {
    /// The metrics of these effects: each change's counts and latency
    /// ([`crate::metrics::points_for`]), and the latencies taken from events.
    pub fn metric_points(&self) -> Vec<MetricPoint> {
        self.applied
            .iter()
            .flat_map(|a| points_for(&a.record, &a.transition))
            .chain(
                self.latencies
                    .iter()
                    .map(|l| latency_point(&l.destination, l.latency)),
            )
            .collect()
    }

    fn merge(&mut self, other: Effects) {
        self.applied.extend(other.applied);
        self.alerts.extend(other.alerts);
        self.latencies.extend(other.latencies);
        self.pushes_written += other.pushes_written;
    }

    fn record(&mut self, applied: Option<Applied>) {
        let Some(applied) = applied else { return };
        if !applied.transition.changed {
            return;
        }
        self.alerts.extend(applied.alerts.iter().cloned());
        self.applied.push(applied);
    }
}

/// What a sweep did, for its log line and its gauges.
#[derive(Debug, Default)]
pub struct SweepReport {
    pub effects: Effects,
    /// Due pushes and records looked at.
    pub checked: usize,
    /// Whether more was due than this round took.
    pub more: bool,
    /// Images confirmed with the status API (one call each).
    pub images: usize,
    /// Destinations the check closed as arrived: every one of a push that arrived on time
    /// (its event, if it came, wrote nothing), and records whose event never came.
    pub reconciled: usize,
    /// Images that could not be confirmed this time (they stay due).
    pub failures: Vec<PipelineError>,
}

/// What checking one image did.
#[derive(Debug, Default)]
struct ImageCheck {
    effects: Effects,
    reconciled: usize,
}

/// A registry's rules in one container: as of when they were seen (by anyone), and when this
/// container last compared them with the shared record.
#[derive(Debug, Clone)]
struct CachedRules {
    configuration: Arc<ReplicationConfiguration>,
    seen_at: DateTime<Utc>,
    checked_at: DateTime<Utc>,
}

/// Cached replication configurations per source registry.
#[derive(Debug, Default)]
struct ConfigurationCache {
    entries: Mutex<HashMap<Destination, CachedRules>>,
}

impl ConfigurationCache {
    fn get(&self, registry: &Destination) -> Option<CachedRules> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(registry).cloned()
    }

    fn put(&self, registry: Destination, rules: CachedRules) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(registry, rules);
    }
}

/// The tracking pipeline over a store, a registry and a clock.
pub struct Pipeline<S, R, C> {
    store: S,
    registry: R,
    clock: C,
    settings: PipelineSettings,
    configurations: ConfigurationCache,
}

impl<S, R, C> Pipeline<S, R, C> {
    pub fn new(store: S, registry: R, clock: C, settings: PipelineSettings) -> Self {
        Self {
            store,
            registry,
            clock,
            settings,
            configurations: ConfigurationCache::default(),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn registry(&self) -> &R {
        &self.registry
    }

    pub fn clock(&self) -> &C {
        &self.clock
    }

    pub fn settings(&self) -> &PipelineSettings {
        &self.settings
    }
}

impl<S: ExpectationStore + RulesRecord, R: Registry, C: Clock> Pipeline<S, R, C> {
    fn tracker(&self) -> Tracker<'_, S> {
        Tracker::new(&self.store, self.settings.policy, self.clock.now())
    }

    /// The rules of `registry`: from this container's cache while it is fresh, else from the
    /// shared rules record when some container saw them recently, else from
    /// `DescribeRegistry` (and then recorded for the others).
    pub async fn configuration(
        &self,
        registry: &Destination,
    ) -> Result<Arc<ReplicationConfiguration>, PipelineError> {
        let now = self.clock.now();
        let ttl = self.settings.configuration_ttl;
        let cached = self.configurations.get(registry);
        if let Some(c) = &cached
            && now - c.checked_at < self.settings.rules_check_interval
            && now - c.seen_at < ttl
        {
            return Ok(Arc::clone(&c.configuration));
        }
        let recorded = self.store.recorded_rules(registry).await?;
        let newest = match (cached, recorded) {
            (Some(c), Some(r)) if r.seen_at > c.seen_at => {
                Some((Arc::new(r.configuration), r.seen_at))
            }
            (Some(c), _) => Some((c.configuration, c.seen_at)),
            (None, Some(r)) => Some((Arc::new(r.configuration), r.seen_at)),
            (None, None) => None,
        };
        if let Some((configuration, seen_at)) = newest
            && now - seen_at < ttl
        {
            self.configurations.put(
                registry.clone(),
                CachedRules {
                    configuration: Arc::clone(&configuration),
                    seen_at,
                    checked_at: now,
                },
            );
            return Ok(configuration);
        }
        let fresh = self.registry.replication_configuration(registry).await?;
        self.remember_rules(registry, fresh, now).await
    }

    /// Records `configuration` as seen at `seen_at`, for this container and the others.
    async fn remember_rules(
        &self,
        registry: &Destination,
        configuration: ReplicationConfiguration,
        seen_at: DateTime<Utc>,
    ) -> Result<Arc<ReplicationConfiguration>, PipelineError> {
        // An event stamped later than this clock says "now", not "in the future": a future
        // time would keep these rules fresh past their TTL.
        let rules = RecordedRules {
            configuration,
            seen_at: seen_at.min(self.clock.now()),
        };
        let seen_at = rules.seen_at;
        // Rules older than the record are not adopted here either: the next check reads the
        // newer ones.
        let recorded = self.store.record_rules(registry, &rules).await?;
        let configuration = Arc::new(rules.configuration);
        let newer_here = self
            .configurations
            .get(registry)
            .is_some_and(|c| c.seen_at > seen_at);
        if recorded && !newer_here {
            self.configurations.put(
                registry.clone(),
                CachedRules {
                    configuration: Arc::clone(&configuration),
                    seen_at,
                    checked_at: self.clock.now(),
                },
            );
        }
        Ok(configuration)
    }

    /// Applies one event.
    pub async fn handle(&self, event: &EcrEvent) -> Result<Effects, PipelineError> {
        match event {
            EcrEvent::Image(e) => match e.action {
                ImageActionKind::Push => self.on_push(e).await,
                ImageActionKind::Restore => self.on_restore(e).await,
                ImageActionKind::Delete => self.on_delete(e).await,
            },
            EcrEvent::Replication(e) => match e.result {
                ReplicationResult::Succeeded => self.on_replicated(e).await,
                ReplicationResult::Failed => self.on_failed(e).await,
            },
            EcrEvent::ConfigurationChange(change) => {
                self.remember_rules(
                    &change.registry,
                    change.configuration.clone(),
                    change.envelope.time,
                )
                .await?;
                Ok(Effects::default())
            }
        }
    }

    /// One push item for every destination: the whole write cost of tracking a push.
    async fn on_push(&self, e: &ImageEvent) -> Result<Effects, PipelineError> {
        self.track_pushes(e, std::slice::from_ref(&e.tag), e.envelope.time)
            .await
    }

    /// A restored image replicates like a pushed one, with the tags it carries now (the
    /// storage-class event names none).
    async fn on_restore(&self, e: &ImageEvent) -> Result<Effects, PipelineError> {
        let tags: Vec<Option<String>> = match self
            .registry
            .image_tags(&e.image.registry, &e.image.repository, &e.image.digest)
            .await?
        {
            // Deleted again since: nothing will replicate.
            None => return Ok(Effects::default()),
            Some(tags) if tags.is_empty() => vec![None],
            Some(tags) => tags.into_iter().map(Some).collect(),
        };
        self.track_pushes(e, &tags, e.envelope.time).await
    }

    /// Writes one [`TrackedPush`] per tag, due at its deadline, to the destinations the rules
    /// select now. A push already tracked (a duplicate event, the same tag pushed again, a
    /// restore of an image still tracked, a delete that came first) stays as it is: the
    /// first one stands, as the earliest push time would.
    async fn track_pushes(
        &self,
        e: &ImageEvent,
        tags: &[Option<String>],
        at: DateTime<Utc>,
    ) -> Result<Effects, PipelineError> {
        let configuration = self.configuration(&e.image.registry).await?;
        let destinations = configuration.destinations_for(&e.image.registry, &e.image.repository);
        let mut effects = Effects::default();
        if destinations.is_empty() {
            return Ok(effects);
        }
        for tag in tags {
            let push = TrackedPush::new(
                e.image.clone(),
                tag.clone(),
                destinations.clone(),
                at,
                &self.settings.policy,
            );
            match self.store.save_push(&push).await {
                Ok(_) => effects.pushes_written += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Ok(effects)
    }

    async fn on_delete(&self, e: &ImageEvent) -> Result<Effects, PipelineError> {
        let observation = Observation::SourceDeleted {
            at: e.envelope.time,
        };
        let concerned = |tag: &Option<String>| e.tag.is_none() || *tag == e.tag;
        let records: Vec<ReplicationExpectation> = self
            .store
            .for_image(&e.image)
            .await?
            .into_iter()
            .filter(|r| concerned(&r.key.tag))
            .collect();
        let pushes: Vec<TrackedPush> = self
            .store
            .pushes_of(&e.image)
            .await?
            .into_iter()
            .filter(|p| concerned(&p.tag))
            .collect();
        let mut effects = Effects::default();
        if records.is_empty() && pushes.is_empty() {
            // The delete overtook its push: record it deleted, so the late push cannot open
            // an expectation that would then be reported missing.
            let configuration = self.configuration(&e.image.registry).await?;
            let destinations =
                configuration.destinations_for(&e.image.registry, &e.image.repository);
            if !destinations.is_empty() {
                // settle_push closes it as deleted.
                let push = TrackedPush::new(
                    e.image.clone(),
                    e.tag.clone(),
                    destinations,
                    e.envelope.time,
                    &self.settings.policy,
                );
                if self.settle_push(push, e.envelope.time).await? {
                    effects.pushes_written += 1;
                }
            }
            return Ok(effects);
        }
        for record in records {
            let applied = self
                .tracker()
                .observe(&record.key, &observation, Creation::Create)
                .await?;
            effects.record(applied);
        }
        for push in pushes.into_iter().filter(TrackedPush::is_open) {
            if self.settle_push(push, e.envelope.time).await? {
                effects.pushes_written += 1;
            }
        }
        Ok(effects)
    }

    /// Writes `push` closed as deleted at `at` (a new one as given), re-reading it on a lost
    /// race; whether this call wrote it.
    async fn settle_push(
        &self,
        mut push: TrackedPush,
        at: DateTime<Utc>,
    ) -> Result<bool, PipelineError> {
        for _ in 0..MAX_ATTEMPTS {
            if push.version > 0 && !push.is_open() {
                return Ok(false);
            }
            push.close(PushOutcome::Deleted { at }, &self.settings.policy);
            match self.store.save_push(&push).await {
                Ok(_) => return Ok(true),
                Err(StoreError::Conflict { .. }) => {
                    match self.store.push(&push.image, push.tag.as_deref()).await? {
                        Some(stored) => push = stored,
                        None => push.version = 0,
                    }
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(PipelineError::Contended {
            item: format!("{} (tag {:?})", push.image, push.tag),
        })
    }

    /// What became of `tag` when `image` arrived in `destination` (see
    /// [`crate::registry::tag_arrival`]); `None` while the image is not visible there.
    async fn tag_arrival(
        &self,
        image: &SourceImage,
        destination: &Destination,
        tag: Option<&str>,
    ) -> Result<Option<TagArrival>, RegistryError> {
        crate::registry::tag_arrival(&self.registry, image, destination, tag).await
    }

    async fn on_replicated(&self, e: &ReplicationEvent) -> Result<Effects, PipelineError> {
        let now = self.clock.now();
        let mut effects = Effects::default();
        let mut keys = vec![ExpectationKey {
            image: e.source.clone(),
            tag: e.tag.clone(),
            destination: e.destination.clone(),
        }];
        if e.tag.is_none() {
            // An event without a tag may stand for a tagged push whose tag was refused by an
            // immutable destination: settle those too, and do not invent an untagged record
            // beside them.
            let tagged: Vec<ExpectationKey> =
                expectations_of(&self.store, &e.source, &self.settings.policy)
                    .await?
                    .into_iter()
                    .filter(|r| {
                        r.key.destination == e.destination
                            && r.key.tag.is_some()
                            && !r.state.is_closed()
                    })
                    .map(|r| r.key)
                    .collect();
            if !tagged.is_empty() {
                keys = tagged;
            }
        }
        for key in keys {
            self.arrive(&key, Some(e.envelope.time), now, &mut effects)
                .await?;
        }
        Ok(effects)
    }

    /// The image of `key` is in its destination (an event said so, or the status API). A
    /// destination with a record of its own records it there. Otherwise, when its push is
    /// tracked and still open, an arrival with its tag (or whose tag moved on) writes nothing:
    /// the push's deadline check confirms it and counts it; only its latency is taken now (a
    /// duplicate delivered before the check counts it again; one after, or a replay, does
    /// not). A tag ECR dropped is a problem and gets its record (and its alert) at once. An
    /// arrival whose push is not (yet) tracked is recorded, so that the push's check can add
    /// its latency.
    async fn arrive(
        &self,
        key: &ExpectationKey,
        arrived_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        effects: &mut Effects,
    ) -> Result<(), PipelineError> {
        // The store first: a replay of a settled push then costs no ECR call.
        let peeked = self.store.peek(key).await?;
        let push = peeked
            .push
            .filter(|p| peeked.record.is_none() && p.destinations.contains(&key.destination));
        // A push already checked settled this destination then: the event is a replay or came
        // after the check, and counts nothing again.
        if push.as_ref().is_some_and(|p| !p.is_open()) {
            return Ok(());
        }
        // An image not yet visible in the destination is taken on the event's word.
        let tag = self
            .tag_arrival(&key.image, &key.destination, key.tag.as_deref())
            .await?
            .unwrap_or(TagArrival::Present);
        let lost = matches!(tag, TagArrival::Lost { .. });
        let observation = Observation::Arrived {
            arrived_at,
            observed_at: now,
            tag,
        };
        if let Some(push) = push {
            if !lost {
                if let Some(at) = arrived_at {
                    effects.latencies.push(ArrivalLatency {
                        destination: key.destination.clone(),
                        latency: (at - push.pushed_at).max(TimeDelta::zero()),
                    });
                }
                return Ok(());
            }
            let seed = push.seed(&key.destination, &self.settings.policy);
            effects.record(self.tracker().observe_seeded(&seed, &observation).await?);
            return Ok(());
        }
        let applied = self
            .tracker()
            .observe(key, &observation, Creation::Create)
            .await?;
        effects.record(applied);
        Ok(())
    }

    async fn on_failed(&self, e: &ReplicationEvent) -> Result<Effects, PipelineError> {
        let now = self.clock.now();
        let key = ExpectationKey {
            image: e.source.clone(),
            tag: e.tag.clone(),
            destination: e.destination.clone(),
        };
        let status = self.registry.replication_status(&e.source).await?;
        let mut effects = Effects::default();
        let observation = match status.for_destination(&e.destination) {
            // The event was stale: the image is there now.
            Some(DestinationReplication::Complete) => {
                self.arrive(&key, None, now, &mut effects).await?;
                return Ok(effects);
            }
            Some(DestinationReplication::Failed { failure_code }) => {
                Observation::ReplicationFailed {
                    at: e.envelope.time,
                    failure_code: failure_code.clone(),
                }
            }
            Some(DestinationReplication::InProgress) | None => Observation::ReplicationFailed {
                at: e.envelope.time,
                failure_code: None,
            },
        };
        let seed = self.seed(&key).await?;
        effects.record(self.tracker().observe_seeded(&seed, &observation).await?);
        Ok(effects)
    }

    /// The record `key` starts from when it has none yet: from its push when tracked.
    async fn seed(&self, key: &ExpectationKey) -> Result<ReplicationExpectation, PipelineError> {
        Ok(self
            .store
            .push(&key.image, key.tag.as_deref())
            .await?
            .filter(|p| p.destinations.contains(&key.destination))
            .map_or_else(
                || ReplicationExpectation::new(key.clone()),
                |p| p.seed(&key.destination, &self.settings.policy),
            ))
    }

    /// Confirms about `limit` due pushes and records with the API, images concurrently (at
    /// most [`PipelineSettings::sweep_concurrency`] at once), and applies what it says. A
    /// sweep calls this in rounds, delivering each round's alerts before the next, until
    /// nothing is due or its time is up.
    pub async fn sweep(&self, limit: usize, part: SweepPart) -> Result<SweepReport, PipelineError> {
        let now = self.clock.now();
        let due = self.store.due(now, limit, part).await?;
        let mut report = SweepReport {
            checked: due.len(),
            more: due.more,
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
        let checks: Vec<Result<ImageCheck, PipelineError>> = stream::iter(by_image)
            .map(|(image, (pushes, records))| self.check_image(image, pushes, records, now))
            .buffer_unordered(self.settings.sweep_concurrency.max(1))
            .collect()
            .await;
        for check in checks {
            match check {
                Ok(check) => {
                    report.reconciled += check.reconciled;
                    report.effects.merge(check.effects);
                }
                Err(error) => report.failures.push(error),
            }
        }
        Ok(report)
    }

    /// Checks one image's due pushes and records: one status call, the destination reads,
    /// then the writes. Destinations of a push without a record of their own that arrived are
    /// closed by the push's closing write; only problems get records.
    async fn check_image(
        &self,
        image: SourceImage,
        pushes: Vec<TrackedPush>,
        records: Vec<ReplicationExpectation>,
        now: DateTime<Utc>,
    ) -> Result<ImageCheck, PipelineError> {
        let policy = self.settings.policy;
        let mut check = ImageCheck::default();
        let own = if pushes.is_empty() {
            Vec::new()
        } else {
            self.store.for_image(&image).await?
        };
        let mut targets: Vec<(Option<usize>, ReplicationExpectation)> =
            records.into_iter().map(|r| (None, r)).collect();
        for (index, push) in pushes.iter().enumerate() {
            for destination in &push.destinations {
                let key = push.key(destination);
                match own.iter().find(|r| r.key == key) {
                    // Recorded before its push (its replication event came first): the push
                    // time completes its latency.
                    Some(record) if record.pushed_at.is_none() => {
                        let applied = self
                            .tracker()
                            .observe(
                                &key,
                                &Observation::Pushed { at: push.pushed_at },
                                Creation::ExistingOnly,
                            )
                            .await?;
                        check.effects.record(applied);
                    }
                    Some(_) => {}
                    None => targets.push((Some(index), push.seed(destination, &policy))),
                }
            }
        }
        let keys: Vec<ReplicationExpectation> = targets.iter().map(|(_, r)| r.clone()).collect();
        let observations = self.confirm_image(&image, &keys, now).await?;

        let mut closing: Vec<Vec<Applied>> = vec![Vec::new(); pushes.len()];
        let mut deleted = vec![false; pushes.len()];
        for ((push, seed), (key, observation)) in targets.into_iter().zip(observations) {
            let arrived = matches!(
                observation,
                Observation::Arrived {
                    tag: TagArrival::Present | TagArrival::Superseded,
                    ..
                }
            );
            let Some(index) = push else {
                let applied = self
                    .tracker()
                    .observe(&key, &observation, Creation::ExistingOnly)
                    .await?;
                if arrived && applied.as_ref().is_some_and(|a| a.transition.changed) {
                    check.reconciled += 1;
                }
                check.effects.record(applied);
                continue;
            };
            let mut record = seed.clone();
            let transition = record.apply(&observation, &policy);
            if record.state.is_closed() && record.state.alert().is_none() {
                deleted[index] |= record.state == ExpectationState::Deleted;
                closing[index].push(Applied {
                    record,
                    transition,
                    alerts: Vec::new(),
                });
            } else {
                check
                    .effects
                    .record(self.tracker().observe_seeded(&seed, &observation).await?);
            }
        }

        for ((mut push, closed), deleted) in pushes.into_iter().zip(closing).zip(deleted) {
            let outcome = if deleted {
                PushOutcome::Deleted { at: now }
            } else {
                PushOutcome::Confirmed {
                    at: now,
                    superseded: closed
                        .iter()
                        .filter(|a| a.record.state == ExpectationState::Superseded)
                        .map(|a| a.record.key.destination.clone())
                        .collect(),
                }
            };
            push.close(outcome, &policy);
            match self.store.save_push(&push).await {
                Ok(_) => {
                    check.effects.pushes_written += 1;
                    check.reconciled += closed
                        .iter()
                        .filter(|a| a.record.state != ExpectationState::Deleted)
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

    /// What the API says about each due record of one image.
    async fn confirm_image(
        &self,
        image: &SourceImage,
        records: &[ReplicationExpectation],
        now: DateTime<Utc>,
    ) -> Result<Vec<(ExpectationKey, Observation)>, RegistryError> {
        let status = self.registry.replication_status(image).await?;
        // The destination reads are independent: made at once, they cost one round trip.
        future::try_join_all(
            records
                .iter()
                .map(|record| self.confirm_destination(image, &status, &record.key, now)),
        )
        .await
    }

    /// What the status (and, for an image ECR completed or does not list, the destination
    /// itself) says about one destination.
    async fn confirm_destination(
        &self,
        image: &SourceImage,
        status: &ImageReplicationStatus,
        key: &ExpectationKey,
        now: DateTime<Utc>,
    ) -> Result<(ExpectationKey, Observation), RegistryError> {
        let observation = match status {
            ImageReplicationStatus::SourceImageNotFound => Observation::SourceDeleted { at: now },
            ImageReplicationStatus::Found(_) => match status.for_destination(&key.destination) {
                Some(DestinationReplication::InProgress) => {
                    Observation::StillInProgress { at: now }
                }
                Some(DestinationReplication::Failed { failure_code }) => {
                    Observation::ReplicationFailed {
                        at: now,
                        failure_code: failure_code.clone(),
                    }
                }
                // COMPLETE, or a destination ECR does not list (rules changed since the push):
                // the destination itself says whether the image is there.
                listed @ (Some(DestinationReplication::Complete) | None) => {
                    match self
                        .tag_arrival(image, &key.destination, key.tag.as_deref())
                        .await?
                    {
                        Some(tag) => Observation::Arrived {
                            arrived_at: None,
                            observed_at: now,
                            tag,
                        },
                        // ECR says the copy is done, but the destination no longer shows it (a
                        // lifecycle rule or a hand removed it): replication did its part, so no
                        // alert; what the destination holds now is drift, for `replwatch
                        // audit`.
                        None if listed.is_some() => Observation::Arrived {
                            arrived_at: None,
                            observed_at: now,
                            tag: if key.tag.is_some() {
                                TagArrival::Superseded
                            } else {
                                TagArrival::Present
                            },
                        },
                        None => Observation::StillInProgress { at: now },
                    }
                }
            },
        };
        Ok((key.clone(), observation))
    }
}
