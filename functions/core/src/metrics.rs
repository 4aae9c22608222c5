//! What replwatch measures, and the CloudWatch Embedded Metric Format (EMF) lines that carry
//! it.
//!
//! Why two ways out: per-event metrics (a replication's latency, one image replicated, failed,
//! overdue or arrived without its tag) happen on every event, so they go out as EMF lines
//! written to the function's log. CloudWatch Logs extracts them asynchronously: no API call,
//! no latency and no throttling on the event path. Gauges (how many images are pending or
//! overdue right now) are a level, not an event, published by the sweep once per tick through
//! the [`GaugePublisher`] port (`PutMetricData` in `replwatch-aws`).
//!
//! Every metric has exactly two dimensions, the destination Region and account, and never the
//! digest, repository or tag: CloudWatch bills and indexes every distinct dimension
//! combination as its own metric, so the dimensions must stay bounded by the replication
//! configuration (at most 25 destinations), not by what is pushed.
//!
//! The EMF rules followed here (CloudWatch "Specification: Embedded metric format"): the line
//! is one JSON object; its `_aws` member holds `Timestamp` (milliseconds since the epoch) and
//! `CloudWatchMetrics`, an array of directives `{Namespace, Dimensions, Metrics}`; every
//! dimension key named in `Dimensions` and every metric `Name` named in `Metrics` must be a
//! member of the root object (dimension values strings, metric values a number or an array
//! of numbers); a directive names at most 100 metrics, a value array holds at most 100 values,
//! a dimension set holds at most 30 keys. Non-finite values have no JSON form and are dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use crate::model::Destination;
use crate::store::OpenCount;
use crate::tracking::{ExpectationState, ReplicationExpectation, Transition};

/// The dimension holding the destination Region.
pub const DIMENSION_REGION: &str = "DestinationRegion";
/// The dimension holding the destination account (registry id).
pub const DIMENSION_ACCOUNT: &str = "DestinationAccount";
/// The dimension of [`DEAD_LETTERED_EVENTS`]: the function that parked the event.
pub const DIMENSION_FUNCTION: &str = "Function";
/// The metric counting events parked in the dead-letter queue.
pub const DEAD_LETTERED_EVENTS: &str = "DeadLetteredEvents";
/// Deliveries of an alert to one sink that failed (it stays pending and is retried).
pub const ALERT_DELIVERY_FAILURES: &str = "AlertDeliveryFailures";
/// Alerts stored but not yet delivered to every sink, counted by each sweep.
pub const UNDELIVERED_ALERTS: &str = "UndeliveredAlerts";
/// Pending alert records that could not be read and were set aside (never delivered until
/// someone repairs them), counted by each sweep.
pub const SET_ASIDE_ALERTS: &str = "SetAsideAlerts";
/// 1 per finished sweep of one part, counted at its tick's time: per minute, the parts of
/// that tick that finished. Fewer than the parts is what the heartbeat alarm watches.
pub const SWEEP_HEARTBEAT: &str = "SweepHeartbeat";
/// Parts of a tick the scheduled sweep could not queue, after its retries: they are not
/// checked at that tick.
pub const SWEEP_PARTS_NOT_DISPATCHED: &str = "SweepPartsNotDispatched";
/// 1 per invocation that needed the Slack webhook and could not read it (the scheduled sweep
/// checks at every tick): Slack alerts stay pending meanwhile.
pub const SLACK_WEBHOOK_UNAVAILABLE: &str = "SlackWebhookUnavailable";
/// Events about a registry other than the watched one, dropped unread: a rule or forwarder
/// that someone edited sends them (the stack's rules pin the watched registry).
pub const EVENTS_NOT_WATCHED: &str = "EventsNotWatched";
/// Pushes found in the source without a tracked push (their PUSH event was lost), per
/// lost-push check ([`crate::lost_pushes`]).
pub const UNTRACKED_PUSHES: &str = "UntrackedPushes";
/// EMF: a metric's value array holds at most this many values.
pub const MAX_VALUES_PER_MEMBER: usize = 100;
/// EMF: one directive names at most this many metrics.
pub const MAX_METRICS_PER_DIRECTIVE: usize = 100;

/// A CloudWatch unit, spelled as CloudWatch spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Seconds,
    Count,
    Bytes,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Seconds => "Seconds",
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
        }
    }
}

