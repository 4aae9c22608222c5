"""The stacks (template.yaml, infra/destination-region.yaml, infra/destination-account.yaml) as
an on-call engineer and a security reviewer read them: every failure of replwatch itself reaches
an alarm, nothing EventBridge fails to deliver is dropped unseen, roles reach only the accounts
the stack serves and only the KMS keys they are given, the roles in other accounts require the
external ids the central stack's functions are given, and parameters are refused before
CloudFormation or CloudWatch would fail on them.

Run by tests/run with the local AWS's virtualenv (PyYAML comes with cfn-lint):
    infra/local-aws/.venv/bin/python -m pytest -q infra/tests
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


class _Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms as their long forms (`!Ref X` -> {"Ref": "X"})."""


def _intrinsic(loader: _Loader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_Loader.add_multi_constructor("!", _intrinsic)


def load(path: str) -> dict[str, Any]:
    return yaml.load((ROOT / path).read_text(), Loader=_Loader)


@pytest.fixture(scope="module")
def central() -> dict[str, Any]:
    return load("template.yaml")


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def referenced(value: Any) -> str | None:
    """`!Ref X`, `!GetAtt X.Attr` -> X."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            return value["Fn::GetAtt"][0]
    return None


def walk(value: Any):
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


def alarm_metrics(alarm: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(namespace, metric name, the resource its first dimension names) of an alarm."""
    props = alarm["Properties"]
    stats = [m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m]
    if "MetricName" in props:
        stats.append(props)
    out = []
    for m in stats:
        dims = m.get("Dimensions") or [{}]
        ns = m["Namespace"]
        out.append((ns if isinstance(ns, str) else "<param>", m["MetricName"], referenced(dims[0].get("Value"))))
    return out


def test_every_eventbridge_target_has_a_dead_letter_queue_that_admits_its_rule(central):
    rules = resources(central, "AWS::Events::Rule")
    assert rules
    policy = next(p for p in resources(central, "AWS::SQS::QueuePolicy").values()
                  if referenced(p["Properties"]["Queues"][0]) == "EventDeliveryDeadLetterQueue")
    [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
    admitted = {referenced(v) for v in walk(statement["Condition"]) if referenced(v)}
    for name, rule in rules.items():
        for target in rule["Properties"]["Targets"]:
            dlq = target.get("DeadLetterConfig", {}).get("Arn")
            assert referenced(dlq) == "EventDeliveryDeadLetterQueue", f"{name} target {target['Id']}"
        assert name in admitted, f"the dead-letter queue's policy does not admit {name}"
    # A SAM schedule makes a rule this test would not see: each needs its dead-letter queue.
    for name, function in resources(central, "AWS::Serverless::Function").items():
        for event_name, event in function["Properties"].get("Events", {}).items():
            if event["Type"] in ("Schedule", "ScheduleV2"):
                assert "DeadLetterConfig" in event["Properties"], f"{name} {event_name}"


def test_every_dead_letter_queue_is_counted_by_the_dead_letter_alarm(central):
    queues = resources(central, "AWS::SQS::Queue")
    dead_letter = {"MalformedEventsQueue"}  # parked by the functions themselves
    for value in walk(central["Resources"]):
        if isinstance(value, dict):
            for key in ("deadLetterTargetArn", "Destination"):
                if referenced(value.get(key)) in queues:
                    dead_letter.add(referenced(value[key]))
            if referenced(value.get("DeadLetterConfig", {}).get("Arn")) in queues:
                dead_letter.add(referenced(value["DeadLetterConfig"]["Arn"]))
    assert {"PushDeadLetterQueue", "ReplicationDeadLetterQueue", "EventDeliveryDeadLetterQueue",
            "SweepFailureQueue", "BackfillJobsDeadLetterQueue", "BackfillFailureQueue"} <= dead_letter
    counted = {queue for _, metric, queue in alarm_metrics(central["Resources"]["DeadLetterDepthAlarm"])
               if metric == "ApproximateNumberOfMessagesVisible"}
    assert dead_letter <= counted, f"not alarmed: {sorted(dead_letter - counted)}"


def test_every_function_s_errors_and_throttles_and_every_event_queue_s_age_page(central):
    alarms = resources(central, "AWS::CloudWatch::Alarm")
    watched = {(metric, what) for alarm in alarms.values() for _, metric, what in alarm_metrics(alarm)}
    functions = resources(central, "AWS::Serverless::Function")
    for function in functions:
        assert ("Errors", function) in watched, function
        assert ("Throttles", function) in watched, function
    for name, function in functions.items():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] == "SQS":
                queue = referenced(event["Properties"]["Queue"])
                assert ("ApproximateAgeOfOldestMessage", queue) in watched, f"{name}: {queue}"


HEALTH_TOPIC = {"Fn::If": ["HasHealthAlarmTopic", {"Ref": "HealthAlarmTopicArn"}, {"Ref": "AlertTopic"}]}
# The alarms about replication itself: they are the alerts, and go where alerts go.
REPLICATION_ALARMS = {"OverdueAlarm", "FailedAlarm", "NotStartedAlarm", "UnconfirmedAlarm"}


def test_alarms_on_replwatch_itself_say_what_to_do_and_reach_the_health_topic(central):
    own = ("AWS/Lambda", "AWS/SQS")
    health = set()
    for name, alarm in resources(central, "AWS::CloudWatch::Alarm").items():
        props = alarm["Properties"]
        if name in REPLICATION_ALARMS:
            assert [referenced(a) for a in props["AlarmActions"]] == ["AlertTopic"], name
            continue
        health.add(name)
        # A broken alert topic (its key disabled, its policy changed) must not silence the
        # alarms that say so: they notify HealthAlarmTopicArn when it is set.
        assert props["AlarmActions"] == [HEALTH_TOPIC], name
        assert props.get("OKActions", [HEALTH_TOPIC]) == [HEALTH_TOPIC], name
        assert "Runbook:" in props["AlarmDescription"], name
    about_replwatch = {name for name, alarm in resources(central, "AWS::CloudWatch::Alarm").items()
                       if any(ns in own for ns, _, _ in alarm_metrics(alarm))}
    assert about_replwatch | {"SweepHeartbeatAlarm", "UndeliveredAlertsAlarm", "DeadLetteredEventsAlarm",
                              "SlackWebhookUnavailableAlarm", "SweepPartsNotDispatchedAlarm",
                              "SetAsideAlertsAlarm"} <= health


@pytest.mark.parametrize("arn,allowed", [
    ("", True), ("arn:aws:sns:eu-west-1:111111111111:replwatch-health", True),
    ("arn:aws-us-gov:sns:us-gov-west-1:111111111111:ops_pager", True),
    ("arn:aws:sqs:eu-west-1:111111111111:queue", False), ("replwatch-health", False),
    ("arn:aws:sns:eu-west-1:1111:t", False),
])
def test_the_health_topic_is_an_sns_topic_or_none_for_the_alert_topic(central, arn, allowed):
    parameter = central["Parameters"]["HealthAlarmTopicArn"]
    assert parameter["Default"] == ""
    assert bool(re.fullmatch(parameter["AllowedPattern"], arn)) is allowed
    assert central["Conditions"]["HasHealthAlarmTopic"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "HealthAlarmTopicArn"}, ""]}]}


