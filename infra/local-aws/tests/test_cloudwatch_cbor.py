"""CloudWatch over Smithy RPCv2 CBOR (what aws-sdk-rust and the other current
SDKs send): requests are serialized by botocore's own ``smithy-rpc-v2-cbor``
serializer for the CloudWatch model, signed with SigV4, sent to
``/service/GraniteServiceVersion20100801/operation/<Op>``, and the answers are
decoded by botocore's RPCv2 CBOR parser (and, to check the exact encoding, by
the bridge's codec)."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import sys
import urllib.error
import urllib.request
from typing import Any

import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from localaws import A, B, ENDPOINT, SRC_REGION, client

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from replwatch_localaws.cloudwatch_cbor import CborError, Epoch, dumps, loads  # noqa: E402

MODEL = botocore.session.get_session().get_service_model("cloudwatch")
SERIALIZER = create_serializer("smithy-rpc-v2-cbor", include_validation=True)
PARSER = create_parser("smithy-rpc-v2-cbor")
PATH = "/service/GraniteServiceVersion20100801/operation/"


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, operation: str) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.operation = MODEL.operation_model(operation)

    @property
    def parsed(self) -> dict[str, Any]:
        """As botocore's RPCv2 CBOR client reads it."""
        return PARSER.parse({"status_code": self.status, "headers": self.headers, "body": self.body},
                            self.operation.output_shape)

    @property
    def raw(self) -> Any:
        """The CBOR data item itself."""
        return loads(self.body)


def send(path: str, body: bytes, headers: dict[str, str], region: str = SRC_REGION,
         account: str = A, sign: bool = True) -> tuple[int, dict[str, str], bytes]:
    request = AWSRequest(method="POST", url=ENDPOINT + path, data=body, headers=headers)
    if sign:
        SigV4Auth(Credentials(account, "secret"), "monitoring", region).add_auth(request)
    prepared = urllib.request.Request(request.url, data=body, method="POST",
                                      headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(prepared, timeout=60) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def rpc(operation: str, params: dict[str, Any], region: str = SRC_REGION, account: str = A,
        compress: bool = False) -> Answer:
    request = SERIALIZER.serialize_to_request(params, MODEL.operation_model(operation))
    assert request["url_path"] == PATH + operation
    body, headers = request["body"], dict(request["headers"])
    if compress:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    answer = Answer(*send(request["url_path"], body, headers, region, account), operation)
    assert answer.headers.get("smithy-protocol") == "rpc-v2-cbor", answer.headers
    return answer


def dims(**kv: str) -> list[dict[str, str]]:
    return [{"Name": k, "Value": v} for k, v in kv.items()]


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def metric_query(qid: str, name: str, dimensions: list[dict[str, str]], namespace: str = "replwatch/test"
                 ) -> dict[str, Any]:
    return {"Id": qid, "MetricStat": {
        "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dimensions},
        "Period": 60, "Stat": "Maximum"}}


def test_put_metric_data_with_dimensions_then_get_metric_data():
    at = now()
    east = dims(DestinationRegion="us-east-1", DestinationAccount=B)
    europe = dims(DestinationRegion="eu-west-1", DestinationAccount=B)
    put = rpc("PutMetricData", {"Namespace": "replwatch/test", "MetricData": [
        {"MetricName": "PendingImages", "Dimensions": east, "Value": 7.0, "Timestamp": at, "Unit": "Count"},
        {"MetricName": "PendingImages", "Dimensions": europe, "Value": 0.0, "Timestamp": at},
        {"MetricName": "OverdueImages", "Dimensions": east, "Value": 2.5, "Timestamp": at},
    ]})
    # no output shape: 200, empty body, no Content-Type
    assert (put.status, put.body) == (200, b"")
    assert "content-type" not in put.headers

    listed = rpc("ListMetrics", {"Namespace": "replwatch/test"})
    assert listed.status == 200 and listed.headers["content-type"] == "application/cbor"
    series = sorted((m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])))
                    for m in listed.parsed["Metrics"])
    assert series == [
        ("OverdueImages", (("DestinationAccount", B), ("DestinationRegion", "us-east-1"))),
        ("PendingImages", (("DestinationAccount", B), ("DestinationRegion", "eu-west-1"))),
        ("PendingImages", (("DestinationAccount", B), ("DestinationRegion", "us-east-1"))),
    ]

    got = rpc("GetMetricData", {
        "MetricDataQueries": [metric_query("east", "PendingImages", east),
                              metric_query("europe", "PendingImages", europe),
                              metric_query("overdue", "OverdueImages", east)],
        "StartTime": at - dt.timedelta(minutes=5), "EndTime": at + dt.timedelta(minutes=5)})
    assert got.status == 200
    results = {r["Id"]: r for r in got.parsed["MetricDataResults"]}
    assert results["east"]["Values"] == [7.0]
    assert results["europe"]["Values"] == [0.0]
    assert results["overdue"]["Values"] == [2.5]
    assert all(r["StatusCode"] == "Complete" for r in results.values())
    (stamp,) = results["east"]["Timestamps"]
    assert isinstance(stamp, dt.datetime) and abs((stamp - at).total_seconds()) <= 60

    # Exact wire form: doubles are CBOR floats (0.0 too), timestamps tag 1.
    raw = {r["Id"]: r for r in got.raw["MetricDataResults"]}
    assert raw["europe"]["Values"] == [0.0] and type(raw["europe"]["Values"][0]) is float
    assert isinstance(raw["east"]["Timestamps"][0], Epoch)

    # the same data, read through AWS JSON (boto3): one backend behind both protocols
    stats = client("cloudwatch", SRC_REGION).get_metric_statistics(
        Namespace="replwatch/test", MetricName="PendingImages", Dimensions=east, Statistics=["Maximum"],
        StartTime=at - dt.timedelta(minutes=5), EndTime=at + dt.timedelta(minutes=5), Period=60)
    assert [p["Maximum"] for p in stats["Datapoints"]] == [7.0]


