"""ECR replication backfill, which moto 5.2.5 answers with HTTP 500.

AWS facts reproduced (ECR API Reference: StartReplicationBackfill,
ListReplicationBackfills, DescribeReplicationBackfillResults,
StopReplicationBackfill; User Guide, "Replication backfill"; member names,
enums and error codes as in botocore's and aws-sdk-ecr 1.138's model):

- A backfill replicates a registry's *existing* images to one destination
  ``{region, registryId}``, which "must already be configured in the
  registry's replication configuration". Only
  images of repositories that the rules naming that destination select are
  included (``PREFIX_MATCH`` filters; a rule without filters selects all).
- "Only one replication backfill can be in progress for a given destination
  Region at a time" (``ReplicationBackfillInProgressException``), and "a
  registry can have at most 10 replication backfills in progress at once"
  (``LimitExceededException``). In progress = PREPARING, IN_PROGRESS, STOPPING.
- Statuses: PREPARING (identifying images; ``progress`` is null), IN_PROGRESS
  (``progress`` totals known), then COMPLETE, FAILED or, after
  StopReplicationBackfill, STOPPING (in-flight replications finish) and
  STOPPED. Only PREPARING and IN_PROGRESS can be stopped, else
  ``ReplicationBackfillInvalidStatusException``. A backfill "automatically
  fails if 50% or more of underlying replications fail", evaluated once at
  least 100 replications were processed.
- "Each image and tag combination is counted as a single replication":
  progress counts and per-image results are per (image, tag), an untagged
  image counting once. Results (``repositoryName``, ``imageId``
  {``imageDigest``, ``imageTag``}, ``status`` COMPLETE|FAILED, ``failureCode``,
  ``subImageFailureCodes`` for manifest lists only) are returned "only after
  the replication backfill reaches a terminal status"; ``resultStatusFilter``,
  ``maxResults`` (1..1000, default 100) and ``nextToken`` page them.
  ListReplicationBackfills pages summaries (``maxResults`` 1..50, default 25).

How it runs here: each replication is a job of the replication engine
(``replication``), so the destination's ``delay_seconds``, ``fail`` /
``failure_code`` and ``paused`` settings, ``/_localaws/replication/flush``
and the immutable-tag behaviour apply exactly as to a push's replication.

Our assumptions (undocumented on AWS):
- PREPARING lasts ``backfill_prepare_seconds`` (setting, default 0); it takes
  the images present at that moment, and the rules captured at the start.
  A paused destination does not hold PREPARING (only its replications).
- At most ``backfill_concurrency`` (setting, default 5) replications of one
  backfill are in flight (scheduled); the rest wait in a queue. Stopping drops
  the queue; the in-flight ones finish (STOPPING) unless there are none
  (STOPPED at once). Dropped replications have no result.
- A replication whose image (same digest, and the tag if any) is already in
  the destination repository counts COMPLETE without copying, even with the
  destination set to ``fail``.
- The 50 % rule is also applied when the last replication finishes,
  whatever the count: FAILED if at least half failed, else COMPLETE (results
  may then include FAILED ones). A FAILED backfill's ``failureCode`` is
  ``REPLICATION_FAILURE_THRESHOLD_EXCEEDED`` (the API documents no values).
  When the threshold trips early, the remaining replications are dropped.
- ``ValidationException`` for a destination outside the configuration (the
  docs require it to be configured but do not name the error).
- No ``ECR Replication Action`` events (the ECR events documentation does not
  mention backfills) and no change to DescribeImageReplicationStatus.
- Summaries are listed in start order; backfills are kept until reset (AWS:
  90 days after they end). ``registryId`` selects the registry without any
  permission check, like every other call here.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult

from . import replication, store

ACTIVE = ("PREPARING", "IN_PROGRESS", "STOPPING")
MAX_ACTIVE_PER_REGISTRY = 10
THRESHOLD_MIN_PROCESSED = 100
FAILURE_CODE = "REPLICATION_FAILURE_THRESHOLD_EXCEEDED"
INDEX_MEDIA_TYPES = ("application/vnd.oci.image.index.v1+json",
                     "application/vnd.docker.distribution.manifest.list.v2+json")
_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_REGISTRY = re.compile(r"[0-9]{12}")
_REGION = re.compile(r"[0-9a-z-]{2,25}")


class InvalidParameterException(ServiceException):
    code = "InvalidParameterException"


class ValidationException(ServiceException):
    code = "ValidationException"


class LimitExceededException(ServiceException):
    code = "LimitExceededException"


class ReplicationBackfillInProgressException(ServiceException):
    code = "ReplicationBackfillInProgressException"


class ReplicationBackfillNotFoundException(ServiceException):
    code = "ReplicationBackfillNotFoundException"


class ReplicationBackfillInvalidStatusException(ServiceException):
    code = "ReplicationBackfillInvalidStatusException"


@dataclass
class Item:
    """One replication: an image and one of its tags (None: untagged)."""
    index: int
    repository: str
    digest: str
    tag: str | None
    snapshot: dict[str, Any] = field(repr=False)
    is_index: bool = False


@dataclass
class Backfill:
    id: str
    registry: tuple[str, str]  # account, region
    dest: tuple[str, str]  # region, registryId
    selectors: list[list[str]]  # per rule naming dest: its prefixes ([] = all)
    started_at: datetime
    status: str = "PREPARING"
    ended_at: datetime | None = None
    failure_code: str | None = None
    total: int | None = None
    completed: int = 0
    failed: int = 0
    failure_codes: set[str] = field(default_factory=set)
    queue: deque[Item] = field(default_factory=deque)
    in_flight: int = 0
    results: dict[int, dict[str, Any]] = field(default_factory=dict)

    def selects(self, repository: str) -> bool:
        return any(not prefixes or any(repository.startswith(p) for p in prefixes)
                   for prefixes in self.selectors)

    def end(self, status: str, failure_code: str | None = None) -> None:
        self.status = status
        self.failure_code = failure_code
        self.ended_at = _now()
        self.queue.clear()

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "replicationBackfillId": self.id,
            "destination": {"region": self.dest[0], "registryId": self.dest[1]},
            "status": self.status,
        }
        if self.failure_code:
            out["failureCode"] = self.failure_code
        if self.total is not None:
            out["progress"] = {
                "totalReplicationCount": self.total,
                "completedReplicationCount": self.completed,
                "failedReplicationCount": self.failed,
                "failureCodes": sorted(self.failure_codes),
            }
        out["startedAt"] = self.started_at
        if self.ended_at is not None:
            out["endedAt"] = self.ended_at
        return out


# (account, region) -> backfills in start order
_backfills: dict[tuple[str, str], list[Backfill]] = {}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _reset() -> None:
    _backfills.clear()


def _active(registry: tuple[str, str]) -> list[Backfill]:
    return [b for b in _backfills.get(registry, []) if b.status in ACTIVE]


def _find(registry: tuple[str, str], backfill_id: str) -> Backfill:
    for b in _backfills.get(registry, []):
        if b.id == backfill_id:
            return b
    raise ReplicationBackfillNotFoundException(
        f"The replication backfill with ID '{backfill_id}' does not exist in the registry "
        f"with id '{registry[0]}' in Region '{registry[1]}'"
    )


def _is_job_of(b: Backfill) -> Any:
    return lambda job: job.backfill_id == b.id


# --- the engine (all under store.LOCK) -----------------------------------------

def _prepare(b: Backfill) -> None:
    from moto.ecr.models import ecr_backends

    if b.status != "PREPARING":
        return
    account, region = b.registry
    backend = ecr_backends[account][region]
    items: list[Item] = []
    for name in sorted(backend.repositories):
        if not b.selects(name):
            continue
        repo = backend.repositories[name]
        for image in list(repo.images):
            snap = replication.snapshot(account, region, repo, image)
            for tag in list(image.image_tags) or [None]:
                items.append(Item(len(items), name, image.image_digest, tag, snap,
                                  snap["media_type"] in INDEX_MEDIA_TYPES or bool(snap["children"])))
    b.total = len(items)
    b.queue = deque(items)
    b.status = "IN_PROGRESS"
    _dispatch(b)


def _dispatch(b: Backfill) -> None:
    """Schedule queued replications up to the concurrency; end when all are done."""
    now = time.monotonic()
    while b.status == "IN_PROGRESS" and b.queue and b.in_flight < replication.setting("backfill_concurrency"):
        item = b.queue.popleft()
        b.in_flight += 1
        replication.schedule(replication.Job(
            due=now + replication.delay_for(b.dest),
            source=(b.registry[0], b.registry[1], item.repository, item.digest),
            dest=b.dest, snapshot=item.snapshot, tag=item.tag,
            runner=lambda job, b=b, item=item: _replicated(b, item, job),
            kind="backfill", backfill_id=b.id,
        ))
    if b.status == "IN_PROGRESS" and not b.queue and b.in_flight == 0:
        total = b.total or 0
        if total and b.failed * 2 >= total:
            b.end("FAILED", FAILURE_CODE)
        else:
            b.end("COMPLETE")


def _replicated(b: Backfill, item: Item, job: replication.Job) -> None:
    """A replication job of ``b`` is due: do it, record its result, go on."""
    b.in_flight -= 1
    if b.status not in ("IN_PROGRESS", "STOPPING"):
        return
    if replication.already_replicated(b.dest, item.repository, item.digest, item.tag):
        status, code = "COMPLETE", None
    else:
        status, code = replication.replicate(job)
    result: dict[str, Any] = {"repositoryName": item.repository, "imageId": {"imageDigest": item.digest}}
    if item.tag:
        result["imageId"]["imageTag"] = item.tag
    result["status"] = status
    if status == "COMPLETE":
        b.completed += 1
    else:
        b.failed += 1
        b.failure_codes.add(code or "")
        result["failureCode"] = code
    if item.is_index:
        result["subImageFailureCodes"] = [code] if code else []
    b.results[item.index] = result

    if b.status == "STOPPING":
        if b.in_flight == 0:
            b.end("STOPPED")
        return
    processed = b.completed + b.failed
    if processed >= THRESHOLD_MIN_PROCESSED and b.failed * 2 >= processed:
        b.end("FAILED", FAILURE_CODE)
        b.in_flight = 0
        replication.unschedule(_is_job_of(b))
        return
    _dispatch(b)


# --- the API -------------------------------------------------------------------

def _registry(self: Any) -> tuple[str, str]:
    registry_id = self._get_param("registryId")
    if registry_id is not None and not (isinstance(registry_id, str) and _REGISTRY.fullmatch(registry_id)):
        raise InvalidParameterException(
            "Invalid parameter at 'registryId' failed to satisfy constraint: "
            "'must satisfy regular expression pattern: [0-9]{12}'"
        )
    return (registry_id or self.current_account, self.region)


def _backfill_id(self: Any) -> str:
    value = self._get_param("replicationBackfillId")
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidParameterException(
            "Invalid parameter at 'replicationBackfillId' failed to satisfy constraint: "
            f"'must satisfy regular expression pattern: {_ID.pattern}'"
        )
    return value


def _max_results(self: Any, lo: int, hi: int, default: int) -> int:
    value = self._get_param("maxResults")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidParameterException(
            f"Invalid parameter at 'maxResults' failed to satisfy constraint: "
            f"'Member must have value between {lo} and {hi}'"
        )
    return value


def _encode_token(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()


def _offset(self: Any, scope: dict[str, Any]) -> int:
    token = self._get_param("nextToken")
    if token is None:
        return 0
    try:
        state = json.loads(base64.urlsafe_b64decode(token.encode()))
        offset = state.pop("offset")
        if state != scope or not isinstance(offset, int) or offset < 0:
            raise ValueError
        return offset
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        raise InvalidParameterException("Invalid parameter at 'nextToken': the token is not valid")


def _page(items: list[Any], offset: int, limit: int, scope: dict[str, Any]) -> tuple[list[Any], str | None]:
    page = items[offset:offset + limit]
    more = offset + limit < len(items)
    return page, (_encode_token({**scope, "offset": offset + limit}) if more else None)


def start_replication_backfill(self: Any) -> ActionResult:
    from moto.ecr.models import ecr_backends

    registry = _registry(self)
    dest = self._get_param("destination")
    if (not isinstance(dest, dict) or not isinstance(dest.get("region"), str)
            or not isinstance(dest.get("registryId"), str) or not _REGION.fullmatch(dest["region"])
            or not _REGISTRY.fullmatch(dest["registryId"])):
        raise InvalidParameterException(
            "Invalid parameter at 'destination': a 'region' and a 12-digit 'registryId' are required"
        )
    target = (dest["region"], dest["registryId"])
    with store.LOCK:
        config = ecr_backends[registry[0]][registry[1]].replication_config or {}
        selectors = [
            [f["filter"] for f in rule.get("repositoryFilters") or []]
            for rule in config.get("rules") or []
            if any((d["region"], d["registryId"]) == target for d in rule.get("destinations") or [])
        ]
        if not selectors:
            raise ValidationException(
                f"The destination (region '{target[0]}', registryId '{target[1]}') is not a destination "
                f"of the replication configuration of the registry with id '{registry[0]}'"
            )
        active = _active(registry)
        if any(b.dest[0] == target[0] for b in active):
            raise ReplicationBackfillInProgressException(
                f"A replication backfill is already in progress for the destination Region '{target[0]}'"
            )
        if len(active) >= MAX_ACTIVE_PER_REGISTRY:
            raise LimitExceededException(
                f"The registry with id '{registry[0]}' already has {MAX_ACTIVE_PER_REGISTRY} "
                f"replication backfills in progress"
            )
        b = Backfill(str(uuid.uuid4()), registry, target, selectors, _now())
        _backfills.setdefault(registry, []).append(b)
        replication.schedule(replication.Job(
            due=time.monotonic() + replication.setting("backfill_prepare_seconds"),
            source=(registry[0], registry[1], "", ""), dest=target, snapshot={},
            runner=lambda job, b=b: _prepare(b),
            kind="backfill-prepare", backfill_id=b.id, pausable=False,
        ))
        summary = b.summary()
    return ActionResult({
        "replicationBackfillId": b.id,
        "registryId": registry[0],
        "destination": summary["destination"],
        "status": summary["status"],
        "startedAt": summary["startedAt"],
    })


def list_replication_backfills(self: Any) -> ActionResult:
    registry = _registry(self)
    limit = _max_results(self, 1, 50, 25)
    scope = {"registry": list(registry)}
    offset = _offset(self, scope)
    with store.LOCK:
        summaries = [b.summary() for b in _backfills.get(registry, [])]
    page, token = _page(summaries, offset, limit, scope)
    out: dict[str, Any] = {"registryId": registry[0], "backfills": page}
    if token:
        out["nextToken"] = token
    return ActionResult(out)


def describe_replication_backfill_results(self: Any) -> ActionResult:
    registry = _registry(self)
    backfill_id = _backfill_id(self)
    status_filter = self._get_param("resultStatusFilter")
    if status_filter is not None and status_filter not in ("COMPLETE", "FAILED"):
        raise InvalidParameterException(
            "Invalid parameter at 'resultStatusFilter' failed to satisfy constraint: "
            "'Member must satisfy enum value set: [COMPLETE, FAILED]'"
        )
    limit = _max_results(self, 1, 1000, 100)
    scope = {"backfill": backfill_id, "filter": status_filter}
    with store.LOCK:
        b = _find(registry, backfill_id)
        offset = _offset(self, scope)
        summary = b.summary()
        results = []
        if b.status not in ACTIVE:  # per-image results only once terminal
            results = [json.loads(json.dumps(b.results[i])) for i in sorted(b.results)
                       if status_filter is None or b.results[i]["status"] == status_filter]
    page, token = _page(results, offset, limit, scope)
    out: dict[str, Any] = {"registryId": registry[0], **summary, "results": page}
    if token:
        out["nextToken"] = token
    return ActionResult(out)


def stop_replication_backfill(self: Any) -> ActionResult:
    registry = _registry(self)
    backfill_id = _backfill_id(self)
    with store.LOCK:
        b = _find(registry, backfill_id)
        if b.status == "PREPARING":
            replication.unschedule(_is_job_of(b))
            b.end("STOPPED")
        elif b.status == "IN_PROGRESS":
            b.queue.clear()
            if b.in_flight:
                b.status = "STOPPING"
            else:
                b.end("STOPPED")
        else:
            raise ReplicationBackfillInvalidStatusException(
                f"The replication backfill with ID '{backfill_id}' is {b.status}; only a PREPARING "
                f"or IN_PROGRESS replication backfill can be stopped"
            )
        summary = b.summary()
    return ActionResult({
        "registryId": registry[0],
        "replicationBackfillId": b.id,
        "destination": summary["destination"],
        "status": summary["status"],
        "startedAt": summary["startedAt"],
    })


def install() -> None:
    from moto.ecr.responses import ECRResponse

    ECRResponse.start_replication_backfill = start_replication_backfill  # type: ignore[attr-defined]
    ECRResponse.list_replication_backfills = list_replication_backfills  # type: ignore[attr-defined]
    ECRResponse.describe_replication_backfill_results = describe_replication_backfill_results  # type: ignore[attr-defined]
    ECRResponse.stop_replication_backfill = stop_replication_backfill  # type: ignore[attr-defined]
    store.on_reset(_reset)
