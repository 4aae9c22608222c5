"""ECR behaviour that moto 5.2.5 lacks or gets wrong.

Each patch reproduces a fact of the Amazon ECR API Reference / User Guide:

PutImage (``ECRResponse.put_image``)
- The image digest is the sha256 of the manifest bytes (moto invents one from
  the layer digests when ``imageDigest`` is not given); an ``imageDigest`` that
  differs from it fails with ``ImageDigestDoesNotMatchException``.
- "LayersNotFoundException: The specified layers could not be found": every
  blob an image manifest references (config and layers, Docker v2 / OCI; the
  ``fsLayers`` of schema 1) must have been uploaded to that repository. moto
  accepts anything, so a copy that skips blobs would pass here and fail on AWS.
- "ReferencedImagesNotFoundException: The manifest list is referencing an
  image that does not exist": the children of an image index / manifest list
  must already be images of the repository.
- A missing repository is ``RepositoryNotFoundException`` (HTTP 400, modeled);
  moto raised a bare ``Exception`` (HTTP 500). ``registryId`` is honoured.
- After success: the ``ECR Image Action`` PUSH event in the source account and
  Region (User Guide, "Amazon ECR events and EventBridge": ``image-tag`` only
  for tagged pushes) and the replication hand-off (see ``replication``).
- Tags: "ImageAlreadyExistsException: The specified image has already been
  pushed, and there were no changes to the manifest or image tag" (also for an
  untagged re-push, which moto turned into dropping the image's tag);
  "ImageTagAlreadyExistsException: ... tag that already exists. The repository
  is configured for tag immutability" (moto answered ImageAlreadyExists); in a
  mutable repository a tag moves and the image that had it stays, untagged
  (moto deleted that image).
- A push of an archived (or activating) image restores it at once
  (``storage_class``), then goes on as any push.
- Untagged pushes are always allowed, whatever the tag mutability. moto
  matched exclusion filters with ``re.match(filter, tag)``: HTTP 500 for an
  untagged push into a ``*_WITH_EXCLUSION`` repository (``tag`` None) and for
  a wildcard filter that is no regex (``*-dev``); tags are matched here as
  ECR's ``WILDCARD`` filters (``fnmatch``), see ``tag_is_immutable``.

CompleteLayerUpload (``ECRBackend.complete_layer_upload``)
- The bytes are kept (moto keeps only the size) so GetDownloadUrlForLayer and
  replication can serve them.
- ``InvalidLayerException`` when ``layerDigests`` does not name the digest ECR
  computed; ``EmptyUploadException`` for an upload without parts;
  ``LayerAlreadyExistsException`` when the repository already has that layer
  (clients are expected to ask BatchCheckLayerAvailability first).

UploadLayerPart / CompleteLayerUpload
- "LayerPartTooSmallException: Layer parts must be at least 5 MiB in size"
  (every part but the last); moto accepts any size.
- Speed (not behaviour): moto decoded every ECR request body to str and ran
  ``parse_qsl`` over it, then ``json.loads`` the whole body once per
  parameter, and hashed a finished layer twice. For a 10 MiB part (a 13 MiB
  base64 JSON string) that was ~0.3 s of server time; now the body is kept
  raw and parsed once, the base64 decoded once, the layer hashed as its parts
  arrive and kept without a copy: ~0.1 s per 10 MiB part.
- Each accepted part and each completed (or LayerAlreadyExists) upload is
  recorded by ``calls``.

BatchGetImage
- The ``imageId`` of an image asked for by tag carries that tag (moto reports
  the image's most recent tag instead when it has several).

GetDownloadUrlForLayer (moto: 500 NotImplemented)
- Returns ``downloadUrl`` + ``layerDigest``; the URL is an http URL on this
  server (``/_localaws/blobs/<account>/<region>/<repository>/<digest>``) whose
  GET streams the exact blob (on AWS: a pre-signed S3 URL).
  ``LayersNotFoundException`` / ``RepositoryNotFoundException`` otherwise.

DescribeImageReplicationStatus (moto: 500 NotImplemented)
- ``repositoryName``, ``imageId`` {``imageDigest``, ``imageTag`` when asked by
  tag}, ``replicationStatuses`` [{``region``, ``registryId``, ``status``
  IN_PROGRESS|COMPLETE|FAILED, ``failureCode`` when FAILED}] for each
  destination selected when the image was pushed (none for images pushed
  before the configuration, or for replicas). ``ImageNotFoundException`` /
  ``RepositoryNotFoundException``.

PutReplicationConfiguration (``ECRBackend.put_replication_configuration``)
- moto refuses more than one rule ("This feature is disabled"); ECR allows up
  to 10 rules, 25 unique destinations, 100 ``PREFIX_MATCH`` filters per rule,
  never the source registry itself as a destination.
- Emits the ``AWS API Call via CloudTrail`` event for it (shape of
  shared/events/cloudtrail-put-replication-configuration.json).

BatchDeleteImage
- ``ECR Image Action`` DELETE event per deleted image id (deletes are not
  replicated).
"""

