"""The Observation hot path validates once: its fast paths equal the checked path, byte for byte.

``map_observation`` builds the model in one pass for the common shape (``_observation_one_pass``) or from the full
mapper's fields checked as the contract would (``prechecked_observation``), and ``to_v1`` converts without
validating again (``_v1_prechecked``); each falls back to pydantic for anything it does not vouch for. Compared
here with ``map_observation_checked`` / ``to_v1_checked`` (the full mapper, validated) over generated resources —
odd types, bad timestamps, every value kind, numbers as written (``5.10``, ``1e-3``, 20 digits) — and over every
Observation of the real samples: the same model (fields, fields set, nested types), the same enveloped events
(topic, key, headers, value bytes) or the same error; and through ``process_batch`` of the Bulk connector, the same
events and DLQ records as with the fast paths switched off.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from inlet.connectors.fhir import mapping
from inlet.connectors.fhir.mapping import BundleIndex, bundle_index, map_observation, map_observation_checked
from inlet.connectors.fhir.ndjson import NdjsonFile, NdjsonLine
from inlet.connectors.fhir.synth import generate_observations
from inlet.contracts import clinical_observation_v2
from inlet.contracts.clinical_observation_v2 import ObservationV2, to_v1, to_v1_checked
from inlet.core import exact_json
from inlet.core.connector import Batch, IntegrationContext
from inlet.core.envelope import Enveloper, Event
from inlet.core.metrics import BatchCounts
from inlet.core.pipeline import process_batch
from inlet.core.registry import find_plugin
from tests.helpers import python_envelopes

ZONE = "Europe/Vienna"
ENV = Enveloper("acme", "fhir", topic_template="t.{name}.v{major}")


# -- comparing the two paths -----------------------------------------------------------------------------------
def _outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as exc:  # the checked path's refusal must be the fast path's, word for word
        return "error", (type(exc), str(exc))


def _same_structure(a: Any, b: Any) -> None:
    """Equal values of the very same types all the way down (a model's fields, fields set and parts)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, BaseModel):
        assert a.__dict__.keys() == b.__dict__.keys()
        assert list(a.__dict__) == list(type(a).model_fields)
        assert a.model_fields_set == b.model_fields_set
        assert a.__pydantic_extra__ == b.__pydantic_extra__ and a.__pydantic_private__ == b.__pydantic_private__
        for name in a.__dict__:
            _same_structure(a.__dict__[name], b.__dict__[name])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same_structure(x, y)
    else:
        assert a == b


def _events(model: Any) -> list[Event]:
    return [ENV.envelope(model, "Observation/x", "1", 0)]


def _assert_same(res: Any, index: BundleIndex | None = None) -> None:
    fast = _outcome(map_observation, res, ZONE, index=index)
    checked = _outcome(map_observation_checked, res, ZONE, index=index)
    assert fast[0] == checked[0], (fast, checked)
    if fast[0] == "error":
        assert fast[1] == checked[1]
        return
    v2, ref = fast[1], checked[1]
    _same_structure(v2, ref)
    assert v2 == ref
    # Serialising with pydantic's warnings on (errors here): a part of an unexpected type would say so.
    assert v2.model_dump_json() == ref.model_dump_json()
    assert _events(v2) == _events(ref)
    v1_fast, v1_checked = _outcome(to_v1, v2), _outcome(to_v1_checked, ref)
    assert v1_fast[0] == v1_checked[0], (v1_fast, v1_checked)
    if v1_fast[0] == "error":
        assert v1_fast[1] == v1_checked[1]
        return
    _same_structure(v1_fast[1], v1_checked[1])
    assert v1_fast[1].model_dump_json() == v1_checked[1].model_dump_json()
    assert _events(v1_fast[1]) == _events(v1_checked[1])


@contextmanager
def _checked_path() -> Iterator[None]:
    """The fast paths switched off: every Observation mapped by the full mapper and validated, v1 validated, every
    event enveloped in Python."""
    with (
        mock.patch.object(mapping, "_observation_one_pass", lambda *a: None),
        mock.patch.object(mapping, "prechecked_observation", lambda fields: None),
        mock.patch.object(clinical_observation_v2, "_v1_prechecked", lambda obs: None),
        python_envelopes(),
    ):
        yield


# -- generated resources ---------------------------------------------------------------------------------------
_ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=4),
    st.lists(st.integers(0, 2), max_size=1),
    st.dictionaries(st.sampled_from(["a", "code", "value"]), st.integers(0, 2), max_size=1),
)


