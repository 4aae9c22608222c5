"""The policy evaluator (``replwatch_localaws.policies``): every condition operator it models,
fail closed on what it does not, statements, and the request context."""

from __future__ import annotations

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from replwatch_localaws.policies import (  # noqa: E402
    Caller, admits, condition_met, decide, request_context, statement_applies,
)

CONTEXT = {
    "aws:sourcearn": "arn:aws:events:us-west-2:111111111111:rule/replwatch-central/replwatch-replication",
    "aws:sourceaccount": "111111111111",
    "aws:securetransport": "false",
    "s3:max-keys": "10",
    "aws:currenttime": "2026-03-01T12:00:00Z",
    "aws:epochtime": "1772366400",
    "aws:tagkeys": ["team", "cost-center"],
}


def met(condition: dict, effect: str = "Allow", context: dict | None = None) -> bool:
    return condition_met(condition, CONTEXT if context is None else context, effect)


@pytest.mark.parametrize("condition,expected", [
    ({"StringEquals": {"aws:SourceAccount": "111111111111"}}, True),
    ({"StringEquals": {"aws:SourceAccount": ["222222222222", "111111111111"]}}, True),  # OR of values
    ({"StringEquals": {"aws:SourceAccount": "222222222222"}}, False),
    ({"StringNotEquals": {"aws:SourceAccount": "222222222222"}}, True),
    ({"StringNotEquals": {"aws:SourceAccount": ["222222222222", "111111111111"]}}, False),
    ({"StringEqualsIgnoreCase": {"aws:SecureTransport": "FALSE"}}, True),
    ({"StringNotEqualsIgnoreCase": {"aws:SecureTransport": "FALSE"}}, False),
    ({"StringLike": {"aws:SourceArn": "arn:aws:events:*:111111111111:rule/*"}}, True),
    ({"StringLike": {"aws:SourceArn": "arn:aws:events:us-west-?:*"}}, True),
    ({"StringLike": {"aws:SourceArn": "arn:aws:events:eu-*"}}, False),
    ({"StringNotLike": {"aws:SourceArn": "arn:aws:events:eu-*"}}, True),
    ({"StringLike": {"aws:SourceAccount": "[1]*"}}, False),  # only * and ? are wildcards
    ({"ArnEquals": {"aws:SourceArn": CONTEXT["aws:sourcearn"]}}, True),
    ({"ArnEquals": {"aws:SourceArn": "arn:aws:events:*:111111111111:rule/replwatch-central/*"}}, True),
    ({"ArnLike": {"aws:SourceArn": "arn:aws:events:us-west-2:*:rule/*"}}, True),
    # Each ARN part matches on its own: a * does not run across the colons.
    ({"ArnLike": {"aws:SourceArn": "arn:aws:events:*:rule/*"}}, False),
    ({"ArnNotEquals": {"aws:SourceArn": "arn:aws:events:us-west-2:111111111111:rule/other"}}, True),
    ({"ArnNotLike": {"aws:SourceArn": "arn:aws:events:*:*:rule/replwatch-*"}}, False),
    ({"Bool": {"aws:SecureTransport": "false"}}, True),
    ({"Bool": {"aws:SecureTransport": False}}, True),  # a JSON boolean in the policy
    ({"Bool": {"aws:SecureTransport": "true"}}, False),
    ({"NumericEquals": {"s3:max-keys": "10"}}, True),
    ({"NumericEquals": {"s3:max-keys": 10.0}}, True),
    ({"NumericNotEquals": {"s3:max-keys": "10"}}, False),
    ({"NumericLessThan": {"s3:max-keys": "11"}}, True),
    ({"NumericLessThan": {"s3:max-keys": "10"}}, False),
    ({"NumericLessThanEquals": {"s3:max-keys": "10"}}, True),
    ({"NumericGreaterThan": {"s3:max-keys": "9.5"}}, True),
    ({"NumericGreaterThan": {"s3:max-keys": "10"}}, False),
    ({"NumericGreaterThanEquals": {"s3:max-keys": "10"}}, True),
    ({"DateEquals": {"aws:CurrentTime": "2026-03-01T12:00:00+00:00"}}, True),
    ({"DateEquals": {"aws:CurrentTime": "1772366400"}}, True),  # epoch seconds
    ({"DateNotEquals": {"aws:CurrentTime": "2026-03-01"}}, True),
    ({"DateLessThan": {"aws:CurrentTime": "2026-03-01T12:00Z"}}, False),
    ({"DateLessThan": {"aws:CurrentTime": "2026-03-02"}}, True),
    ({"DateLessThanEquals": {"aws:CurrentTime": "2026-03-01T12:00:00Z"}}, True),
    ({"DateGreaterThan": {"aws:EpochTime": "2026-03-01T11:59:59Z"}}, True),
    ({"DateGreaterThanEquals": {"aws:CurrentTime": "2026-03-01T12:00:01Z"}}, False),
    ({"Null": {"aws:PrincipalArn": "true"}}, True),
    ({"Null": {"aws:PrincipalArn": "false"}}, False),
    ({"Null": {"aws:SourceArn": "false"}}, True),
    ({"Null": {"aws:SourceArn": True}}, False),
    # Every operator and key must hold.
    ({"StringEquals": {"aws:SourceAccount": "111111111111", "aws:SecureTransport": "true"}}, False),
    ({"StringEquals": {"aws:SourceAccount": "111111111111"}, "Bool": {"aws:SecureTransport": "false"}}, True),
])
def test_operators(condition, expected):
    assert met(condition) is expected
    assert met(condition, "Deny") is expected  # what the evaluator models does not depend on the effect


