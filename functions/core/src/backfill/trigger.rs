//! What starts a backfill on AWS, read from the `backfill-plan` function's input:
//!
//! - the CloudTrail `PutReplicationConfiguration` event (through EventBridge): plan only for
//!   the destinations the change added, compared with the configuration the last plan saw;
//! - a scheduled event: plan for every destination (a periodic catch-up, cheap when nothing
//!   is missing: inventories are read, nothing is copied);
//! - a manual invoke with a [`BackfillRequest`] (`aws lambda invoke --payload ...`), with the
//!   CLI's filters; the scheduled rules check is one too (`{"sinceConfigChange": true}`),
//!   which catches a rules change where no trail records `PutReplicationConfiguration`.
//!
//! A request with a field this build does not know is refused rather than half-understood: a
//! misspelt `repositoryPrefixes` must not turn into a backfill of every repository.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::backfill::plan::{BackfillFilters, TagPattern};
use crate::events::{EcrEvent, EventError, ParsedEvent, parse_event};
use crate::model::Destination;
use crate::rules::ReplicationConfiguration;

/// The `detail-type` of EventBridge Scheduler and scheduled rule events.
pub const SCHEDULED_EVENT: &str = "Scheduled Event";

/// A manual backfill, as the function's payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackfillRequest {
    #[serde(default)]
    pub repository_prefixes: Vec<String>,
    #[serde(default)]
    pub tag_patterns: Vec<TagPattern>,
    pub pushed_after: Option<DateTime<Utc>>,
    pub pushed_before: Option<DateTime<Utc>>,
    /// Destinations outside the configuration to copy to.
    #[serde(default)]
    pub destinations: Vec<Destination>,
    /// Copy even where ECR's native backfill would do.
    #[serde(default)]
    pub force_copy: bool,
    /// Plan and report, change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Plan only for the destinations the replication rules gained since the last plan (the
    /// rules record): what the scheduled rules check sends, so that a rules change is caught
    /// without a CloudTrail trail. Nothing added: one `DescribeRegistry`, nothing else.
    #[serde(default)]
    pub since_config_change: bool,
}

impl BackfillRequest {
    pub fn filters(&self) -> BackfillFilters {
        BackfillFilters {
            repository_prefixes: self.repository_prefixes.clone(),
            tag_patterns: self.tag_patterns.clone(),
            pushed_after: self.pushed_after,
            pushed_before: self.pushed_before,
        }
    }
}

/// Why `backfill-plan` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackfillTrigger {
    /// The replication rules of `registry` changed to `configuration`.
    ConfigurationChanged {
        event_id: String,
        registry: Destination,
        configuration: ReplicationConfiguration,
    },
    Scheduled {
        event_id: String,
    },
    Manual(BackfillRequest),
    /// An event that does not start a backfill (another API call, a failed
    /// `PutReplicationConfiguration`).
    Ignored {
        event_id: Option<String>,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("event {}: {}", .0.id.as_deref().unwrap_or("(no id)"), .0)]
    Event(EventError),
    #[error("backfill request: {0}")]
    Request(String),
}

/// Reads the function's input.
pub fn parse_trigger(input: &[u8]) -> Result<BackfillTrigger, TriggerError> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "detail-type")]
        detail_type: Option<String>,
        id: Option<String>,
    }
    let probe: Probe = serde_json::from_slice(input)
        .map_err(|e| TriggerError::Request(format!("not a JSON object: {e}")))?;
    match probe.detail_type.as_deref() {
        None => serde_json::from_slice(input)
            .map(BackfillTrigger::Manual)
            .map_err(|e| TriggerError::Request(e.to_string())),
        Some(SCHEDULED_EVENT) => Ok(BackfillTrigger::Scheduled {
            event_id: probe.id.unwrap_or_default(),
        }),
        Some(_) => match parse_event(input).map_err(TriggerError::Event)? {
            ParsedEvent::Handled(EcrEvent::ConfigurationChange(change)) => {
                Ok(BackfillTrigger::ConfigurationChanged {
                    event_id: change.envelope.id,
                    registry: change.registry,
                    configuration: change.configuration,
                })
            }
            ParsedEvent::Handled(other) => Ok(BackfillTrigger::Ignored {
                event_id: Some(other.envelope().id.clone()),
                reason: "image and replication events go to the tracking functions".into(),
            }),
            ParsedEvent::Skipped(skipped) => Ok(BackfillTrigger::Ignored {
                event_id: skipped.id,
                reason: skipped.reason,
            }),
        },
    }
}

