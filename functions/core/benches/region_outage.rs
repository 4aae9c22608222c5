//! `region_outage`: one destination Region down for a modelled hour at a steady push rate,
//! through the real sweep ([`Pipeline::sweep`]) on the in-memory store, in simulated time.
//!
//! ```sh
//! cargo bench -p replwatch-core --bench region_outage                      # ECR down there
//! cargo bench -p replwatch-core --bench region_outage -- --outage stalled  # replication stalled
//! cargo bench -p replwatch-core --bench region_outage -- --outage-minutes 240
//! ```
//!
//! Options: `--pushes-per-day` (10,000,000), `--scale` (100), `--destinations` (25, one Region
//! each), `--outage unavailable|stalled` (unavailable), `--outage-minutes` (60),
//! `--capacity` (images a sweep tick confirms with ECR; default the template's: 4 parts × 200
//! images/s (each part's share of `EcrCallBudgetPerSecond`) × 50 s of each 60 s tick, ÷
//! `--scale`; an image that waits on a Region down this round, with no ECR call, counts
//! [`WRITE_ONLY_SHARE`] of one).
//!
//! **Scaling.** Pushes arrive at `pushes-per-day ÷ scale`, spread evenly over each minute,
//! and each tick of the sweep (once a minute, as `SweepRate`) confirms at most `capacity`
//! images, also ÷ `scale`: every ratio that decides starvation and drain (rechecks per tick
//! against first verdicts per tick against capacity) is that of the full rate, with 100
//! times fewer items. What is not modelled: the time a tick takes (a verdict is given at the
//! tick's instant) and DynamoDB (the in-memory store; the due index's two queues and the
//! round's budget are the same code path, checked against DynamoDB by the store contract).
//!
//! **The outage.** An hour after the start, one destination Region goes down for
//! `outage-minutes`:
//! - `unavailable`: every ECR read there fails (`ServiceUnavailableException`), and images
//!   pushed since the outage began (and those still on their way) arrive 5 minutes after it
//!   ends, as ECR catches up;
//! - `stalled`: reads work, replication there does not: the same images are missing (ECR says
//!   IN_PROGRESS) until 5 minutes after it ends.
//!
//! Everywhere else an image arrives 5 minutes after its push. The run goes on for two hours
//! after the outage and reports, from the store and the alerts raised:
//! - **deadline to verdict for the healthy destinations**: when each push's check closed it
//!   (every healthy destination then has its verdict), minus its deadline; the pushes whose
//!   deadline fell in the outage, and all of them;
//! - **the rechecks' lag**: how late the oldest recheck due was at each tick;
//! - **the gauges' memory**: the rows the open counts return (one per destination) beside the
//!   open items they count;
//! - **the backlog drain**: minutes from the end of the outage until the down Region has no
//!   open record left;
//! - **calls to the down Region** per tick, and the alerts raised, by kind and Region (any
//!   alert about a healthy destination is a false alert, and fails the run).
// Benchmark code: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use replwatch_core::backfill::inventory::TagMutability;
use replwatch_core::pipeline::{Pipeline, PipelineSettings};
use replwatch_core::push::{PushOutcome, TrackedPush};
use replwatch_core::registry::{
    DestinationReplication, ImageReplicationStatus, Registry, RegistryError,
};
use replwatch_core::store::SweepPart;
use replwatch_core::tracking::{AlertKind, TrackingPolicy};
use replwatch_core::{
    AccountId, Clock, Destination, Digest, ExpectationStore, InMemoryStore, ManualClock, Region,
    ReplicationConfiguration, RepositoryName, SourceImage,
};

/// Twenty-five Regions, one destination each; the first is the one that goes down.
const REGIONS: [&str; 25] = [
    "eu-west-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "eu-south-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-east-1",
    "ca-central-1",
    "sa-east-1",
    "me-south-1",
    "af-south-1",
    "eu-central-2",
    "eu-south-2",
    "ap-south-2",
    "ap-southeast-3",
    "me-central-1",
];
const SOURCE_REGION: &str = "us-west-2";
const ACCOUNT: &str = "111111111111";
/// How long replication takes where nothing is wrong.
const ARRIVAL: TimeDelta = TimeDelta::minutes(5);
const TICK: TimeDelta = TimeDelta::minutes(1);
/// What an image whose check made no ECR call costs of a tick's capacity, against one
/// confirmed with ECR: a DynamoDB write (about 10 ms) against two ECR round trips one after
/// the other (the status, then the destinations at once: about 200 ms at 100 ms a call).
const WRITE_ONLY_SHARE: f64 = 0.05;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    Unavailable,
    Stalled,
}

