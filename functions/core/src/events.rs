//! The EventBridge events replwatch consumes, parsed into domain values.
//!
//! Three detail types matter: `ECR Image Action` (pushes, restores from the archive storage
//! class and deletes in a source Region),
//! `ECR Replication Action` (delivered in the destination Region and forwarded to the central
//! bus) and `AWS API Call via CloudTrail` for `PutReplicationConfiguration`. Everything else
//! that reaches a function (another detail type, a failed push, an archive) is
//! recognised and returned as [`ParsedEvent::Skipped`] so the caller can log it and move on.
//!
//! A malformed event is an [`EventError`] that names the event id (when the JSON got that far)
//! and the exact field, so an operator can find it in the dead-letter queue and see what was
//! wrong without re-running anything. Unknown fields are ignored: AWS adds fields over time.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::model::{AccountId, Destination, Digest, Region, RepositoryName, SourceImage};
use crate::rules::ReplicationConfiguration;

/// A malformed event: which one, which field, and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event {}: field `{field}`: {message}", id.as_deref().unwrap_or("<no id>"))]
pub struct EventError {
    /// The event's `id`, when the input was JSON with a string `id`.
    pub id: Option<String>,
    /// Dotted path of the offending field (`detail.image-digest`), or `<json>` for input that
    /// is not JSON at all.
    pub field: String,
    pub message: String,
}

/// The EventBridge envelope fields every consumer needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EventEnvelope {
    pub id: String,
    pub detail_type: String,
    pub source: String,
    /// The account the event happened in (the destination account for replication events).
    pub account: AccountId,
    pub time: DateTime<Utc>,
    pub region: Region,
    #[serde(default)]
    pub resources: Vec<String>,
}

/// What happened to an image in its source registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageActionKind {
    Push,
    /// `UPDATE_STORAGE_CLASS` to `STANDARD`: an archived image was restored, and ECR
    /// replicates a restored image as it does a pushed one.
    Restore,
    Delete,
}

/// A successful push or delete in a source registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEvent {
    pub envelope: EventEnvelope,
    pub action: ImageActionKind,
    pub image: SourceImage,
    /// Absent for untagged pushes and for deletes by digest.
    pub tag: Option<String>,
    pub manifest_media_type: Option<String>,
}

/// How ECR says one replication ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationResult {
    Succeeded,
    Failed,
}

/// One `ECR Replication Action`: an image from `source` arrived in (or failed to reach)
/// `destination`, the Region and account that emitted the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationEvent {
    pub envelope: EventEnvelope,
    pub source: SourceImage,
    pub destination: Destination,
    pub tag: Option<String>,
    pub result: ReplicationResult,
}

/// The rules of a source registry were replaced (`PutReplicationConfiguration` succeeded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfigurationChange {
    pub envelope: EventEnvelope,
    pub registry: Destination,
    pub configuration: ReplicationConfiguration,
}

/// An event replwatch acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EcrEvent {
    Image(ImageEvent),
    Replication(ReplicationEvent),
    ConfigurationChange(ReplicationConfigurationChange),
}

impl EcrEvent {
    pub fn envelope(&self) -> &EventEnvelope {
        match self {
            EcrEvent::Image(e) => &e.envelope,
            EcrEvent::Replication(e) => &e.envelope,
            EcrEvent::ConfigurationChange(e) => &e.envelope,
        }
    }

    /// The source registry the event is about: where the image was pushed or deleted, where
    /// a replication came from, whose rules changed.
    pub fn source_registry(&self) -> &Destination {
        match self {
            EcrEvent::Image(e) => &e.image.registry,
            EcrEvent::Replication(e) => &e.source.registry,
            EcrEvent::ConfigurationChange(e) => &e.registry,
        }
    }
}

/// A well-formed event that replwatch deliberately ignores, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEvent {
    pub id: Option<String>,
    pub detail_type: Option<String>,
    pub reason: String,
}

// One value per event, moved once into its handler: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedEvent {
    Handled(EcrEvent),
    Skipped(SkippedEvent),
}

