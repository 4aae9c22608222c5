"""Fault injection (/_localaws/faults) and call counters (/_localaws/calls)."""

from __future__ import annotations

import time
import urllib.error

import pytest
from botocore.exceptions import ClientError

from localaws import A, B, SRC_REGION, client, download, http, push_image, sha256, upload_blob

REPO = "team-a/web"


def _code_and_status(excinfo):
    err = excinfo.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def _calls(**query):
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return http("GET", "/_localaws/calls" + (f"?{qs}" if qs else ""))


def _count(snapshot, operation, account=A, region=SRC_REGION):
    for c in snapshot["calls"]:
        if (c["account"], c["region"], c["operation"]) == (account, region, operation):
            return c["count"], c["throttled"]
    return 0, 0


def test_throttle_next_calls_of_one_operation():
    ecr = client("ecr", SRC_REGION, retries=False)
    ecr.create_repository(repositoryName=REPO)
    got = http("POST", "/_localaws/faults", {"ecr": {"DescribeRepositories": {"throttle_next": 2}}})
    assert got["ecr"]["DescribeRepositories"] == [{
        "throttle_next": 2, "rate_per_second": None, "burst": None, "code": "ThrottlingException",
        "status": 400, "message": "Rate exceeded", "throttled": 0}]
    for _ in range(2):
        with pytest.raises(ClientError) as excinfo:
            ecr.describe_repositories()
        assert _code_and_status(excinfo) == ("ThrottlingException", 400)
        assert excinfo.value.response["Error"]["Message"] == "Rate exceeded"
    ecr.list_images(repositoryName=REPO)  # other operations are not affected
    assert ecr.describe_repositories()["repositories"][0]["repositoryName"] == REPO
    rule = http("GET", "/_localaws/faults")["ecr"]["DescribeRepositories"][0]
    assert (rule["throttle_next"], rule["throttled"]) == (0, 2)
    assert _count(_calls(), "DescribeRepositories") == (3, 2)

    # a retrying client (the SDKs' default) gets through: ThrottlingException is retried
    http("POST", "/_localaws/faults", {"ecr": {"DescribeRepositories": {"throttle_next": 1}}})
    client("ecr", SRC_REGION).describe_repositories()


def test_throttling_limited_to_one_account_any_operation_and_custom_error():
    http("POST", "/_localaws/faults", {"ecr": {"*": {"throttle_next": 1, "account": B, "code": "ThrottleException",
                                                     "status": 429, "message": "Too Many Requests"}}})
    client("ecr", SRC_REGION, A, retries=False).describe_repositories()  # A: not throttled
    b = client("ecr", SRC_REGION, B, retries=False)
    with pytest.raises(ClientError) as excinfo:
        b.describe_registry()
    assert _code_and_status(excinfo) == ("ThrottleException", 429)
    b.describe_registry()
    assert http("GET", "/_localaws/faults")["ecr"]["*"][0]["account"] == B
    assert http("DELETE", f"/_localaws/faults?account={B}") == {"ecr": {}, "dynamodb": {}}


def test_rate_limit_throttles_calls_above_the_rate():
    ecr = client("ecr", SRC_REGION, retries=False)
    http("POST", "/_localaws/faults", {"ecr": {"DescribeRegistry": {"rate_per_second": 2, "burst": 5}}})
    ok = throttled = 0
    for _ in range(15):
        try:
            ecr.describe_registry()
            ok += 1
        except ClientError as err:
            assert err.response["Error"]["Code"] == "ThrottlingException"
            throttled += 1
    assert 5 <= ok <= 9 and ok + throttled == 15, (ok, throttled)  # the burst, plus 2/s refill
    # per account and Region: another account has its own bucket
    client("ecr", SRC_REGION, B, retries=False).describe_registry()
    time.sleep(0.55)  # a token comes back after 0.5 s
    ecr.describe_registry()
    assert _count(_calls(), "DescribeRegistry")[1] == throttled


def _table(dynamodb, name):
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])


def test_dynamodb_throttling_answers_as_dynamodb_does():
    dynamodb = client("dynamodb", SRC_REGION, retries=False)
    _table(dynamodb, "faults-throttled")
    http("POST", "/_localaws/faults", {"dynamodb": {"PutItem": {"throttle_next": 2, "account": A}}})
    for _ in range(2):
        with pytest.raises(ClientError) as excinfo:
            dynamodb.put_item(TableName="faults-throttled", Item={"pk": {"S": "a"}})
        assert _code_and_status(excinfo) == ("ProvisionedThroughputExceededException", 400)
        assert "provisioned throughput" in excinfo.value.response["Error"]["Message"]
    dynamodb.put_item(TableName="faults-throttled", Item={"pk": {"S": "a"}})
    assert "Item" in dynamodb.get_item(TableName="faults-throttled", Key={"pk": {"S": "a"}})
    # the SDKs retry it as throttling: a retrying client gets through
    http("POST", "/_localaws/faults", {"dynamodb": {"PutItem": {"throttle_next": 1}}})
    client("dynamodb", SRC_REGION).put_item(TableName="faults-throttled", Item={"pk": {"S": "b"}})
    assert http("GET", "/_localaws/faults")["dynamodb"]["PutItem"][0]["throttled"] == 1


