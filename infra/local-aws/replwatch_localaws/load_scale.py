"""SQS and DynamoDB at load-run sizes: the same answers as moto's, without its
quadratic costs.

SQS: moto 5.2.5 rebuilds every queue attribute, the three approximate message counts
included (each a pass over every message with two clock reads per message),
whenever it reads any one attribute: twice for each message a ``ReceiveMessage``
returns (its retention check reads ``MessageRetentionPeriod`` through
``get_queue_attributes``) and once per ``SendMessage`` (``ContentBasedDeduplication``).
A queue of 50,000 replication events then costs seconds per receive, and a
load run of 10,000 pushes does not finish.

DynamoDB: moto's ``Table.query`` starts from every item of the table, sorted
(``Table.all_items``), and keeps those of the partition asked for: a table of
50,000 items costs a sort of all of them per ``Query``, however small the
partition.

EventBridge: moto builds a JSONPath parser (its grammar tables) for every input
path of every event a rule with an input transformer delivers.

These patches change no answer:

- a ``Query`` of the table starts from the items of its partition only, and one
  of an index from the items that may carry its partition key (string keys
  compared directly); moto then filters, sorts and pages them as before;
- ``Queue.attributes`` is a read-only mapping with the same keys in the same
  order and the same values, the three counts computed when read;
- the retention check reads the queue's retention period directly;
- parsed JSONPath expressions are kept (the 256 last used);
- a message's visibility and delay compare against ``time.time()``, the same
  clock moto's ``unix_time_millis`` reads through naive datetimes.
"""

from __future__ import annotations

import functools
import inspect
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

_COUNTS = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesDelayed",
    "ApproximateNumberOfMessagesNotVisible",
)


class QueueAttributes(Mapping[str, Any]):
    """A queue's attributes, as moto's ``Queue.attributes`` dict has them (same
    keys, same order); the message counts are read from the queue when asked for."""

    def __init__(self, order: list[str], values: dict[str, Any], counts: dict[str, Callable[[], int]]) -> None:
        self._order = order
        self._values = values
        self._counts = counts

    def __getitem__(self, name: str) -> Any:
        if name in self._counts:
            return self._counts[name]()
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._values or name in self._counts


def _attributes(queue: Any) -> QueueAttributes:
    from moto.core.utils import camelcase_to_underscores

    order = list(queue.BASE_ATTRIBUTES)
    if queue.fifo_queue:
        order += queue.FIFO_ATTRIBUTES
    if queue.kms_master_key_id:
        order += queue.KMS_ATTRIBUTES
    values: dict[str, Any] = {}
    counts: dict[str, Callable[[], int]] = {}
    for name in order:
        attribute = camelcase_to_underscores(name)
        if name in _COUNTS:
            counts[name] = lambda attribute=attribute: getattr(queue, attribute)
        else:
            values[name] = getattr(queue, attribute)
    if queue.policy:
        values["Policy"] = queue.policy
    if queue.redrive_policy:
        values["RedrivePolicy"] = json.dumps(queue.redrive_policy)
    order += [name for name in values if name not in order]
    for name, value in values.items():
        if isinstance(value, bool):
            values[name] = str(value).lower()
    return QueueAttributes(order, values, counts)


def _now_millis() -> float:
    return time.time() * 1000.0


_query = threading.local()


def _partition_items(table: Any, original: Callable[[Any], list[Any]]) -> list[Any]:
    """``Table.all_items`` inside a ``Query`` of ``table``: the candidates, in any order
    (moto sorts what it keeps); anywhere else, every item as moto has them."""
    asked = getattr(_query, "asked", None)
    if asked is None or asked[0] is not table:
        return original(table)
    _, hash_key, conditions = asked
    if conditions:
        return [item for partition in table.items.values()
                for item in (partition.values() if table.range_key_attr else [partition])
                if all(_may_match(item, name, value) for name, value in conditions)]
    partition = table.items.get(hash_key) if hash_key is not None else None
    if partition is None:
        return [] if hash_key is not None else original(table)
    return list(partition.values()) if table.range_key_attr else [partition]


def _may_match(item: Any, name: str, expected: Any) -> bool:
    value = item.attrs.get(name)
    if value is None:
        return False
    if value.type == "S" and expected.type == "S":
        return bool(value.value == expected.value)
    return True  # moto's own comparison decides


def _install_query() -> None:
    from moto.dynamodb.models.table import Table

    original_query, original_all_items = Table.query, Table.all_items
    signature = inspect.signature(original_query)

    @functools.wraps(original_query)  # the meter binds moto's signature through it
    def query(*args: Any, **kwargs: Any) -> Any:
        call = signature.bind(*args, **kwargs)
        table = call.arguments["self"]
        index = call.arguments.get("index_name")
        conditions = call.arguments.get("hash_key_conditions") or []
        if index and not conditions:
            return original_query(*args, **kwargs)
        _query.asked = (table, None if index else call.arguments.get("hash_key"), conditions if index else [])
        try:
            return original_query(*args, **kwargs)
        finally:
            _query.asked = None

    Table.query = query  # type: ignore[method-assign]
    Table.all_items = lambda self: _partition_items(self, original_all_items)  # type: ignore[method-assign]


def install() -> None:
    import jsonpath_ng.ext
    from moto.sqs.models import Message, Queue, SQSBackend

    _install_query()
    # moto.events.utils imports `parse` from the module at each call.
    jsonpath_ng.ext.parse = functools.lru_cache(maxsize=256)(jsonpath_ng.ext.parse)

    Queue.attributes = property(_attributes)  # type: ignore[method-assign,assignment]

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        retention = self.get_queue(queue_name).message_retention_period
        return bool(int(retention) + message.sent_timestamp / 1000 > time.time())

    SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period)
    Message.visible = property(lambda self: _now_millis() > self.visible_at)  # type: ignore[method-assign,assignment]
    Message.delayed = property(lambda self: _now_millis() < self.delayed_until)  # type: ignore[method-assign,assignment]
