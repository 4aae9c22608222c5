//! The tracking pipeline over the in-memory store and a scripted registry: what each event and
//! each sweep does to the records, which alerts it raises, and which API calls it makes.
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use replwatch_core::alerts::Alert;
use replwatch_core::backfill::inventory::TagMutability;
use replwatch_core::events::{ParsedEvent, parse_event};
use replwatch_core::pipeline::{Pipeline, PipelineSettings, SweepReport};
use replwatch_core::registry::{
    DestinationReplication, ImageReplicationStatus, Registry, RegistryError,
};
use replwatch_core::store::SweepPart;
use replwatch_core::{
    AlertKind, Clock, Destination, Digest, EcrEvent, ExpectationState, ExpectationStore,
    InMemoryStore, ManualClock, ReplicationConfiguration, RepositoryName, SourceImage,
};

/// The destination Regions of `replication-configuration.json`.
const DESTINATIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-2"];

const DIGEST: &str = "sha256:3b1f1c2e4d5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";

/// ECR as the test says it is.
#[derive(Default)]
struct ScriptedRegistry {
    configuration: Mutex<ReplicationConfiguration>,
    /// Per destination region: the status ECR reports; absent = IN_PROGRESS.
    statuses: Mutex<HashMap<String, DestinationReplication>>,
    /// Per region (destinations, and the source's us-west-2): the tags the image carries
    /// there; absent = image not there.
    tags: Mutex<HashMap<String, Vec<String>>>,
    /// Per region: which image each tag names there.
    tag_holders: Mutex<HashMap<(String, String), Digest>>,
    /// Per destination region: the repository's tag mutability; absent = MUTABLE.
    mutability: Mutex<HashMap<String, TagMutability>>,
    source_deleted: Mutex<bool>,
    /// Regions (destinations, or the source's us-west-2) whose account refuses every read.
    refusing: Mutex<std::collections::HashSet<String>>,
    status_calls: AtomicUsize,
    tag_calls: AtomicUsize,
    mutability_calls: AtomicUsize,
    configuration_calls: AtomicUsize,
    /// Regions whose ECR is down: every read there fails as unavailable.
    down: Mutex<std::collections::HashSet<String>>,
    /// Reads made in a refusing or down Region (each failed).
    refused_calls: AtomicUsize,
}

impl ScriptedRegistry {
    fn status(&self, region: &str, status: DestinationReplication) {
        self.statuses
            .lock()
            .expect("lock")
            .insert(region.to_owned(), status);
    }

    /// ECR says COMPLETE for every destination of the sample rules.
    fn complete_everywhere(&self) {
        for region in DESTINATIONS {
            self.status(region, DestinationReplication::Complete);
        }
    }

    fn tags(&self, region: &str, tags: &[&str]) {
        self.tags.lock().expect("lock").insert(
            region.to_owned(),
            tags.iter().map(|t| (*t).to_owned()).collect(),
        );
    }

    fn tag_holder(&self, region: &str, tag: &str, digest: &str) {
        self.tag_holders.lock().expect("lock").insert(
            (region.to_owned(), tag.to_owned()),
            Digest::parse(digest).expect("digest"),
        );
    }

    fn refuse(&self, region: &str, refused: bool) {
        let mut refusing = self.refusing.lock().expect("lock");
        if refused {
            refusing.insert(region.to_owned());
        } else {
            refusing.remove(region);
        }
    }

    fn down(&self, region: &str, down: bool) {
        let mut regions = self.down.lock().expect("lock");
        if down {
            regions.insert(region.to_owned());
        } else {
            regions.remove(region);
        }
    }

    /// The read refused in `registry`'s Region, if it refuses, or failed, if it is down.
    fn refused(
        &self,
        operation: &'static str,
        registry: &Destination,
    ) -> Result<(), RegistryError> {
        if self
            .down
            .lock()
            .expect("lock")
            .contains(registry.region.as_str())
        {
            self.refused_calls.fetch_add(1, Ordering::SeqCst);
            return Err(RegistryError {
                operation,
                resource: registry.to_string(),
                message: "ServiceUnavailableException: Service Unavailable".into(),
                retryable: true,
            });
        }
        if !self
            .refusing
            .lock()
            .expect("lock")
            .contains(registry.region.as_str())
        {
            return Ok(());
        }
        self.refused_calls.fetch_add(1, Ordering::SeqCst);
        Err(RegistryError {
            operation,
            resource: registry.to_string(),
            message: "AccessDeniedException: not authorized".into(),
            retryable: false,
        })
    }

    fn immutable(&self, region: &str) {
        self.mutability
            .lock()
            .expect("lock")
            .insert(region.to_owned(), TagMutability::Immutable);
    }
}

