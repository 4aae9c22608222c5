//! `replwatch backfill --apply --strategy copy` side by side with `skopeo sync` on the same
//! source, the same modelled network and the same local AWS: how long each takes, what it sent,
//! how many calls it made, and what arrived, referrers (signatures, SBOM, attestation) included.
//!
//! ```sh
//! eval "$(infra/local-aws/start)"
//! cargo build --profile bench -p replwatch-cli --bin replwatch   # or --replwatch-bin PATH
//! cargo bench -p replwatch-e2e --bench backfill_vs_skopeo -- --latency-ms 50 --stream-mib-per-s 25
//! ```
//!
//! The source (one fresh account, us-west-2), pushed with the ECR API before the timing:
//! - `shop/api`, `shop/web`, `shop/worker`: `--images-per-repository 3` tagged amd64 images
//!   each (`v1`, `v2`, ...), all on the same base layers of `--base-mib 16,8` MiB, each with its
//!   own config and a layer of about `--own-kib 768` KiB;
//! - `shop/multi`: an OCI index `1.0` of an amd64 image (the same base layers) and an arm64 one
//!   (its own base layer of `--arm-base-mib 8` MiB);
//! - `shop/api:v1` is signed and attested, as OCI 1.1 referrers (untagged manifests whose
//!   `subject` is `v1`): a Notation signature (`artifactType`
//!   `application/vnd.cncf.notary.signature`), an SPDX SBOM (`application/spdx+json`, as
//!   `oras attach` pushes it) and an in-toto attestation packed the OCI 1.0 way (its type in
//!   `config.mediaType`); plus a legacy cosign signature under the tag `sha256-<hex>.sig`
//!   (a simple-signing payload layer, no `subject`).
//!
//! Layers are real gzip streams (stored blocks over pseudo-random bytes), so neither tool has
//! a reason to recompress them: a changed digest would show as a digest that did not arrive.
//!
//! Then the modelled network is set (`/_localaws/network`, `--latency-ms`, `--stream-mib-per-s`;
//! every ECR API call, registry request and blob download waits a round trip and moves its
//! bytes at the stream rate) and the source is copied twice, each time into a fresh destination
//! account in eu-west-1:
//! - **replwatch**: the `replwatch` binary (`target/release/replwatch` beside this bench, built
//!   with `--profile bench`, or `--replwatch-bin`), `backfill --apply --strategy copy
//!   --destination eu-west-1/<account>` acting as the source account, reaching the destination
//!   through `--role-name replwatch-backfill` (STS `AssumeRole`), `--concurrency
//!   --concurrency` (8, its default); it creates the destination repositories itself;
//! - **skopeo**: `skopeo sync --all --preserve-digests --keep-going --src docker --dest docker`
//!   per repository, one after the other, through the test bed's registry API (`/v2/`, see
//!   `infra/local-aws/replwatch_localaws/registry.py`) with `AWS:<password>` from
//!   `GetAuthorizationToken` in each registry (fetched inside the timing); the destination
//!   repositories are created before the timing (a registry push creates none). The
//!   destination registry is addressed as `localhost:<port>`, the source as
//!   `127.0.0.1:<port>`: two hosts, as two ECR registries are, so skopeo does not take them
//!   for one registry and try cross-repository mounts between them.
//!
//! Counted by the test bed (`/_localaws/calls` of the source and destination accounts): ECR API
//! calls, registry requests, bytes uploaded into the destination (layer parts and chunks),
//! bytes downloaded from the source (blob downloads); the CPU the test bed's server used
//! (`/proc`, from its pid file); then every source manifest's digest
//! (and tag) is looked for in the destination. Nothing is assumed: a referrer shows as arrived
//! only if the destination repository has a manifest with its digest.
//!
//! Output: a table on stdout and one JSON line starting `{"bench":"backfill_vs_skopeo"`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};
use testbed::bench::{cpu_seconds, generate_bytes, server_pid};
use testbed::{
    Error, INDEX_MEDIA_TYPE, LocalAws, MANIFEST_MEDIA_TYPE, sha256_digest, unique_account,
};

const MIB: f64 = 1024.0 * 1024.0;
const SOURCE_REGION: &str = "us-west-2";
const DESTINATION_REGION: &str = "eu-west-1";
const COPY_ROLE: &str = "replwatch-backfill";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";
const NOTATION: &str = "application/vnd.cncf.notary.signature";
const SPDX: &str = "application/spdx+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const COSIGN_PAYLOAD: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SINGLE_ARCH_REPOSITORIES: [&str; 3] = ["shop/api", "shop/web", "shop/worker"];
const MULTI_ARCH_REPOSITORY: &str = "shop/multi";
const SIGNED_REPOSITORY: &str = "shop/api";

