//! Tags that must converge: one incident per (repository, tag, destination) while a tag names
//! another image in a destination than in the source.
//!
//! The invariant a user holds is *in every destination the rules select, a tag names the same
//! image as in the source*. Replication keeps it for each push, but not always for the tag: an
//! immutable destination that already holds the tag keeps it on its own image (ECR then
//! replicates the image untagged); in a mutable one, an older build whose replication
//! finishes after a newer one's takes the tag back, and the Region serves the old image for
//! good; and anyone with write access can move a tag there by hand. None of these is a
//! failure of one push: a tag pushed five times into an immutable partner is one problem, not
//! five. So the problem belongs to the tag in that destination, and is a [`TagIncident`]:
//!
//! - it opens when the check of the source's newest push of the tag (past its deadline) finds
//!   the destination's tag on another image, and raises one alert (TAG_LOST for an immutable
//!   destination, TAG_DIVERGED otherwise) naming both digests and the cause;
//! - while open, later pushes of the tag that meet the same problem only update what it names
//!   (no new alert), and the sweep looks again every recheck interval;
//! - it resolves, with a RESOLVED notice, once the tag names the same image in both
//!   registries again, the source no longer has the tag, or the rules no longer replicate the
//!   repository there; a later divergence is a new incident, with a new alert id.
//!
//! Like a destination record, an incident is written conditionally on its version, with the
//! alert it raises in the same write, so concurrent sweeps and handlers raise it once.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Digest, TagKey};
use crate::tracking::{AlertKind, TrackingPolicy};

/// Why a tag names another image in the destination than in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DivergenceCause {
    /// The destination's tags are immutable and the tag already named another image there:
    /// ECR replicated the image without it.
    ImmutableHeld,
    /// Mutable destination: the image the tag names there is an older push of the same tag
    /// whose replication finished after the newer one's.
    OlderReplicationLast,
    /// Mutable destination: the tag names an image no earlier push of the tag explains; it
    /// was changed there (by hand, or by a copy replwatch did not see).
    ChangedInDestination,
}

impl DivergenceCause {
    pub fn as_str(self) -> &'static str {
        match self {
            DivergenceCause::ImmutableHeld => "IMMUTABLE_HELD",
            DivergenceCause::OlderReplicationLast => "OLDER_REPLICATION_LAST",
            DivergenceCause::ChangedInDestination => "CHANGED_IN_DESTINATION",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            DivergenceCause::ImmutableHeld,
            DivergenceCause::OlderReplicationLast,
            DivergenceCause::ChangedInDestination,
        ]
        .into_iter()
        .find(|c| c.as_str() == value)
    }

    /// The alert an incident of this cause opens with.
    pub fn alert(self) -> AlertKind {
        match self {
            DivergenceCause::ImmutableHeld => AlertKind::TagLost,
            DivergenceCause::OlderReplicationLast | DivergenceCause::ChangedInDestination => {
                AlertKind::TagDiverged
            }
        }
    }
}

/// What a check found about one tag in one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    pub cause: DivergenceCause,
    /// The image the source's tag names: its newest push.
    pub expected: Digest,
    /// The image the destination's tag names instead (none: the tag is not there).
    pub found: Option<Digest>,
}

/// Why an incident is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResolutionReason {
    /// The tag names the same image in the destination as in the source.
    Converged,
    /// The source no longer has the tag: there is nothing left to converge to.
    TagGoneFromSource,
    /// The rules no longer replicate the repository to the destination.
    NoLongerReplicated,
}

impl ResolutionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResolutionReason::Converged => "CONVERGED",
            ResolutionReason::TagGoneFromSource => "TAG_GONE_FROM_SOURCE",
            ResolutionReason::NoLongerReplicated => "NO_LONGER_REPLICATED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            ResolutionReason::Converged,
            ResolutionReason::TagGoneFromSource,
            ResolutionReason::NoLongerReplicated,
        ]
        .into_iter()
        .find(|r| r.as_str() == value)
    }

    /// The end of the sentence "the incident is over: …".
    pub fn describe(self) -> &'static str {
        match self {
            ResolutionReason::Converged => {
                "the tag names the same image in the destination as in the source again"
            }
            ResolutionReason::TagGoneFromSource => {
                "the tag no longer exists in the source, so there is nothing to converge to"
            }
            ResolutionReason::NoLongerReplicated => {
                "the replication rules no longer replicate this repository to the destination"
            }
        }
    }
}

