"""Every timestamp the HL7 v2 mapping reads from the sample corpus, checked against an independent reading.

The expected instant is computed here with nothing but ``re``, ``datetime`` and ``zoneinfo`` — not
``core.time.normalise`` and not the family's parser: the message is split by hand (MSH-1 field separator, MSH-2
component and repetition separators), the DTM ``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`` is read
digit by digit, a value without an offset is a wall time in the integration's zone read with PEP 495
``fold=0`` (the earlier of a repeated hour, a skipped hour moved later by the gap: the family's documented
``ambiguous="earliest"`` / ``nonexistent="shift_forward"``), a date alone is the start of that day, and
``YYYYMMDDHH`` is HH:00.
"""

from __future__ import annotations

import collections
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from inlet.connectors.hl7v2.connector import Hl7v2Connector, Hl7v2Settings
from inlet.connectors.hl7v2.parser import split_batch
from inlet.contracts.clinical_encounter import EncounterV1
from inlet.contracts.clinical_observation_v2 import ObservationV2
from inlet.contracts.clinical_patient import PatientV1
from inlet.contracts.clinical_patient_merge import PatientMergeV1
from inlet.core.connector import IntegrationContext
from inlet.core.mllp import MllpMessage

ZONE = "America/New_York"  # the corpus is mostly US senders; the same zone as the corpus coverage test
_DTM = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?")


def expected_utc(value: str, zone: str = ZONE) -> datetime | None:
    """The independent reading of one HL7 DTM (module docstring); None for an empty value."""
    value = value.strip()
    if not value:
        return None
    m = _DTM.fullmatch(value)
    assert m is not None, f"not a DTM: {value!r}"
    year, month, day, hour, minute, second, fraction, offset = m.groups()
    micro = int((fraction or "").ljust(6, "0")) if fraction else 0
    sec = int(second or 0)
    if sec == 60:  # a leap second: clamped into its own minute
        sec, micro = 59, 999_999
    wall = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), sec, micro)
    if offset:
        sign = -1 if offset[0] == "-" else 1
        tz: Any = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
        return wall.replace(tzinfo=tz).astimezone(UTC)
    return wall.replace(tzinfo=ZoneInfo(zone), fold=0).astimezone(UTC)


class _Hand:
    """The message split by hand: segments, fields, first repetition, components (no escapes: DTMs have none)."""

    def __init__(self, data: bytes) -> None:
        text = data.decode("latin-1").lstrip("\ufeff\n\r ")
        self.field, self.component, self.repetition = text[3], text[4], text[5]
        self.segments = [s for s in re.split(r"\r\n|\r|\n", text) if s.strip()]

    def fields(self, segment: str) -> list[str]:
        parts = segment.split(self.field)
        if parts[0] == "MSH":  # MSH-1 is the separator itself: MSH-n is parts[n - 1]
            parts.insert(1, self.field)
        return parts

    def get(self, fields: list[str] | None, number: int, component: int = 1) -> str:
        if fields is None or number >= len(fields):
            return ""
        comps = fields[number].split(self.repetition)[0].split(self.component)
        return comps[component - 1].strip() if component <= len(comps) else ""

    def first(self, name: str) -> list[str] | None:
        return next((self.fields(s) for s in self.segments if s.startswith(name + self.field)), None)

    def all(self, name: str) -> list[list[str]]:
        return [self.fields(s) for s in self.segments if s.startswith(name + self.field) or s == name]


def _as_day(d: Any) -> datetime | None:
    return None if d is None else datetime(d.year, d.month, d.day, tzinfo=UTC)


