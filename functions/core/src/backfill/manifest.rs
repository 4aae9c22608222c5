//! What an image manifest references, read from the bytes ECR stores.
//!
//! Media types handled: Docker image manifest v2 schema 2 and manifest list, OCI image
//! manifest and image index (artifacts with `subject` or `artifactType` too). A manifest's
//! config and layers are blobs; an index's `manifests` are child images, which must exist in
//! the destination before the index is put.

use crate::model::Digest;

/// A manifest exactly as stored: the bytes are what the digest is computed over, so they are
/// never re-serialized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestBytes {
    pub media_type: String,
    pub bytes: Vec<u8>,
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
    /// Config and layers (foreign layers, which carry `urls`, are not uploaded to ECR and are
    /// left out).
    pub blobs: Vec<BlobReference>,
    /// Child manifests of an index, in index order.
    pub children: Vec<Digest>,
}
