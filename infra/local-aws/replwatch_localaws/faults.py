"""Fault injection for the ECR API: throttling (``/_localaws/faults``).

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

moto never throttles. Here a rule for an ECR operation name (any name; ``*``
for every operation), optionally only for one caller ``account``, throttles:

- ``throttle_next: N``: the next N matching calls;
- ``rate_per_second: R`` (``burst: B``, default ``max(1, R)``): calls above
  the rate, with a token bucket per (rule, caller account, Region) that
  starts full, like ECR's per-Region limits.

A throttled call never reaches moto: HTTP ``status`` (400) with the AWS JSON
error body ``{"__type": code, "message": message}`` and ``X-Amzn-Errortype``,
like moto's own errors. It is counted by
``calls`` (``throttled``). Rules match most specific first
((operation, account), (operation, any), (``*``, account), (``*``, any)); the
first one that throttles wins. Rate limits apply only to the ECR API (not to
replication or blob downloads).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import calls

SERVICES = ("ecr",)
_RULE_KEYS = {"throttle_next", "rate_per_second", "burst", "account", "code", "status", "message"}
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
        return out


_lock = threading.Lock()
# (service, operation, account or None) -> Rule
_rules: dict[tuple[str, str, str | None], Rule] = {}


def _parse_rule(operation: str, value: Any) -> Rule:
    if not isinstance(value, dict):
        raise FaultsError(f"{operation}: a rule must be an object, a list of objects or null")
    unknown = set(value) - _RULE_KEYS
    if unknown:
        raise FaultsError(f"{operation}: unknown keys {sorted(unknown)}; allowed: {sorted(_RULE_KEYS)}")
    rule = Rule(operation)
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
                rule = _parse_rule(operation, item)
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
        body = json.dumps({"__type": rule.code, "message": rule.message})
        headers = {**self.response_headers, "X-Amzn-Errortype": rule.code,
                   "Content-Type": "application/x-amz-json-1.1", "status": str(rule.status)}
        headers, body = self._enrich_response(headers, body)
        return rule.status, headers, body

    ECRResponse.call_action = call_action  # type: ignore[method-assign]
    store.on_reset(clear)
