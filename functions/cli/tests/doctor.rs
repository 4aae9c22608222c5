//! `replwatch doctor` against the local AWS, through the real binary: one setup with every
//! problem the doctor knows, one with none, the CloudTrail trail in its states, and a
//! destination Region that must be opted in to. The source replicates `team-a/` to a
//! cross-account destination and to another Region of its own account.
// Test code: a panic is the failure report (clippy.toml lets #[test] functions unwrap; this
// covers their helpers too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::Duration;

use aws_sdk_cloudtrail::types::{AdvancedEventSelector, AdvancedFieldSelector, EventSelector};

use aws_sdk_ecr::types::RctAppliedFor;
use replwatch_core::model::{AccountId, Destination, Region};
use replwatch_core::rules::{
    PREFIX_MATCH, ReplicationConfiguration, ReplicationRule, RepositoryFilter,
};
use serde_json::Value;
use testbed::{LocalAws, unique_account};

type Error = Box<dyn std::error::Error + Send + Sync>;

const SOURCE_REGION: &str = "us-west-2";
const CROSS_REGION: &str = "eu-west-1";
const SAME_ACCOUNT_REGION: &str = "us-east-1";
/// What the operator reads other accounts with (`--role-name`).
const AUDIT_ROLE: &str = "platform-audit";
const READER_ROLE: &str = "replwatch-reader";
const EXTERNAL_ID: &str = "replwatch-ext-7";

struct Setup {
    aws: LocalAws,
    source: String,
    partner: String,
    bus_arn: String,
}

impl Setup {
    async fn new() -> Result<Self, Error> {
        let aws = LocalAws::from_env()?;
        let (source, partner) = (unique_account(), unique_account());
        let rule = |destinations: Vec<Destination>, prefix: &str| ReplicationRule {
            destinations,
            repository_filters: vec![RepositoryFilter {
                filter: prefix.into(),
                filter_type: PREFIX_MATCH.into(),
            }],
        };
        aws.put_replication_configuration(
            &source,
            SOURCE_REGION,
            &ReplicationConfiguration {
                rules: vec![rule(
                    vec![
                        registry(CROSS_REGION, &partner)?,
                        registry(SAME_ACCOUNT_REGION, &source)?,
                    ],
                    "team-a/",
                )],
            },
        )
        .await?;
        let bus_arn = aws_sdk_eventbridge::Client::new(&aws.config(&source, SOURCE_REGION).await)
            .create_event_bus()
            .name("replwatch-central")
            .send()
            .await?
            .event_bus_arn()
            .ok_or("no bus ARN")?
            .to_owned();
        // The partner account has IAM set up: from here on, assuming its roles obeys their
        // trust policies.
        aws.create_role(&partner, AUDIT_ROLE, &trust(&source, None))?;
        Ok(Self {
            aws,
            source,
            partner,
            bus_arn,
        })
    }

    fn doctor(&self, reader_external_id: &str, extra: &[&str]) -> (Option<i32>, Value) {
        let output: Output = Command::new(env!("CARGO_BIN_EXE_replwatch"))
            .args([
                "--endpoint-url",
                self.aws.endpoint(),
                "--region",
                SOURCE_REGION,
            ])
            .args(["--output", "json", "--role-name", AUDIT_ROLE, "doctor"])
            .args(["--central-bus", &self.bus_arn, "--reader-role", READER_ROLE])
            .args(["--reader-external-id", reader_external_id])
            .args(extra)
            .env("AWS_ACCESS_KEY_ID", &self.source)
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env_remove("AWS_PROFILE")
            .output()
            .expect("replwatch runs");
        let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code(), report)
    }

    /// A forwarding rule in `account`/`region` to the central bus, with the pattern the
    /// destination-Region stack deploys for this source.
    async fn forward(&self, account: &str, region: &str, enabled: bool) -> Result<(), Error> {
        let events = aws_sdk_eventbridge::Client::new(&self.aws.config(account, region).await);
        let state = if enabled {
            aws_sdk_eventbridge::types::RuleState::Enabled
        } else {
            aws_sdk_eventbridge::types::RuleState::Disabled
        };
        let pattern = testbed::stack_templates::forwarding_pattern(&HashMap::from([
            ("CentralBusArn", Value::from(self.bus_arn.as_str())),
            ("SourceAccountIds", Value::from(vec![self.source.as_str()])),
            ("SourceRegions", Value::from(vec![SOURCE_REGION])),
        ]))?;
        events
            .put_rule()
            .name("replwatch-forward")
            .event_pattern(pattern.to_string())
            .state(state)
            .send()
            .await?;
        events
            .put_targets()
            .rule("replwatch-forward")
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("central")
                    .arn(&self.bus_arn)
                    .build()?,
            )
            .send()
            .await?;
        Ok(())
    }

    /// A trail of the source account created in `home_region`, not yet logging, with CloudTrail's
    /// default selectors. Its bucket is created first: moto, like CloudTrail, refuses a trail
    /// whose bucket does not exist. The client answers in the trail's home Region.
    async fn trail(
        &self,
        name: &str,
        home_region: &str,
        multi_region: bool,
    ) -> Result<aws_sdk_cloudtrail::Client, Error> {
        let bucket = format!("{name}-{}", self.source);
        create_bucket(self.aws.endpoint(), &self.source, &bucket)?;
        let cloudtrail =
            aws_sdk_cloudtrail::Client::new(&self.aws.config(&self.source, home_region).await);
        cloudtrail
            .create_trail()
            .name(name)
            .s3_bucket_name(bucket)
            .is_multi_region_trail(multi_region)
            .send()
            .await?;
        Ok(cloudtrail)
    }
}

