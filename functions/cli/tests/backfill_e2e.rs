//! `replwatch backfill` end to end on the local AWS, through the real binary: a source with
//! three repositories (single-arch images sharing base layers, a multi-arch index, untagged
//! images) pushed before any replication rule; a same-account and a cross-account destination.
//! After `--apply` both hold the same digests and tags, a second run plans nothing, an
//! immutable tag taken in a destination is reported and left alone, a copy killed midway and
//! run again finishes without uploading any blob twice, and throttling on `PutImage` is
//! absorbed.
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ecr::primitives::Blob;
use replwatch_core::model::{AccountId, Destination, Region};
use replwatch_core::rules::{ReplicationConfiguration, ReplicationRule};
use testbed::{LocalAws, sha256_digest, unique_account};

type Error = Box<dyn std::error::Error + Send + Sync>;

const SOURCE_REGION: &str = "us-west-2";
const SAME_ACCOUNT_REGION: &str = "us-east-1";
const OTHER_ACCOUNT_REGION: &str = "eu-west-1";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const REPOSITORIES: [&str; 3] = ["shop/api", "shop/multi", "shop/jobs"];

fn command(aws: &LocalAws, account: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_replwatch"));
    command
        .args(["--endpoint-url", aws.endpoint(), "--region", SOURCE_REGION])
        .args(["--role-name", "replwatch-backfill", "--no-progress"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", account)
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env_remove("AWS_PROFILE")
        .env("NO_COLOR", "1");
    command
}

fn run(aws: &LocalAws, account: &str, args: &[&str]) -> Output {
    command(aws, account, args)
        .output()
        .expect("replwatch runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn destination(region: &str, account: &str) -> Result<Destination, Error> {
    Ok(Destination::new(
        Region::parse(region)?,
        AccountId::parse(account)?,
    ))
}

/// Uploads `bytes` as a blob unless the repository has it.
async fn blob(ecr: &aws_sdk_ecr::Client, repository: &str, bytes: &[u8]) -> Result<String, Error> {
    let digest = sha256_digest(bytes);
    let known = ecr
        .batch_check_layer_availability()
        .repository_name(repository)
        .layer_digests(&digest)
        .send()
        .await?;
    if known
        .layers()
        .iter()
        .any(|l| l.layer_availability().map(|a| a.as_str()) == Some("AVAILABLE"))
    {
        return Ok(digest);
    }
    let upload = ecr
        .initiate_layer_upload()
        .repository_name(repository)
        .send()
        .await?;
    let id = upload.upload_id().ok_or("upload id")?;
    let part = 5 * 1024 * 1024;
    for (n, chunk) in bytes.chunks(part).enumerate() {
        ecr.upload_layer_part()
            .repository_name(repository)
            .upload_id(id)
            .part_first_byte((n * part) as i64)
            .part_last_byte((n * part + chunk.len() - 1) as i64)
            .layer_part_blob(Blob::new(chunk.to_vec()))
            .send()
            .await?;
    }
    ecr.complete_layer_upload()
        .repository_name(repository)
        .upload_id(id)
        .layer_digests(&digest)
        .send()
        .await?;
    Ok(digest)
}

/// An OCI image of `layers` (content as given) plus a config naming `seed`; returns its digest.
async fn image(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
    tag: Option<&str>,
    seed: &str,
    layers: &[&[u8]],
) -> Result<String, Error> {
    let config = serde_json::json!({"architecture": "amd64", "os": "linux", "seed": seed})
        .to_string()
        .into_bytes();
    let config_digest = blob(ecr, repository, &config).await?;
    let mut described = Vec::new();
    for layer in layers {
        described.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": blob(ecr, repository, layer).await?,
            "size": layer.len()
        }));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": described
    })
    .to_string();
    put(ecr, repository, tag, &manifest, OCI_MANIFEST).await
}

