//! The local AWS replicates like ECR, seen through the real aws-sdk-rust clients and parsed by
//! replwatch's own event model: push → PUSH event on the source bus → the image in a
//! same-account and a cross-account destination (read through STS AssumeRole) → REPLICATE
//! events there → DescribeImageReplicationStatus COMPLETE; an image pushed before the
//! configuration stays where it is.

use std::time::Duration;

use aws_sdk_ecr::types::{ImageIdentifier, ReplicationStatus};
use replwatch_core::events::{ImageActionKind, ReplicationResult};
use replwatch_core::{EcrEvent, ReplicationConfiguration};
use testbed::{LocalAws, unique_account};

const SOURCE_REGION: &str = "us-west-2";
const SAME_ACCOUNT_REGION: &str = "us-east-1";
const CROSS_ACCOUNT_REGION: &str = "eu-west-1";
const WAIT: Duration = Duration::from_secs(20);

fn configuration(json: serde_json::Value) -> ReplicationConfiguration {
    serde_json::from_value(json).expect("valid replication configuration")
}

fn local() -> LocalAws {
    LocalAws::from_env().unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_push_reaches_same_and_cross_account_destinations_with_events_and_status() {
    let aws = local();
    let source = unique_account();
    let other = unique_account();
    let repository = "app/web";

    let push_queue = aws
        .event_queue(&source, SOURCE_REGION, "pushes", "ECR Image Action")
        .await
        .expect("push queue");
    let same_queue = aws
        .event_queue(
            &source,
            SAME_ACCOUNT_REGION,
            "replications",
            "ECR Replication Action",
        )
        .await
        .expect("same-account replication queue");
    let cross_queue = aws
        .event_queue(
            &other,
            CROSS_ACCOUNT_REGION,
            "replications",
            "ECR Replication Action",
        )
        .await
        .expect("cross-account replication queue");

    let rules = configuration(serde_json::json!({"rules": [{
        "destinations": [
            {"region": SAME_ACCOUNT_REGION, "registryId": source},
            {"region": CROSS_ACCOUNT_REGION, "registryId": other}
        ],
        "repositoryFilters": [{"filter": "app/", "filterType": "PREFIX_MATCH"}]
    }]}));
    aws.put_replication_configuration(&source, SOURCE_REGION, &rules)
        .await
        .expect("replication rules");
    // The destination's registry permissions policy admits the source, as ECR requires.
    aws.allow_replication_from(&other, CROSS_ACCOUNT_REGION, &source)
        .await
        .expect("registry policy");
    let ecr = aws.ecr(&source, SOURCE_REGION).await;
    ecr.create_repository()
        .repository_name(repository)
        .send()
        .await
        .expect("repository");
    let image = aws
        .push_image(&source, SOURCE_REGION, repository, Some("v1.4.2"), "e2e-1")
        .await
        .expect("push");

    // The PUSH event, in the documented shape, parsed by replwatch itself.
    let pushes = aws
        .receive_events(&source, SOURCE_REGION, &push_queue, 1, WAIT)
        .await
        .expect("push events");
    let [EcrEvent::Image(push)] = pushes.as_slice() else {
        panic!("expected one image event, got {pushes:?}")
    };
    assert_eq!(push.action, ImageActionKind::Push);
    assert_eq!(push.image.digest.as_str(), image.digest);
    assert_eq!(push.tag.as_deref(), Some("v1.4.2"));
    assert_eq!(
        push.envelope.account.as_str(),
        source,
        "the account field survives delivery"
    );
    assert_eq!(push.envelope.region.as_str(), SOURCE_REGION);

    aws.flush_replication(&source).expect("flush");

    // Same account, other Region: identical manifest and tag.
    let replica = aws
        .ecr(&source, SAME_ACCOUNT_REGION)
        .await
        .batch_get_image()
        .repository_name(repository)
        .image_ids(
            ImageIdentifier::builder()
                .image_digest(&image.digest)
                .build(),
        )
        .send()
        .await
        .expect("BatchGetImage in the same-account destination");
    let found = &replica.images()[0];
    assert_eq!(found.image_manifest(), Some(image.manifest.as_str()));
    assert_eq!(found.image_id().and_then(|i| i.image_tag()), Some("v1.4.2"));

    // Other account, read the way replwatch will: AssumeRole into its reader role.
    let reader = aws
        .assumed(
            &source,
            &format!("arn:aws:iam::{other}:role/replwatch-reader"),
            CROSS_ACCOUNT_REGION,
        )
        .await
        .expect("assume role");
    let cross = aws_sdk_ecr::Client::new(&reader);
    let details = cross
        .describe_images()
        .repository_name(repository)
        .image_ids(
            ImageIdentifier::builder()
                .image_digest(&image.digest)
                .build(),
        )
        .send()
        .await
        .expect("DescribeImages in the cross-account destination");
    assert_eq!(details.image_details()[0].image_tags(), ["v1.4.2"]);
    // Its blobs came along, byte for byte.
    for (digest, bytes) in &image.blobs {
        let url = cross
            .get_download_url_for_layer()
            .repository_name(repository)
            .layer_digest(digest)
            .send()
            .await
            .expect("GetDownloadUrlForLayer")
            .download_url()
            .expect("download url")
            .to_owned();
        assert_eq!(
            &aws.get(&url).expect("blob download"),
            bytes,
            "blob {digest}"
        );
    }

    // A REPLICATE event in each destination account and Region.
    for (account, region, queue) in [
        (&source, SAME_ACCOUNT_REGION, &same_queue),
        (&other, CROSS_ACCOUNT_REGION, &cross_queue),
    ] {
        let events = aws
            .receive_events(account, region, queue, 1, WAIT)
            .await
            .expect("replication events");
        let [EcrEvent::Replication(e)] = events.as_slice() else {
            panic!("expected one replication event in {region}, got {events:?}")
        };
        assert_eq!(e.result, ReplicationResult::Succeeded);
        assert_eq!(e.destination.region.as_str(), region);
        assert_eq!(e.destination.registry_id.as_str(), account.as_str());
        assert_eq!(e.source.registry.registry_id.as_str(), source);
        assert_eq!(e.source.digest.as_str(), image.digest);
        assert_eq!(e.tag.as_deref(), Some("v1.4.2"));
    }

    // The status API agrees.
    let status = ecr
        .describe_image_replication_status()
        .repository_name(repository)
        .image_id(
            ImageIdentifier::builder()
                .image_digest(&image.digest)
                .build(),
        )
        .send()
        .await
        .expect("DescribeImageReplicationStatus");
    let mut statuses: Vec<(String, String, ReplicationStatus)> = status
        .replication_statuses()
        .iter()
        .map(|s| {
            (
                s.region().unwrap_or_default().to_owned(),
                s.registry_id().unwrap_or_default().to_owned(),
                s.status().cloned().expect("status"),
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        vec![
            (
                CROSS_ACCOUNT_REGION.to_owned(),
                other.clone(),
                ReplicationStatus::Complete
            ),
            (
                SAME_ACCOUNT_REGION.to_owned(),
                source.clone(),
                ReplicationStatus::Complete
            ),
        ]
    );
}

#[tokio::test]
async fn an_image_pushed_before_the_configuration_is_not_replicated() {
    let aws = local();
    let source = unique_account();
    let repository = "app/old";
    let ecr = aws.ecr(&source, SOURCE_REGION).await;
    ecr.create_repository()
        .repository_name(repository)
        .send()
        .await
        .expect("repository");
    let old = aws
        .push_image(
            &source,
            SOURCE_REGION,
            repository,
            Some("v0"),
            "before-config",
        )
        .await
        .expect("push before configuration");
    let rules = configuration(serde_json::json!({"rules": [{
        "destinations": [{"region": SAME_ACCOUNT_REGION, "registryId": source}]
    }]}));
    aws.put_replication_configuration(&source, SOURCE_REGION, &rules)
        .await
        .expect("replication rules");
    let new = aws
        .push_image(
            &source,
            SOURCE_REGION,
            repository,
            Some("v1"),
            "after-config",
        )
        .await
        .expect("push after configuration");
    aws.flush_replication(&source).expect("flush");

    let destination = aws.ecr(&source, SAME_ACCOUNT_REGION).await;
    let listed = destination
        .list_images()
        .repository_name(repository)
        .send()
        .await
        .expect("ListImages in the destination");
    let digests: Vec<&str> = listed
        .image_ids()
        .iter()
        .filter_map(|i| i.image_digest())
        .collect();
    assert_eq!(
        digests,
        vec![new.digest.as_str()],
        "only the later push arrives"
    );
    assert_ne!(old.digest, new.digest);
}
