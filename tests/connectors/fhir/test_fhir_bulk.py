"""FHIR Bulk Data ``$export`` against the local bulk server, through the real pipeline: every exported line is
an event, a DLQ record or filtered with a reason; polls honour ``Retry-After``; ``_since`` exports only what
changed; an interrupted or killed run resumes the same export without losing a resource."""

from __future__ import annotations

import asyncio
import copy
import itertools
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from inlet.connectors.fhir.bulk import FhirBulkExportConnector, FhirBulkSettings
from inlet.connectors.fhir.ndjson import NdjsonFile, ndjson_lines
from inlet.connectors.fhir.outcome import OperationOutcomeError
from inlet.connectors.fhir.synth import generate_dataset
from inlet.core.checkpoint import CheckpointStore
from inlet.core.connector import IntegrationContext
from inlet.core.envelope import Enveloper, Event
from inlet.core.metrics import Stats
from inlet.core.pipeline import Pipeline
from inlet.core.sinks import Rejected
from inlet.core.sinks.memory import MemorySink
from inlet.core.sinks.outbox import read_outbox
from inlet.core.types import Position
from tests.helpers import read_checkpoint, start_supervisor, supervisor_log
from tools.servers.fhir_bulk import BulkFaults, FhirBulkServer

OBS_TOPIC = "clinical.observation.v1"
OBS_V2_TOPIC = "clinical.observation.v2"
DLQ_TOPIC = "inlet.dlq.acme.bulk"
FAST = {"poll_min_seconds": 0.01, "poll_max_seconds": 5.0}


def _connector(server: FhirBulkServer, **settings: Any) -> FhirBulkExportConnector:
    http = {
        "base_url": server.base_url,
        "backoff_initial_seconds": 0.05,
        "backoff_max_seconds": 2.0,
        **settings.pop("http", {}),
    }
    model = FhirBulkSettings.model_validate({"http": http, **FAST, **settings})
    return FhirBulkExportConnector(IntegrationContext("acme", "bulk", zone="Europe/Vienna"), model)


class _StoppingSink(MemorySink):
    """Keeps events; sets ``stop`` once ``after`` non-empty batches were submitted (an operator's Ctrl-C)."""

    def __init__(self, stop: asyncio.Event, after: int) -> None:
        super().__init__()
        self.stopping, self.after, self.batches = stop, after, 0

    async def submit(self, events: Sequence[Event]) -> Awaitable[Sequence[Rejected]]:
        if events:
            self.batches += 1
            if self.batches >= self.after:
                self.stopping.set()
        return await super().submit(events)


async def _run(
    connector: FhirBulkExportConnector,
    store: CheckpointStore,
    sink: MemorySink | None = None,
    stop: asyncio.Event | None = None,
) -> tuple[MemorySink, Stats, Position | None]:
    sink = sink or MemorySink()
    stats = Stats("acme", "bulk")
    async with connector:
        position = await store.load("acme", "bulk")
        final = await Pipeline(connector, Enveloper("acme", "bulk"), sink, store, stats).run(
            position, stop or asyncio.Event()
        )
    return sink, stats, final


def _observation_ids(events: Sequence[Event]) -> list[str]:
    return [orjson.loads(e.value)["observation_id"] for e in events if e.topic == OBS_TOPIC]


def _dlq(events: Sequence[Event]) -> list[dict[str, Any]]:
    return [{**{k: v.decode() for k, v in e.headers}, "value": e.value} for e in events if e.topic == DLQ_TOPIC]


def _shared_bulk(sample_data: Path) -> list[dict[str, Any]]:
    folder = next((sample_data / "fhir" / "bulk-ndjson").iterdir())
    return [
        orjson.loads(line)
        for f in sorted(folder.glob("*.000.ndjson"))
        for line in f.read_bytes().splitlines()
        if line.strip()
    ]


# --- a whole export ------------------------------------------------------------------------------------------


