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
//! - `region-opt-in`: "both the source and destination accounts must be opted-in to the Region
//!   prior to any replication actions occurring within or to that Region": a destination
//!   Region that is not `ENABLED` or `ENABLED_BY_DEFAULT` in either account gets nothing (see
//!   [`crate::region_opt_in`]);
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
//!   assume with its external id;
//! - `cloudtrail`: the `PutReplicationConfiguration` event that refreshes the cached rules and
//!   starts the rules-change backfill comes from CloudTrail, and only while a trail covering the
//!   source Region logs write management events (see [`cloudtrail`]).

use std::fmt;

use serde::Serialize;

use crate::backfill::inventory::CreationTemplate;
use crate::model::{AccountId, Destination};
use crate::region_opt_in::{OptInStatus, READ_PERMISSION};
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
    RegionOptIn,
    RegistryPolicy,
    ChainedReplication,
    CreationTemplate,
    EventForwarding,
    Cloudtrail,
    ReaderRole,
}

impl Check {
    pub const ALL: [Check; 8] = [
        Check::Limits,
        Check::RegionOptIn,
        Check::RegistryPolicy,
        Check::ChainedReplication,
        Check::CreationTemplate,
        Check::EventForwarding,
        Check::Cloudtrail,
        Check::ReaderRole,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::Limits => "limits",
            Check::RegionOptIn => "region-opt-in",
            Check::RegistryPolicy => "registry-policy",
            Check::ChainedReplication => "chained-replication",
            Check::CreationTemplate => "creation-template",
            Check::EventForwarding => "event-forwarding",
            Check::Cloudtrail => "cloudtrail",
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

/// The EventBridge rule of a destination account and Region that targets the central bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardingRule {
    pub name: String,
    pub enabled: bool,
    /// What its event pattern lets through of the watched source's replication events.
    pub forwards: Forwarded,
    /// Its pattern also lets through replications of other source registries (no
    /// `source-account` filter): their events become replwatch's work and cost.
    pub forwards_other_sources: bool,
}

/// What a forwarding rule's event pattern lets through of one source registry's `ECR
/// Replication Action` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    Nothing,
    /// Lean mode: only `FAILED` results.
    FailuresOnly,
    Everything,
}

impl Forwarded {
    /// Reads an EventBridge event pattern as EventBridge matches it, for the fields a
    /// replication event has: `source`, `detail-type`, and in `detail` the `source-account`,
    /// `source-region` and `result`. A field the pattern leaves out matches anything; a list
    /// matches when one of its values or filters does (`exists`, `prefix`, `anything-but`);
    /// any other filter is taken as not matching, so the doctor errs towards saying so.
    pub fn of_pattern(pattern: &str, source: &Destination) -> Self {
        let Ok(pattern) = serde_json::from_str::<serde_json::Value>(pattern) else {
            return Self::Nothing;
        };
        let passes = |result: &str| {
            matches_field(&pattern["source"], "aws.ecr")
                && matches_field(&pattern["detail-type"], "ECR Replication Action")
                && matches_field(
                    &pattern["detail"]["source-account"],
                    source.registry_id.as_str(),
                )
                && matches_field(&pattern["detail"]["source-region"], source.region.as_str())
                && matches_field(&pattern["detail"]["result"], result)
        };
        match (passes("SUCCESS"), passes("FAILED")) {
            (true, true) => Self::Everything,
            (false, true) => Self::FailuresOnly,
            _ => Self::Nothing,
        }
    }

    /// Whether `pattern` also lets through the replications of a source registry in another
    /// account than `source`'s: one it does not name lets through any it does not name.
    pub fn admits_other_sources(pattern: &str, source: &Destination) -> bool {
        let unnamed = if source.registry_id.as_str() == "000000000000" {
            "000000000001"
        } else {
            "000000000000"
        };
        AccountId::parse(unnamed).is_ok_and(|account| {
            let other = Destination::new(source.region.clone(), account);
            Self::of_pattern(pattern, &other) != Self::Nothing
        })
    }
}

/// Whether one field of an event pattern (`Null`: not in the pattern) matches `value`.
fn matches_field(field: &serde_json::Value, value: &str) -> bool {
    use serde_json::Value;
    let one = |filter: &Value| match filter {
        Value::String(s) => s == value,
        Value::Object(o) => match o.iter().next() {
            Some((name, Value::Bool(true))) if name == "exists" => true,
            Some((name, Value::String(p))) if name == "prefix" => value.starts_with(p.as_str()),
            Some((name, Value::String(not))) if name == "anything-but" => not != value,
            Some((name, Value::Array(not))) if name == "anything-but" => {
                !not.iter().any(|n| n.as_str() == Some(value))
            }
            _ => false,
        },
        _ => false,
    };
    match field {
        Value::Null => true,
        Value::Array(filters) => filters.iter().any(one),
        _ => false,
    }
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
    /// The destination Region's opt-in status in the source and the destination account.
    pub region_opt_in: RegionOptInFacts,
}

/// The opt-in status of a destination's Region (`GetRegionOptStatus`), each account's read with
/// that account's own credentials (the caller's in the source account, the role of
/// `--role-name` in another).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionOptInFacts {
    pub source_account: Fact<OptInStatus>,
    /// The destination account's; ignored when it is the source account (one read serves).
    pub destination_account: Fact<OptInStatus>,
}

/// A CloudTrail call of the `cloudtrail` check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct CloudTrailReadError {
    /// The IAM action of the call, `cloudtrail:GetTrailStatus` say: the permission to grant
    /// when it was denied.
    pub action: String,
    /// The service refused the caller (`AccessDeniedException`), as opposed to failing.
    pub access_denied: bool,
    /// The call, what it was about and the service's error, as the user should see them.
    pub error: String,
}

/// The trails `DescribeTrails` lists in the source account and Region (shadow copies of
/// multi-Region and organization trails included), or why they could not be listed.
pub type Trails = Result<Vec<Trail>, CloudTrailReadError>;

/// One trail, with what `GetTrailStatus` and `GetEventSelectors` said of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trail {
    pub name: String,
    /// The Region the trail was created in (where it is started, stopped and configured).
    pub home_region: String,
    pub multi_region: bool,
    /// `IsLogging`.
    pub logging: Result<bool, CloudTrailReadError>,
    pub selectors: Result<EventSelectors, CloudTrailReadError>,
}

