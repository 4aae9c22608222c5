"""The archive storage class: UpdateImageStorageClass, its events, and a restore's replication."""

from __future__ import annotations

import datetime
import re

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from localaws import (
    A, B, ENDPOINT, ENVELOPE_KEYS, SRC_REGION, allow_replication_from, assumed_client, client, configure,
    download, flush, http, image_ids, push_image, put_config, statuses, tap,
)

REPO = "team-a/web"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _storage_event(event, image, target):
    assert list(event) == ENVELOPE_KEYS
    assert event["detail-type"] == "ECR Image Action"
    assert event["source"] == "aws.ecr"
    assert event["account"] == A and event["region"] == SRC_REGION
    assert TIME.match(event["time"])
    assert event["resources"] == []
    # shared/events/archive-storage-class.json, field for field
    assert event["detail"] == {
        "result": "SUCCESS",
        "repository-name": REPO,
        "image-digest": image["digest"],
        "action-type": "UPDATE_STORAGE_CLASS",
        "target-storage-class": target,
        "manifest-media-type": image["media_type"],
    }


def _detail(ecr, digest):
    (d,) = ecr.describe_images(repositoryName=REPO, imageIds=[{"imageDigest": digest}])["imageDetails"]
    return d


def _update(ecr, digest, target, **extra):
    return ecr.update_image_storage_class(repositoryName=REPO, imageId={"imageDigest": digest},
                                          targetStorageClass=target, **extra)


def _code(err):
    return err.value.response["Error"]["Code"]


def _pending_restores():
    return [j for j in http("GET", "/_localaws/replication")["pending"] if j["kind"] == "restore"]


def test_archive_answers_archived_and_emits_the_event():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    events = tap(A, SRC_REGION)
    image = push_image(ecr, REPO, "v1")
    events.drain(expect=1)  # PUSH
    assert _detail(ecr, image["digest"])["imageStatus"] == "ACTIVE"

    resp = ecr.update_image_storage_class(repositoryName=REPO, imageId={"imageTag": "v1"},
                                          targetStorageClass="ARCHIVE")
    resp.pop("ResponseMetadata")
    assert resp == {"registryId": A, "repositoryName": REPO,
                    "imageId": {"imageDigest": image["digest"], "imageTag": "v1"}, "imageStatus": "ARCHIVED"}

    (event,) = events.drain(expect=1)
    _storage_event(event, image, "ARCHIVE")

    detail = _detail(ecr, image["digest"])
    assert detail["imageStatus"] == "ARCHIVED"
    assert isinstance(detail["lastArchivedAt"], datetime.datetime)
    assert "lastActivatedAt" not in detail
    assert detail["imageTags"] == ["v1"]


def test_archived_images_are_listed_only_when_asked_for_and_cannot_be_pulled():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    kept = push_image(ecr, REPO, "kept")
    gone = push_image(ecr, REPO, "old")
    _update(ecr, gone["digest"], "ARCHIVE")

    # "If not specified, only images with ACTIVE status are returned."
    assert image_ids(ecr, REPO) == {kept["digest"]: ["kept"]}
    archived = ecr.describe_images(repositoryName=REPO, filter={"imageStatus": "ARCHIVED"})["imageDetails"]
    assert [d["imageDigest"] for d in archived] == [gone["digest"]]
    every = ecr.describe_images(repositoryName=REPO, filter={"imageStatus": "ANY"})["imageDetails"]
    assert {d["imageDigest"]: d["imageStatus"] for d in every} == {kept["digest"]: "ACTIVE", gone["digest"]: "ARCHIVED"}
    assert ecr.list_images(repositoryName=REPO)["imageIds"] == [{"imageDigest": kept["digest"], "imageTag": "kept"}]
    assert ecr.list_images(repositoryName=REPO, filter={"imageStatus": "ARCHIVED"})["imageIds"] == [
        {"imageDigest": gone["digest"], "imageTag": "old"}]

    # "Archived images cannot be pulled": the manifest, then the layers.
    got = ecr.batch_get_image(repositoryName=REPO, imageIds=[{"imageTag": "old"}, {"imageTag": "kept"}])
    assert [i["imageId"]["imageDigest"] for i in got["images"]] == [kept["digest"]]
    assert got["failures"] == [{"imageId": {"imageTag": "old"}, "failureCode": "ImageNotFound",
                                "failureReason": "Requested image not found"}]
    layer = next(iter(gone["blobs"]))
    with pytest.raises(ClientError) as err:
        ecr.get_download_url_for_layer(repositoryName=REPO, layerDigest=layer)
    assert _code(err) == "LayersNotFoundException"
    avail = ecr.batch_check_layer_availability(repositoryName=REPO, layerDigests=[layer])
    assert avail["layers"][0]["layerAvailability"] == "ARCHIVED"
    # The active image's layers are served as before.
    for digest, data in kept["blobs"].items():
        assert download(ecr, REPO, digest) == data


