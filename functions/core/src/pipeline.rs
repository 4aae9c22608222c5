//! The tracking pipeline: what the three functions do with an event or a tick, written once
//! against the ports (store, registry, clock) so it runs the same in Lambda, in the local
//! runner and in tests.
//!
//! - [`Pipeline::handle`] takes one parsed event: a PUSH records one expectation per
//!   destination the rules select; a DELETE closes them; a REPLICATE closes one, after checking
//!   the tag in the destination (SUCCESS) or the failure code with the status API (FAILED); a
//!   `PutReplicationConfiguration` refreshes the cached rules.
//! - [`Pipeline::sweep`] reads only what is due, confirms each image with one
//!   `DescribeImageReplicationStatus`, and marks it overdue, failed, arrived (an event was
//!   lost: reconciled silently) or deleted.
//!
//! Every step returns the transitions it made; the caller turns raised alerts into
//! notifications and transitions into metrics. Nothing here sends or logs metrics itself, so
//! a handler that fails half-way can be retried without double counting what it did not
//! write.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};

use crate::alerts::Alert;
use crate::clock::Clock;
use crate::events::{EcrEvent, ImageActionKind, ImageEvent, ReplicationEvent, ReplicationResult};
use crate::model::{Destination, ExpectationKey, SourceImage};
use crate::registry::{DestinationReplication, ImageReplicationStatus, Registry, RegistryError};
use crate::rules::ReplicationConfiguration;
use crate::store::{ExpectationStore, OpenCount, StoreError};
use crate::tracker::{Applied, Creation, Tracker, TrackerError};
use crate::tracking::{Observation, ReplicationExpectation, TrackingPolicy};

/// How the pipeline behaves; every field has a production default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineSettings {
    pub policy: TrackingPolicy,
    /// How long a registry's replication rules are trusted before `DescribeRegistry` is asked
    /// again (a `PutReplicationConfiguration` event refreshes them at once).
    pub configuration_ttl: TimeDelta,
    /// How many due records one sweep invocation handles; the rest wait for the next tick.
    pub sweep_batch: usize,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            policy: TrackingPolicy::default(),
            configuration_ttl: TimeDelta::minutes(5),
            sweep_batch: 1_000,
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
    /// Problems raised for the first time, to notify.
    pub alerts: Vec<Alert>,
}

impl Effects {
    fn record(&mut self, applied: Option<Applied>, now: DateTime<Utc>) {
        let Some(applied) = applied else { return };
        if !applied.transition.changed {
            return;
        }
        for kind in &applied.transition.raised {
            self.alerts.push(Alert::new(*kind, &applied.record, now));
        }
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
    /// Open records per destination after the sweep.
    pub open: Vec<OpenCount>,
}

/// A registry's rules and when they were read.
type CachedConfiguration = (Arc<ReplicationConfiguration>, DateTime<Utc>);

/// Cached replication configurations per source registry.
#[derive(Debug, Default)]
struct ConfigurationCache {
    entries: Mutex<HashMap<Destination, CachedConfiguration>>,
}

impl ConfigurationCache {
    fn get(
        &self,
        registry: &Destination,
        now: DateTime<Utc>,
        ttl: TimeDelta,
    ) -> Option<Arc<ReplicationConfiguration>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(registry)
            .filter(|(_, fetched)| now - *fetched < ttl)
            .map(|(config, _)| Arc::clone(config))
    }

