"""Resource-based policies (statements, principals, conditions), evaluated as IAM does.

IAM User Guide, "IAM JSON policy elements: Condition operators"
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html)
and "Condition with multiple context keys or values": every operator of a
``Condition`` block and every key under it must be met (AND); a key with
several policy values is met by any of them (OR); a negated operator
(``StringNotEquals``, ``ArnNotLike``, ``NumericNotEquals``, ``DateNotEquals``…)
is met when the request value matches none of them. A key absent from the
request context does not match, so its condition is not met, except with the
``…IfExists`` form of an operator and with the negated operators (met when
the key is absent). Operators evaluated: ``String{Equals,NotEquals,
EqualsIgnoreCase,NotEqualsIgnoreCase,Like,NotLike}`` (``*`` and ``?``
wildcards for the ``Like`` ones), ``Arn{Equals,Like,NotEquals,NotLike}``
(ArnEquals and ArnLike alike: each of the six colon-separated parts matched
on its own, with wildcards), ``Bool``, ``Numeric{Equals,NotEquals,LessThan,
LessThanEquals,GreaterThan,GreaterThanEquals}``, ``Date…`` with the same six
(ISO 8601 or epoch seconds on both sides), each with ``IfExists``; ``Null``
(``"true"``: the key is absent, ``"false"``: it is present); and the set
operators ``ForAnyValue:`` / ``ForAllValues:`` on any of them but ``Null``
("Set operators for multivalued context keys": ``ForAllValues`` is met when
every request value matches, and when the key is absent; ``ForAnyValue`` when
at least one does, never when absent; a single value is a set of one).

**Fail closed.** An operator, a value or a key shape the test bed cannot
evaluate (``IpAddress``, ``BinaryEquals``, a policy variable ``${…}``, a
multivalued request key under a single-valued operator, ``NullIfExists``,
a non-number under ``Numeric…``…) counts as *not met* in an ``Allow``
statement and as *met* in a ``Deny`` statement (``condition_met``'s
``effect``): a policy the test bed cannot read refuses rather than admits.

``request_context`` builds the request context of one request from the
caller (IAM User Guide, "AWS global condition context keys",
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html),
``decide`` evaluates a resource-based policy for it (a ``Deny`` that applies
wins, else an ``Allow`` that applies; "Policy evaluation logic"), ``admits``
adds the same-account / cross-account rule of "Cross-account policy
evaluation logic" for services that let a principal of the resource's own
account in without a resource policy (its identity policies decide there,
and the test bed models none).

Used by ``trust`` (role trust policies), ``eventbridge`` (event bus policies),
``sqs_policy`` (queue policies), ``sns_policy`` (topic policies and CloudWatch
alarm notifications) and ``replication`` (ECR registry permissions).
"""

from __future__ import annotations

import datetime
import functools
import json
import re
from dataclasses import dataclass
from typing import Any


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def org_of(account: str) -> str | None:
    """The organization id of ``account`` in moto's Organizations, if it is in one."""
    from moto.organizations.models import organizations_backends

    for per_account in list(dict.values(organizations_backends)):
        for backend in list(dict.values(per_account)):
            org = getattr(backend, "org", None)
            if org is None:
                continue
            members = {getattr(a, "id", None) for a in getattr(backend, "accounts", [])}
            if account in members or getattr(org, "master_account_id", None) == account:
                return str(org.id)
    return None


