"""Local test upstreams (FHIR, ERP, MQTT...) that tests and benchmarks start in-process or as subprocesses.

Third-party sample data is read where it lies (never copied into the project): ``sample_data_dir()`` finds it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["sample_data_dir"]


def sample_data_dir() -> Path:
    """The shared third-party sample data: ``$INLET_SAMPLE_DATA``, else ``<repo root>/../shared/data``."""
    override = os.environ.get("INLET_SAMPLE_DATA")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"
