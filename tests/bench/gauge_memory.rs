//! `gauge_memory`: what counting the gauges holds in memory as the backlog grows, through the
//! real DynamoDB store on the local AWS.
//!
//! ```sh
//! cargo bench -p replwatch-e2e --bench gauge_memory                        # 2,000 then 20,000
//! cargo bench -p replwatch-e2e --bench gauge_memory -- --backlogs 1000,5000,25000
//! ```
//!
//! One fresh table; for each backlog (cumulative), open items are added until the table holds
//! that many: open pushes to 25 destinations (a Region outage's first verdicts) and, one in
//! two, an OVERDUE record of the push's first destination (its rechecks), spread over the due
//! index's shards by their images as the functions write them. Then
//! [`ExpectationStore::open_counts`] runs alone while a counting allocator records the most
//! heap it held above what was in use before: the gauges' memory at that backlog. A count
//! that loaded every open item (as before) grows with the backlog; one folded page by page
//! stays flat.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::{StreamExt, stream};
use replwatch_aws::DynamoExpectationStore;
use replwatch_core::push::TrackedPush;
use replwatch_core::tracking::{Observation, TrackingPolicy};
use replwatch_core::{
    AccountId, Destination, Digest, ExpectationStore, Region, RepositoryName, SourceImage,
};
use testbed::{Error, LocalAws};

/// The system allocator, counting the bytes in use and the most since the last reset.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is the system allocator's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn digest(i: usize) -> Digest {
    Digest::parse(&format!(
        "sha256:{:064x}",
        i as u128 * 0x9e37_79b9_7f4a_7c15 + 1
    ))
    .expect("digest")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let backlogs: Vec<usize> = std::env::args()
        .skip_while(|a| a != "--backlogs")
        .nth(1)
        .map(|list| {
            list.split(',')
                .map(|n| n.trim().parse().expect("--backlogs takes numbers"))
                .collect()
        })
        .unwrap_or_else(|| vec![2_000, 20_000]);
    let aws = LocalAws::connect_or_start()?;
    let config = replwatch_aws::local::sdk_config(aws.endpoint(), "us-west-2").await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = format!("replwatch-gauge-memory-{}", std::process::id());
    replwatch_aws::provisioning::create_tracking_table(&client, &table).await?;
    let store = DynamoExpectationStore::new(client, table);
    let policy = TrackingPolicy::default();
    let source = Destination::new(
        Region::parse("us-west-2").expect("region"),
        AccountId::parse("111111111111").expect("account"),
    );
    // ECR's most: 25 destinations (one Region, 25 accounts: the counts only tell them apart).
    let destinations: Vec<Destination> = (1..=25)
        .map(|n| {
            Destination::new(
                Region::parse("eu-west-1").expect("region"),
                AccountId::parse(&format!("2222222222{n:02}")).expect("account"),
            )
        })
        .collect();
    let repository = RepositoryName::parse("team-a/web").expect("repository");
    let pushed_at: DateTime<Utc> = Utc::now() - TimeDelta::hours(1);
    println!(
        "gauge_memory: local AWS at {}; open pushes to 25 destinations, one in two with an OVERDUE record",
        aws.endpoint()
    );
    println!(
        "| open items | rows counted | destination-images open | time | most heap held while counting |"
    );
    println!("|---|---|---|---|---|");
    let mut written = 0usize;
    for backlog in backlogs {
        let from = written;
        let items_wanted = backlog.saturating_sub(written);
        // Each push makes one item, or two with its record.
        let pushes = items_wanted * 2 / 3;
        let outcomes: Vec<usize> = stream::iter(from..from + pushes)
            .map(|i| {
                let store = &store;
                let push = TrackedPush::new(
                    SourceImage {
                        registry: source.clone(),
                        repository: repository.clone(),
                        digest: digest(i),
                    },
                    Some("v1".to_owned()),
                    destinations.clone(),
                    pushed_at,
                    &policy,
                );
                async move {
                    let mut items = 0;
                    store.save_push(&push).await.expect("save push");
                    items += 1;
                    if i % 2 == 0 {
                        let mut record = push.seed(&push.destinations[0], &policy);
                        record.apply(
                            &Observation::StillInProgress {
                                at: push.deadline + TimeDelta::minutes(1),
                            },
                            &policy,
                        );
                        store.save(&record, &[]).await.expect("save record");
                        items += 1;
                    }
                    items
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        written += outcomes.iter().sum::<usize>();

        let before = IN_USE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let started = Instant::now();
        let counts = store.open_counts().await?;
        let took = started.elapsed();
        let held = PEAK.load(Ordering::Relaxed).saturating_sub(before);
        let open: u64 = counts.iter().map(|c| c.pending + c.overdue).sum();
        println!(
            "| {written} | {} | {open} | {:.1} s | {:.0} KiB |",
            counts.len(),
            took.as_secs_f64(),
            held as f64 / 1024.0
        );
    }
    Ok(())
}