impl Registry for ScriptedRegistry {
    async fn replication_status(
        &self,
        image: &SourceImage,
    ) -> Result<ImageReplicationStatus, RegistryError> {
        self.status_calls.fetch_add(1, Ordering::SeqCst);
        self.refused("DescribeImageReplicationStatus", &image.registry)?;
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

    async fn image_tags(
        &self,
        destination: &Destination,
        _repository: &RepositoryName,
        _digest: &Digest,
    ) -> Result<Option<Vec<String>>, RegistryError> {
        self.tag_calls.fetch_add(1, Ordering::SeqCst);
        self.refused("DescribeImages", destination)?;
        Ok(self
            .tags
            .lock()
            .expect("lock")
            .get(destination.region.as_str())
            .cloned())
    }

    async fn tagged_image(
        &self,
        registry: &Destination,
        _repository: &RepositoryName,
        tag: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        self.tag_calls.fetch_add(1, Ordering::SeqCst);
        self.refused("DescribeImages", registry)?;
        Ok(self
            .tag_holders
            .lock()
            .expect("lock")
            .get(&(registry.region.to_string(), tag.to_owned()))
            .cloned())
    }

    async fn tag_mutability(
        &self,
        registry: &Destination,
        _repository: &RepositoryName,
    ) -> Result<Option<TagMutability>, RegistryError> {
        self.mutability_calls.fetch_add(1, Ordering::SeqCst);
        self.refused("DescribeRepositories", registry)?;
        Ok(Some(
            self.mutability
                .lock()
                .expect("lock")
                .get(registry.region.as_str())
                .cloned()
                .unwrap_or(TagMutability::Mutable),
        ))
    }

    async fn replication_configuration(
        &self,
        _registry: &Destination,
    ) -> Result<ReplicationConfiguration, RegistryError> {
        self.configuration_calls.fetch_add(1, Ordering::SeqCst);
        // A call on the network: other events of the batch run meanwhile.
        tokio::task::yield_now().await;
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

    fn pipeline(&self) -> WorldPipeline<'_> {
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

type WorldPipeline<'w> = Pipeline<&'w InMemoryStore, &'w ScriptedRegistry, &'w ManualClock>;

/// One sweep of the whole due work (up to 1,000 items), as every test here runs it.
async fn sweep_whole(pipeline: &WorldPipeline<'_>) -> SweepReport {
    pipeline
        .sweep(1_000, SweepPart::WHOLE)
        .await
        .expect("sweep")
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
    world.clock.advance(TimeDelta::seconds(2));
    pipeline
        .handle(&edited(
            "cloudtrail-put-replication-configuration.json",
            "2026-11-20T09:00:00Z",
            "2026-11-20T10:00:06Z",
        ))
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
async fn a_cold_container_s_batch_of_pushes_reads_the_rules_once() {
    let world = World::new();
    let pipeline = world.pipeline();
    // A batch's 100 messages are handled at once (runtime batch.rs), all before any rules
    // are cached.
    let pushes: Vec<EcrEvent> = (0..100)
        .map(|i| edited("push-tagged.json", DIGEST, &format!("sha256:{i:064x}")))
        .collect();
    let handled = futures_util::future::join_all(pushes.iter().map(|e| pipeline.handle(e))).await;
    for effects in handled {
        assert_eq!(effects.expect("push").pushes_written, 1);
    }
    assert_eq!(
        world.registry.configuration_calls.load(Ordering::SeqCst),
        1,
        "one DescribeRegistry for the batch, not one per message"
    );
    assert_eq!(
        world.store.all().len(),
        300,
        "every push to its 3 destinations"
    );
}

#[tokio::test]
async fn a_push_is_one_write_and_an_arrival_with_its_tag_none_but_gives_its_latency() {
    let world = World::new();
    let pipeline = world.pipeline();
    let pushed = pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");
    assert_eq!(pushed.pushes_written, 1, "one item for three destinations");
    assert_eq!(world.store.pushes().len(), 1);
    world.registry.tags("us-east-1", &["v1.4.2"]);
    let effects = pipeline
        .handle(&event("replication-success.json"))
        .await
        .expect("replicated");
    assert!(effects.alerts.is_empty());
    assert!(effects.applied.is_empty());
    assert_eq!(effects.pushes_written, 0);
    assert!(world.store.records().is_empty(), "nothing written");
    let [latency] = effects.latencies.as_slice() else {
        panic!("one latency: {:?}", effects.latencies)
    };
    assert_eq!(latency.destination.region.as_str(), "us-east-1");
    assert_eq!(latency.latency, TimeDelta::seconds(3 * 60 + 12));
    assert_eq!(effects.metric_points().len(), 1);

    // The deadline check closes it, counts it once, and writes only the push.
    world
        .registry
        .status("us-east-1", DestinationReplication::Complete);
    world.clock.set(push_time() + TimeDelta::minutes(31));
    let report = sweep_whole(&pipeline).await;
    assert_eq!(report.effects.pushes_written, 1);
    assert!(
        report
            .effects
            .applied
            .iter()
            .any(|a| a.record.key.destination.region.as_str() == "us-east-1"
                && a.record.state == ExpectationState::Replicated),
        "{:?}",
        report.effects.applied
    );
    assert!(
        world
            .store
            .records()
            .iter()
            .all(|r| r.key.destination.region.as_str() != "us-east-1"),
        "an on-time arrival never gets a record of its own"
    );

    // A replay of the arrival after the check counts nothing again and asks ECR nothing.
    let tag_calls = world.registry.tag_calls.load(Ordering::SeqCst);
    let replay = pipeline
        .handle(&event("replication-success.json"))
        .await
        .expect("replay");
    assert!(replay.latencies.is_empty() && replay.applied.is_empty());
    assert!(replay.metric_points().is_empty());
    assert_eq!(
        world.registry.tag_calls.load(Ordering::SeqCst),
        tag_calls,
        "a settled push is settled from the store alone"
    );
}

#[tokio::test]
async fn a_tag_refused_by_an_immutable_destination_is_tag_lost_and_says_who_holds_it() {
    let world = World::new();
    let pipeline = world.pipeline();
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");
    let holder = format!("sha256:{}", "e1".repeat(32));
    world.registry.tags("eu-west-1", &[]);
    world.registry.immutable("eu-west-1");
    world.registry.tag_holder("eu-west-1", "v1.4.2", &holder);
    world.registry.tag_holder("us-west-2", "v1.4.2", DIGEST);
    let effects = pipeline
        .handle(&event("replication-success-cross-account.json"))
        .await
        .expect("replicated");
    assert_eq!(
        kinds(&effects.alerts),
        vec![("eu-west-1".into(), AlertKind::TagLost)]
    );
    assert_eq!(
        effects.alerts[0].tag_held_by.as_ref().map(Digest::as_str),
        Some(holder.as_str())
    );
    assert_eq!(
        world.store.pending_alerts().len(),
        1,
        "stored for delivery with the state change"
    );
    // The same event again: nothing new.
    let again = pipeline
        .handle(&event("replication-success-cross-account.json"))
        .await
        .expect("duplicate");
    assert!(again.alerts.is_empty() && again.applied.is_empty());
}

/// `name` with its digest, tag and time replaced.
fn image_event(name: &str, digest: &str, tag: &str, time: (&str, &str)) -> EcrEvent {
    let text = String::from_utf8(sample(name)).expect("utf-8");
    assert!(text.contains(time.0), "{name} has no {:?}", time.0);
    event_from(
        text.replace(DIGEST, digest)
            .replace("v1.4.2", tag)
            .replace(time.0, time.1)
            .as_bytes(),
    )
}

/// No tag can be lost in a repository whose tags are mutable, and the deadline check looks in
/// the destination anyway: an arrival there is not looked at (no `DescribeImages` across
/// Regions per event). The setting is read once per repository for the TTL.
#[tokio::test]
async fn an_arrival_in_a_mutable_repository_is_not_looked_at_before_its_check() {
    let world = World::new();
    let pipeline = world.pipeline();
    let images: Vec<(String, String)> = (0..5)
        .map(|i| (format!("sha256:{i:064x}"), format!("v1.4.{i}")))
        .collect();
    let pushed_at = ("2026-11-20T10:00:00Z", "2026-11-20T10:00:00Z");
    let arrived_at = ("2026-11-20T10:04:40Z", "2026-11-20T10:04:40Z");
    for (digest, tag) in &images {
        pipeline
            .handle(&image_event("push-tagged.json", digest, tag, pushed_at))
            .await
            .expect("push");
    }
    let tags: Vec<&str> = images.iter().map(|(_, t)| t.as_str()).collect();
    for region in DESTINATIONS {
        world.registry.tags(region, &tags);
    }
    let mut latencies = 0;
    for (digest, tag) in &images {
        let arrival = image_event(
            "replication-success-cross-account.json",
            digest,
            tag,
            arrived_at,
        );
        let effects = pipeline.handle(&arrival).await.expect("replicated");
        assert!(effects.alerts.is_empty() && effects.applied.is_empty());
        latencies += effects.latencies.len();
    }
    assert_eq!(latencies, 5, "every arrival still gives its latency");
    assert_eq!(world.registry.tag_calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        world.registry.mutability_calls.load(Ordering::SeqCst),
        1,
        "one read of the repository's setting for the five arrivals"
    );

    // Past the TTL the setting is read again.
    world.clock.advance(TimeDelta::minutes(6));
    let (digest, tag) = &images[0];
    let duplicate = image_event(
        "replication-success-cross-account.json",
        digest,
        tag,
        arrived_at,
    );
    pipeline.handle(&duplicate).await.expect("duplicate");
    assert_eq!(world.registry.mutability_calls.load(Ordering::SeqCst), 2);
    assert_eq!(world.registry.tag_calls.load(Ordering::SeqCst), 0);

    // The deadline checks confirm every arrival, and nothing is alerted.
    world.registry.complete_everywhere();
    world.clock.set(push_time() + TimeDelta::minutes(31));
    let report = sweep_whole(&pipeline).await;
    assert!(
        report.effects.alerts.is_empty(),
        "{:?}",
        report.effects.alerts
    );
    assert_eq!(
        report
            .effects
            .applied
            .iter()
            .filter(|a| a.record.state == ExpectationState::Replicated)
            .count(),
        15
    );
}

/// A repository made immutable while a container still trusts it as mutable: the arrival that
/// lost its tag is not looked at, and the push's deadline check raises TAG_LOST. No alert is
/// lost; it comes at the deadline instead of at once.
#[tokio::test]
async fn a_repository_made_immutable_within_the_ttl_loses_no_tag_alert() {
    let world = World::new();
    let pipeline = world.pipeline();
    let first = ("2026-11-20T10:00:00Z", "2026-11-20T10:00:00Z");
    pipeline
        .handle(&image_event("push-tagged.json", DIGEST, "v1.4.2", first))
        .await
        .expect("push");
    world.registry.tags("eu-west-1", &["v1.4.2"]);
    let first_arrival = ("2026-11-20T10:04:40Z", "2026-11-20T10:04:40Z");
    pipeline
        .handle(&image_event(
            "replication-success-cross-account.json",
            DIGEST,
            "v1.4.2",
            first_arrival,
        ))
        .await
        .expect("replicated");

    // The destination's tags become immutable; the next build of the tag arrives untagged,
    // the tag kept on the first one.
    let second = format!("sha256:{}", "e4".repeat(32));
    world.registry.immutable("eu-west-1");
    world.registry.tags("eu-west-1", &[]);
    world.registry.tag_holder("eu-west-1", "v1.4.2", DIGEST);
    world.registry.tag_holder("us-west-2", "v1.4.2", &second);
    pipeline
        .handle(&image_event(
            "push-tagged.json",
            &second,
            "v1.4.2",
            ("2026-11-20T10:00:00Z", "2026-11-20T10:05:00Z"),
        ))
        .await
        .expect("push");
    let lost = pipeline
        .handle(&image_event(
            "replication-success-cross-account.json",
            &second,
            "v1.4.2",
            ("2026-11-20T10:04:40Z", "2026-11-20T10:09:40Z"),
        ))
        .await
        .expect("replicated");
    assert!(lost.alerts.is_empty(), "within the TTL: {:?}", lost.alerts);
    assert_eq!(world.registry.tag_calls.load(Ordering::SeqCst), 0);

    world.registry.complete_everywhere();
    world.registry.tags("us-east-1", &["v1.4.2"]);
    world.registry.tags("ap-southeast-2", &["v1.4.2"]);
    world.clock.set(push_time() + TimeDelta::minutes(36));
    let report = sweep_whole(&pipeline).await;
    assert_eq!(
        kinds(&report.effects.alerts),
        vec![("eu-west-1".into(), AlertKind::TagLost)]
    );
    let second = Digest::parse(&second).expect("digest");
    assert_eq!(report.effects.alerts[0].key.image.digest, second);
}

/// Each case: the destination's tags are immutable or not, which image the tag names there
/// and in the source. Only an immutable destination whose tag names another image, with the
/// source still putting the tag on this one, is a loss.
#[tokio::test]
async fn a_tag_that_moved_on_is_superseded_never_lost() {
    let other = format!("sha256:{}", "e2".repeat(32));
    let later = format!("sha256:{}", "e3".repeat(32));
    let cases: [(&str, bool, Option<&str>, Option<&str>); 4] = [
        (
            "a later push in a mutable repository",
            false,
            Some(&other),
            Some(&other),
        ),
        (
            "the source moved the tag first",
            true,
            Some(&other),
            Some(&later),
        ),
        (
            "the tag was deleted by hand there",
            true,
            None,
            Some(DIGEST),
        ),
        ("the source no longer has the tag", true, Some(&other), None),
    ];
    for (case, immutable, in_destination, in_source) in cases {
        let world = World::new();
        let pipeline = world.pipeline();
        pipeline
            .handle(&event("push-tagged.json"))
            .await
            .expect("push");
        world.registry.tags("eu-west-1", &["other-tag"]);
        if immutable {
            world.registry.immutable("eu-west-1");
        }
        if let Some(holder) = in_destination {
            world.registry.tag_holder("eu-west-1", "v1.4.2", holder);
        }
        if let Some(holder) = in_source {
            world.registry.tag_holder("us-west-2", "v1.4.2", holder);
        }
        let effects = pipeline
            .handle(&event("replication-success-cross-account.json"))
            .await
            .expect("replicated");
        assert!(effects.alerts.is_empty(), "{case}: {:?}", effects.alerts);
        assert!(effects.applied.is_empty(), "{case}: nothing written");
        assert_eq!(
            effects.latencies.len(),
            1,
            "{case}: the image arrived, so its latency counts"
        );
        // The deadline check finds the same and closes it superseded.
        world
            .registry
            .status("eu-west-1", DestinationReplication::Complete);
        world.clock.set(push_time() + TimeDelta::minutes(31));
        let report = sweep_whole(&pipeline).await;
        assert!(
            report
                .effects
                .alerts
                .iter()
                .all(|a| a.kind != AlertKind::TagLost),
            "{case}"
        );
        let state = world
            .states()
            .into_iter()
            .find(|(region, _)| region == "eu-west-1")
            .map(|(_, state)| state);
        assert_eq!(
            state,
            Some(ExpectationState::Superseded),
            "{case}: {:?}",
            world.states()
        );
        assert!(
            world
                .store
                .pending_alerts()
                .iter()
                .all(|p| p.alert.kind != AlertKind::TagLost),
            "{case}"
        );
    }
}

#[tokio::test]
async fn an_untagged_success_for_a_tagged_push_is_left_to_the_push_s_check() {
    let world = World::new();
    let pipeline = world.pipeline();
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");
    // An immutable destination where another image holds the tag, as ECR would have it.
    world.registry.tags("us-east-1", &[]);
    world.registry.immutable("us-east-1");
    world.registry.tag_holder(
        "us-east-1",
        "v1.4.2",
        &format!("sha256:{}", "e4".repeat(32)),
    );
    world.registry.tag_holder("us-west-2", "v1.4.2", DIGEST);
    let untagged = edited(
        "replication-success.json",
        "\"image-tag\": \"v1.4.2\"",
        "\"other\": 1",
    );
    let effects = pipeline.handle(&untagged).await.expect("replicated");
    assert!(effects.alerts.is_empty() && effects.applied.is_empty());
    assert_eq!(world.store.all().len(), 3, "no untagged record invented");
    // The push's check looks in the destination: the tag's incident, once.
    world.registry.tags("eu-west-1", &["v1.4.2"]);
    world.registry.tags("ap-southeast-2", &["v1.4.2"]);
    world.registry.complete_everywhere();
    world.clock.set(push_time() + TimeDelta::minutes(31));
    let report = sweep_whole(&pipeline).await;
    assert_eq!(
        kinds(&report.effects.alerts),
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
    assert!(
        world.store.records().is_empty(),
        "arrived on time: its push stands for it"
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
    let early = sweep_whole(&pipeline).await;
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
    let report = sweep_whole(&pipeline).await;
    assert_eq!(
        (report.checked, report.images, report.reconciled),
        (1, 1, 1),
        "one push of three destinations"
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
    let open: Vec<(String, u64, u64)> = world
        .store
        .open_counts()
        .await
        .expect("open counts")
        .iter()
        .map(|c| (c.destination.region.to_string(), c.pending, c.overdue))
        .collect();
    assert_eq!(open, vec![("eu-west-1".into(), 0, 1)]);

    // Next sweep within the recheck interval: nothing due, no new alert.
    world.clock.set(push_time() + TimeDelta::minutes(40));
    let quiet = sweep_whole(&pipeline).await;
    assert_eq!(quiet.checked, 0);

    // It finally arrives, event lost again: closed as a late arrival, no alert.
    world
        .registry
        .status("eu-west-1", DestinationReplication::Complete);
    world.registry.tags("eu-west-1", &["v1.4.2"]);
    world.clock.set(push_time() + TimeDelta::minutes(47));
    let late = sweep_whole(&pipeline).await;
    assert!(late.effects.alerts.is_empty());
    assert_eq!(late.reconciled, 1);
    assert!(world.store.open_counts().await.expect("open").is_empty());
    assert_eq!(
        world.states(),
        vec![
            ("ap-southeast-2".into(), ExpectationState::Failed),
            ("eu-west-1".into(), ExpectationState::Replicated),
            ("us-east-1".into(), ExpectationState::Replicated),
        ]
    );
}

/// An overdue verdict is changed only on what ECR shows: a SUCCESS event whose image the
/// destination does not show (ECR not consistent yet, or an event no rule of ours delivered)
/// closes nothing; once the image is there the same event closes it, late.
#[tokio::test]
async fn a_late_arrival_closes_an_overdue_destination_only_once_the_destination_shows_it() {
    let world = World::new();
    let pipeline = world.pipeline();
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");
    for region in ["eu-west-1", "ap-southeast-2"] {
        world
            .registry
            .status(region, DestinationReplication::Complete);
        world.registry.tags(region, &["v1.4.2"]);
    }
    world
        .registry
        .status("us-east-1", DestinationReplication::InProgress);
    world.clock.set(push_time() + TimeDelta::minutes(31));
    let report = sweep_whole(&pipeline).await;
    assert_eq!(
        kinds(&report.effects.alerts),
        vec![("us-east-1".into(), AlertKind::Overdue)]
    );

    world.clock.set(push_time() + TimeDelta::minutes(32));
    let unseen = pipeline
        .handle(&event("replication-success.json"))
        .await
        .expect("replicated");
    assert!(unseen.applied.is_empty(), "{:?}", unseen.applied);
    assert!(
        world
            .states()
            .contains(&("us-east-1".into(), ExpectationState::Overdue))
    );

    world.registry.tags("us-east-1", &["v1.4.2"]);
    let seen = pipeline
        .handle(&event("replication-success.json"))
        .await
        .expect("replicated");
    assert!(seen.alerts.is_empty());
    assert!(
        world
            .states()
            .contains(&("us-east-1".into(), ExpectationState::Replicated))
    );
}

#[tokio::test]
async fn a_deleted_source_is_never_reported_missing() {
    let world = World::new();
    let pipeline = world.pipeline();
    // The delete overtakes its push: the push is tracked, and its check finds the image gone.
    *world.registry.source_deleted.lock().expect("lock") = true;
    pipeline
        .handle(&event("delete.json"))
        .await
        .expect("delete");
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("late push");
    world.clock.set(push_time() + TimeDelta::hours(2));
    let report = sweep_whole(&pipeline).await;
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
    let report = sweep_whole(&pipeline).await;
    assert!(report.effects.alerts.is_empty());
    assert!(
        world
            .states()
            .iter()
            .all(|(_, s)| *s == ExpectationState::Deleted)
    );
}

#[tokio::test]
async fn a_restored_image_is_expected_with_the_tags_it_carries() {
    let world = World::new();
    let pipeline = world.pipeline();
    world.registry.tags("us-west-2", &["v1.4.2", "stable"]);
    let effects = pipeline
        .handle(&edited(
            "archive-storage-class.json",
            "\"target-storage-class\": \"ARCHIVE\"",
            "\"target-storage-class\": \"STANDARD\"",
        ))
        .await
        .expect("restore");
    assert!(effects.alerts.is_empty());
    let mut keys: Vec<(String, Option<String>)> = world
        .store
        .all()
        .into_iter()
        .map(|r| {
            assert_eq!(r.state, ExpectationState::Pending);
            assert!(r.deadline.is_some(), "the SLA runs from the restore");
            (r.key.destination.region.to_string(), r.key.tag)
        })
        .collect();
    keys.sort();
    let expected: Vec<(String, Option<String>)> = ["ap-southeast-2", "eu-west-1", "us-east-1"]
        .into_iter()
        .flat_map(|r| {
            [
                (r.to_owned(), Some("stable".to_owned())),
                (r.to_owned(), Some("v1.4.2".to_owned())),
            ]
        })
        .collect();
    assert_eq!(keys, expected);

    // Not replicated in time: the sweep reports it like a push.
    world.clock.set(push_time() + TimeDelta::hours(3));
    let report = sweep_whole(&pipeline).await;
    assert_eq!(report.effects.alerts.len(), 6);
    assert!(
        report
            .effects
            .alerts
            .iter()
            .all(|a| a.kind == AlertKind::Overdue)
    );
}

#[tokio::test]
async fn a_rules_change_seen_by_one_container_reaches_another_within_seconds() {
    let world = World::new();
    let first = world.pipeline();
    let second = world.pipeline();
    let push = |n: u64| edited("push-tagged.json", DIGEST, &format!("sha256:{n:064x}"));
    let destinations_of = |n: u64| {
        let digest = Digest::parse(&format!("sha256:{n:064x}")).expect("digest");
        let mut regions: Vec<String> = world
            .store
            .all()
            .into_iter()
            .filter(|r| r.key.image.digest == digest)
            .map(|r| r.key.destination.region.to_string())
            .collect();
        regions.sort();
        regions
    };
    first.handle(&push(1)).await.expect("push");
    second.handle(&push(2)).await.expect("push");
    assert_eq!(
        world.registry.configuration_calls.load(Ordering::SeqCst),
        1,
        "the second container took the rules the first one recorded"
    );
    assert_eq!(destinations_of(2).len(), 3);

    // The change reaches the first container only.
    world.clock.advance(TimeDelta::seconds(2));
    first
        .handle(&edited(
            "cloudtrail-put-replication-configuration.json",
            "2026-11-20T09:00:00Z",
            "2026-11-20T10:00:06Z",
        ))
        .await
        .expect("configuration change");
    let new_rules = ["eu-west-1", "us-east-1"];
    // Within the check interval the second container may still use what it has...
    second.handle(&push(3)).await.expect("push");
    // ...and after it, the new rules, without asking ECR.
    world.clock.advance(TimeDelta::seconds(11));
    second.handle(&push(4)).await.expect("push");
    assert_eq!(destinations_of(4), new_rules);
    assert_eq!(world.registry.configuration_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_image_ecr_completed_but_the_destination_no_longer_shows_is_not_overdue() {
    let world = World::new();
    let pipeline = world.pipeline();
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");
    // Every destination COMPLETE by ECR's word; eu-west-1's copy since removed there, and
    // us-east-1 and ap-southeast-2 hold it with its tag.
    world.registry.complete_everywhere();
    world.registry.tags("us-east-1", &["v1.4.2"]);
    world.registry.tags("ap-southeast-2", &["v1.4.2"]);
    world.clock.set(push_time() + TimeDelta::minutes(31));
    let report = sweep_whole(&pipeline).await;
    assert!(
        report.effects.alerts.is_empty(),
        "{:?}",
        report.effects.alerts
    );
    assert_eq!(
        world.states(),
        vec![
            ("ap-southeast-2".into(), ExpectationState::Replicated),
            ("eu-west-1".into(), ExpectationState::Superseded),
            ("us-east-1".into(), ExpectationState::Replicated),
        ]
    );
}

/// An untagged push (an index's child, a referrer, an untagged image) is confirmed in the
/// destination like a tagged one: ECR's COMPLETE for an image the destination does not show
/// is no arrival (drift, quietly), IN_PROGRESS for one it does not show is OVERDUE, and only
/// an image seen there is REPLICATED.
#[tokio::test]
async fn an_untagged_push_is_confirmed_in_the_destination_like_a_tagged_one() {
    let world = World::new();
    let pipeline = world.pipeline();
    pipeline
        .handle(&event("push-untagged.json"))
        .await
        .expect("push");
    for region in ["us-east-1", "eu-west-1"] {
        world
            .registry
            .status(region, DestinationReplication::Complete);
    }
    // Only us-east-1 shows the image; ap-southeast-2 is still in progress and shows nothing.
    world.registry.tags("us-east-1", &[]);
    world.clock.set(push_time() + TimeDelta::minutes(31));
    let report = sweep_whole(&pipeline).await;
    assert_eq!(
        kinds(&report.effects.alerts),
        vec![("ap-southeast-2".into(), AlertKind::Overdue)]
    );
    assert_eq!(
        world.states(),
        vec![
            ("ap-southeast-2".into(), ExpectationState::Overdue),
            ("eu-west-1".into(), ExpectationState::Superseded),
            ("us-east-1".into(), ExpectationState::Replicated),
        ],
        "COMPLETE but not there is not REPLICATED"
    );
}

#[tokio::test]
async fn a_destination_that_refuses_reads_holds_up_no_other_and_is_one_incident_past_the_grace() {
    let world = World::new();
    let pipeline = world.pipeline();
    world.registry.refuse("eu-west-1", true);
    world.registry.tags("ap-southeast-2", &["v1.4.2"]);
    for digest in [DIGEST.to_owned(), format!("sha256:{:064x}", 7)] {
        pipeline
            .handle(&edited("push-tagged.json", DIGEST, &digest))
            .await
            .expect("push");
    }

    // At the deadline: us-east-1 is overdue and says so; eu-west-1 waits without an alert.
    world.clock.advance(TimeDelta::minutes(31));
    let first = sweep_whole(&pipeline).await;
    assert_eq!(
        kinds(&first.effects.alerts),
        vec![
            ("us-east-1".into(), AlertKind::Overdue),
            ("us-east-1".into(), AlertKind::Overdue)
        ]
    );
    assert_eq!(first.unconfirmed, 2);
    assert!(first.failures.is_empty(), "{:?}", first.failures);
    let waiting: Vec<_> = world
        .store
        .records()
        .into_iter()
        .filter(|r| r.unconfirmed.is_some())
        .collect();
    assert_eq!(waiting.len(), 2);
    assert!(
        waiting
            .iter()
            .all(|r| r.next_check_at == Some(world.clock.now() + TimeDelta::minutes(1))),
        "retried after a minute, out of the due index's head"
    );
    assert!(
        waiting.iter().all(|r| r.expires_at.is_none()),
        "open: never expires"
    );

    // Retried with backoff; past the 5-minute grace, one alert for the registry.
    let mut later = Vec::new();
    let mut counted = 0;
    for minutes in [1, 2, 4, 8, 15] {
        world.clock.advance(TimeDelta::minutes(minutes));
        let report = sweep_whole(&pipeline).await;
        counted += report
            .effects
            .metric_points()
            .iter()
            .filter(|p| p.name == replwatch_core::metrics::MetricName::Unconfirmed)
            .count();
        later.extend(report.effects.alerts);
    }
    assert_eq!(
        kinds(&later),
        vec![("eu-west-1".into(), AlertKind::Unconfirmed)]
    );
    assert_eq!(counted, 2, "each waiting destination counted once");
    let unreadable = later[0].unreadable.as_ref().expect("facts");
    assert_eq!(unreadable.failure.operation, "DescribeImages");
    assert!(
        later[0].next_step().contains("reader role"),
        "{}",
        later[0].next_step()
    );

    // Readable again: one RESOLVED, and the real verdicts (the images are there).
    world.registry.refuse("eu-west-1", false);
    world.registry.tags("eu-west-1", &["v1.4.2"]);
    world
        .registry
        .status("eu-west-1", DestinationReplication::Complete);
    world.clock.advance(TimeDelta::minutes(15));
    let fixed = sweep_whole(&pipeline).await;
    assert_eq!(
        kinds(&fixed.effects.alerts),
        vec![("eu-west-1".into(), AlertKind::Resolved)]
    );
    assert!(
        world
            .store
            .records()
            .iter()
            .filter(|r| r.key.destination.region.as_str() == "eu-west-1")
            .all(|r| r.state == ExpectationState::Replicated && r.unconfirmed.is_none())
    );
    assert!(
        world.store.read_incidents().iter().all(|i| !i.is_open()),
        "the incident is over"
    );
}

/// A Region that is down is tried a few times per round, not once per image: the other
/// destinations of every push still get their verdicts, and the down one is left unconfirmed
/// for all of them, as if each had been read.
#[tokio::test]
async fn a_round_stops_calling_a_registry_once_it_failed_three_times_in_a_row() {
    let world = World::new();
    let pipeline = world.pipeline();
    world.registry.down("eu-west-1", true);
    for region in ["us-east-1", "ap-southeast-2"] {
        world.registry.tags(region, &["v1.4.2"]);
        world
            .registry
            .status(region, DestinationReplication::Complete);
    }
    let images = 40;
    for n in 0..images {
        pipeline
            .handle(&edited(
                "push-tagged.json",
                DIGEST,
                &format!("sha256:{:064x}", n + 100),
            ))
            .await
            .expect("push");
    }
    world.clock.advance(TimeDelta::minutes(31));
    let report = sweep_whole(&pipeline).await;
    let refused = world.registry.refused_calls.load(Ordering::SeqCst);
    assert!(
        refused < images / 2,
        "{refused} calls to the down Region for {images} images"
    );
    assert!(refused >= 3, "it was tried");
    assert_eq!(report.unconfirmed, images, "every push left waiting there");
    assert_eq!(report.skipped_reads, images - refused);
    assert!(
        report.effects.alerts.is_empty(),
        "{:?}",
        report.effects.alerts
    );
    let states = world.states();
    for region in ["us-east-1", "ap-southeast-2"] {
        assert_eq!(
            states
                .iter()
                .filter(|(r, s)| r == region && *s == ExpectationState::Replicated)
                .count(),
            images,
            "{region}: every push has its verdict"
        );
    }

    // Next round, the rechecks: a few calls, then the Region is taken as down again, and
    // the images waiting on it alone cost no call at all, not even the source's status.
    world.registry.refused_calls.store(0, Ordering::SeqCst);
    world.registry.status_calls.store(0, Ordering::SeqCst);
    world.clock.advance(TimeDelta::minutes(1));
    let again = sweep_whole(&pipeline).await;
    assert_eq!(again.unconfirmed, images);
    assert!(world.registry.refused_calls.load(Ordering::SeqCst) < images / 2);
    assert!(world.registry.status_calls.load(Ordering::SeqCst) < images / 2);
    assert!(again.effects.alerts.is_empty());

    // Readable again: the next round reads every one and gives its verdict.
    world.registry.down("eu-west-1", false);
    world.registry.tags("eu-west-1", &["v1.4.2"]);
    world
        .registry
        .status("eu-west-1", DestinationReplication::Complete);
    world.clock.advance(TimeDelta::minutes(2));
    let back = sweep_whole(&pipeline).await;
    assert_eq!((back.unconfirmed, back.skipped_reads), (0, 0));
    assert!(
        world
            .states()
            .iter()
            .all(|(_, state)| *state == ExpectationState::Replicated)
    );
}

/// A refusal is not an outage: it fails at once and may be one repository's policy, so every
/// image is still read there (the others of the registry are not held up by it).
#[tokio::test]
async fn refusals_never_take_a_registry_as_down() {
    let world = World::new();
    let pipeline = world.pipeline();
    world.registry.refuse("eu-west-1", true);
    let images = 10;
    for n in 0..images {
        pipeline
            .handle(&edited(
                "push-tagged.json",
                DIGEST,
                &format!("sha256:{:064x}", n + 300),
            ))
            .await
            .expect("push");
    }
    world.clock.advance(TimeDelta::minutes(31));
    let report = sweep_whole(&pipeline).await;
    assert_eq!(report.skipped_reads, 0);
    assert_eq!(world.registry.refused_calls.load(Ordering::SeqCst), images);
    assert_eq!(report.unconfirmed, images);
}

#[tokio::test]
async fn a_source_that_refuses_its_status_leaves_every_destination_unconfirmed_and_names_the_function_role()
 {
    let world = World::new();
    let pipeline = world.pipeline();
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");
    world.registry.refuse("us-west-2", true);
    world.clock.advance(TimeDelta::minutes(31));
    let first = sweep_whole(&pipeline).await;
    assert!(first.effects.alerts.is_empty());
    assert_eq!(first.unconfirmed, 3);
    let mut later = Vec::new();
    for minutes in [1, 2, 4, 8] {
        world.clock.advance(TimeDelta::minutes(minutes));
        later.extend(sweep_whole(&pipeline).await.effects.alerts);
    }
    assert_eq!(
        kinds(&later),
        vec![("us-west-2".into(), AlertKind::Unconfirmed)],
        "one alert, about the source registry"
    );
    assert!(
        later[0].next_step().contains("function role"),
        "{}",
        later[0].next_step()
    );
}

#[tokio::test]
async fn a_replication_event_from_a_destination_that_refuses_reads_is_left_to_the_check() {
    let world = World::new();
    let pipeline = world.pipeline();
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");
    world.registry.refuse("us-east-1", true);
    let effects = pipeline
        .handle(&event("replication-success.json"))
        .await
        .expect("not an error: no retry, no dead-letter queue");
    assert_eq!(effects.latencies.len(), 1, "its latency still counts");
    assert!(effects.alerts.is_empty() && effects.applied.is_empty());
}

#[tokio::test]
async fn a_source_deleted_while_a_destination_refuses_reads_resolves_nothing() {
    let world = World::new();
    let pipeline = world.pipeline();
    pipeline
        .handle(&event("push-tagged.json"))
        .await
        .expect("push");
    world.registry.refuse("eu-west-1", true);
    world.clock.advance(TimeDelta::minutes(31));
    let mut alerts = sweep_whole(&pipeline).await.effects.alerts;
    for minutes in [1, 2, 4] {
        world.clock.advance(TimeDelta::minutes(minutes));
        alerts.extend(sweep_whole(&pipeline).await.effects.alerts);
    }
    assert!(
        kinds(&alerts).contains(&("eu-west-1".into(), AlertKind::Unconfirmed)),
        "{alerts:?}"
    );
    // The image is deleted in the source: its destinations close without a read in
    // eu-west-1, which says nothing about eu-west-1 being readable again.
    *world.registry.source_deleted.lock().expect("lock") = true;
    world.clock.advance(TimeDelta::minutes(15));
    let after = sweep_whole(&pipeline).await;
    assert!(
        after.effects.alerts.is_empty(),
        "{:?}",
        after.effects.alerts
    );
    assert!(world.store.read_incidents().iter().all(|i| i.is_open()));
}
