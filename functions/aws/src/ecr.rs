//! The registry port on Amazon ECR.
//!
//! Reads in the account the functions run in use their own credentials; reads in any other
//! account (a cross-account destination, or a source registry elsewhere) go through that
//! account's read-only role, assumed with an external id, exactly as the destination-account
//! stack in `infra/` creates it. Clients are built once per (account, Region) and kept for
//! the life of the Lambda container; assumed credentials refresh themselves. [`EcrClients`]
//! does that for every ECR adapter (the backfill's inventory, copy and native backfill too).

use aws_config::SdkConfig;
use aws_sdk_ecr::Client;
use aws_sdk_ecr::types::{ImageIdentifier, ReplicationStatus};
use replwatch_core::backfill::inventory::TagMutability;
use replwatch_core::model::{AccountId, Destination, Digest, Region, RepositoryName, SourceImage};
use replwatch_core::registry::{
    DestinationReplication, ImageReplicationStatus, Registry, RegistryError,
};
use replwatch_core::rules::ReplicationConfiguration;

pub use crate::ecr_clients::{CrossAccountAccess, EcrClients};
use crate::ecr_clients::{invalid, is_not_found, registry_error};
use crate::ecr_images::{EcrImages, ImageReference};
use crate::ecr_shapes::tag_mutability;

/// [`Registry`] on ECR.
pub struct EcrRegistry {
    images: EcrImages,
}

impl EcrRegistry {
    /// `base` carries the function's own credentials; `home_account` is the account they
    /// belong to.
    pub fn new(
        base: SdkConfig,
        home_account: AccountId,
        cross_account: Option<CrossAccountAccess>,
    ) -> Self {
        Self {
            images: EcrImages::new(base, home_account, cross_account),
        }
    }

    /// A registry for the tracking functions: at most `calls_per_second` ECR calls a second
    /// per Region when set, and the SDK's adaptive retry mode, which slows its own sending
    /// down when ECR throttles.
    pub fn for_tracking(
        base: SdkConfig,
        home_account: AccountId,
        cross_account: Option<CrossAccountAccess>,
        calls_per_second: Option<f64>,
    ) -> Self {
        let mut clients = EcrClients::new(base, home_account, cross_account)
            .with_retry(aws_config::retry::RetryConfig::adaptive());
        if let Some(cap) = calls_per_second {
            clients = clients.with_call_cap(cap);
        }
        Self {
            images: EcrImages::with_clients(clients),
        }
    }

    /// The ARN of the reader role in `account`, in the partition of `region`.
    pub fn reader_role_arn(role_name: &str, account: &AccountId, region: &Region) -> String {
        EcrClients::role_arn(role_name, account, region)
    }

    async fn client(&self, account: &AccountId, region: &Region) -> Result<Client, RegistryError> {
        self.images.clients().client(account, region).await
    }
}

impl Registry for EcrRegistry {
    async fn replication_status(
        &self,
        image: &SourceImage,
    ) -> Result<ImageReplicationStatus, RegistryError> {
        const OP: &str = "DescribeImageReplicationStatus";
        let resource = format!("{} {}@{}", image.registry, image.repository, image.digest);
        let client = self
            .client(&image.registry.registry_id, &image.registry.region)
            .await?;
        let output = client
            .describe_image_replication_status()
            .registry_id(image.registry.registry_id.as_str())
            .repository_name(image.repository.as_str())
            .image_id(
                ImageIdentifier::builder()
                    .image_digest(image.digest.as_str())
                    .build(),
            )
            .send()
            .await;
        let output = match output {
            Ok(output) => output,
            Err(e) if is_not_found(&e) => return Ok(ImageReplicationStatus::SourceImageNotFound),
            Err(e) => return Err(registry_error(OP, resource, e)),
        };
        let mut statuses = Vec::new();
        for s in output.replication_statuses() {
            let destination = Destination::new(
                Region::parse(s.region().unwrap_or_default())
                    .map_err(|e| invalid(OP, resource.clone(), e.to_string()))?,
                AccountId::parse(s.registry_id().unwrap_or_default())
                    .map_err(|e| invalid(OP, resource.clone(), e.to_string()))?,
            );
            let status = match s.status() {
                Some(ReplicationStatus::Complete) => DestinationReplication::Complete,
                Some(ReplicationStatus::Failed) => DestinationReplication::Failed {
                    failure_code: s.failure_code().map(str::to_owned),
                },
                // IN_PROGRESS, and any status this SDK version does not know yet: not done.
                _ => DestinationReplication::InProgress,
            };
            statuses.push((destination, status));
        }
        Ok(ImageReplicationStatus::Found(statuses))
    }

    async fn image_tags(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Vec<String>>, RegistryError> {
        let reference = ImageReference::Digest(digest.clone());
        Ok(self
            .images
            .describe(registry, repository, &reference)
            .await?
            .map(|image| image.tags))
    }

    async fn tagged_image(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        tag: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        let reference = ImageReference::Tag(tag.to_owned());
        Ok(self
            .images
            .describe(registry, repository, &reference)
            .await?
            .map(|image| image.digest))
    }

    async fn tag_mutability(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
    ) -> Result<Option<TagMutability>, RegistryError> {
        let resource = format!("{registry} {repository}");
        let client = self.client(&registry.registry_id, &registry.region).await?;
        let output = client
            .describe_repositories()
            .registry_id(registry.registry_id.as_str())
            .repository_names(repository.as_str())
            .send()
            .await;
        let output = match output {
            Ok(output) => output,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(registry_error("DescribeRepositories", resource, e)),
        };
        Ok(output.repositories().first().map(|r| {
            tag_mutability(
                r.image_tag_mutability(),
                r.image_tag_mutability_exclusion_filters(),
            )
            .unwrap_or_else(|unknown| {
                // A mode newer than this build: not known to be immutable, so a missing tag
                // there is never called lost (a false alert is worse than a late fix).
                tracing::warn!(repository = %resource, %unknown, "tag mutability read as mutable");
                TagMutability::Mutable
            })
        }))
    }

    async fn replication_configuration(
        &self,
        registry: &Destination,
    ) -> Result<ReplicationConfiguration, RegistryError> {
        let client = self.client(&registry.registry_id, &registry.region).await?;
        crate::ecr_rules::replication_configuration(&client, registry).await
    }
}
