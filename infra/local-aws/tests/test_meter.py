"""The request meter (/_localaws/meter): requests by service and operation,
DynamoDB capacity units, SQS requests and EventBridge events as AWS bills them."""

from __future__ import annotations

import json
import os
import sys
import urllib.request

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from localaws import A, B, C, ENDPOINT, SRC_REGION, assumed_client, client, http, push_image, tap

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from replwatch_localaws.cloudwatch_cbor import dumps  # noqa: E402

TABLE = "tracking"
INDEX = "due"
KEY = {"pk": {"S": "IMG#x"}, "sk": {"S": "DST#y"}}
# Sizes as the Developer Guide (and functions/aws/src/dynamodb_table.rs) count them:
# "pk" + "IMG#x" = 7, "sk" + "DST#y" = 7, "n" + (3 + 1) = 5, "flag" + 1 = 5, "l" + 3 + (1 + 2) = 7.
SMALL = {**KEY, "n": {"N": "12345"}, "flag": {"BOOL": True}, "l": {"L": [{"S": "ab"}]}}  # 31 bytes
DUE = {"shard": {"S": "07"}, "due_at": {"S": "2026-12-03T00:00:00Z"}}  # the index keys: 7 + 26 bytes


def meter() -> dict:
    return http("GET", "/_localaws/meter")


def zero() -> None:
    http("DELETE", "/_localaws/meter")


def dynamodb():
    return client("dynamodb", SRC_REGION)


def create_table(projection: str = "ALL") -> None:
    dynamodb().create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "shard", "due_at")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{
            "IndexName": INDEX, "Projection": {"ProjectionType": projection},
            "KeySchema": [{"AttributeName": "shard", "KeyType": "HASH"}, {"AttributeName": "due_at", "KeyType": "RANGE"}],
        }])
    zero()


def capacity(operation: str) -> dict:
    return meter()["dynamodb"]["by_operation"].get(operation, {"read_units": 0.0, "write_units": 0,
                                                                "index_write_units": 0})


def test_starts_empty_and_resets():
    assert meter() == {
        "requests": {},
        "dynamodb": {"read_units": 0.0, "write_units": 0, "index_write_units": 0, "by_operation": {}},
        "sqs": {"billed_requests": 0, "eventbridge_deliveries": 0},
        "events": {"put_entries": 0, "forwarded": 0, "forwarded_bytes": 0, "billed_events": 0, "service_events": 0},
        "sns": {"billed_requests": 0},
        "logs_bytes": 0,
        "transfer": {},
    }
    client("sqs", SRC_REGION).create_queue(QueueName="q")
    assert meter()["requests"] == {"sqs": {"CreateQueue": 1}}
    assert meter()["sqs"]["billed_requests"] == 1
    after_reset = http("DELETE", "/_localaws/meter")
    assert after_reset["requests"] == {} and after_reset["sqs"]["billed_requests"] == 0
    assert meter() == after_reset


def test_requests_by_service_and_operation_of_every_protocol():
    client("sts", SRC_REGION).get_caller_identity()  # query protocol: Action in the form body
    client("dynamodb", SRC_REGION).list_tables()  # AWS JSON: X-Amz-Target
    client("ecr", SRC_REGION).describe_repositories()
    client("cloudwatch", SRC_REGION).list_metrics()  # boto3: AWS JSON 1.0
    # aws-sdk-rust: RPCv2 CBOR, the operation in the path
    body = dumps({})
    request = AWSRequest(method="POST", url=ENDPOINT + "/service/GraniteServiceVersion20100801/operation/ListMetrics",
                         data=body, headers={"Smithy-Protocol": "rpc-v2-cbor", "Content-Type": "application/cbor"})
    SigV4Auth(Credentials(A, "secret"), "monitoring", SRC_REGION).add_auth(request)
    with urllib.request.urlopen(urllib.request.Request(request.url, data=body, method="POST",
                                                       headers=dict(request.headers.items()))) as resp:
        assert resp.status == 200
    http("GET", "/_localaws/replication")  # ours: not AWS
    assert meter()["requests"] == {
        "sts": {"GetCallerIdentity": 1},
        "dynamodb": {"ListTables": 1},
        "ecr": {"DescribeRepositories": 1},
        "monitoring": {"ListMetrics": 2},
    }


def test_put_item_write_units_and_index_entry():
    create_table()
    # 31 + 33 + ("blob" + 1500) = 1568 bytes: 2 write units, and as much for its index entry (ALL).
    dynamodb().put_item(TableName=TABLE, Item={**SMALL, **DUE, "blob": {"S": "x" * 1500}})
    assert capacity("PutItem") == {"read_units": 0.0, "write_units": 2, "index_write_units": 2}
    # Without the index keys the item is not in the (sparse) index: no index write.
    dynamodb().put_item(TableName=TABLE, Item={**SMALL, "sk": {"S": "DST#z"}})
    assert capacity("PutItem") == {"read_units": 0.0, "write_units": 3, "index_write_units": 2}
    assert meter()["dynamodb"]["write_units"] == 3 and meter()["dynamodb"]["index_write_units"] == 2


