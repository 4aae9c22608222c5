//! A registry's replication configuration and the question it answers: which destinations
//! must receive an image pushed to repository R?
//!
//! ECR semantics, from the `PutReplicationConfiguration` reference: rules are evaluated for
//! every push; a rule matches when any of its `PREFIX_MATCH` filters is a prefix of the
//! repository name, and a rule without filters matches every repository; the image goes once
//! to each destination of every matching rule; a destination equal to the source registry is
//! never replicated to. Limits: 10 rules, 25 unique destinations, 100 filters per rule.

use serde::{Deserialize, Serialize};

use crate::model::{Destination, RepositoryName};

pub const MAX_RULES: usize = 10;
pub const MAX_UNIQUE_DESTINATIONS: usize = 25;
pub const MAX_FILTERS_PER_RULE: usize = 100;
pub const PREFIX_MATCH: &str = "PREFIX_MATCH";

/// The replication configuration of one registry in one Region, in the ECR API's JSON shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationConfiguration {
    #[serde(default)]
    pub rules: Vec<ReplicationRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationRule {
    #[serde(default)]
    pub destinations: Vec<Destination>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repository_filters: Vec<RepositoryFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryFilter {
    pub filter: String,
    pub filter_type: String,
}

/// A configuration ECR would refuse, or one this tool cannot interpret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigurationError {
    #[error("{count} rules; ECR allows at most {MAX_RULES}")]
    TooManyRules { count: usize },
    #[error("{count} unique destinations; ECR allows at most {MAX_UNIQUE_DESTINATIONS}")]
    TooManyDestinations { count: usize },
    #[error("rule {rule}: {count} repository filters; ECR allows at most {MAX_FILTERS_PER_RULE}")]
    TooManyFilters { rule: usize, count: usize },
    #[error("rule {rule} has no destinations")]
    NoDestinations { rule: usize },
    #[error("rule {rule}: filter type {filter_type:?} is not supported (only PREFIX_MATCH exists)")]
    UnsupportedFilterType { rule: usize, filter_type: String },
    #[error("rule {rule}: an empty repository filter")]
    EmptyFilter { rule: usize },
}

impl ReplicationRule {
    /// Whether an image pushed to `repository` is selected by this rule.
    pub fn matches(&self, repository: &RepositoryName) -> bool {
        self.repository_filters.is_empty()
            || self.repository_filters.iter().any(|f| {
                f.filter_type == PREFIX_MATCH && repository.as_str().starts_with(&f.filter)
            })
    }
}

impl ReplicationConfiguration {
    /// Parses the configuration JSON as `DescribeRegistry` returns it (or a file holding it).
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// Checks the limits and shapes ECR enforces; rule numbers in errors count from 1.
    pub fn validate(&self) -> Result<(), ConfigurationError> {
        if self.rules.len() > MAX_RULES {
            return Err(ConfigurationError::TooManyRules {
                count: self.rules.len(),
            });
        }
        for (index, rule) in self.rules.iter().enumerate() {
            let rule_number = index + 1;
            if rule.destinations.is_empty() {
                return Err(ConfigurationError::NoDestinations { rule: rule_number });
            }
            if rule.repository_filters.len() > MAX_FILTERS_PER_RULE {
                return Err(ConfigurationError::TooManyFilters {
                    rule: rule_number,
                    count: rule.repository_filters.len(),
                });
            }
            for filter in &rule.repository_filters {
                if filter.filter_type != PREFIX_MATCH {
                    return Err(ConfigurationError::UnsupportedFilterType {
                        rule: rule_number,
                        filter_type: filter.filter_type.clone(),
                    });
                }
                if filter.filter.is_empty() {
                    return Err(ConfigurationError::EmptyFilter { rule: rule_number });
                }
            }
        }
        let unique = self.all_destinations().len();
        if unique > MAX_UNIQUE_DESTINATIONS {
            return Err(ConfigurationError::TooManyDestinations { count: unique });
        }
        Ok(())
    }