from __future__ import annotations

import base64
import binascii
import copy
import fnmatch
import hashlib
import json
import os
from typing import Any

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult

from . import calls, store
from .eventbridge import emit

INDEX_MEDIA_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
SCHEMA1_MEDIA_TYPES = {
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
}


class LayersNotFoundException(ServiceException):
    code = "LayersNotFoundException"


class ReferencedImagesNotFoundException(ServiceException):
    code = "ReferencedImagesNotFoundException"


class ImageDigestDoesNotMatchException(ServiceException):
    code = "ImageDigestDoesNotMatchException"


class InvalidLayerException(ServiceException):
    code = "InvalidLayerException"


class EmptyUploadException(ServiceException):
    code = "EmptyUploadException"


class LayerAlreadyExistsException(ServiceException):
    code = "LayerAlreadyExistsException"


class LayerPartTooSmallException(ServiceException):
    code = "LayerPartTooSmallException"


MIN_PART_SIZE = 5 * 1024 * 1024


class ImageTagAlreadyExistsException(ServiceException):
    code = "ImageTagAlreadyExistsException"


def tag_is_immutable(repo: Any, tag: str) -> bool:
    """IMMUTABLE, or *_WITH_EXCLUSION with the tag (not) matching a wildcard filter."""
    mutability = str(getattr(repo.image_tag_mutability, "value", repo.image_tag_mutability))
    filters = [f.get("filter", "") for f in repo.image_tag_mutability_exclusion_filters or []]
    excluded = any(fnmatch.fnmatchcase(tag, f) for f in filters)
    if mutability == "IMMUTABLE":
        return True
    if mutability == "IMMUTABLE_WITH_EXCLUSION":
        return not excluded
    if mutability == "MUTABLE_WITH_EXCLUSION":
        return excluded
    return False


def untag(image: Any, tag: str) -> None:
    """Take ``tag`` off ``image``; an image left without tags stays, untagged."""
    image.image_tags.remove(tag)
    image.image_tag = image.image_tags[-1] if image.image_tags else None


def manifest_digest(manifest: str) -> str:
    return "sha256:" + hashlib.sha256(manifest.encode("utf-8")).hexdigest()


def media_type_of(manifest: dict[str, Any], given: str | None) -> str | None:
    return given or manifest.get("mediaType")


def referenced_blobs(manifest: dict[str, Any], media_type: str | None) -> list[str]:
    """Digests of the blobs an image manifest needs (config + layers)."""
    if media_type in INDEX_MEDIA_TYPES or "manifests" in manifest:
        return []
    if media_type in SCHEMA1_MEDIA_TYPES or "fsLayers" in manifest:
        return list(dict.fromkeys(l["blobSum"] for l in manifest.get("fsLayers", [])))
    digests = []
    config = manifest.get("config")
    if isinstance(config, dict) and config.get("digest"):
        digests.append(config["digest"])
    for layer in manifest.get("layers", []):
        # Foreign (non-distributable) layers live elsewhere and are never uploaded.
        if layer.get("urls") or "foreign" in layer.get("mediaType", ""):
            continue
        digests.append(layer["digest"])
    return list(dict.fromkeys(digests))


