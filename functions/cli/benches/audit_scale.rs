//! `replwatch audit` at scale against the local AWS: a source registry with `--images`
//! (default 10,000) images in `--repositories` (10) repositories, replicated to three
//! destinations (two Regions of the same account, one other account); then the real binary's
//! audit, timed, with the ECR API calls it made counted by the test bed
//! (`GET /_localaws/calls`).
//!
//! ```sh
//! eval "$(infra/local-aws/start)"
//! cargo bench -p replwatch-cli --bench audit_scale                 # 10,000 images
//! cargo bench -p replwatch-cli --bench audit_scale -- --images 2000 --drift 25
//! ```
//!
//! The images are one shared config and layer per repository with a distinct annotation per
//! manifest, so each is its own digest and a push is one `PutImage`. Replication is the test
//! bed's (flushed, not waited for). `--drift N` then removes N images from one destination and
//! leaves N others untagged in another, so the audit has something to find (and must find
//! exactly that: N missing, N tag lost).
//!
//! Output: a table on stdout and one JSON line starting `{"bench":"audit_scale"`.
// Benchmark code: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_ecr::types::ImageIdentifier;
use replwatch_core::model::{AccountId, Destination, Region};
use replwatch_core::rules::{ReplicationConfiguration, ReplicationRule};
use serde_json::{Value, json};
use testbed::{Error, LocalAws, MANIFEST_MEDIA_TYPE, unique_account};

const SOURCE_REGION: &str = "us-west-2";
const SAME_ACCOUNT_REGIONS: [&str; 2] = ["us-east-1", "eu-central-1"];
const CROSS_ACCOUNT_REGION: &str = "eu-west-1";
const READ_ROLE: &str = "replwatch-reader";
/// `PutImage` calls in flight while seeding.
const PUSH_CONCURRENCY: usize = 8;

struct Settings {
    images: usize,
    repositories: usize,
    drift: usize,
}

fn settings() -> Result<Settings, Error> {
    let mut s = Settings {
        images: 10_000,
        repositories: 10,
        drift: 0,
    };
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(flag) = args.next() {
        let value: usize = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse()?;
        match flag.as_str() {
            "--images" => s.images = value,
            "--repositories" => s.repositories = value.max(1),
            "--drift" => s.drift = value,
            other => {
                return Err(format!(
                    "unknown flag {other} (--images N, --repositories N, --drift N)"
                )
                .into());
            }
        }
    }
    Ok(s)
}

fn main() -> Result<(), Error> {
    let settings = settings()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(settings))
}

