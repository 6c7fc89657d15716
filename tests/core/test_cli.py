"""The README's first command path: the bundled example runs offline into the outbox, and the CLI shows it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "config"


def _inlet(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "INLET_KAFKA_BOOTSTRAP"}
    env.update(INLET_STATE_DIR=str(state), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "inlet", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_example_runs_offline_into_the_outbox_and_tail_shows_it(tmp_path: Path) -> None:
    first = _inlet("run", "--config", str(EXAMPLE), "--once", state=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "example-clinic/observations" in first.stdout
    assert "into the outbox" in first.stderr

    tail = _inlet("events", "tail", "--config", str(EXAMPLE), "-n", "1000", state=tmp_path)
    assert tail.returncode == 0, tail.stderr
    lines = [orjson.loads(line) for line in tail.stdout.splitlines()]
    events = [d for d in lines if d["topic"] in ("clinical.observation.v1", "clinical.observation.v2")]
    dlq = [d for d in lines if d["topic"] == "inlet.dlq.example-clinic.observations"]
    assert events and dlq
    assert all(d["headers"]["ce_type"] == "clinical.observation" for d in events)
    # Dual publishing: each Observation as clinical.observation v2.0 (exact decimals) and v1.0.
    by_major = {
        t: sorted(d["value"]["observation_id"] for d in events if d["topic"] == t)
        for t in ("clinical.observation.v1", "clinical.observation.v2")
    }
    assert by_major["clinical.observation.v1"] == by_major["clinical.observation.v2"]
    assert {d["headers"]["dlq_stage"] for d in dlq} == {"map", "validate"}
    # The plugin's quirk: the local point-of-care code gains its LOINC coding.
    for poc in (d for d in events if d["value"]["observation_id"] == "poc-glucose-1"):  # in both majors
        assert poc["value"]["code"][0] == {
            "system": "http://loinc.org",
            "code": "2339-0",
            "display": "Glucose [Mass/volume] in Blood",
        }
    # The summary's numbers are the outbox's numbers.
    row = next(line for line in first.stdout.splitlines() if "example-clinic/observations" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert int(cells[2]) == len(events) and int(cells[3]) == len(dlq)

    again = _inlet("run", "--config", str(EXAMPLE), "--once", state=tmp_path)
    assert again.returncode == 0, again.stderr
    tail_again = _inlet("events", "tail", "--config", str(EXAMPLE), "-n", "1000", state=tmp_path)
    assert len(tail_again.stdout.splitlines()) == len(lines), "a second run from the checkpoint adds nothing"

    listing = _inlet("integrations", "--config", str(EXAMPLE), state=tmp_path)
    assert listing.returncode == 0 and "example_clinic.observations" in listing.stdout
    assert "clinical.observation.v1" in listing.stdout and "last_updated" in listing.stdout
    assert "clinical.observation.v2" in listing.stdout
