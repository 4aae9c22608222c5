"""The registry's OCI distribution API (/v2/), through plain HTTP (requests), on the
same repositories, images, blobs, tags and referrers as the ECR API."""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import datetime, timezone

import pytest
import requests
from botocore.exceptions import ClientError

from localaws import (
    A, B, ENDPOINT, OCI_INDEX, OCI_MANIFEST, SRC_REGION, allow_replication_from, build_image, client, configure,
    dumps, flush, http, image_ids, push_image, push_index, put_config, sha256, tap, upload_blob,
)
from test_referrers import IN_TOTO, NOTATION, SPDX, attestation, notation_signature, sbom

REPO = "team-a/web"
DEST_REGION = "eu-west-1"
ALL_MANIFESTS = ", ".join([OCI_MANIFEST, OCI_INDEX, "application/vnd.docker.distribution.manifest.v2+json",
                           "application/vnd.docker.distribution.manifest.list.v2+json"])


class Registry:
    """One registry (account, Region) as a client sees it from GetAuthorizationToken."""

    def __init__(self, account: str = A, region: str = SRC_REGION) -> None:
        self.ecr = client("ecr", region, account)
        data = self.ecr.get_authorization_token()["authorizationData"][0]
        self.endpoint = data["proxyEndpoint"]
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        self.auth = (user, password)
        self.data = data
        self.account, self.region = account, region

    def url(self, path: str) -> str:
        """The URL a docker-style client builds from ``<proxyEndpoint host+path>/<repository>``."""
        host_and_prefix = self.endpoint.removeprefix("http://")
        host, _, prefix = host_and_prefix.partition("/")
        return f"http://{host}/v2/{prefix}/{path}"

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("auth", self.auth)
        return requests.request(method, self.url(path), timeout=30, **kwargs)


def _errors(resp: requests.Response) -> list[str]:
    return [e["code"] for e in resp.json()["errors"]]


