//! The ECR registry adapter against the local AWS: the status API per destination (in
//! progress, complete, failed with its code), tags read in a cross-account destination through
//! the reader role, the rules read back from `DescribeRegistry`, and "not found" told apart
//! from errors. The trust of `infra/destination-account.yaml`'s reader and backfill roles,
//! deployed from the template: who may assume them, with which external id.

use aws_sdk_ecr::types::ImageIdentifier;
use replwatch_aws::ecr::{CrossAccountAccess, EcrRegistry};
use replwatch_core::registry::{DestinationReplication, ImageReplicationStatus, Registry};
use replwatch_core::{
    AccountId, Destination, Digest, Region, ReplicationConfiguration, RepositoryName, SourceImage,
};
use testbed::{LocalAws, unique_account};

fn destination(region: &str, account: &str) -> Destination {
    Destination::new(
        Region::parse(region).expect("region"),
        AccountId::parse(account).expect("account"),
    )
}

struct Setup {
    aws: LocalAws,
    source: String,
    other: String,
    image: SourceImage,
    registry: EcrRegistry,
}

async fn setup(repository: &str) -> Setup {
    let aws = LocalAws::from_env().unwrap_or_else(|e| panic!("{e}"));
    let source = unique_account();
    let other = unique_account();
    let rules: ReplicationConfiguration = serde_json::from_value(serde_json::json!({"rules": [
        {"destinations": [{"region": "us-east-1", "registryId": source}],
         "repositoryFilters": [{"filter": "svc/", "filterType": "PREFIX_MATCH"}]},
        {"destinations": [{"region": "eu-west-1", "registryId": other}]}
    ]}))
    .expect("rules");
    aws.put_replication_configuration(&source, "us-west-2", &rules)
        .await
        .expect("rules");
    // The failing destination is keyed by its unique account, so parallel tests are unaffected.
    aws.configure_replication(&serde_json::json!({"destinations": {
        format!("eu-west-1/{other}"): {"paused": true}
    }}))
    .expect("pause the cross-account destination");
    let ecr = aws.ecr(&source, "us-west-2").await;
    ecr.create_repository()
        .repository_name(repository)
        .send()
        .await
        .expect("repository");
    let pushed = aws
        .push_image(&source, "us-west-2", repository, Some("v1"), repository)
        .await
        .expect("push");
    let image = SourceImage {
        registry: destination("us-west-2", &source),
        repository: RepositoryName::parse(repository).expect("repository"),
        digest: Digest::parse(&pushed.digest).expect("digest"),
    };
    let registry = EcrRegistry::new(
        aws.config(&source, "us-west-2").await,
        AccountId::parse(&source).expect("account"),
        Some(CrossAccountAccess {
            role_name: "replwatch-reader".into(),
            external_id: Some("replwatch-test".into()),
            session_name: "replwatch-test".into(),
        }),
    );
    Setup {
        aws,
        source,
        other,
        image,
        registry,
    }
}

#[tokio::test]
async fn statuses_follow_replication_per_destination() {
    let s = setup("svc/api").await;
    let same = destination("us-east-1", &s.source);
    let cross = destination("eu-west-1", &s.other);
    s.aws.flush_replication(&s.source).expect("flush");
    let status = s
        .registry
        .replication_status(&s.image)
        .await
        .expect("status");
    assert_eq!(
        status.for_destination(&same),
        Some(&DestinationReplication::Complete)
    );
    // Paused destinations stay in progress until flushed; flush runs paused jobs too, so
    // pause again and push another image to see IN_PROGRESS.
    let second = s
        .aws
        .push_image(&s.source, "us-west-2", "svc/api", Some("v2"), "second")
        .await
        .expect("push");
    let second = SourceImage {
        digest: Digest::parse(&second.digest).expect("digest"),
        ..s.image.clone()
    };
    let status = s
        .registry
        .replication_status(&second)
        .await
        .expect("status");
    assert_eq!(
        status.for_destination(&cross),
        Some(&DestinationReplication::InProgress)
    );

    // Tags in the cross-account destination, read through the reader role.
    let tags = s
        .registry
        .image_tags(&cross, &s.image.repository, &s.image.digest)
        .await
        .expect("tags");
    assert_eq!(tags, Some(vec!["v1".to_owned()]));
    let absent = s
        .registry
        .image_tags(&cross, &second.repository, &second.digest)
        .await
        .expect("tags of an image not there yet");
    assert_eq!(absent, None);
    let no_repository = s
        .registry
        .image_tags(
            &cross,
            &RepositoryName::parse("svc/none").expect("name"),
            &s.image.digest,
        )
        .await
        .expect("tags in a missing repository");
    assert_eq!(no_repository, None);
}

