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

use crate::alerts::Alert;
use crate::clock::Clock;
use crate::events::{EcrEvent, ImageActionKind, ImageEvent, ReplicationEvent, ReplicationResult};
use crate::model::{Destination, ExpectationKey, SourceImage};
use crate::registry::{DestinationReplication, ImageReplicationStatus, Registry, RegistryError};
use crate::rules::ReplicationConfiguration;
use crate::store::{ExpectationStore, RecordedRules, RulesRecord, StoreError};
use crate::tracker::{Applied, Creation, Tracker, TrackerError};
use crate::tracking::{Observation, ReplicationExpectation, TagArrival, TrackingPolicy};

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
    /// How many due records one round of a sweep reads; a sweep runs rounds until nothing is
    /// due or its invocation is near its deadline.
    pub sweep_batch: usize,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            policy: TrackingPolicy::default(),
            configuration_ttl: TimeDelta::minutes(5),
            rules_check_interval: TimeDelta::seconds(10),
            sweep_batch: 250,
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
}

/// What one event or sweep changed.
#[derive(Debug, Default)]
pub struct Effects {
    /// Every record written, with what the write did.
    pub applied: Vec<Applied>,
    /// Problems raised for the first time, already stored as pending: to send now.
    pub alerts: Vec<Alert>,
}

impl Effects {
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
    /// Due records looked at.
    pub checked: usize,
    /// Images confirmed with the status API (one call each).
    pub images: usize,
    /// Records closed as arrived although their event never came.
    pub reconciled: usize,
    /// Images that could not be confirmed this time (they stay due).
    pub failures: Vec<RegistryError>,
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

    async fn on_push(&self, e: &ImageEvent) -> Result<Effects, PipelineError> {
        let observation = Observation::Pushed {
            at: e.envelope.time,
        };
        self.expect(
            e,
            std::slice::from_ref(&e.tag),
            &observation,
            Creation::ExpectNew,
        )
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
        let observation = Observation::Restored {
            at: e.envelope.time,
        };
        self.expect(e, &tags, &observation, Creation::Create).await
    }

    /// One expectation per destination the rules select and per tag.
    async fn expect(
        &self,
        e: &ImageEvent,
        tags: &[Option<String>],
        observation: &Observation,
        creation: Creation,
    ) -> Result<Effects, PipelineError> {
        let configuration = self.configuration(&e.image.registry).await?;
        let mut effects = Effects::default();
        for destination in configuration.destinations_for(&e.image.registry, &e.image.repository) {
            for tag in tags {
                let key = ExpectationKey {
                    image: e.image.clone(),
                    tag: tag.clone(),
                    destination: destination.clone(),
                };
                let applied = self.tracker().observe(&key, observation, creation).await?;
                effects.record(applied);
            }
        }
        Ok(effects)
    }

