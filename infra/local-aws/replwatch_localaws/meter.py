"""A request meter (``/_localaws/meter``): every AWS request a run makes, by
service and operation, and the units AWS bills for them.

Not AWS behaviour: what a benchmark needs to price a load run. Since the last
reset (``DELETE /_localaws/meter`` or ``POST /moto-api/reset``):

- ``requests``: every request that reaches moto (not ``/_localaws/*`` nor
  ``/moto-api/*``), by service, the SigV4 signing name of its credential scope
  (``dynamodb``, ``sqs``, ``events``, ``ecr``, ``sts``, ``monitoring`` for
  CloudWatch; ``unsigned`` without one), and operation: the ``X-Amz-Target``
  suffix (AWS JSON), the path's last segment (CloudWatch's RPCv2 CBOR), the
  ``Action`` parameter (query protocol: SNS, STS, SQS query), else the HTTP
  method.
- ``dynamodb`` (totals and ``by_operation``), by the Developer Guide ("DynamoDB
  item sizes and formats", "DynamoDB read and write operations", "Global
  secondary indexes" and "Local secondary indexes": provisioned throughput
  considerations, "Amazon DynamoDB Transactions": capacity management):
  an item's size is the sum over its attributes of the name's UTF-8 bytes and
  the value's size (S: UTF-8 bytes; N: one byte per two significant digits,
  plus one; B: raw bytes; BOOL, NULL: 1; SS, NS, BS: the elements; L, M: 3,
  plus per element 1 and its size, a map's names included), as ``item_size``
  in ``functions/aws/src/dynamodb_table.rs`` computes it.
  ``write_units``: a write costs one unit per started KB of the larger of the
  item before and after it (a delete: the item deleted), at least 1; so does a
  write whose condition fails, for the item as it is; in TransactWriteItems
  each action costs twice that (a ConditionCheck, and each action of a
  transaction cancelled, as a write whose condition failed: our assumption).
  ``index_write_units``: per secondary index, an item entering
  it (it now has every index key attribute) costs one write of its new entry's
  size, leaving it one of the old entry's, changing its index keys both, the
  same keys with a changed entry (the projected attributes; ``ALL`` projects
  everything) one of the larger entry, else nothing; a transaction's index
  writes are not doubled (our assumption). Other errors cost nothing.
  ``read_units``: GetItem and each BatchGetItem item one per started 4 KB of
  the whole item (a projection does not matter; no item: 1), half when
  eventually consistent; TransactGetItems twice a strongly consistent read;
  Query and Scan one per started 4 KB of all the items read (before the
  filter; from an index, its entries), at least 1, halved when eventually
  consistent. The items before and after a write are read from moto's backend
  around the request, which runs alone (a lock) among the metered DynamoDB
  item requests. PartiQL is not metered, nor are the items the legacy
  QueryFilter/ScanFilter parameters drop.
- ``sqs.billed_requests``, by the SQS pricing page ("each 64 KB chunk of a
  payload is billed as 1 request"): every SQS request 1, but SendMessage one
  per started 64 KB of its body and message attributes (names, types,
  values), SendMessageBatch one per started 64 KB of all its messages; plus
  each message an EventBridge rule delivers to a queue, which on AWS is a
  SendMessage, billed the same (``eventbridge_deliveries`` counts them).
  Messages moto's SNS delivers to subscribed queues are not counted.
- ``events``, by the EventBridge pricing page (custom events: "each 64 KB
  chunk of a payload is billed as 1 event") and User Guide ("Calculating
  PutEvents event entry size": Time 14 bytes, Source, DetailType, Detail and
  each Resources entry their UTF-8 bytes): ``put_entries`` (PutEvents
  entries), ``forwarded`` (deliveries from one bus to another by a rule's bus
  target, billed as custom events), ``billed_events`` (both, per 64 KB chunk)
  and ``service_events`` (what ``eventbridge.emit`` sends, AWS service events
  to a default bus: free).
- ``sns.billed_requests``, by the SNS pricing page ("each 64 KB chunk of
  published data is billed as 1 request"): every SNS request 1, Publish and
  PublishBatch per started 64 KB of their messages, as SQS's sends.
- ``logs_bytes``: what PutLogEvents ingests, as its API reference sizes a
  batch: each message's UTF-8 bytes plus 26.
- ``transfer``: the bytes of each metered request and of its answer as HTTP/1.1
  messages (request or status line, headers, body; no TLS, TCP or IP framing),
  by service and by the Region the request is signed for (its credential
  scope; ``unsigned`` without one): ``{"ecr": {"eu-west-1": {"requests": 2,
  "request_bytes": 1800, "response_bytes": 900}}}``. A client in one Region
  calling another Region's endpoint pays inter-Region data transfer on both
  (AWS bills it to the Region the bytes leave), so a benchmark prices the
  Regions other than its own. ``events.forwarded_bytes``: the forwarded
  events' JSON, what a bus-to-bus rule carries to another Region.
"""