#[tokio::test]
async fn a_failed_destination_reports_its_failure_code() {
    let s = setup("svc/failing").await;
    s.aws
        .configure_replication(&serde_json::json!({"destinations": {
            format!("us-east-1/{}", s.source): {"fail": true, "failure_code": "KMS_KEY_NOT_FOUND"}
        }}))
        .expect("fail the same-account destination");
    let pushed = s
        .aws
        .push_image(&s.source, "us-west-2", "svc/failing", Some("v9"), "failing")
        .await
        .expect("push");
    s.aws.flush_replication(&s.source).expect("flush");
    let image = SourceImage {
        digest: Digest::parse(&pushed.digest).expect("digest"),
        ..s.image.clone()
    };
    let status = s.registry.replication_status(&image).await.expect("status");
    assert_eq!(
        status.for_destination(&destination("us-east-1", &s.source)),
        Some(&DestinationReplication::Failed {
            failure_code: Some("KMS_KEY_NOT_FOUND".into())
        })
    );
}

#[tokio::test]
async fn rules_read_back_and_a_deleted_source_is_not_found() {
    let s = setup("svc/rules").await;
    let rules = s
        .registry
        .replication_configuration(&s.image.registry)
        .await
        .expect("DescribeRegistry");
    rules.validate().expect("valid");
    assert_eq!(
        rules.destinations_for(&s.image.registry, &s.image.repository),
        vec![
            destination("us-east-1", &s.source),
            destination("eu-west-1", &s.other)
        ]
    );
    assert_eq!(
        rules.destinations_for(
            &s.image.registry,
            &RepositoryName::parse("web").expect("name")
        ),
        vec![destination("eu-west-1", &s.other)]
    );

    s.aws
        .ecr(&s.source, "us-west-2")
        .await
        .batch_delete_image()
        .repository_name("svc/rules")
        .image_ids(
            ImageIdentifier::builder()
                .image_digest(s.image.digest.as_str())
                .build(),
        )
        .send()
        .await
        .expect("delete");
    let status = s
        .registry
        .replication_status(&s.image)
        .await
        .expect("status");
    assert_eq!(status, ImageReplicationStatus::SourceImageNotFound);
}

#[tokio::test]
async fn another_account_without_a_reader_role_is_a_clear_error() {
    let s = setup("svc/norole").await;
    let registry = EcrRegistry::new(
        s.aws.config(&s.source, "us-west-2").await,
        AccountId::parse(&s.source).expect("account"),
        None,
    );
    let error = registry
        .image_tags(
            &destination("eu-west-1", &s.other),
            &s.image.repository,
            &s.image.digest,
        )
        .await
        .expect_err("no role configured");
    let text = error.to_string();
    assert!(
        text.contains("AssumeRole") && text.contains(&s.other),
        "{text}"
    );
    assert!(!error.retryable);
}

/// `AssumeRole` of `role_arn` with the caller's credentials: `Ok`, or the error code.
async fn assume(
    caller: &aws_config::SdkConfig,
    role_arn: &str,
    external_id: Option<&str>,
) -> Result<(), String> {
    aws_sdk_sts::Client::new(caller)
        .assume_role()
        .role_arn(role_arn)
        .role_session_name("trust-test")
        .set_external_id(external_id.map(str::to_owned))
        .send()
        .await
        .map_err(|e| {
            use aws_sdk_sts::error::ProvideErrorMetadata;
            e.code().unwrap_or_default().to_owned()
        })
        .map(|_| ())
}

/// A trust policy that lets `account`'s principals assume the role (the central stack's
/// function roles, as the test bed creates them).
fn trusts_account(account: &str) -> String {
    serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": account}, "Action": "sts:AssumeRole"}]})
    .to_string()
}

