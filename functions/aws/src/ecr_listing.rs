//! What a registry holds, listed page by page: `DescribeRepositories` (the prefix filter
//! applied here, since the API has none) and `DescribeImages` of one repository (every status,
//! `imageStatus` ANY). The backfill's inventory (the `ecr_inventory` module) reads through these,
//! and so does the lost-push check ([`EcrSourceImages`]), which needs nothing else: a function
//! that constructs it may call only these two operations.

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_sdk_ecr::Client;
use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::types::{DescribeImagesFilter, ImageStatusFilter, Repository};
use replwatch_core::backfill::inventory::ImageRecord;
use replwatch_core::lost_pushes::SourceImages;
use replwatch_core::model::{AccountId, Destination, RepositoryName};
use replwatch_core::registry::RegistryError;

use crate::ecr_clients::{EcrClients, invalid, registry_error};
use crate::ecr_shapes::image_record;

/// `maxResults` of a `DescribeRepositories` or `DescribeImages` page: the API's maximum.
pub const PAGE_SIZE: i32 = 1000;

/// `DescribeRepositories`, all pages of `page_size`, keeping the repositories whose name
/// starts with one of `prefixes` (all when empty).
pub async fn list_repositories(
    client: &Client,
    registry: &Destination,
    prefixes: &[String],
    page_size: i32,
) -> Result<Vec<Repository>, RegistryError> {
    const OP: &str = "DescribeRepositories";
    let resource = registry.to_string();
    let mut selected = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let page = client
            .describe_repositories()
            .registry_id(registry.registry_id.as_str())
            .max_results(page_size)
            .set_next_token(next_token.take())
            .send()
            .await
            .map_err(|e| registry_error(OP, resource.clone(), e))?;
        for repository in page.repositories() {
            let Some(name) = repository.repository_name() else {
                continue;
            };
            if prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                selected.push(repository.clone());
            }
        }
        match page.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
            _ => return Ok(selected),
        }
    }
}

/// The name of a listed repository.
pub fn repository_name(
    registry: &Destination,
    repository: &Repository,
) -> Result<RepositoryName, RegistryError> {
    RepositoryName::parse(repository.repository_name().unwrap_or_default())
        .map_err(|e| invalid("DescribeRepositories", registry.to_string(), e.to_string()))
}

/// `DescribeImages` of `name`, all pages of `page_size`; `None` when the repository is gone.
pub async fn read_images(
    client: &Client,
    registry: &Destination,
    name: &RepositoryName,
    page_size: i32,
) -> Result<Option<Vec<ImageRecord>>, RegistryError> {
    const OP: &str = "DescribeImages";
    let resource = format!("{registry} {name}");
    let mut images = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let page = client
            .describe_images()
            .registry_id(registry.registry_id.as_str())
            .repository_name(name.as_str())
            // Archived images too: a backfill cannot copy them, and its plan says how to
            // restore them.
            .filter(
                DescribeImagesFilter::builder()
                    .image_status(ImageStatusFilter::Any)
                    .build(),
            )
            .max_results(page_size)
            .set_next_token(next_token.take())
            .send()
            .await;
        let page = match page {
            Ok(page) => page,
            Err(e) if e.code() == Some("RepositoryNotFoundException") => return Ok(None),
            Err(e) => return Err(registry_error(OP, resource, e)),
        };
        for detail in page.image_details() {
            images.push(image_record(detail).map_err(|m| invalid(OP, resource.clone(), m))?);
        }
        match page.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
            _ => return Ok(Some(images)),
        }
    }
}

/// [`SourceImages`] on ECR: this account's registries, read with the caller's own
/// credentials, on clients with adaptive retry (8 attempts), so throttling slows the listing
/// down instead of failing it.
pub struct EcrSourceImages {
    clients: EcrClients,
}

impl EcrSourceImages {
    pub fn new(base: SdkConfig, home_account: AccountId) -> Self {
        Self {
            clients: EcrClients::new(base, home_account, None)
                .with_retry(RetryConfig::adaptive().with_max_attempts(8)),
        }
    }
}

impl SourceImages for EcrSourceImages {
    async fn repository_names(
        &self,
        registry: &Destination,
        prefixes: &[String],
    ) -> Result<Vec<RepositoryName>, RegistryError> {
        let client = self.clients.for_registry(registry).await?;
        list_repositories(&client, registry, prefixes, PAGE_SIZE)
            .await?
            .iter()
            .map(|r| repository_name(registry, r))
            .collect()
    }

    async fn images(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
    ) -> Result<Option<Vec<ImageRecord>>, RegistryError> {
        let client = self.clients.for_registry(registry).await?;
        read_images(&client, registry, repository, PAGE_SIZE).await
    }
}