#[derive(Debug, Clone)]
struct Settings {
    images_per_repository: usize,
    base_mib: Vec<u64>,
    arm_base_mib: u64,
    own_kib: u64,
    concurrency: usize,
    latency_ms: u64,
    stream_mib_per_s: u64,
    replwatch_bin: Option<PathBuf>,
    skopeo: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            images_per_repository: 3,
            base_mib: vec![16, 8],
            arm_base_mib: 8,
            own_kib: 768,
            concurrency: 8,
            latency_ms: 50,
            stream_mib_per_s: 25,
            replwatch_bin: None,
            skopeo: "skopeo".into(),
        }
    }
}

const USAGE: &str = "cargo bench -p replwatch-e2e --bench backfill_vs_skopeo -- \
[--images-per-repository N] [--base-mib A,B,..] [--arm-base-mib N] [--own-kib N] \
[--concurrency N] [--latency-ms N] [--stream-mib-per-s N] [--replwatch-bin PATH] \
[--skopeo PATH]   (each flag also as env BENCH_<FLAG>; needs AWS_ENDPOINT_URL of a started \
local AWS, skopeo on PATH and the replwatch binary: cargo build --profile bench -p \
replwatch-cli --bin replwatch)";

const FLAGS: [&str; 9] = [
    "images-per-repository",
    "base-mib",
    "arm-base-mib",
    "own-kib",
    "concurrency",
    "latency-ms",
    "stream-mib-per-s",
    "replwatch-bin",
    "skopeo",
];

impl Settings {
    fn from_env_and_args() -> Result<Self, Error> {
        let pairs = testbed::bench::bench_flags(&FLAGS, USAGE)?;
        let mut s = Settings::default();
        for (flag, value) in pairs {
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|e| format!("--{flag} {value}: {e}"))
            };
            match flag.as_str() {
                "images-per-repository" => s.images_per_repository = number()? as usize,
                "base-mib" => {
                    s.base_mib = value
                        .split(',')
                        .map(|v| v.trim().parse::<u64>().map_err(|e| format!("{v}: {e}")))
                        .collect::<Result<_, _>>()?
                }
                "arm-base-mib" => s.arm_base_mib = number()?,
                "own-kib" => s.own_kib = number()?,
                "concurrency" => s.concurrency = number()? as usize,
                "latency-ms" => s.latency_ms = number()?,
                "stream-mib-per-s" => s.stream_mib_per_s = number()?,
                "replwatch-bin" => s.replwatch_bin = Some(PathBuf::from(value)),
                "skopeo" => s.skopeo = value,
                other => return Err(format!("unknown flag --{other}\n{USAGE}").into()),
            }
        }
        if s.images_per_repository == 0 || s.concurrency == 0 || s.base_mib.is_empty() {
            return Err(format!(
                "images per repository, concurrency and base layers must be > 0\n{USAGE}"
            )
            .into());
        }
        Ok(s)
    }
}

// ---------------------------------------------------------------------------------------------
// The source set

fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (n, entry) in table.iter_mut().enumerate() {
            let mut c = n as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *entry = c;
        }
        table
    });
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc = table[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// `payload` as a valid gzip stream of stored (uncompressed) deflate blocks (RFC 1951 3.2.4,
/// RFC 1952): what a layer's media type promises, so no client recompresses it.
fn gzip_stored(payload: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 65_535;
    let mut out = Vec::with_capacity(payload.len() + payload.len() / BLOCK * 5 + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    let blocks: Vec<&[u8]> = if payload.is_empty() {
        vec![payload]
    } else {
        payload.chunks(BLOCK).collect()
    };
    let last = blocks.len() - 1;
    for (n, block) in blocks.into_iter().enumerate() {
        out.push(u8::from(n == last));
        let len = block.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out
}

/// What a manifest of the set is, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Image,
    Index,
    IndexChild,
    NotationSignature,
    Sbom,
    Attestation,
    CosignTag,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Index => "multi-arch index",
            Kind::IndexChild => "index child",
            Kind::NotationSignature => "Notation signature (referrer)",
            Kind::Sbom => "SPDX SBOM (referrer)",
            Kind::Attestation => "in-toto attestation (referrer)",
            Kind::CosignTag => "cosign signature (sha256-<hex>.sig tag)",
        }
    }

    fn is_referrer(self) -> bool {
        matches!(
            self,
            Kind::NotationSignature | Kind::Sbom | Kind::Attestation | Kind::CosignTag
        )
    }
}

