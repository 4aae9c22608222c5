"""The registry's OCI distribution API (``/v2/``), over the same store as the ECR API.

Real ECR serves two APIs: the ECR API (AWS JSON 1.1, SigV4) and, at
``https://<account>.dkr.ecr.<region>.amazonaws.com/v2/...``, the OCI
distribution API that docker, skopeo, crane, oras, notation and cosign speak.
Here both act on the same repositories, images, blobs, tags and referrers: an
image pushed with ``PutImage`` is pulled with ``GET /v2/<name>/manifests/<tag>``
and the reverse.

AWS facts reproduced (ECR User Guide "Private registry authentication",
"Pushing an image", "Amazon ECR interface VPC endpoints"; ECR API Reference
``GetAuthorizationToken``, ``AuthorizationData``, ``GetDownloadUrlForLayer``,
``InitiateLayerUpload``; What's New, 27 June 2024, OCI 1.1):

- ``GetAuthorizationToken`` returns ``authorizationToken``, "a base64-encoded
  string ... When the string is decoded, it is presented in the format
  user:password" (user ``AWS``), ``expiresAt`` ("Authorization tokens are
  valid for 12 hours") and ``proxyEndpoint``, "the registry URL to use for
  this authorization token in a docker login command". moto returned a fixed
  password, an ``expiresAt`` in 2015 and an ``amazonaws.com`` endpoint.
- Clients authenticate with HTTP Basic ``AWS:<password>``. ECR answers an
  unauthenticated request with ``401`` and ``WWW-Authenticate: Basic
  realm="https://<registry>/",service="ecr.amazonaws.com"`` (what clients
  report from ECR: a Basic challenge, no bearer token service). "An
  authentication token is used to access any Amazon ECR registry that your
  IAM principal has access to": any unexpired token this server issued is
  accepted for every registry (no IAM here, as for the ECR API).
- Manifests: ``HEAD``/``GET /v2/<name>/manifests/<tag or digest>`` answer the
  stored bytes, ``Content-Type`` = the stored media type,
  ``Docker-Content-Digest``; ``PUT`` pushes exactly as ``PutImage`` does
  (``ecr.push_image``: digest of the bytes, every blob and child manifest
  present, tag immutability, the PUSH event, replication). "Archived images
  cannot be pulled. Requests to pull the archived image will fail with a 404
  error": ``MANIFEST_UNKNOWN`` for an archived or activating image.
- Blobs: ECR keeps layers in Amazon S3 ("Amazon ECR uses Amazon S3 to store
  your image layers ... containers download images from Amazon ECR ... then
  Amazon S3 to download the actual image layers", VPC endpoints page; the
  same pre-signed URL ``GetDownloadUrlForLayer`` gives): ``GET
  /v2/<name>/blobs/<digest>`` is a ``307`` redirect to this server's blob URL
  (``/_localaws/blobs/...``, what ``GetDownloadUrlForLayer`` returns), which
  the distribution spec allows ("This endpoint MAY issue a 307 redirect to
  another service"). ``HEAD`` answers ``Content-Length`` and
  ``Docker-Content-Digest``. A layer only archived images use is unknown, as
  for ``GetDownloadUrlForLayer``.
- Uploads: ``POST /v2/<name>/blobs/uploads/`` (``202``, ``Location``; with
  ``?digest=`` and the body: one request, ``201``), ``PATCH`` chunks (in
  order; ``Content-Range`` checked, ``416`` otherwise), ``PUT ?digest=`` to
  finish (the digest of the bytes received must match: ``DIGEST_INVALID``),
  ``GET`` (status, ``204``) and ``DELETE`` (cancel) of a session. The blob
  then belongs to that repository, as after ``CompleteLayerUpload``.
- Cross-repository mount (``POST ...?mount=<digest>&from=<repo>``): ECR's
  "blob mounting" works only once enabled for the registry (``PutAccountSetting``
  ``BLOB_MOUNTING`` ``ENABLED``; User Guide "Blob mounting in Amazon ECR"),
  which moto does not model; so, as ECR by default, the answer is the spec's
  fallback for a registry that does not mount: ``202`` and an upload session.
- Tags: ``GET /v2/<name>/tags/list`` (``n``, ``last``, ``Link`` to the next
  page), the tags of the repository's ACTIVE images in lexical order.
- Referrers (OCI distribution spec 1.1, *Listing Referrers*; "Amazon ECR
  supports ... OCI Image and Distribution specification version 1.1, which
  includes support for Reference Types"): ``GET
  /v2/<name>/referrers/<digest>`` answers an OCI image index of the ACTIVE
  referrers, each a descriptor with ``artifactType`` and ``annotations``
  (``referrers.describe``, the same as ``ListImageReferrers``), ``200`` even
  when there are none or the subject does not exist; ``?artifactType=``
  filters and sets ``OCI-Filters-Applied: artifactType``. A manifest ``PUT``
  with a ``subject`` answers ``OCI-Subject: <digest>``, so clients use this
  API rather than the tag schema fallback.
- Errors: the distribution spec's ``{"errors": [{"code", "message",
  "detail"}]}`` with its codes (``NAME_UNKNOWN``, ``MANIFEST_UNKNOWN``,
  ``MANIFEST_INVALID``, ``MANIFEST_BLOB_UNKNOWN``, ``BLOB_UNKNOWN``,
  ``BLOB_UPLOAD_UNKNOWN``, ``DIGEST_INVALID``, ``NAME_INVALID``,
  ``UNAUTHORIZED``, ``DENIED``, ``UNSUPPORTED``); an immutable tag held by
  another image is ``TAG_INVALID`` with ECR's text ("The image tag '<tag>'
  already exists in the '<repository>' repository and cannot be overwritten
  because the repository is immutable.", what docker prints from ECR).

**Which registry** (one server plays every account and Region), in order:

1. the ``Host`` header ``<account>.dkr.ecr.<region>.localhost[:port]`` (or
   ``.amazonaws.com``): plain ``/v2/<repository>/...`` paths, as on ECR. On
   this machine ``*.localhost`` does not resolve (glibc ``files dns``, Go's
   resolver: checked with skopeo), so this needs a client that sets the Host
   header or resolves the name itself (curl, a ``resolve`` override);
2. a path prefix ``<account>/<region>``: the registry is
   ``<host:port>/<account>/<region>``, the ``proxyEndpoint``
   (``http://127.0.0.1:4566/111111111111/us-west-2``). Image references
   ``127.0.0.1:4566/111111111111/us-west-2/team-a/web:1`` become
   ``/v2/111111111111/us-west-2/team-a/web/...`` requests (every client), and
   ``<proxyEndpoint>/v2/team-a/web/...`` (a client appending the API path to
   the endpoint) is accepted too. Plain http: clients need their "insecure"
   switch (skopeo ``--src-tls-verify=false``).

Only requests without a SigV4 signature are taken as registry requests
(moto's services that use ``/v2/`` paths, such as API Gateway v2, are always
signed). ``GET /v2/`` (the ping) needs no registry: ``401`` with the
challenge, ``200`` with valid credentials.

Counted in ``calls`` (``registry:<METHOD> <endpoint>``, uploads as layer
uploads and parts); slowed by ``network`` (one round trip per request, the
body at the stream rate); not throttled by ``faults``; not in the meter
(which counts the requests that reach moto).

Our assumptions (undocumented): the password is an opaque signed string
naming the issuing account and Region and expiry (ECR's is an opaque
encrypted blob); an expired token is ``403 DENIED`` "Your authorization token
has expired. Reauthenticate and try again." (ECR's text), another password or
a user other than ``AWS`` ``403 DENIED`` "Not Authorized", no or unreadable
credentials ``401 UNAUTHORIZED`` with the challenge; a manifest ``PUT`` of an
image the repository already has with that tag (or untagged) succeeds
(``201``, no event: nothing changed), where ``PutImage`` answers
``ImageAlreadyExistsException``; ``Accept`` is honoured by refusing a stored
media type the client does not accept (``404 MANIFEST_UNKNOWN``), no
conversion; a manifest without a media type anywhere is served as an OCI
manifest (or index, if it has ``manifests``); only ``sha256`` digests;
empty blobs are accepted; no minimum chunk size; upload sessions never
expire (until a reset); ``DELETE`` of manifests and blobs is ``405
UNSUPPORTED`` (ECR deletes through ``BatchDeleteImage``); no ``_catalog``; the
tag list and the referrers index are never paginated unless ``n`` is given
(tags) and show only ACTIVE images (as ``ListImages`` by default).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from werkzeug.wrappers import Request, Response

from . import calls, network, store

TOKEN_LIFETIME = timedelta(hours=12)
_SECRET = os.urandom(32)  # tokens of an earlier server run are not ours
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
CHALLENGE_SERVICE = "ecr.amazonaws.com"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPES = {
    OCI_MANIFEST, OCI_INDEX,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
}

_REGION = r"[a-z]{2}(?:-[a-z]+)+-\d+"
_HOST = re.compile(rf"^(\d{{12}})\.dkr\.ecr\.({_REGION})\.(?:localhost|amazonaws\.com)(?::\d+)?$")
_BASE_PREFIX = re.compile(rf"^/(\d{{12}})/({_REGION})/v2(/.*)?$")
_NAME_PREFIX = re.compile(rf"^/(\d{{12}})/({_REGION})(/.*)?$")
# ECR's repositoryName pattern (API Reference).
_NAME = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_RANGE = re.compile(r"^(?:bytes=)?(\d+)-(\d+)$")

_ROUTES = [
    ("manifests", re.compile(r"^/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")),
    ("blobs/uploads", re.compile(r"^/(?P<name>.+)/blobs/uploads/?(?P<session>[^/]*)$")),
    ("blobs", re.compile(r"^/(?P<name>.+)/blobs/(?P<digest>[^/]+)$")),
    ("tags/list", re.compile(r"^/(?P<name>.+)/tags/list$")),
    ("referrers", re.compile(r"^/(?P<name>.+)/referrers/(?P<digest>[^/]+)$")),
]


# --- GetAuthorizationToken ------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_password(account: str, region: str, expires: datetime) -> str:
    claims = _b64(json.dumps({"account": account, "region": region,
                              "expiresAt": int(expires.timestamp())}).encode())
    signature = _b64(hmac.new(_SECRET, claims.encode(), hashlib.sha256).digest())
    return f"{claims}.{signature}"


def read_password(password: str) -> dict[str, Any] | None:
    """The claims of a password this server issued (expired or not); None otherwise."""
    claims, _, signature = password.partition(".")
    expected = _b64(hmac.new(_SECRET, claims.encode(), hashlib.sha256).digest())
    if not signature or not hmac.compare_digest(signature, expected):
        return None
    try:
        parsed = json.loads(_unb64(claims))
    except (ValueError, binascii.Error):
        return None
    return parsed if isinstance(parsed, dict) else None


def proxy_endpoint(host: str, account: str, region: str) -> str:
    return f"http://{host}/{account}/{region}"


def _api_host(headers: Any) -> str:
    return headers.get("Host") or f"127.0.0.1:{os.environ.get('MOTO_PORT', '4566')}"


def get_authorization_token(self: Any) -> ActionResult:
    registry_ids = self._get_param("registryIds") or [self.current_account]
    expires = datetime.now(timezone.utc).replace(microsecond=0) + TOKEN_LIFETIME
    password = issue_password(self.current_account, self.region, expires)
    token = base64.b64encode(f"AWS:{password}".encode()).decode()
    host = _api_host(self.headers)
    return ActionResult({"authorizationData": [
        {"authorizationToken": token, "expiresAt": expires,
         "proxyEndpoint": proxy_endpoint(host, registry_id, self.region)}
        for registry_id in registry_ids
    ]})


# --- routing ------------------------------------------------------------------------------


@dataclass
class Target:
    """The registry a request addresses and how its URLs are spelled."""
    account: str | None
    region: str | None
    base: str  # before "/v2": "" or "/<account>/<region>" (the proxyEndpoint's path)
    prefix: str  # before the repository name in /v2 paths: "" or "<account>/<region>/"
    rest: str | None  # the path after "/v2" ("" or "/..."); None: not a registry path


def _signed(environ: dict[str, Any]) -> bool:
    if "AWS4-HMAC-SHA256" in environ.get("HTTP_AUTHORIZATION", ""):
        return True
    query = environ.get("QUERY_STRING", "")
    return "X-Amz-Signature=" in query or "X-Amz-Credential=" in query


def match(environ: dict[str, Any]) -> Target | None:
    """The registry request ``environ`` is, or None (an AWS request for moto)."""
    if _signed(environ):
        return None
    path = environ.get("PATH_INFO", "")
    is_v2 = path == "/v2" or path.startswith("/v2/")
    host = _HOST.match(environ.get("HTTP_HOST", ""))
    if host:
        return Target(host.group(1), host.group(2), "", "", path[3:] if is_v2 else None)
    based = _BASE_PREFIX.match(path)
    if based:
        return Target(based.group(1), based.group(2), f"/{based.group(1)}/{based.group(2)}", "",
                      based.group(3) or "")
    if not is_v2:
        return None
    rest = path[3:]
    named = _NAME_PREFIX.match(rest)
    if named:
        return Target(named.group(1), named.group(2), "", f"{named.group(1)}/{named.group(2)}/",
                      named.group(3) or "")
    return Target(None, None, "", "", rest)


# --- responses ------------------------------------------------------------------------------


class RegistryError(Exception):
    def __init__(self, status: int, code: str, message: str, detail: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail
        self.headers = headers or {}


def _response(status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str | None = None) -> Response:
    response = Response(body, status=status, headers={**API_VERSION, **(headers or {})})
    if headers and "Content-Length" in headers:  # a HEAD: the length of what GET would send
        response.headers["Content-Length"] = headers["Content-Length"]
    if content_type:
        response.headers["Content-Type"] = content_type
    else:
        del response.headers["Content-Type"]
    return response


def _json(status: int, body: Any, headers: dict[str, str] | None = None,
          content_type: str = "application/json") -> Response:
    return _response(status, json.dumps(body).encode(), headers, content_type)


def _error(err: RegistryError, method: str) -> Response:
    error: dict[str, Any] = {"code": err.code, "message": err.message}
    if err.detail is not None:
        error["detail"] = err.detail
    response = _json(err.status, {"errors": [error]}, err.headers)
    if method == "HEAD":
        response.set_data(b"")
    return response


def _unauthorized(target: Target, host: str, message: str) -> RegistryError:
    realm = f"http://{host}{target.base}/"
    return RegistryError(401, "UNAUTHORIZED", message, headers={
        "WWW-Authenticate": f'Basic realm="{realm}",service="{CHALLENGE_SERVICE}"'})


def _authenticate(request: Request, target: Target, host: str) -> dict[str, Any]:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "basic" or not credentials.strip():
        raise _unauthorized(target, host, "authentication required")
    try:
        user, sep, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _unauthorized(target, host, "authentication required")
    claims = read_password(password) if sep else None
    if user != "AWS" or claims is None:
        raise RegistryError(403, "DENIED", "Not Authorized")
    if claims.get("expiresAt", 0) <= time.time():
        raise RegistryError(403, "DENIED", "Your authorization token has expired. Reauthenticate and try again.")
    return claims


# --- the store ------------------------------------------------------------------------------------


def _repository(target: Target, name: str) -> Any:
    """The repository (call under store.LOCK); NAME_UNKNOWN if it does not exist."""
    from moto.ecr.models import ecr_backends

    try:
        repo = ecr_backends[target.account][target.region].repositories.get(name)
    except KeyError:  # a Region moto does not know
        repo = None
    if repo is None:
        raise RegistryError(404, "NAME_UNKNOWN", f"The repository with name '{name}' does not exist in the "
                            f"registry with id '{target.account}'", {"name": name})
    return repo


def _image(repo: Any, reference: str) -> Any:
    from . import storage_class

    if ":" in reference:
        image = next((i for i in repo.images if i.image_digest == reference), None)
    else:
        image = next((i for i in repo.images if reference in i.image_tags), None)
    if image is None or storage_class.status(image) != storage_class.ACTIVE:
        raise RegistryError(404, "MANIFEST_UNKNOWN", f"Requested image not found: '{reference}'",
                            {"reference": reference})
    return image


def _media_type(image: Any) -> str:
    if image.image_manifest_media_type:
        return str(image.image_manifest_media_type)
    try:
        parsed = json.loads(image.image_manifest)
    except ValueError:
        parsed = {}
    if isinstance(parsed, dict) and isinstance(parsed.get("mediaType"), str):
        return parsed["mediaType"]
    return OCI_INDEX if isinstance(parsed, dict) and "manifests" in parsed else OCI_MANIFEST


def _blob_available(target: Target, repo: Any, digest: str) -> int | None:
    """The blob's size if the repository has it (and not only for archived images)."""
    from . import storage_class

    if digest not in repo.layers or storage_class.layer_archived(repo, digest):
        return None
    data = store.get_blob(target.account or "", target.region or "", repo.name, digest)
    return None if data is None else len(data)


