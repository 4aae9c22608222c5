//! One tracked push: an image pushed (or restored) with one tag, expected in every destination
//! the rules selected, checked once against ECR at its deadline.
//!
//! This is what keeps the cost of tracking flat in the number of destinations. A push writes
//! one [`TrackedPush`] whatever the destinations; a replication that arrives on time writes
//! nothing (its event only yields its latency); the deadline check confirms every destination
//! with one `DescribeImageReplicationStatus` and the destination reads, and closes the push in
//! one write. A per-destination [`ReplicationExpectation`] is written only for a problem
//! (overdue, failed, tag lost) or for what follows one (a late arrival): problems are rare,
//! so their writes are too.
//!
//! Each destination of a push therefore has one of two homes: its own record, when one
//! exists, which then decides; otherwise the push, whose outcome stands for it ([`TrackedPush::view`]).
//!
//! A push is one occurrence: the same digest pushed again with the same tag (a rollback, a
//! re-push after a delete, a restore) is another [`TrackedPush`], named by its own push time,
//! with its own deadline and verdicts. Its closing write lists the destinations that have a
//! record of their own, so a late replication event finds that record without a query.

use chrono::{DateTime, Utc};

use crate::clock::whole_seconds;
use crate::model::{Destination, ExpectationKey, SourceImage};
use crate::tracking::{ExpectationState, Observation, ReplicationExpectation, TrackingPolicy};

/// What the deadline check (or a delete) concluded for the destinations without a record of
/// their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// Not yet checked: due at the deadline.
    Open,
    /// Checked: every destination without a record of its own reached a closed verdict at
    /// `at`: REPLICATED, or the state `closed` gives it (SUPERSEDED, TAG_LOST, NOT_SELECTED).
    /// `recorded` are the destinations whose own record decides (problems, and what follows
    /// them).
    Confirmed {
        at: DateTime<Utc>,
        closed: Vec<(Destination, ExpectationState)>,
        recorded: Vec<Destination>,
    },
    /// The source image (or the pushed tag) was deleted before the check: nothing to expect.
    Deleted { at: DateTime<Utc> },
}

/// One push (or restore from the archive) of `image` with `tag`, to `destinations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedPush {
    pub image: SourceImage,
    pub tag: Option<String>,
    /// The destinations the rules selected at the push, sorted, without repeats.
    pub destinations: Vec<Destination>,
    pub pushed_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub outcome: PushOutcome,
    /// When its check is tried again after it failed as a whole (the store could not be read
    /// or written for its image): later than the deadline, so a push that cannot be checked
    /// leaves the head of the due index instead of holding up the others.
    pub retry_at: Option<DateTime<Utc>>,
    /// When the push may be removed (DynamoDB TTL), in whole seconds as the TTL keeps it:
    /// only once it is closed.
    pub expires_at: Option<DateTime<Utc>>,
    /// Optimistic-concurrency version: 0 for a push never stored.
    pub version: u64,
}

impl TrackedPush {
    pub fn new(
        image: SourceImage,
        tag: Option<String>,
        mut destinations: Vec<Destination>,
        pushed_at: DateTime<Utc>,
        policy: &TrackingPolicy,
    ) -> Self {
        destinations.sort();
        destinations.dedup();
        let deadline = pushed_at + policy.sla;
        Self {
            image,
            tag,
            destinations,
            pushed_at,
            deadline,
            outcome: PushOutcome::Open,
            retry_at: None,
            // An open push never expires: it waits for its check however late the sweep is.
            expires_at: None,
            version: 0,
        }
    }

    /// Closes the push with `outcome` (not [`PushOutcome::Open`]); it is kept for the
    /// policy's retention from then.
    pub fn close(&mut self, outcome: PushOutcome, policy: &TrackingPolicy) {
        if let PushOutcome::Confirmed { at, .. } | PushOutcome::Deleted { at } = &outcome {
            self.expires_at = Some(whole_seconds(*at + policy.retention));
        }
        self.outcome = outcome;
    }

    pub fn is_open(&self) -> bool {
        self.outcome == PushOutcome::Open
    }

    /// When the sweep must check this push: its deadline (or its retry, after a check that
    /// failed), while it is open.
    pub fn next_check_at(&self) -> Option<DateTime<Utc>> {
        self.is_open().then(|| {
            self.retry_at
                .map_or(self.deadline, |r| r.max(self.deadline))
        })
    }

    pub fn key(&self, destination: &Destination) -> ExpectationKey {
        ExpectationKey {
            image: self.image.clone(),
            tag: self.tag.clone(),
            destination: destination.clone(),
            occurrence: self.pushed_at,
        }
    }

    /// Whether `record` is this push's record of one of its destinations: named by this push,
    /// or a record a failure event made before this push was tracked, which this push's check
    /// took as its own.
    pub fn owns(&self, record: &ReplicationExpectation) -> bool {
        record.key.image == self.image
            && record.key.tag == self.tag
            && self.destinations.contains(&record.key.destination)
            && (record.key.occurrence == self.pushed_at || record.pushed_at == Some(self.pushed_at))
    }

    /// Whether the closing check left `destination` to a record of its own.
    pub fn is_recorded(&self, destination: &Destination) -> bool {
        matches!(&self.outcome, PushOutcome::Confirmed { recorded, .. } if recorded.contains(destination))
    }

