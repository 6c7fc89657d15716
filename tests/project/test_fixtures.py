"""One generated contract test per recorded integration fixture (core.testing), plus what makes it fail."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from inlet.core.redact import scan_for_leaks
from inlet.testing import FixtureCase, check_fixture, fixture_cases

ROOT = Path(__file__).resolve().parents[2]

CASES = fixture_cases([ROOT / "examples" / "config", ROOT / "examples" / "customers"], ROOT / "fixtures")


def test_every_configured_integration_with_fixtures_gets_a_test() -> None:
    assert [str(c) for c in CASES] == [
        "example-clinic/observations",
        "alpenholz/invoices",
        "brandt-moebel/invoices",
        "hopital-du-lac/hl7",
        "klinikum-mitte/encounters",
        "klinikum-mitte/observations",
        "klinikum-mitte/patients",
        "kowhai-kitchens/invoices",
        "netz-ost/substations",
        "spital-wien/hourly",
        "spital-wien/nightly",
        "st-marien/hl7",
        "stadtwerke-nord/meters",
    ]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_fixture(case: FixtureCase) -> None:
    check_fixture(case)


def _edited(tmp_path: Path, edit) -> FixtureCase:  # type: ignore[no-untyped-def]
    """The example's fixture copied to tmp_path with ``edit(resource)`` applied to one recorded resource."""
    case = CASES[0]
    copy = tmp_path / "fixture"
    shutil.copytree(case.fixtures, copy)
    lines = (copy / "http.jsonl").read_bytes().splitlines()
    first = orjson.loads(lines[0])
    resource = next(
        e["resource"]
        for e in first["response"]["json"]["entry"]
        if "valueQuantity" in e["resource"]
        and e["resource"]["status"] == "final"
        and e["resource"]["category"][0]["coding"][0]["code"] == "vital-signs"
    )
    edit(resource)
    lines[0] = orjson.dumps(first)
    (copy / "http.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return FixtureCase(case.integration, copy)


def test_a_missing_required_field_upstream_fails_with_an_actionable_message(tmp_path: Path) -> None:
    case = _edited(tmp_path, lambda r: r.pop("code"))
    with pytest.raises(AssertionError) as info:
        check_fixture(case)
    message = str(info.value)
    assert "no longer gives the golden events" in message
    assert "inlet replay example-clinic/observations --update" in message
    assert '"dlq_stage":"validate"' in message  # the record now lands in the DLQ: visible in the diff
    assert "code" in message


def test_a_changed_type_upstream_fails_the_generated_test(tmp_path: Path) -> None:
    case = _edited(tmp_path, lambda r: r["valueQuantity"].update(value="not a number"))
    with pytest.raises(AssertionError, match="no longer gives the golden events"):
        check_fixture(case)


def test_record_then_replay_round_trip_through_the_cli(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from inlet.connectors.fhir.synth import generate_observations
    from tests.helpers import write_config
    from tools.servers.fhir import FhirTestServer

    env = {k: v for k, v in os.environ.items() if k != "INLET_KAFKA_BOOTSTRAP"}
    env.update(INLET_PSEUDONYM_KEY="test-key-0123456789abcdef", ACME_TOKEN="planted-secret-token-42")

    def inlet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "inlet", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    fixtures = tmp_path / "fx"
    resources = generate_observations(120, seed=21)
    with FhirTestServer(resources) as server:
        root = write_config(
            tmp_path / "cfg",
            base_url=server.base_url,
            page_size=25,
            http={"auth": {"kind": "bearer", "token": {"env": "ACME_TOKEN"}}},
        )
        recorded = inlet("record", "acme/observations", "--config", str(root), "--fixtures", str(fixtures))
        assert recorded.returncode == 0, recorded.stderr
    # The server is gone: replay is offline.
    replayed = inlet("replay", "acme/observations", "--config", str(root), "--fixtures", str(fixtures))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "events equal the goldens" in replayed.stdout
    golden = (fixtures / "events.jsonl").read_text().splitlines()
    mapped = 120 - sum(1 for r in generate_observations(120, seed=21) if r["status"] == "entered-in-error")
    assert len(golden) == 2 * mapped  # clinical.observation v2.0, and v1.0 dual-published from it
    assert (fixtures / "shape.json").exists()
    # Neither the planted secret nor a real patient id reaches any fixture file (PHI is pseudonymised).
    patient_ids = {r["subject"]["reference"].split("/")[-1] for r in resources}
    for name in ("http.jsonl", "events.jsonl", "shape.json"):
        text = (fixtures / name).read_text()
        assert scan_for_leaks(text, secrets=["planted-secret-token-42"], phi_values=patient_ids) == [], name
    (fixtures / "events.jsonl").write_text("\n".join(golden[:-1]) + "\n")  # a golden event goes missing
    changed = inlet("replay", "acme/observations", "--config", str(root), "--fixtures", str(fixtures))
    assert changed.returncode == 1 and changed.stdout.startswith("---")
    updated = inlet("replay", "acme/observations", "--config", str(root), "--fixtures", str(fixtures), "--update")
    assert updated.returncode == 0 and len((fixtures / "events.jsonl").read_text().splitlines()) == len(golden)
