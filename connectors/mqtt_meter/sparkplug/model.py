"""Sparkplug B topics and the payload model (sparkplug_b.proto's Payload and Metric as dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final, Literal

from inlet.core.errors import DecodeError

NAMESPACE: Final = "spBv1.0"
"""The Sparkplug B topic namespace (spec 4.1.1.1)."""

MessageType = Literal["NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD", "STATE"]

Verdict = Literal["ok", "gap", "duplicate", "before_birth", "birth", "rebirth", "death", "stale_death", "unsequenced"]
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

_NODE_KINDS: Final[dict[str, MessageType]] = {"NBIRTH": "NBIRTH", "NDEATH": "NDEATH", "NDATA": "NDATA", "NCMD": "NCMD"}
_DEVICE_KINDS: Final[dict[str, MessageType]] = {
    "DBIRTH": "DBIRTH",
    "DDEATH": "DDEATH",
    "DDATA": "DDATA",
    "DCMD": "DCMD",
}


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