@dataclass
class Upload:
    account: str
    region: str
    repository: str
    data: bytearray = field(default_factory=bytearray)
    sha256: Any = field(default_factory=hashlib.sha256)


_uploads_lock = threading.Lock()
_uploads: dict[str, Upload] = {}


def _reset_uploads() -> None:
    with _uploads_lock:
        _uploads.clear()


def _append(upload: Upload, chunk: bytes) -> None:
    upload.data += chunk
    upload.sha256.update(chunk)
    if chunk:
        calls.record_part(upload.account, upload.region, upload.repository, len(chunk))


def _complete(target: Target, name: str, upload: Upload, digests: list[str]) -> str:
    """Finish an upload: the blob is the repository's (CompleteLayerUpload)."""
    digest = "sha256:" + upload.sha256.hexdigest()
    if not digests or digest not in digests:
        raise RegistryError(400, "DIGEST_INVALID", f"provided digest did not match uploaded content "
                            f"(computed {digest})", {"digest": digests[0] if digests else None})
    size = len(upload.data)
    with store.LOCK:
        repo = _repository(target, name)
        if digest in repo.layers and store.get_blob(upload.account, upload.region, name, digest) is not None:
            calls.record_layer(upload.account, upload.region, name, digest, size, already_exists=True)
        else:
            store.put_blob(upload.account, upload.region, name, digest, upload.data)
            repo.layers[digest] = size
            calls.record_layer(upload.account, upload.region, name, digest, size)
    return digest


