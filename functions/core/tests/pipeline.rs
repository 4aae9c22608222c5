//! The tracking pipeline over the in-memory store and a scripted registry: what each event and
//! each sweep does to the records, which alerts it raises, and which API calls it makes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use replwatch_core::alerts::Alert;
use replwatch_core::events::{ParsedEvent, parse_event};
use replwatch_core::pipeline::{Pipeline, PipelineSettings};
use replwatch_core::registry::{
    DestinationReplication, ImageReplicationStatus, Registry, RegistryError,
};
use replwatch_core::{
    AlertKind, Destination, Digest, EcrEvent, ExpectationState, InMemoryStore, ManualClock,
    ReplicationConfiguration, RepositoryName, SourceImage,
};

const DIGEST: &str = "sha256:3b1f1c2e4d5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";

/// ECR as the test says it is.
#[derive(Default)]
struct ScriptedRegistry {
    configuration: Mutex<ReplicationConfiguration>,
    /// Per destination region: the status ECR reports; absent = IN_PROGRESS.
    statuses: Mutex<HashMap<String, DestinationReplication>>,
    /// Per destination region: the tags there; absent = image not there.
    tags: Mutex<HashMap<String, Vec<String>>>,
    source_deleted: Mutex<bool>,
    status_calls: AtomicUsize,
    tag_calls: AtomicUsize,
    configuration_calls: AtomicUsize,
}

impl ScriptedRegistry {
    fn status(&self, region: &str, status: DestinationReplication) {
        self.statuses
            .lock()
            .expect("lock")
            .insert(region.to_owned(), status);
    }

    fn tags(&self, region: &str, tags: &[&str]) {
        self.tags.lock().expect("lock").insert(
            region.to_owned(),
            tags.iter().map(|t| (*t).to_owned()).collect(),
        );
    }
}

impl Registry for ScriptedRegistry {
    async fn replication_status(
        &self,
        _image: &SourceImage,
    ) -> Result<ImageReplicationStatus, RegistryError> {
        self.status_calls.fetch_add(1, Ordering::SeqCst);
        if *self.source_deleted.lock().expect("lock") {
            return Ok(ImageReplicationStatus::SourceImageNotFound);
        }
        let configuration = self.configuration.lock().expect("lock").clone();
        let statuses = self.statuses.lock().expect("lock");
        Ok(ImageReplicationStatus::Found(
            configuration
                .all_destinations()
                .into_iter()
                .map(|d| {
                    let s = statuses
                        .get(d.region.as_str())
                        .cloned()
                        .unwrap_or(DestinationReplication::InProgress);
                    (d, s)
                })
                .collect(),
        ))
    }

    async fn tags_in_destination(
        &self,
        destination: &Destination,
        _repository: &RepositoryName,
        _digest: &Digest,
    ) -> Result<Option<Vec<String>>, RegistryError> {
        self.tag_calls.fetch_add(1, Ordering::SeqCst);
        Ok(self
            .tags
            .lock()
            .expect("lock")
            .get(destination.region.as_str())
            .cloned())
    }

    async fn replication_configuration(
        &self,
        _registry: &Destination,
    ) -> Result<ReplicationConfiguration, RegistryError> {
        self.configuration_calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.configuration.lock().expect("lock").clone())
    }
}

fn sample(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/events")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn event(name: &str) -> EcrEvent {
    event_from(&sample(name))
}

fn event_from(bytes: &[u8]) -> EcrEvent {
    match parse_event(bytes) {
        Ok(ParsedEvent::Handled(e)) => e,
        other => panic!("not a handled event: {other:?}"),
    }
}

fn edited(name: &str, from: &str, to: &str) -> EcrEvent {
    let text = String::from_utf8(sample(name)).expect("utf-8");
    assert!(text.contains(from), "{name} has no {from:?}");
    event_from(text.replace(from, to).as_bytes())
}

fn push_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
        .single()
        .expect("time")
}

struct World {
    registry: ScriptedRegistry,
    clock: ManualClock,
    store: InMemoryStore,
}

impl World {
    fn new() -> Self {
        let registry = ScriptedRegistry::default();
        *registry.configuration.lock().expect("lock") =
            ReplicationConfiguration::from_json(&sample("replication-configuration.json"))
                .expect("configuration");
        Self {
            registry,
            clock: ManualClock::new(push_time() + TimeDelta::seconds(5)),
            store: InMemoryStore::new(),
        }
    }

    fn pipeline(&self) -> Pipeline<&InMemoryStore, &ScriptedRegistry, &ManualClock> {
        Pipeline::new(
            &self.store,
            &self.registry,
            &self.clock,
            PipelineSettings::default(),
        )
    }

    fn states(&self) -> Vec<(String, ExpectationState)> {
        let mut states: Vec<(String, ExpectationState)> = self
            .store
            .all()
            .into_iter()
            .map(|r| (r.key.destination.region.to_string(), r.state))
            .collect();
        states.sort();
        states
    }
}

