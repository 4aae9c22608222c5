"""EventBridge fixes, and ``emit()`` for events that AWS services send.

AWS facts reproduced (Amazon EventBridge User Guide, "Amazon EventBridge
events" / event structure reference):

- Every event carries the envelope ``version, id, detail-type, source,
  account, time, region, resources, detail``. moto 5.2.5 builds events with an
  ``account`` but its default target input template
  (``moto.events.utils.EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE``)
  omits it, so every event delivered to SQS (or CloudWatch Logs) has no
  ``account``. We add it back, in AWS's field order.
- A rule whose state is ``DISABLED`` does not match events. moto delivers them
  anyway; we skip disabled rules.
- A rule whose target is another event bus (same or another account/Region)
  sends the event itself: the receiving bus sees the original ``id``,
  ``account``, ``region``, ``time`` and ``resources`` (this is how replwatch's
  destination accounts forward ``ECR Replication Action`` to the central bus,
  and the central side needs the destination ``account``/``region``). moto
  re-puts only source/detail-type/detail, so the forwarded event claims the
  receiving account and Region and loses ``resources``. We forward the
  original envelope instead (at most a few hops, to stop rule loops).
- A bus takes events from another account only as its resource-based policy
  allows ("Permissions for Amazon EventBridge event buses"; "Sending and
  receiving events between AWS accounts"): an ``Allow`` of
  ``events:PutEvents`` for a principal covering the sending account (``*``,
  its id, its root ARN), every condition met, and no ``Deny`` that applies.
  Statements and conditions as ``policies`` evaluates them (fail closed), on
  ``policies.request_context`` (``aws:PrincipalAccount``,
  ``aws:PrincipalOrgID`` from moto's Organizations…) plus ``events:source``
  and ``events:detail-type``. moto checks none of it.
- An event a rule could not deliver to a bus because of permissions goes at
  once to the target's dead-letter queue (``DeadLetterConfig``) with the
  attributes ``RULE_ARN``, ``TARGET_ARN``, ``ERROR_CODE`` and
  ``ERROR_MESSAGE`` ("Using dead-letter queues to process undelivered
  events"); without one it is dropped. So are deliveries to SQS targets
  their queue's policy refuses (``sqs_policy``). The dead-letter queue's own
  policy must let EventBridge send (``events.amazonaws.com``,
  ``aws:SourceArn`` the rule), else the event is dropped.

``emit(account, region, detail_type, detail, resources)`` delivers an
``aws.ecr`` event to the default bus of that account and Region, in process,
through the same rule matching as ``PutEvents``, so rules with SQS targets
created through the normal Events API receive it.

Both report to ``meter``: each bus-to-bus delivery (a custom event on AWS)
and each service event ``emit()`` sends.
"""

from __future__ import annotations

import copy
import threading
import uuid
from typing import Any

from moto.core.utils import unix_time

from . import meter
from .policies import Caller, decide, request_context

# AWS envelope order; moto fills <field> placeholders from the event.
EVENT_TEMPLATE = (
    '{"version": "0", "id": "<id>", "detail-type": "<detail-type>", '
    '"source": "<source>", "account": "<account>", "time": <time>, '
    '"region": "<region>", "resources": <resources>, "detail": <detail>}'
)

_MAX_BUS_HOPS = 4
_hops = threading.local()


def _forward_to_bus(rule: Any, event: dict[str, Any], target: dict[str, Any]) -> None:
    from moto.events.models import events_backends
    from moto.utilities.arns import parse_arn

    depth = getattr(_hops, "depth", 0)
    if depth >= _MAX_BUS_HOPS:
        return
    bus_arn = target["Arn"]
    arn = parse_arn(bus_arn)
    try:
        bus = events_backends[arn.account][arn.region].describe_event_bus(arn.resource_id)
    except Exception:  # target bus does not exist: AWS drops the event too
        return
    sender = rule.account_id
    if sender != arn.account and not bus_admits(bus.policy, sender, event, bus_arn):
        _dead_letter(rule, target, event, "NO_PERMISSIONS",
                     f"User: arn:aws:sts::{sender}:assumed-role/… is not authorized to perform: "
                     f"events:PutEvents on resource: {bus_arn} because no resource-based policy allows it")
        return
    meter.record_forwarded(event)
    forwarded = copy.deepcopy(event)
    forwarded["ingestion-time"] = unix_time()
    _hops.depth = depth + 1
    try:
        for rule in list(bus.rules.values()):
            rule.send_to_targets(copy.deepcopy(forwarded))
    finally:
        _hops.depth = depth