# --- endpoints ----------------------------------------------------------------------------------------


@dataclass
class Call:
    request: Request
    target: Target
    host: str
    body: bytes

    def url(self, name: str, suffix: str) -> str:
        path = f"{self.target.base}/v2/{self.target.prefix}{name}/{suffix}"
        return f"http://{self.host}{quote(path, safe='/:@=&?')}"


def _manifest_get(call: Call, name: str, reference: str) -> Response:
    with store.LOCK:
        image = _image(_repository(call.target, name), reference)
        body = image.image_manifest.encode("utf-8")
        media_type = _media_type(image)
        digest = image.image_digest
    accept = call.request.accept_mimetypes
    if accept and not accept[media_type]:
        raise RegistryError(404, "MANIFEST_UNKNOWN", f"the manifest is a {media_type}, which the Accept "
                            f"header does not list", {"reference": reference, "mediaType": media_type})
    headers = {"Docker-Content-Digest": digest, "Content-Length": str(len(body)), "ETag": f'"{digest}"'}
    return _response(200, b"" if call.request.method == "HEAD" else body, headers, media_type)


def _manifest_put(call: Call, name: str, reference: str) -> Response:
    from moto.ecr.exceptions import ImageAlreadyExistsException, RepositoryNotFoundException

    from . import ecr

    is_digest = ":" in reference
    if not is_digest and not _TAG.match(reference):
        raise RegistryError(400, "TAG_INVALID", f"invalid tag '{reference}'", {"tag": reference})
    try:
        manifest = call.body.decode("utf-8")
        parsed = json.loads(manifest)
    except (UnicodeDecodeError, ValueError):
        raise RegistryError(400, "MANIFEST_INVALID", "manifest invalid: not JSON")
    if not isinstance(parsed, dict):
        raise RegistryError(400, "MANIFEST_INVALID", "manifest invalid: not a JSON object")
    content_type = (call.request.mimetype or "").strip()
    media_type = content_type if content_type in MANIFEST_MEDIA_TYPES else None
    if media_type is None and not isinstance(parsed.get("mediaType"), str):
        media_type = OCI_INDEX if "manifests" in parsed else OCI_MANIFEST
    digest = ecr.manifest_digest(manifest)
    try:
        ecr.push_image(call.target.account or "", call.target.region or "", name, None, manifest,
                       None if is_digest else reference, media_type, reference if is_digest else None)
    except ImageAlreadyExistsException:
        pass  # the same image (and tag) again: nothing changes
    except RepositoryNotFoundException as err:
        raise RegistryError(404, "NAME_UNKNOWN", err.message, {"name": name})
    except ServiceException as err:
        code = getattr(err, "code", "")
        if code == "ImageDigestDoesNotMatchException":
            raise RegistryError(400, "DIGEST_INVALID", err.message, {"digest": reference})
        if code in ("LayersNotFoundException", "ReferencedImagesNotFoundException"):
            missing = getattr(err, "missing", [])
            raise RegistryError(400, "MANIFEST_BLOB_UNKNOWN", err.message, {"digests": missing})
        if code == "ImageTagAlreadyExistsException":
            raise RegistryError(400, "TAG_INVALID", err.message, {"tag": reference})
        raise RegistryError(400, "MANIFEST_INVALID", err.message)
    headers = {"Location": call.url(name, f"manifests/{digest}"), "Docker-Content-Digest": digest}
    subject = parsed.get("subject")
    if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
        headers["OCI-Subject"] = subject["digest"]
    return _response(201, b"", headers)