def _push_blob_chunked(reg: Registry, repo: str, data: bytes, chunk: int) -> requests.Response:
    started = reg.request("POST", f"{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    assert started.headers["Range"] == "0-0"
    offset = 0
    while offset < len(data) - chunk:
        part = data[offset:offset + chunk]
        resp = requests.patch(location, data=part, auth=reg.auth, timeout=30, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + len(part) - 1}"})
        assert resp.status_code == 202, resp.text
        offset += len(part)
        assert resp.headers["Range"] == f"0-{offset - 1}"
        location = resp.headers["Location"]
    status = requests.get(location, auth=reg.auth, timeout=30)
    assert status.status_code == 204 and status.headers["Range"] == f"0-{offset - 1}"
    return requests.put(location, params={"digest": sha256(data)}, data=data[offset:], auth=reg.auth, timeout=30)


def _push_blob_monolithic(reg: Registry, repo: str, data: bytes) -> requests.Response:
    return reg.request("POST", f"{repo}/blobs/uploads/", params={"digest": sha256(data)}, data=data,
                       headers={"Content-Type": "application/octet-stream"})


def _put_manifest(reg: Registry, repo: str, reference: str, manifest: str,
                  media_type: str = OCI_MANIFEST) -> requests.Response:
    return reg.request("PUT", f"{repo}/manifests/{reference}", data=manifest.encode(),
                       headers={"Content-Type": media_type})


def test_authorization_token_and_the_challenge():
    reg = Registry()
    # user:password for docker login, valid 12 hours, and an endpoint that works here.
    assert reg.auth[0] == "AWS" and reg.auth[1]
    expires = reg.data["expiresAt"].astimezone(timezone.utc)
    assert abs((expires - datetime.now(timezone.utc)).total_seconds() - 12 * 3600) < 120
    assert reg.endpoint == f"{ENDPOINT}/{A}/{SRC_REGION}"
    # registryIds (deprecated): one entry per registry, the same credentials.
    many = reg.ecr.get_authorization_token(registryIds=[A, B])["authorizationData"]
    assert [d["proxyEndpoint"] for d in many] == [f"{ENDPOINT}/{A}/{SRC_REGION}", f"{ENDPOINT}/{B}/{SRC_REGION}"]

    # The ping: 401 and a Basic challenge without credentials, as ECR answers.
    resp = requests.get(f"{ENDPOINT}/v2/", timeout=10)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == f'Basic realm="{ENDPOINT}/",service="ecr.amazonaws.com"'
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert _errors(resp) == ["UNAUTHORIZED"]
    assert requests.get(f"{ENDPOINT}/v2/", auth=reg.auth, timeout=10).status_code == 200
    # The proxyEndpoint as a base URL, and the Host form of ECR's registry name.
    assert requests.get(f"{reg.endpoint}/v2/", auth=reg.auth, timeout=10).status_code == 200
    resp = requests.get(f"{ENDPOINT}/v2/", timeout=10, headers={"Host": f"{A}.dkr.ecr.{SRC_REGION}.localhost"})
    assert resp.status_code == 401

    # Every endpoint wants credentials; only this server's tokens, user AWS.
    reg.ecr.create_repository(repositoryName=REPO)
    assert reg.request("GET", f"{REPO}/tags/list", auth=None).status_code == 401
    for auth in (("AWS", "not-a-token"), ("someone", reg.auth[1]), ("AWS", reg.auth[1][:-2] + "xx")):
        resp = reg.request("GET", f"{REPO}/tags/list", auth=auth)
        assert resp.status_code == 403 and _errors(resp) == ["DENIED"], auth
    assert reg.request("GET", f"{REPO}/tags/list").status_code == 200
    # One principal's token serves any registry (no IAM here).
    other = Registry(B, DEST_REGION)
    other.ecr.create_repository(repositoryName=REPO)
    assert other.request("GET", f"{REPO}/tags/list", auth=reg.auth).status_code == 200


def test_pull_what_the_ecr_api_pushed():
    reg = Registry()
    reg.ecr.create_repository(repositoryName=REPO)
    image = push_image(reg.ecr, REPO, "v1")
    index = push_index(reg.ecr, REPO, "multi")

    for reference in ("v1", image["digest"]):
        resp = reg.request("GET", f"{REPO}/manifests/{reference}", headers={"Accept": ALL_MANIFESTS})
        assert resp.status_code == 200
        assert resp.content == image["manifest"].encode()
        assert resp.headers["Content-Type"] == OCI_MANIFEST
        assert resp.headers["Docker-Content-Digest"] == image["digest"]
        head = reg.request("HEAD", f"{REPO}/manifests/{reference}")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Content-Length"] == str(len(image["manifest"].encode()))
        assert head.headers["Docker-Content-Digest"] == image["digest"]
    resp = reg.request("GET", f"{REPO}/manifests/multi", headers={"Accept": ALL_MANIFESTS})
    assert resp.content == index["manifest"].encode() and resp.headers["Content-Type"] == OCI_INDEX
    assert sha256(resp.content) == resp.headers["Docker-Content-Digest"] == index["digest"]
    # A media type the client does not accept is not served (no conversion).
    resp = reg.request("GET", f"{REPO}/manifests/multi", headers={"Accept": OCI_MANIFEST})
    assert resp.status_code == 404 and _errors(resp) == ["MANIFEST_UNKNOWN"]

    for digest, data in image["blobs"].items():
        head = reg.request("HEAD", f"{REPO}/blobs/{digest}")
        assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
        assert head.headers["Docker-Content-Digest"] == digest
        # GET redirects (ECR: to S3) to the same URL GetDownloadUrlForLayer gives.
        redirect = reg.request("GET", f"{REPO}/blobs/{digest}", allow_redirects=False)
        assert redirect.status_code == 307
        assert redirect.headers["Location"] == reg.ecr.get_download_url_for_layer(
            repositoryName=REPO, layerDigest=digest)["downloadUrl"]
        assert reg.request("GET", f"{REPO}/blobs/{digest}").content == data

    # The three spellings of one registry reach the same image.
    by_host = requests.get(f"{ENDPOINT}/v2/{REPO}/manifests/v1", auth=reg.auth, timeout=10,
                           headers={"Host": f"{A}.dkr.ecr.{SRC_REGION}.localhost:1234"})
    by_base = requests.get(f"{reg.endpoint}/v2/{REPO}/manifests/v1", auth=reg.auth, timeout=10)
    assert by_host.content == by_base.content == image["manifest"].encode()
    assert requests.get(f"{reg.endpoint}/v2/{REPO}/blobs/{next(iter(image['blobs']))}", auth=reg.auth,
                        allow_redirects=False, timeout=10).status_code == 307

    # Tags: lexical order, pages with n/last and a Link to the next one.
    assert reg.request("GET", f"{REPO}/tags/list").json() == {"name": f"{A}/{SRC_REGION}/{REPO}",
                                                               "tags": ["multi", "v1"]}
    first = reg.request("GET", f"{REPO}/tags/list", params={"n": 1})
    assert first.json()["tags"] == ["multi"]
    assert first.headers["Link"] == f'</v2/{A}/{SRC_REGION}/{REPO}/tags/list?n=1&last=multi>; rel="next"'
    rest = reg.request("GET", f"{REPO}/tags/list", params={"n": 1, "last": "multi"})
    assert rest.json()["tags"] == ["v1"] and "Link" not in rest.headers

    calls = http("GET", f"/_localaws/calls?account={A}")
    ops = {c["operation"]: c["count"] for c in calls["calls"]}
    assert ops["registry:GET manifests"] >= 4 and ops["registry:HEAD manifests"] == 2
    assert ops["registry:GET blobs"] == 2 * len(image["blobs"]) + 1
    (downloads,) = calls["blob_downloads"]
    assert downloads["downloads"] == len(image["blobs"])
    assert downloads["bytes"] == sum(len(d) for d in image["blobs"].values())


def test_push_through_v2_is_a_put_image():
    """docker/skopeo push: blobs (chunked and in one request), then the manifest: the
    image is in DescribeImages, its PUSH event is sent and it replicates."""
    reg = Registry()
    reg.ecr.create_repository(repositoryName=REPO)
    put_config(reg.ecr, ([(DEST_REGION, B)], None))
    allow_replication_from(B, DEST_REGION, A)
    configure(default_delay_seconds=60)
    events = tap(A, SRC_REGION)
    image = build_image(layer_sizes=(3 * 1024 * 1024 + 5, 700))
    config_digest, big, small = image["blobs"]
    resp = _push_blob_chunked(reg, REPO, image["blobs"][big], chunk=1024 * 1024)
    assert resp.status_code == 201, resp.text
    assert resp.headers["Docker-Content-Digest"] == big
    assert resp.headers["Location"] == reg.url(f"{REPO}/blobs/{big}")
    for digest in (config_digest, small):
        resp = _push_blob_monolithic(reg, REPO, image["blobs"][digest])
        assert resp.status_code == 201 and resp.headers["Docker-Content-Digest"] == digest
    # ECR's API sees the layers.
    layers = reg.ecr.batch_check_layer_availability(repositoryName=REPO, layerDigests=list(image["blobs"]))
    assert {l["layerDigest"] for l in layers["layers"] if l["layerAvailability"] == "AVAILABLE"} == set(image["blobs"])

    resp = _put_manifest(reg, REPO, "v1", image["manifest"])
    assert resp.status_code == 201, resp.text
    assert resp.headers["Docker-Content-Digest"] == image["digest"]
    assert resp.headers["Location"] == reg.url(f"{REPO}/manifests/{image['digest']}")
    assert image_ids(reg.ecr, REPO) == {image["digest"]: ["v1"]}
    (got,) = reg.ecr.batch_get_image(repositoryName=REPO, imageIds=[{"imageTag": "v1"}])["images"]
    assert got["imageManifest"] == image["manifest"] and got["imageManifestMediaType"] == OCI_MANIFEST
    (event,) = events.drain(expect=1)
    assert event["detail-type"] == "ECR Image Action"
    assert event["detail"] == {"result": "SUCCESS", "repository-name": REPO, "image-digest": image["digest"],
                               "action-type": "PUSH", "image-tag": "v1", "manifest-media-type": OCI_MANIFEST,
                               "artifact-media-type": "application/vnd.oci.image.config.v1+json"}
    status = reg.ecr.describe_image_replication_status(repositoryName=REPO, imageId={"imageTag": "v1"})
    assert [s["status"] for s in status["replicationStatuses"]] == ["IN_PROGRESS"]
    assert flush(A) == 1
    assert image_ids(client("ecr", DEST_REGION, B), REPO) == {image["digest"]: ["v1"]}

    # An index pushed by digest (untagged), then tagged by a second PUT; the same PUT
    # again changes nothing and still succeeds.
    child = push_image(reg.ecr, REPO)
    index = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child["digest"], "size": len(child["manifest"].encode()),
         "platform": {"os": "linux", "architecture": "amd64"}}]})
    assert _put_manifest(reg, REPO, sha256(index.encode()), index, OCI_INDEX).status_code == 201
    assert image_ids(reg.ecr, REPO)[sha256(index.encode())] == []
    assert _put_manifest(reg, REPO, "multi", index, OCI_INDEX).status_code == 201
    assert _put_manifest(reg, REPO, "multi", index, OCI_INDEX).status_code == 201
    assert image_ids(reg.ecr, REPO)[sha256(index.encode())] == ["multi"]
    pushes = [(e["detail"]["image-digest"], e["detail"].get("image-tag")) for e in events.drain(expect=3)]
    # The child (ECR API), the index untagged, then tagged; none for the repeat.
    assert pushes == [(child["digest"], None), (sha256(index.encode()), None), (sha256(index.encode()), "multi")]

    got = http("GET", f"/_localaws/calls?account={A}")
    uploads = {u["layerDigest"]: u for u in got["layer_uploads"]}
    assert uploads[big]["completed"] == 1 and uploads[big]["bytes"] == len(image["blobs"][big])
    ops = {c["operation"]: c["count"] for c in got["calls"]}
    assert ops["registry:PATCH blobs/uploads"] == 3 and ops["registry:PUT blobs/uploads"] == 1
    assert ops["registry:POST blobs/uploads"] == 3 and ops["registry:PUT manifests"] == 4
    # The same blob uploaded again: accepted (201), counted as sent for nothing.
    assert _push_blob_monolithic(reg, REPO, image["blobs"][small]).status_code == 201
    got = http("GET", f"/_localaws/calls?account={A}")
    assert {u["layerDigest"]: u for u in got["layer_uploads"]}[small]["already_exists"] == 1