def bus_admits(policy: str | None, sender: str, event: dict[str, Any], bus_arn: str) -> bool:
    """Whether the bus ``bus_arn`` with resource policy ``policy`` takes ``event`` put by
    account ``sender`` (another account: it needs an ``Allow`` that applies, and no ``Deny``)."""
    caller = Caller(account=sender)
    context = request_context(caller, bus_arn.split(":")[4], secure_transport=True, extra={
        "events:source": event.get("source"),
        "events:detail-type": event.get("detail-type"),
    })
    return decide(policy, "events:PutEvents", bus_arn, caller, context) == "Allow"


def _dead_letter(rule: Any, target: dict[str, Any], event: dict[str, Any], code: str, message: str) -> None:
    """Sends ``event`` to the target's dead-letter queue, if it has one and the queue's policy
    lets EventBridge (``events.amazonaws.com``, ``aws:SourceArn`` the rule) send to it; else
    the event is dropped."""
    import json

    from moto.sqs.models import sqs_backends
    from moto.utilities.arns import parse_arn

    from . import sqs_policy

    queue_arn = (target.get("DeadLetterConfig") or {}).get("Arn")
    if not queue_arn:
        return
    arn = parse_arn(queue_arn)
    backend = sqs_backends[arn.account][arn.region]
    queue = backend.queues.get(arn.resource_id)
    if queue is None or not sqs_policy.eventbridge_may_send(rule, queue):
        return
    attributes = {name: {"DataType": "String", "StringValue": value} for name, value in (
        ("RULE_ARN", rule.arn), ("TARGET_ARN", target["Arn"]), ("ERROR_CODE", code), ("ERROR_MESSAGE", message))}
    body = {k: v for k, v in event.items() if k != "ingestion-time"}
    backend.send_message(arn.resource_id, json.dumps(body), message_attributes=attributes)


def _is_bus_target(target: dict[str, Any]) -> bool:
    return ":event-bus/" in target.get("Arn", "")


def emit(
    account: str,
    region: str,
    detail_type: str,
    detail: dict[str, Any],
    resources: list[str] | None = None,
    copies: int = 1,
    source: str = "aws.ecr",
) -> str:
    """Deliver one service event (``copies`` times, same id) to the default
    bus of ``account``/``region``. Returns the event id."""
    from moto.events.models import events_backends

    now = unix_time()
    event = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": now,
        "region": region,
        "resources": list(resources or []),
        "detail": detail,
        "ingestion-time": now,
    }
    bus = events_backends[account][region].describe_event_bus("default")
    meter.record_service_events(copies)
    for _ in range(copies):
        for rule in list(bus.rules.values()):
            rule.send_to_targets(copy.deepcopy(event))
    return event["id"]


def install() -> None:
    from moto.events.models import Rule
    from moto.events.utils import EventTemplateParser

    EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE = EVENT_TEMPLATE

    original = Rule.send_to_targets

    def send_to_targets(self: Any, original_event: Any, transform_input: bool = True) -> None:
        if getattr(self, "state", "ENABLED") == "DISABLED":
            return
        targets = list(self.targets)
        if not any(_is_bus_target(t) for t in targets):
            return original(self, original_event, transform_input)
        if not self.event_pattern.matches_event(original_event):
            return
        for target in targets:
            if _is_bus_target(target):
                _forward_to_bus(self, original_event, target)
        others = [t for t in targets if not _is_bus_target(t)]
        if others:
            # A shallow copy of the rule with the other targets only, so
            # moto's own delivery code handles them (thread-safe: the shared
            # rule object is not modified).
            clone = copy.copy(self)
            clone.targets = others
            original(clone, original_event, transform_input)

    Rule.send_to_targets = send_to_targets  # type: ignore[method-assign]
