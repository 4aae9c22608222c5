//! The ports a backfill runs over. The adapters on ECR (and on DynamoDB for claims shared
//! between Lambda invocations) live in `replwatch-aws`; tests use in-memory versions.
//!
//! Registries are named by [`Destination`] (`region`, `registryId`) whether they are the source
//! or a destination of the copy: the adapter picks credentials per registry (the caller's own,
//! or an assumed role in another account).

use std::future::Future;

use crate::backfill::inventory::{
    CreationTemplate, ImageRecord, RepositoryInventory, RepositorySettings,
};
use crate::backfill::manifest::ManifestBytes;
use crate::model::{Destination, Digest, RepositoryName};
use crate::registry::RegistryError;
use crate::rules::ReplicationConfiguration;

/// Reads what a registry holds (`DescribeRepositories`, `DescribeImages`, paginated;
/// `GetLifecyclePolicy`, `GetRepositoryPolicy`; `DescribeRepositoryCreationTemplates`).
pub trait InventoryReader: Send + Sync {
    /// Every repository whose name starts with one of `prefixes` (all when empty), with its
    /// settings, and every image in it.
    fn repositories(
        &self,
        registry: &Destination,
        prefixes: &[String],
    ) -> impl Future<Output = Result<Vec<RepositoryInventory>, RegistryError>> + Send;

    /// The repository creation templates of `registry` (empty when none or not readable).
    fn creation_templates(
        &self,
        registry: &Destination,
    ) -> impl Future<Output = Result<Vec<CreationTemplate>, RegistryError>> + Send;

    /// The replication rules of a source registry (`DescribeRegistry`): what to plan for.
    fn replication_configuration(
        &self,
        registry: &Destination,
    ) -> impl Future<Output = Result<ReplicationConfiguration, RegistryError>> + Send;
}

/// What `PutImage` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// The manifest (and tag, if any) now points where asked.
    Written,
    /// The image was already there with that tag (`ImageAlreadyExistsException`).
    AlreadyThere,
    /// The tag is immutable in the destination and points at another image
    /// (`ImageTagAlreadyExistsException`): reported, never overwritten.
    TagImmutable,
}

/// The ECR operations one copy is made of. Each call is one API operation (or, for
/// [`CopyRegistry::transfer_blob`], one streamed transfer), so the copy's logic stays in the core.
pub trait CopyRegistry: Send + Sync {
    /// `DescribeImages` of one digest: its tags, or `None` when the image or repository is
    /// absent.
    fn image(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> impl Future<Output = Result<Option<ImageRecord>, RegistryError>> + Send;

    /// `BatchGetImage` of one digest: the manifest exactly as stored, with its media type.
    fn manifest(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> impl Future<Output = Result<ManifestBytes, RegistryError>> + Send;

    /// `BatchCheckLayerAvailability` (batches of 100): the digests of `blobs` not available in
    /// `repository`. A missing repository has every blob missing.
    fn missing_blobs(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        blobs: &[Digest],
    ) -> impl Future<Output = Result<Vec<Digest>, RegistryError>> + Send;

    /// Streams one blob from the source (`GetDownloadUrlForLayer` and an HTTP GET) into the
    /// destination (`InitiateLayerUpload`, `UploadLayerPart`s, `CompleteLayerUpload`) without
    /// holding it whole in memory. Returns the bytes uploaded (0 when ECR already had it:
    /// `LayerAlreadyExistsException`).
    fn transfer_blob(
        &self,
        source: &Destination,
        source_repository: &RepositoryName,
        destination: &Destination,
        destination_repository: &RepositoryName,
        blob: &Digest,
    ) -> impl Future<Output = Result<u64, RegistryError>> + Send;

    /// `PutImage` with `imageDigest` (so the digest is preserved) and an optional tag.
    fn put_manifest(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        manifest: &ManifestBytes,
        digest: &Digest,
        tag: Option<&str>,
    ) -> impl Future<Output = Result<PutOutcome, RegistryError>> + Send;
}

/// Creates the destination repositories a plan lists, before anything is copied into them
/// (apart from [`CopyRegistry`]: whoever plans creates, whoever copies writes images).
pub trait RepositoryCreator: Send + Sync {
    /// `CreateRepository` with these settings (and `PutLifecyclePolicy` /
    /// `SetRepositoryPolicy` when they carry one). `Ok(false)` when it already existed.
    fn create_repository(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        settings: &RepositorySettings,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send;
}

/// Who uploads a blob that several concurrent copies need in one destination repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This copy uploads it, then calls [`BlobClaims::release`].
    Granted,
    /// Another copy holds the claim: wait for the blob to become available, then check again.
    HeldElsewhere,
}

/// Claims on blob uploads, so a blob shared by many images crosses once per destination
/// repository even when the images are copied concurrently (threads of one CLI process, or
/// many Lambda invocations through a shared table). Claims expire: a copy that dies holding
/// one (killed process, Lambda timeout) delays the blob, it does not lose it.
pub trait BlobClaims: Send + Sync {
    fn claim(
        &self,
        destination: &Destination,
        repository: &RepositoryName,
        blob: &Digest,
    ) -> impl Future<Output = Result<Claim, RegistryError>> + Send;

    /// Gives up a claim after the upload ended, whether it succeeded or not.
    fn release(
        &self,
        destination: &Destination,
        repository: &RepositoryName,
        blob: &Digest,
    ) -> impl Future<Output = Result<(), RegistryError>> + Send;
}

/// `status` of a native replication backfill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeBackfillStatus {
    Preparing,
    InProgress,
    Complete,
    Failed {
        failure_code: Option<String>,
    },
    Stopping,
    Stopped,
    /// A status this build does not know; treated as not yet terminal.
    Other(String),
}

impl NativeBackfillStatus {
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Complete | Self::Failed { .. } | Self::Stopped)
    }
}

