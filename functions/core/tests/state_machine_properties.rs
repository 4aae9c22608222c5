//! Property tests of the tracking state machine through the shared tracker loop: whatever the
//! order, duplication or loss of replication events, and wherever sweeps fall, every
//! (image, destination) ends in the verdict of the clean in-order run, each real problem is
//! alerted exactly once, and nothing healthy is ever alerted.
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use replwatch_core::{
    AccountId, AlertKind, Creation, Destination, Digest, ExpectationKey, ExpectationState,
    ExpectationStore, InMemoryStore, Observation, Region, RepositoryName, SourceImage, TagArrival,
    Tracker, TrackingPolicy,
};

/// What really happens to one image in one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    Arrives { minute: i64, tag_kept: bool },
    Fails { minute: i64 },
    Stuck,
}

#[derive(Debug, Clone)]
struct Image {
    tag: Option<String>,
    pushed_minute: i64,
    /// One truth per destination index.
    truths: Vec<Truth>,
    /// When the source image is deleted, if it is.
    deleted_minute: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Push { image: usize },
    Delete { image: usize },
    Replication { image: usize, destination: usize },
    Sweep { minute: i64 },
}

const FINAL_MINUTE: i64 = 10_000;

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
        .single()
        .expect("valid time")
}

fn minute(m: i64) -> DateTime<Utc> {
    base() + TimeDelta::minutes(m)
}

fn destinations() -> Vec<Destination> {
    [
        ("us-east-1", "111111111111"),
        ("eu-west-1", "222222222222"),
        ("ap-southeast-2", "111111111111"),
    ]
    .iter()
    .map(|(r, a)| {
        Destination::new(
            Region::parse(r).expect("region"),
            AccountId::parse(a).expect("account"),
        )
    })
    .collect()
}

fn source_image(index: usize) -> SourceImage {
    SourceImage {
        registry: Destination::new(
            Region::parse("us-west-2").expect("region"),
            AccountId::parse("111111111111").expect("account"),
        ),
        repository: RepositoryName::parse("team-a/web").expect("repository"),
        digest: Digest::parse(&format!("sha256:{:064x}", index + 1)).expect("digest"),
    }
}

fn key(images: &[Image], image: usize, destination: usize) -> ExpectationKey {
    ExpectationKey {
        image: source_image(image),
        tag: images[image].tag.clone(),
        destination: destinations()[destination].clone(),
        occurrence: minute(images[image].pushed_minute),
    }
}

fn truth_strategy() -> impl Strategy<Value = Truth> {
    prop_oneof![
        4 => (0i64..90, any::<bool>()).prop_map(|(m, kept)| Truth::Arrives { minute: m, tag_kept: kept || m % 3 != 0 }),
        1 => (0i64..90).prop_map(|m| Truth::Fails { minute: m }),
        1 => Just(Truth::Stuck),
    ]
}

fn image_strategy() -> impl Strategy<Value = Image> {
    (
        proptest::option::of("[a-z][a-z0-9.]{0,5}"),
        0i64..15,
        proptest::collection::vec(truth_strategy(), 3),
        proptest::option::weighted(0.2, 0i64..100),
    )
        .prop_map(|(tag, pushed, truths, deleted)| Image {
            tag,
            pushed_minute: pushed,
            deleted_minute: deleted.map(|d| pushed + d),
            // Outcomes happen after the push they belong to.
            truths: truths
                .into_iter()
                .map(|t| match t {
                    Truth::Arrives { minute, tag_kept } => Truth::Arrives {
                        minute: pushed + minute,
                        tag_kept,
                    },
                    Truth::Fails { minute } => Truth::Fails {
                        minute: pushed + minute,
                    },
                    Truth::Stuck => Truth::Stuck,
                })
                .collect(),
        })
}

/// A scenario: images, sweep times, and per replication event (dropped, copies).
#[derive(Debug, Clone)]
struct Scenario {
    images: Vec<Image>,
    sweeps: Vec<i64>,
    /// For each (image, destination): whether the event is lost, and how many times it is
    /// delivered otherwise (1..=3).
    delivery: Vec<(bool, usize)>,
    push_copies: Vec<usize>,
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    proptest::collection::vec(image_strategy(), 1..5).prop_flat_map(|images| {
        let n = images.len();
        (
            Just(images),
            proptest::collection::vec(0i64..150, 0..8),
            proptest::collection::vec((proptest::bool::weighted(0.25), 1usize..=3), n * 3),
            proptest::collection::vec(1usize..=3, n),
        )
            .prop_map(|(images, sweeps, delivery, push_copies)| Scenario {
                images,
                sweeps,
                delivery,
                push_copies,
            })
    })
}

fn event_minute(images: &[Image], d: Delivery) -> i64 {
    match d {
        Delivery::Push { image } => images[image].pushed_minute,
        Delivery::Delete { image } => images[image].deleted_minute.unwrap_or(FINAL_MINUTE),
        Delivery::Replication { image, destination } => match images[image].truths[destination] {
            Truth::Arrives { minute, .. } | Truth::Fails { minute } => minute,
            Truth::Stuck => FINAL_MINUTE,
        },
        Delivery::Sweep { minute } => minute,
    }
}