struct Options {
    pushes_per_day: f64,
    scale: f64,
    destinations: usize,
    outage: Outage,
    outage_minutes: i64,
    capacity: Option<usize>,
}

impl Options {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let arg = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let number = |name: &str, default: f64| {
            arg(name).map_or(default, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} takes a number, not {v:?}"))
            })
        };
        Self {
            pushes_per_day: number("--pushes-per-day", 10_000_000.0),
            scale: number("--scale", 100.0).max(1.0),
            destinations: (number("--destinations", 25.0) as usize).clamp(2, REGIONS.len()),
            outage: match arg("--outage").as_deref() {
                None | Some("unavailable") => Outage::Unavailable,
                Some("stalled") => Outage::Stalled,
                Some(other) => panic!("--outage is unavailable or stalled, not {other:?}"),
            },
            outage_minutes: number("--outage-minutes", 60.0) as i64,
            capacity: arg("--capacity").map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("--capacity takes a number, not {v:?}"))
            }),
        }
    }
}

/// ECR as the outage makes it: every image arrives [`ARRIVAL`] after its push, except in the
/// down Region, where images pushed from [`ARRIVAL`] before the outage until its end arrive
/// [`ARRIVAL`] after it ends; with [`Outage::Unavailable`] every read there fails meanwhile.
struct OutageRegistry<'a> {
    configuration: ReplicationConfiguration,
    clock: &'a ManualClock,
    down: Destination,
    outage: Outage,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    pushed: Mutex<HashMap<Digest, DateTime<Utc>>>,
    calls_to_down: AtomicUsize,
    status_calls: AtomicUsize,
}

impl OutageRegistry<'_> {
    fn arrival(&self, destination: &Destination, digest: &Digest) -> Option<DateTime<Utc>> {
        let pushed = *self
            .pushed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)?;
        let held = destination == &self.down && pushed + ARRIVAL > self.from && pushed < self.until;
        Some(if held {
            self.until + ARRIVAL
        } else {
            pushed + ARRIVAL
        })
    }

    fn arrived(&self, destination: &Destination, digest: &Digest) -> bool {
        self.arrival(destination, digest)
            .is_some_and(|at| at <= self.clock.now())
    }

    /// The read in `registry` fails when it is the down one, down now.
    fn read(&self, operation: &'static str, registry: &Destination) -> Result<(), RegistryError> {
        if registry != &self.down {
            return Ok(());
        }
        self.calls_to_down.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now();
        if self.outage == Outage::Unavailable && now >= self.from && now < self.until {
            return Err(RegistryError {
                operation,
                resource: registry.to_string(),
                message: "ServiceUnavailableException: Service Unavailable".into(),
                retryable: true,
            });
        }
        Ok(())
    }
}

impl Registry for OutageRegistry<'_> {
    async fn replication_status(
        &self,
        image: &SourceImage,
    ) -> Result<ImageReplicationStatus, RegistryError> {
        self.status_calls.fetch_add(1, Ordering::Relaxed);
        Ok(ImageReplicationStatus::Found(
            self.configuration
                .all_destinations()
                .into_iter()
                .map(|d| {
                    let status = if self.arrived(&d, &image.digest) {
                        DestinationReplication::Complete
                    } else {
                        DestinationReplication::InProgress
                    };
                    (d, status)
                })
                .collect(),
        ))
    }

    async fn image_tags(
        &self,
        destination: &Destination,
        _: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Vec<String>>, RegistryError> {
        self.read("DescribeImages", destination)?;
        Ok(self
            .arrived(destination, digest)
            .then(|| vec!["v1".to_owned()]))
    }

    async fn tagged_image(
        &self,
        registry: &Destination,
        _: &RepositoryName,
        _: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        self.read("DescribeImages", registry)?;
        Ok(None)
    }

    async fn tag_mutability(
        &self,
        registry: &Destination,
        _: &RepositoryName,
    ) -> Result<Option<TagMutability>, RegistryError> {
        self.read("DescribeRepositories", registry)?;
        Ok(Some(TagMutability::Immutable))
    }

    async fn replication_configuration(
        &self,
        _: &Destination,
    ) -> Result<ReplicationConfiguration, RegistryError> {
        Ok(self.configuration.clone())
    }
}

/// The digest of image `i`.
fn digest(i: usize) -> Digest {
    Digest::parse(&support::digest(i)).expect("digest")
}

