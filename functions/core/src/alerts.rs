//! What replwatch tells a human, and how much of it.
//!
//! An [`Alert`] is one problem with one push in one destination (overdue, not started,
//! failed), one tag incident in one destination (tag lost, tag diverged), or the notice that
//! an incident is over (resolved). The state machine and the incidents already guarantee each
//! is raised once; this module decides how they are delivered: one by one, or — past a storm threshold in one batch (a sweep that finds a
//! whole Region stuck) — folded into one [`AlertSummary`] with counts per destination, so a
//! Region outage is one page, not four hundred.
//!
//! The readable text (subject and body) lives here so every sink says the same thing; the
//! sinks (`replwatch-aws`: SNS, Slack) only wrap it in their formats.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use sha2::{Digest as _, Sha256};

use crate::backfill::run::BackfillRun;
use crate::incident::{DivergenceCause, ResolutionReason, TagIncident};
use crate::model::{Destination, Digest, ExpectationKey, SourceImage};
use crate::tracking::{AlertKind, ReplicationExpectation};
use crate::unreadable::{ReadFailure, ReadFailureKind, ReadIncident};

/// How urgent an alert is; carried as the SNS `severity` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Nothing is wrong: a backfill finished without failures.
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One problem with one push, or with one tag, in one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub kind: AlertKind,
    /// The push (image, tag, push time) and destination; for a tag incident, the image the
    /// source's tag named when it opened, and the opening time as the occurrence.
    pub key: ExpectationKey,
    pub pushed_at: Option<DateTime<Utc>>,
    pub detected_at: DateTime<Utc>,
    pub failure_code: Option<String>,
    /// For TAG_LOST and TAG_DIVERGED: the image the tag names in the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_held_by: Option<Digest>,
    /// For a tag incident's alerts (TAG_LOST, TAG_DIVERGED, RESOLVED): what it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<IncidentFacts>,
    /// For a read incident's alerts (UNCONFIRMED, RESOLVED): the registry replwatch cannot
    /// read, and why. The key's destination is that registry; its image is one whose
    /// verdict waits on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<Box<UnreadableFacts>>,
}

/// What a read incident's alert says beyond its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadableFacts {
    pub opened_at: DateTime<Utc>,
    pub failure: ReadFailure,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
}

/// What a tag incident's alert says beyond its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentFacts {
    pub opened_at: DateTime<Utc>,
    pub cause: DivergenceCause,
    /// The image the source's tag names now.
    pub expected: Digest,
    /// For RESOLVED: why it is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<ResolutionReason>,
}

impl Alert {
    pub fn new(
        kind: AlertKind,
        record: &ReplicationExpectation,
        detected_at: DateTime<Utc>,
    ) -> Self {
        Self {
            kind,
            key: record.key.clone(),
            pushed_at: record.pushed_at,
            detected_at,
            failure_code: record.failure_code.clone(),
            tag_held_by: record.tag_held_by.clone(),
            incident: None,
            unreadable: None,
        }
    }

    /// The alert `kind` of a read incident: its opening (UNCONFIRMED) or its RESOLVED notice.
    pub fn for_read_incident(
        kind: AlertKind,
        incident: &ReadIncident,
        detected_at: DateTime<Utc>,
    ) -> Self {
        Self {
            kind,
            key: ExpectationKey {
                destination: incident.key.location.clone(),
                ..incident.waiting.clone()
            },
            pushed_at: Some(incident.waiting.occurrence),
            detected_at,
            failure_code: None,
            tag_held_by: None,
            incident: None,
            unreadable: Some(Box::new(UnreadableFacts {
                opened_at: incident.opened_at,
                failure: incident.failure.clone(),
                resolved_at: incident.resolved_at,
            })),
        }
    }

    /// The alert `kind` of a tag incident: its opening (TAG_LOST, TAG_DIVERGED) or its
    /// RESOLVED notice.
    pub fn for_incident(
        kind: AlertKind,
        incident: &TagIncident,
        detected_at: DateTime<Utc>,
    ) -> Self {
        let key = &incident.key;
        Self {
            kind,
            key: ExpectationKey {
                image: SourceImage {
                    registry: key.registry.clone(),
                    repository: key.repository.clone(),
                    digest: incident.divergence.expected.clone(),
                },
                tag: Some(key.tag.clone()),
                destination: key.destination.clone(),
                occurrence: incident.opened_at,
            },
            pushed_at: None,
            detected_at,
            failure_code: None,
            tag_held_by: incident.divergence.found.clone(),
            incident: Some(IncidentFacts {
                opened_at: incident.opened_at,
                cause: incident.divergence.cause,
                expected: incident.divergence.expected.clone(),
                resolution: incident.resolved.map(|(_, reason)| reason),
            }),
            unreadable: None,
        }
    }

    /// The alert's id: the same for every delivery attempt of this alert, and different for
    /// every other one (another push of the same image and tag, another incident of the same
    /// tag), so a subscriber can drop a repeat without ever dropping a genuine second alert.
    pub fn id(&self) -> String {
        let digest = Sha256::digest(self.dedup_key().as_bytes());
        format!("rw-{}", &hex::encode(digest)[..ALERT_ID_HEX])
    }

