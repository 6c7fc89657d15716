"""DLQ tooling: read the dead-letter queue of a config's sink, show a record redacted, replay records after a fix.

Reading (``inlet dlq list`` / ``show``) follows the config's sink:

- **outbox** (``sink: outbox``, or ``auto`` without Kafka, or the relay): the rows of the DLQ topics in
  ``<state_dir>/outbox.sqlite`` (read only; the ``at`` column says when a row was written);
- **Kafka**: the DLQ topics (``dlq_topic_template`` per integration) from the beginning, ``read_committed``, with
  no consumer group (nothing is committed, nothing moves), up to the end offsets taken when the scan starts,
  :data:`SCAN_LIMIT` records or :data:`SCAN_SECONDS` seconds, whichever comes first: a bounded scan.

A DLQ record is named by its ``ce_id`` (deterministic: the source key or position and the stage) together with a
digest of its payload, since a later version of one source record failing at the same stage has the same id.
The same record written twice (a batch redelivered after a crash) is one record.

Replay (:func:`replay`) sends the original raw payloads through the integration's connector again with the
pipeline's own :func:`~inlet.core.pipeline.process_batch` (decode → filter → map → validate → envelope), so its
events have the ids a first delivery would have had (they derive from the source identity and the contract),
into the same sink. A record is marked resolved in ``<state_dir>/dlq.sqlite`` (table ``dlq_resolved``, keyed by
DLQ id and payload digest) only after the sink acknowledged its events: a kill between the acknowledgement and
the mark makes the next replay send the same events with the same ids again (at least once, stable ids), and
the mark is written once. A resolved record is not replayed again. A record that still fails stays in the DLQ
as it is: no new DLQ record is written for it, the replay reports its new reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from inlet.core.config import LoadedIntegration, SupervisorConfig
from inlet.core.connector import Batch
from inlet.core.drift import Shape
from inlet.core.envelope import Enveloper, Event
from inlet.core.errors import DlqError, NotReplayable
from inlet.core.failpoints import Failpoint
from inlet.core.pipeline import DriftCheck, process_batch
from inlet.core.redact import Redactor

__all__ = [
    "PREVIEW_BYTES",
    "REPLAYABLE_STAGES",
    "SCAN_LIMIT",
    "SCAN_SECONDS",
    "DlqEntry",
    "Outcome",
    "ReplayReport",
    "Resolutions",
    "dlq_topics",
    "filter_entries",
    "parse_since",
    "preview",
    "read_dlq",
    "replay",
    "scrub",
]

SCAN_LIMIT = 100_000
"""The most DLQ records one Kafka scan reads (``--scan-limit``): a bounded scan, however large the topics."""
SCAN_SECONDS = 60.0
"""The longest one Kafka scan takes before it reports what it has read."""
PREVIEW_BYTES = 2048
"""How much of a payload ``inlet dlq show`` prints (redacted first, then cut)."""
REPLAYABLE_STAGES = frozenset({"decode", "map", "validate"})
"""The stages whose payload is the source record: a ``sink`` record's payload is the refused event itself."""
CHUNK = 200
"""DLQ records replayed per sink acknowledgement (and per resolution transaction)."""

_RESOLUTIONS = """
CREATE TABLE IF NOT EXISTS dlq_resolved (
    dlq_id      TEXT NOT NULL,
    digest      TEXT NOT NULL,
    customer    TEXT NOT NULL,
    integration TEXT NOT NULL,
    resolved_at REAL NOT NULL,
    outcome     TEXT NOT NULL,
    events      INTEGER NOT NULL,
    PRIMARY KEY (dlq_id, digest)
);
"""


