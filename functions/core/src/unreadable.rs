//! Registries replwatch cannot read: one destination's failure is its own verdict, never
//! another's silence.
//!
//! A push is confirmed destination by destination. When a read needed to confirm one
//! destination fails (its account refuses the reader role, ECR there is throttling or down),
//! that destination of that push is *unconfirmed*: its record keeps what was known and says
//! why ([`Unconfirmed`]), and is looked at again with a growing backoff ([`retry_after`]) so
//! it leaves the head of the due index; every other destination of the push gets its verdict
//! now. An unconfirmed destination is not a replication problem (nothing says the image is
//! missing), so it raises no per-image alert.
//!
//! What the operator must hear about is the registry that cannot be read. Once one of its
//! destinations has stayed unconfirmed for [`UNREADABLE_GRACE`], a [`ReadIncident`] opens for
//! the (registry, kind of failure): one UNCONFIRMED alert naming the failing call, the error
//! and the fix, whatever the number of images waiting on it. The incident resolves, with one
//! RESOLVED notice, when a destination it held unconfirmed is read again; the images then get
//! their real verdicts (an image that is really missing there is OVERDUE then, not before).
//!
//! Like a tag incident, a read incident is written conditionally on its version with the
//! alert it raises in the same write, so concurrent sweeps raise it once.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::model::Destination;
use crate::registry::RegistryError;
use crate::tracking::AlertKind;

/// How long a destination stays unconfirmed before its registry's incident opens: long
/// enough for the SDK's retries and a few of ours to outlast a brownout (a throttled burst,
/// an IAM change propagating), short against the 30-minute SLA.
pub const UNREADABLE_GRACE: TimeDelta = TimeDelta::minutes(5);

/// The longest wait between two attempts to confirm an unconfirmed destination: the recheck
/// interval of an overdue one.
pub const MAX_RETRY_AFTER: TimeDelta = TimeDelta::minutes(15);

/// How an unconfirmed destination is tried again: 1, 2, 4, 8, then every 15 minutes.
pub const RETRY_BACKOFF: Backoff = Backoff::new(TimeDelta::minutes(1), MAX_RETRY_AFTER);

/// How long to wait before the `attempts`-th failed attempt's retry ([`RETRY_BACKOFF`]).
pub fn retry_after(attempts: u32) -> TimeDelta {
    RETRY_BACKOFF.after(attempts)
}

/// What kind of failure keeps a registry unreadable: what the operator must fix differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReadFailureKind {
    /// Refused (access denied, a role that cannot be assumed, a missing repository policy):
    /// stays so until someone changes the configuration.
    Refused,
    /// Throttled, timed out or a service fault: may pass by itself, and has not yet.
    Unavailable,
}

impl ReadFailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadFailureKind::Refused => "REFUSED",
            ReadFailureKind::Unavailable => "UNAVAILABLE",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [ReadFailureKind::Refused, ReadFailureKind::Unavailable]
            .into_iter()
            .find(|k| k.as_str() == value)
    }
}

/// One failed read, where it failed and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFailure {
    /// The registry (account and Region) the failing call was made in.
    pub location: Destination,
    pub kind: ReadFailureKind,
    /// The ECR or STS operation that failed.
    pub operation: String,
    /// The error as the service (or the SDK) worded it.
    pub error: String,
}

impl ReadFailure {
    /// The failure of a read made in `location`.
    pub fn new(location: Destination, error: &RegistryError) -> Self {
        Self {
            location,
            kind: if error.retryable {
                ReadFailureKind::Unavailable
            } else {
                ReadFailureKind::Refused
            },
            operation: error.operation.to_owned(),
            error: error.message.clone(),
        }
    }

    pub fn incident_key(&self) -> ReadIncidentKey {
        ReadIncidentKey {
            location: self.location.clone(),
            kind: self.kind,
        }
    }
}

impl fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}: {}", self.operation, self.location, self.error)
    }
}

/// Why a destination of a push has no verdict yet: the reads that would confirm it failed,
/// since `since`, `attempts` times in a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unconfirmed {
    pub since: DateTime<Utc>,
    pub attempts: u32,
    /// The latest failure.
    pub failure: ReadFailure,
    /// Whether it has been unconfirmed past the grace (from then on it is counted by the
    /// `Unconfirmed` metric, once, and holds its registry's incident open).
    pub counted: bool,
}

impl Unconfirmed {
    /// Whether the destination has stayed unreadable long enough to be a verdict of its own.
    pub fn past_grace(&self, now: DateTime<Utc>) -> bool {
        now - self.since >= UNREADABLE_GRACE
    }
}

/// One registry that cannot be read, for one kind of failure.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReadIncidentKey {
    pub location: Destination,
    pub kind: ReadFailureKind,
}

impl fmt::Display for ReadIncidentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.location, self.kind.as_str())
    }
}

/// What was learned about a registry's reads.
#[derive(Debug, Clone, PartialEq, Eq)]
// Made and applied at once, one at a time: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum ReadObservation {
    /// A destination stayed unconfirmed past the grace because of `failure`; `waiting` names
    /// one image whose verdict waits on it (the alert's example).
    Unreadable {
        at: DateTime<Utc>,
        failure: ReadFailure,
        waiting: crate::model::ExpectationKey,
    },
    /// A destination the incident held unconfirmed was read again.
    Readable { at: DateTime<Utc> },
}