/// S3 `CreateBucket` in `account`, as a plain request (the test bed reads the account from the
/// access key id of the signature and checks no signature): the only S3 call the tests make,
/// not worth building the S3 SDK for.
fn create_bucket(endpoint: &str, account: &str, bucket: &str) -> Result<(), Error> {
    let host = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| format!("not a plain HTTP endpoint: {endpoint}"))?;
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nAuthorization: AWS4-HMAC-SHA256 \
         Credential={account}/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, \
         Signature=0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if answer.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("CreateBucket {bucket}: {answer}").into())
    }
}

fn registry(region: &str, account: &str) -> Result<Destination, Error> {
    Ok(Destination::new(
        Region::parse(region)?,
        AccountId::parse(account)?,
    ))
}

fn trust(account: &str, external_id: Option<&str>) -> String {
    let condition = external_id.map_or(String::new(), |id| {
        format!(r#","Condition":{{"StringEquals":{{"sts:ExternalId":"{id}"}}}}"#)
    });
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"sts:AssumeRole",
           "Principal":{{"AWS":"arn:aws:iam::{account}:root"}}{condition}}}]}}"#
    )
}

/// The (severity, subject) of each finding of `check`.
fn findings(report: &Value, check: &str) -> Vec<(String, String, String)> {
    report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["check"] == check)
        .map(|f| {
            (
                f["severity"].as_str().unwrap_or_default().to_owned(),
                f["subject"].as_str().unwrap_or_default().to_owned(),
                f["problem"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn severities(report: &Value, check: &str) -> Vec<String> {
    let mut found: Vec<String> = findings(report, check).into_iter().map(|f| f.0).collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_setup_with_every_problem_gets_every_finding_with_its_fix() -> Result<(), Error> {
    let setup = Setup::new().await?;
    let (source, partner) = (&setup.source, &setup.partner);
    // Partner: no registry policy; its own rule sends team-a/ on to a third Region (chaining);
    // no creation template; the forwarding rule exists but is disabled; the reader role wants
    // another external id. Source's other Region: no creation template, no forwarding rule.
    setup
        .aws
        .put_replication_configuration(
            partner,
            CROSS_REGION,
            &ReplicationConfiguration {
                rules: vec![ReplicationRule {
                    destinations: vec![registry("ap-southeast-2", partner)?],
                    repository_filters: vec![RepositoryFilter {
                        filter: "team-a/web".into(),
                        filter_type: PREFIX_MATCH.into(),
                    }],
                }],
            },
        )
        .await?;
    setup.forward(partner, CROSS_REGION, false).await?;
    setup
        .aws
        .create_role(partner, READER_ROLE, &trust(source, Some(EXTERNAL_ID)))?;

    let (code, report) = setup.doctor("not-the-external-id", &[]);
    assert_eq!(code, Some(1), "{report:#}");
    let cross = format!("{CROSS_REGION}/{partner}");
    let same = format!("{SAME_ACCOUNT_REGION}/{source}");

    let policy = findings(&report, "registry-policy");
    assert_eq!(policy.len(), 1, "{report:#}");
    assert_eq!((policy[0].0.as_str(), &policy[0].1), ("error", &cross));
    assert!(policy[0].2.starts_with("no registry permissions policy"));

    let chained = findings(&report, "chained-replication");
    let warned: Vec<&(String, String, String)> =
        chained.iter().filter(|f| f.0 == "warning").collect();
    assert_eq!(warned.len(), 1, "{report:#}");
    assert_eq!(warned[0].1, cross);
    assert!(
        warned[0]
            .2
            .contains(&format!("on to ap-southeast-2/{partner}"))
    );

    assert_eq!(
        severities(&report, "creation-template"),
        ["warning", "warning"]
    );

    let forwarding = findings(&report, "event-forwarding");
    assert_eq!(forwarding.len(), 2, "{report:#}");
    for (severity, subject, problem) in &forwarding {
        assert_eq!(severity, "error");
        let expected = if *subject == cross {
            "disabled"
        } else {
            "no EventBridge rule"
        };
        assert!(problem.contains(expected), "{subject}: {problem}");
    }
    assert!(forwarding.iter().any(|f| f.1 == same));

    // No trail in the source account: the rules-change event never comes.
    let trail = findings(&report, "cloudtrail");
    assert_eq!(trail.len(), 1, "{report:#}");
    assert_eq!(trail[0].0, "warning");
    assert_eq!(trail[0].1, format!("source {SOURCE_REGION}/{source}"));
    assert!(
        trail[0]
            .2
            .starts_with(&format!("no CloudTrail trail covers {SOURCE_REGION}")),
        "{}",
        trail[0].2
    );
    assert!(trail[0].2.contains("about 5 minutes"), "{}", trail[0].2);

    let reader = findings(&report, "reader-role");
    assert_eq!(reader.len(), 1, "one check per account: {report:#}");
    assert_eq!(reader[0].0, "error");
    assert!(reader[0].2.contains("AccessDenied"), "{}", reader[0].2);

    // Every problem comes with its fix; the worst come first.
    for finding in report["findings"].as_array().into_iter().flatten() {
        if matches!(finding["severity"].as_str(), Some("error" | "warning")) {
            assert!(
                !finding["fix"].as_str().unwrap_or_default().is_empty(),
                "{finding}"
            );
        }
    }
    assert_eq!(report["findings"][0]["severity"], "error");

    // A proposed configuration is checked before it is applied: ECR would refuse 11 rules.
    let proposed = std::env::temp_dir().join(format!("replwatch-doctor-{source}.json"));
    let rules: Vec<Value> = (0..11)
        .map(|n| {
            serde_json::json!({"destinations": [{"region": CROSS_REGION, "registryId": partner}],
                               "repositoryFilters": [{"filter": format!("team-{n}/"), "filterType": "PREFIX_MATCH"}]})
        })
        .collect();
    std::fs::write(&proposed, serde_json::json!({ "rules": rules }).to_string())?;
    let (code, report) = setup.doctor(
        EXTERNAL_ID,
        &["--configuration", &proposed.to_string_lossy()],
    );
    std::fs::remove_file(&proposed)?;
    assert_eq!(code, Some(1));
    let limits = findings(&report, "limits");
    assert_eq!(limits.len(), 1, "{report:#}");
    assert_eq!(limits[0].0, "error");
    assert!(limits[0].2.starts_with("11 rules"), "{}", limits[0].2);
    Ok(())
}

#[tokio::test]
async fn a_sound_setup_passes_every_check() -> Result<(), Error> {
    let setup = Setup::new().await?;
    let (source, partner) = (&setup.source, &setup.partner);
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Sid":"ReplicationAccessCrossAccount",
           "Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{source}:root"}},
           "Action":["ecr:CreateRepository","ecr:ReplicateImage"],
           "Resource":"arn:aws:ecr:{CROSS_REGION}:{partner}:repository/*"}}]}}"#
    );
    setup
        .aws
        .ecr(partner, CROSS_REGION)
        .await
        .put_registry_policy()
        .policy_text(policy)
        .send()
        .await?;
    for (account, region) in [(partner, CROSS_REGION), (source, SAME_ACCOUNT_REGION)] {
        setup
            .aws
            .ecr(account, region)
            .await
            .create_repository_creation_template()
            .prefix("ROOT")
            .applied_for(RctAppliedFor::Replication)
            .send()
            .await?;
        setup.forward(account, region, true).await?;
    }
    setup
        .aws
        .create_role(partner, READER_ROLE, &trust(source, Some(EXTERNAL_ID)))?;
    // A logging multi-Region trail recording management events, created in another Region:
    // its shadow covers the source Region.
    let cloudtrail = setup.trail("org-trail", SAME_ACCOUNT_REGION, true).await?;
    cloudtrail
        .put_event_selectors()
        .trail_name("org-trail")
        .event_selectors(
            EventSelector::builder()
                .read_write_type(aws_sdk_cloudtrail::types::ReadWriteType::All)
                .include_management_events(true)
                .build(),
        )
        .send()
        .await?;
    cloudtrail.start_logging().name("org-trail").send().await?;

    let (code, report) = setup.doctor(EXTERNAL_ID, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    let trail = findings(&report, "cloudtrail");
    assert_eq!(trail.len(), 1, "{report:#}");
    assert!(
        trail[0]
            .2
            .starts_with("trail org-trail (multi-Region) is logging"),
        "{}",
        trail[0].2
    );
    for check in [
        "limits",
        "region-opt-in",
        "registry-policy",
        "chained-replication",
        "creation-template",
        "event-forwarding",
        "cloudtrail",
        "reader-role",
    ] {
        let found = severities(&report, check);
        assert!(!found.is_empty(), "{check} was not checked: {report:#}");
        assert!(found.iter().all(|s| s == "ok"), "{check}: {report:#}");
    }
    Ok(())
}