def _expectations(hand: _Hand, events: list[Any]) -> list[tuple[str, str, datetime | None, datetime | None]]:
    """(field, raw value, expected UTC, what the event carries) for every timestamp the mapping reads."""
    out: list[tuple[str, str, datetime | None, datetime | None]] = []

    def check(name: str, value: str, actual: datetime | None) -> None:
        out.append((name, value, expected_utc(value), actual))

    msh, evn = hand.first("MSH"), hand.first("EVN")
    updated_field, updated = ("EVN-2", hand.get(evn, 2)) if hand.get(evn, 2) else ("MSH-7", hand.get(msh, 7))
    pid, pv1 = hand.first("PID"), hand.first("PV1")
    observations = iter(e for e in events if isinstance(e, ObservationV2))
    for event in events:
        if isinstance(event, PatientV1):
            check(updated_field, updated, event.source_last_updated)
            check("PID-29", hand.get(pid, 29), event.deceased_at)
            born = hand.get(pid, 7)  # a calendar date, no zone: compared as a date (midnight UTC on both sides)
            out.append(
                (
                    "PID-7 (date)",
                    born,
                    _as_day(expected_utc(born[:8], "UTC") if born else None),
                    _as_day(event.birth_date),
                )
            )
        elif isinstance(event, EncounterV1):
            check(updated_field, updated, event.source_last_updated)
            check("PV1-44", hand.get(pv1, 44), event.period_start)
            check("PV1-45", hand.get(pv1, 45), event.period_end)
        elif isinstance(event, PatientMergeV1):
            check(updated_field, updated, event.merged_at)
    if hand.get(msh, 9).upper() != "ORU":  # OBX in an ADT message is not mapped
        return out
    obr: list[str] | None = None
    for segment in hand.segments:
        fields = hand.fields(segment)
        if fields[0] == "OBR":
            obr = fields
        elif fields[0] == "OBX":
            obs = next(observations)
            if hand.get(fields, 14):
                check("OBX-14", hand.get(fields, 14), obs.effective_start)
            else:
                check("OBR-7", hand.get(obr, 7), obs.effective_start)
            check("OBR-22", hand.get(obr, 22), obs.issued)
            value = getattr(obs.value, "value", None)
            if hand.get(fields, 2).upper() in ("DT", "DTM", "TS") and isinstance(value, datetime):
                check(f"OBX-5 ({hand.get(fields, 2)})", hand.get(fields, 5), value)
    return out


def test_every_corpus_timestamp_matches_an_independent_reading(sample_data: Path) -> None:
    root = sample_data / "hl7v2"
    connector = Hl7v2Connector(IntegrationContext("acme", "hl7", zone=ZONE), Hl7v2Settings())
    connector._outcome = {}
    checked: collections.Counter[str] = collections.Counter()
    empty: collections.Counter[str] = collections.Counter()
    mismatches = []
    messages = serial = 0
    for path in sorted(p for p in root.rglob("*.hl7") if p.is_file()):
        data = path.read_bytes()
        for message in list(split_batch(data)) or [data]:
            serial += 1
            try:
                events = list(
                    connector.map(
                        connector.decode(MllpMessage(message, serial, "corpus", datetime(2024, 1, 1, tzinfo=UTC)))
                    )
                )
            except Exception:  # DLQ'd messages carry no timestamps (the coverage test checks them)
                continue
            messages += 1
            for name, value, expected, actual in _expectations(_Hand(message), events):
                if expected is None and actual is None:
                    empty[name] += 1
                    continue
                checked[name] += 1
                if expected != actual:
                    mismatches.append((path.relative_to(root), name, value, expected, actual))
    print(f"\n{messages} mapped messages of the corpus, zone {ZONE}; timestamps compared per field:")
    for name in sorted(set(checked) | set(empty)):
        print(f"  {name:14} {checked[name]:5} compared  {empty[name]:5} empty on both sides")
    print(f"  {'total':14} {sum(checked.values()):5} compared, {len(mismatches)} mismatches")
    for mismatch in mismatches[:20]:
        print("  MISMATCH", *mismatch)
    assert messages >= 70 and sum(checked.values()) >= 200
    assert not mismatches, mismatches[:10]


def test_the_independent_reading_itself() -> None:
    # Spot values computed by hand: offsets, a naive wall time in New York (EST / EDT), the repeated and the
    # skipped hour, precisions from a year to 1/10000 s.
    assert expected_utc("20240301101500+0100") == datetime(2024, 3, 1, 9, 15, tzinfo=UTC)
    assert expected_utc("20240115083000") == datetime(2024, 1, 15, 13, 30, tzinfo=UTC)
    assert expected_utc("20240715083000") == datetime(2024, 7, 15, 12, 30, tzinfo=UTC)
    assert expected_utc("202411030130") == datetime(2024, 11, 3, 5, 30, tzinfo=UTC)  # earliest (EDT)
    assert expected_utc("202403100230") == datetime(2024, 3, 10, 7, 30, tzinfo=UTC)  # gap: read as EST
    assert expected_utc("2024") == datetime(2024, 1, 1, 5, tzinfo=UTC)
    assert expected_utc("2024031012") == datetime(2024, 3, 10, 16, tzinfo=UTC)
    assert expected_utc("20240301101500.1234-0500") == datetime(2024, 3, 1, 15, 15, 0, 123400, tzinfo=UTC)
