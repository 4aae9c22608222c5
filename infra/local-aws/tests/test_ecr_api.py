"""ECR API departures of moto fixed by the test bed."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from localaws import (
    A, OCI_INDEX, SRC_REGION, build_image, client, download, dumps, image_ids, push_image, push_index,
    sha256,
    upload_blob,
)

REPO = "team-a/web"


def _error(excinfo):
    err = excinfo.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    return err["Error"]["Code"]


def test_put_image_with_unuploaded_blobs_is_layers_not_found():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    image = build_image()
    first_two = list(image["blobs"].values())[:2]  # config + first layer; last layer missing
    for data in first_two:
        upload_blob(ecr, REPO, data)
    with pytest.raises(ClientError) as excinfo:
        ecr.put_image(repositoryName=REPO, imageManifest=image["manifest"], imageTag="v1")
    assert _error(excinfo) == "LayersNotFoundException"
    assert ecr.describe_images(repositoryName=REPO)["imageDetails"] == []


def test_put_index_with_missing_children_is_referenced_images_not_found():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    child = build_image()
    index = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": child["media_type"], "digest": child["digest"], "size": len(child["manifest"])}]})
    with pytest.raises(ClientError) as excinfo:
        ecr.put_image(repositoryName=REPO, imageManifest=index, imageTag="multi")
    assert _error(excinfo) == "ReferencedImagesNotFoundException"


def test_put_image_into_missing_repository():
    ecr = client("ecr", SRC_REGION)
    image = build_image()
    with pytest.raises(ClientError) as excinfo:
        ecr.put_image(repositoryName="nope/missing", imageManifest=image["manifest"], imageTag="v1")
    assert _error(excinfo) == "RepositoryNotFoundException"
    assert ecr.exceptions.RepositoryNotFoundException is type(excinfo.value)


def test_digest_is_sha256_of_manifest_and_checked():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    image = build_image()
    for data in image["blobs"].values():
        upload_blob(ecr, REPO, data)
    with pytest.raises(ClientError) as excinfo:
        ecr.put_image(repositoryName=REPO, imageManifest=image["manifest"], imageTag="v1",
                      imageDigest=sha256(b"something else"))
    assert _error(excinfo) == "ImageDigestDoesNotMatchException"
    got = ecr.put_image(repositoryName=REPO, imageManifest=image["manifest"], imageTag="v1")["image"]
    assert got["imageId"]["imageDigest"] == image["digest"]


def test_get_download_url_for_layer_streams_exact_bytes():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    big = push_image(ecr, REPO, "big", layer_sizes=(6 * 1024 * 1024 + 123,))  # two parts
    for digest, data in big["blobs"].items():
        assert download(ecr, REPO, digest) == data
    resp = ecr.get_download_url_for_layer(repositoryName=REPO, layerDigest=list(big["blobs"])[0])
    assert set(resp) - {"ResponseMetadata"} == {"downloadUrl", "layerDigest"}
    with pytest.raises(ClientError) as excinfo:
        ecr.get_download_url_for_layer(repositoryName=REPO, layerDigest=sha256(b"unknown"))
    assert _error(excinfo) == "LayersNotFoundException"
    with pytest.raises(ClientError) as excinfo:
        ecr.get_download_url_for_layer(repositoryName="nope/missing", layerDigest=sha256(b"x"))
    assert _error(excinfo) == "RepositoryNotFoundException"


def test_batch_check_layer_availability_agrees_with_uploads():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    data = b"layer bytes"
    digest = upload_blob(ecr, REPO, data)
    missing = sha256(b"never uploaded")
    resp = ecr.batch_check_layer_availability(repositoryName=REPO, layerDigests=[digest, missing])
    assert resp["layers"] == [{"layerDigest": digest, "layerAvailability": "AVAILABLE", "layerSize": len(data),
                               "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip"}]
    assert [f["layerDigest"] for f in resp["failures"]] == [missing]
    assert resp["failures"][0]["failureCode"] == "MissingLayerDigest"


def test_complete_layer_upload_checks():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    upload_id = ecr.initiate_layer_upload(repositoryName=REPO)["uploadId"]
    ecr.upload_layer_part(repositoryName=REPO, uploadId=upload_id, partFirstByte=0, partLastByte=2, layerPartBlob=b"abc")
    with pytest.raises(ClientError) as excinfo:
        ecr.complete_layer_upload(repositoryName=REPO, uploadId=upload_id, layerDigests=[sha256(b"xyz")])
    assert _error(excinfo) == "InvalidLayerException"
    upload_blob(ecr, REPO, b"abc")
    with pytest.raises(ClientError) as excinfo:
        upload_blob(ecr, REPO, b"abc")
    assert _error(excinfo) == "LayerAlreadyExistsException"
    empty = ecr.initiate_layer_upload(repositoryName=REPO)["uploadId"]
    with pytest.raises(ClientError) as excinfo:
        ecr.complete_layer_upload(repositoryName=REPO, uploadId=empty, layerDigests=[sha256(b"")])
    assert _error(excinfo) == "EmptyUploadException"


def test_describe_image_replication_status_errors():
    ecr = client("ecr", SRC_REGION)
    with pytest.raises(ClientError) as excinfo:
        ecr.describe_image_replication_status(repositoryName="nope/missing", imageId={"imageTag": "v1"})
    assert _error(excinfo) == "RepositoryNotFoundException"
    ecr.create_repository(repositoryName=REPO)
    with pytest.raises(ClientError) as excinfo:
        ecr.describe_image_replication_status(repositoryName=REPO, imageId={"imageTag": "v1"})
    assert _error(excinfo) == "ImageNotFoundException"
    image = push_image(ecr, REPO, "v1")
    resp = ecr.describe_image_replication_status(repositoryName=REPO, imageId={"imageDigest": image["digest"]})
    assert resp["replicationStatuses"] == []
    assert resp["imageId"] == {"imageDigest": image["digest"]}


def test_replication_configuration_allows_several_rules_but_not_the_source():
    ecr = client("ecr", SRC_REGION)
    config = json.load(open(__file__.replace("test_ecr_api.py", "replication-configuration.json")))
    ecr.put_replication_configuration(replicationConfiguration=config)
    assert ecr.describe_registry()["replicationConfiguration"] == config
    with pytest.raises(ClientError) as excinfo:
        ecr.put_replication_configuration(replicationConfiguration={
            "rules": [{"destinations": [{"region": SRC_REGION, "registryId": A}]}]})
    assert _error(excinfo) == "InvalidParameterException"


def test_tag_semantics_on_push():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    first = push_image(ecr, REPO, "latest")
    second = push_image(ecr, REPO, "latest")  # the tag moves, the old image stays untagged
    assert image_ids(ecr, REPO) == {first["digest"]: [], second["digest"]: ["latest"]}
    with pytest.raises(ClientError) as excinfo:  # same manifest, same tag: nothing changes
        ecr.put_image(repositoryName=REPO, imageManifest=second["manifest"], imageTag="latest")
    assert _error(excinfo) == "ImageAlreadyExistsException"
    with pytest.raises(ClientError) as excinfo:  # untagged re-push of an existing manifest
        ecr.put_image(repositoryName=REPO, imageManifest=second["manifest"])
    assert _error(excinfo) == "ImageAlreadyExistsException"
    ecr.put_image(repositoryName=REPO, imageManifest=second["manifest"], imageTag="v2")  # add a tag
    assert image_ids(ecr, REPO)[second["digest"]] == ["latest", "v2"]

    ecr.create_repository(repositoryName="team-a/locked", imageTagMutability="IMMUTABLE")
    push_image(ecr, "team-a/locked", "v1")
    with pytest.raises(ClientError) as excinfo:
        push_image(ecr, "team-a/locked", "v1")
    assert _error(excinfo) == "ImageTagAlreadyExistsException"


def test_layer_parts_must_be_at_least_5_mib_but_the_last():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    data = b"x" * (2 * 1024 * 1024)
    with pytest.raises(ClientError) as excinfo:
        upload_blob(ecr, REPO, data, part_size=1024 * 1024)
    assert _error(excinfo) == "LayerPartTooSmallException"
    upload_blob(ecr, REPO, data)  # one part: fine


def test_batch_get_image_reports_the_requested_tag():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    image = push_image(ecr, REPO, "v1")
    ecr.put_image(repositoryName=REPO, imageManifest=image["manifest"], imageTag="latest")
    for tag in ("v1", "latest"):
        (got,) = ecr.batch_get_image(repositoryName=REPO, imageIds=[{"imageTag": tag}])["images"]
        assert got["imageId"] == {"imageDigest": image["digest"], "imageTag": tag}


def test_image_size_is_the_sum_of_its_layers_and_none_for_an_index():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    image = push_image(ecr, REPO, "v1", layer_sizes=(3000, 5000))
    index = push_index(ecr, REPO, "multi")
    details = {
        d["imageDigest"]: d for d in ecr.describe_images(repositoryName=REPO)["imageDetails"]
    }
    assert details[image["digest"]]["imageSizeInBytes"] == 8000
    assert "imageSizeInBytes" not in details[index["digest"]] or details[index["digest"]]["imageSizeInBytes"] is None
