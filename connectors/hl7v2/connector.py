"""The HL7 v2 family: an MLLP listener → parser → ADT / ORU mapping, the ACK sent only after the sink.

Each received message is one record. ``decode`` parses it, ``map`` maps it; the pipeline then hands the events
(or the DLQ record) to the sink and, once the sink holds all of them, calls ``acknowledge`` — which is where the
HL7 acknowledgement of every message of the batch is written back on its connection. So:

- ``AA``: the message's events are in the sink.
- ``AR`` / ``AE`` + ``ERR``: the message is in the DLQ (with the reason); which code for which failure is
  ``ack_codes`` (defaults below, per customer configurable). HL7's meaning: ``AR`` (application reject) says
  the message as sent can never be processed — unreadable, too large, a type this interface does not take —
  and a sender must not resend it unchanged; ``AE`` (application error) says it was read but its content is
  wrong (no patient id, a bad timestamp, a non-numeric NM value), for the sending application's work queue to
  correct and resend.
- nothing: the sink is down; the pipeline fails, the supervisor restarts the integration, the listener closes
  every connection and the senders resend. Identity is ``<MSH-4 sending facility>|<MSH-10>``, so a resent
  message gets the same event ids.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar, Literal

from pydantic import Field
from pydantic import ValidationError as PydanticValidationError

from inlet.contracts.base import Contract
from inlet.contracts.clinical_encounter import EncounterV1
from inlet.contracts.clinical_observation_v3 import ObservationV3
from inlet.contracts.clinical_patient import PatientV1
from inlet.contracts.clinical_patient_merge import PatientMergeV1
from inlet.core.connector import Batch, Connector, PluginSettings
from inlet.core.errors import DecodeError, MappingError, NotReplayable
from inlet.core.mllp import MllpMessage, MllpSettings, MllpSource, open_listener
from inlet.core.scaffold import Scaffold
from inlet.core.types import Position

from .mapping import Unsupported, map_message
from .parser import Message, parse

__all__ = ["AckCodes", "Hl7v2Connector", "Hl7v2Settings", "Parsed", "ack_message"]

AckCode = Literal["AE", "AR"]


class AckCodes(PluginSettings):
    """Which negative acknowledgement each kind of failure gets (module docstring: why these defaults)."""

    parse: AckCode = "AR"
    """Unreadable: no MSH, bad delimiters, undecodable charset, missing MSH-9/MSH-10, larger than the limit."""
    unsupported: AckCode = "AR"
    """A message type or trigger the interface does not map."""
    mapping: AckCode = "AE"
    """Read, but its content is wrong (missing patient id, a bad timestamp or number, a contract violation)."""


class Hl7v2Settings(PluginSettings):
    """An HL7 v2 feed over MLLP."""

    mllp: MllpSettings = Field(default_factory=MllpSettings)
    default_charset: str = "utf-8"
    """The charset of messages whose MSH-18 is empty or ``ASCII`` (a plugin sets ``latin-1`` for senders that
    write ISO-8859-1 without saying so)."""
    ack_codes: AckCodes = Field(default_factory=AckCodes)
    receiving_application: str = "INLET"
    """MSH-3 of the acknowledgements this listener sends."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """A received message with its parsed form."""

    raw: MllpMessage
    message: Message

    @property
    def key(self) -> str:
        m = self.message
        facility = m.get("MSH", 4).strip() or m.get("MSH", 3).strip() or "unknown-facility"
        return f"{facility}|{m.get('MSH', 10).strip()}"


def _escape(text: str, msg: Message | None) -> str:
    esc = "\\" if msg is None else (msg.delimiters.escape or "\\")
    d = msg.delimiters if msg is not None else None
    field, comp, rep, sub = (d.field, d.component, d.repetition, d.subcomponent) if d else ("|", "^", "~", "&")
    out = text.replace(esc, f"{esc}E{esc}").replace(field, f"{esc}F{esc}").replace(comp, f"{esc}S{esc}")
    out = out.replace(rep, f"{esc}R{esc}").replace(sub, f"{esc}T{esc}")
    return " ".join(out.split())[:200]


def ack_message(
    code: str,
    msg: Message | None,
    received_at: datetime,
    error: str | None = None,
    receiving_application: str = "INLET",
    charset: str = "utf-8",
) -> bytes:
    """The HL7 acknowledgement (original mode) of ``msg``: MSH, MSA and, for AE/AR, ERR (HL7 table 0357:
    207 application internal error for AE, 200 unsupported/unreadable for AR)."""
    d = msg.delimiters if msg is not None else None
    f = d.field if d else "|"
    enc = msg.raw_field(msg.segments[0], 2) if msg is not None else "^~\\&"

    def get(number: int, comp: int = 1) -> str:
        return msg.get("MSH", number, comp).strip() if msg is not None else ""

    control = get(10)
    stamp = received_at.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")
    trigger = get(9, 2)
    comp = d.component if d else "^"
    msh = f.join(
        [
            "MSH",
            enc,
            receiving_application,
            get(5) or get(6),
            get(3),
            get(4),
            stamp,
            "",
            f"ACK{comp}{trigger}{comp}ACK" if trigger else "ACK",
            f"ACK-{control}"[:199],
            get(11) or "P",
            get(12) or "2.5.1",
        ]
    )
    segments = [msh, f.join(["MSA", code, control] + ([_escape(error, msg)] if error else []))]
    if error:
        number, name = ("207", "Application internal error") if code == "AE" else ("200", "Unsupported message")
        segments.append(
            f.join(["ERR", "", "", comp.join([number, name, "HL70357"]), "E", "", "", "", _escape(error, msg)])
        )
    return ("\r".join(segments) + "\r").encode(msg.charset if msg is not None else charset, "replace")


class Hl7v2Connector(Connector[Hl7v2Settings]):
    """HL7 v2 ADT and ORU over MLLP, acknowledged only once the events (or the DLQ record) are in the sink."""

    name: ClassVar[str] = "hl7v2"
    settings_model: ClassVar[type[PluginSettings]] = Hl7v2Settings
    contracts: ClassVar[tuple[type[Contract], ...]] = (PatientV1, EncounterV1, ObservationV3, PatientMergeV1)
    description: ClassVar[str] = "HL7 v2 ADT/ORU over MLLP (ACK after the sink)"
    phi: ClassVar[bool] = True
    redelivers: ClassVar[bool] = True  # an MLLP sender resends what was not ACKed
    zone_needed: ClassVar[str] = "HL7 timestamps without an offset are the sending facility's wall time"
    scaffold: ClassVar[Scaffold] = Scaffold(
        family="hl7v2",
        integration="adt",
        zone="Europe/Berlin",
        hooks=("map_message",),
        settings={"mllp": {"host": "127.0.0.1", "port": 2575}},
        record="python -m tools.record_hl7   # a generated feed sent over MLLP, recorded with its ACKs",
    )

    source: MllpSource

    async def open(self) -> None:
        self.source = open_listener(self.ctx, self.settings.mllp)
        self._outcome: dict[int, tuple[str, Message | None, str | None, datetime]] = {}
        await self.source.start()

    async def close(self) -> None:
        await self.source.stop()

    async def read(self, position: Position | None) -> AsyncIterator[Batch]:
        # The position of a push source is the set of ACKs still owed; there is nothing to resume from.
        batches = aiter(self.source.batches())
        wait = self.settings.mllp.once_idle_seconds + 10.0 if self.ctx.run_once else None
        while True:
            try:
                messages = await asyncio.wait_for(anext(batches), wait) if wait else await anext(batches)
            except (StopAsyncIteration, TimeoutError):
                return
            wait = self.settings.mllp.once_idle_seconds if wait else None
            for m in messages:
                self._outcome[m.serial] = ("AA", None, None, m.received_at)
            yield Batch(messages, {"serials": [m.serial for m in messages]})

    def describe_position(self, position: Position | None) -> str:
        return "senders resend what was not ACKed: a position changes nothing"

    async def acknowledge(self, position: Position) -> None:
        """The sink holds every event and DLQ record of these messages: answer each on its connection."""
        s = self.settings
        for serial in position.get("serials", ()):
            code, msg, error, received = self._outcome.pop(serial, ("AA", None, None, datetime.now(UTC)))
            self.source.reply(
                serial, ack_message(code, msg, received, error, s.receiving_application, s.default_charset)
            )

    def _fail(self, raw: MllpMessage, code: str, msg: Message | None, exc: BaseException) -> None:
        self._outcome[raw.serial] = (code, msg, str(exc), raw.received_at)

    def raw_from_dlq(self, payload: bytes) -> MllpMessage:
        """Not replayable from the DLQ: the message was answered AE or AR when it failed, so the sending system
        holds it and resends it (or the hospital's interface engine does) once the plugin is fixed."""
        raise NotReplayable("an HL7 v2 message that failed was answered AE/AR: its sender resends it, not inlet")

    def decode(self, raw: MllpMessage) -> Parsed:
        limit = self.settings.mllp.max_message_bytes
        try:
            if raw.oversized:
                raise DecodeError(
                    f"message of {raw.oversized} bytes exceeds max_message_bytes={limit} "
                    f"(the DLQ keeps its first {limit} bytes)"
                )
            message = parse(raw.payload, self.settings.default_charset)
        except Exception as exc:
            self._fail(raw, self.settings.ack_codes.parse, None, exc)
            if isinstance(exc, DecodeError):
                raise
            raise DecodeError(f"unreadable HL7 v2 message: {exc!r}") from exc
        self._outcome[raw.serial] = ("AA", message, None, raw.received_at)
        return Parsed(raw, message)

    def identity(self, record: Parsed | MllpMessage) -> tuple[str, str]:
        if isinstance(record, Parsed):
            return record.key, "hl7v2"
        return f"unparsed|{hashlib.sha256(record.payload).hexdigest()[:32]}", "hl7v2"

    def map(self, record: Parsed) -> Sequence[Contract]:
        """The family's mapping (:mod:`.mapping`); a plugin post-processes ``super().map(record)``."""
        codes = self.settings.ack_codes
        try:
            return self.map_message(record)
        except Unsupported as exc:
            self._fail(record.raw, codes.unsupported, record.message, exc)
            raise
        except (MappingError, PydanticValidationError, ValueError) as exc:
            self._fail(record.raw, codes.mapping, record.message, exc)
            raise
        except Exception as exc:  # a plugin bug: the DLQ has it, the sender is told to hold it
            self._fail(record.raw, codes.mapping, record.message, exc)
            raise

    def map_message(self, record: Parsed) -> list[Contract]:
        """Hook for plugins: the message's contracts (default: the family's ADT / ORU mapping)."""
        return map_message(record.message, self.ctx.zone)