@pytest.mark.parametrize("condition,expected", [
    # An absent key does not match: met only by the negated operators and IfExists.
    ({"StringEquals": {"aws:PrincipalOrgID": "o-1"}}, False),
    ({"StringNotEquals": {"aws:PrincipalOrgID": "o-1"}}, True),
    ({"ArnNotEquals": {"aws:PrincipalArn": "arn:aws:iam::1:root"}}, True),
    ({"NumericNotEquals": {"aws:MultiFactorAuthAge": "5"}}, True),
    ({"NumericLessThan": {"aws:MultiFactorAuthAge": "5"}}, False),
    ({"NumericLessThanIfExists": {"aws:MultiFactorAuthAge": "5"}}, True),
    ({"StringEqualsIfExists": {"aws:PrincipalOrgID": "o-1"}}, True),
    ({"StringEqualsIfExists": {"aws:SourceAccount": "2"}}, False),  # present: checked
    ({"DateGreaterThanIfExists": {"aws:TokenIssueTime": "2020-01-01"}}, True),
])
def test_absent_keys(condition, expected):
    assert met(condition) is expected


@pytest.mark.parametrize("condition,expected", [
    ({"ForAnyValue:StringEquals": {"aws:TagKeys": ["team", "owner"]}}, True),
    ({"ForAnyValue:StringEquals": {"aws:TagKeys": ["owner"]}}, False),
    ({"ForAllValues:StringEquals": {"aws:TagKeys": ["team", "cost-center", "owner"]}}, True),
    ({"ForAllValues:StringEquals": {"aws:TagKeys": ["team"]}}, False),
    ({"ForAllValues:StringLike": {"aws:TagKeys": ["t*", "cost-*"]}}, True),
    ({"ForAnyValue:StringNotLike": {"aws:TagKeys": "team"}}, True),  # cost-center is not like team
    ({"ForAllValues:StringNotLike": {"aws:TagKeys": "key1*"}}, True),
    # Absent: ForAllValues holds (vacuously), ForAnyValue does not.
    ({"ForAllValues:StringEquals": {"aws:RequestTag/x": ["a"]}}, True),
    ({"ForAnyValue:StringEquals": {"aws:RequestTag/x": ["a"]}}, False),
    # A single-valued key under a set operator is a set of one.
    ({"ForAnyValue:ArnLike": {"aws:SourceArn": ["arn:aws:events:*:*:rule/replwatch-central/*"]}}, True),
    ({"ForAllValues:StringEquals": {"aws:SourceAccount": ["222222222222"]}}, False),
])
def test_set_operators(condition, expected):
    assert met(condition) is expected