/// What a trail records. A trail has either basic or advanced event selectors, never both
/// (CloudTrail API reference, `PutEventSelectors`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventSelectors {
    /// `DescribeTrails`' `HasCustomEventSelectors`. A trail nobody configured records every
    /// read and write management event ("By default, trails created without specific event
    /// selectors are configured to log all read and write management events", API reference,
    /// `PutEventSelectors`), and may list no selector for it: moto does.
    pub custom: bool,
    pub basic: Vec<BasicEventSelector>,
    pub advanced: Vec<AdvancedEventSelector>,
}

/// A basic event selector
/// (<https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_EventSelector.html>).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BasicEventSelector {
    /// `All`, `ReadOnly` or `WriteOnly`; `None` when absent ("By default, the value is All").
    pub read_write_type: Option<String>,
    /// `None` when absent ("By default, the value is true").
    pub include_management_events: Option<bool>,
    /// Event sources whose management events are not recorded (`kms.amazonaws.com`, ...).
    pub exclude_management_event_sources: Vec<String>,
}

/// An advanced event selector: it admits an event when every one of its field selectors does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdvancedEventSelector {
    pub name: Option<String>,
    pub field_selectors: Vec<FieldSelector>,
}

/// One condition of an advanced event selector on one field of the CloudTrail record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    pub field: String,
    pub equals: Vec<String>,
    pub starts_with: Vec<String>,
    pub ends_with: Vec<String>,
    pub not_equals: Vec<String>,
    pub not_starts_with: Vec<String>,
    pub not_ends_with: Vec<String>,
}

/// The CloudTrail record of ECR's `PutReplicationConfiguration`, the fields a trail's
/// selectors can filter management events on: a write (`readOnly` false) management event.
const RULE_CHANGE_RECORD: [(&str, &str); 5] = [
    ("eventCategory", "Management"),
    ("eventSource", ECR_EVENT_SOURCE),
    ("eventName", "PutReplicationConfiguration"),
    ("eventType", "AwsApiCall"),
    ("readOnly", "false"),
];
const ECR_EVENT_SOURCE: &str = "ecr.amazonaws.com";

/// The permissions the `cloudtrail` check reads with.
const CLOUDTRAIL_PERMISSIONS: &str =
    "cloudtrail:DescribeTrails, cloudtrail:GetTrailStatus and cloudtrail:GetEventSelectors";

impl FieldSelector {
    /// Whether a record whose field holds `value` passes: it matches some value of each
    /// including operator given (`Equals`, `StartsWith`, `EndsWith`) and no value of any
    /// excluding one (`NotEquals`, ...). For management events `readOnly` "can be set to Equals
    /// a value of true or false. If you do not add this field, CloudTrail logs both read and
    /// write events"
    /// (<https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_AdvancedFieldSelector.html>).
    fn admits(&self, value: &str) -> bool {
        let includes = |values: &[String], test: fn(&str, &str) -> bool| {
            values.is_empty() || values.iter().any(|v| test(value, v))
        };
        let excludes =
            |values: &[String], test: fn(&str, &str) -> bool| values.iter().any(|v| test(value, v));
        let equal: fn(&str, &str) -> bool = |a, b| a == b;
        let starts: fn(&str, &str) -> bool = |a, b| a.starts_with(b);
        let ends: fn(&str, &str) -> bool = |a, b| a.ends_with(b);
        includes(&self.equals, equal)
            && includes(&self.starts_with, starts)
            && includes(&self.ends_with, ends)
            && !excludes(&self.not_equals, equal)
            && !excludes(&self.not_starts_with, starts)
            && !excludes(&self.not_ends_with, ends)
    }
}

impl AdvancedEventSelector {
    fn records_rule_changes(&self) -> bool {
        self.field_selectors.iter().all(|selector| {
            RULE_CHANGE_RECORD
                .iter()
                .find(|(field, _)| *field == selector.field)
                // A field a management event record does not have (`resources.type`,
                // `resources.ARN`): the selector is for data or other events.
                .is_some_and(|(_, value)| selector.admits(value))
        })
    }
}

impl BasicEventSelector {
    fn records_rule_changes(&self) -> bool {
        self.include_management_events.unwrap_or(true)
            && matches!(
                self.read_write_type.as_deref().unwrap_or("All"),
                "All" | "WriteOnly"
            )
            && !self
                .exclude_management_event_sources
                .iter()
                .any(|s| s == ECR_EVENT_SOURCE)
    }
}

impl EventSelectors {
    /// Whether the trail records ECR's `PutReplicationConfiguration`: an event is recorded
    /// when it matches any of the trail's selectors.
    pub fn records_rule_changes(&self) -> bool {
        if !self.advanced.is_empty() {
            self.advanced
                .iter()
                .any(AdvancedEventSelector::records_rule_changes)
        } else if !self.basic.is_empty() {
            self.basic
                .iter()
                .any(BasicEventSelector::records_rule_changes)
        } else {
            !self.custom
        }
    }

