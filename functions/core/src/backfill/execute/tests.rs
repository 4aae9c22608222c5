//! Tests of running copies and native backfills: concurrency bounds, progress, a clean
//! cancel, ECR's native limits (enforced by the fake, so an orchestration that breaks them
//! fails), and a complete backfill after which a second plan is empty.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;
use crate::backfill::copy::{CopyOptions, DEFAULT_CLAIM_TTL, InMemoryBlobClaims};
use crate::backfill::in_memory_ecr::InMemoryEcr;
use crate::backfill::inventory::{CreationTemplate, DestinationInventory, TagMutability};
use crate::backfill::plan::{BackfillFilters, PlanRequest, Strategy, TagPattern, plan_backfill};
use crate::backfill::port::InventoryReader;
use crate::clock::SystemClock;
use crate::model::AccountId;
use crate::rules::{ReplicationConfiguration, ReplicationRule};

fn dest(region: &str, account: &str) -> Destination {
    Destination::new(
        Region::parse(region).expect("region"),
        AccountId::parse(account).expect("account"),
    )
}

fn source() -> Destination {
    dest("us-west-2", "111111111111")
}

fn target() -> Destination {
    dest("eu-west-1", "222222222222")
}

fn repo(name: &str) -> RepositoryName {
    RepositoryName::parse(name).expect("repository")
}

/// Lets the other copies run instead of waiting for time to pass (a copy waiting for a blob
/// another one uploads must let that one progress).
struct NoWait;

impl Sleeper for NoWait {
    async fn sleep(&self, _duration: Duration) {
        crate::clock::yield_now().await;
    }
}

/// Counts what happened, and can cancel the run when the first copy is done.
#[derive(Default)]
struct Recorder {
    in_flight: Mutex<(usize, usize)>,
    started: Mutex<Vec<CopyJob>>,
    done: Mutex<Vec<CopyJob>>,
    failed: Mutex<Vec<String>>,
    bytes: Mutex<u64>,
    native: Mutex<Vec<String>>,
    cancel_on_first_done: Option<CancelFlag>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProgressSink for Recorder {
    fn report(&self, event: ProgressEvent<'_>) {
        match event {
            ProgressEvent::CopyStarted { job } => {
                let mut gauge = lock(&self.in_flight);
                gauge.0 += 1;
                gauge.1 = gauge.1.max(gauge.0);
                lock(&self.started).push(job.clone());
            }
            ProgressEvent::BlobUploaded { bytes, .. } => *lock(&self.bytes) += bytes,
            ProgressEvent::CopyDone { job, .. } => {
                lock(&self.in_flight).0 -= 1;
                lock(&self.done).push(job.clone());
                if let Some(cancel) = &self.cancel_on_first_done {
                    cancel.cancel();
                }
            }
            ProgressEvent::CopyFailed { error, .. } => {
                lock(&self.in_flight).0 -= 1;
                lock(&self.failed).push(error.to_string());
            }
            ProgressEvent::NativeStarted {
                destination,
                adopted,
                ..
            } => lock(&self.native).push(format!(
                "{} {destination}",
                if adopted { "adopted" } else { "started" }
            )),
            ProgressEvent::NativeFinished {
                destination,
                completed,
                failed,
                ..
            } => lock(&self.native).push(format!(
                "finished {destination} {completed} ok {failed} failed"
            )),
            ProgressEvent::NativeRefused { destination, .. } => {
                lock(&self.native).push(format!("refused {destination}"));
            }
            ProgressEvent::NativeWaiting { .. } | ProgressEvent::NativeStatus { .. } => {}
        }
    }
}

/// `count` single-arch images in team-a/web of the source, sharing a base layer, and their
/// copy jobs to the target (whose repository exists).
fn images_and_jobs(ecr: &InMemoryEcr, count: u8) -> Vec<CopyJob> {
    ecr.create_repository_with(
        &target(),
        &repo("team-a/web"),
        InMemoryEcr::default_settings(),
    );
    (0..count)
        .map(|n| {
            let tag = format!("v{n}");
            let digest = ecr.push_image(
                &source(),
                &repo("team-a/web"),
                &[&tag],
                &[b"base", &[b'l', n]],
            );
            CopyJob {
                source: source(),
                source_repository: repo("team-a/web"),
                destination: target(),
                destination_repository: repo("team-a/web"),
                digest,
                tags: vec![tag],
                subject: None,
            }
        })
        .collect()
}

fn context<'a>(
    ecr: &'a InMemoryEcr,
    claims: &'a InMemoryBlobClaims<SystemClock>,
) -> CopyContext<'a, InMemoryEcr, InMemoryBlobClaims<SystemClock>, NoWait> {
    CopyContext {
        registry: ecr,
        claims,
        sleeper: &NoWait,
        options: CopyOptions::default(),
    }
}

