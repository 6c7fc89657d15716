"""The compiled envelope (core/_speedups.c) against its Python twin, ``Enveloper._envelope_python``: the same events,
byte for byte (topic, key, value, headers, id), or the same error, over generated records and times; and the
compiled dump of event values against pydantic's ``to_json``.

The connectors' fast-path tests (tests/connectors/mqtt_meter/test_meter_fast_paths.py,
tests/connectors/fhir/test_fhir_prechecked.py) compare the two as well, on generated and real feeds: their checked
side envelopes in Python."""

from __future__ import annotations

import dataclasses
import os
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, ClassVar
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ConfigDict, Field, computed_field, field_serializer

from inlet.contracts.base import Contract, Part
from inlet.core import envelope as envelope_module
from inlet.core.envelope import Enveloper, Event
from tests.helpers import python_envelopes

COMPILED = envelope_module._compiled_envelope is not None


class Probe(Contract):
    """A contract whose hooks return whatever the test gives it: key, subject and time are the envelope's inputs."""

    contract_name: ClassVar[str] = "test.probe"
    contract_version: ClassVar[str] = "3.1"

    key: str
    about: str
    when: datetime | None = None
    amount: float = 0.0

    def entity_key(self) -> str:
        return self.key

    def subject(self) -> str:
        return self.about

    def occurred_at(self) -> datetime | None:
        return self.when


class ProbeV1(Probe):
    contract_version: ClassVar[str] = "1.0"


def _outcome(envelope: object, *args: object) -> tuple[str, object]:
    try:
        return "event", envelope(*args)  # type: ignore[operator]
    except Exception as exc:  # the position inside an unencodable text may differ: the error's kind may not
        return "error", type(exc)


def test_the_compiled_envelope_is_built_in_ci() -> None:
    """CI installs with a C compiler, so the compiled envelope must be there (a missing one is a failure there)."""
    if os.environ.get("CI") == "true":
        assert COMPILED, "core/_speedups.c was not built by `pip install -e .` (see setup.py)"


_TEXT = st.text(max_size=12) | st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=700)
_ZONES = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)), None])
_TIMES = st.none() | st.builds(
    lambda at, tz: at.replace(tzinfo=tz),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    _ZONES,
)
_SOURCE_KEYS = st.sampled_from(["meter-1", "Observation/1", "lone \ud800 surrogate"]) | _TEXT  # repeats: records
_RECORDS = st.lists(
    st.tuples(
        st.sampled_from([Probe, ProbeV1]),
        _TEXT,  # key
        _TEXT,  # subject
        _TIMES,
        _SOURCE_KEYS,
        st.sampled_from(["1", 'W/"7"']) | _TEXT,  # source version
        st.integers(0, 5) | st.integers(-(2**70), 2**70),  # ordinal
    ),
    min_size=1,
    max_size=12,
)


@pytest.mark.skipif(not COMPILED, reason="the compiled helpers are not built here (CI requires them)")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=_RECORDS, customer=st.sampled_from(["acme", "kunde-ä"]))
def test_compiled_envelopes_equal_the_python_ones(
    records: list[tuple[type[Probe], str, str, datetime | None, str, str, int]], customer: str
) -> None:
    """One enveloper per side, the records in order: the Python side's caches (the record's hash state, the last
    time's header) are exercised across events, and must not make a difference."""
    fast, python = Enveloper(customer, "feed"), Enveloper(customer, "feed")
    for cls, key, about, when, source_key, source_version, ordinal in records:
        model = cls(key=key, about=about, when=when)
        got = _outcome(fast.envelope, model, source_key, source_version, ordinal)
        want = _outcome(python._envelope_python, model, source_key, source_version, ordinal)
        assert got == want
        if got[0] == "event":
            event = got[1]
            assert isinstance(event, Event) and event.id == str(uuid.UUID(event.id))
            assert fast.last_time == python.last_time


