"""Record and replay upstream traffic: HTTP exchanges through httpx's transport layer (no monkeypatching),
MQTT messages through the connector's message source.

A recording is ``http.jsonl``: one exchange per line, in request order, holding the request's method,
path and sorted query, and the response's status, content type, the headers in :data:`RESPONSE_HEADERS`
and body (JSON bodies stored as JSON so a fixture diff is reviewable; their numbers as the upstream wrote
them, through :mod:`core.exact_json`, so a recorded ``5.10`` replays as ``5.10``, not ``5.1``). Request
headers are never written — that is where credentials live. Cookies a response sets are recorded by name
only (``set_cookie_names``), and their values are masked wherever that response's body repeats them (a B1
login states its session id as ``SessionId`` too); replay sets each recorded cookie to the stand-in
:data:`COOKIE_STAND_IN`, so a session login answered from a recording opens a session offline.

Credential exchanges — the token and login requests ``core.auth`` marks :data:`~core.auth.CREDENTIAL_EXCHANGE`
(OAuth2 client credentials, SMART Backend Services assertions, session logins) — are recorded without their
request body, not even a digest (a hash of a low-entropy password is a dictionary attack away from it): they
are matched on method, URL and the headers in :data:`MATCH_HEADERS`, so replay answers them whatever secret
or stand-in the request carries. Their recorded answer always goes through a secrets-only
:class:`~core.redact.Redactor` (access tokens, session ids), before any ``redact`` hook.

Replay matches a request explicitly on method, path and query (the host is ignored: recordings are made
against local test servers on random ports), on the headers in :data:`MATCH_HEADERS` (content negotiation:
an ``Accept`` or ``Prefer: respond-async`` change is a different request) and on a SHA-256 of the body
(JSON and text bodies; form-encoded bodies are where credentials travel and are not digested, nor is the body
of a credential exchange).
Identical requests are answered in recorded order, the last one repeating (a daemon polling a caught-up
upstream). A request with no recording fails with
:class:`ReplayMiss`, showing the nearest recorded request, so a plugin author sees what changed.

An MQTT recording is ``mqtt.jsonl``: one received message per line, in arrival order — topic, payload
(JSON when the bytes are compact JSON, else text, else base64, so replay gives back the exact bytes), QoS,
retain, MQTT 5 properties and the receive time (replay's frozen clock: a decoder that falls back to the
receive time gets the recorded one). A push source never ends, so a recording ends after ``idle_seconds``
seconds without a message; replay yields the recorded messages once and then ends.

An MLLP recording is ``mllp.jsonl``: the messages as received and the acknowledgements sent, one per line, in
the order they happened. A message line is ``{"message": n, "connection": c, "received_at", "hl7", "charset"}``
(``n`` counts messages from 1; ``c`` numbers the sender connections in order of their first message, so a
fixture holds no ephemeral port; ``oversized`` when the frame exceeded the limit), an acknowledgement line
``{"ack": n, "hl7", "charset"}`` answers message ``n``. The text is the bytes decoded as UTF-8, or — when they
are not UTF-8 — as ISO-8859-1 with ``"charset": "latin-1"``, so replay gives back the exact bytes and a
reviewer reads the message (and the PHI redaction can see it). Replay (:class:`MllpReplaySource`) hands the
messages to the connector once, in their recorded order and batches of their connection order, with the
recorded receive times, and compares each acknowledgement the connector sends with the recorded one
(acknowledgement code MSA-1 and control id MSA-2): :meth:`MllpReplaySource.ack_differences`. An acknowledgement
line is written in one place (``_ack_line``), redacted the same whether recorded or rewritten by
:meth:`MllpReplaySource.rewrite_acks` (``inlet replay --update``).
"""

from __future__ import annotations

import asyncio
import base64
import difflib
import hashlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import httpx
import orjson

from inlet.core import exact_json
from inlet.core.auth import CREDENTIAL_EXCHANGE
from inlet.core.errors import ReplayMiss
from inlet.core.mllp import MllpMessage, MllpSettings, MllpSource
from inlet.core.mqtt import MessageSource, MqttMessage, MqttSettings
from inlet.core.redact import MASK, Redactor

__all__ = [
    "COOKIE_STAND_IN",
    "MATCH_HEADERS",
    "MllpRecordingSource",
    "MllpReplaySource",
    "RecordingSource",
    "RecordingTransport",
    "ReplayMiss",
    "ReplaySource",
    "ReplayTransport",
    "is_credential_exchange",
    "message_doc",
    "request_key",
    "request_match",
]