def metric_name(constant: str) -> str:
    """The metric name `functions/core/src/metrics.rs` publishes as `constant`."""
    source = (ROOT / "functions/core/src/metrics.rs").read_text()
    match = re.search(rf'pub const {constant}: &str = "([A-Za-z]+)";', source)
    assert match, constant
    return match.group(1)


def test_a_sweep_part_that_is_not_queued_or_keeps_failing_is_alarmed(central):
    resources_ = central["Resources"]
    parts = resources_["SweepPartsQueue"]["Properties"]
    redrive = parts["RedrivePolicy"]
    dead_letter = resources_[referenced(redrive["deadLetterTargetArn"])]["Properties"]
    assert dead_letter["FifoQueue"] is True, "a FIFO queue's dead-letter queue is FIFO"
    # A part failing on every delivery reaches the dead-letter queue before it expires: each
    # delivery hides it for the visibility timeout.
    assert parts["MessageRetentionPeriod"] > redrive["maxReceiveCount"] * parts["VisibilityTimeout"]
    assert parts["MessageRetentionPeriod"] >= parts["VisibilityTimeout"]
    # Not queued after the sweep's retries: counted, and alarmed.
    alarm = resources_["SweepPartsNotDispatchedAlarm"]
    assert alarm.get("Condition") == "SplitsSweep"
    assert alarm_metrics(alarm) == [("<param>", metric_name("SWEEP_PARTS_NOT_DISPATCHED"), "SweepFunction")]
    # Every part beats at its tick: a minute short of SweepParts beats is a tick a part missed.
    heartbeat = resources_["SweepHeartbeatAlarm"]["Properties"]
    assert heartbeat["MetricName"] == metric_name("SWEEP_HEARTBEAT")
    assert (heartbeat["ComparisonOperator"], heartbeat["Threshold"]) == ("LessThanThreshold", {"Ref": "SweepParts"})
    assert (heartbeat["Statistic"], heartbeat["Period"], heartbeat["TreatMissingData"]) == ("Sum", 60, "breaching")


def test_an_unreadable_slack_webhook_is_alarmed_where_slack_is_set_up(central):
    alarm = central["Resources"]["SlackWebhookUnavailableAlarm"]
    assert alarm["Condition"] == "HasSlackWebhook"
    [query] = [m["Expression"]["Fn::Sub"] for m in alarm["Properties"]["Metrics"] if "Expression" in m]
    assert f'SUM({metric_name("SLACK_WEBHOOK_UNAVAILABLE")})' in query and "Function)" in query
    assert central["Conditions"]["HasSlackWebhook"] == {
        "Fn::Or": [{"Condition": "HasSlackSecret"}, {"Condition": "HasSlackParameter"}]}


def test_the_dashboard_shows_replwatch_s_own_health(central):
    body = central["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    for metric in ("Errors", "Throttles", "ApproximateAgeOfOldestMessage", "ApproximateNumberOfMessagesVisible",
                   "AlertDeliveryFailures", "UndeliveredAlerts", "SetAsideAlerts",
                   "SlackWebhookUnavailable"):
        assert metric in body, metric
    for function in resources(central, "AWS::Serverless::Function"):
        assert "${" + function + "}" in body, function
    line = (ROOT / "functions/core/src/metrics.rs").read_text()
    assert 'ALERT_DELIVERY_FAILURES: &str = "AlertDeliveryFailures"' in line, "the name the code publishes"


@pytest.mark.parametrize("namespace,allowed", [
    ("replwatch", True), ("team-a/replwatch_prod", True), ("ns:#1.x", True), ("x" * 255, True),
    ("AWS/ECR", False), ('rep"watch', False), ("rep watch", False), ("", False), ("x" * 256, False),
    ("replwatch}", False),
])
def test_the_metric_namespace_is_one_cloudwatch_and_the_dashboard_accept(central, namespace, allowed):
    # CloudFormation's AllowedPattern is a Java regular expression; this one uses nothing
    # Python's `re` reads differently.
    pattern = central["Parameters"]["MetricNamespace"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, namespace)) is allowed
    assert re.fullmatch(pattern, central["Parameters"]["MetricNamespace"]["Default"])