/// A registry replwatch cannot read, from the first destination that stayed unconfirmed past
/// the grace until one is read again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIncident {
    pub key: ReadIncidentKey,
    pub opened_at: DateTime<Utc>,
    /// The latest failure seen.
    pub failure: ReadFailure,
    /// One image whose verdict waited on this registry when it opened.
    pub waiting: crate::model::ExpectationKey,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Alerts raised by this occurrence of the incident.
    pub alerts: BTreeSet<AlertKind>,
    /// Optimistic-concurrency version: 0 for an incident never stored.
    pub version: u64,
}

/// What one observation did to an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadTransition {
    pub changed: bool,
    pub raised: Option<AlertKind>,
}

impl ReadIncident {
    pub fn is_open(&self) -> bool {
        self.resolved_at.is_none()
    }

    /// Applies `observation` to `current` (the stored incident of its key, if any): an
    /// unreadable registry opens an incident (again, when the last one resolved); a readable
    /// one resolves an open incident. Returns the incident to write, if anything changed.
    pub fn observe(
        current: Option<ReadIncident>,
        observation: &ReadObservation,
    ) -> (Option<ReadIncident>, ReadTransition) {
        let unchanged = ReadTransition {
            changed: false,
            raised: None,
        };
        match (current, observation) {
            (
                current,
                ReadObservation::Unreadable {
                    at,
                    failure,
                    waiting,
                },
            ) => match current {
                Some(open) if open.is_open() => (Some(open), unchanged),
                current => {
                    let version = current.map_or(0, |c| c.version);
                    let incident = ReadIncident {
                        key: failure.incident_key(),
                        opened_at: *at,
                        failure: failure.clone(),
                        waiting: waiting.clone(),
                        resolved_at: None,
                        alerts: BTreeSet::from([AlertKind::Unconfirmed]),
                        version,
                    };
                    (
                        Some(incident),
                        ReadTransition {
                            changed: true,
                            raised: Some(AlertKind::Unconfirmed),
                        },
                    )
                }
            },
            (Some(mut open), ReadObservation::Readable { at }) if open.is_open() => {
                open.resolved_at = Some(*at);
                open.alerts.insert(AlertKind::Resolved);
                (
                    Some(open),
                    ReadTransition {
                        changed: true,
                        raised: Some(AlertKind::Resolved),
                    },
                )
            }
            (current, ReadObservation::Readable { .. }) => (current, unchanged),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, Digest, ExpectationKey, Region, RepositoryName, SourceImage};

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000, 0).expect("time") + TimeDelta::minutes(minutes)
    }

    fn partner() -> Destination {
        Destination::new(
            Region::parse("eu-west-1").expect("region"),
            AccountId::parse("222222222222").expect("account"),
        )
    }

    fn waiting() -> ExpectationKey {
        ExpectationKey {
            image: SourceImage {
                registry: Destination::new(
                    Region::parse("us-west-2").expect("region"),
                    AccountId::parse("111111111111").expect("account"),
                ),
                repository: RepositoryName::parse("team-a/web").expect("repository"),
                digest: Digest::parse(&format!("sha256:{}", "ab".repeat(32))).expect("digest"),
            },
            tag: Some("v1".into()),
            destination: partner(),
            occurrence: t(0),
        }
    }

    fn refused() -> ReadFailure {
        ReadFailure::new(
            partner(),
            &RegistryError {
                operation: "DescribeImages",
                resource: "eu-west-1/222222222222 team-a/web".into(),
                message: "AccessDeniedException: not authorized".into(),
                retryable: false,
            },
        )
    }

    #[test]
    fn retries_back_off_to_the_recheck_interval() {
        let waits: Vec<i64> = (1..=7).map(|n| retry_after(n).num_minutes()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 15, 15, 15]);
        assert_eq!(retry_after(u32::MAX), MAX_RETRY_AFTER);
    }

    #[test]
    fn an_unreadable_registry_alerts_once_until_it_is_read_again() {
        let unreadable = |at| ReadObservation::Unreadable {
            at,
            failure: refused(),
            waiting: waiting(),
        };
        let (opened, first) = ReadIncident::observe(None, &unreadable(t(35)));
        assert_eq!(first.raised, Some(AlertKind::Unconfirmed));
        let (still, again) = ReadIncident::observe(opened.clone(), &unreadable(t(50)));
        assert!(!again.changed, "another image waiting on it raises nothing");
        let (resolved, fixed) =
            ReadIncident::observe(still, &ReadObservation::Readable { at: t(60) });
        assert_eq!(fixed.raised, Some(AlertKind::Resolved));
        let resolved = resolved.expect("resolved incident");
        assert_eq!(resolved.resolved_at, Some(t(60)));
        let (_, quiet) = ReadIncident::observe(
            Some(resolved.clone()),
            &ReadObservation::Readable { at: t(61) },
        );
        assert!(!quiet.changed, "resolved once");
        let (reopened, second) = ReadIncident::observe(Some(resolved), &unreadable(t(90)));
        assert_eq!(second.raised, Some(AlertKind::Unconfirmed));
        let reopened = reopened.expect("reopened");
        assert_eq!(
            reopened.opened_at,
            t(90),
            "a new occurrence, with a new alert id"
        );
        assert!(reopened.is_open());
    }

    #[test]
    fn refusals_and_outages_are_separate_incidents() {
        let mut throttled = refused();
        throttled.kind = ReadFailureKind::Unavailable;
        assert_ne!(refused().incident_key(), throttled.incident_key());
        assert_eq!(
            ReadFailureKind::parse(ReadFailureKind::Refused.as_str()),
            Some(ReadFailureKind::Refused)
        );
    }
}
