//! The copy of one image to one destination repository, over the [`CopyRegistry`] and
//! [`BlobClaims`] ports: digest-preserving, idempotent, and safe to run many at once.
//!
//! The order is what ECR enforces and what keeps a half-done copy harmless:
//! 1. `DescribeImages` in the destination: an image already there with every tag costs
//!    nothing more (a re-run, or a retried SQS message, is one call per image);
//! 2. the manifest is read from the source and its bytes hashed: a read that does not hash to
//!    the job's digest is refused before anything is written;
//! 3. an index's children are copied first (untagged), since ECR refuses an index whose
//!    children are missing; then the blobs the destination lacks, a few at once
//!    ([`CopyOptions::blob_concurrency`]), each claimed so that
//!    concurrent copies sharing a blob upload it once per destination repository (a granted
//!    claim is followed by one more check, since the blob may have arrived meanwhile);
//! 4. the manifest is put last, once per tag (untagged when there is none), so a destination
//!    never shows a tag whose image is incomplete; a referrer (signature, SBOM, attestation)
//!    only once its subject is there. An immutable tag held by another image is a
//!    conflict in the report, not an error: retrying would not change it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};

use crate::backfill::manifest::{ManifestBytes, ManifestError, ManifestReferences};
use crate::backfill::port::{BlobClaims, Claim, CopyRegistry, PutOutcome};
use crate::clock::{Clock, Sleeper};
use crate::model::{Destination, Digest, RepositoryName};
use crate::registry::RegistryError;

/// How deep indexes may nest below the image copied: an index of indexes of manifests (2).
/// Nothing standard nests deeper; a bound keeps a malicious manifest from recursing forever.
pub const MAX_INDEX_DEPTH: usize = 2;

/// One image to bring to one destination repository. Also the SQS message body the copy
/// worker receives, hence the stable camelCase names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyJob {
    pub source: Destination,
    pub source_repository: RepositoryName,
    pub destination: Destination,
    pub destination_repository: RepositoryName,
    pub digest: Digest,
    /// The tags the image must carry in the destination; empty for an untagged image.
    #[serde(default)]
    pub tags: Vec<String>,
    /// For a referrer: the image it refers to, which must be in the destination first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
}

/// `items` (each holding a copy job) in levels of referrer depth, each level spread over the
/// destination repositories ([`spread_over_repositories`]): level 0 the jobs that refer to
/// nothing among them (images, or referrers whose subject is already in the destination),
/// level 1 their signatures, level 2 a signature of a signature's SBOM... A copy brings a
/// subject before its referrers by running (or queuing) each level after the one before.
pub fn referrer_levels<T>(items: Vec<T>, job: impl Fn(&T) -> &CopyJob) -> Vec<Vec<T>> {
    let depths = referrer_depths(&items.iter().map(&job).collect::<Vec<_>>());
    let mut levels: Vec<Vec<T>> = Vec::new();
    for (item, depth) in items.into_iter().zip(depths) {
        if levels.len() <= depth {
            levels.resize_with(depth + 1, Vec::new);
        }
        levels[depth].push(item);
    }
    levels
        .into_iter()
        .map(|level| spread_over_repositories(level, &job))
        .collect()
}

/// How many referrer steps separate each job from a job that refers to nothing among `jobs`.
fn referrer_depths(jobs: &[&CopyJob]) -> Vec<usize> {
    let index: std::collections::HashMap<(&Destination, &RepositoryName, &Digest), usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| ((&j.destination, &j.destination_repository, &j.digest), i))
        .collect();
    let mut depths: Vec<Option<usize>> = vec![None; jobs.len()];
    for start in 0..jobs.len() {
        // Walk up the subjects to a known depth (or the top), then number the way back down.
        let mut chain = vec![start];
        let mut base = 0;
        while let Some(&current) = chain.last() {
            if let Some(depth) = depths[current] {
                chain.pop();
                base = depth + 1;
                break;
            }
            let job = &jobs[current];
            let parent = job.subject.as_ref().and_then(|subject| {
                index
                    .get(&(&job.destination, &job.destination_repository, subject))
                    .copied()
            });
            match parent {
                // A cycle (never in valid OCI content) stops here rather than looping.
                Some(parent) if !chain.contains(&parent) && chain.len() <= jobs.len() => {
                    chain.push(parent);
                }
                _ => break,
            }
        }
        for (offset, job) in chain.iter().rev().enumerate() {
            depths[*job] = Some(base + offset);
        }
    }
    depths.into_iter().map(|d| d.unwrap_or(0)).collect()
}

/// Puts copy jobs in the order that lets concurrent copies work apart: one job of each
/// destination repository in turn, each repository's jobs keeping their order.
///
/// ECR keeps layers per repository, so copies into different repositories never share an
/// upload. The images of one repository usually share base layers: a plan lists them together,
/// and copies started together from that list all need the same layers first, so all but one
/// would wait on that one's blob claims. Also used for the order of the SQS messages of a
/// Lambda backfill, for the same reason.
pub fn spread_over_repositories<T>(items: Vec<T>, job: impl Fn(&T) -> &CopyJob) -> Vec<T> {
    let mut queues: Vec<std::collections::VecDeque<T>> = Vec::new();
    let mut queue_of: std::collections::HashMap<(Destination, RepositoryName), usize> =
        std::collections::HashMap::new();
    for item in items {
        let j = job(&item);
        let key = (j.destination.clone(), j.destination_repository.clone());
        let index = *queue_of.entry(key).or_insert_with(|| {
            queues.push(std::collections::VecDeque::new());
            queues.len() - 1
        });
        queues[index].push_back(item);
    }
    let total: usize = queues.iter().map(|q| q.len()).sum();
    let mut spread = Vec::with_capacity(total);
    while spread.len() < total {
        for queue in &mut queues {
            if let Some(item) = queue.pop_front() {
                spread.push(item);
            }
        }
    }
    spread
}

