//! Reading a manifest from ECR as it is stored: `BatchGetImage` by digest, accepting the
//! Docker v2 manifest and manifest list and the OCI manifest and index
//! ([`ACCEPTED_MEDIA_TYPES`]), since without `acceptedMediaTypes` ECR may convert a manifest,
//! and a converted manifest has another digest. The bytes read are checked against the digest.
//! Used by the copy (what it puts) and the inventory (an index's children).

use aws_sdk_ecr::types::ImageIdentifier;
use replwatch_core::backfill::manifest::ManifestBytes;
use replwatch_core::model::{Destination, Digest, RepositoryName};
use replwatch_core::registry::RegistryError;
use sha2::{Digest as _, Sha256};

use crate::ecr_clients::{invalid, registry_error};

/// The manifest formats a copy reads as stored: Docker image manifest v2 schema 2, Docker
/// manifest list, OCI image manifest, OCI image index.
pub const ACCEPTED_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
];

/// A manifest as stored (`BatchGetImage` by digest, every media type accepted), its bytes
/// checked against `digest`: what a copy puts, and what the inventory reads an index's
/// children from.
pub async fn read_manifest(
    client: &aws_sdk_ecr::Client,
    registry: &Destination,
    repository: &RepositoryName,
    digest: &Digest,
) -> Result<ManifestBytes, RegistryError> {
    const OP: &str = "BatchGetImage";
    let resource = format!("{registry} {repository}@{digest}");
    let output = client
        .batch_get_image()
        .registry_id(registry.registry_id.as_str())
        .repository_name(repository.as_str())
        .image_ids(
            ImageIdentifier::builder()
                .image_digest(digest.as_str())
                .build(),
        )
        .set_accepted_media_types(Some(
            ACCEPTED_MEDIA_TYPES
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
        ))
        .send()
        .await
        .map_err(|e| registry_error(OP, resource.clone(), e))?;
    let Some(image) = output.images().first() else {
        let reason = output
            .failures()
            .first()
            .map(|f| {
                format!(
                    "{}: {}",
                    f.failure_code().map(|c| c.as_str()).unwrap_or("Failure"),
                    f.failure_reason().unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "no image returned".to_owned());
        return Err(invalid(OP, resource, reason));
    };
    let text = image
        .image_manifest()
        .ok_or_else(|| invalid(OP, resource.clone(), "no manifest returned".into()))?;
    let computed = format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())));
    if computed != digest.as_str() {
        return Err(invalid(
            OP,
            resource,
            format!(
                "the manifest returned has digest {computed}: ECR converted it (media type \
                 {})",
                image.image_manifest_media_type().unwrap_or("unknown")
            ),
        ));
    }
    let media_type = match image.image_manifest_media_type() {
        Some(media_type) => media_type.to_owned(),
        None => serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_owned))
            .ok_or_else(|| invalid(OP, resource.clone(), "no media type".into()))?,
    };
    Ok(ManifestBytes {
        media_type,
        bytes: text.as_bytes().to_vec(),
    })
}