def referenced_manifests(manifest: dict[str, Any], media_type: str | None) -> list[str]:
    """Digests of the child manifests of an image index / manifest list."""
    if media_type in INDEX_MEDIA_TYPES or "manifests" in manifest:
        return list(dict.fromkeys(m["digest"] for m in manifest.get("manifests", [])))
    return []


def _find_image(repo: Any, digest: str) -> Any:
    return next((i for i in repo.images if i.image_digest == digest), None)


def _check_references(repo: Any, registry_id: str, parsed: dict[str, Any], media_type: str | None) -> None:
    missing = [d for d in referenced_blobs(parsed, media_type) if d not in repo.layers]
    if missing:
        error: ServiceException = LayersNotFoundException(
            f"Layers with digests '{missing}' required for pushing image into "
            f"repository with name '{repo.name}' in the registry with id "
            f"'{registry_id}' do not exist"
        )
        error.missing = missing  # type: ignore[attr-defined]  # for the registry's error details
        raise error
    missing = [d for d in referenced_manifests(parsed, media_type) if _find_image(repo, d) is None]
    if missing:
        error = ReferencedImagesNotFoundException(
            f"Manifests with digests '{missing}' referenced by the manifest list "
            f"do not exist in the repository with name '{repo.name}' in the "
            f"registry with id '{registry_id}'"
        )
        error.missing = missing  # type: ignore[attr-defined]
        raise error


def _push_event_detail(repo_name: str, digest: str, tag: str | None, media_type: str | None,
                       parsed: dict[str, Any]) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "result": "SUCCESS",
        "repository-name": repo_name,
        "image-digest": digest,
        "action-type": "PUSH",
    }
    if tag:
        detail["image-tag"] = tag
    if media_type:
        detail["manifest-media-type"] = media_type
    config = parsed.get("config")
    if isinstance(config, dict) and config.get("mediaType"):
        detail["artifact-media-type"] = config["mediaType"]
    return detail


def put_image(self: Any) -> ActionResult:
    image = push_image(
        self.current_account, self.region, self._get_param("repositoryName"), self._get_param("registryId"),
        self._get_param("imageManifest"), self._get_param("imageTag"),
        self._get_param("imageManifestMediaType"), self._get_param("imageDigest"),
    )
    return ActionResult({"image": image})


def push_image(account: str, region: str, repository_name: str, registry_id: str | None, manifest: Any,
               tag: str | None, given_media_type: str | None, given_digest: str | None) -> Any:
    """PutImage's checks and effects, for the ECR API and the registry's manifest PUT
    (``registry``) alike: the image (new or restored), after its PUSH event and replication
    hand-off; the ServiceExceptions PutImage answers otherwise."""
    from moto.ecr.exceptions import ImageAlreadyExistsException, InvalidParameterException
    from moto.ecr.models import ecr_backends

    from . import replication, storage_class

    with store.LOCK:
        backend = ecr_backends[account][region]
        repo = backend._get_repository(repository_name, registry_id)
        try:
            parsed = json.loads(manifest)
        except (TypeError, ValueError):
            raise InvalidParameterException(
                "Invalid parameter at 'ImageManifest' failed to satisfy constraint: 'Invalid JSON syntax'"
            )
        if not isinstance(parsed, dict):
            raise InvalidParameterException(
                "Invalid parameter at 'ImageManifest' failed to satisfy constraint: 'Invalid JSON syntax'"
            )
        digest = manifest_digest(manifest)
        if given_digest and given_digest != digest:
            raise ImageDigestDoesNotMatchException(
                f"Invalid parameter at 'imageDigest' failed to satisfy constraint: "
                f"'The specified image digest {given_digest} does not match the "
                f"digest {digest} calculated for the image manifest'"
            )
        media_type = media_type_of(parsed, given_media_type)
        _check_references(repo, repo.registry_id, parsed, media_type)

        existing = _find_image(repo, digest)
        # "When you push an image that is currently archived, that image will be
        # immediately restored" (User Guide, Restoring an image).
        restoring = existing is not None and storage_class.status(existing) != storage_class.ACTIVE
        if existing is not None and not restoring and (not tag or tag in existing.image_tags):
            raise ImageAlreadyExistsException(
                repository_name=repository_name, registry_id=repo.registry_id,
                digest=digest, image_tag=tag or "null",
            )
        holder = next((i for i in repo.images if tag and tag in i.image_tags and i is not existing), None)
        if holder is not None:
            if tag_is_immutable(repo, tag):
                raise ImageTagAlreadyExistsException(
                    f"The image tag '{tag}' already exists in the '{repository_name}' repository "
                    f"and cannot be overwritten because the repository is immutable."
                )
            untag(holder, tag)
        if restoring:
            storage_class.activate(existing)
            if tag and tag not in existing.image_tags:
                existing.update_tag(tag)
            image = existing
        else:
            image = backend.put_image(repository_name, manifest, tag, given_media_type, digest)
        emit(account, region, "ECR Image Action",
             _push_event_detail(repository_name, digest, tag, image.image_manifest_media_type, parsed))
        replication.on_push(account, region, repository_name, image, tag)
    return image