impl std::fmt::Display for CopyJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{} -> {} {}",
            self.source_repository, self.digest, self.destination, self.destination_repository
        )
    }
}

/// How long a copy waits for a blob another copy claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOptions {
    /// How often the destination is asked whether the claimed blob arrived.
    pub claim_poll: Duration,
    /// How long one claim held elsewhere is waited for before claiming again (the holder may
    /// have died; its claim then expires).
    pub claim_wait: Duration,
    /// After this many waits in vain, the blob is uploaded without a claim: a second upload
    /// costs bytes, a copy stuck behind a claim that never ends costs the backfill.
    pub max_claim_rounds: u32,
    /// Blobs of one image transferred at once. An image's layers are independent uploads, and
    /// a copy's time is mostly waiting on the network, so a large base layer need not hold up
    /// the others (Docker's own default is 3 concurrent layer transfers). Each transfer holds
    /// one upload part in memory.
    pub blob_concurrency: usize,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            claim_poll: Duration::from_secs(2),
            claim_wait: Duration::from_secs(120),
            max_claim_rounds: 5,
            blob_concurrency: 3,
        }
    }
}

/// What one copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyReport {
    /// The destination already held the image with every tag: nothing was read or written.
    pub already_complete: bool,
    /// Manifests written (children of an index included; a put that found them there is not
    /// counted).
    pub manifests_put: usize,
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
    /// Blobs the destination repository already had.
    pub blobs_already_present: usize,
    /// Blobs a concurrent copy uploaded while this one waited.
    pub blobs_uploaded_elsewhere: usize,
    /// Tags the destination holds immutable on another image: left as they are.
    pub tag_conflicts: Vec<String>,
}

/// The step of a copy that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyStep {
    ReadDestinationImage,
    ReadManifest,
    CheckBlobs,
    ClaimBlob,
    TransferBlob,
    PutManifest,
}

impl std::fmt::Display for CopyStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CopyStep::ReadDestinationImage => "reading the image in the destination",
            CopyStep::ReadManifest => "reading the manifest in the source",
            CopyStep::CheckBlobs => "checking the blobs in the destination",
            CopyStep::ClaimBlob => "claiming a blob upload",
            CopyStep::TransferBlob => "transferring a blob",
            CopyStep::PutManifest => "putting the manifest in the destination",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{step}: {source}")]
    Registry {
        step: CopyStep,
        source: RegistryError,
    },
    #[error("manifest {digest}: {source}")]
    Manifest {
        digest: Digest,
        source: ManifestError,
    },
    #[error("the manifest read for {expected} hashes to {actual}; nothing was written")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("index {digest} nests indexes more than {MAX_INDEX_DEPTH} levels deep")]
    NestingTooDeep { digest: Digest },
    #[error(
        "referrer {digest} waits for its subject {subject}, not yet in the destination: copied \
         after it"
    )]
    SubjectNotYetCopied { digest: Digest, subject: Digest },
}

impl CopyError {
    /// Whether trying the same job again later may succeed (throttling, timeouts, 5xx).
    pub fn retryable(&self) -> bool {
        match self {
            CopyError::Registry { source, .. } => source.retryable,
            // Its subject's own job is queued or failed: a later try finds it, or the
            // referrer ends on the dead-letter queue beside its subject's failure.
            CopyError::SubjectNotYetCopied { .. } => true,
            CopyError::Manifest { .. }
            | CopyError::DigestMismatch { .. }
            | CopyError::NestingTooDeep { .. } => false,
        }
    }
}

fn at_step(step: CopyStep) -> impl FnOnce(RegistryError) -> CopyError {
    move |source| CopyError::Registry { step, source }
}

/// Told of each blob a copy uploads, as it happens (progress bars, metrics).
pub trait CopyObserver: Send + Sync {
    fn blob_uploaded(&self, blob: &Digest, bytes: u64);
}

/// Nobody listening.
impl CopyObserver for () {
    fn blob_uploaded(&self, _blob: &Digest, _bytes: u64) {}
}

/// The ports and settings every copy of a run shares.
#[derive(Debug)]
pub struct CopyContext<'a, R, C, S> {
    pub registry: &'a R,
    pub claims: &'a C,
    pub sleeper: &'a S,
    pub options: CopyOptions,
}

impl<R, C, S> Clone for CopyContext<'_, R, C, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R, C, S> Copy for CopyContext<'_, R, C, S> {}

/// Copies one image; see the module documentation for the order of operations.
pub async fn copy_image<R, C, S>(
    context: &CopyContext<'_, R, C, S>,
    job: &CopyJob,
) -> Result<CopyReport, CopyError>
where
    R: CopyRegistry,
    C: BlobClaims,
    S: Sleeper,
{
    copy_image_observed(context, job, &()).await
}