def test_gzip_compressed_put_metric_data_of_1000_datums():
    at = now()
    data = [{"MetricName": "PendingImages", "Dimensions": dims(DestinationAccount=f"{k:012d}"),
             "Value": float(k), "Timestamp": at} for k in range(1000)]
    put = rpc("PutMetricData", {"Namespace": "replwatch/gzip", "MetricData": data}, compress=True)
    assert put.status == 200, put.body

    listed, token = [], None
    while True:
        page = rpc("ListMetrics", {"Namespace": "replwatch/gzip", **({"NextToken": token} if token else {})})
        assert page.status == 200
        listed += page.parsed["Metrics"]
        token = page.parsed.get("NextToken")
        if not token:
            break
    assert len(listed) == 1000

    stats = rpc("GetMetricStatistics", {
        "Namespace": "replwatch/gzip", "MetricName": "PendingImages",
        "Dimensions": dims(DestinationAccount=f"{999:012d}"), "Statistics": ["Maximum", "SampleCount"],
        "StartTime": at - dt.timedelta(minutes=5), "EndTime": at + dt.timedelta(minutes=5), "Period": 60})
    assert stats.status == 200
    (point,) = stats.parsed["Datapoints"]
    assert (point["Maximum"], point["SampleCount"]) == (999.0, 1.0)
    assert isinstance(point["Timestamp"], dt.datetime)


def test_metrics_are_per_account_and_region():
    at = now()
    datum = {"MetricName": "m", "Value": 1.0, "Timestamp": at}
    rpc("PutMetricData", {"Namespace": "replwatch/scoped", "MetricData": [datum]}, account=A)
    assert len(rpc("ListMetrics", {"Namespace": "replwatch/scoped"}, account=A).parsed["Metrics"]) == 1
    assert rpc("ListMetrics", {"Namespace": "replwatch/scoped"}, account=B).parsed["Metrics"] == []
    assert rpc("ListMetrics", {"Namespace": "replwatch/scoped"}, region="eu-west-1").parsed["Metrics"] == []


