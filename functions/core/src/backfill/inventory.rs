//! What a registry holds, as the ECR API describes it: repositories with the settings a
//! creation must reproduce, and images with their tags and push dates.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Destination, Digest, RepositoryName};
use crate::wildcard::{self, Wildcards};

/// `imageTagMutability` of a repository. ECR also has the `*_WITH_EXCLUSION` variants, whose
/// exclusion filters name tags that keep the opposite behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagMutability {
    Mutable,
    Immutable,
    /// Immutable except tags matching one of the wildcard filters.
    ImmutableWithExclusion {
        mutable_tags: Vec<String>,
    },
    /// Mutable except tags matching one of the wildcard filters.
    MutableWithExclusion {
        immutable_tags: Vec<String>,
    },
}

impl TagMutability {
    /// Whether `tag`, once set in a repository with this setting, can no longer be moved to
    /// another image. Exclusion filters are ECR wildcards (`*` matches any run of characters).
    pub fn is_immutable(&self, tag: &str) -> bool {
        match self {
            TagMutability::Mutable => false,
            TagMutability::Immutable => true,
            TagMutability::ImmutableWithExclusion { mutable_tags } => !mutable_tags
                .iter()
                .any(|f| wildcard::matches(f, tag, Wildcards::Star)),
            TagMutability::MutableWithExclusion { immutable_tags } => immutable_tags
                .iter()
                .any(|f| wildcard::matches(f, tag, Wildcards::Star)),
        }
    }
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
    /// Tags a creation gives the repository: a creation template's `resourceTags` (replication
    /// applies them; a source repository's own tags are not copied, as by replication).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_tags: Vec<ResourceTag>,
}

/// One repository tag (`Key`, `Value`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceTag {
    pub key: String,
    pub value: String,
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
    /// `subjectManifestDigest`: the image this one refers to, for an OCI 1.1 referrer (a
    /// signature, SBOM or attestation). Legacy cosign tags are read in [`crate::backfill::referrers`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
    /// `artifactMediaType`: what a referrer is (its artifact type or config media type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// `imageStatus` ARCHIVED or ACTIVATING: not pullable until restored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archived: bool,
    /// An index's child manifests, where the inventory read them (repositories that hold
    /// referrers: a referrer may name a child as its subject). Empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Digest>,
}

/// One repository and everything in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryInventory {
    pub name: RepositoryName,
    pub settings: RepositorySettings,
    pub images: Vec<ImageRecord>,
}

impl RepositoryInventory {
    /// The image with `digest`, if the repository holds it.
    pub fn image(&self, digest: &Digest) -> Option<&ImageRecord> {
        self.images.iter().find(|i| &i.digest == digest)
    }
}

/// Everything a backfill plan needs to know about one destination registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationInventory {
    pub destination: Destination,
    /// The destination's repositories (at least those the plan may write to) and their images.
    pub repositories: Vec<RepositoryInventory>,
    pub creation_templates: Vec<CreationTemplate>,
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

pub const ROOT_TEMPLATE_PREFIX: &str = "ROOT";
pub const APPLIED_FOR_REPLICATION: &str = "REPLICATION";

impl CreationTemplate {
    /// Whether ECR applies this template to a repository named `repository` that replication
    /// creates. ECR reads a prefix as a namespace (`prod` applies to `prod/...`, with an
    /// assumed `/`), and `ROOT` applies to every repository no other template covers.
    pub fn applies_to_replicated(&self, repository: &RepositoryName) -> bool {
        // A name is the one name under itself: the same namespace rule as for a rule prefix.
        self.covers_replicated_prefix(repository.as_str())
    }

    /// Whether ECR applies this template (or a more specific one: `ROOT` stands behind every
    /// name) to every repository replication creates under the rule filter `prefix` (a
    /// `PREFIX_MATCH` filter, any name that starts with it; empty for every repository). The
    /// namespace rule of [`Self::applies_to_replicated`]: `prod` covers `prod/` and
    /// `prod/web`, not `prod` (which also selects `production`).
    pub fn covers_replicated_prefix(&self, prefix: &str) -> bool {
        if !self
            .applied_for
            .iter()
            .any(|a| a == APPLIED_FOR_REPLICATION)
        {
            return false;
        }
        self.prefix == ROOT_TEMPLATE_PREFIX
            || prefix.starts_with(&format!("{}/", self.prefix.trim_end_matches('/')))
    }