class _Unknown(Exception):
    """An operator, value or key shape the test bed does not evaluate."""


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str) -> re.Pattern[str]:
    """IAM wildcards: ``*`` any run of characters, ``?`` one; nothing else is special."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern),
                      re.DOTALL)


def _like(value: str, pattern: str) -> bool:
    return _glob(pattern).fullmatch(value) is not None


def _arn_like(value: str, pattern: str) -> bool:
    parts, wanted = value.split(":", 5), pattern.split(":", 5)
    return len(parts) == len(wanted) and all(_like(p, w) for p, w in zip(parts, wanted))


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise _Unknown(text) from None


def _date(text: str) -> float:
    try:
        return float(text)  # epoch seconds
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise _Unknown(text) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


_COMPARE = {
    "Equals": lambda a, b: a == b,
    "LessThan": lambda a, b: a < b,
    "LessThanEquals": lambda a, b: a <= b,
    "GreaterThan": lambda a, b: a > b,
    "GreaterThanEquals": lambda a, b: a >= b,
}


def _matches(base: str, value: str, wanted: list[str]) -> bool:
    """Whether the request value matches any policy value under the positive operator ``base``."""
    if base in ("StringEquals",):
        return value in wanted
    if base in ("StringEqualsIgnoreCase", "Bool"):
        return value.lower() in [w.lower() for w in wanted]
    if base == "StringLike":
        return any(_like(value, w) for w in wanted)
    if base in ("ArnEquals", "ArnLike"):
        return any(_arn_like(value, w) for w in wanted)
    for family, parse in (("Numeric", _number), ("Date", _date)):
        if base.startswith(family) and base[len(family):] in _COMPARE:
            compare, request = _COMPARE[base[len(family):]], parse(value)
            return any(compare(request, parse(w)) for w in wanted)
    raise _Unknown(base)


# Negated operator -> the positive one it negates.
_NEGATED = {"StringNotEquals": "StringEquals", "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
            "StringNotLike": "StringLike", "ArnNotEquals": "ArnEquals", "ArnNotLike": "ArnLike",
            "NumericNotEquals": "NumericEquals", "DateNotEquals": "DateEquals"}
_POSITIVE = {"StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnEquals", "ArnLike", "Bool",
             *(f"{family}{c}" for family in ("Numeric", "Date") for c in _COMPARE)}


def _absent(value: Any) -> bool:
    return value is None or value == []


def _operator_met(operator: str, key: str, wanted: Any, context: dict[str, Any]) -> bool:
    """One operator on one key; raises ``_Unknown`` for what it cannot evaluate."""
    set_operator, _, base = operator.rpartition(":")
    if set_operator not in ("", "ForAnyValue", "ForAllValues"):
        raise _Unknown(operator)
    values = as_list(wanted)
    if not values or any(isinstance(w, (dict, list)) for w in values):
        raise _Unknown(operator)
    policy_values = [str(w).lower() if isinstance(w, bool) else str(w) for w in values]
    if any("${" in w for w in policy_values):  # policy variables are not substituted
        raise _Unknown(operator)
    value = context.get(key.lower())
    if base == "Null":
        if set_operator or len(policy_values) != 1 or policy_values[0].lower() not in ("true", "false"):
            raise _Unknown(operator)
        return _absent(value) == (policy_values[0].lower() == "true")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    negated = base in _NEGATED
    positive = _NEGATED.get(base, base)
    if positive not in _POSITIVE:
        raise _Unknown(operator)
    if _absent(value):
        if if_exists or set_operator == "ForAllValues":
            return True
        if set_operator == "ForAnyValue":
            return False
        return negated
    if isinstance(value, list) and not set_operator:
        raise _Unknown(operator)  # a multivalued key needs a set operator
    results = [_matches(positive, str(v), policy_values) != negated for v in as_list(value)]
    if set_operator == "ForAllValues":
        return all(results)
    return any(results)


def condition_met(condition: Any, context: dict[str, Any], effect: Any) -> bool:
    """Whether a statement's ``Condition`` block holds for ``context`` (keys lower case; a value
    is a string, or a list of strings for a multivalued key; None or missing: absent from the
    request). ``effect`` is the statement's ``Effect``: what the test bed cannot evaluate counts
    as met in a ``Deny`` and as not met in anything else (fail closed)."""
    unknown_is_met = effect == "Deny"
    if condition is None:
        return True
    if not isinstance(condition, dict):
        return unknown_is_met
    for operator, keys in condition.items():
        if not isinstance(keys, dict) or not keys:
            if not unknown_is_met:
                return False
            continue
        for key, wanted in keys.items():
            try:
                met = _operator_met(str(operator), str(key), wanted, context)
            except _Unknown:
                met = unknown_is_met
            if not met:
                return False
    return True


# --- the request -------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who makes a request: an AWS principal of ``account`` (``role_arn``: the role whose
    temporary credentials it uses; None: the account itself, as the test bed's 12-digit access
    keys are), or the AWS service principal ``service`` (``events.amazonaws.com``)."""

    account: str | None = None
    role_arn: str | None = None
    service: str | None = None

    @property
    def arn(self) -> str | None:
        if self.service is not None:
            return None
        return self.role_arn or f"arn:aws:iam::{self.account}:root"


