"""EventBridge fixes and account selection."""

from __future__ import annotations

import json

import boto3
import pytest

from localaws import (
    A, B, C, ENDPOINT, ENVELOPE_KEYS, SRC_REGION, allow_eventbridge, assumed_client, client, configure, http, tap,
)


def test_put_events_to_sqs_keeps_account():
    t = tap(A, SRC_REGION, {"source": ["my.app"]})
    client("events", SRC_REGION).put_events(Entries=[{
        "Source": "my.app", "DetailType": "Thing", "Detail": json.dumps({"k": 1}), "Resources": ["arn:x"]}])
    (event,) = t.drain(expect=1)
    assert list(event) == ENVELOPE_KEYS
    assert event["account"] == A and event["region"] == SRC_REGION
    assert event["resources"] == ["arn:x"] and event["detail"] == {"k": 1}


def test_bus_to_bus_forwarding_keeps_the_original_envelope():
    # The central account C has a bus (admitting B) and a queue; B's default bus forwards to it.
    central_sqs, url, _, _, dest_events = _central_bus_and_forwarder({"Statement": [_statement()]})
    dest_events.put_events(Entries=[{"Source": "my.app", "DetailType": "Thing", "Detail": "{}",
                                     "Resources": ["arn:aws:ecr:eu-west-1:%s:repository/x" % B]}])
    msgs = central_sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    (event,) = [json.loads(m["Body"]) for m in msgs]
    assert event["account"] == B and event["region"] == "eu-west-1"
    assert event["resources"] == ["arn:aws:ecr:eu-west-1:%s:repository/x" % B]


def test_disabled_rule_does_not_deliver():
    events = client("events", SRC_REGION)
    t = tap(A, SRC_REGION, {"source": ["my.app"]})
    for rule in events.list_rules()["Rules"]:
        events.disable_rule(Name=rule["Name"])
    events.put_events(Entries=[{"Source": "my.app", "DetailType": "Thing", "Detail": "{}"}])
    assert t.drain() == []


def test_put_replication_configuration_emits_cloudtrail_event():
    t = tap(A, SRC_REGION, {"detail-type": ["AWS API Call via CloudTrail"]})
    config = {"rules": [{"destinations": [{"region": "us-east-1", "registryId": A}],
                         "repositoryFilters": [{"filter": "team-a/", "filterType": "PREFIX_MATCH"}]}]}
    client("ecr", SRC_REGION).put_replication_configuration(replicationConfiguration=config)
    (event,) = t.drain(expect=1)
    assert event["account"] == A and event["source"] == "aws.ecr"
    assert event["detail"]["eventName"] == "PutReplicationConfiguration"
    assert event["detail"]["eventSource"] == "ecr.amazonaws.com"
    assert event["detail"]["requestParameters"] == {"replicationConfiguration": config}


def test_account_selection():
    assert client("sts", SRC_REGION, A).get_caller_identity()["Account"] == A
    assert assumed_client("sts", SRC_REGION, B).get_caller_identity()["Account"] == B
    # Repositories are per account: B does not see A's.
    client("ecr", SRC_REGION, A).create_repository(repositoryName="only-in-a")
    assert assumed_client("ecr", SRC_REGION, B).describe_repositories()["repositories"] == []


def test_control_endpoint_validates_and_reset_restores_defaults():
    configure(event_drop_rate=0.5, destinations={"us-east-1/%s" % A: {"paused": True}})
    assert http("GET", "/_localaws/replication")["event_drop_rate"] == 0.5
    try:
        configure(event_drop_rate=2)
        raise AssertionError("expected HTTP 400")
    except Exception as err:  # urllib raises HTTPError
        assert getattr(err, "code", None) == 400
    http("POST", "/moto-api/reset")
    settings = http("GET", "/_localaws/replication")
    assert settings["event_drop_rate"] == 0.0 and settings["destinations"] == {}
    assert ENDPOINT.startswith("http://127.0.0.1")