def test_state_outlives_the_stack_and_messages_outlive_their_queue_on_the_dead_letter_queue(central):
    table = central["Resources"]["TrackingTable"]
    assert (table.get("DeletionPolicy"), table.get("UpdateReplacePolicy")) == ("Retain", "Retain")
    assert table["Properties"].get("DeletionProtectionEnabled") is True, "DeleteTable would take it"
    queues = resources(central, "AWS::SQS::Queue")
    for name, queue in queues.items():
        redrive = queue["Properties"].get("RedrivePolicy")
        if redrive:
            dlq = queues[referenced(redrive["deadLetterTargetArn"])]["Properties"]
            # SQS's default retention is 4 days (345,600 s).
            kept = queue["Properties"].get("MessageRetentionPeriod", 345600)
            assert kept < dlq.get("MessageRetentionPeriod", 345600), name


def test_asynchronous_invocations_give_up_when_they_are_stale_and_logs_are_json(central):
    for name in ("SweepFunction", "BackfillPlanFunction"):
        config = central["Resources"][name]["Properties"]["EventInvokeConfig"]
        assert 60 <= config["MaximumEventAgeInSeconds"] <= 21600, name
    assert central["Globals"]["Function"]["LoggingConfig"]["LogFormat"] == "JSON"


def policy_statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(resource, statement) of every identity policy of the stack's roles and managed policies;
    a conditional statement (`!If [c, s, NoValue]`) as its statement."""
    out = []
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            documents.append(props["PolicyDocument"])
        for document in documents:
            for statement in document["Statement"]:
                if "Fn::If" in statement:
                    statement = statement["Fn::If"][1]
                out.append((name, statement))
    return out


def test_roles_in_other_accounts_are_assumed_only_in_the_accounts_the_stack_serves(central):
    assuming = [(name, s) for name, s in policy_statements(central) if s["Action"] == "sts:AssumeRole"
                and s["Effect"] == "Allow"]
    cross_account = [(name, s) for name, s in assuming if "iam::*:role/" in str(s["Resource"])]
    assert len(cross_account) >= 3, "reader role (tracking), backfill role (plan and copy)"
    for name, statement in cross_account:
        condition = statement.get("Condition", {}).get("StringEquals", {})
        if statement["Sid"].endswith("InOrganization"):
            assert condition == {"aws:ResourceOrgID": {"Ref": "OrganizationId"}}, name
            continue
        accounts = condition.get("aws:ResourceAccount")
        assert accounts is not None, f"{name} {statement['Sid']}: any account's role of that name"
        listed = str(accounts)
        assert "DestinationAccountIds" in listed and "AWS::AccountId" in listed, name


def test_the_copier_never_writes_into_the_source_registry(central):
    denied = [s for name, s in policy_statements(central) if name == "BackfillCopyRole" and s["Effect"] == "Deny"]
    writes = {"ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload"}
    granted = {a for name, s in policy_statements(central) if name == "BackfillCopyRole" and s["Effect"] == "Allow"
               for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]) if a in writes}
    assert granted == writes
    [deny] = denied
    assert set(deny["Action"]) == writes
    assert deny["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/*"}


def _created_by_tag() -> tuple[str, str]:
    """The tag the backfill's repository creator sets, as its Rust source names it."""
    source = (ROOT / "functions/aws/src/ecr_repositories.rs").read_text()
    key = re.search(r'CREATED_BY_TAG_KEY: &str = "([^"]+)"', source)
    value = re.search(r'CREATED_BY_TAG_VALUE: &str = "([^"]+)"', source)
    assert key and value
    return key.group(1), value.group(1)


@pytest.mark.parametrize("path", ["template.yaml", "infra/destination-account.yaml"])
def test_the_backfill_writes_repository_policies_only_on_repositories_it_created(path):
    key, value = _created_by_tag()
    granting = {}
    for name, statement in policy_statements(load(path)):
        if statement["Effect"] != "Allow":
            continue
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        for action in actions:
            if action in {"ecr:CreateRepository", "ecr:PutLifecyclePolicy", "ecr:SetRepositoryPolicy"}:
                condition = {op: {k: v for k, v in keys.items() if k != "aws:RequestedRegion"}
                             for op, keys in statement.get("Condition", {}).items()}
                granting.setdefault(action, []).append(condition)
        assert "ecr:TagResource" not in actions and "ecr:*" not in actions, name
    assert granting == {
        "ecr:CreateRepository": [{"StringEquals": {f"aws:RequestTag/{key}": value}}],
        "ecr:PutLifecyclePolicy": [{"StringEquals": {f"ecr:ResourceTag/{key}": value}}],
        "ecr:SetRepositoryPolicy": [{"StringEquals": {f"ecr:ResourceTag/{key}": value}}],
    }