#[tokio::test]
async fn copies_run_at_most_concurrency_at_once_and_report_their_progress() {
    let ecr = InMemoryEcr::new();
    let claims = InMemoryBlobClaims::new(SystemClock, DEFAULT_CLAIM_TTL);
    let jobs = images_and_jobs(&ecr, 12);
    let recorder = Recorder::default();

    let summary = execute_copies(
        &context(&ecr, &claims),
        jobs.clone(),
        4,
        &recorder,
        &CancelFlag::new(),
    )
    .await;

    assert!(summary.is_complete(), "{summary:#?}");
    assert_eq!((summary.jobs, summary.copied), (12, 12));
    assert_eq!(lock(&recorder.in_flight).1, 4, "four at once, never more");
    assert_eq!(*lock(&recorder.bytes), summary.bytes_uploaded);
    assert_eq!(lock(&recorder.done).len(), 12);
    for job in &jobs {
        assert_eq!(
            ecr.tags_of(&target(), &repo("team-a/web"), &job.digest),
            Some(job.tags.clone())
        );
    }
    let base = InMemoryEcr::blob_digest(b"base");
    assert_eq!(ecr.transfers_of(&target(), &repo("team-a/web"), &base), 1);
}

#[tokio::test]
async fn a_cancel_lets_running_copies_finish_and_starts_no_new_one() {
    let ecr = InMemoryEcr::new();
    let claims = InMemoryBlobClaims::new(SystemClock, DEFAULT_CLAIM_TTL);
    let jobs = images_and_jobs(&ecr, 10);
    let cancel = CancelFlag::new();
    let recorder = Recorder {
        cancel_on_first_done: Some(cancel.clone()),
        ..Recorder::default()
    };

    let summary =
        execute_copies(&context(&ecr, &claims), jobs.clone(), 3, &recorder, &cancel).await;

    let started = lock(&recorder.started).clone();
    assert_eq!(
        started.len(),
        3,
        "those running when the cancel came, no more"
    );
    assert_eq!(summary.copied, 3, "each running copy finished");
    assert_eq!(summary.not_started.len(), 7);
    assert!(!summary.is_complete());
    assert_eq!(summary.jobs_to_retry().len(), 7);
    for job in &jobs {
        let arrived = ecr.tags_of(&target(), &repo("team-a/web"), &job.digest);
        if started.contains(job) {
            assert_eq!(arrived, Some(job.tags.clone()), "no half-copied image");
        } else {
            assert_eq!(arrived, None);
        }
    }
}

