//! What a registry holds, as the ECR API describes it: repositories with the settings a
//! creation must reproduce, and images with their tags and push dates.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Digest, RepositoryName};

/// `imageTagMutability` of a repository. ECR also has the `*_WITH_EXCLUSION` variants, whose
/// exclusion filters name tags that keep the opposite behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagMutability {
    Mutable,
    Immutable,
    /// Immutable except tags matching one of the wildcard filters.
    ImmutableWithExclusion { mutable_tags: Vec<String> },
    /// Mutable except tags matching one of the wildcard filters.
    MutableWithExclusion { immutable_tags: Vec<String> },
}

/// `encryptionConfiguration` of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// `AES256`, `KMS` or `KMS_DSSE`.
    pub encryption_type: String,
    /// The key, for the KMS types; `None` means the AWS managed key `aws/ecr`.
    pub kms_key: Option<String>,
}

/// The repository settings ECR replication does not copy, and a backfill that creates a
/// destination repository sets from the source (or from a creation template).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositorySettings {
    pub tag_mutability: TagMutability,
    pub scan_on_push: bool,
    pub encryption: Encryption,
    /// The lifecycle policy text, if the repository has one.
    pub lifecycle_policy: Option<String>,
    /// The repository policy text, if the repository has one.
    pub repository_policy: Option<String>,
}

/// One image (one manifest digest) in a repository, as `DescribeImages` lists it. The child
/// manifests of an image index are images too (untagged, listed on their own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    pub digest: Digest,
    pub tags: Vec<String>,
    pub pushed_at: Option<DateTime<Utc>>,
    /// `imageManifestMediaType`.
    pub media_type: Option<String>,
    /// `imageSizeInBytes`: for an index, ECR reports the sum of its children.
    pub size_bytes: Option<u64>,
}

/// One repository and everything in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryInventory {
    pub name: RepositoryName,
    pub settings: RepositorySettings,
    pub images: Vec<ImageRecord>,
}

/// A repository creation template (`DescribeRepositoryCreationTemplates`), reduced to what a
/// backfill needs: which new repositories it applies to, and the settings it gives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationTemplate {
    /// The repository name prefix, or `ROOT` for every repository.
    pub prefix: String,
    /// `appliedFor`: `REPLICATION`, `PULL_THROUGH_CACHE`, `CREATE_ON_PUSH`.
    pub applied_for: Vec<String>,
    pub settings: RepositorySettings,
}
