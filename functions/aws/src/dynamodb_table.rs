//! What every adapter on the tracking table shares: the TTL attribute, and how a DynamoDB
//! failure becomes a [`StoreError`]. No DynamoDB call is made here, so an adapter using it is
//! granted only what that adapter calls.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use replwatch_core::store::StoreError;

use crate::service_error::describe;

/// The key of `registry`'s one rules record (the `rules_record` module keeps the tracking
/// functions' view in it, `backfill_runs` the last plan's).
pub fn rules_record_key(
    registry: &replwatch_core::model::Destination,
) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    use aws_sdk_dynamodb::types::AttributeValue;
    std::collections::HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!(
                "CONFIG#{}#{}",
                registry.region, registry.registry_id
            )),
        ),
        ("sk".to_owned(), AttributeValue::S("CONFIG".to_owned())),
    ])
}

/// Epoch seconds after which DynamoDB deletes the item (the table's TTL attribute).
pub const TTL_ATTRIBUTE: &str = "expires_at";

pub fn request_error(
    operation: &'static str,
    error: aws_sdk_dynamodb::error::BuildError,
) -> StoreError {
    StoreError::Backend {
        operation,
        message: format!("request could not be built: {error}"),
    }
}

/// A conditional write's outcome: `true` when it went through, `false` when its condition did
/// not hold (someone else wrote first), an error for anything else.
pub fn conditional<T, E, R>(
    operation: &'static str,
    result: Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>,
) -> Result<bool, StoreError>
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(backend(operation, e)),
    }
}

pub fn backend(
    operation: &'static str,
    error: impl std::error::Error + ProvideErrorMetadata,
) -> StoreError {
    let message = describe(&error);
    StoreError::Backend { operation, message }
}