def _trust(principal_account: str, external_id: str | None = None) -> str:
    statement: dict = {"Effect": "Allow", "Action": "sts:AssumeRole",
                       "Principal": {"AWS": f"arn:aws:iam::{principal_account}:root"}}
    if external_id is not None:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": external_id}}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def test_assume_role_is_open_in_an_account_without_roles():
    sts = client("sts", SRC_REGION, A)
    got = sts.assume_role(RoleArn=f"arn:aws:iam::{B}:role/anything", RoleSessionName="trust-test")
    assert got["Credentials"]["AccessKeyId"]


def test_assume_role_honours_the_trust_policy_once_the_account_has_roles():
    import botocore.exceptions
    import pytest

    iam = client("iam", "us-east-1", B)
    iam.create_role(RoleName="reader", AssumeRolePolicyDocument=_trust(A, "ext-1"))
    iam.create_role(RoleName="other-account-only", AssumeRolePolicyDocument=_trust(C))
    sts = client("sts", SRC_REGION, A)

    sts.assume_role(RoleArn=f"arn:aws:iam::{B}:role/reader", RoleSessionName="trust-test", ExternalId="ext-1")
    refused = [
        {"RoleArn": f"arn:aws:iam::{B}:role/reader", "ExternalId": "wrong"},
        {"RoleArn": f"arn:aws:iam::{B}:role/reader"},
        {"RoleArn": f"arn:aws:iam::{B}:role/other-account-only"},
        {"RoleArn": f"arn:aws:iam::{B}:role/missing"},
    ]
    for request in refused:
        with pytest.raises(botocore.exceptions.ClientError) as err:
            sts.assume_role(RoleSessionName="trust-test", **request)
        assert err.value.response["Error"]["Code"] == "AccessDenied", request
        assert "sts:AssumeRole" in err.value.response["Error"]["Message"]


def test_trust_policies_deny_and_condition_on_the_calling_role():
    import botocore.exceptions

    allow = {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"AWS": f"arn:aws:iam::{A}:root"},
             "Condition": {"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{A}:role/replwatch-*"}}}
    deny = {"Effect": "Deny", "Action": "sts:AssumeRole", "Principal": "*",
            "Condition": {"StringNotEquals": {"sts:ExternalId": "ext-1"}}}
    iam_b = client("iam", "us-east-1", B)
    iam_b.create_role(RoleName="reader", AssumeRolePolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [allow, deny]}))
    iam_a = client("iam", "us-east-1", A)
    for name in ("replwatch-sweep", "deployer"):
        iam_a.create_role(RoleName=name, AssumeRolePolicyDocument=_trust(A))

    def sts_as(role: str | None):
        if role is None:
            return client("sts", SRC_REGION, A)
        creds = client("sts", SRC_REGION, A).assume_role(
            RoleArn=f"arn:aws:iam::{A}:role/{role}", RoleSessionName="caller")["Credentials"]
        return boto3.client("sts", region_name=SRC_REGION, endpoint_url=ENDPOINT,
                            aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                            aws_session_token=creds["SessionToken"])

    reader = f"arn:aws:iam::{B}:role/reader"
    sts_as("replwatch-sweep").assume_role(RoleArn=reader, RoleSessionName="trust", ExternalId="ext-1")
    for caller, external_id in (("replwatch-sweep", None), ("replwatch-sweep", "other"),
                                ("deployer", "ext-1"), (None, "ext-1")):
        with pytest.raises(botocore.exceptions.ClientError) as err:
            extra = {"ExternalId": external_id} if external_id else {}
            sts_as(caller).assume_role(RoleArn=reader, RoleSessionName="trust", **extra)
        assert err.value.response["Error"]["Code"] == "AccessDenied", (caller, external_id)


