"""Re-record the bundled example customer's fixtures from the local FHIR test server.

The example (``examples/config``) replays ``fixtures/example-clinic/observations/http.jsonl`` so the
README's first command needs no network. This script makes that recording: it serves *generated*
data (``connectors.fhir.synth``, seeded — never third-party files) plus a few deliberately bad records
from the real test server and records the integration with ``core.fixtures.record`` (exchanges, shape
and golden events; what ``inlet record`` does against a configured upstream).

    .venv/bin/python -m tools.record_example
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from inlet.connectors.fhir.synth import generate_observations
from inlet.core.config import load_config
from inlet.core.drift import learn
from tools.recording import record_from_fhir_server

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "config"
FIXTURES = ROOT / "fixtures" / "example-clinic" / "observations"


def example_resources() -> list[dict[str, object]]:
    """Generated observations, a local point-of-care code, and three bad records the DLQ must catch."""
    obs = generate_observations(240, seed=11)
    local = copy.deepcopy(obs[5])
    local["id"] = "poc-glucose-1"
    local["code"] = {"coding": [{"system": "urn:example-clinic:poc-codes", "code": "GLU-POC"}], "text": "Glucose POC"}
    no_code = copy.deepcopy(obs[6])
    no_code["id"] = "bad-no-code"
    del no_code["code"]
    unknown_value = copy.deepcopy(obs[7])
    unknown_value["id"] = "bad-unknown-value"
    unknown_value.pop("valueQuantity", None)
    unknown_value["valueAttachment"] = {"contentType": "text/plain", "data": "aGVsbG8="}
    bad_time = copy.deepcopy(obs[8])
    bad_time["id"] = "bad-effective-time"
    bad_time["effectiveDateTime"] = "2024-02-30T10:00:00+01:00"
    error = copy.deepcopy(obs[9])
    error["id"] = "entered-in-error-1"
    error["status"] = "entered-in-error"
    extra = [local, no_code, unknown_value, bad_time, error]
    for r in extra:
        r["meta"] = dict(obs[-1]["meta"])
    return [*obs, *extra]


def record_example() -> None:
    """Serve generated data from the local FHIR test server and record the example integration from it.

    The data is synthetic, so a fixed pseudonymisation key is fine *here*; a real customer's key comes
    from the environment and never from the repository.
    """
    os.environ.setdefault("INLET_PSEUDONYM_KEY", "example-clinic-synthetic-data-only")
    _, [item] = load_config(CONFIG)
    # Links in the recording point at the configured upstream, not the test server's random port.
    count = record_from_fhir_server(item, example_resources(), FIXTURES)
    print(f"recorded {FIXTURES.relative_to(ROOT)}: {count} golden events")
    # The upstream shape the example checks drift against is learnt from the well-formed generated resources
    # only, so the deliberately odd records show up as drift alerts when the example runs.
    (FIXTURES / "shape.json").write_text(learn(generate_observations(240, seed=11)).to_json())


if __name__ == "__main__":
    record_example()
