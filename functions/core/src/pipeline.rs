//! The tracking pipeline: what the three functions do with an event or a tick, written once
//! against the ports (store, registry, clock) so it runs the same in Lambda, in the local
//! runner and in tests.
//!
//! - [`Pipeline::handle`] takes one parsed event: a PUSH tracks one push (every time it is
//!   pushed, even the same image and tag again) to every destination the rules select, a
//!   restore from the archive one per tag; a DELETE closes the pushes made before it; a
//!   REPLICATE SUCCESS gives its latency (and opens the tag's incident when an immutable
//!   destination kept the tag on another image), a FAILED one is believed only once ECR
//!   confirms it; a `PutReplicationConfiguration` is recorded in the shared rules record that
//!   every container checks every few seconds.
//! - [`Pipeline::sweep`] reads what is due, up to a limit, and confirms each push in each
//!   destination by looking there ([`check`]): arrived (with its tag, or the tag moved on),
//!   overdue, failed, not started, not selected by the rules ECR applied, deleted; and rechecks
//!   open tag incidents until they resolve.
//!
//! Every step returns the transitions it made and the alerts they raised, which the store has
//! already kept as pending with the state change ([`crate::outbox`]); the caller sends them
//! and turns transitions into metrics. Nothing here sends or logs metrics itself, so a handler
//! that fails half-way can be retried without double counting what it did not write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};

use crate::alerts::Alert;
use crate::clock::Clock;
use crate::events::{EcrEvent, ImageActionKind, ImageEvent, ReplicationEvent, ReplicationResult};
use crate::incident::{Divergence, DivergenceCause};
use crate::metrics::{MetricPoint, incident_point, latency_point, points_for};
use crate::model::{Destination, ExpectationKey, TagKey};
use crate::push::{PushOutcome, TrackedPush};
use crate::registry::{DestinationReplication, Registry, RegistryError};
use crate::rules::ReplicationConfiguration;
use crate::store::{ExpectationStore, RecordedRules, RulesRecord, StoreError};
use crate::tracker::{Applied, Creation, MAX_ATTEMPTS, Tracker, TrackerError};
use crate::tracking::{Observation, ReplicationExpectation, TagArrival, TrackingPolicy};

mod check;
mod tag_mutability;

