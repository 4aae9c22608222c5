"""ECR repository creation templates, which moto 5.2.5 lacks (HTTP 500).

AWS facts reproduced (ECR API Reference: CreateRepositoryCreationTemplate,
DescribeRepositoryCreationTemplates, UpdateRepositoryCreationTemplate,
DeleteRepositoryCreationTemplate, RepositoryCreationTemplate; User Guide,
"Templates to control repositories created during a pull through cache or
replication action"; member names, constraints and errors as in botocore's
ECR model):

- A template belongs to a registry (account and Region) and is named by its
  ``prefix`` (1..256 characters, the repository name pattern, optionally
  ending in ``/``, or ``ROOT``). "There is always an assumed / applied to the
  end of the prefix": ``prod`` applies to repositories beginning with
  ``prod/``; ``ROOT`` to every repository no other template matches.
- Members: ``prefix``, ``description`` (≤ 256), ``encryptionConfiguration``
  {``encryptionType`` AES256|KMS|KMS_DSSE, ``kmsKey``?}, ``resourceTags``
  [{``Key``, ``Value``}], ``imageTagMutability`` (MUTABLE when omitted),
  ``imageTagMutabilityExclusionFilters`` (1..5 ``WILDCARD`` filters),
  ``repositoryPolicy`` (≤ 10240), ``lifecyclePolicy`` (≤ 30720),
  ``appliedFor`` [REPLICATION|PULL_THROUGH_CACHE|CREATE_ON_PUSH] (required on
  create), ``customRoleArn`` (≤ 2048), ``createdAt``, ``updatedAt``.
- Create/Update/Delete answer ``registryId`` + ``repositoryCreationTemplate``;
  Describe answers ``registryId`` + ``repositoryCreationTemplates``, filtered
  by ``prefixes``, paged by ``maxResults`` (1..1000, default 100) and an opaque
  ``nextToken``.
- Errors: ``TemplateAlreadyExistsException`` (create, prefix taken),
  ``TemplateNotFoundException`` (update/delete), ``ValidationException``
  (a member outside its modeled constraints).
- "The settings in a repository creation template are only applied during
  repository creation": ``replication`` applies the destination registry's
  matching REPLICATION template when it creates a missing destination
  repository (``for_new_repository``).

Our assumptions (undocumented):
- Among several matching templates the longest prefix wins; ``ROOT`` only
  when no other one matches. ``prod`` and ``prod/`` are the same template.
- Update changes only the members it is given (a new ``imageTagMutability``
  without exclusion filters drops the old filters unless it is a
  ``*_WITH_EXCLUSION`` value). An empty ``appliedFor`` is a
  ``ValidationException`` (the model sets no minimum).
- Exclusion filters with a non-``*_WITH_EXCLUSION`` mutability, or the other
  way round: ``InvalidParameterException``, as for CreateRepository. Policy
  texts are stored, not validated; no limit on the number of templates; a
  ``customRoleArn`` is not required for KMS or resource tags.
- Describe lists templates in prefix order; unknown ``prefixes`` are left
  out (the operation has no not-found error); an invalid ``nextToken`` is
  ``InvalidParameterException``.
"""

from __future__ import annotations

import copy
import re
from datetime import datetime, timezone
from typing import Any

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult

from . import paging, store

ROOT = "ROOT"
APPLIED_FOR = ("REPLICATION", "PULL_THROUGH_CACHE", "CREATE_ON_PUSH")
MUTABILITIES = ("MUTABLE", "IMMUTABLE", "IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION")
WITH_EXCLUSION = ("IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION")
ENCRYPTION_TYPES = ("AES256", "KMS", "KMS_DSSE")
_PREFIX = re.compile(
    r"^([a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*\/?|ROOT)$"
)
_KMS_KEY = re.compile(r"^$|arn:aws[a-z0-9-]*:kms:[a-z0-9-]+:[0-9]{12}:key\/[a-z0-9-]+")
_FILTER = re.compile(r"^[0-9a-zA-Z._*-]{1,128}$")
# Member -> max length (strings without a pattern).
_MAX_LEN = {"description": 256, "repositoryPolicy": 10240, "lifecyclePolicy": 30720, "customRoleArn": 2048}


class ValidationException(ServiceException):
    code = "ValidationException"


class InvalidParameterException(ServiceException):
    code = "InvalidParameterException"


class TemplateAlreadyExistsException(ServiceException):
    code = "TemplateAlreadyExistsException"


class TemplateNotFoundException(ServiceException):
    code = "TemplateNotFoundException"


# (account, region) -> {normalized prefix: template (API shape, datetimes)}
_templates: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}


def _reset() -> None:
    _templates.clear()


def _norm(prefix: str) -> str:
    return prefix if prefix == ROOT else prefix.rstrip("/")


def _invalid(value: Any, member: str, constraint: str) -> ValidationException:
    return ValidationException(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        f"constraint: {constraint}"
    )


