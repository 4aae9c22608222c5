"""load_scale: moto's SQS and DynamoDB answers unchanged, without passes over
every message and item."""

from __future__ import annotations

import json
import os
import sys

from localaws import A, SRC_REGION, client

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from replwatch_localaws.load_scale import _attributes  # noqa: E402


def _queues():
    """Queues of every shape moto's attributes differ by, in this process (unpatched)."""
    from moto.sqs.models import Queue

    dlq_arn = f"arn:aws:sqs:{SRC_REGION}:{A}:dead"
    policy = json.dumps({"Version": "2012-10-17", "Statement": []})
    shapes = [
        {},
        {"FifoQueue": "true", "ContentBasedDeduplication": "true"},
        {"KmsMasterKeyId": "alias/aws/sqs", "Policy": policy,
         "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})},
    ]
    from moto.sqs.models import sqs_backends

    sqs_backends[A][SRC_REGION].create_queue("dead")
    for n, attributes in enumerate(shapes):
        name = f"q{n}.fifo" if attributes.get("FifoQueue") else f"q{n}"
        yield Queue(name, region=SRC_REGION, account_id=A, **attributes)


def test_the_attributes_are_moto_s_own_keys_order_and_values():
    from moto.sqs.models import Queue

    moto_attributes = Queue.attributes.fget
    for queue in _queues():
        ours = _attributes(queue)
        theirs = moto_attributes(queue)
        assert list(ours) == list(theirs), queue.name
        assert dict(ours.items()) == theirs, queue.name
        assert ours.get("ContentBasedDeduplication") == theirs.get("ContentBasedDeduplication")
        assert ("MessageRetentionPeriod" in ours) and ("Nope" not in ours)


def test_counts_and_retention_through_the_server_are_as_sqs_says():
    sqs = client("sqs", SRC_REGION)
    url = sqs.create_queue(QueueName="counted")["QueueUrl"]
    for n in range(25):
        sqs.send_message(QueueUrl=url, MessageBody=str(n))
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=600)
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600)["Messages"]
    assert len(received) == 10
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (counts["ApproximateNumberOfMessages"], counts["ApproximateNumberOfMessagesNotVisible"],
            counts["ApproximateNumberOfMessagesDelayed"]) == ("15", "10", "1")
    one = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    assert one == {"ApproximateNumberOfMessages": "15"}

    # A message younger than its queue's retention period is handed out.
    short = sqs.create_queue(QueueName="short", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=short, MessageBody="fresh")
    assert len(sqs.receive_message(QueueUrl=short, MaxNumberOfMessages=10)["Messages"]) == 1


def test_queries_of_a_table_and_an_index_answer_as_dynamodb_does():
    dynamodb = client("dynamodb", SRC_REGION)
    dynamodb.create_table(
        TableName="scaled",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "shard", "due")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[{
            "IndexName": "due",
            "KeySchema": [{"AttributeName": "shard", "KeyType": "HASH"}, {"AttributeName": "due", "KeyType": "RANGE"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }],
        BillingMode="PAY_PER_REQUEST",
    )
    for p in range(6):
        for s in range(8):
            item = {"pk": {"S": f"P{p}"}, "sk": {"S": f"S{s:02}"}}
            if s % 2 == 0:  # a sparse index: half the items
                item |= {"shard": {"S": f"D{(p + s) % 3}"}, "due": {"S": f"T{s:02}P{p}"}}
            dynamodb.put_item(TableName="scaled", Item=item)

    def query(**kwargs):
        items, start = [], None
        while True:
            page = dynamodb.query(TableName="scaled", Limit=3, **kwargs, **({"ExclusiveStartKey": start} if start else {}))
            items += page["Items"]
            start = page.get("LastEvaluatedKey")
            if not start:
                return items

    between = query(KeyConditionExpression="pk = :p AND sk BETWEEN :a AND :b",
                    ExpressionAttributeValues={":p": {"S": "P2"}, ":a": {"S": "S03"}, ":b": {"S": "S06"}},
                    ScanIndexForward=False)
    assert [i["sk"]["S"] for i in between] == ["S06", "S05", "S04", "S03"]
    assert {i["pk"]["S"] for i in between} == {"P2"}
    assert query(KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "P9"}}) == []

    due = query(IndexName="due", KeyConditionExpression="shard = :s AND due < :t",
                ExpressionAttributeValues={":s": {"S": "D1"}, ":t": {"S": "T05"}})
    expected = sorted(f"T{s:02}P{p}" for p in range(6) for s in range(0, 8, 2) if (p + s) % 3 == 1 and s < 5)
    assert [i["due"]["S"] for i in due] == expected
    assert all(set(i) == {"pk", "sk", "shard", "due"} for i in due)
