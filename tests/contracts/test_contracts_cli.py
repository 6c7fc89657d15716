"""`inlet contracts check` guards the contracts in CI; `inlet contracts diff` explains a break in words."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _inlet(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200")
    # With cwd at a temp copy of the inlet package, `python -m` finds that copy first (the working directory
    # leads sys.path, ahead of the editable install's finder).
    return subprocess.run(
        [sys.executable, "-m", "inlet", *args],
        cwd=pythonpath or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _copy_contracts(tmp: Path) -> Path:
    """A copy of the whole ``inlet`` package (symlinks resolved); the test edits its ``contracts``."""
    shutil.copytree(ROOT / "inlet", tmp / "inlet", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp / "inlet" / "contracts"


def test_the_project_contracts_pass_the_check() -> None:
    result = _inlet("contracts", "check")
    assert result.returncode == 0, result.stderr
    listing = _inlet("contracts")
    assert "clinical.observation" in listing.stdout and "clinical.observation.v1" in listing.stdout


def test_an_unversioned_model_change_fails_with_a_readable_message(tmp_path: Path) -> None:
    copy = _copy_contracts(tmp_path)
    model = copy / "clinical_observation.py"
    model.write_text(model.read_text().replace("    code_text: str | None = None\n", ""))
    result = _inlet("contracts", "check", pythonpath=tmp_path)
    assert result.returncode == 1
    assert "clinical.observation 1.0: the model differs from clinical.observation.v1.0.json" in result.stderr
    assert "new minor version" in result.stderr


def test_an_incompatible_new_minor_fails_and_diff_explains_it(tmp_path: Path) -> None:
    copy = _copy_contracts(tmp_path)
    model = copy / "clinical_observation.py"
    text = model.read_text().replace(
        'contract_version: ClassVar[str] = "1.0"', 'contract_version: ClassVar[str] = "1.1"'
    )
    # A new enum value: consumers built against 1.0 cannot read events that carry it (FORWARD breaks).
    text = text.replace('"entered-in-error", "unknown"', '"entered-in-error", "unknown", "provisional"')
    model.write_text(text)
    regenerate = subprocess.run(
        [sys.executable, "-m", "inlet.contracts.schemas"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert regenerate.returncode == 0, regenerate.stderr
    assert (copy / "schemas" / "clinical.observation.v1.0.json").exists()
    result = _inlet("contracts", "check", pythonpath=tmp_path)
    assert result.returncode == 1, result.stdout
    assert "clinical.observation 1.1 is not FORWARD compatible with 1.0" in result.stderr
    assert "status" in result.stderr and "provisional" in result.stderr
    diff = _inlet("contracts", "diff", "clinical.observation", "1.0", "1.1", pythonpath=tmp_path)
    assert diff.returncode == 1 and "NOT FORWARD compatible" in diff.stdout and "provisional" in diff.stdout
    backward = _inlet(
        "contracts", "diff", "clinical.observation", "1.0", "1.1", "--mode", "BACKWARD", pythonpath=tmp_path
    )
    assert backward.returncode == 0, backward.stdout  # old events are still valid under the wider enum
