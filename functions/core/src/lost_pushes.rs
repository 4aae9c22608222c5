//! The backstop for lost push events: ECR sends its `ECR Image Action` events to EventBridge
//! on a best-effort basis, so a PUSH event can be lost, and a push whose event was lost would
//! never be tracked. On a schedule, [`find_lost_pushes`] lists the images of the source
//! repositories the replication rules select, takes those whose `imagePushedAt` falls in a
//! window that ends a margin in the past (younger pushes may still be on their way through
//! EventBridge and the push queue), and tracks every (image, tag) without a tracked push
//! since, through the same path as its PUSH event ([`Pipeline::handle`]): the deadline is the
//! push time plus the SLA and the normal sweep checks every destination.
//!
//! What it can see is what `DescribeImages` says (`ImageDetail`, ECR API reference): one
//! `imagePushedAt` per image, "at which the current image was pushed to the repository", and
//! the tags it carries now. So:
//! - a lost push of a new image (a digest not in the repository before) is found, and tracked
//!   at its real push time (whole seconds, as ECR's event times are, so a late event of the
//!   same second is the same push);
//! - a tag added to an image already there (a re-push of the same digest with another tag),
//!   whose event was lost: found only while the image's first push is in the window, and
//!   tracked at the time it was found, since its own push time is not in the API (a later
//!   deadline than the real one: never a false OVERDUE, at worst a late one);
//! - a tag moved away again before the check, an image deleted since, a re-push of an image
//!   and tag already tracked (a rollback), a re-tag of an image first pushed before the
//!   window, a restore from the archive (`lastActivatedAt` is not a push): not seen.
//!
//! Idempotent: a push already tracked is left as it is (the tracking write is conditional),
//! so concurrent or repeated runs track each lost push once and count it in each run that
//! found it untracked only until one of them tracked it.

use std::future::Future;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::stream::{self, StreamExt};

use crate::backfill::inventory::ImageRecord;
use crate::clock::{Clock, DEADLINE_MARGIN, whole_seconds};
use crate::events::{EcrEvent, EventEnvelope, ImageActionKind, ImageEvent};
use crate::model::{Destination, RepositoryName, SourceImage};
use crate::pipeline::{Pipeline, PipelineError};
use crate::registry::{Registry, RegistryError};
use crate::rules::ReplicationConfiguration;
use crate::store::{ExpectationStore, RulesRecord};

/// How much earlier than `imagePushedAt` a tracked push may be stamped and still be the same
/// push: the event's time is ECR's, taken around the same instant, in whole seconds.
pub const PUSH_TIME_TOLERANCE: TimeDelta = TimeDelta::minutes(1);

/// Repositories whose images are listed at once.
pub const REPOSITORY_CONCURRENCY: usize = 8;

/// Lists what a source registry holds, repository by repository (`DescribeRepositories`,
/// `DescribeImages`, paginated).
pub trait SourceImages: Send + Sync {
    /// Every repository of `registry` whose name starts with one of `prefixes` (all when
    /// empty).
    fn repository_names(
        &self,
        registry: &Destination,
        prefixes: &[String],
    ) -> impl Future<Output = Result<Vec<RepositoryName>, RegistryError>> + Send;

    /// Every image of `repository` in `registry`, or `None` when the repository is gone.
    fn images(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
    ) -> impl Future<Output = Result<Option<Vec<ImageRecord>>, RegistryError>> + Send;
}

/// The pushes one run looks at: `imagePushedAt` in `[from, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushWindow {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl PushWindow {
    /// The window of a run at `now` on a schedule of every `interval`: it ends `margin` ago
    /// and spans two intervals, so every push is looked at by two runs and one run that did
    /// not happen (or failed) loses nothing.
    pub fn scheduled(now: DateTime<Utc>, interval: TimeDelta, margin: TimeDelta) -> Self {
        let until = now - margin;
        Self {
            from: until - interval * 2,
            until,
        }
    }

    fn holds(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && at < self.until
    }
}

/// One (image, tag) pushed without a tracked push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostPush {
    pub image: SourceImage,
    pub tag: Option<String>,
    /// `imagePushedAt`.
    pub pushed_at: DateTime<Utc>,
    /// The push time it was tracked with: `pushed_at` in whole seconds, or when it was found
    /// for a tag added to an image already tracked.
    pub tracked_at: DateTime<Utc>,
    /// Whether this run wrote its push (another run may have just done it).
    pub written: bool,
}