/// What was learned about one tag in one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagObservation {
    /// The tag names another image there than in the source (or is missing there).
    Diverged {
        at: DateTime<Utc>,
        divergence: Divergence,
    },
    /// Nothing is wrong with the tag there any more.
    Settled {
        at: DateTime<Utc>,
        reason: ResolutionReason,
    },
}

/// The incident of one tag in one destination: open while it diverges, then resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagIncident {
    pub key: TagKey,
    /// When this incident opened: with the key, what names it (and its alerts' ids).
    pub opened_at: DateTime<Utc>,
    pub divergence: Divergence,
    pub resolved: Option<(DateTime<Utc>, ResolutionReason)>,
    pub last_checked_at: DateTime<Utc>,
    /// When the sweep looks again, while open.
    pub next_check_at: Option<DateTime<Utc>>,
    /// When DynamoDB's TTL may remove it: only once resolved (an open incident never expires).
    pub expires_at: Option<DateTime<Utc>>,
    /// The alerts this incident raised (its opening kind, then RESOLVED).
    pub alerts: BTreeSet<AlertKind>,
    /// Optimistic-concurrency version: 0 for an incident never stored.
    pub version: u64,
}

/// What one observation did to an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentTransition {
    /// Whether the incident must be written.
    pub changed: bool,
    /// The alert this observation raises: the opening kind, or RESOLVED.
    pub raised: Option<AlertKind>,
}

impl TagIncident {
    /// The incident a first divergence of `key` opens (not stored yet).
    pub fn open(
        key: TagKey,
        at: DateTime<Utc>,
        divergence: Divergence,
        policy: &TrackingPolicy,
    ) -> Self {
        Self {
            key,
            opened_at: at,
            divergence,
            resolved: None,
            last_checked_at: at,
            next_check_at: Some(at + policy.recheck_interval),
            expires_at: None,
            alerts: BTreeSet::new(),
            version: 0,
        }
    }

    pub fn is_open(&self) -> bool {
        self.resolved.is_none()
    }

    /// Applies `observation`. A divergence opens the incident (a resolved one opens again as
    /// a new incident, with a new opening time) and raises its alert once; while open, it
    /// only updates what the incident names. Settling an open incident resolves it with a
    /// RESOLVED notice; settling a closed one changes nothing.
    pub fn apply(
        &mut self,
        observation: &TagObservation,
        policy: &TrackingPolicy,
    ) -> IncidentTransition {
        let unchanged = IncidentTransition {
            changed: false,
            raised: None,
        };
        match observation {
            TagObservation::Diverged { at, divergence } if self.is_open() => {
                // Checks of the same incident come in any order: only a later one moves it.
                if *at < self.last_checked_at {
                    return unchanged;
                }
                // Written even when it names the same images: the check time moves the next one.
                self.divergence = divergence.clone();
                self.last_checked_at = *at;
                self.next_check_at = Some(*at + policy.recheck_interval);
                // One alert per incident, whatever its cause turns out to be later.
                let raised = if self.alerts.iter().any(|k| k.is_problem()) {
                    None
                } else {
                    self.raise(divergence.cause.alert())
                };
                IncidentTransition {
                    changed: true,
                    raised,
                }
            }
            TagObservation::Diverged { at, divergence } => {
                let version = self.version;
                *self = TagIncident::open(self.key.clone(), *at, divergence.clone(), policy);
                self.version = version;
                let raised = self.raise(divergence.cause.alert());
                IncidentTransition {
                    changed: true,
                    raised,
                }
            }
            TagObservation::Settled { at, reason } if self.is_open() && self.version > 0 => {
                self.resolved = Some((*at, *reason));
                self.last_checked_at = self.last_checked_at.max(*at);
                self.next_check_at = None;
                self.expires_at = DateTime::from_timestamp((*at + policy.retention).timestamp(), 0);
                IncidentTransition {
                    changed: true,
                    raised: self.raise(AlertKind::Resolved),
                }
            }
            TagObservation::Settled { .. } => unchanged,
        }
    }

    fn raise(&mut self, kind: AlertKind) -> Option<AlertKind> {
        self.alerts.insert(kind).then_some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, Destination, Region, RepositoryName};
    use chrono::{TimeDelta, TimeZone};

