//! The backfill's copy port on Amazon ECR: one API operation per port call, digests kept.
//!
//! - Manifests are read with `BatchGetImage` accepting the Docker v2 manifest and manifest
//!   list and the OCI manifest and index ([`crate::ecr_manifests::ACCEPTED_MEDIA_TYPES`]): without
//!   `acceptedMediaTypes` ECR may convert a manifest, and a converted manifest has another
//!   digest. The bytes read are checked against the digest asked for.
//! - Blobs stream from the source to the destination: `GetDownloadUrlForLayer` gives a
//!   presigned URL, read with an HTTP GET chunk by chunk into one part buffer of
//!   [`CopyOptions::part_size`] (ECR wants parts of at least 5 MiB but the last; the smaller of
//!   that option and the `partSize` `InitiateLayerUpload` announces, kept within
//!   [`MIN_PART_SIZE`]..=[`MAX_PART_SIZE`]), each full part sent with `UploadLayerPart`, then
//!   `CompleteLayerUpload` with the digest. Memory: one part, whatever the blob's size. The
//!   byte count is checked against the download's `Content-Length` and the bytes against the
//!   digest before the upload is completed.
//! - `PutImage` carries `imageDigest`, so ECR refuses rather than stores anything under
//!   another digest; `ImageAlreadyExistsException` is [`PutOutcome::AlreadyThere`],
//!   `ImageTagAlreadyExistsException` [`PutOutcome::TagImmutable`].
//!
//! Throttling: ECR's per-Region limits are low for some of these (`PutImage` 10 per second);
//! the clients use the SDK's adaptive retry mode ([`CopyOptions::retry`]), whose client-side
//! rate limiter slows every client of the Region down after a throttling answer instead of
//! failing the copy.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_sdk_ecr::Client;
use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::primitives::Blob;
use aws_sdk_ecr::types::{ImageIdentifier, LayerAvailability};
use replwatch_core::backfill::inventory::ImageRecord;
use replwatch_core::backfill::manifest::ManifestBytes;
use replwatch_core::backfill::port::{CopyRegistry, PutOutcome};
use replwatch_core::model::{AccountId, Destination, Digest, RepositoryName};
use replwatch_core::registry::RegistryError;
use sha2::{Digest as _, Sha256};

use crate::ecr_clients::{CrossAccountAccess, EcrClients, invalid, is_not_found, registry_error};
use crate::ecr_manifests::read_manifest;
use crate::ecr_shapes::image_record;

/// The smallest part ECR accepts, but for the last one.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The largest part sent.
pub const MAX_PART_SIZE: u64 = 10 * 1024 * 1024;
/// Digests per `BatchCheckLayerAvailability` call (the API's maximum).
pub const LAYER_CHECK_BATCH: usize = 100;

/// How an [`EcrCopyRegistry`] copies.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Bytes per `UploadLayerPart` (default 10 MiB; kept within [`MIN_PART_SIZE`] and
    /// [`MAX_PART_SIZE`]). The memory a blob transfer holds.
    pub part_size: u64,
    /// The ECR clients' retry configuration. Default: adaptive (client-side rate limiting
    /// after throttling), 8 attempts.
    pub retry: RetryConfig,
    /// Connection timeout of blob downloads.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a blob download (not a limit on the whole
    /// download, which may be gigabytes).
    pub read_timeout: Duration,
}

