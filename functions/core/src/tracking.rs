//! The per-(image, destination) replication state machine.
//!
//! One [`ReplicationExpectation`] says "this image, pushed with this tag, must arrive in this
//! destination". Observations move it forward and never back:
//!
//! ```text
//! PENDING ──deadline passed, API says IN_PROGRESS──► OVERDUE
//!    │    ──deadline passed, ECR lists no replication
//!    │      though the rules still select it─────► NOT_STARTED
//!    └──────────────┬───────────────────────────────────┘
//!                   ▼
//!   FAILED < TAG_LOST < NOT_SELECTED < SUPERSEDED < REPLICATED < DELETED   (closed, ranked)
//! ```
//!
//! An image that arrived without its pushed tag is TAG_LOST only when the source still tags
//! it so and the destination's tag names another image; the problem is then the tag's, not
//! the push's, and is raised once per (repository, tag, destination) by a
//! [`crate::incident::TagIncident`], whatever the number of pushes. Any other missing tag (a
//! later push moved it, someone deleted it by hand) closes the record as SUPERSEDED: the image
//! arrived, and nothing was lost by replication. NOT_SELECTED closes a destination the rules
//! ECR applied did not select (the rules changed before the push and replwatch's copy had not
//! caught up): counted, never an alert.
//!
//! Events are best effort: duplicated, late, out of order or lost. So a transition is the
//! maximum of the current state and what the observation implies, in the rank order of
//! [`ExpectationState`]; facts (push time, arrival time) keep their earliest value. That makes
//! applying observations idempotent and insensitive to order: a replication event that comes
//! before its push creates the item already closed, and the push then only fills in the
//! latency; a success after an overdue alert closes the item and marks it late. The single
//! time-dependent step, PENDING → OVERDUE, is taken only on an API confirmation that the image
//! is still in progress past its deadline, never on the absence of an event.
//!
//! Each problem (overdue, not started, failed) raises its alert at most once per item: the
//! kinds already raised are part of the item and are written in the same conditional write as
//! the state change, so two concurrent handlers cannot both raise it.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::whole_seconds;
use crate::model::{Digest, ExpectationKey};
use crate::unreadable::{ReadFailure, Unconfirmed, retry_after};

/// How long an image may take, and how long records are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackingPolicy {
    /// Time from push after which a missing image is overdue (ECR: most images arrive within
    /// 30 minutes).
    pub sla: TimeDelta,
    /// How often an overdue image is checked again, so a late arrival whose event was lost
    /// is still noticed.
    pub recheck_interval: TimeDelta,
    /// How long a record stays in the table after it closes before DynamoDB's TTL removes
    /// it. An open record (or push) never expires: it waits for its verdict however long.
    pub retention: TimeDelta,
}

impl Default for TrackingPolicy {
    fn default() -> Self {
        Self {
            sla: TimeDelta::minutes(30),
            recheck_interval: TimeDelta::minutes(15),
            retention: TimeDelta::days(14),
        }
    }
}

/// Where an expectation stands. The declaration order is the rank: a transition never moves
/// to a lower state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExpectationState {
    /// Pushed; not yet seen in the destination; deadline not passed (or not yet checked).
    Pending,
    /// The API confirmed the image was still not in the destination after the deadline.
    Overdue,
    /// Past the deadline, ECR lists no replication of the image to this destination although
    /// the rules, read again from ECR, still select it: replication never started.
    NotStarted,
    /// ECR reported the replication failed.
    Failed,
    /// The image arrived, but the destination's tag names another image while the source's
    /// still names this one (the tag's incident says why).
    TagLost,
    /// The rules ECR applied at the push did not select this destination (replwatch's copy
    /// of the rules was older): nothing was to arrive. Counted, never an alert.
    NotSelected,
    /// The image arrived; the tag it was pushed with has since moved on (a later push in a
    /// mutable repository, out-of-order completions, a tag moved or deleted by hand). Not a
    /// problem of replication, so never an alert.
    Superseded,
    /// The image arrived with its tag.
    Replicated,
    /// The source image (or the pushed tag) was deleted: there is nothing left to track,
    /// whatever happened before. Ranked last so a delete is final in any event order;
    /// `arrived_at` still tells whether it had arrived.
    Deleted,
}