pub const IMAGE_ACTION: &str = "ECR Image Action";
pub const REPLICATION_ACTION: &str = "ECR Replication Action";
pub const CLOUDTRAIL_API_CALL: &str = "AWS API Call via CloudTrail";

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ImageActionDetail {
    result: String,
    repository_name: RepositoryName,
    image_digest: Digest,
    action_type: String,
    image_tag: Option<String>,
    manifest_media_type: Option<String>,
    target_storage_class: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ReplicationActionDetail {
    result: String,
    repository_name: RepositoryName,
    image_digest: Digest,
    action_type: String,
    source_account: AccountId,
    source_region: Region,
    image_tag: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CloudTrailDetail {
    event_name: String,
    aws_region: Option<Region>,
    recipient_account_id: Option<AccountId>,
    error_code: Option<String>,
    request_parameters: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutReplicationConfigurationRequest {
    replication_configuration: ReplicationConfiguration,
}

/// The envelope as it is on the wire, with the detail left unparsed until the detail type
/// says what it is (one pass over the input, no intermediate JSON tree).
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct WireEvent<'a> {
    id: String,
    detail_type: String,
    source: String,
    account: AccountId,
    time: DateTime<Utc>,
    region: Region,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(borrow)]
    detail: Option<&'a RawValue>,
}

/// Parses one EventBridge event (the JSON EventBridge delivers, or an SQS message body).
pub fn parse_event(input: &[u8]) -> Result<ParsedEvent, EventError> {
    // The plain parse is the fast path; only a failure is parsed again with path tracking,
    // to name the field.
    let wire: WireEvent = match serde_json::from_slice(input) {
        Ok(wire) => wire,
        Err(_) => {
            let tracked: Result<WireEvent, _> =
                serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(input));
            return Err(match tracked {
                Err(e) => envelope_error(input, e),
                Ok(_) => EventError {
                    id: None,
                    field: "<json>".into(),
                    message: "the event parsed only with path tracking".into(),
                },
            });
        }
    };
    let id = Some(wire.id.clone());
    let error = |field: String, message: String| EventError {
        id: id.clone(),
        field,
        message,
    };
    let detail = wire
        .detail
        .ok_or_else(|| error("detail".into(), "missing field".into()))?
        .get();
    let envelope = EventEnvelope {
        id: wire.id,
        detail_type: wire.detail_type,
        source: wire.source,
        account: wire.account,
        time: wire.time,
        region: wire.region,
        resources: wire.resources,
    };
    let skip = |reason: String| {
        Ok(ParsedEvent::Skipped(SkippedEvent {
            id: Some(envelope.id.clone()),
            detail_type: Some(envelope.detail_type.clone()),
            reason,
        }))
    };
    if envelope.source != "aws.ecr" {
        return skip(format!("source {:?} is not aws.ecr", envelope.source));
    }
    match envelope.detail_type.as_str() {
        IMAGE_ACTION => {
            let d: ImageActionDetail = from_str(detail, "detail.").map_err(|(f, m)| error(f, m))?;
            if d.result != "SUCCESS" {
                return skip(format!(
                    "image action result {} (nothing to replicate)",
                    d.result
                ));
            }
            let action = match d.action_type.as_str() {
                "PUSH" => ImageActionKind::Push,
                "DELETE" => ImageActionKind::Delete,
                "UPDATE_STORAGE_CLASS" => match d.target_storage_class.as_deref() {
                    Some("STANDARD") => ImageActionKind::Restore,
                    other => {
                        return skip(format!(
                            "UPDATE_STORAGE_CLASS to {} (archiving does not replicate)",
                            other.unwrap_or("an unnamed class")
                        ));
                    }
                },
                other => return skip(format!("image action {other} does not affect replication")),
            };
            let image = SourceImage {
                registry: Destination::new(envelope.region.clone(), envelope.account.clone()),
                repository: d.repository_name,
                digest: d.image_digest,
            };
            Ok(ParsedEvent::Handled(EcrEvent::Image(ImageEvent {
                envelope,
                action,
                image,
                tag: d.image_tag.filter(|t| !t.is_empty()),
                manifest_media_type: d.manifest_media_type,
            })))
        }
        REPLICATION_ACTION => {
            let d: ReplicationActionDetail =
                from_str(detail, "detail.").map_err(|(f, m)| error(f, m))?;
            if d.action_type != "REPLICATE" {
                return skip(format!("replication action {}", d.action_type));
            }
            // The documentation spells the failure result FAILED; some samples say FAILURE.
            let result = match d.result.as_str() {
                "SUCCESS" => ReplicationResult::Succeeded,
                "FAILED" | "FAILURE" => ReplicationResult::Failed,
                other => {
                    return Err(error(
                        "detail.result".into(),
                        format!("unknown replication result {other:?}"),
                    ));
                }
            };
            let source = SourceImage {
                registry: Destination::new(d.source_region, d.source_account),
                repository: d.repository_name,
                digest: d.image_digest,
            };
            let destination = Destination::new(envelope.region.clone(), envelope.account.clone());
            Ok(ParsedEvent::Handled(EcrEvent::Replication(
                ReplicationEvent {
                    envelope,
                    source,
                    destination,
                    tag: d.image_tag.filter(|t| !t.is_empty()),
                    result,
                },
            )))
        }
        CLOUDTRAIL_API_CALL => {
            let d: CloudTrailDetail = from_str(detail, "detail.").map_err(|(f, m)| error(f, m))?;
            if d.event_name != "PutReplicationConfiguration" {
                return skip(format!(
                    "API call {} does not change replication",
                    d.event_name
                ));
            }
            if let Some(code) = d.error_code {
                return skip(format!("PutReplicationConfiguration failed with {code}"));
            }
            let request = d
                .request_parameters
                .ok_or_else(|| error("detail.requestParameters".into(), "missing field".into()))?;
            let request: PutReplicationConfigurationRequest =
                from_json_value(request, "detail.requestParameters.")
                    .map_err(|(f, m)| error(f, m))?;
            let registry = Destination::new(
                d.aws_region.unwrap_or_else(|| envelope.region.clone()),
                d.recipient_account_id
                    .unwrap_or_else(|| envelope.account.clone()),
            );
            Ok(ParsedEvent::Handled(EcrEvent::ConfigurationChange(
                ReplicationConfigurationChange {
                    envelope,
                    registry,
                    configuration: request.replication_configuration,
                },
            )))
        }
        other => skip(format!(
            "detail-type {other:?} is not one replwatch handles"
        )),
    }
}

