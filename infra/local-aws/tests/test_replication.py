"""Replication: what ECR does after a push, as replwatch observes it."""

from __future__ import annotations

import re
import time

from localaws import (
    A, B, ENVELOPE_KEYS, OCI_CONFIG, SRC_REGION, allow_replication_from, assumed_client, client, configure,
    download, flush, image_ids, push_image, push_index, put_config, statuses, tap,
)

REPO = "team-a/web"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _check_envelope(event, detail_type, account, region, resources):
    assert list(event) == ENVELOPE_KEYS
    assert event["version"] == "0"
    assert UUID.match(event["id"])
    assert event["detail-type"] == detail_type
    assert event["source"] == "aws.ecr"
    assert event["account"] == account
    assert TIME.match(event["time"])
    assert event["region"] == region
    assert event["resources"] == resources


def test_push_replicates_cross_region_and_cross_account():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([("us-east-1", A), ("eu-west-1", B)], ["team-a/"]))
    allow_replication_from(B, "eu-west-1", A)
    push_tap = tap(A, SRC_REGION)
    east_tap = tap(A, "us-east-1")
    eu_tap = tap(B, "eu-west-1", assumed=True)
    push_tap.drain()  # the CloudTrail event of PutReplicationConfiguration

    image = push_image(ecr, REPO, "v1.4.2")

    (push,) = push_tap.drain(expect=1)
    _check_envelope(push, "ECR Image Action", A, SRC_REGION, [])
    assert push["detail"] == {
        "result": "SUCCESS",
        "repository-name": REPO,
        "image-digest": image["digest"],
        "action-type": "PUSH",
        "image-tag": "v1.4.2",
        "manifest-media-type": image["media_type"],
        "artifact-media-type": OCI_CONFIG,
    }

    flush()
    east = client("ecr", "us-east-1")
    eu = assumed_client("ecr", "eu-west-1", B)
    for dest in (east, eu):
        assert image_ids(dest, REPO) == {image["digest"]: ["v1.4.2"]}
        (got,) = dest.batch_get_image(repositoryName=REPO, imageIds=[{"imageTag": "v1.4.2"}])["images"]
        assert got["imageManifest"] == image["manifest"]
        assert got["imageManifestMediaType"] == image["media_type"]
        assert got["imageId"] == {"imageDigest": image["digest"], "imageTag": "v1.4.2"}
        for digest, data in image["blobs"].items():
            assert download(dest, REPO, digest) == data
        avail = dest.batch_check_layer_availability(repositoryName=REPO, layerDigests=list(image["blobs"]))
        assert not avail["failures"] and len(avail["layers"]) == len(image["blobs"])

    for t, account, region in ((east_tap, A, "us-east-1"), (eu_tap, B, "eu-west-1")):
        (event,) = t.drain(expect=1)
        _check_envelope(event, "ECR Replication Action", account, region,
                        [f"arn:aws:ecr:{region}:{account}:repository/{REPO}"])
        assert event["detail"] == {
            "result": "SUCCESS",
            "repository-name": REPO,
            "image-digest": image["digest"],
            "source-account": A,
            "action-type": "REPLICATE",
            "source-region": SRC_REGION,
            "image-tag": "v1.4.2",
        }

    assert statuses(ecr, REPO, image["digest"]) == {
        ("us-east-1", A): {"region": "us-east-1", "registryId": A, "status": "COMPLETE"},
        ("eu-west-1", B): {"region": "eu-west-1", "registryId": B, "status": "COMPLETE"},
    }
    by_tag = ecr.describe_image_replication_status(repositoryName=REPO, imageId={"imageTag": "v1.4.2"})
    assert by_tag["imageId"] == {"imageDigest": image["digest"], "imageTag": "v1.4.2"}
    assert len(by_tag["replicationStatuses"]) == 2


def test_replication_runs_in_background_without_flush():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([("us-east-1", A)], None))
    image = push_image(ecr, REPO, "v1")
    deadline = time.time() + 5
    while statuses(ecr, REPO, image["digest"])[("us-east-1", A)]["status"] != "COMPLETE":
        assert time.time() < deadline
        time.sleep(0.05)
    assert image_ids(client("ecr", "us-east-1"), REPO) == {image["digest"]: ["v1"]}


def test_image_pushed_before_configuration_is_not_replicated():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    before = push_image(ecr, REPO, "old")
    put_config(ecr, ([("us-east-1", A)], None))
    after = push_image(ecr, REPO, "new")
    flush()
    assert image_ids(client("ecr", "us-east-1"), REPO) == {after["digest"]: ["new"]}
    assert statuses(ecr, REPO, before["digest"]) == {}
    assert statuses(ecr, REPO, after["digest"])[("us-east-1", A)]["status"] == "COMPLETE"


