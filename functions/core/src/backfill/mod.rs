//! Backfill: bring destinations up to date with images pushed before replication reached them.
//!
//! ECR replicates only what is pushed after a rule exists. A backfill compares inventories
//! (what the source holds, what each destination holds) and plans the (image, destination)
//! pairs that are missing or lost a tag, then brings them over with one of two strategies:
//! - `native`: ECR's own `StartReplicationBackfill`, for destinations in the configuration,
//!   when nothing filters the set (then a copy pass for what it did not bring);
//! - `copy`: a digest-preserving copy through the ECR API, for everything else.
//!
//! The modules:
//! - [`inventory`]: what a registry holds (repositories, their settings, images), as read;
//! - [`manifest`]: what a manifest or image index references (blobs, child manifests);
//! - [`referrers`]: what refers to an image (OCI 1.1 referrers, legacy cosign tags), which
//!   the plan and the audit follow with every image;
//! - [`plan`]: the pure plan: which pairs, which strategy, which conflicts, which
//!   repositories to create and with which settings;
//! - [`copy`]: the copy of one image over the [`port`] traits, children before the index,
//!   each blob once per destination repository, and the in-process blob claims;
//! - [`execute`]: running a plan: copies at bounded concurrency with progress and a clean
//!   cancel, native backfills within ECR's limits, and the copy pass after them;
//! - [`port`]: the ECR operations a backfill needs, and the blob claims that make concurrent
//!   copies upload a shared blob once;
//! - [`run`]: a run's shared record on AWS: progress counted once per job, completion once;
//! - [`trigger`]: what starts a backfill on AWS (a rules change, a schedule, a manual invoke);
//! - [`fanout`]: the backfill as Lambda functions run it: one plan fanned out as queued copy
//!   jobs, each copied and counted once;
//! - `in_memory_ecr` (`test-support` feature): an in-memory ECR enforcing what real ECR
//!   enforces, for tests.

pub mod copy;
pub mod execute;
pub mod fanout;
#[cfg(any(test, feature = "test-support"))]
// Test support: a panic is the failure report.
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod in_memory_ecr;
pub mod inventory;
pub mod manifest;
pub mod plan;
pub mod port;
pub mod referrers;
pub mod run;
pub mod trigger;

pub use copy::{
    CopyContext, CopyError, CopyJob, CopyOptions, CopyReport, InMemoryBlobClaims, copy_image,
};
pub use execute::{
    CancelFlag, ExecutionSummary, NativeOutcome, ProgressEvent, ProgressSink,
    copy_jobs_after_native, create_repositories, execute_copies, run_native,
};
pub use inventory::DestinationInventory;
pub use manifest::{ManifestBytes, ManifestReferences};
pub use plan::{
    BackfillFilters, BackfillPlan, DestinationPlan, PlanRequest, Strategy, StrategyReason,
    TagPattern, plan_backfill,
};