def caller_of(account: str, access_key: str | None) -> Caller:
    """The caller of an API request acting as ``account`` with ``access_key``: a 12-digit key
    (the test bed's "account's own credentials") is the account's root; a key STS issued is
    the role it was issued for."""
    from . import accounts, trust

    if access_key is None or accounts.account_from_authorization(f"Credential={access_key}/") is not None:
        return Caller(account=account)
    return Caller(account=account, role_arn=trust.caller_role_arn(access_key))


def request_context(caller: Caller, resource_account: str | None, *, source_arn: str | None = None,
                    source_account: str | None = None, secure_transport: bool = False,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The request context (keys lower case) of a request by ``caller`` on a resource of
    ``resource_account``, as "AWS global condition context keys" lists them:

    - an AWS principal: ``aws:PrincipalArn`` (its role's ARN for assumed-role credentials, else
      ``arn:aws:iam::<account>:root``), ``aws:PrincipalAccount``, ``aws:PrincipalOrgID`` (when
      the account is in an organization of moto's Organizations), ``aws:PrincipalType``
      (``AssumedRole`` / ``Account``), ``aws:PrincipalIsAWSService`` ``false``;
    - a service principal: ``aws:PrincipalServiceName``, ``aws:PrincipalIsAWSService``
      ``true``, ``aws:SourceArn``, ``aws:SourceAccount``, ``aws:SourceOrgID``, and SNS's
      legacy ``aws:SourceOwner`` (= ``aws:SourceAccount``); none of the ``aws:Principal…``
      keys of an AWS principal;
    - always: ``aws:SecureTransport`` (``secure_transport``: an API request to this server
      is plain HTTP, so ``false``; a service's own delivery inside AWS is ``true``),
      ``aws:ResourceAccount``, ``aws:ResourceOrgID``, ``aws:CurrentTime``, ``aws:EpochTime``;
    - ``extra``: service keys (``sts:ExternalId``, ``events:source``…), lower case.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    context: dict[str, Any] = {
        "aws:securetransport": "true" if secure_transport else "false",
        "aws:currenttime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "aws:epochtime": str(int(now.timestamp())),
    }
    if caller.service is not None:
        context.update({
            "aws:principalservicename": caller.service,
            "aws:principalisawsservice": "true",
            "aws:sourcearn": source_arn,
            "aws:sourceaccount": source_account,
            "aws:sourceowner": source_account,
            "aws:sourceorgid": org_of(source_account) if source_account else None,
        })
    else:
        context.update({
            "aws:principalarn": caller.arn,
            "aws:principalaccount": caller.account,
            "aws:principalorgid": org_of(caller.account) if caller.account else None,
            "aws:principaltype": "AssumedRole" if caller.role_arn else "Account",
            "aws:principalisawsservice": "false",
        })
    if resource_account is not None:
        context["aws:resourceaccount"] = resource_account
        context["aws:resourceorgid"] = org_of(resource_account)
    for key, value in (extra or {}).items():
        context[key.lower()] = value
    return {k: v for k, v in context.items() if v is not None}


# --- statements --------------------------------------------------------------------------


def principal_covers(principal: Any, caller: Caller) -> bool:
    """Whether a statement's ``Principal`` names the caller: ``"*"`` (everyone, services
    included; ``{"AWS": "*"}`` is the same, IAM User Guide "AWS JSON policy elements:
    Principal"), for an AWS principal its account id, ``arn:aws:iam::<account>:root`` or its
    role's ARN, for a service ``{"Service": name}``."""
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    named = [str(p) for p in as_list(principal.get("AWS"))]
    if "*" in named:
        return True
    if caller.service is not None:
        return caller.service in [str(s) for s in as_list(principal.get("Service"))]
    return any(p == caller.account or p == caller.role_arn or
               (p.startswith("arn:") and p.endswith(f":iam::{caller.account}:root")) for p in named)


def _names(patterns: Any, name: str, case_sensitive: bool) -> bool:
    if not case_sensitive:
        name = name.lower()
    for pattern in as_list(patterns):
        pattern = str(pattern) if case_sensitive else str(pattern).lower()
        if _like(name, pattern):
            return True
    return False


def statement_applies(statement: Any, action: str, resource: str, caller: Caller,
                      context: dict[str, Any]) -> bool:
    """Whether ``statement`` applies to ``caller`` doing ``action`` on ``resource``:
    ``Principal``/``NotPrincipal``, ``Action``/``NotAction`` (case-insensitive, wildcards),
    ``Resource``/``NotResource`` (wildcards; a statement without either applies to the
    resource it is attached to) and its ``Condition``."""
    if not isinstance(statement, dict):
        return False
    if "NotPrincipal" in statement:
        if principal_covers(statement["NotPrincipal"], caller):
            return False
    elif not principal_covers(statement.get("Principal"), caller):
        return False
    if "NotAction" in statement:
        if _names(statement["NotAction"], action, case_sensitive=False):
            return False
    elif not _names(statement.get("Action"), action, case_sensitive=False):
        return False
    if "NotResource" in statement:
        if _names(statement["NotResource"], resource, case_sensitive=True):
            return False
    elif "Resource" in statement and not _names(statement["Resource"], resource, case_sensitive=True):
        return False
    return condition_met(statement.get("Condition"), context, statement.get("Effect"))


@functools.lru_cache(maxsize=1024)
def _statements(document: str) -> tuple[Any, ...] | None:
    try:
        policy = json.loads(document)
        return tuple(as_list(policy.get("Statement")))
    except (TypeError, ValueError, AttributeError):
        return None


def decide(document: str | None, action: str, resource: str, caller: Caller,
           context: dict[str, Any]) -> str | None:
    """``"Deny"`` if a ``Deny`` statement of the policy applies, else ``"Allow"`` if an
    ``Allow`` does, else None (no statement applies: an implicit deny). A policy that is not
    JSON with statements denies (fail closed)."""
    if not document:
        return None
    statements = _statements(document if isinstance(document, str) else json.dumps(document))
    if statements is None:
        return "Deny"
    effects = {s.get("Effect") for s in statements if statement_applies(s, action, resource, caller, context)}
    if "Deny" in effects:
        return "Deny"
    return "Allow" if "Allow" in effects else None


def admits(document: str | None, action: str, resource: str, resource_account: str, caller: Caller,
           context: dict[str, Any]) -> bool:
    """A request on a resource whose policy is ``document``: an explicit ``Deny`` refuses
    anyone; an ``Allow`` admits; with neither, a principal of the resource's own account is
    admitted (its identity policies would decide, and the test bed models none: as if they
    allowed) and anyone else (another account, a service principal) is refused ("Policy
    evaluation for requests within a single account", "Cross-account policy evaluation logic")."""
    decision = decide(document, action, resource, caller, context)
    if decision is not None:
        return decision == "Allow"
    return caller.service is None and caller.account == resource_account
