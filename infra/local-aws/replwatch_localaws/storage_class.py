"""ECR's archive storage class: UpdateImageStorageClass and what it changes.

moto 5.2.5 has no storage classes (UpdateImageStorageClass: HTTP 500). AWS
facts reproduced (ECR API Reference: ``UpdateImageStorageClass``,
``ImageDetail``, ``DescribeImagesFilter``, ``ListImagesFilter``,
``LayerAvailability``; User Guide: "Archiving an image in Amazon ECR",
"Archiving an image", "Restoring an image"):

- ``UpdateImageStorageClass`` {``registryId``?, ``repositoryName``,
  ``imageId`` {``imageDigest`` | ``imageTag``}, ``targetStorageClass``
  ``ARCHIVE`` | ``STANDARD``} answers {``registryId``, ``repositoryName``,
  ``imageId``, ``imageStatus``}, "the current status of the image after the
  call": ``ARCHIVED`` at once for ``ARCHIVE``; ``ACTIVATING`` for
  ``STANDARD``, since a restore takes time ("typically up to 20 minutes") and
  "during the restore process, the image remains in the archive state and
  cannot be pulled until the restore is complete"; then ``ACTIVE``.
  Errors: ``RepositoryNotFoundException``, ``ImageNotFoundException``,
  ``ImageStorageClassUpdateNotSupportedException``, ``ValidationException``
  (a ``targetStorageClass`` outside the enum), ``InvalidParameterException``
  (an ``imageId`` with neither digest nor tag).
- ``DescribeImages`` reports ``imageStatus`` ACTIVE | ARCHIVED | ACTIVATING,
  ``lastArchivedAt`` and ``lastActivatedAt`` (the model's ``ImageDetail``);
  ``filter.imageStatus`` of DescribeImages and ListImages: "If not specified,
  only images with ``ACTIVE`` status are returned" (done in ``paging``).
- "Archived images cannot be pulled. Requests to pull the archived image will
  fail with a 404 error": ``BatchGetImage`` (a pull's first call) answers an
  ``ImageNotFound`` failure for an archived or activating image, and
  ``GetDownloadUrlForLayer`` ``LayersNotFoundException`` for a layer that only
  such images reference; ``BatchCheckLayerAvailability`` says ``ARCHIVED``
  for it (an enum value of the model).
- "Restored images behave like newly pushed images ... Restored images are
  subject to scanning, replication": when a restore completes the image is
  ACTIVE, ``lastActivatedAt`` is set and it is replicated like a push
  (``replication.replicate_image``, with the configuration of that moment
  and the image's tags then). Archiving replicates nothing and leaves
  replicas alone.
- "When you push an image that is currently archived, that image will be
  immediately restored": ``ecr.put_image`` calls ``activate`` (a push: PUSH
  event and replication, no storage-class event).
- ``ECR Image Action`` event {``result`` SUCCESS, ``repository-name``,
  ``image-digest``, ``action-type`` UPDATE_STORAGE_CLASS,
  ``target-storage-class`` ARCHIVE | STANDARD, ``manifest-media-type``} on
  the default bus of the image's account and Region (shape of
  shared/events/archive-storage-class.json): at the call for an archive,
  when the restore completes for a restore.

Our assumptions (undocumented): an update that is no transition (ARCHIVE of
an image that is not ACTIVE, STANDARD of one that is not ARCHIVED) is
``ImageStorageClassUpdateNotSupportedException``; only the named manifest
changes class (not an index's children); the restore event is sent when the
image is ACTIVE, not when the restore is asked for; a restore lasts
``restore_seconds`` (``/_localaws/replication``, default 0: done at once on
the replication thread; ``flush`` completes it); the ``BatchGetImage``
failure code (``ImageNotFound``, not ``ImageInaccessible``); ``DescribeImages``
with ``imageIds`` describes images whatever their status; a replication that
reaches an archived replica restores it, as a push would.
"""

from __future__ import annotations

import json
import time
from typing import Any

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult

from . import store
from .ecr import LayersNotFoundException, referenced_blobs
from .eventbridge import emit