def test_push_errors_are_put_image_errors():
    reg = Registry()
    reg.ecr.create_repository(repositoryName=REPO)
    reg.ecr.create_repository(repositoryName="team-a/locked", imageTagMutability="IMMUTABLE")
    image = build_image()
    manifest = image["manifest"]

    # Blobs the repository lacks.
    resp = _put_manifest(reg, REPO, "v1", manifest)
    assert resp.status_code == 400 and _errors(resp) == ["MANIFEST_BLOB_UNKNOWN"]
    assert sorted(resp.json()["errors"][0]["detail"]["digests"]) == sorted(image["blobs"])
    for data in image["blobs"].values():
        upload_blob(reg.ecr, REPO, data)
    # A digest reference that is not the digest of the bytes; bytes that are no JSON.
    resp = _put_manifest(reg, REPO, "sha256:" + "0" * 64, manifest)
    assert resp.status_code == 400 and _errors(resp) == ["DIGEST_INVALID"]
    resp = _put_manifest(reg, REPO, "v1", "not json")
    assert resp.status_code == 400 and _errors(resp) == ["MANIFEST_INVALID"]
    # An index whose child is not in the repository.
    index = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": image["digest"], "size": len(manifest.encode())}]})
    resp = _put_manifest(reg, REPO, "multi", index, OCI_INDEX)
    assert resp.status_code == 400 and _errors(resp) == ["MANIFEST_BLOB_UNKNOWN"]
    # A missing repository.
    resp = _put_manifest(reg, "team-a/nothing", "v1", manifest)
    assert resp.status_code == 404 and _errors(resp) == ["NAME_UNKNOWN"]
    resp = reg.request("POST", "team-a/nothing/blobs/uploads/")
    assert resp.status_code == 404 and _errors(resp) == ["NAME_UNKNOWN"]
    resp = reg.request("GET", "Not_A_Name/tags/list")
    assert resp.status_code == 400 and _errors(resp) == ["NAME_INVALID"]

    # Immutable tags: ECR's words, the tag stays where it was.
    for data in image["blobs"].values():
        upload_blob(reg.ecr, "team-a/locked", data)
    assert _put_manifest(reg, "team-a/locked", "v1", manifest).status_code == 201
    other = push_image(reg.ecr, "team-a/locked")
    resp = _put_manifest(reg, "team-a/locked", "v1", other["manifest"])
    assert resp.status_code == 400 and _errors(resp) == ["TAG_INVALID"]
    assert resp.json()["errors"][0]["message"] == ("The image tag 'v1' already exists in the 'team-a/locked' "
                                                   "repository and cannot be overwritten because the repository "
                                                   "is immutable.")
    assert image_ids(reg.ecr, "team-a/locked")[image["digest"]] == ["v1"]

    # Blob uploads: a wrong digest, chunks out of order, an unknown session.
    data = os.urandom(1000)
    resp = reg.request("POST", f"{REPO}/blobs/uploads/", params={"digest": sha256(b"other")}, data=data)
    assert resp.status_code == 400 and _errors(resp) == ["DIGEST_INVALID"]
    started = reg.request("POST", f"{REPO}/blobs/uploads/")
    location = started.headers["Location"]
    resp = requests.patch(location, data=data, auth=reg.auth, timeout=10, headers={"Content-Range": "10-1009"})
    assert resp.status_code == 416 and resp.headers["Range"] == "0-0"
    resp = requests.put(location, data=data, auth=reg.auth, timeout=10)  # no digest
    assert resp.status_code == 400 and _errors(resp) == ["DIGEST_INVALID"]
    assert requests.delete(location, auth=reg.auth, timeout=10).status_code == 204
    resp = requests.patch(location, data=data, auth=reg.auth, timeout=10)
    assert resp.status_code == 404 and _errors(resp) == ["BLOB_UPLOAD_UNKNOWN"]
    # Cross-repository mount: ECR mounts only with BLOB_MOUNTING enabled (not modelled): an upload session.
    resp = reg.request("POST", "team-a/locked/blobs/uploads/",
                       params={"mount": next(iter(image["blobs"])), "from": REPO})
    assert resp.status_code == 202 and "/blobs/uploads/" in resp.headers["Location"]

    # Pulls of what is not there.
    resp = reg.request("GET", f"{REPO}/manifests/nope")
    assert resp.status_code == 404 and _errors(resp) == ["MANIFEST_UNKNOWN"]
    resp = reg.request("GET", f"{REPO}/blobs/{sha256(b'nope')}")
    assert resp.status_code == 404 and _errors(resp) == ["BLOB_UNKNOWN"]
    head = reg.request("HEAD", f"{REPO}/blobs/{sha256(b'nope')}")
    assert head.status_code == 404 and head.content == b""
    resp = reg.request("DELETE", f"{REPO}/manifests/{image['digest']}")
    assert resp.status_code == 405 and _errors(resp) == ["UNSUPPORTED"]
    # Without a registry in the request, a repository cannot be found.
    resp = requests.get(f"{ENDPOINT}/v2/{REPO}/tags/list", auth=reg.auth, timeout=10)
    assert resp.status_code == 404 and _errors(resp) == ["NAME_UNKNOWN"]