async def test_full_export_maps_or_dead_letters_every_line_and_cleans_up(tmp_path: Path, sample_data: Path) -> None:
    shared = _shared_bulk(sample_data)  # 10 Synthea patients: every type but Observation
    observations = generate_dataset(400, seed=3).observations
    faults = BulkFaults(kickoff_status={1: 429}, file_status={2: 503}, fault_retry_after="0")
    with FhirBulkServer([*shared, *observations], faults=faults, file_lines=150, chunk_size=4096) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        connector = _connector(server, batch_size=64)
        sink, stats, final = await _run(connector, store)
        store.close()
        requests = list(server.requests)

    kinds = [r.kind for r in requests]
    assert kinds[:2] == ["fault", "kickoff"] and kinds.count("kickoff") == 1, "a 429 on kick-off is retried"
    assert [r.status for r in requests if r.kind == "fault"] == [429, 503], "and so is a 503 on a file"
    kick = requests[1]
    assert kick.headers["prefer"] == "respond-async" and "application/fhir+json" in kick.headers["accept"]
    assert kinds[-1] == "delete", "the status URL is deleted once everything is committed"
    assert requests[-1].path == requests[2].path  # DELETE went to the status URL that was polled
    assert final is not None and set(final) == {"transaction_time"}

    t = stats.totals
    assert t.records_in == len(shared) + len(observations), "every exported line was read once"
    assert t.balanced()
    # Per type: every resource is an event, a DLQ record or filtered; the table is printed for the reader.
    # Observations are dual-published (clinical.observation v2.0 and v1.0): counted once, on the v1 topic.
    v2 = [e for e in sink.events if e.topic == OBS_V2_TOPIC]
    assert len(v2) == len(_observation_ids(sink.events)), "every Observation event in both majors"
    events = Counter(
        dict(e.headers)["ce_subject"].decode().split("/")[0]
        for e in sink.events
        if e.topic not in (DLQ_TOPIC, OBS_V2_TOPIC)
    )
    dead = Counter(d["dlq_source_key"].split("/")[0] for d in _dlq(sink.events))
    table = []
    for rtype, n in sorted(Counter(r["resourceType"] for r in [*shared, *observations]).items()):
        left_out = sum(
            1
            for r in [*shared, *observations]
            if r["resourceType"] == rtype and FhirBulkExportConnector.filter(connector, r) is not None
        )
        table.append(f"{rtype:<20} {n:>5} = mapped {events[rtype]:>5} + DLQ {dead[rtype]:>3} + filtered {left_out:>5}")
        assert events[rtype] + dead[rtype] + left_out == n, table[-1]
    print("\n".join(table))
    kept = {o["id"] for o in observations if o["status"] != "entered-in-error"}
    assert (
        set(_observation_ids(sink.events))
        | {
            d["dlq_source_key"].split("/")[1]
            for d in _dlq(sink.events)
            if d["dlq_source_key"].startswith("Observation/")
        }
        == kept
    )
    assert events["Observation"] > 0 and events["Patient"] == by_type_count(shared, "Patient") - dead["Patient"]
    assert t.filtered["Procedure has no contract mapping in this family yet"] == by_type_count(shared, "Procedure")


def by_type_count(resources: list[dict[str, Any]], rtype: str) -> int:
    return sum(1 for r in resources if r["resourceType"] == rtype)


@pytest.mark.parametrize(
    ("level", "path"),
    [("system", "/fhir/$export"), ("patient", "/fhir/Patient/$export"), ("group", "/fhir/Group/ward-7/$export")],
)
async def test_each_export_level_exports_its_population(tmp_path: Path, level: str, path: str) -> None:
    data = generate_dataset(120, seed=4)
    stray = copy.deepcopy(data.observations[0])
    stray["id"], stray["subject"] = "no-patient", {"reference": "Group/x"}
    member = data.patients[0]["id"]
    with FhirBulkServer([*data.all_resources(), stray], groups={"ward-7": [member]}) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        sink, _, _ = await _run(_connector(server, level=level, group_id="ward-7", types=["Observation"]), store)
        store.close()
        kick = server.of("kickoff")[0]
    assert kick.path == path and kick.query["_type"] == ["Observation"]
    got = set(_observation_ids(sink.events))
    everyone = {o["id"] for o in data.observations if o["status"] != "entered-in-error"}
    if level == "system":
        assert got == everyone | {"no-patient"}
    elif level == "patient":
        assert got == everyone
    else:
        ward = {o["id"] for o in data.observations if o["subject"]["reference"] == f"Patient/{member}"}
        assert got == ward & everyone and 0 < len(got) < len(everyone)


