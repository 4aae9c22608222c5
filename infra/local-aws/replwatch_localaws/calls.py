"""Counters of ECR API calls and of layer uploads (``/_localaws/calls``).

Not AWS behaviour: a test's view of what a client did. Since the last reset
(``DELETE /_localaws/calls[?account=…]`` or ``POST /moto-api/reset``):

- every ECR API call per (account, Region, operation), the account and
  Region being the ones the request acts as (see ``accounts``), with how many
  of them ``faults`` throttled (counted too; they never reached moto);
- every CompleteLayerUpload per (account, Region, repository, layer digest):
  ``completed`` (accepted; ``bytes`` is the sum of their sizes) and
  ``already_exists`` (refused with LayerAlreadyExistsException, i.e. the bytes
  were sent again for nothing), so a test can assert that no blob was
  uploaded twice to one registry;
- the layer parts UploadLayerPart accepted per (account, Region, repository):
  ``parts`` and ``bytes`` (uploads completed or not);
- the registry's distribution API (``registry``, ``/v2/``): every request to
  a registry in ``calls`` too, as operation ``registry:<METHOD> <endpoint>``
  (``registry:GET manifests``, ``registry:PATCH blobs/uploads``,
  ``registry:GET /v2/``...), so ECR API calls and registry requests add up to
  what a client asked; a completed blob upload (``PUT`` of an upload session,
  or a one-request ``POST ?digest=``) in ``layer_uploads`` as a
  CompleteLayerUpload (a blob the repository already had: ``already_exists``)
  and each non-empty chunk of it in ``layer_parts``;
- blob downloads (``GET /_localaws/blobs/...``: where GetDownloadUrlForLayer's
  URL and the registry's blob redirect lead) per (account, Region,
  repository): ``downloads`` and ``bytes``.

Replication and backfill copies are not API calls and are not counted here.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
# (account, region, operation) -> [calls, throttled]
_calls: dict[tuple[str, str, str], list[int]] = {}
# (account, region, repository, digest) -> {"completed", "already_exists", "bytes"}
_layers: dict[tuple[str, str, str, str], dict[str, int]] = {}
# (account, region, repository) -> {"parts", "bytes"}
_parts: dict[tuple[str, str, str], dict[str, int]] = {}
# (account, region, repository) -> {"downloads", "bytes"}
_downloads: dict[tuple[str, str, str], dict[str, int]] = {}


def record_call(account: str, region: str, operation: str, throttled: bool = False) -> None:
    with _lock:
        entry = _calls.setdefault((account, region, operation), [0, 0])
        entry[0] += 1
        entry[1] += int(throttled)


def record_part(account: str, region: str, repository: str, size: int) -> None:
    with _lock:
        entry = _parts.setdefault((account, region, repository), {"parts": 0, "bytes": 0})
        entry["parts"] += 1
        entry["bytes"] += size


def record_download(account: str, region: str, repository: str, size: int) -> None:
    with _lock:
        entry = _downloads.setdefault((account, region, repository), {"downloads": 0, "bytes": 0})
        entry["downloads"] += 1
        entry["bytes"] += size


def record_layer(account: str, region: str, repository: str, digest: str, size: int,
                 already_exists: bool = False) -> None:
    with _lock:
        entry = _layers.setdefault((account, region, repository, digest),
                                   {"completed": 0, "already_exists": 0, "bytes": 0})
        if already_exists:
            entry["already_exists"] += 1
        else:
            entry["completed"] += 1
            entry["bytes"] += size


def snapshot(account: str | None = None, region: str | None = None) -> dict[str, Any]:
    """Everything recorded, as sorted lists; optionally one account and/or Region."""
    def keep(key: tuple[str, ...]) -> bool:
        return (account is None or key[0] == account) and (region is None or key[1] == region)

    with _lock:
        return {
            "calls": [
                {"account": k[0], "region": k[1], "operation": k[2], "count": v[0], "throttled": v[1]}
                for k, v in sorted(_calls.items()) if keep(k)
            ],
            "layer_uploads": [
                {"account": k[0], "region": k[1], "repository": k[2], "layerDigest": k[3], **v}
                for k, v in sorted(_layers.items()) if keep(k)
            ],
            "layer_parts": [
                {"account": k[0], "region": k[1], "repository": k[2], **v}
                for k, v in sorted(_parts.items()) if keep(k)
            ],
            "blob_downloads": [
                {"account": k[0], "region": k[1], "repository": k[2], **v}
                for k, v in sorted(_downloads.items()) if keep(k)
            ],
        }


def reset(account: str | None = None) -> None:
    """Forget everything, or only what ``account`` did."""
    with _lock:
        for table in (_calls, _layers, _parts, _downloads):
            for key in [k for k in table if account is None or k[0] == account]:
                del table[key]


def install() -> None:
    from . import store

    store.on_reset(reset)