#[tokio::test]
async fn a_trail_that_is_stopped_or_skips_write_events_is_named() -> Result<(), Error> {
    let setup = Setup::new().await?;
    let cloudtrail = setup.trail("replwatch-trail", SOURCE_REGION, false).await?;
    let trail_finding = |report: &Value| {
        let found = findings(report, "cloudtrail");
        assert_eq!(found.len(), 1, "{report:#}");
        (found[0].0.clone(), found[0].2.clone())
    };

    // Created but never started.
    let (_, report) = setup.doctor(EXTERNAL_ID, &[]);
    let (severity, problem) = trail_finding(&report);
    assert_eq!(severity, "warning");
    assert!(
        problem.starts_with("trail replwatch-trail is not logging: "),
        "{problem}"
    );

    // Logging, but only read-only management events (advanced selectors).
    cloudtrail
        .start_logging()
        .name("replwatch-trail")
        .send()
        .await?;
    let selector = |read_only: &str| -> Result<AdvancedEventSelector, Error> {
        Ok(AdvancedEventSelector::builder()
            .name("management events")
            .field_selectors(
                AdvancedFieldSelector::builder()
                    .field("eventCategory")
                    .equals("Management")
                    .build()?,
            )
            .field_selectors(
                AdvancedFieldSelector::builder()
                    .field("readOnly")
                    .equals(read_only)
                    .build()?,
            )
            .build()?)
    };
    cloudtrail
        .put_event_selectors()
        .trail_name("replwatch-trail")
        .advanced_event_selectors(selector("true")?)
        .send()
        .await?;
    let (_, report) = setup.doctor(EXTERNAL_ID, &[]);
    let (severity, problem) = trail_finding(&report);
    assert_eq!(severity, "warning");
    assert!(
        problem.starts_with("trail replwatch-trail does not record write management events"),
        "{problem}"
    );

    // Write management events: the rule changes arrive.
    cloudtrail
        .put_event_selectors()
        .trail_name("replwatch-trail")
        .advanced_event_selectors(selector("false")?)
        .send()
        .await?;
    let (_, report) = setup.doctor(EXTERNAL_ID, &[]);
    let (severity, problem) = trail_finding(&report);
    assert_eq!(severity, "ok", "{problem}");
    assert!(
        problem.starts_with(&format!(
            "trail replwatch-trail (in {SOURCE_REGION}) is logging"
        )),
        "{problem}"
    );
    Ok(())
}

