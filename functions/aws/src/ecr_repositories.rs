//! The destination repositories a backfill creates before copying into them, with the
//! source repository's settings (or what the destination's creation template gives):
//! `CreateRepository`, then `PutLifecyclePolicy` and `SetRepositoryPolicy` when the settings
//! carry them. Apart from the copy so that only the planner may create repositories and only
//! the copier may write images.
//!
//! Every repository it creates carries the tag [`CREATED_BY_TAG_KEY`] = [`CREATED_BY_TAG_VALUE`],
//! set by `CreateRepository` itself: the roles may create a repository only with that tag
//! (`aws:RequestTag`) and write policies only on repositories carrying it
//! (`ecr:ResourceTag`), so the backfill can never rewrite the policy of a repository someone
//! else made. ECR authorizes a tag given at creation on `ecr:CreateRepository` ("Using
//! Tag-Based Access Control", Amazon ECR User Guide), so the roles hold no `ecr:TagResource`.

use aws_config::SdkConfig;
use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, Tag,
};
use replwatch_core::backfill::inventory::RepositorySettings;
use replwatch_core::backfill::port::RepositoryCreator;
use replwatch_core::model::{AccountId, Destination, RepositoryName};
use replwatch_core::registry::RegistryError;

use crate::ecr_clients::{CrossAccountAccess, EcrClients, invalid, registry_error};
use crate::ecr_shapes::sdk_tag_mutability;

/// The tag key of the repositories a backfill created; the stacks' policies name it.
pub const CREATED_BY_TAG_KEY: &str = "replwatch:created-by";
/// Its value.
pub const CREATED_BY_TAG_VALUE: &str = "backfill";

/// [`RepositoryCreator`] on ECR.
pub struct EcrRepositoryCreator {
    clients: EcrClients,
}

impl EcrRepositoryCreator {
    /// `base` carries the caller's own credentials, which belong to `home_account`; other
    /// accounts are reached through `cross_account`'s role, which must allow the creation.
    pub fn new(
        base: SdkConfig,
        home_account: AccountId,
        cross_account: Option<CrossAccountAccess>,
    ) -> Self {
        Self {
            clients: EcrClients::new(base, home_account, cross_account),
        }
    }
}

impl RepositoryCreator for EcrRepositoryCreator {
    async fn create_repository(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        settings: &RepositorySettings,
    ) -> Result<bool, RegistryError> {
        const OP: &str = "CreateRepository";
        let resource = format!("{registry} {repository}");
        let (mutability, exclusions) = sdk_tag_mutability(&settings.tag_mutability)
            .map_err(|m| invalid(OP, resource.clone(), m))?;
        let encryption = EncryptionConfiguration::builder()
            .encryption_type(EncryptionType::from(
                settings.encryption.encryption_type.as_str(),
            ))
            .set_kms_key(settings.encryption.kms_key.clone())
            .build()
            .map_err(|e| invalid(OP, resource.clone(), e.to_string()))?;
        // The template's tags (as replication applies them), then the backfill's own mark.
        let tags = settings
            .resource_tags
            .iter()
            .filter(|t| t.key != CREATED_BY_TAG_KEY)
            .map(|t| (t.key.as_str(), t.value.as_str()))
            .chain([(CREATED_BY_TAG_KEY, CREATED_BY_TAG_VALUE)])
            .map(|(key, value)| Tag::builder().key(key).value(value).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(OP, resource.clone(), e.to_string()))?;
        let client = self.clients.for_registry(registry).await?;
        let created = client
            .create_repository()
            .registry_id(registry.registry_id.as_str())
            .repository_name(repository.as_str())
            .image_tag_mutability(mutability)
            .set_image_tag_mutability_exclusion_filters(
                (!exclusions.is_empty()).then_some(exclusions),
            )
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(settings.scan_on_push)
                    .build(),
            )
            .encryption_configuration(encryption)
            .set_tags(Some(tags))
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.code() == Some("RepositoryAlreadyExistsException") => return Ok(false),
            Err(e) => return Err(registry_error(OP, resource, e)),
        }
        if let Some(policy) = &settings.lifecycle_policy {
            client
                .put_lifecycle_policy()
                .registry_id(registry.registry_id.as_str())
                .repository_name(repository.as_str())
                .lifecycle_policy_text(policy)
                .send()
                .await
                .map_err(|e| registry_error("PutLifecyclePolicy", resource.clone(), e))?;
        }
        if let Some(policy) = &settings.repository_policy {
            client
                .set_repository_policy()
                .registry_id(registry.registry_id.as_str())
                .repository_name(repository.as_str())
                .policy_text(policy)
                .send()
                .await
                .map_err(|e| registry_error("SetRepositoryPolicy", resource.clone(), e))?;
        }
        Ok(true)
    }
}