from __future__ import annotations

import base64
import copy
import inspect
import io
import json
import math
import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from . import cloudwatch_cbor

_WRITE_UNIT = 1024
_READ_UNIT = 4 * 1024
_CHUNK = 64 * 1024
_LOG_EVENT_OVERHEAD = 26
_SCOPE = re.compile(r"Credential=[^/,\s]+/[0-9]{8}/([^/,\s]+)/([^/,\s]+)/aws4_request")

_DYNAMODB_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
_DYNAMODB_READS = {"GetItem", "BatchGetItem", "TransactGetItems"}
# Failed writes that still consume write units (the condition was evaluated).
_CHARGED_ERRORS = ("ConditionalCheckFailedException", "TransactionCanceledException")

_lock = threading.Lock()
# Held around each metered DynamoDB item request, so that the items read
# before and after it differ by what it did only.
_dynamodb_lock = threading.Lock()


def _zero() -> dict[str, Any]:
    return {
        "requests": {},
        "dynamodb": {"read_units": 0.0, "write_units": 0, "index_write_units": 0, "by_operation": {}},
        "sqs": {"billed_requests": 0, "eventbridge_deliveries": 0},
        "events": {"put_entries": 0, "forwarded": 0, "forwarded_bytes": 0, "billed_events": 0, "service_events": 0},
        "sns": {"billed_requests": 0},
        "logs_bytes": 0,
        "transfer": {},
    }


_state = _zero()


def snapshot() -> dict[str, Any]:
    with _lock:
        return copy.deepcopy(_state)


def reset() -> None:
    global _state
    with _lock:
        _state = _zero()


def _add(section: str | None, **amounts: float) -> None:
    with _lock:
        counters = _state if section is None else _state[section]
        for key, amount in amounts.items():
            counters[key] += amount


def _add_dynamodb(operation: str, read_units: float = 0.0, write_units: int = 0, index_write_units: int = 0) -> None:
    with _lock:
        totals = _state["dynamodb"]
        per_operation = totals["by_operation"].setdefault(
            operation, {"read_units": 0.0, "write_units": 0, "index_write_units": 0})
        for counters in (totals, per_operation):
            counters["read_units"] += read_units
            counters["write_units"] += write_units
            counters["index_write_units"] += index_write_units


# --- requests -------------------------------------------------------------------


def _form(environ: dict[str, Any]) -> dict[str, list[str]]:
    """A query-protocol request's form; the body is put back for moto."""
    if not environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        return {}
    from werkzeug.wsgi import get_input_stream

    data = get_input_stream(environ).read()
    environ["wsgi.input"] = io.BytesIO(data)
    environ["CONTENT_LENGTH"] = str(len(data))
    return parse_qs(data.decode("utf-8", "replace"))


def _service_and_operation(environ: dict[str, Any]) -> tuple[str, str]:
    scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    service = scope.group(2) if scope else "unsigned"
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return service, target.rsplit(".", 1)[-1]
    operation = cloudwatch_cbor.operation_of(environ.get("PATH_INFO", ""))
    if operation:
        return service, operation
    action = parse_qs(environ.get("QUERY_STRING", "")).get("Action") or _form(environ).get("Action")
    return service, action[0] if action else environ["REQUEST_METHOD"]


def count_request(environ: dict[str, Any]) -> None:
    """Count one request on its way to moto (``/moto-api/*`` is not AWS)."""
    if environ.get("PATH_INFO", "").startswith("/moto-api/"):
        return
    service, operation = _service_and_operation(environ)
    with _lock:
        operations = _state["requests"].setdefault(service, {})
        operations[operation] = operations.get(operation, 0) + 1


# --- sizes ----------------------------------------------------------------------


def _utf8(text: str | None) -> int:
    return len(text.encode()) if text else 0


def _binary(value: bytes | str | None) -> int:
    """Raw bytes of a binary value (moto may hold it base64-encoded)."""
    if value is None:
        return 0
    return len(value) if isinstance(value, (bytes, bytearray)) else len(base64.b64decode(value))