/// `EnableRegion` for `account`, with its own credentials.
async fn enable_region(setup: &Setup, account: &str, region: &str) -> Result<(), Error> {
    aws_sdk_account::Client::new(&setup.aws.config(account, SOURCE_REGION).await)
        .enable_region()
        .region_name(region)
        .send()
        .await?;
    Ok(())
}

#[tokio::test]
async fn an_opt_in_region_must_be_enabled_in_the_source_and_the_destination_account()
-> Result<(), Error> {
    const OPT_IN: &str = "eu-south-1";
    let setup = Setup::new().await?;
    let (source, partner) = (&setup.source, &setup.partner);
    setup
        .aws
        .put_replication_configuration(
            source,
            SOURCE_REGION,
            &ReplicationConfiguration {
                rules: vec![ReplicationRule {
                    destinations: vec![registry(OPT_IN, partner)?, registry(OPT_IN, source)?],
                    repository_filters: vec![],
                }],
            },
        )
        .await?;
    let cross = format!("{OPT_IN}/{partner}");
    let same = format!("{OPT_IN}/{source}");
    let opt_in = |report: &Value| {
        let mut found = findings(report, "region-opt-in");
        found.sort();
        found
    };

    // Neither account opted in: the cross-account destination names both, the same-account
    // one its account once, each with the command that enables the Region.
    let (code, report) = setup.doctor(EXTERNAL_ID, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    let found = opt_in(&report);
    assert_eq!(found.len(), 3, "{report:#}");
    assert!(found.iter().all(|f| f.0 == "error"), "{report:#}");
    let about = |subject: &str, role: &str, account: &str| {
        found.iter().any(|f| {
            f.1 == subject
                && f.2.starts_with(&format!(
                    "{OPT_IN} is not enabled (DISABLED) in {role} {account}: "
                ))
        })
    };
    assert!(about(&cross, "the source account", source), "{report:#}");
    assert!(
        about(&cross, "the destination account", partner),
        "{report:#}"
    );
    assert!(
        about(&same, "the source and destination account", source),
        "{report:#}"
    );
    let fixes: Vec<&str> = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["check"] == "region-opt-in")
        .filter_map(|f| f["fix"].as_str())
        .collect();
    assert!(
        fixes.iter().all(|fix| fix.starts_with(&format!(
            "`aws account enable-region --region-name {OPT_IN}` with the credentials of account"
        ))),
        "{fixes:#?}"
    );

    // The source account opted in: only the partner's account is left; while it is being
    // enabled the finding says so.
    enable_region(&setup, source, OPT_IN).await?;
    setup.aws.flush_replication(source)?;
    setup
        .aws
        .configure_replication(&serde_json::json!({"region_opt_in_seconds": 3600}))?;
    let enabling = enable_region(&setup, partner, OPT_IN).await;
    setup
        .aws
        .configure_replication(&serde_json::json!({"region_opt_in_seconds": 0}))?;
    enabling?;
    let (_, report) = setup.doctor(EXTERNAL_ID, &[]);
    let found = opt_in(&report);
    assert_eq!(found.len(), 2, "{report:#}");
    let ok = found.iter().find(|f| f.1 == same).expect("same-account");
    assert_eq!(ok.0, "ok", "{report:#}");
    assert_eq!(
        ok.2,
        format!("{OPT_IN} is enabled in the source and destination account {source} (ENABLED)")
    );
    let waiting = found.iter().find(|f| f.1 == cross).expect("cross-account");
    assert_eq!(waiting.0, "error");
    assert!(
        waiting.2.starts_with(&format!(
            "{OPT_IN} is still being enabled (ENABLING) in the destination account {partner}"
        )),
        "{}",
        waiting.2
    );

    // Enabled in both: nothing left to fix for this check.
    setup.aws.flush_replication(partner)?;
    let (_, report) = setup.doctor(EXTERNAL_ID, &[]);
    let found = opt_in(&report);
    assert_eq!(found.len(), 2, "{report:#}");
    assert!(found.iter().all(|f| f.0 == "ok"), "{report:#}");
    let cross_ok = found.iter().find(|f| f.1 == cross).expect("cross-account");
    assert_eq!(
        cross_ok.2,
        format!(
            "{OPT_IN} is enabled in the source account {source} (ENABLED) and in the destination \
             account {partner} (ENABLED)"
        )
    );
    Ok(())
}