def _blob(call: Call, name: str, digest: str) -> Response:
    if not _DIGEST.match(digest):
        raise RegistryError(400, "DIGEST_INVALID", f"invalid digest '{digest}'", {"digest": digest})
    with store.LOCK:
        size = _blob_available(call.target, _repository(call.target, name), digest)
    if size is None:
        raise RegistryError(404, "BLOB_UNKNOWN", f"blob unknown to registry: '{digest}'", {"digest": digest})
    headers = {"Docker-Content-Digest": digest}
    if call.request.method == "HEAD":
        return _response(200, b"", {**headers, "Content-Length": str(size)}, "application/octet-stream")
    location = f"http://{call.host}/_localaws/blobs/{call.target.account}/{call.target.region}/{name}/{digest}"
    return _response(307, b"", {**headers, "Location": location})


def _upload_headers(call: Call, name: str, session: str, upload: Upload) -> dict[str, str]:
    end = len(upload.data) - 1
    return {"Location": call.url(name, f"blobs/uploads/{session}"), "Range": f"0-{max(end, 0)}",
            "Docker-Upload-UUID": session, "Blob-Upload-Session-ID": session}


def _session(call: Call, name: str, session: str) -> Upload:
    with _uploads_lock:
        upload = _uploads.get(session)
    if upload is None or (upload.account, upload.region, upload.repository) != (
            call.target.account, call.target.region, name):
        raise RegistryError(404, "BLOB_UPLOAD_UNKNOWN", f"blob upload unknown to registry: '{session}'",
                            {"session": session})
    return upload


