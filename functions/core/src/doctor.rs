//! The preflight of a replication setup (`replwatch doctor`): from what was read about the
//! source registry and each destination, the problems that make images fail to arrive, arrive
//! with other settings, or arrive without replwatch hearing of it, each with a severity and the
//! fix.
//!
//! Pure: the CLI reads the facts (a fact it could not read is reported as a warning naming the
//! call and the error, never taken as fine) and prints the report. The checks, per the ECR user
//! guide's replication considerations:
//! - `limits`: what `PutReplicationConfiguration` refuses (10 rules, 25 unique destinations,
//!   100 `PREFIX_MATCH` filters per rule), destinations in another partition (never
//!   replicated) or equal to the source (ignored);
//! - `registry-policy`: a cross-account destination registry's permissions policy must allow
//!   the source account `ecr:ReplicateImage`, and `ecr:CreateRepository` for repositories
//!   replication has to create;
//! - `chained-replication`: ECR never replicates a replicated image again, so a destination's
//!   own rule that sends the source's repositories on to a third registry never fires for them;
//! - `creation-template`: without a repository creation template `appliedFor: REPLICATION`
//!   covering them, repositories replication creates get ECR's defaults, not the source's
//!   settings;
//! - `event-forwarding`: each destination account and Region needs the rule that forwards
//!   `ECR Replication Action` events to the central bus, or arrivals are only seen by the sweep;
//! - `reader-role`: the deployed stack reads other accounts through a role it must be able to
//!   assume with its external id.

use std::fmt;

use serde::Serialize;

use crate::model::Destination;
use crate::registry_policy::RegistryPolicy;
use crate::rules::{
    MAX_FILTERS_PER_RULE, MAX_RULES, MAX_UNIQUE_DESTINATIONS, PREFIX_MATCH,
    ReplicationConfiguration, ReplicationRule,
};

/// How bad a finding is; the report is sorted worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Images will not arrive, or arrive unseen.
    Error,
    /// Images arrive, but not as expected (settings, chaining), or a check could not run.
    Warning,
    /// Worth knowing; nothing to fix.
    Info,
    /// The check ran and found nothing.
    Ok,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
            Severity::Ok => "ok",
        }
    }
}

/// Which check produced a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    Limits,
    RegistryPolicy,
    ChainedReplication,
    CreationTemplate,
    EventForwarding,
    ReaderRole,
}

impl Check {
    pub const ALL: [Check; 6] = [
        Check::Limits,
        Check::RegistryPolicy,
        Check::ChainedReplication,
        Check::CreationTemplate,
        Check::EventForwarding,
        Check::ReaderRole,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::Limits => "limits",
            Check::RegistryPolicy => "registry-policy",
            Check::ChainedReplication => "chained-replication",
            Check::CreationTemplate => "creation-template",
            Check::EventForwarding => "event-forwarding",
            Check::ReaderRole => "reader-role",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoctorFinding {
    pub severity: Severity,
    pub check: Check,
    /// What it is about: `source`, a destination `REGION/ACCOUNT`, or an account.
    pub subject: String,
    pub problem: String,
    /// What to do; empty for `ok` and `info`.
    pub fix: String,
}

/// Something read from AWS for a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact<T> {
    Read(T),
    /// The read failed: the AWS call, the resource and the error, as the user should see them.
    Unreadable(String),
    /// Not read, and why (a missing option, say).
    NotChecked(String),
}

/// A repository creation template as `DescribeRepositoryCreationTemplates` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreationTemplate {
    /// A repository name prefix, or `ROOT` for every repository.
    pub prefix: String,
    /// `REPLICATION`, `PULL_THROUGH_CACHE`, `CREATE_ON_PUSH`.
    pub applied_for: Vec<String>,
}

/// The EventBridge rule of a destination account and Region that targets the central bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardingRule {
    pub name: String,
    pub enabled: bool,
    /// Its event pattern admits `ECR Replication Action` events from `aws.ecr`.
    pub forwards_replication_events: bool,
}

