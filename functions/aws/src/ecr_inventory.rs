//! The backfill's inventory port on Amazon ECR: what a registry holds.
//!
//! Calls, per registry: `DescribeRepositories` (pages of [`InventoryOptions::page_size`], the
//! prefix filter applied here, since the API has none), then per selected repository
//! `DescribeImages` (pages of up to 1,000 images of every status, `imageStatus` ANY: an
//! archived image cannot be copied, and the plan says so), `GetLifecyclePolicy` and
//! `GetRepositoryPolicy` (not found: none), and in a repository that holds referrers (OCI
//! `subjectManifestDigest`, legacy cosign tags) `BatchGetImage` of its indexes (a hundred a
//! call), whose children a referrer may name as its subject. The repository
//! settings a creation must reproduce (tag mutability with its exclusion filters, scan on
//! push, encryption) come with `DescribeRepositories` itself. A registry of R repositories and
//! N images costs about `R/1000 + R × (2 + N/R/1000)` calls; the per-repository reads run
//! [`InventoryOptions::concurrency`] repositories at a time, on clients with adaptive retry so
//! throttling slows the reads down instead of failing them.
//!
//! The listing itself (`DescribeRepositories`, `DescribeImages`) is [`crate::ecr_listing`]'s,
//! shared with the lost-push check.
//!
//! Creation templates: `DescribeRepositoryCreationTemplates` (all pages). A registry that may
//! not read them (`AccessDenied`) or a partition without the API answers "no templates", with
//! a warning: the backfill then creates repositories with the source's settings.

use std::collections::VecDeque;
use std::sync::Arc;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_sdk_ecr::Client;
use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::types::{EncryptionConfiguration, Repository, RepositoryCreationTemplate};
use replwatch_core::backfill::inventory::{
    CreationTemplate, Encryption, ImageRecord, RepositoryInventory, RepositorySettings, ResourceTag,
};
use replwatch_core::backfill::manifest::{ManifestReferences, is_index_media_type};
use replwatch_core::backfill::port::InventoryReader;
use replwatch_core::backfill::referrers::subject_of;
use replwatch_core::model::{AccountId, Destination, Digest, RepositoryName};
use replwatch_core::registry::RegistryError;
use replwatch_core::rules::ReplicationConfiguration;
use tokio::task::JoinSet;

use crate::ecr_clients::{CrossAccountAccess, EcrClients, invalid, registry_error};
use crate::ecr_listing::{list_repositories, read_images, repository_name};
use crate::ecr_manifests::read_manifests;
use crate::ecr_shapes::tag_mutability;

/// `maxResults` of a `DescribeImages` page: the API's maximum.
pub use crate::ecr_listing::PAGE_SIZE as IMAGES_PAGE_SIZE;
/// The encryption ECR gives a repository created without one.
pub const DEFAULT_ENCRYPTION: &str = "AES256";

/// How an [`EcrInventoryReader`] reads.
#[derive(Debug, Clone)]
pub struct InventoryOptions {
    /// Repositories read at once (their images and policies). Default 8.
    pub concurrency: usize,
    /// `maxResults` of `DescribeRepositories`, `DescribeImages` and
    /// `DescribeRepositoryCreationTemplates` pages (1 to 1,000). Default 1,000; smaller only
    /// in tests of the pagination.
    pub page_size: i32,
    /// The ECR clients' retry configuration. Default: adaptive, 8 attempts.
    pub retry: RetryConfig,
}

impl Default for InventoryOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            page_size: IMAGES_PAGE_SIZE,
            retry: RetryConfig::adaptive().with_max_attempts(8),
        }
    }
}

/// [`InventoryReader`] on ECR.
pub struct EcrInventoryReader {
    clients: EcrClients,
    options: InventoryOptions,
}