    /// The template ECR applies to a repository named `repository` that replication creates in
    /// a registry with `templates`: the most specific of those that apply, `ROOT` last.
    pub fn for_replicated<'t>(
        templates: &'t [CreationTemplate],
        repository: &RepositoryName,
    ) -> Option<&'t CreationTemplate> {
        templates
            .iter()
            .filter(|t| t.applies_to_replicated(repository))
            .max_by_key(|t| t.specificity())
    }

    /// How specific the template is: among those that apply, the most specific one wins, and
    /// `ROOT` is the least specific of all.
    pub fn specificity(&self) -> usize {
        if self.prefix == ROOT_TEMPLATE_PREFIX {
            0
        } else {
            self.prefix.trim_end_matches('/').len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RepositorySettings {
        RepositorySettings {
            tag_mutability: TagMutability::Mutable,
            scan_on_push: false,
            encryption: Encryption {
                encryption_type: "AES256".into(),
                kms_key: None,
            },
            lifecycle_policy: None,
            repository_policy: None,
            resource_tags: Vec::new(),
        }
    }

    fn template(prefix: &str, applied_for: &[&str]) -> CreationTemplate {
        CreationTemplate {
            prefix: prefix.into(),
            applied_for: applied_for.iter().map(|a| (*a).to_owned()).collect(),
            settings: settings(),
        }
    }

    fn repo(name: &str) -> RepositoryName {
        RepositoryName::parse(name).expect("repository")
    }

    #[test]
    fn exclusion_filters_flip_mutability_for_matching_tags_only() {
        let mostly_immutable = TagMutability::ImmutableWithExclusion {
            mutable_tags: vec!["latest".into(), "dev-*".into()],
        };
        assert!(mostly_immutable.is_immutable("v1.2.3"));
        assert!(!mostly_immutable.is_immutable("latest"));
        assert!(!mostly_immutable.is_immutable("dev-42"));
        assert!(mostly_immutable.is_immutable("my-dev-42"));

        let mostly_mutable = TagMutability::MutableWithExclusion {
            immutable_tags: vec!["v*.*.*".into()],
        };
        assert!(mostly_mutable.is_immutable("v1.2.3"));
        assert!(!mostly_mutable.is_immutable("v1"));
        assert!(!mostly_mutable.is_immutable("latest"));

        assert!(TagMutability::Immutable.is_immutable("latest"));
        assert!(!TagMutability::Mutable.is_immutable("v1.2.3"));
    }

    #[test]
    fn templates_apply_to_their_namespace_for_replication_only() {
        let prod = template("prod", &["REPLICATION"]);
        assert!(prod.applies_to_replicated(&repo("prod/web")));
        assert!(prod.applies_to_replicated(&repo("prod/team/web")));
        assert!(!prod.applies_to_replicated(&repo("production/web")));
        assert!(!prod.applies_to_replicated(&repo("prod")));

        let root = template("ROOT", &["PULL_THROUGH_CACHE", "REPLICATION"]);
        assert!(root.applies_to_replicated(&repo("anything")));
        assert!(root.specificity() < prod.specificity());

        let cache_only = template("prod", &["PULL_THROUGH_CACHE"]);
        assert!(!cache_only.applies_to_replicated(&repo("prod/web")));
    }

    #[test]
    fn a_template_covers_a_rule_prefix_only_when_it_applies_to_every_name_the_rule_selects() {
        let prod = template("prod", &["REPLICATION"]);
        for covered in ["prod/", "prod/web", "prod/team/"] {
            assert!(prod.covers_replicated_prefix(covered), "{covered}");
        }
        // `prod` also selects `production/web`; `` selects everything.
        for uncovered in ["prod", "production/", "pro", ""] {
            assert!(!prod.covers_replicated_prefix(uncovered), "{uncovered}");
        }
        assert!(template("prod/", &["REPLICATION"]).covers_replicated_prefix("prod/web"));
        assert!(template("ROOT", &["REPLICATION"]).covers_replicated_prefix(""));
        assert!(!template("ROOT", &["CREATE_ON_PUSH"]).covers_replicated_prefix("prod/"));
        // Whatever `covers` says, `applies_to_replicated` agrees on each name under it.
        for name in ["prod/web", "prod/team/web"] {
            assert!(prod.applies_to_replicated(&repo(name)));
        }
    }
}
