"""MLLP for connectors: an asyncio listener for HL7 v2 senders, the ACK sent only after the sink has the events.

MLLP (HL7 v2 Minimal Lower Layer Protocol) frames each message as ``0x0B <message> 0x1C 0x0D`` on a TCP
connection; the sender waits for the acknowledgement of one message before it sends the next. So:

- Every accepted connection runs its own reader: bytes outside a frame are skipped (and counted), a frame
  larger than ``max_message_bytes`` is kept only up to the limit and marked ``oversized`` (the connector sends
  it to the DLQ and answers ``AR``), a connection quiet for ``idle_timeout_seconds`` is closed.
- A connection has at most one message in flight: the reader hands a message over and reads the next frame only
  after the reply to it was written. One connection's messages therefore stay in order; many connections
  (senders) run concurrently and their messages are batched together.
- :meth:`MllpListener.batches` yields up to ``batch_max`` messages at a time (lingering ``batch_linger_seconds`` for
  more). :meth:`MllpListener.reply` writes the framed reply of one message — the connector calls it from
  ``acknowledge()``, which the pipeline calls only after the sink has every event and DLQ record of the batch.
- When the listener stops (the supervisor restarts an integration after a sink outage, or kill -9) every
  connection is closed without a reply: the senders see the connection drop and resend. Nothing is ever
  acknowledged that is not stored.

TLS: ``tls_certfile`` / ``tls_keyfile`` make it an MLLP-over-TLS listener; ``tls_client_cafile`` additionally
requires senders to present a client certificate signed by that CA. The handshake runs per connection: a sender
that is refused (a certificate from another CA, none, or plain TCP) is logged as ``mllp TLS handshake refused``
with OpenSSL's reason and counted in ``refused_handshakes``; its connection is closed without a reply (asyncio
does not send the TLS alert, so the sender sees the connection end), and the listener goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, cast

import structlog
from pydantic import Field, ValidationInfo, field_validator, model_validator

from inlet.core.config import RenamedKeys, renames
from inlet.core.connector import IntegrationContext, PluginSettings
from inlet.core.failpoints import Failpoint

__all__ = ["END", "START", "MllpListener", "MllpMessage", "MllpSettings", "MllpSource", "frame", "open_listener"]

log = structlog.get_logger("inlet.mllp")

START = b"\x0b"
END = b"\x1c\x0d"


def frame(payload: bytes) -> bytes:
    """``payload`` in an MLLP frame."""
    return START + payload + END


class MllpSettings(RenamedKeys, PluginSettings):
    """Where the listener accepts senders, and its limits."""

    renamed_keys = renames(batch_linger_ms=("batch_linger_seconds", Fraction(1, 1000)))

    host: str = "127.0.0.1"
    """The address to listen on (``0.0.0.0`` for every interface)."""
    port: int = Field(default=2575, ge=0, le=65535)
    """The TCP port (2575 is MLLP's registered port; 0 picks a free one, for tests)."""
    max_message_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    """A larger message is not stored whole: its first bytes go to the DLQ and the sender gets ``AR``."""
    idle_timeout_seconds: float = Field(default=300.0, gt=0)
    """A connection that sends nothing for this long (and waits for no reply) is closed."""
    max_connections: int = Field(default=256, ge=1)
    """Connections beyond this many are closed at once (a misbehaving sender cannot exhaust the daemon)."""
    batch_max: int = Field(default=200, ge=1)
    batch_linger_seconds: float = Field(default=0.005, ge=0)
    """A batch smaller than ``batch_max`` waits this long for messages of other connections."""
    once_idle_seconds: float = Field(default=3.0, gt=0)
    """``inlet run --once`` and recording: the read ends after this many seconds without a message."""
    tls_certfile: str | None = None
    """PEM certificate of this listener: MLLP over TLS (senders must speak TLS)."""
    tls_keyfile: str | None = None
    """The PEM private key of ``tls_certfile``."""
    tls_client_cafile: str | None = None
    """PEM CA(s): senders must present a client certificate signed by one of them."""

    @field_validator("tls_certfile", "tls_keyfile", "tls_client_cafile")
    @classmethod
    def _existing_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        context = info.context if isinstance(info.context, dict) else {}
        path = (Path(context.get("config_root") or Path.cwd()) / Path(value).expanduser()).resolve()
        if not path.is_file() and not context.get("offline"):
            raise ValueError(f"file {path} does not exist (relative paths are relative to the config directory)")
        return str(path)

    @model_validator(mode="after")
    def _tls_combination(self) -> MllpSettings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("MLLP over TLS needs both tls_certfile and tls_keyfile")
        if self.tls_client_cafile is not None and self.tls_certfile is None:
            raise ValueError("tls_client_cafile (client certificates) needs tls_certfile and tls_keyfile")
        return self

    def tls_context(self) -> ssl.SSLContext | None:
        """The server-side TLS context, or None for plain TCP."""
        if self.tls_certfile is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_certfile, self.tls_keyfile)
        if self.tls_client_cafile is not None:
            context.load_verify_locations(self.tls_client_cafile)
            context.verify_mode = ssl.CERT_REQUIRED
        return context


