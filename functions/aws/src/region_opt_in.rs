//! Whether an account has opted in to a Region: AWS Account Management's `GetRegionOptStatus`,
//! read with that account's own credentials.
//!
//! ECR replicates to an opt-in Region only when "both the source and destination accounts"
//! opted in to it beforehand (ECR User Guide, private image replication, considerations; see
//! [`replwatch_core::region_opt_in`]). The status is the account's: `GetRegionOptStatus`
//! without `AccountId` answers for the account of the credentials that call it, and with
//! `AccountId` only when "the caller [is] an identity in the organization's management account
//! or a delegated administrator account"
//! (<https://docs.aws.amazon.com/accounts/latest/reference/API_GetRegionOptStatus.html>), which
//! replwatch's roles are not. So, as [`EcrClients`](crate::ecr_clients::EcrClients) does for
//! ECR, the account the credentials belong to is asked with them and any other account through
//! the role [`CrossAccountAccess`] names there, assumed with its external id; that role needs
//! `account:GetRegionOptStatus`. Account Management is a global service: the SDK sends every
//! call to its one endpoint of the partition, whatever Region the client is configured for, so
//! a Region the account has not enabled can be asked about.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_config::SdkConfig;
use aws_sdk_account::Client;
use replwatch_core::backfill::port::DestinationAccess;
use replwatch_core::model::{AccountId, Destination, Region};
pub use replwatch_core::region_opt_in::READ_PERMISSION;
use replwatch_core::region_opt_in::{OptInStatus, refusal};
use replwatch_core::registry::RegistryError;

use crate::ecr_clients::{CrossAccountAccess, assumed_role, invalid, registry_error};

/// Opt-in status reads per account, each with that account's credentials.
///
/// The account `base`'s credentials belong to (`home_account`) is asked with them; any other
/// through the role `cross_account` names ([`assumed_role`], as the ECR clients: none
/// configured is a clear, non-retryable `AssumeRole` error). A client is built once per account
/// and kept; statuses are not: each call asks again (enabling a Region takes minutes to hours).
pub struct RegionOptIn {
    base: SdkConfig,
    home_account: AccountId,
    cross_account: Option<CrossAccountAccess>,
    clients: Mutex<HashMap<AccountId, Client>>,
}

impl RegionOptIn {
    pub fn new(
        base: SdkConfig,
        home_account: AccountId,
        cross_account: Option<CrossAccountAccess>,
    ) -> Self {
        Self {
            base,
            home_account,
            cross_account,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The opt-in status of `region` for `account` (`GetRegionOptStatus` with `account`'s own
    /// credentials). Refused: a non-retryable error whose message carries the service's
    /// `AccessDeniedException` (the caller, or the role in `account`, lacks [`READ_PERMISSION`]).
    pub async fn status(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> Result<OptInStatus, RegistryError> {
        let resource = format!("{region} in account {account}");
        let answer = self
            .client(account, region)
            .await?
            .get_region_opt_status()
            .region_name(region.as_str())
            .send()
            .await
            .map_err(|e| registry_error("GetRegionOptStatus", resource.clone(), e))?;
        answer
            .region_opt_status()
            .map(|status| OptInStatus::parse(status.as_str()))
            .ok_or_else(|| {
                invalid(
                    "GetRegionOptStatus",
                    resource,
                    "the answer has no RegionOptStatus".into(),
                )
            })
    }

    /// Whether replication from `source_account` to `region` of `destination_account` is
    /// possible now: the Region is enabled for both (one read when they are the same account).
    /// `Ok(None)` when it is; otherwise the account that has not enabled it, with its status.
    pub async fn replication_blocker(
        &self,
        source_account: &AccountId,
        destination_account: &AccountId,
        region: &Region,
    ) -> Result<Option<(AccountId, OptInStatus)>, RegistryError> {
        let mut accounts = vec![source_account];
        if destination_account != source_account {
            accounts.push(destination_account);
        }
        for account in accounts {
            let status = self.status(account, region).await?;
            if !status.allows_replication() {
                return Ok(Some((account.clone(), status)));
            }
        }
        Ok(None)
    }

    async fn client(&self, account: &AccountId, region: &Region) -> Result<Client, RegistryError> {
        if let Some(client) = self.lock().get(account) {
            return Ok(client.clone());
        }
        let mut config = aws_sdk_account::config::Builder::from(&self.base);
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
        self.lock().insert(account.clone(), client.clone());
        Ok(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AccountId, Client>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl DestinationAccess for RegionOptIn {
    async fn refusal(
        &self,
        source: &Destination,
        destination: &Destination,
    ) -> Result<Option<String>, RegistryError> {
        Ok(self
            .replication_blocker(
                &source.registry_id,
                &destination.registry_id,
                &destination.region,
            )
            .await?
            .map(|(account, status)| refusal(&destination.region, &account, &status)))
    }
}
