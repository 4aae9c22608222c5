//! An in-memory ECR for the tests of backfills (`test-support` feature): registries per
//! (Region, account), repositories with settings, blobs, manifests and tags, and the rules of
//! ECR that a copy can get wrong enforced as ECR enforces them:
//! - `PutImage` into a missing repository fails;
//! - `PutImage` fails when a blob the manifest references, or a child of an index, is not in
//!   the repository (`LayersNotFoundException`; the local AWS lets this pass, real ECR does
//!   not);
//! - `PutImage` checks the manifest hashes to the digest given;
//! - an immutable tag on another image answers [`PutOutcome::TagImmutable`].
//!
//! Every operation is counted, blob transfers per (registry, repository, blob) and how many
//! were under way at once, and the next call of an operation can be made to fail, so tests
//! assert what a copy costs and how it recovers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use sha2::{Digest as _, Sha256};

use crate::backfill::inventory::{
    CreationTemplate, Encryption, ImageRecord, RepositoryInventory, RepositorySettings,
    TagMutability,
};
use crate::backfill::manifest::{
    BlobReference, DOCKER_MANIFEST, ManifestBytes, ManifestReferences, OCI_INDEX, OCI_MANIFEST,
};
use crate::backfill::port::{CopyRegistry, InventoryReader, PutOutcome, RepositoryCreator};
use crate::clock::yield_now;
use crate::model::{Destination, Digest, RepositoryName};
use crate::registry::RegistryError;
use crate::rules::ReplicationConfiguration;

/// The names operations are counted under.
pub mod operation {
    pub const DESCRIBE_IMAGES: &str = "DescribeImages";
    pub const BATCH_GET_IMAGE: &str = "BatchGetImage";
    pub const BATCH_CHECK_LAYER_AVAILABILITY: &str = "BatchCheckLayerAvailability";
    /// One streamed blob transfer (download URL, GET, initiate, parts, complete).
    pub const TRANSFER_BLOB: &str = "TransferBlob";
    pub const PUT_IMAGE: &str = "PutImage";
    pub const CREATE_REPOSITORY: &str = "CreateRepository";
    pub const DESCRIBE_REPOSITORIES: &str = "DescribeRepositories";
    pub const DESCRIBE_REPOSITORY_CREATION_TEMPLATES: &str = "DescribeRepositoryCreationTemplates";
    pub const DESCRIBE_REGISTRY: &str = "DescribeRegistry";
}

#[derive(Debug, Default)]
struct Repository {
    settings: Option<RepositorySettings>,
    blobs: HashMap<Digest, u64>,
    manifests: BTreeMap<Digest, (ManifestBytes, DateTime<Utc>)>,
    tags: BTreeMap<String, Digest>,
    transfers: HashMap<Digest, usize>,
}

#[derive(Debug, Default)]
struct Registry {
    repositories: BTreeMap<RepositoryName, Repository>,
    templates: Vec<CreationTemplate>,
    replication: ReplicationConfiguration,
}

#[derive(Debug, Default)]
struct State {
    registries: BTreeMap<Destination, Registry>,
    pushes: i64,
    /// Blob transfers between their start and their end, and the most there ever were.
    transfers_in_flight: usize,
    most_transfers_at_once: usize,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct InMemoryEcr {
    state: Mutex<State>,
    calls: Mutex<HashMap<&'static str, usize>>,
    failures: Mutex<HashMap<&'static str, VecDeque<bool>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn not_found(operation: &'static str, resource: String, what: &str) -> RegistryError {
    RegistryError {
        operation,
        resource,
        message: what.to_owned(),
        retryable: false,
    }
}

impl InMemoryEcr {
    pub fn new() -> Self {
        Self::default()
    }

    /// What `CreateRepository` gives without options: mutable tags, AES256, no scan.
    pub fn default_settings() -> RepositorySettings {
        RepositorySettings {
            tag_mutability: TagMutability::Mutable,
            scan_on_push: false,
            encryption: Encryption {
                encryption_type: "AES256".into(),
                kms_key: None,
            },
            lifecycle_policy: None,
            repository_policy: None,
            resource_tags: Vec::new(),
        }
    }