@pytest.mark.parametrize("condition", [
    {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
    {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
    {"BinaryEquals": {"s3:x": "QmluYXJ5"}},
    {"StringEqualsSomehow": {"aws:SourceAccount": "111111111111"}},
    {"ForEveryValue:StringEquals": {"aws:TagKeys": "team"}},
    {"NullIfExists": {"aws:SourceArn": "true"}},
    {"Null": {"aws:SourceArn": "maybe"}},
    {"ForAnyValue:Null": {"aws:TagKeys": "true"}},
    {"NumericEquals": {"aws:SourceAccount": "not-a-number"}},  # the policy value is no number
    {"NumericEquals": {"s3:max-keys": "ten"}},
    {"DateEquals": {"aws:CurrentTime": "yesterday"}},
    {"StringEquals": {"aws:SourceArn": "${aws:PrincipalArn}"}},  # policy variables are not substituted
    {"StringEquals": {"aws:TagKeys": "team"}},  # a multivalued key needs a set operator
    {"StringEquals": {"aws:SourceAccount": {"nested": "map"}}},
    {"StringEquals": []},
    "not a condition block",
])
def test_what_is_not_modelled_fails_closed(condition):
    # An Allow does not apply, a Deny does.
    assert condition_met(condition, CONTEXT, "Allow") is False
    assert condition_met(condition, CONTEXT, "Deny") is True


def test_fail_closed_leaves_the_other_operators_of_a_deny_their_say():
    # A Deny whose known operator is not met does not apply, whatever the unknown one says.
    condition = {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}, "StringEquals": {"aws:SourceAccount": "9"}}
    assert condition_met(condition, CONTEXT, "Deny") is False
    condition["StringEquals"]["aws:SourceAccount"] = "111111111111"
    assert condition_met(condition, CONTEXT, "Deny") is True


def test_request_context_of_an_account_a_role_and_a_service():
    root = request_context(Caller(account="111111111111"), "222222222222")
    assert root["aws:principalarn"] == "arn:aws:iam::111111111111:root"
    assert root["aws:principalaccount"] == "111111111111"
    assert root["aws:principaltype"] == "Account"
    assert root["aws:securetransport"] == "false"  # plain HTTP on 127.0.0.1
    assert root["aws:resourceaccount"] == "222222222222"
    assert "aws:sourcearn" not in root and "aws:principalservicename" not in root
    role = request_context(Caller(account="111111111111", role_arn="arn:aws:iam::111111111111:role/r"), None)
    assert role["aws:principalarn"] == "arn:aws:iam::111111111111:role/r"
    assert role["aws:principaltype"] == "AssumedRole"
    rule = "arn:aws:events:us-west-2:111111111111:rule/x"
    service = request_context(Caller(service="events.amazonaws.com"), "111111111111", source_arn=rule,
                              source_account="111111111111", secure_transport=True)
    assert service["aws:principalservicename"] == "events.amazonaws.com"
    assert service["aws:principalisawsservice"] == "true"
    assert (service["aws:sourcearn"], service["aws:sourceaccount"]) == (rule, "111111111111")
    assert service["aws:securetransport"] == "true"
    assert "aws:principalarn" not in service and "aws:principalaccount" not in service


QUEUE = "arn:aws:sqs:us-west-2:111111111111:q"
RULE = "arn:aws:events:us-west-2:111111111111:rule/replwatch-central/replwatch-replication"


def _decide(policy: dict, caller: Caller, **kwargs) -> str | None:
    context = request_context(caller, "111111111111", **kwargs)
    return decide(json.dumps(policy), "sqs:SendMessage", QUEUE, caller, context)


def test_statements_principals_actions_resources():
    events = Caller(service="events.amazonaws.com")
    allow_rule = {"Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
                  "Action": "sqs:SendMessage", "Resource": QUEUE,
                  "Condition": {"ArnEquals": {"aws:SourceArn": RULE}}}
    policy = {"Statement": [allow_rule]}
    assert _decide(policy, events, source_arn=RULE, source_account="111111111111") == "Allow"
    assert _decide(policy, events, source_arn=RULE.replace("replication", "other")) is None
    assert _decide(policy, Caller(account="111111111111")) is None  # not a service
    # Action names ignore case and take wildcards; the resource must match.
    assert _decide({"Statement": [allow_rule | {"Action": "SQS:*"}]}, events, source_arn=RULE) == "Allow"
    assert _decide({"Statement": [allow_rule | {"Action": "sqs:Receive*"}]}, events, source_arn=RULE) is None
    assert _decide({"Statement": [allow_rule | {"Resource": QUEUE + "-2"}]}, events, source_arn=RULE) is None
    assert _decide({"Statement": [allow_rule | {"Resource": "arn:aws:sqs:*:111111111111:*"}]}, events,
                   source_arn=RULE) == "Allow"
    # A Deny that applies wins; NotPrincipal and NotAction.
    deny = {"Effect": "Deny", "Principal": "*", "Action": "sqs:SendMessage",
            "Condition": {"ArnNotEquals": {"aws:SourceArn": RULE}}}
    both = {"Statement": [allow_rule, deny]}
    assert _decide(both, events, source_arn=RULE) == "Allow"
    assert _decide(both, Caller(account="111111111111")) == "Deny"  # no aws:SourceArn: ArnNotEquals holds
    not_principal = {"Effect": "Deny", "NotPrincipal": {"AWS": "111111111111"}, "Action": "sqs:*"}
    assert _decide({"Statement": [not_principal]}, Caller(account="111111111111")) is None
    assert _decide({"Statement": [not_principal]}, Caller(account="222222222222")) == "Deny"
    not_action = {"Effect": "Allow", "Principal": "*", "NotAction": "sqs:Delete*"}
    assert _decide({"Statement": [not_action]}, Caller(account="222222222222")) == "Allow"
    # Principals: account id, root ARN, role ARN, "*" and {"AWS": "*"}.
    role = Caller(account="222222222222", role_arn="arn:aws:iam::222222222222:role/sender")
    for principal in ("*", {"AWS": "*"}, {"AWS": "222222222222"}, {"AWS": "arn:aws:iam::222222222222:root"},
                      {"AWS": ["arn:aws:iam::9:root", "arn:aws:iam::222222222222:role/sender"]}):
        statement = {"Effect": "Allow", "Principal": principal, "Action": "sqs:SendMessage"}
        assert statement_applies(statement, "sqs:SendMessage", QUEUE, role, request_context(role, None))
    other_role = {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::222222222222:role/x"},
                  "Action": "sqs:SendMessage"}
    assert not statement_applies(other_role, "sqs:SendMessage", QUEUE, role, request_context(role, None))
    # A policy that is not JSON denies.
    assert decide("{not json", "sqs:SendMessage", QUEUE, role, {}) == "Deny"


def test_admits_same_account_without_a_statement_but_never_another_account_or_a_service():
    nothing = json.dumps({"Statement": []})
    context: dict = {}
    assert admits(nothing, "sqs:SendMessage", QUEUE, "111111111111", Caller(account="111111111111"), context)
    assert admits(None, "sqs:SendMessage", QUEUE, "111111111111", Caller(account="111111111111"), context)
    assert not admits(nothing, "sqs:SendMessage", QUEUE, "111111111111", Caller(account="222222222222"), context)
    assert not admits(None, "sqs:SendMessage", QUEUE, "111111111111", Caller(service="events.amazonaws.com"),
                      context)