    /// The record a destination of this push starts from when something about it must be
    /// written: pending since the push, due at the deadline, never stored.
    pub fn seed(
        &self,
        destination: &Destination,
        policy: &TrackingPolicy,
    ) -> ReplicationExpectation {
        let mut record = ReplicationExpectation::new(self.key(destination));
        record.apply(&Observation::Pushed { at: self.pushed_at }, policy);
        record
    }

    /// What this push says about `destination` when it has no record of its own.
    pub fn view(
        &self,
        destination: &Destination,
        policy: &TrackingPolicy,
    ) -> ReplicationExpectation {
        let mut record = self.seed(destination, policy);
        let closed = match &self.outcome {
            PushOutcome::Open => None,
            PushOutcome::Confirmed { at, closed, .. } => Some((
                closed
                    .iter()
                    .find(|(d, _)| d == destination)
                    .map_or(ExpectationState::Replicated, |(_, state)| *state),
                *at,
            )),
            PushOutcome::Deleted { at } => Some((ExpectationState::Deleted, *at)),
        };
        if let Some((state, at)) = closed {
            record.state = state;
            record.closed_at = Some(at);
            record.next_check_at = None;
            record.expires_at = Some(whole_seconds(at + policy.retention));
        }
        record
    }
}

/// Every destination's record of `pushes` and `records` together, as a reader sees them: a
/// destination's own record where there is one, else the view of its push.
pub fn combined_view(
    pushes: &[TrackedPush],
    records: Vec<ReplicationExpectation>,
    policy: &TrackingPolicy,
) -> Vec<ReplicationExpectation> {
    let mut all = records;
    for push in pushes {
        for destination in &push.destinations {
            if !all
                .iter()
                .any(|r| &r.key.destination == destination && push.owns(r))
            {
                all.push(push.view(destination, policy));
            }
        }
    }
    all.sort_by(|a, b| a.key.cmp(&b.key));
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, Digest, Region, RepositoryName};
    use chrono::{TimeDelta, TimeZone};

    fn destination(region: &str) -> Destination {
        Destination::new(
            Region::parse(region).expect("region"),
            AccountId::parse("222222222222").expect("account"),
        )
    }

    fn push() -> TrackedPush {
        TrackedPush::new(
            SourceImage {
                registry: destination("us-east-1"),
                repository: RepositoryName::parse("team/web").expect("repository"),
                digest: Digest::parse(&format!("sha256:{}", "ab".repeat(32))).expect("digest"),
            },
            Some("v1".into()),
            vec![
                destination("eu-west-1"),
                destination("ap-south-1"),
                destination("eu-west-1"),
            ],
            Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0)
                .single()
                .expect("time"),
            &TrackingPolicy::default(),
        )
    }

    #[test]
    fn a_push_is_due_at_its_deadline_until_it_is_checked() {
        let mut push = push();
        assert_eq!(push.destinations.len(), 2, "repeats removed");
        assert_eq!(
            push.next_check_at(),
            Some(push.pushed_at + TimeDelta::minutes(30))
        );
        push.close(
            PushOutcome::Confirmed {
                at: push.deadline,
                closed: vec![],
                recorded: vec![],
            },
            &TrackingPolicy::default(),
        );
        assert_eq!(push.next_check_at(), None);
        assert_eq!(
            push.expires_at,
            Some(push.deadline + TimeDelta::days(14)),
            "kept two weeks after its check"
        );
    }

    #[test]
    fn the_view_of_a_confirmed_push_tells_replicated_from_superseded() {
        let policy = TrackingPolicy::default();
        let mut push = push();
        let superseded = destination("eu-west-1");
        assert_eq!(
            push.view(&superseded, &policy).state,
            ExpectationState::Pending
        );
        push.close(
            PushOutcome::Confirmed {
                at: push.deadline,
                closed: vec![(superseded.clone(), ExpectationState::Superseded)],
                recorded: vec![],
            },
            &policy,
        );
        assert_eq!(
            push.view(&superseded, &policy).state,
            ExpectationState::Superseded
        );
        let other = destination("ap-south-1");
        let view = push.view(&other, &policy);
        assert_eq!(view.state, ExpectationState::Replicated);
        assert_eq!(view.pushed_at, Some(push.pushed_at));
        assert_eq!(view.next_check_at, None);
    }

    #[test]
    fn a_destination_with_its_own_record_is_shown_by_that_record() {
        let policy = TrackingPolicy::default();
        let push = push();
        let failed_destination = destination("eu-west-1");
        let mut failed = push.seed(&failed_destination, &policy);
        failed.apply(
            &Observation::ReplicationFailed {
                at: push.pushed_at,
                failure_code: Some("ACCESS_DENIED".into()),
            },
            &policy,
        );
        let all = combined_view(std::slice::from_ref(&push), vec![failed], &policy);
        assert_eq!(all.len(), 2);
        let states: Vec<_> = all
            .iter()
            .map(|r| (r.key.destination.clone(), r.state))
            .collect();
        assert!(states.contains(&(failed_destination, ExpectationState::Failed)));
        assert!(states.contains(&(destination("ap-south-1"), ExpectationState::Pending)));
    }
}
