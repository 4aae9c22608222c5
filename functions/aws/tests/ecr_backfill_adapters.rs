//! The backfill's ECR adapters against the local AWS (`infra/local-aws/`), through the real
//! aws-sdk-ecr clients: the inventory (settings, tags, untagged images, prefix filter), the
//! copy (manifests as stored, a multi-part blob byte for byte, digest-preserving puts and
//! their conflicts, repository creation with settings, cross-account through `AssumeRole`,
//! throttling absorbed by adaptive retry) and ECR's native backfill; and the same listing as
//! the lost-push check reads it (`ecr_listing`).
//!
//! Every test works in accounts of its own (`support::unique_account`), so tests share one
//! test bed without seeing each other's registries.
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use aws_sdk_ecr::types::{ImageIdentifier, ImageTagMutability};
use replwatch_aws::ecr::CrossAccountAccess;
use replwatch_aws::ecr_copy::{CopyOptions, EcrCopyRegistry, MIN_PART_SIZE};
use replwatch_aws::ecr_inventory::{EcrInventoryReader, InventoryOptions};
use replwatch_aws::ecr_listing::EcrSourceImages;
use replwatch_aws::ecr_native_backfill::EcrNativeBackfill;
use replwatch_aws::ecr_repositories::{
    CREATED_BY_TAG_KEY, CREATED_BY_TAG_VALUE, EcrRepositoryCreator,
};
use replwatch_core::backfill::inventory::{
    Encryption, RepositorySettings, ResourceTag, TagMutability,
};
use replwatch_core::backfill::port::{
    CopyRegistry, InventoryReader, NativeBackfillApi, NativeBackfillStatus, NativeImageResult,
    NativeStart, PutOutcome, RepositoryCreator,
};
use replwatch_core::lost_pushes::SourceImages;
use replwatch_core::model::AccountId;
use serde_json::json;
use support::*;

const SOURCE_REGION: &str = "us-west-2";
const COPY_ROLE: &str = "replwatch-backfill";

/// A native backfill result as (digest, tag, failure code, sub-image failure codes).
type NativeRow = (String, Option<String>, Option<String>, Vec<String>);

fn access() -> Option<CrossAccountAccess> {
    Some(CrossAccountAccess {
        role_name: COPY_ROLE.into(),
        external_id: Some("replwatch-test".into()),
        session_name: "replwatch-test".into(),
    })
}

async fn copier(home: &str, options: CopyOptions) -> EcrCopyRegistry {
    EcrCopyRegistry::with_options(
        config(home, SOURCE_REGION).await,
        AccountId::parse(home).expect("account"),
        access(),
        options,
    )
    .expect("copier")
}

async fn creator(home: &str) -> EcrRepositoryCreator {
    EcrRepositoryCreator::new(
        config(home, SOURCE_REGION).await,
        AccountId::parse(home).expect("account"),
        access(),
    )
}

fn lifecycle_policy() -> String {
    json!({"rules": [{
        "rulePriority": 1, "description": "expire untagged",
        "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14},
        "action": {"type": "expire"}
    }]})
    .to_string()
}

fn repository_policy() -> String {
    json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "pull", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
        "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    }]})
    .to_string()
}

fn same_json(a: Option<&str>, b: Option<&str>) -> bool {
    let parse = |t: Option<&str>| t.map(|t| serde_json::from_str::<serde_json::Value>(t).ok());
    parse(a) == parse(b)
}

