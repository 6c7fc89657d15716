"""MLLP over TLS with client certificates: a real CA (openssl), the real connector and pipeline, loopback only."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from inlet.connectors.hl7v2.connector import Hl7v2Connector, Hl7v2Settings
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.metrics import Stats
from inlet.core.mllp import frame
from inlet.core.pipeline import Pipeline
from inlet.core.sinks.memory import MemorySink
from tools.services import CertAuthority, CertFiles

ADT = (
    "MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|INLET|ACME|20240331013000||ADT^A01^ADT_A01|{control}|P|2.5.1\r"
    "EVN|A01|20240331013000\r"
    "PID|1||PAT1^^^GHH^MR||DOE^JANE||19800229|F\r"
    "PV1|1|I|W1^1^1|||||||MED|||||||||VIS1|||||||||||||||||||||||||20240331013000\r"
)


def _client_context(ca: CertAuthority, client: CertFiles | None) -> ssl.SSLContext:
    """A sender that verifies the listener against ``ca`` and presents ``client`` (or no certificate)."""
    context = ssl.create_default_context(cafile=str(ca.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def _send_blocking(port: int, context: ssl.SSLContext, control: str) -> bytes:
    """One message over TLS with the plain ``ssl`` module, as a sender process would; the framed reply.

    Raises what the TLS layer raises when refused: with TLS 1.3 the client's handshake completes before the
    listener has checked its certificate, so the refusal (the listener's alert) arrives on the first read.
    """
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw_socket,
        context.wrap_socket(raw_socket, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(frame(ADT.format(control=control).encode()))
        reply = b""
        while not reply.endswith(b"\x1c\r"):
            chunk = tls.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed without a reply after {len(reply)} bytes")
            reply += chunk
        return reply


async def _send(port: int, context: ssl.SSLContext, control: str) -> bytes:
    return await asyncio.wait_for(asyncio.to_thread(_send_blocking, port, context, control), 20)


async def test_tls_listener_requires_a_client_certificate_from_its_ca(
    tmp_path: Path, checkpoint_store: CheckpointStore
) -> None:
    ca = CertAuthority(tmp_path / "ca")  # no openssl binary: a failure naming it, never a skip
    server = ca.issue("listener", server=True)
    sender = ca.issue("lab-sender")
    intruder = CertAuthority(tmp_path / "foreign", name="someone else's CA").issue("intruder")

    loop = asyncio.get_running_loop()
    escaped: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: escaped.append(context))

    connector = Hl7v2Connector(
        IntegrationContext("acme", "hl7", zone="Europe/Berlin"),
        Hl7v2Settings.model_validate(
            {
                "mllp": {
                    "port": 0,
                    "tls_certfile": str(server.cert),
                    "tls_keyfile": str(server.key),
                    "tls_client_cafile": str(ca.cert),
                }
            }
        ),
    )
    await connector.start()
    sink = MemorySink()
    stop = asyncio.Event()
    task = asyncio.create_task(
        Pipeline(connector, Enveloper("acme", "hl7"), sink, checkpoint_store, Stats("acme", "hl7")).run(None, stop)
    )
    port = connector.source.port  # type: ignore[attr-defined]
    try:
        assert b"MSA|AA|OK1" in await _send(port, _client_context(ca, sender), "OK1")

        # A certificate from another CA: the listener refuses the handshake and logs why; the sender's connection
        # ends without a reply (asyncio does not send the TLS alert), so it never takes the message as accepted.
        with capture_logs() as logs:
            with pytest.raises((ssl.SSLError, ConnectionError)) as foreign:
                await _send(port, _client_context(ca, intruder), "FOREIGN1")
            # No certificate at all: refused too.
            with pytest.raises((ssl.SSLError, ConnectionError)) as missing:
                await _send(port, _client_context(ca, None), "NOCERT1")
        refused = [e for e in logs if e["event"] == "mllp TLS handshake refused"]
        print(f"\nsender with a foreign certificate: {foreign.value!r}\nsender without one: {missing.value!r}")
        print(
            "listener:", *(f"{e['log_level']}: {e['event']}: {e['reason']} ({e['error']})" for e in refused), sep="\n  "
        )
        assert [e["log_level"] for e in refused] == ["warning", "warning"], logs
        assert refused[0]["reason"] == "CERTIFICATE_VERIFY_FAILED", refused[0]
        assert "unable to get local issuer" in refused[0]["error"], refused[0]
        assert "CERTIFICATE" in refused[1]["reason"], refused[1]
        assert connector.source.refused_handshakes == 2  # type: ignore[attr-defined]

        # Plain TCP to the TLS port: never acknowledged.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(ADT.format(control="PLAIN1").encode()))
        await writer.drain()
        assert b"MSA" not in await asyncio.wait_for(reader.read(), 10)
        writer.close()

        # The listener is unharmed: the valid sender is served again.
        assert b"MSA|AA|OK2" in await _send(port, _client_context(ca, sender), "OK2")
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await connector.stop()
        loop.set_exception_handler(None)
    assert not escaped, escaped  # nothing reached the event loop's exception handler
    stored = [e.topic for e in sink.events]
    assert stored.count("clinical.encounter.v1") == 2, stored  # OK1 and OK2; nothing of the refused senders
    assert not any(e.topic.startswith("inlet.dlq") for e in sink.events)
