"""Every contract model matches its checked-in JSON Schema and stays compatible with its earlier minors."""

from __future__ import annotations

import pytest

from inlet import contracts
from inlet.contracts.base import Contract
from inlet.contracts.schemas import check_contracts


@pytest.mark.parametrize("model", contracts.all_contracts(), ids=lambda m: f"{m.contract_name}-{m.contract_version}")
def test_model_matches_its_checked_in_schema_and_earlier_minors(model: type[Contract]) -> None:
    assert check_contracts([model]) == []


def test_the_first_contract_is_registered() -> None:
    assert contracts.get_contract("clinical.observation", "1.0") is contracts.ObservationV1
    with pytest.raises(KeyError, match=r"known: .*clinical\.observation 1\.0"):
        contracts.get_contract("clinical.observation", "9.9")
