"""Region opt-in per account (AWS Account Management), which moto 5.2.5 lacks, and
ECR replication refusing a Region either account has not opted in to.

moto 5.2.5's ``account`` service has only the alternate contacts: a request to
``POST /getRegionOptStatus`` finds no route (HTTP 404). AWS facts reproduced
(AWS Account Management API Reference: ``GetRegionOptStatus``,
``ListRegions``, ``EnableRegion``, ``DisableRegion``, ``Region``; Reference
Guide, "Enable or disable AWS Regions in your account"; member names,
constraints and errors as in botocore's ``account`` model):

- "Regions launched before March 20, 2019 are enabled by default ... Default
  Regions cannot be enabled or disabled"; "Regions launched after March 20,
  2019 are disabled by default and referred to as opt-in Regions ... you
  must first enable them in your AWS account". Opt-in status is per account:
  ``GetRegionOptStatus`` {``RegionName``, ``AccountId``?} answers
  {``RegionName``, ``RegionOptStatus``} with ``ENABLED_BY_DEFAULT`` for a
  default Region and ``DISABLED`` for an opt-in Region nobody enabled (enum
  ``ENABLED | ENABLING | DISABLING | DISABLED | ENABLED_BY_DEFAULT``).
- ``EnableRegion`` answers an empty 200; "AWS performs actions to prepare
  your account in that Region ... This process takes a few minutes for most
  accounts, but it can take several hours. You cannot use the Region until
  this process is complete. Furthermore, you cannot disable the Region until
  the enabling process is fully completed": ``ENABLING``, then ``ENABLED``.
  ``DisableRegion`` likewise: ``DISABLING``, then ``DISABLED``, "You cannot
  enable the Region until the disabling process is fully completed".
  ``ConflictException`` (409): "if you try to enable a Region that is
  currently being disabled (in a status of DISABLING)"; ``ValidationException``
  has the reason ``invalidRegionOptTarget``.
- ``ListRegions`` {``AccountId``?, ``MaxResults`` 1..50, ``NextToken``,
  ``RegionOptStatusContains``} answers {``Regions`` [{``RegionName``,
  ``RegionOptStatus``}], ``NextToken``?}.
- ``AccountId``: "If you don't specify this parameter, it defaults to the
  Amazon Web Services account of the identity used to call the operation. To
  use this parameter, the caller must be an identity in the organization's
  management account or a delegated administrator account. The specified
  account ID must be a member account in the same organization. The
  organization must have all features enabled, and the organization must
  have trusted access enabled for the Account Management service"; "The
  management account can't specify its own AccountId". Checked against
  moto's Organizations state: the caller is the management account of an
  organization with ``FeatureSet`` ALL, ``account.amazonaws.com`` trusted
  access enabled, and the account a member; otherwise
  ``AccessDeniedException`` (403).
- ECR User Guide, "Private image replication", considerations: "For
  cross-Region replication to occur, both the source and destination
  accounts must be opted-in to the Region prior to any replication actions
  occurring within or to that Region": ``replication.replicate`` (pushes,
  restores and backfills alike) fails a replication whose destination Region
  is not ``ENABLED`` or ``ENABLED_BY_DEFAULT`` in the source account or in
  the destination account, at the moment it runs.

Our assumptions (undocumented):
- The opt-in Regions are the Regions of botocore's ``aws`` partition launched
  after March 20, 2019 (``OPT_IN_REGIONS``); every other Region of the
  partition is ``ENABLED_BY_DEFAULT``. A ``RegionName`` outside the partition
  is ``ValidationException`` (reason ``fieldValidationFailed``); the
  replication engine treats a Region it does not know as enabled.
- ``EnableRegion``/``DisableRegion`` of a default Region:
  ``ValidationException`` (reason ``invalidRegionOptTarget``). Enabling a
  Region that is ``ENABLED`` or ``ENABLING`` (disabling one that is
  ``DISABLED`` or ``DISABLING``) succeeds and changes nothing; disabling one
  that is ``ENABLING`` is ``ConflictException``.
- A transition lasts ``region_opt_in_seconds`` (``/_localaws/replication``,
  default 0: done at once on the replication thread, kind ``region-opt-in``;
  ``flush`` with ``source_account`` the account completes it; not held by
  ``paused``).
- The failed replication's ``failureCode`` is ``REGION_NOT_ENABLED`` (ECR
  documents no values); its ``ECR Replication Action`` FAILED event is sent
  like any other failure's. API calls in a Region the account has not
  enabled are not refused (only replication is).
- ``AccountId`` equal to the caller's own account: ``ValidationException`` for
  a management account (the documented "can't"), the caller's own status
  otherwise. Delegated administrators are not modelled (moto 5.2.5 cannot
  register one for ``account.amazonaws.com``).
- ``ListRegions`` lists in Region name order; ``NextToken`` is opaque
  (``paging``), an invalid one is ``ValidationException``.
"""

