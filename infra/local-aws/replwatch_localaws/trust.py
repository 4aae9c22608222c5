"""STS ``AssumeRole`` that honours role trust policies, in accounts that have roles.

moto 5.2.5 lets anyone assume any role ARN, existing or not
(``moto.sts.models.STSBackend.assume_role``). The test bed keeps that for
accounts that have no IAM role at all, so tests can act "as account B" without
setting IAM up. An account with at least one IAM role (created through IAM,
i.e. the test set its IAM up) gets AWS's answer instead:

- the role must exist in that account, else ``AccessDenied`` ("User: … is not
  authorized to perform: sts:AssumeRole on resource: …"), the message AWS gives
  for a missing role and for a refused one alike;
- an ``Allow`` statement of its trust policy (``AssumeRolePolicyDocument``) must
  name the action ``sts:AssumeRole`` (or ``sts:*`` / ``*``) and a principal
  covering the caller: ``"*"``, ``{"AWS": "*"}``, the caller's account id, its
  ``arn:aws:iam::<account>:root``, or the caller's own ARN;
- a ``StringEquals`` condition on ``sts:ExternalId`` must equal the request's
  ``ExternalId``. Other condition keys are not evaluated (they are taken as met).

``Deny`` statements are not evaluated: trust policies rarely have them.
"""

from __future__ import annotations

import json
from typing import Any

_ACTIONS = {"sts:assumerole", "sts:*", "*"}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _principal_admits(principal: Any, caller_account: str, caller_arn: str | None) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    for value in _as_list(principal.get("AWS")):
        if value in ("*", caller_account, caller_arn):
            return True
        if isinstance(value, str) and value.endswith(f":iam::{caller_account}:root"):
            return True
    return False


def _external_id_met(condition: Any, external_id: str | None) -> bool:
    if not isinstance(condition, dict):
        return True
    for operator, keys in condition.items():
        if not isinstance(keys, dict):
            continue
        for key, wanted in keys.items():
            if key.lower() != "sts:externalid":
                continue
            if operator != "StringEquals":
                continue
            if external_id not in _as_list(wanted):
                return False
    return True


def trust_admits(document: str, caller_account: str, caller_arn: str | None,
                 external_id: str | None) -> bool:
    """Whether the trust policy lets the caller assume the role."""
    try:
        policy = json.loads(document)
    except (TypeError, ValueError):
        return False
    for statement in _as_list(policy.get("Statement")):
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        actions = {a.lower() for a in _as_list(statement.get("Action")) if isinstance(a, str)}
        if not actions & _ACTIONS:
            continue
        if not _principal_admits(statement.get("Principal"), caller_account, caller_arn):
            continue
        if _external_id_met(statement.get("Condition"), external_id):
            return True
    return False


def _roles_of(account: str) -> dict[str, Any]:
    from moto.iam.models import iam_backends

    # Plain dict lookups: indexing a BackendDict creates the account's IAM backend (slow, and
    # every test account would get one).
    per_account = dict.get(iam_backends, account)
    backend = dict.get(per_account, "aws") if per_account is not None else None
    if backend is None:
        return {}
    return {role.name: role for role in backend.roles.values()}


def install() -> None:
    from moto.sts.exceptions import STSClientError
    from moto.sts.responses import TokenResponse

    original = TokenResponse.assume_role

    def assume_role(self: Any) -> Any:
        role_arn = self._get_param("RoleArn") or ""
        parts = role_arn.split(":")
        target_account = parts[4] if len(parts) > 5 else ""
        roles = _roles_of(target_account)
        if roles:
            caller = self.current_account
            name = parts[5].split("/")[-1] if len(parts) > 5 else ""
            role = roles.get(name)
            admitted = role is not None and trust_admits(
                role.assume_role_policy_document, caller, None, self._get_param("ExternalId"))
            if not admitted:
                raise STSClientError(
                    "AccessDenied",
                    f"User: arn:aws:iam::{caller}:root is not authorized to perform: "
                    f"sts:AssumeRole on resource: {role_arn}",
                )
        return original(self)

    TokenResponse.assume_role = assume_role  # type: ignore[method-assign]
