//! `replwatch backfill`: reads the source and destination inventories, plans with the core's
//! `plan_backfill` (the same plan the `backfill-plan` function makes), prints it, and with
//! `--apply` executes it from here: missing repositories created, ECR's native backfill for
//! the destinations it serves, digest-preserving copies for the rest.
//!
//! Interrupting is safe at any point: Ctrl-C lets the copies in flight finish and starts no
//! more; a rerun plans again from the inventories, so it skips what arrived, and blobs already
//! uploaded are not uploaded again (`BatchCheckLayerAvailability` first).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use replwatch_aws::backfill_runs::DynamoRunStore;
use replwatch_aws::ecr_copy::EcrCopyRegistry;
use replwatch_aws::ecr_inventory::EcrInventoryReader;
use replwatch_aws::ecr_native_backfill::EcrNativeBackfill;
use replwatch_aws::ecr_repositories::EcrRepositoryCreator;
use replwatch_aws::region_opt_in::RegionOptIn;
use replwatch_aws::tokio_sleeper::TokioSleeper;
use replwatch_core::backfill::copy::DEFAULT_CLAIM_TTL;
use replwatch_core::backfill::execute::NativeResult;
use replwatch_core::backfill::inventory::RepositoryInventory;
use replwatch_core::backfill::plan::{ArchivedImage, SettingsSource};
use replwatch_core::backfill::port::{InventoryReader, refused_destinations};
use replwatch_core::backfill::run::BackfillRunStore;
use replwatch_core::backfill::trigger::{added_destinations, backfill_destinations};
use replwatch_core::backfill::{
    BackfillFilters, BackfillPlan, CancelFlag, CopyContext, CopyJob, CopyOptions,
    DestinationInventory, ExecutionSummary, NativeOutcome, PlanRequest, ProgressEvent,
    ProgressSink, Strategy, TagPattern, copy_jobs_after_native, create_repositories,
    execute_copies, plan_backfill, run_native,
};
use replwatch_core::clock::SystemClock;
use replwatch_core::model::Destination;
use replwatch_core::registry::RegistryError;
use replwatch_core::rules::ReplicationConfiguration;
use serde::Serialize;

