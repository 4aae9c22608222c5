"""ECR private image replication, which moto 5.2.5 stores but never performs.

AWS facts reproduced (Amazon ECR User Guide, "Private image replication"):

- The replication configuration lives in the source registry, per Region.
  After a successful push, the image is replicated to every destination
  ``{region, registryId}`` of every rule whose ``repositoryFilters`` match the
  repository name (``PREFIX_MATCH``; a rule without filters matches every
  repository), each destination once, never to the source registry itself.
  Cross-Region and cross-account (``registryId`` is the destination account).
- "Only repository content pushed to a repository after replication is
  configured is replicated. Any preexisting content in a repository isn't
  replicated": replication is decided at push time from the configuration of
  that moment.
- "Repository creation": a missing destination repository is created (default
  settings: MUTABLE tags, AES256); settings of the source repository are not
  copied. When the
  destination registry has a repository creation template with
  ``appliedFor`` REPLICATION matching the name (``templates``: longest
  prefix, else ROOT), the repository gets its tag mutability (and exclusion
  filters), encryption, resource tags, repository and lifecycle policies.
- No chaining: a replica arriving in B is not replicated onward even if B has
  its own configuration (replicas are written into B's backend directly, not
  through PutImage). Deletes are not replicated.
- The replica has the same digest, manifest bytes, media type and tag, and
  carries all its blobs (config + layers; for an image index, its child
  manifests and their blobs). If the destination repository has immutable
  tags and the tag is already on another digest there, the image arrives
  untagged and the replication still counts as COMPLETE.
- ``DescribeImageReplicationStatus`` reports IN_PROGRESS until the copy is
  done, then COMPLETE, or FAILED with a ``failureCode``.
- "If replication is configured for the repository, the restored image will
  be replicated" (User Guide, "Restoring an image"): when a restore from the
  archive storage class completes (``storage_class``), the image is
  replicated exactly as after a push, with the configuration of that moment
  and the tags the image has then (``replicate_image``, shared with
  ``on_push``). Archiving neither replicates nor deletes replicas.
- "ECR Replication Action" events (User Guide, "Amazon ECR events and
  EventBridge") go to the default bus of the *destination* account and
  Region: ``result`` SUCCESS or FAILED, ``action-type`` REPLICATE,
  ``source-account``, ``source-region``, ``image-tag`` when the pushed image
  was tagged, ``resources`` = the destination repository ARN. AWS emits
  events "on a best effort basis": the drop/duplicate rates below simulate
  that (a duplicate keeps the event id).

What the test bed lets a caller control (``/_localaws/replication``, see
``control``): a delay per destination (default 0 s; jobs run on a background
thread, so PutImage returns at once), forced failure with a chosen
``failureCode``, pausing a destination (its jobs stay IN_PROGRESS until it is
unpaused or flushed), event drop/duplicate rates with a seeded RNG, and a
flush that completes every pending job immediately (and the jobs those
schedule: a backfill's next replications). ``backfill`` runs its PREPARING
step and its replications as jobs of this engine (``runner``), so the same
settings apply to them; ``backfill_prepare_seconds`` and
``backfill_concurrency`` are its own. ``storage_class`` runs a restore's
ACTIVATING period as a job too (``restore_seconds``, default 0; not held by
``paused``; ``flush`` completes it and the replications it schedules), and
``region_opt_in`` an account's Region enabling or disabling
(``region_opt_in_seconds``, default 0).

"For cross-Region replication to occur, both the source and destination
accounts must be opted-in to the Region prior to any replication actions
occurring within or to that Region" (User Guide, considerations): a job whose
destination Region is not enabled in the source or the destination account
(``region_opt_in``) fails with ``REGION_NOT_ENABLED`` when it runs.

Cross-account replication needs the destination's consent (User Guide,
"Private registry permissions" / "Granting registry permissions for cross
account replication": "A registry policy must grant permission for the
ecr:ReplicateImage API action … You can also grant permission for the
ecr:CreateRepository permission … If the ecr:CreateRepository permission isn't
provided, a repository with the same name as the source repository must be
created manually in your registry. If neither is done, replication fails"):
a job into another account's registry runs only if that registry's
permissions policy in the destination Region (``PutRegistryPolicy``, kept by
moto per account and Region) allows the source account (``Principal``
``{"AWS": "<account>"}`` or ``arn:aws:iam::<account>:root``, or ``*``)
``ecr:ReplicateImage`` on the destination repository's ARN, and, when that
repository does not exist yet, ``ecr:CreateRepository`` too
(``policies.decide``: a ``Deny`` that applies wins; conditions on
``policies.request_context``). Otherwise it fails when it runs, with
``PERMISSION_FAILURE_CODE``, nothing copied, a FAILED event sent (for pushes,
restores and backfills alike). Replication within one account needs no policy.

The ECR API reference types ``failureCode`` as a free string and documents no
values; ``DEFAULT_FAILURE_CODE`` and ``PERMISSION_FAILURE_CODE`` are our
choice (the guide says only that replication fails; ``ACCESS_DENIED`` is our
reading of a refusal).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import region_opt_in, store, templates
from .ecr import referenced_blobs, referenced_manifests, tag_is_immutable, untag
from .eventbridge import emit
from .policies import Caller, decide, request_context

log = logging.getLogger("replwatch_localaws.replication")

DEFAULT_FAILURE_CODE = "ACCESS_DENIED"
# A cross-account replication the destination's registry permissions policy does not allow.
PERMISSION_FAILURE_CODE = "ACCESS_DENIED"

_DEST_KEYS = {"delay_seconds", "fail", "fail_tags", "failure_code", "paused"}
_TOP_KEYS = {"default_delay_seconds", "default_failure_code", "destinations",
             "event_drop_rate", "event_duplicate_rate", "seed",
             "backfill_prepare_seconds", "backfill_concurrency", "restore_seconds",
             "region_opt_in_seconds"}


def _default_settings() -> dict[str, Any]:
    return {
        "default_delay_seconds": 0.0,
        "default_failure_code": DEFAULT_FAILURE_CODE,
        "destinations": {},
        "event_drop_rate": 0.0,
        "event_duplicate_rate": 0.0,
        "seed": 0,
        "backfill_prepare_seconds": 0.0,
        "backfill_concurrency": 5,
        "restore_seconds": 0.0,
        "region_opt_in_seconds": 0.0,
    }


_settings: dict[str, Any] = _default_settings()
_rng = random.Random(0)


class SettingsError(ValueError):
    pass


def _dest_key(dest: tuple[str, str]) -> str:
    return f"{dest[0]}/{dest[1]}"


def _dest_settings(dest: tuple[str, str]) -> dict[str, Any]:
    return _settings["destinations"].get(_dest_key(dest), {})


def _paused(dest: tuple[str, str]) -> bool:
    return bool(_dest_settings(dest).get("paused", False))


def _number(value: Any, name: str, lo: float, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"{name} must be a number")
    if value < lo or (hi is not None and value > hi):
        raise SettingsError(f"{name} must be in [{lo}, {hi if hi is not None else 'inf'}]")
    return float(value)


def get_settings() -> dict[str, Any]:
    with store.LOCK:
        out = json.loads(json.dumps(_settings))
        now = time.monotonic()
        out["pending"] = [job.describe(now) for job in _scheduler.jobs]
        return out


def update_settings(body: Any) -> dict[str, Any]:
    """Merge ``body`` into the settings. Top-level keys replace; each entry of
    ``destinations`` replaces that destination's settings (null removes it)."""
    global _rng
    if not isinstance(body, dict):
        raise SettingsError("body must be a JSON object")
    unknown = set(body) - _TOP_KEYS
    if unknown:
        raise SettingsError(f"unknown keys: {sorted(unknown)}")
    new = json.loads(json.dumps(_settings))
    if "default_delay_seconds" in body:
        new["default_delay_seconds"] = _number(body["default_delay_seconds"], "default_delay_seconds", 0)
    if "backfill_prepare_seconds" in body:
        new["backfill_prepare_seconds"] = _number(body["backfill_prepare_seconds"], "backfill_prepare_seconds", 0)
    if "restore_seconds" in body:
        new["restore_seconds"] = _number(body["restore_seconds"], "restore_seconds", 0)
    if "region_opt_in_seconds" in body:
        new["region_opt_in_seconds"] = _number(body["region_opt_in_seconds"], "region_opt_in_seconds", 0)
    if "backfill_concurrency" in body:
        value = body["backfill_concurrency"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SettingsError("backfill_concurrency must be an integer >= 1")
        new["backfill_concurrency"] = value
    for rate in ("event_drop_rate", "event_duplicate_rate"):
        if rate in body:
            new[rate] = _number(body[rate], rate, 0, 1)
    if "default_failure_code" in body:
        if not isinstance(body["default_failure_code"], str) or not body["default_failure_code"]:
            raise SettingsError("default_failure_code must be a non-empty string")
        new["default_failure_code"] = body["default_failure_code"]
    if "seed" in body:
        if body["seed"] is not None and (isinstance(body["seed"], bool) or not isinstance(body["seed"], int)):
            raise SettingsError("seed must be an integer or null")
        new["seed"] = body["seed"]
    if "destinations" in body:
        dests = body["destinations"]
        if not isinstance(dests, dict):
            raise SettingsError("destinations must be an object keyed by 'region/registryId'")
        for key, value in dests.items():
            parts = key.split("/")
            if len(parts) != 2 or not parts[0] or not (parts[1].isdigit() and len(parts[1]) == 12):
                raise SettingsError(f"destination key {key!r} must look like 'us-east-1/111111111111'")
            if value is None:
                new["destinations"].pop(key, None)
                continue
            if not isinstance(value, dict) or set(value) - _DEST_KEYS:
                raise SettingsError(f"destination {key!r}: allowed keys are {sorted(_DEST_KEYS)}")
            entry: dict[str, Any] = {}
            if value.get("delay_seconds") is not None:
                entry["delay_seconds"] = _number(value["delay_seconds"], "delay_seconds", 0)
            for flag in ("fail", "paused"):
                if flag in value:
                    if not isinstance(value[flag], bool):
                        raise SettingsError(f"{flag} must be true or false")
                    entry[flag] = value[flag]
            if value.get("failure_code") is not None:
                if not isinstance(value["failure_code"], str) or not value["failure_code"]:
                    raise SettingsError("failure_code must be a non-empty string")
                entry["failure_code"] = value["failure_code"]
            if value.get("fail_tags") is not None:
                tags = value["fail_tags"]
                if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
                    raise SettingsError("fail_tags must be a list of tags")
                entry["fail_tags"] = list(tags)
            new["destinations"][key] = entry
    with store.LOCK:
        _settings.clear()
        _settings.update(new)
        if "seed" in body:
            _rng = random.Random(new["seed"])
        _scheduler.wake()
    return get_settings()


def reset_settings() -> None:
    global _rng
    with store.LOCK:
        _settings.clear()
        _settings.update(_default_settings())
        _rng = random.Random(0)


# --- selection and snapshots -------------------------------------------------

def select_destinations(config: dict[str, Any], repository: str, account: str,
                        region: str) -> list[tuple[str, str]]:
    selected: list[tuple[str, str]] = []
    for rule in config.get("rules") or []:
        filters = rule.get("repositoryFilters") or []
        if filters and not any(
            f.get("filterType", "PREFIX_MATCH") == "PREFIX_MATCH" and repository.startswith(f["filter"])
            for f in filters
        ):
            continue
        for dest in rule.get("destinations") or []:
            key = (dest["region"], dest["registryId"])
            if key != (region, account) and key not in selected:
                selected.append(key)
    return selected


def snapshot(account: str, region: str, repo: Any, image: Any) -> dict[str, Any]:
    manifest = image.image_manifest
    parsed = json.loads(manifest)
    media_type = image.image_manifest_media_type or parsed.get("mediaType")
    blobs = {
        d: store.get_blob(account, region, repo.name, d) or b""
        for d in referenced_blobs(parsed, media_type)
    }
    children = []
    for child_digest in referenced_manifests(parsed, media_type):
        child = next((i for i in repo.images if i.image_digest == child_digest), None)
        if child is not None:
            children.append(snapshot(account, region, repo, child))
    return {"digest": image.image_digest, "manifest": manifest, "media_type": media_type,
            "blobs": blobs, "children": children}


# --- the copy ----------------------------------------------------------------

def _put_replica(account: str, region: str, repo: Any, snap: dict[str, Any], tag: str | None) -> str | None:
    """Write one manifest (blobs first) into ``repo``; returns the tag it got.
    A manifest already there (same digest) is not copied again, only tagged."""
    from moto.ecr.models import Image

    from . import storage_class

    existing = next((i for i in repo.images if i.image_digest == snap["digest"]), None)
    if existing is None:
        for digest, data in snap["blobs"].items():
            repo.layers[digest] = len(data)
            store.put_blob(account, region, repo.name, digest, data)
    if tag:
        holder = next((i for i in repo.images if tag in i.image_tags), None)
        if holder is not None and holder is not existing:
            if tag_is_immutable(repo, tag):
                tag = None  # ECR: the image arrives untagged
            else:  # the tag moves; the old image stays, untagged if that was its only tag
                untag(holder, tag)
    if existing is not None:
        if storage_class.status(existing) != storage_class.ACTIVE:
            storage_class.activate(existing)  # an archived replica: restored, as by a push
        if tag and tag not in existing.image_tags:
            existing.update_tag(tag)
    else:
        repo.images.append(Image(account, tag, snap["manifest"], repo.name,
                                 snap["media_type"], snap["digest"], registry_id=account))
    return tag


def _copy(account: str, region: str, repository: str, snap: dict[str, Any], tag: str | None) -> Any:
    from moto.ecr.models import ecr_backends

    backend = ecr_backends[account][region]
    repo = backend.repositories.get(repository)
    if repo is None:
        template = templates.for_new_repository(account, region, repository, "REPLICATION") or {}
        repo = backend.create_repository(
            repository_name=repository, registry_id=None,
            encryption_config=template.get("encryptionConfiguration"),
            image_scan_config=None, image_tag_mutability=template.get("imageTagMutability"),
            tags=template.get("resourceTags") or [],
            image_tag_mutability_exclusion_filters=template.get("imageTagMutabilityExclusionFilters"),
        )
        repo.policy = template.get("repositoryPolicy") or None
        repo.lifecycle_policy = template.get("lifecyclePolicy") or None
    for child in snap["children"]:
        _put_replica(account, region, repo, child, None)
    _put_replica(account, region, repo, snap, tag)
    return repo


def already_replicated(dest: tuple[str, str], repository: str, digest: str, tag: str | None) -> bool:
    """The destination repository has this digest (and the tag, if any) already."""
    from moto.ecr.models import ecr_backends

    dest_region, dest_account = dest
    repo = ecr_backends[dest_account][dest_region].repositories.get(repository)
    image = next((i for i in repo.images if i.image_digest == digest), None) if repo else None
    return image is not None and (not tag or tag in image.image_tags)


def registry_permits(source_account: str, dest_account: str, dest_region: str, repository: str) -> bool:
    """Whether the destination registry's permissions policy lets ``source_account`` replicate
    ``repository`` into it (and create it, when it is missing). Same account: always."""
    from moto.ecr.models import ecr_backends
    from moto.utilities.utils import get_partition

    if source_account == dest_account:
        return True
    backend = ecr_backends[dest_account][dest_region]
    policy = getattr(backend, "registry_policy", None)
    resource = f"arn:{get_partition(dest_region)}:ecr:{dest_region}:{dest_account}:repository/{repository}"
    caller = Caller(account=source_account)
    context = request_context(caller, dest_account, secure_transport=True)
    if decide(policy, "ecr:ReplicateImage", resource, caller, context) != "Allow":
        return False
    return repository in backend.repositories or \
        decide(policy, "ecr:CreateRepository", resource, caller, context) == "Allow"


def replicate(job: "Job") -> tuple[str, str | None]:
    """Perform one replication under the destination's settings:
    ``("COMPLETE", None)`` or ``("FAILED", failureCode)``."""
    dest_region, dest_account = job.dest
    settings = _dest_settings(job.dest)
    try:
        if not (region_opt_in.allows_replication(job.source[0], dest_region)
                and region_opt_in.allows_replication(dest_account, dest_region)):
            return "FAILED", region_opt_in.FAILURE_CODE
        if not registry_permits(job.source[0], dest_account, dest_region, job.source[2]):
            return "FAILED", PERMISSION_FAILURE_CODE
        if settings.get("fail") or (job.tag is not None and job.tag in settings.get("fail_tags", ())):
            return "FAILED", settings.get("failure_code") or _settings["default_failure_code"]
        _copy(dest_account, dest_region, job.source[2], job.snapshot, job.tag)
        return "COMPLETE", None
    except Exception:  # never kill the worker; report like ECR would
        log.exception("replication of %s to %s failed", job.source, job.dest)
        return "FAILED", "INTERNAL_ERROR"


# --- jobs ----------------------------------------------------------------------

@dataclass
class Job:
    due: float
    source: tuple[str, str, str, str]  # account, region, repository, digest ("" for a backfill's PREPARING step)
    dest: tuple[str, str]  # region, registryId
    snapshot: dict[str, Any] = field(repr=False)
    tag: str | None = None
    # None: a push's replication (status + event). Otherwise called instead,
    # under store.LOCK, when the job is due (backfill replications and steps).
    runner: Callable[["Job"], None] | None = field(default=None, repr=False)
    kind: str = "push"  # push | backfill | backfill-prepare | restore | region-opt-in
    backfill_id: str | None = None
    pausable: bool = True  # a paused destination holds the job (until flushed)

    def describe(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": "/".join(p for p in self.source if p),
            "destination": _dest_key(self.dest),
            "due_in_seconds": round(max(0.0, self.due - now), 3),
            "paused": self.pausable and _paused(self.dest),
            "kind": self.kind,
        }
        if self.backfill_id:
            out["backfill"] = self.backfill_id
        return out


def _emit_replication_event(job: Job, result: str) -> None:
    src_account, src_region, repository, digest = job.source
    dest_region, dest_account = job.dest
    draw_drop, draw_dup = _rng.random(), _rng.random()
    if draw_drop < _settings["event_drop_rate"]:
        log.info("dropping REPLICATE %s event for %s -> %s", result, digest, _dest_key(job.dest))
        return
    detail: dict[str, Any] = {
        "result": result,
        "repository-name": repository,
        "image-digest": digest,
        "source-account": src_account,
        "action-type": "REPLICATE",
        "source-region": src_region,
    }
    if job.tag:
        detail["image-tag"] = job.tag
    from moto.utilities.utils import get_partition

    arn = f"arn:{get_partition(dest_region)}:ecr:{dest_region}:{dest_account}:repository/{repository}"
    copies = 2 if draw_dup < _settings["event_duplicate_rate"] else 1
    emit(dest_account, dest_region, "ECR Replication Action", detail, [arn], copies=copies)


def _run(job: Job) -> None:
    if job.runner is not None:
        try:
            job.runner(job)
        except Exception:  # never kill the worker
            log.exception("job %s failed", job)
        return
    status, code = replicate(job)
    store.set_status(job.source, job.dest, status, code)
    _emit_replication_event(job, "SUCCESS" if status == "COMPLETE" else "FAILED")


class Scheduler:
    def __init__(self) -> None:
        self.cv = threading.Condition(store.LOCK)
        self.jobs: list[Job] = []
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._loop, name="replication", daemon=True)
            self.thread.start()

    def wake(self) -> None:
        with self.cv:
            self.cv.notify_all()

    def add(self, job: Job) -> None:
        with self.cv:
            self.jobs.append(job)
            self.cv.notify_all()

    def remove(self, predicate: Callable[[Job], bool]) -> list[Job]:
        """Drop the pending jobs ``predicate`` selects; returns them."""
        with self.cv:
            dropped = [j for j in self.jobs if predicate(j)]
            self.jobs = [j for j in self.jobs if not predicate(j)]
            return dropped

    def _loop(self) -> None:
        while True:
            with self.cv:
                now = time.monotonic()
                runnable = [j for j in self.jobs if not (j.pausable and _paused(j.dest))]
                ready = [j for j in runnable if j.due <= now]
                if ready:
                    job = min(ready, key=lambda j: j.due)
                    self.jobs.remove(job)
                    _run(job)
                    continue
                timeout = max(0.0, min(j.due for j in runnable) - now) if runnable else None
                self.cv.wait(timeout)

    def flush(self, source_account: str | None = None) -> int:
        """Run every matching job now, paused or not, including the jobs that
        running them schedules (a backfill's next replications), until none is left."""
        done = 0
        with self.cv:
            while True:
                jobs = [j for j in self.jobs if source_account is None or j.source[0] == source_account]
                if not jobs:
                    return done
                job = min(jobs, key=lambda j: j.due)
                self.jobs.remove(job)
                _run(job)
                done += 1

    def reset(self) -> None:
        with self.cv:
            self.jobs.clear()
            self.cv.notify_all()