/// Everything read about one destination registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationFacts {
    pub destination: Destination,
    /// The registry permissions policy text (`None`: the registry has none). Only read for
    /// cross-account destinations.
    pub registry_policy: Fact<Option<String>>,
    /// The destination registry's own replication configuration in that Region.
    pub replication_configuration: Fact<ReplicationConfiguration>,
    pub creation_templates: Fact<Vec<CreationTemplate>>,
    /// The rules of the destination's default bus that target the central bus.
    pub forwarding_rules: Fact<Vec<ForwardingRule>>,
    /// Assuming the stack's reader role in the destination account (cross-account only):
    /// `Read(())` when it worked.
    pub reader_role: Fact<()>,
}

/// The doctor's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoctorReport {
    pub source: Destination,
    /// Worst first, then by check and subject.
    pub findings: Vec<DoctorFinding>,
}

impl DoctorReport {
    /// Whether anything needs fixing (an error or a warning).
    pub fn healthy(&self) -> bool {
        !self
            .findings
            .iter()
            .any(|f| matches!(f.severity, Severity::Error | Severity::Warning))
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

/// Runs every check.
pub fn diagnose(
    source: &Destination,
    configuration: &ReplicationConfiguration,
    destinations: &[DestinationFacts],
) -> DoctorReport {
    let mut findings = limits(source, configuration);
    for facts in destinations {
        let subject = facts.destination.to_string();
        let mut push = |severity, check, problem: String, fix: String| {
            findings.push(DoctorFinding {
                severity,
                check,
                subject: subject.clone(),
                problem,
                fix,
            })
        };
        if facts.destination.registry_id != source.registry_id {
            for (severity, problem, fix) in registry_policy(source, configuration, facts) {
                push(severity, Check::RegistryPolicy, problem, fix);
            }
        }
        for (severity, problem, fix) in chaining(source, configuration, facts) {
            push(severity, Check::ChainedReplication, problem, fix);
        }
        for (severity, problem, fix) in creation_templates(configuration, facts) {
            push(severity, Check::CreationTemplate, problem, fix);
        }
        for (severity, problem, fix) in forwarding(facts) {
            push(severity, Check::EventForwarding, problem, fix);
        }
    }
    findings.extend(reader_roles(source, destinations));
    findings
        .sort_by(|a, b| (a.severity, a.check, &a.subject).cmp(&(b.severity, b.check, &b.subject)));
    // A check that could not run for one reason is said once, not once per destination.
    findings.dedup_by(|a, b| {
        a.severity == Severity::Info && a.check == b.check && a.problem == b.problem
    });
    DoctorReport {
        source: source.clone(),
        findings,
    }
}

type Line = (Severity, String, String);

fn ok(problem: impl Into<String>) -> Line {
    (Severity::Ok, problem.into(), String::new())
}

/// A fact that was not read: a warning naming the failed call, or a note on what would let it run.
fn unread<T>(fact: &Fact<T>, check: Check) -> Option<Line> {
    match fact {
        Fact::Read(_) => None,
        Fact::Unreadable(error) => Some((
            Severity::Warning,
            format!("could not check: {error}"),
            format!(
                "give the credentials (or the role of --role-name in that account) read access \
                 for the {check} check, then run again"
            ),
        )),
        Fact::NotChecked(why) => {
            Some((Severity::Info, format!("not checked: {why}"), String::new()))
        }
    }
}

fn limits(source: &Destination, configuration: &ReplicationConfiguration) -> Vec<DoctorFinding> {
    let mut lines: Vec<Line> = Vec::new();
    let put = format!(
        "correct the configuration and apply it with `aws ecr put-replication-configuration \
         --region {}`",
        source.region
    );
    if configuration.rules.is_empty() {
        lines.push((
            Severity::Info,
            "the registry has no replication rules: nothing is replicated".into(),
            String::new(),
        ));
    }
    if configuration.rules.len() > MAX_RULES {
        lines.push((
            Severity::Error,
            format!(
                "{} rules; ECR accepts at most {MAX_RULES}",
                configuration.rules.len()
            ),
            format!("merge rules that share destinations; {put}"),
        ));
    }
    let unique = configuration.all_destinations().len();
    if unique > MAX_UNIQUE_DESTINATIONS {
        lines.push((
            Severity::Error,
            format!("{unique} unique destinations; ECR accepts at most {MAX_UNIQUE_DESTINATIONS}"),
            format!("reach the others with `replwatch backfill --destination`; {put}"),
        ));
    }
    for (index, rule) in configuration.rules.iter().enumerate() {
        let number = index + 1;
        if rule.destinations.is_empty() {
            lines.push((
                Severity::Error,
                format!("rule {number} has no destinations"),
                put.clone(),
            ));
        }
        if rule.repository_filters.len() > MAX_FILTERS_PER_RULE {
            lines.push((
                Severity::Error,
                format!(
                    "rule {number} has {} repository filters; ECR accepts at most \
                     {MAX_FILTERS_PER_RULE}",
                    rule.repository_filters.len()
                ),
                format!("use shorter prefixes or split the rule; {put}"),
            ));
        }
        for filter in &rule.repository_filters {
            if filter.filter_type != PREFIX_MATCH {
                lines.push((
                    Severity::Error,
                    format!(
                        "rule {number}: filter type {:?}; only PREFIX_MATCH exists",
                        filter.filter_type
                    ),
                    put.clone(),
                ));
            } else if filter.filter.is_empty() {
                lines.push((
                    Severity::Error,
                    format!("rule {number}: an empty repository filter"),
                    format!("drop the filter list to select every repository; {put}"),
                ));
            }
        }
        for destination in &rule.destinations {
            if destination == source {
                lines.push((
                    Severity::Warning,
                    format!("rule {number} names the source registry {destination} itself: ECR ignores it"),
                    format!("remove that destination; {put}"),
                ));
            } else if destination.region.partition() != source.region.partition() {
                lines.push((
                    Severity::Error,
                    format!(
                        "rule {number} names {destination}, in partition {}: ECR does not \
                         replicate across partitions ({})",
                        destination.region.partition(),
                        source.region.partition()
                    ),
                    format!(
                        "remove it and copy with `replwatch backfill --destination {destination}` \
                         using that partition's credentials; {put}"
                    ),
                ));
            }
        }
    }
    if lines.is_empty() {
        lines.push(ok(format!(
            "{} of {MAX_RULES} rules, {unique} of {MAX_UNIQUE_DESTINATIONS} unique destinations: \
             within ECR's limits",
            configuration.rules.len()
        )));
    }
    lines
        .into_iter()
        .map(|(severity, problem, fix)| DoctorFinding {
            severity,
            check: Check::Limits,
            subject: format!("source {source}"),
            problem,
            fix,
        })
        .collect()
}

/// The repository name prefixes of the source's rules that send images to `destination`; an
/// empty prefix when a rule without filters does (every repository).
fn prefixes_to(configuration: &ReplicationConfiguration, destination: &Destination) -> Vec<String> {
    let mut prefixes: Vec<String> = Vec::new();
    for rule in configuration
        .rules
        .iter()
        .filter(|r| r.destinations.contains(destination))
    {
        if rule.repository_filters.is_empty() {
            return vec![String::new()];
        }
        for filter in &rule.repository_filters {
            if !prefixes.contains(&filter.filter) {
                prefixes.push(filter.filter.clone());
            }
        }
    }
    prefixes
}

fn describe_prefix(prefix: &str) -> String {
    if prefix.is_empty() {
        "every repository".into()
    } else {
        format!("repositories {prefix}*")
    }
}

fn registry_policy(
    source: &Destination,
    configuration: &ReplicationConfiguration,
    facts: &DestinationFacts,
) -> Vec<Line> {
    let destination = &facts.destination;
    let partition = destination.region.partition();
    let repositories = format!(
        "arn:{partition}:ecr:{}:{}:repository/*",
        destination.region, destination.registry_id
    );
    let policy_fix = format!(
        "in account {}, `aws ecr put-registry-policy --region {} --policy-text` with a statement \
         allowing {{\"AWS\": \"arn:{partition}:iam::{}:root\"}} the actions ecr:ReplicateImage and \
         ecr:CreateRepository on {repositories}",
        destination.registry_id, destination.region, source.registry_id
    );
    let text = match &facts.registry_policy {
        Fact::Read(Some(text)) => text,
        Fact::Read(None) => {
            return vec![(
                Severity::Error,
                format!(
                    "no registry permissions policy: ECR refuses to replicate from account {}",
                    source.registry_id
                ),
                policy_fix,
            )];
        }
        other => return unread(other, Check::RegistryPolicy).into_iter().collect(),
    };
    let policy = match RegistryPolicy::parse(text) {
        Ok(policy) => policy,
        Err(e) => return vec![(Severity::Error, e.to_string(), policy_fix)],
    };
    let mut lines = Vec::new();
    let mut conditional = false;
    for (action, severity, consequence) in [
        (
            "ecr:ReplicateImage",
            Severity::Error,
            "no image from the source can arrive",
        ),
        (
            "ecr:CreateRepository",
            Severity::Warning,
            "images arrive only in repositories that already exist there",
        ),
    ] {
        let denied: Vec<String> = prefixes_to(configuration, destination)
            .into_iter()
            .filter(|prefix| {
                let resource = format!(
                    "arn:{partition}:ecr:{}:{}:repository/{prefix}",
                    destination.region, destination.registry_id
                );
                let verdict = policy.evaluate(source.registry_id.as_str(), action, &resource);
                conditional |= verdict.allowed && verdict.conditional;
                !verdict.allowed
            })
            .collect();
        if !denied.is_empty() {
            let what: Vec<String> = denied.iter().map(|p| describe_prefix(p)).collect();
            lines.push((
                severity,
                format!(
                    "the registry policy does not allow account {} {action} for {}: {consequence}",
                    source.registry_id,
                    what.join(", ")
                ),
                policy_fix.clone(),
            ));
        }
    }
    if lines.is_empty() {
        let note = if conditional {
            " (under conditions this check does not evaluate)"
        } else {
            ""
        };
        lines.push(ok(format!(
            "the registry policy allows account {} to replicate and create repositories{note}",
            source.registry_id
        )));
    }
    lines
}

/// Whether some repository name can match both rules.
fn rules_overlap(a: &ReplicationRule, b: &ReplicationRule) -> bool {
    a.repository_filters.is_empty()
        || b.repository_filters.is_empty()
        || a.repository_filters.iter().any(|fa| {
            b.repository_filters
                .iter()
                .any(|fb| fa.filter.starts_with(&fb.filter) || fb.filter.starts_with(&fa.filter))
        })
}

fn chaining(
    source: &Destination,
    configuration: &ReplicationConfiguration,
    facts: &DestinationFacts,
) -> Vec<Line> {
    let destination = &facts.destination;
    let onward = match &facts.replication_configuration {
        Fact::Read(onward) => onward,
        other => {
            return unread(other, Check::ChainedReplication)
                .into_iter()
                .collect();
        }
    };
    let inbound: Vec<&ReplicationRule> = configuration
        .rules
        .iter()
        .filter(|r| r.destinations.contains(destination))
        .collect();
    let mut lines = Vec::new();
    for (index, rule) in onward.rules.iter().enumerate() {
        let Some(feeding) = inbound.iter().find(|r| rules_overlap(r, rule)) else {
            continue;
        };
        for next in &rule.destinations {
            if next == destination || next == source {
                continue;
            }
            // Reached directly from the source for these repositories: nothing is lost.
            let direct = configuration
                .rules
                .iter()
                .any(|r| r.destinations.contains(next) && rules_overlap(r, feeding));
            if direct {
                continue;
            }
            let scope: Vec<String> = if rule.repository_filters.is_empty() {
                vec![describe_prefix("")]
            } else {
                rule.repository_filters
                    .iter()
                    .map(|f| describe_prefix(&f.filter))
                    .collect()
            };
            lines.push((
                Severity::Warning,
                format!(
                    "rule {} of {destination} sends {} on to {next}, but images that reach \
                     {destination} by replication from {source} are never replicated again \
                     (ECR does not chain replication): they will not reach {next}",
                    index + 1,
                    scope.join(", ")
                ),
                format!(
                    "add {next} to the source's rules (`aws ecr put-replication-configuration \
                     --region {}` in account {})",
                    source.region, source.registry_id
                ),
            ));
        }
    }
    if lines.is_empty() {
        lines.push(ok(format!(
            "no rule of {destination} expects images replicated from the source to go further"
        )));
    }
    lines
}

fn creation_templates(
    configuration: &ReplicationConfiguration,
    facts: &DestinationFacts,
) -> Vec<Line> {
    let destination = &facts.destination;
    let templates = match &facts.creation_templates {
        Fact::Read(templates) => templates,
        other => return unread(other, Check::CreationTemplate).into_iter().collect(),
    };
    let for_replication: Vec<&CreationTemplate> = templates
        .iter()
        .filter(|t| t.applied_for.iter().any(|a| a == "REPLICATION"))
        .collect();
    let uncovered: Vec<String> = prefixes_to(configuration, destination)
        .into_iter()
        .filter(|prefix| {
            !for_replication
                .iter()
                .any(|t| t.prefix == "ROOT" || prefix.starts_with(&t.prefix))
        })
        .collect();
    if uncovered.is_empty() {
        return vec![ok(
            "repository creation templates (REPLICATION) cover every replicated repository",
        )];
    }
    uncovered
        .into_iter()
        .map(|prefix| {
            let template_prefix = if prefix.is_empty() { "ROOT" } else { &prefix };
            (
                Severity::Warning,
                format!(
                    "no repository creation template for REPLICATION covers {}: repositories \
                     replication creates get ECR's defaults (mutable tags, AES256, no scan on \
                     push, no lifecycle or repository policy), not the source's settings",
                    describe_prefix(&prefix)
                ),
                format!(
                    "in account {}, `aws ecr create-repository-creation-template --region {} \
                     --prefix {template_prefix} --applied-for REPLICATION` with the settings \
                     the source repositories have",
                    destination.registry_id, destination.region
                ),
            )
        })
        .collect()
}

fn forwarding(facts: &DestinationFacts) -> Vec<Line> {
    let destination = &facts.destination;
    let rules = match &facts.forwarding_rules {
        Fact::Read(rules) => rules,
        other => return unread(other, Check::EventForwarding).into_iter().collect(),
    };
    let deploy = format!(
        "deploy infra/destination-region.yaml in account {} and Region {} (see the README, \
         \"Destination Regions\")",
        destination.registry_id, destination.region
    );
    if let Some(rule) = rules
        .iter()
        .find(|r| r.enabled && r.forwards_replication_events)
    {
        return vec![ok(format!(
            "rule {} forwards ECR Replication Action events to the central bus",
            rule.name
        ))];
    }
    if let Some(rule) = rules.iter().find(|r| r.forwards_replication_events) {
        return vec![(
            Severity::Error,
            format!(
                "rule {} would forward ECR Replication Action events to the central bus but is \
                 disabled: arrivals are seen only by the sweep, late",
                rule.name
            ),
            format!(
                "`aws events enable-rule --name {} --region {}` in account {}",
                rule.name, destination.region, destination.registry_id
            ),
        )];
    }
    let problem = if rules.is_empty() {
        "no EventBridge rule forwards ECR Replication Action events to the central bus: \
         arrivals are seen only by the sweep, late, and failures without their code"
            .to_owned()
    } else {
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        format!(
            "rules {} target the central bus but their patterns do not admit ECR Replication \
             Action events from aws.ecr",
            names.join(", ")
        )
    };
    vec![(Severity::Error, problem, deploy)]
}

/// The reader role, once per destination account.
fn reader_roles(source: &Destination, destinations: &[DestinationFacts]) -> Vec<DoctorFinding> {
    let mut findings: Vec<DoctorFinding> = Vec::new();
    let mut seen = Vec::new();
    for facts in destinations {
        let account = &facts.destination.registry_id;
        if account == &source.registry_id || seen.contains(account) {
            continue;
        }
        seen.push(account.clone());
        let line = match &facts.reader_role {
            Fact::Read(()) => ok("the reader role can be assumed with the external id"),
            Fact::Unreadable(error) => (
                Severity::Error,
                format!(
                    "the reader role cannot be assumed: {error}; replwatch cannot confirm \
                     arrivals in this account before alerting"
                ),
                format!(
                    "deploy infra/destination-account.yaml in account {account} with \
                     CentralAccountId={} and the stack's ReaderExternalId (and a \
                     CallerRolePattern that admits whoever runs this check)",
                    source.registry_id
                ),
            ),
            other => match unread(other, Check::ReaderRole) {
                Some(line) => line,
                None => continue,
            },
        };
        findings.push(DoctorFinding {
            severity: line.0,
            check: Check::ReaderRole,
            subject: format!("account {account}"),
            problem: line.1,
            fix: line.2,
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, Region};
    use crate::rules::RepositoryFilter;

    const SOURCE_ACCOUNT: &str = "111111111111";
    const OTHER: &str = "222222222222";

    fn registry(region: &str, account: &str) -> Destination {
        Destination::new(
            Region::parse(region).expect("region"),
            AccountId::parse(account).expect("account"),
        )
    }

    fn source() -> Destination {
        registry("us-west-2", SOURCE_ACCOUNT)
    }

    fn rule(destinations: &[Destination], prefixes: &[&str]) -> ReplicationRule {
        ReplicationRule {
            destinations: destinations.to_vec(),
            repository_filters: prefixes
                .iter()
                .map(|p| RepositoryFilter {
                    filter: (*p).to_owned(),
                    filter_type: PREFIX_MATCH.into(),
                })
                .collect(),
        }
    }

    fn healthy_facts(destination: Destination) -> DestinationFacts {
        DestinationFacts {
            destination,
            registry_policy: Fact::Read(Some(format!(
                r#"{{"Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{SOURCE_ACCOUNT}:root"}},
                   "Action":["ecr:ReplicateImage","ecr:CreateRepository"],"Resource":"*"}}]}}"#
            ))),
            replication_configuration: Fact::Read(ReplicationConfiguration::default()),
            creation_templates: Fact::Read(vec![CreationTemplate {
                prefix: "ROOT".into(),
                applied_for: vec!["REPLICATION".into()],
            }]),
            forwarding_rules: Fact::Read(vec![ForwardingRule {
                name: "replwatch-forward".into(),
                enabled: true,
                forwards_replication_events: true,
            }]),
            reader_role: Fact::Read(()),
        }
    }

    fn problems(report: &DoctorReport, check: Check) -> Vec<(Severity, String)> {
        report
            .findings
            .iter()
            .filter(|f| f.check == check && f.severity != Severity::Ok)
            .map(|f| (f.severity, f.problem.clone()))
            .collect()
    }

    #[test]
    fn a_sound_setup_is_healthy_and_says_what_it_checked() {
        let dest = registry("eu-west-1", OTHER);
        let config = ReplicationConfiguration {
            rules: vec![rule(std::slice::from_ref(&dest), &["team-a/"])],
        };
        let report = diagnose(&source(), &config, &[healthy_facts(dest)]);
        assert!(report.healthy(), "{:#?}", report.findings);
        let checks: Vec<Check> = report.findings.iter().map(|f| f.check).collect();
        for check in Check::ALL {
            assert!(checks.contains(&check), "{check} not reported");
        }
    }

    #[test]
    fn limits_and_partitions() {
        let mut rules: Vec<ReplicationRule> = (0..11)
            .map(|n| rule(&[registry("eu-west-1", &format!("3000000000{n:02}"))], &[]))
            .collect();
        rules.push(rule(&[registry("cn-north-1", OTHER)], &[""]));
        rules.push(rule(&[source()], &["x"]));
        let report = diagnose(&source(), &ReplicationConfiguration { rules }, &[]);
        let found = problems(&report, Check::Limits);
        assert!(
            found
                .iter()
                .any(|(s, p)| *s == Severity::Error && p.starts_with("13 rules"))
        );
        assert!(found.iter().any(|(_, p)| p.contains("partition aws-cn")));
        assert!(
            found
                .iter()
                .any(|(_, p)| p.contains("empty repository filter"))
        );
        assert!(
            found
                .iter()
                .any(|(s, p)| *s == Severity::Warning && p.contains("source registry"))
        );
        assert!(!report.healthy());
    }

    #[test]
    fn a_missing_or_narrow_registry_policy_blocks_replication() {
        let dest = registry("eu-west-1", OTHER);
        let config = ReplicationConfiguration {
            rules: vec![rule(std::slice::from_ref(&dest), &["team-a/", "team-b/"])],
        };
        let mut facts = healthy_facts(dest.clone());
        facts.registry_policy = Fact::Read(None);
        let report = diagnose(&source(), &config, &[facts.clone()]);
        let found = problems(&report, Check::RegistryPolicy);
        assert_eq!(found.len(), 1);
        assert!(found[0].1.starts_with("no registry permissions policy"));

        facts.registry_policy = Fact::Read(Some(format!(
            r#"{{"Statement":{{"Effect":"Allow","Principal":{{"AWS":"{SOURCE_ACCOUNT}"}},
               "Action":"ecr:ReplicateImage",
               "Resource":"arn:aws:ecr:eu-west-1:{OTHER}:repository/team-a/*"}}}}"#
        )));
        let report = diagnose(&source(), &config, &[facts]);
        let found = problems(&report, Check::RegistryPolicy);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].0, Severity::Error);
        assert!(
            found[0]
                .1
                .contains("ecr:ReplicateImage for repositories team-b/*")
        );
        assert!(!found[0].1.contains("team-a"));
        assert_eq!(found[1].0, Severity::Warning);
        assert!(found[1].1.contains("ecr:CreateRepository"));
    }

    #[test]
    fn same_account_destinations_need_no_registry_policy() {
        let dest = registry("eu-west-1", SOURCE_ACCOUNT);
        let config = ReplicationConfiguration {
            rules: vec![rule(std::slice::from_ref(&dest), &[])],
        };
        let mut facts = healthy_facts(dest);
        facts.registry_policy = Fact::Read(None);
        let report = diagnose(&source(), &config, &[facts]);
        assert!(problems(&report, Check::RegistryPolicy).is_empty());
        assert!(!report.findings.iter().any(|f| f.check == Check::ReaderRole));
    }

    #[test]
    fn a_destination_rule_that_expects_chaining_is_flagged() {
        let dest = registry("eu-west-1", OTHER);
        let third = registry("ap-southeast-2", OTHER);
        let config = ReplicationConfiguration {
            rules: vec![rule(std::slice::from_ref(&dest), &["team-a/"])],
        };
        let mut facts = healthy_facts(dest.clone());
        facts.replication_configuration = Fact::Read(ReplicationConfiguration {
            rules: vec![
                rule(std::slice::from_ref(&third), &["team-a/web"]),
                // Repositories the source never sends to `dest`: not chaining.
                rule(&[registry("us-east-1", OTHER)], &["team-z/"]),
            ],
        });
        let report = diagnose(&source(), &config, &[facts.clone()]);
        let found = problems(&report, Check::ChainedReplication);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].1.contains("on to ap-southeast-2/222222222222"));

        // Once the source sends there itself, nothing is lost.
        let direct = ReplicationConfiguration {
            rules: vec![rule(&[dest, third], &["team-a/"])],
        };
        let report = diagnose(&source(), &direct, &[facts]);
        assert!(problems(&report, Check::ChainedReplication).is_empty());
    }

    #[test]
    fn creation_templates_must_cover_what_is_replicated() {
        let dest = registry("eu-west-1", OTHER);
        let config = ReplicationConfiguration {
            rules: vec![rule(std::slice::from_ref(&dest), &["team-a/", "team-b/"])],
        };
        let mut facts = healthy_facts(dest);
        facts.creation_templates = Fact::Read(vec![
            CreationTemplate {
                prefix: "team-a".into(),
                applied_for: vec!["REPLICATION".into()],
            },
            CreationTemplate {
                prefix: "team-b".into(),
                applied_for: vec!["PULL_THROUGH_CACHE".into()],
            },
        ]);
        let report = diagnose(&source(), &config, &[facts]);
        let found = problems(&report, Check::CreationTemplate);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].1.contains("repositories team-b/*"));
    }

    #[test]
    fn forwarding_missing_disabled_or_unreadable() {
        let dest = registry("eu-west-1", OTHER);
        let config = ReplicationConfiguration {
            rules: vec![rule(std::slice::from_ref(&dest), &[])],
        };
        let mut facts = healthy_facts(dest);
        facts.forwarding_rules = Fact::Read(vec![]);
        let found = problems(
            &diagnose(&source(), &config, &[facts.clone()]),
            Check::EventForwarding,
        );
        assert_eq!(found[0].0, Severity::Error);
        assert!(found[0].1.starts_with("no EventBridge rule"));

        facts.forwarding_rules = Fact::Read(vec![ForwardingRule {
            name: "fwd".into(),
            enabled: false,
            forwards_replication_events: true,
        }]);
        let found = problems(
            &diagnose(&source(), &config, &[facts.clone()]),
            Check::EventForwarding,
        );
        assert!(found[0].1.contains("disabled"));

        facts.forwarding_rules =
            Fact::Unreadable("events:ListRuleNamesByTarget in eu-west-1: AccessDenied".into());
        let found = problems(
            &diagnose(&source(), &config, &[facts]),
            Check::EventForwarding,
        );
        assert_eq!(found[0].0, Severity::Warning);
        assert!(found[0].1.contains("AccessDenied"));
    }

    #[test]
    fn the_reader_role_is_checked_once_per_account_and_not_checked_is_said_once() {
        let a = registry("eu-west-1", OTHER);
        let b = registry("us-east-1", OTHER);
        let config = ReplicationConfiguration {
            rules: vec![rule(&[a.clone(), b.clone()], &[])],
        };
        let mut fa = healthy_facts(a);
        fa.reader_role = Fact::Unreadable("sts:AssumeRole: AccessDenied".into());
        fa.forwarding_rules = Fact::NotChecked("pass --central-bus".into());
        let mut fb = fa.clone();
        fb.destination = b;
        let report = diagnose(&source(), &config, &[fa, fb]);
        assert_eq!(problems(&report, Check::ReaderRole).len(), 1);
        assert_eq!(problems(&report, Check::EventForwarding).len(), 1);
        assert_eq!(report.findings[0].severity, Severity::Error);
    }
}