    /// A failed replication will not fix itself; a late or untagged one may be waited out or
    /// re-tagged; a resolved incident needs nothing.
    pub fn severity(&self) -> Severity {
        match self.kind {
            AlertKind::Failed | AlertKind::NotStarted => Severity::Critical,
            AlertKind::Overdue
            | AlertKind::TagLost
            | AlertKind::TagDiverged
            | AlertKind::Unconfirmed => Severity::Warning,
            AlertKind::Resolved => Severity::Info,
        }
    }

    /// Time from push to detection, when the push time is known.
    pub fn age(&self) -> Option<TimeDelta> {
        self.pushed_at
            .map(|p| (self.detected_at - p).max(TimeDelta::zero()))
    }

    /// The identity used to de-duplicate deliveries: one per (push, destination, kind), or
    /// per (incident, kind) for a tag incident (its opening and its resolution differ).
    /// Alerts stored before pushes had occurrences keep the ids they were raised with.
    pub fn dedup_key(&self) -> String {
        let key = &self.key;
        if let Some(unreadable) = &self.unreadable {
            return format!(
                "unreadable|{}|{}|{}|{}",
                key.destination,
                unreadable.failure.kind.as_str(),
                unreadable.opened_at.to_rfc3339(),
                self.kind.as_str()
            );
        }
        if let Some(incident) = &self.incident {
            return format!(
                "incident|{}|{}|{}|{}|{}|{}",
                key.image.registry,
                key.image.repository,
                key.tag.as_deref().unwrap_or(""),
                key.destination,
                incident.opened_at.to_rfc3339(),
                self.kind.as_str()
            );
        }
        let mut dedup = format!(
            "{}|{}|{}|{}",
            key.image,
            key.tag.as_deref().unwrap_or(""),
            key.destination,
            self.kind.as_str()
        );
        if key.occurrence != DateTime::<Utc>::default() {
            let _ = write!(dedup, "|{}", key.occurrence.to_rfc3339());
        }
        dedup
    }

    /// The ECR console page of the image in the source registry.
    pub fn console_url(&self) -> String {
        let image = &self.key.image;
        format!(
            "https://{region}.console.aws.amazon.com/ecr/repositories/private/{account}/{repo}/_/image/{digest}/details?region={region}",
            region = image.registry.region,
            account = image.registry.registry_id,
            repo = image.repository,
            digest = image.digest,
        )
    }

    /// `team-a/web:v1.4.2` or `team-a/web@sha256:3b1f1c2e4d5a` (untagged).
    pub fn image_reference(&self) -> String {
        let image = &self.key.image;
        match &self.key.tag {
            Some(tag) => format!("{}:{tag}", image.repository),
            None => format!("{}@{}", image.repository, image.digest.short()),
        }
    }

    /// What went wrong, as the end of a sentence: `replication failed`.
    pub fn problem(&self) -> &'static str {
        match self.kind {
            AlertKind::Overdue => "not replicated within the SLA",
            AlertKind::Failed => "replication failed",
            AlertKind::TagLost => "names another image (immutable destination)",
            AlertKind::NotStarted => "never started replicating",
            AlertKind::TagDiverged => "names another image than in the source",
            AlertKind::Resolved if self.unreadable.is_some() => "can be confirmed again",
            AlertKind::Resolved => "names the same image as the source again",
            AlertKind::Unconfirmed => "cannot be confirmed: replwatch cannot read ECR",
        }
    }

    /// What an operator can do about it, with the command where there is one.
    pub fn next_step(&self) -> String {
        let key = &self.key;
        let destination = &key.destination;
        let tag = key.tag.as_deref().unwrap_or("");
        let repository = &key.image.repository;
        match (self.kind, self.incident.as_ref().map(|i| i.cause)) {
            (AlertKind::Overdue, _) => "Check the destination registry's permission policy and service quotas; replwatch keeps checking and will report the arrival.".to_owned(),
            (AlertKind::Failed, _) => "Fix the cause named by the failure code, then push the image again or run `replwatch backfill` for this destination.".to_owned(),
            (AlertKind::NotStarted, _) => format!(
                "ECR lists no replication of this image to {destination} although the replication rules (read again from ECR) select it. Check the rules and the destination's registry permission policy (`replwatch doctor`), then bring the image over with `replwatch backfill --destination {destination} --repository-prefix {repository} --apply`; replwatch keeps checking and will report the arrival."
            ),
            (AlertKind::TagLost | AlertKind::TagDiverged, cause) => format!(
                "{} replwatch reports once the tag converges; further pushes of this tag raise nothing new meanwhile.",
                tag_fix(
                    cause.unwrap_or(DivergenceCause::ImmutableHeld),
                    destination,
                    repository,
                    tag,
                    &key.image.digest
                )
            ),
            (AlertKind::Resolved, _) => "Nothing to do.".to_owned(),
            (AlertKind::Unconfirmed, _) => self.unreadable.as_ref().map_or_else(String::new, |u| {
                unreadable_fix(&u.failure, &key.image.registry)
            }),
        }
    }
}

/// Characters of an alert id after `rw-`: 80 bits, no collision in any realistic history.
const ALERT_ID_HEX: usize = 20;

