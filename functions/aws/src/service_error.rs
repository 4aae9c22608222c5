//! How every adapter words an AWS SDK error: the service's own code and message when it sent
//! them (`ConditionalCheckFailedException: ...`), which is what an operator searches for; the
//! SDK's full error context only when the service said nothing (a timeout, a refused
//! connection), where the context is the only clue.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};

/// One line describing `error`, for logs and error values.
pub fn describe<E: std::error::Error + ProvideErrorMetadata>(error: &E) -> String {
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(error).to_string(),
    }
}
