//! The registry port: what replwatch asks ECR before it believes an event or alerts.
//!
//! Events are best effort, so every alert is confirmed with an authoritative answer:
//! `DescribeImageReplicationStatus` in the source (per-destination IN_PROGRESS, COMPLETE or
//! FAILED with a failure code), `DescribeImages` in the destination (is the pushed tag there?
//! which image holds it?) and in the source (does the source still put the tag on this
//! image?), and `DescribeRepositories` in the destination (are its tags immutable?). The
//! adapter on ECR lives in `replwatch-aws`; reads in another account go through that
//! account's read-only role.

use std::future::Future;

use crate::backfill::inventory::TagMutability;
use crate::model::{Destination, Digest, RepositoryName, SourceImage};
use crate::rules::ReplicationConfiguration;
use crate::tracking::TagArrival;

/// ECR's word on one destination of one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationReplication {
    InProgress,
    Complete,
    Failed { failure_code: Option<String> },
}

/// `DescribeImageReplicationStatus` for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageReplicationStatus {
    /// The source image exists; one entry per destination ECR is replicating it to.
    Found(Vec<(Destination, DestinationReplication)>),
    /// The source image (or its repository) no longer exists.
    SourceImageNotFound,
}

impl ImageReplicationStatus {
    /// ECR's status for `destination`, if ECR lists it.
    pub fn for_destination(&self, destination: &Destination) -> Option<&DestinationReplication> {
        match self {
            ImageReplicationStatus::Found(statuses) => statuses
                .iter()
                .find(|(d, _)| d == destination)
                .map(|(_, s)| s),
            ImageReplicationStatus::SourceImageNotFound => None,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} on {resource}: {message}")]
pub struct RegistryError {
    /// The ECR or STS operation that failed (`DescribeImages`, `AssumeRole`, ...).
    pub operation: &'static str,
    /// What it was called on (`eu-west-1/222222222222 team-a/web`).
    pub resource: String,
    pub message: String,
    /// Throttling, timeouts and 5xx: worth retrying later.
    pub retryable: bool,
}

/// Authoritative reads from ECR.
pub trait Registry: Send + Sync {
    /// `DescribeImageReplicationStatus` of `image` in its source registry.
    fn replication_status(
        &self,
        image: &SourceImage,
    ) -> impl Future<Output = Result<ImageReplicationStatus, RegistryError>> + Send;

    /// The tags `digest` carries in `repository` of `registry` (a destination, or the source
    /// itself), or `None` when the image (or the repository) is not there.
    fn image_tags(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> impl Future<Output = Result<Option<Vec<String>>, RegistryError>> + Send;

    /// The image `tag` names in `repository` of `registry`, or `None` when no image carries
    /// it (or the repository is not there).
    fn tagged_image(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        tag: &str,
    ) -> impl Future<Output = Result<Option<Digest>, RegistryError>> + Send;

    /// The tag mutability of `repository` in `registry`, or `None` when it is not there.
    fn tag_mutability(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
    ) -> impl Future<Output = Result<Option<TagMutability>, RegistryError>> + Send;

    /// The replication configuration of a source registry (`DescribeRegistry`).
    fn replication_configuration(
        &self,
        registry: &Destination,
    ) -> impl Future<Output = Result<ReplicationConfiguration, RegistryError>> + Send;
}

macro_rules! forward_registry {
    ($($pointer:ty),*) => {$(
        impl<T: Registry + ?Sized> Registry for $pointer {
            fn replication_status(
                &self,
                image: &SourceImage,
            ) -> impl Future<Output = Result<ImageReplicationStatus, RegistryError>> + Send {
                (**self).replication_status(image)
            }
            fn image_tags(
                &self,
                registry: &Destination,
                repository: &RepositoryName,
                digest: &Digest,
            ) -> impl Future<Output = Result<Option<Vec<String>>, RegistryError>> + Send {
                (**self).image_tags(registry, repository, digest)
            }
            fn tagged_image(
                &self,
                registry: &Destination,
                repository: &RepositoryName,
                tag: &str,
            ) -> impl Future<Output = Result<Option<Digest>, RegistryError>> + Send {
                (**self).tagged_image(registry, repository, tag)
            }
            fn tag_mutability(
                &self,
                registry: &Destination,
                repository: &RepositoryName,
            ) -> impl Future<Output = Result<Option<TagMutability>, RegistryError>> + Send {
                (**self).tag_mutability(registry, repository)
            }
            fn replication_configuration(
                &self,
                registry: &Destination,
            ) -> impl Future<Output = Result<ReplicationConfiguration, RegistryError>> + Send {
                (**self).replication_configuration(registry)
            }
        }
    )*};
}

// A registry shared by reference or behind an `Arc` is still a registry.
forward_registry!(&T, std::sync::Arc<T>);

/// What became of `tag` when `image` arrived in `destination`, as ECR would tell it: `None`
/// while the image is not (yet) visible there. What a replication event asks; an untagged
/// push has no tag to lose, so it is taken as present without a look (its deadline check
/// looks in the destination, as for every push).
pub async fn tag_arrival<R: Registry + ?Sized>(
    registry: &R,
    image: &SourceImage,
    destination: &Destination,
    tag: Option<&str>,
) -> Result<Option<TagArrival>, RegistryError> {
    let Some(tag) = tag else {
        return Ok(Some(TagArrival::Present));
    };
    let Some(tags) = registry
        .image_tags(destination, &image.repository, &image.digest)
        .await?
    else {
        return Ok(None);
    };
    if tags.iter().any(|t| t == tag) {
        return Ok(Some(TagArrival::Present));
    }
    missing_tag(registry, image, destination, tag)
        .await
        .map(Some)
}

/// Why `image` is in `destination` without `tag`.
///
/// ECR drops a tag on replication only when the destination repository's tags are immutable
/// (the tag not excluded) and the tag already names another image there; the image then
/// arrives untagged (ECR user guide, private image replication considerations). So a missing
/// tag is a loss only when all of these hold, and only while the source still puts the tag on
/// this image (otherwise the source moved it on, and so did replication). Anything else (a
/// later push in a mutable repository, completions out of order, a tag deleted by hand) is
/// [`TagArrival::Superseded`]: never an alert. Each read happens only when the ones before
/// left the question open.
pub async fn missing_tag<R: Registry + ?Sized>(
    registry: &R,
    image: &SourceImage,
    destination: &Destination,
    tag: &str,
) -> Result<TagArrival, RegistryError> {
    let immutable = registry
        .tag_mutability(destination, &image.repository)
        .await?
        .is_some_and(|m| m.is_immutable(tag));
    if !immutable {
        return Ok(TagArrival::Superseded);
    }
    let Some(held_by) = registry
        .tagged_image(destination, &image.repository, tag)
        .await?
        .filter(|holder| holder != &image.digest)
    else {
        return Ok(TagArrival::Superseded);
    };
    let in_source = registry
        .tagged_image(&image.registry, &image.repository, tag)
        .await?;
    Ok(if in_source.as_ref() == Some(&image.digest) {
        TagArrival::Lost { held_by }
    } else {
        TagArrival::Superseded
    })
}