/// The deliveries of the clean world: every event once, in time order, sweeps in between.
fn in_order(s: &Scenario) -> Vec<Delivery> {
    let mut out: Vec<Delivery> = Vec::new();
    for (i, image) in s.images.iter().enumerate() {
        out.push(Delivery::Push { image: i });
        if image.deleted_minute.is_some() {
            out.push(Delivery::Delete { image: i });
        }
        for (d, truth) in image.truths.iter().enumerate() {
            if *truth != Truth::Stuck {
                out.push(Delivery::Replication {
                    image: i,
                    destination: d,
                });
            }
        }
    }
    out.extend(s.sweeps.iter().map(|&m| Delivery::Sweep { minute: m }));
    // Sweeps after events of the same minute, as a scheduler a little behind would run.
    out.sort_by_key(|d| {
        (
            event_minute(&s.images, *d),
            matches!(d, Delivery::Sweep { .. }),
        )
    });
    out
}

/// The messy world: replication events lost or repeated, pushes repeated.
fn messy(s: &Scenario) -> Vec<Delivery> {
    let mut out = Vec::new();
    for (i, image) in s.images.iter().enumerate() {
        for _ in 0..s.push_copies[i] {
            out.push(Delivery::Push { image: i });
            if image.deleted_minute.is_some() {
                out.push(Delivery::Delete { image: i });
            }
        }
        for (d, truth) in image.truths.iter().enumerate() {
            let (lost, copies) = s.delivery[i * 3 + d];
            if *truth != Truth::Stuck && !lost {
                for _ in 0..copies {
                    out.push(Delivery::Replication {
                        image: i,
                        destination: d,
                    });
                }
            }
        }
    }
    out.extend(s.sweeps.iter().map(|&m| Delivery::Sweep { minute: m }));
    out
}

/// What the API (`DescribeImageReplicationStatus`, then `DescribeImages` for the tag) says
/// about one image in one destination at `now`; once the source is deleted the status API
/// answers ImageNotFound.
fn confirmed(images: &[Image], image: usize, destination: usize, now: i64) -> Observation {
    let at = minute(now);
    let tagged = images[image].tag.is_some();
    let deleted = images[image].deleted_minute.is_some_and(|d| d <= now);
    if deleted {
        return Observation::SourceDeleted { at };
    }
    match images[image].truths[destination] {
        Truth::Arrives {
            minute: m,
            tag_kept,
        } if m <= now => Observation::Arrived {
            arrived_at: None,
            observed_at: at,
            tag: tag_arrival(tag_kept || !tagged),
        },
        Truth::Fails { minute: m } if m <= now => Observation::ReplicationFailed {
            at,
            failure_code: Some("REPLICATION_FAILED".into()),
        },
        _ => Observation::StillInProgress { at },
    }
}

/// The tag's fate as the pipeline reports it: these scenarios model only immutable
/// conflicts, so a tag not kept is lost.
fn tag_arrival(kept: bool) -> TagArrival {
    if kept {
        TagArrival::Present
    } else {
        TagArrival::Lost {
            held_by: Digest::parse(&format!("sha256:{}", "99".repeat(32))).expect("digest"),
        }
    }
}

type Alerts = BTreeMap<(ExpectationKey, AlertKind), usize>;

async fn run(
    s: &Scenario,
    deliveries: &[Delivery],
) -> (BTreeMap<ExpectationKey, ExpectationState>, Alerts) {
    let store = InMemoryStore::new();
    let tracker = Tracker::new(&store, TrackingPolicy::default(), minute(0));
    let mut alerts: Alerts = BTreeMap::new();
    let images = &s.images;
    let mut record = |applied: Option<replwatch_core::Applied>| {
        if let Some(applied) = applied {
            for kind in applied.transition.raised {
                *alerts
                    .entry((applied.record.key.clone(), kind))
                    .or_default() += 1;
            }
        }
    };
    let sweep = async |now: i64, record: &mut dyn FnMut(Option<replwatch_core::Applied>)| {
        for due in store
            .due(
                minute(now),
                usize::MAX,
                replwatch_core::store::SweepPart::WHOLE,
            )
            .await
            .expect("due")
            .records
        {
            let image = (0..images.len())
                .find(|&i| source_image(i) == due.key.image)
                .expect("known image");
            let destination = destinations()
                .iter()
                .position(|d| *d == due.key.destination)
                .expect("known destination");
            let observation = confirmed(images, image, destination, now);
            record(
                tracker
                    .observe(&due.key, &observation, Creation::ExistingOnly)
                    .await
                    .expect("observe"),
            );
        }
    };
    for delivery in deliveries {
        match *delivery {
            Delivery::Push { image } => {
                for destination in 0..destinations().len() {
                    let observation = Observation::Pushed {
                        at: minute(images[image].pushed_minute),
                    };
                    record(
                        tracker
                            .observe(
                                &key(images, image, destination),
                                &observation,
                                Creation::Create,
                            )
                            .await
                            .expect("observe"),
                    );
                }
            }
            Delivery::Delete { image } => {
                // DELETE creates closed records when it overtakes its push, so the push that
                // arrives later cannot reopen them.
                let at = minute(images[image].deleted_minute.expect("deleted image"));
                for destination in 0..destinations().len() {
                    record(
                        tracker
                            .observe(
                                &key(images, image, destination),
                                &Observation::SourceDeleted { at },
                                Creation::Create,
                            )
                            .await
                            .expect("observe"),
                    );
                }
            }
            Delivery::Replication { image, destination } => {
                let observation = match images[image].truths[destination] {
                    Truth::Arrives {
                        minute: m,
                        tag_kept,
                    } => Observation::Arrived {
                        arrived_at: Some(minute(m)),
                        observed_at: minute(m),
                        tag: tag_arrival(tag_kept || images[image].tag.is_none()),
                    },
                    Truth::Fails { minute: m } => Observation::ReplicationFailed {
                        at: minute(m),
                        failure_code: Some("REPLICATION_FAILED".into()),
                    },
                    Truth::Stuck => unreachable!("stuck images send no event"),
                };
                record(
                    tracker
                        .observe(
                            &key(images, image, destination),
                            &observation,
                            Creation::Create,
                        )
                        .await
                        .expect("observe"),
                );
            }
            Delivery::Sweep { minute: m } => sweep(m, &mut record).await,
        }
    }
    // The world settles; the sweep that runs afterwards must find the truth.
    sweep(FINAL_MINUTE, &mut record).await;
    let verdicts = store.all().into_iter().map(|r| (r.key, r.state)).collect();
    (verdicts, alerts)
}