impl ExpectationState {
    pub fn is_closed(self) -> bool {
        !matches!(
            self,
            ExpectationState::Pending | ExpectationState::Overdue | ExpectationState::NotStarted
        )
    }

    /// The alert this state stands for, if it is a problem of the push itself. A lost tag is
    /// the tag's problem, alerted by its incident once however many pushes meet it.
    pub fn alert(self) -> Option<AlertKind> {
        match self {
            ExpectationState::Overdue => Some(AlertKind::Overdue),
            ExpectationState::NotStarted => Some(AlertKind::NotStarted),
            ExpectationState::Failed => Some(AlertKind::Failed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExpectationState::Pending => "PENDING",
            ExpectationState::Overdue => "OVERDUE",
            ExpectationState::NotStarted => "NOT_STARTED",
            ExpectationState::Failed => "FAILED",
            ExpectationState::TagLost => "TAG_LOST",
            ExpectationState::NotSelected => "NOT_SELECTED",
            ExpectationState::Superseded => "SUPERSEDED",
            ExpectationState::Deleted => "DELETED",
            ExpectationState::Replicated => "REPLICATED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            ExpectationState::Pending,
            ExpectationState::Overdue,
            ExpectationState::NotStarted,
            ExpectationState::Failed,
            ExpectationState::TagLost,
            ExpectationState::NotSelected,
            ExpectationState::Superseded,
            ExpectationState::Replicated,
            ExpectationState::Deleted,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
}

/// A problem worth telling a human about, or the notice that one is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertKind {
    /// A push not in a destination past its deadline, ECR still replicating it.
    Overdue,
    /// ECR confirmed a replication FAILED, for an image still in the source.
    Failed,
    /// A tag names another image in an immutable destination that already held it, so ECR
    /// could not move it (a tag incident).
    TagLost,
    /// Past its deadline, ECR lists no replication of a push to a destination the rules still
    /// select.
    NotStarted,
    /// A tag names another image in a mutable destination: an older replication finished
    /// last, or someone changed it there (a tag incident).
    TagDiverged,
    /// An incident is over: the tag names the same image in the destination as in the
    /// source again (or no longer has to), or a registry replwatch could not read is read
    /// again.
    Resolved,
    /// A registry replwatch cannot read held destinations unconfirmed past the grace (a
    /// read incident, [`crate::unreadable`]): their verdicts wait until it can.
    Unconfirmed,
}

impl AlertKind {
    pub const ALL: [AlertKind; 7] = [
        AlertKind::Overdue,
        AlertKind::Failed,
        AlertKind::TagLost,
        AlertKind::NotStarted,
        AlertKind::TagDiverged,
        AlertKind::Resolved,
        AlertKind::Unconfirmed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Overdue => "OVERDUE",
            AlertKind::Failed => "FAILED",
            AlertKind::TagLost => "TAG_LOST",
            AlertKind::NotStarted => "NOT_STARTED",
            AlertKind::TagDiverged => "TAG_DIVERGED",
            AlertKind::Resolved => "RESOLVED",
            AlertKind::Unconfirmed => "UNCONFIRMED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == value)
    }

    /// Whether this is a problem (everything but a resolved notice).
    pub fn is_problem(self) -> bool {
        self != AlertKind::Resolved
    }
}

/// Something learned about one expectation, from an event or from the ECR API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The image was pushed with the expectation's tag (`ECR Image Action` PUSH).
    Pushed { at: DateTime<Utc> },
    /// The source image was deleted (`ECR Image Action` DELETE).
    SourceDeleted { at: DateTime<Utc> },
    /// The image is in the destination. `arrived_at` is known from a replication event and
    /// unknown when the API reports COMPLETE for an image whose event was lost. `tag` says
    /// what became of the pushed tag there (always present for an untagged push).
    Arrived {
        arrived_at: Option<DateTime<Utc>>,
        observed_at: DateTime<Utc>,
        tag: TagArrival,
    },
    /// ECR reports the replication FAILED (confirmed with `DescribeImageReplicationStatus`
    /// when possible).
    ReplicationFailed {
        at: DateTime<Utc>,
        failure_code: Option<String>,
    },
    /// `DescribeImageReplicationStatus` said IN_PROGRESS at `at`.
    StillInProgress { at: DateTime<Utc> },
    /// `DescribeImageReplicationStatus` lists no replication to this destination at `at`,
    /// and the rules read again from ECR still select it.
    NotStarted { at: DateTime<Utc> },
    /// The rules read again from ECR do not select this destination: ECR never meant to
    /// replicate the push there.
    NotSelected { at: DateTime<Utc> },
    /// Checked at `at` and nothing to say yet, nor to alert: a later push carries the tag,
    /// but this one may still be replicating, and could take the tag back when it finishes.
    /// Looked at again after the recheck interval.
    Waiting { at: DateTime<Utc> },
    /// A read needed to confirm this destination failed at `at` ([`crate::unreadable`]): no
    /// verdict, looked at again after a backoff.
    Unconfirmed {
        at: DateTime<Utc>,
        failure: ReadFailure,
    },
}

/// What became of the pushed tag when the image arrived ([`crate::registry::tag_arrival`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagArrival {
    /// The destination holds the tag on this image (or the push was untagged).
    Present,
    /// The tag is elsewhere or gone, and replication is not the cause.
    Superseded,
    /// The destination's tag names `held_by` while the source's still names this image.
    Lost { held_by: Digest },
}

