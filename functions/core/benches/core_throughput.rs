//! Throughput of the pure core, the AWS calls a tracked push costs, and the sweep's throughput
//! against a registry whose every call takes a modelled 100 ms.
//!
//! `cargo bench -p replwatch-core` runs, on one thread, what `track-push` and
//! `track-replication` do per event — parse the EventBridge JSON, apply it through the tracker
//! to the store — against the in-memory store and a registry that answers at once, so the
//! figure is the core's own cost. It also counts, per push of an image replicated to three
//! destinations, the calls each port receives; the DynamoDB and ECR adapters make exactly one
//! AWS API call per port call of these kinds (GetItem, PutItem, DescribeRegistry,
//! DescribeImages), and metrics are EMF log lines, never an API call.
//!
//! The sweep measure fills the store with pushes all past their deadline and times
//! [`Pipeline::sweep`] in rounds until nothing is due, the registry sleeping 100 ms per call
//! (`DescribeImageReplicationStatus`, then one `DescribeImages` per destination): the images
//! one sweep invocation confirms per second when ECR answers in 100 ms, with
//! `PipelineSettings::sweep_concurrency` images at once.
// Benchmark code: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use replwatch_core::backfill::inventory::TagMutability;
use replwatch_core::pipeline::{Pipeline, PipelineSettings};
use replwatch_core::push::TrackedPush;
use replwatch_core::registry::{
    DestinationReplication, ImageReplicationStatus, Registry, RegistryError,
};
use replwatch_core::store::{
    DueWork, OpenCount, RecordedRules, RulesRecord, StoreError, SweepPart,
};
use replwatch_core::tracking::TrackingPolicy;
use replwatch_core::{
    AccountId, Destination, Digest, ExpectationKey, ExpectationStore, InMemoryStore, ManualClock,
    ParsedEvent, PendingAlert, Region, ReplicationConfiguration, ReplicationExpectation,
    RepositoryName, SourceImage, SystemClock, TagIncident, TagKey, parse_event,
};
use support::digest;

const CONFIGURATION: &str = r#"{"rules": [
  {"destinations": [{"region": "us-east-1", "registryId": "111111111111"},
                    {"region": "eu-west-1", "registryId": "222222222222"}],
   "repositoryFilters": [{"filter": "team-a/", "filterType": "PREFIX_MATCH"}]},
  {"destinations": [{"region": "ap-southeast-2", "registryId": "111111111111"}]}
]}"#;

#[derive(Default)]
struct Counts {
    get: AtomicUsize,
    save: AtomicUsize,
    query: AtomicUsize,
    describe_registry: AtomicUsize,
    describe_images: AtomicUsize,
    describe_repositories: AtomicUsize,
    replication_status: AtomicUsize,
}

struct CountingStore<'a> {
    inner: InMemoryStore,
    counts: &'a Counts,
}

impl ExpectationStore for CountingStore<'_> {
    async fn get(
        &self,
        key: &ExpectationKey,
    ) -> Result<Option<ReplicationExpectation>, StoreError> {
        self.counts.get.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key).await
    }
    async fn save(
        &self,
        item: &ReplicationExpectation,
        raised: &[PendingAlert],
    ) -> Result<u64, StoreError> {
        self.counts.save.fetch_add(1, Ordering::Relaxed);
        self.inner.save(item, raised).await
    }
    async fn for_image(
        &self,
        image: &SourceImage,
    ) -> Result<Vec<ReplicationExpectation>, StoreError> {
        self.counts.query.fetch_add(1, Ordering::Relaxed);
        self.inner.for_image(image).await
    }
    async fn latest_push(
        &self,
        image: &SourceImage,
        tag: Option<&str>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Option<TrackedPush>, StoreError> {
        self.counts.query.fetch_add(1, Ordering::Relaxed);
        self.inner.latest_push(image, tag, until).await
    }
    async fn save_push(&self, push: &TrackedPush) -> Result<u64, StoreError> {
        self.counts.save.fetch_add(1, Ordering::Relaxed);
        self.inner.save_push(push).await
    }
    async fn incident(&self, key: &TagKey) -> Result<Option<TagIncident>, StoreError> {
        self.counts.get.fetch_add(1, Ordering::Relaxed);
        self.inner.incident(key).await
    }
    async fn save_incident(
        &self,
        incident: &TagIncident,
        raised: &[PendingAlert],
    ) -> Result<u64, StoreError> {
        self.counts.save.fetch_add(1, Ordering::Relaxed);
        self.inner.save_incident(incident, raised).await
    }
    async fn read_incident(
        &self,
        key: &replwatch_core::unreadable::ReadIncidentKey,
    ) -> Result<Option<replwatch_core::unreadable::ReadIncident>, StoreError> {
        self.counts.get.fetch_add(1, Ordering::Relaxed);
        self.inner.read_incident(key).await
    }
    async fn save_read_incident(
        &self,
        incident: &replwatch_core::unreadable::ReadIncident,
        raised: &[PendingAlert],
    ) -> Result<u64, StoreError> {
        self.counts.save.fetch_add(1, Ordering::Relaxed);
        self.inner.save_read_incident(incident, raised).await
    }
    async fn pushes_of(&self, image: &SourceImage) -> Result<Vec<TrackedPush>, StoreError> {
        self.counts.query.fetch_add(1, Ordering::Relaxed);
        self.inner.pushes_of(image).await
    }
    async fn due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        part: SweepPart,
    ) -> Result<DueWork, StoreError> {
        self.counts.query.fetch_add(1, Ordering::Relaxed);
        self.inner.due(now, limit, part).await
    }
    async fn open_counts(&self) -> Result<Vec<OpenCount>, StoreError> {
        self.counts.query.fetch_add(1, Ordering::Relaxed);
        self.inner.open_counts().await
    }
}