async fn put(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
    tag: Option<&str>,
    manifest: &str,
    media_type: &str,
) -> Result<String, Error> {
    let digest = sha256_digest(manifest.as_bytes());
    let mut request = ecr
        .put_image()
        .repository_name(repository)
        .image_manifest(manifest)
        .image_manifest_media_type(media_type)
        .image_digest(&digest);
    if let Some(tag) = tag {
        request = request.image_tag(tag);
    }
    request.send().await?;
    Ok(digest)
}

/// An amd64 and an arm64 image on `base` (their own layers told apart by `seed`), untagged,
/// and the OCI index of the two tagged `tag`: (index manifest, index digest, child digests).
async fn multi_arch(
    ecr: &aws_sdk_ecr::Client,
    repository: &str,
    tag: &str,
    base: &[u8],
    seed: &str,
    own_repeat: usize,
) -> Result<(String, String, Vec<String>), Error> {
    let mut children = Vec::new();
    for platform in ["amd64", "arm64"] {
        let own = format!("{platform} {seed}").repeat(own_repeat).into_bytes();
        let digest = image(ecr, repository, None, platform, &[base, &own]).await?;
        children.push((platform, digest));
    }
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(platform, digest)| serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": digest, "size": 400,
            "platform": {"os": "linux", "architecture": platform}
        })).collect::<Vec<_>>()
    })
    .to_string();
    let digest = put(ecr, repository, Some(tag), &index, OCI_INDEX).await?;
    Ok((
        index,
        digest,
        children.into_iter().map(|(_, d)| d).collect(),
    ))
}

fn layer(seed: u8, mib: usize) -> Vec<u8> {
    (0..mib * 1024 * 1024)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(u32::from(seed)) as u8
        })
        .collect()
}

/// The three repositories, pushed before any rule: `shop/api` (three tagged images and one
/// untagged, all on one 6 MiB base layer), `shop/multi` (an index of two platforms sharing the
/// base), `shop/jobs` (untagged only).
async fn populate(aws: &LocalAws, account: &str, big: usize) -> Result<(), Error> {
    let ecr = aws.ecr(account, SOURCE_REGION).await;
    for repository in REPOSITORIES {
        ecr.create_repository()
            .repository_name(repository)
            .send()
            .await?;
    }
    let base = layer(1, 6);
    for (n, tag) in ["v1", "v2", "latest"].iter().enumerate() {
        let own = layer(10 + n as u8, big);
        image(&ecr, "shop/api", Some(tag), tag, &[&base, &own]).await?;
    }
    image(&ecr, "shop/api", None, "api-untagged", &[&base, b"small"]).await?;
    multi_arch(&ecr, "shop/multi", "1.0", &base, "layer", 1000).await?;
    for n in 0..2 {
        let own = format!("job {n}").repeat(500).into_bytes();
        image(&ecr, "shop/jobs", None, &format!("job-{n}"), &[&own]).await?;
    }
    Ok(())
}

async fn rules(aws: &LocalAws, account: &str, destinations: &[Destination]) -> Result<(), Error> {
    aws.put_replication_configuration(
        account,
        SOURCE_REGION,
        &ReplicationConfiguration {
            rules: vec![ReplicationRule {
                destinations: destinations.to_vec(),
                repository_filters: Vec::new(),
            }],
        },
    )
    .await
}

/// (repository, digest) -> sorted tags, for the three repositories of `account` in `region`.
async fn holdings(
    aws: &LocalAws,
    account: &str,
    region: &str,
) -> Result<BTreeMap<(String, String), Vec<String>>, Error> {
    let ecr = aws.ecr(account, region).await;
    let mut out = BTreeMap::new();
    for repository in REPOSITORIES {
        let Ok(answer) = ecr
            .describe_images()
            .repository_name(repository)
            .max_results(1000)
            .send()
            .await
        else {
            continue;
        };
        for detail in answer.image_details() {
            let mut tags = detail.image_tags().to_vec();
            tags.sort();
            out.insert(
                (
                    repository.to_owned(),
                    detail.image_digest().unwrap_or_default().to_owned(),
                ),
                tags,
            );
        }
    }
    Ok(out)
}