# --- polling -------------------------------------------------------------------------------------------------


async def test_status_polls_honour_retry_after_and_429(tmp_path: Path) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    faults = BulkFaults(pending_polls=2, retry_after="1", poll_status={3: 429}, fault_retry_after=later)
    with FhirBulkServer(generate_dataset(30, seed=5).observations, faults=faults) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        sink, _, _ = await _run(_connector(server), store)
        store.close()
        polls = [r for r in server.requests if r.path.startswith("/fhir/bulkstatus/") and r.method == "GET"]
    assert [p.status for p in polls] == [202, 202, 429, 200]
    gaps = [b.at - a.at for a, b in itertools.pairwise(polls)]
    assert 0.9 <= gaps[0] < 4 and 0.9 <= gaps[1] < 4, f"Retry-After: 1 not honoured: {gaps}"
    # The date is whole seconds, ~5 s after the test began and ~2 s after the 429 arrived.
    assert gaps[2] >= 1.2, f"the 429's Retry-After (an HTTP date) was not honoured: {gaps}"
    assert len(_observation_ids(sink.events)) > 0


async def test_kick_off_refusal_is_a_typed_error_with_the_outcome(tmp_path: Path) -> None:
    with FhirBulkServer([]) as server:
        connector = _connector(server, params={"_typeFilter": "Observation?status=final"})
        store = CheckpointStore(tmp_path / "cp.sqlite")
        with pytest.raises(OperationOutcomeError) as caught:
            await _run(connector, store)
        store.close()
    assert caught.value.status == 400 and caught.value.codes == ("not-supported",)
    assert "_typeFilter" in str(caught.value)


async def test_a_failed_export_is_abandoned_and_kicked_off_again(tmp_path: Path) -> None:
    resources = generate_dataset(40, seed=6).observations
    with FhirBulkServer(resources, faults=BulkFaults(pending_polls=0, fatal_exports=1)) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        with pytest.raises(Exception, match="export failed: database unavailable") as caught:
            await _run(_connector(server), store)
        assert getattr(caught.value, "codes", None) == ("exception",)
        sink, _, _ = await _run(_connector(server), store)  # resumes: the old job is dead, so a new one
        store.close()
        assert len(server.of("kickoff")) == 2
    assert len(_observation_ids(sink.events)) == len([r for r in resources if r["status"] != "entered-in-error"])


async def test_a_restart_while_the_export_is_prepared_polls_the_same_export(tmp_path: Path) -> None:
    resources = generate_dataset(50, seed=13).observations
    with FhirBulkServer(resources, faults=BulkFaults(pending_polls=2, retry_after="1")) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.4, stop.set)  # while the connector waits out Retry-After
        first, _, during = await _run(_connector(server), store, stop=stop)
        assert first.events == [] and during is not None and during["export"]["line"] == 0
        second, _, _ = await _run(_connector(server), store)
        store.close()
        assert len(server.of("kickoff")) == 1, "the status URL was committed before the first poll"
    assert len(_observation_ids(second.events)) == len([r for r in resources if r["status"] != "entered-in-error"])


async def test_bearer_auth_reaches_the_files_when_the_manifest_requires_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BULK_TEST_TOKEN", "s3cret-token")
    resources = generate_dataset(30, seed=14).observations
    with FhirBulkServer(
        resources, bearer_token="s3cret-token", requires_access_token=True, faults=BulkFaults(pending_polls=0)
    ) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        auth = {"kind": "bearer", "token": {"env": "BULK_TEST_TOKEN"}}
        sink, _, _ = await _run(_connector(server, http={"auth": auth}), store)
        store.close()
        assert all(r.status < 400 for r in server.requests), [(r.path, r.status) for r in server.requests]
        assert server.of("file") and all(r.headers["authorization"] == "Bearer s3cret-token" for r in server.of("file"))
    assert len(_observation_ids(sink.events)) > 0