    fn put(
        &self,
        registry: Destination,
        configuration: Arc<ReplicationConfiguration>,
        now: DateTime<Utc>,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(registry, (configuration, now));
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

impl<S: ExpectationStore, R: Registry, C: Clock> Pipeline<S, R, C> {
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

    fn tracker(&self) -> Tracker<'_, S> {
        Tracker::new(&self.store, self.settings.policy)
    }

    /// The rules of `registry`, from the cache or `DescribeRegistry`.
    pub async fn configuration(
        &self,
        registry: &Destination,
    ) -> Result<Arc<ReplicationConfiguration>, RegistryError> {
        let now = self.clock.now();
        if let Some(cached) =
            self.configurations
                .get(registry, now, self.settings.configuration_ttl)
        {
            return Ok(cached);
        }
        let fresh = Arc::new(self.registry.replication_configuration(registry).await?);
        self.configurations
            .put(registry.clone(), Arc::clone(&fresh), now);
        Ok(fresh)
    }

    /// Applies one event.
    pub async fn handle(&self, event: &EcrEvent) -> Result<Effects, PipelineError> {
        match event {
            EcrEvent::Image(e) => match e.action {
                ImageActionKind::Push => self.on_push(e).await,
                ImageActionKind::Delete => self.on_delete(e).await,
            },
            EcrEvent::Replication(e) => match e.result {
                ReplicationResult::Succeeded => self.on_replicated(e).await,
                ReplicationResult::Failed => self.on_failed(e).await,
            },
            EcrEvent::ConfigurationChange(change) => {
                self.configurations.put(
                    change.registry.clone(),
                    Arc::new(change.configuration.clone()),
                    self.clock.now(),
                );
                Ok(Effects::default())
            }
        }
    }

    async fn on_push(&self, e: &ImageEvent) -> Result<Effects, PipelineError> {
        let configuration = self.configuration(&e.image.registry).await?;
        let observation = Observation::Pushed {
            at: e.envelope.time,
        };
        let mut effects = Effects::default();
        for destination in configuration.destinations_for(&e.image.registry, &e.image.repository) {
            let key = ExpectationKey {
                image: e.image.clone(),
                tag: e.tag.clone(),
                destination,
            };
            let applied = self
                .tracker()
                .observe(&key, &observation, Creation::ExpectNew)
                .await?;
            effects.record(applied, self.clock.now());
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
            effects.record(applied, self.clock.now());
        }
        Ok(effects)
    }

    /// Whether the destination holds `tag` on the image; an image not (yet) visible there is
    /// taken on the event's word.
    async fn tag_present(
        &self,
        image: &SourceImage,
        destination: &Destination,
        tag: Option<&str>,
    ) -> Result<Option<bool>, RegistryError> {
        let Some(tag) = tag else {
            return Ok(Some(true));
        };
        let tags = self
            .registry
            .tags_in_destination(destination, &image.repository, &image.digest)
            .await?;
        Ok(tags.map(|tags| tags.iter().any(|t| t == tag)))
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
            let present = self
                .tag_present(&key.image, &key.destination, key.tag.as_deref())
                .await?
                .unwrap_or(true);
            let observation = Observation::Arrived {
                arrived_at: Some(e.envelope.time),
                observed_at: now,
                tag_present: present,
            };
            let applied = self
                .tracker()
                .observe(&key, &observation, Creation::Create)
                .await?;
            effects.record(applied, now);
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
                let present = self
                    .tag_present(&e.source, &e.destination, e.tag.as_deref())
                    .await?
                    .unwrap_or(true);
                Observation::Arrived {
                    arrived_at: None,
                    observed_at: now,
                    tag_present: present,
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
        effects.record(applied, now);
        Ok(effects)
    }

    /// Confirms every due record with the API and applies what it says.
    pub async fn sweep(&self) -> Result<SweepReport, PipelineError> {
        let now = self.clock.now();
        let due = self.store.due(now, self.settings.sweep_batch).await?;
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
                                tag_present: true,
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
                        report.effects.record(applied, now);
                    }
                }
                Err(error) => report.failures.push(error),
            }
        }
        report.open = self.store.open_counts().await?;
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
                        Some(DestinationReplication::Complete) | None => {
                            match self
                                .tag_present(image, &key.destination, key.tag.as_deref())
                                .await?
                            {
                                Some(present) => Observation::Arrived {
                                    arrived_at: None,
                                    observed_at: now,
                                    tag_present: present,
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
