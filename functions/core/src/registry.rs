//! The registry port: what replwatch asks ECR before it believes an event or alerts.
//!
//! Events are best effort, so every alert is confirmed with an authoritative answer:
//! `DescribeImageReplicationStatus` in the source (per-destination IN_PROGRESS, COMPLETE or
//! FAILED with a failure code), and `DescribeImages` in the destination (is the pushed tag
//! there?). The adapter on ECR lives in `replwatch-aws`; reads in another account go through
//! that account's read-only role.

use std::future::Future;

use crate::model::{Destination, Digest, RepositoryName, SourceImage};
use crate::rules::ReplicationConfiguration;

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

#[derive(Debug, thiserror::Error)]
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

    /// The tags `digest` carries in `repository` of `destination`, or `None` when the image
    /// (or the repository) is not there.
    fn tags_in_destination(
        &self,
        destination: &Destination,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> impl Future<Output = Result<Option<Vec<String>>, RegistryError>> + Send;

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
            fn tags_in_destination(
                &self,
                destination: &Destination,
                repository: &RepositoryName,
                digest: &Digest,
            ) -> impl Future<Output = Result<Option<Vec<String>>, RegistryError>> + Send {
                (**self).tags_in_destination(destination, repository, digest)
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
