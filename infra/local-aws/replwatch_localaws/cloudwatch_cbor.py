"""CloudWatch over Smithy RPCv2 CBOR, the protocol the AWS SDKs now speak to it.

Why: CloudWatch's service model lists the protocols ``smithy-rpc-v2-cbor``,
``json`` (AWS JSON 1.0) and ``query``, and the current AWS SDKs pick RPCv2
CBOR (aws-sdk-rust's ``aws-sdk-cloudwatch`` speaks nothing else). An RPCv2
CBOR call is ``POST {prefix}/service/GraniteServiceVersion20100801/operation/<Operation>``
with ``Smithy-Protocol: rpc-v2-cbor``, ``Content-Type: application/cbor``, the
input structure as a CBOR map (timestamps as tag 1 epoch seconds, blobs as
byte strings), and, for ``PutMetricData`` (``@requestCompression``), possibly
``Content-Encoding: gzip``. moto 5.2.5 routes CloudWatch only at ``/`` and
answers 404 to these paths; botocore still picks AWS JSON 1.0 (its own
protocol order puts ``json`` first), which moto does handle.

What this does: every such request is translated, guided by botocore's
CloudWatch model (input, output and error shapes), into the equivalent AWS
JSON 1.0 request (``POST /``, ``X-Amz-Target: GraniteServiceVersion20100801.<Operation>``,
``Content-Type: application/x-amz-json-1.0``, the same document as JSON:
tag-1 timestamps become epoch numbers, byte strings base64), passed to moto
with every other header kept (so SigV4 Region and account selection work as
for any call), and moto's JSON answer is re-encoded as CBOR following the
Smithy RPCv2 CBOR spec:

- success: status 200, ``Smithy-Protocol: rpc-v2-cbor``, ``Content-Type:
  application/cbor``, the output structure as a CBOR map (``double`` members
  as CBOR floats even where moto wrote an integer, timestamps as tag 1,
  nulls omitted); an operation without output (``PutMetricData``,
  ``PutMetricAlarm``...) gets an empty body and no ``Content-Type``;
- error: moto's status, a CBOR map ``{"__type": "com.amazonaws.cloudwatch#<ErrorShape>",
  "message": ...}`` (the absolute shape id of the modeled error, found by its
  query error code in the operation's errors, then the service's) and, since
  CloudWatch carries ``awsQueryCompatible``, ``x-amzn-query-error: <Code>;Sender|Receiver``
  (e.g. ``ResourceNotFound;Sender`` for ``DashboardNotFoundError``). The SDKs
  take the code from that header, so they decode the modeled error.

Every operation of the model is bridged; what moto does with it is moto's
CloudWatch. Requests the protocol calls malformed (not ``POST``, no
``Smithy-Protocol: rpc-v2-cbor``, an ``X-Amz-Target`` header, undecodable CBOR,
a member of the wrong CBOR type, an unknown content encoding or operation)
are answered here with a CBOR error, without reaching moto.

The CBOR codec below is complete for what the protocol uses: unsigned and
negative integers, byte and text strings (definite and indefinite length),
arrays and maps (both), tag 1 (timestamps; tags 2/3 bignums decode too),
false/true/null/undefined, half, single and double floats.
"""

from __future__ import annotations

import base64
import datetime as _dt
import gzip
import io
import json
import struct
import threading
import zlib
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

SERVICE = "GraniteServiceVersion20100801"
NAMESPACE = "com.amazonaws.cloudwatch"
TARGET_PREFIX = SERVICE
PROTOCOL = "rpc-v2-cbor"
CBOR = "application/cbor"
JSON_1_0 = "application/x-amz-json-1.0"
# The service segment: the service shape's name, or its absolute id with '#' -> '.'.
_SERVICE_NAMES = (SERVICE, f"{NAMESPACE}.{SERVICE}")


# --- CBOR ---------------------------------------------------------------------


class CborError(ValueError):
    """Malformed or unsupported CBOR."""


class Epoch(float):
    """A CBOR tag-1 value: seconds since the epoch."""