def _check_range(call: Call, name: str, session: str, upload: Upload) -> None:
    header = call.request.headers.get("Content-Range")
    if not header:
        return
    found = _RANGE.match(header.strip())
    if not found or int(found.group(1)) != len(upload.data) or int(found.group(2)) < int(found.group(1)):
        headers = _upload_headers(call, name, session, upload)
        raise RegistryError(416, "BLOB_UPLOAD_INVALID", f"Content-Range {header!r} does not continue the "
                            f"upload at byte {len(upload.data)}", headers=headers)


def _finished(call: Call, name: str, digest: str) -> Response:
    return _response(201, b"", {"Location": call.url(name, f"blobs/{digest}"), "Docker-Content-Digest": digest})


def _uploads_endpoint(call: Call, name: str, session: str) -> Response:
    method = call.request.method
    digests = call.request.args.getlist("digest")
    if not session:
        if method != "POST":
            raise RegistryError(405, "UNSUPPORTED", f"{method} is not supported here")
        with store.LOCK:
            _repository(call.target, name)
        upload = Upload(call.target.account or "", call.target.region or "", name)
        if digests:  # monolithic upload in one request
            _append(upload, call.body)
            return _finished(call, name, _complete(call.target, name, upload, digests))
        session = uuid.uuid4().hex
        with _uploads_lock:
            _uploads[session] = upload
        return _response(202, b"", _upload_headers(call, name, session, upload))
    upload = _session(call, name, session)
    if method == "GET":
        return _response(204, b"", _upload_headers(call, name, session, upload))
    if method == "DELETE":
        with _uploads_lock:
            _uploads.pop(session, None)
        return _response(204, b"")
    if method == "PATCH":
        _check_range(call, name, session, upload)
        _append(upload, call.body)
        return _response(202, b"", _upload_headers(call, name, session, upload))
    if method == "PUT":
        if not digests:
            raise RegistryError(400, "DIGEST_INVALID", "the digest parameter is required to finish an upload")
        _check_range(call, name, session, upload)
        _append(upload, call.body)
        with _uploads_lock:
            _uploads.pop(session, None)
        return _finished(call, name, _complete(call.target, name, upload, digests))
    raise RegistryError(405, "UNSUPPORTED", f"{method} is not supported here")


