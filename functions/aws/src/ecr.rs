//! The registry port on Amazon ECR.
//!
//! Reads in the account the functions run in use their own credentials; reads in any other
//! account (a cross-account destination, or a source registry elsewhere) go through that
//! account's read-only role, assumed with an external id, exactly as the destination-account
//! stack in `infra/` creates it. Clients are built once per (account, Region) and kept for
//! the life of the Lambda container; assumed credentials refresh themselves. [`EcrClients`]
//! does that for every ECR adapter (the backfill's inventory, copy and native backfill too).

use std::collections::HashMap;
use std::sync::Mutex;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_sdk_ecr::Client;
use aws_sdk_ecr::config::http::HttpResponse;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecr::types::{ImageIdentifier, ReplicationStatus};
use replwatch_core::model::{AccountId, Destination, Digest, Region, RepositoryName, SourceImage};
use replwatch_core::registry::{
    DestinationReplication, ImageReplicationStatus, Registry, RegistryError,
};
use replwatch_core::rules::{ReplicationConfiguration, ReplicationRule, RepositoryFilter};

/// How to reach registries in other accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossAccountAccess {
    /// The role name that exists in every other account (`replwatch-reader` for reads; the
    /// backfill's copy needs a role that may write).
    pub role_name: String,
    /// The external id that role requires, if any.
    pub external_id: Option<String>,
}

/// ECR clients per (account, Region), shared by every ECR adapter.
///
/// The account the credentials of `base` belong to (`home_account`) is reached with them;
/// any other account through the role `cross_account` names, assumed with its external id
/// (no role configured: a clear, non-retryable `AssumeRole` error). A client is built once
/// per (account, Region) and kept; assumed credentials refresh themselves.
pub struct EcrClients {
    base: SdkConfig,
    home_account: AccountId,
    cross_account: Option<CrossAccountAccess>,
    retry: Option<RetryConfig>,
    clients: Mutex<HashMap<(AccountId, Region), Client>>,
}

