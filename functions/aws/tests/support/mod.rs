//! What the ECR adapter tests share: SDK configurations per account on the local AWS
//! (`infra/local-aws/`: a 12-digit access key id acts as that account), images pushed the way
//! a registry client does it (blobs through the layer-upload API, then `PutImage`), and the
//! test bed's control endpoint.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecr::config::Credentials;
use aws_sdk_ecr::primitives::Blob;
use replwatch_core::model::{AccountId, Destination, Digest, RepositoryName};
use sha2::{Digest as _, Sha256};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

pub fn endpoint() -> String {
    replwatch_aws::local::endpoint_from_env()
        .unwrap_or_else(|e| panic!("{e}"))
        .trim_end_matches('/')
        .to_owned()
}

/// A twelve-digit account distinct for every call in this process and across processes, so
/// tests sharing one test bed never share a registry.
pub fn unique_account() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = u64::from(std::process::id()) % 100_000;
    format!("{:012}", 500_000_000_000 + pid * 10_000 + n)
}

pub fn destination(region: &str, account: &str) -> Destination {
    Destination::new(
        replwatch_core::model::Region::parse(region).expect("region"),
        AccountId::parse(account).expect("account"),
    )
}

pub fn repository(name: &str) -> RepositoryName {
    RepositoryName::parse(name).expect("repository name")
}

pub fn digest(text: &str) -> Digest {
    Digest::parse(text).expect("digest")
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// SDK configuration acting as `account`'s own credentials in `region`.
pub async fn config(account: &str, region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new(
            account,
            "local-secret",
            None,
            None,
            "local-aws",
        ))
        .load()
        .await
}

pub async fn ecr(account: &str, region: &str) -> aws_sdk_ecr::Client {
    aws_sdk_ecr::Client::new(&config(account, region).await)
}

pub async fn create_repository(ecr: &aws_sdk_ecr::Client, name: &str) {
    ecr.create_repository()
        .repository_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
}

/// Uploads `bytes` as a blob of `repository` in one part.
pub async fn upload_blob(ecr: &aws_sdk_ecr::Client, repository: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let upload = ecr
        .initiate_layer_upload()
        .repository_name(repository)
        .send()
        .await
        .expect("InitiateLayerUpload");
    let upload_id = upload.upload_id().expect("upload id");
    ecr.upload_layer_part()
        .repository_name(repository)
        .upload_id(upload_id)
        .part_first_byte(0)
        .part_last_byte(bytes.len() as i64 - 1)
        .layer_part_blob(Blob::new(bytes.to_vec()))
        .send()
        .await
        .expect("UploadLayerPart");
    ecr.complete_layer_upload()
        .repository_name(repository)
        .upload_id(upload_id)
        .layer_digests(&digest)
        .send()
        .await
        .expect("CompleteLayerUpload");
    digest
}

/// A pushed image.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub digest: String,
    pub manifest: String,
    pub media_type: String,
    /// (digest, bytes) of the blobs the manifest references.
    pub blobs: Vec<(String, Vec<u8>)>,
}

/// Pushes an OCI image made of a config and `layers` (their bytes), tagged or not.
pub async fn push_image_with_layers(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
    tag: Option<&str>,
    seed: &str,
    layers: &[Vec<u8>],
) -> Pushed {
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"seed": seed}},
        "rootfs": {"type": "layers", "diff_ids": []}
    })
    .to_string()
    .into_bytes();
    let config_digest = upload_blob(ecr, repository, &config).await;
    let mut blobs = vec![(config_digest.clone(), config.clone())];
    let mut descriptors = Vec::new();
    for layer in layers {
        let layer_digest = upload_blob(ecr, repository, layer).await;
        descriptors.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest, "size": layer.len()
        }));
        blobs.push((layer_digest, layer.clone()));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descriptors
    })
    .to_string();
    put(ecr, repository, tag, manifest, MANIFEST_MEDIA_TYPE, blobs).await
}

/// Pushes a small image whose content derives from `seed`.
pub async fn push_image(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
    tag: Option<&str>,
    seed: &str,
) -> Pushed {
    let layer = format!("layer for {seed}\n").repeat(64).into_bytes();
    push_image_with_layers(ecr, repository, tag, seed, &[layer]).await
}

/// Pushes an OCI index over images already pushed in `repository`.
pub async fn push_index(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
    tag: Option<&str>,
    children: &[&Pushed],
) -> Pushed {
    let manifests: Vec<_> = children
        .iter()
        .map(|c| {
            serde_json::json!({
                "mediaType": c.media_type, "digest": c.digest, "size": c.manifest.len(),
                "platform": {"architecture": "amd64", "os": "linux"}
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests
    })
    .to_string();
    put(ecr, repository, tag, manifest, INDEX_MEDIA_TYPE, Vec::new()).await
}

async fn put(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
    tag: Option<&str>,
    manifest: String,
    media_type: &str,
    blobs: Vec<(String, Vec<u8>)>,
) -> Pushed {
    let output = ecr
        .put_image()
        .repository_name(repository)
        .image_manifest(&manifest)
        .image_manifest_media_type(media_type)
        .set_image_tag(tag.map(str::to_owned))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutImage {repository}: {e:?}"));
    let digest = output
        .image()
        .and_then(|i| i.image_id())
        .and_then(|i| i.image_digest())
        .expect("PutImage digest")
        .to_owned();
    Pushed {
        digest,
        manifest,
        media_type: media_type.to_owned(),
        blobs,
    }
}

/// Bytes of a blob as stored in `repository` (through `GetDownloadUrlForLayer`).
pub async fn download_blob(ecr: &aws_sdk_ecr::Client, repository: &str, digest: &str) -> Vec<u8> {
    let url = ecr
        .get_download_url_for_layer()
        .repository_name(repository)
        .layer_digest(digest)
        .send()
        .await
        .expect("GetDownloadUrlForLayer");
    let response = reqwest::get(url.download_url().expect("url"))
        .await
        .expect("GET blob");
    assert!(response.status().is_success(), "{}", response.status());
    response.bytes().await.expect("blob bytes").to_vec()
}

/// A JSON call to the test bed's control endpoint.
pub async fn control(method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", endpoint());
    let request = match method {
        "GET" => client.get(&url),
        "DELETE" => client.delete(&url),
        _ => client.post(&url).body(body.to_string()),
    };
    let response = request.send().await.expect("control endpoint");
    let status = response.status();
    let text = response.text().await.expect("control answer");
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}