# --- incremental ---------------------------------------------------------------------------------------------


async def test_since_export_picks_up_only_what_changed(tmp_path: Path) -> None:
    data = generate_dataset(200, seed=7)
    with FhirBulkServer(data.all_resources(), faults=BulkFaults(pending_polls=0)) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        first, _, pos1 = await _run(_connector(server, types=["Observation"]), store)
        assert pos1 is not None
        time.sleep(0.01)  # updates land strictly after the first export's transactionTime
        changed = server.touch("Observation", [o["id"] for o in data.observations[5:12]])
        new = generate_dataset(5, seed=8).observations
        for o in new:
            o["meta"]["lastUpdated"] = datetime.now(UTC).isoformat()
        server.add(new)
        second, _, pos2 = await _run(_connector(server, types=["Observation"]), store)
        store.close()
        kicks = server.of("kickoff")
    assert kicks[0].query.get("_since") is None
    assert kicks[1].query["_since"] == [pos1["transaction_time"]]
    assert pos2 is not None and pos2["transaction_time"] > pos1["transaction_time"]
    assert len(_observation_ids(first.events)) > 150
    assert sorted(_observation_ids(second.events)) == sorted(
        o["id"] for o in [*changed, *new] if o["status"] != "entered-in-error"
    )
    # A changed resource is a new version: a new event id; the first export's events are not repeated.
    assert not {e.id for e in second.events} & {e.id for e in first.events}


# --- bad lines -----------------------------------------------------------------------------------------------