#[tokio::test]
async fn failures_and_conflicts_are_summarised_per_job_and_the_rest_still_runs() {
    let ecr = InMemoryEcr::new();
    let claims = InMemoryBlobClaims::new(SystemClock, DEFAULT_CLAIM_TTL);
    let mut jobs = images_and_jobs(&ecr, 3);
    // The target holds `v2` immutable on another image.
    let mut settings = InMemoryEcr::default_settings();
    settings.tag_mutability = TagMutability::Immutable;
    ecr.create_repository_with(&target(), &repo("team-a/web"), settings);
    let theirs = ecr.push_image(&target(), &repo("team-a/web"), &["v2"], &[b"theirs"]);
    // And the first job's source repository does not exist.
    jobs[0].source_repository = repo("gone/web");
    let recorder = Recorder::default();

    let summary = execute_copies(
        &context(&ecr, &claims),
        jobs.clone(),
        2,
        &recorder,
        &CancelFlag::new(),
    )
    .await;

    assert_eq!(summary.failed.len(), 1);
    assert_eq!(summary.failed[0].job, jobs[0]);
    assert!(!summary.failed[0].retryable);
    assert!(
        summary.failed[0].error.contains("ImageNotFound"),
        "{}",
        summary.failed[0].error
    );
    assert_eq!(lock(&recorder.failed).len(), 1);
    assert_eq!(summary.copied, 2);
    assert_eq!(
        summary.tag_conflicts,
        vec![CopyTagConflict {
            destination: target(),
            repository: repo("team-a/web"),
            digest: jobs[2].digest.clone(),
            tag: "v2".into(),
        }]
    );
    assert_eq!(
        ecr.tags_of(&target(), &repo("team-a/web"), &theirs),
        Some(vec!["v2".to_owned()])
    );
    assert!(
        summary.jobs_to_retry().is_empty(),
        "neither would change by retrying"
    );
}

#[tokio::test]
async fn a_full_backfill_leaves_nothing_for_a_second_plan() {
    let ecr = InMemoryEcr::new();
    let europe = target();
    let east = dest("us-east-1", "111111111111");
    let configuration = ReplicationConfiguration {
        rules: vec![ReplicationRule {
            destinations: vec![europe.clone(), east.clone()],
            repository_filters: Vec::new(),
        }],
    };
    let amd64 = ecr.push_image(&source(), &repo("team-a/web"), &[], &[b"base", b"amd64"]);
    let arm64 = ecr.push_image(&source(), &repo("team-a/web"), &[], &[b"base", b"arm64"]);
    ecr.push_index(
        &source(),
        &repo("team-a/web"),
        &["v1", "latest"],
        &[amd64, arm64],
    );
    ecr.push_image(&source(), &repo("team-b/api"), &["2.0"], &[b"base", b"api"]);
    ecr.push_image(&source(), &repo("team-b/api"), &[], &[b"base", b"api-old"]);
    // us-east-1 has team-b/api already, with 2.0 on an older image; a template for team-a.
    ecr.create_repository_with(&east, &repo("team-b/api"), InMemoryEcr::default_settings());
    ecr.push_image(&east, &repo("team-b/api"), &["2.0"], &[b"stale"]);
    let mut template_settings = InMemoryEcr::default_settings();
    template_settings.scan_on_push = true;
    ecr.add_creation_template(
        &east,
        CreationTemplate {
            prefix: "team-a".into(),
            applied_for: vec!["REPLICATION".into()],
            settings: template_settings.clone(),
        },
    );

    let plan_now = async || {
        let source_inventory = ecr.repositories(&source(), &[]).await.expect("source");
        let mut inventories = Vec::new();
        for destination in [&europe, &east] {
            inventories.push(DestinationInventory {
                destination: destination.clone(),
                repositories: ecr
                    .repositories(destination, &[])
                    .await
                    .expect("destination"),
                creation_templates: ecr
                    .creation_templates(destination)
                    .await
                    .expect("templates"),
            });
        }
        plan_backfill(&PlanRequest {
            source: &source(),
            configuration: &configuration,
            source_inventory: &source_inventory,
            destination_inventories: &inventories,
            extra_destinations: &[],
            filters: &BackfillFilters::default(),
            force_copy: true,
            only_destinations: None,
            refused: &[],
        })
        .expect("plans")
    };

    let plan = plan_now().await;
    assert!(
        plan.destinations
            .iter()
            .all(|d| d.strategy == Strategy::Copy)
    );
    assert_eq!(plan.totals.repositories_to_create, 3);
    let claims = InMemoryBlobClaims::new(SystemClock, DEFAULT_CLAIM_TTL);
    for destination_plan in &plan.destinations {
        create_repositories(&ecr, destination_plan)
            .await
            .expect("created");
        let summary = execute_copies(
            &context(&ecr, &claims),
            destination_plan.copy_jobs(&plan.source),
            8,
            &NoProgress,
            &CancelFlag::new(),
        )
        .await;
        assert!(summary.is_complete(), "{summary:#?}");
        assert!(summary.tag_conflicts.is_empty());
    }
    assert_eq!(
        ecr.repository_settings(&east, &repo("team-a/web")),
        Some(template_settings)
    );

    let second = plan_now().await;
    assert!(second.is_empty(), "{second:#?}");
    let calls_before = ecr.total_calls();
    for destination_plan in &second.destinations {
        let summary = execute_copies(
            &context(&ecr, &claims),
            destination_plan.copy_jobs(&second.source),
            8,
            &NoProgress,
            &CancelFlag::new(),
        )
        .await;
        assert_eq!(summary.jobs, 0);
    }
    assert_eq!(ecr.total_calls(), calls_before);
}