/// What one observation did to an expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: ExpectationState,
    pub to: ExpectationState,
    /// Whether the record differs and must be written.
    pub changed: bool,
    /// Alerts to send, each raised for the first time on this item.
    pub raised: Vec<AlertKind>,
    /// Push-to-arrival time, when this observation made it known (for the latency metric,
    /// recorded once per item).
    pub new_latency: Option<TimeDelta>,
    /// Whether this observation found the destination unconfirmed past the grace for the
    /// first time (the `Unconfirmed` metric, counted once per item).
    pub unconfirmed_past_grace: bool,
}

/// The tracking record of one (image, tag, destination).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationExpectation {
    pub key: ExpectationKey,
    pub state: ExpectationState,
    pub pushed_at: Option<DateTime<Utc>>,
    pub deadline: Option<DateTime<Utc>>,
    pub arrived_at: Option<DateTime<Utc>>,
    pub failure_code: Option<String>,
    /// For TAG_LOST: the image the tag names in the destination, which kept ECR from moving it.
    pub tag_held_by: Option<Digest>,
    /// When the record closed (observation time), for retention and reporting.
    pub closed_at: Option<DateTime<Utc>>,
    pub overdue_since: Option<DateTime<Utc>>,
    pub last_checked_at: Option<DateTime<Utc>>,
    /// When the sweep must look at this record next; `None` once closed. Only records with a
    /// value are in the table's sparse due index.
    pub next_check_at: Option<DateTime<Utc>>,
    /// When the record may be removed (DynamoDB TTL): only once closed, so nothing open
    /// expires while it waits for a verdict.
    pub expires_at: Option<DateTime<Utc>>,
    /// The reads that would confirm this destination are failing: since when, and why.
    pub unconfirmed: Option<Unconfirmed>,
    pub alerts: BTreeSet<AlertKind>,
    /// Optimistic-concurrency version: 0 for a record never stored.
    pub version: u64,
}

impl ReplicationExpectation {
    /// Whether its next check looks again at something already known (OVERDUE, NOT_STARTED,
    /// unreadable, or a push left PENDING after its deadline check) rather than giving the
    /// destination its first verdict at the deadline. The due index keeps the two apart so
    /// that a Region's backlog of known problems never delays other destinations' first
    /// verdicts ([`crate::store::recheck_budget`]).
    pub fn is_recheck(&self) -> bool {
        self.unconfirmed.is_some()
            || match (self.deadline, self.last_checked_at) {
                (Some(deadline), Some(checked)) => checked >= deadline,
                (Some(_), None) => false,
                (None, _) => true,
            }
    }