from __future__ import annotations

import time
from typing import Any

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult, EmptyResult

from . import paging, store

ENABLED, ENABLING, DISABLING, DISABLED, ENABLED_BY_DEFAULT = (
    "ENABLED", "ENABLING", "DISABLING", "DISABLED", "ENABLED_BY_DEFAULT")
STATUSES = (ENABLED, ENABLING, DISABLING, DISABLED, ENABLED_BY_DEFAULT)
ALLOWS_REPLICATION = (ENABLED, ENABLED_BY_DEFAULT)
FAILURE_CODE = "REGION_NOT_ENABLED"
TRUSTED_SERVICE = "account.amazonaws.com"

# Launched after March 20, 2019, so disabled by default ("Enable or disable AWS Regions in
# your account"); the Regions of botocore's aws partition not listed are default Regions.
OPT_IN_REGIONS = frozenset({
    "af-south-1", "ap-east-1", "ap-east-2", "ap-south-2", "ap-southeast-3", "ap-southeast-4",
    "ap-southeast-5", "ap-southeast-6", "ap-southeast-7", "ca-west-1", "eu-central-2",
    "eu-south-1", "eu-south-2", "il-central-1", "me-central-1", "me-south-1", "mx-central-1",
})

# account -> {opt-in Region: status}, for the Regions whose status was changed
_status: dict[str, dict[str, str]] = {}
_partition_regions: list[str] = []


class AccessDeniedException(ServiceException):
    code = "AccessDeniedException"


class ConflictException(ServiceException):
    code = "ConflictException"


class ValidationException(ServiceException):
    code = "ValidationException"

    def __init__(self, message: str, reason: str = "fieldValidationFailed") -> None:
        super().__init__(message)
        self.reason = reason


def _reset() -> None:
    _status.clear()


def partition_regions() -> list[str]:
    """The Regions of the ``aws`` partition, from botocore's endpoint data."""
    if not _partition_regions:
        import botocore.session

        endpoints = botocore.session.get_session().get_data("endpoints")
        aws = next(p for p in endpoints["partitions"] if p["partition"] == "aws")
        _partition_regions.extend(sorted(aws["regions"]))
    return _partition_regions


def status(account: str, region: str) -> str:
    """The opt-in status of ``region`` for ``account``."""
    if region not in OPT_IN_REGIONS:
        return ENABLED_BY_DEFAULT
    with store.LOCK:
        return _status.get(account, {}).get(region, DISABLED)


def allows_replication(account: str, region: str) -> bool:
    """``account`` has opted in to ``region`` (or never had to): ECR may replicate there."""
    return status(account, region) in ALLOWS_REPLICATION


def set_status(account: str, region: str, value: str) -> None:
    with store.LOCK:
        _status.setdefault(account, {})[region] = value


# --- the API ---------------------------------------------------------------------

def _target_account(self: Any, operation: str) -> str:
    """The account the call is about: the caller's, or ``AccountId`` when the caller may
    act on it through Organizations."""
    caller = self.current_account
    wanted = self._get_param("AccountId")
    if wanted is None:
        return caller
    if not isinstance(wanted, str) or len(wanted) != 12 or not wanted.isdigit():
        raise ValidationException(
            f"1 validation error detected: Value '{wanted}' at 'accountId' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: \\d{12}")
    from moto.organizations.models import organizations_backends

    org_backend = organizations_backends[caller]["aws"]
    org = org_backend.org
    management = org is not None and org.master_account_id == caller
    if wanted == caller:
        if management:
            raise ValidationException(
                "The management account can't specify its own AccountId; call the operation "
                "without AccountId")
        return caller
    member = management and any(a.id == wanted for a in org_backend.accounts)
    trusted = any(s.get("ServicePrincipal") == TRUSTED_SERVICE for s in org_backend.services)
    if not (member and org.feature_set == "ALL" and trusted):
        raise AccessDeniedException(
            f"User: arn:aws:iam::{caller}:root is not authorized to perform: account:{operation} "
            f"on resource: arn:aws:account::{caller}:account/{wanted} (the caller must be the "
            "management account of an organization with all features and trusted access for "
            "account.amazonaws.com, and the account a member of it)")
    return wanted


