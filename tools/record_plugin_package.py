"""Re-record the out-of-tree example package's fixtures (``examples/plugin-package``) from the local FHIR test server.

The package (Northwind Clinic, distribution ``inlet-northwind-clinic``) shows a customer plugin that lives
outside this repository. Its config replays
``examples/plugin-package/fixtures/northwind-clinic/observations/``, and inlet's pytest plugin turns that
directory into its contract test. This script makes the recording. It serves *generated* data
(``connectors.fhir.synth``, seeded; never third-party files), shaped the way the clinic's EHR writes it:
point-of-care glucose and hemoglobin under the clinic's local code system, plus one local code the plugin does
not map. It records the integration with ``core.fixtures.record`` (exchanges, shape and golden events) through
:func:`tools.recording.record_from_fhir_server`.

The package does not have to be installed: the script imports it from its ``src/``, which makes its plugin
class known to the registry exactly as its entry point would.

    .venv/bin/python -m tools.record_plugin_package
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
from pathlib import Path
from typing import Any

from inlet.connectors.fhir.synth import FhirResource, generate_observations
from inlet.core.config import load_config
from tools.recording import record_from_fhir_server

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "examples" / "plugin-package"
CONFIG = PACKAGE / "config"
FIXTURES = PACKAGE / "fixtures" / "northwind-clinic" / "observations"
PSEUDONYM_KEY = "northwind-clinic-synthetic-data-only"
"""The data is synthetic, so a fixed key is fine *here*; a real customer's key comes from the environment."""


def _package() -> Any:
    """The package's module, imported from its source tree (the registry then knows its plugin)."""
    src = str(PACKAGE / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    return importlib.import_module("inlet_northwind")


def northwind_resources(poc_system: str, poc_to_loinc: dict[str, tuple[str, str]]) -> list[FhirResource]:
    """Generated observations with the EHR's quirk applied, plus one local code the clinic has not mapped yet."""
    obs = generate_observations(60, seed=41)
    local_of = {loinc: local for local, (loinc, _display) in poc_to_loinc.items()}
    for r in obs:
        coding = r["code"]["coding"][0]
        if coding["code"] in local_of:  # the bedside meters know only the clinic's own codes
            r["code"] = {
                "coding": [
                    {
                        "system": poc_system,
                        "code": local_of[coding["code"]],
                        "display": f"{coding['display']} (point of care)",
                    }
                ]
            }
    glucose = next(r for r in obs if r["code"]["coding"][0]["system"] == poc_system)
    ketones = copy.deepcopy(glucose)
    ketones["id"] = "poc-ketones-1"
    ketones["code"] = {"coding": [{"system": poc_system, "code": "KET", "display": "Ketones (point of care)"}]}
    ketones["valueQuantity"] = {"value": 0.4, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    ketones["meta"] = {**obs[-1]["meta"], "versionId": "1"}  # written last, at the final watermark
    return [*obs, ketones]


def record_plugin_package() -> None:
    """Serve the generated data from a fresh FHIR test server and record the package's integration from it."""
    os.environ.setdefault("INLET_PSEUDONYM_KEY", PSEUDONYM_KEY)
    package = _package()
    _, [item] = load_config(CONFIG)
    resources = northwind_resources(package.POC_SYSTEM, package.POC_TO_LOINC)
    count = record_from_fhir_server(item, resources, FIXTURES)
    print(f"recorded {FIXTURES.relative_to(ROOT)}: {count} golden events")


if __name__ == "__main__":
    record_plugin_package()