    /// A record not yet stored, with nothing known.
    pub fn new(key: ExpectationKey) -> Self {
        Self {
            key,
            state: ExpectationState::Pending,
            pushed_at: None,
            deadline: None,
            arrived_at: None,
            failure_code: None,
            tag_held_by: None,
            closed_at: None,
            overdue_since: None,
            last_checked_at: None,
            next_check_at: None,
            expires_at: None,
            unconfirmed: None,
            alerts: BTreeSet::new(),
            version: 0,
        }
    }

    /// Time from push to arrival, when both are known.
    pub fn latency(&self) -> Option<TimeDelta> {
        match (self.pushed_at, self.arrived_at) {
            (Some(p), Some(a)) => Some((a - p).max(TimeDelta::zero())),
            _ => None,
        }
    }

    /// Whether the image arrived after its deadline (or was flagged overdue first).
    pub fn arrived_late(&self) -> bool {
        matches!(
            self.state,
            ExpectationState::Replicated | ExpectationState::TagLost | ExpectationState::Superseded
        ) && (self.overdue_since.is_some()
            || matches!((self.arrived_at, self.deadline), (Some(a), Some(d)) if a > d))
    }

    /// Whether the record is worth storing: something is known beyond its name.
    pub fn is_known(&self) -> bool {
        self.pushed_at.is_some() || self.state.is_closed()
    }

    /// Applies one observation; see the module documentation for the rules.
    pub fn apply(&mut self, observation: &Observation, policy: &TrackingPolicy) -> Transition {
        let before = Snapshot::of(self);
        let counted_before = self.unconfirmed.as_ref().is_some_and(|u| u.counted);
        match observation {
            Observation::Pushed { at } => {
                let pushed = earliest(self.pushed_at, *at);
                self.pushed_at = Some(pushed);
                self.deadline = Some(pushed + policy.sla);
            }
            Observation::SourceDeleted { at } => self.close(ExpectationState::Deleted, *at),
            Observation::Arrived {
                arrived_at,
                observed_at,
                tag,
            } => {
                if let Some(at) = arrived_at {
                    self.arrived_at = Some(earliest(self.arrived_at, *at));
                }
                let state = match tag {
                    TagArrival::Present => ExpectationState::Replicated,
                    TagArrival::Superseded => ExpectationState::Superseded,
                    TagArrival::Lost { .. } => ExpectationState::TagLost,
                };
                self.close(state, *observed_at);
                if let TagArrival::Lost { held_by } = tag
                    && self.state == ExpectationState::TagLost
                    && self.tag_held_by.is_none()
                {
                    self.tag_held_by = Some(held_by.clone());
                }
            }
            Observation::ReplicationFailed { at, failure_code } => {
                self.close(ExpectationState::Failed, *at);
                if self.state == ExpectationState::Failed && self.failure_code.is_none() {
                    self.failure_code.clone_from(failure_code);
                }
            }
            Observation::StillInProgress { at } => self.missing_at(ExpectationState::Overdue, *at),
            Observation::NotStarted { at } => self.missing_at(ExpectationState::NotStarted, *at),
            Observation::NotSelected { at } => self.close(ExpectationState::NotSelected, *at),
            Observation::Waiting { at } => self.missing_at(ExpectationState::Pending, *at),
            Observation::Unconfirmed { at, failure } => self.unconfirmed_at(*at, failure),
        }
        if !matches!(
            observation,
            Observation::Unconfirmed { .. } | Observation::Pushed { .. }
        ) {
            // Confirmed, whatever the verdict: the reads work again.
            self.unconfirmed = None;
        }
        self.refresh_schedule(policy);

        let mut raised = Vec::new();
        if let Some(kind) = self.state.alert()
            && self.state != before.state
            && self.alerts.insert(kind)
        {
            raised.push(kind);
        }
        Transition {
            from: before.state,
            to: self.state,
            changed: Snapshot::of(self) != before,
            raised,
            new_latency: match before.latency {
                None => self.latency(),
                Some(_) => None,
            },
            unconfirmed_past_grace: !counted_before
                && self.unconfirmed.as_ref().is_some_and(|u| u.counted),
        }
    }