impl RulesRecord for CountingStore<'_> {
    async fn recorded_rules(
        &self,
        registry: &Destination,
    ) -> Result<Option<RecordedRules>, StoreError> {
        self.counts.get.fetch_add(1, Ordering::Relaxed);
        self.inner.recorded_rules(registry).await
    }
    async fn record_rules(
        &self,
        registry: &Destination,
        rules: &RecordedRules,
    ) -> Result<bool, StoreError> {
        self.counts.save.fetch_add(1, Ordering::Relaxed);
        self.inner.record_rules(registry, rules).await
    }
}

/// A registry that answers after `latency` (zero: at once), and refuses every read in
/// `refusing` (a partner account whose reader role no longer trusts replwatch).
struct BenchRegistry<'a> {
    configuration: ReplicationConfiguration,
    counts: &'a Counts,
    latency: Duration,
    refusing: Option<Destination>,
}

impl BenchRegistry<'_> {
    async fn wait(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

impl Registry for BenchRegistry<'_> {
    async fn replication_status(
        &self,
        _: &SourceImage,
    ) -> Result<ImageReplicationStatus, RegistryError> {
        self.wait().await;
        self.counts
            .replication_status
            .fetch_add(1, Ordering::Relaxed);
        Ok(ImageReplicationStatus::Found(
            self.configuration
                .all_destinations()
                .into_iter()
                .map(|d| (d, DestinationReplication::Complete))
                .collect(),
        ))
    }
    async fn image_tags(
        &self,
        destination: &Destination,
        _: &RepositoryName,
        _: &Digest,
    ) -> Result<Option<Vec<String>>, RegistryError> {
        self.wait().await;
        self.counts.describe_images.fetch_add(1, Ordering::Relaxed);
        if self.refusing.as_ref() == Some(destination) {
            return Err(RegistryError {
                operation: "AssumeRole",
                resource: destination.to_string(),
                message: "AccessDenied: not authorized to perform: sts:AssumeRole".into(),
                retryable: false,
            });
        }
        Ok(Some(vec!["v1".to_owned()]))
    }
    async fn tagged_image(
        &self,
        _: &Destination,
        _: &RepositoryName,
        _: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        self.wait().await;
        self.counts.describe_images.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }
    async fn tag_mutability(
        &self,
        _: &Destination,
        _: &RepositoryName,
    ) -> Result<Option<TagMutability>, RegistryError> {
        self.counts
            .describe_repositories
            .fetch_add(1, Ordering::Relaxed);
        Ok(Some(TagMutability::Mutable))
    }
    async fn replication_configuration(
        &self,
        _: &Destination,
    ) -> Result<ReplicationConfiguration, RegistryError> {
        self.counts
            .describe_registry
            .fetch_add(1, Ordering::Relaxed);
        Ok(self.configuration.clone())
    }
}

fn push_event(i: usize) -> Vec<u8> {
    let digest = digest(i);
    format!(
        r#"{{"version":"0","id":"p-{i}","detail-type":"ECR Image Action","source":"aws.ecr","account":"111111111111","time":"2026-11-20T10:00:00Z","region":"us-west-2","resources":[],"detail":{{"result":"SUCCESS","repository-name":"team-a/web","image-digest":"{digest}","action-type":"PUSH","image-tag":"v1"}}}}"#
    )
    .into_bytes()
}