#[tokio::test]
async fn inventory_reads_settings_tags_and_untagged_images_of_the_selected_repositories() {
    let account = unique_account();
    let ecr = ecr(&account, SOURCE_REGION).await;
    ecr.create_repository()
        .repository_name("inv/app")
        .image_scanning_configuration(
            aws_sdk_ecr::types::ImageScanningConfiguration::builder()
                .scan_on_push(true)
                .build(),
        )
        .send()
        .await
        .expect("create inv/app");
    create_repository(&ecr, "inv/lib").await;
    create_repository(&ecr, "other/skip").await;
    ecr.put_lifecycle_policy()
        .repository_name("inv/lib")
        .lifecycle_policy_text(lifecycle_policy())
        .send()
        .await
        .expect("lifecycle policy");
    ecr.set_repository_policy()
        .repository_name("inv/lib")
        .policy_text(repository_policy())
        .send()
        .await
        .expect("repository policy");

    let v1 = push_image(&ecr, "inv/app", Some("v1"), "app-v1").await;
    let untagged = push_image(&ecr, "inv/app", None, "app-untagged").await;
    let lib = push_image(&ecr, "inv/lib", Some("1.0"), "lib").await;
    ecr.put_image()
        .repository_name("inv/lib")
        .image_manifest(&lib.manifest)
        .image_manifest_media_type(&lib.media_type)
        .image_tag("stable")
        .send()
        .await
        .expect("second tag");
    push_image(&ecr, "other/skip", Some("v1"), "skip").await;
    // Set after the pushes: the test bed (moto 5.2.5) fails an untagged PutImage into a
    // repository with exclusion filters (HTTP 500).
    ecr.put_image_tag_mutability()
        .repository_name("inv/app")
        .image_tag_mutability(ImageTagMutability::ImmutableWithExclusion)
        .image_tag_mutability_exclusion_filters(
            aws_sdk_ecr::types::ImageTagMutabilityExclusionFilter::builder()
                .filter_type(aws_sdk_ecr::types::ImageTagMutabilityExclusionFilterType::Wildcard)
                .filter("latest")
                .build()
                .expect("filter"),
        )
        .send()
        .await
        .expect("tag mutability with exclusions");

    // Pages of one: the reader follows every nextToken (the test bed answers in one page;
    // `ecr_inventory_pages` checks the paging against a server that pages).
    let reader = EcrInventoryReader::with_options(
        config(&account, SOURCE_REGION).await,
        AccountId::parse(&account).expect("account"),
        None,
        InventoryOptions {
            concurrency: 2,
            page_size: 1,
            ..InventoryOptions::default()
        },
    );
    let registry = destination(SOURCE_REGION, &account);
    let inventory = reader
        .repositories(&registry, &["inv/".to_owned()])
        .await
        .expect("inventory");
    let names: Vec<&str> = inventory.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["inv/app", "inv/lib"]);

    let app = &inventory[0];
    assert_eq!(
        app.settings.tag_mutability,
        TagMutability::ImmutableWithExclusion {
            mutable_tags: vec!["latest".into()]
        }
    );
    assert!(app.settings.scan_on_push);
    assert_eq!(app.settings.encryption.encryption_type, "AES256");
    assert_eq!(app.settings.lifecycle_policy, None);
    assert_eq!(app.settings.repository_policy, None);
    let mut app_images: Vec<(String, Vec<String>)> = app
        .images
        .iter()
        .map(|i| (i.digest.as_str().to_owned(), i.tags.clone()))
        .collect();
    app_images.sort();
    let mut expected = vec![
        (v1.digest.clone(), vec!["v1".to_owned()]),
        (untagged.digest.clone(), vec![]),
    ];
    expected.sort();
    assert_eq!(app_images, expected);
    assert!(app.images.iter().all(|i| i.pushed_at.is_some()));
    assert!(
        app.images
            .iter()
            .all(|i| i.media_type.as_deref() == Some(MANIFEST_MEDIA_TYPE))
    );

    let lib_inventory = &inventory[1];
    assert_eq!(
        lib_inventory.settings.tag_mutability,
        TagMutability::Mutable
    );
    assert!(!lib_inventory.settings.scan_on_push);
    assert!(same_json(
        lib_inventory.settings.lifecycle_policy.as_deref(),
        Some(&lifecycle_policy())
    ));
    assert!(same_json(
        lib_inventory.settings.repository_policy.as_deref(),
        Some(&repository_policy())
    ));
    assert_eq!(lib_inventory.images.len(), 1);
    let mut tags = lib_inventory.images[0].tags.clone();
    tags.sort();
    assert_eq!(tags, ["1.0", "stable"]);

    // No prefix: every repository.
    let all = reader.repositories(&registry, &[]).await.expect("all");
    assert_eq!(all.len(), 3);
}