/// The error for an input whose envelope did not parse: syntax errors name no field, data
/// errors name their path; the event id is recovered when the input is JSON with one.
fn envelope_error(input: &[u8], e: serde_path_to_error::Error<serde_json::Error>) -> EventError {
    let id = serde_json::from_slice::<serde_json::Value>(input)
        .ok()
        .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned));
    let syntax = matches!(
        e.inner().classify(),
        serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io
    );
    if syntax {
        return EventError {
            id,
            field: "<json>".into(),
            message: e.into_inner().to_string(),
        };
    }
    let (field, message) = path_and_message(e, "");
    let field = if field.is_empty() {
        "<json>".to_owned()
    } else {
        field
    };
    EventError { id, field, message }
}

/// Deserializes `json`, reporting a failure as (dotted field path, message). The plain parse
/// is the fast path; a failure is parsed again with path tracking to name the field.
fn from_str<'a, T: Deserialize<'a>>(json: &'a str, prefix: &str) -> Result<T, (String, String)> {
    match serde_json::from_str(json) {
        Ok(value) => Ok(value),
        Err(plain) => {
            match serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(json)) {
                Ok(value) => Ok(value),
                Err(e) => {
                    let (field, message) = path_and_message(e, prefix);
                    Err((
                        field,
                        if message.is_empty() {
                            plain.to_string()
                        } else {
                            message
                        },
                    ))
                }
            }
        }
    }
}

/// Like [`from_str`], for a value already decoded.
fn from_json_value<T: DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| path_and_message(e, prefix))
}

