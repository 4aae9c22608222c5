"""OCI 1.1 referrers: signatures, SBOMs and attestations pushed with a `subject`,
ListImageReferrers, their storage class, and their replication."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from localaws import (
    A, B, OCI_MANIFEST, SRC_REGION, allow_replication_from, assumed_client, build_image, client, configure,
    download, dumps, flush, push_image, push_index, put_config, sha256, statuses, upload_blob,
)

REPO = "team-a/web"
EMPTY = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
NOTATION = "application/vnd.cncf.notary.signature"
SIGSTORE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SPDX = "application/spdx+json"
IN_TOTO = "application/vnd.in-toto+json"
CREATED = "2026-01-02T03:04:05Z"


def _code(err):
    return err.value.response["Error"]["Code"]


def _blob(ecr, data, repo=REPO):
    """Upload a blob unless the repository has it (as clients do: BatchCheckLayerAvailability first)."""
    digest = sha256(data)
    if not ecr.batch_check_layer_availability(repositoryName=repo, layerDigests=[digest])["layers"]:
        upload_blob(ecr, repo, data)
    return digest


def push_referrer(ecr, subject, layer_type, payload, *, artifact_type=None, config_type=EMPTY_TYPE,
                  annotations=None, repo=REPO):
    """Push an OCI image manifest whose `subject` is `subject` (a pushed or built image)."""
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type:
        doc["artifactType"] = artifact_type
    doc["config"] = {"mediaType": config_type, "digest": _blob(ecr, EMPTY, repo), "size": len(EMPTY)}
    doc["layers"] = [{"mediaType": layer_type, "digest": _blob(ecr, payload, repo), "size": len(payload)}]
    doc["subject"] = {"mediaType": subject["media_type"], "digest": subject["digest"],
                      "size": len(subject["manifest"].encode())}
    if annotations:
        doc["annotations"] = annotations
    manifest = dumps(doc)
    digest = sha256(manifest.encode())
    ecr.put_image(repositoryName=repo, imageManifest=manifest, imageManifestMediaType=OCI_MANIFEST,
                  imageDigest=digest)
    expected = {"digest": digest, "mediaType": OCI_MANIFEST, "size": len(manifest.encode()),
                "artifactStatus": "ACTIVE", "artifactType": artifact_type or config_type}
    if annotations:
        expected["annotations"] = annotations
    return {"digest": digest, "manifest": manifest, "referrer": expected,
            "blobs": {sha256(EMPTY): EMPTY, sha256(payload): payload}}


def notation_signature(ecr, subject, repo=REPO):
    """What `notation sign` pushes (JWS envelope, empty config, artifactType)."""
    return push_referrer(ecr, subject, "application/jose+json", os.urandom(700), artifact_type=NOTATION,
                         annotations={"io.cncf.notary.x509chain.thumbprint#S256": f'["{uuid.uuid4().hex}"]',
                                      "org.opencontainers.image.created": CREATED}, repo=repo)


def cosign_signature(ecr, subject, repo=REPO):
    """What cosign pushes in OCI 1.1 mode: a sigstore bundle with a subject."""
    bundle = json.dumps({"mediaType": SIGSTORE, "messageSignature": {"signature": uuid.uuid4().hex}}).encode()
    return push_referrer(ecr, subject, SIGSTORE, bundle, artifact_type=SIGSTORE,
                         annotations={"dev.sigstore.bundle.content": "message-signature",
                                      "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1",
                                      "org.opencontainers.image.created": CREATED}, repo=repo)


def sbom(ecr, subject, repo=REPO):
    """`oras attach --artifact-type application/spdx+json`."""
    doc = json.dumps({"spdxVersion": "SPDX-2.3", "name": uuid.uuid4().hex}).encode()
    return push_referrer(ecr, subject, SPDX, doc, artifact_type=SPDX,
                         annotations={"org.opencontainers.image.created": CREATED}, repo=repo)


def attestation(ecr, subject, repo=REPO):
    """An in-toto attestation packed the OCI 1.0 way: no artifactType, the type in config.mediaType."""
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v1", "nonce": uuid.uuid4().hex}).encode()
    return push_referrer(ecr, subject, IN_TOTO, statement, config_type=IN_TOTO,
                         annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v1"}, repo=repo)


def referrers(ecr, subject_digest, repo=REPO, **kwargs):
    resp = ecr.list_image_referrers(repositoryName=repo, subjectId={"imageDigest": subject_digest}, **kwargs)
    assert "nextToken" not in resp
    return resp["referrers"]


def _details(ecr, repo=REPO):
    images = ecr.describe_images(repositoryName=repo, filter={"imageStatus": "ANY"})["imageDetails"]
    return {d["imageDigest"]: d for d in images}


def test_signatures_sbom_and_attestations_of_a_multi_arch_index_and_its_child():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    ecr.create_repository(repositoryName="team-a/other")
    index = push_index(ecr, REPO, "v1")
    amd64, arm64 = index["children"]

    on_index = [notation_signature(ecr, index), cosign_signature(ecr, index), sbom(ecr, index)]
    on_child = [attestation(ecr, amd64), notation_signature(ecr, amd64)]

    # Each subject lists its own referrers, in push order, with the OCI descriptor fields;
    # the attestation's artifactType is its config.mediaType.
    assert referrers(ecr, index["digest"]) == [r["referrer"] for r in on_index]
    assert referrers(ecr, amd64["digest"]) == [r["referrer"] for r in on_child]
    assert referrers(ecr, amd64["digest"])[0]["artifactType"] == IN_TOTO
    assert referrers(ecr, arm64["digest"]) == []
    # Same repository only; a digest nothing refers to lists nothing (no error).
    assert referrers(ecr, index["digest"], repo="team-a/other") == []
    assert referrers(ecr, "sha256:" + "0" * 64) == []

    # The referrers are images of their own (untagged), and DescribeImages names their subject.
    details = _details(ecr)
    for r in on_index:
        assert details[r["digest"]]["subjectManifestDigest"] == index["digest"]
        assert "imageTags" not in details[r["digest"]]
    for r in on_child:
        assert details[r["digest"]]["subjectManifestDigest"] == amd64["digest"]
    for image in (index, amd64, arm64):
        assert "subjectManifestDigest" not in details[image["digest"]]
    # ...and are pulled like images.
    (got,) = ecr.batch_get_image(repositoryName=REPO, imageIds=[{"imageDigest": on_index[0]["digest"]}])["images"]
    assert got["imageManifest"] == on_index[0]["manifest"]


def test_filter_by_artifact_type():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    image = push_image(ecr, REPO, "v1")
    notation, cosign, spdx, intoto = (notation_signature(ecr, image), cosign_signature(ecr, image),
                                      sbom(ecr, image), attestation(ecr, image))
    # An index with a subject and no artifactType: listed without one (OCI rule), matched by no type filter.
    index_manifest = dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": spdx["digest"], "size": len(spdx["manifest"].encode())}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": image["digest"], "size": len(image["manifest"].encode())},
    })
    ecr.put_image(repositoryName=REPO, imageManifest=index_manifest,
                  imageManifestMediaType="application/vnd.oci.image.index.v1+json")
    index_ref = {"digest": sha256(index_manifest.encode()), "mediaType": "application/vnd.oci.image.index.v1+json",
                 "size": len(index_manifest.encode()), "artifactStatus": "ACTIVE"}

    def types(*wanted):
        return referrers(ecr, image["digest"], filter={"artifactTypes": list(wanted)})

    assert referrers(ecr, image["digest"]) == [notation["referrer"], cosign["referrer"], spdx["referrer"],
                                               intoto["referrer"], index_ref]
    assert types(NOTATION) == [notation["referrer"]]
    assert types(SPDX, NOTATION) == [notation["referrer"], spdx["referrer"]]
    assert types(IN_TOTO) == [intoto["referrer"]]
    assert types("application/vnd.example.unknown") == []
    assert referrers(ecr, image["digest"], filter={"artifactTypes": []}) == referrers(ecr, image["digest"])


def test_paging():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    image = push_image(ecr, REPO, "v1")
    pushed = [push_referrer(ecr, image, SPDX, b'{"spdxVersion":"SPDX-2.3"}', artifact_type=SPDX,
                            annotations={"n": str(n)})["digest"] for n in range(25)]
    subject = {"imageDigest": image["digest"]}

    # Without maxResults: pages of 20.
    first = ecr.list_image_referrers(repositoryName=REPO, subjectId=subject)
    assert [r["digest"] for r in first["referrers"]] == pushed[:20]
    second = ecr.list_image_referrers(repositoryName=REPO, subjectId=subject, nextToken=first["nextToken"])
    assert [r["digest"] for r in second["referrers"]] == pushed[20:]
    assert "nextToken" not in second

    seen, token, sizes = [], None, []
    while True:
        kwargs = {"nextToken": token} if token else {}
        page = ecr.list_image_referrers(repositoryName=REPO, subjectId=subject, maxResults=7, **kwargs)
        seen += [r["digest"] for r in page["referrers"]]
        sizes.append(len(page["referrers"]))
        token = page.get("nextToken")
        if not token:
            break
    assert sizes == [7, 7, 7, 4] and seen == pushed

    # A token belongs to its listing; maxResults is 1..50.
    with pytest.raises(ClientError) as err:
        ecr.list_image_referrers(repositoryName=REPO, subjectId=subject, nextToken=first["nextToken"],
                                 filter={"artifactTypes": [SPDX]})
    assert _code(err) == "InvalidParameterException"
    with pytest.raises(ClientError) as err:
        ecr.list_image_referrers(repositoryName=REPO, subjectId=subject, nextToken="not-a-token")
    assert _code(err) == "InvalidParameterException"
    with pytest.raises(ClientError) as err:
        ecr.list_image_referrers(repositoryName=REPO, subjectId=subject, maxResults=51)
    assert _code(err) == "ValidationException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_unknown_repository_and_bad_parameters():
    ecr = client("ecr", SRC_REGION)
    subject = {"imageDigest": "sha256:" + "a" * 64}
    with pytest.raises(ClientError) as err:
        ecr.list_image_referrers(repositoryName="team-a/missing", subjectId=subject)
    assert _code(err) == "RepositoryNotFoundException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    ecr.create_repository(repositoryName=REPO)
    with pytest.raises(ClientError) as err:  # another registry's repository of that name
        ecr.list_image_referrers(registryId=B, repositoryName=REPO, subjectId=subject)
    assert _code(err) == "RepositoryNotFoundException"
    assert ecr.list_image_referrers(registryId=A, repositoryName=REPO, subjectId=subject)["referrers"] == []

    with pytest.raises(ClientError) as err:
        ecr.list_image_referrers(repositoryName=REPO, subjectId={"imageDigest": "v1.0"})
    assert _code(err) == "InvalidParameterException"
    with pytest.raises(ClientError) as err:
        ecr.list_image_referrers(repositoryName=REPO, subjectId=subject, filter={"artifactStatus": "DELETED"})
    assert _code(err) == "ValidationException"
    with pytest.raises(ClientError) as err:
        ecr.list_image_referrers(repositoryName=REPO, subjectId=subject,
                                 filter={"artifactTypes": [f"application/x-{n}" for n in range(6)]})
    assert _code(err) == "ValidationException"


def test_a_referrer_may_be_pushed_before_its_subject():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    subject = build_image()  # not pushed yet
    sig = notation_signature(ecr, subject)
    assert referrers(ecr, subject["digest"]) == [sig["referrer"]]
    assert _details(ecr)[sig["digest"]]["subjectManifestDigest"] == subject["digest"]

    for data in subject["blobs"].values():
        _blob(ecr, data)
    ecr.put_image(repositoryName=REPO, imageManifest=subject["manifest"], imageTag="v1",
                  imageManifestMediaType=subject["media_type"])
    assert referrers(ecr, subject["digest"]) == [sig["referrer"]]


def test_archived_referrers_carry_their_status_and_are_filtered():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    image = push_image(ecr, REPO, "v1")
    sig, bom = notation_signature(ecr, image), sbom(ecr, image)
    ecr.update_image_storage_class(repositoryName=REPO, imageId={"imageDigest": bom["digest"]},
                                   targetStorageClass="ARCHIVE")
    archived = {**bom["referrer"], "artifactStatus": "ARCHIVED"}

    def by_status(status):
        return referrers(ecr, image["digest"], filter={"artifactStatus": status})

    # "If no filter is specified, only artifacts with ACTIVE status are returned."
    assert referrers(ecr, image["digest"]) == [sig["referrer"]]
    assert by_status("ACTIVE") == [sig["referrer"]]
    assert by_status("ARCHIVED") == [archived]
    assert by_status("ANY") == [sig["referrer"], archived]
    # Both filters at once.
    assert referrers(ecr, image["digest"], filter={"artifactStatus": "ANY", "artifactTypes": [SPDX]}) == [archived]

    # A restore is ACTIVATING until it completes.
    configure(restore_seconds=3600)
    ecr.update_image_storage_class(repositoryName=REPO, imageId={"imageDigest": bom["digest"]},
                                   targetStorageClass="STANDARD")
    assert by_status("ACTIVATING") == [{**bom["referrer"], "artifactStatus": "ACTIVATING"}]
    assert referrers(ecr, image["digest"]) == [sig["referrer"]]
    flush()
    assert referrers(ecr, image["digest"]) == [sig["referrer"], bom["referrer"]]

    # Archiving the subject leaves its referrers as they are.
    ecr.update_image_storage_class(repositoryName=REPO, imageId={"imageDigest": image["digest"]},
                                   targetStorageClass="ARCHIVE")
    assert referrers(ecr, image["digest"]) == [sig["referrer"], bom["referrer"]]


def test_deleting_a_subject_leaves_its_referrers_deleting_a_referrer_removes_it():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    image = push_image(ecr, REPO, "v1")
    sig, bom = notation_signature(ecr, image), sbom(ecr, image)

    ecr.batch_delete_image(repositoryName=REPO, imageIds=[{"imageDigest": sig["digest"]}])
    assert referrers(ecr, image["digest"]) == [bom["referrer"]]

    # Only lifecycle policies clean up the referrers of a deleted subject (none run here).
    ecr.batch_delete_image(repositoryName=REPO, imageIds=[{"imageTag": "v1"}])
    assert image["digest"] not in _details(ecr)
    assert referrers(ecr, image["digest"]) == [bom["referrer"]]


def test_replication_copies_referrers_which_stay_referrers():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([("us-east-1", A), ("eu-west-1", B)], ["team-a/"]))
    allow_replication_from(B, "eu-west-1", A)
    index = push_index(ecr, REPO, "v1")
    amd64 = index["children"][0]
    on_index = [notation_signature(ecr, index), sbom(ecr, index)]
    on_child = [attestation(ecr, amd64)]
    flush()

    for ref in on_index + on_child:
        assert {k: s["status"] for k, s in statuses(ecr, REPO, ref["digest"]).items()} == {
            ("us-east-1", A): "COMPLETE", ("eu-west-1", B): "COMPLETE"}
    for dest in (client("ecr", "us-east-1"), assumed_client("ecr", "eu-west-1", B)):
        # Same digests, same descriptors: still the referrers of the same subjects.
        assert referrers(dest, index["digest"]) == [r["referrer"] for r in on_index]
        assert referrers(dest, amd64["digest"]) == [r["referrer"] for r in on_child]
        details = _details(dest)
        for ref in on_index:
            assert details[ref["digest"]]["subjectManifestDigest"] == index["digest"]
            (got,) = dest.batch_get_image(repositoryName=REPO, imageIds=[{"imageDigest": ref["digest"]}])["images"]
            assert got["imageManifest"] == ref["manifest"]
            for digest, data in ref["blobs"].items():
                assert download(dest, REPO, digest) == data


def test_a_referrer_replicated_before_its_subject_refers_to_it_there():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([("us-east-1", A)], None))
    configure(destinations={f"us-east-1/{A}": {"delay_seconds": 3600}})  # taken at push time
    image = push_image(ecr, REPO, "v1")
    configure(destinations={f"us-east-1/{A}": None})
    sig = cosign_signature(ecr, image)
    deadline = time.time() + 5
    while statuses(ecr, REPO, sig["digest"])[("us-east-1", A)]["status"] != "COMPLETE":
        assert time.time() < deadline
        time.sleep(0.05)

    # The signature has arrived, its subject not yet: it is listed for that digest all the same.
    east = client("ecr", "us-east-1")
    assert statuses(ecr, REPO, image["digest"])[("us-east-1", A)]["status"] == "IN_PROGRESS"
    assert set(_details(east)) == {sig["digest"]}
    assert referrers(east, image["digest"]) == [sig["referrer"]]

    flush()
    assert set(_details(east)) == {sig["digest"], image["digest"]}
    assert referrers(east, image["digest"]) == [sig["referrer"]]