ACTIVE, ARCHIVED, ACTIVATING = "ACTIVE", "ARCHIVED", "ACTIVATING"
STATUS_FILTERS = (ACTIVE, ARCHIVED, ACTIVATING, "ANY")
TARGETS = ("STANDARD", "ARCHIVE")


class ImageStorageClassUpdateNotSupportedException(ServiceException):
    code = "ImageStorageClassUpdateNotSupportedException"


class ValidationException(ServiceException):
    code = "ValidationException"


def status(image: Any) -> str:
    return getattr(image, "image_status", ACTIVE)


def activate(image: Any) -> None:
    """The image is back in the standard storage class (a completed restore or a re-push)."""
    image.image_status = ACTIVE
    image.last_activated_at = time.time()


def _emit(account: str, region: str, repository: str, image: Any, target: str) -> None:
    detail: dict[str, Any] = {
        "result": "SUCCESS",
        "repository-name": repository,
        "image-digest": image.image_digest,
        "action-type": "UPDATE_STORAGE_CLASS",
        "target-storage-class": target,
    }
    media_type = image.image_manifest_media_type
    if not media_type:
        try:
            media_type = json.loads(image.image_manifest).get("mediaType")
        except (ValueError, AttributeError):
            media_type = None
    if media_type:
        detail["manifest-media-type"] = media_type
    emit(account, region, "ECR Image Action", detail)


def _complete_restore(job: Any) -> None:
    """A restore's end (a replication job's runner, under store.LOCK)."""
    from moto.ecr.models import ecr_backends

    from . import replication

    account, region, repository, digest = job.source
    repo = ecr_backends[account][region].repositories.get(repository)
    image = next((i for i in repo.images if i.image_digest == digest), None) if repo else None
    if image is None or status(image) != ACTIVATING:  # deleted, or re-pushed, meanwhile
        return
    activate(image)
    _emit(account, region, repository, image, "STANDARD")
    replication.replicate_image(account, region, repository, image, list(image.image_tags) or [None])


def update_image_storage_class(self: Any) -> ActionResult:
    from moto.ecr.exceptions import InvalidParameterException

    from . import replication

    repository_name = self._get_param("repositoryName")
    registry_id = self._get_param("registryId")
    image_id = self._get_param("imageId")
    target = self._get_param("targetStorageClass")
    if target not in TARGETS:
        raise ValidationException(
            f"1 validation error detected: Value '{target}' at 'targetStorageClass' failed to "
            f"satisfy constraint: Member must satisfy enum value set: [STANDARD, ARCHIVE]"
        )
    if not isinstance(image_id, dict) or not (image_id.get("imageDigest") or image_id.get("imageTag")):
        raise InvalidParameterException(
            "Invalid parameter at 'imageId' failed to satisfy constraint: "
            "'imageDigest or imageTag must be specified'"
        )
    account, region = self.current_account, self.region
    with store.LOCK:
        repo = self.ecr_backend._get_repository(repository_name, registry_id)
        image = repo._get_image(image_id.get("imageTag"), image_id.get("imageDigest"))
        current = status(image)
        if (target, current) not in (("ARCHIVE", ACTIVE), ("STANDARD", ARCHIVED)):
            raise ImageStorageClassUpdateNotSupportedException(
                f"The image with digest '{image.image_digest}' is {current}: it cannot be "
                f"transitioned to the {target} storage class"
            )
        if target == "ARCHIVE":
            image.image_status = ARCHIVED
            image.last_archived_at = time.time()
            _emit(account, region, repository_name, image, "ARCHIVE")
        else:
            image.image_status = ACTIVATING
            replication.schedule(replication.Job(
                due=time.monotonic() + replication.setting("restore_seconds"),
                source=(account, region, repository_name, image.image_digest), dest=(region, account),
                snapshot={}, runner=_complete_restore, kind="restore", pausable=False,
            ))
        out_id = {"imageDigest": image.image_digest}
        if image_id.get("imageTag"):
            out_id["imageTag"] = image_id["imageTag"]
        return ActionResult({"registryId": repo.registry_id, "repositoryName": repository_name,
                             "imageId": out_id, "imageStatus": image.image_status})