_M = TypeVar("_M")


MATCH_HEADERS = ("accept", "prefer", "content-type")
"""Request headers that take part in matching (never credentials)."""

RESPONSE_HEADERS = ("retry-after", "content-location", "location", "x-progress", "expires")
"""Response headers a connector acts on (backoff, async status URLs, progress), recorded and replayed."""

COOKIE_STAND_IN = "offline-stand-in"
"""The value replay gives every cookie a recorded response set (recordings hold cookie names, never values)."""

_MIN_MASKED = 4
"""Shorter cookie values are not masked in bodies (as with secrets: that would blank out ordinary words)."""


_CREDENTIAL_REDACTOR = Redactor(b"credential-exchange", phi=False)
"""Secrets-only redaction every recorded credential exchange goes through (with ``phi=False`` the key is unused)."""


def is_credential_exchange(request: httpx.Request) -> bool:
    """Whether ``request`` is a token or login request of ``core.auth`` (its body carries a secret)."""
    return bool(request.extensions.get(CREDENTIAL_EXCHANGE))


def request_match(request: httpx.Request) -> dict[str, Any]:
    """What besides :func:`request_key` a replayed request must match: selected headers, body digest."""
    match: dict[str, Any] = {}
    headers = {h: request.headers[h] for h in MATCH_HEADERS if h in request.headers}
    if headers:
        match["headers"] = headers
    content = request.content
    if (
        content
        and "form-urlencoded" not in request.headers.get("content-type", "")
        and not is_credential_exchange(request)
    ):
        match["body_sha256"] = hashlib.sha256(content).hexdigest()
    return match


def request_key(request: httpx.Request) -> str:
    """``METHOD path?sorted-query``: what replay matches on."""
    query = sorted(httpx.QueryParams(request.url.query).multi_items())
    qs = "&".join(f"{k}={v}" for k, v in query)
    return f"{request.method} {request.url.path}" + (f"?{qs}" if qs else "")


def _body_doc(content: bytes, content_type: str) -> dict[str, Any]:
    if "json" in content_type:
        try:
            return {"json": exact_json.loads(content)}
        except json.JSONDecodeError:
            pass
    return {"text": content.decode("utf-8", "replace")}


def _set_cookies(response: httpx.Response) -> dict[str, str]:
    """The cookies ``response`` sets: name → value, in header order."""
    cookies: dict[str, str] = {}
    for header in response.headers.get_list("set-cookie"):
        name, eq, rest = header.partition("=")
        if eq and name.strip():
            cookies[name.strip()] = rest.split(";", 1)[0].strip().strip('"')
    return cookies


def _masked(node: Any, values: list[str]) -> Any:
    """``node`` (a parsed body) with every occurrence of ``values`` in its strings and member names masked."""
    if isinstance(node, str):
        for value in values:
            node = node.replace(value, MASK)
        return node
    if isinstance(node, list):
        return [_masked(x, values) for x in node]
    if isinstance(node, dict):
        return {_masked(k, values): _masked(v, values) for k, v in node.items()}
    return node


def _full_key(line: str, match: dict[str, Any]) -> str:
    """The request line plus its match fields, as one comparable (and human-readable) string."""
    return line + (" " + orjson.dumps(match, option=orjson.OPT_SORT_KEYS).decode() if match else "")