#[tokio::test]
async fn a_filtered_backfill_brings_every_referrer_of_what_it_selects_subjects_first() {
    let ecr = InMemoryEcr::new();
    let web = repo("team-a/web");
    let configuration = ReplicationConfiguration {
        rules: vec![ReplicationRule {
            destinations: vec![target()],
            repository_filters: Vec::new(),
        }],
    };
    let amd64 = ecr.push_image(&source(), &web, &[], &[b"base", b"amd64"]);
    let arm64 = ecr.push_image(&source(), &web, &[], &[b"base", b"arm64"]);
    let index = ecr.push_index(&source(), &web, &["v1"], &[amd64.clone(), arm64]);
    let signature = ecr.push_referrer(
        &source(),
        &web,
        &index,
        "application/vnd.cncf.notary.signature",
        b"sig",
    );
    let sbom = ecr.push_referrer(&source(), &web, &index, "application/spdx+json", b"sbom");
    let sbom_signature = ecr.push_referrer(
        &source(),
        &web,
        &sbom,
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        b"sbom-sig",
    );
    // An attestation of one platform's image: found through the index's children.
    let attestation = ecr.push_referrer(
        &source(),
        &web,
        &amd64,
        "application/vnd.in-toto+json",
        b"provenance",
    );
    // v2 and its signature are left out by the filter.
    let other = ecr.push_image(&source(), &web, &["v2"], &[b"base", b"other"]);
    let other_signature = ecr.push_referrer(
        &source(),
        &web,
        &other,
        "application/vnd.cncf.notary.signature",
        b"other-sig",
    );

    let source_inventory = ecr.repositories(&source(), &[]).await.expect("source");
    let destination_inventory = DestinationInventory {
        destination: target(),
        repositories: Vec::new(),
        creation_templates: Vec::new(),
    };
    let filters = BackfillFilters {
        tag_patterns: vec![TagPattern::parse("v1").expect("pattern")],
        ..BackfillFilters::default()
    };
    let plan = plan_backfill(&PlanRequest {
        source: &source(),
        configuration: &configuration,
        source_inventory: &source_inventory,
        destination_inventories: std::slice::from_ref(&destination_inventory),
        extra_destinations: &[],
        filters: &filters,
        force_copy: false,
        only_destinations: None,
        refused: &[],
    })
    .expect("plans");
    let destination_plan = &plan.destinations[0];
    let mut planned: Vec<&Digest> = destination_plan.items.iter().map(|i| &i.digest).collect();
    planned.sort();
    let mut expected = vec![&index, &signature, &sbom, &sbom_signature, &attestation];
    expected.sort();
    assert_eq!(planned, expected);
    let subject_of = |digest: &Digest| {
        destination_plan
            .items
            .iter()
            .find(|i| &i.digest == digest)
            .and_then(|i| i.subject.clone())
    };
    assert_eq!(subject_of(&sbom_signature), Some(sbom.clone()));
    assert_eq!(subject_of(&attestation), Some(amd64.clone()));

    create_repositories(&ecr, destination_plan)
        .await
        .expect("created");
    let claims = InMemoryBlobClaims::new(SystemClock, DEFAULT_CLAIM_TTL);
    let recorder = Recorder::default();
    let summary = execute_copies(
        &context(&ecr, &claims),
        destination_plan.copy_jobs(&plan.source),
        8,
        &recorder,
        &CancelFlag::new(),
    )
    .await;
    assert!(summary.is_complete(), "{summary:#?}");
    assert!(lock(&recorder.failed).is_empty());

    // Every referrer there with its digest, each after its subject.
    let copied = ecr.repositories(&target(), &[]).await.expect("destination");
    let arrived = |digest: &Digest| {
        copied[0]
            .images
            .iter()
            .find(|i| &i.digest == digest)
            .and_then(|i| i.pushed_at)
    };
    for (subject, referrer) in [
        (&index, &signature),
        (&index, &sbom),
        (&sbom, &sbom_signature),
        (&amd64, &attestation),
    ] {
        let (Some(subject_at), Some(referrer_at)) = (arrived(subject), arrived(referrer)) else {
            panic!("{subject} or {referrer} missing in the destination");
        };
        assert!(subject_at < referrer_at, "{referrer} before {subject}");
    }
    assert!(arrived(&other).is_none() && arrived(&other_signature).is_none());
}

