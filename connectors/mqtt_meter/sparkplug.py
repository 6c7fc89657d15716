"""Sparkplug B (Eclipse Sparkplug 3.0) for the meter-hub family: topics, payloads and per-node session state.

Four parts, all pure except the tracker's own memory (no I/O, no clock reads, no protobuf library):

- :func:`parse_topic` reads ``spBv1.0/<group_id>/<message_type>/<edge_node_id>[/<device_id>]`` (spec 4.1,
  ``tck-id-topic-structure``) and the host state topic ``spBv1.0/STATE/<host_id>``.
- :func:`decode_payload` / :func:`encode_payload` read and write ``sparkplug_b.proto`` (proto2) with a small
  hand-rolled protobuf wire-format codec: varint, 64-bit, length-delimited and 32-bit fields; unknown fields
  are skipped, as protobuf requires. A truncated or garbled payload raises :class:`core.errors.DecodeError`
  naming the byte offset and the field, and nothing else escapes (fuzz-tested).
- :class:`SparkplugSessions` is what a Sparkplug host application keeps per edge node: the alias tables of
  the last NBIRTH / DBIRTHs, the ``seq`` counter, the ``bdSeq`` of the current session and online state.
  :meth:`SparkplugSessions.observe` turns one message into an :class:`Observation`: metrics with names
  resolved, the sequence verdict, and whether node and device are online.

Why a hand-rolled codec: the payload schema is fixed and small, a generated protobuf module would be a new
dependency, and owning the reader lets every failure be a DecodeError with an offset instead of a library's
exception type. DataSet and Template values are kept as their raw protobuf bytes (``bytes``): meters do not
send them and decoding them would double this module; Metric ``metadata`` and ``extension_value`` are
skipped, as is ``Payload.body``. STATE payloads are JSON, not protobuf: they must not go through
:func:`decode_payload`.
"""

from __future__ import annotations

import struct
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final, Literal

from core.errors import DecodeError

__all__ = [
    "NAMESPACE",
    "DataType",
    "MessageType",
    "Metric",
    "Observation",
    "Payload",
    "SparkplugSessions",
    "SparkplugTopic",
    "Verdict",
    "decode_payload",
    "encode_payload",
    "parse_topic",
]

NAMESPACE: Final = "spBv1.0"
"""The Sparkplug B topic namespace (spec 4.1.1.1)."""

MessageType = Literal["NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD", "STATE"]

Verdict = Literal["ok", "gap", "duplicate", "before_birth", "birth", "rebirth", "death", "stale_death",
                  "unsequenced"]
"""What :meth:`SparkplugSessions.observe` concluded about one message (see :class:`Observation`)."""


class DataType(IntEnum):
    """``DataType`` of sparkplug_b.proto; member names are the spec's, as the spec's JSON examples use them."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15
    DataSet = 16
    Bytes = 17
    File = 18
    Template = 19
    PropertySet = 20
    PropertySetList = 21
    Int8Array = 22
    Int16Array = 23
    Int32Array = 24
    Int64Array = 25
    UInt8Array = 26
    UInt16Array = 27
    UInt32Array = 28
    UInt64Array = 29
    FloatArray = 30
    DoubleArray = 31
    BooleanArray = 32
    StringArray = 33
    DateTimeArray = 34


# --- topics ------------------------------------------------------------------------------------------------

_NODE_KINDS: Final[dict[str, MessageType]] = {"NBIRTH": "NBIRTH", "NDEATH": "NDEATH", "NDATA": "NDATA",
                                              "NCMD": "NCMD"}
_DEVICE_KINDS: Final[dict[str, MessageType]] = {"DBIRTH": "DBIRTH", "DDEATH": "DDEATH", "DDATA": "DDATA",
                                                "DCMD": "DCMD"}


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """A parsed Sparkplug topic. For ``STATE`` the group is ``""`` and ``edge_node_id`` is the host id."""

    namespace: str
    group_id: str
    message_type: MessageType
    edge_node_id: str
    device_id: str | None = None


def parse_topic(topic: str) -> SparkplugTopic:
    """Parse a Sparkplug B topic or raise DecodeError saying what is wrong with it.

    Spec 4.1 (``tck-id-topic-structure``): ``namespace/group_id/message_type/edge_node_id/[device_id]``;
    ``device_id`` is present exactly for DBIRTH/DDEATH/DDATA/DCMD and absent for the node messages; the ids
    are non-empty and must not contain the MQTT wildcards ``+`` and ``#``. ``spBv1.0/STATE/<host_id>`` is the
    Sparkplug 3.0 host application state topic.
    """
    parts = topic.split("/")
    if parts[0] != NAMESPACE:
        raise DecodeError(f"topic {topic!r}: not Sparkplug B (the namespace must be {NAMESPACE!r})")
    if len(parts) == 3 and parts[1] == "STATE":
        _check_ids(topic, parts[2:])
        return SparkplugTopic(NAMESPACE, "", "STATE", parts[2])
    if len(parts) < 4:
        raise DecodeError(f"topic {topic!r}: expected {NAMESPACE}/group_id/message_type/edge_node_id[/device_id]")
    kind = parts[2]
    if kind in _NODE_KINDS:
        if len(parts) != 4:
            raise DecodeError(f"topic {topic!r}: a {kind} topic has no device_id level")
        _check_ids(topic, parts[1:2] + parts[3:])
        return SparkplugTopic(NAMESPACE, parts[1], _NODE_KINDS[kind], parts[3])
    if kind in _DEVICE_KINDS:
        if len(parts) != 5:
            raise DecodeError(f"topic {topic!r}: a {kind} topic ends with /edge_node_id/device_id")
        _check_ids(topic, parts[1:2] + parts[3:])
        return SparkplugTopic(NAMESPACE, parts[1], _DEVICE_KINDS[kind], parts[3], parts[4])
    raise DecodeError(f"topic {topic!r}: unknown Sparkplug message type {kind!r}")


def _check_ids(topic: str, ids: list[str]) -> None:
    for part in ids:
        if not part or "+" in part or "#" in part:
            raise DecodeError(f"topic {topic!r}: id {part!r} must be non-empty and free of '+' and '#'")


# --- payload model -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Metric:
    """One ``Payload.Metric``. ``value`` is typed by ``datatype``; None when ``is_null`` or absent.

    Not frozen, but to be treated as a value: a frozen dataclass costs four times as much to build, and one
    is built per metric on the per-message path.

    Value types: ints for Int8..UInt64 and DateTime (ms since the epoch), float for Float/Double, bool,
    str for String/Text/UUID, bytes for Bytes/File (and the raw protobuf of DataSet/Template), lists for the
    array types. With ``datatype`` Unknown (DATA messages omit it, ``tck-id-payloads-metric-datatype-not-req``)
    the value is the wire value as is (an int is then unsigned) until :class:`SparkplugSessions` types it
    with the datatype from the birth certificate.
    """

    name: str | None
    alias: int | None
    timestamp_ms: int | None
    datatype: DataType
    is_null: bool
    value: Any
    properties: dict[str, Any] = field(default_factory=dict)
    is_historical: bool = False
    is_transient: bool = False


@dataclass(slots=True)
class Payload:
    """A Sparkplug B ``Payload``: send time (ms), the edge node's ``seq``, an optional ``uuid``, the metrics."""

    timestamp_ms: int | None
    seq: int | None
    uuid: str | None
    metrics: list[Metric]


