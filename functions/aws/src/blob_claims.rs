//! Blob claims on DynamoDB, in the tracking table: who uploads a blob that concurrent copies
//! (threads of the CLI, Lambda invocations) all need in one destination repository.
//!
//! One item per (destination, repository, blob): `pk` = `CLAIM#<region>#<account>#<repository>`,
//! `sk` = `BLOB#<digest>`, with `owner` (this claim's token), `lease_until` (epoch
//! milliseconds) and `expires_at` (epoch seconds, the table's TTL, an hour after the lease so
//! the table cleans up after itself). A claim is a conditional `PutItem`:
//! `attribute_not_exists(pk) OR lease_until < :now`. A holder that dies (killed process,
//! Lambda timeout) delays the blob by one lease, it does not lose it. A release is a
//! `DeleteItem` on condition that the item still carries this claim's token, so a holder
//! whose lease ran out and was taken over does not delete its successor's claim.
//!
//! Tokens: `<owner id>-<n>`, the owner id made of the time, the process id and a counter
//! (unique per process without a random source), `n` counting the claims this value granted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use replwatch_core::backfill::port::{BlobClaims, Claim};
use replwatch_core::model::{Destination, Digest, RepositoryName};
use replwatch_core::registry::RegistryError;

use crate::dynamodb_table::TTL_ATTRIBUTE;

/// How long a claim holds when its holder never releases it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15 * 60);
/// How long after its lease a claim item stays before the TTL removes it.
const TTL_MARGIN: Duration = Duration::from_secs(60 * 60);

/// [`BlobClaims`] on the tracking table.
#[derive(Debug)]
pub struct DynamoBlobClaims {
    client: Client,
    table: String,
    lease: Duration,
    owner: String,
    next: AtomicU64,
    /// The token of every claim this value holds, by item key.
    held: Mutex<HashMap<(String, String), String>>,
}

impl DynamoBlobClaims {
    /// Claims in `table` with the default lease ([`DEFAULT_LEASE`]).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            lease: DEFAULT_LEASE,
            owner: owner_id(),
            next: AtomicU64::new(0),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Claims held for `lease` when not released (longer than the slowest blob upload).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The owner id this value writes (before the per-claim counter).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The item key of a claim.
pub fn claim_key(
    destination: &Destination,
    repository: &RepositoryName,
    blob: &Digest,
) -> (String, String) {
    (
        format!(
            "CLAIM#{}#{}#{}",
            destination.region, destination.registry_id, repository
        ),
        format!("BLOB#{blob}"),
    )
}

/// An id distinct for every call in this process and, practically, across processes and
/// hosts: nanoseconds since the epoch, process id, counter.
fn owner_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{nanos:x}-{:x}-{:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn epoch_millis(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

fn claims_error(
    operation: &'static str,
    resource: String,
    error: aws_sdk_dynamodb::error::SdkError<
        impl aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
        aws_sdk_dynamodb::config::http::HttpResponse,
    >,
) -> RegistryError {
    RegistryError {
        operation,
        resource,
        message: crate::service_error::describe(&error),
        retryable: crate::service_error::is_transient(&error),
    }
}

impl BlobClaims for DynamoBlobClaims {
    async fn claim(
        &self,
        destination: &Destination,
        repository: &RepositoryName,
        blob: &Digest,
    ) -> Result<Claim, RegistryError> {
        let (pk, sk) = claim_key(destination, repository, blob);
        let token = format!(
            "{}-{}",
            self.owner,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let now = SystemTime::now();
        let lease_until = epoch_millis(now + self.lease);
        let expires_at = (now + self.lease + TTL_MARGIN)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let answer = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(pk.clone()))
            .item("sk", AttributeValue::S(sk.clone()))
            .item("owner", AttributeValue::S(token.clone()))
            .item("lease_until", AttributeValue::N(lease_until.to_string()))
            .item(TTL_ATTRIBUTE, AttributeValue::N(expires_at.to_string()))
            .condition_expression("attribute_not_exists(pk) OR lease_until < :now")
            .expression_attribute_values(":now", AttributeValue::N(epoch_millis(now).to_string()))
            .send()
            .await;
        match answer {
            Ok(_) => {
                self.held().insert((pk, sk), token);
                Ok(Claim::Granted)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(Claim::HeldElsewhere)
            }
            Err(e) => Err(claims_error(
                "PutItem",
                format!("{destination} {repository}@{blob}"),
                e,
            )),
        }
    }

    async fn release(
        &self,
        destination: &Destination,
        repository: &RepositoryName,
        blob: &Digest,
    ) -> Result<(), RegistryError> {
        let key = claim_key(destination, repository, blob);
        let Some(token) = self.held().remove(&key) else {
            // Not claimed here (or released already): nothing of ours to remove.
            return Ok(());
        };
        let answer = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.0.clone()))
            .key("sk", AttributeValue::S(key.1.clone()))
            .condition_expression("#owner = :token")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":token", AttributeValue::S(token.clone()))
            .send()
            .await;
        match answer {
            Ok(_) => Ok(()),
            // The lease ran out and someone else holds the claim now: theirs to release.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => {
                // Still ours: a later release may try again.
                self.held().insert(key, token);
                Err(claims_error(
                    "DeleteItem",
                    format!("{destination} {repository}@{blob}"),
                    e,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_differ_within_a_process() {
        assert_ne!(owner_id(), owner_id());
    }

    #[test]
    fn keys_name_the_destination_repository_and_blob() {
        let destination = Destination::new(
            replwatch_core::model::Region::parse("eu-west-1").expect("region"),
            replwatch_core::model::AccountId::parse("222222222222").expect("account"),
        );
        let repository = RepositoryName::parse("team/web").expect("name");
        let blob = Digest::parse(&format!("sha256:{}", "a".repeat(64))).expect("digest");
        let (pk, sk) = claim_key(&destination, &repository, &blob);
        assert_eq!(pk, "CLAIM#eu-west-1#222222222222#team/web");
        assert_eq!(sk, format!("BLOB#sha256:{}", "a".repeat(64)));
    }
}