/// A per-event metric. The declaration order is the order in an EMF line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetricName {
    /// Push-to-arrival time of one image in one destination, recorded once per item.
    ReplicationLatency,
    /// An image arrived with its tag.
    Replicated,
    /// ECR reported a replication failed.
    Failed,
    /// An image was confirmed still missing after its deadline.
    Overdue,
    /// Past its deadline, ECR listed no replication of a push to a destination the rules
    /// still select.
    NotStarted,
    /// A push expected a destination the rules ECR applied did not select (replwatch's copy
    /// of the rules was older): closed without an alert.
    NotSelectedByRules,
    /// A tag incident opened in an immutable destination that kept the tag on another image.
    TagLost,
    /// A tag incident opened in a mutable destination: the tag names another image there
    /// (an older replication finished last, or it was changed there).
    TagDiverged,
    /// An image arrived after its tag had moved on (a later push, out-of-order completions):
    /// not a problem, counted so the rate of re-pushed tags is visible.
    TagSuperseded,
    /// A destination of a push that stayed unconfirmed past the grace: a registry replwatch
    /// needs to read to confirm it (the destination's, or the source's) refuses or fails its
    /// reads. Counted once per destination of a push; the verdict waits.
    Unconfirmed,
    /// Images a backfill run planned to bring to a destination.
    BackfillPlanned,
    /// Images a backfill brought (or found already there).
    BackfillCopied,
    /// Bytes of blobs a backfill uploaded.
    BackfillBytes,
    /// Images a backfill could not bring.
    BackfillFailed,
}

impl MetricName {
    pub const ALL: [MetricName; 14] = [
        MetricName::ReplicationLatency,
        MetricName::Replicated,
        MetricName::Failed,
        MetricName::Overdue,
        MetricName::NotStarted,
        MetricName::NotSelectedByRules,
        MetricName::TagLost,
        MetricName::TagDiverged,
        MetricName::TagSuperseded,
        MetricName::Unconfirmed,
        MetricName::BackfillPlanned,
        MetricName::BackfillCopied,
        MetricName::BackfillBytes,
        MetricName::BackfillFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MetricName::ReplicationLatency => "ReplicationLatency",
            MetricName::Replicated => "Replicated",
            MetricName::Failed => "Failed",
            MetricName::Overdue => "Overdue",
            MetricName::NotStarted => "NotStarted",
            MetricName::NotSelectedByRules => "NotSelectedByRules",
            MetricName::TagLost => "TagLost",
            MetricName::TagDiverged => "TagDiverged",
            MetricName::TagSuperseded => "TagSuperseded",
            MetricName::Unconfirmed => "Unconfirmed",
            MetricName::BackfillPlanned => "BackfillPlanned",
            MetricName::BackfillCopied => "BackfillCopied",
            MetricName::BackfillBytes => "BackfillBytes",
            MetricName::BackfillFailed => "BackfillFailed",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            MetricName::ReplicationLatency => Unit::Seconds,
            MetricName::BackfillBytes => Unit::Bytes,
            _ => Unit::Count,
        }
    }

    /// The count metric of entering `state`, if entering it is counted. A push closing
    /// TAG_LOST counts nothing: the tag's incident counts once, however many pushes meet it.
    fn counting(state: ExpectationState) -> Option<Self> {
        match state {
            ExpectationState::Replicated => Some(MetricName::Replicated),
            ExpectationState::Failed => Some(MetricName::Failed),
            ExpectationState::Overdue => Some(MetricName::Overdue),
            ExpectationState::NotStarted => Some(MetricName::NotStarted),
            ExpectationState::NotSelected => Some(MetricName::NotSelectedByRules),
            ExpectationState::Superseded => Some(MetricName::TagSuperseded),
            ExpectationState::Pending | ExpectationState::TagLost | ExpectationState::Deleted => {
                None
            }
        }
    }
}

impl fmt::Display for MetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value of one per-event metric in one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub name: MetricName,
    pub value: f64,
    pub destination: Destination,
}

/// The metrics one transition of `record` produces.
///
/// - `ReplicationLatency`, in fractional seconds, when the transition made the latency known
///   (`new_latency`): once per item, whichever event came last, and whatever the state (a
///   push arriving after a delete still tells how long the replication took).
/// - A count of 1 of the state's metric ([`MetricName::counting`]) when the transition
///   entered that state. Staying in a state (a duplicate event) counts nothing, nor do
///   `Pending`, `TagLost` (its incident counts) and `Deleted`.
pub fn points_for(record: &ReplicationExpectation, transition: &Transition) -> Vec<MetricPoint> {
    let destination = &record.key.destination;
    let mut points = Vec::new();
    if let Some(latency) = transition.new_latency {
        points.push(latency_point(destination, latency));
    }
    if transition.unconfirmed_past_grace {
        points.push(unconfirmed_point(destination));
    }
    if transition.from != transition.to
        && let Some(name) = MetricName::counting(transition.to)
    {
        points.push(MetricPoint {
            name,
            value: 1.0,
            destination: destination.clone(),
        });
    }
    points
}

