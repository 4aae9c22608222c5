"""ECR pagination that moto 5.2.5 lacks, and the opaque tokens we use for it.

moto's ``DescribeRepositories``, ``DescribeImages`` and ``ListImages`` ignore
``maxResults`` and ``nextToken`` and return everything at once. AWS (ECR API
Reference, the ``maxResults`` / ``nextToken`` members of each request):

- ``maxResults`` is 1..1000; "If this parameter is not used, then
  <Operation> returns up to 100 results and a ``nextToken`` value, if
  applicable"; the ``nextToken`` of a page continues the listing and is null
  (absent) on the last page; it "should be treated as an opaque identifier".
- ``DescribeRepositories``: "This option cannot be used when you specify
  repositories with ``repositoryNames``" (both members); ``DescribeImages``:
  "This option cannot be used when you specify images with ``imageIds``".
  Such a request, a ``maxResults`` out of range, or a token that is not one
  of ours for the same listing, is ``InvalidParameterException`` here (the
  operations' only modeled parameter error; AWS's message is not documented).
- ``DescribeImages`` honours ``filter.tagStatus`` TAGGED|UNTAGGED|ANY (moto
  ignored it); ``ListImages`` pages its image ids (one per tag, as moto lists
  them).
- Both honour ``filter.imageStatus`` ACTIVE|ARCHIVED|ACTIVATING|ANY: "If not
  specified, only images with ``ACTIVE`` status are returned" (statuses: see
  ``storage_class``); ``DescribeImages`` with ``imageIds`` describes the
  images whatever their status (our assumption).

Tokens are base64url JSON of the listing's scope (operation, registry,
repository, filter) and the offset; order is moto's (repositories and images
in creation order), so a page boundary moves if the listing changes between
calls, as offsets do.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from moto.core.responses import ActionResult

from . import storage_class

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _invalid(message: str) -> Exception:
    from moto.ecr.exceptions import InvalidParameterException

    return InvalidParameterException(message)


def encode(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()


def offset(token: Any, scope: dict[str, Any]) -> int:
    """The offset a ``nextToken`` of the listing ``scope`` stands for (0 for none)."""
    if token is None:
        return 0
    try:
        state = json.loads(base64.urlsafe_b64decode(token.encode()))
        value = state.pop("offset")
        if state != scope or isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError
        return value
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        raise _invalid("Invalid parameter at 'nextToken' failed to satisfy constraint: 'the token is not valid'")


def page(items: list[Any], start: int, limit: int, scope: dict[str, Any]) -> tuple[list[Any], str | None]:
    chunk = items[start:start + limit]
    more = start + limit < len(items)
    return chunk, (encode({**scope, "offset": start + limit}) if more else None)


def max_results(self: Any) -> int:
    value = self._get_param("maxResults")
    if value is None:
        return DEFAULT_PAGE
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PAGE:
        raise _invalid(
            f"Invalid parameter at 'maxResults' failed to satisfy constraint: "
            f"'Member must have value between 1 and {MAX_PAGE}'"
        )
    return value


def _image_status(self: Any) -> str:
    value = (self._get_param("filter") or {}).get("imageStatus") or storage_class.ACTIVE
    if value not in storage_class.STATUS_FILTERS:
        raise _invalid(
            "Invalid parameter at 'filter.imageStatus' failed to satisfy constraint: "
            "'Member must satisfy enum value set: [ACTIVE, ARCHIVED, ACTIVATING, ANY]'"
        )
    return value


def _paged(result: ActionResult, key: str, limit: int, start: int, scope: dict[str, Any]) -> ActionResult:
    body = dict(result.result)  # type: ignore[call-overload]
    body[key], token = page(list(body[key]), start, limit, scope)
    if token:
        body["nextToken"] = token
    else:
        body.pop("nextToken", None)
    return ActionResult(body)


def describe_repositories_factory(original: Any) -> Any:
    def describe_repositories(self: Any) -> ActionResult:
        if self._get_param("repositoryNames") and (
            self._get_param("maxResults") is not None or self._get_param("nextToken") is not None
        ):
            raise _invalid(
                "Invalid parameter at 'maxResults, nextToken': they cannot be used together with "
                "'repositoryNames'"
            )
        limit = max_results(self)
        scope = {"op": "DescribeRepositories",
                 "registry": self._get_param("registryId") or self.current_account}
        start = offset(self._get_param("nextToken"), scope)
        result = original(self)
        if self._get_param("repositoryNames"):
            return result
        return _paged(result, "repositories", limit, start, scope)

    return describe_repositories


def describe_images_factory(original: Any) -> Any:
    def describe_images(self: Any) -> ActionResult:
        image_ids = self._get_param("imageIds")
        if image_ids and (self._get_param("maxResults") is not None or self._get_param("nextToken") is not None):
            raise _invalid(
                "Invalid parameter at 'maxResults, nextToken': they cannot be used together with 'imageIds'"
            )
        limit = max_results(self)
        tag_status = (self._get_param("filter") or {}).get("tagStatus") or "ANY"
        if tag_status not in ("TAGGED", "UNTAGGED", "ANY"):
            raise _invalid(
                "Invalid parameter at 'filter.tagStatus' failed to satisfy constraint: "
                "'Member must satisfy enum value set: [TAGGED, UNTAGGED, ANY]'"
            )
        image_status = _image_status(self)
        scope = {"op": "DescribeImages", "registry": self._get_param("registryId") or self.current_account,
                 "repository": self._get_param("repositoryName"), "tagStatus": tag_status,
                 "imageStatus": image_status}
        start = offset(self._get_param("nextToken"), scope)
        result = original(self)
        if image_ids:
            return result
        details = list(result.result["imageDetails"])  # type: ignore[index]
        if tag_status != "ANY":
            details = [d for d in details if bool(getattr(d, "image_tags", None)) == (tag_status == "TAGGED")]
        if image_status != "ANY":
            details = [d for d in details if storage_class.status(d) == image_status]
        return _paged(ActionResult({**result.result, "imageDetails": details}),  # type: ignore[dict-item]
                      "imageDetails", limit, start, scope)

    return describe_images


def list_images_factory(original: Any) -> Any:
    def list_images(self: Any) -> ActionResult:
        limit = max_results(self)
        tag_status = (self._get_param("filter") or {}).get("tagStatus") or "ANY"
        image_status = _image_status(self)
        scope = {"op": "ListImages", "registry": self._get_param("registryId") or self.current_account,
                 "repository": self._get_param("repositoryName"), "tagStatus": tag_status,
                 "imageStatus": image_status}
        start = offset(self._get_param("nextToken"), scope)
        result = original(self)
        if image_status != "ANY":
            repo = self.ecr_backend._get_repository(self._get_param("repositoryName"), self._get_param("registryId"))
            statuses = {i.image_digest: storage_class.status(i) for i in repo.images}
            ids = [i for i in result.result["imageIds"]  # type: ignore[index]
                   if statuses.get(i["imageDigest"], storage_class.ACTIVE) == image_status]
            result = ActionResult({**result.result, "imageIds": ids})  # type: ignore[dict-item]
        return _paged(result, "imageIds", limit, start, scope)

    return list_images


def install() -> None:
    from moto.ecr.responses import ECRResponse

    ECRResponse.describe_repositories = describe_repositories_factory(ECRResponse.describe_repositories)  # type: ignore[method-assign]
    ECRResponse.describe_images = describe_images_factory(ECRResponse.describe_images)  # type: ignore[method-assign]
    ECRResponse.list_images = list_images_factory(ECRResponse.list_images)  # type: ignore[method-assign]