@pytest.mark.skipif(not COMPILED, reason="the compiled helpers are not built here (CI requires them)")
def test_the_time_header_is_isoformat_with_a_z_for_every_kind_of_datetime() -> None:
    """UTC times are written in C; other zones and naive times are handed over as Python wrote them."""
    env = Enveloper("acme", "feed")
    for when in (
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 0, 0, 500_000, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 3, 29, 3, 0, tzinfo=timezone(timedelta(hours=2))),
    ):
        event = env.envelope(Probe(key="k", about="s", when=when), "r", "1", 0)
        assert dict(event.headers)["ce_time"] == envelope_module._iso(when).encode()
    assert "ce_time" not in dict(env.envelope(Probe(key="k", about="s"), "r", "1", 0).headers)


@pytest.mark.skipif(not COMPILED, reason="the compiled helpers are not built here (CI requires them)")
def test_the_compiled_envelope_refuses_arguments_it_was_not_built_for() -> None:
    compiled = envelope_module._compiled_envelope
    assert compiled is not None
    env = Enveloper("acme", "feed")
    info = env._contract_info(Probe)
    state = env._event_id.namespace_state
    args = [Event, info, env._common, state, "r", "1", 0, "s", "k", b"{}", None]
    python = env._envelope_python(Probe(key="k", about="s"), "r", "1", 0)
    assert compiled(*args) == dataclasses.replace(python, value=b"{}")
    for index, wrong, error in (
        (1, info[:4], TypeError),
        (2, tuple(env._common), TypeError),
        (3, b"0" * 16, AttributeError),  # not a hash state: bytes have no copy()
        (9, "{}", TypeError),
        (10, "2026", TypeError),
        (10, datetime(2026, 1, 1), TypeError),  # naive: only UTC datetimes are formatted in C
    ):
        with pytest.raises(error):
            compiled(*args[:index], wrong, *args[index + 1 :])
    with pytest.raises(TypeError):
        compiled(*args[:10])


def test_a_record_whose_name_cannot_be_encoded_leaves_the_id_cache_as_it_was() -> None:
    """Found by the comparison above: the Python ids kept a half-built hash state after a source key with a lone
    surrogate failed, and gave the next event of the record before it a wrong id."""
    env = Enveloper("acme", "feed")
    ids = env._event_id
    first = ids.of_record("meter-1", "1", "test.probe", 0)
    with pytest.raises(UnicodeEncodeError):
        ids.of_record("lone \ud800", "1", "test.probe", 0)
    assert ids.of_record("meter-1", "1", "test.probe", 1) == ids("meter-1", "1", "test.probe", 1)
    assert ids.of_record("meter-1", "1", "test.probe", 0) == first


def test_python_envelopes_really_switches_the_compiled_one_off() -> None:
    """The connectors' comparisons would prove nothing if their checked side took the compiled envelope too."""
    env = Enveloper("acme", "feed")
    with python_envelopes(), mock.patch.object(Enveloper, "_envelope_python", autospec=True) as python:
        env.envelope(Probe(key="k", about="s"), "r", "1", 0)
    assert python.call_count == 1
    with mock.patch.object(Enveloper, "_envelope_python", autospec=True) as python:
        env.envelope(Probe(key="k", about="s"), "r", "1", 0)
    assert python.call_count == (0 if COMPILED else 1)


# --- the compiled dump: event values ------------------------------------------------------------------------------


class Leaf(Part):
    label: str
    weight: float | None = None


class Twig(Leaf):
    """A subclass: in a field declared as Leaf, pydantic writes Leaf's fields only — the dump must not guess."""

    extra_note: str = "twig"


class Tree(Contract):
    contract_name: ClassVar[str] = "test.tree"
    contract_version: ClassVar[str] = "1.0"

    text: str
    number: float
    count: int
    flag: bool | None
    when: datetime | None
    leaves: list[Leaf]
    best: Leaf | None
    tags: list[str]
    day: date | None = None

    def entity_key(self) -> str:
        return self.text


