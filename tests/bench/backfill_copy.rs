//! Throughput of the backfill's copy against the local AWS: `execute_copies` over
//! `EcrCopyRegistry`, the code `replwatch backfill --apply` runs, on a generated set with heavy
//! layer sharing, and the same set copied one image at a time as a baseline.
//!
//! ```sh
//! eval "$(infra/local-aws/start)"
//! cargo bench -p replwatch-e2e --bench backfill_copy                  # defaults below
//! cargo bench -p replwatch-e2e --bench backfill_copy -- --concurrency 4,8,16 --part-mib 5
//! ```
//!
//! The set (defaults; every flag also reads `BENCH_<FLAG>`, e.g. `BENCH_IMAGES=200`):
//! - `--images 100` tagged images (the copy jobs) spread round-robin over `--repositories 4`;
//!   every `--index-every 10`th image is a multi-arch OCI index of an amd64 and an arm64
//!   manifest;
//! - amd64 base layers of `--base-mib 40,24,8` MiB: every amd64 manifest has the first two,
//!   three in four have the third; arm64 manifests share one base layer of `--arm-base-mib 24`;
//! - each manifest has its own config and one own layer of about `--own-kib 1536` KiB (0.5× to
//!   1.5×, so some span two parts).
//!
//! With the defaults that is 110 manifests and about 540 MiB of blobs a destination needs (a
//! blob counts once per repository: ECR keeps layers per repository, and a copy can only
//! upload). The blobs are uploaded straight into the source account (`InitiateLayerUpload`,
//! `UploadLayerPart`, `CompleteLayerUpload`) and the manifests put, in a few seconds.
//!
//! Then, each into a fresh destination account in another Region (repositories created first,
//! outside the timing):
//! - one copy per `--concurrency` value (default 8, the CLI's default): `execute_copies` with
//!   that concurrency (and the default three blobs at a time per image), in-memory blob
//!   claims, the adapter's part size `--part-mib 10`;
//! - the baseline (`--baseline sequential`, the default): the same `execute_copies` at
//!   concurrency 1, one blob at a time, through the same adapter, i.e. one image and one blob
//!   at a time, each blob checked with
//!   `BatchCheckLayerAvailability` first, so it uploads the same bytes; `--baseline naive` is a
//!   per-image copy that uploads every blob of every image without asking what the
//!   destination has (a refused `CompleteLayerUpload` still cost the bytes); `none` skips it.
//!
//! Bytes uploaded are read from the test bed's `GET /_localaws/calls`: `layer_uploads` (each
//! completed upload's size, plus the size of each upload refused as already there), checked
//! against `layer_parts` (every byte `UploadLayerPart` took). The ratio divides them by the
//! bytes the destination needed. Each run also reads the CPU time the local AWS server process
//! used (from `/proc`, when its pid file is found), which tells whether the server limits the
//! speed. The images arriving with their tags is checked after each run.
//!
//! `--latency-ms N` and `--stream-mib-per-s N` turn on the test bed's modelled network
//! (`/_localaws/network`, see `infra/local-aws/replwatch_localaws/network.py`) for the timed runs:
//! N ms added to every ECR call and blob download, and each request's bytes paced to N MiB/s.
//! Without it the loopback interface has no latency and both the copy and the baseline are
//! limited by the CPU of the test bed's single Python process, which is not what limits a copy
//! between AWS Regions.
//!
//! Output: a table on stdout and one JSON line starting `{"bench":"backfill_copy"`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ecr::types::ImageIdentifier;
use replwatch_aws::ecr_clients::CrossAccountAccess;
use replwatch_aws::ecr_copy::{CopyOptions as AdapterOptions, EcrCopyRegistry};
use replwatch_aws::tokio_sleeper::TokioSleeper;
use replwatch_core::SystemClock;
use replwatch_core::backfill::copy::DEFAULT_CLAIM_TTL;
use replwatch_core::backfill::execute::NoProgress;
use replwatch_core::backfill::manifest::{ManifestBytes, ManifestReferences};
use replwatch_core::backfill::port::CopyRegistry;
use replwatch_core::backfill::{
    CancelFlag, CopyContext, CopyJob, CopyOptions, InMemoryBlobClaims, execute_copies,
};
use replwatch_core::model::{AccountId, Destination, Digest, Region, RepositoryName};
use serde_json::{Value, json};
use testbed::bench::{cpu_seconds, generate_bytes, server_pid};
use testbed::{Error, INDEX_MEDIA_TYPE, LocalAws, MANIFEST_MEDIA_TYPE, sha256_digest};

const MIB: u64 = 1024 * 1024;
const SOURCE_REGION: &str = "us-west-2";
const DESTINATION_REGION: &str = "eu-west-1";
/// The role the copier assumes in the destination accounts (the test bed grants any).
const COPY_ROLE: &str = "replwatch-backfill";
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Blob uploads the generator runs at once.
const GENERATOR_CONCURRENCY: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Baseline {
    Sequential,
    Naive,
    None,
}