def test_a_throttled_dynamodb_transaction_is_cancelled_with_its_reasons():
    dynamodb = client("dynamodb", SRC_REGION, retries=False)
    _table(dynamodb, "faults-transaction")
    http("POST", "/_localaws/faults", {"dynamodb": {"TransactWriteItems": {
        "throttle_next": 1, "cancellation_reasons": ["None", "ThrottlingError"]}}})
    items = [{"Put": {"TableName": "faults-transaction", "Item": {"pk": {"S": k}}}} for k in ("a", "b")]
    with pytest.raises(ClientError) as excinfo:
        dynamodb.transact_write_items(TransactItems=items)
    assert _code_and_status(excinfo) == ("TransactionCanceledException", 400)
    assert [r["Code"] for r in excinfo.value.response["CancellationReasons"]] == ["None", "ThrottlingError"]
    assert "Item" not in dynamodb.get_item(TableName="faults-transaction", Key={"pk": {"S": "a"}})
    dynamodb.transact_write_items(TransactItems=items)
    assert "Item" in dynamodb.get_item(TableName="faults-transaction", Key={"pk": {"S": "a"}})


def test_faults_endpoint_validates_and_resets():
    for bad in ({"s3": {}}, {"ecr": {"PutImage": {"throttle_next": -1}}}, {"ecr": {"PutImage": {"nope": 1}}},
                {"ecr": {"Put-Image": {}}}, {"ecr": {"PutImage": {"account": "12"}}},
                {"ecr": {"PutImage": {"status": 200}}}, {"ecr": {"PutImage": {"rate_per_second": 0}}},
                {"ecr": {"PutImage": {"cancellation_reasons": ["ThrottlingError"]}}},
                {"dynamodb": {"TransactWriteItems": {"cancellation_reasons": ["Nope"]}}},
                {"dynamodb": {"TransactWriteItems": {"cancellation_reasons": []}}}):
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            http("POST", "/_localaws/faults", bad)
        assert excinfo.value.code == 400
    http("POST", "/_localaws/faults", {"ecr": {"PutImage": [{"throttle_next": 1}, {"throttle_next": 2, "account": A}]}})
    assert len(http("GET", "/_localaws/faults")["ecr"]["PutImage"]) == 2
    http("POST", "/_localaws/faults", {"ecr": {"PutImage": None}})
    assert http("GET", "/_localaws/faults") == {"ecr": {}, "dynamodb": {}}
    http("POST", "/_localaws/faults", {"ecr": {"PutImage": {"throttle_next": 1}}})
    http("POST", "/moto-api/reset")
    assert http("GET", "/_localaws/faults") == {"ecr": {}, "dynamodb": {}}
    http("POST", "/_localaws/faults", {"ecr": {"PutImage": {"throttle_next": 1}}})
    assert http("DELETE", "/_localaws/faults") == {"ecr": {}, "dynamodb": {}}


def test_call_counters_and_layer_upload_ledger():
    ecr = client("ecr", SRC_REGION, retries=False)
    ecr.create_repository(repositoryName=REPO)
    image = push_image(ecr, REPO, "v1", layer_sizes=(6 * 1024 * 1024,))  # config + a 2-part layer
    layer = [d for d, data in image["blobs"].items() if len(data) > 1024 * 1024][0]
    with pytest.raises(ClientError):  # the same blob again: refused, but its bytes were sent
        upload_blob(ecr, REPO, image["blobs"][layer])
    client("ecr", "us-east-1", B).describe_repositories()

    got = _calls(account=A)
    assert _count(got, "InitiateLayerUpload") == (3, 0)
    assert _count(got, "UploadLayerPart") == (5, 0)
    assert _count(got, "CompleteLayerUpload") == (3, 0)
    assert _count(got, "PutImage") == (1, 0)
    assert all(c["account"] == A for c in got["calls"])
    uploads = {u["layerDigest"]: u for u in got["layer_uploads"]}
    assert uploads[layer] == {"account": A, "region": SRC_REGION, "repository": REPO, "layerDigest": layer,
                              "completed": 1, "already_exists": 1, "bytes": 6 * 1024 * 1024}
    config_digest = next(d for d in image["blobs"] if d != layer)
    assert uploads[config_digest]["completed"] == 1 and uploads[config_digest]["already_exists"] == 0
    (parts,) = got["layer_parts"]
    assert parts == {"account": A, "region": SRC_REGION, "repository": REPO, "parts": 5,
                     "bytes": 2 * 6 * 1024 * 1024 + len(image["blobs"][config_digest])}
    assert _count(_calls(region="us-east-1"), "DescribeRepositories", B, "us-east-1") == (1, 0)

    http("DELETE", f"/_localaws/calls?account={A}")
    left = _calls()
    assert [c["account"] for c in left["calls"]] == [B] and left["layer_uploads"] == []
    http("DELETE", "/_localaws/calls")
    assert _calls() == {"calls": [], "layer_uploads": [], "layer_parts": [], "blob_downloads": []}


