"""The FHIR slice against the local FHIR server: bad input goes to the DLQ with its reason, the daemon runs on,
watermark ties are neither lost nor duplicated, and every record is accounted for."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from inlet.connectors.fhir.synth import generate_observations
from inlet.core.config import load_config
from inlet.core.sinks.outbox import read_outbox
from inlet.core.supervisor import Supervisor
from tests.helpers import write_config
from tools.servers.fhir import Faults, FhirTestServer


def _bad_records(template: dict[str, Any]) -> list[dict[str, Any]]:
    no_code = copy.deepcopy(template)
    no_code["id"] = "bad-no-code"
    del no_code["code"]
    unknown = copy.deepcopy(template)
    unknown["id"] = "bad-unknown-type"
    unknown.pop("valueQuantity", None)
    unknown["valueAttachment"] = {"contentType": "text/plain"}
    bad_time = copy.deepcopy(template)
    bad_time["id"] = "bad-time"
    bad_time["effectiveDateTime"] = "2024-13-45T99:00:00Z"
    return [no_code, unknown, bad_time]


def _outbox(root: Path) -> list[Any]:
    return read_outbox(root / "state" / "outbox.sqlite", limit=100_000)


def _v1(root: Path) -> list[Any]:
    """The outbox's clinical.observation v1.0 events (each Observation is also published as v2.0)."""
    return [r for r in _outbox(root) if r.topic == "clinical.observation.v1"]


async def _until(predicate: Any, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_bad_input_goes_to_the_dlq_and_the_daemon_keeps_running(
    tmp_path: Path, run_supervisor: Callable[[Supervisor], asyncio.Task[Any]]
) -> None:
    good = generate_observations(400, seed=5)
    bad = _bad_records(good[0])
    for b in bad:
        b["meta"] = dict(good[-1]["meta"])
    faults = Faults(malformed_pages=frozenset({2}))  # one malformed page (once), mid-stream
    with FhirTestServer([*good, *bad], faults=faults) as server:
        root = write_config(tmp_path, base_url=server.base_url, page_size=50, poll_interval_seconds=0.2)
        sup_cfg, integrations = load_config(root)
        supervisor = Supervisor(sup_cfg, integrations)
        run = run_supervisor(supervisor)
        wanted = {r["id"] for r in good if r["status"] != "entered-in-error"}

        def delivered() -> set[str]:
            rows = _outbox(root)
            return {orjson.loads(r.value)["observation_id"] for r in rows if not r.topic.startswith("inlet.dlq")}

        await _until(lambda: delivered() >= wanted and len([r for r in _outbox(root) if "dlq" in r.topic]) >= 4)
        await asyncio.sleep(0.5)  # a few more polls: nothing new may appear
        assert not run.done(), "the daemon must keep running after bad input"
        supervisor.stop()
        stats = (await asyncio.wait_for(run, 10))["acme/observations"]

    rows = _outbox(root)
    events = [r for r in rows if r.topic == "clinical.observation.v1"]
    dlq = [r for r in rows if r.topic == "inlet.dlq.acme.observations"]
    assert sorted(orjson.loads(r.value)["observation_id"] for r in events) == sorted(wanted), "no loss, no dup"
    v2 = [r for r in rows if r.topic == "clinical.observation.v2"]  # dual publishing: the same, in v2.0
    assert sorted(orjson.loads(r.value)["observation_id"] for r in v2) == sorted(wanted)

    by_reason = {(r.headers["dlq_stage"], r.headers.get("dlq_source_key")): r for r in dlq}
    assert set(by_reason) == {
        ("decode", None),
        ("validate", "Observation/bad-no-code"),
        ("map", "Observation/bad-unknown-type"),
        ("map", "Observation/bad-time"),
    }
    page = by_reason[("decode", None)]
    assert "is not a JSON FHIR Bundle" in page.headers["dlq_error_message"]
    assert page.headers["dlq_error_type"] == "DecodeError" and page.headers["dlq_position"]
    assert page.value, "the raw page body is the DLQ value"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(page.value)
    no_code = by_reason[("validate", "Observation/bad-no-code")]
    assert "code" in no_code.headers["dlq_error_message"]
    assert orjson.loads(no_code.value)["id"] == "bad-no-code"  # the original payload is the value
    assert "valueAttachment" in by_reason[("map", "Observation/bad-unknown-type")].headers["dlq_error_message"]
    assert "2024-13-45T99:00:00Z" in by_reason[("map", "Observation/bad-time")].headers["dlq_error_message"]

    t = stats.totals
    assert t.balanced()
    assert t.records_mapped == len(wanted) and t.events_out == 2 * len(wanted) and t.dlq.total() == 4
    # Records read again at the watermark on each poll are counted, as filtered with that reason.
    assert set(t.filtered) <= {"already delivered at the watermark", "status entered-in-error"}
    assert t.records_in == t.records_mapped + t.dlq.total() + t.filtered.total()


async def test_watermark_ties_across_polls_are_neither_lost_nor_duplicated(
    tmp_path: Path, run_supervisor: Callable[[Supervisor], asyncio.Task[Any]]
) -> None:
    first = generate_observations(120, seed=8)
    with FhirTestServer(first) as server:
        root = write_config(tmp_path, base_url=server.base_url, page_size=7, poll_interval_seconds=0.1)
        sup_cfg, integrations = load_config(root)
        supervisor = Supervisor(sup_cfg, integrations)
        run = run_supervisor(supervisor)
        await _until(lambda: len(_v1(root)) >= len([r for r in first if r["status"] != "entered-in-error"]))
        # New resources written in the same instant as the current watermark, and later ones.
        last_meta = first[-1]["meta"]
        tie = copy.deepcopy(first[3])
        tie["id"], tie["meta"] = "late-tie", dict(last_meta)
        later = generate_observations(30, seed=9, start=datetime(2030, 1, 1, tzinfo=UTC))
        server.add([tie, *later])
        everything = [*first, tie, *later]
        wanted = sorted(r["id"] for r in everything if r["status"] != "entered-in-error")
        await _until(lambda: len(_v1(root)) >= len(wanted))
        await asyncio.sleep(0.4)
        supervisor.stop()
        await asyncio.wait_for(run, 10)
    got = sorted(orjson.loads(r.value)["observation_id"] for r in _v1(root))
    assert got == wanted
    v2 = [r for r in _outbox(root) if r.topic == "clinical.observation.v2"]  # dual publishing: v2.0 alike
    assert sorted(orjson.loads(r.value)["observation_id"] for r in v2) == wanted