    /// The digest of a blob with this content.
    pub fn blob_digest(content: &[u8]) -> Digest {
        Digest::from_sha256(&Sha256::digest(content).into())
    }

    // --- Seeding (not counted as calls) ---

    /// Creates (or resets the settings of) a repository.
    pub fn create_repository_with(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        settings: RepositorySettings,
    ) {
        let mut state = lock(&self.state);
        let entry = state
            .registries
            .entry(registry.clone())
            .or_default()
            .repositories
            .entry(repository.clone())
            .or_default();
        entry.settings = Some(settings);
    }

    /// What `DescribeRegistry` answers for `registry` (empty until set).
    pub fn set_replication_configuration(
        &self,
        registry: &Destination,
        configuration: ReplicationConfiguration,
    ) {
        lock(&self.state)
            .registries
            .entry(registry.clone())
            .or_default()
            .replication = configuration;
    }

    pub fn add_creation_template(&self, registry: &Destination, template: CreationTemplate) {
        lock(&self.state)
            .registries
            .entry(registry.clone())
            .or_default()
            .templates
            .push(template);
    }

    /// Uploads a blob (creating the repository with default settings if needed).
    pub fn push_blob(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        content: &[u8],
    ) -> BlobReference {
        let blob = BlobReference {
            digest: Self::blob_digest(content),
            size: content.len() as u64,
            media_type: "application/vnd.docker.image.rootfs.diff.tar.gzip".into(),
        };
        let mut state = lock(&self.state);
        Self::seeded(&mut state, registry, repository)
            .blobs
            .insert(blob.digest.clone(), blob.size);
        blob
    }

    /// Pushes a manifest as is, with tags (moving them), whatever the repository settings.
    pub fn push_manifest(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        manifest: ManifestBytes,
        tags: &[&str],
    ) -> Digest {
        let digest = manifest.digest();
        let mut state = lock(&self.state);
        state.pushes += 1;
        let pushed_at = Self::push_time(state.pushes);
        let repo = Self::seeded(&mut state, registry, repository);
        repo.manifests
            .entry(digest.clone())
            .or_insert((manifest, pushed_at));
        for tag in tags {
            repo.tags.insert((*tag).to_owned(), digest.clone());
        }
        digest
    }

    /// Pushes a single-arch Docker image: one blob per layer content, and a config naming them.
    pub fn push_image(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        tags: &[&str],
        layers: &[&[u8]],
    ) -> Digest {
        let layers: Vec<BlobReference> = layers
            .iter()
            .map(|content| self.push_blob(registry, repository, content))
            .collect();
        let diff_ids: Vec<String> = layers.iter().map(|l| format!("\"{}\"", l.digest)).collect();
        let config_content = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
            diff_ids.join(",")
        );
        let mut config = self.push_blob(registry, repository, config_content.as_bytes());
        config.media_type = "application/vnd.docker.container.image.v1+json".into();
        self.push_manifest(
            registry,
            repository,
            image_manifest(DOCKER_MANIFEST, &config, &layers),
            tags,
        )
    }