/// [`copy_image`], telling `observer` of each blob uploaded.
pub async fn copy_image_observed<R, C, S, O>(
    context: &CopyContext<'_, R, C, S>,
    job: &CopyJob,
    observer: &O,
) -> Result<CopyReport, CopyError>
where
    R: CopyRegistry,
    C: BlobClaims,
    S: Sleeper,
    O: CopyObserver,
{
    let copy = OneCopy {
        context: *context,
        job,
        observer,
    };
    let mut report = CopyReport::default();
    let existing = context
        .registry
        .image(&job.destination, &job.destination_repository, &job.digest)
        .await
        .map_err(at_step(CopyStep::ReadDestinationImage))?;
    let missing_tags: Vec<&String> = job
        .tags
        .iter()
        .filter(|tag| existing.as_ref().is_none_or(|e| !e.tags.contains(tag)))
        .collect();
    if existing.is_some() && missing_tags.is_empty() {
        report.already_complete = true;
        return Ok(report);
    }
    let (manifest, references) = copy.read_manifest(&job.digest).await?;
    if existing.is_none() {
        // A referrer arrives after its subject, as replication brings them: jobs run
        // concurrently (SQS messages, a CLI's parallel copies), so the order is checked here.
        if let Some(subject) = &job.subject
            && context
                .registry
                .image(&job.destination, &job.destination_repository, subject)
                .await
                .map_err(at_step(CopyStep::ReadDestinationImage))?
                .is_none()
        {
            return Err(CopyError::SubjectNotYetCopied {
                digest: job.digest.clone(),
                subject: subject.clone(),
            });
        }
        copy.bring_content(&references, 0, &mut report).await?;
        if job.tags.is_empty() {
            copy.put(&manifest, &job.digest, None, &mut report).await?;
        }
    }
    for tag in missing_tags {
        copy.put(&manifest, &job.digest, Some(tag), &mut report)
            .await?;
    }
    Ok(report)
}

/// How one missing blob came to be in the destination.
enum BlobArrival {
    /// ECR refused the upload as already there.
    AlreadyPresent,
    /// Another copy uploaded it.
    UploadedElsewhere,
    /// This copy uploaded these bytes.
    Uploaded(u64),
}

/// One copy in progress: the job and where it reports.
struct OneCopy<'a, R, C, S, O> {
    context: CopyContext<'a, R, C, S>,
    job: &'a CopyJob,
    observer: &'a O,
}

type BoxedStep<'a> = Pin<Box<dyn Future<Output = Result<(), CopyError>> + Send + 'a>>;