/// The destinations of `current` that `previous` did not have; `None` when there is no
/// previous configuration to compare with (every destination is then treated as new: the
/// plan finds what each one lacks, which is nothing for those already in sync).
pub fn added_destinations(
    previous: Option<&ReplicationConfiguration>,
    current: &ReplicationConfiguration,
) -> Option<Vec<Destination>> {
    let previous = previous?.all_destinations();
    Some(
        current
            .all_destinations()
            .into_iter()
            .filter(|d| !previous.contains(d))
            .collect(),
    )
}

/// The destinations a backfill of `source` reads, each once: the rules' (only those `only`
/// names, when given: the ones a rules change added), then `extra` (a request's own), never the
/// source itself. The CLI and `backfill-plan` both select them here.
pub fn backfill_destinations(
    configuration: &ReplicationConfiguration,
    only: Option<&[Destination]>,
    extra: &[Destination],
    source: &Destination,
) -> Vec<Destination> {
    let mut destinations: Vec<Destination> = Vec::new();
    let ruled = configuration
        .all_destinations()
        .into_iter()
        .filter(|d| only.is_none_or(|only| only.contains(d)));
    for destination in ruled.chain(extra.iter().cloned()) {
        if destination != *source && !destinations.contains(&destination) {
            destinations.push(destination);
        }
    }
    destinations
}

