"""SQS queue policies, enforced on SendMessage / SendMessageBatch and on EventBridge deliveries.

moto 5.2.5 stores a queue's ``Policy`` attribute and never reads it: anyone
sends to any queue, and an EventBridge rule delivers to its SQS target
whatever the queue's policy says. AWS (Amazon SQS Developer Guide, "Identity
and access management in Amazon SQS" and "Using custom policies with the
Amazon SQS access policy language"; IAM User Guide, "Policy evaluation logic"
and "Cross-account policy evaluation logic"):

- ``SendMessage`` and ``SendMessageBatch`` (both authorized as
  ``sqs:SendMessage``), through the query protocol and the JSON protocol
  (what aws-sdk-rust speaks; moto parses both into the same parameters): a
  ``Deny`` statement of the queue's policy that applies refuses the request,
  whoever sends, the queue's own account included; a caller of another
  account needs an ``Allow`` that applies; a caller of the queue's account
  without such a ``Deny`` is admitted (its identity policies would decide:
  the test bed models none, so as if they allowed). Statements apply as
  ``policies.statement_applies`` says (``Principal`` ``*``, ``{"AWS": …}``
  account id, ``:root`` ARN or the caller's role ARN for assumed-role
  credentials, ``Action``, ``Resource`` the queue ARN, ``Condition`` on
  ``policies.request_context``: ``aws:SecureTransport`` is ``false``, since
  this server speaks plain HTTP on 127.0.0.1). A refused request gets SQS's
  answer: HTTP 403, code ``AccessDenied`` (``Type`` ``Sender``), "Access to
  the resource https://sqs.<region>.amazonaws.com/ is denied." (over JSON:
  ``x-amzn-query-error: AccessDenied;Sender``, which the SDKs read the code
  from). A queue URL naming another account (``/<account>/<name>``) reaches
  that account's queue (moto would look in the caller's own account).
- An EventBridge rule's delivery to an SQS target, and to a target's
  dead-letter queue (``eventbridge._dead_letter``), is a request by the
  service principal ``events.amazonaws.com`` with ``aws:SourceArn`` = the
  rule's ARN and ``aws:SourceAccount`` = the rule's account: "Using
  resource-based policies for Amazon EventBridge" (Amazon SQS permissions)
  requires the queue policy to allow it, same account or not. A delivery the
  queue refuses goes to the target's dead-letter queue with ``ERROR_CODE``
  ``NO_PERMISSIONS`` (as a bus that refuses does, ``eventbridge``), or is
  dropped without one, or when the dead-letter queue refuses it too.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from .policies import Caller, admits, caller_of, request_context

EVENTBRIDGE = "events.amazonaws.com"
_QUEUE_URL_ACCOUNT = re.compile(r"/([0-9]{12})/[^/]+/?$")


def eventbridge_may_send(rule: Any, queue: Any) -> bool:
    """Whether ``queue``'s policy lets EventBridge deliver events of ``rule`` to it."""
    caller = Caller(service=EVENTBRIDGE)
    context = request_context(caller, queue.account_id, source_arn=rule.arn, source_account=rule.account_id,
                              secure_transport=True)
    return admits(queue.policy, "sqs:SendMessage", queue.queue_arn, queue.account_id, caller, context)


def _queue_owner(response: Any) -> str:
    url = response._get_param("QueueUrl") or response.path
    match = _QUEUE_URL_ACCOUNT.search(str(url))
    return match.group(1) if match else response.current_account


def _access_denied(response: Any) -> Any:
    from moto.core.responses import ActionResult
    from moto.sqs.exceptions import SQSException

    error = SQSException("AccessDenied",
                         f"Access to the resource https://sqs.{response.region}.amazonaws.com/ is denied.")
    _status, headers, body = response.serialized(ActionResult(error))
    headers["status"] = 403
    return body, headers


def _guarded(original: Any) -> Any:
    def handler(self: Any) -> Any:
        from moto.sqs.models import sqs_backends

        caller_account = self.current_account
        owner = _queue_owner(self)
        self.current_account = owner  # moto's sqs_backend: the queue owner's
        queue = dict.get(dict.get(sqs_backends, owner) or {}, self.region)
        queue = queue.queues.get(self._get_queue_name()) if queue is not None else None
        if queue is not None:
            policy = queue.policy
            # The role behind temporary credentials matters only to a policy.
            caller = caller_of(caller_account, self.get_access_key()) if policy else Caller(account=caller_account)
            context = request_context(caller, owner)
            if not admits(policy, "sqs:SendMessage", queue.queue_arn, owner, caller, context):
                return _access_denied(self)
        return original(self)

    return handler


def _policed_delivery(inner: Any) -> Any:
    """Wraps ``Rule._send_to_sqs_queue`` (the meter's wrapper of moto's, so a refused delivery
    is not billed)."""

    def send(self: Any, resource_id: str, event: Any, group_id: str | None = None) -> None:
        from moto.core.utils import iso_8601_datetime_without_milliseconds, utcfromtimestamp
        from moto.sqs.models import sqs_backends

        from . import eventbridge

        queue = sqs_backends[self.account_id][self.region_name].queues.get(resource_id)
        if queue is None or eventbridge_may_send(self, queue):
            return inner(self, resource_id, event, group_id)
        target = next((t for t in self.targets if str(t.get("Arn", "")).startswith("arn:")
                       and t["Arn"].split(":")[2] == "sqs" and t["Arn"].split(":")[-1] == resource_id),
                      {"Arn": queue.queue_arn})
        body = copy.deepcopy(event)
        if isinstance(body, dict) and isinstance(body.get("time"), (int, float, str)):
            try:  # as moto formats it for the queue
                body["time"] = iso_8601_datetime_without_milliseconds(utcfromtimestamp(float(body["time"])))
            except ValueError:
                pass
        eventbridge._dead_letter(self, target, body, "NO_PERMISSIONS",
                                 f"Access to the resource {queue.queue_arn} is denied: no statement of its "
                                 f"policy allows {EVENTBRIDGE} sqs:SendMessage for {self.arn}")
        return None

    return send


def install() -> None:
    """After ``meter.install`` (it wraps the delivery this wraps)."""
    from moto.events.models import Rule
    from moto.sqs.responses import SQSResponse

    SQSResponse.send_message = _guarded(SQSResponse.send_message)  # type: ignore[method-assign]
    SQSResponse.send_message_batch = _guarded(SQSResponse.send_message_batch)  # type: ignore[method-assign]
    Rule._send_to_sqs_queue = _policed_delivery(Rule._send_to_sqs_queue)  # type: ignore[method-assign]
