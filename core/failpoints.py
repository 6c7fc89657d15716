"""Failpoints: ``INLET_FAILPOINT`` makes the process SIGKILL itself at a named point, for crash tests only.

A kill at a random moment rarely lands in the window that matters (the sink holds a message's events, the
sender has no ACK yet); a failpoint puts it there deterministically. The points: ``mllp.after_sink`` (a
message's events are in the sink, its ACK not sent) and ``dlq.after_sink`` (``inlet dlq replay``: a chunk's
events are acknowledged by the sink, their DLQ records not yet marked resolved) and ``position.save`` (a fleet's
batch is in the sink, its position not yet committed to the positions topic: ``core.positions``).
``position.save`` (a batch's events are sent to Kafka, its position not yet written; exactly-once: inside the
open transaction, before its commit) and ``pipeline.after_commit`` (a batch is committed, its upstream
acknowledgement — an MQTT PUBACK — not yet sent).
``INLET_FAILPOINT=mllp.after_sink:3`` kills the process at the 3rd time the point ``mllp.after_sink`` is
reached; several are separated by commas. ``NAME:N:stop`` sends SIGSTOP instead: the process freezes there (a
long GC pause, a partitioned host) until a SIGCONT, which is how the fleet tests freeze a replica inside a
transaction. Never set it in production: the process dies exactly as with ``kill -9`` (no cleanup, nothing
flushed).

The variable is read once, when a :class:`Failpoint` is made (a listener's start): an unset failpoint costs one
``is None`` test per hit. A malformed value raises ``ValueError`` naming it, so a test cannot silently run
without its kill.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Final

__all__ = ["ENV", "Failpoint", "configured"]

ENV: Final = "INLET_FAILPOINT"
_ENTRY: Final = re.compile(r"([a-z0-9_.]+):([1-9][0-9]*)(?::(kill|stop))?")


def configured(name: str, value: str | None = None) -> int | None:
    """At which hit of failpoint ``name`` the process is to die (``value``: default ``$INLET_FAILPOINT``)."""
    found = _configured(name, value)
    return None if found is None else found[0]


def _configured(name: str, value: str | None = None) -> tuple[int, str] | None:
    value = os.environ.get(ENV, "") if value is None else value
    at = None
    for entry in filter(None, (e.strip() for e in value.split(","))):
        m = _ENTRY.fullmatch(entry)
        if m is None:
            raise ValueError(
                f"{ENV}={value!r}: {entry!r} is not NAME:N or NAME:N:stop (e.g. mllp.after_sink:3, N from 1)"
            )
        if m[1] == name:
            at = (int(m[2]), m[3] or "kill")
    return at


class Failpoint:
    """One named point; :meth:`hit` counts the passes and SIGKILLs the process at the configured one."""

    __slots__ = ("at", "hits", "name", "signal")

    def __init__(self, name: str) -> None:
        self.name = name
        found = _configured(name)
        self.at = None if found is None else found[0]
        self.signal = signal.SIGSTOP if found is not None and found[1] == "stop" else signal.SIGKILL
        self.hits = 0

    def hit(self) -> None:
        if self.at is None:
            return
        self.hits += 1
        if self.hits == self.at:
            sys.stderr.write(f"{ENV}: {self.name} reached ({self.hits}): {self.signal.name}\n")
            sys.stderr.flush()
            os.kill(os.getpid(), self.signal)