#[derive(Debug, Clone)]
struct Manifest {
    repository: &'static str,
    tag: Option<String>,
    digest: String,
    text: String,
    media_type: &'static str,
    kind: Kind,
    /// (digest, bytes) of the blobs it references, config first.
    blobs: Vec<(String, std::sync::Arc<Vec<u8>>)>,
}

type Blob = (String, std::sync::Arc<Vec<u8>>);

fn blob(bytes: Vec<u8>) -> Blob {
    (sha256_digest(&bytes), std::sync::Arc::new(bytes))
}

fn descriptor(media_type: &str, blob: &Blob) -> Value {
    json!({"mediaType": media_type, "digest": blob.0, "size": blob.1.len()})
}

fn image_manifest(
    repository: &'static str,
    tag: Option<String>,
    kind: Kind,
    config: Blob,
    layers: Vec<Blob>,
) -> Manifest {
    let text = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": descriptor(CONFIG, &config),
        "layers": layers.iter().map(|l| descriptor(LAYER, l)).collect::<Vec<_>>(),
    })
    .to_string();
    let mut blobs = vec![config];
    blobs.extend(layers);
    Manifest {
        repository,
        tag,
        digest: sha256_digest(text.as_bytes()),
        text,
        media_type: MANIFEST_MEDIA_TYPE,
        kind,
        blobs,
    }
}

fn config_blob(architecture: &str, seed: &str, salt: u64) -> Blob {
    blob(
        json!({"architecture": architecture, "os": "linux",
               "config": {"Labels": {"seed": seed, "run": salt}},
               "rootfs": {"type": "layers", "diff_ids": []}})
        .to_string()
        .into_bytes(),
    )
}

/// An OCI 1.1 artifact manifest whose `subject` is `subject`.
fn referrer(
    subject: &Manifest,
    kind: Kind,
    artifact_type: Option<&str>,
    config: (&str, Blob),
    layer: (&str, Blob),
    annotations: Value,
) -> Manifest {
    let mut doc = json!({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE});
    if let Some(artifact_type) = artifact_type {
        doc["artifactType"] = json!(artifact_type);
    }
    doc["config"] = descriptor(config.0, &config.1);
    doc["layers"] = json!([descriptor(layer.0, &layer.1)]);
    doc["subject"] = json!({"mediaType": subject.media_type, "digest": subject.digest,
                            "size": subject.text.len()});
    doc["annotations"] = annotations;
    let text = doc.to_string();
    Manifest {
        repository: subject.repository,
        tag: None,
        digest: sha256_digest(text.as_bytes()),
        text,
        media_type: MANIFEST_MEDIA_TYPE,
        kind,
        blobs: vec![config.1, layer.1],
    }
}

