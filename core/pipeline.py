"""The pipeline of one integration: read → decode → filter → map → validate → envelope → sink → commit.

It works in batches end to end (DESIGN.md "hot path"): a batch is processed in one synchronous pass,
handed to the sink, and up to ``max_in_flight`` batches wait for their acknowledgement while the next
ones are read and mapped. Positions are committed strictly in order and only after the sink holds
every event (and DLQ record) of the batch: a crash at any moment loses nothing, and re-reading from the
last committed position yields the same deterministic event ids.

Every failure of a single record — undecodable, unmappable, breaking its contract, or a bug in the
plugin — becomes a DLQ record naming the stage, error type, message and position; the stream goes on.
Transient errors (upstream or sink unavailable) are not records' faults: they propagate to the
supervisor, which restarts the integration with backoff from its last checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from inlet.contracts.base import Contract, converters_from
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import Batch, Connector
from inlet.core.drift import AlertThrottle, DriftPolicy, Shape, alert, detect
from inlet.core.envelope import DlqRecord, Enveloper, Event, payload_bytes
from inlet.core.errors import DecodeError, MappingError, RecordError, TransientError
from inlet.core.metrics import BatchCounts, Stats
from inlet.core.sinks import Sink
from inlet.core.types import Position

__all__ = ["DriftCheck", "Pipeline", "UpstreamDrift", "process_batch"]


def _dlq(env: Enveloper, raw: Any, position: Position, stage: str, exc: BaseException,
         source_key: str | None) -> Event:
    message = str(exc)
    if isinstance(exc, ValidationError):
        # "observation_id: String should have at least 1 character" reads better than pydantic's block.
        message = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())
        message = f"{exc.title} does not satisfy its contract: {message}"
    return env.dead_letter(DlqRecord(stage=stage, error_type=type(exc).__name__, message=message,
                                     payload=payload_bytes(raw), position=position, source_key=source_key))


@dataclass
class DriftCheck:
    """An integration's recorded upstream shape and what to do with a record that departs from it."""

    shape: Shape
    policy: DriftPolicy = "map"
    strict: bool = False
    throttle: AlertThrottle = field(default_factory=AlertThrottle)


class UpstreamDrift(DecodeError):
    """The record departs from the recorded upstream shape and the integration's drift policy is ``dlq``."""


def _check_drift(connector: Connector[Any], env: Enveloper, drift: DriftCheck, record: Any,
                 position: Position, events: list[Event], counts: BatchCounts) -> None:
    changes = detect(drift.shape, record, strict=drift.strict)
    if not changes:
        return
    try:
        key: str | None = connector.identity(record)[0]
    except Exception:  # an identity that fails here fails again, with its reason, in the map stage
        key = None
    alert(env.customer, env.integration, changes, connector.log, throttle=drift.throttle)
    events.append(env.drift([c.to_dict() for c in changes], key, position))
    counts.drift += len(changes)
    if drift.policy == "dlq":
        raise UpstreamDrift("upstream drift: " + "; ".join(f"{c.path}: {c.kind} ({c.detail})" for c in changes))


def _known_key(identity: Any, record: Any) -> str | None:
    """The source key of a record that failed before its identity was taken (a decode or filter failure), when
    the connector can still tell it: a DLQ record names its source whenever that is knowable."""
    try:
        return str(identity(record)[0])
    except Exception:  # the record is too broken to identify: the DLQ record says so by having no key
        return None