def test_archived_images_cannot_be_pulled():
    reg = Registry()
    reg.ecr.create_repository(repositoryName=REPO)
    image = push_image(reg.ecr, REPO, "v1")
    reg.ecr.update_image_storage_class(repositoryName=REPO, imageId={"imageTag": "v1"}, targetStorageClass="ARCHIVE")
    resp = reg.request("GET", f"{REPO}/manifests/v1")
    assert resp.status_code == 404 and _errors(resp) == ["MANIFEST_UNKNOWN"]
    assert reg.request("HEAD", f"{REPO}/blobs/{next(iter(image['blobs']))}").status_code == 404
    assert reg.request("GET", f"{REPO}/tags/list").json()["tags"] == []


def test_referrers_api():
    reg = Registry()
    reg.ecr.create_repository(repositoryName=REPO)
    image = push_image(reg.ecr, REPO, "v1")
    pushed = [notation_signature(reg.ecr, image), sbom(reg.ecr, image), attestation(reg.ecr, image)]

    resp = reg.request("GET", f"{REPO}/referrers/{image['digest']}")
    assert resp.status_code == 200 and resp.headers["Content-Type"] == OCI_INDEX
    index = resp.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    expected = []
    for r in pushed:
        d = {"mediaType": OCI_MANIFEST, "digest": r["digest"], "size": len(r["manifest"].encode()),
             "artifactType": r["referrer"]["artifactType"]}
        if r["referrer"].get("annotations"):
            d["annotations"] = r["referrer"]["annotations"]
        expected.append(d)
    assert index["manifests"] == expected
    assert [m["artifactType"] for m in index["manifests"]] == [NOTATION, SPDX, IN_TOTO]
    filtered = reg.request("GET", f"{REPO}/referrers/{image['digest']}", params={"artifactType": SPDX})
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in filtered.json()["manifests"]] == [pushed[1]["digest"]]
    # No referrers, or no such subject: an empty index, never 404; a bad digest is 400.
    empty = reg.request("GET", f"{REPO}/referrers/{sha256(b'nothing')}")
    assert empty.status_code == 200 and empty.json()["manifests"] == []
    assert reg.request("GET", f"{REPO}/referrers/not-a-digest").status_code == 400

    # A referrer pushed through /v2: OCI-Subject in the answer, listed by both APIs, and pulled.
    payload = json.dumps({"spdxVersion": "SPDX-2.3", "name": "pushed-by-oras"}).encode()
    for data in (b"{}", payload):
        assert _push_blob_monolithic(reg, REPO, data).status_code == 201
    doc = dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SPDX,
                 "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
                 "layers": [{"mediaType": SPDX, "digest": sha256(payload), "size": len(payload)}],
                 "subject": {"mediaType": OCI_MANIFEST, "digest": image["digest"],
                             "size": len(image["manifest"].encode())}})
    resp = _put_manifest(reg, REPO, sha256(doc.encode()), doc)
    assert resp.status_code == 201 and resp.headers["OCI-Subject"] == image["digest"]
    listed = reg.ecr.list_image_referrers(repositoryName=REPO, subjectId={"imageDigest": image["digest"]})
    assert listed["referrers"][-1]["digest"] == sha256(doc.encode())
    assert reg.request("GET", f"{REPO}/referrers/{image['digest']}").json()["manifests"][-1]["digest"] == \
        sha256(doc.encode())
    assert reg.request("GET", f"{REPO}/manifests/{sha256(doc.encode())}").content == doc.encode()