def _tags(call: Call, name: str) -> Response:
    from . import storage_class

    with store.LOCK:
        repo = _repository(call.target, name)
        tags = sorted({t for i in repo.images if storage_class.status(i) == storage_class.ACTIVE
                       for t in i.image_tags})
    last = call.request.args.get("last")
    if last:
        tags = [t for t in tags if t > last]
    headers: dict[str, str] = {}
    n = call.request.args.get("n")
    if n is not None:
        if not n.isdigit():
            raise RegistryError(400, "PAGINATION_NUMBER_INVALID", f"invalid number of results: {n!r}")
        limit = int(n)
        if len(tags) > limit and limit > 0:
            tags = tags[:limit]
            path = f"{call.target.base}/v2/{call.target.prefix}{name}/tags/list?n={limit}&last={quote(tags[-1])}"
            headers["Link"] = f'<{path}>; rel="next"'
        elif limit == 0:
            tags = []
    return _json(200, {"name": call.target.prefix + name, "tags": tags}, headers)


def _referrers(call: Call, name: str, digest: str) -> Response:
    from . import referrers, storage_class

    if not _DIGEST.match(digest):
        raise RegistryError(400, "DIGEST_INVALID", f"invalid digest '{digest}'", {"digest": digest})
    with store.LOCK:
        repo = _repository(call.target, name)
        found = [referrers.describe(i) for i in referrers.referrers_of(repo, digest)
                 if storage_class.status(i) == storage_class.ACTIVE]
    headers: dict[str, str] = {}
    wanted = call.request.args.getlist("artifactType")
    if wanted:
        found = [r for r in found if r.get("artifactType") in wanted]
        headers["OCI-Filters-Applied"] = "artifactType"
    manifests = []
    for r in found:
        descriptor = {"mediaType": r["mediaType"], "digest": r["digest"], "size": r["size"]}
        if r.get("artifactType"):
            descriptor["artifactType"] = r["artifactType"]
        if r.get("annotations"):
            descriptor["annotations"] = r["annotations"]
        manifests.append(descriptor)
    return _json(200, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, headers,
                 content_type=OCI_INDEX)