def test_prefix_filters_select_repositories_and_rules_union():
    ecr = client("ecr", SRC_REGION)
    for repo in ("team-a/web", "team-b/api", "other/tool"):
        ecr.create_repository(repositoryName=repo)
    put_config(
        ecr,
        ([("us-east-1", A)], ["team-a/"]),
        ([("eu-west-1", B)], ["team-b/", "team-a/"]),
        ([("us-east-1", A), ("eu-west-1", B)], ["team-a/w"]),  # same destinations again
    )
    allow_replication_from(B, "eu-west-1", A)
    a = push_image(ecr, "team-a/web", "1")
    b = push_image(ecr, "team-b/api", "1")
    o = push_image(ecr, "other/tool", "1")
    flush()
    assert set(statuses(ecr, "team-a/web", a["digest"])) == {("us-east-1", A), ("eu-west-1", B)}
    assert set(statuses(ecr, "team-b/api", b["digest"])) == {("eu-west-1", B)}
    assert statuses(ecr, "other/tool", o["digest"]) == {}
    east = client("ecr", "us-east-1")
    assert [r["repositoryName"] for r in east.describe_repositories()["repositories"]] == ["team-a/web"]
    eu = assumed_client("ecr", "eu-west-1", B)
    assert sorted(r["repositoryName"] for r in eu.describe_repositories()["repositories"]) == ["team-a/web", "team-b/api"]


def test_rule_without_filters_matches_every_repository_and_no_chaining():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName="anything/at-all")
    put_config(ecr, ([("us-east-1", A)], None))
    # us-east-1 has its own rule onward to B: replicas must not chain.
    put_config(client("ecr", "us-east-1"), ([("eu-west-1", B)], None))
    image = push_image(ecr, "anything/at-all", None)
    flush()
    assert image_ids(client("ecr", "us-east-1"), "anything/at-all") == {image["digest"]: []}
    eu = assumed_client("ecr", "eu-west-1", B)
    assert eu.describe_repositories()["repositories"] == []


def test_configured_failure():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([("us-east-1", A), ("eu-west-1", B)], None))
    allow_replication_from(B, "eu-west-1", A)
    configure(destinations={f"us-east-1/{A}": {"fail": True, "failure_code": "REPLICATION_DENIED"}})
    east_tap = tap(A, "us-east-1")
    image = push_image(ecr, REPO, "v1")
    flush()
    st = statuses(ecr, REPO, image["digest"])
    assert st[("us-east-1", A)] == {"region": "us-east-1", "registryId": A, "status": "FAILED",
                                    "failureCode": "REPLICATION_DENIED"}
    assert st[("eu-west-1", B)]["status"] == "COMPLETE"
    assert client("ecr", "us-east-1").describe_repositories()["repositories"] == []
    (event,) = east_tap.drain(expect=1)
    assert event["detail"]["result"] == "FAILED"
    assert event["detail"]["action-type"] == "REPLICATE"

    configure(destinations={f"us-east-1/{A}": {"fail": True}})
    other = push_image(ecr, REPO, "v2")
    flush()
    assert statuses(ecr, REPO, other["digest"])[("us-east-1", A)]["failureCode"] == "ACCESS_DENIED"


def test_paused_destination_stays_in_progress_until_flush_or_unpause():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([("us-east-1", A)], None))
    configure(destinations={f"us-east-1/{A}": {"paused": True}})
    first = push_image(ecr, REPO, "v1")
    time.sleep(0.3)
    assert statuses(ecr, REPO, first["digest"])[("us-east-1", A)]["status"] == "IN_PROGRESS"
    assert len(configure()["pending"]) == 1
    assert flush() == 1
    assert statuses(ecr, REPO, first["digest"])[("us-east-1", A)]["status"] == "COMPLETE"

    second = push_image(ecr, REPO, "v2")
    time.sleep(0.2)
    assert statuses(ecr, REPO, second["digest"])[("us-east-1", A)]["status"] == "IN_PROGRESS"
    configure(destinations={f"us-east-1/{A}": {"paused": False}})
    deadline = time.time() + 5
    while statuses(ecr, REPO, second["digest"])[("us-east-1", A)]["status"] != "COMPLETE":
        assert time.time() < deadline
        time.sleep(0.05)


def test_flush_can_be_limited_to_one_source_account():
    # Tests sharing one server each push from their own account; one test's flush must not
    # complete another's paused replication.
    other = "333333333333"
    ecr_a = client("ecr", SRC_REGION)
    ecr_o = client("ecr", SRC_REGION, other)
    for ecr, account in ((ecr_a, A), (ecr_o, other)):
        ecr.create_repository(repositoryName=REPO)
        put_config(ecr, ([("us-east-1", account)], None))
    configure(destinations={f"us-east-1/{A}": {"paused": True}, f"us-east-1/{other}": {"paused": True}})
    mine = push_image(ecr_a, REPO, "v1")
    theirs = push_image(ecr_o, REPO, "v1")
    assert flush(other) == 1
    assert statuses(ecr_o, REPO, theirs["digest"])[("us-east-1", other)]["status"] == "COMPLETE"
    assert statuses(ecr_a, REPO, mine["digest"])[("us-east-1", A)]["status"] == "IN_PROGRESS"