impl EcrInventoryReader {
    /// A reader with the default [`InventoryOptions`]. `base` carries the caller's own
    /// credentials, which belong to `home_account`; registries of other accounts are read
    /// through `cross_account`'s role.
    pub fn new(
        base: SdkConfig,
        home_account: AccountId,
        cross_account: Option<CrossAccountAccess>,
    ) -> Self {
        Self::with_options(
            base,
            home_account,
            cross_account,
            InventoryOptions::default(),
        )
    }

    pub fn with_options(
        base: SdkConfig,
        home_account: AccountId,
        cross_account: Option<CrossAccountAccess>,
        options: InventoryOptions,
    ) -> Self {
        let clients =
            EcrClients::new(base, home_account, cross_account).with_retry(options.retry.clone());
        Self { clients, options }
    }

    pub fn options(&self) -> &InventoryOptions {
        &self.options
    }

    fn page_size(&self) -> i32 {
        self.options.page_size.clamp(1, IMAGES_PAGE_SIZE)
    }
}

impl InventoryReader for EcrInventoryReader {
    async fn replication_configuration(
        &self,
        registry: &Destination,
    ) -> Result<ReplicationConfiguration, RegistryError> {
        let client = self.clients.for_registry(registry).await?;
        crate::ecr_rules::replication_configuration(&client, registry).await
    }

    async fn repositories(
        &self,
        registry: &Destination,
        prefixes: &[String],
    ) -> Result<Vec<RepositoryInventory>, RegistryError> {
        let client = self.clients.for_registry(registry).await?;
        let mut pending = VecDeque::new();
        for repository in list_repositories(&client, registry, prefixes, self.page_size()).await? {
            let name = repository_name(registry, &repository)?;
            let settings = repository_settings(&repository)
                .map_err(|m| invalid("DescribeRepositories", format!("{registry} {name}"), m))?;
            pending.push_back((name, settings));
        }
        let registry = Arc::new(registry.clone());
        let page_size = self.page_size();
        let mut running = JoinSet::new();
        let mut read = Vec::with_capacity(pending.len());
        loop {
            while running.len() < self.options.concurrency.max(1) {
                let Some((name, settings)) = pending.pop_front() else {
                    break;
                };
                running.spawn(read_repository(
                    client.clone(),
                    Arc::clone(&registry),
                    name,
                    settings,
                    page_size,
                ));
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            // An error ends the inventory; dropping `running` cancels the other reads.
            let outcome = joined.map_err(|e| RegistryError {
                operation: "DescribeImages",
                resource: registry.to_string(),
                message: format!("repository read task failed: {e}"),
                retryable: false,
            })?;
            if let Some(repository) = outcome? {
                read.push(repository);
            }
        }
        read.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(read)
    }

    async fn creation_templates(
        &self,
        registry: &Destination,
    ) -> Result<Vec<CreationTemplate>, RegistryError> {
        let client = self.clients.for_registry(registry).await?;
        match creation_templates(&client, registry, self.page_size()).await {
            Ok(templates) => Ok(templates),
            Err(CreationTemplatesError::Unreadable(error)) => {
                tracing::warn!(
                    registry = %registry,
                    error = %error.message,
                    "repository creation templates not readable: assuming none"
                );
                Ok(Vec::new())
            }
            Err(CreationTemplatesError::Failed(error)) => Err(error),
        }
    }
}

/// Why the creation templates of a registry could not be read.
#[derive(Debug)]
pub enum CreationTemplatesError {
    /// The caller may not read them, or the API does not exist where it was called: a
    /// backfill goes on as if there were none, `doctor` says so.
    Unreadable(RegistryError),
    /// Any other failure.
    Failed(RegistryError),
}

/// Every repository creation template of `registry` (`DescribeRepositoryCreationTemplates`,
/// all pages), as the backfill applies them and `doctor` checks them.
pub async fn creation_templates(
    client: &Client,
    registry: &Destination,
    page_size: i32,
) -> Result<Vec<CreationTemplate>, CreationTemplatesError> {
    const OP: &str = "DescribeRepositoryCreationTemplates";
    let resource = registry.to_string();
    let mut templates = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let page = client
            .describe_repository_creation_templates()
            .max_results(page_size)
            .set_next_token(next_token.take())
            .send()
            .await;
        let page = match page {
            Ok(page) => page,
            Err(e) if templates_unavailable(e.code(), status_of(&e)) => {
                return Err(CreationTemplatesError::Unreadable(registry_error(
                    OP, resource, e,
                )));
            }
            Err(e) => {
                return Err(CreationTemplatesError::Failed(registry_error(
                    OP, resource, e,
                )));
            }
        };
        for template in page.repository_creation_templates() {
            templates.push(
                creation_template(template).map_err(|m| {
                    CreationTemplatesError::Failed(invalid(OP, resource.clone(), m))
                })?,
            );
        }
        match page.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
            _ => return Ok(templates),
        }
    }
}

