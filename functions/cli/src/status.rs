//! `replwatch status <repository>[:tag|@digest]`: one image, every destination its rules
//! select, with ECR's state (`DescribeImageReplicationStatus`), the failure code, and the
//! latency (arrival in the destination, `DescribeImages` there, minus the push) or the age of a
//! replication still in progress. `--wait` polls until every destination is COMPLETE or one
//! FAILED: what pipelines poll for before deploying from another Region.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use replwatch_aws::ecr::EcrRegistry;
use replwatch_aws::ecr_clients::EcrClients;
use replwatch_aws::ecr_images::{EcrImages, ImageReference};
use replwatch_aws::ecr_inventory::EcrInventoryReader;
use replwatch_aws::ecr_referrers::referrers;
use replwatch_core::backfill::port::InventoryReader;
use replwatch_core::model::{Destination, Digest, RepositoryName, SourceImage};
use replwatch_core::registry::{
    DestinationReplication, ImageReplicationStatus, Registry, RegistryError,
};
use replwatch_core::tracking::TagArrival;
use serde::Serialize;

use crate::Outcome;
use crate::args::{GlobalOptions, StatusArgs};
use crate::aws::{AwsSetupError, cross_account_access, home_registry, sdk_config};
use crate::output::{OutputFormat, Table};

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Setup(#[from] AwsSetupError),
    #[error("{0}")]
    Aws(#[from] RegistryError),
    #[error("{0}")]
    Reference(String),
    #[error("{reference} is not in {registry}")]
    NotFound { reference: String, registry: String },
}

/// `repository`, `repository:tag` or `repository@sha256:…` (no tag: `latest`, as docker does).
pub fn parse_reference(value: &str) -> Result<(RepositoryName, ImageReference), String> {
    let (name, reference) = if let Some((name, digest)) = value.split_once('@') {
        let digest = Digest::parse(digest).map_err(|e| format!("{value}: {e}"))?;
        (name, ImageReference::Digest(digest))
    } else {
        // A ':' after the last '/' starts the tag (a registry host with a port has its ':'
        // before a '/').
        let slash = value.rfind('/').map_or(0, |at| at + 1);
        match value[slash..].rfind(':') {
            Some(at) => (
                &value[..slash + at],
                ImageReference::Tag(value[slash + at + 1..].to_owned()),
            ),
            None => (value, ImageReference::Tag("latest".to_owned())),
        }
    };
    if let ImageReference::Tag(tag) = &reference
        && tag.is_empty()
    {
        return Err(format!("{value}: empty tag"));
    }
    let repository = RepositoryName::parse(name).map_err(|e| format!("{value}: {e}"))?;
    Ok((repository, reference))
}

/// One destination's state, as printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    InProgress,
    Complete,
    Failed,
    /// ECR is not replicating it there, but the image is there (a backfill copied it).
    Present,
    /// The rules select the destination but ECR replicates the image nowhere there (pushed
    /// before the rule existed: a backfill brings it).
    NotReplicating,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationStatus {
    pub destination: Destination,
    pub state: State,
    pub failure_code: Option<String>,
    /// Push to arrival, for an arrived image whose destination copy could be read.
    pub latency_seconds: Option<i64>,
    /// Since the push, while in progress.
    pub age_seconds: Option<i64>,
    /// What became of the tag asked for in the destination copy, as replwatch's alerts judge
    /// it (`None`: not asked by tag, or not readable).
    pub tag: Option<TagStatus>,
    /// The image the tag names there instead, when it is lost or diverged (a tag incident).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_names: Option<Digest>,
    /// Of the image's referrers in the source (signatures, SBOMs, attestations), how many are
    /// here (`None`: the image has none, is not here, or they could not be listed).
    pub referrers: Option<Referrers>,
}

/// Referrers of the image that arrived in one destination, of those in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrers {
    pub arrived: usize,
    pub of: usize,
}

/// The tag asked for, in one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TagStatus {
    Present,
    /// Not on any image there (deleted there by hand).
    Moved,
    /// The destination's immutable tags kept it on another image: ECR dropped it (replwatch's
    /// TAG_LOST incident).
    Lost,
    /// It names another image there, in a mutable repository: an older push finished
    /// replicating last, or it was changed there (replwatch's TAG_DIVERGED incident).
    Diverged,
}

/// What the states add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Complete,
    /// At least one destination failed or will never get the image by itself.
    Failed,
    /// The image is everywhere, but the tag names another image in some destination: pulling
    /// it by tag there gets another image.
    TagDiverged,
    Pending,
}