impl EcrClients {
    /// Clients with the retry behaviour of `base`.
    pub fn new(
        base: SdkConfig,
        home_account: AccountId,
        cross_account: Option<CrossAccountAccess>,
    ) -> Self {
        Self {
            base,
            home_account,
            cross_account,
            retry: None,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The ECR clients use `retry` instead of the retry configuration of `base` (the STS
    /// client that assumes roles keeps that of `base`).
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }

    pub fn home_account(&self) -> &AccountId {
        &self.home_account
    }

    /// The ARN of the role `role_name` in `account`, in the partition of `region`.
    pub fn role_arn(role_name: &str, account: &AccountId, region: &Region) -> String {
        let partition = match region.as_str() {
            r if r.starts_with("cn-") => "aws-cn",
            r if r.starts_with("us-gov-") => "aws-us-gov",
            _ => "aws",
        };
        format!("arn:{partition}:iam::{account}:role/{role_name}")
    }

    /// The client for `registry` (its account, in its Region).
    pub async fn for_registry(&self, registry: &Destination) -> Result<Client, RegistryError> {
        self.client(&registry.registry_id, &registry.region).await
    }

    /// The client for `account` in `region`.
    pub async fn client(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<Client, RegistryError> {
        let cache_key = (account.clone(), region.clone());
        if let Some(client) = self.lock().get(&cache_key) {
            return Ok(client.clone());
        }
        let mut config = aws_sdk_ecr::config::Builder::from(&self.base)
            .region(aws_config::Region::new(region.to_string()));
        if let Some(retry) = &self.retry {
            config = config.retry_config(retry.clone());
        }
        if account != &self.home_account {
            let access = self.cross_account.as_ref().ok_or_else(|| RegistryError {
                operation: "AssumeRole",
                resource: format!("{region}/{account}"),
                message: "registry is in another account and no cross-account role is configured"
                    .into(),
                retryable: false,
            })?;
            let mut provider =
                AssumeRoleProvider::builder(Self::role_arn(&access.role_name, account, region))
                    .configure(&self.base)
                    .session_name("replwatch");
            if let Some(external_id) = &access.external_id {
                provider = provider.external_id(external_id);
            }
            config = config.credentials_provider(provider.build().await);
        }
        let client = Client::from_conf(config.build());
        self.lock().insert(cache_key, client.clone());
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(AccountId, Region), Client>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// [`Registry`] on ECR.
pub struct EcrRegistry {
    clients: EcrClients,
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
            clients: EcrClients::new(base, home_account, cross_account),
        }
    }

    /// The ARN of the reader role in `account`, in the partition of `region`.
    pub fn reader_role_arn(role_name: &str, account: &AccountId, region: &Region) -> String {
        EcrClients::role_arn(role_name, account, region)
    }

    async fn client(&self, account: &AccountId, region: &Region) -> Result<Client, RegistryError> {
        self.clients.client(account, region).await
    }
}

/// Whether ECR said the image or its repository does not exist.
pub(crate) fn is_not_found<E: ProvideErrorMetadata>(
    error: &SdkError<E, impl std::fmt::Debug>,
) -> bool {
    matches!(
        error.code(),
        Some("ImageNotFoundException" | "RepositoryNotFoundException")
    )
}

pub(crate) fn registry_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    operation: &'static str,
    resource: String,
    error: SdkError<E, HttpResponse>,
) -> RegistryError {
    let retryable = crate::service_error::is_transient(&error);
    let message = crate::service_error::describe(&error);
    RegistryError {
        operation,
        resource,
        message,
        retryable,
    }
}

pub(crate) fn invalid(operation: &'static str, resource: String, message: String) -> RegistryError {
    RegistryError {
        operation,
        resource,
        message,
        retryable: false,
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

    async fn tags_in_destination(
        &self,
        destination: &Destination,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<Option<Vec<String>>, RegistryError> {
        let resource = format!("{destination} {repository}@{digest}");
        let client = self
            .client(&destination.registry_id, &destination.region)
            .await?;
        let output = client
            .describe_images()
            .registry_id(destination.registry_id.as_str())
            .repository_name(repository.as_str())
            .image_ids(
                ImageIdentifier::builder()
                    .image_digest(digest.as_str())
                    .build(),
            )
            .send()
            .await;
        match output {
            Ok(output) => Ok(output
                .image_details()
                .first()
                .map(|d| d.image_tags().to_vec())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(registry_error("DescribeImages", resource, e)),
        }
    }

    async fn replication_configuration(
        &self,
        registry: &Destination,
    ) -> Result<ReplicationConfiguration, RegistryError> {
        const OP: &str = "DescribeRegistry";
        let resource = registry.to_string();
        let client = self.client(&registry.registry_id, &registry.region).await?;
        let output = client
            .describe_registry()
            .send()
            .await
            .map_err(|e| registry_error(OP, resource.clone(), e))?;
        let Some(configuration) = output.replication_configuration() else {
            return Ok(ReplicationConfiguration::default());
        };
        let mut rules = Vec::new();
        for rule in configuration.rules() {
            let mut destinations = Vec::new();
            for d in rule.destinations() {
                destinations.push(Destination::new(
                    Region::parse(d.region())
                        .map_err(|e| invalid(OP, resource.clone(), e.to_string()))?,
                    AccountId::parse(d.registry_id())
                        .map_err(|e| invalid(OP, resource.clone(), e.to_string()))?,
                ));
            }
            let repository_filters = rule
                .repository_filters()
                .iter()
                .map(|f| RepositoryFilter {
                    filter: f.filter().to_owned(),
                    filter_type: f.filter_type().as_str().to_owned(),
                })
                .collect();
            rules.push(ReplicationRule {
                destinations,
                repository_filters,
            });
        }
        Ok(ReplicationConfiguration { rules })
    }
}