@dataclass
class DlqEntry:
    """One DLQ record as read back from the sink."""

    id: str
    customer: str
    integration: str
    stage: str
    error_type: str
    message: str
    position: Any
    source_key: str | None
    payload: bytes
    headers: dict[str, str]
    at: datetime | None
    """When it was written (outbox row time, Kafka record timestamp); None for outbox rows from before that."""
    where: str
    """Where it lies: ``outbox seq N`` or ``topic[partition]@offset``."""
    copies: int = 1
    resolved: str | None = None
    """The resolution's outcome and time when it was replayed successfully, else None."""

    @property
    def key(self) -> str:
        return f"{self.customer}/{self.integration}"

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()[:16]

    @property
    def truncated(self) -> bool:
        return self.headers.get("dlq_payload_truncated") == "true"


def _entry(headers: dict[str, str], payload: bytes, at: datetime | None, where: str) -> DlqEntry:
    raw_position = headers.get("dlq_position") or ""
    try:
        position: Any = orjson.loads(raw_position) if raw_position else None
    except orjson.JSONDecodeError:
        position = raw_position
    return DlqEntry(
        id=headers.get("ce_id", ""),
        customer=headers.get("ce_customer", ""),
        integration=headers.get("ce_integration", ""),
        stage=headers.get("dlq_stage", ""),
        error_type=headers.get("dlq_error_type", ""),
        message=headers.get("dlq_error_message", ""),
        position=position,
        source_key=headers.get("dlq_source_key"),
        payload=payload,
        headers=headers,
        at=at,
        where=where,
    )


def dlq_topics(cfg: SupervisorConfig, integrations: Iterable[LoadedIntegration]) -> list[str]:
    """The DLQ topics of ``integrations`` (one, when the template names no integration)."""
    return sorted(
        {
            cfg.dlq_topic_template.format(customer=i.config.customer, integration=i.config.integration)
            for i in integrations
        }
    )


def _dedup(entries: Iterable[DlqEntry]) -> list[DlqEntry]:
    """One entry per (id, payload digest), oldest first; copies counted."""
    seen: dict[tuple[str, str], DlqEntry] = {}
    for e in entries:
        ref = (e.id, e.digest)
        if ref in seen:
            seen[ref].copies += 1
        else:
            seen[ref] = e
    return list(seen.values())


# -- reading ---------------------------------------------------------------------------------------------------