def test_large_layer_upload_and_download_are_fast():
    """50 MiB in 10 MiB parts, then read back through GetDownloadUrlForLayer
    (measured: about 1.4 s with boto3 as the client, which takes half of it)."""
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    data = bytes(range(256)) * (50 * 4096)
    start = time.perf_counter()
    digest = upload_blob(ecr, REPO, data, part_size=10 * 1024 * 1024)
    uploaded = time.perf_counter()
    assert download(ecr, REPO, digest) == data
    downloaded = time.perf_counter()
    assert digest == sha256(data)
    assert uploaded - start < 10 and downloaded - uploaded < 5, (uploaded - start, downloaded - uploaded)


def test_network_model_delays_ecr_calls_and_downloads_but_not_other_services():
    ecr = client("ecr", SRC_REGION)
    ecr.create_repository(repositoryName=REPO)
    data = bytes(range(256)) * (4 * 4096)  # 4 MiB
    digest = upload_blob(ecr, REPO, data)
    for bad in ([], {"latency_ms": -1}, {"latency_ms": "40"}, {"jitter": 1}, {"stream_mib_per_s": True}):
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            http("POST", "/_localaws/network", bad)
        assert excinfo.value.code == 400
    assert http("POST", "/_localaws/network", {"latency_ms": 200}) == {
        "latency_ms": 200.0, "stream_mib_per_s": 0.0, "latency_ms_by_region": {}}

    start = time.perf_counter()
    ecr.describe_repositories()
    assert time.perf_counter() - start >= 0.2
    start = time.perf_counter()
    client("sts", SRC_REGION).get_caller_identity()
    assert time.perf_counter() - start < 0.2

    # 4 MiB at 8 MiB/s: half a second each way, on top of the round trip.
    http("POST", "/_localaws/network", {"stream_mib_per_s": 8})
    start = time.perf_counter()
    assert download(ecr, REPO, digest) == data  # GetDownloadUrlForLayer, then the download
    assert time.perf_counter() - start >= 2 * 0.2 + 0.5
    start = time.perf_counter()
    upload_blob(ecr, REPO, data + b"x", part_size=8 * 1024 * 1024)  # one part: 4 MiB body
    assert time.perf_counter() - start >= 3 * 0.2 + 0.5

    # Concurrent requests wait concurrently, like separate connections.
    from concurrent.futures import ThreadPoolExecutor

    http("POST", "/_localaws/network", {"latency_ms": 300, "stream_mib_per_s": None})
    clients = [client("ecr", SRC_REGION) for _ in range(4)]
    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda c: c.describe_repositories(), clients))
    assert time.perf_counter() - start < 4 * 0.3

    http("POST", "/moto-api/reset")
    assert http("GET", "/_localaws/network") == {"latency_ms": 0.0, "stream_mib_per_s": 0.0, "latency_ms_by_region": {}}


def test_network_latency_by_region_applies_to_the_ecr_calls_signed_for_that_region():
    far, near = client("ecr", "eu-west-1"), client("ecr", SRC_REGION)
    for bad in ({"latency_ms_by_region": []}, {"latency_ms_by_region": {"nowhere": 10}},
                {"latency_ms_by_region": {"eu-west-1": -1}}, {"latency_ms_by_region": {"eu-west-1": "9"}}):
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            http("POST", "/_localaws/network", bad)
        assert excinfo.value.code == 400

    def took(ecr):
        start = time.perf_counter()
        ecr.describe_repositories()
        return time.perf_counter() - start

    assert http("POST", "/_localaws/network", {"latency_ms_by_region": {"eu-west-1": 400}}) == {
        "latency_ms": 0.0, "stream_mib_per_s": 0.0, "latency_ms_by_region": {"eu-west-1": 400.0}}
    assert took(far) >= 0.4
    assert took(near) < 0.4
    # latency_ms is the round trip of the Regions the map does not list; the map stays.
    http("POST", "/_localaws/network", {"latency_ms": 100})
    assert 0.1 <= took(near) < 0.4
    assert took(far) >= 0.4
    http("POST", "/_localaws/network", {"latency_ms_by_region": None})
    assert took(far) < 0.4

    http("POST", "/_localaws/network", {"latency_ms_by_region": {"eu-west-1": 400}})
    http("POST", "/moto-api/reset")
    assert http("GET", "/_localaws/network")["latency_ms_by_region"] == {}
