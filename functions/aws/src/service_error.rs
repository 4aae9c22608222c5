//! How every adapter words and classifies an AWS SDK error.
//!
//! Wording: the service's own code and message when it sent them
//! (`ConditionalCheckFailedException: ...`), which is what an operator searches for; the SDK's
//! full error context only when the service said nothing (a timeout, a refused connection),
//! where the context is the only clue.
//!
//! Classification: transient (throttling, the service's own faults, the network) is worth
//! trying again later; anything else (not found, access denied, invalid input) fails the same
//! way until someone changes the configuration. The SDK error types are the same in every
//! `aws-sdk-*` crate, so one function serves them all.

use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// One line describing `error`, for logs and error values.
pub fn describe<E: std::error::Error + ProvideErrorMetadata>(error: &E) -> String {
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(error).to_string(),
    }
}

/// Whether `code` says the service throttled the call: every code the AWS SDK for Rust retries
/// as throttling (`aws_runtime::retries::classifiers::THROTTLING_ERRORS`: DynamoDB's
/// `ProvisionedThroughputExceededException`, `ThrottlingException` and `RequestLimitExceeded`
/// among them), plus the spellings other services use: `ThrottleException` (the ECR User
/// Guide's *HTTP 429: Too Many Requests or ThrottleException*) and `KMSThrottling` (SNS).
pub fn is_throttling(code: &str) -> bool {
    THROTTLING_ERRORS.contains(&code) || matches!(code, "ThrottleException" | "KMSThrottling")
}

/// Whether a service's answer (`code`, HTTP `status`) may go away by itself: throttling
/// ([`is_throttling`]), the SDK's transient codes (`RequestTimeout`…), the service's own faults
/// and any 5xx or 429. Not: `NotFound`, `AccessDenied`, validation and the other configuration
/// errors.
pub fn is_transient_service_error(code: Option<&str>, status: u16) -> bool {
    match code {
        Some(code) if is_throttling(code) || TRANSIENT_ERRORS.contains(&code) => true,
        Some(
            "InternalError"
            | "InternalFailure"
            | "InternalServerError"
            | "InternalServiceError"
            | "ServerException"
            | "ServiceUnavailable"
            | "ServiceUnavailableException",
        ) => true,
        Some(
            "NotFound"
            | "AuthorizationError"
            | "InvalidParameter"
            | "InvalidParameterValue"
            | "InvalidSecurity"
            | "EndpointDisabled"
            | "PlatformApplicationDisabled"
            | "KMSDisabled"
            | "KMSInvalidState"
            | "KMSNotFound"
            | "KMSOptInRequired"
            | "KMSAccessDenied"
            | "ValidationException"
            | "InvalidClientTokenId"
            | "UnrecognizedClientException"
            | "AccessDenied"
            | "AccessDeniedException",
        ) => false,
        _ => status == 429 || status >= 500,
    }
}

/// Whether a cancelled DynamoDB transaction failed only for passing reasons: one of its
/// items was throttled (`ThrottlingError`, `ProvisionedThroughputExceeded`) or in another
/// transaction (`TransactionConflict`), and no condition failed. The codes are the
/// `CancellationReason` codes of the DynamoDB API Reference (*TransactWriteItems*, "Error
/// codes"; `None` for the items that did not cause the cancellation).
pub fn is_transient_cancellation<'a>(reasons: impl IntoIterator<Item = Option<&'a str>>) -> bool {
    let mut passing = false;
    for reason in reasons {
        match reason {
            None | Some("None") => {}
            Some("ThrottlingError" | "ProvisionedThroughputExceeded" | "TransactionConflict") => {
                passing = true
            }
            Some(_) => return false,
        }
    }
    passing
}

/// Whether `error` is worth trying again later: a timeout or network failure, or a transient
/// service answer ([`is_transient_service_error`]).
pub fn is_transient<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            is_transient_service_error(error.code(), service.raw().status().as_u16())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_faults_are_transient_configuration_errors_are_not() {
        assert!(is_transient_service_error(Some("Throttling"), 400));
        assert!(is_transient_service_error(Some("ThrottlingException"), 400));
        assert!(is_transient_service_error(Some("InternalError"), 500));
        assert!(is_transient_service_error(None, 503));
        assert!(is_transient_service_error(None, 429));
        assert!(is_transient_service_error(Some("SomethingNew"), 502));
        assert!(!is_transient_service_error(Some("NotFound"), 404));
        assert!(!is_transient_service_error(Some("AuthorizationError"), 403));
        assert!(!is_transient_service_error(
            Some("AccessDeniedException"),
            400
        ));
        assert!(!is_transient_service_error(Some("InvalidParameter"), 400));
        assert!(!is_transient_service_error(Some("SomethingNew"), 400));
    }

    #[test]
    fn dynamodb_and_ecr_throttling_is_transient_at_http_400() {
        for code in [
            "ProvisionedThroughputExceededException",
            "ThrottlingException",
            "RequestLimitExceeded",
            "TransactionInProgressException",
            "ThrottleException",
            "RequestTimeoutException",
        ] {
            assert!(is_throttling(code) || code == "RequestTimeoutException");
            assert!(is_transient_service_error(Some(code), 400), "{code}");
        }
        assert!(!is_throttling("ConditionalCheckFailedException"));
        assert!(!is_transient_service_error(
            Some("ConditionalCheckFailedException"),
            400
        ));
        assert!(!is_transient_service_error(
            Some("ResourceNotFoundException"),
            400
        ));
    }

    #[test]
    fn a_transaction_cancelled_only_by_throttling_or_a_conflict_is_transient() {
        assert!(is_transient_cancellation([
            Some("None"),
            Some("ThrottlingError")
        ]));
        assert!(is_transient_cancellation([
            Some("ProvisionedThroughputExceeded"),
            None
        ]));
        assert!(is_transient_cancellation([Some("TransactionConflict")]));
        assert!(!is_transient_cancellation([
            Some("ConditionalCheckFailed"),
            Some("ThrottlingError")
        ]));
        assert!(!is_transient_cancellation([Some("ValidationError")]));
        assert!(!is_transient_cancellation([Some("None"), Some("None")]));
        assert!(!is_transient_cancellation([]));
    }
}
