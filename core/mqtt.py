"""MQTT for connectors: QoS 1 on a persistent session, PUBACK only after the sink has the events.

Why paho-mqtt 2 (and not aiomqtt): it supports manual acknowledgement (``manual_ack=True`` +
``client.ack(mid, qos)``), which is what makes "acknowledge after Kafka" possible, and it drained a QoS 1
backlog ~1.7x faster when the two were compared. Its network loop runs in its own thread; messages cross to the
event loop in batches:

- ``on_message`` (paho's thread) appends to a bounded buffer and wakes the event loop only when the buffer
  was empty; when the buffer is full it *blocks* paho's thread, so paho stops reading the socket and the
  broker keeps the backlog (it is persistent) — backpressure instead of memory growth.
- :meth:`MqttSource.batches` yields up to ``batch_max`` messages at a time (waiting at most
  ``batch_linger_seconds`` for more), each batch with the packet ids (mids) to acknowledge as its position.
- :meth:`MqttSource.ack` sends the PUBACKs of a batch; the pipeline calls it (via the connector's
  ``acknowledge``) only after the sink has durably accepted every event and DLQ record of the batch.
  A crash before that leaves the messages unacknowledged: the broker redelivers them on reconnect
  (same client id, ``clean_session=False``), and deterministic event ids make the duplicates recognisable.

Several slots (``slots: N`` of the integration, :func:`for_slot`): instance ``k`` connects as ``<client id>-s<k>``
— a persistent session per slot, kept by the slot wherever the fleet runs it — and subscribes every filter as
``$share/<share group>/<filter>``, so the broker hands each message to one slot. A dead slot's unacknowledged
messages stay in its session until the slot reconnects (on a surviving replica) and are redelivered to it.

TLS (``mqtts://``): the broker's certificate is verified against ``tls_cafile`` (else the system's CAs) and its
host name; ``tls_certfile``/``tls_keyfile`` present a client certificate to brokers that require one;
``tls_insecure: true`` turns verification off (a warning at every start). paho reports a refused handshake only
as a disconnect (the TLS alert reaches its log text alone), so after a failed TLS connection the source probes
once with the same TLS context — the handshake and one read, no MQTT at all — and a refusal
(untrusted broker certificate, the broker's alert against our client certificate) becomes an
:class:`~core.auth.AuthError` naming the broker and the fix, raised from :meth:`batches`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Protocol, cast
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.matcher import MQTTMatcher
from pydantic import Field, ValidationInfo, field_validator, model_validator

from inlet.core.config import RenamedKeys, renames
from inlet.core.connector import IntegrationContext, PluginSettings
from inlet.core.errors import AuthError, ConfigError
from inlet.core.secrets import Secret, mask

__all__ = [
    "MessageSource",
    "MqttMessage",
    "MqttSettings",
    "MqttSource",
    "create_session",
    "for_slot",
    "open_source",
    "share_group",
]

log = structlog.get_logger("inlet.mqtt")


class MqttSettings(RenamedKeys, PluginSettings):
    """How to reach a broker and what to subscribe to."""

    renamed_keys = renames(keepalive="keepalive_seconds", batch_linger_ms=("batch_linger_seconds", Fraction(1, 1000)))

    url: str = "mqtt://127.0.0.1:1883"
    """``mqtt://host:port`` (``mqtts://`` for TLS); ``INLET_MQTT_URL`` style."""

    @field_validator("url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        """Refused at load time (``inlet check``) rather than when the connector first connects."""
        url = urlsplit(value)
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            raise ValueError(f"expected mqtt://host:port or mqtts://host:port, got {value.split('@', 1)[-1]!r}")
        return value

    topics: list[str] = Field(min_length=1)
    client_id: str | None = None
    """Fixed per integration by default (``inlet-<customer>-<integration>``): the persistent session's name.
    An integration with ``slots`` > 1 connects as ``<client_id>-s<slot>``, one persistent session per slot."""
    share_group: str | None = None
    """With ``slots`` > 1: the slots split the load through the shared subscriptions
    ``$share/<share_group>/<topic>``; default ``inlet-<customer>-<integration>``."""

    @field_validator("share_group")
    @classmethod
    def _share_group(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in "/+#")):
            raise ValueError(f"share_group {value!r}: must be non-empty, without '/', '+' or '#'")
        return value

    username: str | None = None
    password: Secret | None = None
    keepalive_seconds: int = Field(default=30, ge=5)
    """MQTT keep alive: the broker drops the connection after 1.5 times this without a packet from us."""
    batch_max: int = Field(default=500, ge=1)
    batch_linger_seconds: float = Field(default=0.02, ge=0)
    """A batch smaller than ``batch_max`` waits this long for more messages (a burst fills one batch)."""
    max_buffered: int = Field(default=5000, ge=1)
    receiver: Literal["thread", "process"] = "thread"
    """Where the MQTT client runs: ``thread`` (paho's network thread in the supervisor's process) or ``process``
    (a child process per integration; batches cross a pipe, PUBACKs go back the same way): the pipeline's process
    then spends no CPU or GIL time on the network (core.mqtt_receiver; docs/families/mqtt-meter.md)."""
    max_payload_bytes: int = Field(default=256 * 1024, gt=0)
    """Larger payloads are still delivered (and acknowledged) but go to the DLQ as oversized."""
    once_idle_seconds: float = Field(default=3.0, gt=0)
    """``inlet run --once``: the read ends after this many seconds without a message (a push source never
    "catches up"); the first wait also allows ``once_connect_seconds`` for connecting."""
    once_connect_seconds: float = Field(default=10.0, ge=0)
    tls_cafile: str | None = None
    """``mqtts://``: PEM file of the CA that signed the broker's certificate; unset: the system's trusted CAs."""
    tls_certfile: str | None = None
    """``mqtts://``: this client's PEM certificate, for brokers that require one (``require_certificate``)."""
    tls_keyfile: str | None = None
    """The PEM private key of ``tls_certfile``."""
    tls_key_password: Secret | None = None
    """Only for an encrypted ``tls_keyfile``."""
    tls_insecure: bool = False
    """``true``: the broker's certificate is not verified at all (neither CA nor host name): encrypted but not
    authenticated, a warning at every start. For a lab broker only."""

    @field_validator("tls_cafile", "tls_certfile", "tls_keyfile")
    @classmethod
    def _existing_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Relative to the config directory; must exist (offline replay connects to nothing: not checked)."""
        if value is None:
            return None
        context = info.context if isinstance(info.context, dict) else {}
        path = (Path(context.get("config_root") or Path.cwd()) / Path(value).expanduser()).resolve()
        if not path.is_file() and not context.get("offline"):
            raise ValueError(
                f"file {path} does not exist; give the PEM file's path (relative paths are relative "
                "to the config directory)"
            )
        return str(path)

    @model_validator(mode="after")
    def _tls_combination(self, info: ValidationInfo) -> MqttSettings:
        used = [
            name
            for name in ("tls_cafile", "tls_certfile", "tls_keyfile", "tls_key_password", "tls_insecure")
            if getattr(self, name)
        ]
        if used and urlsplit(self.url).scheme != "mqtts":
            raise ValueError(
                f"{', '.join(used)} set but url {self.url.split('@', 1)[-1]!r} is not TLS: use "
                "mqtts://host:port, or remove them"
            )
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("a client certificate needs both tls_certfile and tls_keyfile (its private key)")
        if self.tls_key_password is not None and self.tls_keyfile is None:
            raise ValueError("tls_key_password is set without tls_keyfile")
        if self.tls_insecure and self.tls_cafile is not None:
            raise ValueError("tls_insecure: true verifies nothing, so tls_cafile would be ignored: remove one")
        offline = isinstance(info.context, dict) and info.context.get("offline")
        if urlsplit(self.url).scheme == "mqtts" and not offline:
            self.tls_context()  # unreadable PEM, a key not of the certificate, a wrong key password: at load time
        return self

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context of an ``mqtts://`` connection; ValueError naming the setting if a file is unusable."""
        try:
            context = ssl.create_default_context(cafile=self.tls_cafile)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"tls_cafile {self.tls_cafile}: not usable as PEM CA certificates ({exc})") from None
        if self.tls_insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.tls_certfile is not None:
            password = self.tls_key_password.get_secret_value() if self.tls_key_password is not None else None
            try:
                context.load_cert_chain(self.tls_certfile, self.tls_keyfile, password=password)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(
                    mask(
                        f"tls_certfile {self.tls_certfile} with tls_keyfile {self.tls_keyfile}: cannot "
                        f"load the client certificate and key ({exc})"
                    )
                ) from None
        return context