    /// Pushes an OCI index of manifests already in the repository.
    pub fn push_index(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        tags: &[&str],
        children: &[Digest],
    ) -> Digest {
        let entries: Vec<String> = {
            let state = lock(&self.state);
            children
                .iter()
                .map(|child| {
                    let (media_type, size) = state
                        .registries
                        .get(registry)
                        .and_then(|r| r.repositories.get(repository))
                        .and_then(|r| r.manifests.get(child))
                        .map_or((OCI_MANIFEST.to_owned(), 0), |(m, _)| {
                            (m.media_type.clone(), m.bytes.len())
                        });
                    format!(
                        r#"{{"mediaType":"{media_type}","digest":"{child}","size":{size},"platform":{{"architecture":"amd64","os":"linux"}}}}"#
                    )
                })
                .collect()
        };
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
            entries.join(",")
        );
        self.push_manifest(
            registry,
            repository,
            ManifestBytes {
                media_type: OCI_INDEX.into(),
                bytes: json.into_bytes(),
            },
            tags,
        )
    }

    /// Pushes an OCI 1.1 referrer of `subject` (a signature, SBOM, attestation): an OCI
    /// manifest with `artifactType`, an empty config, `content` as its one layer, and `subject`.
    pub fn push_referrer(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        subject: &Digest,
        artifact_type: &str,
        content: &[u8],
    ) -> Digest {
        let layer = self.push_blob(registry, repository, content);
        let mut config = self.push_blob(registry, repository, b"{}");
        config.media_type = "application/vnd.oci.empty.v1+json".into();
        let (subject_type, subject_size) = {
            let state = lock(&self.state);
            state
                .registries
                .get(registry)
                .and_then(|r| r.repositories.get(repository))
                .and_then(|r| r.manifests.get(subject))
                .map_or((OCI_MANIFEST.to_owned(), 0), |(m, _)| {
                    (m.media_type.clone(), m.bytes.len())
                })
        };
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{artifact_type}","config":{{"mediaType":"{}","size":{},"digest":"{}"}},"layers":[{{"mediaType":"application/octet-stream","size":{},"digest":"{}"}}],"subject":{{"mediaType":"{subject_type}","size":{subject_size},"digest":"{subject}"}}}}"#,
            config.media_type, config.size, config.digest, layer.size, layer.digest
        );
        self.push_manifest(
            registry,
            repository,
            ManifestBytes {
                media_type: OCI_MANIFEST.into(),
                bytes: json.into_bytes(),
            },
            &[],
        )
    }

    /// Replaces the stored bytes of a manifest, keeping its digest: a corrupted read.
    pub fn corrupt_manifest(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        digest: &Digest,
    ) {
        let mut state = lock(&self.state);
        if let Some((manifest, _)) = state
            .registries
            .get_mut(registry)
            .and_then(|r| r.repositories.get_mut(repository))
            .and_then(|r| r.manifests.get_mut(digest))
        {
            manifest.bytes.extend_from_slice(b" ");
        }
    }

    /// Makes the next call of `operation` fail (throttled when `retryable`).
    pub fn fail_next(&self, operation: &'static str, retryable: bool) {
        lock(&self.failures)
            .entry(operation)
            .or_default()
            .push_back(retryable);
    }

    // --- Observation ---

    /// The tags of an image, sorted, or `None` when the image is absent.
    pub fn tags_of(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Option<Vec<String>> {
        let state = lock(&self.state);
        let repo = state
            .registries
            .get(registry)?
            .repositories
            .get(repository)?;
        repo.manifests.get(digest)?;
        Some(Self::tags_in(repo, digest))
    }

    pub fn has_blob(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        blob: &Digest,
    ) -> bool {
        let state = lock(&self.state);
        state
            .registries
            .get(registry)
            .and_then(|r| r.repositories.get(repository))
            .is_some_and(|r| r.blobs.contains_key(blob))
    }

    /// What a stored manifest references (empty when absent or unreadable).
    pub fn references(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> ManifestReferences {
        let state = lock(&self.state);
        state
            .registries
            .get(registry)
            .and_then(|r| r.repositories.get(repository))
            .and_then(|r| r.manifests.get(digest))
            .and_then(|(m, _)| ManifestReferences::parse(m).ok())
            .unwrap_or_default()
    }

    /// The bytes of the blobs of a single-arch image.
    pub fn blob_bytes_of(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> u64 {
        self.references(registry, repository, digest).blob_bytes()
    }

    pub fn repository_settings(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
    ) -> Option<RepositorySettings> {
        let state = lock(&self.state);
        state
            .registries
            .get(registry)?
            .repositories
            .get(repository)?
            .settings
            .clone()
    }

    /// How many transfers of `blob` into this repository were started.
    pub fn transfers_of(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        blob: &Digest,
    ) -> usize {
        let state = lock(&self.state);
        state
            .registries
            .get(registry)
            .and_then(|r| r.repositories.get(repository))
            .and_then(|r| r.transfers.get(blob).copied())
            .unwrap_or(0)
    }

    /// The most blob transfers that were ever under way at once.
    pub fn most_transfers_at_once(&self) -> usize {
        lock(&self.state).most_transfers_at_once
    }

    pub fn calls(&self, operation: &str) -> usize {
        lock(&self.calls).get(operation).copied().unwrap_or(0)
    }

    pub fn total_calls(&self) -> usize {
        lock(&self.calls).values().sum()
    }

    // --- Internals ---

    fn push_time(push: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default()
            + TimeDelta::minutes(push)
    }

    fn seeded<'s>(
        state: &'s mut State,
        registry: &Destination,
        repository: &RepositoryName,
    ) -> &'s mut Repository {
        let repo = state
            .registries
            .entry(registry.clone())
            .or_default()
            .repositories
            .entry(repository.clone())
            .or_default();
        repo.settings.get_or_insert_with(Self::default_settings);
        repo
    }

    /// Counts a call and answers an injected failure, if one is due.
    fn call(
        &self,
        operation: &'static str,
        resource: impl FnOnce() -> String,
    ) -> Result<(), RegistryError> {
        *lock(&self.calls).entry(operation).or_default() += 1;
        match lock(&self.failures)
            .get_mut(operation)
            .and_then(VecDeque::pop_front)
        {
            Some(retryable) => Err(RegistryError {
                operation,
                resource: resource(),
                message: "injected failure".into(),
                retryable,
            }),
            None => Ok(()),
        }
    }

    fn tags_in(repo: &Repository, digest: &Digest) -> Vec<String> {
        repo.tags
            .iter()
            .filter(|(_, d)| *d == digest)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// ECR's `imageSizeInBytes`: the blobs of a manifest, the sum of the children of an index.
    fn size_of(repo: &Repository, digest: &Digest, depth: usize) -> u64 {
        let Some(references) = repo
            .manifests
            .get(digest)
            .and_then(|(m, _)| ManifestReferences::parse(m).ok())
        else {
            return 0;
        };
        let children: u64 = if depth < 3 {
            references
                .children
                .iter()
                .map(|c| Self::size_of(repo, c, depth + 1))
                .sum()
        } else {
            0
        };
        references.blob_bytes() + children
    }

    fn record(repo: &Repository, digest: &Digest) -> Option<ImageRecord> {
        let (manifest, pushed_at) = repo.manifests.get(digest)?;
        let references = ManifestReferences::parse(manifest).ok();
        Some(ImageRecord {
            digest: digest.clone(),
            tags: Self::tags_in(repo, digest),
            pushed_at: Some(*pushed_at),
            media_type: Some(manifest.media_type.clone()).filter(|m| !m.is_empty()),
            size_bytes: Some(Self::size_of(repo, digest, 0)),
            subject: references.as_ref().and_then(|r| r.subject.clone()),
            artifact_type: None,
            archived: false,
            children: references.map(|r| r.children).unwrap_or_default(),
        })
    }
}

/// The bytes of an image manifest with this config and these layers.
pub fn image_manifest(
    media_type: &str,
    config: &BlobReference,
    layers: &[BlobReference],
) -> ManifestBytes {
    let descriptor = |b: &BlobReference| {
        format!(
            r#"{{"mediaType":"{}","size":{},"digest":"{}"}}"#,
            b.media_type, b.size, b.digest
        )
    };
    let layers: Vec<String> = layers.iter().map(descriptor).collect();
    let json = format!(
        r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{},"layers":[{}]}}"#,
        descriptor(config),
        layers.join(",")
    );
    ManifestBytes {
        media_type: media_type.to_owned(),
        bytes: json.into_bytes(),
    }
}

