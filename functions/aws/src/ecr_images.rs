//! One image, looked up by tag or digest (`DescribeImages` with `imageIds`): what `replwatch
//! status` needs in the source (which digest a tag names, when it was pushed) and in each
//! destination (did it arrive, when, with which tags), and what the tracking registry asks
//! before it calls a tag lost (`crate::ecr`).

use aws_config::SdkConfig;
use aws_sdk_ecr::types::ImageIdentifier;
use replwatch_core::backfill::inventory::ImageRecord;
use replwatch_core::model::{AccountId, Destination, Digest, RepositoryName};
use replwatch_core::registry::RegistryError;

use crate::ecr_clients::{CrossAccountAccess, EcrClients, invalid, is_not_found, registry_error};
use crate::ecr_shapes::image_record;

/// How an image is named: `repository:tag` or `repository@sha256:…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageReference {
    Tag(String),
    Digest(Digest),
}

/// Image lookups on ECR.
pub struct EcrImages {
    clients: EcrClients,
}

impl EcrImages {
    /// `base` carries the caller's own credentials, which belong to `home_account`; other
    /// accounts are read through `cross_account`'s role.
    pub fn new(
        base: SdkConfig,
        home_account: AccountId,
        cross_account: Option<CrossAccountAccess>,
    ) -> Self {
        Self {
            clients: EcrClients::new(base, home_account, cross_account),
        }
    }

    /// Lookups through `clients` (a call cap, a retry mode of their own).
    pub fn with_clients(clients: EcrClients) -> Self {
        Self { clients }
    }

    /// The per-(account, Region) clients these lookups use, for a caller that shares them (and
    /// the roles they assumed).
    pub fn clients(&self) -> &EcrClients {
        &self.clients
    }

    /// The image `reference` names in `repository` of `registry`; `None` when the image or the
    /// repository is not there.
    pub async fn describe(
        &self,
        registry: &Destination,
        repository: &RepositoryName,
        reference: &ImageReference,
    ) -> Result<Option<ImageRecord>, RegistryError> {
        const OP: &str = "DescribeImages";
        let resource = format!("{registry} {repository}");
        let id = match reference {
            ImageReference::Tag(tag) => ImageIdentifier::builder().image_tag(tag).build(),
            ImageReference::Digest(digest) => ImageIdentifier::builder()
                .image_digest(digest.as_str())
                .build(),
        };
        let client = self.clients.for_registry(registry).await?;
        let answer = client
            .describe_images()
            .registry_id(registry.registry_id.as_str())
            .repository_name(repository.as_str())
            .image_ids(id)
            .send()
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(registry_error(OP, resource, e)),
        };
        answer
            .image_details()
            .first()
            .map(|detail| image_record(detail).map_err(|m| invalid(OP, resource.clone(), m)))
            .transpose()
    }
}
