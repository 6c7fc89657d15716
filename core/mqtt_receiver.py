"""The MQTT client in a process of its own (``receiver: process``): paho's work off the pipeline's interpreter.

Why: with ``receiver: thread`` (the default) paho's network thread decodes every packet and builds every message
in the supervisor's process, ~40 µs per message, and holds the GIL while it does: the pipeline's own work then
runs a third slower than alone (bench/bench_mqtt.py measures both). Here the same :class:`~core.mqtt.MqttSource`
runs in a child (``python -m inlet.core.mqtt_receiver``), and only whole batches cross a pipe.

What does not change: QoS 1 on the same persistent session (same client id), PUBACKs only after the sink has the
events — the parent sends the packet ids back over the pipe and the child acknowledges them — and backpressure
(the child's buffer is ``max_buffered``; a full pipe blocks the child's writer, a full buffer blocks paho's reads).

If either side dies, nothing is lost: when the parent is killed (even ``kill -9``) the child reads end-of-file
on its input and disconnects without acknowledging anything it still holds, so the broker redelivers those
messages; when the child dies, :meth:`ProcessSource.batches` raises :class:`~core.errors.UpstreamError` (the
supervisor restarts the integration, whose unacknowledged messages come back the same way). A TLS refusal the
child finds is the parent's :class:`~core.auth.AuthError`, as with the thread.

The pipe carries frames of one kind byte and a 4-byte length: the settings first (parent → child, JSON, secrets
included: a pipe to our own child, never the command line or the environment), then batches of messages
(``M``, ``marshal``: tuples of str, bytes, int, bool and JSON-like dicts) and connection state (``C``, ``D``, ``E``
with the refusal) from the child, and packet ids to acknowledge (``A``, 16-bit each) from the parent. Both ends
are this module, over a pipe private to the two processes: ``marshal`` is safe here as it would not be on data
read from the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import marshal
import os
import struct
import sys
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import structlog
from pydantic import SecretStr

from inlet.core import mqtt as mqtt_module
from inlet.core.errors import AuthError, UpstreamError
from inlet.core.logging import configure_logging, current_level
from inlet.core.mqtt import MqttMessage, MqttSettings, MqttSource
from inlet.core.secrets import known_secrets, remember

__all__ = ["ProcessSource", "main"]

log = structlog.get_logger("inlet.mqtt")

_HEADER = struct.Struct(">cI")
_MIDS = struct.Struct(">H")  # MQTT packet ids are 16-bit
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STOP_SECONDS = 10.0
_QUEUED_BATCHES = 2
"""Batches read from the child ahead of the pipeline: more would only move the child's buffer into this process."""


def _frame(kind: bytes, body: bytes) -> bytes:
    return _HEADER.pack(kind, len(body)) + body


_SECRET_FIELDS = ("password", "tls_key_password")


def _settings_document(settings: MqttSettings, client_id: str) -> bytes:
    """The child's settings, secrets as their values (the pipe is private to the two processes), and every secret
    this process knows, so that the child's log lines mask them too."""
    values = settings.model_dump(mode="json")
    for name in _SECRET_FIELDS:
        secret = getattr(settings, name, None)
        if secret is not None:
            values[name] = secret.get_secret_value()
    values["receiver"] = "thread"
    context = {k: v for k, v in structlog.contextvars.get_contextvars().items() if isinstance(v, str)}
    document = {
        "settings": values,
        "client_id": client_id,
        "log_level": current_level(),
        "log_context": context,
        "secrets": sorted(known_secrets()),
    }
    return json.dumps(document).encode()


def _child_settings(document: dict[str, Any]) -> MqttSettings:
    """The settings a child was handed: its secrets resolved already (the parent read them from env or file)."""
    remember(document["secrets"])
    values = dict(document["settings"])
    for name in _SECRET_FIELDS:
        if isinstance(values.get(name), str):
            remember([values[name]])
            values[name] = SecretStr(values[name])
    return MqttSettings.model_validate(values)