use crate::Outcome;
use crate::args::{BackfillArgs, GlobalOptions, StrategyChoice};
use crate::aws::{
    AwsSetupError, cross_account_access, home_registry, parse_destination, sdk_config,
};
use crate::output::{OutputFormat, Table, human_bytes};
use crate::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Setup(#[from] AwsSetupError),
    #[error("{0}")]
    Aws(#[from] RegistryError),
    #[error("--tag {pattern:?}: {message}")]
    TagPattern { pattern: String, message: String },
    #[error("{0}")]
    Plan(String),
    #[error("tracking table: {0}")]
    Store(#[from] replwatch_core::store::StoreError),
    #[error("interrupted: {0}; run the same command again to continue")]
    Interrupted(String),
}

pub async fn run(global: &GlobalOptions, args: &BackfillArgs) -> Result<Outcome, BackfillError> {
    let config = sdk_config(global).await?;
    let source = home_registry(&config).await?;
    let cross_account = cross_account_access(global);
    let home = source.registry_id.clone();

    let filters = filters(args)?;
    let extra_destinations = args
        .destinations
        .iter()
        .map(|d| parse_destination(d, &home))
        .collect::<Result<Vec<_>, _>>()?;

    let reader = EcrInventoryReader::new(config.clone(), home.clone(), cross_account.clone());
    let configuration = reader.replication_configuration(&source).await?;
    let runs = args
        .table
        .as_ref()
        .map(|table| DynamoRunStore::new(aws_sdk_dynamodb::Client::new(&config), table));
    let only_destinations = match (&runs, args.since_config_change) {
        (Some(runs), true) => {
            let previous = runs.last_configuration(&source).await?;
            match added_destinations(previous.as_ref(), &configuration) {
                Some(added) if added.is_empty() && extra_destinations.is_empty() => {
                    outln!(
                        "No destination added to the replication rules of {source} since the \
                         last plan: nothing to backfill."
                    );
                    return Ok(Outcome::Clean);
                }
                other => other,
            }
        }
        _ => None,
    };
    let mut destinations = backfill_destinations(
        &configuration,
        only_destinations.as_deref(),
        &extra_destinations,
        &source,
    );
    let opt_in = RegionOptIn::new(config.clone(), home.clone(), cross_account.clone());
    let refused = refused_destinations(&opt_in, &source, &destinations).await;
    destinations.retain(|d| !refused.iter().any(|(r, _)| r == d));

    let started = Instant::now();
    let (source_inventory, destination_inventories) = read_inventories(
        &reader,
        &source,
        &destinations,
        &filters.repository_prefixes,
    )
    .await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        repositories = source_inventory.len(),
        destinations = destinations.len(),
        "inventories read"
    );

    let plan = plan_backfill(&PlanRequest {
        source: &source,
        configuration: &configuration,
        source_inventory: &source_inventory,
        destination_inventories: &destination_inventories,
        extra_destinations: &extra_destinations,
        filters: &filters,
        force_copy: args.strategy == StrategyChoice::Copy,
        only_destinations: only_destinations.as_deref(),
        refused: &refused,
    })
    .map_err(|e| BackfillError::Plan(e.to_string()))?;

    if !args.apply {
        print_plan(&plan, global.output);
        // Like a plan with a detailed exit code: 1 tells a pipeline the destinations lag.
        return Ok(if plan.is_empty() && conflicts(&plan) == 0 {
            Outcome::Clean
        } else {
            Outcome::Findings
        });
    }
    if global.output == OutputFormat::Table {
        print_plan(&plan, OutputFormat::Table);
    }
    if plan.is_empty() {
        remember(runs.as_ref(), &source, &configuration).await?;
        return Ok(finish_report(&plan, &ApplyReport::default(), global.output));
    }

    let copier = EcrCopyRegistry::new(config.clone(), home.clone(), cross_account.clone())
        .map_err(|e| BackfillError::Plan(e.to_string()))?;
    let creator = EcrRepositoryCreator::new(config.clone(), home.clone(), cross_account.clone());
    let native = EcrNativeBackfill::new(config, home, cross_account);
    let cancel = CancelFlag::new();
    watch_for_interrupt(cancel.clone());

    let mut report = ApplyReport::default();
    for destination_plan in plan.destinations.iter().filter(|p| !p.is_empty()) {
        report.repositories_created += create_repositories(&creator, destination_plan).await?;
    }

    let copy_jobs: Vec<CopyJob> = plan
        .destinations
        .iter()
        .filter(|p| p.strategy == Strategy::Copy)
        .flat_map(|p| p.copy_jobs(&source))
        .collect();
    let native_destinations: Vec<Destination> = plan
        .destinations
        .iter()
        .filter(|p| p.strategy == Strategy::Native && !p.is_empty())
        .map(|p| p.destination.clone())
        .collect();
    let bytes_total: u64 = plan
        .destinations
        .iter()
        .map(|p| p.totals.bytes_estimate)
        .sum();
    let images_total = plan.totals.images as u64;
    let progress = ProgressDisplay::new(images_total, bytes_total, !global.no_progress);
    let claims = replwatch_core::backfill::InMemoryBlobClaims::new(SystemClock, DEFAULT_CLAIM_TTL);
    let context = CopyContext {
        registry: &copier,
        claims: &claims,
        sleeper: &TokioSleeper,
        options: CopyOptions::default(),
    };
    let concurrency = usize::from(args.concurrency);

    // Copies to copy destinations run while ECR works on the native ones.
    let (native_outcome, first_pass) = tokio::join!(
        run_native(
            &native,
            &source,
            &native_destinations,
            &TokioSleeper,
            Duration::from_secs(args.native_poll_seconds),
            &progress,
            &cancel,
        ),
        execute_copies(&context, copy_jobs, concurrency, &progress, &cancel),
    );
    report.summary.merge(first_pass);
    let after_native: Vec<CopyJob> = plan
        .destinations
        .iter()
        .filter(|p| p.strategy == Strategy::Native)
        .filter_map(|p| {
            native_outcome
                .for_destination(&p.destination)
                .map(|outcome| copy_jobs_after_native(p, &source, outcome))
        })
        .flatten()
        .collect();
    if !after_native.is_empty() && !cancel.is_cancelled() {
        let second_pass =
            execute_copies(&context, after_native, concurrency, &progress, &cancel).await;
        report.summary.merge(second_pass);
    }
    progress.finish();
    report.native = native_outcome;
    report.elapsed = started.elapsed();

    let outcome = finish_report(&plan, &report, global.output);
    if !cancel.is_cancelled() {
        remember(runs.as_ref(), &source, &configuration).await?;
    }
    if cancel.is_cancelled() {
        return Err(BackfillError::Interrupted(format!(
            "{} copies done, {} not started",
            report.summary.copied,
            report.summary.not_started.len()
        )));
    }
    Ok(outcome)
}

/// Records the rules this backfill brought the destinations up to, for the next
/// `--since-config-change` (and the deployed functions) to compare with.
async fn remember(
    runs: Option<&DynamoRunStore>,
    source: &Destination,
    configuration: &ReplicationConfiguration,
) -> Result<(), BackfillError> {
    if let Some(runs) = runs {
        runs.remember_configuration(source, configuration).await?;
    }
    Ok(())
}

/// The source's repositories and images, and each destination's with its creation templates,
/// the destinations read at once (each reader paginates and runs its own requests in parallel).
pub async fn read_inventories(
    reader: &EcrInventoryReader,
    source: &Destination,
    destinations: &[Destination],
    prefixes: &[String],
) -> Result<(Vec<RepositoryInventory>, Vec<DestinationInventory>), RegistryError> {
    let source_inventory = reader.repositories(source, prefixes).await?;
    let destination_inventories = try_join_all(destinations.iter().map(|destination| async move {
        let (repositories, creation_templates) = tokio::try_join!(
            reader.repositories(destination, prefixes),
            reader.creation_templates(destination),
        )?;
        Ok::<_, RegistryError>(DestinationInventory {
            destination: destination.clone(),
            repositories,
            creation_templates,
        })
    }))
    .await?;
    Ok((source_inventory, destination_inventories))
}

fn filters(args: &BackfillArgs) -> Result<BackfillFilters, BackfillError> {
    let tag_patterns = args
        .tag_patterns
        .iter()
        .map(|p| {
            TagPattern::parse(p).map_err(|e| BackfillError::TagPattern {
                pattern: p.clone(),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BackfillFilters {
        repository_prefixes: args.repository_prefixes.clone(),
        tag_patterns,
        pushed_after: args.pushed_after,
        pushed_before: args.pushed_before,
    })
}

/// First Ctrl-C: stop starting copies, let those in flight finish. Second: leave at once
/// (nothing is left half-written that a rerun cannot finish: a manifest is put last).
fn watch_for_interrupt(cancel: CancelFlag) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "replwatch: stopping after the copies in flight (Ctrl-C again to quit at once)"
            );
            cancel.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
}

/// What a plan leaves undone whatever is applied: tag conflicts, archived images, refused
/// destinations.
fn conflicts(plan: &BackfillPlan) -> usize {
    plan.destinations
        .iter()
        .map(|p| p.conflicts.len() + p.archived.len() + usize::from(p.refused.is_some()))
        .sum()
}

/// The plan: one summary row per destination, then what will be created, the tag conflicts
/// (never overwritten) and the notes.
fn print_plan(plan: &BackfillPlan, format: OutputFormat) {
    if format == OutputFormat::Json {
        match serde_json::to_string_pretty(plan) {
            Ok(json) => outln!("{json}"),
            Err(e) => eprintln!("replwatch: cannot write the plan as JSON: {e}"),
        }
        return;
    }
    let render = |table: &Table| match format {
        OutputFormat::Markdown => table.to_markdown(),
        _ => table.to_text(),
    };
    let mut summary = Table::new(&[
        "destination",
        "strategy",
        "why",
        "images",
        "copies",
        "retags",
        "bytes (est.)",
        "referrers",
        "new repositories",
        "conflicts",
        "archived",
    ]);
    for p in &plan.destinations {
        summary.push(vec![
            p.destination.to_string(),
            match p.strategy {
                Strategy::Native => "native".into(),
                Strategy::Copy => "copy".into(),
            },
            p.reason.to_string(),
            p.totals.images.to_string(),
            p.totals.copies.to_string(),
            p.totals.retags.to_string(),
            human_bytes(p.totals.bytes_estimate),
            p.totals.referrers.to_string(),
            p.totals.repositories_to_create.to_string(),
            p.totals.conflicts.to_string(),
            p.totals.archived.to_string(),
        ]);
    }
    outln!("Backfill plan for source {}\n", plan.source);
    out!("{}", render(&summary));

    let mut creations = Table::new(&["destination", "repository", "settings from"]);
    for p in &plan.destinations {
        for creation in &p.repositories_to_create {
            creations.push(vec![
                p.destination.to_string(),
                creation.name.to_string(),
                match &creation.settings_from {
                    SettingsSource::Source => "source repository".into(),
                    SettingsSource::Template { prefix } => {
                        format!("creation template {prefix}")
                    }
                },
            ]);
        }
    }
    if !creations.rows.is_empty() {
        outln!("\nRepositories to create\n");
        out!("{}", render(&creations));
    }

    let mut conflict_table = Table::new(&[
        "destination",
        "repository",
        "tag",
        "source digest",
        "destination digest",
    ]);
    for p in &plan.destinations {
        for c in &p.conflicts {
            conflict_table.push(vec![
                p.destination.to_string(),
                c.repository.to_string(),
                c.tag.clone(),
                c.source_digest.to_string(),
                c.destination_digest.to_string(),
            ]);
        }
    }
    if !conflict_table.rows.is_empty() {
        outln!(
            "\nTag conflicts (immutable tags in the destination point elsewhere; left untouched)\n"
        );
        out!("{}", render(&conflict_table));
    }
    let archived: Vec<(&Destination, &ArchivedImage)> = plan
        .destinations
        .iter()
        .flat_map(|p| p.archived.iter().map(move |a| (&p.destination, a)))
        .collect();
    if !archived.is_empty() {
        outln!(
            "\nArchived in the source (archived images cannot be pulled, so not copied; restore \
             each, and replication brings it, or the next backfill does)\n"
        );
        let mut seen = std::collections::HashSet::new();
        for (destination, image) in archived {
            let what = match &image.subject {
                Some(subject) => format!("{} of {subject}", image.kind),
                None => image.kind.clone(),
            };
            outln!(
                "- {destination}: {}@{} ({what})",
                image.repository,
                image.digest
            );
            if seen.insert((&image.repository, &image.digest)) {
                outln!("  {}", image.restore_command(&plan.source));
            }
        }
    }
    for p in &plan.destinations {
        if let Some(why) = &p.refused {
            outln!("\nRefused: {}: {why}", p.destination);
        }
    }
    let notes: Vec<&String> = plan
        .notes
        .iter()
        .chain(plan.destinations.iter().flat_map(|p| &p.notes))
        .collect();
    if !notes.is_empty() {
        outln!("\nNotes\n");
        for note in notes {
            outln!("- {note}");
        }
    }
    if plan.is_empty() && conflicts(plan) == 0 {
        outln!("\nNothing to do: every destination holds every selected image and tag.");
    }
}

/// What `--apply` did.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct ApplyReport {
    repositories_created: usize,
    #[serde(flatten)]
    summary: ExecutionSummary,
    #[serde(skip)]
    native: NativeOutcome,
    #[serde(skip)]
    elapsed: Duration,
}

/// Prints what was done and decides the exit code: findings when a copy failed, was not
/// started, a native backfill left failures, or a tag conflict was met.
fn finish_report(plan: &BackfillPlan, report: &ApplyReport, format: OutputFormat) -> Outcome {
    let summary = &report.summary;
    // One line per replication ECR failed (image and tag, with the codes of an index's
    // images): the copy pass put exactly those.
    let native_failures: Vec<(String, String)> = report
        .native
        .destinations
        .iter()
        .flat_map(|d| {
            let destination = d.destination.to_string();
            let lines: Vec<String> = match &d.result {
                NativeResult::Finished { failed, .. } => failed
                    .iter()
                    .map(|f| format!("native backfill failed {f} (copied instead)"))
                    .collect(),
                NativeResult::Refused { reason } => {
                    vec![format!(
                        "native backfill refused ({reason}): copied instead"
                    )]
                }
                NativeResult::Error { message } => {
                    vec![format!(
                        "native backfill failed ({message}): copied instead"
                    )]
                }
                NativeResult::StillRunning => {
                    vec!["native backfill still running in ECR".to_owned()]
                }
                NativeResult::NotStarted => Vec::new(),
            };
            lines.into_iter().map(move |l| (destination.clone(), l))
        })
        .collect();
    let findings = !summary.is_complete()
        || !summary.tag_conflicts.is_empty()
        || conflicts(plan) > 0
        || report
            .native
            .destinations
            .iter()
            .any(|d| matches!(d.result, NativeResult::StillRunning));
    match format {
        OutputFormat::Json => {
            let json = serde_json::json!({
                "plan": plan,
                "result": report,
                "native": native_failures
                    .iter()
                    .map(|(d, m)| serde_json::json!({"destination": d, "message": m}))
                    .collect::<Vec<_>>(),
                "elapsedSeconds": report.elapsed.as_secs_f64(),
            });
            match serde_json::to_string_pretty(&json) {
                Ok(text) => outln!("{text}"),
                Err(e) => eprintln!("replwatch: cannot write the result as JSON: {e}"),
            }
        }
        OutputFormat::Table | OutputFormat::Markdown => {
            let seconds = report.elapsed.as_secs_f64().max(0.001);
            outln!(
                "\nDone in {:.1}s: {} repositories created, {} images copied or retagged, {} \
                 already there, {} failed, {} not started; {} blobs uploaded ({}, {}/s), {} \
                 already present, {} manifests put",
                report.elapsed.as_secs_f64(),
                report.repositories_created,
                summary.copied,
                summary.already_complete,
                summary.failed.len(),
                summary.not_started.len(),
                summary.blobs_uploaded,
                human_bytes(summary.bytes_uploaded),
                human_bytes((summary.bytes_uploaded as f64 / seconds) as u64),
                summary.blobs_already_present,
                summary.manifests_put,
            );
            for (destination, message) in &native_failures {
                outln!("- {destination}: {message}");
            }
            for failed in &summary.failed {
                outln!(
                    "- failed: {} ({}{})",
                    failed.job,
                    failed.error,
                    if failed.retryable {
                        "; a rerun may succeed"
                    } else {
                        ""
                    }
                );
            }
            for conflict in &summary.tag_conflicts {
                outln!(
                    "- tag conflict: {}/{}:{} is immutable and points elsewhere; left untouched",
                    conflict.destination,
                    conflict.repository,
                    conflict.tag
                );
            }
        }
    }
    if findings {
        Outcome::Findings
    } else {
        Outcome::Clean
    }
}

/// The progress bar fed by the executor's events: bytes as blobs land, images as copies end,
/// native backfill news as lines above the bar.
struct ProgressDisplay {
    bar: Progress,
    images_total: u64,
    done: AtomicU64,
    failed: AtomicU64,
}

impl ProgressDisplay {
    fn new(images_total: u64, bytes_total: u64, enabled: bool) -> Self {
        Self {
            bar: Progress::bytes(images_total, bytes_total, enabled),
            images_total,
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    fn finish(&self) {
        self.bar.finish();
    }

    fn images(&self) {
        self.bar.set_images(
            self.done.load(Ordering::Relaxed),
            self.images_total,
            self.failed.load(Ordering::Relaxed),
        );
    }
}

impl ProgressSink for ProgressDisplay {
    fn report(&self, event: ProgressEvent<'_>) {
        match event {
            ProgressEvent::CopyStarted { .. } => {}
            ProgressEvent::BlobUploaded { bytes, .. } => self.bar.add_bytes(bytes),
            ProgressEvent::CopyDone { .. } => {
                self.done.fetch_add(1, Ordering::Relaxed);
                self.images();
            }
            ProgressEvent::CopyFailed { job, error } => {
                self.done.fetch_add(1, Ordering::Relaxed);
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.images();
                self.bar.println(&format!("failed: {job}: {error}"));
            }
            ProgressEvent::NativeStarted {
                destination,
                backfill_id,
                adopted,
            } => self.bar.println(&format!(
                "{destination}: native backfill {backfill_id} {}",
                if adopted {
                    "already running, following it"
                } else {
                    "started"
                }
            )),
            ProgressEvent::NativeWaiting { destination } => self.bar.println(&format!(
                "{destination}: waiting for ECR's backfill limits (one per destination Region, \
                 ten per registry)"
            )),
            ProgressEvent::NativeStatus {
                destination,
                status,
            } => {
                tracing::info!(%destination, ?status, "native backfill status");
            }
            ProgressEvent::NativeFinished {
                destination,
                status,
                completed,
                failed,
            } => self.bar.println(&format!(
                "{destination}: native backfill ended {status:?}: {completed} replications \
                 complete, {failed} failed (one per image and tag)"
            )),
            ProgressEvent::NativeRefused {
                destination,
                reason,
            } => self.bar.println(&format!(
                "{destination}: native backfill refused ({reason}); copying instead"
            )),
        }
    }
}