    /// Why it does not record them, for the report.
    fn gap(&self) -> String {
        if !self.advanced.is_empty() {
            return "none of its advanced event selectors admits write management events from \
                    ecr.amazonaws.com"
                .into();
        }
        if self.basic.is_empty() {
            return "it has no event selectors, so it records nothing".into();
        }
        let management: Vec<&BasicEventSelector> = self
            .basic
            .iter()
            .filter(|s| s.include_management_events.unwrap_or(true))
            .collect();
        if management.is_empty() {
            "its event selectors exclude management events".into()
        } else if management
            .iter()
            .all(|s| s.read_write_type.as_deref() == Some("ReadOnly"))
        {
            "its event selectors record only read-only management events".into()
        } else {
            "its event selectors exclude management events from ecr.amazonaws.com".into()
        }
    }
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

/// Runs every check: `trails` as read in the source account and Region.
pub fn diagnose(
    source: &Destination,
    trails: &Trails,
    configuration: &ReplicationConfiguration,
    destinations: &[DestinationFacts],
) -> DoctorReport {
    let mut findings = limits(source, configuration);
    findings.extend(cloudtrail(source, trails));
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
        for (severity, problem, fix) in region_opt_in(source, facts) {
            push(severity, Check::RegionOptIn, problem, fix);
        }
        for (severity, problem, fix) in chaining(source, configuration, facts) {
            push(severity, Check::ChainedReplication, problem, fix);
        }
        for (severity, problem, fix) in creation_templates(configuration, facts) {
            push(severity, Check::CreationTemplate, problem, fix);
        }
        for (severity, problem, fix) in forwarding(source, facts) {
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

/// `region-opt-in`: the destination Region must be enabled in the source account and in the
/// destination account before anything is replicated there (ECR User Guide, private image
/// replication, considerations). A destination in another partition is left to `limits`.
fn region_opt_in(source: &Destination, facts: &DestinationFacts) -> Vec<Line> {
    let destination = &facts.destination;
    let region = &destination.region;
    if region.partition() != source.region.partition() {
        return Vec::new();
    }
    let same_account = destination.registry_id == source.registry_id;
    let mut reads = vec![(
        &source.registry_id,
        if same_account {
            "the source and destination account"
        } else {
            "the source account"
        },
        &facts.region_opt_in.source_account,
    )];
    if !same_account {
        reads.push((
            &destination.registry_id,
            "the destination account",
            &facts.region_opt_in.destination_account,
        ));
    }
    let backfill = format!(
        "images pushed before then are not replicated there: copy them afterwards with \
         `replwatch backfill --destination {destination}`"
    );
    let enable = |account: &AccountId| {
        format!(
            "`aws account enable-region --region-name {region}` with the credentials of account \
             {account} (or, when it is a member account of an organization, from the management \
             account or a delegated administrator for AWS Account Management: `aws account \
             enable-region --account-id {account} --region-name {region}`); enabling takes \
             minutes, sometimes hours, and {backfill}"
        )
    };
    let mut lines = Vec::new();
    let mut enabled = Vec::new();
    for (account, role, fact) in reads {
        let status = match fact {
            Fact::Read(status) => status,
            Fact::Unreadable(error) => {
                let who = if account == &source.registry_id {
                    "the credentials doctor runs with"
                } else {
                    "the role of --role-name there"
                };
                lines.push((
                    Severity::Warning,
                    format!(
                        "could not check whether {role} {account} has enabled {region}: {error}"
                    ),
                    format!(
                        "allow {READ_PERMISSION} to {who} in account {account}, then \
                         run again"
                    ),
                ));
                continue;
            }
            Fact::NotChecked(why) => {
                lines.push((
                    Severity::Info,
                    format!("not checked for {role} {account}: {why}"),
                    String::new(),
                ));
                continue;
            }
        };
        if status.allows_replication() {
            enabled.push(format!("{role} {account} ({status})"));
            continue;
        }
        let fails = format!(
            "ECR replicates to an opt-in Region only when both the source and the destination \
             account opted in to it before, so every replication from {source} to {destination} \
             fails"
        );
        lines.push(match status {
            OptInStatus::Enabling => (
                Severity::Error,
                format!("{region} is still being enabled (ENABLING) in {role} {account}: {fails}"),
                format!(
                    "wait until `aws account get-region-opt-status --region-name {region}` in \
                     account {account} answers ENABLED (minutes, sometimes hours); {backfill}"
                ),
            ),
            OptInStatus::Disabling => (
                Severity::Error,
                format!("{region} is being disabled (DISABLING) in {role} {account}: {fails}"),
                format!("once it is DISABLED, enable it again: {}", enable(account)),
            ),
            OptInStatus::Unknown(other) => (
                Severity::Warning,
                format!(
                    "{region} has the opt-in status {other} in {role} {account}, which this check \
                     does not know: replication there works only once it is ENABLED"
                ),
                format!(
                    "check `aws account get-region-opt-status --region-name {region}` in account \
                     {account}; if it is not enabled: {}",
                    enable(account)
                ),
            ),
            _ => (
                Severity::Error,
                format!("{region} is not enabled ({status}) in {role} {account}: {fails}"),
                enable(account),
            ),
        });
    }
    if lines.is_empty() {
        lines.push(ok(format!(
            "{region} is enabled in {}",
            enabled.join(" and in ")
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
    let uncovered: Vec<String> = prefixes_to(configuration, destination)
        .into_iter()
        .filter(|prefix| !templates.iter().any(|t| t.covers_replicated_prefix(prefix)))
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

fn forwarding(source: &Destination, facts: &DestinationFacts) -> Vec<Line> {
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
    let forwarding = |r: &&ForwardingRule| r.forwards != Forwarded::Nothing;
    let enabled = rules.iter().filter(|r| r.enabled).filter(forwarding);
    let best = enabled.max_by_key(|r| r.forwards == Forwarded::Everything);
    if let Some(rule) = best {
        let mut lines = vec![match rule.forwards {
            Forwarded::FailuresOnly => (
                Severity::Info,
                format!(
                    "rule {} forwards only failed replications (lean mode): arrivals are \
                     confirmed at each push's deadline, without a latency metric or an instant \
                     TAG_LOST",
                    rule.name
                ),
                "for event mode, deploy infra/destination-region.yaml with Forward=ALL".to_owned(),
            ),
            _ => ok(format!(
                "rule {} forwards ECR Replication Action events to the central bus",
                rule.name
            )),
        }];
        if rule.forwards_other_sources {
            lines.push((
                Severity::Warning,
                format!(
                    "rule {} also forwards the replications of other source registries: \
                     replwatch reads and stores them, and pays for their events",
                    rule.name
                ),
                format!(
                    "deploy infra/destination-region.yaml with SourceAccountIds={}",
                    source.registry_id
                ),
            ));
        }
        return lines;
    }
    if let Some(rule) = rules.iter().find(forwarding) {
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
             Action events from aws.ecr of source {}",
            names.join(", "),
            source
        )
    };
    vec![(Severity::Error, problem, deploy)]
}

/// What is lost without the `PutReplicationConfiguration` event on the source's default bus.
const WITHOUT_RULE_CHANGE_EVENTS: &str = "PutReplicationConfiguration calls never reach \
     EventBridge, so replication rule changes are only noticed when the cached rules expire \
     (CONFIGURATION_TTL_MINUTES, about 5 minutes; pushes meanwhile are tracked against the old \
     rules) and the rules-change backfill (backfill-plan on the event, as `replwatch backfill \
     --since-config-change`) does not run for destinations added to the rules";

/// `cloudtrail`: whether the source account and Region has a trail that delivers the
/// `PutReplicationConfiguration` event. replwatch's rules rely on the EventBridge event `AWS API
/// Call via CloudTrail`, and "To record events with a detail-type value of AWS API Call via
/// CloudTrail, a CloudTrail trail with logging enabled is required"
/// (<https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-service-event-cloudtrail.html>);
/// the trail must cover the Region (created there, or multi-Region) and record write management
/// events, which `PutReplicationConfiguration` is
/// (<https://docs.aws.amazon.com/awscloudtrail/latest/userguide/logging-management-events-with-cloudtrail.html>).
/// One trail that does is enough; otherwise every trail covering the Region says why it does
/// not, or why it could not be checked.
pub fn cloudtrail(source: &Destination, trails: &Trails) -> Vec<DoctorFinding> {
    let account = &source.registry_id;
    let region = source.region.to_string();
    let finding = |(severity, problem, fix): Line| DoctorFinding {
        severity,
        check: Check::Cloudtrail,
        subject: format!("source {source}"),
        problem,
        fix,
    };
    let permissions = |error: &CloudTrailReadError| {
        if error.access_denied {
            format!(
                "allow {} to the credentials doctor runs with in account {account} (the check \
                 needs {CLOUDTRAIL_PERMISSIONS}), then run again",
                error.action
            )
        } else {
            format!("run again; the check needs {CLOUDTRAIL_PERMISSIONS} in account {account}")
        }
    };
    let trails = match trails {
        Ok(trails) => trails,
        Err(error) => {
            return vec![finding((
                Severity::Warning,
                format!(
                    "could not check for a CloudTrail trail that delivers replication rule \
                     changes: {}",
                    error.error
                ),
                permissions(error),
            ))];
        }
    };
    let covering: Vec<&Trail> = trails
        .iter()
        .filter(|t| t.multi_region || t.home_region == region)
        .collect();
    let delivers = |t: &Trail| {
        t.logging == Ok(true)
            && t.selectors
                .as_ref()
                .is_ok_and(EventSelectors::records_rule_changes)
    };
    if let Some(trail) = covering.iter().find(|t| delivers(t)) {
        let scope = if trail.multi_region {
            "multi-Region".to_owned()
        } else {
            format!("in {region}")
        };
        return vec![finding(ok(format!(
            "trail {} ({scope}) is logging and records write management events: replication \
             rule changes reach replwatch as events",
            trail.name
        )))];
    }
    if covering.is_empty() {
        let trail = "replwatch-management-events";
        return vec![finding((
            Severity::Warning,
            format!(
                "no CloudTrail trail covers {region} (none created there, no multi-Region \
                 trail): {WITHOUT_RULE_CHANGE_EVENTS}"
            ),
            format!(
                "in account {account}, `aws cloudtrail create-trail --name {trail} \
                 --s3-bucket-name <a bucket whose policy lets CloudTrail write> \
                 --is-multi-region-trail --region {region}` then `aws cloudtrail start-logging \
                 --name {trail} --region {region}` (a new trail records every management \
                 event); or rely on the scheduled backfill plan (BackfillSchedule) to catch up \
                 destinations added to the rules"
            ),
        ))];
    }
    covering
        .into_iter()
        .map(|trail| {
            let (name, home) = (&trail.name, &trail.home_region);
            // What is known to be wrong, and what could not be read.
            let mut wrong: Vec<String> = Vec::new();
            let mut unknown: Vec<&CloudTrailReadError> = Vec::new();
            let mut fixes: Vec<String> = Vec::new();
            match &trail.logging {
                Ok(true) => {}
                Ok(false) => {
                    wrong.push("is not logging".into());
                    fixes.push(format!(
                        "`aws cloudtrail start-logging --name {name} --region {home}` in account \
                         {account}"
                    ));
                }
                Err(error) => unknown.push(error),
            }
            match &trail.selectors {
                Ok(selectors) if selectors.records_rule_changes() => {}
                Ok(selectors) => {
                    wrong.push(format!(
                        "does not record write management events ({})",
                        selectors.gap()
                    ));
                    fixes.push(format!(
                        "make trail {name} record write management events: `aws cloudtrail \
                         get-event-selectors --trail-name {name} --region {home}`, then `aws \
                         cloudtrail put-event-selectors --trail-name {name} --region {home}` \
                         with those selectors plus one recording management events (basic: \
                         IncludeManagementEvents true, ReadWriteType All or WriteOnly; \
                         advanced: eventCategory Management without readOnly true)"
                    ));
                }
                Err(error) => unknown.push(error),
            }
            for error in &unknown {
                fixes.push(permissions(error));
            }
            let unread: Vec<&str> = unknown.iter().map(|e| e.error.as_str()).collect();
            let problem = if wrong.is_empty() {
                format!(
                    "could not check whether trail {name} delivers replication rule changes: {}",
                    unread.join("; ")
                )
            } else {
                let mut problem = format!(
                    "trail {name} {}: {WITHOUT_RULE_CHANGE_EVENTS}",
                    wrong.join(" and ")
                );
                if !unread.is_empty() {
                    problem.push_str(&format!(" (also unread: {})", unread.join("; ")));
                }
                problem
            };
            if !wrong.is_empty() {
                fixes.push(
                    "or rely on the scheduled backfill plan (BackfillSchedule) to catch up \
                     destinations added to the rules"
                        .into(),
                );
            }
            finding((Severity::Warning, problem, fixes.join("; ")))
        })
        .collect()
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
                     CentralAccountId={}, CentralStackName and the stack's ReaderExternalId \
                     (and the role running this check in OperatorRoleArns)",
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
            creation_templates: Fact::Read(vec![template("ROOT", "REPLICATION")]),
            forwarding_rules: Fact::Read(vec![ForwardingRule {
                name: "replwatch-forward".into(),
                enabled: true,
                forwards: Forwarded::Everything,
                forwards_other_sources: false,
            }]),
            reader_role: Fact::Read(()),
            region_opt_in: RegionOptInFacts {
                source_account: Fact::Read(OptInStatus::EnabledByDefault),
                destination_account: Fact::Read(OptInStatus::EnabledByDefault),
            },
        }
    }

    fn trail(name: &str, home_region: &str, multi_region: bool, logging: bool) -> Trail {
        Trail {
            name: name.into(),
            home_region: home_region.into(),
            multi_region,
            logging: Ok(logging),
            selectors: Ok(EventSelectors::default()),
        }
    }

    /// A multi-Region trail created in another Region, logging, with CloudTrail's default
    /// selectors: what most accounts have.
    fn delivering() -> Trails {
        Ok(vec![trail("org-trail", "us-east-1", true, true)])
    }

    fn error(action: &str, access_denied: bool) -> CloudTrailReadError {
        CloudTrailReadError {
            action: action.into(),
            access_denied,
            error: format!("{action} in us-west-2: AccessDeniedException: not authorized"),
        }
    }

    fn basic(read_write_type: &str, management: bool) -> BasicEventSelector {
        BasicEventSelector {
            read_write_type: Some(read_write_type.into()),
            include_management_events: Some(management),
            exclude_management_event_sources: vec![],
        }
    }

    fn field(field: &str, equals: &[&str]) -> FieldSelector {
        FieldSelector {
            field: field.into(),
            equals: equals.iter().map(|v| (*v).to_owned()).collect(),
            ..FieldSelector::default()
        }
    }

    fn advanced(fields: Vec<FieldSelector>) -> AdvancedEventSelector {
        AdvancedEventSelector {
            name: Some("selector".into()),
            field_selectors: fields,
        }
    }

    /// (severity, problem, fix) of each `cloudtrail` finding.
    fn trail_findings(trails: &Trails) -> Vec<(Severity, String, String)> {
        cloudtrail(&source(), trails)
            .into_iter()
            .inspect(|f| assert_eq!(f.check, Check::Cloudtrail))
            .map(|f| (f.severity, f.problem, f.fix))
            .collect()
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
        let report = diagnose(&source(), &delivering(), &config, &[healthy_facts(dest)]);
        assert!(report.healthy(), "{:#?}", report.findings);
        let checks: Vec<Check> = report.findings.iter().map(|f| f.check).collect();
        for check in Check::ALL {
            assert!(checks.contains(&check), "{check} not reported");
        }
    }

    /// (severity, problem, fix) of each `region-opt-in` finding of a report on `facts`.
    fn opt_in_findings(facts: DestinationFacts) -> Vec<(Severity, String, String)> {
        let config = ReplicationConfiguration {
            rules: vec![rule(std::slice::from_ref(&facts.destination), &[])],
        };
        diagnose(&source(), &delivering(), &config, &[facts])
            .findings
            .into_iter()
            .filter(|f| f.check == Check::RegionOptIn)
            .map(|f| (f.severity, f.problem, f.fix))
            .collect()
    }

    fn opt_in(
        destination: Destination,
        source_account: Fact<OptInStatus>,
        destination_account: Fact<OptInStatus>,
    ) -> DestinationFacts {
        DestinationFacts {
            region_opt_in: RegionOptInFacts {
                source_account,
                destination_account,
            },
            ..healthy_facts(destination)
        }
    }

    #[test]
    fn an_opt_in_region_enabled_in_both_accounts_is_fine() {
        let found = opt_in_findings(opt_in(
            registry("eu-south-1", OTHER),
            Fact::Read(OptInStatus::Enabled),
            Fact::Read(OptInStatus::Enabled),
        ));
        assert_eq!(
            found,
            [(
                Severity::Ok,
                format!(
                    "eu-south-1 is enabled in the source account {SOURCE_ACCOUNT} (ENABLED) and \
                     in the destination account {OTHER} (ENABLED)"
                ),
                String::new()
            )]
        );
    }

    #[test]
    fn a_region_either_account_has_not_enabled_is_an_error_with_the_command_that_enables_it() {
        let dest = registry("eu-south-1", OTHER);
        // Not enabled in the destination account only.
        let found = opt_in_findings(opt_in(
            dest.clone(),
            Fact::Read(OptInStatus::Enabled),
            Fact::Read(OptInStatus::Disabled),
        ));
        assert_eq!(found.len(), 1, "{found:#?}");
        let (severity, problem, fix) = &found[0];
        assert_eq!(*severity, Severity::Error);
        assert!(
            problem.starts_with(&format!(
                "eu-south-1 is not enabled (DISABLED) in the destination account {OTHER}: "
            )),
            "{problem}"
        );
        assert!(problem.contains(
            "every replication from us-west-2/111111111111 to eu-south-1/222222222222 fails"
        ));
        assert!(
            fix.starts_with(
                "`aws account enable-region --region-name eu-south-1` with the credentials of \
                 account 222222222222"
            ),
            "{fix}"
        );
        assert!(
            fix.contains(&format!(
                "from the management account or a delegated administrator for AWS Account \
                 Management: `aws account enable-region --account-id {OTHER} --region-name \
                 eu-south-1`"
            )),
            "{fix}"
        );
        assert!(
            fix.contains("`replwatch backfill --destination eu-south-1/222222222222`"),
            "{fix}"
        );

        // Not enabled in the source account, the destination's being enabled: both named.
        let found = opt_in_findings(opt_in(
            dest,
            Fact::Read(OptInStatus::Disabled),
            Fact::Read(OptInStatus::Enabling),
        ));
        let problems: Vec<&str> = found.iter().map(|f| f.1.as_str()).collect();
        assert!(found.iter().all(|f| f.0 == Severity::Error), "{found:#?}");
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(problems.iter().any(|p| p.starts_with(&format!(
            "eu-south-1 is not enabled (DISABLED) in the source account {SOURCE_ACCOUNT}"
        ))));
        let enabling = found
            .iter()
            .find(|f| f.1.contains("still being enabled (ENABLING)"))
            .expect("the ENABLING account is named");
        assert!(
            enabling
                .1
                .contains(&format!("the destination account {OTHER}"))
        );
        assert!(
            enabling.2.starts_with(
                "wait until `aws account get-region-opt-status --region-name eu-south-1`"
            ),
            "{}",
            enabling.2
        );

        // Being disabled: enable it again once disabled.
        let found = opt_in_findings(opt_in(
            registry("eu-south-1", OTHER),
            Fact::Read(OptInStatus::Disabling),
            Fact::Read(OptInStatus::Enabled),
        ));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, Severity::Error);
        assert!(
            found[0]
                .2
                .starts_with("once it is DISABLED, enable it again: `aws account enable-region")
        );
    }

    #[test]
    fn a_same_account_destination_is_read_once() {
        let found = opt_in_findings(opt_in(
            registry("ap-southeast-7", SOURCE_ACCOUNT),
            Fact::Read(OptInStatus::Disabled),
            // Not read separately: the same account.
            Fact::NotChecked("unused".into()),
        ));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].0, Severity::Error);
        assert!(found[0].1.starts_with(&format!(
            "ap-southeast-7 is not enabled (DISABLED) in the source and destination account \
             {SOURCE_ACCOUNT}"
        )));

        let found = opt_in_findings(opt_in(
            registry("eu-west-1", SOURCE_ACCOUNT),
            Fact::Read(OptInStatus::EnabledByDefault),
            Fact::NotChecked("unused".into()),
        ));
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].1,
            format!(
                "eu-west-1 is enabled in the source and destination account {SOURCE_ACCOUNT} \
                 (ENABLED_BY_DEFAULT)"
            )
        );
    }