def test_delay_keeps_in_progress_until_due():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([("us-east-1", A), ("eu-west-1", B)], None))
    allow_replication_from(B, "eu-west-1", A)
    configure(default_delay_seconds=0.5, destinations={f"eu-west-1/{B}": {"delay_seconds": 60}})
    image = push_image(ecr, REPO, "v1")
    st = statuses(ecr, REPO, image["digest"])
    assert {k: v["status"] for k, v in st.items()} == {("us-east-1", A): "IN_PROGRESS", ("eu-west-1", B): "IN_PROGRESS"}
    deadline = time.time() + 5
    while statuses(ecr, REPO, image["digest"])[("us-east-1", A)]["status"] != "COMPLETE":
        assert time.time() < deadline
        time.sleep(0.05)
    assert statuses(ecr, REPO, image["digest"])[("eu-west-1", B)]["status"] == "IN_PROGRESS"
    flush()
    assert statuses(ecr, REPO, image["digest"])[("eu-west-1", B)]["status"] == "COMPLETE"


def test_immutable_tag_conflict_arrives_untagged():
    east = client("ecr", "us-east-1")
    east.create_repository(repositoryName=REPO, imageTagMutability="IMMUTABLE")
    existing = push_image(east, REPO, "v1")
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([("us-east-1", A)], None))
    east_tap = tap(A, "us-east-1")
    image = push_image(ecr, REPO, "v1")
    flush()
    assert image_ids(east, REPO) == {existing["digest"]: ["v1"], image["digest"]: []}
    assert statuses(ecr, REPO, image["digest"])[("us-east-1", A)]["status"] == "COMPLETE"
    (event,) = east_tap.drain(expect=1)
    assert event["detail"]["result"] == "SUCCESS"


def test_mutable_destination_tag_moves():
    east = client("ecr", "us-east-1")
    east.create_repository(repositoryName=REPO)
    existing = push_image(east, REPO, "v1")
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([("us-east-1", A)], None))
    image = push_image(ecr, REPO, "v1")
    flush()
    assert image_ids(east, REPO) == {existing["digest"]: [], image["digest"]: ["v1"]}


def test_multi_arch_index_replicates_with_children():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([("eu-west-1", B)], None))
    allow_replication_from(B, "eu-west-1", A)
    index = push_index(ecr, REPO, "multi")
    flush()
    eu = assumed_client("ecr", "eu-west-1", B)
    ids = image_ids(eu, REPO)
    assert ids[index["digest"]] == ["multi"]
    for child in index["children"]:
        assert child["digest"] in ids
        for digest, data in child["blobs"].items():
            assert download(eu, REPO, digest) == data
    (got,) = eu.batch_get_image(repositoryName=REPO, imageIds=[{"imageTag": "multi"}])["images"]
    assert got["imageManifest"] == index["manifest"]
    assert got["imageManifestMediaType"] == index["media_type"]
    assert statuses(ecr, REPO, index["digest"])[("eu-west-1", B)]["status"] == "COMPLETE"


def test_delete_emits_delete_event_and_is_not_replicated():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([("us-east-1", A)], None))
    image = push_image(ecr, REPO, "v1")
    flush()
    src_tap = tap(A, SRC_REGION)
    east_tap = tap(A, "us-east-1")
    ecr.batch_delete_image(repositoryName=REPO, imageIds=[{"imageDigest": image["digest"]}])
    (event,) = src_tap.drain(expect=1)
    _check_envelope(event, "ECR Image Action", A, SRC_REGION, [])
    assert event["detail"] == {"result": "SUCCESS", "repository-name": REPO, "image-digest": image["digest"],
                               "action-type": "DELETE", "image-tag": "v1"}
    assert flush() == 0
    assert image_ids(client("ecr", "us-east-1"), REPO) == {image["digest"]: ["v1"]}
    assert east_tap.drain() == []


def test_drop_rate_one_loses_events_not_images():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([("us-east-1", A), ("eu-west-1", B)], None))
    allow_replication_from(B, "eu-west-1", A)
    configure(event_drop_rate=1.0, seed=7)
    src_tap = tap(A, SRC_REGION)
    east_tap = tap(A, "us-east-1")
    eu_tap = tap(B, "eu-west-1", assumed=True)
    image = push_image(ecr, REPO, "v1")
    flush()
    assert len(src_tap.drain(expect=1)) == 1  # PUSH events are not affected
    assert east_tap.drain() == [] and eu_tap.drain() == []
    assert image_ids(client("ecr", "us-east-1"), REPO) == {image["digest"]: ["v1"]}
    assert image_ids(assumed_client("ecr", "eu-west-1", B), REPO) == {image["digest"]: ["v1"]}


def test_duplicate_rate_one_sends_each_event_twice():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    put_config(ecr, ([("us-east-1", A)], None))
    configure(event_duplicate_rate=1.0, seed=3)
    east_tap = tap(A, "us-east-1")
    src_tap = tap(A, SRC_REGION)
    push_image(ecr, REPO, "v1")
    flush()
    first, second = east_tap.drain(expect=2)
    assert first == second
    assert len(src_tap.drain(expect=1)) == 1