impl<R, C, S, O> OneCopy<'_, R, C, S, O>
where
    R: CopyRegistry,
    C: BlobClaims,
    S: Sleeper,
    O: CopyObserver,
{
    /// Reads a manifest from the source, checks its bytes hash to `digest`, and reads what it
    /// references. The media type is filled in when ECR reported none (`PutImage` needs it).
    async fn read_manifest(
        &self,
        digest: &Digest,
    ) -> Result<(ManifestBytes, ManifestReferences), CopyError> {
        let job = self.job;
        let mut manifest = self
            .context
            .registry
            .manifest(&job.source, &job.source_repository, digest)
            .await
            .map_err(at_step(CopyStep::ReadManifest))?;
        let actual = manifest.digest();
        if &actual != digest {
            return Err(CopyError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        let references =
            ManifestReferences::parse(&manifest).map_err(|source| CopyError::Manifest {
                digest: digest.clone(),
                source,
            })?;
        if manifest.media_type.is_empty() {
            manifest.media_type = references.media_type.clone();
        }
        Ok((manifest, references))
    }

    /// Brings what a manifest references: an index's children (each complete before the next),
    /// then its blobs. Boxed because children of an index recurse.
    fn bring_content<'s>(
        &'s self,
        references: &'s ManifestReferences,
        depth: usize,
        report: &'s mut CopyReport,
    ) -> BoxedStep<'s> {
        Box::pin(async move {
            if references.is_index() && !references.children.is_empty() {
                if depth >= MAX_INDEX_DEPTH {
                    return Err(CopyError::NestingTooDeep {
                        digest: self.job.digest.clone(),
                    });
                }
                for child in &references.children {
                    let present = self
                        .context
                        .registry
                        .image(
                            &self.job.destination,
                            &self.job.destination_repository,
                            child,
                        )
                        .await
                        .map_err(at_step(CopyStep::ReadDestinationImage))?;
                    if present.is_some() {
                        continue;
                    }
                    let (manifest, child_references) = self.read_manifest(child).await?;
                    self.bring_content(&child_references, depth + 1, report)
                        .await?;
                    self.put(&manifest, child, None, report).await?;
                }
            }
            self.bring_blobs(references, report).await
        })
    }

    async fn bring_blobs(
        &self,
        references: &ManifestReferences,
        report: &mut CopyReport,
    ) -> Result<(), CopyError> {
        if references.blobs.is_empty() {
            return Ok(());
        }
        let job = self.job;
        let digests: Vec<Digest> = references.blobs.iter().map(|b| b.digest.clone()).collect();
        let missing = self
            .context
            .registry
            .missing_blobs(&job.destination, &job.destination_repository, &digests)
            .await
            .map_err(at_step(CopyStep::CheckBlobs))?;
        let mut to_bring: Vec<&Digest> = Vec::new();
        for blob in &digests {
            if !missing.contains(blob) {
                report.blobs_already_present += 1;
            } else if !to_bring.contains(&blob) {
                // A manifest may list one layer twice; it is brought once.
                to_bring.push(blob);
            }
        }
        let concurrency = self.context.options.blob_concurrency.max(1);
        // Every transfer runs to its end, even after one failed, so that each releases its
        // claim: copies waiting on it go on at once instead of after the claim expires.
        // The futures are made before the stream: a closure inside it would make this
        // future's type higher-ranked, which the boxed recursion of `bring_content` rejects.
        let transfers: Vec<_> = to_bring
            .into_iter()
            .map(|blob| self.bring_blob(blob))
            .collect();
        let arrivals: Vec<Result<BlobArrival, CopyError>> = stream::iter(transfers)
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for arrival in arrivals {
            match arrival? {
                BlobArrival::AlreadyPresent => report.blobs_already_present += 1,
                BlobArrival::UploadedElsewhere => report.blobs_uploaded_elsewhere += 1,
                BlobArrival::Uploaded(bytes) => {
                    report.blobs_uploaded += 1;
                    report.bytes_uploaded += bytes;
                }
            }
        }
        Ok(())
    }

    /// Uploads one missing blob under a claim, or waits for the copy that holds the claim.
    async fn bring_blob(&self, blob: &Digest) -> Result<BlobArrival, CopyError> {
        let job = self.job;
        let (claims, options) = (self.context.claims, self.context.options);
        let mut rounds = 0;
        loop {
            let claimed = rounds < options.max_claim_rounds;
            let claim = if claimed {
                claims
                    .claim(&job.destination, &job.destination_repository, blob)
                    .await
                    .map_err(at_step(CopyStep::ClaimBlob))?
            } else {
                tracing::warn!(%blob, job = %job, rounds, "blob claim never ended; uploading without it");
                Claim::Granted
            };
            match claim {
                Claim::Granted => {
                    // The first check may be stale: another copy may have uploaded the blob
                    // and released its claim since. Checking again costs one call; uploading
                    // again costs the blob.
                    if claimed && !self.still_missing(blob).await? {
                        self.release(blob).await;
                        return Ok(BlobArrival::UploadedElsewhere);
                    }
                    return self.transfer(blob, claimed).await;
                }
                Claim::HeldElsewhere => {
                    if self.wait_for_blob(blob).await? {
                        return Ok(BlobArrival::UploadedElsewhere);
                    }
                    rounds += 1;
                }
            }
        }
    }

    async fn transfer(&self, blob: &Digest, claimed: bool) -> Result<BlobArrival, CopyError> {
        let job = self.job;
        let transferred = self
            .context
            .registry
            .transfer_blob(
                &job.source,
                &job.source_repository,
                &job.destination,
                &job.destination_repository,
                blob,
            )
            .await;
        // Released whatever happened: a failed upload must not keep the others waiting.
        if claimed {
            self.release(blob).await;
        }
        let bytes = transferred.map_err(at_step(CopyStep::TransferBlob))?;
        if bytes == 0 {
            // ECR had it after all (`LayerAlreadyExistsException`).
            return Ok(BlobArrival::AlreadyPresent);
        }
        self.observer.blob_uploaded(blob, bytes);
        Ok(BlobArrival::Uploaded(bytes))
    }

    async fn release(&self, blob: &Digest) {
        let job = self.job;
        let released = self
            .context
            .claims
            .release(&job.destination, &job.destination_repository, blob)
            .await;
        if let Err(error) = released {
            // The claim expires on its own; the blob itself is fine.
            tracing::warn!(%blob, %error, "releasing a blob claim failed");
        }
    }

    async fn still_missing(&self, blob: &Digest) -> Result<bool, CopyError> {
        let job = self.job;
        let missing = self
            .context
            .registry
            .missing_blobs(
                &job.destination,
                &job.destination_repository,
                std::slice::from_ref(blob),
            )
            .await
            .map_err(at_step(CopyStep::CheckBlobs))?;
        Ok(missing.contains(blob))
    }

    /// Polls the destination for a blob another copy is uploading, for up to one claim wait.
    async fn wait_for_blob(&self, blob: &Digest) -> Result<bool, CopyError> {
        let options = self.context.options;
        // A zero poll would never add up to the wait.
        let poll = options.claim_poll.max(Duration::from_millis(1));
        let mut waited = Duration::ZERO;
        while waited < options.claim_wait {
            self.context.sleeper.sleep(poll).await;
            waited += poll;
            if !self.still_missing(blob).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn put(
        &self,
        manifest: &ManifestBytes,
        digest: &Digest,
        tag: Option<&str>,
        report: &mut CopyReport,
    ) -> Result<(), CopyError> {
        let job = self.job;
        let outcome = self
            .context
            .registry
            .put_manifest(
                &job.destination,
                &job.destination_repository,
                manifest,
                digest,
                tag,
            )
            .await
            .map_err(at_step(CopyStep::PutManifest))?;
        match (outcome, tag) {
            (PutOutcome::Written, _) => report.manifests_put += 1,
            (PutOutcome::TagImmutable, Some(tag)) => report.tag_conflicts.push(tag.to_owned()),
            // An untagged put cannot hit a tag; nothing to record.
            (PutOutcome::AlreadyThere | PutOutcome::TagImmutable, _) => {}
        }
        Ok(())
    }
}

/// How long an in-memory claim lasts when its holder never releases it.
pub const DEFAULT_CLAIM_TTL: TimeDelta = TimeDelta::minutes(15);

/// Blob claims for the copies of one process (the CLI): a map of who uploads what, until
/// released or expired. Copies spread over Lambda invocations need a shared table instead.
#[derive(Debug)]
pub struct InMemoryBlobClaims<K> {
    clock: K,
    ttl: TimeDelta,
    held: Mutex<std::collections::HashMap<(Destination, RepositoryName, Digest), DateTime<Utc>>>,
}

impl<K: Clock> InMemoryBlobClaims<K> {
    /// Claims on `clock`'s time, each lasting `ttl` unless released first.
    pub fn new(clock: K, ttl: TimeDelta) -> Self {
        Self {
            clock,
            ttl,
            held: Mutex::default(),
        }
    }

    fn held(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<(Destination, RepositoryName, Digest), DateTime<Utc>>,
    > {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<K: Clock> BlobClaims for InMemoryBlobClaims<K> {
    async fn claim(
        &self,
        destination: &Destination,
        repository: &RepositoryName,
        blob: &Digest,
    ) -> Result<Claim, RegistryError> {
        let now = self.clock.now();
        let key = (destination.clone(), repository.clone(), blob.clone());
        let mut held = self.held();
        match held.get(&key) {
            Some(expires) if *expires > now => Ok(Claim::HeldElsewhere),
            _ => {
                held.insert(key, now + self.ttl);
                Ok(Claim::Granted)
            }
        }
    }

    async fn release(
        &self,
        destination: &Destination,
        repository: &RepositoryName,
        blob: &Digest,
    ) -> Result<(), RegistryError> {
        let key = (destination.clone(), repository.clone(), blob.clone());
        self.held().remove(&key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backfill::in_memory_ecr::{InMemoryEcr, operation};
    use crate::backfill::inventory::TagMutability;
    use crate::clock::{ManualClock, ManualClockSleeper, SystemClock};
    use crate::model::{AccountId, Region};

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

    #[test]
    fn copies_start_one_repository_after_another_and_keep_each_repository_s_order() {
        let digest = Digest::parse(&format!("sha256:{}", "cd".repeat(32))).expect("digest");
        let into = |destination: Destination, repository: &str, tag: &str| CopyJob {
            source: source(),
            source_repository: repo(repository),
            destination,
            destination_repository: repo(repository),
            digest: digest.clone(),
            tags: vec![tag.to_owned()],
            subject: None,
        };
        let other = dest("us-east-1", "333333333333");
        let jobs = vec![
            into(target(), "web", "web-1"),
            into(target(), "web", "web-2"),
            into(target(), "web", "web-3"),
            into(target(), "api", "api-1"),
            into(other.clone(), "web", "other-web-1"),
            into(target(), "api", "api-2"),
        ];
        let tags: Vec<String> = spread_over_repositories(jobs, |job| job)
            .into_iter()
            .map(|job| job.tags[0].clone())
            .collect();
        assert_eq!(
            tags,
            ["web-1", "api-1", "other-web-1", "web-2", "api-2", "web-3"]
        );
        assert!(spread_over_repositories(Vec::<CopyJob>::new(), |job| job).is_empty());
    }

    fn job(digest: &Digest, tags: &[&str]) -> CopyJob {
        CopyJob {
            source: source(),
            source_repository: repo("team-a/web"),
            destination: target(),
            destination_repository: repo("team-a/web"),
            digest: digest.clone(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            subject: None,
        }
    }

    fn fixture() -> (InMemoryEcr, InMemoryBlobClaims<SystemClock>) {
        let ecr = InMemoryEcr::new();
        ecr.create_repository_with(
            &target(),
            &repo("team-a/web"),
            InMemoryEcr::default_settings(),
        );
        (ecr, InMemoryBlobClaims::new(SystemClock, DEFAULT_CLAIM_TTL))
    }

    /// A sleeper that lets other tasks run for a millisecond: for copies that really run
    /// concurrently.
    struct BriefSleeper;

    impl Sleeper for BriefSleeper {
        async fn sleep(&self, _duration: Duration) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn context<'a, C>(
        ecr: &'a InMemoryEcr,
        claims: &'a C,
    ) -> CopyContext<'a, InMemoryEcr, C, BriefSleeper> {
        CopyContext {
            registry: ecr,
            claims,
            sleeper: &BriefSleeper,
            options: CopyOptions::default(),
        }
    }

    #[tokio::test]
    async fn the_layers_of_one_image_travel_a_few_at_a_time() {
        let layers: [&[u8]; 5] = [b"base", b"runtime", b"deps", b"app", b"assets"];
        // A fresh in-memory ECR for each setting: it keeps its peak for its lifetime.
        for (blob_concurrency, expected) in [(3, 3), (1, 1)] {
            let (ecr, claims) = fixture();
            let digest = ecr.push_image(&source(), &repo("team-a/web"), &["v1"], &layers);
            let context = CopyContext {
                registry: &ecr,
                claims: &claims,
                sleeper: &BriefSleeper,
                options: CopyOptions {
                    blob_concurrency,
                    ..CopyOptions::default()
                },
            };
            let report = copy_image(&context, &job(&digest, &["v1"]))
                .await
                .expect("copies");

            assert_eq!(report.blobs_uploaded, 6, "config and five layers");
            assert_eq!(
                ecr.most_transfers_at_once(),
                expected,
                "blob_concurrency {blob_concurrency}"
            );
            assert_eq!(
                ecr.tags_of(&target(), &repo("team-a/web"), &digest),
                Some(vec!["v1".to_owned()])
            );
        }
    }

    #[tokio::test]
    async fn a_failed_layer_fails_the_copy_after_the_others_finish_and_a_rerun_sends_only_it() {
        let (ecr, claims) = fixture();
        let layers: [&[u8]; 3] = [b"base", b"deps", b"app"];
        let digest = ecr.push_image(&source(), &repo("team-a/web"), &["v1"], &layers);
        let context = context(&ecr, &claims);
        ecr.fail_next(operation::TRANSFER_BLOB, false);

        let error = copy_image(&context, &job(&digest, &["v1"]))
            .await
            .expect_err("one transfer fails");
        assert!(
            matches!(
                error,
                CopyError::Registry {
                    step: CopyStep::TransferBlob,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(ecr.tags_of(&target(), &repo("team-a/web"), &digest), None);
        assert!(claims.held().is_empty(), "every claim released");

        let rerun = copy_image(&context, &job(&digest, &["v1"]))
            .await
            .expect("the rerun copies");
        assert_eq!(rerun.blobs_uploaded, 1, "only the blob that failed");
        assert_eq!(rerun.blobs_already_present, 3);
    }

    #[tokio::test]
    async fn a_single_arch_image_arrives_with_its_digest_blobs_and_tags() {
        let (ecr, claims) = fixture();
        let digest = ecr.push_image(
            &source(),
            &repo("team-a/web"),
            &["v1", "latest"],
            &[b"base", b"app"],
        );
        let report = copy_image(&context(&ecr, &claims), &job(&digest, &["v1", "latest"]))
            .await
            .expect("copies");

        assert_eq!(
            ecr.tags_of(&target(), &repo("team-a/web"), &digest),
            Some(vec!["latest".to_owned(), "v1".to_owned()])
        );
        assert_eq!(report.blobs_uploaded, 3, "config and two layers");
        assert_eq!(
            report.bytes_uploaded,
            ecr.blob_bytes_of(&source(), &repo("team-a/web"), &digest)
        );
        assert_eq!(report.manifests_put, 2, "one put per tag");
        assert!(!report.already_complete);
        assert!(report.tag_conflicts.is_empty());
    }

    #[tokio::test]
    async fn an_index_arrives_after_its_children_and_blobs_already_there_are_skipped() {
        let (ecr, claims) = fixture();
        let amd64 = ecr.push_image(&source(), &repo("team-a/web"), &[], &[b"base", b"amd64"]);
        let arm64 = ecr.push_image(&source(), &repo("team-a/web"), &[], &[b"base", b"arm64"]);
        let index = ecr.push_index(
            &source(),
            &repo("team-a/web"),
            &["v2"],
            &[amd64.clone(), arm64.clone()],
        );
        // The destination has the shared base layer already.
        ecr.push_blob(&target(), &repo("team-a/web"), b"base");

        let report = copy_image(&context(&ecr, &claims), &job(&index, &["v2"]))
            .await
            .expect("copies");

        // The in-memory ECR refuses an index whose children are missing, as ECR does: the
        // index is there, so the children went first.
        assert_eq!(
            ecr.tags_of(&target(), &repo("team-a/web"), &index),
            Some(vec!["v2".to_owned()])
        );
        assert_eq!(
            ecr.tags_of(&target(), &repo("team-a/web"), &amd64),
            Some(vec![])
        );
        assert_eq!(
            ecr.tags_of(&target(), &repo("team-a/web"), &arm64),
            Some(vec![])
        );
        assert_eq!(report.manifests_put, 3);
        // Two configs and two arch layers uploaded; `base` found twice.
        assert_eq!(report.blobs_uploaded, 4);
        assert_eq!(report.blobs_already_present, 2);
    }

    #[tokio::test]
    async fn a_second_copy_costs_one_describe_images_and_nothing_else() {
        let (ecr, claims) = fixture();
        let digest = ecr.push_image(&source(), &repo("team-a/web"), &["v1"], &[b"layer"]);
        copy_image(&context(&ecr, &claims), &job(&digest, &["v1"]))
            .await
            .expect("first copy");
        let before = ecr.total_calls();

        let report = copy_image(&context(&ecr, &claims), &job(&digest, &["v1"]))
            .await
            .expect("second copy");
        assert!(report.already_complete);
        assert_eq!(ecr.total_calls() - before, 1);
        assert_eq!(ecr.calls(operation::DESCRIBE_IMAGES), 2);
    }

    #[tokio::test]
    async fn a_missing_tag_is_put_without_moving_any_blob() {
        let (ecr, claims) = fixture();
        let digest = ecr.push_image(
            &source(),
            &repo("team-a/web"),
            &["v1", "stable"],
            &[b"layer"],
        );
        copy_image(&context(&ecr, &claims), &job(&digest, &["v1"]))
            .await
            .expect("copy");
        let transfers = ecr.calls(operation::TRANSFER_BLOB);

        let report = copy_image(&context(&ecr, &claims), &job(&digest, &["v1", "stable"]))
            .await
            .expect("retag");
        assert_eq!(report.manifests_put, 1);
        assert_eq!(ecr.calls(operation::TRANSFER_BLOB), transfers);
        assert_eq!(
            ecr.tags_of(&target(), &repo("team-a/web"), &digest),
            Some(vec!["stable".to_owned(), "v1".to_owned()])
        );
    }

    #[tokio::test]
    async fn an_immutable_tag_on_another_image_is_a_conflict_in_the_report() {
        let (ecr, claims) = fixture();
        let mut immutable = InMemoryEcr::default_settings();
        immutable.tag_mutability = TagMutability::Immutable;
        ecr.create_repository_with(&target(), &repo("team-b/api"), immutable);
        let theirs = ecr.push_image(&target(), &repo("team-b/api"), &["v1"], &[b"theirs"]);
        let ours = ecr.push_image(
            &source(),
            &repo("team-b/api"),
            &["v1", "v1.0.1"],
            &[b"ours"],
        );
        let mut conflicting = job(&ours, &["v1", "v1.0.1"]);
        conflicting.source_repository = repo("team-b/api");
        conflicting.destination_repository = repo("team-b/api");

        let report = copy_image(&context(&ecr, &claims), &conflicting)
            .await
            .expect("not an error");
        assert_eq!(report.tag_conflicts, vec!["v1".to_owned()]);
        assert_eq!(
            ecr.tags_of(&target(), &repo("team-b/api"), &theirs),
            Some(vec!["v1".to_owned()])
        );
        assert_eq!(
            ecr.tags_of(&target(), &repo("team-b/api"), &ours),
            Some(vec!["v1.0.1".to_owned()])
        );
    }

    #[tokio::test]
    async fn a_manifest_that_does_not_hash_to_the_job_digest_is_never_put() {
        let (ecr, claims) = fixture();
        let digest = ecr.push_image(&source(), &repo("team-a/web"), &["v1"], &[b"layer"]);
        ecr.corrupt_manifest(&source(), &repo("team-a/web"), &digest);

        let err = copy_image(&context(&ecr, &claims), &job(&digest, &["v1"]))
            .await
            .expect_err("mismatch");
        assert!(matches!(&err, CopyError::DigestMismatch { expected, .. } if *expected == digest));
        assert!(!err.retryable());
        assert_eq!(ecr.calls(operation::PUT_IMAGE), 0);
        assert_eq!(ecr.calls(operation::TRANSFER_BLOB), 0);
    }

    #[tokio::test]
    async fn registry_errors_say_the_step_and_keep_their_retryability() {
        let (ecr, claims) = fixture();
        let digest = ecr.push_image(&source(), &repo("team-a/web"), &["v1"], &[b"layer"]);
        ecr.fail_next(operation::PUT_IMAGE, true);
        let err = copy_image(&context(&ecr, &claims), &job(&digest, &["v1"]))
            .await
            .expect_err("throttled");
        assert!(err.retryable());
        assert!(err.to_string().starts_with("putting the manifest"), "{err}");

        // Retried: the blobs are there, only the manifest is put.
        let report = copy_image(&context(&ecr, &claims), &job(&digest, &["v1"]))
            .await
            .expect("retry");
        assert_eq!(report.blobs_uploaded, 0);
        assert_eq!(report.blobs_already_present, 2);
        assert_eq!(report.manifests_put, 1);
    }

    #[tokio::test]
    async fn a_failed_upload_releases_its_claim() {
        let (ecr, claims) = fixture();
        let digest = ecr.push_image(&source(), &repo("team-a/web"), &["v1"], &[b"layer"]);
        ecr.fail_next(operation::TRANSFER_BLOB, true);
        copy_image(&context(&ecr, &claims), &job(&digest, &["v1"]))
            .await
            .expect_err("transfer failed");
        // Nobody holds a claim on any of the image's blobs: a retry or another copy can
        // upload them at once instead of waiting for an expiry.
        for blob in ecr
            .references(&source(), &repo("team-a/web"), &digest)
            .blobs
        {
            assert_eq!(
                claims
                    .claim(&target(), &repo("team-a/web"), &blob.digest)
                    .await
                    .expect("claim"),
                Claim::Granted,
                "{}",
                blob.digest
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_copies_upload_each_shared_blob_once_per_destination_repository() {
        let (ecr, claims) = fixture();
        ecr.create_repository_with(
            &target(),
            &repo("team-b/api"),
            InMemoryEcr::default_settings(),
        );
        let mut jobs = Vec::new();
        for n in 0..24u8 {
            let repository = if n % 2 == 0 {
                "team-a/web"
            } else {
                "team-b/api"
            };
            let own = [b'x', n];
            let digest = ecr.push_image(
                &source(),
                &repo(repository),
                &[&format!("v{n}")],
                &[b"shared-base", b"shared-runtime", &own],
            );
            let mut copy = job(&digest, &[&format!("v{n}")]);
            copy.source_repository = repo(repository);
            copy.destination_repository = repo(repository);
            jobs.push(copy);
        }
        let ecr = Arc::new(ecr);
        let claims = Arc::new(claims);
        let mut tasks = Vec::new();
        for copy in jobs.clone() {
            let (ecr, claims) = (ecr.clone(), claims.clone());
            tasks.push(tokio::spawn(async move {
                let context = CopyContext {
                    registry: &*ecr,
                    claims: &*claims,
                    sleeper: &BriefSleeper,
                    options: CopyOptions {
                        claim_poll: Duration::from_millis(1),
                        ..CopyOptions::default()
                    },
                };
                copy_image(&context, &copy).await
            }));
        }
        let mut reports = Vec::new();
        for task in tasks {
            reports.push(task.await.expect("task").expect("copy"));
        }

        let base = InMemoryEcr::blob_digest(b"shared-base");
        let runtime = InMemoryEcr::blob_digest(b"shared-runtime");
        for repository in ["team-a/web", "team-b/api"] {
            assert_eq!(
                ecr.transfers_of(&target(), &repo(repository), &base),
                1,
                "{repository}"
            );
            assert_eq!(
                ecr.transfers_of(&target(), &repo(repository), &runtime),
                1,
                "{repository}"
            );
        }
        for copy in &jobs {
            assert_eq!(
                ecr.tags_of(&target(), &copy.destination_repository, &copy.digest),
                Some(copy.tags.clone())
            );
        }
        // Every copy needed the shared blobs: it uploaded them, found them, or waited for them.
        for report in &reports {
            assert_eq!(
                report.blobs_uploaded
                    + report.blobs_already_present
                    + report.blobs_uploaded_elsewhere,
                4
            );
        }
        let uploads: usize = reports.iter().map(|r| r.blobs_uploaded).sum();
        // Per repository: two shared blobs once, plus each image's own layer and config.
        assert_eq!(uploads, 2 * 2 + 24 * 2);
    }

    #[tokio::test]
    async fn a_claim_left_by_a_dead_holder_expires_and_the_blob_still_arrives() {
        let ecr = InMemoryEcr::new();
        ecr.create_repository_with(
            &target(),
            &repo("team-a/web"),
            InMemoryEcr::default_settings(),
        );
        let digest = ecr.push_image(&source(), &repo("team-a/web"), &["v1"], &[b"layer"]);
        let layer = InMemoryEcr::blob_digest(b"layer");
        let start = Utc::now();
        let clock = Arc::new(ManualClock::new(start));
        let claims = InMemoryBlobClaims::new(clock.clone(), TimeDelta::minutes(5));
        // A copy that claimed the layer and died.
        assert_eq!(
            claims
                .claim(&target(), &repo("team-a/web"), &layer)
                .await
                .expect("claim"),
            Claim::Granted
        );
        let sleeper = ManualClockSleeper::new(clock.clone());
        let context = CopyContext {
            registry: &ecr,
            claims: &claims,
            sleeper: &sleeper,
            options: CopyOptions {
                claim_poll: Duration::from_secs(10),
                claim_wait: Duration::from_secs(120),
                max_claim_rounds: 10,
                blob_concurrency: 3,
            },
        };

        let wall = std::time::Instant::now();
        let report = copy_image(&context, &job(&digest, &["v1"]))
            .await
            .expect("copies");
        assert!(wall.elapsed() < Duration::from_secs(5), "no real waiting");
        assert!(ecr.has_blob(&target(), &repo("team-a/web"), &layer));
        assert_eq!(ecr.transfers_of(&target(), &repo("team-a/web"), &layer), 1);
        assert_eq!(report.blobs_uploaded, 2);
        // It waited out the claim (five minutes), claiming again every two.
        let waited = clock.now() - start;
        assert!(
            waited >= TimeDelta::minutes(5) && waited <= TimeDelta::minutes(6),
            "{waited}"
        );
    }

    #[test]
    fn a_copy_job_is_a_stable_json_message() {
        let digest = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).expect("digest");
        let json = serde_json::to_value(job(&digest, &["v1"])).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "source": {"region": "us-west-2", "registryId": "111111111111"},
                "sourceRepository": "team-a/web",
                "destination": {"region": "eu-west-1", "registryId": "222222222222"},
                "destinationRepository": "team-a/web",
                "digest": digest.as_str(),
                "tags": ["v1"],
            })
        );
        let back: CopyJob = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, job(&digest, &["v1"]));
        let untagged = serde_json::json!({
            "source": {"region": "us-west-2", "registryId": "111111111111"},
            "sourceRepository": "team-a/web",
            "destination": {"region": "eu-west-1", "registryId": "222222222222"},
            "destinationRepository": "team-a/web",
            "digest": digest.as_str(),
        });
        assert!(
            serde_json::from_value::<CopyJob>(untagged)
                .expect("no tags")
                .tags
                .is_empty()
        );
        let bad = serde_json::json!({"source": {"region": "us-west-2", "registryId": "1"}});
        assert!(serde_json::from_value::<CopyJob>(bad).is_err());
    }
}
