//! The central account's trust boundary, attacked on the local AWS (which evaluates queue and
//! topic policies as AWS does, `infra/local-aws/README.md`), with the policies `template.yaml`
//! ships:
//! - a principal of the central account (its root, a role of it) cannot send to the push or the
//!   replication queue: a forged SUCCESS or push never reaches the functions, while the stack's
//!   own rules still deliver;
//! - of the CloudWatch alarms of other accounts, only the forwarders' (`replwatch-forwarder-*`)
//!   of the accounts the stack serves reach the on-call topic; an alarm of a served account
//!   named otherwise, and a forwarder-named alarm of an account the stack does not serve, are
//!   refused.

use std::collections::HashMap;

use aws_sdk_sqs::error::ProvideErrorMetadata;
use serde_json::Value as Json;
use testbed::stack_templates::topic_policy;
use testbed::{LocalAws, LocalDeployment, trusting_account, unique_account};

const REGION: &str = "us-west-2";

#[tokio::test]
async fn no_principal_of_the_central_account_can_feed_the_pipeline_s_queues() {
    let aws = LocalAws::from_env().unwrap_or_else(|e| panic!("{e}"));
    let account = unique_account();
    let deployment = LocalDeployment::create(&aws, &account, REGION, &[])
        .await
        .expect("deployment");
    aws.create_role(&account, "ci-deployer", &trusting_account(&account))
        .expect("role");
    let role = format!("arn:aws:iam::{account}:role/ci-deployer");
    let callers = [
        ("the account root", aws.config(&account, REGION).await),
        (
            "a role of the account",
            aws.assumed(&account, &role, REGION).await.expect("role"),
        ),
    ];
    let forged_success = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events/replication-success.json"),
    )
    .expect("sample");
    for (who, config) in &callers {
        let sqs = aws_sdk_sqs::Client::new(config);
        for queue in [&deployment.replication_queue, &deployment.push_queue] {
            let sent = sqs
                .send_message()
                .queue_url(queue)
                .message_body(&forged_success)
                .send()
                .await;
            assert_eq!(
                sent.map(|_| ()).map_err(|e| e.code().map(str::to_owned)),
                Err(Some("AccessDenied".to_owned())),
                "{who} sending to {queue}"
            );
        }
    }
    let sqs = aws_sdk_sqs::Client::new(&aws.config(&account, REGION).await);
    let waiting = sqs
        .receive_message()
        .queue_url(&deployment.replication_queue)
        .send()
        .await
        .expect("receive");
    assert!(waiting.messages().is_empty(), "nothing forged got in");

    // The stack's own rule still delivers: a push reaches the push queue.
    aws.ecr(&account, REGION)
        .await
        .create_repository()
        .repository_name("tb/app")
        .send()
        .await
        .expect("repository");
    aws.push_image(&account, REGION, "tb/app", Some("v1"), "trust-boundary")
        .await
        .expect("push");
    let delivered = sqs
        .receive_message()
        .queue_url(&deployment.push_queue)
        .max_number_of_messages(10)
        .send()
        .await
        .expect("receive");
    assert_eq!(delivered.messages().len(), 1, "the rule's delivery");
}

#[tokio::test]
async fn only_the_forwarders_alarms_of_the_served_accounts_reach_the_on_call_topic() {
    let aws = LocalAws::from_env().unwrap_or_else(|e| panic!("{e}"));
    let (central, served, stranger) = (unique_account(), unique_account(), unique_account());
    let deployment = LocalDeployment::create(&aws, &central, REGION, &[])
        .await
        .expect("deployment");
    // template.yaml's topic policy, for a stack serving `served`.
    let parameters = HashMap::from([
        ("AlertTopic", Json::from(deployment.alert_topic.as_str())),
        ("DestinationAccountIds", Json::from(vec![served.as_str()])),
        ("AWS::AccountId", Json::from(central.as_str())),
        ("AWS::Region", Json::from(REGION)),
        ("AWS::Partition", Json::from("aws")),
    ]);
    let policy =
        topic_policy("template.yaml", "AlertTopicPolicy", &parameters, &[]).expect("policy");
    aws_sdk_sns::Client::new(&aws.config(&central, REGION).await)
        .set_topic_attributes()
        .topic_arn(&deployment.alert_topic)
        .attribute_name("Policy")
        .attribute_value(policy.to_string())
        .send()
        .await
        .expect("topic policy");

    let alarms = [
        (&served, "replwatch-forwarder-rw", true),
        (&served, "someone-elses-alarm", false),
        (&stranger, "replwatch-forwarder-rw", false),
        (&central, "central-health", true),
    ];
    for (account, name, _) in alarms {
        let cloudwatch = aws_sdk_cloudwatch::Client::new(&aws.config(account, REGION).await);
        cloudwatch
            .put_metric_alarm()
            .alarm_name(name)
            .namespace("replwatch-test")
            .metric_name("Undelivered")
            .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(0.0)
            .comparison_operator(
                aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold,
            )
            .alarm_actions(&deployment.alert_topic)
            .send()
            .await
            .expect("alarm");
        cloudwatch
            .set_alarm_state()
            .alarm_name(name)
            .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
            .state_reason("test")
            .send()
            .await
            .expect("alarm state");
    }
    let mut reached: Vec<(String, String)> = deployment
        .published_alerts()
        .await
        .expect("alerts")
        .iter()
        .map(|alert| {
            let notification: Json = serde_json::from_str(&alert.message).expect("notification");
            (
                notification["AWSAccountId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                notification["AlarmName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    reached.sort();
    let mut expected: Vec<(String, String)> = alarms
        .iter()
        .filter(|(_, _, admitted)| *admitted)
        .map(|(account, name, _)| (account.to_string(), (*name).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(reached, expected);
}
