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
use testbed::{LocalAws, trusting_account, unique_account};

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
    // The destination's registry permissions policy admits the source, as ECR requires.
    aws.allow_replication_from(&other, "eu-west-1", &source)
        .await
        .expect("registry policy");
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

/// The central stack `replwatch`'s function roles in `central` (`template.yaml`'s path and
/// names, trusting the account as Lambda's service would be), and `replwatch-x`: a role anyone
/// of that account able to create roles could make. The reader and backfill roles of
/// `infra/destination-account.yaml`, deployed in `partner` for that stack.
async fn central_roles(aws: &LocalAws, central: &str, partner: &str) -> CentralRoles {
    use testbed::stack_templates::{AccountStack, central_function_role_arn};

    let stack = AccountStack {
        central,
        central_stack: None,
        external_id: "reader-1",
        backfill_external_id: "backfill-1",
        operator_roles: &[],
        previous_external_id: None,
    };
    for (role, trust) in [
        ("replwatch-reader", stack.reader_trust_policy()),
        ("replwatch-backfill", stack.backfill_trust_policy()),
    ] {
        let trust = trust.expect("trust policy").to_string();
        aws.create_role(partner, role, &trust).expect("role");
    }
    let as_role = |arn: String| {
        let aws = aws.clone();
        let central = central.to_owned();
        async move {
            let (path, name) = arn
                .split_once(":role")
                .and_then(|(_, rest)| rest.rsplit_once('/'))
                .expect("role path and name");
            aws.create_role_at(
                &central,
                &format!("{path}/"),
                name,
                &trusting_account(&central),
            )
            .expect("central role");
            aws.assumed(&central, &arn, "eu-west-1")
                .await
                .expect("caller role")
        }
    };
    let function = |name| central_function_role_arn(central, "replwatch", name).expect("role arn");
    CentralRoles {
        sweep: as_role(function("SweepFunction")).await,
        planner: as_role(function("BackfillPlanFunction")).await,
        copier: as_role(function("BackfillCopyFunction")).await,
        look_alike: as_role(format!("arn:aws:iam::{central}:role/replwatch-x")).await,
        look_alike_on_the_path: as_role(format!(
            "arn:aws:iam::{central}:role/replwatch/replwatch-sweep2"
        ))
        .await,
        root: aws.config(central, "eu-west-1").await,
        reader: format!("arn:aws:iam::{partner}:role/replwatch-reader"),
        backfill: format!("arn:aws:iam::{partner}:role/replwatch-backfill"),
    }
}

struct CentralRoles {
    sweep: aws_config::SdkConfig,
    planner: aws_config::SdkConfig,
    copier: aws_config::SdkConfig,
    look_alike: aws_config::SdkConfig,
    look_alike_on_the_path: aws_config::SdkConfig,
    root: aws_config::SdkConfig,
    reader: String,
    backfill: String,
}

#[tokio::test]
async fn the_reader_role_admits_only_the_tracking_functions_with_the_reader_s_id() {
    let aws = LocalAws::from_env().unwrap_or_else(|e| panic!("{e}"));
    let (central, partner) = (unique_account(), unique_account());
    let roles = central_roles(&aws, &central, &partner).await;
    let reader = roles.reader.as_str();
    let refused = Err("AccessDenied".to_owned());

    assert_eq!(assume(&roles.sweep, reader, Some("reader-1")).await, Ok(()));
    assert_eq!(
        assume(&roles.sweep, reader, None).await,
        refused,
        "no external id"
    );
    assert_eq!(
        assume(&roles.sweep, reader, Some("backfill-1")).await,
        refused,
        "the backfill's external id"
    );
    for (caller, who) in [
        (&roles.look_alike, "a role named like the stack's"),
        (
            &roles.look_alike_on_the_path,
            "another role on the stack's path",
        ),
        (&roles.planner, "the backfill, which has its own role"),
        (&roles.root, "the account itself, not a role"),
    ] {
        assert_eq!(
            assume(caller, reader, Some("reader-1")).await,
            refused,
            "{who}"
        );
    }
}