    /// The image is still not in the destination at `at`: past the deadline that is `problem`
    /// (OVERDUE or NOT_STARTED, whichever ranks higher stays); before it, only a check.
    fn missing_at(&mut self, problem: ExpectationState, at: DateTime<Utc>) {
        if self.state.is_closed() {
            return;
        }
        let past_deadline = self.deadline.is_some_and(|d| at >= d);
        if past_deadline && problem > self.state {
            self.state = problem;
            self.overdue_since = Some(self.overdue_since.map_or(at, |s| s.min(at)));
        }
        self.last_checked_at = Some(self.last_checked_at.map_or(at, |c| c.max(at)));
    }

    /// The reads failed at `at`: nothing learned about the image, one more attempt counted.
    fn unconfirmed_at(&mut self, at: DateTime<Utc>, failure: &ReadFailure) {
        if self.state.is_closed() {
            return;
        }
        let unconfirmed = self.unconfirmed.get_or_insert_with(|| Unconfirmed {
            since: at,
            attempts: 0,
            failure: failure.clone(),
            counted: false,
        });
        unconfirmed.since = unconfirmed.since.min(at);
        unconfirmed.attempts = unconfirmed.attempts.saturating_add(1);
        unconfirmed.failure = failure.clone();
        unconfirmed.counted |= unconfirmed.past_grace(at);
        self.last_checked_at = Some(self.last_checked_at.map_or(at, |c| c.max(at)));
    }

    fn close(&mut self, state: ExpectationState, at: DateTime<Utc>) {
        if state > self.state {
            self.state = state;
            self.closed_at = Some(at);
        }
    }

    /// Keeps `next_check_at` and `expires_at` consistent with the state.
    fn refresh_schedule(&mut self, policy: &TrackingPolicy) {
        if let (Some(unconfirmed), false) = (&self.unconfirmed, self.state.is_closed()) {
            let last = self.last_checked_at.unwrap_or(unconfirmed.since);
            self.next_check_at = Some(last + retry_after(unconfirmed.attempts));
            self.expires_at = None;
            return;
        }
        self.next_check_at = match self.state {
            ExpectationState::Pending => match (self.deadline, self.last_checked_at) {
                (Some(d), Some(c)) if c >= d => Some(c + policy.recheck_interval),
                (Some(d), _) => Some(d),
                (None, _) => None,
            },
            ExpectationState::Overdue | ExpectationState::NotStarted => self
                .last_checked_at
                .or(self.overdue_since)
                .map(|c| c + policy.recheck_interval),
            _ => None,
        };
        // Whole seconds, as DynamoDB's TTL keeps it: a value read back must equal the one
        // computed again, or every replayed event would look like a change.
        self.expires_at = if self.state.is_closed() {
            self.closed_at.map(|c| c + policy.retention)
        } else {
            None
        }
        .map(whole_seconds);
    }
}

/// Everything `apply` may change, without the key (which it never changes): comparing two
/// of these is how a transition knows whether the record must be written, without cloning
/// the record on the hot path.
#[derive(PartialEq)]
struct Snapshot {
    state: ExpectationState,
    times: [Option<DateTime<Utc>>; 8],
    failure_code_len: Option<usize>,
    tag_held: bool,
    // Alerts are only ever added, so their number tells whether the set changed.
    alerts: usize,
    latency: Option<TimeDelta>,
    /// Attempts only grow while unconfirmed, and `counted` is set once.
    unconfirmed: Option<(u32, bool)>,
}

impl Snapshot {
    fn of(e: &ReplicationExpectation) -> Self {
        Self {
            state: e.state,
            times: [
                e.pushed_at,
                e.deadline,
                e.arrived_at,
                e.closed_at,
                e.overdue_since,
                e.last_checked_at,
                e.next_check_at,
                e.expires_at,
            ],
            // The failure code is only ever set once, from none.
            failure_code_len: e.failure_code.as_ref().map(String::len),
            // Set once, from none, like the failure code.
            tag_held: e.tag_held_by.is_some(),
            alerts: e.alerts.len(),
            latency: e.latency(),
            unconfirmed: e.unconfirmed.as_ref().map(|u| (u.attempts, u.counted)),
        }
    }
}