#[tokio::test]
async fn a_multi_part_blob_crosses_byte_for_byte_and_only_once() {
    let account = unique_account();
    let source_ecr = ecr(&account, SOURCE_REGION).await;
    let destination_ecr = ecr(&account, "eu-west-1").await;
    create_repository(&source_ecr, "blob/src").await;
    create_repository(&destination_ecr, "blob/dst").await;
    // 12 MiB of bytes that differ from part to part, so a misplaced part changes the digest.
    let blob: Vec<u8> = (0..12 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let blob_digest = upload_blob(&source_ecr, "blob/src", &blob).await;

    let copy = copier(
        &account,
        CopyOptions {
            part_size: MIN_PART_SIZE,
            ..CopyOptions::default()
        },
    )
    .await;
    let source = destination(SOURCE_REGION, &account);
    let target = destination("eu-west-1", &account);
    let (src_repo, dst_repo) = (repository("blob/src"), repository("blob/dst"));
    let blob_digest = digest(&blob_digest);

    let missing = copy
        .missing_blobs(&target, &dst_repo, std::slice::from_ref(&blob_digest))
        .await
        .expect("missing before");
    assert_eq!(missing, vec![blob_digest.clone()]);

    let sent = copy
        .transfer_blob(&source, &src_repo, &target, &dst_repo, &blob_digest)
        .await
        .expect("transfer");
    assert_eq!(sent, blob.len() as u64);
    assert_eq!(
        download_blob(&destination_ecr, "blob/dst", blob_digest.as_str()).await,
        blob
    );
    let calls = control(
        "GET",
        &format!("/_localaws/calls?account={account}&region=eu-west-1"),
        json!(null),
    )
    .await;
    assert_eq!(
        calls["layer_parts"],
        json!([{"account": account, "region": "eu-west-1", "repository": "blob/dst",
                "parts": 3, "bytes": blob.len()}])
    );

    let missing = copy
        .missing_blobs(&target, &dst_repo, std::slice::from_ref(&blob_digest))
        .await
        .expect("missing after");
    assert!(missing.is_empty(), "{missing:?}");
    // Again: ECR already has it, nothing counted.
    let again = copy
        .transfer_blob(&source, &src_repo, &target, &dst_repo, &blob_digest)
        .await
        .expect("transfer again");
    assert_eq!(again, 0);

    // More than one batch of 100, and a repository that does not exist.
    let mut many: Vec<_> = (0..150u32)
        .map(|i| digest(&sha256_digest(&i.to_be_bytes())))
        .collect();
    many.push(blob_digest.clone());
    let missing = copy
        .missing_blobs(&target, &dst_repo, &many)
        .await
        .expect("missing of many");
    assert_eq!(missing, many[..150].to_vec());
    let missing = copy
        .missing_blobs(&target, &repository("blob/none"), &many)
        .await
        .expect("missing in a missing repository");
    assert_eq!(missing, many);
}

#[tokio::test]
async fn puts_keep_the_digest_and_report_existing_images_and_immutable_tags() {
    let account = unique_account();
    let source_ecr = ecr(&account, SOURCE_REGION).await;
    let destination_ecr = ecr(&account, "us-east-1").await;
    create_repository(&source_ecr, "put/app").await;
    destination_ecr
        .create_repository()
        .repository_name("put/app")
        .image_tag_mutability(ImageTagMutability::Immutable)
        .send()
        .await
        .expect("immutable destination");
    let image = push_image(&source_ecr, "put/app", Some("v1"), "put-v1").await;
    let arm = push_image(&source_ecr, "put/app", None, "put-arm").await;
    let index = push_index(&source_ecr, "put/app", Some("multi"), &[&image, &arm]).await;

    let copy = copier(&account, CopyOptions::default()).await;
    let source = destination(SOURCE_REGION, &account);
    let target = destination("us-east-1", &account);
    let repo = repository("put/app");

    let record = copy
        .image(&source, &repo, &digest(&image.digest))
        .await
        .expect("image")
        .expect("present");
    assert_eq!(record.tags, ["v1"]);
    assert_eq!(
        copy.image(&target, &repo, &digest(&image.digest))
            .await
            .expect("absent image"),
        None
    );
    assert_eq!(
        copy.image(&target, &repository("put/none"), &digest(&image.digest))
            .await
            .expect("absent repository"),
        None
    );

    // The manifest exactly as pushed, and the index as an index.
    let manifest = copy
        .manifest(&source, &repo, &digest(&image.digest))
        .await
        .expect("manifest");
    assert_eq!(manifest.bytes, image.manifest.as_bytes());
    assert_eq!(manifest.media_type, MANIFEST_MEDIA_TYPE);
    let index_manifest = copy
        .manifest(&source, &repo, &digest(&index.digest))
        .await
        .expect("index manifest");
    assert_eq!(index_manifest.bytes, index.manifest.as_bytes());
    assert_eq!(index_manifest.media_type, INDEX_MEDIA_TYPE);

    for (blob, _) in &image.blobs {
        copy.transfer_blob(&source, &repo, &target, &repo, &digest(blob))
            .await
            .expect("blob");
    }
    let put = copy
        .put_manifest(
            &target,
            &repo,
            &manifest,
            &digest(&image.digest),
            Some("v1"),
        )
        .await
        .expect("put");
    assert_eq!(put, PutOutcome::Written);
    let stored = destination_ecr
        .describe_images()
        .repository_name("put/app")
        .image_ids(ImageIdentifier::builder().image_tag("v1").build())
        .send()
        .await
        .expect("describe");
    assert_eq!(
        stored.image_details()[0].image_digest(),
        Some(image.digest.as_str())
    );

    let again = copy
        .put_manifest(
            &target,
            &repo,
            &manifest,
            &digest(&image.digest),
            Some("v1"),
        )
        .await
        .expect("put again");
    assert_eq!(again, PutOutcome::AlreadyThere);

    // `v2` is taken in the immutable destination by another image.
    let other = push_image(&destination_ecr, "put/app", Some("v2"), "someone-else").await;
    assert_ne!(other.digest, image.digest);
    let conflict = copy
        .put_manifest(
            &target,
            &repo,
            &manifest,
            &digest(&image.digest),
            Some("v2"),
        )
        .await
        .expect("put over an immutable tag");
    assert_eq!(conflict, PutOutcome::TagImmutable);

    // A digest that is not the manifest's is refused by ECR, not stored under another name.
    let wrong = copy
        .put_manifest(&target, &repo, &manifest, &digest(&arm.digest), None)
        .await
        .expect_err("digest mismatch");
    assert_eq!(wrong.operation, "PutImage");
    assert!(!wrong.retryable);
}

#[tokio::test]
async fn throttled_puts_are_absorbed_by_adaptive_retry() {
    let account = unique_account();
    let ecr_client = ecr(&account, SOURCE_REGION).await;
    create_repository(&ecr_client, "throttle/app").await;
    create_repository(&ecr(&account, "us-east-1").await, "throttle/app").await;
    let image = push_image(&ecr_client, "throttle/app", Some("v1"), "throttled").await;
    let copy = copier(&account, CopyOptions::default()).await;
    let (source, target) = (
        destination(SOURCE_REGION, &account),
        destination("us-east-1", &account),
    );
    let repo = repository("throttle/app");
    for (blob, _) in &image.blobs {
        copy.transfer_blob(&source, &repo, &target, &repo, &digest(blob))
            .await
            .expect("blob");
    }
    let manifest = copy
        .manifest(&source, &repo, &digest(&image.digest))
        .await
        .expect("manifest");
    control(
        "POST",
        "/_localaws/faults",
        json!({"ecr": {"PutImage": {"throttle_next": 2, "account": account}}}),
    )
    .await;
    let put = copy
        .put_manifest(
            &target,
            &repo,
            &manifest,
            &digest(&image.digest),
            Some("v1"),
        )
        .await;
    control(
        "DELETE",
        &format!("/_localaws/faults?account={account}"),
        json!(null),
    )
    .await;
    assert_eq!(put.expect("put through throttling"), PutOutcome::Written);
    let calls = control(
        "GET",
        &format!("/_localaws/calls?account={account}&region=us-east-1"),
        json!(null),
    )
    .await;
    let put_calls = calls["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .find(|c| c["operation"] == "PutImage")
        .cloned()
        .expect("PutImage counted");
    assert_eq!(put_calls["throttled"], 2);
    assert_eq!(put_calls["count"], 3);
}

#[tokio::test]
async fn repositories_are_created_with_their_settings_once_and_marked_as_the_backfill_s() {
    let account = unique_account();
    let create = creator(&account).await;
    let target = destination("eu-central-1", &account);
    let settings = RepositorySettings {
        tag_mutability: TagMutability::MutableWithExclusion {
            immutable_tags: vec!["v*".into(), "release-*".into()],
        },
        scan_on_push: true,
        encryption: Encryption {
            encryption_type: "KMS".into(),
            kms_key: Some(format!(
                "arn:aws:kms:eu-central-1:{account}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            )),
        },
        lifecycle_policy: Some(lifecycle_policy()),
        repository_policy: Some(repository_policy()),
        resource_tags: vec![ResourceTag {
            key: "team".into(),
            value: "platform".into(),
        }],
    };
    let repo = repository("created/app");
    assert!(
        create
            .create_repository(&target, &repo, &settings)
            .await
            .expect("create")
    );
    assert!(
        !create
            .create_repository(&target, &repo, &settings)
            .await
            .expect("create again")
    );

    // Read back through the inventory: the same settings.
    let reader = EcrInventoryReader::new(
        config(&account, "eu-central-1").await,
        AccountId::parse(&account).expect("account"),
        None,
    );
    let inventory = reader
        .repositories(&target, &["created/".to_owned()])
        .await
        .expect("inventory");
    assert_eq!(inventory.len(), 1);
    let read = &inventory[0].settings;
    assert_eq!(read.tag_mutability, settings.tag_mutability);
    assert_eq!(read.scan_on_push, settings.scan_on_push);
    assert_eq!(read.encryption, settings.encryption);
    assert!(same_json(
        read.lifecycle_policy.as_deref(),
        settings.lifecycle_policy.as_deref()
    ));
    assert!(same_json(
        read.repository_policy.as_deref(),
        settings.repository_policy.as_deref()
    ));
    assert!(inventory[0].images.is_empty());

    // With the template's tags, and marked at creation, so the roles' policy writes reach it
    // and no repository of anyone else.
    let ecr = ecr(&account, "eu-central-1").await;
    let tags_of = |name: &'static str| {
        let ecr = ecr.clone();
        let arn = format!("arn:aws:ecr:eu-central-1:{account}:repository/{name}");
        async move {
            let listed = ecr
                .list_tags_for_resource()
                .resource_arn(arn)
                .send()
                .await
                .expect("tags");
            listed
                .tags()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect::<Vec<_>>()
        }
    };
    let mut tags = tags_of("created/app").await;
    tags.sort();
    assert_eq!(
        tags,
        [
            (
                CREATED_BY_TAG_KEY.to_owned(),
                CREATED_BY_TAG_VALUE.to_owned()
            ),
            ("team".to_owned(), "platform".to_owned())
        ]
    );
    // A repository that already existed is neither marked nor given the source's policies.
    create_repository(&ecr, "created/theirs").await;
    assert!(
        !create
            .create_repository(&target, &repository("created/theirs"), &settings)
            .await
            .expect("existing")
    );
    assert_eq!(tags_of("created/theirs").await, []);
    let theirs = reader
        .repositories(&target, &["created/theirs".to_owned()])
        .await
        .expect("inventory");
    assert_eq!(theirs[0].settings.repository_policy, None);
    assert_eq!(theirs[0].settings.lifecycle_policy, None);

    // Without policies: none set.
    let plain = RepositorySettings {
        tag_mutability: TagMutability::Immutable,
        scan_on_push: false,
        encryption: Encryption {
            encryption_type: "AES256".into(),
            kms_key: None,
        },
        lifecycle_policy: None,
        repository_policy: None,
        resource_tags: Vec::new(),
    };
    assert!(
        create
            .create_repository(&target, &repository("created/plain"), &plain)
            .await
            .expect("create plain")
    );
    let inventory = reader
        .repositories(&target, &["created/plain".to_owned()])
        .await
        .expect("inventory");
    assert_eq!(inventory[0].settings, plain);
}

#[tokio::test]
async fn an_image_crosses_into_another_account_through_the_assumed_role() {
    let home = unique_account();
    let other = unique_account();
    let source_ecr = ecr(&home, SOURCE_REGION).await;
    create_repository(&source_ecr, "xacct/app").await;
    let layer: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let image =
        push_image_with_layers(&source_ecr, "xacct/app", Some("v1"), "xacct", &[layer]).await;

    let copy = copier(&home, CopyOptions::default()).await;
    let source = destination(SOURCE_REGION, &home);
    let target = destination("eu-west-1", &other);
    let repo = repository("xacct/app");
    let settings = RepositorySettings {
        tag_mutability: TagMutability::Immutable,
        scan_on_push: false,
        encryption: Encryption {
            encryption_type: "AES256".into(),
            kms_key: None,
        },
        lifecycle_policy: None,
        repository_policy: None,
        resource_tags: Vec::new(),
    };
    assert!(
        creator(&home)
            .await
            .create_repository(&target, &repo, &settings)
            .await
            .expect("create in the other account")
    );
    let blobs: Vec<_> = image.blobs.iter().map(|(d, _)| digest(d)).collect();
    let missing = copy
        .missing_blobs(&target, &repo, &blobs)
        .await
        .expect("missing");
    assert_eq!(missing, blobs);
    let mut sent = 0;
    for blob in &missing {
        sent += copy
            .transfer_blob(&source, &repo, &target, &repo, blob)
            .await
            .expect("blob");
    }
    assert_eq!(
        sent,
        image.blobs.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
    let manifest = copy
        .manifest(&source, &repo, &digest(&image.digest))
        .await
        .expect("manifest");
    let put = copy
        .put_manifest(
            &target,
            &repo,
            &manifest,
            &digest(&image.digest),
            Some("v1"),
        )
        .await
        .expect("put");
    assert_eq!(put, PutOutcome::Written);

    // The other account sees it with its own credentials, same digest and tag.
    let other_ecr = ecr(&other, "eu-west-1").await;
    let described = other_ecr
        .describe_images()
        .repository_name("xacct/app")
        .send()
        .await
        .expect("describe in the other account");
    let details = described.image_details();
    assert_eq!(details.len(), 1);
    assert_eq!(details[0].image_digest(), Some(image.digest.as_str()));
    assert_eq!(details[0].image_tags(), ["v1"]);
    // ...and the writes were made as that account.
    let calls = control(
        "GET",
        &format!("/_localaws/calls?account={other}&region=eu-west-1"),
        json!(null),
    )
    .await;
    let uploads = calls["layer_uploads"].as_array().expect("uploads");
    assert_eq!(uploads.len(), image.blobs.len());
    assert!(uploads.iter().all(|u| u["completed"] == 1));

    // No role configured: a clear, permanent error.
    let no_role = EcrCopyRegistry::new(
        config(&home, SOURCE_REGION).await,
        AccountId::parse(&home).expect("account"),
        None,
    )
    .expect("copier");
    let error = no_role
        .image(&target, &repo, &digest(&image.digest))
        .await
        .expect_err("no role");
    assert_eq!(error.operation, "AssumeRole");
    assert!(!error.retryable);
}

#[tokio::test]
async fn native_backfills_start_wait_their_turn_and_report_per_image() {
    let account = unique_account();
    let partner = unique_account();
    let ecr_client = ecr(&account, SOURCE_REGION).await;
    create_repository(&ecr_client, "native/app").await;
    let image = push_image(&ecr_client, "native/app", Some("v1"), "native").await;
    ecr_client
        .put_image()
        .repository_name("native/app")
        .image_manifest(&image.manifest)
        .image_manifest_media_type(&image.media_type)
        .image_tag("stable")
        .send()
        .await
        .expect("second tag");
    let index = push_index(&ecr_client, "native/app", Some("multi"), &[&image]).await;
    ecr_client
        .put_replication_configuration()
        .replication_configuration(
            aws_sdk_ecr::types::ReplicationConfiguration::builder()
                .rules(
                    aws_sdk_ecr::types::ReplicationRule::builder()
                        .destinations(
                            aws_sdk_ecr::types::ReplicationDestination::builder()
                                .region("eu-west-1")
                                .registry_id(&partner)
                                .build()
                                .expect("destination"),
                        )
                        .destinations(
                            aws_sdk_ecr::types::ReplicationDestination::builder()
                                .region("ap-southeast-2")
                                .registry_id(&account)
                                .build()
                                .expect("destination"),
                        )
                        .repository_filters(
                            aws_sdk_ecr::types::RepositoryFilter::builder()
                                .filter("native/")
                                .filter_type(aws_sdk_ecr::types::RepositoryFilterType::PrefixMatch)
                                .build()
                                .expect("filter"),
                        )
                        .build()
                        .expect("rule"),
                )
                .build()
                .expect("configuration"),
        )
        .send()
        .await
        .expect("replication configuration");
    // The partner's registry permissions policy admits this account, as ECR requires.
    ecr(&partner, "eu-west-1")
        .await
        .put_registry_policy()
        .policy_text(
            json!({"Version": "2012-10-17", "Statement": [{
                "Sid": "ReplicationFromSource", "Effect": "Allow",
                "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
                "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
                "Resource": format!("arn:aws:ecr:eu-west-1:{partner}:repository/*")
            }]})
            .to_string(),
        )
        .send()
        .await
        .expect("partner's registry policy");
    control(
        "POST",
        "/_localaws/replication",
        json!({"destinations": {
            format!("eu-west-1/{partner}"): {"paused": true},
            format!("ap-southeast-2/{account}"): {"fail": true, "failure_code": "ACCESS_DENIED"}
        }}),
    )
    .await;

    let native = EcrNativeBackfill::new(
        config(&account, SOURCE_REGION).await,
        AccountId::parse(&account).expect("account"),
        None,
    );
    let source = destination(SOURCE_REGION, &account);
    let paused = destination("eu-west-1", &partner);
    let failing = destination("ap-southeast-2", &account);

    let NativeStart::Started(started) = native.start(&source, &paused).await.expect("start") else {
        panic!("not started");
    };
    assert_eq!(started.destination, paused);
    assert!(!started.status.is_terminal(), "{:?}", started.status);
    // One at a time per destination Region.
    assert_eq!(
        native.start(&source, &paused).await.expect("second start"),
        NativeStart::LimitReached
    );
    // Not in the replication configuration: refused, the plan copies instead.
    let refused = native
        .start(&source, &destination("sa-east-1", &account))
        .await
        .expect("start outside the configuration");
    assert!(
        matches!(&refused, NativeStart::Refused { reason } if reason.contains("ValidationException")),
        "{refused:?}"
    );
    let NativeStart::Started(failed) = native.start(&source, &failing).await.expect("start") else {
        panic!("not started");
    };

    control(
        "POST",
        "/_localaws/replication/flush",
        json!({"source_account": account}),
    )
    .await;
    let listed = native.list(&source).await.expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    let done = listed.iter().find(|b| b.id == started.id).expect("listed");
    assert_eq!(done.destination, paused);
    assert_eq!(done.status, NativeBackfillStatus::Complete);
    let failed_summary = listed.iter().find(|b| b.id == failed.id).expect("listed");
    assert!(
        matches!(failed_summary.status, NativeBackfillStatus::Failed { .. }),
        "{:?}",
        failed_summary.status
    );

    // One result per image and tag, kept whole.
    let by_tag = |results: &[NativeImageResult]| {
        let mut out: Vec<NativeRow> = results
            .iter()
            .map(|r| {
                assert_eq!(r.repository.as_str(), "native/app");
                (
                    r.digest.as_str().to_owned(),
                    r.tag.clone(),
                    r.failure.clone(),
                    r.sub_image_failures.clone(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let results = native.results(&source, &started.id).await.expect("results");
    let mut expected = vec![
        (
            image.digest.clone(),
            Some("stable".to_owned()),
            None,
            vec![],
        ),
        (image.digest.clone(), Some("v1".to_owned()), None, vec![]),
        (index.digest.clone(), Some("multi".to_owned()), None, vec![]),
    ];
    expected.sort();
    assert_eq!(by_tag(&results), expected);
    let results = native.results(&source, &failed.id).await.expect("results");
    let denied = Some("ACCESS_DENIED".to_owned());
    let mut expected = vec![
        (
            image.digest.clone(),
            Some("stable".to_owned()),
            denied.clone(),
            vec![],
        ),
        (
            image.digest.clone(),
            Some("v1".to_owned()),
            denied.clone(),
            vec![],
        ),
        (
            index.digest.clone(),
            Some("multi".to_owned()),
            denied.clone(),
            vec!["ACCESS_DENIED".to_owned()],
        ),
    ];
    expected.sort();
    assert_eq!(by_tag(&results), expected);

    let unknown = native
        .results(&source, "00000000-0000-0000-0000-000000000000")
        .await
        .expect_err("unknown backfill");
    assert!(!unknown.retryable);

    control(
        "POST",
        "/_localaws/replication",
        json!({"destinations": {
            format!("eu-west-1/{partner}"): null,
            format!("ap-southeast-2/{account}"): null
        }}),
    )
    .await;
}

#[tokio::test]
async fn source_images_lists_the_selected_repositories_and_their_images_with_push_times() {
    let account = unique_account();
    let ecr = ecr(&account, SOURCE_REGION).await;
    create_repository(&ecr, "watched/app").await;
    create_repository(&ecr, "other/tool").await;
    let before = chrono::Utc::now() - chrono::TimeDelta::seconds(2);
    let tagged = push_image(&ecr, "watched/app", Some("v1"), "watched-v1").await;
    let untagged = push_image(&ecr, "watched/app", None, "watched-untagged").await;
    push_image(&ecr, "other/tool", Some("v1"), "tool").await;
    let after = chrono::Utc::now() + chrono::TimeDelta::seconds(2);

    let lister = EcrSourceImages::new(
        config(&account, SOURCE_REGION).await,
        AccountId::parse(&account).expect("account"),
    );
    let registry = destination(SOURCE_REGION, &account);
    let names = lister
        .repository_names(&registry, &["watched/".to_owned()])
        .await
        .expect("repositories");
    assert_eq!(names, vec![repository("watched/app")]);

    let mut images: Vec<(String, Vec<String>)> = lister
        .images(&registry, &repository("watched/app"))
        .await
        .expect("images")
        .expect("the repository exists")
        .into_iter()
        .map(|image| {
            let pushed_at = image.pushed_at.expect("imagePushedAt");
            assert!(before <= pushed_at && pushed_at <= after, "{pushed_at}");
            (image.digest.to_string(), image.tags)
        })
        .collect();
    images.sort();
    let mut expected = vec![
        (tagged.digest, vec!["v1".to_owned()]),
        (untagged.digest, Vec::new()),
    ];
    expected.sort();
    assert_eq!(images, expected);

    let gone = lister
        .images(&registry, &repository("watched/gone"))
        .await
        .expect("a missing repository is no error");
    assert_eq!(gone, None);
}

/// The other account's CloudTrail names the caller by its role session: each function's own
/// name, so the copier's writes there are told from the reader's reads.
#[tokio::test]
async fn another_account_sees_the_function_s_name_as_the_session() {
    let (home, other) = (unique_account(), unique_account());
    let home_account = AccountId::parse(&home).expect("account");
    let access = CrossAccountAccess {
        role_name: COPY_ROLE.into(),
        external_id: Some("replwatch-test".into()),
        session_name: CrossAccountAccess::session_name_for("replwatch-BackfillCopyFunction-1A2B3C"),
    };
    let provider = replwatch_aws::ecr_clients::assumed_role(
        &config(&home, SOURCE_REGION).await,
        &home_account,
        Some(&access),
        &AccountId::parse(&other).expect("account"),
        &replwatch_core::model::Region::parse("eu-west-1").expect("region"),
    )
    .await
    .expect("role")
    .expect("another account takes the role");
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(&config(&home, SOURCE_REGION).await)
            .credentials_provider(provider)
            .build(),
    );
    let caller = sts.get_caller_identity().send().await.expect("caller");
    assert_eq!(
        caller.arn(),
        Some(
            format!("arn:aws:sts::{other}:assumed-role/{COPY_ROLE}/replwatch-BackfillCopyFunction-1A2B3C")
                .as_str()
        )
    );
}

#[test]
fn a_session_name_keeps_to_what_sts_accepts() {
    assert_eq!(
        CrossAccountAccess::session_name_for("replwatch-sweep"),
        "replwatch-sweep"
    );
    assert_eq!(CrossAccountAccess::session_name_for("a b/c:d"), "a-b-c-d");
    assert_eq!(CrossAccountAccess::session_name_for(""), "--");
    assert_eq!(
        CrossAccountAccess::session_name_for(&"x".repeat(80)).len(),
        64
    );
}