def _mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(good, good, good, _ODD)


_NUMBERS = st.sampled_from(
    [
        "37.8",
        "70",
        "5.10",
        "1e-3",
        "1.50E2",
        "-0.0",
        "0",
        "0.000012",
        "1234567890123456789.0123456789",
        "1e400",
        "1e16",
        "1e999999",
        "-1.0e-1001",
        "123456789012345678901234",
        "3.141592653589793",
        "0.1",
        "-12.5",
        "2.0",
        "1E-7",
    ]
).map(orjson.Fragment)
_TIMES = st.sampled_from(
    [
        *("2024-02-27T22:42:00-05:00", "2024-02-29T09:19:14.912-05:00", "2024-03-01T09:00:00.000+00:00", "2024-03-01"),
        *("2024-03", "2024", "2024-03-31T02:30:00", "2024-10-27T02:30:00", "not a date", "2024-02-30T00:00:00Z", ""),
        *("2024-03-01T10:00:00.123456789Z", "12:30:00"),
    ]
)
_CODINGS = st.fixed_dictionaries(
    {},
    optional={
        "system": _mostly(st.sampled_from(["http://loinc.org", "http://snomed.info/sct", "urn:x"])),
        "code": _mostly(st.sampled_from(["8867-4", "8480-6", "vital-signs", "laboratory", "", "N"])),
        "display": _mostly(st.sampled_from(["Heart rate", "Systolic", "é😀", ""])),
    },
)
_CONCEPT = st.fixed_dictionaries(
    {}, optional={"coding": _mostly(st.lists(_mostly(_CODINGS), max_size=3)), "text": _mostly(st.text(max_size=5))}
)
_REFERENCE = _mostly(
    st.fixed_dictionaries(
        {},
        optional={
            "reference": _mostly(
                st.sampled_from(
                    ["Patient/1", "urn:uuid:abc", "#c1", "Patient?x=1", "http://h/Patient/1/_history/2", ""]
                )
            ),
            "type": st.just("Patient"),
        },
    )
)
_QUANTITY = _mostly(
    st.fixed_dictionaries(
        {},
        optional={
            "value": st.one_of(_NUMBERS, _NUMBERS, _ODD),
            "unit": _mostly(st.sampled_from(["mmHg", "/min", "%"])),
            "system": _mostly(st.just("http://unitsofmeasure.org")),
            "code": _mostly(st.sampled_from(["mm[Hg]", "/min"])),
            "comparator": _mostly(st.sampled_from(["<", "<=", ">=", ">", "~"])),
        },
    )
)
_PERIOD = _mostly(st.fixed_dictionaries({}, optional={"start": _mostly(_TIMES), "end": _mostly(_TIMES)}))
_VALUES = {
    "valueQuantity": _QUANTITY,
    "valueCodeableConcept": _mostly(_CONCEPT),
    "valueString": _mostly(st.text(max_size=6)),
    "valueBoolean": _mostly(st.booleans()),
    "valueInteger": _mostly(st.integers(-(10**20), 10**20)),
    "valueTime": _mostly(st.sampled_from(["12:30:00", "25:00:00", "12:30"])),
    "valueDateTime": _mostly(_TIMES),
    "valuePeriod": _PERIOD,
    "valueRange": _mostly(st.fixed_dictionaries({}, optional={"low": _QUANTITY, "high": _QUANTITY})),
    "valueRatio": _mostly(st.fixed_dictionaries({}, optional={"numerator": _QUANTITY, "denominator": _QUANTITY})),
    "valueSampledData": _mostly(
        st.fixed_dictionaries(
            {"origin": _QUANTITY, "dimensions": _mostly(st.integers(1, 3))},
            optional={"period": _NUMBERS, "factor": _NUMBERS, "data": _mostly(st.just("1 2 E"))},
        )
    ),
    "valueAttachment": st.just({"url": "x"}),
}


