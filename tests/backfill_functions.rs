//! The backfill functions end to end on the local AWS, built as in Lambda from the stack's
//! environment: `backfill-plan` plans a manual request and queues the copy jobs on SQS;
//! `backfill-copy` takes them in batches (each delivered twice, as SQS may) and copies the
//! images into another account through the backfill role; the run completes once and says so
//! on the alert topic; a second plan finds nothing to do; an unreadable job is parked; a job
//! DynamoDB throttles goes back to its queue instead of being counted failed.

use std::collections::BTreeMap;

use replwatch_core::SystemClock;
use replwatch_runtime::backfill::BackfillSettings;
use replwatch_runtime::services;
use replwatch_runtime::settings::Settings;
use testbed::deployment::{LocalDeployment, QueuedMessage, sqs_event};
use testbed::{LocalAws, unique_account};

type Error = Box<dyn std::error::Error + Send + Sync>;

const REGION: &str = "us-west-2";
const DESTINATION_REGION: &str = "eu-west-1";

/// (repository, tags) -> digest of every image in `account`/`region` under `prefix`.
async fn images(
    aws: &LocalAws,
    account: &str,
    region: &str,
    repositories: &[&str],
) -> Result<BTreeMap<(String, String), Vec<String>>, Error> {
    let ecr = aws.ecr(account, region).await;
    let mut out = BTreeMap::new();
    for repository in repositories {
        let answer = ecr
            .describe_images()
            .repository_name(*repository)
            .send()
            .await?;
        for image in answer.image_details() {
            let mut tags = image.image_tags().to_vec();
            tags.sort();
            out.insert(
                (
                    (*repository).to_owned(),
                    image.image_digest().unwrap_or_default().to_owned(),
                ),
                tags,
            );
        }
    }
    Ok(out)
}

/// `BACKFILL_ALLOWED_DESTINATIONS` naming `partner` in the destination Region: where the
/// tests' manual requests copy, outside any replication rule.
fn allowed(partner: &str) -> String {
    format!("{DESTINATION_REGION}/{partner}")
}

/// A manual request to copy the repositories under `prefix` to `partner` in the destination
/// Region.
fn copy_request(prefix: &str, partner: &str) -> serde_json::Value {
    serde_json::json!({
        "repositoryPrefixes": [prefix],
        "destinations": [{"region": DESTINATION_REGION, "registryId": partner}]
    })
}

/// The backfill functions as the stack wires them, in `account`: the deployment (table,
/// topic, dead-letter queue), the jobs queue, `backfill-plan` and `backfill-copy` reaching
/// other accounts through the backfill role; `extra` adds environment variables.
struct Functions {
    deployment: LocalDeployment,
    jobs_queue: String,
    planner: services::AwsBackfillPlanner<SystemClock>,
    copier: services::AwsBackfillCopier<SystemClock>,
}

impl Functions {
    async fn deploy(aws: &LocalAws, account: &str, extra: &[(&str, &str)]) -> Result<Self, Error> {
        let deployment = LocalDeployment::create(aws, account, REGION, &[]).await?;
        let jobs_queue = aws
            .create_queue(account, REGION, "replwatch-backfill-jobs")
            .await?;
        let mut variables = vec![
            ("AWS_REGION", REGION),
            ("BACKFILL_QUEUE_URL", jobs_queue.as_str()),
            ("BACKFILL_ROLE_NAME", "replwatch-backfill"),
            ("BACKFILL_EXTERNAL_ID", "replwatch-local-backfill"),
        ];
        variables.extend_from_slice(extra);
        let env = deployment.environment(&variables);
        let lookup = |name: &str| env.get(name).cloned();
        let settings = Settings::from_lookup(lookup)?;
        let backfill = BackfillSettings::from_lookup(&settings.home_account, lookup)?;
        let sdk = aws.config(account, REGION).await;
        let planner = services::build_backfill_planner(&sdk, &settings, &backfill, SystemClock)?;
        let copier =
            services::build_backfill_copier(&sdk, &settings, &backfill, SystemClock).await?;
        Ok(Self {
            deployment,
            jobs_queue,
            planner,
            copier,
        })
    }