/// Many alerts in one batch, folded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertSummary {
    pub detected_at: DateTime<Utc>,
    pub total: usize,
    /// The id of every alert folded in, so a subscriber that saw some of them one by one can
    /// tell which.
    pub alert_ids: Vec<String>,
    /// Counts per destination and kind.
    pub by_destination: BTreeMap<Destination, BTreeMap<AlertKind, usize>>,
    /// The first few alerts, to show what kind of images are affected.
    pub examples: Vec<Alert>,
}

/// What a sink delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notification {
    Single(Alert),
    Summary(AlertSummary),
    /// A backfill run finished: every copy job was reported.
    BackfillCompleted(BackfillRun),
}

/// How many destinations a summary's body lists; the rest are counted.
pub const SUMMARY_DESTINATION_LINES: usize = 30;

/// How many examples a summary lists.
pub const SUMMARY_EXAMPLES: usize = 5;

impl AlertSummary {
    /// Whether every alert folded in is a resolved notice.
    pub fn resolutions_only(&self) -> bool {
        self.by_destination
            .values()
            .all(|kinds| kinds.keys().all(|k| !k.is_problem()))
    }
}

/// Delivers `alerts` one by one, or as one summary when there are more than `storm_threshold`.
/// Problems and resolved notices are folded apart: a summary of problems never hides that
/// some of them are over, and a storm of resolutions (a Region recovering) is one notice.
pub fn fold(alerts: Vec<Alert>, storm_threshold: usize) -> Vec<Notification> {
    let (problems, resolutions): (Vec<Alert>, Vec<Alert>) =
        alerts.into_iter().partition(|a| a.kind.is_problem());
    let mut notifications = fold_alike(problems, storm_threshold);
    notifications.extend(fold_alike(resolutions, storm_threshold));
    notifications
}

fn fold_alike(alerts: Vec<Alert>, storm_threshold: usize) -> Vec<Notification> {
    if alerts.len() <= storm_threshold {
        return alerts.into_iter().map(Notification::Single).collect();
    }
    let mut by_destination: BTreeMap<Destination, BTreeMap<AlertKind, usize>> = BTreeMap::new();
    for alert in &alerts {
        *by_destination
            .entry(alert.key.destination.clone())
            .or_default()
            .entry(alert.kind)
            .or_default() += 1;
    }
    let detected_at = alerts
        .iter()
        .map(|a| a.detected_at)
        .max()
        .unwrap_or_else(Utc::now);
    let mut alert_ids: Vec<String> = alerts.iter().map(Alert::id).collect();
    alert_ids.sort_unstable();
    vec![Notification::Summary(AlertSummary {
        detected_at,
        total: alerts.len(),
        alert_ids,
        by_destination,
        examples: alerts.into_iter().take(SUMMARY_EXAMPLES).collect(),
    })]
}

impl Notification {
    /// The most urgent severity inside.
    pub fn severity(&self) -> Severity {
        match self {
            Notification::Single(a) => a.severity(),
            Notification::Summary(s) => s
                .by_destination
                .values()
                .flat_map(|kinds| kinds.keys())
                .map(|kind| match kind {
                    AlertKind::Failed | AlertKind::NotStarted => Severity::Critical,
                    AlertKind::Resolved => Severity::Info,
                    _ => Severity::Warning,
                })
                .max()
                .unwrap_or(Severity::Info),
            Notification::BackfillCompleted(run) if run.failed > 0 => Severity::Warning,
            Notification::BackfillCompleted(_) => Severity::Info,
        }
    }

    /// The notification's id, the same on every attempt to deliver it: the alert's id, a
    /// summary's id from the ids it folds, or the backfill run's id.
    pub fn id(&self) -> String {
        match self {
            Notification::Single(a) => a.id(),
            Notification::Summary(s) => {
                let digest = Sha256::digest(s.alert_ids.join(",").as_bytes());
                format!("rw-summary-{}", &hex::encode(digest)[..ALERT_ID_HEX])
            }
            Notification::BackfillCompleted(run) => format!("rw-backfill-{}", run.id),
        }
    }

    /// The ids of the alerts inside (none for a backfill notice).
    pub fn alert_ids(&self) -> Vec<String> {
        match self {
            Notification::Single(a) => vec![a.id()],
            Notification::Summary(s) => s.alert_ids.clone(),
            Notification::BackfillCompleted(_) => Vec::new(),
        }
    }