fn resource(registry: &Destination, repository: &RepositoryName) -> String {
    format!("{registry} {repository}")
}

impl CopyRegistry for InMemoryEcr {
    async fn image(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<ImageRecord>, RegistryError> {
        self.call(operation::DESCRIBE_IMAGES, || {
            resource(registry, repository)
        })?;
        let state = lock(&self.state);
        Ok(state
            .registries
            .get(registry)
            .and_then(|r| r.repositories.get(repository))
            .and_then(|repo| Self::record(repo, digest)))
    }

    async fn manifest(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<ManifestBytes, RegistryError> {
        self.call(operation::BATCH_GET_IMAGE, || {
            resource(registry, repository)
        })?;
        let state = lock(&self.state);
        state
            .registries
            .get(registry)
            .and_then(|r| r.repositories.get(repository))
            .and_then(|r| r.manifests.get(digest))
            .map(|(m, _)| m.clone())
            .ok_or_else(|| {
                not_found(
                    operation::BATCH_GET_IMAGE,
                    resource(registry, repository),
                    &format!("ImageNotFoundException: {digest}"),
                )
            })
    }

    async fn missing_blobs(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        blobs: &[Digest],
    ) -> Result<Vec<Digest>, RegistryError> {
        self.call(operation::BATCH_CHECK_LAYER_AVAILABILITY, || {
            resource(registry, repository)
        })?;
        let state = lock(&self.state);
        let repo = state
            .registries
            .get(registry)
            .and_then(|r| r.repositories.get(repository));
        Ok(blobs
            .iter()
            .filter(|b| repo.is_none_or(|r| !r.blobs.contains_key(*b)))
            .cloned()
            .collect())
    }

    async fn transfer_blob(
        &self,
        source: &Destination,
        source_repository: &RepositoryName,
        destination: &Destination,
        destination_repository: &RepositoryName,
        blob: &Digest,
    ) -> Result<u64, RegistryError> {
        self.call(operation::TRANSFER_BLOB, || {
            resource(destination, destination_repository)
        })?;
        let size = {
            let mut state = lock(&self.state);
            let size = state
                .registries
                .get(source)
                .and_then(|r| r.repositories.get(source_repository))
                .and_then(|r| r.blobs.get(blob).copied())
                .ok_or_else(|| {
                    not_found(
                        "GetDownloadUrlForLayer",
                        resource(source, source_repository),
                        &format!("LayersNotFoundException: {blob}"),
                    )
                })?;
            let repo = state
                .registries
                .get_mut(destination)
                .and_then(|r| r.repositories.get_mut(destination_repository))
                .ok_or_else(|| {
                    not_found(
                        "InitiateLayerUpload",
                        resource(destination, destination_repository),
                        "RepositoryNotFoundException",
                    )
                })?;
            *repo.transfers.entry(blob.clone()).or_default() += 1;
            state.transfers_in_flight += 1;
            state.most_transfers_at_once =
                state.most_transfers_at_once.max(state.transfers_in_flight);
            size
        };
        // The bytes take time to cross: other copies run meanwhile, as they would.
        yield_now().await;
        let mut state = lock(&self.state);
        state.transfers_in_flight -= 1;
        let repo = state
            .registries
            .get_mut(destination)
            .and_then(|r| r.repositories.get_mut(destination_repository))
            .ok_or_else(|| {
                not_found(
                    "CompleteLayerUpload",
                    resource(destination, destination_repository),
                    "RepositoryNotFoundException",
                )
            })?;
        // `LayerAlreadyExistsException` at completion: nothing new was stored.
        Ok(match repo.blobs.insert(blob.clone(), size) {
            Some(_) => 0,
            None => size,
        })
    }

    async fn put_manifest(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        manifest: &ManifestBytes,
        digest: &Digest,
        tag: Option<&str>,
    ) -> Result<PutOutcome, RegistryError> {
        let here = || resource(registry, repository);
        self.call(operation::PUT_IMAGE, here)?;
        let refused = |message: String| RegistryError {
            operation: operation::PUT_IMAGE,
            resource: here(),
            message,
            retryable: false,
        };
        if manifest.digest() != *digest {
            return Err(refused(format!(
                "InvalidParameterException: the manifest does not hash to {digest}"
            )));
        }
        let references = ManifestReferences::parse(manifest)
            .map_err(|e| refused(format!("InvalidParameterException: {e}")))?;
        let mut state = lock(&self.state);
        let repo = state
            .registries
            .get_mut(registry)
            .and_then(|r| r.repositories.get_mut(repository))
            .ok_or_else(|| refused("RepositoryNotFoundException".into()))?;
        if let Some(missing) = references
            .blobs
            .iter()
            .find(|b| !repo.blobs.contains_key(&b.digest))
        {
            return Err(refused(format!(
                "LayersNotFoundException: {}",
                missing.digest
            )));
        }
        if let Some(missing) = references
            .children
            .iter()
            .find(|c| !repo.manifests.contains_key(*c))
        {
            return Err(refused(format!(
                "ReferencedImagesNotFoundException: {missing}"
            )));
        }
        let present = repo.manifests.contains_key(digest);
        let outcome = match tag {
            None if present => PutOutcome::AlreadyThere,
            None => PutOutcome::Written,
            Some(tag) => match repo.tags.get(tag) {
                Some(holder) if holder == digest => PutOutcome::AlreadyThere,
                Some(_)
                    if repo
                        .settings
                        .as_ref()
                        .is_some_and(|s| s.tag_mutability.is_immutable(tag)) =>
                {
                    PutOutcome::TagImmutable
                }
                _ => PutOutcome::Written,
            },
        };
        if outcome == PutOutcome::Written {
            state.pushes += 1;
            let pushed_at = Self::push_time(state.pushes);
            if let Some(repo) = state
                .registries
                .get_mut(registry)
                .and_then(|r| r.repositories.get_mut(repository))
            {
                repo.manifests
                    .entry(digest.clone())
                    .or_insert((manifest.clone(), pushed_at));
                if let Some(tag) = tag {
                    repo.tags.insert(tag.to_owned(), digest.clone());
                }
            }
        }
        Ok(outcome)
    }
}

impl RepositoryCreator for InMemoryEcr {
    async fn create_repository(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        settings: &RepositorySettings,
    ) -> Result<bool, RegistryError> {
        self.call(operation::CREATE_REPOSITORY, || {
            resource(registry, repository)
        })?;
        let mut state = lock(&self.state);
        let repositories = &mut state
            .registries
            .entry(registry.clone())
            .or_default()
            .repositories;
        if repositories.contains_key(repository) {
            return Ok(false);
        }
        repositories.insert(
            repository.clone(),
            Repository {
                settings: Some(settings.clone()),
                ..Repository::default()
            },
        );
        Ok(true)
    }
}

impl InventoryReader for InMemoryEcr {
    async fn repositories(
        &self,
        registry: &Destination,
        prefixes: &[String],
    ) -> Result<Vec<RepositoryInventory>, RegistryError> {
        self.call(operation::DESCRIBE_REPOSITORIES, || registry.to_string())?;
        let state = lock(&self.state);
        let Some(found) = state.registries.get(registry) else {
            return Ok(Vec::new());
        };
        Ok(found
            .repositories
            .iter()
            .filter(|(name, _)| {
                prefixes.is_empty()
                    || prefixes
                        .iter()
                        .any(|p| name.as_str().starts_with(p.as_str()))
            })
            .map(|(name, repo)| RepositoryInventory {
                name: name.clone(),
                settings: repo.settings.clone().unwrap_or_else(Self::default_settings),
                images: repo
                    .manifests
                    .keys()
                    .filter_map(|digest| Self::record(repo, digest))
                    .collect(),
            })
            .collect())
    }

    async fn creation_templates(
        &self,
        registry: &Destination,
    ) -> Result<Vec<CreationTemplate>, RegistryError> {
        self.call(operation::DESCRIBE_REPOSITORY_CREATION_TEMPLATES, || {
            registry.to_string()
        })?;
        let state = lock(&self.state);
        Ok(state
            .registries
            .get(registry)
            .map(|r| r.templates.clone())
            .unwrap_or_default())
    }

    async fn replication_configuration(
        &self,
        registry: &Destination,
    ) -> Result<ReplicationConfiguration, RegistryError> {
        self.call(operation::DESCRIBE_REGISTRY, || registry.to_string())?;
        Ok(lock(&self.state)
            .registries
            .get(registry)
            .map(|r| r.replication.clone())
            .unwrap_or_default())
    }
}