@dataclass(frozen=True, slots=True)
class MqttMessage:
    """One received message, as a raw record."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    received_at: datetime
    dup: bool = False
    properties: dict[str, Any] = field(default_factory=dict)
    """MQTT 5 properties (content type, user properties, ...); empty on 3.1.1."""

    def __bytes__(self) -> bytes:
        """The payload as received: what a DLQ record keeps as its value."""
        return self.payload


class MessageSource(Protocol):
    """What a push connector reads from: a live :class:`MqttSource`, or a recording / replay of one."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def batches(self) -> AsyncIterator[list[MqttMessage]]: ...
    def ack(self, mids: list[int]) -> None: ...


def share_group(settings: MqttSettings, customer: str, integration: str) -> str:
    """The group of a slotted integration's shared subscriptions: ``share_group``, else
    ``inlet-<customer>-<integration>``."""
    return settings.share_group or f"inlet-{customer}-{integration}"


def for_slot(settings: MqttSettings, client_id: str, slot: int | None, group: str) -> tuple[MqttSettings, str]:
    """The settings and client id of one slot of an integration: ``<client_id>-s<slot>`` (the slot's own persistent
    session, wherever it runs) subscribed to ``$share/<group>/<topic>`` (the broker hands each message to one slot).
    Unchanged for slot None (an integration of one slot)."""
    if slot is None:
        return settings, client_id
    shared = [f"$share/{group}/{topic}" for topic in settings.topics]
    return settings.model_copy(update={"topics": shared}), f"{client_id}-s{slot}"


