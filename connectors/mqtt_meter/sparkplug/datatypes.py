"""Sparkplug datatypes: wire values typed by ``DataType`` (signed ints, packed arrays), failures as DecodeError."""

from __future__ import annotations

import struct
from typing import Any, Final

from inlet.connectors.mqtt_meter.sparkplug.model import DataType
from inlet.core.errors import DecodeError

# --- datatypes ---------------------------------------------------------------------------------------------

MASK32: Final = (1 << 32) - 1
MASK64: Final = (1 << 64) - 1


def fail(what: str, at: int | None, where: str) -> DecodeError:
    """The one error shape of the codec: what is wrong, at which byte, in which field."""
    place = "" if at is None else f" at byte {at}"
    return DecodeError(f"sparkplug payload: {what}{place} ({where})")


SIGNED: Final = {DataType.Int8: 8, DataType.Int16: 16, DataType.Int32: 32, DataType.Int64: 64}
UNSIGNED: Final = {
    DataType.UInt8: 8,
    DataType.UInt16: 16,
    DataType.UInt32: 32,
    DataType.UInt64: 64,
    DataType.DateTime: 64,
}
STRINGS: Final = frozenset({DataType.String, DataType.Text, DataType.UUID})
BYTES: Final = frozenset({DataType.Bytes, DataType.File, DataType.DataSet, DataType.Template})
PACKED: Final = {
    DataType.Int8Array: "b",
    DataType.Int16Array: "h",
    DataType.Int32Array: "i",
    DataType.Int64Array: "q",
    DataType.UInt8Array: "B",
    DataType.UInt16Array: "H",
    DataType.UInt32Array: "I",
    DataType.UInt64Array: "Q",
    DataType.FloatArray: "f",
    DataType.DoubleArray: "d",
    DataType.DateTimeArray: "Q",
}


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
    raise fail(f"{raw} does not fit a signed {bits}-bit integer", at, where)


_SIMPLE: Final[dict[DataType, type]] = {
    DataType.Float: float,
    DataType.Double: float,
    DataType.Boolean: bool,
    DataType.String: str,
    DataType.Text: str,
    DataType.UUID: str,
    DataType.Bytes: bytes,
    DataType.File: bytes,
    DataType.DataSet: bytes,
    DataType.Template: bytes,
    DataType.PropertySet: dict,
    DataType.PropertySetList: list,
}


def typed(datatype: DataType, raw: Any, at: int | None, where: str) -> Any:
    """The raw wire value read as ``datatype`` (spec 6.4.16 "Data Types"); DecodeError when it does not fit.

    ``where`` gets the datatype appended only when an error is raised (this runs once per metric).
    """
    expected = _SIMPLE.get(datatype)
    if expected is not None:
        if type(raw) is expected:
            return raw
        raise fail(f"expected a {expected.__name__} value, got {type(raw).__name__}", at, f"{where} ({datatype.name})")
    bits = SIGNED.get(datatype)
    if bits is not None or datatype in UNSIGNED:
        if type(raw) is not int:
            raise fail(f"expected an integer value, got {type(raw).__name__}", at, f"{where} ({datatype.name})")
        if bits is not None:
            return _signed(raw, bits, at, f"{where} ({datatype.name})") if raw >> (bits - 1) else raw
        if raw >= 1 << UNSIGNED[datatype]:
            raise fail(
                f"{raw} does not fit an unsigned {UNSIGNED[datatype]}-bit integer", at, f"{where} ({datatype.name})"
            )
        return raw
    if type(raw) is not bytes:
        raise fail(f"expected bytes_value for an array, got {type(raw).__name__}", at, f"{where} ({datatype.name})")
    return _array(datatype, raw, at, f"{where} ({datatype.name})")


def _array(datatype: DataType, raw: bytes, at: int | None, where: str) -> list[Any]:
    """Spec 6.4.17 array types: packed little-endian values in ``bytes_value``.

    BooleanArray is a uint32 LE count followed by the bits, most significant bit first; StringArray is
    NUL-terminated UTF-8 strings. (The spec's FloatArray/DoubleArray examples show big-endian bytes; the
    normative sentence says little-endian, which is what Tahu writes and what is implemented here.)
    """
    if datatype is DataType.BooleanArray:
        if len(raw) < 4:
            raise fail("BooleanArray shorter than its 4-byte count", at, where)
        count = int.from_bytes(raw[:4], "little")
        if len(raw) != 4 + (count + 7) // 8:
            raise fail(f"BooleanArray of {count} values needs {(count + 7) // 8} bytes, has {len(raw) - 4}", at, where)
        return [bool(raw[4 + i // 8] & (0x80 >> (i % 8))) for i in range(count)]
    if datatype is DataType.StringArray:
        if raw and raw[-1] != 0:
            raise fail("StringArray does not end with a NUL", at, where)
        try:
            return [part.decode() for part in raw[:-1].split(b"\0")] if raw else []
        except UnicodeDecodeError as exc:
            raise fail(f"StringArray has invalid UTF-8 ({exc.reason})", at, where) from None
    code = PACKED[datatype]
    size = struct.calcsize(code)
    if len(raw) % size:
        raise fail(f"{datatype.name} of {len(raw)} bytes is not a multiple of {size}", at, where)
    return list(struct.unpack(f"<{len(raw) // size}{code}", raw))
