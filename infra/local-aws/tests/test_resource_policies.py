"""Resource-based policies enforced on the local AWS: SQS queue policies (API senders and
EventBridge deliveries), SNS topic policies (Publish and CloudWatch alarm notifications) and
ECR registry permissions for cross-account replication."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import botocore.exceptions
import pytest

from localaws import (
    A, B, C, ENDPOINT, SRC_REGION, allow_eventbridge, allow_replication_from, assumed_client, client, flush,
    push_image, put_config, queue_arn, statuses, tap,
)

REGION = "us-east-1"


def _queue(account: str, name: str = "q") -> tuple[object, str, str]:
    sqs = client("sqs", REGION, account)
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    return sqs, url, queue_arn(sqs, url)


def _set_policy(sqs, url: str, *statements: dict) -> None:
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(
        {"Version": "2012-10-17", "Statement": list(statements)})})


def _bodies(sqs, url: str, attributes: bool = False) -> list:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                   MessageAttributeNames=["All"]).get("Messages", [])
    if attributes:
        return [(m["Body"], {k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()})
                for m in messages]
    return [m["Body"] for m in messages]


def _denied(call, code: str = "AccessDenied", status: int = 403) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as err:
        call()
    assert err.value.response["Error"]["Code"] == code
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def _query_send(account: str, url: str, body: str = "hi") -> tuple[int, str]:
    """SendMessage over the SQS query protocol (form-encoded), as older SDKs send it."""
    form = urllib.parse.urlencode({"Action": "SendMessage", "Version": "2012-11-05", "QueueUrl": url,
                                   "MessageBody": body}).encode()
    request = urllib.request.Request(ENDPOINT + "/", data=form, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "Authorization": f"AWS4-HMAC-SHA256 Credential={account}/20260101/{REGION}/sqs/aws4_request, "
                         "SignedHeaders=host, Signature=0"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


# --- SQS: API senders ----------------------------------------------------------------------

def test_a_queue_without_policy_takes_its_own_account_and_refuses_others():
    sqs, url, _ = _queue(A)
    sqs.send_message(QueueUrl=url, MessageBody="own")
    other = client("sqs", REGION, B)
    _denied(lambda: other.send_message(QueueUrl=url, MessageBody="foreign"))
    _denied(lambda: other.send_message_batch(QueueUrl=url, Entries=[{"Id": "1", "MessageBody": "foreign"}]))
    assert _bodies(sqs, url) == ["own"]


def test_another_account_sends_as_the_queue_policy_allows():
    sqs, url, arn = _queue(A)
    _set_policy(sqs, url, {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{B}:root"},
                           "Action": "sqs:SendMessage", "Resource": arn})
    client("sqs", REGION, B).send_message(QueueUrl=url, MessageBody="from B")
    assumed_client("sqs", REGION, B).send_message_batch(
        QueueUrl=url, Entries=[{"Id": "1", "MessageBody": "from B's role"}])
    _denied(lambda: client("sqs", REGION, C).send_message(QueueUrl=url, MessageBody="from C"))
    assert sorted(_bodies(sqs, url)) == ["from B", "from B's role"]


def test_an_explicit_deny_refuses_the_queue_s_own_account_over_both_protocols():
    sqs, url, arn = _queue(A)
    _set_policy(sqs, url, {"Effect": "Deny", "Principal": "*", "Action": "sqs:SendMessage", "Resource": arn,
                           "Condition": {"Bool": {"aws:SecureTransport": "false"}}})  # the test bed is HTTP
    _denied(lambda: sqs.send_message(QueueUrl=url, MessageBody="x"))  # JSON protocol (botocore)
    status, answer = _query_send(A, url)
    assert status == 403 and "<Code>AccessDenied</Code>" in answer and "<Type>Sender</Type>" in answer
    assert _bodies(sqs, url) == []


def test_an_unmodelled_condition_makes_a_deny_apply_and_an_allow_not():
    sqs, url, arn = _queue(A)
    unknown = {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}
    _set_policy(sqs, url, {"Effect": "Allow", "Principal": {"AWS": B}, "Action": "sqs:SendMessage",
                           "Resource": arn, "Condition": unknown})
    _denied(lambda: client("sqs", REGION, B).send_message(QueueUrl=url, MessageBody="x"))
    sqs.send_message(QueueUrl=url, MessageBody="own")  # no Deny: the owner is still admitted
    _set_policy(sqs, url, {"Effect": "Deny", "Principal": "*", "Action": "sqs:*", "Condition": unknown})
    _denied(lambda: sqs.send_message(QueueUrl=url, MessageBody="x"))


# --- SQS: EventBridge deliveries ------------------------------------------------------------

def _rule_to(account: str, url: str, arn: str, dead_letter: str | None = None, bus: str = "default"):
    events = client("events", REGION, account)
    if bus != "default":
        events.create_event_bus(Name=bus)
    rule_arn = events.put_rule(Name="to-queue", EventBusName=bus,
                               EventPattern=json.dumps({"source": ["my.app"]}))["RuleArn"]
    target = {"Id": "q", "Arn": arn}
    if dead_letter:
        target["DeadLetterConfig"] = {"Arn": dead_letter}
    events.put_targets(Rule="to-queue", EventBusName=bus, Targets=[target])
    return events, rule_arn


def _put(events, bus: str = "default") -> None:
    events.put_events(Entries=[{"Source": "my.app", "DetailType": "Thing", "Detail": "{}", "EventBusName": bus}])


def test_eventbridge_delivers_only_as_the_queue_policy_allows_else_to_the_dead_letter_queue():
    sqs, url, arn = _queue(A)
    _, dlq, dlq_arn = _queue(A, "undelivered")
    events, rule_arn = _rule_to(A, url, arn, dead_letter=dlq_arn)
    _put(events)  # neither queue admits EventBridge: dropped
    assert _bodies(sqs, url) == [] and _bodies(sqs, dlq) == []
    allow_eventbridge(sqs, dlq, rule_arn)
    _put(events)  # refused by the target, taken by the dead-letter queue
    (parked,) = _bodies(sqs, dlq, attributes=True)
    body, attributes = parked
    assert json.loads(body)["source"] == "my.app"
    assert attributes["ERROR_CODE"] == "NO_PERMISSIONS"
    assert (attributes["RULE_ARN"], attributes["TARGET_ARN"]) == (rule_arn, arn)
    allow_eventbridge(sqs, url, "arn:aws:events:us-east-1:111111111111:rule/another")
    _put(events)  # a statement for another rule does not admit this one
    assert _bodies(sqs, url) == [] and len(_bodies(sqs, dlq)) == 1
    allow_eventbridge(sqs, url, rule_arn)
    _put(events)
    (delivered,) = _bodies(sqs, url)
    assert json.loads(delivered)["detail-type"] == "Thing"


def test_done_when_a_replication_queue_refuses_its_own_account_and_takes_the_rule_s_delivery():
    """template.yaml's ReplicationQueuePolicy plus a Deny of sqs:SendMessage to everyone but the
    central bus's rule: the account's root and its roles may not write events into the queue."""
    sqs, url, arn = _queue(A, "replwatch-replication")
    events, rule_arn = _rule_to(A, url, arn, bus="replwatch-central")
    assert rule_arn.endswith(":rule/replwatch-central/to-queue")
    _set_policy(sqs, url, {
        "Sid": "ReplicationEventsFromCentralBus", "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"}, "Action": "sqs:SendMessage", "Resource": arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
    }, {
        "Sid": "OnlyTheRule", "Effect": "Deny", "Principal": "*", "Action": "sqs:SendMessage", "Resource": arn,
        "Condition": {"ArnNotEquals": {"aws:SourceArn": rule_arn}},
    })
    _denied(lambda: sqs.send_message(QueueUrl=url, MessageBody="forged by root"))
    role = assumed_client("sqs", REGION, A, role="replwatch-sweep")
    _denied(lambda: role.send_message(QueueUrl=url, MessageBody="forged by a role"))
    _denied(lambda: role.send_message_batch(QueueUrl=url, Entries=[{"Id": "1", "MessageBody": "forged"}]))
    _put(events, bus="replwatch-central")
    (delivered,) = _bodies(sqs, url)
    assert json.loads(delivered)["source"] == "my.app"


# --- SNS ---------------------------------------------------------------------------------

def _topic(account: str, name: str = "alerts") -> tuple[object, str, object, str]:
    """A topic with an SQS subscription to read what it delivers."""
    sns = client("sns", REGION, account)
    topic = sns.create_topic(Name=name)["TopicArn"]
    sqs, url, arn = _queue(account, f"{name}-subscription")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    return sns, topic, sqs, url


def test_publish_follows_the_topic_policy():
    sns, topic, sqs, url = _topic(A)
    sns.publish(TopicArn=topic, Message="own")  # SNS's default policy: the owner publishes
    other = client("sns", REGION, B)
    _denied(lambda: other.publish(TopicArn=topic, Message="foreign"), "AuthorizationError")
    _denied(lambda: other.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
        {"Id": "1", "Message": "foreign"}]), "AuthorizationError")
    sns.add_permission(TopicArn=topic, Label="b", AWSAccountId=[B], ActionName=["Publish"])
    other.publish(TopicArn=topic, Message="from B")
    policy = json.loads(sns.get_topic_attributes(TopicArn=topic)["Attributes"]["Policy"])
    policy["Statement"].append({"Sid": "https-only", "Effect": "Deny", "Principal": "*", "Action": "sns:Publish",
                                "Resource": topic, "Condition": {"Bool": {"aws:SecureTransport": "false"}}})
    sns.set_topic_attributes(TopicArn=topic, AttributeName="Policy", AttributeValue=json.dumps(policy))
    _denied(lambda: sns.publish(TopicArn=topic, Message="over http"), "AuthorizationError")
    assert [json.loads(b)["Message"] for b in _bodies(sqs, url)] == ["own", "from B"]


def _alarm(account: str, name: str, topic: str, **extra) -> object:
    cloudwatch = client("cloudwatch", REGION, account)
    cloudwatch.put_metric_alarm(AlarmName=name, Namespace="AWS/SQS", MetricName="ApproximateNumberOfMessagesVisible",
                                Statistic="Maximum", Period=300, EvaluationPeriods=1, Threshold=0,
                                ComparisonOperator="GreaterThanThreshold", AlarmActions=[topic], **extra)
    return cloudwatch


def _notifications(sqs, url) -> list[dict]:
    return [json.loads(body) for body in _bodies(sqs, url)]


def test_an_alarm_notifies_its_topic_on_a_transition_as_the_default_policy_allows_its_own_account():
    _, topic, sqs, url = _topic(A)
    cloudwatch = _alarm(A, "queue-backlog", topic, OKActions=[topic])
    cloudwatch.set_alarm_state(AlarmName="queue-backlog", StateValue="ALARM", StateReason="test")
    cloudwatch.set_alarm_state(AlarmName="queue-backlog", StateValue="ALARM", StateReason="again")  # no transition
    (notice,) = _notifications(sqs, url)
    assert notice["Subject"] == 'ALARM: "queue-backlog" in US East (N. Virginia)'
    message = json.loads(notice["Message"])
    assert (message["AlarmName"], message["NewStateValue"]) == ("queue-backlog", "ALARM")
    assert message["OldStateValue"] == "OK"
    assert message["AlarmArn"] == f"arn:aws:cloudwatch:{REGION}:{A}:alarm:queue-backlog"
    assert message["AWSAccountId"] == A and message["NewStateReason"] == "test"
    cloudwatch.set_alarm_state(AlarmName="queue-backlog", StateValue="OK", StateReason="fine")
    assert [json.loads(n["Message"])["NewStateValue"] for n in _notifications(sqs, url)] == ["OK"]
    cloudwatch.disable_alarm_actions(AlarmNames=["queue-backlog"])
    cloudwatch.set_alarm_state(AlarmName="queue-backlog", StateValue="ALARM", StateReason="quiet")
    assert _notifications(sqs, url) == []
    # Another account's alarm is refused by the default policy.
    _alarm(B, "theirs", topic).set_alarm_state(AlarmName="theirs", StateValue="ALARM", StateReason="x")
    assert _notifications(sqs, url) == []


def test_done_when_a_topic_takes_only_the_forwarder_alarms_of_another_account():
    """The central topic admits cloudwatch.amazonaws.com only for alarms named
    replwatch-forwarder-* (aws:SourceArn): another account's forwarder alarm notifies it, any
    other alarm of that account does not."""
    sns, topic, sqs, url = _topic(C, "replwatch-alerts")
    sns.set_topic_attributes(TopicArn=topic, AttributeName="Policy", AttributeValue=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "CloudWatchAlarmsOfDestinationAccounts", "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"}, "Action": "sns:Publish", "Resource": topic,
            "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:cloudwatch:{REGION}:*:alarm:replwatch-forwarder-*"}},
        }],
    }))
    for name in ("replwatch-forwarder-x", "other-alarm"):
        _alarm(B, name, topic).set_alarm_state(AlarmName=name, StateValue="ALARM", StateReason="undelivered")
    (notice,) = _notifications(sqs, url)
    message = json.loads(notice["Message"])
    assert message["AlarmName"] == "replwatch-forwarder-x" and message["AWSAccountId"] == B


# --- ECR registry permissions ---------------------------------------------------------------

def _replicate_to_b(repo: str = "team-a/web", dest_repo_exists: bool = False) -> tuple[dict, dict]:
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=repo)
    if dest_repo_exists:
        assumed_client("ecr", "eu-west-1", B).create_repository(repositoryName=repo)
    put_config(ecr, ([("us-east-1", A), ("eu-west-1", B)], None))
    image = push_image(ecr, repo, "v1")
    flush()
    return image, statuses(ecr, repo, image["digest"])


def _registry_policy(actions: list[str], principal: object = None, effect: str = "Allow") -> None:
    client("ecr", "eu-west-1", B).put_registry_policy(policyText=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Sid": "r", "Effect": effect, "Principal": principal or {"AWS": A}, "Action": actions,
                       "Resource": f"arn:aws:ecr:eu-west-1:{B}:repository/*"}],
    }))


def test_cross_account_replication_is_refused_without_the_destination_s_registry_policy():
    failures = tap(B, "eu-west-1", {"source": ["aws.ecr"], "detail": {"result": ["FAILED"]}}, assumed=True)
    _, st = _replicate_to_b()
    assert st[("us-east-1", A)]["status"] == "COMPLETE"  # the same account needs nothing
    assert st[("eu-west-1", B)] == {"region": "eu-west-1", "registryId": B, "status": "FAILED",
                                    "failureCode": "ACCESS_DENIED"}
    assert assumed_client("ecr", "eu-west-1", B).describe_repositories()["repositories"] == []
    (event,) = failures.drain(expect=1)
    assert event["detail"]["action-type"] == "REPLICATE" and event["detail"]["source-account"] == A


@pytest.mark.parametrize("actions,principal,exists,status", [
    (["ecr:ReplicateImage", "ecr:CreateRepository"], None, False, "COMPLETE"),
    (["ecr:ReplicateImage", "ecr:CreateRepository"], {"AWS": f"arn:aws:iam::{A}:root"}, False, "COMPLETE"),
    (["ecr:ReplicateImage"], None, True, "COMPLETE"),  # the repository is there: no need to create it
    (["ecr:ReplicateImage"], None, False, "FAILED"),  # nor may ECR create it
    (["ecr:CreateRepository"], None, False, "FAILED"),
    (["ecr:ReplicateImage", "ecr:CreateRepository"], {"AWS": C}, False, "FAILED"),  # another source account
])
def test_cross_account_replication_needs_replicate_image_and_create_repository(actions, principal, exists, status):
    _registry_policy(actions, principal)
    _, st = _replicate_to_b(dest_repo_exists=exists)
    assert st[("eu-west-1", B)]["status"] == status


def test_a_deny_in_the_registry_policy_wins():
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": A}, "Action": ["ecr:ReplicateImage", "ecr:CreateRepository"],
         "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": "ecr:ReplicateImage",
         "Resource": f"arn:aws:ecr:eu-west-1:{B}:repository/team-a/*"},
    ]}
    client("ecr", "eu-west-1", B).put_registry_policy(policyText=json.dumps(policy))
    _, st = _replicate_to_b("team-a/web")
    assert st[("eu-west-1", B)]["status"] == "FAILED"
    _, st = _replicate_to_b("team-b/api")
    assert st[("eu-west-1", B)]["status"] == "COMPLETE"


def test_the_helper_sets_what_a_user_sets():
    allow_replication_from(B, "eu-west-1", A)
    image, st = _replicate_to_b()
    assert st[("eu-west-1", B)]["status"] == "COMPLETE"
    dest = assumed_client("ecr", "eu-west-1", B)
    assert dest.describe_images(repositoryName="team-a/web")["imageDetails"][0]["imageDigest"] == image["digest"]