/// (completed, refused as already there) per (repository, blob digest).
type Uploads = BTreeMap<(String, String), (u64, u64)>;

/// Blob uploads the test bed saw into `account`'s registry in `region`.
fn uploads(aws: &LocalAws, account: &str, region: &str) -> Result<Uploads, Error> {
    let calls = aws.control(
        "GET",
        &format!("/_localaws/calls?account={account}&region={region}"),
        None,
    )?;
    let mut out = BTreeMap::new();
    for upload in calls["layer_uploads"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        out.insert(
            (
                upload["repository"].as_str().unwrap_or_default().to_owned(),
                upload["layerDigest"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            (
                upload["completed"].as_u64().unwrap_or(0),
                upload["already_exists"].as_u64().unwrap_or(0),
            ),
        );
    }
    Ok(out)
}

#[tokio::test]
async fn every_destination_ends_with_the_sources_digests_and_tags() -> Result<(), Error> {
    let aws = LocalAws::from_env()?;
    let account = unique_account();
    let partner = unique_account();
    populate(&aws, &account, 1).await?;
    let same = destination(SAME_ACCOUNT_REGION, &account)?;
    let other = destination(OTHER_ACCOUNT_REGION, &partner)?;
    rules(&aws, &account, &[same, other]).await?;
    // Throttling on PutImage in both destinations: the adaptive retry absorbs it.
    aws.control(
        "POST",
        "/_localaws/faults",
        Some(&serde_json::json!({"ecr": {"PutImage": [
            {"throttle_next": 3, "account": account},
            {"throttle_next": 3, "account": partner}
        ]}})),
    )?;

    let plan = run(
        &aws,
        &account,
        &["backfill", "--strategy", "copy", "--output", "json"],
    );
    assert_eq!(plan.status.code(), Some(1), "{}", text(&plan));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout)?;
    // 4 + 3 (index and two children) + 2 images per destination.
    assert_eq!(plan["totals"]["images"], 18, "{plan}");

    let applied = run(
        &aws,
        &account,
        &["backfill", "--strategy", "copy", "--apply"],
    );
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));

    let source = holdings(&aws, &account, SOURCE_REGION).await?;
    assert_eq!(source.len(), 9);
    assert_eq!(holdings(&aws, &account, SAME_ACCOUNT_REGION).await?, source);
    assert_eq!(
        holdings(&aws, &partner, OTHER_ACCOUNT_REGION).await?,
        source
    );

    // The shared base layer crossed once per destination repository, nothing twice.
    for (registry, region) in [
        (&account, SAME_ACCOUNT_REGION),
        (&partner, OTHER_ACCOUNT_REGION),
    ] {
        let uploads = uploads(&aws, registry, region)?;
        assert!(!uploads.is_empty());
        assert!(
            uploads
                .values()
                .all(|(done, again)| *done == 1 && *again == 0),
            "{uploads:?}"
        );
    }
    let faults = aws.control("GET", "/_localaws/faults", None)?;
    let throttled: u64 = faults["ecr"]["PutImage"]
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .filter(|r| r["account"] == account.as_str() || r["account"] == partner.as_str())
                .filter_map(|r| r["throttled"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(throttled, 6, "{faults}");
    for registry in [&account, &partner] {
        aws.control(
            "DELETE",
            &format!("/_localaws/faults?account={registry}"),
            None,
        )?;
    }

    let again = run(&aws, &account, &["backfill", "--strategy", "copy"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(text(&again).contains("Nothing to do"), "{}", text(&again));
    Ok(())
}

#[tokio::test]
async fn an_immutable_tag_taken_in_a_destination_is_reported_and_left_alone() -> Result<(), Error> {
    let aws = LocalAws::from_env()?;
    let account = unique_account();
    populate(&aws, &account, 1).await?;
    let same = destination(SAME_ACCOUNT_REGION, &account)?;
    let theirs = aws.ecr(&account, SAME_ACCOUNT_REGION).await;
    theirs
        .create_repository()
        .repository_name("shop/api")
        .image_tag_mutability(aws_sdk_ecr::types::ImageTagMutability::Immutable)
        .send()
        .await?;
    let squatter = image(&theirs, "shop/api", Some("v1"), "someone else", &[b"other"]).await?;
    rules(&aws, &account, &[same]).await?;

    let plan = run(&aws, &account, &["backfill", "--output", "json"]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout)?;
    let conflicts = &plan["destinations"][0]["conflicts"];
    assert_eq!(conflicts.as_array().map(Vec::len), Some(1), "{plan}");
    assert_eq!(conflicts[0]["tag"], "v1");
    assert_eq!(conflicts[0]["destinationDigest"], squatter.as_str());

    let applied = run(
        &aws,
        &account,
        &["backfill", "--strategy", "copy", "--apply"],
    );
    assert_eq!(applied.status.code(), Some(1), "{}", text(&applied));
    assert!(text(&applied).contains("v1"), "{}", text(&applied));
    let after = holdings(&aws, &account, SAME_ACCOUNT_REGION).await?;
    assert_eq!(
        after.get(&("shop/api".to_owned(), squatter.clone())),
        Some(&vec!["v1".to_owned()]),
        "the destination's v1 still names its own image"
    );
    Ok(())
}

#[tokio::test]
async fn a_copy_killed_midway_finishes_on_rerun_without_uploading_a_blob_twice() -> Result<(), Error>
{
    let aws = LocalAws::from_env()?;
    let account = unique_account();
    let partner = unique_account();
    // Bigger own layers, so the copy is still running when it is killed.
    populate(&aws, &account, 8).await?;
    rules(
        &aws,
        &account,
        &[destination(OTHER_ACCOUNT_REGION, &partner)?],
    )
    .await?;

    let mut child: Child = command(
        &aws,
        &account,
        &[
            "backfill",
            "--strategy",
            "copy",
            "--apply",
            "--concurrency",
            "1",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()?;
    let started = Instant::now();
    loop {
        let done: u64 = uploads(&aws, &partner, OTHER_ACCOUNT_REGION)?
            .values()
            .map(|(done, _)| done)
            .sum();
        if done >= 2 {
            break;
        }
        if let Some(status) = child.try_wait()? {
            return Err(format!("the copy ended ({status}) before it could be killed").into());
        }
        if started.elapsed() > Duration::from_secs(60) {
            child.kill()?;
            return Err("no upload completed within a minute".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?; // SIGKILL: no clean-up of any kind
    child.wait()?;
    let before = holdings(&aws, &partner, OTHER_ACCOUNT_REGION).await?;
    let source = holdings(&aws, &account, SOURCE_REGION).await?;
    assert!(before.len() < source.len(), "killed too late: {before:?}");

    let rerun = run(
        &aws,
        &account,
        &["backfill", "--strategy", "copy", "--apply"],
    );
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    assert_eq!(
        holdings(&aws, &partner, OTHER_ACCOUNT_REGION).await?,
        source
    );
    let uploads = uploads(&aws, &partner, OTHER_ACCOUNT_REGION)?;
    assert!(
        uploads
            .values()
            .all(|(done, again)| *done == 1 && *again == 0),
        "a blob went twice: {uploads:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_signed_registry_arrives_whole_through_a_partial_native_backfill_and_a_kms_template()
-> Result<(), Error> {
    let aws = LocalAws::from_env()?;
    let account = unique_account();
    let repository = "signed/app";
    let ecr = aws.ecr(&account, SOURCE_REGION).await;
    ecr.create_repository()
        .repository_name(repository)
        .send()
        .await?;
    // A multi-arch index tagged v1 and v2; a Notation signature and an SBOM of it, a cosign
    // signature of the SBOM, an in-toto attestation of its amd64 image, and a legacy cosign
    // signature (`sha256-<hex>.sig`).
    let base = layer(3, 1);
    let (index_manifest, index, children) =
        multi_arch(&ecr, repository, "v1", &base, "signed", 200).await?;
    put(&ecr, repository, Some("v2"), &index_manifest, OCI_INDEX).await?;
    let notation = "application/vnd.cncf.notary.signature";
    let signature = aws
        .push_referrer(
            &account,
            SOURCE_REGION,
            repository,
            (&index, OCI_INDEX),
            notation,
            b"notation",
        )
        .await?;
    let sbom = aws
        .push_referrer(
            &account,
            SOURCE_REGION,
            repository,
            (&index, OCI_INDEX),
            "application/spdx+json",
            b"{\"spdxVersion\":\"SPDX-2.3\"}",
        )
        .await?;
    let sbom_signature = aws
        .push_referrer(
            &account,
            SOURCE_REGION,
            repository,
            (&sbom, OCI_MANIFEST),
            "application/vnd.dev.cosign.artifact.sig.v1+json",
            b"sbom signature",
        )
        .await?;
    let attestation = aws
        .push_referrer(
            &account,
            SOURCE_REGION,
            repository,
            (&children[0], OCI_MANIFEST),
            "application/vnd.in-toto+json",
            b"{\"predicateType\":\"https://slsa.dev/provenance/v1\"}",
        )
        .await?;
    let legacy_tag = format!("{}.sig", index.replacen(':', "-", 1));
    image(
        &ecr,
        repository,
        Some(&legacy_tag),
        "cosign",
        &[b"cosign payload"],
    )
    .await?;

    // The destination: in the rules (so a native backfill), where ECR fails the v2
    // replication, with a REPLICATION creation template under a customer managed key.
    let destination_region = SAME_ACCOUNT_REGION;
    let key = format!(
        "arn:aws:kms:{destination_region}:{account}:key/0f0e0d0c-aaaa-bbbb-cccc-123456789012"
    );
    aws.ecr(&account, destination_region)
        .await
        .create_repository_creation_template()
        .prefix("signed")
        .applied_for(aws_sdk_ecr::types::RctAppliedFor::Replication)
        .encryption_configuration(
            aws_sdk_ecr::types::EncryptionConfigurationForRepositoryCreationTemplate::builder()
                .encryption_type(aws_sdk_ecr::types::EncryptionType::Kms)
                .kms_key(&key)
                .build()?,
        )
        .resource_tags(
            aws_sdk_ecr::types::Tag::builder()
                .key("team")
                .value("supply-chain")
                .build()?,
        )
        .send()
        .await?;
    rules(
        &aws,
        &account,
        &[destination(destination_region, &account)?],
    )
    .await?;
    aws.configure_replication(&serde_json::json!({"destinations": {
        format!("{destination_region}/{account}"): {"fail_tags": ["v2"], "failure_code": "IMAGE_TOO_LARGE"}
    }}))?;

    let applied = run(
        &aws,
        &account,
        &["backfill", "--apply", "--native-poll-seconds", "1"],
    );
    aws.configure_replication(&serde_json::json!({"destinations": {
        format!("{destination_region}/{account}"): null
    }}))?;
    let said = text(&applied);
    assert_eq!(applied.status.code(), Some(0), "{said}");
    assert!(
        said.contains(&format!(
            "native backfill failed {repository}@{index} (tag v2): IMAGE_TOO_LARGE"
        )),
        "{said}"
    );

    // Nothing left for the audit, and every referrer there with its digest.
    let audited = Command::new(env!("CARGO_BIN_EXE_replwatch"))
        .args(["--endpoint-url", aws.endpoint(), "--region", SOURCE_REGION])
        .args(["--output", "json", "audit"])
        .env("AWS_ACCESS_KEY_ID", &account)
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env_remove("AWS_PROFILE")
        .output()?;
    assert_eq!(audited.status.code(), Some(0), "{}", text(&audited));
    for subject in [&index, &sbom, &children[0]] {
        let there = aws
            .referrers(&account, destination_region, repository, subject)
            .await?;
        assert_eq!(
            there,
            aws.referrers(&account, SOURCE_REGION, repository, subject)
                .await?
        );
        assert!(!there.is_empty());
    }
    let mut expected = vec![signature, sbom.clone()];
    expected.sort();
    assert_eq!(
        aws.referrers(&account, destination_region, repository, &index)
            .await?,
        expected
    );
    assert_eq!(
        aws.referrers(&account, destination_region, repository, &sbom)
            .await?,
        [sbom_signature]
    );
    assert_eq!(
        aws.referrers(&account, destination_region, repository, &children[0])
            .await?,
        [attestation]
    );
    let source_images = aws
        .ecr(&account, SOURCE_REGION)
        .await
        .describe_images()
        .repository_name(repository)
        .send()
        .await?;
    let destination_images = aws
        .ecr(&account, destination_region)
        .await
        .describe_images()
        .repository_name(repository)
        .send()
        .await?;
    let tagged = |images: &aws_sdk_ecr::operation::describe_images::DescribeImagesOutput| {
        let mut out: Vec<(String, Vec<String>)> = images
            .image_details()
            .iter()
            .map(|d| {
                let mut tags = d.image_tags().to_vec();
                tags.sort();
                (d.image_digest().unwrap_or_default().to_owned(), tags)
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(tagged(&destination_images), tagged(&source_images));

    // Created as replication would have: the template's key and tags.
    let created = aws
        .ecr(&account, destination_region)
        .await
        .describe_repositories()
        .repository_names(repository)
        .send()
        .await?;
    let created = created.repositories().first().ok_or("created")?;
    assert_eq!(
        created.encryption_configuration().and_then(|e| e.kms_key()),
        Some(key.as_str())
    );
    let tags = aws
        .ecr(&account, destination_region)
        .await
        .list_tags_for_resource()
        .resource_arn(created.repository_arn().unwrap_or_default())
        .send()
        .await?;
    let mut tags: Vec<(String, String)> = tags
        .tags()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            ("replwatch:created-by".to_owned(), "backfill".to_owned()),
            ("team".to_owned(), "supply-chain".to_owned())
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_destination_region_the_accounts_have_not_enabled_is_refused_with_the_fix()
-> Result<(), Error> {
    let aws = LocalAws::from_env()?;
    let account = unique_account();
    populate(&aws, &account, 1).await?;
    // eu-south-1 is an opt-in Region, disabled until an account enables it.
    let opt_in = destination("eu-south-1", &account)?;
    let same = destination(SAME_ACCOUNT_REGION, &account)?;
    rules(&aws, &account, &[opt_in, same]).await?;

    let planned = run(&aws, &account, &["backfill", "--strategy", "copy"]);
    let said = text(&planned);
    assert_eq!(planned.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "Refused: eu-south-1/{account}: Region eu-south-1 is DISABLED in account {account}"
        )),
        "{said}"
    );
    assert!(
        said.contains("aws account enable-region --region-name eu-south-1"),
        "{said}"
    );

    let applied = run(
        &aws,
        &account,
        &["backfill", "--strategy", "copy", "--apply"],
    );
    assert_eq!(applied.status.code(), Some(1), "{}", text(&applied));
    // The enabled destination was brought up to date; nothing was written to the other.
    assert_eq!(
        holdings(&aws, &account, SAME_ACCOUNT_REGION).await?,
        holdings(&aws, &account, SOURCE_REGION).await?
    );
    assert!(holdings(&aws, &account, "eu-south-1").await?.is_empty());
    Ok(())
}