impl Default for CopyOptions {
    fn default() -> Self {
        Self {
            part_size: MAX_PART_SIZE,
            retry: RetryConfig::adaptive().with_max_attempts(8),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// The HTTP client for blob downloads could not be built.
#[derive(Debug, thiserror::Error)]
#[error("HTTP client for blob downloads: {0}")]
pub struct CopySetupError(String);

/// [`CopyRegistry`] on ECR.
pub struct EcrCopyRegistry {
    clients: EcrClients,
    http: reqwest::Client,
    options: CopyOptions,
}

impl EcrCopyRegistry {
    /// A copier with the default [`CopyOptions`]. `base` carries the caller's own credentials,
    /// which belong to `home_account`; registries of other accounts (a source or a
    /// destination) are reached through `cross_account`'s role, which must allow the writes.
    pub fn new(
        base: SdkConfig,
        home_account: AccountId,
        cross_account: Option<CrossAccountAccess>,
    ) -> Result<Self, CopySetupError> {
        Self::with_options(base, home_account, cross_account, CopyOptions::default())
    }

    pub fn with_options(
        base: SdkConfig,
        home_account: AccountId,
        cross_account: Option<CrossAccountAccess>,
        options: CopyOptions,
    ) -> Result<Self, CopySetupError> {
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .user_agent(concat!("replwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CopySetupError(error_chain(&e.without_url())))?;
        let clients =
            EcrClients::new(base, home_account, cross_account).with_retry(options.retry.clone());
        Ok(Self {
            clients,
            http,
            options,
        })
    }

    pub fn options(&self) -> &CopyOptions {
        &self.options
    }

    /// At most `per_second` steps a second in each Region, counted as clients handed out
    /// ([`EcrClients::with_call_cap`]): each `DescribeImages`, manifest read, layer check and
    /// image put takes one, a blob transfer one in each Region (its parts share them). The
    /// `DescribeImages` it shares
    /// with the tracking functions is thereby within the copier's part of the stack's budget;
    /// the write actions have published quotas of their own (`PutImage` 10 a second).
    pub fn with_call_cap(mut self, per_second: f64) -> Self {
        self.clients = self.clients.with_call_cap(per_second);
        self
    }

    /// `UploadLayerPart` of `part`, which starts at byte `offset`; the offset after it.
    #[allow(clippy::too_many_arguments)]
    async fn upload_part(
        &self,
        client: &Client,
        destination: &Destination,
        repository: &RepositoryName,
        upload_id: &str,
        offset: u64,
        part: Vec<u8>,
        resource: &str,
    ) -> Result<u64, RegistryError> {
        let length = part.len() as u64;
        let first = i64::try_from(offset).map_err(|_| {
            invalid(
                "UploadLayerPart",
                resource.to_owned(),
                "blob too large".into(),
            )
        })?;
        let last = i64::try_from(offset + length - 1).map_err(|_| {
            invalid(
                "UploadLayerPart",
                resource.to_owned(),
                "blob too large".into(),
            )
        })?;
        client
            .upload_layer_part()
            .registry_id(destination.registry_id.as_str())
            .repository_name(repository.as_str())
            .upload_id(upload_id)
            .part_first_byte(first)
            .part_last_byte(last)
            .layer_part_blob(Blob::new(part))
            .send()
            .await
            .map_err(|e| registry_error("UploadLayerPart", resource.to_owned(), e))?;
        Ok(offset + length)
    }
}

/// The part size of one upload: the configured one, no larger than what ECR announced, within
/// ECR's bounds.
pub fn effective_part_size(configured: u64, announced: Option<i64>) -> usize {
    let announced = announced
        .and_then(|a| u64::try_from(a).ok())
        .filter(|a| *a > 0)
        .unwrap_or(MAX_PART_SIZE);
    let size = configured
        .min(announced)
        .clamp(MIN_PART_SIZE, MAX_PART_SIZE);
    usize::try_from(size).unwrap_or(MIN_PART_SIZE as usize)
}

/// `error` and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A failed blob download. The presigned URL is left out: it is a credential.
fn download_error(resource: &str, error: reqwest::Error) -> RegistryError {
    RegistryError {
        operation: "GetDownloadUrlForLayer(GET)",
        resource: resource.to_owned(),
        message: error_chain(&error.without_url()),
        retryable: true,
    }
}

impl CopyRegistry for EcrCopyRegistry {
    async fn image(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<ImageRecord>, RegistryError> {
        const OP: &str = "DescribeImages";
        let resource = format!("{registry} {repository}@{digest}");
        let client = self.clients.for_registry(registry).await?;
        let answer = client
            .describe_images()
            .registry_id(registry.registry_id.as_str())
            .repository_name(repository.as_str())
            .image_ids(
                ImageIdentifier::builder()
                    .image_digest(digest.as_str())
                    .build(),
            )
            .send()
            .await;
        match answer {
            Ok(output) => output
                .image_details()
                .first()
                .map(|d| image_record(d).map_err(|m| invalid(OP, resource.clone(), m)))
                .transpose(),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(registry_error(OP, resource, e)),
        }
    }

    async fn manifest(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<ManifestBytes, RegistryError> {
        let client = self.clients.for_registry(registry).await?;
        read_manifest(&client, registry, repository, digest).await
    }

    async fn missing_blobs(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        blobs: &[Digest],
    ) -> Result<Vec<Digest>, RegistryError> {
        const OP: &str = "BatchCheckLayerAvailability";
        let resource = format!("{registry} {repository}");
        let client = self.clients.for_registry(registry).await?;
        let mut missing = Vec::new();
        for batch in blobs.chunks(LAYER_CHECK_BATCH) {
            let answer = client
                .batch_check_layer_availability()
                .registry_id(registry.registry_id.as_str())
                .repository_name(repository.as_str())
                .set_layer_digests(Some(batch.iter().map(|d| d.as_str().to_owned()).collect()))
                .send()
                .await;
            let output = match answer {
                Ok(output) => output,
                Err(e) if e.code() == Some("RepositoryNotFoundException") => {
                    return Ok(blobs.to_vec());
                }
                Err(e) => return Err(registry_error(OP, resource, e)),
            };
            // Anything not said AVAILABLE (UNAVAILABLE, ARCHIVED, a failure, or not mentioned)
            // is uploaded.
            for digest in batch {
                let available = output.layers().iter().any(|l| {
                    l.layer_digest() == Some(digest.as_str())
                        && l.layer_availability() == Some(&LayerAvailability::Available)
                });
                if !available {
                    missing.push(digest.clone());
                }
            }
        }
        Ok(missing)
    }

    async fn transfer_blob(
        &self,
        source: &Destination,
        source_repository: &RepositoryName,
        destination: &Destination,
        destination_repository: &RepositoryName,
        blob: &Digest,
    ) -> Result<u64, RegistryError> {
        let from = format!("{source} {source_repository}@{blob}");
        let to = format!("{destination} {destination_repository}@{blob}");

        let source_client = self.clients.for_registry(source).await?;
        let located = source_client
            .get_download_url_for_layer()
            .registry_id(source.registry_id.as_str())
            .repository_name(source_repository.as_str())
            .layer_digest(blob.as_str())
            .send()
            .await
            .map_err(|e| registry_error("GetDownloadUrlForLayer", from.clone(), e))?;
        let url = located.download_url().ok_or_else(|| {
            invalid(
                "GetDownloadUrlForLayer",
                from.clone(),
                "no downloadUrl".into(),
            )
        })?;
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| download_error(&from, e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(RegistryError {
                operation: "GetDownloadUrlForLayer(GET)",
                resource: from,
                message: format!("HTTP {status}"),
                retryable: status.is_server_error() || matches!(status.as_u16(), 408 | 429),
            });
        }
        let announced_length = response.content_length();

        let client = self.clients.for_registry(destination).await?;
        let upload = client
            .initiate_layer_upload()
            .registry_id(destination.registry_id.as_str())
            .repository_name(destination_repository.as_str())
            .send()
            .await
            .map_err(|e| registry_error("InitiateLayerUpload", to.clone(), e))?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| invalid("InitiateLayerUpload", to.clone(), "no uploadId".into()))?
            .to_owned();
        let part_size = effective_part_size(self.options.part_size, upload.part_size());

        let mut hasher = Sha256::new();
        let mut part: Vec<u8> = Vec::with_capacity(part_size);
        let mut sent: u64 = 0;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| download_error(&from, e))?
        {
            hasher.update(&chunk);
            let mut rest: &[u8] = &chunk;
            while !rest.is_empty() {
                let take = (part_size - part.len()).min(rest.len());
                part.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if part.len() == part_size {
                    let full = std::mem::take(&mut part);
                    sent = self
                        .upload_part(
                            &client,
                            destination,
                            destination_repository,
                            &upload_id,
                            sent,
                            full,
                            &to,
                        )
                        .await?;
                    part.reserve(part_size);
                }
            }
        }
        if !part.is_empty() {
            sent = self
                .upload_part(
                    &client,
                    destination,
                    destination_repository,
                    &upload_id,
                    sent,
                    part,
                    &to,
                )
                .await?;
        }

        if sent == 0 {
            return Err(invalid(
                "GetDownloadUrlForLayer(GET)",
                from,
                "the blob is empty: ECR does not take empty layer uploads".into(),
            ));
        }
        if let Some(expected) = announced_length.filter(|expected| *expected != sent) {
            return Err(RegistryError {
                operation: "GetDownloadUrlForLayer(GET)",
                resource: from,
                message: format!("read {sent} bytes of the {expected} announced"),
                retryable: true,
            });
        }
        let computed = format!("sha256:{}", hex::encode(hasher.finalize()));
        if computed != blob.as_str() {
            return Err(RegistryError {
                operation: "GetDownloadUrlForLayer(GET)",
                resource: from,
                message: format!("the bytes read have digest {computed}"),
                retryable: true,
            });
        }

        let completed = client
            .complete_layer_upload()
            .registry_id(destination.registry_id.as_str())
            .repository_name(destination_repository.as_str())
            .upload_id(&upload_id)
            .layer_digests(blob.as_str())
            .send()
            .await;
        match completed {
            Ok(_) => Ok(sent),
            Err(e) if e.code() == Some("LayerAlreadyExistsException") => Ok(0),
            Err(e) => Err(registry_error("CompleteLayerUpload", to, e)),
        }
    }

    async fn put_manifest(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        manifest: &ManifestBytes,
        digest: &Digest,
        tag: Option<&str>,
    ) -> Result<PutOutcome, RegistryError> {
        const OP: &str = "PutImage";
        let resource = match tag {
            Some(tag) => format!("{registry} {repository}:{tag}@{digest}"),
            None => format!("{registry} {repository}@{digest}"),
        };
        let text = std::str::from_utf8(&manifest.bytes)
            .map_err(|e| invalid(OP, resource.clone(), format!("manifest is not UTF-8: {e}")))?;
        let client = self.clients.for_registry(registry).await?;
        let answer = client
            .put_image()
            .registry_id(registry.registry_id.as_str())
            .repository_name(repository.as_str())
            .image_manifest(text)
            .image_manifest_media_type(&manifest.media_type)
            .image_digest(digest.as_str())
            .set_image_tag(tag.map(str::to_owned))
            .send()
            .await;
        match answer {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) if e.code() == Some("ImageAlreadyExistsException") => {
                Ok(PutOutcome::AlreadyThere)
            }
            Err(e) if e.code() == Some("ImageTagAlreadyExistsException") => {
                Ok(PutOutcome::TagImmutable)
            }
            Err(e) => Err(registry_error(OP, resource, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_the_smaller_of_configured_and_announced_within_ecr_bounds() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(effective_part_size(10 * MIB, None), 10 * MIB as usize);
        assert_eq!(
            effective_part_size(10 * MIB, Some(20 * 1024 * 1024)),
            10 * MIB as usize
        );
        assert_eq!(
            effective_part_size(5 * MIB, Some(10 * 1024 * 1024)),
            5 * MIB as usize
        );
        assert_eq!(
            effective_part_size(8 * MIB, Some(6 * 1024 * 1024)),
            6 * MIB as usize
        );
        assert_eq!(effective_part_size(MIB, None), 5 * MIB as usize);
        assert_eq!(effective_part_size(64 * MIB, None), 10 * MIB as usize);
        assert_eq!(effective_part_size(10 * MIB, Some(0)), 10 * MIB as usize);
        assert_eq!(effective_part_size(10 * MIB, Some(-1)), 10 * MIB as usize);
    }
}