def test_keys_only_index_entry_is_small():
    create_table("KEYS_ONLY")
    dynamodb().put_item(TableName=TABLE, Item={**SMALL, **DUE, "blob": {"S": "x" * 1500}})
    assert capacity("PutItem") == {"read_units": 0.0, "write_units": 2, "index_write_units": 1}


def test_update_item_index_moves_leaves_and_changes():
    create_table()
    dynamodb().put_item(TableName=TABLE, Item={**SMALL, **DUE})
    zero()
    update = dynamodb().update_item
    # A projected attribute changes: one index write.
    update(TableName=TABLE, Key=KEY, UpdateExpression="SET n = :n", ExpressionAttributeValues={":n": {"N": "7"}})
    assert capacity("UpdateItem") == {"read_units": 0.0, "write_units": 1, "index_write_units": 1}
    # An index key changes: a delete and a put.
    update(TableName=TABLE, Key=KEY, UpdateExpression="SET due_at = :d",
           ExpressionAttributeValues={":d": {"S": "2026-12-04T00:00:00Z"}})
    assert capacity("UpdateItem")["index_write_units"] == 3
    # The index keys are removed: the entry leaves the index, one delete.
    update(TableName=TABLE, Key=KEY, UpdateExpression="REMOVE #s, due_at", ExpressionAttributeNames={"#s": "shard"})
    assert capacity("UpdateItem") == {"read_units": 0.0, "write_units": 3, "index_write_units": 4}
    # Neither before nor after in the index: nothing.
    update(TableName=TABLE, Key=KEY, UpdateExpression="SET n = :n", ExpressionAttributeValues={":n": {"N": "8"}})
    assert capacity("UpdateItem") == {"read_units": 0.0, "write_units": 4, "index_write_units": 4}


def test_update_item_size_is_the_larger_of_before_and_after():
    create_table()
    dynamodb().put_item(TableName=TABLE, Item={**SMALL, "blob": {"S": "x" * 3000}})
    zero()
    dynamodb().update_item(TableName=TABLE, Key=KEY, UpdateExpression="REMOVE #b", ExpressionAttributeNames={"#b": "blob"})
    assert capacity("UpdateItem")["write_units"] == 3  # the item before: 3035 bytes
    dynamodb().delete_item(TableName=TABLE, Key=KEY)
    assert capacity("DeleteItem")["write_units"] == 1


def test_failed_conditional_put_still_consumes_write_units():
    create_table()
    dynamodb().put_item(TableName=TABLE, Item={**SMALL, **DUE, "blob": {"S": "x" * 1500}})
    zero()
    with pytest.raises(ClientError) as err:
        dynamodb().put_item(TableName=TABLE, Item=SMALL, ConditionExpression="attribute_not_exists(pk)")
    assert err.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    # The size of the item as it is; nothing changed in the index.
    assert capacity("PutItem") == {"read_units": 0.0, "write_units": 2, "index_write_units": 0}
    with pytest.raises(ClientError):
        dynamodb().put_item(TableName=TABLE, Item={**SMALL, "sk": {"S": "DST#new"}},
                            ConditionExpression="attribute_exists(pk)")
    assert capacity("PutItem")["write_units"] == 3  # no item: the minimum, 1
    # Errors that are not a condition cost nothing.
    with pytest.raises(ClientError):
        dynamodb().put_item(TableName="missing", Item=SMALL)
    assert meter()["dynamodb"]["write_units"] == 3


def test_transactions_cost_twice():
    create_table()
    dynamodb().transact_write_items(TransactItems=[
        {"Put": {"TableName": TABLE, "Item": SMALL}},
        {"Put": {"TableName": TABLE, "Item": {**SMALL, "sk": {"S": "DST#z"}}}},
    ])
    assert capacity("TransactWriteItems") == {"read_units": 0.0, "write_units": 4, "index_write_units": 0}
    dynamodb().transact_get_items(TransactItems=[{"Get": {"TableName": TABLE, "Key": KEY}}])
    assert capacity("TransactGetItems")["read_units"] == 2.0


def test_get_item_read_units():
    create_table()
    dynamodb().put_item(TableName=TABLE, Item={**SMALL, "blob": {"S": "x" * 5000}})  # 5035 bytes: 2 x 4 KB
    zero()
    dynamodb().get_item(TableName=TABLE, Key=KEY, ConsistentRead=True)
    assert capacity("GetItem")["read_units"] == 2.0
    dynamodb().get_item(TableName=TABLE, Key=KEY)
    assert capacity("GetItem")["read_units"] == 3.0
    # A projection does not make it cheaper; a missing item costs the minimum.
    dynamodb().get_item(TableName=TABLE, Key=KEY, ProjectionExpression="pk", ConsistentRead=True)
    dynamodb().get_item(TableName=TABLE, Key={**KEY, "sk": {"S": "none"}})
    assert capacity("GetItem")["read_units"] == 5.5
    dynamodb().batch_get_item(RequestItems={TABLE: {"Keys": [KEY], "ConsistentRead": True}})
    assert capacity("BatchGetItem")["read_units"] == 2.0


