//! The AWS side of the CLI: one SDK configuration from the global options, and who we are.

use aws_config::{BehaviorVersion, SdkConfig};
use replwatch_aws::ecr_clients::CrossAccountAccess;
use replwatch_core::model::{AccountId, Destination, Region};

use crate::args::GlobalOptions;

#[derive(Debug, thiserror::Error)]
pub enum AwsSetupError {
    #[error("no AWS Region: pass --region or set one in the profile or AWS_REGION")]
    NoRegion,
    #[error("STS GetCallerIdentity (who are these credentials?): {0}")]
    CallerIdentity(String),
    #[error("{0}")]
    Invalid(String),
}

/// The SDK configuration the options describe (default credential chain).
pub async fn sdk_config(global: &GlobalOptions) -> Result<SdkConfig, AwsSetupError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(profile) = &global.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &global.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &global.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(AwsSetupError::NoRegion);
    }
    Ok(config)
}

/// How other accounts are reached: the role `--role-name` names there, with `--external-id`;
/// `None` without `--role-name`.
pub fn cross_account_access(global: &GlobalOptions) -> Option<CrossAccountAccess> {
    global
        .role_name
        .as_ref()
        .map(|role_name| CrossAccountAccess {
            role_name: role_name.clone(),
            external_id: global.external_id.clone(),
            session_name: "replwatch-cli".into(),
        })
}

/// The registry the credentials and Region name: the source of a backfill.
pub async fn home_registry(config: &SdkConfig) -> Result<Destination, AwsSetupError> {
    let region = config
        .region()
        .map(|r| r.to_string())
        .ok_or(AwsSetupError::NoRegion)?;
    let identity = aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| AwsSetupError::CallerIdentity(replwatch_aws::service_error::describe(&e)))?;
    let account = identity
        .account()
        .ok_or_else(|| AwsSetupError::CallerIdentity("no account in the answer".into()))?;
    Ok(Destination::new(
        Region::parse(&region).map_err(|e| AwsSetupError::Invalid(format!("--region: {e}")))?,
        AccountId::parse(account)
            .map_err(|e| AwsSetupError::Invalid(format!("caller account: {e}")))?,
    ))
}

/// `REGION` or `REGION/ACCOUNT` (`home` account when absent).
pub fn parse_destination(value: &str, home: &AccountId) -> Result<Destination, AwsSetupError> {
    Destination::parse_in(value, home)
        .map_err(|e| AwsSetupError::Invalid(format!("--destination {value}: {e}")))
}