fn expected_verdict(image: &Image, truth: Truth) -> ExpectationState {
    if image.deleted_minute.is_some() {
        ExpectationState::Deleted
    } else {
        outcome_verdict(image, truth)
    }
}

fn outcome_verdict(image: &Image, truth: Truth) -> ExpectationState {
    match truth {
        Truth::Arrives { tag_kept, .. } if tag_kept || image.tag.is_none() => {
            ExpectationState::Replicated
        }
        Truth::Arrives { .. } => ExpectationState::TagLost,
        Truth::Fails { .. } => ExpectationState::Failed,
        Truth::Stuck => ExpectationState::Overdue,
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_reaches_the_in_order_verdicts_and_alerts_each_problem_once(
        (scenario, order) in scenario_strategy().prop_flat_map(|s| {
            let deliveries = messy(&s);
            (Just(s), Just(deliveries).prop_shuffle())
        })
    ) {
        let (clean, clean_alerts) = block_on(run(&scenario, &in_order(&scenario)));
        let (shuffled, shuffled_alerts) = block_on(run(&scenario, &order));

        prop_assert_eq!(&clean, &shuffled);
        let sla = TrackingPolicy::default().sla.num_minutes();
        for (i, image) in scenario.images.iter().enumerate() {
            for (d, truth) in image.truths.iter().enumerate() {
                let k = key(&scenario.images, i, d);
                prop_assert_eq!(clean.get(&k).copied(), Some(expected_verdict(image, *truth)), "{}", k);
                for alerts in [&clean_alerts, &shuffled_alerts] {
                    let count = |kind| alerts.get(&(k.clone(), kind)).copied().unwrap_or(0);
                    if image.deleted_minute.is_some() {
                        // Whether a problem is seen before the delete depends on timing; it
                        // is still never alerted twice, and never when nothing went wrong.
                        for kind in [AlertKind::Failed, AlertKind::TagLost, AlertKind::Overdue] {
                            prop_assert!(count(kind) <= 1, "{:?} alerted twice for {}", kind, k);
                        }
                        if outcome_verdict(image, *truth) == ExpectationState::Replicated {
                            prop_assert_eq!(count(AlertKind::Failed) + count(AlertKind::TagLost), 0);
                        }
                        continue;
                    }
                    // Exactly one alert per real problem, none for healthy images.
                    prop_assert_eq!(count(AlertKind::Failed), usize::from(matches!(truth, Truth::Fails { .. })));
                    // A lost tag is its tag's incident's to alert, once per tag and destination
                    // (the pipeline's tests): never the push's.
                    prop_assert_eq!(count(AlertKind::TagLost), 0);
                    let could_be_overdue = match *truth {
                        Truth::Arrives { minute, .. } | Truth::Fails { minute } => minute > image.pushed_minute + sla,
                        Truth::Stuck => true,
                    };
                    prop_assert!(count(AlertKind::Overdue) <= usize::from(could_be_overdue), "false overdue alert for {}", k);
                    if *truth == Truth::Stuck {
                        prop_assert_eq!(count(AlertKind::Overdue), 1);
                    }
                }
            }
        }
    }

    #[test]
    fn replaying_every_delivery_a_second_time_changes_nothing(scenario in scenario_strategy()) {
        let once = in_order(&scenario);
        let twice: Vec<Delivery> = once.iter().chain(once.iter()).copied().collect();
        let (a, alerts_a) = block_on(run(&scenario, &once));
        let (b, alerts_b) = block_on(run(&scenario, &twice));
        prop_assert_eq!(a, b);
        prop_assert_eq!(alerts_a, alerts_b);
    }
}
