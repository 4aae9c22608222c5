//! What an image manifest references, read from the bytes ECR stores.
//!
//! Media types handled: Docker image manifest v2 schema 2 and manifest list, OCI image
//! manifest and image index (artifacts with `subject` or `artifactType` too). A manifest's
//! config and layers are blobs; an index's `manifests` are child images, which must exist in
//! the destination before the index is put.
//!
//! Left out on purpose:
//! - foreign (Windows base) and non-distributable layers that carry `urls`: clients fetch them
//!   from those URLs, registries never hold them, so there is nothing to upload;
//! - the `subject` of an artifact (a signature, an SBOM): it points *from* the artifact *to*
//!   the image it describes, registries accept an artifact whose subject is absent, and the
//!   subject is an image of the repository in its own right, planned (or filtered out) on its
//!   own. Copying it as a dependency would drag in images the filters excluded.
//! - Docker schema 1 manifests: their digest is computed over the payload without its
//!   signatures, not over the stored bytes, so a digest-preserving copy cannot be verified;
//!   ECR has refused new pushes of them for years. They are reported, not copied.

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::model::{Digest, InvalidValue};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// A manifest exactly as stored: the bytes are what the digest is computed over, so they are
/// never re-serialized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestBytes {
    /// ECR's `imageManifestMediaType`; empty when ECR did not report one.
    pub media_type: String,
    pub bytes: Vec<u8>,
}

impl ManifestBytes {
    /// The digest of the bytes (`sha256:` and the hex of their SHA-256): a copy compares it
    /// with the digest it asked for before putting anything, so a wrong or corrupted read
    /// never lands in a destination under the asked-for name.
    pub fn digest(&self) -> Digest {
        Digest::from_sha256(&Sha256::digest(&self.bytes).into())
    }
}

/// One blob a manifest needs in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobReference {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// What a manifest references.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManifestReferences {
    /// The media type the manifest was read as: the stored one, else the bytes' own
    /// `mediaType`, else (OCI, where the field is optional) told by its shape. `PutImage`
    /// needs one.
    pub media_type: String,
    /// Config and layers, each digest once, in manifest order (foreign layers, which carry
    /// `urls`, are not uploaded to ECR and are left out).
    pub blobs: Vec<BlobReference>,
    /// Child manifests of an index, each once, in index order.
    pub children: Vec<Digest>,
    /// OCI 1.1 `subject`: the manifest this one refers to (a signature, SBOM, attestation).
    pub subject: Option<Digest>,
}

/// Why the bytes of a manifest could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not valid JSON of its media type {media_type}: {message}")]
    Malformed { media_type: String, message: String },
    #[error("media type {0:?} is not supported (Docker schema 2, OCI manifest or index only)")]
    UnsupportedMediaType(String),
    #[error("the manifest has no media type, and its shape names none")]
    UnknownMediaType,
    #[error("the manifest references an invalid digest: {0}")]
    InvalidDigest(#[from] InvalidValue),
}

/// The fields of every handled media type; unknown fields (annotations, platform,
/// `artifactType`) are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<u32>,
    media_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    urls: Vec<String>,
}

impl RawDescriptor {
    /// A layer clients fetch from its `urls` and registries never hold.
    fn is_foreign(&self) -> bool {
        !self.urls.is_empty()
            && (self.media_type.contains(".foreign.")
                || self.media_type.contains(".nondistributable."))
    }

    fn blob(&self) -> Result<BlobReference, ManifestError> {
        Ok(BlobReference {
            digest: Digest::parse(&self.digest)?,
            size: self.size,
            media_type: self.media_type.clone(),
        })
    }
}

impl ManifestReferences {
    /// Reads the references of `manifest`.
    pub fn parse(manifest: &ManifestBytes) -> Result<Self, ManifestError> {
        let raw: RawManifest =
            serde_json::from_slice(&manifest.bytes).map_err(|e| ManifestError::Malformed {
                media_type: manifest.media_type.clone(),
                message: e.to_string(),
            })?;
        let media_type = resolve_media_type(&manifest.media_type, &raw)?;
        let malformed = |message: &str| ManifestError::Malformed {
            media_type: media_type.clone(),
            message: message.to_owned(),
        };
        let mut references = ManifestReferences {
            media_type: media_type.clone(),
            subject: raw
                .subject
                .as_ref()
                .map(|s| Digest::parse(&s.digest))
                .transpose()?,
            ..Self::default()
        };
        match media_type.as_str() {
            DOCKER_MANIFEST | OCI_MANIFEST => {
                let config = raw
                    .config
                    .as_ref()
                    .ok_or_else(|| malformed("no `config`"))?;
                // Docker schema 2 requires `layers`; an OCI artifact may have none.
                let layers = match (&raw.layers, media_type.as_str()) {
                    (Some(layers), _) => layers.as_slice(),
                    (None, OCI_MANIFEST) => &[],
                    (None, _) => return Err(malformed("no `layers`")),
                };
                for descriptor in std::iter::once(config).chain(layers) {
                    if descriptor.is_foreign() {
                        continue;
                    }
                    let blob = descriptor.blob()?;
                    // Docker repeats the empty layer; each blob is checked and uploaded once.
                    if !references.blobs.iter().any(|b| b.digest == blob.digest) {
                        references.blobs.push(blob);
                    }
                }
            }
            DOCKER_MANIFEST_LIST | OCI_INDEX => {
                let children = raw
                    .manifests
                    .as_ref()
                    .ok_or_else(|| malformed("no `manifests`"))?;
                for child in children {
                    let digest = Digest::parse(&child.digest)?;
                    if !references.children.contains(&digest) {
                        references.children.push(digest);
                    }
                }
            }
            other => return Err(ManifestError::UnsupportedMediaType(other.to_owned())),
        }
        Ok(references)
    }