@st.composite
def _value(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(_VALUES)), max_size=2, unique=True))
    return {k: draw(_VALUES[k]) for k in keys}


_STATUSES = ["final", "amended", "preliminary", "registered", "entered-in-error", "unknown", "bogus", "Final"]
_COMPONENT = _mostly(
    st.builds(
        lambda base, value: {**base, **value},
        st.fixed_dictionaries({}, optional={"code": _mostly(_CONCEPT), "dataAbsentReason": _CONCEPT}),
        _value(),
    )
)
_EFFECTIVE = {
    "effectiveDateTime": _mostly(_TIMES),
    "effectiveInstant": _mostly(_TIMES),
    "effectivePeriod": _PERIOD,
    "effectiveTiming": _mostly(st.fixed_dictionaries({}, optional={"event": _mostly(st.lists(_TIMES, max_size=2))})),
}


@st.composite
def observations(draw: st.DrawFn) -> dict[str, Any]:
    """An Observation-shaped JSON object: mostly well formed, with odd values and shapes anywhere."""
    res: dict[str, Any] = {"resourceType": "Observation"}
    res |= draw(
        st.fixed_dictionaries(
            {},
            optional={
                "id": _mostly(st.sampled_from(["o1", "obs-2", ""])),
                "meta": _mostly(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "versionId": _mostly(st.sampled_from(["1", "2", ""])),
                            "lastUpdated": _mostly(_TIMES),
                        },
                    )
                ),
                "status": _mostly(st.sampled_from(_STATUSES)),
                "category": _mostly(st.lists(_mostly(_CONCEPT), max_size=2)),
                "code": _mostly(_CONCEPT),
                "subject": _REFERENCE,
                "encounter": _REFERENCE,
                "issued": _mostly(_TIMES),
                "component": _mostly(st.lists(_COMPONENT, max_size=3)),
                "hasMember": _mostly(st.lists(_REFERENCE, max_size=2)),
                "dataAbsentReason": _mostly(_CONCEPT),
            },
        )
    )
    effective = draw(st.lists(st.sampled_from(sorted(_EFFECTIVE)), max_size=2, unique=True))
    res |= {k: draw(_EFFECTIVE[k]) for k in effective}
    res |= draw(_value())
    if draw(st.booleans()):  # the well-formed common shape, more often than chance gives it
        res |= {
            "id": "o1",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        }
    return res


def _json(res: dict[str, Any]) -> bytes:
    """The resource as JSON text; integers beyond 64 bits (which orjson refuses to write) by the json module."""
    try:
        return orjson.dumps(res)
    except TypeError:
        return json.dumps(res, separators=(",", ":"), allow_nan=False).encode()


def _parsed(res: dict[str, Any]) -> Any:
    """As a Bulk or search connector hands it to the mapper: the JSON text parsed by ``core.exact_json``."""
    return exact_json.loads(_json(res))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(observations())
def test_fast_paths_equal_the_checked_path_on_generated_observations(res: dict[str, Any]) -> None:
    _assert_same(_parsed(res))


def _bulk_connector() -> Any:
    cls = find_plugin("fhir.bulk_export")
    settings_ = cls.settings_model.model_validate({"http": {"base_url": "http://127.0.0.1:1"}})
    return cls(IntegrationContext("acme", "fhir", zone=ZONE), settings_)


_FILE = NdjsonFile(0, "http://127.0.0.1:1/Observation.000.ndjson", "Observation", "output")


def _line(data: bytes, number: int) -> NdjsonLine:
    line = NdjsonLine(data)
    line.file, line.line, line.problem, line.unterminated = _FILE, number, None, False
    return line


def _batch_both_ways(lines: list[bytes]) -> None:
    connector = _bulk_connector()
    batch = Batch([_line(data, i + 1) for i, data in enumerate(lines)], {"line": len(lines)})
    fast_events, fast_counts = process_batch(connector, ENV, batch)
    with _checked_path():
        events, counts = process_batch(connector, ENV, batch)
    assert fast_events == events  # topic, key, value bytes, headers and id of every event and DLQ record
    assert _accounting(fast_counts) == _accounting(counts)


