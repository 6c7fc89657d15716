"""Every contract model matches its checked-in JSON Schema (regenerate with `python -m contracts.schemas`)."""

from __future__ import annotations

import pytest

import contracts
from contracts.base import Contract
from contracts.schemas import render_schema, schema_path


@pytest.mark.parametrize("model", contracts.all_contracts(), ids=lambda m: f"{m.contract_name}-{m.contract_version}")
def test_model_matches_checked_in_schema(model: type[Contract]) -> None:
    path = schema_path(model)
    assert path.exists(), f"{path.name} is not checked in: run python -m contracts.schemas"
    assert path.read_text() == render_schema(model), (
        f"{model.contract_name} {model.contract_version} differs from {path.name}: a changed contract needs a "
        "new version (minor if compatible, major if not); regenerate with python -m contracts.schemas")


def test_the_first_contract_is_registered() -> None:
    assert contracts.get_contract("clinical.observation", "1.0") is contracts.ObservationV1
    with pytest.raises(KeyError, match=r"known: clinical\.observation 1\.0"):
        contracts.get_contract("clinical.observation", "9.9")