impl Baseline {
    fn name(self) -> &'static str {
        match self {
            Baseline::Sequential => "sequential",
            Baseline::Naive => "naive",
            Baseline::None => "none",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Baseline::Sequential => {
                "execute_copies at concurrency 1 through the same EcrCopyRegistry (one image and \
                 one blob at a time, blobs checked before upload)"
            }
            Baseline::Naive => {
                "naive per-image copy through the same EcrCopyRegistry: every blob of every image \
                 uploaded, no availability check"
            }
            Baseline::None => "no baseline",
        }
    }
}

#[derive(Debug, Clone)]
struct Settings {
    images: usize,
    repositories: usize,
    index_every: usize,
    base_mib: Vec<u64>,
    arm_base_mib: u64,
    own_kib: u64,
    concurrency: Vec<usize>,
    part_mib: u64,
    claim_poll_ms: Option<u64>,
    baseline: Baseline,
    seed: u64,
    /// The test bed's modelled network for the timed runs (`/_localaws/network`); 0 is off.
    latency_ms: u64,
    stream_mib_per_s: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            images: 100,
            repositories: 4,
            index_every: 10,
            base_mib: vec![40, 24, 8],
            arm_base_mib: 24,
            own_kib: 1536,
            concurrency: vec![8],
            part_mib: 10,
            claim_poll_ms: None,
            baseline: Baseline::Sequential,
            seed: 1,
            latency_ms: 0,
            stream_mib_per_s: 0,
        }
    }
}

const USAGE: &str = "cargo bench -p replwatch-e2e --bench backfill_copy -- [--images N] \
[--repositories N] [--index-every N (0: none)] [--base-mib A,B,..] [--arm-base-mib N] \
[--own-kib N] [--concurrency A,B,..] [--part-mib N] [--claim-poll-ms N] \
[--baseline sequential|naive|none] [--seed N] [--latency-ms N] [--stream-mib-per-s N]   (each flag also as env BENCH_<FLAG>, e.g. \
BENCH_IMAGES=200; needs AWS_ENDPOINT_URL of a started local AWS)";

fn parse_list(text: &str) -> Result<Vec<u64>, Error> {
    text.split(',')
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|e| format!("{v}: {e}").into())
        })
        .collect()
}

impl Settings {
    fn from_env_and_args() -> Result<Self, Error> {
        let pairs = testbed::bench::bench_flags(
            &[
                "images",
                "repositories",
                "index-every",
                "base-mib",
                "arm-base-mib",
                "own-kib",
                "concurrency",
                "part-mib",
                "claim-poll-ms",
                "baseline",
                "seed",
                "latency-ms",
                "stream-mib-per-s",
            ],
            USAGE,
        )?;
        let mut s = Settings::default();
        for (flag, value) in pairs {
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|e| format!("--{flag} {value}: {e}"))
            };
            match flag.as_str() {
                "images" => s.images = number()? as usize,
                "repositories" => s.repositories = number()? as usize,
                "index-every" => s.index_every = number()? as usize,
                "base-mib" => s.base_mib = parse_list(&value)?,
                "arm-base-mib" => s.arm_base_mib = number()?,
                "own-kib" => s.own_kib = number()?,
                "concurrency" => {
                    s.concurrency = parse_list(&value)?
                        .into_iter()
                        .map(|c| c as usize)
                        .collect()
                }
                "part-mib" => s.part_mib = number()?,
                "claim-poll-ms" => s.claim_poll_ms = Some(number()?),
                "seed" => s.seed = number()?,
                "latency-ms" => s.latency_ms = number()?,
                "stream-mib-per-s" => s.stream_mib_per_s = number()?,
                "baseline" => {
                    s.baseline = match value.as_str() {
                        "sequential" => Baseline::Sequential,
                        "naive" => Baseline::Naive,
                        "none" => Baseline::None,
                        other => return Err(format!("--baseline {other}\n{USAGE}").into()),
                    }
                }
                other => return Err(format!("unknown flag --{other}\n{USAGE}").into()),
            }
        }
        if s.images == 0 || s.repositories == 0 || s.concurrency.contains(&0) {
            return Err(
                format!("images, repositories and concurrency must be > 0\n{USAGE}").into(),
            );
        }
        if s.base_mib.len() < 2 {
            return Err("--base-mib needs at least two layers".into());
        }
        Ok(s)
    }
}

// ---------------------------------------------------------------------------------------------
// The generated set

/// A blob of the set, its bytes kept to upload into the source.
#[derive(Debug, Clone)]
struct BlobSpec {
    digest: String,
    bytes: Arc<Vec<u8>>,
}