    /// `OVERDUE`, `FAILED`, `TAG_LOST`, `SUMMARY` or `BACKFILL_COMPLETED`.
    pub fn kind(&self) -> &'static str {
        match self {
            Notification::Single(a) => a.kind.as_str(),
            Notification::Summary(_) => "SUMMARY",
            Notification::BackfillCompleted(_) => "BACKFILL_COMPLETED",
        }
    }

    /// The destination Region, for a single alert, or `multiple`.
    pub fn destination_region(&self) -> String {
        match self {
            Notification::Single(a) => a.key.destination.region.to_string(),
            Notification::Summary(s) => one_region_or_multiple(s.by_destination.keys()),
            Notification::BackfillCompleted(run) => one_region_or_multiple(run.destinations.keys()),
        }
    }

    /// What happened, in one line: `team-a/web:v1 replication failed to eu-west-1`.
    pub fn headline(&self) -> String {
        match self {
            Notification::Single(a) if a.unreadable.is_some() => {
                let location = &a.key.destination;
                if a.kind == AlertKind::Resolved {
                    format!(
                        "replwatch reads ECR in {} ({}) again",
                        location.region, location.registry_id
                    )
                } else {
                    format!(
                        "replwatch cannot read ECR in {} ({}): verdicts wait",
                        location.region, location.registry_id
                    )
                }
            }
            Notification::Single(a) => format!(
                "{} {} {} {}",
                a.image_reference(),
                a.problem(),
                if a.incident.is_some() { "in" } else { "to" },
                a.key.destination.region
            ),
            Notification::Summary(s) => {
                let destinations = s.by_destination.len();
                let what = if s.resolutions_only() {
                    "tag incidents resolved"
                } else {
                    "replication problems"
                };
                format!(
                    "{} {what} in {destinations} destination{}",
                    s.total,
                    if destinations == 1 { "" } else { "s" }
                )
            }
            Notification::BackfillCompleted(run) => format!(
                "backfill of {} finished: {} copied, {} failed",
                run.source, run.copied, run.failed
            ),
        }
    }

    /// The headline behind `[replwatch]`, ASCII and under 100 characters, as SNS requires of
    /// a subject (and mail clients show whole).
    pub fn subject(&self) -> String {
        truncate_ascii(
            &format!("[replwatch] {}", self.headline()),
            SUBJECT_MAX_CHARS,
        )
    }

    /// The readable body: what, where, since when, why, and what to do.
    pub fn body(&self) -> String {
        let mut out = String::new();
        match self {
            Notification::Single(a) => write_alert(&mut out, a),
            Notification::Summary(s) => {
                let _ = writeln!(
                    out,
                    "{} replication problems detected at {}.",
                    s.total,
                    s.detected_at.to_rfc3339()
                );
                let _ = writeln!(out);
                let _ = writeln!(out, "Per destination:");
                for (destination, kinds) in s.by_destination.iter().take(SUMMARY_DESTINATION_LINES)
                {
                    let counts: Vec<String> = kinds
                        .iter()
                        .map(|(k, n)| format!("{n} {}", k.as_str()))
                        .collect();
                    let _ = writeln!(out, "  {destination}: {}", counts.join(", "));
                }
                if s.by_destination.len() > SUMMARY_DESTINATION_LINES {
                    let _ = writeln!(
                        out,
                        "  ... and {} more destinations (see the dashboard)",
                        s.by_destination.len() - SUMMARY_DESTINATION_LINES
                    );
                }
                let _ = writeln!(out);
                let _ = writeln!(out, "First {} of them:", s.examples.len());
                for a in &s.examples {
                    let _ = writeln!(
                        out,
                        "  - {} -> {}: {}",
                        a.image_reference(),
                        a.key.destination,
                        a.kind.as_str()
                    );
                }
                let _ = writeln!(out);
                let _ = writeln!(out, "Alert ids: {}", s.alert_ids.join(" "));
            }
            Notification::BackfillCompleted(run) => write_backfill(&mut out, run),
        }
        out
    }
}

/// The Region of every destination, when they share one, or `multiple`.
fn one_region_or_multiple<'a>(destinations: impl Iterator<Item = &'a Destination>) -> String {
    let mut regions: Vec<&str> = destinations.map(|d| d.region.as_str()).collect();
    regions.sort_unstable();
    regions.dedup();
    match regions.as_slice() {
        [one] => (*one).to_owned(),
        _ => "multiple".to_owned(),
    }
}

fn write_backfill(out: &mut String, run: &BackfillRun) {
    let _ = writeln!(
        out,
        "Backfill {} of {} finished at {}.",
        run.id,
        run.source,
        run.completed_at.unwrap_or(run.started_at).to_rfc3339()
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "Planned:   {} images", run.planned);
    let _ = writeln!(out, "Copied:    {} images", run.copied);
    let _ = writeln!(out, "Failed:    {} images", run.failed);
    let _ = writeln!(
        out,
        "Uploaded:  {:.1} MiB",
        run.bytes_uploaded as f64 / 1_048_576.0
    );
    if let Some(done) = run.completed_at {
        let _ = writeln!(out, "Took:      {}", human_duration(done - run.started_at));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Destinations:");
    for (destination, planned) in run.destinations.iter().take(SUMMARY_DESTINATION_LINES) {
        let _ = writeln!(out, "  {destination}: {planned} images planned");
    }
    if run.failed > 0 {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "The failed images are logged by backfill-copy with the run id; `replwatch backfill --dry-run` shows what is still missing, and a rerun copies only that."
        );
    }
}