@dataclass(frozen=True, slots=True)
class MllpMessage:
    """One received message, as a raw record (the bytes between the frame's start and end)."""

    payload: bytes
    serial: int
    """Unique within the listener: what the reply is addressed to."""
    peer: str
    received_at: datetime
    oversized: int = 0
    """The message's full size when it exceeded ``max_message_bytes`` (``payload`` is then truncated)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def __bytes__(self) -> bytes:
        """The message as received: what a DLQ record keeps as its value."""
        return self.payload


class MllpSource(Protocol):
    """What the HL7 v2 connector reads from: a live :class:`MllpListener`, or a recording / replay of one."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def batches(self) -> AsyncIterator[list[MllpMessage]]: ...
    def reply(self, serial: int, payload: bytes) -> None: ...


def open_listener(ctx: IntegrationContext, settings: MllpSettings) -> MllpSource:
    """The listener for ``ctx``: live, or what ``ctx.mllp_source`` makes (recording, replay)."""
    factory = getattr(ctx, "mllp_source", None)
    return MllpListener(settings) if factory is None else cast(MllpSource, factory(settings))


class _Protocol(asyncio.StreamReaderProtocol):
    """A stream protocol that, for TLS, reads nothing until the handshake is started (no ClientHello is lost)."""

    def __init__(
        self, reader: asyncio.StreamReader, accept: Any, *, loop: asyncio.AbstractEventLoop, tls: bool
    ) -> None:
        super().__init__(reader, accept, loop=loop)
        self._tls = tls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._tls:
            cast(asyncio.ReadTransport, transport).pause_reading()
        super().connection_made(transport)