# --- wire-format reader ------------------------------------------------------------------------------------

_MASK32: Final = (1 << 32) - 1
_MASK64: Final = (1 << 64) - 1
_MAX_DEPTH: Final = 8
"""PropertySets nest; bounding the depth keeps hostile input from exhausting the Python stack."""
_WIRE_NAMES: Final = {0: "varint", 1: "64-bit", 2: "length-delimited", 5: "32-bit"}

_PAYLOAD_FIELDS: Final = {1: "timestamp", 2: "metrics", 3: "seq", 4: "uuid", 5: "body"}
_METRIC_FIELDS: Final = {1: "name", 2: "alias", 3: "timestamp", 4: "datatype", 5: "is_historical",
                         6: "is_transient", 7: "is_null", 8: "metadata", 9: "properties", 10: "int_value",
                         11: "long_value", 12: "float_value", 13: "double_value", 14: "boolean_value",
                         15: "string_value", 16: "bytes_value", 17: "dataset_value", 18: "template_value",
                         19: "extension_value"}
_SET_FIELDS: Final = {1: "keys", 2: "values"}
_VALUE_FIELDS: Final = {1: "type", 2: "is_null", 3: "int_value", 4: "long_value", 5: "float_value",
                        6: "double_value", 7: "boolean_value", 8: "string_value", 9: "propertyset_value",
                        10: "propertysets_value", 11: "extension_value"}
_LIST_FIELDS: Final = {1: "propertyset"}

# The wire type each known field must have (proto2 types of sparkplug_b.proto).
_METRIC_WIRES: Final = {1: 2, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0, 8: 2, 9: 2, 10: 0, 11: 0, 12: 5, 13: 1,
                        14: 0, 15: 2, 16: 2, 17: 2, 18: 2, 19: 2}
_VALUE_WIRES: Final = {1: 0, 2: 0, 3: 0, 4: 0, 5: 5, 6: 1, 7: 0, 8: 2, 9: 2, 10: 2, 11: 2}


def _fail(what: str, at: int | None, where: str) -> DecodeError:
    place = "" if at is None else f" at byte {at}"
    return DecodeError(f"sparkplug payload: {what}{place} ({where})")


def _label(where: str, names: dict[int, str], number: int) -> str:
    """``Payload.metrics[2].name``: built only when an error is raised, never on the hot path."""
    return f"{where}.{names.get(number, f'field {number}')}"


def _varint(buf: bytes, pos: int, end: int, where: str, names: dict[int, str] | None = None,
            number: int = 0) -> tuple[int, int]:
    """A base-128 varint; more than 10 bytes is garbage, bits past 64 are dropped (protobuf's rule)."""
    start, result, shift = pos, 0, 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise _fail("varint longer than 10 bytes", start, _label(where, names, number) if names else where)
    raise _fail("truncated varint", start, _label(where, names, number) if names else where)


