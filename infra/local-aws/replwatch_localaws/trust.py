"""STS ``AssumeRole`` that honours role trust policies, in accounts that have roles.

moto 5.2.5 lets anyone assume any role ARN, existing or not
(``moto.sts.models.STSBackend.assume_role``). The test bed keeps that for
accounts that have no IAM role at all, so tests can act "as account B" without
setting IAM up. An account with at least one IAM role (created through IAM,
i.e. the test set its IAM up) gets AWS's answer instead (IAM User Guide,
"Policy evaluation logic" for a role trust policy, a resource-based policy):

- the role must exist in that account, else ``AccessDenied`` ("User: … is not
  authorized to perform: sts:AssumeRole on resource: …"), the message AWS gives
  for a missing role and for a refused one alike;
- a statement applies when it names the action ``sts:AssumeRole`` (or
  ``sts:*`` / ``*``), a principal covering the caller (``"*"``,
  ``{"AWS": "*"}``, the caller's account id or ``arn:aws:iam::<account>:root``,
  or the caller's own principal ARN: for a caller using an assumed role's
  credentials, that role's ARN, as ``aws:PrincipalArn`` gives it), and its
  conditions hold (``policies.condition_met``, fail closed: what it cannot
  evaluate makes an ``Allow`` not apply and a ``Deny`` apply) for ``sts:ExternalId``
  and the keys of ``policies.request_context`` (``aws:PrincipalArn``,
  ``aws:PrincipalAccount``, ``aws:PrincipalOrgID``, ``aws:PrincipalType``
  ``Account`` or ``AssumedRole``, ``aws:SecureTransport`` ``false``,
  ``aws:ResourceAccount``…); other keys are absent from the request;
- a ``Deny`` that applies refuses; otherwise an ``Allow`` that applies admits.
"""

from __future__ import annotations

import json
from typing import Any

from .policies import Caller, as_list, request_context, statement_applies


def trust_admits(document: str, caller_account: str, caller_arn: str | None,
                 external_id: str | None, role_arn: str | None = None) -> bool:
    """Whether the trust policy of the role ``role_arn`` lets the caller (its account, and its
    role's ARN when it calls with an assumed role's credentials) assume it."""
    try:
        policy = json.loads(document)
    except (TypeError, ValueError):
        return False
    if not isinstance(policy, dict):
        return False
    caller = Caller(account=caller_account, role_arn=caller_arn)
    parts = (role_arn or "").split(":")
    context = request_context(caller, parts[4] if len(parts) > 5 else None,
                              extra={"sts:externalid": external_id})
    applying = {statement.get("Effect") for statement in as_list(policy.get("Statement"))
                if isinstance(statement, dict)
                and statement_applies(statement, "sts:AssumeRole", role_arn or "*", caller, context)}
    return "Allow" in applying and "Deny" not in applying


def caller_role_arn(access_key_id: str) -> str | None:
    """The ARN of the role whose temporary credentials carry ``access_key_id`` (None: the
    caller is an account's root, as the test bed's 12-digit keys are)."""
    from moto.sts.models import sts_backends

    for per_account in list(dict.values(sts_backends)):
        for backend in list(dict.values(per_account)):
            role = backend.get_assumed_role_from_access_key(access_key_id)
            if role is not None:
                return str(role.role_arn)
    return None


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
                role.assume_role_policy_document, caller, caller_role_arn(self.get_access_key()),
                self._get_param("ExternalId"), role_arn)
            if not admitted:
                raise STSClientError(
                    "AccessDenied",
                    f"User: arn:aws:iam::{caller}:root is not authorized to perform: "
                    f"sts:AssumeRole on resource: {role_arn}",
                )
        return original(self)

    TokenResponse.assume_role = assume_role  # type: ignore[method-assign]