/// What one run found.
#[derive(Debug, Default)]
pub struct LostPushReport {
    /// Repositories the rules select that were checked to the end (or failed).
    pub repositories: usize,
    /// Images pushed in the window, in the repositories listed.
    pub images: usize,
    pub lost: Vec<LostPush>,
    /// Repositories not checked to the end because the run was out of time (the next run
    /// starts elsewhere).
    pub repositories_left: usize,
    /// Repositories or images that could not be read (listing, table), with the error: the
    /// others were checked.
    pub failures: Vec<String>,
}

/// The repository name prefixes that select every repository some rule selects: none (all)
/// when a rule has no filter.
fn selecting_prefixes(configuration: &ReplicationConfiguration) -> Vec<String> {
    if configuration
        .rules
        .iter()
        .any(|r| r.repository_filters.is_empty())
    {
        return Vec::new();
    }
    let mut prefixes: Vec<String> = configuration
        .rules
        .iter()
        .flat_map(|r| r.repository_filters.iter().map(|f| f.filter.clone()))
        .collect();
    prefixes.sort();
    prefixes.dedup();
    prefixes
}

/// Finds the pushes of `source` in `window` that are not tracked, and tracks them as their
/// PUSH event would have. Stops when `deadline` (if any) is near; each run starts at another
/// repository so that a registry too large for one run is covered by the next ones.
pub async fn find_lost_pushes<S, R, C, L>(
    pipeline: &Pipeline<S, R, C>,
    lister: &L,
    source: &Destination,
    window: PushWindow,
    deadline: Option<DateTime<Utc>>,
) -> Result<LostPushReport, PipelineError>
where
    S: ExpectationStore + RulesRecord,
    R: Registry,
    C: Clock,
    L: SourceImages,
{
    let configuration = pipeline.configuration(source).await?;
    let mut report = LostPushReport::default();
    if configuration.rules.is_empty() {
        return Ok(report);
    }
    let mut repositories: Vec<RepositoryName> = lister
        .repository_names(source, &selecting_prefixes(&configuration))
        .await?
        .into_iter()
        .filter(|r| !configuration.destinations_for(source, r).is_empty())
        .collect();
    if !repositories.is_empty() {
        // A start that moves pseudo-randomly from run to run: a plain minute count would
        // repeat itself whenever the number of repositories divides the schedule's interval.
        let mixed = (window.until.timestamp() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let count = repositories.len();
        repositories.rotate_left(usize::try_from(mixed).unwrap_or_default() % count);
    }
    let total = repositories.len();
    let listings = stream::iter(repositories)
        .map(|repository| async move {
            let images = lister.images(source, &repository).await;
            (repository, images)
        })
        .buffered(REPOSITORY_CONCURRENCY);
    futures_util::pin_mut!(listings);
    let near_deadline = || deadline.is_some_and(|d| d - pipeline.clock().now() < DEADLINE_MARGIN);
    'repositories: while let Some((repository, images)) = listings.next().await {
        // One repository or image that cannot be read never hides the others: it is reported
        // and the run goes on.
        let images = match images {
            Ok(images) => images,
            Err(error) => {
                report.failures.push(format!("{repository}: {error}"));
                report.repositories += 1;
                continue;
            }
        };
        let in_window: Vec<(SourceImage, ImageRecord, DateTime<Utc>)> = images
            .unwrap_or_default()
            .into_iter()
            .filter(|record| !record.archived)
            .filter_map(|record| {
                let pushed_at = record.pushed_at.filter(|at| window.holds(*at))?;
                let image = SourceImage {
                    registry: source.clone(),
                    repository: repository.clone(),
                    digest: record.digest.clone(),
                };
                Some((image, record, pushed_at))
            })
            .collect();
        report.images += in_window.len();
        // Each image is a read or two of the table: many at once, as the sweep confirms.
        let checks = stream::iter(in_window)
            .map(|(image, record, pushed_at)| async move {
                track_untracked(pipeline, &image, &record, pushed_at)
                    .await
                    .map_err(|error| format!("{image}: {error}"))
            })
            .buffer_unordered(pipeline.settings().sweep_concurrency.max(1));
        futures_util::pin_mut!(checks);
        while let Some(found) = checks.next().await {
            match found {
                Ok(lost) => report.lost.extend(lost),
                Err(failure) => report.failures.push(failure),
            }
            if near_deadline() {
                // This repository was not finished: it counts as left.
                break 'repositories;
            }
        }
        report.repositories += 1;
        if near_deadline() {
            break;
        }
    }
    report.repositories_left = total - report.repositories;
    Ok(report)
}