def test_query_reads_the_items_before_the_filter():
    create_table()
    for i in range(3):
        dynamodb().put_item(TableName=TABLE, Item={**SMALL, "sk": {"S": f"DST#{i}"}, "blob": {"S": "x" * 2000}})
    zero()
    found = dynamodb().query(TableName=TABLE, KeyConditionExpression="pk = :p", FilterExpression="sk = :none",
                             ExpressionAttributeValues={":p": {"S": "IMG#x"}, ":none": {"S": "none"}},
                             ConsistentRead=True)
    assert found["Count"] == 0 and found["ScannedCount"] == 3
    assert capacity("Query")["read_units"] == 2.0  # 3 x 2035 bytes: 2 x 4 KB
    found = dynamodb().scan(TableName=TABLE, ProjectionExpression="pk")
    assert found["Items"] == [{"pk": {"S": "IMG#x"}}] * 3  # moto's answer is unchanged
    assert capacity("Scan")["read_units"] == 1.0  # eventually consistent: half


def test_sqs_billed_per_64_kb_chunk():
    sqs = client("sqs", SRC_REGION)
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    zero()
    sqs.send_message(QueueUrl=url, MessageBody="a" * 70 * 1024)
    assert meter()["sqs"]["billed_requests"] == 2
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "b" * 1000} for i in range(10)])
    assert meter()["sqs"]["billed_requests"] == 3
    (message, *_) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert meter()["sqs"]["billed_requests"] == 5
    assert meter()["requests"]["sqs"] == {"SendMessage": 1, "SendMessageBatch": 1, "ReceiveMessage": 1,
                                          "DeleteMessage": 1}


def test_eventbridge_entries_deliveries_and_forwarding():
    t = tap(A, SRC_REGION, {"source": ["my.app"]})
    zero()
    client("events", SRC_REGION).put_events(Entries=[
        {"Source": "my.app", "DetailType": "Thing", "Detail": json.dumps({"k": "x" * 70_000})},
        {"Source": "other.app", "DetailType": "Thing", "Detail": "{}"},
    ])
    got = meter()
    assert got["events"] == {"put_entries": 2, "forwarded": 0, "forwarded_bytes": 0, "billed_events": 3,
                             "service_events": 0}
    # The matching event went to the queue: a SendMessage of 2 chunks, made by EventBridge.
    assert got["sqs"] == {"billed_requests": 2, "eventbridge_deliveries": 1}
    assert len(t.drain(expect=1)) == 1


def test_bus_to_bus_forwarding_and_service_events():
    central = client("events", "us-east-1", C)
    bus_arn = central.create_event_bus(Name="replwatch")["EventBusArn"]
    central.put_permission(EventBusName="replwatch", Action="events:PutEvents", Principal=B, StatementId="b")
    dest_events = assumed_client("events", SRC_REGION, B)
    dest_events.put_rule(Name="forward", EventPattern=json.dumps({"source": ["aws.ecr"]}))
    dest_events.put_targets(Rule="forward", Targets=[{"Id": "central", "Arn": bus_arn}])
    ecr = assumed_client("ecr", SRC_REGION, B)
    ecr.create_repository(repositoryName="web")
    zero()
    push_image(ecr, "web", "v1")  # an ECR PUSH event on B's default bus, forwarded to C's bus
    events = meter()["events"]
    # The whole event travels to the other bus: envelope and detail, a few hundred bytes.
    assert 300 < events.pop("forwarded_bytes") < 2000
    assert events == {"put_entries": 0, "forwarded": 1, "billed_events": 1, "service_events": 1}


def test_transfer_counts_request_and_answer_bytes_by_service_and_region():
    far = client("ecr", "eu-west-1")
    far.create_repository(repositoryName="web")
    answers = []
    far.meta.events.register("after-call.ecr.*", lambda http_response, **_: answers.append(len(http_response.content)))
    zero()
    far.describe_repositories(repositoryNames=["web"])
    far.describe_repositories(repositoryNames=["web"])
    client("sqs", SRC_REGION).list_queues()
    transfer = meter()["transfer"]
    assert set(transfer) == {"ecr", "sqs"} and set(transfer["sqs"]) == {SRC_REGION}
    ecr = transfer["ecr"]["eu-west-1"]
    assert ecr["requests"] == 2
    # Each request: its line, its headers (the SigV4 Authorization alone is ~200 bytes) and body.
    assert 2 * 400 < ecr["request_bytes"] < 2 * 1500
    # Each answer: its status line and headers, then the body the client read.
    assert sum(answers) + 2 * 50 < ecr["response_bytes"] < sum(answers) + 2 * 1000