#[tokio::test]
async fn the_reader_role_admits_only_the_stack_s_roles_with_the_external_id() {
    use testbed::stack_templates::reader_trust_policy;

    let aws = LocalAws::from_env().unwrap_or_else(|e| panic!("{e}"));
    let (central, partner) = (unique_account(), unique_account());
    // infra/destination-account.yaml's trust policy, deployed in the partner account.
    let trust = reader_trust_policy(&central, "ext-1", None).expect("trust policy");
    aws.create_role(&partner, "replwatch-reader", &trust.to_string())
        .expect("reader role");
    for role in ["replwatch-SweepRole-1A2B3C", "ci-deployer"] {
        aws.create_role(&central, role, &trusts_account(&central))
            .expect("caller role");
    }
    let reader = format!("arn:aws:iam::{partner}:role/replwatch-reader");
    let as_role = |role: &'static str| {
        let arn = format!("arn:aws:iam::{central}:role/{role}");
        let aws = aws.clone();
        let central = central.clone();
        async move {
            aws.assumed(&central, &arn, "eu-west-1")
                .await
                .expect("caller role")
        }
    };
    let sweep = as_role("replwatch-SweepRole-1A2B3C").await;
    assert_eq!(assume(&sweep, &reader, Some("ext-1")).await, Ok(()));
    let refused = Err("AccessDenied".to_owned());
    assert_eq!(
        assume(&sweep, &reader, None).await,
        refused,
        "no external id"
    );
    assert_eq!(
        assume(&sweep, &reader, Some("guess")).await,
        refused,
        "another external id"
    );
    let deployer = as_role("ci-deployer").await;
    assert_eq!(
        assume(&deployer, &reader, Some("ext-1")).await,
        refused,
        "a role the pattern does not name"
    );
    let root = aws.config(&central, "eu-west-1").await;
    assert_eq!(
        assume(&root, &reader, Some("ext-1")).await,
        refused,
        "the account itself, not a role"
    );
}

#[tokio::test]
async fn the_backfill_role_takes_the_external_id_the_central_stack_gives_the_backfill() {
    use testbed::stack_templates::{AccountStack, central_backfill_external_id};

    let aws = LocalAws::from_env().unwrap_or_else(|e| panic!("{e}"));
    let refused = Err("AccessDenied".to_owned());
    // BackfillExternalId set in both stacks, then left empty in both.
    for backfill_external_id in [Some("backfill-1"), None] {
        let (central, partner) = (unique_account(), unique_account());
        // infra/destination-account.yaml (BackfillWriter=true), deployed in the partner account.
        let stack = AccountStack {
            central: &central,
            external_id: "reader-1",
            backfill_external_id,
            caller_pattern: None,
        };
        for (role, trust) in [
            ("replwatch-reader", stack.reader_trust_policy()),
            ("replwatch-backfill", stack.backfill_trust_policy()),
        ] {
            let trust = trust.expect("trust policy").to_string();
            aws.create_role(&partner, role, &trust).expect("role");
        }
        // What template.yaml, with the same parameters, gives backfill-plan and backfill-copy.
        let functions_id = central_backfill_external_id("reader-1", backfill_external_id)
            .expect("BACKFILL_EXTERNAL_ID");
        let caller = format!("arn:aws:iam::{central}:role/replwatch-BackfillPlanRole-1A2B3C");
        aws.create_role(
            &central,
            "replwatch-BackfillPlanRole-1A2B3C",
            &trusts_account(&central),
        )
        .expect("caller role");
        let planner = aws
            .assumed(&central, &caller, "eu-west-1")
            .await
            .expect("caller role");
        let reader = format!("arn:aws:iam::{partner}:role/replwatch-reader");
        let backfill = format!("arn:aws:iam::{partner}:role/replwatch-backfill");
        let case = format!("BackfillExternalId {backfill_external_id:?}");

        assert_eq!(
            assume(&planner, &backfill, Some(&functions_id)).await,
            Ok(()),
            "{case}: the backfill role takes the id the backfill functions are given"
        );
        assert_eq!(
            assume(&planner, &reader, Some("reader-1")).await,
            Ok(()),
            "{case}: the reader role takes the reader's id"
        );
        match backfill_external_id {
            Some(own) => {
                assert_eq!(functions_id, own);
                assert_eq!(
                    assume(&planner, &backfill, Some("reader-1")).await,
                    refused,
                    "{case}: the backfill role refuses the reader's id"
                );
                assert_eq!(
                    assume(&planner, &reader, Some(own)).await,
                    refused,
                    "{case}: the reader role refuses the backfill id"
                );
            }
            None => assert_eq!(functions_id, "reader-1", "{case}"),
        }
        assert_eq!(
            assume(&planner, &backfill, None).await,
            refused,
            "{case}: no external id"
        );
    }
}