pub fn verdict(statuses: &[DestinationStatus]) -> Verdict {
    if statuses
        .iter()
        .any(|s| matches!(s.state, State::Failed | State::NotReplicating))
    {
        Verdict::Failed
    } else if statuses
        .iter()
        .any(|s| matches!(s.tag, Some(TagStatus::Lost | TagStatus::Diverged)))
    {
        Verdict::TagDiverged
    } else if statuses.iter().any(|s| s.state == State::InProgress) {
        Verdict::Pending
    } else {
        Verdict::Complete
    }
}

/// `90s`, `30m`, `2h`, or plain seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let (number, unit) = value
        .find(|c: char| !c.is_ascii_digit())
        .map_or((value, "s"), |at| value.split_at(at));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a duration like 90s, 30m or 2h"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        _ => return Err(format!("{value:?}: the unit is s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    image: String,
    digest: &'a Digest,
    pushed_at: Option<DateTime<Utc>>,
    verdict: Verdict,
    timed_out: bool,
    destinations: &'a [DestinationStatus],
}

pub async fn run(global: &GlobalOptions, args: &StatusArgs) -> Result<Outcome, StatusError> {
    let (repository, reference) = parse_reference(&args.image).map_err(StatusError::Reference)?;
    let config = sdk_config(global).await?;
    let source = home_registry(&config).await?;
    let home = source.registry_id.clone();
    let access = cross_account_access(global);
    let images = EcrImages::new(config.clone(), home.clone(), access.clone());
    let registry = EcrRegistry::new(config.clone(), home.clone(), access.clone());
    let rules = EcrInventoryReader::new(config, home, access)
        .replication_configuration(&source)
        .await?;

    let record = images
        .describe(&source, &repository, &reference)
        .await?
        .ok_or_else(|| StatusError::NotFound {
            reference: args.image.clone(),
            registry: source.to_string(),
        })?;
    let image = SourceImage {
        registry: source.clone(),
        repository: repository.clone(),
        digest: record.digest.clone(),
    };
    let tag = match &reference {
        ImageReference::Tag(tag) => Some(tag.clone()),
        ImageReference::Digest(_) => None,
    };
    let expected = rules.destinations_for(&source, &repository);
    let started = Instant::now();
    let (statuses, timed_out) = loop {
        let statuses = poll(
            &registry,
            &images,
            &image,
            tag.as_deref(),
            record.pushed_at,
            &expected,
        )
        .await?;
        let pending = verdict(&statuses) == Verdict::Pending;
        if !args.wait || !pending {
            break (statuses, false);
        }
        if started.elapsed() >= args.timeout {
            break (statuses, true);
        }
        tokio::time::sleep(
            args.interval
                .min(args.timeout.saturating_sub(started.elapsed())),
        )
        .await;
    };
    let verdict = verdict(&statuses);
    print_report(
        &Report {
            image: args.image.clone(),
            digest: &image.digest,
            pushed_at: record.pushed_at,
            verdict,
            timed_out,
            destinations: &statuses,
        },
        global.output,
    );
    Ok(match verdict {
        Verdict::Complete => Outcome::Clean,
        Verdict::Failed | Verdict::TagDiverged | Verdict::Pending => Outcome::Findings,
    })
}