/// The count a tag incident's opening alert stands for (`TagLost` or `TagDiverged`, once per
/// incident); nothing for any other alert.
pub fn incident_point(alert: &crate::alerts::Alert) -> Option<MetricPoint> {
    alert.incident.as_ref()?;
    let name = match alert.kind {
        crate::tracking::AlertKind::TagLost => MetricName::TagLost,
        crate::tracking::AlertKind::TagDiverged => MetricName::TagDiverged,
        _ => return None,
    };
    Some(MetricPoint {
        name,
        value: 1.0,
        destination: alert.key.destination.clone(),
    })
}

/// One `Unconfirmed` count for `destination`.
pub fn unconfirmed_point(destination: &Destination) -> MetricPoint {
    MetricPoint {
        name: MetricName::Unconfirmed,
        value: 1.0,
        destination: destination.clone(),
    }
}

/// One `ReplicationLatency` value, in fractional seconds.
pub fn latency_point(destination: &Destination, latency: TimeDelta) -> MetricPoint {
    MetricPoint {
        name: MetricName::ReplicationLatency,
        value: seconds(latency),
        destination: destination.clone(),
    }
}

fn seconds(d: TimeDelta) -> f64 {
    d.num_seconds() as f64 + f64::from(d.subsec_nanos()) / 1e9
}

impl MetricName {
    /// Whether the sweep may count it once a round instead of as each check is stored:
    /// `Replicated`, the happy path's one count per destination of every push (25 metric
    /// lines a push at 25 destinations, most of the sweep's log ingestion). A sweep cut off
    /// mid-round loses at most that round's `Replicated` counts (their verdicts are stored);
    /// every problem is counted as soon as it is stored.
    pub fn counted_per_round(self) -> bool {
        self == MetricName::Replicated
    }
}

/// The EMF lines for `points`, stamped `at`: one line per destination (more when a metric has
/// over [`MAX_VALUES_PER_MEMBER`] values there), each metric's values of a line in one array.
/// Write each line as its own log event (one `println!` each in a Lambda function).
pub fn emf_lines(namespace: &str, at: DateTime<Utc>, points: &[MetricPoint]) -> Vec<String> {
    let mut grouped: BTreeMap<&Destination, BTreeMap<MetricName, Vec<f64>>> = BTreeMap::new();
    for point in points.iter().filter(|p| p.value.is_finite()) {
        grouped
            .entry(&point.destination)
            .or_default()
            .entry(point.name)
            .or_default()
            .push(point.value);
    }

    let mut lines = Vec::new();
    for (destination, metrics) in grouped {
        let rounds = metrics
            .values()
            .map(|values| values.len().div_ceil(MAX_VALUES_PER_MEMBER))
            .max()
            .unwrap_or(0);
        for round in 0..rounds {
            let slices: Vec<(MetricName, &[f64])> = metrics
                .iter()
                .filter_map(|(name, values)| {
                    values
                        .chunks(MAX_VALUES_PER_MEMBER)
                        .nth(round)
                        .map(|chunk| (*name, chunk))
                })
                .collect();
            for group in slices.chunks(MAX_METRICS_PER_DIRECTIVE) {
                let mut root = Map::new();
                root.insert(
                    DIMENSION_REGION.to_owned(),
                    Value::from(destination.region.as_str()),
                );
                root.insert(
                    DIMENSION_ACCOUNT.to_owned(),
                    Value::from(destination.registry_id.as_str()),
                );
                let definitions: Vec<Value> = group
                    .iter()
                    .map(|(name, values)| {
                        root.insert(name.as_str().to_owned(), member_value(values));
                        json!({"Name": name.as_str(), "Unit": name.unit().as_str()})
                    })
                    .collect();
                root.insert(
                    "_aws".to_owned(),
                    metadata(
                        namespace,
                        at,
                        &[DIMENSION_REGION, DIMENSION_ACCOUNT],
                        definitions,
                    ),
                );
                lines.push(Value::Object(root).to_string());
            }
        }
    }
    lines
}

/// The EMF line counting `count` events that `function_name` parked in its dead-letter queue.
pub fn dead_lettered_line(
    namespace: &str,
    at: DateTime<Utc>,
    function_name: &str,
    count: u32,
) -> String {
    function_counts_line(
        namespace,
        at,
        function_name,
        &[(DEAD_LETTERED_EVENTS, u64::from(count))],
    )
}