def open_source(ctx: IntegrationContext, settings: MqttSettings, client_id: str) -> MessageSource:
    """The broker connection for ``ctx`` (its slot's client id and shared subscriptions, :func:`for_slot`): live,
    or what ``ctx.message_source`` makes (recording, replay)."""
    settings, client_id = for_slot(settings, client_id, ctx.slot, share_group(settings, ctx.customer, ctx.integration))
    factory = ctx.message_source
    if factory is not None:
        return cast(MessageSource, factory(settings, client_id))
    if settings.receiver == "process":
        from inlet.core.mqtt_receiver import ProcessSource  # here: that module imports this one

        return ProcessSource(settings, client_id)
    return MqttSource(settings, client_id)


class MqttSource:
    """A paho client on a persistent session, bridged to asyncio with a bounded buffer."""

    def __init__(self, settings: MqttSettings, client_id: str) -> None:
        url = urlsplit(settings.url)
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            raise ConfigError(
                f"MQTT url {settings.url!r}: expected mqtt://host:port or mqtts://host:port", key="settings.mqtt.url"
            )
        self.settings = settings
        self._host, self._port = url.hostname, url.port or (8883 if url.scheme == "mqtts" else 1883)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=True
        )
        self._tls: ssl.SSLContext | None = None
        if url.scheme == "mqtts":
            try:
                self._tls = settings.tls_context()
            except ValueError as exc:
                raise ConfigError(str(exc), key="settings.mqtt") from None
            self._client.tls_set_context(self._tls)
        self._refused: str | None = None
        """Set (by paho's thread) when the broker refused the TLS handshake: :meth:`batches` raises it."""
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else None
            self._client.username_pw_set(settings.username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        if type(getattr(self._client, "_on_message_filtered", None)) is MQTTMatcher:
            self._client._on_message_filtered = _NoTopicCallbacks()  # type: ignore[no-untyped-call]
        self._buffer: deque[MqttMessage] = deque()
        self._room = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._closing = False
        self.connected = threading.Event()
        self.on_state: Callable[[bool], None] | None = None
        """Called from paho's thread when the connection comes up (True) or goes down (False)."""

    # -- paho's thread ---------------------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("mqtt connect refused", reason=str(reason), host=self._host)
            return
        # Subscribing again on every connect is harmless on a persistent session and needed on a new one.
        client.subscribe([(t, 1) for t in self.settings.topics])
        self.connected.set()
        if self.on_state is not None:
            self.on_state(True)
        log.info("mqtt connected", host=self._host, port=self._port, session_present=flags.session_present)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        if self.on_state is not None:
            self.on_state(False)
        if not self._closing:
            log.warning("mqtt disconnected; paho reconnects with backoff", reason=str(reason))
            self._check_tls()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        if not self._closing:
            self._check_tls()

    def _check_tls(self) -> None:
        """After a failed TLS connection: was it refused (fatal for this source) or is the broker away?"""
        if self._tls is not None and self._refused is None and (reason := self._tls_refusal()) is not None:
            self._refuse(reason)

    def _refuse(self, reason: str) -> None:
        self._refused = mask(f"MQTT broker {self.settings.url.split('@', 1)[-1]} refused the connection: {reason}")
        log.error("mqtt connection refused", reason=self._refused)
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _tls_refusal(self) -> str | None:
        """One probe connection with the same TLS context: the handshake, then one read. A broker that refuses
        our client certificate says so with a TLS alert right after the handshake (TLS 1.3) or during it (1.2);
        one that accepts it waits for a CONNECT, so the read times out and nothing was refused."""
        assert self._tls is not None
        try:
            raw = socket.create_connection((self._host, self._port), timeout=_PROBE_TIMEOUT_SECONDS)
        except OSError:
            return None  # refused, unreachable, timed out: the broker is away, paho keeps retrying
        with raw:
            try:
                tls = self._tls.wrap_socket(raw, server_hostname=self._host)
            except OSError as exc:
                return self._tls_reason(exc)
            with tls:
                tls.settimeout(_PROBE_READ_TIMEOUT_SECONDS)
                try:
                    tls.recv(1)
                except OSError as exc:
                    return self._tls_reason(exc)
        return None

    def _tls_reason(self, exc: OSError) -> str | None:
        """What a TLS failure of the probe means, or None when it is not a refusal (a reset, a timeout)."""
        s = self.settings
        if isinstance(exc, ssl.SSLCertVerificationError):
            detail = exc.verify_message or str(exc)
            return (
                f"TLS: the broker's certificate was not accepted ({detail}): it must be signed by a CA in "
                f"tls_cafile ({s.tls_cafile or 'unset: the system CAs'}), be valid now and name this host"
            )
        if not isinstance(exc, ssl.SSLError) or isinstance(exc, _TLS_NOT_REFUSED):
            return None
        fix = (
            "the broker requires a client certificate: set tls_certfile and tls_keyfile"
            if s.tls_certfile is None
            else f"the broker refused the client certificate {s.tls_certfile}: it must be signed by a CA the "
            "broker trusts (its cafile) and be valid now"
        )
        return f"TLS handshake refused ({exc.reason or exc}): {fix}"

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        props = getattr(msg, "properties", None)
        message = MqttMessage(
            topic=msg.topic,
            payload=bytes(msg.payload),
            qos=msg.qos,
            retain=bool(msg.retain),
            mid=msg.mid,
            received_at=datetime.now(UTC),
            dup=bool(msg.dup),
            properties=props.json() if props is not None and not props.isEmpty() else {},
        )
        with self._room:
            while len(self._buffer) >= self.settings.max_buffered and not self._closing:
                self._room.wait(timeout=1.0)  # backpressure: paho stops reading the socket meanwhile
            was_empty = not self._buffer
            self._buffer.append(message)
            if was_empty:
                self._room.notify_all()  # a receiver process's thread waits here (core.mqtt_receiver)
        if was_empty and self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- the event loop ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (in the background; paho retries until the broker is there) and start the network thread."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.start_thread()

    def start_thread(self) -> None:
        """:meth:`start` without an event loop (a receiver process reads the buffer with :meth:`_wait_take`)."""
        if self.settings.tls_insecure:
            log.warning(
                "mqtt TLS without verifying the broker's certificate (tls_insecure: true): the connection "
                "is encrypted but anyone can pose as the broker",
                url=self.settings.url.split("@", 1)[-1],
            )
        self._client.connect_async(self._host, self._port, keepalive=self.settings.keepalive_seconds)
        self._client.loop_start()

    async def stop(self) -> None:
        """Disconnect without acknowledging anything still buffered (the broker redelivers it)."""
        await asyncio.to_thread(self.stop_thread)

    def stop_thread(self) -> None:
        """:meth:`stop`, blocking."""
        self._closing = True
        with self._room:
            self._room.notify_all()
        self._client.disconnect()
        self._client.loop_stop()

    def _take(self, limit: int) -> list[MqttMessage]:
        with self._room:
            out = [self._buffer.popleft() for _ in range(min(limit, len(self._buffer)))]
            self._room.notify_all()
        return out

    def _wait_take(self, limit: int, linger: float, done: threading.Event) -> list[MqttMessage]:
        """A batch for a receiver process (blocking): as :meth:`batches` forms them; empty when ``done`` is set or
        the connection was refused (checked at least every half second)."""
        with self._room:
            while not self._buffer and not done.is_set() and self._refused is None:
                self._room.wait(timeout=0.5)
        batch = self._take(limit)
        if batch and len(batch) < limit and linger:
            time.sleep(linger)  # let a burst fill the batch
            batch += self._take(limit - len(batch))
        return batch

    async def batches(self) -> AsyncIterator[list[MqttMessage]]:
        """Batches of received messages, forever (until stopped)."""
        assert self._wake is not None, "start() first"
        s = self.settings
        while not self._closing:
            if self._refused is not None:
                raise AuthError(self._refused)
            if not self._buffer:
                self._wake.clear()
                if not self._buffer and self._refused is None:
                    await self._wake.wait()
                    continue
            batch = self._take(s.batch_max)
            if len(batch) < s.batch_max and s.batch_linger_seconds:
                await asyncio.sleep(s.batch_linger_seconds)  # let a burst fill the batch
                batch += self._take(s.batch_max - len(batch))
            if batch:
                yield batch

    def ack(self, mids: list[int]) -> None:
        """Send the PUBACKs of these messages (after the sink has their events)."""
        for mid in mids:
            self._client.ack(mid, 1)


class _NoTopicCallbacks(MQTTMatcher):
    """paho looks up per-topic callbacks (``message_callback_add``) for every message received; its matcher's
    recursive generator makes a reference cycle each time, garbage only the collector frees. This source adds none
    (everything goes to ``on_message``), so the lookup answers "none" at once while nothing was added."""

    def iter_match(self, topic: str) -> Any:
        if not self._root._children and self._root._content is None:
            return iter(())
        return super().iter_match(topic)  # type: ignore[no-untyped-call]


_PROBE_TIMEOUT_SECONDS = 10.0
_PROBE_READ_TIMEOUT_SECONDS = 3.0
_TLS_NOT_REFUSED = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError, ssl.SSLWantReadError)