impl BlobSpec {
    fn new(bytes: Vec<u8>) -> Self {
        Self {
            digest: sha256_digest(&bytes),
            bytes: Arc::new(bytes),
        }
    }

    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// One manifest of the set (a single-arch image, or a child of an index).
#[derive(Debug, Clone)]
struct ManifestSpec {
    digest: String,
    text: String,
    /// The blobs it references (config first).
    blobs: Vec<BlobSpec>,
}

fn manifest_of(config: &BlobSpec, layers: &[&BlobSpec]) -> String {
    json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config.digest, "size": config.size()},
        "layers": layers.iter().map(|l| json!({
            "mediaType": LAYER_MEDIA_TYPE, "digest": l.digest, "size": l.size()
        })).collect::<Vec<_>>(),
    })
    .to_string()
}

/// One tagged image: a copy job.
#[derive(Debug, Clone)]
struct ImageSpec {
    repository: String,
    tag: String,
    digest: String,
    media_type: &'static str,
    text: String,
    /// For an index, its children; for a single-arch image, itself.
    manifests: Vec<ManifestSpec>,
}

impl ImageSpec {
    fn is_index(&self) -> bool {
        self.media_type == INDEX_MEDIA_TYPE
    }
}

struct DataSet {
    images: Vec<ImageSpec>,
    repositories: Vec<String>,
}

impl DataSet {
    fn generate(s: &Settings) -> Self {
        let base: Vec<BlobSpec> = s
            .base_mib
            .iter()
            .enumerate()
            .map(|(i, mib)| {
                BlobSpec::new(generate_bytes(
                    s.seed * 1_000 + i as u64,
                    (mib * MIB) as usize,
                ))
            })
            .collect();
        let arm_base = BlobSpec::new(generate_bytes(
            s.seed * 1_000 + 999,
            (s.arm_base_mib * MIB) as usize,
        ));
        let repositories: Vec<String> = (0..s.repositories)
            .map(|r| format!("bench/app-{r}"))
            .collect();
        let mut serial = 0u64;
        let mut own = |arch: &str, image: usize| {
            serial += 1;
            let n = s.seed * 1_000_000 + serial;
            // 0.5x to 1.5x the nominal size, spread over the images.
            let factor = 50 + (serial * 37 % 101);
            let size = (s.own_kib * 1024 * factor / 100).max(1) as usize;
            let layer = BlobSpec::new(generate_bytes(n, size));
            let config = BlobSpec::new(
                json!({
                    "architecture": arch, "os": "linux",
                    "config": {"Labels": {"bench-image": image.to_string(), "serial": serial.to_string()}},
                    "rootfs": {"type": "layers", "diff_ids": []}
                })
                .to_string()
                .into_bytes(),
            );
            (config, layer)
        };
        let mut images = Vec::with_capacity(s.images);
        for i in 0..s.images {
            let repository = repositories[i % repositories.len()].clone();
            let tag = format!("v{i}");
            let amd64_layers = |i: usize| -> Vec<&BlobSpec> {
                base.iter()
                    .enumerate()
                    .filter(|(n, _)| *n < 2 || i % 4 != 3)
                    .map(|(_, b)| b)
                    .collect()
            };
            let single = |config: BlobSpec, layer: BlobSpec, shared: Vec<&BlobSpec>| {
                let mut layers: Vec<BlobSpec> = shared.into_iter().cloned().collect();
                layers.push(layer);
                let text = manifest_of(&config, &layers.iter().collect::<Vec<_>>());
                let mut blobs = vec![config];
                blobs.extend(layers);
                ManifestSpec {
                    digest: sha256_digest(text.as_bytes()),
                    text,
                    blobs,
                }
            };
            if s.index_every > 0 && i % s.index_every == s.index_every - 1 {
                let (c, l) = own("amd64", i);
                let amd64 = single(c, l, amd64_layers(i));
                let (c, l) = own("arm64", i);
                let arm64 = single(c, l, vec![&arm_base]);
                let text = json!({
                    "schemaVersion": 2,
                    "mediaType": INDEX_MEDIA_TYPE,
                    "manifests": [
                        {"mediaType": MANIFEST_MEDIA_TYPE, "digest": amd64.digest, "size": amd64.text.len(),
                         "platform": {"architecture": "amd64", "os": "linux"}},
                        {"mediaType": MANIFEST_MEDIA_TYPE, "digest": arm64.digest, "size": arm64.text.len(),
                         "platform": {"architecture": "arm64", "os": "linux"}},
                    ],
                })
                .to_string();
                images.push(ImageSpec {
                    repository,
                    tag,
                    digest: sha256_digest(text.as_bytes()),
                    media_type: INDEX_MEDIA_TYPE,
                    text,
                    manifests: vec![amd64, arm64],
                });
            } else {
                let (c, l) = own("amd64", i);
                let manifest = single(c, l, amd64_layers(i));
                images.push(ImageSpec {
                    repository,
                    tag,
                    digest: manifest.digest.clone(),
                    media_type: MANIFEST_MEDIA_TYPE,
                    text: manifest.text.clone(),
                    manifests: vec![manifest],
                });
            }
        }
        Self {
            images,
            repositories,
        }
    }