pub use check::{DOWN_AFTER_FAILURES, SweepReport};

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
    /// How long a container trusts a destination repository's tag mutability, read to decide
    /// whether a replication event is worth a look in its destination
    /// ([`tag_mutability`]).
    pub repository_settings_ttl: TimeDelta,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            policy: TrackingPolicy::default(),
            configuration_ttl: TimeDelta::minutes(5),
            rules_check_interval: TimeDelta::seconds(10),
            sweep_batch: 250,
            sweep_concurrency: 64,
            repository_settings_ttl: TimeDelta::minutes(5),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
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
    /// ([`crate::metrics::points_for`]), the latencies taken from events, and one count per
    /// tag incident opened.
    pub fn metric_points(&self) -> Vec<MetricPoint> {
        self.applied
            .iter()
            .flat_map(|a| points_for(&a.record, &a.transition))
            .chain(
                self.latencies
                    .iter()
                    .map(|l| latency_point(&l.destination, l.latency)),
            )
            .chain(self.alerts.iter().filter_map(incident_point))
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

/// A registry's rules in one container: as of when they were seen (by anyone), and when this
/// container last compared them with the shared record.
#[derive(Debug, Clone)]
struct CachedRules {
    configuration: Arc<ReplicationConfiguration>,
    seen_at: DateTime<Utc>,
    checked_at: DateTime<Utc>,
}

/// Cached replication configurations per source registry, and the loads of them under way.
#[derive(Debug, Default)]
struct ConfigurationCache {
    entries: Mutex<HashMap<Destination, CachedRules>>,
    loads: Mutex<HashMap<Destination, Arc<RulesLoads>>>,
}

/// The loads of one registry's rules (the shared record's `GetItem`, and `DescribeRegistry`
/// when the record is stale), one at a time: the messages of a cold container's batch all
/// want the rules at once, and make one load instead of one each.
#[derive(Debug, Default)]
struct RulesLoads {
    /// Held by the load under way.
    turn: futures_util::lock::Mutex<()>,
    /// How many loads finished, and the error of the last one if it failed.
    finished: Mutex<(u64, Option<PipelineError>)>,
}

impl RulesLoads {
    fn finished(&self) -> u64 {
        self.finished.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// The error of the last load, if it failed and finished after `before` loads had.
    fn failure_since(&self, before: u64) -> Option<PipelineError> {
        let finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        match &finished.1 {
            Some(error) if finished.0 > before => Some(error.clone()),
            _ => None,
        }
    }

    fn finish(&self, error: Option<&PipelineError>) {
        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        *finished = (finished.0 + 1, error.cloned());
    }
}

impl ConfigurationCache {
    fn get(&self, registry: &Destination) -> Option<CachedRules> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(registry).cloned()
    }

    fn loads(&self, registry: &Destination) -> Arc<RulesLoads> {
        let mut loads = self.loads.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(loads.entry(registry.clone()).or_default())
    }

    /// `registry`'s rules from `load`, one load at a time: a caller that waited while another
    /// loaded takes the rules that load cached when `usable` accepts them, or that load's
    /// error, instead of loading again.
    async fn load_once<F>(
        &self,
        registry: &Destination,
        usable: impl Fn(&CachedRules) -> bool,
        load: impl FnOnce() -> F,
    ) -> Result<Arc<ReplicationConfiguration>, PipelineError>
    where
        F: Future<Output = Result<Arc<ReplicationConfiguration>, PipelineError>>,
    {
        let loads = self.loads(registry);
        let before = loads.finished();
        let _turn = loads.turn.lock().await;
        if let Some(error) = loads.failure_since(before) {
            return Err(error);
        }
        if let Some(cached) = self.get(registry)
            && usable(&cached)
        {
            return Ok(cached.configuration);
        }
        // A load dropped half-way (its invocation ended) finishes nothing: the next caller
        // loads. Boxed: a rare allocation, and the callers' futures stay shallow enough for
        // the compiler's layout depth.
        let loaded = Box::pin(load()).await;
        loads.finish(loaded.as_ref().err());
        loaded
    }

    /// Keeps `configuration`, seen at `seen_at`, as `registry`'s rules compared with the
    /// record at `checked_at`; returns it.
    fn keep(
        &self,
        registry: &Destination,
        configuration: Arc<ReplicationConfiguration>,
        seen_at: DateTime<Utc>,
        checked_at: DateTime<Utc>,
    ) -> Arc<ReplicationConfiguration> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(
            registry.clone(),
            CachedRules {
                configuration: Arc::clone(&configuration),
                seen_at,
                checked_at,
            },
        );
        configuration
    }
}

/// The tracking pipeline over a store, a registry and a clock.
pub struct Pipeline<S, R, C> {
    store: S,
    registry: R,
    clock: C,
    settings: PipelineSettings,
    configurations: ConfigurationCache,
    tag_mutability: tag_mutability::TagMutabilityCache,
}

