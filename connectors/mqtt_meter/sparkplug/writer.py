"""The protobuf wire-format writer for sparkplug_b.proto (the project's generators and tests)."""

from __future__ import annotations

import struct
from typing import Any

from inlet.connectors.mqtt_meter.sparkplug.datatypes import BYTES, MASK32, MASK64, PACKED, SIGNED, STRINGS, UNSIGNED
from inlet.connectors.mqtt_meter.sparkplug.model import DataType, Metric, Payload

# --- wire-format writer ------------------------------------------------------------------------------------


def _put_varint(out: bytearray, value: int) -> None:
    if not 0 <= value <= MASK64:
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
    if datatype in SIGNED or datatype in UNSIGNED:
        if type(value) is not int:
            raise TypeError(f"{datatype.name} needs an int, got {type(value).__name__}")
        bits = SIGNED.get(datatype) or UNSIGNED[datatype]
        low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if datatype in SIGNED else (0, 1 << bits)
        if not low <= value < high:
            raise ValueError(f"{value} does not fit {datatype.name}")
        wide = bits == 64 or datatype is DataType.DateTime
        _put_key(out, int_field + wide, 0)
        _put_varint(out, value & (MASK64 if wide else MASK32))
    elif datatype is DataType.Float:
        _put_key(out, int_field + 2, 5)
        out += struct.pack("<f", value)
    elif datatype is DataType.Double:
        _put_key(out, int_field + 3, 1)
        out += struct.pack("<d", value)
    elif datatype is DataType.Boolean:
        _put_key(out, int_field + 4, 0)
        out.append(1 if value else 0)
    elif datatype in STRINGS:
        if not isinstance(value, str):
            raise TypeError(f"{datatype.name} needs a str, got {type(value).__name__}")
        _put_bytes(out, int_field + 5, value.encode())
    elif datatype is DataType.DataSet or datatype is DataType.Template:
        _put_bytes(out, 17 if datatype is DataType.DataSet else 18, bytes(value))
    elif datatype in BYTES:
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
    code = PACKED.get(datatype)
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
