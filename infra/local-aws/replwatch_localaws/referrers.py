"""OCI 1.1 referrers: ListImageReferrers, which moto 5.2.5 lacks (HTTP 500),
and the subject relationship it lists.

AWS facts reproduced (ECR API Reference: ``ListImageReferrers``,
``ListImageReferrersFilter``, ``SubjectIdentifier``, ``ImageReferrer``,
``ImageDetail``; member names, constraints and errors as in botocore 1.44.8's
ECR model and aws-sdk-ecr 1.138; User Guide: "Private images in Amazon ECR",
"Sign images in Amazon ECR", "Deleting signatures and other artifacts"; What's
New, 27 June 2024, "Amazon ECR supports Open Container Initiative Image and
Distribution specification version 1.1"):

- "With Amazon ECR support for OCI v1.1, you can store and manage reference
  artifacts that are defined by the OCI Referrers API" (signatures, SBOMs,
  attestations...), each "stored as a separate image": a manifest (image
  manifest or index) pushed with ``PutImage`` whose JSON has a ``subject``
  descriptor is a referrer of ``subject.digest`` in the same repository.
  Nothing else changes for it: PutImage checks its blobs as any image's, PUSH
  event, replication, archive, BatchDeleteImage ("deleting signatures and
  other reference artifacts is similar to how an image is deleted").
- ``ListImageReferrers`` {``registryId``?, ``repositoryName``, ``subjectId``
  {``imageDigest``}, ``filter`` {``artifactTypes`` (0..5 strings of
  1..255), ``artifactStatus`` ACTIVE|ARCHIVED|ACTIVATING|ANY}?,
  ``maxResults`` (1..50)?, ``nextToken``?} answers {``referrers``
  [ImageReferrer], ``nextToken``?}: "lists the artifacts associated with a
  specified subject image". "If no filter is specified, only artifacts with
  ACTIVE status are returned"; "If this parameter is not used, then
  ListImageReferrers returns up to 20 results and a nextToken value, if
  applicable"; the token is opaque and null (absent) on the last page.
- ``ImageReferrer``: ``digest``, ``mediaType`` (of the artifact manifest),
  ``artifactType``, ``size`` (bytes), ``annotations``, ``artifactStatus``
  ACTIVE|ARCHIVED|ACTIVATING (the referrer image's own status, see
  ``storage_class``). Its ``artifactType`` and ``annotations`` follow the OCI
  distribution spec 1.1 (Listing Referrers): the manifest's ``artifactType``,
  else for an image manifest its ``config.mediaType``, else (an index)
  omitted; the manifest's annotations. ``size`` is the descriptor size, the
  manifest's byte length.
- ``DescribeImages`` reports ``subjectManifestDigest``, "the digest of the
  subject manifest for images that are referrers" (``ImageDetail``).
- Errors (the model's): ``RepositoryNotFoundException``,
  ``InvalidParameterException``, ``ValidationException``; not an image-not-
  found error: the subject need not exist.
- Replication: "ECR's replication feature supports referrers, copying
  artifacts to destination regions and accounts so they are ready to use
  alongside replicated images" (What's New). A referrer is an image of the
  subject's repository, so the rules that select the subject select it, and
  ``replication`` copies it byte for byte (same digest): it stays a referrer
  of the same digest there.
- "When reference artifacts are present in a repository, Amazon ECR
  lifecycle policies will automatically clean up those artifacts within 24
  hours of the deletion of the subject image" (Sign images in Amazon ECR):
  the clean-up is the lifecycle policies' (which the test bed does not run);
  deleting a subject with BatchDeleteImage leaves its referrers here.

OCI distribution spec 1.1 (Push): "A registry MUST initially accept an
otherwise valid manifest with a subject field that references a manifest that
does not exist in the repository, allowing clients to push a manifest and
referrers to that manifest in either order"; the referrers API lists them
for that digest all the same. The AWS pages say nothing about such a push;
we follow the spec (PutImage never checks ``subject``).

Our assumptions (undocumented): referrers are listed in push order; model
constraint violations (``maxResults`` outside 1..50, ``artifactStatus``
outside its enum, more than 5 ``artifactTypes`` or one outside 1..255
characters, a missing ``subjectId``) are ``ValidationException``; a
``subjectId.imageDigest`` that is no OCI digest (``algorithm:encoded``) and a
``nextToken`` of another listing are ``InvalidParameterException``; a
``subject`` that is not a descriptor with a digest string makes no referrer;
an ``artifactTypes`` filter matches the referrer's ``artifactType`` exactly
(an index without one matches none); archiving or restoring a subject leaves
its referrers' storage class alone.
"""

from __future__ import annotations

import json
import re
from typing import Any

from moto.core.responses import ActionResult

from . import paging, store, storage_class
from .ecr import INDEX_MEDIA_TYPES

DEFAULT_PAGE = 20
MAX_PAGE = 50
MAX_ARTIFACT_TYPES = 5
# OCI image spec, descriptor digests: algorithm ":" encoded.
DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


def _invalid(value: Any, member: str, constraint: str) -> storage_class.ValidationException:
    shown = "null" if value is None else f"'{value}'"
    return storage_class.ValidationException(
        f"1 validation error detected: Value {shown} at '{member}' failed to satisfy "
        f"constraint: {constraint}"
    )