/// Every manifest of the source, in push order (children before their index, subjects
/// before their referrers). `salt` makes every run's content new, so that no client finds
/// blobs it saw in an earlier run (skopeo keeps a blob-info cache across runs).
fn generate(settings: &Settings, salt: u64) -> Vec<Manifest> {
    let mut seed = salt.wrapping_mul(1_000_003);
    let mut next = |len: usize| {
        seed += 1;
        gzip_stored(&generate_bytes(seed, len))
    };
    let mib = |n: u64| (n * 1024 * 1024) as usize;
    let bases: Vec<Blob> = settings
        .base_mib
        .iter()
        .map(|&m| blob(next(mib(m))))
        .collect();
    let arm_base = blob(next(mib(settings.arm_base_mib)));
    let own = (settings.own_kib * 1024) as usize;
    let mut out = Vec::new();
    for repository in SINGLE_ARCH_REPOSITORIES {
        for n in 1..=settings.images_per_repository {
            let tag = format!("v{n}");
            let mut layers = bases.clone();
            layers.push(blob(next(own / 2 + own * (n % 3) / 2)));
            out.push(image_manifest(
                repository,
                Some(tag.clone()),
                Kind::Image,
                config_blob("amd64", &format!("{repository}:{tag}"), salt),
                layers,
            ));
        }
    }
    let mut amd64_layers = bases.clone();
    amd64_layers.push(blob(next(own)));
    let amd64 = image_manifest(
        MULTI_ARCH_REPOSITORY,
        None,
        Kind::IndexChild,
        config_blob("amd64", "multi", salt),
        amd64_layers,
    );
    let arm64 = image_manifest(
        MULTI_ARCH_REPOSITORY,
        None,
        Kind::IndexChild,
        config_blob("arm64", "multi", salt),
        vec![arm_base, blob(next(own))],
    );
    let children: Vec<Value> = [(&amd64, "amd64"), (&arm64, "arm64")]
        .iter()
        .map(|(m, arch)| {
            json!({"mediaType": m.media_type, "digest": m.digest, "size": m.text.len(),
                   "platform": {"os": "linux", "architecture": arch}})
        })
        .collect();
    let index = json!({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": children})
        .to_string();
    out.push(amd64);
    out.push(arm64);
    out.push(Manifest {
        repository: MULTI_ARCH_REPOSITORY,
        tag: Some("1.0".into()),
        digest: sha256_digest(index.as_bytes()),
        text: index,
        media_type: INDEX_MEDIA_TYPE,
        kind: Kind::Index,
        blobs: Vec::new(),
    });

    let subject = out
        .iter()
        .find(|m| m.repository == SIGNED_REPOSITORY && m.tag.as_deref() == Some("v1"))
        .cloned()
        .expect("the signed image is generated");
    let empty = blob(b"{}".to_vec());
    let created = json!({"org.opencontainers.image.created": "2026-01-02T03:04:05Z"});
    out.push(referrer(
        &subject,
        Kind::NotationSignature,
        Some(NOTATION),
        (EMPTY, empty.clone()),
        (
            "application/jose+json",
            blob(generate_bytes(salt ^ 90, 1400)),
        ),
        json!({"io.cncf.notary.x509chain.thumbprint#S256": "[\"0f1e2d3c\"]",
               "org.opencontainers.image.created": "2026-01-02T03:04:05Z"}),
    ));
    let spdx = json!({"spdxVersion": "SPDX-2.3", "name": format!("shop/api:v1 run {salt}"),
                      "packages": (0..200).map(|n| json!({"name": format!("pkg-{n}"), "versionInfo": "1.0"})).collect::<Vec<_>>()});
    out.push(referrer(
        &subject,
        Kind::Sbom,
        Some(SPDX),
        (EMPTY, empty),
        (SPDX, blob(spdx.to_string().into_bytes())),
        created.clone(),
    ));
    let statement = json!({"_type": "https://in-toto.io/Statement/v1",
                           "subject": [{"name": "shop/api", "digest": {"sha256": subject.digest.trim_start_matches("sha256:")}}],
                           "predicateType": "https://slsa.dev/provenance/v1",
                           "predicate": {"run": salt}});
    let statement = blob(statement.to_string().into_bytes());
    out.push(referrer(
        &subject,
        Kind::Attestation,
        None,
        (IN_TOTO, statement.clone()),
        (IN_TOTO, statement),
        json!({"in-toto.io/predicate-type": "https://slsa.dev/provenance/v1"}),
    ));
    // cosign before OCI 1.1: the signature is an image tagged sha256-<hex>.sig, no subject.
    let payload = blob(
        json!({"critical": {"identity": {"docker-reference": "shop/api"},
                            "image": {"docker-manifest-digest": subject.digest},
                            "type": "cosign container image signature"}, "optional": null})
        .to_string()
        .into_bytes(),
    );
    let cosign_config = blob(
        json!({"architecture": "", "os": "", "config": {"Labels": {"run": salt}},
               "rootfs": {"type": "layers", "diff_ids": [payload.0]}})
        .to_string()
        .into_bytes(),
    );
    let text = json!({
        "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
        "config": descriptor(CONFIG, &cosign_config),
        "layers": [{"mediaType": COSIGN_PAYLOAD, "digest": payload.0, "size": payload.1.len(),
                    "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQDexample"}}]
    })
    .to_string();
    out.push(Manifest {
        repository: SIGNED_REPOSITORY,
        tag: Some(format!("{}.sig", subject.digest.replacen(':', "-", 1))),
        digest: sha256_digest(text.as_bytes()),
        text,
        media_type: MANIFEST_MEDIA_TYPE,
        kind: Kind::CosignTag,
        blobs: vec![cosign_config, payload],
    });
    out
}

fn repositories(set: &[Manifest]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = set.iter().map(|m| m.repository).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Pushes the set into `account`'s source registry with the ECR API (no network model).
async fn push(local: &LocalAws, account: &str, set: &[Manifest]) -> Result<(), Error> {
    let ecr = local.ecr(account, SOURCE_REGION).await;
    for repository in repositories(set) {
        ecr.create_repository()
            .repository_name(repository)
            .send()
            .await?;
    }
    let mut uploaded: BTreeSet<(&str, String)> = BTreeSet::new();
    for manifest in set {
        for (digest, bytes) in &manifest.blobs {
            if uploaded.insert((manifest.repository, digest.clone())) {
                local.upload_blob(&ecr, manifest.repository, bytes).await?;
            }
        }
        let mut put = ecr
            .put_image()
            .repository_name(manifest.repository)
            .image_manifest(&manifest.text)
            .image_manifest_media_type(manifest.media_type)
            .image_digest(&manifest.digest);
        if let Some(tag) = &manifest.tag {
            put = put.image_tag(tag);
        }
        put.send().await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measuring

#[derive(Debug, Default, Clone)]
struct Counters {
    api_calls: u64,
    registry_requests: u64,
    uploaded_bytes: u64,
    downloaded_bytes: u64,
    by_operation: BTreeMap<String, u64>,
}

fn reset_counters(local: &LocalAws, accounts: &[&str]) -> Result<(), Error> {
    for account in accounts {
        local.control(
            "DELETE",
            &format!("/_localaws/calls?account={account}"),
            None,
        )?;
    }
    Ok(())
}

fn counters(local: &LocalAws, source: &str, destination: &str) -> Result<Counters, Error> {
    let mut out = Counters::default();
    for account in [source, destination] {
        let calls = local.control("GET", &format!("/_localaws/calls?account={account}"), None)?;
        for call in calls["calls"].as_array().cloned().unwrap_or_default() {
            let operation = call["operation"].as_str().unwrap_or("?").to_owned();
            let count = call["count"].as_u64().unwrap_or(0);
            if operation.starts_with("registry:") {
                out.registry_requests += count;
            } else {
                out.api_calls += count;
            }
            *out.by_operation.entry(operation).or_default() += count;
        }
        if account == destination {
            for parts in calls["layer_parts"].as_array().cloned().unwrap_or_default() {
                out.uploaded_bytes += parts["bytes"].as_u64().unwrap_or(0);
            }
        }
        if account == source {
            for downloads in calls["blob_downloads"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                out.downloaded_bytes += downloads["bytes"].as_u64().unwrap_or(0);
            }
        }
    }
    Ok(out)
}

/// digest -> tags, per repository of `account` in the destination Region.
async fn holdings(
    local: &LocalAws,
    account: &str,
    repositories: &[&'static str],
) -> Result<BTreeMap<&'static str, BTreeMap<String, BTreeSet<String>>>, Error> {
    let ecr = local.ecr(account, DESTINATION_REGION).await;
    let mut out = BTreeMap::new();
    for &repository in repositories {
        let mut images = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let answer = ecr
                .describe_images()
                .repository_name(repository)
                .max_results(1000)
                .set_next_token(token.clone())
                .send()
                .await;
            let Ok(answer) = answer else { break };
            for detail in answer.image_details() {
                images.insert(
                    detail.image_digest().unwrap_or_default().to_owned(),
                    detail.image_tags().iter().cloned().collect(),
                );
            }
            token = answer.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        out.insert(repository, images);
    }
    Ok(out)
}

#[derive(Debug, Clone)]
struct Arrival {
    digests: usize,
    tags: usize,
    /// Per source manifest: arrived with its digest (and its tag, if it has one).
    arrived: Vec<bool>,
}

async fn arrival(local: &LocalAws, account: &str, set: &[Manifest]) -> Result<Arrival, Error> {
    let held = holdings(local, account, &repositories(set)).await?;
    let mut out = Arrival {
        digests: 0,
        tags: 0,
        arrived: Vec::new(),
    };
    for manifest in set {
        let tags = held
            .get(manifest.repository)
            .and_then(|images| images.get(&manifest.digest));
        let tagged = match (&manifest.tag, tags) {
            (Some(tag), Some(tags)) => tags.contains(tag),
            (None, Some(_)) => true,
            _ => false,
        };
        out.digests += usize::from(tags.is_some());
        out.tags += usize::from(manifest.tag.is_some() && tagged);
        out.arrived.push(tags.is_some() && tagged);
    }
    Ok(out)
}

#[derive(Debug, Clone)]
struct Run {
    tool: &'static str,
    seconds: f64,
    /// CPU seconds the test bed's server used during the run, if its pid is known.
    server_cpu: Option<f64>,
    exit: String,
    counters: Counters,
    arrival: Arrival,
    log_tail: String,
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn replwatch_binary(settings: &Settings) -> Result<PathBuf, Error> {
    if let Some(path) = &settings.replwatch_bin {
        return Ok(path.clone());
    }
    // This bench runs from <target>/release/deps; the binary built with --profile bench is
    // in <target>/release.
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or("no target directory")?;
    let path = dir.join("replwatch");
    if !path.exists() {
        return Err(format!(
            "{} not found: build it first with `cargo build --profile bench -p replwatch-cli \
             --bin replwatch`, or give --replwatch-bin",
            path.display()
        )
        .into());
    }
    Ok(path)
}

async fn run_replwatch(
    local: &LocalAws,
    settings: &Settings,
    binary: &PathBuf,
    source: &str,
    destination: &str,
    set: &[Manifest],
) -> Result<Run, Error> {
    reset_counters(local, &[source, destination])?;
    let destination_arg = format!("{DESTINATION_REGION}/{destination}");
    let concurrency = settings.concurrency.to_string();
    let server = server_pid(local.endpoint());
    let cpu_before = server.as_deref().and_then(cpu_seconds);
    let started = Instant::now();
    let output = Command::new(binary)
        .args([
            "--endpoint-url",
            local.endpoint(),
            "--region",
            SOURCE_REGION,
        ])
        .args(["--role-name", COPY_ROLE, "--no-progress"])
        .args(["backfill", "--apply", "--strategy", "copy"])
        .args([
            "--destination",
            &destination_arg,
            "--concurrency",
            &concurrency,
        ])
        .env("AWS_ACCESS_KEY_ID", source)
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env_remove("AWS_PROFILE")
        .env("NO_COLOR", "1")
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = server
        .as_deref()
        .and_then(cpu_seconds)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(Run {
        tool: "replwatch",
        seconds,
        server_cpu,
        exit: output
            .status
            .code()
            .map_or("killed".into(), |c| c.to_string()),
        counters: counters(local, source, destination)?,
        arrival: arrival(local, destination, set).await?,
        log_tail: tail(&log, 12),
    })
}

/// `proxyEndpoint` without its scheme and `AWS:<password>`, from `GetAuthorizationToken`.
async fn registry_login(
    local: &LocalAws,
    account: &str,
    region: &str,
) -> Result<(String, String), Error> {
    let ecr = local.ecr(account, region).await;
    let answer = ecr.get_authorization_token().send().await?;
    let data = answer
        .authorization_data()
        .first()
        .ok_or("no authorization data")?;
    let endpoint = data.proxy_endpoint().ok_or("no proxyEndpoint")?;
    let endpoint = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint)
        .to_owned();
    let token = data.authorization_token().ok_or("no authorizationToken")?;
    let credentials = decode_base64(token)?;
    Ok((endpoint, credentials))
}

fn decode_base64(text: &str) -> Result<String, Error> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0u32;
    let mut out = Vec::new();
    for byte in text
        .bytes()
        .filter(|b| *b != b'=' && !b.is_ascii_whitespace())
    {
        let value = ALPHABET
            .iter()
            .position(|&a| a == byte)
            .ok_or("authorizationToken is not base64")? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Ok(String::from_utf8(out)?)
}

fn skopeo_sync_args(
    source_endpoint: &str,
    source_credentials: &str,
    destination_endpoint: &str,
    destination_credentials: &str,
    repository: &str,
) -> Vec<String> {
    let parent = repository.rsplit_once('/').map_or("", |(p, _)| p);
    let destination = if parent.is_empty() {
        destination_endpoint.to_owned()
    } else {
        format!("{destination_endpoint}/{parent}")
    };
    [
        "sync",
        "--all",
        "--preserve-digests",
        "--keep-going",
        "--src",
        "docker",
        "--dest",
        "docker",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        source_credentials,
        "--dest-creds",
        destination_credentials,
        &format!("{source_endpoint}/{repository}"),
        &destination,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

async fn run_skopeo(
    local: &LocalAws,
    settings: &Settings,
    source: &str,
    destination: &str,
    set: &[Manifest],
) -> Result<Run, Error> {
    // skopeo pushes into existing repositories only: created before the timing.
    let ecr = local.ecr(destination, DESTINATION_REGION).await;
    for repository in repositories(set) {
        ecr.create_repository()
            .repository_name(repository)
            .send()
            .await?;
    }
    reset_counters(local, &[source, destination])?;
    let server = server_pid(local.endpoint());
    let cpu_before = server.as_deref().and_then(cpu_seconds);
    let started = Instant::now();
    let (source_endpoint, source_credentials) =
        registry_login(local, source, SOURCE_REGION).await?;
    // The destination registry through `localhost`, the source through 127.0.0.1: two hosts,
    // as two ECR registries are, so skopeo does not take them for one registry (it would try
    // cross-repository mounts from the source's repositories).
    let other_host = LocalAws::new(local.endpoint().replacen("127.0.0.1", "localhost", 1));
    let (destination_endpoint, destination_credentials) =
        registry_login(&other_host, destination, DESTINATION_REGION).await?;
    let mut log = String::new();
    let mut exits = Vec::new();
    for repository in repositories(set) {
        let output = Command::new(&settings.skopeo)
            .args(skopeo_sync_args(
                &source_endpoint,
                &source_credentials,
                &destination_endpoint,
                &destination_credentials,
                repository,
            ))
            .output()
            .map_err(|e| format!("{}: {e}", settings.skopeo))?;
        log.push_str(&String::from_utf8_lossy(&output.stdout));
        log.push_str(&String::from_utf8_lossy(&output.stderr));
        exits.push(
            output
                .status
                .code()
                .map_or("killed".into(), |c| c.to_string()),
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = server
        .as_deref()
        .and_then(cpu_seconds)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    exits.dedup();
    Ok(Run {
        tool: "skopeo",
        seconds,
        server_cpu,
        exit: exits.join(","),
        counters: counters(local, source, destination)?,
        arrival: arrival(local, destination, set).await?,
        log_tail: tail(&log, 12),
    })
}

// ---------------------------------------------------------------------------------------------
// The report

fn yes_no(arrived: bool) -> &'static str {
    if arrived { "yes" } else { "**no**" }
}

fn print_table(set: &[Manifest], runs: &[Run], skopeo_version: &str, network: &str) {
    let tags = set.iter().filter(|m| m.tag.is_some()).count();
    let mut rows: Vec<(String, Vec<String>)> = vec![
        (
            "seconds".into(),
            runs.iter().map(|r| format!("{:.1}", r.seconds)).collect(),
        ),
        (
            "test bed CPU seconds".into(),
            runs.iter()
                .map(|r| r.server_cpu.map_or("?".into(), |c| format!("{c:.1}")))
                .collect(),
        ),
        (
            "exit code".into(),
            runs.iter().map(|r| r.exit.clone()).collect(),
        ),
        (
            "MiB uploaded into the destination".into(),
            runs.iter()
                .map(|r| format!("{:.1}", r.counters.uploaded_bytes as f64 / MIB))
                .collect(),
        ),
        (
            "MiB downloaded from the source".into(),
            runs.iter()
                .map(|r| format!("{:.1}", r.counters.downloaded_bytes as f64 / MIB))
                .collect(),
        ),
        (
            "ECR API calls".into(),
            runs.iter()
                .map(|r| r.counters.api_calls.to_string())
                .collect(),
        ),
        (
            "registry (/v2/) requests".into(),
            runs.iter()
                .map(|r| r.counters.registry_requests.to_string())
                .collect(),
        ),
        (
            format!("manifests arrived (digest) of {}", set.len()),
            runs.iter().map(|r| r.arrival.digests.to_string()).collect(),
        ),
        (
            format!("tags arrived of {tags}"),
            runs.iter().map(|r| r.arrival.tags.to_string()).collect(),
        ),
    ];
    for (n, manifest) in set.iter().enumerate() {
        if manifest.kind.is_referrer() {
            rows.push((
                format!("{} `{}`", manifest.kind.name(), short(&manifest.digest)),
                runs.iter()
                    .map(|r| yes_no(r.arrival.arrived[n]).to_owned())
                    .collect(),
            ));
        }
    }
    println!();
    println!("backfill_vs_skopeo: {network}; {skopeo_version}");
    println!();
    print!("| measure |");
    for run in runs {
        print!(" {} |", run.tool);
    }
    println!();
    print!("|---|");
    for _ in runs {
        print!("---|");
    }
    println!();
    for (name, values) in rows {
        print!("| {name} |");
        for value in values {
            print!(" {value} |");
        }
        println!();
    }
    for run in runs {
        let missing: Vec<String> = set
            .iter()
            .zip(&run.arrival.arrived)
            .filter(|(_, arrived)| !**arrived)
            .map(|(m, _)| {
                format!(
                    "{} {}@{}{}",
                    m.kind.name(),
                    m.repository,
                    short(&m.digest),
                    m.tag
                        .as_deref()
                        .map(|t| format!(" ({t})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        println!();
        if missing.is_empty() {
            println!("{}: everything arrived", run.tool);
        } else {
            println!("{} left behind: {}", run.tool, missing.join("; "));
        }
        let calls: Vec<String> = run
            .counters
            .by_operation
            .iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect();
        println!("{} calls: {}", run.tool, calls.join(", "));
    }
}

fn short(digest: &str) -> String {
    digest.chars().take(7 + 12).collect()
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
    let binary = replwatch_binary(&settings)?;
    let skopeo_version = Command::new(&settings.skopeo)
        .arg("--version")
        .output()
        .map_err(|e| {
            format!(
                "{} --version: {e} (apt-get install skopeo)",
                settings.skopeo
            )
        })?;
    let skopeo_version = String::from_utf8_lossy(&skopeo_version.stdout)
        .trim()
        .to_owned();

    let source = unique_account();
    let set = generate(&settings, source.parse::<u64>()?);
    let pushed = Instant::now();
    push(&local, &source, &set).await?;
    let unique_blobs: BTreeSet<(&str, &str)> = set
        .iter()
        .flat_map(|m| m.blobs.iter().map(move |(d, _)| (m.repository, d.as_str())))
        .collect();
    let needed: u64 = set
        .iter()
        .flat_map(|m| {
            m.blobs
                .iter()
                .map(move |(d, b)| ((m.repository, d), b.len()))
        })
        .collect::<BTreeMap<_, _>>()
        .values()
        .map(|&n| n as u64)
        .sum();
    eprintln!(
        "backfill_vs_skopeo: source {source}/{SOURCE_REGION}: {} manifests in {} repositories, \
         {} blobs ({:.1} MiB a destination needs), pushed in {:.1} s; replwatch {}",
        set.len(),
        repositories(&set).len(),
        unique_blobs.len(),
        needed as f64 / MIB,
        pushed.elapsed().as_secs_f64(),
        binary.display()
    );

    let network =
        json!({"latency_ms": settings.latency_ms, "stream_mib_per_s": settings.stream_mib_per_s});
    local.control("POST", "/_localaws/network", Some(&network))?;
    let runs = async {
        let replwatch_destination = unique_account();
        let replwatch = run_replwatch(
            &local,
            &settings,
            &binary,
            &source,
            &replwatch_destination,
            &set,
        )
        .await?;
        eprintln!(
            "replwatch into {replwatch_destination}/{DESTINATION_REGION}: {:.1} s, exit {}\n{}",
            replwatch.seconds, replwatch.exit, replwatch.log_tail
        );
        let skopeo_destination = unique_account();
        let skopeo = run_skopeo(&local, &settings, &source, &skopeo_destination, &set).await?;
        eprintln!(
            "skopeo into {skopeo_destination}/{DESTINATION_REGION}: {:.1} s, exit {}\n{}",
            skopeo.seconds, skopeo.exit, skopeo.log_tail
        );
        Ok::<_, Error>(vec![replwatch, skopeo])
    }
    .await;
    local.control("DELETE", "/_localaws/network", None)?;
    let runs = runs?;

    let network_text = if settings.latency_ms == 0 && settings.stream_mib_per_s == 0 {
        "loopback, no network model".to_owned()
    } else {
        format!(
            "modelled network: {} ms per request, {} MiB/s per stream",
            settings.latency_ms, settings.stream_mib_per_s
        )
    };
    print_table(&set, &runs, &skopeo_version, &network_text);
    let report = json!({
        "bench": "backfill_vs_skopeo",
        "network": network,
        "skopeo": skopeo_version,
        "manifests": set.len(),
        "tags": set.iter().filter(|m| m.tag.is_some()).count(),
        "blob_mib_needed": needed as f64 / MIB,
        "runs": runs.iter().map(|r| json!({
            "tool": r.tool,
            "seconds": r.seconds,
            "server_cpu_seconds": r.server_cpu,
            "exit": r.exit,
            "uploaded_bytes": r.counters.uploaded_bytes,
            "downloaded_bytes": r.counters.downloaded_bytes,
            "ecr_api_calls": r.counters.api_calls,
            "registry_requests": r.counters.registry_requests,
            "digests_arrived": r.arrival.digests,
            "tags_arrived": r.arrival.tags,
            "referrers": set.iter().zip(&r.arrival.arrived).filter(|(m, _)| m.kind.is_referrer())
                .map(|(m, a)| json!({"kind": m.kind.name(), "digest": m.digest, "arrived": a}))
                .collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    println!();
    println!("{report}");
    Ok(())
}