def read_outbox_dlq(path: Path, topics: Sequence[str], *, limit: int = SCAN_LIMIT) -> list[DlqEntry]:
    """The DLQ rows of ``topics`` in the outbox at ``path`` (read only), oldest first, at most ``limit``."""
    if not path.exists() or not topics:
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    marks = ",".join("?" * len(topics))
    try:
        try:
            rows = conn.execute(
                f"SELECT seq, value, headers, at FROM events WHERE topic IN ({marks}) ORDER BY seq LIMIT ?",
                (*topics, limit),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such column" in str(exc):  # an outbox no sink of this version has opened yet: no times
                rows = conn.execute(
                    f"SELECT seq, value, headers, NULL FROM events WHERE topic IN ({marks}) ORDER BY seq LIMIT ?",
                    (*topics, limit),
                ).fetchall()
            elif "no such table" in str(exc):
                return []
            else:
                raise
    finally:
        conn.close()
    return [
        _entry(
            {str(k): str(v) for k, v in orjson.loads(headers).items()},
            bytes(value),
            datetime.fromtimestamp(at, UTC) if at is not None else None,
            f"outbox seq {seq}",
        )
        for seq, value, headers, at in rows
    ]


async def read_kafka_dlq(
    cfg: SupervisorConfig, topics: Sequence[str], *, limit: int = SCAN_LIMIT, seconds: float = SCAN_SECONDS
) -> list[DlqEntry]:
    """The records of ``topics`` on Kafka from the beginning up to the end offsets seen at the start (committed
    transactions only, no consumer group), at most ``limit`` of them, within ``seconds``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from inlet.core.kafka_client import connection_options, start_client

    assert cfg.kafka is not None
    consumer = AIOKafkaConsumer(
        **connection_options(cfg.kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    out: list[DlqEntry] = []
    loop = asyncio.get_running_loop()
    try:
        await start_client(consumer, cfg.kafka)
        partitions = []
        for topic in topics:
            for p in sorted(await _partitions(consumer, topic)):
                partitions.append(TopicPartition(topic, p))
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends: dict[Any, int] = await consumer.end_offsets(partitions)
        todo = {tp for tp in partitions if ends[tp] > 0}
        for tp in list(todo):
            if await consumer.position(tp) >= ends[tp]:
                todo.discard(tp)
        deadline = loop.time() + seconds
        while todo and len(out) < limit and loop.time() < deadline:
            got = await consumer.getmany(*todo, timeout_ms=500, max_records=min(5000, limit - len(out)))
            for tp, records in got.items():
                for r in records:
                    if r.offset >= ends[tp]:
                        continue
                    headers = {k: bytes(v).decode("utf-8", "replace") for k, v in r.headers or ()}
                    at = datetime.fromtimestamp(r.timestamp / 1000, UTC) if r.timestamp is not None else None
                    out.append(_entry(headers, bytes(r.value or b""), at, f"{tp.topic}[{tp.partition}]@{r.offset}"))
            for tp in list(todo):  # transaction markers take offsets too: the position says when a partition is read
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    return out[:limit]


async def _partitions(consumer: Any, topic: str) -> set[int]:
    """A topic's partitions; empty when it does not exist (no DLQ record was ever written)."""
    await consumer._client.force_metadata_update()  # fresh: a topic created a moment ago is known
    return set(consumer.partitions_for_topic(topic) or ())


def read_dlq(
    cfg: SupervisorConfig,
    integrations: Sequence[LoadedIntegration],
    *,
    limit: int = SCAN_LIMIT,
    seconds: float = SCAN_SECONDS,
) -> list[DlqEntry]:
    """Every DLQ record of ``integrations`` in the config's sink (deduplicated, oldest first), with its resolution."""
    from inlet.core.supervisor import state_dir

    topics = dlq_topics(cfg, integrations)
    if cfg.resolved_sink() == "kafka":
        entries = asyncio.run(read_kafka_dlq(cfg, topics, limit=limit, seconds=seconds))
    else:
        entries = read_outbox_dlq(state_dir(cfg) / "outbox.sqlite", topics, limit=limit)
    keys = {i.config.key for i in integrations}
    entries = _dedup(e for e in entries if e.key in keys)  # a shared DLQ topic holds other integrations' too
    with Resolutions(state_dir(cfg) / "dlq.sqlite") as store:
        store.annotate(entries)
    return entries


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """``--since``: an ISO 8601 time (no offset: UTC) or a duration back from now (``90s``, ``15m``, ``2h``, ``3d``)."""
    now = now or datetime.now(UTC)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m[2]]
        return now - timedelta(seconds=float(m[1]) * unit)
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DlqError(f"--since {value!r}: give an ISO 8601 time (2025-01-31T08:00Z) or a duration (2h)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def filter_entries(
    entries: Iterable[DlqEntry],
    *,
    stage: str | None = None,
    error_type: str | None = None,
    since: datetime | None = None,
    state: str = "all",
) -> list[DlqEntry]:
    """The entries that match every filter given (``state``: ``open``, ``resolved`` or ``all``).

    With ``since``, a record without a time (an outbox row written before rows had one) does not match."""
    out = []
    for e in entries:
        if stage is not None and e.stage != stage:
            continue
        if error_type is not None and e.error_type != error_type:
            continue
        if since is not None and (e.at is None or e.at < since):
            continue
        if (state == "open" and e.resolved) or (state == "resolved" and not e.resolved):
            continue
        out.append(e)
    return out


# -- resolutions -----------------------------------------------------------------------------------------------