/// Seconds, as a whole figure for the report.
fn secs(d: TimeDelta) -> i64 {
    d.num_seconds()
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    let options = Options::parse();
    let policy = TrackingPolicy::default();
    let settings = PipelineSettings::default();
    let per_minute = options.pushes_per_day / options.scale / 1_440.0;
    // 4 parts × 200 images/s (each part's share of the ECR budget) × 50 s of each tick.
    let capacity = options
        .capacity
        .unwrap_or((4.0 * 200.0 * 50.0 / options.scale).round() as usize)
        .max(1);
    let destinations: Vec<Destination> = REGIONS[..options.destinations]
        .iter()
        .map(|r| {
            Destination::new(
                Region::parse(r).expect("region"),
                AccountId::parse(ACCOUNT).expect("account"),
            )
        })
        .collect();
    let rules = serde_json::json!({"rules": [{"destinations": destinations
        .iter()
        .map(|d| serde_json::json!({"region": d.region.as_str(), "registryId": ACCOUNT}))
        .collect::<Vec<_>>()}]});
    let configuration =
        ReplicationConfiguration::from_json(rules.to_string().as_bytes()).expect("rules");
    let source = Destination::new(
        Region::parse(SOURCE_REGION).expect("region"),
        AccountId::parse(ACCOUNT).expect("account"),
    );
    let repository = RepositoryName::parse("team-a/web").expect("repository");
    let start: DateTime<Utc> = "2026-12-07T00:00:00Z".parse().expect("time");
    let from = start + TimeDelta::hours(1);
    let until = from + TimeDelta::minutes(options.outage_minutes);
    let end = until + TimeDelta::hours(2);
    let clock = ManualClock::new(start);
    let registry = OutageRegistry {
        configuration,
        clock: &clock,
        down: destinations[0].clone(),
        outage: options.outage,
        from,
        until,
        pushed: Mutex::new(HashMap::new()),
        calls_to_down: AtomicUsize::new(0),
        status_calls: AtomicUsize::new(0),
    };
    let store = InMemoryStore::new();
    let pipeline = Pipeline::new(&store, &registry, &clock, settings);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    println!(
        "region_outage: {:.0} pushes a day ÷ {} = {per_minute:.1} a minute to {} destinations; {} down ({:?}) for {} minutes from {}; sweep every minute, at most {capacity} images a tick ({} per round)",
        options.pushes_per_day,
        options.scale,
        destinations.len(),
        destinations[0].region,
        options.outage,
        options.outage_minutes,
        from.format("%H:%M"),
        settings.sweep_batch,
    );

    let mut pushed = 0usize;
    let mut owed = 0.0f64;
    let mut alerts: BTreeMap<(AlertKind, String), usize> = BTreeMap::new();
    let mut false_alerts = Vec::new();
    let mut recheck_lag_max = TimeDelta::zero();
    let mut recheck_lag_in_outage = TimeDelta::zero();
    let mut gauge_rows_max = 0usize;
    let mut open_max = 0u64;
    let mut drained_at: Option<DateTime<Utc>> = None;
    let mut calls_per_tick_in_outage = 0usize;
    let mut ticks_in_outage = 0usize;
    let mut skipped = 0usize;
    let mut now = start;
    runtime.block_on(async {
        while now < end {
            // This minute's pushes, spread over it.
            owed += per_minute;
            let count = owed.floor() as usize;
            owed -= count as f64;
            for k in 0..count {
                let at = now + TimeDelta::milliseconds((60_000 * k / count.max(1)) as i64);
                let image = SourceImage {
                    registry: source.clone(),
                    repository: repository.clone(),
                    digest: digest(pushed),
                };
                registry
                    .pushed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(image.digest.clone(), at);
                let push = TrackedPush::new(
                    image,
                    Some("v1".to_owned()),
                    destinations.clone(),
                    at,
                    &policy,
                );
                store.save_push(&push).await.expect("push");
                pushed += 1;
            }
            now += TICK;
            clock.set(now);

            // The oldest recheck due before the tick: how late rechecks run.
            let oldest_recheck = store
                .records()
                .iter()
                .filter(|r| r.is_recheck())
                .filter_map(|r| r.next_check_at)
                .filter(|at| *at <= now)
                .min();
            let calls_before = registry.calls_to_down.load(Ordering::Relaxed);
            let mut left = capacity as f64;
            while left >= 1.0 {
                let status_before = registry.status_calls.load(Ordering::Relaxed);
                let report = pipeline
                    .sweep(settings.sweep_batch.min(left as usize), SweepPart::WHOLE)
                    .await
                    .expect("sweep");
                assert!(report.failures.is_empty(), "{:?}", report.failures);
                skipped += report.skipped_reads;
                for alert in &report.effects.alerts {
                    let region = alert.key.destination.region.to_string();
                    if alert.key.destination != registry.down {
                        false_alerts.push(format!("{:?} {}", alert.kind, alert.key));
                    }
                    *alerts.entry((alert.kind, region)).or_default() += 1;
                }
                // An image confirmed with ECR takes a tick's time; one that made no call (it
                // waits on a Region down this round) only its write.
                let confirmed = registry.status_calls.load(Ordering::Relaxed) - status_before;
                let waited = (report.images + report.incidents).saturating_sub(confirmed);
                left -= confirmed as f64 + waited as f64 * WRITE_ONLY_SHARE;
                if !report.more {
                    break;
                }
            }
            if let Some(oldest) = oldest_recheck {
                let lag = now - oldest;
                recheck_lag_max = recheck_lag_max.max(lag);
                if now >= from && now < until {
                    recheck_lag_in_outage = recheck_lag_in_outage.max(lag);
                }
            }
            if now >= from && now < until {
                calls_per_tick_in_outage +=
                    registry.calls_to_down.load(Ordering::Relaxed) - calls_before;
                ticks_in_outage += 1;
            }
            if now.signed_duration_since(start).num_minutes() % 5 == 0 {
                let open = store.open_counts().await.expect("open counts");
                gauge_rows_max = gauge_rows_max.max(open.len());
                open_max = open_max.max(open.iter().map(|c| c.pending + c.overdue).sum());
            }
            if now >= until && drained_at.is_none() {
                let open_down = store
                    .records()
                    .iter()
                    .filter(|r| r.key.destination == registry.down && !r.state.is_closed())
                    .count();
                if open_down == 0 {
                    drained_at = Some(now);
                }
            }
        }
    });

    // Deadline to verdict, from each push's closing write.
    let mut lag_all = Vec::new();
    let mut lag_outage = Vec::new();
    let mut unverdicted = 0;
    for push in store.pushes() {
        match &push.outcome {
            PushOutcome::Confirmed { at, .. } => {
                let lag = secs(*at - push.deadline);
                lag_all.push(lag);
                if push.deadline >= from && push.deadline < until {
                    lag_outage.push(lag);
                }
            }
            PushOutcome::Deleted { .. } => {}
            PushOutcome::Open => {
                if push.deadline <= end - TICK {
                    unverdicted += 1;
                }
            }
        }
    }
    lag_all.sort_unstable();
    lag_outage.sort_unstable();
    let within_period = lag_outage.iter().all(|l| *l <= secs(TICK));
    println!(
        "pushes: {pushed}; deadline to verdict for the healthy destinations: during the outage p50 {} s, p99 {} s, max {} s ({} pushes); all pushes max {} s; past their deadline with no verdict: {unverdicted}",
        percentile(&lag_outage, 0.5),
        percentile(&lag_outage, 0.99),
        lag_outage.last().copied().unwrap_or_default(),
        lag_outage.len(),
        lag_all.last().copied().unwrap_or_default(),
    );
    println!(
        "rechecks: the oldest due was at most {} s late during the outage, {} s over the run",
        secs(recheck_lag_in_outage),
        secs(recheck_lag_max)
    );
    println!(
        "calls to {} while it was down: {:.1} a tick on average ({} reads skipped over the run: the Region taken as down after {} failures a round)",
        registry.down.region,
        calls_per_tick_in_outage as f64 / ticks_in_outage.max(1) as f64,
        skipped,
        replwatch_core::pipeline::DOWN_AFTER_FAILURES,
    );
    println!(
        "gauges: at most {gauge_rows_max} rows (one per destination) for at most {open_max} open destination-images counted"
    );
    match drained_at {
        Some(at) => println!(
            "backlog: {} had no open record left {} minutes after the outage ended",
            registry.down.region,
            (at - until).num_minutes()
        ),
        None => println!(
            "backlog: {} still had open records at the end of the run",
            registry.down.region
        ),
    }
    println!("alerts raised (before folding), by kind and Region: {alerts:?}");
    println!(
        "verdict: healthy destinations within one sweep period of their deadline during the outage: {}; false alerts: {}",
        if within_period { "yes" } else { "NO" },
        false_alerts.len()
    );
    assert!(false_alerts.is_empty(), "false alerts: {false_alerts:?}");
    assert_eq!(
        unverdicted, 0,
        "pushes past their deadline without a verdict"
    );
}