async def test_error_file_truncated_and_oversized_lines_go_to_the_dlq_with_file_and_line(tmp_path: Path) -> None:
    observations = generate_dataset(60, seed=9).observations
    huge = copy.deepcopy(observations[10])
    huge["id"], huge["note"] = "huge", [{"text": "x" * 5000}]
    outcomes = [
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "processing", "diagnostics": "Observation/abc: cannot read"}],
        },
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "too-costly", "details": {"text": "Binary too large"}}],
        },
    ]
    faults = BulkFaults(pending_polls=0, truncated_last_line=frozenset({"Observation"}))
    with FhirBulkServer(
        [*observations[:55], huge, *observations[55:]], faults=faults, file_lines=25, chunk_size=1000, errors=outcomes
    ) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        sink, stats, _ = await _run(_connector(server, max_line_bytes=4096, batch_size=10), store)
        store.close()
    dlq = _dlq(sink.events)
    messages = sorted(d["dlq_error_message"] for d in dlq)
    assert all(d["dlq_stage"] == "decode" for d in dlq) and len(dlq) == 4, messages
    truncated = [d for d in dlq if "truncated last line" in d["dlq_error_message"]]
    assert len(truncated) == 1 and "output file #2 Observation" in truncated[0]["dlq_error_message"]
    assert "line 11" in truncated[0]["dlq_error_message"]  # 61 lines in files of 25: the last is line 11 of #2
    last = orjson.dumps(observations[-1])
    assert truncated[0]["value"] == last[: len(last) // 2], "the line as received is the DLQ value"
    long = [d for d in dlq if "exceeds max_line_bytes=4096" in d["dlq_error_message"]]
    assert len(long) == 1 and "output file #2 Observation" in long[0]["dlq_error_message"]
    assert "line 6:" in long[0]["dlq_error_message"] and long[0]["value"] == orjson.dumps(huge)[:4096]
    errs = sorted(d["dlq_error_message"] for d in dlq if d["dlq_error_type"] == "ExportErrorRecord")
    assert len(errs) == 2
    assert "error file #3" in errs[0] and "line 1" in errs[0] and "processing: Observation/abc: cannot read" in errs[0]
    assert "too-costly: Binary too large" in errs[1]
    t = stats.totals
    assert t.balanced() and t.records_in == 61 + 2


# --- resume --------------------------------------------------------------------------------------------------


async def test_a_stopped_run_resumes_the_same_export_where_it_stopped(tmp_path: Path) -> None:
    observations = generate_dataset(600, seed=10).observations
    faults = BulkFaults(pending_polls=0, chunk_delay=0.002)
    with FhirBulkServer(observations, faults=faults, file_lines=400, chunk_size=2048) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        stop = asyncio.Event()
        first, _, stopped_at = await _run(_connector(server, batch_size=40), store, _StoppingSink(stop, 6), stop)
        assert stopped_at is not None and "export" in stopped_at, "stopped mid-download"
        assert stopped_at["export"]["file"] == 0 and stopped_at["export"]["line"] >= 200, "stopped mid-file"
        assert server.of("delete", "DELETE") == []
        second, _, final = await _run(_connector(server, batch_size=40), store)
        store.close()
        assert len(server.of("kickoff")) == 1, "the export was resumed, not kicked off again"
        assert len(server.of("delete", "DELETE")) == 1
    assert final is not None and "export" not in final
    a, b = _observation_ids(first.events), _observation_ids(second.events)
    wanted = sorted(o["id"] for o in observations if o["status"] != "entered-in-error")
    assert sorted(set(a) | set(b)) == wanted, "no resource lost"
    again = set(a) & set(b)
    assert len(again) <= 40, f"{len(again)} re-emitted: more than one batch"
    ids_a = {e.id for e in first.events}
    assert all(e.id in ids_a for e in second.events if orjson.loads(e.value)["observation_id"] in again)


async def test_files_expired_before_a_resume_mean_a_new_export_from_the_same_since(tmp_path: Path) -> None:
    observations = generate_dataset(300, seed=15).observations
    with FhirBulkServer(observations, faults=BulkFaults(pending_polls=0), file_lines=300) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        stop = asyncio.Event()
        first, _, stopped_at = await _run(_connector(server, batch_size=30), store, _StoppingSink(stop, 2), stop)
        assert stopped_at is not None and stopped_at["export"]["line"] > 0
        server.expired_files.add("job0001")
        second, _, final = await _run(_connector(server, batch_size=30), store)
        store.close()
        kicks = server.of("kickoff")
    assert len(kicks) == 2 and "_since" not in kicks[1].query, "the new export starts from the same _since"
    assert final is not None and "export" not in final
    wanted = sorted(o["id"] for o in observations if o["status"] != "entered-in-error")
    assert sorted(_observation_ids(second.events)) == wanted  # everything again, with the same event ids
    assert {e.id for e in first.events} <= {e.id for e in second.events}


async def test_a_connection_cut_mid_file_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    observations = generate_dataset(300, seed=11).observations
    faults = BulkFaults(pending_polls=0, cut_file_request=1)
    with FhirBulkServer(observations, faults=faults, file_lines=300, chunk_size=4096) as server:
        store = CheckpointStore(tmp_path / "cp.sqlite")
        sink = MemorySink()
        with pytest.raises(Exception, match="broke off after line"):
            await _run(_connector(server, batch_size=20), store, sink)
        cut_at = await store.load("acme", "bulk")
        assert cut_at is not None and cut_at["export"]["line"] > 0
        await _run(_connector(server, batch_size=20), store, sink)
        store.close()
        assert len(server.of("kickoff")) == 1
    wanted = sorted(o["id"] for o in observations if o["status"] != "entered-in-error")
    got = _observation_ids(sink.events)
    assert sorted(set(got)) == wanted
    assert len(got) - len(wanted) <= 20, f"{len(got) - len(wanted)} re-emitted: more than one batch"


@settings(max_examples=60, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=30),
    cuts=st.lists(st.integers(1, 50), max_size=20),
    final_newline=st.booleans(),
)
def test_lines_are_the_same_however_the_body_is_chunked(
    lines: list[bytes], cuts: list[int], final_newline: bool
) -> None:
    body = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    chunks, start = [], 0
    for n in cuts:
        chunks.append(body[start : start + n])
        start += n
    chunks.append(body[start:])

    async def stream() -> AsyncIterator[bytes]:
        for c in chunks:
            if c:
                yield c

    async def collect() -> list[tuple[int, bytes, str | None]]:
        resp = httpx.Response(200, content=stream())
        file = NdjsonFile(0, "http://x/0.ndjson", "Observation", "output")
        return [(ln.line, bytes(ln), ln.problem) async for batch in ndjson_lines(resp, file, 30) for ln in batch]

    got = asyncio.run(collect())
    expected = []
    for i, ln in enumerate(lines):
        if len(ln) > 30:  # over the cap: a problem, the first bytes kept (all of them, under the preview size)
            expected.append((i + 1, ln, True))
        elif ln and not ln.isspace():  # blank lines are counted, not yielded; an unterminated one keeps its \r
            unterminated = i == len(lines) - 1 and not final_newline
            expected.append((i + 1, ln if unterminated else ln.rstrip(b"\r"), False))
    assert [(n, b, p is not None) for n, b, p in got] == expected