def test_missing_dashboard_is_the_modeled_error():
    answer = rpc("GetDashboard", {"DashboardName": "nope"})
    assert answer.status == 404
    assert answer.headers["content-type"] == "application/cbor"
    # Smithy RPCv2 CBOR: __type is the error's absolute shape id; awsQueryCompatible
    # adds the query code, which the SDKs match (aws-sdk-rust: "ResourceNotFound").
    body = answer.raw
    assert body["__type"] == "com.amazonaws.cloudwatch#DashboardNotFoundError"
    assert body["message"]
    assert answer.headers["x-amzn-query-error"] == "ResourceNotFound;Sender"
    assert answer.parsed["Error"]["Code"] == "ResourceNotFound"
    # and boto3 maps that code to the modeled exception class
    exceptions = client("cloudwatch", SRC_REGION).exceptions
    assert exceptions.from_code("ResourceNotFound").__name__ in ("DashboardNotFoundError", "ResourceNotFound")


def test_invalid_parameter_is_the_modeled_error():
    answer = rpc("PutDashboard", {"DashboardName": "bad", "DashboardBody": "not json"})
    assert answer.status == 400
    code = answer.headers["x-amzn-query-error"].split(";")[0]
    assert answer.raw["__type"] == "com.amazonaws.cloudwatch#DashboardInvalidInputError"
    assert code == "InvalidParameterInput" == answer.parsed["Error"]["Code"]


def test_dashboards():
    body = '{"widgets": []}'
    put = rpc("PutDashboard", {"DashboardName": "replwatch", "DashboardBody": body})
    assert put.status == 200 and put.parsed.get("DashboardValidationMessages", []) == []
    got = rpc("GetDashboard", {"DashboardName": "replwatch"}).parsed
    assert got["DashboardName"] == "replwatch" and got["DashboardBody"] == body
    assert got["DashboardArn"].endswith(":dashboard/replwatch")
    listed = rpc("ListDashboards", {})
    (entry,) = listed.parsed["DashboardEntries"]
    assert entry["DashboardName"] == "replwatch" and isinstance(entry["LastModified"], dt.datetime)
    (raw,) = listed.raw["DashboardEntries"]
    assert isinstance(raw["LastModified"], Epoch) and isinstance(raw["Size"], int)


def test_alarms():
    put = rpc("PutMetricAlarm", {
        "AlarmName": "overdue", "Namespace": "replwatch/test", "MetricName": "OverdueImages",
        "Dimensions": dims(DestinationRegion="us-east-1"), "Statistic": "Maximum", "Period": 60,
        "EvaluationPeriods": 1, "Threshold": 0.0, "ComparisonOperator": "GreaterThanThreshold",
        "ActionsEnabled": True})
    assert (put.status, put.body) == (200, b"")
    described = rpc("DescribeAlarms", {"AlarmNames": ["overdue"]})
    assert described.status == 200
    (alarm,) = described.parsed["MetricAlarms"]
    assert alarm["AlarmName"] == "overdue" and alarm["Threshold"] == 0.0
    assert alarm["EvaluationPeriods"] == 1 and alarm["ActionsEnabled"] is True
    assert alarm["Dimensions"] == dims(DestinationRegion="us-east-1")
    (raw,) = described.raw["MetricAlarms"]
    assert type(raw["Threshold"]) is float and type(raw["Period"]) is int
    assert isinstance(raw["StateUpdatedTimestamp"], Epoch)


def _headers() -> dict[str, str]:
    return {"smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor", "Accept": "application/cbor"}