class MllpListener:
    """The asyncio MLLP server (module docstring)."""

    def __init__(self, settings: MllpSettings) -> None:
        self.settings = settings
        self._server: asyncio.Server | None = None
        self._queue: asyncio.Queue[MllpMessage] = asyncio.Queue()
        self._replies: dict[int, asyncio.Future[bytes]] = {}
        self._serials = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port: int = settings.port
        self.skipped_bytes = 0
        self.refused_handshakes = 0
        self._tls: ssl.SSLContext | None = None
        self._after_sink = Failpoint("mllp.after_sink")  # crash tests only (core.failpoints)

    async def start(self) -> None:
        s = self.settings
        # TLS is started per connection in _accept (not by the server), so a refused handshake is logged with
        # its reason instead of vanishing in asyncio's SSL protocol.
        self._tls = s.tls_context()
        loop = asyncio.get_running_loop()
        tls = self._tls is not None

        def protocol() -> asyncio.StreamReaderProtocol:
            return _Protocol(asyncio.StreamReader(limit=64 * 1024, loop=loop), self._accept, loop=loop, tls=tls)

        self._server = await loop.create_server(protocol, s.host, s.port, reuse_address=True)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("mllp listening", host=s.host, port=self.port, tls=s.tls_certfile is not None)

    async def stop(self) -> None:
        """Close the server and every connection; replies still owed are never sent (senders resend)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        for fut in self._replies.values():
            fut.cancel()
        self._replies.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._writers) >= self.settings.max_connections:
            log.warning("mllp connection refused: too many connections", limit=self.settings.max_connections)
            writer.transport.abort()
            return
        self._tasks.add(task)
        self._writers.add(writer)
        peer = writer.get_extra_info("peername")
        name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        try:
            if self._tls is not None and not await self._handshake(writer, name):
                return
            await self._serve(reader, writer, name)
        except (
            asyncio.CancelledError,
            ConnectionError,
            OSError,
            ssl.SSLError,
            TimeoutError,
            asyncio.IncompleteReadError,
        ):
            pass
        except Exception as exc:  # never let one connection's trouble escape into the event loop
            log.error("mllp connection failed", peer=name, error=repr(exc))
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()

    async def _handshake(self, writer: asyncio.StreamWriter, peer: str) -> bool:
        """The server side of the TLS handshake; False (logged with the reason) when the sender is refused."""
        assert self._tls is not None
        try:
            await asyncio.wait_for(writer.start_tls(self._tls), min(self.settings.idle_timeout_seconds, 60.0))
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            self.refused_handshakes += 1
            reason = getattr(exc, "reason", None) or type(exc).__name__
            log.warning("mllp TLS handshake refused", peer=peer, reason=str(reason), error=str(exc))
            return False
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        s = self.settings
        buffer = bytearray()
        while True:
            message = await self._read_frame(reader, buffer, peer)
            if message is None:
                return
            fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._replies[message.serial] = fut
            await self._queue.put(message)
            try:
                reply = await fut  # the sink first: only then the connector replies
            finally:
                self._replies.pop(message.serial, None)
            writer.write(frame(reply))
            await asyncio.wait_for(writer.drain(), s.idle_timeout_seconds)

    async def _read_frame(self, reader: asyncio.StreamReader, buffer: bytearray, peer: str) -> MllpMessage | None:
        """The next framed message of this connection, or None when it closed (or went idle)."""
        s = self.settings
        limit = s.max_message_bytes
        size = 0
        started = False
        kept = bytearray()
        while True:
            if not buffer:
                try:
                    chunk = await asyncio.wait_for(reader.read(64 * 1024), s.idle_timeout_seconds)
                except TimeoutError:
                    log.info("mllp connection idle; closed", peer=peer)
                    return None
                if not chunk:
                    if started or kept:
                        log.warning("mllp connection closed inside a frame; partial message dropped", peer=peer)
                    return None
                buffer += chunk
            if not started:
                at = buffer.find(START)
                if at < 0:
                    self.skipped_bytes += len(buffer)
                    buffer.clear()
                    continue
                self.skipped_bytes += at
                del buffer[: at + 1]
                started = True
            end = buffer.find(END)
            if end < 0:
                # keep a trailing 0x1C: its 0x0D may come in the next chunk
                take = len(buffer) - 1 if buffer.endswith(b"\x1c") else len(buffer)
                size += take
                if len(kept) < limit:
                    kept += buffer[: min(take, limit - len(kept))]
                del buffer[:take]
                if not buffer:
                    continue
                chunk = await asyncio.wait_for(reader.read(64 * 1024), s.idle_timeout_seconds)
                if not chunk:
                    return None
                buffer += chunk
                continue
            size += end
            if len(kept) < limit:
                kept += buffer[: min(end, limit - len(kept))]
            del buffer[: end + len(END)]
            # A new start byte inside the frame means the sender restarted a message: keep the last one.
            restart = kept.rfind(START)
            if restart >= 0 and size <= limit:
                self.skipped_bytes += restart + 1
                del kept[: restart + 1]
                size = len(kept)
            return MllpMessage(
                payload=bytes(kept),
                serial=next(self._serials),
                peer=peer,
                received_at=datetime.now(UTC),
                oversized=size if size > limit else 0,
            )

    async def batches(self) -> AsyncIterator[list[MllpMessage]]:
        s = self.settings
        while True:
            batch = [await self._queue.get()]
            if s.batch_linger_seconds and self._queue.qsize() < s.batch_max:
                await asyncio.sleep(s.batch_linger_seconds)
            while len(batch) < s.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            yield batch

    def reply(self, serial: int, payload: bytes) -> None:
        """Send the reply (ACK) of message ``serial``; nothing when its connection is gone."""
        fut = self._replies.get(serial)
        if fut is not None and not fut.done():
            self._after_sink.hit()  # INLET_FAILPOINT=mllp.after_sink:N: killed with the events stored, no ACK
            fut.set_result(payload)
