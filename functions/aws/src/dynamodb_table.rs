//! What every adapter on the tracking table shares: the TTL attribute, and how a DynamoDB
//! failure becomes a [`StoreError`]. No DynamoDB call is made here, so an adapter using it is
//! granted only what that adapter calls.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use replwatch_core::store::StoreError;

use crate::service_error::describe;

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

pub fn backend(
    operation: &'static str,
    error: impl std::error::Error + ProvideErrorMetadata,
) -> StoreError {
    let message = describe(&error);
    StoreError::Backend { operation, message }
}
