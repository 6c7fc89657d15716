"""Record the HL7 v2 hospital plugins' fixtures: a generated feed sent over MLLP, recorded with its ACKs.

For St. Marien (ward and bed in ZPV, local lab codes) and Hôpital du Lac (``\\n`` separators, ISO-8859-1
without MSH-18): generates the hospital's morning (``connectors.hl7v2.synth.hospital_feed`` with the
hospital's quirks), starts the integration's real listener on a free loopback port under
``core.fixtures.record`` — what ``inlet record`` does against the hospital's interface engine — and sends
the feed from one real MLLP sender (``tools.mllp_send``, one connection, one message at a time, as interface
engines do). The recording (messages as received, ACKs as sent, PHI pseudonymised) ends after a quiet second.

    .venv/bin/python -m tools.record_hl7
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from inlet.connectors.hl7v2.synth import hospital_feed
from inlet.core.config import load_config
from inlet.core.fixtures import record
from tools.mllp_send import send_all

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "customers"
PSEUDONYM_KEY = "hl7-hospitals-synthetic-data-only"
"""The data is synthetic, so a fixed key is fine *here*; a real customer's key comes from the environment."""

FEEDS: dict[str, Any] = {
    "st-marien/hl7": lambda: hospital_feed(
        6, seed=21, facility="ST MARIEN", zone="Europe/Berlin", zpv=True, lab_codes={"system": "99SML"}, id_prefix="SM"
    ),
    "hopital-du-lac/hl7": lambda: hospital_feed(
        5,
        seed=22,
        facility="HOPITAL DU LAC",
        zone="Europe/Zurich",
        separator="\n",
        charset="latin-1",
        msh18="",
        id_prefix="HL",
    ),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def record_integration(key: str, messages: list[bytes], fixtures: Path | None = None) -> tuple[int, list[Any]]:
    """Record ``key`` of examples/customers while ``messages`` are sent to it; (golden events, sender results)."""
    _, loaded = load_config(CONFIG, only=[key])
    item = next(i for i in loaded if i.config.key == key)
    port = free_port()
    settings: Any = item.settings
    mllp = settings.mllp.model_copy(update={"host": "127.0.0.1", "port": port})
    live = replace(item, settings=settings.model_copy(update={"mllp": mllp}))
    results: list[Any] = []
    sender = threading.Thread(
        target=lambda: results.extend(asyncio.run(send_all("127.0.0.1", port, messages, 1, 10.0, 120.0))), daemon=True
    )
    sender.start()
    count = record(live, fixtures or ROOT / "fixtures" / key, replay_as=item, idle_seconds=1.0)
    sender.join(timeout=30)
    return count, results


if __name__ == "__main__":
    os.environ.setdefault("INLET_PSEUDONYM_KEY", PSEUDONYM_KEY)
    for key, feed in FEEDS.items():
        count, results = record_integration(key, feed())
        acks = sorted({str(r["ack"]) for r in results})
        print(f"recorded fixtures/{key}: {count} golden events; {len(results)} messages acknowledged {acks}")