/// One repository's images and policies; `None` when it was deleted since it was listed.
async fn read_repository(
    client: Client,
    registry: Arc<Destination>,
    name: RepositoryName,
    mut settings: RepositorySettings,
    page_size: i32,
) -> Result<Option<RepositoryInventory>, RegistryError> {
    let resource = format!("{registry} {name}");
    let images = read_images(&client, &registry, &name, page_size);
    let lifecycle = async {
        let answer = client
            .get_lifecycle_policy()
            .registry_id(registry.registry_id.as_str())
            .repository_name(name.as_str())
            .send()
            .await;
        match answer {
            Ok(output) => Ok(Some(output.lifecycle_policy_text().map(str::to_owned))),
            Err(e) if e.code() == Some("LifecyclePolicyNotFoundException") => Ok(Some(None)),
            Err(e) if e.code() == Some("RepositoryNotFoundException") => Ok(None),
            Err(e) => Err(registry_error("GetLifecyclePolicy", resource.clone(), e)),
        }
    };
    let policy = async {
        let answer = client
            .get_repository_policy()
            .registry_id(registry.registry_id.as_str())
            .repository_name(name.as_str())
            .send()
            .await;
        match answer {
            Ok(output) => Ok(Some(output.policy_text().map(str::to_owned))),
            Err(e) if e.code() == Some("RepositoryPolicyNotFoundException") => Ok(Some(None)),
            Err(e) if e.code() == Some("RepositoryNotFoundException") => Ok(None),
            Err(e) => Err(registry_error("GetRepositoryPolicy", resource.clone(), e)),
        }
    };
    let (images, lifecycle, policy) = tokio::try_join!(images, lifecycle, policy)?;
    let (Some(mut images), Some(lifecycle), Some(policy)) = (images, lifecycle, policy) else {
        tracing::debug!(repository = %resource, "repository deleted during the inventory");
        return Ok(None);
    };
    read_children(&client, &registry, &name, &mut images).await?;
    settings.lifecycle_policy = lifecycle;
    settings.repository_policy = policy;
    Ok(Some(RepositoryInventory {
        name,
        settings,
        images,
    }))
}

/// The children of the indexes of a repository that holds referrers, where a referrer may
/// name a child (one platform's image) as its subject: the active indexes' manifests, a
/// hundred a `BatchGetImage`, and no call at all in a repository without referrers.
async fn read_children(
    client: &Client,
    registry: &Destination,
    name: &RepositoryName,
    images: &mut [ImageRecord],
) -> Result<(), RegistryError> {
    if !images.iter().any(|i| subject_of(i).is_some()) {
        return Ok(());
    }
    let mut indexes: Vec<&mut ImageRecord> = images
        .iter_mut()
        .filter(|i| !i.archived && i.media_type.as_deref().is_some_and(is_index_media_type))
        .collect();
    let digests: Vec<Digest> = indexes.iter().map(|i| i.digest.clone()).collect();
    let manifests = read_manifests(client, registry, name, &digests).await?;
    for (index, manifest) in indexes.iter_mut().zip(manifests) {
        index.children = ManifestReferences::parse(&manifest)
            .map(|r| r.children)
            .map_err(|e| {
                invalid(
                    "BatchGetImage",
                    format!("{registry} {name}@{}", index.digest),
                    e.to_string(),
                )
            })?;
    }
    Ok(())
}

