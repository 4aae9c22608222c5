//! The backfill's native strategy on Amazon ECR: `StartReplicationBackfill`,
//! `ListReplicationBackfills` and `DescribeReplicationBackfillResults`, in the source registry.
//!
//! What `StartReplicationBackfill` refusals mean for the plan:
//! - `ReplicationBackfillInProgressException` (one backfill at a time per destination Region)
//!   and `LimitExceededException` (ten per registry): [`NativeStart::LimitReached`], wait for
//!   one to end. The SDK counts `LimitExceededException` as throttling and retries it before it
//!   returns it;
//! - `ValidationException` (the destination is not in the replication configuration),
//!   `InvalidParameterException` and `AccessDeniedException`: [`NativeStart::Refused`], the
//!   plan copies to that destination instead;
//! - anything else is an error (retryable when transient).

use aws_config::SdkConfig;
use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::types::{
    ReplicationBackfillResultStatus, ReplicationBackfillStatus, ReplicationDestination,
};
use replwatch_core::backfill::port::{
    NativeBackfill, NativeBackfillApi, NativeBackfillStatus, NativeImageResult, NativeStart,
};
use replwatch_core::model::{AccountId, Destination, Digest, Region, RepositoryName};
use replwatch_core::registry::RegistryError;

use crate::ecr_clients::{CrossAccountAccess, EcrClients, invalid, registry_error};

/// `maxResults` of `ListReplicationBackfills` (the API's maximum).
pub const LIST_PAGE_SIZE: i32 = 50;
/// `maxResults` of `DescribeReplicationBackfillResults` (the API's maximum).
pub const RESULTS_PAGE_SIZE: i32 = 1000;

/// [`NativeBackfillApi`] on ECR.
pub struct EcrNativeBackfill {
    clients: EcrClients,
}

impl EcrNativeBackfill {
    /// `base` carries the caller's own credentials, which belong to `home_account`; a source
    /// registry of another account is reached through `cross_account`'s role. The clients
    /// keep the retry configuration of `base`.
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

/// ECR's backfill status, with the failure code when it failed.
pub fn native_status(
    status: &ReplicationBackfillStatus,
    failure_code: Option<&str>,
) -> NativeBackfillStatus {
    match status {
        ReplicationBackfillStatus::Preparing => NativeBackfillStatus::Preparing,
        ReplicationBackfillStatus::InProgress => NativeBackfillStatus::InProgress,
        ReplicationBackfillStatus::Complete => NativeBackfillStatus::Complete,
        ReplicationBackfillStatus::Failed => NativeBackfillStatus::Failed {
            failure_code: failure_code.map(str::to_owned),
        },
        ReplicationBackfillStatus::Stopping => NativeBackfillStatus::Stopping,
        ReplicationBackfillStatus::Stopped => NativeBackfillStatus::Stopped,
        other => NativeBackfillStatus::Other(other.as_str().to_owned()),
    }
}

/// What a refused `StartReplicationBackfill` means, by error code; `None`: an error.
fn refusal(code: Option<&str>, message: String) -> Option<NativeStart> {
    match code {
        Some("ReplicationBackfillInProgressException" | "LimitExceededException") => {
            Some(NativeStart::LimitReached)
        }
        Some(
            "ValidationException"
            | "InvalidParameterException"
            | "AccessDeniedException"
            | "AccessDenied",
        ) => Some(NativeStart::Refused { reason: message }),
        _ => None,
    }
}

fn destination_of(
    destination: Option<&ReplicationDestination>,
) -> Result<Option<Destination>, String> {
    destination
        .map(|d| {
            Ok(Destination::new(
                Region::parse(d.region()).map_err(|e| e.to_string())?,
                AccountId::parse(d.registry_id()).map_err(|e| e.to_string())?,
            ))
        })
        .transpose()
}

impl NativeBackfillApi for EcrNativeBackfill {
    async fn start(
        &self,
        source: &Destination,
        destination: &Destination,
    ) -> Result<NativeStart, RegistryError> {
        const OP: &str = "StartReplicationBackfill";
        let resource = format!("{source} to {destination}");
        let target = ReplicationDestination::builder()
            .region(destination.region.as_str())
            .registry_id(destination.registry_id.as_str())
            .build()
            .map_err(|e| invalid(OP, resource.clone(), e.to_string()))?;
        let client = self.clients.for_registry(source).await?;
        let answer = client
            .start_replication_backfill()
            .registry_id(source.registry_id.as_str())
            .destination(target)
            .send()
            .await;
        let output = match answer {
            Ok(output) => output,
            Err(e) => {
                let message = crate::service_error::describe(&e);
                return match refusal(e.code(), message) {
                    Some(start) => Ok(start),
                    None => Err(registry_error(OP, resource, e)),
                };
            }
        };
        let id = output
            .replication_backfill_id()
            .ok_or_else(|| invalid(OP, resource.clone(), "no replicationBackfillId".into()))?;
        let status = output
            .status()
            .map(|s| native_status(s, None))
            .unwrap_or(NativeBackfillStatus::Preparing);
        let started = destination_of(output.destination())
            .map_err(|m| invalid(OP, resource.clone(), m))?
            .unwrap_or_else(|| destination.clone());
        Ok(NativeStart::Started(NativeBackfill {
            id: id.to_owned(),
            destination: started,
            status,
        }))
    }

