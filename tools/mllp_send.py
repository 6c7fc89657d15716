"""A real MLLP sender (a separate process in tests): sends HL7 v2 messages, waits for each ACK, resends on loss.

    python -m tools.mllp_send --port 2575 [--senders 20] [--timeout 30] FILE...   (or messages on stdin,
    separated by blank lines)

Each sender holds one connection and sends its share of the messages one at a time (MLLP is synchronous);
when the connection drops or no ACK arrives within ``--ack-timeout`` it reconnects (retrying while the
listener is away) and resends the same bytes. Prints one JSON line per message: its MSH-10, ACK code, attempts and
``latency_ms`` (from writing the message, last attempt, to reading its ACK).

``--rate R`` paces the senders together at R messages per second (each sender at R / senders, on a fixed
schedule: a sender that falls behind sends at once, it never skips), for latency at a known load; without it
every sender sends its next message as soon as the previous one is acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path

START, END = b"\x0b", b"\x1c\x0d"


async def _send_one(
    host: str,
    port: int,
    payload: bytes,
    ack_timeout: float,
    deadline: float,
    conn: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None],
) -> tuple[str, int, float]:
    attempts = 0
    while time.monotonic() < deadline:
        attempts += 1
        try:
            pair = conn[0]
            if pair is None:
                pair = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
                conn[0] = pair
            reader, writer = pair
            sent = time.perf_counter()
            writer.write(START + payload + END)
            await writer.drain()
            reply = await asyncio.wait_for(reader.readuntil(END), ack_timeout)
            latency_ms = (time.perf_counter() - sent) * 1000
            text = reply.strip(START + END).decode("utf-8", "replace")
            m = re.search(r"(?:^|\r)MSA.(A[AER]|C[AER])", text)
            return (m.group(1) if m else "??"), attempts, latency_ms
        except (OSError, asyncio.IncompleteReadError, TimeoutError, asyncio.LimitOverrunError):
            if conn[0] is not None:
                conn[0][1].transport.abort()
            conn[0] = None
            await asyncio.sleep(0.2)
    return "TIMEOUT", attempts, 0.0


async def _sender(
    host: str,
    port: int,
    messages: list[bytes],
    ack_timeout: float,
    deadline: float,
    out: list[dict[str, object]],
    interval: float = 0.0,
    start: float = 0.0,
) -> None:
    conn: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = [None]
    for n, payload in enumerate(messages):
        if interval:
            await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
        code, attempts, latency_ms = await _send_one(host, port, payload, ack_timeout, deadline, conn)
        head = re.split(rb"[\r\n]", payload)[0]
        fields = head.split(head[3:4]) if head.startswith(b"MSH") and len(head) > 3 else []
        control = fields[9].decode("latin-1") if len(fields) > 9 else ""
        out.append({"control_id": control, "ack": code, "attempts": attempts, "latency_ms": round(latency_ms, 3)})
    if conn[0] is not None:
        conn[0][1].close()


async def send_all(
    host: str, port: int, messages: list[bytes], senders: int, ack_timeout: float, within: float, rate: float = 0.0
) -> list[dict[str, object]]:
    deadline = time.monotonic() + within
    out: list[dict[str, object]] = []
    shares = [messages[i::senders] for i in range(senders)]
    interval = senders / rate if rate > 0 else 0.0
    start = time.monotonic()
    await asyncio.gather(
        *(
            _sender(host, port, s, ack_timeout, deadline, out, interval, start + i * interval / senders)
            for i, s in enumerate(shares)
            if s
        )
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--senders", type=int, default=1)
    p.add_argument("--ack-timeout", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--rate", type=float, default=0.0, help="messages per second, all senders together (0: unpaced)")
    p.add_argument("files", nargs="*")
    a = p.parse_args(argv)
    if a.files:
        messages = [Path(f).read_bytes() for f in a.files]
    else:
        messages = [m.strip(b"\n") for m in sys.stdin.buffer.read().split(b"\n\n") if m.strip()]
    for r in asyncio.run(send_all(a.host, a.port, messages, a.senders, a.ack_timeout, a.timeout, a.rate)):
        print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
