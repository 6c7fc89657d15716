"""FHIR Bulk Data v2 behaviours of the SMART reference server, against the local bulk server: paged manifests
are read to the last page before any file, ``deleted`` Bundles become ``clinical.deletion`` events, SUBSETTED
resources never pass for complete ones, abandoned exports are DELETEd, and a manifest ``count`` the file does not
hold is a DLQ record, not a quiet gap."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from inlet.connectors.fhir.bulk import (
    BulkDeletion,
    BulkExportExpired,
    FhirBulkExportConnector,
    FhirBulkSettings,
    _deletions,
)
from inlet.connectors.fhir.ndjson import NdjsonFile, _line
from inlet.connectors.fhir.synth import generate_dataset
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import IntegrationContext
from inlet.core.errors import MappingError
from tests.connectors.fhir.test_fhir_bulk import DLQ_TOPIC, _connector, _dlq, _observation_ids, _run, _StoppingSink
from tools.servers.fhir_bulk import BulkFaults, FhirBulkServer

DELETION_TOPIC = "clinical.deletion.v1"


def _kept(observations: list[dict[str, Any]]) -> list[str]:
    return sorted(o["id"] for o in observations if o["status"] != "entered-in-error")


# --- 1. paged manifests ----------------------------------------------------------------------------------------


async def test_every_page_of_a_paged_manifest_is_read_before_the_position_moves(tmp_path: Path) -> None:
    data = generate_dataset(500, seed=31)
    resources = [*data.patients, *data.observations]
    # 500 Observations and the Patients in files of 60 lines, 2 files per manifest page: 5+ pages.
    faults = BulkFaults(pending_polls=0, manifest_page_files=2)
    with FhirBulkServer(resources, faults=faults, file_lines=60) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        sink, stats, final = await _run(
            _connector(server, batch_size=50, params={"allowPartialManifests": "true"}), store
        )
        store.close()
        pages = server.of("manifest")
        files = server.of("file")
    assert len(pages) >= 5 and pages[0].path.startswith("/fhir/bulkstatus/")
    assert all(p.path.startswith("/fhir/bulkmanifest/") for p in pages[1:])
    assert max(p.at for p in pages) < min(f.at for f in files), "every manifest page before the first file"
    assert stats.totals.records_in == len(resources), "no resource of a later page lost"
    assert stats.totals.balanced()
    assert sorted(_observation_ids(sink.events)) == _kept(data.observations)
    assert final is not None and set(final) == {"transaction_time"}


async def test_a_stopped_run_resumes_on_a_later_manifest_page(tmp_path: Path) -> None:
    observations = generate_dataset(400, seed=32).observations
    faults = BulkFaults(pending_polls=0, manifest_page_files=1, chunk_delay=0.002)
    with FhirBulkServer(observations, faults=faults, file_lines=100, chunk_size=2048) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        stop = asyncio.Event()
        first, _, stopped_at = await _run(_connector(server, batch_size=25), store, _StoppingSink(stop, 6), stop)
        assert stopped_at is not None and "export" in stopped_at
        export = stopped_at["export"]
        assert export["page"] >= 2 and export["file"] == export["page"] - 1 and export["line"] > 0, export
        second, _, final = await _run(_connector(server, batch_size=25), store)
        store.close()
        assert len(server.of("kickoff")) == 1, "the same export was resumed"
    assert final is not None and "export" not in final
    assert sorted(set(_observation_ids(first.events)) | set(_observation_ids(second.events))) == _kept(observations)


async def test_a_manifest_page_that_fails_stops_before_any_file_is_read(tmp_path: Path) -> None:
    observations = generate_dataset(200, seed=33).observations
    faults = BulkFaults(pending_polls=0, manifest_page_files=1)
    with FhirBulkServer(observations, faults=faults, file_lines=50) as server:
        server.pages_gone = True  # every manifest page after the first answers 404
        store = CheckpointStore(tmp_path / "cp.sqlite")
        with pytest.raises(Exception, match="manifest page 2"):
            await _run(_connector(server, batch_size=25), store)
        position = await store.load("acme", "bulk")
        store.close()
        assert server.of("file") == [], "no file read from an incomplete manifest"
    assert position is not None and position["export"]["line"] == 0 and position["transaction_time"] is None


# --- 2. deleted -----------------------------------------------------------------------------------------------


async def test_deleted_bundles_become_deletion_events(tmp_path: Path) -> None:
    data = generate_dataset(120, seed=34)
    with FhirBulkServer([*data.patients, *data.observations], faults=BulkFaults(pending_polls=0)) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        await _run(_connector(server), store)  # the full export: nothing deleted yet
        await asyncio.sleep(0.01)
        gone_obs = [o["id"] for o in data.observations[:5]]
        server.delete("Observation", gone_obs)
        server.delete("Patient", [data.patients[0]["id"]])
        server.delete("Procedure", ["proc-1"])  # a type the family does not map: filtered with a reason
        server.deleted_per_bundle = 3
        sink, stats, final = await _run(_connector(server, batch_size=2), store)
        store.close()
        kicks = server.of("kickoff")
    assert "_since" in kicks[1].query
    deletions = [orjson.loads(e.value) for e in sink.events if e.topic == DELETION_TOPIC]
    assert sorted((d["resource_type"], d["resource_id"]) for d in deletions) == sorted(
        [("Observation", i) for i in gone_obs] + [("Patient", data.patients[0]["id"])]
    )
    assert all(d["deleted_at"] for d in deletions)
    assert stats.totals.records_in == 7 and stats.totals.balanced()
    assert stats.totals.filtered["deletion of Procedure: no contract mapping in this family yet"] == 1
    assert _dlq(sink.events) == []
    assert final is not None and set(final) == {"transaction_time"}


async def test_a_resume_inside_a_deleted_bundle_loses_no_deletion(tmp_path: Path) -> None:
    observations = generate_dataset(200, seed=35).observations
    with FhirBulkServer(observations, faults=BulkFaults(pending_polls=0)) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        await _run(_connector(server), store)
        await asyncio.sleep(0.01)
        gone = sorted(o["id"] for o in observations[:40])
        server.delete("Observation", gone)
        server.deleted_per_bundle = 4
        stop = asyncio.Event()
        # Batches of 3 deletions cut Bundles of 4 entries: a stop lands inside a Bundle.
        first, _, stopped_at = await _run(_connector(server, batch_size=3), store, _StoppingSink(stop, 3), stop)
        assert stopped_at is not None and "export" in stopped_at
        second, _, _ = await _run(_connector(server, batch_size=3), store)
        store.close()
    got = {orjson.loads(e.value)["resource_id"] for e in [*first.events, *second.events] if e.topic == DELETION_TOPIC}
    assert sorted(got) == gone
    again = [e.id for e in second.events if e.id in {f.id for f in first.events}]
    assert len(again) <= 3 + 3, "at most a batch and the rest of a Bundle again, with the same event ids"


async def test_a_deleted_line_that_is_not_a_bundle_goes_to_the_dlq(tmp_path: Path) -> None:
    observations = generate_dataset(30, seed=36).observations
    with FhirBulkServer(observations, faults=BulkFaults(pending_polls=0)) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        await _run(_connector(server), store)
        await asyncio.sleep(0.01)
        server.delete("Observation", [observations[0]["id"]])
        server.broken_deleted_line = b'{"resourceType": "Parameters"}'
        sink, stats, _ = await _run(_connector(server), store)
        store.close()
    dead = _dlq(sink.events)
    assert len(dead) == 1 and "not a Bundle of DELETE requests" in dead[0]["dlq_error_message"], dead
    assert stats.totals.records_in == 2 and stats.totals.balanced()


# --- 5. abandoned exports ---------------------------------------------------------------------------------------


async def test_an_export_abandoned_for_expired_files_is_deleted(tmp_path: Path) -> None:
    observations = generate_dataset(100, seed=37).observations
    with FhirBulkServer(observations, faults=BulkFaults(pending_polls=0), file_lines=100) as server:
        server.expired_files.add("job0001")
        store = CheckpointStore(tmp_path / "cp.sqlite")
        sink, _, final = await _run(_connector(server), store)
        store.close()
        deletes = server.of("delete", "DELETE")
        assert server.jobs() == [], "no export left on the server"
    assert [d.path.rsplit("/", 1)[1] for d in deletes] == ["job0001", "job0002"]
    assert sorted(_observation_ids(sink.events)) == _kept(observations)
    assert final is not None and "export" not in final


async def test_a_second_expiry_is_a_public_error_and_both_exports_are_deleted(tmp_path: Path) -> None:
    observations = generate_dataset(50, seed=38).observations
    with FhirBulkServer(observations, faults=BulkFaults(pending_polls=0)) as server:
        server.expired_files.update({"job0001", "job0002"})
        store = CheckpointStore(tmp_path / "cp.sqlite")
        with pytest.raises(BulkExportExpired) as caught:
            await _run(_connector(server), store)
        store.close()
        assert server.jobs() == []
    assert type(caught.value).__name__ == "BulkExportExpired" and "410" in str(caught.value)
    assert len(server.of("delete", "DELETE")) == 2


async def test_a_failed_export_is_deleted_before_the_next_kick_off(tmp_path: Path) -> None:
    observations = generate_dataset(40, seed=39).observations
    with FhirBulkServer(observations, faults=BulkFaults(pending_polls=0, fatal_exports=1)) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        with pytest.raises(Exception, match="export failed"):
            await _run(_connector(server), store)
        await _run(_connector(server), store)
        store.close()
        deletes = [d.path.rsplit("/", 1)[1] for d in server.of("delete", "DELETE")]
        assert server.jobs() == []
    assert deletes == ["job0001", "job0002"]


# --- 6. manifest count ------------------------------------------------------------------------------------------


async def test_a_file_shorter_than_its_manifest_count_is_a_dlq_record(tmp_path: Path) -> None:
    observations = generate_dataset(120, seed=40).observations
    faults = BulkFaults(pending_polls=0, count_delta={"Observation": 3})
    with FhirBulkServer(observations, faults=faults, file_lines=50) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        sink, stats, _ = await _run(_connector(server, batch_size=40), store)
        store.close()
    dead = _dlq(sink.events)
    assert len(dead) == 1, dead
    assert "announced 23 resources, the file held 20: 3 missing" in dead[0]["dlq_error_message"]
    assert stats.totals.records_in == len(observations) + 1 and stats.totals.balanced()
    assert Counter(e.topic for e in sink.events)[DLQ_TOPIC] == 1


# --- 3. SUBSETTED -----------------------------------------------------------------------------------------------


def test_elements_is_refused_in_the_settings() -> None:
    with pytest.raises(ValidationError, match="_elements is refused"):
        FhirBulkSettings.model_validate(
            {"http": {"base_url": "http://127.0.0.1:9/fhir"}, "params": {"_elements": "id,status"}}
        )


async def test_a_subsetted_resource_never_takes_the_complete_resources_event_id(tmp_path: Path) -> None:
    observations = generate_dataset(40, seed=45).observations
    with FhirBulkServer(observations, faults=BulkFaults(pending_polls=0)) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        complete, _, _ = await _run(_connector(server), store)
        # A server that trims on its own (the test server does so for _elements, sent here behind inlet's back).
        connector = _connector(server, incremental=False, http={"headers": {}})
        connector.settings.params["_elements"] = "status"
        trimmed, stats, _ = await _run(connector, store)
        store.close()
    dead = _dlq(trimmed.events)
    assert len(dead) == len(observations) and all("tagged SUBSETTED" in d["dlq_error_message"] for d in dead)
    assert not {e.id for e in trimmed.events} & {e.id for e in complete.events}
    assert stats.totals.balanced()


def test_a_deleted_files_bundle_with_meta_of_the_wrong_kind_still_lists_its_deletions() -> None:
    """``meta`` (or an entry's ``request``) of the wrong JSON kind in a ``deleted`` file is only looked at on the
    way (the listing time, the method): it must not fail the export's read; the Bundle's ``timestamp`` (else the
    export's transaction time) dates the deletions, and map() words an entry that is not a DELETE."""
    file = NdjsonFile(1, "https://bulk.invalid/deleted-1.ndjson", "Bundle", "deleted")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "meta": [],
        "timestamp": "2024-03-01T09:00:00Z",
        "entry": [{"request": {"method": "DELETE", "url": "Observation/o1"}}, {"request": "DELETE"}],
    }
    records = _deletions([_line(orjson.dumps(bundle), file, 1)], "2024-03-02T00:00:00Z")
    assert [type(r) for r in records] == [BulkDeletion, BulkDeletion]
    assert [r.time() for r in records] == ["2024-03-01T09:00:00Z"] * 2
    assert records[0].target() == ("Observation", "o1", None)
    settings = FhirBulkSettings.model_validate({"http": {"base_url": "https://bulk.invalid/fhir"}})
    connector = FhirBulkExportConnector(IntegrationContext("acme", "bulk", zone="UTC"), settings)
    assert connector.map(records[0])[0].resource_id == "o1"  # type: ignore[attr-defined]
    with pytest.raises(MappingError, match=r"request\.method is not DELETE"):
        connector.map(records[1])
