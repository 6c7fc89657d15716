"""Checked-in JSON Schemas of the contracts: generated from the models, compared in CI.

``python -m contracts.schemas`` rewrites ``contracts/schemas/<name>.v<version>.json``; the test suite
fails when a model and its checked-in schema differ, so a contract cannot change by accident.
"""

from __future__ import annotations

import json
from pathlib import Path

from contracts.base import Contract, all_contracts

__all__ = ["SCHEMA_DIR", "render_schema", "schema_path", "write_schemas"]

SCHEMA_DIR = Path(__file__).parent / "schemas"


def schema_path(model: type[Contract]) -> Path:
    """Where a contract's schema is checked in."""
    return SCHEMA_DIR / f"{model.contract_name}.v{model.contract_version}.json"


def render_schema(model: type[Contract]) -> str:
    """The schema as stable, reviewable text (sorted keys, two-space indent, trailing newline)."""
    schema = model.model_json_schema(mode="serialization")
    schema["$id"] = f"urn:inlet:contract:{model.contract_name}:{model.contract_version}"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas() -> list[Path]:
    """Regenerate every checked-in schema; returns the files written."""
    SCHEMA_DIR.mkdir(exist_ok=True)
    written = []
    for model in all_contracts():
        path = schema_path(model)
        path.write_text(render_schema(model))
        written.append(path)
    return written


if __name__ == "__main__":
    import contracts  # noqa: F401 - registers every contract

    for p in write_schemas():
        print(p)
