"""The network between a client and AWS, which 127.0.0.1 lacks (``/_localaws/network``).

Why: against real ECR a copy spends most of its time waiting. Every API call is
an HTTPS round trip to a Regional endpoint (a copy from us-west-2 to eu-west-1
talks to both Regions), and each layer crosses one TCP stream in each
direction (the pre-signed S3 download, then ``UploadLayerPart`` requests),
whose throughput is bounded by its window and round-trip time. That waiting is
what a copy overlaps by running calls concurrently. On the loopback interface
a round trip costs about 0.1 ms and the only limit is this server's single
Python process, so a benchmark there measures the test bed, not the client.

This is a model of the network, not of ECR, and it is off by default (every
test runs without it). When on:

- ``latency_ms``: added once to every ECR API call, every request to the
  registry's distribution API (``/v2/``, see ``registry``) and every blob
  download (one request, one response: the round trip);
- ``stream_mib_per_s``: the rate at which one request moves bytes: an ECR
  call's request body (what ``UploadLayerPart`` sends), a registry request's
  body (a blob chunk ``PATCH``/``PUT``, a manifest ``PUT``) and a blob
  download's response are paced to it, per request, as a single TCP stream
  would be. Concurrent requests each get the full rate, like separate
  connections. A registry blob ``GET`` is a redirect (one round trip) to the
  blob download (another round trip, then the stream), as ECR's redirect to
  S3 is.

The waiting happens in the request's own thread (the server is threaded),
before the call reaches moto and while no lock is held, so concurrent requests
wait concurrently, as they would on a network. Other services (STS, SQS,
DynamoDB, ...) and the ``/_localaws/*`` control endpoints are not slowed.

- ``latency_ms_by_region``: ``{"eu-west-1": 140, ...}``, the round trip of an
  ECR API call by the Region it is signed for (its credential scope), instead
  of ``latency_ms``: a client in one Region calling ECR in several (replwatch's
  central functions read every destination Region) waits a different round
  trip for each. Regions not listed wait ``latency_ms``.

``GET`` reads the settings, ``POST`` merges ``{"latency_ms": 40,
"stream_mib_per_s": 25, "latency_ms_by_region": {"eu-west-1": 140}}`` (null
or 0 turns one off; the map replaces the previous one, ``{}`` or null clears
it), ``DELETE`` turns all off; ``POST /moto-api/reset`` does too.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

_KEYS = ("latency_ms", "stream_mib_per_s")
_BY_REGION = "latency_ms_by_region"
MIB = 1024 * 1024
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
_SCOPE_REGION = re.compile(r"Credential=[^/,\s]+/[0-9]{8}/([^/,\s]+)/[^/,\s]+/aws4_request")

_lock = threading.Lock()
_settings: dict[str, float] = {"latency_ms": 0.0, "stream_mib_per_s": 0.0}
_by_region: dict[str, float] = {}
_ABSENT = object()


class NetworkError(ValueError):
    pass


def get() -> dict[str, Any]:
    with _lock:
        return {**_settings, _BY_REGION: dict(_by_region)}


def _milliseconds(key: str, value: Any) -> float:
    if value is None:
        value = 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise NetworkError(f"{key} must be a number >= 0 or null")
    return float(value)


def update(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise NetworkError('body must be a JSON object like {"latency_ms": 40, "stream_mib_per_s": 25}')
    unknown = set(body) - {*_KEYS, _BY_REGION}
    if unknown:
        raise NetworkError(f"unknown keys {sorted(unknown)}; allowed: {[*_KEYS, _BY_REGION]}")
    new = {key: _milliseconds(key, value) for key, value in body.items() if key in _KEYS}
    regions = body.get(_BY_REGION, _ABSENT)
    if regions is not _ABSENT:
        if regions is None:
            regions = {}
        if not isinstance(regions, dict) or not all(isinstance(r, str) and _REGION.match(r) for r in regions):
            raise NetworkError(f'{_BY_REGION} must map Region names to milliseconds, like {{"eu-west-1": 140}}')
        regions = {r: _milliseconds(f"{_BY_REGION}[{r}]", ms) for r, ms in regions.items()}
    with _lock:
        _settings.update(new)
        if regions is not _ABSENT:
            _by_region.clear()
            _by_region.update({r: ms for r, ms in regions.items() if ms})
    return get()


def clear() -> None:
    with _lock:
        _settings.update(latency_ms=0.0, stream_mib_per_s=0.0)
        _by_region.clear()


def _transfer_seconds(size: int, rate_mib_per_s: float) -> float:
    return size / (rate_mib_per_s * MIB) if rate_mib_per_s > 0 and size > 0 else 0.0


def is_ecr_call(environ: dict[str, Any]) -> bool:
    # ECR speaks AWS JSON 1.1: the operation travels in X-Amz-Target.
    return str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("AmazonEC2ContainerRegistry_V20150921.")


def before_call(environ: dict[str, Any]) -> None:
    """Wait out one round trip (to the Region the call is signed for) and the
    sending of the request body."""
    try:
        size = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        size = 0
    scope = _SCOPE_REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
    round_trip(size, scope.group(1) if scope else None)


def round_trip(request_bytes: int, region: str | None = None) -> None:
    """One request of ``request_bytes`` and its (small) answer: the round trip
    (``region``'s when ``latency_ms_by_region`` lists it) and the body's
    transfer at the stream rate (the registry calls this with the size it
    read, which a chunked request does not announce)."""
    with _lock:
        latency_ms = _by_region.get(region or "", _settings["latency_ms"])
        rate = _settings["stream_mib_per_s"]
    if not latency_ms and not rate:
        return
    time.sleep(latency_ms / 1000 + _transfer_seconds(request_bytes, rate))


def paced(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """A download: one round trip before the first byte, then each chunk at
    the stream rate."""
    settings = get()
    if settings["latency_ms"]:
        time.sleep(settings["latency_ms"] / 1000)
    rate = settings["stream_mib_per_s"]
    for chunk in chunks:
        if rate:
            time.sleep(_transfer_seconds(len(chunk), rate))
        yield chunk


def install() -> None:
    from . import store

    store.on_reset(clear)
