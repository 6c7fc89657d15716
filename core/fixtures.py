"""Per-integration fixtures: record an integration's upstream once, replay it offline, compare with goldens.

A fixture directory ``fixtures/<customer>/<integration>/`` holds, all as reviewable text:

- ``http.jsonl``   the upstream exchanges (``core.recording``), redacted while recording (``core.redact``:
  secrets always, PHI pseudonymised with ``INLET_PSEUDONYM_KEY`` for plugins that declare ``phi``); the auth's
  token and login requests without their body or a digest of it, so replay answers them with no secret set;
- ``mqtt.jsonl``   for a push integration, the messages it received (topic, payload, QoS, retain,
  properties, receive time), redacted the same way — a directory holds either file or both;
- ``mllp.jsonl``   for an HL7 v2 feed, the messages as received and the acknowledgements sent
  (``core.recording``), PHI pseudonymised in the HL7 text (``Redactor.hl7``); replay fails when the connector
  would now acknowledge a message differently (``inlet replay --update`` rewrites the recorded ACKs too,
  redacted as recording redacts them);
- ``shape.json``   the upstream shape the integration depends on (``core.drift``), learnt while recording;
- ``events.jsonl`` the golden events the exchanges must produce: topic, key, headers and value, in order
  (DLQ records and drift alerts included, so the expected failures are part of the contract too).

Recording and replay run the integration's real connector through the real pipeline twice — a full read,
then the incremental poll from the resulting checkpoint — so the recording covers what a running daemon
asks (an MQTT recording ends after ``idle_seconds`` quiet seconds). Replay is offline (``ReplayTransport``,
``ReplaySource``) and deterministic: events carry no wall-clock values, and receive times are the recorded ones.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson

from inlet.core.checkpoint import CheckpointStore
from inlet.core.config import LoadedIntegration
from inlet.core.drift import learn
from inlet.core.envelope import Enveloper, Event
from inlet.core.errors import ConfigError
from inlet.core.metrics import Stats
from inlet.core.mllp import MllpListener, MllpSettings
from inlet.core.mqtt import MqttMessage, MqttSettings, MqttSource
from inlet.core.pipeline import Pipeline
from inlet.core.recording import (
    MllpRecordingSource,
    MllpReplaySource,
    RecordingSource,
    RecordingTransport,
    ReplayMiss,
    ReplaySource,
    ReplayTransport,
)
from inlet.core.redact import Redactor
from inlet.core.sinks.memory import MemorySink

__all__ = ["event_doc", "event_lines", "golden_diff", "pseudonym_key", "record", "replay"]

PASSES = 2  # a full read, then the incremental poll from its checkpoint


def event_doc(event: Event) -> dict[str, Any]:
    """An event as one golden line: JSON values parsed, so the diff shows fields, not escaped strings."""
    try:
        value: Any = orjson.loads(event.value)
    except orjson.JSONDecodeError:
        value = event.value.decode("utf-8", "replace")
    return {
        "topic": event.topic,
        "key": event.key.decode("utf-8", "replace") if event.key else None,
        "headers": {k: v.decode("utf-8", "replace") for k, v in event.headers},
        "value": value,
    }


def event_lines(docs: list[dict[str, Any]]) -> list[str]:
    """Golden lines: one sorted-key JSON document per event."""
    return [orjson.dumps(d, option=orjson.OPT_SORT_KEYS).decode() + "\n" for d in docs]


async def _run(
    item: LoadedIntegration,
    transport: httpx.AsyncBaseTransport,
    sources: Callable[[MqttSettings, str], Any],
    listeners: Callable[[MllpSettings], Any] | None = None,
) -> tuple[list[Event], list[Any]]:
    """Run ``PASSES`` passes of the integration through ``transport`` / ``sources``.

    Returns its events and the raw records that decoded (the upstream's own shape, before any plugin logic).
    """
    # No connector state of the deployment (hygiene memory): a recording and its replay start from nothing.
    ctx = replace(item.context, http_transport=transport, message_source=sources, mllp_source=listeners, state_dir=None)
    connector_cls = item.plugin
    seen: list[Any] = []
    sink = MemorySink()
    with tempfile.TemporaryDirectory() as tmp:
        store = CheckpointStore(Path(tmp) / "checkpoints.sqlite")
        env = Enveloper(ctx.customer, ctx.integration)
        stats = Stats(ctx.customer, ctx.integration)
        position = None
        try:
            for _ in range(PASSES):
                async with connector_cls(ctx, item.settings) as connector:
                    original = connector.decode

                    def decode(raw: Any, _original: Callable[[Any], Any] = original) -> Any:
                        record = _original(raw)
                        seen.append(raw)
                        return record

                    connector.decode = decode  # type: ignore[method-assign]
                    # No drift check: a recording is, by definition, the shape it is checked against.
                    pipeline = Pipeline(connector, env, sink, store, stats)
                    position = await pipeline.run(position, asyncio.Event())
        finally:
            store.close()
    return sink.events, seen


def _replay_io(
    fixtures: Path,
) -> tuple[ReplayTransport, Callable[[MqttSettings, str], Any], Callable[[MllpSettings], Any]]:
    """Offline upstreams from a fixture directory: a request, subscription or listener with no recording fails."""
    http, mqtt, mllp = fixtures / "http.jsonl", fixtures / "mqtt.jsonl", fixtures / "mllp.jsonl"

    def no_mqtt(settings: MqttSettings, client_id: str) -> ReplaySource:
        return ReplaySource(mqtt)  # raises ReplayMiss naming the missing recording

    def no_mllp(settings: MllpSettings) -> MllpReplaySource:
        return MllpReplaySource(mllp)  # likewise

    pushed = mqtt.exists() or mllp.exists()
    return (
        ReplayTransport(http, missing_ok=pushed),
        ReplaySource(mqtt) if mqtt.exists() else no_mqtt,
        MllpReplaySource(mllp) if mllp.exists() else no_mllp,
    )


def _shape_docs(records: list[Any]) -> list[dict[str, Any]]:
    """What the upstream shape is learnt from: JSON objects — as records, raw JSON bytes (NDJSON lines) or
    MQTT payloads. Binary payloads (Sparkplug protobuf) have no JSON shape to learn."""
    docs = []
    for record in records:
        doc = record.payload if isinstance(record, MqttMessage) else record
        if isinstance(doc, bytes):
            try:
                doc = orjson.loads(memoryview(doc))  # exact bytes only: NDJSON lines subclass bytes
            except orjson.JSONDecodeError:
                continue
        if isinstance(doc, dict):
            docs.append(doc)
    return docs


def pseudonym_key(doing: str = "recording a healthcare feed") -> bytes:
    """The key PHI is pseudonymised with: ``INLET_PSEUDONYM_KEY`` (env only, never in the repository).

    ``doing``: what needs it, for the error.
    """
    key = os.environ.get("INLET_PSEUDONYM_KEY", "")
    if len(key) < 16:
        raise ConfigError(
            f"{doing} pseudonymises PHI with a key: set INLET_PSEUDONYM_KEY "
            "(16+ characters, kept out of the repository; the same key keeps pseudonyms stable)"
        )
    return key.encode()


def _redactor(item: LoadedIntegration, doing: str = "recording a healthcare feed") -> Redactor:
    """What a recording of ``item`` is redacted with — while recording and when ``replay --update`` rewrites it:
    secrets always, PHI pseudonymised under ``INLET_PSEUDONYM_KEY`` when the plugin declares ``phi``."""
    return Redactor(pseudonym_key(doing) if item.plugin.phi else b"secrets-only", phi=item.plugin.phi)


def record(
    item: LoadedIntegration,
    fixtures: Path,
    *,
    redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    inner: httpx.AsyncBaseTransport | None = None,
    replay_as: LoadedIntegration | None = None,
    idle_seconds: float = 3.0,
    connect_seconds: float = 10.0,
) -> int:
    """Record ``item`` against its upstream into ``fixtures``; returns the number of golden events.

    ``replay_as``: the integration as it will be replayed, when it was recorded with other settings
    (against a local test server standing in for the configured upstream). ``idle_seconds``: an MQTT or MLLP
    recording ends after this many seconds without a message (``connect_seconds`` more for the first one).

    Every exchange is redacted before it is written: secrets always, and PHI (deterministic pseudonyms)
    when the plugin declares ``phi = True``. The golden events are then made by *replaying* the written
    fixture, so they hold no PHI either and are exactly what CI will compare against.
    """
    fixtures.mkdir(parents=True, exist_ok=True)
    redactor = _redactor(item)

    def scrub(doc: dict[str, Any]) -> dict[str, Any]:
        return redactor(redact(doc) if redact is not None else doc)

    http, mqtt, mllp = fixtures / "http.jsonl", fixtures / "mqtt.jsonl", fixtures / "mllp.jsonl"
    transport = RecordingTransport(http, inner=inner, redact=scrub)
    mqtt.write_bytes(b"")
    mllp.write_bytes(b"")

    def sources(settings: MqttSettings, client_id: str) -> RecordingSource:
        return RecordingSource(MqttSource(settings, client_id), mqtt, idle_seconds=idle_seconds, redact=scrub)

    def listeners(settings: MllpSettings) -> MllpRecordingSource:
        return MllpRecordingSource(
            MllpListener(settings), mllp, idle_seconds=idle_seconds, redact=scrub, connect_seconds=connect_seconds
        )

    asyncio.run(_run(item, transport, sources, listeners))
    for path in (http, mqtt, mllp):
        if path.stat().st_size == 0:
            path.unlink()  # the integration spoke only another protocol
    events, records = _replay_checked(replay_as or item, fixtures)
    (fixtures / "shape.json").write_text(learn(_shape_docs(records)).to_json())
    (fixtures / "events.jsonl").write_text("".join(event_lines([event_doc(e) for e in events])))
    return len(events)


def _replay_checked(item: LoadedIntegration, fixtures: Path, *, update: bool = False) -> tuple[list[Event], list[Any]]:
    """Replay, then hold an MLLP replay to the recorded acknowledgements (or rewrite them, ``update``).

    Rewritten acknowledgements are redacted as recording redacts them (an ACK's error text can quote the message):
    for a ``phi`` plugin that takes the recording's ``INLET_PSEUDONYM_KEY``. Without the key, an update that
    changes no acknowledgement (MSA-1, MSA-2) keeps the recorded ones byte for byte; one that does fails.
    """
    transport, sources, listeners = _replay_io(fixtures)
    events, records = asyncio.run(_run(item, transport, sources, listeners))
    if isinstance(listeners, MllpReplaySource):
        if update:
            try:
                redactor = _redactor(item, f"`inlet replay {item.config.key} --update` of a healthcare feed's ACKs")
            except ConfigError as exc:
                if differences := listeners.ack_differences():
                    raise ConfigError(f"{exc}; acknowledgements to rewrite:\n  " + "\n  ".join(differences)) from exc
                return events, records  # no acknowledgement changed: the recorded ones stay as they are
            listeners.rewrite_acks(redact=redactor)
        elif differences := listeners.ack_differences():
            raise ReplayMiss(
                f"{item.config.key}: replaying {listeners.path} acknowledges messages differently than "
                f"recorded (senders would see this change; if intended, review it and run `inlet "
                f"replay {item.config.key} --update`):\n  " + "\n  ".join(differences)
            )
    return events, records


def replay(item: LoadedIntegration, fixtures: Path, *, update: bool = False) -> list[dict[str, Any]]:
    """Run ``item`` offline from ``fixtures``; the events it produces, as golden docs.

    An MLLP fixture's acknowledgements are checked against the recorded ones (:class:`ReplayMiss` on a
    difference) or, with ``update``, rewritten from the replay.
    """
    events, _ = _replay_checked(item, fixtures, update=update)
    return [event_doc(e) for e in events]


def golden_diff(fixtures: Path, actual: list[dict[str, Any]]) -> str:
    """A unified diff of the golden events against ``actual`` ('' when equal)."""
    path = fixtures / "events.jsonl"
    golden = path.read_text().splitlines(keepends=True) if path.exists() else []
    return "".join(difflib.unified_diff(golden, event_lines(actual), fromfile=str(path), tofile="replayed"))