async fn poll(
    registry: &EcrRegistry,
    images: &EcrImages,
    image: &SourceImage,
    tag: Option<&str>,
    pushed_at: Option<DateTime<Utc>>,
    expected: &[Destination],
) -> Result<Vec<DestinationStatus>, StatusError> {
    let listed = match registry.replication_status(image).await? {
        ImageReplicationStatus::Found(listed) => listed,
        ImageReplicationStatus::SourceImageNotFound => {
            return Err(StatusError::NotFound {
                reference: image.to_string(),
                registry: image.registry.to_string(),
            });
        }
    };
    let mut destinations: Vec<Destination> = expected.to_vec();
    for (destination, _) in &listed {
        if !destinations.contains(destination) {
            destinations.push(destination.clone());
        }
    }
    let now = Utc::now();
    // The clients of the image reads, and the roles they assumed, list the referrers too.
    let clients = images.clients();
    let source_referrers = listed_referrers(clients, &image.registry, image).await;
    let mut statuses = Vec::with_capacity(destinations.len());
    for destination in destinations {
        let replication = listed
            .iter()
            .find(|(d, _)| *d == destination)
            .map(|(_, r)| r.clone());
        let mut status = DestinationStatus {
            destination: destination.clone(),
            state: State::NotReplicating,
            failure_code: None,
            latency_seconds: None,
            age_seconds: None,
            tag: None,
            tag_names: None,
            referrers: None,
        };
        match replication {
            None => {
                if let Some(copy) = read_copy(images, &destination, image).await {
                    status.state = State::Present;
                    (status.tag, status.tag_names) =
                        tag_status(registry, image, &destination, tag, &copy).await;
                }
            }
            Some(DestinationReplication::InProgress) => {
                status.state = State::InProgress;
                status.age_seconds = pushed_at.map(|at| (now - at).num_seconds());
            }
            Some(DestinationReplication::Failed { failure_code }) => {
                status.state = State::Failed;
                status.failure_code = failure_code;
            }
            Some(DestinationReplication::Complete) => {
                status.state = State::Complete;
                // The copy in the destination says when it arrived and with which tags.
                if let Some(copy) = read_copy(images, &destination, image).await {
                    status.latency_seconds = match (pushed_at, copy.pushed_at) {
                        (Some(pushed), Some(arrived)) => {
                            Some((arrived - pushed).num_seconds().max(0))
                        }
                        _ => None,
                    };
                    (status.tag, status.tag_names) =
                        tag_status(registry, image, &destination, tag, &copy).await;
                }
            }
        }
        if matches!(status.state, State::Present | State::Complete)
            && let Some(source) = source_referrers.as_ref().filter(|r| !r.is_empty())
            && let Some(here) = listed_referrers(clients, &destination, image).await
        {
            status.referrers = Some(Referrers {
                arrived: source.iter().filter(|d| here.contains(d)).count(),
                of: source.len(),
            });
        }
        statuses.push(status);
    }
    Ok(statuses)
}

/// The image's referrers in `registry`; unknown when they cannot be listed (an account the
/// role cannot reach, a role without `ecr:ListImageReferrers`).
async fn listed_referrers(
    clients: &EcrClients,
    registry: &Destination,
    image: &SourceImage,
) -> Option<Vec<Digest>> {
    match referrers(clients, registry, &image.repository, &image.digest).await {
        Ok(listed) => Some(listed),
        Err(error) => {
            tracing::warn!(%registry, error = %error, "referrers not listed");
            None
        }
    }
}

/// What became of `tag` on the copy, judged as the tracking pipeline judges it, and the image
/// the tag names there instead; unknown when ECR could not be asked.
async fn tag_status(
    registry: &EcrRegistry,
    image: &SourceImage,
    destination: &Destination,
    tag: Option<&str>,
    copy: &replwatch_core::backfill::inventory::ImageRecord,
) -> (Option<TagStatus>, Option<Digest>) {
    let Some(tag) = tag else {
        return (None, None);
    };
    if copy.tags.iter().any(|t| t == tag) {
        return (Some(TagStatus::Present), None);
    }
    match replwatch_core::registry::missing_tag(registry, image, destination, tag).await {
        Ok(TagArrival::Lost { held_by }) => (Some(TagStatus::Lost), Some(held_by)),
        Ok(_) => {
            // The source's tag names this image (it was asked by tag): another image under
            // the tag there is the tag's incident, whatever the repository's mutability.
            match registry
                .tagged_image(destination, &image.repository, tag)
                .await
            {
                Ok(Some(other)) if other != image.digest => {
                    (Some(TagStatus::Diverged), Some(other))
                }
                Ok(_) => (Some(TagStatus::Moved), None),
                Err(_) => (None, None),
            }
        }
        Err(_) => (None, None),
    }
}

/// The image's copy in `destination`; an account the role cannot reach leaves it unknown
/// rather than failing the whole status.
async fn read_copy(
    images: &EcrImages,
    destination: &Destination,
    image: &SourceImage,
) -> Option<replwatch_core::backfill::inventory::ImageRecord> {
    match images
        .describe(
            destination,
            &image.repository,
            &ImageReference::Digest(image.digest.clone()),
        )
        .await
    {
        Ok(copy) => copy,
        Err(error) => {
            tracing::warn!(%destination, error = %error, "destination copy not readable");
            None
        }
    }
}