def resolve_image_tag_mutability(self: Any, repository: Any, proposed_image_tag: str | None) -> list[Any]:
    """moto's ``ECRBackend._resolve_image_tag_mutability`` (called by its
    put_image): the images holding the tag; ImageTagAlreadyExists if the tag
    is immutable there. Nothing for an untagged push. (Our ``put_image`` has
    already refused or moved the tag, so this finds nothing then.)"""
    if not proposed_image_tag:
        return []
    holders = [i for i in repository.images if proposed_image_tag in i.image_tags]
    if holders and tag_is_immutable(repository, proposed_image_tag):
        raise ImageTagAlreadyExistsException(
            f"The image tag '{proposed_image_tag}' already exists in the '{repository.name}' repository "
            f"and cannot be overwritten because the repository is immutable."
        )
    return holders


def complete_layer_upload_factory(original: Any) -> Any:
    def complete_layer_upload(self: Any, repository_name: str, upload_id: str,
                              layer_digests: list[str], registry_id: str | None = None) -> dict[str, Any]:
        with store.LOCK:
            repo = self._get_repository(repository_name, registry_id)
            upload = repo.uploads.get(upload_id)
            if upload is None:
                return original(self, repository_name, upload_id, layer_digests, registry_id=registry_id)
            if not upload.layer_parts:
                raise EmptyUploadException(
                    f"No parts were uploaded for upload with id '{upload_id}' in the "
                    f"repository with name '{repository_name}' in the registry with id "
                    f"'{repo.registry_id}'"
                )
            sizes = getattr(upload, "part_sizes", [])
            if any(size < MIN_PART_SIZE for size in sizes[:-1]):
                raise LayerPartTooSmallException(
                    f"Layer parts must be at least 5 MiB in size (upload with id '{upload_id}' "
                    f"has parts of {sizes} bytes)"
                )
            hasher = upload.__dict__.get("sha256")
            if hasher is None:  # parts written by something else than UploadLayerPart
                hasher = hashlib.sha256(upload.layer_parts)
            digest = "sha256:" + hasher.hexdigest()
            if layer_digests and digest not in layer_digests:
                raise InvalidLayerException(
                    f"The layer digest calculated for upload with id '{upload_id}' "
                    f"({digest}) does not match the specified digests {layer_digests}"
                )
            size = len(upload.layer_parts)
            if digest in repo.layers:
                del repo.uploads[upload_id]
                calls.record_layer(self.account_id, self.region_name, repository_name, digest, size,
                                   already_exists=True)
                raise LayerAlreadyExistsException(
                    f"Layer with digest '{digest}' already exists in the repository with "
                    f"name '{repository_name}' in the registry with id '{repo.registry_id}'"
                )
            # What moto's complete_layer_upload does, without hashing the bytes again.
            # The upload's buffer becomes the blob (no copy): the upload is gone
            # after this, so nothing writes to it any more.
            store.put_blob(self.account_id, self.region_name, repository_name, digest, upload.layer_parts)
            repo.layers[digest] = size
            del repo.uploads[upload_id]
            calls.record_layer(self.account_id, self.region_name, repository_name, digest, size)
            return {
                "registryId": repo.registry_id,
                "repositoryName": repository_name,
                "uploadId": upload_id,
                "layerDigest": digest,
            }

    return complete_layer_upload