def test_archive_does_not_replicate_or_touch_replicas():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([("us-east-1", A)], None))
    image = push_image(ecr, REPO, "v1")
    flush()
    east = client("ecr", "us-east-1")
    east_events = tap(A, "us-east-1")

    _update(ecr, image["digest"], "ARCHIVE")

    assert _pending_restores() == [] and flush() == 0
    assert east_events.drain() == []
    assert image_ids(east, REPO) == {image["digest"]: ["v1"]}
    assert _detail(east, image["digest"])["imageStatus"] == "ACTIVE"
    assert statuses(ecr, REPO, image["digest"])[("us-east-1", A)]["status"] == "COMPLETE"


def test_restore_emits_the_event_when_done_and_replicates_to_the_configured_destinations():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    image = push_image(ecr, REPO, "v1")  # before any replication configuration: not replicated
    _update(ecr, image["digest"], "ARCHIVE")
    put_config(ecr, ([("us-east-1", A), ("eu-west-1", B)], ["team-a/"]))
    allow_replication_from(B, "eu-west-1", A)
    events = tap(A, SRC_REGION)
    east_events = tap(A, "us-east-1")
    configure(restore_seconds=60)

    resp = _update(ecr, image["digest"], "STANDARD")
    assert resp["imageStatus"] == "ACTIVATING"
    assert resp["imageId"] == {"imageDigest": image["digest"]}
    # ACTIVATING: "the image remains in the archive state and cannot be pulled".
    assert _detail(ecr, image["digest"])["imageStatus"] == "ACTIVATING"
    assert image_ids(ecr, REPO) == {}
    listed = ecr.describe_images(repositoryName=REPO, filter={"imageStatus": "ACTIVATING"})["imageDetails"]
    assert [d["imageDigest"] for d in listed] == [image["digest"]]
    assert ecr.batch_get_image(repositoryName=REPO, imageIds=[{"imageTag": "v1"}])["images"] == []
    (pending,) = _pending_restores()
    assert pending["source"] == f"{A}/{SRC_REGION}/{REPO}/{image['digest']}" and pending["due_in_seconds"] > 0
    assert events.drain() == []  # the event comes when the restore is done

    assert flush(A) == 3  # the restore, then one replication per destination

    (event,) = events.drain(expect=1)
    _storage_event(event, image, "STANDARD")
    detail = _detail(ecr, image["digest"])
    assert detail["imageStatus"] == "ACTIVE"
    assert detail["lastActivatedAt"] >= detail["lastArchivedAt"]
    got = ecr.batch_get_image(repositoryName=REPO, imageIds=[{"imageTag": "v1"}])["images"]
    assert [i["imageId"]["imageDigest"] for i in got] == [image["digest"]]

    # Replicated as a push would be: same destinations, the image's tag, REPLICATE events.
    east = client("ecr", "us-east-1")
    eu = assumed_client("ecr", "eu-west-1", B)
    for dest in (east, eu):
        assert image_ids(dest, REPO) == {image["digest"]: ["v1"]}
        for digest, data in image["blobs"].items():
            assert download(dest, REPO, digest) == data
    assert {k: s["status"] for k, s in statuses(ecr, REPO, image["digest"]).items()} == {
        ("us-east-1", A): "COMPLETE", ("eu-west-1", B): "COMPLETE"}
    (replicated,) = east_events.drain(expect=1)
    assert replicated["detail-type"] == "ECR Replication Action"
    assert replicated["detail"]["image-tag"] == "v1"
    assert replicated["detail"]["source-region"] == SRC_REGION