    /// [`Self::deploy`], manual requests allowed to copy to `partner` in the destination Region.
    async fn deploy_copying_to(
        aws: &LocalAws,
        account: &str,
        partner: &str,
        extra: &[(&str, &str)],
    ) -> Result<Self, Error> {
        let allowed = allowed(partner);
        let mut variables = vec![("BACKFILL_ALLOWED_DESTINATIONS", allowed.as_str())];
        variables.extend_from_slice(extra);
        Self::deploy(aws, account, &variables).await
    }
}

async fn take_all(
    aws: &LocalAws,
    account: &str,
    queue_url: &str,
) -> Result<Vec<QueuedMessage>, Error> {
    let sqs = aws_sdk_sqs::Client::new(&aws.config(account, REGION).await);
    let mut out = Vec::new();
    loop {
        let answer = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .send()
            .await?;
        if answer.messages().is_empty() {
            return Ok(out);
        }
        for m in answer.messages() {
            out.push(QueuedMessage {
                queue: "backfill-jobs",
                message_id: m.message_id().unwrap_or_default().to_owned(),
                body: m.body().unwrap_or_default().to_owned(),
            });
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await?;
        }
    }
}

#[tokio::test]
async fn a_manual_backfill_fans_out_copies_each_image_once_and_reports_completion()
-> Result<(), Error> {
    let aws = LocalAws::from_env()?;
    let account = unique_account();
    let partner = unique_account();
    let ecr = aws.ecr(&account, REGION).await;
    for repository in ["bf/app", "bf/tools"] {
        ecr.create_repository()
            .repository_name(repository)
            .send()
            .await?;
    }
    aws.push_image(&account, REGION, "bf/app", Some("v1"), "app-1")
        .await?;
    aws.push_image(&account, REGION, "bf/app", Some("v2"), "app-2")
        .await?;
    aws.push_image(&account, REGION, "bf/app", None, "app-untagged")
        .await?;
    aws.push_image(&account, REGION, "bf/tools", Some("latest"), "tools")
        .await?;

    let Functions {
        deployment,
        jobs_queue,
        planner,
        copier,
    } = Functions::deploy_copying_to(&aws, &account, &partner, &[("COPY_CONCURRENCY", "3")])
        .await?;

    let request = copy_request("bf/", &partner);
    let planned = planner
        .handle(request.to_string().as_bytes(), "request-1")
        .await?;
    assert_eq!(planned.report.jobs_queued, 4, "{:?}", planned.report);
    assert_eq!(planned.report.repositories_created, 2);
    assert!(
        planned
            .emf
            .iter()
            .any(|l| l.contains("BackfillPlanned") && l.contains(&partner)),
        "{:?}",
        planned.emf
    );

    // Every job twice, in batches of four: the run counts each once and completes once.
    let mut jobs = take_all(&aws, &account, &jobs_queue).await?;
    assert_eq!(jobs.len(), 4);
    jobs.extend(jobs.clone());
    let (mut copied, mut completed, mut retried) = (0, 0, 0);
    for batch in jobs.chunks(4) {
        let outcome = copier.process_batch(sqs_event(batch, REGION)?).await;
        copied += outcome.copied;
        completed += outcome.completed_runs;
        retried += outcome.retried;
        assert!(outcome.emf.iter().all(|l| !l.contains("BackfillFailed")));
    }
    assert_eq!((copied, completed, retried), (4, 1, 0));

    let repositories = ["bf/app", "bf/tools"];
    assert_eq!(
        images(&aws, &partner, DESTINATION_REGION, &repositories).await?,
        images(&aws, &account, REGION, &repositories).await?,
        "the destination holds the same digests with the same tags"
    );
    let alerts = deployment.published_alerts().await?;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(
        alerts[0].subject.contains("4 copied, 0 failed"),
        "{}",
        alerts[0].subject
    );
    assert!(
        alerts[0].message.contains("Copied:    4 images"),
        "{}",
        alerts[0].message
    );

    // Nothing is left to plan.
    let again = planner
        .handle(request.to_string().as_bytes(), "request-2")
        .await?;
    assert_eq!(again.report.jobs_queued, 0);
    assert!(again.report.plan.is_some_and(|p| p.is_empty()));

    // A job nobody can read is parked with its reason, not retried.
    let junk = QueuedMessage {
        queue: "backfill-jobs",
        message_id: "junk-1".into(),
        body: "{\"runId\": 7}".into(),
    };
    let outcome = copier.process_batch(sqs_event(&[junk], REGION)?).await;
    assert_eq!((outcome.parked, outcome.retried), (1, 0));
    let parked = deployment.dead_letters().await?;
    assert!(parked.iter().any(|m| m.body == "{\"runId\": 7}"));
    Ok(())
}