def _central_bus_and_forwarder(policy: dict | None):
    """C's bus "replwatch" (with ``policy``) delivering to a queue; B's default bus forwarding
    my.app events to it, with a dead-letter queue. Returns (central sqs, queue url, B's sqs,
    dead-letter url, B's events client)."""
    central_events = client("events", "us-east-1", C)
    bus_arn = central_events.create_event_bus(Name="replwatch")["EventBusArn"]
    central_sqs = client("sqs", "us-east-1", C)
    url = central_sqs.create_queue(QueueName="central")["QueueUrl"]
    qarn = central_sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule_arn = central_events.put_rule(Name="all", EventBusName="replwatch",
                                       EventPattern=json.dumps({"source": ["my.app"]}))["RuleArn"]
    allow_eventbridge(central_sqs, url, rule_arn)
    central_events.put_targets(Rule="all", EventBusName="replwatch", Targets=[{"Id": "q", "Arn": qarn}])
    if policy is not None:
        for statement in policy["Statement"]:
            statement.setdefault("Resource", bus_arn)
        central_events.put_permission(EventBusName="replwatch", Policy=json.dumps(policy))
    dest_sqs = assumed_client("sqs", "eu-west-1", B)
    dlq = dest_sqs.create_queue(QueueName="undelivered")["QueueUrl"]
    dlq_arn = dest_sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    dest_events = assumed_client("events", "eu-west-1", B)
    forward_arn = dest_events.put_rule(Name="forward", EventPattern=json.dumps({"source": ["my.app"]}))["RuleArn"]
    allow_eventbridge(dest_sqs, dlq, forward_arn)
    dest_events.put_targets(Rule="forward", Targets=[{"Id": "central", "Arn": bus_arn,
                                                      "DeadLetterConfig": {"Arn": dlq_arn}}])
    return central_sqs, url, dest_sqs, dlq, dest_events


def _statement(effect: str = "Allow", principal=None, condition=None, sid: str = "s") -> dict:
    statement = {"Sid": sid, "Effect": effect, "Principal": principal or {"AWS": B}, "Action": "events:PutEvents"}
    if condition:
        statement["Condition"] = condition
    return statement


@pytest.mark.parametrize("policy,delivered", [
    (None, False),  # no resource policy: another account may not put events
    ({"Statement": [_statement()]}, True),
    ({"Statement": [_statement(principal={"AWS": f"arn:aws:iam::{B}:root"})]}, True),
    ({"Statement": [_statement(principal={"AWS": A})]}, False),  # another account admitted
    ({"Statement": [_statement(condition={"StringEquals": {"events:source": "my.app",
                                                           "events:detail-type": "Thing"}})]}, True),
    ({"Statement": [_statement(condition={"StringEquals": {"events:detail-type": "Other"}})]}, False),
    ({"Statement": [_statement(principal="*", condition={"StringEquals": {"aws:PrincipalOrgID": "o-none"}})]}, False),
    ({"Statement": [_statement(), _statement("Deny", principal="*", sid="d",
                                             condition={"StringLike": {"events:source": "my.*"}})]}, False),
])
def test_a_bus_takes_another_account_s_events_only_as_its_policy_allows(policy, delivered):
    central_sqs, url, dest_sqs, dlq, dest_events = _central_bus_and_forwarder(policy)
    dest_events.put_events(Entries=[{"Source": "my.app", "DetailType": "Thing", "Detail": "{}"}])
    arrived = central_sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    kept = dest_sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10,
                                    MessageAttributeNames=["All"]).get("Messages", [])
    assert (len(arrived), len(kept)) == ((1, 0) if delivered else (0, 1))
    if not delivered:
        (message,) = kept
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        assert attributes["ERROR_CODE"] == "NO_PERMISSIONS"
        assert attributes["RULE_ARN"].endswith(":rule/forward")
        assert attributes["TARGET_ARN"].endswith(":event-bus/replwatch")
        assert json.loads(message["Body"])["source"] == "my.app"