_BREAK = object()


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise CborError("truncated CBOR")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def argument(self, info: int) -> int | None:
        """The head's argument; None for indefinite length (31)."""
        if info < 24:
            return info
        if info in (24, 25, 26, 27):
            return int.from_bytes(self.take(1 << (info - 24)), "big")
        if info == 31:
            return None
        raise CborError(f"reserved additional information {info}")

    def item(self, allow_break: bool = False) -> Any:
        initial = self.take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if major == 7:
            if info == 20:
                return False
            if info == 21:
                return True
            if info in (22, 23):  # null, undefined (read as null, as the spec says)
                return None
            if info == 25:
                return struct.unpack(">e", self.take(2))[0]
            if info == 26:
                return struct.unpack(">f", self.take(4))[0]
            if info == 27:
                return struct.unpack(">d", self.take(8))[0]
            if info == 31 and allow_break:
                return _BREAK
            raise CborError(f"unsupported simple value {info}")
        arg = self.argument(info)
        if major == 0:
            if arg is None:
                raise CborError("indefinite-length integer")
            return arg
        if major == 1:
            if arg is None:
                raise CborError("indefinite-length integer")
            return -1 - arg
        if major in (2, 3):
            if arg is None:
                chunks = []
                while True:
                    head = self.take(1)[0]
                    if head == 0xFF:
                        break
                    if head >> 5 != major or head & 0x1F == 31:
                        raise CborError("bad chunk in an indefinite-length string")
                    chunks.append(self.take(self.argument(head & 0x1F) or 0))
                raw = b"".join(chunks)
            else:
                raw = self.take(arg)
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise CborError(f"text string is not UTF-8: {err}") from None
        if major == 4:
            items = []
            if arg is None:
                while (value := self.item(allow_break=True)) is not _BREAK:
                    items.append(value)
            else:
                items = [self.item() for _ in range(arg)]
            return items
        if major == 5:
            out: dict[Any, Any] = {}
            count = 0
            while arg is None or count < arg:
                key = self.item(allow_break=arg is None)
                if key is _BREAK:
                    break
                if isinstance(key, (list, dict)):
                    raise CborError("map key must be a scalar")
                out[key] = self.item()
                count += 1
            return out
        # major == 6: tags
        if arg is None:
            raise CborError("indefinite-length tag")
        value = self.item()
        if arg == 1:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CborError("tag 1 (epoch time) must hold a number")
            return Epoch(value)
        if arg in (2, 3) and isinstance(value, bytes):
            n = int.from_bytes(value, "big")
            return n if arg == 2 else -1 - n
        raise CborError(f"unsupported CBOR tag {arg}")


def loads(data: bytes) -> Any:
    """Decode exactly one CBOR data item."""
    reader = _Reader(data)
    value = reader.item()
    if reader.pos != len(reader.data):
        raise CborError(f"{len(reader.data) - reader.pos} bytes after the CBOR data item")
    return value


def _head(out: bytearray, major: int, n: int) -> None:
    if n < 24:
        out.append(major << 5 | n)
    elif n < 1 << 8:
        out += bytes((major << 5 | 24, n))
    elif n < 1 << 16:
        out.append(major << 5 | 25)
        out += n.to_bytes(2, "big")
    elif n < 1 << 32:
        out.append(major << 5 | 26)
        out += n.to_bytes(4, "big")
    elif n < 1 << 64:
        out.append(major << 5 | 27)
        out += n.to_bytes(8, "big")
    else:
        raise CborError(f"integer {n} does not fit in 64 bits")