# --- kill -9 -------------------------------------------------------------------------------------------------


def _write_config(root: Path, base_url: str, batch_size: int) -> None:
    (root / "integrations").mkdir(parents=True, exist_ok=True)
    (root / "inlet.yaml").write_text(
        yaml.safe_dump(
            {
                "state_dir": str(root / "state"),
                "restart_backoff_initial_seconds": 0.2,
                "restart_backoff_max_seconds": 2.0,
            }
        )
    )
    integration = {
        "customer": "acme",
        "integration": "bulk",
        "plugin": "fhir.bulk_export",
        "zone": "Europe/Vienna",
        "poll_interval_seconds": 3600,
        "settings": {
            "types": ["Observation"],
            "batch_size": batch_size,
            **FAST,
            "http": {"base_url": base_url, "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.5},
        },
    }
    (root / "integrations" / "acme.bulk.yaml").write_text(yaml.safe_dump(integration))


@pytest.mark.slow
def test_kill_minus_9_during_download_resumes_without_loss(tmp_path: Path) -> None:
    observations = generate_dataset(1500, seed=12).observations
    batch = 50
    faults = BulkFaults(pending_polls=1, retry_after="0", chunk_delay=0.005)
    with FhirBulkServer(observations, faults=faults, file_lines=1000, chunk_size=4096) as server:
        _write_config(tmp_path, server.base_url, batch)
        proc = start_supervisor(tmp_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            cp = read_checkpoint(tmp_path)
            if cp is not None and (cp.get("export") or {}).get("line", 0) >= 4 * batch:
                break
            time.sleep(0.02)
        assert proc.poll() is None, supervisor_log(tmp_path)
        killed_at = read_checkpoint(tmp_path)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert killed_at is not None and "export" in killed_at, "killed mid-download"
        assert killed_at["export"]["file"] == 0, "killed in the first file, past its first batches"
        final = start_supervisor(tmp_path, once=True)
        assert final.wait(timeout=120) == 0, supervisor_log(tmp_path)
        assert len(server.of("kickoff")) == 1, "the restart resumed the export instead of starting another"
        assert len(server.of("delete", "DELETE")) == 1
    assert read_checkpoint(tmp_path) is not None and "export" not in (read_checkpoint(tmp_path) or {})
    rows = read_outbox(tmp_path / "state" / "outbox.sqlite", limit=1_000_000, topic=OBS_TOPIC)
    ids: dict[str, set[str]] = {}
    for r in rows:
        ids.setdefault(orjson.loads(r.value)["observation_id"], set()).add(r.event_id)
    wanted = {o["id"] for o in observations if o["status"] != "entered-in-error"}
    assert set(ids) == wanted, f"missing {len(wanted - set(ids))}"
    assert all(len(v) == 1 for v in ids.values()), "a redelivered resource got a new event id"
    assert len(rows) - len(wanted) <= batch, f"{len(rows) - len(wanted)} duplicates: more than one batch"