fn earliest(current: Option<DateTime<Utc>>, candidate: DateTime<Utc>) -> DateTime<Utc> {
    current.map_or(candidate, |c| c.min(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, Destination, Digest, Region, RepositoryName, SourceImage};
    use chrono::TimeZone;

    fn t(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
            .single()
            .expect("valid time")
            + TimeDelta::minutes(minutes)
    }

    fn key(tag: Option<&str>) -> ExpectationKey {
        ExpectationKey {
            image: SourceImage {
                registry: Destination::new(
                    Region::parse("us-west-2").expect("region"),
                    AccountId::parse("111111111111").expect("account"),
                ),
                repository: RepositoryName::parse("team-a/web").expect("repo"),
                digest: Digest::parse(&format!("sha256:{}", "ab".repeat(32))).expect("digest"),
            },
            tag: tag.map(str::to_owned),
            destination: Destination::new(
                Region::parse("us-east-1").expect("region"),
                AccountId::parse("111111111111").expect("account"),
            ),
            occurrence: t(0),
        }
    }

    fn arrived(minutes: i64, tag_present: bool) -> Observation {
        Observation::Arrived {
            arrived_at: Some(t(minutes)),
            observed_at: t(minutes),
            tag: if tag_present {
                TagArrival::Present
            } else {
                TagArrival::Lost {
                    held_by: Digest::parse(&format!("sha256:{}", "ef".repeat(32))).expect("digest"),
                }
            },
        }
    }

    #[test]
    fn push_then_arrival_records_latency_without_alert() {
        let policy = TrackingPolicy::default();
        let mut e = ReplicationExpectation::new(key(Some("v1")));
        let tr = e.apply(&Observation::Pushed { at: t(0) }, &policy);
        assert!(tr.changed && tr.raised.is_empty());
        assert_eq!(e.deadline, Some(t(30)));
        assert_eq!(e.next_check_at, Some(t(30)));
        let tr = e.apply(&arrived(3, true), &policy);
        assert_eq!(tr.to, ExpectationState::Replicated);
        assert!(tr.raised.is_empty());
        assert_eq!(e.latency(), Some(TimeDelta::minutes(3)));
        assert_eq!(tr.new_latency, Some(TimeDelta::minutes(3)));
        assert_eq!(e.next_check_at, None, "closed items leave the due index");
        assert_eq!(e.expires_at, Some(t(3) + TimeDelta::days(14)));
        assert!(!e.arrived_late());
    }

    #[test]
    fn replication_before_push_creates_a_closed_item_and_the_push_fills_latency() {
        let policy = TrackingPolicy::default();
        let mut e = ReplicationExpectation::new(key(Some("v1")));
        e.apply(&arrived(4, true), &policy);
        assert_eq!(e.state, ExpectationState::Replicated);
        assert_eq!(e.latency(), None);
        let tr = e.apply(&Observation::Pushed { at: t(1) }, &policy);
        assert!(tr.changed && tr.raised.is_empty());
        assert_eq!(e.state, ExpectationState::Replicated);
        assert_eq!(e.latency(), Some(TimeDelta::minutes(3)));
        assert_eq!(
            tr.new_latency,
            Some(TimeDelta::minutes(3)),
            "recorded when it becomes known"
        );
        let again = e.apply(&Observation::Pushed { at: t(1) }, &policy);
        assert_eq!(again.new_latency, None, "and only once");
        assert_eq!(e.next_check_at, None);
    }

    #[test]
    fn duplicates_change_nothing() {
        let policy = TrackingPolicy::default();
        let mut e = ReplicationExpectation::new(key(None));
        e.apply(&Observation::Pushed { at: t(0) }, &policy);
        e.apply(&arrived(2, true), &policy);
        let snapshot = e.clone();
        for obs in [Observation::Pushed { at: t(0) }, arrived(2, true)] {
            let tr = e.apply(&obs, &policy);
            assert!(!tr.changed && tr.raised.is_empty(), "{obs:?}");
        }
        assert_eq!(e, snapshot);
    }

    #[test]
    fn overdue_needs_the_deadline_to_have_passed_and_alerts_once() {
        let policy = TrackingPolicy::default();
        let mut e = ReplicationExpectation::new(key(Some("v1")));
        e.apply(&Observation::Pushed { at: t(0) }, &policy);
        let early = e.apply(&Observation::StillInProgress { at: t(29) }, &policy);
        assert_eq!(early.to, ExpectationState::Pending);
        assert!(early.raised.is_empty());
        let late = e.apply(&Observation::StillInProgress { at: t(31) }, &policy);
        assert_eq!(late.to, ExpectationState::Overdue);
        assert_eq!(late.raised, vec![AlertKind::Overdue]);
        assert_eq!(e.next_check_at, Some(t(46)), "rechecked after the interval");
        let again = e.apply(&Observation::StillInProgress { at: t(46) }, &policy);
        assert!(again.raised.is_empty());
        assert_eq!(e.next_check_at, Some(t(61)));
    }

    #[test]
    fn a_late_success_closes_an_overdue_item_and_says_it_was_late() {
        let policy = TrackingPolicy::default();
        let mut e = ReplicationExpectation::new(key(Some("v1")));
        e.apply(&Observation::Pushed { at: t(0) }, &policy);
        e.apply(&Observation::StillInProgress { at: t(31) }, &policy);
        let tr = e.apply(&arrived(40, true), &policy);
        assert_eq!(
            (tr.from, tr.to),
            (ExpectationState::Overdue, ExpectationState::Replicated)
        );
        assert!(tr.raised.is_empty());
        assert_eq!(e.latency(), Some(TimeDelta::minutes(40)));
        assert!(e.arrived_late());
        assert_eq!(e.next_check_at, None);
    }

    #[test]
    fn failure_alerts_with_its_code_and_a_stale_failure_never_reopens_a_success() {
        let policy = TrackingPolicy::default();
        let mut e = ReplicationExpectation::new(key(Some("v1")));
        e.apply(&Observation::Pushed { at: t(0) }, &policy);
        let failed = Observation::ReplicationFailed {
            at: t(5),
            failure_code: Some("REPLICATION_FAILED".into()),
        };
        let tr = e.apply(&failed, &policy);
        assert_eq!(tr.raised, vec![AlertKind::Failed]);
        assert_eq!(e.failure_code.as_deref(), Some("REPLICATION_FAILED"));
        assert!(e.apply(&failed, &policy).raised.is_empty());

        let mut ok = ReplicationExpectation::new(key(Some("v1")));
        ok.apply(&Observation::Pushed { at: t(0) }, &policy);
        ok.apply(&arrived(2, true), &policy);
        let tr = ok.apply(&failed, &policy);
        assert_eq!(tr.to, ExpectationState::Replicated);
        assert!(!tr.changed && tr.raised.is_empty());
    }

    #[test]
    fn arrival_without_the_pushed_tag_is_tag_lost_and_left_to_the_tag_s_incident() {
        let policy = TrackingPolicy::default();
        let mut e = ReplicationExpectation::new(key(Some("v1")));
        e.apply(&Observation::Pushed { at: t(0) }, &policy);
        let tr = e.apply(&arrived(2, false), &policy);
        assert_eq!(tr.to, ExpectationState::TagLost);
        assert!(
            tr.raised.is_empty(),
            "one incident per tag and destination says it, not every push"
        );
    }

    #[test]
    fn a_replication_ecr_never_started_is_its_own_problem_past_the_deadline() {
        let policy = TrackingPolicy::default();
        let mut e = ReplicationExpectation::new(key(Some("v1")));
        e.apply(&Observation::Pushed { at: t(0) }, &policy);
        let early = e.apply(&Observation::NotStarted { at: t(10) }, &policy);
        assert_eq!(early.to, ExpectationState::Pending);
        let late = e.apply(&Observation::NotStarted { at: t(31) }, &policy);
        assert_eq!(late.to, ExpectationState::NotStarted);
        assert_eq!(late.raised, vec![AlertKind::NotStarted]);
        assert_eq!(
            e.next_check_at,
            Some(t(46)),
            "rechecked like an overdue one"
        );
        let again = e.apply(&Observation::StillInProgress { at: t(46) }, &policy);
        assert!(again.raised.is_empty());
        assert_eq!(again.to, ExpectationState::NotStarted);
        let arrived = e.apply(&arrived(50, true), &policy);
        assert_eq!(arrived.to, ExpectationState::Replicated);
    }

    #[test]
    fn a_destination_the_rules_did_not_select_closes_without_an_alert() {
        let policy = TrackingPolicy::default();
        let mut e = ReplicationExpectation::new(key(Some("v1")));
        e.apply(&Observation::Pushed { at: t(0) }, &policy);
        let tr = e.apply(&Observation::NotSelected { at: t(31) }, &policy);
        assert_eq!(tr.to, ExpectationState::NotSelected);
        assert!(tr.raised.is_empty());
        assert_eq!(e.next_check_at, None);
    }

    #[test]
    fn a_superseded_tag_closes_the_record_without_an_alert() {
        let policy = TrackingPolicy::default();
        let mut e = ReplicationExpectation::new(key(Some("latest")));
        e.apply(&Observation::Pushed { at: t(0) }, &policy);
        let tr = e.apply(
            &Observation::Arrived {
                arrived_at: Some(t(2)),
                observed_at: t(3),
                tag: TagArrival::Superseded,
            },
            &policy,
        );
        assert_eq!(tr.to, ExpectationState::Superseded);
        assert!(tr.raised.is_empty());
        assert_eq!(tr.new_latency, Some(TimeDelta::minutes(2)));
        assert_eq!(e.next_check_at, None);
        let tr = e.apply(&arrived(2, true), &policy);
        assert_eq!(
            tr.to,
            ExpectationState::Replicated,
            "the tag seen on the image outranks a moved one"
        );
        assert!(tr.raised.is_empty());
    }

    #[test]
    fn tag_lost_keeps_the_image_that_holds_the_tag() {
        let policy = TrackingPolicy::default();
        let mut e = ReplicationExpectation::new(key(Some("v1")));
        e.apply(&Observation::Pushed { at: t(0) }, &policy);
        e.apply(&arrived(2, false), &policy);
        assert_eq!(
            e.tag_held_by.as_ref().map(Digest::as_str),
            Some(format!("sha256:{}", "ef".repeat(32)).as_str())
        );
    }

    #[test]
    fn deleting_the_source_closes_a_pending_item_silently() {
        let policy = TrackingPolicy::default();
        let mut e = ReplicationExpectation::new(key(Some("v1")));
        e.apply(&Observation::Pushed { at: t(0) }, &policy);
        let tr = e.apply(&Observation::SourceDeleted { at: t(10) }, &policy);
        assert_eq!(tr.to, ExpectationState::Deleted);
        assert!(tr.raised.is_empty());
        assert_eq!(e.next_check_at, None);
        let tr = e.apply(&Observation::StillInProgress { at: t(40) }, &policy);
        assert!(
            !tr.changed && tr.raised.is_empty(),
            "a deleted image is never overdue"
        );
    }

    #[test]
    fn sla_is_configurable() {
        let policy = TrackingPolicy {
            sla: TimeDelta::minutes(5),
            ..TrackingPolicy::default()
        };
        let mut e = ReplicationExpectation::new(key(None));
        e.apply(&Observation::Pushed { at: t(0) }, &policy);
        let tr = e.apply(&Observation::StillInProgress { at: t(6) }, &policy);
        assert_eq!(tr.to, ExpectationState::Overdue);
    }

    #[test]
    fn states_and_alerts_round_trip_their_names() {
        for s in [
            ExpectationState::Pending,
            ExpectationState::Overdue,
            ExpectationState::NotStarted,
            ExpectationState::Failed,
            ExpectationState::TagLost,
            ExpectationState::NotSelected,
            ExpectationState::Superseded,
            ExpectationState::Deleted,
            ExpectationState::Replicated,
        ] {
            assert_eq!(ExpectationState::parse(s.as_str()), Some(s));
        }
        for k in AlertKind::ALL {
            assert_eq!(AlertKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ExpectationState::parse("BOGUS"), None);
    }
}