    /// Per repository, the distinct blobs its images need.
    fn blobs_per_repository(&self) -> BTreeMap<String, BTreeMap<String, BlobSpec>> {
        let mut out: BTreeMap<String, BTreeMap<String, BlobSpec>> = BTreeMap::new();
        for image in &self.images {
            let blobs = out.entry(image.repository.clone()).or_default();
            for manifest in &image.manifests {
                for blob in &manifest.blobs {
                    blobs
                        .entry(blob.digest.clone())
                        .or_insert_with(|| blob.clone());
                }
            }
        }
        out
    }

    /// Bytes of every blob of every image, shared ones counted each time.
    fn referenced_bytes(&self) -> u64 {
        self.images
            .iter()
            .flat_map(|i| &i.manifests)
            .flat_map(|m| &m.blobs)
            .map(BlobSpec::size)
            .sum()
    }

    fn manifests(&self) -> usize {
        self.images
            .iter()
            .map(|i| i.manifests.len() + usize::from(i.is_index()))
            .sum()
    }

    fn indexes(&self) -> usize {
        self.images.iter().filter(|i| i.is_index()).count()
    }
}

/// Puts the set into `account`'s registry in the source Region: repositories, blobs (in
/// parallel), then manifests (children before their index).
async fn push_set(local: &LocalAws, account: &str, set: &DataSet) -> Result<(), Error> {
    let ecr = local.ecr(account, SOURCE_REGION).await;
    for repository in &set.repositories {
        ecr.create_repository()
            .repository_name(repository)
            .send()
            .await?;
    }
    let semaphore = Arc::new(tokio::sync::Semaphore::new(GENERATOR_CONCURRENCY));
    let mut uploads = tokio::task::JoinSet::new();
    for (repository, blobs) in set.blobs_per_repository() {
        for blob in blobs.into_values() {
            let (local, ecr, repository, semaphore) = (
                local.clone(),
                ecr.clone(),
                repository.clone(),
                semaphore.clone(),
            );
            uploads.spawn(async move {
                let _permit = semaphore.acquire_owned().await?;
                local.upload_blob(&ecr, &repository, &blob.bytes).await
            });
        }
    }
    while let Some(done) = uploads.join_next().await {
        done??;
    }
    for image in &set.images {
        if image.is_index() {
            for child in &image.manifests {
                ecr.put_image()
                    .repository_name(&image.repository)
                    .image_manifest(&child.text)
                    .image_manifest_media_type(MANIFEST_MEDIA_TYPE)
                    .send()
                    .await?;
            }
        }
        ecr.put_image()
            .repository_name(&image.repository)
            .image_manifest(&image.text)
            .image_manifest_media_type(image.media_type)
            .image_tag(&image.tag)
            .send()
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measuring

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// What one run measured.
#[derive(Debug, Clone)]
struct RunResult {
    label: String,
    mode: &'static str,
    concurrency: usize,
    seconds: f64,
    images: usize,
    failed: usize,
    /// From the test bed: completed uploads' bytes plus refused uploads' sizes.
    uploaded_bytes: u64,
    /// From the test bed: every byte `UploadLayerPart` accepted.
    part_bytes: u64,
    completed_uploads: u64,
    refused_uploads: u64,
    /// Our own count (`ExecutionSummary::bytes_uploaded`).
    reported_bytes: u64,
    ecr_calls: u64,
    calls_by_operation: BTreeMap<String, u64>,
    server_cpu: Option<f64>,
    bench_cpu: Option<f64>,
    load_before: String,
    load_after: String,
}

impl RunResult {
    fn images_per_second(&self) -> f64 {
        self.images as f64 / self.seconds
    }

    fn mib_per_second(&self) -> f64 {
        self.uploaded_bytes as f64 / MIB as f64 / self.seconds
    }

    fn ratio(&self, unique: u64) -> f64 {
        self.uploaded_bytes as f64 / unique as f64
    }

    fn json(&self, unique: u64) -> Value {
        json!({
            "label": self.label,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 3),
            "images": self.images,
            "failed": self.failed,
            "images_per_s": round(self.images_per_second(), 2),
            "mib_per_s": round(self.mib_per_second(), 2),
            "uploaded_bytes": self.uploaded_bytes,
            "layer_part_bytes": self.part_bytes,
            "reported_bytes": self.reported_bytes,
            "completed_uploads": self.completed_uploads,
            "refused_uploads": self.refused_uploads,
            "ratio": round(self.ratio(unique), 4),
            "ecr_calls": self.ecr_calls,
            "calls": self.calls_by_operation,
            "server_cpu_s": self.server_cpu.map(|c| round(c, 2)),
            "server_cores": self.server_cpu.map(|c| round(c / self.seconds, 2)),
            "bench_cpu_s": self.bench_cpu.map(|c| round(c, 2)),
            "bench_cores": self.bench_cpu.map(|c| round(c / self.seconds, 2)),
            "load_before": self.load_before,
            "load_after": self.load_after,
        })
    }
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// What the test bed counted for one account in one Region.
struct Counters {
    /// Completed uploads' bytes plus the size of each upload refused as already there.
    uploaded_bytes: u64,
    /// Every byte `UploadLayerPart` accepted.
    part_bytes: u64,
    completed_uploads: u64,
    refused_uploads: u64,
    calls_by_operation: BTreeMap<String, u64>,
}

fn counters_of(
    local: &LocalAws,
    account: &str,
    region: &str,
    sizes: &BTreeMap<String, u64>,
) -> Result<Counters, Error> {
    let calls = local.control(
        "GET",
        &format!("/_localaws/calls?account={account}&region={region}"),
        None,
    )?;
    let (mut bytes, mut completed, mut refused) = (0u64, 0u64, 0u64);
    for upload in calls["layer_uploads"].as_array().into_iter().flatten() {
        let done = upload["completed"].as_u64().unwrap_or(0);
        let again = upload["already_exists"].as_u64().unwrap_or(0);
        let size = upload["layerDigest"]
            .as_str()
            .and_then(|d| sizes.get(d).copied())
            .or_else(|| (done > 0).then(|| upload["bytes"].as_u64().unwrap_or(0) / done))
            .unwrap_or(0);
        bytes += upload["bytes"].as_u64().unwrap_or(0) + again * size;
        completed += done;
        refused += again;
    }
    let parts: u64 = calls["layer_parts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["bytes"].as_u64().unwrap_or(0))
        .sum();
    let mut by_operation = BTreeMap::new();
    for call in calls["calls"].as_array().into_iter().flatten() {
        if let (Some(op), Some(count)) = (call["operation"].as_str(), call["count"].as_u64()) {
            *by_operation.entry(op.to_owned()).or_insert(0) += count;
        }
    }
    Ok(Counters {
        uploaded_bytes: bytes,
        part_bytes: parts,
        completed_uploads: completed,
        refused_uploads: refused,
        calls_by_operation: by_operation,
    })
}

/// Checks that every image of the set is in `destination` with its tag and digest, every
/// child of an index too, and that no blob was uploaded twice there.
async fn verify(
    local: &LocalAws,
    destination: &str,
    set: &DataSet,
    allow_refused: bool,
) -> Result<(), Error> {
    let ecr = local.ecr(destination, DESTINATION_REGION).await;
    for repository in &set.repositories {
        let wanted: Vec<&ImageSpec> = set
            .images
            .iter()
            .filter(|i| &i.repository == repository)
            .collect();
        let mut expected: BTreeMap<String, Option<String>> = BTreeMap::new();
        for image in &wanted {
            expected.insert(image.digest.clone(), Some(image.tag.clone()));
            if image.is_index() {
                for child in &image.manifests {
                    expected.entry(child.digest.clone()).or_insert(None);
                }
            }
        }
        let digests: Vec<&String> = expected.keys().collect();
        for chunk in digests.chunks(100) {
            let ids: Vec<ImageIdentifier> = chunk
                .iter()
                .map(|d| ImageIdentifier::builder().image_digest(d.as_str()).build())
                .collect();
            let found = ecr
                .describe_images()
                .repository_name(repository)
                .set_image_ids(Some(ids))
                .send()
                .await?;
            let details = found.image_details();
            for digest in chunk {
                let detail = details
                    .iter()
                    .find(|d| d.image_digest() == Some(digest.as_str()))
                    .ok_or_else(|| format!("{repository}@{digest} missing in {destination}"))?;
                if let Some(Some(tag)) = expected.get(*digest) {
                    if !detail.image_tags().contains(tag) {
                        return Err(format!(
                            "{repository}@{digest} lacks tag {tag} in {destination}"
                        )
                        .into());
                    }
                }
            }
        }
    }
    let calls = local.control(
        "GET",
        &format!("/_localaws/calls?account={destination}&region={DESTINATION_REGION}"),
        None,
    )?;
    for upload in calls["layer_uploads"].as_array().into_iter().flatten() {
        let completed = upload["completed"].as_u64().unwrap_or(0);
        let refused = upload["already_exists"].as_u64().unwrap_or(0);
        if completed != 1 || (!allow_refused && refused != 0) {
            return Err(format!("blob uploaded more than once: {upload}").into());
        }
    }
    let expected_blobs: usize = set.blobs_per_repository().values().map(|b| b.len()).sum();
    let uploads = calls["layer_uploads"].as_array().map_or(0, |u| u.len());
    if uploads != expected_blobs {
        return Err(format!("{uploads} distinct blobs uploaded, {expected_blobs} needed").into());
    }
    Ok(())
}

fn jobs_for(set: &DataSet, source: &Destination, destination: &Destination) -> Vec<CopyJob> {
    // In the order `plan_backfill` gives them: by repository, then push order.
    let mut jobs: Vec<(usize, CopyJob)> = set
        .images
        .iter()
        .enumerate()
        .map(|(n, image)| {
            let repository = RepositoryName::parse(&image.repository).expect("repository name");
            (
                n,
                CopyJob {
                    source: source.clone(),
                    source_repository: repository.clone(),
                    destination: destination.clone(),
                    destination_repository: repository,
                    digest: Digest::parse(&image.digest).expect("digest"),
                    tags: vec![image.tag.clone()],
                    subject: None,
                },
            )
        })
        .collect();
    jobs.sort_by(|(a_n, a), (b_n, b)| {
        (&a.source_repository, a_n).cmp(&(&b.source_repository, b_n))
    });
    jobs.into_iter().map(|(_, j)| j).collect()
}

/// The naive baseline: one image at a time, every blob of every image uploaded (through the
/// same adapter's `transfer_blob`) without asking what the destination has, children before
/// their index, then the tag. Returns the bytes our side counted.
async fn naive_copy(registry: &EcrCopyRegistry, jobs: &[CopyJob]) -> Result<u64, Error> {
    let mut bytes = 0;
    for job in jobs {
        let manifest = registry
            .manifest(&job.source, &job.source_repository, &job.digest)
            .await?;
        let references = ManifestReferences::parse(&manifest)?;
        for child in &references.children {
            let child_manifest = registry
                .manifest(&job.source, &job.source_repository, child)
                .await?;
            bytes += naive_put(registry, job, &child_manifest, child, None).await?;
        }
        let tag = job.tags.first().map(String::as_str);
        bytes += naive_put(registry, job, &manifest, &job.digest, tag).await?;
    }
    Ok(bytes)
}

/// Every blob of one manifest sent, then the manifest put.
async fn naive_put(
    registry: &EcrCopyRegistry,
    job: &CopyJob,
    manifest: &ManifestBytes,
    digest: &Digest,
    tag: Option<&str>,
) -> Result<u64, Error> {
    let mut bytes = 0;
    for blob in &ManifestReferences::parse(manifest)?.blobs {
        bytes += registry
            .transfer_blob(
                &job.source,
                &job.source_repository,
                &job.destination,
                &job.destination_repository,
                &blob.digest,
            )
            .await?;
    }
    registry
        .put_manifest(
            &job.destination,
            &job.destination_repository,
            manifest,
            digest,
            tag,
        )
        .await?;
    Ok(bytes)
}

/// Which copy a run makes.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Concurrent(usize),
    Baseline(Baseline),
}

#[allow(clippy::too_many_arguments)]
async fn run_once(
    local: &LocalAws,
    settings: &Settings,
    set: &DataSet,
    source_account: &str,
    mode: Mode,
    server: Option<&str>,
    sizes: &BTreeMap<String, u64>,
) -> Result<RunResult, Error> {
    let destination_account = testbed::unique_account();
    let dest_ecr = local.ecr(&destination_account, DESTINATION_REGION).await;
    for repository in &set.repositories {
        dest_ecr
            .create_repository()
            .repository_name(repository)
            .send()
            .await?;
    }
    // Source-side calls (BatchGetImage, GetDownloadUrlForLayer) are counted per account.
    local.control(
        "DELETE",
        &format!("/_localaws/calls?account={source_account}"),
        None,
    )?;
    local.control(
        "DELETE",
        &format!("/_localaws/calls?account={destination_account}"),
        None,
    )?;

    let source = Destination::new(
        Region::parse(SOURCE_REGION)?,
        AccountId::parse(source_account)?,
    );
    let destination = Destination::new(
        Region::parse(DESTINATION_REGION)?,
        AccountId::parse(&destination_account)?,
    );
    let registry = EcrCopyRegistry::with_options(
        local.config(source_account, SOURCE_REGION).await,
        AccountId::parse(source_account)?,
        Some(CrossAccountAccess {
            role_name: COPY_ROLE.into(),
            external_id: None,
            session_name: "replwatch-bench".into(),
        }),
        AdapterOptions {
            part_size: settings.part_mib * MIB,
            ..AdapterOptions::default()
        },
    )?;
    let claims = InMemoryBlobClaims::new(SystemClock, DEFAULT_CLAIM_TTL);
    let mut options = CopyOptions::default();
    if let Some(ms) = settings.claim_poll_ms {
        options.claim_poll = Duration::from_millis(ms);
    }
    if let Mode::Baseline(_) = mode {
        // The baseline moves one blob at a time too.
        options.blob_concurrency = 1;
    }
    let context = CopyContext {
        registry: &registry,
        claims: &claims,
        sleeper: &TokioSleeper,
        options,
    };
    let jobs = jobs_for(set, &source, &destination);
    let (label, mode_name, concurrency) = match mode {
        Mode::Concurrent(c) => (
            format!(
                "execute_copies, concurrency {c}x{}",
                context.options.blob_concurrency
            ),
            "concurrent",
            c,
        ),
        Mode::Baseline(Baseline::Sequential) => (
            "baseline: execute_copies, concurrency 1x1".to_owned(),
            "baseline-sequential",
            1,
        ),
        Mode::Baseline(_) => (
            "baseline: naive per-image copy".to_owned(),
            "baseline-naive",
            1,
        ),
    };
    eprintln!("backfill_copy: {label} -> {destination} ...");

    let load_before = load_average();
    let server_before = server.and_then(cpu_seconds);
    let bench_before = cpu_seconds("self");
    let started = Instant::now();
    let (reported_bytes, failed) = match mode {
        Mode::Baseline(Baseline::Naive) => (naive_copy(&registry, &jobs).await?, 0),
        Mode::Concurrent(_) | Mode::Baseline(_) => {
            let summary = execute_copies(
                &context,
                jobs.clone(),
                concurrency,
                &NoProgress,
                &CancelFlag::new(),
            )
            .await;
            for failure in &summary.failed {
                eprintln!("  failed: {}: {}", failure.job, failure.error);
            }
            (summary.bytes_uploaded, summary.failed.len())
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let bench_cpu = bench_before.and_then(|b| Some(cpu_seconds("self")? - b));
    let server_cpu = server_before.and_then(|b| Some(cpu_seconds(server?)? - b));
    let load_after = load_average();

    let counted = counters_of(local, &destination_account, DESTINATION_REGION, sizes)?;
    let mut by_op = counted.calls_by_operation;
    for (op, count) in counters_of(local, source_account, SOURCE_REGION, sizes)?.calls_by_operation
    {
        *by_op.entry(op).or_insert(0) += count;
    }
    if failed == 0 {
        verify(
            local,
            &destination_account,
            set,
            matches!(mode, Mode::Baseline(Baseline::Naive)),
        )
        .await?;
    }
    Ok(RunResult {
        label,
        mode: mode_name,
        concurrency,
        seconds,
        images: jobs.len(),
        failed,
        uploaded_bytes: counted.uploaded_bytes,
        part_bytes: counted.part_bytes,
        completed_uploads: counted.completed_uploads,
        refused_uploads: counted.refused_uploads,
        reported_bytes,
        ecr_calls: by_op.values().sum(),
        calls_by_operation: by_op,
        server_cpu,
        bench_cpu,
        load_before,
        load_after,
    })
}

/// The copies at each concurrency, then the baseline.
async fn timed_runs(
    local: &LocalAws,
    settings: &Settings,
    set: &DataSet,
    source_account: &str,
    server: Option<&str>,
    sizes: &BTreeMap<String, u64>,
) -> Result<(Vec<RunResult>, Option<RunResult>), Error> {
    let mut runs = Vec::new();
    for &concurrency in &settings.concurrency {
        let mode = Mode::Concurrent(concurrency);
        runs.push(run_once(local, settings, set, source_account, mode, server, sizes).await?);
    }
    let baseline = match settings.baseline {
        Baseline::None => None,
        kind => {
            let mode = Mode::Baseline(kind);
            Some(run_once(local, settings, set, source_account, mode, server, sizes).await?)
        }
    };
    Ok((runs, baseline))
}

fn network_description(settings: &Settings) -> String {
    match (settings.latency_ms, settings.stream_mib_per_s) {
        (0, 0) => "loopback network (no modelled latency)".to_owned(),
        (latency, 0) => format!("modelled network: {latency} ms per call"),
        (0, rate) => format!("modelled network: {rate} MiB/s per stream"),
        (latency, rate) => {
            format!("modelled network: {latency} ms per call, {rate} MiB/s per stream")
        }
    }
}

fn main() -> Result<(), Error> {
    let settings = Settings::from_env_and_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(settings))
}

async fn bench(settings: Settings) -> Result<(), Error> {
    let local = LocalAws::from_env()?;
    local
        .control("GET", "/_localaws/health", None)
        .map_err(|e| format!("local AWS at {} not answering: {e}", local.endpoint()))?;
    let server = server_pid(local.endpoint());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "backfill_copy: local AWS {} (server pid {}), {cores} cores, load {}",
        local.endpoint(),
        server.as_deref().unwrap_or("not found"),
        load_average()
    );

    let generated = Instant::now();
    let set = DataSet::generate(&settings);
    let needed = set.blobs_per_repository();
    // What a destination needs: each distinct blob once per repository.
    let unique: u64 = needed
        .values()
        .flat_map(|b| b.values())
        .map(BlobSpec::size)
        .sum();
    let blobs_needed: usize = needed.values().map(|b| b.len()).sum();
    let sizes: BTreeMap<String, u64> = needed
        .into_values()
        .flat_map(|b| b.into_values())
        .map(|b| (b.digest.clone(), b.size()))
        .collect();
    let referenced = set.referenced_bytes();
    let source_account = testbed::unique_account();
    push_set(&local, &source_account, &set).await?;
    let generation_seconds = generated.elapsed().as_secs_f64();
    eprintln!(
        "backfill_copy: set pushed into {source_account}/{SOURCE_REGION} in {generation_seconds:.1} s: \
         {} images ({} indexes, {} manifests), {} repositories, {} distinct blobs, \
         {:.1} MiB needed per destination ({:.1} MiB referenced)",
        set.images.len(),
        set.indexes(),
        set.manifests(),
        set.repositories.len(),
        sizes.len(),
        unique as f64 / MIB as f64,
        referenced as f64 / MIB as f64,
    );

    // Only the copies cross the modelled network: the set was pushed without it.
    let network = json!({
        "latency_ms": settings.latency_ms,
        "stream_mib_per_s": settings.stream_mib_per_s,
    });
    local.control("POST", "/_localaws/network", Some(&network))?;
    let result = timed_runs(
        &local,
        &settings,
        &set,
        &source_account,
        server.as_deref(),
        &sizes,
    )
    .await;
    local.control("DELETE", "/_localaws/network", None)?;
    let (runs, baseline) = result?;

    let best = runs
        .iter()
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .expect("at least one run");
    let speedup = baseline.as_ref().map(|b| b.seconds / best.seconds);
    let network_text = network_description(&settings);

    println!();
    println!(
        "backfill_copy: {} images ({} multi-arch indexes, {} manifests) in {} repositories, \
         {blobs_needed} blobs / {:.1} MiB needed per destination ({:.1} MiB if every image's blobs \
         were sent); {} -> another account in {}; part size {} MiB; claim poll {} ms; \
         {network_text}; {cores} cores ({}); local AWS {}",
        set.images.len(),
        set.indexes(),
        set.manifests(),
        set.repositories.len(),
        unique as f64 / MIB as f64,
        referenced as f64 / MIB as f64,
        SOURCE_REGION,
        DESTINATION_REGION,
        settings.part_mib,
        settings
            .claim_poll_ms
            .unwrap_or(CopyOptions::default().claim_poll.as_millis() as u64),
        cpu_model(),
        local.endpoint(),
    );
    println!();
    println!(
        "| {:<42} | {:>7} | {:>8} | {:>7} | {:>12} | {:>6} | {:>9} | {:>10} | {:>9} | {:>14} |",
        "run",
        "seconds",
        "images/s",
        "MiB/s",
        "uploaded MiB",
        "ratio",
        "ECR calls",
        "server CPU",
        "bench CPU",
        "load (1/5/15)"
    );
    println!(
        "|{:-<44}|{:->9}|{:->10}|{:->9}|{:->14}|{:->8}|{:->11}|{:->12}|{:->11}|{:->16}|",
        "", "", "", "", "", "", "", "", "", ""
    );
    for run in runs.iter().chain(baseline.iter()) {
        let cores = |cpu: Option<f64>| {
            cpu.map_or("?".to_owned(), |c| format!("{:.2} cores", c / run.seconds))
        };
        println!(
            "| {:<42} | {:>7.2} | {:>8.2} | {:>7.1} | {:>12.1} | {:>6.3} | {:>9} | {:>10} | {:>9} | {:>14} |",
            run.label,
            run.seconds,
            run.images_per_second(),
            run.mib_per_second(),
            run.uploaded_bytes as f64 / MIB as f64,
            run.ratio(unique),
            run.ecr_calls,
            cores(run.server_cpu),
            cores(run.bench_cpu),
            run.load_after,
        );
    }
    println!();
    if let Some(speedup) = speedup {
        println!(
            "speed-up of {} over the baseline ({}): {speedup:.2}x",
            best.label,
            settings.baseline.describe()
        );
    }
    for run in runs.iter().chain(baseline.iter()) {
        if run.failed > 0 {
            println!("{}: {} copies FAILED", run.label, run.failed);
        }
        if run.part_bytes != run.uploaded_bytes {
            println!(
                "{}: layer_parts counted {} bytes, layer_uploads {} (an upload abandoned midway?)",
                run.label, run.part_bytes, run.uploaded_bytes
            );
        }
    }
    let line = json!({
        "bench": "backfill_copy",
        "images": set.images.len(),
        "indexes": set.indexes(),
        "manifests": set.manifests(),
        "repositories": set.repositories.len(),
        "blobs_needed": blobs_needed,
        "unique_bytes": unique,
        "referenced_bytes": referenced,
        "part_mib": settings.part_mib,
        "claim_poll_ms": settings.claim_poll_ms.unwrap_or(CopyOptions::default().claim_poll.as_millis() as u64),
        "generation_s": round(generation_seconds, 2),
        "network": network,
        "cores": cores,
        "cpu": cpu_model(),
        "runs": runs.iter().map(|r| r.json(unique)).collect::<Vec<_>>(),
        "baseline": baseline.as_ref().map(|b| {
            let mut v = b.json(unique);
            v["kind"] = json!(settings.baseline.name());
            v["description"] = json!(settings.baseline.describe());
            v
        }),
        "best": {
            "concurrency": best.concurrency,
            "images_per_s": round(best.images_per_second(), 2),
            "mib_per_s": round(best.mib_per_second(), 2),
            "ratio": round(best.ratio(unique), 4),
        },
        "speedup": speedup.map(|s| round(s, 2)),
    });
    println!("{line}");
    let failed: usize = runs.iter().chain(baseline.iter()).map(|r| r.failed).sum();
    if failed > 0 {
        return Err(format!("{failed} copies failed").into());
    }
    Ok(())
}