class RecordingTransport(httpx.AsyncBaseTransport):
    """Forwards to ``inner`` and appends every exchange to ``path`` (JSON lines)."""

    def __init__(self, path: Path, inner: httpx.AsyncBaseTransport | None = None, redact: Any = None) -> None:
        self.path = path
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.redact = redact  # optional callable(doc) -> doc applied to each exchange before writing
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        ctype = response.headers.get("content-type", "")
        body = _body_doc(content, ctype)
        cookies = _set_cookies(response)
        if cookies:  # names only; a value repeated in the body (a session id) is masked there too
            values = sorted((v for v in cookies.values() if len(v) >= _MIN_MASKED), key=len, reverse=True)
            body = {k: _masked(v, values) for k, v in body.items()}
        doc: dict[str, Any] = {
            "request": request_key(request),
            "match": request_match(request),
            "response": {"status": response.status_code, "content_type": ctype, **body},
        }
        kept = {h: response.headers[h] for h in RESPONSE_HEADERS if h in response.headers}
        if kept:
            doc["response"]["headers"] = kept
        if cookies:
            doc["response"]["set_cookie_names"] = list(cookies)
        if is_credential_exchange(request):
            doc = _CREDENTIAL_REDACTOR(doc)  # whatever ``redact`` does: a token or session id never reaches the file
        if self.redact is not None:
            doc = self.redact(doc)
        with self.path.open("ab") as fh:
            fh.write(exact_json.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n")
        return httpx.Response(response.status_code, headers=response.headers, content=content, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class ReplayTransport(httpx.AsyncBaseTransport):
    """Answers requests from a recording made by :class:`RecordingTransport`."""

    def __init__(self, path: Path, *, missing_ok: bool = False) -> None:
        """``missing_ok``: no file means no recorded exchange (an MQTT fixture), every request a miss."""
        if not path.is_file() and not missing_ok:
            raise FileNotFoundError(f"no recording at {path}")
        self.path = path
        self._answers: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for line in path.read_bytes().splitlines() if path.is_file() else ():
            if line.strip():
                doc = exact_json.loads(line)
                resp = doc["response"]
                # Serialise each body once, not on every replayed request.
                resp["content"] = exact_json.dumps(resp["json"]) if "json" in resp else resp.get("text", "").encode()
                self._answers[_full_key(doc["request"], doc.get("match", {}))].append(resp)
        self._served: dict[str, int] = defaultdict(int)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = _full_key(request_key(request), request_match(request))
        answers = self._answers.get(key)
        if not answers:
            near = difflib.get_close_matches(key, list(self._answers), n=1, cutoff=0.0)
            raise ReplayMiss(
                f"no recorded exchange for {key} in {self.path}; nearest recorded: {near[0] if near else '(none)'}"
            )
        i = min(self._served[key], len(answers) - 1)
        self._served[key] += 1
        resp = answers[i]
        content = resp["content"]
        headers = {"content-type": resp.get("content_type", "application/octet-stream")}
        headers.update(resp.get("headers") or {})
        cookies = [("set-cookie", f"{name}={COOKIE_STAND_IN}") for name in resp.get("set_cookie_names") or ()]
        return httpx.Response(resp["status"], headers=[*headers.items(), *cookies], content=content, request=request)


# -- MQTT ------------------------------------------------------------------------------------------------


def _payload_doc(payload: bytes) -> dict[str, Any]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(payload).decode()}
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {"text": text}
    # Only compact JSON is stored parsed: anything else would not replay byte for byte.
    return {"json": parsed} if orjson.dumps(parsed) == payload else {"text": text}


def _payload_bytes(doc: dict[str, Any]) -> bytes:
    if "json" in doc:
        return orjson.dumps(doc["json"])
    if "base64" in doc:
        return base64.b64decode(doc["base64"])
    return str(doc.get("text", "")).encode()


def message_doc(message: MqttMessage) -> dict[str, Any]:
    """One recorded message (what ``mqtt.jsonl`` holds per line); the packet id is the broker's, not data."""
    doc: dict[str, Any] = {
        "topic": message.topic,
        "payload": _payload_doc(message.payload),
        "qos": message.qos,
        "retain": message.retain,
        "received_at": message.received_at.isoformat(),
    }
    if message.properties:
        doc["properties"] = message.properties
    return doc


class _Batches(Protocol[_M]):
    """A live push source as far as recording it goes: started, stopped, read in batches."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def batches(self) -> AsyncIterator[list[_M]]: ...


_S = TypeVar("_S", bound=_Batches[Any])


class _Recorder(Generic[_S, _M]):
    """What both push-source recordings share: the live source's batches passed through, each written down by
    :meth:`_write` (redacted) before the pipeline sees it; the recording ends after ``idle_seconds`` without a
    message (the first wait also covers connecting or the senders connecting: ``connect_seconds``)."""

    def __init__(
        self,
        inner: _S,
        path: Path,
        *,
        idle_seconds: float = 3.0,
        redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        connect_seconds: float = 10.0,
    ) -> None:
        self.inner, self.path, self.redact = inner, path, redact
        self.idle_seconds, self.connect_seconds = idle_seconds, connect_seconds

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    def _write(self, batch: list[_M]) -> None:
        raise NotImplementedError

    async def batches(self) -> AsyncIterator[list[_M]]:
        it = aiter(self.inner.batches())
        timeout = self.idle_seconds + self.connect_seconds
        try:
            while True:
                try:
                    batch: list[_M] = await asyncio.wait_for(anext(it), timeout)
                except (TimeoutError, StopAsyncIteration):
                    return
                timeout = self.idle_seconds
                self._write(batch)
                yield batch
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()


class RecordingSource(_Recorder[MessageSource, MqttMessage]):
    """Passes a live MQTT source's batches through and appends each message to ``path`` (redacted) as it goes."""

    def _write(self, batch: list[MqttMessage]) -> None:
        with self.path.open("ab") as fh:
            for m in batch:
                doc = message_doc(m)
                if self.redact is not None:
                    doc = self.redact(doc)
                # Not key-sorted: a JSON payload must replay byte for byte (its key order is data).
                fh.write(orjson.dumps(doc) + b"\n")

    def ack(self, mids: list[int]) -> None:
        self.inner.ack(mids)


class _RecordedMessages(Generic[_M]):
    """What both push-source replays share: the recorded messages yielded once, in order, ``batch_max`` at a
    time; nothing to start or stop. One instance serves every pass: a second pass finds nothing new."""

    messages: list[_M]
    batch_max: int
    _next: int = 0

    async def start(self) -> None:
        """Nothing to connect to."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def batches(self) -> AsyncIterator[list[_M]]:
        while self._next < len(self.messages):
            batch = self.messages[self._next : self._next + self.batch_max]
            self._next += len(batch)
            yield batch


class ReplaySource(_RecordedMessages[MqttMessage]):
    """Yields the messages of an ``mqtt.jsonl`` recording once, in batches of ``batch_max``; acks are no-ops.

    One instance serves every pass of a replay: a second pass (the daemon's next poll) finds nothing new.
    """

    def __init__(self, path: Path, batch_max: int = 500) -> None:
        if not path.is_file():
            raise ReplayMiss(f"no MQTT recording at {path}: record it with `inlet record`")
        self.path, self.batch_max = path, batch_max
        self.messages = [
            MqttMessage(
                topic=d["topic"],
                payload=_payload_bytes(d["payload"]),
                qos=int(d.get("qos", 1)),
                retain=bool(d.get("retain", False)),
                mid=i + 1,
                received_at=datetime.fromisoformat(d["received_at"]),
                properties=d.get("properties") or {},
            )
            for i, d in enumerate(orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip())
        ]
        self._next = 0

    def __call__(self, settings: MqttSettings, client_id: str) -> ReplaySource:
        """As ``IntegrationContext.message_source``: every connector instance shares this replay."""
        return self

    def ack(self, mids: list[int]) -> None:
        """Replay is offline: nobody to acknowledge to."""


# -- MLLP ------------------------------------------------------------------------------------------------


def _hl7_doc(payload: bytes) -> dict[str, Any]:
    try:
        return {"hl7": payload.decode("utf-8"), "charset": "utf-8"}
    except UnicodeDecodeError:
        return {"hl7": payload.decode("latin-1"), "charset": "latin-1"}


def _hl7_bytes(doc: dict[str, Any]) -> bytes:
    return str(doc.get("hl7", "")).encode(str(doc.get("charset") or "utf-8"))


def _mllp_line(doc: dict[str, Any], redact: Callable[[dict[str, Any]], dict[str, Any]] | None) -> bytes:
    """One ``mllp.jsonl`` line (no newline): ``doc`` through ``redact`` first."""
    return orjson.dumps(redact(doc) if redact is not None else doc)


def _ack_line(number: int, payload: bytes, redact: Callable[[dict[str, Any]], dict[str, Any]] | None) -> bytes:
    """The line of the acknowledgement ``payload`` sent for message ``number``: the one place an ACK is written to a
    recording, while recording (:class:`MllpRecordingSource`) and when replay rewrites it
    (:meth:`MllpReplaySource.rewrite_acks`), so both redact it alike (an ACK's error text can quote the message)."""
    return _mllp_line({"ack": number, **_hl7_doc(payload)}, redact)


def _msa(payload: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an acknowledgement: what replay compares."""
    text = payload.decode("latin-1")
    for segment in text.replace("\r\n", "\r").replace("\n", "\r").split("\r"):
        if segment.startswith("MSA") and len(segment) > 3:
            fields = segment.split(segment[3])
            return (fields[1] if len(fields) > 1 else ""), (fields[2] if len(fields) > 2 else "")
    return "", ""


class MllpRecordingSource(_Recorder[MllpSource, MllpMessage]):
    """Passes a live MLLP listener's batches through, appending each message and each reply to ``path``
    (``redact`` applied to every line); messages are numbered on from those already in the file."""

    def __init__(
        self,
        inner: MllpSource,
        path: Path,
        *,
        idle_seconds: float = 3.0,
        redact: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        connect_seconds: float = 10.0,
    ) -> None:
        super().__init__(inner, path, idle_seconds=idle_seconds, redact=redact, connect_seconds=connect_seconds)
        self._numbers: dict[int, int] = {}
        self._connections: dict[str, int] = {}
        self._number: int | None = None

    def _append(self, line: bytes) -> None:
        with self.path.open("ab") as fh:
            fh.write(line + b"\n")

    def _count(self) -> int:
        if not self.path.exists():
            return 0
        return sum(1 for line in self.path.read_bytes().splitlines() if line.startswith(b'{"message"'))

    def _write(self, batch: list[MllpMessage]) -> None:
        number = self._count() if self._number is None else self._number
        for m in batch:
            number += 1
            self._numbers[m.serial] = number
            connection = self._connections.setdefault(m.peer, len(self._connections) + 1)
            doc: dict[str, Any] = {
                "message": number,
                "connection": connection,
                "received_at": m.received_at.isoformat(),
                **_hl7_doc(m.payload),
            }
            if m.oversized:
                doc["oversized"] = m.oversized
            self._append(_mllp_line(doc, self.redact))
        self._number = number

    def reply(self, serial: int, payload: bytes) -> None:
        number = self._numbers.pop(serial, None)
        if number is not None:
            self._append(_ack_line(number, payload, self.redact))
        self.inner.reply(serial, payload)


class MllpReplaySource(_RecordedMessages[MllpMessage]):
    """Yields the messages of an ``mllp.jsonl`` recording once; compares the replies with the recorded ACKs.

    One instance serves every pass of a replay (``__call__`` returns it): a second pass finds nothing new.
    Messages are batched as recorded — consecutive messages, at most ``batch_max`` — with ``serial`` = the
    recorded message number.
    """

    def __init__(self, path: Path, batch_max: int = 200) -> None:
        if not path.is_file():
            raise ReplayMiss(f"no MLLP recording at {path}: record it with `inlet record`")
        self.path, self.batch_max = path, batch_max
        self.messages: list[MllpMessage] = []
        self.recorded_acks: dict[int, bytes] = {}
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            doc = orjson.loads(line)
            if "message" in doc:
                self.messages.append(
                    MllpMessage(
                        payload=_hl7_bytes(doc),
                        serial=int(doc["message"]),
                        peer=f"connection-{doc.get('connection', 1)}",
                        received_at=datetime.fromisoformat(doc["received_at"]),
                        oversized=int(doc.get("oversized", 0)),
                    )
                )
            elif "ack" in doc:
                self.recorded_acks[int(doc["ack"])] = _hl7_bytes(doc)
        self.replies: dict[int, bytes] = {}
        self._next = 0

    def __call__(self, settings: MllpSettings) -> MllpReplaySource:
        """As ``IntegrationContext.mllp_source``: every connector instance shares this replay."""
        return self

    def reply(self, serial: int, payload: bytes) -> None:
        self.replies[serial] = payload

    def ack_differences(self) -> list[str]:
        """Each message whose replayed acknowledgement (MSA-1, MSA-2) differs from the recorded one, or that got
        none; empty when replay answered every message as the recording did."""
        out = []
        for m in self.messages:
            recorded = self.recorded_acks.get(m.serial)
            replayed = self.replies.get(m.serial)
            if recorded is None and replayed is None:
                continue
            was = _msa(recorded) if recorded is not None else ("(none)", "")
            now = _msa(replayed) if replayed is not None else ("(none)", "")
            if was != now:
                out.append(f"message {m.serial}: recorded ACK {was[0]} {was[1]}, replay answers {now[0]} {now[1]}")
        return out

    def rewrite_acks(self, *, redact: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Replace the recorded acknowledgements by the replayed ones (``inlet replay --update``).

        ``redact``: what the recording was redacted with (``core.fixtures`` makes it as ``record`` does, PHI
        pseudonymised with the same key), so an unchanged connector rewrites the file byte for byte.
        """
        lines = []
        for line in self.path.read_bytes().splitlines():
            if line.strip() and not line.startswith(b'{"ack"'):
                lines.append(line)
                doc = orjson.loads(line)
                if "message" in doc and int(doc["message"]) in self.replies:
                    number = int(doc["message"])
                    lines.append(_ack_line(number, self.replies[number], redact))
        self.path.write_bytes(b"\n".join(lines) + b"\n")