fn path_and_message<E: std::fmt::Display>(
    e: serde_path_to_error::Error<E>,
    prefix: &str,
) -> (String, String) {
    let path = e.path().to_string();
    let inner = e.into_inner().to_string();
    // serde reports a missing field at the parent path; name the field itself.
    let field = match inner.strip_prefix("missing field `") {
        Some(rest) => {
            let name = rest.split('`').next().unwrap_or(rest);
            if path == "." {
                name.to_owned()
            } else {
                format!("{path}.{name}")
            }
        }
        None => path,
    };
    let field = if field == "." { String::new() } else { field };
    (
        format!("{prefix}{field}").trim_end_matches('.').to_owned(),
        inner,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_events::{bad_event, shared_event};

    fn handled(name: &str) -> EcrEvent {
        match parse_event(&shared_event(name)) {
            Ok(ParsedEvent::Handled(e)) => e,
            other => panic!("{name}: expected a handled event, got {other:?}"),
        }
    }

    #[test]
    fn tagged_push_names_image_tag_and_source_registry() {
        let EcrEvent::Image(e) = handled("push-tagged.json") else {
            panic!("not an image event")
        };
        assert_eq!(e.action, ImageActionKind::Push);
        assert_eq!(e.tag.as_deref(), Some("v1.4.2"));
        assert_eq!(e.image.repository.as_str(), "team-a/web");
        assert_eq!(e.image.registry.region.as_str(), "us-west-2");
        assert_eq!(e.image.registry.registry_id.as_str(), "111111111111");
        assert_eq!(e.envelope.id, "4f5ec4d5-3a1c-4b8e-9d0c-1a2b3c4d5e01");
        assert_eq!(e.envelope.time.to_rfc3339(), "2026-11-20T10:00:00+00:00");
    }

    #[test]
    fn untagged_push_has_no_tag() {
        let EcrEvent::Image(e) = handled("push-untagged.json") else {
            panic!("not an image event")
        };
        assert_eq!(e.action, ImageActionKind::Push);
        assert_eq!(e.tag, None);
    }

    #[test]
    fn delete_is_recognised() {
        let EcrEvent::Image(e) = handled("delete.json") else {
            panic!("not an image event")
        };
        assert_eq!(e.action, ImageActionKind::Delete);
    }

    #[test]
    fn archiving_is_skipped_with_a_reason() {
        match parse_event(&shared_event("archive-storage-class.json")) {
            Ok(ParsedEvent::Skipped(s)) => {
                assert_eq!(
                    s.id.as_deref(),
                    Some("4f5ec4d5-3a1c-4b8e-9d0c-1a2b3c4d5e04")
                );
                assert!(s.reason.contains("UPDATE_STORAGE_CLASS"), "{}", s.reason);
                assert!(s.reason.contains("ARCHIVE"), "{}", s.reason);
            }
            other => panic!("expected skip, got {other:?}"),
        }
    }

    #[test]
    fn a_restore_to_standard_is_tracked_like_a_push() {
        let text = String::from_utf8(shared_event("archive-storage-class.json")).expect("utf-8");
        let restore = text.replace(
            "\"target-storage-class\": \"ARCHIVE\"",
            "\"target-storage-class\": \"STANDARD\"",
        );
        assert_ne!(text, restore, "the sample names its target class");
        match parse_event(restore.as_bytes()) {
            Ok(ParsedEvent::Handled(EcrEvent::Image(e))) => {
                assert_eq!(e.action, ImageActionKind::Restore);
                assert_eq!(e.image.repository.as_str(), "team-a/web");
                assert_eq!(e.tag, None);
            }
            other => panic!("expected a restore, got {other:?}"),
        }
    }

    #[test]
    fn replication_success_names_source_and_destination() {
        let EcrEvent::Replication(e) = handled("replication-success.json") else {
            panic!("not a replication event")
        };
        assert_eq!(e.result, ReplicationResult::Succeeded);
        assert_eq!(e.destination.region.as_str(), "us-east-1");
        assert_eq!(e.destination.registry_id.as_str(), "111111111111");
        assert_eq!(e.source.registry.region.as_str(), "us-west-2");
        assert_eq!(e.tag.as_deref(), Some("v1.4.2"));
    }

    #[test]
    fn cross_account_replication_destination_is_the_emitting_account() {
        let EcrEvent::Replication(e) = handled("replication-success-cross-account.json") else {
            panic!("not a replication event")
        };
        assert_eq!(e.destination.registry_id.as_str(), "222222222222");
        assert_eq!(e.source.registry.registry_id.as_str(), "111111111111");
        assert!(
            e.destination
                .is_cross_account(&e.source.registry.registry_id)
        );
    }

    #[test]
    fn failed_and_failure_spellings_both_mean_failed() {
        let EcrEvent::Replication(e) = handled("replication-failed.json") else {
            panic!("not a replication event")
        };
        assert_eq!(e.result, ReplicationResult::Failed);
        let respelled = String::from_utf8(shared_event("replication-failed.json"))
            .expect("utf-8")
            .replace("\"FAILED\"", "\"FAILURE\"");
        let Ok(ParsedEvent::Handled(EcrEvent::Replication(e))) = parse_event(respelled.as_bytes())
        else {
            panic!("FAILURE spelling not accepted")
        };
        assert_eq!(e.result, ReplicationResult::Failed);
    }

    #[test]
    fn put_replication_configuration_carries_the_new_rules() {
        let EcrEvent::ConfigurationChange(c) =
            handled("cloudtrail-put-replication-configuration.json")
        else {
            panic!("not a configuration change")
        };
        assert_eq!(c.registry.region.as_str(), "us-west-2");
        assert_eq!(c.configuration.rules.len(), 1);
        assert_eq!(c.configuration.rules[0].destinations.len(), 2);
    }

    #[test]
    fn other_cloudtrail_calls_and_failed_calls_are_skipped() {
        let text = String::from_utf8(shared_event(
            "cloudtrail-put-replication-configuration.json",
        ))
        .expect("utf-8");
        let other = text.replace("\"PutReplicationConfiguration\"", "\"PutLifecyclePolicy\"");
        assert!(matches!(
            parse_event(other.as_bytes()),
            Ok(ParsedEvent::Skipped(_))
        ));
        let failed = text.replace(
            "\"eventType\": \"AwsApiCall\"",
            "\"eventType\": \"AwsApiCall\", \"errorCode\": \"AccessDenied\"",
        );
        let Ok(ParsedEvent::Skipped(s)) = parse_event(failed.as_bytes()) else {
            panic!("failed call not skipped")
        };
        assert!(s.reason.contains("AccessDenied"));
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let text = String::from_utf8(shared_event("push-tagged.json")).expect("utf-8");
        let extended = text.replace(
            "\"action-type\": \"PUSH\"",
            "\"action-type\": \"PUSH\", \"some-new-field\": {\"x\": [1, 2]}",
        );
        assert!(matches!(
            parse_event(extended.as_bytes()),
            Ok(ParsedEvent::Handled(EcrEvent::Image(_)))
        ));
    }

    #[test]
    fn unknown_detail_type_is_skipped_not_an_error() {
        let Ok(ParsedEvent::Skipped(s)) = parse_event(&bad_event("unknown-detail-type.json"))
        else {
            panic!("expected skip")
        };
        assert_eq!(s.id.as_deref(), Some("bad-4"));
        assert_eq!(s.detail_type.as_deref(), Some("ECR Image Scan"));
    }

    #[test]
    fn bad_digest_names_event_and_field() {
        let err = parse_event(&bad_event("bad-digest.json")).expect_err("must fail");
        assert_eq!(err.id.as_deref(), Some("bad-3"));
        assert_eq!(err.field, "detail.image-digest");
        assert!(err.to_string().contains("bad-3"), "{err}");
    }

    #[test]
    fn missing_detail_names_event_and_field() {
        let err = parse_event(&bad_event("missing-detail.json")).expect_err("must fail");
        assert_eq!(err.id.as_deref(), Some("bad-1"));
        assert_eq!(err.field, "detail");
    }

    #[test]
    fn truncated_json_is_an_error_without_id() {
        let err = parse_event(&bad_event("truncated.json")).expect_err("must fail");
        assert_eq!(err.id, None);
        assert_eq!(err.field, "<json>");
    }

    #[test]
    fn wrong_types_name_the_first_bad_field() {
        let err = parse_event(&bad_event("wrong-types.json")).expect_err("must fail");
        assert_eq!(err.id.as_deref(), Some("bad-2"));
        assert_eq!(err.field, "account");
    }

    #[test]
    fn missing_detail_field_is_named_with_its_path() {
        let text = String::from_utf8(shared_event("push-tagged.json")).expect("utf-8");
        let without = text.replace("\"repository-name\": \"team-a/web\",", "");
        let err = parse_event(without.as_bytes()).expect_err("must fail");
        assert_eq!(err.field, "detail.repository-name");
    }

    #[test]
    fn every_shared_event_parses_and_every_bad_one_is_rejected_or_skipped() {
        for name in crate::test_events::shared_event_names() {
            let parsed = parse_event(&shared_event(&name));
            assert!(parsed.is_ok(), "{name}: {parsed:?}");
        }
        for name in crate::test_events::bad_event_names() {
            let parsed = parse_event(&bad_event(&name));
            assert!(
                !matches!(parsed, Ok(ParsedEvent::Handled(_))),
                "{name} was accepted: {parsed:?}"
            );
        }
    }
}