/// One native backfill, as `StartReplicationBackfill` / `ListReplicationBackfills` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeBackfill {
    pub id: String,
    pub destination: Destination,
    pub status: NativeBackfillStatus,
}

/// What `StartReplicationBackfill` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeStart {
    Started(NativeBackfill),
    /// One is already running for this destination Region, or ten in the registry: wait for
    /// one to end and try again.
    LimitReached,
    /// ECR refused the destination (not in the replication configuration, or not allowed):
    /// the plan falls back to `copy` for it.
    Refused {
        reason: String,
    },
}

/// One replication's result in a terminal native backfill (`DescribeReplicationBackfillResults`):
/// ECR replicates each image once per tag (an untagged image once), and reports each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeImageResult {
    pub repository: RepositoryName,
    pub digest: Digest,
    /// The tag this replication carried; `None` for an untagged image.
    pub tag: Option<String>,
    /// `None` when COMPLETE; the failure code (or `FAILED`) otherwise.
    pub failure: Option<String>,
    /// `subImageFailureCodes`: why children of an image index failed.
    pub sub_image_failures: Vec<String>,
}

impl std::fmt::Display for NativeImageResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.repository, self.digest)?;
        if let Some(tag) = &self.tag {
            write!(f, " (tag {tag})")?;
        }
        if let Some(failure) = &self.failure {
            write!(f, ": {failure}")?;
        }
        if !self.sub_image_failures.is_empty() {
            write!(
                f,
                "; images of the index: {}",
                self.sub_image_failures.join(", ")
            )?;
        }
        Ok(())
    }
}

/// ECR's native replication backfill, in a source registry.
pub trait NativeBackfillApi: Send + Sync {
    fn start(
        &self,
        source: &Destination,
        destination: &Destination,
    ) -> impl Future<Output = Result<NativeStart, RegistryError>> + Send;

    /// Every backfill of the registry (`ListReplicationBackfills`, all pages).
    fn list(
        &self,
        source: &Destination,
    ) -> impl Future<Output = Result<Vec<NativeBackfill>, RegistryError>> + Send;

    /// The per-image results of a terminal backfill (all pages).
    fn results(
        &self,
        source: &Destination,
        backfill_id: &str,
    ) -> impl Future<Output = Result<Vec<NativeImageResult>, RegistryError>> + Send;
}

/// Whether a destination can take images now: ECR replicates to an opt-in Region only once
/// the source and the destination account both enabled it, and nothing can be written there
/// before.
pub trait DestinationAccess: Send + Sync {
    /// `Ok(None)`: it can. `Ok(Some(why))`: it cannot; `why` says so and how to fix it.
    fn refusal(
        &self,
        source: &Destination,
        destination: &Destination,
    ) -> impl Future<Output = Result<Option<String>, RegistryError>> + Send;
}

/// The destinations of `destinations` that cannot take images now, with why. A status that
/// cannot be read refuses nothing (logged): the destination's inventory read says soon enough
/// if it is out of reach.
pub async fn refused_destinations<A: DestinationAccess>(
    access: &A,
    source: &Destination,
    destinations: &[Destination],
) -> Vec<(Destination, String)> {
    let mut refused = Vec::new();
    for destination in destinations {
        match access.refusal(source, destination).await {
            Ok(None) => {}
            Ok(Some(why)) => refused.push((destination.clone(), why)),
            Err(error) => tracing::warn!(
                %destination,
                %error,
                "whether the destination can take images is not known; planning it anyway"
            ),
        }
    }
    refused
}