def _check_prefix(value: Any, member: str = "prefix") -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 256 or not _PREFIX.match(value):
        raise _invalid(value, member, f"Member must satisfy regular expression pattern: {_PREFIX.pattern}")
    return value


def _check_members(params: dict[str, Any]) -> None:
    """Modeled constraints of the optional members present in ``params``."""
    for member, limit in _MAX_LEN.items():
        value = params.get(member)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise _invalid(value, member, f"Member must have length less than or equal to {limit}")
    enc = params.get("encryptionConfiguration")
    if enc is not None:
        if not isinstance(enc, dict) or enc.get("encryptionType") not in ENCRYPTION_TYPES:
            raise _invalid(enc.get("encryptionType") if isinstance(enc, dict) else enc,
                           "encryptionConfiguration.encryptionType",
                           f"Member must satisfy enum value set: [{', '.join(ENCRYPTION_TYPES)}]")
        key = enc.get("kmsKey")
        if key is not None and (not isinstance(key, str) or len(key) > 2048 or not _KMS_KEY.match(key)):
            raise _invalid(key, "encryptionConfiguration.kmsKey",
                           f"Member must satisfy regular expression pattern: {_KMS_KEY.pattern}")
    tags = params.get("resourceTags")
    if tags is not None:
        if not isinstance(tags, list) or not all(
            isinstance(t, dict) and isinstance(t.get("Key"), str) and isinstance(t.get("Value"), str)
            for t in tags
        ):
            raise _invalid(tags, "resourceTags", "Member must be a list of tags with a Key and a Value")
    mutability = params.get("imageTagMutability")
    if mutability is not None and mutability not in MUTABILITIES:
        raise _invalid(mutability, "imageTagMutability",
                       f"Member must satisfy enum value set: [{', '.join(MUTABILITIES)}]")
    filters = params.get("imageTagMutabilityExclusionFilters")
    if filters is not None:
        if not isinstance(filters, list) or not 1 <= len(filters) <= 5:
            raise _invalid(filters, "imageTagMutabilityExclusionFilters",
                           "Member must have length between 1 and 5")
        for f in filters:
            if not isinstance(f, dict) or f.get("filterType") != "WILDCARD":
                raise _invalid(f.get("filterType") if isinstance(f, dict) else f,
                               "imageTagMutabilityExclusionFilters.member.filterType",
                               "Member must satisfy enum value set: [WILDCARD]")
            if not isinstance(f.get("filter"), str) or not _FILTER.match(f["filter"]):
                raise _invalid(f.get("filter"), "imageTagMutabilityExclusionFilters.member.filter",
                               f"Member must satisfy regular expression pattern: {_FILTER.pattern}")
    applied = params.get("appliedFor")
    if applied is not None:
        if not isinstance(applied, list) or any(a not in APPLIED_FOR for a in applied):
            raise _invalid(applied, "appliedFor",
                           f"Member must satisfy enum value set: [{', '.join(APPLIED_FOR)}]")


def _check_mutability_filters(template: dict[str, Any]) -> None:
    mutability = template["imageTagMutability"]
    filters = template.get("imageTagMutabilityExclusionFilters")
    if (filters and mutability not in WITH_EXCLUSION) or (not filters and mutability in WITH_EXCLUSION):
        raise InvalidParameterException(
            "Invalid parameter at 'imageTagMutabilityExclusionFilters' failed to satisfy constraint: "
            f"'ImageTagMutabilityExclusionFilters can only be set, and must be set, when "
            f"imageTagMutability is {' or '.join(WITH_EXCLUSION)}' (imageTagMutability is {mutability})"
        )


_SETTABLE = ("description", "encryptionConfiguration", "resourceTags", "imageTagMutability",
             "imageTagMutabilityExclusionFilters", "repositoryPolicy", "lifecyclePolicy",
             "appliedFor", "customRoleArn")


def _params(self: Any) -> dict[str, Any]:
    return {m: copy.deepcopy(self._get_param(m)) for m in _SETTABLE if self._get_param(m) is not None}


def _out(registry: tuple[str, str], template: dict[str, Any]) -> ActionResult:
    return ActionResult({"registryId": registry[0], "repositoryCreationTemplate": copy.deepcopy(template)})


def _registry(self: Any) -> tuple[str, str]:
    return (self.current_account, self.region)


def _not_found(registry: tuple[str, str], prefix: str) -> TemplateNotFoundException:
    return TemplateNotFoundException(
        f"The repository creation template with prefix '{prefix}' does not exist in the registry "
        f"with id '{registry[0]}'"
    )


