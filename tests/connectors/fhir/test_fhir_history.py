"""Deleted resources through ``_history`` (``history_deletes``): the real pipeline, checkpoint store and memory sink
against the local FHIR test server, which deletes and keeps versions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
import structlog

from inlet.connectors.fhir.history import HistoryDeletion, HistoryScan
from inlet.connectors.fhir.search import FhirSearchConnector, FhirSearchSettings
from inlet.connectors.fhir.synth import generate_observations
from inlet.contracts.clinical_deletion import DeletionV1
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import IntegrationContext
from inlet.core.envelope import Enveloper
from inlet.core.errors import MappingError
from inlet.core.http import HttpSettings
from inlet.core.metrics import Stats
from inlet.core.pipeline import Pipeline
from inlet.core.sinks.memory import MemorySink
from inlet.core.time import ClockCap
from tools.servers.fhir import FhirTestServer

Resource = dict[str, Any]
DELETED = "already delivered at the deletion watermark"


class _Feed:
    """One search integration polled through the real pipeline; each poll's events by contract name."""

    def __init__(self, store: CheckpointStore, base_url: str, *, history: bool = True, page_size: int = 7) -> None:
        settings = FhirSearchSettings(
            http=HttpSettings(base_url=base_url, max_attempts=1),
            resource_type="Observation",
            page_size=page_size,
            history_deletes=history,
        )
        self.connector = FhirSearchConnector(IntegrationContext("acme", "obs", zone="Europe/Berlin"), settings)
        self.store = store
        self.stats = Stats("acme", "obs")
        self.sink = MemorySink()

    async def poll(self) -> dict[str, list[Resource]]:
        self.sink = MemorySink()
        pipeline = Pipeline(self.connector, Enveloper("acme", "obs"), self.sink, self.store, self.stats)
        await pipeline.run(await self.store.load("acme", "obs"), asyncio.Event())
        out: dict[str, list[Resource]] = {}
        for event in self.sink.events:
            out.setdefault(event.topic, []).append(orjson.loads(event.value))
        return out

    async def position(self) -> dict[str, Any]:
        position = await self.store.load("acme", "obs")
        assert isinstance(position, dict)
        return position


def _history_since(server: FhirTestServer) -> list[str | None]:
    """The ``_since`` of every history request (not its pages), oldest first."""
    out: list[str | None] = []
    for target in server.requested_urls:
        split = urlsplit(target)
        if split.path.endswith("/_history"):
            out.append(parse_qs(split.query).get("_since", [None])[-1])
    return out


