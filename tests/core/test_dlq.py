"""DLQ tooling: a record that failed mapping, the plugin fixed, ``inlet dlq replay`` — on the outbox and on Kafka.

The first run is in-process with the plugin's ``map`` broken for a few chosen records (monkeypatched); the replay
runs the real, unbroken plugin (the fix), through the CLI or as its own process (kill -9 at the failpoint
``dlq.after_sink``). Expected ids are computed by running the fixed plugin over the same records fresh.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from inlet.connectors.customers.example_clinic import ExampleClinicObservations
from inlet.connectors.fhir.synth import generate_observations
from inlet.connectors.hl7v2.connector import Hl7v2Connector
from inlet.connectors.mqtt_meter.connector import MqttMeterConnector
from inlet.contracts.base import Contract
from inlet.core.cli import app
from inlet.core.config import LoadedIntegration, SupervisorConfig, check_config
from inlet.core.connector import Batch
from inlet.core.dlq import filter_entries, parse_since, preview, read_dlq
from inlet.core.envelope import Enveloper
from inlet.core.errors import MappingError, NotReplayable
from inlet.core.metrics import DLQ_REASON_KEYS, OTHER_REASON, BatchCounts, Stats
from inlet.core.pipeline import process_batch
from inlet.core.sinks.outbox import read_outbox
from inlet.core.supervisor import Supervisor
from tests.helpers import consume, write_config
from tools.servers.fhir import FhirTestServer

PLUGIN = "example_clinic.observations"


def _resources() -> list[dict[str, Any]]:
    """Observations that all become events (no survey answers, which the plugin filters)."""
    return [
        r
        for r in generate_observations(40, seed=5)
        if r["status"] != "entered-in-error"
        and "survey" not in {c.get("code") for cat in r.get("category") or () for c in cat.get("coding") or ()}
    ]


def _broken(monkeypatch: pytest.MonkeyPatch, bad: set[str]) -> None:
    """The plugin before its fix: ``map`` fails for the records ``bad``."""
    original = ExampleClinicObservations.map

    def map_(self: ExampleClinicObservations, record: Any) -> Sequence[Contract]:
        if isinstance(record, dict) and record.get("id") in bad:
            raise MappingError(f"unknown local code for Observation/{record['id']}")
        return original(self, record)

    monkeypatch.setattr(ExampleClinicObservations, "map", map_)


def _load(root: Path) -> tuple[SupervisorConfig, list[LoadedIntegration]]:
    cfg, loaded, errors = check_config(root)
    assert not errors and cfg is not None
    return cfg, loaded


def _first_run(root: Path) -> dict[str, Stats]:
    cfg, loaded = _load(root)
    return asyncio.run(Supervisor(cfg, loaded, once=True).run())


def _fresh_ids(root: Path, records: list[dict[str, Any]]) -> set[str]:
    """The event ids a first delivery by the fixed plugin gives these records."""
    cfg, loaded = _load(root)
    item = loaded[0]
    env = Enveloper(item.config.customer, item.config.integration, topic_template=cfg.topic_template)
    events, counts = process_batch(item.build(once=True), env, Batch(records, {}))
    assert counts.records_mapped == len(records)
    return {e.id for e in events}


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    return result


def _outbox_ids(root: Path) -> Counter[str]:
    rows = read_outbox(root / "state" / "outbox.sqlite", limit=100_000)
    return Counter(r.event_id for r in rows if not r.topic.startswith(("inlet.dlq.", "inlet.drift.")))


def _resolutions(root: Path) -> int:
    conn = sqlite3.connect(root / "state" / "dlq.sqlite")
    try:
        return int(conn.execute("SELECT COUNT(*) FROM dlq_resolved").fetchone()[0])
    finally:
        conn.close()


def test_replay_on_the_outbox_gives_first_delivery_ids_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resources = _resources()
    bad = {resources[3]["id"], resources[11]["id"]}
    with FhirTestServer(resources) as server:
        root = write_config(tmp_path, base_url=server.base_url, plugin=PLUGIN, page_size=10)
        with monkeypatch.context() as broken:
            _broken(broken, bad)
            stats = _first_run(root)
    totals = stats["acme/observations"].totals
    assert totals.dlq["map"] == 2
    reasons = {r for r in totals.reasons}
    assert all(r[:2] == ("map", "MappingError") for r in reasons) and len(reasons) == 2
    before = _outbox_ids(root)

    listed = _cli("dlq", "list", "acme/observations", "--config", str(root), "--json")
    assert listed.exit_code == 0, listed.output
    docs = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert len(docs) == 2 and {d["resolved"] for d in docs} == {None}
    assert {d["source_key"] for d in docs} == {f"Observation/{i}" for i in bad}

    # The fix is in (the monkeypatch is undone): replay.
    dry = _cli("dlq", "replay", "acme/observations", "--config", str(root), "--dry-run")
    assert dry.exit_code == 0 and "2 would be resolved" in dry.stdout and _outbox_ids(root) == before
    done = _cli("dlq", "replay", "acme/observations", "--config", str(root))
    assert done.exit_code == 0, done.output
    assert "2 resolved" in done.stdout

    expected = _fresh_ids(root, [r for r in resources if r["id"] in bad])
    after = _outbox_ids(root)
    assert set(after - before) == expected and all(after[i] == 1 for i in expected)
    assert _resolutions(root) == 2

    listed = _cli("dlq", "list", "--config", str(root), "--json")
    assert {orjson.loads(line)["resolved"] is not None for line in listed.stdout.splitlines()} == {True}
    table = _cli("dlq", "list", "--config", str(root), "--state", "open")
    assert table.exit_code == 0 and "0 of 0 matching" in table.stdout

    again = _cli("dlq", "replay", "acme/observations", "--config", str(root))
    assert again.exit_code == 0, again.output
    assert "nothing to replay" in again.stdout and "2 already resolved" in again.stdout
    assert _outbox_ids(root) == after and _resolutions(root) == 2

    shown = _cli("dlq", "show", docs[0]["id"], "--config", str(root))
    assert shown.exit_code == 0, shown.output
    assert "map MappingError: unknown local code" in shown.stdout and "payload preview:" in shown.stdout


def test_still_failing_records_stay_and_filters_select(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resources = _resources()
    bad = {resources[0]["id"], resources[1]["id"], resources[2]["id"]}
    with FhirTestServer(resources) as server:
        root = write_config(tmp_path, base_url=server.base_url, plugin=PLUGIN, page_size=10)
        with monkeypatch.context() as broken:
            _broken(broken, bad)
            _first_run(root)
        cfg, loaded = _load(root)
        entries = read_dlq(cfg, loaded)
        assert len(entries) == 3
        assert len(filter_entries(entries, stage="map")) == 3
        assert filter_entries(entries, stage="decode") == []
        assert len(filter_entries(entries, error_type="MappingError")) == 3
        assert filter_entries(entries, error_type="ValidationError") == []
        assert len(filter_entries(entries, since=parse_since("2h"))) == 3
        assert filter_entries(entries, since=datetime.now(UTC) + timedelta(hours=1)) == []
        assert parse_since("2025-01-31T08:00") == datetime(2025, 1, 31, 8, tzinfo=UTC)

        # Not fixed yet for one of them: it stays, no new DLQ record is written, the new reason is reported.
        with monkeypatch.context() as still:
            _broken(still, {resources[0]["id"]})
            dlq_rows = len(read_dlq(cfg, loaded))
            result = _cli("dlq", "replay", "acme/observations", "--config", str(root), "--stage", "map")
        assert result.exit_code == 1, result.output
        assert "2 resolved" in result.stdout and "1 still fail" in result.stdout
        assert f"unknown local code for Observation/{resources[0]['id']}" in result.stdout
        after = read_dlq(cfg, loaded)
        assert len(after) == dlq_rows == 3
        assert [e.source_key for e in after if e.resolved is None] == [f"Observation/{resources[0]['id']}"]
        rows = read_outbox(root / "state" / "outbox.sqlite", limit=100_000, topic="inlet.dlq.acme.observations")
        assert len(rows) == 3

        none = _cli("dlq", "list", "--config", str(root), "--json", "--since", "2099-01-01T00:00Z")
        assert none.exit_code == 0 and none.stdout == ""


def test_preview_of_a_phi_payload_is_redacted() -> None:
    patient = {
        "resourceType": "Patient",
        "id": "pat-123",
        "name": [{"family": "Oberhuber-Planted", "given": ["Wilhelmine"]}],
        "birthDate": "1961-07-23",
        "telecom": [{"system": "phone", "value": "+43 664 1234567"}],
    }
    shown = preview(orjson.dumps({"entry": [{"resource": patient}]}), phi=True)
    for planted in ("Oberhuber-Planted", "Wilhelmine", "1961-07-23", "664 1234567", "pat-123"):
        assert planted not in shown
    assert "1961-01-01" in shown  # the year is kept, as in recordings
    hl7 = "MSH|^~\\&|EHR|HOSP|||20240101||ADT^A01|1|P|2.5\rPID|1||12345^^^HOSP||Planted^Wilhelmine||19610723|F"
    shown = preview(hl7.encode(), phi=True)
    assert "Planted" not in shown and "Wilhelmine" not in shown and "19610723" not in shown
    assert "withheld" in preview(b"Wilhelmine Planted, 1961-07-23", phi=True)
    assert "Wilhelmine" in preview(b"Wilhelmine", phi=False)
    assert len(preview(orjson.dumps({"x": "y" * 10_000}), phi=False, limit=100)) < 200


def test_reasons_are_capped_per_integration() -> None:
    stats = Stats("acme", "obs")
    for i in range(DLQ_REASON_KEYS + 10):
        counts = BatchCounts(records_in=1)
        counts.dlq["map"] += 1
        counts.reasons[("map", "MappingError", f"record {i}")] += 1
        stats.add(counts)
    assert len(stats.totals.reasons) == DLQ_REASON_KEYS + 1
    assert stats.totals.reasons[OTHER_REASON] == 10
    assert stats.totals.reasons.total() == DLQ_REASON_KEYS + 10


def test_run_summary_names_the_top_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resources = _resources()
    bad = {r["id"] for r in resources[:7]}
    with FhirTestServer(resources) as server:
        root = write_config(tmp_path, base_url=server.base_url, plugin=PLUGIN, page_size=10)
        _broken(monkeypatch, bad)
        thresholds = gc.get_threshold()
        try:
            result = _cli("run", "--config", str(root), "--once")
        finally:  # `inlet run` tunes the collector for the daemon's process: give the test process its own back
            gc.unfreeze()
            gc.set_threshold(*thresholds)
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert "acme/observations: DLQ 7 at stage map" in lines
    named = [line for line in lines if line.startswith("acme/observations: DLQ reason 1x map MappingError: ")]
    assert len(named) == 5
    assert "acme/observations: DLQ reason 2x more, other reasons: inlet dlq list acme/observations" in lines


def test_kill_9_during_replay_then_again_gives_the_same_ids_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = _resources()
    bad = {r["id"] for r in resources[:5]}
    with FhirTestServer(resources) as server:
        root = write_config(tmp_path, base_url=server.base_url, plugin=PLUGIN, page_size=10)
        with monkeypatch.context() as broken:
            _broken(broken, bad)
            _first_run(root)
    before = _outbox_ids(root)
    args = [sys.executable, "-m", "inlet", "dlq", "replay", "acme/observations", "--config", str(root)]
    env = {**os.environ, "INLET_FAILPOINT": "dlq.after_sink:1"}
    killed = subprocess.run(args, env=env, capture_output=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert b"dlq.after_sink reached" in killed.stderr
    expected = _fresh_ids(root, [r for r in resources if r["id"] in bad])
    assert set(_outbox_ids(root) - before) == expected  # acknowledged by the sink before the kill
    assert _resolutions(root) == 0  # ... and not marked

    env.pop("INLET_FAILPOINT")
    again = subprocess.run(args, env=env, capture_output=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr.decode()
    after = _outbox_ids(root) - before
    assert set(after) == expected and all(n == 2 for n in after.values())  # at least once, the same ids
    assert _resolutions(root) == 5
    third = subprocess.run(args, env=env, capture_output=True, timeout=120, check=False)
    assert third.returncode == 0 and b"5 already resolved" in third.stdout
    assert _outbox_ids(root) - before == after and _resolutions(root) == 5


@pytest.mark.kafka
def test_replay_on_kafka_reads_the_dlq_topic_and_delivers_first_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str
) -> None:
    resources = _resources()
    bad = {resources[4]["id"], resources[9]["id"], resources[20]["id"]}
    prefix = f"dlq-{uuid.uuid4().hex[:8]}."
    with FhirTestServer(resources) as server:
        root = write_config(
            tmp_path, base_url=server.base_url, plugin=PLUGIN, page_size=10, kafka=kafka_bootstrap, topic_prefix=prefix
        )
        with monkeypatch.context() as broken:
            _broken(broken, bad)
            stats = _first_run(root)
    assert stats["acme/observations"].totals.dlq["map"] == 3
    cfg, loaded = _load(root)
    event_topics = sorted(
        {Enveloper("acme", "observations", topic_template=cfg.topic_template).topic_for(m) for m in loaded[0].produces}
    )

    def on_kafka() -> Counter[str]:
        records = asyncio.run(consume(kafka_bootstrap, event_topics, idle=2.0))
        return Counter(dict(r.headers)["ce_id"].decode() for r in records)

    before = on_kafka()
    listed = _cli("dlq", "list", "acme/observations", "--config", str(root), "--json", "--error-type", "MappingError")
    assert listed.exit_code == 0, listed.output
    docs = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert {d["source_key"] for d in docs} == {f"Observation/{i}" for i in bad}
    assert all(d["where"].startswith(f"{prefix}inlet.dlq.acme.observations[") for d in docs)

    done = _cli("dlq", "replay", "acme/observations", "--config", str(root))
    assert done.exit_code == 0, done.output
    assert "3 resolved" in done.stdout
    expected = _fresh_ids(root, [r for r in resources if r["id"] in bad])
    after = on_kafka()
    assert set(after - before) == expected and all(after[i] == 1 for i in expected)

    listed = _cli("dlq", "list", "--config", str(root), "--json")
    assert {orjson.loads(line)["resolved"] is not None for line in listed.stdout.splitlines()} == {True}
    again = _cli("dlq", "replay", "acme/observations", "--config", str(root))
    assert again.exit_code == 0 and "3 already resolved" in again.stdout
    assert on_kafka() == after


@pytest.mark.parametrize(
    ("connector", "why"),
    [(MqttMeterConnector, "has no topic"), (Hl7v2Connector, "its sender resends it")],
)
def test_push_families_say_why_their_dlq_records_are_not_replayed(connector: Any, why: str) -> None:
    with pytest.raises(NotReplayable, match=why):
        connector.raw_from_dlq(None, b'{"power": 1}')  # the hook reads nothing of the instance
