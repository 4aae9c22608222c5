"""Replication backfill: StartReplicationBackfill, ListReplicationBackfills,
DescribeReplicationBackfillResults, StopReplicationBackfill."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError

from localaws import (
    A, B, SRC_REGION, assumed_client, client, configure, flush, http, image_ids, push_image,
    push_index, put_config, statuses, tap, upload_blob,
)

REPO = "team-a/web"
EAST = ("us-east-1", A)


def _error(excinfo):
    err = excinfo.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    return err["Error"]["Code"]


def _dest(region, account):
    return {"region": region, "registryId": account}


def _describe(ecr, backfill_id, **kwargs):
    resp = ecr.describe_replication_backfill_results(replicationBackfillId=backfill_id, **kwargs)
    resp.pop("ResponseMetadata")
    return resp


def _wait_status(ecr, backfill_id, *statuses_, timeout=5.0):
    deadline = time.time() + timeout
    while True:
        resp = _describe(ecr, backfill_id)
        if resp["status"] in statuses_:
            return resp
        assert time.time() < deadline, resp
        time.sleep(0.02)


def _push_same(ecr, repo, image, tag):
    """Push an image built by build_image/push_image (same bytes, same digest) elsewhere."""
    for data in image["blobs"].values():
        upload_blob(ecr, repo, data)
    ecr.put_image(repositoryName=repo, imageManifest=image["manifest"],
                  imageManifestMediaType=image["media_type"], imageTag=tag)


def test_backfill_replicates_existing_images_of_selected_repositories():
    ecr = client("ecr", SRC_REGION)
    for repo in (REPO, "team-a/api", "other/tool"):
        ecr.create_repository(repositoryName=repo)
    web = push_image(ecr, REPO, "v1")
    ecr.put_image(repositoryName=REPO, imageManifest=web["manifest"], imageTag="latest")  # 2 tags
    untagged = push_image(ecr, REPO, None)
    api = push_image(ecr, "team-a/api", "v1")
    push_image(ecr, "other/tool", "v1")  # not selected by the rule
    # already in the destination: counts COMPLETE, not copied again
    east = client("ecr", "us-east-1")
    east.create_repository(repositoryName="team-a/api")
    _push_same(east, "team-a/api", api, "v1")
    put_config(ecr, ([EAST], ["team-a/"]), ([("eu-west-1", B)], None))
    east_tap = tap(A, "us-east-1")
    configure(backfill_prepare_seconds=60)

    started = ecr.start_replication_backfill(destination=_dest(*EAST))
    backfill_id = started["replicationBackfillId"]
    assert set(started) - {"ResponseMetadata"} == {"replicationBackfillId", "registryId", "destination",
                                                    "status", "startedAt"}
    assert started["registryId"] == A and started["destination"] == _dest("us-east-1", A)
    assert started["status"] == "PREPARING"
    preparing = _describe(ecr, backfill_id)
    assert preparing["status"] == "PREPARING"
    assert "progress" not in preparing and "endedAt" not in preparing and preparing["results"] == []
    assert image_ids(east, "team-a/api") == {api["digest"]: ["v1"]}

    assert flush(A) >= 5  # PREPARING step + 4 replications
    done = _describe(ecr, backfill_id)
    assert done["status"] == "COMPLETE"
    assert done["registryId"] == A and done["replicationBackfillId"] == backfill_id
    assert done["destination"] == _dest("us-east-1", A)
    assert done["progress"] == {"totalReplicationCount": 4, "completedReplicationCount": 4,
                                "failedReplicationCount": 0, "failureCodes": []}
    assert done["endedAt"] >= done["startedAt"]
    assert "failureCode" not in done and "nextToken" not in done
    assert done["results"] == [
        {"repositoryName": "team-a/api", "imageId": {"imageDigest": api["digest"], "imageTag": "v1"},
         "status": "COMPLETE"},
        {"repositoryName": REPO, "imageId": {"imageDigest": web["digest"], "imageTag": "v1"}, "status": "COMPLETE"},
        {"repositoryName": REPO, "imageId": {"imageDigest": web["digest"], "imageTag": "latest"},
         "status": "COMPLETE"},
        {"repositoryName": REPO, "imageId": {"imageDigest": untagged["digest"]}, "status": "COMPLETE"},
    ]
    assert image_ids(east, REPO) == {web["digest"]: ["latest", "v1"], untagged["digest"]: []}
    assert [r["repositoryName"] for r in east.describe_repositories()["repositories"]] == ["team-a/api", REPO]
    # the other destination is untouched; no REPLICATE events; push statuses unchanged
    assert assumed_client("ecr", "eu-west-1", B).describe_repositories()["repositories"] == []
    assert east_tap.drain() == []
    assert statuses(ecr, REPO, web["digest"]) == {}

    (summary,) = ecr.list_replication_backfills()["backfills"]
    assert summary == {k: done[k] for k in ("replicationBackfillId", "destination", "status", "progress",
                                            "startedAt", "endedAt")}


def test_backfill_in_progress_then_stop_waits_for_in_flight_replications():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    index = push_index(ecr, REPO, "multi")  # 2 untagged children + the tagged index
    put_config(ecr, ([EAST], None))
    configure(backfill_concurrency=1, destinations={"us-east-1/" + A: {"paused": True}})
    backfill_id = ecr.start_replication_backfill(destination=_dest(*EAST))["replicationBackfillId"]

    running = _wait_status(ecr, backfill_id, "IN_PROGRESS")
    assert running["progress"] == {"totalReplicationCount": 3, "completedReplicationCount": 0,
                                   "failedReplicationCount": 0, "failureCodes": []}
    assert running["results"] == [] and "endedAt" not in running
    pending = [j for j in configure()["pending"] if j.get("backfill") == backfill_id]
    assert [(j["kind"], j["paused"]) for j in pending] == [("backfill", True)]

    stopped = ecr.stop_replication_backfill(replicationBackfillId=backfill_id)
    assert stopped["status"] == "STOPPING"  # one replication in flight (paused destination)
    assert set(stopped) - {"ResponseMetadata"} == {"registryId", "replicationBackfillId", "destination",
                                                    "status", "startedAt"}
    assert _describe(ecr, backfill_id)["status"] == "STOPPING"
    with pytest.raises(ClientError) as excinfo:
        ecr.stop_replication_backfill(replicationBackfillId=backfill_id)
    assert _error(excinfo) == "ReplicationBackfillInvalidStatusException"

    assert flush(A) == 1  # the in-flight one finishes, the queued ones were dropped
    done = _describe(ecr, backfill_id)
    assert done["status"] == "STOPPED" and "endedAt" in done
    assert done["progress"] == {"totalReplicationCount": 3, "completedReplicationCount": 1,
                                "failedReplicationCount": 0, "failureCodes": []}
    (result,) = done["results"]
    assert result["status"] == "COMPLETE"
    assert "subImageFailureCodes" not in result  # a child manifest, not the index
    assert len(image_ids(client("ecr", "us-east-1"), REPO)) == 1
    assert index["digest"] not in image_ids(client("ecr", "us-east-1"), REPO)


def test_stop_while_preparing_and_errors():
    ecr = client("ecr", SRC_REGION, retries=False)
    ecr.create_repository(repositoryName=REPO)
    push_image(ecr, REPO, "v1")
    put_config(ecr, ([EAST], None))
    configure(backfill_prepare_seconds=60)
    backfill_id = ecr.start_replication_backfill(destination=_dest(*EAST))["replicationBackfillId"]
    assert ecr.stop_replication_backfill(replicationBackfillId=backfill_id)["status"] == "STOPPED"
    stopped = _describe(ecr, backfill_id)
    assert stopped["status"] == "STOPPED" and "progress" not in stopped and stopped["results"] == []
    assert flush(A) == 0
    assert client("ecr", "us-east-1").describe_repositories()["repositories"] == []
    with pytest.raises(ClientError) as excinfo:
        ecr.stop_replication_backfill(replicationBackfillId=backfill_id)
    assert _error(excinfo) == "ReplicationBackfillInvalidStatusException"

    unknown = "00000000-0000-4000-8000-000000000000"
    for call in (ecr.stop_replication_backfill, ecr.describe_replication_backfill_results):
        with pytest.raises(ClientError) as excinfo:
            call(replicationBackfillId=unknown)
        assert _error(excinfo) == "ReplicationBackfillNotFoundException"
    with pytest.raises(ClientError) as excinfo:  # another account's registry does not have it
        client("ecr", SRC_REGION, B).describe_replication_backfill_results(replicationBackfillId=backfill_id)
    assert _error(excinfo) == "ReplicationBackfillNotFoundException"
    with pytest.raises(ClientError) as excinfo:
        ecr.describe_replication_backfill_results(replicationBackfillId="not-an-id")
    assert _error(excinfo) == "InvalidParameterException"


def test_destination_must_be_in_the_replication_configuration():
    ecr = client("ecr", SRC_REGION, retries=False)
    with pytest.raises(ClientError) as excinfo:  # no configuration at all
        ecr.start_replication_backfill(destination=_dest(*EAST))
    assert _error(excinfo) == "ValidationException"
    put_config(ecr, ([EAST], ["team-a/"]))
    for dest in (_dest("us-east-1", B), _dest("eu-west-1", A)):
        with pytest.raises(ClientError) as excinfo:
            ecr.start_replication_backfill(destination=dest)
        assert _error(excinfo) == "ValidationException"
    assert ecr.list_replication_backfills()["backfills"] == []


def test_one_backfill_per_destination_region_and_ten_per_registry():
    ecr = client("ecr", SRC_REGION, retries=False)
    regions = ["us-east-1", "us-east-2", "us-west-1", "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1",
               "eu-north-1", "ap-southeast-1", "ap-southeast-2", "ap-northeast-1"]
    put_config(ecr, ([(r, A) for r in regions] + [("us-east-1", B)], None))
    configure(backfill_prepare_seconds=60)  # they all stay PREPARING
    first = ecr.start_replication_backfill(destination=_dest("us-east-1", A))["replicationBackfillId"]
    for dest in (_dest("us-east-1", A), _dest("us-east-1", B)):  # same destination Region
        with pytest.raises(ClientError) as excinfo:
            ecr.start_replication_backfill(destination=dest)
        assert _error(excinfo) == "ReplicationBackfillInProgressException"
    for region in regions[1:10]:
        ecr.start_replication_backfill(destination=_dest(region, A))
    with pytest.raises(ClientError) as excinfo:
        ecr.start_replication_backfill(destination=_dest(regions[10], A))
    assert _error(excinfo) == "LimitExceededException"
    # other registries (account or Region) have their own limits
    other = client("ecr", "us-east-2", retries=False)
    put_config(other, ([("us-east-1", A)], None))
    other.start_replication_backfill(destination=_dest("us-east-1", A))

    ecr.stop_replication_backfill(replicationBackfillId=first)
    ecr.start_replication_backfill(destination=_dest(regions[10], A))
    with pytest.raises(ClientError) as excinfo:
        ecr.start_replication_backfill(destination=_dest("us-east-1", B))
    assert _error(excinfo) == "LimitExceededException"

    listed = []
    token = None
    while True:
        page = ecr.list_replication_backfills(maxResults=4, **({"nextToken": token} if token else {}))
        assert len(page["backfills"]) <= 4
        listed += page["backfills"]
        token = page.get("nextToken")
        if not token:
            break
    assert len(listed) == 11 and listed[0]["replicationBackfillId"] == first
    assert [b["status"] for b in listed] == ["STOPPED"] + ["PREPARING"] * 10
    with pytest.raises(ClientError) as excinfo:
        ecr.list_replication_backfills(maxResults=51)
    assert _error(excinfo) == "InvalidParameterException"


def test_results_status_filter_pagination_and_failure_threshold():
    ecr = client("ecr", SRC_REGION, retries=False)
    ecr.create_repository(repositoryName=REPO)
    east = client("ecr", "us-east-1")
    east.create_repository(repositoryName=REPO)
    images = [push_image(ecr, REPO, f"v{i}") for i in range(6)]
    for image, i in zip(images[:3], range(3)):  # half of them are there already
        _push_same(east, REPO, image, f"v{i}")
    put_config(ecr, ([EAST], None))
    configure(destinations={"us-east-1/" + A: {"fail": True, "failure_code": "REPLICATION_DENIED"}})
    backfill_id = ecr.start_replication_backfill(destination=_dest(*EAST))["replicationBackfillId"]
    flush(A)

    done = _describe(ecr, backfill_id)
    assert done["status"] == "FAILED"  # 3 of 6 failed: 50 % or more
    assert done["failureCode"] == "REPLICATION_FAILURE_THRESHOLD_EXCEEDED"
    assert done["progress"] == {"totalReplicationCount": 6, "completedReplicationCount": 3,
                                "failedReplicationCount": 3, "failureCodes": ["REPLICATION_DENIED"]}
    by_tag = {r["imageId"]["imageTag"]: r for r in done["results"]}
    assert [by_tag[f"v{i}"]["status"] for i in range(6)] == ["COMPLETE"] * 3 + ["FAILED"] * 3
    assert by_tag["v4"] == {"repositoryName": REPO, "imageId": {"imageDigest": images[4]["digest"], "imageTag": "v4"},
                            "status": "FAILED", "failureCode": "REPLICATION_DENIED"}

    def pages(**kwargs):
        out, token = [], None
        while True:
            page = _describe(ecr, backfill_id, maxResults=2, **kwargs, **({"nextToken": token} if token else {}))
            assert len(page["results"]) <= 2
            out.append(page["results"])
            token = page.get("nextToken")
            if not token:
                return out, page

    all_pages, _ = pages()
    assert [len(p) for p in all_pages] == [2, 2, 2]
    assert [r for p in all_pages for r in p] == done["results"]
    failed_pages, last = pages(resultStatusFilter="FAILED")
    assert [r["imageId"]["imageTag"] for p in failed_pages for r in p] == ["v3", "v4", "v5"]
    assert last["status"] == "FAILED" and last["progress"] == done["progress"]
    complete = _describe(ecr, backfill_id, resultStatusFilter="COMPLETE")["results"]
    assert [r["imageId"]["imageTag"] for r in complete] == ["v0", "v1", "v2"]

    token = _describe(ecr, backfill_id, maxResults=2)["nextToken"]
    for bad in ({"nextToken": "garbage"}, {"nextToken": token, "resultStatusFilter": "FAILED"},
                {"maxResults": 1001}):
        with pytest.raises(ClientError) as excinfo:
            ecr.describe_replication_backfill_results(replicationBackfillId=backfill_id, **bad)
        assert _error(excinfo) == "InvalidParameterException"


def test_backfill_follows_destination_settings_and_immutable_tags():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    image = push_image(ecr, REPO, "v1")
    index = push_index(ecr, REPO, "multi")
    east = client("ecr", "us-east-1")
    east.create_repository(repositoryName=REPO, imageTagMutability="IMMUTABLE")
    held = push_image(east, REPO, "v1")  # v1 is another digest there
    put_config(ecr, ([EAST], None))
    configure(default_delay_seconds=30)
    backfill_id = ecr.start_replication_backfill(destination=_dest(*EAST))["replicationBackfillId"]
    running = _wait_status(ecr, backfill_id, "IN_PROGRESS")
    assert running["progress"]["completedReplicationCount"] == 0  # delayed like a push's replication
    flush(A)
    done = _describe(ecr, backfill_id)
    assert done["status"] == "COMPLETE"
    assert image_ids(east, REPO)[image["digest"]] == []  # arrived untagged
    assert image_ids(east, REPO)[held["digest"]] == ["v1"]
    assert image_ids(east, REPO)[index["digest"]] == ["multi"]
    (index_result,) = [r for r in done["results"] if r["imageId"].get("imageTag") == "multi"]
    assert index_result["subImageFailureCodes"] == []


def test_backfill_calls_without_replication_configuration_list_nothing():
    ecr = client("ecr", SRC_REGION)
    resp = ecr.list_replication_backfills()
    assert resp["registryId"] == A and resp["backfills"] == [] and "nextToken" not in resp
    assert http("GET", "/_localaws/replication")["backfill_concurrency"] == 5


def test_fail_tags_fail_only_the_replications_carrying_those_tags():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    web = push_image(ecr, REPO, "v1")
    ecr.put_image(repositoryName=REPO, imageManifest=web["manifest"], imageTag="v2")
    put_config(ecr, ([EAST], [REPO]))
    configure(destinations={f"us-east-1/{A}": {"fail_tags": ["v2"], "failure_code": "PULL_THROUGH_CACHE_RULE_NOT_FOUND"}})
    backfill_id = ecr.start_replication_backfill(destination=_dest(*EAST))["replicationBackfillId"]
    flush()
    done = _wait_status(ecr, backfill_id, "COMPLETE", "FAILED")
    by_tag = {r["imageId"].get("imageTag"): (r["status"], r.get("failureCode")) for r in done["results"]}
    assert by_tag == {"v1": ("COMPLETE", None), "v2": ("FAILED", "PULL_THROUGH_CACHE_RULE_NOT_FOUND")}
    assert image_ids(client("ecr", "us-east-1"), REPO) == {web["digest"]: ["v1"]}
    with pytest.raises(Exception):
        configure(destinations={f"us-east-1/{A}": {"fail_tags": "v2"}})