def _parsed(image: Any) -> dict[str, Any]:
    """The image's manifest as JSON (parsed once per Image object)."""
    cached = image.__dict__.get("_localaws_parsed")
    if cached is None or cached[0] is not image.image_manifest:
        try:
            parsed = json.loads(image.image_manifest)
        except (TypeError, ValueError):
            parsed = {}
        cached = (image.image_manifest, parsed if isinstance(parsed, dict) else {})
        image.__dict__["_localaws_parsed"] = cached
    return cached[1]


def subject_of(image: Any) -> str | None:
    """The digest the image's ``subject`` names: it is a referrer of that digest."""
    subject = _parsed(image).get("subject")
    if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
        return subject["digest"]
    return None


def artifact_type(image: Any) -> str | None:
    """OCI distribution spec 1.1: ``artifactType``, else an image manifest's
    ``config.mediaType``; an index without one has none."""
    parsed = _parsed(image)
    if isinstance(parsed.get("artifactType"), str) and parsed["artifactType"]:
        return parsed["artifactType"]
    media_type = image.image_manifest_media_type or parsed.get("mediaType")
    if media_type in INDEX_MEDIA_TYPES or "manifests" in parsed:
        return None
    config = parsed.get("config")
    if isinstance(config, dict) and isinstance(config.get("mediaType"), str) and config["mediaType"]:
        return config["mediaType"]
    return None


def describe(image: Any) -> dict[str, Any]:
    """The ``ImageReferrer`` of a referrer image."""
    parsed = _parsed(image)
    out: dict[str, Any] = {
        "digest": image.image_digest,
        "mediaType": image.image_manifest_media_type or parsed.get("mediaType"),
        "size": len(image.image_manifest.encode("utf-8")),
        "artifactStatus": storage_class.status(image),
    }
    kind = artifact_type(image)
    if kind:
        out["artifactType"] = kind
    annotations = parsed.get("annotations")
    if isinstance(annotations, dict) and annotations:
        out["annotations"] = {str(k): str(v) for k, v in annotations.items()}
    return out


def referrers_of(repo: Any, digest: str) -> list[Any]:
    """The images of ``repo`` whose subject is ``digest``, in push order."""
    return [i for i in repo.images if subject_of(i) == digest]


def _filter(self: Any) -> tuple[list[str], str]:
    value = self._get_param("filter") or {}
    if not isinstance(value, dict):
        raise _invalid(value, "filter", "Member must be a structure")
    types = value.get("artifactTypes") or []
    if not isinstance(types, list) or len(types) > MAX_ARTIFACT_TYPES:
        raise _invalid(types, "filter.artifactTypes",
                       f"Member must have length less than or equal to {MAX_ARTIFACT_TYPES}")
    for t in types:
        if not isinstance(t, str) or not 1 <= len(t) <= 255:
            raise _invalid(t, "filter.artifactTypes.member",
                           "Member must have length between 1 and 255")
    status = value.get("artifactStatus") or storage_class.ACTIVE
    if status not in storage_class.STATUS_FILTERS:
        raise _invalid(status, "filter.artifactStatus",
                       "Member must satisfy enum value set: [ACTIVE, ARCHIVED, ACTIVATING, ANY]")
    return types, status


def _max_results(self: Any) -> int:
    value = self._get_param("maxResults")
    if value is None:
        return DEFAULT_PAGE
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PAGE:
        raise _invalid(value, "maxResults", f"Member must have value between 1 and {MAX_PAGE}")
    return value


def _subject_digest(self: Any) -> str:
    from moto.ecr.exceptions import InvalidParameterException

    subject = self._get_param("subjectId")
    if not isinstance(subject, dict) or subject.get("imageDigest") is None:
        raise _invalid(None, "subjectId" if not isinstance(subject, dict) else "subjectId.imageDigest",
                       "Member must not be null")
    digest = subject["imageDigest"]
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise InvalidParameterException(
            f"Invalid parameter at 'subjectId.imageDigest' failed to satisfy constraint: "
            f"'{digest}' is not a valid image digest"
        )
    return digest


def list_image_referrers(self: Any) -> ActionResult:
    repository_name = self._get_param("repositoryName")
    registry_id = self._get_param("registryId")
    digest = _subject_digest(self)
    types, status = _filter(self)
    limit = _max_results(self)
    scope = {"op": "ListImageReferrers", "registry": registry_id or self.current_account,
             "repository": repository_name, "subject": digest, "artifactTypes": types,
             "artifactStatus": status}
    start = paging.offset(self._get_param("nextToken"), scope)
    with store.LOCK:
        repo = self.ecr_backend._get_repository(repository_name, registry_id)
        found = [describe(i) for i in referrers_of(repo, digest)]
    if types:
        found = [r for r in found if r.get("artifactType") in types]
    if status != "ANY":
        found = [r for r in found if r["artifactStatus"] == status]
    chunk, token = paging.page(found, start, limit, scope)
    body: dict[str, Any] = {"referrers": chunk}
    if token:
        body["nextToken"] = token
    return ActionResult(body)


def _subject_manifest_digest(self: Any) -> str | None:
    return subject_of(self)


def install() -> None:
    from moto.ecr.models import Image
    from moto.ecr.responses import ECRResponse

    # ImageDetail.subjectManifestDigest, serialized by moto from this attribute (None: omitted).
    Image.subject_manifest_digest = property(_subject_manifest_digest)  # type: ignore[attr-defined]
    ECRResponse.list_image_referrers = list_image_referrers  # type: ignore[attr-defined]