def create_session(
    settings: MqttSettings, client_id: str, timeout: float = 10.0, *, slots: int = 1, group: str | None = None
) -> list[str]:
    """Create (or keep) the persistent session of ``client_id`` with its subscriptions, then disconnect.

    From then on the broker queues QoS 1 messages for it while nobody is connected — what a recording of
    pre-published traffic, a backlog benchmark or a first deployment before the daemon starts relies on.
    With ``slots`` > 1, the session of every slot (:func:`for_slot`, shared subscriptions of ``group``:
    :func:`share_group`). Returns the client ids.
    """
    if slots == 1:
        _create_session(settings, client_id, timeout)
        return [client_id]
    if group is None:
        raise ValueError("the sessions of several slots need their share group (core.mqtt.share_group)")
    made = [for_slot(settings, client_id, slot, group) for slot in range(slots)]
    for slot_settings, slot_client_id in made:
        _create_session(slot_settings, slot_client_id, timeout)
    return [slot_client_id for _, slot_client_id in made]


def _create_session(settings: MqttSettings, client_id: str, timeout: float) -> None:
    source = MqttSource(settings, client_id)
    subscribed = threading.Event()
    source._client.on_subscribe = lambda *args: subscribed.set()
    source._client.connect(source._host, source._port, keepalive=settings.keepalive_seconds)
    source._client.loop_start()
    try:
        if not subscribed.wait(timeout):
            raise ConfigError(f"MQTT broker {settings.url}: no SUBACK within {timeout:.0f} s", key="settings.mqtt.url")
    finally:
        source._closing = True
        source._client.disconnect()
        source._client.loop_stop()