async fn bench(s: Settings) -> Result<(), Error> {
    let aws = LocalAws::from_env()?;
    let source = unique_account();
    let partner = unique_account();
    let mut destinations: Vec<Destination> = SAME_ACCOUNT_REGIONS
        .iter()
        .map(|r| {
            Ok(Destination::new(
                Region::parse(r)?,
                AccountId::parse(&source)?,
            ))
        })
        .collect::<Result<_, Error>>()?;
    destinations.push(Destination::new(
        Region::parse(CROSS_ACCOUNT_REGION)?,
        AccountId::parse(&partner)?,
    ));
    aws.put_replication_configuration(
        &source,
        SOURCE_REGION,
        &ReplicationConfiguration {
            rules: vec![ReplicationRule {
                destinations: destinations.clone(),
                repository_filters: Vec::new(),
            }],
        },
    )
    .await?;

    // Replication waits for the flush below: the audit must not race the test bed's copies.
    aws.configure_replication(&json!({"default_delay_seconds": 86_400}))?;
    let seeded = Instant::now();
    let ecr = aws.ecr(&source, SOURCE_REGION).await;
    let repositories: Vec<String> = (0..s.repositories)
        .map(|r| format!("scale/app-{r}"))
        .collect();
    let mut manifests = BTreeMap::new();
    for repository in &repositories {
        ecr.create_repository()
            .repository_name(repository)
            .send()
            .await?;
        let base = aws
            .push_image(&source, SOURCE_REGION, repository, None, repository)
            .await?;
        manifests.insert(repository.clone(), base.manifest);
    }
    let manifests = Arc::new(manifests);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(PUSH_CONCURRENCY));
    let mut pushes = tokio::task::JoinSet::new();
    for n in 0..s.images {
        let repository = repositories[n % repositories.len()].clone();
        let (ecr, manifests, semaphore) = (ecr.clone(), manifests.clone(), semaphore.clone());
        pushes.spawn(async move {
            let _permit = semaphore.acquire_owned().await?;
            let mut manifest: Value = serde_json::from_str(&manifests[&repository])?;
            manifest["annotations"] = json!({"org.opencontainers.image.version": n.to_string()});
            // One image in seven untagged, as CI pushes by digest do (7 is prime to the
            // repository count, so every repository has some).
            let mut put = ecr
                .put_image()
                .repository_name(&repository)
                .image_manifest(manifest.to_string())
                .image_manifest_media_type(MANIFEST_MEDIA_TYPE);
            if n % 7 != 3 {
                put = put.image_tag(format!("build-{n}"));
            }
            put.send().await?;
            Ok::<(), Error>(())
        });
    }
    while let Some(done) = pushes.join_next().await {
        done??;
    }
    let pushed_seconds = seeded.elapsed().as_secs_f64();
    let replicated = aws.flush_replication(&source)?;
    let seed_seconds = seeded.elapsed().as_secs_f64();
    aws.control("DELETE", "/_localaws/replication", None)?;
    // The repositories' base images count too.
    let images = s.images + s.repositories;
    eprintln!(
        "audit_scale: {images} images in {} repositories pushed in {pushed_seconds:.1} s, \
         {replicated} replications flushed ({seed_seconds:.1} s in all)",
        s.repositories
    );

    let expected_findings = drift(&aws, &source, &destinations, &repositories, s.drift).await?;

    for account in [&source, &partner] {
        aws.control(
            "DELETE",
            &format!("/_localaws/calls?account={account}"),
            None,
        )?;
    }
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_replwatch"))
        .args(["--endpoint-url", aws.endpoint(), "--region", SOURCE_REGION])
        .args(["--role-name", READ_ROLE, "--output", "json", "audit"])
        .env("AWS_ACCESS_KEY_ID", &source)
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env_remove("AWS_PROFILE")
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    let report: Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "audit printed no report ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let mut calls: BTreeMap<String, u64> = BTreeMap::new();
    for account in [&source, &partner] {
        let counted = aws.control("GET", &format!("/_localaws/calls?account={account}"), None)?;
        for call in counted["calls"].as_array().into_iter().flatten() {
            if let (Some(op), Some(n)) = (call["operation"].as_str(), call["count"].as_u64()) {
                *calls.entry(op.to_owned()).or_default() += n;
            }
        }
    }
    let total_calls: u64 = calls.values().sum();

    let mut found_by_kind: BTreeMap<String, u64> = BTreeMap::new();
    println!(
        "\naudit_scale: {images} images in {} repositories, 3 destinations (2 Regions of the \
         source account, 1 other account); local AWS {}\n",
        s.repositories,
        aws.endpoint()
    );
    println!("| destination | images | findings |");
    println!("|---|---|---|");
    for d in report["destinations"].as_array().into_iter().flatten() {
        let findings = d["findings"].as_array().map_or(0, Vec::len) as u64;
        for finding in d["findings"].as_array().into_iter().flatten() {
            *found_by_kind
                .entry(finding["kind"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
        let destination = &d["destination"];
        println!(
            "| {}/{} | {} | {findings} |",
            destination["region"].as_str().unwrap_or("?"),
            destination["registryId"].as_str().unwrap_or("?"),
            d["images"]
        );
    }
    let found: u64 = found_by_kind.values().sum();
    println!(
        "\naudit: {seconds:.2} s, exit {:?}, {total_calls} ECR API calls: {}",
        output.status.code(),
        counts(&calls)
    );
    let describe_images = calls.get("DescribeImages").copied().unwrap_or(0);
    println!(
        "DescribeImages calls per image read: {:.4} (images read: {})",
        describe_images as f64 / (images * 4) as f64,
        images * 4
    );
    println!("findings: {found} ({})", counts(&found_by_kind));
    println!(
        "{}",
        json!({
            "bench": "audit_scale",
            "images": images,
            "repositories": s.repositories,
            "destinations": 3,
            "seed_seconds": (seed_seconds * 10.0).round() / 10.0,
            "audit_seconds": (seconds * 100.0).round() / 100.0,
            "exit": output.status.code(),
            "ecr_calls": total_calls,
            "calls": calls,
            "findings": found_by_kind,
            "expected_findings": expected_findings,
        })
    );
    if found_by_kind != expected_findings {
        return Err(format!(
            "the audit found {found} findings ({found_by_kind:?}), {expected_findings:?} were made"
        )
        .into());
    }
    Ok(())
}

/// `name n, name n, ...`
fn counts(counted: &BTreeMap<String, u64>) -> String {
    counted
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Removes `n` images of the first repository from the first destination and leaves `n` others
/// untagged in the second; returns the findings that must follow (one per image each).
async fn drift(
    aws: &LocalAws,
    source: &str,
    destinations: &[Destination],
    repositories: &[String],
    n: usize,
) -> Result<BTreeMap<String, u64>, Error> {
    if n == 0 {
        return Ok(BTreeMap::new());
    }
    if n > 100 {
        // One BatchDeleteImage / BatchGetImage call each: at most 100 image ids.
        return Err(format!("--drift {n}: at most 100").into());
    }
    let repository = &repositories[0];
    let images = aws
        .ecr(source, SOURCE_REGION)
        .await
        .describe_images()
        .repository_name(repository)
        .max_results(1000)
        .send()
        .await?;
    let tagged: Vec<&aws_sdk_ecr::types::ImageDetail> = images
        .image_details()
        .iter()
        .filter(|d| !d.image_tags().is_empty())
        .collect();
    if tagged.len() < 2 * n {
        return Err(format!(
            "--drift {n} needs {} tagged images in {repository}, it has {} of {}",
            2 * n,
            tagged.len(),
            images.image_details().len()
        )
        .into());
    }
    // Deleting by digest removes the image. Deleting by tag would too (ECR deletes an image
    // with its last tag), so a tag lost is made as ECR makes it: the image put again untagged.
    let by_digest = |d: &&aws_sdk_ecr::types::ImageDetail| {
        ImageIdentifier::builder()
            .image_digest(d.image_digest().unwrap_or_default())
            .build()
    };
    for (destination, images) in [
        (&destinations[0], &tagged[..n]),
        (&destinations[1], &tagged[n..2 * n]),
    ] {
        aws.ecr(
            destination.registry_id.as_str(),
            destination.region.as_str(),
        )
        .await
        .batch_delete_image()
        .repository_name(repository)
        .set_image_ids(Some(images.iter().map(by_digest).collect()))
        .send()
        .await?;
    }
    let untagged = aws
        .ecr(source, SOURCE_REGION)
        .await
        .batch_get_image()
        .repository_name(repository)
        .set_image_ids(Some(tagged[n..2 * n].iter().map(by_digest).collect()))
        .send()
        .await?;
    let ecr = aws
        .ecr(
            destinations[1].registry_id.as_str(),
            destinations[1].region.as_str(),
        )
        .await;
    for image in untagged.images() {
        ecr.put_image()
            .repository_name(repository)
            .image_manifest(image.image_manifest().unwrap_or_default())
            .image_manifest_media_type(MANIFEST_MEDIA_TYPE)
            .send()
            .await?;
    }
    if untagged.images().len() != n {
        return Err(format!(
            "{} of {n} images read back from the source",
            untagged.images().len()
        )
        .into());
    }
    Ok(BTreeMap::from([
        ("missing".to_owned(), n as u64),
        ("tag-lost".to_owned(), n as u64),
    ]))
}