def _units(size: int, unit: int) -> int:
    """Started units of ``size`` bytes, at least 1."""
    return max(1, math.ceil(size / unit))


def _number_size(number: str) -> int:
    significant = "".join(c for c in number if c in "0123456789").strip("0")
    return (len(significant) + 1) // 2 + 1


def _value_size(value: Any) -> int:
    """Size of a moto ``DynamoType``."""
    kind, data = value.type, value.value
    if kind == "S":
        return _utf8(data)
    if kind == "N":
        return _number_size(data)
    if kind == "B":
        return _binary(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(_utf8(s) for s in data)
    if kind == "NS":
        return sum(_number_size(n) for n in data)
    if kind == "BS":
        return sum(_binary(b) for b in data)
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in data)
    return 3 + sum(1 + _utf8(name) + _value_size(v) for name, v in data.items())  # M


def item_size(attrs: dict[str, Any] | None) -> int:
    """DynamoDB's size of an item (``{name: DynamoType}``; None: 0)."""
    return sum(_utf8(name) + _value_size(value) for name, value in (attrs or {}).items())


def _read_units(size: int, consistent: bool) -> float:
    return _units(size, _READ_UNIT) * (1.0 if consistent else 0.5)


def _message_size(body: str | None, attributes: dict[str, Any] | None) -> int:
    """An SQS or SNS message: body plus each attribute's name, type and value."""
    return _utf8(body) + sum(
        _utf8(name) + _utf8(a.get("DataType")) + _utf8(a.get("StringValue")) + _binary(a.get("BinaryValue"))
        for name, a in (attributes or {}).items())


def _entry_size(entry: dict[str, Any]) -> int:
    """A PutEvents entry, as "Calculating PutEvents event entry size" defines it."""
    return ((14 if entry.get("Time") is not None else 0) + _utf8(entry.get("Source"))
            + _utf8(entry.get("DetailType")) + _utf8(entry.get("Detail"))
            + sum(_utf8(r) for r in entry.get("Resources") or []))


# --- DynamoDB -------------------------------------------------------------------


def _dynamodb_targets(operation: str, param: Callable[[str], Any]) -> list[tuple[str, dict[str, Any], int, bool]]:
    """(table, key or item, unit multiplier, consistent read) of each item the request acts on."""
    if operation in ("PutItem", "UpdateItem", "DeleteItem", "GetItem"):
        return [(param("TableName"), param("Item") or param("Key"), 1, bool(param("ConsistentRead")))]
    if operation == "BatchWriteItem":
        return [(table, (r.get("PutRequest") or {}).get("Item") or r["DeleteRequest"]["Key"], 1, False)
                for table, requests in param("RequestItems").items() for r in requests]
    if operation == "BatchGetItem":
        return [(table, key, 1, bool(request.get("ConsistentRead")))
                for table, request in param("RequestItems").items() for key in request["Keys"]]
    # TransactWriteItems (Put, Update, Delete, ConditionCheck), TransactGetItems (Get)
    return [(action["TableName"], action.get("Item") or action["Key"], 2, True)
            for entry in param("TransactItems") for action in entry.values()]


