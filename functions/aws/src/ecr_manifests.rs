//! Reading a manifest from ECR as it is stored: `BatchGetImage` by digest, accepting the
//! Docker v2 manifest and manifest list and the OCI manifest and index
//! ([`ACCEPTED_MEDIA_TYPES`]), since without `acceptedMediaTypes` ECR may convert a manifest,
//! and a converted manifest has another digest. The bytes read are checked against the digest.
//! Used by the copy (what it puts, one at a time) and the inventory (an index's children, a
//! hundred a call).

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

/// Image ids per `BatchGetImage` call (the API's maximum).
pub const MANIFEST_BATCH: usize = 100;

/// A manifest as stored (`BatchGetImage` by digest, every media type accepted), its bytes
/// checked against `digest`: what a copy puts.
pub async fn read_manifest(
    client: &aws_sdk_ecr::Client,
    registry: &Destination,
    repository: &RepositoryName,
    digest: &Digest,
) -> Result<ManifestBytes, RegistryError> {
    let mut read =
        read_manifests(client, registry, repository, std::slice::from_ref(digest)).await?;
    read.pop().ok_or_else(|| {
        invalid(
            "BatchGetImage",
            format!("{registry} {repository}@{digest}"),
            "no image returned".into(),
        )
    })
}

/// The manifests of `digests`, in their order, as [`read_manifest`] reads one, up to
/// [`MANIFEST_BATCH`] a call: what the inventory reads an index's children from.
pub async fn read_manifests(
    client: &aws_sdk_ecr::Client,
    registry: &Destination,
    repository: &RepositoryName,
    digests: &[Digest],
) -> Result<Vec<ManifestBytes>, RegistryError> {
    const OP: &str = "BatchGetImage";
    let mut out = Vec::with_capacity(digests.len());
    for batch in digests.chunks(MANIFEST_BATCH) {
        let resource = format!("{registry} {repository}");
        let output = client
            .batch_get_image()
            .registry_id(registry.registry_id.as_str())
            .repository_name(repository.as_str())
            .set_image_ids(Some(
                batch
                    .iter()
                    .map(|d| ImageIdentifier::builder().image_digest(d.as_str()).build())
                    .collect(),
            ))
            .set_accepted_media_types(Some(
                ACCEPTED_MEDIA_TYPES
                    .iter()
                    .map(|t| (*t).to_owned())
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| registry_error(OP, resource.clone(), e))?;
        for digest in batch {
            let resource = format!("{registry} {repository}@{digest}");
            let found = output.images().iter().find(|image| {
                image.image_id().and_then(|i| i.image_digest()) == Some(digest.as_str())
            });
            let Some(image) = found else {
                let reason = output
                    .failures()
                    .iter()
                    .find(|f| f.image_id().and_then(|i| i.image_digest()) == Some(digest.as_str()))
                    .or_else(|| output.failures().first())
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
            out.push(stored_manifest(image, digest, &resource)?);
        }
    }
    Ok(out)
}

/// One image `BatchGetImage` returned, as the manifest stored under `digest`.
fn stored_manifest(
    image: &aws_sdk_ecr::types::Image,
    digest: &Digest,
    resource: &str,
) -> Result<ManifestBytes, RegistryError> {
    const OP: &str = "BatchGetImage";
    let text = image
        .image_manifest()
        .ok_or_else(|| invalid(OP, resource.to_owned(), "no manifest returned".into()))?;
    let computed = format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())));
    if computed != digest.as_str() {
        return Err(invalid(
            OP,
            resource.to_owned(),
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
            .ok_or_else(|| invalid(OP, resource.to_owned(), "no media type".into()))?,
    };
    Ok(ManifestBytes {
        media_type,
        bytes: text.as_bytes().to_vec(),
    })
}