#[tokio::test]
async fn only_the_backfill_functions_assume_the_backfill_role_and_only_with_its_own_id() {
    use testbed::stack_templates::central_backfill_external_id;

    let aws = LocalAws::from_env().unwrap_or_else(|e| panic!("{e}"));
    let (central, partner) = (unique_account(), unique_account());
    let roles = central_roles(&aws, &central, &partner).await;
    let backfill = roles.backfill.as_str();
    let refused = Err("AccessDenied".to_owned());
    // What template.yaml, with the same parameters, gives backfill-plan and backfill-copy.
    let functions_id =
        central_backfill_external_id("reader-1", "backfill-1").expect("BACKFILL_EXTERNAL_ID");

    for (caller, who) in [
        (&roles.planner, "backfill-plan"),
        (&roles.copier, "backfill-copy"),
    ] {
        assert_eq!(
            assume(caller, backfill, Some(&functions_id)).await,
            Ok(()),
            "{who} with the id the stack gives it"
        );
        assert_eq!(
            assume(caller, backfill, Some("reader-1")).await,
            refused,
            "{who} with the reader's id"
        );
        assert_eq!(
            assume(caller, backfill, None).await,
            refused,
            "{who} with no id"
        );
    }
    // The supply-chain path: a role the central account could create, named like the stack's,
    // with the backfill's id (leaked, or read from a function's environment), writes nowhere.
    for (caller, who) in [
        (&roles.look_alike, "replwatch-x"),
        (&roles.look_alike_on_the_path, "replwatch/replwatch-sweep2"),
        (&roles.sweep, "the sweep, which only reads"),
        (&roles.root, "the account itself"),
    ] {
        assert_eq!(
            assume(caller, backfill, Some(&functions_id)).await,
            refused,
            "{who}"
        );
    }
}

/// README, "Rotating the external ids": while the other accounts' reader roles take the new id
/// and the old one, the central functions read with either; once the old one is dropped, it is
/// refused. No read is refused at any step, so no one is paged for a rotation.
#[tokio::test]
async fn an_external_id_rotates_without_a_refused_read() {
    use testbed::stack_templates::{AccountStack, central_function_role_arn};

    let aws = LocalAws::from_env().unwrap_or_else(|e| panic!("{e}"));
    let (central, partner) = (unique_account(), unique_account());
    let stack = |previous_external_id| AccountStack {
        central: &central,
        central_stack: None,
        external_id: "reader-2",
        backfill_external_id: "backfill-1",
        operator_roles: &[],
        previous_external_id,
    };
    let rotating = stack(Some("reader-1"))
        .reader_trust_policy()
        .expect("trust");
    aws.create_role(&partner, "replwatch-reader", &rotating.to_string())
        .expect("reader role");
    let sweep = central_function_role_arn(&central, "replwatch", "SweepFunction").expect("arn");
    aws.create_role_at(
        &central,
        "/replwatch/",
        "replwatch-sweep",
        &trusting_account(&central),
    )
    .expect("sweep role");
    let sweep = aws
        .assumed(&central, &sweep, "eu-west-1")
        .await
        .expect("sweep");
    let reader = format!("arn:aws:iam::{partner}:role/replwatch-reader");
    // Step 1 done (the accounts take both), the central stack not yet updated, then updated.
    for id in ["reader-1", "reader-2"] {
        assert_eq!(assume(&sweep, &reader, Some(id)).await, Ok(()), "{id}");
    }
    // Step 3: the old id dropped.
    let rotated = stack(None).reader_trust_policy().expect("trust");
    aws.update_role_trust(&partner, "replwatch-reader", &rotated.to_string())
        .expect("trust update");
    assert_eq!(assume(&sweep, &reader, Some("reader-2")).await, Ok(()));
    assert_eq!(
        assume(&sweep, &reader, Some("reader-1")).await,
        Err("AccessDenied".to_owned())
    );
}
