//! The referrers of one image (`ListImageReferrers`, all pages): its signatures, SBOMs and
//! attestations as ECR lists them, for `replwatch status` to show whether they arrived with the
//! image. "The IAM principal invoking this operation must have the `ecr:BatchGetImage`
//! permission" (ECR API reference), so the reader role needs nothing more.

use aws_sdk_ecr::types::SubjectIdentifier;
use replwatch_core::model::{Destination, Digest, RepositoryName};
use replwatch_core::registry::RegistryError;

use crate::ecr_clients::{EcrClients, invalid, registry_error};

/// The digests of the active referrers of `digest` in `repository` of `registry`, sorted.
pub async fn referrers(
    clients: &EcrClients,
    registry: &Destination,
    repository: &RepositoryName,
    digest: &Digest,
) -> Result<Vec<Digest>, RegistryError> {
    const OP: &str = "ListImageReferrers";
    let resource = format!("{registry} {repository}@{digest}");
    let client = clients.for_registry(registry).await?;
    let subject = SubjectIdentifier::builder()
        .image_digest(digest.as_str())
        .build()
        .map_err(|e| invalid(OP, resource.clone(), e.to_string()))?;
    let mut out = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let page = client
            .list_image_referrers()
            .registry_id(registry.registry_id.as_str())
            .repository_name(repository.as_str())
            .subject_id(subject.clone())
            .set_next_token(next_token.take())
            .send()
            .await
            .map_err(|e| registry_error(OP, resource.clone(), e))?;
        for referrer in page.referrers() {
            out.push(
                Digest::parse(referrer.digest())
                    .map_err(|e| invalid(OP, resource.clone(), e.to_string()))?,
            );
        }
        match page.next_token() {
            Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
            _ => break,
        }
    }
    out.sort();
    Ok(out)
}