def test_the_forwarder_keeps_what_it_cannot_deliver_and_forwards_only_the_watched_sources():
    forwarder = load("infra/destination-region.yaml")
    [rule] = resources(forwarder, "AWS::Events::Rule").values()
    [target] = rule["Properties"]["Targets"]
    assert referenced(target["DeadLetterConfig"]["Arn"]) == "UndeliveredEvents"
    [policy] = resources(forwarder, "AWS::SQS::QueuePolicy").values()
    [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert referenced(statement["Condition"]["ArnEquals"]["aws:SourceArn"]) == "ForwardReplicationActions"
    [alarm] = resources(forwarder, "AWS::CloudWatch::Alarm").values()
    assert alarm_metrics(alarm) == [("AWS/SQS", "ApproximateNumberOfMessagesVisible", "UndeliveredEvents")]
    assert "Runbook:" in alarm["Properties"]["AlarmDescription"]
    # The prefix the central alert topic admits.
    assert alarm["Properties"]["AlarmName"] == {"Fn::Sub": "replwatch-forwarder-${AWS::StackName}"}
    detail = rule["Properties"]["EventPattern"]["detail"]
    assert detail["source-account"] == {"Ref": "SourceAccountIds"}
    assert "Default" not in forwarder["Parameters"]["SourceAccountIds"], "no forwarder without a source filter"


def test_the_central_rules_take_only_the_watched_registry_s_events(central):
    rules = resources(central, "AWS::Events::Rule")
    here = {"account": [{"Ref": "AWS::AccountId"}], "region": [{"Ref": "AWS::Region"}]}
    for name in ("ImageActionRule", "ReplicationConfigurationRule"):
        pattern = rules[name]["Properties"]["EventPattern"]
        assert {k: pattern.get(k) for k in here} == here, name
    # Forwarded from the destinations' Regions and accounts: the source is in the detail.
    detail = rules["ReplicationActionRule"]["Properties"]["EventPattern"]["detail"]
    assert detail == {"source-account": [{"Ref": "AWS::AccountId"}], "source-region": [{"Ref": "AWS::Region"}]}


def test_the_alert_topic_takes_only_encrypted_requests_from_this_account_and_the_served_accounts_alarms(central):
    [policy] = resources(central, "AWS::SNS::TopicPolicy").values()
    assert [referenced(t) for t in policy["Properties"]["Topics"]] == ["AlertTopic"]
    statements = []
    for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
        if "Fn::If" in statement:
            condition, statement, otherwise = statement["Fn::If"]
            assert otherwise == {"Ref": "AWS::NoValue"}
            assert condition == {"CloudWatchAlarmsOfDestinationAccounts": "HasDestinationAccounts",
                                 "CloudWatchAlarmsOfOrganization": "HasOrganization"}[statement["Sid"]]
        statements.append(statement)
    denied = [s for s in statements if s["Effect"] == "Deny"]
    assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} and "sns:Publish" in s["Action"]
               for s in denied)
    alarm_sources = []
    for statement in statements:
        if statement["Effect"] != "Allow":
            continue
        principal = statement["Principal"]
        if "Service" in principal:
            assert principal == {"Service": "cloudwatch.amazonaws.com"}
            assert statement["Action"] == "sns:Publish"
            [(key, value)] = statement["Condition"]["StringEquals"].items()
            alarm_sources.append((key, referenced(value)))
            if referenced(value) != "AWS::AccountId":
                # Another account's alarms: only the forwarders' (their AlarmName's prefix).
                assert statement["Condition"]["ArnLike"] == {"aws:SourceArn": {"Fn::Sub": (
                    "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:*:alarm:replwatch-forwarder-*")}}
        else:
            assert principal == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    # The forwarders' alarms reach it from the accounts the central bus admits, and only those.
    assert sorted(alarm_sources) == [("aws:SourceAccount", "AWS::AccountId"),
                                     ("aws:SourceAccount", "DestinationAccountIds"),
                                     ("aws:SourceOrgID", "OrganizationId")]
    # The topic is encrypted: an alarm publishes only if the key admits it too.
    key_sources = []
    for statement in central["Resources"]["AlertKey"]["Properties"]["KeyPolicy"]["Statement"]:
        if "Fn::If" in statement:
            statement = statement["Fn::If"][1]
        if statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}:
            assert set(statement["Action"]) == {"kms:GenerateDataKey*", "kms:Decrypt"}
            [(key, value)] = statement["Condition"]["StringEquals"].items()
            key_sources.append((key, referenced(value)))
    assert sorted(key_sources) == sorted(alarm_sources)


def test_the_slack_key_is_usable_only_through_secrets_manager_or_ssm(central):
    [key] = [s for name, s in policy_statements(central) if s.get("Sid") == "SlackWebhookKey"]
    assert key["Action"] == "kms:Decrypt" and key["Resource"] == {"Ref": "SlackWebhookKeyArn"}
    services = key["Condition"]["StringEquals"]["kms:ViaService"]
    assert [s["Fn::Sub"].split(".")[0] for s in services] == ["secretsmanager", "ssm"]


def test_the_central_bus_admits_only_replication_events_from_the_served_accounts(central):
    policies = resources(central, "AWS::Events::EventBusPolicy")
    assert set(policies) == {"CentralBusAccountsPolicy", "CentralBusOrganizationPolicy"}
    for name, policy in policies.items():
        statement = policy["Properties"]["Statement"]
        assert statement["Action"] == "events:PutEvents"
        condition = statement["Condition"]["StringEquals"]
        assert condition["events:source"] == "aws.ecr", name
        assert condition["events:detail-type"] == "ECR Replication Action", name
        if statement["Principal"] == "*":
            assert condition["aws:PrincipalOrgID"] == {"Ref": "OrganizationId"}, name
        else:
            assert statement["Principal"] == {"AWS": {"Ref": "DestinationAccountIds"}}, name


# The backfill's writer role in each stack: template.yaml's for this account,
# infra/destination-account.yaml's for the others.
_BACKFILL_WRITERS = [("template.yaml", "BackfillPlanRole"), ("infra/destination-account.yaml", "BackfillRole")]
_THROUGH_ECR = {"kms:ViaService": "ecr.*.amazonaws.com"}


def _raw_statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


