//! ECR clients per (account, Region) for every ECR adapter, and how their errors become
//! [`RegistryError`]s.
//!
//! Reads and writes in the account the credentials belong to use them; any other account (a
//! cross-account destination, or a source registry elsewhere) is reached through a role in
//! that account, assumed with an external id, as the destination-account stack in `infra/`
//! creates it. This module calls no ECR operation itself, so an adapter that uses it is granted
//! only what that adapter calls (`tests/iam_least_privilege.rs` follows modules).

use std::collections::HashMap;
use std::sync::Mutex;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_sdk_ecr::Client;
use aws_sdk_ecr::config::http::HttpResponse;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use replwatch_core::model::{AccountId, Destination, Region};
use replwatch_core::registry::RegistryError;

/// The credentials to act in `account`: `None` in `home_account` (those of `base`), else the
/// role `cross_account` names in `account`, assumed with its external id. No role configured
/// for another account: a clear, non-retryable error.
pub async fn assumed_role(
    base: &SdkConfig,
    home_account: &AccountId,
    cross_account: Option<&CrossAccountAccess>,
    account: &AccountId,
    region: &Region,
) -> Result<Option<AssumeRoleProvider>, RegistryError> {
    if account == home_account {
        return Ok(None);
    }
    let access = cross_account.ok_or_else(|| RegistryError {
        operation: "AssumeRole",
        resource: format!("{region}/{account}"),
        message: "the account is another one and no cross-account role is configured".into(),
        retryable: false,
    })?;
    let mut provider =
        AssumeRoleProvider::builder(EcrClients::role_arn(&access.role_name, account, region))
            .configure(base)
            .session_name(&access.session_name);
    if let Some(external_id) = &access.external_id {
        provider = provider.external_id(external_id);
    }
    Ok(Some(provider.build().await))
}

/// How to reach registries in other accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossAccountAccess {
    /// The role name that exists in every other account (`replwatch-reader` for reads; the
    /// backfill's copy needs a role that may write).
    pub role_name: String,
    /// The external id that role requires, if any.
    pub external_id: Option<String>,
    /// The `RoleSessionName`: what the other account's CloudTrail shows as the caller, so it
    /// tells the reader's reads from the copier's writes (the function's name; see
    /// [`CrossAccountAccess::session_name_for`]).
    pub session_name: String,
}

impl CrossAccountAccess {
    /// `who` as an STS role session name: 2 to 64 of `[A-Za-z0-9_+=,.@-]` (STS API
    /// reference, `AssumeRole`), any other character replaced by `-`, cut at 64, padded to 2.
    pub fn session_name_for(who: &str) -> String {
        let mut name: String = who
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        while name.len() < 2 {
            name.push('-');
        }
        name
    }
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
    pace: Option<CallPace>,
    clients: Mutex<HashMap<(AccountId, Region), Client>>,
}

/// At most so many ECR calls a second in each Region: AWS publishes no rate for the reads
/// the tracking path makes (`DescribeImages`, `DescribeImageReplicationStatus`), so the cap is
/// the operator's. Calls are spaced evenly: each takes the next free slot of its Region.
struct CallPace {
    interval: std::time::Duration,
    next: Mutex<HashMap<Region, tokio::time::Instant>>,
}

impl CallPace {
    async fn wait(&self, region: &Region) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            let slot = next.get(region).map_or(now, |n| (*n).max(now));
            next.insert(region.clone(), slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
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
            pace: None,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// At most `per_second` calls a second in each Region, counted as clients handed out:
    /// every caller on the tracking path takes its client right before its one call.
    pub fn with_call_cap(mut self, per_second: f64) -> Self {
        if per_second.is_finite() && per_second > 0.0 {
            self.pace = Some(CallPace {
                interval: std::time::Duration::from_secs_f64(1.0 / per_second),
                next: Mutex::new(HashMap::new()),
            });
        }
        self
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
        if let Some(pace) = &self.pace {
            pace.wait(region).await;
        }
        let cache_key = (account.clone(), region.clone());
        if let Some(client) = self.lock().get(&cache_key) {
            return Ok(client.clone());
        }
        let mut config = aws_sdk_ecr::config::Builder::from(&self.base)
            .region(aws_config::Region::new(region.to_string()));
        if let Some(retry) = &self.retry {
            config = config.retry_config(retry.clone());
        }
        if let Some(provider) = assumed_role(
            &self.base,
            &self.home_account,
            self.cross_account.as_ref(),
            account,
            region,
        )
        .await?
        {
            config = config.credentials_provider(provider);
        }
        let client = Client::from_conf(config.build());
        self.lock().insert(cache_key, client.clone());
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(AccountId, Region), Client>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether ECR said the image or its repository does not exist.
pub fn is_not_found<E: ProvideErrorMetadata>(error: &SdkError<E, impl std::fmt::Debug>) -> bool {
    matches!(
        error.code(),
        Some("ImageNotFoundException" | "RepositoryNotFoundException")
    )
}

pub fn registry_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    operation: &'static str,
    resource: String,
    error: SdkError<E, HttpResponse>,
) -> RegistryError {
    if let Some(refused) = assume_role_failure(&error) {
        return RegistryError {
            operation: "AssumeRole",
            resource,
            message: crate::service_error::describe(refused),
            retryable: crate::service_error::is_transient(refused),
        };
    }
    let retryable = crate::service_error::is_transient(&error);
    let message = crate::service_error::describe(&error);
    RegistryError {
        operation,
        resource,
        message,
        retryable,
    }
}

/// The STS error behind a call that failed before it was sent because the role of its
/// account could not be assumed: the SDK reports it as a dispatch failure (retryable, worded
/// with its whole context), though a refused `AssumeRole` stays refused until someone
/// changes the role.
fn assume_role_failure<E: std::error::Error + 'static>(
    error: &SdkError<E, HttpResponse>,
) -> Option<&SdkError<AssumeRoleError, aws_sdk_sts::config::http::HttpResponse>> {
    let SdkError::DispatchFailure(_) = error else {
        return None;
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(sts) = cause.downcast_ref() {
            return Some(sts);
        }
        source = cause.source();
    }
    None
}

pub fn invalid(operation: &'static str, resource: String, message: String) -> RegistryError {
    RegistryError {
        operation,
        resource,
        message,
        retryable: false,
    }
}