class Aliased(Contract):
    contract_name: ClassVar[str] = "test.aliased"
    contract_version: ClassVar[str] = "1.0"

    text: str = Field(serialization_alias="Text")
    hidden: str = Field(default="h", exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def twice(self) -> str:
        return self.text * 2

    def entity_key(self) -> str:
        return self.text


class Custom(Contract):
    contract_name: ClassVar[str] = "test.custom"
    contract_version: ClassVar[str] = "1.0"

    number: float

    @field_serializer("number")
    def _rounded(self, value: float) -> str:
        return f"{value:.1f}"

    def entity_key(self) -> str:
        return "k"


class Epoch(Contract):
    """Datetimes written as seconds since the epoch (a ``ser_json_*`` setting): pydantic's, not the dump's."""

    model_config = ConfigDict(ser_json_temporal="seconds")
    contract_name: ClassVar[str] = "test.epoch"
    contract_version: ClassVar[str] = "1.0"

    when: datetime

    def entity_key(self) -> str:
        return "k"


_FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1e-4, 9.999e-5, 1e16, 9999999999999998.0, 1e15, 0.1, 2.5, -7e-3]
)
_STRINGS = st.text() | st.text(alphabet=st.characters(max_codepoint=0x40)) | st.just("lone \ud800")
_INTS = st.integers(-(2**70), 2**70) | st.integers(-(2**63), 2**63)
_LEAVES = st.builds(Leaf, label=_STRINGS, weight=st.none() | _FLOATS) | st.builds(Twig, label=_STRINGS)


@pytest.mark.skipif(not COMPILED, reason="the compiled helpers are not built here (CI requires them)")
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=_STRINGS,
    number=_FLOATS,
    count=_INTS,
    flag=st.none() | st.booleans(),
    when=_TIMES,
    leaves=st.lists(_LEAVES, max_size=3),
    best=st.none() | _LEAVES,
    tags=st.lists(_STRINGS, max_size=3),
    day=st.none() | st.dates(),
)
def test_the_compiled_dump_writes_what_pydantic_writes(**fields: Any) -> None:
    """Every value the dump writes is pydantic's own bytes; what it does not write (non-finite and extreme floats,
    big ints, other zones, dates, surrogates, a subclass in a declared field) it leaves to pydantic."""
    model = Tree.model_construct(**fields)  # unvalidated, so odd values reach the dump as they are
    try:
        want = model.__pydantic_serializer__.to_json(model, warnings=False)
    except Exception as exc:  # pydantic refuses (a lone surrogate): json_value must refuse the same way
        with pytest.raises(type(exc)):
            envelope_module.json_value(model)
        return
    assert envelope_module.json_value(model) == want


@pytest.mark.skipif(not COMPILED, reason="the compiled helpers are not built here (CI requires them)")
def test_the_compiled_dump_leaves_aliased_custom_and_computed_models_to_pydantic() -> None:
    for model in (Aliased(text="x"), Custom(number=1.25), Epoch(when=datetime(2024, 1, 1, tzinfo=UTC))):
        assert envelope_module.json_value(model) == model.model_dump_json().encode()
        assert envelope_module._SPECS[type(model)] is None
    dump = envelope_module._compiled_dump
    assert dump is not None
    tree = Tree(text="t", number=1.5, count=2, flag=None, when=None, leaves=[], best=None, tags=[])
    assert dump(tree, envelope_module._SPECS) == tree.model_dump_json().encode()
    assert dump(tree, {}) is None  # a class not learnt: pydantic writes it
    with pytest.raises(TypeError):
        dump(tree, [])  # type: ignore[arg-type]


@pytest.mark.skipif(not COMPILED, reason="the compiled helpers are not built here (CI requires them)")
def test_one_enveloper_switching_between_both_envelopes_keeps_every_time_header_right() -> None:
    """Found by the FHIR comparison: the Python envelope's cached time header must not be taken for a time that the
    compiled one enveloped in between."""
    env = Enveloper("acme", "feed")
    first, second = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)
    env._envelope_python(Probe(key="k", about="s", when=first), "r", "1", 0)
    env.envelope(Probe(key="k", about="s", when=second), "r", "1", 1)
    again = env._envelope_python(Probe(key="k", about="s", when=second), "r", "1", 2)
    assert dict(again.headers)["ce_time"] == b"2024-01-02T00:00:00Z"
    assert env.last_time == second