fn write_alert(out: &mut String, a: &Alert) {
    let image = &a.key.image;
    let _ = writeln!(
        out,
        "{} {} in {}.",
        a.image_reference(),
        a.problem(),
        a.key.destination.region
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "Image:       {}", image.digest);
    let _ = writeln!(
        out,
        "Tag:         {}",
        a.key.tag.as_deref().unwrap_or("(untagged)")
    );
    let _ = writeln!(out, "Repository:  {}", image.repository);
    let _ = writeln!(
        out,
        "Source:      {} ({})",
        image.registry.region, image.registry.registry_id
    );
    let _ = writeln!(
        out,
        "Destination: {} ({})",
        a.key.destination.region, a.key.destination.registry_id
    );
    let _ = writeln!(out, "State:       {}", a.kind.as_str());
    if let Some(unreadable) = &a.unreadable {
        let failure = &unreadable.failure;
        let _ = writeln!(
            out,
            "Unreadable:  {} ({}), {}",
            failure.location.region,
            failure.location.registry_id,
            failure.kind.as_str()
        );
        let _ = writeln!(out, "Failing:     {}: {}", failure.operation, failure.error);
        let _ = writeln!(out, "Since:       {}", unreadable.opened_at.to_rfc3339());
        if let Some(at) = unreadable.resolved_at {
            let _ = writeln!(out, "Read again:  {}", at.to_rfc3339());
        }
    }
    if a.incident.is_none() && a.key.occurrence != DateTime::<Utc>::default() {
        let _ = writeln!(out, "Pushed:      {}", a.key.occurrence.to_rfc3339());
    }
    if let Some(age) = a.age() {
        let _ = writeln!(out, "Age:         {}", human_duration(age));
    }
    if let Some(code) = &a.failure_code {
        let _ = writeln!(out, "Failure:     {code}");
    }
    if let Some(incident) = &a.incident {
        let _ = writeln!(out, "Cause:       {}", cause_sentence(incident.cause));
        let _ = writeln!(
            out,
            "In source:   {} (tag {})",
            incident.expected,
            a.key.tag.as_deref().unwrap_or("")
        );
        let held = a
            .tag_held_by
            .as_ref()
            .map_or("nothing".to_owned(), Digest::to_string);
        let _ = writeln!(out, "In dest.:    {held}");
        let _ = writeln!(out, "Since:       {}", incident.opened_at.to_rfc3339());
        if let Some(reason) = incident.resolution {
            let _ = writeln!(out, "Resolved:    {}", reason.describe());
        }
    } else if let Some(holder) = &a.tag_held_by {
        let _ = writeln!(
            out,
            "Tag holder:  {holder} (the destination's tags are immutable)"
        );
    }
    let _ = writeln!(out, "Console:     {}", a.console_url());
    let _ = writeln!(out, "Alert id:    {}", a.id());
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", a.next_step());
}

/// What to do about a registry replwatch cannot read, named by `failure`, for pushes from
/// `source`: the role to look at (the reader role in another account, the function's own role
/// in its account), or waiting out an outage.
pub fn unreadable_fix(failure: &ReadFailure, source: &Destination) -> String {
    let location = &failure.location;
    let account = &location.registry_id;
    let region = &location.region;
    let whose = if location == source {
        "the source registry's"
    } else {
        "this destination's"
    };
    let fix = match failure.kind {
        ReadFailureKind::Refused if account != &source.registry_id => format!(
            "Check the reader role replwatch assumes in account {account} (the destination-account stack in infra/): it must exist, trust replwatch's function role with the configured external id, and allow ecr:DescribeImages, ecr:DescribeRepositories and ecr:DescribeRegistry in {region}. `replwatch doctor` names what is missing."
        ),
        ReadFailureKind::Refused => format!(
            "Check replwatch's function role in account {account}: it must allow ecr:DescribeImages, ecr:DescribeImageReplicationStatus, ecr:DescribeRepositories and ecr:DescribeRegistry in {region}, and no SCP or repository policy may deny them. `replwatch doctor` names what is missing."
        ),
        ReadFailureKind::Unavailable => format!(
            "ECR in {region} (account {account}) keeps throttling or failing replwatch's reads. Check the AWS Health Dashboard and the ECR API quotas of the account; lower the stack's EcrCallBudgetPerSecond if replwatch's own reads are the burst."
        ),
    };
    format!(
        "{} fails: {}. Every push replicated there waits for its verdict (this alert stands for all of them): replwatch retries with backoff, reports each one's real verdict once it can read {whose} registry again, and sends RESOLVED then. {fix}",
        failure.operation, failure.error
    )
}

/// What to do about a tag that names another image in `destination` than `expected`, the
/// image the source's tag names: the alert's next step and `replwatch audit`'s advice.
pub fn tag_fix(
    cause: DivergenceCause,
    destination: &Destination,
    repository: &crate::model::RepositoryName,
    tag: &str,
    expected: &Digest,
) -> String {
    let region = &destination.region;
    let account = &destination.registry_id;
    match cause {
        DivergenceCause::ImmutableHeld => "ECR replicated the image without this tag because the destination repository's tags are immutable and the tag already names another image there. Use a tag that is never reused (a version or commit), add the tag to the repository's immutability exclusion filters, or move it there by hand after deleting the old image.".to_owned(),
        DivergenceCause::OlderReplicationLast => format!(
            "An older push of this tag finished replicating after the newer one and took the tag back: {region} serves the older image as {tag}. Put the tag back on the right image there (it is already in the repository): `aws ecr put-image --region {region} --registry-id {account} --repository-name {repository} --image-tag {tag} --image-manifest \"$(aws ecr batch-get-image --region {region} --registry-id {account} --repository-name {repository} --image-ids imageDigest={expected} --query 'images[0].imageManifest' --output text)\"`."
        ),
        DivergenceCause::ChangedInDestination => format!(
            "The tag was changed in the destination (by hand, or by a copy replwatch did not track). If that was not intended, bring the source's image back under the tag with `replwatch backfill --destination {destination} --repository-prefix {repository} --tag {tag} --apply`."
        ),
    }
}