class Resolutions:
    """``<state_dir>/dlq.sqlite``: which DLQ records a replay resolved (WAL, synchronous=FULL: a mark is on disk
    when :meth:`resolve` returns). Works the same for both sinks."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_RESOLUTIONS)

    def __enter__(self) -> Resolutions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def annotate(self, entries: Iterable[DlqEntry]) -> None:
        """Set ``resolved`` on the entries a replay resolved."""
        done = {
            (i, d): f"{outcome} at {datetime.fromtimestamp(t, UTC).isoformat(timespec='seconds')}"
            for i, d, outcome, t in self._conn.execute("SELECT dlq_id, digest, outcome, resolved_at FROM dlq_resolved")
        }
        for e in entries:
            e.resolved = done.get((e.id, e.digest))

    def resolve(self, done: Sequence[tuple[DlqEntry, str, int]]) -> int:
        """Mark ``(entry, outcome, events)`` resolved in one transaction; a record marked already stays as it was.
        Returns how many were new."""
        now = time.time()
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT OR IGNORE INTO dlq_resolved VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(e.id, e.digest, e.customer, e.integration, now, outcome, n) for e, outcome, n in done],
            )
            return self._conn.total_changes - before

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM dlq_resolved").fetchone()[0])


# -- showing ---------------------------------------------------------------------------------------------------


def _redactor(phi: bool) -> Redactor:
    """Secrets always; PHI pseudonymised for a healthcare plugin — under ``INLET_PSEUDONYM_KEY`` when set (the
    pseudonyms of its recorded fixtures), else under a key of this process only (nothing to match, nothing kept)."""
    key = os.environ.get("INLET_PSEUDONYM_KEY", "")
    return Redactor(key.encode() if len(key) >= 16 else os.urandom(32), phi=phi)


def scrub(text: str, *, phi: bool, redactor: Redactor | None = None) -> str:
    """A message or header value as it may be shown: secrets masked, person references pseudonymised (PHI)."""
    r = redactor or _redactor(phi)
    return str(r({"text": text})["text"])


def preview(payload: bytes, *, phi: bool, limit: int = PREVIEW_BYTES, redactor: Redactor | None = None) -> str:
    """A payload as ``inlet dlq show`` prints it: redacted as recordings are, then cut to ``limit`` bytes.

    JSON goes through the recordings' redaction (secrets; PHI in every FHIR resource when ``phi``); an HL7 v2
    message through its HL7 redaction; other bytes of a PHI plugin are withheld (nothing says where PHI is in
    them), of any other plugin shown as text with secrets masked."""
    r = redactor or _redactor(phi)
    text: str
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        decoded = payload.decode("utf-8", "replace")
        if phi and decoded.startswith("MSH"):
            text = r.hl7(decoded)
            text = scrub(text, phi=phi, redactor=r).replace("\r", "\n")
        elif phi:
            return f"({len(payload)} bytes, neither JSON nor HL7 v2: withheld for a healthcare integration)"
        else:
            text = scrub(decoded, phi=False, redactor=r)
    else:
        text = orjson.dumps(r({"payload": doc})["payload"], option=orjson.OPT_INDENT_2).decode()
    data = text.encode()
    if len(data) > limit:
        return data[:limit].decode("utf-8", "ignore") + f"\n… ({len(data)} bytes redacted, the first {limit} shown)"
    return text


# -- replay ----------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What replaying one DLQ record did (or, in a dry run, would do)."""

    entry: DlqEntry
    status: str
    """``resolved`` (events acknowledged by the sink), ``filtered`` (the plugin now leaves it out on purpose:
    resolved without events), ``failed`` (fails again: ``reason``), ``refused`` (the sink refused an event),
    ``skipped`` (not replayable or already resolved), ``would resolve`` / ``would filter`` (dry run)."""
    reason: str = ""
    event_ids: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list, repr=False)


@dataclass
class ReplayReport:
    """A replay's outcomes, in the order of the DLQ records."""

    outcomes: list[Outcome] = field(default_factory=list)
    already: int = 0
    """Matching records resolved by an earlier replay: left alone."""
    marked: int = 0
    """Resolutions written by this replay."""

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