impl<S, R, C> Pipeline<S, R, C> {
    pub fn new(store: S, registry: R, clock: C, settings: PipelineSettings) -> Self {
        Self {
            store,
            registry,
            clock,
            settings,
            configurations: ConfigurationCache::default(),
            tag_mutability: tag_mutability::TagMutabilityCache::default(),
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
    /// `DescribeRegistry` (and then recorded for the others). The callers of one registry
    /// share one load at a time: a cold container's batch reads the record once, not once a
    /// message.
    pub async fn configuration(
        &self,
        registry: &Destination,
    ) -> Result<Arc<ReplicationConfiguration>, PipelineError> {
        let fresh = |c: &CachedRules| {
            let now = self.clock.now();
            now - c.checked_at < self.settings.rules_check_interval
                && now - c.seen_at < self.settings.configuration_ttl
        };
        if let Some(c) = self.configurations.get(registry)
            && fresh(&c)
        {
            return Ok(c.configuration);
        }
        self.configurations
            .load_once(registry, fresh, || self.load_configuration(registry))
            .await
    }

    /// [`Self::configuration`]'s load: the shared record, else `DescribeRegistry`.
    async fn load_configuration(
        &self,
        registry: &Destination,
    ) -> Result<Arc<ReplicationConfiguration>, PipelineError> {
        let now = self.clock.now();
        let ttl = self.settings.configuration_ttl;
        let cached = self.configurations.get(registry);
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
            return Ok(self
                .configurations
                .keep(registry, configuration, seen_at, now));
        }
        let fresh = self.registry.replication_configuration(registry).await?;
        self.remember_rules(registry, fresh, now).await
    }

    /// The rules of `registry` as ECR had them at `not_before` or later: the cached or
    /// recorded ones when they were seen since, else read again with `DescribeRegistry` (and
    /// recorded, so every container takes them within [`PipelineSettings::rules_check_interval`]).
    /// What a push's check asks when ECR does not list a destination the push expected.
    pub async fn configuration_since(
        &self,
        registry: &Destination,
        not_before: DateTime<Utc>,
    ) -> Result<Arc<ReplicationConfiguration>, PipelineError> {
        if let Some(cached) = self.configurations.get(registry)
            && cached.seen_at >= not_before
        {
            return Ok(cached.configuration);
        }
        self.configurations
            .load_once(
                registry,
                |c| c.seen_at >= not_before,
                || self.load_configuration_since(registry, not_before),
            )
            .await
    }

    /// [`Self::configuration_since`]'s load: the shared record, else `DescribeRegistry`.
    async fn load_configuration_since(
        &self,
        registry: &Destination,
        not_before: DateTime<Utc>,
    ) -> Result<Arc<ReplicationConfiguration>, PipelineError> {
        if let Some(recorded) = self.store.recorded_rules(registry).await?
            && recorded.seen_at >= not_before
        {
            return Ok(self.configurations.keep(
                registry,
                Arc::new(recorded.configuration),
                recorded.seen_at,
                self.clock.now(),
            ));
        }
        let fresh = self.registry.replication_configuration(registry).await?;
        self.remember_rules(registry, fresh, self.clock.now()).await
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
            return Ok(self.configurations.keep(
                registry,
                configuration,
                seen_at,
                self.clock.now(),
            ));
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

    /// A delete closes every push of the image (of the deleted tag, when the event names one)
    /// made before it, and their records: a deleted image is never reported missing. A push
    /// made after it (a re-push) is another push and stays tracked; so does one stamped in
    /// the same second (ECR's event times have no fractions), whose check finds out which
    /// came first. A delete that overtakes its push needs nothing more either: the push's
    /// check finds the image gone.
    async fn on_delete(&self, e: &ImageEvent) -> Result<Effects, PipelineError> {
        let at = e.envelope.time;
        let observation = Observation::SourceDeleted { at };
        let concerned = |tag: &Option<String>, pushed_at: DateTime<Utc>| {
            (e.tag.is_none() || *tag == e.tag) && pushed_at < at
        };
        let records: Vec<ReplicationExpectation> = self
            .store
            .for_image(&e.image)
            .await?
            .into_iter()
            .filter(|r| concerned(&r.key.tag, r.key.occurrence))
            .collect();
        let pushes: Vec<TrackedPush> = self
            .store
            .pushes_of(&e.image)
            .await?
            .into_iter()
            .filter(|p| p.is_open() && concerned(&p.tag, p.pushed_at))
            .collect();
        let mut effects = Effects::default();
        for record in records {
            let applied = self
                .tracker()
                .observe(&record.key, &observation, Creation::ExistingOnly)
                .await?;
            effects.record(applied);
        }
        for push in pushes {
            if self.settle_push(push, at).await? {
                effects.pushes_written += 1;
            }
        }
        Ok(effects)
    }

    /// Writes `push` closed as deleted at `at`, re-reading it on a lost race; whether this
    /// call wrote it.
    async fn settle_push(
        &self,
        mut push: TrackedPush,
        at: DateTime<Utc>,
    ) -> Result<bool, PipelineError> {
        for _ in 0..MAX_ATTEMPTS {
            if !push.is_open() {
                return Ok(false);
            }
            push.close(PushOutcome::Deleted { at }, &self.settings.policy);
            match self.store.save_push(&push).await {
                Ok(_) => return Ok(true),
                Err(StoreError::Conflict { .. }) => {
                    match self
                        .store
                        .latest_push(&push.image, push.tag.as_deref(), Some(push.pushed_at))
                        .await?
                        .filter(|p| p.pushed_at == push.pushed_at)
                    {
                        Some(stored) => push = stored,
                        None => return Ok(false),
                    }
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(PipelineError::Contended {
            item: format!("{} (tag {:?})", push.image, push.tag),
        })
    }

    /// What became of the tag of `e` in its destination (see
    /// [`crate::registry::tag_arrival`]); `None` while the image is not visible there. For an
    /// open push the answer only decides whether the tag was lost (its deadline check looks in
    /// the destination anyway), so it is looked for only where it can be: taken as present
    /// without a look where the destination's tags are mutable.
    async fn arrival_tag(
        &self,
        push: &TrackedPush,
        e: &ReplicationEvent,
    ) -> Result<Option<TagArrival>, RegistryError> {
        if push.is_open() && !self.may_have_lost_tag(e).await? {
            return Ok(Some(TagArrival::Present));
        }
        crate::registry::tag_arrival(&self.registry, &e.source, &e.destination, e.tag.as_deref())
            .await
    }

    /// Whether the destination of `e` may have kept its tag on another image: only when the
    /// tag is immutable there (ECR user guide, private image replication considerations).
    /// Read once per repository and [`PipelineSettings::repository_settings_ttl`] in a
    /// container.
    async fn may_have_lost_tag(&self, e: &ReplicationEvent) -> Result<bool, RegistryError> {
        let Some(tag) = e.tag.as_deref() else {
            return Ok(false);
        };
        let now = self.clock.now();
        let ttl = self.settings.repository_settings_ttl;
        let (registry, repository) = (&e.destination, &e.source.repository);
        if let Some(mutability) = self.tag_mutability.fresh(registry, repository, now, ttl) {
            return Ok(mutability.is_immutable(tag));
        }
        Ok(
            match self.registry.tag_mutability(registry, repository).await? {
                Some(mutability) => {
                    let immutable = mutability.is_immutable(tag);
                    self.tag_mutability
                        .keep(registry, repository, mutability, now, ttl);
                    immutable
                }
                // No such repository (deleted since?): the look finds what is there.
                None => true,
            },
        )
    }

    /// The push a replication event belongs to: the latest push of its image and tag made at
    /// or before the event, if it is tracked and selected the event's destination.
    async fn push_of(&self, e: &ReplicationEvent) -> Result<Option<TrackedPush>, PipelineError> {
        Ok(self
            .store
            .latest_push(&e.source, e.tag.as_deref(), Some(e.envelope.time))
            .await?
            .filter(|p| p.destinations.contains(&e.destination)))
    }

    /// A replication arrived. While its push is open, the arrival writes nothing: the push's
    /// deadline check looks in the destination and counts it; only its latency is taken now
    /// (a duplicate delivered before the check counts it again; one after, or a replay, does
    /// not). A tag the destination kept on another image opens the tag's incident at once;
    /// only a destination whose tag is immutable is looked at for it.
    /// After the check, an arrival matters only to a destination with a record of its own
    /// (an overdue one): it closes it, late, once the destination shows the image. An event
    /// whose push is not tracked (yet) writes nothing: that push's own check confirms it.
    async fn on_replicated(&self, e: &ReplicationEvent) -> Result<Effects, PipelineError> {
        let now = self.clock.now();
        let mut effects = Effects::default();
        let Some(push) = self.push_of(e).await? else {
            return Ok(effects);
        };
        if !push.is_open() && !push.is_recorded(&e.destination) {
            return Ok(effects);
        }
        let latency = ArrivalLatency {
            destination: e.destination.clone(),
            latency: (e.envelope.time - push.pushed_at).max(TimeDelta::zero()),
        };
        let tag = match self.arrival_tag(&push, e).await {
            Ok(tag) => tag,
            Err(error) => {
                // The push's check (or its record's recheck) confirms this destination on its
                // own, unconfirmed while the registry cannot be read; retrying the event would
                // only park it in the dead-letter queue meanwhile.
                tracing::warn!(
                    error = %error,
                    destination = %e.destination,
                    "arrival not looked at; the sweep confirms it"
                );
                if push.is_open() {
                    effects.latencies.push(latency);
                }
                return Ok(effects);
            }
        };
        if let (Some(TagArrival::Lost { held_by }), Some(tag)) = (&tag, &e.tag) {
            let key = TagKey {
                registry: e.source.registry.clone(),
                repository: e.source.repository.clone(),
                tag: tag.clone(),
                destination: e.destination.clone(),
            };
            let divergence = Divergence {
                cause: DivergenceCause::ImmutableHeld,
                expected: e.source.digest.clone(),
                found: Some(held_by.clone()),
            };
            self.diverged(&key, divergence, now, &mut effects).await?;
        }
        if push.is_open() {
            effects.latencies.push(latency);
            return Ok(effects);
        }
        // A verdict already given is changed only on what ECR shows: an image not visible in
        // the destination yet (or an event no rule of ours delivered) leaves the record to its
        // recheck, which looks again.
        let Some(tag) = tag else {
            tracing::info!(
                destination = %e.destination,
                "arrival not visible in the destination yet; its recheck confirms it"
            );
            return Ok(effects);
        };
        let observation = Observation::Arrived {
            arrived_at: Some(e.envelope.time),
            observed_at: now,
            tag,
        };
        let record = self
            .store
            .for_image(&e.source)
            .await?
            .into_iter()
            .find(|r| r.key.destination == e.destination && push.owns(r));
        if let Some(record) = record {
            let applied = self
                .tracker()
                .observe(&record.key, &observation, Creation::ExistingOnly)
                .await?;
            if let Some(applied) = &applied {
                self.after_late_arrival(applied, now, &mut effects).await?;
            }
            effects.record(applied);
        }
        Ok(effects)
    }

    /// A FAILED event is believed only once ECR confirms it: the source image still exists,
    /// `DescribeImageReplicationStatus` says FAILED for the destination (and gives the failure
    /// code), and the destination does not have the push. A deleted image, or a status that
    /// says anything else, raise nothing now: the push's deadline check decides. A confirmed
    /// failure of a push replwatch does not track for that destination (its event not handled
    /// yet, or rules that changed since replwatch read them) is still a failure: it gets a
    /// record named by the event's time, which that push's check takes as its own if it
    /// comes.
    async fn on_failed(&self, e: &ReplicationEvent) -> Result<Effects, PipelineError> {
        let mut effects = Effects::default();
        let push = self.push_of(e).await?;
        if push
            .as_ref()
            .is_some_and(|p| !p.is_open() && !p.is_recorded(&e.destination))
        {
            // Its push was checked and settled this destination: a stale event.
            return Ok(effects);
        }
        let status = self.registry.replication_status(&e.source).await?;
        let Some(DestinationReplication::Failed { failure_code }) =
            status.for_destination(&e.destination)
        else {
            return Ok(effects);
        };
        let there = self
            .registry
            .image_tags(&e.destination, &e.source.repository, &e.source.digest)
            .await?
            .is_some_and(|tags| e.tag.as_ref().is_none_or(|t| tags.contains(t)));
        if there {
            return Ok(effects);
        }
        let observation = Observation::ReplicationFailed {
            at: e.envelope.time,
            failure_code: failure_code.clone(),
        };
        let seed = match push {
            Some(push) => push.seed(&e.destination, &self.settings.policy),
            None => ReplicationExpectation::new(ExpectationKey {
                image: e.source.clone(),
                tag: e.tag.clone(),
                destination: e.destination.clone(),
                occurrence: e.envelope.time,
            }),
        };
        effects.record(self.tracker().observe_seeded(&seed, &observation).await?);
        Ok(effects)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::future::join_all;

    use super::*;
    use crate::model::{AccountId, Region};

    fn source() -> Destination {
        Destination::new(
            Region::parse("us-west-2").expect("region"),
            AccountId::parse("111111111111").expect("account"),
        )
    }

    /// A load as a cold container makes it: the record's `GetItem`, then `DescribeRegistry`
    /// (each a wait on the network), counted, kept in the cache as the pipeline keeps it.
    async fn counted_load(
        cache: &ConfigurationCache,
        loads: &AtomicUsize,
        fails: bool,
    ) -> Result<Arc<ReplicationConfiguration>, PipelineError> {
        loads.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        if fails {
            return Err(PipelineError::Registry(RegistryError {
                operation: "DescribeRegistry",
                resource: source().to_string(),
                message: "Rate exceeded".into(),
                retryable: true,
            }));
        }
        let now = Utc::now();
        Ok(cache.keep(
            &source(),
            Arc::new(ReplicationConfiguration::default()),
            now,
            now,
        ))
    }

    #[tokio::test]
    async fn a_batch_that_wants_the_rules_at_once_makes_one_load() {
        let cache = ConfigurationCache::default();
        let loads = AtomicUsize::new(0);
        let registry = source();
        let answers =
            join_all((0..100).map(|_| {
                cache.load_once(&registry, |_| true, || counted_load(&cache, &loads, false))
            }))
            .await;
        assert_eq!(
            loads.load(Ordering::SeqCst),
            1,
            "one GetItem, one DescribeRegistry"
        );
        let first = answers[0].as_ref().expect("rules");
        for answer in &answers {
            assert!(Arc::ptr_eq(first, answer.as_ref().expect("rules")));
        }
    }

    #[tokio::test]
    async fn a_failed_load_fails_the_callers_that_waited_for_it_and_the_next_caller_loads_again() {
        let cache = ConfigurationCache::default();
        let loads = AtomicUsize::new(0);
        let registry = source();
        let answers =
            join_all((0..100).map(|_| {
                cache.load_once(&registry, |_| true, || counted_load(&cache, &loads, true))
            }))
            .await;
        assert_eq!(
            loads.load(Ordering::SeqCst),
            1,
            "throttled once, not 100 times"
        );
        for answer in answers {
            match answer {
                Err(PipelineError::Registry(e)) => {
                    assert_eq!(
                        (e.operation, e.message.as_str()),
                        ("DescribeRegistry", "Rate exceeded")
                    );
                    assert!(e.retryable);
                }
                other => panic!("not the load's error: {other:?}"),
            }
        }
        // A later event tries again.
        cache
            .load_once(&registry, |_| true, || counted_load(&cache, &loads, false))
            .await
            .expect("rules");
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn rules_the_waiters_cannot_use_are_loaded_again() {
        let cache = ConfigurationCache::default();
        let loads = AtomicUsize::new(0);
        let registry = source();
        // A load dropped half-way leaves the next caller to load.
        {
            let dropped = cache.load_once(
                &registry,
                |_| true,
                || async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<Result<Arc<ReplicationConfiguration>, PipelineError>>()
                        .await
                },
            );
            let polled = futures_util::FutureExt::now_or_never(dropped);
            assert!(polled.is_none());
        }
        cache
            .load_once(&registry, |_| true, || counted_load(&cache, &loads, false))
            .await
            .expect("rules");
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        // Cached rules the caller cannot use (seen before what it asks) do not stop its load.
        cache
            .load_once(&registry, |_| false, || counted_load(&cache, &loads, false))
            .await
            .expect("rules");
        assert_eq!(loads.load(Ordering::SeqCst), 3);
    }
}
