"""Policy condition blocks, evaluated as IAM does for the keys the test bed knows.

IAM JSON policy reference, "Condition operators" and "Condition with multiple
keys or values": every operator of a ``Condition`` block and every key under
it must be met (AND); a key with several values is met by any of them (OR).
A key absent from the request context does not match, so its condition is not
met, except with the ``…IfExists`` form of an operator and with the negated
string operators (``StringNotEquals`` and ``StringNotLike`` match an absent
key). Operators: ``StringEquals``, ``StringNotEquals``,
``StringEqualsIgnoreCase``, ``StringLike``, ``StringNotLike`` (``*`` and ``?``
wildcards), ``ArnEquals``, ``ArnLike`` (as ``StringLike``), ``ArnNotEquals``,
``ArnNotLike``, ``Bool``, each with ``IfExists``. Any other operator is taken
as not met, so a policy the test bed cannot read refuses rather than admits.

Used by ``eventbridge`` (event bus resource policies) and ``trust`` (role
trust policies).
"""

from __future__ import annotations

import fnmatch
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


def _matches(base: str, value: str, wanted: list[str]) -> bool:
    if base in ("StringEquals", "StringNotEquals", "ArnEquals", "ArnNotEquals", "Bool"):
        return value in wanted if base != "Bool" else value.lower() in [w.lower() for w in wanted]
    if base == "StringEqualsIgnoreCase":
        return value.lower() in [w.lower() for w in wanted]
    return any(fnmatch.fnmatchcase(value, w) for w in wanted)  # …Like


_KNOWN = {"StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringLike", "StringNotLike",
          "ArnEquals", "ArnNotEquals", "ArnLike", "ArnNotLike", "Bool"}


def condition_met(condition: Any, context: dict[str, str | None]) -> bool:
    """Whether a statement's ``Condition`` block holds for ``context`` (keys lower case;
    None or missing: absent from the request)."""
    if condition is None:
        return True
    if not isinstance(condition, dict):
        return False
    for operator, keys in condition.items():
        base = operator.removesuffix("IfExists")
        if base not in _KNOWN or not isinstance(keys, dict):
            return False
        negated = "Not" in base
        for key, wanted in keys.items():
            value = context.get(key.lower())
            if value is None:
                if operator.endswith("IfExists") or negated:
                    continue
                return False
            hit = _matches(base.replace("Not", ""), value, [str(w) for w in as_list(wanted)])
            if hit == negated:
                return False
    return True
