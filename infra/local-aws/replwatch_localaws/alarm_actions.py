"""CloudWatch alarm actions: an alarm's state change notifies its SNS topics, as the topics'
policies allow.

moto 5.2.5 stores an alarm's ``AlarmActions``, ``OKActions`` and
``InsufficientDataActions`` and never runs them: ``SetAlarmState`` changes the
state and nothing else (and moto evaluates no metric, so ``SetAlarmState`` is
the only way an alarm changes state here). AWS (Amazon CloudWatch User Guide,
"Alarm actions" and "Using Amazon CloudWatch alarms"; CloudWatch API
Reference, "SetAlarmState": "When the updated state differs from the previous
value, the action configured for the appropriate state is invoked"):

- actions run on a state *transition* only (a ``SetAlarmState`` to the state
  the alarm is already in runs nothing), and only while the alarm's actions
  are enabled (``ActionsEnabled``, ``DisableAlarmActions``);
- the actions of the new state run: ``AlarmActions`` for ``ALARM``,
  ``OKActions`` for ``OK``, ``InsufficientDataActions`` for
  ``INSUFFICIENT_DATA``; an SNS action publishes the alarm's notification to
  the topic, which must be in the alarm's Region (a topic ARN of another
  Region is skipped here);
- CloudWatch publishes as the service principal ``cloudwatch.amazonaws.com``
  with ``aws:SourceArn`` = the alarm's ARN
  (``arn:aws:cloudwatch:<region>:<account>:alarm:<name>``) and
  ``aws:SourceAccount`` = the alarm's account, and the topic's policy must
  allow it (Amazon SNS Developer Guide, "Example cases for Amazon SNS access
  control": "Allow a CloudWatch alarm to publish to a topic in another
  account"; ``sns_policy``): a refused notification is not delivered. AWS
  records it in the alarm's history as a failed action; moto 5.2.5 has no
  ``DescribeAlarmHistory``, so here it is only logged and dropped.

The notification is the JSON CloudWatch sends (our rendering of its fields:
``AlarmName``, ``AlarmDescription``, ``AWSAccountId``, ``NewStateValue``,
``NewStateReason``, ``StateChangeTime``, ``Region``, ``AlarmArn``,
``OldStateValue``, the three action lists and the ``Trigger``), subject
``ALARM: "<name>" in <Region>`` (cut at SNS's 100 characters). KMS is not
consulted (see ``sns_policy``). The notification is not metered.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .policies import Caller, request_context

log = logging.getLogger("replwatch_localaws.alarm_actions")

CLOUDWATCH = "cloudwatch.amazonaws.com"

# The Region names CloudWatch writes into notifications (those replwatch's tests use; others
# keep their code).
_REGION_NAMES = {
    "us-east-1": "US East (N. Virginia)", "us-east-2": "US East (Ohio)",
    "us-west-1": "US West (N. California)", "us-west-2": "US West (Oregon)",
    "eu-west-1": "EU (Ireland)", "eu-west-2": "EU (London)", "eu-central-1": "EU (Frankfurt)",
    "eu-south-1": "EU (Milan)", "ap-southeast-1": "Asia Pacific (Singapore)",
    "ap-southeast-2": "Asia Pacific (Sydney)", "ap-northeast-1": "Asia Pacific (Tokyo)",
}


def _actions_for(alarm: Any, state: str) -> list[str]:
    return list({"ALARM": alarm.alarm_actions, "OK": alarm.ok_actions,
                 "INSUFFICIENT_DATA": alarm.insufficient_data_actions}.get(state) or [])


def _notification(alarm: Any, account: str, old_state: str) -> tuple[str, str]:
    region = alarm.region_name
    region_name = _REGION_NAMES.get(region, region)
    stamp = alarm.state_updated_timestamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"
    message = {
        "AlarmName": alarm.name,
        "AlarmDescription": alarm.description,
        "AWSAccountId": account,
        "AlarmConfigurationUpdatedTimestamp": alarm.configuration_updated_timestamp.strftime(
            "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000",
        "NewStateValue": alarm.state_value,
        "NewStateReason": alarm.state_reason,
        "StateChangeTime": stamp,
        "Region": region_name,
        "AlarmArn": alarm.alarm_arn,
        "OldStateValue": old_state,
        "OKActions": list(alarm.ok_actions or []),
        "AlarmActions": list(alarm.alarm_actions or []),
        "InsufficientDataActions": list(alarm.insufficient_data_actions or []),
        "Trigger": {
            "MetricName": alarm.metric_name,
            "Namespace": alarm.namespace,
            "StatisticType": "Statistic" if alarm.statistic else "ExtendedStatistic",
            "Statistic": (alarm.statistic or "").upper() or None,
            "Unit": alarm.unit,
            "Dimensions": [{"value": d.value, "name": d.name} for d in alarm.dimensions],
            "Period": alarm.period,
            "EvaluationPeriods": alarm.evaluation_periods,
            "ComparisonOperator": alarm.comparison_operator,
            "Threshold": alarm.threshold,
            "TreatMissingData": alarm.treat_missing_data or "",
            "EvaluateLowSampleCountPercentile": alarm.evaluate_low_sample_count_percentile or "",
        },
    }
    subject = f'{alarm.state_value}: "{alarm.name}" in {region_name}'
    return json.dumps(message), subject[:100]


def notify(alarm: Any, account: str, old_state: str) -> list[tuple[str, bool]]:
    """Runs the SNS actions of ``alarm``'s new state; returns (topic ARN, delivered)."""
    from moto.sns.models import sns_backends

    from . import sns_policy

    if not alarm.actions_enabled or alarm.state_value == old_state:
        return []
    caller = Caller(service=CLOUDWATCH)
    outcome = []
    for action in _actions_for(alarm, alarm.state_value):
        parts = str(action).split(":")
        if len(parts) != 6 or parts[2] != "sns" or parts[3] != alarm.region_name:
            continue  # not an SNS action of the alarm's Region
        topic = sns_backends[parts[4]][parts[3]].topics.get(action)
        if topic is None:
            outcome.append((action, False))
            continue
        context = request_context(caller, topic.account_id, source_arn=alarm.alarm_arn,
                                  source_account=account, secure_transport=True)
        if not sns_policy.topic_admits(topic, caller, context):
            log.info("alarm %s: notification to %s refused by the topic policy", alarm.alarm_arn, action)
            outcome.append((action, False))
            continue
        message, subject = _notification(alarm, account, old_state)
        topic.publish(message, subject=subject)
        outcome.append((action, True))
    return outcome


def install() -> None:
    from moto.cloudwatch.models import CloudWatchBackend

    original = CloudWatchBackend.set_alarm_state

    def set_alarm_state(self: Any, alarm_name: str, reason: str, reason_data: str, state_value: str) -> None:
        alarm = self.alarms.get(alarm_name)
        old_state = alarm.state_value if alarm is not None else None
        original(self, alarm_name, reason, reason_data, state_value)
        if alarm is not None and old_state is not None:
            try:
                notify(alarm, self.account_id, old_state)
            except Exception:  # an action never fails the API call
                log.exception("alarm %s: actions failed", alarm_name)

    CloudWatchBackend.set_alarm_state = set_alarm_state  # type: ignore[method-assign]
