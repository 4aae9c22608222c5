"""Fault injection for the ECR and DynamoDB APIs: throttling (``/_localaws/faults``).

AWS: every ECR API operation has a per-account, per-Region rate limit with a
burst (ECR User Guide, "Amazon ECR service quotas", "Troubleshooting ...
HTTP 429: Too Many Requests or ThrottleException": e.g. GetAuthorizationToken
20 TPS, bursts of 200, a token bucket per account and Region). A throttled
call is an error the SDKs retry with backoff. Which code ECR sends is not in
its API model; the AWS SDKs' retry classifiers (aws-sdk-rust:
``aws_runtime::retries::classifiers::THROTTLING_ERRORS``, botocore's
``_retry.json``) treat ``ThrottlingException`` as throttling, and HTTP 400
``ThrottlingException`` / "Rate exceeded" is what AWS JSON services answer.
That is our default; ``code``/``status``/``message`` change it per rule (the
ECR guide's ``ThrottleException`` or HTTP 429 are *not* retried as throttling
by aws-sdk-rust, which retries 429 only with a throttling code).

DynamoDB (Developer Guide, "Error handling with DynamoDB": HTTP 400
``ProvisionedThroughputExceededException``, ``ThrottlingException``,
``RequestLimitExceeded``, all "OK to retry"; API Reference,
"TransactWriteItems": a ``TransactionCanceledException`` whose
``CancellationReasons`` give one code per item in request order, ``None``
for the items that did not cause it, ``ThrottlingError`` /
``ProvisionedThroughputExceeded`` for a throttled one). A DynamoDB rule
answers ``ProvisionedThroughputExceededException`` by default; with
``cancellation_reasons`` (a list of those codes) it answers
``TransactionCanceledException`` carrying them, as a throttled transaction
does.

moto never throttles. Here a rule for an operation name of a service (any
name; ``*`` for every operation), optionally only for one caller
``account``, throttles:

- ``throttle_next: N``: the next N matching calls;
- ``rate_per_second: R`` (``burst: B``, default ``max(1, R)``): calls above
  the rate, with a token bucket per (rule, caller account, Region) that
  starts full, like ECR's per-Region limits.

A throttled call never reaches moto: HTTP ``status`` (400) with the AWS JSON
error body ``{"__type": code, "message": message}`` and ``X-Amzn-Errortype``,
like moto's own errors. It is counted by
``calls`` (``throttled``). Rules match most specific first
((operation, account), (operation, any), (``*``, account), (``*``, any)); the
first one that throttles wins. Rate limits apply only to the ECR and DynamoDB
APIs (not to replication or blob downloads); throttled DynamoDB calls are not
counted by ``calls`` (an ECR counter) nor metered.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import calls

SERVICES = ("ecr", "dynamodb")
_RULE_KEYS = {"throttle_next", "rate_per_second", "burst", "account", "code", "status", "message",
              "cancellation_reasons"}
_DYNAMODB_THROTTLED = ("The level of configured provisioned throughput for the table was exceeded. "
                       "Consider increasing your provisioning level with the UpdateTable API.")
_CANCELLATION_CODES = {"None", "ConditionalCheckFailed", "ItemCollectionSizeLimitExceeded",
                       "TransactionConflict", "ProvisionedThroughputExceeded", "ThrottlingError",
                       "ValidationError"}
_OPERATION = re.compile(r"\*|[A-Za-z0-9]+")
_ACCOUNT = re.compile(r"[0-9]{12}")


class FaultsError(ValueError):
    pass


@dataclass
class Rule:
    operation: str
    account: str | None = None
    throttle_next: int = 0
    rate_per_second: float | None = None
    burst: float | None = None
    code: str = "ThrottlingException"
    status: int = 400
    message: str = "Rate exceeded"
    cancellation_reasons: list[str] | None = None
    # DynamoDB names its error shapes in full (the Developer Guide's example:
    # "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException").
    type_prefix: str = ""
    throttled: int = 0
    # (caller account, region) -> [tokens, last refill (monotonic)]
    buckets: dict[tuple[str, str], list[float]] = field(default_factory=dict, repr=False)

    def check(self, account: str, region: str) -> bool:
        """True if this call is throttled (and count it)."""
        if self.throttle_next > 0:
            self.throttle_next -= 1
            self.throttled += 1
            return True
        if self.rate_per_second is None:
            return False
        capacity = self.burst if self.burst is not None else max(1.0, self.rate_per_second)
        now = time.monotonic()
        bucket = self.buckets.setdefault((account, region), [capacity, now])
        bucket[0] = min(capacity, bucket[0] + (now - bucket[1]) * self.rate_per_second)
        bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return False
        self.throttled += 1
        return True

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.account:
            out["account"] = self.account
        out.update(throttle_next=self.throttle_next, rate_per_second=self.rate_per_second,
                   burst=self.burst, code=self.code, status=self.status, message=self.message,
                   throttled=self.throttled)
        if self.cancellation_reasons is not None:
            out["cancellation_reasons"] = list(self.cancellation_reasons)
        return out

    def error_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"__type": self.type_prefix + self.code, "message": self.message}
        if self.cancellation_reasons is not None:
            body["CancellationReasons"] = [{"Code": c} for c in self.cancellation_reasons]
        return body


_lock = threading.Lock()
# (service, operation, account or None) -> Rule
_rules: dict[tuple[str, str, str | None], Rule] = {}


def _parse_rule(service: str, operation: str, value: Any) -> Rule:
    if not isinstance(value, dict):
        raise FaultsError(f"{operation}: a rule must be an object, a list of objects or null")
    unknown = set(value) - _RULE_KEYS
    if unknown:
        raise FaultsError(f"{operation}: unknown keys {sorted(unknown)}; allowed: {sorted(_RULE_KEYS)}")
    rule = Rule(operation)
    if service == "dynamodb":
        rule.code, rule.message = "ProvisionedThroughputExceededException", _DYNAMODB_THROTTLED
        rule.type_prefix = "com.amazonaws.dynamodb.v20120810#"
        reasons = value.get("cancellation_reasons")
        if reasons is not None:
            if (not isinstance(reasons, list) or not reasons
                    or not all(isinstance(r, str) and r in _CANCELLATION_CODES for r in reasons)):
                raise FaultsError(f"{operation}: cancellation_reasons must be a non-empty list of "
                                  f"{sorted(_CANCELLATION_CODES)}")
            rule.cancellation_reasons = list(reasons)
            rule.code = "TransactionCanceledException"
            rule.message = ("Transaction cancelled, please refer cancellation reasons for specific "
                            f"reasons [{', '.join(reasons)}]")
    elif "cancellation_reasons" in value:
        raise FaultsError(f"{operation}: cancellation_reasons is for DynamoDB transactions")
    account = value.get("account")
    if account is not None:
        if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
            raise FaultsError(f"{operation}: account must be a 12-digit string")
        rule.account = account
    n = value.get("throttle_next", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise FaultsError(f"{operation}: throttle_next must be an integer >= 0")
    rule.throttle_next = n
    for key in ("rate_per_second", "burst"):
        v = value.get(key)
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 or (key == "burst" and v < 1):
                raise FaultsError(f"{operation}: {key} must be a number > 0 (burst >= 1) or null")
            setattr(rule, key, float(v))
    for key in ("code", "message"):
        if key in value:
            if not isinstance(value[key], str) or not value[key]:
                raise FaultsError(f"{operation}: {key} must be a non-empty string")
            setattr(rule, key, value[key])
    if "status" in value:
        status = value["status"]
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise FaultsError(f"{operation}: status must be an HTTP error status (400..599)")
        rule.status = status
    return rule


def get() -> dict[str, Any]:
    with _lock:
        out: dict[str, Any] = {service: {} for service in SERVICES}
        for (service, operation, account), rule in sorted(_rules.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
            out[service].setdefault(operation, []).append(rule.describe())
        return out


def update(body: Any) -> dict[str, Any]:
    """Merge ``body``: each rule replaces the rule of the same (operation,
    account); an operation set to null loses all its rules."""
    if not isinstance(body, dict):
        raise FaultsError("body must be a JSON object like {\"ecr\": {\"PutImage\": {\"throttle_next\": 5}}}")
    unknown = set(body) - set(SERVICES)
    if unknown:
        raise FaultsError(f"unknown services {sorted(unknown)}; supported: {list(SERVICES)}")
    new: list[tuple[tuple[str, str, str | None], Rule | None]] = []
    for service, operations in body.items():
        if not isinstance(operations, dict):
            raise FaultsError(f"{service}: expected an object keyed by operation name")
        for operation, value in operations.items():
            if not _OPERATION.fullmatch(operation):
                raise FaultsError(f"{operation!r} is not an operation name (like PutImage) or '*'")
            if value is None:
                new.append(((service, operation, "*all*"), None))
                continue
            for item in value if isinstance(value, list) else [value]:
                rule = _parse_rule(service, operation, item)
                new.append(((service, operation, rule.account), rule))
    with _lock:
        for key, rule in new:
            if rule is None:
                for k in [k for k in _rules if k[:2] == key[:2]]:
                    del _rules[k]
            else:
                _rules[key] = rule
    return get()


def clear(account: str | None = None) -> None:
    """Remove every rule, or only the rules limited to ``account``."""
    with _lock:
        for key in [k for k in _rules if account is None or k[2] == account]:
            del _rules[key]


def throttle(service: str, operation: str, account: str, region: str) -> Rule | None:
    """The rule that throttles this call, if any."""
    with _lock:
        if not _rules:
            return None
        for key in ((service, operation, account), (service, operation, None),
                    (service, "*", account), (service, "*", None)):
            rule = _rules.get(key)
            if rule is not None and rule.check(account, region):
                return rule
        return None


def install() -> None:
    """Wrap ECRResponse.call_action (after moto resolved the account and
    Region of the request): count the call, maybe throttle it."""
    from moto.ecr.responses import ECRResponse

    from . import store

    original = ECRResponse.call_action

    def call_action(self: Any) -> Any:
        operation = self._get_action() or "?"
        account, region = self.current_account, self.region
        rule = throttle("ecr", operation, account, region)
        calls.record_call(account, region, operation, throttled=rule is not None)
        if rule is None:
            return original(self)
        body = json.dumps(rule.error_body())
        headers = {**self.response_headers, "X-Amzn-Errortype": rule.code,
                   "Content-Type": "application/x-amz-json-1.1", "status": str(rule.status)}
        headers, body = self._enrich_response(headers, body)
        return rule.status, headers, body

    ECRResponse.call_action = call_action  # type: ignore[method-assign]
    _install_dynamodb()
    store.on_reset(clear)


def _install_dynamodb() -> None:
    """Wrap DynamoHandler.call_action the same way (AWS JSON 1.0 errors)."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        operation = self._get_action() or "?"
        rule = throttle("dynamodb", operation, self.current_account, self.region)
        if rule is None:
            return original(self)
        headers = {**self.response_headers, "X-Amzn-Errortype": rule.code,
                   "Content-Type": "application/x-amz-json-1.0", "status": str(rule.status)}
        headers, body = self._enrich_response(headers, json.dumps(rule.error_body()))
        return rule.status, headers, body

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