    async fn list(&self, source: &Destination) -> Result<Vec<NativeBackfill>, RegistryError> {
        const OP: &str = "ListReplicationBackfills";
        let resource = source.to_string();
        let client = self.clients.for_registry(source).await?;
        let mut backfills = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let page = client
                .list_replication_backfills()
                .registry_id(source.registry_id.as_str())
                .max_results(LIST_PAGE_SIZE)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| registry_error(OP, resource.clone(), e))?;
            for summary in page.backfills() {
                let id = summary.replication_backfill_id();
                let destination = destination_of(summary.destination())
                    .map_err(|m| invalid(OP, format!("{resource} {id}"), m))?
                    .ok_or_else(|| {
                        invalid(OP, format!("{resource} {id}"), "no destination".into())
                    })?;
                backfills.push(NativeBackfill {
                    id: id.to_owned(),
                    destination,
                    status: native_status(summary.status(), summary.failure_code()),
                });
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => return Ok(backfills),
            }
        }
    }

    async fn results(
        &self,
        source: &Destination,
        backfill_id: &str,
    ) -> Result<Vec<NativeImageResult>, RegistryError> {
        const OP: &str = "DescribeReplicationBackfillResults";
        let resource = format!("{source} {backfill_id}");
        let client = self.clients.for_registry(source).await?;
        let mut results = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let page = client
                .describe_replication_backfill_results()
                .registry_id(source.registry_id.as_str())
                .replication_backfill_id(backfill_id)
                .max_results(RESULTS_PAGE_SIZE)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| registry_error(OP, resource.clone(), e))?;
            for result in page.results() {
                let repository = RepositoryName::parse(result.repository_name())
                    .map_err(|e| invalid(OP, resource.clone(), e.to_string()))?;
                let digest = Digest::parse(
                    result
                        .image_id()
                        .and_then(|i| i.image_digest())
                        .unwrap_or_default(),
                )
                .map_err(|e| invalid(OP, resource.clone(), e.to_string()))?;
                let failure = match result.status() {
                    ReplicationBackfillResultStatus::Complete => None,
                    _ => Some(result.failure_code().unwrap_or("FAILED").to_owned()),
                };
                results.push(NativeImageResult {
                    repository,
                    digest,
                    tag: result
                        .image_id()
                        .and_then(|i| i.image_tag())
                        .map(str::to_owned),
                    failure,
                    sub_image_failures: result.sub_image_failure_codes().to_vec(),
                });
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => return Ok(results),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_with_their_failure_code() {
        assert_eq!(
            native_status(&ReplicationBackfillStatus::Preparing, None),
            NativeBackfillStatus::Preparing
        );
        assert_eq!(
            native_status(&ReplicationBackfillStatus::InProgress, None),
            NativeBackfillStatus::InProgress
        );
        assert_eq!(
            native_status(&ReplicationBackfillStatus::Failed, Some("X")),
            NativeBackfillStatus::Failed {
                failure_code: Some("X".into())
            }
        );
        assert_eq!(
            native_status(&ReplicationBackfillStatus::Stopped, None),
            NativeBackfillStatus::Stopped
        );
        assert_eq!(
            native_status(&ReplicationBackfillStatus::from("PAUSED"), None),
            NativeBackfillStatus::Other("PAUSED".into())
        );
    }

    #[test]
    fn limits_wait_refusals_fall_back_other_errors_stay_errors() {
        assert_eq!(
            refusal(
                Some("ReplicationBackfillInProgressException"),
                String::new()
            ),
            Some(NativeStart::LimitReached)
        );
        assert_eq!(
            refusal(Some("LimitExceededException"), String::new()),
            Some(NativeStart::LimitReached)
        );
        assert_eq!(
            refusal(Some("ValidationException"), "not configured".into()),
            Some(NativeStart::Refused {
                reason: "not configured".into()
            })
        );
        assert_eq!(refusal(Some("ServerException"), String::new()), None);
        assert_eq!(refusal(None, String::new()), None);
    }
}