_scheduler = Scheduler()


def flush(source_account: str | None = None) -> int:
    return _scheduler.flush(source_account)


def schedule(job: Job) -> None:
    _scheduler.add(job)


def unschedule(predicate: Callable[[Job], bool]) -> list[Job]:
    return _scheduler.remove(predicate)


def delay_for(dest: tuple[str, str]) -> float:
    delay = _dest_settings(dest).get("delay_seconds")
    return _settings["default_delay_seconds"] if delay is None else delay


def setting(name: str) -> Any:
    return _settings[name]


def replicate_image(account: str, region: str, repository: str, image: Any,
                    tags: list[str | None]) -> None:
    """Schedule the replication of ``image`` as ECR does after a push: one job
    per destination the current configuration selects, and per tag in ``tags``
    (``[None]``: untagged). Called under store.LOCK, for a push (``on_push``)
    and for a completed restore from the archive (``storage_class``)."""
    from moto.ecr.models import ecr_backends

    backend = ecr_backends[account][region]
    destinations = select_destinations(backend.replication_config, repository, account, region)
    if not destinations:
        return
    repo = backend.repositories[repository]
    snap = snapshot(account, region, repo, image)
    source = (account, region, repository, image.image_digest)
    now = time.monotonic()
    for dest in destinations:
        store.set_status(source, dest, "IN_PROGRESS")
        for tag in tags or [None]:
            _scheduler.add(Job(due=now + delay_for(dest), source=source, dest=dest, snapshot=snap,
                               tag=tag or None))


def on_push(account: str, region: str, repository: str, image: Any, tag: str | None) -> None:
    """Called (under store.LOCK) after every successful PutImage."""
    replicate_image(account, region, repository, image, [tag or None])


def install() -> None:
    def reset() -> None:
        _scheduler.reset()
        reset_settings()

    store.on_reset(reset)
    _scheduler.start()
