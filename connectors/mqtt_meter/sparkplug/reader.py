"""The protobuf wire-format reader for sparkplug_b.proto: every failure a DecodeError naming offset and field."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, Final

from inlet.connectors.mqtt_meter.sparkplug.datatypes import MASK32, MASK64, fail, typed
from inlet.connectors.mqtt_meter.sparkplug.model import DataType, Metric, Payload
from inlet.core.errors import DecodeError

# --- wire-format reader ------------------------------------------------------------------------------------

_MAX_DEPTH: Final = 8
"""PropertySets nest; bounding the depth keeps hostile input from exhausting the Python stack."""
_WIRE_NAMES: Final = {0: "varint", 1: "64-bit", 2: "length-delimited", 5: "32-bit"}

_PAYLOAD_FIELDS: Final = {1: "timestamp", 2: "metrics", 3: "seq", 4: "uuid", 5: "body"}
_METRIC_FIELDS: Final = {
    1: "name",
    2: "alias",
    3: "timestamp",
    4: "datatype",
    5: "is_historical",
    6: "is_transient",
    7: "is_null",
    8: "metadata",
    9: "properties",
    10: "int_value",
    11: "long_value",
    12: "float_value",
    13: "double_value",
    14: "boolean_value",
    15: "string_value",
    16: "bytes_value",
    17: "dataset_value",
    18: "template_value",
    19: "extension_value",
}
_SET_FIELDS: Final = {1: "keys", 2: "values"}
_VALUE_FIELDS: Final = {
    1: "type",
    2: "is_null",
    3: "int_value",
    4: "long_value",
    5: "float_value",
    6: "double_value",
    7: "boolean_value",
    8: "string_value",
    9: "propertyset_value",
    10: "propertysets_value",
    11: "extension_value",
}
_LIST_FIELDS: Final = {1: "propertyset"}

# The wire type each known field must have (proto2 types of sparkplug_b.proto).
_METRIC_WIRES: Final = {
    1: 2,
    2: 0,
    3: 0,
    4: 0,
    5: 0,
    6: 0,
    7: 0,
    8: 2,
    9: 2,
    10: 0,
    11: 0,
    12: 5,
    13: 1,
    14: 0,
    15: 2,
    16: 2,
    17: 2,
    18: 2,
    19: 2,
}
_VALUE_WIRES: Final = {1: 0, 2: 0, 3: 0, 4: 0, 5: 5, 6: 1, 7: 0, 8: 2, 9: 2, 10: 2, 11: 2}


def _label(where: str, names: dict[int, str], number: int) -> str:
    """``Payload.metrics[2].name``: built only when an error is raised, never on the hot path."""
    return f"{where}.{names.get(number, f'field {number}')}"


def _varint(
    buf: bytes, pos: int, end: int, where: str, names: dict[int, str] | None = None, number: int = 0
) -> tuple[int, int]:
    """A base-128 varint; more than 10 bytes is garbage, bits past 64 are dropped (protobuf's rule)."""
    start, result, shift = pos, 0, 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & MASK64, pos
        shift += 7
        if shift >= 70:
            raise fail("varint longer than 10 bytes", start, _label(where, names, number) if names else where)
    raise fail("truncated varint", start, _label(where, names, number) if names else where)


def _fields(
    buf: bytes, pos: int, end: int, where: str, names: dict[int, str]
) -> Iterator[tuple[int, int, int, int, int]]:
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
            raise fail(f"invalid field number {number}", at, where)
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
                raise fail(
                    f"truncated length-delimited field ({value} bytes declared, {end - pos} left)",
                    at,
                    _label(where, names, number),
                )
            yield number, 2, pos, pos + value, at
            pos += value
        elif wire in {1, 5}:
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise fail(f"truncated {_WIRE_NAMES[wire]} field", at, _label(where, names, number))
            yield number, wire, pos, 0, at
            pos += size
        else:
            raise fail(f"unsupported wire type {wire}", at, _label(where, names, number))


def _known_fields(
    buf: bytes, start: int, end: int, where: str, names: dict[int, str], wires: dict[int, int]
) -> Iterator[tuple[int, int, int, int]]:
    """:func:`_fields` of a message whose every field has one wire type: ``(field, a, b, offset)`` of the
    fields in ``wires``; unknown fields skipped (as protobuf requires), a wrong wire type an error."""
    for number, wire, a, b, at in _fields(buf, start, end, where, names):
        expected = wires.get(number)
        if expected is None:
            continue
        if wire != expected:
            raise _wire_error(wire, expected, at, _label(where, names, number))
        yield number, a, b, at


def _wire_error(wire: int, expected: int, at: int, label: str) -> DecodeError:
    return fail(f"expected a {_WIRE_NAMES[expected]} field, got {_WIRE_NAMES.get(wire, wire)}", at, label)


def _text(buf: bytes, start: int, end: int, where: str, names: dict[int, str], number: int) -> str:
    try:
        return buf[start:end].decode()
    except UnicodeDecodeError as exc:
        raise fail(f"invalid UTF-8 ({exc.reason})", start + exc.start, _label(where, names, number)) from None


_DATATYPES: Final = tuple(DataType)


def _datatype(code: int, at: int, where: str, names: dict[int, str], number: int) -> DataType:
    if code < len(_DATATYPES):
        return _DATATYPES[code]
    raise fail(f"unknown datatype {code}", at, _label(where, names, number))


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
        return a & MASK32  # uint32: protobuf keeps the low 32 bits of a longer varint
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
    for number, a, b, at in _known_fields(buf, start, end, where, _METRIC_FIELDS, _METRIC_WIRES):
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
        value = typed(datatype, raw, value_at, where)
    return Metric(name, alias, timestamp, datatype, is_null, value, properties, historical, transient)


def _property_set(buf: bytes, start: int, end: int, where: str, depth: int) -> dict[str, Any]:
    """A PropertySet as a dict (``tck-id-payloads-propertyset-keys-array-size``: as many keys as values)."""
    if depth > _MAX_DEPTH:
        raise fail(f"PropertySets nested deeper than {_MAX_DEPTH}", start, where)
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
        raise fail(f"PropertySet has {len(keys)} keys but {len(values)} values", start, where)
    return dict(zip(keys, values, strict=True))


def _property_value(buf: bytes, start: int, end: int, where: str, depth: int) -> Any:
    datatype, value_at = DataType.Unknown, start
    is_null = False
    raw: Any = None
    for number, a, b, at in _known_fields(buf, start, end, where, _VALUE_FIELDS, _VALUE_WIRES):
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
    return typed(datatype, raw, value_at, where)


def _property_set_list(buf: bytes, start: int, end: int, where: str, depth: int) -> list[dict[str, Any]]:
    sets: list[dict[str, Any]] = []
    for number, wire, a, b, at in _fields(buf, start, end, where, _LIST_FIELDS):
        if number == 1:
            label = f"{where}.propertyset[{len(sets)}]"
            if wire != 2:
                raise _wire_error(wire, 2, at, label)
            sets.append(_property_set(buf, a, b, label, depth))
    return sets