/// One EMF line of counts about replwatch itself (`Unit` Count), with the [`DIMENSION_FUNCTION`]
/// dimension: dead-lettered events, alert deliveries that failed, undelivered alerts, the
/// sweep's heartbeat.
pub fn function_counts_line(
    namespace: &str,
    at: DateTime<Utc>,
    function_name: &str,
    counts: &[(&str, u64)],
) -> String {
    let definitions = counts
        .iter()
        .map(|(name, _)| json!({"Name": name, "Unit": Unit::Count.as_str()}))
        .collect();
    let mut root = Map::new();
    root.insert(DIMENSION_FUNCTION.to_owned(), Value::from(function_name));
    for (name, value) in counts {
        root.insert((*name).to_owned(), Value::from(*value));
    }
    root.insert(
        "_aws".to_owned(),
        metadata(namespace, at, &[DIMENSION_FUNCTION], definitions),
    );
    Value::Object(root).to_string()
}

fn member_value(values: &[f64]) -> Value {
    match values {
        [single] => Value::from(*single),
        several => Value::from(several.to_vec()),
    }
}

fn metadata(
    namespace: &str,
    at: DateTime<Utc>,
    dimensions: &[&str],
    definitions: Vec<Value>,
) -> Value {
    json!({
        "Timestamp": at.timestamp_millis(),
        "CloudWatchMetrics": [{
            "Namespace": namespace,
            "Dimensions": [dimensions],
            "Metrics": definitions,
        }],
    })
}

/// A level the sweep publishes per destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GaugeName {
    /// Images pushed and not yet arrived, deadline not passed.
    PendingImages,
    /// Images confirmed still missing after their deadline.
    OverdueImages,
}

impl GaugeName {
    pub fn as_str(self) -> &'static str {
        match self {
            GaugeName::PendingImages => "PendingImages",
            GaugeName::OverdueImages => "OverdueImages",
        }
    }

    pub fn unit(self) -> Unit {
        Unit::Count
    }
}

impl fmt::Display for GaugeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One gauge value of one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    pub name: GaugeName,
    pub destination: Destination,
    pub value: f64,
}

/// The two gauges of every destination in `counts`. A destination with nothing open is
/// absent from `counts` and so publishes nothing: dashboards and alarms treat missing data as
/// zero.
pub fn gauges_from_open_counts(counts: &[OpenCount]) -> Vec<Gauge> {
    counts
        .iter()
        .flat_map(|c| {
            [
                (GaugeName::PendingImages, c.pending),
                (GaugeName::OverdueImages, c.overdue),
            ]
            .map(|(name, value)| Gauge {
                name,
                destination: c.destination.clone(),
                value: value as f64,
            })
        })
        .collect()
}

/// Why metrics were not published.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A value CloudWatch cannot store (NaN or infinite).
    #[error("{name} for {destination} is not a finite number: {value}")]
    NotFinite {
        name: GaugeName,
        destination: Destination,
        value: f64,
    },
    /// The backend failed (network, throttling after retries, permissions).
    #[error("metrics {operation} failed: {message}")]
    Backend {
        operation: &'static str,
        message: String,
    },
}

/// Checks every gauge has a finite value, before anything is sent.
pub fn check_finite(gauges: &[Gauge]) -> Result<(), MetricsError> {
    match gauges.iter().find(|g| !g.value.is_finite()) {
        Some(g) => Err(MetricsError::NotFinite {
            name: g.name,
            destination: g.destination.clone(),
            value: g.value,
        }),
        None => Ok(()),
    }
}

/// The port through which gauges are published, to a namespace the implementation holds.
pub trait GaugePublisher: Send + Sync {
    /// Publishes every gauge stamped `at`; all or an error (a partial publication is only
    /// possible across the backend's batches and is repaired by the next sweep).
    fn publish(
        &self,
        at: DateTime<Utc>,
        gauges: &[Gauge],
    ) -> impl Future<Output = Result<(), MetricsError>> + Send;
}

macro_rules! forward_publisher {
    ($($pointer:ty),*) => {$(
        impl<T: GaugePublisher + ?Sized> GaugePublisher for $pointer {
            fn publish(
                &self,
                at: DateTime<Utc>,
                gauges: &[Gauge],
            ) -> impl Future<Output = Result<(), MetricsError>> + Send {
                (**self).publish(at, gauges)
            }
        }
    )*};
}

// A publisher shared by reference or behind an `Arc` is still a publisher.
forward_publisher!(&T, std::sync::Arc<T>);

/// A [`GaugePublisher`] that keeps what it was given, for unit tests of the core.
#[derive(Debug, Default)]
pub struct InMemoryGauges {
    published: Mutex<Vec<(DateTime<Utc>, Vec<Gauge>)>>,
}