fn kinds(alerts: &[Alert]) -> Vec<(String, AlertKind)> {
    alerts
        .iter()
        .map(|a| (a.key.destination.region.to_string(), a.kind))
        .collect()
}

#[tokio::test]
async fn a_push_expects_every_destination_its_rules_select() {
    let world = World::new();
    let pipeline = world.pipeline();
    let effects = pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");
    assert!(effects.alerts.is_empty());
    assert_eq!(
        world.states(),
        vec![
            ("ap-southeast-2".into(), ExpectationState::Pending),
            ("eu-west-1".into(), ExpectationState::Pending),
            ("us-east-1".into(), ExpectationState::Pending),
        ]
    );
    // A repository outside team-a/ only matches the filterless rule.
    pipeline
        .handle(&edited("push-untagged.json", "team-a/web", "team-b/api"))
        .await
        .expect("push");
    assert_eq!(world.store.all().len(), 4);
}

#[tokio::test]
async fn rules_are_read_once_and_refreshed_by_a_configuration_change() {
    let world = World::new();
    let pipeline = world.pipeline();
    for i in 0..20 {
        let digest = format!("sha256:{i:064x}");
        pipeline
            .handle(&edited("push-tagged.json", DIGEST, &digest))
            .await
            .expect("push");
    }
    assert_eq!(world.registry.configuration_calls.load(Ordering::SeqCst), 1);
    // The CloudTrail event carries the new rules: one rule, two destinations, no API call.
    pipeline
        .handle(&event("cloudtrail-put-replication-configuration.json"))
        .await
        .expect("configuration change");
    pipeline
        .handle(&edited(
            "push-tagged.json",
            DIGEST,
            &format!("sha256:{:064x}", 99),
        ))
        .await
        .expect("push");
    assert_eq!(world.registry.configuration_calls.load(Ordering::SeqCst), 1);
    let latest = Digest::parse(&format!("sha256:{:064x}", 99)).expect("digest");
    let expected: Vec<_> = world
        .store
        .all()
        .into_iter()
        .filter(|r| r.key.image.digest == latest)
        .collect();
    assert_eq!(expected.len(), 2);
    // After the TTL the registry is asked again.
    world.clock.advance(TimeDelta::minutes(6));
    pipeline
        .handle(&edited(
            "push-tagged.json",
            DIGEST,
            &format!("sha256:{:064x}", 100),
        ))
        .await
        .expect("push");
    assert_eq!(world.registry.configuration_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_success_with_the_tag_closes_with_latency_and_without_alert() {
    let world = World::new();
    let pipeline = world.pipeline();
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");
    world.registry.tags("us-east-1", &["v1.4.2"]);
    let effects = pipeline
        .handle(&event("replication-success.json"))
        .await
        .expect("replicated");
    assert!(effects.alerts.is_empty());
    let [applied] = effects.applied.as_slice() else {
        panic!("one record")
    };
    assert_eq!(applied.record.state, ExpectationState::Replicated);
    assert_eq!(
        applied.transition.new_latency,
        Some(TimeDelta::seconds(3 * 60 + 12))
    );
}

#[tokio::test]
async fn a_success_without_the_tag_in_the_destination_is_tag_lost() {
    let world = World::new();
    let pipeline = world.pipeline();
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");
    world.registry.tags("eu-west-1", &[]);
    let effects = pipeline
        .handle(&event("replication-success-cross-account.json"))
        .await
        .expect("replicated");
    assert_eq!(
        kinds(&effects.alerts),
        vec![("eu-west-1".into(), AlertKind::TagLost)]
    );
    // The same event again: nothing new.
    let again = pipeline
        .handle(&event("replication-success-cross-account.json"))
        .await
        .expect("duplicate");
    assert!(again.alerts.is_empty() && again.applied.is_empty());
}

#[tokio::test]
async fn an_untagged_success_settles_the_tagged_records_of_that_destination() {
    let world = World::new();
    let pipeline = world.pipeline();
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");
    world.registry.tags("us-east-1", &[]);
    let untagged = edited(
        "replication-success.json",
        "\"image-tag\": \"v1.4.2\"",
        "\"other\": 1",
    );
    let effects = pipeline.handle(&untagged).await.expect("replicated");
    assert_eq!(
        kinds(&effects.alerts),
        vec![("us-east-1".into(), AlertKind::TagLost)]
    );
    assert_eq!(world.store.all().len(), 3, "no untagged record invented");
}

#[tokio::test]
async fn a_failure_is_confirmed_with_the_status_api_and_carries_its_code() {
    let world = World::new();
    let pipeline = world.pipeline();
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");
    world.registry.status(
        "ap-southeast-2",
        DestinationReplication::Failed {
            failure_code: Some("ACCESS_DENIED".into()),
        },
    );
    let effects = pipeline
        .handle(&event("replication-failed.json"))
        .await
        .expect("failed");
    let [alert] = effects.alerts.as_slice() else {
        panic!("one alert: {:?}", effects.alerts)
    };
    assert_eq!(alert.kind, AlertKind::Failed);
    assert_eq!(alert.failure_code.as_deref(), Some("ACCESS_DENIED"));
    assert_eq!(world.registry.status_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_stale_failure_event_for_an_image_that_arrived_does_not_alert() {
    let world = World::new();
    let pipeline = world.pipeline();
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");
    world
        .registry
        .status("ap-southeast-2", DestinationReplication::Complete);
    world.registry.tags("ap-southeast-2", &["v1.4.2"]);
    let effects = pipeline
        .handle(&event("replication-failed.json"))
        .await
        .expect("failed");
    assert!(effects.alerts.is_empty());
    assert_eq!(
        effects.applied[0].record.state,
        ExpectationState::Replicated
    );
}

#[tokio::test]
async fn the_sweep_confirms_before_alerting_and_reconciles_lost_events_silently() {
    let world = World::new();
    let pipeline = world.pipeline();
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");

    // Before the deadline the sweep reads nothing and calls nothing.
    world.clock.set(push_time() + TimeDelta::minutes(29));
    let early = pipeline.sweep().await.expect("sweep");
    assert_eq!((early.checked, early.images), (0, 0));
    assert_eq!(world.registry.status_calls.load(Ordering::SeqCst), 0);

    // us-east-1 arrived but its event was lost; eu-west-1 still in progress; ap-southeast-2
    // failed and its event was lost too.
    world
        .registry
        .status("us-east-1", DestinationReplication::Complete);
    world.registry.tags("us-east-1", &["v1.4.2"]);
    world.registry.status(
        "ap-southeast-2",
        DestinationReplication::Failed {
            failure_code: Some("ROLE_NOT_FOUND".into()),
        },
    );
    world.clock.set(push_time() + TimeDelta::minutes(31));
    let report = pipeline.sweep().await.expect("sweep");
    assert_eq!(
        (report.checked, report.images, report.reconciled),
        (3, 1, 1)
    );
    assert_eq!(
        world.registry.status_calls.load(Ordering::SeqCst),
        1,
        "one status call per image"
    );
    let mut raised = kinds(&report.effects.alerts);
    raised.sort();
    assert_eq!(
        raised,
        vec![
            ("ap-southeast-2".into(), AlertKind::Failed),
            ("eu-west-1".into(), AlertKind::Overdue),
        ]
    );
    let open: Vec<(String, u64, u64)> = report
        .open
        .iter()
        .map(|c| (c.destination.region.to_string(), c.pending, c.overdue))
        .collect();
    assert_eq!(open, vec![("eu-west-1".into(), 0, 1)]);

    // Next sweep within the recheck interval: nothing due, no new alert.
    world.clock.set(push_time() + TimeDelta::minutes(40));
    let quiet = pipeline.sweep().await.expect("sweep");
    assert_eq!(quiet.checked, 0);

    // It finally arrives, event lost again: closed as a late arrival, no alert.
    world
        .registry
        .status("eu-west-1", DestinationReplication::Complete);
    world.registry.tags("eu-west-1", &["v1.4.2"]);
    world.clock.set(push_time() + TimeDelta::minutes(47));
    let late = pipeline.sweep().await.expect("sweep");
    assert!(late.effects.alerts.is_empty());
    assert_eq!(late.reconciled, 1);
    assert!(late.open.is_empty());
    assert_eq!(
        world.states(),
        vec![
            ("ap-southeast-2".into(), ExpectationState::Failed),
            ("eu-west-1".into(), ExpectationState::Replicated),
            ("us-east-1".into(), ExpectationState::Replicated),
        ]
    );
}

#[tokio::test]
async fn a_deleted_source_is_never_reported_missing() {
    let world = World::new();
    let pipeline = world.pipeline();
    // The delete overtakes its push.
    pipeline
        .handle(&event("delete.json"))
        .await
        .expect("delete");
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("late push");
    world.clock.set(push_time() + TimeDelta::hours(2));
    let report = pipeline.sweep().await.expect("sweep");
    assert!(report.effects.alerts.is_empty());
    assert!(
        world
            .states()
            .iter()
            .all(|(_, s)| *s == ExpectationState::Deleted)
    );

    // Deleted after the push, event lost: the sweep finds the source gone.
    let world = World::new();
    let pipeline = world.pipeline();
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");
    *world.registry.source_deleted.lock().expect("lock") = true;
    world.clock.set(push_time() + TimeDelta::hours(2));
    let report = pipeline.sweep().await.expect("sweep");
    assert!(report.effects.alerts.is_empty());
    assert!(
        world
            .states()
            .iter()
            .all(|(_, s)| *s == ExpectationState::Deleted)
    );
}