def upload_layer_part_factory(original: Any) -> Any:
    def upload_layer_part(self: Any, repository_name: str, upload_id: str, part_first_byte: int,
                          part_last_byte: int, layer_part_blob: bytes, registry_id: str | None = None) -> dict[str, Any]:
        with store.LOCK:
            result = original(self, repository_name, upload_id, part_first_byte, part_last_byte,
                              layer_part_blob, registry_id=registry_id)
            upload = self._get_repository(repository_name, registry_id).uploads[upload_id]
            size = len(layer_part_blob or b"")
            upload.__dict__.setdefault("part_sizes", []).append(size)
            # Hash as the parts arrive (in order: moto checks partFirstByte), so that
            # CompleteLayerUpload of a large layer need not read it all again.
            upload.__dict__.setdefault("sha256", hashlib.sha256()).update(layer_part_blob or b"")
            calls.record_part(self.account_id, self.region_name, repository_name, size)
            return result

    return upload_layer_part


def upload_layer_part_response(self: Any) -> ActionResult:
    """moto's UploadLayerPart handler, decoding the base64 blob without first
    re-encoding the (10 MiB-part: 13 MiB) string (``b64decode`` does)."""
    blob = self._get_param("layerPartBlob")
    if isinstance(blob, str):
        try:
            blob = binascii.a2b_base64(blob)
        except (binascii.Error, ValueError):
            blob = base64.b64decode(blob)  # same error moto would raise
    return ActionResult(self.ecr_backend.upload_layer_part(
        self._get_param("repositoryName"), self._get_param("uploadId"),
        self._get_param("partFirstByte"), self._get_param("partLastByte"), blob,
        registry_id=self._get_param("registryId"),
    ))


def setup_class_factory(original: Any) -> Any:
    """ECR speaks AWS JSON 1.1 only. moto's setup_class also decodes the body to
    str and runs ``parse_qsl`` over it, which for an UploadLayerPart (a 13 MiB
    JSON string) costs as much as the rest of the call; keep the raw body."""
    def setup_class(self: Any, request: Any, full_url: str | None = None, headers: Any = None,
                    use_raw_body: bool | None = None) -> None:
        is_json = "json" in (request.headers.get("Content-Type") or "")
        original(self, request, full_url, headers, use_raw_body=True if is_json else use_raw_body)

    return setup_class


def get_param_factory(original: Any) -> Any:
    """moto's ``_get_param`` runs ``json.loads`` over the whole body for every
    parameter (six times per UploadLayerPart); parse a JSON body once."""
    def _get_param(self: Any, param_name: str, if_none: Any = None) -> Any:
        params = self.__dict__.get("_localaws_params")
        if params is None:
            params = False
            body = getattr(self, "body", None)
            if body:
                try:
                    parsed = json.loads(body)
                    params = parsed if isinstance(parsed, dict) else False
                except ValueError:
                    pass
            self.__dict__["_localaws_params"] = params
        if params is False:
            return original(self, param_name, if_none)
        return params[param_name] if param_name in params else if_none

    return _get_param