@pytest.mark.parametrize("path,role", _BACKFILL_WRITERS)
def test_repository_keys_are_used_only_through_ecr_and_only_the_named_ones(path, role):
    template = load(path)
    parameter = template["Parameters"]["RepositoryKmsKeyArns"]
    assert (parameter["Type"], parameter["Default"]) == ("CommaDelimitedList", ""), "no key unless named"
    assert template["Conditions"]["HasRepositoryKmsKeys"] == {
        "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "RepositoryKmsKeyArns"}]}, ""]}]}
    by_action = {}
    for statement in _raw_statements(template["Resources"][role]):
        if "Fn::If" in statement:
            condition, granted, otherwise = statement["Fn::If"]
        else:
            condition, granted, otherwise = None, statement, None
        actions = [granted["Action"]] if isinstance(granted["Action"], str) else granted["Action"]
        kms = [a for a in actions if a.startswith("kms:")]
        if not kms:
            continue
        assert (condition, otherwise) == ("HasRepositoryKmsKeys", {"Ref": "AWS::NoValue"}), granted["Sid"]
        assert kms == actions, f"{granted['Sid']}: one key statement, key actions only"
        assert granted["Effect"] == "Allow" and granted["Resource"] == {"Ref": "RepositoryKmsKeyArns"}
        for action in kms:
            by_action[action] = granted["Condition"]
    # What ECR's CreateRepository needs of the caller for a customer managed key (Amazon ECR
    # User Guide, "Encryption at rest"), each only in requests ECR makes for it.
    assert by_action == {
        "kms:CreateGrant": {"StringLike": _THROUGH_ECR, "Bool": {"kms:GrantIsForAWSResource": "true"}},
        "kms:DescribeKey": {"StringLike": _THROUGH_ECR},
        # KMS does not set kms:ViaService on RetireGrant: required wherever it is set.
        "kms:RetireGrant": {"StringLikeIfExists": _THROUGH_ECR},
    }


@pytest.mark.parametrize("keys,allowed", [
    ("", True), ("*", True), ("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", True),
    ("arn:aws:kms:*:111122223333:key/*", True), ("arn:aws-cn:kms:cn-north-1:111122223333:key/k1", True),
    ("arn:aws:kms:eu-west-1:111122223333:alias/ecr", False), ("arn:aws:s3:::bucket", False), ("kms:*", False),
    ("1234abcd-12ab-34cd-56ef-1234567890ab", False),
])
def test_repository_keys_are_key_arns_or_any(keys, allowed):
    # CloudFormation matches a CommaDelimitedList's AllowedPattern against each item.
    patterns = {load(path)["Parameters"]["RepositoryKmsKeyArns"]["AllowedPattern"] for path, _ in _BACKFILL_WRITERS}
    [pattern] = patterns
    assert bool(re.fullmatch(pattern, keys)) is allowed


def test_the_backfill_has_its_own_external_id_required_and_hidden_in_both_stacks(central):
    account = load("infra/destination-account.yaml")
    backfill = central["Parameters"]["BackfillExternalId"]
    # Required in the central stack (no default), never shown by DescribeStacks, in both.
    assert "Default" not in backfill
    for template in (central, account):
        for name in ("BackfillExternalId", "ReaderExternalId" if template is central else "ExternalId"):
            assert template["Parameters"][name]["NoEcho"] is True, name
    # Never the reader's: a rule refuses the deploy, in both stacks.
    [central_rule] = central["Rules"]["BackfillHasItsOwnExternalId"]["Assertions"][:1]
    assert central_rule["Assert"] == {"Fn::Not": [{"Fn::Equals": [
        {"Ref": "BackfillExternalId"}, {"Ref": "ReaderExternalId"}]}]}
    account_rule = account["Rules"]["BackfillHasItsOwnExternalId"]
    assert account_rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "BackfillWriter"}, "true"]}
    asserted = [a["Assert"] for a in account_rule["Assertions"]]
    assert {"Fn::Not": [{"Fn::Equals": [{"Ref": "BackfillExternalId"}, ""]}]} in asserted
    assert {"Fn::Not": [{"Fn::Equals": [{"Ref": "BackfillExternalId"}, {"Ref": "ExternalId"}]}]} in asserted

    # The functions that assume the backfill role get that id, and only they.
    given = {name: f["Properties"]["Environment"]["Variables"]["BACKFILL_EXTERNAL_ID"]
             for name, f in resources(central, "AWS::Serverless::Function").items()
             if "BACKFILL_EXTERNAL_ID" in f["Properties"].get("Environment", {}).get("Variables", {})}
    assert given == {"BackfillPlanFunction": {"Ref": "BackfillExternalId"},
                     "BackfillCopyFunction": {"Ref": "BackfillExternalId"}}
    assert "BACKFILL_EXTERNAL_ID" not in central["Globals"]["Function"]["Environment"]["Variables"]

    def required(role: str) -> Any:
        trust = account["Resources"][role]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
        return trust["Condition"]["StringEquals"]["sts:ExternalId"]

    # The destination's backfill role requires that id; its reader role, the reader's alone
    # (each with its previous one while it is rotated).
    def rotating(current: str, previous: str, condition: str) -> dict[str, Any]:
        return {"Fn::If": [condition, [{"Ref": current}, {"Ref": previous}], {"Ref": current}]}

    assert required("BackfillRole") == rotating(
        "BackfillExternalId", "PreviousBackfillExternalId", "RotatesBackfillExternalId")
    assert required("ReaderRole") == rotating("ExternalId", "PreviousExternalId", "RotatesExternalId")
    for name in ("PreviousExternalId", "PreviousBackfillExternalId"):
        assert account["Parameters"][name]["NoEcho"] is True
        assert account["Parameters"][name]["Default"] == ""


def _central_role_arn(central: dict[str, Any], role: str) -> str:
    """The ARN of the central stack's role `role`, as infra/destination-account.yaml writes it
    (its CentralAccountId and CentralStackName in place of the central stack's own)."""
    properties = central["Resources"][role]["Properties"]
    name = properties["RoleName"]["Fn::Sub"].replace("${AWS::StackName}", "${CentralStackName}")
    return f"arn:${{AWS::Partition}}:iam::${{CentralAccountId}}:role{properties['Path']}{name}"