/// Whether `DescribeRepositoryCreationTemplates` failed because the caller may not read
/// templates or the API does not exist where it was called, rather than for a reason that
/// would go away.
fn templates_unavailable(code: Option<&str>, status: Option<u16>) -> bool {
    matches!(
        code,
        Some(
            "AccessDenied"
                | "AccessDeniedException"
                | "UnknownOperationException"
                | "InvalidAction"
                | "UnsupportedOperation"
                | "UnsupportedOperationException"
        )
    ) || matches!(status, Some(403 | 404 | 501))
}

fn status_of<E>(
    error: &aws_sdk_ecr::error::SdkError<E, aws_sdk_ecr::config::http::HttpResponse>,
) -> Option<u16> {
    error.raw_response().map(|r| r.status().as_u16())
}

/// What `DescribeRepositories` says of one repository's settings (policies not included).
fn repository_settings(repository: &Repository) -> Result<RepositorySettings, String> {
    Ok(RepositorySettings {
        tag_mutability: tag_mutability(
            repository.image_tag_mutability(),
            repository.image_tag_mutability_exclusion_filters(),
        )?,
        scan_on_push: repository
            .image_scanning_configuration()
            .is_some_and(|c| c.scan_on_push()),
        encryption: encryption(repository.encryption_configuration()),
        lifecycle_policy: None,
        repository_policy: None,
        resource_tags: Vec::new(),
    })
}

fn creation_template(template: &RepositoryCreationTemplate) -> Result<CreationTemplate, String> {
    let encryption = match template.encryption_configuration() {
        Some(e) => Encryption {
            encryption_type: e.encryption_type().as_str().to_owned(),
            kms_key: e.kms_key().map(str::to_owned),
        },
        None => default_encryption(),
    };
    Ok(CreationTemplate {
        prefix: template.prefix().unwrap_or("ROOT").to_owned(),
        applied_for: template
            .applied_for()
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect(),
        settings: RepositorySettings {
            tag_mutability: tag_mutability(
                template.image_tag_mutability(),
                template.image_tag_mutability_exclusion_filters(),
            )?,
            // Templates carry no scanning configuration: the registry's scanning applies.
            scan_on_push: false,
            encryption,
            lifecycle_policy: template.lifecycle_policy().map(str::to_owned),
            repository_policy: template.repository_policy().map(str::to_owned),
            resource_tags: template
                .resource_tags()
                .iter()
                .map(|t| ResourceTag {
                    key: t.key().to_owned(),
                    value: t.value().to_owned(),
                })
                .collect(),
        },
    })
}

fn default_encryption() -> Encryption {
    Encryption {
        encryption_type: DEFAULT_ENCRYPTION.to_owned(),
        kms_key: None,
    }
}

fn encryption(configuration: Option<&EncryptionConfiguration>) -> Encryption {
    match configuration {
        Some(e) => Encryption {
            encryption_type: e.encryption_type().as_str().to_owned(),
            kms_key: e.kms_key().map(str::to_owned),
        },
        None => default_encryption(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_unavailable_when_denied_or_unknown_not_when_failing() {
        assert!(templates_unavailable(
            Some("AccessDeniedException"),
            Some(400)
        ));
        assert!(templates_unavailable(
            Some("UnknownOperationException"),
            Some(400)
        ));
        assert!(templates_unavailable(None, Some(404)));
        assert!(!templates_unavailable(Some("ServerException"), Some(500)));
        assert!(!templates_unavailable(
            Some("ThrottlingException"),
            Some(400)
        ));
        assert!(!templates_unavailable(None, None));
    }
}