fn print_report(report: &Report<'_>, format: OutputFormat) {
    if format == OutputFormat::Json {
        match serde_json::to_string_pretty(report) {
            Ok(json) => outln!("{json}"),
            Err(e) => eprintln!("replwatch: cannot write JSON: {e}"),
        }
        return;
    }
    let mut table = Table::new(&[
        "destination",
        "state",
        "failure code",
        "latency",
        "age",
        "tag",
        "referrers",
    ]);
    for s in report.destinations {
        table.push(vec![
            s.destination.to_string(),
            serde_json::to_value(&s.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            s.failure_code.clone().unwrap_or_else(|| "-".into()),
            s.latency_seconds.map_or("-".into(), seconds),
            s.age_seconds.map_or("-".into(), seconds),
            match (s.tag, &s.tag_names) {
                (Some(TagStatus::Present), _) => "present".into(),
                (Some(TagStatus::Moved), _) => "moved".into(),
                (Some(TagStatus::Lost), names) => names_other("LOST", names.as_ref()),
                (Some(TagStatus::Diverged), names) => names_other("DIVERGED", names.as_ref()),
                (None, _) => "-".into(),
            },
            s.referrers
                .map_or("-".into(), |r| format!("{}/{}", r.arrived, r.of)),
        ]);
    }
    outln!(
        "{} ({}), pushed {}: {}{}\n",
        report.image,
        report.digest,
        report
            .pushed_at
            .map_or("at an unknown time".into(), |t| t.to_rfc3339()),
        match report.verdict {
            Verdict::Complete => "replicated everywhere",
            Verdict::Failed => "failed or not replicating somewhere",
            Verdict::TagDiverged => "the tag names another image somewhere",
            Verdict::Pending => "in progress",
        },
        if report.timed_out {
            " (gave up waiting)"
        } else {
            ""
        },
    );
    match format {
        OutputFormat::Markdown => out!("{}", table.to_markdown()),
        _ => out!("{}", table.to_text()),
    }
    if report.destinations.is_empty() {
        outln!("(no destination: the replication rules select none for this repository)");
    }
}

/// `DIVERGED (names sha256:3b1f1c2e4d5a)`: the tag's state and the image it names there.
fn names_other(state: &str, names: Option<&Digest>) -> String {
    match names {
        Some(digest) => format!("{state} (names {})", digest.short()),
        None => state.to_owned(),
    }
}

fn seconds(value: i64) -> String {
    match value {
        v if v < 120 => format!("{v}s"),
        v if v < 7200 => format!("{}m{:02}s", v / 60, v % 60),
        v => format!("{}h{:02}m", v / 3600, (v % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replwatch_core::model::{AccountId, Region};

    fn status(state: State) -> DestinationStatus {
        DestinationStatus {
            destination: Destination::new(
                Region::parse("eu-west-1").expect("region"),
                AccountId::parse("222222222222").expect("account"),
            ),
            state,
            failure_code: None,
            latency_seconds: None,
            age_seconds: None,
            tag: None,
            tag_names: None,
            referrers: None,
        }
    }

    #[test]
    fn references_take_a_tag_a_digest_or_default_to_latest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parse_reference("team-a/web:v1.2").map(|(r, i)| (r.to_string(), i)),
            Ok((
                "team-a/web".to_owned(),
                ImageReference::Tag("v1.2".to_owned())
            ))
        );
        assert_eq!(
            parse_reference(&format!("team-a/web@{digest}")).map(|(_, i)| i),
            Ok(ImageReference::Digest(
                Digest::parse(&digest).expect("digest")
            ))
        );
        assert_eq!(
            parse_reference("web").map(|(_, i)| i),
            Ok(ImageReference::Tag("latest".to_owned()))
        );
        assert!(parse_reference("web:").is_err());
        assert!(parse_reference("web@sha256:short").is_err());
    }

    #[test]
    fn one_failure_decides_and_in_progress_waits() {
        use State::*;
        assert_eq!(
            verdict(&[status(Complete), status(Complete)]),
            Verdict::Complete
        );
        assert_eq!(
            verdict(&[status(Complete), status(InProgress)]),
            Verdict::Pending
        );
        assert_eq!(
            verdict(&[status(InProgress), status(Failed)]),
            Verdict::Failed
        );
        assert_eq!(
            verdict(&[status(Complete), status(NotReplicating)]),
            Verdict::Failed
        );
        let mut diverged = status(Complete);
        diverged.tag = Some(TagStatus::Diverged);
        assert_eq!(
            verdict(&[status(Complete), diverged]),
            Verdict::TagDiverged,
            "pulling the tag there gets another image"
        );
        assert_eq!(verdict(&[]), Verdict::Complete);
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
        assert_eq!(seconds(75), "75s");
        assert_eq!(seconds(3 * 60 + 5), "3m05s");
    }
}