@pytest.mark.parametrize("path, body, headers, status, error_type", [
    (PATH + "NoSuchOperation", dumps({}), _headers(), 404, "smithy.framework#UnknownOperationException"),
    (PATH + "ListMetrics", b"\xa1", _headers(), 400, "smithy.framework#SerializationException"),
    (PATH + "ListMetrics", dumps({"Namespace": 5}), _headers(), 400, "smithy.framework#SerializationException"),
    (PATH + "ListMetrics", dumps({}), {**_headers(), "smithy-protocol": ""}, 400,
     "smithy.framework#SerializationException"),
    (PATH + "ListMetrics", dumps({}), {**_headers(), "X-Amz-Target": "GraniteServiceVersion20100801.ListMetrics"},
     400, "smithy.framework#SerializationException"),
    (PATH + "ListMetrics", dumps({}), {**_headers(), "Content-Encoding": "br"}, 415,
     "smithy.framework#UnsupportedMediaTypeException"),
])
def test_malformed_requests(path, body, headers, status, error_type):
    code, answer_headers, answer = send(path, body, headers)
    assert code == status
    assert answer_headers["smithy-protocol"] == "rpc-v2-cbor"
    assert loads(answer)["__type"] == error_type


def test_prefixed_path_and_absolute_service_id_route_too():
    for path in ("/v1" + PATH + "ListDashboards",
                 "/service/com.amazonaws.cloudwatch.GraniteServiceVersion20100801/operation/ListDashboards"):
        code, headers, answer = send(path, dumps({}), _headers())
        assert code == 200, answer
        assert loads(answer) == {"DashboardEntries": []}


# --- the codec ------------------------------------------------------------------

def test_codec_reads_every_form_the_protocol_allows():
    # {_ "a": [_ 1, -2], "b": (_ "he" "llo"), "c": (_ h'01' h'02'), "h": 1.5 (half), "f": 0.25 (single),
    #  "t": 1(1700000000.5), "n": null, "u": undefined, "y": true, "z": false, "big": 2**64-1 }
    data = bytes.fromhex(
        "bf"
        "6161" "9f" "01" "21" "ff"
        "6162" "7f" "626865" "636c6c6f" "ff"
        "6163" "5f" "4101" "4102" "ff"
        "6168" "f93e00"
        "6166" "fa3e800000"
        "6174" "c1" "fb41d954fc40200000"
        "616e" "f6"
        "6175" "f7"
        "6179" "f5"
        "617a" "f4"
        "63626967" "1bffffffffffffffff"
        "ff")
    value = loads(data)
    assert value == {"a": [1, -2], "b": "hello", "c": b"\x01\x02", "h": 1.5, "f": 0.25,
                     "t": 1700000000.5, "n": None, "u": None, "y": True, "z": False, "big": 2**64 - 1}
    assert isinstance(value["t"], Epoch)
    # half-precision specials
    assert loads(bytes.fromhex("f97c00")) == float("inf") and loads(bytes.fromhex("f9fc00")) == float("-inf")
    nan = loads(bytes.fromhex("f97e00"))
    assert nan != nan
    for bad in ("a1", "1c", "c2", "5f01ff", "62c328", "0102"):
        with pytest.raises(CborError):
            loads(bytes.fromhex(bad))


def test_codec_writes_what_botocore_reads():
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)
    value = {"s": "héllo", "i": -1000, "l": 2**40, "d": 1.0, "b": b"\x00\xff", "t": at, "e": Epoch(12.5),
             "xs": [True, False, None], "m": {"k": "v"}}
    data = dumps(value)
    parsed = PARSER.parse_data_item(PARSER.get_peekable_stream_from_bytes(data))
    assert parsed["s"] == "héllo" and parsed["i"] == -1000 and parsed["l"] == 2**40
    assert parsed["d"] == 1.0 and isinstance(parsed["d"], float) and parsed["b"] == b"\x00\xff"
    assert parsed["t"] == at and parsed["e"].timestamp() == 12.5
    assert parsed["xs"] == [True, False] or parsed["xs"] == [True, False, None]
    assert parsed["m"] == {"k": "v"}
    assert loads(data)["t"] == at.timestamp()
    # minimal integer heads
    assert dumps(23) == b"\x17" and dumps(24) == b"\x18\x18" and dumps(-1) == b"\x20"
    assert dumps(65536) == b"\x1a\x00\x01\x00\x00"
