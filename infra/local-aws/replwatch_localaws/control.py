"""The HTTP front: our ``/_localaws/*`` endpoints, moto for everything else.

Endpoints (JSON in and out):

- ``GET  /_localaws/health``               -> ``{"status": "ok", "moto": "5.2.5", "code": "<sha256>"}``
  (``code`` fingerprints this package's source, so ``start`` can tell a server
  running older code from one it can reuse)
- ``GET  /_localaws/replication``          -> settings + pending jobs
- ``POST /_localaws/replication``          -> merge settings (see ``replication.update_settings``)
- ``DELETE /_localaws/replication``        -> back to defaults (pending jobs are kept)
- ``POST /_localaws/replication/flush``    -> run every pending job now: ``{"completed": N}``;
  with ``{"source_account": "111111111111"}`` only the jobs of images pushed
  in that account (tests sharing one server each use their own accounts)
- ``GET    /_localaws/faults``             -> ECR and DynamoDB throttling rules (see ``faults``)
- ``POST   /_localaws/faults``             -> merge rules: ``{"ecr": {"PutImage": {"throttle_next": 5}}}``
- ``DELETE /_localaws/faults[?account=A]`` -> remove all rules (or those limited to account A)
- ``GET|POST|DELETE /_localaws/network``  -> a modelled round trip and stream rate for ECR
  calls and blob downloads, off by default (see ``network``)
- ``GET    /_localaws/calls[?account=A&region=R]`` -> ECR call and layer upload counters (see ``calls``)
- ``DELETE /_localaws/calls[?account=A]``  -> zero them (or only account A's)
- ``GET    /_localaws/meter``              -> every AWS request by service and operation,
  and the units AWS bills for them (see ``meter``)
- ``DELETE /_localaws/meter``              -> zero it
- ``GET|HEAD /_localaws/blobs/<account>/<region>/<repository>/<digest>``
      -> the blob bytes; this is what GetDownloadUrlForLayer's ``downloadUrl``
         and the registry's blob redirect point at (on AWS, a pre-signed S3
         URL). Streamed in 1 MiB chunks; each GET counted by ``calls``.

Unsigned ``/v2/...`` requests, ``/<account>/<region>/v2/...`` and any request
to a ``<account>.dkr.ecr.<region>.localhost`` Host are the registry's OCI
distribution API (``registry``).

``POST /moto-api/reset`` (moto's own) also resets our state: see ``store``.

CloudWatch's Smithy RPCv2 CBOR calls (``POST /service/GraniteServiceVersion20100801/operation/<Op>``,
which moto 5.2.5 answers with 404) go through ``cloudwatch_cbor``, which
translates them to moto's AWS JSON 1.0 CloudWatch and back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from werkzeug.wrappers import Request, Response

from . import calls, cloudwatch_cbor, faults, meter, network, registry, replication, store

PREFIX = "/_localaws/"


def _fingerprint() -> str:
    """sha256 over this package's ``*.py`` files, in name order (``start`` computes the same)."""
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


CODE_FINGERPRINT = _fingerprint()
CHUNK = 1024 * 1024


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body, indent=1) + "\n", status=status, mimetype="application/json")


def _chunks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        yield bytes(view[start:start + CHUNK])


def _blob(request: Request, rest: str) -> Response:
    # rest = <account>/<region>/<repository with slashes>/<digest>
    parts = rest.split("/")
    if len(parts) < 4:
        return _json(404, {"message": "expected /_localaws/blobs/<account>/<region>/<repository>/<digest>"})
    account, region, digest = parts[0], parts[1], parts[-1]
    repository = "/".join(parts[2:-1])
    data = store.get_blob(account, region, repository, digest)
    if data is None:
        return _json(404, {"message": f"no blob {digest} in {account}/{region}/{repository}"})
    headers = {"Content-Length": str(len(data)), "Docker-Content-Digest": digest}
    if request.method == "HEAD":
        return Response(b"", status=200, headers=headers, mimetype="application/octet-stream")
    calls.record_download(account, region, repository, len(data))
    return Response(network.paced(_chunks(data)), status=200, headers=headers, mimetype="application/octet-stream",
                    direct_passthrough=True)