/// DynamoDB throttling past the SDK's retries, on a copy job's first delivery: the job goes
/// back to its queue (a batch item failure), nothing is counted failed; a transaction
/// cancelled because one of its items was throttled is retried the same way; once DynamoDB
/// keeps up, the job is copied and its run completes with nothing failed.
/// A job someone else put on the queue (its policy keeps them out on AWS; this is the copier's
/// own check): copying from a registry replwatch does not watch, into a destination its run
/// did not plan, or for a run never planned. Each is parked with its reason, nothing is copied
/// and the real run still completes with its own job.
#[tokio::test]
async fn a_copy_job_its_run_did_not_plan_from_the_watched_registry_is_refused_and_parked()
-> Result<(), Error> {
    let aws = LocalAws::from_env()?;
    let (account, partner, stranger) = (unique_account(), unique_account(), unique_account());
    for (owner, name) in [(&account, "watched"), (&stranger, "someone-else")] {
        aws.ecr(owner, REGION)
            .await
            .create_repository()
            .repository_name("fj/app")
            .send()
            .await?;
        aws.push_image(owner, REGION, "fj/app", Some("v1"), name)
            .await?;
    }
    let Functions {
        deployment,
        jobs_queue,
        planner,
        copier,
    } = Functions::deploy_copying_to(&aws, &account, &partner, &[]).await?;
    let request = copy_request("fj/", &partner);
    planner
        .handle(request.to_string().as_bytes(), "request-forged")
        .await?;
    let [planned] = take_all(&aws, &account, &jobs_queue)
        .await?
        .try_into()
        .map_err(|jobs: Vec<QueuedMessage>| format!("one planned job, not {}", jobs.len()))?;
    let body: serde_json::Value = serde_json::from_str(&planned.body)?;
    let forge = |id: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut forged = body.clone();
        edit(&mut forged);
        QueuedMessage {
            queue: "backfill-jobs",
            message_id: id.to_owned(),
            body: forged.to_string(),
        }
    };
    let someone_else = serde_json::json!({"region": REGION, "registryId": stranger});
    let forged = [
        forge("from-another-registry", &|job| {
            job["job"]["source"] = someone_else.clone()
        }),
        forge("to-an-unplanned-destination", &|job| {
            job["job"]["destination"] = someone_else.clone()
        }),
        forge("of-no-run", &|job| {
            job["runId"] = "run-nobody-planned".into()
        }),
    ];
    let outcome = copier.process_batch(sqs_event(&forged, REGION)?).await;
    assert_eq!(
        (
            outcome.copied,
            outcome.failed,
            outcome.retried,
            outcome.parked
        ),
        (0, 0, 0, 3),
        "refused, not retried: a forged job never becomes right"
    );

    let sqs = aws_sdk_sqs::Client::new(&aws.config(&account, REGION).await);
    let parked = sqs
        .receive_message()
        .queue_url(&deployment.dead_letter_queue)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .send()
        .await?;
    let mut reasons = BTreeMap::new();
    for message in parked.messages() {
        let attributes = message.message_attributes().cloned().unwrap_or_default();
        let text = |name: &str| {
            attributes
                .get(name)
                .and_then(|a| a.string_value())
                .unwrap_or_default()
                .to_owned()
        };
        reasons.insert(text("event_id"), text("reason"));
    }
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons["from-another-registry"].contains("is not the watched registry"));
    assert!(reasons["to-an-unplanned-destination"].contains("plans no copy to"));
    assert!(reasons["of-no-run"].contains("was never planned"));
    // The plan created the partner's repository; nothing reached it, nor the stranger's.
    let copied = images(&aws, &partner, DESTINATION_REGION, &["fj/app"]).await?;
    assert!(copied.is_empty(), "nothing reached the partner: {copied:?}");
    let stranger_images = images(&aws, &stranger, REGION, &["fj/app"]).await?;
    assert_eq!(
        stranger_images.len(),
        1,
        "only the stranger's own image: {stranger_images:?}"
    );

    // The planned job still copies and completes its run.
    let outcome = copier.process_batch(sqs_event(&[planned], REGION)?).await;
    assert_eq!((outcome.copied, outcome.completed_runs), (1, 1));
    Ok(())
}