@pytest.mark.parametrize("role, callers", [
    ("ReaderRole", ["TrackPushFunction", "TrackReplicationFunction", "SweepFunction"]),
    ("BackfillRole", ["BackfillPlanFunction", "BackfillCopyFunction"]),
])
def test_other_accounts_roles_trust_the_exact_roles_of_the_functions_that_assume_them(central, role, callers):
    account = load("infra/destination-account.yaml")
    [functions, *others] = account["Resources"][role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert functions["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${CentralAccountId}:root"}}
    assert set(functions["Condition"]) == {"StringEquals", "ArnEquals"}, "no pattern: ArnLike would admit a look-alike"
    trusted = [arn["Fn::Sub"] for arn in functions["Condition"]["ArnEquals"]["aws:PrincipalArn"]]
    expected = [_central_role_arn(central, central["Resources"][f]["Properties"]["Role"]["Fn::GetAtt"][0])
                for f in callers]
    assert trusted == expected
    # Under a path of their own, named after the stack: two stacks never share a role.
    for f in callers:
        properties = central["Resources"][central["Resources"][f]["Properties"]["Role"]["Fn::GetAtt"][0]]["Properties"]
        assert properties["Path"] == "/replwatch/"
        assert properties["RoleName"]["Fn::Sub"].startswith("${AWS::StackName}-")
    # The reader's only other statement is the operators' (read-only, optional); the backfill's none.
    if role == "ReaderRole":
        [operators] = others
        assert operators["Fn::If"][0] == "HasOperatorRoles"
        assert operators["Fn::If"][1]["Condition"]["ArnEquals"] == {"aws:PrincipalArn": {"Ref": "OperatorRoleArns"}}
    else:
        assert others == []