# --- archived images cannot be pulled ------------------------------------------------

def _blobs_of(image: Any) -> list[str]:
    try:
        parsed = json.loads(image.image_manifest)
    except ValueError:
        return []
    return referenced_blobs(parsed, image.image_manifest_media_type or parsed.get("mediaType"))


def layer_archived(repo: Any, digest: str) -> bool:
    """Images of ``repo`` reference the layer, and none of them is ACTIVE."""
    if all(status(i) == ACTIVE for i in repo.images):
        return False
    users = [i for i in repo.images if digest in _blobs_of(i)]
    return bool(users) and all(status(i) != ACTIVE for i in users)


def batch_get_image_factory(original: Any) -> Any:
    def batch_get_image(self: Any, repository_name: str, registry_id: str | None = None,
                        image_ids: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        repo = self.repositories.get(repository_name)
        if repo is None or not image_ids or all(status(i) == ACTIVE for i in repo.images):
            return original(self, repository_name, registry_id, image_ids)
        served, refused = [], []
        for image_id in image_ids:
            matches = [i for i in repo.images
                       if (image_id.get("imageDigest") and i.image_digest == image_id["imageDigest"])
                       or (image_id.get("imageTag") and image_id["imageTag"] in i.image_tags)]
            (refused if matches and all(status(i) != ACTIVE for i in matches) else served).append(image_id)
        response = (original(self, repository_name, registry_id, served) if served
                    else {"images": [], "failures": []})
        for image_id in refused:
            response["failures"].append({"imageId": dict(image_id), "failureCode": "ImageNotFound",
                                         "failureReason": "Requested image not found"})
        return response

    return batch_get_image


def get_download_url_for_layer_factory(original: Any) -> Any:
    def get_download_url_for_layer(self: Any) -> ActionResult:
        repository_name = self._get_param("repositoryName")
        layer_digest = self._get_param("layerDigest")
        with store.LOCK:
            try:
                repo = self.ecr_backend._get_repository(repository_name, self._get_param("registryId"))
            except Exception:  # the original raises the right error
                repo = None
            if repo is not None and layer_archived(repo, layer_digest):
                raise LayersNotFoundException(
                    f"Layer with digest '{layer_digest}' does not exist in the repository "
                    f"with name '{repository_name}' in the registry with id '{repo.registry_id}'"
                )
        return original(self)

    return get_download_url_for_layer


def batch_check_layer_availability_factory(original: Any) -> Any:
    def batch_check_layer_availability(self: Any, repository_name: str, layer_digests: list[str],
                                       registry_id: str | None = None) -> dict[str, Any]:
        result = original(self, repository_name, layer_digests, registry_id=registry_id)
        repo = self.repositories[repository_name]
        for layer in result["layers"]:
            if layer_archived(repo, layer["layerDigest"]):
                layer["layerAvailability"] = "ARCHIVED"
        return result

    return batch_check_layer_availability


def install() -> None:
    from moto.ecr.models import ECRBackend, Image
    from moto.ecr.responses import ECRResponse

    # ImageDetail members, serialized by moto from these attributes (None: omitted).
    Image.image_status = ACTIVE  # type: ignore[attr-defined]
    Image.last_archived_at = None  # type: ignore[attr-defined]
    Image.last_activated_at = None  # type: ignore[attr-defined]

    ECRResponse.update_image_storage_class = update_image_storage_class  # type: ignore[attr-defined]
    ECRResponse.get_download_url_for_layer = get_download_url_for_layer_factory(  # type: ignore[method-assign]
        ECRResponse.get_download_url_for_layer
    )
    ECRBackend.batch_get_image = batch_get_image_factory(ECRBackend.batch_get_image)  # type: ignore[method-assign]
    ECRBackend.batch_check_layer_availability = batch_check_layer_availability_factory(  # type: ignore[method-assign]
        ECRBackend.batch_check_layer_availability
    )