def _dispatch(call: Call) -> tuple[str, Response]:
    """(the endpoint's name for ``calls``, the answer)."""
    method, rest = call.request.method, call.target.rest
    if rest in ("", "/"):
        return "/v2/", _json(200, {})
    if call.target.account is None:
        raise RegistryError(404, "NAME_UNKNOWN", "no registry in the request: use the proxyEndpoint of "
                            "GetAuthorizationToken (http://<host>/<account>/<region>) or the Host "
                            "<account>.dkr.ecr.<region>.localhost")
    for kind, route in _ROUTES:
        found = route.match(rest or "")
        if not found:
            continue
        name = found.group("name")
        if not _NAME.match(name):
            raise RegistryError(400, "NAME_INVALID", f"invalid repository name '{name}'", {"name": name})
        if kind == "manifests":
            if method in ("GET", "HEAD"):
                return kind, _manifest_get(call, name, found.group("ref"))
            if method == "PUT":
                return kind, _manifest_put(call, name, found.group("ref"))
        elif kind == "blobs/uploads":
            return kind, _uploads_endpoint(call, name, found.group("session"))
        elif kind == "blobs":
            if method in ("GET", "HEAD"):
                return kind, _blob(call, name, found.group("digest"))
        elif kind == "tags/list" and method == "GET":
            return kind, _tags(call, name)
        elif kind == "referrers" and method == "GET":
            return kind, _referrers(call, name, found.group("digest"))
        raise RegistryError(405, "UNSUPPORTED", f"{method} {kind} is not supported")
    raise RegistryError(404, "NAME_UNKNOWN", f"no such endpoint: /v2{rest}")