def _fields(buf: bytes, pos: int, end: int, where: str,
            names: dict[int, str]) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield ``(field, wire, a, b, offset)`` for each field in ``buf[pos:end]``.

    varint: ``a`` is the value; length-delimited: ``buf[a:b]`` is the content; 64/32-bit: ``a`` is where the
    little-endian bytes start. Groups (wire types 3/4, absent from proto2 sparkplug_b) and invalid wire types
    are errors, since their length is unknowable without a schema. One-byte varints (most keys, lengths and
    small values) skip the general loop: this runs once per field of every message.
    """
    while pos < end:
        at = pos
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos, end, where)
        number, wire = key >> 3, key & 7
        if number == 0 or number > 0x1FFFFFFF:
            raise _fail(f"invalid field number {number}", at, where)
        if wire in {0, 2}:
            if pos < end and buf[pos] < 0x80:
                value = buf[pos]
                pos += 1
            else:
                value, pos = _varint(buf, pos, end, where, names, number)
            if wire == 0:
                yield number, 0, value, 0, at
                continue
            if pos + value > end:
                raise _fail(f"truncated length-delimited field ({value} bytes declared, {end - pos} left)",
                            at, _label(where, names, number))
            yield number, 2, pos, pos + value, at
            pos += value
        elif wire in {1, 5}:
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise _fail(f"truncated {_WIRE_NAMES[wire]} field", at, _label(where, names, number))
            yield number, wire, pos, 0, at
            pos += size
        else:
            raise _fail(f"unsupported wire type {wire}", at, _label(where, names, number))


def _wire_error(wire: int, expected: int, at: int, label: str) -> DecodeError:
    return _fail(f"expected a {_WIRE_NAMES[expected]} field, got {_WIRE_NAMES.get(wire, wire)}", at, label)


def _text(buf: bytes, start: int, end: int, where: str, names: dict[int, str], number: int) -> str:
    try:
        return buf[start:end].decode()
    except UnicodeDecodeError as exc:
        raise _fail(f"invalid UTF-8 ({exc.reason})", start + exc.start, _label(where, names, number)) from None


_DATATYPES: Final = tuple(DataType)


def _datatype(code: int, at: int, where: str, names: dict[int, str], number: int) -> DataType:
    if code < len(_DATATYPES):
        return _DATATYPES[code]
    raise _fail(f"unknown datatype {code}", at, _label(where, names, number))


def decode_payload(data: bytes) -> Payload:
    """Decode a Sparkplug B protobuf payload (NBIRTH/NDATA/NDEATH/DBIRTH/DDATA/DDEATH/NCMD/DCMD).

    Raises DecodeError, naming byte offset and field, for anything that is not a well-formed payload:
    truncation, invalid UTF-8, a known field with the wrong wire type, an unknown datatype, a value that does
    not fit its datatype. Unknown fields are skipped (protobuf's forward-compatibility rule).
    """
    buf = bytes(data)
    timestamp = seq = None
    uuid = None
    metrics: list[Metric] = []
    for number, wire, a, b, at in _fields(buf, 0, len(buf), "Payload", _PAYLOAD_FIELDS):
        if number == 2:
            if wire != 2:
                raise _wire_error(wire, 2, at, "Payload.metrics")
            metrics.append(_metric(buf, a, b, len(metrics)))
        elif number in {1, 3}:
            if wire != 0:
                raise _wire_error(wire, 0, at, _label("Payload", _PAYLOAD_FIELDS, number))
            if number == 1:
                timestamp = a
            else:
                seq = a
        elif number in {4, 5}:
            if wire != 2:
                raise _wire_error(wire, 2, at, _label("Payload", _PAYLOAD_FIELDS, number))
            if number == 4:
                uuid = _text(buf, a, b, "Payload", _PAYLOAD_FIELDS, 4)
    return Payload(timestamp, seq, uuid, metrics)


def _scalar(buf: bytes, kind: int, a: int, b: int, where: str, names: dict[int, str], number: int) -> Any:
    """The raw value of a scalar oneof member: ``kind`` 0-5 = int, long, float, double, bool, string."""
    if kind == 0:
        return a & _MASK32  # uint32: protobuf keeps the low 32 bits of a longer varint
    if kind == 1:
        return a
    if kind == 2:
        return _FLOAT32.unpack_from(buf, a)[0]
    if kind == 3:
        return _FLOAT64.unpack_from(buf, a)[0]
    if kind == 4:
        return a != 0
    return _text(buf, a, b, where, names, number)


_FLOAT32: Final = struct.Struct("<f")
_FLOAT64: Final = struct.Struct("<d")


def _metric(buf: bytes, start: int, end: int, index: int) -> Metric:
    where = f"Payload.metrics[{index}]"
    name = alias = timestamp = None
    datatype, value_at = DataType.Unknown, start
    is_null = historical = transient = False
    raw: Any = None
    properties: dict[str, Any] = {}
    for number, wire, a, b, at in _fields(buf, start, end, where, _METRIC_FIELDS):
        expected = _METRIC_WIRES.get(number)
        if expected is None:
            continue
        if wire != expected:
            raise _wire_error(wire, expected, at, _label(where, _METRIC_FIELDS, number))
        if number >= 10:
            if number <= 15:
                raw, value_at = _scalar(buf, number - 10, a, b, where, _METRIC_FIELDS, number), at
            elif number <= 18:
                raw, value_at = buf[a:b], at  # bytes, File, arrays; DataSet/Template kept as raw protobuf
        elif number == 1:
            name = _text(buf, a, b, where, _METRIC_FIELDS, 1)
        elif number == 2:
            alias = a
        elif number == 3:
            timestamp = a
        elif number == 4:
            datatype = _datatype(a, at, where, _METRIC_FIELDS, 4)
        elif number == 5:
            historical = a != 0
        elif number == 6:
            transient = a != 0
        elif number == 7:
            is_null = a != 0
        elif number == 9:
            properties = _property_set(buf, a, b, f"{where}.properties", 1)
    if is_null:
        value = None
    elif raw is None or datatype is DataType.Unknown:
        value = raw
    else:
        value = _typed(datatype, raw, value_at, where)
    return Metric(name, alias, timestamp, datatype, is_null, value, properties, historical, transient)


def _property_set(buf: bytes, start: int, end: int, where: str, depth: int) -> dict[str, Any]:
    """A PropertySet as a dict (``tck-id-payloads-propertyset-keys-array-size``: as many keys as values)."""
    if depth > _MAX_DEPTH:
        raise _fail(f"PropertySets nested deeper than {_MAX_DEPTH}", start, where)
    keys: list[str] = []
    values: list[Any] = []
    for number, wire, a, b, at in _fields(buf, start, end, where, _SET_FIELDS):
        if number in {1, 2}:
            label = f"{where}.{_SET_FIELDS[number]}[{len(keys) if number == 1 else len(values)}]"
            if wire != 2:
                raise _wire_error(wire, 2, at, label)
            if number == 1:
                keys.append(_text(buf, a, b, where, _SET_FIELDS, 1))
            else:
                values.append(_property_value(buf, a, b, label, depth))
    if len(keys) != len(values):
        raise _fail(f"PropertySet has {len(keys)} keys but {len(values)} values", start, where)
    return dict(zip(keys, values, strict=True))


def _property_value(buf: bytes, start: int, end: int, where: str, depth: int) -> Any:
    datatype, value_at = DataType.Unknown, start
    is_null = False
    raw: Any = None
    for number, wire, a, b, at in _fields(buf, start, end, where, _VALUE_FIELDS):
        expected = _VALUE_WIRES.get(number)
        if expected is None:
            continue
        if wire != expected:
            raise _wire_error(wire, expected, at, _label(where, _VALUE_FIELDS, number))
        if number == 1:
            datatype = _datatype(a, at, where, _VALUE_FIELDS, 1)
        elif number == 2:
            is_null = a != 0
        elif number <= 8:
            raw, value_at = _scalar(buf, number - 3, a, b, where, _VALUE_FIELDS, number), at
        elif number == 9:
            raw, value_at = _property_set(buf, a, b, f"{where}.propertyset_value", depth + 1), at
        elif number == 10:
            raw, value_at = _property_set_list(buf, a, b, f"{where}.propertysets_value", depth + 1), at
    if is_null:
        return None
    if raw is None or datatype is DataType.Unknown:
        return raw
    return _typed(datatype, raw, value_at, where)


def _property_set_list(buf: bytes, start: int, end: int, where: str, depth: int) -> list[dict[str, Any]]:
    sets: list[dict[str, Any]] = []
    for number, wire, a, b, at in _fields(buf, start, end, where, _LIST_FIELDS):
        if number == 1:
            label = f"{where}.propertyset[{len(sets)}]"
            if wire != 2:
                raise _wire_error(wire, 2, at, label)
            sets.append(_property_set(buf, a, b, label, depth))
    return sets


# --- datatypes ---------------------------------------------------------------------------------------------

_SIGNED: Final = {DataType.Int8: 8, DataType.Int16: 16, DataType.Int32: 32, DataType.Int64: 64}
_UNSIGNED: Final = {DataType.UInt8: 8, DataType.UInt16: 16, DataType.UInt32: 32, DataType.UInt64: 64,
                    DataType.DateTime: 64}
_STRINGS: Final = frozenset({DataType.String, DataType.Text, DataType.UUID})
_BYTES: Final = frozenset({DataType.Bytes, DataType.File, DataType.DataSet, DataType.Template})
_PACKED: Final = {DataType.Int8Array: "b", DataType.Int16Array: "h", DataType.Int32Array: "i",
                  DataType.Int64Array: "q", DataType.UInt8Array: "B", DataType.UInt16Array: "H",
                  DataType.UInt32Array: "I", DataType.UInt64Array: "Q", DataType.FloatArray: "f",
                  DataType.DoubleArray: "d", DataType.DateTimeArray: "Q"}


def _signed(raw: int, bits: int, at: int | None, where: str) -> int:
    """Spec 6.4.16: Int8/16/32 travel in a uint32, Int64 in a uint64, as two's complement.

    Accepted: the N-bit pattern (``0xFF`` for Int8 -1) or the pattern sign-extended to 32 or 64 bits
    (``0xFFFFFFFF``, what Tahu's Java ``setIntValue((int) byteValue)`` writes); anything else does not fit.
    """
    if raw < 1 << bits:
        return raw - (1 << bits) if raw >> (bits - 1) else raw
    for width in (32, 64):
        if bits < width and (1 << width) - (1 << (bits - 1)) <= raw < 1 << width:
            return raw - (1 << width)
    raise _fail(f"{raw} does not fit a signed {bits}-bit integer", at, where)


_SIMPLE: Final[dict[DataType, type]] = {
    DataType.Float: float, DataType.Double: float, DataType.Boolean: bool, DataType.String: str,
    DataType.Text: str, DataType.UUID: str, DataType.Bytes: bytes, DataType.File: bytes, DataType.DataSet: bytes,
    DataType.Template: bytes, DataType.PropertySet: dict, DataType.PropertySetList: list,
}


def _typed(datatype: DataType, raw: Any, at: int | None, where: str) -> Any:
    """The raw wire value read as ``datatype`` (spec 6.4.16 "Data Types"); DecodeError when it does not fit.

    ``where`` gets the datatype appended only when an error is raised (this runs once per metric).
    """
    expected = _SIMPLE.get(datatype)
    if expected is not None:
        if type(raw) is expected:
            return raw
        raise _fail(f"expected a {expected.__name__} value, got {type(raw).__name__}", at,
                    f"{where} ({datatype.name})")
    bits = _SIGNED.get(datatype)
    if bits is not None or datatype in _UNSIGNED:
        if type(raw) is not int:
            raise _fail(f"expected an integer value, got {type(raw).__name__}", at, f"{where} ({datatype.name})")
        if bits is not None:
            return _signed(raw, bits, at, f"{where} ({datatype.name})") if raw >> (bits - 1) else raw
        if raw >= 1 << _UNSIGNED[datatype]:
            raise _fail(f"{raw} does not fit an unsigned {_UNSIGNED[datatype]}-bit integer", at,
                        f"{where} ({datatype.name})")
        return raw
    if type(raw) is not bytes:
        raise _fail(f"expected bytes_value for an array, got {type(raw).__name__}", at, f"{where} ({datatype.name})")
    return _array(datatype, raw, at, f"{where} ({datatype.name})")


def _array(datatype: DataType, raw: bytes, at: int | None, where: str) -> list[Any]:
    """Spec 6.4.17 array types: packed little-endian values in ``bytes_value``.

    BooleanArray is a uint32 LE count followed by the bits, most significant bit first; StringArray is
    NUL-terminated UTF-8 strings. (The spec's FloatArray/DoubleArray examples show big-endian bytes; the
    normative sentence says little-endian, which is what Tahu writes and what is implemented here.)
    """
    if datatype is DataType.BooleanArray:
        if len(raw) < 4:
            raise _fail("BooleanArray shorter than its 4-byte count", at, where)
        count = int.from_bytes(raw[:4], "little")
        if len(raw) != 4 + (count + 7) // 8:
            raise _fail(f"BooleanArray of {count} values needs {(count + 7) // 8} bytes, has {len(raw) - 4}",
                        at, where)
        return [bool(raw[4 + i // 8] & (0x80 >> (i % 8))) for i in range(count)]
    if datatype is DataType.StringArray:
        if raw and raw[-1] != 0:
            raise _fail("StringArray does not end with a NUL", at, where)
        try:
            return [part.decode() for part in raw[:-1].split(b"\0")] if raw else []
        except UnicodeDecodeError as exc:
            raise _fail(f"StringArray has invalid UTF-8 ({exc.reason})", at, where) from None
    code = _PACKED[datatype]
    size = struct.calcsize(code)
    if len(raw) % size:
        raise _fail(f"{datatype.name} of {len(raw)} bytes is not a multiple of {size}", at, where)
    return list(struct.unpack(f"<{len(raw) // size}{code}", raw))


# --- wire-format writer ------------------------------------------------------------------------------------


def _put_varint(out: bytearray, value: int) -> None:
    if not 0 <= value <= _MASK64:
        raise ValueError(f"{value} does not fit a protobuf uint64 varint")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_key(out: bytearray, number: int, wire: int) -> None:
    _put_varint(out, number << 3 | wire)


def _put_bytes(out: bytearray, number: int, content: bytes) -> None:
    _put_key(out, number, 2)
    _put_varint(out, len(content))
    out += content


def encode_payload(payload: Payload) -> bytes:
    """Encode a Payload as Sparkplug B protobuf (the inverse of :func:`decode_payload`).

    For the project's own generators and tests. A value that does not fit its datatype raises ValueError or
    TypeError (a programming error, not bad input). Signed Int8/16/32 are written sign-extended to 32 bits,
    Int64 as 64-bit two's complement, as Tahu does.
    """
    out = bytearray()
    if payload.timestamp_ms is not None:
        _put_key(out, 1, 0)
        _put_varint(out, payload.timestamp_ms)
    for metric in payload.metrics:
        _put_bytes(out, 2, _encode_metric(metric))
    if payload.seq is not None:
        _put_key(out, 3, 0)
        _put_varint(out, payload.seq)
    if payload.uuid is not None:
        _put_bytes(out, 4, payload.uuid.encode())
    return bytes(out)


def _encode_metric(metric: Metric) -> bytes:
    out = bytearray()
    if metric.name is not None:
        _put_bytes(out, 1, metric.name.encode())
    for number, number_value in ((2, metric.alias), (3, metric.timestamp_ms)):
        if number_value is not None:
            _put_key(out, number, 0)
            _put_varint(out, number_value)
    if metric.datatype is not DataType.Unknown:
        _put_key(out, 4, 0)
        _put_varint(out, int(metric.datatype))
    for number, flag in ((5, metric.is_historical), (6, metric.is_transient), (7, metric.is_null)):
        if flag:
            _put_key(out, number, 0)
            out.append(1)
    if metric.properties:
        _put_bytes(out, 9, _encode_property_set(metric.properties))
    if not metric.is_null and metric.value is not None:
        _put_value(out, metric.datatype, metric.value, 10)
    return bytes(out)


def _put_value(out: bytearray, datatype: DataType, value: Any, int_field: int) -> None:
    """Write ``value`` into the oneof member its datatype uses (field numbers relative to ``int_field``)."""
    if datatype is DataType.Unknown:
        datatype = _natural_type(value)
    if datatype in _SIGNED or datatype in _UNSIGNED:
        if type(value) is not int:
            raise TypeError(f"{datatype.name} needs an int, got {type(value).__name__}")
        bits = _SIGNED.get(datatype) or _UNSIGNED[datatype]
        low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if datatype in _SIGNED else (0, 1 << bits)
        if not low <= value < high:
            raise ValueError(f"{value} does not fit {datatype.name}")
        wide = bits == 64 or datatype is DataType.DateTime
        _put_key(out, int_field + wide, 0)
        _put_varint(out, value & (_MASK64 if wide else _MASK32))
    elif datatype is DataType.Float:
        _put_key(out, int_field + 2, 5)
        out += struct.pack("<f", value)
    elif datatype is DataType.Double:
        _put_key(out, int_field + 3, 1)
        out += struct.pack("<d", value)
    elif datatype is DataType.Boolean:
        _put_key(out, int_field + 4, 0)
        out.append(1 if value else 0)
    elif datatype in _STRINGS:
        if not isinstance(value, str):
            raise TypeError(f"{datatype.name} needs a str, got {type(value).__name__}")
        _put_bytes(out, int_field + 5, value.encode())
    elif datatype is DataType.DataSet or datatype is DataType.Template:
        _put_bytes(out, 17 if datatype is DataType.DataSet else 18, bytes(value))
    elif datatype in _BYTES:
        _put_bytes(out, int_field + 6, bytes(value))
    elif datatype is DataType.PropertySet:
        _put_bytes(out, 9, _encode_property_set(value))
    elif datatype is DataType.PropertySetList:
        _put_bytes(out, 10, b"".join(_length_prefixed(1, _encode_property_set(item)) for item in value))
    else:
        _put_bytes(out, int_field + 6, _encode_array(datatype, value))


def _natural_type(value: Any) -> DataType:
    """The datatype a Python value is written as when none is given (also used for property values)."""
    if isinstance(value, bool):
        return DataType.Boolean
    if isinstance(value, int):
        return DataType.Int64 if value < 0 else DataType.UInt64
    if isinstance(value, float):
        return DataType.Double
    if isinstance(value, str):
        return DataType.String
    if isinstance(value, bytes):
        return DataType.Bytes
    if isinstance(value, dict):
        return DataType.PropertySet
    if isinstance(value, list):
        return DataType.PropertySetList
    raise TypeError(f"no Sparkplug datatype for {type(value).__name__}")


def _length_prefixed(number: int, content: bytes) -> bytes:
    out = bytearray()
    _put_bytes(out, number, content)
    return bytes(out)


def _encode_array(datatype: DataType, values: list[Any]) -> bytes:
    if datatype is DataType.BooleanArray:
        bits = bytearray((len(values) + 7) // 8)
        for i, flag in enumerate(values):
            if flag:
                bits[i // 8] |= 0x80 >> (i % 8)
        return len(values).to_bytes(4, "little") + bytes(bits)
    if datatype is DataType.StringArray:
        if any("\0" in text for text in values):
            raise ValueError("a StringArray element contains NUL, its terminator")
        return b"".join(text.encode() + b"\0" for text in values)
    code = _PACKED.get(datatype)
    if code is None:
        raise ValueError(f"cannot encode a {datatype.name} metric value")
    try:
        return struct.pack(f"<{len(values)}{code}", *values)
    except struct.error as exc:
        raise ValueError(f"{datatype.name}: {exc}") from None


def _encode_property_set(properties: dict[str, Any]) -> bytes:
    out = bytearray()
    for key in properties:
        _put_bytes(out, 1, key.encode())
    for value in properties.values():
        item = bytearray()
        if value is None:
            _put_key(item, 2, 0)
            item.append(1)
        else:
            datatype = _natural_type(value)
            _put_key(item, 1, 0)
            _put_varint(item, int(datatype))
            _put_value(item, datatype, value, 3)
        _put_bytes(out, 2, bytes(item))
    return bytes(out)


# --- sessions ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observation:
    """What one message means for its edge node's session.

    ``verdict``:
    - ``ok`` / ``gap`` / ``duplicate``: the node's ``seq`` (shared by NDATA, DBIRTH, DDATA, DDEATH) followed
      its predecessor, skipped ``missing`` messages after ``expected_seq``, or repeated a recent message;
    - ``before_birth``: NDATA/DDATA/DBIRTH/DDEATH from a node with no live NBIRTH; aliases cannot be resolved
      (``unresolved_aliases``) and the host should request a rebirth (NCMD ``Node Control/Rebirth``);
    - ``birth`` / ``rebirth``: the first / a later NBIRTH: ``seq`` and alias tables start afresh;
    - ``death`` / ``stale_death``: an NDEATH whose ``bdSeq`` matches the current session (node and its devices
      go offline) / does not (an old will message arriving after a newer NBIRTH: ignored);
    - ``unsequenced``: NCMD/DCMD/STATE (they carry no ``seq``, ``tck-id-payloads-ncmd-seq``), or a
      message whose ``seq`` is missing or outside 0-255 (see ``problems``).

    ``metrics`` holds every metric with a name (given, or resolved from its alias), values typed with the
    birth certificate's datatype when the message left it out. ``problems`` lists spec violations that did
    not stop the message (a birth without ``bdSeq``, a value that does not fit its birth datatype, ...).
    """

    verdict: Verdict
    metrics: tuple[Metric, ...] = ()
    unresolved_aliases: tuple[int, ...] = ()
    expected_seq: int | None = None
    missing: int = 0
    node_online: bool = False
    device_online: bool | None = None
    bd_seq: int | None = None
    problems: tuple[str, ...] = ()


@dataclass(slots=True)
class _Scope:
    """The metric definitions of one birth certificate (an NBIRTH or a DBIRTH): alias and name → datatype."""

    by_alias: dict[int, tuple[str, DataType]] = field(default_factory=dict)
    by_name: dict[str, DataType] = field(default_factory=dict)
    online: bool = True


@dataclass(slots=True)
class _Node:
    bd_seq: int | None
    birth: tuple[int | None, int | None]  # (seq, timestamp) of the NBIRTH, to see it redelivered
    last_seq: int | None
    recent: deque[tuple[int, int | None]]
    scope: _Scope
    devices: OrderedDict[str, _Scope]
    born: bool = True


def _birth_scope(metrics: list[Metric], problems: list[str]) -> _Scope:
    scope = _Scope()
    for metric in metrics:
        if metric.name is None:
            problems.append(f"birth metric with alias {metric.alias} has no name")
            continue
        scope.by_name[metric.name] = metric.datatype
        if metric.alias is not None:
            if metric.alias in scope.by_alias:  # tck-id-payloads-alias-uniqueness
                problems.append(f"alias {metric.alias} names both {scope.by_alias[metric.alias][0]!r} "
                                f"and {metric.name!r}; the later wins")
            scope.by_alias[metric.alias] = (metric.name, metric.datatype)
    return scope


def _bd_seq(metrics: list[Metric]) -> int | None:
    """The ``bdSeq`` metric (``tck-id-payloads-nbirth-bdseq``, ``tck-id-payloads-ndeath-bdseq``)."""
    for metric in metrics:
        if metric.name == "bdSeq" and type(metric.value) is int:
            return metric.value
    return None


def _resolve(metrics: list[Metric], scope: _Scope | None,
             problems: list[str]) -> tuple[tuple[Metric, ...], tuple[int, ...]]:
    """Names for alias-only metrics and datatypes for untyped ones, from the birth certificate's scope."""
    named: list[Metric] = []
    unresolved: list[int] = []
    for metric in metrics:
        if metric.name is not None and metric.datatype is not DataType.Unknown:
            named.append(metric)
            continue
        definition: tuple[str, DataType] | None = None
        if scope is not None:
            if metric.name is not None:
                known = scope.by_name.get(metric.name)
                definition = (metric.name, known) if known is not None else None
            elif metric.alias is not None:
                definition = scope.by_alias.get(metric.alias)
        if definition is None:
            if metric.name is not None:
                named.append(metric)  # a name always resolves; its value stays as on the wire
            elif metric.alias is not None:
                unresolved.append(metric.alias)
            else:
                problems.append("a metric has neither name nor alias")
            continue
        name, datatype = definition
        value = metric.value
        if metric.datatype is DataType.Unknown and value is not None and datatype is not DataType.Unknown:
            try:
                value = _typed(datatype, value, None, f"metric {name!r} as in its birth certificate")
            except DecodeError as exc:
                problems.append(str(exc))
                datatype = DataType.Unknown
        elif metric.datatype is not DataType.Unknown:
            datatype = metric.datatype
        named.append(Metric(name, metric.alias, metric.timestamp_ms, datatype, metric.is_null, value,
                            metric.properties, metric.is_historical, metric.is_transient))
    return tuple(named), tuple(unresolved)


class SparkplugSessions:
    """The host-application view of every edge node of one integration, bounded and I/O-free.

    Rules implemented (Sparkplug 3.0):
    - ``seq`` (``tck-id-payloads-sequence-num-incrementing``): every message of an edge node after its
      NBIRTH, node- or device-level, carries the next ``seq`` mod 256, so 255 → 0 is *not* a gap. The NBIRTH
      sets the base. Older 3.0 text requires NBIRTH ``seq`` = 0; current text (``tck-id-payloads-nbirth-seq``)
      allows 0-255 and the UMH vectors' nodes continue from whatever the NBIRTH had, so any NBIRTH ``seq`` is
      taken as the base.
    - a missing ``seq`` (``tck-id-payloads-sequence-num-always-included``) is read as 0 in an NBIRTH and
      where 0 is due (after 255): proto3-style encoders omit zero-valued fields, and the UMH production
      capture shows exactly that (NDATA without ``seq`` between 255 and 1). Elsewhere it is ``unsequenced``.
    - duplicates vs. wrap: ``seq`` alone cannot tell a redelivered message from one 256 messages later (the
      UMH production capture's "76 duplicate seqs" are exactly that: wraps, its stream is otherwise
      consecutive). A message is a ``duplicate`` only when its ``(seq, payload timestamp)`` equals one of the
      node's last ``recent_window`` messages; the same ``seq`` with another timestamp is a ``gap`` of 255.
      Duplicates change no state; the caller filters them with a stated reason. Deduplicating on ``seq``
      alone is the bug the UMH report (ENG-3720) describes: it dropped valid data.
    - aliases (``tck-id-payloads-alias-birth-requirement``, ``-alias-data-cmd-requirement``): NBIRTH defines
      the node's aliases, each DBIRTH its device's; DATA and CMD metrics are resolved against them, and
      typed with the birth datatype when they omit theirs (``tck-id-payloads-metric-datatype-not-req``).
    - NBIRTH starts a new session: ``seq``, aliases and devices are reset and the ``bdSeq`` metric recorded.
      An NDEATH whose ``bdSeq`` differs from the session's is a stale will message and is ignored; a matching
      one marks the node and all its devices offline
      (``tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-offline``, ``-devices-
      offline``). DDEATH marks its device offline. After a death, data is ``before_birth`` until the next
      NBIRTH.
    - Bounded: at most ``max_nodes`` edge nodes (least recently active evicted; an evicted node's next data
      is ``before_birth`` until it rebirths) and ``max_devices`` devices per node (oldest DBIRTH evicted).
      Alias tables are bounded by the payload size cap of the transport.
    """

    def __init__(self, *, max_nodes: int = 10_000, max_devices: int = 1_000, recent_window: int = 16) -> None:
        if max_nodes < 1 or max_devices < 1 or recent_window < 1:
            raise ValueError("max_nodes, max_devices and recent_window must be at least 1")
        self.max_nodes = max_nodes
        self.max_devices = max_devices
        self.recent_window = recent_window
        self._nodes: OrderedDict[tuple[str, str], _Node] = OrderedDict()

    def __len__(self) -> int:
        """How many edge nodes are tracked (never more than ``max_nodes``)."""
        return len(self._nodes)

    def node_online(self, group_id: str, edge_node_id: str) -> bool:
        """Whether the edge node has a live NBIRTH (no matching NDEATH since)."""
        node = self._nodes.get((group_id, edge_node_id))
        return node is not None and node.born

    def device_online(self, group_id: str, edge_node_id: str, device_id: str) -> bool:
        """Whether the device has a DBIRTH in the node's live session and no DDEATH since."""
        node = self._nodes.get((group_id, edge_node_id))
        scope = node.devices.get(device_id) if node is not None and node.born else None
        return scope is not None and scope.online

    def observe(self, topic: SparkplugTopic, payload: Payload) -> Observation:
        """Update the session with one message and say what it means (see :class:`Observation`)."""
        kind = topic.message_type
        key = (topic.group_id, topic.edge_node_id)
        problems: list[str] = []
        if kind == "NBIRTH":
            return self._birth(key, payload, problems)
        if kind == "NDEATH":
            return self._death(key, payload, problems)
        node = self._nodes.get(key)
        live = node if node is not None and node.born else None
        device = topic.device_id
        if kind in ("NCMD", "DCMD", "STATE"):
            scope = _scope_of(live, device)
            metrics, unresolved = _resolve(payload.metrics, scope, problems)
            return Observation("unsequenced", metrics, unresolved, node_online=live is not None,
                               device_online=_device_state(live, device), problems=tuple(problems))
        if live is None:
            metrics, unresolved = _resolve(payload.metrics, None, problems)
            if unresolved:
                problems.append(f"aliases {list(unresolved)} cannot be resolved: no NBIRTH seen for "
                                f"{topic.group_id}/{topic.edge_node_id}")
            return Observation("before_birth", metrics, unresolved, problems=tuple(problems))
        self._nodes.move_to_end(key)
        verdict, expected, missing = self._sequence(live, payload, problems)
        if verdict != "duplicate":
            if kind == "DBIRTH" and device is not None:
                live.devices[device] = _birth_scope(payload.metrics, problems)
                live.devices.move_to_end(device)
                while len(live.devices) > self.max_devices:
                    live.devices.popitem(last=False)
            elif kind == "DDEATH" and device is not None:
                live.devices[device] = _Scope(online=False)
        scope = _scope_of(live, device)
        if kind == "DDATA" and scope is None:
            problems.append(f"no DBIRTH seen for device {device!r}")
        metrics, unresolved = _resolve(payload.metrics, scope, problems)
        return Observation(verdict, metrics, unresolved, expected, missing, True, _device_state(live, device),
                           problems=tuple(problems))

    def _sequence(self, node: _Node, payload: Payload, problems: list[str]) -> tuple[Verdict, int | None, int]:
        seq = payload.seq
        if seq is None and node.last_seq == 255:
            # proto3 encoders leave out fields equal to 0: the UMH capture has NDATA without seq exactly
            # between 255 and 1. Only where 0 is due is an absent seq read as 0.
            problems.append("seq absent where 0 is due: read as 0 (an encoder that omits zero fields)")
            seq = 0
        if seq is None or seq > 255:
            # tck-id-payloads-sequence-num-always-included: a message without a usable seq cannot be placed.
            problems.append("no seq" if seq is None else f"seq {seq} is outside 0-255")
            return "unsequenced", None, 0
        stamp = (seq, payload.timestamp_ms)
        if stamp in node.recent:
            return "duplicate", None, 0
        node.recent.append(stamp)
        last, node.last_seq = node.last_seq, seq
        if last is None:  # the NBIRTH had no seq: this message sets the base
            return "ok", None, 0
        expected = (last + 1) % 256
        if seq == expected:
            return "ok", expected, 0
        return "gap", expected, (seq - expected) % 256

    def _birth(self, key: tuple[str, str], payload: Payload, problems: list[str]) -> Observation:
        bd_seq = _bd_seq(payload.metrics)
        if bd_seq is None:
            problems.append("NBIRTH without a bdSeq metric: NDEATHs cannot be matched to it")
        if payload.seq is None:
            problems.append("NBIRTH without seq: read as 0 (an encoder that omits zero fields)")
        node = self._nodes.get(key)
        birth = (payload.seq, payload.timestamp_ms)
        scope = _birth_scope(payload.metrics, problems)
        if (node is not None and node.born and node.bd_seq == bd_seq and node.birth == birth
                and node.scope.by_alias == scope.by_alias and node.scope.by_name == scope.by_name):
            # The same NBIRTH again (QoS 1 redelivery): resetting seq now would turn later data into gaps.
            # A real rebirth has a new timestamp or other definitions.
            return Observation("duplicate", tuple(payload.metrics), node_online=True, bd_seq=bd_seq,
                               problems=tuple(problems))
        seq = 0 if payload.seq is None else payload.seq if payload.seq <= 255 else None
        recent: deque[tuple[int, int | None]] = deque(maxlen=self.recent_window)
        if seq is not None:
            recent.append((seq, payload.timestamp_ms))
        self._nodes[key] = _Node(bd_seq, birth, seq, recent, scope, OrderedDict())
        self._nodes.move_to_end(key)
        while len(self._nodes) > self.max_nodes:
            self._nodes.popitem(last=False)
        metrics, _ = _resolve(payload.metrics, scope, problems)
        return Observation("birth" if node is None else "rebirth", metrics, node_online=True, bd_seq=bd_seq,
                           problems=tuple(problems))

    def _death(self, key: tuple[str, str], payload: Payload, problems: list[str]) -> Observation:
        bd_seq = _bd_seq(payload.metrics)
        node = self._nodes.get(key)
        metrics = tuple(m for m in payload.metrics if m.name is not None)
        if node is None:
            return Observation("death", metrics, bd_seq=bd_seq, problems=tuple(problems))
        matches = node.bd_seq is None or bd_seq == node.bd_seq
        if not node.born:
            # Already offline: the will message after an explicit NDEATH repeats its bdSeq; spec "Edge Node
            # Session Termination": it MUST be ignored.
            return Observation("duplicate" if matches else "stale_death", metrics, bd_seq=bd_seq,
                               problems=tuple(problems))
        if not matches:
            problems.append(f"NDEATH bdSeq {bd_seq} does not match the session's bdSeq {node.bd_seq}: ignored")
            return Observation("stale_death", metrics, node_online=True, bd_seq=bd_seq, problems=tuple(problems))
        node.born = False
        node.scope = _Scope(online=False)
        node.devices.clear()  # every device of the node is offline with it
        return Observation("death", metrics, bd_seq=bd_seq, problems=tuple(problems))


def _scope_of(node: _Node | None, device: str | None) -> _Scope | None:
    if node is None:
        return None
    return node.scope if device is None else node.devices.get(device)


def _device_state(node: _Node | None, device: str | None) -> bool | None:
    if device is None or node is None:
        return None
    scope = node.devices.get(device)
    return None if scope is None else scope.online