def batch_get_image_factory(original: Any) -> Any:
    def batch_get_image(self: Any, repository_name: str, registry_id: str | None = None,
                        image_ids: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        response = original(self, repository_name, registry_id, image_ids)
        images = []
        for image_id in image_ids or []:
            for image in self.repositories[repository_name].images:
                by_digest = image_id.get("imageDigest") and image.image_digest == image_id["imageDigest"]
                by_tag = image_id.get("imageTag") and image_id["imageTag"] in image.image_tags
                if by_digest or by_tag:
                    if image_id.get("imageTag"):
                        image = copy.copy(image)
                        image.image_tag = image_id["imageTag"]
                    images.append(image)
        response["images"] = images
        return response

    return batch_get_image


def get_download_url_for_layer(self: Any) -> ActionResult:
    repository_name = self._get_param("repositoryName")
    registry_id = self._get_param("registryId")
    layer_digest = self._get_param("layerDigest")
    account, region = self.current_account, self.region
    with store.LOCK:
        repo = self.ecr_backend._get_repository(repository_name, registry_id)
        if layer_digest not in repo.layers or store.get_blob(account, region, repository_name, layer_digest) is None:
            raise LayersNotFoundException(
                f"Layer with digest '{layer_digest}' does not exist in the repository "
                f"with name '{repository_name}' in the registry with id '{repo.registry_id}'"
            )
    host = self.headers.get("Host") or f"127.0.0.1:{os.environ.get('MOTO_PORT', '4566')}"
    url = f"http://{host}/_localaws/blobs/{account}/{region}/{repository_name}/{layer_digest}"
    return ActionResult({"downloadUrl": url, "layerDigest": layer_digest})


def describe_image_replication_status(self: Any) -> ActionResult:
    repository_name = self._get_param("repositoryName")
    registry_id = self._get_param("registryId")
    image_id = self._get_param("imageId") or {}
    with store.LOCK:
        repo = self.ecr_backend._get_repository(repository_name, registry_id)
        image = repo._get_image(image_id.get("imageTag"), image_id.get("imageDigest"))
        digest = image.image_digest
        statuses = store.get_statuses((self.current_account, self.region, repository_name, digest))
    out_id = {"imageDigest": digest}
    if image_id.get("imageTag"):
        out_id["imageTag"] = image_id["imageTag"]
    return ActionResult({
        "repositoryName": repository_name,
        "imageId": out_id,
        "replicationStatuses": statuses,
    })


MAX_RULES = 10
MAX_UNIQUE_DESTINATIONS = 25
MAX_FILTERS_PER_RULE = 100


def put_replication_configuration(self: Any, replication_config: dict[str, Any]) -> dict[str, Any]:
    from moto.ecr.exceptions import InvalidParameterException

    def invalid(reason: str) -> InvalidParameterException:
        return InvalidParameterException(
            f"Invalid parameter at 'replicationConfiguration' failed to satisfy constraint: '{reason}'"
        )

    rules = replication_config.get("rules") or []
    if len(rules) > MAX_RULES:
        raise invalid(f"Replication configuration cannot have more than {MAX_RULES} rules")
    destinations = set()
    for rule in rules:
        for dest in rule.get("destinations") or []:
            if dest["region"] == self.region_name and dest["registryId"] == self.account_id:
                raise invalid("Replication destination cannot be the same as the source registry")
            destinations.add((dest["region"], dest["registryId"]))
        filters = rule.get("repositoryFilters") or []
        if len(filters) > MAX_FILTERS_PER_RULE:
            raise invalid(f"A rule cannot have more than {MAX_FILTERS_PER_RULE} repository filters")
        for f in filters:
            if f.get("filterType") != "PREFIX_MATCH":
                raise invalid("Only the PREFIX_MATCH filter type is supported")
    if len(destinations) > MAX_UNIQUE_DESTINATIONS:
        raise invalid(f"Replication configuration cannot have more than {MAX_UNIQUE_DESTINATIONS} unique destinations")
    with store.LOCK:
        self.replication_config = {"rules": rules}
    return {"replicationConfiguration": self.replication_config}


def _caller_identity(self: Any) -> dict[str, Any]:
    from moto.sts.models import sts_backends

    try:
        role = sts_backends[self.current_account]["aws"].get_assumed_role_from_access_key(self.access_key)
    except Exception:
        role = None
    if role is not None:
        return {"type": "AssumedRole", "accountId": self.current_account, "arn": role.arn}
    return {"type": "IAMUser", "accountId": self.current_account}


def put_replication_configuration_response_factory(original: Any) -> Any:
    def put_replication_configuration_response(self: Any) -> ActionResult:
        from moto.core.utils import iso_8601_datetime_without_milliseconds, utcnow

        result = original(self)
        now = iso_8601_datetime_without_milliseconds(utcnow())
        emit(self.current_account, self.region, "AWS API Call via CloudTrail", {
            "eventVersion": "1.08",
            "userIdentity": _caller_identity(self),
            "eventTime": now,
            "eventSource": "ecr.amazonaws.com",
            "eventName": "PutReplicationConfiguration",
            "awsRegion": self.region,
            "requestParameters": {
                "replicationConfiguration": self._get_param("replicationConfiguration"),
            },
            "responseElements": None,
            "eventType": "AwsApiCall",
            "recipientAccountId": self.current_account,
        })
        return result

    return put_replication_configuration_response


def batch_delete_image_factory(original: Any) -> Any:
    def batch_delete_image(self: Any) -> ActionResult:
        repository_name = self._get_param("repositoryName")
        with store.LOCK:
            result = original(self)
            for image_id in result.result.get("imageIds", []):
                detail: dict[str, Any] = {
                    "result": "SUCCESS",
                    "repository-name": repository_name,
                    "image-digest": image_id.image_digest,
                    "action-type": "DELETE",
                }
                if image_id.image_tag:
                    detail["image-tag"] = image_id.image_tag
                emit(self.current_account, self.region, "ECR Image Action", detail)
        return result

    return batch_delete_image


def image_size_in_bytes(self: Any) -> int | None:
    """`imageSizeInBytes` as ECR reports it: the sum of the (compressed) layer sizes the
    manifest lists (moto reports the config blob's size). An index lists no layers: none."""
    try:
        manifest = json.loads(self.image_manifest)
    except ValueError:
        return None
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        return None
    return sum(int(layer.get("size", 0)) for layer in layers if isinstance(layer, dict))


def install() -> None:
    from moto.ecr.models import ECRBackend, Image
    from moto.ecr.responses import ECRResponse

    Image.get_image_size_in_bytes = image_size_in_bytes  # type: ignore[method-assign]

    ECRResponse.put_image = put_image  # type: ignore[method-assign]
    ECRResponse.setup_class = setup_class_factory(ECRResponse.setup_class)  # type: ignore[method-assign]
    ECRResponse._get_param = get_param_factory(ECRResponse._get_param)  # type: ignore[method-assign]
    ECRResponse.upload_layer_part = upload_layer_part_response  # type: ignore[method-assign]
    ECRResponse.get_download_url_for_layer = get_download_url_for_layer  # type: ignore[method-assign,assignment]
    ECRResponse.describe_image_replication_status = describe_image_replication_status  # type: ignore[attr-defined]
    ECRResponse.batch_delete_image = batch_delete_image_factory(ECRResponse.batch_delete_image)  # type: ignore[method-assign]
    ECRResponse.put_replication_configuration = put_replication_configuration_response_factory(  # type: ignore[method-assign]
        ECRResponse.put_replication_configuration
    )
    ECRBackend.complete_layer_upload = complete_layer_upload_factory(ECRBackend.complete_layer_upload)  # type: ignore[method-assign]
    ECRBackend.put_replication_configuration = put_replication_configuration  # type: ignore[method-assign]
    ECRBackend.upload_layer_part = upload_layer_part_factory(ECRBackend.upload_layer_part)  # type: ignore[method-assign]
    ECRBackend.batch_get_image = batch_get_image_factory(ECRBackend.batch_get_image)  # type: ignore[method-assign]
    ECRBackend._resolve_image_tag_mutability = resolve_image_tag_mutability  # type: ignore[method-assign]