/// Tracks each tag of `record` (or the untagged image) that has no tracked push at or after
/// its push time.
async fn track_untracked<S, R, C>(
    pipeline: &Pipeline<S, R, C>,
    image: &SourceImage,
    record: &ImageRecord,
    pushed_at: DateTime<Utc>,
) -> Result<Vec<LostPush>, PipelineError>
where
    S: ExpectationStore + RulesRecord,
    R: Registry,
    C: Clock,
{
    let store = pipeline.store();
    let since = pushed_at - PUSH_TIME_TOLERANCE;
    let pushed_since = async || -> Result<bool, PipelineError> {
        Ok(store
            .pushes_of(image)
            .await?
            .iter()
            .any(|p| p.pushed_at >= since))
    };
    let mut untracked: Vec<Option<String>> = Vec::new();
    // A digest whose own push was tracked got the missing tags later, at a time the API does
    // not give: tracked from now, so its deadline is never earlier than the real one.
    let digest_tracked = if record.tags.is_empty() {
        // Untagged now: pushed untagged, or its tags moved on since; any push of it counts.
        if pushed_since().await? {
            return Ok(Vec::new());
        }
        untracked.push(None);
        false
    } else {
        for tag in &record.tags {
            let latest = store.latest_push(image, Some(tag), None).await?;
            if latest.is_none_or(|p| p.pushed_at < since) {
                untracked.push(Some(tag.clone()));
            }
        }
        if untracked.is_empty() {
            return Ok(Vec::new());
        }
        record.tags.len() > untracked.len() || pushed_since().await?
    };
    let tracked_at = if digest_tracked {
        whole_seconds(pipeline.clock().now())
    } else {
        whole_seconds(pushed_at)
    };
    let mut lost = Vec::with_capacity(untracked.len());
    for tag in untracked {
        let event = EcrEvent::Image(ImageEvent {
            envelope: EventEnvelope {
                id: format!(
                    "replwatch-lost-push:{image}:{}",
                    tag.as_deref().unwrap_or("")
                ),
                detail_type: "ECR Image Action".to_owned(),
                source: "aws.ecr".to_owned(),
                account: image.registry.registry_id.clone(),
                time: tracked_at,
                region: image.registry.region.clone(),
                resources: Vec::new(),
            },
            action: ImageActionKind::Push,
            image: image.clone(),
            tag: tag.clone(),
            manifest_media_type: record.media_type.clone(),
        });
        let effects = pipeline.handle(&event).await?;
        lost.push(LostPush {
            image: image.clone(),
            tag,
            pushed_at,
            tracked_at,
            written: effects.pushes_written > 0,
        });
    }
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::backfill::inventory::TagMutability;
    use crate::clock::ManualClock;
    use crate::model::{AccountId, Digest, Region};
    use crate::pipeline::PipelineSettings;
    use crate::registry::ImageReplicationStatus;
    use crate::store::InMemoryStore;

    /// A source registry: its rules and what `DescribeImages` lists; every other read is
    /// refused (the backstop must not need it).
    #[derive(Default)]
    struct SourceRegistry {
        rules: ReplicationConfiguration,
        images: Mutex<BTreeMap<RepositoryName, Vec<ImageRecord>>>,
        listed: Mutex<Vec<RepositoryName>>,
    }

    fn refused(operation: &'static str) -> RegistryError {
        RegistryError {
            operation,
            resource: "source".into(),
            message: "not expected".into(),
            retryable: false,
        }
    }

    impl Registry for SourceRegistry {
        async fn replication_status(
            &self,
            _: &SourceImage,
        ) -> Result<ImageReplicationStatus, RegistryError> {
            Err(refused("DescribeImageReplicationStatus"))
        }
        async fn image_tags(
            &self,
            _: &Destination,
            _: &RepositoryName,
            _: &Digest,
        ) -> Result<Option<Vec<String>>, RegistryError> {
            Err(refused("DescribeImages"))
        }
        async fn tagged_image(
            &self,
            _: &Destination,
            _: &RepositoryName,
            _: &str,
        ) -> Result<Option<Digest>, RegistryError> {
            Err(refused("DescribeImages"))
        }
        async fn tag_mutability(
            &self,
            _: &Destination,
            _: &RepositoryName,
        ) -> Result<Option<TagMutability>, RegistryError> {
            Err(refused("DescribeRepositories"))
        }
        async fn replication_configuration(
            &self,
            _: &Destination,
        ) -> Result<ReplicationConfiguration, RegistryError> {
            Ok(self.rules.clone())
        }
    }

    impl SourceImages for SourceRegistry {
        async fn repository_names(
            &self,
            _: &Destination,
            prefixes: &[String],
        ) -> Result<Vec<RepositoryName>, RegistryError> {
            let images = self.images.lock().expect("images");
            Ok(images
                .keys()
                .filter(|n| {
                    prefixes.is_empty() || prefixes.iter().any(|p| n.as_str().starts_with(p))
                })
                .cloned()
                .collect())
        }
        async fn images(
            &self,
            _: &Destination,
            repository: &RepositoryName,
        ) -> Result<Option<Vec<ImageRecord>>, RegistryError> {
            self.listed.lock().expect("listed").push(repository.clone());
            if repository.as_str().ends_with("/denied") {
                return Err(refused("DescribeImages"));
            }
            Ok(self.images.lock().expect("images").get(repository).cloned())
        }
    }

    fn destination(region: &str, account: &str) -> Destination {
        Destination::new(
            Region::parse(region).expect("region"),
            AccountId::parse(account).expect("account"),
        )
    }

    fn source() -> Destination {
        destination("us-west-2", "111111111111")
    }

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 250_000_000).expect("time")
    }

    fn digest(n: u8) -> Digest {
        Digest::from_sha256(&[n; 32])
    }

    fn record(n: u8, tags: &[&str], pushed_at: DateTime<Utc>) -> ImageRecord {
        ImageRecord {
            digest: digest(n),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            pushed_at: Some(pushed_at),
            media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
            size_bytes: Some(1),
            subject: None,
            artifact_type: None,
            archived: false,
            children: Vec::new(),
        }
    }

    fn repo(name: &str) -> RepositoryName {
        RepositoryName::parse(name).expect("repository")
    }

    /// `team-a/` replicates to one destination; `other/` is selected by no rule.
    fn registry(images: Vec<(&str, ImageRecord)>) -> SourceRegistry {
        let rules = serde_json::from_value(serde_json::json!({"rules": [
            {"destinations": [destination("us-east-1", "111111111111")],
             "repositoryFilters": [{"filter": "team-a/", "filterType": "PREFIX_MATCH"}]}
        ]}))
        .expect("rules");
        let mut by_repository: BTreeMap<RepositoryName, Vec<ImageRecord>> = BTreeMap::new();
        for (name, image) in images {
            by_repository.entry(repo(name)).or_default().push(image);
        }
        SourceRegistry {
            rules,
            images: Mutex::new(by_repository),
            listed: Mutex::default(),
        }
    }

    type TestPipeline<'a> = Pipeline<InMemoryStore, &'a SourceRegistry, ManualClock>;

    fn pipeline(registry: &SourceRegistry, now: DateTime<Utc>) -> TestPipeline<'_> {
        Pipeline::new(
            InMemoryStore::new(),
            registry,
            ManualClock::new(now),
            PipelineSettings::default(),
        )
    }

    fn image(repository: &str, n: u8) -> SourceImage {
        SourceImage {
            registry: source(),
            repository: repo(repository),
            digest: digest(n),
        }
    }

    /// What the PUSH event of `image` with `tag` at `at` does.
    async fn push_event(
        pipeline: &TestPipeline<'_>,
        image: &SourceImage,
        tag: Option<&str>,
        at: DateTime<Utc>,
    ) {
        let event = EcrEvent::Image(ImageEvent {
            envelope: EventEnvelope {
                id: "delivered".into(),
                detail_type: "ECR Image Action".into(),
                source: "aws.ecr".into(),
                account: image.registry.registry_id.clone(),
                time: at,
                region: image.registry.region.clone(),
                resources: Vec::new(),
            },
            action: ImageActionKind::Push,
            image: image.clone(),
            tag: tag.map(str::to_owned),
            manifest_media_type: None,
        });
        pipeline.handle(&event).await.expect("push event");
    }

    const INTERVAL: TimeDelta = TimeDelta::minutes(15);
    const MARGIN: TimeDelta = TimeDelta::minutes(15);

    #[tokio::test]
    async fn a_push_whose_event_was_lost_is_tracked_at_its_push_time_and_only_once() {
        let now = t(3600);
        let registry = registry(vec![
            ("team-a/web", record(1, &["v1"], t(3600 - 20 * 60))),
            ("team-a/web", record(2, &["v2"], t(3600 - 25 * 60))),
        ]);
        let pipeline = pipeline(&registry, now);
        // The second image's event was delivered (stamped in its whole second).
        let delivered = image("team-a/web", 2);
        push_event(
            &pipeline,
            &delivered,
            Some("v2"),
            whole_seconds(t(3600 - 25 * 60)),
        )
        .await;
        let window = PushWindow::scheduled(now, INTERVAL, MARGIN);

        let report = find_lost_pushes(&pipeline, &registry, &source(), window, None)
            .await
            .expect("run");
        assert_eq!((report.repositories, report.images), (1, 2));
        assert_eq!(report.lost.len(), 1, "{:?}", report.lost);
        let lost = &report.lost[0];
        assert_eq!(lost.image, image("team-a/web", 1));
        assert_eq!(lost.tag.as_deref(), Some("v1"));
        assert!(lost.written);
        assert_eq!(lost.tracked_at, whole_seconds(t(3600 - 20 * 60)));
        let push = pipeline
            .store()
            .latest_push(&lost.image, Some("v1"), None)
            .await
            .expect("read")
            .expect("tracked");
        assert_eq!(push.pushed_at, lost.tracked_at);
        assert_eq!(
            push.deadline,
            lost.tracked_at + pipeline.settings().policy.sla
        );
        assert_eq!(
            push.destinations,
            vec![destination("us-east-1", "111111111111")]
        );
        assert_eq!(pipeline.store().pushes().len(), 2);

        // The next run (and a concurrent one) finds nothing more to track.
        let again = find_lost_pushes(&pipeline, &registry, &source(), window, None)
            .await
            .expect("run");
        assert!(again.lost.is_empty(), "{:?}", again.lost);
        assert_eq!(pipeline.store().pushes().len(), 2);
    }

    #[tokio::test]
    async fn pushes_outside_the_window_or_the_rules_and_archived_images_are_left_alone() {
        let now = t(7200);
        let mut archived = record(4, &["old"], t(7200 - 20 * 60));
        archived.archived = true;
        let registry = registry(vec![
            // Younger than the margin: its event may still be on its way.
            ("team-a/web", record(1, &["young"], t(7200 - 5 * 60))),
            // Older than the window: an earlier run looked at it.
            ("team-a/web", record(2, &["old"], t(7200 - 90 * 60))),
            ("team-a/web", archived),
            // No rule selects it: nothing replicates, nothing to track.
            ("other/tool", record(3, &["v1"], t(7200 - 20 * 60))),
        ]);
        let pipeline = pipeline(&registry, now);
        let window = PushWindow::scheduled(now, INTERVAL, MARGIN);
        let report = find_lost_pushes(&pipeline, &registry, &source(), window, None)
            .await
            .expect("run");
        assert!(report.lost.is_empty(), "{:?}", report.lost);
        assert_eq!(report.images, 0);
        assert_eq!(
            *registry.listed.lock().expect("listed"),
            vec![repo("team-a/web")]
        );
        assert!(pipeline.store().pushes().is_empty());
    }

    #[tokio::test]
    async fn an_image_untagged_since_its_tracked_push_is_not_lost_but_an_untagged_push_without_event_is()
     {
        let now = t(3600);
        let registry = registry(vec![
            // Pushed as v1 (event delivered), then v1 moved to another image.
            ("team-a/web", record(1, &[], t(3600 - 20 * 60))),
            // A child manifest pushed untagged whose event was lost.
            ("team-a/web", record(2, &[], t(3600 - 21 * 60))),
        ]);
        let pipeline = pipeline(&registry, now);
        push_event(
            &pipeline,
            &image("team-a/web", 1),
            Some("v1"),
            whole_seconds(t(3600 - 20 * 60)),
        )
        .await;
        let window = PushWindow::scheduled(now, INTERVAL, MARGIN);
        let report = find_lost_pushes(&pipeline, &registry, &source(), window, None)
            .await
            .expect("run");
        let lost: Vec<_> = report
            .lost
            .iter()
            .map(|l| (l.image.digest.clone(), l.tag.clone()))
            .collect();
        assert_eq!(lost, vec![(digest(2), None)]);
    }

    #[tokio::test]
    async fn a_tag_added_to_a_tracked_image_is_tracked_from_when_it_was_found() {
        let now = t(3600);
        let registry = registry(vec![(
            "team-a/web",
            record(1, &["v1", "prod"], t(3600 - 20 * 60)),
        )]);
        let pipeline = pipeline(&registry, now);
        push_event(
            &pipeline,
            &image("team-a/web", 1),
            Some("v1"),
            whole_seconds(t(3600 - 20 * 60)),
        )
        .await;
        let window = PushWindow::scheduled(now, INTERVAL, MARGIN);
        let report = find_lost_pushes(&pipeline, &registry, &source(), window, None)
            .await
            .expect("run");
        assert_eq!(report.lost.len(), 1);
        let lost = &report.lost[0];
        assert_eq!(lost.tag.as_deref(), Some("prod"));
        // Its real push time is unknown and no earlier than the image's: a deadline from now
        // can only be later than the real one, never a false OVERDUE.
        assert_eq!(lost.tracked_at, whole_seconds(now));
    }

    #[tokio::test]
    async fn a_run_out_of_time_leaves_repositories_to_the_next_run_which_starts_elsewhere() {
        let now = t(3600);
        let registry = registry(vec![
            ("team-a/a", record(1, &["v1"], t(3600 - 20 * 60))),
            ("team-a/b", record(2, &["v1"], t(3600 - 20 * 60))),
            ("team-a/c", record(3, &["v1"], t(3600 - 20 * 60))),
        ]);
        let pipeline = pipeline(&registry, now);
        let window = PushWindow::scheduled(now, INTERVAL, MARGIN);
        // Already past the deadline: one image, then stop (its repository counts as left).
        let report = find_lost_pushes(&pipeline, &registry, &source(), window, Some(now))
            .await
            .expect("run");
        assert_eq!((report.repositories, report.repositories_left), (0, 3));
        assert_eq!(report.lost.len(), 1);
        // Later runs, a minute apart, start elsewhere: every repository comes first in turn.
        let mut firsts = std::collections::BTreeSet::new();
        for minute in 0..12 {
            let later = PushWindow::scheduled(now + TimeDelta::minutes(minute), INTERVAL, MARGIN);
            // A table of its own: what the first run tracked would hide its repository.
            let pipeline = self::pipeline(&registry, now);
            let next = find_lost_pushes(&pipeline, &registry, &source(), later, Some(now))
                .await
                .expect("run");
            firsts.extend(next.lost.iter().map(|l| l.image.repository.clone()));
        }
        assert_eq!(firsts.len(), 3, "{firsts:?}");
    }

    #[tokio::test]
    async fn a_repository_that_cannot_be_read_is_reported_and_the_others_are_checked() {
        let now = t(3600);
        let registry = registry(vec![
            ("team-a/denied", record(1, &["v1"], t(3600 - 20 * 60))),
            ("team-a/web", record(2, &["v1"], t(3600 - 20 * 60))),
        ]);
        let pipeline = pipeline(&registry, now);
        let window = PushWindow::scheduled(now, INTERVAL, MARGIN);
        let report = find_lost_pushes(&pipeline, &registry, &source(), window, None)
            .await
            .expect("run");
        assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
        assert!(
            report.failures[0].starts_with("team-a/denied"),
            "{:?}",
            report.failures
        );
        let lost: Vec<_> = report.lost.iter().map(|l| l.image.clone()).collect();
        assert_eq!(lost, vec![image("team-a/web", 2)]);
        assert_eq!((report.repositories, report.repositories_left), (2, 0));
    }
}