def _dump(out: bytearray, value: Any) -> None:
    if value is None:
        out.append(0xF6)
    elif value is True:
        out.append(0xF5)
    elif value is False:
        out.append(0xF4)
    elif isinstance(value, Epoch):
        out.append(0xC1)  # tag 1
        out.append(0xFB)
        out += struct.pack(">d", float(value))
    elif isinstance(value, _dt.datetime):
        _dump(out, Epoch(_epoch(value)))
    elif isinstance(value, int):
        if value >= 0:
            _head(out, 0, value)
        else:
            _head(out, 1, -1 - value)
    elif isinstance(value, float):
        out.append(0xFB)  # always a double: exact, and every decoder reads it
        out += struct.pack(">d", value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        _head(out, 2, len(raw))
        out += raw
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        _head(out, 3, len(raw))
        out += raw
    elif isinstance(value, (list, tuple)):
        _head(out, 4, len(value))
        for item in value:
            _dump(out, item)
    elif isinstance(value, dict):
        _head(out, 5, len(value))
        for key, item in value.items():
            _dump(out, key)
            _dump(out, item)
    else:
        raise CborError(f"{type(value).__name__} has no CBOR form here")


def dumps(value: Any) -> bytes:
    """Encode with definite lengths, minimal integer heads, doubles for floats,
    tag 1 + double for ``Epoch`` and ``datetime``."""
    out = bytearray()
    _dump(out, value)
    return bytes(out)


def _epoch(value: _dt.datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.timezone.utc)
    return value.timestamp()


# --- the CloudWatch model -----------------------------------------------------

_model_lock = threading.Lock()
_model: Any = None


def service_model() -> Any:
    """botocore's CloudWatch model (the one boto3 and moto use)."""
    global _model
    with _model_lock:
        if _model is None:
            import botocore.session

            _model = botocore.session.get_session().get_service_model("cloudwatch")
        return _model


class BadRequest(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def _serialization_error(message: str) -> BadRequest:
    return BadRequest(400, "smithy.framework#SerializationException", message)


# --- shape-guided translation ---------------------------------------------------

_INTEGERS = ("integer", "long", "short", "byte")
_FLOATS = ("double", "float")


def to_json(value: Any, shape: Any, path: str = "") -> Any:
    """A decoded CBOR input value -> the AWS JSON 1.0 value of the same member."""
    kind = shape.type_name
    where = path or shape.name
    if kind == "structure":
        if not isinstance(value, dict):
            raise _serialization_error(f"{where}: expected a map for structure {shape.name}")
        out = {}
        for name, item in value.items():
            member = shape.members.get(name)
            if member is None or item is None:  # unknown members are ignored; nulls are absent
                continue
            out[name] = to_json(item, member, f"{where}.{name}")
        return out
    if kind == "list":
        if not isinstance(value, list):
            raise _serialization_error(f"{where}: expected an array")
        return [None if item is None else to_json(item, shape.member, f"{where}[{i}]")
                for i, item in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise _serialization_error(f"{where}: expected a map")
        return {str(k): None if v is None else to_json(v, shape.value, f"{where}.{k}")
                for k, v in value.items()}
    if kind == "timestamp":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _serialization_error(f"{where}: expected a tag-1 timestamp")
        return float(value) if isinstance(value, Epoch) else value
    if kind == "blob":
        if not isinstance(value, bytes):
            raise _serialization_error(f"{where}: expected a byte string")
        return base64.b64encode(value).decode("ascii")
    if kind in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _serialization_error(f"{where}: expected a number")
        return float(value)
    if kind in _INTEGERS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _serialization_error(f"{where}: expected an integer")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _serialization_error(f"{where}: expected a boolean")
        return value
    if kind == "string":
        if not isinstance(value, str):
            raise _serialization_error(f"{where}: expected a text string")
        return value
    raise _serialization_error(f"{where}: unsupported shape type {kind}")


def from_json(value: Any, shape: Any) -> Any:
    """moto's AWS JSON 1.0 output value -> the value to encode as CBOR."""
    kind = shape.type_name
    if kind == "structure":
        out = {}
        for name, item in (value or {}).items():
            member = shape.members.get(name)
            if member is None or item is None:
                continue
            out[name] = from_json(item, member)
        return out
    if kind == "list":
        return [from_json(item, shape.member) for item in value if item is not None]
    if kind == "map":
        return {k: from_json(v, shape.value) for k, v in value.items() if v is not None}
    if kind == "timestamp":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return Epoch(value)
        from botocore.utils import parse_timestamp

        return Epoch(_epoch(parse_timestamp(value)))
    if kind == "blob":
        return value if isinstance(value, bytes) else base64.b64decode(value)
    if kind in _FLOATS:
        return float(value)
    if kind in _INTEGERS:
        return int(value)
    if kind == "boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind == "string":
        return value if isinstance(value, str) else str(value)
    return value


# --- HTTP ---------------------------------------------------------------------


def operation_of(path: str) -> str | None:
    """The operation name if ``path`` is an RPCv2 CBOR call to CloudWatch
    (only the last four segments count: a prefix is allowed)."""
    parts = path.rstrip("/").split("/")
    if len(parts) >= 5 and parts[-4] == "service" and parts[-3] in _SERVICE_NAMES \
            and parts[-2] == "operation" and parts[-1]:
        return parts[-1]
    return None


def _decompress(body: bytes, encoding: str) -> bytes:
    # Content-Encoding lists codings in the order they were applied.
    for coding in reversed([c.strip().lower() for c in encoding.split(",") if c.strip()]):
        if coding in ("gzip", "x-gzip"):
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error) as err:
                raise _serialization_error(f"body is not valid gzip: {err}") from None
        elif coding != "identity":
            raise BadRequest(415, "smithy.framework#UnsupportedMediaTypeException",
                             f"unsupported Content-Encoding {coding!r}")
    return body


def _cbor_response(status: int, body: dict[str, Any] | None,
                   headers: Iterable[tuple[str, str]] = ()) -> tuple[int, list[tuple[str, str]], bytes]:
    out = [("Smithy-Protocol", PROTOCOL)]
    out.extend(headers)
    data = b""
    if body is not None:
        data = dumps(body)
        out.append(("Content-Type", CBOR))
    out.append(("Content-Length", str(len(data))))
    return status, out, data


def _find_error_shape(operation: Any, code: str) -> Any:
    """The modeled error whose (query) code or name is ``code``: the
    operation's errors first, then any of the service's."""
    for shapes in (operation.error_shapes if operation else [], service_model().error_shapes):
        for shape in shapes:
            if shape.error_code == code or shape.name == code:
                return shape
    return None


def _error(status: int, operation: Any, code: str, message: str,
           request_id: str | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """An RPCv2 CBOR error for a CloudWatch error code (the awsQueryError code
    moto reports, e.g. ``ResourceNotFound``)."""
    shape = _find_error_shape(operation, code)
    headers: list[tuple[str, str]] = []
    if request_id:
        headers.append(("x-amzn-requestid", request_id))
    if shape is None:
        fault = "Receiver" if status >= 500 else "Sender"
        body = {"__type": f"{NAMESPACE}#{code}", "message": message}
    else:
        meta = shape.metadata.get("error", {})
        fault = "Sender" if meta.get("senderFault") else "Receiver"
        body = {"__type": f"{NAMESPACE}#{shape.name}"}
        # the error structure's own members (all CloudWatch errors have `message`)
        for name in shape.members:
            if name.lower() == "message":
                body[name] = message
    headers.append(("x-amzn-query-error", f"{code};{fault}"))
    return _cbor_response(status, body, headers)


def _framework_error(err: BadRequest) -> tuple[int, list[tuple[str, str]], bytes]:
    return _cbor_response(err.status, {"__type": err.error_type, "message": err.message})


def _error_from_moto(status: int, headers: dict[str, str], body: bytes, operation: Any
                     ) -> tuple[int, list[tuple[str, str]], bytes]:
    request_id = headers.get("x-amzn-requestid")
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        # not an AWS JSON error (e.g. a moto traceback page)
        text = body.decode("utf-8", "replace").strip()[:2000]
        return _error(status if status >= 400 else 500, operation, "InternalServiceError",
                      f"moto answered HTTP {status}: {text}", request_id)
    query_error = headers.get("x-amzn-query-error", "")
    code = query_error.split(";", 1)[0] if ";" in query_error else ""
    if not code:
        code = str(doc.get("__type") or doc.get("code") or doc.get("Code") or "InternalServiceError")
        code = code.split(":", 1)[0].rsplit("#", 1)[-1]
    message = str(doc.get("message") or doc.get("Message") or "")
    return _error(status, operation, code, message, request_id)


def _call_moto(moto_app: Any, environ: dict[str, Any], operation: str, document: dict[str, Any]
               ) -> tuple[int, dict[str, str], bytes]:
    from werkzeug.test import run_wsgi_app

    data = json.dumps(document).encode()
    env = {k: v for k, v in environ.items() if k not in (
        "HTTP_SMITHY_PROTOCOL", "HTTP_CONTENT_ENCODING", "HTTP_ACCEPT", "HTTP_ACCEPT_ENCODING",
        "HTTP_TRANSFER_ENCODING", "HTTP_X_AMZ_TARGET", "HTTP_X_AMZN_TARGET")}
    env.update({
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "RAW_URI": "/",
        "REQUEST_URI": "/",
        "CONTENT_TYPE": JSON_1_0,
        "CONTENT_LENGTH": str(len(data)),
        "HTTP_X_AMZ_TARGET": f"{TARGET_PREFIX}.{operation}",
        "wsgi.input": io.BytesIO(data),
    })
    app_iter, status, headers = run_wsgi_app(moto_app, env, buffered=True)
    try:
        body = b"".join(app_iter)
    finally:
        close = getattr(app_iter, "close", None)
        if close:
            close()
    code = int(status.split(" ", 1)[0])
    return code, {k.lower(): v for k, v in headers.items()}, body


def bridge(environ: dict[str, Any], moto_app: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Answer one RPCv2 CBOR CloudWatch request: (status, headers, body)."""
    path = environ.get("PATH_INFO", "")
    name = operation_of(path) or ""
    try:
        if environ.get("REQUEST_METHOD") != "POST":
            raise BadRequest(405, "smithy.framework#MethodNotAllowedException",
                             "RPCv2 CBOR requests must use POST")
        if environ.get("HTTP_SMITHY_PROTOCOL", "").strip().lower() != PROTOCOL:
            raise BadRequest(400, "smithy.framework#SerializationException",
                             f"missing header Smithy-Protocol: {PROTOCOL}")
        if "HTTP_X_AMZ_TARGET" in environ or "HTTP_X_AMZN_TARGET" in environ:
            raise BadRequest(400, "smithy.framework#SerializationException",
                             "RPCv2 CBOR requests must not carry X-Amz-Target or X-Amzn-Target")
        model = service_model()
        if name not in model.operation_names:
            raise BadRequest(404, "smithy.framework#UnknownOperationException",
                             f"{SERVICE} has no operation {name!r}")
        operation = model.operation_model(name)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        stream = environ["wsgi.input"]
        raw = stream.read(length) if length else stream.read()
        raw = _decompress(raw, environ.get("HTTP_CONTENT_ENCODING", ""))
        decoded = {}
        if raw:
            try:
                decoded = loads(raw)
            except CborError as err:
                raise _serialization_error(f"body is not valid CBOR: {err}") from None
        document: dict[str, Any] = {}
        if operation.input_shape is not None:
            document = to_json(decoded, operation.input_shape)
    except BadRequest as err:
        return _framework_error(err)

    try:
        status, headers, body = _call_moto(moto_app, environ, name, document)
    except Exception as err:  # moto crashed: answer like a service fault, not a traceback page
        return _error(500, operation, "InternalServiceError", f"moto failed on {name}: {err!r}")
    if status != 200:
        return _error_from_moto(status, headers, body, operation)
    request_id = [("x-amzn-requestid", headers["x-amzn-requestid"])] if "x-amzn-requestid" in headers else []
    if operation.output_shape is None:
        return _cbor_response(200, None, request_id)
    try:
        doc = json.loads(body) if body.strip() else {}
        result = from_json(doc, operation.output_shape)
    except (ValueError, TypeError, AttributeError, CborError) as err:
        return _error(500, operation, "InternalServiceError",
                      f"moto's {name} answer could not be translated: {err}: {body[:2000]!r}")
    return _cbor_response(200, result, request_id)


def wsgi(environ: dict[str, Any], start_response: Any, moto_app: Any) -> Iterable[bytes]:
    status, headers, body = bridge(environ, moto_app)
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    start_response(f"{status} {reason}", headers)
    return [body]


__all__ = ["CborError", "Epoch", "bridge", "dumps", "loads", "operation_of", "wsgi"]