impl InMemoryGauges {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every publication so far, in order.
    pub fn published(&self) -> Vec<(DateTime<Utc>, Vec<Gauge>)> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(DateTime<Utc>, Vec<Gauge>)>> {
        // A panic in another test thread must not hide this one's result.
        self.published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl GaugePublisher for InMemoryGauges {
    fn publish(
        &self,
        at: DateTime<Utc>,
        gauges: &[Gauge],
    ) -> impl Future<Output = Result<(), MetricsError>> + Send {
        let result = check_finite(gauges).map(|()| self.lock().push((at, gauges.to_vec())));
        std::future::ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, Digest, ExpectationKey, Region, RepositoryName, SourceImage};
    use crate::tracking::{Observation, TrackingPolicy};
    use chrono::TimeZone;

    const NS: &str = "replwatch-test";

    fn t(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
            .single()
            .expect("valid time")
            + TimeDelta::minutes(minutes)
    }

    fn destination(region: &str, account: &str) -> Destination {
        Destination::new(
            Region::parse(region).expect("region"),
            AccountId::parse(account).expect("account"),
        )
    }

    fn record() -> ReplicationExpectation {
        ReplicationExpectation::new(ExpectationKey {
            image: SourceImage {
                registry: destination("us-west-2", "111111111111"),
                repository: RepositoryName::parse("team-a/web").expect("repo"),
                digest: Digest::parse(&format!("sha256:{}", "ab".repeat(32))).expect("digest"),
            },
            tag: Some("v1".into()),
            destination: destination("eu-west-1", "222222222222"),
            occurrence: t(0),
        })
    }

    fn arrived_at(at: DateTime<Utc>, tag_present: bool) -> Observation {
        Observation::Arrived {
            arrived_at: Some(at),
            observed_at: at,
            tag: if tag_present {
                crate::tracking::TagArrival::Present
            } else {
                crate::tracking::TagArrival::Lost {
                    held_by: Digest::parse(&format!("sha256:{}", "cd".repeat(32))).expect("digest"),
                }
            },
        }
    }

    /// Applies `observations` and returns the points of the last one.
    fn points_after(observations: &[Observation]) -> Vec<MetricPoint> {
        let policy = TrackingPolicy::default();
        let mut r = record();
        let mut last = Vec::new();
        for o in observations {
            let tr = r.apply(o, &policy);
            last = points_for(&r, &tr);
        }
        last
    }

    fn names_and_values(points: &[MetricPoint]) -> Vec<(MetricName, f64)> {
        points.iter().map(|p| (p.name, p.value)).collect()
    }

    #[test]
    fn a_push_alone_measures_nothing() {
        assert!(points_after(&[Observation::Pushed { at: t(0) }]).is_empty());
    }

    #[test]
    fn an_arrival_counts_one_replicated_and_its_fractional_latency() {
        let points = points_after(&[
            Observation::Pushed { at: t(0) },
            arrived_at(t(3) + TimeDelta::milliseconds(250), true),
        ]);
        assert_eq!(
            names_and_values(&points),
            vec![
                (MetricName::ReplicationLatency, 180.25),
                (MetricName::Replicated, 1.0)
            ]
        );
        assert!(
            points
                .iter()
                .all(|p| p.destination == destination("eu-west-1", "222222222222")),
            "the record's destination, never its source"
        );
    }

    #[test]
    fn a_failure_counts_one_failed_without_latency() {
        let points = points_after(&[
            Observation::Pushed { at: t(0) },
            Observation::ReplicationFailed {
                at: t(2),
                failure_code: None,
            },
        ]);
        assert_eq!(names_and_values(&points), vec![(MetricName::Failed, 1.0)]);
    }

    #[test]
    fn overdue_counts_once_and_rechecks_count_nothing() {
        let overdue = [
            Observation::Pushed { at: t(0) },
            Observation::StillInProgress { at: t(31) },
        ];
        assert_eq!(
            names_and_values(&points_after(&overdue)),
            vec![(MetricName::Overdue, 1.0)]
        );
        let mut again = overdue.to_vec();
        again.push(Observation::StillInProgress { at: t(46) });
        assert!(points_after(&again).is_empty());
    }

    #[test]
    fn a_late_arrival_counts_replicated_with_its_latency() {
        let points = points_after(&[
            Observation::Pushed { at: t(0) },
            Observation::StillInProgress { at: t(31) },
            arrived_at(t(40), true),
        ]);
        assert_eq!(
            names_and_values(&points),
            vec![
                (MetricName::ReplicationLatency, 2400.0),
                (MetricName::Replicated, 1.0)
            ]
        );
    }

    #[test]
    fn an_arrival_without_its_tag_counts_only_its_latency_and_the_incident_counts_once() {
        let points = points_after(&[Observation::Pushed { at: t(0) }, arrived_at(t(1), false)]);
        assert_eq!(
            names_and_values(&points),
            vec![(MetricName::ReplicationLatency, 60.0)],
            "the push does not count the lost tag"
        );
        use crate::alerts::samples::sample_alert;
        use crate::tracking::AlertKind;
        let counted: Vec<Option<MetricName>> = [
            AlertKind::TagLost,
            AlertKind::TagDiverged,
            AlertKind::Resolved,
            AlertKind::Overdue,
        ]
        .into_iter()
        .map(|kind| incident_point(&sample_alert(kind, "eu-west-1", 1)).map(|p| p.name))
        .collect();
        assert_eq!(
            counted,
            vec![
                Some(MetricName::TagLost),
                Some(MetricName::TagDiverged),
                None,
                None
            ],
            "an incident's opening counts, its resolution does not"
        );
    }

    #[test]
    fn not_started_counts_and_not_selected_is_counted_apart() {
        let started = points_after(&[
            Observation::Pushed { at: t(0) },
            Observation::NotStarted { at: t(31) },
        ]);
        assert_eq!(
            names_and_values(&started),
            vec![(MetricName::NotStarted, 1.0)]
        );
        let excluded = points_after(&[
            Observation::Pushed { at: t(0) },
            Observation::NotSelected { at: t(31) },
        ]);
        assert_eq!(
            names_and_values(&excluded),
            vec![(MetricName::NotSelectedByRules, 1.0)]
        );
    }

    #[test]
    fn a_delete_and_duplicates_count_nothing() {
        assert!(
            points_after(&[
                Observation::Pushed { at: t(0) },
                Observation::SourceDeleted { at: t(5) },
            ])
            .is_empty()
        );
        assert!(
            points_after(&[
                Observation::Pushed { at: t(0) },
                arrived_at(t(2), true),
                arrived_at(t(2), true),
            ])
            .is_empty(),
            "a duplicate replication event is not a second replication"
        );
    }

    #[test]
    fn a_push_after_its_replication_adds_only_the_latency() {
        let points = points_after(&[arrived_at(t(4), true), Observation::Pushed { at: t(1) }]);
        assert_eq!(
            names_and_values(&points),
            vec![(MetricName::ReplicationLatency, 180.0)],
            "the replication was counted when it arrived"
        );
    }

    #[test]
    fn units_and_names_are_cloudwatch_spellings() {
        let spelled: Vec<(&str, &str)> = MetricName::ALL
            .iter()
            .map(|n| (n.as_str(), n.unit().as_str()))
            .collect();
        assert_eq!(
            spelled,
            [
                ("ReplicationLatency", "Seconds"),
                ("Replicated", "Count"),
                ("Failed", "Count"),
                ("Overdue", "Count"),
                ("NotStarted", "Count"),
                ("NotSelectedByRules", "Count"),
                ("TagLost", "Count"),
                ("TagDiverged", "Count"),
                ("TagSuperseded", "Count"),
                ("Unconfirmed", "Count"),
                ("BackfillPlanned", "Count"),
                ("BackfillCopied", "Count"),
                ("BackfillBytes", "Bytes"),
                ("BackfillFailed", "Count"),
            ]
        );
        assert_eq!(GaugeName::OverdueImages.as_str(), "OverdueImages");
    }

    fn point(name: MetricName, value: f64, region: &str, account: &str) -> MetricPoint {
        MetricPoint {
            name,
            value,
            destination: destination(region, account),
        }
    }

    /// Parses one EMF line and checks it against the specification; returns the root object.
    fn check_emf(line: &str, at: DateTime<Utc>) -> Map<String, Value> {
        assert!(!line.contains('\n'), "one line per log event: {line}");
        let root = match serde_json::from_str::<Value>(line).expect("EMF line is JSON") {
            Value::Object(root) => root,
            other => panic!("EMF root must be an object, got {other}"),
        };
        let aws = root
            .get("_aws")
            .and_then(Value::as_object)
            .expect("_aws object");
        assert_eq!(
            aws.get("Timestamp").and_then(Value::as_i64),
            Some(at.timestamp_millis()),
            "Timestamp in epoch milliseconds, as an integer"
        );
        let directives = aws
            .get("CloudWatchMetrics")
            .and_then(Value::as_array)
            .expect("CloudWatchMetrics array");
        assert!(!directives.is_empty());
        let mut referenced = vec!["_aws".to_owned()];
        for directive in directives {
            assert_eq!(directive.get("Namespace").and_then(Value::as_str), Some(NS));
            let sets = directive
                .get("Dimensions")
                .and_then(Value::as_array)
                .expect("Dimensions array");
            for set in sets {
                let keys = set.as_array().expect("a dimension set is an array");
                assert!(keys.len() <= 30, "at most 30 dimension keys");
                for key in keys {
                    let key = key.as_str().expect("dimension keys are strings");
                    let value = root.get(key).and_then(Value::as_str);
                    assert!(
                        value.is_some_and(|v| !v.is_empty()),
                        "dimension {key} must be a string member"
                    );
                    referenced.push(key.to_owned());
                }
            }
            let metrics = directive
                .get("Metrics")
                .and_then(Value::as_array)
                .expect("Metrics array");
            assert!(
                !metrics.is_empty() && metrics.len() <= 100,
                "at most 100 metrics"
            );
            for definition in metrics {
                let name = definition
                    .get("Name")
                    .and_then(Value::as_str)
                    .expect("metric Name");
                let unit = definition.get("Unit").and_then(Value::as_str);
                assert!(
                    matches!(unit, Some("Seconds" | "Count")),
                    "{name}: unit {unit:?}"
                );
                match root.get(name) {
                    Some(Value::Number(_)) => {}
                    Some(Value::Array(values)) => {
                        assert!(
                            (1..=100).contains(&values.len()),
                            "{name}: {} values",
                            values.len()
                        );
                        assert!(values.iter().all(Value::is_number), "{name}: {values:?}");
                    }
                    other => panic!("{name} must be a number or array member, got {other:?}"),
                }
                referenced.push(name.to_owned());
            }
        }
        let mut members: Vec<&String> = root.keys().collect();
        members.sort();
        referenced.sort();
        referenced.dedup();
        assert_eq!(
            members,
            referenced.iter().collect::<Vec<_>>(),
            "no member beyond what the directives reference (no digest, no repository)"
        );
        root
    }

    fn values_of(root: &Map<String, Value>, name: &str) -> Vec<f64> {
        match root.get(name) {
            Some(Value::Array(values)) => values.iter().filter_map(Value::as_f64).collect(),
            Some(v) => v.as_f64().into_iter().collect(),
            None => Vec::new(),
        }
    }

    #[test]
    fn one_line_per_destination_with_its_dimensions_and_values() {
        let at = t(0) + TimeDelta::milliseconds(123);
        let points = vec![
            point(
                MetricName::ReplicationLatency,
                12.5,
                "eu-west-1",
                "222222222222",
            ),
            point(MetricName::Replicated, 1.0, "eu-west-1", "222222222222"),
            point(MetricName::Failed, 1.0, "us-east-1", "222222222222"),
            point(
                MetricName::ReplicationLatency,
                30.0,
                "eu-west-1",
                "222222222222",
            ),
            point(MetricName::Replicated, 1.0, "eu-west-1", "333333333333"),
        ];
        let lines = emf_lines(NS, at, &points);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        let roots: Vec<_> = lines.iter().map(|l| check_emf(l, at)).collect();
        let find = |region: &str, account: &str| {
            roots
                .iter()
                .find(|r| {
                    r.get(DIMENSION_REGION).and_then(Value::as_str) == Some(region)
                        && r.get(DIMENSION_ACCOUNT).and_then(Value::as_str) == Some(account)
                })
                .unwrap_or_else(|| panic!("no line for {region}/{account}"))
        };
        let eu = find("eu-west-1", "222222222222");
        assert_eq!(
            eu.get("ReplicationLatency"),
            Some(&json!([12.5, 30.0])),
            "several values of one metric in one array"
        );
        assert_eq!(values_of(eu, "Replicated"), vec![1.0]);
        assert!(eu.get("Failed").is_none());
        assert_eq!(
            values_of(find("us-east-1", "222222222222"), "Failed"),
            [1.0]
        );
        assert_eq!(
            values_of(find("eu-west-1", "333333333333"), "Replicated"),
            [1.0]
        );
    }

    #[test]
    fn the_directive_names_both_dimensions_and_each_metric_with_its_unit() {
        let at = t(0);
        let lines = emf_lines(
            NS,
            at,
            &[
                point(
                    MetricName::ReplicationLatency,
                    1.0,
                    "eu-west-1",
                    "222222222222",
                ),
                point(MetricName::TagLost, 1.0, "eu-west-1", "222222222222"),
            ],
        );
        let [line] = lines.as_slice() else {
            panic!("one line expected: {lines:?}")
        };
        let root = check_emf(line, at);
        assert_eq!(
            root["_aws"]["CloudWatchMetrics"],
            json!([{
                "Namespace": NS,
                "Dimensions": [["DestinationRegion", "DestinationAccount"]],
                "Metrics": [
                    {"Name": "ReplicationLatency", "Unit": "Seconds"},
                    {"Name": "TagLost", "Unit": "Count"},
                ],
            }])
        );
    }

    #[test]
    fn more_than_100_values_split_into_further_lines_and_none_are_lost() {
        let at = t(0);
        let mut points: Vec<MetricPoint> = (0..250)
            .map(|_| point(MetricName::Replicated, 1.0, "eu-west-1", "222222222222"))
            .collect();
        points.extend((0..101).map(|i| {
            point(
                MetricName::ReplicationLatency,
                f64::from(i),
                "eu-west-1",
                "222222222222",
            )
        }));
        points.push(point(MetricName::Overdue, 1.0, "eu-west-1", "222222222222"));
        let lines = emf_lines(NS, at, &points);
        assert_eq!(lines.len(), 3, "ceil(250 / 100) lines");
        let roots: Vec<_> = lines.iter().map(|l| check_emf(l, at)).collect();
        let replicated: Vec<usize> = roots
            .iter()
            .map(|r| values_of(r, "Replicated").len())
            .collect();
        assert_eq!(replicated, [100, 100, 50]);
        let latencies: Vec<f64> = roots
            .iter()
            .flat_map(|r| values_of(r, "ReplicationLatency"))
            .collect();
        assert_eq!(latencies, (0..101).map(f64::from).collect::<Vec<_>>());
        let overdue: usize = roots.iter().map(|r| values_of(r, "Overdue").len()).sum();
        assert_eq!(overdue, 1);
    }

    #[test]
    fn nothing_to_say_writes_no_line_and_non_finite_values_are_dropped() {
        assert!(emf_lines(NS, t(0), &[]).is_empty());
        let lines = emf_lines(
            NS,
            t(0),
            &[
                point(
                    MetricName::ReplicationLatency,
                    f64::NAN,
                    "eu-west-1",
                    "222222222222",
                ),
                point(
                    MetricName::ReplicationLatency,
                    f64::INFINITY,
                    "eu-west-1",
                    "222222222222",
                ),
            ],
        );
        assert!(lines.is_empty(), "{lines:?}");
    }

    #[test]
    fn the_dead_lettered_line_has_only_the_function_dimension() {
        let at = t(7);
        let line = dead_lettered_line(NS, at, "replwatch-track-push", 3);
        let root = check_emf(&line, at);
        assert_eq!(
            root["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function"]])
        );
        assert_eq!(root["Function"], json!("replwatch-track-push"));
        assert_eq!(root["DeadLetteredEvents"], json!(3));
        assert_eq!(
            root["_aws"]["CloudWatchMetrics"][0]["Metrics"],
            json!([{"Name": "DeadLetteredEvents", "Unit": "Count"}])
        );
    }