def test_the_backfill_role_works_only_in_the_regions_it_is_given(central):
    account = load("infra/destination-account.yaml")
    statements = account["Resources"]["BackfillRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    for statement in statements:
        if "Fn::If" in statement:
            continue  # the KMS grants: only through ECR (kms:ViaService)
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        if all(a.startswith("ecr:") for a in actions):
            assert statement["Condition"]["StringEquals"]["aws:RequestedRegion"] == {"Ref": "BackfillRegions"}, \
                statement["Sid"]
    writes = [s for s in statements if "Fn::If" not in s and {"ecr:PutImage", "ecr:CreateRepository"} & set(
        [s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    for statement in writes:
        assert statement["Resource"]["Fn::If"][:2] == ["HasBackfillRepositoryArns", {"Ref": "BackfillRepositoryArns"}]


# ---------------------------------------------------------------- who may feed the pipeline

def _queue_policy(central: dict[str, Any], queue: str) -> list[dict[str, Any]]:
    [policy] = [p for p in resources(central, "AWS::SQS::QueuePolicy").values()
                if p["Properties"]["Queues"] == [{"Ref": queue}]]
    return policy["Properties"]["PolicyDocument"]["Statement"]


@pytest.mark.parametrize("queue, senders", [
    ("PushQueue", {"aws:SourceArn": [{"Fn::GetAtt": ["ImageActionRule", "Arn"]},
                                     {"Fn::GetAtt": ["ReplicationConfigurationRule", "Arn"]}]}),
    ("ReplicationQueue", {"aws:SourceArn": {"Fn::GetAtt": ["ReplicationActionRule", "Arn"]}}),
    ("BackfillJobsQueue", {"aws:PrincipalArn": {"Fn::If": [
        "HasQueueOperators",
        {"Fn::Split": [",", {"Fn::Join": [",", [{"Fn::GetAtt": ["BackfillPlanRole", "Arn"]},
                                                 {"Fn::GetAtt": ["BackfillCopyRole", "Arn"]},
                                                 {"Fn::Join": [",", {"Ref": "QueueOperatorRoleArns"}]}]]}]},
        [{"Fn::GetAtt": ["BackfillPlanRole", "Arn"]}, {"Fn::GetAtt": ["BackfillCopyRole", "Arn"]}]]}}),
])
def test_only_the_stack_s_rules_and_functions_send_to_the_queues_that_feed_it(central, queue, senders):
    # An explicit deny for everyone else: same-account principals included, whatever their IAM
    # policies allow (an allow alone would not stop them).
    [deny] = [s for s in _queue_policy(central, queue) if s["Effect"] == "Deny"]
    assert deny["Principal"] == "*"
    assert deny["Action"] == "sqs:SendMessage"
    assert deny["Resource"] == {"Fn::GetAtt": [queue, "Arn"]}
    [(operator, exempt)] = deny["Condition"].items()
    assert operator == "ArnNotEquals", "negated, so a request without the key is denied"
    for key, value in senders.items():
        assert exempt[key] == value
    if queue != "BackfillJobsQueue":
        assert exempt["aws:PrincipalArn"] == {"Fn::If": [
            "HasQueueOperators", {"Ref": "QueueOperatorRoleArns"}, {"Ref": "AWS::NoValue"}]}


@pytest.mark.parametrize("value, accepted", [
    ("eu-west-1/222222222222", True), ("us-gov-west-1", True), ("", True),
    ("222222222222", False), ("eu-west-1/*", False), ("arn:aws:ecr:eu-west-1:222222222222:x", False),
])
def test_manual_backfills_copy_only_to_the_rules_destinations_and_the_allowed_ones(central, value, accepted):
    parameter = central["Parameters"]["BackfillAllowedDestinations"]
    assert parameter["Default"] == ""
    assert bool(re.fullmatch(parameter["AllowedPattern"], value)) is accepted
    variables = central["Resources"]["BackfillPlanFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["BACKFILL_ALLOWED_DESTINATIONS"] == {"Fn::Join": [",", {"Ref": "BackfillAllowedDestinations"}]}


def _key_prefixes(path: str) -> set[str]:
    """The partition key prefixes a module of functions/aws writes (`"pk"` items)."""
    source = (ROOT / "functions/aws/src" / path).read_text()
    return set(re.findall(r'format!\(\s*"([A-Z]+#)', source))


@pytest.mark.parametrize("role, sid, modules", [
    ("BackfillPlanRole", "RunRecords", ["backfill_runs.rs", "dynamodb_table.rs"]),
    ("BackfillCopyRole", "RunRecordsAndBlobClaims", ["backfill_runs.rs", "blob_claims.rs"]),
])
def test_the_backfill_roles_reach_only_their_own_items_of_the_table(central, role, sid, modules):
    [statement] = [s for name, s in policy_statements(central) if name == role and s.get("Sid") == sid]
    prefixes = statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
    written = set().union(*(_key_prefixes(m) for m in modules))
    # Every prefix granted is one the code writes; the tracking records' and pending alerts'
    # prefixes (written by dynamodb.rs and alert_outbox.rs) are never among them.
    granted = {p.removesuffix("*") for p in prefixes}
    assert granted <= written, (granted, written)
    tracking = _key_prefixes("dynamodb.rs") | _key_prefixes("alert_outbox.rs")
    assert not granted & (tracking - {"CONFIG#"}), granted & tracking
    if role == "BackfillCopyRole":
        assert granted == {"RUN#", "CLAIM#"}
    else:
        assert granted == {"RUN#", "CONFIG#"}


def test_the_alert_topic_takes_subscriptions_only_from_known_endpoints(central):
    [policy] = resources(central, "AWS::SNS::TopicPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    [deny] = [s for s in statements if isinstance(s, dict) and s.get("Sid") == "KnownSubscribersOnly"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "sns:Subscribe")
    [(operator, keys)] = deny["Condition"].items()
    assert operator == "StringNotLike" and list(keys) == ["sns:Endpoint"]
    [separator, joined] = keys["sns:Endpoint"]["Fn::Split"]
    [_, endpoints] = joined["Fn::Join"]
    assert separator == "|"
    # This account's queues and functions, the chat applications' endpoint, the stack's e-mail
    # and the parameter's endpoints: nothing else.
    assert endpoints == [
        {"Fn::Sub": "arn:${AWS::Partition}:sqs:*:${AWS::AccountId}:*"},
        {"Fn::Sub": "arn:${AWS::Partition}:lambda:*:${AWS::AccountId}:*"},
        "https://global.sns-api.chatbot.amazonaws.com",
        {"Fn::If": ["HasAlertEmail", {"Ref": "AlertEmail"}, "https://global.sns-api.chatbot.amazonaws.com"]},
        {"Fn::Join": ["|", {"Ref": "AlertSubscriberEndpoints"}]},
    ]
    assert re.fullmatch(central["Parameters"]["AlertSubscriberEndpoints"]["AllowedPattern"], "a|b") is None


# ---------------------------------------------------------------- bounded load (README, "Bounded load")

def parameter_default(template: dict[str, Any], name: str) -> int:
    return int(template["Parameters"][name]["Default"])


def resolve(template: dict[str, Any], value: Any, parameters: dict[str, Any]) -> int:
    """A number as CloudFormation would resolve it with `parameters` (defaults otherwise)."""
    if isinstance(value, (int, str)):
        return int(value)
    if "Ref" in value:
        name = value["Ref"]
        return int(parameters.get(name, template["Parameters"][name]["Default"]))
    if "Fn::FindInMap" in value:
        mapping, key, attribute = value["Fn::FindInMap"]
        key = str(resolve(template, key, parameters))
        return int(template["Mappings"][mapping][key][attribute])
    raise AssertionError(f"not a number CloudFormation resolves here: {value}")


def sqs_event_sources(template: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(resource, function, properties) of every SQS event source: the functions' SQS events
    and the stack's own event source mappings."""
    out = []
    for name, function in resources(template, "AWS::Serverless::Function").items():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] == "SQS":
                out.append((name, name, event["Properties"]))
    for name, mapping in resources(template, "AWS::Lambda::EventSourceMapping").items():
        props = mapping["Properties"]
        assert referenced(props["EventSourceArn"]) in resources(template, "AWS::SQS::Queue"), name
        out.append((name, referenced(props["FunctionName"]), props))
    return out


def test_every_sqs_event_source_has_a_maximum_concurrency_lambda_accepts(central):
    sources = sqs_event_sources(central)
    assert {function for _, function, _ in sources} >= {
        "TrackPushFunction", "TrackReplicationFunction", "SweepFunction", "BackfillCopyFunction"}
    for name, _, props in sources:
        maximum = props.get("ScalingConfig", {}).get("MaximumConcurrency")
        assert maximum is not None, f"{name}: a burst on its queue could take the account's concurrency"
        # 2 to 1,000 (Lambda API reference, ScalingConfig): the parameter cannot go outside it.
        if isinstance(maximum, dict) and "Ref" in maximum:
            parameter = central["Parameters"][maximum["Ref"]]
            if "AllowedValues" in parameter:
                allowed = [int(v) for v in parameter["AllowedValues"]]
            else:
                allowed = [parameter["MinValue"], parameter["MaxValue"]]
            condition = central["Resources"][name].get("Condition")
            if condition == "SplitsSweep":  # only deployed with more than one part
                allowed = [v for v in allowed if v != 1]
            assert 2 <= min(allowed) and max(allowed) <= 1000, name
        else:
            assert 2 <= resolve(central, maximum, {}) <= 1000, name


def sweep_invocations_at_once(template: dict[str, Any], parts: int) -> int:
    """The most sweeps that run at once with SweepParts = `parts`: each SQS event source's
    maximum concurrency (the parts queue exists only when the sweep is split) and one for each
    schedule (its own, and every rule that invokes it: the lost-push check)."""
    at_once = 0
    for name, function, props in sqs_event_sources(template):
        if function != "SweepFunction":
            continue
        condition = template["Resources"].get(name, {}).get("Condition")
        if condition == "SplitsSweep" and parts == 1:
            continue
        at_once += resolve(template, props["ScalingConfig"]["MaximumConcurrency"], {"SweepParts": parts})
    sweep = template["Resources"]["SweepFunction"]["Properties"]
    at_once += sum(1 for e in sweep.get("Events", {}).values() if e["Type"] in ("Schedule", "ScheduleV2"))
    for rule in resources(template, "AWS::Events::Rule").values():
        at_once += sum(1 for t in rule["Properties"]["Targets"] if referenced(t["Arn"]) == "SweepFunction")
    return at_once


def test_the_sweep_has_concurrency_of_its_own_for_its_parts_its_tick_and_the_lost_push_check(central):
    sweep = central["Resources"]["SweepFunction"]["Properties"]
    reserved = sweep.get("ReservedConcurrentExecutions")
    assert reserved is not None, "a burst of the tracking functions could starve the sweep"
    condition, value, otherwise = reserved["Fn::If"]
    assert central["Conditions"][condition] == {"Fn::Equals": [{"Ref": "ReserveSweepConcurrency"}, "true"]}
    assert central["Parameters"]["ReserveSweepConcurrency"]["Default"] == "true"
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert value == {"Fn::FindInMap": ["SweepConcurrency", {"Ref": "SweepParts"}, "Reserved"]}
    # Every SweepParts the stack accepts has its row, and each row covers what can run at once:
    # below it, a part delivered while the others run would be throttled, and after
    # maxReceiveCount moved to the dead-letter queue.
    parts_allowed = [int(p) for p in central["Parameters"]["SweepParts"]["AllowedValues"]]
    assert sorted(int(k) for k in central["Mappings"]["SweepConcurrency"]) == sorted(parts_allowed)
    for parts in parts_allowed:
        needed = sweep_invocations_at_once(central, parts)
        assert needed >= (parts if parts > 1 else 0) + 1, "the parts' mapping and the tick at least"
        assert resolve(central, value, {"SweepParts": parts}) >= needed, f"SweepParts {parts}"


# The functions that read ECR through the tracking registry or the copier, each with a share of
# the budget. backfill-plan's paged inventory reads (one invocation per trigger) and the
# lost-push check's listing are outside it (README, "Bounded load").
BUDGETED = {"TrackPushFunction", "TrackReplicationFunction", "SweepFunction", "BackfillCopyFunction"}


def budget_shares(template: dict[str, Any]) -> dict[str, tuple[int, Any]]:
    """function -> (its percent of the budget, its most containers at once, unresolved)."""
    shares = {}
    for name, function in resources(template, "AWS::Serverless::Function").items():
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        assert "ECR_CALLS_PER_SECOND" not in variables, f"{name}: a fixed cap escapes the budget"
        if "ECR_CALL_BUDGET_PER_SECOND" in variables:
            assert variables["ECR_CALL_BUDGET_PER_SECOND"] == {"Ref": "EcrCallBudgetPerSecond"}, name
            shares[name] = (int(variables["ECR_CALL_BUDGET_SHARE"]), variables["ECR_CALL_CONTAINERS"])
    return shares


def per_container_cap(budget: int, share: int, containers: int) -> int:
    """settings.rs's `ecr_call_cap`: the share divided among the containers, rounded down."""
    return budget * share // (100 * containers)


def test_the_ecr_budget_holds_for_the_account_and_region_however_many_containers_run(central):
    globals_ = central["Globals"]["Function"]["Environment"]["Variables"]
    assert not {"ECR_CALLS_PER_SECOND", "ECR_CALL_BUDGET_PER_SECOND"} & set(globals_)
    shares = budget_shares(central)
    assert set(shares) == BUDGETED
    assert sum(share for share, _ in shares.values()) <= 100
    # Each function divides its share by the most containers it can run at once: its SQS event
    # source's maximum concurrency, or the sweep's reserved concurrency.
    for name, (_, containers) in shares.items():
        if name == "SweepFunction":
            reserved = central["Resources"][name]["Properties"].get("ReservedConcurrentExecutions")
            assert reserved and containers == reserved["Fn::If"][1], name
            continue
        [(_, _, props)] = [s for s in sqs_event_sources(central) if s[1] == name]
        assert containers == props.get("ScalingConfig", {}).get("MaximumConcurrency"), name
    # The defaults give every container at least one call a second, and for any budget,
    # SweepParts and concurrencies, containers × cap summed over the functions stays within it.
    budget = parameter_default(central, "EcrCallBudgetPerSecond")
    for name, (share, containers) in shares.items():
        assert per_container_cap(budget, share, resolve(central, containers, {})) >= 1, name
    grid = [
        {"EcrCallBudgetPerSecond": b, "SweepParts": p, "TrackPushConcurrency": c,
         "TrackReplicationConcurrency": c * 7 % 1000 + 2, "BackfillCopyConcurrency": 1000 - c}
        for b in (40, 200, 999, 2000, 100000)
        for p in central["Parameters"]["SweepParts"]["AllowedValues"]
        for c in (2, 5, 64, 998)
    ]
    for parameters in grid:
        budget = parameters["EcrCallBudgetPerSecond"]
        used = 0
        for name, (share, containers) in shares.items():
            at_once = resolve(central, containers, parameters)
            used += at_once * per_container_cap(budget, share, at_once)
        assert used <= budget, parameters