/// Why a tag incident opened, as an on-call engineer reads it.
pub fn cause_sentence(cause: DivergenceCause) -> &'static str {
    match cause {
        DivergenceCause::ImmutableHeld => {
            "the destination repository's tags are immutable and the tag already named another image there"
        }
        DivergenceCause::OlderReplicationLast => {
            "an older push of the tag finished replicating after the newer one and took the tag back"
        }
        DivergenceCause::ChangedInDestination => {
            "the tag was changed in the destination (no earlier push of it explains the image it names)"
        }
    }
}

/// `2h 5m`, `31m 4s`, `12s`.
pub fn human_duration(d: TimeDelta) -> String {
    let total = d.num_seconds().max(0);
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m"),
    }
}

/// SNS subjects must be ASCII and shorter than 100 characters.
pub const SUBJECT_MAX_CHARS: usize = 99;

/// `s` with characters outside printable ASCII replaced, cut to `max` characters with `...`.
fn truncate_ascii(s: &str, max: usize) -> String {
    let ascii: String = s
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect();
    if ascii.len() <= max {
        return ascii;
    }
    format!("{}...", &ascii[..max - 3])
}

/// Why a notification was not delivered.
#[derive(Debug, thiserror::Error)]
#[error("{sink}: {message}")]
pub struct NotifyError {
    pub sink: &'static str,
    pub message: String,
    /// Whether trying again later may work (throttling, 5xx) or not (bad configuration).
    pub retryable: bool,
}

/// A place notifications go: SNS, Slack, or a test's list.
pub trait Notifier: Send + Sync {
    fn notify(
        &self,
        notification: &Notification,
    ) -> impl Future<Output = Result<(), NotifyError>> + Send;
}

