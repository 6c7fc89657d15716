"""Sparkplug B (Eclipse Sparkplug 3.0) for the meter-hub family: topics, payloads and per-node session state.

Four parts, all pure except the tracker's own memory (no I/O, no clock reads, no protobuf library) — modules
``model`` (topics, Payload, Metric, DataType), ``reader`` / ``writer`` (the wire format), ``datatypes`` (typing
wire values) and ``sessions``:

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

from inlet.connectors.mqtt_meter.sparkplug.model import (
    NAMESPACE,
    DataType,
    MessageType,
    Metric,
    Payload,
    SparkplugTopic,
    Verdict,
    parse_topic,
)
from inlet.connectors.mqtt_meter.sparkplug.reader import decode_payload
from inlet.connectors.mqtt_meter.sparkplug.sessions import Observation, SparkplugSessions
from inlet.connectors.mqtt_meter.sparkplug.writer import encode_payload

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