def create_repository_creation_template(self: Any) -> ActionResult:
    registry = _registry(self)
    prefix = _check_prefix(self._get_param("prefix"))
    params = _params(self)
    if "appliedFor" not in params:
        raise _invalid(None, "appliedFor", "Member must not be null")
    _check_members(params)
    if not params["appliedFor"]:
        raise _invalid([], "appliedFor", "Member must have length greater than or equal to 1")
    now = datetime.now(timezone.utc)
    template: dict[str, Any] = {
        "prefix": prefix,
        "imageTagMutability": "MUTABLE",
        "encryptionConfiguration": {"encryptionType": "AES256"},
        "resourceTags": [],
        **params,
        "appliedFor": list(dict.fromkeys(params["appliedFor"])),
        "createdAt": now,
        "updatedAt": now,
    }
    _check_mutability_filters(template)
    with store.LOCK:
        mine = _templates.setdefault(registry, {})
        if _norm(prefix) in mine:
            raise TemplateAlreadyExistsException(
                f"A repository creation template with prefix '{prefix}' already exists in the "
                f"registry with id '{registry[0]}'"
            )
        mine[_norm(prefix)] = template
        return _out(registry, template)


def update_repository_creation_template(self: Any) -> ActionResult:
    registry = _registry(self)
    prefix = _check_prefix(self._get_param("prefix"))
    params = _params(self)
    _check_members(params)
    if "appliedFor" in params:
        if not params["appliedFor"]:
            raise _invalid([], "appliedFor", "Member must have length greater than or equal to 1")
        params["appliedFor"] = list(dict.fromkeys(params["appliedFor"]))
    with store.LOCK:
        current = _templates.get(registry, {}).get(_norm(prefix))
        if current is None:
            raise _not_found(registry, prefix)
        updated = {**current, **params}
        if ("imageTagMutability" in params and "imageTagMutabilityExclusionFilters" not in params
                and params["imageTagMutability"] not in WITH_EXCLUSION):
            updated.pop("imageTagMutabilityExclusionFilters", None)
        _check_mutability_filters(updated)
        updated["updatedAt"] = datetime.now(timezone.utc)
        _templates[registry][_norm(prefix)] = updated
        return _out(registry, updated)


def delete_repository_creation_template(self: Any) -> ActionResult:
    registry = _registry(self)
    prefix = _check_prefix(self._get_param("prefix"))
    with store.LOCK:
        template = _templates.get(registry, {}).pop(_norm(prefix), None)
        if template is None:
            raise _not_found(registry, prefix)
        return _out(registry, template)


def describe_repository_creation_templates(self: Any) -> ActionResult:
    registry = _registry(self)
    prefixes = self._get_param("prefixes")
    if prefixes is not None:
        if not isinstance(prefixes, list):
            raise _invalid(prefixes, "prefixes", "Member must be a list")
        for p in prefixes:
            _check_prefix(p, "prefixes.member")
    max_results = self._get_param("maxResults")
    if max_results is not None and (isinstance(max_results, bool) or not isinstance(max_results, int)
                                    or not 1 <= max_results <= 1000):
        raise _invalid(max_results, "maxResults",
                       "Member must have value less than or equal to 1000 and greater than or equal to 1")
    wanted = None if prefixes is None else {_norm(p) for p in prefixes}
    scope = {"op": "DescribeRepositoryCreationTemplates", "registry": list(registry),
             "prefixes": sorted(wanted) if wanted is not None else None}
    offset = paging.offset(self._get_param("nextToken"), scope)
    with store.LOCK:
        mine = _templates.get(registry, {})
        templates = [copy.deepcopy(mine[k]) for k in sorted(mine) if wanted is None or k in wanted]
    page, token = paging.page(templates, offset, max_results or 100, scope)
    out: dict[str, Any] = {"registryId": registry[0], "repositoryCreationTemplates": page}
    if token:
        out["nextToken"] = token
    return ActionResult(out)


def for_new_repository(account: str, region: str, repository: str, applied_for: str) -> dict[str, Any] | None:
    """The template of registry (``account``, ``region``) that applies to a
    repository ECR creates for ``applied_for``: the longest matching prefix,
    else ``ROOT``, else None. Call under store.LOCK."""
    best: dict[str, Any] | None = None
    best_len = -1
    for key, template in _templates.get((account, region), {}).items():
        if applied_for not in template.get("appliedFor", []):
            continue
        if key == ROOT:
            length = 0
        elif repository.startswith(key + "/"):
            length = len(key)
        else:
            continue
        if length > best_len:
            best, best_len = template, length
    return copy.deepcopy(best) if best is not None else None


def install() -> None:
    from moto.ecr.responses import ECRResponse

    ECRResponse.create_repository_creation_template = create_repository_creation_template  # type: ignore[attr-defined]
    ECRResponse.describe_repository_creation_templates = describe_repository_creation_templates  # type: ignore[attr-defined]
    ECRResponse.update_repository_creation_template = update_repository_creation_template  # type: ignore[attr-defined]
    ECRResponse.delete_repository_creation_template = delete_repository_creation_template  # type: ignore[attr-defined]
    store.on_reset(_reset)
