"""Repository creation templates (and their use by replication), pagination
of DescribeRepositories / DescribeImages / ListImages, and untagged pushes
into repositories with tag mutability exclusions: all missing or broken in
moto 5.2.5."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from localaws import (
    A, B, OCI_CONFIG, OCI_MANIFEST, SRC_REGION, allow_replication_from, client, dumps, flush, http, image_ids,
    push_image, put_config, sha256, upload_blob,
)

DEST = ("eu-west-1", B)
LIFECYCLE = json.dumps({"rules": [{"rulePriority": 1, "selection": {
    "tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14},
    "action": {"type": "expire"}}]})
KMS_KEY = f"arn:aws:kms:eu-west-1:{B}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _error(excinfo):
    err = excinfo.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    return err["Error"]["Code"]


def _prefixes(resp):
    return [t["prefix"] for t in resp["repositoryCreationTemplates"]]


# --- repository creation templates ------------------------------------------------

def test_template_create_describe_update_delete():
    ecr = client("ecr", SRC_REGION)
    assert ecr.describe_repository_creation_templates()["repositoryCreationTemplates"] == []

    created = ecr.create_repository_creation_template(
        prefix="team", description="team repos", appliedFor=["REPLICATION", "PULL_THROUGH_CACHE"],
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "latest*"}],
        encryptionConfiguration={"encryptionType": "KMS", "kmsKey": KMS_KEY},
        resourceTags=[{"Key": "team", "Value": "a"}], lifecyclePolicy=LIFECYCLE,
        repositoryPolicy=json.dumps({"Version": "2012-10-17", "Statement": []}),
        customRoleArn=f"arn:aws:iam::{A}:role/ecr-templates",
    )
    assert created["registryId"] == A
    t = created["repositoryCreationTemplate"]
    assert t["prefix"] == "team" and t["description"] == "team repos"
    assert t["appliedFor"] == ["REPLICATION", "PULL_THROUGH_CACHE"]
    assert t["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert t["imageTagMutabilityExclusionFilters"] == [{"filterType": "WILDCARD", "filter": "latest*"}]
    assert t["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": KMS_KEY}
    assert t["resourceTags"] == [{"Key": "team", "Value": "a"}]
    assert t["lifecyclePolicy"] == LIFECYCLE and t["customRoleArn"].endswith("role/ecr-templates")
    assert t["createdAt"] == t["updatedAt"]

    # Defaults: MUTABLE, AES256.
    root = ecr.create_repository_creation_template(prefix="ROOT", appliedFor=["REPLICATION"])
    assert root["repositoryCreationTemplate"]["imageTagMutability"] == "MUTABLE"
    assert root["repositoryCreationTemplate"]["encryptionConfiguration"] == {"encryptionType": "AES256"}

    for prefix in ("team", "team/"):  # "there is always an assumed / applied to the end"
        with pytest.raises(ClientError) as excinfo:
            ecr.create_repository_creation_template(prefix=prefix, appliedFor=["REPLICATION"])
        assert _error(excinfo) == "TemplateAlreadyExistsException"

    described = ecr.describe_repository_creation_templates()
    assert described["registryId"] == A
    assert _prefixes(described) == ["ROOT", "team"]
    assert _prefixes(ecr.describe_repository_creation_templates(prefixes=["team", "nope"])) == ["team"]

    updated = ecr.update_repository_creation_template(prefix="team", description="changed",
                                                      imageTagMutability="IMMUTABLE")
    u = updated["repositoryCreationTemplate"]
    assert u["description"] == "changed" and u["imageTagMutability"] == "IMMUTABLE"
    assert "imageTagMutabilityExclusionFilters" not in u  # dropped with the non-exclusion mutability
    assert u["encryptionConfiguration"] == t["encryptionConfiguration"]  # untouched members kept
    assert u["appliedFor"] == t["appliedFor"] and u["createdAt"] == t["createdAt"]
    assert u["updatedAt"] >= u["createdAt"]
    assert ecr.describe_repository_creation_templates(prefixes=["team"])["repositoryCreationTemplates"][0][
        "description"] == "changed"

    deleted = ecr.delete_repository_creation_template(prefix="team")
    assert deleted["registryId"] == A and deleted["repositoryCreationTemplate"]["description"] == "changed"
    assert _prefixes(ecr.describe_repository_creation_templates()) == ["ROOT"]
    for call in (lambda: ecr.delete_repository_creation_template(prefix="team"),
                 lambda: ecr.update_repository_creation_template(prefix="team", description="x")):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert _error(excinfo) == "TemplateNotFoundException"
        assert type(excinfo.value) is ecr.exceptions.TemplateNotFoundException


def test_template_validation():
    ecr = client("ecr", SRC_REGION)
    bad = [
        {"prefix": "Team/Upper", "appliedFor": ["REPLICATION"]},
        {"prefix": "root", "appliedFor": ["SOMETHING"]},
        {"prefix": "a", "appliedFor": []},
        {"prefix": "a", "appliedFor": ["REPLICATION"], "imageTagMutability": "SOMETIMES"},
        {"prefix": "a", "appliedFor": ["REPLICATION"], "encryptionConfiguration": {"encryptionType": "DES"}},
        {"prefix": "a", "appliedFor": ["REPLICATION"],
         "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "not-an-arn"}},
        {"prefix": "a", "appliedFor": ["REPLICATION"], "description": "x" * 257},
        {"prefix": "a", "appliedFor": ["REPLICATION"], "imageTagMutability": "MUTABLE_WITH_EXCLUSION",
         "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "bad/filter"}]},
    ]
    for params in bad:
        with pytest.raises(ClientError) as excinfo:
            ecr.create_repository_creation_template(**params)
        assert _error(excinfo) == "ValidationException", params
    # Exclusion filters only with a *_WITH_EXCLUSION mutability, and required by it (as CreateRepository).
    for params in ({"imageTagMutability": "MUTABLE",
                    "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "x*"}]},
                   {"imageTagMutability": "IMMUTABLE_WITH_EXCLUSION"}):
        with pytest.raises(ClientError) as excinfo:
            ecr.create_repository_creation_template(prefix="a", appliedFor=["REPLICATION"], **params)
        assert _error(excinfo) == "InvalidParameterException"
    with pytest.raises(ClientError) as excinfo:
        ecr.describe_repository_creation_templates(maxResults=1001)
    assert _error(excinfo) == "ValidationException"
    assert ecr.describe_repository_creation_templates()["repositoryCreationTemplates"] == []


def test_template_pages_and_scope():
    ecr = client("ecr", SRC_REGION)
    names = [f"p{i}" for i in range(5)]
    for name in names:
        ecr.create_repository_creation_template(prefix=name, appliedFor=["REPLICATION"])
    seen, token, pages = [], None, 0
    while True:
        kwargs = {"maxResults": 2, **({"nextToken": token} if token else {})}
        page = ecr.describe_repository_creation_templates(**kwargs)
        seen += _prefixes(page)
        pages += 1
        token = page.get("nextToken")
        if not token:
            break
    assert seen == names and pages == 3
    paginated = ecr.get_paginator("describe_repository_creation_templates").paginate(
        PaginationConfig={"PageSize": 4})
    assert [p for page in paginated for p in _prefixes(page)] == names
    with pytest.raises(ClientError) as excinfo:
        ecr.describe_repository_creation_templates(nextToken="garbage")
    assert _error(excinfo) == "InvalidParameterException"

    # Per account and Region; reset clears them.
    assert client("ecr", SRC_REGION, B).describe_repository_creation_templates()["repositoryCreationTemplates"] == []
    assert client("ecr", "us-east-1").describe_repository_creation_templates()["repositoryCreationTemplates"] == []
    http("POST", "/moto-api/reset")
    assert ecr.describe_repository_creation_templates()["repositoryCreationTemplates"] == []


def test_replication_creates_destination_repositories_from_templates():
    src = client("ecr", SRC_REGION)
    dst = client("ecr", DEST[0], DEST[1])
    dst.create_repository_creation_template(prefix="ROOT", appliedFor=["REPLICATION"],
                                            imageTagMutability="IMMUTABLE")
    dst.create_repository_creation_template(
        prefix="team", appliedFor=["REPLICATION"], imageTagMutability="MUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "release-*"}],
        encryptionConfiguration={"encryptionType": "KMS", "kmsKey": KMS_KEY},
        resourceTags=[{"Key": "owner", "Value": "team"}], lifecyclePolicy=LIFECYCLE)
    # More specific, but not for replication: ignored.
    dst.create_repository_creation_template(prefix="team/web", appliedFor=["PULL_THROUGH_CACHE"],
                                            imageTagMutability="MUTABLE")
    # The source registry's templates do not shape the destination's repositories.
    src.create_repository_creation_template(prefix="ROOT", appliedFor=["REPLICATION"],
                                            imageTagMutability="MUTABLE")
    put_config(src, ([DEST], None))
    allow_replication_from(DEST[1], DEST[0], A)
    for repo in ("team/web/api", "other/svc", "teamster"):
        src.create_repository(repositoryName=repo)
        push_image(src, repo, "v1")
    dst.create_repository(repositoryName="existing")  # created before: left alone
    src.create_repository(repositoryName="existing")
    push_image(src, "existing", "v1")
    flush()

    repos = {r["repositoryName"]: r for r in dst.describe_repositories()["repositories"]}
    team = repos["team/web/api"]
    assert team["imageTagMutability"] == "MUTABLE_WITH_EXCLUSION"
    assert team["imageTagMutabilityExclusionFilters"] == [{"filterType": "WILDCARD", "filter": "release-*"}]
    assert team["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": KMS_KEY}
    assert dst.list_tags_for_resource(resourceArn=team["repositoryArn"])["tags"] == [
        {"Key": "owner", "Value": "team"}]
    assert dst.get_lifecycle_policy(repositoryName="team/web/api")["lifecyclePolicyText"] == LIFECYCLE
    # "team" means "team/": "teamster" falls to ROOT, like "other/svc".
    for name in ("other/svc", "teamster"):
        assert repos[name]["imageTagMutability"] == "IMMUTABLE"
        assert repos[name]["encryptionConfiguration"] == {"encryptionType": "AES256"}
    assert repos["existing"]["imageTagMutability"] == "MUTABLE"

    # The template's immutability is in force: a second v1 arrives untagged.
    push_image(src, "other/svc", "v1")
    flush()
    assert sorted(tuple(t) for t in image_ids(dst, "other/svc").values()) == [(), ("v1",)]


def test_backfill_creates_destination_repositories_from_templates():
    src = client("ecr", SRC_REGION)
    dst = client("ecr", DEST[0], DEST[1])
    src.create_repository(repositoryName="team/db")
    push_image(src, "team/db", "v1")
    dst.create_repository_creation_template(prefix="team", appliedFor=["REPLICATION"],
                                            imageTagMutability="IMMUTABLE")
    put_config(src, ([DEST], ["team/"]))
    allow_replication_from(DEST[1], DEST[0], A)
    src.start_replication_backfill(destination={"region": DEST[0], "registryId": DEST[1]})
    flush()
    repo = dst.describe_repositories(repositoryNames=["team/db"])["repositories"][0]
    assert repo["imageTagMutability"] == "IMMUTABLE"


# --- pagination -------------------------------------------------------------------

def _push_many(ecr, repo, count, tag_every=0):
    """``count`` small distinct images sharing one config blob (cheap pushes)."""
    config = dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    upload_blob(ecr, repo, config)
    digests = []
    for i in range(count):
        manifest = dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
                          "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
                          "annotations": {"n": str(i)}})
        args = {"repositoryName": repo, "imageManifest": manifest, "imageManifestMediaType": OCI_MANIFEST}
        if tag_every and i % tag_every == 0:
            args["imageTag"] = f"t{i}"
        digests.append(ecr.put_image(**args)["image"]["imageId"]["imageDigest"])
    return digests


def _all_pages(call, key, **kwargs):
    items, token, sizes = [], None, []
    while True:
        page = call(**kwargs, **({"nextToken": token} if token else {}))
        items += page[key]
        sizes.append(len(page[key]))
        token = page.get("nextToken")
        if not token:
            return items, sizes


def test_describe_repositories_pages():
    ecr = client("ecr", SRC_REGION)
    names = [f"repo-{i:03d}" for i in range(105)]
    for name in names:
        ecr.create_repository(repositoryName=name)
    first = ecr.describe_repositories()  # default page: 100
    assert len(first["repositories"]) == 100 and first["nextToken"]
    repos, sizes = _all_pages(ecr.describe_repositories, "repositories")
    assert [r["repositoryName"] for r in repos] == names and sizes == [100, 5]
    repos, sizes = _all_pages(ecr.describe_repositories, "repositories", maxResults=40)
    assert [r["repositoryName"] for r in repos] == names and sizes == [40, 40, 25]
    everything = ecr.describe_repositories(maxResults=1000)
    assert len(everything["repositories"]) == 105 and "nextToken" not in everything
    paginated = ecr.get_paginator("describe_repositories").paginate(PaginationConfig={"PageSize": 50})
    assert [r["repositoryName"] for page in paginated for r in page["repositories"]] == names

    assert len(ecr.describe_repositories(repositoryNames=names[:3])["repositories"]) == 3
    for kwargs in ({"maxResults": 1001}, {"nextToken": "garbage"},
                   {"repositoryNames": names[:3], "maxResults": 2},
                   {"repositoryNames": names[:3], "nextToken": first["nextToken"]},
                   # a token of another listing (another registry)
                   {"registryId": B, "nextToken": first["nextToken"]}):
        with pytest.raises(ClientError) as excinfo:
            ecr.describe_repositories(**kwargs)
        assert _error(excinfo) == "InvalidParameterException", kwargs


def test_describe_images_and_list_images_pages():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName="many")
    digests = _push_many(ecr, "many", 103, tag_every=10)  # 11 tagged, 92 untagged

    first = ecr.describe_images(repositoryName="many")
    assert len(first["imageDetails"]) == 100 and first["nextToken"]
    details, sizes = _all_pages(ecr.describe_images, "imageDetails", repositoryName="many", maxResults=30)
    assert [d["imageDigest"] for d in details] == digests and sizes == [30, 30, 30, 13]
    tagged, _ = _all_pages(ecr.describe_images, "imageDetails", repositoryName="many", maxResults=4,
                           filter={"tagStatus": "TAGGED"})
    assert [d["imageTags"] for d in tagged] == [[f"t{i}"] for i in range(0, 103, 10)]
    untagged, sizes = _all_pages(ecr.describe_images, "imageDetails", repositoryName="many",
                                 filter={"tagStatus": "UNTAGGED"})
    assert len(untagged) == 92 and sizes == [92] and all("imageTags" not in d for d in untagged)
    paginated = ecr.get_paginator("describe_images").paginate(repositoryName="many",
                                                              PaginationConfig={"PageSize": 60})
    assert [d["imageDigest"] for page in paginated for d in page["imageDetails"]] == digests

    # imageIds: unpaginated, and maxResults / nextToken cannot go with it.
    by_id = ecr.describe_images(repositoryName="many", imageIds=[{"imageDigest": d} for d in digests[:3]])
    assert sorted(d["imageDigest"] for d in by_id["imageDetails"]) == sorted(digests[:3])
    assert "nextToken" not in by_id
    for kwargs in ({"imageIds": [{"imageTag": "t0"}], "maxResults": 5},
                   {"imageIds": [{"imageTag": "t0"}], "nextToken": first["nextToken"]},
                   {"maxResults": 1001}, {"nextToken": "garbage"},
                   {"nextToken": first["nextToken"], "filter": {"tagStatus": "TAGGED"}}):
        with pytest.raises(ClientError) as excinfo:
            ecr.describe_images(repositoryName="many", **kwargs)
        assert _error(excinfo) == "InvalidParameterException", kwargs

    ids, sizes = _all_pages(ecr.list_images, "imageIds", repositoryName="many")
    assert [i["imageDigest"] for i in ids] == digests and sizes == [100, 3]
    ids, sizes = _all_pages(ecr.list_images, "imageIds", repositoryName="many", maxResults=5,
                            filter={"tagStatus": "TAGGED"})
    assert [i["imageTag"] for i in ids] == [f"t{i}" for i in range(0, 103, 10)] and sizes == [5, 5, 1]
    with pytest.raises(ClientError) as excinfo:
        ecr.list_images(repositoryName="many", nextToken=first["nextToken"])
    assert _error(excinfo) == "InvalidParameterException"


# --- untagged pushes and exclusion filters -------------------------------------------

@pytest.mark.parametrize("mutability", ["IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION"])
def test_untagged_put_image_with_exclusion_filters(mutability):
    ecr = client("ecr", SRC_REGION)
    # "*-dev" is a valid WILDCARD filter but no regular expression (moto: HTTP 500).
    ecr.create_repository(repositoryName="excl", imageTagMutability=mutability,
                          imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "*-dev"}])
    untagged = push_image(ecr, "excl", None)
    assert image_ids(ecr, "excl") == {untagged["digest"]: []}

    # WITH_EXCLUSION: tags matching a filter get the opposite of the base setting.
    immutable_tag, mutable_tag = ("v1", "x-dev") if mutability.startswith("IMMUTABLE") else ("x-dev", "v1")
    first_mutable = push_image(ecr, "excl", mutable_tag)
    second_mutable = push_image(ecr, "excl", mutable_tag)
    push_image(ecr, "excl", immutable_tag)
    with pytest.raises(ClientError) as excinfo:
        push_image(ecr, "excl", immutable_tag)
    assert _error(excinfo) == "ImageTagAlreadyExistsException"
    tags = image_ids(ecr, "excl")
    assert tags[first_mutable["digest"]] == [] and tags[second_mutable["digest"]] == [mutable_tag]
    assert len(tags) == 4