def _check(entry: DlqEntry) -> None:
    if entry.stage not in REPLAYABLE_STAGES:
        raise NotReplayable(
            f"stage {entry.stage}: the payload is "
            + ("the event the sink refused, not a source record" if entry.stage == "sink" else "no source record")
        )
    if entry.truncated:
        raise NotReplayable("its payload was cut short to fit the DLQ topic: the source record is not all there")


def _attempt(connector: Any, env: Enveloper, drift: DriftCheck | None, entry: DlqEntry) -> Outcome:
    """One record through the pipeline's own processing: its events, its filter reason, or its new failure."""
    try:
        _check(entry)
        raw = connector.raw_from_dlq(entry.payload)
    except NotReplayable as exc:
        return Outcome(entry, "skipped", f"not replayable: {exc}")
    position = entry.position if isinstance(entry.position, dict) else {}
    events, counts = process_batch(connector, env, Batch([raw], position), drift)
    if counts.dlq:
        (stage, error_type, message), _ = next(iter(counts.reasons.items()))
        return Outcome(entry, "failed", f"{stage} {error_type}: {message}")
    if counts.filtered:
        return Outcome(entry, "filtered", next(iter(counts.filtered)))
    # Drift alerts were raised when the record first failed: the replay delivers its events only.
    kept = [e for e in events if e.topic != env.drift_topic]
    return Outcome(entry, "resolved", event_ids=[e.id for e in kept], events=kept)


async def replay(
    cfg: SupervisorConfig,
    item: LoadedIntegration,
    entries: Sequence[DlqEntry],
    *,
    dry_run: bool = False,
    chunk: int = CHUNK,
) -> ReplayReport:
    """Replay ``entries`` (DLQ records of ``item``, annotated with their resolutions) into the config's sink.

    Each chunk of records is processed, its events sent to the sink and acknowledged, and only then are its
    records marked resolved (failpoint ``dlq.after_sink`` sits between the two)."""
    from inlet.core.supervisor import build_sink, state_dir

    c = item.config
    env = Enveloper.of(cfg, c.customer, c.integration)
    drift = None
    if c.drift is not None:
        shape = Shape.from_json(item.context.path(c.drift.shape).read_bytes())
        drift = DriftCheck(shape, policy=c.drift.policy, strict=c.drift.strict)
    connector = item.build(once=True)
    report = ReplayReport()
    todo = []
    for e in entries:
        if e.key != c.key:
            raise DlqError(f"DLQ record {e.id} is of {e.key}, not of {c.key}")
        if e.resolved:
            report.already += 1
        else:
            todo.append(e)
    if dry_run:
        for e in todo:
            o = _attempt(connector, env, drift, e)
            o.status = {"resolved": "would resolve", "filtered": "would filter"}.get(o.status, o.status)
            report.outcomes.append(o)
        return report
    failpoint = Failpoint("dlq.after_sink")
    sink = build_sink(cfg)
    try:
        with Resolutions(state_dir(cfg) / "dlq.sqlite") as store:
            for start in range(0, len(todo), chunk):
                outcomes = [_attempt(connector, env, drift, e) for e in todo[start : start + chunk]]
                sending = [(o, ev) for o in outcomes for ev in o.events]
                refused = await sink.send([ev for _, ev in sending]) if sending else ()
                for r in refused:
                    o = sending[r.index][0]
                    o.status, o.reason = "refused", f"the sink refused event {sending[r.index][1].id}: {r.message}"
                failpoint.hit()  # the sink holds the events; no record is marked yet
                done = [(o.entry, o.status, len(o.event_ids)) for o in outcomes if o.status in ("resolved", "filtered")]
                report.marked += store.resolve(done)
                report.outcomes += outcomes
    finally:
        await sink.stop()
    return report
