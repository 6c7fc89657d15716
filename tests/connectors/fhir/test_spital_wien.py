"""Spital Wien: Bulk Data behind SMART Backend Services, recorded end to end from the local test servers."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tools.record_bulk import record_bulk

pytestmark = [pytest.mark.slow]


def test_recording_authenticates_with_smart_and_exports_the_cohort(tmp_path: Path) -> None:
    counts = record_bulk(tmp_path)  # raises unless the auth server verified ES384 assertions
    nightly = [orjson.loads(line) for line in (tmp_path / "spital-wien/nightly/http.jsonl").read_bytes().splitlines()]
    requests = [d["request"].split("?")[0] for d in nightly]
    assert requests[0] == "POST /smart/token" and nightly[0]["response"]["status"] == 200
    assert nightly[0]["response"]["json"]["access_token"] == "***"  # the token never reaches the fixture
    kickoffs = [d for d in nightly if "$export" in d["request"]]
    assert all("_type=Patient,Encounter,Observation,Condition,MedicationRequest" in d["request"] for d in kickoffs)
    assert all("_since" not in d["request"] for d in kickoffs)  # nightly is a full export every time
    assert requests.count("DELETE /fhir/bulkstatus/job0001") >= 1
    hourly = [orjson.loads(line) for line in (tmp_path / "spital-wien/hourly/http.jsonl").read_bytes().splitlines()]
    second = [d["request"] for d in hourly if "$export" in d["request"]][1]
    assert "_since=" in second  # the hourly run asks only for what changed since the last transactionTime
    # Nightly re-exports everything on its second run (same events, same ids); hourly's second run finds nothing.
    golden = [orjson.loads(line) for line in (tmp_path / "spital-wien/nightly/events.jsonl").read_bytes().splitlines()]
    ids = [g["headers"]["ce_id"] for g in golden]
    assert counts["nightly"] == 2 * counts["hourly"] and len(set(ids)) == counts["hourly"]
