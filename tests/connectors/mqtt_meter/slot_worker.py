"""One slot's consumer in a process of its own, for the shared-subscription tests (``test_shared_subscription``).

    python -m tests.connectors.mqtt_meter.slot_worker URL CLIENT_ID FILTER OUT [--hold]

An :class:`~inlet.core.mqtt.MqttSource` (persistent session ``CLIENT_ID``, QoS 1 subscription to ``FILTER``) whose
stand-in for a sink is the file ``OUT``: per message one line ``<digest> <dup>`` (the payload's
:func:`digest`, 1 if the broker flagged the message as a redelivery), appended and fsynced before the batch's
PUBACKs go out. ``--hold`` never sends a PUBACK (a member that dies before its sink confirms anything). The
line ``connected`` on stdout says the subscription is on; the process runs until it is killed or SIGTERMed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from inlet.core.mqtt import MqttSettings, MqttSource


def digest(payload: bytes) -> str:
    """What a worker writes for a message: the first 16 hex digits of its payload's SHA-256."""
    return hashlib.sha256(payload).hexdigest()[:16]


def read_lines(path: Path) -> list[tuple[str, bool]]:
    """A worker's file as ``(digest, dup)`` pairs; a torn last line (killed mid-write) is left out."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 16 and parts[1] in ("0", "1"):
            out.append((parts[0], parts[1] == "1"))
    return out


async def run(url: str, client_id: str, topic_filter: str, out: Path, hold: bool) -> None:
    settings = MqttSettings(url=url, topics=[topic_filter], batch_max=200, batch_linger_seconds=0.005)
    source = MqttSource(settings, client_id)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await source.start()
    await asyncio.to_thread(source.connected.wait, 30)
    print("connected", flush=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        batches = aiter(source.batches())
        while not stop.is_set():
            next_batch = asyncio.ensure_future(anext(batches))
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({next_batch, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not next_batch.done():
                next_batch.cancel()
                break
            stopped.cancel()
            batch = next_batch.result()
            os.write(fd, "".join(f"{digest(m.payload)} {int(m.dup)}\n" for m in batch).encode())
            os.fsync(fd)  # the sink has the batch: only now may the broker forget it
            if not hold:
                source.ack([m.mid for m in batch])
    finally:
        os.close(fd)
        await source.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.connectors.mqtt_meter.slot_worker")
    parser.add_argument("url")
    parser.add_argument("client_id")
    parser.add_argument("filter")
    parser.add_argument("out", type=Path)
    parser.add_argument("--hold", action="store_true", help="never acknowledge")
    args = parser.parse_args(argv)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout says "connected" only
    asyncio.run(run(args.url, args.client_id, args.filter, args.out, args.hold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
