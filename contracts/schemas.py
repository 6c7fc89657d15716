"""Checked-in JSON Schemas of the contracts: generated from the models, compared in CI.

``python -m inlet.contracts.schemas`` rewrites ``contracts/schemas/<name>.v<version>.json``; the test suite
fails when a model and its checked-in schema differ, so a contract cannot change by accident.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inlet.contracts.base import Contract, all_contracts

__all__ = ["SCHEMA_DIR", "check_contracts", "checked_in", "render_schema", "schema_path", "write_schemas"]

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


def checked_in(name: str) -> dict[str, dict[str, Any]]:
    """Every checked-in schema of contract ``name`` by version (``"1.0"``: schema)."""
    out = {}
    for path in sorted(SCHEMA_DIR.glob(f"{name}.v*.json")):
        version = path.name[len(name) + 2 : -len(".json")]
        out[version] = json.loads(path.read_text())
    return out


def _minor_key(version: str) -> tuple[int, int]:
    major, minor = version.split(".", 1)
    return int(major), int(minor)


def check_contracts(models: list[type[Contract]] | None = None) -> list[str]:
    """What CI refuses: a model whose checked-in schema differs, or a minor incompatible with an earlier one.

    Each message says which contract, what differs and what to do about it.
    """
    from inlet.contracts.compat import check

    problems: list[str] = []
    for model in models if models is not None else all_contracts():
        name, version = model.contract_name, model.contract_version
        path = schema_path(model)
        current = json.loads(render_schema(model))
        if not path.exists():
            problems.append(
                f"{name} {version}: no checked-in schema {path.name}; run python -m inlet.contracts.schemas"
            )
        elif json.loads(path.read_text()) != current:
            problems.append(
                f"{name} {version}: the model differs from {path.name}. A compatible change needs a new "
                f"minor version, a breaking one a new major; then run python -m inlet.contracts.schemas"
            )
        major = model.major()
        for old_version, old in sorted(checked_in(name).items(), key=lambda kv: _minor_key(kv[0])):
            if _minor_key(old_version)[0] != major or _minor_key(old_version) >= _minor_key(version):
                continue
            for issue in check(old, current, model.compatibility):
                problems.append(f"{name} {version} is not {model.compatibility} compatible with {old_version}: {issue}")
    return problems


if __name__ == "__main__":
    from inlet import contracts  # noqa: F401 - registers every contract

    for p in write_schemas():
        print(p)
