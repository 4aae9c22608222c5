"""SNS topic policies, enforced on Publish / PublishBatch (and, for ``alarm_actions``, on
CloudWatch alarm notifications).

moto 5.2.5 gives every topic SNS's default policy (the owner's principals may
publish, under ``AWS:SourceOwner``) and never reads it: any account publishes
to any topic. AWS (Amazon SNS Developer Guide, "Access control in Amazon SNS"
and "Example cases for Amazon SNS access control"; IAM User Guide, "Policy
evaluation logic" and "Cross-account policy evaluation logic"):

- a ``Deny`` statement of the topic's policy that applies refuses
  ``sns:Publish`` to anyone, the topic's own account included;
- a caller of another account needs an ``Allow`` that applies (the default
  policy's statement requires ``AWS:SourceOwner`` = the topic owner, a key a
  direct call does not carry: another account is refused until the owner
  grants it, "Grant AWS account access to a topic");
- a caller of the topic's account without such a ``Deny`` is admitted (its
  identity policies would decide: the test bed models none);
- a service principal (``cloudwatch.amazonaws.com`` for alarm actions) needs
  an ``Allow`` that applies, on the keys ``aws:SourceArn``,
  ``aws:SourceAccount`` and SNS's legacy ``aws:SourceOwner`` (both the alarm's
  account: "aws:SourceAccount versus aws:SourceOwner"), so the default policy
  admits the alarms of the topic's own account and no other.

Statements apply as ``policies.statement_applies`` says; the request context
is ``policies.request_context`` (``aws:SecureTransport`` ``false`` for API
calls: this server is plain HTTP). A refused Publish gets SNS's modeled error:
HTTP 403 ``AuthorizationError`` ("User: <principal> is not authorized to
perform: SNS:Publish on resource: <topic> …"). KMS is not consulted: a topic's
``KmsMasterKeyId`` and its key policy do not gate a publish here.
"""

from __future__ import annotations

from typing import Any

from moto.sns.exceptions import SNSException

from .policies import Caller, admits, caller_of, decide, request_context


class AuthorizationError(SNSException):
    code = "AuthorizationError"  # SNS's AuthorizationErrorException: HTTP 403, sender fault


def topic_admits(topic: Any, caller: Caller, context: dict[str, Any]) -> bool:
    return admits(topic.policy, "sns:Publish", topic.arn, topic.account_id, caller, context)


def _refuse(caller: Caller, topic: Any, context: dict[str, Any]) -> None:
    explicit = decide(topic.policy, "sns:Publish", topic.arn, caller, context) == "Deny"
    reason = ("with an explicit deny in a resource-based policy" if explicit
              else "because no resource-based policy allows the SNS:Publish action")
    raise AuthorizationError(f"User: {caller.arn} is not authorized to perform: SNS:Publish "
                             f"on resource: {topic.arn} {reason}")


def _topic(response: Any, arn: str | None) -> Any:
    from moto.sns.models import sns_backends

    parts = (arn or "").split(":")
    if len(parts) != 6 or parts[2] != "sns":
        return None
    per_account = dict.get(sns_backends, parts[4])
    backend = dict.get(per_account, response.region) if per_account is not None else None
    return backend.topics.get(arn) if backend is not None else None


def _guarded(original: Any, arn_of: Any) -> Any:
    def handler(self: Any) -> Any:
        topic = _topic(self, arn_of(self))
        if topic is not None:
            caller = caller_of(self.current_account, self.get_access_key())
            context = request_context(caller, topic.account_id)
            if not topic_admits(topic, caller, context):
                _refuse(caller, topic, context)
        return original(self)

    return handler


def install() -> None:
    from moto.sns.responses import SNSResponse

    SNSResponse.publish = _guarded(  # type: ignore[method-assign]
        SNSResponse.publish, lambda r: None if r._get_param("PhoneNumber") is not None
        else r._get_param("TargetArn") or r._get_param("TopicArn"))
    SNSResponse.publish_batch = _guarded(  # type: ignore[method-assign]
        SNSResponse.publish_batch, lambda r: r._get_param("TopicArn"))