def _region_param(self: Any) -> str:
    region = self._get_param("RegionName")
    if not isinstance(region, str) or not 1 <= len(region) <= 50:
        raise ValidationException(
            f"1 validation error detected: Value '{region}' at 'regionName' failed to satisfy "
            "constraint: Member must have length between 1 and 50")
    if region not in partition_regions():
        raise ValidationException(f"{region} is not a valid Region name")
    return region


def get_region_opt_status(self: Any) -> ActionResult:
    account = _target_account(self, "GetRegionOptStatus")
    region = _region_param(self)
    return ActionResult({"RegionName": region, "RegionOptStatus": status(account, region)})


def _transition(self: Any, operation: str, to: str) -> EmptyResult:
    from . import replication

    account = _target_account(self, operation)
    region = _region_param(self)
    if region not in OPT_IN_REGIONS:
        raise ValidationException(
            f"{region} is enabled by default and cannot be enabled or disabled",
            reason="invalidRegionOptTarget")
    done = ENABLED if to == ENABLING else DISABLED
    opposite = DISABLING if to == ENABLING else ENABLING
    with store.LOCK:
        current = status(account, region)
        if current == opposite:
            raise ConflictException(
                f"{region} is {current} in account {account}: wait until that completes")
        if current in (to, done):
            return EmptyResult()
        set_status(account, region, to)
        replication.schedule(replication.Job(
            due=time.monotonic() + replication.setting("region_opt_in_seconds"),
            source=(account, region, "", ""), dest=(region, account), snapshot={},
            runner=_complete, kind="region-opt-in", pausable=False,
        ))
    return EmptyResult()


def _complete(job: Any) -> None:
    """The end of an enabling or disabling (a replication job's runner, under store.LOCK)."""
    account, region = job.source[0], job.source[1]
    current = status(account, region)
    if current in (ENABLING, DISABLING):
        set_status(account, region, ENABLED if current == ENABLING else DISABLED)


def enable_region(self: Any) -> EmptyResult:
    return _transition(self, "EnableRegion", ENABLING)


def disable_region(self: Any) -> EmptyResult:
    return _transition(self, "DisableRegion", DISABLING)


def list_regions(self: Any) -> ActionResult:
    account = _target_account(self, "ListRegions")
    wanted = self._get_param("RegionOptStatusContains")
    if wanted is not None and (not isinstance(wanted, list) or any(s not in STATUSES for s in wanted)):
        raise ValidationException(
            f"1 validation error detected: Value '{wanted}' at 'regionOptStatusContains' failed "
            f"to satisfy constraint: Member must satisfy enum value set: [{', '.join(STATUSES)}]")
    max_results = self._get_param("MaxResults")
    if max_results is not None and (isinstance(max_results, bool) or not isinstance(max_results, int)
                                    or not 1 <= max_results <= 50):
        raise ValidationException(
            f"1 validation error detected: Value '{max_results}' at 'maxResults' failed to "
            "satisfy constraint: Member must have value between 1 and 50")
    regions = [{"RegionName": r, "RegionOptStatus": status(account, r)} for r in partition_regions()]
    if wanted:
        regions = [r for r in regions if r["RegionOptStatus"] in wanted]
    scope = {"op": "ListRegions", "account": account, "statuses": sorted(wanted or [])}
    try:
        offset = paging.offset(self._get_param("NextToken"), scope)
    except Exception as err:  # paging's own error is ECR's; this API says ValidationException
        raise ValidationException(f"Invalid NextToken: {err}") from None
    page, token = paging.page(regions, offset, max_results or 50, scope)
    out: dict[str, Any] = {"Regions": page}
    if token:
        out["NextToken"] = token
    return ActionResult(out)


def install() -> None:
    from moto.account import urls
    from moto.account.responses import AccountResponse

    # Routes for moto's account app (built from these paths at its first request).
    for path in ("getRegionOptStatus", "listRegions", "enableRegion", "disableRegion"):
        urls.url_paths[f"{{0}}/{path}$"] = AccountResponse.dispatch
    AccountResponse.get_region_opt_status = get_region_opt_status  # type: ignore[attr-defined]
    AccountResponse.list_regions = list_regions  # type: ignore[attr-defined]
    AccountResponse.enable_region = enable_region  # type: ignore[attr-defined]
    AccountResponse.disable_region = disable_region  # type: ignore[attr-defined]
    store.on_reset(_reset)