    async fn on_delete(&self, e: &ImageEvent) -> Result<Effects, PipelineError> {
        let observation = Observation::SourceDeleted {
            at: e.envelope.time,
        };
        let existing: Vec<ReplicationExpectation> = self
            .store
            .for_image(&e.image)
            .await?
            .into_iter()
            .filter(|r| e.tag.is_none() || r.key.tag == e.tag)
            .collect();
        let keys: Vec<ExpectationKey> = if existing.is_empty() {
            // The delete overtook its push: record it closed, so the late push cannot open an
            // expectation that would then be reported missing.
            let configuration = self.configuration(&e.image.registry).await?;
            configuration
                .destinations_for(&e.image.registry, &e.image.repository)
                .into_iter()
                .map(|destination| ExpectationKey {
                    image: e.image.clone(),
                    tag: e.tag.clone(),
                    destination,
                })
                .collect()
        } else {
            existing.into_iter().map(|r| r.key).collect()
        };
        let mut effects = Effects::default();
        for key in keys {
            let applied = self
                .tracker()
                .observe(&key, &observation, Creation::Create)
                .await?;
            effects.record(applied);
        }
        Ok(effects)
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
            // immutable destination: settle those records too, and do not invent an untagged
            // one beside them.
            let tagged: Vec<ExpectationKey> = self
                .store
                .for_image(&e.source)
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
            // An image not yet visible in the destination is taken on the event's word.
            let tag = self
                .tag_arrival(&key.image, &key.destination, key.tag.as_deref())
                .await?
                .unwrap_or(TagArrival::Present);
            let observation = Observation::Arrived {
                arrived_at: Some(e.envelope.time),
                observed_at: now,
                tag,
            };
            let applied = self
                .tracker()
                .observe(&key, &observation, Creation::Create)
                .await?;
            effects.record(applied);
        }
        Ok(effects)
    }

    async fn on_failed(&self, e: &ReplicationEvent) -> Result<Effects, PipelineError> {
        let now = self.clock.now();
        let key = ExpectationKey {
            image: e.source.clone(),
            tag: e.tag.clone(),
            destination: e.destination.clone(),
        };
        let status = self.registry.replication_status(&e.source).await?;
        let observation = match status.for_destination(&e.destination) {
            // The event was stale: the image is there now.
            Some(DestinationReplication::Complete) => {
                let tag = self
                    .tag_arrival(&e.source, &e.destination, e.tag.as_deref())
                    .await?
                    .unwrap_or(TagArrival::Present);
                Observation::Arrived {
                    arrived_at: None,
                    observed_at: now,
                    tag,
                }
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
        let applied = self
            .tracker()
            .observe(&key, &observation, Creation::Create)
            .await?;
        let mut effects = Effects::default();
        effects.record(applied);
        Ok(effects)
    }

    /// Confirms up to `limit` due records with the API and applies what it says. A sweep
    /// calls this in rounds, delivering each round's alerts before the next, until nothing is
    /// due or its time is up.
    pub async fn sweep(&self, limit: usize) -> Result<SweepReport, PipelineError> {
        let now = self.clock.now();
        let due = self.store.due(now, limit).await?;
        let mut report = SweepReport {
            checked: due.len(),
            ..SweepReport::default()
        };
        let mut by_image: BTreeMap<SourceImage, Vec<ReplicationExpectation>> = BTreeMap::new();
        for record in due {
            by_image
                .entry(record.key.image.clone())
                .or_default()
                .push(record);
        }
        for (image, records) in by_image {
            report.images += 1;
            match self.confirm_image(&image, &records, now).await {
                Ok(observations) => {
                    for (key, observation) in observations {
                        let reconciles = matches!(
                            observation,
                            Observation::Arrived {
                                tag: TagArrival::Present | TagArrival::Superseded,
                                ..
                            }
                        );
                        let applied = self
                            .tracker()
                            .observe(&key, &observation, Creation::ExistingOnly)
                            .await?;
                        if reconciles && applied.as_ref().is_some_and(|a| a.transition.changed) {
                            report.reconciled += 1;
                        }
                        report.effects.record(applied);
                    }
                }
                Err(error) => report.failures.push(error),
            }
        }
        Ok(report)
    }

    /// What the API says about each due record of one image.
    async fn confirm_image(
        &self,
        image: &SourceImage,
        records: &[ReplicationExpectation],
        now: DateTime<Utc>,
    ) -> Result<Vec<(ExpectationKey, Observation)>, RegistryError> {
        let status = self.registry.replication_status(image).await?;
        let mut observations = Vec::with_capacity(records.len());
        for record in records {
            let key = record.key.clone();
            let observation = match &status {
                ImageReplicationStatus::SourceImageNotFound => {
                    Observation::SourceDeleted { at: now }
                }
                ImageReplicationStatus::Found(_) => {
                    match status.for_destination(&key.destination) {
                        Some(DestinationReplication::InProgress) => {
                            Observation::StillInProgress { at: now }
                        }
                        Some(DestinationReplication::Failed { failure_code }) => {
                            Observation::ReplicationFailed {
                                at: now,
                                failure_code: failure_code.clone(),
                            }
                        }
                        // COMPLETE, or a destination ECR does not list (rules changed since the
                        // push): the destination itself says whether the image is there.
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
                                // ECR says the copy is done, but the destination no longer
                                // shows it (a lifecycle rule or a hand removed it): replication
                                // did its part, so no alert; what the destination holds now
                                // is drift, for `replwatch audit`.
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
                    }
                }
            };
            observations.push((key, observation));
        }
        Ok(observations)
    }
}