    /// Every destination named by any rule, once each, in rule order.
    pub fn all_destinations(&self) -> Vec<Destination> {
        let mut seen = Vec::new();
        for destination in self.rules.iter().flat_map(|r| &r.destinations) {
            if !seen.contains(destination) {
                seen.push(destination.clone());
            }
        }
        seen
    }

    /// The destinations an image pushed to `repository` in the `source` registry must reach:
    /// the union of the destinations of every matching rule, deduplicated, in rule order,
    /// without the source registry itself.
    pub fn destinations_for(
        &self,
        source: &Destination,
        repository: &RepositoryName,
    ) -> Vec<Destination> {
        let mut selected: Vec<Destination> = Vec::new();
        for rule in self.rules.iter().filter(|r| r.matches(repository)) {
            for destination in &rule.destinations {
                if destination != source && !selected.contains(destination) {
                    selected.push(destination.clone());
                }
            }
        }
        selected
    }

    /// Destinations present here but not in `previous`: what a configuration change added,
    /// and so what has history to backfill.
    pub fn added_since(&self, previous: &ReplicationConfiguration) -> Vec<Destination> {
        let before = previous.all_destinations();
        self.all_destinations()
            .into_iter()
            .filter(|d| !before.contains(d))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, Region};

    fn dest(region: &str, account: &str) -> Destination {
        Destination::new(
            Region::parse(region).expect("region"),
            AccountId::parse(account).expect("account"),
        )
    }

    fn repo(name: &str) -> RepositoryName {
        RepositoryName::parse(name).expect("repository")
    }

    fn rule(destinations: &[Destination], filters: &[&str]) -> ReplicationRule {
        ReplicationRule {
            destinations: destinations.to_vec(),
            repository_filters: filters
                .iter()
                .map(|f| RepositoryFilter {
                    filter: (*f).to_owned(),
                    filter_type: PREFIX_MATCH.to_owned(),
                })
                .collect(),
        }
    }

    fn sample() -> ReplicationConfiguration {
        let path = crate::test_events::events_dir().join("replication-configuration.json");
        let bytes = std::fs::read(path).expect("sample configuration");
        ReplicationConfiguration::from_json(&bytes).expect("parses")
    }

    #[test]
    fn sample_configuration_selects_by_prefix_and_unions_rules() {
        let config = sample();
        config.validate().expect("valid");
        let source = dest("us-west-2", "111111111111");
        assert_eq!(
            config.destinations_for(&source, &repo("team-a/web")),
            vec![
                dest("us-east-1", "111111111111"),
                dest("eu-west-1", "222222222222"),
                dest("ap-southeast-2", "111111111111"),
            ]
        );
        // Only the filterless rule matches a repository outside team-a/.
        assert_eq!(
            config.destinations_for(&source, &repo("team-b/api")),
            vec![dest("ap-southeast-2", "111111111111")]
        );
    }

    #[test]
    fn prefix_match_is_a_plain_prefix_not_a_path_segment() {
        let d = dest("us-east-1", "111111111111");
        let config = ReplicationConfiguration {
            rules: vec![rule(std::slice::from_ref(&d), &["team"])],
        };
        let source = dest("us-west-2", "111111111111");
        assert_eq!(
            config.destinations_for(&source, &repo("team-a/web")),
            vec![d.clone()]
        );
        assert_eq!(config.destinations_for(&source, &repo("teamwork")), vec![d]);
        assert!(
            config
                .destinations_for(&source, &repo("my-team"))
                .is_empty()
        );
    }

    #[test]
    fn destinations_are_deduplicated_across_rules_and_the_source_is_never_one() {
        let source = dest("us-west-2", "111111111111");
        let a = dest("us-east-1", "111111111111");
        let config = ReplicationConfiguration {
            rules: vec![
                rule(&[a.clone(), source.clone()], &["web"]),
                rule(std::slice::from_ref(&a), &[]),
            ],
        };
        assert_eq!(config.destinations_for(&source, &repo("web")), vec![a]);
    }