    #[test]
    fn gauges_come_in_pairs_per_open_destination() {
        let gauges = gauges_from_open_counts(&[OpenCount {
            destination: destination("eu-west-1", "222222222222"),
            pending: 4,
            overdue: 1,
        }]);
        let got: Vec<(GaugeName, f64)> = gauges.iter().map(|g| (g.name, g.value)).collect();
        assert_eq!(
            got,
            [
                (GaugeName::PendingImages, 4.0),
                (GaugeName::OverdueImages, 1.0)
            ]
        );
    }

    /// Publishes through any publisher, so the `Arc` and reference forwarding is used too.
    async fn publish_via<P: GaugePublisher>(
        publisher: P,
        at: DateTime<Utc>,
        gauges: &[Gauge],
    ) -> Result<(), MetricsError> {
        publisher.publish(at, gauges).await
    }

    #[tokio::test]
    async fn the_in_memory_publisher_keeps_gauges_and_refuses_non_finite_ones() {
        let publisher = std::sync::Arc::new(InMemoryGauges::new());
        let ok = Gauge {
            name: GaugeName::PendingImages,
            destination: destination("eu-west-1", "222222222222"),
            value: 2.0,
        };
        publish_via(publisher.clone(), t(0), std::slice::from_ref(&ok))
            .await
            .expect("published");
        let bad = Gauge {
            value: f64::NAN,
            ..ok.clone()
        };
        let err = publish_via(&*publisher, t(1), &[ok.clone(), bad])
            .await
            .expect_err("NaN refused");
        assert!(matches!(err, MetricsError::NotFinite { .. }), "{err}");
        assert_eq!(publisher.published(), vec![(t(0), vec![ok])]);
    }
}