/// The destinations of `request` that neither the replication rules nor `allowed` name: the
/// function copies only where replication goes or where its stack was told it may
/// (`BackfillAllowedDestinations`), so whoever may invoke it cannot point it at any account
/// that has a backfill role.
pub fn unlisted_destinations<'a>(
    request: &'a BackfillRequest,
    configuration: &ReplicationConfiguration,
    allowed: &[Destination],
) -> Vec<&'a Destination> {
    let named = configuration.all_destinations();
    request
        .destinations
        .iter()
        .filter(|d| !named.contains(d) && !allowed.contains(d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, Region};
    use crate::rules::{PREFIX_MATCH, ReplicationRule, RepositoryFilter};
    use crate::test_events::shared_event;

    fn dest(region: &str, account: &str) -> Destination {
        Destination::new(
            Region::parse(region).expect("region"),
            AccountId::parse(account).expect("account"),
        )
    }

    #[test]
    fn a_backfill_reads_each_destination_once_and_never_its_source() {
        let (source, a, b, c) = (
            dest("us-west-2", "111111111111"),
            dest("us-east-1", "111111111111"),
            dest("eu-west-1", "222222222222"),
            dest("ap-south-1", "333333333333"),
        );
        let rules = configuration(&[a.clone(), b.clone()]);
        // A request naming a ruled destination again, not next to it, and the source.
        let extra = [c.clone(), a.clone(), source.clone(), c.clone()];
        assert_eq!(
            backfill_destinations(&rules, None, &extra, &source),
            vec![a.clone(), b.clone(), c.clone()]
        );
        assert_eq!(
            backfill_destinations(&rules, Some(std::slice::from_ref(&b)), &[], &source),
            vec![b]
        );
    }

    #[test]
    fn a_request_may_name_only_the_rules_destinations_and_the_allowed_ones() {
        let (ruled, allowed, other) = (
            dest("us-east-1", "111111111111"),
            dest("eu-west-1", "222222222222"),
            dest("eu-west-1", "999999999999"),
        );
        let request = BackfillRequest {
            destinations: vec![ruled.clone(), allowed.clone(), other.clone()],
            ..BackfillRequest::default()
        };
        let rules = configuration(std::slice::from_ref(&ruled));
        assert_eq!(
            unlisted_destinations(&request, &rules, std::slice::from_ref(&allowed)),
            vec![&other]
        );
        assert_eq!(
            unlisted_destinations(&request, &rules, &[]),
            vec![&allowed, &other]
        );
    }

    fn configuration(destinations: &[Destination]) -> ReplicationConfiguration {
        ReplicationConfiguration {
            rules: vec![ReplicationRule {
                destinations: destinations.to_vec(),
                repository_filters: vec![RepositoryFilter {
                    filter: "team-a/".into(),
                    filter_type: PREFIX_MATCH.into(),
                }],
            }],
        }
    }

    #[test]
    fn a_configuration_change_names_the_registry_and_its_new_rules() {
        let trigger = parse_trigger(&shared_event(
            "cloudtrail-put-replication-configuration.json",
        ))
        .expect("parses");
        let BackfillTrigger::ConfigurationChanged {
            event_id,
            registry,
            configuration,
        } = trigger
        else {
            panic!("not a configuration change: {trigger:?}");
        };
        assert_eq!(event_id, "0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6");
        assert_eq!(registry, dest("us-west-2", "111111111111"));
        assert_eq!(
            configuration.all_destinations(),
            [
                dest("us-east-1", "111111111111"),
                dest("eu-west-1", "222222222222")
            ]
        );
    }

    #[test]
    fn image_events_and_schedules_are_told_apart() {
        assert!(matches!(
            parse_trigger(&shared_event("push-tagged.json")),
            Ok(BackfillTrigger::Ignored { .. })
        ));
        let scheduled =
            br#"{"id":"s-1","detail-type":"Scheduled Event","source":"aws.events","detail":{}}"#;
        assert_eq!(
            parse_trigger(scheduled),
            Ok(BackfillTrigger::Scheduled {
                event_id: "s-1".into()
            })
        );
    }

    #[test]
    fn a_manual_request_carries_the_filters_and_refuses_unknown_fields() {
        let trigger = parse_trigger(
            br#"{"repositoryPrefixes":["team-a/"],"tagPatterns":["v*"],"pushedAfter":"2026-01-01T00:00:00Z","destinations":[{"region":"eu-west-1","registryId":"222222222222"}],"dryRun":true}"#,
        )
        .expect("parses");
        let BackfillTrigger::Manual(request) = trigger else {
            panic!("not manual: {trigger:?}");
        };
        assert!(request.dry_run);
        assert_eq!(request.destinations, [dest("eu-west-1", "222222222222")]);
        let filters = request.filters();
        assert_eq!(filters.repository_prefixes, ["team-a/"]);
        assert!(filters.tag_patterns[0].matches("v1.2"));

        let misspelt = parse_trigger(br#"{"repositoryPrefix":["team-a/"]}"#);
        assert!(
            matches!(&misspelt, Err(TriggerError::Request(m)) if m.contains("repositoryPrefix")),
            "{misspelt:?}"
        );
        assert!(parse_trigger(b"[1,2]").is_err());
        assert_eq!(
            parse_trigger(b"{}"),
            Ok(BackfillTrigger::Manual(BackfillRequest::default()))
        );
    }

    #[test]
    fn only_destinations_the_change_added_are_new() {
        let east = dest("us-east-1", "111111111111");
        let europe = dest("eu-west-1", "222222222222");
        let before = configuration(std::slice::from_ref(&east));
        let after = configuration(&[east.clone(), europe.clone()]);
        assert_eq!(
            added_destinations(Some(&before), &after),
            Some(vec![europe])
        );
        assert_eq!(added_destinations(Some(&after), &before), Some(vec![]));
        assert_eq!(added_destinations(None, &after), None);
    }
}