def test_network_model_applies_to_registry_requests():
    reg = Registry()
    reg.ecr.create_repository(repositoryName=REPO)
    data = os.urandom(2 * 1024 * 1024)
    digest = upload_blob(reg.ecr, REPO, data)
    http("POST", "/_localaws/network", {"latency_ms": 200, "stream_mib_per_s": 8})
    start = time.perf_counter()
    assert reg.request("GET", "").status_code == 200  # the ping: one round trip
    assert time.perf_counter() - start >= 0.2
    # A blob GET: the redirect's round trip, then the download's, and 2 MiB at 8 MiB/s.
    start = time.perf_counter()
    assert reg.request("GET", f"{REPO}/blobs/{digest}").content == data
    assert time.perf_counter() - start >= 2 * 0.2 + 0.25
    # An upload's body is paced too.
    start = time.perf_counter()
    assert _push_blob_monolithic(reg, REPO, data + b"x").status_code == 201
    assert time.perf_counter() - start >= 0.2 + 0.25


def test_signed_requests_are_not_the_registry():
    """moto's services with /v2/ paths are signed: they still reach moto."""
    sesv2 = client("sesv2", SRC_REGION)
    try:
        sesv2.list_email_identities()
    except ClientError:
        pass  # whatever moto answers, it is not the registry's JSON error
    ops = http("GET", "/_localaws/meter")["requests"].get("ses", {})
    assert sum(ops.values()) >= 1