def process_batch(connector: Connector[Any], env: Enveloper, batch: Batch,
                  drift: DriftCheck | None = None) -> tuple[list[Event], BatchCounts]:
    """Turn one batch into events and DLQ records, counting each record exactly once. Pure CPU."""
    counts = BatchCounts(records_in=len(batch.records))
    events: list[Event] = []
    decode, keep, identity, map_ = connector.decode, connector.filter, connector.identity, connector.map
    for raw in batch.records:
        stage = "decode"
        key: str | None = None
        record: Any = raw
        try:
            record = decode(raw)
            stage = "map"
            reason = keep(record)
            if reason is not None:
                counts.filtered[reason] += 1
                continue
            # After the filter (records left out on purpose, or re-read, raise no alert). Shapes are learnt from
            # upstream JSON objects, so a connector's own record types (a decoded MQTT message, a FHIR history
            # deletion) are not compared with them.
            if drift is not None and type(record) is dict:
                _check_drift(connector, env, drift, record, batch.position, events, counts)
            key, version = identity(record)
            models = map_(record)
            if not models:
                raise MappingError("map() returned no events; leave records out with filter() and a reason")
            stage = "validate"
            out = []
            for i, model in enumerate(models):
                if not isinstance(model, Contract):
                    raise MappingError(f"map() returned {type(model).__name__}, not a contract model")
                out.append(env.envelope(model, key, version, i))
                # Dual publishing during a major migration: the same fact in the other major too.
                for convert in converters_from(type(model)).values():
                    out.append(env.envelope(convert(model), key, version, i))
        except TransientError:
            raise
        except RecordError as exc:
            counts.dlq[exc.stage] += 1
            known = key or exc.source_key or _known_key(identity, record)
            events.append(_dlq(env, raw, batch.position, exc.stage, exc, known))
            continue
        except ValidationError as exc:
            counts.dlq["validate"] += 1
            events.append(_dlq(env, raw, batch.position, "validate", exc, key or _known_key(identity, record)))
            continue
        except Exception as exc:  # a plugin bug is one bad record, never a dead daemon
            counts.dlq[stage] += 1
            events.append(_dlq(env, raw, batch.position, stage, exc, key or _known_key(identity, record)))
            continue
        counts.records_mapped += 1
        counts.events_out += len(out)
        events.extend(out)
    return events, counts


@dataclass
class _Pending:
    ack: asyncio.Future[None]
    position: Position
    counts: BatchCounts


class Pipeline:
    """Runs one read pass of a connector into a sink, committing positions as batches are acknowledged."""

    def __init__(self, connector: Connector[Any], env: Enveloper, sink: Sink, checkpoints: CheckpointStore,
                 stats: Stats, *, max_in_flight: int = 4, drift: DriftCheck | None = None) -> None:
        self.connector = connector
        self.env = env
        self.sink = sink
        self.checkpoints = checkpoints
        self.stats = stats
        self.max_in_flight = max_in_flight
        self.drift = drift
        self.position: Position | None = None

    async def run(self, position: Position | None, stop: asyncio.Event) -> Position | None:
        """Read from ``position`` until the connector is caught up or ``stop`` is set; return the last commit."""
        self.position = position
        pending: deque[_Pending] = deque()
        batches = self.connector.read(position).__aiter__()
        stopper = asyncio.ensure_future(stop.wait())
        nxt: asyncio.Future[Batch] | None = None
        try:
            while not stop.is_set():
                if nxt is None:
                    nxt = asyncio.ensure_future(batches.__anext__())
                # Commit as soon as the oldest batch is acknowledged, even while no new batch arrives: a push
                # source (MQTT) only sends more once its PUBACKs — sent at commit — have gone out.
                waits: set[asyncio.Future[Any]] = {nxt, stopper}
                if pending:
                    waits.add(pending[0].ack)
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                while pending and pending[0].ack.done():
                    await self._commit(pending.popleft())
                if not nxt.done():
                    if stop.is_set():  # stopping: abandon the read, keep what is in flight
                        nxt.cancel()
                        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                            await nxt
                        break
                    continue
                try:
                    batch = nxt.result()
                except StopAsyncIteration:
                    break
                nxt = None
                events, counts = process_batch(self.connector, self.env, batch, self.drift)
                ack = asyncio.ensure_future(await self.sink.submit(events))
                pending.append(_Pending(ack, batch.position, counts))
                while pending and (len(pending) >= self.max_in_flight or pending[0].ack.done()):
                    await self._commit(pending.popleft())
            while pending:  # drain: everything handed to the sink gets its commit
                await self._commit(pending.popleft())
        finally:
            stopper.cancel()
            for p in pending:  # after a failure: nothing more is committed; collect the outcomes quietly
                p.ack.add_done_callback(lambda f: f.cancelled() or f.exception())
            if nxt is not None and not nxt.done():
                nxt.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await nxt
            with contextlib.suppress(Exception):
                await batches.aclose()  # type: ignore[attr-defined]
        return self.position

    async def _commit(self, item: _Pending) -> None:
        await item.ack
        await self.checkpoints.save(self.env.customer, self.env.integration, item.position)
        self.position = item.position
        self.stats.add(item.counts)
        self.stats.last_position = item.position
        await self.connector.acknowledge(item.position)

