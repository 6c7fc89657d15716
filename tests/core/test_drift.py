"""core.drift: learning a shape from synthetic FHIR Observations, every change kind, serialisation, alerting."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from inlet.connectors.fhir.synth import generate_observations
from inlet.core.drift import (
    AlertThrottle,
    DriftChange,
    Shape,
    alert,
    detect,
    learn,
)

OBSERVATIONS = generate_observations(200, seed=1)
SHAPE = learn(OBSERVATIONS)


def quantity_observation() -> dict[str, Any]:
    return copy.deepcopy(next(o for o in OBSERVATIONS if "valueQuantity" in o))


def kinds(changes: list[DriftChange]) -> set[tuple[str, str]]:
    return {(c.path, c.kind) for c in changes}


# --- learning ----------------------------------------------------------------------------------------------


def test_learn_records_types_optionality_and_enums() -> None:
    assert SHAPE.samples == 200
    assert SHAPE.paths["status"].types == {"string": 200}
    assert SHAPE.paths["status"].required
    assert SHAPE.enum("status") == frozenset({"final", "amended"})
    assert SHAPE.paths["code.coding[].system"].required
    assert not SHAPE.paths["valueQuantity"].required  # 173 of 200: optional
    assert SHAPE.paths["valueQuantity.value"].required  # required *within* its parent
    assert not SHAPE.paths["component"].required
    assert SHAPE.paths["component[].valueQuantity.value"].required
    # ids, references, timestamps and free text are never enumerations, nor are high-cardinality codes
    for path in (
        "id",
        "meta.versionId",
        "subject.reference",
        "effectiveDateTime",
        "meta.lastUpdated",
        "code.text",
        "code.coding[].display",
        "code.coding[].code",
    ):
        assert not SHAPE.is_enum(path), path
    assert SHAPE.is_enum("resourceType")
    assert SHAPE.is_enum("category[].coding[].code")


def test_identical_payloads_report_nothing() -> None:
    for obs in OBSERVATIONS:
        assert detect(SHAPE, obs) == []
        assert detect(SHAPE, obs, strict=True) == []


def test_enum_overrides() -> None:
    shape = learn(OBSERVATIONS, enum_paths=["meta.versionId"], not_enum_paths=["status"])
    assert shape.enum("meta.versionId") == frozenset({"1", "2"})
    assert not shape.is_enum("status")
    obs = quantity_observation()
    obs["meta"]["versionId"] = "3"
    obs["status"] = "provisional"
    assert kinds(detect(shape, obs)) == {("meta.versionId", "enum_value")}


def test_few_unique_strings_are_not_an_enum() -> None:
    shape = learn([{"kind": k} for k in ("a", "b", "c", "d", "e", "f")])
    assert not shape.is_enum("kind")  # 6 distinct values in 6 samples: no repetition, no closed set
    shape = learn([{"kind": k} for k in ("a", "b", "a", "b", "a", "b")])
    assert shape.enum("kind") == frozenset({"a", "b"})


# --- change kinds --------------------------------------------------------------------------------------------


def test_renamed_required_field_is_field_missing() -> None:
    obs = quantity_observation()
    obs["state"] = obs.pop("status")
    assert kinds(detect(SHAPE, obs)) == {("status", "field_missing")}
    assert kinds(detect(SHAPE, obs, strict=True)) == {("status", "field_missing"), ("state", "new_field")}


def test_renamed_nested_required_field_is_field_missing() -> None:
    obs = quantity_observation()
    for coding in obs["code"]["coding"]:
        coding["sys"] = coding.pop("system")
    assert kinds(detect(SHAPE, obs)) == {("code.coding[].system", "field_missing")}


def test_renamed_optional_object_reports_its_required_children_only_if_present() -> None:
    obs = quantity_observation()
    obs["valueQty"] = obs.pop("valueQuantity")
    assert detect(SHAPE, obs) == []  # valueQuantity is optional (absent from 27 of 200)
    assert kinds(detect(SHAPE, obs, strict=True)) == {("valueQty", "new_field")}


def test_string_where_number_was_is_type_changed() -> None:
    obs = quantity_observation()
    obs["valueQuantity"]["value"] = "12.5"
    changes = detect(SHAPE, obs)
    assert kinds(changes) == {("valueQuantity.value", "type_changed")}
    assert "string '12.5'" in changes[0].detail


def test_integer_where_number_was_is_fine_but_not_the_reverse() -> None:
    obs = quantity_observation()
    obs["valueQuantity"]["value"] = 12
    assert detect(SHAPE, obs) == []
    panel = copy.deepcopy(next(o for o in OBSERVATIONS if "component" in o))
    for component in panel["component"]:
        component["valueQuantity"]["value"] = 120.5  # only integers were seen here
    assert kinds(detect(SHAPE, panel)) == {("component[].valueQuantity.value", "type_changed")}  # once


def test_new_enum_value() -> None:
    obs = quantity_observation()
    obs["status"] = "provisional"
    changes = detect(SHAPE, obs)
    assert kinds(changes) == {("status", "enum_value")}
    assert "'provisional'" in changes[0].detail


def test_new_field_only_when_strict() -> None:
    obs = quantity_observation()
    obs["interpretation"] = [{"text": "high"}]
    obs["valueQuantity"]["comparator"] = "<"
    assert detect(SHAPE, obs) == []
    assert kinds(detect(SHAPE, obs, strict=True)) == {
        ("interpretation", "new_field"),
        ("valueQuantity.comparator", "new_field"),
    }


def test_non_object_payload_and_empty_shape() -> None:
    assert kinds(detect(SHAPE, ["not", "an", "object"])) == {("$", "type_changed")}
    assert detect(learn([]), {"anything": 1}, strict=True) == []


# --- serialisation --------------------------------------------------------------------------------------------


def test_json_round_trip_and_stable_order() -> None:
    text = SHAPE.to_json()
    again = Shape.from_json(text)
    assert again.to_json() == text
    assert again.paths == SHAPE.paths
    paths = list(again.to_dict()["paths"])
    assert paths == sorted(paths)
    # learning the same payloads in another order gives byte-identical text
    assert learn(list(reversed(OBSERVATIONS))).to_json() == text
    for obs in OBSERVATIONS[:20]:
        assert detect(again, obs) == []
    obs = quantity_observation()
    obs["status"] = "provisional"
    assert kinds(detect(again, obs)) == {("status", "enum_value")}


def test_hand_relaxed_required_flag_is_honoured() -> None:
    data = SHAPE.to_dict()
    data["paths"]["status"]["required"] = False
    relaxed = Shape.from_dict(data)
    obs = quantity_observation()
    del obs["status"]
    assert detect(relaxed, obs) == []


def test_from_json_rejects_malformed() -> None:
    with pytest.raises(ValueError, match="format"):
        Shape.from_json('{"format": 99, "paths": {}}')
    with pytest.raises(ValueError, match="malformed"):
        Shape.from_json('{"format": 1, "paths": {"a": {}}}')


def test_merge() -> None:
    halves = learn(OBSERVATIONS[:100]).merge(learn(OBSERVATIONS[100:]))
    assert halves.to_json() == SHAPE.to_json()
    # a path required in one sample set but whose parent was seen without it in the other becomes optional
    merged = learn([{"a": {"b": 1}}] * 3).merge(learn([{"a": {"c": 1}}] * 3))
    assert not merged.paths["a.b"].required
    assert not merged.paths["a.c"].required
    assert merged.paths["a"].required


# --- robustness ----------------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
_odd = st.one_of(_json, st.binary(max_size=4), st.tuples(st.integers()), st.sets(st.integers(), max_size=2))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_odd, strict=st.booleans())
def test_detect_never_raises(payload: object, strict: bool) -> None:
    changes = detect(SHAPE, payload, strict=strict)
    assert all(isinstance(c, DriftChange) for c in changes)


@settings(max_examples=200, deadline=None)
@given(payload=st.dictionaries(st.sampled_from(["status", "code", "component", "meta", "x"]), _odd, max_size=5))
def test_detect_never_raises_on_partial_observations(payload: dict[str, object]) -> None:
    detect(SHAPE, payload, strict=True)


@settings(max_examples=100, deadline=None)
@given(payloads=st.lists(_json, max_size=5))
def test_learnt_shape_accepts_its_own_samples(payloads: list[object]) -> None:
    shape = learn(payloads)
    assert Shape.from_json(shape.to_json()).to_json() == shape.to_json()
    for payload in payloads:
        assert detect(shape, payload, strict=True) == []


# --- alerting ------------------------------------------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def warning(self, event: str, /, **kw: Any) -> None:
        self.lines.append({"event": event, **kw})


def _count(kind: str) -> float:
    labels = {"customer": "acme", "integration": "obs", "kind": kind}
    return REGISTRY.get_sample_value("inlet_drift_alerts_total", labels) or 0.0


def test_alert_logs_throttled_and_counts_every_change() -> None:
    now = [1000.0]
    throttle = AlertThrottle(300.0, clock=lambda: now[0])
    log = _Recorder()
    changes = [DriftChange("status", "enum_value", "new value 'x'"), DriftChange("a.b", "field_missing", "gone")]
    before = _count("enum_value")
    assert alert("acme", "obs", changes, log, throttle=throttle) == 2
    assert alert("acme", "obs", changes, log, throttle=throttle) == 0  # same (path, kind) within 5 minutes
    assert alert("acme", "other", changes[:1], log, throttle=throttle) == 1  # per integration
    now[0] += 301
    assert alert("acme", "obs", changes[:1], log, throttle=throttle) == 1
    assert _count("enum_value") - before == 3  # always counted
    assert log.lines[0] == {
        "event": "drift_detected", "customer": "acme", "integration": "obs", "path": "status",
        "kind": "enum_value", "detail": "new value 'x'", "suppressed": 0,
    }  # fmt: skip
    assert log.lines[-1]["suppressed"] == 1


def test_throttle_memory_is_bounded() -> None:
    throttle = AlertThrottle(300.0, clock=lambda: 0.0, max_keys=3)
    for i in range(10):
        assert throttle.admit(("c", "i", f"p{i}", "new_field")) == 0
    assert throttle.admit(("c", "i", "p9", "new_field")) is None
    assert throttle.admit(("c", "i", "p0", "new_field")) == 0  # forgotten, logged again