async def test_deletions_after_a_pass_arrive_once_on_the_next_poll(checkpoint_store: CheckpointStore) -> None:
    resources = generate_observations(30, seed=5)
    with FhirTestServer(resources) as server:
        feed = _Feed(checkpoint_store, server.base_url)
        async with feed.connector:
            first = await feed.poll()
            assert sorted(e["observation_id"] for e in first["clinical.observation.v1"]) == sorted(
                r["id"] for r in resources
            )
            assert "clinical.deletion.v1" not in first, "creates in the history are not deletions"
            assert server.counts["history"] == 1 and server.counts["history_page"] == 30 // 7, "history is paged"
            assert _history_since(server) == [None], "a first pass without a watermark reads the whole history"
            position = await feed.position()
            assert position["deleted_since"] is not None and position["deleted_at_watermark"] == []

            gone = [r["id"] for r in resources[3:6]]
            async with httpx.AsyncClient() as client:
                for rid in gone[:2]:
                    assert (await client.delete(f"{server.base_url}/Observation/{rid}")).status_code == 200
                assert (await client.delete(f"{server.base_url}/Observation/no-such-id")).status_code == 404
                remaining = (await client.get(f"{server.base_url}/Observation", params={"_count": "100"})).json()
            times = [server.delete("Observation", gone[2])]
            assert {e["resource"]["id"] for e in remaining["entry"]} == {r["id"] for r in resources} - set(gone[:2])

            second = await feed.poll()
            assert "clinical.observation.v1" not in second
            deletions = second["clinical.deletion.v1"]
            assert sorted(d["resource_id"] for d in deletions) == sorted(gone)
            assert all(d["resource_type"] == "Observation" and d["source_version"] == "2" for d in deletions)
            last = next(d for d in deletions if d["resource_id"] == gone[2])
            assert datetime.fromisoformat(last["deleted_at"]) == datetime.fromisoformat(times[0])
            assert last["deleted_at_precision"] == "millisecond"
            keys = {e.key for e in feed.sink.events if e.topic == "clinical.deletion.v1"}
            assert keys == {f"Observation/{rid}".encode() for rid in gone}
            assert _history_since(server)[-1] == position["deleted_since"], "history starts at its own watermark"

            assert await feed.poll() == {}, "the third poll emits nothing"
            assert feed.stats.totals.filtered[DELETED] == 1, "the deletion at the watermark is recognised"
            assert (await feed.position())["deleted_at_watermark"] == [f"Observation/{gone[2]}/_history/2"]
            searched = [t for t in server.requested_urls if "/Observation?" in t]
            assert all(gone[0] not in t for t in searched)
    totals = feed.stats.totals
    assert totals.balanced()
    # Observations are published as clinical.observation v2.0 and v1.0 (dual publishing); deletions once.
    assert totals.records_mapped == 30 + 3 and totals.events_out == 2 * 30 + 3
    assert totals.records_in == 33 + totals.filtered.total(), "history creates and updates are not records"


async def test_since_is_respected_and_a_deletion_before_the_watermark_is_not_emitted(
    checkpoint_store: CheckpointStore,
) -> None:
    resources = generate_observations(12, seed=6)
    with FhirTestServer(resources) as server:
        early = server.delete("Observation", resources[0]["id"])  # before any pass: in the whole history
        feed = _Feed(checkpoint_store, server.base_url, page_size=5)
        async with feed.connector:
            first = await feed.poll()
            assert [d["resource_id"] for d in first["clinical.deletion.v1"]] == [resources[0]["id"]]
            position = await feed.position()
            assert datetime.fromisoformat(position["deleted_since"]) == datetime.fromisoformat(early)

            # Deleted "in the past" (a server clock behind ours, a back-dated import): before the watermark.
            server.delete("Observation", resources[1]["id"], at="2000-01-01T00:00:00Z")
            # And one a little ahead (a server clock minutes ahead of ours, within max_clock_skew_seconds), in +02:00.
            soon = (datetime.now(UTC) + timedelta(minutes=10)).replace(microsecond=0)
            at = soon.astimezone(timezone(timedelta(hours=2))).isoformat()
            later = server.delete("Observation", resources[2]["id"], at=at)
            second = await feed.poll()
            [deletion] = second["clinical.deletion.v1"]
            assert deletion["resource_id"] == resources[2]["id"]
            assert deletion["deleted_at"].startswith(soon.strftime("%Y-%m-%dT%H:%M:%S"))  # in UTC
            assert deletion["deleted_at_precision"] == "second"
            assert _history_since(server)[-1] == position["deleted_since"]
            assert datetime.fromisoformat((await feed.position())["deleted_since"]) == datetime.fromisoformat(later)
            assert await feed.poll() == {}
            assert _history_since(server)[-1] == (await feed.position())["deleted_since"]
    assert feed.stats.totals.balanced()