    #[test]
    fn no_rules_means_no_destinations() {
        let config = ReplicationConfiguration::default();
        config.validate().expect("an empty configuration is valid");
        assert!(
            config
                .destinations_for(&dest("us-west-2", "111111111111"), &repo("web"))
                .is_empty()
        );
    }

    #[test]
    fn limits_are_enforced_with_clear_errors() {
        let d = dest("us-east-1", "111111111111");
        let too_many_rules = ReplicationConfiguration {
            rules: vec![rule(std::slice::from_ref(&d), &[]); 11],
        };
        assert_eq!(
            too_many_rules.validate(),
            Err(ConfigurationError::TooManyRules { count: 11 })
        );

        let many: Vec<Destination> = (0..26)
            .map(|i| dest("us-east-1", &format!("{:012}", 100_000_000_000u64 + i)))
            .collect();
        let too_many_destinations = ReplicationConfiguration {
            rules: vec![rule(&many[..13], &[]), rule(&many[13..], &[])],
        };
        let err = too_many_destinations
            .validate()
            .expect_err("26 destinations");
        assert_eq!(err, ConfigurationError::TooManyDestinations { count: 26 });
        assert!(err.to_string().contains("at most 25"));

        // 25 unique destinations spread over rules, with repeats, is fine.
        let repeated = ReplicationConfiguration {
            rules: vec![rule(&many[..25], &[]), rule(&many[..25], &[])],
        };
        repeated.validate().expect("25 unique destinations");

        let filters: Vec<String> = (0..101).map(|i| format!("r{i}")).collect();
        let filter_refs: Vec<&str> = filters.iter().map(String::as_str).collect();
        let too_many_filters = ReplicationConfiguration {
            rules: vec![
                rule(std::slice::from_ref(&d), &[]),
                rule(std::slice::from_ref(&d), &filter_refs),
            ],
        };
        assert_eq!(
            too_many_filters.validate(),
            Err(ConfigurationError::TooManyFilters {
                rule: 2,
                count: 101
            })
        );
        let hundred = ReplicationConfiguration {
            rules: vec![rule(std::slice::from_ref(&d), &filter_refs[..100])],
        };
        hundred
            .validate()
            .expect("100 filters is the limit, not over it");
    }

    #[test]
    fn unsupported_filter_type_and_empty_rules_are_refused() {
        let d = dest("us-east-1", "111111111111");
        let mut r = rule(std::slice::from_ref(&d), &["web"]);
        r.repository_filters[0].filter_type = "REGEX".into();
        let config = ReplicationConfiguration { rules: vec![r] };
        assert!(matches!(
            config.validate(),
            Err(ConfigurationError::UnsupportedFilterType { rule: 1, .. })
        ));
        let empty = ReplicationConfiguration {
            rules: vec![rule(&[], &[])],
        };
        assert_eq!(
            empty.validate(),
            Err(ConfigurationError::NoDestinations { rule: 1 })
        );
    }

    #[test]
    fn invalid_destination_values_fail_to_parse() {
        let bad = br#"{"rules":[{"destinations":[{"region":"us-east-1","registryId":"12"}]}]}"#;
        let err = ReplicationConfiguration::from_json(bad).expect_err("bad account id");
        assert!(err.to_string().contains("12 digits"), "{err}");
    }

    #[test]
    fn added_since_lists_only_new_destinations() {
        let a = dest("us-east-1", "111111111111");
        let b = dest("eu-west-1", "222222222222");
        let before = ReplicationConfiguration {
            rules: vec![rule(std::slice::from_ref(&a), &[])],
        };
        let after = ReplicationConfiguration {
            rules: vec![rule(&[a.clone(), b.clone()], &[])],
        };
        assert_eq!(after.added_since(&before), vec![b]);
        assert!(before.added_since(&after).is_empty());
    }
}
