//! SDK configuration pointing at the local AWS test bed instead of AWS.
//!
//! The test bed (moto server plus replwatch's ECR extension, `infra/local-aws/`) listens on
//! 127.0.0.1 and accepts any credentials; the access key chooses nothing, the account comes
//! from STS `AssumeRole` when a test needs another one.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

/// The variable holding the local endpoint, as `infra/local-aws/start` prints it.
pub const ENDPOINT_VARIABLE: &str = "AWS_ENDPOINT_URL";

/// The local endpoint, or an explanation of how to start it.
pub fn endpoint_from_env() -> Result<String, String> {
    std::env::var(ENDPOINT_VARIABLE).map_err(|_| {
        format!(
            "{ENDPOINT_VARIABLE} is not set: start the local AWS with `eval \"$(infra/local-aws/start)\"`"
        )
    })
}

/// An SDK configuration for `region` on the local AWS at `endpoint`, with static test
/// credentials so nothing reads the developer's real AWS profile.
pub async fn sdk_config(endpoint: &str, region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "local-aws",
        ))
        .load()
        .await
}