async def test_an_old_position_without_deleted_since_loads_and_starts_at_the_search_watermark(
    tmp_path: Path, checkpoint_stores: Callable[[Path], CheckpointStore]
) -> None:
    resources = generate_observations(10, seed=7)
    with FhirTestServer(resources) as server:
        plain = _Feed(checkpoint_stores(tmp_path / "cp.sqlite"), server.base_url, history=False)
        async with plain.connector:
            await plain.poll()
        old = await plain.position()
        assert set(old) == {"last_updated", "ids_at_watermark"}, "the flag off keeps the position's shape"
        assert "_history" not in " ".join(server.requested_urls), "the flag off sends no history request"

        server.delete("Observation", resources[4]["id"])
        feed = _Feed(checkpoint_stores(tmp_path / "cp.sqlite"), server.base_url)  # the same store file, the flag on
        async with feed.connector:
            got = await feed.poll()
            assert [d["resource_id"] for d in got["clinical.deletion.v1"]] == [resources[4]["id"]]
            assert _history_since(server) == [old["last_updated"]]
            assert await feed.poll() == {}
    assert feed.stats.totals.balanced()


async def test_a_server_without_history_is_warned_about_once_per_pass_and_the_pass_completes(
    checkpoint_store: CheckpointStore,
) -> None:
    resources = generate_observations(9, seed=8)
    with FhirTestServer(resources, history=False) as server, structlog.testing.capture_logs() as logs:
        feed = _Feed(checkpoint_store, server.base_url, page_size=4)
        async with feed.connector:
            first = await feed.poll()
            assert len(first["clinical.observation.v1"]) == 9
            server.delete("Observation", resources[0]["id"])
            assert await feed.poll() == {}
    warnings = [e for e in logs if "refuses the history" in e["event"]]
    assert len(warnings) == 2 and all(e["log_level"] == "warning" for e in warnings)
    assert "404" in warnings[0]["error"]
    assert server.counts["not_found"] == 2, "one history request per pass, no retry loop"
    position = await feed.position()
    assert position["deleted_since"] is None, "the deletion watermark does not move without a history"
    assert feed.stats.totals.balanced() and feed.stats.totals.records_mapped == 9


@pytest.mark.parametrize(
    ("entry", "listed_at", "expected"),
    [
        (
            {
                "request": {"method": "DELETE", "url": "Observation/a1/_history/3"},
                "response": {"lastModified": "2024-05-01T10:00:00Z"},
            },
            None,
            ("a1", "3", "2024-05-01T10:00:00+00:00", "second"),
        ),
        (
            {
                "fullUrl": "https://ehr.invalid/fhir/Observation/a2",
                "request": {"method": "DELETE"},
                "response": {"etag": 'W/"7"', "lastModified": "2024-05-01T12:00:00.250+02:00"},
            },
            None,
            ("a2", "7", "2024-05-01T10:00:00.250000+00:00", "millisecond"),
        ),
        (
            {"request": {"method": "DELETE", "url": "https://ehr.invalid/fhir/Observation/a3"}},
            "2024-06-01",
            ("a3", None, "2024-06-01T00:00:00+00:00", "day"),
        ),
    ],
)
def test_a_history_delete_entry_maps_with_its_version_and_time(
    entry: Resource, listed_at: str | None, expected: tuple[str, str | None, str, str]
) -> None:
    connector = FhirSearchConnector(
        IntegrationContext("acme", "obs", zone="UTC"),
        FhirSearchSettings(http=HttpSettings(base_url="https://ehr.invalid/fhir"), history_deletes=True),
    )
    record = HistoryDeletion(entry, listed_at)
    [event] = connector.map(connector.decode(record))
    assert isinstance(event, DeletionV1)
    rid, version, when, precision = expected
    assert (event.resource_id, event.source_version, event.deleted_at.isoformat(), event.deleted_at_precision) == (
        rid,
        version,
        when,
        precision,
    )
    assert event.subject() == f"Observation/{rid}" == event.entity_key()
    assert event.occurred_at() == datetime.fromisoformat(when).astimezone(UTC)
    when_given = (entry.get("response") or {}).get("lastModified", listed_at)
    assert connector.identity(record) == (f"Observation/{rid}", f"deleted@{version or when_given}")