    fn t(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 10, 0, 0)
            .single()
            .expect("time")
            + TimeDelta::minutes(minutes)
    }

    fn digest(byte: &str) -> Digest {
        Digest::parse(&format!("sha256:{}", byte.repeat(32))).expect("digest")
    }

    fn key() -> TagKey {
        let registry = |region: &str, account: &str| {
            Destination::new(
                Region::parse(region).expect("region"),
                AccountId::parse(account).expect("account"),
            )
        };
        TagKey {
            registry: registry("us-west-2", "111111111111"),
            repository: RepositoryName::parse("ci/app").expect("repository"),
            tag: "latest".into(),
            destination: registry("eu-west-1", "222222222222"),
        }
    }

    fn held(expected: &str) -> TagObservation {
        TagObservation::Diverged {
            at: t(0),
            divergence: Divergence {
                cause: DivergenceCause::ImmutableHeld,
                expected: digest(expected),
                found: Some(digest("ff")),
            },
        }
    }

    fn at(observation: TagObservation, minutes: i64) -> TagObservation {
        match observation {
            TagObservation::Diverged { divergence, .. } => TagObservation::Diverged {
                at: t(minutes),
                divergence,
            },
            TagObservation::Settled { reason, .. } => TagObservation::Settled {
                at: t(minutes),
                reason,
            },
        }
    }

    #[test]
    fn a_tag_pushed_again_and_again_into_a_held_destination_is_one_incident() {
        let policy = TrackingPolicy::default();
        let mut incident = TagIncident::open(key(), t(0), divergence("aa"), &policy);
        let first = incident.apply(&held("aa"), &policy);
        assert_eq!(first.raised, Some(AlertKind::TagLost));
        incident.version = 1;
        for (minute, build) in [(5, "bb"), (9, "cc"), (12, "dd"), (20, "ee")] {
            let later = incident.apply(&at(held(build), minute), &policy);
            assert_eq!(later.raised, None, "{build}: the same incident");
            assert_eq!(incident.divergence.expected, digest(build));
        }
        assert_eq!(incident.opened_at, t(0));
        assert_eq!(incident.next_check_at, Some(t(35)));
    }

    fn divergence(expected: &str) -> Divergence {
        Divergence {
            cause: DivergenceCause::ImmutableHeld,
            expected: digest(expected),
            found: Some(digest("ff")),
        }
    }

    #[test]
    fn converging_resolves_once_and_a_new_divergence_is_a_new_incident() {
        let policy = TrackingPolicy::default();
        let mut incident = TagIncident::open(key(), t(0), divergence("aa"), &policy);
        incident.apply(&held("aa"), &policy);
        incident.version = 1;
        let settled = TagObservation::Settled {
            at: t(15),
            reason: ResolutionReason::Converged,
        };
        let resolved = incident.apply(&settled, &policy);
        assert_eq!(resolved.raised, Some(AlertKind::Resolved));
        assert_eq!(incident.next_check_at, None);
        assert_eq!(incident.expires_at, Some(t(15) + TimeDelta::days(14)));
        incident.version = 2;
        assert!(!incident.apply(&at(settled, 30), &policy).changed);
        let again = incident.apply(&at(held("bb"), 40), &policy);
        assert_eq!(again.raised, Some(AlertKind::TagLost));
        assert_eq!(incident.opened_at, t(40), "a new incident, with its own id");
        assert!(incident.is_open());
        assert_eq!(incident.version, 2, "written over the resolved one");
    }

    #[test]
    fn an_older_check_does_not_move_an_incident_back() {
        let policy = TrackingPolicy::default();
        let mut incident = TagIncident::open(key(), t(0), divergence("aa"), &policy);
        incident.apply(&held("aa"), &policy);
        incident.version = 1;
        incident.apply(&at(held("bb"), 10), &policy);
        let stale = incident.apply(&at(held("aa"), 5), &policy);
        assert!(!stale.changed);
        assert_eq!(incident.divergence.expected, digest("bb"));
    }

    #[test]
    fn causes_and_reasons_round_trip_their_names() {
        for cause in [
            DivergenceCause::ImmutableHeld,
            DivergenceCause::OlderReplicationLast,
            DivergenceCause::ChangedInDestination,
        ] {
            assert_eq!(DivergenceCause::parse(cause.as_str()), Some(cause));
        }
        assert_eq!(
            DivergenceCause::OlderReplicationLast.alert(),
            AlertKind::TagDiverged
        );
        for reason in [
            ResolutionReason::Converged,
            ResolutionReason::TagGoneFromSource,
            ResolutionReason::NoLongerReplicated,
        ] {
            assert_eq!(ResolutionReason::parse(reason.as_str()), Some(reason));
        }
    }
}