#[tokio::test]
async fn a_copy_job_throttled_by_dynamodb_is_retried_by_its_queue_not_counted_failed()
-> Result<(), Error> {
    let aws = LocalAws::from_env()?;
    let account = unique_account();
    let partner = unique_account();
    aws.ecr(&account, REGION)
        .await
        .create_repository()
        .repository_name("thr/app")
        .send()
        .await?;
    aws.push_image(&account, REGION, "thr/app", Some("v1"), "throttled")
        .await?;
    let Functions {
        deployment,
        jobs_queue,
        planner,
        copier,
    } = Functions::deploy_copying_to(&aws, &account, &partner, &[]).await?;
    let request = copy_request("thr/", &partner);
    let planned = planner
        .handle(request.to_string().as_bytes(), "request-throttled")
        .await?;
    assert_eq!(planned.report.jobs_queued, 1);
    let job = take_all(&aws, &account, &jobs_queue).await?;

    // Every PutItem of this account throttled (the blob claims): more than the SDK retries.
    let faults = |body: serde_json::Value| aws.control("POST", "/_localaws/faults", Some(&body));
    faults(
        serde_json::json!({"dynamodb": {"PutItem": {"throttle_next": 1000, "account": account}}}),
    )?;
    let outcome = copier.process_batch(sqs_event(&job, REGION)?).await;
    assert_eq!(
        (outcome.copied, outcome.failed, outcome.retried),
        (0, 0, 1),
        "back to the queue, not failed"
    );
    assert_eq!(
        outcome.response.batch_item_failures[0].item_identifier,
        job[0].message_id
    );
    assert!(outcome.emf.iter().all(|l| !l.contains("BackfillFailed")));
    aws.control(
        "DELETE",
        &format!("/_localaws/faults?account={account}"),
        None,
    )?;

    // Copied, but the transaction counting it is cancelled by a throttled item: retried too.
    faults(serde_json::json!({"dynamodb": {"TransactWriteItems": {
        "throttle_next": 1, "account": account, "cancellation_reasons": ["None", "ThrottlingError"]
    }}}))?;
    let outcome = copier.process_batch(sqs_event(&job, REGION)?).await;
    assert_eq!((outcome.copied, outcome.failed, outcome.retried), (0, 0, 1));
    aws.control(
        "DELETE",
        &format!("/_localaws/faults?account={account}"),
        None,
    )?;

    let outcome = copier.process_batch(sqs_event(&job, REGION)?).await;
    assert_eq!(
        (outcome.copied, outcome.failed, outcome.completed_runs),
        (1, 0, 1)
    );
    let alerts = deployment.published_alerts().await?;
    assert!(
        alerts
            .iter()
            .any(|a| a.subject.contains("1 copied, 0 failed")),
        "{alerts:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_rules_change_backfills_only_the_added_destination_with_or_without_cloudtrail_and_a_bad_request_is_refused()
-> Result<(), Error> {
    let aws = LocalAws::from_env()?;
    let account = unique_account();
    let ecr = aws.ecr(&account, REGION).await;
    ecr.create_repository()
        .repository_name("rc/app")
        .send()
        .await?;
    aws.push_image(&account, REGION, "rc/app", Some("v1"), "rc-1")
        .await?;
    let deployment = LocalDeployment::create(&aws, &account, REGION, &[]).await?;
    let jobs_queue = aws
        .create_queue(&account, REGION, "replwatch-backfill-jobs")
        .await?;
    let env =
        deployment.environment(&[("AWS_REGION", REGION), ("BACKFILL_QUEUE_URL", &jobs_queue)]);
    let lookup = |name: &str| env.get(name).cloned();
    let settings = Settings::from_lookup(lookup)?;
    let backfill = BackfillSettings::from_lookup(&settings.home_account, lookup)?;
    let sdk = aws.config(&account, REGION).await;
    let planner = services::build_backfill_planner(&sdk, &settings, &backfill, SystemClock)?;

    let configuration = |regions: &[&str]| {
        serde_json::json!({"rules": [{"destinations": regions
            .iter()
            .map(|r| serde_json::json!({"region": r, "registryId": account}))
            .collect::<Vec<_>>()}]})
    };
    let put = |regions: &[&str]| {
        let configuration = configuration(regions);
        let aws = &aws;
        let account = &account;
        async move {
            let rules: replwatch_core::ReplicationConfiguration =
                serde_json::from_value(configuration.clone())?;
            aws.put_replication_configuration(account, REGION, &rules)
                .await?;
            Ok::<serde_json::Value, Error>(configuration)
        }
    };
    let event = |configuration: &serde_json::Value| {
        serde_json::json!({
            "version": "0", "id": "ct-1", "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.ecr", "account": account, "time": "2026-11-28T10:00:00Z",
            "region": REGION, "resources": [],
            "detail": {"eventSource": "ecr.amazonaws.com", "eventName": "PutReplicationConfiguration",
                "awsRegion": REGION, "recipientAccountId": account,
                "requestParameters": {"replicationConfiguration": configuration}}
        })
        .to_string()
    };

    // First rules: the destination is new; ECR's native backfill starts for it.
    let first = put(&["us-east-1"]).await?;
    let report = planner
        .handle(event(&first).as_bytes(), "ct-1")
        .await?
        .report;
    assert_eq!(report.native.len(), 1, "{report:?}");
    // A second destination added: only it is planned.
    let second = put(&["us-east-1", "ap-south-1"]).await?;
    let report = planner
        .handle(event(&second).as_bytes(), "ct-2")
        .await?
        .report;
    let plan = report.plan.ok_or("a plan")?;
    let planned: Vec<String> = plan
        .destinations
        .iter()
        .map(|p| p.destination.region.to_string())
        .collect();
    assert_eq!(planned, ["ap-south-1"]);
    // The same rules again: nothing added.
    let report = planner
        .handle(event(&second).as_bytes(), "ct-3")
        .await?
        .report;
    assert!(report.skipped.is_some_and(|r| r.contains("no destination")));

    // A third destination added where no trail records the call: the stack's scheduled rules
    // check finds it and plans it alone, then finds nothing more.
    put(&["us-east-1", "ap-south-1", "eu-central-1"]).await?;
    let rules_check = testbed::stack_templates::rules_check_input()?;
    let report = planner
        .handle(rules_check.as_bytes(), "check-1")
        .await?
        .report;
    let planned: Vec<String> = report
        .plan
        .ok_or("a plan")?
        .destinations
        .iter()
        .map(|p| p.destination.region.to_string())
        .collect();
    assert_eq!(planned, ["eu-central-1"]);
    let report = planner
        .handle(rules_check.as_bytes(), "check-2")
        .await?
        .report;
    assert!(report.skipped.is_some_and(|r| r.contains("no destination")));

    // A request to copy where the rules do not replicate, to an account no one allowed, is
    // refused before anything is read or written: invoking the function is not a way into
    // every account that has a backfill role.
    let elsewhere = copy_request("rc/", &unique_account());
    let refused = planner
        .handle(elsewhere.to_string().as_bytes(), "elsewhere-1")
        .await
        .map(|_| ())
        .expect_err("refused");
    assert!(
        refused
            .to_string()
            .contains("neither in the replication rules nor in BackfillAllowedDestinations"),
        "{refused}"
    );
    assert!(take_all(&aws, &account, &jobs_queue).await?.is_empty());

    // A misspelt manual request is refused with the field named.
    let refused = planner
        .handle(br#"{"repositoryPrefix": ["rc/"]}"#, "bad-1")
        .await
        .map(|_| ())
        .expect_err("refused");
    assert!(
        refused.to_string().contains("repositoryPrefix"),
        "{refused}"
    );
    Ok(())
}

#[tokio::test]
async fn a_tag_backfill_brings_the_signatures_of_what_it_selects_each_after_its_subject()
-> Result<(), Error> {
    let aws = LocalAws::from_env()?;
    let account = unique_account();
    let partner = unique_account();
    let repository = "sig/app";
    aws.ecr(&account, REGION)
        .await
        .create_repository()
        .repository_name(repository)
        .send()
        .await?;
    let manifest = testbed::MANIFEST_MEDIA_TYPE;
    let v1 = aws
        .push_image(&account, REGION, repository, Some("v1"), "sig-1")
        .await?;
    let v2 = aws
        .push_image(&account, REGION, repository, Some("v2"), "sig-2")
        .await?;
    let notation = "application/vnd.cncf.notary.signature";
    let signature = aws
        .push_referrer(
            &account,
            REGION,
            repository,
            (&v1.digest, manifest),
            notation,
            b"v1 signed",
        )
        .await?;
    let sbom = aws
        .push_referrer(
            &account,
            REGION,
            repository,
            (&v1.digest, manifest),
            "application/spdx+json",
            b"{}",
        )
        .await?;
    aws.push_referrer(
        &account,
        REGION,
        repository,
        (&v2.digest, manifest),
        notation,
        b"v2 signed",
    )
    .await?;

    let Functions {
        jobs_queue,
        planner,
        copier,
        ..
    } = Functions::deploy(
        &aws,
        &account,
        &[(
            "BACKFILL_ALLOWED_DESTINATIONS",
            &format!("{},eu-south-1/{partner}", allowed(&partner)),
        )],
    )
    .await?;

    // A second destination in eu-south-1, an opt-in Region the partner has not enabled.
    let request = serde_json::json!({
        "tagPatterns": ["v1"],
        "destinations": [
            {"region": DESTINATION_REGION, "registryId": partner},
            {"region": "eu-south-1", "registryId": partner}
        ]
    });
    let planned = planner
        .handle(request.to_string().as_bytes(), "sig-request")
        .await?;
    assert_eq!(planned.report.jobs_queued, 3, "{:?}", planned.report);
    let refused: Vec<Option<&str>> = planned
        .report
        .plan
        .as_ref()
        .ok_or("a plan")?
        .destinations
        .iter()
        .map(|p| p.refused.as_deref())
        .collect();
    assert_eq!(refused.len(), 2);
    assert!(
        refused[0].is_some_and(|why| why.starts_with("Region eu-south-1 is DISABLED")),
        "{refused:?}"
    );
    assert_eq!(refused[1], None);
    let jobs = take_all(&aws, &account, &jobs_queue).await?;
    let digest_of = |m: &QueuedMessage| {
        serde_json::from_str::<serde_json::Value>(&m.body)
            .ok()
            .and_then(|b| b["job"]["digest"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    // Queued subject first.
    assert_eq!(digest_of(&jobs[0]), v1.digest);

    // SQS may hand the referrers out first: they wait for their subject, then arrive.
    let (subject, referrers): (Vec<_>, Vec<_>) =
        jobs.into_iter().partition(|m| digest_of(m) == v1.digest);
    let early = copier.process_batch(sqs_event(&referrers, REGION)?).await;
    assert_eq!((early.copied, early.retried), (0, 2));
    let first = copier.process_batch(sqs_event(&subject, REGION)?).await;
    assert_eq!(first.copied, 1);
    let later = copier.process_batch(sqs_event(&referrers, REGION)?).await;
    assert_eq!((later.copied, later.completed_runs), (2, 1));

    let mut expected = vec![signature, sbom];
    expected.sort();
    assert_eq!(
        aws.referrers(&partner, DESTINATION_REGION, repository, &v1.digest)
            .await?,
        expected
    );
    assert_eq!(
        aws.referrers(&account, REGION, repository, &v1.digest)
            .await?,
        expected
    );
    // v2 and its signature were not selected.
    assert!(
        aws.referrers(&partner, DESTINATION_REGION, repository, &v2.digest)
            .await?
            .is_empty()
    );
    Ok(())
}

/// The issue's "done when" through the functions: a signed multi-arch index (Notation
/// signature and SBOM of the index, an attestation of its amd64 image, a legacy cosign
/// signature) in a repository replicated to another account, where ECR's native backfill fails
/// the `v2` tag and a REPLICATION creation template under a customer managed key applies.
/// `backfill-plan` starts ECR's backfill and creates the repository from the template; once it
/// ended, the next plan copies what it left; then the audit finds nothing and every referrer is
/// there with its digest.
#[tokio::test]
async fn a_signed_registry_arrives_whole_through_the_functions_after_a_partial_native_backfill()
-> Result<(), Error> {
    let aws = LocalAws::from_env()?;
    let account = unique_account();
    let partner = unique_account();
    let repository = "whole/app";
    aws.ecr(&account, REGION)
        .await
        .create_repository()
        .repository_name(repository)
        .send()
        .await?;
    let amd64 = aws
        .push_image(&account, REGION, repository, None, "whole-amd64")
        .await?;
    let arm64 = aws
        .push_image(&account, REGION, repository, None, "whole-arm64")
        .await?;
    let (index_manifest, index) = aws
        .push_index(&account, REGION, repository, "v1", &[&amd64, &arm64])
        .await?;
    aws.ecr(&account, REGION)
        .await
        .put_image()
        .repository_name(repository)
        .image_manifest(&index_manifest)
        .image_manifest_media_type(testbed::INDEX_MEDIA_TYPE)
        .image_tag("v2")
        .send()
        .await?;
    let (index_type, manifest_type) = (testbed::INDEX_MEDIA_TYPE, testbed::MANIFEST_MEDIA_TYPE);
    let signature = aws
        .push_referrer(
            &account,
            REGION,
            repository,
            (&index, index_type),
            "application/vnd.cncf.notary.signature",
            b"index signed",
        )
        .await?;
    let sbom = aws
        .push_referrer(
            &account,
            REGION,
            repository,
            (&index, index_type),
            "application/spdx+json",
            b"{\"spdxVersion\":\"SPDX-2.3\"}",
        )
        .await?;
    let attestation = aws
        .push_referrer(
            &account,
            REGION,
            repository,
            (&amd64.digest, manifest_type),
            "application/vnd.in-toto+json",
            b"{\"predicateType\":\"slsa\"}",
        )
        .await?;
    let legacy_tag = format!("{}.sig", index.replacen(':', "-", 1));
    aws.push_image(&account, REGION, repository, Some(&legacy_tag), "cosign")
        .await?;

    let destination = format!("{DESTINATION_REGION}/{partner}");
    let key = format!(
        "arn:aws:kms:{DESTINATION_REGION}:{partner}:key/5e5e5e5e-aaaa-bbbb-cccc-123456789012"
    );
    aws.ecr(&partner, DESTINATION_REGION)
        .await
        .create_repository_creation_template()
        .prefix("whole")
        .applied_for(aws_sdk_ecr::types::RctAppliedFor::Replication)
        .encryption_configuration(
            aws_sdk_ecr::types::EncryptionConfigurationForRepositoryCreationTemplate::builder()
                .encryption_type(aws_sdk_ecr::types::EncryptionType::Kms)
                .kms_key(&key)
                .build()?,
        )
        .send()
        .await?;
    let rules: replwatch_core::ReplicationConfiguration = serde_json::from_value(
        serde_json::json!({"rules": [{"destinations": [{"region": DESTINATION_REGION, "registryId": partner}]}]}),
    )?;
    aws.put_replication_configuration(&account, REGION, &rules)
        .await?;
    // The partner's registry permissions policy admits the source, as ECR requires.
    aws.allow_replication_from(&partner, DESTINATION_REGION, &account)
        .await?;
    aws.configure_replication(&serde_json::json!({"destinations": {
        destination.clone(): {"fail_tags": ["v2"], "failure_code": "IMAGE_TOO_LARGE"}
    }}))?;

    let Functions {
        jobs_queue,
        planner,
        copier,
        ..
    } = Functions::deploy(&aws, &account, &[]).await?;
    let first = planner.handle(b"{}", "whole-1").await?.report;
    assert!(
        matches!(
            first.native.as_slice(),
            [replwatch_core::backfill::fanout::NativeAction::Started { .. }]
        ),
        "{:?}",
        first.native
    );
    assert_eq!(first.repositories_created, 1, "{first:?}");
    aws.flush_replication(&account)?;
    aws.configure_replication(&serde_json::json!({"destinations": {destination.clone(): null}}))?;

    // ECR's backfill ended without v2: the next plan copies what is left.
    let second = planner.handle(b"{}", "whole-2").await?.report;
    assert!(
        matches!(
            second.native.as_slice(),
            [replwatch_core::backfill::fanout::NativeAction::CopiedInstead { .. }]
        ),
        "{:?}",
        second.native
    );
    let jobs = take_all(&aws, &account, &jobs_queue).await?;
    assert!(!jobs.is_empty());
    let copied = copier.process_batch(sqs_event(&jobs, REGION)?).await;
    assert_eq!((copied.retried, copied.parked), (0, 0));
    assert_eq!(copied.completed_runs, 1);

    // The audit `replwatch audit` runs finds nothing: digests, tags, referrers, settings (held
    // to the KMS template).
    let sdk = aws.config(&account, REGION).await;
    let reader = replwatch_aws::ecr_inventory::EcrInventoryReader::new(
        sdk,
        replwatch_core::model::AccountId::parse(&account)?,
        Some(replwatch_aws::ecr_clients::CrossAccountAccess {
            role_name: "replwatch-backfill".into(),
            external_id: Some("replwatch-local-backfill".into()),
            session_name: "replwatch-test".into(),
        }),
    );
    let source = replwatch_core::model::Destination::new(
        replwatch_core::model::Region::parse(REGION)?,
        replwatch_core::model::AccountId::parse(&account)?,
    );
    let target = replwatch_core::model::Destination::new(
        replwatch_core::model::Region::parse(DESTINATION_REGION)?,
        replwatch_core::model::AccountId::parse(&partner)?,
    );
    use replwatch_core::backfill::port::InventoryReader;
    let report = replwatch_core::audit::audit(
        &source,
        &rules,
        &reader.repositories(&source, &[]).await?,
        &[replwatch_core::backfill::DestinationInventory {
            destination: target.clone(),
            repositories: reader.repositories(&target, &[]).await?,
            creation_templates: reader.creation_templates(&target).await?,
        }],
    );
    assert!(report.in_sync(), "{report:#?}");
    for subject in [&index, &amd64.digest] {
        let there = aws
            .referrers(&partner, DESTINATION_REGION, repository, subject)
            .await?;
        assert!(!there.is_empty(), "{subject}");
        assert_eq!(
            there,
            aws.referrers(&account, REGION, repository, subject).await?
        );
    }
    let mut expected = vec![signature, sbom];
    expected.sort();
    assert_eq!(
        aws.referrers(&partner, DESTINATION_REGION, repository, &index)
            .await?,
        expected
    );
    assert_eq!(
        aws.referrers(&partner, DESTINATION_REGION, repository, &amd64.digest)
            .await?,
        [attestation]
    );
    assert_eq!(
        images(&aws, &partner, DESTINATION_REGION, &[repository]).await?,
        images(&aws, &account, REGION, &[repository]).await?
    );
    Ok(())
}