def _item(backend: Any, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
    """A copy of the item's attributes as moto holds them now."""
    try:
        item = backend.get_item(table, key)
    except Exception:  # no such table, a malformed key: moto answers the request with the error
        return None
    return copy.deepcopy(dict(item.attrs)) if item else None


def _index_entry(index: Any, keys: list[str], attrs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The item's entry in a secondary index (None: not in this sparse index)."""
    if attrs is None or any(k not in attrs for k in keys):
        return None
    projection = index.projection or {}
    kind = projection.get("ProjectionType", "ALL")
    if kind == "ALL":
        return attrs
    wanted = {*index.table_key_attrs, *keys, *(projection.get("NonKeyAttributes", []) if kind == "INCLUDE" else [])}
    return {name: value for name, value in attrs.items() if name in wanted}


def _index_write_units(index: Any, before: dict[str, Any] | None, after: dict[str, Any] | None) -> int:
    keys = [k["AttributeName"] for k in index.schema]
    old, new = _index_entry(index, keys, before), _index_entry(index, keys, after)
    if old is None or new is None:  # entering, leaving, or never in the index
        return sum(_units(item_size(e), _WRITE_UNIT) for e in (old, new) if e is not None)
    if any(old[k] != new[k] for k in keys):  # moved: a delete and a put
        return _units(item_size(old), _WRITE_UNIT) + _units(item_size(new), _WRITE_UNIT)
    return _units(max(item_size(old), item_size(new)), _WRITE_UNIT) if old != new else 0


def _indexes(backend: Any, table: str) -> list[Any]:
    try:
        return list(backend.get_table(table).all_indexes())
    except Exception:  # the table is gone
        return []


def _metered_dynamodb(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """DynamoHandler.call_action: the capacity an item request consumes, from
    its items before and after (moto resolved its account and Region)."""

    def call_action(self: Any) -> Any:
        operation = self._get_action()
        if operation not in _DYNAMODB_WRITES | _DYNAMODB_READS:
            return original(self)
        backend = self.dynamodb_backend
        try:
            targets = _dynamodb_targets(operation, self._get_param)
        except (KeyError, TypeError, AttributeError):  # malformed: moto answers the error
            targets = []
        writes = operation in _DYNAMODB_WRITES
        with _dynamodb_lock:
            before = [_item(backend, table, key) for table, key, _, _ in targets] if writes else []
            response = original(self)
            after = [_item(backend, table, key) for table, key, _, _ in targets]
        status, _, body = response
        if int(status) != 200 and not (writes and any(code in str(body) for code in _CHARGED_ERRORS)):
            return response
        if not writes:
            _add_dynamodb(operation, read_units=sum(
                times * _read_units(item_size(item), consistent)
                for (_, _, times, consistent), item in zip(targets, after)))
            return response
        write_units = index_write_units = 0
        for (table, _, times, _), old, new in zip(targets, before, after):
            write_units += times * _units(max(item_size(old), item_size(new)), _WRITE_UNIT)
            index_write_units += sum(_index_write_units(index, old, new) for index in _indexes(backend, table))
        _add_dynamodb(operation, write_units=write_units, index_write_units=index_write_units)
        return response

    return call_action


def _metered_read(operation: str, original: Callable[..., Any], projection: str) -> Callable[..., Any]:
    """Table.query / Table.scan: meter the items read, then filter and project
    them as moto would have."""
    signature = inspect.signature(original)

    def read(*args: Any, **kwargs: Any) -> Any:
        call = signature.bind(*args, **kwargs)
        filter_expression, projected = call.arguments.get("filter_expression"), call.arguments.get(projection)
        call.arguments.update({"filter_expression": None, projection: None})
        items, scanned_count, last_key = original(*call.args, **call.kwargs)
        size = sum(item_size(item.attrs) for item in items)
        _add_dynamodb(operation, read_units=_read_units(size, bool(call.arguments.get("consistent_read"))))
        if filter_expression is not None:
            items = [item for item in items if filter_expression.expr(item)]
        if projected:
            items = [item.project(projected) for item in items]
        return items, scanned_count, last_key

    return read


# --- SQS, SNS, EventBridge, CloudWatch Logs -----------------------------------


def _payload(operation: str, param: Callable[[str], Any]) -> int:
    """Message bytes an SQS send or an SNS publish carries (0 for other operations)."""
    single = {"SendMessage": "MessageBody", "Publish": "Message"}
    batch = {"SendMessageBatch": ("Entries", "MessageBody"), "PublishBatch": ("PublishBatchRequestEntries", "Message")}
    if operation in single:
        return _message_size(param(single[operation]), param("MessageAttributes"))
    if operation in batch:
        entries, body = batch[operation]
        return sum(_message_size(e.get(body), e.get("MessageAttributes")) for e in param(entries) or [])
    return 0


def _meter_sqs(operation: str, param: Callable[[str], Any]) -> None:
    _add("sqs", billed_requests=_units(_payload(operation, param), _CHUNK))


def _meter_sns(operation: str, param: Callable[[str], Any]) -> None:
    _add("sns", billed_requests=_units(_payload(operation, param), _CHUNK))


def _meter_events(operation: str, param: Callable[[str], Any]) -> None:
    if operation == "PutEvents":
        entries = param("Entries") or []
        _add("events", put_entries=len(entries), billed_events=sum(_units(_entry_size(e), _CHUNK) for e in entries))


def _meter_logs(operation: str, param: Callable[[str], Any]) -> None:
    if operation == "PutLogEvents":
        _add(None, logs_bytes=sum(_utf8(e.get("message")) + _LOG_EVENT_OVERHEAD for e in param("logEvents") or []))


def _metered(original: Callable[[Any], Any], meter: Callable[[str, Callable[[str], Any]], None]) -> Callable[[Any], Any]:
    def call_action(self: Any) -> Any:
        response = original(self)
        meter(self._get_action(), self._get_param)
        return response

    return call_action


def record_forwarded(event: dict[str, Any]) -> None:
    """A rule delivered ``event`` to another event bus (``eventbridge``)."""
    size = _entry_size({"Time": event.get("time"), "Source": event.get("source"),
                        "DetailType": event.get("detail-type"), "Detail": json.dumps(event.get("detail")),
                        "Resources": event.get("resources")})
    _add("events", forwarded=1, forwarded_bytes=_utf8(json.dumps(event)), billed_events=_units(size, _CHUNK))


# --- bytes on the wire ------------------------------------------------------------


def _header_bytes(name: str, value: str) -> int:
    return len(name) + 2 + _utf8(str(value)) + 2  # "Name: value\r\n"


def _request_bytes(environ: dict[str, Any]) -> int:
    query = environ.get("QUERY_STRING", "")
    line = f"{environ.get('REQUEST_METHOD', 'GET')} {environ.get('PATH_INFO', '/')}{'?' + query if query else ''} HTTP/1.1\r\n"
    headers = sum(_header_bytes(key[5:].replace("_", "-"), value)
                  for key, value in environ.items() if key.startswith("HTTP_"))
    headers += sum(_header_bytes(key.replace("_", "-"), environ[key])
                   for key in ("CONTENT_TYPE", "CONTENT_LENGTH") if environ.get(key))
    try:
        body = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        body = 0
    return _utf8(line) + headers + 2 + body


def metered_transfer(environ: dict[str, Any], start_response: Any, app: Callable[..., Any]) -> Any:
    """Runs ``app`` and adds the request's and its answer's bytes to ``transfer``."""
    if environ.get("PATH_INFO", "").startswith("/moto-api/"):
        return app(environ, start_response)
    scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    service, region = (scope.group(2), scope.group(1)) if scope else ("unsigned", "unsigned")
    sent = _request_bytes(environ)
    head = [0]

    def counting_start_response(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        head[0] = _utf8(f"HTTP/1.1 {status}\r\n") + sum(_header_bytes(n, v) for n, v in headers) + 2
        return start_response(status, headers, *exc_info)

    body = app(environ, counting_start_response)

    def chunks() -> Any:
        received = 0
        try:
            for chunk in body:
                received += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            with _lock:
                counters = _state["transfer"].setdefault(service, {}).setdefault(
                    region, {"requests": 0, "request_bytes": 0, "response_bytes": 0})
                counters["requests"] += 1
                counters["request_bytes"] += sent
                counters["response_bytes"] += head[0] + received

    return chunks()


def record_service_events(count: int) -> None:
    """``eventbridge.emit`` sent ``count`` AWS service events to a default bus."""
    _add("events", service_events=count)


def _metered_sqs_target(original: Callable[..., None]) -> Callable[..., None]:
    def send(self: Any, resource_id: str, event: Any, group_id: str | None = None) -> None:
        original(self, resource_id, event, group_id)
        # moto formatted event["time"] in place: json.dumps(event) is the message body it sent.
        _add("sqs", billed_requests=_units(_utf8(json.dumps(event)), _CHUNK), eventbridge_deliveries=1)

    return send


def install() -> None:
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.responses import DynamoHandler
    from moto.events.models import Rule
    from moto.events.responses import EventsHandler
    from moto.logs.responses import LogsResponse
    from moto.sns.responses import SNSResponse
    from moto.sqs.responses import SQSResponse

    from . import store

    DynamoHandler.call_action = _metered_dynamodb(DynamoHandler.call_action)  # type: ignore[method-assign]
    Table.query = _metered_read("Query", Table.query, "projection_expressions")  # type: ignore[method-assign]
    Table.scan = _metered_read("Scan", Table.scan, "projection_expression")  # type: ignore[method-assign]
    for handler, meter in ((SQSResponse, _meter_sqs), (SNSResponse, _meter_sns),
                           (EventsHandler, _meter_events), (LogsResponse, _meter_logs)):
        handler.call_action = _metered(handler.call_action, meter)  # type: ignore[method-assign]
    Rule._send_to_sqs_queue = _metered_sqs_target(Rule._send_to_sqs_queue)  # type: ignore[method-assign]
    store.on_reset(reset)