/// Sample alerts for the tests of every sink (`test-support` feature).
#[cfg(any(test, feature = "test-support"))]
// Test support: a panic is the failure report.
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod samples {
    use chrono::{TimeDelta, TimeZone, Utc};

    use super::{Alert, IncidentFacts, UnreadableFacts};
    use crate::incident::{DivergenceCause, ResolutionReason};
    use crate::model::{
        AccountId, Destination, Digest, ExpectationKey, Region, RepositoryName, SourceImage,
    };
    use crate::tracking::AlertKind;
    use crate::unreadable::{ReadFailure, ReadFailureKind};

    /// Alert number `n` of `kind`: `team-a/web:v<n>` from us-west-2/111111111111 to
    /// `region`/222222222222, pushed at 2026-11-20 10:00, detected 31 minutes later, with
    /// failure code `ACCESS_DENIED` when it failed; the tag incident kinds name the image
    /// `sha256:eeee…` as the destination's, opened when detected; UNCONFIRMED names the
    /// destination's registry refusing `AssumeRole`.
    pub fn sample_alert(kind: AlertKind, region: &str, n: u32) -> Alert {
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
            .single()
            .expect("valid time");
        let mut alert = Alert {
            kind,
            key: ExpectationKey {
                image: SourceImage {
                    registry: Destination::new(
                        Region::parse("us-west-2").expect("region"),
                        AccountId::parse("111111111111").expect("account"),
                    ),
                    repository: RepositoryName::parse("team-a/web").expect("repository"),
                    digest: Digest::parse(&format!(
                        "sha256:{}",
                        format!("{:02x}", n % 256).repeat(32)
                    ))
                    .expect("digest"),
                },
                tag: Some(format!("v{n}")),
                destination: Destination::new(
                    Region::parse(region).expect("region"),
                    AccountId::parse("222222222222").expect("account"),
                ),
                occurrence: t0,
            },
            pushed_at: Some(t0),
            detected_at: t0 + TimeDelta::minutes(31),
            failure_code: (kind == AlertKind::Failed).then(|| "ACCESS_DENIED".to_owned()),
            tag_held_by: None,
            incident: None,
            unreadable: None,
        };
        if kind == AlertKind::Unconfirmed {
            alert.unreadable = Some(Box::new(UnreadableFacts {
                opened_at: alert.detected_at,
                failure: ReadFailure {
                    location: alert.key.destination.clone(),
                    kind: ReadFailureKind::Refused,
                    operation: "AssumeRole".to_owned(),
                    error: "AccessDenied: User: arn:aws:sts::111111111111:assumed-role/replwatch-sweep/x is not authorized to perform: sts:AssumeRole".to_owned(),
                },
                resolved_at: None,
            }));
        }
        let cause = match kind {
            AlertKind::TagLost => Some(DivergenceCause::ImmutableHeld),
            AlertKind::TagDiverged | AlertKind::Resolved => {
                Some(DivergenceCause::OlderReplicationLast)
            }
            _ => None,
        };
        if let Some(cause) = cause {
            alert.pushed_at = None;
            alert.key.occurrence = alert.detected_at;
            alert.tag_held_by =
                Some(Digest::parse(&format!("sha256:{}", "ee".repeat(32))).expect("digest"));
            alert.incident = Some(IncidentFacts {
                opened_at: alert.detected_at,
                cause,
                expected: alert.key.image.digest.clone(),
                resolution: (kind == AlertKind::Resolved).then_some(ResolutionReason::Converged),
            });
        }
        alert
    }

    /// A finished backfill run from us-west-2/111111111111 to `destinations` Regions of
    /// 222222222222 (10 images each), started 2026-11-28 06:00 and done 12 minutes later, with
    /// `failed` of the images failed.
    pub fn sample_backfill_run(
        destinations: &[&str],
        failed: u64,
    ) -> crate::backfill::run::BackfillRun {
        let started = Utc
            .with_ymd_and_hms(2026, 11, 28, 6, 0, 0)
            .single()
            .expect("valid time");
        let mut run = crate::backfill::run::BackfillRun::new(
            "run-2026-11-28",
            Destination::new(
                Region::parse("us-west-2").expect("region"),
                AccountId::parse("111111111111").expect("account"),
            ),
            started,
            destinations
                .iter()
                .map(|r| {
                    let d = Destination::new(
                        Region::parse(r).expect("region"),
                        AccountId::parse("222222222222").expect("account"),
                    );
                    (d, 10)
                })
                .collect(),
            300 << 20,
        );
        run.failed = failed.min(run.planned);
        run.copied = run.planned - run.failed;
        run.bytes_uploaded = 200 << 20;
        run.completed_at = Some(started + TimeDelta::minutes(12));
        run
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccountId;

    use super::samples::sample_alert as alert;
    use super::samples::sample_backfill_run;

    #[test]
    fn a_finished_backfill_says_what_was_copied_and_flags_failures() {
        let clean = Notification::BackfillCompleted(sample_backfill_run(&["eu-west-1"], 0));
        assert_eq!(clean.severity(), Severity::Info);
        assert_eq!(clean.kind(), "BACKFILL_COMPLETED");
        assert_eq!(clean.destination_region(), "eu-west-1");
        assert!(
            clean.subject().contains("10 copied, 0 failed"),
            "{}",
            clean.subject()
        );
        let body = clean.body();
        assert!(
            body.contains("Uploaded:  200.0 MiB") && body.contains("Took:      12m"),
            "{body}"
        );
        assert!(!body.contains("rerun"));

        let failing =
            Notification::BackfillCompleted(sample_backfill_run(&["eu-west-1", "us-east-1"], 3));
        assert_eq!(failing.severity(), Severity::Warning);
        assert_eq!(failing.destination_region(), "multiple");
        assert!(failing.subject().contains("17 copied, 3 failed"));
        assert!(failing.body().contains("a rerun copies only that"));
    }

    #[test]
    fn a_single_alert_reads_as_a_sentence_with_every_fact() {
        let n = Notification::Single(alert(AlertKind::Failed, "eu-west-1", 1));
        assert_eq!(
            n.subject(),
            "[replwatch] team-a/web:v1 replication failed to eu-west-1"
        );
        let body = n.body();
        for fact in [
            "team-a/web:v1 replication failed in eu-west-1.",
            "Pushed:      2026-11-20T10:00:00+00:00",
            "sha256:0101",
            "Source:      us-west-2 (111111111111)",
            "Destination: eu-west-1 (222222222222)",
            "State:       FAILED",
            "Age:         31m 0s",
            "Failure:     ACCESS_DENIED",
            "https://us-west-2.console.aws.amazon.com/ecr/repositories/private/111111111111/team-a/web/_/image/sha256:0101",
        ] {
            assert!(body.contains(fact), "missing {fact:?} in\n{body}");
        }
        assert_eq!(n.severity(), Severity::Critical);
        assert_eq!(n.kind(), "FAILED");
        assert_eq!(n.destination_region(), "eu-west-1");
    }

    #[test]
    fn every_push_and_every_incident_has_its_own_alert_id_stable_across_attempts() {
        let first = alert(AlertKind::Overdue, "eu-west-1", 1);
        let mut again = first.clone();
        again.detected_at += TimeDelta::minutes(15);
        assert_eq!(first.id(), again.id(), "the same alert, sent again");
        let mut rollback = first.clone();
        rollback.key.occurrence += TimeDelta::hours(2);
        assert_ne!(
            first.id(),
            rollback.id(),
            "the same image and tag pushed again"
        );
        let opened = alert(AlertKind::TagDiverged, "eu-west-1", 1);
        let mut resolved = opened.clone();
        resolved.kind = AlertKind::Resolved;
        assert_ne!(opened.id(), resolved.id());
        let mut moved = opened.clone();
        moved.key.image.digest = first.key.image.digest.clone();
        moved.tag_held_by = None;
        assert_eq!(
            opened.id(),
            moved.id(),
            "an incident keeps its id whatever it names since"
        );
        let mut reopened = opened.clone();
        if let Some(incident) = reopened.incident.as_mut() {
            incident.opened_at += TimeDelta::hours(1);
        }
        assert_ne!(opened.id(), reopened.id(), "a new incident of the same tag");
        let mut legacy = first.clone();
        legacy.key.occurrence = DateTime::<Utc>::default();
        assert_eq!(
            legacy.dedup_key(),
            "111111111111.dkr.ecr.us-west-2/team-a/web@sha256:0101010101010101010101010101010101010101010101010101010101010101|v1|eu-west-1/222222222222|OVERDUE",
            "alerts stored before occurrences keep their ids"
        );
    }

    #[test]
    fn a_tag_incident_names_both_images_its_cause_and_the_command_that_fixes_it() {
        let diverged = Notification::Single(alert(AlertKind::TagDiverged, "eu-west-1", 1));
        assert_eq!(
            diverged.subject(),
            "[replwatch] team-a/web:v1 names another image than in the source in eu-west-1"
        );
        let body = diverged.body();
        for fact in [
            "In source:   sha256:0101010101010101010101010101010101010101010101010101010101010101 (tag v1)",
            "In dest.:    sha256:eeeeeeee",
            "an older push of the tag finished replicating after the newer one",
            "aws ecr put-image --region eu-west-1 --registry-id 222222222222 --repository-name team-a/web --image-tag v1",
            "imageDigest=sha256:0101",
        ] {
            assert!(body.contains(fact), "missing {fact:?} in\n{body}");
        }
        assert_eq!(diverged.severity(), Severity::Warning);
        let lost = Notification::Single(alert(AlertKind::TagLost, "eu-west-1", 1)).body();
        assert!(lost.contains("immutable"), "{lost}");
        let resolved = Notification::Single(alert(AlertKind::Resolved, "eu-west-1", 1));
        assert_eq!(resolved.severity(), Severity::Info);
        assert!(
            resolved
                .body()
                .contains("the tag names the same image in the destination as in the source again"),
            "{}",
            resolved.body()
        );
    }

    #[test]
    fn a_storm_of_resolutions_is_folded_apart_from_the_problems() {
        let mut alerts: Vec<Alert> = (0..5)
            .map(|i| alert(AlertKind::Overdue, "eu-west-1", i))
            .collect();
        alerts.extend((10..15).map(|i| alert(AlertKind::Resolved, "eu-west-1", i)));
        let out = fold(alerts, 3);
        assert_eq!(out.len(), 2);
        assert!(out[0].headline().starts_with("5 replication problems"));
        assert_eq!(
            out[1].headline(),
            "5 tag incidents resolved in 1 destination"
        );
        assert_eq!(out[1].severity(), Severity::Info);
    }

    #[test]
    fn alerts_up_to_the_threshold_go_one_by_one() {
        let alerts: Vec<Alert> = (0..3)
            .map(|i| alert(AlertKind::Overdue, "eu-west-1", i))
            .collect();
        let out = fold(alerts, 3);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|n| matches!(n, Notification::Single(_))));
    }

    #[test]
    fn a_storm_folds_into_one_summary_with_counts_per_destination() {
        let mut alerts: Vec<Alert> = (0..7)
            .map(|i| alert(AlertKind::Overdue, "eu-west-1", i))
            .collect();
        alerts.extend((10..13).map(|i| alert(AlertKind::Failed, "ap-southeast-2", i)));
        let out = fold(alerts, 5);
        let [Notification::Summary(s)] = out.as_slice() else {
            panic!("expected one summary, got {out:?}")
        };
        assert_eq!(s.total, 10);
        assert_eq!(s.examples.len(), SUMMARY_EXAMPLES);
        let counts: Vec<(String, Vec<(AlertKind, usize)>)> = s
            .by_destination
            .iter()
            .map(|(d, k)| {
                (
                    d.region.to_string(),
                    k.iter().map(|(k, n)| (*k, *n)).collect(),
                )
            })
            .collect();
        assert_eq!(
            counts,
            vec![
                ("ap-southeast-2".to_owned(), vec![(AlertKind::Failed, 3)]),
                ("eu-west-1".to_owned(), vec![(AlertKind::Overdue, 7)]),
            ]
        );
        let n = &out[0];
        assert_eq!(
            n.subject(),
            "[replwatch] 10 replication problems in 2 destinations"
        );
        assert!(
            n.body().contains("ap-southeast-2/222222222222: 3 FAILED"),
            "{}",
            n.body()
        );
        assert_eq!(n.severity(), Severity::Critical);
        assert_eq!(n.destination_region(), "multiple");
    }

    #[test]
    fn untagged_images_are_named_by_short_digest_and_subjects_fit_sns() {
        let mut a = alert(AlertKind::TagLost, "eu-west-1", 2);
        a.key.tag = None;
        assert_eq!(a.image_reference(), "team-a/web@sha256:020202020202");
        a.key.tag = Some(format!("é{}", "x".repeat(300)));
        let subject = Notification::Single(a).subject();
        assert!(subject.len() < 100 && subject.is_ascii(), "{subject}");
        assert!(subject.ends_with("..."), "{subject}");
    }

    #[test]
    fn a_summary_over_many_destinations_stays_bounded() {
        let alerts: Vec<Alert> = (0..60)
            .map(|i| {
                let mut a = alert(AlertKind::Overdue, "eu-west-1", i);
                a.key.destination.registry_id =
                    AccountId::parse(&format!("{:012}", 100_000_000_000u64 + u64::from(i)))
                        .expect("account");
                a
            })
            .collect();
        let body = fold(alerts, 10)[0].body();
        assert!(body.contains("... and 30 more destinations"), "{body}");
        assert!(body.lines().count() < 50, "{body}");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(TimeDelta::seconds(12)), "12s");
        assert_eq!(human_duration(TimeDelta::seconds(31 * 60 + 4)), "31m 4s");
        assert_eq!(human_duration(TimeDelta::minutes(125)), "2h 5m");
    }
}