fn replication_event(i: usize, region: &str, account: &str) -> Vec<u8> {
    let digest = digest(i);
    format!(
        r#"{{"version":"0","id":"r-{i}-{region}","detail-type":"ECR Replication Action","source":"aws.ecr","account":"{account}","time":"2026-11-20T10:03:00Z","region":"{region}","resources":[],"detail":{{"result":"SUCCESS","repository-name":"team-a/web","image-digest":"{digest}","source-account":"111111111111","action-type":"REPLICATE","source-region":"us-west-2","image-tag":"v1"}}}}"#
    )
    .into_bytes()
}

fn main() {
    let images: usize = std::env::args()
        .skip_while(|a| a != "--images")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(50_000);
    let configuration =
        ReplicationConfiguration::from_json(CONFIGURATION.as_bytes()).expect("configuration");
    let destinations = [
        ("us-east-1", "111111111111"),
        ("eu-west-1", "222222222222"),
        ("ap-southeast-2", "111111111111"),
    ];
    let mut events: Vec<Vec<u8>> = Vec::with_capacity(images * 4);
    for i in 0..images {
        events.push(push_event(i));
    }
    for i in 0..images {
        for (region, account) in destinations {
            events.push(replication_event(i, region, account));
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");

    // Throughput: parse + handle every event, one thread.
    let counts = Counts::default();
    let store = CountingStore {
        inner: InMemoryStore::new(),
        counts: &counts,
    };
    let registry = BenchRegistry {
        configuration: configuration.clone(),
        counts: &counts,
        latency: Duration::ZERO,
        refusing: None,
    };
    let pipeline = Pipeline::new(store, registry, SystemClock, PipelineSettings::default());
    let started = Instant::now();
    runtime.block_on(async {
        for bytes in &events {
            let Ok(ParsedEvent::Handled(event)) = parse_event(bytes) else {
                panic!("event did not parse")
            };
            black_box(pipeline.handle(&event).await.expect("handled"));
        }
    });
    let elapsed = started.elapsed();
    let rate = events.len() as f64 / elapsed.as_secs_f64();
    println!(
        "core throughput: {} events ({} pushes to 3 destinations, {} replication events) in {:.2} s: {:.0} events/s on one thread",
        events.len(),
        images,
        images * 3,
        elapsed.as_secs_f64(),
        rate
    );

    // Calls per push (the first push also reads the rules; later ones use the cache).
    let counts = Counts::default();
    let store = CountingStore {
        inner: InMemoryStore::new(),
        counts: &counts,
    };
    let registry = BenchRegistry {
        configuration: configuration.clone(),
        counts: &counts,
        latency: Duration::ZERO,
        refusing: None,
    };
    let pipeline = Pipeline::new(store, registry, SystemClock, PipelineSettings::default());
    let pushes = 1_000;
    runtime.block_on(async {
        for i in 0..pushes {
            let Ok(ParsedEvent::Handled(event)) = parse_event(&push_event(i)) else {
                panic!("event did not parse")
            };
            pipeline.handle(&event).await.expect("handled");
        }
    });
    let per = |n: &AtomicUsize, of: usize| n.load(Ordering::Relaxed) as f64 / of as f64;
    println!(
        "AWS calls per tracked push (3 destinations, {pushes} pushes): PutItem {:.2}, GetItem {:.2}, Query {:.2}, DescribeRegistry {:.3} (once per container and rules refresh), DescribeImages {:.2}, DescribeImageReplicationStatus {:.2}, PutMetricData 0 (metrics are EMF log lines)",
        per(&counts.save, pushes),
        per(&counts.get, pushes),
        per(&counts.query, pushes),
        per(&counts.describe_registry, pushes),
        per(&counts.describe_images, pushes),
        per(&counts.replication_status, pushes)
    );
    let before = Counts::default();
    for (mine, theirs) in [
        (&before.get, &counts.get),
        (&before.save, &counts.save),
        (&before.query, &counts.query),
        (&before.describe_images, &counts.describe_images),
        (&before.describe_repositories, &counts.describe_repositories),
        (&before.replication_status, &counts.replication_status),
    ] {
        mine.store(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    let replications = pushes * destinations.len();
    runtime.block_on(async {
        for i in 0..pushes {
            for (region, account) in destinations {
                let Ok(ParsedEvent::Handled(event)) =
                    parse_event(&replication_event(i, region, account))
                else {
                    panic!("event did not parse")
                };
                pipeline.handle(&event).await.expect("handled");
            }
        }
    });
    let delta = |n: &AtomicUsize, b: &AtomicUsize| {
        (n.load(Ordering::Relaxed) - b.load(Ordering::Relaxed)) as f64 / replications as f64
    };
    println!(
        "AWS calls per replication event (tagged, {replications} events, destinations' tags mutable): GetItem {:.2}, PutItem {:.2}, Query {:.2}, DescribeImages {:.2}, DescribeRepositories {:.4} (once per repository and destination per container and 5 minutes), DescribeImageReplicationStatus {:.2}",
        delta(&counts.get, &before.get),
        delta(&counts.save, &before.save),
        delta(&counts.query, &before.query),
        delta(&counts.describe_images, &before.describe_images),
        delta(&counts.describe_repositories, &before.describe_repositories),
        delta(&counts.replication_status, &before.replication_status)
    );

    sweep_throughput(&runtime, &configuration, 10_000, false);
    // ECR's most: 25 destinations (one Region, 25 accounts: the pipeline only tells them
    // apart), the last one a partner account refusing every read.
    let destinations: Vec<String> = (1..=25)
        .map(|n| format!(r#"{{"region": "eu-west-1", "registryId": "2222222222{n:02}"}}"#))
        .collect();
    let wide = ReplicationConfiguration::from_json(
        format!(
            r#"{{"rules": [{{"destinations": [{}]}}]}}"#,
            destinations.join(", ")
        )
        .as_bytes(),
    )
    .expect("configuration");
    sweep_throughput(&runtime, &wide, 2_000, true);
}

/// Images one sweep invocation confirms per second when each ECR call takes 100 ms; with
/// `refusing`, the last destination refuses every read: the others still get their verdicts,
/// and the time it costs shows.
fn sweep_throughput(
    runtime: &tokio::runtime::Runtime,
    configuration: &ReplicationConfiguration,
    images: usize,
    refusing: bool,
) {
    let policy = TrackingPolicy::default();
    let pushed = DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let source = Destination::new(
        Region::parse("us-west-2").expect("region"),
        AccountId::parse("111111111111").expect("account"),
    );
    let repository = RepositoryName::parse("team-a/web").expect("repository");
    let destinations = configuration.destinations_for(&source, &repository);
    let counts = Counts::default();
    let store = CountingStore {
        inner: InMemoryStore::new(),
        counts: &counts,
    };
    runtime.block_on(async {
        for i in 0..images {
            let image = SourceImage {
                registry: source.clone(),
                repository: repository.clone(),
                digest: Digest::parse(&digest(i)).expect("digest"),
            };
            let push = TrackedPush::new(
                image,
                Some("v1".to_owned()),
                destinations.clone(),
                pushed,
                &policy,
            );
            store.inner.save_push(&push).await.expect("push");
        }
    });
    let refused = refusing.then(|| destinations[destinations.len() - 1].clone());
    let registry = BenchRegistry {
        configuration: configuration.clone(),
        counts: &counts,
        latency: Duration::from_millis(100),
        refusing: refused.clone(),
    };
    let settings = PipelineSettings::default();
    let clock = ManualClock::new(pushed + policy.sla + chrono::TimeDelta::minutes(1));
    let pipeline = Pipeline::new(store, registry, clock, settings);
    let started = Instant::now();
    let (confirmed, unconfirmed) = runtime.block_on(async {
        let (mut confirmed, mut unconfirmed) = (0, 0);
        loop {
            let report = pipeline
                .sweep(settings.sweep_batch, SweepPart::WHOLE)
                .await
                .expect("sweep");
            assert!(report.failures.is_empty() && report.effects.alerts.is_empty());
            confirmed += report.images;
            unconfirmed += report.unconfirmed;
            if !report.more {
                return (confirmed, unconfirmed);
            }
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    // Every push closed: the refusing destination waits in a record of its own, no other.
    assert!(pipeline.store().inner.pushes().iter().all(|p| !p.is_open()));
    assert_eq!(unconfirmed, if refusing { images } else { 0 });
    let waiting = pipeline.store().inner.records();
    assert!(
        waiting.len() == unconfirmed
            && waiting
                .iter()
                .all(|r| Some(&r.key.destination) == refused.as_ref() && r.unconfirmed.is_some())
    );
    println!(
        "sweep throughput: {confirmed} images to {} destinations{} confirmed in {elapsed:.1} s with 100 ms per ECR call and {} images at once: {:.0} images/s per invocation ({} ECR calls, {:.0} per second)",
        destinations.len(),
        if refusing {
            ", one refusing every read (left unconfirmed, retried later; the other 24 closed),"
        } else {
            ""
        },
        settings.sweep_concurrency,
        confirmed as f64 / elapsed,
        counts.replication_status.load(Ordering::Relaxed)
            + counts.describe_images.load(Ordering::Relaxed),
        (counts.replication_status.load(Ordering::Relaxed)
            + counts.describe_images.load(Ordering::Relaxed)) as f64
            / elapsed,
    );
}