def _accounting(counts: BatchCounts) -> tuple[Any, ...]:
    samples = [(s.stage, s.error_type, s.message, s.payload) for s in counts.samples]  # not their clock time
    return (
        counts.records_in,
        counts.records_mapped,
        counts.events_out,
        counts.dlq,
        counts.filtered,
        counts.reasons,
        samples,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(observations(), min_size=1, max_size=6))
def test_bulk_batches_make_the_same_events_and_dlq_records(resources: list[dict[str, Any]]) -> None:
    _batch_both_ways([_json(res) for res in resources])


def test_generated_export_makes_the_same_events() -> None:
    """The benchmark's own data (``connectors.fhir.synth``): every line takes the one-pass path, same bytes."""
    resources = generate_observations(400, seed=3)
    for res in resources:
        _assert_same(_parsed(res))
    assert all(mapping._observation_one_pass(_parsed(r), ZONE, None) is not None for r in resources)
    _batch_both_ways([_json(res) for res in resources])


# -- real resources --------------------------------------------------------------------------------------------
def _real_observations(fhir: Path) -> Iterator[tuple[Any, BundleIndex | None]]:
    for path in sorted((fhir / "hl7-r4-official-examples").glob("*.json")):
        doc = exact_json.loads(path.read_bytes())
        if doc.get("resourceType") == "Observation":
            yield doc, None
        elif doc.get("resourceType") == "Bundle":
            yield from _in_bundle(doc)
    for path in sorted((fhir / "smart-generated-sample-data-R4-SYNTHEA").glob("*.json")):
        yield from _in_bundle(exact_json.loads(path.read_bytes()))
    for path in sorted(fhir.glob("bulk-ndjson/*/Observation.*.ndjson")):
        with path.open("rb") as lines:
            yield from ((exact_json.loads(line), None) for line in lines if line.strip())


def _in_bundle(bundle: dict[str, Any]) -> Iterator[tuple[Any, BundleIndex | None]]:
    try:
        index: BundleIndex | None = bundle_index(bundle)
    except Exception:  # a Bundle the index refuses: its resources are still compared, unresolved
        index = None
    for entry in bundle.get("entry") or ():
        res = entry.get("resource") if type(entry) is dict else None
        if type(res) is dict and res.get("resourceType") == "Observation":
            yield res, index
            yield res, None


def test_fast_paths_equal_the_checked_path_on_real_observations(sample_data: Path) -> None:
    seen = one_pass = 0
    for res, index in _real_observations(sample_data / "fhir"):
        _assert_same(res, index)
        seen += 1
        one_pass += mapping._observation_one_pass(res, ZONE, index) is not None
    assert seen > 1000  # the Synthea bundles hold thousands
    assert one_pass > seen // 2  # the common shape is the common case


def test_real_observations_through_the_bulk_connector(sample_data: Path) -> None:
    lines = [exact_json.dumps(res) for res, index in _real_observations(sample_data / "fhir") if index is None]
    for start in range(0, len(lines), 500):
        _batch_both_ways(lines[start : start + 500])


def test_checked_path_is_really_switched_off() -> None:
    """The comparison would prove nothing if the 'checked' side took the fast paths too."""
    res = generate_observations(1, seed=3)[0]
    calls: list[str] = []
    with _checked_path(), mock.patch.object(ObservationV2, "model_validate", wraps=ObservationV2.model_validate) as v:
        map_observation(_parsed(res), ZONE)
        calls.extend("validated" for _ in v.call_args_list)
    assert calls == ["validated"]


def test_reference_ids_take_the_last_segment_as_the_split_did() -> None:
    """``reference_id`` skips splitting a reference without ``_history``: the same id for every short path."""
    segments = ["", "Patient", "1", "_history", "a_history", "http:", "x", "/"]

    def split_way(text: str) -> str:
        parts = text.rstrip("/").split("/")
        return parts[-3] if len(parts) >= 4 and parts[-2] == "_history" else parts[-1]

    for k in range(1, 5):
        for combo in itertools.product(segments, repeat=k):
            text = "/".join(combo)
            if text and text[0] != "#" and "?" not in text and not text.startswith("urn:uuid:"):
                assert mapping.reference_id({"reference": text}) == split_way(text), text