def _handle(request: Request) -> Response:
    from moto import __version__ as moto_version

    path = request.path[len(PREFIX):].rstrip("/")
    method = request.method
    if path == "health" and method in ("GET", "HEAD"):
        return _json(200, {"status": "ok", "moto": moto_version, "code": CODE_FINGERPRINT})
    if path == "replication":
        if method == "GET":
            return _json(200, replication.get_settings())
        if method == "POST":
            try:
                body = json.loads(request.get_data() or b"{}")
                return _json(200, replication.update_settings(body))
            except (ValueError, replication.SettingsError) as err:
                return _json(400, {"message": str(err)})
        if method == "DELETE":
            replication.reset_settings()
            return _json(200, replication.get_settings())
        return _json(405, {"message": "use GET, POST or DELETE"})
    if path == "replication/flush":
        if method != "POST":
            return _json(405, {"message": "use POST"})
        try:
            body = json.loads(request.get_data() or b"{}")
        except ValueError as err:
            return _json(400, {"message": str(err)})
        account = body.get("source_account") if isinstance(body, dict) else None
        if account is not None and not isinstance(account, str):
            return _json(400, {"message": "source_account must be a string"})
        return _json(200, {"completed": replication.flush(account)})
    if path == "faults":
        if method == "GET":
            return _json(200, faults.get())
        if method == "POST":
            try:
                return _json(200, faults.update(json.loads(request.get_data() or b"{}")))
            except ValueError as err:  # FaultsError too
                return _json(400, {"message": str(err)})
        if method == "DELETE":
            faults.clear(request.args.get("account"))
            return _json(200, faults.get())
        return _json(405, {"message": "use GET, POST or DELETE"})
    if path == "network":
        if method == "GET":
            return _json(200, network.get())
        if method == "POST":
            try:
                return _json(200, network.update(json.loads(request.get_data() or b"{}")))
            except ValueError as err:  # NetworkError too
                return _json(400, {"message": str(err)})
        if method == "DELETE":
            network.clear()
            return _json(200, network.get())
        return _json(405, {"message": "use GET, POST or DELETE"})
    if path == "calls":
        if method == "GET":
            return _json(200, calls.snapshot(request.args.get("account"), request.args.get("region")))
        if method == "DELETE":
            calls.reset(request.args.get("account"))
            return _json(200, calls.snapshot())
        return _json(405, {"message": "use GET or DELETE"})
    if path == "meter":
        if method == "GET":
            return _json(200, meter.snapshot())
        if method == "DELETE":
            meter.reset()
            return _json(200, meter.snapshot())
        return _json(405, {"message": "use GET or DELETE"})
    if path.startswith("blobs/") and method in ("GET", "HEAD"):
        return _blob(request, path[len("blobs/"):])
    return _json(404, {"message": f"unknown endpoint {request.path}"})


class LocalAwsApp:
    """WSGI app: ``/_localaws/*`` here; the registry's ``/v2/`` API in
    ``registry``; every other request counted by ``meter``, then CloudWatch
    RPCv2 CBOR through ``cloudwatch_cbor``, the rest to moto's dispatcher."""

    def __init__(self, moto_app: Any) -> None:
        self.moto_app = moto_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith(PREFIX):
            return _handle(Request(environ))(environ, start_response)
        target = registry.match(environ)
        if target is not None:
            return registry.wsgi(target, environ, start_response)
        meter.count_request(environ)
        if network.is_ecr_call(environ):
            network.before_call(environ)
        if cloudwatch_cbor.operation_of(path) is not None:
            return meter.metered_transfer(
                environ, start_response, lambda e, s: cloudwatch_cbor.wsgi(e, s, self.moto_app))
        return meter.metered_transfer(environ, start_response, self.moto_app)