    /// Whether this is an index (manifest list): its children are images to copy first.
    pub fn is_index(&self) -> bool {
        is_index_media_type(&self.media_type)
    }

    /// The bytes of the blobs, as the manifest declares them.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// Whether `media_type` names an index (OCI image index or Docker manifest list).
pub fn is_index_media_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

fn resolve_media_type(stored: &str, raw: &RawManifest) -> Result<String, ManifestError> {
    let declared = raw.media_type.as_deref().filter(|m| !m.is_empty());
    let media_type = if !stored.is_empty() {
        stored.to_owned()
    } else if let Some(declared) = declared {
        declared.to_owned()
    } else if raw.schema_version == Some(1) {
        DOCKER_SCHEMA1[0].to_owned()
    } else if raw.manifests.is_some() {
        // `mediaType` is optional in OCI; Docker's formats always carry it.
        OCI_INDEX.to_owned()
    } else if raw.config.is_some() {
        OCI_MANIFEST.to_owned()
    } else {
        return Err(ManifestError::UnknownMediaType);
    };
    if DOCKER_SCHEMA1.contains(&media_type.as_str()) {
        return Err(ManifestError::UnsupportedMediaType(media_type));
    }
    Ok(media_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(fill: char) -> String {
        format!("sha256:{}", fill.to_string().repeat(64))
    }

    fn bytes(media_type: &str, json: &str) -> ManifestBytes {
        ManifestBytes {
            media_type: media_type.to_owned(),
            bytes: json.as_bytes().to_vec(),
        }
    }

    /// A `docker buildx` single-arch image, as ECR stores it.
    fn docker_image() -> String {
        format!(
            r#"{{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {{
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 1457,
      "digest": "{}"
   }},
   "layers": [
      {{
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 3623807,
         "digest": "{}"
      }},
      {{
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 32,
         "digest": "{}"
      }},
      {{
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 32,
         "digest": "{}"
      }}
   ]
}}"#,
            digest('c'),
            digest('1'),
            digest('e'),
            digest('e'),
        )
    }

    #[test]
    fn a_docker_image_needs_its_config_and_each_layer_once() {
        let refs =
            ManifestReferences::parse(&bytes(DOCKER_MANIFEST, &docker_image())).expect("parses");
        let blobs: Vec<(&str, u64)> = refs
            .blobs
            .iter()
            .map(|b| (b.digest.as_str(), b.size))
            .collect();
        assert_eq!(
            blobs,
            vec![
                (digest('c').as_str(), 1457),
                (digest('1').as_str(), 3_623_807),
                (digest('e').as_str(), 32),
            ]
        );
        assert_eq!(refs.blob_bytes(), 1457 + 3_623_807 + 32);
        assert!(refs.children.is_empty());
        assert!(!refs.is_index());
    }

    #[test]
    fn the_media_type_comes_from_the_bytes_when_ecr_reports_none() {
        let refs = ManifestReferences::parse(&bytes("", &docker_image())).expect("parses");
        assert_eq!(refs.media_type, DOCKER_MANIFEST);
        assert_eq!(refs.blobs.len(), 3);
    }

    #[test]
    fn an_oci_index_lists_its_children_including_attestations_and_no_blobs() {
        let json = format!(
            r#"{{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
    {{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "{}", "size": 1054,
      "platform": {{"architecture": "amd64", "os": "linux"}}}},
    {{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "{}", "size": 1054,
      "platform": {{"architecture": "arm64", "os": "linux", "variant": "v8"}}}},
    {{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "{}", "size": 840,
      "annotations": {{"vnd.docker.reference.digest": "{}",
                       "vnd.docker.reference.type": "attestation-manifest"}},
      "platform": {{"architecture": "unknown", "os": "unknown"}}}}
  ]
}}"#,
            digest('a'),
            digest('b'),
            digest('d'),
            digest('a'),
        );
        let refs = ManifestReferences::parse(&bytes(OCI_INDEX, &json)).expect("parses");
        assert!(refs.is_index());
        assert!(refs.blobs.is_empty());
        let children: Vec<&str> = refs.children.iter().map(Digest::as_str).collect();
        assert_eq!(
            children,
            vec![
                digest('a').as_str(),
                digest('b').as_str(),
                digest('d').as_str()
            ]
        );
    }

    #[test]
    fn a_docker_manifest_list_lists_its_children() {
        let json = format!(
            r#"{{"schemaVersion": 2,
  "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
  "manifests": [
    {{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
      "digest": "{}", "platform": {{"architecture": "amd64", "os": "linux"}}}},
    {{"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "size": 528,
      "digest": "{}", "platform": {{"architecture": "amd64", "os": "windows",
      "os.version": "10.0.17763.1817"}}}}
  ]}}"#,
            digest('a'),
            digest('b'),
        );
        let refs = ManifestReferences::parse(&bytes("", &json)).expect("parses");
        assert_eq!(refs.media_type, DOCKER_MANIFEST_LIST);
        assert_eq!(refs.children.len(), 2);
    }

    #[test]
    fn foreign_windows_layers_are_not_uploaded_but_the_others_are() {
        let json = format!(
            r#"{{"schemaVersion": 2,
  "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
  "config": {{"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1000,
              "digest": "{}"}},
  "layers": [
    {{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
      "size": 1654613376, "digest": "{}",
      "urls": ["https://mcr.microsoft.com/v2/windows/servercore/blobs/{}"]}},
    {{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1000,
      "digest": "{}"}}
  ]}}"#,
            digest('c'),
            digest('f'),
            digest('f'),
            digest('1'),
        );
        let refs = ManifestReferences::parse(&bytes(DOCKER_MANIFEST, &json)).expect("parses");
        let blobs: Vec<&str> = refs.blobs.iter().map(|b| b.digest.as_str()).collect();
        assert_eq!(blobs, vec![digest('c').as_str(), digest('1').as_str()]);
    }

    #[test]
    fn an_oci_artifact_needs_its_blobs_but_not_its_subject() {
        // A cosign-style signature: empty config, one layer, a subject naming the signed image.
        let json = format!(
            r#"{{"schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
  "config": {{"mediaType": "application/vnd.oci.empty.v1+json",
              "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
              "size": 2}},
  "layers": [{{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
               "digest": "{}", "size": 245}}],
  "subject": {{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "{}",
               "size": 1609}}
}}"#,
            digest('5'),
            digest('a'),
        );
        let refs = ManifestReferences::parse(&bytes(OCI_MANIFEST, &json)).expect("parses");
        let blobs: Vec<&str> = refs.blobs.iter().map(|b| b.digest.as_str()).collect();
        assert_eq!(
            blobs,
            vec![
                "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                digest('5').as_str()
            ]
        );
        assert!(refs.children.is_empty(), "the subject is not a child");
    }

    #[test]
    fn an_oci_manifest_without_media_type_is_told_by_its_shape() {
        let json = format!(
            r#"{{"schemaVersion": 2, "config": {{"mediaType":
  "application/vnd.oci.image.config.v1+json", "digest": "{}", "size": 7}}, "layers": []}}"#,
            digest('c')
        );
        let refs = ManifestReferences::parse(&bytes("", &json)).expect("parses");
        assert_eq!(refs.media_type, OCI_MANIFEST);
        assert_eq!(refs.blobs.len(), 1);
    }

    #[test]
    fn unreadable_manifests_are_refused_with_a_reason() {
        let schema1 = r#"{"schemaVersion": 1, "name": "web", "tag": "v1",
            "fsLayers": [{"blobSum": "sha256:aa"}], "signatures": []}"#;
        assert!(matches!(
            ManifestReferences::parse(&bytes("", schema1)),
            Err(ManifestError::UnsupportedMediaType(m)) if m.contains("v1")
        ));
        assert!(matches!(
            ManifestReferences::parse(&bytes(DOCKER_MANIFEST, "not json")),
            Err(ManifestError::Malformed { .. })
        ));
        let no_config = r#"{"schemaVersion": 2, "layers": []}"#;
        assert!(matches!(
            ManifestReferences::parse(&bytes(DOCKER_MANIFEST, no_config)),
            Err(ManifestError::Malformed { message, .. }) if message.contains("config")
        ));
        let bad_digest = r#"{"schemaVersion": 2, "config": {"mediaType": "x",
            "digest": "sha512:00", "size": 1}, "layers": []}"#;
        assert!(matches!(
            ManifestReferences::parse(&bytes(OCI_MANIFEST, bad_digest)),
            Err(ManifestError::InvalidDigest(_))
        ));
        assert_eq!(
            ManifestReferences::parse(&bytes("", r#"{"schemaVersion": 2}"#)),
            Err(ManifestError::UnknownMediaType)
        );
    }

    #[test]
    fn the_digest_is_the_sha256_of_the_stored_bytes() {
        // sha256 of the two bytes `{}`: the OCI empty descriptor's well-known digest.
        let empty = bytes("application/vnd.oci.empty.v1+json", "{}");
        assert_eq!(
            empty.digest().as_str(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        // A reformatted manifest is another manifest.
        let spaced = bytes("application/vnd.oci.empty.v1+json", "{ }");
        assert_ne!(spaced.digest(), empty.digest());
    }
}