    #[test]
    fn a_refused_opt_in_read_names_the_permission_and_an_unread_account_is_a_note() {
        let found = opt_in_findings(opt_in(
            registry("eu-south-1", OTHER),
            Fact::Unreadable(
                "account:GetRegionOptStatus eu-south-1 in account 111111111111: \
                 AccessDeniedException: not authorized"
                    .into(),
            ),
            Fact::NotChecked("222222222222 is another account: pass --role-name".into()),
        ));
        assert_eq!(found.len(), 2, "{found:#?}");
        let warning = found
            .iter()
            .find(|f| f.0 == Severity::Warning)
            .expect("a warning");
        assert!(warning.1.starts_with(&format!(
            "could not check whether the source account {SOURCE_ACCOUNT} has enabled eu-south-1: \
             account:GetRegionOptStatus"
        )));
        assert_eq!(
            warning.2,
            format!(
                "allow account:GetRegionOptStatus to the credentials doctor runs with in account \
                 {SOURCE_ACCOUNT}, then run again"
            )
        );
        let note = found
            .iter()
            .find(|f| f.0 == Severity::Info)
            .expect("a note");
        assert!(note.1.starts_with(&format!(
            "not checked for the destination account {OTHER}: "
        )));

        let found = opt_in_findings(opt_in(
            registry("eu-south-1", OTHER),
            Fact::Read(OptInStatus::Enabled),
            Fact::Unreadable("AccessDeniedException".into()),
        ));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, Severity::Warning);
        assert!(found[0].2.contains(&format!(
            "to the role of --role-name there in account {OTHER}"
        )));
    }

    #[test]
    fn an_unknown_status_is_a_warning_and_another_partition_is_left_to_limits() {
        let found = opt_in_findings(opt_in(
            registry("eu-south-1", OTHER),
            Fact::Read(OptInStatus::parse("PAUSED")),
            Fact::Read(OptInStatus::Enabled),
        ));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, Severity::Warning);
        assert!(
            found[0].1.contains("opt-in status PAUSED"),
            "{}",
            found[0].1
        );

        let found = opt_in_findings(opt_in(
            registry("cn-north-1", OTHER),
            Fact::Read(OptInStatus::Disabled),
            Fact::Read(OptInStatus::Disabled),
        ));
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn limits_and_partitions() {
        let mut rules: Vec<ReplicationRule> = (0..11)
            .map(|n| rule(&[registry("eu-west-1", &format!("3000000000{n:02}"))], &[]))
            .collect();
        rules.push(rule(&[registry("cn-north-1", OTHER)], &[""]));
        rules.push(rule(&[source()], &["x"]));
        let report = diagnose(
            &source(),
            &delivering(),
            &ReplicationConfiguration { rules },
            &[],
        );
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
        let report = diagnose(&source(), &delivering(), &config, &[facts.clone()]);
        let found = problems(&report, Check::RegistryPolicy);
        assert_eq!(found.len(), 1);
        assert!(found[0].1.starts_with("no registry permissions policy"));

        facts.registry_policy = Fact::Read(Some(format!(
            r#"{{"Statement":{{"Effect":"Allow","Principal":{{"AWS":"{SOURCE_ACCOUNT}"}},
               "Action":"ecr:ReplicateImage",
               "Resource":"arn:aws:ecr:eu-west-1:{OTHER}:repository/team-a/*"}}}}"#
        )));
        let report = diagnose(&source(), &delivering(), &config, &[facts]);
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
        let report = diagnose(&source(), &delivering(), &config, &[facts]);
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
        let report = diagnose(&source(), &delivering(), &config, &[facts.clone()]);
        let found = problems(&report, Check::ChainedReplication);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].1.contains("on to ap-southeast-2/222222222222"));

        // Once the source sends there itself, nothing is lost.
        let direct = ReplicationConfiguration {
            rules: vec![rule(&[dest, third], &["team-a/"])],
        };
        let report = diagnose(&source(), &delivering(), &direct, &[facts]);
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
            template("team-a", "REPLICATION"),
            template("team-b", "PULL_THROUGH_CACHE"),
        ]);
        let report = diagnose(&source(), &delivering(), &config, &[facts.clone()]);
        let found = problems(&report, Check::CreationTemplate);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].1.contains("repositories team-b/*"));

        // As ECR reads a template prefix (a namespace): `team` does not cover `team-b/`,
        // though the name starts with it.
        facts.creation_templates = Fact::Read(vec![
            template("team-a", "REPLICATION"),
            template("team", "REPLICATION"),
        ]);
        let report = diagnose(&source(), &delivering(), &config, &[facts]);
        let found = problems(&report, Check::CreationTemplate);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].1.contains("repositories team-b/*"));
    }

    fn template(prefix: &str, applied_for: &str) -> CreationTemplate {
        CreationTemplate {
            prefix: prefix.into(),
            applied_for: vec![applied_for.into()],
            settings: crate::backfill::in_memory_ecr::InMemoryEcr::default_settings(),
        }
    }

    #[test]
    fn a_forwarding_pattern_is_read_as_eventbridge_matches_it_for_the_watched_source() {
        let source = source();
        let of = |pattern: serde_json::Value| Forwarded::of_pattern(&pattern.to_string(), &source);
        let account = source.registry_id.to_string();
        let region = source.region.to_string();
        // infra/destination-region.yaml's pattern, event mode and lean mode.
        let shipped = |result: serde_json::Value| {
            serde_json::json!({
                "source": ["aws.ecr"],
                "detail-type": ["ECR Replication Action"],
                "detail": {"source-account": [account], "source-region": [{"exists": true}], "result": result}
            })
        };
        assert_eq!(
            of(shipped(serde_json::json!([{"exists": true}]))),
            Forwarded::Everything
        );
        assert_eq!(
            of(shipped(serde_json::json!(["FAILED"]))),
            Forwarded::FailuresOnly
        );
        // The pattern of the first releases: no detail filter at all.
        assert_eq!(
            of(
                serde_json::json!({"source": ["aws.ecr"], "detail-type": ["ECR Replication Action"]})
            ),
            Forwarded::Everything
        );
        assert_eq!(
            of(
                serde_json::json!({"source": ["aws.ecr"], "detail": {"source-account": ["000000000000"]}})
            ),
            Forwarded::Nothing,
            "another source's"
        );
        assert_eq!(
            of(serde_json::json!({"detail": {"source-region": [{"prefix": "ap-"}]}})),
            Forwarded::Nothing,
            "{region} is not ap-*"
        );
        assert_eq!(
            of(serde_json::json!({"detail": {"result": [{"anything-but": "SUCCESS"}]}})),
            Forwarded::FailuresOnly
        );
        assert_eq!(
            of(serde_json::json!({"source": ["aws.ecr"], "detail-type": ["ECR Image Action"]})),
            Forwarded::Nothing
        );
        assert_eq!(
            Forwarded::of_pattern("not json", &source),
            Forwarded::Nothing
        );
    }

    #[test]
    fn lean_mode_is_noted_and_a_rule_forwarding_every_source_is_a_warning() {
        let dest = registry("eu-west-1", OTHER);
        let config = ReplicationConfiguration {
            rules: vec![rule(std::slice::from_ref(&dest), &[])],
        };
        let mut facts = healthy_facts(dest);
        facts.forwarding_rules = Fact::Read(vec![ForwardingRule {
            name: "fwd".into(),
            enabled: true,
            forwards: Forwarded::FailuresOnly,
            forwards_other_sources: true,
        }]);
        let report = diagnose(&source(), &delivering(), &config, &[facts]);
        let found = problems(&report, Check::EventForwarding);
        let severities: Vec<Severity> = found.iter().map(|f| f.0).collect();
        assert_eq!(
            severities,
            vec![Severity::Warning, Severity::Info],
            "{found:#?}"
        );
        assert!(found[0].1.contains("other source registries"));
        assert!(found[1].1.contains("lean mode"));
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
            &diagnose(&source(), &delivering(), &config, &[facts.clone()]),
            Check::EventForwarding,
        );
        assert_eq!(found[0].0, Severity::Error);
        assert!(found[0].1.starts_with("no EventBridge rule"));

        facts.forwarding_rules = Fact::Read(vec![ForwardingRule {
            name: "fwd".into(),
            enabled: false,
            forwards: Forwarded::Everything,
            forwards_other_sources: false,
        }]);
        let found = problems(
            &diagnose(&source(), &delivering(), &config, &[facts.clone()]),
            Check::EventForwarding,
        );
        assert!(found[0].1.contains("disabled"));

        facts.forwarding_rules =
            Fact::Unreadable("events:ListRuleNamesByTarget in eu-west-1: AccessDenied".into());
        let found = problems(
            &diagnose(&source(), &delivering(), &config, &[facts]),
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
        let report = diagnose(&source(), &delivering(), &config, &[fa, fb]);
        assert_eq!(problems(&report, Check::ReaderRole).len(), 1);
        assert_eq!(problems(&report, Check::EventForwarding).len(), 1);
        assert_eq!(report.findings[0].severity, Severity::Error);
    }

    #[test]
    fn without_a_trail_covering_the_region_rule_changes_arrive_late() {
        // No trail at all, and a single-Region trail elsewhere: both leave us-west-2 uncovered.
        for trails in [vec![], vec![trail("eu-only", "eu-west-1", false, true)]] {
            let found = trail_findings(&Ok(trails));
            assert_eq!(found.len(), 1, "{found:#?}");
            let (severity, problem, fix) = &found[0];
            assert_eq!(*severity, Severity::Warning);
            assert!(
                problem.starts_with("no CloudTrail trail covers us-west-2"),
                "{problem}"
            );
            assert!(problem.contains("about 5 minutes"), "{problem}");
            assert!(problem.contains("--since-config-change"), "{problem}");
            for part in [
                "aws cloudtrail create-trail",
                "--is-multi-region-trail --region us-west-2",
                "aws cloudtrail start-logging",
                "in account 111111111111",
                "scheduled backfill plan",
            ] {
                assert!(fix.contains(part), "{part}: {fix}");
            }
        }
        let report = diagnose(
            &source(),
            &Ok(vec![]),
            &ReplicationConfiguration::default(),
            &[],
        );
        assert!(!report.healthy());
    }

    #[test]
    fn a_logging_trail_that_records_write_management_events_is_enough() {
        let write_only = EventSelectors {
            custom: true,
            basic: vec![basic("WriteOnly", true)],
            advanced: vec![],
        };
        // What the console writes for "management events: write", and one that also drops
        // KMS events; and a data-event selector beside a management one.
        let management = field("eventCategory", &["Management"]);
        let advanced_sets = [
            vec![advanced(vec![
                management.clone(),
                field("readOnly", &["false"]),
            ])],
            vec![advanced(vec![
                management.clone(),
                FieldSelector {
                    field: "eventSource".into(),
                    not_equals: vec!["kms.amazonaws.com".into()],
                    ..FieldSelector::default()
                },
            ])],
            vec![
                advanced(vec![
                    field("eventCategory", &["Data"]),
                    field("resources.type", &["AWS::S3::Object"]),
                ]),
                advanced(vec![management]),
            ],
        ];
        let mut cases = vec![EventSelectors::default(), write_only];
        cases.extend(advanced_sets.into_iter().map(|advanced| EventSelectors {
            custom: true,
            basic: vec![],
            advanced,
        }));
        for selectors in cases {
            let mut regional = trail("regional", "us-west-2", false, true);
            regional.selectors = Ok(selectors.clone());
            let found = trail_findings(&Ok(vec![regional]));
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].0, Severity::Ok, "{selectors:#?}: {found:#?}");
            assert!(
                found[0]
                    .1
                    .starts_with("trail regional (in us-west-2) is logging")
            );
        }
        // One delivering trail settles it, whatever the others are.
        let mut stopped = trail("stopped", "us-west-2", false, false);
        stopped.selectors = Err(error("cloudtrail:GetEventSelectors", true));
        let mut trails = delivering();
        if let Ok(list) = &mut trails {
            list.insert(0, stopped);
        }
        let found = trail_findings(&trails);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].0, Severity::Ok);
        assert!(found[0].1.contains("org-trail (multi-Region)"));
    }

    #[test]
    fn a_stopped_trail_gets_its_own_message() {
        let found = trail_findings(&Ok(vec![trail("org-trail", "us-east-1", true, false)]));
        assert_eq!(found.len(), 1, "{found:#?}");
        let (severity, problem, fix) = &found[0];
        assert_eq!(*severity, Severity::Warning);
        assert!(
            problem.starts_with("trail org-trail is not logging: "),
            "{problem}"
        );
        assert!(problem.contains("about 5 minutes"));
        assert!(
            fix.starts_with("`aws cloudtrail start-logging --name org-trail --region us-east-1`"),
            "{fix}"
        );
        assert!(!fix.contains("put-event-selectors"));
    }

    #[test]
    fn selectors_without_write_management_events_get_their_own_message() {
        let readonly = field("readOnly", &["true"]);
        let cases = [
            (
                vec![basic("ReadOnly", true)],
                vec![],
                "record only read-only management events",
            ),
            (
                vec![basic("All", false)],
                vec![],
                "exclude management events",
            ),
            (
                vec![BasicEventSelector {
                    exclude_management_event_sources: vec![ECR_EVENT_SOURCE.into()],
                    ..BasicEventSelector::default()
                }],
                vec![],
                "exclude management events from ecr.amazonaws.com",
            ),
            (
                vec![],
                vec![advanced(vec![
                    field("eventCategory", &["Management"]),
                    readonly,
                ])],
                "none of its advanced event selectors",
            ),
            (
                vec![],
                vec![advanced(vec![
                    field("eventCategory", &["Data"]),
                    field("resources.type", &["AWS::S3::Object"]),
                ])],
                "none of its advanced event selectors",
            ),
            (
                vec![],
                vec![advanced(vec![
                    field("eventCategory", &["Management"]),
                    FieldSelector {
                        field: "eventSource".into(),
                        not_equals: vec![ECR_EVENT_SOURCE.into()],
                        ..FieldSelector::default()
                    },
                ])],
                "none of its advanced event selectors",
            ),
            (vec![], vec![], "it has no event selectors"),
        ];
        for (basic, advanced, expected) in cases {
            let mut narrow = trail("narrow", "us-west-2", false, true);
            narrow.selectors = Ok(EventSelectors {
                custom: true,
                basic,
                advanced,
            });
            let found = trail_findings(&Ok(vec![narrow]));
            assert_eq!(found.len(), 1, "{found:#?}");
            let (severity, problem, fix) = &found[0];
            assert_eq!(*severity, Severity::Warning);
            assert!(
                problem.starts_with("trail narrow does not record write management events ("),
                "{problem}"
            );
            assert!(problem.contains(expected), "{expected}: {problem}");
            assert!(
                fix.contains("put-event-selectors --trail-name narrow --region us-west-2"),
                "{fix}"
            );
        }
        // Stopped as well: both are said.
        let mut both = trail("both", "us-west-2", false, false);
        both.selectors = Ok(EventSelectors {
            custom: true,
            basic: vec![basic("ReadOnly", true)],
            advanced: vec![],
        });
        let found = trail_findings(&Ok(vec![both]));
        assert!(
            found[0]
                .1
                .starts_with("trail both is not logging and does not record write"),
            "{found:#?}"
        );
        assert!(found[0].2.contains("start-logging") && found[0].2.contains("put-event-selectors"));
    }

    #[test]
    fn access_denied_says_the_check_could_not_run_and_which_permission_it_needs() {
        let found = trail_findings(&Err(error("cloudtrail:DescribeTrails", true)));
        assert_eq!(found.len(), 1, "{found:#?}");
        let (severity, problem, fix) = &found[0];
        assert_eq!(*severity, Severity::Warning);
        assert!(
            problem.starts_with("could not check for a CloudTrail trail"),
            "{problem}"
        );
        assert!(problem.contains("AccessDeniedException"));
        assert!(
            fix.starts_with("allow cloudtrail:DescribeTrails to the credentials"),
            "{fix}"
        );
        for permission in [
            "cloudtrail:DescribeTrails",
            "cloudtrail:GetTrailStatus",
            "cloudtrail:GetEventSelectors",
        ] {
            assert!(fix.contains(permission), "{permission}: {fix}");
        }

        // Listed, but its status could not be read: not known to be wrong, so no claim that
        // rule changes are lost.
        let mut unknown = trail("org-trail", "us-east-1", true, true);
        unknown.logging = Err(error("cloudtrail:GetTrailStatus", true));
        let found = trail_findings(&Ok(vec![unknown.clone()]));
        assert_eq!(found[0].0, Severity::Warning);
        assert!(
            found[0]
                .1
                .starts_with("could not check whether trail org-trail delivers"),
            "{found:#?}"
        );
        assert!(!found[0].1.contains("5 minutes"));
        assert!(found[0].2.starts_with("allow cloudtrail:GetTrailStatus"));

        // A failure that is not a refusal: no permission to grant, try again.
        unknown.logging = Err(error("cloudtrail:GetTrailStatus", false));
        let found = trail_findings(&Ok(vec![unknown]));
        assert!(found[0].2.starts_with("run again"), "{found:#?}");
    }
}