def _kind_of(rest: str | None) -> str:
    if rest in ("", "/"):
        return "/v2/"
    for kind, route in _ROUTES:
        if rest and route.match(rest):
            return kind
    return "?"


def wsgi(target: Target, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Answer one registry request."""
    request = Request(environ)
    body = request.get_data() if request.method in ("PUT", "PATCH", "POST") else b""
    network.round_trip(len(body))
    host = request.headers.get("Host") or f"127.0.0.1:{os.environ.get('MOTO_PORT', '4566')}"
    claims: dict[str, Any] | None = None
    kind = _kind_of(target.rest)
    try:
        if target.rest is None:
            raise RegistryError(404, "NAME_UNKNOWN", f"not a registry path: {request.path}")
        claims = _authenticate(request, target, host)
        kind, response = _dispatch(Call(request, target, host, body))
    except RegistryError as err:
        response = _error(err, request.method)
    account = target.account or (claims or {}).get("account")
    region = target.region or (claims or {}).get("region")
    if account and region:
        calls.record_call(account, region, f"registry:{request.method} {kind}")
    return response(environ, start_response)


def install() -> None:
    from moto.ecr.responses import ECRResponse

    ECRResponse.get_authorization_token = get_authorization_token  # type: ignore[method-assign]
    store.on_reset(_reset_uploads)
