"""State that moto does not keep, and its reset.

Why: moto 5.2.5's ``CompleteLayerUpload`` keeps only the size of a layer
(``Repository.layers[digest] = size``) and throws the bytes away, but real ECR
serves every uploaded blob back through ``GetDownloadUrlForLayer``, and a
replica must carry byte-identical blobs. moto also has no notion of
replication status. Both live here, keyed the way ECR scopes them:
blobs per (registry account, Region, repository), statuses per source image.

``POST /moto-api/reset`` resets moto's backends; ``install_reset_hook`` makes it
reset this module (and every registered hook, e.g. the replication settings
and pending jobs) too, so one reset gives a clean test bed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

# One lock for every mutation this package makes to moto's ECR/EventBridge
# state (the API handlers we patch and the replication worker thread).
LOCK = threading.RLock()

# (account, region, repository) -> {digest: bytes} (a finished upload's
# bytearray, never written again, is stored as is)
_blobs: dict[tuple[str, str, str], dict[str, bytes | bytearray]] = {}

# (source account, source region, repository, image digest) ->
#   {(dest region, dest registryId): {"region", "registryId", "status", "failureCode"?}}
_statuses: dict[tuple[str, str, str, str], dict[tuple[str, str], dict[str, Any]]] = {}

_reset_hooks: list[Callable[[], None]] = []


def put_blob(account: str, region: str, repo: str, digest: str, data: bytes | bytearray) -> None:
    with LOCK:
        _blobs.setdefault((account, region, repo), {})[digest] = data


def get_blob(account: str, region: str, repo: str, digest: str) -> bytes | bytearray | None:
    with LOCK:
        return _blobs.get((account, region, repo), {}).get(digest)


def set_status(
    source: tuple[str, str, str, str], dest: tuple[str, str], status: str,
    failure_code: str | None = None,
) -> None:
    entry: dict[str, Any] = {"region": dest[0], "registryId": dest[1], "status": status}
    if failure_code:
        entry["failureCode"] = failure_code
    with LOCK:
        _statuses.setdefault(source, {})[dest] = entry


def get_statuses(source: tuple[str, str, str, str]) -> list[dict[str, Any]]:
    with LOCK:
        return [dict(v) for v in _statuses.get(source, {}).values()]


def on_reset(hook: Callable[[], None]) -> None:
    _reset_hooks.append(hook)


def reset() -> None:
    with LOCK:
        _blobs.clear()
        _statuses.clear()
        for hook in _reset_hooks:
            hook()


def install_reset_hook() -> None:
    from moto.moto_api._internal.models import MotoAPIBackend

    original = MotoAPIBackend.reset

    def reset_with_localaws(self: Any) -> None:
        with LOCK:
            original(self)
            reset()

    MotoAPIBackend.reset = reset_with_localaws  # type: ignore[method-assign]