def test_restore_with_no_delay_completes_on_its_own_and_replicates_every_tag():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([("us-east-1", A)], None))
    image = push_image(ecr, REPO, "v1")
    ecr.put_image(repositoryName=REPO, imageManifest=image["manifest"], imageTag="stable",
                  imageManifestMediaType=image["media_type"])
    flush()
    east = client("ecr", "us-east-1")
    east.batch_delete_image(repositoryName=REPO, imageIds=[{"imageDigest": image["digest"]}])
    _update(ecr, image["digest"], "ARCHIVE")

    _update(ecr, image["digest"], "STANDARD")  # restore_seconds defaults to 0: the worker finishes it

    for _ in range(100):
        if image_ids(east, REPO).get(image["digest"]) == ["stable", "v1"]:
            break
        flush()
    flush()  # waits for a job the worker may be running
    assert _detail(ecr, image["digest"])["imageStatus"] == "ACTIVE"
    assert image_ids(east, REPO) == {image["digest"]: ["stable", "v1"]}
    assert statuses(ecr, REPO, image["digest"])[("us-east-1", A)]["status"] == "COMPLETE"


def test_pushing_an_archived_image_restores_it_at_once():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    image = push_image(ecr, REPO, "v1")
    _update(ecr, image["digest"], "ARCHIVE")
    put_config(ecr, ([("us-east-1", A)], None))
    events = tap(A, SRC_REGION)

    ecr.put_image(repositoryName=REPO, imageManifest=image["manifest"], imageTag="v1",
                  imageManifestMediaType=image["media_type"])

    assert _detail(ecr, image["digest"])["imageStatus"] == "ACTIVE"
    (push,) = events.drain(expect=1)
    assert push["detail"]["action-type"] == "PUSH"
    flush()
    assert image_ids(client("ecr", "us-east-1"), REPO) == {image["digest"]: ["v1"]}


def test_errors():
    ecr = client("ecr", SRC_REGION)
    with pytest.raises(ClientError) as err:
        _update(ecr, "sha256:" + "0" * 64, "ARCHIVE")
    assert _code(err) == "RepositoryNotFoundException"

    ecr.create_repository(repositoryName=REPO)
    with pytest.raises(ClientError) as err:
        _update(ecr, "sha256:" + "0" * 64, "ARCHIVE")
    assert _code(err) == "ImageNotFoundException"
    with pytest.raises(ClientError) as err:
        ecr.update_image_storage_class(repositoryName=REPO, imageId={"imageTag": "nope"},
                                       targetStorageClass="ARCHIVE")
    assert _code(err) == "ImageNotFoundException"

    image = push_image(ecr, REPO, "v1")
    with pytest.raises(ClientError) as err:
        _update(ecr, image["digest"], "ARCHIVE", registryId=B)
    assert _code(err) == "RepositoryNotFoundException"
    # Not a transition: restoring an active image, archiving an archived one.
    with pytest.raises(ClientError) as err:
        _update(ecr, image["digest"], "STANDARD")
    assert _code(err) == "ImageStorageClassUpdateNotSupportedException"
    _update(ecr, image["digest"], "ARCHIVE")
    with pytest.raises(ClientError) as err:
        _update(ecr, image["digest"], "ARCHIVE")
    assert _code(err) == "ImageStorageClassUpdateNotSupportedException"

    # What boto3 validates itself, sent as an SDK that does not would send it.
    lax = boto3.client("ecr", region_name=SRC_REGION, endpoint_url=ENDPOINT, aws_access_key_id=A,
                       aws_secret_access_key="secret", config=Config(parameter_validation=False))
    with pytest.raises(ClientError) as err:
        lax.update_image_storage_class(repositoryName=REPO, imageId={"imageDigest": image["digest"]},
                                       targetStorageClass="GLACIER")
    assert _code(err) == "ValidationException"
    with pytest.raises(ClientError) as err:
        lax.update_image_storage_class(repositoryName=REPO, imageId={}, targetStorageClass="STANDARD")
    assert _code(err) == "InvalidParameterException"
    with pytest.raises(ClientError) as err:
        ecr.describe_images(repositoryName=REPO, filter={"imageStatus": "GONE"})
    assert _code(err) == "InvalidParameterException"


def test_restore_seconds_is_validated():
    with pytest.raises(Exception) as err:
        configure(restore_seconds=-1)
    assert "400" in str(err.value)
    assert configure(restore_seconds=2.5)["restore_seconds"] == 2.5