// --- Native backfill ---

/// ECR's native backfill, with its limits enforced: a start that would make two in progress
/// in one destination Region, or eleven in the registry, is refused with `LimitReached` and
/// counted, so a test can require that the orchestration never tries.
#[derive(Default)]
struct FakeNative {
    state: Mutex<FakeNativeState>,
}

#[derive(Default)]
struct FakeNativeState {
    configured: Vec<Destination>,
    /// Each backfill with the number of `list` calls it has seen.
    backfills: Vec<(NativeBackfill, u32)>,
    /// Per destination: the final status and the per-image results.
    endings: HashMap<Destination, (NativeBackfillStatus, Vec<NativeImageResult>)>,
    /// `list` calls a backfill takes from start to its end.
    lists_to_finish: u32,
    starts: Vec<Destination>,
    limit_refusals: usize,
    /// Extra `LimitReached` answers (a backfill ECR does not list yet).
    hidden_limit: usize,
    max_in_progress: usize,
}

impl FakeNative {
    fn new(configured: &[Destination]) -> Self {
        Self {
            state: Mutex::new(FakeNativeState {
                configured: configured.to_vec(),
                lists_to_finish: 2,
                ..FakeNativeState::default()
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeNativeState> {
        lock(&self.state)
    }
}

impl NativeBackfillApi for FakeNative {
    async fn start(
        &self,
        _source: &Destination,
        destination: &Destination,
    ) -> Result<NativeStart, RegistryError> {
        let mut state = self.state();
        if !state.configured.contains(destination) {
            return Ok(NativeStart::Refused {
                reason: "destination not in the replication configuration".into(),
            });
        }
        let in_progress: Vec<&NativeBackfill> = state
            .backfills
            .iter()
            .map(|(b, _)| b)
            .filter(|b| !b.status.is_terminal())
            .collect();
        let region_busy = in_progress
            .iter()
            .any(|b| b.destination.region == destination.region);
        let in_progress = in_progress.len();
        if region_busy || in_progress >= MAX_NATIVE_BACKFILLS_PER_REGISTRY {
            state.limit_refusals += 1;
            return Ok(NativeStart::LimitReached);
        }
        if state.hidden_limit > 0 {
            state.hidden_limit -= 1;
            return Ok(NativeStart::LimitReached);
        }
        let backfill = NativeBackfill {
            id: format!("bf-{}", state.backfills.len() + 1),
            destination: destination.clone(),
            status: NativeBackfillStatus::Preparing,
        };
        state.backfills.push((backfill.clone(), 0));
        state.starts.push(destination.clone());
        state.max_in_progress = state.max_in_progress.max(in_progress + 1);
        Ok(NativeStart::Started(backfill))
    }

    async fn list(&self, _source: &Destination) -> Result<Vec<NativeBackfill>, RegistryError> {
        let mut state = self.state();
        let lists_to_finish = state.lists_to_finish;
        let endings = state.endings.clone();
        for (backfill, seen) in &mut state.backfills {
            if backfill.status.is_terminal() {
                continue;
            }
            *seen += 1;
            backfill.status = if *seen >= lists_to_finish {
                endings
                    .get(&backfill.destination)
                    .map_or(NativeBackfillStatus::Complete, |(status, _)| status.clone())
            } else {
                NativeBackfillStatus::InProgress
            };
        }
        Ok(state.backfills.iter().map(|(b, _)| b.clone()).collect())
    }

    async fn results(
        &self,
        _source: &Destination,
        backfill_id: &str,
    ) -> Result<Vec<NativeImageResult>, RegistryError> {
        let state = self.state();
        let destination = state
            .backfills
            .iter()
            .find(|(b, _)| b.id == backfill_id)
            .map(|(b, _)| b.destination.clone());
        Ok(destination
            .and_then(|d| state.endings.get(&d).map(|(_, results)| results.clone()))
            .unwrap_or_default())
    }
}

fn digest(n: u8) -> Digest {
    Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).expect("digest")
}

fn result(n: u8, tag: Option<&str>, failure: Option<&str>) -> NativeImageResult {
    NativeImageResult {
        repository: repo("team-a/web"),
        digest: digest(n),
        tag: tag.map(str::to_owned),
        failure: failure.map(str::to_owned),
        sub_image_failures: Vec::new(),
    }
}

/// Twelve destinations over eleven Regions: two share us-east-1.
fn twelve_destinations() -> Vec<Destination> {
    let mut destinations = vec![
        dest("us-east-1", "222222222222"),
        dest("us-east-1", "333333333333"),
    ];
    for region in [
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "eu-central-1",
        "eu-north-1",
        "ap-south-1",
        "ap-northeast-1",
        "ap-southeast-2",
        "ca-central-1",
        "sa-east-1",
    ] {
        destinations.push(dest(region, "222222222222"));
    }
    destinations
}

#[tokio::test]
async fn native_backfills_start_within_ecr_limits_and_all_finish() {
    let destinations = twelve_destinations();
    let api = FakeNative::new(&destinations);
    api.state().endings.insert(
        destinations[3].clone(),
        (
            NativeBackfillStatus::Failed {
                failure_code: Some("PARTIAL".into()),
            },
            vec![
                result(1, Some("v1"), None),
                result(2, Some("v2"), Some("IMAGE_TOO_LARGE")),
            ],
        ),
    );
    let recorder = Recorder::default();

    let outcome = run_native(
        &api,
        &source(),
        &destinations,
        &NoWait,
        Duration::from_secs(30),
        &recorder,
        &CancelFlag::new(),
    )
    .await;

    let state = api.state();
    assert_eq!(
        state.limit_refusals, 0,
        "the orchestration kept within the limits itself"
    );
    assert_eq!(state.max_in_progress, MAX_NATIVE_BACKFILLS_PER_REGISTRY);
    assert_eq!(state.starts.len(), 12, "each destination once");
    assert_eq!(outcome.destinations.len(), 12);
    for destination_outcome in &outcome.destinations {
        assert!(
            matches!(destination_outcome.result, NativeResult::Finished { .. }),
            "{destination_outcome:?}"
        );
    }
    let partial = outcome.for_destination(&destinations[3]).expect("outcome");
    let NativeResult::Finished {
        completed, failed, ..
    } = &partial.result
    else {
        panic!("{partial:?}");
    };
    assert_eq!(completed, &vec![result(1, Some("v1"), None)]);
    assert_eq!(
        failed,
        &vec![result(2, Some("v2"), Some("IMAGE_TOO_LARGE"))]
    );
    // The second us-east-1 destination started only after the first one finished.
    let events = lock(&recorder.native).clone();
    let first_done = events
        .iter()
        .position(|e| e.starts_with("finished us-east-1/222222222222"))
        .expect("first finished");
    let second_started = events
        .iter()
        .position(|e| e == "started us-east-1/333333333333")
        .expect("second started");
    assert!(first_done < second_started, "{events:#?}");
}

#[tokio::test]
async fn a_backfill_running_for_a_destination_is_followed_and_one_in_its_region_waited_for() {
    let ours = dest("us-east-1", "222222222222");
    let theirs = dest("us-east-1", "999999999999");
    let again = target();
    let api = FakeNative::new(&[ours.clone(), theirs.clone(), again.clone()]);
    {
        let mut state = api.state();
        state.backfills.push((
            NativeBackfill {
                id: "someone-elses".into(),
                destination: theirs.clone(),
                status: NativeBackfillStatus::InProgress,
            },
            0,
        ));
        state.backfills.push((
            NativeBackfill {
                id: "from-an-earlier-run".into(),
                destination: again.clone(),
                status: NativeBackfillStatus::InProgress,
            },
            0,
        ));
        state.hidden_limit = 1;
    }
    let recorder = Recorder::default();

    let outcome = run_native(
        &api,
        &source(),
        &[ours.clone(), again.clone()],
        &NoWait,
        Duration::from_secs(30),
        &recorder,
        &CancelFlag::new(),
    )
    .await;

    let state = api.state();
    assert_eq!(state.limit_refusals, 0);
    assert_eq!(
        state.starts,
        vec![ours.clone()],
        "the earlier run's backfill was adopted"
    );
    assert_eq!(
        outcome
            .for_destination(&again)
            .and_then(|o| o.backfill_id.as_deref()),
        Some("from-an-earlier-run")
    );
    assert!(matches!(
        outcome.for_destination(&ours).map(|o| &o.result),
        Some(NativeResult::Finished { .. })
    ));
    assert!(lock(&recorder.native).contains(&format!("adopted {again}")));
}

#[tokio::test]
async fn a_refused_destination_falls_back_to_copying_every_planned_item() {
    let configured = dest("us-east-1", "222222222222");
    let refused = target();
    let api = FakeNative::new(std::slice::from_ref(&configured));

    let outcome = run_native(
        &api,
        &source(),
        &[configured.clone(), refused.clone()],
        &NoWait,
        Duration::from_secs(30),
        &NoProgress,
        &CancelFlag::new(),
    )
    .await;

    let refused_outcome = outcome.for_destination(&refused).expect("outcome");
    assert!(refused_outcome.falls_back_to_copy());
    assert!(
        !outcome
            .for_destination(&configured)
            .expect("outcome")
            .falls_back_to_copy()
    );
}

#[tokio::test]
async fn a_cancel_starts_nothing_and_leaves_running_backfills_to_ecr() {
    let destinations = twelve_destinations();
    let api = FakeNative::new(&destinations);
    let cancel = CancelFlag::new();
    cancel.cancel();
    let outcome = run_native(
        &api,
        &source(),
        &destinations,
        &NoWait,
        Duration::from_secs(30),
        &NoProgress,
        &cancel,
    )
    .await;
    assert!(api.state().starts.is_empty());
    assert!(
        outcome
            .destinations
            .iter()
            .all(|o| o.result == NativeResult::NotStarted)
    );
}

#[test]
fn the_copy_pass_after_native_takes_each_tag_ecr_did_not_complete_and_the_retags() {
    use crate::backfill::inventory::{ImageRecord, RepositoryInventory};

    let image = |n: u8, tags: &[&str]| ImageRecord {
        digest: digest(n),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        pushed_at: None,
        media_type: None,
        size_bytes: Some(10),
        subject: None,
        artifact_type: None,
        archived: false,
        children: Vec::new(),
    };
    let source_inventory = vec![RepositoryInventory {
        name: repo("team-a/web"),
        settings: InMemoryEcr::default_settings(),
        images: vec![
            image(1, &["v1"]),
            image(2, &["v2"]),
            image(3, &["v3"]),
            image(4, &["v4", "stable"]),
            image(5, &["v5", "5.0", "five"]),
            image(6, &[]),
            image(7, &[]),
        ],
    }];
    let destination_inventory = DestinationInventory {
        destination: target(),
        repositories: vec![RepositoryInventory {
            name: repo("team-a/web"),
            settings: InMemoryEcr::default_settings(),
            images: vec![image(4, &["v4"])],
        }],
        creation_templates: Vec::new(),
    };
    let configuration = ReplicationConfiguration {
        rules: vec![ReplicationRule {
            destinations: vec![target()],
            repository_filters: Vec::new(),
        }],
    };
    let plan = plan_backfill(&PlanRequest {
        source: &source(),
        configuration: &configuration,
        source_inventory: &source_inventory,
        destination_inventories: std::slice::from_ref(&destination_inventory),
        extra_destinations: &[],
        filters: &BackfillFilters::default(),
        force_copy: false,
        only_destinations: None,
        refused: &[],
    })
    .expect("plans");
    let destination_plan = &plan.destinations[0];
    assert_eq!(destination_plan.strategy, Strategy::Native);

    // ECR completed 1, failed 2, never mentioned 3; of 5 it brought v5 and failed 5.0 (an
    // index whose arm64 image failed) and said nothing of "five"; it brought the untagged 6
    // and failed the untagged 7.
    let mut index_failure = result(5, Some("5.0"), Some("FAILED"));
    index_failure.sub_image_failures = vec!["IMAGE_TOO_LARGE".into()];
    let finished = NativeDestinationOutcome {
        destination: target(),
        backfill_id: Some("bf-1".into()),
        result: NativeResult::Finished {
            status: NativeBackfillStatus::Complete,
            completed: vec![
                result(1, Some("v1"), None),
                result(5, Some("v5"), None),
                result(6, None, None),
            ],
            failed: vec![
                result(2, Some("v2"), Some("FAILED")),
                index_failure,
                result(7, None, Some("FAILED")),
            ],
        },
    };
    let jobs = copy_jobs_after_native(destination_plan, &source(), &finished);
    let digests: Vec<(Digest, Vec<String>)> = jobs
        .iter()
        .map(|j| (j.digest.clone(), j.tags.clone()))
        .collect();
    assert_eq!(
        digests,
        vec![
            (digest(2), vec!["v2".to_owned()]),
            (digest(3), vec!["v3".to_owned()]),
            (digest(4), vec!["stable".to_owned()]),
            (digest(5), vec!["5.0".to_owned(), "five".to_owned()]),
            (digest(7), vec![]),
        ]
    );

    let refused = NativeDestinationOutcome {
        result: NativeResult::Refused {
            reason: "no".into(),
        },
        ..finished.clone()
    };
    assert_eq!(
        copy_jobs_after_native(destination_plan, &source(), &refused).len(),
        7
    );
    let running = NativeDestinationOutcome {
        result: NativeResult::StillRunning,
        ..finished
    };
    assert!(copy_jobs_after_native(destination_plan, &source(), &running).is_empty());
}