class ProcessSource:
    """A :class:`~core.mqtt.MessageSource` whose paho client runs in a child process (module docstring)."""

    def __init__(self, settings: MqttSettings, client_id: str) -> None:
        MqttSource(settings, client_id)  # the same checks at once (URL, TLS files), in this process
        self.settings = settings
        self.client_id = client_id
        self.connected = threading.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._batches: asyncio.Queue[list[MqttMessage] | BaseException] = asyncio.Queue(_QUEUED_BATCHES)
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        """Start the child and hand it the settings; it connects in the background, as the thread does."""
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "inlet.core.mqtt_receiver",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**20,  # the read buffer (asyncio pauses the pipe beyond twice this): a batch's frame in one go
        )
        assert self._process.stdin is not None
        self._process.stdin.write(_frame(b"S", _settings_document(self.settings, self.client_id)))
        self._reader = asyncio.create_task(self._read())
        log.info("mqtt receiver process started", pid=self._process.pid, client_id=self.client_id)

    async def _read(self) -> None:
        """Frames from the child, until it ends: batches to the queue, connection state to ``connected``."""
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        failure: BaseException
        try:
            while True:
                kind, size = _HEADER.unpack(await stdout.readexactly(_HEADER.size))
                body = await stdout.readexactly(size)
                if kind == b"M":
                    await self._batches.put([_message(m) for m in marshal.loads(body)])  # noqa: S302
                elif kind == b"C":
                    self.connected.set()
                elif kind == b"D":
                    self.connected.clear()
                elif kind == b"E":
                    failure = AuthError(body.decode())
                    break
        except asyncio.IncompleteReadError:
            code = await self._process.wait()
            failure = UpstreamError(f"the MQTT receiver process ended (exit code {code}); the integration restarts")
        self.connected.clear()
        if not self._closing:
            await self._batches.put(failure)

    async def batches(self) -> AsyncIterator[list[MqttMessage]]:
        """Batches of received messages, as the child formed them (``batch_max``, ``batch_linger_seconds``)."""
        while not self._closing:
            batch = await self._batches.get()
            if isinstance(batch, BaseException):
                raise batch
            yield batch

    def ack(self, mids: list[int]) -> None:
        """Send the PUBACKs of these messages (the child sends them to the broker)."""
        if self._process is not None and self._process.stdin is not None and not self._process.stdin.is_closing():
            self._process.stdin.write(_frame(b"A", b"".join(map(_MIDS.pack, mids))))

    async def stop(self) -> None:
        """End the child (end-of-file on its input): it disconnects without acknowledging what it still holds."""
        self._closing = True
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), _STOP_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def _message(m: tuple[Any, ...]) -> MqttMessage:
    topic, payload, qos, retain, mid, received_us, dup, properties = m
    return MqttMessage(topic, payload, qos, retain, mid, _EPOCH + timedelta(microseconds=received_us), dup, properties)


def _as_tuple(m: MqttMessage) -> tuple[Any, ...]:
    received = m.received_at - _EPOCH
    us = (received.days * 86_400 + received.seconds) * 1_000_000 + received.microseconds
    return (m.topic, m.payload, m.qos, m.retain, m.mid, us, m.dup, m.properties)


# --- the child ---------------------------------------------------------------------------------------------------


def _read_frame(stream: IO[bytes]) -> tuple[bytes, bytes] | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    kind, size = _HEADER.unpack(header)
    body = stream.read(size)
    return (kind, body) if len(body) == size else None


class _Child:
    """The receiver: paho's thread fills the source's buffer, the main thread writes batches, another reads acks."""

    def __init__(self, source: MqttSource, out: IO[bytes]) -> None:
        self.source = source
        self.out = out
        self.write_lock = threading.Lock()
        self.done = threading.Event()
        source.on_state = self._state

    def write(self, kind: bytes, body: bytes) -> None:
        with self.write_lock:
            self.out.write(_frame(kind, body))
            self.out.flush()

    def _state(self, connected: bool) -> None:  # paho's thread
        with contextlib.suppress(OSError):
            self.write(b"C" if connected else b"D", b"")

    def read_acks(self, stream: IO[bytes]) -> None:
        """Acknowledge what the parent sends back; end-of-file (the parent stopped us, or died) ends the child."""
        client = self.source._client
        while (frame := _read_frame(stream)) is not None:
            if frame[0] == b"A":
                for mid in _MIDS.iter_unpack(frame[1]):
                    client.ack(mid[0], 1)
        self.done.set()
        with self.source._room:
            self.source._room.notify_all()

    def serve(self) -> None:
        s = self.source.settings
        while not self.done.is_set():
            if self.source._refused is not None:
                self.write(b"E", self.source._refused.encode())
                return
            batch = self.source._wait_take(s.batch_max, s.batch_linger_seconds, self.done)
            if batch:
                self.write(b"M", marshal.dumps([_as_tuple(m) for m in batch]))


def main() -> int:
    """``python -m inlet.core.mqtt_receiver``: read the settings frame, then receive until end-of-file."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but frames may reach the pipe
    first = _read_frame(stdin)
    if first is None or first[0] != b"S":
        print("inlet.core.mqtt_receiver: expected the settings frame on stdin", file=sys.stderr)
        return 2
    document = json.loads(first[1])
    configure_logging(document["log_level"])
    # The integration's log context (customer, integration) on every line, paho's thread included.
    mqtt_module.log = mqtt_module.log.bind(**document["log_context"], receiver_pid=os.getpid())
    source = MqttSource(_child_settings(document), document["client_id"])
    child = _Child(source, stdout)
    acks = threading.Thread(target=child.read_acks, args=(stdin,), name="inlet-mqtt-acks", daemon=True)
    acks.start()
    source.start_thread()
    try:
        child.serve()
    except (BrokenPipeError, OSError):
        pass  # the parent is gone: it acknowledged nothing more, the broker keeps the rest
    finally:
        source.stop_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