@pytest.mark.parametrize(
    ("entry", "listed_at", "message"),
    [
        (
            {"request": {"method": "DELETE"}, "response": {"lastModified": "2024-05-01T10:00:00Z"}},
            None,
            "neither request.url nor fullUrl",
        ),
        (
            {
                "request": {"method": "DELETE", "url": "Patient/p1"},
                "response": {"lastModified": "2024-05-01T10:00:00Z"},
            },
            None,
            "the history of Observation listed Patient/p1",
        ),
        ({"request": {"method": "DELETE", "url": "Observation/x"}}, None, "no response.lastModified"),
        (
            {"request": {"method": "DELETE", "url": "Observation/x"}, "response": {"lastModified": "yesterday"}},
            None,
            "yesterday",
        ),
    ],
)
def test_a_broken_delete_entry_is_a_mapping_error_naming_it(
    entry: Resource, listed_at: str | None, message: str
) -> None:
    connector = FhirSearchConnector(
        IntegrationContext("acme", "obs", zone="UTC"),
        FhirSearchSettings(http=HttpSettings(base_url="https://ehr.invalid/fhir"), history_deletes=True),
    )
    with pytest.raises(MappingError, match=message):
        connector.map(HistoryDeletion(entry, listed_at))


def test_a_patient_deletion_keys_on_the_patient_so_it_follows_the_patients_events() -> None:
    event = DeletionV1(resource_type="Patient", resource_id="p1", deleted_at=datetime(2024, 1, 1, tzinfo=UTC))
    assert event.entity_key() == "p1" and event.subject() == "Patient/p1"


def test_history_entries_of_the_wrong_shape_go_on_as_records_and_do_not_fail_the_page() -> None:
    """A history page is only looked at by the scan: ``request``, ``response`` or an entry of the wrong JSON kind
    must not raise there (the whole page would fail, again on every retry); a DELETE stays a deletion whose broken
    parts map() words, the rest are counted or left to decode."""
    scan = HistoryScan(None, set())
    entries: list[Any] = [
        {"request": "DELETE"},  # not an object: not a DELETE the scan can tell, counted as a version
        {"request": {"method": "DELETE", "url": "Observation/x"}, "response": []},
        "not an entry",
        {"request": {"method": "PUT"}, "response": {"lastModified": "2024-03-01T09:00:00Z"}},
    ]
    records = scan.take(entries, None)
    assert [type(r).__name__ for r in records] == ["HistoryDeletion", "str"]
    assert scan.versions == 2 and scan.deletions == 1
    assert scan.newest is not None and scan.newest.isoformat() == "2024-03-01T09:00:00Z"
    deletion = records[0]
    assert isinstance(deletion, HistoryDeletion) and deletion.target() == ("Observation", "x", None)
    connector = FhirSearchConnector(
        IntegrationContext("acme", "obs", zone="UTC"),
        FhirSearchSettings(http=HttpSettings(base_url="https://ehr.invalid/fhir"), history_deletes=True),
    )
    with pytest.raises(MappingError, match=r"no response\.lastModified"):
        connector.map(deletion)


def test_a_history_entry_dated_past_the_clock_does_not_move_the_deletion_watermark() -> None:
    """One ``lastModified`` years ahead must not carry ``deleted_since`` past every deletion still to come: the
    deletion is a record all the same, the watermark stays at the newest real time."""
    scan = HistoryScan(None, set(), cap=ClockCap(datetime(2030, 1, 1, tzinfo=UTC)))
    entries: list[Any] = [
        {
            "request": {"method": "DELETE", "url": "Observation/far"},
            "response": {"lastModified": "2999-01-01T00:00:00Z"},
        },
        {
            "request": {"method": "DELETE", "url": "Observation/o1"},
            "response": {"lastModified": "2024-03-01T09:00:00Z"},
        },
    ]
    records = scan.take(entries, None)
    assert [r.target()[1] for r in records] == ["far", "o1"]
    assert scan.newest is not None and scan.newest.isoformat() == "2024-03-01T09:00:00Z"
    assert scan.keys == {"Observation/o1"} and scan.cap is not None and scan.cap.rows == 1
