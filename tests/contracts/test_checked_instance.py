"""``contracts.base.checked_instance``: the compiled one (core/_speedups.c) leaves an instance in exactly the state
the Python reference (``checked_instance_python``) and validation leave it in.

The hot paths' own comparisons (tests/connectors/fhir/test_fhir_prechecked.py, the meter fast-path tests) compare
whole events; this file pins the instance state itself: the very ``__dict__``, a fresh fields set, no extra or
private values, frozen, copyable, equal and serialised alike.
"""

from __future__ import annotations

import copy
import os
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from inlet.contracts import base
from inlet.contracts.clinical_observation import QuantityValue as QuantityValueV1
from inlet.contracts.energy_meter_reading import MeterReadingV1

COMPILED = base.checked_instance is not base.checked_instance_python
QUANTITY_KEYS = frozenset(QuantityValueV1.model_fields)


def test_the_compiled_checked_instance_is_built_in_ci() -> None:
    """CI installs with a C compiler: a missing compiled helper is a failure there, not a silent slow path."""
    if os.environ.get("CI") == "true":
        assert COMPILED


def state(model: BaseModel) -> tuple[Any, ...]:
    return (
        type(model),
        model.__dict__,
        model.__pydantic_fields_set__,
        model.__pydantic_extra__,
        model.__pydantic_private__,
        model.model_dump_json(),
    )


quantities = st.fixed_dictionaries(
    {
        "type": st.just("quantity"),
        "value": st.floats(allow_nan=False, allow_infinity=False),
        "unit": st.none() | st.text(max_size=8),
        "system": st.none() | st.text(max_size=8),
        "code": st.none() | st.text(max_size=8),
        "comparator": st.none() | st.sampled_from(["<", "<=", ">=", ">"]),
    }
)


@pytest.mark.skipif(not COMPILED, reason="the compiled helpers are not built here (CI requires them)")
@given(quantities)
def test_compiled_and_python_instances_are_the_same_as_validation(drawn: dict[str, Any]) -> None:
    values = {name: drawn[name] for name in QuantityValueV1.model_fields}  # in definition order, as the callers do
    validated = QuantityValueV1.model_validate(values)
    compiled = base.checked_instance(QuantityValueV1, dict(values), QUANTITY_KEYS)
    python = base.checked_instance_python(QuantityValueV1, dict(values), QUANTITY_KEYS)
    assert state(compiled) == state(python) == state(validated)
    assert compiled == validated
    assert type(compiled.__pydantic_fields_set__) is set


@pytest.mark.skipif(not COMPILED, reason="the compiled helpers are not built here (CI requires them)")
def test_the_instance_keeps_the_values_dict_and_a_fields_set_of_its_own() -> None:
    values = {"type": "quantity", "value": 1.5, "unit": "kg", "system": None, "code": None, "comparator": None}
    given = {"type", "value", "unit"}
    model = base.checked_instance(QuantityValueV1, values, given)
    assert model.__dict__ is values
    assert model.model_fields_set == given and model.model_fields_set is not given
    given.add("code")  # the caller's set is not the instance's
    assert model.model_fields_set == {"type", "value", "unit"}
    assert model.model_dump(exclude_unset=True) == {"type": "quantity", "value": 1.5, "unit": "kg"}
    with pytest.raises(ValidationError, match="frozen"):
        model.value = 2.0  # type: ignore[misc]
    assert copy.deepcopy(model) == model and pickle.loads(pickle.dumps(model)) == model
    assert model.model_copy(update={"unit": "g"}).unit == "g" and model.unit == "kg"


@pytest.mark.skipif(not COMPILED, reason="the compiled helpers are not built here (CI requires them)")
def test_a_whole_meter_reading_from_the_compiled_helper_equals_the_validated_one() -> None:
    reading = MeterReadingV1.model_validate(
        {
            "device_id": "hub-1",
            "metric": "energy_import",
            "quantity": 12.5,
            "unit": "kWh",
            "direction": "import",
            "kind": "cumulative",
            "measured_at": "2024-03-01T09:00:00Z",
            "measured_at_precision": "second",
            "time_source": "device",
        }
    )
    fields = frozenset(MeterReadingV1.model_fields)
    compiled = base.checked_instance(MeterReadingV1, dict(reading.__dict__), fields)
    python = base.checked_instance_python(MeterReadingV1, dict(reading.__dict__), fields)
    assert compiled == python == reading
    assert compiled.model_dump_json() == python.model_dump_json() == reading.model_dump_json()


@pytest.mark.skipif(not COMPILED, reason="the compiled helpers are not built here (CI requires them)")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((dict, {}, frozenset()), "model class"),  # not a pydantic model
        ((QuantityValueV1, [], frozenset()), "dict of values"),
        ((QuantityValueV1, {}), "model class"),  # too few arguments
    ],
)
def test_the_compiled_helper_refuses_what_it_was_not_built_for(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        base.checked_instance(*args)


@pytest.mark.skipif(not COMPILED, reason="the compiled helpers are not built here (CI requires them)")
def test_an_unhashable_field_name_is_an_error_not_a_half_built_instance() -> None:
    with pytest.raises(TypeError, match="unhashable"):
        base.checked_instance(QuantityValueV1, {}, [["type"]])  # type: ignore[arg-type]
